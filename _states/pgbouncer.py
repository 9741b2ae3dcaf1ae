"""
pgbouncer states: ``pgbouncer.ini`` with a safe reload, and ``userlist.txt``.

Thin states over the execution module: ``pgbouncer.plan_config`` /
``pgbouncer.plan_userlist`` validate (syntax, operator policy, pgbouncer's
own rules) and say what would change; under ``test=True`` that is all; else
``pgbouncer.apply_config`` / ``pgbouncer.apply_userlist`` write atomically
with a backup, reload (or restart) a running pgbouncer and verify. Secrets
never reach ``changes`` or comments: hand the states ``pillar_key`` and they
read passwords from pillar at run time, so none passes through SLS text.

.. code-block:: yaml

    pgbouncer-config-file-managed:
      pgbouncer.configured:
        - name: /etc/pgbouncer/pgbouncer.ini
        - pillar_key: pgbouncer          # databases read from pillar
        - settings:
            listen_port: 6432
            auth_type: scram-sha-256
            auth_file: /etc/pgbouncer/userlist.txt
            default_pool_size: 20
        - service: pgbouncer
"""

import logging

from salt.exceptions import CommandExecutionError

try:
    import opsalt_state

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover - reported by __virtual__
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "pgbouncer"


def __virtual__():
    if not HAS_HELPERS:
        return (False, f"pgbouncer needs the opsalt helpers ({_IMPORT_ERROR})")
    if "pgbouncer.plan_config" not in __salt__:
        return (False, "the pgbouncer execution module is not available (psycopg 3 or psql needed)")
    return __virtualname__


def _file_user(ret, user, owner):
    # ``owner`` was the name before issue 14 (pipconf says ``user``).
    if owner is None:
        return user
    message = "pgbouncer states: 'owner' is deprecated, use 'user' (same meaning)"
    log.warning(message)
    ret.setdefault("warnings", []).append(message)
    return owner


def _finish(ret, done):
    ret["changes"] = done["changes"]
    if done.get("pending"):
        ret["warnings"] = ret.get("warnings", []) + [
            f"not applied until pgbouncer restarts: {', '.join(done['pending'])}"
        ]
    if done.get("warnings"):
        ret["warnings"] = ret.get("warnings", []) + list(done["warnings"])
    if done.get("result") is False:
        return opsalt_state.fail(ret, done["comment"])
    ret["comment"] = done["comment"]
    return ret


def configured(
    name,
    databases=None,
    users=None,
    settings=None,
    user="postgres",
    group="postgres",
    mode="0640",
    restart=False,
    service=None,
    pidfile=None,
    admin=None,
    service_user=None,
    restart_timeout=30,
    pillar_key=None,
    userlist_path=None,
    allow_empty=False,
    owner=None,
):
    """
    Manage ``pgbouncer.ini`` at ``name`` and apply it to a running pgbouncer.

    name
        Path of ``pgbouncer.ini`` (under ``/etc/pgbouncer`` unless the
        operator policy allows more).
    databases
        ``[databases]``: ``{name: "host=... dbname=..." | {host: ..., port: ..., dbname: ...}}``.
        With ``pillar_key`` and no ``databases``: read from ``<pillar_key>:databases``.
    users
        ``[users]``: ``{user: {pool_mode: ..., max_user_connections: ...}}``.
    settings
        ``[pgbouncer]``: ``{key: value}``.
    user, group, mode
        Of the file (default postgres, postgres, 0640).
    restart
        When a key that RELOAD cannot change differs, or the running
        pgbouncer's binary was replaced on disk (a package upgrade): restart
        pgbouncer (``true``, a short outage), restart it online (``online``:
        ``pgbouncer -R`` takes over the sockets and clients; needs
        ``pidfile`` and ``unix_socket_dir``; the socket keys are reported as
        waiting for a full restart), or name the keys and the new binary
        waiting for a restart in the comment and ``warnings``, changing
        nothing for them (default). A new binary shows in ``changes`` as
        ``binary: {path, old, new}`` (the versions). With ``true``, a new
        process that does not start gets the old file back and is started
        again with it; the state fails and its changes say ``rolled_back``.
        With ``online`` the old process keeps serving.
    service
        The service name (Salt's ``service`` module), or
    pidfile
        the pidfile of a pgbouncer started directly.
    admin
        Console connection ``{host, port, user, password}``; missing keys
        come from ``pgbouncer:admin`` in config/pillar.
    service_user
        The user pgbouncer runs as, for readability checks.
    restart_timeout
        Seconds a restart waits for the safe shutdown.
    pillar_key
        Pillar key to read secrets (databases, the userlist) from at run time.
    userlist_path
        With ``pillar_key``: the userlist this run writes; the configuration
        is validated against it (so ``test=True`` on a fresh host predicts
        the real run).
    allow_empty
        Allow a configuration without databases.
    owner
        Deprecated alias of ``user``.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pgbouncer.configured /etc/pgbouncer/pgbouncer.ini \
            settings='{listen_port: 6432, auth_type: md5, auth_file: /etc/pgbouncer/userlist.txt}' \
            pillar_key=pgbouncer service=pgbouncer test=True
    """
    ret = opsalt_state.new_ret(name)
    args = {
        "databases": databases,
        "users": users,
        "settings": settings,
        "user": _file_user(ret, user, owner),
        "group": group,
        "mode": mode,
        "restart": restart,
        "service": service,
        "pidfile": pidfile,
        "admin": admin,
        "service_user": service_user,
        "restart_timeout": restart_timeout,
        "pillar_key": pillar_key,
        "userlist_path": userlist_path,
        "allow_empty": allow_empty,
    }
    try:
        plan = __salt__["pgbouncer.plan_config"](name, **args)
    except CommandExecutionError as err:
        return opsalt_state.refused(ret, err)
    if not plan["changes"]:
        return _finish(ret, plan)
    if __opts__["test"]:
        return opsalt_state.would_change(ret, plan["changes"], plan["comment"])
    try:
        done = __salt__["pgbouncer.apply_config"](name, **args)
    except CommandExecutionError as err:
        return opsalt_state.apply_failed(ret, f"{name}: {err}")
    return _finish(ret, done)


