"""
redis_aof through Salt's own loaders, in process, against real redis-server
instances (tests/support/redis_server.py): the state and the module's
diagnostics on live servers, restarts included.
"""

import math
import os
import threading
import time

import pytest

from tests.support.loaders import make_loaders
from tests.support.procs import free_port
from tests.support.redis_server import (
    PASSWORD,
    incr_loop,
    redis_server,
    redis_server_no_config,
    redis_server_pw,
)

MANAGED = (
    "appendonly",
    "appendfsync",
    "no-appendfsync-on-rewrite",
    "auto-aof-rewrite-percentage",
    "auto-aof-rewrite-min-size",
    "aof-use-rdb-preamble",
    "latency-monitor-threshold",
    "timeout",
)


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    return make_loaders(tmp_path_factory.mktemp("redis-aof-loaders"))


@pytest.fixture
def aof(loaders):
    return loaders.modules.redis_aof


@pytest.fixture
def configured(loaders):
    return loaders.states.redis_aof.configured


def _live(server):
    with server.client() as client:
        return {key: client.config_get(key)[key] for key in MANAGED}


def _conf_dir_listing(server):
    return sorted(os.listdir(server.conf_dir))


def _fill(server, count=500):
    with server.client() as client:
        pipe = client.pipeline()
        for i in range(count):
            pipe.set(f"key:{i}", f"value-{i}")
        pipe.hset("hash", mapping={f"f{i}": i for i in range(50)})
        pipe.execute()
        return {f"key:{i}": f"value-{i}" for i in range(count)}


def test_turn_aof_on_persists_and_survives_restart(redis_server_pw, configured):
    server = redis_server_pw
    keys = _fill(server)
    wanted = {
        "appendonly": True,
        "appendfsync": "always",
        "no-appendfsync-on-rewrite": True,
        "auto-aof-rewrite-min-size": "128mb",
        "latency-monitor-threshold": 50,
        "timeout": 15,
    }
    ret = configured(server.instance, password=PASSWORD, **wanted)
    assert ret.result is True, ret.comment
    assert ret.changes["settings"]["appendonly"] == {"old": "no", "new": "yes"}
    assert ret.changes["settings"]["auto-aof-rewrite-min-size"] == {"old": "67108864", "new": "134217728"}
    assert ret.changes["config_file"] == server.config_file
    assert PASSWORD not in repr(ret.full_return)

    live = _live(server)
    assert live["appendonly"] == "yes"
    assert live["appendfsync"] == "always"
    assert live["no-appendfsync-on-rewrite"] == "yes"
    assert live["auto-aof-rewrite-min-size"] == "134217728"
    assert live["timeout"] == "15"
    text = server.read_config()
    for line in (
        "appendonly yes",
        "appendfsync always",
        "no-appendfsync-on-rewrite yes",
        "latency-monitor-threshold 50",
        "timeout 15",
    ):
        assert line in text.splitlines(), (line, text)
    with server.client() as client:
        info = client.info("persistence")
    assert info["aof_rewrite_in_progress"] == 0 and info["aof_rewrites"] >= 1
    assert any(
        name.endswith(".manifest") for name in os.listdir(os.path.join(server.data_dir, "appendonlydir"))
    )

    again = configured(server.instance, password=PASSWORD, **wanted)
    assert again.result is True and again.changes == {}, again.full_return

    # save "" in the fixture: after the restart the data can only come from the AOF.
    server.restart()
    assert _live(server) == live
    with server.client() as client:
        assert client.dbsize() == len(keys) + 1
        assert client.mget(list(keys)) == list(keys.values())
        assert client.hget("hash", "f49") == "49"
    assert configured(server.instance, password=PASSWORD, **wanted).changes == {}


