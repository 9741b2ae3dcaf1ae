"""
pipconf through the real salt-minion: the pillar comes from the demo asset API
through ops_http_json, ``state.apply pipconf`` writes a throwaway user's
pip.conf and .pypirc and the kolla files, pip then downloads from the local
pypiserver only because of that file, and a second run changes nothing.
"""

import configparser
import json
import os
import re

import pytest

from tests.support.pypi_index import (
    PASSWORD,
    USERNAME,
    isolated_pip,
    pipconf_wheels,
    pypi_hosted,
)
from tests.support.unix_user import unix_user


@pytest.fixture
def throwaway_user(tmp_path):
    """A real system user whose home is under tmp_path, removed afterwards."""
    with unix_user(tmp_path / "home", prefix="opsalt-pip-") as entry:
        yield entry


@pytest.fixture(autouse=True)
def pipconf_policy(salt_minion, tmp_path):
    """
    The operator's policy in a ``minion.d`` file of the minion's config dir
    (read by each ``salt-call``; the asset API cannot write there): pipconf
    may also write under this test's tmp_path and use the loopback index.
    Removed afterwards.
    """
    path = os.path.join(salt_minion.config_dir, "minion.d", "zz-opsalt-pipconf-policy.conf")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    policy = {"pipconf": {"allowed_paths": [str(tmp_path)], "index_hosts": ["127.0.0.1"]}}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"opsalt": {"policy": policy}}, handle)
    try:
        yield policy
    finally:
        os.unlink(path)


@pytest.fixture
def pipconf_pillar(set_pillar):
    """
    ``pipconf_pillar(value)`` sets the pipconf section; it is emptied again
    afterwards so other tests' ``state.apply`` runs do not see it.
    """
    try:
        yield lambda value: set_pillar("pipconf", value)
    finally:
        set_pillar("pipconf", {})


POISON = "x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny"


def _states(ret):
    assert isinstance(ret.data, dict), ret
    return {value["__id__"]: value for value in ret.data.values()}


def _by_name(ret, name, function):
    (state,) = [s for key, s in ret.data.items() if s["name"] == name and key.endswith(f"_|-{function}")]
    return state


def _pillar(user, index, kolla_dir):
    return {
        "configs": {
            f"user:{user.pw_name}": {
                "settings": {
                    "global": {
                        "index-url": index.url_with_credentials,
                        "trusted-host": f"127.0.0.1:{index.port}",
                        "timeout": 20,
                    }
                },
            }
        },
        "pypirc": {
            f"user:{user.pw_name}": {
                "repositories": {
                    "nexus": {"repository": index.upload_url, "username": USERNAME, "password": PASSWORD}
                }
            }
        },
        "kolla": {
            "enabled": True,
            "config_dir": str(kolla_dir),
            "template_override": str(kolla_dir / "base_header.j2"),
            "build_conf": str(kolla_dir / "kolla-build.conf"),
            "pip": {"global": {"index-url": index.url_with_credentials}},
            "sources": {
                "neutron-base": {
                    "type": "git",
                    "location": "https://git.example.com/ops/neutron.git",
                    "reference": "stable/rocky-ops",
                }
            },
        },
    }


