"""
pgbouncer monitoring on real processes (tests/support/postgres.py,
tests/support/prometheus.py): Debian's prometheus-pgbouncer-exporter 1.7
against pgbouncer 1.18, and opsalt's textfile fallback from
``pgbouncer.health``, scraped by a real node_exporter and Prometheus until
``OpsaltPgbouncerClientsWaiting`` fires for a pool of size 1 that one client
holds while a second one waits.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

from tests.support.asset_api import REPO_ROOT
from tests.support.loaders import make_loaders
from tests.support.postgres import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    PgBouncer,
    postgres_server,
    running,
    service_root,
)
from tests.support.procs import free_port, port_open, stop_popen, wait_for
from tests.support.prometheus import Prometheus, node_exporter

sys.path.insert(0, os.path.join(REPO_ROOT, "_utils"))
import opsalt_monitoring

PGBOUNCER_EXPORTER = shutil.which("prometheus-pgbouncer-exporter") or "/usr/bin/prometheus-pgbouncer-exporter"


@pytest.fixture
def small_pool(postgres_server):
    """A pgbouncer whose appdb pool has one server connection (transaction pooling)."""
    extra = {"pool_mode": "transaction", "default_pool_size": 1}
    with (
        service_root("pgb-monitoring") as root,
        running(PgBouncer(os.path.join(root, "pgb"), postgres_server, extra=extra)) as server,
    ):
        yield server


def _hold_and_wait(server):
    """
    One client holds the only server connection in an open transaction; a
    second client's query waits for it. Returns (release, waiter thread).
    """
    holder = server.connect()
    holder.execute("BEGIN")
    holder.execute("SELECT 1")
    release = threading.Event()

    def second_client():
        with server.connect() as other:
            other.execute("SELECT 1")

    waiter = threading.Thread(target=second_client, daemon=True)
    waiter.start()

    def finish():
        holder.execute("COMMIT")
        holder.close()
        waiter.join(30)
        release.set()

    return finish, waiter


def test_debian_exporter_1_7_cannot_read_pgbouncer_1_18_stats(small_pool, tmp_path):
    # The admin password reaches the exporter (libpq) through a 0600 pgpass
    # file, never the command line; the exporter listens on loopback only.
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{small_pool.port}:pgbouncer:{ADMIN_USER}:{ADMIN_PASSWORD}\n")
    os.chmod(pgpass, 0o600)
    port = free_port()
    argv = [
        PGBOUNCER_EXPORTER,
        "--host=127.0.0.1",
        f"--port={port}",
        "--pgbouncer-host=127.0.0.1",
        f"--pgbouncer-port={small_pool.port}",
        f"--pgbouncer-user={ADMIN_USER}",
    ]
    assert not any(ADMIN_PASSWORD in arg for arg in argv)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSFILE": str(pgpass)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _out, stderr = proc.communicate(timeout=60)
    finally:
        stop_popen(proc)
    stderr = stderr.decode("utf-8", "replace")
    # It logs in (the pgpass file works) and then dies at start-up: its
    # collector reads SHOW STATS column total_requests, which pgbouncer 1.8
    # renamed total_query_count. So opsalt exports pool figures itself.
    assert proc.returncode != 0
    assert "KeyError: 'total_requests'" in stderr
    assert "password authentication failed" not in stderr
    assert not port_open(port)


def test_pool_waits_reach_prometheus_through_opsalt_textfile(small_pool, tmp_path):
    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    monitoring = {"textfile": {"directory": str(textfile_dir), "collectors": ["pgbouncer"]}}
    loaders = make_loaders(
        tmp_path / "salt",
        monitoring=monitoring,
        pgbouncer={"admin": small_pool.admin},
        opsalt={"policy": {"allowed_paths": [str(tmp_path)]}},
    )
    exporter = node_exporter(["--collector.textfile"], str(textfile_dir))
    rules_file = tmp_path / "opsalt.rules.yml"
    rules_file.write_text(opsalt_monitoring.render_rules(durations={"OpsaltPgbouncerClientsWaiting": "2s"}))
    prometheus = Prometheus(rules_file=str(rules_file))
    finish, _waiter = _hold_and_wait(small_pool)
    try:
        text = wait_for(
            lambda: (
                (t := loaders.modules.monitoring.textfile_metrics())
                and 'opsalt_pgbouncer_clients_waiting{database="appdb",pgbouncer="main",user="app_md5"} 1'
                in t
                and t
            ),
            timeout=20,
            what="a waiting client in pgbouncer.health",
        )
        assert 'opsalt_monitoring_collector_up{collector="pgbouncer"} 1' in text
        loaders.modules.monitoring.write_textfile(text=text)
        exporter.start()
        prometheus.targets = {"node": [exporter.address]}
        prometheus.start()

        def firing():
            return [
                alert
                for alert in prometheus.alerts()
                if alert["labels"]["alertname"] == "OpsaltPgbouncerClientsWaiting"
                and alert["state"] == "firing"
            ]

        alert = wait_for(firing, timeout=60, interval=0.5, what="OpsaltPgbouncerClientsWaiting firing")[0]
        assert alert["labels"]["database"] == "appdb"
        assert alert["labels"]["severity"] == "warning"
        assert "pgbouncer.health" in alert["annotations"]["description"]
    finally:
        finish()
        prometheus.cleanup()
        exporter.stop()
    after = loaders.modules.monitoring.textfile_metrics()
    assert 'opsalt_pgbouncer_clients_waiting{database="appdb",pgbouncer="main",user="app_md5"} 0' in after
