"""
pgbouncer states: ``pgbouncer.ini`` with a safe reload, and ``userlist.txt``.

Both validate before any change (invalid input leaves the files and the
running pgbouncer untouched), write atomically with a backup, then reload a
running pgbouncer through its admin console (or the service, or SIGHUP to
the pid in ``pidfile``). Secrets never reach ``changes`` or comments.

.. code-block:: yaml

    pgbouncer-config-file-managed:
      pgbouncer.configured:
        - name: /etc/pgbouncer/pgbouncer.ini
        - databases:
            appdb: {host: 10.0.0.5, port: 5432, dbname: appdb}
        - settings:
            listen_port: 6432
            auth_type: scram-sha-256
            auth_file: /etc/pgbouncer/userlist.txt
            default_pool_size: 20
        - service: pgbouncer
"""

import time

import opsalt_files
import opsalt_pgbouncer as pgconf
import opsalt_state
from salt.exceptions import CommandExecutionError

__virtualname__ = "pgbouncer"


def __virtual__():
    if "pgbouncer.show" not in __salt__:
        return (False, "the pgbouncer execution module is not available (psycopg 3 or psql needed)")
    return __virtualname__


def _wanted_ownership(owned, owner, group, mode):
    # owner/group None: leave them as they are (the demo's sandbox).
    return (owner if owner is not None else owned[0], group if group is not None else owned[1], mode)


def _admin_args(admin):
    return {k: v for k, v in (admin or {}).items() if k in ("host", "port", "user", "password")}


def _desired_values(settings, running):
    """
    ``{key: normalised value}`` the file asks for; keys dropped from the
    file go back to the server's default.
    """
    desired = {key: pgconf.normalise(key, value) for key, value in settings.items()}
    for key, row in (running or {}).items():
        if key not in desired and row["default"] is not None and key in pgconf.SETTINGS:
            desired[key] = pgconf.normalise(key, row["default"], from_server=True)
    return desired


def _differences(desired, running):
    """
    ``{key: {"old", "new"}}`` where the running server differs from
    ``desired``.
    """
    diff = {}
    for key, value in desired.items():
        row = running.get(key)
        current = pgconf.normalise(key, row["value"], from_server=True) if row else None
        if row is not None and current != value:
            diff[key] = {"old": current, "new": value}
    return diff


def _needs_restart(keys, running):
    return sorted(
        key
        for key in keys
        if (not running[key]["changeable"] if key in running else key in pgconf.RESTART_ONLY)
    )


def _file_key_changes(old_sections, new_sections):
    old = (old_sections or {}).get("pgbouncer", {})
    new = new_sections.get("pgbouncer", {})
    return {
        key: {"old": old.get(key), "new": new.get(key)}
        for key in sorted(set(old) | set(new))
        if pgconf.normalise(key, old.get(key)) != pgconf.normalise(key, new.get(key))
    }


def _entry_changes(old_sections, new_sections):
    changes = {}
    for section in ("databases", "users"):
        old = (old_sections or {}).get(section, {})
        new = new_sections.get(section, {})
        entry = {
            "added": sorted(set(new) - set(old)),
            "removed": sorted(set(old) - set(new)),
            "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k]),
        }
        if any(entry.values()):
            changes[section] = {k: v for k, v in entry.items() if v}
    return changes


def _parse_or_none(text):
    try:
        return pgconf.parse_ini(text) if text is not None else None
    except pgconf.ConfigError:
        return None


