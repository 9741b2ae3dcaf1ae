"""
Defence against direct-reclaim CPU storms: read the zone watermarks and
reclaim counters, recommend ``vm.min_free_kbytes`` (and
``vm.watermark_scale_factor``) for a workload's allocation bursts, apply
them live and persistently, and revert them to the values from before.

Why: when an allocation takes a zone's free pages below its ``min``
watermark, the allocating process reclaims and compacts memory itself
(direct reclaim) and can spin for seconds on a lock. kswapd starts at the
``low`` watermark, so the ``min``-to-``low`` gap must absorb the largest burst
the workload allocates at once.

Every reader takes the proc root from ``proc_root`` or the ``vmtune:proc_root``
config option (minion config, grains or pillar, read with ``config.get`` like
every component's nested keys; default ``/proc``), so a test can point it at a
fixture tree. The flat keys of older releases (``vmtune.proc_root``,
``vmtune.config``) still work and log a deprecation warning.

Pillar is data, policy is the operator's (docs/components/vmtune.rst,
"Security"): ``config`` and ``proc_root`` must be absolute, normalised paths
under the operator's allowed paths (``/etc/sysctl.d`` and ``/proc`` by
default, widened by ``opsalt:policy:allowed_paths`` and
``opsalt:policy:vmtune:allowed_paths`` in the minion configuration), for
reading as for writing. Each file is read without following a link at its
name, never blocking on a FIFO, and only if it is a small regular file. The
safety limits come from the same policy: ``opsalt:policy:vmtune:max_percent``
(default 5) bounds ``max_percent``, and ``vfs_cache_pressure: 0`` needs
``opsalt:policy:vmtune:allow_zero: true`` as well as ``allow_zero``.
"""

import logging
import math
import os
import time

import salt.utils.platform
from salt.exceptions import CommandExecutionError

try:
    import opsalt_files
    import opsalt_policy
    import opsalt_validate
    import opsalt_vmtune

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover - reported by __virtual__
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "vmtune"

DEFAULT_CONFIG = "/etc/sysctl.d/60-opsalt-vmtune.conf"
# Where vmtune may read and write its config unless the operator's policy
# widens it (proc_root's default, /proc, is opsalt_vmtune.POLICY_PROC_ROOTS).
POLICY_CONFIG_ROOTS = ("/etc/sysctl.d",)
# The default of opsalt:policy:vmtune:max_percent.
POLICY_MAX_PERCENT = 5
MANAGED = ("min_free_kbytes", "vfs_cache_pressure", "watermark_scale_factor")
# Below this the kernel is prone to deadlock (Documentation/admin-guide/sysctl/vm.rst).
MIN_FREE_KBYTES_FLOOR = 1024
# Older kernels accept at most 1000 (10% of memory per gap); newer ones 3000.
WATERMARK_SCALE_FACTOR_MAX = 1000
KERNEL_DEFAULT_WATERMARK_SCALE_FACTOR = 10
# Clamp of the kernel's own default (mm/page_alloc.c, init_per_zone_wmark_min).
KERNEL_DEFAULT_CLAMP = (128, 262144)
# The persisted file's record of the live values before vmtune changed them.
BEFORE_MARK = "# before opsalt:"


def __virtual__():
    if not HAS_HELPERS:
        return (
            False,
            f"vmtune needs the opsalt helpers ({_IMPORT_ERROR}); pip install opsalt or saltutil.sync_all",
        )
    if not salt.utils.platform.is_linux():
        return (False, "vmtune reads Linux /proc (zoneinfo, vmstat) and works on Linux only")
    return __virtualname__


# -- plumbing ---------------------------------------------------------------


def _option(key, default):
    """
    The config option ``vmtune:<key>`` (nested, like every component), else
    the flat ``vmtune.<key>`` of older releases with a deprecation warning,
    else ``default``.
    """
    value = __salt__["config.get"](f"vmtune:{key}", None)
    if value is None:
        value = __salt__["config.get"](f"vmtune.{key}", None)
        if value is not None:
            log.warning(
                "the config option vmtune.%s is deprecated: write it nested, as vmtune:%s (the pillar's "
                "vmtune: %s: or the minion config's vmtune: {%s: ...})",
                key,
                key,
                key,
                key,
            )
    return default if value is None else value


