"""
pgbouncer: the admin console, validation of ``pgbouncer.ini`` and
``userlist.txt``, userlist secrets, and reload/restart of a running
pgbouncer (systemd service or a process with a pidfile).

Console connection arguments (``host``, ``port``, ``user``, ``password``) may
be given on every function that talks to pgbouncer; missing ones come from
the minion config or pillar key ``pgbouncer:admin`` (``config.get``), then
``127.0.0.1:6432`` as user ``pgbouncer``.

The console speaks only the simple query protocol and has no transactions:
psycopg 3 is used in autocommit mode with plain SQL strings (no parameters),
and ``psql`` only when psycopg is not installed (psql output carries no
column types: every value that looks like an integer comes back as one).
"""

import decimal
import logging
import os
import re
import signal
import subprocess
import time

import opsalt_cmd
import opsalt_files
import opsalt_pgbouncer as pgconf
from opsalt_secrets import redact_text
from salt.exceptions import CommandExecutionError

try:
    import psycopg

    HAS_PSYCOPG = True
except ImportError:  # pragma: no cover - depends on the host
    HAS_PSYCOPG = False

log = logging.getLogger(__name__)

__virtualname__ = "pgbouncer"

SHOW_TOPICS = (
    "pools",
    "stats",
    "stats_totals",
    "stats_averages",
    "totals",
    "databases",
    "clients",
    "servers",
    "config",
    "lists",
    "mem",
    "users",
    "sockets",
    "active_sockets",
    "fds",
    "dns_hosts",
    "dns_zones",
    "version",
    "state",
)
DEFAULT_ADMIN = {"host": "127.0.0.1", "port": 6432, "user": "pgbouncer", "password": None}
# Database names go into console commands verbatim (no parameters there), so
# only plain identifiers pass.
_DB_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def _which(name):
    for directory in os.environ.get("PATH", "/usr/bin:/bin").split(":") + ["/usr/sbin", "/usr/bin"]:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def __virtual__():
    if not HAS_PSYCOPG and not _which("psql"):
        return (
            False,
            "pgbouncer needs psycopg 3 (pip install 'opsalt[pgbouncer]') or the psql client for the admin console",
        )
    return __virtualname__


# -- the admin console ------------------------------------------------------


def _admin(host=None, port=None, user=None, password=None):
    configured = __salt__["config.get"]("pgbouncer:admin", {}) or {}
    given = {"host": host, "port": port, "user": user, "password": password}
    args = {}
    for key, default in DEFAULT_ADMIN.items():
        value = given[key] if given[key] is not None else configured.get(key, default)
        args[key] = value
    args["port"] = int(args["port"])
    return args


def _plain(value):
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _console_psycopg(sql, admin, timeout):
    try:
        with psycopg.connect(
            host=admin["host"],
            port=admin["port"],
            user=admin["user"],
            password=admin["password"],
            dbname="pgbouncer",
            autocommit=True,
            connect_timeout=timeout,
        ) as conn:
            # No parameters: psycopg sends a plain Query message, the only
            # protocol the console understands.
            cur = conn.execute(sql, prepare=False)
            if cur.description is None:
                return None, cur.statusmessage
            names = [column.name for column in cur.description]
            return [dict(zip(names, map(_plain, row))) for row in cur.fetchall()], cur.statusmessage
    except psycopg.Error as err:
        message = redact_text(str(err).strip(), [admin["password"]])
        raise CommandExecutionError(
            f"pgbouncer console {admin['user']}@{admin['host']}:{admin['port']}: '{sql}' failed: "
            f"{type(err).__name__}: {message}"
        ) from None


def _console_psql(sql, admin, timeout):
    env = {"PGCONNECT_TIMEOUT": timeout}
    if admin["password"] is not None:
        env["PGPASSWORD"] = admin["password"]
    proc = opsalt_cmd.run(
        [
            "psql",
            "-X",
            "-q",
            "-A",
            "-F",
            "\x1f",
            "-P",
            "footer=off",
            "-h",
            admin["host"],
            "-p",
            admin["port"],
            "-U",
            admin["user"],
            "-d",
            "pgbouncer",
            "-c",
            sql,
        ],
        env=env,
        timeout=timeout + 30,
        secrets=[admin["password"]],
    )
    lines = proc.stdout.splitlines()
    if not lines:
        return None, sql.split()[0].upper()
    names = lines[0].split("\x1f")
    rows = []
    for line in lines[1:]:
        values = [
            None if v == "" else (int(v) if re.fullmatch(r"-?\d+", v) else v) for v in line.split("\x1f")
        ]
        rows.append(dict(zip(names, values)))
    return rows, "SHOW"


