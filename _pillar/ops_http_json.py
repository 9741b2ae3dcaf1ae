"""
Per-minion pillar from the asset-management system's REST API.

.. code-block:: yaml

    ext_pillar:
      - ops_http_json:
          url: https://assets.example.com/api/salt/%s/pillars/
          username: salt
          password_file: /etc/salt/asset-api.secret

``%s`` is the minion id, percent-encoded with no safe characters. Options
(all optional but ``url``; an unknown option is an error naming it):

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
    Retries on connect errors and HTTP 429/502/503/504, honouring
    ``Retry-After`` (capped at 5 s); default 2 and 0.2. HTTP 429 is handled
    like 503: retried, then an error the circuit breaker counts.
``namespace``
    Nest the document under this key.
``meta_key``
    Add ``{stale, fetched_at, source}`` under this top-level key (beside
    ``namespace``), so states can see a stale pillar; default none.
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
``conditional``
    Send ``If-None-Match``/``If-Modified-Since`` from the cached copy's
    ``ETag``/``Last-Modified``; a 304 serves the cached document (checked
    against ``schema`` again). Default ``true``.
``stale_grace``
    With a usable cached copy, seconds to wait for the API before serving
    the copy while the fetch goes on in the background; default 1.
``max_concurrency`` / ``slot_wait``
    Requests in flight toward one endpoint across all of the master's
    processes (``0``: no limit; default 4), and seconds to wait for a free
    slot when a usable cached copy exists (default 0.25; else up to
    ``deadline``).
``breaker_failures`` / ``breaker_cooloff`` / ``breaker_cooloff_max``
    The endpoint's circuit breaker, shared by the master's processes: this
    many consecutive connection errors, timeouts, deadlines, HTTP 5xx or 429
    (after the retries) open it (``0``: no breaker; default 3). While open,
    fetches do not touch the API (cached copy, failure or ``{}`` per
    ``on_error``) for ``breaker_cooloff`` seconds (default 30); then one
    fetch probes, and its success closes the breaker. Each failed probe
    doubles the cool-off up to ``breaker_cooloff_max`` (default 30).
``with_grains`` / ``allow_url_without_minion_id``
    Fill ``<grain>`` placeholders of the URL (``a:b`` nests) from the
    minion's grains, percent-encoded. Grains are set by the minion, so the
    URL must still contain ``%s`` unless you set
    ``allow_url_without_minion_id: true``. Both default ``false``.
``header_dict`` / ``auth``
    Salt ``http_json``'s names, so an entry can be renamed in place:
    ``header_dict`` is merged under ``headers``; ``auth`` is
    ``[username, password]`` (not together with ``username``, ``password``
    or ``password_file``).

A failure raises, so Salt records it in the pillar's ``_errors`` and state
runs refuse to proceed instead of running with the host's data missing.
No credential appears in any log line, error or exception. Stale serves log
one warning per minute per process, with their count. The docs page
``docs/ops_http_json.rst`` has the details and the runner.
"""

import logging

try:
    import opsalt_ops_http_json

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
    client = opsalt_ops_http_json.client_for(options, __opts__["cachedir"])
    # the minion's grains (the loader packs them); used only with with_grains
    return client.pillar(minion_id, grains=__grains__)