def userlist(
    name,
    users=None,
    auth_type=None,
    config=None,
    method=None,
    user="postgres",
    group="postgres",
    mode="0640",
    iterations=4096,
    verifier_from=None,
    reload=True,
    service=None,
    pidfile=None,
    admin=None,
    pillar_key=None,
    allow_empty=False,
    owner=None,
):
    """
    Manage ``userlist.txt`` at ``name``: exactly the ``users`` given.

    name
        Path of the userlist (pgbouncer's ``auth_file``; under
        ``/etc/pgbouncer`` unless the operator policy allows more).
    users
        ``{user: password}``, or ``{user: {password: ..., method: ...}}``, or
        ``{user: {secret: "SCRAM-SHA-256$..." | "md5..."}}``. With
        ``verifier_from``, ``from_pg: false`` marks a user that exists only
        in pgbouncer (an admin_users entry): it gets a fresh verifier.
        With ``pillar_key`` and no ``users``: read from ``<pillar_key>:userlist``.
    auth_type
        pgbouncer's auth_type; plain passwords are stored per it (md5: md5,
        plain: plain, otherwise SCRAM-SHA-256). Default: read from
        ``config``, else md5.
    config
        Path of ``pgbouncer.ini`` to read ``auth_type`` from.
    method
        Force the storage method (scram-sha-256, md5, plain).
    user, group, mode
        Of the file; mode 0640 or stricter.
    iterations
        SCRAM iteration count for new verifiers.
    verifier_from
        PostgreSQL connection ``{host, port, user, password}`` (a superuser):
        take SCRAM verifiers from ``pg_authid``. With ``pillar_key``: read
        from ``<pillar_key>:verifier_from``.
    reload
        Reload a running pgbouncer after a change (default true).
    service, pidfile, admin
        How to reach the running pgbouncer, as for ``configured``.
    pillar_key
        Pillar key to read the userlist and ``verifier_from`` from at run time.
    allow_empty
        Allow writing a userlist with no users.
    owner
        Deprecated alias of ``user``.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pgbouncer.userlist /etc/pgbouncer/userlist.txt \
            pillar_key=pgbouncer auth_type=scram-sha-256 service=pgbouncer test=True
    """
    ret = opsalt_state.new_ret(name)
    args = {
        "users": users,
        "auth_type": auth_type,
        "config": config,
        "method": method,
        "user": _file_user(ret, user, owner),
        "group": group,
        "mode": mode,
        "iterations": iterations,
        "verifier_from": verifier_from,
        "pillar_key": pillar_key,
        "allow_empty": allow_empty,
        # checked by the plan too (operator policy), so test=True predicts the run
        "service": service,
        "pidfile": pidfile,
    }
    try:
        plan = __salt__["pgbouncer.plan_userlist"](name, **args)
    except CommandExecutionError as err:
        return opsalt_state.refused(ret, err)
    if not plan["changes"]:
        return _finish(ret, plan)
    if __opts__["test"]:
        return opsalt_state.would_change(ret, plan["changes"], plan["comment"])
    try:
        done = __salt__["pgbouncer.apply_userlist"](name, reload=reload, admin=admin, **args)
    except CommandExecutionError as err:
        return opsalt_state.apply_failed(ret, f"{name}: {err}")
    return _finish(ret, done)