def console(sql, host=None, port=None, user=None, password=None, timeout=10):
    """
    Run one admin-console command and return its rows (a list of dicts) or,
    for commands without rows, the status (e.g. ``RELOAD``).

    :param sql: the command, e.g. ``SHOW POOLS`` (no parameters: the console
        speaks only the simple query protocol)
    :param host: console host (default from ``pgbouncer:admin`` or 127.0.0.1)
    :param port: console port (default from ``pgbouncer:admin`` or 6432)
    :param user: a user listed in ``admin_users``/``stats_users``
    :param password: its password
    :param timeout: connect timeout in seconds

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.console 'SHOW LISTS'
    """
    admin = _admin(host, port, user, password)
    runner = _console_psycopg if HAS_PSYCOPG else _console_psql
    rows, status = runner(sql, admin, int(timeout))
    return status if rows is None else rows


def show(what, host=None, port=None, user=None, password=None):
    """
    ``SHOW <what>`` as a list of dicts keyed by column name (columns differ
    between pgbouncer versions; look them up by name).

    :param what: one of pools, stats, stats_totals, stats_averages, totals,
        databases, clients, servers, config, lists, mem, users, sockets,
        active_sockets, fds, dns_hosts, dns_zones, version, state

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.show pools
        salt '*' pgbouncer.show config port=6432 user=pgbouncer password=secret
    """
    topic = str(what).lower()
    if topic not in SHOW_TOPICS:
        raise CommandExecutionError(f"cannot SHOW '{what}': choose one of {', '.join(SHOW_TOPICS)}")
    return console(f"SHOW {topic.upper()}", host, port, user, password)


def _command(verb, db, required, admin):
    if db is None:
        if required:
            raise CommandExecutionError(f"{verb} needs a database name")
        return console(verb, **admin)
    if not _DB_NAME.match(str(db)):
        raise CommandExecutionError(f"'{db}' is not a plain database name (letters, digits, _ . -)")
    return console(f"{verb} {db}", **admin)


def reload(host=None, port=None, user=None, password=None):
    """
    ``RELOAD``: re-read ``pgbouncer.ini`` and the auth_file. pgbouncer
    answers ``RELOAD`` even when the file is bad (errors go only to its
    log), so ``pgbouncer.configured`` validates first and checks
    ``SHOW CONFIG`` after.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.reload
    """
    return console("RELOAD", host, port, user, password)


def pause(db=None, host=None, port=None, user=None, password=None):
    """
    ``PAUSE [db]``: wait for server connections to be released, then hold
    new queries.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.pause appdb
    """
    return _command("PAUSE", db, False, _admin(host, port, user, password))


def resume(db=None, host=None, port=None, user=None, password=None):
    """
    ``RESUME [db]`` after ``PAUSE``, ``SUSPEND`` or ``KILL``.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.resume appdb
    """
    return _command("RESUME", db, False, _admin(host, port, user, password))


def kill(db, host=None, port=None, user=None, password=None):
    """
    ``KILL db``: drop every client and server connection of ``db`` at once.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.kill appdb
    """
    return _command("KILL", db, True, _admin(host, port, user, password))


def disable(db, host=None, port=None, user=None, password=None):
    """
    ``DISABLE db``: refuse new client connections to ``db``.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.disable appdb
    """
    return _command("DISABLE", db, True, _admin(host, port, user, password))


def enable(db, host=None, port=None, user=None, password=None):
    """
    ``ENABLE db`` after ``DISABLE``.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.enable appdb
    """
    return _command("ENABLE", db, True, _admin(host, port, user, password))


