"""
The pgbouncer_maintenance runner against a fleet in memory: each host runs
the real minion module (``_modules/pgbouncer_maintenance.py``, its own
cachedir) over a stand-in pgbouncer console; the maintenance ``state.apply``
answers from a table (or never, for the timeout). Checks that the window
always resumes, what it reports, and how leftovers are repaired or refused.
"""

import os
import time

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.components import load_component
from tests.unit.modules.test_pgbouncer_maintenance import Console

GOOD = {"cmd_|-reindex_|-reindex_|-run": {"__id__": "reindex", "result": True, "changes": {"pid": 1}}}
BAD = {
    "cmd_|-reindex_|-reindex_|-run": {
        "__id__": "reindex",
        "result": False,
        "comment": "exit 3",
        "changes": {},
    }
}


class Host:
    def __init__(self, name, root):
        self.name = name
        self.module = load_component("_modules", "pgbouncer_maintenance")
        self.module.__opts__ = {"cachedir": str(root / name), "id": name}
        self.console = Console(str(root / name / "pgbouncer_maintenance"))
        os.makedirs(root / name)
        self.module.__salt__ = {
            "pgbouncer.pause": self.console.pause,
            "pgbouncer.resume": self.console.resume,
        }
        self.answers = True
        self.jobs = {}  # jid -> still running
        self.terminated = []
        self.killed = []
        self.ignores_sigterm = False


class Fleet:
    """What the runner's minion calls reach: ``_returns``, ``_expected`` and ``_client``."""

    def __init__(self, root, names=("db1", "db2")):
        self.hosts = {name: Host(name, root) for name in names}
        self.states = {}  # host -> (return, retcode); missing: never returns
        self.published = []
        self.calls = []

    def _match(self, tgt, tgt_type):
        if tgt_type == "list":
            return [name for name in tgt if name in self.hosts]
        return sorted(self.hosts) if tgt == "*" else [tgt] if tgt in self.hosts else []

    def expected(self, tgt, tgt_type):
        return self._match(tgt, tgt_type)

    def returns(self, hosts, fun, kwarg=None, tgt_type="list", timeout=60):
        self.calls.append((fun, list(self._match(hosts, tgt_type)), dict(kwarg or {})))
        out = {}
        for name in self._match(hosts, tgt_type):
            host = self.hosts[name]
            if not host.answers:
                continue
            out[name] = self._call(host, fun, dict(kwarg or {}))
        return out

    def _call(self, host, fun, kwarg):
        if fun == "test.ping":
            return True, 0
        if fun == "saltutil.term_job":
            running = host.jobs.get(kwarg["jid"], False)
            if running and not host.ignores_sigterm:
                del host.jobs[kwarg["jid"]]
            host.terminated.append(kwarg["jid"])
            return (f"Signal 15 sent to job {kwarg['jid']}" if running else ""), 0
        if fun == "saltutil.kill_job":
            host.jobs.pop(kwarg["jid"], None)
            host.killed.append(kwarg["jid"])
            return f"Signal 9 sent to job {kwarg['jid']}", 0
        if fun == "saltutil.find_job":
            return ({"jid": kwarg["jid"]} if host.jobs.get(kwarg["jid"]) else {}), 0
        try:
            return getattr(host.module, fun.split(".")[1])(**kwarg), 0
        except (CommandExecutionError, SaltInvocationError) as err:
            return f"ERROR: {err}", 1

    def client(self):
        return FakeClient(self)


class FakeClient:
    def __init__(self, fleet):
        self.fleet = fleet

    def run_job(self, hosts, fun, kwarg=None, tgt_type="list", jid="", listen=False):
        self.fleet.published.append({"hosts": hosts, "fun": fun, "kwarg": kwarg, "jid": jid})
        for name in hosts:
            self.fleet.hosts[name].jobs[jid] = name not in self.fleet.states
        return {"jid": jid, "minions": hosts}

    def get_returns_no_block(self, tag):
        jid = tag.split("/")[2]
        for name, (value, retcode) in self.fleet.states.items():
            yield {
                "tag": f"{tag}/{name}",
                "data": {"id": name, "jid": jid, "return": value, "retcode": retcode},
            }
        while True:
            yield None

    def destroy(self):
        pass


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    return Fleet(tmp_path)


