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

One known gap is accepted and listed (``YAML_BREAKS``): a U+0085, U+2028
or U+2029 in a key that an SLS hands over inside a JSON map makes that SLS
fail to parse with a YAML message that does not name the field.

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
from tests.support.loaders import make_loaders
from tests.support.payloads import PAYLOAD_IDS, PAYLOADS, has_control
from tests.support.postgres import ADMIN_USER, OPERATOR_POLICY
from tests.support.proc_trees import writable_copy

with open(os.path.join(REPO_ROOT, "schema", "pillar.schema.json"), encoding="utf-8") as _handle:
    SCHEMA = json.load(_handle)
VALIDATOR = opsalt_validate.schema_validator(SCHEMA)

# The component sections: top-level keys of the schema with an SLS tree.
COMPONENTS = [name for name in SCHEMA["properties"] if os.path.isdir(os.path.join(REPO_ROOT, "salt", name))]

# Documented free-form sections ("Free-form host facts"): the schema
# constrains nothing in them, so a control character is accepted there by
# design; no SLS reads them (test_free_form_sections_reach_no_sls).
FREE_FORM = ["ops"]

# The operator policy of the other functional tests (paths under /tmp, the
# console user), plus the index hosts of the schema's pipconf examples.
POLICY = dict(OPERATOR_POLICY, pipconf={"index_hosts": ["127.0.0.1", "localhost", "pypi.org"]})

