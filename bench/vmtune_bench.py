"""
What a vmtune beacon sample costs the minion, on this machine's real /proc,
next to Salt's own ``load`` beacon (the baseline, measured in the same run):

- ``load`` beacon (Salt core): os.getloadavg and threshold checks;
- vmtune beacon, quiet sample: vmstat + loadavg + stat, rates, thresholds;
- vmtune beacon, firing sample: the same plus zoneinfo, gaps and the top
  processes by Pss (every /proc/<pid>/smaps_rollup) for the event;
- the top-5-by-Pss scan alone: reading every smaps_rollup, and pruned by
  the Rss in statm (what the beacon does);
- ``vmtune.gaps`` and ``vmtune.recommend`` as an operator runs them.

Every call goes through Salt's loaders, in process. Prints median and p95
per call in microseconds and the ratio to the baseline's median.

    .venv/bin/python bench/vmtune_bench.py [--calls 2000]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import opsalt_vmtune
import salt.beacons
import salt.loader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.support.loaders import minion_opts


def _opts(root):
    return minion_opts(root, id="bench")


def _time(call, calls):
    call()  # warm caches and the first-sample path
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.95)] * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmtune-bench-") as root:
        opts = _opts(root)
        modules = salt.loader.minion_mods(opts)
        beacons = salt.loader.beacons(opts, modules)
        load_conf = [
            {"averages": {"1m": [0.0, 1000.0], "5m": [0.0, 1000.0], "15m": [0.0, 1000.0]}},
            {"onchangeonly": False},
        ]
        quiet = [{"load_per_cpu": 1000}, {"_beacon_name": "bench_quiet"}]
        # rearm 0 and a zero load threshold: every sample builds a full event
        firing = [{"load_per_cpu": 0}, {"rearm": 0}, {"_beacon_name": "bench_firing"}]
        nprocs = sum(1 for entry in os.listdir("/proc") if entry.isdigit())
        cases = [
            ("load beacon (Salt core, baseline)", lambda: beacons["load.beacon"](load_conf)),
            ("vmtune beacon, quiet sample", lambda: beacons["vmtune.beacon"](quiet)),
            (f"vmtune beacon, firing sample ({nprocs} processes)", lambda: beacons["vmtune.beacon"](firing)),
            (
                f"top 5 by Pss, every smaps_rollup read ({nprocs} processes)",
                lambda: opsalt_vmtune.top_pss(prune=False),
            ),
            ("top 5 by Pss, pruned by Rss from statm", lambda: opsalt_vmtune.top_pss()),
            ("vmtune.gaps", lambda: modules["vmtune.gaps"]()),
            ("vmtune.recommend burst_kb=25600", lambda: modules["vmtune.recommend"](25600)),
        ]
        beacons["vmtune.beacon"](firing)  # first sample only records
        if not beacons["vmtune.beacon"](firing):
            raise SystemExit("load1 is 0.00 here, so the firing case cannot fire; run again under some load")
        results = [(label, *_time(call, args.calls)) for label, call in cases]
    base = results[0][1]
    width = max(len(label) for label, _m, _p in results)
    print(f"{'case'.ljust(width)}  median us    p95 us  x baseline")
    for label, median, p95 in results:
        print(f"{label.ljust(width)}  {median:9.1f}  {p95:8.1f}  {median / base:10.1f}")


if __name__ == "__main__":
    main()
