"""
What opsalt knows about pgbouncer's files, without talking to a server:
``pgbouncer.ini`` parsing, rendering and validation, ``userlist.txt`` parsing
and rendering, and md5/SCRAM-SHA-256 secrets (RFC 5802, RFC 7677).

Plain Python (no Salt dunders), so the ``pgbouncer`` execution module, its
state and the unit tests share one copy.
"""

import base64
import hashlib
import hmac
import os
import re
import secrets as _random
import stringprep
import unicodedata

import opsalt_files
import opsalt_validate

SECTIONS = ("databases", "users", "pgbouncer")

AUTH_TYPES = ("any", "trust", "plain", "md5", "scram-sha-256", "cert", "hba", "pam")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
POOL_MODES = ("session", "transaction", "statement")

# [pgbouncer] keys: name -> (kind, first version, choices). The kinds:
# int, time (seconds, fractional allowed), bool, enum, file (must exist and
# be readable by the service user), outfile (its directory must exist), str.
# The 1.18 set is the one SHOW CONFIG lists on Debian 12; later keys carry
# the version that introduced them so an older pgbouncer rejects them here
# rather than ignoring them with a log line.
SETTINGS = {
    "admin_users": ("str", (1, 0), None),
    "application_name_add_host": ("bool", (1, 0), None),
    "auth_dbname": ("str", (1, 20), None),
    "auth_file": ("file", (1, 0), None),
    "auth_hba_file": ("file", (1, 0), None),
    "auth_query": ("str", (1, 0), None),
    "auth_type": ("enum", (1, 0), AUTH_TYPES),
    "auth_user": ("str", (1, 0), None),
    "autodb_idle_timeout": ("time", (1, 0), None),
    "client_idle_timeout": ("time", (1, 0), None),
    "client_login_timeout": ("time", (1, 0), None),
    "client_tls_ca_file": ("file", (1, 0), None),
    "client_tls_cert_file": ("file", (1, 0), None),
    "client_tls_ciphers": ("str", (1, 0), None),
    "client_tls_dheparams": ("str", (1, 0), None),
    "client_tls_ecdhcurve": ("str", (1, 0), None),
    "client_tls_key_file": ("file", (1, 0), None),
    "client_tls_protocols": ("str", (1, 0), None),
    "client_tls_sslmode": ("enum", (1, 0), SSLMODES),
    "default_pool_size": ("int", (1, 0), None),
    "disable_pqexec": ("bool", (1, 0), None),
    "dns_max_ttl": ("time", (1, 0), None),
    "dns_nxdomain_ttl": ("time", (1, 0), None),
    "dns_zone_check_period": ("time", (1, 0), None),
    "idle_transaction_timeout": ("time", (1, 0), None),
    "ignore_startup_parameters": ("str", (1, 0), None),
    "job_name": ("str", (1, 0), None),
    "listen_addr": ("str", (1, 0), None),
    "listen_backlog": ("int", (1, 0), None),
    "listen_port": ("int", (1, 0), None),
    "log_connections": ("bool", (1, 0), None),
    "log_disconnections": ("bool", (1, 0), None),
    "log_pooler_errors": ("bool", (1, 0), None),
    "log_stats": ("bool", (1, 0), None),
    "logfile": ("outfile", (1, 0), None),
    "max_client_conn": ("int", (1, 0), None),
    "max_db_connections": ("int", (1, 0), None),
    "max_packet_size": ("int", (1, 0), None),
    "max_prepared_statements": ("int", (1, 21), None),
    "max_user_connections": ("int", (1, 0), None),
    "min_pool_size": ("int", (1, 0), None),
    "peer_id": ("int", (1, 19), None),
    "pidfile": ("outfile", (1, 0), None),
    "pkt_buf": ("int", (1, 0), None),
    "pool_mode": ("enum", (1, 0), POOL_MODES),
    "query_timeout": ("time", (1, 0), None),
    "query_wait_timeout": ("time", (1, 0), None),
    "reserve_pool_size": ("int", (1, 0), None),
    "reserve_pool_timeout": ("time", (1, 0), None),
    "resolv_conf": ("file", (1, 0), None),
    "sbuf_loopcnt": ("int", (1, 0), None),
    "server_check_delay": ("time", (1, 0), None),
    "server_check_query": ("str", (1, 0), None),
    "server_connect_timeout": ("time", (1, 0), None),
    "server_fast_close": ("bool", (1, 0), None),
    "server_idle_timeout": ("time", (1, 0), None),
    "server_lifetime": ("time", (1, 0), None),
    "server_login_retry": ("time", (1, 0), None),
    "server_reset_query": ("str", (1, 0), None),
    "server_reset_query_always": ("bool", (1, 0), None),
    "server_round_robin": ("bool", (1, 0), None),
    "server_tls_ca_file": ("file", (1, 0), None),
    "server_tls_cert_file": ("file", (1, 0), None),
    "server_tls_ciphers": ("str", (1, 0), None),
    "server_tls_key_file": ("file", (1, 0), None),
    "server_tls_protocols": ("str", (1, 0), None),
    "server_tls_sslmode": ("enum", (1, 0), SSLMODES),
    "so_reuseport": ("bool", (1, 0), None),
    "stats_period": ("int", (1, 0), None),
    "stats_users": ("str", (1, 0), None),
    "suspend_timeout": ("time", (1, 0), None),
    "syslog": ("bool", (1, 0), None),
    "syslog_facility": ("str", (1, 0), None),
    "syslog_ident": ("str", (1, 0), None),
    "tcp_defer_accept": ("int", (1, 0), None),
    "tcp_keepalive": ("bool", (1, 0), None),
    "tcp_keepcnt": ("int", (1, 0), None),
    "tcp_keepidle": ("int", (1, 0), None),
    "tcp_keepintvl": ("int", (1, 0), None),
    "tcp_socket_buffer": ("int", (1, 0), None),
    "tcp_user_timeout": ("int", (1, 0), None),
    "track_extra_parameters": ("str", (1, 20), None),
    "unix_socket_dir": ("str", (1, 0), None),
    "unix_socket_group": ("str", (1, 0), None),
    "unix_socket_mode": ("octal", (1, 0), None),
    "user": ("str", (1, 0), None),
    "verbose": ("int", (1, 0), None),
}

