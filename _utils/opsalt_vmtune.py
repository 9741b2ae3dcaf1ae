"""
vmtune's readers of Linux ``/proc`` files, each taking a proc root so tests
can point them at a fixture tree: zoneinfo, vmstat, meminfo, loadavg, stat
(CPU count), smaps_rollup and ``sys/vm`` sysctls. Formerly ``opsalt_proc``
(that name still imports, with a deprecation warning).

Live processes of this host (:func:`top_pss` on the real ``/proc``) are read
through psutil, which Salt already depends on; the file readers stay for
fixture trees.

The proc root may come from pillar (``vmtune:proc_root``) and the beacon
reads it every interval, so each file is read as :func:`opsalt_files.read_at`
reads (issue 12): ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO never blocks), a
regular file with one link, read until EOF (``/proc`` files say ``st_size``
0) up to :data:`MAX_BYTES`; and the root itself must lie within the
operator's policy (:func:`check_proc_root`).

Plain Python (no Salt dunders): importable from the installed package and as
a synced ``_utils`` module. Readers raise ``OSError`` for a missing file and
:class:`UnsafePathError` (a ``ValueError`` naming the file, never its
content) for one they refuse; the callers turn both into a message for
people.
"""

import errno
import os
import stat

import opsalt_files
import opsalt_policy
import opsalt_validate
import psutil

DEFAULT_PROC_ROOT = "/proc"
# Where vmtune reads and writes unless the operator's policy widens it.
POLICY_PROC_ROOTS = (DEFAULT_PROC_ROOT,)
# The most read from one file under a proc root: /proc/zoneinfo of a large
# NUMA host is ~100 KB and the others are a few KB, so anything near this is
# not a proc file. (A pre-4.14 kernel's <pid>/smaps, read for fixture trees
# only, is the one file that could pass it: that process is then skipped.)
MAX_BYTES = 4 * 1024 * 1024
UnsafePathError = opsalt_files.UnsafePathError

# Zones whose pages count as "lowmem" for the kernel's min_free_kbytes split
# (mm/page_alloc.c: not highmem, not ZONE_MOVABLE; ZONE_DEVICE has no pages).
NON_LOWMEM_ZONES = ("HighMem", "Movable", "Device")

# Suffixes of per-zone vmstat counters: allocstall_<zone> (4.12+) and
# pgscan_direct_<zone> / pgsteal_direct_<zone> (before 4.8).
ZONE_SUFFIXES = ("dma", "dma32", "normal", "high", "movable", "device")


def _path(proc_root, *parts):
    return os.path.join(proc_root or DEFAULT_PROC_ROOT, *parts)


def check_proc_root(root, salt_funcs):
    """
    ``root`` if it is an absolute, normalised path within the operator's
    policy: ``/proc``, ``opsalt:policy:allowed_paths`` or
    ``opsalt:policy:vmtune:allowed_paths`` of the minion configuration
    (``salt_funcs`` is the caller's ``__salt__``). Raises a ``ValueError``
    naming ``vmtune:proc_root`` otherwise: pillar cannot send root's reads
    into a tree someone else controls.
    """
    opsalt_validate.abs_path(root, "vmtune:proc_root")
    policy = opsalt_policy.read(salt_funcs)
    return opsalt_policy.check_path(root, "vmtune:proc_root", "vmtune", POLICY_PROC_ROOTS, policy)


def _read(proc_root, *parts):
    path = _path(proc_root, *parts)
    try:
        data = opsalt_files.read_regular_bytes(path, MAX_BYTES)
    except OSError as err:
        err.filename = path  # read_at names the file relative to its directory
        raise
    if data is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    return data.decode("ascii", errors="replace")


def page_size():
    """
    Bytes per page of this machine (fixture trees assume the same).
    """
    return os.sysconf("SC_PAGE_SIZE")


def read_zoneinfo(proc_root=None):
    """
    Parse ``zoneinfo`` into a list of ``{"node": int, "zone": str, <field>:
    int, ...}`` in file order, fields in pages (``free``, ``min``, ``low``,
    ``high``, ``managed``, ``spanned``, ``present`` and whatever else the
    kernel prints in the watermark block, e.g. ``boost``, ``promo``).
    Per-node statistics and per-CPU pagesets are skipped.
    """
    zones = []
    current = None
    in_watermarks = False
    for raw in _read(proc_root, "zoneinfo").splitlines():
        line = raw.strip()
        if raw.startswith("Node "):
            # "Node 0, zone   Normal"
            head, _sep, zone = raw.partition(", zone")
            current = {"node": int(head.split()[1]), "zone": zone.strip()}
            zones.append(current)
            in_watermarks = False
            continue
        if current is None:
            continue
        if line.startswith("pages free"):
            current["free"] = int(line.split()[-1])
            in_watermarks = True
            continue
        if line.startswith(("protection:", "pagesets", "per-node stats")):
            in_watermarks = False
            continue
        if not in_watermarks:
            continue
        fields = line.split()
        # Watermark lines are indented by 8 spaces on every kernel; old
        # kernels print their nr_*/numa_* counters inside the block with 4.
        indent = len(raw) - len(raw.lstrip(" "))
        if indent == 8 and len(fields) == 2 and fields[1].isdigit():
            current[fields[0]] = int(fields[1])
    return zones


