"""
The vmtune execution module against the fixture proc trees: exact numbers
worked out by hand from each tree (tests/support/proc_trees/generate.py has
the kernel formulas), the guards, and writes into a copy of a tree.
"""

import errno
import json
import os

import jsonschema
import opsalt_files
import opsalt_vmtune
import pytest
from salt.exceptions import CommandExecutionError

from tests.support.asset_api import REPO_ROOT
from tests.support.proc_trees import (
    PLANTED_MARKER,
    TEST_POLICY,
    call_with_timeout,
    config_get,
    load_component,
    plant_unsafe,
    tree,
    writable_copy,
)

vmtune = load_component("_modules")


@pytest.fixture
def configure_loader_modules():
    return {vmtune: {"__salt__": {"config.get": config_get()}, "__opts__": {}}}


@pytest.fixture
def proc_copy(tmp_path):
    """
    A writable copy of a fixture tree, and a config path beside it.
    """

    def _copy(name):
        return writable_copy(name, tmp_path / name), str(tmp_path / "60-opsalt-vmtune.conf")

    return _copy


def snapshot(root, config):
    files = {}
    for key in vmtune.MANAGED:
        path = opsalt_vmtune.sysctl_path(f"vm.{key}", root)
        if os.path.exists(path):
            files[key] = open(path).read()
    files["config"] = open(config).read() if os.path.exists(config) else None
    files["dir"] = sorted(os.listdir(os.path.dirname(config)))
    return files


def test_virtual_on_linux():
    assert vmtune.__virtual__() == "vmtune"


def test_zoneinfo_seed_in_pages_and_kib():
    normal = vmtune.zoneinfo(proc_root=tree("seed"))[2]
    assert normal["zone"] == "Normal"
    assert normal["pages"] == {"free": 20198, "min": 15319, "low": 19148, "high": 22978, "managed": 7469900}
    assert normal["kib"] == {"free": 80792, "min": 61276, "low": 76592, "high": 91912, "managed": 29879600}


def test_zoneinfo_new_kernel_keeps_boost_and_promo():
    normal = vmtune.zoneinfo(proc_root=tree("new-kernel"))[2]
    assert normal["pages"]["boost"] == 0 and normal["pages"]["promo"] == 23933


def test_proc_root_from_the_nested_config_key(monkeypatch, caplog):
    # issue 14: vmtune:proc_root, nested like every other component's keys
    monkeypatch.setitem(vmtune.__salt__, "config.get", config_get({"vmtune:proc_root": tree("seed")}))
    assert vmtune.zoneinfo()[2]["pages"]["min"] == 15319
    assert "deprecated" not in caplog.text


def test_flat_config_keys_still_work_and_warn(proc_copy, monkeypatch, caplog):
    root, config = proc_copy("seed")
    monkeypatch.setitem(
        vmtune.__salt__, "config.get", config_get({"vmtune.proc_root": root, "vmtune.config": config})
    )
    with caplog.at_level("WARNING"):
        assert vmtune.current()["config"] == config
        vmtune.apply(vfs_cache_pressure=200)
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", root) == 200 and os.path.exists(config)
    assert "vmtune.proc_root is deprecated" in caplog.text and "as vmtune:proc_root" in caplog.text
    assert "vmtune.config is deprecated" in caplog.text


def test_nested_key_wins_over_the_flat_one(proc_copy, monkeypatch):
    root, config = proc_copy("seed")
    monkeypatch.setitem(
        vmtune.__salt__,
        "config.get",
        config_get({"vmtune:config": config, "vmtune.config": "/etc/sysctl.d/old.conf"}),
    )
    assert vmtune.current(proc_root=root)["config"] == config


def test_revert_uses_the_configured_config(proc_copy, monkeypatch):
    # issue 14: `salt-call vmtune.revert` honours vmtune:config (pillar or minion config)
    root, config = proc_copy("seed")
    vmtune.apply(vfs_cache_pressure=200, config=config, proc_root=root)
    monkeypatch.setitem(
        vmtune.__salt__, "config.get", config_get({"vmtune:config": config, "vmtune:proc_root": root})
    )
    vmtune.revert()
    assert not os.path.exists(config)
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", root) == 100


