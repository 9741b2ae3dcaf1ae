"""
The check every opsalt SLS makes of its component's pillar before it
renders a state from it.

A pillar value reaches SLS text only through ``| json`` (docs/security.rst).
Salt's ``json`` filter leaves a few characters raw, and the YAML that reads
the rendered SLS folds U+0085, U+2028 and U+2029 to a space (the state would
get another value than the asset system holds, with the character its
writer refuses gone) and cannot read DEL, the other C1 controls, a lone
surrogate, U+FFFE or U+FFFF at all (the whole SLS would fail with a YAML
error that names no field). So each component's ``map.jinja`` asks
:func:`sls_refusal` first; when it answers, the component's SLS files render
one failing state with that answer (``salt/opsalt/refusal.jinja``) and none
of the component's own states.

The ext_pillar's ``schema:`` option refuses the same characters at the
master, before any minion sees the document.
"""

try:
    import opsalt_validate

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover - reported by __virtual__
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

__virtualname__ = "opsalt_pillar"


def __virtual__():
    if not HAS_HELPERS:
        return (False, f"opsalt_pillar: the opsalt helper modules are missing ({_IMPORT_ERROR})")
    return __virtualname__


def sls_refusal(key):
    """
    Why the top-level pillar key ``key`` cannot be rendered into SLS text,
    or ``''`` when it can (or is absent).

    The answer names the first key or value that holds a character Salt's
    ``| json`` filter passes raw and YAML then folds or cannot read (see the
    module's documentation), by its path and the character's code point. It
    never repeats the value, which may be a secret, and it is ASCII, so it
    passes through SLS text itself.

    CLI Example:

    .. code-block:: bash

        salt '*' opsalt_pillar.sls_refusal pgbouncer
    """
    found = opsalt_validate.sls_unsafe_field(__pillar__.get(key), key)
    if found is None:
        return ""
    path, character = found
    return (
        f"{path}: holds U+{ord(character):04X}, which Salt's | json filter passes raw into "
        "SLS text, where YAML folds it to a space or cannot read it; nothing of "
        f"'{key}' is applied. Remove the character from this host's record in the "
        "asset system (the ext_pillar's schema: option refuses it at the master)."
    )
