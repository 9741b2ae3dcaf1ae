"""
``make demo``: the main job end to end on this machine, masterless.

1. start the demo asset API on 127.0.0.1 (basic auth) with the documents in
   ``demo/pillars`` (``@SANDBOX@`` replaced by a temporary directory);
2. ``salt-call --local pillar.items`` with ``ops_http_json`` configured: the
   per-minion pillar, fetched, validated against ``schema/pillar.schema.json``;
3. apply each opsalt state SLS for real into the sandbox (the operator policy
   in the demo's minion config allows writing there): pipconf, the pgbouncer
   files, vmtune on a copy of the bundled proc tree; redis_aof with
   ``test=True`` (no redis-server runs); v2v only on a conversion host (its
   tools found the way the SLS finds them, ``v2v.tools``), otherwise the
   summary says it was skipped and why;
4. print a summary, remove the temporary directory (API secret included)
   unless ``--keep`` (or ``KEEP=1``), exit non-zero if anything failed.

Needs no service or tool package: only the venv that ``make venv`` builds.
"""

import argparse
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
# The checkout's helpers, whether or not the venv's editable install maps them.
sys.path.insert(0, os.path.join(REPO, "_utils"))
import opsalt_wait  # noqa: E402 - importable only once the checkout's _utils is on the path

MINION_ID = "demo-minion"
PROC_TREE = os.path.join(REPO, "tests", "support", "proc_trees", "seed")


