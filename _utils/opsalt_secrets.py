"""
Secret redaction shared by every opsalt module. Anything that may end up in a
log line, a state's ``changes`` or comment, or an exception goes through here.
"""

import re
import urllib.parse

REDACTED = "***"

_SENSITIVE_KEY = re.compile(r"(pass|secret|token|auth|credential|key$)", re.IGNORECASE)


def redact_url(url):
    """
    Return ``url`` with any ``user:password@`` userinfo replaced by ``***@``.
    """
    if not isinstance(url, str) or "@" not in url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


_URL_WITH_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def redact_text(text, secrets=()):
    """
    Remove credentials from free text: ``user:pass@`` in URLs and every
    literal string in ``secrets`` (passwords, tokens) is replaced by ``***``.
    """
    if text is None:
        return text
    text = str(text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(str(secret), REDACTED)
    return _URL_WITH_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)


def is_sensitive_key(key):
    """
    True for mapping keys that name a secret (password, token, secret, ...).
    """
    return bool(_SENSITIVE_KEY.search(str(key)))


def redact_mapping(data):
    """
    Deep copy of ``data`` with values under sensitive keys replaced by ``***``
    and URLs stripped of credentials.
    """
    if isinstance(data, dict):
        return {
            k: (REDACTED if is_sensitive_key(k) and v not in (None, "") else redact_mapping(v))
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [redact_mapping(v) for v in data]
    if isinstance(data, str):
        return redact_text(data)
    return data


def mask_values(data):
    """
    Deep copy of ``data`` with every leaf value but ``None`` replaced by
    ``***``: the structure (keys, list lengths) stays readable. Works on
    every Salt release (3008's ``salt.utils.secret`` is not in 3006/3007).
    """
    if isinstance(data, dict):
        return {k: mask_values(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [mask_values(v) for v in data]
    return data if data is None else REDACTED
