"""
pgbouncer.plan_config/apply_config and plan_userlist/apply_userlist with
the running pgbouncer faked (``status``, ``running_config``,
``signal_reload``, ``restart`` patched on the module): the decision between
reload, restart and "waiting for a restart", input validation, operator
policy, empty pillars, and secrets. The real server is in
tests/functional/test_pgbouncer.py.
"""

import grp
import os
import pwd
from pathlib import Path

import opsalt_pgbouncer as pgconf
import pytest
from salt.exceptions import CommandExecutionError

from tests.support.components import load_component

OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def _row(value, default=None, changeable=True):
    return {"value": value, "default": default, "changeable": changeable}


RUNNING = {
    "listen_port": _row("6432", "6432", False),
    "default_pool_size": _row("20", "20"),
    "auth_type": _row("md5", "md5"),
    "conffile": _row("/x", None),
    "pkt_buf": _row("4096", "4096", False),
    "listen_backlog": _row("128", "128", False),
    "unix_socket_dir": _row("/tmp", "/tmp", False),
}


@pytest.fixture
def host(tmp_path, monkeypatch):
    mod = load_component("_modules", "pgbouncer")
    config = {"opsalt:policy": {"allowed_paths": [str(tmp_path)]}}
    pillar = {}
    calls = []
    server = {"config": dict(RUNNING), "up": True}

    def config_get(key, default=None, **kwargs):
        return config.get(key, default)

    def pillar_get(key, default=None, unmask=False):
        assert unmask is True  # Salt 3008 masks pillar.get otherwise
        value = pillar
        for part in key.split(":"):
            if not isinstance(value, dict) or part not in value:
                return default
            value = value[part]
        return value

    def signal_reload(**kwargs):
        calls.append("reload")
        server["config"] = dict(server["config"], **server.get("after_reload", {}))
        return "console RELOAD"

    monkeypatch.setattr(mod, "__salt__", {"config.get": config_get, "pillar.get": pillar_get}, raising=False)
    monkeypatch.setattr(
        mod, "status", lambda **kw: {"running": server["up"], "pid": 1, "console": server["up"]}
    )
    monkeypatch.setattr(mod, "running_config", lambda **kw: server["config"])
    monkeypatch.setattr(mod, "signal_reload", signal_reload)
    monkeypatch.setattr(mod, "restart", lambda **kw: calls.append("restart"))
    monkeypatch.setattr(mod, "version", lambda: "1.18.0")
    return {
        "mod": mod,
        "config": config,
        "pillar": pillar,
        "calls": calls,
        "server": server,
        "ini": str(tmp_path / "pgbouncer.ini"),
        "userlist": str(tmp_path / "userlist.txt"),
        "tmp": tmp_path,
    }


DATABASES = {"appdb": {"host": "127.0.0.1", "port": 5432, "dbname": "appdb"}}


def _args(host, **settings):
    base = {
        "listen_port": 6432,
        "auth_type": "md5",
        "auth_file": host["userlist"],
        "default_pool_size": 20,
        "unix_socket_dir": "/tmp",  # restart: online needs it
    }
    base.update(settings)
    return dict(
        name=host["ini"],
        databases=DATABASES,
        settings=base,
        user=OWNER,
        group=GROUP,
        pidfile=str(host["tmp"] / "pgbouncer.pid"),
        service_user=OWNER,
    )


def _userlist(host, users, **kwargs):
    return dict(dict(name=host["userlist"], users=users, user=OWNER, group=GROUP), **kwargs)


@pytest.fixture
def auth_file(host):
    with open(host["userlist"], "w", encoding="utf-8") as handle:
        handle.write(f'"app" "{pgconf.md5_secret("app", "App-Pw-1")}"\n')
    return host["userlist"]


# -- reload, restart, verify ----------------------------------------------------


def test_first_write_reloads_then_nothing(host, auth_file):
    mod = host["mod"]
    host["server"]["after_reload"] = {"default_pool_size": _row("7", "20")}
    plan = mod.plan_config(**_args(host, default_pool_size=7))
    assert plan["changes"]["keys"] == {"default_pool_size": {"old": "20", "new": "7"}}
    assert "would reload" in plan["comment"]
    assert not os.path.exists(host["ini"]) and host["calls"] == []
    done = mod.apply_config(**_args(host, default_pool_size=7))
    assert done["result"] is True, done
    assert done["changes"]["keys"] == {"default_pool_size": {"old": "20", "new": "7"}}
    assert done["changes"]["reloaded"] == "console RELOAD"
    assert host["calls"] == ["reload"]
    assert mod.plan_config(**_args(host, default_pool_size=7))["changes"] == {}
    again = mod.apply_config(**_args(host, default_pool_size=7))
    assert again["changes"] == {} and host["calls"] == ["reload"]


