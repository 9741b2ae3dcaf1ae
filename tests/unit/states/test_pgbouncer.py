"""
The pgbouncer states with the execution module mocked: both modes, the
decision between reload, restart and "waiting for a restart", and secrets.
"""

import os

import opsalt_files
import opsalt_pgbouncer as pgconf
import pytest

from tests.support.components import load_component

states = load_component("_states", "pgbouncer")


def _row(value, default=None, changeable=True):
    return {"value": value, "default": default, "changeable": changeable}


RUNNING = {
    "listen_port": _row("6432", "6432", False),
    "default_pool_size": _row("20", "20"),
    "auth_type": _row("trust", "md5"),
    "conffile": _row("/x", None),
}


@pytest.fixture
def salt(monkeypatch, tmp_path):
    calls = []
    running = {"config": dict(RUNNING)}

    def write_file(path, text, owner=None, group=None, mode="0640"):
        calls.append(("write", path))
        return opsalt_files.atomic_write(path, text, mode=int(mode, 8), user=owner, group=group)

    def signal_reload(**kwargs):
        calls.append(("reload", kwargs))
        running["config"] = dict(running["config"], **running.get("after_reload", {}))
        return "console RELOAD"

    funcs = {
        "pgbouncer.render_config": lambda d, u, s: pgconf.render_ini(d, u, s),
        "pgbouncer.validate": lambda path, text=None, service_user=None: {
            "valid": not pgconf.validate(pgconf.parse_ini(text), (1, 18), None),
            "errors": pgconf.validate(pgconf.parse_ini(text), (1, 18), None),
        },
        "pgbouncer.status": lambda **kw: {
            "running": running.get("up", True),
            "pid": 1,
            "console": running.get("up", True),
        },
        "pgbouncer.running_config": lambda **kw: running["config"],
        "pgbouncer.write_file": write_file,
        "pgbouncer.signal_reload": signal_reload,
        "pgbouncer.restart": lambda **kw: calls.append(("restart", kw)),
        "pgbouncer.secret": lambda user, password, method="scram-sha-256", iterations=4096, **kw: (
            pgconf.make_secret(user, password, method, iterations)
        ),
        "pgbouncer.read_config": lambda path: pgconf.parse_ini(open(path).read()),
        "config.get": lambda key, default=None: default,
    }
    monkeypatch.setattr(states, "__salt__", funcs, raising=False)
    monkeypatch.setattr(states, "__opts__", {"test": False}, raising=False)
    owner = __import__("pwd").getpwuid(os.getuid()).pw_name
    group = __import__("grp").getgrgid(os.getgid()).gr_name
    return {
        "calls": calls,
        "running": running,
        "path": str(tmp_path / "pgbouncer.ini"),
        "owner": owner,
        "group": group,
        "tmp": tmp_path,
    }


def _configure(salt, test, **settings):
    states.__opts__["test"] = test
    base = {"listen_port": 6432, "auth_type": "trust", "default_pool_size": 20}
    base.update(settings)
    return states.configured(
        salt["path"], settings=base, owner=salt["owner"], group=salt["group"], pidfile="/p"
    )


@pytest.mark.parametrize("test", [False, True])
def test_first_write_reloads(salt, test):
    salt["running"]["after_reload"] = {"default_pool_size": _row("7", "20")}
    ret = _configure(salt, test, default_pool_size=7)
    if test:
        assert ret["result"] is None
        assert "would reload" in ret["comment"]
        assert ret["changes"]["keys"] == {"default_pool_size": {"old": "20", "new": "7"}}
        assert not os.path.exists(salt["path"])
        assert salt["calls"] == []
        return
    assert ret["result"] is True, ret
    assert ret["changes"]["keys"] == {"default_pool_size": {"old": "20", "new": "7"}}
    assert ret["changes"]["reloaded"] == "console RELOAD"
    assert [c[0] for c in salt["calls"]] == ["write", "reload"]
    again = _configure(salt, False, default_pool_size=7)
    assert again["changes"] == {} and again["result"] is True


@pytest.mark.parametrize("test", [False, True])
def test_invalid_config_touches_nothing(salt, test):
    with open(salt["path"], "w", encoding="utf-8") as handle:
        handle.write("[pgbouncer]\nlisten_port = 6432\n")
    ret = _configure(salt, test, pool_mode="sessions")
    assert ret["result"] is False
    assert "not changed" in ret["comment"] and "pool_mode" in ret["comment"]
    assert open(salt["path"], encoding="utf-8").read() == "[pgbouncer]\nlisten_port = 6432\n"
    assert salt["calls"] == []


