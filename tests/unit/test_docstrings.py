"""
Every public function of every opsalt module, state, runner, beacon and
ext_pillar has a docstring with a ``CLI Example:`` (what ``salt-call
sys.doc`` / ``salt-run doc.runner`` show a Salt user).
"""

import ast
import glob
import os

import pytest

from tests.support.asset_api import REPO_ROOT

# Entry points Salt calls itself; their docs live in the module docstring.
NOT_CLI = {("_pillar", "ext_pillar"), ("_beacons", "beacon"), ("_beacons", "validate")}

SOURCES = sorted(
    path
    for kind in ("_modules", "_states", "_runners", "_beacons", "_pillar")
    for path in glob.glob(os.path.join(REPO_ROOT, kind, "*.py"))
)


def _public_functions(path):
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_public_functions_document_a_cli_example(path):
    kind = os.path.basename(os.path.dirname(path))
    with open(path, encoding="utf-8") as handle:
        assert ast.get_docstring(ast.parse(handle.read())), f"{path} has no module docstring"
    missing = []
    for func in _public_functions(path):
        doc = ast.get_docstring(func) or ""
        if (kind, func.name) in NOT_CLI:
            assert doc, f"{func.name} has no docstring"
            continue
        if "CLI Example:" not in doc:
            missing.append(func.name)
    assert missing == [], f"{os.path.relpath(path, REPO_ROOT)}: no 'CLI Example:' in {missing}"