def test_restart_only_key_pending_or_restarted(host, auth_file):
    mod = host["mod"]
    plan = mod.plan_config(**_args(host, listen_port=7000))
    assert "a restart is still needed for listen_port" in plan["comment"]
    done = mod.apply_config(**_args(host, listen_port=7000))
    assert done["result"] is True and done["changes"]["pending_restart"] == ["listen_port"]
    again = mod.plan_config(**_args(host, listen_port=7000))
    assert again["changes"] == {} and again["pending"] == ["listen_port"]
    assert "waiting for a pgbouncer restart to apply: listen_port" in again["comment"]
    host["server"]["after_reload"] = {"listen_port": _row("7000", "6432", False)}
    plan = mod.plan_config(restart=True, **_args(host, listen_port=7000))
    assert "restart pgbouncer for listen_port" in plan["comment"]
    done = mod.apply_config(restart=True, **_args(host, listen_port=7000))
    assert done["result"] is True and done["changes"]["restarted"] is True
    assert "restart" in host["calls"]


def test_online_restart_applies_all_but_socket_keys(host, auth_file, monkeypatch):
    mod = host["mod"]
    with pytest.raises(CommandExecutionError, match="restart: 'sometimes' must be true, false or online"):
        mod.plan_config(restart="sometimes", **_args(host))
    plan = mod.plan_config(restart="online", **_args(host, pkt_buf=8192, listen_backlog=64))
    assert plan["comment"].endswith(
        "would restart pgbouncer online (pgbouncer -R) for pkt_buf; "
        "listen_backlog wait for a full restart (restart: true)"
    )
    assert plan["pending"] == ["listen_backlog"]

    def online_restart(pidfile, config=None, timeout=30, **admin):
        host["calls"].append("online")
        # -R: SHOW CONFIG shows the file's values, sockets are inherited
        host["server"]["config"] = dict(
            host["server"]["config"],
            pkt_buf=_row("8192", "4096", False),
            listen_backlog=_row("64", "128", False),
        )
        return 4242

    monkeypatch.setattr(mod, "online_restart", online_restart)
    done = mod.apply_config(restart="online", **_args(host, pkt_buf=8192, listen_backlog=64))
    assert host["calls"] == ["reload", "online"]
    assert done["result"] is True and done["changes"]["restarted"] == "online"
    assert done["changes"]["new_pid"] == 4242
    assert done["changes"]["keys"] == {"pkt_buf": {"old": "4096", "new": "8192"}}
    assert done["changes"]["pending_restart"] == ["listen_backlog"]
    assert "(a full restart: restart: true)" in done["comment"]
    with pytest.raises(CommandExecutionError, match="restart: online needs pidfile"):
        mod.apply_config(restart="online", **dict(_args(host, pkt_buf=16384), pidfile=None))
    # refused before anything changes, in a dry run as for real
    before = open(host["ini"], encoding="utf-8").read()
    for call in (mod.plan_config, mod.apply_config):
        with pytest.raises(CommandExecutionError, match="restart: online needs settings:unix_socket_dir"):
            call(restart="online", **_args(host, pkt_buf=16384, unix_socket_dir=""))
    assert host["calls"] == ["reload", "online"]
    assert open(host["ini"], encoding="utf-8").read() == before


# -- a binary replaced on disk (issue 16) ---------------------------------------

BINARY = "/usr/sbin/pgbouncer"
UPGRADE = {"path": BINARY, "old": "1.18.0", "new": "1.21.0"}


@pytest.fixture
def upgraded(host, auth_file, monkeypatch):
    """
    The file already as the state writes it; then the running pgbouncer's
    binary replaced on disk until a restart (``host["binary"]["replaced"]``).
    """
    mod = host["mod"]
    assert mod.apply_config(**_args(host))["result"] is True
    del host["calls"][:]
    state = {"replaced": True, "asked": []}

    def running_binary(pidfile, **admin):
        state["asked"].append(pidfile)
        versions = ("1.18.0", "1.21.0") if state["replaced"] else (None, None)
        return {
            "pid": 77,
            "path": BINARY,
            "replaced": state["replaced"],
            "running_version": versions[0],
            "installed_version": versions[1],
        }

    def online_restart(pidfile, config=None, timeout=30, **admin):
        host["calls"].append("online")
        state["replaced"] = False
        return 4242

    def restart(**kwargs):
        host["calls"].append("restart")
        state["replaced"] = False

    monkeypatch.setattr(mod, "running_binary", running_binary)
    monkeypatch.setattr(mod, "online_restart", online_restart)
    monkeypatch.setattr(mod, "restart", restart)
    host["binary"] = state
    return host


def test_replaced_binary_without_restart_is_named_and_left_running(upgraded):
    mod, host = upgraded["mod"], upgraded
    for call in (mod.plan_config, mod.apply_config):
        done = call(**_args(host))
        assert done["changes"] == {}
        note = (
            f"pgbouncer (pid 77) still runs the binary that was replaced on disk at {BINARY} "
            "(running 1.18.0, installed 1.21.0); restart: online or restart: true starts the new one"
        )
        assert done["comment"] == f"Already as wanted: {host['ini']}; {note}"
        assert done["warnings"] == [note]
    pidfile = str(host["tmp"] / "pgbouncer.pid")
    assert host["calls"] == [] and host["binary"]["asked"] == [pidfile, pidfile]


