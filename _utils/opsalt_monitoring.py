"""
The pure parts of the ``monitoring`` component: the alert rules rendered
from validated thresholds and ``for`` durations, the Prometheus text format
for opsalt's own metrics, the atomic textfile writer for node_exporter's
textfile collector, and the multi-process-safe store behind the master's
``opsalt_pillar_*`` metrics.

Plain Python (no Salt dunders), importable from the installed package and
as a synced ``_utils`` module.
"""

import fcntl
import hashlib
import json
import math
import os
import re
import tempfile
import time
import urllib.parse

# --------------------------------------------------------------------------
# Alert rules
# --------------------------------------------------------------------------

# The thresholds the rules take from pillar (monitoring:rules:thresholds).
THRESHOLDS = {
    "load_per_cpu": 0.7,
    "pgscan_direct_per_second": 1000,
    "allocstall_per_second": 0,
    "aof_latency_seconds": 1,
    "pgbouncer_waiting_clients": 0,
    "pgbouncer_maxwait_seconds": 1,
    "pillar_success_age_seconds": 900,
    "textfile_age_seconds": 900,
}

# Each alert's default ``for`` (monitoring:rules:for:<alert>).
FOR = {
    "OpsaltHighLoadPerCpu": "5m",
    "OpsaltDirectReclaimStalls": "2m",
    "OpsaltWatermarkGapTooSmall": "10m",
    "OpsaltRedisAofFsyncStall": "1m",
    "OpsaltPgbouncerClientsWaiting": "1m",
    "OpsaltPillarStale": "5m",
    "OpsaltV2vMigrationFailed": "1m",
    "OpsaltTextfileStale": "5m",
}

# A Prometheus duration opsalt accepts: one number and one unit, nothing
# else (the schema's $defs/monitoring_duration has the same pattern).
DURATION_PATTERN = r"^(0|[1-9][0-9]{0,5})(ms|s|m|h|d)$"
_DURATION = re.compile(DURATION_PATTERN)
SEVERITIES = ("info", "warning", "critical")
# The upper bound of every threshold: far above any sane value, low enough
# that the rendered number stays a plain decimal.
THRESHOLD_MAX = 1e12


class MonitoringError(ValueError):
    """A monitoring pillar value or argument opsalt refuses."""


def validate_duration(value, what):
    """
    Return ``value`` if it is a Prometheus duration such as ``5m`` (one
    number, one unit of ms/s/m/h/d), else raise naming ``what``.
    """
    if not isinstance(value, str) or not _DURATION.fullmatch(value):
        raise MonitoringError(
            f"{what}: {value!r} is not a duration like 30s, 5m or 1h (one number, one unit of ms, s, m, h, d)"
        )
    return value


