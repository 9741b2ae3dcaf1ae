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
import pwd
import re
import signal
import subprocess

import opsalt_cmd
import opsalt_files
import opsalt_pgbouncer as pgconf
import opsalt_policy
import opsalt_state
import opsalt_validate
import opsalt_wait
import psutil
import salt.utils.path
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


# Operator policy defaults (opsalt:policy:pgbouncer in the minion config
# widens them; docs/components/pgbouncer.rst, "Security").
DEFAULT_ROOTS = ("/etc/pgbouncer",)
# trust and any let a client in without a password.
DEFAULT_AUTH_TYPES = tuple(a for a in pgconf.AUTH_TYPES if a not in ("trust", "any"))
# admin_users/stats_users get the console (SHUTDOWN, KILL, RELOAD...).
DEFAULT_CONSOLE_USERS = ("pgbouncer",)
# Whoever owns pgbouncer.ini/userlist.txt can rewrite them (auth_type =
# trust); a group with 0640 reads every secret: service accounts and root.
DEFAULT_OWNERS = ("postgres", "pgbouncer", "root")
DEFAULT_GROUPS = ("postgres", "pgbouncer", "root")
# The files pgbouncer itself writes (pidfile, logfile, its unix socket) or
# reads (TLS keys and certificates) as its service user, maybe as root
# before it drops to ``user``: the Debian and RedHat packages' directories.
_RUN_DIRS = ("/run/postgresql", "/var/run/postgresql", "/run/pgbouncer", "/var/run/pgbouncer")
_TLS_DIRS = ("/etc/pgbouncer", "/etc/ssl", "/etc/pki/tls")
# settings key -> default prefixes (opsalt:policy:allowed_paths and
# opsalt:policy:pgbouncer:allowed_paths widen every one)
DEFAULT_SETTINGS_ROOTS = {
    "auth_file": DEFAULT_ROOTS,
    "auth_hba_file": DEFAULT_ROOTS,
    "pidfile": _RUN_DIRS,
    # /tmp: pgbouncer's built-in default and RedHat's
    "unix_socket_dir": (*_RUN_DIRS, "/tmp"),
    "logfile": ("/var/log/postgresql", "/var/log/pgbouncer"),
    # the DNS configuration pgbouncer resolves server hosts with (c-ares)
    "resolv_conf": ("/etc/resolv.conf", "/etc/pgbouncer"),
    **{
        f"{side}_tls_{kind}_file": _TLS_DIRS
        for side in ("client", "server")
        for kind in ("key", "cert", "ca")
    },
}
# auth_query is SQL pgbouncer runs on the server as auth_user for every
# login it looks up: pgbouncer's own defaults (1.18, and 1.21 and later).
DEFAULT_AUTH_QUERIES = (
    "SELECT usename, passwd FROM pg_shadow WHERE usename=$1",
    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
    "FROM pg_authid WHERE rolname=$1 AND rolcanlogin",
)
# pkg.installed/pkg.removed and service.running/dead/reload/restart as root.
DEFAULT_PACKAGES = ("pgbouncer",)
DEFAULT_SERVICES = ("pgbouncer",)
# pillar key -> (opsalt:policy:pgbouncer key, default allowlist)
NAME_POLICY = {
    "user": ("owners", DEFAULT_OWNERS),
    "group": ("groups", DEFAULT_GROUPS),
    "pkg": ("packages", DEFAULT_PACKAGES),
    "service": ("services", DEFAULT_SERVICES),
}
# a pidfile holds one number
PIDFILE_MAX_BYTES = 4096
_VERSION = re.compile(r"PgBouncer\s+(\d+\.\d+(?:\.\d+)?)", re.IGNORECASE)


def _which(name):
    # salt.utils.path.which searches PATH; pgbouncer lives in /usr/sbin,
    # which a salt-call from a user shell may not have.
    return salt.utils.path.which(name) or salt.utils.path.which(os.path.join("/usr/sbin", name))


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
        ) from None  # psycopg's error may echo the connection's password


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


def _command_sql(verb, db, required):
    if db is None:
        if required:
            raise CommandExecutionError(f"{verb} needs a database name")
        return verb
    if not _DB_NAME.match(str(db)):
        raise CommandExecutionError(f"'{db}' is not a plain database name (letters, digits, _ . -)")
    return f"{verb} {db}"


def _command(verb, db, required, admin):
    return console(_command_sql(verb, db, required), **admin)


def _console_within(sql, admin, seconds):
    # PAUSE answers only once its server connections are released, which in
    # session pooling can be never: wait for the answer on the libpq level,
    # for at most ``seconds``. Its status, or None when it did not come.
    if not HAS_PSYCOPG:
        raise CommandExecutionError(
            f"'{sql}' with a timeout needs psycopg 3 (pip install 'opsalt[pgbouncer]')"
        )
    params = {key: admin[key] for key in ("host", "port", "user", "password") if admin[key] is not None}
    conninfo = psycopg.conninfo.make_conninfo(dbname="pgbouncer", connect_timeout=10, **params)
    pgconn = psycopg.pq.PGconn.connect(conninfo.encode())
    try:
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            raise psycopg.OperationalError(pgconn.error_message.decode(errors="replace"))
        pgconn.send_query(sql.encode())

        def answered():
            pgconn.consume_input()
            return not pgconn.is_busy()

        if not opsalt_wait.until(answered, seconds, interval=0.05, max_interval=0.5):
            return None
        result = pgconn.get_result()
        if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
            raise psycopg.OperationalError(result.error_message.decode(errors="replace"))
        return result.command_status.decode()
    except psycopg.Error as err:
        message = redact_text(str(err).strip(), [admin["password"]])
        raise CommandExecutionError(
            f"pgbouncer console {admin['user']}@{admin['host']}:{admin['port']}: '{sql}' failed: "
            f"{type(err).__name__}: {message}"
        ) from None
    finally:
        pgconn.finish()


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


