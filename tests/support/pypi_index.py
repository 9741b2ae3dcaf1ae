"""
Local PEP 503 indexes for the pipconf tests: real pypiserver processes on
127.0.0.1, a "hosted" index behind HTTP basic auth (like the team's Nexus
hosted repository; uploads allowed), an open "proxy" index, and a "group"
(auth, its own packages, everything else redirected to the proxy, as a Nexus
group merges its members), holding wheels the tests build with
``python -m build``.

Plus :func:`isolated_pip`: run the real pip with every ``PIP_*`` variable
removed and HOME / XDG_CONFIG_HOME / XDG_CONFIG_DIRS pointed at temporary
directories, so the only pip config it can read is the one a test wrote
(and ``/etc/pip.conf``, whose only key on these machines is ``cert``).

Run as ``python -m tests.support.pypi_index --root DIR --port N
[--credentials-file F]`` it is the server process itself.
"""

import argparse
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.procs import free_port, port_open, stop_popen, wait_for

USERNAME = "deploy"
PASSWORD = "Nx-d3ploy-S3cret!"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_wheel(workdir, name, version):
    """
    Build a tiny pure-Python wheel ``name==version`` with the real ``build``
    frontend (no isolation: setuptools from this venv) and return its path.
    """
    module = name.replace("-", "_")
    project = os.path.join(workdir, f"{name}-{version}-src")
    os.makedirs(project, exist_ok=True)
    with open(os.path.join(project, "pyproject.toml"), "w", encoding="utf-8") as handle:
        handle.write(
            textwrap.dedent(
                f"""\
                [build-system]
                requires = ["setuptools>=61"]
                build-backend = "setuptools.build_meta"

                [project]
                name = "{name}"
                version = "{version}"
                description = "opsalt pipconf test package"

                [tool.setuptools]
                py-modules = ["{module}"]
                """
            )
        )
    with open(os.path.join(project, f"{module}.py"), "w", encoding="utf-8") as handle:
        handle.write(f'VERSION = "{version}"\n')
    dist = os.path.join(workdir, "dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, project],
        check=True,
        capture_output=True,
        env=_clean_env(),
    )
    wheel = os.path.join(dist, f"{module}-{version}-py3-none-any.whl")
    if not os.path.exists(wheel):
        raise RuntimeError(f"build produced no {wheel}: {os.listdir(dist)}")
    return wheel


class PypiIndex:
    """
    A pypiserver on 127.0.0.1 serving ``root``. With ``auth`` every
    download, listing and upload needs ``USERNAME``/``PASSWORD``.
    """

    def __init__(self, root, auth=True, fallback_url=None):
        self.root = root
        self.fallback_url = fallback_url
        self.packages = os.path.join(root, "packages")
        os.makedirs(self.packages, exist_ok=True)
        self.auth = auth
        self.port = None
        self.proc = None
        self.log = os.path.join(root, "server.log")

    @property
    def url(self):
        """
        The simple index URL without credentials.
        """
        return f"http://127.0.0.1:{self.port}/simple/"

    @property
    def url_with_credentials(self):
        return f"http://{USERNAME}:{PASSWORD}@127.0.0.1:{self.port}/simple/"

    @property
    def upload_url(self):
        return f"http://127.0.0.1:{self.port}/"

    def add(self, wheel):
        with (
            open(wheel, "rb") as src,
            open(os.path.join(self.packages, os.path.basename(wheel)), "wb") as dst,
        ):
            dst.write(src.read())

    def start(self):
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "tests.support.pypi_index",
            "--root",
            self.packages,
            "--port",
            str(self.port),
        ]
        if self.auth:
            credentials = os.path.join(self.root, "credentials")
            with open(credentials, "w", encoding="utf-8") as handle:
                handle.write(f"{USERNAME}:{PASSWORD}\n")
            os.chmod(credentials, 0o600)
            argv += ["--credentials-file", credentials]
        if self.fallback_url:
            argv += ["--fallback-url", self.fallback_url]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=_clean_env()
            )
        try:
            wait_for(
                lambda: self.proc.poll() is None and port_open(self.port),
                30,
                what=f"pypiserver on {self.port}",
            )
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self):
        if self.proc is not None:
            stop_popen(self.proc)
            self.proc = None