def _checked(check, *args):
    """``check(*args)``, a validation or policy error turned into a message for people."""
    try:
        return check(*args)
    except ValueError as err:
        raise CommandExecutionError(str(err)) from err


def _policy():
    return opsalt_policy.read(__salt__)


def _proc_root(proc_root=None, writing=False):
    """
    The proc tree, validated and within the operator's allowed paths (read
    or written, the pillar cannot choose where root looks); where vmtune
    will write sysctls under it (``writing``), also a proc tree.
    """
    root = proc_root or _option("proc_root", opsalt_vmtune.DEFAULT_PROC_ROOT)
    _checked(opsalt_vmtune.check_proc_root, root, __salt__)
    if writing:
        if not os.path.isdir(os.path.join(root, "sys", "vm")):
            # else each sysctl under it would be reported "read-only"
            raise CommandExecutionError(f"vmtune:proc_root: {root!r} is not a Linux proc tree (no sys/vm)")
    return root


def _config_path(config=None):
    path = config or _option("config", DEFAULT_CONFIG)
    _checked(opsalt_validate.abs_path, path, "vmtune:config")
    _checked(opsalt_policy.check_path, path, "vmtune:config", "vmtune", POLICY_CONFIG_ROOTS, _policy())
    return path


def _read(reader, root, *args):
    try:
        return reader(*args, proc_root=root) if args else reader(root)
    except opsalt_vmtune.UnsafePathError as err:
        # A FIFO, link, device or huge file: the message names the file and
        # why, never what it holds.
        raise CommandExecutionError(f"{err} (vmtune:proc_root is {root}; is it a Linux proc tree?)") from err
    except OSError as err:
        raise CommandExecutionError(
            f"cannot read {err.filename or root}: {err.strerror}; is vmtune:proc_root ({root}) a Linux proc tree?"
        ) from err
    except (ValueError, IndexError) as err:
        # The parser's message quotes the file's content: never repeat it
        # (under a proc_root the pillar chose, a link may reach a root-only file).
        raise CommandExecutionError(
            f"cannot parse a file under {root} ({type(err).__name__}); is vmtune:proc_root a Linux proc tree?"
        ) from None


def _page_kib():
    return opsalt_vmtune.page_size() // 1024


def _integer(name, value, minimum=None):
    """
    ``value`` as an int, or an error naming ``name``; numeric strings from the
    command line are accepted, floats and booleans are not.
    """
    if isinstance(value, bool):
        raise CommandExecutionError(f"{name} must be an integer, not {value!r}")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise CommandExecutionError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise CommandExecutionError(f"{name} must be at least {minimum}, not {value}")
    return value


def _percent(value, policy=None):
    """
    ``max_percent`` as a number above 0 and at most 50; ``None`` is the
    operator's limit. With ``policy`` (where vmtune will write) a value above
    ``opsalt:policy:vmtune:max_percent`` is refused: pillar cannot widen it.
    """
    if value is None:
        value = opsalt_policy.limit("vmtune", "max_percent", POLICY_MAX_PERCENT, policy or _policy())
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise CommandExecutionError(f"max_percent must be a number, not {value!r}") from err
    if not 0 < value <= 50:
        raise CommandExecutionError(f"max_percent must be above 0 and at most 50, not {value}")
    if policy is not None:
        _checked(
            opsalt_policy.check_max,
            value,
            "vmtune:max_percent",
            "vmtune",
            "max_percent",
            POLICY_MAX_PERCENT,
            policy,
        )
    return value


# -- readers ----------------------------------------------------------------


def zoneinfo(proc_root=None):
    """
    Free pages and watermarks of every node and zone, in pages and KiB.

    proc_root
        Proc tree to read; default the ``vmtune:proc_root`` config option or
        ``/proc``. Must be ``/proc`` or under the operator's allowed paths.

    CLI Example:

    .. code-block:: bash

        salt '*' vmtune.zoneinfo
    """
    root = _proc_root(proc_root)
    page_kib = _page_kib()
    result = []
    for zone in _read(opsalt_vmtune.read_zoneinfo, root):
        pages = {
            key: zone[key]
            for key in ("free", "min", "low", "high", "managed", "boost", "promo")
            if key in zone
        }
        result.append(
            {
                "node": zone["node"],
                "zone": zone["zone"],
                "pages": pages,
                "kib": {key: value * page_kib for key, value in pages.items()},
            }
        )
    return result


