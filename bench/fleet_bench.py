"""
ops_http_json on one salt-master with a fleet of real salt-minions: what
``salt '*' saltutil.refresh_pillar`` costs with the asset API healthy, slow
or hung, with and without the circuit breaker, and with and without
conditional fetches (ETags), side by side in one run on one fleet
(``tests/support/fleet.py``: a real salt-master with Salt's default
``worker_threads`` and 20 real salt-minions as plain processes on 127.0.0.1;
~0.7 KB documents from the demo asset API).

Scenarios, in this order (the master restarts between option sets, its
breaker state removed; the minions and the document cache stay):

- healthy, opsalt's defaults (the baseline; an unchanged fleet: 304s);
- slow: every answer of the API takes ``--slow-ms`` longer;
- hung (accepts connections, never answers), defaults: breaker on; and a
  later refresh of the same outage, once every fetch the first one started
  has ended (the breaker is open by then);
- healthy with ``conditional: false`` (ETags off: every refresh a 200);
- hung with ``breaker_failures: 0`` (breaker off), and its later refresh;
- hung with the breaker, stale-while-revalidate and the request slots off
  (``stale_grace`` as long as the deadline): opsalt before issue 13.

Each scenario starts from a healthy refresh (not measured), so every
minion's document is cached. Per scenario, the median of ``--repeat``
refreshes (``--hung-repeat`` with the API hung; before each repetition every
fetch of the last outage has ended and the breaker starts closed, so each
measures the first refresh of an outage): the wall time until every minion
reported its pillar refreshed, when the master served the last minion's
pillar (its ``minion/refresh/<id>`` event), ``test.ping`` to one minion every
second during the refresh from an in-process ``LocalClient`` in its own
thread (p50, max, and failures: no answer, or none within 10 s), and per
refresh the API's requests, the document bytes it sent and its CPU time
(``GET /_control``). Ratios are against the healthy baseline of the same
run: for a slow or hung API, the healthy refreshes of the same master that
alternate with its refreshes (the machine's other load drifts less into the
ratio); otherwise the first row.

    .venv/bin/python bench/fleet_bench.py
    .venv/bin/python bench/fleet_bench.py --minions 30 --repeat 5

Not part of ``make test``. It stops by itself: every wait is bounded and the
whole run ends after ``--max-seconds`` (the fleet is stopped by pid and its
temporary directory removed either way).
"""

import argparse
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import salt.config
import salt.version

from tests.support.fleet import Fleet, _write_config
from tests.support.fleet_probes import PillarServed, PingProbe
from tests.support.procs import port_open, stop_popen, wait_for

PING_WITHIN = 10.0
DEADLINE = 15  # opsalt's default deadline: no fetch outlives it
DEFAULTS = {}
NO_BREAKER = {"breaker_failures": 0}
BEFORE_13 = {"breaker_failures": 0, "max_concurrency": 0, "stale_grace": 15}


class Scenario:
    def __init__(self, label, options, api, note, later=False):
        self.label = label
        self.options = options  # ext_pillar options over opsalt's defaults
        self.api = api  # healthy, slow or hung
        self.note = note
        # hung: also measure a later refresh of the same outage, once every
        # fetch of the first has ended (an enabled breaker is open by then)
        self.later = later


SCENARIOS = [
    Scenario("healthy, defaults", DEFAULTS, "healthy", "baseline; unchanged fleet, ETags on"),
    Scenario("slow API, defaults", DEFAULTS, "slow", "every answer +{slow_ms} ms"),
    Scenario("hung, breaker on (defaults)", DEFAULTS, "hung", "accepts, never answers", later=True),
    Scenario("healthy, ETags off", {"conditional": False}, "healthy", "conditional: false"),
    Scenario("hung, breaker off", NO_BREAKER, "hung", "breaker_failures: 0", later=True),
    Scenario("hung, as before issue 13", BEFORE_13, "hung", "breaker, slots off; stale_grace: 15"),
]


class BenchTimeout(Exception):
    pass


def document(minion_id, version):
    """
    A ~0.7 KB document: the fleet's own keys plus realistic component sections.
    """
    doc = Fleet.document(minion_id, version)
    doc.update(
        ops={"role": "db", "rack": "r12", "owner": "ops-team", "id": minion_id},
        pgbouncer={"databases": {f"db{i}": {"host": "10.0.0.1", "port": 5432} for i in range(8)}},
        vmtune={"min_free_kbytes": 1081344, "vfs_cache_pressure": 200},
        pipconf={"global": {"index-url": "http://nexus.example:8081/repository/pypi-group/simple"}},
    )
    return doc


