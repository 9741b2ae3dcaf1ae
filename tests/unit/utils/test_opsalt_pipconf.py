"""
opsalt_pipconf: pip's option names from the installed pip, validation of
wanted settings, and the INI editor that touches only the keys it is given.
The edited text is read back with pip's own configuration parser.
"""

import configparser

import opsalt_pipconf
import pytest
from opsalt_pipconf import PipIniError, apply_settings, validate_settings

SECRET = "n3xus-Dep1oy-pw"
GROUP = f"http://deploy:{SECRET}@nexus.example.com:8081/repository/pypi-group/simple"


def pip_parse(text):
    """
    The text as pip's RawConfigParser (with pip's key normalisation) reads it.
    """
    from pip._internal.configuration import _RawConfigParser

    parser = _RawConfigParser()
    parser.read_string(text)
    return {s: dict(parser.items(s)) for s in parser.sections()}


def test_option_names_come_from_the_installed_pip():
    source, sections = opsalt_pipconf.pip_options()
    import pip

    assert source == f"pip {pip.__version__}"
    assert sections["global"]["index-url"] is False
    assert sections["global"]["trusted-host"] is True
    assert sections["global"]["extra-index-url"] is True
    assert "no-deps" in sections["download"]
    assert "dest" in sections["download"] and "dest" not in sections["freeze"]


def test_option_words_come_from_the_installed_pip():
    choices = opsalt_pipconf.pip_choices()
    assert choices["install"]["progress-bar"] == ("auto", "on", "off", "raw")
    assert choices["global"]["progress-bar"] == ("auto", "on", "off", "raw")
    assert "timeout" not in choices["global"] and "index-url" not in choices["install"]
    # [global] feeds every command: list's and cache's --format words together
    assert set(choices["global"]["format"]) >= set(choices["list"]["format"]) | set(
        choices["cache"]["format"]
    )


@pytest.mark.parametrize("value,word", [(False, "off"), (True, "on")])
def test_yaml_booleans_become_the_options_word(value, word):
    settings = {"global": {"progress-bar": value}, "Install": {"PROGRESS_BAR": value, "no-deps": value}}
    clean = validate_settings(settings)
    assert clean == {
        "global": {"progress-bar": word},
        "install": {"progress-bar": word, "no-deps": "true" if value else "false"},
    }
    assert pip_parse(apply_settings("", clean))["global"]["progress-bar"] == word
    assert opsalt_pipconf.boolean_words(settings, clean) == [
        f"[global] progress-bar = {word}",
        f"[install] progress-bar = {word}",
    ]


@pytest.mark.parametrize(
    "options,fragment",
    [
        ({"progress-bar": "false"}, "progress-bar: must be one of auto, on, off, raw"),
        ({"exists-action": True}, "exists-action: True must be one of s, i, w, b, a"),
        ({"exists-action": "s x"}, "exists-action: must be one of s, i, w, b, a"),
        ({"upgrade-strategy": "latest"}, "must be one of only-if-needed, eager"),
    ],
)
def test_option_words_are_checked(options, fragment):
    with pytest.raises(PipIniError) as err:
        validate_settings({"install": options})
    assert fragment in str(err.value)


def test_validate_normalises_names_and_splits_multi_values():
    clean = validate_settings(
        {
            "Global": {
                "INDEX_URL": GROUP,
                "trusted_host": "nexus.example.com:8081 [::1]:8080",
                "extra-index-url": ["https://pypi.org/simple"],
                "timeout": 60,
                "no-cache-dir": True,
            }
        }
    )
    assert clean == {
        "global": {
            "index-url": GROUP,
            "trusted-host": ["nexus.example.com:8081", "[::1]:8080"],
            "extra-index-url": ["https://pypi.org/simple"],
            "timeout": "60",
            "no-cache-dir": "true",
        }
    }


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"global": {"index-url": "ftp://mirror.example.com/simple"}}, "not an http:// or https:// URL"),
        ({"global": {"index-url": f"ftp://deploy:{SECRET}@nexus/simple"}}, "not an http:// or https:// URL"),
        ({"global": {"index-url": f"deploy:{SECRET}@nexus/simple"}}, "not an http:// or https:// URL"),
        ({"global": {"extra-index-url": ["https://ok/simple", "file:///srv/simple"]}}, "not an http"),
        ({"global": {"trusted-host": "http://nexus.example.com/"}}, "not host[:port]"),
        ({"global": {"trusted-host": "nexus.example.com:99999"}}, "invalid port"),
        ({"global": {"trusted-host": "bad_host!"}}, "not host[:port]"),
        ({"global": {"index-urls": "https://x/simple"}}, "no option --index-urls"),
        ({"freeze": {"dest": "/tmp"}}, "no option --dest"),
        ({"global": {"index_url": "https://a/simple", "index-url": "https://a/simple"}}, "repeated key"),
        ({"instal": {"no-deps": True}}, "not a pip config section"),
        ({"global": {"index-url": ["https://a/simple", "https://b/simple"]}}, "takes one value"),
        ({"global": {"timeout": "60\n[install]\nno-deps = true"}}, "line break or control character"),
        ({"global": {"timeout": {"nested": 1}}}, "expected a string"),
        ({"global": "index-url = x"}, "must be a mapping"),
        ({}, "non-empty mapping"),
    ],
)
def test_invalid_settings_are_refused_without_leaking_secrets(settings, fragment):
    with pytest.raises(PipIniError) as err:
        validate_settings(settings)
    assert fragment in str(err.value)
    assert SECRET not in str(err.value)