def test_gaps_seed_is_the_15_mb_of_the_issue():
    result = vmtune.gaps(proc_root=tree("seed"))
    assert result["smallest_min_to_low_kib"] == 15316  # (19148 - 15319) pages * 4 KiB
    assert result["smallest_low_to_high_kib"] == 15320  # (22978 - 19148) * 4
    assert result["smallest_zone"] == "node 0 Normal"
    normal = result["zones"][2]
    assert normal["free_above_min_kib"] == 19516 and normal["primary"] is True
    assert [z["primary"] for z in result["zones"]] == [False, False, True]


def test_gaps_multinode_takes_the_smallest_primary_zone():
    result = vmtune.gaps(proc_root=tree("multinode"))
    assert [(z["node"], z["zone"]) for z in result["zones"] if z["primary"]] == [(0, "Normal"), (1, "Normal")]
    assert result["smallest_min_to_low_kib"] == 29800  # node 0: 17671 - 10221 = 7450 pages
    assert result["smallest_zone"] == "node 0 Normal"
    # empty Movable zones are left out
    assert all(z["zone"] != "Movable" for z in result["zones"])


def test_recommend_seed_covers_a_25_mb_query():
    advice = vmtune.recommend(25600, proc_root=tree("seed"))
    assert advice["min_free_kbytes"] == 113664  # 111 MiB: Normal min 25763 pages, gap 6440 pages
    assert advice["predicted"] == [{"node": 0, "zone": "Normal", "min_to_low_kib": 25760}]
    assert advice["predicted"][0]["min_to_low_kib"] >= 25 * 1024
    assert advice["covers_burst"] is True
    assert advice["watermark_scale_factor"] is None  # 3.10 has none
    assert advice["current"] == {"min_free_kbytes": 67584, "watermark_scale_factor": None}
    assert advice["cap_kb"] == 1647616 and advice["kernel_default_min_free_kbytes"] == 22962
    assert any("15316 KiB" in line for line in advice["reasoning"])


def test_recommend_seed_ten_concurrent_queries_is_the_teams_fix():
    # The team set 1081344 by hand for about ten 25 MB queries at once.
    advice = vmtune.recommend(256000, proc_root=tree("seed"))
    assert advice["min_free_kbytes"] == 1129472
    assert advice["predicted"][0]["min_to_low_kib"] == 256012


def test_recommend_keeps_settings_that_already_cover():
    advice = vmtune.recommend(25600, proc_root=tree("multinode"))
    assert (advice["min_free_kbytes"], advice["watermark_scale_factor"]) == (90112, 10)
    assert [p["min_to_low_kib"] for p in advice["predicted"]] == [29800, 32800]
    assert "no change" in advice["reasoning"][-1]


def test_recommend_widens_with_watermark_scale_factor_above_the_cap():
    advice = vmtune.recommend(200000, proc_root=tree("new-kernel"))
    # min_free_kbytes alone would need ~988 MB, above 5% of 16 GB
    assert advice["min_free_kbytes"] == 67584
    assert advice["watermark_scale_factor"] == 152  # ceil(50000 pages * 10000 / 3300000)
    assert advice["predicted"][0]["min_to_low_kib"] == 200640
    assert advice["covers_burst"] is True


def test_recommend_old_kernel():
    advice = vmtune.recommend(25600, proc_root=tree("old-kernel"))
    assert advice["min_free_kbytes"] == 162816 and advice["watermark_scale_factor"] == 10
    assert advice["predicted"][0]["min_to_low_kib"] >= 25600


def test_recommend_beyond_the_cap_without_scale_factor_does_not_cover():
    advice = vmtune.recommend(600000, proc_root=tree("seed"))
    assert advice["covers_burst"] is False
    assert advice["min_free_kbytes"] <= advice["cap_kb"]
    assert "raise max_percent" in advice["reasoning"][-1]