# Keys pgbouncer reads only at start; a RELOAD keeps the old value (SHOW
# CONFIG's "changeable" column says the same for a running server).
RESTART_ONLY = frozenset(
    {
        "disable_pqexec",
        "job_name",
        "listen_addr",
        "listen_backlog",
        "listen_port",
        "pidfile",
        "pkt_buf",
        "resolv_conf",
        "so_reuseport",
        "unix_socket_dir",
        "unix_socket_group",
        "unix_socket_mode",
        "user",
        "peer_id",
    }
)

DATABASE_PARAMS = frozenset(
    {
        "dbname",
        "host",
        "port",
        "user",
        "password",
        "auth_user",
        "auth_dbname",
        "pool_size",
        "min_pool_size",
        "reserve_pool",
        "connect_query",
        "pool_mode",
        "max_db_connections",
        "client_encoding",
        "datestyle",
        "timezone",
        "application_name",
    }
)
USER_PARAMS = frozenset({"pool_mode", "max_user_connections"})

_TRUE = ("1", "yes", "on", "true")
_FALSE = ("0", "no", "off", "false")


class ConfigError(ValueError):
    """
    The configuration or userlist is not acceptable; the message names the
    line, section and key, never a secret.
    """


# -- pgbouncer.ini ----------------------------------------------------------


def parse_ini(text):
    """
    ``{section: {key: value}}`` from ``pgbouncer.ini`` text (sections and
    keys lower-cased as pgbouncer does). Raises :class:`ConfigError` for a
    line that is neither a section, a ``key = value`` nor a comment.
    """
    sections = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("%include"):
            raise ConfigError(f"line {number}: %include is not supported by opsalt's validation")
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"line {number}: unterminated section header")
            current = line[1:-1].strip().lower()
            sections.setdefault(current, {})
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"line {number}: expected 'key = value'")
        if current is None:
            raise ConfigError(f"line {number}: key outside any section")
        sections[current][key.strip().lower() if current == "pgbouncer" else key.strip()] = value.strip()
    return sections


def _quote_param(value):
    text = str(value)
    if text == "" or re.search(r"[\s']", text):
        return "'" + text.replace("'", "''") + "'"
    return text


def format_value(value):
    """
    One ini value: booleans as 1/0, mappings (database or user entries) as
    ``k=v`` connection-string pairs.
    """
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict):
        return " ".join(f"{k}={_quote_param(v)}" for k, v in value.items())
    if value is None:
        return ""
    return str(value)


