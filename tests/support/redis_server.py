"""
Real redis-server instances for the redis_aof tests: 127.0.0.1 and a free
port, data dir, log and config file in a temporary directory, started with
``enable-debug-command yes`` (so ``DEBUG SLEEP`` can provoke a stall) and
``save ""`` (so after a restart the data can only have come from the AOF),
stopped by pid. As root the server runs as the ``redis`` user, as in
production, so config-file permissions mean what they mean there.
"""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import threading

import pytest
import redis

from tests.support.procs import free_port, stop_popen, wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PASSWORD = "aof-Pw-9c1e!secret"


def _redis_user():
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("redis")
    except KeyError:
        return None


class RedisServer:
    """
    One redis-server we started. ``with_config_file=False`` starts it from
    command-line options only, so ``CONFIG REWRITE`` has nowhere to write.
    """

    def __init__(self, password=None, with_config_file=True, extra=None):
        self.password = password
        self.with_config_file = with_config_file
        self.extra = dict(extra or {})
        self.user = _redis_user()
        self.root = tempfile.mkdtemp(prefix="opsalt-redis-")
        os.chmod(self.root, 0o755)
        self.data_dir = os.path.join(self.root, "data")
        self.conf_dir = os.path.join(self.root, "etc")
        os.makedirs(self.data_dir)
        os.makedirs(self.conf_dir)
        self.config_file = os.path.join(self.conf_dir, "redis.conf")
        self.log_file = os.path.join(self.root, "redis.log")
        self.port = free_port()
        self.proc = None
        if self.user is not None:
            for path in (self.root, self.data_dir, self.conf_dir):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)

    @property
    def instance(self):
        return f"127.0.0.1:{self.port}"

    @property
    def conn(self):
        """
        Connection keyword arguments for the redis_aof functions.
        """
        args = {"host": "127.0.0.1", "port": self.port}
        if self.password:
            args["password"] = self.password
        return args

    def _options(self):
        options = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "dir": self.data_dir,
            "logfile": self.log_file,
            "daemonize": "no",
            "enable-debug-command": "yes",
            "save": '""',
            "appendonly": "no",
        }
        if self.password:
            options["requirepass"] = self.password
        options.update({k: str(v) for k, v in self.extra.items()})
        return options

    def write_config(self):
        text = "".join(f"{key} {value}\n" for key, value in self._options().items())
        with open(self.config_file, "w", encoding="utf-8") as handle:
            handle.write(text)
        if self.user is not None:
            os.chown(self.config_file, self.user.pw_uid, self.user.pw_gid)

    def start(self):
        if self.with_config_file:
            if not os.path.exists(self.config_file):
                self.write_config()
            argv = [REDIS_SERVER, self.config_file]
        else:
            argv = [REDIS_SERVER]
            for key, value in self._options().items():
                argv += [f"--{key}", "" if value == '""' else value]
        kwargs = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        try:
            wait_for(self._ready, 20, what=f"redis-server on port {self.port}")
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"redis-server did not start; log:\n{self.read_log()[-2000:]}") from None
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
        with self.client() as client:
            return client.ping()

    def stop(self):
        if self.proc is not None:
            stop_popen(self.proc)
            self.proc = None

    def restart(self):
        """
        Stop (SIGTERM: Redis flushes and fsyncs the AOF) and start again from
        the same config file, port and data dir.
        """
        self.stop()
        return self.start()

    def client(self, **kwargs):
        return redis.Redis(decode_responses=True, socket_timeout=30, **self.conn, **kwargs)

    def read_config(self):
        with open(self.config_file, encoding="utf-8") as handle:
            return handle.read()

    def read_log(self):
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def incr_loop(server, key="counter"):
    """
    A client INCRing ``key`` on its own connection for the duration of the
    ``with`` block. Yields ``{"ok": successful INCRs, "errors": [...]}``,
    complete once the block has exited.
    """
    stop = threading.Event()
    tally = {"ok": 0, "errors": []}

    def loop():
        with server.client() as client:
            while not stop.is_set():
                try:
                    client.incr(key)
                    tally["ok"] += 1
                except redis.exceptions.RedisError as err:
                    tally["errors"].append(repr(err))

    worker = threading.Thread(target=loop, name="incr-loop")
    worker.start()
    try:
        yield tally
    finally:
        stop.set()
        worker.join(30)


def _serve(**kwargs):
    server = RedisServer(**kwargs)
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture
def redis_server():
    """
    A fresh redis-server with a config file and no password.
    """
    yield from _serve()


@pytest.fixture
def redis_server_pw():
    """
    A fresh redis-server with a config file and ``requirepass``.
    """
    yield from _serve(password=PASSWORD)


@pytest.fixture
def redis_server_no_config():
    """
    A fresh redis-server started without a config file.
    """
    yield from _serve(with_config_file=False)
