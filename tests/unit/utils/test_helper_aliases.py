"""
Every renamed helper keeps its former name as a deprecated alias (issue 14,
"Names"): ``import <old>`` still works, logs and warns, and hands back the
new module's API. The aliases are found by their docstring ("Deprecated
name of :mod:`<new>`"), so a new alias is checked without editing this test.
"""

import ast
import glob
import importlib
import logging
import os
import re
import sys

import pytest

from tests.support.asset_api import REPO_ROOT


def _aliases():
    found = []
    for path in sorted(glob.glob(os.path.join(REPO_ROOT, "_utils", "*.py"))):
        with open(path, encoding="utf-8") as handle:
            doc = ast.get_docstring(ast.parse(handle.read())) or ""
        match = re.match(r"Deprecated name of :mod:`(\w+)`", doc)
        if match:
            found.append((os.path.basename(path)[: -len(".py")], match.group(1)))
    return found


ALIASES = _aliases()


def test_the_known_aliases_are_found():
    assert set(ALIASES) >= {
        ("opsalt_pipini", "opsalt_pipconf"),
        ("opsalt_proc", "opsalt_vmtune"),
        ("opsalt_redis", "opsalt_redis_aof"),
        ("opsalt_flow", "opsalt_v2v_flow"),
        ("opsalt_http", "opsalt_ops_http_json"),
        ("opsalt_breaker", "opsalt_ops_http_json_breaker"),
    }


@pytest.mark.parametrize("old_name, new_name", ALIASES, ids=[old for old, _new in ALIASES])
def test_old_module_name_still_works_and_warns(caplog, old_name, new_name):
    new = importlib.import_module(new_name)
    sys.modules.pop(old_name, None)
    with caplog.at_level(logging.WARNING, logger=old_name):
        with pytest.warns(DeprecationWarning, match=f"import {new_name} instead"):
            old = importlib.import_module(old_name)
    assert f"{old_name} is deprecated" in caplog.text
    public = getattr(new, "__all__", None) or [name for name in vars(new) if not name.startswith("_")]
    assert public
    # the same objects, not copies: one API under two names
    assert all(getattr(old, name) is getattr(new, name) for name in public)
    if old is not new:  # a re-exporting alias: everything the new module exports
        assert set(old.__all__) == set(new.__all__)