@pytest.fixture
def runner(fleet):
    module = load_component("_runners", "pgbouncer_maintenance")
    module.__opts__ = {"id": "master1", "hash_type": "sha256"}
    module.__context__ = {}
    module._returns = fleet.returns
    module._expected = fleet.expected
    module._client = fleet.client
    return module


def _paused(fleet):
    return {name: sorted(host.console.paused) for name, host in fleet.hosts.items()}


def _markers(fleet):
    return {name: [m["database"] for m in host.module.markers()] for name, host in fleet.hosts.items()}


def test_a_good_window_pauses_applies_and_resumes(runner, fleet):
    fleet.states = {"db1": (GOOD, 0), "db2": (GOOD, 0)}
    out = runner.run("appdb", "pgmaint.reindex", sls_pillar={"index": "i1"}, timeout=5)
    assert out["result"] is True, out
    assert out["paused"] == out["resumed"] == ["db1", "db2"]
    assert out["states"]["db1"] == {"result": True, "changed": 1, "failed": []}
    assert out["problems"] == [] and out["repaired"] == {}
    (job,) = fleet.published
    assert job["kwarg"] == {"mods": "pgmaint.reindex", "pillar": {"index": "i1"}} and job["jid"] == out["jid"]
    for host in fleet.hosts.values():
        assert [call[0] for call in host.console.calls] == ["PAUSE", "RESUME"]
    assert _paused(fleet) == {"db1": [], "db2": []} and _markers(fleet) == {"db1": [], "db2": []}
    assert out["comment"].startswith("appdb paused on db1, db2 for ")
    assert out["retcode"] == 0 and "retcode" not in runner.__context__


def test_a_failing_state_still_resumes(runner, fleet):
    fleet.states = {"db1": (GOOD, 0), "db2": (BAD, 2)}
    out = runner.run("appdb", "pgmaint.reindex", timeout=5)
    assert out["result"] is False
    assert out["resumed"] == ["db1", "db2"] and _paused(fleet) == {"db1": [], "db2": []}
    assert out["problems"] == ["db2: reindex: exit 3"]
    assert out["comment"].startswith("maintenance of appdb failed; appdb paused on db1, db2")
    assert out["retcode"] == runner.__context__["retcode"] == 1  # salt-run exits 1


def test_the_timeout_terminates_the_job_and_resumes(runner, fleet):
    fleet.states = {"db1": (GOOD, 0)}  # db2 never returns
    started = time.monotonic()
    out = runner.run("appdb", "pgmaint.reindex", timeout=0.5)
    assert time.monotonic() - started < 5
    assert out["result"] is False
    assert out["timed_out"] == ["db2"] and out["terminated"] == ["db2"]
    assert fleet.hosts["db2"].terminated == [out["jid"]]
    assert any("did not finish within 0.5 s on db2" in problem for problem in out["problems"])
    assert out["resumed"] == ["db1", "db2"] and _markers(fleet) == {"db1": [], "db2": []}


def test_a_job_that_ignores_sigterm_is_killed(runner, fleet, monkeypatch):
    monkeypatch.setattr(runner, "STOP_WAIT", 0.2)
    fleet.hosts["db2"].ignores_sigterm = True
    fleet.states = {"db1": (GOOD, 0)}
    out = runner.run("appdb", "pgmaint.reindex", timeout=0.5)
    assert out["terminated"] == ["db2"]
    assert fleet.hosts["db2"].killed == [out["jid"]] and fleet.hosts["db2"].jobs == {}
    assert out["resumed"] == ["db1", "db2"]


