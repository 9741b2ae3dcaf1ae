"""
monitoring.rules_managed over a stand-in for the execution module, every
case in both modes: the state decides from ``plan_rules`` alone and calls
``apply_rules`` only outside test mode.
"""

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.components import load_component

monitoring_state = load_component("_states", "monitoring")
PATH = "/etc/prometheus/rules/opsalt.rules.yml"
URL = "http://127.0.0.1:9090/-/reload"


class Module:
    def __init__(self, plan=None, plan_error=None, apply_error=None):
        self.plan = plan
        self.plan_error = plan_error
        self.apply_error = apply_error
        self.calls = []

    def plan_rules(self, path=None, text=None):
        self.calls.append("plan_rules")
        if self.plan_error:
            raise self.plan_error
        return self.plan

    def apply_rules(self, path=None, text=None):
        self.calls.append("apply_rules")
        if self.apply_error:
            raise self.apply_error
        return {"path": PATH, "backup": None, "reloaded": self.plan["reload_url"]}


def _run(module, test):
    saved = monitoring_state.__dict__.get("__salt__"), monitoring_state.__dict__.get("__opts__")
    monitoring_state.__salt__ = {
        "monitoring.plan_rules": module.plan_rules,
        "monitoring.apply_rules": module.apply_rules,
    }
    monitoring_state.__opts__ = {"test": test}
    try:
        return monitoring_state.rules_managed(PATH)
    finally:
        monitoring_state.__salt__, monitoring_state.__opts__ = saved


def _plan(changed=True, url=URL):
    return {"path": PATH, "changed": changed, "diff": "+x\n" if changed else "", "reload_url": url}


@pytest.mark.parametrize("test", [False, True])
def test_unchanged_file_reports_no_changes(test):
    module = Module(plan=_plan(changed=False))
    ret = _run(module, test)
    assert ret["result"] is True and ret["changes"] == {}
    assert "Already as wanted" in ret["comment"]
    assert module.calls == ["plan_rules"]


@pytest.mark.parametrize("test", [False, True])
def test_changed_file_is_applied_only_outside_test_mode(test):
    module = Module(plan=_plan())
    ret = _run(module, test)
    assert ret["changes"] == {"diff": "+x\n", "reload": URL}
    if test:
        assert ret["result"] is None
        assert module.calls == ["plan_rules"]
    else:
        assert ret["result"] is True
        assert module.calls == ["plan_rules", "apply_rules"]
        assert "Prometheus reloaded at" in ret["comment"]


def test_no_reload_url_says_so():
    ret = _run(Module(plan=_plan(url=None)), False)
    assert ret["result"] is True
    assert "not reloaded" in ret["comment"]


@pytest.mark.parametrize("test", [False, True])
def test_bad_pillar_fails_before_anything(test):
    module = Module(
        plan_error=SaltInvocationError("monitoring:rules:thresholds:load_per_cpu: 'x' is not a number")
    )
    ret = _run(module, test)
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"].startswith("Nothing changed: monitoring:rules:thresholds:load_per_cpu")
    assert module.calls == ["plan_rules"]


def test_promtool_refusal_fails_with_no_changes():
    module = Module(
        plan=_plan(), apply_error=CommandExecutionError("promtool check rules refused the new file")
    )
    ret = _run(module, False)
    assert ret["result"] is False and ret["changes"] == {}
    assert "promtool check rules refused" in ret["comment"]


class Exporters:
    """plan_redis_exporters/apply_redis_exporters stand-ins."""

    def __init__(self, plans, apply_error=None):
        self.plans = list(plans)
        self.apply_error = apply_error
        self.calls = []

    def plan(self):
        self.calls.append("plan")
        return self.plans.pop(0) if len(self.plans) > 1 else self.plans[0]

    def apply(self):
        self.calls.append("apply")
        if self.apply_error:
            raise self.apply_error
        return ["cache"]


def _run_exporters(module, test):
    saved = monitoring_state.__dict__.get("__salt__"), monitoring_state.__dict__.get("__opts__")
    monitoring_state.__salt__ = {
        "monitoring.plan_redis_exporters": module.plan,
        "monitoring.apply_redis_exporters": module.apply,
    }
    monitoring_state.__opts__ = {"test": test}
    try:
        return monitoring_state.redis_exporters_managed("redis_exporter environment files")
    finally:
        monitoring_state.__salt__, monitoring_state.__opts__ = saved


ENV = "/etc/prometheus/redis_exporter/cache.env"
PENDING = {"cache": {"path": ENV, "changed": True, "has_password": True}}
DONE = {"cache": {"path": ENV, "changed": False, "has_password": True}}


@pytest.mark.parametrize("test", [False, True])
def test_redis_exporter_files_written_only_outside_test_mode(test):
    module = Exporters([PENDING, DONE])
    ret = _run_exporters(module, test)
    assert ret["changes"] == {"files": [ENV]}
    if test:
        assert ret["result"] is None and module.calls == ["plan"]
    else:
        assert ret["result"] is True and module.calls == ["plan", "apply", "plan"]


@pytest.mark.parametrize("test", [False, True])
def test_redis_exporter_files_already_written(test):
    module = Exporters([DONE])
    ret = _run_exporters(module, test)
    assert ret["result"] is True and ret["changes"] == {}
    assert module.calls == ["plan"]


def test_redis_exporter_files_that_still_differ_fail():
    ret = _run_exporters(Exporters([PENDING, PENDING]), False)
    assert ret["result"] is False and "still differ" in ret["comment"]


@pytest.mark.parametrize("test", [False, True])
def test_redis_exporter_bad_pillar_fails_before_anything(test):
    module = Exporters([PENDING])
    module.plan = lambda: (_ for _ in ()).throw(SaltInvocationError("redis_aof:instances:x: bad"))
    ret = _run_exporters(module, test)
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"] == "Nothing changed: redis_aof:instances:x: bad"
