"""
Issue 12's injection suite over the pillar schema, in process (Tests,
"the full matrix ... through Salt's renderers and each writer").

For every component section of ``schema/pillar.schema.json`` that has an SLS
tree ``salt/<name>/``, the benign documents (the section's schema
``examples`` plus the few documents in ``SUPPLEMENTS`` that reach the string
fields the examples leave out, see ``test_benign_documents_reach_every_string_field``)
are walked for every string leaf and every map key. For each of those paths
and each payload class of ``tests/support/payloads.py``:

- the schema (``opsalt_validate.schema_validator``) refuses every payload
  with a control character, at every path; what it accepts otherwise is
  data (a ``:`` in a password, a ``'`` in a connection string) and is
  recorded in ``ACCEPTED`` (printed by ``test_matrix_summary``);
- every SLS file of the component, rendered by Salt's own renderers
  (``state.show_low_sls``' machinery) with the poisoned pillar, gives the
  lowstate of the benign document apart from the poisoned value itself: the
  same state IDs, the same state functions, the same arguments once the
  poisoned value is put back. The only other outcome accepted is a refusal
  that names the field: a state of the same ID turned into a failing
  ``test`` state by the SLS's own check (pgbouncer's ``path_refused`` and
  ``name_refused``, v2v's ``work_root_verdict``), or a render error;
- each writer that can be called in process (pgbouncer's
  ``plan_config``/``plan_userlist``, pipconf's ``plan_config``/
  ``plan_pypirc``/``plan_kolla``, redis_aof's ``validate`` and instance
  check, vmtune's ``plan``) gets the poisoned data: it refuses with an error
  naming the field, or what it would write has the benign document's
  directives (no new section, key, user or line) and no control character;
  and the files it would write (benign copies under a temporary directory,
  allowed by an operator policy as in the other functional tests) stay
  byte-identical.

A text that cannot pass through SLS text unchanged (U+0085, U+2028 or
U+2029, which Salt's ``| json`` leaves raw and YAML folds) is refused for
the whole component: every SLS file renders the component's one failing
state naming the field (``injection.REFUSAL_ID``), and the writers refuse
the character as a control character.

Speed: one Salt ``HighState`` per component is built once and re-rendered
with each document's pillar (``test_cached_render_is_state_show_low_sls``
holds it to ``state.show_low_sls``), Jinja's compiled templates are memoised
by source, and each component x payload renders one document with every
path poisoned at once; only when that render is not exactly the benign one
is the group halved, down to single paths (see ``check_sls``).
"""

import base64
import configparser
import copy
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile

import jinja2
import opsalt_pgbouncer as pgconf
import opsalt_pipconf
import opsalt_validate
import pytest
import salt.loader.lazy
import salt.state
import salt.utils.state
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.asset_api import REPO_ROOT
from tests.support.injection import (
    COMPONENTS,
    FREE_FORM,
    NOT_REACHED,
    SCHEMA,
    VALIDATOR,
    benign_documents,
    canonical,
    compare,
    derived_id_map,
    document_targets,
    names_field,
    normalise,
    pairs_of,
    poison,
    schema_fields,
    sls_names,
    text_forms,
    walk,
)
from tests.support.loaders import make_loaders
from tests.support.payloads import PAYLOAD_IDS, PAYLOADS, has_control
from tests.support.postgres import ADMIN_USER, OPERATOR_POLICY
from tests.support.proc_trees import writable_copy

# The operator policy of the other functional tests (paths under /tmp, the
# console user), plus the index hosts of the schema's pipconf examples.
POLICY = dict(OPERATOR_POLICY, pipconf={"index_hosts": ["127.0.0.1", "localhost", "pypi.org"]})

# What each component x payload test found the schema accepting (data, not
# code): {component: {payload id: [path, ...]}}, printed by test_matrix_summary.
ACCEPTED = {}

FAILED_SLS = re.compile(r"Rendering SLS '[^:']*:([^']+)' failed")


# -- Salt's renderers, in process --------------------------------------------------