def test_a_failed_pause_runs_no_state_and_resumes_the_others(runner, fleet):
    fleet.hosts[
        "db2"
    ].console.pause_error = "PAUSE appdb did not complete within 30 s: ... (in session pooling ...)"
    out = runner.run("appdb", "pgmaint.reindex")
    assert out["result"] is False
    assert fleet.published == []
    assert out["paused"] == ["db1"] and out["resumed"] == ["db1", "db2"]
    assert "no maintenance state ran" in " ".join(out["problems"])
    assert "in session pooling" in out["comment"]
    assert _paused(fleet) == {"db1": [], "db2": []} and _markers(fleet) == {"db1": [], "db2": []}


def test_a_publish_failure_still_resumes(runner, fleet, monkeypatch):
    monkeypatch.setattr(FakeClient, "run_job", lambda self, *args, **kwargs: {})
    out = runner.run("appdb", "pgmaint.reindex")
    assert out["result"] is False and "could not be published" in out["error"]
    assert _paused(fleet) == {"db1": [], "db2": []}


def test_a_failed_resume_is_named_and_resume_repairs_it(runner, fleet):
    fleet.states = {"db1": (GOOD, 0), "db2": (GOOD, 0)}
    original = fleet.hosts["db2"].console.resume

    def down(db=None):
        raise CommandExecutionError("console did not answer")

    fleet.hosts["db2"].module.__salt__["pgbouncer.resume"] = down
    out = runner.run("appdb", "pgmaint.reindex")
    assert out["result"] is False and out["resumed"] == ["db1"]
    assert "pgbouncer_maintenance.resume tgt=db2 tgt_type=list database=appdb" in out["comment"]
    assert _paused(fleet)["db2"] == ["appdb"] and _markers(fleet)["db2"] == ["appdb"]
    fleet.hosts["db2"].module.__salt__["pgbouncer.resume"] = original
    fixed = runner.resume(tgt="*")
    assert fixed["result"] is True and fixed["resumed"] == {"db2": ["appdb"]}
    assert fixed["comment"] == "resumed db2: appdb"
    assert _paused(fleet)["db2"] == [] and _markers(fleet)["db2"] == []


def _leave_a_window(fleet, owner, ttl=400, jid="20261202101500000001", sls_hosts=("db1",)):
    for host in fleet.hosts.values():
        host.module.pause("appdb", jid, ttl=ttl, owner=owner, sls_hosts=list(sls_hosts))
    fleet.hosts["db1"].jobs[jid] = True  # its state job still runs


def test_the_next_run_repairs_a_window_whose_runner_died(runner, fleet):
    dead = {"master": "master1", "pid": os.getpid(), "started": 1.0}  # same pid, other start: not us
    _leave_a_window(fleet, dead)
    fleet.states = {"db1": (GOOD, 0), "db2": (GOOD, 0)}
    out = runner.run("appdb", "pgmaint.reindex")
    assert out["result"] is True, out
    assert out["repaired"] == {"resumed": {"db1": ["appdb"], "db2": ["appdb"]}, "terminated": ["db1"]}
    assert fleet.hosts["db1"].terminated[0] == "20261202101500000001"
    for host in fleet.hosts.values():
        assert [call[0] for call in host.console.calls] == ["PAUSE", "RESUME", "PAUSE", "RESUME"]
    assert _markers(fleet) == {"db1": [], "db2": []}


def test_an_expired_window_of_another_master_is_repaired(runner, fleet, monkeypatch):
    _leave_a_window(fleet, {"master": "master2", "pid": 1, "started": 1.0}, ttl=1)
    real_time = time.time
    for host in fleet.hosts.values():
        monkeypatch.setattr(host.module.time, "time", lambda: real_time() + 10)
    fleet.states = {"db1": (GOOD, 0), "db2": (GOOD, 0)}
    assert runner.run("appdb", "pgmaint.reindex")["repaired"]["resumed"] == {
        "db1": ["appdb"],
        "db2": ["appdb"],
    }


