"""
Migrate a VM from a Xen host with LVM disks to a pre-created OpenStack
instance (KVM, disks in Ceph RBD), with virt-v2v, as one flow of revertible
steps (``opsalt_v2v_flow``): shut the source down, copy its disks to the
conversion minion (per disk, in parallel), convert, stop the target
instance, rename its RBD images to ``.bak`` and import the converted disks
under the original names (per disk, in parallel), start the target.

A failure reverts every completed step in reverse order; a journal under
``<cachedir>/opsalt/v2v/<id>.json`` is written after every step, so a
migration survives the runner or the master dying (``v2v.resume``) and can
be undone later (``v2v.rollback``). Original data is deleted only by
``v2v.cleanup``, on request, after the new instance was verified running.

Events: ``opsalt/v2v/<id>/<step>`` on the master event bus for every step
transition (``step`` is ``flow`` for the flow itself); copy progress arrives
from the conversion minion as ``opsalt/v2v/<id>/progress/<disk>``.

The migration definition (kwargs, or pillar ``v2v:migrations:<id>`` of
``pillar_minion`` as served by the asset system)::

    source_host: xen01.example.com       # Xen host (ssh from the conversion minion)
    source_user: root
    source_domain: instance-00000017
    shutdown_source: false                # true: the flow shuts the source down
    conversion_minion: conv01             # runs ssh/dd/virt-v2v and rbd
    compute_minion: compute07             # runs virsh for the target
    instance_uuid: 5f1b7f3e-...           # Nova instance UUID (RBD image prefix)
    target_domain: instance-000007a2      # its libvirt domain on compute_minion
    pool: vms                             # Nova's RBD images pool
    work_dir: /data/v2v/instance-00000017
    copy_method: auto                     # auto | dd | copy-to-local
    parallel: 4                           # steps at once
    step_timeout: 86400                   # seconds per step
"""

import concurrent.futures
import contextlib
import contextvars
import copy
import fcntl
import functools
import json
import logging
import os
import queue
import threading
import time

import salt.client
import salt.pillar
import salt.utils.event
import salt.utils.minions
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import opsalt_files
    import opsalt_v2v
    import opsalt_v2v_flow
    import opsalt_wait

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "v2v"

FINAL_STATES = ("success", "reverted", "revert_failed")


def __virtual__():
    if not HAS_HELPERS:
        return (False, f"the v2v runner needs the opsalt helpers ({_IMPORT_ERROR})")
    return __virtualname__


# -- the definition ---------------------------------------------------------------


def validate_definition(definition):
    """
    Check a migration definition and fill in defaults. Returns the normalised
    dict; raises ``SaltInvocationError`` listing every problem.

    CLI Example:

    .. code-block:: bash

        salt-run v2v.validate_definition '{source_host: xen01, source_domain: vm17, conversion_minion: conv01,
            compute_minion: compute07, instance_uuid: 5f1b7f3e-6d7c-4b4a-9a3e-2f8f0c1d2e3f,
            target_domain: instance-000007a2, work_dir: /data/v2v/vm17}'
    """
    return opsalt_v2v.validate_definition(definition)


def _migration_id(definition, given=None):
    return opsalt_v2v.migration_id(definition, given)


def _v2v_pillar(pillar_minion):
    _id, grains, _pillar = salt.utils.minions.get_minion_data(pillar_minion, __opts__)
    pillar = salt.pillar.get_pillar(
        __opts__, grains or {"id": pillar_minion}, pillar_minion, saltenv="base"
    ).compile_pillar()
    if pillar.get("_errors"):
        raise CommandExecutionError(f"pillar of {pillar_minion} has errors: {'; '.join(pillar['_errors'])}")
    return pillar.get("v2v") or {}


def _definition_from_pillar(mig_id, pillar_minion, v2v_pillar=None):
    if v2v_pillar is None:
        v2v_pillar = _v2v_pillar(pillar_minion)
    migration = (v2v_pillar.get("migrations") or {}).get(mig_id)
    if migration is None:
        raise SaltInvocationError(f"no v2v:migrations:{mig_id} in the pillar of {pillar_minion}")
    return dict(migration)


def _load_definition(mig_id, pillar_minion, kwargs):
    fields = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    if pillar_minion:
        if mig_id is None:
            raise SaltInvocationError("give the migration id with pillar_minion")
        definition = _definition_from_pillar(mig_id, pillar_minion)
        definition.update(fields)
    else:
        definition = fields
    spec = validate_definition(definition)
    return _migration_id(definition, mig_id), spec


# -- talking to minions ---------------------------------------------------------


