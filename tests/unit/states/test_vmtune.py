"""
vmtune.tuned over the real execution module, on a writable copy of a fixture
proc tree, in both modes (test=False and test=True).
"""

import os

import opsalt_proc
import pytest

from tests.support.proc_trees import load_component, writable_copy

vmtune_mod = load_component("_modules")
vmtune_state = load_component("_states")


@pytest.fixture(params=[False, True], ids=["apply", "test"])
def test_mode(request):
    return request.param


@pytest.fixture
def configure_loader_modules(test_mode):
    salt_funcs = {"config.get": lambda key, default=None: default}
    return {
        vmtune_mod: {"__salt__": salt_funcs, "__opts__": {}},
        vmtune_state: {
            "__salt__": {"vmtune.plan": vmtune_mod.plan, "vmtune.apply": vmtune_mod.apply},
            "__opts__": {"test": test_mode},
        },
    }


@pytest.fixture
def host(tmp_path):
    return writable_copy("seed", tmp_path / "proc"), str(tmp_path / "60-opsalt-vmtune.conf")


def live(root, key):
    return opsalt_proc.read_sysctl(f"vm.{key}", root)


def test_virtual(test_mode):  # pylint: disable=unused-argument
    assert vmtune_state.__virtual__() == "vmtune"


def test_tuned_changes_then_reports_nothing(host, test_mode):
    root, config = host
    ret = vmtune_state.tuned("vm", min_free_kbytes=1081344, vfs_cache_pressure=200, config=config, proc_root=root)
    assert ret["name"] == "vm"
    assert ret["changes"]["vm.min_free_kbytes"] == {"old": 67584, "new": 1081344}
    assert ret["changes"]["vm.vfs_cache_pressure"] == {"old": 100, "new": 200}
    assert "+vm.min_free_kbytes = 1081344" in ret["changes"]["diff"]
    if test_mode:
        assert ret["result"] is None
        assert ret["comment"].startswith("Would set")
        assert live(root, "min_free_kbytes") == 67584 and not os.path.exists(config)
        return
    assert ret["result"] is True
    assert live(root, "min_free_kbytes") == 1081344 and live(root, "vfs_cache_pressure") == 200
    second = vmtune_state.tuned("vm", min_free_kbytes=1081344, vfs_cache_pressure=200, config=config, proc_root=root)
    assert second["result"] is True and second["changes"] == {}
    assert "already set" in second["comment"]


def test_only_the_file_differs(host, test_mode):
    root, config = host
    ret = vmtune_state.tuned("vm", vfs_cache_pressure=100, config=config, proc_root=root)
    assert set(ret["changes"]) == {"diff"}
    assert ret["result"] is (None if test_mode else True)
    assert os.path.exists(config) is (not test_mode)


def test_only_the_live_value_differs(host, test_mode):
    root, config = host
    with open(config, "w") as handle:
        handle.write(vmtune_mod._render({"vfs_cache_pressure": 200}))
    ret = vmtune_state.tuned("vm", vfs_cache_pressure=200, config=config, proc_root=root)
    assert ret["changes"] == {"vm.vfs_cache_pressure": {"old": 100, "new": 200}}
    assert live(root, "vfs_cache_pressure") == (100 if test_mode else 200)


def test_auto(host, test_mode):
    root, config = host
    ret = vmtune_state.tuned("vm", min_free_kbytes="auto", burst_kb=25600, config=config, proc_root=root)
    assert ret["changes"]["vm.min_free_kbytes"] == {"old": 67584, "new": 113664}
    assert ret["result"] is (None if test_mode else True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_free_kbytes": 512}, "below 1024"),
        ({"min_free_kbytes": 4_000_000}, "above 5% of MemTotal"),
        ({"min_free_kbytes": -1}, "at least 0"),
        ({"min_free_kbytes": "1e6"}, "must be an integer"),
        ({"vfs_cache_pressure": 0}, "allow_zero"),
        ({"watermark_scale_factor": 100}, "no vm.watermark_scale_factor"),
    ],
)
def test_guards_fail_and_change_nothing(host, test_mode, kwargs, message):
    root, config = host
    ret = vmtune_state.tuned("vm", config=config, proc_root=root, **kwargs)
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert message in ret["comment"] and "nothing changed" in ret["comment"]
    assert live(root, "min_free_kbytes") == 67584 and live(root, "vfs_cache_pressure") == 100
    assert not os.path.exists(config)


def test_read_only_proc_sys_fails(host, test_mode, monkeypatch):
    root, config = host
    monkeypatch.setattr(opsalt_proc.os, "access", lambda path, mode: False)
    ret = vmtune_state.tuned("vm", vfs_cache_pressure=200, config=config, proc_root=root)
    assert ret["result"] is False and "read-only" in ret["comment"]
    assert live(root, "vfs_cache_pressure") == 100 and not os.path.exists(config)