# Benign documents for the string fields and map keys the schema's examples
# do not reach. Each is valid (test_benign_documents_are_valid), renders,
# and is accepted by the component's writers.
SUPPLEMENTS = {
    "pgbouncer": [
        {
            "pkg": "pgbouncer",
            "service": "pgbouncer",
            "manage_service": False,
            "pidfile": "/run/postgresql/pgbouncer.pid",
            "restart": "online",
            "owner": "postgres",
            "user": "postgres",
            "group": "postgres",
            "service_user": "postgres",
            "mode": "0640",
            "userlist_method": "scram-sha-256",
            "databases": {
                "appdb": {"host": "127.0.0.1", "port": 5432, "dbname": "appdb", "pool_mode": "transaction"}
            },
            "settings": {
                "listen_addr": "127.0.0.1",
                "pool_mode": "transaction",
                "auth_type": "scram-sha-256",
                "auth_file": "/etc/pgbouncer/userlist.txt",
                "stats_users": ADMIN_USER,
                "server_reset_query": "DISCARD ALL",
            },
            "userlist": {"app": {"password": "app-password", "method": "scram-sha-256"}},
            "verifier_from": {"host": "127.0.0.1", "user": "postgres", "dbname": "postgres"},
        }
    ],
    "pipconf": [
        {
            "configs": {
                "global": {
                    "settings": {
                        "global": {
                            "index-url": "http://127.0.0.1:8081/repository/pypi-group/simple",
                            "extra-index-url": "http://127.0.0.1:8081/repository/pypi-extra/simple",
                            "trusted-host": ["127.0.0.1:8081"],
                            "timeout": "60",
                            "find-links": ["http://127.0.0.1:8081/links/a", "http://127.0.0.1:8081/links/b"],
                        }
                    },
                    "mode": "0644",
                    "user": "root",
                    "group": "root",
                }
            },
            "pypirc": {
                "user:builder": {
                    "repositories": {
                        "nexus": {
                            "repository": "http://127.0.0.1:8081/repository/pypi-hosted/",
                            "username": "deploy",
                            "password": "CHANGE-ME",
                            "ca_cert": "/etc/ssl/certs/nexus-ca.pem",
                            "client_cert": "/etc/ssl/private/nexus-client.pem",
                        }
                    },
                    "mode": "0600",
                    "user": "root",
                    "group": "root",
                }
            },
            "kolla": {
                "enabled": True,
                "config_dir": "/etc/kolla",
                "template_override": "/etc/kolla/base_header.j2",
                "build_conf": "/etc/kolla/kolla-build.conf",
                "image_pip_conf": "/etc/pip.conf",
                "pip": {
                    "global": {
                        "index-url": "http://127.0.0.1:8081/repository/pypi-group/simple",
                        "extra-index-url": ["http://127.0.0.1:8081/repository/pypi-extra/simple"],
                        "trusted-host": ["127.0.0.1:8081"],
                        "timeout": "60",
                        "use-feature": ["truststore"],
                    },
                    "install": {"extra-index-url": "http://127.0.0.1:8081/repository/pypi-other/simple"},
                },
                "options": {"base": "ubuntu", "profile": ["main", "aux"]},
            },
        }
    ],
    "redis_aof": [
        {
            "host": "127.0.0.1",
            "username": "default",
            "unix_socket_path": "/run/redis/redis.sock",
            "settings": {
                "appendonly": "yes",
                "no-appendfsync-on-rewrite": "no",
                "aof-use-rdb-preamble": "yes",
                "aof-load-truncated": "yes",
                "aof-rewrite-incremental-fsync": "yes",
                "aof-timestamp-enabled": "no",
                "auto-aof-rewrite-min-size": "64mb",
            },
            "instances": {
                "cache": {
                    "host": "127.0.0.1",
                    "username": "default",
                    "settings": {
                        "no-appendfsync-on-rewrite": "yes",
                        "aof-use-rdb-preamble": "no",
                        "aof-load-truncated": "no",
                        "aof-rewrite-incremental-fsync": "no",
                        "aof-timestamp-enabled": "yes",
                    },
                }
            },
        }
    ],
    "v2v": [
        {
            # Tool paths that exist on no host: whether a tool is found
            # does not then depend on the poisoned suffix (see DERIVED).
            "tools": {
                "ssh": "/opt/opsalt-test-tools/ssh",
                "virsh": "/opt/opsalt-test-tools/virsh",
                "virt-v2v-copy-to-local": "/opt/opsalt-test-tools/virt-v2v-copy-to-local",
                "nbdkit": "/opt/opsalt-test-tools/nbdkit",
            },
            "libvirt_uri": "qemu:///system",
            "ssh_options": ["-o", "BatchMode=yes"],
            "required_tools": ["ssh", "virsh"],
            "migrations": {
                "instance-00000018": {
                    "source_host": "xen01.example.com",
                    "source_user": "root",
                    "source_domain": "instance-00000018",
                    "conversion_minion": "conv01.example.com",
                    "compute_minion": "compute07.example.com",
                    "instance_uuid": "6f1b7f3e-6d7c-4b4a-9a3e-2f8f0c1d2e3f",
                    "target_domain": "instance-000007a3",
                    "work_dir": "/data/v2v/instance-00000018",
                    "copy_method": "dd",
                }
            },
        }
    ],
    "vmtune": [{"vfs_cache_pressure": 150, "proc_root": "/proc"}],
    "monitoring": [
        {
            "node_exporter": {
                "defaults_file": "/etc/default/prometheus-node-exporter",
                "listen_address": ":9100",
            },
            "redis_exporter": {"config_dir": "/etc/prometheus/redis_exporter", "listen_host": "127.0.0.1"},
            "textfile": {
                "directory": "/var/lib/prometheus/node-exporter",
                "filename": "opsalt_host.prom",
                "collectors": ["vmtune", "master"],
                "master_cachedir": "/var/cache/salt/master",
            },
            "prometheus": {"enabled": True, "file_sd": "/etc/prometheus/file_sd/opsalt.json"},
            "rules": {
                "path": "/etc/prometheus/rules/opsalt.rules.yml",
                "for": {
                    name: "5m"
                    for name in SCHEMA["$defs"]["monitoring"]["properties"]["rules"]["properties"]["for"][
                        "properties"
                    ]
                },
                "severity": {
                    name: "warning"
                    for name in SCHEMA["$defs"]["monitoring"]["properties"]["rules"]["properties"][
                        "severity"
                    ]["properties"]
                },
            },
        }
    ],
}

# String fields or maps of the schema that no benign document reaches, per
# component, each with why (none today: SUPPLEMENTS reach the rest).
NOT_REACHED = {}

# Lowstate arguments computed from the host, not copied from the pillar:
# v2v.tools looks each tool up, so a poisoned tool path is "not found" and
# the tools state's result and comment name another list of missing tools.
# Compared by type only, and the payload must not appear in them.
DERIVED = {("v2v", "v2v-conversion-tools-present"): ("result", "comment")}

