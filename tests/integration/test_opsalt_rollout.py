"""
Rolling orchestrations (``salt-run state.orchestrate orch.<component>``) and
the ``opsalt`` SLS on a real fleet: the shared salt-master and three real
salt-minions (tests/support/multi_minion.py), each with its own real
pgbouncer and redis-server on 127.0.0.1.
"""

import json
import threading

import pytest

from tests.support.multi_minion import running_fleet
from tests.support.postgres import postgres_server


@pytest.fixture(scope="module")
def fleet(salt_master, asset_api, postgres_server):
    with running_fleet(salt_master, asset_api, postgres_server, count=3) as running:
        yield running


def _orchestrate(fleet, component, test=False, **settings):
    pillar = {"opsalt_rollout": dict({"tgt": fleet.glob, "soak": 2, "interval": 1}, **settings)}
    args = ["state.orchestrate", f"orch.{component}", f"pillar={json.dumps(pillar)}"]
    if test:
        args.append("test=True")
    ret = fleet.run_cli.run(*args)
    assert isinstance(ret.data, dict), ret
    states = next(iter(ret.data["data"].values()))
    (state,) = states.values()
    return ret, state


def _documents(fleet, managed=("pgbouncer", "redis_aof"), roles=None, **pgbouncer_settings):
    for host in fleet.hosts:
        rollout = {"managed": list(managed)}
        if roles and host.id in roles:
            rollout["role"] = roles[host.id]
        document = {
            "pgbouncer": host.pgbouncer_pillar(**pgbouncer_settings),
            "redis_aof": host.redis_pillar(**{"appendonly": True}),
            "opsalt_rollout": rollout,
        }
        fleet.set_document(host, document)


def _pool_sizes(fleet):
    return [host.pgbouncer.show_config()["default_pool_size"]["value"] for host in fleet.hosts]


def test_dry_run_lists_the_batches_and_changes_nothing(fleet):
    _documents(fleet, default_pool_size=17)
    before = _pool_sizes(fleet)
    ret, state = _orchestrate(fleet, "pgbouncer", test=True, batch=2)
    assert state["result"] is None, state
    assert state["changes"] == {}
    ids = [host.id for host in fleet.hosts]
    assert f"batch 1: {ids[0]}, {ids[1]}" in state["comment"], state
    assert f"batch 2: {ids[2]}" in state["comment"], state
    assert _pool_sizes(fleet) == before


def test_good_change_rolls_through_every_batch(fleet):
    _documents(fleet, default_pool_size=17)
    ret, state = _orchestrate(fleet, "pgbouncer", batch="34%")
    assert ret.returncode == 0, ret
    assert state["result"] is True, state
    assert state["changes"]["changed"] == [host.id for host in fleet.hosts], state
    assert _pool_sizes(fleet) == ["17", "17", "17"]
    # Nothing left to change: a second rollout changes no host.
    ret, state = _orchestrate(fleet, "pgbouncer", batch=3)
    assert state["result"] is True and state["changes"] == {}, state


PENDING = {
    "pgbouncer": "opsalt_rollout_|-opsalt-rollout-pending-pgbouncer_|-pgbouncer_|-pending",
    "redis_aof": "opsalt_rollout_|-opsalt-rollout-pending-redis_aof_|-redis_aof_|-pending",
}


def test_plain_state_apply_of_a_managed_component_is_pending(fleet):
    host = fleet.hosts[0]
    _documents(fleet, default_pool_size=17)
    assert _orchestrate(fleet, "pgbouncer", batch=3)[1]["result"] is True
    # The asset system changes the value and even forges a token: still closed.
    document = {
        "pgbouncer": host.pgbouncer_pillar(default_pool_size=23),
        "redis_aof": host.redis_pillar(appendonly=True, appendfsync="always"),
        "opsalt_rollout": {"managed": ["pgbouncer", "redis_aof"], "token": "f" * 32},
    }
    fleet.set_document(host, document)
    with open(host.pgbouncer.ini, "rb") as handle:
        ini = handle.read()
    for sls, components in (("pgbouncer", ["pgbouncer"]), ("opsalt", ["redis_aof", "pgbouncer"])):
        ret = host.cli.run("state.apply", sls)
        assert ret.returncode == 0, ret
        assert sorted(ret.data) == sorted(PENDING[name] for name in components), ret.data
        for name in components:
            state = ret.data[PENDING[name]]
            assert state["result"] is None and state["changes"] == {}, state
            assert state["comment"].startswith(f"pending rollout: {name}"), state
    with open(host.pgbouncer.ini, "rb") as handle:
        assert handle.read() == ini
    assert host.pgbouncer.show_config()["default_pool_size"]["value"] == "17"
    with host.redis.client() as client:
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    # The dry run is open: it shows the change the rollout would make.
    ret = host.cli.run("state.apply", "pgbouncer", "test=True")
    config = next(state for key, state in ret.data.items() if "pgbouncer-config-file-managed" in key)
    assert config["result"] is None and "default_pool_size" in str(config["changes"]), config
    assert not any(key in ret.data for key in PENDING.values())


def test_redis_replicas_change_before_their_primary(fleet):
    first, second, third = (host.id for host in fleet.hosts)
    _documents(fleet, roles={first: "primary", second: "replica", third: "replica"})
    ret, state = _orchestrate(fleet, "redis_aof", batch=1)
    assert state["result"] is True, state
    assert state["changes"]["changed"] == [second, third, first], state
    assert state["comment"].index(f"batch 3: {first}") > state["comment"].index(f"batch 1: {second}")
    for host in fleet.hosts:
        with host.redis.client() as client:
            assert client.config_get("appendonly") == {"appendonly": "yes"}


class _HeldLoad:
    """
    On one pgbouncer: a session that holds its server connection, and,
    once ``default_pool_size`` is down to 1, a second client that has to
    wait for it - the load under which a pool of 1 is unhealthy.
    """

    def __init__(self, pgbouncer):
        self.pgbouncer = pgbouncer
        self.stop = threading.Event()
        self.holder = pgbouncer.connect()
        self.holder.execute("SELECT 1")
        self.waited = []
        self.thread = threading.Thread(target=self._wait_for_small_pool, name="held-load")
        self.thread.start()

    def _wait_for_small_pool(self):
        while not self.stop.wait(0.2):
            if self.pgbouncer.show_config()["default_pool_size"]["value"] == "1":
                with self.pgbouncer.connect() as waiter:
                    self.waited.append(waiter.execute("SELECT 1").fetchone()[0])
                return

    def release(self):
        self.stop.set()
        self.holder.close()
        self.thread.join(60)


def test_unhealthy_second_batch_stops_the_rollout(fleet):
    first, second, third = fleet.hosts
    _documents(fleet, default_pool_size=19)
    ret, state = _orchestrate(fleet, "pgbouncer", batch=3)
    assert state["result"] is True, state
    load = _HeldLoad(second.pgbouncer)
    try:
        _documents(fleet, default_pool_size=1)
        ret, state = _orchestrate(fleet, "pgbouncer", batch=1, soak=4)
    finally:
        load.release()
    assert ret.returncode != 0, ret
    assert state["result"] is False, state
    assert state["changes"]["failed_batch"] == 2, state
    assert state["changes"]["changed"] == [first.id, second.id], state
    assert state["changes"]["untouched"] == [third.id], state
    assert "waiting" in " ".join(state["changes"]["problems"][second.id]), state
    assert "stopped at batch 2/3" in state["comment"], state
    assert _pool_sizes(fleet) == ["1", "1", "19"]
    # The client that waited during the gate completes once the pool frees up.
    assert load.waited == [1]
