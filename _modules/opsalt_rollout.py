"""
The minion side of opsalt's rolling orchestrations (``_runners/opsalt_rollout.py``).

A component that the pillar marks as rollout-managed
(``opsalt_rollout:managed: [pgbouncer, redis_aof]``) is closed to a plain
``state.apply``/highstate: its SLS renders an ``opsalt_rollout.pending``
state instead of its own states (see ``salt/opsalt/gate.jinja``). The
orchestration opens it for one run on one batch of hosts:

1. ``opsalt_rollout.unlock <component> <token>`` stores a SHA-256 hash of a
   random per-run token, root-only, under the minion's cachedir, with an
   expiry (a killed runner cannot leave the gate open);
2. ``state.apply <component> pillar='{"opsalt_rollout": {"token": ...}}'``
   renders the real states, since the token matches;
3. ``opsalt_rollout.lock <component>`` removes the hash.

An asset-system editor who writes ``opsalt_rollout:token`` into the pillar
opens nothing: the token has to match the hash that only the runner's unlock
call wrote. A ``test=True`` run is always open (it changes nothing), so the
dry run shows the real diff.

``health`` is the gate a batch has to pass: one observation of the
component's health on this host, read from the host's own pillar.
"""

import hashlib
import hmac
import json
import logging
import os
import re
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import opsalt_files

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "opsalt_rollout"

#: Components a rollout can drive, each with its health check below.
COMPONENTS = ("pgbouncer", "redis_aof")
COMPONENT_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ROLES = ("primary", "replica")
DEFAULT_TTL = 900
MAX_TTL = 86400


def __virtual__():
    if not HAS_HELPERS:
        return (False, f"opsalt_rollout: the opsalt helper modules are missing ({_IMPORT_ERROR})")
    return __virtualname__


def _component(component):
    name = str(component or "")
    if not COMPONENT_PATTERN.match(name):
        raise SaltInvocationError(
            f"component {name!r} is not a component name (lowercase letters, digits and '_')"
        )
    return name


def _token_path(component):
    return os.path.join(__opts__["cachedir"], "opsalt_rollout", f"{_component(component)}.token")


def _digest(token):
    return hashlib.sha256(str(token).encode()).hexdigest()


