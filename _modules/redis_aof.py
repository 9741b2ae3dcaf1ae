"""
Redis AOF settings, fsync-stall diagnostics and client-timeout advice.

A Redis instance doing nothing but INCR with ``appendonly yes`` can still
time clients out: when the disk is slow, ``fdatasync`` on the AOF takes
seconds, the next ``write`` in ``flushAppendOnlyFile`` blocks the event loop,
and every client waits. This module reads that situation from the server
(``INFO persistence``, ``LATENCY LATEST``/``HISTORY``, the log file, the
software watchdog), applies AOF settings live (``CONFIG SET``) and persists
them (``CONFIG REWRITE``).

Connection arguments (every function): ``instance`` (``host:port``,
``[::1]:port`` or a socket path) and redis-py's own names ``host``, ``port``,
``unix_socket_path``, ``username``, ``password``, ``ssl``, ``socket_timeout``.
Explicit arguments win over ``instance``, which wins over the minion config
or pillar (``redis_aof:host``, ``redis_aof:password``, ...), which win over
127.0.0.1:6379. Passwords never appear in return data, logs or errors.

Needs redis-py (``pip install redis``).
"""

import logging
import os
import re
import time

import opsalt_redis_aof
import opsalt_validate
import opsalt_wait
from opsalt_secrets import redact_text
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    HAS_REDIS = True
except ImportError:  # pragma: no cover - reported by __virtual__
    HAS_REDIS = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_aof"

CONNECTION_ARGS = ("host", "port", "unix_socket_path", "username", "password", "ssl", "socket_timeout")

# Settings this module manages: kind and the Redis 7 default (what a config
# file without the line means at the next start).
BOOL = "bool"
INT = "int"
MEMORY = "memory"
SETTINGS = {
    "appendonly": (BOOL, "no"),
    "appendfsync": (("always", "everysec", "no"), "everysec"),
    "no-appendfsync-on-rewrite": (BOOL, "no"),
    "auto-aof-rewrite-percentage": (INT, "100"),
    "auto-aof-rewrite-min-size": (MEMORY, "67108864"),
    "aof-use-rdb-preamble": (BOOL, "yes"),
    "aof-load-truncated": (BOOL, "yes"),
    "aof-rewrite-incremental-fsync": (BOOL, "yes"),
    "aof-timestamp-enabled": (BOOL, "no"),
    "latency-monitor-threshold": (INT, "0"),
    "timeout": (INT, "0"),
}
INT_MAX = 2**31 - 1
MEMORY_UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}

# Redis issue #1771: watchdog-period crashed 2.8.x during an RDB save.
WATCHDOG_SAFE_FROM = (3, 0)
WATCHDOG_MAX_DURATION = 600
LOG_TAIL_BYTES = 4 * 1024 * 1024


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_aof needs redis-py: pip install redis (or the opsalt[redis] extra)")
    return __virtualname__


# -- settings: validation and canonical form ---------------------------------


def _canonical(key, value):
    """
    ``value`` as Redis's ``CONFIG GET`` shows it, or raise ValueError.
    """
    kind, _default = SETTINGS[key]
    if kind == BOOL:
        # YAML reads yes/no as booleans; enum_word maps them back.
        return opsalt_validate.enum_word(value, ("yes", "no"), key)
    if kind == INT:
        number = _integer(value)
        if not 0 <= number <= INT_MAX:
            raise ValueError(f"must be between 0 and {INT_MAX}")
        return str(number)
    if kind == MEMORY:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*([kmg]b?)?\s*", value, re.IGNORECASE)
            if not match:
                raise ValueError("must be a size such as 67108864, 64mb or 1gb")
            return str(int(match.group(1)) * MEMORY_UNITS[(match.group(2) or "").lower()])
        number = _integer(value)
        if number < 0:
            raise ValueError("must not be negative")
        return str(number)
    # appendfsync: `no` from YAML (or `appendfsync=no` on the command line) is False.
    return opsalt_validate.enum_word(value, kind, key)


