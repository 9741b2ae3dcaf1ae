"""
pip.conf and .pypirc as text: pip's option names, validation of wanted
settings, and an INI editor that changes only the keys it is given (comments
and the rest of the file stay as they were).

pip reads its files with ``RawConfigParser``: ``[global]`` then one section
per command (``[install]``, ``[download]``, ...) overriding it; keys are long
option names normalised to lower case with ``-``; a key or section repeated in
one file makes pip refuse the whole file; options whose optparse action is
``append`` (``extra-index-url``, ``trusted-host``, ``find-links``, ...) take
whitespace-separated values, continuation lines allowed.

Every key and value written goes through :mod:`opsalt_validate` (no line
break or control character; keys also no ``[``, ``]``, ``=`` or leading
``;``/``#``), so pillar data never becomes a second directive.

Plain Python (no Salt dunders), so the execution module, the tests and the
benchmark share it. (Formerly ``opsalt_pipini``, which still imports with a
deprecation warning.)
"""

import functools
import ipaddress
import re
import urllib.parse

import opsalt_validate
from opsalt_secrets import redact_url

__all__ = [
    "FALLBACK_COMMANDS",
    "FALLBACK_MULTI",
    "FALLBACK_SINGLE",
    "URL_KEYS",
    "HOST_KEYS",
    "PYPIRC_KEYS",
    "NAME_PATTERN",
    "IDENT_PATTERN",
    "KOLLA_OPTION_PATTERN",
    "SCOPE_PATTERN",
    "PYPIRC_SCOPE_PATTERN",
    "PipIniError",
    "normalize_key",
    "FALLBACK_CHOICES",
    "pip_tables",
    "pip_options",
    "pip_choices",
    "is_multi",
    "check_http_url",
    "check_host",
    "validate_settings",
    "boolean_words",
    "url_secrets",
    "settings_secrets",
    "Document",
    "render_entry",
    "apply_settings",
    "validate_pypirc",
    "render_pypirc",
    "pypirc_secrets",
]

# Used only when the running Python has no importable pip (e.g. a stripped
# onedir build) or its internals moved. Taken from pip 24-26; per-command
# option lists are not known then, so every section accepts all of them.
FALLBACK_COMMANDS = (
    "cache",
    "check",
    "completion",
    "config",
    "debug",
    "download",
    "freeze",
    "hash",
    "help",
    "index",
    "inspect",
    "install",
    "list",
    "lock",
    "search",
    "show",
    "uninstall",
    "wheel",
)
FALLBACK_MULTI = frozenset(
    {
        "abi",
        "build-constraint",
        "constraint",
        "editable",
        "exists-action",
        "extra-index-url",
        "find-links",
        "platform",
        "requirement",
        "trusted-host",
        "use-deprecated",
        "use-feature",
    }
)
FALLBACK_SINGLE = frozenset(
    {
        "cache-dir",
        "cert",
        "client-cert",
        "disable-pip-version-check",
        "global-option",
        "implementation",
        "index-url",
        "isolated",
        "keyring-provider",
        "log",
        "no-binary",
        "no-build-isolation",
        "no-cache-dir",
        "no-color",
        "no-deps",
        "no-index",
        "no-input",
        "no-python-version-warning",
        "only-binary",
        "pre",
        "prefer-binary",
        "progress-bar",
        "proxy",
        "python",
        "python-version",
        "quiet",
        "require-hashes",
        "require-virtualenv",
        "retries",
        "root",
        "prefix",
        "src",
        "target",
        "timeout",
        "upgrade",
        "upgrade-strategy",
        "user",
        "verbose",
        "dest",
        "default-timeout",
        "break-system-packages",
        "compile",
        "no-compile",
        "resume-retries",
    }
)
# Options taking one of fixed words, for the fallback list (pip 24-26). Only
# the ones with an on/off or yes/no word matter there: YAML reads those words
# as booleans, which validate_settings maps back.
FALLBACK_CHOICES = {"progress-bar": ("auto", "on", "off", "raw")}

URL_KEYS = frozenset({"index-url", "extra-index-url"})
HOST_KEYS = frozenset({"trusted-host"})

