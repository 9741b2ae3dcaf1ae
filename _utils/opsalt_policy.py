"""
Operator policy: what the asset system may ask for.

Pillar values that decide where root writes, how a service authenticates,
which index hosts are trusted, or a safety limit, are checked against a
policy the asset system cannot write: ``opsalt:policy`` in the minion's own
configuration (``/etc/salt/minion.d/*.conf``), read by each execution module
with :func:`read` (``config.get`` with pillar, grains and master config
left out). Each component passes its strict defaults; the operator's policy
widens them::

    # /etc/salt/minion.d/opsalt-policy.conf
    opsalt:
      policy:
        allowed_paths: [/srv/app]          # every component may also write here
        pgbouncer:
          allowed_paths: [/etc/pgbouncer-b]
          auth_types: [scram-sha-256, md5, hba]
        vmtune:
          max_percent: 8

Plain Python (no Salt dunders) so it is importable both from the installed
package and as a synced ``_utils`` module.
"""

import os

CONFIG_KEY = "opsalt:policy"


class PolicyError(ValueError):
    """A pillar value outside the operator's policy."""


def read(salt_funcs):
    """
    Return the operator's policy dict from the minion configuration only.
    ``salt_funcs`` is the module's ``__salt__``.
    """
    policy = salt_funcs["config.get"](CONFIG_KEY, {}, omit_pillar=True, omit_grains=True, omit_master=True)
    return policy if isinstance(policy, dict) else {}


def operator_config(salt_funcs, key, default=None):
    """
    ``key`` (e.g. ``opsalt:backups:keep``) from the minion configuration
    only, as :func:`read` reads the policy: an operator setting the asset
    system cannot write.
    """
    return salt_funcs["config.get"](key, default, omit_pillar=True, omit_grains=True, omit_master=True)


def _component(policy, component):
    section = (policy or {}).get(component) or {}
    return section if isinstance(section, dict) else {}


def allowed_roots(policy, component, defaults):
    """
    The directory prefixes ``component`` may write under: its ``defaults``,
    ``opsalt:policy:allowed_paths`` and ``opsalt:policy:<component>:allowed_paths``.
    """
    roots = list(defaults)
    for extra in (
        (policy or {}).get("allowed_paths") or [],
        _component(policy, component).get("allowed_paths") or [],
    ):
        roots.extend(str(root) for root in extra)
    return [os.path.normpath(root) for root in roots]


def _under(path, root):
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def check_path(path, what, component, defaults, policy):
    """
    Refuse ``path`` (already validated as absolute and normalised) unless it
    lies under one of :func:`allowed_roots`; the message names the key and
    the policy to change.
    """
    roots = allowed_roots(policy, component, defaults)
    if not any(_under(path, root) for root in roots):
        raise PolicyError(
            f"{what}: {path!r} is outside the allowed paths ({', '.join(roots)}); an operator can "
            f"allow it with opsalt:policy:{component}:allowed_paths (or opsalt:policy:allowed_paths) "
            "in the minion configuration"
        )
    return path


def check_choice(value, what, component, key, defaults, policy):
    """
    Refuse ``value`` unless it is in ``opsalt:policy:<component>:<key>``
    (a list), or in ``defaults`` when the policy does not set it.
    """
    allowed = _component(policy, component).get(key)
    allowed = list(defaults) if allowed is None else [str(item) for item in allowed]
    if str(value) not in allowed:
        raise PolicyError(
            f"{what}: {value!r} is not allowed by policy (allowed: {', '.join(allowed) or 'none'}); "
            f"an operator can change opsalt:policy:{component}:{key} in the minion configuration"
        )
    return value


def limit(component, key, default, policy):
    """The operator's value of ``opsalt:policy:<component>:<key>``, or ``default``."""
    value = _component(policy, component).get(key)
    return default if value is None else value


def check_max(value, what, component, key, default, policy):
    """Refuse a number above ``opsalt:policy:<component>:<key>`` (or ``default``)."""
    bound = limit(component, key, default, policy)
    if value is not None and float(value) > float(bound):
        raise PolicyError(
            f"{what}: {value!r} is above the policy limit {bound!r}; an operator can raise "
            f"opsalt:policy:{component}:{key} in the minion configuration"
        )
    return value


def allowed(policy, component, key, default=False):
    """A boolean switch ``opsalt:policy:<component>:<key>`` (``default`` when unset)."""
    return bool(limit(component, key, default, policy))