def render_ini(databases=None, users=None, settings=None, header=None):
    """
    ``pgbouncer.ini`` text for the three sections. Keys keep their given
    order within a section (so a second render is byte-identical).
    """
    out = []
    if header:
        out += [f"; {line}" for line in header.splitlines()] + [""]
    for section, entries in (("databases", databases), ("users", users), ("pgbouncer", settings)):
        out.append(f"[{section}]")
        for key, value in (entries or {}).items():
            out.append(f"{key} = {format_value(value)}")
        out.append("")
    return "\n".join(out)


def parse_connstring(text):
    """
    ``{param: value}`` from a ``[databases]``/``[users]`` value
    (``host=x port=5432 password='a b'``).
    """
    params = {}
    pos = 0
    pattern = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^']|'')*'|[^\s']*)")
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = pattern.match(text, pos)
        if not match:
            raise ConfigError(f"cannot parse '{_redact_connstring(text[pos : pos + 40])}'")
        value = match.group(2)
        if value.startswith("'"):
            value = value[1:-1].replace("''", "'")
        params[match.group(1).lower()] = value
        pos = match.end()
    return params


def _redact_connstring(text):
    return re.sub(r"(password\s*=\s*)('(?:[^']|'')*'|\S+)", r"\1***", text)


def redact_ini(text):
    """
    ``text`` with every ``password=`` of ``[databases]`` entries masked.
    """
    return "\n".join(_redact_connstring(line) for line in text.split("\n"))


def _version_text(version):
    return ".".join(str(part) for part in version)


def check_value(key, value, version=None):
    """
    The problem with ``key = value`` in ``[pgbouncer]`` (a string), or
    ``None``. Files are not looked at here.
    """
    spec = SETTINGS.get(key)
    if spec is None:
        return f"unknown key '{key}' in [pgbouncer]"
    kind, since, choices = spec
    if version is not None and tuple(version[:2]) < since:
        return (
            f"'{key}' needs pgbouncer {_version_text(since)} or newer (installed: {_version_text(version)})"
        )
    text = str(value).strip()
    if kind == "int" and not re.fullmatch(r"-?\d+", text):
        return f"'{key}' must be an integer, got '{text}'"
    if kind == "time":
        try:
            if float(text) < 0:
                raise ValueError
        except ValueError:
            return f"'{key}' must be a number of seconds, got '{text}'"
    if kind == "bool" and text.lower() not in _TRUE + _FALSE:
        return f"'{key}' must be a boolean (1/0, yes/no, on/off, true/false), got '{text}'"
    if kind == "enum" and text.lower() not in choices:
        return f"'{key}' must be one of {', '.join(choices)}, got '{text}'"
    if kind == "octal" and not re.fullmatch(r"0?[0-7]{1,4}", text):
        return f"'{key}' must be an octal mode like 0777, got '{text}'"
    if key == "listen_port" and not 0 < int(text) < 65536:
        return f"'listen_port' must be 1..65535, got '{text}'"
    return None


def normalise(key, value, from_server=False):
    """
    ``value`` the way SHOW CONFIG prints it, so file and server compare.
    ``from_server``: ``value`` comes from SHOW CONFIG, which prints a mode
    in decimal (511) but its default in octal (0777).
    """
    kind = SETTINGS.get(key, ("str", None, None))[0]
    text = "" if value is None else str(value).strip()
    if kind == "octal" and from_server and not text.startswith("0"):
        return text
    if kind == "bool":
        return "1" if text.lower() in _TRUE else "0"
    if kind == "int":
        return str(int(text)) if re.fullmatch(r"-?\d+", text) else text
    if kind == "time":
        try:
            number = float(text)
        except ValueError:
            return text
        return str(int(number)) if number == int(number) else f"{number:g}"
    if kind == "octal":
        return str(int(text, 8)) if re.fullmatch(r"[0-7]+", text) else text
    if kind == "enum":
        return text.lower()
    return text


def _readable_by(path, user):
    """
    True when ``user`` (name or ``None`` for "whoever runs this") can read
    ``path``: the mode bits, owner and groups, as the kernel would decide
    (root excepted: the service user never is root, pgbouncer refuses it).
    """
    if user is None:
        return os.access(path, os.R_OK)
    import grp
    import pwd

    entry = pwd.getpwnam(user)
    if entry.pw_uid == 0:
        return os.path.exists(path)
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}

    def allowed(st, bit):
        if st.st_uid == entry.pw_uid:
            return bool(st.st_mode & (bit << 6))
        if st.st_gid in groups:
            return bool(st.st_mode & (bit << 3))
        return bool(st.st_mode & bit)

    directory = os.path.dirname(os.path.abspath(path))
    while True:
        if not allowed(os.stat(directory), 0o1):
            return False
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return allowed(os.stat(path), 0o4)