def _env_key(env):
    return (
        type(env),
        tuple(sorted(env.extensions)),
        env.block_start_string,
        env.block_end_string,
        env.variable_start_string,
        env.variable_end_string,
        env.comment_start_string,
        env.comment_end_string,
        env.line_statement_prefix,
        env.line_comment_prefix,
        env.trim_blocks,
        env.lstrip_blocks,
        env.newline_sequence,
        env.keep_trailing_newline,
        env.optimized,
        env.finalize,
        env.autoescape,
        env.is_async,
    )


@pytest.fixture(scope="module")
def jinja_memo():
    """
    Jinja's compile memoised by template source and environment options:
    Salt builds a fresh environment per render, so each SLS and map.jinja
    would be compiled again for every document. Compiling is a pure function
    of these inputs (it is what a Jinja bytecode cache stores).
    """
    original = jinja2.Environment.compile
    memo = {}

    def compile_(self, source, name=None, filename=None, raw=False, defer_init=False):
        if not isinstance(source, str):
            return original(self, source, name, filename, raw, defer_init)
        key = (_env_key(self), source, name, filename, raw, defer_init)
        if key not in memo:
            memo[key] = original(self, source, name, filename, raw, defer_init)
        return memo[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jinja2.Environment, "compile", compile_)
        yield memo


class Renderer:
    """
    One ``salt.state.HighState`` per component (what ``state.show_low_sls``
    builds for each call), rendering every SLS file of the component with
    a pillar swapped in place: the same dict object every loader of the
    HighState holds as ``__pillar__``.
    """

    def __init__(self, loaders):
        self.opts = salt.utils.state.get_sls_opts(loaders.opts)
        self.opts["saltenv"] = "base"
        self.opts["test"] = False
        self.states = {}
        self.benign_lows = {}

    def _state(self, component, pillar):
        if component not in self.states:
            self.states[component] = salt.state.HighState(self.opts, copy.deepcopy(pillar), initial_pillar={})
        return self.states[component]

    @staticmethod
    def _swap_pillar(state, pillar):
        # Loaded modules read __pillar__ from their loader's pack at each
        # access (salt.loader.context.NamedLoaderContext); the pack holds a
        # copy-on-access proxy of opts["pillar"], so the new pillar replaces
        # it in every loader of the State (test_cached_render_is_state_show_low_sls).
        state.opts["pillar"] = state.state.opts["pillar"] = pillar
        inner = state.state
        loaders = [inner.functions, getattr(inner.functions, "_dunder_salt", None), inner.states]
        loaders += [inner.rend, inner.utils, inner.serializers]
        for loader in loaders:
            if isinstance(loader, salt.loader.lazy.FilterDictWrapper):  # the renderers
                loader = loader._dict
            if loader is not None and "__pillar__" in getattr(loader, "pack", {}):
                loader.pack["__pillar__"] = pillar

    def render(self, component, pillar, files=None):
        """
        ``(chunks, errors, failed)`` of rendering ``files`` (default every
        SLS of ``component``): the lowstate of the files that rendered, the
        render errors, and the SLS that failed. ``chunks`` is ``None`` when
        the high data does not verify or compile.
        """
        state = self._state(component, pillar)
        self._swap_pillar(state, copy.deepcopy(pillar))
        state.building_highstate = type(state.building_highstate)()
        state.iorder = 10000
        state.push_active()
        try:
            names = [name for name in sls_names(component) if not files or name in files]
            high, errors = state.render_highstate({"base": names})
        finally:
            state.pop_active()
        errors = [str(error) for error in errors]
        failed = {match.group(1) for error in errors for match in [FAILED_SLS.search(error)] if match}
        more = self._unexplained(state.state.verify_high(high), failed)
        if not more:
            chunks, more = state.state.compile_high_data(high)
            more = self._unexplained(more, failed)
        if more:
            return None, errors + [str(error) for error in more], failed
        return chunks, errors, failed

    @staticmethod
    def _unexplained(errors, failed):
        # a requisite on a state of a file that failed: that failure says why
        return [
            str(error)
            for error in errors
            if not (failed and "Referenced state does not exist for requisite" in str(error))
        ]

    def lowstate(self, component, pillar):
        """As ``state.show_low_sls`` of every SLS of ``component``: the chunks, or the errors."""
        chunks, errors, _failed = self.render(component, pillar)
        return errors if errors else chunks

    def benign(self, component, index, document, files=None):
        """The lowstate of a benign document (rendered once per set of files)."""
        key = (component, index, tuple(sorted(files or ())))
        if key not in self.benign_lows:
            chunks, errors, _failed = self.render(component, {component: document}, files)
            assert chunks is not None and not errors, f"{component} benign document {index}: {errors}"
            self.benign_lows[key] = chunks
        return self.benign_lows[key]

    def close(self):
        for state in self.states.values():
            state.destroy()


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    root = tmp_path_factory.mktemp("injection-matrix")
    return make_loaders(
        root, file_roots={"base": [f"{REPO_ROOT}/salt"]}, id="injection-matrix", opsalt={"policy": POLICY}
    )


