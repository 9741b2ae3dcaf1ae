"""
opsalt_vmtune against the fixture proc trees (tests/support/proc_trees) and the
real /proc of the test machine.
"""

import os

import opsalt_vmtune
import pytest

from tests.support.proc_trees import tree


def test_zoneinfo_seed_host_has_the_issue_numbers():
    zones = opsalt_vmtune.read_zoneinfo(tree("seed"))
    assert [(z["node"], z["zone"]) for z in zones] == [(0, "DMA"), (0, "DMA32"), (0, "Normal")]
    normal = zones[2]
    assert normal == {
        "node": 0,
        "zone": "Normal",
        "free": 20198,
        "min": 15319,
        "low": 19148,
        "high": 22978,
        "scanned": 0,
        "spanned": 7602176,
        "present": 7469917,
        "managed": 7469900,
    }
    # 3.10 prints nr_*/numa_* counters inside the watermark block: not fields.
    assert "nr_free_pages" not in normal and "numa_hit" not in normal


def test_zoneinfo_new_kernel_tolerates_boost_and_promo():
    zones = opsalt_vmtune.read_zoneinfo(tree("new-kernel"))
    normal = [z for z in zones if z["zone"] == "Normal"][0]
    assert (normal["boost"], normal["min"], normal["low"], normal["high"], normal["promo"]) == (
        0,
        13676,
        17095,
        20514,
        23933,
    )
    assert normal["managed"] == 3300000
    assert [z["zone"] for z in zones] == ["DMA", "DMA32", "Normal", "Movable", "Device"]
    # per-node stats before "pages free" are not zone fields
    assert "nr_inactive_anon" not in zones[0]


def test_zoneinfo_multinode():
    zones = opsalt_vmtune.read_zoneinfo(tree("multinode"))
    assert [(z["node"], z["zone"], z["min"], z["low"], z["high"]) for z in zones if z["managed"]] == [
        (0, "DMA", 5, 8, 11),
        (0, "DMA32", 1049, 1814, 2579),
        (0, "Normal", 10221, 17671, 25121),
        (1, "Normal", 11250, 19450, 27650),
    ]


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "seed",
            {
                "pgscan_direct": 512400,
                "pgsteal_direct": 402310,
                "pgscan_kswapd": 991500,
                "pgsteal_kswapd": 881200,
                "allocstall": 3150,
                "compact_stall": 812,
                "kswapd_low_wmark_hit_quickly": 2201,
            },
        ),
        (
            "old-kernel",
            {
                "pgscan_direct": 300,
                "pgsteal_direct": 200,
                "pgscan_kswapd": 1500,
                "pgsteal_kswapd": 1000,
                "allocstall": 17,
                "compact_stall": 5,
                "kswapd_low_wmark_hit_quickly": 9,
            },
        ),
        (
            "multinode",
            {
                "pgscan_direct": 9000,
                "pgsteal_direct": 7000,
                "pgscan_kswapd": 64000,
                "pgsteal_kswapd": 50000,
                "allocstall": 100,
                "compact_stall": 12,
                "kswapd_low_wmark_hit_quickly": 40,
            },
        ),
    ],
)
def test_reclaim_counters_old_and_new_kernels(name, expected):
    assert opsalt_vmtune.reclaim_counters(opsalt_vmtune.read_vmstat(tree(name))) == expected


def test_zoned_sum_ignores_pgscan_direct_throttle_and_reports_missing():
    vmstat = {"pgscan_direct_normal": 5, "pgscan_direct_dma32": 2, "pgscan_direct_throttle": 1000}
    assert opsalt_vmtune.zoned_sum(vmstat, "pgscan_direct") == 7
    assert opsalt_vmtune.zoned_sum(vmstat, "allocstall") is None


def test_rates():
    before = {"allocstall": 10, "pgscan_direct": 100, "compact_stall": None}
    after = {"allocstall": 30, "pgscan_direct": 50, "compact_stall": 4}
    assert opsalt_vmtune.rates(before, after, 4.0) == {
        "allocstall": 5.0,
        "pgscan_direct": 0.0,
        "compact_stall": None,
    }
    assert opsalt_vmtune.rates(before, after, 0) == {
        "allocstall": None,
        "pgscan_direct": None,
        "compact_stall": None,
    }


