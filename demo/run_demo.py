"""
``make demo``: the main job end to end on this machine, masterless.

1. start the demo asset API on 127.0.0.1 (basic auth) with the documents in
   ``demo/pillars`` (``@SANDBOX@`` replaced by a temporary directory);
2. ``salt-call --local pillar.items`` with ``ops_http_json`` configured: the
   per-minion pillar, fetched, validated against ``schema/pillar.schema.json``;
3. apply each opsalt state SLS to the sandbox (paths under the temp dir, or
   ``test=True`` where a state would touch the host);
4. print a summary, exit non-zero if anything failed.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINION_ID = "demo-minion"

# (SLS name, extra salt-call arguments). Components append theirs here; an SLS
# that would touch the host runs with test=True.
DEMO_STATES = []
# vmtune would change the host's kernel settings: test=True, on the fixture
# proc tree of the issue-4 database host (read only).
DEMO_STATES.append(
    (
        "vmtune",
        [
            "test=True",
            "pillar="
            + json.dumps(
                {"vmtune": {"proc_root": os.path.join(REPO, "tests", "support", "proc_trees", "seed")}}
            ),
        ],
    )
)
# pgbouncer: the config and userlist written into the sandbox for real (no
# package, no service; the console on the sandbox port finds nothing running).
DEMO_STATES.append(("pgbouncer", []))
# redis_aof needs running redis-servers the demo does not start: test=True
# reports, per instance, the settings it would apply.
DEMO_STATES.append(("redis_aof", ["test=True"]))
# pipconf: pip.conf, .pypirc and the kolla-build files written into the sandbox.
DEMO_STATES.append(("pipconf", []))
# v2v: the conversion host's work root in the sandbox and its tool check
# (migrations themselves run from a master: salt-run v2v.migrate).
DEMO_STATES.append(("v2v", []))


def _salt_call(config_dir, *args, timeout=120):
    argv = [
        os.path.join(os.path.dirname(sys.executable), "salt-call"),
        "--local",
        "--config-dir",
        config_dir,
        "--out",
        "json",
        "--log-level",
        "quiet",
        *args,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    try:
        data = json.loads(proc.stdout)["local"] if proc.stdout.strip() else None
    except (ValueError, KeyError):
        data = None
    return proc.returncode, data, proc.stderr


def _start_api(work, docs):
    password_file = os.path.join(work, "asset-api.secret")
    with open(password_file, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(18))
    os.chmod(password_file, 0o600)
    port_file = os.path.join(work, "api.port")
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(REPO, "demo", "asset_api.py"),
            "--port",
            "0",
            "--port-file",
            port_file,
            "--docs",
            docs,
            "--user",
            "salt",
            "--password-file",
            password_file,
        ]
    )
    deadline = time.monotonic() + 15
    while not os.path.exists(port_file):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("demo asset API did not start")
        time.sleep(0.05)
    with open(port_file, encoding="utf-8") as handle:
        port = int(handle.read())
    return proc, port, password_file


def _write_minion_config(work, port, password_file, sandbox):
    config_dir = os.path.join(work, "etc")
    os.makedirs(os.path.join(config_dir, "minion.d"), exist_ok=True)
    config = {
        "id": MINION_ID,
        "file_client": "local",
        "root_dir": os.path.join(work, "root"),
        "file_roots": {"base": [os.path.join(REPO, "salt")]},
        "pillar_roots": {"base": []},
        "ext_pillar": [
            {
                "ops_http_json": {
                    "url": f"http://127.0.0.1:{port}/api/salt/%s/pillars/",
                    "username": "salt",
                    "password_file": password_file,
                    "schema": os.path.join(REPO, "schema", "pillar.schema.json"),
                    "on_error": "fail",
                }
            }
        ],
        "opsalt_sandbox": sandbox,
    }
    with open(os.path.join(config_dir, "minion"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    return config_dir


def _state_summary(data):
    if not isinstance(data, dict):
        return False, 0, 0, [str(data)]
    ok = changed = 0
    failures = []
    for ret in data.values():
        if ret.get("result") is False:
            failures.append(f"{ret.get('__id__')}: {ret.get('comment')}")
        else:
            ok += 1
        if ret.get("changes"):
            changed += 1
    return not failures, ok, changed, failures


def main():
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="opsalt-demo-")
    sandbox = os.path.join(work, "sandbox")
    docs = os.path.join(work, "docs")
    os.makedirs(sandbox)
    os.makedirs(docs)
    for name in os.listdir(os.path.join(REPO, "demo", "pillars")):
        with open(os.path.join(REPO, "demo", "pillars", name), encoding="utf-8") as src:
            text = src.read().replace("@SANDBOX@", sandbox)
        with open(os.path.join(docs, name), "w", encoding="utf-8") as dst:
            dst.write(text)
    api, port, password_file = _start_api(work, docs)
    summary = []
    failed = False
    try:
        config_dir = _write_minion_config(work, port, password_file, sandbox)
        print(f"== demo asset API on http://127.0.0.1:{port}/api/salt/%s/pillars/ (basic auth)")
        rc, pillar, err = _salt_call(config_dir, "pillar.items", "unmask=True")
        print(f"== pillar of {MINION_ID} via ops_http_json:")
        print(yaml.safe_dump(pillar, default_flow_style=False, sort_keys=True))
        pillar_ok = rc == 0 and isinstance(pillar, dict) and "_errors" not in pillar
        if not pillar_ok:
            print(err)
        summary.append(("pillar.items (ops_http_json)", pillar_ok, "fetched" if pillar_ok else "FAILED"))
        failed |= not pillar_ok
        for sls, extra in DEMO_STATES:
            rc, data, err = _salt_call(config_dir, "state.apply", sls, *extra, timeout=300)
            ok, n_ok, n_changed, failures = _state_summary(data)
            ok = ok and rc == 0
            label = f"state.apply {sls} {' '.join(extra)}".strip()
            detail = f"{n_ok} states ok, {n_changed} changed" if ok else "; ".join(failures) or err[-500:]
            summary.append((label, ok, detail))
            failed |= not ok
    finally:
        api.terminate()
        api.wait(10)
    print("== summary")
    width = max(len(label) for label, _ok, _detail in summary)
    for label, ok, detail in summary:
        print(f"  {'OK  ' if ok else 'FAIL'} {label.ljust(width)}  {detail}")
    print(f"  sandbox: {sandbox}")
    print(f"  {'demo FAILED' if failed else 'demo OK'} in {time.monotonic() - started:.1f} s")
    if not failed and not os.environ.get("OPSALT_DEMO_KEEP"):
        shutil.rmtree(os.path.join(work, "root"), ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
