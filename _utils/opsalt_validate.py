"""
The one validation layer for pillar data that opsalt writes or acts on.

Pillar comes from the asset system, whose editors are not root on the
minions (docs/security.rst). Every writer of a line-based file (pgbouncer.ini,
userlist.txt, pip.conf, .pypirc, kolla-build.conf, Dockerfile fragments) and
every SLS name check goes through these functions, and
``schema/pillar.schema.json`` carries the same patterns (``$defs/line``,
``$defs/ini_key``, ``$defs/name``, ``$defs/abs_path``, ``$defs/plain_path``);
``tests/unit/utils/test_opsalt_validate.py`` holds the two together.

Each check raises :class:`ValidationError` (a ``ValueError``) whose message
names the field (``what``) and never repeats a value that may be a secret
unless the caller says it is not one.

Plain Python (no Salt dunders) so it is importable both from the installed
package and as a synced ``_utils`` module.
"""

import grp
import json
import os
import pwd
import re
import stat

# Characters that end a line or a directive somewhere: ASCII controls, DEL,
# the C1 controls (U+0085 NEL among them) and Unicode's line and paragraph
# separators. Tab is allowed inside values only.
_CONTROL = "\x00-\x08\x0a-\x1f\x7f\x80-\x9f\u2028\u2029"
LINE_PATTERN = f"^[^{_CONTROL}]*$"
# An INI key: a line, and none of the characters that start a section, split
# key from value or start a comment.
INI_KEY_PATTERN = rf"^[^{_CONTROL}\t\[\]=;#\s][^{_CONTROL}\t\[\]=]*$"
# Names that become part of a state ID, a file name or a command line:
# Redis instances, pip scopes' user names, kolla images and options,
# pgbouncer databases and users, v2v ids.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}$"
# A pgbouncer database name that is also a safe file name (no "/", no
# leading dot): the maintenance window's markers are named after it.
DATABASE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,62}$"
# An absolute path with no control characters; normalisation is checked in code.
ABS_PATH_PATTERN = f"^/[^{_CONTROL}]*$"
# A path that is also safe inside a shell line or a Jinja template (kolla's
# Dockerfile header): no spaces, quotes, ``$``, ``{``, ``%``, backslash.
PLAIN_PATH_PATTERN = r"^/[A-Za-z0-9_./@+-]*$"

# Matched with fullmatch: Python's ``$`` also matches before a final newline
# (ECMA's, the schema's, does not), so ``match`` would let "value\n" through.
_LINE = re.compile(LINE_PATTERN)
_INI_KEY = re.compile(INI_KEY_PATTERN)
_NAME = re.compile(NAME_PATTERN)
_PLAIN_PATH = re.compile(PLAIN_PATH_PATTERN)

# What Salt's ``| json`` filter leaves raw (salt.utils.json.dumps runs with
# ensure_ascii=False) and the SLS's YAML then folds to a space (U+0085,
# U+2028, U+2029) or cannot read at all (DEL, the other C1 controls, a lone
# surrogate, U+FFFE, U+FFFF): a pillar text holding one of these does not
# pass through SLS text unchanged. Every other character does
# (tests/unit/utils/test_opsalt_validate.py tries each one).
SLS_UNSAFE_PATTERN = "[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]"
_SLS_UNSAFE = re.compile(SLS_UNSAFE_PATTERN)
# A key shown as it is in a field's path; any other is shown JSON-escaped.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.@+/-]+")

# The schema's names for these patterns ($defs/<name>/pattern).
SCHEMA_PATTERNS = {
    "line": LINE_PATTERN,
    "ini_key": INI_KEY_PATTERN,
    "name": NAME_PATTERN,
    "abs_path": ABS_PATH_PATTERN,
    "plain_path": PLAIN_PATH_PATTERN,
}


class ValidationError(ValueError):
    """A pillar or argument value that opsalt refuses to write or act on."""


def _shown(value, secret):
    return "(a secret, not shown)" if secret else repr(value)


def line(value, what, secret=False):
    """
    Return ``value`` as a string if it holds no line break or control
    character (tab allowed), else raise naming ``what``.
    """
    text = value if isinstance(value, str) else str(value)
    if not _LINE.fullmatch(text):
        raise ValidationError(
            f"{what}: {_shown(value, secret)} contains a line break or control character; "
            "a value must stay on one line"
        )
    return text


def ini_key(value, what):
    """
    Return ``value`` if it is a valid INI key: one line, not empty, no
    ``[``, ``]``, ``=``, and not starting with ``;``, ``#`` or a space.
    """
    text = value if isinstance(value, str) else str(value)
    if not _INI_KEY.fullmatch(text) or text != text.strip():
        raise ValidationError(
            f"{what}: {text!r} is not a valid key (one line; no '[', ']', '='; "
            "not starting with ';', '#' or a space)"
        )
    return text