class BenchFleet(Fleet):
    """
    A :class:`Fleet` whose master can restart with other ext_pillar options.
    """

    def restart_master(self, options):
        """
        Restart the master with ``options``; returns a new ``LocalClient``
        once every minion answers again.
        """
        stop_popen(self.procs[0], timeout=20)
        # the breaker's state survives restarts by design; each option set starts closed
        shutil.rmtree(self.breaker_dir, ignore_errors=True)
        self.ext_pillar_options = dict(options)
        _write_config(self.master_config, self._master_config())
        master = self._spawn("salt-master", os.path.dirname(self.master_config))
        self.procs.remove(master)
        self.procs[0] = master  # stopped last, as before
        wait_for(lambda: port_open(self.ret_port), 120, what="salt-master listening")
        client = self.client()
        wait_for(lambda: self._all_answer(client), 240, interval=1, what="every minion answering again")
        return client

    def stop(self):
        # SIGTERM to every minion at once (each takes seconds to exit), then
        # Fleet.stop() waits for each by pid
        for proc in self.procs[1:]:
            if proc.poll() is None:
                proc.terminate()
        super().stop()

    def refresh(self, client):
        """
        ``saltutil.refresh_pillar wait=True`` on every minion, each waiting up
        to 300 s (a hung API without protections takes minutes); returns
        ``(minions that completed, seconds, last pillar served after seconds)``.
        """
        with PillarServed(self) as served:
            started = time.monotonic()
            returns = client.cmd(
                self.minion_ids,
                "saltutil.refresh_pillar",
                kwarg={"wait": True, "timeout": 300},
                tgt_type="list",
                timeout=330,
            )
            seconds = time.monotonic() - started
            pillars = served.collect(self.minion_ids, timeout=5)
        done = sum(1 for value in returns.values() if value is True)
        last = max(pillars.values()) if len(pillars) == self.size else None
        return done, seconds, last


def warm(fleet, client, before):
    """
    A refresh with the API healthy, not measured: every cache holds the
    current document and its ETag.
    """
    done, _, _ = fleet.refresh(client)
    if done != fleet.size:
        raise SystemExit(f"warm-up refresh before {before!r}: {done} of {fleet.size} minions")


def after_outage(fleet, refreshed_at):
    """
    Let every fetch the outage started end (each within its ``deadline``),
    then start the breaker closed again, so the next repetition of a hung
    scenario sees what the first one saw.
    """
    time.sleep(max(0.0, refreshed_at + DEADLINE + 1 - time.monotonic()))
    if os.path.isdir(fleet.breaker_dir):
        for name in os.listdir(fleet.breaker_dir):
            if name.endswith(".json"):
                os.unlink(os.path.join(fleet.breaker_dir, name))


def one_refresh(fleet, client, label):
    """
    One measured refresh with a ping probe alongside.
    """
    api = fleet.api
    with PingProbe(fleet, fleet.minion_ids[0], timeout=3 * PING_WITHIN) as probe:
        before = api.stats()
        done, seconds, last = fleet.refresh(client)
        after = api.stats()
    if probe.error is not None:
        raise SystemExit(f"{label}: the ping probe failed: {probe.error!r}")
    return {
        "done": done,
        "seconds": seconds,
        "last": last,
        "pings": probe.results,
        "failed": len(probe.failures(PING_WITHIN)),
        "requests": sum(after["requests"].values()) - sum(before["requests"].values()),
        "bytes": after["body_bytes"] - before["body_bytes"],
        "cpu": after["cpu_seconds"] - before["cpu_seconds"],
    }


def summary(label, note, runs, pairs):
    """
    The row of ``runs`` (medians; the pings of all of them); ``pairs`` are
    the healthy refreshes measured alongside.
    """
    pings = sorted(p["seconds"] for run in runs for p in run["pings"])
    lasts = [run["last"] for run in runs]
    return {
        "label": label,
        "note": note,
        "refreshes": len(runs),
        "minions_ok": min(run["done"] for run in runs),
        "refresh_s": statistics.median(run["seconds"] for run in runs),
        "refresh_range": (min(run["seconds"] for run in runs), max(run["seconds"] for run in runs)),
        "paired_healthy_s": statistics.median(run["seconds"] for run in pairs) if pairs else None,
        "last_served_s": None if None in lasts else statistics.median(lasts),
        "pings": len(pings),
        "ping_failed": sum(run["failed"] for run in runs),
        "ping_p50_s": statistics.median(pings) if pings else None,
        "ping_max_s": pings[-1] if pings else None,
        "api_requests": statistics.mean(run["requests"] for run in runs),
        "body_kb": statistics.mean(run["bytes"] for run in runs) / 1024,
        "api_cpu_ms": statistics.mean(run["cpu"] for run in runs) * 1000,
    }


def measure(fleet, client, scenario, args):
    """
    Run ``scenario``'s refreshes and return its rows. A slow or hung
    scenario alternates with healthy refreshes of the same master (each also
    the warm-up of the next repetition): its ratio is against those,
    measured alongside, so the machine's other load drifts less into it.
    """
    api = fleet.api
    hung = scenario.api == "hung"
    repeat = args.hung_repeat if hung else args.repeat
    runs, laters, pairs = [], [], []
    for _ in range(repeat):
        if scenario.api != "healthy":
            pairs.append(one_refresh(fleet, client, scenario.label + " (healthy alongside)"))
        try:
            if scenario.api == "slow":
                api.control(latency_ms=args.slow_ms)
            if hung:
                api.control(sticky="hang")
            runs.append(one_refresh(fleet, client, scenario.label))
            if scenario.later:
                time.sleep(DEADLINE + 1)
                laters.append(one_refresh(fleet, client, scenario.label + ", later refresh"))
        finally:
            api.control(sticky=None, latency_ms=0)
        if hung:
            after_outage(fleet, time.monotonic())
    note = scenario.note.format(slow_ms=args.slow_ms)
    rows = [summary(scenario.label, note, runs, pairs)]
    if laters:
        later_note = f"{note}; {DEADLINE + 1} s after the first refresh of the outage, API still hung"
        rows.append(
            summary(scenario.label.replace("hung,", "hung, later refresh,"), later_note, laters, pairs)
        )
    return rows


