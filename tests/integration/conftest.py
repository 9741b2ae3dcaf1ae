"""
One real salt-master and salt-minion (pytest-salt-factories) shared by every
integration test in the session: starting a pair costs ~20 s.

The master takes its ext_pillar from the demo asset API through
``ops_http_json``; its file_roots is the repo's ``salt/`` SLS tree. opsalt's
modules reach both daemons through the installed package's ``salt.loader``
entry point (no sync). Tests put their component's pillar section into the
minion's document with ``set_pillar(key, value)``, which also refreshes the
minion's pillar.
"""

import os

import pytest
from saltfactories.utils import random_string

from tests.support.asset_api import REPO_ROOT


@pytest.fixture(scope="session")
def salt_master(salt_factories, asset_api):
    """
    The shared salt-master.
    """
    config = {
        "ext_pillar": [{"ops_http_json": asset_api.ext_pillar_config(on_error="fail")}],
        "file_roots": {"base": [os.path.join(REPO_ROOT, "salt")]},
        "pillar_roots": {"base": []},
        "log_level_logfile": "debug",
        "open_mode": True,
    }
    factory = salt_factories.salt_master_daemon(random_string("master-", uppercase=False), overrides=config)
    with factory.started():
        yield factory


@pytest.fixture(scope="session")
def operator_allowed_dir(tmp_path_factory):
    """
    A directory the shared minion's own configuration allows vmtune to read
    and write (``opsalt:policy:vmtune:allowed_paths``), for trees the minion
    daemon itself reads: its beacons see only the policy it started with,
    while a ``minion.d`` file a test writes later reaches ``salt-call`` only
    (and replaces this ``opsalt`` key there).
    """
    return str(tmp_path_factory.mktemp("operator-allowed"))


@pytest.fixture(scope="session")
def salt_minion(salt_master, asset_api, operator_allowed_dir):
    """
    The shared salt-minion; its asset-API document starts with a marker key.
    """
    minion_id = random_string("minion-", uppercase=False)
    asset_api.set_document(minion_id, {"opsalt_test": {"minion": minion_id}})
    overrides = {
        "log_level_logfile": "debug",
        "opsalt": {"policy": {"vmtune": {"allowed_paths": [operator_allowed_dir]}}},
    }
    factory = salt_master.salt_minion_daemon(minion_id, overrides=overrides)
    with factory.started():
        yield factory


@pytest.fixture(scope="session")
def salt_call_cli(salt_minion):
    return salt_minion.salt_call_cli(timeout=300)


@pytest.fixture(scope="session")
def salt_run_cli(salt_master):
    return salt_master.salt_run_cli(timeout=300)


@pytest.fixture(scope="session")
def salt_cli(salt_master):
    return salt_master.salt_cli(timeout=300)


@pytest.fixture
def set_pillar(asset_api, salt_minion, salt_call_cli):
    """
    ``set_pillar(key, value)``: set one top-level pillar key of the shared
    minion in the asset API and refresh the minion's pillar.
    """

    def _set(key, value):
        asset_api.set_section(salt_minion.id, key, value)
        ret = salt_call_cli.run("saltutil.refresh_pillar", wait=True)
        assert ret.returncode == 0, ret
        return ret

    return _set