def _integer(value):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a whole number")
    if isinstance(value, str):
        if not re.fullmatch(r"\s*-?\d+\s*", value):
            raise ValueError("must be a whole number")
        return int(value)
    return value


def validate(settings):
    """
    Check AOF settings without touching any server and return them in the
    form ``CONFIG GET`` shows (``yes``/``no``, sizes in bytes). Keys may use
    ``-`` or ``_``. Every problem is reported at once.

    settings
        Mapping of setting to value, e.g. ``{"appendfsync": "always"}``.

    CLI Example:

    .. code-block:: bash

        salt-call redis_aof.validate '{"appendonly": true, "auto-aof-rewrite-min-size": "64mb"}'
    """
    if not isinstance(settings, dict):
        raise SaltInvocationError("settings must be a mapping of AOF setting to value")
    wanted, problems = {}, []
    for raw_key, value in settings.items():
        key = str(raw_key).strip().lower().replace("_", "-")
        if key not in SETTINGS:
            problems.append(f"unknown setting '{raw_key}' (known: {', '.join(sorted(SETTINGS))})")
            continue
        if key in wanted:
            problems.append(f"'{key}' is given twice")
            continue
        try:
            wanted[key] = _canonical(key, value)
        except opsalt_validate.ValidationError as err:
            problems.append(str(err))
        except ValueError as err:
            problems.append(f"{key} {err}, not {value!r}")
    if problems:
        raise SaltInvocationError("invalid redis_aof settings: " + "; ".join(problems))
    return wanted


# -- connection ---------------------------------------------------------------


def _parse_instance(instance):
    if instance is None or instance == "":
        return {}
    text = str(instance).strip()
    if text.startswith("unix://"):
        text = text[len("unix://") :]
    if text.startswith("/"):
        return {"unix_socket_path": text}
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\](?::(?P<v6port>\d+))?|(?P<host>[^:\[\]]+)(?::(?P<port>\d+))?", text
    )
    if not match:
        raise SaltInvocationError(f"instance '{text}' is neither host:port, [ipv6]:port nor a socket path")
    parsed = {"host": match.group("v6") or match.group("host")}
    port = match.group("v6port") or match.group("port")
    if port:
        parsed["port"] = int(port)
    return parsed


def _connection_args(instance, conn):
    args = {key: conn[key] for key in CONNECTION_ARGS if conn.get(key) not in (None, "")}
    for key, value in _parse_instance(instance).items():
        args.setdefault(key, value)
    # The endpoint (host/port or socket) comes from one place: the caller's,
    # else the configured one; mixing them would reach the wrong server.
    endpoint_given = bool({"host", "port", "unix_socket_path"} & set(args))
    for key in CONNECTION_ARGS:
        if key in args or (endpoint_given and key in ("host", "port", "unix_socket_path")):
            continue
        value = __salt__["config.get"](f"redis_aof:{key}", None)
        if value not in (None, ""):
            args[key] = value
    if args.get("unix_socket_path"):
        args.pop("host", None)
        args.pop("port", None)
        args.pop("ssl", None)
    else:
        args.setdefault("host", "127.0.0.1")
        args.setdefault("port", 6379)
        try:
            args["port"] = int(args["port"])
        except (TypeError, ValueError) as err:
            raise SaltInvocationError(f"port must be a number, not {args['port']!r}") from err
        ssl = args.get("ssl", False)
        args["ssl"] = ssl.strip().lower() in ("1", "true", "yes") if isinstance(ssl, str) else bool(ssl)
    args.setdefault("socket_timeout", 30)
    return args


def _label(args):
    if args.get("unix_socket_path"):
        return args["unix_socket_path"]
    host = args["host"]
    return f"[{host}]:{args['port']}" if ":" in host else f"{host}:{args['port']}"


