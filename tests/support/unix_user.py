"""
A real unprivileged local user for tests of root's reads and writes in a
user's tree (symlinks, FIFOs and environment files the user plants):
created with ``useradd``, removed with ``userdel`` in ``finally``.
"""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile

from saltfactories.utils import random_string


@contextlib.contextmanager
def unix_user(home=None, prefix="opsalt-u-"):
    """
    Create a user whose home is ``home`` (created, owned by the user, mode
    0755) and yield its passwd entry. Without ``home`` the home is made in a
    fresh root-owned 0755 directory under /tmp (pytest's own temporary
    directories are 0700, so the user could not reach a home there), removed
    afterwards.
    """
    base = None
    if home is None:
        base = tempfile.mkdtemp(prefix="opsalt-users-")
        os.chmod(base, 0o755)
        home = os.path.join(base, "home")
    name = random_string(prefix, uppercase=False)[:30]
    try:
        subprocess.run(
            ["useradd", "--create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        try:
            entry = pwd.getpwnam(name)
            os.chmod(home, 0o755)
            yield entry
        finally:
            subprocess.run(["userdel", name], check=False, capture_output=True)
    finally:
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


def start_as_user(entry, func, *args):
    """
    Start ``func(*args)`` in a child process with the user's uid/gid (what
    the user could do themselves); return its pid.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            func(*args)
            code = 0
        finally:
            os._exit(code)
    return pid


def as_user(entry, func, *args):
    """Run ``func(*args)`` as the user and return its exit code (0: no exception)."""
    _pid, status = os.waitpid(start_as_user(entry, func, *args), 0)
    return os.waitstatus_to_exitcode(status)