class _Returns:
    """
    Job returns from the master event bus, read by one thread that blocks
    on the bus. ``LocalClient.cmd`` polls the bus every 10 ms in each
    waiting thread (``get_iter_returns``); a wave waits on up to
    ``concurrency`` x ``parallel`` jobs at once, for minutes, which cost the
    master CPU seconds that the migrations need.
    """

    # returns nobody claimed (other jobs on the bus) are dropped after this
    KEEP = 600

    def __init__(self, opts):
        self._cond = threading.Condition()
        self._got = {}  # (jid, minion) -> (return event data, when received)
        self._closed = False
        self._bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        if not self._bus.connect_pub(timeout=30):
            self._bus.destroy()
            raise CommandExecutionError("cannot listen on the master event bus (is the salt-master up?)")
        threading.Thread(target=self._read, name="opsalt-v2v-returns", daemon=True).start()

    def _read(self):
        try:
            while True:
                with self._cond:
                    if self._closed:
                        return
                event = self._bus.get_event(wait=0.25, full=True, auto_reconnect=True)
                parts = event["tag"].split("/") if event else ()
                # salt/job/<jid>/ret/<minion>
                if len(parts) == 5 and parts[:2] == ["salt", "job"] and parts[3] == "ret":
                    self._keep((parts[2], parts[4]), event["data"])
        finally:
            self._bus.destroy()

    def _keep(self, key, data):
        now = time.monotonic()
        with self._cond:
            self._got[key] = (data, now)
            if len(self._got) > 256:
                for old in [k for k, (_d, t) in self._got.items() if now - t > self.KEEP]:
                    del self._got[old]
            self._cond.notify_all()

    def wait(self, jid, minion, timeout):
        """The return event's data, or ``None`` after ``timeout`` seconds."""
        deadline = opsalt_wait.Deadline(timeout)
        with self._cond:
            while (jid, minion) not in self._got:
                left = deadline.remaining()
                if not left:
                    return None
                self._cond.wait(left)
            return self._got.pop((jid, minion))[0]

    def close(self):
        # the reader stops within its 0.25 s wait; nobody waits for it
        with self._cond:
            self._closed = True


class MinionCaller:
    """
    Calls functions on minions and raises when a call fails, with the
    minion's own message. Keeps the wall time during which no call was in
    flight (``idle``): the runner's own overhead.

    Each call is published with ``LocalClient.run_job`` and its return
    awaited from one shared reader of the event bus (``_Returns``), never
    by ``LocalClient.cmd``'s polling.
    """

    # a return missed on the bus (while it reconnected) is looked up in the
    # job cache this often
    CACHE_CHECK = 30

    def __init__(self, opts):
        self.opts = opts
        self._lock = threading.Lock()
        self._in_flight = 0
        self._local = threading.local()
        self._clients = []
        self._returns = None
        self.reset_idle()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _client(self):
        # one LocalClient per thread, kept for all its calls: creating one per
        # call costs a new master connection each time
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = salt.client.LocalClient(mopts=self.opts)
            with self._lock:
                self._clients.append(client)
        return client

    def _reader(self):
        # listening before the first job is published: no return is missed
        with self._lock:
            if self._returns is None:
                self._returns = _Returns(self.opts)
            return self._returns

    def close(self):
        """
        Stop the event reader and destroy the clients of every thread that
        made calls.
        """
        with self._lock:
            clients, self._clients = self._clients, []
            returns, self._returns = self._returns, None
        if returns is not None:
            returns.close()
        for client in clients:
            client.destroy()

    def reset_idle(self):
        with self._lock:
            self.idle = 0.0
            self._idle_since = time.monotonic()

    def _enter(self):
        with self._lock:
            if self._in_flight == 0:
                self.idle += time.monotonic() - self._idle_since
            self._in_flight += 1

    def _leave(self):
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle_since = time.monotonic()

    def idle_now(self):
        with self._lock:
            return self.idle + (time.monotonic() - self._idle_since if self._in_flight == 0 else 0.0)

    def _call(self, minion, fun, args, kwargs, timeout):
        """The return event's data (``return``, ``retcode``), or ``None``."""
        returns, client = self._reader(), self._client()
        pub = client.run_job(minion, fun, arg=args, kwarg=kwargs, timeout=timeout, listen=False)
        if not pub or minion not in pub.get("minions", ()):
            return None
        deadline = opsalt_wait.Deadline(timeout)
        while True:
            left = deadline.remaining()
            answer = returns.wait(pub["jid"], minion, min(left, self.CACHE_CHECK))
            if answer is not None:
                return answer
            cached = client.get_cache_returns(pub["jid"]).get(minion)
            if cached is not None:
                return {"return": cached.get("ret"), "retcode": cached.get("retcode", 0)}
            if left <= self.CACHE_CHECK:
                return None

    def __call__(self, minion, fun, *args, _timeout=300, **kwargs):
        self._enter()
        try:
            answer = self._call(minion, fun, list(args), kwargs, _timeout)
        finally:
            self._leave()
        if answer is None:
            raise CommandExecutionError(f"{minion} did not answer {fun} within {_timeout} s (is it up?)")
        value = answer.get("return")
        retcode = answer.get("retcode") or 0
        if retcode or (isinstance(value, str) and value.startswith(("ERROR", "Passed invalid arguments"))):
            raise CommandExecutionError(f"{fun} on {minion}: {value}")
        if isinstance(value, str) and f"'{fun}' is not available" in value:
            raise CommandExecutionError(f"{fun} on {minion}: {value}")
        return value


