"""
A maintenance window for one pgbouncer database: ``PAUSE`` it on every
pgbouncer host ``tgt`` matches, apply the maintenance SLS, and ``RESUME`` it
whatever happened (the states failed, they ran past ``timeout``, the pause
itself failed).

Called from ``salt/orch/pgbouncer_maintenance.sls`` through the
``pgbouncer_maintenance.applied`` state, or directly:

.. code-block:: bash

    salt-run pgbouncer_maintenance.run appdb pgmaint.reindex tgt='db*' sls_tgt=pg1 timeout=300
    salt-run pgbouncer_maintenance.run appdb pgmaint.reindex tgt='db*' dry_run=True
    salt-run pgbouncer_maintenance.resume tgt='db*'

Made for transaction pooling: PAUSE completes once the running transactions
end, clients that send a query during the window wait in pgbouncer, and they
go on after RESUME. In session pooling PAUSE waits for every client to
disconnect; ``pause_timeout`` bounds that wait, then the database is resumed
and no state runs.

Each pgbouncer host records a marker (``pgbouncer_maintenance.pause``) before
its PAUSE and removes it after its RESUME. A runner killed inside the window
leaves the markers: ``pgbouncer_maintenance.resume`` resumes what they name,
and the next ``run`` does so itself for markers whose runner is gone or
whose window has expired.
"""

import logging
import os
import re
import time

import psutil
import salt.client
import salt.utils.jid
from salt.exceptions import CommandExecutionError, SaltClientError, SaltInvocationError

try:
    import opsalt_validate
    import opsalt_wait

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "pgbouncer_maintenance"

SLS_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
MAX_SECONDS = 86400
#: Seconds a minion may take to answer one call (pause/resume/markers).
CALL_TIMEOUT = 60
#: Seconds a terminated maintenance job may take to exit before SIGKILL.
STOP_WAIT = 15
#: A marker's life past the window: time for the resume calls themselves.
GRACE = 2 * CALL_TIMEOUT


def __virtual__():
    if not HAS_HELPERS:
        return (False, f"pgbouncer_maintenance: the opsalt helper modules are missing ({_IMPORT_ERROR})")
    return __virtualname__


# -- talking to minions ---------------------------------------------------------


def _client():
    return salt.client.LocalClient(mopts=__opts__)


def _returns(hosts, fun, kwarg=None, tgt_type="list", timeout=CALL_TIMEOUT):
    """``{minion: (return, retcode)}`` of ``fun`` on ``hosts``; the minions that answered."""
    ret = _client().cmd(hosts, fun, kwarg=kwarg or {}, tgt_type=tgt_type, timeout=timeout, full_return=True)
    return {minion: (answer.get("ret"), answer.get("retcode", 0)) for minion, answer in ret.items()}


def _expected(tgt, tgt_type):
    """The minions ``tgt`` matches by their accepted keys, answering or not."""
    return sorted(_client().gather_minions(tgt, tgt_type))


def _job_gone(hosts, jid):
    running = _returns(hosts, "saltutil.find_job", {"jid": str(jid)}, timeout=30)
    return not any(value for value, _ in running.values())


def _stop_job(hosts, jid):
    """
    Stop the maintenance job ``jid`` where it still runs (SIGTERM, SIGKILL
    if it outlives ``STOP_WAIT``) and wait until it is gone, so a later
    ``state.apply`` does not meet it; the hosts where it ran.
    """
    if not hosts:
        return []
    answers = _returns(list(hosts), "saltutil.term_job", {"jid": str(jid)}, timeout=30)
    signalled = sorted(host for host, (value, retcode) in answers.items() if value and not retcode)
    for fun in ("saltutil.kill_job", None):
        if not signalled or opsalt_wait.until(lambda: _job_gone(signalled, jid), STOP_WAIT, interval=0.5):
            break
        if fun:
            _returns(signalled, fun, {"jid": str(jid)}, timeout=30)
        else:
            log.warning("pgbouncer_maintenance: job %s still runs on %s after SIGKILL", jid, signalled)
    return signalled


# -- settings --------------------------------------------------------------------


