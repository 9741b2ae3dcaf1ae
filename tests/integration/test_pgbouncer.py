"""
``state.apply pgbouncer`` through the real salt-minion, with the pillar from
the demo asset API (``ops_http_json``), against a real PostgreSQL and a
pgbouncer started from a pidfile.
"""

import os
import pwd

import psycopg
import pytest
import yaml

from tests.support.postgres import (
    ADMIN_PASSWORD,
    OPERATOR_POLICY,
    ROLES,
    pgbouncer_server,
    postgres_server,
)

# The operator policy is a file in the minion's minion.d (read by each
# salt-call), never pillar.
TEST_POLICY = OPERATOR_POLICY


def _write_policy(salt_minion, policy):
    directory = os.path.join(os.path.dirname(salt_minion.config_file), "minion.d")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "opsalt-pgbouncer-policy.conf")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"opsalt": {"policy": policy}}, handle)
    return path


@pytest.fixture(autouse=True)
def operator_policy(salt_minion):
    """
    ``operator_policy(policy)`` replaces the minion's ``opsalt:policy``; the
    file is removed after the test.
    """
    path = _write_policy(salt_minion, TEST_POLICY)
    try:
        yield lambda policy: _write_policy(salt_minion, policy)
    finally:
        os.unlink(path)


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
    comments = [s.get("comment") for s in ret.data.values()] if isinstance(ret.data, dict) else ret
    assert ret.returncode == 0, comments
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


def _files(server):
    return {path: open(path, "rb").read() for path in (server.ini, server.userlist)}


def test_missing_pillar_key_manages_nothing(
    salt_minion, salt_call_cli, asset_api, pgbouncer_server, postgres_server
):
    # issue 12 finding 6: a host the asset system does not know gets {}
    document = asset_api.get_document(salt_minion.id) or {}
    document.pop("pgbouncer", None)
    asset_api.set_document(salt_minion.id, document)
    assert salt_call_cli.run("saltutil.refresh_pillar", wait=True).returncode == 0
    before = _files(pgbouncer_server)
    for sls in ("pgbouncer", "pgbouncer.clean"):
        states = _states(salt_call_cli.run("state.apply", sls))
        assert list(states) == ["pgbouncer-not-managed-test-show-notification"], states
        state = states["pgbouncer-not-managed-test-show-notification"]
        assert state["result"] is True and state["changes"] == {}
        assert "no 'pgbouncer' key" in state["comment"]
    assert _files(pgbouncer_server) == before


def test_unmanaged_package_and_service_sls_alone_exit_0(
    salt_call_cli, set_pillar, pgbouncer_server, postgres_server
):
    # manage_package/manage_service false: applied alone they rendered no
    # state, and salt-call exited 1 ("No Top file or master_tops data matches")
    set_pillar("pgbouncer", _pillar(pgbouncer_server, postgres_server, default_pool_size=20))
    before = _files(pgbouncer_server)
    for sls, what in (
        ("pgbouncer.package", "package"),
        ("pgbouncer.package.clean", "package-clean"),
        ("pgbouncer.service", "service"),
        ("pgbouncer.service.clean", "service-clean"),
    ):
        for extra in (("test=True",), ()):
            states = _states(salt_call_cli.run("state.apply", sls, *extra))
            state_id = f"pgbouncer-{what}-not-managed-test-show-notification"
            assert list(states) == [state_id], (sls, states)
            assert states[state_id]["result"] is True and states[state_id]["changes"] == {}
            assert "is false in this host's pillar" in states[state_id]["comment"]
    assert _files(pgbouncer_server) == before


