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
