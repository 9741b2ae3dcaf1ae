"""
Real PostgreSQL and pgbouncer servers for the pgbouncer tests and benchmark.

Both refuse to run as root, so they run as the ``postgres`` system user
(``subprocess.Popen(user=..., group=...)``, so the pid we hold is the server's
own and not a ``runuser`` wrapper's), in temporary directories owned by that
user, on 127.0.0.1 and free ports. They are stopped by pid.
"""

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import psycopg
import pytest

from tests.support.procs import free_port, port_open, stop_pid, stop_popen, wait_for

SERVICE_USER = "postgres"
PG_BIN = "/usr/lib/postgresql/15/bin"
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
SUPERUSER_PASSWORD = "Super-Pw-4c1e"
# The roles every test database has, with the method their password is
# stored with in pg_authid.
ROLES = {
    "app_md5": ("Md5-Pw-'quote\"d", "md5"),
    "app_scram": ("Scram-Pw-9z!x", "scram-sha-256"),
}
ADMIN_USER = "pgb_admin"
ADMIN_PASSWORD = "Admin-Pw-7b2e"
# The operator policy (``opsalt:policy``, minion config) the tests and the
# benchmark run with: their servers live under /tmp and the console user is
# pgb_admin, both outside the strict defaults (/etc/pgbouncer, pgbouncer).
OPERATOR_POLICY = {
    "allowed_paths": ["/tmp"],
    "pgbouncer": {"admin_users": [ADMIN_USER], "stats_users": [ADMIN_USER]},
}


def have_binaries():
    """
    ``None`` when PostgreSQL 15 and pgbouncer are installed, else the reason.
    """
    if not os.path.exists(os.path.join(PG_BIN, "initdb")):
        return f"{PG_BIN}/initdb missing: apt-get install postgresql (scripts/install-system-deps)"
    if not os.path.exists(PGBOUNCER):
        return "pgbouncer missing: apt-get install pgbouncer (scripts/install-system-deps)"
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return f"no '{SERVICE_USER}' system user (created by the postgresql package)"
    return None


def _ids():
    entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def chown_service(path):
    uid, gid = _ids()
    os.chown(path, uid, gid)


def _as_service_user(argv, **kwargs):
    uid, gid = _ids()
    return subprocess.Popen(argv, user=uid, group=gid, extra_groups=[], **kwargs)


def md5_secret(user, password):
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


