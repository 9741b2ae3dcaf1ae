"""
vmtune on the shared real salt-master and salt-minion, with pillar from the
demo asset API: the module, ``state.apply vmtune`` (config under a temporary
directory, proc root a writable copy of a fixture tree), the beacon's event on
the master's bus, and, where /proc/sys/vm is writable, a live change that is
always put back.
"""

import os
import time

import opsalt_proc
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


def test_module_reads_fixture_and_real_proc(salt_call_cli, host):
    ret = salt_call_cli.run("vmtune.gaps", f"proc_root={host}")
    assert ret.returncode == 0, ret
    assert ret.data["smallest_min_to_low_kib"] == 15316
    ret = salt_call_cli.run("vmtune.recommend", "burst_kb=25600", f"proc_root={host}")
    assert ret.data["min_free_kbytes"] == 113664 and ret.data["predicted"][0]["min_to_low_kib"] >= 25600
    ret = salt_call_cli.run("vmtune.zoneinfo")
    assert ret.returncode == 0 and any(z["pages"]["managed"] for z in ret.data)
    ret = salt_call_cli.run("sys.doc", "vmtune.recommend")
    assert "CLI Example:" in ret.data["vmtune.recommend"]


def test_state_apply_from_pillar(salt_call_cli, vmtune_pillar, host, tmp_path):
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
    assert opsalt_proc.read_sysctl("vm.min_free_kbytes", host) == 67584 and not os.path.exists(config)

    ret = salt_call_cli.run("state.apply", "vmtune")
    assert ret.returncode == 0, ret
    state = ret.data[STATE_KEY]
    assert state["result"] is True
    assert state["changes"]["vm.vfs_cache_pressure"] == {"old": 100, "new": 200}
    assert opsalt_proc.read_sysctl("vm.min_free_kbytes", host) == 113664
    assert opsalt_proc.read_sysctl("vm.vfs_cache_pressure", host) == 200
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
def test_bad_pillar_fails_and_changes_nothing(salt_call_cli, vmtune_pillar, host, tmp_path, section, message):
    config = str(tmp_path / "60-opsalt-vmtune.conf")
    vmtune_pillar({"config": config, "proc_root": host, **section})
    ret = salt_call_cli.run("state.apply", "vmtune")
    assert ret.returncode != 0
    state = ret.data[STATE_KEY]
    assert state["result"] is False and message in state["comment"]
    assert opsalt_proc.read_sysctl("vm.min_free_kbytes", host) == 67584
    assert opsalt_proc.read_sysctl("vm.vfs_cache_pressure", host) == 100
    assert not os.path.exists(config)


def _bump_allocstall(root, delta):
    vmstat = opsalt_proc.read_vmstat(root)
    vmstat["allocstall"] += delta
    tmp = os.path.join(root, "vmstat.new")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{k} {v}\n" for k, v in vmstat.items()))
    os.replace(tmp, os.path.join(root, "vmstat"))


def test_beacon_fires_once_on_the_master_bus(salt_master, salt_minion, set_pillar, event_listener, host):
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
def test_live_vfs_cache_pressure_is_set_and_restored(salt_call_cli, vmtune_pillar, tmp_path):
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
        assert opsalt_proc.read_sysctl("vm.vfs_cache_pressure") == target
        ret = salt_call_cli.run("state.apply", "vmtune")
        assert ret.data[STATE_KEY]["changes"] == {}
    finally:
        opsalt_proc.write_sysctl("vm.vfs_cache_pressure", original)
    assert opsalt_proc.read_sysctl("vm.vfs_cache_pressure") == original


def test_beacon_sls_and_clean(salt_call_cli, vmtune_pillar, host, tmp_path):
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

        assert opsalt_proc.read_sysctl("vm.vfs_cache_pressure", host) == 200

        ret = salt_call_cli.run("state.apply", "vmtune.clean", "test=True")
        reverted = ret.data["vmtune_|-vmtune-sysctls-reverted_|-vmtune-sysctls-reverted_|-reverted"]
        assert reverted["result"] is None and reverted["changes"]["vm.vfs_cache_pressure"] == {
            "old": 200,
            "new": 100,
        }
        assert opsalt_proc.read_sysctl("vm.vfs_cache_pressure", host) == 200 and os.path.exists(config)
        ret = salt_call_cli.run("state.apply", "vmtune.clean")
        assert ret.returncode == 0, ret
        assert not os.path.exists(config)
        # the live value is back to the one before vmtune changed it
        assert opsalt_proc.read_sysctl("vm.vfs_cache_pressure", host) == 100
        ret = salt_call_cli.run("beacons.list", "return_yaml=False")
        assert "vmtune" not in (ret.data or {})
        ret = salt_call_cli.run("state.apply", "vmtune.clean")
        assert all(not state["changes"] for state in ret.data.values()), ret.data
    finally:
        salt_call_cli.run("beacons.delete", "vmtune")
        salt_call_cli.run("beacons.save")
