"""
The component contract (CONTRIBUTING.rst, "The component shape"): every
component has the same files, and its states have the same thin shape.

Components are discovered, not listed: every ``salt/<name>/`` directory with
its ``_modules/<name>.py`` is one, so a seventh component is held to the
contract without editing this file. The thin-state rules hold for every
``_states/*.py``, the ``| json`` rule for every ``salt/**/*.sls``. The checks
read the source (files, AST, ruff's own complexity count); nothing is
imported or run.
"""

import ast
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from tests.support.asset_api import REPO_ROOT

SLS_FILES = ("init.sls", "clean.sls", "map.jinja", "defaults.yaml")

# The only opsalt helpers a state may import: they build the return dict and
# its endings, they plan nothing and touch nothing. Planning, validation,
# policy and I/O belong to the execution module, reached through __salt__.
STATE_HELPER_ALLOWLIST = {"opsalt_state"}

# Modules through which a state would reach the host itself, bypassing __salt__.
HOST_MODULES = {
    "os",
    "subprocess",
    "shutil",
    "socket",
    "pathlib",
    "tempfile",
    "glob",
    "io",
    "fcntl",
    "pwd",
    "grp",
    "psutil",
    "requests",
    "urllib",
    "http",
    "ctypes",
}
HOST_BUILTINS = {"open", "exec", "eval", "__import__", "compile"}

MAX_COMPLEXITY = 10

# Names a SLS may print without a serialiser: the tree's own location.
BARE_SLS_NAMES = {"tplroot", "tpldir", "slspath"}
# Templates an SLS may `{% include %}`: each prints only through `| json`
# itself (test_included_templates_print_only_through_json).
SLS_TEMPLATES = ["salt/opsalt/refusal.jinja"]


def _components(root=REPO_ROOT):
    """
    A component is an SLS tree ``salt/<name>/`` with its execution module
    ``_modules/<name>.py``. SLS-only trees (``salt/opsalt``, ``salt/orch``)
    and modules without a tree (``opsalt_rollout``) are not components;
    their SLS files and states are still checked below.
    """
    trees = {
        os.path.basename(path) for path in glob.glob(os.path.join(root, "salt", "*")) if os.path.isdir(path)
    }
    modules = {os.path.basename(path)[:-3] for path in glob.glob(os.path.join(root, "_modules", "*.py"))}
    return sorted(name for name in trees & modules if not name.startswith(("_", ".")))


COMPONENTS = _components()
STATE_COMPONENTS = [
    name for name in COMPONENTS if os.path.isfile(os.path.join(REPO_ROOT, "_states", f"{name}.py"))
]
# Every state module is thin, a component's or not.
STATE_MODULES = sorted(
    os.path.basename(path)[:-3] for path in glob.glob(os.path.join(REPO_ROOT, "_states", "*.py"))
)


def _path(*parts):
    return os.path.join(REPO_ROOT, *parts)


def _read(*parts):
    with open(_path(*parts), encoding="utf-8") as handle:
        return handle.read()


def _state_tree(name):
    return ast.parse(_read("_states", f"{name}.py"), filename=f"_states/{name}.py")


def test_a_new_component_is_discovered(tmp_path):
    # a seventh component counts as soon as it has its SLS tree and module
    (tmp_path / "salt" / "seventh").mkdir(parents=True)
    (tmp_path / "salt" / "sls_only").mkdir(parents=True)
    (tmp_path / "_modules").mkdir()
    for module in ("seventh", "helper_only", "__init__"):
        (tmp_path / "_modules" / f"{module}.py").write_text("")
    assert _components(str(tmp_path)) == ["seventh"]


def test_components_are_discovered():
    # the six components of issue 14 (ops_http_json is the ext_pillar, not a
    # salt/<name> component); anything added later is checked as well
    assert {"pgbouncer", "pipconf", "redis_aof", "v2v", "vmtune"} <= set(COMPONENTS)
    assert STATE_COMPONENTS, "no _states/<name>.py found"


# -- files every component has ----------------------------------------------


@pytest.mark.parametrize("name", COMPONENTS)
def test_execution_module_exists(name):
    assert os.path.isfile(_path("_modules", f"{name}.py")), f"_modules/{name}.py missing"


@pytest.mark.parametrize("name", COMPONENTS)
def test_sls_tree_has_init_clean_map_defaults(name):
    missing = [f for f in SLS_FILES if not os.path.isfile(_path("salt", name, f))]
    assert not missing, f"salt/{name}/ lacks {', '.join(missing)}"