@pytest.mark.parametrize("restart, call", [("online", "online"), (True, "restart")])
def test_replaced_binary_is_restarted_with_restart_online_or_true(upgraded, restart, call):
    mod, host = upgraded["mod"], upgraded
    how = "online (pgbouncer -R) " if restart == "online" else ""
    plan = mod.plan_config(restart=restart, **_args(host))
    assert plan["changes"] == {"binary": UPGRADE}
    assert (
        plan["comment"]
        == f"{host['ini']} unchanged; would restart pgbouncer {how}for its new binary {BINARY}"
    )
    assert host["calls"] == []
    done = mod.apply_config(restart=restart, **_args(host))
    assert done["result"] is True, done
    assert host["calls"] == ["reload", call]
    assert done["changes"]["binary"] == UPGRADE
    assert done["changes"]["restarted"] == (restart if restart == "online" else True)
    assert f"{host['ini']} unchanged; restarted {how}for its new binary {BINARY}" in done["comment"]
    assert "diff" not in done["changes"] and "backup" not in done["changes"]
    again = mod.apply_config(restart=restart, **_args(host))
    assert again["changes"] == {} and host["calls"] == ["reload", call]


def test_replaced_binary_with_config_change_restarts_once(upgraded):
    mod, host = upgraded["mod"], upgraded
    plan = mod.plan_config(restart="online", **_args(host, pkt_buf=8192))
    assert plan["comment"].endswith(
        f"would restart pgbouncer online (pgbouncer -R) for pkt_buf, its new binary {BINARY}"
    )
    assert "would be updated" in plan["comment"] and plan["changes"]["binary"] == UPGRADE


def test_replaced_binary_of_a_service_is_found_through_the_files_pidfile(upgraded, tmp_path):
    # a service-run pgbouncer writes the pidfile its file names
    mod, host = upgraded["mod"], upgraded
    pidfile = str(tmp_path / "pgbouncer.pid")
    args = dict(_args(host, pidfile=pidfile), pidfile=None, service="pgbouncer")
    assert mod.apply_config(**args)["result"] is True  # the file with its pidfile key
    del host["calls"][:]
    done = mod.apply_config(restart=True, **args)
    assert done["result"] is True and done["changes"]["binary"] == UPGRADE
    assert host["calls"] == ["reload", "restart"] and host["binary"]["asked"][-1] == pidfile


def test_replaced_binary_failed_takeover_claims_no_binary_change(upgraded, monkeypatch):
    mod, host = upgraded["mod"], upgraded

    def online_restart(pidfile, **kwargs):
        raise CommandExecutionError(
            "pgbouncer -R did not take over: ...; the old process (pid 77) keeps serving"
        )

    monkeypatch.setattr(mod, "online_restart", online_restart)
    done = mod.apply_config(restart="online", **_args(host))
    assert done["result"] is False and "binary" not in done["changes"], done
    assert "did not take over" in done["comment"]


def test_reload_that_does_not_apply_fails(host, auth_file):
    done = host["mod"].apply_config(**_args(host, default_pool_size=9))
    assert done["result"] is False
    assert "still runs with the old default_pool_size" in done["comment"]
    assert "backup" in done["changes"] or "diff" in done["changes"]


def test_not_running_only_writes(host, auth_file):
    host["server"]["up"] = False
    plan = host["mod"].plan_config(**_args(host, default_pool_size=5))
    assert "not running" in plan["comment"]
    done = host["mod"].apply_config(**_args(host, default_pool_size=5))
    assert done["result"] is True and "nothing reloaded" in done["comment"]
    assert host["calls"] == [] and os.path.exists(host["ini"])


# -- input validation (issue 12 finding 2) ---------------------------------------


@pytest.mark.parametrize(
    "change, field",
    [
        ({"settings": {"pidfile": "/run/p.pid\nauth_type = trust"}}, "settings:pidfile"),
        ({"settings": {"pidfile": "/run/p.pid\rauth_type = trust"}}, "settings:pidfile"),
        ({"settings": {"logfile": "/x\x00"}}, "settings:logfile"),
        ({"settings": {"logfile": "/x\n"}}, "settings:logfile"),
        ({"settings": {"logfile": "/x\u2028auth_type = trust"}}, "settings:logfile"),
        ({"settings": {"max_client_conn\nauth_type": 5}}, "settings key"),
        ({"settings": {"[databases]": 5}}, "settings key"),
        ({"settings": {"a=b": 5}}, "settings key"),
        ({"settings": {";auth_type": "trust"}}, "settings key"),
        ({"settings": {"#x": 1}}, "settings key"),
        ({"databases": {"appdb": "host=127.0.0.1 dbname=appdb\nevil = host=10.6.6.6"}}, "databases:appdb"),
        ({"databases": {"appdb": {"host": "127.0.0.1\nevil = host=x"}}}, "databases:appdb:host"),
        ({"databases": {"appdb": {"password": "pw\nevil = host=x"}}}, "databases:appdb:password"),
        ({"databases": {"app db": "host=x"}}, "databases key"),
        ({"databases": {"appdb\n": "host=x"}}, "databases key"),
        ({"databases": {"x\nauth_type = trust": "host=x"}}, "databases key"),
        ({"users": {"[pgbouncer]": {"pool_mode": "session"}}}, "users key"),
    ],
)
def test_bad_keys_and_values_are_refused_and_nothing_changes(host, auth_file, change, field):
    mod = host["mod"]
    with open(host["ini"], "w", encoding="utf-8") as handle:
        handle.write("[pgbouncer]\nlisten_port = 6432\n")
    before = open(host["ini"], "rb").read()
    args = _args(host)
    for key, value in change.items():
        if key == "settings":
            args["settings"].update(value)
        else:
            args[key] = value
    for func in (mod.plan_config, mod.apply_config):
        with pytest.raises(CommandExecutionError) as err:
            func(**args)
        assert field in str(err.value) and "not changed" in str(err.value)
        assert "\n" not in str(err.value)
    assert open(host["ini"], "rb").read() == before
    assert host["calls"] == []
    assert not [n for n in os.listdir(host["tmp"]) if ".opsalt-bak" in n]


