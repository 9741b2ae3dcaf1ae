"""
Deprecated name of :mod:`opsalt_v2v_flow` (helpers are named after their
component, issue 14). Importing it still works and logs a deprecation
warning; a ``saltutil.sync_all`` deployment drops the stale synced copy by
removing ``<extension_modules>/utils/opsalt_flow.py`` once nothing imports it.
"""

import logging
import warnings

import opsalt_v2v_flow
from opsalt_v2v_flow import *  # noqa: F403 - the alias re-exports the renamed module whole

__all__ = opsalt_v2v_flow.__all__

_MESSAGE = "opsalt_flow is deprecated: import opsalt_v2v_flow instead (same API)"
logging.getLogger(__name__).warning(_MESSAGE)
warnings.warn(_MESSAGE, DeprecationWarning, stacklevel=2)
