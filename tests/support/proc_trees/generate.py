"""
Writes the fixture proc trees next to this file. Run it only to change them:
the trees are committed, and the tests assert numbers worked out by hand.

Watermarks follow mm/page_alloc.c of each kernel generation: a zone's min is
min_free_kbytes/4 pages split by the zone's share of lowmem managed pages;
before 4.6 low = min + min/4 and high = min + min/2; since 4.6
gap = max(min/4, managed * watermark_scale_factor / 10000),
low = min + gap, high = min + 2 * gap.

- seed:       the PostgreSQL host from issue 4 (CentOS 7, 3.10, 16 CPUs,
              32 GB; Normal zone free 20198, min 15319, low 19148, high 22978);
              plain allocstall and per-zone pgscan_direct_*; no
              watermark_scale_factor, no smaps_rollup (Pss from smaps).
- multinode:  two NUMA nodes (5.4: boost lines), 64 GB, 32 CPUs.
- old-kernel: 4.9 (plain allocstall, single pgscan_direct), 8 GB, 4 CPUs.
- new-kernel: 6.8 (boost and promo lines, allocstall_<zone>), 16 GB, 8 CPUs.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def watermarks(managed, lowmem, min_free_kbytes, wsf):
    zone_min = (min_free_kbytes // 4) * managed // lowmem
    if wsf is None:
        return zone_min, zone_min + (zone_min >> 2), zone_min + (zone_min >> 1)
    gap = max(zone_min >> 2, managed * wsf // 10000)
    return zone_min, zone_min + gap, zone_min + 2 * gap


def zone_block(style, node, zone, free, managed, spanned, wm, per_node_first):
    zmin, low, high = wm
    out = [f"Node {node}, zone {zone:>8}"]
    if style != "3.10" and per_node_first:
        out += ["  per-node stats", "      nr_inactive_anon 1727", "      nr_active_anon 383",
                "      nr_inactive_file 11794", "      workingset_refault 93472"]
    out.append(f"  pages free     {free}")
    if style in ("5.4", "6.8"):
        out.append("        boost    0")
    out += [f"        min      {zmin}", f"        low      {low}", f"        high     {high}"]
    if style == "6.8":
        out.append(f"        promo    {high + (high - low)}")
    if style == "3.10":
        out.append("        scanned  0")
    if style == "4.9":
        out.append("   node_scanned  0")
    out += [f"        spanned  {spanned}", f"        present  {managed + 17}", f"        managed  {managed}"]
    if style == "6.8":
        out.append("        cma      0")
    if style == "3.10":
        out += [f"    nr_free_pages {free}", "    nr_alloc_batch 63", "    numa_hit     123456789"]
        out.append("        protection: (0, 2815, 31994, 31994)")
    else:
        out.append("        protection: (0, 2815, 31994, 31994, 31994)")
        out.append(f"      nr_free_pages {free}")
    out += ["  pagesets", "    cpu: 0", "              count: 12", "              high:  186",
            "              batch: 31", "  vm stats threshold: 8", "  node_unreclaimable:  0",
            f"  start_pfn:           {1 if zone == 'DMA' else 4096}"]
    return out


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="ascii") as handle:
        handle.write(text)


def tree(name, style, cpus, mem_total_kb, min_free_kbytes, wsf, zones, vmstat, loadavg, procs):
    root = os.path.join(HERE, name)
    lowmem = sum(z[3] for z in zones if z[1] not in ("Movable", "Device"))
    lines = []
    seen_nodes = set()
    for node, zone, free, managed, spanned in zones:
        wm = watermarks(managed, lowmem, min_free_kbytes, wsf) if managed else (0, 0, 0)
        lines += zone_block(style, node, zone, free, managed, spanned, wm, node not in seen_nodes)
        seen_nodes.add(node)
    write(root, "zoneinfo", "\n".join(lines) + "\n")
    write(root, "vmstat", "".join(f"{k} {v}\n" for k, v in vmstat.items()))
    write(root, "meminfo", f"MemTotal:       {mem_total_kb} kB\nMemFree:        {mem_total_kb // 20} kB\n"
          f"MemAvailable:   {mem_total_kb // 10} kB\nCached:         {mem_total_kb * 9 // 10} kB\n"
          "HugePages_Total:       0\n")
    write(root, "loadavg", loadavg + "\n")
    stat = "cpu  1000 0 500 90000 10 0 5 0 0 0\n"
    stat += "".join(f"cpu{i} 100 0 50 9000 1 0 0 0 0 0\n" for i in range(cpus))
    stat += "intr 0\nctxt 123456\nbtime 1700000000\nprocs_running 3\n"
    write(root, "stat", stat)
    write(root, "sys/vm/min_free_kbytes", f"{min_free_kbytes}\n")
    write(root, "sys/vm/vfs_cache_pressure", "100\n")
    if wsf is not None:
        write(root, "sys/vm/watermark_scale_factor", f"{wsf}\n")
    for pid, comm, pss in procs:
        write(root, f"{pid}/comm", comm + "\n")
        write(root, f"{pid}/status", f"Name:\t{comm}\nPid:\t{pid}\n")
        if pss is not None and style == "3.10":
            # no smaps_rollup before 4.14: two mappings in smaps whose Pss add up
            write(root, f"{pid}/smaps", smaps_mapping("00400000-00c0b000 r-xp 00000000 fd:00 1311", pss // 4)
                  + smaps_mapping("7f1c00000000-7f1d00000000 rw-s 00000000 00:04 98304 /SYSV0052e2c1", pss - pss // 4))
        elif pss is not None:
            write(root, f"{pid}/smaps_rollup",
                  "00400000-7ffd0000 ---p 00000000 00:00 0                          [rollup]\n"
                  f"Rss:             {pss * 2} kB\nPss:             {pss} kB\nPss_Anon:        {pss // 2} kB\n"
                  f"Shared_Clean:    {pss} kB\nSwap:                  0 kB\n")


def smaps_mapping(header, pss):
    return (f"{header}\nSize:            {pss * 2} kB\nRss:             {pss * 2} kB\n"
            f"Pss:             {pss} kB\nShared_Clean:    {pss} kB\nSwap:                  0 kB\n"
            "THPeligible:    0\nVmFlags: rd ex mr mw me dw\n")


def main():
    zoned3 = ("dma", "dma32", "normal", "movable")
    seed_vmstat = {"nr_free_pages": 24100, "pgpgin": 81234567}
    for prefix, values in (("pgsteal_kswapd", (0, 1200, 880000, 0)), ("pgsteal_direct", (0, 310, 402000, 0)),
                           ("pgscan_kswapd", (0, 1500, 990000, 0)), ("pgscan_direct", (0, 400, 512000, 0))):
        seed_vmstat.update({f"{prefix}_{z}": v for z, v in zip(zoned3, values)})
    seed_vmstat.update({"pgscan_direct_throttle": 0, "allocstall": 3150, "compact_stall": 812,
                        "compact_fail": 700, "kswapd_low_wmark_hit_quickly": 2201,
                        "kswapd_high_wmark_hit_quickly": 87})
    tree("seed", "3.10", 16, 32955392, 67584, None,
         [(0, "DMA", 3977, 3977, 4095), (0, "DMA32", 412000, 765000, 1044480),
          (0, "Normal", 20198, 7469900, 7602176)],
         seed_vmstat, "5.12 2.10 1.03 9/812 31337",
         [(1201, "postmaster", 4194304), (2202, "php-fpm", 81920)])

    split = {f"allocstall_{z}": v for z, v in zip(("dma", "dma32", "normal", "movable", "device"), (0, 4, 96, 0, 0))}
    multi_vmstat = {"nr_free_pages": 900000, **split, "pgsteal_kswapd": 50000, "pgsteal_direct": 7000,
                    "pgscan_kswapd": 64000, "pgscan_direct": 9000, "pgscan_direct_throttle": 0,
                    "compact_stall": 12, "kswapd_low_wmark_hit_quickly": 40, "kswapd_high_wmark_hit_quickly": 3}
    tree("multinode", "5.4", 32, 65775000, 90112, 10,
         [(0, "DMA", 3976, 3976, 4095), (0, "DMA32", 400000, 765000, 1044480),
          (0, "Normal", 300000, 7450000, 7602176), (0, "Movable", 0, 0, 0),
          (1, "Normal", 450000, 8200000, 8388608), (1, "Movable", 0, 0, 0)],
         multi_vmstat, "20.50 18.00 12.00 25/1500 40000",
         [(3001, "postgres", 812000), (3002, "postgres", 412000), (3003, "redis-server", 2100000),
          (3004, "php-fpm", 64000)])

    old_vmstat = {"nr_free_pages": 120000, "pgsteal_kswapd": 1000, "pgsteal_direct": 200, "pgscan_kswapd": 1500,
                  "pgscan_direct": 300, "pgscan_direct_throttle": 0, "allocstall": 17, "compact_stall": 5,
                  "kswapd_low_wmark_hit_quickly": 9, "kswapd_high_wmark_hit_quickly": 1}
    tree("old-kernel", "4.9", 4, 8167000, 11365, 10,
         [(0, "DMA", 3975, 3975, 4095), (0, "DMA32", 300000, 740000, 1044480), (0, "Normal", 60000, 1280000, 1310720)],
         old_vmstat, "0.40 0.35 0.30 1/210 4321", [(900, "nginx", None)])

    new_split = {f"allocstall_{z}": 0 for z in ("dma", "dma32", "normal", "movable", "device")}
    new_vmstat = {"nr_free_pages": 2000000, **new_split, "pgsteal_kswapd": 0, "pgsteal_direct": 0,
                  "pgsteal_khugepaged": 0, "pgscan_kswapd": 0, "pgscan_direct": 0, "pgscan_khugepaged": 0,
                  "pgscan_direct_throttle": 0, "compact_stall": 0, "kswapd_low_wmark_hit_quickly": 0,
                  "kswapd_high_wmark_hit_quickly": 0}
    tree("new-kernel", "6.8", 8, 16312000, 67584, 10,
         [(0, "DMA", 3840, 3840, 4095), (0, "DMA32", 700000, 772915, 1044480), (0, "Normal", 1300000, 3300000, 3407872),
          (0, "Movable", 0, 0, 0), (0, "Device", 0, 0, 0)],
         new_vmstat, "1.20 0.90 0.70 2/400 9999",
         [(501, "postgres", 300000), (502, "java", 1500000), (503, "bash", 2000)])


if __name__ == "__main__":
    main()
