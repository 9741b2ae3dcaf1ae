"""
vmtune.tuned and vmtune.reverted over the real execution module, on a
writable copy of a fixture proc tree, in both modes (test=False and
test=True).
"""

import os

import opsalt_vmtune
import pytest

from tests.support.proc_trees import config_get, load_component, writable_copy

vmtune_mod = load_component("_modules")
vmtune_state = load_component("_states")


@pytest.fixture(params=[False, True], ids=["apply", "test"])
def test_mode(request):
    return request.param


@pytest.fixture
def configure_loader_modules(test_mode):
    salt_funcs = {"config.get": config_get()}
    return {
        vmtune_mod: {"__salt__": salt_funcs, "__opts__": {}},
        vmtune_state: {
            "__salt__": {
                "vmtune.plan": vmtune_mod.plan,
                "vmtune.apply": vmtune_mod.apply,
                "vmtune.plan_revert": vmtune_mod.plan_revert,
                "vmtune.revert": vmtune_mod.revert,
            },
            "__opts__": {"test": test_mode},
        },
    }


@pytest.fixture
def host(tmp_path):
    return writable_copy("seed", tmp_path / "proc"), str(tmp_path / "60-opsalt-vmtune.conf")


def live(root, key):
    return opsalt_vmtune.read_sysctl(f"vm.{key}", root)


def test_virtual(test_mode):
    assert vmtune_state.__virtual__() == "vmtune"


def test_tuned_changes_then_reports_nothing(host, test_mode):
    root, config = host
    ret = vmtune_state.tuned(
        "vm", min_free_kbytes=1081344, vfs_cache_pressure=200, config=config, proc_root=root
    )
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
    second = vmtune_state.tuned(
        "vm", min_free_kbytes=1081344, vfs_cache_pressure=200, config=config, proc_root=root
    )
    assert second["result"] is True and second["changes"] == {}
    assert second["comment"].startswith("Already as wanted")


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
    assert message in ret["comment"] and "Nothing changed" in ret["comment"]
    assert live(root, "min_free_kbytes") == 67584 and live(root, "vfs_cache_pressure") == 100
    assert not os.path.exists(config)


def test_read_only_proc_sys_fails(host, test_mode, monkeypatch):
    root, config = host
    monkeypatch.setattr(opsalt_vmtune.os, "access", lambda path, mode: False)
    ret = vmtune_state.tuned("vm", vfs_cache_pressure=200, config=config, proc_root=root)
    assert ret["result"] is False and "read-only" in ret["comment"]
    assert live(root, "vfs_cache_pressure") == 100 and not os.path.exists(config)


def _tune(root, config, **values):
    """
    vmtune.apply (the module, so it runs whatever the test mode).
    """
    vmtune_mod.apply(config=config, proc_root=root, **values)


def test_reverted_puts_back_the_values_from_before(tmp_path, test_mode):
    # new-kernel: a tree that has vm.watermark_scale_factor
    root, config = writable_copy("new-kernel", tmp_path / "proc"), str(tmp_path / "60-opsalt-vmtune.conf")
    _tune(root, config, min_free_kbytes=524288, vfs_cache_pressure=200)
    assert "# before opsalt: vm.min_free_kbytes=67584 vm.vfs_cache_pressure=100" in open(config).read()
    # a sysctl managed later is recorded with its live value at that time
    _tune(root, config, min_free_kbytes=524288, vfs_cache_pressure=200, watermark_scale_factor=50)
    tuned_text = open(config).read()
    assert "vm.min_free_kbytes=67584 vm.vfs_cache_pressure=100 vm.watermark_scale_factor=10" in tuned_text

    ret = vmtune_state.reverted("vm", config=config, proc_root=root)
    assert ret["changes"] == {
        "vm.min_free_kbytes": {"old": 524288, "new": 67584},
        "vm.vfs_cache_pressure": {"old": 200, "new": 100},
        "vm.watermark_scale_factor": {"old": 50, "new": 10},
        "file": {"removed": config},
    }
    if test_mode:
        assert ret["result"] is None and ret["comment"].startswith("Would revert")
        assert live(root, "min_free_kbytes") == 524288 and open(config).read() == tuned_text
        return
    assert ret["result"] is True
    assert live(root, "min_free_kbytes") == 67584 and live(root, "vfs_cache_pressure") == 100
    assert live(root, "watermark_scale_factor") == 10
    assert not os.path.exists(config)
    backups = [n for n in os.listdir(os.path.dirname(config)) if n.endswith(".opsalt-bak")]
    assert len(backups) == 2  # the first apply's file, and the reverted one
    assert any(open(os.path.join(os.path.dirname(config), n)).read() == tuned_text for n in backups)
    assert "previous file kept as" in ret["comment"]

    second = vmtune_state.reverted("vm", config=config, proc_root=root)
    assert second["result"] is True and second["changes"] == {}
    assert "absent" in second["comment"]


