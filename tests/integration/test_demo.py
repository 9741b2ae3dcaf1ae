"""
``make demo`` as a new user runs it: ``demo/run_demo.py`` in a subprocess,
with only the venv (no master, no services). Once on this host as it is,
where the conversion tools are installed (the v2v part runs), and once as a
host without them: Salt's ``cmd.which`` also searches /usr/bin whatever PATH
says, so a restricted PATH proves nothing; ``--tools-dir`` points the tool
lookups (``v2v:tools:<name>``, the same lookup the SLS uses) at an empty dir.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.asset_api import REPO_ROOT

DEMO = os.path.join(REPO_ROOT, "demo", "run_demo.py")


def _run_demo(*args, env=None):
    proc = subprocess.run(
        [sys.executable, DEMO, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "KEEP": "", "OPSALT_DEMO_KEEP": "", **(env or {})},
    )
    work = re.search(r"^  work dir: (\S+)", proc.stdout, re.M)
    return proc, work.group(1) if work else None


def _summary(proc):
    return proc.stdout.split("== summary", 1)[-1]


def _required_tools_present():
    import salt.utils.path

    return all(salt.utils.path.which(name) for name in ("ssh", "virsh", "rbd"))


def test_demo_without_conversion_tools_skips_v2v_and_removes_its_dir(tmp_path):
    empty = tmp_path / "no-tools"
    empty.mkdir()
    proc, work = _run_demo(
        "--tools-dir", str(empty), env={"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    )
    summary = _summary(proc)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SKIP state.apply v2v" in summary
    assert "skipped: not a conversion host (missing ssh, virsh, rbd)" in summary
    for sls in ("vmtune", "pgbouncer", "pipconf"):
        assert re.search(rf"^  OK   state\.apply {sls}\b.* [1-9]\d* changed$", summary, re.M), summary
    assert re.search(r"^  OK   state\.apply redis_aof test=True\b", summary, re.M), summary
    assert "FAIL" not in summary
    # removed with everything in it, the asset API's secret included
    assert work and work.startswith("/") and not os.path.exists(work), work


@pytest.mark.skipif(not _required_tools_present(), reason="ssh, virsh and rbd are not installed on this host")
def test_demo_on_a_conversion_host_runs_v2v_and_keep_keeps_the_dir():
    proc, work = _run_demo(env={"KEEP": "1"})
    try:
        summary = _summary(proc)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert re.search(r"^  OK   state\.apply v2v .*conversion_host", summary, re.M), summary
        assert os.path.isdir(os.path.join(work, "sandbox", "v2v"))
        secret = os.path.join(work, "asset-api.secret")
        assert os.stat(secret).st_mode & 0o777 == 0o600
        # vmtune wrote the copied proc tree and the sysctl.d file, not the kernel
        with open(os.path.join(work, "sandbox", "proc", "sys", "vm", "vfs_cache_pressure")) as handle:
            assert handle.read().strip() == "200"
        assert os.path.isfile(os.path.join(work, "sandbox", "60-opsalt-vmtune.conf"))
    finally:
        if work:
            shutil.rmtree(work)