def _path_problem(key, path, service_user):
    if not os.path.isabs(path):
        return f"'{key}' must be an absolute path, got '{path}'"
    if os.path.lexists(path) and not os.path.isfile(path):
        return f"'{key}' {path} is not a regular file"
    if not os.path.isfile(path):
        return f"'{key}' file {path} does not exist"
    try:
        readable = _readable_by(path, service_user)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        return f"service_user: {service_user!r} is not a local user"
    if not readable:
        return f"'{key}' file {path} is not readable by the service user '{service_user}'"
    return None


def validate(sections, version=None, service_user=None, userlist_text=None):  # noqa: C901 - one branch per pgbouncer key family
    """
    Every problem pgbouncer itself would only log (or ignore): unknown
    sections and keys for ``version``, value types and enums, referenced
    files that are missing or unreadable by ``service_user``, an
    ``auth_file`` with a bad line, and ``auth_type`` against the secrets in
    it. ``userlist_text`` stands in for the auth_file's content when the
    caller is about to write it. Returns a list of messages (empty: valid).
    """
    errors = []
    for section in sections:
        if section not in SECTIONS:
            errors.append(f"unknown section [{section}]")
    settings = sections.get("pgbouncer")
    if settings is None:
        errors.append("missing [pgbouncer] section")
        settings = {}
    for key, value in settings.items():
        problem = check_value(key, value, version)
        if problem:
            errors.append(problem)
            continue
        kind = SETTINGS[key][0]
        if kind == "file" and value:
            if key == "auth_file" and userlist_text is not None:
                continue
            problem = _path_problem(key, value, service_user)
            if problem:
                errors.append(problem)
        if kind == "outfile" and value and not os.path.isdir(os.path.dirname(value) or "."):
            errors.append(f"'{key}': directory {os.path.dirname(value)} does not exist")
    for section, allowed in (("databases", DATABASE_PARAMS), ("users", USER_PARAMS)):
        for name, value in (sections.get(section) or {}).items():
            try:
                params = parse_connstring(value)
            except ConfigError as err:
                errors.append(f"[{section}] {name}: {err}")
                continue
            unknown = sorted(set(params) - allowed)
            if unknown:
                errors.append(f"[{section}] {name}: unknown parameter(s) {', '.join(unknown)}")
            if params.get("pool_mode") and params["pool_mode"] not in POOL_MODES:
                errors.append(f"[{section}] {name}: pool_mode must be one of {', '.join(POOL_MODES)}")
    auth_type = str(settings.get("auth_type", "md5")).lower()
    if auth_type == "hba" and not settings.get("auth_hba_file"):
        errors.append("auth_type 'hba' needs auth_hba_file")
    auth_file = settings.get("auth_file")
    if (
        auth_type in ("md5", "scram-sha-256", "plain", "hba")
        and not auth_file
        and not settings.get("auth_query")
    ):
        errors.append(f"auth_type '{auth_type}' needs auth_file (or auth_user/auth_query)")
    if auth_file and not any("auth_file" in e for e in errors):
        text = userlist_text
        if text is None:
            # root reads it: no link, no FIFO, a size cap (opsalt_files)
            try:
                text = opsalt_files.read_regular(auth_file)
                if text is None:
                    errors.append(f"'auth_file' file {auth_file} does not exist")
            except (OSError, ValueError) as err:
                text = None
                errors.append(f"cannot read auth_file {auth_file}: {getattr(err, 'strerror', None) or err}")
        if text is not None:
            try:
                entries = parse_userlist(text)
            except ConfigError as err:
                errors.append(f"auth_file {auth_file}: {err}")
            else:
                errors += [f"auth_file {auth_file}: {p}" for p in auth_type_problems(auth_type, entries)]
    return errors


