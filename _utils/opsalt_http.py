"""
Deprecated name of :mod:`opsalt_ops_http_json` (helpers are named after their
component, issue 14). ``import opsalt_http`` still works: it logs a
deprecation warning and hands back ``opsalt_ops_http_json`` itself, private
names included. A ``saltutil.sync_all`` deployment drops the stale synced copy
by removing ``<extension_modules>/utils/opsalt_http.py`` once nothing imports
it.
"""

import logging
import sys
import warnings

import opsalt_ops_http_json

_MESSAGE = "opsalt_http is deprecated: import opsalt_ops_http_json instead (same API)"
logging.getLogger(__name__).warning(_MESSAGE)
warnings.warn(_MESSAGE, DeprecationWarning, stacklevel=2)
# The old name is the new module, so both names share one state.
sys.modules[__name__] = opsalt_ops_http_json
