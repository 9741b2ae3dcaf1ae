"""
A small task-flow engine with OpenStack taskflow's semantics, for runners
that change several hosts in order:

- a :class:`Task` has ``execute()`` and ``revert(result)``, and names the
  tasks it ``requires``;
- tasks whose requirements are done run in parallel (a thread pool);
- when a task fails, running tasks are allowed to finish, nothing new starts,
  and every task that ran (the failed one included: it may have half-done its
  work) is reverted in reverse order of completion;
- the state of every task is written to a journal after every step, so a flow
  interrupted by a crash can be resumed (done tasks are skipped, interrupted
  ones run again: tasks must be idempotent) or rolled back.

Pure Python; the journal is any callable that persists a JSON-able dict.
"""

import concurrent.futures
import threading
import time

__all__ = [
    "DONE",
    "FAILED",
    "FLOW_REVERTED",
    "FLOW_REVERTING",
    "FLOW_REVERT_FAILED",
    "FLOW_RUNNING",
    "FLOW_SUCCESS",
    "PENDING",
    "REVERTED",
    "REVERTING",
    "REVERT_FAILED",
    "RUNNING",
    "Engine",
    "FlowError",
    "Task",
    "new_state",
    "order",
]

# task states
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
REVERTING, REVERTED, REVERT_FAILED = "reverting", "reverted", "revert_failed"
# flow states
FLOW_RUNNING, FLOW_SUCCESS = "running", "success"
FLOW_REVERTING, FLOW_REVERTED, FLOW_REVERT_FAILED = "reverting", "reverted", "revert_failed"

_NEEDS_REVERT = (RUNNING, DONE, FAILED, REVERTING, REVERT_FAILED)


class FlowError(Exception):
    """
    The flow definition is wrong (unknown requirement, cycle, duplicate).
    """


class Task:
    """
    One step. Subclass it, or pass ``execute``/``revert`` callables:
    ``execute()`` returns a JSON-able result; ``revert(result)`` undoes it
    (``result`` is ``None`` when ``execute`` failed or was interrupted).
    """

    def __init__(self, name, execute=None, revert=None, requires=(), description=""):
        self.name = name
        self.requires = tuple(requires)
        self.description = description
        self._execute = execute
        self._revert = revert

    def execute(self):
        return self._execute() if self._execute else None

    def revert(self, result):
        if self._revert:
            self._revert(result)


def order(tasks):
    """
    The tasks in a valid execution order (dependencies first, otherwise
    declaration order); raises :class:`FlowError` on a bad graph.
    """
    by_name = {}
    for task in tasks:
        if task.name in by_name:
            raise FlowError(f"duplicate task name {task.name!r}")
        by_name[task.name] = task
    for task in tasks:
        for req in task.requires:
            if req not in by_name:
                raise FlowError(f"task {task.name!r} requires unknown task {req!r}")
    ordered, placed = [], set()
    while len(ordered) < len(tasks):
        ready = [t for t in tasks if t.name not in placed and all(r in placed for r in t.requires)]
        if not ready:
            stuck = sorted(t.name for t in tasks if t.name not in placed)
            raise FlowError(f"dependency cycle among {', '.join(stuck)}")
        for task in ready:
            ordered.append(task)
            placed.add(task.name)
    return ordered


def new_state(tasks):
    """
    A fresh journal state for ``tasks``.
    """
    return {
        "state": FLOW_RUNNING,
        "seq": 0,
        "tasks": {
            t.name: {"state": PENDING, "result": None, "error": None, "done_seq": None} for t in order(tasks)
        },
        "log": [],
    }


