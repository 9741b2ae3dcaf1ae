"""
Client-side benchmark of ops_http_json (``make bench``).

Variants, all in the same run, each in its own process, each loaded the way
the master loads it:

- ``floor``: a bare keep-alive ``requests.Session`` GET plus ``json`` parse;
- ``ops_http_json``: opsalt's ext_pillar through Salt's loader (this venv);
- ``salt3007 http_json``: Salt 3007.16's own ``http_json`` ext_pillar through
  Salt's loader and ``salt.utils.http``, in a separate venv without opsalt
  (made by ``tests/support/salt_venv.py``).

Scenario A, production-like: HTTPS with basic auth against nginx on
127.0.0.1 (a test CA made at run time) serving one static JSON document per
minion id; 2,000 fetches over 200 ids.
Scenario B: the demo asset API over plain HTTP with 1 ms added latency.
Blackholed API: seconds until a minion with a cached document gets its
pillar, against the configured timeout.

Prints an RST table with calls/s, p50, p99 and ratios.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.support.asset_api import PASSWORD, USERNAME, AssetApi
from tests.support.procs import free_port, port_open, stop_pid, wait_for
from tests.support.salt_venv import salt3007_venv
from tests.support.tls import make_ca_and_server_cert

WORKER = os.path.join(REPO, "bench", "_pillar_worker.py")
NGINX_CONF = """
daemon off;
worker_processes 1;
user root;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    default_type application/json;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {docroot};
        index index.json;
        auth_basic "assets";
        auth_basic_user_file {htpasswd};
    }}
}}
"""


def document_for(minion_id):
    """
    A realistic ~1 KB pillar document.
    """
    return {
        "ops": {"role": "db", "rack": "r12", "owner": "ops-team", "id": minion_id},
        "pgbouncer": {"databases": {f"db{i}": {"host": "10.0.0.1", "port": 5432} for i in range(8)}},
        "vmtune": {"min_free_kbytes": 1081344, "vfs_cache_pressure": 200},
        "pipconf": {"global": {"index-url": "http://nexus.example:8081/repository/pypi-group/simple"}},
    }


def start_nginx(root, ids, certs):
    docroot = os.path.join(root, "www")
    for minion_id in ids:
        path = os.path.join(docroot, "api", "salt", minion_id, "pillars")
        os.makedirs(path)
        with open(os.path.join(path, "index.json"), "w", encoding="utf-8") as handle:
            json.dump(document_for(minion_id), handle)
    htpasswd = os.path.join(root, "htpasswd")
    hashed = subprocess.run(
        ["openssl", "passwd", "-apr1", PASSWORD], capture_output=True, text=True, check=True
    ).stdout.strip()
    with open(htpasswd, "w", encoding="utf-8") as handle:
        handle.write(f"{USERNAME}:{hashed}\n")
    port = free_port()
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write(
            NGINX_CONF.format(
                root=root, port=port, cert=certs["cert"], key=certs["key"], docroot=docroot, htpasswd=htpasswd
            )
        )
    proc = subprocess.Popen(["nginx", "-p", root, "-c", conf], stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open(port), 15, what="nginx")
    return proc, f"https://127.0.0.1:{port}/api/salt/%s/pillars/"


def run_worker(python, job):
    proc = subprocess.run(
        [python, WORKER], input=json.dumps(job), capture_output=True, text=True, check=False, timeout=1800
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({python}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    if result["failures"]:
        raise SystemExit(f"worker {job['ext_pillar']} got {result['failures']} empty results")
    return result["latencies"]


def summarise(latencies):
    ordered = sorted(latencies)
    return {
        "calls_per_s": len(ordered) / sum(ordered),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "total_s": sum(ordered),
    }


def scenario(name, url, ids, calls, cachedir, ca_bundle, py_opsalt, py_salt3007):
    auth = {"username": USERNAME, "password": PASSWORD}
    verify = ca_bundle if ca_bundle else True
    common = {"ids": ids, "calls": calls}
    opts = {"cachedir": cachedir, "root_dir": cachedir}
    jobs = {
        "floor": (
            py_opsalt,
            dict(
                common,
                ext_pillar="floor",
                needs_minion_mods=False,
                opts=opts,
                options=dict(auth, url=url, verify=verify),
            ),
        ),
        "ops_http_json": (
            py_opsalt,
            dict(
                common,
                ext_pillar="ops_http_json",
                needs_minion_mods=False,
                opts=opts,
                options=dict(auth, url=url, verify=verify),
            ),
        ),
        "salt3007 http_json": (
            py_salt3007,
            dict(
                common,
                ext_pillar="http_json",
                needs_minion_mods=True,
                opts=dict(opts, ca_bundle=ca_bundle) if ca_bundle else opts,
                options=dict(auth, url=url),
            ),
        ),
    }
    results = {}
    for variant, (python, job) in jobs.items():
        results[variant] = summarise(run_worker(python, job))
        print(f"  {name}: {variant}: {results[variant]['calls_per_s']:.0f} calls/s", flush=True)
    return results


def blackhole(ids, cachedir, timeout, py_opsalt, url):
    """
    Warm the cache, then point the same cache at a socket that never answers.
    """
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(1024)
        dead_url = f"http://127.0.0.1:{hole.getsockname()[1]}/api/salt/%s/pillars/"
        cache_dir = os.path.join(cachedir, "blackhole-cache")
        base = {"username": USERNAME, "password": PASSWORD, "cache_dir": cache_dir, "timeout": timeout}
        opts = {"cachedir": cachedir, "root_dir": cachedir}
        job = dict(ids=ids[:1], calls=1, ext_pillar="ops_http_json", needs_minion_mods=False, opts=opts)
        run_worker(py_opsalt, dict(job, options=dict(base, url=url)))
        latencies = run_worker(py_opsalt, dict(job, calls=5, options=dict(base, url=dead_url)))
    return max(latencies)


def table(results_a, results_b, blackhole_s, timeout):
    lines = []
    header = f"{'scenario':<28}  {'variant':<20}  {'calls/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'time vs floor':>13}"
    rule = " ".join(["=" * 28, "", "=" * 20, "", "=" * 8, "", "=" * 7, "", "=" * 7, "", "=" * 13])
    rule = "  ".join(["=" * 28, "=" * 20, "=" * 8, "=" * 7, "=" * 7, "=" * 13])
    lines += [rule, header, rule]
    for label, results in (
        ("A: nginx HTTPS + basic auth", results_a),
        ("B: demo API HTTP, +1 ms", results_b),
    ):
        floor = results["floor"]["total_s"]
        for variant, r in results.items():
            lines.append(
                f"{label:<28}  {variant:<20}  {r['calls_per_s']:>8.0f}  {r['p50_ms']:>7.2f}  {r['p99_ms']:>7.2f}"
                f"  {r['total_s'] / floor:>12.2f}x"
            )
            label = ""
    lines.append(rule)
    a = results_a
    lines.append("")
    lines.append(
        f"- A: ops_http_json throughput = {a['ops_http_json']['calls_per_s'] / a['salt3007 http_json']['calls_per_s']:.1f}x "
        f"Salt 3007 http_json (target >= 3x); time = {a['ops_http_json']['total_s'] / a['floor']['total_s']:.2f}x "
        "the floor (target <= 1.2x)."
    )
    b = results_b
    lines.append(
        f"- B: ops_http_json time = {b['ops_http_json']['total_s'] / b['floor']['total_s']:.2f}x the floor "
        "(target <= 1.2x)."
    )
    lines.append(
        f"- API blackholed: a minion with a cached document got its pillar after {blackhole_s:.2f} s "
        f"(read timeout {timeout} s; target <= {timeout + 0.5} s)."
    )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=200)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=2.0, help="read timeout for the blackhole case")
    args = parser.parse_args()
    if not shutil.which("nginx"):
        raise SystemExit("nginx is not installed: run scripts/install-system-deps")
    py_opsalt = sys.executable
    py_salt3007 = os.path.join(salt3007_venv(), "bin", "python")
    ids = [f"host{i:03d}.example.com" for i in range(args.ids)]
    root = tempfile.mkdtemp(prefix="opsalt-bench-")
    nginx = api = None
    try:
        certs = make_ca_and_server_cert(os.path.join(root, "pki"))
        nginx, nginx_url = start_nginx(os.path.join(root, "nginx"), ids, certs)
        print("scenario A (nginx, HTTPS, basic auth)", flush=True)
        results_a = scenario(
            "A", nginx_url, ids, args.calls, os.path.join(root, "a"), certs["ca_cert"], py_opsalt, py_salt3007
        )
        api = AssetApi(os.path.join(root, "api"), latency_ms=1).start()
        for minion_id in ids:
            api.set_document(minion_id, document_for(minion_id))
        print("scenario B (demo API, HTTP, 1 ms latency)", flush=True)
        results_b = scenario(
            "B", api.url, ids, args.calls, os.path.join(root, "b"), None, py_opsalt, py_salt3007
        )
        print("blackholed API", flush=True)
        blackhole_s = blackhole(ids, os.path.join(root, "c"), args.timeout, py_opsalt, api.url)
    finally:
        if nginx is not None:
            stop_pid(nginx.pid)
        if api is not None:
            api.stop()
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print()
    print(table(results_a, results_b, blackhole_s, args.timeout))


if __name__ == "__main__":
    main()