@pytest.fixture(scope="module")
def renderer(loaders, jinja_memo):
    rendering = Renderer(loaders)
    try:
        yield rendering
    finally:
        rendering.close()


def _suspects(marks, refusals):
    """The marks whose benign text a refused benign state carried: the refusal hides what that state did with them."""
    carried = " ".join(
        json.dumps(wanted, default=str) for wanted, _refusing in refusals if wanted is not None
    )
    return [(kind, path) for kind, path, _poisoned, benign in marks if benign in carried]


def check_sls(component, loaders, renderer, place, targets, payload, files=None):
    """
    Problems (strings) of rendering the document at ``place`` (a benign
    document and its index) with ``payload`` at every target at once.

    One render with every target poisoned clears them all when it is
    exactly the benign lowstate. Refusals that name a poisoned field are
    the only other differences a group may show, and then the targets whose
    benign text the refused states carried (what a refusal may hide) are
    rendered one by one. Otherwise the group is halved, down to single
    targets, each judged on its own; an SLS file that failed to render is
    compared no further in the group, and the halves are rendered with the
    failed files only (``files``), the other files having been compared.
    """
    index, document = place
    if not targets:
        return []
    poisoned, marks = poison(document, targets, payload)
    pillar = {component: poisoned}
    chunks, errors, failed = renderer.render(component, pillar, files)
    where = f"{component}:{':'.join(map(str, targets[0][1]))} ({targets[0][0]})"
    if chunks is None:
        verdict, details = "error", errors
    else:

        def kept(chunk):
            return chunk["__sls__"] not in failed and (files is None or chunk["__sls__"] in files)

        benign = [chunk for chunk in renderer.benign(component, index, document, files) if kept(chunk)]
        id_map = derived_id_map(component, loaders.modules.pipconf.state_id, pillar, marks)
        verdict, details = compare(component, benign, [c for c in chunks if kept(c)], marks, id_map, payload)
    if len(targets) > 1:
        named = verdict == "refused" and all(
            names_field(json.dumps(refusing, default=str), component, targets) for _w, refusing in details
        )
        problems = []
        if named:
            for target in _suspects(marks, details):
                problems += check_sls(component, loaders, renderer, place, [target], payload, files)
        if (verdict == "exact" or named) and not failed:
            return problems
        # halve the targets; where the other files were exact, over the failed files only
        narrowed = failed if verdict == "exact" or named else files
        half = len(targets) // 2
        groups = [[target] for target in targets] if len(targets) <= 3 else [targets[:half], targets[half:]]
        for group in groups:
            problems += check_sls(component, loaders, renderer, place, group, payload, narrowed)
        return problems
    problems = [
        f"{where}: the render failed without naming the field: {message}"
        for message in errors
        if not names_field(message, component, targets)
    ]
    if verdict == "refused":
        unnamed = [
            refusing for _w, refusing in details if not names_field(json.dumps(refusing), component, targets)
        ]
        problems += [f"{where}: a refusing state does not name the field: {unnamed}"] if unnamed else []
    elif verdict == "different":
        problems.append(f"{where}: {details}")
    return problems