def duplicates(text):
    """
    Messages for every section header and every key that appears twice in
    ``pgbouncer.ini`` text: pgbouncer silently takes the last one, so a
    second ``auth_type`` line would win over the first.
    """
    problems, seen_sections, seen_keys, current = [], set(), {}, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ";#" or line.startswith("%"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip().lower()
            if current in seen_sections:
                problems.append(f"line {number}: section [{current}] appears twice")
            seen_sections.add(current)
            seen_keys.setdefault(current, set())
            continue
        key = line.partition("=")[0].strip()
        key = key.lower() if current == "pgbouncer" else key
        if current is not None and key:
            if key in seen_keys[current]:
                problems.append(f"line {number}: key '{key}' appears twice in [{current}]")
            seen_keys[current].add(key)
    return problems


def _no_final_newline(text, what, secret=False):
    # opsalt_validate's patterns end in "$", which in Python also matches
    # before one final "\n": refuse that here as well.
    if isinstance(text, str) and text.endswith("\n"):
        shown = "(a secret, not shown)" if secret else repr(text)
        raise opsalt_validate.ValidationError(
            f"{what}: {shown} contains a line break or control character; a value must stay on one line"
        )
    return text


def one_line(value, what, secret=False):
    """:func:`opsalt_validate.line`, also refusing a final newline."""
    return _no_final_newline(opsalt_validate.line(value, what, secret), what, secret)


def plain_name(value, what):
    """:func:`opsalt_validate.name`, also refusing a final newline."""
    return _no_final_newline(opsalt_validate.name(value, what), what)


def file_path(value, what):
    """:func:`opsalt_validate.abs_path`, also refusing a final newline."""
    return _no_final_newline(opsalt_validate.abs_path(value, what), what)


# pgbouncer's fallback database: ``* = host=...`` serves any database name.
FALLBACK_DATABASE = "*"


def database_name(value, what):
    """
    A ``[databases]`` name: :data:`opsalt_validate.NAME_PATTERN`, or ``*``.
    """
    if value == FALLBACK_DATABASE:
        return value
    return plain_name(value, what)


def _check_entry(value, what):
    # A [databases]/[users] value: a one-line connection string, or a
    # mapping of parameter names (INI-key safe) to one-line values.
    if isinstance(value, dict):
        for key, item in value.items():
            opsalt_validate.ini_key(key, f"{what} parameter")
            one_line(item, f"{what}:{key}", secret=key == "password")
    elif isinstance(value, (str, int)):
        # a connection string may carry a password: never shown
        one_line(value, what, secret=True)
    else:
        raise opsalt_validate.ValidationError(f"{what}: must be a connection string or a mapping")


def check_sections(databases, users, settings):
    """
    Refuse (:class:`opsalt_validate.ValidationError`, naming the key) any
    name, key or value that would leave its line in ``pgbouncer.ini``: a
    line break or control character, or a key with ``[ ] =`` or a leading
    ``; #``. Database and user names match :func:`database_name` and
    :func:`opsalt_validate.name`.
    """
    for what, entries in (("databases", databases), ("users", users), ("settings", settings)):
        if entries is not None and not isinstance(entries, dict):
            raise opsalt_validate.ValidationError(f"{what}: must be a mapping")
    for name, value in (databases or {}).items():
        database_name(name, "databases key")
        _check_entry(value, f"databases:{name}")
    for name, value in (users or {}).items():
        plain_name(name, "users key")
        _check_entry(value, f"users:{name}")
    for key, value in (settings or {}).items():
        opsalt_validate.ini_key(key, "settings key")
        one_line(format_value(value), f"settings:{key}")


def check_userlist_users(users):
    """
    Refuse a userlist mapping whose user names are not
    :func:`opsalt_validate.name`, or whose passwords/secrets hold a line
    break or control character (never shown).
    """
    if not isinstance(users, dict):
        raise opsalt_validate.ValidationError(
            "userlist: must be a mapping of user name to password or {secret: ...}"
        )
    for user, spec in users.items():
        plain_name(user, "userlist key")
        values = spec.items() if isinstance(spec, dict) else (("password", spec),)
        for key, value in values:
            if value is not None and not isinstance(value, bool):
                one_line(value, f"userlist:{user}:{key}", secret=key in ("password", "secret"))


# -- userlist.txt -----------------------------------------------------------

_USERLIST_LINE = re.compile(r'^\s*"((?:[^"]|"")*)"\s+"((?:[^"]|"")*)"\s*$')


def parse_userlist(text):
    """
    ``{user: secret}`` (in file order) from ``userlist.txt``. Blank lines and
    lines starting with ``;`` or ``#`` are comments; any other line must be
    ``"user" "secret"``. Raises :class:`ConfigError` naming the line number
    (never its content: it holds a secret).
    """
    entries = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        match = _USERLIST_LINE.match(line)
        if not match:
            raise ConfigError(f'line {number} is not of the form "user" "secret"')
        user = match.group(1).replace('""', '"')
        if user in entries:
            raise ConfigError(f"line {number}: user '{user}' appears twice")
        entries[user] = match.group(2).replace('""', '"')
    return entries


def render_userlist(entries):
    """
    ``userlist.txt`` text for ``{user: secret}``, ``"`` doubled inside a
    field.
    """

    def quote(text):
        return '"' + str(text).replace('"', '""') + '"'

    return "".join(f"{quote(user)} {quote(secret)}\n" for user, secret in entries.items())


# -- secrets ----------------------------------------------------------------

SCRAM_PREFIX = "SCRAM-SHA-256$"
_SCRAM = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")
_MD5 = re.compile(r"^md5[0-9a-f]{32}$")


def secret_kind(secret):
    """
    ``'scram-sha-256'``, ``'md5'`` or ``'plain'``.
    """
    if _SCRAM.match(secret):
        return "scram-sha-256"
    if _MD5.match(secret):
        return "md5"
    return "plain"


def auth_type_problems(auth_type, entries):
    """
    Users whose stored secret cannot authenticate under ``auth_type``.
    """
    problems = []
    for user, secret in entries.items():
        kind = secret_kind(secret)
        if auth_type == "scram-sha-256" and kind == "md5":
            problems.append(
                f"user '{user}' has an md5 secret, which cannot authenticate with auth_type scram-sha-256"
            )
        if auth_type == "plain" and kind != "plain":
            problems.append(
                f"user '{user}' has a {kind} secret, but auth_type plain needs the plain password"
            )
    return problems


def md5_secret(user, password):
    """
    pgbouncer/PostgreSQL md5 secret: ``md5`` + md5(password + user).
    """
    return "md5" + hashlib.md5((password + user).encode("utf-8")).hexdigest()


_SASLPREP_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(password):
    """
    SASLprep (RFC 4013) as PostgreSQL applies it: on any failure the raw
    bytes are used, so this returns ``password`` unchanged then.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in password if not stringprep.in_table_b1(ch)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    if not normal:
        return password
    if any(test(ch) for ch in normal for test in _SASLPREP_PROHIBITED):
        return password
    has_randalcat = any(stringprep.in_table_d1(ch) for ch in normal)
    if has_randalcat and (
        any(stringprep.in_table_d2(ch) for ch in normal)
        or not (stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1]))
    ):
        return password
    return normal


def _scram_keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


def scram_secret(password, iterations=4096, salt=None):
    """
    A SCRAM-SHA-256 verifier in PostgreSQL's format,
    ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``, with a
    random 16-byte salt unless one is given.
    """
    iterations = int(iterations)
    if iterations < 4096:
        raise ConfigError("SCRAM iterations must be at least 4096 (RFC 7677)")
    salt = _random.token_bytes(16) if salt is None else salt
    stored_key, server_key = _scram_keys(password, salt, iterations)

    def b64(raw):
        return base64.b64encode(raw).decode("ascii")

    return f"{SCRAM_PREFIX}{iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def make_secret(user, password, method="scram-sha-256", iterations=4096):
    """
    The userlist secret for ``password`` by ``method`` (scram-sha-256, md5,
    plain).
    """
    if method == "scram-sha-256":
        return scram_secret(password, iterations)
    if method == "md5":
        return md5_secret(user, password)
    if method == "plain":
        return password
    raise ConfigError(f"unknown secret method '{method}': use scram-sha-256, md5 or plain")


def verify_secret(user, password, secret):
    """
    True when ``secret`` (plain, md5 or a SCRAM verifier) belongs to
    ``password``: a SCRAM verifier is recomputed with its own salt and
    iteration count, compared in constant time.
    """
    match = _SCRAM.match(secret)
    if match:
        iterations, salt, stored_b64, server_b64 = match.groups()
        stored_key, server_key = _scram_keys(password, base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(stored_key, base64.b64decode(stored_b64)) and hmac.compare_digest(
            server_key, base64.b64decode(server_b64)
        )
    if _MD5.match(secret):
        return hmac.compare_digest(md5_secret(user, password), secret)
    return hmac.compare_digest(password.encode("utf-8"), secret.encode("utf-8"))


def method_for_auth_type(auth_type):
    """
    How a plain pillar password is stored for ``auth_type``: md5 for md5,
    the password itself for plain, SCRAM otherwise (the strongest; md5 and
    hba clients negotiate SCRAM when the stored secret is a verifier).
    """
    auth_type = (auth_type or "md5").lower()
    if auth_type == "md5":
        return "md5"
    if auth_type == "plain":
        return "plain"
    return "scram-sha-256"