def _is_local(args):
    # Paths the server reports (config file, log) are only ours to read when
    # the server runs on this host.
    return bool(args.get("unix_socket_path")) or args.get("host") in ("127.0.0.1", "::1", "localhost")


class _Instance:
    """
    One connection to one Redis server, with its errors made safe to show.
    """

    def __init__(self, args):
        self.args = args
        self.label = _label(args)
        self.secrets = [str(args["password"])] if args.get("password") else []
        self.local = _is_local(args)
        self.client = None
        self._server_info = None

    def __enter__(self):
        # One attempt: a wrong password or a dead server should fail the run
        # now, not after redis-py's backoff.
        self.client = redis.Redis(decode_responses=True, retry=Retry(NoBackoff(), 0), **self.args)
        return self

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()

    def error(self, what, err):
        message = redact_text(f"{type(err).__name__}: {err}", self.secrets)
        return CommandExecutionError(f"Redis {self.label}: {what} failed: {message}")

    def call(self, what, func, *args):
        try:
            return func(*args)
        except redis.exceptions.RedisError as err:
            # Not chained: redis-py's own text may echo the server's reply or
            # a command's arguments; self.error carries it redacted.
            raise self.error(what, err) from None

    def command(self, *argv):
        return self.call(" ".join(str(a) for a in argv[:2]), self.client.execute_command, *argv)

    def info(self, section):
        return self.call(f"INFO {section}", self.client.info, section)

    @property
    def server(self):
        if self._server_info is None:
            self._server_info = self.info("server")
        return self._server_info

    @property
    def version(self):
        return _version_tuple(self.server.get("redis_version", "0"))

    @property
    def config_file(self):
        return self.server.get("config_file") or None

    def config_get(self, key):
        found = self.call(f"CONFIG GET {key}", self.client.config_get, key)
        return found.get(key)

    def log_file(self, override=None):
        if override:
            return override
        path = self.config_get("logfile")
        if path and not os.path.isabs(path):
            path = os.path.join(self.config_get("dir") or "", path)
        return path or None


def _version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", str(text))[:3]) or (0,)


def _open(instance, conn):
    return _Instance(_connection_args(instance, conn))


def _current_settings(inst, keys):
    current = {}
    for key in keys:
        value = inst.config_get(key)
        if value is None:
            raise CommandExecutionError(
                f"Redis {inst.label} ({inst.server.get('redis_version')}) has no setting '{key}'; "
                "remove it from the state or upgrade Redis"
            )
        try:
            current[key] = _canonical(key, value)
        except ValueError:
            current[key] = str(value)
    return current


# -- config file ----------------------------------------------------------------


def _parse_config_text(text):
    """
    The managed settings a Redis config file sets (last line wins), in
    canonical form, or ``None`` when it has ``include`` lines (then the file
    alone does not say what Redis will load).
    """
    found = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if not parts or parts[0].startswith("#"):
            continue
        key = parts[0].lower()
        if key == "include":
            return None
        if key in SETTINGS and len(parts) == 2:
            value = parts[1].strip().strip('"').strip("'")
            try:
                found[key] = _canonical(key, value)
            except ValueError:
                found[key] = value
    return found


def _file_pending(inst, wanted):
    """
    The settings the config file would load differently from ``wanted``:
    ``{key: {"old", "new"}}``, or ``None`` when the file is not ours to read.
    """
    path = inst.config_file
    if not path or not inst.local:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            on_disk = _parse_config_text(handle.read())
    except OSError:
        return None
    if on_disk is None:
        return None
    pending = {}
    for key, value in wanted.items():
        loaded = on_disk.get(key, SETTINGS[key][1])
        if loaded != value:
            pending[key] = {"old": loaded, "new": value}
    return pending


# -- the pillar's instances ------------------------------------------------------

PILLAR_KEY = "redis_aof"


