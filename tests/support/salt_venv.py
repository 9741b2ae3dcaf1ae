"""
Virtualenvs with an older Salt and *without* opsalt, for the classic
(file_roots + saltutil.sync_all) deployment tests and the benchmark's Salt
``http_json`` baseline. Each is made once and kept at ``.venv-salt<major>``.

The newest releases that install from the package registry here: 3007.17
and 3006.30 pin a certifi release it lacks; 3007.16 and 3006.29 install.
"""

import os
import subprocess
import sys

from tests.support.asset_api import REPO_ROOT

OLDER_SALTS = ("3006.29", "3007.16")
# What opsalt's modules need at import time (their __virtual__ checks).
EXTRA_PACKAGES = ["jsonschema", "psycopg[binary]", "redis"]


def salt_venv(version):
    """
    Path of a venv with ``salt==<version>``, created on first use.
    """
    venv = os.path.join(REPO_ROOT, f".venv-salt{version.split('.')[0]}")
    marker = os.path.join(venv, ".opsalt-ready")
    wanted = f"salt=={version}"
    if not os.path.exists(marker) or open(marker, encoding="utf-8").read().strip() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
        pip = os.path.join(venv, "bin", "pip")
        proc = subprocess.run([pip, "install", "-q", wanted, *EXTRA_PACKAGES], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install {wanted} failed:\n{proc.stderr[-3000:]}")
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write(wanted + "\n")
    return venv


def salt3007_venv():
    """
    The Salt 3007 venv (the benchmark's ``http_json`` baseline).
    """
    return salt_venv("3007.16")
