"""
The circuit breaker and the request slots shared by a master's processes:
real files, real ``flock``, several real processes.
"""

import importlib
import logging
import multiprocessing
import os
import sys
import time

import opsalt_ops_http_json_breaker
import pytest
from opsalt_ops_http_json_breaker import BLOCKED, CLOSED, HALF_OPEN, OPEN, PASS, PROBE, Breaker, Slots

ENDPOINT = "https://assets.example.com:443"


@pytest.fixture
def make(tmp_path):
    def _make(**kwargs):
        kwargs.setdefault("cooloff", 0.3)
        return Breaker(str(tmp_path), ENDPOINT, **kwargs)

    return _make


def _open(breaker):
    for _ in range(breaker.threshold):
        breaker.failure("read timeout")
    assert breaker.read()["state"] == OPEN


def test_endpoint_is_scheme_host_and_port():
    assert opsalt_ops_http_json_breaker.endpoint_of("https://u:p@assets.example.com/api/%s/") == ENDPOINT
    assert opsalt_ops_http_json_breaker.endpoint_of("http://127.0.0.1:8089/x") == "http://127.0.0.1:8089"
    assert opsalt_ops_http_json_breaker.endpoint_of("http://[::1]/x") == "http://[::1]:80"


def test_opens_after_consecutive_failures_only(make):
    breaker = make(failures=3)
    for _ in range(5):  # a success between failures: never three in a row
        breaker.failure("HTTP 503")
        breaker.failure("HTTP 503")
        breaker.success()
    assert breaker.read()["state"] == CLOSED
    assert breaker.admit() == (PASS, None)
    _open(breaker)
    assert breaker.admit() == (BLOCKED, None)
    assert breaker.read()["reason"] == "read timeout"


def test_half_open_admits_exactly_one_probe_then_closes(make):
    breaker = make(failures=1)
    _open(breaker)
    time.sleep(0.35)
    verdict, token = breaker.admit()
    assert verdict == PROBE and token
    assert [breaker.admit()[0] for _ in range(5)] == [BLOCKED] * 5  # the others serve stale
    assert breaker.read()["state"] == HALF_OPEN
    breaker.success(token)
    assert breaker.read()["state"] == CLOSED
    assert breaker.admit() == (PASS, None)


def test_failed_probe_reopens_with_a_growing_capped_cooloff(make):
    breaker = make(failures=1, cooloff=0.1, cooloff_max=0.35)
    _open(breaker)
    cooloffs = []
    for _ in range(3):
        time.sleep(breaker.read()["cooloff"] + 0.05)
        verdict, token = breaker.admit()
        assert verdict == PROBE
        breaker.failure("connection failed", token)
        state = breaker.read()
        assert state["state"] == OPEN
        cooloffs.append(state["cooloff"])
    assert cooloffs == [0.2, 0.35, 0.35]
    time.sleep(0.4)
    verdict, token = breaker.admit()
    breaker.success(token)
    assert breaker.read()["cooloff"] == 0.1  # closing resets it


def test_stragglers_do_not_flap_the_breaker(make):
    breaker = make(failures=2)
    _open(breaker)
    breaker.success()  # a request that started before the breaker opened
    assert breaker.read()["state"] == OPEN
    time.sleep(0.35)
    verdict, token = breaker.admit()
    assert verdict == PROBE
    breaker.failure("read timeout")  # another straggler, not the probe
    breaker.success("not-the-probe-token")
    assert breaker.read()["state"] == HALF_OPEN
    breaker.success(token)
    breaker.failure("read timeout")  # one failure after closing: still closed
    assert breaker.read()["state"] == CLOSED


def test_a_deliberate_bypass_fetch_closes_it(make):
    breaker = make(failures=1, cooloff=60)
    _open(breaker)
    breaker.failure("read timeout", opsalt_ops_http_json_breaker.BYPASS)  # a failing bypass changes nothing
    assert breaker.read()["state"] == OPEN
    breaker.success(opsalt_ops_http_json_breaker.BYPASS)
    assert breaker.read()["state"] == CLOSED
    assert breaker.read()["reason"] == "a bypass_breaker fetch succeeded"


def test_a_dead_probe_lease_runs_out_and_another_probes(make):
    breaker = make(failures=1, lease=0.2)
    _open(breaker)
    time.sleep(0.35)
    assert breaker.admit()[0] == PROBE  # this probe never reports back
    assert breaker.admit()[0] == BLOCKED
    time.sleep(0.25)
    verdict, token = breaker.admit()
    assert verdict == PROBE
    breaker.success(token)
    assert breaker.read()["state"] == CLOSED


