"""
opsalt's metrics and the Redis alert on real processes: a real redis-server
(tests/support/redis_server.py) behind a real redis_exporter, a real
node_exporter reading the textfile the module writes, and a real Prometheus
(1 s scrape and evaluation) with the rules rendered with ``for`` of a few
seconds. An AOF stall is injected through a stand-in exporter target whose
``redis_aof_delayed_fsync`` rises (a real delayed fsync needs a disk that
stalls for more than 2 s). The pillar metrics come from real fetches: Salt's
pillar compiler runs the ``ops_http_json`` ext_pillar against the demo asset
API, then with the API failing.
"""

import copy
import http.server
import json
import os
import re
import sys
import threading

import pytest
import salt.config
import salt.pillar

from tests.support.asset_api import REPO_ROOT
from tests.support.loaders import make_loaders
from tests.support.procs import free_port, wait_for
from tests.support.prometheus import REDIS_EXPORTER, Exporter, Prometheus, node_exporter, redis_exporter
from tests.support.redis_server import PASSWORD, redis_server, redis_server_pw

sys.path.insert(0, os.path.join(REPO_ROOT, "_utils"))
import opsalt_monitoring

FAST = {name: "2s" for name in opsalt_monitoring.FOR}


class StandIn:
    """A stand-in exporter target: serves ``self.text`` at /metrics."""

    def __init__(self):
        self.text = ""
        self.port = free_port()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = stand_in.text.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _alerts(prometheus, name, state=None):
    return [
        alert
        for alert in prometheus.alerts()
        if alert["labels"]["alertname"] == name and (state is None or alert["state"] == state)
    ]


def _value(prometheus, expr):
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else None


def _aof_on(server):
    # INFO persistence has aof_delayed_fsync only while AOF is on.
    with server.client() as client:
        client.config_set("appendonly", "yes")
        wait_for(lambda: "aof_delayed_fsync" in client.info("persistence"), timeout=30)


def _compile_pillar(cachedir, options, minion_id):
    """A minion's pillar, compiled the way the master does with ``cachedir``."""
    opts = salt.config.apply_master_config(
        {
            "root_dir": os.path.dirname(cachedir),
            "cachedir": cachedir,
            "file_roots": {"base": []},
            "pillar_roots": {"base": []},
            "ext_pillar": [{"ops_http_json": options}],
        },
        copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS),
    )
    return salt.pillar.Pillar(opts, {}, minion_id, "base").compile_pillar()


def _serve_every_outcome(asset_api, cachedir):
    """
    Through the ext_pillar: web01 ok then not_modified (304), db01 ok, a host
    unknown to the API missing, then with the API answering 500: db01 stale
    (its cached copy) and new01 (no copy) an error.
    """
    web01, db01, new01, gone = (f"metrics-{name}.example.com" for name in ("web01", "db01", "new01", "gone"))
    for minion in (web01, db01, new01):
        asset_api.set_document(minion, {"ops": {"host": minion}})
    asset_api.set_document(gone, None)
    options = asset_api.ext_pillar_config(retries=0)
    assert _compile_pillar(cachedir, options, web01) == {"ops": {"host": web01}}
    assert _compile_pillar(cachedir, options, web01) == {"ops": {"host": web01}}
    assert _compile_pillar(cachedir, options, db01) == {"ops": {"host": db01}}
    assert _compile_pillar(cachedir, options, gone) == {}
    asset_api.control(sticky="status:500")
    try:
        assert _compile_pillar(cachedir, options, db01) == {"ops": {"host": db01}}
        assert "HTTP 500" in " ".join(_compile_pillar(cachedir, options, new01)["_errors"])
    finally:
        asset_api.control(sticky=None, faults=[])


def _journal(mig_id, flow_state, tasks):
    return {"id": mig_id, "flow": {"state": flow_state, "tasks": tasks}}