@pytest.mark.parametrize("burst", [-1, 0, "abc", 1.5, True, None])
def test_recommend_rejects_bad_burst(burst):
    with pytest.raises(CommandExecutionError, match="burst_kb"):
        vmtune.recommend(burst, proc_root=tree("seed"))


@pytest.mark.parametrize("percent", [0, -3, 80, "x"])
def test_recommend_rejects_bad_max_percent(percent):
    with pytest.raises(CommandExecutionError, match="max_percent"):
        vmtune.recommend(25600, max_percent=percent, proc_root=tree("seed"))


def test_reader_error_names_the_proc_root(tmp_path):
    with pytest.raises(CommandExecutionError, match="vmtune:proc_root") as caught:
        vmtune.zoneinfo(proc_root=str(tmp_path))
    # the cause is kept (no secret in an OSError from a proc tree)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_reclaim_stats_rates_over_the_interval(proc_copy, monkeypatch):
    root, _config = proc_copy("seed")

    def advance(seconds):
        # the kernel bumps counters while we wait
        with open(os.path.join(root, "vmstat"), "a") as handle:
            handle.write("allocstall 3250\ncompact_stall 852\n")
        monkeypatch.setattr(vmtune.time, "monotonic", lambda: 1002.0)

    monkeypatch.setattr(vmtune.time, "monotonic", lambda: 1000.0)
    monkeypatch.setattr(vmtune.time, "sleep", advance)
    stats = vmtune.reclaim_stats(interval=2, proc_root=root)
    assert stats["counters"]["allocstall"] == 3250
    assert stats["rates"]["allocstall"] == 50.0
    assert stats["rates"]["compact_stall"] == 20.0
    assert stats["rates"]["pgscan_direct"] == 0.0


def test_reclaim_stats_counters_only_and_bad_interval():
    stats = vmtune.reclaim_stats(interval=0, proc_root=tree("old-kernel"))
    assert stats["rates"] is None and stats["counters"]["allocstall"] == 17
    with pytest.raises(CommandExecutionError, match="interval"):
        vmtune.reclaim_stats(interval=-1, proc_root=tree("old-kernel"))


def test_current_reads_live_and_file(proc_copy):
    root, config = proc_copy("new-kernel")
    with open(config, "w") as handle:
        handle.write("# by hand\nvm.min_free_kbytes = 90112\nvm.swappiness=10\n")
    assert vmtune.current(config=config, proc_root=root) == {
        "live": {"vm.min_free_kbytes": 67584, "vm.vfs_cache_pressure": 100, "vm.watermark_scale_factor": 10},
        "persisted": {"vm.min_free_kbytes": 90112, "vm.swappiness": 10},
        "config": config,
        "config_exists": True,
    }


def test_apply_sets_live_and_persists_then_nothing_to_do(proc_copy):
    root, config = proc_copy("seed")
    steps = vmtune.apply(min_free_kbytes=1081344, vfs_cache_pressure=200, config=config, proc_root=root)
    assert steps["live"] == {
        "vm.min_free_kbytes": {"old": 67584, "new": 1081344},
        "vm.vfs_cache_pressure": {"old": 100, "new": 200},
    }
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes", root) == 1081344
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", root) == 200
    text = open(config).read()
    assert "vm.min_free_kbytes = 1081344\nvm.vfs_cache_pressure = 200\n" in text
    again = vmtune.plan(min_free_kbytes=1081344, vfs_cache_pressure=200, config=config, proc_root=root)
    assert again["live"] == {} and again["file"]["changed"] is False
    # a different value replaces the file and keeps the old one as a backup
    steps = vmtune.apply(min_free_kbytes=1081344, vfs_cache_pressure=150, config=config, proc_root=root)
    assert "+vm.vfs_cache_pressure = 150" in steps["file"]["diff"]
    assert open(steps["file"]["backup"]).read() == text