def test_connstring_password_never_in_error(host, auth_file):
    args = _args(host)
    args["databases"] = {"appdb": "host=x password=Sekr1t-Pw\nevil = host=y"}
    with pytest.raises(CommandExecutionError) as err:
        host["mod"].plan_config(**args)
    assert "Sekr1t-Pw" not in str(err.value)


def test_fallback_database_star_is_accepted(host, auth_file):
    args = _args(host)
    args["databases"] = {"*": {"host": "127.0.0.1", "port": 5432}}
    assert "* = host=127.0.0.1 port=5432" in host["mod"].plan_config(**args)["changes"]["diff"]


def test_validate_reports_duplicate_keys_and_sections(host, auth_file, tmp_path):
    bad = tmp_path / "dup.ini"
    bad.write_text(
        f"[pgbouncer]\nauth_type = md5\nauth_file = {auth_file}\nAUTH_TYPE = trust\n"
        "[databases]\na = host=x\n[databases]\nb = host=y\n"
    )
    verdict = host["mod"].validate(str(bad))
    assert verdict["valid"] is False
    assert "line 4: key 'auth_type' appears twice in [pgbouncer]" in verdict["errors"]
    assert "line 7: section [databases] appears twice" in verdict["errors"]


def test_mode_user_group_are_validated(host, auth_file):
    mod = host["mod"]
    for bad, field in (({"mode": "rw-r"}, "mode"), ({"user": "no-such-user-x"}, "user")):
        args = dict(_args(host), **bad)
        with pytest.raises(CommandExecutionError, match=field):
            mod.plan_config(**args)
    with pytest.raises(CommandExecutionError, match="group"):
        mod.plan_config(**dict(_args(host), group="no-such-group-x"))
    with pytest.raises(CommandExecutionError, match="restart_timeout"):
        mod.plan_config(**dict(_args(host), restart_timeout="30\nx"))


# -- operator policy (issue 12 c) ---------------------------------------------------


@pytest.mark.parametrize(
    "override, message, policy",
    [
        ({"name": "/srv/pgb/pgbouncer.ini"}, "config_path: '/srv/pgb/pgbouncer.ini' is outside", None),
        ({"settings": {"auth_type": "trust"}}, "settings:auth_type: 'trust' is not allowed", "auth_types"),
        ({"settings": {"auth_type": "any"}}, "settings:auth_type: 'any' is not allowed", "auth_types"),
        (
            {"settings": {"admin_users": "app, ops"}},
            "settings:admin_users: 'app' is not allowed",
            "admin_users",
        ),
        ({"settings": {"stats_users": "pgbouncer,app"}}, "settings:stats_users: 'app'", "stats_users"),
    ],
)
def test_policy_refuses_then_operator_allows(host, auth_file, override, message, policy):
    mod = host["mod"]
    args = _args(host)
    args["name"] = override.get("name", args["name"])
    args["settings"].update(override.get("settings", {}))
    with pytest.raises(CommandExecutionError) as err:
        mod.apply_config(**args)
    assert message in str(err.value)
    assert "opsalt:policy" in str(err.value) and "minion configuration" in str(err.value)
    assert not os.path.exists(args["name"]) and host["calls"] == []
    section = host["config"]["opsalt:policy"].setdefault("pgbouncer", {})
    if policy is None:
        section["allowed_paths"] = ["/srv/pgb"]
        assert mod.path_refused("/srv/pgb/pgbouncer.ini", "config_path") is None
        return  # /srv/pgb does not exist here: accepted by policy is all there is to see
    section[policy] = ["pgbouncer", "app", "ops", "trust", "any", "md5"]
    host["server"]["up"] = False
    done = mod.apply_config(**args)
    assert done["result"] is True, done


def test_userlist_path_policy_and_global_allowed_paths(host):
    mod = host["mod"]
    host["config"]["opsalt:policy"] = {}
    with pytest.raises(CommandExecutionError, match=r"userlist_path: .* is outside the allowed paths"):
        mod.plan_userlist(**_userlist(host, {"app": "Pw"}))
    assert "outside" in mod.path_refused(host["userlist"], "userlist_path")
    host["config"]["opsalt:policy"] = {"allowed_paths": [str(host["tmp"])]}
    assert mod.plan_userlist(**_userlist(host, {"app": "Pw"}))["changes"] == {"added": ["app"]}
    assert mod.path_refused("/etc/pgbouncer/userlist.txt") is None
    assert "not normalised" in mod.path_refused("/etc/pgbouncer/../shadow")