def _seconds(value, what):
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise SaltInvocationError(f"{what} must be a number of seconds, not {value!r}") from err
    if not 0 < number <= MAX_SECONDS:
        raise SaltInvocationError(
            f"{what} must be more than 0 and at most {MAX_SECONDS} seconds, not {value!r}"
        )
    return number


def _sls(sls):
    names = sls if isinstance(sls, (list, tuple)) else str(sls or "").split(",")
    names = [str(name).strip() for name in names if str(name).strip()]
    if not names:
        raise SaltInvocationError(
            "sls is required: the maintenance SLS to apply while the database is paused"
        )
    bad = [name for name in names if not SLS_PATTERN.fullmatch(name)]
    if bad:
        raise SaltInvocationError(f"not an SLS name: {', '.join(map(repr, bad))} (letters, digits, _ . -)")
    return ",".join(names)


def _settings(database, sls, timeout, pause_timeout, sls_pillar, saltenv):
    name = str(database or "")
    if not re.fullmatch(opsalt_validate.DATABASE_PATTERN, name):
        raise SaltInvocationError(
            f"database {name!r} is not a plain pgbouncer database name (letters, digits, _ . -)"
        )
    if sls_pillar is not None and not isinstance(sls_pillar, dict):
        raise SaltInvocationError("sls_pillar must be a mapping (it is passed to state.apply as pillar)")
    settings = {
        "database": name,
        "sls": _sls(sls),
        "timeout": _seconds(timeout, "timeout"),
        "pause_timeout": _seconds(pause_timeout, "pause_timeout"),
        "sls_pillar": sls_pillar or {},
        "saltenv": saltenv,
    }
    settings["ttl"] = settings["timeout"] + settings["pause_timeout"] + GRACE
    return settings


# -- leftover markers ----------------------------------------------------------------


def _markers(tgt, tgt_type):
    """``({host: [marker, ...]}, {host: problem})`` for the minions ``tgt`` matches."""
    answers = _returns(tgt, "pgbouncer_maintenance.markers", tgt_type=tgt_type)
    found, problems = {}, {}
    for host, (value, retcode) in sorted(answers.items()):
        if retcode or not isinstance(value, list):
            problems[host] = f"pgbouncer_maintenance.markers failed: {value} (is opsalt installed?)"
        else:
            found[host] = value
    for host in _expected(tgt, tgt_type):
        if host not in answers:
            problems[host] = "no answer"
    return found, problems


def _sls_hosts(sls_tgt, sls_tgt_type):
    answered = _returns(sls_tgt, "test.ping", tgt_type=sls_tgt_type)
    silent = [host for host in _expected(sls_tgt, sls_tgt_type) if host not in answered]
    if silent or not answered:
        raise CommandExecutionError(
            f"the maintenance states cannot run on sls_tgt {sls_tgt!r}: "
            f"{'no answer from ' + ', '.join(silent) if silent else 'no minion matched'}; nothing paused"
        )
    return sorted(answered)


def _owner():
    return {"master": __opts__.get("id"), "pid": os.getpid(), "started": psutil.Process().create_time()}


def _owner_alive(owner):
    owner = owner or {}
    if owner.get("master") != __opts__.get("id"):
        return True  # another master's runner: only its expiry tells
    try:
        process = psutil.Process(int(owner["pid"]))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - float(owner["started"])) < 1
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _stale(marker):
    """A marker whose window is over: expired, unreadable, or its runner process is gone."""
    return bool(marker.get("unreadable") or marker.get("expired") or not _owner_alive(marker.get("owner")))


def _resume_markers(found):
    """Stop each marker's job, RESUME its database; ``({host: [db]}, {host: problem}, [terminated])``."""
    resumed, failed, terminated, stopped = {}, {}, set(), set()
    for host, markers in sorted(found.items()):
        for marker in markers:
            jid = marker.get("jid")
            if jid and jid not in stopped:  # one window's markers share its job
                stopped.add(jid)
                terminated.update(_stop_job(marker.get("sls_hosts"), jid))
            name = marker["database"]
            answers = _returns([host], "pgbouncer_maintenance.resume", {"database": name})
            value, retcode = answers.get(host, ("no answer", 1))
            if retcode:
                failed[host] = "; ".join(filter(None, [failed.get(host), f"{name}: {value}"]))
            else:
                resumed.setdefault(host, []).append(name)
    return resumed, failed, sorted(terminated)