def test_reverted_keeps_the_record_across_runs(host, test_mode):
    root, config = host
    _tune(root, config, vfs_cache_pressure=200)
    # a second run with other values must not record vmtune's own 200
    _tune(root, config, vfs_cache_pressure=300)
    ret = vmtune_state.reverted("vm", config=config, proc_root=root)
    assert ret["changes"]["vm.vfs_cache_pressure"] == {"old": 300, "new": 100}
    assert live(root, "vfs_cache_pressure") == (300 if test_mode else 100)


def test_reverted_without_a_record_removes_the_file_and_leaves_live_values(host, test_mode):
    root, config = host
    with open(config, "w") as handle:
        handle.write(vmtune_mod._render({"vfs_cache_pressure": 200}))  # no record: by hand or older opsalt
    opsalt_vmtune.write_sysctl("vm.vfs_cache_pressure", 200, root)
    # tuning it again does not invent a record from vmtune's own live value
    _tune(root, config, vfs_cache_pressure=200)
    assert "before opsalt" not in open(config).read()
    ret = vmtune_state.reverted("vm", config=config, proc_root=root)
    assert ret["changes"] == {"file": {"removed": config}}
    assert "no record of the values before vmtune" in ret["comment"]
    assert ret["result"] is (None if test_mode else True)
    assert os.path.exists(config) is test_mode
    assert live(root, "vfs_cache_pressure") == 200


def test_reverted_with_read_only_proc_sys_fails_and_changes_nothing(host, test_mode, monkeypatch):
    root, config = host
    _tune(root, config, vfs_cache_pressure=200)
    monkeypatch.setattr(opsalt_vmtune.os, "access", lambda path, mode: False)
    ret = vmtune_state.reverted("vm", config=config, proc_root=root)
    assert ret["result"] is False and ret["changes"] == {}
    assert "read-only" in ret["comment"] and "Nothing changed" in ret["comment"]
    assert live(root, "vfs_cache_pressure") == 200 and os.path.exists(config)


def test_revert_puts_values_back_when_the_kernel_refuses_one(host, test_mode, monkeypatch):
    root, config = host
    _tune(root, config, min_free_kbytes=1081344, vfs_cache_pressure=200)
    real_write = opsalt_vmtune.write_sysctl

    def refuse_vfs(name, value, proc_root=None):
        if name == "vm.vfs_cache_pressure" and value == 100:
            raise OSError(22, "Invalid argument")
        real_write(name, value, proc_root)

    monkeypatch.setattr(opsalt_vmtune, "write_sysctl", refuse_vfs)
    ret = vmtune_state.reverted("vm", config=config, proc_root=root)
    if test_mode:
        assert ret["result"] is None
        return
    assert ret["result"] is False and ret["changes"] == {}
    assert "refused vm.vfs_cache_pressure" in ret["comment"] and "stays in place" in ret["comment"]
    assert live(root, "min_free_kbytes") == 1081344 and live(root, "vfs_cache_pressure") == 200
    assert os.path.exists(config)
