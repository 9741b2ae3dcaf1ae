"""
The pipconf execution module: scopes, reading, pip's load order in
``effective``, ``check_index`` verdicts (HTTP edge cases with ``responses``),
and the prepare/write pair the states use.
"""

import os
import pwd
import re

import pytest
import requests
import responses
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.asset_api import REPO_ROOT
from tests.support.components import load_component

SECRET = "n3xus-Dep1oy-pw"
INDEX = "http://nexus.example.com:8081/repository/pypi-group/simple"


pipconf = load_component("_modules", "pipconf")


def policy_getter(policy, backups_keep=None):
    """
    ``config.get`` of a minion whose configuration holds ``opsalt:policy``
    (and ``opsalt:backups:keep`` when given).
    """

    def config_get(key, default=None, **kwargs):
        assert kwargs == {"omit_pillar": True, "omit_grains": True, "omit_master": True}
        if key == "opsalt:backups:keep":
            return default if backups_keep is None else backups_keep
        assert key == "opsalt:policy"
        return policy

    return config_get


@pytest.fixture(autouse=True)
def operator_policy(tmp_path, monkeypatch):
    """The operator lets these tests write under tmp_path and use 'nexus'."""
    policy = {"allowed_paths": [str(tmp_path)], "pipconf": {"index_hosts": ["nexus", "127.0.0.1"]}}
    monkeypatch.setattr(pipconf, "__salt__", {"config.get": policy_getter(policy)}, raising=False)
    monkeypatch.setattr(pipconf, "__pillar__", {}, raising=False)
    return policy


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
    with pytest.raises(SaltInvocationError, match="is not global, user:<name>"):
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


def test_plan_masks_credentials_and_refuses_bad_input(tmp_path):
    path = str(tmp_path / "pip.conf")
    plan = pipconf.plan_config(path, {"global": {"index-url": f"http://deploy:{SECRET}@nexus/simple"}})
    assert plan["path"] == path and "would be created" in plan["comment"]
    assert "+index-url = http://***@nexus/simple" in plan["changes"]["diff"]
    assert SECRET not in str(plan)
    assert not os.path.exists(path)
    with pytest.raises(CommandExecutionError) as err:
        pipconf.plan_config(path, {"global": {"index-url": f"ftp://deploy:{SECRET}@nexus/simple"}})
    assert "invalid pip settings" in str(err.value) and SECRET not in str(err.value)


def test_credentials_already_in_the_file_make_it_0600(tmp_path):
    path = tmp_path / "pip.conf"
    path.write_text(f"[global]\nextra-index-url = http://deploy:{SECRET}@nexus/simple\n")
    os.chmod(path, 0o644)
    plan = pipconf.plan_config(str(path), {"global": {"timeout": 5}})
    assert plan["changes"]["mode"] == {"old": "0644", "new": "0600"}
    assert SECRET not in str(plan)


def test_plan_pypirc_paths(tmp_path):
    plan = pipconf.plan_pypirc("user:root", {"n": {"repository": "https://nexus/"}})
    assert plan["path"] == os.path.join(pwd.getpwnam("root").pw_dir, ".pypirc")
    with pytest.raises(SaltInvocationError):
        pipconf.plan_pypirc("global", {"n": {"repository": "https://nexus/"}})


