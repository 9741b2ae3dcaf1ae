"""
pipconf through Salt's own loaders, in process, proven with the real pip and
twine against real pypiserver indexes on 127.0.0.1 (tests/support/pypi_index.py):
pip succeeds only because of the file the state wrote.

pip runs with every PIP_* variable removed and HOME / XDG_CONFIG_HOME /
XDG_CONFIG_DIRS in a temporary directory, so the machine's own pip config
(apart from /etc/pip.conf's ``cert``) cannot help it.
"""

import os
import subprocess
import sys

import pytest

from tests.support.loaders import make_loaders
from tests.support.procs import free_port
from tests.support.pypi_index import (
    PASSWORD,
    USERNAME,
    isolated_pip,
    pipconf_wheels,
    pypi_group,
    pypi_hosted,
    pypi_proxy,
)


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    # The operator policy (minion config) lets these tests write under the
    # test's temporary directories and use the loopback indexes.
    policy = {"allowed_paths": [str(tmp_path_factory.getbasetemp())]}
    return make_loaders(tmp_path_factory.mktemp("pipconf-loaders"), opsalt={"policy": policy})


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    return path


def _user_conf(home):
    return str(home / ".config" / "pip" / "pip.conf")


def _download(home, dest, *requirements, python=None):
    return isolated_pip(
        home,
        "download",
        "--no-deps",
        "--timeout",
        "10",
        "--retries",
        "0",
        "-d",
        str(dest),
        *requirements,
        python=python,
    )


def _managed(loaders, name, settings, **kwargs):
    return loaders.states.pipconf.managed(name=name, settings=settings, **kwargs).full_return


def test_isolation_sees_no_index_config(home):
    listed = isolated_pip(home, "config", "list")
    assert listed.returncode == 0, listed.stderr
    keys = {line.split("=", 1)[0] for line in listed.stdout.splitlines() if "=" in line}
    assert not any(k.endswith(("index-url", "find-links", "trusted-host")) for k in keys), listed.stdout


def test_pip_download_succeeds_only_because_of_the_state_file(loaders, pypi_hosted, home, tmp_path):
    before = _download(home, tmp_path / "before", "opsalt-probe")
    assert before.returncode != 0, before.stdout
    assert not os.path.exists(tmp_path / "before" / "opsalt_probe-1.0.0-py3-none-any.whl")

    settings = {
        "global": {
            "index-url": pypi_hosted.url_with_credentials,
            "trusted-host": f"127.0.0.1:{pypi_hosted.port}",
            "timeout": 20,
        }
    }
    ret = _managed(loaders, _user_conf(home), settings)
    assert ret["result"] is True, ret
    assert PASSWORD not in str(ret)
    assert "+index-url = http://***@127.0.0.1" in ret["changes"]["diff"]
    assert oct(os.stat(_user_conf(home)).st_mode & 0o777) == "0o600"

    after = _download(home, tmp_path / "after", "opsalt-probe")
    assert after.returncode == 0, after.stderr
    assert os.path.exists(tmp_path / "after" / "opsalt_probe-1.0.0-py3-none-any.whl")

    again = _managed(loaders, _user_conf(home), settings)
    assert again["result"] is True and again["changes"] == {}


def test_wrong_password_in_the_file_makes_pip_fail(loaders, pypi_hosted, home, tmp_path):
    wrong = pypi_hosted.url_with_credentials.replace(PASSWORD, "not-the-password")
    ret = _managed(loaders, _user_conf(home), {"global": {"index-url": wrong}})
    assert ret["result"] is True
    result = _download(home, tmp_path / "dl", "opsalt-probe")
    assert result.returncode != 0
    assert "from versions: none" in result.stderr
    assert "not-the-password" not in result.stdout + result.stderr
    right = _managed(loaders, _user_conf(home), {"global": {"index-url": pypi_hosted.url_with_credentials}})
    assert right["result"] is True and right["changes"]
    assert _download(home, tmp_path / "dl", "opsalt-probe").returncode == 0


def test_yaml_boolean_progress_bar_is_a_word_pip_accepts(loaders, pypi_hosted, home, tmp_path):
    # `progress-bar: off` in YAML reaches the state as False; pip refuses a
    # file that says "false" ("invalid choice") and would not run at all.
    settings = {"global": {"index-url": pypi_hosted.url_with_credentials, "progress-bar": False}}
    ret = _managed(loaders, _user_conf(home), settings)
    assert ret["result"] is True, ret
    assert "[global] progress-bar = off" in ret["comment"]
    assert "progress-bar = off\n" in open(_user_conf(home), encoding="utf-8").read()
    result = _download(home, tmp_path / "dl", "opsalt-probe")
    assert result.returncode == 0, result.stderr
    assert "invalid choice" not in result.stderr


