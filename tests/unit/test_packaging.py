"""
The built wheel carries every loader directory, the shared helpers as
top-level modules, the demo API, the salt.loader entry point, and the data a
master needs without a checkout: the SLS tree and the pillar schema, found
through ``opsalt paths``.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.support.asset_api import REPO_ROOT

# Left out of the build copy: build/ of an earlier build would put stale
# (e.g. renamed) files into the wheel and hide a missing one.
_NOT_SOURCES = shutil.ignore_patterns(
    ".venv*", "build", ".git", "*.egg-info", "_build", ".ruff_cache", "__pycache__"
)


def _repo_files(*parts):
    top = os.path.join(REPO_ROOT, *parts)
    return sorted(
        os.path.relpath(os.path.join(root, name), REPO_ROOT)
        for root, _dirs, names in os.walk(top)
        for name in names
        if "__pycache__" not in root
    )


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory):
    source = tmp_path_factory.mktemp("source") / "opsalt"
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCES)
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
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = glob.glob(str(out / "opsalt-*.whl"))
    return path


@pytest.fixture(scope="module")
def wheel(wheel_path):
    with zipfile.ZipFile(wheel_path) as archive:
        yield archive


def test_wheel_contains_loader_dirs_and_helpers(wheel):
    names = set(wheel.namelist())
    for kind in ("_modules", "_states", "_runners", "_pillar", "_beacons"):
        for source in glob.glob(os.path.join(REPO_ROOT, kind, "*.py")):
            assert f"opsalt/{kind}/{os.path.basename(source)}" in names
    for helper in glob.glob(os.path.join(REPO_ROOT, "_utils", "opsalt_*.py")):
        assert os.path.basename(helper) in names, f"{helper} missing from py_modules in setup.cfg"
    for module in ("opsalt/__init__.py", "opsalt/loader.py", "opsalt/cli.py"):
        assert module in names
    for demo in ("asset_api.py", "run_demo.py", "pillars/demo-minion.yaml"):
        assert f"opsalt/demo/{demo}" in names


def test_wheel_contains_the_sls_tree_and_the_schema(wheel):
    names = set(wheel.namelist())
    shipped = _repo_files("salt") + _repo_files("schema")
    assert "salt/pgbouncer/init.sls" in shipped and "schema/pillar.schema.json" in shipped
    missing = [path for path in shipped if f"opsalt/{path}" not in names]
    assert not missing, f"not in the wheel (package_data in setup.cfg): {missing}"


def test_wheel_declares_the_entry_points(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[salt.loader]" in text
    assert "opsalt = opsalt.loader:loader_dirs" in text
    assert "opsalt = opsalt.cli:main" in text
    assert "opsalt-demo-api = opsalt.demo.asset_api:main" in text


def test_installed_wheel_reports_its_own_sls_tree_and_schema(wheel_path, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), wheel_path],
        check=True,
        capture_output=True,
    )
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, opsalt.cli; sys.exit(opsalt.cli.main(['paths', '--json']))"],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    paths = json.loads(proc.stdout)
    for name in ("sls", "schema", "modules", "states", "runners", "pillar", "beacons"):
        assert paths[name].startswith(str(target) + os.sep), (name, paths[name])
        assert os.path.exists(paths[name]), paths[name]
    assert os.path.isfile(os.path.join(paths["sls"], "pgbouncer", "config", "init.sls"))
    with open(paths["schema"], encoding="utf-8") as handle:
        assert "$defs" in json.load(handle)


def test_paths_in_a_checkout_are_the_repo_dirs(capsys):
    import opsalt.cli

    assert opsalt.cli.main(["paths", "sls"]) == 0
    assert capsys.readouterr().out.strip() == os.path.join(REPO_ROOT, "salt")
    assert opsalt.cli.main(["paths", "schema"]) == 0
    assert capsys.readouterr().out.strip() == os.path.join(REPO_ROOT, "schema", "pillar.schema.json")
    assert opsalt.cli.main(["paths", "nonsense"]) == 2
    assert "unknown name 'nonsense'" in capsys.readouterr().err


def test_loader_dirs_point_at_existing_directories():
    import opsalt.loader

    dirs = opsalt.loader.loader_dirs()
    assert set(dirs) >= {"modules", "states", "runners", "pillar", "beacons"}
    for paths in dirs.values():
        assert all(os.path.isdir(p) for p in paths)