@pytest.fixture(scope="module")
def pipconf_wheels(tmp_path_factory):
    """
    Wheels built for the indexes: opsalt-probe 1.0.0 (on the hosted index),
    1.1.0 (for upload tests) and opsalt-upstream 2.0.0 (on the proxy).
    """
    workdir = str(tmp_path_factory.mktemp("pipconf-wheels"))
    return {
        "probe": build_wheel(workdir, "opsalt-probe", "1.0.0"),
        "probe-next": build_wheel(workdir, "opsalt-probe", "1.1.0"),
        "upstream": build_wheel(workdir, "opsalt-upstream", "2.0.0"),
    }


def _serving(tmp_path_factory, name, wheel, **options):
    """
    A started :class:`PypiIndex` holding ``wheel``, stopped when the fixture ends.
    """
    index = PypiIndex(str(tmp_path_factory.mktemp(name)), **options)
    index.add(wheel)
    index.start()
    try:
        yield index
    finally:
        index.stop()


@pytest.fixture(scope="module")
def pypi_hosted(tmp_path_factory, pipconf_wheels):
    """
    The team's hosted repository: basic auth for everything, uploads allowed.
    """
    yield from _serving(tmp_path_factory, "hosted-index", pipconf_wheels["probe"], auth=True)


@pytest.fixture(scope="module")
def pypi_proxy(tmp_path_factory, pipconf_wheels):
    """
    Stands in for the proxy of the public index: open, other packages.
    """
    yield from _serving(tmp_path_factory, "proxy-index", pipconf_wheels["upstream"], auth=False)


@pytest.fixture(scope="module")
def pypi_group(tmp_path_factory, pipconf_wheels, pypi_proxy):
    """
    A Nexus-style group: the hosted packages behind basic auth, anything else
    redirected to the proxy index, all under one URL.
    """
    yield from _serving(
        tmp_path_factory, "group-index", pipconf_wheels["probe"], auth=True, fallback_url=pypi_proxy.url
    )


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(extra)
    return env


def isolated_pip(home, *args, timeout=120, python=None):
    """
    Run ``python -m pip *args`` (this venv's Python unless ``python``)
    seeing only the pip config under ``home`` (``~/.pip``, ``~/.config/pip``),
    ``home/xdg-dirs`` (global) and the site file of the venv it runs in,
    never the machine's user files or ``PIP_*`` variables. Returns the
    ``CompletedProcess``.
    """
    env = _clean_env(
        HOME=str(home),
        XDG_CONFIG_HOME=os.path.join(str(home), ".config"),
        XDG_CONFIG_DIRS=os.path.join(str(home), "xdg-dirs"),
        XDG_CACHE_HOME=os.path.join(str(home), ".cache"),
        PYTHONNOUSERSITE="1",
    )
    argv = [python or sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _serve(argv=None):
    parser = argparse.ArgumentParser(description="pypiserver for the opsalt pipconf tests")
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credentials-file")
    parser.add_argument(
        "--fallback-url", help="redirect projects not found here (a Nexus group's proxy member)"
    )
    options = parser.parse_args(argv)
    fallback = (
        {"disable_fallback": False, "fallback_url": options.fallback_url}
        if options.fallback_url
        else {"disable_fallback": True}
    )

    import pypiserver
    from pypiserver import bottle_wrapper as bottle
    from pypiserver.__main__ import WsgiHandler

    if options.credentials_file:
        with open(options.credentials_file, encoding="utf-8") as handle:
            wanted = tuple(handle.read().strip().split(":", 1))

        # pypiserver's own htpasswd support needs passlib; its documented
        # ``auther`` hook gives the same basic-auth behaviour without it.
        def auther(username, password):
            return (username, password) == wanted

        app = pypiserver.app(
            roots=[options.root],
            authenticate=["download", "list", "update"],
            auther=auther,
            overwrite=True,
            **fallback,
        )
    else:
        app = pypiserver.app(roots=[options.root], authenticate=[], password_file=".", **fallback)
    bottle.run(
        app=app, host="127.0.0.1", port=options.port, server="wsgiref", quiet=True, handler_class=WsgiHandler
    )


if __name__ == "__main__":
    _serve()