def valid_instance_name(name):
    """
    Whether ``name`` is a valid key of ``redis_aof:instances``: letters,
    digits and ``_ . @ + -``, up to 128, starting with a letter, digit or
    ``_`` (the schema's ``$defs/name``). The SLS builds state IDs only from
    valid names.

    CLI Example:

    .. code-block:: bash

        salt-call redis_aof.valid_instance_name cache
    """
    # fullmatch: the shared pattern's `$` would also accept a trailing newline
    return isinstance(name, str) and re.fullmatch(opsalt_validate.NAME_PATTERN, name) is not None


def _setting_key(raw_key):
    return str(raw_key).strip().lower().replace("_", "-")


def _merged_settings(*layers):
    merged = {}
    for layer in layers:
        merged.update({_setting_key(key): value for key, value in (layer or {}).items()})
    return merged


def _pillar_entry(name):
    """
    ``redis_aof:instances:<name>`` read from the pillar at run time (so no
    password passes through rendered SLS text): the address, the connection
    arguments, the settings (shared ones under the instance's own), and
    ``persist``/``wait_timeout``.
    """
    if not valid_instance_name(name):
        raise SaltInvocationError(
            f"redis_aof:instances: {name!r} is not a valid instance name (letters, digits and _ . @ + -, "
            "up to 128, starting with a letter, digit or _); rename the key in the asset system"
        )
    # unmask: Salt 3008 masks pillar values handed to modules; opsalt keeps
    # the password out of every return, log line and message itself.
    section = __salt__["pillar.get"](PILLAR_KEY, {}, unmask=True) or {}
    entry = (section.get("instances") or {}).get(name)
    if not isinstance(entry, dict):
        raise SaltInvocationError(
            f"redis_aof:instances:{name} is not in this host's pillar (or not a mapping)"
        )
    return {
        "instance": entry.get("instance"),
        "conn": {key: entry[key] for key in CONNECTION_ARGS if entry.get(key) is not None},
        "settings": _merged_settings(section.get("settings"), entry.get("settings")),
        "persist": entry.get("persist", section.get("persist")),
        "wait_timeout": entry.get("wait_timeout", section.get("wait_timeout")),
    }


def _first(*values):
    return next((value for value in values if value is not None), None)


def _resolve(
    settings, instance, conn, persist=None, wait_timeout=None, pillar_instance=None, back_to_defaults=False
):
    """
    ``(wanted, instance, conn, persist, wait_timeout)``: the explicit
    arguments over the pillar instance ``pillar_instance`` (when given) over
    the defaults. ``back_to_defaults`` wants Redis's default for every
    setting that would be managed.
    """
    explicit = validate(settings) if settings is not None else {}
    entry = _pillar_entry(pillar_instance) if pillar_instance is not None else {}
    wanted = {**validate(entry.get("settings") or {}), **explicit}
    if back_to_defaults:
        wanted = {key: SETTINGS[key][1] for key in wanted}
    return (
        wanted,
        instance or entry.get("instance"),
        {**entry.get("conn", {}), **{k: v for k, v in conn.items() if v is not None}},
        bool(_first(persist, entry.get("persist"), True)),
        _first(wait_timeout, entry.get("wait_timeout"), 300),
    )


# -- reading ------------------------------------------------------------------


def status(instance=None, **conn):
    """
    ``INFO persistence`` (typed) plus the AOF settings, the Redis version and
    the config and log file paths.

    CLI Example:

    .. code-block:: bash

        salt-call redis_aof.status 127.0.0.1:6379
        salt-call redis_aof.status unix_socket_path=/run/redis/redis.sock password=...
    """
    with _open(instance, conn) as inst:
        settings = {}
        for key in SETTINGS:
            value = inst.config_get(key)
            if value is not None:
                settings[key] = value
        return {
            "instance": inst.label,
            "version": inst.server.get("redis_version"),
            "config_file": inst.config_file,
            "log_file": inst.log_file(),
            "aof_dir": os.path.join(inst.config_get("dir") or "", inst.config_get("appenddirname") or ""),
            "persistence": inst.info("persistence"),
            "settings": settings,
        }


