"""
The pipconf states over the real execution module (files under tmp_path),
each case in both modes: ``test=True`` must report the same changes and
leave the disk byte-identical.
"""

import os

import pytest

from tests.support.components import load_component

SECRET = "n3xus-Dep1oy-pw"
GROUP = f"http://deploy:{SECRET}@127.0.0.1:8081/repository/pypi-group/simple"


pipconf_module = load_component("_modules", "pipconf")
pipconf_state = load_component("_states", "pipconf")


def _policy_from(policy):
    def config_get(key, default=None, **kwargs):
        assert kwargs.get("omit_pillar") is True
        if key == "opsalt:backups:keep":
            return default
        assert key == "opsalt:policy"
        return policy

    return config_get


@pytest.fixture
def configure_loader_modules(tmp_path):
    salt_funcs = {
        f"pipconf.{kind}_{what}": getattr(pipconf_module, f"{kind}_{what}")
        for kind in ("plan", "apply")
        for what in ("config", "pypirc", "kolla", "absent")
    }
    # The operator policy (minion config) allows the test's directory.
    policy = {"allowed_paths": [str(tmp_path)], "pipconf": {"index_hosts": ["127.0.0.1", "nexus"]}}
    return {
        pipconf_state: {"__salt__": salt_funcs, "__opts__": {"test": False}},
        pipconf_module: {"__salt__": {"config.get": _policy_from(policy)}, "__pillar__": {}},
    }


def _apply(func, test, **kwargs):
    with_opts = dict(pipconf_state.__opts__, test=test)
    original = pipconf_state.__opts__
    pipconf_state.__opts__ = with_opts
    try:
        return func(**kwargs)
    finally:
        pipconf_state.__opts__ = original


def _snapshot(directory):
    return {
        name: (
            open(os.path.join(directory, name), "rb").read(),
            os.stat(os.path.join(directory, name)).st_mode,
        )
        for name in sorted(os.listdir(directory))
    }


@pytest.mark.parametrize("test", [False, True])
def test_managed_creates_file_with_secret_mode_and_redacted_diff(tmp_path, test):
    path = str(tmp_path / "pip.conf")
    ret = _apply(
        pipconf_state.managed,
        test,
        name=path,
        settings={"global": {"index-url": GROUP, "trusted-host": "127.0.0.1:8081"}},
    )
    assert ret["result"] is (None if test else True)
    assert "+index-url = http://***@127.0.0.1:8081/repository/pypi-group/simple" in ret["changes"]["diff"]
    assert SECRET not in str(ret)
    if test:
        assert "would be created" in ret["comment"]
        assert not os.path.exists(path)
    else:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        again = _apply(
            pipconf_state.managed,
            False,
            name=path,
            settings={"global": {"index-url": GROUP, "trusted-host": "127.0.0.1:8081"}},
        )
        assert again["changes"] == {} and again["result"] is True


@pytest.mark.parametrize("test", [False, True])
def test_managed_update_keeps_comments_and_backs_up(tmp_path, test):
    path = tmp_path / "pip.conf"
    path.write_text("# hand-written\n[global]\ntimeout = 30\n")
    os.chmod(path, 0o644)
    ret = _apply(
        pipconf_state.managed,
        test,
        name=str(path),
        settings={"global": {"index-url": "https://nexus/simple"}},
    )
    assert ret["changes"]["diff"].count("\n+index-url = https://nexus/simple") == 1
    assert "mode" not in ret["changes"]
    if test:
        assert ret["result"] is None
        assert path.read_text() == "# hand-written\n[global]\ntimeout = 30\n"
    else:
        assert ret["result"] is True
        assert (
            path.read_text() == "# hand-written\n[global]\ntimeout = 30\nindex-url = https://nexus/simple\n"
        )
        backups = [n for n in os.listdir(tmp_path) if n.endswith(".opsalt-bak")]
        assert len(backups) == 1 and backups[0] in ret["comment"]


@pytest.mark.parametrize("test", [False, True])
def test_managed_fixes_mode_only(tmp_path, test):
    path = tmp_path / "pip.conf"
    path.write_text(f"[global]\nindex-url = {GROUP}\n")
    os.chmod(path, 0o644)
    ret = _apply(pipconf_state.managed, test, name=str(path), settings={"global": {"index-url": GROUP}})
    assert ret["changes"] == {"mode": {"old": "0644", "new": "0600"}}
    assert oct(os.stat(path).st_mode & 0o777) == ("0o644" if test else "0o600")


BAD = [
    {"global": {"index-url": f"ftp://deploy:{SECRET}@nexus/simple"}},
    {"global": {"trusted-host": "https://nexus/"}},
    {"global": {"index-urls": "https://nexus/simple"}},
    {"global": {"index_url": "https://nexus/simple", "index-url": "https://nexus/simple"}},
]


