"""
pip configuration for a private package index (e.g. a Nexus "group"
repository): read pip.conf files, tell what pip will really use, probe an
index, and the reading/rendering the ``pipconf`` states build on.

Where pip looks (later wins): global ``$XDG_CONFIG_DIRS/pip/pip.conf``
(default ``/etc/xdg/pip/pip.conf``) then ``/etc/pip.conf``; user
``~/.pip/pip.conf`` (legacy) then ``$XDG_CONFIG_HOME/pip/pip.conf`` (default
``~/.config/pip/pip.conf``); site ``<venv>/pip.conf``; then
``PIP_CONFIG_FILE``, which, when it names an existing file, stops the user
files from loading at all; then ``PIP_*`` environment variables.

Scopes used by every function: ``global`` (``/etc/pip.conf``),
``user:<name>`` (``~<name>/.config/pip/pip.conf``), ``venv:<path>``
(``<path>/pip.conf``, a virtualenv under ``/opt`` or ``/srv``) or an
absolute path under a root the operator allows (``opsalt:policy``, see
docs/components/pipconf.rst, section Security).

Files in a user's tree are read and written without following anything the
user planted (``opsalt_pipconf_fs``); the user's own environment files never
make root open a path outside that user's home.

Option names come from the installed pip's own command parsers (so a key pip
does not know is refused); without an importable pip a fallback list of
pip 24-26 option names is used and any key is accepted.
"""

import base64
import grp
import logging
import os
import pwd
import re
import shlex
import stat
import urllib.parse
import warnings

try:
    import opsalt_files
    import opsalt_pipconf
    import opsalt_pipconf_fs
    import opsalt_policy
    import opsalt_validate
    import requests
    from opsalt_secrets import REDACTED, redact_text, redact_url

    HAS_LIBS = True
except ImportError as _err:  # pragma: no cover - reported by __virtual__
    HAS_LIBS = False
    _IMPORT_ERROR = str(_err)

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "pipconf"

GLOBAL_FILE = "/etc/pip.conf"
CONFIG_BASENAME = "pip.conf"
USER_CONFIG = ".config/pip/pip.conf"
USER_PYPIRC = ".pypirc"
COMPONENT = "pipconf"
# Strict defaults of the operator policy (docs: Security). Widen them with
# opsalt:policy:allowed_paths or opsalt:policy:pipconf:allowed_paths.
VENV_ROOTS = ("/opt", "/srv")
FILE_ROOTS = ("/etc/xdg/pip",)
KOLLA_ROOTS = ("/etc/kolla",)
# opsalt:policy:pipconf:index_hosts: the index decides what code root
# installs, so an asset editor may not choose it. Only loopback unless the
# operator lists hosts ("host" or "host:port").
DEFAULT_INDEX_HOSTS = ("127.0.0.1", "::1", "localhost")


def __virtual__():
    if not HAS_LIBS:
        return (
            False,
            f"pipconf needs the opsalt helpers and requests ({_IMPORT_ERROR}); "
            "pip install opsalt, or sync _utils with saltutil.sync_all",
        )
    return __virtualname__


# -- scopes -------------------------------------------------------------------


def _user_entry(user):
    try:
        return pwd.getpwnam(opsalt_validate.name(str(user), "pip scope user"))
    except opsalt_validate.ValidationError as err:
        raise SaltInvocationError(str(err)) from err
    except KeyError as err:
        raise CommandExecutionError(f"user {user!r} does not exist on this host") from err


def _policy():
    return opsalt_policy.read(__salt__)


def _allowed_path(path, what, defaults, policy):
    try:
        opsalt_validate.abs_path(path, what)
        return opsalt_policy.check_path(path, what, COMPONENT, defaults, policy)
    except opsalt_validate.ValidationError as err:
        raise SaltInvocationError(str(err)) from err
    except opsalt_policy.PolicyError as err:
        raise CommandExecutionError(str(err)) from err


def _system_target(path, owner_uids=(0,)):
    # Walked from / down: every directory on the way must belong to root
    # (or, for a venv, to its owner), so no link there is followed.
    return {
        "path": path,
        "root": "/",
        "relpath": path[1:],
        "uids": set(owner_uids),
        "file_uids": None,
        "user": None,
        "group": None,
    }


def _user_target(entry, relpath):
    return {
        "path": os.path.join(entry.pw_dir, relpath),
        "root": entry.pw_dir,
        "relpath": relpath,
        "uids": {0, entry.pw_uid},
        "file_uids": {0, entry.pw_uid},
        "user": entry.pw_name,
        "group": _group_name(entry.pw_gid),
    }


def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _venv_target(path, policy):
    _allowed_path(path, "pip scope venv", VENV_ROOTS, policy)
    try:
        st = os.stat(os.path.join(path, "pyvenv.cfg"), follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise CommandExecutionError(f"{path} is not a virtualenv (no pyvenv.cfg); create it first")
    return _system_target(os.path.join(path, CONFIG_BASENAME), owner_uids={0, st.st_uid})


def _target(name, policy=None):
    name = str(name)
    policy = _policy() if policy is None else policy
    if name == "global":
        return _system_target(GLOBAL_FILE)
    if name.startswith("user:"):
        return _user_target(_user_entry(name[5:]), USER_CONFIG)
    if name.startswith("venv:"):
        return _venv_target(name[5:], policy)
    if name.startswith("/"):
        return _system_target(_allowed_path(name, "pip scope", FILE_ROOTS, policy))
    raise SaltInvocationError(
        f"pip scope {name[:60]!r} is not global, user:<name>, venv:<path> or an absolute path"
    )


def resolve(name):
    """
    Where a scope's pip.conf lives and who should own it, after the scope
    is checked against the operator policy (``opsalt:policy``).

    name
        ``global``, ``user:<name>``, ``venv:<path>`` (under ``/opt``,
        ``/srv`` or an allowed path) or an absolute path under an allowed
        path.

    Returns ``{"path": ..., "user": ..., "group": ...}`` (user/group ``None``
    when the file keeps its current owner).

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.resolve user:builder
    """
    target = _target(name)
    return {"path": target["path"], "user": target["user"], "group": target["group"]}


def state_id(kind, scope):
    """
    A state ID part for ``scope`` that holds no pillar text beyond letters,
    digits and ``_ . @ -`` (anything else becomes ``_``, plus a short hash
    when something was replaced), for the SLS.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.state_id config user:builder
    """
    import hashlib

    text = str(scope)
    slug = re.sub(r"[^A-Za-z0-9_.@-]", "_", text)[:64]
    if slug != text:
        slug += "-" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8]
    return f"pipconf-{re.sub(r'[^a-z]', '', str(kind))[:16]}-{slug}"