def test_backups_keep_from_the_minion_config(proc_copy, monkeypatch):
    root, config = proc_copy("seed")
    monkeypatch.setitem(vmtune.__salt__, "config.get", config_get({"opsalt:backups:keep": 1}))
    for pressure in (110, 120, 130, 140):
        vmtune.apply(vfs_cache_pressure=pressure, config=config, proc_root=root)
    (backup,) = opsalt_files.list_backups(config)
    assert "vm.vfs_cache_pressure = 130" in open(backup).read()
    vmtune.revert(config=config, proc_root=root)
    (backup,) = opsalt_files.list_backups(config)
    assert "vm.vfs_cache_pressure = 140" in open(backup).read()
    # a bad value refuses before any live value or file changes
    vmtune.apply(vfs_cache_pressure=150, config=config, proc_root=root)
    before = snapshot(root, config)
    monkeypatch.setitem(vmtune.__salt__, "config.get", config_get({"opsalt:backups:keep": 0}))
    with pytest.raises(CommandExecutionError, match="opsalt:backups:keep"):
        vmtune.apply(vfs_cache_pressure=160, config=config, proc_root=root)
    assert snapshot(root, config) == before


def test_apply_auto_uses_the_recommendation(proc_copy):
    root, config = proc_copy("seed")
    steps = vmtune.apply(min_free_kbytes="auto", burst_kb=25600, config=config, proc_root=root)
    assert steps["desired"] == {"min_free_kbytes": 113664}
    assert steps["reasoning"][-1].startswith("min_free_kbytes 113664")
    assert vmtune.plan(min_free_kbytes="auto", burst_kb=25600, config=config, proc_root=root)["live"] == {}


def test_apply_auto_sets_watermark_scale_factor_when_capped(proc_copy):
    root, config = proc_copy("new-kernel")
    steps = vmtune.apply(min_free_kbytes="auto", burst_kb=200000, config=config, proc_root=root)
    assert steps["desired"] == {"min_free_kbytes": 67584, "watermark_scale_factor": 152}
    assert opsalt_vmtune.read_sysctl("vm.watermark_scale_factor", root) == 152
    again = vmtune.plan(min_free_kbytes="auto", burst_kb=200000, config=config, proc_root=root)
    assert again["live"] == {} and again["file"]["changed"] is False


BAD = [
    ({"min_free_kbytes": 1000}, "below 1024"),
    ({"min_free_kbytes": 2_000_000}, "above 5% of MemTotal"),
    ({"min_free_kbytes": -5}, "at least 0"),
    ({"min_free_kbytes": "12.5"}, "must be an integer"),
    ({"min_free_kbytes": 12.5}, "must be an integer"),
    ({"min_free_kbytes": "lots"}, "must be an integer"),
    ({"min_free_kbytes": "auto"}, "needs burst_kb"),
    ({"min_free_kbytes": "auto", "burst_kb": 600000}, "cannot be covered"),
    ({"vfs_cache_pressure": 0}, "allow_zero"),
    ({"vfs_cache_pressure": -1}, "at least 0"),
    ({"vfs_cache_pressure": "high"}, "must be an integer"),
    ({"watermark_scale_factor": 100}, "no vm.watermark_scale_factor"),
    ({"watermark_scale_factor": 0}, "at least 1"),
    ({"burst_kb": 100, "vfs_cache_pressure": 200}, "only used with min_free_kbytes: auto"),
    ({}, "nothing to tune"),
    ({"vfs_cache_pressure": 200, "max_percent": 99}, "max_percent"),
]


@pytest.mark.parametrize("kwargs, message", BAD)
def test_bad_input_fails_and_changes_nothing(proc_copy, kwargs, message):
    root, config = proc_copy("seed")
    with open(config, "w") as handle:
        handle.write("vm.vfs_cache_pressure = 100\n")
    before = snapshot(root, config)
    with pytest.raises(CommandExecutionError, match=message):
        vmtune.apply(config=config, proc_root=root, **kwargs)
    assert snapshot(root, config) == before