def run(fleet, args):
    fleet.start()
    for minion_id in fleet.minion_ids:
        fleet.api.set_document(minion_id, document(minion_id, 1))
    client = fleet.client()
    options = DEFAULTS
    rows = []
    try:
        for scenario in SCENARIOS:
            if scenario.options != options:
                client.destroy()
                print(f"  restarting the master with {scenario.options}", flush=True)
                client = fleet.restart_master(scenario.options)
                options = scenario.options
            warm(fleet, client, scenario.label)
            for row in measure(fleet, client, scenario, args):
                low, high = row["refresh_range"]
                print(
                    f"  {row['label']}: refresh {row['refresh_s']:.1f} s ({low:.1f}-{high:.1f}), "
                    f"pings {row['pings'] - row['ping_failed']}/{row['pings']} ok",
                    flush=True,
                )
                rows.append(row)
    finally:
        client.destroy()
    return rows


def _num(value, fmt):
    return "-" if value is None else format(value, fmt)


def _ratio(value, base):
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def table(rows, size):
    """
    An RST table of ``rows``. The refresh ratio is against the healthy
    refreshes measured alongside (slow and hung rows) or the first row; the
    API CPU ratio against the first row.
    """
    base = rows[0]
    columns = [
        ("scenario", max(len(row["label"]) for row in rows), "<"),
        ("refresh s", 9, ">"),
        ("healthy s", 9, ">"),
        ("x healthy", 9, ">"),
        ("last pillar s", 13, ">"),
        ("minions ok", 10, ">"),
        ("pings ok", 8, ">"),
        ("ping p50 s", 10, ">"),
        ("ping max s", 10, ">"),
        ("API reqs", 8, ">"),
        ("KB sent", 7, ">"),
        ("API CPU ms", 10, ">"),
        ("x healthy", 9, ">"),
    ]
    rule = "  ".join("=" * width for _, width, _ in columns)
    lines = [rule, "  ".join(f"{name:{align}{width}}" for name, width, align in columns).rstrip(), rule]
    for row in rows:
        healthy = row["paired_healthy_s"] or base["refresh_s"]
        cells = [
            row["label"],
            _num(row["refresh_s"], ".1f"),
            _num(healthy, ".1f"),
            _ratio(row["refresh_s"], healthy),
            _num(row["last_served_s"], ".1f"),
            f"{row['minions_ok']}/{size}",
            f"{row['pings'] - row['ping_failed']}/{row['pings']}",
            _num(row["ping_p50_s"], ".2f"),
            _num(row["ping_max_s"], ".2f"),
            _num(row["api_requests"], ".0f"),
            _num(row["body_kb"], ".1f"),
            _num(row["api_cpu_ms"], ".0f"),
            _ratio(row["api_cpu_ms"], base["api_cpu_ms"]),
        ]
        lines.append(
            "  ".join(f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, columns)).rstrip()
        )
    lines.append(rule)
    lines.append("")
    for row in rows:
        low, high = row["refresh_range"]
        paired = " (healthy: alongside)" if row["paired_healthy_s"] else ""
        lines.append(
            f"- {row['label']}: {row['note']}; median of {row['refreshes']} refreshes "
            f"({low:.1f}-{high:.1f} s){paired}."
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="refreshes per scenario with the API answering")
    parser.add_argument("--hung-repeat", type=int, default=3, help="refreshes per scenario with the API hung")
    parser.add_argument("--slow-ms", type=int, default=500, help="added latency of the slow API")
    parser.add_argument("--max-seconds", type=int, default=1800, help="the whole run ends after this")
    args = parser.parse_args()

    def give_up(_signum, _frame):
        raise BenchTimeout(f"the benchmark ran longer than --max-seconds ({args.max_seconds} s)")

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(args.max_seconds)
    root = tempfile.mkdtemp(prefix="opsalt-fleet-bench-")
    fleet = BenchFleet(root, size=args.minions)
    started = time.monotonic()
    try:
        print(f"fleet: 1 salt-master, {args.minions} salt-minions", flush=True)
        rows = run(fleet, args)
    finally:
        signal.alarm(0)
        fleet.stop()
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, Salt {salt.version.__version__}, "
        f"{args.minions} minions, worker_threads {salt.config.DEFAULT_MASTER_OPTS['worker_threads']}, run {time.monotonic() - started:.0f} s"
    )
    print()
    print(table(rows, args.minions))


if __name__ == "__main__":
    main()