@pytest.mark.parametrize("test", [False, True])
@pytest.mark.parametrize(
    "settings", BAD, ids=["not-http", "bad-trusted-host", "unknown-option", "repeated-key"]
)
def test_managed_bad_input_fails_and_leaves_file_identical(tmp_path, test, settings):
    path = tmp_path / "pip.conf"
    path.write_text(f"[global]\nindex-url = {GROUP}\n")
    os.chmod(path, 0o600)
    before = _snapshot(tmp_path)
    ret = _apply(pipconf_state.managed, test, name=str(path), settings=settings)
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert ret["comment"].startswith("Nothing changed: invalid pip settings")
    assert SECRET not in ret["comment"]
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("test", [False, True])
def test_managed_refuses_to_merge_into_a_file_pip_refuses(tmp_path, test):
    path = tmp_path / "pip.conf"
    path.write_text("[global]\ntimeout = 1\ntimeout = 2\n")
    before = _snapshot(tmp_path)
    ret = _apply(pipconf_state.managed, test, name=str(path), settings={"global": {"retries": 3}})
    assert ret["result"] is False and "appears twice" in ret["comment"] and "exclusive" in ret["comment"]
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("test", [False, True])
def test_pypirc_created_0600_without_password_in_changes(tmp_path, test):
    path = str(tmp_path / ".pypirc")
    repos = {
        "nexus": {
            "repository": "http://127.0.0.1:8081/repository/pypi-hosted/",
            "username": "deploy",
            "password": SECRET,
        }
    }
    ret = _apply(pipconf_state.pypirc, test, name=path, repositories=repos)
    assert ret["result"] is (None if test else True)
    assert "+password = ***" in ret["changes"]["diff"]
    assert SECRET not in str(ret)
    if test:
        assert not os.path.exists(path)
    else:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert f"password = {SECRET}\n" in open(path, encoding="utf-8").read()
        assert _apply(pipconf_state.pypirc, False, name=path, repositories=repos)["changes"] == {}


@pytest.mark.parametrize("test", [False, True])
def test_pypirc_bad_input(tmp_path, test):
    path = tmp_path / ".pypirc"
    path.write_text("keep me\n")
    ret = _apply(
        pipconf_state.pypirc,
        test,
        name=str(path),
        repositories={"nexus": {"repository": "scp://x/", "password": SECRET}},
    )
    assert ret["result"] is False and "not an http" in ret["comment"] and SECRET not in ret["comment"]
    assert path.read_text() == "keep me\n"


@pytest.mark.parametrize("test", [False, True])
def test_pypirc_needs_a_mode(tmp_path, test):
    # .pypirc holds passwords: no "keep whatever mode" for it
    ret = _apply(
        pipconf_state.pypirc,
        test,
        name=str(tmp_path / ".pypirc"),
        mode=None,
        repositories={"nexus": {"repository": "https://127.0.0.1:8081/", "password": SECRET}},
    )
    assert ret["result"] is False and ret["comment"].startswith("Nothing changed: mode")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("test", [False, True])
@pytest.mark.parametrize("mode, expected", [(600, "0o600"), ("0640", "0o640"), ("644", "0o644")])
def test_managed_mode_spellings(tmp_path, test, mode, expected):
    path = tmp_path / "pip.conf"
    ret = _apply(pipconf_state.managed, test, name=str(path), settings={"global": {"timeout": 5}}, mode=mode)
    assert ret["result"] is (None if test else True)
    if not test:
        assert oct(os.stat(path).st_mode & 0o777) == expected


@pytest.mark.parametrize("test", [False, True])
@pytest.mark.parametrize("mode", ["rw-------", "0999", 99999])
def test_managed_bad_mode_writes_nothing(tmp_path, test, mode):
    ret = _apply(
        pipconf_state.managed,
        test,
        name=str(tmp_path / "pip.conf"),
        settings={"global": {"timeout": 5}},
        mode=mode,
    )
    assert ret["result"] is False and ret["comment"].startswith("Nothing changed: mode")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("test", [False, True])
def test_managed_keeps_the_owner_of_an_existing_file(tmp_path, test):
    path = tmp_path / "pip.conf"
    path.write_text("[global]\ntimeout = 1\n")
    os.chown(path, 65534, 65534)  # nobody:nogroup, not the user the test runs as
    ret = _apply(pipconf_state.managed, test, name=str(path), settings={"global": {"timeout": 2}})
    assert ret["result"] is (None if test else True)
    assert "user" not in ret["changes"] and "group" not in ret["changes"]
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert path.read_text() == ("[global]\ntimeout = 1\n" if test else "[global]\ntimeout = 2\n")


def test_kolla_second_run_names_both_files_as_already_as_wanted(tmp_path):
    kolla = {
        "template_override": str(tmp_path / "kolla" / "base_header.j2"),
        "build_conf": str(tmp_path / "kolla" / "kolla-build.conf"),
        "pip": {"global": {"index-url": GROUP}},
        "sources": {
            "neutron-base": {
                "type": "git",
                "location": "https://git.example.com/neutron.git",
                "reference": "main",
            }
        },
    }
    first = _apply(pipconf_state.kolla, False, name="kolla", kolla=kolla)
    assert first["result"] is True and first["changes"], first
    second = _apply(pipconf_state.kolla, False, name="kolla", kolla=kolla)
    assert second == {
        "name": "kolla",
        "result": True,
        "changes": {},
        "comment": f"Already as wanted: {kolla['template_override']}, {kolla['build_conf']}",
    }
