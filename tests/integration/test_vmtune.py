"""
vmtune on the shared real salt-master and salt-minion, with pillar from the
demo asset API: the module, ``state.apply vmtune`` (config under a temporary
directory, proc root a writable copy of a fixture tree), the beacon's event on
the master's bus, and, where /proc/sys/vm is writable, a live change that is
always put back.
"""

import json
import os
import shutil
import time

import opsalt_vmtune
import pytest

from tests.support.proc_trees import writable_copy
from tests.support.procs import wait_for

STATE_KEY = "vmtune_|-vmtune-sysctls-tuned_|-vmtune-sysctls-tuned_|-tuned"


@pytest.fixture
def host(tmp_path):
    return writable_copy("seed", tmp_path / "proc")


@pytest.fixture
def vmtune_pillar(set_pillar):
    """
    ``vmtune_pillar(section)``; the section is emptied again afterwards.
    """
    try:
        yield lambda section: set_pillar("vmtune", section)
    finally:
        set_pillar("vmtune", {})


@pytest.fixture
def vmtune_policy(salt_minion):
    """
    ``vmtune_policy(policy)``: the operator's ``opsalt:policy`` in a
    ``minion.d`` file of the minion's config dir, where ``salt-call`` reads
    it (the asset API cannot write there). Removed afterwards.
    """
    path = os.path.join(salt_minion.config_dir, "minion.d", "zz-opsalt-vmtune-policy.conf")
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def write(policy):
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"opsalt": {"policy": policy}}, handle)

    try:
        yield write
    finally:
        if os.path.exists(path):
            os.unlink(path)


@pytest.fixture
def tmp_allowed(vmtune_policy, tmp_path):
    """vmtune may write under this test's tmp_path (config and proc tree copy)."""
    vmtune_policy({"vmtune": {"allowed_paths": [str(tmp_path)]}})


def test_module_reads_fixture_and_real_proc(salt_call_cli, host, vmtune_policy, tmp_path):
    # issue 12: reads too only where the operator allows (/proc by default)
    ret = salt_call_cli.run("vmtune.gaps", f"proc_root={host}")
    output = str(ret.stdout) + str(ret.stderr)
    assert ret.returncode != 0 and f"vmtune:proc_root: '{host}' is outside the allowed paths" in output, ret
    vmtune_policy({"vmtune": {"allowed_paths": [str(tmp_path)]}})
    ret = salt_call_cli.run("vmtune.gaps", f"proc_root={host}")
    assert ret.returncode == 0, ret
    assert ret.data["smallest_min_to_low_kib"] == 15316
    ret = salt_call_cli.run("vmtune.recommend", "burst_kb=25600", f"proc_root={host}")
    assert ret.data["min_free_kbytes"] == 113664 and ret.data["predicted"][0]["min_to_low_kib"] >= 25600
    ret = salt_call_cli.run("vmtune.zoneinfo")
    assert ret.returncode == 0 and any(z["pages"]["managed"] for z in ret.data)
    ret = salt_call_cli.run("sys.doc", "vmtune.recommend")
    assert "CLI Example:" in ret.data["vmtune.recommend"]


def test_state_apply_from_pillar(salt_call_cli, vmtune_pillar, host, tmp_path, tmp_allowed):
    config = str(tmp_path / "60-opsalt-vmtune.conf")
    vmtune_pillar(
        {
            "config": config,
            "proc_root": host,
            "min_free_kbytes": "auto",
            "burst_kb": 25600,
            "vfs_cache_pressure": 200,
        }
    )
    ret = salt_call_cli.run("state.apply", "vmtune", "test=True")
    assert ret.returncode == 0, ret
    state = ret.data[STATE_KEY]
    assert state["result"] is None
    assert state["changes"]["vm.min_free_kbytes"] == {"old": 67584, "new": 113664}
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes", host) == 67584 and not os.path.exists(config)

    ret = salt_call_cli.run("state.apply", "vmtune")
    assert ret.returncode == 0, ret
    state = ret.data[STATE_KEY]
    assert state["result"] is True
    assert state["changes"]["vm.vfs_cache_pressure"] == {"old": 100, "new": 200}
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes", host) == 113664
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 200
    with open(config, encoding="utf-8") as handle:
        assert "vm.min_free_kbytes = 113664\nvm.vfs_cache_pressure = 200\n" in handle.read()

    ret = salt_call_cli.run("state.apply", "vmtune")
    assert ret.returncode == 0, ret
    assert ret.data[STATE_KEY]["result"] is True and ret.data[STATE_KEY]["changes"] == {}