# Salt's `json` filter leaves U+0085, U+2028 and U+2029 unescaped
# (salt.utils.json.dumps: ensure_ascii=False) and YAML reads them as line
# breaks. Inside a quoted scalar that folds them to a space (see _fold);
# in a flow mapping's key (pgbouncer's users and settings, passed as JSON)
# the SLS then fails to parse. No state comes of it, but the error (a YAML
# parser message) does not name the field: accepted here as a refusal,
# listed in FOLDED and printed by test_matrix_summary. Escaping them needs
# another filter than `| json` in every SLS (or the states reading those
# maps from the pillar at run time), which is left to the SLS owners.
YAML_BREAKS = {"\x85", "\u2028", "\u2029"}
YAML_ERROR = re.compile(r"while (parsing|scanning) a (flow mapping|simple key|quoted scalar)")
FOLDED = []

# What each component x payload test found the schema accepting (data, not
# code): {component: {payload id: [path, ...]}}, printed by test_matrix_summary.
ACCEPTED = {}

SAFE_ID = re.compile(r"^[A-Za-z0-9_.@+-]+$")
FAILED_SLS = re.compile(r"Rendering SLS '[^:']*:([^']+)' failed")


def _benign(component):
    return list(SCHEMA["$defs"][component].get("examples", [])) + SUPPLEMENTS.get(component, [])


# -- the schema, walked with a document --------------------------------------


def _ref(ref):
    node = SCHEMA
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _matches(value, node):
    return next(VALIDATOR.descend(value, node), None) is None


def _branches(node, value):
    """The subschemas of ``node`` that apply to ``value``."""
    if not isinstance(node, dict):
        return []
    found = [node]
    if "$ref" in node:
        found += _branches(_ref(node["$ref"]), value)
    for sub in node.get("allOf", []):
        found += _branches(sub, value)
    for key in ("anyOf", "oneOf"):
        for sub in node.get(key, []):
            if _matches(value, sub):
                found += _branches(sub, value)
    if "if" in node:
        found += _branches(node.get("then" if _matches(value, node["if"]) else "else", {}), value)
    return found


def _child(node, value, key):
    subs = []
    for branch in _branches(node, value):
        if isinstance(key, int):
            if isinstance(branch.get("items"), dict):
                subs.append(branch["items"])
        elif key in branch.get("properties", {}):
            subs.append(branch["properties"][key])
        elif isinstance(branch.get("additionalProperties"), dict):
            subs.append(branch["additionalProperties"])
    return {"allOf": subs}


def walk(value, node, path=(), general=()):
    """
    ``(kind, path, general)`` for every string leaf (``value``) and every
    map key (``key``: a key the schema does not list in ``properties``)
    of ``value``; ``general`` is the path with map keys as ``*`` and list
    indices as ``[]``.
    """
    if isinstance(value, dict):
        fixed = {name for branch in _branches(node, value) for name in branch.get("properties", {})}
        for key, item in value.items():
            is_map_key = key not in fixed
            if is_map_key:
                yield "key", path + (key,), general + ("<key>",)
            yield from walk(
                item, _child(node, value, key), path + (key,), general + ("*" if is_map_key else key,)
            )
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, _child(node, value, index), path + (index,), general + ("[]",))
    elif isinstance(value, str):
        yield "value", path, general


def _takes_string(node):
    kind = node.get("type")
    return (
        kind == "string"
        or (isinstance(kind, list) and "string" in kind)
        or any(isinstance(item, str) for item in node.get("enum", []))
        or isinstance(node.get("const"), str)
    )


def schema_fields(node, general=(), refs=()):
    """Every general path where the schema allows a string, and every map (``<key>``)."""
    if not isinstance(node, dict):
        return set()
    found = set()
    if "$ref" in node and node["$ref"] not in refs:
        found |= schema_fields(_ref(node["$ref"]), general, refs + (node["$ref"],))
    if _takes_string(node):
        found.add(("value",) + general)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key, []):
            found |= schema_fields(sub, general, refs)
    for key in ("then", "else"):
        found |= schema_fields(node.get(key), general, refs)
    for name, sub in node.get("properties", {}).items():
        found |= schema_fields(sub, general + (name,), refs)
    if isinstance(node.get("additionalProperties"), dict) or "propertyNames" in node:
        found.add(("key",) + general + ("<key>",))
        found |= schema_fields(node.get("additionalProperties"), general + ("*",), refs)
    found |= schema_fields(node.get("items"), general + ("[]",), refs)
    return found