# -- the writers, in process ----------------------------------------------------------


class Box:
    """
    Where the writers' files live: one place per benign document (every
    absolute path of the document moved under it, the poisoned suffix
    kept), readable by the pgbouncer service user like the real
    /etc/pgbouncer; a scratch area; and a loopback port nothing listens on
    for pgbouncer's console.
    """

    def __init__(self, root):
        self.root = root
        self.scratch = os.path.join(root, "scratch")
        os.makedirs(self.scratch)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        self.port = self._socket.getsockname()[1]
        self.places = {}

    def place(self, component, index):
        key = f"{component}-{index}"
        if key not in self.places:
            root = os.path.join(self.root, key)
            for directory in ("etc/pgbouncer", "run/postgresql", "etc/sysctl.d", "pipconf", "etc/kolla"):
                os.makedirs(os.path.join(root, directory))
            os.makedirs(os.path.join(root, "opt/kolla-venv"))
            with open(os.path.join(root, "opt/kolla-venv/pyvenv.cfg"), "w", encoding="utf-8") as handle:
                handle.write("home = /usr/bin\n")
            if component == "vmtune":
                writable_copy("multinode", os.path.join(root, "proc"))  # has watermark_scale_factor
            self.places[key] = Place(root, self.scratch, self.port)
        return self.places[key]

    def snapshot(self):
        """``{relative path: sha256}`` of every file but the scratch area."""
        found = {}
        for directory, dirs, files in os.walk(self.root):
            dirs[:] = [name for name in dirs if os.path.join(directory, name) != self.scratch]
            for name in files:
                path = os.path.join(directory, name)
                with open(path, "rb") as handle:
                    found[os.path.relpath(path, self.root)] = hashlib.sha256(handle.read()).hexdigest()
        return found

    def close(self):
        self._socket.close()


class Place:
    def __init__(self, root, scratch, port):
        self.root, self.scratch, self.port = root, scratch, port

    def path(self, value):
        return self.root + value if isinstance(value, str) and value.startswith("/") else value


def _ini(text):
    parser = configparser.RawConfigParser(strict=True, interpolation=None, delimiters=("=", ":"))
    parser.optionxform = str
    parser.read_string(text)
    return {section: dict(parser.items(section)) for section in parser.sections()}


def _pgbouncer_writers(document, place):
    userlist_path = document.get("userlist_path", "/etc/pgbouncer/userlist.txt")
    settings = dict(document.get("settings") or {})
    settings.setdefault("auth_file", userlist_path)  # as map.jinja does
    settings["auth_file"] = place.path(settings["auth_file"])
    if "auth_hba_file" in settings:
        settings["auth_hba_file"] = place.path(settings["auth_hba_file"])
    owner = document.get("owner")
    files = {
        "user": owner if owner is not None else document.get("user", "postgres"),
        "group": document.get("group", "postgres"),
        "mode": str(document.get("mode", "0640")),
    }
    # The console (admin) and verifier_from are connection parameters
    # (psycopg keyword arguments), never written into a file: the writers
    # get a fixed console on a port nothing listens on, no verifier_from
    # (a SCRAM verifier is computed here), and no service (with one,
    # plan_* asks the host's service manager; the SLS checks the name with
    # pgbouncer.name_refused, rendered above). The schema covers them.
    server = {"service": None, "pidfile": place.path(document.get("pidfile"))}
    admin = {"host": "127.0.0.1", "port": place.port, "user": ADMIN_USER}
    return {
        "userlist": (
            "pgbouncer",
            "plan_userlist",
            dict(
                name=place.path(userlist_path),
                users=document.get("userlist"),
                auth_type=settings.get("auth_type", "scram-sha-256"),
                method=document.get("userlist_method"),
                iterations=document.get("scram_iterations", 4096),
                allow_empty=document.get("allow_empty", False),
                **files,
                **server,
            ),
        ),
        "config": (
            "pgbouncer",
            "plan_config",
            dict(
                name=place.path(document.get("config_path", "/etc/pgbouncer/pgbouncer.ini")),
                databases=document.get("databases"),
                users=document.get("users"),
                settings=settings,
                restart=document.get("restart", False),
                restart_timeout=document.get("restart_timeout", 30),
                service_user=document.get("service_user"),
                admin=admin,
                allow_empty=document.get("allow_empty", False),
                **files,
                **server,
            ),
        ),
    }