def pause(db=None, host=None, port=None, user=None, password=None, timeout=None):
    """
    ``PAUSE [db]``: wait for server connections to be released, then hold
    new queries. In transaction pooling a server connection is released at
    the end of its transaction; in session pooling only when its client
    disconnects, so there PAUSE waits for every client to leave.

    :param timeout: seconds to wait at most for the pause to complete. If it
        did not, ``db`` (or the whole pgbouncer) is resumed, since a pending
        PAUSE already holds every new query, and ``CommandExecutionError`` is
        raised. Without it, the call waits as long as PAUSE does.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.pause appdb
        salt '*' pgbouncer.pause appdb timeout=30
    """
    admin = _admin(host, port, user, password)
    if timeout is None:
        return _command("PAUSE", db, False, admin)
    status = _console_within(_command_sql("PAUSE", db, False), admin, float(timeout))
    if status is not None:
        return status
    what = db or "pgbouncer"
    try:
        _command("RESUME", db, False, admin)
    except CommandExecutionError as err:
        if "not paused" in str(err):  # resumed meanwhile by someone else
            raise CommandExecutionError(f"PAUSE {what} did not complete within {timeout} s") from None
        raise CommandExecutionError(
            f"PAUSE {what} did not complete within {timeout} s, and RESUME failed: {err}; "
            f"new queries wait until `salt-call pgbouncer.resume {db or ''}` succeeds"
        ) from None
    raise CommandExecutionError(
        f"PAUSE {what} did not complete within {timeout} s: server connections are still in use (in "
        f"session pooling PAUSE waits for every client to disconnect, in transaction pooling for the "
        f"running transactions to end); {what} was resumed"
    )


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
    match = _VERSION.search(out)
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
        try:
            text = _read_text(path)
        except CommandExecutionError as err:
            return {"valid": False, "errors": [str(err)]}
        if text is None:
            return {"valid": False, "errors": [f"{path} does not exist"]}
    try:
        sections = pgconf.parse_ini(text)
    except pgconf.ConfigError as err:
        return {"valid": False, "errors": [str(err)]}
    doubled = pgconf.duplicates(text)
    service_user = (
        service_user
        or (sections.get("pgbouncer") or {}).get("user")
        or __salt__["config.get"]("pgbouncer:service_user", None)
        or "postgres"
    )
    errors = doubled + pgconf.validate(sections, _version_tuple(), service_user, userlist_text)
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
        ) from None  # psycopg's error may echo the connection's password
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
        raise CommandExecutionError(str(err)) from err


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


def _read_text(path):
    """
    The text of ``path`` (a path pillar chose, read by root): no link at
    its last component, no FIFO, one link, at most 1 MiB; ``None`` when
    missing.
    """
    try:
        return opsalt_files.read_regular(path)
    except (OSError, ValueError) as err:
        raise CommandExecutionError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from err


def _read_parsed(path, parse):
    text = _read_text(path)
    if text is None:
        return None
    try:
        return parse(text)
    except pgconf.ConfigError as err:
        raise CommandExecutionError(f"{path}: {err}") from err


def write_file(path, text, owner=None, group=None, mode="0640"):
    """
    Write ``text`` to ``path`` atomically with a backup of the old file,
    owned by ``owner``/``group`` with ``mode``. Returns the backup's path.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.write_file /etc/pgbouncer/pgbouncer.ini "$(cat new.ini)" owner=postgres group=postgres
    """
    try:
        bits = opsalt_validate.mode(mode)
        return opsalt_files.atomic_write(
            path, text, mode=bits, user=owner, group=group, keep_backups=opsalt_files.backup_keep(__salt__)
        )
    except (OSError, KeyError, ValueError) as err:
        raise CommandExecutionError(f"cannot write {path}: {err}") from err


# -- the process ----------------------------------------------------------------


def _read_pid(pidfile):
    """
    The number in ``pidfile`` (pillar chooses the path: read without
    following a link or blocking on a FIFO), or ``None``.
    """
    try:
        text = opsalt_files.read_regular(pidfile, PIDFILE_MAX_BYTES)
        return int(text.strip()) if text is not None else None
    except (OSError, ValueError):
        return None


def _pgbouncer_process(pid, pidfile):
    """
    The ``psutil.Process`` of ``pid`` when it is a live pgbouncer (its
    executable, which its argv cannot fake, is named pgbouncer); else raise:
    a pidfile may hold a recycled pid or one that pillar pointed at.
    """
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            raise CommandExecutionError(f"pid {pid} from {pidfile} has exited")
        exe = process.exe()
    except psutil.Error as err:
        raise CommandExecutionError(f"cannot inspect pid {pid} from {pidfile}: {err}") from err
    if not exe or "pgbouncer" not in os.path.basename(exe):
        raise CommandExecutionError(
            f"pid {pid} from {pidfile} is not pgbouncer ({exe or 'executable unknown'}); not signalled"
        )
    return process


def _pid_from(pidfile):
    pid = _read_pid(pidfile)
    if pid is None:
        return None
    try:
        return _pgbouncer_process(pid, pidfile).pid
    except CommandExecutionError:
        return None


