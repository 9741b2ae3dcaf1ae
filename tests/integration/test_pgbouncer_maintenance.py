"""
pgbouncer maintenance windows (``salt-run pgbouncer_maintenance.run``,
``salt-run state.orchestrate orch.pgbouncer_maintenance``) on a real fleet:
a salt-master of this module whose file_roots add the test SLS tree
``tests/integration/files`` (a failing and a sleeping maintenance state),
and two real salt-minions (tests/support/multi_minion.py), each with its own
real pgbouncer, in transaction pooling, in front of one real PostgreSQL.
"""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from saltfactories.utils import random_string

from tests.support.asset_api import REPO_ROOT
from tests.support.multi_minion import running_fleet
from tests.support.postgres import postgres_server
from tests.support.procs import stop_popen, wait_for

SLS_ROOT = os.path.join(REPO_ROOT, "tests", "integration", "files")
SALT_RUN = os.path.join(os.path.dirname(sys.executable), "salt-run")


@pytest.fixture(scope="module")
def maintenance_master(salt_factories, asset_api):
    config = {
        "ext_pillar": [{"ops_http_json": asset_api.ext_pillar_config(on_error="fail")}],
        "file_roots": {"base": [os.path.join(REPO_ROOT, "salt"), SLS_ROOT]},
        "pillar_roots": {"base": []},
        "log_level_logfile": "debug",
        "open_mode": True,
    }
    factory = salt_factories.salt_master_daemon(
        random_string("master-pgm-", uppercase=False), overrides=config
    )
    with factory.started():
        yield factory


@pytest.fixture(scope="module")
def fleet(maintenance_master, asset_api, postgres_server):
    with running_fleet(maintenance_master, asset_api, postgres_server, count=2) as running:
        for host in running.hosts:
            running.set_document(host, {"pgbouncer": host.pgbouncer_pillar(pool_mode="transaction")})
            ret = host.cli.run("state.apply", "pgbouncer")
            assert ret.returncode == 0, ret
            assert host.pgbouncer.show_config()["pool_mode"]["value"] == "transaction"
        yield running


def _console_rows(host, what, database="appdb"):
    with host.pgbouncer.console() as conn:
        cur = conn.execute(f"SHOW {what}")
        names = [column.name for column in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall() if row[0] == database]


def _paused(fleet):
    return [_console_rows(host, "DATABASES")[0]["paused"] for host in fleet.hosts]


def _waiting(host):
    return sum(row["cl_waiting"] for row in _console_rows(host, "POOLS"))


def _markers(fleet):
    found = {}
    for host in fleet.hosts:
        ret = host.cli.run("pgbouncer_maintenance.markers")
        assert ret.returncode == 0, ret
        found[host.id] = ret.data
    return found


def _run(fleet, sls, seconds=1, **kwargs):
    args = ["pgbouncer_maintenance.run", "appdb", sls, f"tgt={fleet.glob}"]
    args.append("sls_pillar=" + json.dumps({"maintenance_test": {"seconds": seconds}}))
    args += [f"{key}={value}" for key, value in kwargs.items()]
    ret = fleet.run_cli.run(*args)
    assert isinstance(ret.data, dict), ret
    return ret, ret.data


def _query_ok(host):
    with host.pgbouncer.connect() as conn:
        return conn.execute("SELECT 42").fetchone()[0] == 42


def test_clients_that_waited_during_the_window_complete(fleet):
    pillar = {
        "pgbouncer_maintenance": {
            "tgt": fleet.glob,
            "database": "appdb",
            "sls": "maintenance_test.sleep",
            "timeout": 120,
            "sls_pillar": {"maintenance_test": {"seconds": 8}},
        }
    }
    # The dry run pauses nothing.
    ret = fleet.run_cli.run(
        "state.orchestrate", "orch.pgbouncer_maintenance", f"pillar={json.dumps(pillar)}", "test=True"
    )
    (state,) = next(iter(ret.data["data"].values())).values()
    assert state["result"] is None and state["comment"].startswith("dry run: would pause appdb on "), state
    assert _paused(fleet) == [0, 0]

    clients = [host.pgbouncer.connect() for host in fleet.hosts]  # connected before the window
    results, orchestration = [], {}

    def orchestrate():
        orchestration["ret"] = fleet.run_cli.run(
            "state.orchestrate", "orch.pgbouncer_maintenance", f"pillar={json.dumps(pillar)}"
        )

    runner = threading.Thread(target=orchestrate, name="orchestrate")
    runner.start()
    workers = []
    try:
        wait_for(lambda: _paused(fleet) == [1, 1], 60, interval=0.2, what="appdb paused on both pgbouncers")
        for client in clients:
            worker = threading.Thread(
                target=lambda c=client: results.append(c.execute("SELECT 42").fetchone()[0])
            )
            worker.start()
            workers.append(worker)
        for host in fleet.hosts:
            wait_for(lambda h=host: _waiting(h) >= 1, 30, interval=0.2, what=f"a client waiting on {host.id}")
        assert results == []  # held while the maintenance state runs
    finally:
        runner.join(300)
        for worker in workers:
            worker.join(30)
        for client in clients:
            client.close()
    ret = orchestration["ret"]
    assert ret.returncode == 0, ret
    (state,) = next(iter(ret.data["data"].values())).values()
    assert state["result"] is True, state
    assert state["changes"]["paused"] == state["changes"]["resumed"] == [host.id for host in fleet.hosts]
    assert all(outcome["result"] for outcome in state["changes"]["states"].values()), state
    assert results == [42, 42]
    assert _paused(fleet) == [0, 0]
    assert _markers(fleet) == {host.id: [] for host in fleet.hosts}


