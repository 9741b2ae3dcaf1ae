"""
opsalt_pipini: pip's option names from the installed pip, validation of
wanted settings, and the INI editor that touches only the keys it is given.
The edited text is read back with pip's own configuration parser.
"""

import configparser

import opsalt_pipini
import pytest
from opsalt_pipini import PipIniError, apply_settings, validate_settings

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
    source, sections = opsalt_pipini.pip_options()
    import pip

    assert source == f"pip {pip.__version__}"
    assert sections["global"]["index-url"] is False
    assert sections["global"]["trusted-host"] is True
    assert sections["global"]["extra-index-url"] is True
    assert "no-deps" in sections["download"]
    assert "dest" in sections["download"] and "dest" not in sections["freeze"]


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
        ({"global": {"timeout": "60\n[install]\nno-deps = true"}}, "line breaks"),
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
    assert opsalt_pipini.settings_secrets(settings) == [SECRET]


def test_pypirc_rendering_and_validation():
    repos = opsalt_pipini.validate_pypirc(
        {
            "nexus": {
                "repository": "http://nexus.example.com:8081/repository/pypi-hosted/",
                "username": "deploy",
                "password": SECRET,
            }
        }
    )
    text = opsalt_pipini.render_pypirc(repos)
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    assert parser.get("distutils", "index-servers").split() == ["nexus"]
    assert parser.get("nexus", "password") == SECRET
    assert opsalt_pipini.pypirc_secrets(repos) == [SECRET]


@pytest.mark.parametrize(
    "repos, fragment",
    [
        ({"nexus": {"username": "u", "password": SECRET}}, "'repository' (the upload URL) is required"),
        ({"nexus": {"repository": "scp://nexus/", "password": SECRET}}, "not an http"),
        ({"bad name": {"repository": "https://x/"}}, "repository name"),
        ({"distutils": {"repository": "https://x/"}}, "repository name"),
        ({"nexus": {"repository": "https://x/", "token": SECRET}}, "unknown key"),
        ({"nexus": {"repository": "https://x/", "password": SECRET + "\n[x]"}}, "line breaks"),
    ],
)
def test_pypirc_invalid_input(repos, fragment):
    with pytest.raises(PipIniError) as err:
        opsalt_pipini.validate_pypirc(repos)
    assert fragment in str(err.value)
    assert SECRET not in str(err.value)


def test_fallback_list_when_pip_internals_are_unavailable(monkeypatch):
    def broken():
        raise ImportError("No module named 'pip._internal.commands'")

    monkeypatch.setattr(opsalt_pipini, "_options_from_pip", broken)
    opsalt_pipini.pip_options.cache_clear()
    try:
        source, sections = opsalt_pipini.pip_options()
        assert source == "fallback list"
        assert validate_settings({"install": {"index-url": "https://a/simple", "trusted-host": "a b"}}) == {
            "install": {"index-url": "https://a/simple", "trusted-host": ["a", "b"]}
        }
        with pytest.raises(PipIniError, match="fallback list"):
            validate_settings({"global": {"index-urls": "https://a/simple"}})
        assert sections["download"]["extra-index-url"] is True
    finally:
        opsalt_pipini.pip_options.cache_clear()
