"""
Redis AOF stall analysis shared by the ``redis_aof`` module and its tests:
``INFO`` and ``LATENCY LATEST`` parsing, the Redis log scan (fsync-too-long
lines, AOF errors, watchdog stack traces) and the client-timeout advice.

Pure functions of their inputs, so canned INFO/LATENCY/log text gives the
same answer as a live server.
"""

import math
import re
import time

# Redis logs this when an everysec write was postponed for 2 s because the
# background fsync was still running: the disk is not keeping up.
FSYNC_TOO_LONG = "Asynchronous AOF fsync is taking too long"
FSYNC_TOO_LONG_MS = 2000
LOG_PATTERNS = {
    "fsync_too_long": re.compile(re.escape(FSYNC_TOO_LONG)),
    "watchdog": re.compile(r"WATCHDOG TIMER EXPIRED"),
    "aof_error": re.compile(
        r"Error writing to the AOF file|Short write while writing to the AOF file|AOF write error|"
        r"Can't persist AOF|Can't open the append-only file|AOF\b.*\bfsync\b.*\b(?:error|failed)",
        re.IGNORECASE,
    ),
}
AOF_FRAMES = re.compile(r"flushAppendOnlyFile|aofWrite|aof_fsync|fdatasync|fsync|redis_fsync")
STACK_FRAME = re.compile(r"\(\S*\+0x[0-9a-f]+\)|\[0x[0-9a-f]+\]")
WATCHDOG_END = re.compile(r"signal[- ]handler\]?\s*\(\d+\)\s*-{4,}")
WATCHDOG_STAMP = re.compile(r"signal[- ]handler\]?\s*\((\d+)\)")


def parse_info(text):
    """
    Parse ``INFO`` text into a dict with numbers typed, as redis-py does.
    """
    parsed = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        parsed[key] = value
    return parsed


def parse_latency_latest(rows):
    """
    ``LATENCY LATEST`` rows (``[event, unix_ts, latest_ms, max_ms]``) as
    ``{event: {"time", "latest_ms", "max_ms", "aof"}}``.
    """
    events = {}
    for row in rows or []:
        event, stamp, latest, worst = row[:4]
        event = event.decode() if isinstance(event, bytes) else str(event)
        events[event] = {
            "time": int(stamp),
            "latest_ms": int(latest),
            "max_ms": int(worst),
            "aof": event.startswith("aof-"),
        }
    return events


def scan_log(lines):
    """
    The AOF-related lines of a Redis log: ``fsync_too_long``, ``aof_error``
    (lists of lines) and ``watchdog`` (stack traces of a blocked event loop,
    each ``{"time", "frames", "aof"}``).
    """
    found = {"fsync_too_long": [], "aof_error": [], "watchdog": []}
    trace = None
    stamp = None

    def finish(trace):
        trace["aof"] = any(AOF_FRAMES.search(frame) for frame in trace["frames"])
        found["watchdog"].append(trace)

    for line in lines:
        line = line.rstrip("\n")
        if trace is not None:
            if WATCHDOG_END.search(line):
                finish(trace)
                trace = None
            elif STACK_FRAME.search(line):
                trace["frames"].append(line.strip())
            continue
        stamp_match = WATCHDOG_STAMP.search(line)
        if stamp_match:
            stamp = int(stamp_match.group(1))
        if LOG_PATTERNS["watchdog"].search(line):
            trace = {"time": stamp, "frames": [], "aof": False}
        elif LOG_PATTERNS["fsync_too_long"].search(line):
            found["fsync_too_long"].append(line.strip())
        elif LOG_PATTERNS["aof_error"].search(line) and "looks solved" not in line:
            found["aof_error"].append(line.strip())
    if trace is not None:  # the log ends inside a trace
        finish(trace)
    return found