def validate_number(value, what):
    """
    Return ``value`` if it is a finite number in [0, 1e12] (not a boolean),
    else raise naming ``what``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MonitoringError(f"{what}: {value!r} is not a number")
    if not math.isfinite(value) or value < 0 or value > THRESHOLD_MAX:
        raise MonitoringError(f"{what}: {value!r} must be a number between 0 and {THRESHOLD_MAX:.0f}")
    return value


def _number_text(value):
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def rule_settings(thresholds=None, durations=None, severities=None):
    """
    Merge pillar ``thresholds``, ``for`` ``durations`` and ``severities``
    (each a mapping, or ``None``) over the defaults after validating every
    key and value. Returns ``(thresholds, durations, severities)``.
    """
    merged_thresholds = dict(THRESHOLDS)
    merged_for = dict(FOR)
    merged_severity = dict.fromkeys(FOR, "warning")
    merged_severity["OpsaltV2vMigrationFailed"] = "critical"
    for given, known, label in (
        (thresholds, merged_thresholds, "monitoring:rules:thresholds"),
        (durations, merged_for, "monitoring:rules:for"),
        (severities, merged_severity, "monitoring:rules:severity"),
    ):
        if given is None:
            continue
        if not isinstance(given, dict):
            raise MonitoringError(f"{label} must be a mapping")
        for key, value in given.items():
            if key not in known:
                raise MonitoringError(f"{label}: unknown key {key!r}; known: {', '.join(sorted(known))}")
            if known is merged_thresholds:
                known[key] = validate_number(value, f"{label}:{key}")
            elif known is merged_for:
                known[key] = validate_duration(value, f"{label}:{key}")
            else:
                if value not in SEVERITIES:
                    raise MonitoringError(f"{label}:{key}: {value!r} is not one of {', '.join(SEVERITIES)}")
                known[key] = value
    return merged_thresholds, merged_for, merged_severity


def _alerts(t):
    """
    The eight alerts as (name, expr, summary, description), thresholds
    ``t`` already validated and turned into text.
    """
    return [
        (
            "OpsaltHighLoadPerCpu",
            "node_load1\n"
            '  / on(instance, job) count by (instance, job) (node_cpu_seconds_total{mode="idle"})\n'
            f"  > {t['load_per_cpu']}",
            f"Load per CPU above {t['load_per_cpu']} on {{{{ $labels.instance }}}}",
            'The 1-minute load divided by the CPU count is {{ $value | printf "%.2f" }}. '
            "Load alone does not say why: run vmtune.reclaim_stats on the host to see whether "
            "direct reclaim is behind it (the team's rule, kept as the first signal).",
        ),
        (
            "OpsaltDirectReclaimStalls",
            # A rate of the sum (a subquery): rate() of several allocstall_*
            # series would give rows that differ only in the dropped name.
            'rate(sum by (instance, job) ({__name__=~"node_vmstat_allocstall.*"})[1m:])'
            f" > {t['allocstall_per_second']}\n"
            f"or sum by (instance, job) (rate(node_vmstat_pgscan_direct[1m])) > {t['pgscan_direct_per_second']}",
            "Direct reclaim on {{ $labels.instance }}",
            "Allocations stall in direct reclaim or the kernel scans pages directly "
            '({{ $value | printf "%.1f" }}/s). Run vmtune.reclaim_stats for the live rates and '
            "vmtune.recommend burst_kb=<largest burst> for a min_free_kbytes that keeps kswapd ahead.",
        ),
        (
            "OpsaltWatermarkGapTooSmall",
            "opsalt_vmtune_watermark_gap_kib\n  < on(instance, job) group_left() opsalt_vmtune_burst_kib",
            "Watermark gap below the allocation burst on {{ $labels.instance }} zone {{ $labels.zone }}",
            "The min-to-low watermark gap is {{ $value }} KiB, smaller than the configured burst: "
            "a burst will reach direct reclaim before kswapd wakes. Run vmtune.gaps and "
            "vmtune.recommend, then apply the vmtune state.",
        ),
        (
            "OpsaltRedisAofFsyncStall",
            "increase(redis_aof_delayed_fsync[5m]) > 0\n"
            "or increase(opsalt_redis_aof_fsync_stalls_total[5m]) > 0\n"
            f'or (redis_latency_spike_duration_seconds{{event_name=~"aof-.*"}} > {t["aof_latency_seconds"]}\n'
            '    and (time() - redis_latency_spike_last{event_name=~"aof-.*"}) < 300)',
            "Redis AOF fsync stall on {{ $labels.instance }}{{ with $labels.redis_instance }} ({{ . }}){{ end }}",
            "Redis delayed an AOF fsync or an AOF latency event is above the threshold: writes "
            "block while the disk catches up. Run redis_aof.stalls for the latency events and log "
            "lines, and redis_aof.recommend_timeout for client timeouts.",
        ),
        (
            "OpsaltPgbouncerClientsWaiting",
            f"opsalt_pgbouncer_clients_waiting > {t['pgbouncer_waiting_clients']}\n"
            f"or opsalt_pgbouncer_maxwait_seconds > {t['pgbouncer_maxwait_seconds']}",
            "pgbouncer clients waiting for a server on {{ $labels.instance }} ({{ $labels.database }})",
            "Clients wait for a server connection (value {{ $value }}): the pool is exhausted. "
            "Run pgbouncer.health for the pools and pgbouncer.show pools for the details.",
        ),
        (
            "OpsaltPillarStale",
            "opsalt_pillar_stale_minions > 0\n"
            f"or (time() - opsalt_pillar_last_success_timestamp_seconds) > {t['pillar_success_age_seconds']}",
            "Master {{ $labels.instance }} serves stale pillar",
            "The asset API failed and the master serves cached pillar, or it has had no successful "
            "fetch for a while (value {{ $value }}). Run salt-run ops_http_json.fetch <minion> on the master to "
            "see the error.",
        ),
        (
            "OpsaltV2vMigrationFailed",
            'opsalt_v2v_migration_state{state=~"failed|revert_failed"} == 1',
            "v2v migration {{ $labels.migration }} {{ $labels.state }}",
            "The migration stopped in state {{ $labels.state }}. Run salt-run v2v.status {{ $labels.migration }} "
            "for the failed step, then salt-run v2v.resume or v2v.rollback; the alert resolves when the "
            "migration succeeds or is rolled back.",
        ),
        (
            "OpsaltTextfileStale",
            'time() - node_textfile_mtime_seconds{file=~"(.*/)?opsalt_.*[.]prom"}'
            f" > {t['textfile_age_seconds']}",
            "opsalt metrics not rewritten on {{ $labels.instance }} ({{ $labels.file }})",
            "opsalt's textfile metrics are {{ $value | humanizeDuration }} old: the schedule that "
            "writes them stopped. Run monitoring.write_textfile on the host and check "
            "schedule.list for the monitoring entry.",
        ),
    ]


def _quoted(text):
    # JSON strings are YAML double-quoted strings.
    return json.dumps(text)


def render_rules(thresholds=None, durations=None, severities=None, group="opsalt"):
    """
    The Prometheus rules file (YAML text) for the eight opsalt alerts.
    Pillar values are validated first; only numbers and durations reach
    the text.
    """
    t, durations, severities = rule_settings(thresholds, durations, severities)
    texts = {key: _number_text(value) for key, value in t.items()}
    if not re.fullmatch(r"^[a-z][a-z0-9_]{0,63}$", group):
        raise MonitoringError(f"rule group {group!r} must match ^[a-z][a-z0-9_]{{0,63}}$")
    lines = [
        "# opsalt alert rules, rendered by monitoring.render_rules (docs/components/monitoring.rst).",
        "# prometheus/opsalt.rules.yml in the repository holds these rules with every default.",
        "groups:",
        f"  - name: {group}",
        "    rules:",
    ]
    for name, expr, summary, description in _alerts(texts):
        lines.append(f"      - alert: {name}")
        lines.append("        expr: |-")
        lines.extend(f"          {part}" for part in expr.split("\n"))
        lines.append(f"        for: {durations[name]}")
        lines.append("        labels:")
        lines.append(f"          severity: {severities[name]}")
        lines.append("        annotations:")
        lines.append(f"          summary: {_quoted(summary)}")
        lines.append(f"          description: {_quoted(description)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Prometheus text format and the textfile writer
# --------------------------------------------------------------------------

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TEXTFILE_NAME = re.compile(r"^opsalt_[a-z0-9_]{1,64}\.prom$")


def _label_value(value):
    text = str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample_value(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def format_metrics(families):
    """
    Prometheus text exposition for ``families``: a list of
    ``(name, type, help, [(labels_dict, value), ...])``. Label values are
    escaped (backslash, quote, newline), so no value can start a line.
    """
    out = []
    for name, kind, help_text, samples in families:
        if not METRIC_NAME.fullmatch(name):
            raise MonitoringError(f"metric name {name!r} is not valid")
        out.append(f"# HELP {name} {help_text.replace(chr(10), ' ')}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            sample_name = name
            if "__name__" in labels:
                labels = dict(labels)
                sample_name = labels.pop("__name__")
            parts = []
            for key in sorted(labels):
                if not LABEL_NAME.fullmatch(key):
                    raise MonitoringError(f"label name {key!r} is not valid")
                parts.append(f'{key}="{_label_value(labels[key])}"')
            label_text = "{" + ",".join(parts) + "}" if parts else ""
            out.append(f"{sample_name}{label_text} {_sample_value(value)}")
    return "\n".join(out) + "\n"


def write_textfile(directory, filename, text):
    """
    Write ``text`` as ``directory/filename`` for node_exporter's textfile
    collector: a temp file in the same directory (ignored by the collector,
    which reads only ``*.prom``), fsync, chmod 0644, rename. A reader sees
    the old file or the new one, never half of one. Returns the path.
    """
    if not TEXTFILE_NAME.fullmatch(filename):
        raise MonitoringError(f"textfile name {filename!r} must match {TEXTFILE_NAME.pattern}")
    path = os.path.join(directory, filename)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".opsalt-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------
# The master's pillar metrics: one JSON file under an fcntl lock
# --------------------------------------------------------------------------

PILLAR_RESULTS = ("ok", "not_modified", "stale", "error", "missing")
# Histogram buckets (seconds) of opsalt_pillar_fetch_duration_seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PILLAR_STORE = "opsalt_pillar_metrics.json"
# A minion whose last fetch was stale counts as stale for this long unless a
# later fetch succeeds (the gauge must not stay up for a minion that left).
STALE_WINDOW = 3600
# Every this many records, markers older than STALE_WINDOW are removed.
PRUNE_EVERY = 1000


def pillar_store_dir(cachedir):
    """
    The directory of the pillar metrics store under a master's ``cachedir``:
    the ext_pillar records there and the ``master`` collector reads there.
    """
    return os.path.join(cachedir, "opsalt-monitoring")


def _empty_store():
    return {
        "fetch_total": dict.fromkeys(PILLAR_RESULTS, 0),
        "duration_buckets": [0] * len(DURATION_BUCKETS),
        "duration_count": 0,
        "duration_sum": 0.0,
        "last_success": None,
        "minions": {},
    }


def _marker_name(minion_id):
    name = "m-" + urllib.parse.quote(minion_id, safe="")
    if len(name) > 200:  # a file name has at most 255 bytes
        name = "h-" + hashlib.sha256(minion_id.encode("utf-8")).hexdigest()
    return name


class PillarMetricsStore:
    """
    Counters and a histogram of the asset-pillar fetches, shared by every
    master worker process. The counters are one small JSON file, each update
    a read-modify-write under an exclusive ``fcntl`` lock on a lock file
    beside it (opened anew by each update, so threads of one process exclude
    each other too), the file replaced by rename so a reader never sees half
    of it. Each minion whose last fetch was served stale has an empty marker
    file (its mtime the time of that serve) in ``stale-minions/``, removed by
    its next fetch that is not stale: a record costs the same on a fleet of
    ten thousand minions, in an outage too.
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, PILLAR_STORE)
        self.lock_path = self.path + ".lock"
        self.stale_dir = os.path.join(directory, "stale-minions")

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return _empty_store()
        store = _empty_store()
        if isinstance(data, dict):
            store.update(data)
        store["minions"] = {}  # the markers hold them
        return store

    def _save(self, data):
        data = {key: value for key, value in data.items() if key != "minions"}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".opsalt-pillar-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(data))
            os.rename(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _mark(self, minion_id, stale, now):
        path = os.path.join(self.stale_dir, _marker_name(minion_id))
        if stale:
            with open(path, "a", encoding="utf-8"):
                pass
            os.utime(path, (now, now))
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _prune(self, now):
        for name in os.listdir(self.stale_dir):
            path = os.path.join(self.stale_dir, name)
            try:
                if now - os.stat(path).st_mtime > STALE_WINDOW:
                    os.unlink(path)
            except FileNotFoundError:
                pass

    def record(self, result, duration, minion_id=None, now=None):
        """
        Count one fetch that ended with ``result`` (one of PILLAR_RESULTS)
        after ``duration`` seconds, for ``minion_id``.
        """
        if result not in PILLAR_RESULTS:
            raise MonitoringError(f"fetch result {result!r} is not one of {', '.join(PILLAR_RESULTS)}")
        now = time.time() if now is None else now
        if not os.path.isdir(self.stale_dir):
            os.makedirs(self.stale_dir, mode=0o700, exist_ok=True)
        with open(self.lock_path, "a+", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            data["fetch_total"][result] = data["fetch_total"].get(result, 0) + 1
            duration = max(0.0, float(duration))
            for index, bound in enumerate(DURATION_BUCKETS):
                if duration <= bound:
                    data["duration_buckets"][index] += 1
            data["duration_count"] += 1
            data["duration_sum"] += duration
            if result in ("ok", "not_modified"):
                data["last_success"] = now
            self._save(data)
            if minion_id is not None:
                self._mark(str(minion_id), result == "stale", now)
            if data["duration_count"] % PRUNE_EVERY == 0:
                self._prune(now)

    def snapshot(self):
        """
        The store's current content (a dict), read under the lock;
        ``minions`` maps each minion served stale to
        ``{"result": "stale", "at": <time of that serve>}``.
        """
        if not os.path.exists(self.path):
            return _empty_store()
        with open(self.lock_path, "a+", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            data = self._load()
        # Each marker changes atomically: no lock needed to read them.
        for name in os.listdir(self.stale_dir) if os.path.isdir(self.stale_dir) else []:
            try:
                at = os.stat(os.path.join(self.stale_dir, name)).st_mtime
            except FileNotFoundError:
                continue
            minion = urllib.parse.unquote(name[2:]) if name.startswith("m-") else name
            data["minions"][minion] = {"result": "stale", "at": at}
        return data


def pillar_families(data, now=None):
    """
    The ``opsalt_pillar_*`` metric families from a store snapshot.
    """
    now = time.time() if now is None else now
    buckets = [
        ({"__name__": "opsalt_pillar_fetch_duration_seconds_bucket", "le": _number_text(bound)}, count)
        for bound, count in zip(DURATION_BUCKETS, data["duration_buckets"])
    ]
    buckets.append(
        ({"__name__": "opsalt_pillar_fetch_duration_seconds_bucket", "le": "+Inf"}, data["duration_count"])
    )
    buckets.append(({"__name__": "opsalt_pillar_fetch_duration_seconds_sum"}, float(data["duration_sum"])))
    buckets.append(({"__name__": "opsalt_pillar_fetch_duration_seconds_count"}, data["duration_count"]))
    stale = sum(
        1
        for entry in data["minions"].values()
        if entry.get("result") == "stale" and now - float(entry.get("at", 0)) <= STALE_WINDOW
    )
    families = [
        (
            "opsalt_pillar_fetch_total",
            "counter",
            "Asset-pillar fetches by result",
            [({"result": result}, data["fetch_total"].get(result, 0)) for result in PILLAR_RESULTS],
        ),
        ("opsalt_pillar_fetch_duration_seconds", "histogram", "Asset-pillar fetch duration", buckets),
        ("opsalt_pillar_stale_minions", "gauge", "Minions whose last pillar was served stale", [({}, stale)]),
    ]
    if data.get("last_success") is not None:
        families.append(
            (
                "opsalt_pillar_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the last successful asset-pillar fetch",
                [({}, float(data["last_success"]))],
            )
        )
    return families


# --------------------------------------------------------------------------
# v2v migrations from the runner's journals
# --------------------------------------------------------------------------

V2V_STATES = ("running", "success", "failed", "reverting", "reverted", "revert_failed")


def v2v_state(journal):
    """
    One migration's state for ``opsalt_v2v_migration_state``: the flow
    state, except that a running (or reverting) flow with a failed step is
    ``failed`` (the runner stopped there, e.g. it was killed).
    """
    flow = journal.get("flow") or {}
    state = flow.get("state") or "running"
    tasks = flow.get("tasks") or {}
    if state in ("running", "reverting") and any(task.get("state") == "failed" for task in tasks.values()):
        return "failed"
    return state if state in V2V_STATES else "running"


def v2v_families(journals):
    """
    ``opsalt_v2v_migration_state{migration,state}`` (one-hot over
    V2V_STATES, so the failed series drops to 0 once the migration is
    reverted or succeeds) and ``opsalt_v2v_copy_mib_per_second{migration,disk}``
    from the runner's journals.
    """
    states, rates = [], []
    for journal in journals:
        migration = str(journal.get("id"))
        current = v2v_state(journal)
        states.extend(({"migration": migration, "state": s}, 1 if s == current else 0) for s in V2V_STATES)
        for step, task in sorted(((journal.get("flow") or {}).get("tasks") or {}).items()):
            result = task.get("result")
            if isinstance(result, dict) and result.get("bytes") and result.get("seconds"):
                rate = round(result["bytes"] / result["seconds"] / 2**20, 3)
                rates.append(({"migration": migration, "disk": step}, rate))
    return [
        ("opsalt_v2v_migration_state", "gauge", "1 for the migration's current state (v2v journals)", states),
        ("opsalt_v2v_copy_mib_per_second", "gauge", "copy rate of each disk step (v2v journals)", rates),
    ]
