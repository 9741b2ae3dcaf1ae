"""
salt/monitoring through Salt's own state compiler: what the SLS renders
from the pillar (fixed state IDs, pillar only through validated module
functions and ``| json``), and the Prometheus part applied against a real
Prometheus: with no thresholds in the pillar the deployed file is exactly
prometheus/opsalt.rules.yml, and a second run changes nothing.
"""

import os

import pytest

from tests.support.asset_api import REPO_ROOT
from tests.support.loaders import make_loaders
from tests.support.procs import wait_for
from tests.support.prometheus import prometheus_server

STATE_IDS = {
    "monitoring-node-exporter-package-installed",
    "monitoring-node-exporter-textfile-directory-managed",
    "monitoring-node-exporter-config-file-managed",
    "monitoring-node-exporter-service-running",
    "monitoring-textfile-schedule-present",
    "monitoring-redis-exporter-not-managed",
    "monitoring-prometheus-file-sd-managed",
    "monitoring-prometheus-rules-file-managed",
}


@pytest.fixture
def loaders(tmp_path):
    policy = {"policy": {"allowed_paths": [str(tmp_path)]}}
    return make_loaders(
        tmp_path / "minion", file_roots={"base": [f"{REPO_ROOT}/salt"]}, id="monitoring-sls", opsalt=policy
    )


def _args(rendered, state_id):
    chunk = rendered[state_id]
    module = next(key for key in chunk if not key.startswith("__"))
    return {k: v for item in chunk[module] if isinstance(item, dict) for k, v in item.items()}


def _pillar(tmp_path, **prometheus):
    return {
        "monitoring": {
            "node_exporter": {"defaults_file": str(tmp_path / "default" / "prometheus-node-exporter")},
            "textfile": {"directory": str(tmp_path / "textfile"), "interval": 30},
            "prometheus": {
                "enabled": True,
                "file_sd": str(tmp_path / "file_sd" / "opsalt.json"),
                **prometheus,
            },
            "rules": {"path": str(tmp_path / "rules" / "opsalt.rules.yml")},
            "scrape": {"targets": {"node": ["db1.example:9100", "127.0.0.1:9100"]}},
        }
    }


def test_no_monitoring_key_manages_nothing(loaders):
    rendered = loaders.modules.state.show_sls("monitoring", pillar={"other": 1})
    assert list(rendered) == ["monitoring-pillar-absent-nothing-managed"]


def test_sls_renders_fixed_ids_and_the_exporter_flags(loaders, tmp_path):
    rendered = loaders.modules.state.show_sls("monitoring", pillar=_pillar(tmp_path))
    assert isinstance(rendered, dict), rendered
    assert set(rendered) == STATE_IDS
    flags = _args(rendered, "monitoring-node-exporter-config-file-managed")["contents"]
    for field in ("allocstall", "pgscan_direct", "pgsteal_direct", "compact_stall"):
        assert field in flags
    assert "--collector.zoneinfo" in flags
    assert f"--collector.textfile.directory={tmp_path}/textfile" in flags
    assert _args(rendered, "monitoring-textfile-schedule-present")["seconds"] == 30
    assert _args(rendered, "monitoring-textfile-schedule-present")["function"] == "monitoring.write_textfile"
    file_sd = _args(rendered, "monitoring-prometheus-file-sd-managed")["contents"]
    assert '"db1.example:9100"' in file_sd and '"job": "node"' in file_sd


@pytest.mark.parametrize(
    "section, value, match",
    [
        ("scrape", {"targets": {"node\n  cmd.run:\n    - name: touch /tmp/x": ["a:1"]}}, "job"),
        ("scrape", {"targets": {"node": ["a:1\n- b:2"]}}, "is not host:port"),
        ("textfile", {"interval": "30\n  cmd.run: x"}, "interval"),
        ("textfile", {"directory": "/etc/cron.d"}, "outside the allowed paths"),
        ("node_exporter", {"listen_address": ":9100 --web.config.file=/x"}, "listen_address"),
        ("rules", {"thresholds": {"load_per_cpu": "0.7\n  - alert: X"}}, "load_per_cpu"),
    ],
)
def test_poisoned_pillar_is_refused_naming_the_key(loaders, tmp_path, section, value, match):
    pillar = _pillar(tmp_path)
    pillar["monitoring"][section].update(value)
    rendered = loaders.modules.state.show_sls("monitoring", pillar=pillar)
    if section == "rules":
        # Thresholds are read by the state at run time, not rendered into SLS text.
        assert set(rendered) == STATE_IDS
        ret = loaders.modules.state.sls("monitoring.prometheus", pillar=pillar)
        rules = next(r for r in ret.raw.values() if r["__id__"] == "monitoring-prometheus-rules-file-managed")
        assert rules["result"] is False and match in rules["comment"]
        assert not os.path.exists(tmp_path / "rules" / "opsalt.rules.yml")
        return
    assert isinstance(rendered, list), rendered
    assert match in " ".join(rendered)