def _read_target(target):
    try:
        return opsalt_pipconf_fs.read(target["root"], target["relpath"], target["uids"], target["file_uids"])
    except opsalt_pipconf_fs.UnsafePathError as err:
        raise CommandExecutionError(str(err)) from err
    except OSError as err:
        raise CommandExecutionError(f"cannot read {target['path']}: {err.strerror}") from err


def _scope_name(scope, user, venv, path):
    if path:
        return path
    if scope == "user":
        if not user:
            raise SaltInvocationError("scope user needs user=<name>")
        return f"user:{user}"
    if scope in ("site", "venv"):
        if not venv:
            raise SaltInvocationError("scope site needs venv=<path>")
        return f"venv:{venv}"
    return scope


def _read_document(target):
    text, _owner = _read_target(target)
    if text is None:
        return None, None
    try:
        return text, opsalt_pipconf.Document(text)
    except opsalt_pipconf.PipIniError as err:
        raise CommandExecutionError(f"{target['path']}: {err}") from err


def _redact_values(options):
    return {
        section: {
            key: [redact_url(v) for v in value] if isinstance(value, list) else redact_url(value)
            for key, value in keys.items()
        }
        for section, keys in options.items()
    }


def get(scope="global", user=None, venv=None, path=None, unmask=False):
    """
    The parsed contents of one pip.conf: ``{section: {key: value}}``, lists
    for multi-value keys, ``None`` when the file does not exist. URL
    credentials are shown as ``***`` unless ``unmask=True``.

    scope
        ``global``, ``user`` (with ``user``), ``site`` (with ``venv``), or a
        full scope name (``user:builder``, ``venv:/opt/venv``).
    path
        Read this file instead.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.get
        salt '*' pipconf.get user user=builder
        salt '*' pipconf.get path=/etc/xdg/pip/pip.conf
    """
    target = _target(_scope_name(scope, user, venv, path))
    _text, document = _read_document(target)
    if document is None:
        return None
    problems = document.problems()
    if problems:
        raise CommandExecutionError(f"{target['path']}: pip refuses this file: {'; '.join(problems)}")
    options = document.as_dict()
    return options if unmask else _redact_values(options)


# -- effective configuration ----------------------------------------------------


_PAM_LINE = re.compile(r"^(\w+)\s+((?:DEFAULT|OVERRIDE)=.*)$")


def _parse_environment(text):
    values = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[7:].strip()
        if not line or line.startswith("#"):
            continue
        pam = _PAM_LINE.match(line)
        if pam:
            parts = dict(re.findall(r"(DEFAULT|OVERRIDE)=(\"[^\"]*\"|\S*)", pam.group(2)))
            value = parts.get("OVERRIDE") or parts.get("DEFAULT")
            if value is not None and "${" not in value and "@{" not in value:
                values[pam.group(1)] = value.strip('"')
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip("'\"")
    return values


def _read_environment_file(path):
    """
    ``KEY=value`` lines (``/etc/environment``, shell style) and pam_env's
    ``KEY DEFAULT=value OVERRIDE=value`` lines of a root-owned file.
    """
    if not os.path.isabs(path):
        return {}
    return _parse_environment(_read_target(_system_target(path))[0])


def _login_environment(entry, environ, home=None):
    """
    The ``PIP_*``/``XDG_*`` variables a user's login sessions get, where they
    can be read without running the user's shell: ``/etc/environment``,
    ``~/.pam_environment`` (read without following the user's links), and
    this process's environment when it runs as that user (not when ``home``
    points elsewhere). ``environ`` overrides all of them.

    Returns ``(env, user_set)``: ``user_set`` names the variables whose
    value the user controls (their paths are read only inside the home).
    """
    env = _read_environment_file("/etc/environment")
    user_env = _parse_environment(_read_target(_user_target(_with_home(entry, home), ".pam_environment"))[0])
    if home is None and os.geteuid() == entry.pw_uid:
        user_env.update(os.environ)
    env.update(user_env)
    env.update(environ or {})
    user_set = {k for k in user_env if k not in (environ or {})}
    env = {k: v for k, v in env.items() if k.startswith(("PIP_", "XDG_"))}
    return env, user_set & set(env)


def _with_home(entry, home):
    if not home:
        return entry
    return pwd.struct_passwd(
        (entry.pw_name, "x", entry.pw_uid, entry.pw_gid, entry.pw_gecos, home, entry.pw_shell)
    )