def _pip_scope(scope, place, prefix):
    # A scope the writer resolves safely is moved under the place; any other
    # (a poisoned user name, an unknown form) is handed over as it is: the
    # writer must refuse it before touching the host.
    if scope == "global":
        return place.root + f"/pipconf/{prefix}global"
    if scope.startswith("user:") and re.fullmatch(opsalt_validate.NAME_PATTERN, scope[5:]):
        return place.root + f"/pipconf/{prefix}user-{scope[5:]}"
    if scope.startswith("venv:/"):
        return "venv:" + place.root + scope[5:]
    if scope.startswith("/"):
        return place.root + scope
    return scope


KOLLA_PATHS = {"template_override": "/etc/kolla/base_header.j2", "build_conf": "/etc/kolla/kolla-build.conf"}


def _pipconf_writers(document, place):
    writers = {}
    for index, (scope, config) in enumerate((document.get("configs") or {}).items()):
        writers[f"configs:{index}"] = (
            "pipconf",
            "plan_config",
            dict(
                name=_pip_scope(scope, place, "config-"),
                settings=config.get("settings"),
                exclusive=config.get("exclusive", False),
                mode=config.get("mode"),
                user=config.get("user"),
                group=config.get("group"),
            ),
        )
    for index, (scope, entry) in enumerate((document.get("pypirc") or {}).items()):
        writers[f"pypirc:{index}"] = (
            "pipconf",
            "plan_pypirc",
            dict(
                name=_pip_scope(scope, place, "pypirc-"),
                repositories=entry.get("repositories"),
                mode=entry.get("mode", "0600"),
                user=entry.get("user"),
                group=entry.get("group"),
            ),
        )
    kolla = dict(document.get("kolla") or {})
    if kolla.get("enabled") is True:
        for key, default in KOLLA_PATHS.items():
            kolla[key] = place.path(kolla.get(key, default))
        writers["kolla"] = ("pipconf", "plan_kolla", dict(kolla=kolla))
    return writers


def _redis_aof_writers(document, place):
    writers = {}
    shared = document.get("settings") or {}
    instances = document.get("instances") or {}
    for index, (key, instance) in enumerate(instances.items()):
        # what redis_aof._pillar_entry merges: the instance's settings over the shared ones
        merged = {**shared, **((instance or {}).get("settings") or {})}
        writers[f"settings:{index}"] = ("redis_aof", "validate", dict(settings=merged))
        # the state's pillar_instance: refused by name before any pillar read or connection
        writers[f"instance:{index}"] = ("redis_aof", "diff", dict(pillar_instance=key))
    if not instances and shared:
        writers["settings"] = ("redis_aof", "validate", dict(settings=shared))
    # host, port, unix_socket_path, username, password and instance are
    # redis-py connection arguments (RESP frames are length-prefixed), not
    # written by opsalt: the SLS matrix and the schema cover them.
    return writers


def _vmtune_writers(document, place):
    return {
        "plan": (
            "vmtune",
            "plan",
            dict(
                min_free_kbytes=document.get("min_free_kbytes"),
                vfs_cache_pressure=document.get("vfs_cache_pressure"),
                watermark_scale_factor=document.get("watermark_scale_factor"),
                burst_kb=document.get("burst_kb"),
                max_percent=document.get("max_percent"),
                allow_zero=document.get("allow_zero", False),
                config=place.path(document.get("config") or "/etc/sysctl.d/60-opsalt-vmtune.conf"),
                proc_root=place.path(document.get("proc_root") or "/proc"),
            ),
        )
    }


