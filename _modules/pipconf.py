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
(``<path>/pip.conf``) or an absolute path.

Option names come from the installed pip's own command parsers (so a key pip
does not know is refused); without an importable pip a fallback list of
pip 24-26 option names is used and any key is accepted.
"""

import grp
import logging
import os
import pwd
import re
import urllib.parse

try:
    import opsalt_files
    import opsalt_pipini
    import requests
    from opsalt_secrets import redact_text, redact_url

    HAS_LIBS = True
except ImportError as _err:  # pragma: no cover - reported by __virtual__
    HAS_LIBS = False
    _IMPORT_ERROR = str(_err)

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "pipconf"

GLOBAL_FILE = "/etc/pip.conf"
CONFIG_BASENAME = "pip.conf"


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
        return pwd.getpwnam(user)
    except KeyError:
        raise CommandExecutionError(f"user {user!r} does not exist on this host") from None


def _venv_dir(path):
    if not os.path.isabs(path):
        raise SaltInvocationError(f"venv path {path!r} must be absolute")
    if not os.path.isfile(os.path.join(path, "pyvenv.cfg")):
        raise CommandExecutionError(f"{path} is not a virtualenv (no pyvenv.cfg); create it first")
    return path


def resolve(name):
    """
    Where a scope's pip.conf lives and who should own it.

    name
        ``global``, ``user:<name>``, ``venv:<path>`` or an absolute path.

    Returns ``{"path": ..., "user": ..., "group": ...}`` (user/group ``None``
    when the file keeps its current owner).

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.resolve user:builder
    """
    name = str(name)
    if name == "global":
        return {"path": GLOBAL_FILE, "user": None, "group": None}
    if name.startswith("user:"):
        entry = _user_entry(name[5:])
        return {
            "path": os.path.join(entry.pw_dir, ".config", "pip", CONFIG_BASENAME),
            "user": entry.pw_name,
            "group": grp.getgrgid(entry.pw_gid).gr_name,
        }
    if name.startswith("venv:"):
        return {"path": os.path.join(_venv_dir(name[5:]), CONFIG_BASENAME), "user": None, "group": None}
    if os.path.isabs(name):
        return {"path": name, "user": None, "group": None}
    raise SaltInvocationError(
        f"{name!r} is not a pip config scope: use global, user:<name>, venv:<path> or an absolute path"
    )


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


def _read_document(path):
    text = opsalt_files.read_text(path)
    if text is None:
        return None, None
    try:
        return text, opsalt_pipini.Document(text)
    except opsalt_pipini.PipIniError as err:
        raise CommandExecutionError(f"{path}: {err}") from None


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
    target = resolve(_scope_name(scope, user, venv, path))["path"]
    _text, document = _read_document(target)
    if document is None:
        return None
    problems = document.problems()
    if problems:
        raise CommandExecutionError(f"{target}: pip refuses this file: {'; '.join(problems)}")
    options = document.as_dict()
    return options if unmask else _redact_values(options)


# -- effective configuration ----------------------------------------------------


_PAM_LINE = re.compile(r"^(\w+)\s+((?:DEFAULT|OVERRIDE)=.*)$")


def _read_environment_file(path):
    """
    ``KEY=value`` lines (``/etc/environment``, shell style) and pam_env's
    ``KEY DEFAULT=value OVERRIDE=value`` lines (``~/.pam_environment``).
    """
    values = {}
    text = opsalt_files.read_text(path) or ""
    for line in text.splitlines():
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


def _login_environment(entry, environ, home=None):
    """
    The ``PIP_*``/``XDG_*`` variables a user's login sessions get, where they
    can be read without running the user's shell: ``/etc/environment``,
    ``~/.pam_environment``, and this process's environment when it runs as
    that user (not when ``home`` points elsewhere). ``environ`` overrides all
    of them.
    """
    env = _read_environment_file("/etc/environment")
    env.update(_read_environment_file(os.path.join(home or entry.pw_dir, ".pam_environment")))
    if home is None and os.geteuid() == entry.pw_uid:
        env.update(os.environ)
    env.update(environ or {})
    return {k: v for k, v in env.items() if k.startswith(("PIP_", "XDG_"))}


def config_files(user=None, venv=None, environ=None, home=None):
    """
    The files pip would read for ``user`` (default: the user Salt runs as),
    in pip's load order, each ``{"path", "kind", "exists", "loaded"}``, and
    the ``PIP_*``/``XDG_*`` environment assumed:
    ``{"files": [...], "environment": {...}}``. ``home`` replaces the user's
    home directory (an image build root, a chroot).

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.config_files user=builder venv=/opt/kolla-venv
    """
    files, env = _config_files(user, venv, environ, home)
    return {"files": files, "environment": {k: redact_url(v) for k, v in env.items()}}


def _config_files(user, venv, environ, home):
    entry = _user_entry(user) if user else pwd.getpwuid(os.geteuid())
    env = _login_environment(entry, environ, home)
    home = home or entry.pw_dir
    xdg_dirs = [d for d in env.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":") if d] or ["/etc/xdg"]
    xdg_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    env_file = env.get("PIP_CONFIG_FILE")
    user_files_loaded = not (env_file and os.path.exists(env_file))
    files = [{"path": os.path.join(d, "pip", CONFIG_BASENAME), "kind": "global"} for d in xdg_dirs]
    files.append({"path": GLOBAL_FILE, "kind": "global"})
    files.append({"path": os.path.join(home, ".pip", CONFIG_BASENAME), "kind": "user (legacy)"})
    files.append({"path": os.path.join(xdg_home, "pip", CONFIG_BASENAME), "kind": "user"})
    if venv:
        files.append({"path": os.path.join(venv, CONFIG_BASENAME), "kind": "site"})
    if env_file:
        files.append({"path": env_file, "kind": "PIP_CONFIG_FILE"})
    for item in files:
        item["exists"] = os.path.isfile(item["path"])
        item["loaded"] = item["exists"] and (user_files_loaded or not item["kind"].startswith("user"))
    return files, env


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
    files, env = _config_files(user, venv, environ, home)
    options = {}
    warnings = []

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
        _text, document = _read_document(item["path"])
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
            key = opsalt_pipini.normalize_key(name[4:])
            put(key, value.split() if opsalt_pipini.is_multi(key) else value, f"environment {name}")
    legacy = [f for f in files if f["kind"] == "user (legacy)" and f["loaded"]]
    if legacy:
        warnings.append(
            f"legacy {legacy[0]['path']} is read too; keys there apply unless the newer user file sets them"
        )
    if not unmask:
        for entry in options.values():
            value = entry["value"]
            entry["value"] = [redact_url(v) for v in value] if isinstance(value, list) else redact_url(value)
    return {"options": options, "files": files, "warnings": warnings}


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
        opsalt_pipini.check_http_url(url, "index URL")
    except opsalt_pipini.PipIniError as err:
        raise CommandExecutionError(str(err)) from None
    parts = urllib.parse.urlsplit(url)
    auth = _credentials_for(parts, options)
    secrets = opsalt_pipini.url_secrets([url]) + ([auth[1]] if auth and auth[1] else [])
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


# -- what the states build on ---------------------------------------------------


def prepare(name, settings, exclusive=False):
    """
    Validate ``settings`` and compute the pip.conf that ``pipconf.managed``
    would write. Nothing is written.

    Returns ``{"path", "user", "group", "current", "desired", "secrets",
    "has_credentials"}``; ``current`` is ``None`` when the file is missing,
    ``desired`` too when there is nothing to write.
    Raises ``CommandExecutionError`` for invalid input or a file pip refuses.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.prepare user:builder '{"global": {"index-url": "http://nexus:8081/repository/pypi-group/simple"}}'
    """
    target = resolve(name)
    try:
        clean = opsalt_pipini.validate_settings(settings)
    except opsalt_pipini.PipIniError as err:
        raise CommandExecutionError(f"invalid pip settings for {target['path']}: {err}") from None
    secrets = opsalt_pipini.settings_secrets(clean)
    current = opsalt_files.read_text(target["path"])
    try:
        desired = opsalt_pipini.apply_settings(current or "", clean, exclusive=exclusive)
    except opsalt_pipini.PipIniError as err:
        raise CommandExecutionError(f"{target['path']}: {redact_text(str(err), secrets)}") from None
    if current is None and not desired.strip():
        desired = None  # only removals asked and no file: nothing to create
    # Credentials already in the file count too: the mode must protect them.
    existing_secrets = opsalt_pipini.url_secrets(
        v for keys in opsalt_pipini.Document(desired or "").as_dict().values() for v in keys.values()
    )
    target.update(
        current=current,
        desired=desired,
        secrets=sorted(set(secrets + existing_secrets)),
        has_credentials=bool(secrets or existing_secrets),
    )
    return target


def render(settings):
    """
    The pip.conf text for ``settings`` alone (validated as for
    ``pipconf.managed``), e.g. to bake into an image.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.render '{"global": {"index-url": "http://nexus:8081/repository/pypi-group/simple", "trusted-host": "nexus:8081"}}'
    """
    try:
        clean = opsalt_pipini.validate_settings(settings)
    except opsalt_pipini.PipIniError as err:
        raise CommandExecutionError(f"invalid pip settings: {err}") from None
    return opsalt_pipini.apply_settings("", clean, exclusive=True)


KOLLA_SOURCE_TYPES = ("git", "url", "local")


def _kolla_value(value, where):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_kolla_value(v, where) for v in value)
    text = str(value)
    if any(ch in text for ch in "\r\n\x00") or not text.strip():
        raise CommandExecutionError(f"kolla-build.conf {where}: empty value or a line break")
    return text


def render_kolla_conf(sources=None, options=None, template_override=None):
    """
    The ``kolla-build.conf`` text: ``[DEFAULT]`` from ``options`` (plus
    ``template_override``), and one section per source override, e.g.
    ``{"neutron-base": {"type": "git", "location": "https://git/ops/neutron.git",
    "reference": "stable/rocky-ops"}}``, so ``kolla-build -t source`` builds
    from the team's fork.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.render_kolla_conf '{"neutron-base": {"type": "git", "location": "https://git.example.com/ops/neutron.git", "reference": "stable/rocky-ops"}}' template_override=/etc/kolla/base_header.j2
    """
    sections = {"DEFAULT": dict(options or {})}
    if template_override:
        sections["DEFAULT"]["template_override"] = template_override
    for name, source in (sources or {}).items():
        if not opsalt_pipini.NAME_PATTERN.match(str(name)) or name == "DEFAULT":
            raise CommandExecutionError(f"kolla source {name!r}: not a kolla image name")
        if not isinstance(source, dict):
            raise CommandExecutionError(
                f"kolla source {name}: must be a mapping with type, location, reference"
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
        sections[name] = source
    lines = []
    for name, options_ in sections.items():
        if not options_:
            continue
        lines.append(f"[{name}]\n")
        lines += [f"{key} = {_kolla_value(value, f'[{name}] {key}')}\n" for key, value in options_.items()]
        lines.append("\n")
    return "".join(lines).rstrip("\n") + "\n"


def render_kolla_header(settings, path="/etc/pip.conf"):
    """
    A kolla-build template override whose ``base_header`` block writes the
    pip.conf for ``settings`` into the base image, so every image built from
    source installs from the team's index. Pass it with
    ``kolla-build --template-override`` (or ``template_override`` in
    kolla-build.conf).

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.render_kolla_header '{"global": {"index-url": "http://nexus:8081/repository/pypi-group/simple", "trusted-host": "nexus:8081"}}'
    """
    import base64

    encoded = base64.b64encode(render(settings).encode("utf-8")).decode("ascii")
    # base64 keeps the file byte-exact through Dockerfile quoting.
    return (
        "{% extends parent_template %}\n"
        "\n"
        "{% block base_header %}\n"
        "{{ super() }}\n"
        f"RUN mkdir -p {os.path.dirname(path)} && echo {encoded} | base64 -d > {path}\n"
        "{% endblock %}\n"
    )


def prepare_pypirc(name, repositories):
    """
    Validate ``repositories`` and compute the ``.pypirc`` that
    ``pipconf.pypirc`` would write (``name``: ``user:<name>`` or an absolute
    path). Nothing is written.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.prepare_pypirc user:builder '{"nexus": {"repository": "http://nexus:8081/repository/pypi-hosted/", "username": "deploy", "password": "..."}}'
    """
    name = str(name)
    if name.startswith("user:"):
        target = resolve(name)
        target["path"] = os.path.join(_user_entry(target["user"]).pw_dir, ".pypirc")
    elif os.path.isabs(name):
        target = {"path": name, "user": None, "group": None}
    else:
        raise SaltInvocationError(f"{name!r}: use user:<name> or an absolute path for a .pypirc")
    try:
        clean = opsalt_pipini.validate_pypirc(repositories)
    except opsalt_pipini.PipIniError as err:
        raise CommandExecutionError(f"invalid .pypirc settings for {target['path']}: {err}") from None
    target.update(
        current=opsalt_files.read_text(target["path"]),
        desired=opsalt_pipini.render_pypirc(clean),
        secrets=opsalt_pipini.pypirc_secrets(clean),
        has_credentials=True,
    )
    return target


def diff(current, desired, path, secrets=()):
    """
    A unified diff of two file texts with ``secrets`` and URL credentials
    shown as ``***``.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.diff "$(cat old)" "$(cat new)" /etc/pip.conf
    """
    return redact_text(opsalt_files.unified_diff(current, desired, path), secrets)


def write(path, content, mode, user=None, group=None, makedirs=True):
    """
    Write ``content`` to ``path`` atomically (temp file, fsync, rename, mode
    set before content), backing up the file it replaces; create missing
    parent directories owned by ``user`` (mode 0755). Returns the backup's
    path or ``None``.

    CLI Example:

    .. code-block:: bash

        salt '*' pipconf.write /etc/pip.conf "[global]\\nindex-url = http://nexus/simple\\n" 0644
    """
    mode = int(str(mode), 8) if not isinstance(mode, int) else mode
    directory = os.path.dirname(path)
    try:
        if makedirs and not os.path.isdir(directory):
            _make_dirs(directory, user, group)
        backup = opsalt_files.atomic_write(path, content, mode=mode, user=user, group=group)
    except (OSError, KeyError) as err:
        raise CommandExecutionError(f"cannot write {path}: {getattr(err, 'strerror', None) or err}") from None
    log.info(
        "pipconf: wrote %s (mode %04o)%s", path, mode, f", previous version in {backup}" if backup else ""
    )
    return backup


def _make_dirs(directory, user, group):
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        os.mkdir(path, 0o755)
        if user or group:
            os.chown(
                path,
                pwd.getpwnam(user).pw_uid if user else -1,
                grp.getgrnam(group).gr_gid if group else -1,
            )