def config_files(user=None, venv=None, environ=None, home=None):
    """
    The files pip would read for ``user`` (default: the user Salt runs as),
    in pip's load order, each ``{"path", "kind", "exists", "loaded"}``, and
    the ``PIP_*``/``XDG_*`` environment assumed:
    ``{"files": [...], "environment": {...}}``. ``home`` replaces the user's
    home directory (an image build root, a chroot). A path that the user's
    own environment names outside the home is listed but never opened.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.config_files user=builder venv=/opt/kolla-venv
    """
    files, env, _warnings = _config_files(user, venv, environ, home)
    return {
        "files": [_public(item) for item in files],
        "environment": {k: redact_url(v) for k, v in env.items()},
    }


def _public(item):
    return {key: item[key] for key in ("path", "kind", "exists", "loaded")}


def _file_item(path, kind, entry, user_controlled):
    """A file pip may read, with the way root may read it."""
    home = entry.pw_dir.rstrip("/") + "/"
    item = {"path": path, "kind": kind, "target": None}
    if not os.path.isabs(path) or os.path.normpath(path) != path:
        return item
    if path.startswith(home):
        item["target"] = _user_target(entry, path[len(home) :])
    elif not user_controlled:
        item["target"] = _system_target(path)
    return item


def _exists(item, warnings_):
    if item["target"] is None:
        warnings_.append(f"{item['path']} is not read: the user's own environment names it outside the home")
        return False
    try:
        return _read_target(item["target"])[0] is not None
    except CommandExecutionError as err:
        warnings_.append(str(err))
        return False


def _config_files(user, venv, environ, home):
    entry = _user_entry(user) if user else pwd.getpwuid(os.geteuid())
    env, user_set = _login_environment(entry, environ, home)
    entry = _with_home(entry, home)
    home = entry.pw_dir
    xdg_dirs = [d for d in env.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":") if d] or ["/etc/xdg"]
    xdg_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    env_file = env.get("PIP_CONFIG_FILE")
    items = [
        _file_item(os.path.join(d, "pip", CONFIG_BASENAME), "global", entry, "XDG_CONFIG_DIRS" in user_set)
        for d in xdg_dirs
    ]
    items.append(_file_item(GLOBAL_FILE, "global", entry, False))
    items.append(_file_item(os.path.join(home, ".pip", CONFIG_BASENAME), "user (legacy)", entry, True))
    items.append(
        _file_item(
            os.path.join(xdg_home, "pip", CONFIG_BASENAME), "user", entry, "XDG_CONFIG_HOME" in user_set
        )
    )
    if venv:
        items.append(
            {
                "path": os.path.join(venv, CONFIG_BASENAME),
                "kind": "site",
                "target": _venv_target(venv, _policy()),
            }
        )
    if env_file:
        items.append(_file_item(env_file, "PIP_CONFIG_FILE", entry, "PIP_CONFIG_FILE" in user_set))
    warnings_ = []
    for item in items:
        item["exists"] = _exists(item, warnings_)
    user_files_loaded = not (env_file and items[-1]["exists"])
    for item in items:
        item["loaded"] = item["exists"] and (user_files_loaded or not item["kind"].startswith("user"))
    return items, env, warnings_


def effective(user=None, venv=None, command="install", environ=None, unmask=False, home=None):
    """
    What pip will use for ``user`` (and the virtualenv ``venv``) when it runs
    ``command``: each key's value and where it came from, later sources
    shadowing earlier ones (``[global]`` then ``[<command>]`` in each file,
    files in pip's order, then ``PIP_*`` variables of the user's login
    environment where they can be read).

    Returns ``{"options": {key: {"value", "source", "shadowed": [...]}},
    "files": [...], "warnings": [...]}``.

    environ
        Extra environment variables to assume (a mapping), e.g. from the
        user's shell profile.
    home
        Use this directory as the user's home.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.effective user=builder
        salt '*' pipconf.effective user=builder venv=/opt/kolla-venv command=download
    """
    files, env, warnings = _config_files(user, venv, environ, home)
    options = {}

    def put(key, value, source):
        previous = options.get(key)
        shadowed = []
        if previous is not None:
            shadowed = previous["shadowed"] + [previous["source"]]
        options[key] = {"value": value, "source": source, "shadowed": shadowed}

    for item in files:
        if item["exists"] and not item["loaded"]:
            warnings.append(f"{item['path']} is not read: PIP_CONFIG_FILE names an existing file")
        if not item["loaded"]:
            continue
        _text, document = _read_document(item["target"])
        problems = document.problems()
        if problems:
            warnings.append(f"{item['path']}: pip refuses this file: {'; '.join(problems)}")
            continue
        parsed = document.as_dict()
        for section in ("global", command):
            for key, value in parsed.get(section, {}).items():
                put(key, value, f"{item['path']} [{section}]")
    for name, value in sorted(env.items()):
        if name.startswith("PIP_") and name not in ("PIP_CONFIG_FILE", "PIP_VERSION", "PIP_HELP"):
            key = opsalt_pipconf.normalize_key(name[4:])
            put(key, value.split() if opsalt_pipconf.is_multi(key) else value, f"environment {name}")
    legacy = [f for f in files if f["kind"] == "user (legacy)" and f["loaded"]]
    if legacy:
        warnings.append(
            f"legacy {legacy[0]['path']} is read too; keys there apply unless the newer user file sets them"
        )
    if not unmask:
        for entry in options.values():
            value = entry["value"]
            entry["value"] = [redact_url(v) for v in value] if isinstance(value, list) else redact_url(value)
    return {"options": options, "files": [_public(item) for item in files], "warnings": warnings}


# -- probing an index -----------------------------------------------------------


def _config_value(options, key):
    entry = options.get(key)
    return None if entry is None else entry["value"]


def _host_trusted(parts, trusted):
    host = parts.hostname or ""
    candidates = {host, f"{host}:{parts.port}" if parts.port else host, f"[{host}]"}
    if parts.port:
        candidates.add(f"[{host}]:{parts.port}")
    return any(t in candidates for t in trusted or [])


