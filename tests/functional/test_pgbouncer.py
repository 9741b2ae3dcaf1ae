"""
The pgbouncer module and states through Salt's own loaders, against a real
PostgreSQL (initdb in a temp dir) and Debian's pgbouncer, on 127.0.0.1.
"""

import os
import shutil
import socket

import opsalt_pgbouncer as pgconf
import psycopg
import pytest

from tests.support.loaders import make_loaders
from tests.support.postgres import (
    ADMIN_PASSWORD,
    OPERATOR_POLICY,
    ROLES,
    chown_service,
    md5_secret,
    pgbouncer_server,
    postgres_server,
)
from tests.support.procs import free_port, port_open, wait_for


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    return make_loaders(
        tmp_path_factory.mktemp("minion"), id="pgbouncer-functional", opsalt={"policy": OPERATOR_POLICY}
    )


@pytest.fixture
def module(loaders):
    return loaders.modules.pgbouncer


@pytest.fixture
def states(loaders):
    return loaders.states.pgbouncer


def _state_args(server, **settings):
    return dict(
        name=server.ini,
        databases=server.databases(),
        settings=server.settings(**settings),
        pidfile=server.pidfile,
        admin=server.admin,
    )


def _query_ok(server, **kwargs):
    with server.connect(**kwargs) as conn:
        return conn.execute("SELECT 41 + 1").fetchone()[0] == 42


# -- the console ------------------------------------------------------------


def test_show_returns_rows_by_column_name(module, pgbouncer_server):
    assert _query_ok(pgbouncer_server)
    pools = module.show("pools", **pgbouncer_server.admin)
    assert {"database", "user", "cl_active", "cl_waiting", "sv_idle"} <= set(pools[0])
    assert ("appdb", "app_md5") in {(p["database"], p["user"]) for p in pools}
    config = module.running_config(**pgbouncer_server.admin)
    assert config["listen_port"]["value"] == str(pgbouncer_server.port)
    assert config["listen_port"]["changeable"] is False
    assert config["default_pool_size"]["changeable"] is True
    assert module.show("version", **pgbouncer_server.admin)[0]["version"].startswith("PgBouncer")


def test_bad_show_topic_and_bad_password_raise_clear_errors(module, pgbouncer_server):
    with pytest.raises(Exception, match="cannot SHOW 'bogus'"):
        module.show("bogus", **pgbouncer_server.admin)
    admin = dict(pgbouncer_server.admin, password="wrong-Pw-xyz")
    with pytest.raises(Exception) as err:
        module.show("pools", **admin)
    assert "pgbouncer console" in str(err.value)
    assert "wrong-Pw-xyz" not in str(err.value)


def test_admin_commands_and_health(module, pgbouncer_server):
    admin = pgbouncer_server.admin
    assert module.reload(**admin) == "RELOAD"
    assert module.pause("appdb", **admin) == "PAUSE"
    paused = {d["name"]: d["paused"] for d in module.show("databases", **admin)}
    assert paused["appdb"] == 1
    assert module.resume("appdb", **admin) == "RESUME"
    assert module.disable("appdb", **admin) == "DISABLE"
    with pytest.raises(psycopg.OperationalError):
        _query_ok(pgbouncer_server)
    assert module.enable("appdb", **admin) == "ENABLE"
    assert _query_ok(pgbouncer_server)
    assert module.reconnect("appdb", **admin) == "RECONNECT"
    assert module.wait_close("appdb", **admin) == "WAIT_CLOSE"
    with pytest.raises(Exception, match="not a plain database name"):
        module.kill("appdb; SHUTDOWN", **admin)
    held = pgbouncer_server.connect()
    try:
        assert module.kill("appdb", **admin) == "KILL"
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    finally:
        held.close()
    assert module.resume("appdb", **admin) == "RESUME"
    assert _query_ok(pgbouncer_server)
    health = module.health(**admin)
    assert health["healthy"] is True, health
    assert any(p["pool"] == "appdb/app_md5" for p in health["pools"])


def test_health_reports_waiting_clients_on_a_paused_pool(module, pgbouncer_server):
    import threading

    admin = pgbouncer_server.admin
    assert _query_ok(pgbouncer_server)
    module.pause("appdb", **admin)
    results = []

    def blocked_client():
        results.append(_query_ok(pgbouncer_server))

    thread = threading.Thread(target=blocked_client)
    thread.start()
    try:
        health = wait_for(
            lambda: (lambda h: h if not h["healthy"] else None)(module.health(max_wait=0.2, **admin)),
            15,
            what="a waiting client reported",
        )
        assert any("waiting" in p or "waited" in p for p in health["problems"]), health
    finally:
        module.resume("appdb", **admin)
        thread.join(30)
    assert results == [True]