EXISTING = """\
# Managed partly by hand: keep this comment.
[global]
timeout = 30
; the cache lives on the big disk
cache-dir = /srv/pip-cache

[install]
no-compile = true
"""


def test_non_exclusive_edit_keeps_comments_and_other_keys():
    settings = validate_settings(
        {"global": {"index-url": GROUP, "timeout": 60}, "download": {"no-deps": True}}
    )
    text = apply_settings(EXISTING, settings)
    assert "# Managed partly by hand: keep this comment.\n" in text
    assert "; the cache lives on the big disk\n" in text
    parsed = pip_parse(text)
    assert parsed == {
        "global": {"timeout": "60", "cache-dir": "/srv/pip-cache", "index-url": GROUP},
        "install": {"no-compile": "true"},
        "download": {"no-deps": "true"},
    }
    assert apply_settings(text, settings) == text


def test_unchanged_value_keeps_its_original_spelling():
    text = "[global]\nindex_url=https://a/simple\ntrusted-host = a\n    b\n"
    settings = validate_settings({"global": {"index-url": "https://a/simple", "trusted-host": ["a", "b"]}})
    assert apply_settings(text, settings) == text


def test_multi_values_use_continuation_lines_that_pip_splits():
    settings = validate_settings({"global": {"trusted-host": ["a.example", "b.example:8081"]}})
    text = apply_settings("", settings)
    assert text == "[global]\ntrusted-host =\n    a.example\n    b.example:8081\n"
    assert pip_parse(text)["global"]["trusted-host"].split() == ["a.example", "b.example:8081"]


def test_exclusive_drops_unlisted_keys_and_sections():
    settings = validate_settings({"global": {"index-url": GROUP}})
    text = apply_settings(EXISTING, settings, exclusive=True)
    assert pip_parse(text) == {"global": {"index-url": GROUP}}
    assert apply_settings(text, settings, exclusive=True) == text


def test_exclusive_repairs_a_file_pip_refuses():
    broken = "[global]\ntimeout = 1\ntimeout = 2\n"
    settings = validate_settings({"global": {"timeout": 5}})
    with pytest.raises(PipIniError, match="appears twice"):
        apply_settings(broken, settings)
    assert pip_parse(apply_settings(broken, settings, exclusive=True)) == {"global": {"timeout": "5"}}


def test_null_removes_a_key():
    settings = validate_settings({"global": {"cache-dir": None}})
    parsed = pip_parse(apply_settings(EXISTING, settings))
    assert "cache-dir" not in parsed["global"]
    assert parsed["global"]["timeout"] == "30"


def test_duplicate_section_in_existing_file_is_reported():
    with pytest.raises(PipIniError, match=r"section \[global\] appears twice"):
        apply_settings("[global]\na = 1\n[global]\nb = 2\n", validate_settings({"global": {"timeout": 1}}))
    with pytest.raises(configparser.DuplicateSectionError):
        pip_parse("[global]\na = 1\n[global]\nb = 2\n")


def test_garbage_file_is_refused():
    with pytest.raises(PipIniError, match="before any"):
        apply_settings("timeout = 1\n", validate_settings({"global": {"timeout": 1}}))


def test_settings_secrets_finds_url_passwords_only():
    settings = validate_settings(
        {"global": {"index-url": GROUP, "extra-index-url": ["https://pypi.org/simple"]}}
    )
    assert opsalt_pipconf.settings_secrets(settings) == [SECRET]


def test_pypirc_rendering_and_validation():
    repos = opsalt_pipconf.validate_pypirc(
        {
            "nexus": {
                "repository": "http://nexus.example.com:8081/repository/pypi-hosted/",
                "username": "deploy",
                "password": SECRET,
            }
        }
    )
    text = opsalt_pipconf.render_pypirc(repos)
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    assert parser.get("distutils", "index-servers").split() == ["nexus"]
    assert parser.get("nexus", "password") == SECRET
    assert opsalt_pipconf.pypirc_secrets(repos) == [SECRET]


@pytest.mark.parametrize(
    "repos, fragment",
    [
        ({"nexus": {"username": "u", "password": SECRET}}, "'repository' (the upload URL) is required"),
        ({"nexus": {"repository": "scp://nexus/", "password": SECRET}}, "not an http"),
        ({"bad name": {"repository": "https://x/"}}, "repository name"),
        ({"distutils": {"repository": "https://x/"}}, "repository name"),
        ({"nexus": {"repository": "https://x/", "token": SECRET}}, "unknown key"),
        (
            {"nexus": {"repository": "https://x/", "password": SECRET + "\n[x]"}},
            "line break or control character",
        ),
    ],
)
def test_pypirc_invalid_input(repos, fragment):
    with pytest.raises(PipIniError) as err:
        opsalt_pipconf.validate_pypirc(repos)
    assert fragment in str(err.value)
    assert SECRET not in str(err.value)


