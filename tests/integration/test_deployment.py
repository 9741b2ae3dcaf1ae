"""
Both ways of deploying opsalt.

(a) Installed package: the shared master/minion run from the venv where
opsalt is pip-installed; its modules are found through the ``salt.loader``
entry point with nothing synced.

(b) Classic: Salt 3006 and 3007 venvs *without* opsalt, the repo as ``file_roots``,
``saltutil.sync_all`` on the minion side (``salt-call --local``) and
``salt-run saltutil.sync_all`` on the master side; then the synced ext_pillar,
runner, modules and shared ``_utils`` helpers work.
"""

import glob
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.support.asset_api import REPO_ROOT
from tests.support.salt_venv import OLDER_SALTS, salt_venv

REPO_MODULES = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO_ROOT, "_modules", "*.py"))
)


def test_installed_package_needs_no_sync(salt_master, salt_minion, salt_call_cli, salt_run_cli):
    for daemon in (salt_master, salt_minion):
        extmods = daemon.config["extension_modules"]
        synced = glob.glob(os.path.join(extmods, "*", "opsalt_*.py")) + glob.glob(
            os.path.join(extmods, "pillar", "ops_http_json.py")
        )
        assert synced == [], synced
    ret = salt_run_cli.run("ops_http_json.fetch", salt_minion.id)
    assert ret.returncode == 0, ret
    ret = salt_call_cli.run("sys.list_modules")
    assert ret.returncode == 0
    missing = [name for name in REPO_MODULES if name not in ret.data]
    assert missing == []


@pytest.fixture(scope="module", params=OLDER_SALTS)
def classic(request, tmp_path_factory, asset_api):
    venv = salt_venv(request.param)
    root = tmp_path_factory.mktemp("classic")
    asset_api.set_document("classic-minion", {"ops": {"role": "classic"}})
    ext_pillar = [{"ops_http_json": asset_api.ext_pillar_config(on_error="fail")}]
    common = {
        "root_dir": str(root),
        "file_roots": {"base": [REPO_ROOT, os.path.join(REPO_ROOT, "salt")]},
        "pillar_roots": {"base": []},
        "ext_pillar": ext_pillar,
        "log_file": str(root / "salt.log"),
        "log_level_logfile": "info",
    }
    for name, extra in (
        ("minion", {"id": "classic-minion", "file_client": "local"}),
        ("master", {"interface": "127.0.0.1", "user": "root"}),
    ):
        config = dict(common, **extra)
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / name).write_text(yaml.safe_dump(config))
    return {"venv": venv, "config_dir": str(root / "etc"), "root": root}


def _run(classic, tool, *args):
    argv = [
        os.path.join(classic["venv"], "bin", tool),
        "--config-dir",
        classic["config_dir"],
        "--out",
        "json",
    ]
    if tool == "salt-call":
        argv.append("--local")
    proc = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=300, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = None
    return proc, data


def test_classic_minion_sync_all(classic):
    proc, data = _run(classic, "salt-call", "saltutil.sync_all")
    assert proc.returncode == 0, proc.stderr
    synced = data["local"]
    assert {"utils.opsalt_ops_http_json", "utils.opsalt_ops_http_json_breaker"} <= set(synced["utils"])
    assert "pillar.ops_http_json" in synced["pillar"]
    for name in REPO_MODULES:
        assert f"modules.{name}" in synced["modules"]
    proc, data = _run(classic, "salt-call", "pillar.items")
    assert proc.returncode == 0, proc.stderr
    assert data["local"]["ops"] == {"role": "classic"}
    assert "_errors" not in data["local"]
    proc, data = _run(classic, "salt-call", "sys.list_modules")
    assert [name for name in REPO_MODULES if name not in data["local"]] == []


def test_classic_master_sync_all_and_runner(classic):
    proc, data = _run(classic, "salt-run", "saltutil.sync_all")
    assert proc.returncode == 0, proc.stderr
    assert "runners.ops_http_json" in data["runners"]
    assert {"utils.opsalt_ops_http_json", "utils.opsalt_ops_http_json_breaker"} <= set(data["utils"])
    assert "pillar.ops_http_json" in data["pillar"]
    proc, data = _run(classic, "salt-run", "ops_http_json.fetch", "classic-minion")
    assert proc.returncode == 0, proc.stderr
    assert data["ok"] is True, data
    assert data["document"] == {"ops": {"role": "***"}}
    proc, data = _run(classic, "salt-run", "ops_http_json.fetch", "classic-minion", "unmask=True")
    assert proc.returncode == 0, proc.stderr
    assert data["document"] == {"ops": {"role": "classic"}}


def test_classic_sync_all_drops_the_old_file_of_a_renamed_helper(tmp_path):
    """
    What the docs promise for a rename (opsalt_pipini -> opsalt_pipconf, ...):
    the next ``saltutil.sync_all`` removes the old synced file, because
    Salt's ``clean_dynamic_modules`` (default True) deletes what the file
    server no longer has.
    """
    roots = tmp_path / "roots"
    (roots / "_utils").mkdir(parents=True)
    (roots / "_utils" / "opsalt_zz_old.py").write_text('"""before the rename"""\n')
    config = {
        "id": "rename-minion",
        "file_client": "local",
        "root_dir": str(tmp_path / "root"),
        "file_roots": {"base": [str(roots)]},
        "pillar_roots": {"base": []},
        # the file server caches its file list for 20 s by default; a real
        # master has long passed that by the time minions sync
        "fileserver_list_cache_time": 0,
    }
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "minion").write_text(yaml.safe_dump(config))
    salt_call = os.path.join(os.path.dirname(sys.executable), "salt-call")

    def sync_all():
        argv = [
            salt_call,
            "--local",
            "--config-dir",
            str(tmp_path / "etc"),
            "--out",
            "json",
            "saltutil.sync_all",
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["local"]["utils"]

    extmods_utils = tmp_path / "root" / "var" / "cache" / "salt" / "minion" / "extmods" / "utils"
    assert sync_all() == ["utils.opsalt_zz_old"]
    assert (extmods_utils / "opsalt_zz_old.py").is_file()
    (roots / "_utils" / "opsalt_zz_old.py").rename(roots / "_utils" / "opsalt_zz_new.py")
    assert sync_all() == ["utils.opsalt_zz_new"]
    assert sorted(p.name for p in extmods_utils.glob("*.py")) == ["opsalt_zz_new.py"]
