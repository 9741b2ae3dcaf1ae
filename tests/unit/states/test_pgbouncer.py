"""
The thin pgbouncer states over a mocked execution module, in the
saltext-vault style: the loader dunders are set by
``configure_loader_modules``, each state runs with ``test`` False and True,
and the tests check which module function the state called, and what it
returned.
"""

import logging
from unittest.mock import MagicMock

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.components import load_component

pgbouncer = load_component("_states", "pgbouncer")

NAME = "/etc/pgbouncer/pgbouncer.ini"
USERLIST = "/etc/pgbouncer/userlist.txt"


@pytest.fixture(params=[False, True], ids=["apply", "test"])
def test(request):
    return request.param


@pytest.fixture
def funcs():
    return {
        "pgbouncer.plan_config": MagicMock(),
        "pgbouncer.apply_config": MagicMock(),
        "pgbouncer.plan_userlist": MagicMock(),
        "pgbouncer.apply_userlist": MagicMock(),
    }


@pytest.fixture
def configure_loader_modules(funcs, test):
    return {pgbouncer: {"__salt__": funcs, "__opts__": {"test": test}}}


def _plan(changes, comment, pending=()):
    return {"changes": changes, "comment": comment, "pending": list(pending)}


def test_virtual(test):
    assert pgbouncer.__virtual__() == "pgbouncer"


def test_configured_up_to_date_changes_nothing(funcs, test):
    funcs["pgbouncer.plan_config"].return_value = _plan({}, f"Already as wanted: {NAME}")
    ret = pgbouncer.configured(NAME, settings={"listen_port": 6432})
    assert ret == {"name": NAME, "result": True, "changes": {}, "comment": f"Already as wanted: {NAME}"}
    funcs["pgbouncer.apply_config"].assert_not_called()


def test_configured_pending_restart_is_a_warning(funcs, test):
    funcs["pgbouncer.plan_config"].return_value = _plan(
        {},
        f"Already as wanted: {NAME}; waiting for a pgbouncer restart to apply: listen_port",
        ["listen_port"],
    )
    ret = pgbouncer.configured(NAME)
    assert ret["result"] is True and ret["changes"] == {}
    assert ret["warnings"] == ["not applied until pgbouncer restarts: listen_port"]


def test_configured_replaced_binary_left_running_is_a_warning(funcs, test):
    # restart: false names a binary a package upgrade replaced and changes nothing
    note = "pgbouncer (pid 7) still runs the binary that was replaced on disk at /usr/sbin/pgbouncer (...)"
    funcs["pgbouncer.plan_config"].return_value = dict(
        _plan({}, f"Already as wanted: {NAME}; {note}"), warnings=[note]
    )
    ret = pgbouncer.configured(NAME)
    assert ret["result"] is True and ret["changes"] == {}
    assert ret["comment"].endswith(note) and ret["warnings"] == [note]
    funcs["pgbouncer.apply_config"].assert_not_called()


def test_configured_change(funcs, test):
    changes = {"diff": "--- a\n+++ b\n", "keys": {"default_pool_size": {"old": "20", "new": "7"}}}
    funcs["pgbouncer.plan_config"].return_value = _plan(
        changes, f"{NAME} would be updated; would reload pgbouncer"
    )
    funcs["pgbouncer.apply_config"].return_value = {
        "result": True,
        "changes": dict(changes, reloaded="console RELOAD"),
        "comment": f"{NAME} updated; reloaded",
        "pending": [],
    }
    ret = pgbouncer.configured(NAME, settings={"default_pool_size": 7}, pillar_key="pgbouncer")
    plan_args = funcs["pgbouncer.plan_config"].call_args
    assert plan_args.args == (NAME,)
    assert plan_args.kwargs["settings"] == {"default_pool_size": 7}
    assert plan_args.kwargs["pillar_key"] == "pgbouncer"
    if test:
        assert ret["result"] is None
        assert ret["changes"] == changes
        assert ret["comment"] == f"{NAME} would be updated; would reload pgbouncer"
        funcs["pgbouncer.apply_config"].assert_not_called()
        return
    assert ret["result"] is True
    assert ret["changes"]["reloaded"] == "console RELOAD"
    assert ret["comment"] == f"{NAME} updated; reloaded"
    assert funcs["pgbouncer.apply_config"].call_args == plan_args


def test_configured_refused_input_fails_before_anything(funcs, test):
    funcs["pgbouncer.plan_config"].side_effect = CommandExecutionError(
        f"{NAME} not changed: settings:pidfile: '...' contains a line break or control character"
    )
    ret = pgbouncer.configured(NAME, settings={"pidfile": "/run/p.pid\nauth_type = trust"})
    assert ret["result"] is False and ret["changes"] == {}
    assert "settings:pidfile" in ret["comment"] and "not changed" in ret["comment"]
    funcs["pgbouncer.apply_config"].assert_not_called()