def _credentials_for(parts, options):
    """
    ``(user, password)`` for ``parts``: its own userinfo, else, as pip does,
    that of a configured index URL on the same host and port.
    """
    candidates = [parts]
    for key in ("index-url", "extra-index-url"):
        value = _config_value(options, key) or []
        for item in value if isinstance(value, list) else [value]:
            try:
                candidates.append(urllib.parse.urlsplit(item))
            except ValueError:
                continue
    for candidate in candidates:
        if candidate.username and (candidate.hostname, candidate.port) == (parts.hostname, parts.port):
            return (urllib.parse.unquote(candidate.username), urllib.parse.unquote(candidate.password or ""))
    return None


def check_index(url=None, project="pip", user=None, venv=None, timeout=10, environ=None, home=None):
    """
    Probe a PEP 503 simple index at ``<url>/<project>/`` with the credentials
    and ``trusted-host``/``cert`` of the pip config in force for ``user``
    (``url`` defaults to that config's ``index-url``; a ``url`` without
    credentials borrows those of a configured index on the same host and
    port, as pip does).

    Returns ``{"url", "status", "http_status", "message"}`` with ``status``
    one of ``reachable``, ``needs_auth``, ``tls_failure``, ``not_an_index``,
    ``not_found`` or ``unreachable``. URLs are shown without credentials.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.check_index
        salt '*' pipconf.check_index http://nexus.example.com:8081/repository/pypi-group/simple project=neutron-lib
    """
    options = effective(user=user, venv=venv, environ=environ, home=home, unmask=True)["options"]
    url = url or _config_value(options, "index-url")
    if not url:
        raise CommandExecutionError("no index URL given and no index-url in the pip config in force")
    try:
        opsalt_pipconf.check_http_url(url, "index URL")
    except opsalt_pipconf.PipIniError as err:
        raise CommandExecutionError(str(err)) from err
    parts = urllib.parse.urlsplit(url)
    auth = _credentials_for(parts, options)
    secrets = opsalt_pipconf.url_secrets([url]) + ([auth[1]] if auth and auth[1] else [])
    netloc = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    bare = urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/")
    target = f"{bare}/{project}/"
    verify = _config_value(options, "cert") or True
    trusted = _host_trusted(parts, _config_value(options, "trusted-host"))
    if trusted:
        verify = False
    result = {
        "url": redact_url(f"{url.rstrip('/')}/{project}/"),
        "status": None,
        "http_status": None,
        "message": "",
    }
    session = requests.Session()
    session.trust_env = False
    try:
        response = session.get(
            target,
            auth=auth,
            verify=verify,
            timeout=timeout,
            allow_redirects=True,
            headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"},
        )
    except requests.exceptions.SSLError as err:
        message = redact_text(str(err), secrets)[:300]
        result.update(
            status="tls_failure",
            message=f"TLS verification failed ({message}); set cert, or trusted-host while on plain HTTP",
        )
        return result
    except requests.exceptions.RequestException as err:
        message = redact_text(str(err), secrets)[:300]
        result.update(status="unreachable", message=f"{type(err).__name__}: {message}")
        return result
    finally:
        session.close()
    result["http_status"] = response.status_code
    content_type = response.headers.get("Content-Type", "")
    if response.status_code in (401, 403):
        result.update(
            status="needs_auth",
            message="the index wants credentials; put user:password in the index URL (mode 0600 file)"
            if auth is None
            else "the index refused these credentials",
        )
    elif response.status_code == 404:
        result.update(status="not_found", message=f"no project {project!r} here (or this is not an index)")
    elif response.status_code == 200 and (
        "application/vnd.pypi.simple" in content_type or "<a " in response.text.lower()
    ):
        message = "PEP 503 index answers"
        if parts.scheme == "http" and not trusted:
            message += "; plain HTTP without trusted-host: pip ignores it unless the host is loopback"
        result.update(status="reachable", message=message)
    else:
        result.update(
            status="not_an_index",
            message=f"HTTP {response.status_code} {content_type or 'no content type'}: not a PEP 503 project page",
        )
    return result


# -- policy and secrets of what is written ----------------------------------------


def _index_hosts(policy):
    hosts = opsalt_policy.limit(COMPONENT, "index_hosts", None, policy)
    return list(DEFAULT_INDEX_HOSTS) if hosts is None else [str(h).lower() for h in hosts]


