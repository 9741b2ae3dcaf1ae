"""
Fixture proc trees for vmtune (see generate.py), and a loader for the vmtune
component files in unit tests (``opsalt._modules`` only exists once installed).
"""

import os
import shutil

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
# may write into temporary directories (copies of the trees, config files).
TEST_POLICY = {"allowed_paths": ["/tmp"]}


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