# -- journal ---------------------------------------------------------------------


def _journal_dir():
    return os.path.join(__opts__["cachedir"], "opsalt", "v2v")


def _journal_path(mig_id):
    return os.path.join(_journal_dir(), f"{_migration_id({}, mig_id)}.json")


def _read_journal(mig_id):
    text = opsalt_files.read_text(_journal_path(mig_id))
    if text is None:
        raise SaltInvocationError(f"no journal for migration {mig_id} in {_journal_dir()}")
    return json.loads(text)


def _write_journal(journal):
    os.makedirs(_journal_dir(), mode=0o700, exist_ok=True)
    journal["updated"] = time.time()
    opsalt_files.atomic_write(
        _journal_path(journal["id"]),
        json.dumps(journal, indent=1, sort_keys=True),
        mode=0o600,
        make_backup=False,
    )


@contextlib.contextmanager
def _exclusive(mig_id):
    os.makedirs(_journal_dir(), mode=0o700, exist_ok=True)
    with open(os.path.join(_journal_dir(), f"{mig_id}.lock"), "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise CommandExecutionError(
                f"migration {mig_id} is being run by another runner right now; see v2v.status {mig_id}"
            ) from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- events and progress -----------------------------------------------------------


# In a wave, each migration runs in its own thread, but salt-run's job event
# (``__jid_event__``) must be used from the runner's own thread only: wave
# members put their progress lines here and the wave's thread sends them.
_PROGRESS = contextvars.ContextVar("opsalt_v2v_progress", default=None)


def _fire_progress(jid_event, message):
    if jid_event is not None:
        try:
            jid_event.fire_event({"message": message}, "progress")
        except Exception as err:
            # progress lines are informative only: a lost one must not fail the migration
            log.debug("v2v: progress line not sent: %s", err)


class Reporter:
    """
    Sends step transitions to the master event bus and to ``salt-run``'s
    output.
    """

    def __init__(self, mig_id, jid_event=None, quiet=False):
        self.mig_id = mig_id
        self.jid_event = jid_event
        self.quiet = quiet
        self.started = time.monotonic()
        self._bus = None
        try:
            self._bus = salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False)
        except Exception as err:
            log.warning("v2v %s: no master event bus (%s); no events will be sent", mig_id, err)
        self._lock = threading.Lock()

    def __call__(self, step, state, info):
        tag = f"opsalt/v2v/{self.mig_id}/{step or 'flow'}"
        data = {"id": self.mig_id, "step": step or "flow", "state": state}
        if info.get("error"):
            data["error"] = info["error"]
        with self._lock:
            if self._bus is not None:
                try:
                    self._bus.fire_event(data, tag)
                except Exception as err:
                    log.debug("v2v: event %s not sent: %s", tag, err)
            message = f"[{time.monotonic() - self.started:7.1f}s] {self.mig_id}: {step or 'flow'} {state}"
            if data.get("error"):
                message += f": {data['error']}"
            log.info(message)
            if not self.quiet:
                sink = _PROGRESS.get()
                if sink is not None:
                    sink(message)  # a wave member: the wave's thread sends it
                else:
                    _fire_progress(self.jid_event, message)

    def close(self):
        if self._bus is not None:
            self._bus.destroy()


# -- the flow -----------------------------------------------------------------------


def _step_table(spec, facts):
    """
    Every step of the migration (``opsalt_v2v.step_table``), rebuilt from the
    definition and the preflight facts, so resume runs the same flow.
    """
    return opsalt_v2v.step_table(spec, facts)


def _tasks(steps, spec, facts, call):
    """
    The flow's tasks: each step run on its minion, its result checked by the
    step's ``verify``, its revert run when the step's ``revert_when`` holds.
    """
    timeout = spec["step_timeout"] + 60

    def execute(step):
        result = call(step["minion"], step["fun"], _timeout=timeout, **step["kwargs"])
        return opsalt_v2v.verify_result(step, result)

    def revert(step, _result):
        if opsalt_v2v.should_revert(step, facts):
            minion, fun, kwargs = step["revert"]
            call(minion, fun, _timeout=timeout, **kwargs)

    return [
        opsalt_v2v_flow.Task(
            step["name"],
            functools.partial(execute, step),
            functools.partial(revert, step),
            requires=step["requires"],
        )
        for step in steps
    ]