def _repair(found, database):
    """Resume what stale markers name; refuse while a live window holds ``database``."""
    busy = {
        host: marker
        for host, markers in found.items()
        for marker in markers
        if marker["database"] == database and not _stale(marker)
    }
    if busy:
        raise CommandExecutionError(
            f"{database} is held by another maintenance window on {', '.join(sorted(busy))} (job "
            f"{next(iter(busy.values())).get('jid')}): wait for it to end, or end it with "
            f"`salt-run pgbouncer_maintenance.resume tgt={','.join(sorted(busy))} tgt_type=list "
            f"database={database}`"
        )
    stale = {host: [m for m in markers if _stale(m)] for host, markers in found.items()}
    resumed, failed, terminated = _resume_markers(
        {host: markers for host, markers in stale.items() if markers}
    )
    if failed:
        raise CommandExecutionError(
            "cannot resume what an earlier maintenance window left paused: "
            + "; ".join(f"{host}: {problem}" for host, problem in sorted(failed.items()))
        )
    return {"resumed": resumed, "terminated": terminated} if resumed else {}


# -- the window --------------------------------------------------------------------


def _pause(settings, hosts, sls_hosts, jid):
    kwarg = {
        "database": settings["database"],
        "jid": jid,
        "ttl": settings["ttl"],
        "timeout": settings["pause_timeout"],
        "owner": _owner(),
        "sls_hosts": sls_hosts,
    }
    answers = _returns(
        hosts, "pgbouncer_maintenance.pause", kwarg, timeout=settings["pause_timeout"] + CALL_TIMEOUT
    )
    return _split(hosts, answers)


def _split(hosts, answers):
    """``(hosts whose call succeeded, {other host: its error or "no answer"})``."""
    done = [host for host in hosts if host in answers and not answers[host][1]]
    failed = {
        host: str(answers[host][0]) if host in answers else "no answer" for host in hosts if host not in done
    }
    return done, failed


def _collect(client, jid, hosts, timeout):
    """The returns of job ``jid`` from ``hosts`` that come within ``timeout`` seconds."""
    returns = {}
    events = client.get_returns_no_block(f"salt/job/{jid}/ret")

    def all_returned():
        for raw in events:  # drains what has arrived; None when nothing more has
            if raw is None:
                break
            data = raw.get("data") or {}
            if data.get("id") in hosts and "return" in data:
                returns[data["id"]] = (data["return"], data.get("retcode", 0))
        return len(returns) == len(hosts)

    opsalt_wait.until(all_returned, timeout, interval=0.2, max_interval=1.0)
    return returns


def _state_outcome(value, retcode):
    if not isinstance(value, dict):
        return {"result": False, "changed": 0, "failed": [f"state.apply failed: {value}"]}
    states = [state for state in value.values() if isinstance(state, dict)]
    failed = [
        f"{state.get('__id__', '?')}: {state.get('comment')}"
        for state in states
        if state.get("result") is False
    ]
    if retcode and not failed:
        failed.append(f"state.apply returned {retcode}")
    return {
        "result": not failed,
        "changed": sum(1 for state in states if state.get("changes")),
        "failed": failed,
    }


def _apply(settings, sls_hosts, jid, outcome):
    """``state.apply`` the maintenance SLS as job ``jid``; stop it on the hosts still running at the timeout."""
    kwarg = {"mods": settings["sls"]}
    if settings["sls_pillar"]:
        kwarg["pillar"] = settings["sls_pillar"]
    if settings["saltenv"]:
        kwarg["saltenv"] = settings["saltenv"]
    client = _client()
    try:
        pub = client.run_job(sls_hosts, "state.apply", kwarg=kwarg, tgt_type="list", jid=jid, listen=True)
        if not pub or not pub.get("jid"):
            raise CommandExecutionError(
                f"state.apply {settings['sls']} could not be published to {sls_hosts}"
            )
        returns = _collect(client, jid, sls_hosts, settings["timeout"])
    finally:
        client.destroy()
    outcome["states"] = {host: _state_outcome(*answer) for host, answer in sorted(returns.items())}
    outcome["timed_out"] = [host for host in sls_hosts if host not in returns]
    outcome["terminated"] = _stop_job(outcome["timed_out"], jid)


