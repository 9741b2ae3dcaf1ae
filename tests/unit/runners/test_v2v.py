"""
The v2v runner's pure parts: definition validation, the step table (what
runs where, in which order, with which revert) and the preflight verdicts,
with minions answered by a table.
"""

import json
import os
import threading
import time

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.components import load_component

UUID = "5f1b7f3e-6d7c-4b4a-9a3e-2f8f0c1d2e3f"


@pytest.fixture
def runner(tmp_path):
    module = load_component("_runners", "v2v")
    module.__opts__ = {"cachedir": str(tmp_path), "sock_dir": str(tmp_path / "sock")}
    module.__context__ = {}
    return module


def definition(**extra):
    spec = {
        "source_host": "xen01.example.com",
        "source_domain": "instance-00000017",
        "conversion_minion": "conv01",
        "compute_minion": "compute07",
        "instance_uuid": UUID.upper(),
        "target_domain": "instance-000007a2",
        "pool": "vms",
        "work_dir": "/data/v2v/instance-00000017/",
    }
    spec.update(extra)
    return spec


def test_valid_definition_is_normalised(runner):
    spec = runner.validate_definition(definition())
    assert spec["instance_uuid"] == UUID
    assert spec["work_dir"] == "/data/v2v/instance-00000017"
    assert (
        spec["source_user"] == "root" and spec["copy_method"] == "auto" and spec["shutdown_source"] is False
    )


def test_every_problem_is_listed_at_once(runner):
    bad = definition(instance_uuid="17", pool="vms pool", work_dir="/", parallel=0, colour="blue")
    del bad["compute_minion"]
    with pytest.raises(SaltInvocationError) as err:
        runner.validate_definition(bad)
    message = str(err.value)
    for fragment in (
        "unknown field(s): colour",
        "compute_minion is required",
        "instance_uuid '17'",
        "pool 'vms pool'",
        "work_dir '/'",
        "parallel must be",
    ):
        assert fragment in message


@pytest.mark.parametrize(
    "field, value",
    [
        ("source_host", "xen01;reboot"),
        ("source_domain", "-rf"),
        ("target_domain", "a b"),
        ("work_dir", "/data/../etc"),
        ("shutdown_source", "yes"),
        ("source_user", "Root!"),
    ],
)
def test_bad_fields(runner, field, value):
    with pytest.raises(SaltInvocationError, match=field):
        runner.validate_definition(definition(**{field: value}))


FACTS = {
    "id": "mig17",
    "copy_method": "dd",
    "source_disks": [{"source": "/dev/vg/a", "size": 10}, {"source": "/dev/vg/b", "size": 5}],
    "target_images": [f"{UUID}_disk", f"{UUID}_disk.local"],
    "source_state": "running",
    "target_state": "running",
}


def test_step_table_order_minions_and_reverts(runner):
    spec = runner.validate_definition(definition())
    steps = {s["name"]: s for s in runner._step_table(spec, FACTS)}
    assert steps["copy-disk-0"]["requires"] == steps["copy-disk-1"]["requires"]  # parallel copies
    assert steps["convert"]["requires"] == ["localize-xml", "copy-disk-0", "copy-disk-1"]
    # the unused target is stopped and its images moved aside while the source is copied
    assert steps["stop-target"]["requires"] == []
    assert steps[f"rename-{UUID}_disk"]["requires"] == ["stop-target"]
    assert steps["stop-target"]["minion"] == "compute07"
    assert steps[f"rename-{UUID}_disk"]["revert"] == (
        "conv01",
        "v2v.rbd_rename",
        {"pool": "vms", "source": f"{UUID}_disk.bak", "dest": f"{UUID}_disk"},
    )
    imp = steps[f"import-{UUID}_disk.local"]
    assert imp["kwargs"]["path"] == "/data/v2v/instance-00000017/converted/instance-00000017-sdb"
    assert imp["revert"][1:] == (
        "v2v.rbd_remove",
        {"pool": "vms", "image": f"{UUID}_disk.local", "keep_if_missing": f"{UUID}_disk.local.bak"},
    )
    assert set(steps["start-target"]["requires"]) == {f"import-{UUID}_disk", f"import-{UUID}_disk.local"}
    ctl = {s["name"] for s in runner._step_table(spec, dict(FACTS, copy_method="copy-to-local"))}
    assert "copy-to-local" in ctl and "copy-disk-0" not in ctl