# -- preflight ---------------------------------------------------------------------


def _gather(spec, call):
    """
    Everything preflight needs to know, asked with one ``v2v.probe`` job per
    minion, all minions at the same time. Returns ``{key: answer}`` where an
    answer is ``{"ok": True, "value": ...}`` or ``{"ok": False, "error": ...}``.
    """
    by_minion = {}
    for key, (minion, fun, args, kwargs) in opsalt_v2v.probes(spec).items():
        by_minion.setdefault(minion, []).append((key, fun, {"fun": fun, "args": args, "kwargs": kwargs}))
    answers = {}

    def ask(minion, entries):
        try:
            results = call(minion, "v2v.probe", [probe for _key, _fun, probe in entries])
        except CommandExecutionError as err:
            # the job itself failed: every check that needed this minion says why
            for key, _fun, _probe in entries:
                answers[key] = {"ok": False, "error": str(err)}
            return
        for (key, fun, _probe), result in zip(entries, results):
            if not result["ok"]:
                result = dict(result, error=f"v2v.{fun} on {minion}: {result['error']}")
            answers[key] = result

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(by_minion)) as pool:
        list(pool.map(lambda item: ask(*item), by_minion.items()))
    return answers


def _preflight(spec, call, mig_id):
    """
    Every check before anything changes (``opsalt_v2v.PREFLIGHT``), on the
    answers of one probe job per minion. Returns ``(ok, checks, facts)``.
    """
    return opsalt_v2v.preflight(spec, _gather(spec, call), mig_id)


def _plan(spec, steps, call):
    by_minion = {}
    for step in steps:
        if step["command"]:
            by_minion.setdefault(step["minion"], []).append(step)
    commands = {}
    for minion, minion_steps in by_minion.items():
        lines = call(minion, "v2v.commands", [s["command"] for s in minion_steps])
        for step, line in zip(minion_steps, lines):
            commands[step["name"]] = line
    return [
        {
            "step": s["name"],
            "minion": s["minion"],
            "function": s["fun"],
            "requires": s["requires"],
            "command": commands.get(s["name"]),
            "revert": f"{s['revert'][1]} on {s['revert'][0]}" if s["revert"] else None,
        }
        for s in steps
    ]


# -- the public functions -------------------------------------------------------------