def _read_gate(component):
    try:
        with open(_token_path(component), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("opsalt_rollout: unreadable gate file of %s: %s", component, err)
        return None


def rollout_settings():
    """
    This host's ``opsalt_rollout`` pillar: ``managed`` (the list of
    rollout-managed components) and ``role`` (``primary``/``replica``, this
    host's Redis role, for replica-first ordering), validated.

    CLI Example:

    .. code-block:: bash

        salt '*' opsalt_rollout.rollout_settings
    """
    data = __salt__["pillar.get"]("opsalt_rollout", {}, unmask=True) or {}
    if not isinstance(data, dict):
        raise SaltInvocationError("pillar opsalt_rollout must be a mapping")
    managed = data.get("managed") or []
    if not isinstance(managed, list):
        raise SaltInvocationError("pillar opsalt_rollout:managed must be a list of component names")
    role = data.get("role")
    if role is not None and role not in ROLES:
        raise SaltInvocationError(f"pillar opsalt_rollout:role must be one of {', '.join(ROLES)}")
    return {"managed": [_component(name) for name in managed], "role": role}


def describe(component):
    """
    What a rollout of ``component`` needs to know about this host:
    ``present`` (the pillar has the component's key), ``managed`` (the gate
    applies) and ``role``.

    CLI Example:

    .. code-block:: bash

        salt '*' opsalt_rollout.describe pgbouncer
    """
    name = _component(component)
    settings = rollout_settings()
    return {
        "present": name in (__pillar__ or {}),
        "managed": name in settings["managed"],
        "role": settings["role"],
    }


def unlock(component, token, ttl=DEFAULT_TTL):
    """
    Open the rollout gate of ``component`` on this host for the run that
    passes ``token`` as pillar ``opsalt_rollout:token``, for at most ``ttl``
    seconds. Only a hash of the token is stored (mode 0600). Called by the
    ``opsalt_rollout`` runner, not by hand.

    CLI Example:

    .. code-block:: bash

        salt web1 opsalt_rollout.unlock pgbouncer 3f2a... ttl=600
    """
    path = _token_path(component)
    try:
        ttl = float(ttl)
    except (TypeError, ValueError) as err:
        raise SaltInvocationError(f"ttl must be a number of seconds, not {ttl!r}") from err
    if not 0 < ttl <= MAX_TTL:
        raise SaltInvocationError(f"ttl must be between 1 and {MAX_TTL} seconds")
    if len(str(token or "")) < 16:
        raise SaltInvocationError("token must be at least 16 characters (the runner makes a random one)")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    body = json.dumps({"sha256": _digest(token), "expires": time.time() + ttl})
    try:
        opsalt_files.atomic_write(path, body, mode=0o600, make_backup=False)
    except OSError as err:
        raise CommandExecutionError(f"cannot open the rollout gate of {component} ({path}): {err}") from err
    return True


def lock(component):
    """
    Close the rollout gate of ``component`` on this host (idempotent).

    CLI Example:

    .. code-block:: bash

        salt web1 opsalt_rollout.lock pgbouncer
    """
    try:
        os.unlink(_token_path(component))
    except FileNotFoundError:
        pass
    except OSError as err:
        raise CommandExecutionError(f"cannot close the rollout gate of {component}: {err}") from err
    return True


def unlocked(component, token=None):
    """
    True when ``token`` opens the rollout gate of ``component`` here: the
    runner's unlock stored its hash and the gate has not expired.

    CLI Example:

    .. code-block:: bash

        salt-call opsalt_rollout.unlocked pgbouncer
    """
    gate = _read_gate(component)
    if not token or not isinstance(gate, dict):
        return False
    if float(gate.get("expires") or 0) < time.time():
        return False
    return hmac.compare_digest(str(gate.get("sha256") or ""), _digest(token))


def _pgbouncer_problems(max_waiting, max_wait):
    report = __salt__["pgbouncer.health"](max_waiting=max_waiting, max_wait=max_wait)
    return list(report.get("problems") or [])


def _redis_instances():
    data = __salt__["pillar.get"]("redis_aof", {}, unmask=True) or {}
    for instance in (data.get("instances") or {}).values():
        instance = instance or {}
        name = instance.get("instance") or instance.get("unix_socket_path")
        if not name:
            name = f"{instance.get('host') or '127.0.0.1'}:{instance.get('port') or 6379}"
        conn = {
            key: instance[key] for key in ("username", "password", "ssl") if instance.get(key) is not None
        }
        yield name, conn


def _redis_problems(interval):
    problems = []
    for name, conn in _redis_instances():
        report = __salt__["redis_aof.stalls"](instance=name, interval=interval, **conn)
        delayed = (report.get("aof_delayed_fsync") or {}).get("delta")
        if delayed:
            problems.append(f"{name}: {delayed} AOF write(s) postponed by a slow fsync")
        status = report.get("aof_last_write_status")
        if status not in (None, "ok"):
            problems.append(f"{name}: aof_last_write_status is {status}")
        since = time.time() - float(interval) - 1
        for event, row in (report.get("aof_latency_events") or {}).items():
            if row.get("time", 0) >= since:
                problems.append(f"{name}: latency event {event} of {row.get('latest_ms')} ms")
    return problems


def health(component, max_waiting=0, max_wait=1.0, interval=1):
    """
    One health observation of ``component`` on this host, the gate of a
    rollout batch: ``{"healthy": bool, "problems": [...]}``.

    pgbouncer
        ``pgbouncer.health``: no more than ``max_waiting`` clients waiting,
        none waiting over ``max_wait`` seconds, no saturated pool; a console
        that does not answer is a problem.
    redis_aof
        ``redis_aof.stalls`` over ``interval`` seconds for every instance in
        the pillar: no postponed AOF write, write status ok, no AOF latency
        event in the window.

    CLI Example:

    .. code-block:: bash

        salt '*' opsalt_rollout.health pgbouncer max_waiting=0 max_wait=1
    """
    name = _component(component)
    if name not in COMPONENTS:
        raise SaltInvocationError(f"no health gate for {name}: one of {', '.join(COMPONENTS)}")
    try:
        if name == "pgbouncer":
            problems = _pgbouncer_problems(max_waiting, max_wait)
        else:
            problems = _redis_problems(interval)
    except (CommandExecutionError, SaltInvocationError) as err:
        problems = [f"{name} health check failed: {err}"]
    return {"healthy": not problems, "problems": problems}
