"""
The flow engine: order, parallelism, reverse-order revert, journal after
every step, resume and rollback from a saved journal.
"""

import importlib
import json
import logging
import sys
import threading
import time

import opsalt_v2v_flow
import pytest
from opsalt_v2v_flow import Engine, FlowError, Task, new_state


class Recorder:
    """
    Tasks that record what happened, in order, and fail on request.
    """

    def __init__(self, fail=(), revert_fail=(), delay=0.0):
        self.events = []
        self.fail = set(fail)
        self.revert_fail = set(revert_fail)
        self.delay = delay
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def task(self, name, requires=()):
        def execute():
            with self.lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                time.sleep(self.delay)
                if name in self.fail:
                    raise RuntimeError(f"{name} broke")
                with self.lock:
                    self.events.append(("execute", name))
                return {"did": name}
            finally:
                with self.lock:
                    self.active -= 1

        def revert(result):
            if name in self.revert_fail:
                raise RuntimeError(f"cannot undo {name}")
            with self.lock:
                self.events.append(("revert", name, result))

        return Task(name, execute, revert, requires=requires)


def diamond(rec):
    # A, then B and C in parallel, then D
    return [rec.task("A"), rec.task("B", ["A"]), rec.task("C", ["A"]), rec.task("D", ["B", "C"])]


def test_success_runs_in_dependency_order_and_parallel():
    rec = Recorder(delay=0.2)
    tasks = diamond(rec)
    state = new_state(tasks)
    started = time.monotonic()
    assert Engine(tasks, state, max_workers=4).run() == "success"
    elapsed = time.monotonic() - started
    names = [e[1] for e in rec.events]
    assert names[0] == "A" and names[-1] == "D" and set(names[1:3]) == {"B", "C"}
    assert rec.max_active == 2
    # three levels of 0.2 s, not four tasks of 0.2 s one after another
    assert elapsed < 0.75
    assert all(t["state"] == "done" for t in state["tasks"].values())
    assert state["tasks"]["D"]["result"] == {"did": "D"}


def test_failure_reverts_completed_tasks_in_reverse_order():
    rec = Recorder(fail={"D"})
    tasks = diamond(rec)
    state = new_state(tasks)
    done_seqs = {}
    engine = Engine(
        tasks,
        state,
        save=lambda s: done_seqs.update({n: t["done_seq"] for n, t in s["tasks"].items() if t["done_seq"]}),
    )
    assert engine.run() == "reverted"
    reverts = [e for e in rec.events if e[0] == "revert"]
    # the failed task first (it may have half-done its work), then newest first
    assert reverts[0] == ("revert", "D", None)
    completed = sorted(("B", "C"), key=lambda n: done_seqs[n])
    assert [r[1] for r in reverts[1:3]] == completed[::-1]
    assert reverts[-1] == ("revert", "A", {"did": "A"})
    assert state["tasks"]["D"]["error"] == "D broke"
    assert {t["state"] for t in state["tasks"].values()} == {"reverted"}


def test_failure_starts_nothing_new_and_lets_running_tasks_finish():
    rec = Recorder(fail={"B"}, delay=0.1)
    tasks = diamond(rec)
    state = new_state(tasks)
    Engine(tasks, state).run()
    assert ("execute", "D") not in rec.events
    assert state["tasks"]["D"]["state"] == "pending"
    # C ran alongside B, finished, and was reverted
    assert ("execute", "C") in rec.events
    assert state["tasks"]["C"]["state"] == "reverted"


def test_a_failing_revert_is_recorded_and_the_others_still_revert():
    rec = Recorder(fail={"D"}, revert_fail={"B"})
    tasks = diamond(rec)
    state = new_state(tasks)
    assert Engine(tasks, state).run() == "revert_failed"
    assert state["tasks"]["B"]["state"] == "revert_failed"
    assert "cannot undo B" in state["tasks"]["B"]["revert_error"]
    assert state["tasks"]["A"]["state"] == "reverted"


def test_journal_is_saved_after_every_transition():
    rec = Recorder()
    tasks = diamond(rec)
    saved = []
    Engine(tasks, new_state(tasks), save=lambda s: saved.append(json.loads(json.dumps(s)))).run()
    # each task: running + done; the flow: running + success
    assert len(saved) == 2 * 4 + 2
    assert saved[0]["state"] == "running"
    assert saved[-1]["state"] == "success"
    assert [s["tasks"]["A"]["state"] for s in saved[:3]] == ["pending", "running", "done"]


def test_resume_skips_done_tasks_and_reruns_the_interrupted_one():
    rec = Recorder()
    tasks = diamond(rec)
    state = new_state(tasks)
    # as left by a runner killed while B was running
    state["tasks"]["A"].update(state="done", result={"did": "A"}, done_seq=1)
    state["tasks"]["B"]["state"] = "running"
    state["seq"] = 1
    restored = json.loads(json.dumps(state))
    assert Engine(tasks, restored).run() == "success"
    assert ("execute", "A") not in rec.events
    assert sorted(e[1] for e in rec.events) == ["B", "C", "D"]


def test_rollback_of_an_interrupted_flow_reverts_what_ran():
    rec = Recorder()
    tasks = diamond(rec)
    state = new_state(tasks)
    state["tasks"]["A"].update(state="done", result={"did": "A"}, done_seq=1)
    state["tasks"]["C"].update(state="done", result={"did": "C"}, done_seq=2)
    state["tasks"]["B"]["state"] = "running"
    assert Engine(tasks, state).revert() == "reverted"
    assert rec.events == [("revert", "B", None), ("revert", "C", {"did": "C"}), ("revert", "A", {"did": "A"})]
    assert state["tasks"]["D"]["state"] == "pending"


def test_resume_of_a_flow_that_was_reverting_keeps_reverting():
    rec = Recorder()
    tasks = diamond(rec)
    state = new_state(tasks)
    state["state"] = "reverting"
    state["tasks"]["A"].update(state="done", result={"did": "A"}, done_seq=1)
    assert Engine(tasks, state).run() == "reverted"
    assert rec.events == [("revert", "A", {"did": "A"})]


def test_notify_sees_every_transition():
    rec = Recorder(fail={"C"})
    tasks = diamond(rec)
    seen = []
    Engine(tasks, new_state(tasks), notify=lambda name, event, info: seen.append((name, event))).run()
    assert (None, "running") in seen and (None, "reverted") in seen
    assert ("C", "failed") in seen and ("A", "reverted") in seen


@pytest.mark.parametrize(
    "tasks, message",
    [
        ([Task("a"), Task("a")], "duplicate"),
        ([Task("a", requires=["b"])], "unknown task 'b'"),
        ([Task("a", requires=["b"]), Task("b", requires=["a"])], "cycle"),
    ],
)
def test_bad_graphs_are_rejected(tasks, message):
    with pytest.raises(FlowError, match=message):
        opsalt_v2v_flow.order(tasks)