class Minions:
    """
    Answers minion calls from a table; records them.
    """

    def __init__(self, **answers):
        self.answers = answers
        self.calls = []

    def __call__(self, minion, fun, *args, **kwargs):
        self.calls.append((minion, fun, args))
        if fun == "v2v.probe":
            # the module's probe: every call answered, failures as {"ok": False}
            return [self._probe(call) for call in args[0]]
        return self._answer(fun.split(".", 1)[1], args)

    def _answer(self, name, args):
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        return answer(*args) if callable(answer) else answer

    def _probe(self, call):
        try:
            return {"ok": True, "value": self._answer(call["fun"], call["args"])}
        except CommandExecutionError as err:
            return {"ok": False, "error": str(err)}


def good_minions(**override):
    def tools(names):
        return {n: {"found": True} for n in names}

    answers = dict(
        tools=tools,
        ssh_check=True,
        source_domain_state="shut off",
        source_disks=[
            {"type": "block", "source": "/dev/vg/a", "size": 10},
            {"type": "block", "source": "/dev/vg/b", "size": 5},
        ],
        domain_state="running",
        instance_images={
            "disks": [
                {"name": f"{UUID}_disk", "size": 10},
                {"name": f"{UUID}_disk.local", "size": 20},
                {"name": f"{UUID}_disk.eph0", "size": 20},
            ],
            "other": [f"{UUID}_disk.swap"],
        },
        free_space=10**9,
        work_dir_state="missing",
    )
    answers.update(override)
    return Minions(**answers)


def test_preflight_passes_and_maps_disks_by_order(runner):
    ok, checks, facts = runner._preflight(runner.validate_definition(definition()), good_minions(), "mig17")
    assert ok, checks
    assert facts["target_images"] == [f"{UUID}_disk", f"{UUID}_disk.local"]
    assert facts["copy_method"] == "copy-to-local"  # the stand-in table says every tool is there
    assert [c["check"] for c in checks if c["ok"]] == [
        "conversion tools",
        "compute tools",
        "ssh to the Xen host",
        "source domain",
        "source disks",
        "target domain",
        "copy method",
        "target images",
        "work_dir and its free space",
    ]


def test_preflight_asks_each_minion_once(runner):
    minions = good_minions()
    runner._preflight(runner.validate_definition(definition()), minions, "mig17")
    assert sorted((minion, fun) for minion, fun, _args in minions.calls) == [
        ("compute07", "v2v.probe"),
        ("conv01", "v2v.probe"),
    ]
    conv_probes = next(args[0] for minion, _fun, args in minions.calls if minion == "conv01")
    assert {p["fun"] for p in conv_probes} == {
        "tools",
        "ssh_check",
        "source_domain_state",
        "source_disks",
        "instance_images",
        "work_dir_state",
        "free_space",
    }
    # presence only: no tool is run for its version
    assert next(p for p in conv_probes if p["fun"] == "tools")["kwargs"] == {"versions": False}


