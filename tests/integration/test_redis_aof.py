"""
redis_aof through the real salt-master and salt-minion: pillar from the demo
asset API (ops_http_json), the SLS tree from the master's file_roots, two
real redis-server instances (one with a password).
"""

import json
import os

import pytest

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
    assert (
        "appendfsync: 'sometimes' must be one of" in bad["comment"]
        and "timeout must be between 0" in bad["comment"]
    )
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


POISON = "x:\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny"


def _low(salt_call_cli, set_pillar, key):
    set_pillar(
        "redis_aof",
        {
            "instances": {
                key: {"unix_socket_path": "/run/opsalt-test-none.sock", "settings": {"appendfsync": "no"}}
            }
        },
    )
    ret = salt_call_cli.run("state.show_low_sls", "redis_aof")
    assert ret.returncode == 0, ret
    return ret.data


def test_poisoned_instance_key_becomes_no_state(salt_call_cli, set_pillar):
    # issue 12 finding 1: this key rendered as its own cmd.run state
    benign = _low(salt_call_cli, set_pillar, "benign")
    poisoned = _low(salt_call_cli, set_pillar, POISON)
    assert not any(low["state"] == "cmd" for low in poisoned)
    assert [low["__id__"] for low in poisoned] == ["redis_aof-invalid-name-1-aof-settings-configured"]
    assert [low["__id__"] for low in benign] == ["redis_aof-benign-aof-settings-configured"]
    # the same lowstate apart from the key itself (the ID part and pillar_instance)
    assert [low["pillar_instance"] for low in poisoned] == [POISON]

    def rest(low):
        return [{k: v for k, v in s.items() if k not in ("__id__", "pillar_instance")} for s in low]

    assert rest(poisoned) == rest(benign)
    # refused, on test=True as well, with a message naming the key
    for extra in (["test=True"], []):
        for sls in ("redis_aof", "redis_aof.clean"):
            ret = salt_call_cli.run("state.apply", sls, *extra)
            assert ret.returncode != 0, ret
            (state,) = _states(ret).values()
            assert state["result"] is False and not state["changes"]
            assert "redis_aof:instances: 'x:\\n  cmd.run" in state["comment"]
            assert "not a valid instance name" in state["comment"]
    assert not os.path.exists("/tmp/PWNED")


def test_passwords_never_in_rendered_sls(salt_call_cli, set_pillar, redis_server, redis_server_pw):
    # issue 12 finding 5: the state reads the password from the pillar at run time
    set_pillar("redis_aof", _pillar(redis_server, redis_server_pw))
    for sls in ("init", "clean"):
        ret = salt_call_cli.run(
            "slsutil.renderer", f"salt://redis_aof/{sls}.sls", "default_renderer=jinja", "tpldir=redis_aof"
        )
        assert ret.returncode == 0, ret
        assert "pillar_instance" in ret.stdout and "sessions" in ret.stdout
        assert PASSWORD not in ret.stdout
    ret = salt_call_cli.run("state.show_sls", "redis_aof")
    assert ret.returncode == 0 and PASSWORD not in ret.stdout


def test_yaml_no_from_an_sls_and_the_command_line(salt_call_cli, set_pillar, redis_server):
    # issue 14: `appendfsync: no` in an SLS (YAML false) and `appendfsync=no`
    # on the command line mean the word no
    sls = (
        "redis-yaml-no:\n"
        "  redis_aof.configured:\n"
        f"    - name: {redis_server.instance}\n"
        "    - appendfsync: no\n"
        "    - aof-use-rdb-preamble: no\n"
        "    - appendonly: yes\n"
    )
    ret = salt_call_cli.run("state.template_str", sls)
    assert ret.returncode == 0, ret
    (state,) = ret.data.values()
    assert state["result"] is True
    assert state["changes"]["settings"]["appendfsync"] == {"old": "everysec", "new": "no"}
    assert "appendfsync no" in state["comment"]  # the value applied
    assert _config(redis_server, "appendfsync", "aof-use-rdb-preamble", "appendonly") == {
        "appendfsync": "no",
        "aof-use-rdb-preamble": "no",
        "appendonly": "yes",
    }
    with redis_server.client() as client:
        client.config_set("appendfsync", "always")
    ret = salt_call_cli.run(
        "state.single", "redis_aof.configured", redis_server.instance, "appendfsync=no", "test=True"
    )
    assert ret.returncode == 0, ret
    (state,) = ret.data.values()
    assert state["result"] is None and "appendfsync always -> no" in state["comment"]
    # and from the pillar (JSON false, what YAML `no` becomes there)
    set_pillar(
        "redis_aof",
        {"instances": {"cache": {"instance": redis_server.instance, "settings": {"appendfsync": False}}}},
    )
    ret = salt_call_cli.run("state.apply", "redis_aof")
    assert ret.returncode == 0, ret
    (state,) = _states(ret).values()
    assert "appendfsync always -> no" in state["comment"]
    assert _config(redis_server, "appendfsync") == {"appendfsync": "no"}


def test_without_redis_aof_pillar_nothing_is_managed(salt_call_cli, asset_api, salt_minion):
    # issue 12 finding 6: a host whose asset record lacks the key gets nothing
    document = asset_api.get_document(salt_minion.id)
    asset_api.set_document(salt_minion.id, {k: v for k, v in document.items() if k != "redis_aof"})
    try:
        assert salt_call_cli.run("saltutil.refresh_pillar", wait=True).returncode == 0
        for sls in ("redis_aof", "redis_aof.clean"):
            ret = salt_call_cli.run("state.apply", sls)
            assert ret.returncode == 0, ret
            (state,) = _states(ret).values()
            assert state["__id__"] == "redis_aof-pillar-absent-nothing-managed"
            assert state["result"] is True and not state["changes"]
            assert "nothing managed" in state["comment"]
    finally:
        asset_api.set_document(salt_minion.id, document)
        salt_call_cli.run("saltutil.refresh_pillar", wait=True)
