"""
PAUSE/RESUME for a maintenance window through Salt's own loaders
(``pgbouncer_maintenance`` and ``pgbouncer.pause timeout=``), against a real
PostgreSQL and two real pgbouncers on 127.0.0.1: one in transaction
pooling, one in session pooling.
"""

import os
import shutil
import threading

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.loaders import make_loaders
from tests.support.postgres import OPERATOR_POLICY, PgBouncer, postgres_server, running, service_root
from tests.support.procs import wait_for

JID = "20261202101500123456"


@pytest.fixture(scope="module")
def servers(postgres_server):
    modes = ("transaction", "session")
    with (
        service_root("pgb-maintenance") as root,
        running(
            *(
                PgBouncer(os.path.join(root, mode), postgres_server, extra={"pool_mode": mode})
                for mode in modes
            )
        ) as servers,
    ):
        yield dict(zip(modes, servers))


def _modules(tmp_path_factory, server):
    loaders = make_loaders(
        tmp_path_factory.mktemp("minion"),
        id="pgbouncer-maintenance-functional",
        opsalt={"policy": OPERATOR_POLICY},
        pgbouncer={"admin": server.admin},
    )
    return loaders.modules


@pytest.fixture(scope="module")
def txn(servers, tmp_path_factory):
    return servers["transaction"], _modules(tmp_path_factory, servers["transaction"])


@pytest.fixture(scope="module")
def session(servers, tmp_path_factory):
    return servers["session"], _modules(tmp_path_factory, servers["session"])


def _database(server, name="appdb"):
    with server.console() as conn:
        cur = conn.execute("SHOW DATABASES")
        names = [column.name for column in cur.description]
        return next(dict(zip(names, row)) for row in cur.fetchall() if row[0] == name)


def _waiting(server, name="appdb"):
    with server.console() as conn:
        cur = conn.execute("SHOW POOLS")
        names = [column.name for column in cur.description]
        return sum(dict(zip(names, row))["cl_waiting"] for row in cur.fetchall() if row[0] == name)


def test_a_client_that_waited_during_the_pause_completes(txn):
    server, modules = txn
    client = server.connect()  # connected before the window, idle between transactions
    results = []
    try:
        out = modules.pgbouncer_maintenance.pause("appdb", JID, ttl=60, timeout=10)
        assert out["status"] == "PAUSE" and _database(server)["paused"] == 1
        (marker,) = modules.pgbouncer_maintenance.markers()
        assert marker["database"] == "appdb" and marker["jid"] == JID
        worker = threading.Thread(target=lambda: results.append(client.execute("SELECT 42").fetchone()[0]))
        worker.start()
        wait_for(lambda: _waiting(server) >= 1, 10, what="the client waiting in the paused pool")
        assert results == []  # still held
        assert modules.pgbouncer_maintenance.resume() == {"resumed": ["appdb"], "not_paused": []}
        worker.join(10)
    finally:
        client.close()
    assert results == [42]
    assert _database(server)["paused"] == 0
    assert modules.pgbouncer_maintenance.markers() == []


def test_pause_waits_for_a_running_transaction_and_gives_up_at_its_timeout(txn):
    server, modules = txn
    with server.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT 1")  # holds its server connection until COMMIT
        with pytest.raises(CommandExecutionError) as err:
            modules.pgbouncer_maintenance.pause("appdb", JID, ttl=60, timeout=1)
        assert "did not complete within 1.0 s" in str(err.value)
        assert "appdb was resumed" in str(err.value)
        assert _database(server)["paused"] == 0
        assert modules.pgbouncer_maintenance.markers() == []
        holder.execute("COMMIT")  # the transaction it waited for was never disturbed
        with server.connect() as other:
            assert other.execute("SELECT 7").fetchone()[0] == 7


def test_in_session_pooling_pause_waits_for_clients_to_disconnect(session):
    server, modules = session
    with server.connect() as idle:
        idle.execute("SELECT 1")  # a session: its server connection stays linked while it is connected
        with pytest.raises(
            CommandExecutionError, match="in session pooling PAUSE waits for every client to disconnect"
        ):
            modules.pgbouncer.pause("appdb", timeout=1)
        assert _database(server)["paused"] == 0
        assert idle.execute("SELECT 2").fetchone()[0] == 2
    # with the client gone, the pause completes
    assert modules.pgbouncer.pause("appdb", timeout=10) == "PAUSE"
    assert modules.pgbouncer.resume("appdb") == "RESUME"


def test_resume_drops_the_marker_of_a_database_resumed_by_hand(txn):
    server, modules = txn
    modules.pgbouncer_maintenance.pause("postgres", JID, ttl=60, timeout=10)
    assert _database(server, "postgres")["paused"] == 1
    assert modules.pgbouncer_maintenance.resume("postgres") == {"resumed": ["postgres"], "not_paused": []}
    # pgbouncer resumed by hand while a marker is left: only the marker goes
    modules.pgbouncer_maintenance.pause("postgres", JID, ttl=60, timeout=10)
    modules.pgbouncer.resume("postgres")
    assert modules.pgbouncer_maintenance.resume() == {"resumed": [], "not_paused": ["postgres"]}
    assert _database(server, "postgres")["paused"] == 0
