"""
What a fleet test or benchmark watches while the master works
(``tests/support/fleet.py``): ``test.ping`` answers to one minion, and the
moments the master served each minion's pillar.
"""

import datetime
import threading
import time

import salt.config
import salt.exceptions
import salt.utils.event

# The master fires this once it has compiled a minion's pillar (Salt's
# default ``minion_data_cache_events: True``).
PILLAR_SERVED_TAG = "minion/refresh/"


class PingProbe:
    """
    ``test.ping`` to one minion every ``interval`` seconds (or as soon as the
    previous one ended), from one ``LocalClient`` made in the probe's own
    thread, from its first answer (the block starts then) until the block
    ends. ``results`` lists ``{"at", "seconds", "ok"}`` (``at``: seconds
    since the thread started); a ping waits up to ``timeout`` seconds, so a
    slow answer is measured rather than cut off; a job the master did not
    take counts as a failed ping (with its ``error``). ``error`` holds an
    exception that stopped the probe.
    """

    def __init__(self, fleet, minion_id, interval=1.0, timeout=30):
        self.fleet = fleet
        self.minion_id = minion_id
        self.interval = interval
        self.timeout = timeout
        self.results = []
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ping-probe", daemon=True)

    def __enter__(self):
        self._thread.start()
        # the block starts once the probe's client is up and has one answer
        deadline = time.monotonic() + self.timeout + 30
        while not self.results and self.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(self.timeout + 30)  # a ping in flight ends within its timeout
        if self._thread.is_alive() and self.error is None:
            self.error = TimeoutError("the ping probe did not stop")
        return False

    def _run(self):
        started = time.monotonic()
        try:
            local = self.fleet.client()
        except Exception as err:  # reported through self.error
            self.error = err
            return
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                result = {"at": round(sent - started, 1)}
                try:
                    ret = local.cmd(self.minion_id, "test.ping", timeout=self.timeout)
                except salt.exceptions.SaltClientError as err:  # the master did not take the job
                    ret = None
                    result["error"] = f"{type(err).__name__}: {str(err)[:60]}"
                took = time.monotonic() - sent
                result.update(seconds=round(took, 2), ok=ret == {self.minion_id: True})
                self.results.append(result)
                self._stop.wait(max(0.0, self.interval - took))
        except Exception as err:  # reported through self.error
            self.error = err
        finally:
            local.destroy()

    def failures(self, within):
        """
        The pings that failed or took more than ``within`` seconds.
        """
        return [p for p in self.results if not p["ok"] or p["seconds"] > within]


class PillarServed:
    """
    A subscription to the master's event bus, made when the ``with`` block
    starts: :meth:`collect` gives, per minion, the seconds from the start of
    the block until the master served its pillar (from the event's own
    time stamp).
    """

    def __init__(self, fleet):
        opts = salt.config.master_config(fleet.master_config)
        self.event = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        self.since = None

    def __enter__(self):
        self.since = time.time()
        return self

    def __exit__(self, *exc):
        self.event.destroy()
        return False

    def collect(self, minion_ids, timeout=30):
        """
        ``{minion_id: seconds}`` for the minions in ``minion_ids`` whose pillar
        the master served since the block started (the first time each), waiting up to
        ``timeout`` seconds for the missing ones.
        """
        wanted = set(minion_ids)
        served = {}
        end = time.monotonic() + timeout
        while wanted - set(served) and time.monotonic() < end:
            event = self.event.get_event(wait=0.5, tag=PILLAR_SERVED_TAG, full=True)
            if not event:
                continue
            minion_id = event["tag"][len(PILLAR_SERVED_TAG) :]
            stamp = datetime.datetime.fromisoformat(event["data"]["_stamp"]).timestamp()
            if minion_id in wanted and minion_id not in served and stamp >= self.since:
                served[minion_id] = round(stamp - self.since, 2)
        return served