def test_switch_appendfsync_test_mode_changes_nothing(redis_server, configured):
    server = redis_server
    before_conf, before_live = server.read_config(), _live(server)
    ret = configured(server.instance, appendfsync="no", test=True)
    assert ret.result is None
    assert ret.changes["settings"] == {"appendfsync": {"old": "everysec", "new": "no"}}
    assert "Would set" in ret.comment
    assert _live(server) == before_live
    assert server.read_config() == before_conf

    ret = configured(server.instance, appendfsync="no")
    assert ret.result is True and ret.changes["settings"]["appendfsync"]["new"] == "no"
    assert _live(server)["appendfsync"] == "no"
    assert "appendfsync no" in server.read_config().splitlines()
    assert configured(server.instance, appendfsync="no", test=True).changes == {}


def test_yaml_booleans_are_the_yes_no_words(redis_server, configured):
    # issue 14: `appendfsync: no` and `appendonly: yes` arrive from YAML (and
    # from `appendfsync=no` on the command line) as booleans
    server = redis_server
    ret = configured(server.instance, appendfsync=False, appendonly=True, aof_use_rdb_preamble=False)
    assert ret.result is True, ret.comment
    assert ret.changes["settings"]["appendfsync"] == {"old": "everysec", "new": "no"}
    assert "(now aof-use-rdb-preamble no, appendfsync no, appendonly yes)" in ret.comment
    assert {k: _live(server)[k] for k in ("appendfsync", "appendonly", "aof-use-rdb-preamble")} == {
        "appendfsync": "no",
        "appendonly": "yes",
        "aof-use-rdb-preamble": "no",
    }
    assert "appendfsync no" in server.read_config().splitlines()
    ret = configured(server.instance, appendfsync=False, appendonly=True, aof_use_rdb_preamble=False)
    assert ret.result is True and ret.changes == {}
    assert "Already as wanted" in ret.comment and "appendfsync no" in ret.comment


def test_incr_loop_sees_no_error_during_state_run(redis_server, configured):
    server = redis_server
    _fill(server, 2000)
    with incr_loop(server) as counts:
        time.sleep(0.2)
        first = configured(server.instance, appendonly=True, appendfsync="everysec")
        second = configured(server.instance, appendfsync="always", **{"no-appendfsync-on-rewrite": True})
        time.sleep(0.2)
    assert first.result is True and second.result is True, (first.comment, second.comment)
    assert counts["errors"] == []
    assert counts["ok"] > 100
    with server.client() as client:
        assert int(client.get("counter")) == counts["ok"]
    server.restart()
    with server.client() as client:
        assert int(client.get("counter")) == counts["ok"]


BAD_INPUT = [
    ({"appendfsync": "sometimes"}, "appendfsync: 'sometimes' must be one of always, everysec, no"),
    ({"timeout": -5}, "timeout must be between 0"),
    ({"auto-aof-rewrite-percentage": "lots"}, "auto-aof-rewrite-percentage must be a whole number"),
    ({"auto-aof-rewrite-min-size": "12xb"}, "auto-aof-rewrite-min-size must be a size"),
    ({"appendonly": "maybe"}, "appendonly: 'maybe' must be one of yes, no"),
    ({"latency-monitor-threshold": 1.5}, "latency-monitor-threshold must be a whole number"),
    ({"nosuch-setting": 1}, "unknown setting 'nosuch-setting'"),
    ({"appendonly": True, "appendfsync": "always", "timeout": -1}, "timeout must be between 0"),
    ({"no-appendfsync-on-rewrite": True, "no_appendfsync_on_rewrite": False}, "is given twice"),
]


@pytest.mark.parametrize("test_mode", [False, True])
@pytest.mark.parametrize("settings,message", BAD_INPUT)
def test_bad_input_fails_and_changes_nothing(redis_server, configured, settings, message, test_mode):
    server = redis_server
    before_conf, before_live, before_files = server.read_config(), _live(server), _conf_dir_listing(server)
    ret = configured(server.instance, test=test_mode, **settings)
    assert ret.result is False
    assert message in ret.comment
    assert ret.changes == {}
    assert _live(server) == before_live
    assert server.read_config() == before_conf
    assert _conf_dir_listing(server) == before_files
    assert not os.path.exists(os.path.join(server.data_dir, "appendonlydir"))