def diff(
    settings=None,
    instance=None,
    persist=None,
    unreachable_ok=False,
    pillar_instance=None,
    back_to_defaults=False,
    **conn,
):
    """
    What :py:func:`configure` would change, without changing it: validated
    settings compared with the live values (``changes``) and, when the config
    file is readable here, with what the file would load at the next start
    (``config_file_pending``; ``None`` when it cannot be known).

    unreachable_ok
        When the server cannot be reached (not running yet, e.g. installed by
        an earlier state in the same dry run), return every setting as a
        change from ``None`` and the reason in ``unreachable`` instead of
        raising. Bad settings and a
        wrong password still raise.
    pillar_instance
        The key of ``redis_aof:instances`` in this host's pillar: its address,
        credentials, settings (over the shared ``redis_aof:settings``) and
        ``persist`` are read from the pillar now; explicit arguments win.
    back_to_defaults
        Want Redis's default (:py:func:`defaults`) for each setting instead.

    Returns ``instance``, ``wanted`` (the validated settings), ``changes``,
    ``unreachable``, ``persist``, ``config_file`` and ``config_file_pending``.

    CLI Example:

    .. code-block:: bash

        salt-call redis_aof.diff '{"appendonly": true, "appendfsync": "everysec"}' instance=127.0.0.1:6380
    """
    wanted, instance, conn, persist, _wait = _resolve(
        settings, instance, conn, persist, None, pillar_instance, back_to_defaults
    )
    with _open(instance, conn) as inst:
        result = {"instance": inst.label, "wanted": wanted, "persist": persist}
        unreachable = _unreachable(inst) if unreachable_ok else None
        if unreachable:
            result.update(
                changes={k: {"old": None, "new": v} for k, v in wanted.items()},
                unreachable=unreachable,
                config_file=None,
                config_file_pending=None,
            )
            return result
        current = _current_settings(inst, wanted)
        result.update(
            changes={k: {"old": current[k], "new": v} for k, v in wanted.items() if current[k] != v},
            unreachable=None,
            config_file=inst.config_file,
            config_file_pending=_file_pending(inst, wanted) if persist else None,
        )
        return result


def _unreachable(inst):
    """
    Why the server cannot be reached, or ``None`` when it answers. A wrong
    password is an error, not "unreachable".
    """
    try:
        inst.client.ping()
        return None
    except redis.exceptions.AuthenticationError as err:
        raise inst.error("AUTH", err) from None  # not chained: see _Instance.call
    except redis.exceptions.ConnectionError as err:
        return str(inst.error("connecting", err))
    except redis.exceptions.RedisError as err:
        raise inst.error("PING", err) from None  # not chained: see _Instance.call


def defaults():
    """
    The Redis 7 default of every setting this module manages (what a config
    file without the line means), as ``CONFIG GET`` shows it. ``clean.sls``
    uses it to hand the settings back to Redis's defaults.

    CLI Example:

    .. code-block:: bash

        salt-call redis_aof.defaults
    """
    return {key: default for key, (_kind, default) in SETTINGS.items()}


# -- writing --------------------------------------------------------------------


def _config_set(inst, changes):
    """
    ``CONFIG SET`` the new values: in one atomic command on Redis 7+, one by
    one with a rollback of the earlier ones on older servers.
    """
    # appendonly last, so the initial rewrite starts with the other settings.
    keys = sorted(changes, key=lambda k: k == "appendonly")
    if inst.version >= (7, 0):
        argv = []
        for key in keys:
            argv += [key, changes[key]["new"]]
        inst.command("CONFIG", "SET", *argv)
        return
    done = []
    for key in keys:
        try:
            inst.command("CONFIG", "SET", key, changes[key]["new"])
        except CommandExecutionError:
            for earlier in reversed(done):
                try:
                    inst.command("CONFIG", "SET", earlier, changes[earlier]["old"])
                except CommandExecutionError as undo_err:
                    log.error("redis_aof: could not roll %s back on %s: %s", earlier, inst.label, undo_err)
            raise
        done.append(key)