def _reported(func):
    """
    A bad definition or a refused action becomes a clear return with
    ``retcode: 1`` (salt-run's exit code), not a traceback.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        __context__.pop("retcode", None)
        try:
            ret = func(*args, **kwargs)
        except (SaltInvocationError, CommandExecutionError) as err:
            __context__["retcode"] = 1
            return {"result": False, "comment": str(err), "retcode": 1}
        if isinstance(ret, dict) and __context__.get("retcode"):
            ret["retcode"] = __context__["retcode"]
        return ret

    return wrapper


def _caller():
    return MinionCaller(__opts__)


def _jid_event():
    return globals().get("__jid_event__")


@_reported
def plan(mig_id=None, pillar_minion=None, **kwargs):
    """
    Every step of the migration with the minion that runs it and the exact
    command, plus the preflight verdict. Changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run v2v.plan instance-00000017 pillar_minion=conv01
        salt-run v2v.plan source_host=xen01 source_domain=instance-00000017 conversion_minion=conv01 \\
            compute_minion=compute07 instance_uuid=5f1b7f3e-6d7c-4b4a-9a3e-2f8f0c1d2e3f \\
            target_domain=instance-000007a2 pool=vms work_dir=/data/v2v/instance-00000017
    """
    mig_id, spec = _load_definition(mig_id, pillar_minion, kwargs)
    with _caller() as call:
        ok, checks, facts = _preflight(spec, call, mig_id)
        result = {"id": mig_id, "definition": spec, "preflight": {"ok": ok, "checks": checks}}
        if ok:
            result["steps"] = _plan(spec, _step_table(spec, facts), call)
        else:
            __context__["retcode"] = 1
    return result


@_reported
def migrate(mig_id=None, pillar_minion=None, test=False, quiet=False, **kwargs):
    """
    Run the migration. Preflight first (nothing changes when it fails); then
    the flow, reverting every completed step in reverse order on failure.
    ``test=True`` is ``plan``. Returns the final state and the steps.

    CLI Example:

    .. code-block:: bash

        salt-run v2v.migrate instance-00000017 pillar_minion=conv01
        salt-run v2v.migrate instance-00000017 pillar_minion=conv01 test=True
    """
    if test:
        return plan(mig_id, pillar_minion, **kwargs)
    mig_id, spec = _load_definition(mig_id, pillar_minion, kwargs)
    result = _migrate(mig_id, spec, quiet=quiet)
    if not result["result"]:
        __context__["retcode"] = 1
    return result


def _migrate(mig_id, spec, quiet=False):
    """
    One migration: its lock, journal, preflight and flow. Returns the
    summary (``result`` true on success); touches no shared state, so a
    wave runs several side by side.
    """
    with _exclusive(mig_id):
        existing = opsalt_files.read_text(_journal_path(mig_id))
        if existing is not None:
            state = json.loads(existing).get("flow", {}).get("state")
            if state not in ("reverted",):
                raise CommandExecutionError(
                    f"migration {mig_id} already has a journal in state '{state}'; "
                    f"use v2v.status/resume/rollback {mig_id}"
                )
            # a new attempt after a rollback: keep the old journal beside it
            opsalt_files.backup(_journal_path(mig_id))
        with _caller() as call:
            ok, checks, facts = _preflight(spec, call, mig_id)
            if not ok:
                failed = [f"{c['check']}: {c['detail']}" for c in checks if not c["ok"]]
                return {
                    "id": mig_id,
                    "result": False,
                    "state": "refused",
                    "comment": "preflight failed, nothing was changed: " + "; ".join(failed),
                    "preflight": checks,
                }
            steps = _step_table(spec, facts)
            journal = {
                "id": mig_id,
                "definition": spec,
                "facts": facts,
                "created": time.time(),
                "runs": [],
                "flow": opsalt_v2v_flow.new_state(_tasks(steps, spec, facts, call)),
            }
            return _run_flow(journal, call, "migrate", quiet=quiet)


# -- waves ----------------------------------------------------------------------------


def _wave_path(name):
    return os.path.join(_journal_dir(), "waves", f"{opsalt_v2v.migration_id({}, name)}.json")


def _write_wave(record):
    os.makedirs(os.path.dirname(_wave_path(record["wave"])), mode=0o700, exist_ok=True)
    record["updated"] = time.time()
    opsalt_files.atomic_write(
        _wave_path(record["wave"]),
        json.dumps(record, indent=1, sort_keys=True),
        mode=0o600,
        make_backup=False,
    )


def _wave_summary(record):
    entries = record["migrations"]
    wanted = record.get("wanted", "success")
    state = record.get("state") or opsalt_v2v.wave_state(entries, wanted)
    return {
        "wave": record["wave"],
        "state": state,
        "result": state == wanted,
        "concurrency": record["concurrency"],
        "seconds": record.get("seconds"),
        "migrations": entries,
        "table": opsalt_v2v.wave_table(entries),
        "journal": _wave_path(record["wave"]),
    }


def _source_disks(mig_id):
    text = opsalt_files.read_text(_journal_path(mig_id))
    return (json.loads(text).get("facts") or {}).get("source_disks") if text else None


def _wave_specs(members, pillar_minion, v2v_pillar):
    # every definition is checked before the first migration starts
    specs, problems = {}, []
    for mig_id in members:
        try:
            specs[mig_id] = validate_definition(_definition_from_pillar(mig_id, pillar_minion, v2v_pillar))
        except SaltInvocationError as err:
            problems.append(f"{mig_id}: {err}")
    if problems:
        raise SaltInvocationError("wave refused, nothing was changed: " + " | ".join(problems))
    return specs


def _timed(mig_id, action):
    """Run one wave member's ``action()`` (a summary) and make its wave entry."""
    started = time.monotonic()
    try:
        summary = action()
    except (CommandExecutionError, SaltInvocationError) as err:
        summary = {"id": mig_id, "state": "refused", "result": False, "comment": str(err)}
    except Exception as err:  # one migration's surprise must not lose the others' results
        log.exception("v2v wave: migration %s failed unexpectedly", mig_id)
        summary = {"id": mig_id, "state": "error", "result": False, "comment": f"{type(err).__name__}: {err}"}
    return opsalt_v2v.wave_entry(summary, _source_disks(mig_id), time.monotonic() - started)