def test_vfs_cache_pressure_zero_needs_the_operators_policy(proc_copy, monkeypatch):
    # issue 12: allow_zero is a safety limit; pillar's allow_zero alone cannot lift it
    root, config = proc_copy("seed")
    before = snapshot(root, config)
    with pytest.raises(CommandExecutionError, match="opsalt:policy:vmtune:allow_zero"):
        vmtune.apply(vfs_cache_pressure=0, allow_zero=True, config=config, proc_root=root)
    assert snapshot(root, config) == before
    policy = {**TEST_POLICY, "vmtune": {"allow_zero": True}}
    monkeypatch.setitem(vmtune.__salt__, "config.get", config_get(policy=policy))
    with pytest.raises(CommandExecutionError, match="set allow_zero: true"):
        vmtune.apply(vfs_cache_pressure=0, config=config, proc_root=root)
    vmtune.apply(vfs_cache_pressure=0, allow_zero=True, config=config, proc_root=root)
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", root) == 0


def test_max_percent_is_bounded_by_the_operators_policy(proc_copy, monkeypatch):
    # seed: MemTotal 31 GiB; 5% (default policy) caps min_free_kbytes at ~1.6 GB
    root, config = proc_copy("seed")
    with pytest.raises(CommandExecutionError, match=r"vmtune:max_percent: 8\.0 is above the policy limit 5"):
        vmtune.plan(min_free_kbytes=2_000_000, max_percent=8, config=config, proc_root=root)
    # a narrower cap than the policy's is the pillar's to choose
    with pytest.raises(CommandExecutionError, match="above 1% of MemTotal"):
        vmtune.plan(min_free_kbytes=1_000_000, max_percent=1, config=config, proc_root=root)
    policy = {**TEST_POLICY, "vmtune": {"max_percent": 8}}
    monkeypatch.setitem(vmtune.__salt__, "config.get", config_get(policy=policy))
    assert vmtune.plan(min_free_kbytes=2_000_000, max_percent=8, config=config, proc_root=root)["live"]
    # without max_percent the operator's limit is the cap
    assert vmtune.plan(min_free_kbytes=2_000_000, config=config, proc_root=root)["live"]
    assert vmtune.recommend(25600, proc_root=root)["max_percent"] == 8


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("config", "relative/60.conf", "vmtune:config: 'relative/60.conf' is not an absolute path"),
        ("config", "/etc/sysctl.d/../cron.d/x", "is not normalised"),
        ("config", "/etc/sysctl.d/60.conf\nvm.x = 1", "line break"),
        ("proc_root", "proc", "vmtune:proc_root: 'proc' is not an absolute path"),
        ("proc_root", "/proc/", "is not normalised"),
    ],
)
def test_bad_paths_are_refused(proc_copy, key, value, message):
    root, config = proc_copy("seed")
    before = snapshot(root, config)
    kwargs = {"config": config, "proc_root": root, key: value}
    with pytest.raises(CommandExecutionError, match=message):
        vmtune.apply(vfs_cache_pressure=200, **kwargs)
    assert snapshot(root, config) == before


@pytest.mark.parametrize("func", ["plan", "apply", "plan_revert", "revert"])
def test_paths_outside_the_default_policy_are_refused(proc_copy, monkeypatch, func):
    # issue 12: where vmtune writes is the operator's decision (config only
    # under /etc/sysctl.d, proc_root only /proc by default)
    root, config = proc_copy("seed")
    monkeypatch.setitem(vmtune.__salt__, "config.get", config_get(policy=None))
    kwargs = {"vfs_cache_pressure": 200} if func in ("plan", "apply") else {}
    before = snapshot(root, config)
    with pytest.raises(
        CommandExecutionError, match="vmtune:proc_root: .* outside the allowed paths \\(/proc\\)"
    ):
        getattr(vmtune, func)(config="/etc/sysctl.d/60-opsalt-vmtune.conf", proc_root=root, **kwargs)
    with pytest.raises(CommandExecutionError) as caught:
        getattr(vmtune, func)(config=config, proc_root="/proc", **kwargs)
    assert "vmtune:config" in str(caught.value) and "(/etc/sysctl.d)" in str(caught.value)
    assert "opsalt:policy:vmtune:allowed_paths" in str(caught.value)
    assert snapshot(root, config) == before
    # the operator's policy (the minion config) widens it, per component or for all
    for policy in ({"vmtune": {"allowed_paths": ["/tmp"]}}, {"allowed_paths": ["/tmp"]}):
        monkeypatch.setitem(vmtune.__salt__, "config.get", config_get(policy=policy))
        getattr(vmtune, func)(config=config, proc_root=root, **kwargs)


