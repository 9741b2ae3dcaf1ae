"""
Edge cases of the pgbouncer execution module with the console mocked.
"""

import os
import shutil
import signal
import subprocess
from unittest.mock import MagicMock

import opsalt_wait
import psutil
import pytest
from salt.exceptions import CommandExecutionError

from tests.support.components import load_component
from tests.support.procs import stop_popen

pgbouncer = load_component("_modules", "pgbouncer")


@pytest.fixture
def mod(monkeypatch):
    config = {"pgbouncer:admin": {"host": "10.0.0.9", "port": 6543, "user": "ops", "password": "Cfg-Pw"}}
    monkeypatch.setattr(
        pgbouncer,
        "__salt__",
        {"config.get": lambda key, default=None: config.get(key, default)},
        raising=False,
    )
    return pgbouncer


def test_admin_defaults_from_config_and_overrides(mod):
    assert mod._admin() == {"host": "10.0.0.9", "port": 6543, "user": "ops", "password": "Cfg-Pw"}
    assert mod._admin(port="7000", user="x")["port"] == 7000
    assert mod._admin(port="7000", user="x")["user"] == "x"


def test_admin_builtin_defaults(monkeypatch):
    monkeypatch.setattr(
        pgbouncer, "__salt__", {"config.get": lambda key, default=None: default}, raising=False
    )
    assert pgbouncer._admin() == {"host": "127.0.0.1", "port": 6432, "user": "pgbouncer", "password": None}


def test_show_rejects_unknown_topic(mod):
    with pytest.raises(CommandExecutionError, match="choose one of"):
        mod.show("passwords")


@pytest.mark.parametrize("name", ["app db", "a;SHUTDOWN", "'x'", ""])
def test_commands_refuse_non_identifiers(mod, monkeypatch, name):
    console = MagicMock()
    monkeypatch.setattr(mod, "console", console)
    with pytest.raises(CommandExecutionError):
        mod.kill(name or None)
    console.assert_not_called()


def test_pause_all_and_one(mod, monkeypatch):
    console = MagicMock(return_value="PAUSE")
    monkeypatch.setattr(mod, "console", console)
    mod.pause()
    mod.pause("appdb")
    assert [c.args[0] for c in console.call_args_list] == ["PAUSE", "PAUSE appdb"]


def test_psql_fallback_parses_rows_and_hides_password(mod, monkeypatch):
    seen = {}

    def fake_run(argv, env=None, timeout=None, secrets=()):
        seen.update(argv=argv, env=env, secrets=secrets)
        return MagicMock(stdout="database\x1fuser\x1fcl_waiting\nappdb\x1fapp\x1f3\n")

    monkeypatch.setattr(mod, "HAS_PSYCOPG", False)
    monkeypatch.setattr(mod.opsalt_cmd, "run", fake_run)
    rows = mod.console("SHOW POOLS")
    assert rows == [{"database": "appdb", "user": "app", "cl_waiting": 3}]
    assert "Cfg-Pw" not in seen["argv"]
    assert seen["env"]["PGPASSWORD"] == "Cfg-Pw"
    assert "Cfg-Pw" in seen["secrets"]


def test_health_thresholds(mod, monkeypatch):
    pools = [
        {
            "database": "pgbouncer",
            "user": "pgbouncer",
            "cl_active": 1,
            "cl_waiting": 0,
            "sv_active": 0,
            "maxwait": 0,
            "maxwait_us": 0,
        },
        {
            "database": "appdb",
            "user": "app",
            "cl_active": 20,
            "cl_waiting": 4,
            "sv_active": 20,
            "maxwait": 2,
            "maxwait_us": 500000,
        },
        {
            "database": "other",
            "user": "app",
            "cl_active": 1,
            "cl_waiting": 0,
            "sv_active": 1,
            "maxwait": 0,
            "maxwait_us": 0,
        },
    ]
    databases = [{"name": "appdb", "pool_size": 20}, {"name": "other", "pool_size": 20}]
    monkeypatch.setattr(mod, "show", lambda what, **_: pools if what == "pools" else databases)
    health = mod.health(max_waiting=2, max_wait=1.0)
    assert health["healthy"] is False
    assert len(health["problems"]) == 3
    appdb = next(p for p in health["pools"] if p["pool"] == "appdb/app")
    assert appdb["saturated"] is True and appdb["maxwait"] == 2.5
    assert all(p["pool"] != "pgbouncer/pgbouncer" for p in health["pools"])
    assert mod.health(max_waiting=10, max_wait=5)["problems"] == [
        "appdb/app: saturated, 20/20 server connections busy with clients waiting"
    ]