# Writers per component. v2v writes nothing from the pillar in process (its
# work root is the SLS's work_root_verdict, rendered above; migrations are
# the runner's), monitoring's writers read the pillar at run time
# (tests/unit/test_monitoring_rules.py holds their line checks).
WRITERS = {
    "pgbouncer": _pgbouncer_writers,
    "pipconf": _pipconf_writers,
    "redis_aof": _redis_aof_writers,
    "vmtune": _vmtune_writers,
}

# Writers whose benign call cannot succeed in process (it would read this
# host's pillar and connect to Redis): only a refusal is a right answer.
REFUSE_ONLY = {("redis_aof", "diff")}


def _texts(loaders, module, function, kwargs, result, place):
    """``{label: text}`` that the writer would write (from the module's own renderers)."""
    mods = loaders.modules
    if function == "plan_config" and module == "pgbouncer":
        return {
            "pgbouncer.ini": mods.pgbouncer.render_config(
                kwargs["databases"], kwargs["users"], kwargs["settings"]
            )
        }
    if function == "plan_userlist":
        scratch = os.path.join(place.scratch, "userlist.txt")
        mods.pgbouncer.apply_userlist(**dict(kwargs, name=scratch, service=None, pidfile=None))
        with open(scratch, encoding="utf-8") as handle:
            return {"userlist.txt": handle.read()}
    if function == "plan_config":
        return {"pip.conf": mods.pipconf.render(kwargs["settings"])}
    if function == "plan_pypirc":
        return {
            ".pypirc": opsalt_pipconf.render_pypirc(opsalt_pipconf.validate_pypirc(kwargs["repositories"]))
        }
    if function == "plan_kolla":
        kolla = kwargs["kolla"]
        header = mods.pipconf.render_kolla_header(kolla["pip"], kolla.get("image_pip_conf", "/etc/pip.conf"))
        return {
            "kolla-build.conf": mods.pipconf.render_kolla_conf(
                kolla.get("sources"),
                kolla.get("options", {"install_type": "source"}),
                kolla["template_override"],
            ),
            "base_header.j2": header,
        }
    return {"result": json.dumps(result, sort_keys=True, default=str)}


_RUN = re.compile(r"^RUN mkdir -p (\S+) && echo ([A-Za-z0-9+/=]+) \| base64 -d > (\S+)$")


def _directives(label, text):
    """The directives of a written text: what a new line or section would change."""
    if label == "pgbouncer.ini":
        sections = pgconf.parse_ini(text)
        for section in ("databases", "users"):  # connection-string values: quoting is not a directive
            sections[section] = {
                key: pgconf.parse_connstring(value) for key, value in sections[section].items()
            }
        return {"sections": sections, "duplicates": pgconf.duplicates(text)}
    if label == "userlist.txt":
        return {"users": sorted(pgconf.parse_userlist(text)), "lines": len(text.splitlines())}
    if label in ("pip.conf", ".pypirc", "kolla-build.conf"):
        return _ini(text)
    if label == "base_header.j2":
        lines = text.splitlines()
        run = [_RUN.fullmatch(line) for line in lines if line.startswith("RUN")]
        assert len(run) == 1 and run[0], f"the header's RUN line is not one plain command: {lines}"
        pip_conf = base64.b64decode(run[0].group(2)).decode("utf-8")
        return {"lines": [line for line in lines if not line.startswith("RUN")], "pip.conf": _ini(pip_conf)}
    return json.loads(text)


def _values_without(directives, payload):
    """
    ``directives`` with the payload taken out of every value (not of a key):
    a value that holds it is still one value (a connection string's last
    parameter, a quoted field); a payload that made a new key, section or
    user still shows.
    """
    forms = sorted({form for pair in text_forms(payload, "") for form in pair if form}, key=len, reverse=True)

    def value(item):
        if isinstance(item, str):
            for form in forms:
                item = item.replace(form, "")
            return item
        if isinstance(item, dict):
            return {key: value(entry) for key, entry in item.items()}
        if isinstance(item, list):
            return [value(entry) for entry in item]
        return item

    return value(directives)


