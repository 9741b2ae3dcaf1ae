"""
A real unprivileged local user for tests of root's reads and writes in a
user's tree (symlinks, FIFOs and environment files the user plants):
created with ``useradd``, removed with ``userdel`` in ``finally``.
"""

import contextlib
import os
import pwd
import subprocess

from saltfactories.utils import random_string


@contextlib.contextmanager
def unix_user(home, prefix="opsalt-u-"):
    """
    Create a user whose home is ``home`` (created, owned by the user, mode
    0755 so root-side assertions can read it) and yield its passwd entry.
    """
    name = random_string(prefix, uppercase=False)[:30]
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


def as_user(entry, func, *args):
    """
    Run ``func(*args)`` in a child process with the user's uid/gid (what the
    user could do themselves) and return its exit status (0: no exception).
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
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
