"""
The built wheel carries every loader directory, the shared helpers as
top-level modules, the demo API and the salt.loader entry point.
"""

import glob
import os
import subprocess
import sys
import zipfile

import pytest

from tests.support.asset_api import REPO_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            REPO_ROOT,
        ],
        check=True,
        capture_output=True,
    )
    (path,) = glob.glob(str(out / "opsalt-*.whl"))
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_wheel_contains_loader_dirs_and_helpers(wheel):
    names = set(wheel.namelist())
    for kind in ("_modules", "_states", "_runners", "_pillar", "_beacons"):
        for source in glob.glob(os.path.join(REPO_ROOT, kind, "*.py")):
            assert f"opsalt/{kind}/{os.path.basename(source)}" in names
    for helper in glob.glob(os.path.join(REPO_ROOT, "_utils", "opsalt_*.py")):
        assert os.path.basename(helper) in names, f"{helper} missing from py_modules in setup.cfg"
    assert "opsalt/demo/asset_api.py" in names
    assert "opsalt/loader.py" in names


def test_wheel_declares_the_salt_loader_entry_point(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[salt.loader]" in text
    assert "opsalt = opsalt.loader:loader_dirs" in text


def test_loader_dirs_point_at_existing_directories():
    import opsalt.loader

    dirs = opsalt.loader.loader_dirs()
    assert set(dirs) >= {"modules", "states", "runners", "pillar", "beacons"}
    for paths in dirs.values():
        assert all(os.path.isdir(p) for p in paths)
