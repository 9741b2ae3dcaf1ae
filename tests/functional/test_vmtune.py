"""
vmtune through Salt's own loaders in process: the proc root from the minion
config (``vmtune.proc_root``), the state through ``state.single``-style
loader calls, ``sys.doc`` CLI examples, and the beacon through Salt's
``salt.beacons.Beacon`` machinery (validate, interval, event tag), and the
read-only ``/proc/sys`` guard against a real read-only bind mount.
"""

import json
import os
import shutil
import subprocess
import sys

import opsalt_vmtune
import pytest
import salt.beacons
import salt.config

from tests.support.loaders import make_loaders
from tests.support.proc_trees import REPO_ROOT, writable_copy


@pytest.fixture
def host(tmp_path):
    return writable_copy("seed", tmp_path / "proc")


@pytest.fixture
def loaders(tmp_path, host):
    return make_loaders(
        tmp_path / "salt",
        id="vmtune-functional",
        vmtune={"proc_root": host, "config": str(tmp_path / "60-opsalt-vmtune.conf")},
        # the operator's policy, in the minion config where opsalt_policy reads it
        opsalt={"policy": {"vmtune": {"allowed_paths": [str(tmp_path)]}}},
    )


def test_flat_config_keys_of_older_releases_still_work(tmp_path, host, caplog):
    config = str(tmp_path / "60-opsalt-vmtune.conf")
    old = make_loaders(
        tmp_path / "salt-old",
        id="vmtune-functional-old",
        **{"vmtune.proc_root": host, "vmtune.config": config},
        opsalt={"policy": {"allowed_paths": [str(tmp_path)]}},
    )
    with caplog.at_level("WARNING"):
        ret = old.states.vmtune.tuned(name="vm", vfs_cache_pressure=200)
    assert ret.result is True, ret.comment
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 200 and os.path.exists(config)
    assert "vmtune.config is deprecated" in caplog.text and "vmtune.proc_root is deprecated" in caplog.text


def test_policy_in_the_minion_config_bounds_where_vmtune_writes(tmp_path, host):
    # no opsalt:policy in the minion config: a config outside /etc/sysctl.d is refused
    strict = make_loaders(
        tmp_path / "salt-strict",
        id="vmtune-functional-strict",
        vmtune={"proc_root": host, "config": str(tmp_path / "60-opsalt-vmtune.conf")},
    )
    ret = strict.states.vmtune.tuned(name="vm", vfs_cache_pressure=200)
    assert (
        ret.result is False
        and "vmtune:proc_root" in ret.comment
        and "outside the allowed paths" in ret.comment
    )
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 100


def test_proc_root_and_config_come_from_the_minion_config(loaders, tmp_path):
    assert loaders.modules.vmtune.gaps()["smallest_min_to_low_kib"] == 15316
    current = loaders.modules.vmtune.current()
    assert current["live"]["vm.min_free_kbytes"] == 67584
    assert current["config"] == str(tmp_path / "60-opsalt-vmtune.conf")


def test_state_through_the_loader_then_idempotent(loaders, host, tmp_path):
    ret = loaders.states.vmtune.tuned(
        name="vm", min_free_kbytes="auto", burst_kb=25600, vfs_cache_pressure=200
    )
    assert ret.result is True, ret.comment
    assert ret.changes["vm.min_free_kbytes"] == {"old": 67584, "new": 113664}
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes", host) == 113664
    assert "vm.vfs_cache_pressure = 200" in (tmp_path / "60-opsalt-vmtune.conf").read_text()
    again = loaders.states.vmtune.tuned(
        name="vm", min_free_kbytes="auto", burst_kb=25600, vfs_cache_pressure=200
    )
    assert again.result is True and again.changes == {}


def test_every_public_function_documents_a_cli_example(loaders):
    docs = loaders.modules.sys.doc("vmtune")
    public = {
        "vmtune." + name
        for name in (
            "zoneinfo",
            "gaps",
            "reclaim_stats",
            "recommend",
            "current",
            "plan",
            "apply",
            "kernel_default_min_free_kbytes",
        )
    }
    assert public <= set(docs)
    for name in public:
        assert "CLI Example:" in docs[name], name


def test_beacon_through_salt_beacon_machinery(loaders, host):
    beacons = salt.beacons.Beacon(loaders.opts, loaders.modules)
    config = {"vmtune": [{"allocstall_rate": 1}, {"rearm": 300}]}
    assert beacons.process(config, {}) == []  # first sample
    with open(os.path.join(host, "vmstat"), "a") as handle:
        handle.write("allocstall 999999\n")
    events = beacons.process(config, {})
    assert len(events) == 1
    assert events[0]["tag"] == "salt/beacon/vmtune-functional/vmtune/"
    assert events[0]["data"]["id"] == "vmtune-functional"
    assert events[0]["data"]["reasons"][0].startswith("allocstall ")
    assert events[0]["data"]["gaps"]["smallest_zone"] == "node 0 Normal"


def test_invalid_beacon_config_is_not_run(loaders):
    beacons = salt.beacons.Beacon(loaders.opts, loaders.modules)
    assert beacons.process({"vmtune": [{"allocstall_rate": "many"}]}, {}) == []


READ_ONLY_PROBE = """
import json, sys
sys.path.insert(0, {repo!r})
from salt.exceptions import CommandExecutionError
from tests.support.proc_trees import load_component
vmtune = load_component("_modules")
from tests.support.proc_trees import config_get
vmtune.__salt__ = {{"config.get": config_get()}}
try:
    vmtune.apply(vfs_cache_pressure=200, config={config!r}, proc_root={root!r})
    print(json.dumps({{"error": None}}))
except CommandExecutionError as err:
    print(json.dumps({{"error": str(err)}}))
"""


def test_read_only_proc_sys_in_a_private_mount_namespace(host, tmp_path):
    # What a container does to /proc/sys: a read-only bind mount. Made in a
    # private mount namespace, so the host's mounts never change.
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to make a read-only bind mount in a private mount namespace")
    config = str(tmp_path / "60-opsalt-vmtune.conf")
    probe = READ_ONLY_PROBE.format(repo=REPO_ROOT, config=config, root=host)
    sys_dir = os.path.join(host, "sys")
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount --bind -o ro "$1" "$1" && exec "$2" -c "$3"',
            "sh",
            sys_dir,
            sys.executable,
            probe,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0 and "mount" in proc.stderr:
        pytest.skip(f"cannot make a read-only bind mount here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (
        outcome["error"] and "is read-only" in outcome["error"] and "tune it on the host" in outcome["error"]
    )
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", host) == 100
    assert not os.path.exists(config)