def _wait_for_rewrite(inst, wait_timeout, rewrites_before=None):
    """
    Wait until no AOF rewrite is running or scheduled: the AOF must be
    complete on disk before the config file says ``appendonly yes``, or a
    restart loads an AOF without the data. With ``rewrites_before`` (AOF just
    turned on) the rewrite must also have started since, and succeeded.
    """

    def finished():
        info = inst.info("persistence")
        if not info.get("aof_enabled"):
            return (info,)
        started = rewrites_before is None or info.get("aof_rewrites", rewrites_before + 1) > rewrites_before
        if not started or info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"):
            return None
        if rewrites_before is not None and info.get("aof_last_bgrewrite_status", "ok") != "ok":
            raise CommandExecutionError(
                f"Redis {inst.label}: the initial AOF rewrite failed (aof_last_bgrewrite_status "
                f"{info.get('aof_last_bgrewrite_status')}); see the Redis log {inst.log_file() or ''}. "
                "appendonly is on live but the config file was not rewritten"
            )
        return (info,)

    # A tuple: an INFO reply may be an empty (false) dict.
    done = opsalt_wait.until(finished, wait_timeout)
    if not done:
        raise CommandExecutionError(
            f"Redis {inst.label}: the AOF rewrite is still running after {wait_timeout} s; "
            "appendonly is on live, the config file is not rewritten yet: run the state again once "
            "INFO persistence shows aof_rewrite_in_progress:0"
        )
    return done[0]


def configure(
    settings=None,
    instance=None,
    persist=None,
    wait_timeout=None,
    pillar_instance=None,
    back_to_defaults=False,
    **conn,
):
    """
    Apply AOF settings live with ``CONFIG SET`` (no restart, no data loss)
    and persist them with ``CONFIG REWRITE``. Settings are validated first;
    an invalid one changes nothing. Turning ``appendonly`` on waits for the
    initial AOF rewrite (up to ``wait_timeout`` seconds) before persisting.

    settings
        Mapping of setting to value; see :py:func:`validate`.
    persist
        ``CONFIG REWRITE`` after the change (default). When the server runs
        without a config file the result says the change is live only.
    wait_timeout
        Seconds to wait for the initial AOF rewrite (default 300).
    pillar_instance, back_to_defaults
        As for :py:func:`diff`.

    Returns ``changes`` (live values changed), ``persisted`` (``True``,
    ``False`` or ``None`` when nothing needed persisting), ``live_only``
    (the reason, when the change could not be persisted) and ``config_file``.

    CLI Example:

    .. code-block:: bash

        salt-call redis_aof.configure '{"appendonly": true, "appendfsync": "everysec"}' instance=127.0.0.1:6380
    """
    wanted, instance, conn, persist, wait_timeout = _resolve(
        settings, instance, conn, persist, wait_timeout, pillar_instance, back_to_defaults
    )
    with _open(instance, conn) as inst:
        current = _current_settings(inst, wanted)
        changes = {k: {"old": current[k], "new": v} for k, v in wanted.items() if current[k] != v}
        file_pending = _file_pending(inst, wanted) if persist else None
        result = {
            "instance": inst.label,
            "wanted": wanted,
            "changes": changes,
            "persisted": None,
            "live_only": None,
            "config_file": inst.config_file,
        }
        if changes:
            rewrites_before = inst.info("persistence").get("aof_rewrites", 0)
            log.info(
                "redis_aof: CONFIG SET on %s: %s",
                inst.label,
                ", ".join(f"{k} {c['new']}" for k, c in changes.items()),
            )
            _config_set(inst, changes)
            if changes.get("appendonly", {}).get("new") == "yes":
                _wait_for_rewrite(inst, wait_timeout, rewrites_before)
        if not persist or not (changes or file_pending):
            return result
        if not inst.config_file:
            result["persisted"] = False
            result["live_only"] = "the server runs without a config file, so CONFIG REWRITE cannot persist it"
            return result
        # An earlier run may have timed out while the initial rewrite ran.
        _wait_for_rewrite(inst, wait_timeout)
        try:
            inst.command("CONFIG", "REWRITE")
        except CommandExecutionError as err:
            raise CommandExecutionError(
                f"{err}. The settings are live but not in {inst.config_file}: they are lost at the next restart. "
                "Make the file and its directory writable by the Redis user, or set persist: false"
            ) from err
        result["persisted"] = True
        return result


