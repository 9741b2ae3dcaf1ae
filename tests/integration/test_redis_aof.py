"""
redis_aof through the real salt-master and salt-minion: pillar from the demo
asset API (ops_http_json), the SLS tree from the master's file_roots, two
real redis-server instances (one with a password).
"""

from tests.support.redis_server import (
    PASSWORD,
    incr_loop,
    redis_server,
    redis_server_pw,
)

COMMON = {"appendfsync": "everysec", "latency-monitor-threshold": 100}


def _pillar(cache, sessions, **sessions_settings):
    return {
        "password": PASSWORD,  # the module's default connection password
        "settings": COMMON,
        "instances": {
            "cache": {"host": "127.0.0.1", "port": cache.port, "settings": {"appendonly": True}},
            "sessions": {
                "instance": sessions.instance,
                "password": PASSWORD,
                "settings": dict(
                    {"appendonly": True, "appendfsync": "always", "no-appendfsync-on-rewrite": True},
                    **sessions_settings,
                ),
            },
        },
    }


def _states(ret):
    assert isinstance(ret.data, dict), ret
    return {state["__id__"]: state for state in ret.data.values()}


def _config(server, *keys):
    with server.client() as client:
        return {key: client.config_get(key)[key] for key in keys}


def _fill(server, count=300):
    with server.client() as client:
        client.mset({f"k{i}": f"v{i}" for i in range(count)})


def _intact(server, count=300):
    with server.client() as client:
        return client.mget([f"k{i}" for i in range(count)]) == [f"v{i}" for i in range(count)]


def test_state_apply_from_pillar_then_no_changes(
    salt_call_cli, salt_minion, set_pillar, redis_server, redis_server_pw
):
    cache, sessions = redis_server, redis_server_pw
    for server in (cache, sessions):
        _fill(server)
    set_pillar("redis_aof", _pillar(cache, sessions))
    before = {s.port: (s.read_config(), _config(s, "appendonly", "appendfsync")) for s in (cache, sessions)}

    ret = salt_call_cli.run("state.apply", "redis_aof", "test=True")
    assert ret.returncode == 0, ret
    states = _states(ret)
    assert set(states) == {
        "redis_aof-cache-aof-settings-configured",
        "redis_aof-sessions-aof-settings-configured",
    }
    assert all(state["result"] is None for state in states.values()), states
    assert {
        s.port: (s.read_config(), _config(s, "appendonly", "appendfsync")) for s in (cache, sessions)
    } == before

    # A client doing INCRs on its own connection all through the real run.
    with incr_loop(sessions) as counts:
        ret = salt_call_cli.run("state.apply", "redis_aof")
    assert ret.returncode == 0, ret
    states = _states(ret)
    assert all(state["result"] is True for state in states.values()), states
    assert states["redis_aof-sessions-aof-settings-configured"]["changes"]["settings"]["appendfsync"] == {
        "old": "everysec",
        "new": "always",
    }
    assert counts["errors"] == [] and counts["ok"] > 0
    with sessions.client() as client:
        assert int(client.get("counter")) == counts["ok"]

    assert _config(cache, "appendonly", "appendfsync", "latency-monitor-threshold") == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "latency-monitor-threshold": "100",
    }
    assert _config(sessions, "appendonly", "appendfsync", "no-appendfsync-on-rewrite") == {
        "appendonly": "yes",
        "appendfsync": "always",
        "no-appendfsync-on-rewrite": "yes",
    }
    assert "appendfsync always" in sessions.read_config().splitlines()
    assert "appendonly yes" in cache.read_config().splitlines()

    ret = salt_call_cli.run("state.apply", "redis_aof")
    assert ret.returncode == 0, ret
    assert all(state["result"] is True and state["changes"] == {} for state in _states(ret).values()), (
        ret.data
    )

    for server in (cache, sessions):
        server.restart()
        assert _intact(server)
    assert _config(sessions, "appendonly", "appendfsync")["appendfsync"] == "always"

    # The password went through pillar, SLS and state: never into the minion's debug log.
    with open(salt_minion.config["log_file"], encoding="utf-8", errors="replace") as handle:
        minion_log = handle.read()
    assert "redis_aof/init.sls" in minion_log  # the log is live and covers this run
    assert PASSWORD not in minion_log


