"""
monitoring through the real salt-master and salt-minion: pillar from the
demo asset API (ops_http_json), the SLS tree from the master's file_roots,
a real Prometheus (tests/support/prometheus.py) reloaded by the state, a
real node_exporter reading the textfile the minion writes, and the master's
own pillar fetch counts in that textfile.
"""

import os
import re
import shutil
import sys
import tempfile

import pytest
import yaml

from tests.support.asset_api import REPO_ROOT
from tests.support.procs import wait_for
from tests.support.prometheus import Prometheus, node_exporter

sys.path.insert(0, os.path.join(REPO_ROOT, "_utils"))
import opsalt_monitoring

SECRET = "mon-Redis-pw-5f3a"


@pytest.fixture
def sandbox():
    root = tempfile.mkdtemp(prefix="opsalt-monitoring-it-")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def operator_policy(salt_minion, sandbox):
    """The minion's opsalt:policy allows the sandbox (a minion.d file, never pillar)."""
    directory = os.path.join(os.path.dirname(salt_minion.config_file), "minion.d")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "opsalt-monitoring-policy.conf")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"opsalt": {"policy": {"monitoring": {"allowed_paths": [sandbox]}}}}, handle)
    try:
        yield path
    finally:
        os.unlink(path)


@pytest.fixture
def prometheus(sandbox):
    server = Prometheus(rules_file=os.path.join(sandbox, "prometheus", "rules", "opsalt.rules.yml"))
    try:
        yield server.start()
    finally:
        server.cleanup()


def _pillar(sandbox, prometheus):
    return {
        "node_exporter": {
            "install": False,  # installed by scripts/install-system-deps; no apt run in tests
            "run_service": False,  # no init system here: the test runs node_exporter itself
            "defaults_file": os.path.join(sandbox, "default", "prometheus-node-exporter"),
            "listen_address": "127.0.0.1:9100",
        },
        "redis_exporter": {"config_dir": os.path.join(sandbox, "redis_exporter"), "run_service": False},
        "textfile": {
            "directory": os.path.join(sandbox, "textfile"),
            "interval": 300,
            "collectors": ["vmtune"],
        },
        "prometheus": {
            "enabled": True,
            "file_sd": os.path.join(sandbox, "prometheus", "file_sd", "opsalt.json"),
        },
        "rules": {"path": prometheus.rules_file, "reload_url": prometheus.reload_url},
        "scrape": {"targets": {"node": ["127.0.0.1:9100"]}},
    }


def _states(ret):
    assert isinstance(ret.data, dict), ret
    return {state["__id__"]: state for state in ret.data.values()}


def test_state_apply_from_the_asset_api_then_no_changes(
    salt_call_cli, set_pillar, operator_policy, sandbox, prometheus
):
    set_pillar("monitoring", _pillar(sandbox, prometheus))
    # One redis_aof instance, so one redis_exporter environment file (the
    # password read by the state at run time, never in SLS text).
    set_pillar("redis_aof", {"instances": {"cache": {"host": "127.0.0.1", "port": 6390, "password": SECRET}}})
    try:
        dry = _states(salt_call_cli.run("state.apply", "monitoring", test=True))
        assert dry["monitoring-prometheus-rules-file-managed"]["result"] is None
        assert not os.path.exists(prometheus.rules_file)

        first = _states(salt_call_cli.run("state.apply", "monitoring"))
        assert all(state["result"] is True for state in first.values()), first
        assert first["monitoring-prometheus-rules-file-managed"]["changes"]
        with open(prometheus.rules_file, encoding="utf-8") as handle:
            deployed = handle.read()
        with open(os.path.join(REPO_ROOT, "prometheus", "opsalt.rules.yml"), encoding="utf-8") as handle:
            assert deployed == handle.read()
        wait_for(lambda: len(prometheus.alert_names()) == 8, what="8 opsalt alerts loaded")
        with open(os.path.join(sandbox, "default", "prometheus-node-exporter"), encoding="utf-8") as handle:
            assert "pgscan_direct" in handle.read()

        env_file = os.path.join(sandbox, "redis_exporter", "cache.env")
        assert os.stat(env_file).st_mode & 0o777 == 0o600
        with open(env_file, encoding="utf-8") as handle:
            assert f'REDIS_PASSWORD="{SECRET}"' in handle.read()
        assert SECRET not in str(first)

        second = _states(salt_call_cli.run("state.apply", "monitoring"))
        changed = {sid: state["changes"] for sid, state in second.items() if state["changes"]}
        assert changed == {}
        assert all(state["result"] is True for state in second.values()), second

        schedule = salt_call_cli.run("schedule.list", return_yaml=False)
        assert "opsalt-monitoring-textfile" in schedule.data, schedule
        assert schedule.data["opsalt-monitoring-textfile"]["function"] == "monitoring.write_textfile"
    finally:
        salt_call_cli.run("state.apply", "monitoring.clean")
        set_pillar("monitoring", None)
        set_pillar("redis_aof", None)
    assert not os.path.exists(prometheus.rules_file)
    assert not os.path.exists(os.path.join(sandbox, "redis_exporter"))


