"""
redis_aof.configured over a stand-in for the execution module, every case in
both modes: the state must decide from ``diff`` alone and call
``configure`` only outside test mode.
"""

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.components import load_component

SECRET = "st4te-Redis-pw"
CONF = "/etc/redis/redis-cache.conf"


redis_aof_state = load_component("_states", "redis_aof")


class Module:
    """
    The two module functions the state uses, with canned answers and a call log.
    """

    def __init__(self, plan=None, done=None, diff_error=None, configure_error=None, unreachable=None):
        self.unreachable = unreachable
        self.plan = plan
        self.done = done
        self.diff_error = diff_error
        self.configure_error = configure_error
        self.calls = []

    def diff(
        self,
        settings,
        instance=None,
        persist=None,
        unreachable_ok=False,
        pillar_instance=None,
        back_to_defaults=False,
        **conn,
    ):
        self.calls.append(("diff", settings, instance, persist, conn, pillar_instance, back_to_defaults))
        if self.unreachable:
            if not unreachable_ok:
                raise CommandExecutionError(self.unreachable)
            return {
                "instance": instance,
                "wanted": settings,
                "persist": True,
                "changes": {k: {"old": None, "new": v} for k, v in settings.items()},
                "unreachable": self.unreachable,
                "config_file": None,
                "config_file_pending": None,
            }
        if self.diff_error:
            raise self.diff_error
        return self.plan

    def configure(
        self,
        settings,
        instance=None,
        persist=None,
        wait_timeout=None,
        pillar_instance=None,
        back_to_defaults=False,
        **conn,
    ):
        self.calls.append(("configure", settings, instance, persist, conn, pillar_instance, back_to_defaults))
        if self.configure_error:
            raise self.configure_error
        return self.done


@pytest.fixture
def configure_loader_modules():
    return {redis_aof_state: {"__salt__": {}, "__opts__": {"test": False}}}


def _run(module, test, **kwargs):
    salt_funcs = {"redis_aof.diff": module.diff, "redis_aof.configure": module.configure}
    original_salt, original_opts = redis_aof_state.__salt__, redis_aof_state.__opts__
    redis_aof_state.__salt__ = salt_funcs
    redis_aof_state.__opts__ = dict(original_opts, test=test)
    try:
        return redis_aof_state.configured("127.0.0.1:6380", **kwargs)
    finally:
        redis_aof_state.__salt__, redis_aof_state.__opts__ = original_salt, original_opts


CHANGE = {"appendfsync": {"old": "everysec", "new": "always"}}


WANTED = {"appendfsync": "always"}


def _plan(changes=None, pending=None, config_file=CONF, persist=True):
    return {
        "instance": "127.0.0.1:6380",
        "wanted": WANTED,
        "persist": persist,
        "changes": changes or {},
        "config_file": config_file,
        "config_file_pending": pending,
        "unreachable": None,
    }


def _done(changes=None, persisted=True, live_only=None, config_file=CONF):
    return {
        "instance": "127.0.0.1:6380",
        "wanted": WANTED,
        "changes": changes or {},
        "persisted": persisted,
        "live_only": live_only,
        "config_file": config_file,
    }


def _called(module, name):
    return [c for c in module.calls if c[0] == name]


@pytest.mark.parametrize("test", [False, True])
def test_already_as_wanted(test):
    module = Module(plan=_plan(pending={}))
    ret = _run(module, test, appendfsync="always", password=SECRET)
    assert ret["result"] is True and ret["changes"] == {}
    assert ret["comment"] == "Already as wanted: AOF settings of 127.0.0.1:6380 (appendfsync always)"
    assert _called(module, "configure") == []
    # Connection arguments and settings reach the module separately; underscores untouched.
    assert module.calls[0][1] == {"appendfsync": "always"}
    assert module.calls[0][4] == {"password": SECRET}


@pytest.mark.parametrize("test", [False, True])
def test_live_change_is_applied_and_persisted(test):
    module = Module(plan=_plan(CHANGE, pending=CHANGE), done=_done(CHANGE))
    ret = _run(module, test, appendfsync="always", password=SECRET, __id__="x", __sls__="redis_aof")
    assert ret["changes"] == {"settings": CHANGE, "config_file": CONF}
    assert SECRET not in repr(ret)
    if test:
        assert ret["result"] is None and ret["comment"].startswith("Would set")
        assert _called(module, "configure") == []
    else:
        assert ret["result"] is True
        assert "appendfsync everysec -> always" in ret["comment"] and "persisted to" in ret["comment"]
        assert ret["comment"].endswith("(now appendfsync always)")  # the value applied
        [call] = _called(module, "configure")
        assert call[1] == {"appendfsync": "always"}  # Salt's __ keys are not settings