def _run_wave(record, member, wanted="success"):
    """
    Run ``member(mig_id)`` (a wave entry) for each member of the wave,
    ``record["concurrency"]`` at a time, saving the record after every change;
    with ``stop_on_failure``, nothing new starts after an entry that is not
    ``wanted``.
    """
    lock, stop = threading.Lock(), threading.Event()
    record["wanted"] = wanted
    record["migrations"] = {m: record["migrations"].get(m, {"state": "pending"}) for m in record["members"]}
    _write_wave(record)

    def update(mig_id, entry):
        with lock:
            record["migrations"][mig_id] = entry
            _write_wave(record)

    messages = queue.SimpleQueue()

    def drain():
        while not messages.empty():
            _fire_progress(_jid_event(), messages.get())

    def run(mig_id):
        _PROGRESS.set(messages.put)
        if stop.is_set():
            update(
                mig_id, {"state": "not started", "result": False, "comment": "an earlier migration failed"}
            )
            return
        update(mig_id, dict(record["migrations"][mig_id], state="running"))
        entry = member(mig_id)
        if entry["state"] != wanted and record["stop_on_failure"]:
            stop.set()
        update(mig_id, entry)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=record["concurrency"]) as pool:
        # each thread runs in a copy of this job's context, where the loader keeps __opts__
        futures = [pool.submit(contextvars.copy_context().run, run, mig_id) for mig_id in record["members"]]
        while concurrent.futures.wait(futures, timeout=0.5).not_done:
            drain()
    drain()
    for future in futures:
        future.result()
    record.update(
        seconds=round(time.monotonic() - started, 2),
        state=opsalt_v2v.wave_state(record["migrations"], wanted),
    )
    _write_wave(record)
    summary = _wave_summary(record)
    if summary["state"] != wanted:
        __context__["retcode"] = 1
    return summary


def _read_wave(wave):
    text = opsalt_files.read_text(_wave_path(wave))
    if text is None:
        raise SaltInvocationError(f"no wave {wave} in {os.path.dirname(_wave_path(wave))}")
    return json.loads(text)


@_reported
def migrate_wave(wave=None, pillar_minion=None, ids=None, concurrency=2, stop_on_failure=False, quiet=False):
    """
    Run several migrations, ``concurrency`` at a time (default 2). Each has
    its own lock, journal, flow and revert, exactly as ``v2v.migrate``: a
    failure reverts only that VM. The others go on, unless
    ``stop_on_failure=True``, which starts no further migration after the
    first failure (running ones finish; the rest are ``not started``). The
    ids come from ``ids`` or from pillar ``v2v:waves:<wave>`` of
    ``pillar_minion``, the definitions from its ``v2v:migrations``; all are
    validated before anything starts. Returns each migration's state, wall
    time and MiB/s, and a summary table; ``v2v.status wave=<name>`` shows it
    later, ``v2v.resume_wave`` finishes it, ``v2v.rollback_wave`` undoes it.

    CLI Example:

    .. code-block:: bash

        salt-run v2v.migrate_wave wave1 pillar_minion=conv01
        salt-run v2v.migrate_wave ids='[vm17, vm18, vm19]' pillar_minion=conv01 concurrency=3 stop_on_failure=True
    """
    if not pillar_minion:
        raise SaltInvocationError("give pillar_minion: the wave's definitions come from its pillar")
    v2v_pillar = _v2v_pillar(pillar_minion)
    name, members = opsalt_v2v.wave_members(wave, ids, v2v_pillar)
    record = {
        "wave": name,
        "members": members,
        "concurrency": opsalt_v2v.wave_concurrency(concurrency),
        "stop_on_failure": bool(stop_on_failure),
        "started": time.time(),
        # kept so resume_wave can start the members that never started
        "definitions": _wave_specs(members, pillar_minion, v2v_pillar),
        "migrations": {},
    }
    specs = record["definitions"]
    return _run_wave(
        record, lambda mig_id: _timed(mig_id, lambda: _migrate(mig_id, specs[mig_id], quiet=quiet))
    )


def _resume_member(mig_id, spec, quiet):
    if opsalt_files.read_text(_journal_path(mig_id)) is None:
        # never started (or refused by preflight): start it now
        return _migrate(mig_id, spec, quiet=quiet)
    summary, _ran = _resume(mig_id, quiet=quiet)
    return summary


@_reported
def resume_wave(wave, quiet=False):
    """
    Finish a wave whose runner died: each migration that was interrupted is
    resumed from its journal (as ``v2v.resume``), each that never started is
    started, finished ones are left as they are (a reverted one stays
    reverted: retry it with ``v2v.migrate``). Same concurrency and
    ``stop_on_failure`` as the wave.

    CLI Example:

    .. code-block:: bash

        salt-run v2v.resume_wave wave1
    """
    record = _read_wave(wave)
    record.pop("state", None)
    specs = record["definitions"]
    return _run_wave(
        record, lambda mig_id: _timed(mig_id, lambda: _resume_member(mig_id, specs[mig_id], quiet))
    )


def _rollback_member(mig_id, quiet):
    if opsalt_files.read_text(_journal_path(mig_id)) is None:
        return {
            "id": mig_id,
            "state": "not started",
            "result": False,
            "comment": "never started: nothing to undo",
        }
    return _rollback(mig_id, quiet=quiet)


