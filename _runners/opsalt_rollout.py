"""
Rolling orchestrations: apply a pgbouncer or redis_aof change in batches,
each batch gated on the component's health for a soak time, stopping at the
first batch that fails its gate.

Called from ``salt/orch/<component>.sls`` through the
``opsalt_rollout.rolled_out`` state, or directly:

.. code-block:: bash

    salt-run opsalt_rollout.run pgbouncer tgt='db*' batch=25% soak=60
    salt-run opsalt_rollout.plan redis_aof batch=1

The hosts are those ``tgt`` matches whose pillar has the component's key.
Redis goes replica-first: hosts whose pillar says ``opsalt_rollout:role:
replica`` form the first batches, primaries the last ones, so a primary is
never changed before its replicas. Each batch is opened for one run with a
random per-run token (``opsalt_rollout.unlock``), applied with
``state.apply <component>``, closed again, then observed with
``opsalt_rollout.health`` for ``soak`` seconds.
"""

import logging
import math
import re
import secrets

import salt.client
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import opsalt_wait

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "opsalt_rollout"

COMPONENTS = ("pgbouncer", "redis_aof")
BATCH_PATTERN = re.compile(r"^\s*([0-9]+)\s*(%?)\s*$")
#: Seconds a minion may take for one state.apply of a batch.
APPLY_TIMEOUT = 600
#: The state key of ``opsalt_rollout.pending``: the gate stayed closed.
PENDING_PREFIX = "opsalt_rollout_|-"


def __virtual__():
    if not HAS_HELPERS:
        return (False, f"opsalt_rollout: the opsalt helper modules are missing ({_IMPORT_ERROR})")
    return __virtualname__


def batch_size(batch, total):
    """
    The number of hosts per batch for ``batch`` (a count like ``2``, or a
    percentage like ``"25%"``, rounded up, at least 1) out of ``total``.

    CLI Example:

    .. code-block:: bash

        salt-run opsalt_rollout.batch_size 25% 10
    """
    match = BATCH_PATTERN.match(str(batch))
    if not match or int(match.group(1)) == 0:
        raise SaltInvocationError(f"batch must be a positive count or a percentage like '25%', not {batch!r}")
    number = int(match.group(1))
    if match.group(2):
        if number > 100:
            raise SaltInvocationError(f"batch percentage must be at most 100%, not {batch!r}")
        return max(1, math.ceil(total * number / 100))
    return number


def make_batches(hosts, batch):
    """
    Cut ``hosts`` (``{minion: {"role": ...}}``) into batches: replicas
    first, the other hosts (primaries, hosts without a role) after them,
    never a replica and a primary in one batch; sorted by minion id within
    each group.

    CLI Example:

    .. code-block:: bash

        salt-run opsalt_rollout.make_batches '{"r1": {"role": "replica"}, "p1": {"role": "primary"}}' 1
    """
    size = batch_size(batch, len(hosts))
    replicas = sorted(name for name, info in hosts.items() if (info or {}).get("role") == "replica")
    others = sorted(name for name in hosts if name not in replicas)
    batches = []
    for group in (replicas, others):
        batches.extend(group[start : start + size] for start in range(0, len(group), size))
    return batches


def _client():
    return salt.client.LocalClient(mopts=__opts__)


def _returns(hosts, fun, arg=(), kwarg=None, tgt_type="list", timeout=60):
    ret = _client().cmd(
        hosts, fun, arg=list(arg), kwarg=kwarg or {}, tgt_type=tgt_type, timeout=timeout, full_return=True
    )
    return {minion: (answer.get("ret"), answer.get("retcode", 0)) for minion, answer in ret.items()}


def _call(hosts, fun, arg=(), kwarg=None, timeout=60):
    """``fun`` on every host of ``hosts``; raises naming the hosts that failed or did not answer."""
    answers = _returns(hosts, fun, arg, kwarg, timeout=timeout)
    missing = [host for host in hosts if host not in answers]
    failed = [host for host, (_, retcode) in answers.items() if retcode]
    if missing or failed:
        raise CommandExecutionError(
            f"{fun} failed on {', '.join(failed) or 'no host'}; no answer from {', '.join(missing) or 'no host'}"
        )
    return {host: value for host, (value, _) in answers.items()}


def _component(component):
    if component not in COMPONENTS:
        raise SaltInvocationError(f"component must be one of {', '.join(COMPONENTS)}, not {component!r}")
    return component


def plan(component, tgt="*", tgt_type="glob", batch=1):
    """
    The batches a rollout of ``component`` would go through, without
    changing anything: ``{"batches": [[minion, ...], ...], "skipped":
    [minions whose pillar lacks the component], "unmanaged": [...]}``.

    CLI Example:

    .. code-block:: bash

        salt-run opsalt_rollout.plan pgbouncer tgt='db*' batch=50%
    """
    _component(component)
    answers = _returns(tgt, "opsalt_rollout.describe", [component], tgt_type=tgt_type)
    failed = sorted(
        host for host, (value, retcode) in answers.items() if retcode or not isinstance(value, dict)
    )
    if failed:
        raise CommandExecutionError(
            f"opsalt_rollout.describe failed on {', '.join(failed)}: is opsalt installed?"
        )
    present = {host: value for host, (value, _) in answers.items() if value["present"]}
    return {
        "component": component,
        "batches": make_batches(present, batch) if present else [],
        "skipped": sorted(host for host in answers if host not in present),
        "unmanaged": sorted(host for host, value in present.items() if not value["managed"]),
    }