def configured(
    name,
    databases=None,
    users=None,
    settings=None,
    owner="postgres",
    group="postgres",
    mode="0640",
    restart=False,
    service=None,
    pidfile=None,
    admin=None,
    service_user=None,
    restart_timeout=30,
):
    """
    Manage ``pgbouncer.ini`` at ``name`` and apply it to a running pgbouncer.

    name
        Path of ``pgbouncer.ini``.
    databases
        ``[databases]``: ``{name: "host=... dbname=..." | {host: ..., port: ..., dbname: ...}}``.
    users
        ``[users]``: ``{user: {pool_mode: ..., max_user_connections: ...}}``.
    settings
        ``[pgbouncer]``: ``{key: value}``.
    owner, group, mode
        Of the file (default postgres, postgres, 0640).
    restart
        When a key that RELOAD cannot change (listen_port, listen_addr,
        unix_socket_dir, ...) differs: restart pgbouncer (``true``) or say
        in the comment which keys wait for a restart (default). When the
        new process does not start (say the new port is taken), the old
        file is put back from its backup and pgbouncer started again with
        it; the state fails and its changes say ``rolled_back``.
    service
        The service name (Salt's ``service`` module), or
    pidfile
        the pidfile of a pgbouncer started directly.
    admin
        Console connection ``{host, port, user, password}``; missing keys
        come from ``pgbouncer:admin`` in config/pillar.
    service_user
        The user pgbouncer runs as, for readability checks (default: the
        file's ``user`` key, then ``pgbouncer:service_user``, then
        ``postgres``).
    restart_timeout
        Seconds a restart waits for the safe shutdown.

    Order: render, validate (invalid: result False, nothing touched), write
    atomically with a backup, RELOAD, compare ``SHOW CONFIG`` with the file.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pgbouncer.configured /etc/pgbouncer/pgbouncer.ini \
            settings='{listen_port: 6432, auth_type: md5, auth_file: /etc/pgbouncer/userlist.txt}' \
            service=pgbouncer test=True
    """
    ret = opsalt_state.new_ret(name)
    admin = _admin_args(admin)
    text = __salt__["pgbouncer.render_config"](databases, users, dict(settings or {}))
    verdict = __salt__["pgbouncer.validate"](name, text=text, service_user=service_user)
    if not verdict["valid"]:
        return opsalt_state.fail(
            ret, f"{name} not changed: the new configuration is invalid: " + "; ".join(verdict["errors"])
        )
    old_text = opsalt_files.read_text(name)
    owned = opsalt_files.ownership(name)
    wanted = _wanted_ownership(owned, owner, group, int(str(mode), 8)) if owned else None
    server = __salt__["pgbouncer.status"](service=service, pidfile=pidfile, **admin)
    plan = _plan(old_text, text, server, admin)
    plan["restart"] = bool(plan["restart_keys"]) and restart and server["running"]
    rewrite = old_text != text or owned != wanted
    if not (rewrite or plan["reload"] or plan["restart"]):
        ret["comment"] = f"{name} is up to date"
        if plan["restart_keys"] and server["running"]:
            _note_pending(ret, plan["restart_keys"])
        return ret

    changes = {}
    if old_text != text:
        changes["diff"] = pgconf.redact_ini(opsalt_files.unified_diff(old_text, text, name))
        changes.update(_entry_changes(_parse_or_none(old_text), plan["sections"]))
    if owned != wanted and owned is not None:
        changes["ownership"] = {"old": "%s:%s %04o" % owned, "new": "%s:%s %04o" % wanted}
    if __opts__["test"]:
        if plan["keys"]:
            changes["keys"] = plan["keys"]
        return opsalt_state.would_change(
            ret, changes, f"{name} would be updated; would {_action(plan, server)}"
        )

    backup = None
    try:
        if rewrite:
            backup = __salt__["pgbouncer.write_file"](name, text, owner=owner, group=group, mode=mode)
            if backup:
                changes["backup"] = backup
        if not server["running"]:
            ret["changes"] = changes
            ret["comment"] = f"{name} written; pgbouncer is not running, nothing reloaded"
            return ret
        changes["reloaded"] = __salt__["pgbouncer.signal_reload"](service=service, pidfile=pidfile, **admin)
        if plan["restart"]:
            # a new process that does not start gets the old file back and is started again with it
            __salt__["pgbouncer.restart"](
                service=service, pidfile=pidfile, timeout=restart_timeout, rollback_from=backup, config=name
            )
            changes["restarted"] = True
            admin = _console_after_restart(admin, plan["running"], plan["sections"]["pgbouncer"])
        after = _wait_for_console(admin) if server["console"] else None
    except CommandExecutionError as err:
        if backup and opsalt_files.read_text(name) == old_text:
            # the restart put the old file back: only the restart itself is left of this run
            running = __salt__["pgbouncer.status"](service=service, pidfile=pidfile, **admin)["running"]
            changes = {
                "rolled_back": {
                    "restored_from": backup,
                    "pgbouncer": "running the previous configuration" if running else "DOWN",
                }
            }
        ret["changes"] = changes
        return opsalt_state.fail(ret, f"{name}: applying failed: {err}")
    ret["changes"] = changes
    return _verify(ret, plan, after)