def name(value, what):
    """
    Return ``value`` if it matches :data:`NAME_PATTERN` (letters, digits and
    ``_ . @ + -``, at most 128, not starting with ``.`` or ``-``).
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValidationError(
            f"{what}: {value!r} is not a valid name (letters, digits and _ . @ + -, "
            "up to 128, starting with a letter, digit or _)"
        )
    return value


def abs_path(value, what):
    """
    Return ``value`` if it is an absolute, normalised path (no ``..``, no
    ``//``, no trailing ``/``) with no control characters.
    """
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValidationError(f"{what}: {value!r} is not an absolute path")
    line(value, what)
    if os.path.normpath(value) != value or value.startswith("//"):
        raise ValidationError(
            f"{what}: {value!r} is not normalised (write it as {os.path.normpath(value)!r})"
        )
    return value


def plain_path(value, what):
    """
    Return ``value`` if it is an absolute normalised path of only letters,
    digits and ``_ . / @ + -``: safe quoted or not, in a shell line or a
    Jinja template.
    """
    abs_path(value, what)
    if not _PLAIN_PATH.fullmatch(value):
        raise ValidationError(
            f"{what}: {value!r} may hold only letters, digits and _ . / @ + - "
            "(it is written into a shell line)"
        )
    return value


def mode(value, what="mode"):
    """
    Return ``value`` (``'0640'``, ``'640'``, ``0o640`` or ``640`` from YAML)
    as an int file mode, or ``None`` for ``None``; refuse anything else.
    """
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"0?[0-7]{3,4}", text):
        raise ValidationError(f"{what}: {value!r} is not an octal file mode such as '0640'")
    bits = int(text, 8)
    if bits & ~0o7777:
        raise ValidationError(f"{what}: {value!r} is out of range")
    return bits


def owner(value, what="user"):
    """Return ``value`` if it names an existing local user (or is ``None``)."""
    if value is None:
        return None
    try:
        pwd.getpwnam(str(value))
    except (KeyError, ValueError) as err:  # ValueError: a NUL in the name
        raise ValidationError(f"{what}: no local user {value!r}") from err
    return str(value)


def group(value, what="group"):
    """Return ``value`` if it names an existing local group (or is ``None``)."""
    if value is None:
        return None
    try:
        grp.getgrnam(str(value))
    except (KeyError, ValueError) as err:  # ValueError: a NUL in the name
        raise ValidationError(f"{what}: no local group {value!r}") from err
    return str(value)


def enum_word(value, choices, what):
    """
    Return ``value`` as one of ``choices`` (strings). YAML reads ``no``,
    ``yes``, ``on`` and ``off`` as booleans; where the enum has that word, a
    boolean maps back to it (``False`` -> ``'no'`` or ``'off'``).
    """
    if isinstance(value, bool):
        words = ("yes", "on", "true") if value else ("no", "off", "false")
        for word in words:
            if word in choices:
                return word
    text = str(value).strip().lower() if value is not None else ""
    if text not in choices:
        raise ValidationError(f"{what}: {value!r} must be one of {', '.join(choices)}")
    return text


def regular_file_stat(st, what, max_bytes=None):
    """
    Refuse an ``os.stat_result`` that is not a regular file, or is larger
    than ``max_bytes``.
    """
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError(f"{what}: not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ValidationError(f"{what}: {st.st_size} bytes is over the limit of {max_bytes}")
    return st


def _path_part(key):
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    if isinstance(key, str):
        return json.dumps(key, ensure_ascii=True)
    return str(key)


def sls_unsafe_field(data, root):
    """
    The first text in ``data`` (a map's keys before its values, then depth
    first in order) that cannot pass through SLS text unchanged
    (:data:`SLS_UNSAFE_PATTERN`), as ``(path, character)``; ``None`` when
    there is none. ``path`` is the field's colon-separated path from
    ``root`` (``pgbouncer:users:"app\\u2028"``), ASCII only: a key that is
    not a plain name is shown JSON-escaped, and a value is never shown (it
    may be a secret). List items are numbered from 0.
    """
    stack = [(data, (root,))]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            found = _SLS_UNSAFE.search(value)
            if found:
                return ":".join(path), found.group()
        elif isinstance(value, dict):
            children = []
            for key, item in value.items():
                found = _SLS_UNSAFE.search(key) if isinstance(key, str) else None
                if found:
                    return ":".join(path + (_path_part(key),)), found.group()
                children.append((item, path + (_path_part(key),)))
            stack.extend(reversed(children))
        elif isinstance(value, (list, tuple)):
            stack.extend(reversed([(item, path + (str(index),)) for index, item in enumerate(value)]))
    return None


def _ecma_pattern(validator, pattern, instance, schema):
    """
    JSON Schema's ``pattern`` with ECMA-262's ``$``: the end of the string
    only. The jsonschema library uses Python's ``re.search``, whose ``$`` also
    matches before a final newline, so ``"name\n"`` would pass ``^[a-z]+$``.
    """
    import jsonschema

    if not validator.is_type(instance, "string"):
        return
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    if not re.search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def schema_validator(schema):
    """
    A jsonschema validator for ``schema`` (its ``$schema`` draft) whose
    patterns end where ECMA-262's do. Use it for every check of pillar
    against ``schema/pillar.schema.json``. jsonschema is imported here, not
    at module level, so the writers that import this module do not pay for it.
    """
    import jsonschema

    base = jsonschema.validators.validator_for(schema)
    return jsonschema.validators.extend(base, {"pattern": _ecma_pattern})(schema)
