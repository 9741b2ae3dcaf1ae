"""
What the AOF settings cost a client: single-connection INCR latency on a real
redis-server under each ``appendfsync`` policy, set through
``redis_aof.configure`` (the code behind the state), against the baseline of
AOF off in the same run. Plus the worst INCR latency seen while
``configure`` turns AOF on over a filled dataset (fork + initial rewrite),
which is what a client sees during the state run.

    .venv/bin/python bench/redis_aof_bench.py              # 20000 INCRs per policy
    .venv/bin/python bench/redis_aof_bench.py --ops 5000 --keys 100000

The data dir is a temporary directory on the disk /tmp lives on; fsync cost is
that disk's.
"""

import argparse
import importlib.util
import os
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.support.redis_server import RedisServer


def load_module():
    spec = importlib.util.spec_from_file_location(
        "redis_aof_bench_module", os.path.join(REPO, "_modules", "redis_aof.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__salt__ = {"config.get": lambda key, default=None: default}
    return module


def incr_latencies(client, ops):
    samples = []
    for _ in range(ops):
        start = time.perf_counter()
        client.incr("bench:counter")
        samples.append(time.perf_counter() - start)
    return samples


def summary(samples):
    ordered = sorted(samples)
    return {
        "ops_s": len(samples) / sum(samples),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def during_turn_on(aof, server, keys):
    """
    Worst and median INCR latency on a second connection while configure()
    turns AOF on (fork, initial rewrite, wait, CONFIG REWRITE).
    """
    with server.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(keys):
            pipe.set(f"fill:{i}", "x" * 100)
            if i % 10000 == 9999:
                pipe.execute()
        pipe.execute()
    stop, samples = threading.Event(), []

    def loop():
        with server.client() as client:
            while not stop.is_set():
                start = time.perf_counter()
                client.incr("bench:during")
                samples.append(time.perf_counter() - start)

    worker = threading.Thread(target=loop)
    worker.start()
    started = time.perf_counter()
    try:
        aof.configure({"appendonly": True, "appendfsync": "everysec"}, server.instance)
    finally:
        took = time.perf_counter() - started
        stop.set()
        worker.join()
    return took, summary(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--keys", type=int, default=200000)
    args = parser.parse_args()
    aof = load_module()
    server = RedisServer().start()
    rows = []
    try:
        with server.client() as client:
            incr_latencies(client, 2000)  # warm up the connection and the allocator
            for label, settings in (
                ("AOF off (baseline)", {"appendonly": False}),
                ("appendfsync no", {"appendonly": True, "appendfsync": "no"}),
                ("appendfsync everysec", {"appendonly": True, "appendfsync": "everysec"}),
                ("appendfsync always", {"appendonly": True, "appendfsync": "always"}),
            ):
                aof.configure(settings, server.instance)
                rows.append((label, summary(incr_latencies(client, args.ops))))
            aof.configure({"appendonly": False}, server.instance)
            client.flushall()
        took, during = during_turn_on(aof, server, args.keys)
    finally:
        server.cleanup()

    base = rows[0][1]
    print(f"redis-server {args.ops} sequential INCRs per policy, one connection, 127.0.0.1")
    print(
        f"{'variant':<24} {'ops/s':>9} {'x base':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99 x base':>10}"
    )
    for label, row in rows:
        print(
            f"{label:<24} {row['ops_s']:>9.0f} {row['ops_s'] / base['ops_s']:>7.2f} {row['p50_ms']:>8.3f} "
            f"{row['p99_ms']:>8.3f} {row['max_ms']:>8.2f} {row['p99_ms'] / base['p99_ms']:>10.2f}"
        )
    print(
        f"during configure(appendonly yes) over {args.keys} keys ({took:.2f} s): "
        f"{during['ops_s']:.0f} INCR/s, p99 {during['p99_ms']:.3f} ms, max {during['max_ms']:.2f} ms "
        f"(max x baseline max {during['max_ms'] / base['max_ms']:.1f})"
    )


if __name__ == "__main__":
    main()