def _plan(old_text, text, server, admin):
    """
    What applying ``text`` changes on the server: ``keys`` (old/new, from
    SHOW CONFIG when the console answers, else from the old file),
    ``restart_keys`` among them, whether a reload is due.
    """
    sections = pgconf.parse_ini(text)
    running = __salt__["pgbouncer.running_config"](**admin) if server["console"] else None
    if running is not None:
        keys = _differences(_desired_values(sections["pgbouncer"], running), running)
        restart_keys = _needs_restart(keys, running)
    else:
        keys = _file_key_changes(_parse_or_none(old_text), sections)
        restart_keys = sorted(k for k in keys if k in pgconf.RESTART_ONLY)
    reload_keys = set(keys) - set(restart_keys)
    return {
        "sections": sections,
        "running": running,
        "keys": keys,
        "restart_keys": restart_keys,
        "reload": bool(server["console"] and (old_text != text or reload_keys)),
    }


def _action(plan, server):
    if not server["running"]:
        return "do nothing more: pgbouncer is not running"
    if plan["restart"]:
        return f"restart pgbouncer for {', '.join(plan['restart_keys'])}"
    if plan["restart_keys"]:
        return f"reload pgbouncer; a restart is still needed for {', '.join(plan['restart_keys'])} (restart: false)"
    return "reload pgbouncer"


def _note_pending(ret, keys):
    ret["comment"] += f"; waiting for a pgbouncer restart to apply: {', '.join(keys)}"
    ret["warnings"] = [f"not applied until pgbouncer restarts: {', '.join(keys)}"]


def _verify(ret, plan, after):
    """
    Compare SHOW CONFIG after the reload/restart with the file: report the
    keys that really changed, fail on a changeable key RELOAD did not apply,
    name the keys waiting for a restart.
    """
    name, changes = ret["name"], ret["changes"]
    if after is None:
        ret["comment"] = f"{name} written and {changes['reloaded']}; the console is not reachable to verify"
        return ret
    remaining = _differences(_desired_values(plan["sections"]["pgbouncer"], after), after)
    applied = {k: v for k, v in plan["keys"].items() if k not in remaining}
    if applied:
        changes["keys"] = applied
    pending = _needs_restart(remaining, after)
    not_applied = sorted(set(remaining) - set(pending))
    if not_applied:
        return opsalt_state.fail(
            ret,
            f"{name} written and reloaded, but pgbouncer still runs with the old "
            f"{', '.join(not_applied)}; see its log for why the RELOAD did not apply them",
        )
    ret["comment"] = f"{name} updated; {'restarted' if changes.get('restarted') else 'reloaded'}"
    if pending:
        changes["pending_restart"] = pending
        _note_pending(ret, pending)
        ret["comment"] += " (restart: false)"
    return ret


def _console_after_restart(admin, running_before, settings):
    # The console listens where pgbouncer does: follow a moved listen_port.
    if running_before is None or "listen_port" not in settings:
        return admin
    old_port = str(running_before.get("listen_port", {}).get("value"))
    admin = dict(admin)
    configured = __salt__["config.get"]("pgbouncer:admin", {}) or {}
    if str(admin.get("port", configured.get("port", 6432))) == old_port:
        admin["port"] = int(settings["listen_port"])
    return admin