# -- secrets ------------------------------------------------------------------


def test_scram_verifier_is_accepted_by_postgresql(module, postgres_server):
    # Our verifier stored as the role's password: PostgreSQL itself then
    # authenticates the password against it.
    password = "Fresh-Pw-3x€"
    verifier = module.secret("app_scram", password, method="scram-sha-256", iterations=4096)
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    try:
        with postgres_server.connect() as conn:
            conn.execute(f"ALTER ROLE app_scram PASSWORD '{verifier}'")
        with psycopg.connect(**postgres_server.conninfo(user="app_scram", password=password)) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "app_scram"
        assert module.secret("app_scram", password, from_pg=True, pg=postgres_server.conninfo()) == verifier
    finally:
        with postgres_server.connect() as conn:
            literal = ROLES["app_scram"][0].replace("'", "''")
            conn.execute(f"ALTER ROLE app_scram PASSWORD '{literal}'")


def test_verify_secret_against_the_servers_verifiers(module, postgres_server):
    stored = postgres_server.stored_secret("app_scram")
    assert module.verify_secret("app_scram", ROLES["app_scram"][0], stored) is True
    assert module.verify_secret("app_scram", "not-the-password", stored) is False
    md5_stored = postgres_server.stored_secret("app_md5")
    assert module.secret("app_md5", ROLES["app_md5"][0], method="md5") == md5_stored
    with pytest.raises(Exception, match="does not match its verifier"):
        module.secret("app_scram", "wrong", from_pg=True, pg=postgres_server.conninfo())


# -- the userlist state -----------------------------------------------------


@pytest.mark.parametrize("test", [False, True])
def test_userlist_state_md5_and_scram_logins(states, module, pgbouncer_server, postgres_server, test):
    userlist = pgbouncer_server.userlist
    os.unlink(userlist)
    users = {
        "app_md5": {"password": ROLES["app_md5"][0], "method": "md5"},
        "app_scram": {"password": ROLES["app_scram"][0], "method": "scram-sha-256"},
        "pgb_admin": ADMIN_PASSWORD,
    }
    # auth_type md5: md5 for md5 secrets, SCRAM for users with a verifier.
    args = dict(
        name=userlist,
        users=users,
        auth_type="md5",
        verifier_from=postgres_server.conninfo(),
        pidfile=pgbouncer_server.pidfile,
        admin=pgbouncer_server.admin,
        reload=False,
    )
    ret = states.userlist(test=test, **args)
    text = repr(ret.full_return if hasattr(ret, "full_return") else ret)
    for password, _method in ROLES.values():
        assert password not in text
    assert ADMIN_PASSWORD not in text
    if test:
        assert ret.result is None
        assert not os.path.exists(userlist)
        return
    assert ret.result is True, ret
    assert ret.changes["added"] == ["app_md5", "app_scram", "pgb_admin"]
    entries = module.read_userlist(userlist)
    assert entries["app_md5"] == md5_secret("app_md5", ROLES["app_md5"][0])
    assert entries["app_scram"] == postgres_server.stored_secret("app_scram")
    st = os.stat(userlist)
    assert oct(st.st_mode & 0o777) == "0o640"
    assert st.st_uid == __import__("pwd").getpwnam("postgres").pw_uid
    again = states.userlist(**args)
    assert again.result is True and again.changes == {}, again
    # Clients log in with md5 (md5 secret) and SCRAM (SCRAM verifier) and
    # pgbouncer logs in to PostgreSQL with the same secrets.
    module.reload(**pgbouncer_server.admin)
    assert _query_ok(pgbouncer_server, user="app_md5", dbname="appdb")
    assert _query_ok(pgbouncer_server, user="app_scram", dbname="postgres")


def test_userlist_new_scram_verifier_kept_when_password_unchanged(states, module, tmp_path):
    path = str(tmp_path / "userlist.txt")
    args = dict(name=path, users={"app.v2": "Pw-1"}, auth_type="scram-sha-256", user="root", group="root")
    first = states.userlist(**args)
    assert first.result is True and first.changes["added"] == ["app.v2"]
    before = open(path, encoding="utf-8").read()
    assert before.startswith('"app.v2" "SCRAM-SHA-256$4096:')
    assert states.userlist(**args).changes == {}
    assert open(path, encoding="utf-8").read() == before
    changed = states.userlist(**dict(args, users={"app.v2": "Pw-2"}))
    assert changed.changes["updated"] == ["app.v2"]
    assert "Pw-2" not in repr(changed.changes) + changed.comment
    assert module.verify_secret("app.v2", "Pw-2", module.read_userlist(path)["app.v2"])