@pytest.mark.parametrize(
    "section, message",
    [
        ({"min_free_kbytes": 512}, "below 1024"),
        ({"min_free_kbytes": 99_000_000}, "above 5% of MemTotal"),
        ({"min_free_kbytes": "lots"}, "must be an integer"),
        ({"vfs_cache_pressure": 0}, "allow_zero"),
        ({"vfs_cache_pressure": -20}, "at least 0"),
    ],
)
def test_bad_pillar_fails_and_changes_nothing(
    salt_call_cli, vmtune_pillar, host, tmp_path, tmp_allowed, section, message
):
    config = str(tmp_path / "60-opsalt-vmtune.conf")
    vmtune_pillar({"config": config, "proc_root": host, **section})
    ret = salt_call_cli.run("state.apply", "vmtune")
    assert ret.returncode != 0
    state = ret.data[STATE_KEY]
    assert state["result"] is False and message in state["comment"]
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes", host) == 67584
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 100
    assert not os.path.exists(config)


def _bump_allocstall(root, delta):
    vmstat = opsalt_vmtune.read_vmstat(root)
    vmstat["allocstall"] += delta
    tmp = os.path.join(root, "vmstat.new")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{k} {v}\n" for k, v in vmstat.items()))
    os.replace(tmp, os.path.join(root, "vmstat"))