class Postgres:
    """
    A PostgreSQL 15 cluster from ``initdb`` in ``root``, listening on
    127.0.0.1:``port`` (and a unix socket in ``root``), with the
    :data:`ROLES`.
    """

    def __init__(self, root, max_connections=100):
        self.root = root
        self.data = os.path.join(root, "data")
        self.port = None
        self.proc = None
        self.max_connections = max_connections

    def conninfo(self, user="postgres", password=SUPERUSER_PASSWORD, dbname="postgres", port=None):
        return dict(host="127.0.0.1", port=port or self.port, user=user, password=password, dbname=dbname)

    def connect(self, **kwargs):
        return psycopg.connect(autocommit=True, connect_timeout=10, **self.conninfo(**kwargs))

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        chown_service(self.root)
        pwfile = os.path.join(self.root, "pwfile")
        with open(pwfile, "w", encoding="utf-8") as handle:
            handle.write(SUPERUSER_PASSWORD + "\n")
        chown_service(pwfile)
        initdb = _as_service_user(
            [
                os.path.join(PG_BIN, "initdb"),
                "-D",
                self.data,
                "-U",
                "postgres",
                "--pwfile",
                pwfile,
                "--auth",
                "scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale",
                "C",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out, _ = initdb.communicate(timeout=120)
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {out}")
        os.unlink(pwfile)
        self.port = free_port()
        with open(os.path.join(self.data, "postgresql.conf"), "a", encoding="utf-8") as handle:
            handle.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nmax_connections = {self.max_connections}\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "shared_buffers = 64MB\nlogging_collector = off\n"
            )
        with open(os.path.join(self.data, "pg_hba.conf"), "w", encoding="utf-8") as handle:
            # md5 in pg_hba means: md5 for md5-stored passwords, SCRAM for SCRAM ones.
            handle.write("local all postgres scram-sha-256\nhost all all 127.0.0.1/32 md5\n")
        with open(os.path.join(self.root, "postgres.log"), "ab") as log:
            self.proc = _as_service_user(
                [os.path.join(PG_BIN, "postgres"), "-D", self.data], stdout=subprocess.DEVNULL, stderr=log
            )
        wait_for(
            lambda: self.proc.poll() is None and port_open(self.port) and self._ready(),
            60,
            what="PostgreSQL accepting connections",
        )
        with self.connect() as conn:
            for role, (password, method) in ROLES.items():
                conn.execute(f"SET password_encryption = '{method}'")
                literal = password.replace("'", "''")
                conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{literal}'")
            conn.execute("CREATE DATABASE appdb OWNER app_md5")
        return self

    def _ready(self):
        try:
            with self.connect():
                return True
        except psycopg.OperationalError:
            return False

    def stored_secret(self, role):
        with self.connect() as conn:
            return conn.execute(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'").fetchone()[0]

    def stop(self):
        if self.proc is not None:
            # SIGINT: PostgreSQL's "fast" shutdown.
            stop_popen(self.proc, sig=signal.SIGINT, timeout=30)


class PgBouncer:
    """
    Debian's pgbouncer binary (or a copy of it at ``binary``) with
    ``pgbouncer.ini``/``userlist.txt`` in ``root``, started in the
    foreground as the service user. After a restart by the state under test
    (which daemonizes a new process), the pid is read from the pidfile.
    """

    def __init__(self, root, postgres, auth_type="md5", extra=None, binary=PGBOUNCER):
        self.root = root
        self.binary = binary
        self.postgres = postgres
        self.auth_type = auth_type
        self.extra = extra or {}
        self.port = None
        self.proc = None
        self.ini = os.path.join(root, "pgbouncer.ini")
        self.userlist = os.path.join(root, "userlist.txt")
        self.pidfile = os.path.join(root, "pgbouncer.pid")
        self.logfile = os.path.join(root, "pgbouncer.log")

    @property
    def admin(self):
        """
        Console connection arguments for the ``pgbouncer`` module.
        """
        return {"host": "127.0.0.1", "port": self.port, "user": ADMIN_USER, "password": ADMIN_PASSWORD}

    def settings(self, **overrides):
        """
        The ``[pgbouncer]`` section this fixture starts with.
        """
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": self.auth_type,
            "auth_file": self.userlist,
            "admin_users": ADMIN_USER,
            "stats_users": ADMIN_USER,
            "pidfile": self.pidfile,
            "logfile": self.logfile,
            "pool_mode": "session",
            "default_pool_size": 20,
            "max_client_conn": 200,
        }
        settings.update(self.extra)
        settings.update(overrides)
        return settings

    def databases(self):
        return {
            "appdb": {"host": "127.0.0.1", "port": self.postgres.port, "dbname": "appdb"},
            "postgres": {"host": "127.0.0.1", "port": self.postgres.port, "dbname": "postgres"},
        }

    def userlist_entries(self):
        """
        ``{user: secret}``: md5 for the md5 role, the server's own SCRAM
        verifier for the SCRAM role (pgbouncer can only log in to the server
        with SCRAM when its verifier matches the server's), the admin user.
        """
        return {
            "app_md5": md5_secret("app_md5", ROLES["app_md5"][0]),
            "app_scram": self.postgres.stored_secret("app_scram"),
            ADMIN_USER: md5_secret(ADMIN_USER, ADMIN_PASSWORD),
        }

    def write_files(self):
        lines = ["[databases]"]
        for name, spec in self.databases().items():
            lines.append(f"{name} = " + " ".join(f"{k}={v}" for k, v in spec.items()))
        lines.append("")
        lines.append("[pgbouncer]")
        for key, value in self.settings().items():
            lines.append(f"{key} = {value}")
        with open(self.ini, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        with open(self.userlist, "w", encoding="utf-8") as handle:
            for user, secret in self.userlist_entries().items():
                handle.write(f'"{user}" "{secret}"\n')
        for path in (self.ini, self.userlist):
            chown_service(path)
            os.chmod(path, 0o640)

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        chown_service(self.root)
        self.port = free_port()
        self.write_files()
        self.proc = _as_service_user(
            [self.binary, self.ini], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: self.proc.poll() is None and port_open(self.port), 30, what="pgbouncer listening")
        return self

    def pid(self):
        """
        The pid of the running pgbouncer (from its pidfile).
        """
        with open(self.pidfile, encoding="utf-8") as handle:
            return int(handle.read().strip())

    def connect(self, user="app_md5", dbname="appdb", port=None):
        password = ROLES[user][0]
        return psycopg.connect(
            host="127.0.0.1",
            port=port or self.port,
            user=user,
            password=password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=10,
        )

    def console(self):
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=ADMIN_USER,
            password=ADMIN_PASSWORD,
            dbname="pgbouncer",
            autocommit=True,
            connect_timeout=10,
        )

    def show_config(self):
        with self.console() as conn:
            cur = conn.execute("SHOW CONFIG")
            names = [c.name for c in cur.description]
            return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}

    def _is_ours(self, pid):
        # A pidfile can outlive its process; never signal a recycled pid.
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                return self.ini.encode() in handle.read()
        except OSError:
            return False

    def stop(self):
        pids = set()
        try:
            pids.add(self.pid())
        except (OSError, ValueError):
            pass
        if self.proc is not None:
            stop_popen(self.proc, sig=signal.SIGTERM, timeout=15)
        for pid in pids:
            if (self.proc is None or pid != self.proc.pid) and self._is_ours(pid):
                stop_pid(pid, sig=signal.SIGTERM, timeout=15)
        deadline = time.monotonic() + 10
        while self.port and port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


@contextlib.contextmanager
def service_root(name):
    """
    A temporary directory the service users can traverse (pytest's tmp_path
    lives under a 0700 root-only directory), removed afterwards.
    """
    root = tempfile.mkdtemp(prefix=f"opsalt-{name}-")
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running(*servers):
    """``servers`` (Postgres, PgBouncer) started in order, all stopped afterwards."""
    started = []
    try:
        for server in servers:
            started.append(server)
            server.start()
        yield servers[0] if len(servers) == 1 else servers
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory):
    """
    A real PostgreSQL for the test module.
    """
    reason = have_binaries()
    if reason:
        pytest.fail(f"{reason}: run scripts/install-system-deps")
    with service_root("postgres") as root, running(Postgres(os.path.join(root, "pg"))) as server:
        yield server


@pytest.fixture
def pgbouncer_server(postgres_server):
    """
    A real pgbouncer in front of ``postgres_server``, fresh for each test
    (tests change its configuration and restart it).
    """
    with (
        service_root("pgbouncer") as root,
        running(PgBouncer(os.path.join(root, "pgb"), postgres_server)) as server,
    ):
        yield server
