"""
``pgbouncer.configured restart: online`` (``pgbouncer -R``) under load:
pgbench through a real pgbouncer in transaction pooling while a key that
RELOAD cannot change is applied (issue 16), against the outage baseline of
``restart: true``, a socket key reported as waiting for a full restart, and
a binary replaced on disk (a package upgrade) taken over by the new one.
"""

import os
import re
import shutil
import subprocess

import pytest

from tests.support.loaders import make_loaders
from tests.support.postgres import (
    OPERATOR_POLICY,
    PG_BIN,
    PGBOUNCER,
    ROLES,
    PgBouncer,
    postgres_server,
    running,
    service_root,
)
from tests.support.procs import stop_popen, wait_for

PGBENCH = os.path.join(PG_BIN, "pgbench")

__all__ = ["postgres_server"]  # the module-scoped fixture used below


# settings:user nobody (the failed takeover below) is an owner the operator allows
POLICY = dict(
    OPERATOR_POLICY,
    pgbouncer=dict(OPERATOR_POLICY["pgbouncer"], owners=["postgres", "pgbouncer", "root", "nobody"]),
)


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    loaders = make_loaders(
        tmp_path_factory.mktemp("minion"), id="pgbouncer-online", opsalt={"policy": POLICY}
    )
    return loaders.states.pgbouncer


@pytest.fixture(scope="module")
def bench_tables(postgres_server):
    env = dict(os.environ, PGPASSWORD=ROLES["app_md5"][0])
    argv = [PGBENCH, "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", str(postgres_server.port)]
    subprocess.run([*argv, "-U", "app_md5", "appdb"], env=env, check=True, capture_output=True, timeout=120)


@pytest.fixture
def pooler(postgres_server, bench_tables):
    # -R hands the sockets over through the unix socket: unix_socket_dir set
    with service_root("pgbouncer-online") as root:
        directory = os.path.join(root, "pgb")
        extra = {"unix_socket_dir": directory, "pool_mode": "transaction"}
        with running(PgBouncer(directory, postgres_server, extra=extra)) as server:
            yield server


def _args(server, **settings):
    return dict(
        name=server.ini,
        databases=server.databases(),
        settings=server.settings(**settings),
        pidfile=server.pidfile,
        admin=server.admin,
    )


class Bench:
    """pgbench -c 8 through pgbouncer, progress every second into a file."""

    def __init__(self, server, seconds, log):
        self.log = log
        env = dict(os.environ, PGPASSWORD=ROLES["app_md5"][0])
        argv = [PGBENCH, "-n", "-c", "8", "-j", "2", "-T", str(seconds), "-P", "1"]
        argv += ["-h", "127.0.0.1", "-p", str(server.port), "-U", "app_md5", "appdb"]
        with open(log, "w", encoding="utf-8") as handle:
            self.proc = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True)

    def output(self):
        with open(self.log, encoding="utf-8") as handle:
            return handle.read()

    def wait_started(self):
        wait_for(lambda: "progress:" in self.output(), 30, what="pgbench progress")

    def finish(self, timeout=90):
        try:
            self.proc.wait(timeout)
        finally:
            stop_popen(self.proc, timeout=5)
        out = self.output()
        failed = re.search(r"number of failed transactions: (\d+)", out)
        tps = [float(x) for x in re.findall(r"progress: [\d.]+ s, ([\d.]+) tps", out)]
        return {
            "rc": self.proc.returncode,
            "out": out,
            "failed": int(failed.group(1)) if failed else None,
            "tps": tps,
        }


