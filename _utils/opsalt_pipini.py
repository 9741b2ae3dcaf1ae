"""
Deprecated name of :mod:`opsalt_pipconf` (helpers are named after their
component, issue 14). Importing it still works and logs a deprecation
warning; a ``saltutil.sync_all`` deployment drops the stale synced copy by
removing ``<extension_modules>/utils/opsalt_pipini.py`` once nothing imports
it.
"""

import logging
import warnings

import opsalt_pipconf
from opsalt_pipconf import *  # noqa: F403 - the alias re-exports the renamed module whole

__all__ = opsalt_pipconf.__all__

_MESSAGE = "opsalt_pipini is deprecated: import opsalt_pipconf instead (same API)"
logging.getLogger(__name__).warning(_MESSAGE)
warnings.warn(_MESSAGE, DeprecationWarning, stacklevel=2)