def read_keyed_ints(proc_root, name):
    """
    Parse a ``<key> <int>`` file such as ``vmstat`` into a dict.
    """
    values = {}
    for line in _read(proc_root, name).splitlines():
        fields = line.split()
        if len(fields) == 2:
            try:
                values[fields[0]] = int(fields[1])
            except ValueError:
                continue
    return values


def read_vmstat(proc_root=None):
    """
    ``vmstat`` as ``{counter: int}``.
    """
    return read_keyed_ints(proc_root, "vmstat")


def read_meminfo(proc_root=None):
    """
    ``meminfo`` as ``{field: kB}`` (``HugePages_*`` counts as plain numbers).
    """
    values = {}
    for line in _read(proc_root, "meminfo").splitlines():
        key, _sep, rest = line.partition(":")
        fields = rest.split()
        if fields:
            try:
                values[key.strip()] = int(fields[0])
            except ValueError:
                continue
    return values


def read_loadavg(proc_root=None):
    """
    ``loadavg`` as ``{"load1", "load5", "load15", "running", "total"}``.
    """
    fields = _read(proc_root, "loadavg").split()
    running, _sep, total = fields[3].partition("/")
    return {
        "load1": float(fields[0]),
        "load5": float(fields[1]),
        "load15": float(fields[2]),
        "running": int(running),
        "total": int(total),
    }


def cpu_count(proc_root=None):
    """
    Number of online CPUs, from the ``cpuN`` lines of ``stat``.
    """
    count = sum(
        1 for line in _read(proc_root, "stat").splitlines() if line.startswith("cpu") and line[3:4].isdigit()
    )
    return count or 1


def read_smaps_rollup(pid, proc_root=None):
    """
    ``<pid>/smaps_rollup`` as ``{field: kB}`` (``Rss``, ``Pss``, ...). Kernels
    before 4.14 have no smaps_rollup: there the same sums are made from
    ``<pid>/smaps``, one block per mapping.
    """
    try:
        text = _read(proc_root, str(pid), "smaps_rollup")
    except FileNotFoundError:
        text = _read(proc_root, str(pid), "smaps")
    values = {}
    for line in text.splitlines():
        # "Pss:   1234 kB"; mapping headers and VmFlags/THPeligible lines have no kB
        key, _sep, rest = line.partition(":")
        fields = rest.split()
        if len(fields) == 2 and fields[1] == "kB" and fields[0].isdigit():
            values[key.strip()] = values.get(key.strip(), 0) + int(fields[0])
    return values