def test_redis_aof_stall_fires_from_the_exporter_and_opsalt_metrics(redis_server, tmp_path):
    _aof_on(redis_server)
    rules_file = tmp_path / "opsalt.rules.yml"
    rules_file.write_text(opsalt_monitoring.render_rules(durations=FAST))
    exporter = redis_exporter(redis_server.instance)
    prometheus = Prometheus(rules_file=str(rules_file))
    with StandIn() as stand_in:
        stand_in.text = "redis_aof_delayed_fsync 0\n"
        try:
            exporter.start()
            assert "redis_aof_delayed_fsync 0" in exporter.metrics()  # the real exporter has the metric
            prometheus.targets = {"redis": [exporter.address], "redis_standin": [stand_in.address]}
            prometheus.start()
            wait_for(lambda: _value(prometheus, 'redis_aof_delayed_fsync{job="redis"}') == 0, timeout=30)
            wait_for(
                lambda: _value(prometheus, 'redis_aof_delayed_fsync{job="redis_standin"}') == 0, timeout=30
            )
            assert _alerts(prometheus, "OpsaltRedisAofFsyncStall") == []
            stand_in.text = "redis_aof_delayed_fsync 3\n"
            alert = wait_for(
                lambda: _alerts(prometheus, "OpsaltRedisAofFsyncStall", "firing"),
                timeout=60,
                interval=0.5,
                what="OpsaltRedisAofFsyncStall firing",
            )[0]
            assert alert["labels"]["job"] == "redis_standin"
            assert alert["annotations"]["summary"] == f"Redis AOF fsync stall on {stand_in.address}"
            assert "redis_aof.stalls" in alert["annotations"]["description"]
            # The real instance had no stall: it does not alert.
            assert all(
                a["labels"]["job"] == "redis_standin" for a in _alerts(prometheus, "OpsaltRedisAofFsyncStall")
            )
        finally:
            prometheus.cleanup()
            exporter.stop()


def test_textfile_metrics_reach_prometheus_with_their_values(redis_server, asset_api, tmp_path):
    _aof_on(redis_server)
    master = tmp_path / "master-cache"
    journals = master / "opsalt" / "v2v"
    journals.mkdir(parents=True)
    (journals / "web01.json").write_text(
        json.dumps(
            _journal(
                "web01",
                "success",
                {"copy_vda": {"state": "done", "result": {"bytes": 300 * 2**20, "seconds": 4}}},
            )
        )
    )
    (journals / "db01.json").write_text(
        json.dumps(
            _journal("db01", "running", {"copy_vda": {"state": "failed"}, "define": {"state": "done"}})
        )
    )
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    monitoring = {"textfile": {"directory": str(textfile), "master_cachedir": str(master)}}
    redis_aof = {"instances": {"cache": {"host": "127.0.0.1", "port": redis_server.port}}}
    loaders = make_loaders(
        tmp_path / "salt",
        monitoring=monitoring,
        redis_aof=redis_aof,
        opsalt={"policy": {"allowed_paths": [str(tmp_path)]}},
    )
    module = loaders.modules.monitoring
    _serve_every_outcome(asset_api, str(master))
    path = module.write_textfile(collectors=["redis_aof", "master", "vmtune"])
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    for result in ("ok", "not_modified", "stale", "error", "missing"):
        assert f'opsalt_pillar_fetch_total{{result="{result}"}} {2 if result == "ok" else 1}\n' in text
    assert "opsalt_pillar_stale_minions 1\n" in text
    assert "opsalt_pillar_fetch_duration_seconds_count 6\n" in text

    exporter = node_exporter(["--collector.textfile"], str(textfile))
    rules_file = tmp_path / "opsalt.rules.yml"
    rules_file.write_text(opsalt_monitoring.render_rules(durations=FAST))
    prometheus = Prometheus(rules_file=str(rules_file))
    try:
        exporter.start()
        prometheus.targets = {"node": [exporter.address]}
        prometheus.start()
        wait_for(lambda: _value(prometheus, "opsalt_pillar_stale_minions") is not None, timeout=30)
        assert _value(prometheus, 'opsalt_pillar_fetch_total{result="ok"}') == 2
        assert _value(prometheus, 'opsalt_pillar_fetch_total{result="not_modified"}') == 1
        assert _value(prometheus, 'opsalt_pillar_fetch_total{result="stale"}') == 1
        assert _value(prometheus, 'opsalt_pillar_fetch_total{result="error"}') == 1
        assert _value(prometheus, 'opsalt_pillar_fetch_total{result="missing"}') == 1
        assert _value(prometheus, "opsalt_pillar_stale_minions") == 1
        assert _value(prometheus, "opsalt_pillar_fetch_duration_seconds_count") == 6
        assert _value(prometheus, 'opsalt_pillar_fetch_duration_seconds_bucket{le="+Inf"}') == 6
        assert _value(prometheus, "opsalt_pillar_fetch_duration_seconds_sum") > 0
        assert _value(prometheus, "opsalt_pillar_last_success_timestamp_seconds") > 1.7e9
        assert _value(prometheus, 'opsalt_v2v_migration_state{migration="web01",state="success"}') == 1
        assert _value(prometheus, 'opsalt_v2v_migration_state{migration="db01",state="failed"}') == 1
        assert _value(prometheus, 'opsalt_v2v_migration_state{migration="db01",state="success"}') == 0
        assert _value(prometheus, 'opsalt_v2v_copy_mib_per_second{migration="web01",disk="copy_vda"}') == 75
        assert _value(prometheus, 'opsalt_redis_aof_fsync_stalls_total{redis_instance="cache"}') == 0
        assert _value(prometheus, 'opsalt_monitoring_collector_up{collector="vmtune"}') == 1
        assert _value(prometheus, "min(opsalt_vmtune_watermark_gap_kib)") > 0
        # The alerts these metrics drive fire with the rules' short `for`.
        wait_for(lambda: _alerts(prometheus, "OpsaltPillarStale", "firing"), timeout=60, interval=0.5)
        v2v = wait_for(
            lambda: _alerts(prometheus, "OpsaltV2vMigrationFailed", "firing"), timeout=60, interval=0.5
        )
        assert [a["labels"]["migration"] for a in v2v] == ["db01"]
    finally:
        prometheus.cleanup()
        exporter.stop()