def test_extra_index_in_a_command_section_reaches_the_proxy(loaders, pypi_hosted, pypi_proxy, home, tmp_path):
    base = {"global": {"index-url": pypi_hosted.url_with_credentials}}
    assert _managed(loaders, _user_conf(home), base)["result"] is True
    without = _download(home, tmp_path / "without", "opsalt-upstream")
    assert without.returncode != 0

    ret = _managed(loaders, _user_conf(home), {"download": {"extra-index-url": [pypi_proxy.url]}})
    assert ret["result"] is True
    text = open(_user_conf(home), encoding="utf-8").read()
    assert "[global]" in text and "[download]" in text  # the first run's settings are kept
    both = _download(home, tmp_path / "with", "opsalt-upstream", "opsalt-probe")
    assert both.returncode == 0, both.stderr
    assert sorted(os.listdir(tmp_path / "with")) == [
        "opsalt_probe-1.0.0-py3-none-any.whl",
        "opsalt_upstream-2.0.0-py3-none-any.whl",
    ]


def test_one_group_url_serves_hosted_and_proxied_packages(loaders, pypi_group, home, tmp_path):
    ret = _managed(loaders, _user_conf(home), {"global": {"index-url": pypi_group.url_with_credentials}})
    assert ret["result"] is True
    both = _download(home, tmp_path / "dl", "opsalt-probe", "opsalt-upstream")
    assert both.returncode == 0, both.stderr
    assert sorted(os.listdir(tmp_path / "dl")) == [
        "opsalt_probe-1.0.0-py3-none-any.whl",
        "opsalt_upstream-2.0.0-py3-none-any.whl",
    ]


def test_newer_user_file_shadows_legacy_and_effective_says_so(loaders, pypi_hosted, home, tmp_path):
    legacy = home / ".pip" / "pip.conf"
    legacy.parent.mkdir()
    legacy.write_text("[global]\nindex-url = http://127.0.0.1:9/simple/\nretries = 0\n")
    assert _download(home, tmp_path / "legacy", "opsalt-probe").returncode != 0

    assert (
        _managed(loaders, _user_conf(home), {"global": {"index-url": pypi_hosted.url_with_credentials}})[
            "result"
        ]
        is True
    )
    assert _download(home, tmp_path / "new", "opsalt-probe").returncode == 0

    env = {"XDG_CONFIG_HOME": str(home / ".config"), "XDG_CONFIG_DIRS": str(home / "xdg-dirs")}
    report = loaders.modules.pipconf.effective(home=str(home), environ=env)
    assert report["options"]["index-url"]["source"] == f"{_user_conf(home)} [global]"
    assert report["options"]["index-url"]["shadowed"] == [f"{legacy} [global]"]
    assert report["options"]["index-url"]["value"].startswith("http://***@127.0.0.1")
    assert report["options"]["retries"]["source"] == f"{legacy} [global]"
    assert PASSWORD not in str(report)


def test_check_index_against_the_real_index(loaders, pypi_hosted, home):
    check = loaders.modules.pipconf.check_index
    assert check(pypi_hosted.url_with_credentials, project="opsalt-probe")["status"] == "reachable"
    no_auth = check(pypi_hosted.url, project="opsalt-probe")
    assert no_auth["status"] == "needs_auth" and no_auth["http_status"] == 401
    wrong = check(pypi_hosted.url_with_credentials.replace(PASSWORD, "nope"), project="opsalt-probe")
    assert wrong["status"] == "needs_auth" and "refused" in wrong["message"]
    assert check(pypi_hosted.url_with_credentials, project="no-such-project")["status"] == "not_found"
    assert check(f"http://127.0.0.1:{free_port()}/simple/", timeout=3)["status"] == "unreachable"
    # The index URL of the config in force, read from the home the state wrote.
    assert (
        _managed(loaders, _user_conf(home), {"global": {"index-url": pypi_hosted.url_with_credentials}})[
            "result"
        ]
        is True
    )
    env = {"XDG_CONFIG_HOME": str(home / ".config"), "XDG_CONFIG_DIRS": str(home / "xdg-dirs")}
    from_config = check(project="opsalt-probe", home=str(home), environ=env)
    assert from_config["status"] == "reachable"
    assert PASSWORD not in str(from_config)
    # A bare URL on the configured host borrows the config's credentials.
    assert (
        check(pypi_hosted.url, project="opsalt-probe", home=str(home), environ=env)["status"] == "reachable"
    )