class Step:
    """One line of the summary: ``status`` is OK, FAIL or SKIP."""

    def __init__(self, label, status, detail):
        self.label, self.status, self.detail = label, status, detail


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
    with open(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(secrets.token_urlsafe(18))
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
    # Stop waiting early if the API exits; the port file is its "ready".
    opsalt_wait.until(lambda: os.path.exists(port_file) or proc.poll() is not None, 15, interval=0.05)
    if not os.path.exists(port_file):
        proc.kill()
        proc.wait(10)
        raise SystemExit("demo asset API did not start")
    with open(port_file, encoding="utf-8") as handle:
        port = int(handle.read())
    return proc, port, password_file


def _write_minion_config(work, port, password_file, sandbox, tools_dir):
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
        # The operator's policy (minion config, out of the asset system's
        # reach): every component may also write into the sandbox.
        "opsalt": {"policy": {"allowed_paths": [sandbox]}},
    }
    if tools_dir:
        # Look the conversion tools up in tools_dir only (v2v:tools:<name>):
        # how the tests show a host without them, since Salt's cmd.which
        # also searches /usr/bin whatever PATH says.
        config["v2v"] = {"tools": {name: os.path.join(tools_dir, name) for name in _V2V_TOOL_NAMES}}
    with open(os.path.join(config_dir, "minion"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    return config_dir


# Every tool name v2v knows, so --tools-dir hides all of them.
_V2V_TOOL_NAMES = ("ssh", "virsh", "virt-v2v", "virt-v2v-copy-to-local", "nbdkit", "rbd")


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


def _apply(config_dir, sls, *extra):
    rc, data, err = _salt_call(config_dir, "state.apply", sls, *extra, timeout=300)
    ok, n_ok, n_changed, failures = _state_summary(data)
    ok = ok and rc == 0
    label = f"state.apply {sls} {' '.join(extra)}".strip()
    detail = f"{n_ok} states ok, {n_changed} changed" if ok else "; ".join(failures) or err[-500:]
    return Step(label, "OK" if ok else "FAIL", detail)


def _pillar_arg(data):
    return "pillar=" + json.dumps(data, sort_keys=True)


def _missing_v2v_tools(config_dir, pillar):
    """The conversion tools this host lacks, asked of ``v2v.tools`` (as the SLS does)."""
    required = ((pillar or {}).get("v2v") or {}).get("required_tools") or ["ssh", "virsh", "rbd"]
    rc, found, err = _salt_call(config_dir, "v2v.tools", json.dumps(required))
    if rc != 0 or not isinstance(found, dict):
        raise RuntimeError(f"v2v.tools failed: {err[-500:]}")
    return [name for name in required if not (found.get(name) or {}).get("found")]


def _v2v_step(config_dir, pillar):
    try:
        missing = _missing_v2v_tools(config_dir, pillar)
    except RuntimeError as err:
        return Step("v2v.tools", "FAIL", str(err))
    if missing:
        return Step(
            "state.apply v2v", "SKIP", f"skipped: not a conversion host (missing {', '.join(missing)})"
        )
    return _apply(config_dir, "v2v", _pillar_arg({"v2v": {"conversion_host": True}}))


def _demo_steps(config_dir, sandbox):
    rc, pillar, err = _salt_call(config_dir, "pillar.items", "unmask=True")
    print(f"== pillar of {MINION_ID} via ops_http_json:")
    print(yaml.safe_dump(pillar, default_flow_style=False, sort_keys=True))
    if not (rc == 0 and isinstance(pillar, dict) and "_errors" not in pillar):
        print(err)
        yield Step("pillar.items (ops_http_json)", "FAIL", "FAILED")
        return
    yield Step("pillar.items (ops_http_json)", "OK", "fetched")
    # vmtune writes the sysctls of a copy of the issue-4 database host's proc
    # tree (and its sysctl.d file), never the live kernel's.
    proc_root = shutil.copytree(PROC_TREE, os.path.join(sandbox, "proc"))
    yield _apply(config_dir, "vmtune", _pillar_arg({"vmtune": {"proc_root": proc_root}}))
    # pgbouncer: the config and userlist written into the sandbox (no
    # package, no service).
    yield _apply(config_dir, "pgbouncer")
    # redis_aof needs running redis-servers the demo does not start: test=True
    # reports, per instance, the settings it would apply.
    yield _apply(config_dir, "redis_aof", "test=True")
    # pipconf: pip.conf, .pypirc and the kolla-build files in the sandbox.
    yield _apply(config_dir, "pipconf")
    # v2v: the work root and the tool check, on a conversion host only.
    yield _v2v_step(config_dir, pillar)


def _copy_documents(docs, sandbox):
    for name in os.listdir(os.path.join(REPO, "demo", "pillars")):
        with open(os.path.join(REPO, "demo", "pillars", name), encoding="utf-8") as src:
            text = src.read().replace("@SANDBOX@", sandbox)
        with open(os.path.join(docs, name), "w", encoding="utf-8") as dst:
            dst.write(text)


def _print_summary(steps, work, keep, seconds):
    failed = any(step.status == "FAIL" for step in steps)
    print("== summary")
    width = max(len(step.label) for step in steps)
    for step in steps:
        print(f"  {step.status.ljust(4)} {step.label.ljust(width)}  {step.detail}")
    if keep:
        print(f"  work dir: {work} (kept: remove it when done, it holds the API secret)")
    else:
        print(f"  work dir: {work} (removed; --keep or KEEP=1 keeps it)")
    print(f"  {'demo FAILED' if failed else 'demo OK'} in {seconds:.1f} s")
    return failed


def run(keep=False, tools_dir=None):
    """Run the demo; returns the exit code."""
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="opsalt-demo-")
    steps = []
    try:
        sandbox = os.path.join(work, "sandbox")
        docs = os.path.join(work, "docs")
        os.makedirs(sandbox)
        os.makedirs(docs)
        _copy_documents(docs, sandbox)
        api, port, password_file = _start_api(work, docs)
        try:
            config_dir = _write_minion_config(work, port, password_file, sandbox, tools_dir)
            print(f"== demo asset API on http://127.0.0.1:{port}/api/salt/%s/pillars/ (basic auth)")
            steps.extend(_demo_steps(config_dir, sandbox))
        finally:
            api.terminate()
            api.wait(10)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    failed = _print_summary(steps, work, keep, time.monotonic() - started)
    return 1 if failed else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--keep",
        action="store_true",
        default=os.environ.get("KEEP", os.environ.get("OPSALT_DEMO_KEEP", "")) not in ("", "0"),
        help="keep the temporary directory (sandbox, minion config, API secret); also KEEP=1",
    )
    parser.add_argument(
        "--tools-dir",
        help="look the v2v conversion tools up in this directory only (default: as Salt's cmd.which does)",
    )
    args = parser.parse_args(argv)
    return run(keep=args.keep, tools_dir=args.tools_dir)


if __name__ == "__main__":
    sys.exit(main())