def _wait_for_console(admin, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return __salt__["pgbouncer.running_config"](**admin)
        except CommandExecutionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _desired_secret(user, spec, method, existing, iterations, verifier_from):
    """
    ``(secret, how)``: the existing secret when it already matches the
    pillar password (a SCRAM salt is random: compare by verifying), else a
    new one.
    """
    if isinstance(spec, dict) and spec.get("secret"):
        return spec["secret"], "given"
    password = spec["password"] if isinstance(spec, dict) else spec
    if password is None or password == "":
        raise CommandExecutionError(f"user '{user}' has no password or secret in the pillar")
    password = str(password)
    method = (spec.get("method") if isinstance(spec, dict) else None) or method
    if (
        existing is not None
        and pgconf.secret_kind(existing) == method
        and pgconf.verify_secret(user, password, existing)
    ):
        return existing, "kept"
    from_pg = spec.get("from_pg", True) if isinstance(spec, dict) else True
    if method == "scram-sha-256" and verifier_from and from_pg:
        return __salt__["pgbouncer.secret"](user, password, from_pg=True, pg=verifier_from), "pg_authid"
    return __salt__["pgbouncer.secret"](user, password, method=method, iterations=iterations), "new"


def userlist(  # noqa: C901 - planning moves into the module (issue 14)
    name,
    users,
    auth_type=None,
    config=None,
    method=None,
    owner="postgres",
    group="postgres",
    mode="0640",
    iterations=4096,
    verifier_from=None,
    reload=True,
    service=None,
    pidfile=None,
    admin=None,
):
    """
    Manage ``userlist.txt`` at ``name``: exactly the ``users`` given.

    name
        Path of the userlist (pgbouncer's ``auth_file``).
    users
        ``{user: password}``, or ``{user: {password: ..., method: ...}}``, or
        ``{user: {secret: "SCRAM-SHA-256$..." | "md5..."}}``. With
        ``verifier_from``, ``from_pg: false`` marks a user that exists only
        in pgbouncer (an admin_users entry): it gets a fresh verifier.
    auth_type
        pgbouncer's auth_type; plain passwords are stored per it (md5: md5,
        plain: plain, otherwise SCRAM-SHA-256). Default: read from
        ``config``, else md5.
    config
        Path of ``pgbouncer.ini`` to read ``auth_type`` from.
    method
        Force the storage method (scram-sha-256, md5, plain).
    owner, group, mode
        Of the file; mode 0640 or stricter.
    iterations
        SCRAM iteration count for new verifiers.
    verifier_from
        PostgreSQL connection ``{host, port, user, password}`` (a superuser):
        take SCRAM verifiers from ``pg_authid`` so pgbouncer can log in to the
        server with them.
    reload
        Reload a running pgbouncer after a change (default true).
    service, pidfile, admin
        How to reach the running pgbouncer, as for ``configured``.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single pgbouncer.userlist /etc/pgbouncer/userlist.txt \
            users='{app: {password: S3cret, method: scram-sha-256}}' service=pgbouncer test=True
    """
    ret = opsalt_state.new_ret(name)
    admin = _admin_args(admin)
    wanted_mode = int(str(mode), 8)
    if wanted_mode & 0o137:
        return opsalt_state.fail(ret, f"mode {mode} is too open for a userlist: use 0640 or stricter")
    if not isinstance(users, dict):
        return opsalt_state.fail(ret, "users must be a mapping of user name to password or {secret: ...}")
    if auth_type is None:
        sections = __salt__["pgbouncer.read_config"](config) if config else None
        auth_type = ((sections or {}).get("pgbouncer") or {}).get("auth_type", "md5")
    method = method or pgconf.method_for_auth_type(auth_type)

    old_text = opsalt_files.read_text(name)
    note = ""
    try:
        existing = pgconf.parse_userlist(old_text) if old_text is not None else {}
    except pgconf.ConfigError as err:
        existing, note = {}, f" (the old file was malformed: {err})"
    try:
        entries, how = {}, {}
        for user in sorted(users):
            entries[user], how[user] = _desired_secret(
                user, users[user], method, existing.get(user), iterations, verifier_from
            )
        text = pgconf.render_userlist(entries)
        problems = pgconf.auth_type_problems(str(auth_type).lower(), entries)
        pgconf.parse_userlist(text)
    except (CommandExecutionError, pgconf.ConfigError) as err:
        return opsalt_state.fail(ret, f"{name} not changed: {err}")
    if problems:
        return opsalt_state.fail(ret, f"{name} not changed: " + "; ".join(problems))

    changes = {}
    added = sorted(set(entries) - set(existing))
    removed = sorted(set(existing) - set(entries))
    updated = sorted(u for u in set(entries) & set(existing) if entries[u] != existing[u])
    for key, value in (("added", added), ("updated", updated), ("removed", removed)):
        if value:
            changes[key] = value
    owned = opsalt_files.ownership(name)
    wanted = _wanted_ownership(owned, owner, group, wanted_mode) if owned else None
    if owned != wanted:
        changes["ownership"] = {"old": "%s:%s %04o" % owned, "new": "%s:%s %04o" % wanted}
    if old_text == text and not changes:
        ret["comment"] = f"{name} is up to date ({len(entries)} users)"
        return ret
    if old_text != text and not changes:
        changes["rewritten"] = f"normalised quoting/order{note}"
    if __opts__["test"]:
        return opsalt_state.would_change(ret, changes, f"{name} would be updated{note}")
    try:
        backup = __salt__["pgbouncer.write_file"](name, text, owner=owner, group=group, mode=mode)
        if backup:
            changes["backup"] = backup
        if reload and (added or updated or removed):
            state = __salt__["pgbouncer.status"](service=service, pidfile=pidfile, **admin)
            if state["running"]:
                changes["reloaded"] = __salt__["pgbouncer.signal_reload"](
                    service=service, pidfile=pidfile, **admin
                )
    except CommandExecutionError as err:
        ret["changes"] = changes
        return opsalt_state.fail(ret, f"{name}: {err}")
    ret["changes"] = changes
    ret["comment"] = f"{name} updated ({len(entries)} users){note}"
    return ret