@pytest.mark.parametrize("owner", ["ours", "other master"])
def test_a_live_window_on_the_database_is_refused(runner, fleet, owner):
    if owner == "ours":
        live = runner._owner()
    else:
        live = {"master": "master2", "pid": 1, "started": 1.0}
    _leave_a_window(fleet, live)
    with pytest.raises(
        CommandExecutionError, match="held by another maintenance window on db1, db2 .*resume tgt=db1,db2"
    ):
        runner.run("appdb", "pgmaint.reindex")
    assert fleet.published == []
    assert _paused(fleet) == {"db1": ["appdb"], "db2": ["appdb"]}  # the live window is left alone
    # another database is not blocked by it
    fleet.states = {"db1": (GOOD, 0), "db2": (GOOD, 0)}
    assert runner.run("otherdb", "pgmaint.reindex")["result"] is True
    # the operator ends it by hand
    assert runner.resume(database="appdb")["resumed"] == {"db1": ["appdb"], "db2": ["appdb"]}
    assert _paused(fleet) == {"db1": [], "db2": []}


def test_a_host_that_does_not_answer_is_refused_before_anything_is_paused(runner, fleet):
    fleet.hosts["db2"].answers = False
    with pytest.raises(
        CommandExecutionError, match="cannot pause appdb on every host tgt matches: db2: no answer"
    ):
        runner.run("appdb", "pgmaint.reindex")
    assert fleet.hosts["db1"].console.calls == []


def test_sls_tgt_runs_the_states_elsewhere(runner, fleet, tmp_path):
    fleet.hosts["pg1"] = Host("pg1", tmp_path)
    fleet.states = {"pg1": (GOOD, 0)}
    out = runner.run("appdb", "pgmaint.reindex", tgt=["db1", "db2"], tgt_type="list", sls_tgt="pg1")
    assert out["result"] is True, out
    assert out["hosts"] == ["db1", "db2"] and out["sls_hosts"] == ["pg1"]
    assert fleet.hosts["pg1"].console.calls == []
    fleet.hosts["pg1"].answers = False
    with pytest.raises(CommandExecutionError, match="sls_tgt 'pg1': no answer from pg1; nothing paused"):
        runner.run("appdb", "pgmaint.reindex", tgt=["db1", "db2"], tgt_type="list", sls_tgt="pg1")


def test_a_dry_run_pauses_nothing(runner, fleet):
    _leave_a_window(fleet, {"master": "master2", "pid": 1, "started": 1.0}, jid="20261202101500000001")
    out = runner.run("otherdb", "pgmaint.reindex", dry_run=True)
    assert out["result"] is None
    assert out["comment"].startswith(
        "dry run: would pause otherdb on db1, db2, apply pgmaint.reindex on db1, db2"
    )
    assert "earlier windows left" in out["comment"]
    assert [call[0] for call in fleet.hosts["db1"].console.calls] == ["PAUSE"]  # only _leave_a_window's


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"database": "../x"}, "database"),
        ({"database": ""}, "database"),
        ({"database": "appdb\n"}, "database"),
        ({"sls": ""}, "sls is required"),
        ({"sls": "a,b c"}, "not an SLS name"),
        ({"timeout": 0}, "timeout"),
        ({"pause_timeout": "x"}, "pause_timeout"),
        ({"sls_pillar": "k=v"}, "sls_pillar"),
    ],
)
def test_bad_settings_are_refused_before_any_call(runner, fleet, kwargs, match):
    args = dict({"database": "appdb", "sls": "pgmaint.reindex"}, **kwargs)
    with pytest.raises(SaltInvocationError, match=match):
        runner.run(**args)
    assert fleet.calls == []


def test_sls_lists_are_joined():
    runner = load_component("_runners", "pgbouncer_maintenance")
    assert runner._sls(["a.b", " c "]) == "a.b,c"
    assert runner._sls("a.b, c") == "a.b,c"
