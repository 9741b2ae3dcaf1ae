"""
Root's reads and writes in a user's tree (issue 12, finding 4), with a REAL
unprivileged user (tests/support/unix_user.py) who plants links, FIFOs and
environment files in their own home, through Salt's loaders in process
(running as root, as a minion does).

Each refused case: the state fails with "refusing ...; nothing read or
written", nothing outside the home changes, and the content of the
root-only file appears nowhere (return, comment, changes, the user's files).
"""

import functools
import os
import random
import signal
import threading
import time

import opsalt_pipconf_fs
import pytest

from tests.support.loaders import make_loaders
from tests.support.unix_user import as_user, start_as_user, unix_user

ROOT_SECRET = "root-only-Secret-c0ntent"
SETTINGS = {"global": {"timeout": "5"}}
REPOS = {"nexus": {"repository": "http://127.0.0.1:8081/repository/pypi-hosted/", "password": "pw-1"}}


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    return make_loaders(tmp_path_factory.mktemp("pipconf-usertree"))


@pytest.fixture
def user():
    with unix_user(prefix="opsalt-tree-") as entry:
        yield entry


@pytest.fixture
def root_only(tmp_path):
    """A root-owned 0600 file and a root-owned directory outside any home."""
    secret = tmp_path / "root-only.conf"
    secret.write_text(f"[global]\nindex-url = http://x/{ROOT_SECRET}\n")
    os.chmod(secret, 0o600)
    directory = tmp_path / "root-dir"
    directory.mkdir()
    return secret, directory


def _managed(loaders, user):
    return loaders.states.pipconf.managed(name=f"user:{user.pw_name}", settings=SETTINGS).full_return


def _pypirc(loaders, user):
    return loaders.states.pipconf.pypirc(name=f"user:{user.pw_name}", repositories=REPOS).full_return


def _tree_text(home):
    """Every byte readable under the home (files only, links not followed)."""
    found = []
    for top, _dirs, files in os.walk(home):
        for name in files:
            path = os.path.join(top, name)
            if not os.path.islink(path) and os.path.isfile(path):
                with open(path, "rb") as handle:
                    found.append(handle.read().decode("utf-8", "replace"))
    return "\n".join(found)


def _assert_refused(ret, user, root_only):
    secret, directory = root_only
    assert ret["result"] is False, ret
    assert "refusing" in ret["comment"] and "nothing read or written" in ret["comment"], ret
    assert ret["changes"] == {}
    assert ROOT_SECRET not in str(ret)
    assert ROOT_SECRET not in _tree_text(user.pw_dir)
    assert secret.read_text() == f"[global]\nindex-url = http://x/{ROOT_SECRET}\n"
    assert os.listdir(directory) == []


def _plant_dir_link(home, target):
    os.makedirs(os.path.join(home, ".config"), exist_ok=True)
    os.symlink(target, os.path.join(home, ".config", "pip"))


def _plant_file_link(path, target):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)


def _plant_fifo(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path)


def test_directory_link_to_a_root_owned_directory_is_refused(loaders, user, root_only):
    assert as_user(user, _plant_dir_link, user.pw_dir, str(root_only[1])) == 0
    with pytest.raises(Exception, match="refusing .*: a symbolic link or not a directory"):
        loaders.modules.pipconf.plan_config(f"user:{user.pw_name}", SETTINGS)  # what test=True asks
    _assert_refused(_managed(loaders, user), user, root_only)


@pytest.mark.parametrize("which", ["pip.conf", ".pypirc"])
def test_file_link_to_a_root_only_file_is_refused(loaders, user, root_only, which):
    path = os.path.join(user.pw_dir, ".config", "pip", "pip.conf") if which == "pip.conf" else None
    path = path or os.path.join(user.pw_dir, ".pypirc")
    assert as_user(user, _plant_file_link, path, str(root_only[0])) == 0
    ret = _managed(loaders, user) if which == "pip.conf" else _pypirc(loaders, user)
    _assert_refused(ret, user, root_only)
    assert os.readlink(path) == str(root_only[0])  # the link is left alone
    if which == "pip.conf":
        with pytest.raises(Exception, match="refusing"):
            loaders.modules.pipconf.get("user", user=user.pw_name)


@pytest.mark.parametrize("which", ["pip.conf", ".pypirc"])
def test_a_fifo_is_refused_without_blocking(loaders, user, root_only, which):
    path = os.path.join(user.pw_dir, ".config", "pip", "pip.conf") if which == "pip.conf" else None
    path = path or os.path.join(user.pw_dir, ".pypirc")
    assert as_user(user, _plant_fifo, path) == 0
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(
            ret=_managed(loaders, user) if which == "pip.conf" else _pypirc(loaders, user)
        ),
        daemon=True,
    )
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the state blocked on the FIFO"
    _assert_refused(result["ret"], user, root_only)
    assert "not a regular file" in result["ret"]["comment"]