def test_preflight_reports_an_unreachable_minion_on_every_check_it_owns(runner):
    class DeadCompute(Minions):
        def __call__(self, minion, fun, *args, **kwargs):
            if minion == "compute07":
                raise CommandExecutionError("compute07 did not answer v2v.probe within 300 s (is it up?)")
            return super().__call__(minion, fun, *args, **kwargs)

    minions = DeadCompute(**good_minions().answers)
    ok, checks, _facts = runner._preflight(runner.validate_definition(definition()), minions, "m")
    assert not ok
    failed = {c["check"]: c["detail"] for c in checks if not c["ok"]}
    assert set(failed) == {"compute tools", "target domain"}
    assert all("compute07 did not answer" in detail for detail in failed.values())


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"source_domain_state": "running"}, "shutdown_source: true"),
        ({"source_domain_state": None}, "does not exist"),
        ({"ssh_check": CommandExecutionError("ssh to root@xen01 failed")}, "ssh to root@xen01 failed"),
        ({"domain_state": None}, "target domain"),
        (
            {"instance_images": {"disks": [{"name": f"{UUID}_disk", "size": 10}], "other": []}},
            "only 1 images",
        ),
        (
            {
                "instance_images": {
                    "disks": [{"name": f"{UUID}_disk", "size": 1}, {"name": f"{UUID}_disk.local", "size": 9}],
                    "other": [],
                }
            },
            "larger than",
        ),
        (
            {
                "instance_images": {
                    "disks": [
                        {"name": f"{UUID}_disk", "size": 10},
                        {"name": f"{UUID}_disk.local", "size": 9},
                    ],
                    "other": [f"{UUID}_disk.bak"],
                }
            },
            "left over",
        ),
        ({"free_space": 20}, "needs 30"),
        ({"work_dir_state": "foreign"}, "holds other files"),
        ({"tools": lambda names: {n: {"found": n != "nbdkit"} for n in names}}, "missing on conv01: nbdkit"),
    ],
)
def test_preflight_refusals(runner, override, fragment):
    ok, checks, _facts = runner._preflight(
        runner.validate_definition(definition()), good_minions(**override), "m"
    )
    assert not ok
    assert fragment in " ".join(c["detail"] for c in checks if not c["ok"])


def test_cleanup_and_rollback_guards(runner):
    journal = {
        "id": "mig17",
        "definition": runner.validate_definition(definition()),
        "facts": FACTS,
        "runs": [],
        "flow": {"state": "reverted", "tasks": {}, "log": [], "seq": 0},
    }
    runner._write_journal(journal)
    ret = runner.cleanup("mig17", remove_backups=True)
    assert ret["retcode"] == 1 and "not success" in ret["comment"]
    journal["flow"]["state"] = "success"
    journal["cleanup"] = {"backups_removed": ["x.bak"]}
    runner._write_journal(journal)
    ret = runner.rollback("mig17")
    assert ret["retcode"] == 1 and "cleaned up" in ret["comment"]
    assert runner.status() == {"mig17": "success"}
    with open(runner._journal_path("mig17"), encoding="utf-8") as handle:
        assert json.load(handle)["cleanup"] == {"backups_removed": ["x.bak"]}
    assert runner.status("nope")["retcode"] == 1


def test_summary_times_each_step_and_rates_the_copies(runner):
    tasks = {
        "copy-disk-0": {
            "state": "done",
            "started": 100.0,
            "ended": 104.0,
            "error": None,
            "result": {"dest": "/w/d0", "bytes": 256 * 2**20, "copied": True, "seconds": 4.0},
        },
        "copy-disk-1": {
            "state": "done",
            "started": 100.0,
            "ended": 100.5,
            "error": None,
            "result": {"dest": "/w/d1", "bytes": 256 * 2**20, "copied": False},
        },  # already there
        "convert": {"state": "running", "started": 104.1, "error": None, "result": None},
        "start-target": {"state": "pending", "error": None, "result": None},
    }
    summary = runner._summary({"id": "m", "flow": {"state": "running", "tasks": tasks}, "runs": []})
    assert summary["step_seconds"] == {"copy-disk-0": 4.0, "copy-disk-1": 0.5}
    assert summary["copy_mib_per_s"] == {"copy-disk-0": 64.0}


def test_tasks_follow_the_step_fields_not_their_names(runner):
    spec = runner.validate_definition(definition())
    facts = dict(FACTS, source_state="shut off", target_state="running")
    answers = {"v2v.domain_start": {"before": "shut off", "after": "crashed"}}
    calls = []

    def call(minion, fun, _timeout=None, **kwargs):
        calls.append((minion, fun, kwargs))
        return answers.get(fun, {})

    tasks = {t.name: t for t in runner._tasks(runner._step_table(spec, facts), spec, facts, call)}
    with pytest.raises(CommandExecutionError, match="'crashed' right after start, not running"):
        tasks["start-target"].execute()
    tasks["shutdown-source"].revert(None)  # the source was off before: left off
    tasks["stop-target"].revert(None)  # the target was running: started again
    tasks["localize-xml"].revert(None)  # no revert at all
    assert [fun for _minion, fun, _kw in calls] == ["v2v.domain_start", "v2v.domain_start"]
    assert calls[-1] == ("compute07", "v2v.domain_start", {"domain": "instance-000007a2"})