PYPIRC_KEYS = ("repository", "username", "password", "ca_cert", "client_cert")
# .pypirc repository names and kolla image names (schema: $defs/pipconf/$defs/ident).
IDENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
NAME_PATTERN = re.compile(IDENT_PATTERN)
# kolla-build.conf option names (oslo.config: letters, digits, _ and -).
KOLLA_OPTION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$"
# Scope keys of pipconf:configs and pipconf:pypirc (schema propertyNames):
# a user name as $defs/name, paths as $defs/abs_path. The operator policy
# decides which paths are accepted; this only keeps keys data.
_USER = opsalt_validate.NAME_PATTERN[1:-1]
_PATH = opsalt_validate.ABS_PATH_PATTERN[1:-1]
SCOPE_PATTERN = f"^(global|user:{_USER}|venv:{_PATH}|{_PATH})$"
PYPIRC_SCOPE_PATTERN = f"^(user:{_USER}|{_PATH})$"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_KEY = re.compile(r"^([^\s=:][^=:]*?)\s*[=:]\s?(.*)$")


class PipIniError(ValueError):
    """
    Invalid settings or an unreadable file. The message never contains a
    credential.
    """


def normalize_key(name):
    """
    pip's own key normalisation: lower case, ``_`` to ``-``, no leading ``--``.
    """
    name = str(name).strip().lower().replace("_", "-")
    return name[2:] if name.startswith("--") else name


def _options_from_pip():
    import pip
    from pip._internal.commands import commands_dict, create_command

    sections = {}
    choices = {}
    for command in commands_dict:
        keys = {}
        words = {}
        parser = create_command(command, isolated=True).parser
        for option in parser._get_all_options():
            for long_opt in option._long_opts:
                key = normalize_key(long_opt)
                keys[key] = option.action == "append"
                words[key] = tuple(option.choices) if option.type == "choice" and option.choices else None
        sections[command] = keys
        choices[command] = words
    sections["global"] = {key: multi for keys in sections.values() for key, multi in keys.items()}
    choices["global"] = _global_choices(choices.values())
    return f"pip {pip.__version__}", sections, {name: _only_enums(words) for name, words in choices.items()}


def _global_choices(per_command):
    """
    ``[global]`` feeds every command: a key is an enum there only if it is one
    in every command that has it (the union of their words).
    """
    merged = {}
    for words in per_command:
        for key, values in words.items():
            if key not in merged:
                merged[key] = values
            elif merged[key] is None or values is None:
                merged[key] = None
            else:
                merged[key] = tuple(dict.fromkeys(merged[key] + values))
    return merged


def _only_enums(words):
    return {key: values for key, values in words.items() if values}


@functools.lru_cache(maxsize=1)
def pip_tables():
    """
    ``(source, sections, choices)``: :func:`pip_options` plus
    ``{section: {key: (word, ...)}}`` for the options that take one of fixed
    words (``progress-bar``: ``auto``, ``on``, ``off``, ``raw``).
    """
    try:
        return _options_from_pip()
    except Exception:
        keys = {key: False for key in FALLBACK_SINGLE}
        keys.update({key: True for key in FALLBACK_MULTI})
        names = ("global",) + FALLBACK_COMMANDS
        return (
            "fallback list",
            {name: dict(keys) for name in names},
            {name: dict(FALLBACK_CHOICES) for name in names},
        )


def pip_options():
    """
    ``(source, {section: {key: multi?}})`` for pip's config sections:
    ``global`` accepts every command's options, each command section its own.
    ``source`` is ``pip <version>`` when read from the installed pip's command
    parsers (pip has no public API for this, so its internal
    ``pip._internal.commands`` is used); when that fails it is
    ``fallback list`` and every section accepts :data:`FALLBACK_SINGLE` and
    :data:`FALLBACK_MULTI`.
    """
    source, sections, _choices = pip_tables()
    return source, sections


def pip_choices():
    """
    ``{section: {key: (word, ...)}}``: the options of :func:`pip_options`
    whose value is one of fixed words (:data:`FALLBACK_CHOICES` with the
    fallback list).
    """
    return pip_tables()[2]


def is_multi(key, sections=None):
    """
    True when pip treats ``key`` as a whitespace-separated list.
    """
    _source, known = pip_options() if sections is None else (None, sections)
    return bool(known["global"].get(key, key in FALLBACK_MULTI))