@pytest.mark.parametrize("name", COMPONENTS)
def test_map_jinja_uses_the_one_merge_style(name):
    """
    defaults.yaml imported relative to tplroot, then one
    ``slsutil.merge(..., strategy='recurse', merge_lists=False)`` per layer
    (defaults, an optional os_family block, the pillar) builds ``mapdata``;
    no ``pillar.get(..., merge=True)``.
    """
    text = _read("salt", name, "map.jinja")
    assert re.search(r"import_yaml\s+tplroot\s*~\s*[\"']/defaults\.yaml[\"']\s+as\s+defaults", text), (
        f"salt/{name}/map.jinja does not import_yaml tplroot ~ '/defaults.yaml' as defaults"
    )
    assert re.search(r"set\s+mapdata\s*=\s*salt\[['\"]slsutil\.merge['\"]\]\(", text), (
        f"salt/{name}/map.jinja does not build mapdata with salt['slsutil.merge'](...)"
    )
    merges = re.findall(r"slsutil\.merge['\"]\]\((.*?)\)\s*(?:%\}|\||$)", text, re.M)
    assert merges
    for call in merges:
        # 'smart' (the default) is 'recurse' under the jinja|yaml renderer
        strategy = re.search(r"strategy\s*=\s*['\"](\w+)['\"]", call)
        assert strategy is None or strategy.group(1) == "recurse", (
            f"salt/{name}/map.jinja: {call}: strategy other than 'recurse'"
        )
        assert re.search(r"merge_lists\s*=\s*False", call), (
            f"salt/{name}/map.jinja: {call}: no merge_lists=False"
        )
    assert not re.search(r"merge\s*=\s*True", text), (
        f"salt/{name}/map.jinja merges with pillar.get(merge=True)"
    )


@pytest.mark.parametrize("name", COMPONENTS)
def test_schema_has_a_section(name):
    schema = json.loads(_read("schema", "pillar.schema.json"))
    assert name in schema.get("$defs", {}), f"schema/pillar.schema.json has no $defs/{name}"
    assert schema.get("properties", {}).get(name) == {"$ref": f"#/$defs/{name}"}, (
        f"schema/pillar.schema.json: properties/{name} is not a $ref to #/$defs/{name}"
    )


@pytest.mark.parametrize("name", COMPONENTS)
def test_docs_page_exists(name):
    assert os.path.isfile(_path("docs", "components", f"{name}.rst")), f"docs/components/{name}.rst missing"


@pytest.mark.parametrize("level", ["unit", "functional", "integration"])
@pytest.mark.parametrize("name", COMPONENTS)
def test_tests_exist_at_every_level(name, level):
    found = glob.glob(_path("tests", level, "**", f"test_{name}.py"), recursive=True)
    found += glob.glob(_path("tests", level, "**", f"test_{name}_*.py"), recursive=True)
    assert found, f"no tests/{level}/**/test_{name}.py (or test_{name}_*.py)"


@pytest.mark.parametrize("name", STATE_COMPONENTS)
def test_module_plans_and_applies(name):
    tree = ast.parse(_read("_modules", f"{name}.py"))
    public = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    }
    plans = {f for f in public if f.startswith("plan") or f == "diff"}
    applies = {f for f in public if f.startswith("apply") or f == "configure"}
    assert plans and applies, f"_modules/{name}.py needs plan*/apply* (or diff/configure) for its states"


# -- the shape of every state module ------------------------------------------


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module


@pytest.mark.parametrize("name", STATE_MODULES)
def test_state_imports_no_planning_helper(name):
    bad = [
        f"line {line}: import {module}"
        for line, module in _imports(_state_tree(name))
        if module.split(".")[0].startswith("opsalt_") and module.split(".")[0] not in STATE_HELPER_ALLOWLIST
    ]
    assert not bad, f"_states/{name}.py imports helpers (plan in the module instead): {bad}"


@pytest.mark.parametrize("name", STATE_MODULES)
def test_state_reaches_the_host_only_through_salt(name):
    tree = _state_tree(name)
    bad = [
        f"line {line}: import {module}"
        for line, module in _imports(tree)
        if module.split(".")[0] in HOST_MODULES
    ]
    bad += [
        f"line {node.lineno}: {node.func.id}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in HOST_BUILTINS
    ]
    assert not bad, f"_states/{name}.py reaches the host itself: {bad}"


def _is_salt_call(node):
    # __salt__["mod.fun"](...) or __salt__.get(...)(...): a membership test
    # (`"mod.fun" in __salt__`, as __virtual__ does) is no call.
    func = node.func if isinstance(node, ast.Call) else None
    while isinstance(func, (ast.Subscript, ast.Attribute, ast.Call)):
        func = func.func if isinstance(func, ast.Call) else func.value
    return isinstance(func, ast.Name) and func.id == "__salt__"