class FakeMigrations:
    """
    Stands in for ``_migrate``: each migration takes a moment, the ones in
    ``failing`` revert; records how many ran at once.
    """

    def __init__(self, failing=()):
        self.failing = set(failing)
        self.lock = threading.Lock()
        self.active = self.max_active = 0
        self.order = []

    def __call__(self, mig_id, spec, quiet=False):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.order.append(mig_id)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        state = "reverted" if mig_id in self.failing else "success"
        return {"id": mig_id, "state": state, "result": state == "success", "seconds": 0.05}


@pytest.fixture
def wave_runner(runner, monkeypatch):
    ids = [f"vm{n}" for n in range(1, 6)]
    pillar = {
        "migrations": {
            mig_id: definition(source_domain=mig_id, work_dir=f"/data/v2v/{mig_id}") for mig_id in ids
        },
        "waves": {"wave1": ids[:3], "all": ids},
    }
    monkeypatch.setattr(runner, "_v2v_pillar", lambda minion: pillar)
    return runner, pillar


def test_wave_runs_with_a_concurrency_limit_and_keeps_going(wave_runner, monkeypatch):
    runner, _pillar = wave_runner
    fake = FakeMigrations(failing={"vm2"})
    monkeypatch.setattr(runner, "_migrate", fake)
    ret = runner.migrate_wave("all", pillar_minion="conv01")
    assert fake.max_active == 2  # the default
    states = {k: v["state"] for k, v in ret["migrations"].items()}
    assert states == {
        "vm1": "success",
        "vm2": "reverted",
        "vm3": "success",
        "vm4": "success",
        "vm5": "success",
    }
    assert ret["state"] == "failed" and ret["retcode"] == 1
    assert ret["table"][0].split() == ["migration", "state", "seconds", "MiB/s"] and len(ret["table"]) == 6
    assert runner.status(wave="all")["migrations"] == ret["migrations"]


def test_wave_stop_on_failure_and_concurrency(wave_runner, monkeypatch):
    runner, _pillar = wave_runner
    fake = FakeMigrations(failing={"vm1"})
    monkeypatch.setattr(runner, "_migrate", fake)
    ret = runner.migrate_wave(ids="vm1,vm2,vm3", pillar_minion="conv01", concurrency=1, stop_on_failure=True)
    assert fake.order == ["vm1"]
    assert {k: v["state"] for k, v in ret["migrations"].items()} == {
        "vm1": "reverted",
        "vm2": "not started",
        "vm3": "not started",
    }
    assert ret["state"] == "stopped" and ret["wave"] == "wave-vm1"
    fake = FakeMigrations()
    monkeypatch.setattr(runner, "_migrate", fake)
    ret = runner.migrate_wave("all", pillar_minion="conv01", concurrency=5)
    assert ret["result"] is True and ret["state"] == "success" and fake.max_active > 2


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"wave": "nope"}, "no v2v:waves:nope"),
        ({"ids": "vm1,vm1"}, "more than once"),
        ({"ids": "vm1,vm 2"}, "invalid migration id"),
        ({"ids": "vm1,vm9"}, "no v2v:migrations:vm9"),
        ({"wave": "wave1", "concurrency": 0}, "concurrency must be"),
        ({"wave": "wave1", "pillar_minion": None}, "give pillar_minion"),
        ({"wave": "bad\nname"}, "invalid migration id"),
    ],
)
def test_a_bad_wave_is_refused_before_anything_runs(wave_runner, monkeypatch, kwargs, fragment):
    runner, pillar = wave_runner
    pillar["migrations"]["vm3"] = dict(pillar["migrations"]["vm3"], pool="a b")
    fake = FakeMigrations()
    monkeypatch.setattr(runner, "_migrate", fake)
    ret = runner.migrate_wave(**{"pillar_minion": "conv01", **kwargs})
    assert ret["retcode"] == 1 and fragment in ret["comment"]
    ret = runner.migrate_wave("wave1", pillar_minion="conv01")  # vm3's definition is bad
    assert ret["retcode"] == 1 and "vm3: invalid migration definition" in ret["comment"]
    assert fake.order == []