def test_wrong_password_fails_without_leaking_it(redis_server_pw, configured):
    ret = configured(redis_server_pw.instance, password="not-" + PASSWORD, appendonly=True)
    assert ret.result is False
    assert "AuthenticationError" in ret.comment
    assert PASSWORD not in repr(ret.full_return)
    assert _live(redis_server_pw)["appendonly"] == "no"


@pytest.mark.parametrize("test_mode", [False, True])
def test_server_not_running_yet(configured, test_mode):
    # Nothing listens on this port: a dry run says what it would do, a real run fails.
    ret = configured(f"127.0.0.1:{free_port()}", appendonly=True, test=test_mode)
    assert "Connection refused" in ret.comment or "connecting" in ret.comment
    if test_mode:
        assert ret.result is None and ret.changes == {"settings": {"appendonly": {"old": None, "new": "yes"}}}
    else:
        assert ret.result is False and ret.changes == {}
    bad = configured(f"127.0.0.1:{free_port()}", appendfsync="sometimes", test=test_mode)
    assert bad.result is False and "appendfsync: 'sometimes' must be one of" in bad.comment


def test_server_without_config_file_is_live_only(redis_server_no_config, configured):
    server = redis_server_no_config
    ret = configured(server.instance, appendfsync="always", **{"latency-monitor-threshold": 20})
    assert ret.result is True
    assert ret.changes["config_file"] == "none: live only"
    assert "live only" in ret.comment and "restart" in ret.comment
    assert ret.full_return["warnings"]
    assert _live(server)["appendfsync"] == "always"
    assert not os.path.exists(server.config_file)
    again = configured(server.instance, appendfsync="always", **{"latency-monitor-threshold": 20})
    assert again.result is True and again.changes == {}


def test_unwritable_config_file_fails_and_says_live_only(redis_server, configured):
    server = redis_server
    if os.geteuid() == 0 and server.user is None:
        pytest.skip("running as root without a 'redis' user: Redis would run as root and ignore file modes")
    os.chmod(server.config_file, 0o444)
    os.chmod(server.conf_dir, 0o555)
    try:
        before = server.read_config()
        ret = configured(server.instance, appendfsync="no")
        assert ret.result is False
        assert "live but not in" in ret.comment and server.config_file in ret.comment
        assert _live(server)["appendfsync"] == "no"
        assert server.read_config() == before
        # Not converged: a second run still reports the file as pending and fails again.
        assert configured(server.instance, appendfsync="no").result is False
    finally:
        os.chmod(server.conf_dir, 0o755)
        os.chmod(server.config_file, 0o644)
    assert configured(server.instance, appendfsync="no").changes == {"config_file": server.config_file}
    assert "appendfsync no" in server.read_config().splitlines()


def _sleep_later(server, delay, seconds):
    def run():
        time.sleep(delay)
        with server.client() as client:
            client.execute_command("DEBUG", "SLEEP", seconds)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_stalls_sees_a_provoked_stall(redis_server, aof, configured):
    server = redis_server
    assert configured(server.instance, appendonly=True, **{"latency-monitor-threshold": 100}).result is True
    sleeper = _sleep_later(server, 0.1, 0.4)
    report = aof.stalls(server.instance, interval=1)
    sleeper.join()
    assert report["aof_enabled"] is True
    assert report["latency_monitor"] == {"threshold_ms": 100, "enabled": True}
    assert report["other_latency_events"]["command"]["max_ms"] >= 400
    assert report["aof_delayed_fsync"]["delta"] == 0
    assert report["log"]["readable"] is True and report["log"]["path"] == server.log_file
    assert "no AOF stall seen" in report["findings"]


def test_stalls_says_when_the_latency_monitor_is_off(redis_server, aof):
    report = aof.stalls(redis_server.instance, interval=0)
    assert report["latency_monitor"]["enabled"] is False
    assert any("latency monitor is off" in line for line in report["findings"])
    assert report["aof_enabled"] is False


