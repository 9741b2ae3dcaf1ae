"""
The pipconf execution module: scopes, reading, pip's load order in
``effective``, ``check_index`` verdicts (HTTP edge cases with ``responses``),
and the prepare/write pair the states use.
"""

import os
import pwd

import pytest
import requests
import responses
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.asset_api import REPO_ROOT
from tests.support.components import load_component

SECRET = "n3xus-Dep1oy-pw"
INDEX = "http://nexus.example.com:8081/repository/pypi-group/simple"


pipconf = load_component("_modules", "pipconf")


@pytest.fixture
def fake_user(tmp_path, monkeypatch):
    """
    The current user with its home under tmp_path, and the global file there
    too, so nothing outside tmp_path is read or written.
    """
    real = pwd.getpwuid(os.geteuid())
    home = tmp_path / "home"
    home.mkdir()
    entry = pwd.struct_passwd((real.pw_name, "x", real.pw_uid, real.pw_gid, "", str(home), "/bin/sh"))
    monkeypatch.setattr(pipconf, "_user_entry", lambda name: entry)
    monkeypatch.setattr(pipconf.pwd, "getpwuid", lambda uid: entry)
    monkeypatch.setattr(pipconf, "GLOBAL_FILE", str(tmp_path / "etc-pip.conf"))
    monkeypatch.setattr(pipconf, "_read_environment_file", lambda path: {})
    for name in list(os.environ):
        if name.startswith(("PIP_", "XDG_")):
            monkeypatch.delenv(name)
    return entry


def _env(tmp_path, **extra):
    env = {"XDG_CONFIG_DIRS": str(tmp_path / "xdg"), "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config")}
    env.update(extra)
    return env


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def test_resolve_scopes(tmp_path):
    assert pipconf.resolve("global")["path"] == "/etc/pip.conf"
    root = pipconf.resolve("user:root")
    assert root == {
        "path": os.path.join(pwd.getpwnam("root").pw_dir, ".config", "pip", "pip.conf"),
        "user": "root",
        "group": "root",
    }
    assert pipconf.resolve(str(tmp_path / "x.conf"))["path"] == str(tmp_path / "x.conf")
    (tmp_path / "venv").mkdir()
    with pytest.raises(CommandExecutionError, match="not a virtualenv"):
        pipconf.resolve(f"venv:{tmp_path / 'venv'}")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert pipconf.resolve(f"venv:{tmp_path / 'venv'}")["path"] == str(tmp_path / "venv" / "pip.conf")
    with pytest.raises(CommandExecutionError, match="does not exist"):
        pipconf.resolve("user:no-such-user-opsalt")
    with pytest.raises(SaltInvocationError, match="not a pip config scope"):
        pipconf.resolve("relative/pip.conf")


def test_get_masks_credentials_unless_asked(tmp_path):
    path = tmp_path / "pip.conf"
    path.write_text(
        f"[global]\nindex-url = http://deploy:{SECRET}@nexus:8081/simple\ntrusted-host = nexus:8081\n"
    )
    masked = pipconf.get(path=str(path))
    assert masked == {"global": {"index-url": "http://***@nexus:8081/simple", "trusted-host": ["nexus:8081"]}}
    assert pipconf.get(path=str(path), unmask=True)["global"]["index-url"].endswith(
        f"{SECRET}@nexus:8081/simple"
    )
    assert pipconf.get(path=str(tmp_path / "missing.conf")) is None
    path.write_text("[global]\ntimeout = 1\ntimeout = 2\n")
    with pytest.raises(CommandExecutionError, match="pip refuses this file"):
        pipconf.get(path=str(path))


def test_effective_follows_pips_order(tmp_path, fake_user):
    home = fake_user.pw_dir
    _write(
        str(tmp_path / "xdg" / "pip" / "pip.conf"), "[global]\ntimeout = 10\nindex-url = https://xdg/simple\n"
    )
    _write(pipconf.GLOBAL_FILE, "[global]\ntimeout = 20\n")
    _write(
        os.path.join(home, ".pip", "pip.conf"), "[global]\nindex-url = https://legacy/simple\nretries = 9\n"
    )
    _write(
        os.path.join(home, ".config", "pip", "pip.conf"),
        f"[global]\nindex-url = http://u:{SECRET}@new/simple\n[install]\ntimeout = 40\n",
    )
    result = pipconf.effective(environ=_env(tmp_path))
    options = result["options"]
    assert options["index-url"]["value"] == "http://***@new/simple"
    assert options["index-url"]["source"].endswith(".config/pip/pip.conf [global]")
    assert [s.split(" [")[0] for s in options["index-url"]["shadowed"]] == [
        str(tmp_path / "xdg" / "pip" / "pip.conf"),
        os.path.join(home, ".pip", "pip.conf"),
    ]
    # [install] beats [global] of every file for the install command only.
    assert options["timeout"]["value"] == "40"
    assert (
        pipconf.effective(command="download", environ=_env(tmp_path))["options"]["timeout"]["value"] == "20"
    )
    # The legacy file still supplies what the newer one does not set.
    assert options["retries"]["source"].startswith(os.path.join(home, ".pip", "pip.conf"))
    assert any("legacy" in w for w in result["warnings"])
    assert SECRET not in str(result)
    assert SECRET in str(pipconf.effective(environ=_env(tmp_path), unmask=True))