@_reported
def rollback_wave(wave, quiet=False):
    """
    Undo every migration of a wave (as ``v2v.rollback``, each on its own);
    members that never started are left alone. Refused per VM after
    ``cleanup`` removed its backups.

    CLI Example:

    .. code-block:: bash

        salt-run v2v.rollback_wave wave1
    """
    record = _read_wave(wave)
    record.pop("state", None)
    record["stop_on_failure"] = False  # undo as much as can be undone
    return _run_wave(
        record, lambda mig_id: _timed(mig_id, lambda: _rollback_member(mig_id, quiet)), "reverted"
    )


def _run_flow(journal, call, action, quiet=False):
    spec, facts = journal["definition"], journal["facts"]
    steps = _step_table(spec, facts)
    reporter = Reporter(journal["id"], _jid_event(), quiet=quiet)
    run = {"action": action, "pid": os.getpid(), "started": time.time()}
    journal["runs"].append(run)
    started = time.monotonic()
    call.reset_idle()
    lock = threading.Lock()

    def save(flow_state):
        with lock:
            journal["flow"] = flow_state
            _write_journal(journal)

    engine = opsalt_v2v_flow.Engine(
        _tasks(steps, spec, facts, call),
        journal["flow"],
        save=save,
        notify=reporter,
        max_workers=spec["parallel"],
    )
    try:
        final = engine.revert() if action == "rollback" else engine.run()
    finally:
        reporter.close()
    run.update(
        ended=time.time(),
        state=final,
        seconds=round(time.monotonic() - started, 3),
        overhead_seconds=round(call.idle_now(), 3),
    )
    save(journal["flow"])
    return _summary(journal)


def _failed_unless(summary, wanted):
    # salt-run's exit code: 1 unless the flow ended as wanted
    if summary["state"] != wanted:
        __context__["retcode"] = 1
    return summary


def _summary(journal):
    flow = journal["flow"]
    tasks = flow["tasks"]
    failed = {n: t["error"] for n, t in tasks.items() if t.get("error")}
    revert_failed = {n: t.get("revert_error") for n, t in tasks.items() if t["state"] == "revert_failed"}
    result = {
        "id": journal["id"],
        "state": flow["state"],
        "result": flow["state"] == "success",
        "steps": {n: t["state"] for n, t in tasks.items()},
        "journal": _journal_path(journal["id"]),
    }
    timed = {
        n: round(t["ended"] - t["started"], 2)
        for n, t in tasks.items()
        if t.get("started") and t.get("ended")
    }
    if timed:
        result["step_seconds"] = timed
    # each copy stream's rate: what decides whether copying disks side by side pays off
    rates = {
        n: round(t["result"]["bytes"] / t["result"]["seconds"] / 2**20, 1)
        for n, t in tasks.items()
        if isinstance(t.get("result"), dict) and t["result"].get("bytes") and t["result"].get("seconds")
    }
    if rates:
        result["copy_mib_per_s"] = rates
    if journal.get("runs"):
        last = journal["runs"][-1]
        result["seconds"] = last.get("seconds")
        result["overhead_seconds"] = last.get("overhead_seconds")
    if failed:
        result["errors"] = failed
    if revert_failed:
        result["revert_errors"] = revert_failed
    if journal.get("cleanup"):
        result["cleanup"] = journal["cleanup"]
    return result


@_reported
def status(mig_id=None, wave=None):
    """
    The state of one migration (every step), of a wave (each migration's
    state, wall time and MiB/s, and the table), or of all journals when no
    id is given.

    CLI Example:

    .. code-block:: bash

        salt-run v2v.status
        salt-run v2v.status instance-00000017
        salt-run v2v.status wave=wave1
    """
    if wave is not None:
        return _wave_summary(_read_wave(wave))
    if mig_id is not None:
        return _summary(_read_journal(mig_id))
    found = {}
    try:
        names = sorted(os.listdir(_journal_dir()))
    except FileNotFoundError:
        return found
    for name in names:
        if name.endswith(".json"):
            journal = json.loads(opsalt_files.read_text(os.path.join(_journal_dir(), name)))
            found[journal["id"]] = journal["flow"]["state"]
    return found


def _v2v_jobs(call, minion, markers):
    """
    The ``v2v.*`` jobs running on ``minion`` for one migration: every step
    names its work dir, instance UUID or a domain, so other migrations of a
    wave on the same minion are not waited for.
    """
    try:
        running = call(minion, "saltutil.running", _timeout=30)
    except CommandExecutionError:
        return []  # a minion that does not answer runs nothing we could wait for
    return [
        job
        for job in running or []
        if str(job.get("fun", "")).startswith("v2v.")
        and any(marker in json.dumps(job.get("arg"), default=str) for marker in markers)
    ]