def _lowmem_zones(zones):
    return [z for z in zones if z.get("managed") and z["zone"] not in opsalt_vmtune.NON_LOWMEM_ZONES]


def _primary_zones(zones):
    """
    The largest lowmem zone of each node: where ordinary allocations land
    first. The small DMA/DMA32 zones behind them are fenced off by
    lowmem_reserve, so their tiny gaps say nothing about a workload's bursts.
    """
    primary = {}
    for zone in _lowmem_zones(zones):
        if zone["managed"] > primary.get(zone["node"], {}).get("managed", 0):
            primary[zone["node"]] = zone
    return [primary[node] for node in sorted(primary)]


def gaps(proc_root=None):
    """
    The min-to-low and low-to-high gaps of each populated zone in KiB, and
    the smallest across the primary zones (the largest lowmem zone of each
    node, where ordinary allocations land; ``primary`` marks them).

    proc_root
        Proc tree to read; default the ``vmtune:proc_root`` config option or
        ``/proc``. Must be ``/proc`` or under the operator's allowed paths.

    CLI Example:

    .. code-block:: bash

        salt '*' vmtune.gaps
    """
    root = _proc_root(proc_root)
    page_kib = _page_kib()
    zones = [z for z in _read(opsalt_vmtune.read_zoneinfo, root) if z.get("managed")]
    primary = _primary_zones(zones)
    if not primary:
        raise CommandExecutionError(f"no populated lowmem zone in {root}/zoneinfo")
    rows = []
    for zone in zones:
        rows.append(
            {
                "node": zone["node"],
                "zone": zone["zone"],
                "min_to_low_kib": (zone["low"] - zone["min"]) * page_kib,
                "low_to_high_kib": (zone["high"] - zone["low"]) * page_kib,
                "free_above_min_kib": (zone["free"] - zone["min"]) * page_kib,
                "primary": any(zone is p for p in primary),
            }
        )
    candidates = [r for r in rows if r["primary"]]
    smallest = min(candidates, key=lambda r: (r["min_to_low_kib"], r["node"]))
    return {
        "zones": rows,
        "smallest_min_to_low_kib": smallest["min_to_low_kib"],
        "smallest_low_to_high_kib": min(r["low_to_high_kib"] for r in candidates),
        "smallest_zone": f"node {smallest['node']} {smallest['zone']}",
    }


def _reclaim_snapshot(root):
    return opsalt_vmtune.reclaim_counters(_read(opsalt_vmtune.read_vmstat, root))


def reclaim_stats(interval=1, proc_root=None):
    """
    Reclaim counters from vmstat (direct scan and steal, allocation stalls
    summed over zones, compaction stalls, kswapd) and their per-second rates
    over ``interval`` seconds. The same keys on old kernels (plain
    ``allocstall``, per-zone ``pgscan_direct_*``) and new ones
    (``allocstall_<zone>``); a counter the kernel lacks is ``None``.

    interval
        Seconds between the two samples (default 1; 0 gives counters only).
    proc_root
        Proc tree to read; default the ``vmtune:proc_root`` config option or
        ``/proc``. Must be ``/proc`` or under the operator's allowed paths.

    CLI Example:

    .. code-block:: bash

        salt '*' vmtune.reclaim_stats interval=5
    """
    root = _proc_root(proc_root)
    interval = float(interval)
    if interval < 0 or interval > 300:
        raise CommandExecutionError(f"interval must be between 0 and 300 seconds, not {interval}")
    before = _reclaim_snapshot(root)
    if not interval:
        return {"interval": 0, "counters": before, "rates": None}
    started = time.monotonic()
    time.sleep(interval)
    after = _reclaim_snapshot(root)
    return {
        "interval": interval,
        "counters": after,
        "rates": opsalt_vmtune.rates(before, after, time.monotonic() - started),
    }