@pytest.mark.parametrize(
    "override, key, value",
    [
        # whoever owns pgbouncer.ini/userlist.txt can set auth_type = trust
        ({"user": "nobody"}, "owners", "nobody"),
        ({"group": "nogroup"}, "groups", "nogroup"),
        # root reloads and restarts the pillar's service
        ({"service": "ssh"}, "services", "ssh"),
    ],
)
def test_names_outside_policy_are_refused_then_operator_allows(host, auth_file, override, key, value):
    mod = host["mod"]
    what = next(iter(override))
    args = dict(_args(host), **override)
    userlist = _userlist(host, {"app": "App-Pw-2"}, auth_type="md5", **override)
    before = open(auth_file, "rb").read()
    for call, kwargs in (
        (mod.plan_config, args),
        (mod.apply_config, args),
        (mod.plan_userlist, userlist),
        (mod.apply_userlist, userlist),
    ):
        with pytest.raises(CommandExecutionError) as err:
            call(**kwargs)
        assert f"{what}: {value!r} is not allowed by policy" in str(err.value)
        assert f"opsalt:policy:pgbouncer:{key} in the minion configuration" in str(err.value)
    assert not os.path.exists(host["ini"]) and open(auth_file, "rb").read() == before
    assert host["calls"] == []
    # the same value, allowed by the operator in the minion config
    host["config"]["opsalt:policy"]["pgbouncer"] = {key: [value]}
    host["server"]["up"] = False
    assert mod.apply_config(**args)["result"] is True
    assert mod.apply_userlist(**userlist)["changes"]["updated"] == ["app"]
    if what in ("user", "group"):
        index = 0 if what == "user" else 1
        assert mod.opsalt_files.ownership(host["ini"])[index] == value
        assert mod.opsalt_files.ownership(auth_file)[index] == value


def test_name_refused_answers_the_package_and_service_sls(host):
    mod = host["mod"]
    assert mod.name_refused("pgbouncer", "pkg") is None
    assert mod.name_refused("pgbouncer", "service") is None
    assert mod.name_refused("postgres", "user") is None and mod.name_refused("root", "group") is None
    refused = mod.name_refused("openssh-server", "pkg")
    assert "pkg: 'openssh-server' is not allowed by policy (allowed: pgbouncer)" in refused
    assert "opsalt:policy:pgbouncer:packages" in refused
    assert "opsalt:policy:pgbouncer:services" in mod.name_refused("ssh", "service")
    assert "not a valid name" in mod.name_refused("x\n\ny:\n  cmd.run: []", "service")
    host["config"]["opsalt:policy"]["pgbouncer"] = {"packages": ["openssh-server"], "services": ["ssh"]}
    assert mod.name_refused("openssh-server", "pkg") is None
    assert mod.name_refused("ssh", "service") is None
    assert "packages" in mod.name_refused("pgbouncer", "pkg")  # the operator's list replaces the default
    with pytest.raises(CommandExecutionError, match="must be one of"):
        mod.name_refused("x", "settings")


@pytest.mark.parametrize("key", ["auth_file", "auth_hba_file"])
def test_auth_files_outside_policy_are_refused_then_operator_allows(host, auth_file, tmp_path_factory, key):
    # pgbouncer authenticates from these and validate() reads them as root
    mod = host["mod"]
    other = tmp_path_factory.mktemp("pgb-auth")
    path = other / "auth.txt"
    path.write_text(open(auth_file, encoding="utf-8").read())
    settings = {"auth_file": str(path)} if key == "auth_file" else {"auth_type": "hba", key: str(path)}
    args = _args(host, **settings)
    with pytest.raises(CommandExecutionError) as err:
        mod.apply_config(**args)
    assert f"settings:{key}: '{path}' is outside the allowed paths" in str(err.value)
    assert "opsalt:policy:pgbouncer:allowed_paths" in str(err.value)
    assert not os.path.exists(host["ini"]) and host["calls"] == []
    host["config"]["opsalt:policy"]["pgbouncer"] = {"allowed_paths": [str(other)]}
    host["server"]["up"] = False
    assert mod.apply_config(**args)["result"] is True


PATH_SETTINGS = {
    "pidfile": "/run/postgresql, /var/run/postgresql, /run/pgbouncer, /var/run/pgbouncer",
    "unix_socket_dir": "/run/postgresql, /var/run/postgresql, /run/pgbouncer, /var/run/pgbouncer, /tmp",
    "logfile": "/var/log/postgresql, /var/log/pgbouncer",
    "resolv_conf": "/etc/resolv.conf, /etc/pgbouncer",
    **{
        f"{side}_tls_{kind}_file": "/etc/pgbouncer, /etc/ssl, /etc/pki/tls"
        for side in ("client", "server")
        for kind in ("key", "cert", "ca")
    },
}


