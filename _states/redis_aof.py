"""
Redis AOF settings as a state, over the ``redis_aof`` execution module.

.. code-block:: yaml

    # one instance of the pillar's redis_aof:instances, read at run time
    # (address, password, settings): no secret in the rendered SLS
    redis_aof-cache-aof-settings-configured:
      redis_aof.configured:
        - name: 127.0.0.1:6380
        - pillar_instance: cache

    # or every argument in the state itself
    redis-sessions-aof-configured:
      redis_aof.configured:
        - name: 127.0.0.1:6381
        - appendonly: yes
        - appendfsync: no
        - no-appendfsync-on-rewrite: yes
        - latency-monitor-threshold: 100

YAML reads ``yes``/``no`` as booleans; for the yes/no settings and
``appendfsync`` a boolean means that word (``appendfsync: no`` is ``no``).
"""

import salt.utils.args
from opsalt_state import apply_failed, new_ret, refused, unchanged, would_change
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "redis_aof"


def __virtual__():
    if "redis_aof.configure" not in __salt__:
        return (False, "the redis_aof execution module is not available (it needs redis-py)")
    return __virtualname__


def _describe(changes):
    return ", ".join(f"{key} {change['old']} -> {change['new']}" for key, change in sorted(changes.items()))


def _values(wanted):
    return ", ".join(f"{key} {value}" for key, value in sorted(wanted.items()))


def _expected(plan):
    """The ``changes`` a real run would report, from ``redis_aof.diff``."""
    live, on_disk = plan["changes"], plan["config_file_pending"] or {}
    expected = {}
    if live:
        expected["settings"] = live
    if plan["persist"] and (live or on_disk):
        expected["config_file"] = plan["config_file"] or "none: live only"
    return expected


def _would(plan):
    live, on_disk = plan["changes"], plan["config_file_pending"] or {}
    what = _describe(live) if live else f"{plan['config_file']} lacks {_describe(on_disk)}"
    return f"Would set on {plan['instance']}: {what}"


def _report(ret, done):
    """Fill ``ret`` from what ``redis_aof.configure`` did."""
    if done["changes"]:
        ret["changes"]["settings"] = done["changes"]
    parts = [f"Set on {done['instance']}: {_describe(done['changes'])}"] if done["changes"] else []
    if done["persisted"]:
        ret["changes"]["config_file"] = done["config_file"]
        parts.append(f"persisted to {done['config_file']} with CONFIG REWRITE")
    elif done["live_only"]:
        ret["changes"]["config_file"] = "none: live only"
        parts.append(f"live only: {done['live_only']}, so a restart reverts it")
        ret["warnings"] = [f"{done['instance']}: the AOF settings are live only ({done['live_only']})"]
    ret["comment"] = "; ".join(parts) + f" (now {_values(done['wanted'])})"
    return ret


def configured(
    name,
    pillar_instance=None,
    back_to_defaults=False,
    host=None,
    port=None,
    unix_socket_path=None,
    username=None,
    password=None,
    ssl=None,
    persist=None,
    wait_timeout=None,
    **settings,
):
    """
    Make one Redis instance run with these AOF settings, live (``CONFIG
    SET``, no restart) and in its config file (``CONFIG REWRITE``).

    name
        The instance: ``host:port``, ``[ipv6]:port`` or a socket path.
    pillar_instance
        A key of ``redis_aof:instances`` in this host's pillar. Its address,
        credentials, settings (over ``redis_aof:settings``), ``persist`` and
        ``wait_timeout`` are read from the pillar at run time, so no
        password passes through SLS text; arguments given here win.
    back_to_defaults
        Hand every managed setting back to Redis's default (``clean.sls``).
    host, port, unix_socket_path, username, password, ssl
        Connection arguments (redis-py names); they override ``name`` and
        default from ``redis_aof:<arg>`` in the minion config or pillar.
    persist
        Persist with ``CONFIG REWRITE`` (default ``True``). A server without
        a config file is reported as changed live only.
    wait_timeout
        Seconds to wait for the initial AOF rewrite when ``appendonly``
        turns on (default 300).
    settings
        ``appendonly``, ``appendfsync``, ``no-appendfsync-on-rewrite``,
        ``auto-aof-rewrite-percentage``, ``auto-aof-rewrite-min-size``,
        ``aof-use-rdb-preamble``, ``aof-load-truncated``,
        ``aof-rewrite-incremental-fsync``, ``aof-timestamp-enabled``,
        ``latency-monitor-threshold``, ``timeout``; ``_`` works for ``-``.
        YAML booleans mean ``yes``/``no`` (``appendfsync: no`` is ``no``).

    CLI Example:

    .. code-block:: bash

        salt-call state.single redis_aof.configured 127.0.0.1:6379 appendonly=yes appendfsync=no test=True
    """
    ret = new_ret(name)
    settings = salt.utils.args.clean_kwargs(**settings)
    if not settings and pillar_instance is None:
        return refused(ret, "no AOF setting given, nothing to configure")
    conn = dict(
        host=host, port=port, unix_socket_path=unix_socket_path, username=username, password=password, ssl=ssl
    )
    args = {
        "instance": name,
        "persist": persist,
        "pillar_instance": pillar_instance,
        "back_to_defaults": back_to_defaults,
        **{key: value for key, value in conn.items() if value is not None},
    }
    try:
        plan = __salt__["redis_aof.diff"](settings, unreachable_ok=bool(__opts__["test"]), **args)
    except (CommandExecutionError, SaltInvocationError) as err:
        return refused(ret, f"{name}: {err}")
    if plan.get("unreachable"):
        # Dry run before an earlier state has installed/started the server:
        # the settings are valid, their current values unknowable.
        return would_change(
            ret,
            {"settings": plan["changes"]},
            f"Cannot compare now ({plan['unreachable']}); would apply {_values(plan['wanted'])}",
        )
    expected = _expected(plan)
    if not expected:
        return unchanged(ret, f"AOF settings of {plan['instance']} ({_values(plan['wanted'])})")
    if __opts__["test"]:
        return would_change(ret, expected, _would(plan))
    try:
        done = __salt__["redis_aof.configure"](settings, wait_timeout=wait_timeout, **args)
    except (CommandExecutionError, SaltInvocationError) as err:
        return apply_failed(ret, f"AOF settings of {name}: {err}")
    return _report(ret, done)
