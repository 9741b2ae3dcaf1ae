"""
opsalt_rollout: the runner's batching, the minion module's gate (unlock,
unlocked, lock, expiry), health reporting and the states, with Salt's
dunders filled by hand.
"""

import json
import os
import stat

import jsonschema
import pytest
from salt.exceptions import SaltInvocationError

from tests.support.asset_api import REPO_ROOT
from tests.support.components import load_component

runner = load_component("_runners", "opsalt_rollout")
module = load_component("_modules", "opsalt_rollout")
states = load_component("_states", "opsalt_rollout")

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("batch", "total", "size"),
    [(1, 3, 1), ("2", 3, 2), ("34%", 3, 2), ("25%", 10, 3), ("100%", 4, 4), ("1%", 3, 1), (5, 3, 5)],
)
def test_batch_size_counts_and_percentages(batch, total, size):
    assert runner.batch_size(batch, total) == size


@pytest.mark.parametrize("batch", [0, "0%", "-1", "101%", "x", "2.5", None])
def test_batch_size_refuses_bad_values(batch):
    with pytest.raises(SaltInvocationError, match="batch"):
        runner.batch_size(batch, 3)


def test_batches_put_replicas_first_and_never_with_a_primary():
    hosts = {"a": {"role": "primary"}, "b": {"role": "replica"}, "c": {}, "d": {"role": "replica"}}
    assert runner.make_batches(hosts, 1) == [["b"], ["d"], ["a"], ["c"]]
    assert runner.make_batches(hosts, 3) == [["b", "d"], ["a", "c"]]
    assert runner.make_batches({"x": {}, "y": {}, "z": {}}, "50%") == [["x", "y"], ["z"]]


def test_run_refuses_an_unknown_component():
    with pytest.raises(SaltInvocationError, match="pgbouncer, redis_aof"):
        runner.plan("vmtune")


@pytest.fixture
def gate(tmp_path, monkeypatch):
    monkeypatch.setattr(module, "__opts__", {"cachedir": str(tmp_path)}, raising=False)
    return tmp_path


def test_unlock_opens_only_for_its_token_and_lock_closes(gate):
    assert module.unlocked("pgbouncer", TOKEN) is False
    assert module.unlock("pgbouncer", TOKEN, ttl=60) is True
    path = gate / "opsalt_rollout" / "pgbouncer.token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert TOKEN not in path.read_text()  # only a hash is stored
    assert module.unlocked("pgbouncer", TOKEN) is True
    assert module.unlocked("pgbouncer", TOKEN[::-1]) is False
    assert module.unlocked("pgbouncer", None) is False
    assert module.unlocked("redis_aof", TOKEN) is False  # per component
    assert module.lock("pgbouncer") is True
    assert module.unlocked("pgbouncer", TOKEN) is False
    assert module.lock("pgbouncer") is True  # idempotent


def test_an_expired_gate_is_closed(gate, monkeypatch):
    module.unlock("redis_aof", TOKEN, ttl=1)
    real_time = module.time.time
    monkeypatch.setattr(module.time, "time", lambda: real_time() + 5)
    assert module.unlocked("redis_aof", TOKEN) is False


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("pgbouncer", "short"), "token"),
        (("pgbouncer", TOKEN, 0), "ttl"),
        (("../x", TOKEN), "component name"),
    ],
)
def test_unlock_refuses_bad_input_and_writes_nothing(gate, args, match):
    with pytest.raises(SaltInvocationError, match=match):
        module.unlock(*args)
    assert not (gate / "opsalt_rollout").exists() or not os.listdir(gate / "opsalt_rollout")


def _with_salt(monkeypatch, funcs, pillar=None):
    monkeypatch.setattr(module, "__salt__", funcs, raising=False)
    monkeypatch.setattr(module, "__pillar__", pillar or {}, raising=False)


def test_describe_reads_presence_managed_and_role(monkeypatch):
    pillar = {"pgbouncer": {}, "opsalt_rollout": {"managed": ["pgbouncer"], "role": "replica"}}
    _with_salt(
        monkeypatch, {"pillar.get": lambda key, default=None, unmask=False: pillar.get(key, default)}, pillar
    )
    assert module.describe("pgbouncer") == {"present": True, "managed": True, "role": "replica"}
    assert module.describe("redis_aof") == {"present": False, "managed": False, "role": "replica"}
    pillar["opsalt_rollout"]["role"] = "leader"
    with pytest.raises(SaltInvocationError, match="role"):
        module.describe("pgbouncer")


def test_health_reports_problems_and_a_failing_check(monkeypatch):
    def health(**kwargs):
        return {"problems": [f"appdb/app: 2 clients waiting (threshold {kwargs['max_waiting']})"]}

    _with_salt(monkeypatch, {"pgbouncer.health": health})
    assert module.health("pgbouncer", max_waiting=0) == {
        "healthy": False,
        "problems": ["appdb/app: 2 clients waiting (threshold 0)"],
    }

    def broken(**kwargs):
        raise module.CommandExecutionError("console did not answer")

    _with_salt(monkeypatch, {"pgbouncer.health": broken})
    report = module.health("pgbouncer")
    assert report["healthy"] is False and "console did not answer" in report["problems"][0]