def test_textfile_written_by_the_minion_reaches_node_exporter(
    salt_call_cli, set_pillar, operator_policy, sandbox, prometheus
):
    set_pillar("monitoring", _pillar(sandbox, prometheus))
    os.makedirs(os.path.join(sandbox, "textfile"))
    try:
        ret = salt_call_cli.run("monitoring.write_textfile")
        assert ret.returncode == 0, ret
        assert ret.data == os.path.join(sandbox, "textfile", "opsalt_host.prom")
    finally:
        set_pillar("monitoring", None)
    exporter = node_exporter(["--collector.textfile"], os.path.join(sandbox, "textfile")).start()
    try:
        text = exporter.metrics()
    finally:
        exporter.stop()
    assert 'opsalt_monitoring_collector_up{collector="vmtune"} 1' in text
    assert "opsalt_vmtune_watermark_gap_kib{" in text


def test_rules_refused_by_promtool_leave_the_old_file_and_prometheus(
    salt_call_cli, set_pillar, operator_policy, sandbox, prometheus
):
    set_pillar("monitoring", _pillar(sandbox, prometheus))
    try:
        assert salt_call_cli.run("monitoring.apply_rules").returncode == 0
        wait_for(lambda: len(prometheus.alert_names()) == 8)
        with open(prometheus.rules_file, "rb") as handle:
            good = handle.read()
        loaded = prometheus.reload_count()
        # One line: Salt's CLI reads a kwarg with a line break as a positional argument.
        ret = salt_call_cli.run("monitoring.apply_rules", "text=this is not a rules file")
        assert ret.returncode != 0
        assert "old file is back" in str(ret.stdout) + str(ret.stderr)
        with open(prometheus.rules_file, "rb") as handle:
            assert handle.read() == good
        assert prometheus.reload_count() == loaded
        assert len(prometheus.alert_names()) == 8
    finally:
        set_pillar("monitoring", None)


def _pillar_counts(master_cachedir):
    store = opsalt_monitoring.PillarMetricsStore(opsalt_monitoring.pillar_store_dir(master_cachedir))
    return store.snapshot()["fetch_total"]


def test_the_masters_pillar_fetches_reach_the_textfile(
    salt_master, salt_minion, salt_call_cli, salt_run_cli, set_pillar, operator_policy, sandbox, asset_api
):
    """
    The real master's ext_pillar (in its worker processes) counts every
    pillar it serves; the minion on the master's host writes them out with
    the ``master`` collector. This master has ``on_error: fail``, so an API
    failure is an ``error`` (the stale serve is in
    tests/functional/test_monitoring_metrics.py).
    """
    master_cachedir = salt_master.config["cachedir"]
    textfile = os.path.join(sandbox, "textfile")
    os.makedirs(textfile)
    set_pillar(
        "monitoring",
        {"textfile": {"directory": textfile, "master_cachedir": master_cachedir, "collectors": ["master"]}},
    )
    try:
        before = _pillar_counts(master_cachedir)
        assert before["ok"] >= 1  # at least set_pillar's refresh, after the document changed
        assert salt_call_cli.run("pillar.items").returncode == 0
        unchanged = _pillar_counts(master_cachedir)
        assert unchanged["not_modified"] > before["not_modified"]  # the same document: a 304
        asset_api.control(sticky="status:500")
        try:
            ret = salt_call_cli.run("pillar.items", "unmask=True")
            assert "HTTP 500" in " ".join(ret.data["_errors"]), ret
        finally:
            asset_api.control(sticky=None, faults=[])
            ret = salt_run_cli.run("ops_http_json.fetch", salt_minion.id, "bypass_breaker=True")
            assert ret.data["ok"] is True, ret
        failed = _pillar_counts(master_cachedir)
        assert failed["error"] > unchanged["error"]
        ret = salt_call_cli.run("monitoring.write_textfile")
        assert ret.returncode == 0, ret
        with open(ret.data, encoding="utf-8") as handle:
            text = handle.read()
    finally:
        set_pillar("monitoring", None)
    written = {
        result: int(value)
        for result, value in re.findall(
            r'^opsalt_pillar_fetch_total\{result="([a-z_]+)"\} (\d+)$', text, re.M
        )
    }
    after = _pillar_counts(master_cachedir)
    # Written after the failure, read back before any later fetch was counted.
    for result in opsalt_monitoring.PILLAR_RESULTS:
        assert failed[result] <= written[result] <= after[result], (result, failed, written, after)
    assert 'opsalt_monitoring_collector_up{collector="master"} 1' in text
    assert "opsalt_pillar_last_success_timestamp_seconds " in text
