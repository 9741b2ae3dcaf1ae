"""
The shared validation layer: every payload class the injection suite uses is
refused, and the schema's patterns are the module's patterns.
"""

import json
import os
import sys

import jsonschema
import pytest

from tests.support.asset_api import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "_utils"))
import opsalt_validate as validate

BREAKS = [
    "a\n",
    "a\nb",
    "a\rb",
    "a\x00b",
    "a\x0bb",
    "a\x0cb",
    "a\x85b",
    "a\u2028b",
    "a\u2029b",
    "a\x1bb",
    "a\x7fb",
]


@pytest.fixture(scope="module")
def schema():
    with open(os.path.join(REPO_ROOT, "schema", "pillar.schema.json"), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.parametrize("payload", BREAKS)
def test_line_refuses_every_line_break_and_control(payload):
    with pytest.raises(validate.ValidationError, match="settings:x"):
        validate.line(payload, "settings:x")


def test_line_keeps_tabs_and_punctuation_and_hides_secrets():
    assert validate.line("a\tb: {c} 'd' \"e\" {{ f }}", "x") == "a\tb: {c} 'd' \"e\" {{ f }}"
    with pytest.raises(validate.ValidationError) as err:
        validate.line("hunter2\nauth_type = trust", "password", secret=True)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("key", ["[section]", "a=b", ";c", "#c", " a", "a\nb", "", "a]", "a\tb"])
def test_ini_key_refuses_section_splitter_and_comment(key):
    with pytest.raises(validate.ValidationError):
        validate.ini_key(key, "key")


def test_ini_key_accepts_real_keys():
    for key in ("index-url", "auth_type", "keystone-base", "extra index.url"):
        assert validate.ini_key(key, "key") == key


@pytest.mark.parametrize(
    "value", ["x:\n  cmd.run", "a b", "-a", ".a", "a/b", "a{b", "a%b", "a'b", "", "x" * 129, 5, None]
)
def test_name_refuses(value):
    with pytest.raises(validate.ValidationError):
        validate.name(value, "redis_aof:instances")


@pytest.mark.parametrize("value", ["relative", "/a/../b", "/a//b", "/a/", "//a", "/a\nb", 5])
def test_abs_path_refuses(value):
    with pytest.raises(validate.ValidationError):
        validate.abs_path(value, "config_path")


@pytest.mark.parametrize(
    "value", ["/etc/pip.conf; touch /x #", "/a b", "/a$b", "/a{b", "/a%b", "/a'b", '/a"b']
)
def test_plain_path_refuses_shell_and_jinja(value):
    with pytest.raises(validate.ValidationError):
        validate.plain_path(value, "pip_conf")


def test_mode():
    assert validate.mode("0640") == 0o640
    assert validate.mode(640) == 0o640
    assert validate.mode(None) is None
    for bad in ("rw-r--r--", "0888", True, "17777", "-1"):
        with pytest.raises(validate.ValidationError):
            validate.mode(bad)


def test_owner_and_group():
    assert validate.owner("root") == "root"
    assert validate.group("root") == "root"
    with pytest.raises(validate.ValidationError, match="no local user"):
        validate.owner("no-such-user-opsalt")
    with pytest.raises(validate.ValidationError, match="no local group") as err:
        validate.group("no-such-group-opsalt")
    # a missing name holds no secret: the lookup's error stays as the cause
    assert isinstance(err.value.__cause__, KeyError)


def test_enum_word_maps_yaml_booleans_back():
    assert validate.enum_word(False, ("always", "everysec", "no"), "appendfsync") == "no"
    assert validate.enum_word(True, ("yes", "no"), "x") == "yes"
    assert validate.enum_word(False, ("on", "off"), "x") == "off"
    assert validate.enum_word("EverySec", ("always", "everysec", "no"), "x") == "everysec"
    with pytest.raises(validate.ValidationError, match="must be one of"):
        validate.enum_word(True, ("always", "everysec", "no"), "appendfsync")


def test_schema_carries_the_same_patterns(schema):
    for name, pattern in validate.SCHEMA_PATTERNS.items():
        assert schema["$defs"][name]["pattern"] == pattern


@pytest.mark.parametrize("name", list(validate.SCHEMA_PATTERNS))
def test_schema_and_code_agree_on_every_payload(schema, name):
    check = {
        "line": lambda v: validate.line(v, "x"),
        "ini_key": lambda v: validate.ini_key(v, "x"),
        "name": lambda v: validate.name(v, "x"),
        "abs_path": lambda v: validate.abs_path(v, "x"),
        "plain_path": lambda v: validate.plain_path(v, "x"),
    }[name]
    sub = dict(schema["$defs"][name])
    validator = validate.schema_validator(sub)
    for payload in [*BREAKS, "ok", "/etc/ok", "[s]", "a=b", "/a b", "/etc/pip.conf", "x:\n  cmd.run"]:
        try:
            check(payload)
            code_ok = True
        except validate.ValidationError:
            code_ok = False
        schema_ok = validator.is_valid(payload)
        # The schema may be looser only where code checks what a regex cannot (normalisation).
        if schema_ok != code_ok:
            assert name in ("abs_path", "plain_path", "ini_key") and schema_ok and not code_ok, (
                name,
                payload,
            )


def test_a_trailing_newline_is_refused_everywhere():
    """Python's ``$`` matches before a final newline; every check must not."""
    for check, value in (
        (validate.line, "abc\n"),
        (validate.name, "cache\n"),
        (validate.abs_path, "/etc/x\n"),
        (validate.plain_path, "/etc/x\n"),
        (validate.ini_key, "key\n"),
    ):
        with pytest.raises(validate.ValidationError):
            check(value, "x")


def test_schema_validator_ends_patterns_where_ecma_does(schema):
    """The plain jsonschema validator lets a trailing newline through; ours does not."""
    name_schema = schema["$defs"]["name"]
    assert jsonschema.Draft202012Validator(name_schema).is_valid("cache\n")
    assert not validate.schema_validator(name_schema).is_valid("cache\n")
    assert validate.schema_validator(name_schema).is_valid("cache")
    assert not validate.schema_validator({"type": "string", "pattern": "^a\\$"}).is_valid("a")
    assert validate.schema_validator({"type": "string", "pattern": "^a\\$"}).is_valid("a$")


def _survives_sls_text(text):
    """Whether ``text`` comes back unchanged from Salt's ``| json`` filter read by Salt's YAML loader."""
    import salt.utils.json
    import salt.utils.yaml
    import yaml

    rendered = "x: " + salt.utils.json.dumps({text: text}, sort_keys=True)
    try:
        return salt.utils.yaml.safe_load(rendered)["x"] == {text: text}
    except (yaml.YAMLError, UnicodeError):  # UnicodeError: a lone surrogate
        return False


def test_sls_unsafe_pattern_is_exactly_what_json_and_yaml_do_not_carry():
    # Every code point of the Basic Multilingual Plane, and one beyond it.
    import re

    unsafe = re.compile(validate.SLS_UNSAFE_PATTERN)
    wrong = [
        hex(point)
        for point in [*range(0x10000), 0x1F600]
        if bool(unsafe.search(chr(point))) == _survives_sls_text(f"a{chr(point)}b")
    ]
    assert not wrong, wrong


def test_sls_unsafe_field_names_the_first_field_and_never_a_value():
    data = {
        "settings": {"listen_port": 6432, "logfile": "/var/log/p.log"},
        "users": {"app": {"pool_mode": "session"}, "bad\u2028key": {}},
        "userlist": {"app": "hunter2\x85trust"},
    }
    assert validate.sls_unsafe_field(data, "pgbouncer") == ('pgbouncer:users:"bad\\u2028key"', "\u2028")
    del data["users"]["bad\u2028key"]
    assert validate.sls_unsafe_field(data, "pgbouncer") == ("pgbouncer:userlist:app", "\x85")
    data["userlist"]["app"] = "hunter2"
    assert validate.sls_unsafe_field(data, "pgbouncer") is None
    assert validate.sls_unsafe_field({"ssh_options": ["-o", "A=\x7f"]}, "v2v") == (
        "v2v:ssh_options:1",
        "\x7f",
    )
    assert validate.sls_unsafe_field({6379: {"host": "h\u2029"}}, "redis_aof") == (
        "redis_aof:6379:host",
        "\u2029",
    )
    assert validate.sls_unsafe_field(None, "vmtune") is None


def test_sls_unsafe_field_walks_a_deep_document_without_recursion():
    deep = "end\u2028"
    for _ in range(5000):
        deep = {"a": deep}
    path, character = validate.sls_unsafe_field(deep, "v2v")
    assert path == "v2v" + ":a" * 5000 and character == "\u2028"