def test_pypirc_state_lets_twine_upload_then_pip_installs_it(
    loaders, pypi_hosted, pipconf_wheels, home, tmp_path
):
    repos = {"nexus": {"repository": pypi_hosted.upload_url, "username": USERNAME, "password": PASSWORD}}
    ret = loaders.states.pipconf.pypirc(name=str(home / ".pypirc"), repositories=repos).full_return
    assert ret["result"] is True, ret
    assert PASSWORD not in str(ret)
    assert oct(os.stat(home / ".pypirc").st_mode & 0o777) == "0o600"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "TWINE_"))}
    env["HOME"] = str(home)
    upload = subprocess.run(
        [
            sys.executable,
            "-m",
            "twine",
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "-r",
            "nexus",
            pipconf_wheels["probe-next"],
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert upload.returncode == 0, upload.stdout + upload.stderr
    assert PASSWORD not in upload.stdout + upload.stderr

    assert (
        _managed(loaders, _user_conf(home), {"global": {"index-url": pypi_hosted.url_with_credentials}})[
            "result"
        ]
        is True
    )
    fetched = _download(home, tmp_path / "dl", "opsalt-probe==1.1.0")
    assert fetched.returncode == 0, fetched.stderr
    assert os.listdir(tmp_path / "dl") == ["opsalt_probe-1.1.0-py3-none-any.whl"]


def test_kolla_header_bakes_a_pip_conf_that_pip_uses(loaders, pypi_hosted, home, tmp_path):
    """
    Render the override the way kolla-build does (Jinja, extending the
    image's Dockerfile template), run its RUN line's shell command, and let
    pip use the file it writes.
    """
    import jinja2

    image_conf = home / ".config" / "pip" / "pip.conf"
    settings = {
        "global": {
            "index-url": pypi_hosted.url_with_credentials,
            "trusted-host": f"127.0.0.1:{pypi_hosted.port}",
        }
    }
    override = loaders.modules.pipconf.render_kolla_header(settings, path=str(image_conf))
    parent = "FROM debian:12\n{% block base_header %}LABEL kolla_version=test{% endblock %}\nRUN true\n"
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"base/Dockerfile.j2": parent, "override.j2": override})
    )
    dockerfile = env.get_template("override.j2").render(
        parent_template=env.get_template("base/Dockerfile.j2")
    )
    lines = [line for line in dockerfile.splitlines() if line]
    assert lines[:2] == ["FROM debian:12", "LABEL kolla_version=test"]  # super() keeps kolla's own header
    assert lines[2].startswith("RUN mkdir -p ") and lines[3] == "RUN true"
    assert PASSWORD not in dockerfile  # base64 in the Dockerfile, not plain text
    (run_line,) = [line for line in dockerfile.splitlines() if "base64 -d" in line]
    subprocess.run(["sh", "-c", run_line[len("RUN ") :]], check=True)
    assert image_conf.read_text() == loaders.modules.pipconf.render(settings)
    fetched = _download(home, tmp_path / "dl", "opsalt-probe")
    assert fetched.returncode == 0, fetched.stderr


def test_kolla_build_conf_source_overrides(loaders):
    render = loaders.modules.pipconf.render_kolla_conf
    text = render(
        {
            "neutron-base": {
                "type": "git",
                "location": "https://git.example.com/ops/neutron.git",
                "reference": "stable/rocky-ops",
            }
        },
        {"base": "ubuntu", "install_type": "source"},
        "/etc/kolla/base_header.j2",
    )
    import configparser

    parser = configparser.RawConfigParser()
    parser.read_string(text)
    assert parser.get("DEFAULT", "template_override") == "/etc/kolla/base_header.j2"
    assert dict(parser.items("neutron-base", raw=True)) == {
        "base": "ubuntu",
        "install_type": "source",
        "template_override": "/etc/kolla/base_header.j2",
        "type": "git",
        "location": "https://git.example.com/ops/neutron.git",
        "reference": "stable/rocky-ops",
    }
    with pytest.raises(Exception, match="needs reference"):
        render({"neutron-base": {"type": "git", "location": "https://x/neutron.git"}})
    with pytest.raises(Exception, match="type must be one of"):
        render({"neutron-base": {"type": "svn", "location": "https://x/neutron"}})


def test_pam_environment_shadows_the_file_in_effective(loaders, pypi_hosted, home):
    assert (
        _managed(loaders, _user_conf(home), {"global": {"index-url": pypi_hosted.url_with_credentials}})[
            "result"
        ]
        is True
    )
    (home / ".pam_environment").write_text("PIP_INDEX_URL DEFAULT=http://127.0.0.1:9/simple/\n")
    env = {"XDG_CONFIG_HOME": str(home / ".config"), "XDG_CONFIG_DIRS": str(home / "xdg-dirs")}
    report = loaders.modules.pipconf.effective(home=str(home), environ=env)
    entry = report["options"]["index-url"]
    assert entry["source"] == "environment PIP_INDEX_URL"
    assert entry["value"] == "http://127.0.0.1:9/simple/"
    assert entry["shadowed"] == [f"{_user_conf(home)} [global]"]


def test_venv_scope_is_the_site_file_pip_reads(loaders, pypi_hosted, home, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    venv_python = str(venv / "bin" / "python")
    assert _download(home, tmp_path / "before", "opsalt-probe", python=venv_python).returncode != 0

    ret = _managed(loaders, f"venv:{venv}", {"download": {"index-url": pypi_hosted.url_with_credentials}})
    assert ret["result"] is True, ret
    assert os.path.exists(venv / "pip.conf")
    fetched = _download(home, tmp_path / "after", "opsalt-probe", python=venv_python)
    assert fetched.returncode == 0, fetched.stderr
    # The venv's file is read by that venv's pip only.
    assert _download(home, tmp_path / "outside", "opsalt-probe").returncode != 0
