"""
Import an opsalt component's source file (``_modules/<name>.py``,
``_states/<name>.py``, ...) as a fresh module object, for unit tests that fill
Salt's dunders (``__salt__``, ``__opts__``, ...) themselves.
"""

import importlib.util
import os

from tests.support.asset_api import REPO_ROOT


def load_component(kind, name):
    """
    A fresh module object of ``<kind>/<name>.py`` (not registered in
    ``sys.modules``, so each call starts clean).
    """
    spec = importlib.util.spec_from_file_location(
        f"opsalt_unit_{name}_{kind.strip('_')}", os.path.join(REPO_ROOT, kind, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