# -- diagnostics ----------------------------------------------------------------


def _read_log(path, start=None, max_bytes=LOG_TAIL_BYTES):
    """
    ``(lines, reason)``: the log from byte ``start`` (or its last
    ``max_bytes``); ``lines`` is ``None`` with the reason when unreadable.
    """
    if not path:
        return None, "Redis logs to stdout/syslog (logfile is empty)"
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            offset = start if start is not None and start <= size else max(0, size - max_bytes)
            handle.seek(offset)
            data = handle.read(max_bytes)
    except OSError as err:
        return None, f"cannot read {path}: {err.strerror}"
    lines = data.decode("utf-8", "replace").splitlines()
    if offset and start is None and lines:
        lines = lines[1:]  # the first line is cut in the middle
    return lines, None


def _log_size(path):
    try:
        return os.path.getsize(path) if path else None
    except OSError:
        return None


def _check_interval(value, name, upper):
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise SaltInvocationError(f"{name} must be a number of seconds, not {value!r}") from err
    if not 0 <= number <= upper:
        raise SaltInvocationError(f"{name} must be between 0 and {upper} seconds")
    return number


def stalls(instance=None, interval=5, log_file=None, **conn):
    """
    Watch the instance for ``interval`` seconds and report AOF fsync stalls:
    the ``aof_delayed_fsync`` delta (writes postponed because a background
    fsync ran over 2 s), ``aof_pending_bio_fsync``, the AOF events of
    ``LATENCY LATEST`` (or that the latency monitor is off), and the matching
    lines of the Redis log when it is readable here.

    interval
        Seconds to watch (0 to 3600).
    log_file
        Read this log instead of the server's ``logfile``.

    CLI Example:

    .. code-block:: bash

        salt-call redis_aof.stalls 127.0.0.1:6379 interval=60
    """
    interval = _check_interval(interval, "interval", 3600)
    with _open(instance, conn) as inst:
        before = inst.info("persistence")
        time.sleep(interval)
        after = inst.info("persistence")
        rows = inst.command("LATENCY", "LATEST")
        threshold = int(inst.config_get("latency-monitor-threshold") or 0)
        path = inst.log_file(log_file) if (inst.local or log_file) else None
        lines, reason = _read_log(path) if path else (None, "the server is not on this host")
        report = opsalt_redis_aof.analyse_stalls(
            before, after, rows, lines, threshold, interval, path, reason
        )
        report["instance"] = inst.label
        return report


def recommend_timeout(instance=None, margin=1.5, minimum=1, aof_only=False, log_file=None, **conn):
    """
    The client timeout (seconds) that covers the worst stall observed, with
    a margin, and the reasoning: ``LATENCY LATEST`` and ``LATENCY HISTORY``
    of every event (all of them block the single event loop the client
    waits on; ``aof_only=True`` keeps the AOF ones), plus the log's
    fsync-over-2-s lines. ``timeout_s`` is ``None`` when there is no
    evidence at all.

    margin
        Multiplier over the worst stall (default 1.5).
    minimum
        Lowest advice in seconds (default 1).

    CLI Example:

    .. code-block:: bash

        salt-call redis_aof.recommend_timeout 127.0.0.1:6379 margin=2
    """
    try:
        margin = float(margin)
        minimum = int(minimum)
    except (TypeError, ValueError) as err:
        raise SaltInvocationError("margin must be a number and minimum a whole number of seconds") from err
    if margin < 1 or minimum < 0:
        raise SaltInvocationError("margin must be at least 1 and minimum not negative")
    with _open(instance, conn) as inst:
        rows = inst.command("LATENCY", "LATEST")
        histories = {row[0]: inst.command("LATENCY", "HISTORY", row[0]) for row in rows or []}
        threshold = int(inst.config_get("latency-monitor-threshold") or 0)
        path = inst.log_file(log_file) if (inst.local or log_file) else None
        lines, reason = _read_log(path) if path else (None, "the server is not on this host")
        advice = opsalt_redis_aof.recommend_from(rows, histories, lines, threshold, margin, minimum, aof_only)
        advice["instance"] = inst.label
        advice["log"] = {"path": path, "readable": lines is not None, "reason": reason}
        return advice