def _check_index_url(url, what, policy):
    """Refuse an index URL whose host the operator does not allow."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    allowed = _index_hosts(policy)
    names = {host, f"[{host}]"}
    if parts.port:
        names |= {f"{host}:{parts.port}", f"[{host}]:{parts.port}"}
    if not names & set(allowed):
        raise CommandExecutionError(
            f"{what}: index host {host!r} is not allowed by policy (allowed: {', '.join(allowed) or 'none'}); "
            f"an operator can list it in opsalt:policy:{COMPONENT}:index_hosts in the minion configuration"
        )


_INDEX_KEYS = ("index-url", "extra-index-url", "find-links")


def _check_settings_hosts(settings, policy, what="pip settings"):
    for section, options in settings.items():
        for key in _INDEX_KEYS:
            value = options.get(key)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item.startswith(("http://", "https://")):
                    _check_index_url(item, f"{what} [{section}] {key}", policy)


def _validated_settings(settings, where, policy):
    try:
        clean = opsalt_pipconf.validate_settings(settings)
    except opsalt_pipconf.PipIniError as err:
        raise CommandExecutionError(f"invalid pip settings for {where}: {err}") from err
    _check_settings_hosts(clean, policy)
    return clean


_SECRET_LINE = re.compile(r"^(\s*[^=:\s]*pass[^=:\s]*\s*[=:]\s*)\S.*$", re.IGNORECASE | re.MULTILINE)


def _masked(text, secrets):
    """``text`` as it may be shown: password lines and URL credentials as ``***``."""
    if text is None:
        return None
    return _SECRET_LINE.sub(lambda m: m.group(1) + REDACTED, redact_text(text, secrets))


def _text_secrets(text):
    """Credentials in a pip.conf or .pypirc text (the old side of a diff)."""
    found = [m.group(0)[len(m.group(1)) :].strip() for m in _SECRET_LINE.finditer(text or "")]
    found += opsalt_pipconf.url_secrets(re.findall(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", text or ""))
    return [s for s in found if s and s != REDACTED]


def diff(current, desired, path, secrets=()):
    """
    A unified diff of two file texts with ``secrets``, password lines and
    URL credentials shown as ``***`` on both sides.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.diff "$(cat old)" "$(cat new)" /etc/pip.conf
    """
    secrets = list(secrets) + _text_secrets(current) + _text_secrets(desired)
    old, new = _masked(current, secrets), _masked(desired, secrets)
    if old == new and current != desired:
        return f"{path}: only secret values change (not shown)"
    return redact_text(opsalt_files.unified_diff(old, new, path), secrets)


# -- plan and apply: what the states build on ----------------------------------------


def _owner_ids(user, group, target, current_owner):
    """uid/gid for the new file: asked for, else the scope's user, else the file's, else root."""
    user = user or target["user"]
    group = group or target["group"]
    try:
        uid = pwd.getpwnam(opsalt_validate.owner(user)).pw_uid if user else None
        gid = grp.getgrnam(opsalt_validate.group(group)).gr_gid if group else None
    except opsalt_validate.ValidationError as err:
        raise SaltInvocationError(str(err)) from err
    if uid is None:
        uid = current_owner[0] if current_owner else 0
    if gid is None:
        gid = current_owner[1] if current_owner else 0
    return uid, gid


def _file_mode(mode, has_credentials, what):
    try:
        value = opsalt_validate.mode(mode, "mode")
    except opsalt_validate.ValidationError as err:
        raise SaltInvocationError(str(err)) from err
    if value is None:
        return 0o600 if has_credentials else 0o644
    return value


def _name_of(ids, lookup, attr):
    try:
        return getattr(lookup(ids), attr)
    except KeyError:
        return str(ids)


def _file_plan(target, current, desired, secrets, mode, owner, what):
    """
    What writing ``desired`` to ``target`` changes: ``{"path", "changes",
    "comment", "write"}``; ``write`` (the raw text, mode and owner) never
    leaves this module.
    """
    text, current_owner = current
    path = target["path"]
    changes = {}
    if text != desired:
        changes["diff"] = diff(text, desired, path, secrets)
    if current_owner is not None:
        old_uid, old_gid, old_mode = current_owner
        if old_mode != mode:
            changes["mode"] = {"old": f"{old_mode:04o}", "new": f"{mode:04o}"}
        if old_uid != owner[0]:
            changes["user"] = {
                "old": _name_of(old_uid, pwd.getpwuid, "pw_name"),
                "new": _name_of(owner[0], pwd.getpwuid, "pw_name"),
            }
        if old_gid != owner[1]:
            changes["group"] = {
                "old": _name_of(old_gid, grp.getgrgid, "gr_name"),
                "new": _name_of(owner[1], grp.getgrgid, "gr_name"),
            }
    verb = "created" if text is None else "updated"
    comment = f"{what} {path} " + (f"would be {verb}" if changes else "is already as wanted")
    write = {"target": target, "text": desired, "mode": mode, "uid": owner[0], "gid": owner[1], "verb": verb}
    return {"path": path, "changes": changes, "comment": comment, "write": write}


def _public_plan(plan):
    return {key: plan[key] for key in ("path", "changes", "comment")}


def _write_plan(plan, what):
    write = plan["write"]
    target = write["target"]
    keep = opsalt_files.backup_keep(__salt__)
    try:
        backup = opsalt_pipconf_fs.write(
            target["root"],
            target["relpath"],
            write["text"],
            write["mode"],
            write["uid"],
            write["gid"],
            target["uids"],
            file_uids=target["file_uids"],
            keep_backups=keep,
        )
    except opsalt_pipconf_fs.UnsafePathError as err:
        raise CommandExecutionError(str(err)) from err
    except OSError as err:
        raise CommandExecutionError(f"cannot write {target['path']}: {err.strerror}") from err
    log.info(
        "pipconf: wrote %s (mode %04o)%s",
        target["path"],
        write["mode"],
        f", backup {backup}" if backup else "",
    )
    comment = (
        f"{what} {target['path']} {write['verb']}"
        + (f"; previous version kept as {backup}" if backup else "")
        + plan.get("note", "")
    )
    return {"path": target["path"], "changes": plan["changes"], "comment": comment}


def _pillar_entry(section, name):
    """``pipconf:<section>:<name>`` of this minion's pillar, read at run time (never SLS text)."""
    entry = ((__pillar__.get(COMPONENT) or {}).get(section) or {}).get(str(name))
    if not isinstance(entry, dict):
        raise CommandExecutionError(
            f"no pipconf:{section} entry for {str(name)[:60]!r} in this minion's pillar"
        )
    return entry


def _config_args(name, settings, exclusive, mode, user, group, pillar):
    if not pillar:
        return settings, exclusive, mode, user, group
    entry = _pillar_entry("configs", name)
    return (
        entry.get("settings"),
        bool(entry.get("exclusive", False)),
        entry.get("mode"),
        entry.get("user"),
        entry.get("group"),
    )


