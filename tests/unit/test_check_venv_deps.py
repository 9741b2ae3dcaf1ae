"""
scripts/check-venv-deps, which ``make venv`` (so ``make demo``) runs first:
on a machine without a C compiler it names what to install instead of
letting pip fail deep inside Salt's timelib build.
"""

import os
import shutil
import subprocess
import sys

from tests.support.asset_api import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "scripts", "check-venv-deps")
PYTHON = sys._base_executable if hasattr(sys, "_base_executable") else sys.executable


def _check(path):
    return subprocess.run(
        [shutil.which("bash"), SCRIPT, PYTHON],
        env={"PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_this_machine_has_what_the_venv_needs():
    proc = _check(os.environ["PATH"])
    assert proc.returncode == 0, proc.stderr


def test_no_compiler_names_the_package_to_install(tmp_path):
    # a PATH with no cc/gcc on it: what a fresh machine looks like to the script
    proc = _check(str(tmp_path))
    assert proc.returncode == 1
    assert "make venv needs: gcc" in proc.stderr
    assert "apt-get install gcc" in proc.stderr