# -- watchdog -------------------------------------------------------------------


def watchdog(instance=None, period=500, duration=10, force=False, log_file=None, **conn):
    """
    Turn Redis's software watchdog on for ``duration`` seconds: while the
    event loop is blocked longer than ``period`` ms, Redis logs the stack of
    the main thread (e.g. stuck in ``write`` inside ``flushAppendOnlyFile``).
    The previous ``watchdog-period`` is restored afterwards, also on error.
    Returns the traces logged meanwhile when the log is readable here.

    Redis before 3.0 is refused unless ``force=True``: the watchdog crashed
    2.8 during an RDB save (redis issue #1771).

    period
        Milliseconds (Redis rounds it up to at least two cron ticks).
    duration
        Seconds to keep it on (at most 600).

    CLI Example:

    .. code-block:: bash

        salt-call redis_aof.watchdog 127.0.0.1:6379 period=500 duration=30
    """
    duration = _check_interval(duration, "duration", WATCHDOG_MAX_DURATION)
    try:
        period = int(period)
    except (TypeError, ValueError) as err:
        raise SaltInvocationError(f"period must be milliseconds, not {period!r}") from err
    if period <= 0:
        raise SaltInvocationError("period must be a positive number of milliseconds")
    with _open(instance, conn) as inst:
        version = inst.server.get("redis_version")
        if inst.version < WATCHDOG_SAFE_FROM and not force:
            raise CommandExecutionError(
                f"Redis {inst.label} is {version}: the software watchdog crashed Redis 2.8 during an RDB save "
                "(redis issue #1771). Upgrade, or pass force=True on an instance you can afford to lose"
            )
        previous = inst.config_get("watchdog-period")
        if previous is None:
            raise CommandExecutionError(f"Redis {inst.label} ({version}) has no watchdog-period setting")
        path = inst.log_file(log_file) if (inst.local or log_file) else None
        start = _log_size(path)
        try:
            inst.command("CONFIG", "SET", "watchdog-period", period)
            log.info("redis_aof: watchdog-period %s ms on %s for %s s", period, inst.label, duration)
            time.sleep(duration)
        finally:
            _restore_watchdog(inst, previous)
        lines, reason = (
            _read_log(path, start=start or 0) if path else (None, "the server is not on this host")
        )
        traces = opsalt_redis_aof.scan_log(lines)["watchdog"] if lines is not None else []
        return {
            "instance": inst.label,
            "period_ms": period,
            "duration_s": duration,
            "restored_to": int(previous),
            "log": {"path": path, "readable": lines is not None, "reason": reason},
            "traces": traces,
            "aof_traces": sum(1 for t in traces if t["aof"]),
        }


def _restore_watchdog(inst, previous):
    # The connection may be what failed: try it, then a fresh one.
    for attempt in range(2):
        try:
            if attempt:
                inst.client.close()
                inst.__enter__()
            inst.command("CONFIG", "SET", "watchdog-period", previous)
            return
        except CommandExecutionError as err:
            last = err
    raise CommandExecutionError(
        f"{last}. watchdog-period may still be on: run CONFIG SET watchdog-period {previous} on {inst.label}"
    )