def test_meminfo_loadavg_cpus():
    assert opsalt_vmtune.read_meminfo(tree("seed"))["MemTotal"] == 32955392
    assert opsalt_vmtune.read_meminfo(tree("seed"))["HugePages_Total"] == 0
    assert opsalt_vmtune.read_loadavg(tree("seed")) == {
        "load1": 5.12,
        "load5": 2.10,
        "load15": 1.03,
        "running": 9,
        "total": 812,
    }
    assert opsalt_vmtune.cpu_count(tree("seed")) == 16
    assert opsalt_vmtune.cpu_count(tree("multinode")) == 32


def test_top_pss_orders_by_pss_and_skips_processes_without_rollup():
    assert opsalt_vmtune.top_pss(tree("multinode"), 3) == [
        {"pid": 3003, "comm": "redis-server", "pss_kb": 2100000},
        {"pid": 3001, "comm": "postgres", "pss_kb": 812000},
        {"pid": 3002, "comm": "postgres", "pss_kb": 412000},
    ]
    # 4.9: nginx has neither smaps_rollup nor smaps (a kernel thread would not)
    assert opsalt_vmtune.top_pss(tree("old-kernel")) == []


def test_top_pss_sums_smaps_where_the_kernel_has_no_rollup():
    # 3.10 has no smaps_rollup (4.14+): each mapping's Pss in smaps is added up
    assert opsalt_vmtune.top_pss(tree("seed")) == [
        {"pid": 1201, "comm": "postmaster", "pss_kb": 1048576 + 3145728},
        {"pid": 2202, "comm": "php-fpm", "pss_kb": 20480 + 61440},
    ]
    assert opsalt_vmtune.read_smaps_rollup(1201, tree("seed")) == {
        "Size": 8388608,
        "Rss": 8388608,
        "Pss": 4194304,
        "Shared_Clean": 4194304,
        "Swap": 0,
    }


def test_sysctls():
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes", tree("seed")) == 67584
    assert opsalt_vmtune.read_sysctl("vm.watermark_scale_factor", tree("seed")) is None
    assert opsalt_vmtune.read_sysctl("vm.watermark_scale_factor", tree("old-kernel")) == 10
    assert opsalt_vmtune.sysctl_path("vm.vfs_cache_pressure", "/x") == "/x/sys/vm/vfs_cache_pressure"


def test_write_sysctl_roundtrip(tmp_path):
    (tmp_path / "sys" / "vm").mkdir(parents=True)
    # a sysctl the kernel lacks is not created (procfs has every file it knows)
    with pytest.raises(FileNotFoundError):
        opsalt_vmtune.write_sysctl("vm.vfs_cache_pressure", 200, str(tmp_path))
    (tmp_path / "sys" / "vm" / "vfs_cache_pressure").write_text("100\n")
    opsalt_vmtune.write_sysctl("vm.vfs_cache_pressure", 200, str(tmp_path))
    assert opsalt_vmtune.read_sysctl("vm.vfs_cache_pressure", str(tmp_path)) == 200
    assert opsalt_vmtune.sysctl_writable("vm.vfs_cache_pressure", str(tmp_path))


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        opsalt_vmtune.read_zoneinfo(str(tmp_path))


def test_real_proc_reads_without_error():
    if not os.path.exists("/proc/zoneinfo"):
        pytest.skip("no /proc/zoneinfo: not a Linux host")
    zones = opsalt_vmtune.read_zoneinfo()
    assert zones and all({"free", "min", "low", "high", "managed"} <= set(z) for z in zones)
    assert all(z["min"] <= z["low"] <= z["high"] for z in zones)
    counters = opsalt_vmtune.reclaim_counters(opsalt_vmtune.read_vmstat())
    assert counters["pgscan_direct"] is not None and counters["allocstall"] is not None
    assert opsalt_vmtune.read_meminfo()["MemTotal"] > 0
    assert opsalt_vmtune.cpu_count() == os.cpu_count()
    assert opsalt_vmtune.read_loadavg()["load1"] >= 0
    top = opsalt_vmtune.top_pss(limit=3)
    assert 1 <= len(top) <= 3 and top[0]["pss_kb"] >= top[-1]["pss_kb"]
    assert opsalt_vmtune.read_sysctl("vm.min_free_kbytes") >= 128