def _removals(settings):
    return {section: dict.fromkeys(options or {}) for section, options in (settings or {}).items()}


def _plan_config(name, settings, exclusive, mode, user, group, pillar, remove=False):
    settings, exclusive, mode, user, group = _config_args(
        name, settings, exclusive, mode, user, group, pillar
    )
    policy = _policy()
    target = _target(name, policy)
    if remove:
        settings, exclusive = _removals(settings), False
    clean = _validated_settings(settings, target["path"], policy)
    current = _read_target(target)
    try:
        desired = opsalt_pipconf.apply_settings(current[0] or "", clean, exclusive=exclusive)
    except opsalt_pipconf.PipIniError as err:
        raise CommandExecutionError(f"{target['path']}: {err}") from err
    if current[0] is None and not desired.strip():
        desired = None  # only removals asked and no file: nothing to create
    # Credentials already in the file count too: the mode must protect them.
    secrets = sorted(set(opsalt_pipconf.settings_secrets(clean) + _text_secrets(desired)))
    file_mode = _file_mode(mode, bool(secrets), "pip config")
    owner = _owner_ids(user, group, target, current[1])
    plan = _file_plan(target, current, desired, secrets, file_mode, owner, "pip config")
    words = opsalt_pipconf.boolean_words(settings, clean)
    if words:
        # `progress-bar: off` reaches Salt as False: say which word was written.
        plan["note"] = "; YAML booleans written as pip's words: " + ", ".join(words)
        plan["comment"] += plan["note"]
    return plan


def plan_config(
    name, settings=None, exclusive=False, mode=None, user=None, group=None, pillar=False, remove=False
):
    """
    What ``pipconf.managed`` would change in a scope's pip.conf; nothing is
    written. Returns ``{"path", "changes", "comment"}`` (diffs masked).

    name
        The scope (see :func:`resolve`).
    settings / exclusive / mode / user / group
        As for the ``pipconf.managed`` state.
    pillar
        ``True``: take all of them from ``pipconf:configs:<name>`` of this
        minion's pillar at run time (so credentials never pass through SLS
        text).
    remove
        Plan the removal of the options in ``settings`` instead.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.plan_config user:builder '{"global": {"timeout": 60}}'
        salt '*' pipconf.plan_config user:builder pillar=True
    """
    return _public_plan(_plan_config(name, settings, exclusive, mode, user, group, pillar, remove))


def apply_config(
    name, settings=None, exclusive=False, mode=None, user=None, group=None, pillar=False, remove=False
):
    """
    Write what :func:`plan_config` plans (atomically, with a backup of the
    replaced file, without following links in a user's tree). Returns
    ``{"path", "changes", "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.apply_config user:builder pillar=True
    """
    plan = _plan_config(name, settings, exclusive, mode, user, group, pillar, remove)
    if not plan["changes"]:
        return _public_plan(plan)
    if plan["write"]["text"] is None:
        return {
            "path": plan["path"],
            "changes": {},
            "comment": f"pip config {plan['path']}: nothing to write",
        }
    return _write_plan(plan, "pip config")


def render(settings):
    """
    The pip.conf text for ``settings`` alone (validated as for
    ``pipconf.managed``, index hosts included), e.g. to bake into an image.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.render '{"global": {"index-url": "http://127.0.0.1:8081/repository/pypi-group/simple", "trusted-host": "127.0.0.1:8081"}}'
    """
    clean = _validated_settings(settings, "the rendered pip.conf", _policy())
    return opsalt_pipconf.apply_settings("", clean, exclusive=True)


# -- .pypirc ----------------------------------------------------------------------


def _pypirc_target(name, policy):
    name = str(name)
    if name.startswith("user:"):
        return _user_target(_user_entry(name[5:]), USER_PYPIRC)
    if name.startswith("/"):
        return _system_target(_allowed_path(name, "pypirc scope", (), policy))
    raise SaltInvocationError(f"{name[:60]!r}: use user:<name> or an absolute path for a .pypirc")


def _plan_pypirc(name, repositories, mode, user, group, pillar):
    if pillar:
        entry = _pillar_entry("pypirc", name)
        repositories, mode, user, group = (
            entry.get("repositories"),
            entry.get("mode", "0600"),  # the pillar may leave it out
            entry.get("user"),
            entry.get("group"),
        )
    policy = _policy()
    target = _pypirc_target(name, policy)
    try:
        clean = opsalt_pipconf.validate_pypirc(repositories)
    except opsalt_pipconf.PipIniError as err:
        raise CommandExecutionError(f"invalid .pypirc settings for {target['path']}: {err}") from err
    for repo, options in clean.items():
        _check_index_url(options["repository"], f"repository {repo}", policy)
    current = _read_target(target)
    secrets = opsalt_pipconf.pypirc_secrets(clean)
    if mode is None:
        raise SaltInvocationError("mode: a .pypirc holds passwords; give a mode such as '0600'")
    file_mode = _file_mode(mode, True, ".pypirc")
    owner = _owner_ids(user, group, target, current[1])
    return _file_plan(
        target, current, opsalt_pipconf.render_pypirc(clean), secrets, file_mode, owner, ".pypirc"
    )


def plan_pypirc(name, repositories=None, mode="0600", user=None, group=None, pillar=False):
    """
    What ``pipconf.pypirc`` would change (``name``: ``user:<name>`` or an
    absolute path under an allowed path); nothing is written. Passwords are
    never shown, neither the old nor the new one.

    pillar
        ``True``: read ``repositories``, ``mode``, ``user`` and ``group``
        from ``pipconf:pypirc:<name>`` of this minion's pillar at run time.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.plan_pypirc user:builder pillar=True
    """
    return _public_plan(_plan_pypirc(name, repositories, mode, user, group, pillar))


