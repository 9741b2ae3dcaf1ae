"""
opsalt_redis_aof under its old name: ``opsalt_redis`` (helpers are named
after their component, issue 14) still imports, warns, and is the same module.
"""

import importlib
import logging
import sys

import opsalt_redis_aof
import pytest


def test_old_module_name_still_works_and_warns(caplog):
    sys.modules.pop("opsalt_redis", None)
    with caplog.at_level(logging.WARNING, logger="opsalt_redis"):
        with pytest.warns(DeprecationWarning, match="import opsalt_redis_aof instead"):
            old = importlib.import_module("opsalt_redis")
    assert "opsalt_redis is deprecated" in caplog.text
    assert old is opsalt_redis_aof
    assert old.parse_info("# Persistence\r\naof_enabled:1\r\n")["aof_enabled"] == 1