def test_state_apply_from_asset_api_pillar(
    salt_call_cli, salt_minion, pipconf_pillar, pypi_hosted, throwaway_user, tmp_path
):
    home = throwaway_user.pw_dir
    conf = os.path.join(home, ".config", "pip", "pip.conf")
    kolla_dir = tmp_path / "kolla"
    assert (
        isolated_pip(
            home, "download", "--no-deps", "--retries", "0", "-d", str(tmp_path / "before"), "opsalt-probe"
        ).returncode
        != 0
    )

    pipconf_pillar(_pillar(throwaway_user, pypi_hosted, kolla_dir))
    pillar = salt_call_cli.run("pillar.get", "pipconf", "unmask=True")
    assert (
        pillar.data["configs"][f"user:{throwaway_user.pw_name}"]["settings"]["global"]["index-url"]
        == pypi_hosted.url_with_credentials
    )

    dry = salt_call_cli.run("state.apply", "pipconf", "test=True")
    assert dry.returncode == 0, dry
    assert all(s["result"] is None for s in _states(dry).values() if s["changes"]), dry.data
    assert not os.path.exists(conf) and not kolla_dir.exists()

    first = salt_call_cli.run("state.apply", "pipconf")
    assert first.returncode == 0, first
    states = _states(first)
    config_state = _by_name(first, f"user:{throwaway_user.pw_name}", "managed")
    assert config_state["__id__"].startswith(f"pipconf-config-user_{throwaway_user.pw_name}-")
    assert config_state["result"] is True and config_state["changes"]["diff"]
    assert PASSWORD not in str(first.data)
    assert all(s["result"] is True for s in states.values()), first.data

    st = os.stat(conf)
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (throwaway_user.pw_uid, "0o600")
    assert os.stat(os.path.dirname(conf)).st_uid == throwaway_user.pw_uid
    pypirc = os.path.join(home, ".pypirc")
    assert (os.stat(pypirc).st_uid, oct(os.stat(pypirc).st_mode & 0o777)) == (throwaway_user.pw_uid, "0o600")
    assert f"password = {PASSWORD}\n" in open(pypirc, encoding="utf-8").read()
    build_conf = configparser.RawConfigParser(default_section="none")
    build_conf.read(kolla_dir / "kolla-build.conf")
    assert dict(build_conf.items("neutron-base")) == {
        "type": "git",
        "location": "https://git.example.com/ops/neutron.git",
        "reference": "stable/rocky-ops",
    }
    assert build_conf.get("DEFAULT", "template_override") == str(kolla_dir / "base_header.j2")
    assert (kolla_dir / "base_header.j2").read_text().startswith("{% extends parent_template %}")

    fetched = isolated_pip(home, "download", "--no-deps", "-d", str(tmp_path / "after"), "opsalt-probe")
    assert fetched.returncode == 0, fetched.stderr

    second = salt_call_cli.run("state.apply", "pipconf")
    assert second.returncode == 0, second
    assert {sid: s["changes"] for sid, s in _states(second).items() if s["changes"]} == {}

    clean = salt_call_cli.run("state.apply", "pipconf.clean")
    assert clean.returncode == 0, clean
    assert not os.path.exists(pypirc) and not (kolla_dir / "kolla-build.conf").exists()
    assert "index-url" not in open(conf, encoding="utf-8").read()


@pytest.mark.parametrize(
    "bad_settings, fragment",
    [
        (
            {"global": {"index-url": f"ftp://{USERNAME}:{PASSWORD}@127.0.0.1/simple"}},
            "not an http:// or https:// URL",
        ),
        ({"global": {"trusted-host": "http://127.0.0.1/"}}, "not host[:port]"),
        ({"global": {"index-urls": "http://127.0.0.1/simple"}}, "no option --index-urls"),
        (
            {"global": {"index_url": "http://127.0.0.1/simple", "index-url": "http://127.0.0.1/simple"}},
            "repeated key",
        ),
    ],
    ids=["not-http", "bad-trusted-host", "unknown-option", "repeated-key"],
)
def test_bad_pillar_fails_and_leaves_file_byte_identical(
    salt_call_cli, pipconf_pillar, tmp_path, bad_settings, fragment
):
    conf = tmp_path / "pip.conf"
    original = (
        f"# hand-written\n[global]\nindex-url = http://{USERNAME}:{PASSWORD}@127.0.0.1:1/simple\n".encode()
    )
    conf.write_bytes(original)
    os.chmod(conf, 0o600)
    pipconf_pillar({"configs": {str(conf): {"settings": bad_settings}}})
    ret = salt_call_cli.run("state.apply", "pipconf")
    assert ret.returncode != 0
    (state,) = _states(ret).values()
    assert state["result"] is False
    assert fragment in state["comment"] and state["comment"].startswith("Nothing changed")
    assert PASSWORD not in str(ret.data)
    assert conf.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["pip.conf"]


def _low_chunk(salt_call_cli):
    low = salt_call_cli.run("state.show_low_sls", "pipconf")
    assert low.returncode == 0, low
    (chunk,) = low.data
    return chunk


def test_poisoned_scope_key_from_the_asset_api_adds_no_state(salt_call_cli, pipconf_pillar, throwaway_user):
    """Finding 1 through the real minion: the document served by the asset API."""
    settings = {"settings": {"global": {"timeout": 5}}}
    pipconf_pillar({"configs": {f"user:{throwaway_user.pw_name}": settings}})
    benign = _low_chunk(salt_call_cli)
    pipconf_pillar({"configs": {POISON: settings}})
    poisoned = _low_chunk(salt_call_cli)
    assert re.fullmatch(r"pipconf-config-[A-Za-z0-9_.@-]+", poisoned["__id__"])
    assert poisoned["name"] == POISON
    ignored = ("__id__", "name")
    assert {k: v for k, v in poisoned.items() if k not in ignored} == {
        k: v for k, v in benign.items() if k not in ignored
    }
    dry = salt_call_cli.run("state.apply", "pipconf", "test=True")
    (state,) = _states(dry).values()
    assert state["result"] is False and state["comment"].startswith("Nothing changed")
    assert not os.path.exists("/tmp/PWNED")