def test_a_hard_link_is_refused(loaders, user, root_only, tmp_path):
    # protected_hardlinks stops the user making one to root's file; one to
    # the user's own file elsewhere is still not the file root manages
    other = os.path.join(user.pw_dir, "elsewhere.conf")
    assert as_user(user, lambda: open(other, "w").write("[global]\ntimeout = 1\n")) == 0
    path = os.path.join(user.pw_dir, ".pypirc")
    assert as_user(user, os.link, other, path) == 0
    ret = _pypirc(loaders, user)
    assert ret["result"] is False and "2 hard links" in ret["comment"]
    assert open(other, encoding="utf-8").read() == "[global]\ntimeout = 1\n"


def _write_env(home, text):
    with open(os.path.join(home, ".pam_environment"), "w", encoding="utf-8") as handle:
        handle.write(text)


def test_user_environment_never_makes_root_open_another_path(loaders, user, root_only):
    secret, directory = root_only
    (directory / "pip").mkdir()
    (directory / "pip" / "pip.conf").write_text(f"[global]\nretries = {ROOT_SECRET}\n")
    env = f"PIP_CONFIG_FILE DEFAULT={secret}\nXDG_CONFIG_HOME DEFAULT={directory}\n"
    assert as_user(user, _write_env, user.pw_dir, env) == 0
    report = loaders.modules.pipconf.effective(user=user.pw_name)
    assert ROOT_SECRET not in str(report)
    assert "index-url" not in report["options"] and "retries" not in report["options"]
    assert any(f"{secret} is not read" in w for w in report["warnings"]), report["warnings"]
    listed = loaders.modules.pipconf.config_files(user=user.pw_name)
    (env_item,) = [f for f in listed["files"] if f["kind"] == "PIP_CONFIG_FILE"]
    assert env_item == {"path": str(secret), "kind": "PIP_CONFIG_FILE", "exists": False, "loaded": False}
    # and the state still writes the user's own file, where it belongs
    ret = _managed(loaders, user)
    assert ret["result"] is True, ret
    written = os.path.join(user.pw_dir, ".config", "pip", "pip.conf")
    st = os.stat(written)
    assert (st.st_uid, st.st_mode & 0o777) == (user.pw_uid, 0o644)


def test_pam_environment_link_is_not_followed(loaders, user, root_only):
    link = os.path.join(user.pw_dir, ".pam_environment")
    assert as_user(user, os.symlink, str(root_only[0]), link) == 0
    with pytest.raises(Exception, match="refusing") as err:
        loaders.modules.pipconf.effective(user=user.pw_name)
    assert ROOT_SECRET not in str(err.value)


def test_new_files_dirs_and_backups_belong_to_the_user(loaders, user):
    assert _managed(loaders, user)["result"] is True
    changed = loaders.states.pipconf.managed(
        name=f"user:{user.pw_name}", settings={"global": {"timeout": "6"}}
    ).full_return
    assert changed["result"] is True and "previous version kept" in changed["comment"]
    pip_dir = os.path.join(user.pw_dir, ".config", "pip")
    for path in (
        os.path.join(user.pw_dir, ".config"),
        pip_dir,
        *[os.path.join(pip_dir, n) for n in os.listdir(pip_dir)],
    ):
        assert os.stat(path).st_uid == user.pw_uid, path
    assert sorted(n.split(".")[0] or n.split(".")[1] for n in os.listdir(pip_dir)) == ["pip", "pip"]


def _flip_forever(directory, name, target_file, target_dir=None):
    """
    As the user: swap ``directory/name`` between a real file and a link to
    ``target_file`` and, given ``target_dir``, ``directory`` itself between a
    real directory and a link to ``target_dir``, holding each shape for a
    random moment (up to 2 ms) so that the runs meet every shape, the real
    one included.
    """
    parent = os.path.dirname(directory)
    path = os.path.join(directory, name)
    shapes = ("file-link", "real", "dir-link", "real") if target_dir else ("file-link", "real")
    while True:
        for kind in shapes:
            try:
                if kind == "file-link":
                    os.makedirs(directory, exist_ok=True)
                    tmp = os.path.join(directory, ".swap")
                    if os.path.lexists(tmp):
                        os.unlink(tmp)
                    os.symlink(target_file, tmp)
                    os.rename(tmp, path)
                elif kind == "dir-link":
                    tmp = os.path.join(parent, ".swapdir")
                    if os.path.lexists(tmp):
                        os.unlink(tmp)
                    os.symlink(target_dir, tmp)
                    if os.path.isdir(directory) and not os.path.islink(directory):
                        os.rename(directory, os.path.join(parent, f"old-{time.monotonic_ns()}"))
                    os.rename(tmp, directory)
                else:
                    if os.path.islink(directory):
                        os.unlink(directory)
                    os.makedirs(directory, exist_ok=True)
                    if os.path.islink(path):
                        os.unlink(path)
            except OSError:
                pass
            time.sleep(random.uniform(0, 0.002))