@pytest.mark.parametrize("test", [False, True])
@pytest.mark.parametrize("restart", [False, True])
def test_restart_only_key(salt, test, restart):
    states.__opts__["test"] = test
    settings = {"listen_port": 7000, "auth_type": "trust", "default_pool_size": 20}
    if restart:
        salt["running"]["after_reload"] = {"listen_port": _row("7000", "6432", False)}
    ret = states.configured(
        salt["path"],
        settings=settings,
        owner=salt["owner"],
        group=salt["group"],
        pidfile="/p",
        restart=restart,
    )
    if test:
        assert ret["result"] is None
        assert (
            "restart pgbouncer for listen_port" if restart else "a restart is still needed for listen_port"
        ) in ret["comment"]
        assert not [c for c in salt["calls"] if c[0] == "restart"]
        return
    assert ret["result"] is True, ret
    if restart:
        assert ret["changes"]["restarted"] is True
        assert any(c[0] == "restart" for c in salt["calls"])
    else:
        assert ret["changes"]["pending_restart"] == ["listen_port"]
        assert "listen_port" in ret["warnings"][0]
        again = states.configured(
            salt["path"], settings=settings, owner=salt["owner"], group=salt["group"], pidfile="/p"
        )
        assert again["changes"] == {}
        assert "waiting for a pgbouncer restart to apply: listen_port" in again["comment"]


def test_reload_that_does_not_apply_fails(salt):
    # pgbouncer answers RELOAD even when it kept the old value.
    ret = _configure(salt, False, default_pool_size=9)
    assert ret["result"] is False
    assert "still runs with the old default_pool_size" in ret["comment"]


@pytest.mark.parametrize("test", [False, True])
def test_not_running_only_writes(salt, test):
    salt["running"]["up"] = False
    ret = _configure(salt, test, default_pool_size=5)
    assert ret["result"] is (None if test else True)
    assert "not running" in ret["comment"]
    assert not [c for c in salt["calls"] if c[0] == "reload"]
    assert os.path.exists(salt["path"]) is (not test)


@pytest.mark.parametrize("test", [False, True])
def test_userlist_hashes_per_auth_type_and_hides_secrets(salt, test):
    path = str(salt["tmp"] / "userlist.txt")
    states.__opts__["test"] = test
    salt["running"]["up"] = False
    users = {
        "alice": "Alice-Pw-1",
        "bob": {"password": "Bob-Pw-2", "method": "scram-sha-256"},
        "carol": {"secret": pgconf.md5_secret("carol", "Carol-Pw-3")},
    }
    ret = states.userlist(path, users, auth_type="md5", owner=salt["owner"], group=salt["group"])
    text = repr(ret)
    assert not any(pw in text for pw in ("Alice-Pw-1", "Bob-Pw-2", "Carol-Pw-3"))
    assert ret["changes"]["added"] == ["alice", "bob", "carol"]
    if test:
        assert ret["result"] is None and not os.path.exists(path)
        return
    assert ret["result"] is True
    entries = pgconf.parse_userlist(open(path).read())
    assert entries["alice"] == pgconf.md5_secret("alice", "Alice-Pw-1")
    assert pgconf.secret_kind(entries["bob"]) == "scram-sha-256"
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"
    again = states.userlist(path, users, auth_type="md5", owner=salt["owner"], group=salt["group"])
    assert again["changes"] == {}
    removed = states.userlist(
        path, {"alice": "Alice-Pw-1"}, auth_type="md5", owner=salt["owner"], group=salt["group"]
    )
    assert removed["changes"]["removed"] == ["bob", "carol"]


@pytest.mark.parametrize("test", [False, True])
def test_userlist_reads_auth_type_from_config_and_rejects_bad_input(salt, test):
    states.__opts__["test"] = test
    ini = salt["tmp"] / "pgbouncer.ini"
    ini.write_text("[pgbouncer]\nauth_type = plain\n")
    path = str(salt["tmp"] / "userlist.txt")
    ret = states.userlist(
        path,
        {"a": {"secret": pgconf.md5_secret("a", "x")}},
        config=str(ini),
        owner=salt["owner"],
        group=salt["group"],
    )
    assert ret["result"] is False and "auth_type plain needs the plain password" in ret["comment"]
    ret = states.userlist(path, {"a": ""}, owner=salt["owner"], group=salt["group"])
    assert ret["result"] is False and "no password" in ret["comment"]
    ret = states.userlist(path, {"a": "x"}, mode="0664", owner=salt["owner"], group=salt["group"])
    assert ret["result"] is False
    assert not os.path.exists(path)