def test_effective_pip_config_file_hides_user_files_and_env_wins(tmp_path, fake_user):
    _write(
        os.path.join(fake_user.pw_dir, ".config", "pip", "pip.conf"),
        "[global]\nindex-url = https://user/simple\n",
    )
    env_file = tmp_path / "env.conf"
    env_file.write_text("[global]\ntimeout = 7\n")
    result = pipconf.effective(environ=_env(tmp_path, PIP_CONFIG_FILE=str(env_file), PIP_TRUSTED_HOST="a b"))
    assert "index-url" not in result["options"]
    assert result["options"]["timeout"]["source"] == f"{env_file} [global]"
    assert result["options"]["trusted-host"] == {
        "value": ["a", "b"],
        "source": "environment PIP_TRUSTED_HOST",
        "shadowed": [],
    }
    assert any("PIP_CONFIG_FILE" in w for w in result["warnings"])


@responses.activate
@pytest.mark.parametrize(
    "status, body, content_type, verdict",
    [
        (200, '<html><a href="../../p/x-1.0.tar.gz">x-1.0.tar.gz</a></html>', "text/html", "reachable"),
        (
            200,
            '{"meta": {"api-version": "1.0"}, "files": []}',
            "application/vnd.pypi.simple.v1+json",
            "reachable",
        ),
        (401, "auth", "text/plain", "needs_auth"),
        (403, "no", "text/plain", "needs_auth"),
        (404, "nope", "text/plain", "not_found"),
        (200, '{"ok": true}', "application/json", "not_an_index"),
        (500, "boom", "text/plain", "not_an_index"),
    ],
)
def test_check_index_verdicts(fake_user, tmp_path, status, body, content_type, verdict):
    responses.add(
        responses.GET,
        "http://nexus.example.com:8081/repository/pypi-group/simple/pip/",
        body=body,
        status=status,
        content_type=content_type,
    )
    result = pipconf.check_index(
        f"http://deploy:{SECRET}@nexus.example.com:8081/repository/pypi-group/simple"
    )
    assert result["status"] == verdict
    assert result["http_status"] == status
    assert result["url"] == "http://***@nexus.example.com:8081/repository/pypi-group/simple/pip/"
    assert SECRET not in str(result)
    sent = responses.calls[0].request
    assert sent.headers["Authorization"].startswith("Basic ")
    assert "@" not in sent.url


@responses.activate
@pytest.mark.parametrize(
    "error, verdict",
    [
        (requests.exceptions.SSLError(f"certificate verify failed for {SECRET}"), "tls_failure"),
        (requests.exceptions.ConnectionError("refused"), "unreachable"),
    ],
)
def test_check_index_transport_failures(fake_user, error, verdict):
    responses.add(responses.GET, "https://nexus.example.com/simple/pip/", body=error)
    result = pipconf.check_index(f"https://deploy:{SECRET}@nexus.example.com/simple")
    assert result["status"] == verdict
    assert SECRET not in str(result)


@responses.activate
def test_check_index_uses_index_url_and_trusted_host_from_config(tmp_path, fake_user, monkeypatch):
    _write(
        os.path.join(fake_user.pw_dir, ".config", "pip", "pip.conf"),
        "[global]\nindex-url = https://nexus.example.com/simple\ntrusted-host = nexus.example.com\n",
    )
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "xdg"))
    responses.add(responses.GET, "https://nexus.example.com/simple/pip/", body="<a href='x'>x</a>")
    seen = {}
    real_get = requests.Session.get

    def spy(self, url, **kwargs):
        seen["verify"] = kwargs.get("verify")
        return real_get(self, url, **kwargs)

    monkeypatch.setattr(requests.Session, "get", spy)
    assert pipconf.check_index()["status"] == "reachable"
    assert seen["verify"] is False


def test_check_index_without_any_url(fake_user):
    with pytest.raises(CommandExecutionError, match="no index URL"):
        pipconf.check_index()
    with pytest.raises(CommandExecutionError, match="not an http"):
        pipconf.check_index("file:///srv/simple")


def test_prepare_reports_credentials_and_refuses_bad_input(tmp_path):
    path = str(tmp_path / "pip.conf")
    plan = pipconf.prepare(path, {"global": {"index-url": f"http://deploy:{SECRET}@nexus/simple"}})
    assert plan["current"] is None
    assert plan["has_credentials"] is True
    assert plan["secrets"] == [SECRET]
    assert not os.path.exists(path)
    with pytest.raises(CommandExecutionError) as err:
        pipconf.prepare(path, {"global": {"index-url": f"ftp://deploy:{SECRET}@nexus/simple"}})
    assert "invalid pip settings" in str(err.value) and SECRET not in str(err.value)


