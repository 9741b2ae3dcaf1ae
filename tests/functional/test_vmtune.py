"""
vmtune through Salt's own loaders in process: the proc root from the minion
config (``vmtune.proc_root``), the state through ``state.single``-style
loader calls, ``sys.doc`` CLI examples, and the beacon through Salt's
``salt.beacons.Beacon`` machinery (validate, interval, event tag).
"""

import os
import shutil

import pytest
import salt.beacons
import salt.config
from saltfactories.utils.functional import Loaders

import opsalt_proc
from tests.support.proc_trees import tree


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "proc"
    shutil.copytree(tree("seed"), root)
    return str(root)


@pytest.fixture
def loaders(tmp_path, host):
    root = str(tmp_path / "salt")
    opts = salt.config.minion_config(None)
    opts.update(
        cachedir=os.path.join(root, "cache"),
        pki_dir=os.path.join(root, "pki"),
        sock_dir=os.path.join(root, "sock"),
        extension_modules=os.path.join(root, "extmods"),
        file_client="local",
        id="vmtune-functional",
        **{"vmtune.proc_root": host, "vmtune.config": str(tmp_path / "60-opsalt-vmtune.conf")},
    )
    return Loaders(opts)


def test_proc_root_and_config_come_from_the_minion_config(loaders, tmp_path):
    assert loaders.modules.vmtune.gaps()["smallest_min_to_low_kib"] == 15316
    current = loaders.modules.vmtune.current()
    assert current["live"]["vm.min_free_kbytes"] == 67584
    assert current["config"] == str(tmp_path / "60-opsalt-vmtune.conf")


def test_state_through_the_loader_then_idempotent(loaders, host, tmp_path):
    ret = loaders.states.vmtune.tuned(name="vm", min_free_kbytes="auto", burst_kb=25600, vfs_cache_pressure=200)
    assert ret.result is True, ret.comment
    assert ret.changes["vm.min_free_kbytes"] == {"old": 67584, "new": 113664}
    assert opsalt_proc.read_sysctl("vm.min_free_kbytes", host) == 113664
    assert "vm.vfs_cache_pressure = 200" in (tmp_path / "60-opsalt-vmtune.conf").read_text()
    again = loaders.states.vmtune.tuned(name="vm", min_free_kbytes="auto", burst_kb=25600, vfs_cache_pressure=200)
    assert again.result is True and again.changes == {}


def test_every_public_function_documents_a_cli_example(loaders):
    docs = loaders.modules.sys.doc("vmtune")
    public = {"vmtune." + name for name in (
        "zoneinfo", "gaps", "reclaim_stats", "recommend", "current", "plan", "apply",
        "kernel_default_min_free_kbytes")}
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