def _call(loaders, module, function, kwargs):
    try:
        return getattr(getattr(loaders.modules, module), function)(**copy.deepcopy(kwargs)), None
    except (CommandExecutionError, SaltInvocationError, ValueError) as err:
        return None, str(err)


def writer_baseline(component, loaders, document, place):
    """``{writer: (kwargs, directives)}`` for the benign document (its writers must accept it)."""
    baseline = {}
    for label, (module, function, kwargs) in WRITERS[component](document, place).items():
        if (module, function) in REFUSE_ONLY:
            baseline[label] = (kwargs, None)
            continue
        result, error = _call(loaders, module, function, kwargs)
        assert error is None, f"{component} {label}: the benign document is refused: {error}"
        texts = _texts(loaders, module, function, kwargs, result, place)
        baseline[label] = (kwargs, {name: _directives(name, text) for name, text in texts.items()})
    return baseline


def check_writers(component, loaders, document, baseline, target, payload, place):
    """Problems of the component's writers with ``payload`` at ``target``."""
    poisoned, marks = poison(document, [target], payload)
    where = f"{component}:{':'.join(map(str, target[1]))} ({target[0]})"
    problems = []
    for label, (module, function, kwargs) in WRITERS[component](poisoned, place).items():
        benign_kwargs, benign_directives = baseline[label]
        if kwargs == benign_kwargs:
            continue  # the writer does not get this field
        result, error = _call(loaders, module, function, kwargs)
        if error is not None:
            if not names_field(error, component, [target]):
                problems.append(f"{where}: {module}.{function} refused without naming the field: {error}")
            continue
        if (module, function) in REFUSE_ONLY:
            problems.append(f"{where}: {module}.{function} accepted {kwargs!r}")
            continue
        try:
            texts = _texts(loaders, module, function, kwargs, result, place)
            directives = {name: _directives(name, text) for name, text in texts.items()}
        except (configparser.Error, pgconf.ConfigError, AssertionError, ValueError) as err:
            problems.append(f"{where}: {module}.{function} accepted it and would write a broken file: {err}")
            continue
        controls = {char for char in payload if has_control(char)} - {"\n"}
        smuggled = [name for name, text in texts.items() if any(char in text for char in controls)]
        if smuggled:
            problems.append(f"{where}: {module}.{function} would write a control character into {smuggled}")
        if _values_without(normalise(directives, pairs_of(marks)), payload) != benign_directives:
            problems.append(
                f"{where}: {module}.{function} would write other directives:\n"
                f"  benign:   {benign_directives}\n  poisoned: {directives}"
            )
    return problems


@pytest.fixture(scope="module")
def box():
    # Not pytest's tmp_path: its root-only parent would hide the files
    # from pgbouncer's service user (as tests/support/postgres.py says).
    root = tempfile.mkdtemp(prefix="opsalt-injection-")
    os.chmod(root, 0o755)
    made = Box(root)
    try:
        yield made
    finally:
        made.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def benign_files(loaders, box):
    """Every place, with the files the real writers write for the benign documents (what a first run leaves)."""
    for component in COMPONENTS:
        for index, document in enumerate(benign_documents(component)):
            place = box.place(component, index)
            if component == "pgbouncer":
                writers = _pgbouncer_writers(document, place)
                for label in ("userlist", "config"):
                    _module, function, kwargs = writers[label]
                    getattr(loaders.modules.pgbouncer, function.replace("plan_", "apply_"))(**kwargs)
    return box.snapshot()


# -- the tests -------------------------------------------------------------------------


def test_components_are_discovered():
    assert set(COMPONENTS) >= {"pgbouncer", "pipconf", "redis_aof", "vmtune", "v2v", "monitoring"}, COMPONENTS
    assert not set(FREE_FORM) & set(COMPONENTS)


@pytest.mark.parametrize("component", COMPONENTS)
def test_benign_documents_are_valid(component):
    for document in benign_documents(component):
        errors = [error.message for error in VALIDATOR.iter_errors({component: document})]
        assert not errors, (component, document, errors)