def test_virtual_needs_a_client(monkeypatch):
    monkeypatch.setattr(pgbouncer, "HAS_PSYCOPG", False)
    monkeypatch.setattr(pgbouncer, "_which", lambda name: None)
    ok, reason = pgbouncer.__virtual__()
    assert ok is False and "psycopg" in reason


def test_secret_method_errors_and_from_pg_mismatch(mod, monkeypatch):
    with pytest.raises(CommandExecutionError, match="unknown secret method"):
        mod.secret("u", "p", method="sha1")
    monkeypatch.setattr(mod, "_pg_stored_secret", lambda user, pg: mod.pgconf.scram_secret("right"))
    with pytest.raises(CommandExecutionError) as err:
        mod.secret("u", "wrong-Pw-1", from_pg=True, pg={})
    assert "wrong-Pw-1" not in str(err.value)


def test_validate_missing_file_and_text(mod, monkeypatch, tmp_path):
    monkeypatch.setattr(mod, "version", lambda: "1.18.0")
    assert mod.validate(str(tmp_path / "none.ini"))["errors"] == [f"{tmp_path}/none.ini does not exist"]
    verdict = mod.validate("/x.ini", text="[pgbouncer]\nauth_type = trust\nlisten_port = 1\n")
    assert verdict == {"valid": True, "errors": []}


def test_restart_needs_a_target(mod):
    with pytest.raises(CommandExecutionError, match="service or pidfile"):
        mod.restart()


def test_signal_reload_falls_back_to_the_service(mod, monkeypatch):
    def unreachable(*args, **kwargs):
        raise CommandExecutionError("pgbouncer console ops@10.0.0.9:6543: connection refused")

    reloads = []
    monkeypatch.setattr(mod, "reload", unreachable)
    mod.__salt__["service.reload"] = lambda name: reloads.append(name) or True
    assert mod.signal_reload(service="pgbouncer") == "service.reload pgbouncer"
    assert reloads == ["pgbouncer"]
    mod.__salt__["service.reload"] = lambda name: False
    with pytest.raises(CommandExecutionError, match="service.reload pgbouncer failed"):
        mod.signal_reload(service="pgbouncer")
    with pytest.raises(CommandExecutionError, match="no running service or pidfile"):
        mod.signal_reload(pidfile="/nonexistent/pgbouncer.pid")


def test_restart_through_the_service(mod):
    restarts = []
    mod.__salt__["service.restart"] = lambda name: restarts.append(name) or True
    assert mod.restart(service="pgbouncer") is None
    assert restarts == ["pgbouncer"]
    mod.__salt__["service.restart"] = lambda name: False
    with pytest.raises(CommandExecutionError, match="journalctl -u pgbouncer"):
        mod.restart(service="pgbouncer")
    with pytest.raises(CommandExecutionError, match="no running pgbouncer in pidfile"):
        mod.restart(pidfile="/nonexistent/pgbouncer.pid")


@pytest.mark.parametrize("start_ok, outcome", [(True, "pgbouncer started"), (False, "pgbouncer is DOWN")])
def test_failed_service_restart_puts_the_old_file_back(mod, tmp_path, start_ok, outcome):
    config = tmp_path / "pgbouncer.ini"
    config.write_text("[pgbouncer]\nlisten_port = 6432\n")
    config.chmod(0o640)
    backup = mod.opsalt_files.backup(str(config))
    config.write_text("[pgbouncer]\nlisten_port = 5432\n")
    config.chmod(0o600)
    starts = []
    mod.__salt__["service.restart"] = lambda name: False
    mod.__salt__["service.start"] = lambda name: starts.append((name, config.read_text())) or start_ok
    with pytest.raises(CommandExecutionError) as err:
        mod.restart(service="pgbouncer", rollback_from=backup, config=str(config))
    assert f"restored from {backup}" in str(err.value) and outcome in str(err.value)
    # started only once the old file, with its mode, was back
    assert starts == [("pgbouncer", "[pgbouncer]\nlisten_port = 6432\n")]
    assert config.stat().st_mode & 0o777 == 0o640


