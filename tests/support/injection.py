"""
The pillar side of issue 12's injection suites: the schema, the benign
documents that reach every string field and map key of each component
section, poisoning them with a payload class (``tests/support/payloads.py``),
and comparing a poisoned lowstate with the benign one.

Shared by the in-process matrix (``tests/functional/test_injection_matrix.py``)
and its real-minion counterpart (``tests/integration/test_injection_minion.py``).
"""

import copy
import glob
import json
import os
import re

import opsalt_validate

from tests.support.asset_api import REPO_ROOT
from tests.support.postgres import ADMIN_USER

with open(os.path.join(REPO_ROOT, "schema", "pillar.schema.json"), encoding="utf-8") as _handle:
    SCHEMA = json.load(_handle)
VALIDATOR = opsalt_validate.schema_validator(SCHEMA)

# The component sections: top-level keys of the schema with an SLS tree.
COMPONENTS = [name for name in SCHEMA["properties"] if os.path.isdir(os.path.join(REPO_ROOT, "salt", name))]

# Documented free-form sections ("Free-form host facts"): the schema
# constrains nothing in them, so a control character is accepted there by
# design; no SLS reads them (test_free_form_sections_reach_no_sls).
FREE_FORM = ["ops"]

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
                # restart: online (above) takes over through the unix socket
                "unix_socket_dir": "/run/postgresql",
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

# What a component's SLS files render, all of them, when its pillar holds a
# text that cannot pass through SLS text (opsalt_pillar.sls_refusal: U+0085,
# U+2028, U+2029, DEL, ...): this one failing state, the field named in its
# comment (salt/opsalt/refusal.jinja).
REFUSAL_ID = "{component}-pillar-refused"
SAFE_ID = re.compile(r"^[A-Za-z0-9_.@+-]+$")


def benign_documents(component):
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


def pairs_of(marks):
    return [(poisoned, benign) for _kind, _path, poisoned, benign in marks]


def text_forms(poisoned, benign):
    """The poisoned text as it may appear in rendered data, each with its benign form."""
    return [
        (poisoned, benign),
        (json.dumps(poisoned)[1:-1], json.dumps(benign)[1:-1]),
        (repr(poisoned)[1:-1], repr(benign)[1:-1]),
    ]


def normalise(data, pairs):
    """``data`` with each poisoned text (in every form, in keys and values) put back to its benign text."""
    forms = sorted({form for pair in pairs for form in text_forms(*pair)}, key=lambda form: -len(form[0]))

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


# -- comparing lowstates -----------------------------------------------------------


def derived_id_map(component, state_id, document, marks):
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


def canonical(chunk):
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
      a value): ``details`` lists ``(benign chunk, refusing chunk)``; or
      the component's one refusal (``REFUSAL_ID``) instead of all of its
      states (but those of SLS files that read no component key):
      ``details`` is ``[(None, refusing chunk)]``;
    - ``error``: a render error, ``details`` its messages;
    - ``different``: anything else, ``details`` says what.
    """
    if not isinstance(poisoned, list) or any(not isinstance(chunk, dict) for chunk in poisoned):
        return "error", [str(item) for item in poisoned]
    refusal = [chunk for chunk in poisoned if chunk["__id__"] == REFUSAL_ID.format(component=component)]
    if refusal:
        # beside it, only states of SLS files that read no component key (v2v.orchestrate), as benign
        others = [canonical(chunk) for chunk in poisoned if chunk not in refusal]
        if len(refusal) == 1 and _refusing(refusal[0]) and set(others) <= set(map(canonical, benign)):
            return "refused", [(None, refusal[0])]
        return "different", f"a refusal with other states: {poisoned}"
    unsafe = sorted({chunk["__id__"] for chunk in poisoned if not SAFE_ID.fullmatch(chunk["__id__"])})
    if unsafe:
        return "different", f"state IDs carry pillar text: {unsafe!r}"
    pairs = pairs_of(marks)
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
    if sorted(map(canonical, loosened_got)) == sorted(map(canonical, loosened_want)):
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
        if sorted(map(canonical, chunks)) == sorted(map(canonical, wanted)):
            continue
        if len(chunks) == 1 and len(wanted) == 1 and _refusing(chunks[0]):
            refusals.append((wanted[0], chunks[0]))
            continue
        return "different", f"state {state_id} differs:\n  benign:   {wanted}\n  poisoned: {chunks}"
    return "refused", refusals


def document_targets(component, document):
    return [(kind, path) for kind, path, _general in walk(document, SCHEMA["properties"][component])]


def sls_names(component):
    """Every SLS file of ``salt/<component>/``, as Salt names them (``pgbouncer``, ``pgbouncer.clean``, ...)."""
    names = []
    for path in sorted(glob.glob(os.path.join(REPO_ROOT, "salt", component, "**", "*.sls"), recursive=True)):
        name = os.path.relpath(path, os.path.join(REPO_ROOT, "salt"))[: -len(".sls")].replace(os.sep, ".")
        names.append(name[: -len(".init")] if name.endswith(".init") else name)
    return names