@pytest.mark.parametrize("key", sorted(PATH_SETTINGS))
def test_path_settings_outside_policy_are_refused_then_operator_allows(
    host, auth_file, tmp_path_factory, key
):
    # pgbouncer writes pidfile, logfile and its socket there, and reads its
    # TLS keys, as its service user (root before it drops to settings:user)
    mod = host["mod"]
    other = tmp_path_factory.mktemp("pgb-paths")
    # (pytest's tmp_path is under /tmp, a default for unix_socket_dir; validate
    # does not look for the socket directory)
    path = Path("/srv/opsalt-pgb-sockets") if key == "unix_socket_dir" else other / f"{key}.x"
    if key.endswith("_file") or key == "resolv_conf":  # pgbouncer reads these: they must exist
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    args = _args(host, **{key: str(path)})
    for call in (mod.plan_config, mod.apply_config):
        with pytest.raises(CommandExecutionError) as err:
            call(**args)
        # the defaults of the key, then the operator's allowed_paths (the fixture's tmp_path)
        roots = f"{PATH_SETTINGS[key]}, {host['tmp']}"
        assert f"settings:{key}: '{path}' is outside the allowed paths ({roots})" in str(err.value)
        assert "opsalt:policy:pgbouncer:allowed_paths (or opsalt:policy:allowed_paths)" in str(err.value)
    assert not os.path.exists(host["ini"]) and host["calls"] == []
    # the same value, allowed by the operator in the minion config
    host["config"]["opsalt:policy"]["allowed_paths"].append(str(other if key != "unix_socket_dir" else path))
    host["server"]["up"] = False
    assert mod.apply_config(**args)["result"] is True


def test_path_settings_defaults_and_values_that_name_no_file(host):
    check = host["mod"]._check_settings_policy
    for settings in (
        {"pidfile": "/run/postgresql/pgbouncer.pid", "logfile": "/var/log/postgresql/pgbouncer.log"},
        {"pidfile": "/var/run/pgbouncer/pgbouncer.pid", "logfile": "/var/log/pgbouncer/pgbouncer.log"},
        {"unix_socket_dir": "/tmp"},  # pgbouncer's own default, RedHat's too
        {"unix_socket_dir": ""},  # no unix socket
        {"unix_socket_dir": "@pgbouncer"},  # an abstract socket: no file
        {
            "client_tls_key_file": "/etc/ssl/private/pgbouncer.key",
            "server_tls_ca_file": "/etc/pki/tls/ca.pem",
        },
    ):
        check(settings, {})
    # a logfile pgbouncer (as postgres) would append to: PostgreSQL's own configuration
    with pytest.raises(ValueError, match="settings:logfile: .* outside the allowed"):
        check({"logfile": "/var/lib/postgresql/15/main/postgresql.auto.conf"}, {})
    with pytest.raises(ValueError, match="settings:logfile: 'pgbouncer.log' is not an absolute path"):
        check({"logfile": "pgbouncer.log"}, {})
    with pytest.raises(ValueError, match="settings:pidfile: .* is not normalised"):
        check({"pidfile": "/run/postgresql/../../etc/cron.d/x"}, {})


def test_service_user_needs_the_owners_policy_and_is_never_root(host, auth_file, monkeypatch):
    # pgbouncer started as root becomes settings:user: who it runs as owns
    # its sockets and files and reads its TLS keys
    mod = host["mod"]
    with pytest.raises(CommandExecutionError) as err:
        mod.plan_config(**_args(host, user="nobody"))
    assert "settings:user: 'nobody' is not allowed by policy (allowed: postgres, pgbouncer, root)" in str(
        err.value
    )
    assert "opsalt:policy:pgbouncer:owners in the minion configuration" in str(err.value)
    host["config"]["opsalt:policy"]["pgbouncer"] = {"owners": [OWNER, "nobody", "root", "toor"]}
    real = mod.pwd.getpwnam
    monkeypatch.setattr(
        mod.pwd, "getpwnam", lambda name: real("root") if name == "toor" else real(name)
    )  # another name of uid 0
    for name in ("root", "toor"):
        for call in (mod.plan_config, mod.apply_config):
            with pytest.raises(CommandExecutionError) as err:
                call(**_args(host, user=name))
            assert f"settings:user: {name!r} is never allowed: pgbouncer must not run as root" in str(
                err.value
            )
    with pytest.raises(CommandExecutionError, match="settings:user: .* not a valid name"):
        mod.plan_config(**_args(host, user="no body"))
    assert not os.path.exists(host["ini"]) and host["calls"] == []
    host["server"]["up"] = False
    assert mod.apply_config(**_args(host, user="nobody"))["result"] is True


def test_the_states_pidfile_is_under_the_pidfile_policy(host, auth_file):
    # root reads the pidfile pillar names (and signals its pid when that
    # process is pgbouncer): the same prefixes as settings:pidfile
    mod = host["mod"]
    other = "/srv/opsalt-pgb-run"
    pidfile = f"{other}/pgbouncer.pid"
    calls = [
        lambda: mod.plan_config(**dict(_args(host), pidfile=pidfile)),
        lambda: mod.apply_config(**dict(_args(host), pidfile=pidfile)),
        lambda: mod.plan_userlist(**_userlist(host, {"app": "Pw"}, pidfile=pidfile)),
        lambda: mod.apply_userlist(**_userlist(host, {"app": "Pw"}, pidfile=pidfile)),
    ]
    for call in calls:
        with pytest.raises(CommandExecutionError) as err:
            call()
        assert f"pidfile: '{pidfile}' is outside the allowed paths ({PATH_SETTINGS['pidfile']}, " in str(
            err.value
        )
    assert not os.path.exists(host["ini"]) and host["calls"] == []
    host["config"]["opsalt:policy"]["allowed_paths"].append(other)
    assert "would be" in mod.plan_config(**dict(_args(host), pidfile=pidfile))["comment"]