def analyse_stalls(
    before, after, latency_rows, log_lines, threshold_ms, interval, log_path=None, log_reason=None
):
    """
    The stall report of ``redis_aof.stalls`` from its raw inputs (two
    ``INFO persistence`` dicts, ``LATENCY LATEST`` rows, log lines), so
    canned inputs give the same answer as a live server.
    """
    events = parse_latency_latest(latency_rows)
    aof_events = {k: v for k, v in events.items() if v["aof"]}
    other_events = {k: v for k, v in events.items() if not v["aof"]}
    delayed_before = before.get("aof_delayed_fsync")
    delayed_after = after.get("aof_delayed_fsync")
    delayed_delta = None if delayed_after is None else delayed_after - (delayed_before or 0)
    found = scan_log(log_lines) if log_lines is not None else None
    report = {
        "interval": interval,
        "aof_enabled": bool(after.get("aof_enabled")),
        "aof_last_write_status": after.get("aof_last_write_status"),
        "aof_rewrite_in_progress": bool(after.get("aof_rewrite_in_progress")),
        "aof_delayed_fsync": {"before": delayed_before, "after": delayed_after, "delta": delayed_delta},
        "aof_pending_bio_fsync": after.get("aof_pending_bio_fsync"),
        "latency_monitor": {"threshold_ms": threshold_ms, "enabled": bool(threshold_ms)},
        "aof_latency_events": aof_events,
        "other_latency_events": other_events,
        "log": {
            "path": log_path,
            "readable": found is not None,
            "reason": log_reason,
            "fsync_too_long": (found or {}).get("fsync_too_long", [])[-20:],
            "aof_errors": (found or {}).get("aof_error", [])[-20:],
            "watchdog_traces": len((found or {}).get("watchdog", [])),
        },
    }
    findings = []
    if not report["aof_enabled"]:
        findings.append("AOF is off (appendonly no): there are no AOF fsyncs to stall on")
    if delayed_delta:
        findings.append(
            f"{delayed_delta} AOF write(s) postponed in the last {interval} s because a background fsync ran "
            "over 2 s (aof_delayed_fsync): the disk is not keeping up"
        )
    if report["aof_pending_bio_fsync"]:
        findings.append(
            f"{report['aof_pending_bio_fsync']} background fsync(s) pending right now (normal for a moment "
            "with everysec; pending at every look means the disk lags)"
        )
    if report["aof_last_write_status"] not in (None, "ok"):
        findings.append(
            f"the last AOF write failed (aof_last_write_status {report['aof_last_write_status']})"
        )
    if not threshold_ms:
        findings.append(
            "the latency monitor is off (latency-monitor-threshold 0), so stalls are not recorded: "
            "set latency-monitor-threshold (e.g. 100 ms) with redis_aof.configured"
        )
    for name, event in sorted(aof_events.items(), key=lambda kv: -kv[1]["max_ms"]):
        findings.append(
            f"{name}: worst {event['max_ms']} ms, latest {event['latest_ms']} ms at {iso(event['time'])}"
        )
    if found is not None and found["fsync_too_long"]:
        findings.append(f"{len(found['fsync_too_long'])} '{FSYNC_TOO_LONG}' line(s) in {log_path}")
    if found is not None and found["aof_error"]:
        findings.append(f"{len(found['aof_error'])} AOF error line(s) in {log_path}")
    if found is not None and found["watchdog"]:
        aof = sum(1 for t in found["watchdog"] if t["aof"])
        findings.append(
            f"{len(found['watchdog'])} watchdog stack trace(s) in {log_path}, {aof} inside AOF code"
        )
    stalled = bool(delayed_delta or aof_events or (found and (found["fsync_too_long"] or found["aof_error"])))
    if not stalled:
        findings.append("no AOF stall seen" + ("" if threshold_ms else " (but the latency monitor is off)"))
    report["findings"] = findings
    report["stalled"] = stalled
    return report


def iso(stamp):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp)) if stamp else None