def test_bad_pillar_fails_and_changes_nothing(salt_call_cli, set_pillar, redis_server, redis_server_pw):
    cache, sessions = redis_server, redis_server_pw
    set_pillar("redis_aof", _pillar(cache, sessions, appendfsync="sometimes", timeout=-3))
    before = {
        s.port: (s.read_config(), _config(s, "appendonly", "appendfsync", "timeout"))
        for s in (cache, sessions)
    }
    ret = salt_call_cli.run("state.apply", "redis_aof")
    assert ret.returncode != 0
    states = _states(ret)
    bad = states["redis_aof-sessions-aof-settings-configured"]
    assert bad["result"] is False
    assert "appendfsync must be one of" in bad["comment"] and "timeout must be between 0" in bad["comment"]
    assert PASSWORD not in repr(ret.data)
    after = {
        s.port: (s.read_config(), _config(s, "appendonly", "appendfsync", "timeout"))
        for s in (cache, sessions)
    }
    assert after[sessions.port] == before[sessions.port]


def test_clean_hands_settings_back_to_defaults(salt_call_cli, set_pillar, redis_server, redis_server_pw):
    cache, sessions = redis_server, redis_server_pw
    set_pillar("redis_aof", _pillar(cache, sessions))
    assert salt_call_cli.run("state.apply", "redis_aof").returncode == 0
    ret = salt_call_cli.run("state.apply", "redis_aof.clean")
    assert ret.returncode == 0, ret
    assert set(_states(ret)) == {
        "redis_aof-cache-aof-settings-back-to-redis-defaults",
        "redis_aof-sessions-aof-settings-back-to-redis-defaults",
    }
    assert _config(
        sessions, "appendonly", "appendfsync", "no-appendfsync-on-rewrite", "latency-monitor-threshold"
    ) == {
        "appendonly": "no",
        "appendfsync": "everysec",
        "no-appendfsync-on-rewrite": "no",
        "latency-monitor-threshold": "0",
    }
    assert "appendonly no" in sessions.read_config().splitlines()
    ret = salt_call_cli.run("state.apply", "redis_aof.clean")
    assert all(state["changes"] == {} for state in _states(ret).values()), ret.data


def test_module_functions_through_the_minion(salt_call_cli, set_pillar, redis_server, redis_server_pw):
    cache, sessions = redis_server, redis_server_pw
    set_pillar("redis_aof", _pillar(cache, sessions))
    # No password argument: it defaults from pillar redis_aof:password.
    ret = salt_call_cli.run("redis_aof.status", sessions.instance)
    assert ret.returncode == 0, ret
    assert ret.data["version"].startswith(("5.", "6.", "7."))
    assert ret.data["config_file"] == sessions.config_file
    assert "aof_enabled" in ret.data["persistence"]
    assert PASSWORD not in repr(ret.data)

    with sessions.client() as client:
        client.config_set("latency-monitor-threshold", 50)
        client.execute_command("DEBUG", "SLEEP", 0.3)
    ret = salt_call_cli.run("redis_aof.recommend_timeout", sessions.instance)
    assert ret.returncode == 0, ret
    assert ret.data["worst_ms"] >= 300 and ret.data["timeout_s"] >= 1
    ret = salt_call_cli.run("redis_aof.stalls", sessions.instance, "interval=0")
    assert ret.returncode == 0, ret
    assert ret.data["other_latency_events"]["command"]["max_ms"] >= 300

    ret = salt_call_cli.run("sys.doc", "redis_aof")
    assert ret.returncode == 0, ret
    for func in (
        "status",
        "diff",
        "configure",
        "validate",
        "defaults",
        "stalls",
        "watchdog",
        "recommend_timeout",
    ):
        assert "CLI Example" in ret.data[f"redis_aof.{func}"], func
    ret = salt_call_cli.run("sys.state_doc", "redis_aof.configured")
    assert ret.returncode == 0, ret
    assert "CLI Example" in ret.data["redis_aof.configured"]