def _rss_kb(pid, proc_root):
    """
    Resident set size from ``<pid>/statm`` (cheap, unlike smaps_rollup, which
    walks every mapping); ``None`` when unknown.
    """
    try:
        resident_pages = int(_read(proc_root, str(pid), "statm").split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * page_size() // 1024


def _is_live(proc_root):
    return os.path.realpath(proc_root or DEFAULT_PROC_ROOT) == DEFAULT_PROC_ROOT


def _live_candidates():
    """``[(rss_kb, process)]`` of this host's processes, via psutil."""
    candidates = []
    for proc in psutil.process_iter(["memory_info"]):
        memory = proc.info.get("memory_info")
        candidates.append((float("inf") if memory is None else memory.rss // 1024, proc))
    return candidates


def _live_pss(proc):
    """``(pss_kb, comm)`` of a live process; ``OSError``-like psutil errors pass up."""
    return proc.memory_full_info().pss // 1024, proc.name()


def _tree_candidates(proc_root, prune):
    candidates = []
    for entry in os.listdir(_path(proc_root)):
        if entry.isdigit():
            rss = _rss_kb(entry, proc_root) if prune else None
            candidates.append((float("inf") if rss is None else rss, entry))
    return candidates


def _tree_pss(proc_root, entry):
    return read_smaps_rollup(entry, proc_root).get("Pss"), _read(proc_root, entry, "comm").strip()


def top_pss(proc_root=None, limit=5, prune=True):
    """
    The ``limit`` processes with the largest proportional set size:
    ``[{"pid", "comm", "pss_kb"}]``, largest first. Processes that exit or
    deny access while being read are skipped (kernel threads have no Pss),
    and so are those whose files a tree holds as anything but small regular
    files.
    On this host's own ``/proc`` the processes are read with psutil; any
    other ``proc_root`` is a tree of files (fixtures, chroots).

    With ``prune`` (the default) processes are visited by resident size and
    the walk stops once a process's Rss cannot beat the smallest Pss kept
    (Pss <= Rss), so only a few smaps_rollup files are read; the result is
    the same as reading them all.
    """
    limit = max(0, int(limit))
    live = _is_live(proc_root)
    candidates = [
        (rss, int(proc.pid) if live else int(proc), proc)
        for rss, proc in (_live_candidates() if live else _tree_candidates(proc_root, prune))
    ]
    candidates.sort(key=lambda item: (-item[0], item[1]))
    found = []
    for rss, pid, proc in candidates:
        if prune and len(found) >= limit and rss <= min(row["pss_kb"] for row in found):
            break
        try:
            pss, comm = _live_pss(proc) if live else _tree_pss(proc_root, proc)
        except (OSError, UnsafePathError, psutil.Error):
            continue
        if pss:
            found.append({"pid": pid, "comm": comm, "pss_kb": pss})
            found.sort(key=lambda row: (-row["pss_kb"], row["pid"]))
            del found[max(limit, 1) :]
    return found[:limit]


def sysctl_path(name, proc_root=None):
    """
    ``vm.min_free_kbytes`` -> ``<proc_root>/sys/vm/min_free_kbytes``.
    """
    return _path(proc_root, "sys", *name.split("."))


def read_sysctl(name, proc_root=None):
    """
    The integer value of sysctl ``name``, or ``None`` when this kernel lacks it.
    """
    try:
        return int(_read(proc_root, "sys", *name.split(".")).split()[0])
    except FileNotFoundError:
        return None


def sysctl_writable(name, proc_root=None):
    """
    True when sysctl ``name`` can be written (false in containers, where
    ``/proc/sys`` is mounted read-only, and for non-root users).
    """
    return os.access(sysctl_path(name, proc_root), os.W_OK)


# Writing a sysctl: no link at its name followed, no FIFO waited on.
_WRITE_FLAGS = os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def write_sysctl(name, value, proc_root=None):
    """
    Write ``value`` to sysctl ``name``, as the files are read: opened
    without following a link at its name or blocking on a FIFO, and written
    only when ``fstat`` shows a regular file (procfs's sysctls are), else
    :class:`UnsafePathError`. ``OSError`` when the kernel refuses the value.
    """
    path = sysctl_path(name, proc_root)
    fd = os.open(path, _WRITE_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            opsalt_files.refuse_path(path, "not a regular file")
        os.write(fd, f"{int(value)}\n".encode("ascii"))
    finally:
        os.close(fd)


def zoned_sum(vmstat, base):
    """
    A vmstat counter that some kernels split per zone: ``base`` itself when
    present, else the sum of ``base_<zone>``; ``None`` when neither exists.
    """
    if base in vmstat:
        return vmstat[base]
    parts = [vmstat[f"{base}_{zone}"] for zone in ZONE_SUFFIXES if f"{base}_{zone}" in vmstat]
    return sum(parts) if parts else None


def reclaim_counters(vmstat):
    """
    The reclaim counters that tell direct-reclaim storms apart, the same on
    old and new kernels: per-zone splits summed, missing ones ``None``.
    """
    return {
        "pgscan_direct": zoned_sum(vmstat, "pgscan_direct"),
        "pgsteal_direct": zoned_sum(vmstat, "pgsteal_direct"),
        "pgscan_kswapd": zoned_sum(vmstat, "pgscan_kswapd"),
        "pgsteal_kswapd": zoned_sum(vmstat, "pgsteal_kswapd"),
        "allocstall": zoned_sum(vmstat, "allocstall"),
        "compact_stall": vmstat.get("compact_stall"),
        "kswapd_low_wmark_hit_quickly": vmstat.get("kswapd_low_wmark_hit_quickly"),
    }


def rates(before, after, seconds):
    """
    Per-second rates between two :func:`reclaim_counters` snapshots; a
    counter missing in either, or a non-positive interval, gives ``None``.
    A counter that went backwards (reboot, fixture reset) counts as 0.
    """
    result = {}
    for key, new in after.items():
        old = before.get(key)
        if new is None or old is None or seconds <= 0:
            result[key] = None
        else:
            result[key] = round(max(0, new - old) / seconds, 3)
    return result