def _read_persisted(path):
    try:
        text = opsalt_files.read_regular(path)
    except opsalt_files.UnsafePathError as err:
        raise CommandExecutionError(f"vmtune:config: {err}") from err
    except OSError as err:
        raise CommandExecutionError(f"vmtune:config: cannot read {path}: {err.strerror}") from err
    values = {}
    for line in (text or "").splitlines():
        line = line.split("#", 1)[0].strip()
        key, sep, value = line.partition("=")
        if sep and key.strip().startswith("vm."):
            try:
                values[key.strip()] = int(value.strip())
            except ValueError:
                values[key.strip()] = value.strip()
    return text, values


def current(config=None, proc_root=None):
    """
    The live values of the managed sysctls (``None`` where the kernel lacks
    one) and what the persisted file says.

    config
        The sysctl.d file vmtune persists to; default the ``vmtune:config``
        config option or ``/etc/sysctl.d/60-opsalt-vmtune.conf``. Must lie
        under ``/etc/sysctl.d`` or the operator's allowed paths.
    proc_root
        Proc tree to read; default the ``vmtune:proc_root`` config option or
        ``/proc``. Must be ``/proc`` or under the operator's allowed paths.

    CLI Example:

    .. code-block:: bash

        salt '*' vmtune.current
    """
    root = _proc_root(proc_root)
    path = _config_path(config)
    live = {}
    for key in MANAGED:
        live[f"vm.{key}"] = _read(opsalt_vmtune.read_sysctl, root, f"vm.{key}")
    text, persisted = _read_persisted(path)
    return {"live": live, "persisted": persisted, "config": path, "config_exists": text is not None}


# -- recommendation ---------------------------------------------------------


