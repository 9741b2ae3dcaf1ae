"""
opsalt's alert rules: the repository file is what the renderer gives with no
pillar thresholds, promtool accepts it, and promtool's unit tests (one series
that fires each alert, one that comes close) pass; pillar values that are not
plain numbers or durations are refused.
"""

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.support.asset_api import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "_utils"))
import opsalt_monitoring as monitoring

RULES = os.path.join(REPO_ROOT, "prometheus", "opsalt.rules.yml")
RULE_TESTS = os.path.join(REPO_ROOT, "prometheus", "tests", "opsalt_rules_test.yml")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTS = [
    "OpsaltHighLoadPerCpu",
    "OpsaltDirectReclaimStalls",
    "OpsaltWatermarkGapTooSmall",
    "OpsaltRedisAofFsyncStall",
    "OpsaltPgbouncerClientsWaiting",
    "OpsaltPillarStale",
    "OpsaltV2vMigrationFailed",
    "OpsaltTextfileStale",
]


def _promtool(*args):
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False)


def test_repository_rules_are_the_rendered_defaults():
    with open(RULES, encoding="utf-8") as handle:
        assert handle.read() == monitoring.render_rules()


def test_every_alert_has_for_severity_and_annotations_naming_a_function():
    rules = yaml.safe_load(monitoring.render_rules())["groups"][0]["rules"]
    assert [rule["alert"] for rule in rules] == ALERTS
    for rule in rules:
        assert rule["for"]
        assert rule["labels"]["severity"] in monitoring.SEVERITIES
        assert rule["annotations"]["summary"]
        # Each description names the opsalt function to run next.
        assert any(
            word in rule["annotations"]["description"]
            for word in ("vmtune.", "redis_aof.", "pgbouncer.", "ops_http_json.", "v2v.", "monitoring.")
        )


