"""
Deprecated name of the :mod:`ops_http_json` runner (the asset pillar has one
name, issue 14). ``salt-run ops_pillar.<function>`` still works: it logs a
deprecation warning and runs ``ops_http_json.<function>`` with the same
arguments. A ``saltutil.sync_all`` deployment drops the stale synced copy of
this file once it is gone from the file server.
"""

import logging

log = logging.getLogger(__name__)

__virtualname__ = "ops_pillar"


def __virtual__():
    return __virtualname__


def _forward(function, *args, **kwargs):
    log.warning(
        "salt-run ops_pillar.%s is deprecated: use ops_http_json.%s (same arguments)", function, function
    )
    return __salt__[f"ops_http_json.{function}"](*args, **kwargs)


def fetch(minion_id, index=0, bypass_breaker=False, unmask=False):
    """
    Deprecated: use ``ops_http_json.fetch`` (same arguments).

    CLI Example:

    .. code-block:: bash

        salt-run ops_http_json.fetch web01.example.com
    """
    return _forward("fetch", minion_id, index=index, bypass_breaker=bypass_breaker, unmask=unmask)


def check(tgt="*", tgt_type="glob", index=0, parallel=8, progress=True):
    """
    Deprecated: use ``ops_http_json.check`` (same arguments).

    CLI Example:

    .. code-block:: bash

        salt-run ops_http_json.check
    """
    return _forward("check", tgt=tgt, tgt_type=tgt_type, index=index, parallel=parallel, progress=progress)


def cache(index=0):
    """
    Deprecated: use ``ops_http_json.cache`` (same arguments).

    CLI Example:

    .. code-block:: bash

        salt-run ops_http_json.cache
    """
    return _forward("cache", index=index)