def test_dry_run_on_a_fresh_host_predicts_the_real_run(
    salt_call_cli, set_pillar, pgbouncer_server, postgres_server
):
    # issue 12 finding 7: no userlist.txt yet; test=True validates the config
    # against the userlist this run would write
    os.unlink(pgbouncer_server.userlist)
    set_pillar("pgbouncer", _pillar(pgbouncer_server, postgres_server, default_pool_size=11))
    dry = _states(salt_call_cli.run("state.apply", "pgbouncer", "test=True"))
    assert [s["result"] for s in dry.values()] == [None, None], dry
    assert not os.path.exists(pgbouncer_server.userlist)
    real = _states(salt_call_cli.run("state.apply", "pgbouncer"))
    assert all(s["result"] is True for s in real.values()), real
    assert pgbouncer_server.show_config()["default_pool_size"]["value"] == "11"


def test_newline_in_a_value_is_refused_and_files_stay_byte_identical(
    salt_call_cli, set_pillar, pgbouncer_server, postgres_server
):
    # issue 12 finding 2, through the real minion
    base = _pillar(pgbouncer_server, postgres_server, default_pool_size=20)
    set_pillar("pgbouncer", base)
    assert all(s["result"] for s in _states(salt_call_cli.run("state.apply", "pgbouncer")).values())
    before = _files(pgbouncer_server)
    cases = [
        ("settings", "pidfile", pgbouncer_server.pidfile + "\nauth_type = trust", "settings:pidfile"),
        (
            "databases",
            "appdb",
            f"host=127.0.0.1 port={postgres_server.port} dbname=appdb\nevil = host=10.6.6.6",
            "databases:appdb",
        ),
    ]
    for section, key, value, field in cases:
        pillar = dict(base, **{section: dict(base[section], **{key: value})})
        set_pillar("pgbouncer", pillar)
        for args in (("pgbouncer", "test=True"), ("pgbouncer",)):
            states = _states_allow_failure(salt_call_cli.run("state.apply", *args))
            config = states["pgbouncer-config-file-managed"]
            assert config["result"] is False, config
            assert field in config["comment"] and "not changed" in config["comment"]
            assert _files(pgbouncer_server) == before
    assert pgbouncer_server.show_config()["auth_type"]["value"] == "md5"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1", port=pgbouncer_server.port, user="app_md5", password="wrong", dbname="appdb"
        ).close()
    bad = pgbouncer_server.ini + ".dup"
    with open(bad, "w", encoding="utf-8") as handle:
        handle.write(before[pgbouncer_server.ini].decode() + "auth_type = trust\n")
    verdict = salt_call_cli.run("pgbouncer.validate", bad).data
    assert verdict["valid"] is False
    assert any("key 'auth_type' appears twice in [pgbouncer]" in e for e in verdict["errors"]), verdict


POISON = "x\n\npwned-cmd-run:\n  cmd.run:\n    - name: touch /tmp/PWNED-pgbouncer\n"


def test_poisoned_pillar_values_stay_data(salt_call_cli, set_pillar, pgbouncer_server, postgres_server):
    # issue 12 finding 1: config_path, userlist_path, settings:auth_type,
    # iterations and restart_timeout through the real minion
    base = _pillar(pgbouncer_server, postgres_server, default_pool_size=20)
    before = _files(pgbouncer_server)
    fields = {
        "config_path": {"config_path": POISON},
        "userlist_path": {"userlist_path": POISON},
        "auth_type": {"settings": dict(base["settings"], auth_type=POISON)},
        "iterations": {"scram_iterations": POISON},
        "restart_timeout": {"restart_timeout": POISON},
    }
    for field, override in fields.items():
        set_pillar("pgbouncer", dict(base, **override))
        shown = salt_call_cli.run("state.show_sls", "pgbouncer")
        assert shown.returncode == 0, shown
        assert set(shown.data) == {"pgbouncer-userlist-file-managed", "pgbouncer-config-file-managed"}, field
        states = _states_allow_failure(salt_call_cli.run("state.apply", "pgbouncer", "test=True"))
        assert set(states) == {"pgbouncer-userlist-file-managed", "pgbouncer-config-file-managed"}
        assert any(s["result"] is False for s in states.values()), (field, states)
        assert not os.path.exists("/tmp/PWNED-pgbouncer")
        assert _files(pgbouncer_server) == before


