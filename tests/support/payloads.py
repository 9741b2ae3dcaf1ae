"""
The injection payload classes of issue 12 ("Tests"): what an asset-system
editor may put into a pillar key or value to turn data into code or into a
second directive. Shared by the injection suites
(``tests/functional/test_pipconf_sls.py``,
``tests/functional/test_injection_matrix.py``).
"""

# A YAML state smuggled into a key or value (issue 12, finding 1).
POISON = "x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny"

PAYLOADS = [
    POISON,
    "x\ry",
    "x\x00y",
    "x\vy",
    "x\fy",
    "x\u0085y",
    "x\u2028y",
    "x\u2029y",
    "x: y",
    "{x}",
    '"x"',
    "'x'",
    "{{ 7 * 7 }}",
    "{% raw %}x",
    "[global]",
    "key = value",
]

# A short readable name per payload class, for test IDs and messages.
PAYLOAD_IDS = [
    "LF-yaml-state",
    "CR",
    "NUL",
    "VT",
    "FF",
    "NEL-U+0085",
    "LS-U+2028",
    "PS-U+2029",
    "colon",
    "brace",
    "double-quote",
    "single-quote",
    "jinja-expression",
    "jinja-statement",
    "ini-section",
    "ini-key-value",
]

# Characters that end a line or a directive somewhere (opsalt_validate's
# _CONTROL: ASCII controls but tab, DEL, C1 controls, U+2028, U+2029).
_CONTROL = {*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029}


def has_control(text):
    """Whether ``text`` holds a character that ends a line or a directive."""
    return any(ord(char) in _CONTROL for char in text)


CONTROL_PAYLOADS = [payload for payload in PAYLOADS if has_control(payload)]
