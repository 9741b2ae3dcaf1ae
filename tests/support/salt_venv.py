"""
A second virtualenv with Salt 3007.16 and *without* opsalt, for the classic
(file_roots + saltutil.sync_all) deployment test and for the benchmark's
Salt ``http_json`` baseline. Made once, kept at ``.venv-salt3007``.

3007.17 pins a certifi release the package registry here lacks; 3007.16
installs.
"""

import os
import subprocess
import sys

from tests.support.asset_api import REPO_ROOT

SALT_3007 = "salt==3007.16"
VENV_3007 = os.path.join(REPO_ROOT, ".venv-salt3007")
# What opsalt's modules need at import time (their __virtual__ checks).
EXTRA_PACKAGES = ["jsonschema", "psycopg[binary]", "redis"]


def salt3007_venv():
    """
    Path of the Salt 3007 venv, created on first use.
    """
    marker = os.path.join(VENV_3007, ".opsalt-ready")
    if not os.path.exists(marker):
        subprocess.run([sys.executable, "-m", "venv", VENV_3007], check=True)
        pip = os.path.join(VENV_3007, "bin", "pip")
        subprocess.run([pip, "install", "-q", SALT_3007, *EXTRA_PACKAGES], check=True)
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write(SALT_3007 + "\n")
    return VENV_3007