def test_userlist_refuses_open_mode_and_md5_with_scram_auth(states, tmp_path):
    path = str(tmp_path / "userlist.txt")
    ret = states.userlist(name=path, users={"a": "Pw"}, mode="0644", user="root", group="root")
    assert ret.result is False and "too open" in ret.comment
    ret = states.userlist(
        name=path,
        users={"a": {"secret": md5_secret("a", "Pw")}},
        auth_type="scram-sha-256",
        user="root",
        group="root",
    )
    assert ret.result is False and "md5 secret" in ret.comment
    assert not os.path.exists(path)


# -- the configured state ---------------------------------------------------


@pytest.mark.parametrize("test", [False, True])
def test_default_pool_size_reload_keeps_held_connection(states, module, pgbouncer_server, test):
    held = pgbouncer_server.connect()
    try:
        assert held.execute("SELECT pg_backend_pid()").fetchone()[0]
        before = open(pgbouncer_server.ini, "rb").read()
        ret = states.configured(test=test, **_state_args(pgbouncer_server, default_pool_size=7))
        config = module.running_config(**pgbouncer_server.admin)
        if test:
            assert ret.result is None, ret
            assert "would reload" in ret.comment
            assert open(pgbouncer_server.ini, "rb").read() == before
            assert config["default_pool_size"]["value"] == "20"
        else:
            assert ret.result is True, ret
            assert ret.changes["keys"]["default_pool_size"] == {"old": "20", "new": "7"}
            assert config["default_pool_size"]["value"] == "7"
            assert os.path.exists(ret.changes["backup"])
            again = states.configured(**_state_args(pgbouncer_server, default_pool_size=7))
            assert again.result is True and again.changes == {}, again
        # The client connection held across the state run still works.
        assert held.execute("SELECT 1").fetchone()[0] == 1
    finally:
        held.close()


def test_listen_port_change_reported_then_restarted(states, module, pgbouncer_server):
    old_port, new_port = pgbouncer_server.port, free_port()
    args = _state_args(pgbouncer_server, listen_port=new_port)
    ret = states.configured(**args)
    assert ret.result is True, ret
    assert ret.changes["pending_restart"] == ["listen_port"]
    assert "listen_port" in ret.comment and "restart" in ret.comment
    assert module.running_config(**pgbouncer_server.admin)["listen_port"]["value"] == str(old_port)
    again = states.configured(**args)
    assert again.result is True and again.changes == {}
    assert "waiting for a pgbouncer restart to apply: listen_port" in again.comment
    old_pid = pgbouncer_server.pid()
    restarted = states.configured(restart=True, **args)
    assert restarted.result is True, restarted
    assert restarted.changes["restarted"] is True
    assert restarted.changes["keys"]["listen_port"] == {"old": str(old_port), "new": str(new_port)}
    pgbouncer_server.port = new_port
    assert pgbouncer_server.pid() != old_pid
    assert _query_ok(pgbouncer_server)
    assert not port_open(old_port)
    final = states.configured(restart=True, **_state_args(pgbouncer_server))
    assert final.changes == {}, final


def _unknown_key(server):
    return {"settings": server.settings(pool_size_typo=5)}


def _bad_enum(server):
    return {"settings": server.settings(pool_mode="sessions")}


def _missing_auth_file(server):
    return {"settings": server.settings(auth_file=server.userlist + ".missing")}


def _bad_userlist_line(server):
    bad = server.userlist + ".bad"
    with open(bad, "w", encoding="utf-8") as handle:
        handle.write('"app_md5" "md5abc"\napp_scram secret-without-quotes\n')
    chown_service(bad)
    return {"settings": server.settings(auth_file=bad)}


def _unreadable_auth_file(server):
    private = server.userlist + ".root-only"
    shutil.copy(server.userlist, private)
    os.chmod(private, 0o600)  # owned by root: the postgres user cannot read it
    return {"settings": server.settings(auth_file=private)}