def test_redis_health_flags_postponed_writes_and_write_errors(monkeypatch):
    reports = {
        "127.0.0.1:1": {"aof_delayed_fsync": {"delta": 2}, "aof_last_write_status": "ok"},
        "127.0.0.1:2": {"aof_delayed_fsync": {"delta": 0}, "aof_last_write_status": "err"},
    }
    pillar = {"redis_aof": {"instances": {"a": {"instance": "127.0.0.1:1"}, "b": {"port": 2}}}}
    _with_salt(
        monkeypatch,
        {
            "pillar.get": lambda key, default=None, unmask=False: pillar.get(key, default),
            "redis_aof.stalls": lambda instance, interval, **conn: reports[instance],
        },
    )
    report = module.health("redis_aof", interval=0)
    assert report["healthy"] is False
    assert any("postponed" in problem for problem in report["problems"])
    assert any("aof_last_write_status is err" in problem for problem in report["problems"])


def test_pending_changes_nothing():
    ret = states.pending("pgbouncer", sls=None)
    assert ret["result"] is None and ret["changes"] == {}
    assert ret["comment"].startswith("pending rollout: pgbouncer")


@pytest.mark.parametrize("test", [True, False])
def test_rolled_out_lists_batches_and_honours_test_mode(monkeypatch, test):
    calls = []

    def saltutil_runner(name, **kwargs):
        calls.append(kwargs)
        changed = [] if kwargs["dry_run"] else ["a", "b"]
        return {
            "result": None if kwargs["dry_run"] else True,
            "batches": [["a"], ["b"]],
            "changed": changed,
            "comment": "done",
        }

    monkeypatch.setattr(states, "__opts__", {"test": test}, raising=False)
    monkeypatch.setattr(states, "__salt__", {"saltutil.runner": saltutil_runner}, raising=False)
    ret = states.rolled_out("pgbouncer", tgt="db*", batch="50%", max_wait=0.5, ignored=1)
    assert calls[0]["dry_run"] is test and calls[0]["max_wait"] == 0.5 and "ignored" not in calls[0]
    assert "batch 1: a" in ret["comment"] and "batch 2: b" in ret["comment"]
    if test:
        assert ret["result"] is None and ret["changes"] == {}
    else:
        assert ret["result"] is True and ret["changes"] == {"changed": ["a", "b"]}


def test_rolled_out_reports_a_stopped_rollout(monkeypatch):
    out = {
        "result": False,
        "batches": [["a"], ["b"], ["c"]],
        "changed": ["a", "b"],
        "failed_batch": 2,
        "problems": {"b": ["waiting"]},
        "untouched": ["c"],
        "comment": "stopped at batch 2/3",
    }
    monkeypatch.setattr(states, "__opts__", {"test": False}, raising=False)
    monkeypatch.setattr(states, "__salt__", {"saltutil.runner": lambda name, **kw: out}, raising=False)
    ret = states.rolled_out("pgbouncer")
    assert ret["result"] is False
    assert ret["changes"] == {
        "changed": ["a", "b"],
        "failed_batch": 2,
        "problems": {"b": ["waiting"]},
        "untouched": ["c"],
    }


def test_a_stopped_run_sets_salt_runs_exit_code(monkeypatch):
    """salt-run takes its exit code from the return's ``retcode`` key only."""
    planned = {"batches": [["a"], ["b"], ["c"]]}
    monkeypatch.setattr(runner, "__context__", {}, raising=False)
    monkeypatch.setattr(runner, "plan", lambda *args: planned)
    monkeypatch.setattr(runner, "_apply", lambda component, hosts: (hosts, {}))
    gates = iter([{}, {"b": ["2 clients waiting"]}])
    monkeypatch.setattr(runner, "_observe", lambda *args: next(gates))
    report = runner.run("pgbouncer", soak=0)
    assert report["result"] is False and report["retcode"] == 1
    assert report["changed"] == ["a", "b"] and report["untouched"] == ["c"]
    gates = iter([{}, {}, {}])
    assert "retcode" not in runner.run("pgbouncer", soak=0)


def test_outcome_of_one_host():
    ok = {"pgbouncer_|-a_|-b_|-configured": {"result": True, "changes": {"keys": 1}}}
    assert runner._outcome("pgbouncer", ok, 0) == (True, [])
    bad = {"pgbouncer_|-a_|-b_|-configured": {"result": False, "changes": {}, "comment": "invalid"}}
    assert runner._outcome("pgbouncer", bad, 2) == (False, ["invalid"])
    closed = {
        runner.PENDING_PREFIX + "opsalt-rollout-pending-pgbouncer_|-pgbouncer_|-pending": {"result": None}
    }
    assert "did not open" in runner._outcome("pgbouncer", closed, 0)[1][0]
    assert runner._outcome("pgbouncer", "Minion did not return", 1)[1] == [
        "state.apply pgbouncer failed: Minion did not return"
    ]


@pytest.mark.parametrize(
    ("section", "valid"),
    [
        ({"managed": ["pgbouncer", "redis_aof"], "role": "replica"}, True),
        ({"managed": ["vmtune"]}, False),
        ({"role": "leader"}, False),
        ({"token": "f" * 32}, False),  # the per-run token never comes from the asset system
    ],
)
def test_schema_section(section, valid):
    with open(os.path.join(REPO_ROOT, "schema", "pillar.schema.json"), encoding="utf-8") as handle:
        schema = json.load(handle)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors({"opsalt_rollout": section}))
    assert (not errors) is valid, errors