def recommend_from(latency_rows, histories, log_lines, threshold_ms, margin=1.5, minimum=1, aof_only=False):
    """
    The timeout advice of ``redis_aof.recommend_timeout`` from raw inputs.
    ``histories`` maps an event to its ``LATENCY HISTORY`` rows.
    """
    events = parse_latency_latest(latency_rows)
    evidence = []
    for name, event in events.items():
        if aof_only and not event["aof"]:
            continue
        samples = histories.get(name) or []
        worst = max([event["max_ms"]] + [int(row[1]) for row in samples])
        evidence.append(
            {
                "source": "LATENCY",
                "event": name,
                "aof": event["aof"],
                "worst_ms": worst,
                "samples": len(samples),
                "last": iso(event["time"]),
            }
        )
    found = scan_log(log_lines) if log_lines is not None else {"fsync_too_long": [], "watchdog": []}
    if found["fsync_too_long"]:
        evidence.append(
            {
                "source": "log",
                "event": "fsync-over-2s",
                "aof": True,
                "worst_ms": FSYNC_TOO_LONG_MS,
                "samples": len(found["fsync_too_long"]),
                "last": None,
            }
        )
    blocked = [t for t in found["watchdog"] if t["aof"] or not aof_only]
    if blocked:
        evidence.append(
            {
                "source": "log",
                "event": "watchdog",
                "aof": any(t["aof"] for t in blocked),
                "worst_ms": None,
                "samples": len(blocked),
                "last": iso(blocked[-1]["time"]),
            }
        )
    measured = [e for e in evidence if e["worst_ms"] is not None]
    reasoning = []
    worst = max(measured, key=lambda e: e["worst_ms"]) if measured else None
    if worst is not None:
        basis_ms = worst["worst_ms"]
        kind = "AOF" if worst["aof"] else "event-loop"
        reasoning.append(
            f"worst {kind} stall observed: {basis_ms} ms ({worst['event']}, from {worst['source']}"
            + (f", {worst['samples']} sample(s)" if worst["samples"] else "")
            + ")"
        )
        if worst["source"] == "log":
            reasoning.append(
                f"'{FSYNC_TOO_LONG}' means a background fsync ran over 2 s; the real stall may be longer: "
                "enable the latency monitor to measure it"
            )
    elif threshold_ms:
        basis_ms = threshold_ms
        reasoning.append(
            f"no stall at or above the latency-monitor-threshold of {threshold_ms} ms was recorded, "
            f"so every stall was shorter than {threshold_ms} ms"
        )
    else:
        basis_ms = None
        reasoning.append(
            "no evidence: the latency monitor is off (latency-monitor-threshold 0) and the log shows no AOF stall; "
            "set latency-monitor-threshold (e.g. 100 ms), let a busy period pass, and ask again"
        )
    timeout = None
    if basis_ms is not None:
        timeout = max(int(minimum), int(math.ceil(basis_ms * float(margin) / 1000.0)))
        reasoning.append(
            f"client timeout {timeout} s = {basis_ms} ms x margin {margin}, rounded up to whole seconds"
            + (f" (at least {minimum} s)" if timeout == int(minimum) else "")
        )
    if any(e["source"] == "log" and e["event"] == "watchdog" for e in evidence):
        reasoning.append(
            "the log has watchdog stack traces of a blocked event loop: read them with redis_aof.watchdog"
        )
    if worst is not None and worst["aof"] and worst["worst_ms"] >= 1000:
        reasoning.append(
            "an AOF stall of a second or more is the disk: a longer client timeout only hides it. Move the AOF "
            "to faster storage (SSD); if stalls coincide with rewrites (aof-write-active-child), "
            "no-appendfsync-on-rewrite yes trades durability during rewrites for latency"
        )
    return {
        "timeout_s": timeout,
        "worst_ms": basis_ms if worst is not None else None,
        "margin": float(margin),
        "evidence": evidence,
        "reasoning": reasoning,
    }