def _salt_calls_outside_try(tree):
    """Line numbers of every ``__salt__`` call that is not inside a ``try:`` body."""
    outside = []

    def visit(node, guarded):
        if _is_salt_call(node) and not guarded:
            outside.append(node.lineno)
        if isinstance(node, ast.Try):
            for child in node.body:
                visit(child, True)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return sorted(set(outside))


@pytest.mark.parametrize("name", STATE_MODULES)
def test_every_salt_call_in_a_state_is_inside_try(name):
    lines = _salt_calls_outside_try(_state_tree(name))
    assert not lines, f"_states/{name}.py calls __salt__ outside a try: on lines {lines}"


def test_salt_calls_outside_try_are_found():
    # the check itself: a call in an except handler is not guarded; a
    # membership test is no call
    source = (
        "if 'a.b' in __salt__:\n    pass\n"
        "try:\n    __salt__['a.b']()\nexcept Exception:\n    __salt__['c.d']()\n"
        "__salt__['e.f'](x=1)\nv = __salt__.get('g.h')()\n"
    )
    assert _salt_calls_outside_try(ast.parse(source)) == [6, 7, 8]


@pytest.mark.parametrize("name", STATE_MODULES)
def test_state_functions_are_simple(name):
    """ruff's own McCabe count (C901), at most 10 for every function of a state module."""
    proc = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "ruff"),
            "check",
            "--isolated",
            "--select",
            "C901",
            "--config",
            f"lint.mccabe.max-complexity = {MAX_COMPLEXITY}",
            "--output-format",
            "json",
            "--exit-zero",
            _path("_states", f"{name}.py"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    too_complex = [f"line {item['location']['row']}: {item['message']}" for item in json.loads(proc.stdout)]
    assert not too_complex, f"_states/{name}.py: {too_complex}"


@pytest.mark.parametrize("name", STATE_MODULES)
def test_state_reads_test_mode_one_way(name):
    other = [
        node.lineno
        for node in ast.walk(_state_tree(name))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "__opts__"
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == "test"
    ]
    assert not other, f"_states/{name}.py reads __opts__.get('test') on lines {other}: use __opts__['test']"


# The endings every component's state words the same way (opsalt_state's
# unchanged/refused/apply_failed); wordings of their own drifted before.
_OWN_ENDING = re.compile(r"already|nothing (changed|written)|up to date|applying|failed:", re.IGNORECASE)


def _own_endings(tree):
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _OWN_ENDING.search(node.value)
        and "\n" not in node.value  # docstrings
    ]


@pytest.mark.parametrize("name", STATE_COMPONENTS)
def test_state_words_its_endings_through_opsalt_state(name):
    own = _own_endings(_state_tree(name))
    assert not own, (
        f"_states/{name}.py words an ending itself: {own}; use opsalt_state.unchanged/refused/apply_failed"
    )


def test_own_endings_are_found():
    tree = ast.parse(
        'def f(ret):\n    ret["comment"] = f"{x} already as wanted"\n    return fail(ret, "nothing written")\n'
    )
    assert [line for line, _text in _own_endings(tree)] == [2, 3]


# -- SLS text: pillar only through a serialiser (issue 12) ---------------------

SLS_PATHS = sorted(
    os.path.relpath(path, REPO_ROOT) for path in glob.glob(_path("salt", "**", "*.sls"), recursive=True)
)
_COMMENT = re.compile(r"\{#.*?#\}", re.S)
_EXPRESSION = re.compile(r"\{\{-?(.*?)-?\}\}", re.S)


def _unserialised(text):
    """Every ``{{ ... }}`` that neither ends in ``| json`` nor names the tree's location."""
    bad = []
    for match in _EXPRESSION.finditer(_COMMENT.sub("", text)):
        expression = match.group(1).strip()
        if expression in BARE_SLS_NAMES or re.search(r"\|\s*json\s*$", expression):
            continue
        bad.append(expression)
    return bad


# Bare expressions that print no pillar text, each with the reason; to be
# converted to `| json` by their owners (then the entry goes: the test below
# fails while an entry matches nothing). Nothing else may print bare.
NOT_PILLAR = {
    ("salt/vmtune/init.sls", "key"): "argument names from a fixed tuple in the SLS",
    ("salt/vmtune/beacon.sls", "key"): "argument names from a fixed tuple in the SLS",
}


@pytest.mark.parametrize("path", SLS_PATHS)
def test_sls_prints_values_only_through_json(path):
    bare = [expr for expr in _unserialised(_read(path)) if (path, expr) not in NOT_PILLAR]
    assert not bare, f"{path} prints without | json: {bare}"


@pytest.mark.parametrize("path", SLS_TEMPLATES)
def test_included_templates_print_only_through_json(path):
    assert _unserialised(_read(path)) == []


