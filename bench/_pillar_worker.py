"""
Benchmark worker: load an ext_pillar through Salt's own loader and time N
calls. Runs in whichever venv is being measured (opsalt's, or a Salt 3007
venv without opsalt for Salt's own ``http_json``). Reads a JSON job on
stdin, prints per-call latencies (seconds) as JSON on stdout.
"""

import copy
import json
import sys
import time

import salt.config
import salt.loader


def floor_fetcher(job):
    """
    The floor: a bare keep-alive requests.Session GET plus json parse.
    """
    import urllib.parse

    import requests

    session = requests.Session()
    options = job["options"]
    auth = (options["username"], options["password"]) if options.get("username") else None
    verify = options.get("verify", True)

    def fetch(minion_id, _pillar, **_kwargs):
        url = options["url"].replace("%s", urllib.parse.quote(minion_id, safe=""))
        response = session.get(url, auth=auth, verify=verify, timeout=10)
        response.raise_for_status()
        return response.json()

    return fetch


def main():
    job = json.load(sys.stdin)
    if job["ext_pillar"] == "floor":
        run(job, floor_fetcher(job))
        return
    opts = salt.config.apply_master_config(
        dict(job["opts"], file_roots={"base": []}, pillar_roots={"base": []}),
        copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS),
    )
    functions = salt.loader.minion_mods(opts) if job["needs_minion_mods"] else {}
    pillars = salt.loader.pillars(opts, functions)
    run(job, pillars[job["ext_pillar"]])


def run(job, ext_pillar):
    """
    Time ``job["calls"]`` calls round-robin over ``job["ids"]``.
    """
    ids = job["ids"]
    latencies = []
    failures = 0
    for i in range(job["calls"]):
        started = time.perf_counter()
        data = ext_pillar(ids[i % len(ids)], {}, **job["options"])
        latencies.append(time.perf_counter() - started)
        if not data:
            failures += 1
    json.dump({"latencies": latencies, "failures": failures}, sys.stdout)


if __name__ == "__main__":
    main()