@pytest.fixture
def daemon_host(operator_allowed_dir, tmp_path):
    """A fixture tree the minion daemon may read: under the directory its own config allows."""
    root = os.path.join(operator_allowed_dir, tmp_path.name)
    try:
        yield writable_copy("seed", root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_beacon_fires_once_on_the_master_bus(
    salt_master, salt_minion, set_pillar, event_listener, daemon_host
):
    host = daemon_host
    tag = f"salt/beacon/{salt_minion.id}/vmtune/"
    started = time.time()
    set_pillar(
        "beacons",
        {
            "vmtune": [
                {"interval": 1},
                {"proc_root": host},
                {"allocstall_rate": 5},
                {"direct_scan_rate": None},
                {"compact_stall_rate": None},
                {"load_per_cpu": None},
                {"rearm": 60},
            ]
        },
    )
    try:

        def fired():
            _bump_allocstall(host, 100)  # about 200 stalls/s at this polling rate
            return event_listener.get_events([(salt_master.id, tag)], after_time=started)

        events = wait_for(fired, timeout=60, interval=0.5, what="a vmtune beacon event")
        data = next(iter(events)).data
        assert data["id"] == salt_minion.id
        assert data["reasons"][0].startswith("allocstall ")
        assert data["rates"]["allocstall"] > 5
        assert data["zoneinfo"][2]["pages"]["min"] == 15319
        assert data["gaps"]["smallest_min_to_low_kib"] == 15316
        # The storm goes on; the re-arm delay keeps it to one event.
        until = time.monotonic() + 5
        while time.monotonic() < until:
            _bump_allocstall(host, 100)
            time.sleep(0.5)
        assert len(event_listener.get_events([(salt_master.id, tag)], after_time=started)) == 1
    finally:
        set_pillar("beacons", {})


@pytest.mark.destructive
def test_live_vfs_cache_pressure_is_set_and_restored(salt_call_cli, vmtune_pillar, tmp_path, tmp_allowed):
    path = "/proc/sys/vm/vfs_cache_pressure"
    if not os.access(path, os.W_OK):
        pytest.skip(f"{path} is not writable here (not root, or /proc/sys read-only in a container)")
    with open(path, encoding="ascii") as handle:
        original = int(handle.read())
    target = 150 if original != 150 else 120
    config = str(tmp_path / "60-opsalt-vmtune.conf")
    try:
        vmtune_pillar({"config": config, "vfs_cache_pressure": target})
        ret = salt_call_cli.run("state.apply", "vmtune")
        assert ret.returncode == 0, ret
        assert ret.data[STATE_KEY]["changes"]["vm.vfs_cache_pressure"] == {"old": original, "new": target}
        assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure") == target
        ret = salt_call_cli.run("state.apply", "vmtune")
        assert ret.data[STATE_KEY]["changes"] == {}
    finally:
        opsalt_vmtune.write_sysctl("vm.vfs_cache_pressure", original)
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure") == original


def test_beacon_sls_and_clean(salt_call_cli, vmtune_pillar, host, tmp_path, tmp_allowed):
    config = str(tmp_path / "60-opsalt-vmtune.conf")
    vmtune_pillar(
        {
            "config": config,
            "proc_root": host,
            "vfs_cache_pressure": 200,
            "beacon": {"enabled": True, "interval": 10, "allocstall_rate": 3, "rearm": 120},
        }
    )
    try:
        ret = salt_call_cli.run("state.apply", "vmtune")
        assert ret.returncode == 0, ret
        beacon = ret.data["beacon_|-vmtune-beacon-present_|-vmtune_|-present"]
        assert beacon["result"] is True, beacon
        ret = salt_call_cli.run("beacons.list", "return_yaml=False")
        settings = {k: v for item in ret.data["vmtune"] for k, v in item.items()}
        assert settings["allocstall_rate"] == 3 and settings["rearm"] == 120 and settings["interval"] == 10
        assert settings["proc_root"] == host and settings["load_per_cpu"] == 0.7
        ret = salt_call_cli.run("state.apply", "vmtune")
        assert all(not state["changes"] for state in ret.data.values()), ret.data

        assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 200

        ret = salt_call_cli.run("state.apply", "vmtune.clean", "test=True")
        reverted = ret.data["vmtune_|-vmtune-sysctls-reverted_|-vmtune-sysctls-reverted_|-reverted"]
        assert reverted["result"] is None and reverted["changes"]["vm.vfs_cache_pressure"] == {
            "old": 200,
            "new": 100,
        }
        assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 200 and os.path.exists(config)
        ret = salt_call_cli.run("state.apply", "vmtune.clean")
        assert ret.returncode == 0, ret
        assert not os.path.exists(config)
        # the live value is back to the one before vmtune changed it
        assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 100
        ret = salt_call_cli.run("beacons.list", "return_yaml=False")
        assert "vmtune" not in (ret.data or {})
        ret = salt_call_cli.run("state.apply", "vmtune.clean")
        assert all(not state["changes"] for state in ret.data.values()), ret.data
    finally:
        salt_call_cli.run("beacons.delete", "vmtune")
        salt_call_cli.run("beacons.save")


def _states(ret):
    assert isinstance(ret.data, dict), ret
    return {state["__id__"]: state for state in ret.data.values()}


def test_pillar_with_only_proc_root_has_nothing_to_tune(salt_call_cli, vmtune_pillar, host, tmp_allowed):
    # issue 14: proc_root says where, not what; it used to fail "nothing to tune"
    vmtune_pillar({"proc_root": host})
    for extra in ([], ["test=True"]):
        ret = salt_call_cli.run("state.apply", "vmtune", *extra)
        assert ret.returncode == 0, ret
        (state,) = _states(ret).values()
        assert state["__id__"] == "vmtune-nothing-to-tune-in-pillar"
        assert state["result"] is True and not state["changes"] and "nothing to tune" in state["comment"]
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 100


def test_module_revert_honours_the_pillars_nested_config(
    salt_call_cli, vmtune_pillar, host, tmp_path, tmp_allowed
):
    # issue 14: `salt-call vmtune.revert` reads vmtune:config and vmtune:proc_root from the pillar
    config = str(tmp_path / "60-opsalt-vmtune.conf")
    vmtune_pillar({"config": config, "proc_root": host, "vfs_cache_pressure": 200})
    assert salt_call_cli.run("state.apply", "vmtune").returncode == 0
    assert os.path.exists(config) and opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 200
    ret = salt_call_cli.run("vmtune.current")
    assert ret.returncode == 0, ret
    assert ret.data["config"] == config and ret.data["persisted"] == {"vm.vfs_cache_pressure": 200}
    ret = salt_call_cli.run("vmtune.revert")
    assert ret.returncode == 0, ret
    assert not os.path.exists(config)
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 100


@pytest.mark.parametrize("test_mode", [False, True])
def test_paths_outside_the_default_policy_are_refused(
    salt_call_cli, vmtune_pillar, host, tmp_path, vmtune_policy, test_mode
):
    # issue 12: config only under /etc/sysctl.d, proc_root only /proc, unless
    # the minion config's opsalt:policy allows more; the pillar cannot
    config = str(tmp_path / "60-opsalt-vmtune.conf")
    vmtune_pillar({"config": config, "proc_root": host, "vfs_cache_pressure": 200})
    extra = ["test=True"] if test_mode else []
    ret = salt_call_cli.run(
        "state.apply",
        "vmtune",
        *extra,
        "pillar=" + json.dumps({"opsalt": {"policy": {"allowed_paths": ["/"]}}}),
    )
    assert ret.returncode != 0
    state = _states(ret)["vmtune-sysctls-tuned"]
    assert state["result"] is False and not state["changes"]
    assert "vmtune:proc_root" in state["comment"] and "opsalt:policy:vmtune:allowed_paths" in state["comment"]
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 100 and not os.path.exists(config)
    # the operator widens it in the minion config: accepted
    vmtune_policy({"allowed_paths": [str(tmp_path)]})
    ret = salt_call_cli.run("state.apply", "vmtune", *extra)
    assert ret.returncode == 0, ret
    state = _states(ret)["vmtune-sysctls-tuned"]
    assert state["result"] is (None if test_mode else True)
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == (100 if test_mode else 200)


def test_safety_limits_come_from_the_operator(salt_call_cli, vmtune_pillar, host, tmp_path, vmtune_policy):
    # issue 12: max_percent and allow_zero are bounded by opsalt:policy:vmtune
    config = str(tmp_path / "60-opsalt-vmtune.conf")
    vmtune_policy({"vmtune": {"allowed_paths": [str(tmp_path)]}})
    vmtune_pillar({"config": config, "proc_root": host, "vfs_cache_pressure": 0, "allow_zero": True})
    ret = salt_call_cli.run("state.apply", "vmtune")
    state = _states(ret)["vmtune-sysctls-tuned"]
    assert ret.returncode != 0 and state["result"] is False
    assert "opsalt:policy:vmtune:allow_zero" in state["comment"]
    vmtune_pillar({"config": config, "proc_root": host, "min_free_kbytes": 2_000_000, "max_percent": 8})
    ret = salt_call_cli.run("state.apply", "vmtune")
    state = _states(ret)["vmtune-sysctls-tuned"]
    assert ret.returncode != 0 and "vmtune:max_percent: 8.0 is above the policy limit 5" in state["comment"]
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes", host) == 67584
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 100 and not os.path.exists(config)
    # allowed by the operator: accepted
    vmtune_policy({"vmtune": {"allowed_paths": [str(tmp_path)], "max_percent": 8, "allow_zero": True}})
    vmtune_pillar(
        {
            "config": config,
            "proc_root": host,
            "min_free_kbytes": 2_000_000,
            "max_percent": 8,
            "vfs_cache_pressure": 0,
            "allow_zero": True,
        }
    )
    ret = salt_call_cli.run("state.apply", "vmtune")
    assert ret.returncode == 0, ret
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes", host) == 2_000_000
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 0


def test_without_vmtune_pillar_nothing_is_managed(salt_call_cli, asset_api, salt_minion):
    # issue 12 finding 6: a host whose asset record lacks the key gets nothing
    document = asset_api.get_document(salt_minion.id)
    asset_api.set_document(salt_minion.id, {k: v for k, v in document.items() if k != "vmtune"})
    try:
        assert salt_call_cli.run("saltutil.refresh_pillar", wait=True).returncode == 0
        for sls in ("vmtune", "vmtune.clean"):
            ret = salt_call_cli.run("state.apply", sls)
            assert ret.returncode == 0, ret
            (state,) = _states(ret).values()
            assert state["__id__"] == "vmtune-pillar-absent-nothing-managed"
            assert state["result"] is True and not state["changes"]
            assert "nothing managed" in state["comment"]
    finally:
        asset_api.set_document(salt_minion.id, document)
        salt_call_cli.run("saltutil.refresh_pillar", wait=True)