# -- the pidfile (issue 12: pillar names it, root signals what it holds) -------


def _unreachable(*args, **kwargs):
    raise CommandExecutionError("pgbouncer console: connection refused")


@pytest.fixture
def no_console(mod, monkeypatch):
    monkeypatch.setattr(mod, "reload", _unreachable)
    monkeypatch.setattr(mod, "console", _unreachable)
    return mod


def _default_sighup():
    # A runner started under nohup ignores SIGHUP, and exec keeps an ignored
    # signal ignored: the stand-in must die of SIGHUP as a real process would.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _started(argv, pidfile, **kwargs):
    proc = subprocess.Popen(argv, preexec_fn=_default_sighup, **kwargs)
    pidfile.write_text(f"{proc.pid}\n")
    return proc


def _fake_pgbouncer(tmp_path, pidfile):
    """``(executable, process)``: ``sleep 60`` copied to ``tmp_path/pgbouncer`` and started, its pid in ``pidfile``."""
    fake = tmp_path / "pgbouncer"
    shutil.copy(shutil.which("sleep"), fake)
    return fake, _started([str(fake), "60"], pidfile)


def test_signal_reload_refuses_a_pid_that_is_not_pgbouncer(no_console, tmp_path):
    mod, pidfile = no_console, tmp_path / "pgbouncer.pid"
    sleep = shutil.which("sleep")
    # argv[0] says pgbouncer; the executable, which argv cannot fake, does not
    proc = _started(["pgbouncer", "60"], pidfile, executable=sleep)
    try:
        with pytest.raises(CommandExecutionError) as err:
            mod.signal_reload(pidfile=str(pidfile))
        assert f"pid {proc.pid} from {pidfile} is not pgbouncer ({sleep}); not signalled" in str(err.value)
        with pytest.raises(CommandExecutionError, match="is not pgbouncer"):
            mod.restart(pidfile=str(pidfile))
        assert mod.status(pidfile=str(pidfile)) == {"running": False, "pid": None, "console": False}
        assert proc.poll() is None  # SIGHUP (or the restart's SIGINT) would have ended it
    finally:
        stop_popen(proc)


def test_signal_reload_signals_a_process_whose_executable_is_pgbouncer(no_console, tmp_path):
    mod, pidfile = no_console, tmp_path / "pgbouncer.pid"
    _fake, proc = _fake_pgbouncer(tmp_path, pidfile)
    try:
        assert mod.status(pidfile=str(pidfile))["pid"] == proc.pid
        assert mod.signal_reload(pidfile=str(pidfile)) == f"SIGHUP to pid {proc.pid}"
        assert proc.wait(10) == -signal.SIGHUP
    finally:
        stop_popen(proc)


def test_pidfile_that_is_a_fifo_or_a_link_is_not_read(no_console, tmp_path):
    mod = no_console
    target = tmp_path / "target.pid"
    _fake, proc = _fake_pgbouncer(tmp_path, target)
    try:
        assert mod.status(pidfile=str(target))["running"] is True
        link = tmp_path / "link.pid"
        link.symlink_to(target)
        fifo = tmp_path / "fifo.pid"
        os.mkfifo(fifo)  # a plain open() as root would block here
        for pidfile in (link, fifo):
            assert mod.status(pidfile=str(pidfile))["running"] is False
            with pytest.raises(CommandExecutionError, match="no running service or pidfile"):
                mod.signal_reload(pidfile=str(pidfile))
        assert proc.poll() is None
    finally:
        stop_popen(proc)