def _wait_for_jobs(journal, call, timeout=600):
    # A killed runner leaves its minion jobs running; let them finish so a
    # step is never executed twice at the same time.
    spec = journal["definition"]
    minions = sorted({spec["conversion_minion"], spec["compute_minion"]})
    markers = [spec[key] for key in ("work_dir", "instance_uuid", "source_domain", "target_domain")]
    busy = {}

    def idle():
        busy.update((minion, _v2v_jobs(call, minion, markers)) for minion in minions)
        return not any(busy.values())

    if not opsalt_wait.until(idle, timeout, interval=0.5, max_interval=2.0):
        minion, jobs = next((m, jobs) for m, jobs in busy.items() if jobs)
        raise CommandExecutionError(
            f"{minion} still runs {', '.join(j['fun'] for j in jobs)} after {timeout} s; try again later"
        )


@_reported
def resume(mig_id, quiet=False):
    """
    Continue a migration whose runner or master died mid-flight, from its
    journal: finished steps are skipped, interrupted ones run again (every
    step is idempotent). A migration that was reverting keeps reverting.

    CLI Example:

    .. code-block:: bash

        salt-run v2v.resume instance-00000017
    """
    summary, ran = _resume(mig_id, quiet=quiet)
    return _failed_unless(summary, "success") if ran else summary


def _resume(mig_id, quiet=False):
    # (summary, whether the flow ran)
    with _exclusive(mig_id):
        journal = _read_journal(mig_id)
        if journal["flow"]["state"] in FINAL_STATES:
            comment = f"nothing to resume: the migration is {journal['flow']['state']}"
            return dict(_summary(journal), comment=comment), False
        with _caller() as call:
            _wait_for_jobs(journal, call)
            return _run_flow(journal, call, "resume", quiet=quiet), True


@_reported
def rollback(mig_id, quiet=False):
    """
    Undo a migration (finished, failed or interrupted): every step that ran
    is reverted, newest first: the imported images removed, the ``.bak``
    images renamed back, the target restarted if it was running, the local
    copies removed. Refused after ``cleanup`` removed the backups.

    CLI Example:

    .. code-block:: bash

        salt-run v2v.rollback instance-00000017
    """
    return _failed_unless(_rollback(mig_id, quiet=quiet), "reverted")


def _rollback(mig_id, quiet=False):
    with _exclusive(mig_id):
        journal = _read_journal(mig_id)
        if (journal.get("cleanup") or {}).get("backups_removed"):
            raise CommandExecutionError(
                f"migration {mig_id} was cleaned up: the .bak images are gone, no rollback"
            )
        if journal["flow"]["state"] == "reverted":
            return dict(_summary(journal), comment="already rolled back")
        with _caller() as call:
            _wait_for_jobs(journal, call)
            return _run_flow(journal, call, "rollback", quiet=quiet)


@_reported
def cleanup(mig_id, remove_backups=False, remove_local=False):
    """
    After a successful migration, and only once the new instance is verified
    running: remove the ``.bak`` images (``remove_backups=True``) and/or the
    local copies in the work dir (``remove_local=True``). Without either it
    only reports what would be removed.

    CLI Example:

    .. code-block:: bash

        salt-run v2v.cleanup instance-00000017 remove_backups=True remove_local=True
    """
    with _exclusive(mig_id):
        journal = _read_journal(mig_id)
        spec, facts = journal["definition"], journal["facts"]
        if journal["flow"]["state"] != "success":
            raise CommandExecutionError(
                f"migration {mig_id} is '{journal['flow']['state']}', not success; cleanup removes originals "
                "only after a successful migration"
            )
        with _caller() as call:
            state = call(spec["compute_minion"], "v2v.domain_state", spec["target_domain"])
            if state != "running":
                raise CommandExecutionError(
                    f"{spec['target_domain']} is '{state}'; cleanup needs the new instance verified running"
                )
            backups = [image + opsalt_v2v.BAK for image in facts["target_images"]]
            done = copy.deepcopy(journal.get("cleanup") or {})
            if remove_backups:
                for bak in backups:
                    call(spec["conversion_minion"], "v2v.rbd_remove", spec["pool"], bak)
                done["backups_removed"] = backups
            if remove_local:
                call(spec["conversion_minion"], "v2v.remove_work_dir", spec["work_dir"])
                done["local_removed"] = spec["work_dir"]
        if not (remove_backups or remove_local):
            return {
                "id": mig_id,
                "would_remove": {"backups": backups, "local": spec["work_dir"]},
                "comment": "nothing removed: pass remove_backups=True and/or remove_local=True",
            }
        journal["cleanup"] = done
        _write_journal(journal)
        return _summary(journal)