def test_auth_query_is_sql_only_the_operator_lists(host, auth_file):
    # pgbouncer runs auth_query on the server as auth_user for every login
    mod = host["mod"]
    evil = "SELECT $1, (SELECT pg_read_file('/etc/passwd'))"
    settings = {"auth_user": "pgbouncer", "auth_query": evil}
    for call in (mod.plan_config, mod.apply_config):
        with pytest.raises(CommandExecutionError) as err:
            call(**_args(host, **settings))
        assert f"settings:auth_query: {evil!r} is not allowed by policy" in str(err.value)
        assert "opsalt:policy:pgbouncer:auth_queries in the minion configuration" in str(err.value)
    databases = {"appdb": f"host=127.0.0.1 dbname=appdb auth_query='{evil.replace(chr(39), chr(39) * 2)}'"}
    with pytest.raises(
        CommandExecutionError, match="databases:appdb:auth_query: .* is not allowed by policy"
    ):
        mod.plan_config(**dict(_args(host), databases=databases))
    with pytest.raises(CommandExecutionError, match="databases:appdb: cannot parse"):
        mod.plan_config(**dict(_args(host), databases={"appdb": "host=127.0.0.1 dbname='appdb"}))
    assert not os.path.exists(host["ini"]) and host["calls"] == []
    # pgbouncer's own default passes, and what the operator lists
    mod._check_auth_queries({"auth_query": mod.DEFAULT_AUTH_QUERIES[0]}, {}, {})
    host["config"]["opsalt:policy"]["pgbouncer"] = {"auth_queries": [evil]}
    mod._check_auth_queries(settings, databases, host["config"]["opsalt:policy"])


def test_unix_socket_group_needs_the_groups_policy(host, auth_file):
    # every member of the socket's group may connect to every pool
    mod = host["mod"]
    for call in (mod.plan_config, mod.apply_config):
        with pytest.raises(CommandExecutionError) as err:
            call(**_args(host, unix_socket_group="nogroup"))
        assert "settings:unix_socket_group: 'nogroup' is not allowed by policy (allowed: " in str(err.value)
        assert "opsalt:policy:pgbouncer:groups in the minion configuration" in str(err.value)
    with pytest.raises(CommandExecutionError, match="settings:unix_socket_group: no local group"):
        mod.plan_config(**_args(host, unix_socket_group="opsalt-no-such-group"))
    with pytest.raises(CommandExecutionError, match="settings:unix_socket_group: .* not a valid name"):
        mod.plan_config(**_args(host, unix_socket_group="no group"))
    assert not os.path.exists(host["ini"]) and host["calls"] == []
    host["config"]["opsalt:policy"]["pgbouncer"] = {"groups": [*mod.DEFAULT_GROUPS, "nogroup"]}
    host["server"]["up"] = False
    assert mod.apply_config(**_args(host, unix_socket_group="nogroup"))["result"] is True


def test_files_are_read_without_following_a_link(host, auth_file):
    # a link at config_path or auth_file is refused, not read or replaced
    mod = host["mod"]
    secret = host["tmp"] / "root-only"
    secret.write_text("[pgbouncer]\nlisten_port = 6432\n")
    os.symlink(secret, host["ini"])
    with pytest.raises(CommandExecutionError, match="a symbolic link; nothing read or written"):
        mod.plan_config(**_args(host))
    os.unlink(host["ini"])
    link = host["tmp"] / "userlist-link.txt"
    os.symlink(auth_file, link)
    with pytest.raises(CommandExecutionError, match=r"cannot read auth_file .*a symbolic link"):
        mod.plan_config(**_args(host, auth_file=str(link)))
    assert not os.path.exists(host["ini"])


# -- empty pillars (finding 6) -------------------------------------------------------


def test_empty_userlist_and_no_databases_need_allow_empty(host, auth_file):
    mod = host["mod"]
    with pytest.raises(CommandExecutionError, match="allow_empty: true"):
        mod.apply_userlist(**_userlist(host, {}))
    assert open(auth_file, encoding="utf-8").read().startswith('"app"')
    args = dict(_args(host), databases={})
    with pytest.raises(CommandExecutionError, match="databases: none.*allow_empty: true"):
        mod.apply_config(**args)
    assert not os.path.exists(host["ini"])
    assert mod.apply_userlist(allow_empty=True, **_userlist(host, {}))["changes"]["removed"] == ["app"]
    assert mod.apply_config(allow_empty=True, **args)["result"] is True


# -- pillar at run time (findings 5 and 7) ----------------------------------------------