def test_running_binary_sees_a_binary_replaced_on_disk(no_console, tmp_path):
    # as dpkg upgrades: a new file renamed over the one the process runs
    mod, pidfile = no_console, tmp_path / "pgbouncer.pid"
    fake, proc = _fake_pgbouncer(tmp_path, pidfile)
    try:
        current = mod.running_binary(str(pidfile))
        assert current == {
            "pid": proc.pid,
            "path": str(fake),
            "replaced": False,
            "running_version": None,
            "installed_version": None,
        }
        new = tmp_path / "pgbouncer.dpkg-new"
        shutil.copy(shutil.which("sleep"), new)
        os.rename(new, fake)
        replaced = mod.running_binary(str(pidfile))
        # sleep --version names no PgBouncer version, and no console answers
        assert replaced == dict(current, replaced=True)
        os.unlink(fake)  # gone (the package removed): nothing a restart could start
        with pytest.raises(CommandExecutionError, match=f"cannot stat its binary {fake}"):
            mod.running_binary(str(pidfile))
        assert proc.poll() is None
    finally:
        stop_popen(proc)


@pytest.mark.parametrize(
    "argv0, cwd, expected",
    [
        ("/usr/sbin/pgbouncer", "/srv", "/usr/sbin/pgbouncer"),
        ("./bin/pgbouncer", "/srv/pgb", "/srv/pgb/bin/pgbouncer"),
        ("../pgbouncer", "/srv/pgb", "/srv/pgbouncer"),
    ],
)
def test_exec_path_resolves_argv0_as_exec_does(mod, argv0, cwd, expected):
    assert mod._exec_path([argv0, "/etc/pgbouncer/pgbouncer.ini"], cwd) == expected


def test_exec_path_finds_a_bare_name_on_path_or_in_usr_sbin(mod, monkeypatch):
    monkeypatch.setattr(mod, "_which", lambda name: f"/opt/found/{name}")
    assert mod._exec_path(["pgbouncer"], "/") == "/opt/found/pgbouncer"


@pytest.mark.parametrize(("keep", "backups"), [(None, 3), (1, 1)])
def test_write_file_keeps_the_configured_number_of_backups(tmp_path, monkeypatch, keep, backups):
    config = {} if keep is None else {"opsalt:backups:keep": keep}
    monkeypatch.setattr(
        pgbouncer,
        "__salt__",
        {"config.get": lambda key, default=None, **_omit: config.get(key, default)},
        raising=False,
    )
    path = tmp_path / "pgbouncer.ini"
    for number in range(5):
        pgbouncer.write_file(str(path), f"[pgbouncer]\nlisten_port = {6432 + number}\n")
    assert path.read_text() == "[pgbouncer]\nlisten_port = 6436\n"
    assert len([name for name in os.listdir(tmp_path) if name != "pgbouncer.ini"]) == backups


def test_write_file_refuses_a_bad_backup_count_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(
        pgbouncer,
        "__salt__",
        {"config.get": lambda key, default=None, **_omit: 0 if key == "opsalt:backups:keep" else default},
        raising=False,
    )
    with pytest.raises(CommandExecutionError, match="opsalt:backups:keep"):
        pgbouncer.write_file(str(tmp_path / "pgbouncer.ini"), "[pgbouncer]\n")
    assert os.listdir(tmp_path) == []


def test_wait_exit_counts_a_zombie_nobody_reaps_as_exited():
    """An online restart's old process may be a zombie of a parent that never reaps it."""
    # sh starts a child, then becomes `sleep` (exec): nobody reaps the child.
    parent = subprocess.Popen(["sh", "-c", "sleep 0 & exec sleep 30"])
    try:
        holder = psutil.Process(parent.pid)
        zombie = opsalt_wait.until(
            lambda: [c for c in holder.children() if c.status() == psutil.STATUS_ZOMBIE], 10
        )
        assert zombie, "the child did not become a zombie"
        assert pgbouncer._wait_exit(zombie[0], 5) is True
    finally:
        stop_popen(parent)


def test_wait_exit_times_out_on_a_live_process():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert pgbouncer._wait_exit(psutil.Process(proc.pid), 0.3) is False
    finally:
        stop_popen(proc)
    assert pgbouncer._wait_exit(psutil.Process(os.getpid()), 0) is False