def test_promtool_checks_the_repository_rules():
    done = _promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_promtool_unit_tests_of_every_alert_pass():
    done = _promtool("test", "rules", RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(RULE_TESTS, encoding="utf-8") as handle:
        tested = {
            case["alertname"] for test in yaml.safe_load(handle)["tests"] for case in test["alert_rule_test"]
        }
    assert tested == set(ALERTS)


def test_promtool_unit_tests_notice_a_changed_threshold(tmp_path):
    # The tests are not vacuous: with load_per_cpu 0.5 the 1.2 host fires too.
    shutil.copytree(os.path.dirname(RULES), tmp_path / "prometheus")
    (tmp_path / "prometheus" / "opsalt.rules.yml").write_text(monitoring.render_rules({"load_per_cpu": 0.5}))
    done = _promtool("test", "rules", str(tmp_path / "prometheus" / "tests" / "opsalt_rules_test.yml"))
    assert done.returncode != 0
    assert 'instance="low:9100"' in done.stdout + done.stderr


def test_pillar_thresholds_and_durations_reach_the_rules():
    text = monitoring.render_rules(
        {"load_per_cpu": 0.9, "pgscan_direct_per_second": 250}, {"OpsaltHighLoadPerCpu": "3s"}
    )
    rules = {rule["alert"]: rule for rule in yaml.safe_load(text)["groups"][0]["rules"]}
    assert rules["OpsaltHighLoadPerCpu"]["for"] == "3s"
    assert rules["OpsaltHighLoadPerCpu"]["expr"].endswith("> 0.9")
    assert "> 250" in rules["OpsaltDirectReclaimStalls"]["expr"]
    assert rules["OpsaltRedisAofFsyncStall"]["for"] == "1m"


@pytest.mark.parametrize(
    "thresholds, durations, match",
    [
        ({"load_per_cpu": "0.7\n- alert: X"}, None, "load_per_cpu.*not a number"),
        ({"load_per_cpu": True}, None, "not a number"),
        ({"load_per_cpu": -1}, None, "between 0 and"),
        ({"load_per_cpu": float("nan")}, None, "between 0 and"),
        ({"load_per_cpu": float("inf")}, None, "between 0 and"),
        ({"unknown": 1}, None, "unknown key 'unknown'"),
        (None, {"OpsaltHighLoadPerCpu": "5m\nlabels: {}"}, "OpsaltHighLoadPerCpu.*not a duration"),
        (None, {"OpsaltHighLoadPerCpu": "1h30m"}, "not a duration"),
        (None, {"OpsaltHighLoadPerCpu": 300}, "not a duration"),
        (None, {"OpsaltHighLoadPerCpu": "05m"}, "not a duration"),
        (None, {"OpsaltHighLoadPerCpu": "5m\n"}, "OpsaltHighLoadPerCpu.*not a duration"),
        (None, {"NotAnAlert": "5m"}, "unknown key 'NotAnAlert'"),
        (None, "5m", "must be a mapping"),
    ],
)
def test_bad_pillar_values_are_refused_with_the_key_named(thresholds, durations, match):
    with pytest.raises(monitoring.MonitoringError, match=match):
        monitoring.render_rules(thresholds, durations)


def test_bad_severity_is_refused():
    with pytest.raises(monitoring.MonitoringError, match="severity:OpsaltTextfileStale"):
        monitoring.render_rules(severities={"OpsaltTextfileStale": "page\nx"})


def test_schema_mirrors_the_validation_patterns():
    import json

    from tests.support.components import load_component

    module = load_component("_modules", "monitoring")
    with open(os.path.join(REPO_ROOT, "schema", "pillar.schema.json"), encoding="utf-8") as handle:
        section = json.load(handle)["$defs"]["monitoring"]["properties"]
    assert section["rules"]["properties"]["for"]["properties"]["OpsaltHighLoadPerCpu"]["pattern"] == (
        monitoring.DURATION_PATTERN
    )
    assert set(section["rules"]["properties"]["thresholds"]["properties"]) == set(monitoring.THRESHOLDS)
    assert set(section["rules"]["properties"]["for"]["properties"]) == set(monitoring.FOR)
    assert section["rules"]["properties"]["reload_url"]["pattern"] == module.RELOAD_URL_PATTERN
    assert section["node_exporter"]["properties"]["listen_address"]["pattern"] == module.LISTEN_PATTERN
    targets = section["scrape"]["properties"]["targets"]
    assert targets["propertyNames"]["pattern"] == module.JOB_PATTERN
    assert targets["additionalProperties"]["items"]["pattern"] == module.TARGET_PATTERN
    assert section["textfile"]["properties"]["filename"]["pattern"] == monitoring.TEXTFILE_NAME.pattern


# -- a trailing newline ("5m\n"), which Python's `$` lets through, is refused -----


def test_a_trailing_newline_is_not_a_duration():
    assert monitoring.validate_duration("5m", "for") == "5m"
    with pytest.raises(monitoring.MonitoringError, match=r"for: '5m\\n' is not a duration"):
        monitoring.validate_duration("5m\n", "for")


def test_rules_text_gets_no_blank_line_from_a_duration():
    rendered = monitoring.render_rules(durations={"OpsaltHighLoadPerCpu": "10m"})
    assert "\n\n" not in rendered and "for: 10m\n" in rendered
    with pytest.raises(monitoring.MonitoringError):
        monitoring.render_rules(group="opsalt\n")


def test_metric_label_and_textfile_names_refuse_a_trailing_newline(tmp_path):
    with pytest.raises(monitoring.MonitoringError, match="metric name"):
        monitoring.format_metrics([("opsalt_up\n", "gauge", "help", [({}, 1)])])
    with pytest.raises(monitoring.MonitoringError, match="label name"):
        monitoring.format_metrics([("opsalt_up", "gauge", "help", [({"host\n": "a"}, 1)])])
    with pytest.raises(monitoring.MonitoringError, match="textfile name"):
        monitoring.write_textfile(str(tmp_path), "opsalt_host.prom\n", "opsalt_up 1\n")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def module():
    from tests.support.components import load_component

    mod = load_component("_modules", "monitoring")
    mod.__salt__ = {"config.get": lambda key, default=None, **_: default}
    return mod


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m.node_exporter_args(listen_address=":9100\n"), "listen_address"),
        (lambda m: m.node_exporter_args(listen_address="127.0.0.1:9100\n"), "listen_address"),
        (lambda m: m.scrape_targets({"node\n": ["db1:9100"]}), "job"),
        (lambda m: m.scrape_targets({"node": ["db1:9100\n"]}), "is not host:port"),
        (lambda m: m.reload_prometheus("http://127.0.0.1:9090/-/reload\n"), "reload_url"),
    ],
    ids=["listen-port", "listen-host-port", "job", "target", "reload-url"],
)
def test_module_patterns_refuse_a_trailing_newline(module, call, match):
    from salt.exceptions import SaltInvocationError

    with pytest.raises(SaltInvocationError, match=match):
        call(module)


def test_module_patterns_accept_the_value_without_it(module):
    assert (
        module.node_exporter_args(
            listen_address="127.0.0.1:9100", textfile_dir="/var/lib/prometheus/node-exporter"
        )[0]
        == "--web.listen-address=127.0.0.1:9100"
    )
    assert '"job": "node"' in module.scrape_targets({"node": ["db1:9100"]})