def _zone_gap_kib(zone, lowmem, min_free_kbytes, wsf, page_kib):
    """
    The min-to-low gap the kernel would give ``zone`` (mm/page_alloc.c,
    __setup_per_zone_wmarks); ``wsf`` None means a kernel before 4.6.
    """
    zone_min = (min_free_kbytes // page_kib) * zone["managed"] // lowmem
    gap = zone_min >> 2
    if wsf is not None:
        gap = max(gap, zone["managed"] * wsf // 10000)
    return gap * page_kib


def kernel_default_min_free_kbytes(proc_root=None):
    """
    What the kernel would pick for ``vm.min_free_kbytes`` on this host:
    ``int_sqrt(lowmem_kbytes * 16)`` clamped to 128..262144 KiB (lowmem taken
    as the managed pages of the lowmem zones; khugepaged may raise it).

    CLI Example:

    .. code-block:: bash

        salt '*' vmtune.kernel_default_min_free_kbytes
    """
    zones = _lowmem_zones(_read(opsalt_vmtune.read_zoneinfo, _proc_root(proc_root)))
    lowmem_kb = sum(z["managed"] for z in zones) * _page_kib()
    low, high = KERNEL_DEFAULT_CLAMP
    return min(high, max(low, math.isqrt(lowmem_kb * 16)))


def recommend(burst_kb, max_percent=None, proc_root=None):
    """
    The ``vm.min_free_kbytes`` (and, on kernels that have it,
    ``vm.watermark_scale_factor``) whose min-to-low gap covers ``burst_kb``
    in the largest zone of every node, bounded by ``max_percent`` of
    MemTotal. Returns the numbers, the predicted gaps and the reasoning.

    min_free_kbytes alone is preferred (it was the fix on the host this was
    written for); watermark_scale_factor is raised only when min_free_kbytes
    would pass the cap.

    burst_kb
        The most memory the workload allocates at once, in KiB (e.g. 25 MB
        per query times the queries that run together).
    max_percent
        Safety cap: min_free_kbytes at most this percentage of MemTotal
        (default the operator's ``opsalt:policy:vmtune:max_percent``, else 5;
        the kernel reserves that memory, too much OOMs the host).
    proc_root
        Proc tree to read; default the ``vmtune:proc_root`` config option or
        ``/proc``. Must be ``/proc`` or under the operator's allowed paths.

    CLI Example:

    .. code-block:: bash

        salt '*' vmtune.recommend burst_kb=256000
    """
    burst_kb = _integer("burst_kb", burst_kb, minimum=1)
    max_percent = _percent(max_percent)
    root = _proc_root(proc_root)
    page_kib = _page_kib()
    zones = _lowmem_zones(_read(opsalt_vmtune.read_zoneinfo, root))
    targets = _primary_zones(zones)
    if not targets:
        raise CommandExecutionError(f"no populated lowmem zone in {root}/zoneinfo")
    lowmem = sum(z["managed"] for z in zones)
    mem_total_kb = _read(opsalt_vmtune.read_meminfo, root).get("MemTotal")
    if not mem_total_kb:
        raise CommandExecutionError(f"no MemTotal in {root}/meminfo")
    cap_kb = int(mem_total_kb * max_percent / 100) // 1024 * 1024
    default_kb = kernel_default_min_free_kbytes(proc_root=root)
    floor_kb = max(default_kb, MIN_FREE_KBYTES_FLOOR)
    mfk_now = _read(opsalt_vmtune.read_sysctl, root, "vm.min_free_kbytes")
    wsf_now = _read(opsalt_vmtune.read_sysctl, root, "vm.watermark_scale_factor")

    def smallest_gap(mfk, wsf):
        return min(_zone_gap_kib(z, lowmem, mfk, wsf, page_kib) for z in targets)

    reasoning = [
        "target zones (the largest of each node): "
        + ", ".join(f"node {z['node']} {z['zone']}" for z in targets),
        f"now: min_free_kbytes {mfk_now}, watermark_scale_factor "
        f"{'not in this kernel' if wsf_now is None else wsf_now}, smallest min-to-low gap "
        f"{smallest_gap(mfk_now, wsf_now)} KiB for a burst of {burst_kb} KiB",
        f"cap {max_percent:g}% of MemTotal {mem_total_kb} KiB = {cap_kb} KiB; kernel default {default_kb} KiB",
    ]
    mfk, wsf = mfk_now, wsf_now
    if floor_kb <= mfk_now <= cap_kb and smallest_gap(mfk_now, wsf_now) >= burst_kb:
        reasoning.append("the current settings already cover the burst: no change")
    else:
        # Each 1024 KiB step adds about share/4 of it to the target's gap, so
        # start from the closed-form estimate and step up to the exact value.
        estimate = max(4 * burst_kb * lowmem // z["managed"] for z in targets)
        mfk = max(floor_kb, (estimate // 1024 - 2) * 1024)
        while smallest_gap(mfk, wsf_now) < burst_kb:
            mfk += 1024
        if mfk <= cap_kb:
            reasoning.append(f"min_free_kbytes {mfk} makes every target gap at least {burst_kb} KiB")
        else:
            reasoning.append(f"min_free_kbytes alone would need {mfk} KiB, above the cap of {cap_kb} KiB")
            mfk = min(max(mfk_now, floor_kb), cap_kb)
            if wsf_now is not None:
                burst_pages = -(-burst_kb // page_kib)
                wsf = max(-(-burst_pages * 10000 // z["managed"]) for z in targets)
                wsf_cap = min(WATERMARK_SCALE_FACTOR_MAX, int(max_percent * 100))
                if wsf <= wsf_cap:
                    reasoning.append(
                        f"watermark_scale_factor {wsf} widens the gaps instead (min_free_kbytes {mfk})"
                    )
                else:
                    reasoning.append(f"watermark_scale_factor would need {wsf}, above its cap of {wsf_cap}")
                    wsf = wsf_cap
            else:
                reasoning.append("this kernel has no watermark_scale_factor (Linux 4.6+) to widen the gaps")
    predicted = [
        {"node": z["node"], "zone": z["zone"], "min_to_low_kib": _zone_gap_kib(z, lowmem, mfk, wsf, page_kib)}
        for z in targets
    ]
    covers = min(p["min_to_low_kib"] for p in predicted) >= burst_kb
    if not covers:
        reasoning.append("the burst cannot be covered within the cap: raise max_percent or lower burst_kb")
    return {
        "burst_kb": burst_kb,
        "max_percent": max_percent,
        "mem_total_kb": mem_total_kb,
        "cap_kb": cap_kb,
        "kernel_default_min_free_kbytes": default_kb,
        "current": {"min_free_kbytes": mfk_now, "watermark_scale_factor": wsf_now},
        "min_free_kbytes": mfk,
        "watermark_scale_factor": wsf,
        "predicted": predicted,
        "covers_burst": covers,
        "reasoning": reasoning,
    }


# -- planning and applying --------------------------------------------------


def _render(desired, before=None):
    lines = [
        "# Managed by Salt (opsalt vmtune): local edits are overwritten.",
        "# Against direct-reclaim storms; see `salt-call vmtune.gaps`.",
    ]
    if before:
        # what vmtune.revert (and the vmtune.clean SLS) puts back live
        lines.append(
            f"{BEFORE_MARK} " + " ".join(f"vm.{key}={before[key]}" for key in MANAGED if key in before)
        )
    lines += [f"vm.{key} = {desired[key]}" for key in MANAGED if key in desired]
    return "\n".join(lines) + "\n"


def _recorded_before(text):
    """
    The live values the file recorded from before vmtune first changed them,
    or ``None`` when it has no such record (a file written by hand or by an
    older opsalt).
    """
    for line in (text or "").splitlines():
        if line.startswith(BEFORE_MARK):
            recorded = {}
            for item in line[len(BEFORE_MARK) :].split():
                key, sep, value = item.partition("=")
                if sep and key[len("vm.") :] in MANAGED and value.isdigit():
                    recorded[key[len("vm.") :]] = int(value)
            return recorded
    return None


def _before(old_text, desired, root):
    """
    The record to keep in the file: the recorded values, plus the live value
    of each newly managed sysctl (not changed by vmtune yet). ``None`` for an
    existing file without a record: its live values may be vmtune's own.
    """
    recorded = _recorded_before(old_text)
    if old_text is not None and recorded is None:
        return None
    before = dict(recorded or {})
    for key in desired:
        if key not in before:
            value = _read(opsalt_vmtune.read_sysctl, root, f"vm.{key}")
            if value is not None:
                before[key] = value
    return before


def _check_zero_allowed(allow_zero, policy):
    """vfs_cache_pressure 0 needs the request and the operator's policy."""
    if not allow_zero:
        raise CommandExecutionError(
            "vfs_cache_pressure 0 means dentries and inodes are never reclaimed (out-of-memory risk); "
            "set allow_zero: true if that is really meant"
        )
    if not opsalt_policy.allowed(policy, "vmtune", "allow_zero"):
        raise CommandExecutionError(
            "vmtune:vfs_cache_pressure: 0 is not allowed by policy (allow_zero is the operator's safety "
            "limit); an operator can set opsalt:policy:vmtune:allow_zero: true in the minion configuration"
        )


def _validate(
    root, min_free_kbytes, vfs_cache_pressure, watermark_scale_factor, burst_kb, max_percent, allow_zero
):
    """
    The desired values, checked against the operator's policy; raises
    before anything is changed.
    """
    desired = {}
    reasoning = None
    policy = _policy()
    max_percent = _percent(max_percent, policy)
    if min_free_kbytes is not None:
        if isinstance(min_free_kbytes, str) and min_free_kbytes.strip().lower() == "auto":
            if burst_kb is None:
                raise CommandExecutionError("min_free_kbytes 'auto' needs burst_kb, the largest burst in KiB")
            advice = recommend(burst_kb, max_percent=max_percent, proc_root=root)
            if not advice["covers_burst"]:
                raise CommandExecutionError("; ".join(advice["reasoning"]))
            desired["min_free_kbytes"] = advice["min_free_kbytes"]
            # Persist a non-default scale factor the advice relies on, so the
            # next run (which then sees it live) still manages it.
            if watermark_scale_factor is None and advice["watermark_scale_factor"] not in (
                None,
                KERNEL_DEFAULT_WATERMARK_SCALE_FACTOR,
            ):
                watermark_scale_factor = advice["watermark_scale_factor"]
            reasoning = advice["reasoning"]
        else:
            desired["min_free_kbytes"] = _integer("min_free_kbytes", min_free_kbytes, minimum=0)
        value = desired["min_free_kbytes"]
        if value < MIN_FREE_KBYTES_FLOOR:
            raise CommandExecutionError(
                f"min_free_kbytes {value} is below {MIN_FREE_KBYTES_FLOOR}: the kernel is prone to deadlock there"
            )
        mem_total_kb = _read(opsalt_vmtune.read_meminfo, root).get("MemTotal") or 0
        cap_kb = int(mem_total_kb * max_percent / 100)
        if value > cap_kb:
            raise CommandExecutionError(
                f"min_free_kbytes {value} is above {max_percent:g}% of MemTotal ({cap_kb} KiB): the kernel would "
                "reserve that memory and could OOM the host at once; lower it or raise max_percent"
            )
    elif burst_kb is not None:
        raise CommandExecutionError("burst_kb is only used with min_free_kbytes: auto")
    if vfs_cache_pressure is not None:
        value = _integer("vfs_cache_pressure", vfs_cache_pressure, minimum=0)
        if value == 0:
            _check_zero_allowed(allow_zero, policy)
        desired["vfs_cache_pressure"] = value
    if watermark_scale_factor is not None:
        value = _integer("watermark_scale_factor", watermark_scale_factor, minimum=1)
        if value > WATERMARK_SCALE_FACTOR_MAX:
            raise CommandExecutionError(
                f"watermark_scale_factor {value} is above {WATERMARK_SCALE_FACTOR_MAX} (10% of memory per gap)"
            )
        if _read(opsalt_vmtune.read_sysctl, root, "vm.watermark_scale_factor") is None:
            raise CommandExecutionError(
                "this kernel has no vm.watermark_scale_factor (it came with Linux 4.6); use min_free_kbytes"
            )
        desired["watermark_scale_factor"] = value
    if not desired:
        raise CommandExecutionError(
            "nothing to tune: give min_free_kbytes, vfs_cache_pressure or watermark_scale_factor"
        )
    return desired, reasoning


def plan(
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
    Validate the desired values and work out what :func:`apply` would change,
    without changing anything: ``desired``, ``live`` (``{sysctl: {old,
    new}}`` for each live value that differs), ``file`` (path, whether it
    changes, unified diff), ``before`` (the live values from before vmtune
    first changed them, which the file records for :func:`revert`; ``None``
    when an existing file has no record) and, for ``auto``, the
    ``reasoning``.

    min_free_kbytes
        KiB (1024 up to ``max_percent`` of MemTotal), or ``auto`` with ``burst_kb``.
    vfs_cache_pressure
        0 and up; 0 only with ``allow_zero``.
    watermark_scale_factor
        1 to 1000 (kernels 4.6 and newer).
    burst_kb
        For ``auto``: the largest burst the workload allocates at once, in KiB.
    max_percent
        Safety cap for min_free_kbytes in percent of MemTotal; default and
        upper bound the operator's ``opsalt:policy:vmtune:max_percent`` (5
        when unset).
    allow_zero
        Allow ``vfs_cache_pressure: 0`` (also needs
        ``opsalt:policy:vmtune:allow_zero: true`` in the minion config).
    config
        The sysctl.d file to persist to; default the ``vmtune:config`` config
        option or ``/etc/sysctl.d/60-opsalt-vmtune.conf``. Must lie under
        ``/etc/sysctl.d`` or the operator's allowed paths.
    proc_root
        Proc tree; default the ``vmtune:proc_root`` config option or
        ``/proc``. Must be ``/proc`` or under the operator's allowed paths.

    CLI Example:

    .. code-block:: bash

        salt '*' vmtune.plan min_free_kbytes=auto burst_kb=256000 vfs_cache_pressure=200
    """
    root = _proc_root(proc_root, writing=True)
    path = _config_path(config)
    desired, reasoning = _validate(
        root, min_free_kbytes, vfs_cache_pressure, watermark_scale_factor, burst_kb, max_percent, allow_zero
    )
    live = {}
    for key, value in desired.items():
        name = f"vm.{key}"
        old = _read(opsalt_vmtune.read_sysctl, root, name)
        if old != value:
            _require_writable(name, root, f"cannot set {name}; tune it on the host")
            live[name] = {"old": old, "new": value}
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise CommandExecutionError(
            f"the directory of {path} does not exist; create it or choose another config"
        )
    old_text, _values = _read_persisted(path)
    before = _before(old_text, desired, root)
    new_text = _render(desired, before)
    result = {
        "desired": desired,
        "before": before,
        "live": live,
        "file": {
            "path": path,
            "changed": old_text != new_text,
            "diff": opsalt_files.unified_diff(old_text, new_text, path) if old_text != new_text else "",
        },
    }
    if reasoning is not None:
        result["reasoning"] = reasoning
    return result


def _require_writable(name, root, consequence):
    if not opsalt_vmtune.sysctl_writable(name, root):
        raise CommandExecutionError(
            f"{opsalt_vmtune.sysctl_path(name, root)} is read-only (a container, or not root): {consequence}"
        )


def _restore(written, root):
    for name, old in reversed(written):
        try:
            opsalt_vmtune.write_sysctl(name, old, root)
        except (OSError, opsalt_vmtune.UnsafePathError):
            pass  # best effort: the error raised next names what was set


def _write_live(changes, root, then=""):
    """
    Write each ``{sysctl: {old, new}}`` live, all or nothing: when the kernel
    refuses one, those already written get their old values back and the
    error names them (``then`` is added to its message). Returns ``[(sysctl,
    old)]`` as written.
    """
    written = []
    for name, change in changes.items():
        try:
            opsalt_vmtune.write_sysctl(name, change["new"], root)
        except (OSError, opsalt_vmtune.UnsafePathError) as err:
            _restore(written, root)
            setting = f"{name} = {change['new']}"
            why = (
                f"the kernel refused {setting}: {err.strerror}"
                if isinstance(err, OSError)
                else f"{setting} not set: {err}"
            )
            raise CommandExecutionError(
                f"{why}; "
                + ("restored " + ", ".join(n for n, _old in written) if written else "nothing was changed")
                + then
            ) from err
        written.append((name, change["old"]))
    return written


def apply(
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
    Set the values live and persist them in ``config`` (atomically, the old
    file backed up). Everything is validated first (see :func:`plan`, same
    arguments); if a live write or the file write fails, the live values
    already written are put back. Returns the plan that was carried out.

    CLI Example:

    .. code-block:: bash

        salt '*' vmtune.apply min_free_kbytes=1081344 vfs_cache_pressure=200
    """
    root = _proc_root(proc_root, writing=True)
    keep = opsalt_files.backup_keep(__salt__)
    steps = plan(
        min_free_kbytes,
        vfs_cache_pressure,
        watermark_scale_factor,
        burst_kb,
        max_percent,
        allow_zero,
        config,
        root,
    )
    written = _write_live(steps["live"], root)
    if steps["file"]["changed"]:
        try:
            steps["file"]["backup"] = opsalt_files.atomic_write(
                steps["file"]["path"], _render(steps["desired"], steps["before"]), keep_backups=keep
            )
        except OSError as err:
            # Live values the file does not hold would be lost at reboot.
            _restore(written, root)
            raise CommandExecutionError(
                f"writing {steps['file']['path']} failed: {err.strerror}; live values put back"
            ) from err
    return steps


def plan_revert(config=None, proc_root=None):
    """
    What :func:`revert` would do, without changing anything: ``live``
    (``{sysctl: {old, new}}`` for each live value that differs from the
    value recorded before vmtune first changed it), ``file`` (path, whether
    it exists) and ``recorded`` (the record, or ``None`` when the file has
    none: then the live values are left as they are).

    CLI Example:

    .. code-block:: bash

        salt '*' vmtune.plan_revert
    """
    root = _proc_root(proc_root, writing=True)
    path = _config_path(config)
    text, _values = _read_persisted(path)
    recorded = _recorded_before(text)
    live = {}
    for key, value in (recorded or {}).items():
        name = f"vm.{key}"
        old = _read(opsalt_vmtune.read_sysctl, root, name)
        if old is not None and old != value:
            _require_writable(name, root, f"cannot put {name} back; revert it on the host")
            live[name] = {"old": old, "new": value}
    return {"live": live, "file": {"path": path, "exists": text is not None}, "recorded": recorded}


def revert(config=None, proc_root=None):
    """
    Stop tuning: put the live values back to what the persisted file
    recorded from before vmtune first changed them, then remove the file
    (kept as a backup beside it). A file without a record is removed and
    the live values are left (they return to the kernel's defaults at the
    next boot). If a live write fails, the values already put back are set
    again and the file stays. Returns the plan that was carried out.

    CLI Example:

    .. code-block:: bash

        salt '*' vmtune.revert
    """
    root = _proc_root(proc_root, writing=True)
    keep = opsalt_files.backup_keep(__salt__)
    steps = plan_revert(config, root)
    _write_live(steps["live"], root, "; the tuning stays in place")
    if steps["file"]["exists"]:
        path = steps["file"]["path"]
        steps["file"]["backup"] = opsalt_files.backup(path, keep)
        os.unlink(path)
    return steps
