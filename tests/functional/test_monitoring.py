"""
monitoring through Salt's own loaders, in process, against a real Prometheus
(tests/support/prometheus.py): the rules state writes the file, promtool
checks it and Prometheus reloads it; a file promtool refuses is put back and
Prometheus is not reloaded; textfile metrics land atomically where a real
node_exporter reads them.
"""

import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.asset_api import REPO_ROOT
from tests.support.loaders import make_loaders
from tests.support.procs import wait_for
from tests.support.prometheus import node_exporter, prometheus_server

ALERT_COUNT = 8
BAD_RULES = "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: sum((\n"


@pytest.fixture
def loaders(tmp_path, prometheus_server):
    monitoring = {
        "rules": {"path": prometheus_server.rules_file, "reload_url": prometheus_server.reload_url},
        "textfile": {"directory": str(tmp_path / "textfile"), "collectors": ["vmtune"]},
    }
    os.makedirs(tmp_path / "textfile")
    policy = {"policy": {"allowed_paths": [prometheus_server.root, str(tmp_path)]}}
    return make_loaders(tmp_path / "salt", monitoring=monitoring, opsalt=policy)


def _repo_rules():
    with open(os.path.join(REPO_ROOT, "prometheus", "opsalt.rules.yml"), encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.parametrize("test", [True, False])
def test_rules_managed_writes_checks_and_reloads(loaders, prometheus_server, test):
    state = loaders.states.monitoring.rules_managed
    loaded_before = prometheus_server.reload_count()
    ret = state(prometheus_server.rules_file, test=test)
    if test:
        assert ret.result is None
        assert "+      - alert: OpsaltHighLoadPerCpu" in ret.changes["diff"]
        assert not os.path.exists(prometheus_server.rules_file)
        assert prometheus_server.reload_count() == loaded_before
        return
    assert ret.result is True, ret.comment
    assert "promtool check rules passed" in ret.comment
    with open(prometheus_server.rules_file, encoding="utf-8") as handle:
        assert handle.read() == _repo_rules()
    names = wait_for(
        lambda: len(prometheus_server.alert_names()) == ALERT_COUNT and prometheus_server.alert_names()
    )
    assert "OpsaltRedisAofFsyncStall" in names
    again = state(prometheus_server.rules_file)
    assert again.result is True and again.changes == {}
    assert "Already as wanted" in again.comment


def test_rules_refused_by_promtool_put_the_old_file_back(loaders, prometheus_server):
    module = loaders.modules.monitoring
    module.apply_rules()
    wait_for(lambda: len(prometheus_server.alert_names()) == ALERT_COUNT)
    with open(prometheus_server.rules_file, "rb") as handle:
        good = handle.read()
    loaded = prometheus_server.reload_count()
    with pytest.raises(
        CommandExecutionError, match="promtool check rules refused.*old file is back.*not reloaded"
    ):
        module.apply_rules(text=BAD_RULES)
    with open(prometheus_server.rules_file, "rb") as handle:
        assert handle.read() == good
    assert prometheus_server.reload_count() == loaded
    assert len(prometheus_server.alert_names()) == ALERT_COUNT


def test_rules_refused_on_a_fresh_host_leave_no_file(loaders, prometheus_server):
    with pytest.raises(CommandExecutionError, match="promtool check rules refused"):
        loaders.modules.monitoring.apply_rules(text=BAD_RULES)
    assert not os.path.exists(prometheus_server.rules_file)
    assert prometheus_server.alert_names() == []


def test_pillar_thresholds_and_for_reach_prometheus(tmp_path, prometheus_server):
    monitoring = {
        "rules": {
            "path": prometheus_server.rules_file,
            "reload_url": prometheus_server.reload_url,
            "thresholds": {"load_per_cpu": 0.95},
            "for": {"OpsaltHighLoadPerCpu": "3s"},
        }
    }
    policy = {"policy": {"allowed_paths": [prometheus_server.root]}}
    module = make_loaders(tmp_path, monitoring=monitoring, opsalt=policy).modules.monitoring
    module.apply_rules()

    def load_rule():
        return [rule for rule in prometheus_server.rules() if rule["name"] == "OpsaltHighLoadPerCpu"]

    rule = wait_for(load_rule)[0]
    assert rule["duration"] == 3
    assert rule["query"].endswith("> 0.95")


@pytest.mark.parametrize(
    "monitoring, match",
    [
        ({"rules": {"path": "/etc/passwd"}}, "outside the allowed paths"),
        ({"rules": {"path": "relative/x.yml"}}, "monitoring:rules:path"),
        ({"rules": {"reload_url": "http://198.51.100.1:9090/-/reload"}}, "loopback Prometheus reload URL"),
        ({"rules": {"thresholds": {"load_per_cpu": "1\n- alert: X"}}}, "load_per_cpu.*not a number"),
    ],
)
def test_bad_pillar_changes_nothing(tmp_path, monitoring, match):
    loaders = make_loaders(tmp_path, monitoring=monitoring)
    with pytest.raises(SaltInvocationError, match=match):
        loaders.modules.monitoring.plan_rules()
    ret = loaders.states.monitoring.rules_managed(
        monitoring["rules"].get("path", "/etc/prometheus/rules/x.yml")
    )
    assert ret.result is False and ret.changes == {}
    assert "Nothing changed" in ret.comment


def test_textfile_metrics_reach_a_real_node_exporter(loaders, tmp_path):
    directory = tmp_path / "textfile"
    path = loaders.modules.monitoring.write_textfile()
    assert path == str(directory / "opsalt_host.prom")
    assert sorted(os.listdir(directory)) == ["opsalt_host.prom"]  # no temp file left
    exporter = node_exporter(["--collector.textfile"], str(directory)).start()
    try:
        text = exporter.metrics()
    finally:
        exporter.stop()
    assert 'opsalt_monitoring_collector_up{collector="vmtune"} 1' in text
    assert "opsalt_vmtune_watermark_gap_kib{" in text
    assert 'opsalt_vmtune_min_free_kbytes{kind="current"}' in text
    # node_exporter 1.5 labels the file with its full path (the rule accepts both).
    assert f'node_textfile_mtime_seconds{{file="{directory}/opsalt_host.prom"}}' in text
    assert "node_textfile_scrape_error 0" in text


@pytest.mark.parametrize(("keep", "backups"), [(None, 3), (1, 1)])
def test_rules_backups_follow_opsalt_backups_keep(tmp_path, keep, backups):
    rules = tmp_path / "rules" / "opsalt.rules.yml"
    opsalt = {"policy": {"allowed_paths": [str(tmp_path)]}}
    if keep is not None:
        opsalt["backups"] = {"keep": keep}
    module = make_loaders(tmp_path / "salt", monitoring={"rules": {"path": str(rules)}}, opsalt=opsalt)
    for number in range(5):
        module.modules.monitoring.apply_rules(text=f"{_repo_rules()}# revision {number}\n")
    assert rules.read_text().endswith("# revision 4\n")
    assert len([name for name in os.listdir(rules.parent) if name != rules.name]) == backups