def apply_pypirc(name, repositories=None, mode="0600", user=None, group=None, pillar=False):
    """
    Write what :func:`plan_pypirc` plans. Returns ``{"path", "changes",
    "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.apply_pypirc user:builder pillar=True
    """
    plan = _plan_pypirc(name, repositories, mode, user, group, pillar)
    return _write_plan(plan, ".pypirc") if plan["changes"] else _public_plan(plan)


# -- removing a managed file ---------------------------------------------------------


def _absent_target(name, kind, policy):
    if kind == "pypirc":
        return _pypirc_target(name, policy)
    if kind == "kolla":
        return _system_target(_allowed_path(str(name), "kolla file", KOLLA_ROOTS, policy))
    return _target(name, policy)


def plan_absent(name, kind="config"):
    """
    Whether removing the ``kind`` file (``config``: a scope's pip.conf,
    ``pypirc``, ``kolla``: a kolla file path) changes anything.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.plan_absent user:builder pypirc
    """
    target = _absent_target(name, kind, _policy())
    exists = _read_target(target)[0] is not None
    changes = {"removed": target["path"]} if exists else {}
    comment = f"{target['path']} " + ("would be removed" if exists else "is already absent")
    return {"path": target["path"], "changes": changes, "comment": comment}


def apply_absent(name, kind="config"):
    """
    Remove the file :func:`plan_absent` names (no link followed).

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.apply_absent user:builder pypirc
    """
    target = _absent_target(name, kind, _policy())
    try:
        removed = opsalt_pipconf_fs.remove(
            target["root"], target["relpath"], target["uids"], target["file_uids"]
        )
    except opsalt_pipconf_fs.UnsafePathError as err:
        raise CommandExecutionError(str(err)) from err
    except OSError as err:
        raise CommandExecutionError(f"cannot remove {target['path']}: {err.strerror}") from err
    changes = {"removed": target["path"]} if removed else {}
    return {
        "path": target["path"],
        "changes": changes,
        "comment": f"{target['path']} " + ("removed" if removed else "is already absent"),
    }


# -- kolla ------------------------------------------------------------------------

KOLLA_SOURCE_TYPES = ("git", "url", "local")
KOLLA_SOURCE_KEYS = ("type", "location", "reference", "enabled")
# The same as salt/pipconf/defaults.yaml (tests hold the two together).
KOLLA_DEFAULTS = {
    "enabled": False,
    "config_dir": "/etc/kolla",
    "template_override": "/etc/kolla/base_header.j2",
    "build_conf": "/etc/kolla/kolla-build.conf",
    "pip": {},
    "image_pip_conf": "/etc/pip.conf",
    "options": {"install_type": "source"},
    "sources": {},
}
_KOLLA_OPTION = re.compile(opsalt_pipconf.KOLLA_OPTION_PATTERN)


def _kolla_value(value, where):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_kolla_value(v, where) for v in value)
    text = str(value)
    try:
        opsalt_validate.line(text, f"kolla-build.conf {where}", secret=True)
    except opsalt_validate.ValidationError as err:
        raise CommandExecutionError(str(err)) from err
    if not text.strip():
        raise CommandExecutionError(f"kolla-build.conf {where}: empty value")
    return text


def _kolla_option_name(key, where):
    text = str(key)
    if not _KOLLA_OPTION.fullmatch(text):
        raise CommandExecutionError(
            f"kolla-build.conf {where}: option {text[:60]!r} is not an option name "
            f"(pattern {opsalt_pipconf.KOLLA_OPTION_PATTERN})"
        )
    return text


def _kolla_source(name, source):
    if not opsalt_pipconf.NAME_PATTERN.fullmatch(str(name)) or name == "DEFAULT":
        raise CommandExecutionError(
            f"kolla source {str(name)[:60]!r}: not a kolla image name (pattern {opsalt_pipconf.IDENT_PATTERN})"
        )
    if not isinstance(source, dict):
        raise CommandExecutionError(f"kolla source {name}: must be a mapping with type, location, reference")
    unknown = sorted(str(k)[:40] for k in source if k not in KOLLA_SOURCE_KEYS)
    if unknown:
        raise CommandExecutionError(
            f"kolla source {name}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(KOLLA_SOURCE_KEYS)}"
        )
    kind = source.get("type")
    if kind not in KOLLA_SOURCE_TYPES:
        raise CommandExecutionError(
            f"kolla source {name}: type must be one of {', '.join(KOLLA_SOURCE_TYPES)}"
        )
    if not source.get("location"):
        raise CommandExecutionError(f"kolla source {name}: location is required")
    if kind == "git" and not source.get("reference"):
        raise CommandExecutionError(
            f"kolla source {name}: a git source needs reference (branch, tag or commit)"
        )
    return source


def render_kolla_conf(sources=None, options=None, template_override=None):
    """
    The ``kolla-build.conf`` text: ``[DEFAULT]`` from ``options`` (plus
    ``template_override``), and one section per source override, e.g.
    ``{"neutron-base": {"type": "git", "location": "https://git/ops/neutron.git",
    "reference": "stable/rocky-ops"}}``, so ``kolla-build -t source`` builds
    from the team's fork. Image and option names must match their patterns
    and no value may hold a line break or control character.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.render_kolla_conf '{"neutron-base": {"type": "git", "location": "https://git.example.com/ops/neutron.git", "reference": "stable/rocky-ops"}}' template_override=/etc/kolla/base_header.j2
    """
    sections = {"DEFAULT": dict(options or {})}
    if template_override:
        sections["DEFAULT"]["template_override"] = _plain_path(template_override, "kolla template_override")
    for name, source in (sources or {}).items():
        sections[name] = _kolla_source(name, source)
    lines = []
    for name, options_ in sections.items():
        if not options_:
            continue
        lines.append(f"[{name}]\n")
        for key, value in options_.items():
            key = _kolla_option_name(key, f"[{name}]")
            lines.append(f"{key} = {_kolla_value(value, f'[{name}] {key}')}\n")
        lines.append("\n")
    return "".join(lines).rstrip("\n") + "\n"