def _resume_all(database, hosts, jid):
    return _split(hosts, _returns(hosts, "pgbouncer_maintenance.resume", {"database": database, "jid": jid}))


def _window(settings, hosts, sls_hosts, jid):
    """Pause, apply, and in ``finally`` resume; what happened."""
    outcome = {"paused": [], "pause_failed": {}, "states": {}, "timed_out": [], "terminated": []}
    started = time.monotonic()
    try:
        outcome["paused"], outcome["pause_failed"] = _pause(settings, hosts, sls_hosts, jid)
        if not outcome["pause_failed"]:
            log.info(
                "pgbouncer_maintenance: %s paused on %s, applying %s",
                settings["database"],
                hosts,
                settings["sls"],
            )
            _apply(settings, sls_hosts, jid, outcome)
    except (CommandExecutionError, SaltClientError) as err:
        outcome["error"] = str(err)
    finally:
        outcome["resumed"], outcome["still_paused"] = _resume_all(settings["database"], hosts, jid)
        outcome["seconds"] = round(time.monotonic() - started, 3)
    return outcome


def _problems(settings, outcome, jid):
    database = settings["database"]
    problems = [outcome["error"]] if outcome.get("error") else []
    problems += [f"{host}: {why}" for host, why in outcome["pause_failed"].items()]
    if outcome["pause_failed"]:
        problems.append(f"no maintenance state ran: {database} could not be paused everywhere")
    if outcome["timed_out"]:
        problems.append(
            f"{settings['sls']} did not finish within {settings['timeout']:g} s on {', '.join(outcome['timed_out'])}; "
            f"job {jid} was terminated on {', '.join(outcome['terminated']) or 'no host (it had ended)'}"
        )
    problems += [
        f"{host}: {'; '.join(state['failed'])}"
        for host, state in outcome["states"].items()
        if state["failed"]
    ]
    problems += [
        f"{host}: RESUME failed ({why}): {database} may still be paused there; run "
        f"`salt-run pgbouncer_maintenance.resume tgt={host} tgt_type=list database={database}`"
        for host, why in outcome["still_paused"].items()
    ]
    return problems


# -- entry points ------------------------------------------------------------------


def run(
    database,
    sls,
    tgt="*",
    tgt_type="glob",
    sls_tgt=None,
    sls_tgt_type="glob",
    timeout=300,
    pause_timeout=30,
    sls_pillar=None,
    saltenv=None,
    dry_run=False,
):
    """
    A maintenance window: ``PAUSE database`` on every pgbouncer host ``tgt``
    matches, ``state.apply sls`` on the hosts ``sls_tgt`` matches (default:
    the pgbouncer hosts) for at most ``timeout`` seconds, then ``RESUME
    database`` on every pgbouncer host, always: after failed states, after
    the timeout (the state job is terminated first), after a failed pause
    (then no state runs).

    Refused before anything is paused when a matched minion does not answer
    (it could not be paused) or another live window holds ``database``.
    Markers left by a window whose runner is gone, or whose time is over,
    are resumed first (``repaired`` in the result).

    :param database: the pgbouncer database to pause
    :param sls: the maintenance SLS (a name, a comma-separated list or a list)
    :param tgt: the pgbouncer hosts; ``tgt_type`` how ``tgt`` matches
    :param sls_tgt: where the states run, e.g. the PostgreSQL host; ``sls_tgt_type``
    :param timeout: seconds the states may take
    :param pause_timeout: seconds PAUSE may take on each host (in session
        pooling PAUSE waits for every client to disconnect)
    :param sls_pillar: pillar for the maintenance ``state.apply``
    :param saltenv: saltenv for the maintenance ``state.apply``
    :param dry_run: only say what would be paused, applied and repaired

    Returns ``result``, ``retcode`` (what ``salt-run`` exits with),
    ``comment``, ``database``, ``sls``, ``hosts``,
    ``sls_hosts``, ``jid``, ``paused``, ``resumed``, ``states`` (per host:
    ``result``, ``changed``, ``failed``), ``timed_out``, ``terminated``,
    ``still_paused``, ``seconds`` (pause to resume), ``repaired`` and
    ``problems``.

    CLI Example:

    .. code-block:: bash

        salt-run pgbouncer_maintenance.run appdb pgmaint.reindex tgt='db*' sls_tgt=pg1 timeout=300
    """
    settings = _settings(database, sls, timeout, pause_timeout, sls_pillar, saltenv)
    found, unreachable = _markers(tgt, tgt_type)
    if unreachable:
        raise CommandExecutionError(
            f"cannot pause {settings['database']} on every host tgt matches: "
            + "; ".join(f"{host}: {why}" for host, why in sorted(unreachable.items()))
        )
    hosts = sorted(found)
    sls_hosts = hosts if sls_tgt is None else _sls_hosts(sls_tgt, sls_tgt_type)
    if not hosts:
        raise CommandExecutionError(f"no minion matched tgt {tgt!r} ({tgt_type}): nothing paused")
    report = {
        "database": settings["database"],
        "sls": settings["sls"],
        "hosts": hosts,
        "sls_hosts": sls_hosts,
    }
    if dry_run:
        leftovers = {host: [m["database"] for m in markers] for host, markers in found.items() if markers}
        return dict(
            report,
            result=None,
            leftovers=leftovers,
            comment=f"dry run: would pause {settings['database']} on {', '.join(hosts)}, apply {settings['sls']} "
            f"on {', '.join(sls_hosts)} (at most {settings['timeout']:g} s), then resume it"
            + (f"; would first resume what earlier windows left: {leftovers}" if leftovers else ""),
        )
    report["repaired"] = _repair(found, settings["database"])
    report["jid"] = salt.utils.jid.gen_jid(__opts__)
    outcome = _window(settings, hosts, sls_hosts, report["jid"])
    report.update(outcome)
    report["problems"] = _problems(settings, outcome, report["jid"])
    report["result"] = not report["problems"]
    report["retcode"] = _retcode(report["result"])
    report["comment"] = _comment(settings, report)
    return report