def _apply(component, hosts):
    """Open the gate with a fresh token, apply the component, close the gate; the hosts that changed."""
    token = secrets.token_hex(16)
    try:
        _call(hosts, "opsalt_rollout.unlock", [component, token])
        answers = _returns(
            hosts,
            "state.apply",
            [component],
            {"pillar": {"opsalt_rollout": {"token": token}}},
            timeout=APPLY_TIMEOUT,
        )
    finally:
        _call(hosts, "opsalt_rollout.lock", [component])
    changed, problems = [], {}
    for host in hosts:
        did_change, failed = _outcome(component, *answers.get(host, (None, 1)))
        if did_change:
            changed.append(host)
        if failed:
            problems[host] = failed
    return changed, problems


def _outcome(component, value, retcode):
    """Whether one host's ``state.apply`` changed something, and what failed in it."""
    if not isinstance(value, dict):
        return False, [f"state.apply {component} failed: {value}"]
    states = [state for state in value.values() if isinstance(state, dict)]
    failed = [state.get("comment") for state in states if state.get("result") is False]
    if any(key.startswith(PENDING_PREFIX) for key in value):
        failed.append(f"the rollout gate of {component} did not open: nothing was applied")
    if retcode and not failed:
        failed.append(f"state.apply {component} returned {retcode}")
    return any(state.get("changes") for state in states), failed


def _observe(component, hosts, soak, interval, thresholds):
    """Health of ``hosts`` every ``interval`` s for ``soak`` s; the first problems seen, else {}."""

    def unhealthy():
        answers = _returns(hosts, "opsalt_rollout.health", [component], thresholds, timeout=60)
        problems = {}
        for host in hosts:
            value, retcode = answers.get(host, (None, 1))
            if retcode or not isinstance(value, dict):
                problems[host] = [f"no health answer: {value}"]
            elif not value.get("healthy"):
                problems[host] = value.get("problems") or ["unhealthy"]
        return problems

    return opsalt_wait.until(
        unhealthy, timeout=float(soak), interval=float(interval), max_interval=float(interval)
    )


def _report(result, planned, changed, comment, **extra):
    report = {"result": result, "comment": comment, "changed": changed, **planned}
    report.update(extra)
    return report


def run(
    component,
    tgt="*",
    tgt_type="glob",
    batch=1,
    soak=30,
    interval=2,
    max_waiting=0,
    max_wait=1.0,
    dry_run=False,
):
    """
    Roll ``component`` out in batches (see :func:`plan`), each applied with
    ``state.apply <component>`` and then gated on
    ``opsalt_rollout.health`` for ``soak`` seconds. Stops at the first batch
    that fails (a state failed, or the gate saw a problem); later batches
    stay untouched. Returns ``result``, ``batches``, ``changed`` (the hosts
    whose run changed something), and on a stop ``failed_batch``,
    ``problems``, ``untouched`` and ``retcode: 1`` (salt-run exits 1). ``dry_run=True`` only plans.

    CLI Example:

    .. code-block:: bash

        salt-run opsalt_rollout.run pgbouncer tgt='db*' batch=25% soak=60 max_wait=0.5
    """
    planned = plan(component, tgt, tgt_type, batch)
    batches = planned["batches"]
    if dry_run:
        return _report(None, planned, [], f"dry run: {component} would roll out in {len(batches)} batch(es)")
    thresholds = {"max_waiting": max_waiting, "max_wait": max_wait, "interval": interval}
    changed = []
    for number, hosts in enumerate(batches, 1):
        log.info("opsalt_rollout: %s batch %s/%s: %s", component, number, len(batches), hosts)
        applied, problems = _apply(component, hosts)
        changed.extend(applied)
        if not problems:
            problems = _observe(component, hosts, soak, interval, thresholds)
        if problems:
            __context__["retcode"] = 1
            untouched = [host for later in batches[number:] for host in later]
            return _report(
                False,
                planned,
                changed,
                f"{component} rollout stopped at batch {number}/{len(batches)}: its gate failed on "
                f"{', '.join(sorted(problems))}; changed: {', '.join(changed) or 'none'}; "
                f"untouched: {', '.join(untouched) or 'none'}",
                failed_batch=number,
                problems=problems,
                untouched=untouched,
                # salt-run's exit code comes from this key, not __context__
                retcode=1,
            )
    return _report(
        True,
        planned,
        changed,
        f"{component} rolled out in {len(batches)} batch(es); changed: {', '.join(changed) or 'none'}",
    )