@pytest.mark.parametrize(
    "breakage, message",
    [
        (_unknown_key, "unknown key 'pool_size_typo'"),
        (_bad_enum, "'pool_mode' must be one of"),
        (_missing_auth_file, "does not exist"),
        (_bad_userlist_line, 'line 2 is not of the form "user" "secret"'),
        (_unreadable_auth_file, "not readable by the service user 'postgres'"),
    ],
)
@pytest.mark.parametrize("test", [False, True])
def test_bad_config_changes_nothing(states, module, pgbouncer_server, breakage, message, test):
    before = open(pgbouncer_server.ini, "rb").read()
    pid = pgbouncer_server.pid()
    args = _state_args(pgbouncer_server, default_pool_size=3)
    args.update(breakage(pgbouncer_server))
    args["settings"]["default_pool_size"] = 3
    ret = states.configured(test=test, **args)
    assert ret.result is False, ret
    assert message in ret.comment
    assert "not changed" in ret.comment
    assert open(pgbouncer_server.ini, "rb").read() == before
    assert not [n for n in os.listdir(os.path.dirname(pgbouncer_server.ini)) if n.endswith(".opsalt-bak")]
    assert pgbouncer_server.pid() == pid
    assert module.running_config(**pgbouncer_server.admin)["default_pool_size"]["value"] == "20"
    assert _query_ok(pgbouncer_server)


def test_database_password_never_in_changes(states, pgbouncer_server):
    args = _state_args(pgbouncer_server)
    # The real password, with a quote and a double quote: pgbouncer must
    # parse the quoting to log in to PostgreSQL as this user.
    password = ROLES["app_md5"][0]
    args["databases"]["appdb"]["password"] = password
    args["databases"]["appdb"]["user"] = "app_md5"
    ret = states.configured(**args)
    assert ret.result is True, ret
    assert password not in repr(ret.changes) + ret.comment
    assert password.replace("'", "''") not in repr(ret.changes)
    assert ret.changes["databases"] == {"changed": ["appdb"]}
    assert "password=***" in ret.changes["diff"]
    assert _query_ok(pgbouncer_server)


def test_validate_module_reports_problems_of_a_file_on_disk(module, pgbouncer_server, tmp_path):
    assert module.validate(pgbouncer_server.ini) == {"valid": True, "errors": []}
    bad = tmp_path / "bad.ini"
    bad.write_text("[pgbouncer]\nlisten_port = many\nauth_type = md4\nmax_prepared_statements = 10\n")
    verdict = module.validate(str(bad))
    assert verdict["valid"] is False
    joined = " | ".join(verdict["errors"])
    assert "'listen_port' must be an integer" in joined
    assert "'auth_type' must be one of" in joined
    version = tuple(int(p) for p in module.version().split("."))
    if version < (1, 21):
        assert "'max_prepared_statements' needs pgbouncer 1.21" in joined
    assert pgconf.SETTINGS  # the key table the checks come from


def test_switch_to_scram_sha_256_auth(states, module, pgbouncer_server, postgres_server):
    # Under auth_type scram-sha-256 every client must do SCRAM: the userlist
    # first (verifiers only), then the config, both applied by RELOAD.
    users = {
        "app_scram": {"password": ROLES["app_scram"][0]},
        "pgb_admin": ADMIN_PASSWORD,
    }
    args = dict(
        name=pgbouncer_server.userlist,
        users=users,
        auth_type="scram-sha-256",
        verifier_from=postgres_server.conninfo(),
        pidfile=pgbouncer_server.pidfile,
        admin=pgbouncer_server.admin,
    )
    # The console user is no PostgreSQL role: it has no verifier to copy.
    refused = states.userlist(**args)
    assert refused.result is False and "role 'pgb_admin' has no password in pg_authid" in refused.comment
    users["pgb_admin"] = {"password": ADMIN_PASSWORD, "from_pg": False}
    ret = states.userlist(
        name=pgbouncer_server.userlist,
        users=users,
        auth_type="scram-sha-256",
        verifier_from=postgres_server.conninfo(),
        pidfile=pgbouncer_server.pidfile,
        admin=pgbouncer_server.admin,
    )
    assert ret.result is True, ret
    assert ret.changes["removed"] == ["app_md5"]
    assert ret.changes["updated"] == ["pgb_admin"]  # md5 secret replaced by a SCRAM verifier
    entries = module.read_userlist(pgbouncer_server.userlist)
    assert all(pgconf.secret_kind(secret) == "scram-sha-256" for secret in entries.values())
    ret = states.configured(**_state_args(pgbouncer_server, auth_type="scram-sha-256"))
    assert ret.result is True, ret
    assert ret.changes["keys"]["auth_type"] == {"old": "md5", "new": "scram-sha-256"}
    assert module.running_config(**pgbouncer_server.admin)["auth_type"]["value"] == "scram-sha-256"
    assert _query_ok(pgbouncer_server, user="app_scram", dbname="postgres")
    with pytest.raises(psycopg.OperationalError):
        _query_ok(pgbouncer_server, user="app_md5", dbname="appdb")