def _retcode(result):
    # salt-run exits with the "retcode" of the returned mapping; the
    # context's marks the job unsuccessful for the event bus and job cache.
    if not result:
        __context__["retcode"] = 1
    return 0 if result else 1


def _comment(settings, report):
    database = settings["database"]
    head = (
        f"{database} paused on {', '.join(report['paused']) or 'no host'} for {report['seconds']:g} s, "
        f"resumed on {', '.join(report['resumed']) or 'no host'}"
    )
    if report["result"]:
        return f"{head}; {settings['sls']} applied on {', '.join(report['sls_hosts'])}"
    return f"maintenance of {database} failed; {head}: " + "; ".join(report["problems"])


def resume(tgt="*", tgt_type="glob", database=None):
    """
    End what maintenance windows left paused: on every minion ``tgt``
    matches, terminate each marker's maintenance job if it still runs,
    ``RESUME`` the database the marker names and remove the marker. Markers
    of a window that is still running are resumed too: this is the
    operator's way to end a window by hand.

    :param database: only this database's markers

    Returns ``result``, ``retcode``, ``comment``, ``resumed`` (``{host: [database]}``),
    ``terminated``, ``failed`` and ``no_answer``.

    CLI Example:

    .. code-block:: bash

        salt-run pgbouncer_maintenance.resume tgt='db*'
        salt-run pgbouncer_maintenance.resume tgt=db2 tgt_type=list database=appdb
    """
    found, unreachable = _markers(tgt, tgt_type)
    wanted = {
        host: [m for m in markers if database is None or m["database"] == database]
        for host, markers in found.items()
    }
    resumed, failed, terminated = _resume_markers(
        {host: markers for host, markers in wanted.items() if markers}
    )
    result = not failed
    listed = "; ".join(f"{host}: {', '.join(names)}" for host, names in sorted(resumed.items()))
    comment = f"resumed {listed}" if resumed else "no maintenance marker: nothing to resume"
    if failed:
        comment += "; RESUME failed on " + "; ".join(f"{host}: {why}" for host, why in sorted(failed.items()))
    if unreachable:
        comment += "; markers not read on " + ", ".join(sorted(unreachable))
    return {
        "result": result,
        "retcode": _retcode(result),
        "comment": comment,
        "resumed": resumed,
        "terminated": terminated,
        "failed": failed,
        "no_answer": sorted(unreachable),
    }
