"""
Fire an event within seconds of a direct-reclaim storm, while the evidence
is still there: the zone watermarks, the reclaim rates and the processes
holding the most memory.

.. code-block:: yaml

    beacons:
      vmtune:
        - interval: 5               # seconds between samples
        - direct_scan_rate: 1000    # pages/s scanned by direct reclaim (pgscan_direct)
        - allocstall_rate: 1        # allocation stalls/s, summed over zones
        - compact_stall_rate: 10    # direct compaction stalls/s
        - load_per_cpu: 0.7         # load1 / CPU count
        - rearm: 300                # seconds before the next event after one
        - top: 5                    # processes by Pss in the event

A threshold set to ``null`` is not checked. The event tag is
``salt/beacon/<minion id>/vmtune/``; its data has ``reasons``, ``rates``,
``load``, ``zoneinfo``, ``gaps`` and ``top_pss``. The first sample after a
(re)start only records the counters: a rate needs two samples.

``proc_root`` (default ``vmtune:proc_root``, else ``/proc``) must lie within
the operator's allowed paths, as for the execution module; its files are
read as ``opsalt_vmtune`` reads them (no FIFO blocks a sample, no huge file
is read). A refused or unreadable tree is logged, and the sample returns no
event.
"""

import logging
import os
import sys
import time

try:
    import opsalt_vmtune
except ImportError:  # beacons load without extmods/utils on sys.path
    opsalt_vmtune = None

log = logging.getLogger(__name__)

__virtualname__ = "vmtune"

DEFAULTS = {
    "direct_scan_rate": 1000,
    "allocstall_rate": 1,
    "compact_stall_rate": 10,
    "load_per_cpu": 0.7,
    "rearm": 300,
    "top": 5,
    "proc_root": None,
}
THRESHOLDS = {
    "direct_scan_rate": "pgscan_direct",
    "allocstall_rate": "allocstall",
    "compact_stall_rate": "compact_stall",
}
# Keys Salt's beacon machinery itself puts into or reads from the config.
SALT_KEYS = {"interval", "enabled", "beacon_module", "disable_during_state_run", "run_once", "_beacon_name"}

# Per beacon name: the last counters, when they were read, when we last fired.
_LAST = {}


def _import_helpers():
    global opsalt_vmtune
    if opsalt_vmtune is not None:
        return True
    utils_dir = os.path.join(__opts__.get("extension_modules", ""), "utils")
    if os.path.isdir(utils_dir) and utils_dir not in sys.path:
        sys.path.append(utils_dir)
    try:
        import opsalt_vmtune as helpers
    except ImportError:
        return False
    opsalt_vmtune = helpers
    return True


def __virtual__():
    if not _import_helpers():
        return (
            False,
            "vmtune beacon needs opsalt_vmtune: pip install opsalt, or saltutil.sync_all "
            "(then it is found in <extension_modules>/utils)",
        )
    if not sys.platform.startswith("linux"):
        return (False, "vmtune beacon reads Linux /proc and works on Linux only")
    return __virtualname__


def _as_dict(config):
    merged = {}
    for item in config if isinstance(config, list) else [config]:
        merged.update(item)
    return merged


def validate(config):
    """
    Check the beacon configuration: a list of one-key mappings, known keys,
    non-negative numbers (``null`` switches a threshold off).
    """
    if not isinstance(config, list) or not all(isinstance(item, dict) for item in config):
        return False, "vmtune beacon configuration must be a list of mappings"
    conf = _as_dict(config)
    unknown = set(conf) - set(DEFAULTS) - SALT_KEYS
    if unknown:
        return False, f"vmtune beacon: unknown option(s) {', '.join(sorted(unknown))}"
    for key in ("direct_scan_rate", "allocstall_rate", "compact_stall_rate", "load_per_cpu", "rearm", "top"):
        value = conf.get(key, DEFAULTS[key])
        if value is None and key in ("rearm", "top"):
            return False, f"vmtune beacon: {key} must be a number"
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            return False, f"vmtune beacon: {key} must be a non-negative number or null, not {value!r}"
    return True, "valid vmtune beacon configuration"