def _plain_path(path, what):
    try:
        return opsalt_validate.plain_path(path, what)
    except opsalt_validate.ValidationError as err:
        raise CommandExecutionError(str(err)) from err


def render_kolla_header(settings, path="/etc/pip.conf"):
    """
    A kolla-build template override whose ``base_header`` block writes the
    pip.conf for ``settings`` into the base image, so every image built from
    source installs from the team's index. Pass it with
    ``kolla-build --template-override`` (or ``template_override`` in
    kolla-build.conf). ``path`` must be a plain path (letters, digits,
    ``_ . / @ + -``): the line is both a Jinja template and a shell command.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.render_kolla_header '{"global": {"index-url": "http://127.0.0.1:8081/repository/pypi-group/simple", "trusted-host": "127.0.0.1:8081"}}'
    """
    path = _plain_path(path, "kolla image_pip_conf")
    encoded = base64.b64encode(render(settings).encode("utf-8")).decode("ascii")
    # base64 keeps the file byte-exact through Dockerfile quoting; the
    # paths are plain and quoted as well.
    directory = shlex.quote(os.path.dirname(path) or "/")
    return (
        "{% extends parent_template %}\n"
        "\n"
        "{% block base_header %}\n"
        "{{ super() }}\n"
        f"RUN mkdir -p {directory} && echo {encoded} | base64 -d > {shlex.quote(path)}\n"
        "{% endblock %}\n"
    )


def _kolla_settings(kolla, pillar):
    if pillar:
        kolla = __pillar__.get(COMPONENT, {}).get("kolla") or {}
    if not isinstance(kolla, dict):
        raise CommandExecutionError("pipconf:kolla must be a mapping")
    merged = dict(KOLLA_DEFAULTS)
    merged.update(kolla)
    return merged


def _plan_kolla(kolla, pillar):
    kolla = _kolla_settings(kolla, pillar)
    policy = _policy()
    header_path = _plain_path(kolla["template_override"], "kolla template_override")
    conf_path = _allowed_path(kolla["build_conf"], "kolla build_conf", KOLLA_ROOTS, policy)
    _allowed_path(header_path, "kolla template_override", KOLLA_ROOTS, policy)
    header = (
        render_kolla_header(kolla["pip"] or {"global": {}}, kolla["image_pip_conf"]) if kolla["pip"] else None
    )
    conf = render_kolla_conf(kolla["sources"], kolla["options"], header_path)
    plans = []
    for path, text, what in (
        (header_path, header, "kolla template override"),
        (conf_path, conf, "kolla-build.conf"),
    ):
        if text is None:
            raise CommandExecutionError("kolla: pipconf:kolla:pip (the image's pip settings) is required")
        target = _system_target(path)
        current = _read_target(target)
        secrets = _text_secrets(text) + opsalt_pipconf.settings_secrets(
            opsalt_pipconf.validate_settings(kolla["pip"])
        )
        # The header carries the index URL, credentials included (base64).
        mode = 0o600 if (what != "kolla-build.conf" or secrets) else 0o644
        plans.append(_file_plan(target, current, text, secrets + [_b64(text)], mode, (0, 0), what))
    return plans


def _b64(text):
    match = re.search(r"echo (\S+) \| base64", text or "")
    return match.group(1) if match else ""


def plan_kolla(kolla=None, pillar=False):
    """
    What ``pipconf.kolla`` would change in the kolla template override and
    kolla-build.conf (paths under ``/etc/kolla`` or an allowed path);
    nothing is written. ``pillar=True`` reads ``pipconf:kolla`` at run time.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.plan_kolla pillar=True
    """
    plans = _plan_kolla(kolla, pillar)
    return _combined([_public_plan(plan) for plan in plans])


def _combined(parts):
    changes = {part["path"]: part["changes"] for part in parts if part["changes"]}
    return {
        "path": [part["path"] for part in parts],
        "changes": changes,
        "comment": "; ".join(p["comment"] for p in parts),
    }


def apply_kolla(kolla=None, pillar=False):
    """
    Write what :func:`plan_kolla` plans (root-owned; the header 0600).

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.apply_kolla pillar=True
    """
    plans = _plan_kolla(kolla, pillar)
    return _combined(
        [_write_plan(plan, "kolla file") if plan["changes"] else _public_plan(plan) for plan in plans]
    )


# -- deprecated names ---------------------------------------------------------------


def _deprecated(old, new):
    message = f"pipconf.{old} is deprecated: use pipconf.{new} (it never returns the file's secrets)"
    log.warning(message)
    warnings.warn(message, DeprecationWarning, stacklevel=3)


def prepare(name, settings, exclusive=False):
    """
    Deprecated: use :func:`plan_config`, which this calls (logging a
    deprecation warning).

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.prepare user:builder '{"global": {"timeout": 60}}'
    """
    _deprecated("prepare", "plan_config")
    return plan_config(name, settings, exclusive=exclusive)


def prepare_pypirc(name, repositories):
    """
    Deprecated: use :func:`plan_pypirc`, which this calls (logging a
    deprecation warning).

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.prepare_pypirc user:builder '{"nexus": {"repository": "http://127.0.0.1:8081/repository/pypi-hosted/"}}'
    """
    _deprecated("prepare_pypirc", "plan_pypirc")
    return plan_pypirc(name, repositories)