def test_a_probe_that_found_no_slot_gives_its_turn_back(make):
    breaker = make(failures=1, lease=60)
    _open(breaker)
    time.sleep(0.35)
    _verdict, token = breaker.admit()
    breaker.give_back(token)
    assert breaker.admit()[0] == PROBE  # at once, not after the 60 s lease


def test_state_survives_a_restart(make, tmp_path):
    _open(make(failures=1, cooloff=30))
    restarted = Breaker(str(tmp_path), ENDPOINT, failures=1, cooloff=30)  # a new master process
    assert restarted.admit() == (BLOCKED, None)
    report = restarted.report()
    assert report["state"] == OPEN and 29 < report["probe_in"] <= 30
    assert oct(os.stat(restarted.path).st_mode & 0o777) == oct(0o600)


def test_a_torn_or_foreign_state_file_reads_as_closed(make):
    breaker = make()
    os.makedirs(os.path.dirname(breaker.path), exist_ok=True)
    for junk in ('{"state": "open", "fail', '["x"]', '{"state": "bogus"}'):
        with open(breaker.path, "w", encoding="utf-8") as handle:
            handle.write(junk)
        assert breaker.admit() == (PASS, None)


def test_logs_once_per_state_change(make, caplog):
    caplog.set_level(logging.DEBUG, logger="opsalt_ops_http_json_breaker")
    breaker = make(failures=3)
    for _ in range(10):
        breaker.failure("read timeout")
        breaker.admit()
        breaker.note_blocked()
    time.sleep(0.35)
    _verdict, token = breaker.admit()
    breaker.admit()
    breaker.success(token)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert "open after 3 consecutive failures (read timeout)" in messages[0]
    assert ENDPOINT in messages[0]
    assert "half-open" in messages[1]
    assert "closed" in messages[2] and "(8 fetches served without the API" in messages[2]


def test_disabled_breaker_always_passes(make):
    breaker = make(failures=0)
    for _ in range(10):
        breaker.failure("read timeout")
    assert breaker.admit() == (PASS, None)
    assert not os.path.exists(breaker.path)


# -- several processes --------------------------------------------------------


def _fail_many(state_dir, barrier, count):
    breaker = Breaker(state_dir, ENDPOINT, failures=10_000)
    barrier.wait()
    for _ in range(count):
        breaker.failure("HTTP 502")


def _admit_after(state_dir, barrier, results):
    breaker = Breaker(state_dir, ENDPOINT, failures=1, cooloff=0.3)
    barrier.wait()
    results.put(breaker.admit()[0])


def _processes(count, target, state_dir, extra):
    """
    ``count`` forked processes running ``target(state_dir, barrier, extra)``
    released together.
    """
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(count)
    procs = [ctx.Process(target=target, args=(state_dir, barrier, extra)) for _ in range(count)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0


def test_concurrent_processes_lose_no_update(tmp_path):
    _processes(4, _fail_many, str(tmp_path), 50)
    assert Breaker(str(tmp_path), ENDPOINT, failures=10_000).read()["failures"] == 200


def test_concurrent_processes_elect_one_probe(tmp_path):
    _open(Breaker(str(tmp_path), ENDPOINT, failures=1, cooloff=0.3))
    time.sleep(0.35)
    results = multiprocessing.get_context("fork").Queue()
    _processes(6, _admit_after, str(tmp_path), results)
    verdicts = sorted(results.get(timeout=5) for _ in range(6))
    assert verdicts == [BLOCKED] * 5 + [PROBE]


# -- slots ---------------------------------------------------------------------


def _hold_slot(state_dir, ready):
    slot = Slots(state_dir, ENDPOINT, 2).acquire(1)
    assert slot is not None
    ready.set()
    time.sleep(60)  # killed by the test


def test_slots_bound_concurrency_across_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    holders = []
    try:
        for _ in range(2):
            ready = ctx.Event()
            proc = ctx.Process(target=_hold_slot, args=(str(tmp_path), ready))
            proc.start()
            holders.append(proc)
            assert ready.wait(10)
        slots = Slots(str(tmp_path), ENDPOINT, 2)
        started = time.monotonic()
        assert slots.acquire(0.2) is None  # both taken by the other processes
        assert 0.2 <= time.monotonic() - started < 1
        holders[0].kill()  # a worker that dies gives its slot back (the kernel drops its lock)
        holders[0].join(10)
        slot = slots.acquire(1)
        assert slot is not None
        slots.release(slot)
    finally:
        for proc in holders:
            proc.kill()
            proc.join(10)


def test_zero_slots_means_unlimited(tmp_path):
    slots = Slots(str(tmp_path), ENDPOINT, 0)
    held = [slots.acquire(0) for _ in range(50)]
    assert None not in held