@pytest.mark.parametrize("collector", ["nosuch", "vmtune\nx"])
def test_unknown_collectors_are_refused(tmp_path, collector):
    from salt.exceptions import SaltInvocationError

    loaders = make_loaders(tmp_path / "salt", monitoring={"textfile": {"directory": str(tmp_path)}})
    with pytest.raises(SaltInvocationError, match="unknown"):
        loaders.modules.monitoring.textfile_metrics(collectors=[collector])


def _env_file(path):
    env = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                key, _, value = line.rstrip("\n").partition("=")
                env[key] = value.strip('"')
    return env


@pytest.mark.parametrize("test", [True, False])
def test_redis_exporter_per_instance_reads_its_password_from_a_0600_file(redis_server_pw, tmp_path, test):
    config_dir = tmp_path / "redis_exporter"
    port = free_port()
    redis_aof = {"instances": {"sessions": {"instance": redis_server_pw.instance, "password": PASSWORD}}}
    loaders = make_loaders(
        tmp_path / "salt",
        monitoring={"redis_exporter": {"config_dir": str(config_dir), "ports": {"sessions": port}}},
        redis_aof=redis_aof,
        opsalt={"policy": {"allowed_paths": [str(tmp_path)]}},
    )
    ret = loaders.states.monitoring.redis_exporters_managed("redis_exporter environment files", test=test)
    path = config_dir / "sessions.env"
    assert ret.changes == {"files": [str(path)]}
    assert PASSWORD not in str(ret.changes) + ret.comment
    if test:
        assert ret.result is None and not path.exists()
        return
    assert ret.result is True
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert loaders.states.monitoring.redis_exporters_managed("again").changes == {}
    env = _env_file(path)
    assert env["REDIS_PASSWORD"] == PASSWORD
    assert env["REDIS_EXPORTER_WEB_LISTEN_ADDRESS"] == f"127.0.0.1:{port}"
    # The exporter as its unit starts it: no arguments, everything from the environment.
    exporter = Exporter(
        [REDIS_EXPORTER], port, env={"PATH": os.environ.get("PATH", "/usr/bin"), **env}
    ).start()
    try:
        with open(f"/proc/{exporter.proc.pid}/cmdline", "rb") as handle:
            assert PASSWORD.encode() not in handle.read()
        assert "redis_up 1" in exporter.metrics()
    finally:
        exporter.stop()


@pytest.mark.parametrize(
    "instances, ports, match",
    [
        ({"bad\nname": {"port": 1}}, {}, "redis_aof:instances"),
        (
            {"cache": {"password": 'pw"\nREDIS_ADDR=redis://evil:1'}},
            {},
            "password: \\(a secret, not shown\\)",
        ),
        ({"cache": {"port": 6379}}, {"cache": "9121 -x"}, "is not a port"),
    ],
)
def test_redis_exporter_files_refuse_bad_pillar(tmp_path, instances, ports, match):
    loaders = make_loaders(
        tmp_path / "salt",
        monitoring={"redis_exporter": {"config_dir": str(tmp_path / "re"), "ports": ports}},
        redis_aof={"instances": instances},
        opsalt={"policy": {"allowed_paths": [str(tmp_path)]}},
    )
    ret = loaders.states.monitoring.redis_exporters_managed("x")
    assert ret.result is False and ret.changes == {}
    assert re.search(match, ret.comment), ret.comment
    assert "REDIS_ADDR=redis://evil" not in ret.comment
    assert not (tmp_path / "re").exists()
