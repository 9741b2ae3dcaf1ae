"""
Keep ``vm.min_free_kbytes``, ``vm.vfs_cache_pressure`` and
``vm.watermark_scale_factor`` set, live and in a sysctl.d file, reporting a
change only when the live value or the file differs (unlike
``sysctl.present``, Salt issue 54937); ``reverted`` undoes it.

.. code-block:: yaml

    vmtune-sysctls-tuned:
      vmtune.tuned:
        - min_free_kbytes: auto
        - burst_kb: 256000
        - vfs_cache_pressure: 200

    vmtune-sysctls-reverted:
      vmtune.reverted: []
"""

from salt.exceptions import CommandExecutionError

try:
    import opsalt_state

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover - reported by __virtual__
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

__virtualname__ = "vmtune"


def __virtual__():
    if not HAS_HELPERS:
        return (False, f"vmtune needs the opsalt helpers ({_IMPORT_ERROR})")
    if "vmtune.plan" not in __salt__:
        return (False, "the vmtune execution module is not available (Linux only)")
    return __virtualname__


def tuned(
    name,
    min_free_kbytes=None,
    vfs_cache_pressure=None,
    watermark_scale_factor=None,
    burst_kb=None,
    max_percent=None,
    allow_zero=False,
    config=None,
    proc_root=None,
):
    """
    Ensure the vm sysctls have these values, live and persisted in ``config``.
    Bad values fail before anything changes.

    name
        A label for the state (not used otherwise).
    min_free_kbytes
        KiB, from 1024 up to ``max_percent`` of MemTotal; or ``auto`` with
        ``burst_kb`` (see ``vmtune.recommend``).
    vfs_cache_pressure
        0 and up; 0 (dentries and inodes never reclaimed) only with ``allow_zero``.
    watermark_scale_factor
        1 to 1000, on kernels that have it (4.6 and newer).
    burst_kb
        With ``min_free_kbytes: auto``: the largest burst allocated at once, in KiB.
    max_percent
        Safety cap for min_free_kbytes, in percent of MemTotal; default and
        upper bound ``opsalt:policy:vmtune:max_percent`` in the minion
        config (5 when unset).
    allow_zero
        Allow ``vfs_cache_pressure: 0`` (the operator's policy must allow
        it too: ``opsalt:policy:vmtune:allow_zero``).
    config
        The sysctl.d file (default the ``vmtune:config`` option or
        ``/etc/sysctl.d/60-opsalt-vmtune.conf``); under ``/etc/sysctl.d``
        unless the operator's policy allows another path.
    proc_root
        Proc tree (default the ``vmtune:proc_root`` option or ``/proc``).

    CLI Example:

    .. code-block:: bash

        salt-call state.single vmtune.tuned vm min_free_kbytes=auto burst_kb=256000 vfs_cache_pressure=200 test=True
    """
    ret = opsalt_state.new_ret(name)
    args = {
        "min_free_kbytes": min_free_kbytes,
        "vfs_cache_pressure": vfs_cache_pressure,
        "watermark_scale_factor": watermark_scale_factor,
        "burst_kb": burst_kb,
        "max_percent": max_percent,
        "allow_zero": allow_zero,
        "config": config,
        "proc_root": proc_root,
    }
    try:
        steps = __salt__["vmtune.plan"](**args)
    except CommandExecutionError as err:
        return opsalt_state.refused(ret, f"invalid or unsafe vmtune settings: {err}")

    changes = dict(steps["live"])
    if steps["file"]["changed"]:
        changes["diff"] = steps["file"]["diff"]
    settings = ", ".join(f"vm.{key} = {value}" for key, value in steps["desired"].items())
    if not changes:
        return opsalt_state.unchanged(ret, f"{settings}, live and in {steps['file']['path']}")
    if __opts__["test"]:
        return opsalt_state.would_change(ret, changes, f"Would set {settings} ({_what(steps)})")

    try:
        done = __salt__["vmtune.apply"](**args)
    except CommandExecutionError as err:
        return opsalt_state.apply_failed(ret, f"vmtune settings: {err}")
    ret["changes"] = changes
    ret["comment"] = f"Set {settings} ({_what(steps)})"
    if done["file"].get("backup"):
        ret["comment"] += f"; previous file kept as {done['file']['backup']}"
    return ret


def reverted(name, config=None, proc_root=None):
    """
    Ensure vmtune no longer tunes this host: the live values go back to
    those the persisted file recorded from before vmtune first changed them,
    and the file is removed (kept as a backup beside it). A file without
    that record (written by hand, or by an opsalt before 2026-11-26) is
    removed and the live values are left; the comment says so. Reports no
    changes once the file is gone.

    name
        A label for the state (not used otherwise).
    config
        The sysctl.d file (default the ``vmtune:config`` option or
        ``/etc/sysctl.d/60-opsalt-vmtune.conf``).
    proc_root
        Proc tree (default the ``vmtune:proc_root`` option or ``/proc``).

    CLI Example:

    .. code-block:: bash

        salt-call state.single vmtune.reverted vm test=True
    """
    ret = opsalt_state.new_ret(name)
    try:
        steps = __salt__["vmtune.plan_revert"](config=config, proc_root=proc_root)
    except CommandExecutionError as err:
        return opsalt_state.refused(ret, f"cannot revert the vmtune settings: {err}")
    path = steps["file"]["path"]
    changes = dict(steps["live"])
    if steps["file"]["exists"]:
        changes["file"] = {"removed": path}
    if not changes:
        ret["comment"] = f"{path} is absent: vmtune does not tune this host"
        return ret
    left = (
        ""
        if steps["recorded"] is not None
        else (
            f"; {path} has no record of the values before vmtune, so the live values stay until the next boot"
        )
    )
    if __opts__["test"]:
        return opsalt_state.would_change(
            ret, changes, f"Would revert the vmtune settings{_reverted(steps)}{left}"
        )
    try:
        done = __salt__["vmtune.revert"](config=config, proc_root=proc_root)
    except CommandExecutionError as err:
        return opsalt_state.apply_failed(ret, f"reverting the vmtune settings: {err}")
    ret["changes"] = changes
    ret["comment"] = f"Reverted the vmtune settings{_reverted(steps)}{left}"
    if done["file"].get("backup"):
        ret["comment"] += f"; previous file kept as {done['file']['backup']}"
    return ret


def _reverted(steps):
    parts = [f"{name} = {change['new']}" for name, change in steps["live"].items()]
    if steps["file"]["exists"]:
        parts.append(f"removed {steps['file']['path']}")
    return f" ({'; '.join(parts)})" if parts else ""


def _what(steps):
    parts = []
    if steps["live"]:
        parts.append("live: " + ", ".join(steps["live"]))
    if steps["file"]["changed"]:
        parts.append(f"file {steps['file']['path']}")
    return "; ".join(parts)