def check_http_url(url, what):
    """
    Raise :class:`PipIniError` unless ``url`` is an http(s) URL with a host.
    """
    shown = redact_url(url)
    if "@" in shown:  # no scheme, so redact_url could not find the userinfo
        shown = "<a URL with credentials>"
    try:
        parts = urllib.parse.urlsplit(url)
        hostname = parts.hostname
        _ = parts.port  # urllib raises ValueError for a bad port only on access
    except ValueError:
        # Not chained: urllib's message quotes part of the URL, and a
        # password holding '/' ends up in the "port" it quotes.
        raise PipIniError(f"{what}: {shown!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise PipIniError(f"{what}: {shown!r} is not an http:// or https:// URL with a host")


def check_host(value, what):
    """
    Raise :class:`PipIniError` unless ``value`` is ``host`` or ``host:port``
    (IPv6 in brackets), as pip's ``trusted-host`` expects.
    """
    host, port = value, None
    if "/" in value or any(ch.isspace() for ch in value):
        raise PipIniError(f"{what}: {value!r} is not host[:port] (no scheme, path or spaces)")
    match = re.match(r"^\[([^\]]+)\](?::(\d+))?$", value)
    if match:
        host, port = match.group(1), match.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError as err:
            raise PipIniError(f"{what}: {value!r} is not host[:port]") from err
    else:
        if value.count(":") == 1:
            host, port = value.split(":")
        if not _HOSTNAME.match(host or ""):
            raise PipIniError(f"{what}: {value!r} is not host[:port] (no scheme, path or spaces)")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise PipIniError(f"{what}: {value!r} has an invalid port")


def _scalar(value, where, words=None):
    if isinstance(value, bool):
        if words:
            # YAML reads on/off/yes/no as booleans (``progress-bar: off`` is
            # False); pip wants the word back.
            try:
                return opsalt_validate.enum_word(value, words, where)
            except opsalt_validate.ValidationError as err:
                raise PipIniError(str(err)) from err
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise PipIniError(f"{where}: expected a string, number or boolean, got {type(value).__name__}")
    try:
        # A value may be a password: the message names the key, never the value.
        opsalt_validate.line(value, where, secret=True)
    except opsalt_validate.ValidationError as err:
        raise PipIniError(str(err)) from err
    if value != value.strip() or value == "":
        raise PipIniError(f"{where}: empty value or leading/trailing whitespace")
    return value


def _key(raw_key, what):
    try:
        return normalize_key(opsalt_validate.ini_key(raw_key, what))
    except opsalt_validate.ValidationError as err:
        raise PipIniError(str(err)) from err


def _check_words(values, words, where):
    if words and any(item not in words for item in values):
        raise PipIniError(
            f"{where}: must be one of {', '.join(words)}; pip refuses a config file with any other value"
        )


def validate_settings(settings, sections=None, choices=None):  # noqa: C901 - one branch per pip option family
    """
    Check wanted pip settings and return them normalised:
    ``{section: {key: str | [str] | None}}`` (``None`` removes the key).
    An option that takes one of fixed words (``choices``, default
    :func:`pip_choices`; none when ``sections`` is given) gets the word for a
    YAML boolean: ``progress-bar: off`` is written ``progress-bar = off``.
    Raises :class:`PipIniError` naming the first problem.
    """
    if sections is None:
        source, known, pip_words = pip_tables()
        choices = pip_words if choices is None else choices
    else:
        source, known, choices = "given", sections, choices or {}
    if not isinstance(settings, dict) or not settings:
        raise PipIniError("settings must be a non-empty mapping of sections to options")
    result = {}
    for section, options in settings.items():
        section_name = str(section).strip().lower()
        if section_name not in known:
            raise PipIniError(
                f"[{section}] is not a pip config section; use global or a pip command "
                f"({', '.join(sorted(k for k in known if k != 'global'))})"
            )
        if section_name in result:
            raise PipIniError(f"section [{section_name}] is given twice")
        if not isinstance(options, dict):
            raise PipIniError(f"[{section_name}] must be a mapping of option names to values")
        allowed = known[section_name]
        clean = {}
        for raw_key, value in options.items():
            key = _key(raw_key, f"[{section_name}] key")
            where = f"[{section_name}] {key}"
            if key in clean:
                raise PipIniError(
                    f"{where}: repeated key ({raw_key!r} and another spelling normalise to {key!r}); "
                    "pip refuses a file with a repeated key"
                )
            if key not in allowed:
                raise PipIniError(
                    f"{where}: pip ({source}) has no option --{key} for this section; "
                    "see 'pip help <command>' for the long option names"
                )
            multi = allowed[key]
            words = choices.get(section_name, {}).get(key)
            if value is None:
                clean[key] = None
                continue
            if isinstance(value, (list, tuple)):
                if not multi:
                    raise PipIniError(f"{where}: takes one value, not a list")
                if not value:
                    raise PipIniError(f"{where}: empty list; use null to remove the key")
                values = [_scalar(v, where, words) for v in value]
                if any(len(v.split()) != 1 for v in values):
                    raise PipIniError(f"{where}: list items may not contain whitespace")
            else:
                values = [_scalar(value, where, words)]
                if multi and len(values[0].split()) != 1:
                    values = values[0].split()
            _check_words(values, words, where)
            if key in URL_KEYS:
                for item in values:
                    check_http_url(item, where)
            if key in HOST_KEYS:
                for item in values:
                    check_host(item, where)
            clean[key] = values if multi else values[0]
        result[section_name] = clean
    return result


def boolean_words(settings, clean):
    """
    ``["[section] key = word", ...]`` for each YAML boolean in ``settings``
    that :func:`validate_settings` (giving ``clean``) wrote as the option's
    word, so a state can say what it applied: ``progress-bar: off`` arrives
    as ``False``.
    """
    found = []
    for section, options in (settings or {}).items():
        name = str(section).strip().lower()
        for raw_key, value in (options if isinstance(options, dict) else {}).items():
            word = clean.get(name, {}).get(normalize_key(raw_key))
            if isinstance(value, bool) and word not in (None, "true", "false"):
                found.append(f"[{name}] {normalize_key(raw_key)} = {word}")
    return found


def url_secrets(values):
    """
    Passwords embedded in the URLs among ``values``, for redaction (user
    names go too, with the whole userinfo, through ``redact_url``).
    """
    found = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and "@" in item:
                try:
                    parts = urllib.parse.urlsplit(item)
                except ValueError:
                    continue
                if parts.password:
                    found.extend({parts.password, urllib.parse.unquote(parts.password)})
    return found


def settings_secrets(settings):
    """
    Every credential in normalised ``settings``.
    """
    return url_secrets(v for options in settings.values() for v in options.values() if v is not None)


# -- the INI document ---------------------------------------------------------


class _Entry:
    """
    One key with its lines (the key line and continuation lines).
    """

    def __init__(self, key, lines, value):
        self.key = key
        self.lines = lines
        self.value = value


class _Section:
    def __init__(self, name, header):
        self.name = name
        self.header = header
        self.items = []  # _Entry or str (comment/blank line)


class Document:
    """
    A pip-style INI file kept line by line, so writing it back changes only
    what was edited.
    """

    def __init__(self, text=""):
        self.preamble = []
        self.sections = []
        self._parse(text or "")

    def _parse(self, text):
        current = None
        entry = None
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                line += "\n"
            stripped = line.strip()
            if (
                entry is not None
                and line[:1] in (" ", "\t")
                and stripped
                and not stripped.startswith(("#", ";"))
            ):
                entry.lines.append(line)
                entry.value = (entry.value + "\n" + stripped) if entry.value else stripped
                continue
            entry = None
            header = _SECTION.match(line)
            if header:
                current = _Section(header.group(1).strip(), line)
                self.sections.append(current)
                continue
            if not stripped or stripped.startswith(("#", ";")):
                (current.items if current else self.preamble).append(line)
                continue
            match = _KEY.match(line.rstrip("\n"))
            if current is None or not match:
                raise PipIniError(
                    f"line {line.strip()[:40]!r} is not a section header, key = value, or comment"
                    if match is None
                    else "a key appears before any [section] header"
                )
            entry = _Entry(normalize_key(match.group(1)), [line], match.group(2).strip())
            current.items.append(entry)

    def problems(self):
        """
        What makes pip refuse this file: repeated sections or keys.
        """
        found = []
        seen_sections = set()
        for section in self.sections:
            if section.name in seen_sections:
                found.append(f"section [{section.name}] appears twice")
            seen_sections.add(section.name)
            seen_keys = set()
            for item in section.items:
                if isinstance(item, _Entry):
                    if item.key in seen_keys:
                        found.append(f"key {item.key!r} appears twice in [{section.name}]")
                    seen_keys.add(item.key)
        return found

    def section(self, name):
        for section in self.sections:
            if section.name == name:
                return section
        return None

    def as_dict(self, sections=None):
        """
        ``{section: {key: value}}``; multi-value keys as lists.
        """
        result = {}
        for section in self.sections:
            options = result.setdefault(section.name, {})
            for item in section.items:
                if isinstance(item, _Entry):
                    options[item.key] = item.value.split() if is_multi(item.key, sections) else item.value
        return result

    def text(self):
        out = list(self.preamble)
        for section in self.sections:
            out.append(section.header)
            for item in section.items:
                out.extend(item.lines if isinstance(item, _Entry) else [item])
        return "".join(out)


def render_entry(key, value):
    """
    The lines for one key: a list of several values on continuation lines.
    """
    if isinstance(value, list) and len(value) > 1:
        return [f"{key} =\n"] + [f"    {item}\n" for item in value]
    if isinstance(value, list):
        value = value[0]
    return [f"{key} = {value}\n"]


def _same(entry, value):
    if isinstance(value, list):
        return entry.value.split() == value
    return entry.value == value


def _set(section, key, value):
    last_entry_at = -1
    for index, item in enumerate(section.items):
        if isinstance(item, _Entry):
            last_entry_at = index
            if item.key == key:
                if value is None:
                    del section.items[index]
                elif not _same(item, value):
                    section.items[index] = _Entry(key, render_entry(key, value), "")
                return
    if value is not None:
        # After the section's last key, so trailing blank lines and comments
        # that belong to the next section stay where they are.
        section.items.insert(last_entry_at + 1, _Entry(key, render_entry(key, value), ""))


def apply_settings(text, settings, exclusive=False):
    """
    Return ``text`` with normalised ``settings`` applied. Without
    ``exclusive`` every other line is kept; with it, keys and sections not
    in ``settings`` are dropped. Raises :class:`PipIniError` when the current
    file is one pip would refuse and it would stay so.
    """
    document = Document(text)
    if not exclusive and document.problems():
        raise PipIniError(
            "the existing file has "
            + "; ".join(document.problems())
            + ", which makes pip refuse it; fix it by hand or use exclusive: true"
        )
    if exclusive:
        kept = []
        for section in document.sections:
            if section.name in settings and section.name not in (s.name for s in kept):
                section.items = [
                    item
                    for item in section.items
                    if not isinstance(item, _Entry) or item.key in settings[section.name]
                ]
                seen = set()
                deduped = []
                for item in section.items:
                    if isinstance(item, _Entry):
                        if item.key in seen:
                            continue
                        seen.add(item.key)
                    deduped.append(item)
                section.items = deduped
                kept.append(section)
        document.sections = kept
    for name, options in settings.items():
        section = document.section(name)
        if section is None:
            if not any(v is not None for v in options.values()):
                continue
            current = document.text()
            if current.strip() and not current.endswith("\n\n"):
                (document.sections[-1].items if document.sections else document.preamble).append("\n")
            section = _Section(name, f"[{name}]\n")
            document.sections.append(section)
        for key, value in options.items():
            _set(section, key, value)
    return document.text()


# -- .pypirc -----------------------------------------------------------------


def validate_pypirc(repositories):
    """
    Check ``{name: {repository, username, password, ...}}`` for a .pypirc and
    return it normalised. Raises :class:`PipIniError`.
    """
    if not isinstance(repositories, dict) or not repositories:
        raise PipIniError("repositories must be a non-empty mapping of names to settings")
    clean = {}
    for name, options in repositories.items():
        name = str(name)
        if not NAME_PATTERN.fullmatch(name) or name == "distutils":
            raise PipIniError(
                f"repository name {name!r} must be letters, digits, '.', '_', '-' and not 'distutils'"
            )
        if not isinstance(options, dict):
            raise PipIniError(f"repository {name}: settings must be a mapping")
        unknown = sorted(set(options) - set(PYPIRC_KEYS))
        if unknown:
            raise PipIniError(
                f"repository {name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(PYPIRC_KEYS)}"
            )
        if not options.get("repository"):
            raise PipIniError(f"repository {name}: 'repository' (the upload URL) is required")
        entry = {}
        for key in PYPIRC_KEYS:
            if options.get(key) is not None:
                entry[key] = _scalar(options[key], f"repository {name}: {key}")
        check_http_url(entry["repository"], f"repository {name}")
        clean[name] = entry
    return clean


def render_pypirc(repositories):
    """
    The whole .pypirc text for normalised ``repositories``.
    """
    lines = ["[distutils]\n", "index-servers =\n"]
    lines += [f"    {name}\n" for name in repositories]
    for name, options in repositories.items():
        lines.append(f"\n[{name}]\n")
        lines += [f"{key} = {value}\n" for key, value in options.items()]
    return "".join(lines)


def pypirc_secrets(repositories):
    """
    Passwords (and URL credentials) in normalised ``repositories``.
    """
    found = [opts["password"] for opts in repositories.values() if opts.get("password")]
    found += url_secrets(opts["repository"] for opts in repositories.values())
    return found