def reconnect(db=None, host=None, port=None, user=None, password=None):
    """
    ``RECONNECT [db]``: close server connections as soon as they are
    released (after a failover or a DNS change).

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.reconnect appdb
    """
    return _command("RECONNECT", db, False, _admin(host, port, user, password))


def wait_close(db=None, host=None, port=None, user=None, password=None):
    """
    ``WAIT_CLOSE [db]``: block until the server connections closed by
    ``RECONNECT`` or ``RELOAD`` are gone.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.wait_close appdb
    """
    return _command("WAIT_CLOSE", db, False, _admin(host, port, user, password))


def health(max_waiting=0, max_wait=1.0, host=None, port=None, user=None, password=None):
    """
    Pool health from ``SHOW POOLS`` and ``SHOW DATABASES``: a pool is
    unhealthy when more than ``max_waiting`` clients wait, when its oldest
    waiting client has waited more than ``max_wait`` seconds, or when it is
    saturated (every server slot of its pool_size busy while clients wait).

    Returns ``{"healthy": bool, "problems": [...], "pools": [...]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.health max_waiting=5 max_wait=0.5
    """
    admin = dict(host=host, port=port, user=user, password=password)
    pools = show("pools", **admin)
    databases = {row["name"]: row for row in show("databases", **admin)}
    problems, summary = [], []
    for pool in pools:
        if pool["database"] == "pgbouncer":
            continue
        name = f"{pool['database']}/{pool['user']}"
        waited = float(pool.get("maxwait") or 0) + float(pool.get("maxwait_us") or 0) / 1e6
        size = (databases.get(pool["database"]) or {}).get("pool_size")
        busy = int(pool.get("sv_active") or 0)
        waiting = int(pool.get("cl_waiting") or 0)
        saturated = bool(size) and busy >= int(size) and waiting > 0
        summary.append(
            {
                "pool": name,
                "cl_active": pool.get("cl_active"),
                "cl_waiting": waiting,
                "sv_active": busy,
                "pool_size": size,
                "maxwait": round(waited, 6),
                "saturated": saturated,
            }
        )
        if waiting > int(max_waiting):
            problems.append(f"{name}: {waiting} clients waiting (threshold {max_waiting})")
        if waited > float(max_wait):
            problems.append(f"{name}: a client has waited {waited:.3f} s (threshold {max_wait} s)")
        if saturated:
            problems.append(f"{name}: saturated, {busy}/{size} server connections busy with clients waiting")
    return {"healthy": not problems, "problems": problems, "pools": summary}


def running_config(host=None, port=None, user=None, password=None):
    """
    ``SHOW CONFIG`` as ``{key: {"value", "default", "changeable"}}``
    (``changeable`` a bool: false means a RELOAD keeps the old value).

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.running_config
    """
    config = {}
    for row in show("config", host, port, user, password):
        config[row["key"]] = {
            "value": row.get("value"),
            "default": row.get("default"),
            "changeable": str(row.get("changeable", "yes")).lower() in ("yes", "true", "1"),
        }
    return config


# -- files --------------------------------------------------------------------


def version():
    """
    The installed pgbouncer's version as a string (``1.18.0``), or ``None``
    when the binary is missing.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.version
    """
    binary = _which("pgbouncer")
    if binary is None:
        return None
    out = opsalt_cmd.run([binary, "--version"], timeout=15).stdout
    match = re.search(r"PgBouncer\s+(\d+\.\d+(?:\.\d+)?)", out, re.IGNORECASE)
    return match.group(1) if match else None


def _version_tuple():
    text = version()
    return tuple(int(part) for part in text.split(".")) if text else None


def render_config(databases=None, users=None, settings=None):
    """
    ``pgbouncer.ini`` text for the ``[databases]``, ``[users]`` and
    ``[pgbouncer]`` sections (database entries may be mappings of
    connection parameters).

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.render_config settings='{listen_port: 6432, auth_type: md5}'
    """
    return pgconf.render_ini(
        databases, users, settings, header="Managed by Salt (opsalt pgbouncer.configured)."
    )


