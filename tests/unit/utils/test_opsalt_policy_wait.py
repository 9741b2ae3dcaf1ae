"""The operator policy helper, the shared wait loop and bounded backups."""

import os
import sys
import time

import pytest

from tests.support.asset_api import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "_utils"))
import opsalt_files
import opsalt_policy
import opsalt_wait


def test_policy_is_read_from_minion_config_only():
    calls = []

    def config_get(key, default, **kwargs):
        calls.append((key, kwargs))
        return {"allowed_paths": ["/srv"]}

    assert opsalt_policy.read({"config.get": config_get}) == {"allowed_paths": ["/srv"]}
    assert calls == [("opsalt:policy", {"omit_pillar": True, "omit_grains": True, "omit_master": True})]
    assert opsalt_policy.read({"config.get": lambda *a, **k: "junk"}) == {}


def test_check_path_defaults_and_operator_widening():
    opsalt_policy.check_path(
        "/etc/pgbouncer/pgbouncer.ini", "config_path", "pgbouncer", ["/etc/pgbouncer"], {}
    )
    for bad in ("/etc/pgbouncer-evil/x", "/etc/profile.d/zz.sh", "/etc"):
        with pytest.raises(
            opsalt_policy.PolicyError, match="config_path.*opsalt:policy:pgbouncer:allowed_paths"
        ):
            opsalt_policy.check_path(bad, "config_path", "pgbouncer", ["/etc/pgbouncer"], {})
    policy = {"allowed_paths": ["/srv/app"], "pgbouncer": {"allowed_paths": ["/etc/pgbouncer-b"]}}
    opsalt_policy.check_path("/srv/app/p.ini", "config_path", "pgbouncer", ["/etc/pgbouncer"], policy)
    opsalt_policy.check_path("/etc/pgbouncer-b/p.ini", "config_path", "pgbouncer", ["/etc/pgbouncer"], policy)


def test_check_choice_max_and_switch():
    with pytest.raises(opsalt_policy.PolicyError, match="auth_type.*opsalt:policy:pgbouncer:auth_types"):
        opsalt_policy.check_choice(
            "trust", "settings:auth_type", "pgbouncer", "auth_types", ["scram-sha-256"], {}
        )
    policy = {"pgbouncer": {"auth_types": ["trust"]}, "vmtune": {"max_percent": 8, "allow_zero": True}}
    opsalt_policy.check_choice(
        "trust", "settings:auth_type", "pgbouncer", "auth_types", ["scram-sha-256"], policy
    )
    with pytest.raises(opsalt_policy.PolicyError, match="above the policy limit 5"):
        opsalt_policy.check_max(6, "max_percent", "vmtune", "max_percent", 5, {})
    opsalt_policy.check_max(6, "max_percent", "vmtune", "max_percent", 5, policy)
    assert opsalt_policy.allowed(policy, "vmtune", "allow_zero") is True
    assert opsalt_policy.allowed({}, "vmtune", "allow_zero") is False


def test_wait_until_returns_value_or_false_at_the_deadline():
    state = {"n": 0}

    def third_time():
        state["n"] += 1
        return "ready" if state["n"] >= 3 else None

    assert opsalt_wait.until(third_time, timeout=5, interval=0.01) == "ready"
    started = time.monotonic()
    assert not opsalt_wait.until(lambda: False, timeout=0.3, interval=0.05)
    assert 0.3 <= time.monotonic() - started < 1.0


def test_backups_keep_the_newest_three(tmp_path):
    path = str(tmp_path / "pgbouncer.ini")
    for i in range(10):
        opsalt_files.atomic_write(path, f"v{i}\n")
    backups = opsalt_files.list_backups(path)
    assert len(backups) == 3
    contents = [open(b, encoding="utf-8").read() for b in backups]
    assert contents == ["v6\n", "v7\n", "v8\n"]
    opsalt_files.atomic_write(path, "v10\n", keep_backups=None)
    assert len(opsalt_files.list_backups(path)) == 4


def test_deadline_passes_and_counts_down(monkeypatch):
    clock = {"now": 100.0}
    monkeypatch.setattr(opsalt_wait.time, "monotonic", lambda: clock["now"])
    deadline = opsalt_wait.Deadline(15)
    assert not deadline.passed() and deadline.remaining() == 15
    clock["now"] = 114.5
    assert not deadline.passed() and deadline.remaining() == 0.5
    clock["now"] = 115.0
    assert deadline.passed() and deadline.remaining() == 0.0
    clock["now"] = 200.0
    assert deadline.remaining() == 0.0