def test_no_secret_in_rendered_sls_or_log_at_level_all(
    salt_call_cli, set_pillar, pgbouncer_server, postgres_server
):
    # issue 12 finding 5: Salt logs rendered SLS text at its lowest levels
    pillar = _pillar(pgbouncer_server, postgres_server, default_pool_size=20)
    pillar["databases"]["appdb"].update(user="app_md5", password=ROLES["app_md5"][0])
    set_pillar("pgbouncer", pillar)
    secrets = [
        ROLES["app_md5"][0],
        ROLES["app_scram"][0],
        ADMIN_PASSWORD,
        pillar["verifier_from"]["password"],
    ]
    for args in (("state.show_sls", "pgbouncer"), ("state.apply", "pgbouncer")):
        ret = salt_call_cli.run("--log-level=all", *args)
        assert ret.returncode == 0, ret
        assert "Rendered data from file" in ret.stderr  # the log really is at that level
        for secret in secrets:
            assert secret not in ret.stderr
            assert secret not in repr(ret.data)


@pytest.mark.parametrize(
    "override, policy, message",
    [
        (
            # md5 secrets: under trust the method would default to SCRAM from pg_authid
            {"settings": {"auth_type": "trust"}, "userlist_method": "md5"},
            {"pgbouncer": {"auth_types": ["md5", "trust"]}},
            "auth_type",
        ),
        (
            {"settings": {"admin_users": "app_md5"}},
            {"pgbouncer": {"admin_users": ["app_md5"]}},
            "admin_users",
        ),
        ({"config_path": "/var/tmp/opsalt-pgb-policy/pgbouncer.ini"}, None, "config_path"),
        # the owner of both files (the userlist state, first, refuses it; the
        # pgbouncer service user postgres still reads them through the group)
        ({"user": "nobody"}, {"pgbouncer": {"owners": ["nobody"]}}, "user"),
    ],
)
def test_policy_from_the_minion_config(
    salt_call_cli, set_pillar, operator_policy, pgbouncer_server, postgres_server, override, policy, message
):
    pillar = _pillar(pgbouncer_server, postgres_server, default_pool_size=20)
    pillar["settings"].update(override.get("settings", {}))
    pillar.update({k: v for k, v in override.items() if k != "settings"})
    set_pillar("pgbouncer", pillar)
    before = _files(pgbouncer_server)
    states = _states_allow_failure(salt_call_cli.run("state.apply", "pgbouncer"))
    refusing = "pgbouncer-userlist-file-managed" if message == "user" else "pgbouncer-config-file-managed"
    config = states[refusing]
    assert config["result"] is False
    assert f"{message}: " in config["comment"] and "opsalt:policy" in config["comment"]
    assert states["pgbouncer-config-file-managed"]["result"] is False
    assert _files(pgbouncer_server) == before
    # the same value, allowed by the operator in the minion config
    if policy is None:
        os.makedirs("/var/tmp/opsalt-pgb-policy", exist_ok=True)
        policy = {"pgbouncer": {"allowed_paths": ["/var/tmp/opsalt-pgb-policy"]}}
    allowed = {**TEST_POLICY, "pgbouncer": {**TEST_POLICY["pgbouncer"], **policy["pgbouncer"]}}
    operator_policy(allowed)
    try:
        states = _states(salt_call_cli.run("state.apply", "pgbouncer"))
        assert all(s["result"] is True for s in states.values()), states
        if message == "user":
            for path in _files(pgbouncer_server):
                assert pwd.getpwuid(os.stat(path).st_uid).pw_name == "nobody"
    finally:
        if os.path.exists("/var/tmp/opsalt-pgb-policy"):
            __import__("shutil").rmtree("/var/tmp/opsalt-pgb-policy")
