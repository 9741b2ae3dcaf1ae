"""
Per-minion pillar from the asset-management system's REST API.

.. code-block:: yaml

    ext_pillar:
      - ops_http_json:
          url: https://assets.example.com/api/salt/%s/pillars/
          username: salt
          password_file: /etc/salt/asset-api.secret

``%s`` is the minion id, percent-encoded with no safe characters. Options
(all optional but ``url``):

``username`` + ``password`` | ``password_file``
    HTTP basic auth. Files are read at call time, so rotation needs no restart.
``token`` | ``token_file``
    ``Authorization: Bearer <token>``.
``headers``
    Extra request headers (their values are treated as secrets in messages).
``verify``
    ``true`` (default), ``false`` or a CA bundle path.
``cert``
    Client certificate: a path, or ``[cert, key]``.
``timeout``
    Seconds, or ``[connect, read]``; default ``[3.05, 10]``.
``deadline``
    Overall seconds per fetch, including a body that drips in; default 15.
``retries`` / ``backoff_factor``
    Retries on connect errors and 502/503/504 (honouring ``Retry-After``);
    default 2 and 0.2.
``namespace``
    Nest the document under this key.
``max_bytes``
    Largest accepted body, enforced while streaming; default 10 MiB.
``missing``
    404 handling: ``empty`` (default, unknown host gets ``{}``) or ``error``.
``on_error``
    ``stale`` (default: last good document if younger than ``max_stale``,
    else fail), ``fail``, or ``empty`` (the old ``http_json`` behaviour).
``max_stale``
    Seconds; default 86400.
``schema``
    Path to a JSON Schema the document must satisfy.
``cache_dir``
    Where last good documents are kept (mode 0600); default
    ``<cachedir>/opsalt/ops_http_json/<hash of url>``.

A failure raises, so Salt records it in the pillar's ``_errors`` and state
runs refuse to proceed instead of running with the host's data missing.
No credential appears in any log line, error or exception.
"""

import logging

try:
    import opsalt_http

    HAS_CLIENT = True
except ImportError as _err:  # pragma: no cover - reported by __virtual__
    HAS_CLIENT = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "ops_http_json"


def __virtual__():
    if not HAS_CLIENT:
        return (
            False,
            f"ops_http_json needs the opsalt helpers and requests ({_IMPORT_ERROR}); "
            "pip install opsalt, or sync _utils with saltutil.sync_all",
        )
    return __virtualname__


def ext_pillar(minion_id, pillar, **options):
    """
    Return the minion's document from the asset API (see the module docs).
    """
    client = opsalt_http.client_for(options, __opts__["cachedir"])
    # the minion's grains (the loader packs them); used only with with_grains
    return client.pillar(minion_id, grains=__grains__)
