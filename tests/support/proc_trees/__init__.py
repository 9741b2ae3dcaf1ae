"""
Fixture proc trees for vmtune (see generate.py), and a loader for the vmtune
component files in unit tests (``opsalt._modules`` only exists once installed).
"""

import os
import shutil
import threading

import opsalt_vmtune

from tests.support import components

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


def tree(name):
    """
    Path of the fixture tree ``name`` (seed, multinode, old-kernel, new-kernel).
    """
    return os.path.join(HERE, name)


def writable_copy(name, dest):
    """
    A copy of the fixture tree ``name`` at ``dest`` (tests write its sysctls);
    returns the copy's path as a string.
    """
    shutil.copytree(tree(name), dest)
    return str(dest)


def load_component(kind, name="vmtune"):
    """
    Import ``<kind>/<name>.py`` (``_modules``, ``_states``, ``_beacons``) as a
    fresh module, for Salt's loader-mock fixtures to fill its dunders.
    """
    return components.load_component(kind, name)


# The operator policy the tests run under unless they say otherwise: vmtune
# may write into temporary directories (copies of the trees, config files)
# and read the fixture trees here (issue 12: reads are policy-bound too).
TEST_POLICY = {"allowed_paths": ["/tmp", HERE]}


def config_get(options=None, policy=TEST_POLICY):
    """
    A stand-in for Salt's ``config.get``: ``options`` maps full keys
    (``vmtune:proc_root``, ``vmtune.config``, ...) to values, and
    ``opsalt:policy`` is ``policy`` (``None``: no policy, the defaults).
    """
    values = dict(options or {})
    if policy is not None:
        values.setdefault("opsalt:policy", policy)

    def get(key, default=None, **_where):
        return values.get(key, default)

    return get


# The first line of a planted huge file: it must never reach a message or a log.
PLANTED_MARKER = "root-secret-5f3a"


def plant_unsafe(root, relpath, kind):
    """
    Replace ``root/relpath`` with a FIFO (``kind`` ``fifo``) or a huge sparse
    file (``huge``: :data:`PLANTED_MARKER`, then 16 times
    ``opsalt_vmtune.MAX_BYTES`` of holes that take no disk); returns its path.
    """
    path = os.path.join(root, relpath)
    os.unlink(path)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(f"nr_free_pages {PLANTED_MARKER}\n")
        os.truncate(path, opsalt_vmtune.MAX_BYTES * 16)
    return path


def call_with_timeout(func, seconds=20):
    """
    ``func()`` in a thread: its result, or its exception raised here, or a
    failure when it has not returned within ``seconds``, so that a read
    blocking on a FIFO fails the test instead of hanging it.
    """
    outcome = {}

    def run():
        try:
            outcome["result"] = func()
        except BaseException as err:  # raised again in the test's thread
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"blocked for {seconds} s (a FIFO opened without O_NONBLOCK?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")