def test_recommend_timeout_covers_the_worst_stall(redis_server, aof, configured):
    server = redis_server
    assert aof.recommend_timeout(server.instance)["timeout_s"] is None
    assert configured(server.instance, **{"latency-monitor-threshold": 100}).result is True
    quiet = aof.recommend_timeout(server.instance)
    assert quiet["timeout_s"] == 1 and "shorter than 100 ms" in " ".join(quiet["reasoning"])
    _sleep_later(server, 0, 0.8).join()
    advice = aof.recommend_timeout(server.instance, margin=2)
    assert advice["worst_ms"] >= 800
    assert advice["timeout_s"] == math.ceil(advice["worst_ms"] * 2 / 1000)
    assert advice["timeout_s"] * 1000 > advice["worst_ms"]
    assert any(e["event"] == "command" and e["samples"] >= 1 for e in advice["evidence"])
    assert aof.recommend_timeout(server.instance, aof_only=True)["worst_ms"] is None


def test_watchdog_catches_the_blocked_stack_and_restores(redis_server, aof):
    server = redis_server
    with server.client() as client:
        client.config_set("watchdog-period", 0)
    sleeper = _sleep_later(server, 0.3, 0.7)
    report = aof.watchdog(server.instance, period=200, duration=1.5)
    sleeper.join()
    assert report["restored_to"] == 0
    with server.client() as client:
        assert client.config_get("watchdog-period")["watchdog-period"] == "0"
    assert report["log"]["readable"] is True
    assert report["traces"], server.read_log()[-3000:]
    assert any("debugCommand" in frame for trace in report["traces"] for frame in trace["frames"])


def test_watchdog_restores_a_previous_period(redis_server, aof):
    with redis_server.client() as client:
        client.config_set("watchdog-period", 5000)
    report = aof.watchdog(redis_server.instance, period=300, duration=0.2)
    assert report["restored_to"] == 5000 and report["traces"] == []
    with redis_server.client() as client:
        assert client.config_get("watchdog-period")["watchdog-period"] == "5000"


def _slow_rewrite(server, keys=1500, delay_us=1000):
    # rdb-key-save-delay (a Redis testing knob) makes the fork child sleep per
    # key, so the initial AOF rewrite takes about keys x delay.
    _fill(server, keys)
    with server.client() as client:
        client.config_set("rdb-key-save-delay", delay_us)


def test_turning_aof_on_waits_for_the_initial_rewrite(redis_server, configured):
    server = redis_server
    _slow_rewrite(server)
    started = time.monotonic()
    ret = configured(server.instance, appendonly=True)
    took = time.monotonic() - started
    assert ret.result is True, ret.comment
    assert took >= 1.0  # 1500 keys x 1 ms in the child
    with server.client() as client:
        info = client.info("persistence")
        assert info["aof_rewrite_in_progress"] == 0 and info["aof_rewrites"] == 1
        assert info["aof_last_bgrewrite_status"] == "ok"
        client.config_set("rdb-key-save-delay", 0)
    assert "appendonly yes" in server.read_config().splitlines()


def test_rewrite_outlasting_wait_timeout_is_not_persisted_yet(redis_server, configured):
    server = redis_server
    _slow_rewrite(server, keys=3000)
    ret = configured(server.instance, appendonly=True, wait_timeout=0.3)
    assert ret.result is False
    assert "still running after 0.3 s" in ret.comment and "run the state again" in ret.comment
    assert _live(server)["appendonly"] == "yes"
    assert "appendonly no" in server.read_config().splitlines()
    with server.client() as client:
        client.config_set("rdb-key-save-delay", 0)
    # The next run finds the live value right and the file behind: it waits
    # for the initial rewrite still running, then persists.
    again = configured(server.instance, appendonly=True)
    assert again.result is True, again.comment
    assert again.changes == {"config_file": server.config_file}
    assert "appendonly yes" in server.read_config().splitlines()
    with server.client() as client:
        assert client.info("persistence")["aof_rewrite_in_progress"] == 0
