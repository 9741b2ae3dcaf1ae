"""
Coordination toward one asset-API endpoint shared by every process of a
salt-master: a circuit breaker and a bounded set of request slots, for
``opsalt_ops_http_json`` (formerly ``opsalt_breaker``: that import still
works, hands back this module and logs a deprecation warning).

Both live in files under one state directory (the master's cache dir), so
the master's forked worker processes, the runner and a restarted master all
see the same state:

- ``<slug>.json``: the breaker's state, replaced atomically (temp file and
  rename), so a lock-free read never sees a torn file;
- ``<slug>.lock``: ``fcntl.flock`` around every read-modify-write;
- ``<slug>.slot<N>``: one file per request slot, held with a non-blocking
  ``flock`` for the length of one request. The kernel drops a dead
  process's locks, so a crashed worker never leaks a slot.

Plain Python (no Salt dunders): importable from the installed package and as
a synced ``_utils`` module.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import time
import urllib.parse
import uuid

import opsalt_files
import opsalt_wait

log = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"
# admit() answers
PASS = "pass"  # breaker closed: go ahead
PROBE = "probe"  # you are the one probe of a half-open breaker
BLOCKED = "blocked"  # open, or another worker probes: do not touch the network
# The token of a fetch an operator sent past the breaker on purpose
# (``ops_http_json.fetch bypass_breaker=True``): its success closes the breaker.
BYPASS = "bypass"

SLOT_POLL = 0.02


def endpoint_of(url):
    """
    ``scheme://host:port`` of ``url`` (the port made explicit): the unit the
    breaker and the slots are kept for. Credentials and path are dropped.
    """
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def _slug(endpoint):
    readable = "".join(c if c.isalnum() else "_" for c in endpoint)[:60]
    return f"{readable}-{hashlib.sha256(endpoint.encode()).hexdigest()[:12]}"


class Breaker:
    """
    The circuit breaker of one endpoint.

    ``failures`` consecutive counted failures open it for ``cooloff`` seconds;
    then the first caller of :meth:`admit` becomes the probe (a lease of
    ``lease`` seconds, renewed by the next caller if the probe dies), while
    everyone else stays blocked. The probe's success closes it; its failure
    opens it again with the cool-off doubled up to ``cooloff_max``. Only the
    probe moves a breaker out of open/half-open, so stragglers (requests that
    started before it opened) cannot make it flap. ``failures=0`` disables it.
    """

    def __init__(self, state_dir, endpoint, failures=3, cooloff=30.0, cooloff_max=None, lease=30.0):
        self.state_dir = state_dir
        self.endpoint = endpoint
        self.threshold = int(failures)
        self.cooloff = float(cooloff)
        self.cooloff_max = float(cooloff if cooloff_max is None else max(cooloff_max, cooloff))
        self.lease = float(lease)
        slug = _slug(endpoint)
        self.path = os.path.join(state_dir, slug + ".json")
        self.lock_path = os.path.join(state_dir, slug + ".lock")

    @property
    def enabled(self):
        return self.threshold > 0

    # -- state file ---------------------------------------------------------

    def _initial(self):
        return {
            "endpoint": self.endpoint,
            "state": CLOSED,
            "failures": 0,
            "reason": None,
            "opened_at": None,
            "cooloff": self.cooloff,
            "probe": None,
            "probe_until": None,
            "stale_served": 0,
            "changed_at": None,
        }

    def read(self):
        """
        The current state (a dict; see :meth:`_initial` for the keys). A
        missing or unreadable file reads as closed.
        """
        state = self._initial()
        try:
            with open(self.path, encoding="utf-8") as handle:
                stored = json.load(handle)
        except (OSError, ValueError):
            return state
        if isinstance(stored, dict) and stored.get("state") in (CLOSED, OPEN, HALF_OPEN):
            state.update(stored)
        return state

    @contextlib.contextmanager
    def _locked(self):
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self.read()
        finally:
            os.close(fd)  # releases the lock

    def _write(self, state):
        payload = json.dumps(state, sort_keys=True)
        opsalt_files.atomic_write(self.path, payload, mode=0o600, make_backup=False, durable=False)

    def _change(self, state, new, reason, now):
        old = state["state"]
        state.update(state=new, changed_at=now)
        if reason is not None:
            state["reason"] = reason
        return old

    # -- decisions ----------------------------------------------------------

    def _probe_due(self, state, now):
        if state["state"] == OPEN:
            return now >= (state["opened_at"] or 0) + state["cooloff"]
        if state["state"] == HALF_OPEN:
            return now >= (state["probe_until"] or 0)
        return False

    def admit(self):
        """
        ``(verdict, token)``: ``PASS`` (closed), ``PROBE`` with the probe's
        token, or ``BLOCKED``. The closed case costs one small file read.
        """
        if not self.enabled:
            return PASS, None
        now = time.time()
        state = self.read()
        if state["state"] == CLOSED:
            return PASS, None
        if not self._probe_due(state, now):
            return BLOCKED, None
        with self._locked() as state:
            if state["state"] == CLOSED:
                return PASS, None
            if not self._probe_due(state, now):
                return BLOCKED, None
            token = uuid.uuid4().hex
            renewed = state["state"] == HALF_OPEN
            self._change(state, HALF_OPEN, None, now)
            state.update(probe=token, probe_until=now + self.lease)
            self._write(state)
        if renewed:
            log.warning(
                "ops_http_json: breaker for %s: the probe did not report back; probing again", self.endpoint
            )
        else:
            log.warning(
                "ops_http_json: breaker for %s half-open after %.0f s: one request probes the API",
                self.endpoint,
                state["cooloff"],
            )
        return PROBE, token

    def give_back(self, token):
        """
        The probe ``token`` could not run (no free slot): let the next caller
        probe at once instead of waiting for the lease to run out.
        """
        if not self.enabled or token is None:
            return
        with self._locked() as state:
            if state["state"] == HALF_OPEN and state["probe"] == token:
                state["probe_until"] = 0
                self._write(state)

    def success(self, token=None):
        """
        The API answered. Resets the failure count; the probe's success
        (or a deliberate :data:`BYPASS` fetch's) closes the breaker.
        """
        if not self.enabled:
            return
        state = self.read()
        if state["state"] == CLOSED and not state["failures"]:
            return  # the hot path: nothing to write
        if state["state"] != CLOSED and not self._closes(state, token):
            return
        with self._locked() as state:
            if state["state"] == CLOSED:
                if state["failures"]:
                    state["failures"] = 0
                    self._write(state)
                return
            if not self._closes(state, token):
                return
            stale = state["stale_served"]
            fresh = self._initial()
            fresh["changed_at"] = time.time()
            fresh["reason"] = "probe succeeded" if token != BYPASS else "a bypass_breaker fetch succeeded"
            self._write(fresh)
        log.warning(
            "ops_http_json: breaker for %s closed: %s (%d fetches served without the API while open)",
            self.endpoint,
            fresh["reason"],
            stale,
        )

    @staticmethod
    def _closes(state, token):
        return token is not None and (token == BYPASS or token == state["probe"])

    def failure(self, reason, token=None):
        """
        A counted failure (``reason`` is safe to log). Opens the breaker at
        the threshold; the probe's failure opens it again with a longer
        cool-off. Failures of other requests while open change nothing.
        """
        if not self.enabled:
            return
        now = time.time()
        with self._locked() as state:
            if state["state"] == CLOSED:
                state["failures"] += 1
                if state["failures"] < self.threshold:
                    self._write(state)
                    return
                self._change(state, OPEN, reason, now)
                state.update(
                    opened_at=now, cooloff=self.cooloff, probe=None, probe_until=None, stale_served=0
                )
                self._write(state)
                message = f"open after {state['failures']} consecutive failures"
            elif state["state"] == HALF_OPEN and token is not None and token == state["probe"]:
                self._change(state, OPEN, reason, now)
                cooloff = min(state["cooloff"] * 2, self.cooloff_max)
                state.update(opened_at=now, cooloff=cooloff, probe=None, probe_until=None)
                self._write(state)
                message = "open again: the probe failed"
            else:
                return
        log.warning(
            "ops_http_json: breaker for %s %s (%s); for %.0f s fetches serve cached documents "
            "(or fail, per on_error) without contacting the API",
            self.endpoint,
            message,
            reason,
            state["cooloff"],
        )

    def note_blocked(self):
        """
        Count one fetch answered without the API while open (reported once,
        when the breaker closes).
        """
        if not self.enabled:
            return
        with self._locked() as state:
            if state["state"] != CLOSED:
                state["stale_served"] += 1
                self._write(state)

    def report(self):
        """
        The state for people: ``state``, ``endpoint``, ``reason``,
        ``failures``, ``cooloff``, ``reopens_in`` (seconds, open only) and
        ``stale_served``.
        """
        state = self.read()
        out = {
            key: state[key] for key in ("endpoint", "state", "reason", "failures", "cooloff", "stale_served")
        }
        out["enabled"] = self.enabled
        out["probe_in"] = None
        if state["state"] == OPEN:
            left = max(0.0, (state["opened_at"] or 0) + state["cooloff"] - time.time())
            out["probe_in"] = math.ceil(left * 10) / 10  # 0 only once a probe is due
        return out


class Slots:
    """
    At most ``count`` concurrent requests toward one endpoint across all
    processes that share ``state_dir``. ``count=0`` means unlimited.
    """

    def __init__(self, state_dir, endpoint, count):
        self.state_dir = state_dir
        self.count = int(count)
        self.prefix = os.path.join(state_dir, _slug(endpoint) + ".slot")

    def acquire(self, wait):
        """
        A held slot (pass it to :meth:`release`), or ``None`` when none came
        free within ``wait`` seconds.
        """
        if self.count <= 0:
            return -1
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        # A tuple, since a descriptor may be 0 (false) in a daemon.
        held = opsalt_wait.until(self._try_one, wait, interval=SLOT_POLL, max_interval=SLOT_POLL)
        return held[0] if held else None

    def _try_one(self):
        """``(fd,)`` of a slot locked now, or ``None`` when all are held."""
        start = random.randrange(self.count)  # spread workers over the files
        for i in range(self.count):
            fd = os.open(f"{self.prefix}{(start + i) % self.count}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return (fd,)
            except BlockingIOError:
                os.close(fd)
        return None

    def release(self, slot):
        """
        Give back a slot from :meth:`acquire`.
        """
        if slot is not None and slot >= 0:
            os.close(slot)