def test_sls_include_only_checked_templates():
    included = {
        (path, name)
        for path in SLS_PATHS
        for name in re.findall(r"\{%-?\s*include\s+[\"']([^\"']+)[\"']", _read(path))
    }
    assert included, "no SLS includes a template: drop SLS_TEMPLATES"
    unchecked = sorted((path, name) for path, name in included if f"salt/{name}" not in SLS_TEMPLATES)
    assert not unchecked, unchecked


def test_every_not_pillar_exception_is_still_needed():
    stale = [key for key in NOT_PILLAR if key[1] not in _unserialised(_read(key[0]))]
    assert not stale, f"fixed, remove from NOT_PILLAR: {stale}"


def test_unserialised_expressions_are_found():
    text = "{# {{ ignored }} #}\na: {{ x | json }}\nb: {{ tplroot }}\nc: {{ y }}\nd: {{- z|json -}}\ne: {{ w | json | upper }}\n"
    assert _unserialised(text) == ["y", "w | json | upper"]


def test_every_sls_is_checked():
    assert len(SLS_PATHS) >= len(COMPONENTS) * 2


# -- one deadline loop (issue 14) ------------------------------------------------

# Product code: what Salt loads, and the demo. Waiting until a deadline is
# opsalt_wait.until's job; nothing else computes a deadline or polls a clock.
PRODUCT_DIRS = ("_modules", "_states", "_utils", "_runners", "_pillar", "_beacons", "demo")
PRODUCT_FILES = sorted(
    os.path.relpath(path, REPO_ROOT)
    for directory in PRODUCT_DIRS
    for path in glob.glob(_path(directory, "**", "*.py"), recursive=True)
)
WAIT_HELPER = "_utils/opsalt_wait.py"
# Hand-rolled deadlines still there, each with the reason; the entry goes when
# its owner converts it (the test below fails while an entry matches nothing).
OWN_DEADLINES = {}
_CLOCKS = {"monotonic", "time", "perf_counter"}


def _clock_call(node):
    """``time.monotonic()``, ``time.time()``, ``monotonic()``, ..."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr in _CLOCKS and isinstance(func.value, ast.Name) and func.value.id == "time"
    return isinstance(func, ast.Name) and func.id in _CLOCKS - {"time"}


def _sleep_call(node):
    func = node.func if isinstance(node, ast.Call) else None
    return (isinstance(func, ast.Attribute) and func.attr == "sleep") or (
        isinstance(func, ast.Name) and func.id == "sleep"
    )


def _hand_rolled_deadlines(source, filename="<source>"):
    """
    Line numbers of deadlines made by hand: ``time.monotonic() + ...`` (a
    point in time to wait for; ``time.time() + ttl`` for an expiry kept on
    disk is not one), and any loop that both sleeps and reads a clock.
    """
    found = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            for operand in (node.left, node.right):
                if _clock_call(operand) and _is_monotonic(operand):
                    found.add(node.lineno)
        if isinstance(node, (ast.While, ast.For)):
            inner = list(ast.walk(node))
            if any(_sleep_call(n) for n in inner) and any(_clock_call(n) for n in inner):
                found.add(node.lineno)
    return sorted(found)


def _is_monotonic(call):
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id
    return name in ("monotonic", "perf_counter")


def test_product_files_are_found():
    assert WAIT_HELPER in PRODUCT_FILES and "demo/run_demo.py" in PRODUCT_FILES
    assert "_modules/redis_aof.py" in PRODUCT_FILES


@pytest.mark.parametrize("path", [p for p in PRODUCT_FILES if p != WAIT_HELPER and p not in OWN_DEADLINES])
def test_only_opsalt_wait_computes_a_deadline(path):
    lines = _hand_rolled_deadlines(_read(path), path)
    assert not lines, f"{path}: a deadline loop by hand at line(s) {lines}; use opsalt_wait.until"


def test_every_own_deadline_exception_is_still_needed():
    stale = [path for path in OWN_DEADLINES if not _hand_rolled_deadlines(_read(path), path)]
    assert not stale, f"converted, remove from OWN_DEADLINES: {stale}"


def test_hand_rolled_deadlines_are_found():
    loop = "import time\nend = time.monotonic() + 5\nwhile time.monotonic() < end:\n    time.sleep(0.1)\n"
    assert _hand_rolled_deadlines(loop) == [2, 3]
    polled = "import time\nstart = time.time()\nfor _ in range(9):\n    if time.time() - start > 3:\n        break\n    time.sleep(1)\n"
    assert _hand_rolled_deadlines(polled) == [3]
    fine = (
        "import time\nimport opsalt_wait\nexpires = time.time() + 900\nstarted = time.monotonic()\n"
        "opsalt_wait.until(check, 5)\nelapsed = time.monotonic() - started\ntime.sleep(1)\n"
    )
    assert _hand_rolled_deadlines(fine) == []