def test_pillar_key_reads_secrets_and_validates_against_the_userlist_to_be_written(host):
    mod = host["mod"]
    host["server"]["up"] = False
    host["pillar"]["pgbouncer"] = {
        "databases": {"appdb": {"host": "127.0.0.1", "password": "Db-Pw-'x"}},
        "userlist": {"app": "App-Pw-1"},
    }
    args = _args(host)
    args["databases"] = None
    # a fresh host: no userlist.txt yet; this run's userlist state writes it
    plan = mod.plan_config(pillar_key="pgbouncer", userlist_path=host["userlist"], **args)
    assert "appdb" in plan["changes"]["databases"]["added"]
    assert "Db-Pw" not in repr(plan) and "password=***" in plan["changes"]["diff"]
    with pytest.raises(CommandExecutionError, match="does not exist"):
        mod.plan_config(**dict(args, databases=DATABASES))
    # md5 secrets under auth_type scram-sha-256 are predicted as a failure too
    host["pillar"]["pgbouncer"]["userlist"] = {"app": {"password": "App-Pw-1", "method": "md5"}}
    with pytest.raises(CommandExecutionError, match="md5 secret"):
        mod.plan_config(
            pillar_key="pgbouncer",
            userlist_path=host["userlist"],
            **dict(args, settings=dict(args["settings"], auth_type="scram-sha-256")),
        )
    ulist = mod.plan_userlist(**_userlist(host, None, pillar_key="pgbouncer", auth_type="md5"))
    assert ulist["changes"] == {"added": ["app"]} and "App-Pw-1" not in repr(ulist)


# -- the userlist --------------------------------------------------------------------------


def test_userlist_hashes_per_auth_type_and_hides_secrets(host):
    mod = host["mod"]
    host["server"]["up"] = False
    users = {
        "alice": "Alice-Pw-1",
        "bob": {"password": "Bob-Pw-2", "method": "scram-sha-256"},
        "carol": {"secret": pgconf.md5_secret("carol", "Carol-Pw-3")},
        "dave": {"password": 'Dave "quoted" Pw', "method": "plain"},
    }
    plan = mod.plan_userlist(**_userlist(host, users, auth_type="md5"))
    assert plan["changes"] == {"added": ["alice", "bob", "carol", "dave"]}
    assert not os.path.exists(host["userlist"])
    done = mod.apply_userlist(**_userlist(host, users, auth_type="md5"))
    assert not any(pw in repr((plan, done)) for pw in ("Alice-Pw-1", "Bob-Pw-2", "Carol-Pw-3", "Dave"))
    entries = mod.read_userlist(host["userlist"])
    assert entries["alice"] == pgconf.md5_secret("alice", "Alice-Pw-1")
    assert pgconf.secret_kind(entries["bob"]) == "scram-sha-256"
    assert entries["dave"] == 'Dave "quoted" Pw'
    assert oct(os.stat(host["userlist"]).st_mode & 0o777) == "0o640"
    before = open(host["userlist"], "rb").read()
    assert mod.apply_userlist(**_userlist(host, users, auth_type="md5"))["changes"] == {}
    assert open(host["userlist"], "rb").read() == before
    removed = mod.apply_userlist(**_userlist(host, {"alice": "Alice-Pw-1"}, auth_type="md5"))
    assert removed["changes"]["removed"] == ["bob", "carol", "dave"]


@pytest.mark.parametrize(
    "users, kwargs, message",
    [
        ({"a": ""}, {}, "no password"),
        ({"a": "x"}, {"mode": "0664"}, "too open"),
        ({"a": "x"}, {"mode": "6400x"}, "not an octal file mode"),
        ({"a": 'pw\n"root" "x"'}, {}, "userlist:a:password"),
        ({'a" "x': "pw"}, {}, "userlist key"),
        ({"a\nb": "pw"}, {}, "userlist key"),
        ({"a\n": "pw"}, {}, "userlist key"),
        ({"a": {"secret": "md5abc\n"}}, {}, "userlist:a:secret"),
        ({"a": "x"}, {"iterations": "4096\nx"}, "scram_iterations"),
        ({"a": "x"}, {"iterations": 100}, "scram_iterations"),
    ],
)
def test_userlist_refuses_bad_input(host, users, kwargs, message):
    with pytest.raises(CommandExecutionError) as err:
        host["mod"].apply_userlist(**_userlist(host, users, **kwargs))
    assert message in str(err.value)
    assert "pw" not in str(err.value).replace("password", "")
    assert not os.path.exists(host["userlist"])


def test_userlist_reads_auth_type_from_config(host):
    ini = host["tmp"] / "pgbouncer.ini"
    ini.write_text("[pgbouncer]\nauth_type = plain\n")
    users = {"a": {"secret": pgconf.md5_secret("a", "x")}}
    with pytest.raises(CommandExecutionError, match="auth_type plain needs the plain password"):
        host["mod"].plan_userlist(**_userlist(host, users, config=str(ini)))


def test_diff_masks_connstring_passwords_on_both_sides(host, auth_file):
    mod = host["mod"]
    host["server"]["up"] = False
    first = dict(_args(host), databases={"appdb": "host=x password='Old Pw''1' dbname=a"})
    mod.apply_config(**first)
    second = dict(_args(host), databases={"appdb": {"host": "x", "password": "New-Pw-2", "dbname": "a"}})
    plan = mod.plan_config(**second)
    diff = plan["changes"]["diff"]
    assert "-appdb = host=x password=*** dbname=a" in diff
    assert "+appdb = host=x password=*** dbname=a" in diff
    assert "Old Pw" not in repr(plan) and "New-Pw-2" not in repr(plan)