def _settings(config):
    conf = dict(DEFAULTS)
    conf.update({k: v for k, v in _as_dict(config).items() if k in DEFAULTS})
    if not conf["proc_root"]:
        conf["proc_root"] = _configured_proc_root()
    return conf


def _configured_proc_root():
    """``vmtune:proc_root`` (nested); the flat ``vmtune.proc_root`` of older releases warns."""
    root = __salt__["config.get"]("vmtune:proc_root", None)
    if root is None:
        root = __salt__["config.get"]("vmtune.proc_root", None)
        if root is not None:
            log.warning(
                "the config option vmtune.proc_root is deprecated: write it nested, as vmtune:proc_root"
            )
    return root or opsalt_vmtune.DEFAULT_PROC_ROOT


def _reason(err):
    """
    What to log of a read error: a refusal names the file and why; a parse
    error's message quotes the file's content, so only its kind is logged.
    """
    if isinstance(err, OSError):
        return err.strerror
    if isinstance(err, opsalt_vmtune.UnsafePathError):
        return str(err)
    return type(err).__name__


def _reasons(conf, rates, load):
    reasons = []
    for key, counter in THRESHOLDS.items():
        limit, rate = conf[key], rates.get(counter)
        if limit is not None and rate is not None and rate > limit:
            reasons.append(f"{counter} {rate:g}/s exceeds {limit:g}/s")
    if conf["load_per_cpu"] is not None and load["load_per_cpu"] > conf["load_per_cpu"]:
        reasons.append(
            f"load1 {load['load1']:g} on {load['cpus']} CPUs is {load['load_per_cpu']:g} per CPU, "
            f"above {conf['load_per_cpu']:g}"
        )
    return reasons


def _evidence(root, conf):
    evidence = {}
    for key, call in (("zoneinfo", "vmtune.zoneinfo"), ("gaps", "vmtune.gaps")):
        try:
            evidence[key] = __salt__[call](proc_root=root)
        except Exception as err:
            # The alarm matters more than a complete snapshot.
            evidence[key] = {"error": str(err)}
    try:
        evidence["top_pss"] = opsalt_vmtune.top_pss(root, conf["top"])
    except OSError as err:
        evidence["top_pss"] = {"error": str(err)}
    return evidence


def beacon(config):
    """
    Sample the reclaim counters and the load; return one event when a
    threshold is exceeded and the re-arm delay since the last event is over.

    CLI Example:

    .. code-block:: bash

        salt-call beacons.add vmtune "[{'interval': 5}, {'allocstall_rate': 1}]"
    """
    conf = _settings(config)
    root = conf["proc_root"]
    name = _as_dict(config).get("_beacon_name", __virtualname__)
    now = time.monotonic()
    try:
        opsalt_vmtune.check_proc_root(root, __salt__)
    except ValueError as err:
        # Raising would make Salt send an error event every interval: a storm.
        log.error("vmtune beacon: %s", err)
        return []
    try:
        counters = opsalt_vmtune.reclaim_counters(opsalt_vmtune.read_vmstat(root))
        loadavg = opsalt_vmtune.read_loadavg(root)
        cpus = opsalt_vmtune.cpu_count(root)
    except (OSError, ValueError, IndexError) as err:
        log.error("vmtune beacon: cannot read %s (is proc_root right?): %s", root, _reason(err))
        return []
    last = _LAST.get(name)
    _LAST[name] = {
        "counters": counters,
        "at": now,
        "fired": last["fired"] if last else None,
        "root": root,
    }
    if last is None or last["root"] != root:
        return []
    rates = opsalt_vmtune.rates(last["counters"], counters, now - last["at"])
    load = {"load1": loadavg["load1"], "cpus": cpus, "load_per_cpu": round(loadavg["load1"] / cpus, 3)}
    reasons = _reasons(conf, rates, load)
    if not reasons:
        return []
    if last["fired"] is not None and now - last["fired"] < conf["rearm"]:
        log.debug("vmtune beacon: %s, but re-armed only %s s after the last event", reasons, conf["rearm"])
        return []
    _LAST[name]["fired"] = now
    event = {"reasons": reasons, "rates": rates, "counters": counters, "load": load, "proc_root": root}
    event.update(_evidence(root, conf))
    return [event]