def test_apply_is_atomic_with_backup_and_mode(tmp_path):
    path = str(tmp_path / "deep" / "dir" / "pip.conf")
    done = pipconf.apply_config(path, {"global": {"timeout": 1}}, mode="0600")
    assert "created" in done["comment"] and "previous version" not in done["comment"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    again = pipconf.apply_config(path, {"global": {"timeout": 2}}, mode="0644")
    (backup,) = [n for n in os.listdir(tmp_path / "deep" / "dir") if n.endswith(".opsalt-bak")]
    assert backup in again["comment"]
    assert (tmp_path / "deep" / "dir" / backup).read_text() == "[global]\ntimeout = 1\n"
    assert open(path, encoding="utf-8").read() == "[global]\ntimeout = 2\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert pipconf.plan_config(path, {"global": {"timeout": 2}}, mode="0644")["changes"] == {}


def test_configured_backups_keep_is_honoured(monkeypatch, tmp_path, operator_policy):
    monkeypatch.setitem(pipconf.__salt__, "config.get", policy_getter(operator_policy, backups_keep=1))
    path = str(tmp_path / "pip.conf")
    for timeout in range(1, 5):
        pipconf.apply_config(path, {"global": {"timeout": timeout}})
    backups = sorted(n for n in os.listdir(tmp_path) if n.endswith(".opsalt-bak"))
    assert len(backups) == 1
    assert (tmp_path / backups[0]).read_text() == "[global]\ntimeout = 3\n"
    monkeypatch.setitem(pipconf.__salt__, "config.get", policy_getter(operator_policy, backups_keep=0))
    with pytest.raises(
        CommandExecutionError, match="opsalt:backups:keep: 0 is not a whole number of at least 1"
    ):
        pipconf.apply_config(path, {"global": {"timeout": 9}})
    assert open(path, encoding="utf-8").read() == "[global]\ntimeout = 4\n"


@pytest.mark.parametrize("value,word", [(False, "off"), (True, "on")])
def test_yaml_boolean_progress_bar_is_written_as_pips_word(tmp_path, value, word):
    # `progress-bar: off` in YAML arrives as False; pip refuses "false"
    path = str(tmp_path / "pip.conf")
    plan = pipconf.plan_config(path, {"global": {"progress-bar": value}, "install": {"progress_bar": value}})
    assert f"+progress-bar = {word}" in plan["changes"]["diff"]
    assert f"[global] progress-bar = {word}, [install] progress-bar = {word}" in plan["comment"]
    done = pipconf.apply_config(path, {"global": {"progress-bar": value}})
    assert f"[global] progress-bar = {word}" in done["comment"]
    assert open(path, encoding="utf-8").read() == f"[global]\nprogress-bar = {word}\n"
    with pytest.raises(CommandExecutionError, match="must be one of auto, on, off, raw"):
        pipconf.plan_config(path, {"global": {"progress-bar": "false"}})


def test_deprecated_prepare_still_works_and_warns(tmp_path, caplog):
    with pytest.warns(DeprecationWarning, match="use pipconf.plan_config"):
        plan = pipconf.prepare(str(tmp_path / "pip.conf"), {"global": {"timeout": 5}})
    assert "would be created" in plan["comment"]
    assert "pipconf.prepare is deprecated" in caplog.text
    with pytest.warns(DeprecationWarning, match="use pipconf.plan_pypirc"):
        pipconf.prepare_pypirc(str(tmp_path / ".pypirc"), {"n": {"repository": "https://nexus/"}})


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


# -- issue 12: kolla injection (finding 3) ----------------------------------------


def test_render_kolla_conf_refuses_an_option_key_that_opens_a_section():
    evil = {"base\n[keystone-base]\nlocation = https://evil.example/keystone.git\nx": "ubuntu"}
    with pytest.raises(CommandExecutionError, match="not an option name") as err:
        pipconf.render_kolla_conf(None, evil)
    assert "[DEFAULT]" in str(err.value)
    with pytest.raises(CommandExecutionError, match="unknown key"):
        pipconf.render_kolla_conf({"neutron-base": {"type": "url", "location": "https://x", "a\nb": "c"}})
    with pytest.raises(CommandExecutionError, match="line break or control character"):
        pipconf.render_kolla_conf(None, {"base": "ubuntu\u2028[keystone-base]"})
    with pytest.raises(CommandExecutionError, match="not a kolla image name"):
        pipconf.render_kolla_conf({"DEFAULT": {"type": "url", "location": "https://x"}})


@pytest.mark.parametrize(
    "path",
    [
        "/etc/pip.conf; touch /x #",
        "/etc/$(id)/pip.conf",
        "/etc/{{x}}/pip.conf",
        "/etc/pip conf",
        "etc/pip.conf",
    ],
)
def test_render_kolla_header_refuses_a_path_that_is_not_plain(path, tmp_path):
    marker = tmp_path / "x"
    with pytest.raises(CommandExecutionError, match="image_pip_conf"):
        pipconf.render_kolla_header({"global": {"timeout": 5}}, path.replace("/x", str(marker)))
    assert not marker.exists()


def test_render_kolla_header_quotes_the_paths():
    header = pipconf.render_kolla_header({"global": {"timeout": 5}}, "/etc/pip-dir/pip.conf")
    (run,) = [line for line in header.splitlines() if line.startswith("RUN ")]
    assert run.startswith("RUN mkdir -p /etc/pip-dir && echo ") and run.endswith(
        "| base64 -d > /etc/pip-dir/pip.conf"
    )


# -- issue 12: operator policy ------------------------------------------------------


def _with_policy(monkeypatch, policy):
    monkeypatch.setattr(pipconf, "__salt__", {"config.get": policy_getter(policy)}, raising=False)


def test_absolute_scope_outside_policy_is_refused_then_allowed(monkeypatch, tmp_path):
    _with_policy(monkeypatch, {})
    with pytest.raises(CommandExecutionError) as err:
        pipconf.plan_config("/etc/profile.d/zz.sh", {"global": {"timeout": 5}})
    assert "pip scope" in str(err.value) and "opsalt:policy:pipconf:allowed_paths" in str(err.value)
    target = tmp_path / "profile.d" / "zz.sh"
    with pytest.raises(CommandExecutionError, match="outside the allowed paths"):
        pipconf.plan_config(str(target), {"global": {"timeout": 5}})
    _with_policy(monkeypatch, {"allowed_paths": [str(tmp_path / "profile.d")]})
    assert pipconf.plan_config(str(target), {"global": {"timeout": 5}})["changes"]["diff"]


def test_venv_scope_default_roots_and_policy(monkeypatch, tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    _with_policy(monkeypatch, {})
    with pytest.raises(
        CommandExecutionError, match="pip scope venv.*outside the allowed paths \\(/opt, /srv\\)"
    ):
        pipconf.resolve(f"venv:{venv}")
    _with_policy(monkeypatch, {"pipconf": {"allowed_paths": [str(tmp_path)]}})
    assert pipconf.resolve(f"venv:{venv}")["path"] == str(venv / "pip.conf")


def test_kolla_paths_default_root_and_policy(monkeypatch, tmp_path):
    kolla = {
        "template_override": str(tmp_path / "base_header.j2"),
        "build_conf": str(tmp_path / "kolla-build.conf"),
        "pip": {"global": {"index-url": "http://127.0.0.1:8081/simple"}},
    }
    _with_policy(monkeypatch, {})
    with pytest.raises(
        CommandExecutionError, match="kolla build_conf.*outside the allowed paths \\(/etc/kolla\\)"
    ):
        pipconf.plan_kolla(kolla)
    _with_policy(monkeypatch, {"allowed_paths": [str(tmp_path)]})
    plan = pipconf.plan_kolla(kolla)
    assert set(plan["changes"]) == {kolla["template_override"], kolla["build_conf"]}
    pipconf.apply_kolla(kolla)
    assert oct(os.stat(kolla["template_override"]).st_mode & 0o777) == "0o600"
    assert pipconf.plan_kolla(kolla)["changes"] == {}


@pytest.mark.parametrize("key", ["index-url", "extra-index-url", "find-links"])
def test_index_host_policy_default_is_loopback_only(monkeypatch, tmp_path, key):
    path = str(tmp_path / "pip.conf")
    _with_policy(monkeypatch, {"allowed_paths": [str(tmp_path)]})
    with pytest.raises(CommandExecutionError) as err:
        pipconf.plan_config(path, {"global": {key: "https://evil.example/simple"}})
    assert f"[global] {key}" in str(err.value) and "opsalt:policy:pipconf:index_hosts" in str(err.value)
    assert pipconf.plan_config(path, {"global": {key: "http://127.0.0.1:8081/simple"}})["changes"]
    _with_policy(
        monkeypatch, {"allowed_paths": [str(tmp_path)], "pipconf": {"index_hosts": ["evil.example"]}}
    )
    assert pipconf.plan_config(path, {"global": {key: "https://evil.example/simple"}})["changes"]
    with pytest.raises(CommandExecutionError, match="not allowed by policy"):
        pipconf.plan_config(path, {"global": {key: "http://127.0.0.1:8081/simple"}})


def test_pypirc_repository_host_is_policy_checked(monkeypatch, tmp_path):
    _with_policy(monkeypatch, {"allowed_paths": [str(tmp_path)]})
    with pytest.raises(CommandExecutionError, match="repository n: index host 'evil.example'"):
        pipconf.plan_pypirc(str(tmp_path / ".pypirc"), {"n": {"repository": "https://evil.example/"}})


def test_policy_is_read_from_the_minion_config_only(monkeypatch, tmp_path):
    # a pillar that "allows" a path changes nothing: only config.get with
    # omit_pillar/grains/master is asked (policy_getter asserts it)
    _with_policy(monkeypatch, {})
    monkeypatch.setattr(
        pipconf, "__pillar__", {"opsalt": {"policy": {"allowed_paths": ["/"]}}}, raising=False
    )
    with pytest.raises(CommandExecutionError, match="outside the allowed paths"):
        pipconf.plan_config(str(tmp_path / "pip.conf"), {"global": {"timeout": 5}})


# -- issue 12: secrets (finding 5) ------------------------------------------------


def test_rotating_a_pypirc_password_shows_neither_password(tmp_path):
    old, new = "0ld-Secret-pw", "n3w-Secret-pw"
    path = str(tmp_path / ".pypirc")
    repo = "http://127.0.0.1:8081/repository/pypi-hosted/"
    pipconf.apply_pypirc(path, {"nexus": {"repository": repo, "username": "deploy", "password": old}})
    plan = pipconf.plan_pypirc(path, {"nexus": {"repository": repo, "username": "deploy", "password": new}})
    assert plan["changes"] and old not in str(plan) and new not in str(plan)
    done = pipconf.apply_pypirc(path, {"nexus": {"repository": repo, "username": "deploy", "password": new}})
    assert old not in str(done) and new not in str(done)
    assert f"password = {new}\n" in open(path, encoding="utf-8").read()


def test_url_credentials_masked_on_both_sides_of_the_diff(tmp_path):
    path = tmp_path / "pip.conf"
    path.write_text("[global]\nindex-url = http://deploy:0ld-pw@127.0.0.1:8081/simple\n")
    plan = pipconf.plan_config(
        str(path), {"global": {"index-url": "http://deploy:n3w-pw@127.0.0.1:8082/simple"}}
    )
    diff = plan["changes"]["diff"]
    assert "-index-url = http://***@127.0.0.1:8081/simple" in diff
    assert "+index-url = http://***@127.0.0.1:8082/simple" in diff
    assert "0ld-pw" not in diff and "n3w-pw" not in diff and "deploy" not in diff


def test_settings_come_from_the_pillar_at_run_time(monkeypatch, tmp_path):
    path = str(tmp_path / "pip.conf")
    pillar = {"pipconf": {"configs": {path: {"settings": {"global": {"timeout": 9}}, "mode": "0640"}}}}
    monkeypatch.setattr(pipconf, "__pillar__", pillar, raising=False)
    done = pipconf.apply_config(path, pillar=True)
    assert done["changes"] and open(path, encoding="utf-8").read() == "[global]\ntimeout = 9\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"
    with pytest.raises(CommandExecutionError, match="no pipconf:configs entry"):
        pipconf.plan_config(str(tmp_path / "other.conf"), pillar=True)


def test_state_id_is_a_slug():
    assert pipconf.state_id("config", "user:builder").startswith("pipconf-config-user_builder-")
    assert pipconf.state_id("config", "global") == "pipconf-config-global"
    evil = pipconf.state_id("config", "x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny")
    assert re.fullmatch(r"pipconf-config-[A-Za-z0-9_.@-]+", evil)