def test_configured_apply_error_and_rollback(funcs, test):
    funcs["pgbouncer.plan_config"].return_value = _plan({"diff": "x"}, "would restart")
    funcs["pgbouncer.apply_config"].return_value = {
        "result": False,
        "changes": {
            "rolled_back": {"restored_from": "/b", "pgbouncer": "running the previous configuration"}
        },
        "comment": f"Applying failed: {NAME}: pgbouncer did not start with the new configuration",
    }
    ret = pgbouncer.configured(NAME, restart=True)
    if test:
        assert ret["result"] is None
        return
    assert ret["result"] is False
    assert ret["changes"]["rolled_back"]["restored_from"] == "/b"
    assert "did not start" in ret["comment"]
    funcs["pgbouncer.apply_config"].side_effect = CommandExecutionError("cannot write x")
    ret = pgbouncer.configured(NAME)
    assert ret["result"] is False and ret["comment"] == f"Applying failed: {NAME}: cannot write x"


def test_configured_owner_is_a_deprecated_alias(funcs, test, caplog):
    funcs["pgbouncer.plan_config"].return_value = _plan({}, "up to date")
    with caplog.at_level(logging.WARNING):
        ret = pgbouncer.configured(NAME, owner="pgbouncer")
    assert funcs["pgbouncer.plan_config"].call_args.kwargs["user"] == "pgbouncer"
    assert "'owner' is deprecated, use 'user'" in ret["warnings"][0]
    assert "'owner' is deprecated" in caplog.text
    ret = pgbouncer.configured(NAME, user="root")
    assert funcs["pgbouncer.plan_config"].call_args.kwargs["user"] == "root"
    assert "warnings" not in ret


def test_userlist_up_to_date(funcs, test):
    funcs["pgbouncer.plan_userlist"].return_value = _plan({}, f"Already as wanted: {USERLIST} (2 users)")
    ret = pgbouncer.userlist(USERLIST, pillar_key="pgbouncer")
    assert ret["result"] is True and ret["changes"] == {}
    assert ret["comment"] == f"Already as wanted: {USERLIST} (2 users)"
    funcs["pgbouncer.apply_userlist"].assert_not_called()


def test_userlist_change(funcs, test):
    funcs["pgbouncer.plan_userlist"].return_value = _plan({"added": ["app"]}, f"{USERLIST} would be updated")
    funcs["pgbouncer.apply_userlist"].return_value = {
        "changes": {"added": ["app"], "reloaded": "console RELOAD"},
        "comment": f"{USERLIST} updated (1 users)",
    }
    ret = pgbouncer.userlist(USERLIST, users={"app": "Pw-1"}, auth_type="md5", pidfile="/p")
    assert funcs["pgbouncer.plan_userlist"].call_args.kwargs["users"] == {"app": "Pw-1"}
    # the plan checks service and pidfile (operator policy), so test=True predicts the run
    assert funcs["pgbouncer.plan_userlist"].call_args.kwargs["pidfile"] == "/p"
    assert "reload" not in funcs["pgbouncer.plan_userlist"].call_args.kwargs
    if test:
        assert ret == {
            "name": USERLIST,
            "result": None,
            "changes": {"added": ["app"]},
            "comment": f"{USERLIST} would be updated",
        }
        funcs["pgbouncer.apply_userlist"].assert_not_called()
        return
    assert ret["result"] is True and ret["changes"]["reloaded"] == "console RELOAD"
    applied = funcs["pgbouncer.apply_userlist"].call_args.kwargs
    assert applied["pidfile"] == "/p" and applied["reload"] is True and applied["auth_type"] == "md5"


def test_userlist_errors(funcs, test):
    funcs["pgbouncer.plan_userlist"].side_effect = CommandExecutionError(
        f"{USERLIST} not changed: userlist_path: '/srv/x' is outside the allowed paths"
    )
    ret = pgbouncer.userlist("/srv/x", users={"a": "b"})
    assert ret["result"] is False and "userlist_path" in ret["comment"]
    funcs["pgbouncer.plan_userlist"].side_effect = None
    funcs["pgbouncer.plan_userlist"].return_value = _plan({"updated": ["a"]}, "would")
    funcs["pgbouncer.apply_userlist"].side_effect = CommandExecutionError("cannot write x")
    ret = pgbouncer.userlist(USERLIST, users={"a": "b"})
    assert ret["result"] is (None if test else False)
    if not test:
        assert ret["comment"] == f"Applying failed: {USERLIST}: cannot write x"


def test_userlist_owner_is_a_deprecated_alias(funcs, test, caplog):
    funcs["pgbouncer.plan_userlist"].return_value = _plan({}, "up to date")
    with caplog.at_level(logging.WARNING):
        ret = pgbouncer.userlist(USERLIST, users={"a": "b"}, owner="pgbouncer")
    assert funcs["pgbouncer.plan_userlist"].call_args.kwargs["user"] == "pgbouncer"
    assert "'owner' is deprecated" in ret["warnings"][0] and "'owner' is deprecated" in caplog.text
