"""
The minion side of a pgbouncer maintenance window: the marker is written
(root-only) before PAUSE and removed only after RESUME; a failed PAUSE is
undone; resume filters and keeps what it could not resume. pgbouncer's
console is a small in-memory stand-in that answers like pgbouncer 1.18.
"""

import json
import os
import stat

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.components import load_component

JID = "20261202101500123456"


class Console:
    """PAUSE/RESUME per database, with pgbouncer's own error for a RESUME of a running one."""

    def __init__(self, marker_dir):
        self.marker_dir = marker_dir
        self.paused = set()
        self.calls = []
        self.pause_error = None
        self.resume_error = None
        self.markers_at_pause = None

    def pause(self, db, timeout=None):
        self.calls.append(("PAUSE", db, timeout))
        self.markers_at_pause = sorted(os.listdir(self.marker_dir))
        if self.pause_error:
            raise CommandExecutionError(self.pause_error)
        self.paused.add(db)
        return "PAUSE"

    def resume(self, db=None):
        self.calls.append(("RESUME", db))
        if self.resume_error:
            raise CommandExecutionError(self.resume_error)
        if db not in self.paused:
            raise CommandExecutionError(
                f"pgbouncer console: 'RESUME {db}' failed: database {db} is not paused"
            )
        self.paused.discard(db)
        return "RESUME"


@pytest.fixture
def minion(tmp_path):
    module = load_component("_modules", "pgbouncer_maintenance")
    module.__opts__ = {"cachedir": str(tmp_path), "id": "db1"}
    console = Console(str(tmp_path / "pgbouncer_maintenance"))
    module.__salt__ = {"pgbouncer.pause": console.pause, "pgbouncer.resume": console.resume}
    module.console = console
    module.marker_dir = tmp_path / "pgbouncer_maintenance"
    return module


def test_pause_writes_a_root_only_marker_before_pause(minion):
    owner = {"master": "m", "pid": 1, "started": 2.0}
    out = minion.pause("appdb", JID, ttl=400, timeout=7, owner=owner, sls_hosts=["pg1"])
    assert out["database"] == "appdb" and out["jid"] == JID and out["status"] == "PAUSE"
    assert minion.console.calls == [("PAUSE", "appdb", 7.0)]
    assert minion.console.markers_at_pause == ["appdb.json"]  # recorded before PAUSE
    assert stat.S_IMODE(os.stat(minion.marker_dir).st_mode) == 0o700
    path = minion.marker_dir / "appdb.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    marker = json.loads(path.read_text())
    assert marker["jid"] == JID and marker["owner"] == owner and marker["sls_hosts"] == ["pg1"]
    assert 399 < marker["expires"] - marker["paused_at"] <= 400
    (listed,) = minion.markers()
    assert listed["database"] == "appdb" and listed["expired"] is False


def test_a_failed_pause_is_resumed_and_leaves_no_marker(minion):
    minion.console.pause_error = "PAUSE appdb did not complete within 7 s: ...; appdb was resumed"
    with pytest.raises(CommandExecutionError, match="cannot pause appdb: PAUSE appdb did not complete"):
        minion.pause("appdb", JID, ttl=400, timeout=7)
    # pgbouncer.pause had resumed already: "not paused" is no failure
    assert minion.console.calls[-1] == ("RESUME", "appdb")
    assert minion.markers() == []


def test_a_failed_pause_whose_resume_fails_keeps_the_marker(minion):
    minion.console.pause_error = "connection refused"
    minion.console.resume_error = "connection refused"
    with pytest.raises(CommandExecutionError, match="RESUME failed too .* its marker stays"):
        minion.pause("appdb", JID, ttl=400)
    assert [m["database"] for m in minion.markers()] == ["appdb"]


def test_pause_refuses_a_database_another_window_holds(minion):
    minion.pause("appdb", JID, ttl=400)
    with pytest.raises(
        CommandExecutionError, match="already paused for maintenance .*pgbouncer_maintenance.resume"
    ):
        minion.pause("appdb", "20261202101500999999", ttl=400)
    assert minion.pause("appdb", JID, ttl=400)["jid"] == JID  # its own window may retry
    assert minion.pause("otherdb", "20261202101500999999", ttl=400)["database"] == "otherdb"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("../etc", JID, 10), "database"),
        ((".hidden", JID, 10), "database"),
        (("", JID, 10), "database"),
        (("appdb\n", JID, 10), "database"),
        (("appdb", "x/y", 10), "jid"),
        (("appdb", JID + "\n", 10), "jid"),
        (("appdb", JID, 0), "ttl"),
        (("appdb", JID, "soon"), "ttl"),
    ],
)
def test_pause_refuses_bad_input_and_touches_nothing(minion, args, match):
    with pytest.raises(SaltInvocationError, match=match):
        minion.pause(*args)
    assert minion.console.calls == []
    assert not minion.marker_dir.exists()


def test_resume_resumes_what_markers_name_and_removes_them(minion):
    minion.pause("appdb", JID, ttl=400)
    minion.pause("otherdb", "20261202101500999999", ttl=400)
    assert minion.resume(jid=JID) == {"resumed": ["appdb"], "not_paused": []}
    assert minion.console.paused == {"otherdb"}
    assert minion.resume("appdb") == {"resumed": [], "not_paused": []}  # no marker: left alone
    assert minion.resume() == {"resumed": ["otherdb"], "not_paused": []}
    assert minion.markers() == [] and minion.console.paused == set()


def test_resume_of_a_database_resumed_by_hand_drops_its_marker(minion):
    minion.pause("appdb", JID, ttl=400)
    minion.console.paused.clear()  # RESUME by hand, or pgbouncer restarted
    assert minion.resume() == {"resumed": [], "not_paused": ["appdb"]}
    assert minion.markers() == []


def test_resume_expired_only_touches_expired_windows(minion, monkeypatch):
    minion.pause("appdb", JID, ttl=10)
    minion.pause("otherdb", "20261202101500999999", ttl=1000)
    assert minion.resume(expired=True) == {"resumed": [], "not_paused": []}
    real_time = minion.time.time
    monkeypatch.setattr(minion.time, "time", lambda: real_time() + 60)
    assert [m["expired"] for m in minion.markers()] == [True, False]
    assert minion.resume(expired=True) == {"resumed": ["appdb"], "not_paused": []}
    assert minion.console.paused == {"otherdb"}


def test_a_failed_resume_keeps_its_marker_and_resumes_the_others(minion):
    minion.pause("appdb", JID, ttl=400)
    minion.pause("otherdb", JID, ttl=400)
    calls = []

    def resume(db=None):
        calls.append(db)
        if db == "appdb":
            raise CommandExecutionError("console did not answer")
        return minion.console.resume(db)

    minion.__salt__["pgbouncer.resume"] = resume
    with pytest.raises(CommandExecutionError, match="appdb: console did not answer .*resumed: otherdb"):
        minion.resume()
    assert calls == ["appdb", "otherdb"]
    assert [m["database"] for m in minion.markers()] == ["appdb"]


def test_an_unreadable_marker_is_still_resumed(minion):
    minion.pause("appdb", JID, ttl=400)
    (minion.marker_dir / "appdb.json").write_text("{torn")
    (listed,) = minion.markers()
    assert listed["unreadable"] is True and listed["expired"] is True
    assert minion.resume() == {"resumed": ["appdb"], "not_paused": []}