def read_config(path):
    """
    ``{section: {key: value}}`` of the ``pgbouncer.ini`` at ``path``
    (``None`` when missing).

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.read_config /etc/pgbouncer/pgbouncer.ini
    """
    return _read_parsed(path, pgconf.parse_ini)


def validate(path, text=None, service_user=None, userlist_text=None):
    """
    The checks pgbouncer lacks, for the file at ``path`` (or for ``text``,
    a candidate content for ``path``): known sections and keys for the
    installed version, value types and enums, referenced files present and
    readable by the service user, a well-formed auth_file, and ``auth_type``
    consistent with its secrets.

    :param service_user: the user pgbouncer runs as (default: the file's
        ``user`` key, then ``pgbouncer:service_user`` from config, then
        ``postgres``)
    :param userlist_text: the auth_file content about to be written, to
        check it instead of the file on disk

    Returns ``{"valid": bool, "errors": [...]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.validate /etc/pgbouncer/pgbouncer.ini
    """
    if text is None:
        text = opsalt_files.read_text(path)
        if text is None:
            return {"valid": False, "errors": [f"{path} does not exist"]}
    try:
        sections = pgconf.parse_ini(text)
    except pgconf.ConfigError as err:
        return {"valid": False, "errors": [str(err)]}
    service_user = (
        service_user
        or (sections.get("pgbouncer") or {}).get("user")
        or __salt__["config.get"]("pgbouncer:service_user", None)
        or "postgres"
    )
    errors = pgconf.validate(sections, _version_tuple(), service_user, userlist_text)
    return {"valid": not errors, "errors": errors}


def _pg_stored_secret(user, pg):
    if not HAS_PSYCOPG:
        raise CommandExecutionError("reading verifiers from pg_authid needs psycopg 3")
    pg = dict(pg or {})
    pg.setdefault("dbname", "postgres")
    try:
        with psycopg.connect(autocommit=True, connect_timeout=10, **pg) as conn:
            row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (user,)).fetchone()
    except psycopg.Error as err:
        message = redact_text(str(err).strip(), [pg.get("password")])
        raise CommandExecutionError(
            f"cannot read pg_authid for '{user}': {type(err).__name__}: {message}"
        ) from None
    if row is None or row[0] is None:
        raise CommandExecutionError(f"role '{user}' has no password in pg_authid")
    return row[0]


def secret(user, password, method="scram-sha-256", iterations=4096, from_pg=False, pg=None):
    """
    A userlist secret for ``user``/``password``.

    :param method: ``scram-sha-256`` (a verifier with a random salt),
        ``md5`` or ``plain``
    :param iterations: SCRAM iteration count (at least 4096)
    :param from_pg: read the role's existing verifier from ``pg_authid``
        instead (pgbouncer can log in to PostgreSQL with SCRAM only when its
        verifier equals the server's); the password must match it
    :param pg: PostgreSQL connection arguments for ``from_pg`` (host, port,
        user, password, dbname), a superuser

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.secret app 'S3cret!' method=md5
        salt '*' pgbouncer.secret app 'S3cret!' from_pg=True pg='{host: 127.0.0.1, port: 5432, user: postgres}'
    """
    if from_pg:
        stored = _pg_stored_secret(user, pg)
        if not pgconf.verify_secret(user, password, stored):
            raise CommandExecutionError(
                f"the password given for '{user}' does not match its verifier in pg_authid; "
                "fix the pillar password or ALTER ROLE on the server"
            )
        return stored
    try:
        return pgconf.make_secret(user, password, method, iterations)
    except pgconf.ConfigError as err:
        raise CommandExecutionError(str(err)) from None


def verify_secret(user, password, stored):
    """
    True when ``stored`` (plain, md5 or a SCRAM verifier) belongs to
    ``password``.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.verify_secret app 'S3cret!' 'md5...'
    """
    return pgconf.verify_secret(user, password, stored)


def read_userlist(path):
    """
    ``{user: secret}`` from the userlist at ``path`` (``None`` when
    missing). Raises with the number of a malformed line.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.read_userlist /etc/pgbouncer/userlist.txt
    """
    return _read_parsed(path, pgconf.parse_userlist)