def test_a_bad_url_error_does_not_chain_urllibs_message():
    # urllib quotes the "port" it could not read, which here is the password
    with pytest.raises(PipIniError) as err:
        opsalt_pipconf.check_http_url("http://deploy:pa/ss@nexus/simple", "index-url")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert "'pa'" not in str(err.value) and "pa/ss" not in str(err.value)
    with pytest.raises(PipIniError, match="not host") as err:
        opsalt_pipconf.check_host("[::zz]:80", "trusted-host")
    assert isinstance(err.value.__cause__, ValueError)  # no secret in a host name


def test_fallback_list_when_pip_internals_are_unavailable(monkeypatch):
    def broken():
        raise ImportError("No module named 'pip._internal.commands'")

    monkeypatch.setattr(opsalt_pipconf, "_options_from_pip", broken)
    opsalt_pipconf.pip_tables.cache_clear()
    try:
        source, sections = opsalt_pipconf.pip_options()
        assert source == "fallback list"
        assert validate_settings({"install": {"index-url": "https://a/simple", "trusted-host": "a b"}}) == {
            "install": {"index-url": "https://a/simple", "trusted-host": ["a", "b"]}
        }
        with pytest.raises(PipIniError, match="fallback list"):
            validate_settings({"global": {"index-urls": "https://a/simple"}})
        assert sections["download"]["extra-index-url"] is True
        assert validate_settings({"global": {"progress-bar": False}}) == {"global": {"progress-bar": "off"}}
    finally:
        opsalt_pipconf.pip_tables.cache_clear()


# -- the schema says what the code says -----------------------------------------

POISON_KEY = "x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny"


def _pipconf_schema():
    import json
    import os

    from tests.support.asset_api import REPO_ROOT

    with open(os.path.join(REPO_ROOT, "schema", "pillar.schema.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_schema_patterns_are_the_codes():
    section = _pipconf_schema()["$defs"]["pipconf"]
    props = section["properties"]
    assert props["configs"]["propertyNames"]["pattern"] == opsalt_pipconf.SCOPE_PATTERN
    assert props["pypirc"]["propertyNames"]["pattern"] == opsalt_pipconf.PYPIRC_SCOPE_PATTERN
    repos = props["pypirc"]["additionalProperties"]["properties"]["repositories"]
    assert repos["propertyNames"]["pattern"] == opsalt_pipconf.IDENT_PATTERN
    kolla = props["kolla"]["properties"]
    assert kolla["sources"]["propertyNames"]["pattern"] == opsalt_pipconf.IDENT_PATTERN
    assert kolla["options"]["propertyNames"]["pattern"] == opsalt_pipconf.KOLLA_OPTION_PATTERN
    assert kolla["image_pip_conf"]["$ref"] == "#/$defs/plain_path"


@pytest.mark.parametrize(
    "document",
    [
        {"configs": {POISON_KEY: {"settings": {"global": {"timeout": 5}}}}},
        {
            "configs": {
                "global": {"settings": {"global": {"timeout": "5\n[install]\nindex-url = http://evil"}}}
            }
        },
        {"configs": {"global": {"settings": {"global": {"timeout": "5\u2028x"}}}}},
        {"pypirc": {"user:b\nx": {"repositories": {"n": {"repository": "https://127.0.0.1/"}}}}},
        {
            "pypirc": {
                "user:b": {"repositories": {"n": {"repository": "https://127.0.0.1/", "password": "a\rb"}}}
            }
        },
        {"kolla": {"options": {"base\n[keystone-base]\nlocation": "https://evil"}}},
        {"kolla": {"image_pip_conf": "/etc/pip.conf; touch /x #"}},
        {"kolla": {"sources": {"neutron-base": {"type": "url", "location": "https://x\u0085y"}}}},
    ],
    ids=[
        "scope-key-yaml",
        "value-newline",
        "value-u2028",
        "pypirc-key",
        "password-cr",
        "kolla-key",
        "kolla-path",
        "nel",
    ],
)
def test_schema_refuses_injection(document):
    import jsonschema

    validator = jsonschema.Draft202012Validator(_pipconf_schema())
    assert list(validator.iter_errors({"pipconf": document}))


@pytest.mark.parametrize(
    "settings",
    [
        {"global": {"timeout": "5\nindex-url = http://evil"}},
        {"global": {"timeout": "5\u0085x"}},
        {"global": {"timeout": "5\u2029x"}},
        {"global": {"timeout": "5\x00"}},
        {"global": {"[install]": "x"}},
        {"global": {"#timeout": "x"}},
    ],
)
def test_every_value_and_key_is_one_line(settings):
    with pytest.raises(PipIniError) as err:
        validate_settings(settings)
    assert "evil" not in str(err.value)