# -- poisoning ------------------------------------------------------------------


def _at(document, path):
    for part in path:
        document = document[part]
    return document


def poison(document, targets, payload):
    """
    A copy of ``document`` with ``payload`` appended to every target
    (``(kind, path)``): a string value, or a map key (renamed in place, the
    order kept). Returns ``(poisoned, marks)``, a mark per target:
    ``(kind, path, poisoned text, benign text)``. Appending keeps the
    value's shape (a path stays a path under its root), so a refusal is the
    payload's doing.
    """
    document = copy.deepcopy(document)
    marks = []
    for kind, path in targets:
        if kind == "value":
            parent = _at(document, path[:-1])
            benign = parent[path[-1]]
            parent[path[-1]] = benign + payload
            marks.append((kind, path, benign + payload, benign))
    # keys last, deepest first: the paths above name the benign keys
    for kind, path in sorted(targets, key=lambda target: -len(target[1])):
        if kind == "key":
            parent = _at(document, path[:-1])
            items = [(key + payload if key == path[-1] else key, item) for key, item in parent.items()]
            parent.clear()
            parent.update(items)
            marks.append((kind, path, path[-1] + payload, path[-1]))
    return document, marks


def _pairs(marks):
    return [(poisoned, benign) for _kind, _path, poisoned, benign in marks]


def _fold(text):
    # Salt's `json` filter leaves U+0085, U+2028 and U+2029 unescaped, and
    # YAML reads them as line breaks inside a quoted scalar, folding each to
    # a space: still one plain value (which the state then refuses, or reads
    # at run time under the real key).
    return text.translate({0x85: " ", 0x2028: " ", 0x2029: " "})


def _forms(poisoned, benign):
    """The poisoned text as it may appear in rendered data, each with its benign form."""
    return [
        (poisoned, benign),
        (_fold(poisoned), benign),
        (json.dumps(poisoned)[1:-1], json.dumps(benign)[1:-1]),
        (repr(poisoned)[1:-1], repr(benign)[1:-1]),
    ]