class Engine:
    """
    Runs ``tasks`` against ``state`` (from :func:`new_state` or a journal).

    ``save(state)`` is called (under a lock) after every change;
    ``notify(task_name, event, info)`` for every transition, for events and
    progress. Both must be cheap and must not raise.
    """

    def __init__(self, tasks, state, save=None, notify=None, max_workers=4):
        self.tasks = {t.name: t for t in order(tasks)}
        self.state = state
        for name in self.tasks:
            state["tasks"].setdefault(
                name, {"state": PENDING, "result": None, "error": None, "done_seq": None}
            )
        self._save = save or (lambda state: None)
        self._notify = notify or (lambda name, event, info: None)
        self.max_workers = max(1, int(max_workers))
        self._lock = threading.RLock()

    # -- bookkeeping -------------------------------------------------------------

    def _task_state(self, name):
        return self.state["tasks"][name]

    def _set(self, name, **fields):
        with self._lock:
            entry = self._task_state(name)
            entry.update(fields)
            if fields.get("state") == DONE:
                self.state["seq"] += 1
                entry["done_seq"] = self.state["seq"]
            if "state" in fields:
                self.state["log"].append({"t": round(time.time(), 3), "task": name, "state": fields["state"]})
            self._save(self.state)
        if "state" in fields:
            self._notify(name, fields["state"], {k: v for k, v in fields.items() if k != "state"})

    def _set_flow(self, flow_state):
        with self._lock:
            self.state["state"] = flow_state
            self.state["log"].append({"t": round(time.time(), 3), "task": None, "state": flow_state})
            self._save(self.state)
        self._notify(None, flow_state, {})

    # -- execution ---------------------------------------------------------------

    def run(self):
        """
        Execute every task not yet done; on failure revert. Returns the final
        flow state (``success``, ``reverted`` or ``revert_failed``).
        """
        if self.state["state"] in (FLOW_REVERTING, FLOW_REVERTED, FLOW_REVERT_FAILED):
            return self.revert()
        self._set_flow(FLOW_RUNNING)
        for name, task_state in self.state["tasks"].items():
            if task_state["state"] in (RUNNING, FAILED) and name in self.tasks:
                # interrupted or failed before: run again (tasks are idempotent)
                task_state["state"] = PENDING
        failed = self._execute_all()
        if not failed:
            self._set_flow(FLOW_SUCCESS)
            return FLOW_SUCCESS
        return self.revert()

    def _ready(self):
        return [
            name
            for name, task in self.tasks.items()
            if self._task_state(name)["state"] == PENDING
            and all(self._task_state(req)["state"] == DONE for req in task.requires)
        ]

    def _execute_all(self):
        failed = False
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            running = {}
            while True:
                if not failed:
                    for name in self._ready():
                        if name not in running.values():
                            self._set(name, state=RUNNING, started=round(time.time(), 3))
                            running[pool.submit(self.tasks[name].execute)] = name
                if not running:
                    break
                finished, _pending = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in finished:
                    name = running.pop(future)
                    error = future.exception()
                    if error is None:
                        self._set(name, state=DONE, result=future.result(), ended=round(time.time(), 3))
                    else:
                        failed = True
                        self._set(name, state=FAILED, error=_describe(error), ended=round(time.time(), 3))
        return failed

    # -- revert ------------------------------------------------------------------

    def revert(self):
        """
        Revert every task that ran, newest first (interrupted or failed ones
        before the done ones). Returns ``reverted`` or ``revert_failed``;
        a task whose revert fails is recorded and the others still revert.
        """
        self._set_flow(FLOW_REVERTING)
        entries = self.state["tasks"]

        def key(name):
            seq = entries[name]["done_seq"]
            return (0, 0) if seq is None else (1, -seq)

        todo = sorted((n for n in self.tasks if entries[n]["state"] in _NEEDS_REVERT), key=key)
        ok = True
        for name in todo:
            previous = entries[name]["result"]
            self._set(name, state=REVERTING)
            try:
                self.tasks[name].revert(previous)
            except Exception as err:
                ok = False
                self._set(name, state=REVERT_FAILED, revert_error=_describe(err))
            else:
                self._set(name, state=REVERTED)
        final = FLOW_REVERTED if ok else FLOW_REVERT_FAILED
        self._set_flow(final)
        return final


def _describe(error):
    return str(error) or type(error).__name__