def status(service=None, pidfile=None, host=None, port=None, user=None, password=None):
    """
    Whether pgbouncer runs: ``{"running", "pid", "console"}`` (``console``
    true when the admin console answers).

    :param service: the systemd/init service name (Salt's ``service``
        module), or
    :param pidfile: the pidfile of a pgbouncer started directly (its pid
        counts only when that process is pgbouncer)

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
    the service's reload, else SIGHUP to the pid in ``pidfile`` once that
    process is found to be pgbouncer (its executable; anything else is
    refused, not signalled). Returns how.

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
    pid = _read_pid(pidfile) if pidfile else None
    if pid is None:
        raise CommandExecutionError(
            f"cannot reload pgbouncer: {console_error}; and no running service or pidfile"
        )
    # psutil re-checks the process's start time, so a pid recycled since is not signalled
    _pgbouncer_process(pid, pidfile).send_signal(signal.SIGHUP)
    return f"SIGHUP to pid {pid}"


def _exited(process):
    # A zombie has exited: whoever started it reaps it, which may be never
    # (psutil's wait on a process that is not our child waits for that).
    try:
        if not process.is_running():
            return True
        if process.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    try:
        process.wait(0)  # reaps it when it is our child
    except (psutil.Error, ChildProcessError):
        pass
    return True


def _wait_exit(process, timeout):
    return bool(opsalt_wait.until(lambda: _exited(process), timeout))


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


def _run_as(argv, owner, cwd=None, timeout=60):
    """
    Run ``argv`` as ``owner`` (uid, gid) of the running pgbouncer, never as
    root by default: its path comes from that process's command line.
    """
    # subprocess directly: opsalt_cmd.run cannot start a process as another user.
    try:
        return subprocess.run(
            argv,
            user=owner[0],
            group=owner[1],
            extra_groups=[],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise CommandExecutionError(f"cannot run {argv[0]}: {err}") from err


def _start_daemon(argv, owner, cwd, pidfile, old_pid, logfile, wait=30):
    """
    Start pgbouncer daemonized as ``owner`` (uid, gid); return the new pid
    once it is in the pidfile and alive, or raise with pgbouncer's reason.
    """
    offset = _log_size(logfile)
    proc = _run_as(argv, owner, cwd)
    if proc.returncode != 0:
        raise CommandExecutionError(
            redact_text((proc.stderr or proc.stdout).strip()[-500:]) or f"exit {proc.returncode}"
        )

    def started():
        new_pid = _pid_from(pidfile)
        if new_pid and new_pid != old_pid:
            return new_pid
        fatal = _fatal_since(logfile, offset)
        if fatal:
            raise CommandExecutionError("; ".join(fatal[-3:]))
        return None

    new_pid = opsalt_wait.until(started, wait, interval=0.05, max_interval=0.2)
    if not new_pid:
        raise CommandExecutionError(f"no new pid in {pidfile} after {wait} s")
    return new_pid


def _exec_path(argv, cwd):
    """
    The file a restart executes for ``argv``, resolved as exec resolves
    argv[0]: a path with a slash as it is (a relative one from the
    process's ``cwd``), a bare name through PATH (and /usr/sbin).
    """
    first = argv[0]
    if "/" in first:
        return os.path.normpath(os.path.join(cwd or "/", first))
    return _which(first) or first


def _running_process(pidfile):
    """
    ``(process, argv, cwd, (uid, gid))`` of the pgbouncer in ``pidfile``;
    argv[0] resolved to the binary a restart starts (:func:`_exec_path`).
    """
    pid = _read_pid(pidfile)
    if pid is None:
        raise CommandExecutionError(f"no running pgbouncer in pidfile {pidfile}")
    process = _pgbouncer_process(pid, pidfile)
    try:
        argv, cwd = process.cmdline(), process.cwd()
        owner = (process.uids().real, process.gids().real)
    except psutil.Error as err:
        raise CommandExecutionError(f"cannot inspect pgbouncer pid {pid}: {err}") from err
    if not argv:
        raise CommandExecutionError(f"pgbouncer pid {pid} from {pidfile} has no command line to start again")
    return process, [_exec_path(argv, cwd), *argv[1:]], cwd, owner


def _replaced(pid, path):
    """
    Whether ``path`` is no longer the file pid ``pid`` runs: ``stat`` of
    /proc/<pid>/exe reaches the running inode even after a package upgrade
    renamed a new file over it (the link then reads "... (deleted)").
    """
    try:
        running = os.stat(f"/proc/{pid}/exe")
    except OSError as err:
        raise CommandExecutionError(f"cannot read the executable of pgbouncer pid {pid}: {err}") from err
    try:
        installed = os.stat(path)
    except OSError as err:
        raise CommandExecutionError(f"pgbouncer pid {pid}: cannot stat its binary {path}: {err}") from err
    return (running.st_dev, running.st_ino) != (installed.st_dev, installed.st_ino)


def _binary_version(path, owner):
    try:
        proc = _run_as([path, "--version"], owner, timeout=15)
    except CommandExecutionError as err:
        log.debug("pgbouncer --version: %s", err)
        return None
    match = _VERSION.search(proc.stdout or "")
    return match.group(1) if match else None


def _running_version(admin):
    try:
        rows = console("SHOW VERSION", timeout=5, **admin)
    except CommandExecutionError:
        return None
    match = _VERSION.search(" ".join(str(v) for row in rows or [] for v in row.values()))
    return match.group(1) if match else None


def running_binary(pidfile, host=None, port=None, user=None, password=None):
    """
    Whether the pgbouncer in ``pidfile`` runs the binary a restart would
    start now: ``{"pid", "path", "replaced", "running_version",
    "installed_version"}``. ``path`` is the running process's argv[0],
    resolved as exec resolves it (absolute; relative to the process's cwd;
    a bare name through PATH, then /usr/sbin), the file ``restart`` and
    ``online_restart`` start. ``replaced`` is true when the file there is
    no longer the one the process runs (another inode, as after a package
    upgrade). The versions (``SHOW VERSION`` on the console, ``<path>
    --version`` run as the process's user) are read only when replaced.
    Raises when there is no running pgbouncer in ``pidfile`` or its
    binary is gone.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.running_binary /run/postgresql/pgbouncer.pid
    """
    process, argv, _, owner = _running_process(pidfile)
    found = {
        "pid": process.pid,
        "path": argv[0],
        "replaced": _replaced(process.pid, argv[0]),
        "running_version": None,
        "installed_version": None,
    }
    if found["replaced"]:
        found["running_version"] = _running_version(_admin(host, port, user, password))
        found["installed_version"] = _binary_version(argv[0], owner)
    return found


def _config_key(config, key):
    return ((read_config(config) or {}).get("pgbouncer") or {}).get(key) if config else None


def _with_flags(argv, *flags):
    argv = list(argv)
    for flag in flags:
        if flag not in argv:
            argv.insert(1, flag)
    return argv


def online_restart(pidfile, config=None, timeout=30, host=None, port=None, user=None, password=None):
    """
    Restart a pidfile-run pgbouncer without dropping a client: start the
    same command line again with ``-R`` (pgbouncer 1.18's online restart;
    its argv[0] resolved as :func:`running_binary` says, so a binary a
    package upgrade replaced is the one started),
    which takes over the old process's listening sockets and client
    connections over its unix socket and then shuts it down. Keys pgbouncer
    reads only at start (``pkt_buf``, ``resolv_conf``, ``disable_pqexec``,
    ``job_name``, ...) and a new binary take effect; the socket keys
    (``listen_addr``, ``listen_port``, ``listen_backlog``,
    ``unix_socket_*``, ``so_reuseport``) do not (the sockets are inherited),
    and TLS clients are dropped. Needs ``unix_socket_dir`` set. When the new
    process does not come up the old one keeps serving (it is resumed if it
    was left suspended). Returns the new pid.

    :param config: the ``pgbouncer.ini`` (for ``unix_socket_dir`` and the
        logfile in which a failed start is found)
    :param timeout: seconds to wait for the old process to hand over and exit
    :param host: console connection (``port``, ``user``, ``password``) to
        RESUME the old process after a failed takeover

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.online_restart /run/postgresql/pgbouncer.pid config=/etc/pgbouncer/pgbouncer.ini
    """
    process, argv, cwd, owner = _running_process(pidfile)
    if config and not _config_key(config, "unix_socket_dir"):
        raise CommandExecutionError(
            f"online restart needs unix_socket_dir in {config}: pgbouncer -R takes over through the unix "
            "socket; pgbouncer was not restarted"
        )
    try:
        new_pid = _start_daemon(
            _with_flags(argv, "-d", "-R"), owner, cwd, pidfile, process.pid, _config_key(config, "logfile")
        )
    except CommandExecutionError as err:
        if not process.is_running():
            raise CommandExecutionError(f"pgbouncer -R failed and the old process is gone: {err}") from err
        _resume_quietly(_admin(host, port, user, password))
        raise CommandExecutionError(
            f"pgbouncer -R did not take over: {err}; the old process (pid {process.pid}) keeps serving"
        ) from err
    if not _wait_exit(process, float(timeout)):
        raise CommandExecutionError(
            f"the old pgbouncer (pid {process.pid}) did not hand over within {timeout} s"
        )
    return new_pid


def _resume_quietly(admin):
    # -R suspends the old process before taking its sockets; a takeover that
    # failed half-way leaves it suspended.
    try:
        console("RESUME", **admin)
    except CommandExecutionError as err:
        log.debug("RESUME after a failed online restart: %s", err)


def _restart_pid(pidfile, timeout, rollback_from=None, config=None):
    process, argv, cwd, owner = _running_process(pidfile)
    pid = process.pid
    logfile = _config_key(config, "logfile")
    # SIGINT is pgbouncer's safe shutdown: it waits for server connections to
    # be released; SIGTERM after the timeout.
    process.send_signal(signal.SIGINT)
    if not _wait_exit(process, timeout):
        log.warning("pgbouncer pid %s still running %s s after SIGINT, sending SIGTERM", pid, timeout)
        process.send_signal(signal.SIGTERM)
        if not _wait_exit(process, 15):
            raise CommandExecutionError(f"pgbouncer pid {pid} did not stop; it was not restarted")
    if "--daemon" not in argv:
        argv = _with_flags(argv, "-d")
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
        ) from err
    raise CommandExecutionError(
        f"{failure}; {config} was restored from {rollback_from} and pgbouncer runs again with it (pid {new_pid})"
    )


def restart(service=None, pidfile=None, timeout=30, rollback_from=None, config=None):
    """
    Restart pgbouncer so keys that a RELOAD cannot change take effect: the
    service's restart, or for a process with a ``pidfile``: SIGINT (safe
    shutdown, SIGTERM after ``timeout`` seconds) and the same command line
    again (argv[0] resolved as :func:`running_binary` says), daemonized, as
    the same user. Returns the new pid when known.

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


# -- plan and apply: what the states call ----------------------------------
#
# plan_* only read (files, the console, pg_authid); apply_* plan again and
# then write, reload or restart. Both refuse bad input before anything else,
# with a message that names the key. Neither returns a secret.


def _refuse(name, err):
    # ValidationError/PolicyError/ConfigError messages never hold a secret.
    raise CommandExecutionError(f"{name} not changed: {err}") from err


def _check_name(value, what, policy):
    return _check_name_as(value, what, what, policy)


def _check_name_as(value, what, kind, policy):
    # ``what`` names the pillar key in the message; ``kind`` picks the NAME_POLICY list
    key, defaults = NAME_POLICY[kind]
    return opsalt_policy.check_choice(value, what, "pgbouncer", key, defaults, policy)


def _check_file_args(name, what, user, group, mode, policy):
    pgconf.file_path(name, what)
    opsalt_policy.check_path(name, what, "pgbouncer", DEFAULT_ROOTS, policy)
    opsalt_validate.owner(user)
    opsalt_validate.group(group)
    for key, value in (("user", user), ("group", group)):
        if value is not None:  # None: leave the file's owner as it is
            _check_name(value, key, policy)
    return opsalt_validate.mode(mode)


def _check_server_args(service, pidfile, policy):
    # pillar's service gets reloaded/restarted by root; root reads pillar's
    # pidfile (and signals its pid if that process is pgbouncer): where
    # settings:pidfile may be
    if service is not None:
        _check_name(pgconf.plain_name(service, "service"), "service", policy)
    if pidfile is not None:
        path = pgconf.file_path(pidfile, "pidfile")
        opsalt_policy.check_path(path, "pidfile", "pgbouncer", DEFAULT_SETTINGS_ROOTS["pidfile"], policy)


def path_refused(path, what="path"):
    """
    ``None`` when opsalt may write or remove ``path`` (absolute, normalised,
    under ``/etc/pgbouncer`` or a prefix the operator policy
    ``opsalt:policy:allowed_paths`` / ``opsalt:policy:pgbouncer:allowed_paths``
    adds), else the reason, naming ``what`` and the policy. ``clean.sls``
    asks before its ``file.absent``.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.path_refused /etc/pgbouncer/pgbouncer.ini config_path
    """
    try:
        pgconf.file_path(path, what)
        opsalt_policy.check_path(path, what, "pgbouncer", DEFAULT_ROOTS, opsalt_policy.read(__salt__))
    except (ValueError, opsalt_policy.PolicyError) as err:
        return str(err)
    return None


def name_refused(name, what):
    """
    ``None`` when the operator policy allows ``name`` for the pillar key
    ``what``, else the reason, naming ``what`` and the policy key:
    ``pkg`` (``opsalt:policy:pgbouncer:packages``, default ``[pgbouncer]``),
    ``service`` (``services``, default ``[pgbouncer]``), ``user``
    (``owners``, default ``[postgres, pgbouncer, root]``) or ``group``
    (``groups``, the same default). The package and service SLS ask before
    their ``pkg``/``service`` states, which check no policy themselves.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.name_refused pgbouncer pkg
    """
    if what not in NAME_POLICY:
        raise CommandExecutionError(f"name_refused: what must be one of {', '.join(NAME_POLICY)}")
    try:
        _check_name(pgconf.plain_name(name, what), what, opsalt_policy.read(__salt__))
    except (ValueError, opsalt_policy.PolicyError) as err:
        return str(err)
    return None


# The listening sockets: an online restart (-R) inherits them, so these keys
# change only with a full restart (SHOW CONFIG marks them not changeable).
SOCKET_KEYS = frozenset(
    {
        "listen_addr",
        "listen_port",
        "listen_backlog",
        "unix_socket_dir",
        "unix_socket_mode",
        "unix_socket_group",
        "so_reuseport",
    }
)


def _restart_mode(value):
    """``None`` (no restart), ``"full"`` or ``"online"`` from the ``restart`` argument."""
    if value is None or value is False or str(value).strip().lower() in ("false", "no", "0", ""):
        return None
    if value is True or str(value).strip().lower() in ("true", "yes", "1", "full"):
        return "full"
    if str(value).strip().lower() == "online":
        return "online"
    raise opsalt_validate.ValidationError(f"restart: {value!r} must be true, false or online")


def _check_console_users(settings, policy):
    for key in ("admin_users", "stats_users"):
        for entry in str(settings.get(key) or "").split(","):
            if entry.strip():
                opsalt_policy.check_choice(
                    entry.strip(), f"settings:{key}", "pgbouncer", key, DEFAULT_CONSOLE_USERS, policy
                )


def _check_service_user(settings, policy):
    # pgbouncer started as root switches to ``user``: whoever it runs as
    # owns its sockets, pidfile and logfile and reads every TLS key
    name = str(settings.get("user") or "")
    if not name:
        return
    pgconf.plain_name(name, "settings:user")
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        uid = None
    if name == "root" or uid == 0:
        raise opsalt_policy.PolicyError(
            f"settings:user: {name!r} is never allowed: pgbouncer must not run as root "
            "(opsalt:policy:pgbouncer:owners allows root only as the owner of the files)"
        )
    opsalt_policy.check_choice(name, "settings:user", "pgbouncer", "owners", DEFAULT_OWNERS, policy)


def _check_online_restart(kw, settings):
    # refused before any change, so a test=True run predicts the real one
    if _restart_mode(kw.get("restart")) != "online":
        return
    if not kw.get("pidfile"):
        raise opsalt_validate.ValidationError(
            "restart: online needs pidfile (pgbouncer -R is started by opsalt for a pidfile-run "
            "pgbouncer; a service manager must run it itself, see the pgbouncer docs page)"
        )
    if not str(settings.get("unix_socket_dir") or ""):
        raise opsalt_validate.ValidationError(
            "restart: online needs settings:unix_socket_dir (pgbouncer -R takes the old process's "
            "sockets and clients over through its unix socket); set it, or use restart: true"
        )


def _check_socket_group(settings, policy):
    # members of the unix socket's group may connect to every pool
    name = str(settings.get("unix_socket_group") or "")
    if name:
        opsalt_validate.group(
            pgconf.plain_name(name, "settings:unix_socket_group"), "settings:unix_socket_group"
        )
        _check_name_as(name, "settings:unix_socket_group", "group", policy)


def _check_auth_queries(settings, databases, policy):
    # SQL from the pillar is code: only queries the operator lists run
    found = [("settings:auth_query", settings.get("auth_query"))]
    for name, entry in (databases or {}).items():
        try:
            params = entry if isinstance(entry, dict) else pgconf.parse_connstring(str(entry))
        except pgconf.ConfigError as err:
            raise opsalt_validate.ValidationError(f"databases:{name}: {err}") from err
        found.append((f"databases:{name}:auth_query", params.get("auth_query")))
    for what, query in found:
        if query is not None and str(query).strip():
            opsalt_policy.check_choice(
                str(query).strip(), what, "pgbouncer", "auth_queries", DEFAULT_AUTH_QUERIES, policy
            )


def _check_settings_policy(settings, policy):
    # pgbouncer reads or writes these as its service user, validate() reads
    # the auth files as root
    for key, roots in DEFAULT_SETTINGS_ROOTS.items():
        value = str(settings.get(key) or "")
        # "" turns the unix socket off; "@name" is an abstract socket, no file
        if not value or (key == "unix_socket_dir" and value.startswith("@")):
            continue
        path = pgconf.file_path(value, f"settings:{key}")
        opsalt_policy.check_path(path, f"settings:{key}", "pgbouncer", roots, policy)
    _check_service_user(settings, policy)
    _check_socket_group(settings, policy)
    if "auth_type" in settings:
        opsalt_policy.check_choice(
            str(settings["auth_type"]).lower(),
            "settings:auth_type",
            "pgbouncer",
            "auth_types",
            DEFAULT_AUTH_TYPES,
            policy,
        )
    _check_console_users(settings, policy)


def _number(value, what, minimum):
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or number < minimum:
        raise opsalt_validate.ValidationError(f"{what}: {value!r} must be a number >= {minimum}")
    return number


def _pillar(key, default=None):
    # Salt 3008 masks what pillar.get returns unless asked not to; the
    # values stay inside this module (never returned or logged).
    return __salt__["pillar.get"](key, default, unmask=True)


def _pillar_value(pillar_key, key, given):
    # Secrets (userlist passwords, database passwords, verifier_from) are
    # read from pillar at run time so they never pass through SLS text.
    if given is not None or not pillar_key:
        return given
    return _pillar(f"{pillar_key}:{key}")


def _console_args(admin):
    return {k: v for k, v in (admin or {}).items() if k in ("host", "port", "user", "password")}


# -- the userlist --------------------------------------------------------------


def _desired_secret(user, spec, method, existing, iterations, verifier_from):
    """
    ``(secret, how)``: the existing secret when it already matches the
    pillar password (a SCRAM salt is random: compare by verifying), else a
    new one.
    """
    if isinstance(spec, dict) and spec.get("secret"):
        return str(spec["secret"]), "given"
    password = spec.get("password") if isinstance(spec, dict) else spec
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
        return secret(user, password, from_pg=True, pg=verifier_from), "pg_authid"
    return secret(user, password, method=method, iterations=iterations), "new"


def _userlist_entries(users, method, existing, iterations, verifier_from):
    return {
        user: _desired_secret(user, users[user], method, existing.get(user), iterations, verifier_from)[0]
        for user in sorted(users)
    }


def _existing_userlist(text):
    try:
        return (pgconf.parse_userlist(text) if text is not None else {}), ""
    except pgconf.ConfigError as err:
        return {}, f" (the old file was malformed: {err})"


def _userlist_request(name, users, auth_type, config, method, user, group, mode, iterations, **kw):
    policy = opsalt_policy.read(__salt__)
    users = _pillar_value(kw.get("pillar_key"), "userlist", users)
    verifier_from = _pillar_value(kw.get("pillar_key"), "verifier_from", kw.get("verifier_from"))
    try:
        bits = _check_file_args(name, "userlist_path", user, group, mode, policy)
        _check_server_args(kw.get("service"), kw.get("pidfile"), policy)
        if bits & 0o137:
            raise opsalt_validate.ValidationError(
                f"mode: {mode} is too open for a userlist: use 0640 or stricter"
            )
        pgconf.check_userlist_users(users if users is not None else {})
        iterations = int(_number(iterations, "scram_iterations", 4096))
        if not users and not kw.get("allow_empty"):
            raise opsalt_validate.ValidationError(
                "userlist: empty; an empty userlist locks every client out, so it needs "
                "allow_empty: true in the pillar"
            )
    except (ValueError, opsalt_policy.PolicyError) as err:
        _refuse(name, err)
    if auth_type is None:
        sections = read_config(config) if config else None
        auth_type = ((sections or {}).get("pgbouncer") or {}).get("auth_type", "md5")
    return {
        "users": users or {},
        "auth_type": str(auth_type).lower(),
        "method": method or pgconf.method_for_auth_type(auth_type),
        "iterations": iterations,
        "verifier_from": verifier_from,
        "bits": bits,
    }


def _ownership_change(name, user, group, bits):
    owned = opsalt_files.ownership(name)
    if owned is None:
        return None
    # user/group None: leave them as they are (the demo's sandbox).
    wanted = (user if user is not None else owned[0], group if group is not None else owned[1], bits)
    if owned == wanted:
        return None
    return {"old": "%s:%s %04o" % owned, "new": "%s:%s %04o" % wanted}


def _userlist_plan(name, user, group, mode, kw, **args):
    request = _userlist_request(name, user=user, group=group, mode=mode, **args, **kw)
    old_text = _read_text(name)
    existing, note = _existing_userlist(old_text)
    try:
        entries = _userlist_entries(
            request["users"], request["method"], existing, request["iterations"], request["verifier_from"]
        )
        text = pgconf.render_userlist(entries)
        pgconf.parse_userlist(text)
    except (CommandExecutionError, pgconf.ConfigError) as err:
        _refuse(name, err)
    problems = pgconf.auth_type_problems(request["auth_type"], entries)
    if problems:
        raise CommandExecutionError(f"{name} not changed: " + "; ".join(problems))
    changes = {}
    for key, names in (
        ("added", sorted(set(entries) - set(existing))),
        ("updated", sorted(u for u in set(entries) & set(existing) if entries[u] != existing[u])),
        ("removed", sorted(set(existing) - set(entries))),
    ):
        if names:
            changes[key] = names
    ownership = _ownership_change(name, user, group, request["bits"])
    if ownership:
        changes["ownership"] = ownership
    if old_text != text and not changes:
        changes["rewritten"] = f"normalised quoting/order{note}"
    return {"text": text, "changes": changes, "count": len(entries), "note": note}


def plan_userlist(
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
    pillar_key=None,
    allow_empty=False,
    service=None,
    pidfile=None,
):
    """
    What ``pgbouncer.userlist`` would change in the userlist at ``name``,
    without writing: ``{"changes", "comment", "count"}`` (user names only,
    never a secret). Refuses bad input with a message naming the key.

    :param users: ``{user: password | {password, method, from_pg} | {secret}}``;
        with ``pillar_key`` and no ``users``: ``<pillar_key>:userlist`` read
        from pillar at run time
    :param auth_type: pgbouncer's auth_type (default: read from ``config``,
        else md5); decides how plain passwords are stored
    :param method: force scram-sha-256, md5 or plain
    :param user: owner of the file (``group``, ``mode`` 0640 or stricter)
    :param iterations: SCRAM iterations for new verifiers (at least 4096)
    :param verifier_from: PostgreSQL superuser connection to copy SCRAM
        verifiers from ``pg_authid`` (with ``pillar_key``: read from
        ``<pillar_key>:verifier_from``)
    :param allow_empty: allow writing a userlist with no users
    :param service: the service a change reloads, checked against the
        operator policy (``opsalt:policy:pgbouncer:services``)
    :param pidfile: the pidfile a change reloads through (checked as a path)

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.plan_userlist /etc/pgbouncer/userlist.txt pillar_key=pgbouncer auth_type=scram-sha-256
    """
    plan = _userlist_plan(
        name,
        user,
        group,
        mode,
        {
            "verifier_from": verifier_from,
            "pillar_key": pillar_key,
            "allow_empty": allow_empty,
            "service": service,
            "pidfile": pidfile,
        },
        users=users,
        auth_type=auth_type,
        config=config,
        method=method,
        iterations=iterations,
    )
    plan.pop("text")
    plan["comment"] = (
        f"{name} would be updated{plan['note']}"
        if plan["changes"]
        else f"{opsalt_state.UNCHANGED}{name} ({plan['count']} users)"
    )
    return plan


def apply_userlist(
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
    pillar_key=None,
    allow_empty=False,
    reload=True,
    service=None,
    pidfile=None,
    admin=None,
):
    """
    Write the userlist that :func:`plan_userlist` plans (atomically, with a
    backup) and reload a running pgbouncer when users were added, updated
    or removed. Returns ``{"changes", "comment"}``; nothing is written when
    the plan has no changes.

    :param reload: reload a running pgbouncer after a change (default true)
    :param service: the service name, or
    :param pidfile: the pidfile of a pgbouncer started directly
    :param admin: console connection ``{host, port, user, password}``

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.apply_userlist /etc/pgbouncer/userlist.txt pillar_key=pgbouncer pidfile=/run/pgb.pid
    """
    plan = _userlist_plan(
        name,
        user,
        group,
        mode,
        {
            "verifier_from": verifier_from,
            "pillar_key": pillar_key,
            "allow_empty": allow_empty,
            "service": service,
            "pidfile": pidfile,
        },
        users=users,
        auth_type=auth_type,
        config=config,
        method=method,
        iterations=iterations,
    )
    changes = plan["changes"]
    if not changes:
        return {"changes": {}, "comment": f"{opsalt_state.UNCHANGED}{name} ({plan['count']} users)"}
    backup = write_file(name, plan["text"], owner=user, group=group, mode=mode)
    if backup:
        changes["backup"] = backup
    if reload and any(key in changes for key in ("added", "updated", "removed")):
        admin = _console_args(admin)
        if status(service=service, pidfile=pidfile, **admin)["running"]:
            changes["reloaded"] = signal_reload(service=service, pidfile=pidfile, **admin)
    return {"changes": changes, "comment": f"{name} updated ({plan['count']} users){plan['note']}"}


# -- pgbouncer.ini -------------------------------------------------------------


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


def _candidate_userlist(settings, pillar_key, userlist_path):
    """
    The userlist this same run writes (``pgbouncer.userlist`` with the same
    ``pillar_key``), so a dry run on a fresh host validates the config
    against it instead of the file that is not there yet.
    """
    if not pillar_key or not userlist_path or settings.get("auth_file") != userlist_path:
        return None
    users = _pillar(f"{pillar_key}:userlist")
    if not users:
        return None
    existing, _ = _existing_userlist(_read_text(userlist_path))
    method = _pillar(f"{pillar_key}:userlist_method") or pgconf.method_for_auth_type(
        settings.get("auth_type")
    )
    iterations = _pillar(f"{pillar_key}:scram_iterations", 4096)
    verifier_from = _pillar(f"{pillar_key}:verifier_from")
    try:
        pgconf.check_userlist_users(users)
        entries = _userlist_entries(users, method, existing, iterations, verifier_from)
    except (CommandExecutionError, ValueError) as err:
        raise CommandExecutionError(f"the userlist for {userlist_path} cannot be built: {err}") from err
    return pgconf.render_userlist(entries)


def _config_request(name, databases, users, settings, user, group, mode, kw):
    policy = opsalt_policy.read(__salt__)
    databases = _pillar_value(kw.get("pillar_key"), "databases", databases)
    settings = dict(settings or {})
    try:
        bits = _check_file_args(name, "config_path", user, group, mode, policy)
        _check_server_args(kw.get("service"), kw.get("pidfile"), policy)
        pgconf.check_sections(databases, users, settings)
        _check_settings_policy(settings, policy)
        _check_auth_queries(settings, databases, policy)
        _number(kw.get("restart_timeout", 30), "restart_timeout", 1)
        _check_online_restart(kw, settings)
        if not databases and not kw.get("allow_empty"):
            raise opsalt_validate.ValidationError(
                "databases: none; a pgbouncer.ini without [databases] serves nothing, so it needs "
                "allow_empty: true in the pillar"
            )
    except (ValueError, opsalt_policy.PolicyError) as err:
        _refuse(name, err)
    text = render_config(databases, users, settings)
    userlist_text = _candidate_userlist(settings, kw.get("pillar_key"), kw.get("userlist_path"))
    verdict = validate(name, text=text, service_user=kw.get("service_user"), userlist_text=userlist_text)
    if not verdict["valid"]:
        raise CommandExecutionError(
            f"{name} not changed: the new configuration is invalid: " + "; ".join(verdict["errors"])
        )
    return {"text": text, "bits": bits}


def _server_plan(old_text, text, server, admin):
    """
    What applying ``text`` changes on the server: ``keys`` (old/new, from
    SHOW CONFIG when the console answers, else from the old file),
    ``restart_keys`` among them, whether a reload is due.
    """
    sections = pgconf.parse_ini(text)
    running = running_config(**admin) if server["console"] else None
    if running is not None:
        keys = _differences(_desired_values(sections["pgbouncer"], running), running)
        restart_keys = _needs_restart(keys, running)
    else:
        keys = _file_key_changes(_parse_or_none(old_text), sections)
        restart_keys = sorted(k for k in keys if k in pgconf.RESTART_ONLY)
    return {
        "sections": sections,
        "running": running,
        "keys": keys,
        "restart_keys": restart_keys,
        "reload": bool(server["console"] and (old_text != text or set(keys) - set(restart_keys))),
    }


def _reasons(keys, plan):
    binary = [f"its new binary {plan['binary']['path']}"] if plan["binary"] else []
    return ", ".join([*keys, *binary])


def _action(plan, server):
    if not server["running"]:
        return "do nothing more: pgbouncer is not running"
    if plan["online"]:
        waiting = sorted(set(plan["restart_keys"]) - set(plan["online_keys"]))
        tail = f"; {', '.join(waiting)} wait for a full restart (restart: true)" if waiting else ""
        return f"restart pgbouncer online (pgbouncer -R) for {_reasons(plan['online_keys'], plan)}{tail}"
    if plan["restart"]:
        return f"restart pgbouncer for {_reasons(plan['restart_keys'], plan)}"
    if plan["restart_keys"]:
        # restart: online cannot change socket keys; say what would
        hint = "a full restart: restart: true" if plan["mode"] == "online" else "restart: false"
        return f"reload pgbouncer; a restart is still needed for {', '.join(plan['restart_keys'])} ({hint})"
    return "reload pgbouncer"


def _pending_note(keys):
    return f"; waiting for a pgbouncer restart to apply: {', '.join(keys)}"


def _binary_plan(pidfile, sections, server, admin):
    """
    :func:`running_binary` of the running pgbouncer when the binary a
    restart would start is no longer the one it runs (a package upgrade
    replaced it), else ``None``. The pid comes from ``pidfile``, else from
    the file's ``pidfile`` key (a service-run pgbouncer writes it too).
    """
    source = pidfile or sections["pgbouncer"].get("pidfile")
    if not server["running"] or not source:
        return None
    try:
        found = running_binary(source, **admin)
    except CommandExecutionError as err:
        log.debug("pgbouncer binary check skipped: %s", err)
        return None
    return found if found["replaced"] else None


def _binary_change(binary):
    return {
        "path": binary["path"],
        "old": binary["running_version"] or "unknown",
        "new": binary["installed_version"] or "unknown",
    }


def _binary_waiting(binary):
    versions = _binary_change(binary)
    return (
        f"pgbouncer (pid {binary['pid']}) still runs the binary that was replaced on disk at "
        f"{binary['path']} (running {versions['old']}, installed {versions['new']}); restart: online "
        "or restart: true starts the new one"
    )


def _config_plan(name, databases, users, settings, user, group, mode, restart, service, pidfile, admin, kw):
    request = _config_request(name, databases, users, settings, user, group, mode, kw)
    text, admin = request["text"], _console_args(admin)
    old_text = _read_text(name)
    server = status(service=service, pidfile=pidfile, **admin)
    plan = _server_plan(old_text, text, server, admin)
    plan.update(text=text, old_text=old_text, server=server, admin=admin)
    plan["mode"] = mode = _restart_mode(restart)
    plan["online_keys"] = (
        [k for k in plan["restart_keys"] if k not in SOCKET_KEYS] if mode == "online" else []
    )
    binary = _binary_plan(pidfile, plan["sections"], server, admin)
    # a new binary is applied by the restart the mode asks for, else named
    plan["binary"] = binary if mode else None
    plan["warnings"] = [_binary_waiting(binary)] if binary and not mode else []
    plan["online"] = bool(plan["online_keys"] or plan["binary"]) and mode == "online" and server["running"]
    plan["restart"] = mode == "full" and bool(plan["restart_keys"] or plan["binary"]) and server["running"]
    changes = {"binary": _binary_change(binary)} if plan["binary"] else {}
    if old_text != text:
        changes["diff"] = pgconf.redact_ini(opsalt_files.unified_diff(old_text, text, name))
        changes.update(_entry_changes(_parse_or_none(old_text), plan["sections"]))
    ownership = _ownership_change(name, user, group, request["bits"])
    if ownership:
        changes["ownership"] = ownership
    plan["rewrite"] = old_text != text or ownership is not None
    plan["todo"] = plan["rewrite"] or plan["reload"] or plan["restart"] or plan["online"]
    plan["pending"] = (
        sorted(set(plan["restart_keys"]) - set(plan["online_keys"]))
        if server["running"] and not plan["restart"]
        else []
    )
    plan["changes"] = changes
    return plan


def _public_plan(name, plan):
    changes = dict(plan["changes"])
    notes = "".join(f"; {warning}" for warning in plan["warnings"])
    public = {"pending": plan["pending"], "warnings": plan["warnings"]}
    if not plan["todo"]:
        comment = f"{opsalt_state.UNCHANGED}{name}" + (
            _pending_note(plan["pending"]) if plan["pending"] else ""
        )
        return dict(public, changes={}, comment=comment + notes)
    if plan["keys"]:
        changes["keys"] = plan["keys"]
    subject = f"{name} would be updated" if plan["rewrite"] or not plan["binary"] else f"{name} unchanged"
    return dict(public, changes=changes, comment=f"{subject}; would {_action(plan, plan['server'])}{notes}")


def plan_config(
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
):
    """
    What ``pgbouncer.configured`` would change, without writing or
    reloading: ``{"changes", "comment", "pending", "warnings"}``
    (``changes`` empty when the file and the running pgbouncer already
    agree; the diff masks every ``password=``; ``pending`` the keys waiting
    for a restart; ``warnings`` a replaced binary that ``restart: false``
    leaves running). Bad input,
    a value outside the operator policy, or a configuration
    ``pgbouncer.validate`` refuses raise an error naming the key.

    :param databases: ``[databases]`` ``{name: connstring | {param: value}}``;
        with ``pillar_key`` and no ``databases``: ``<pillar_key>:databases``
        read from pillar at run time (connection strings may hold passwords)
    :param users: ``[users]`` ``{user: {pool_mode, max_user_connections}}``
    :param settings: ``[pgbouncer]`` ``{key: value}``
    :param user: owner of the file (``group``, ``mode``)
    :param restart: ``true`` or ``online`` (``pgbouncer -R``): restart when
        a key RELOAD cannot change differs, or when the running pgbouncer's
        binary was replaced on disk (:func:`running_binary`; ``changes``
        then hold ``binary: {path, old, new}``); ``false``: name them only
    :param service: the service name, or
    :param pidfile: the pidfile of a pgbouncer started directly
    :param admin: console connection ``{host, port, user, password}``
    :param service_user: the user pgbouncer runs as, for readability checks
    :param restart_timeout: seconds a restart waits for the safe shutdown
    :param pillar_key: the pillar key to read secrets from at run time
    :param userlist_path: with ``pillar_key``: the userlist this run writes
        from ``<pillar_key>:userlist``; the config is validated against it
    :param allow_empty: allow a configuration without databases

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.plan_config /etc/pgbouncer/pgbouncer.ini settings='{default_pool_size: 30}' pillar_key=pgbouncer
    """
    kw = {
        "pillar_key": pillar_key,
        "userlist_path": userlist_path,
        "allow_empty": allow_empty,
        "service_user": service_user,
        "restart_timeout": restart_timeout,
        "restart": restart,
        "pidfile": pidfile,
        "service": service,
    }
    plan = _config_plan(
        name, databases, users, settings, user, group, mode, restart, service, pidfile, admin, kw
    )
    return _public_plan(name, plan)


def _rolled_back(name, old_text, backup, service, pidfile, admin):
    if not backup or opsalt_files.read_text(name) != old_text:
        return None
    # the restart put the old file back: only the restart itself is left of this run
    running = status(service=service, pidfile=pidfile, **admin)["running"]
    return {
        "restored_from": backup,
        "pgbouncer": "running the previous configuration" if running else "DOWN",
    }


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
    def answer():
        try:
            return running_config(**admin)
        except CommandExecutionError:
            return None

    return opsalt_wait.until(answer, timeout, interval=0.1, max_interval=0.5) or running_config(**admin)


def _verify(name, plan, changes, after):
    """
    Compare SHOW CONFIG after the reload/restart with the file: report the
    keys that really changed, fail on a changeable key RELOAD did not apply,
    name the keys waiting for a restart.
    """
    notes = "".join(f"; {warning}" for warning in plan["warnings"])
    if after is None:
        return {
            "result": True,
            "changes": changes,
            "comment": f"{name} written and {changes['reloaded']}; the console is not reachable to verify{notes}",
            "warnings": plan["warnings"],
        }
    remaining = _differences(_desired_values(plan["sections"]["pgbouncer"], after), after)
    # After -R, SHOW CONFIG shows the file's socket keys although the
    # process serves on the inherited sockets: never claim those applied.
    inherited = (
        sorted(set(plan["restart_keys"]) & SOCKET_KEYS) if changes.get("restarted") == "online" else []
    )
    applied = {k: v for k, v in plan["keys"].items() if k not in remaining and k not in inherited}
    if applied:
        changes["keys"] = applied
    pending = sorted(set(_needs_restart(remaining, after)) | set(inherited))
    not_applied = sorted(set(remaining) - set(pending))
    if not_applied:
        comment = (
            f"{name} written and reloaded, but pgbouncer still runs with the old "
            f"{', '.join(not_applied)}; see its log for why the RELOAD did not apply them"
        )
        return {"result": False, "changes": changes, "comment": comment}
    how = {True: "restarted", "online": "restarted online (pgbouncer -R)"}.get(
        changes.get("restarted"), "reloaded"
    )
    if plan["binary"] and changes.get("restarted"):
        how += f" for its new binary {plan['binary']['path']}"
    subject = f"{name} updated" if plan["rewrite"] or not plan["binary"] else f"{name} unchanged"
    comment = f"{subject}; {how}"
    if pending:
        changes["pending_restart"] = pending
        comment += _pending_note(pending)
        comment += (
            " (a full restart: restart: true)"
            if changes.get("restarted") == "online"
            else " (restart: false)"
        )
    return {
        "result": True,
        "changes": changes,
        "comment": comment + notes,
        "pending": pending,
        "warnings": plan["warnings"],
    }


def _online_or_roll_back(name, args, backup, admin):
    # The old process keeps serving when -R fails; put its file back (and
    # RELOAD it) so the next reload does not pick up the refused one.
    try:
        return online_restart(args["pidfile"], config=name, timeout=args["restart_timeout"], **admin)
    except CommandExecutionError as err:
        if not backup:
            raise
        opsalt_files.restore(backup, name)
        signal_reload(pidfile=args["pidfile"], **admin)
        raise CommandExecutionError(f"{err}; {name} was restored from {backup} and reloaded") from err


def _apply_to_server(name, plan, changes, backup, args):
    if not plan["server"]["running"]:
        return {
            "result": True,
            "changes": changes,
            "comment": f"{name} written; pgbouncer is not running, nothing reloaded",
        }
    admin = plan["admin"]
    changes["reloaded"] = signal_reload(service=args["service"], pidfile=args["pidfile"], **admin)
    if plan["restart"]:
        # a new process that does not start gets the old file back and is started again with it
        restart(
            service=args["service"],
            pidfile=args["pidfile"],
            timeout=args["restart_timeout"],
            rollback_from=backup,
            config=name,
        )
        changes["restarted"] = True
        admin = _console_after_restart(admin, plan["running"], plan["sections"]["pgbouncer"])
    elif plan["online"]:
        changes["restarted"] = "online"
        changes["new_pid"] = _online_or_roll_back(name, args, backup, admin)
    after = _wait_for_console(admin) if plan["server"]["console"] else None
    return _verify(name, plan, changes, after)


def apply_config(
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
):
    """
    Plan as :func:`plan_config` does, then write ``pgbouncer.ini``
    atomically with a backup, RELOAD (or restart with ``restart``), and
    compare ``SHOW CONFIG`` with the file. Returns ``{"result", "changes",
    "comment", "pending"}``; ``result`` false when pgbouncer did not take a
    changeable key, or when a restart failed and the old file was put back
    (``changes: {rolled_back: ...}``). Same parameters as
    :func:`plan_config`.

    CLI Example:

    .. code-block:: bash

        salt '*' pgbouncer.apply_config /etc/pgbouncer/pgbouncer.ini settings='{default_pool_size: 30}' pidfile=/run/pgb.pid
    """
    kw = {
        "pillar_key": pillar_key,
        "userlist_path": userlist_path,
        "allow_empty": allow_empty,
        "service_user": service_user,
        "restart_timeout": restart_timeout,
        "restart": restart,
        "pidfile": pidfile,
        "service": service,
    }
    plan = _config_plan(
        name, databases, users, settings, user, group, mode, restart, service, pidfile, admin, kw
    )
    if not plan["todo"]:
        return dict(_public_plan(name, plan), result=True)
    changes = plan["changes"]
    backup = None
    args = {"service": service, "pidfile": pidfile, "restart_timeout": float(restart_timeout)}
    try:
        if plan["rewrite"]:
            backup = write_file(name, plan["text"], owner=user, group=group, mode=mode)
            if backup:
                changes["backup"] = backup
        return _apply_to_server(name, plan, changes, backup, args)
    except CommandExecutionError as err:
        changes.pop("binary", None)  # the old process keeps its binary
        rolled_back = _rolled_back(name, plan["old_text"], backup, service, pidfile, plan["admin"])
        return {
            "result": False,
            "changes": {"rolled_back": rolled_back} if rolled_back else changes,
            "comment": f"{opsalt_state.APPLY_FAILED}{name}: {err}",
        }
