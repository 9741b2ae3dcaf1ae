"""
Look at the asset API through the same code path as the ``ops_http_json``
ext_pillar: for the people who edit pillars in the asset system.

The runner carries the ext_pillar's name (it was ``ops_pillar`` before
0.2.0; that name still works and warns). Every function reads the
``ops_http_json`` entries of the master's
``ext_pillar`` option; ``index`` picks one when there are several. Pillar
values in the output are masked unless ``unmask=True``: runner returns land
in the event bus and the job cache.
"""

import concurrent.futures
import time

import salt.cache
import salt.utils.minions

try:
    import opsalt_ops_http_json
    import opsalt_secrets

    HAS_CLIENT = True
except ImportError as _err:  # pragma: no cover
    HAS_CLIENT = False
    _IMPORT_ERROR = str(_err)

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "ops_http_json"


def __virtual__():
    if not HAS_CLIENT:
        return (False, f"ops_http_json needs the opsalt helpers and requests ({_IMPORT_ERROR})")
    return __virtualname__


def _configured_entries():
    entries = []
    for entry in __opts__.get("ext_pillar") or []:
        if isinstance(entry, dict) and "ops_http_json" in entry:
            entries.append(entry["ops_http_json"] or {})
    if not entries:
        raise CommandExecutionError(
            "no ops_http_json entry in the master's ext_pillar option; see README.rst 'Configuration'"
        )
    return entries


def _client(index):
    entries = _configured_entries()
    try:
        options = entries[int(index)]
    except (IndexError, ValueError):
        raise SaltInvocationError(
            f"index {index!r} is out of range: {len(entries)} ops_http_json entr"
            f"{'y' if len(entries) == 1 else 'ies'} configured"
        ) from None
    try:
        return opsalt_ops_http_json.client_for(options, __opts__["cachedir"])
    except opsalt_ops_http_json.ConfigError as err:
        raise CommandExecutionError(str(err)) from None


def _grains(client, minion_id):
    """
    The minion's grains from the master's cache, when the URL needs them.
    """
    if not client.conf["with_grains"]:
        return None
    data = salt.cache.factory(__opts__).fetch(f"minions/{minion_id}", "data") or {}
    return data.get("grains") or {}


def _breaker(client, minion_id, grains):
    try:
        return client.endpoint(client.url_for(minion_id, grains))[0].report()
    except opsalt_ops_http_json.AssetApiError:
        return None


def _verdict(client, minion_id, bypass_breaker=False, unmask=False):
    grains = _grains(client, minion_id)
    result = client.fetch(minion_id, grains=grains, bypass_breaker=bypass_breaker)
    document = result["document"]
    return {
        "minion": minion_id,
        "url": client.safe_url(minion_id),
        "ok": result["source"] in ("api", "missing"),
        "source": result["source"],
        "status": result["status"],
        "error": result["error"],
        "schema": result["schema"],
        "cache_age": None if result["cache_age"] is None else round(result["cache_age"], 1),
        "fetched_at": result["fetched_at"],
        "breaker": _breaker(client, minion_id, grains),
        "document": document if unmask or document is None else opsalt_secrets.mask_values(document),
    }


def fetch(minion_id, index=0, bypass_breaker=False, unmask=False):
    """
    What the asset API returns for ``minion_id``, with the schema verdict,
    the cache state and the endpoint's circuit breaker, through the
    ext_pillar's own code path. An open breaker answers from the cache
    without contacting the API, unless ``bypass_breaker=True``; a closed or
    due breaker lets this call probe. The document's values are masked
    unless ``unmask=True`` (the return lands in the job cache).

    CLI Example:

    .. code-block:: bash

        salt-run ops_http_json.fetch web01.example.com
        salt-run ops_http_json.fetch web01.example.com bypass_breaker=True unmask=True
    """
    return _verdict(_client(index), minion_id, bypass_breaker=bypass_breaker, unmask=unmask)


def check(tgt="*", tgt_type="glob", index=0, parallel=8, progress=True):
    """
    Fetch and validate the document of every accepted minion matching
    ``tgt``, ``parallel`` at a time, through the circuit breaker. Returns a
    per-minion table, the minions served stale with the age of their cached
    copy, and the state of each endpoint's breaker; the retcode is 1 when any
    minion fails or is stale.

    CLI Example:

    .. code-block:: bash

        salt-run ops_http_json.check
        salt-run ops_http_json.check 'db*' parallel=16
    """
    client = _client(index)
    minions = sorted(salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)["minions"])
    rows = {}
    stale = {}
    breakers = {}
    started = time.monotonic()
    workers = max(1, int(parallel))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_verdict, client, m): m for m in minions}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            verdict = future.result()
            rows[verdict["minion"]] = "OK" if verdict["ok"] else f"ERROR: {verdict['error']}"
            if verdict["source"] == "cache":
                rows[verdict["minion"]] = f"STALE: {verdict['error']}"
                stale[verdict["minion"]] = verdict["cache_age"]
            if verdict["breaker"]:
                breakers[verdict["breaker"]["endpoint"]] = verdict["breaker"]
            if progress and len(minions) > 1:
                __jid_event__.fire_event(
                    {"message": f"{done}/{len(minions)} checked ({time.monotonic() - started:.1f} s)"},
                    "progress",
                )
    failed = sum(1 for status in rows.values() if status != "OK")
    __context__["retcode"] = 1 if failed else 0
    return {
        "minions": rows,
        "stale": stale,
        "breakers": breakers,
        "summary": f"{len(rows) - failed} OK, {failed} failed ({len(stale)} of them served stale), of {len(rows)} minions",
        # salt-run's exit code comes from this key
        "retcode": __context__["retcode"],
    }


def cache(index=0):
    """
    Age in seconds of the cached last-good document of each minion.

    CLI Example:

    .. code-block:: bash

        salt-run ops_http_json.cache
    """
    client = _client(index)
    return {minion: round(age, 1) for minion, age in sorted(client.cache_entries().items())}
