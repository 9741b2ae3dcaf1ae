"""
The ``salt.loader`` entry point: tells Salt where opsalt's modules live once
the package is installed with pip, so no ``saltutil.sync_*`` is needed.
"""

import os

PACKAGE_ROOT = os.path.dirname(os.path.abspath(__file__))

# Salt loader type -> directory in the installed package (same names as the repo's).
_LOADER_DIRS = {
    "modules": "_modules",
    "states": "_states",
    "runners": "_runners",
    "pillar": "_pillar",
    "beacons": "_beacons",
}


def _base():
    # Installed: the loader dirs sit inside the package. Editable install
    # (pip install -e .): they are the repo's top-level directories.
    if os.path.isdir(os.path.join(PACKAGE_ROOT, "_modules")):
        return PACKAGE_ROOT
    return os.path.dirname(PACKAGE_ROOT)


def loader_dirs():
    """
    Return ``{loader type: [directory, ...]}`` for Salt's loader.
    """
    base = _base()
    return {
        kind: [os.path.join(base, subdir)]
        for kind, subdir in _LOADER_DIRS.items()
        if os.path.isdir(os.path.join(base, subdir))
    }


# Data trees the package carries besides the loader modules.
SLS_TREE = "salt"
SCHEMA_FILE = os.path.join("schema", "pillar.schema.json")


def sls_root():
    """
    The directory of opsalt's SLS tree (``salt/``): a ``file_roots`` entry
    for a master that installed the package (``opsalt paths`` prints it).
    """
    return os.path.join(_base(), SLS_TREE)


def schema_path():
    """
    The pillar JSON Schema (``schema/pillar.schema.json``): what the
    ext_pillar's ``schema:`` option points at.
    """
    return os.path.join(_base(), SCHEMA_FILE)
