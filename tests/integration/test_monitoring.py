"""
monitoring through the real salt-master and salt-minion: pillar from the
demo asset API (ops_http_json), the SLS tree from the master's file_roots,
a real Prometheus (tests/support/prometheus.py) reloaded by the state, a
real node_exporter started with exactly the flags the state wrote (reading
the textfile the minion writes), Prometheus discovering it through the
file_sd file the state wrote, and the master's own pillar fetch counts in
that textfile.
"""

import os
import re
import shutil
import sys
import tempfile

import pytest
import yaml

from tests.support.asset_api import REPO_ROOT
from tests.support.procs import free_port, wait_for
from tests.support.prometheus import Prometheus, node_exporter_from_defaults

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


def _pillar(sandbox, prometheus=None, node_address="127.0.0.1:9100"):
    rules = {"path": os.path.join(sandbox, "prometheus", "rules", "opsalt.rules.yml")}
    if prometheus is not None:
        rules = {"path": prometheus.rules_file, "reload_url": prometheus.reload_url}
    return {
        "node_exporter": {
            "install": False,  # installed by scripts/install-system-deps; no apt run in tests
            "run_service": False,  # no init system here: the test runs node_exporter itself
            "defaults_file": os.path.join(sandbox, "default", "prometheus-node-exporter"),
            "listen_address": node_address,
        },
        "redis_exporter": {
            "config_dir": os.path.join(sandbox, "redis_exporter"),
            "install": False,
            "run_service": False,
        },
        "textfile": {
            "directory": os.path.join(sandbox, "textfile"),
            "interval": 300,
            "collectors": ["vmtune"],
        },
        "prometheus": {
            "enabled": True,
            "file_sd": os.path.join(sandbox, "prometheus", "file_sd", "opsalt.json"),
        },
        "rules": rules,
        "scrape": {"targets": {"node": [node_address]}},
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


def _metric_names(text):
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def _proc_vmstat_fields():
    with open("/proc/vmstat", encoding="utf-8") as handle:
        return [line.split()[0] for line in handle if line.strip()]


def _proc_zones():
    """(node, zone) of every zone in /proc/zoneinfo, populated or not."""
    with open("/proc/zoneinfo", encoding="utf-8") as handle:
        return re.findall(r"^Node (\d+), zone +(\S+)$", handle.read(), re.M)


# allocstall is split per zone since Linux 4.10; Normal and Movable are in
# every configuration (DMA, DMA32 and Device depend on the kernel's config).
RECLAIM_SERIES = {
    "node_vmstat_allocstall_normal",
    "node_vmstat_allocstall_movable",
    "node_vmstat_pgscan_direct",
    "node_vmstat_pgsteal_direct",
    "node_vmstat_compact_stall",
}


def _apply(salt_call_cli, sls):
    states = _states(salt_call_cli.run("state.apply", sls))
    assert all(state["result"] is True for state in states.values()), states
    return states


def test_node_exporter_started_with_the_rendered_flags_exports_reclaim_zoneinfo_and_textfile(
    salt_call_cli, set_pillar, operator_policy, sandbox
):
    """
    The state writes Debian's defaults file; node_exporter runs with exactly
    its ``ARGS`` (as the packaged unit would); the series the reclaim alert
    and ``vmtune`` read are there, and so is the textfile the minion writes.
    """
    address = f"127.0.0.1:{free_port()}"
    defaults_file = os.path.join(sandbox, "default", "prometheus-node-exporter")
    set_pillar("monitoring", _pillar(sandbox, node_address=address))
    try:
        _apply(salt_call_cli, "monitoring.node_exporter")
        wanted = salt_call_cli.run("monitoring.node_exporter_args")
        assert wanted.returncode == 0, wanted
        ret = salt_call_cli.run("monitoring.write_textfile")
        assert ret.returncode == 0, ret
        assert ret.data == os.path.join(sandbox, "textfile", "opsalt_host.prom")
    finally:
        set_pillar("monitoring", None)
    exporter = node_exporter_from_defaults(defaults_file)
    assert exporter.argv[1:] == wanted.data
    try:
        text = exporter.start().metrics()
    finally:
        exporter.stop()
    names = _metric_names(text)

    assert RECLAIM_SERIES <= names, sorted(RECLAIM_SERIES - names)
    # Every /proc/vmstat field the rendered --collector.vmstat.fields selects.
    fields = next(arg for arg in wanted.data if arg.startswith("--collector.vmstat.fields="))
    selected = re.compile(fields.split("=", 1)[1])
    expected = {f"node_vmstat_{field}" for field in _proc_vmstat_fields() if selected.match(field)}
    assert {name for name in expected if name.startswith("node_vmstat_allocstall_")}
    assert expected <= names, sorted(expected - names)

    zones = _proc_zones()
    assert zones
    for node, zone in zones:
        for watermark in ("min", "low", "high"):
            assert f'node_zoneinfo_{watermark}_pages{{node="{node}",zone="{zone}"}} ' in text, (node, zone)

    prom = os.path.join(sandbox, "textfile", "opsalt_host.prom")
    assert f'node_textfile_mtime_seconds{{file="{prom}"}} ' in text
    assert "node_textfile_scrape_error 0" in text
    assert 'opsalt_monitoring_collector_up{collector="vmtune"} 1' in text
    assert "opsalt_vmtune_watermark_gap_kib{" in text


def _discovered(server, address):
    return [
        target
        for target in server.active_targets()
        if target["scrapePool"] == "opsalt_file_sd" and target["labels"]["instance"] == address
    ]


def _up(server, address, job):
    result = server.query(f'up{{job="{job}",instance="{address}"}}')
    return len(result) == 1 and result[0]["value"][1] == "1"


def test_prometheus_discovers_the_targets_of_the_file_sd_file_the_state_writes(
    salt_call_cli, set_pillar, operator_policy, sandbox
):
    """
    A Prometheus whose one scrape job reads opsalt's file_sd file (opsalt
    renders the file, the operator's prometheus.yml points at it) scrapes
    the node_exporter the state configured; a target added to the pillar
    later is discovered from the rewritten file alone, without a reload.
    """
    file_sd = _pillar(sandbox)["prometheus"]["file_sd"]
    # Prometheus watches the directory only if it exists when file SD starts
    # (else it logs "Error adding file watch" and reads the file again only
    # every refresh_interval, 5 min by default, or on a reload).
    os.makedirs(os.path.dirname(file_sd))
    server = Prometheus(
        rules_file=os.path.join(sandbox, "prometheus", "rules", "opsalt.rules.yml"),
        file_sd={"opsalt_file_sd": [file_sd]},
    )
    address = f"127.0.0.1:{free_port()}"
    pillar = _pillar(sandbox, server, node_address=address)
    exporter = None
    try:
        server.start()
        set_pillar("monitoring", pillar)
        _apply(salt_call_cli, "monitoring.node_exporter")
        exporter = node_exporter_from_defaults(pillar["node_exporter"]["defaults_file"])
        exporter.start()
        first = _apply(salt_call_cli, "monitoring.prometheus")
        assert first["monitoring-prometheus-file-sd-managed"]["changes"]

        wait_for(
            lambda: [t for t in _discovered(server, address) if t["health"] == "up"],
            timeout=30,
            interval=0.2,
            what=f"{address} discovered from {file_sd} and up",
        )
        (target,) = _discovered(server, address)
        assert target["labels"]["job"] == "node"  # the file's label, over the scrape job's name
        assert target["discoveredLabels"]["__meta_filepath"] == file_sd
        wait_for(lambda: _up(server, address, "node"), timeout=30, interval=0.2, what=f"up of {address} = 1")

        # Prometheus's own address as a second job: only the file changes
        # (the rules did not, so the state does not reload Prometheus).
        reloads = server.reload_count()
        pillar["scrape"]["targets"]["prometheus"] = [f"127.0.0.1:{server.port}"]
        set_pillar("monitoring", pillar)
        second = _apply(salt_call_cli, "monitoring.prometheus")
        changed = {sid for sid, state in second.items() if state["changes"]}
        assert changed == {"monitoring-prometheus-file-sd-managed"}, second
        own = f"127.0.0.1:{server.port}"
        wait_for(lambda: _up(server, own, "prometheus"), timeout=30, interval=0.2, what=f"up of {own} = 1")
        assert server.reload_count() == reloads
        assert _up(server, address, "node")
    finally:
        try:
            if exporter is not None:
                exporter.stop()
            server.cleanup()
        finally:
            set_pillar("monitoring", None)


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