def test_removed_key_returns_to_its_default_and_fractional_seconds(states, module, pgbouncer_server):
    args = _state_args(pgbouncer_server, query_timeout=0.5)
    del args["settings"]["max_client_conn"]  # the fixture sets 200; the default is 100
    ret = states.configured(**args)
    assert ret.result is True, ret
    assert ret.changes["keys"] == {
        "max_client_conn": {"old": "200", "new": "100"},
        "query_timeout": {"old": "0", "new": "0.5"},
    }
    config = module.running_config(**pgbouncer_server.admin)
    assert (config["max_client_conn"]["value"], config["query_timeout"]["value"]) == ("100", "0.5")
    assert states.configured(**args).changes == {}


def test_psql_fallback_against_the_real_console(pgbouncer_server, monkeypatch):
    import importlib.util

    from tests.support.asset_api import REPO_ROOT

    spec = importlib.util.spec_from_file_location(
        "opsalt_psql_fallback", os.path.join(REPO_ROOT, "_modules", "pgbouncer.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "__salt__", {"config.get": lambda key, default=None: default}, raising=False)
    monkeypatch.setattr(mod, "HAS_PSYCOPG", False)
    assert _query_ok(pgbouncer_server)
    pools = mod.show("pools", **pgbouncer_server.admin)
    assert ("appdb", "app_md5") in {(p["database"], p["user"]) for p in pools}
    assert isinstance(pools[0]["cl_active"], int)
    config = {row["key"]: row for row in mod.show("config", **pgbouncer_server.admin)}
    assert config["listen_port"]["value"] == pgbouncer_server.port
    assert mod.reload(**pgbouncer_server.admin) == "RELOAD"
    with pytest.raises(Exception) as err:
        mod.show("pools", **dict(pgbouncer_server.admin, password="wrong-Pw-xyz"))
    assert "wrong-Pw-xyz" not in str(err.value)


def test_runtime_set_drift_is_reloaded_back(states, module, pgbouncer_server):
    # The file is unchanged, but someone SET a value on the console: the
    # state sees SHOW CONFIG differ and reloads the file's value back.
    assert states.configured(**_state_args(pgbouncer_server)).result is True
    before = open(pgbouncer_server.ini, "rb").read()
    module.console("SET default_pool_size = 5", **pgbouncer_server.admin)
    assert module.running_config(**pgbouncer_server.admin)["default_pool_size"]["value"] == "5"
    ret = states.configured(**_state_args(pgbouncer_server))
    assert ret.result is True, ret
    assert ret.changes == {
        "keys": {"default_pool_size": {"old": "5", "new": "20"}},
        "reloaded": "console RELOAD",
    }
    assert open(pgbouncer_server.ini, "rb").read() == before
    assert module.running_config(**pgbouncer_server.admin)["default_pool_size"]["value"] == "20"
    assert states.configured(**_state_args(pgbouncer_server)).changes == {}


def test_restart_that_cannot_start_rolls_the_file_back(states, module, pgbouncer_server):
    # the new listen_port is taken: pgbouncer -d exits 0, then its daemon dies
    # ("nowhere to listen on"); the old file must come back and pgbouncer with it
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        assert (
            states.configured(**_state_args(pgbouncer_server)).result is True
        )  # the file as the state writes it
        before = open(pgbouncer_server.ini, "rb").read()
        old_pid = pgbouncer_server.pid()
        ret = states.configured(
            restart=True, **_state_args(pgbouncer_server, listen_port=taken.getsockname()[1])
        )
        assert ret.result is False, ret
        assert "did not start with the new configuration" in ret.comment
        assert "Address already in use" in ret.comment or "nowhere to listen" in ret.comment, ret.comment
        assert "runs again with it" in ret.comment
        assert ret.changes["rolled_back"]["pgbouncer"] == "running the previous configuration"
        assert open(pgbouncer_server.ini, "rb").read() == before
        assert open(ret.changes["rolled_back"]["restored_from"], "rb").read() == before
        assert pgbouncer_server.pid() != old_pid
        assert _query_ok(pgbouncer_server)  # on the old port
        again = states.configured(**_state_args(pgbouncer_server))
        assert again.result is True and again.changes == {}, again
    finally:
        taken.close()