def test_online_restart_under_load_drops_no_transaction(states, pooler, tmp_path):
    assert states.configured(**_args(pooler)).result is True  # the file as the state writes it
    old_pid = pooler.pid()
    bench = Bench(pooler, 20, tmp_path / "pgbench.log")
    try:
        bench.wait_started()
        dry = states.configured(test=True, restart="online", **_args(pooler, pkt_buf=8192))
        assert dry.result is None and "restart pgbouncer online (pgbouncer -R) for pkt_buf" in dry.comment
        ret = states.configured(restart="online", **_args(pooler, pkt_buf=8192))
    finally:
        result = bench.finish()
    assert ret.result is True, ret
    assert ret.changes["restarted"] == "online"
    assert ret.changes["keys"]["pkt_buf"] == {"old": "4096", "new": "8192"}
    assert "restarted online" in ret.comment
    assert pooler.pid() != old_pid and ret.changes["new_pid"] == pooler.pid()
    assert pooler.show_config()["pkt_buf"]["value"] == "8192"
    assert result["rc"] == 0, result["out"][-2000:]
    assert result["failed"] == 0, result["out"][-2000:]
    assert "aborted" not in result["out"] and "error" not in result["out"].lower()
    assert len(result["tps"]) >= 18 and min(result["tps"]) > 0, result["tps"]
    assert states.configured(restart="online", **_args(pooler, pkt_buf=8192)).changes == {}


def test_full_restart_baseline_shows_the_outage(states, pooler, tmp_path):
    assert states.configured(**_args(pooler)).result is True
    bench = Bench(pooler, 8, tmp_path / "pgbench.log")
    try:
        bench.wait_started()
        ret = states.configured(restart=True, **_args(pooler, pkt_buf=8192))
    finally:
        result = bench.finish()
    assert ret.result is True and ret.changes["restarted"] is True, ret
    # the safe shutdown closes every client: pgbench's clients abort
    assert result["rc"] != 0 or "aborted" in result["out"], result["out"][-2000:]


def test_socket_key_waits_for_a_full_restart(states, pooler):
    assert states.configured(**_args(pooler)).result is True
    old_pid = pooler.pid()
    dry = states.configured(test=True, restart="online", **_args(pooler, listen_backlog=64))
    assert (
        dry.result is None
        and "a restart is still needed for listen_backlog (a full restart: restart: true)" in dry.comment
    )
    ret = states.configured(restart="online", **_args(pooler, listen_backlog=64, pkt_buf=8192))
    assert ret.result is True, ret
    assert ret.changes["restarted"] == "online" and "pkt_buf" in ret.changes["keys"]
    assert "listen_backlog" not in ret.changes["keys"]
    assert ret.changes["pending_restart"] == ["listen_backlog"]
    assert (
        "waiting for a pgbouncer restart to apply: listen_backlog (a full restart: restart: true)"
        in ret.comment
    )
    assert pooler.pid() != old_pid
    # A limit of -R: SHOW CONFIG now shows the file's listen_backlog, not the
    # inherited socket's, so later runs cannot see that it still waits.
    again = states.configured(restart="online", **_args(pooler, listen_backlog=64, pkt_buf=8192))
    assert again.changes == {} and again.result is True
    assert pooler.pid() == ret.changes["new_pid"]


def test_online_restart_refused_without_unix_socket(states, postgres_server, bench_tables):
    with (
        service_root("pgbouncer-online") as root,
        running(PgBouncer(os.path.join(root, "pgb"), postgres_server)) as server,
    ):
        assert states.configured(**_args(server)).result is True
        old_pid = server.pid()
        before = open(server.ini, "rb").read()
        # refused before any change, so the dry run says what the real run does
        for test in (True, False):
            ret = states.configured(restart="online", test=test, **_args(server, pkt_buf=8192))
            assert ret.result is False and ret.changes == {}, ret
            assert "restart: online needs settings:unix_socket_dir" in ret.comment
        assert server.pid() == old_pid
        assert open(server.ini, "rb").read() == before
        with server.connect() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_failed_takeover_leaves_the_old_process_serving(states, pooler):
    # the new process cannot switch to another user (it is not root): -R
    # fails after its start, the old process keeps serving its clients
    assert states.configured(**_args(pooler)).result is True
    before = open(pooler.ini, "rb").read()
    old_pid = pooler.pid()
    held = pooler.connect()
    try:
        # (service_user: the readability checks as the user the old process runs as)
        ret = states.configured(restart="online", service_user="postgres", **_args(pooler, user="nobody"))
        assert ret.result is False, ret
        assert "pgbouncer -R did not take over" in ret.comment
        assert "failed to assume identity of user 'nobody'" in ret.comment
        assert f"the old process (pid {old_pid}) keeps serving" in ret.comment
        assert ret.changes.get("rolled_back", {}).get("pgbouncer") == "running the previous configuration", (
            ret
        )
        assert open(pooler.ini, "rb").read() == before
        assert pooler.pid() == old_pid
        assert held.execute("SELECT 1").fetchone()[0] == 1
        with pooler.connect() as conn:
            assert conn.execute("SELECT 2").fetchone()[0] == 2
    finally:
        held.close()
    assert states.configured(**_args(pooler)).changes == {}


