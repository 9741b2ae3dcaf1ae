"""
``state.apply pgbouncer`` through the real salt-minion, with the pillar from
the demo asset API (``ops_http_json``), against a real PostgreSQL and a
pgbouncer started from a pidfile.
"""

import os

import psycopg

from tests.support.postgres import (
    ADMIN_PASSWORD,
    ROLES,
    pgbouncer_server,
    postgres_server,
)


def _pillar(server, postgres, default_pool_size):
    settings = server.settings(default_pool_size=default_pool_size)
    settings.pop("auth_file")  # map.jinja points it at userlist_path
    return {
        "manage_package": False,  # installed by scripts/install-system-deps; no apt run in tests
        "manage_service": False,  # no systemd here: the test's pgbouncer runs from a pidfile
        "pidfile": server.pidfile,
        "config_path": server.ini,
        "userlist_path": server.userlist,
        "admin": server.admin,
        "databases": server.databases(),
        "settings": settings,
        "userlist": {
            "app_md5": {"password": ROLES["app_md5"][0], "method": "md5"},
            "app_scram": {"password": ROLES["app_scram"][0], "method": "scram-sha-256"},
            "pgb_admin": ADMIN_PASSWORD,
        },
        "verifier_from": postgres.conninfo(),
    }


def _states(ret):
    assert ret.returncode == 0, ret
    assert isinstance(ret.data, dict), ret
    return {state["__id__"]: state for state in ret.data.values()}


def test_state_apply_pgbouncer_twice(
    salt_minion, salt_call_cli, set_pillar, pgbouncer_server, postgres_server
):
    set_pillar("pgbouncer", _pillar(pgbouncer_server, postgres_server, default_pool_size=13))
    held = pgbouncer_server.connect()
    try:
        first = _states(salt_call_cli.run("state.apply", "pgbouncer"))
        assert all(state["result"] is True for state in first.values()), first
        config = first["pgbouncer-config-file-managed"]
        assert config["changes"]["keys"]["default_pool_size"] == {"old": "20", "new": "13"}
        assert config["changes"]["reloaded"] == "console RELOAD"
        userlist = first["pgbouncer-userlist-file-managed"]
        assert userlist["result"] is True
        output = repr(first)
        for password in [ROLES["app_md5"][0], ROLES["app_scram"][0], ADMIN_PASSWORD]:
            assert password not in output
        assert pgbouncer_server.show_config()["default_pool_size"]["value"] == "13"
        # The client connection held open across the run survives the reload.
        assert held.execute("SELECT 1").fetchone()[0] == 1
        for user, dbname in (("app_md5", "appdb"), ("app_scram", "postgres")):
            with pgbouncer_server.connect(user=user, dbname=dbname) as conn:
                assert conn.execute("SELECT current_user").fetchone()[0] == user
        second = _states(salt_call_cli.run("state.apply", "pgbouncer"))
        assert all(state["result"] is True and state["changes"] == {} for state in second.values()), second
    finally:
        held.close()
    with open(salt_minion.config["log_file"], encoding="utf-8", errors="replace") as handle:
        log = handle.read()
    assert "pgbouncer.userlist" in log  # the debug log covers the run
    for password in [ROLES["app_md5"][0], ROLES["app_scram"][0], ADMIN_PASSWORD]:
        assert password not in log


def test_module_functions_through_the_minion(salt_call_cli, set_pillar, pgbouncer_server, postgres_server):
    # Console arguments default from pillar pgbouncer:admin.
    set_pillar("pgbouncer", _pillar(pgbouncer_server, postgres_server, default_pool_size=20))
    ret = salt_call_cli.run("pgbouncer.show", "lists")
    assert ret.returncode == 0, ret
    assert {row["list"] for row in ret.data} >= {"databases", "users", "pools"}
    ret = salt_call_cli.run("pgbouncer.health")
    assert ret.returncode == 0, ret
    assert ret.data["healthy"] is True
    ret = salt_call_cli.run("pgbouncer.validate", pgbouncer_server.ini)
    assert ret.data == {"valid": True, "errors": []}
    ret = salt_call_cli.run("sys.doc", "pgbouncer.show")
    assert "CLI Example" in ret.data["pgbouncer.show"]