def _race_run(loaders, user, which, run):
    """One run of the state for ``which`` whose wanted text differs from the last run's."""
    if which == "pip.conf":
        settings = {"global": {"timeout": str(run)}}
        return loaders.states.pipconf.managed(name=f"user:{user.pw_name}", settings=settings).full_return
    repositories = {"nexus": dict(REPOS["nexus"], username=f"uploader-{run}")}
    return loaders.states.pipconf.pypirc(name=f"user:{user.pw_name}", repositories=repositories).full_return


@pytest.mark.parametrize("which", ["pip.conf", ".pypirc"])
def test_a_link_swapped_in_during_the_runs_is_never_followed(loaders, user, root_only, which):
    secret, directory = root_only
    before = secret.read_bytes()
    if which == "pip.conf":
        # the file and its directory are swapped: ~/.config/pip becomes a link too
        swapped = (os.path.join(user.pw_dir, ".config", "pip"), "pip.conf", str(secret), str(directory))
        assert as_user(user, os.makedirs, swapped[0]) == 0
    else:
        # ~/.pypirc sits in the home itself, which the user cannot swap
        swapped = (user.pw_dir, ".pypirc", str(secret))
    flipper = start_as_user(user, _flip_forever, *swapped)
    results = []
    try:
        # at least 30 runs; more (bounded) until both outcomes were seen
        for run in range(300):
            results.append(_race_run(loaders, user, which, run))
            if run >= 29 and {ret["result"] for ret in results} == {True, False}:
                break
    finally:
        os.kill(flipper, signal.SIGKILL)
        os.waitpid(flipper, 0)
    assert secret.read_bytes() == before
    assert os.listdir(directory) == []
    assert all(ROOT_SECRET not in str(ret) for ret in results)
    assert ROOT_SECRET not in _tree_text(user.pw_dir)
    # both outcomes happened: some runs wrote, some were refused
    outcomes = {ret["result"] for ret in results}
    assert outcomes == {True, False}, [r["comment"] for r in results[:5]]
    for ret in results:
        if ret["result"] is False:
            # refused, the directory vanished under the write, or the user
            # changed their file again before the verifying plan
            assert any(w in ret["comment"] for w in ("refusing", "cannot", "still differs")), ret["comment"]


USER_MARKER = "user-Marker-c0ntent"


def _plant_huge(path, size):
    """As the user: a file with a marker line, then made sparse up to ``size`` bytes (no disk used)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"[global]\n# {USER_MARKER}\n")
    os.truncate(path, size)


def _count_reads(monkeypatch, st):
    """Count the bytes ``os.read`` returns from the file whose ``stat`` is ``st``."""
    counted = {"bytes": 0}
    real_read = os.read

    def read(fd, size):
        data = real_read(fd, size)
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
            counted["bytes"] += len(data)
        return data

    monkeypatch.setattr(os, "read", read)
    return counted


@pytest.mark.parametrize("which", ["pip.conf", ".pypirc"])
def test_a_huge_file_is_refused_unread_and_left_alone(loaders, user, which, monkeypatch):
    cap = opsalt_pipconf_fs.MAX_BYTES
    size = cap * 64
    scope = f"user:{user.pw_name}"
    if which == "pip.conf":
        path = os.path.join(user.pw_dir, ".config", "pip", "pip.conf")
        plan, state = functools.partial(loaders.modules.pipconf.plan_config, scope, SETTINGS), _managed
    else:
        path = os.path.join(user.pw_dir, ".pypirc")
        plan, state = functools.partial(loaders.modules.pipconf.plan_pypirc, scope, REPOS), _pypirc
    assert as_user(user, _plant_huge, path, size) == 0
    before = os.stat(path)
    listing = sorted(os.listdir(os.path.dirname(path)))
    read = _count_reads(monkeypatch, before)
    refusal = f"refusing {path}: {size} bytes is over the limit of {cap}; nothing read or written"
    with pytest.raises(Exception, match="over the limit") as err:
        plan()  # what test=True asks
    assert str(err.value) == refusal
    ret = state(loaders, user)
    assert ret["result"] is False and refusal in ret["comment"], ret
    assert ret["changes"] == {}
    assert USER_MARKER not in str(ret) and USER_MARKER not in str(err.value)
    assert read["bytes"] == 0  # fstat's size alone refused it: not a byte read
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns, after.st_uid) == (
        before.st_ino,
        size,
        before.st_mtime_ns,
        user.pw_uid,
    )
    # neither replaced nor backed up: no backup, no temporary file beside it
    assert sorted(os.listdir(os.path.dirname(path))) == listing
