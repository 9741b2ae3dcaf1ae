"""
The ``pgbouncer_maintenance.applied`` orchestration state over a mocked
runner, with ``test`` False and True.
"""

import pytest
from salt.exceptions import SaltInvocationError

from tests.support.components import load_component

states = load_component("_states", "pgbouncer_maintenance")


@pytest.fixture(params=[False, True], ids=["apply", "test"])
def test(request, monkeypatch):
    monkeypatch.setattr(states, "__opts__", {"test": request.param}, raising=False)
    return request.param


def _runner(monkeypatch, out, calls):
    def saltutil_runner(name, **kwargs):
        calls.append((name, kwargs))
        if isinstance(out, Exception):
            raise out
        return out(kwargs) if callable(out) else out

    monkeypatch.setattr(states, "__salt__", {"saltutil.runner": saltutil_runner}, raising=False)


def test_applied_hands_the_window_to_the_runner(monkeypatch, test):
    calls = []

    def out(kwargs):
        if kwargs["dry_run"]:
            return {"result": None, "comment": "dry run: would pause appdb on db1"}
        return {
            "result": True,
            "comment": "appdb paused on db1 for 2.1 s, resumed on db1; pgmaint.reindex applied on pg1",
            "paused": ["db1"],
            "resumed": ["db1"],
            "states": {"pg1": {"result": True, "changed": 1, "failed": []}},
            "timed_out": [],
            "problems": [],
            "jid": "20261202101500123456",
        }

    _runner(monkeypatch, out, calls)
    ret = states.applied("pgmaint.reindex", "appdb", tgt="db*", sls_tgt="pg1", timeout=60)
    ((name, kwargs),) = calls
    assert name == "pgbouncer_maintenance.run"
    assert kwargs["sls"] == "pgmaint.reindex" and kwargs["database"] == "appdb" and kwargs["dry_run"] is test
    assert kwargs["tgt"] == "db*" and kwargs["sls_tgt"] == "pg1" and kwargs["timeout"] == 60
    if test:
        assert ret["result"] is None and ret["changes"] == {}
        assert ret["comment"] == "dry run: would pause appdb on db1"
    else:
        assert ret["result"] is True
        assert ret["changes"] == {
            "paused": ["db1"],
            "resumed": ["db1"],
            "states": {"pg1": {"result": True, "changed": 1, "failed": []}},
        }
        assert ret["comment"].endswith("applied on pg1")


def test_a_failed_window_fails_the_state(monkeypatch):
    monkeypatch.setattr(states, "__opts__", {"test": False}, raising=False)
    out = {
        "result": False,
        "comment": "maintenance of appdb failed; ...",
        "paused": ["db1"],
        "resumed": ["db1"],
        "timed_out": ["pg1"],
        "terminated": ["pg1"],
        "problems": ["pgmaint.reindex did not finish within 60 s on pg1"],
    }
    _runner(monkeypatch, out, [])
    ret = states.applied("pgmaint.reindex", "appdb")
    assert ret["result"] is False
    assert ret["changes"]["timed_out"] == ["pg1"] and ret["changes"]["problems"] == out["problems"]


def test_runner_errors_become_a_failed_state(monkeypatch, test):
    _runner(monkeypatch, SaltInvocationError("sls is required"), [])
    ret = states.applied("", "appdb")
    assert ret["result"] is False and ret["comment"].endswith("sls is required")
    traceback = "Exception occurred in runner pgbouncer_maintenance.run: Traceback ...\n" + (
        "salt.exceptions.CommandExecutionError: cannot pause appdb on every host tgt matches: db2: no answer\n"
    )
    _runner(monkeypatch, traceback, [])
    ret = states.applied("pgmaint.reindex", "appdb")
    assert ret["result"] is False
    assert ret["comment"] == (
        "maintenance window for appdb failed: salt.exceptions.CommandExecutionError: "
        "cannot pause appdb on every host tgt matches: db2: no answer"
    )
