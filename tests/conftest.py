"""
Session-wide fixtures: the demo asset API and Salt's logging reset.
"""

import logging

import pytest
import salt._logging.impl

from tests.support.asset_api import AssetApi


def _drop_salt_temp_log_handler():
    # Importing Salt installs a deferred stderr handler and an atexit hook that
    # flushes it. Under pytest that stderr is a capture file closed before
    # atexit runs, hence "Logging error ... I/O operation on closed file" at
    # teardown. Shut the handler down (its queue goes nowhere: pytest's own
    # logging plugin captures records) so there is nothing left to flush.
    salt._logging.impl.shutdown_temp_handler()
    logging.root.setLevel(logging.WARNING)


_drop_salt_temp_log_handler()


def pytest_sessionfinish(session, exitstatus):
    _drop_salt_temp_log_handler()


@pytest.fixture(scope="session")
def salt_factories_config():
    """
    pytest-salt-factories settings.
    """
    return {"start_timeout": 120, "inject_sitecustomize": False}


@pytest.fixture(scope="session")
def asset_api(tmp_path_factory):
    """
    The demo asset API on 127.0.0.1, basic auth + bearer token, with faults
    injectable through ``asset_api.control(faults=[...])``.
    """
    api = AssetApi(str(tmp_path_factory.mktemp("asset-api"))).start()
    try:
        yield api
    finally:
        api.stop()
