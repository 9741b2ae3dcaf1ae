"""
The pillar contract: the schema is valid, its examples satisfy it, and so
does every bundled demo document; checked with the validator opsalt uses
(``opsalt_validate.schema_validator``), it refuses the documents of issue 12
and a line break in every one-line field the code refuses one in.
"""

import glob
import json
import os
import sys

import jsonschema
import pytest
import yaml

from tests.support.asset_api import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "_utils"))
import opsalt_validate

SCHEMA_PATH = os.path.join(REPO_ROOT, "schema", "pillar.schema.json")


@pytest.fixture(scope="module")
def schema():
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


def test_schema_is_valid(schema):
    jsonschema.Draft202012Validator.check_schema(schema)


def _examples(schema):
    for example in schema.get("examples", []):
        yield "root", example
    for name, section in schema["$defs"].items():
        for example in section.get("examples", []):
            yield name, {name: example} if name in schema["properties"] else example


def test_every_example_validates(schema):
    validator = jsonschema.Draft202012Validator(schema)
    examples = list(_examples(schema))
    assert examples
    for name, example in examples:
        errors = [e.message for e in validator.iter_errors(example)]
        assert not errors, (name, errors)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO_ROOT, "demo", "pillars", "*.yaml"))))
def test_demo_documents_validate(schema, path):
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle.read().replace("@SANDBOX@", "/tmp/sandbox"))
    jsonschema.Draft202012Validator(schema).validate(document)


def test_schema_rejects_wrong_section_type(schema):
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors({"ops": "not an object"}))


# -- issue 12: the schema refuses what the code refuses ------------------------

# A YAML state smuggled into a key or value (issue 12, finding 1).
POISON = "x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny"
STATE_TAIL = "\n  cmd.run:\n    - name: touch /tmp/PWNED"


def _nested(keys, value):
    document = value
    for key in reversed(keys):
        document = {key: document}
    return document


@pytest.fixture(scope="module")
def validator(schema):
    return opsalt_validate.schema_validator(schema)


def _refused(validator, keys, benign, poisoned):
    """The benign document validates; the poisoned one is refused at ``keys`` (or its parent, for a key)."""
    assert not [e.message for e in validator.iter_errors(_nested(keys, benign))], (keys, benign)
    errors = list(validator.iter_errors(_nested(keys, poisoned)))
    assert errors, (keys, poisoned)
    assert any(list(e.absolute_path) in (keys, keys[:-1]) for e in errors), [
        (list(e.absolute_path), e.message) for e in errors
    ]


# (keys down to the poisoned spot, benign value, poisoned value): the documents
# issue 12 reproduced.
REPRODUCED = {
    "redis_aof instances key": (
        ["redis_aof", "instances"],
        {"main": {"instance": "127.0.0.1:6379"}},
        {POISON: {"instance": "127.0.0.1:6379"}},
    ),
    "pipconf configs scope key": (
        ["pipconf", "configs"],
        {"global": {"settings": {"global": {"timeout": 60}}}},
        {POISON: {"settings": {"global": {"timeout": 60}}}},
    ),
    "pgbouncer config_path": (
        ["pgbouncer", "config_path"],
        "/etc/pgbouncer/pgbouncer.ini",
        "/etc/pgbouncer/pgbouncer.ini" + STATE_TAIL,
    ),
    "pgbouncer userlist_path": (
        ["pgbouncer", "userlist_path"],
        "/etc/pgbouncer/userlist.txt",
        "/etc/pgbouncer/userlist.txt" + STATE_TAIL,
    ),
    "pgbouncer settings:auth_type": (["pgbouncer", "settings", "auth_type"], "md5", "md5" + STATE_TAIL),
    "pgbouncer iterations": (["pgbouncer", "scram_iterations"], 4096, "4096" + STATE_TAIL),
    "pgbouncer restart_timeout": (["pgbouncer", "restart_timeout"], 30, "30" + STATE_TAIL),
    "v2v work_root": (["v2v", "work_root"], "/var/lib/opsalt-v2v", "/var/lib/opsalt-v2v" + STATE_TAIL),
    # finding 2: a newline becomes a second directive
    "pgbouncer settings:pidfile": (
        ["pgbouncer", "settings", "pidfile"],
        "/run/p.pid",
        "/run/p.pid\nauth_type = trust",
    ),
    "pgbouncer databases connection string": (
        ["pgbouncer", "databases", "appdb"],
        "host=10.0.0.5 dbname=appdb",
        "host=10.0.0.5 dbname=appdb\nevil = host=10.6.6.6 dbname=appdb",
    ),
    "pgbouncer databases parameter": (
        ["pgbouncer", "databases", "appdb", "host"],
        "10.0.0.5",
        "10.0.0.5\nevil = host=10.6.6.6",
    ),
}


@pytest.mark.parametrize("case", sorted(REPRODUCED))
def test_issue_12_documents_are_refused(validator, case):
    keys, benign, poisoned = REPRODUCED[case]
    _refused(validator, keys, benign, poisoned)


# Each string field the code refuses a line break in, with a valid value: a
# trailing newline ("x\n", which Python's `$` lets through) must be refused too.
ONE_LINE_FIELDS = [
    (["pgbouncer", "settings", "listen_addr"], "127.0.0.1"),
    (["pgbouncer", "settings", "auth_file"], "/etc/pgbouncer/userlist.txt"),
    (["pgbouncer", "settings", "pidfile"], "/run/p.pid"),
    (["pgbouncer", "user"], "postgres"),
    (["pgbouncer", "owner"], "postgres"),
    (["pgbouncer", "group"], "postgres"),
    (["pgbouncer", "config_path"], "/etc/pgbouncer/pgbouncer.ini"),
    (["pgbouncer", "userlist_path"], "/etc/pgbouncer/userlist.txt"),
    (["pgbouncer", "databases", "appdb"], "host=10.0.0.5 dbname=appdb"),
    *[(["pgbouncer", "verifier_from", key], "postgres") for key in ("host", "user", "password", "dbname")],
    *[(["redis_aof", key], "redis-1") for key in ("host", "username", "password")],
    *[(["redis_aof", "instances", "main", key], "redis-1") for key in ("host", "username", "password")],
    (["v2v", "work_root"], "/var/lib/opsalt-v2v"),
]


@pytest.mark.parametrize("keys, benign", ONE_LINE_FIELDS, ids=[":".join(keys) for keys, _ in ONE_LINE_FIELDS])
@pytest.mark.parametrize("tail", ["\n", "\nauth_type = trust", "\r"])
def test_one_line_fields_refuse_a_line_break(validator, keys, benign, tail):
    _refused(validator, keys, benign, benign + tail)


def test_pgbouncer_file_owner_may_still_be_null(validator):
    for key in ("user", "owner", "group"):
        assert validator.is_valid({"pgbouncer": {key: None}})