@pytest.mark.parametrize("component", COMPONENTS)
def test_benign_documents_reach_every_string_field(component):
    reached = set()
    for document in benign_documents(component):
        reached |= {
            (kind,) + general for kind, _path, general in walk(document, SCHEMA["properties"][component])
        }
    fields = schema_fields(SCHEMA["properties"][component])
    missing = sorted(fields - reached - set(NOT_REACHED.get(component, ())))
    assert not missing, f"{component}: no benign document has these string fields or map keys: {missing}"


def test_free_form_sections_reach_no_sls():
    # The one place the schema lets a control character through, by design:
    # so no SLS (nor a file it ships) may read it.
    for section in FREE_FORM:
        assert SCHEMA["$defs"][section].get("additionalProperties") is True
        assert VALIDATOR.is_valid({section: {"role": PAYLOADS[0]}})
        pattern = re.compile(rf"""pillar(\.get\(|\[|:)['"]?{section}\b|['"]{section}[:'"]""")
        for path in glob.glob(os.path.join(REPO_ROOT, "salt", "**", "*.*"), recursive=True):
            with open(path, encoding="utf-8") as handle:
                assert not pattern.search(handle.read()), f"{path} reads the free-form pillar key {section}"


@pytest.mark.parametrize("component", COMPONENTS)
def test_cached_render_is_state_show_low_sls(component, loaders, renderer):
    # The matrix re-renders one HighState with the pillar swapped; Salt's own
    # entry point (a fresh HighState per call) must give the same lowstate:
    # for a benign document, then for each with every path poisoned (every
    # pillar read of the SLS sees the swapped pillar; a stale one would show).
    for index, document in enumerate(benign_documents(component)):
        poisoned, _marks = poison(document, document_targets(component, document), PAYLOADS[0])
        for pillar in ({component: document},) * (index == 0) + ({component: poisoned},):
            ours = renderer.lowstate(component, pillar)
            salts = loaders.modules.state.show_low_sls(",".join(sls_names(component)), pillar=pillar)
            if isinstance(salts, list) and all(isinstance(chunk, dict) for chunk in salts):
                assert sorted(map(canonical, ours)) == sorted(map(canonical, salts))
            else:
                assert ours == salts


@pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_injection_matrix(component, payload, loaders, renderer, box, benign_files):
    control = has_control(payload)
    problems, accepted, paths = [], [], 0
    for index, document in enumerate(benign_documents(component)):
        place = box.place(component, index)
        targets = document_targets(component, document)
        paths += len(targets)
        # the schema: a control character is refused at every path
        for target in targets:
            poisoned, _marks = poison(document, [target], payload)
            if VALIDATOR.is_valid({component: poisoned}):
                where = f"{component}:{':'.join(map(str, target[1]))} ({target[0]})"
                if control:
                    problems.append(f"{where}: the schema accepts {payload!r}")
                accepted.append(where)
        # the SLS: every file of salt/<component>/, rendered by Salt
        problems += check_sls(component, loaders, renderer, (index, document), targets, payload)
        # the writers
        if component in WRITERS:
            baseline = writer_baseline(component, loaders, document, place)
            for target in targets:
                problems += check_writers(component, loaders, document, baseline, target, payload, place)
    ACCEPTED.setdefault(component, {})[PAYLOAD_IDS[PAYLOADS.index(payload)]] = accepted
    assert box.snapshot() == benign_files, "a writer changed or added a file"
    assert not os.path.exists("/tmp/PWNED")
    assert paths, f"no string field or map key in {component}'s benign documents"
    assert not problems, f"{len(problems)} problem(s) over {paths} paths:\n" + "\n".join(problems)


def test_matrix_summary(capsys):
    # What the schema accepts as data (no control character): printed at the
    # end of a run of the whole matrix.
    if not ACCEPTED:
        pytest.skip("run together with test_injection_matrix")
    lines = []
    for component, by_payload in sorted(ACCEPTED.items()):
        accepted = {payload_id: len(where) for payload_id, where in by_payload.items() if where}
        lines.append(f"{component}: the schema accepts, as data: {accepted or 'nothing'}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
