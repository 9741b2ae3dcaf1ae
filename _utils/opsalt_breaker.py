"""
Deprecated name of :mod:`opsalt_ops_http_json_breaker` (helpers are named
after their component, issue 14). ``import opsalt_breaker`` still works: it
logs a deprecation warning and hands back ``opsalt_ops_http_json_breaker``
itself, private names included. A ``saltutil.sync_all`` deployment drops the
stale synced copy by removing ``<extension_modules>/utils/opsalt_breaker.py``
once nothing imports it.
"""

import logging
import sys
import warnings

import opsalt_ops_http_json_breaker

_MESSAGE = "opsalt_breaker is deprecated: import opsalt_ops_http_json_breaker instead (same API)"
logging.getLogger(__name__).warning(_MESSAGE)
warnings.warn(_MESSAGE, DeprecationWarning, stacklevel=2)
# The old name is the new module, so both names share one state.
sys.modules[__name__] = opsalt_ops_http_json_breaker
