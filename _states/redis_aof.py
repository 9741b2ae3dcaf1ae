"""
Redis AOF settings as a state, over the ``redis_aof`` execution module.

.. code-block:: yaml

    redis-cache-aof-configured:
      redis_aof.configured:
        - name: 127.0.0.1:6380
        - password: {{ pillar['redis_aof']['instances']['cache']['password'] }}
        - appendonly: true
        - appendfsync: everysec
        - no-appendfsync-on-rewrite: true
        - latency-monitor-threshold: 100
"""

import salt.utils.args
from opsalt_state import fail, new_ret, would_change
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "redis_aof"


def __virtual__():
    if "redis_aof.configure" not in __salt__:
        return (False, "the redis_aof execution module is not available (it needs redis-py)")
    return __virtualname__


def _describe(changes):
    return ", ".join(f"{key} {change['old']} -> {change['new']}" for key, change in sorted(changes.items()))


def configured(
    name,
    host=None,
    port=None,
    unix_socket_path=None,
    username=None,
    password=None,
    ssl=None,
    persist=True,
    wait_timeout=300,
    **settings,
):
    """
    Make one Redis instance run with these AOF settings, live (``CONFIG
    SET``, no restart) and in its config file (``CONFIG REWRITE``).

    name
        The instance: ``host:port``, ``[ipv6]:port`` or a socket path.
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

    CLI Example:

    .. code-block:: bash

        salt-call state.single redis_aof.configured 127.0.0.1:6379 appendonly=true appendfsync=everysec test=True
    """
    ret = new_ret(name)
    settings = salt.utils.args.clean_kwargs(**settings)
    if not settings:
        return fail(ret, "No AOF setting given: nothing to configure")
    conn = {
        key: value
        for key, value in {
            "host": host,
            "port": port,
            "unix_socket_path": unix_socket_path,
            "username": username,
            "password": password,
            "ssl": ssl,
        }.items()
        if value is not None
    }
    try:
        plan = __salt__["redis_aof.diff"](
            settings, instance=name, persist=persist, unreachable_ok=bool(__opts__["test"]), **conn
        )
    except (CommandExecutionError, SaltInvocationError) as err:
        return fail(ret, f"Nothing changed on {name}: {err}")
    if plan.get("unreachable"):
        # Dry run before an earlier state has installed/started the server:
        # the settings are valid, their current values unknowable.
        return would_change(
            ret,
            {"settings": plan["changes"]},
            f"Cannot compare now ({plan['unreachable']}); would apply the settings",
        )

    live, on_disk = plan["changes"], plan["config_file_pending"] or {}
    if not live and not on_disk:
        ret["comment"] = f"AOF settings of {plan['instance']} are already as wanted"
        return ret
    expected = {}
    if live:
        expected["settings"] = live
    if persist and (live or on_disk):
        expected["config_file"] = plan["config_file"] or "none: live only"
    if __opts__["test"]:
        what = _describe(live) if live else f"{plan['config_file']} lacks {_describe(on_disk)}"
        return would_change(ret, expected, f"Would set on {plan['instance']}: {what}")

    try:
        done = __salt__["redis_aof.configure"](
            settings, instance=name, persist=persist, wait_timeout=wait_timeout, **conn
        )
    except (CommandExecutionError, SaltInvocationError) as err:
        return fail(ret, f"Applying AOF settings to {name} failed: {err}")

    if done["changes"]:
        ret["changes"]["settings"] = done["changes"]
    comment = f"Set on {done['instance']}: {_describe(done['changes'])}" if done["changes"] else ""
    if done["persisted"]:
        ret["changes"]["config_file"] = done["config_file"]
        comment = (
            comment + "; " if comment else ""
        ) + f"persisted to {done['config_file']} with CONFIG REWRITE"
    elif done["live_only"]:
        ret["changes"]["config_file"] = "none: live only"
        comment += f"; live only: {done['live_only']}, so a restart reverts it"
        ret["warnings"] = [f"{done['instance']}: the AOF settings are live only ({done['live_only']})"]
    ret["comment"] = comment
    return ret