def test_invalid_pillar_fails_without_touching_pgbouncer(
    salt_call_cli, set_pillar, pgbouncer_server, postgres_server
):
    pillar = _pillar(pgbouncer_server, postgres_server, default_pool_size=5)
    pillar["settings"]["pool_mode"] = "sessions"
    set_pillar("pgbouncer", pillar)
    before = open(pgbouncer_server.ini, "rb").read()
    states = _states_allow_failure(salt_call_cli.run("state.apply", "pgbouncer"))
    config = states["pgbouncer-config-file-managed"]
    assert config["result"] is False
    assert "'pool_mode' must be one of" in config["comment"]
    assert open(pgbouncer_server.ini, "rb").read() == before
    assert pgbouncer_server.show_config()["default_pool_size"]["value"] == "20"
    with pgbouncer_server.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def _states_allow_failure(ret):
    assert isinstance(ret.data, dict), ret
    return {state["__id__"]: state for state in ret.data.values()}


def test_clean_removes_the_files(salt_call_cli, set_pillar, pgbouncer_server, postgres_server):
    set_pillar("pgbouncer", _pillar(pgbouncer_server, postgres_server, default_pool_size=20))
    states = _states(salt_call_cli.run("state.apply", "pgbouncer.clean"))
    assert set(states) == {"pgbouncer-config-file-absent", "pgbouncer-userlist-file-absent"}
    assert not os.path.exists(pgbouncer_server.ini)
    assert not os.path.exists(pgbouncer_server.userlist)
    try:
        with pgbouncer_server.connect() as conn:  # already-loaded config keeps serving
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    except psycopg.OperationalError as err:
        raise AssertionError(f"pgbouncer stopped serving after clean: {err}") from err


def _show_sls_args(chunk):
    # {"pgbouncer": ["configured", {"name": ...}, ..., {"order": N}], "__sls__": ...}
    module = next(key for key in chunk if not key.startswith("__"))
    return {k: v for item in chunk[module] if isinstance(item, dict) for k, v in item.items()}


def test_full_sls_renders_package_and_service_in_order(
    salt_call_cli, set_pillar, pgbouncer_server, postgres_server
):
    # What a real host gets (package and systemd service), rendered without
    # applying: the test host has no systemd and must not run apt.
    pillar = _pillar(pgbouncer_server, postgres_server, default_pool_size=20)
    pillar.update(manage_package=True, manage_service=True, pidfile=None)
    set_pillar("pgbouncer", pillar)
    ret = salt_call_cli.run("state.show_sls", "pgbouncer")
    assert ret.returncode == 0, ret
    args = {state_id: _show_sls_args(chunk) for state_id, chunk in ret.data.items()}
    ids = sorted(args, key=lambda state_id: args[state_id]["order"])
    assert ids == [
        "pgbouncer-package-installed",
        "pgbouncer-userlist-file-managed",
        "pgbouncer-config-file-managed",
        "pgbouncer-service-running",
    ]
    config = args["pgbouncer-config-file-managed"]
    assert config["service"] == "pgbouncer"
    assert config["settings"]["auth_file"] == pgbouncer_server.userlist
    assert {"pgbouncer": "pgbouncer-userlist-file-managed"} in config["require"]
    ret = salt_call_cli.run("state.show_sls", "pgbouncer.clean")
    assert ret.returncode == 0, ret
    assert set(ret.data) == {
        "pgbouncer-service-dead",
        "pgbouncer-config-file-absent",
        "pgbouncer-userlist-file-absent",
        "pgbouncer-package-removed",
    }