READERS = {
    "zoneinfo": lambda root: vmtune.zoneinfo(proc_root=root),
    "gaps": lambda root: vmtune.gaps(proc_root=root),
    "reclaim_stats": lambda root: vmtune.reclaim_stats(interval=0, proc_root=root),
    "current": lambda root: vmtune.current(config="/etc/sysctl.d/60-opsalt-vmtune.conf", proc_root=root),
    "recommend": lambda root: vmtune.recommend(25600, proc_root=root),
    "kernel_default_min_free_kbytes": lambda root: vmtune.kernel_default_min_free_kbytes(proc_root=root),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_readers_refuse_a_proc_root_outside_the_policy(monkeypatch, reader):
    # issue 12: the pillar cannot send root's reads (every beacon interval)
    # into a tree someone else controls; /proc or the operator's allowed paths
    monkeypatch.setitem(vmtune.__salt__, "config.get", config_get(policy=None))
    with pytest.raises(
        CommandExecutionError, match=r"vmtune:proc_root: .* outside the allowed paths \(/proc\)"
    ):
        READERS[reader](tree("seed"))
    monkeypatch.setitem(
        vmtune.__salt__,
        "config.get",
        config_get(policy={"vmtune": {"allowed_paths": [os.path.dirname(tree("seed"))]}}),
    )
    assert READERS[reader](tree("seed")) is not None


def test_current_reads_its_config_only_where_the_policy_allows(proc_copy, monkeypatch):
    root, config = proc_copy("seed")
    vmtune.apply(vfs_cache_pressure=200, config=config, proc_root=root)
    assert vmtune.current(config=config, proc_root=root)["persisted"] == {"vm.vfs_cache_pressure": 200}
    monkeypatch.setitem(
        vmtune.__salt__, "config.get", config_get(policy={"vmtune": {"allowed_paths": [root]}})
    )
    with pytest.raises(CommandExecutionError, match=r"vmtune:config: .* outside the allowed paths"):
        vmtune.current(config=config, proc_root=root)


def count_reads(monkeypatch, path):
    """The sizes of what ``os.read`` returns from ``path`` (found by device and inode), as a list."""
    st = os.stat(path)
    read = []
    real_read = os.read

    def counting_read(fd, size):
        data = real_read(fd, size)
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
            read.append(len(data))
        return data

    monkeypatch.setattr(os, "read", counting_read)
    return read


PLANTED = [
    ("zoneinfo", "zoneinfo"),
    ("gaps", "zoneinfo"),
    ("reclaim_stats", "vmstat"),
    ("current", "sys/vm/min_free_kbytes"),
    ("recommend", "meminfo"),
    ("kernel_default_min_free_kbytes", "zoneinfo"),
]


@pytest.mark.parametrize("kind", ["fifo", "huge"])
@pytest.mark.parametrize("reader, relpath", PLANTED)
def test_a_fifo_or_huge_file_under_proc_root_is_refused_promptly(
    proc_copy, monkeypatch, reader, relpath, kind
):
    # issue 12: a FIFO named vmstat would block the beacon for ever, a huge
    # zoneinfo would eat memory; refused from fstat, nothing of it quoted
    root, _config = proc_copy("seed")
    path = plant_unsafe(root, relpath, kind)
    read = count_reads(monkeypatch, path)
    with pytest.raises(CommandExecutionError) as err:
        call_with_timeout(lambda: READERS[reader](root))
    why = (
        "not a regular file" if kind == "fifo" else f"{16 * opsalt_vmtune.MAX_BYTES} bytes is over the limit"
    )
    assert str(err.value).startswith(f"refusing {path}: {why}"), err.value
    assert f"vmtune:proc_root is {root}" in str(err.value)
    assert PLANTED_MARKER not in str(err.value)
    assert sum(read) == 0  # refused before a byte of it was read


def test_a_fifo_as_the_config_file_is_refused_promptly(proc_copy):
    # vmtune.current (the monitoring collector calls it) reads the config too
    root, config = proc_copy("seed")
    os.mkfifo(config)
    with pytest.raises(CommandExecutionError, match=f"vmtune:config: refusing {config}: not a regular file"):
        call_with_timeout(lambda: vmtune.current(config=config, proc_root=root))


def test_write_sysctl_follows_no_link_and_writes_no_fifo(proc_copy, tmp_path):
    # apply reads each value before it writes it (and refuses a link or FIFO
    # there); one swapped in between is refused by the write itself
    root, _config = proc_copy("seed")
    path = opsalt_vmtune.sysctl_path("vm.min_free_kbytes", root)
    opsalt_vmtune.write_sysctl("vm.min_free_kbytes", 90112, root)
    assert open(path, encoding="ascii").read() == "90112\n"  # truncated, as procfs is
    target = tmp_path / "root-only"
    target.write_text("keep\n")
    os.unlink(path)
    os.symlink(target, path)
    with pytest.raises(OSError) as err:
        opsalt_vmtune.write_sysctl("vm.min_free_kbytes", 1, root)
    assert err.value.errno == errno.ELOOP and target.read_text() == "keep\n"
    os.unlink(path)
    os.mkfifo(path)
    with pytest.raises(OSError) as err:  # no reader: the open fails at once
        call_with_timeout(lambda: opsalt_vmtune.write_sysctl("vm.min_free_kbytes", 1, root))
    assert err.value.errno == errno.ENXIO
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(opsalt_vmtune.UnsafePathError, match=f"refusing {path}: not a regular file"):
            opsalt_vmtune.write_sysctl("vm.min_free_kbytes", 1, root)
        assert os.read(reader, 16) == b""  # the writer came and went without a byte
    finally:
        os.close(reader)


def test_a_file_that_grows_past_the_cap_is_refused_after_at_most_the_cap(monkeypatch):
    if not os.path.exists("/proc/zoneinfo"):
        pytest.skip("no /proc/zoneinfo: not a Linux host")
    # real /proc files say st_size 0: the cap holds on the bytes read, not on fstat
    monkeypatch.setattr(opsalt_vmtune, "MAX_BYTES", 100)
    read = count_reads(monkeypatch, "/proc/zoneinfo")
    with pytest.raises(
        CommandExecutionError, match="refusing /proc/zoneinfo: grew over the limit of 100 bytes"
    ):
        vmtune.zoneinfo(proc_root="/proc")
    assert sum(read) == 101  # one byte past the cap tells that it is over


def test_watermark_scale_factor_too_large(proc_copy):
    root, config = proc_copy("new-kernel")
    with pytest.raises(CommandExecutionError, match="above 1000"):
        vmtune.plan(watermark_scale_factor=3000, config=config, proc_root=root)


def test_read_only_proc_sys_fails_before_any_change(proc_copy, monkeypatch):
    root, config = proc_copy("seed")
    before = snapshot(root, config)
    # Root passes permission bits, so a read-only /proc/sys mount (containers)
    # can only be simulated: os.access is what answers EROFS there.
    monkeypatch.setattr(opsalt_vmtune.os, "access", lambda path, mode: False)
    with pytest.raises(CommandExecutionError, match="read-only .*tune it on the host"):
        vmtune.apply(vfs_cache_pressure=200, config=config, proc_root=root)
    assert snapshot(root, config) == before


def test_read_only_does_not_matter_when_live_values_are_right(proc_copy, monkeypatch):
    root, config = proc_copy("seed")
    monkeypatch.setattr(opsalt_vmtune.os, "access", lambda path, mode: False)
    steps = vmtune.apply(vfs_cache_pressure=100, config=config, proc_root=root)
    assert steps["live"] == {} and os.path.exists(config)


def test_kernel_refusal_restores_values_already_written(proc_copy, monkeypatch):
    root, config = proc_copy("new-kernel")
    real_write = opsalt_vmtune.write_sysctl

    def refuse_scale_factor(name, value, proc_root=None):
        if name == "vm.watermark_scale_factor":
            raise OSError(22, "Invalid argument")
        real_write(name, value, proc_root)

    monkeypatch.setattr(opsalt_vmtune, "write_sysctl", refuse_scale_factor)
    with pytest.raises(
        CommandExecutionError, match="refused vm.watermark_scale_factor = 200.*restored vm.min_free_kbytes"
    ):
        vmtune.apply(min_free_kbytes=90112, watermark_scale_factor=200, config=config, proc_root=root)
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes", root) == 67584
    assert not os.path.exists(config)


def test_missing_config_directory(proc_copy, tmp_path):
    root, _config = proc_copy("seed")
    with pytest.raises(CommandExecutionError, match="does not exist"):
        vmtune.plan(vfs_cache_pressure=200, config=str(tmp_path / "nope" / "x.conf"), proc_root=root)


def test_real_proc_readers():
    if not os.path.exists("/proc/zoneinfo"):
        pytest.skip("no /proc/zoneinfo: not a Linux host")
    assert vmtune.zoneinfo(proc_root="/proc")
    assert vmtune.gaps(proc_root="/proc")["smallest_min_to_low_kib"] > 0
    assert vmtune.recommend(25600, proc_root="/proc")["covers_burst"] is True
    live = vmtune.current(config="/tmp/opsalt-nonexistent/x.conf", proc_root="/proc")["live"]
    assert live["vm.min_free_kbytes"] == int(open("/proc/sys/vm/min_free_kbytes").read())


@pytest.mark.parametrize(
    "section",
    [
        {"min_free_kbytes": 512},
        {"min_free_kbytes": "auto"},
        {"burst_kb": 25600},
        {"min_free_kbytes": 12.5},
        {"vfs_cache_pressure": -1},
        {"watermark_scale_factor": 0},
        {"beacon": {"allocstall_rate": -1}},
        {"beacon": {"treshold": 1}},
        {"min_free_kbytes": 65536, "typo": 1},
    ],
)
def test_pillar_schema_rejects_bad_vmtune_sections(section):
    with open(os.path.join(REPO_ROOT, "schema", "pillar.schema.json"), encoding="utf-8") as handle:
        schema = json.load(handle)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors({"vmtune": section}))
    assert not list(validator.iter_errors({"vmtune": {"min_free_kbytes": "auto", "burst_kb": 25600}}))


def test_file_write_failure_puts_live_values_back(proc_copy, monkeypatch):
    root, config = proc_copy("seed")

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vmtune.opsalt_files, "atomic_write", disk_full)
    with pytest.raises(CommandExecutionError, match="No space left on device; live values put back"):
        vmtune.apply(min_free_kbytes=90112, vfs_cache_pressure=200, config=config, proc_root=root)
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes", root) == 67584
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", root) == 100


def test_a_parse_error_never_repeats_the_files_content(proc_copy):
    """A proc_root the pillar chose may hold a link to a root-only file."""
    root, _ = proc_copy("seed")
    with open(os.path.join(root, "zoneinfo"), "w") as handle:
        handle.write("Node 0, zone   Normal\n  pages free root-secret-5f3a\n")
    with pytest.raises(CommandExecutionError) as err:
        vmtune.zoneinfo(proc_root=root)
    assert "root-secret-5f3a" not in str(err.value) and "cannot parse" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