def test_prometheus_part_deploys_exactly_the_repository_rules(loaders, tmp_path, prometheus_server):
    pillar = _pillar(tmp_path, file_sd=str(tmp_path / "file_sd" / "opsalt.json"))
    pillar["monitoring"]["rules"] = {
        "path": prometheus_server.rules_file,
        "reload_url": prometheus_server.reload_url,
    }
    policy = {"policy": {"allowed_paths": [str(tmp_path), prometheus_server.root]}}
    loaders = make_loaders(
        tmp_path / "minion2", file_roots={"base": [f"{REPO_ROOT}/salt"]}, id="monitoring-sls", opsalt=policy
    )
    first = loaders.modules.state.sls("monitoring.prometheus", pillar=pillar)
    assert all(ret["result"] is True for ret in first.raw.values()), first
    with open(prometheus_server.rules_file, encoding="utf-8") as handle:
        deployed = handle.read()
    with open(os.path.join(REPO_ROOT, "prometheus", "opsalt.rules.yml"), encoding="utf-8") as handle:
        assert deployed == handle.read()
    wait_for(lambda: len(prometheus_server.alert_names()) == 8)
    second = loaders.modules.state.sls("monitoring.prometheus", pillar=pillar)
    assert all(ret["result"] is True and ret["changes"] == {} for ret in second.raw.values()), second


# In the order they run: the package (it creates the prometheus user and
# enables Debian's single exporter) before anything that needs it.
REDIS_EXPORTER_IDS = [
    "monitoring-redis-exporter-package-installed",
    "monitoring-redis-exporter-debian-default-service-dead",
    "monitoring-redis-exporter-config-files-managed",
    "monitoring-redis-exporter-unit-file-managed",
    "monitoring-redis-exporter-services-running",
]


def _redis_pillar(tmp_path, **exporter):
    pillar = _pillar(tmp_path)
    pillar["monitoring"]["redis_exporter"] = {"config_dir": str(tmp_path / "redis_exporter"), **exporter}
    pillar["redis_aof"] = {"instances": {"cache": {"host": "127.0.0.1", "port": 6390}}}
    return pillar


@pytest.mark.parametrize(
    "exporter, absent",
    [
        ({}, set()),
        ({"install": False}, {"monitoring-redis-exporter-package-installed"}),
        (
            {"run_service": False},
            {
                "monitoring-redis-exporter-debian-default-service-dead",
                "monitoring-redis-exporter-unit-file-managed",
                "monitoring-redis-exporter-services-running",
            },
        ),
    ],
)
def test_redis_exporter_sls_installs_its_package_as_node_exporter_does(loaders, tmp_path, exporter, absent):
    rendered = loaders.modules.state.show_sls(
        "monitoring.redis_exporter", pillar=_redis_pillar(tmp_path, **exporter)
    )
    assert isinstance(rendered, dict), rendered
    wanted = [state_id for state_id in REDIS_EXPORTER_IDS if state_id not in absent]
    assert sorted(rendered, key=lambda state_id: _args(rendered, state_id)["order"]) == wanted
    if "monitoring-redis-exporter-package-installed" not in absent:
        package = rendered["monitoring-redis-exporter-package-installed"]
        assert "installed" in package["pkg"]
        assert (
            _args(rendered, "monitoring-redis-exporter-package-installed")["name"]
            == "prometheus-redis-exporter"
        )
    if "monitoring-redis-exporter-services-running" not in absent:
        default = rendered["monitoring-redis-exporter-debian-default-service-dead"]
        assert "dead" in default["service"]
        args = _args(rendered, "monitoring-redis-exporter-debian-default-service-dead")
        assert (args["name"], args["enable"]) == ("prometheus-redis-exporter", False)
        running = _args(rendered, "monitoring-redis-exporter-services-running")
        assert running["names"] == ["prometheus-redis-exporter@cache"]


def test_the_whole_tree_installs_both_exporter_packages_and_clean_keeps_them(loaders, tmp_path):
    rendered = loaders.modules.state.show_sls("monitoring", pillar=_redis_pillar(tmp_path))
    assert isinstance(rendered, dict), rendered
    packages = {
        _args(rendered, state_id)["name"]
        for state_id, chunk in rendered.items()
        if "installed" in chunk.get("pkg", [])
    }
    assert packages == {"prometheus-node-exporter", "prometheus-redis-exporter"}
    cleaned = loaders.modules.state.show_sls("monitoring.clean", pillar=_redis_pillar(tmp_path))
    assert isinstance(cleaned, dict), cleaned
    assert not [state_id for state_id, chunk in cleaned.items() if "pkg" in chunk]
    assert "monitoring-redis-exporter-config-files-absent" in cleaned