def test_a_failing_maintenance_state_is_resumed(fleet):
    ret, out = _run(fleet, "maintenance_test.fail")
    assert ret.returncode != 0, ret
    assert out["result"] is False
    assert out["resumed"] == [host.id for host in fleet.hosts]
    assert out["problems"] == [f"{host.id}: maintenance-test-fail: Failure!" for host in fleet.hosts], out
    assert _paused(fleet) == [0, 0]
    assert all(_query_ok(host) for host in fleet.hosts)
    assert _markers(fleet) == {host.id: [] for host in fleet.hosts}


def test_a_maintenance_past_its_timeout_is_stopped_and_resumed(fleet):
    ret, out = _run(fleet, "maintenance_test.sleep", seconds=120, timeout=5)
    assert ret.returncode != 0, ret
    assert out["result"] is False
    assert out["timed_out"] == [host.id for host in fleet.hosts]
    assert out["terminated"] == [host.id for host in fleet.hosts]
    assert out["seconds"] < 60, out
    assert any("did not finish within 5 s" in problem for problem in out["problems"]), out
    assert _paused(fleet) == [0, 0]
    assert all(_query_ok(host) for host in fleet.hosts)
    for host in fleet.hosts:  # the job itself is gone
        wait_for(
            lambda h=host: h.cli.run("saltutil.find_job", out["jid"]).data == {},
            30,
            what=f"the maintenance job gone on {host.id}",
        )


def _killed_runner(fleet, maintenance_master):
    """A ``salt-run`` killed (SIGKILL) inside its window; the jid its markers name."""
    argv = [
        SALT_RUN,
        f"--config-dir={maintenance_master.config_dir}",
        "--out=json",
        "pgbouncer_maintenance.run",
        "appdb",
        "maintenance_test.sleep",
        f"tgt={fleet.glob}",
        "timeout=300",
        "sls_pillar=" + json.dumps({"maintenance_test": {"seconds": 240}}),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _paused(fleet) == [1, 1], 60, interval=0.2, what="appdb paused by the runner")
        markers = wait_for(
            lambda: (found := _markers(fleet)) and all(found.values()) and found, 30, what="markers on both"
        )
        jid = markers[fleet.hosts[0].id][0]["jid"]
        wait_for(
            lambda: fleet.hosts[0].cli.run("saltutil.find_job", jid).data, 30, what="the maintenance job"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        stop_popen(proc)
    # Nothing resumed it: the window outlives its runner.
    assert _paused(fleet) == [1, 1]
    return jid


def test_a_killed_runner_is_repaired_by_resume(fleet, maintenance_master):
    jid = _killed_runner(fleet, maintenance_master)
    ret = fleet.run_cli.run("pgbouncer_maintenance.resume", f"tgt={fleet.glob}")
    assert ret.returncode == 0, ret
    assert ret.data["resumed"] == {host.id: ["appdb"] for host in fleet.hosts}, ret.data
    assert ret.data["terminated"] == [host.id for host in fleet.hosts], ret.data
    assert _paused(fleet) == [0, 0]
    assert all(_query_ok(host) for host in fleet.hosts)
    assert _markers(fleet) == {host.id: [] for host in fleet.hosts}
    for host in fleet.hosts:
        wait_for(
            lambda h=host: h.cli.run("saltutil.find_job", jid).data == {}, 30, what="the leftover job gone"
        )


def test_a_killed_runner_is_repaired_by_the_next_run(fleet, maintenance_master):
    _killed_runner(fleet, maintenance_master)
    ret, out = _run(fleet, "maintenance_test.sleep", seconds=1)
    assert ret.returncode == 0, ret
    assert out["result"] is True, out
    assert out["repaired"]["resumed"] == {host.id: ["appdb"] for host in fleet.hosts}, out
    assert out["paused"] == out["resumed"] == [host.id for host in fleet.hosts]
    assert _paused(fleet) == [0, 0]
    assert all(_query_ok(host) for host in fleet.hosts)
    assert _markers(fleet) == {host.id: [] for host in fleet.hosts}