@pytest.mark.parametrize("test", [False, True])
def test_only_the_config_file_is_behind(test):
    module = Module(plan=_plan({}, pending=CHANGE), done=_done({}))
    ret = _run(module, test, appendfsync="always")
    assert ret["changes"] == {"config_file": CONF}
    if test:
        assert ret["result"] is None and f"{CONF} lacks appendfsync" in ret["comment"]
    else:
        assert ret["result"] is True and "persisted" in ret["comment"]


@pytest.mark.parametrize("test", [False, True])
def test_live_only_is_said_clearly(test):
    module = Module(
        plan=_plan(CHANGE, pending=None, config_file=None),
        done=_done(
            CHANGE, persisted=False, live_only="the server runs without a config file", config_file=None
        ),
    )
    ret = _run(module, test, appendfsync="always")
    assert ret["changes"]["settings"] == CHANGE
    assert ret["changes"]["config_file"] == "none: live only"
    if not test:
        assert ret["result"] is True
        assert "live only" in ret["comment"] and "restart" in ret["comment"]
        assert ret["warnings"]


@pytest.mark.parametrize("test", [False, True])
@pytest.mark.parametrize(
    "error",
    [
        SaltInvocationError("invalid redis_aof settings: timeout must be between 0"),
        CommandExecutionError("Redis 127.0.0.1:6380: CONFIG GET failed: ConnectionError"),
    ],
)
def test_diff_error_fails_before_any_change(test, error):
    module = Module(diff_error=error)
    ret = _run(module, test, timeout=-1)
    assert ret["result"] is False and ret["changes"] == {}
    assert str(error) in ret["comment"] and ret["comment"].startswith("Nothing changed")
    assert _called(module, "configure") == []


@pytest.mark.parametrize("test", [False, True])
def test_configure_error_fails_with_the_step(test):
    module = Module(
        plan=_plan(CHANGE, pending=CHANGE),
        configure_error=CommandExecutionError("CONFIG REWRITE failed: Permission denied"),
    )
    ret = _run(module, test, appendfsync="always")
    if test:
        assert ret["result"] is None
    else:
        assert ret["result"] is False and ret["changes"] == {}
        assert "Applying failed: AOF settings of 127.0.0.1:6380" in ret["comment"]
        assert "Permission denied" in ret["comment"]


@pytest.mark.parametrize("test", [False, True])
def test_no_settings_is_an_error(test):
    module = Module()
    ret = _run(module, test, password=SECRET)
    assert ret["result"] is False and "no AOF setting given" in ret["comment"]
    assert module.calls == []


@pytest.mark.parametrize("test", [False, True])
def test_unreachable_server_only_passes_a_dry_run(test):
    reason = "Redis 127.0.0.1:6380: connecting failed: ConnectionError: Connection refused"
    module = Module(unreachable=reason)
    ret = _run(module, test, appendfsync="always")
    assert reason in ret["comment"]
    assert _called(module, "configure") == []
    if test:
        assert ret["result"] is None
        assert ret["changes"] == {"settings": {"appendfsync": {"old": None, "new": "always"}}}
    else:
        assert ret["result"] is False and ret["changes"] == {}


@pytest.mark.parametrize("test", [False, True])
def test_pillar_instance_needs_no_settings_and_reaches_the_module(test):
    # the SLS hands over only the pillar key: the module reads address,
    # password and settings from the pillar at run time
    module = Module(plan=_plan(CHANGE, pending=CHANGE), done=_done(CHANGE))
    ret = _run(module, test, pillar_instance="cache")
    assert ret["changes"] == {"settings": CHANGE, "config_file": CONF}
    (call,) = _called(module, "diff")
    assert call[1] == {} and call[5] == "cache" and call[6] is False and call[4] == {}
    assert _called(module, "configure") == (
        [] if test else [("configure", {}, "127.0.0.1:6380", None, {}, "cache", False)]
    )


@pytest.mark.parametrize("test", [False, True])
def test_persist_false_from_the_plan_reports_no_config_file(test):
    module = Module(plan=_plan(CHANGE, pending=None, persist=False), done=_done(CHANGE, persisted=None))
    ret = _run(module, test, appendfsync="always", persist=False)
    assert ret["changes"] == {"settings": CHANGE}


def test_virtual_needs_the_module():
    redis_aof_state.__salt__ = {}
    ok, reason = redis_aof_state.__virtual__()
    assert ok is False and "redis-py" in reason