def _read_parsed(path, parse):
    text = opsalt_files.read_text(path)
    if text is None:
        return None
    try:
        return parse(text)
    except pgconf.ConfigError as err:
        raise CommandExecutionError(f"{path}: {err}") from None


def write_file(path, text, owner=None, group=None, mode="0640"):
    """
    Write ``text`` to ``path`` atomically with a backup of the old file,
    owned by ``owner``/``group`` with ``mode``. Returns the backup's path.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.write_file /etc/pgbouncer/pgbouncer.ini "$(cat new.ini)" owner=postgres group=postgres
    """
    try:
        return opsalt_files.atomic_write(path, text, mode=int(str(mode), 8), user=owner, group=group)
    except (OSError, KeyError) as err:
        raise CommandExecutionError(f"cannot write {path}: {err}") from None


# -- the process ----------------------------------------------------------------


def _pid_from(pidfile):
    try:
        with open(pidfile, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def status(service=None, pidfile=None, host=None, port=None, user=None, password=None):
    """
    Whether pgbouncer runs: ``{"running", "pid", "console"}`` (``console``
    true when the admin console answers).

    :param service: the systemd/init service name (Salt's ``service``
        module), or
    :param pidfile: the pidfile of a pgbouncer started directly

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.status service=pgbouncer
    """
    pid = _pid_from(pidfile) if pidfile else None
    running = pid is not None
    if service:
        running = bool(__salt__["service.status"](service))
    try:
        console("SHOW VERSION", host, port, user, password, timeout=5)
        reachable = True
    except CommandExecutionError:
        reachable = False
    return {"running": running or reachable, "pid": pid, "console": reachable}


def signal_reload(service=None, pidfile=None, host=None, port=None, user=None, password=None):
    """
    Reload the configuration: ``RELOAD`` on the console (synchronous), else
    the service's reload, else SIGHUP to the pid in ``pidfile``. Returns how.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.signal_reload service=pgbouncer
    """
    try:
        reload(host, port, user, password)
        return "console RELOAD"
    except CommandExecutionError as err:
        console_error = str(err)
    if service:
        if not __salt__["service.reload"](service):
            raise CommandExecutionError(f"service.reload {service} failed (console: {console_error})")
        return f"service.reload {service}"
    pid = _pid_from(pidfile) if pidfile else None
    if pid is None:
        raise CommandExecutionError(
            f"cannot reload pgbouncer: {console_error}; and no running service or pidfile"
        )
    os.kill(pid, signal.SIGHUP)
    return f"SIGHUP to pid {pid}"


def _wait_exit(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


def _log_size(logfile):
    try:
        return os.path.getsize(logfile) if logfile else None
    except OSError:
        return 0


def _fatal_since(logfile, offset):
    """
    The FATAL/ERROR lines pgbouncer logged after ``offset`` (a daemonized
    pgbouncer reports a failed start only there: ``pgbouncer -d`` exits 0
    before it binds its sockets).
    """
    if not logfile or offset is None:
        return []
    try:
        with open(logfile, "rb") as handle:
            handle.seek(offset)
            text = handle.read(65536).decode(errors="replace")
    except OSError:
        return []
    return [redact_text(line.strip()) for line in text.splitlines() if " FATAL " in line or " ERROR " in line]


def _start_daemon(argv, owner, cwd, pidfile, old_pid, logfile, wait=30):
    """
    Start pgbouncer daemonized as ``owner`` (uid, gid); return the new pid
    once it is in the pidfile and alive, or raise with pgbouncer's reason.
    """
    offset = _log_size(logfile)
    # subprocess directly: opsalt_cmd.run cannot start a process as another user.
    proc = subprocess.run(
        argv,
        user=owner[0],
        group=owner[1],
        extra_groups=[],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise CommandExecutionError(
            redact_text((proc.stderr or proc.stdout).strip()[-500:]) or f"exit {proc.returncode}"
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        new_pid = _pid_from(pidfile)
        if new_pid and new_pid != old_pid:
            return new_pid
        fatal = _fatal_since(logfile, offset)
        if fatal:
            raise CommandExecutionError("; ".join(fatal[-3:]))
        time.sleep(0.05)
    raise CommandExecutionError(f"no new pid in {pidfile} after {wait} s")


def _restart_pid(pidfile, timeout, rollback_from=None, config=None):
    pid = _pid_from(pidfile)
    if pid is None:
        raise CommandExecutionError(f"no running pgbouncer in pidfile {pidfile}")
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        argv = [part.decode() for part in handle.read().split(b"\0") if part]
    st = os.stat(f"/proc/{pid}")
    cwd = os.readlink(f"/proc/{pid}/cwd")
    if not argv or "pgbouncer" not in os.path.basename(argv[0]):
        raise CommandExecutionError(f"pid {pid} from {pidfile} is not pgbouncer ({argv[:1]})")
    logfile = ((read_config(config) or {}).get("pgbouncer") or {}).get("logfile") if config else None
    # SIGINT is pgbouncer's safe shutdown: it waits for server connections to
    # be released; SIGTERM after the timeout.
    os.kill(pid, signal.SIGINT)
    if not _wait_exit(pid, timeout):
        log.warning("pgbouncer pid %s still running %s s after SIGINT, sending SIGTERM", pid, timeout)
        os.kill(pid, signal.SIGTERM)
        if not _wait_exit(pid, 15):
            raise CommandExecutionError(f"pgbouncer pid {pid} did not stop; it was not restarted")
    if "-d" not in argv and "--daemon" not in argv:
        argv.insert(1, "-d")
    owner = (st.st_uid, st.st_gid)
    try:
        return _start_daemon(argv, owner, cwd, pidfile, pid, logfile)
    except CommandExecutionError as err:
        failure = f"pgbouncer did not start with the new configuration: {err}"
    if not (rollback_from and config):
        raise CommandExecutionError(f"{failure}; pgbouncer is DOWN (no previous configuration to go back to)")
    opsalt_files.restore(rollback_from, config)
    try:
        new_pid = _start_daemon(argv, owner, cwd, pidfile, pid, logfile)
    except CommandExecutionError as err:
        raise CommandExecutionError(
            f"{failure}; {config} was restored from {rollback_from}, but pgbouncer did not start with it "
            f"either: {err}; pgbouncer is DOWN"
        ) from None
    raise CommandExecutionError(
        f"{failure}; {config} was restored from {rollback_from} and pgbouncer runs again with it (pid {new_pid})"
    )


def restart(service=None, pidfile=None, timeout=30, rollback_from=None, config=None):
    """
    Restart pgbouncer so keys that a RELOAD cannot change take effect: the
    service's restart, or for a process with a ``pidfile``: SIGINT (safe
    shutdown, SIGTERM after ``timeout`` seconds) and the same command line
    again, daemonized, as the same user. Returns the new pid when known.

    When the new process does not start (a port in use, a missing
    directory) and ``rollback_from`` names the backup of ``config`` made
    before it was rewritten, the backup is put back and pgbouncer started
    again with it; the error then says so. A failed start is found in
    pgbouncer's ``logfile`` (``pgbouncer -d`` exits 0 before binding).

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.restart service=pgbouncer
        salt '*' pgbouncer.restart pidfile=/run/postgresql/pgbouncer.pid
        salt '*' pgbouncer.restart pidfile=/run/postgresql/pgbouncer.pid config=/etc/pgbouncer/pgbouncer.ini \\
            rollback_from=/etc/pgbouncer/pgbouncer.ini.20261126T010203.opsalt-bak
    """
    if service:
        if __salt__["service.restart"](service):
            return None
        failure = f"service.restart {service} failed; see journalctl -u {service}"
        if not (rollback_from and config):
            raise CommandExecutionError(failure)
        opsalt_files.restore(rollback_from, config)
        if not __salt__["service.start"](service):
            raise CommandExecutionError(
                f"{failure}; {config} was restored from {rollback_from}, but service.start {service} failed too: "
                "pgbouncer is DOWN"
            )
        raise CommandExecutionError(
            f"{failure}; {config} was restored from {rollback_from} and {service} started"
        )
    if pidfile:
        return _restart_pid(pidfile, float(timeout), rollback_from, config)
    raise CommandExecutionError("restart needs service or pidfile")