def test_prepare_counts_credentials_already_in_the_file(tmp_path):
    path = tmp_path / "pip.conf"
    path.write_text(f"[global]\nextra-index-url = http://deploy:{SECRET}@nexus/simple\n")
    plan = pipconf.prepare(str(path), {"global": {"timeout": 5}})
    assert plan["has_credentials"] is True
    assert SECRET not in pipconf.diff(plan["current"], plan["desired"], str(path), plan["secrets"])


def test_prepare_pypirc_paths(tmp_path):
    assert pipconf.prepare_pypirc("user:root", {"n": {"repository": "https://x/"}})["path"] == os.path.join(
        pwd.getpwnam("root").pw_dir, ".pypirc"
    )
    with pytest.raises(SaltInvocationError):
        pipconf.prepare_pypirc("global", {"n": {"repository": "https://x/"}})


def test_write_is_atomic_with_backup_and_mode(tmp_path):
    path = str(tmp_path / "deep" / "dir" / "pip.conf")
    assert pipconf.write(path, "[global]\ntimeout = 1\n", "0600") is None
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    backup = pipconf.write(path, "[global]\ntimeout = 2\n", 0o644)
    assert open(backup, encoding="utf-8").read() == "[global]\ntimeout = 1\n"
    assert open(path, encoding="utf-8").read() == "[global]\ntimeout = 2\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    with pytest.raises(CommandExecutionError, match="cannot write"):
        pipconf.write(str(tmp_path / "deep" / "dir" / "pip.conf" / "x"), "x", "0644")


@pytest.mark.parametrize(
    "section",
    [
        {"configs": {"global": {"settings": {"global": {"index-url": "ftp://mirror/simple"}}}}},
        {"configs": {"relative/pip.conf": {"settings": {"global": {"timeout": 5}}}}},
        {"configs": {"global": {"settings": {"global": {"trusted-host": "http://nexus/"}}}}},
        {"pypirc": {"user:builder": {"repositories": {"nexus": {"username": "deploy"}}}}},
        {"kolla": {"sources": {"neutron-base": {"type": "git", "location": "https://git/neutron.git"}}}},
        {"kolla": {"enabled": "yes"}},
    ],
    ids=[
        "ftp-index",
        "relative-scope",
        "trusted-host-url",
        "pypirc-no-url",
        "git-no-reference",
        "enabled-not-bool",
    ],
)
def test_pillar_schema_rejects_bad_pipconf_sections(section):
    import json

    import jsonschema

    with open(os.path.join(REPO_ROOT, "schema", "pillar.schema.json"), encoding="utf-8") as handle:
        validator = jsonschema.Draft202012Validator(json.load(handle))
    assert list(validator.iter_errors({"pipconf": section}))
    assert not list(
        validator.iter_errors({"pipconf": {"configs": {"global": {"settings": {"global": {"timeout": 5}}}}}})
    )


@pytest.mark.parametrize(
    "sources, fragment",
    [
        ({"neutron-base": {"type": "git", "location": "https://x/neutron.git"}}, "needs reference"),
        ({"neutron-base": {"type": "svn", "location": "https://x/neutron"}}, "type must be one of"),
        ({"neutron-base": {"type": "url"}}, "location is required"),
        ({"neutron base": {"type": "local", "location": "/src"}}, "not a kolla image name"),
        ({"neutron-base": {"type": "local", "location": "/src\n[DEFAULT]\nbase = centos"}}, "line break"),
        ({"neutron-base": "git"}, "must be a mapping"),
    ],
)
def test_render_kolla_conf_refuses_bad_sources(sources, fragment):
    with pytest.raises(CommandExecutionError, match=fragment):
        pipconf.render_kolla_conf(sources)


def test_render_and_kolla_header_validate_settings():
    with pytest.raises(CommandExecutionError, match="not an http"):
        pipconf.render({"global": {"index-url": "ftp://x/simple"}})
    with pytest.raises(CommandExecutionError, match="non-empty"):
        pipconf.render_kolla_header({})
    header = pipconf.render_kolla_header({"global": {"index-url": f"http://u:{SECRET}@nexus/simple"}})
    assert SECRET not in header and "{% block base_header %}" in header and "{{ super() }}" in header


def test_environment_files_shell_and_pam_forms(tmp_path):
    path = tmp_path / "env"
    path.write_text(
        '# comment\nexport PIP_TIMEOUT=60\nPIP_INDEX_URL="https://a/simple"\n'
        "PIP_TRUSTED_HOST DEFAULT=a.example OVERRIDE=b.example\nPIP_RETRIES DEFAULT=3\n"
        "PIP_CACHE_DIR DEFAULT=${HOME}/.cache\n"
    )
    assert pipconf._read_environment_file(str(path)) == {
        "PIP_TIMEOUT": "60",
        "PIP_INDEX_URL": "https://a/simple",
        "PIP_TRUSTED_HOST": "b.example",
        "PIP_RETRIES": "3",
    }
    assert pipconf._read_environment_file(str(tmp_path / "missing")) == {}