def _journal_in_state(runner, mig_id, state):
    runner._write_journal(
        {"id": mig_id, "definition": {}, "facts": {}, "runs": [], "flow": {"state": state, "tasks": {}}}
    )


def test_resume_and_rollback_of_a_wave_act_per_member(wave_runner, monkeypatch):
    runner, _pillar = wave_runner
    monkeypatch.setattr(runner, "_migrate", FakeMigrations())
    runner.migrate_wave("wave1", pillar_minion="conv01")
    # as after a killed runner: vm1 finished, vm2 interrupted, vm3 never started
    _journal_in_state(runner, "vm1", "success")
    _journal_in_state(runner, "vm2", "running")
    calls = []

    def fake_resume(mig_id, quiet=False):
        calls.append(("resume", mig_id))
        return {"id": mig_id, "state": "success", "result": True}, True

    migrations = FakeMigrations()
    monkeypatch.setattr(runner, "_resume", fake_resume)
    monkeypatch.setattr(runner, "_migrate", migrations)
    ret = runner.resume_wave("wave1")
    assert sorted(calls) == [("resume", "vm1"), ("resume", "vm2")] and migrations.order == ["vm3"]
    assert ret["state"] == "success" and ret["result"] is True and "retcode" not in ret

    def fake_rollback(mig_id, quiet=False):
        calls.append(("rollback", mig_id))
        return {"id": mig_id, "state": "reverted", "result": False}

    monkeypatch.setattr(runner, "_rollback", fake_rollback)
    os.unlink(runner._journal_path("vm2"))
    ret = runner.rollback_wave("wave1")
    assert ("rollback", "vm1") in calls and ("rollback", "vm2") not in calls
    assert {k: v["state"] for k, v in ret["migrations"].items()} == {
        "vm1": "reverted",
        "vm2": "not started",
        "vm3": "not started",
    }
    assert ret["state"] == "reverted" and ret["result"] is True
    assert runner.resume_wave("nope")["retcode"] == 1


def test_resume_waits_only_for_its_own_minion_jobs(runner):
    spec = runner.validate_definition(definition())
    journal = {"definition": spec}
    other = {"fun": "v2v.convert", "arg": ["/data/v2v/other/source/other.xml", "/data/v2v/other", "other"]}
    own = {"fun": "v2v.convert", "arg": [{"work_dir": spec["work_dir"], "__kwarg__": True}]}
    jobs = {"conv01": [other, {"fun": "test.sleep", "arg": [spec["work_dir"]]}], "compute07": []}

    def call(minion, fun, _timeout=None):
        assert fun == "saltutil.running"
        return jobs[minion]

    runner._wait_for_jobs(journal, call, timeout=0.2)  # another wave member's job: no wait
    jobs["conv01"].append(own)
    with pytest.raises(CommandExecutionError, match="conv01 still runs v2v.convert after 0.2 s"):
        runner._wait_for_jobs(journal, call, timeout=0.2)


def test_wave_progress_reaches_salt_run_from_the_runners_own_thread(wave_runner, monkeypatch):
    # salt-run's job event is not thread-safe: wave members queue their lines
    runner, _pillar = wave_runner
    main = threading.get_ident()
    sent = []

    class JidEvent:
        def fire_event(self, data, tag):
            sent.append((threading.get_ident(), tag, data["message"]))

    runner.__jid_event__ = JidEvent()
    fake = FakeMigrations()

    def migrate_with_progress(mig_id, spec, quiet=False):
        reporter = runner.Reporter(mig_id, runner._jid_event())
        try:
            reporter("convert", "done", {})
        finally:
            reporter.close()
        return fake(mig_id, spec, quiet)

    monkeypatch.setattr(runner, "_migrate", migrate_with_progress)
    ret = runner.migrate_wave("wave1", pillar_minion="conv01")
    assert ret["result"] is True
    assert sorted(message.split()[-3] for _thread, _tag, message in sent) == ["vm1:", "vm2:", "vm3:"]
    assert {thread for thread, _tag, _message in sent} == {main}
    assert {tag for _thread, tag, _message in sent} == {"progress"}