@pytest.fixture
def copied_pooler(postgres_server, bench_tables):
    # pgbouncer run from a copy of the binary, which the test can upgrade
    with service_root("pgbouncer-binary") as root:
        directory = os.path.join(root, "pgb")
        bindir = os.path.join(root, "bin")
        os.makedirs(bindir)
        os.chmod(bindir, 0o755)
        binary = os.path.join(bindir, "pgbouncer")
        shutil.copy2(PGBOUNCER, binary)
        extra = {"unix_socket_dir": directory, "pool_mode": "transaction"}
        with running(PgBouncer(directory, postgres_server, extra=extra, binary=binary)) as server:
            yield server


def _upgrade(binary):
    # as dpkg installs a new version: the new file beside the old one, then
    # renamed over it (a new inode; the running process keeps the old one)
    new = binary + ".dpkg-new"
    shutil.copy2(PGBOUNCER, new)
    os.rename(new, binary)


def _exe(pid):
    st = os.stat(f"/proc/{pid}/exe")
    return st.st_dev, st.st_ino


def test_binary_replaced_on_disk_is_restarted_online(states, copied_pooler):
    server = copied_pooler
    assert states.configured(**_args(server)).result is True  # the file as the state writes it
    assert states.configured(restart="online", **_args(server)).changes == {}  # the binary is current
    old_pid = server.pid()
    version = re.search(
        r"PgBouncer (\S+)", subprocess.run([PGBOUNCER, "--version"], capture_output=True, text=True).stdout
    )
    held = server.connect()
    try:
        assert held.execute("SELECT 1").fetchone()[0] == 1
        _upgrade(server.binary)
        assert os.readlink(f"/proc/{old_pid}/exe").endswith(" (deleted)")
        # the default (restart: false) names it and changes nothing
        quiet = states.configured(**_args(server))
        assert quiet.result is True and quiet.changes == {}, quiet
        note = f"pgbouncer (pid {old_pid}) still runs the binary that was replaced on disk at {server.binary}"
        assert note in quiet.comment and any(note in warning for warning in quiet.warnings)
        dry = states.configured(test=True, restart="online", **_args(server))
        assert dry.result is None
        expected = {"path": server.binary, "old": version.group(1), "new": version.group(1)}
        assert dry.changes == {"binary": expected}, dry.changes
        assert dry.comment == (
            f"{server.ini} unchanged; would restart pgbouncer online (pgbouncer -R) for its new binary {server.binary}"
        )
        assert server.pid() == old_pid
        ret = states.configured(restart="online", **_args(server))
        assert ret.result is True, ret
        assert ret.changes["restarted"] == "online" and ret.changes["binary"] == expected
        new_pid = server.pid()
        assert new_pid != old_pid and ret.changes["new_pid"] == new_pid
        assert f"{server.ini} unchanged; restarted online (pgbouncer -R) for its new binary" in ret.comment
        # the new process runs the new file; the client held across the takeover still works
        st = os.stat(server.binary)
        assert _exe(new_pid) == (st.st_dev, st.st_ino)
        assert held.execute("SELECT 2").fetchone()[0] == 2
        with server.console() as conn:
            assert conn.execute("SHOW VERSION").fetchone()[0].startswith("PgBouncer")
    finally:
        held.close()
    again = states.configured(restart="online", **_args(server))
    assert again.result is True and again.changes == {}, again
    assert server.pid() == new_pid