def test_top_pss_pruned_by_rss_reads_fewer_rollups_same_answer(tmp_path, monkeypatch):
    page_kb = opsalt_vmtune.page_size() // 1024
    # pid: (rss kB, pss kB); Pss <= Rss always
    procs = {
        10: (900_000, 800_000),
        11: (850_000, 100_000),
        12: (700_000, 650_000),
        13: (300_000, 290_000),
        14: (200_000, 150_000),
        15: (90_000, 80_000),
    }
    for pid, (rss, pss) in procs.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "statm").write_text(f"{rss // page_kb * 2} {rss // page_kb} 10 1 0 5 0\n")
        (tmp_path / str(pid) / "comm").write_text(f"p{pid}\n")
        (tmp_path / str(pid) / "smaps_rollup").write_text(
            f"0-1 ---p 0 00:00 0 [rollup]\nRss: {rss} kB\nPss: {pss} kB\n"
        )
    full = opsalt_vmtune.top_pss(str(tmp_path), 2, prune=False)
    read = []
    real = opsalt_vmtune.read_smaps_rollup
    monkeypatch.setattr(
        opsalt_vmtune,
        "read_smaps_rollup",
        lambda pid, proc_root=None: read.append(pid) or real(pid, proc_root),
    )
    assert (
        opsalt_vmtune.top_pss(str(tmp_path), 2)
        == full
        == [
            {"pid": 10, "comm": "p10", "pss_kb": 800_000},
            {"pid": 12, "comm": "p12", "pss_kb": 650_000},
        ]
    )
    # after 10, 11, 12 the next Rss (300000) cannot beat the kept 650000
    assert read == ["10", "11", "12"]


def test_real_smaps_fallback_matches_the_rollup(tmp_path):
    # a proc root whose pid dir has this process's real smaps but no smaps_rollup
    pid_dir = tmp_path / "4242"
    pid_dir.mkdir()
    with open("/proc/self/smaps", encoding="ascii") as handle:
        (pid_dir / "smaps").write_text(handle.read())
    rollup = opsalt_vmtune.read_smaps_rollup("self")
    summed = opsalt_vmtune.read_smaps_rollup(4242, str(tmp_path))
    # the two reads are moments apart: the process may have touched a few pages
    assert abs(summed["Pss"] - rollup["Pss"]) <= rollup["Pss"] * 0.05 + 256
    assert abs(summed["Rss"] - rollup["Rss"]) <= rollup["Rss"] * 0.05 + 256


def test_top_pss_of_live_processes_comes_from_psutil(monkeypatch):
    # issue 14: live processes through psutil, not hand-parsed /proc/<pid>
    calls = []
    real = opsalt_vmtune._live_pss
    monkeypatch.setattr(opsalt_vmtune, "_live_pss", lambda proc: calls.append(proc.pid) or real(proc))
    monkeypatch.setattr(opsalt_vmtune, "read_smaps_rollup", lambda *a, **k: pytest.fail("file reader used"))
    top = opsalt_vmtune.top_pss("/proc", limit=100_000, prune=False)
    assert os.getpid() in calls
    assert [row["pss_kb"] for row in top] == sorted((row["pss_kb"] for row in top), reverse=True)
    (mine,) = [row for row in top if row["pid"] == os.getpid()]
    with open("/proc/self/smaps_rollup", encoding="ascii") as handle:
        pss = next(int(line.split()[1]) for line in handle if line.startswith("Pss:"))
    assert mine["comm"] == open("/proc/self/comm", encoding="ascii").read().strip()
    assert abs(mine["pss_kb"] - pss) <= pss * 0.05 + 256
