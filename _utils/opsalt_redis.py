"""
Deprecated name of :mod:`opsalt_redis_aof` (helpers are named after their component,
issue 14). ``import opsalt_redis`` still works: it logs a deprecation warning and
hands back ``opsalt_redis_aof`` itself, private names included. A
``saltutil.sync_all`` deployment drops the stale synced copy by removing
``<extension_modules>/utils/opsalt_redis.py`` once nothing imports it.
"""

import logging
import sys
import warnings

import opsalt_redis_aof

_MESSAGE = "opsalt_redis is deprecated: import opsalt_redis_aof instead (same API)"
logging.getLogger(__name__).warning(_MESSAGE)
warnings.warn(_MESSAGE, DeprecationWarning, stacklevel=2)
# The old name is the new module, so both names share one state.
sys.modules[__name__] = opsalt_redis_aof