def normalise(data, pairs):
    """``data`` with each poisoned text (in every form, in keys and values) put back to its benign text."""
    forms = sorted({form for pair in pairs for form in _forms(*pair)}, key=lambda form: -len(form[0]))

    def text(value):
        for poisoned, benign in forms:
            if poisoned and poisoned != benign:
                value = value.replace(poisoned, benign)
        return value

    def walk_(value):
        if isinstance(value, str):
            return text(value)
        if isinstance(value, dict):
            return {walk_(key): walk_(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk_(item) for item in value]
        return value

    return walk_(data)


# Keys an error may name instead of the pillar key, with why.
ALIASES = {
    # map.jinja: settings.auth_file defaults to userlist_path, and the config
    # writer refuses it as settings:auth_file
    ("pgbouncer", "userlist_path"): {"auth_file"},
    # owner is the deprecated name of user (the states say so); the writers get it as user
    ("pgbouncer", "owner"): {"user"},
}


def field_names(component, kind, path):
    """What an error must mention to name the field: the last two keys of the path (not the component)."""
    names = [part for part in path if isinstance(part, str)]
    found = set(names[-2:]) - {component}
    found |= ALIASES.get((component, names[-1] if names else ""), set())
    if kind == "key" and ":" in path[-1]:
        found.add(path[-1].split(":", 1)[1])  # user:builder -> builder, venv:/opt/x -> /opt/x
    return found or {component}


def names_field(message, component, targets):
    return any(name in message for kind, path in targets for name in field_names(component, kind, path))


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


def _sls_names(component):
    names = []
    for path in sorted(glob.glob(os.path.join(REPO_ROOT, "salt", component, "**", "*.sls"), recursive=True)):
        name = os.path.relpath(path, os.path.join(REPO_ROOT, "salt"))[: -len(".sls")].replace(os.sep, ".")
        names.append(name[: -len(".init")] if name.endswith(".init") else name)
    return names


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
            names = [name for name in _sls_names(component) if not files or name in files]
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


# -- comparing lowstates -----------------------------------------------------------


def _id_map(component, loaders, document, marks):
    """
    Poisoned state ID -> benign state ID for the IDs an SLS derives from a
    pillar key (a safe slug, never the raw text): pipconf's
    ``pipconf.state_id`` of a scope, redis_aof's ``instance_slug`` of an
    instance key (the key itself when it is a valid name, else
    ``invalid-name-<n>``, n its place in the sorted keys).
    """
    keys = {poisoned: benign for kind, _path, poisoned, benign in marks if kind == "key"}
    mapping = {}
    if component == "pipconf":
        state_id = loaders.modules.pipconf.state_id
        for poisoned, benign in keys.items():
            for kind in ("config", "pypirc", "configabsent", "optionsabsent", "pypircabsent"):
                mapping[state_id(kind, poisoned)] = state_id(kind, benign)
    if component == "redis_aof":
        instances = (document.get(component) or {}).get("instances") or {}
        for index, key in enumerate(sorted(instances, key=str.lower), 1):
            if key in keys and not re.fullmatch(opsalt_validate.NAME_PATTERN, key):
                for tail in ("aof-settings-configured", "aof-settings-back-to-redis-defaults"):
                    mapping[f"redis_aof-invalid-name-{index}-{tail}"] = f"redis_aof-{keys[key]}-{tail}"
    return mapping


# Where a state sits in the render (its order, which SLS included it), not what it does.
PLACEMENT = ("order", "__sls_included_from__")


def _canonical(chunk):
    return json.dumps(
        {key: value for key, value in chunk.items() if key not in PLACEMENT}, sort_keys=True, default=str
    )


def _loosened(component, chunk, payload):
    """``chunk`` with its DERIVED arguments replaced by their type names (the payload must not be in them)."""
    loose = DERIVED.get((component, chunk["__id__"]), ())
    if not loose:
        return chunk, None
    leaked = [key for key in loose if payload in json.dumps(chunk.get(key))]
    return {key: (type(value).__name__ if key in loose else value) for key, value in chunk.items()}, leaked


def _refusing(chunk):
    return chunk["state"] == "test" and (
        chunk["fun"] == "fail_without_changes"
        or (chunk["fun"] == "configurable_test_state" and chunk.get("result") is False)
    )


def compare(component, benign, poisoned, marks, id_map, payload):
    """
    ``(verdict, details)``:

    - ``exact``: the benign lowstate, once each poisoned text is put back
      and derived state IDs are mapped back;
    - ``refused``: the same state IDs, and where a state differs, the
      poisoned one is a failing ``test`` state (the SLS's own check refused
      a value): ``details`` lists ``(benign chunk, refusing chunk)``;
    - ``error``: a render error, ``details`` its messages;
    - ``different``: anything else, ``details`` says what.
    """
    if not isinstance(poisoned, list) or any(not isinstance(chunk, dict) for chunk in poisoned):
        return "error", [str(item) for item in poisoned]
    unsafe = sorted({chunk["__id__"] for chunk in poisoned if not SAFE_ID.fullmatch(chunk["__id__"])})
    if unsafe:
        return "different", f"state IDs carry pillar text: {unsafe!r}"
    pairs = _pairs(marks)
    got = [
        normalise(dict(chunk, __id__=id_map.get(chunk["__id__"], chunk["__id__"])), pairs)
        for chunk in poisoned
    ]
    leaks = []
    loosened_got, loosened_want = [], []
    for chunk in got:
        chunk, leaked = _loosened(component, chunk, payload)
        loosened_got.append(chunk)
        leaks += leaked or []
    for chunk in benign:
        loosened_want.append(_loosened(component, chunk, payload)[0])
    if leaks:
        return "different", f"the payload reached derived arguments {leaks}"
    if sorted(map(_canonical, loosened_got)) == sorted(map(_canonical, loosened_want)):
        return "exact", None
    by_id_got, by_id_want = {}, {}
    for chunk in loosened_got:
        by_id_got.setdefault(chunk["__id__"], []).append(chunk)
    for chunk in loosened_want:
        by_id_want.setdefault(chunk["__id__"], []).append(chunk)
    if sorted(by_id_got) != sorted(by_id_want):
        extra = sorted(set(by_id_got) - set(by_id_want))
        missing = sorted(set(by_id_want) - set(by_id_got))
        return "different", f"state IDs differ: extra {extra}, missing {missing}"
    refusals = []
    for state_id, chunks in by_id_got.items():
        wanted = by_id_want[state_id]
        if sorted(map(_canonical, chunks)) == sorted(map(_canonical, wanted)):
            continue
        if len(chunks) == 1 and len(wanted) == 1 and _refusing(chunks[0]):
            refusals.append((wanted[0], chunks[0]))
            continue
        return "different", f"state {state_id} differs:\n  benign:   {wanted}\n  poisoned: {chunks}"
    return "refused", refusals


def _suspects(marks, refusals):
    """The marks whose benign text a refused benign state carried: the refusal hides what that state did with them."""
    carried = " ".join(json.dumps(wanted, default=str) for wanted, _refusing in refusals)
    return [(kind, path) for kind, path, _poisoned, benign in marks if benign in carried]


def _render_error_ok(message, component, targets, payload, where):
    if names_field(message, component, targets):
        return True
    if len(targets) == 1 and set(payload) & YAML_BREAKS and YAML_ERROR.search(message):
        FOLDED.append(f"{where} {payload!r}: {message.splitlines()[0]}")
        return True
    return False


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
        id_map = _id_map(component, loaders, pillar, marks)
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
        if not _render_error_ok(message, component, targets, payload, where)
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
    forms = sorted({form for pair in _forms(payload, "") for form in pair if form}, key=len, reverse=True)

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
        if _values_without(normalise(directives, _pairs(marks)), payload) != benign_directives:
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
        for index, document in enumerate(_benign(component)):
            place = box.place(component, index)
            if component == "pgbouncer":
                writers = _pgbouncer_writers(document, place)
                for label in ("userlist", "config"):
                    _module, function, kwargs = writers[label]
                    getattr(loaders.modules.pgbouncer, function.replace("plan_", "apply_"))(**kwargs)
    return box.snapshot()


# -- the tests -------------------------------------------------------------------------


def _targets(component, document):
    return [(kind, path) for kind, path, _general in walk(document, SCHEMA["properties"][component])]


def test_components_are_discovered():
    assert set(COMPONENTS) >= {"pgbouncer", "pipconf", "redis_aof", "vmtune", "v2v", "monitoring"}, COMPONENTS
    assert not set(FREE_FORM) & set(COMPONENTS)


@pytest.mark.parametrize("component", COMPONENTS)
def test_benign_documents_are_valid(component):
    for document in _benign(component):
        errors = [error.message for error in VALIDATOR.iter_errors({component: document})]
        assert not errors, (component, document, errors)


@pytest.mark.parametrize("component", COMPONENTS)
def test_benign_documents_reach_every_string_field(component):
    reached = set()
    for document in _benign(component):
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
    for index, document in enumerate(_benign(component)):
        poisoned, _marks = poison(document, _targets(component, document), PAYLOADS[0])
        for pillar in ({component: document},) * (index == 0) + ({component: poisoned},):
            ours = renderer.lowstate(component, pillar)
            salts = loaders.modules.state.show_low_sls(",".join(_sls_names(component)), pillar=pillar)
            if isinstance(salts, list) and all(isinstance(chunk, dict) for chunk in salts):
                assert sorted(map(_canonical, ours)) == sorted(map(_canonical, salts))
            else:
                assert ours == salts


@pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_injection_matrix(component, payload, loaders, renderer, box, benign_files):
    control = has_control(payload)
    problems, accepted, paths = [], [], 0
    for index, document in enumerate(_benign(component)):
        place = box.place(component, index)
        targets = _targets(component, document)
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
    # What the schema accepts as data (no control character) and what YAML
    # folded: printed at the end of a run of the whole matrix.
    if not ACCEPTED:
        pytest.skip("run together with test_injection_matrix")
    lines = []
    for component, by_payload in sorted(ACCEPTED.items()):
        accepted = {payload_id: len(where) for payload_id, where in by_payload.items() if where}
        lines.append(f"{component}: the schema accepts, as data: {accepted or 'nothing'}")
    lines += [
        f"YAML folded or refused a line break (Salt's json filter, see YAML_BREAKS): {line}"
        for line in FOLDED
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
