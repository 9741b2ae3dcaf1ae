"""
The minion side of a pgbouncer maintenance window
(``_runners/pgbouncer_maintenance.py``): PAUSE one database with a marker on
disk, and RESUME it and remove the marker.

The marker is written before PAUSE and removed only after RESUME succeeded
(or pgbouncer said the database was not paused), so a runner that dies
inside the window leaves a record of what it paused. It is a root-only JSON
file, ``<cachedir>/pgbouncer_maintenance/<database>.json``:

.. code-block:: json

    {"database": "appdb", "jid": "20261202101500123456", "paused_at": 1796206500.1,
     "expires": 1796206890.1, "owner": {"master": "salt_master", "pid": 4242, "started": 1796206490.0},
     "sls_hosts": ["pg1"]}

``jid`` is the job id of the maintenance ``state.apply``, ``owner`` the
runner process that paused it, ``expires`` the end of the window (pause
timeout, state timeout and a grace period). ``pgbouncer_maintenance.resume``
resumes what markers name; the runner also calls it at the start of the next
window for markers whose runner is gone or whose window has expired.

PAUSE and RESUME go through the ``pgbouncer`` module, so the console
connection is the one ``pgbouncer:admin`` configures.
"""

import json
import logging
import os
import re
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import opsalt_files
    import opsalt_validate

    HAS_HELPERS = True
except ImportError as _err:  # pragma: no cover
    HAS_HELPERS = False
    _IMPORT_ERROR = str(_err)

log = logging.getLogger(__name__)

__virtualname__ = "pgbouncer_maintenance"

JID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MARKER_SUFFIX = ".json"
MAX_TTL = 86400
#: What pgbouncer answers to RESUME of a database that is not paused.
NOT_PAUSED = ("not paused", "no such database")


def __virtual__():
    if not HAS_HELPERS:
        return (False, f"pgbouncer_maintenance: the opsalt helper modules are missing ({_IMPORT_ERROR})")
    return __virtualname__


def _database(database):
    name = str(database or "")
    if not re.fullmatch(opsalt_validate.DATABASE_PATTERN, name):
        raise SaltInvocationError(
            f"database {name!r} is not a plain pgbouncer database name (letters, digits, _ . -, "
            "not starting with . or -)"
        )
    return name


def _marker_dir():
    return os.path.join(__opts__["cachedir"], "pgbouncer_maintenance")


def _marker_path(database):
    return os.path.join(_marker_dir(), _database(database) + MARKER_SUFFIX)


def _read_marker(path, name):
    try:
        with open(path, encoding="utf-8") as handle:
            marker = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        # Still a record that something was paused: resume it rather than forget it.
        log.warning("pgbouncer_maintenance: unreadable marker %s: %s", path, err)
        return {"database": name, "unreadable": True}
    if not isinstance(marker, dict):
        return {"database": name, "unreadable": True}
    marker["database"] = name
    return marker


def _markers():
    try:
        names = sorted(os.listdir(_marker_dir()))
    except FileNotFoundError:
        return []
    found = []
    for entry in names:
        name = entry[: -len(MARKER_SUFFIX)]
        if entry.endswith(MARKER_SUFFIX) and re.fullmatch(opsalt_validate.DATABASE_PATTERN, name):
            marker = _read_marker(os.path.join(_marker_dir(), entry), name)
            if marker is not None:
                found.append(marker)
    return found


def _expired(marker, now):
    try:
        return float(marker.get("expires")) < now
    except (TypeError, ValueError):
        return True


def markers(database=None):
    """
    The maintenance markers on this minion: databases a maintenance window
    paused and has not resumed yet, each with ``jid``, ``paused_at``,
    ``expires``, ``owner``, ``sls_hosts`` and ``expired``. An empty list when
    nothing is paused by a maintenance window.

    :param database: only this database's marker

    CLI Example:

    .. code-block:: bash

        salt 'db*' pgbouncer_maintenance.markers
    """
    now = time.time()
    wanted = None if database is None else _database(database)
    found = [marker for marker in _markers() if wanted is None or marker["database"] == wanted]
    for marker in found:
        marker["expired"] = _expired(marker, now)
    return found


def _number(value, what, low, high):
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise SaltInvocationError(f"{what} must be a number of seconds, not {value!r}") from err
    if not low < number <= high:
        raise SaltInvocationError(f"{what} must be more than {low} and at most {high} seconds, not {value!r}")
    return number


def _resume(name):
    """RESUME ``name``; True when it was paused, False when pgbouncer says it was not."""
    try:
        __salt__["pgbouncer.resume"](name)
    except CommandExecutionError as err:
        if any(words in str(err) for words in NOT_PAUSED):
            return False
        raise
    return True


def _forget(name):
    path = _marker_path(name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise CommandExecutionError(f"{name} was resumed but its marker {path} stays: {err}") from err


def pause(database, jid, ttl, timeout=30, owner=None, sls_hosts=None):
    """
    Record a maintenance marker for ``database``, then ``PAUSE`` it, waiting
    at most ``timeout`` seconds for the pause to complete. If PAUSE fails or
    does not complete in time, the database is resumed, the marker removed
    and ``CommandExecutionError`` raised. Called by the
    ``pgbouncer_maintenance`` runner, not by hand.

    :param database: the pgbouncer database to pause
    :param jid: the job id of the maintenance run (kept in the marker)
    :param ttl: seconds until the marker counts as expired
    :param timeout: seconds PAUSE may take (in session pooling it waits for
        every client to disconnect)
    :param owner: the runner process (``master``, ``pid``, ``started``)
    :param sls_hosts: the minions that run the maintenance states

    CLI Example:

    .. code-block:: bash

        salt db1 pgbouncer_maintenance.pause appdb 20261202101500123456 ttl=400 timeout=30
    """
    name = _database(database)
    if not JID_PATTERN.fullmatch(str(jid or "")):
        raise SaltInvocationError(f"jid {jid!r} is not a job id")
    ttl = _number(ttl, "ttl", 0, MAX_TTL)
    timeout = _number(timeout, "timeout", 0, MAX_TTL)
    path = _marker_path(name)
    existing = _read_marker(path, name)
    if existing and str(existing.get("jid")) != str(jid):
        raise CommandExecutionError(
            f"{name} is already paused for maintenance (job {existing.get('jid')}): wait for that window "
            f"to end, or end it with `salt-run pgbouncer_maintenance.resume tgt={__opts__.get('id')} "
            f"database={name}`"
        )
    now = time.time()
    marker = {
        "database": name,
        "jid": str(jid),
        "paused_at": now,
        "expires": now + ttl,
        "owner": owner or {},
        "sls_hosts": list(sls_hosts or []),
    }
    os.makedirs(_marker_dir(), mode=0o700, exist_ok=True)
    try:
        opsalt_files.atomic_write(path, json.dumps(marker), mode=0o600, make_backup=False)
    except OSError as err:
        raise CommandExecutionError(f"cannot record the maintenance marker {path}: {err}") from err
    try:
        status = __salt__["pgbouncer.pause"](name, timeout=timeout)
    except CommandExecutionError as err:
        raise _undo_pause(name, err) from None
    return {"database": name, "jid": str(jid), "expires": marker["expires"], "status": status}


def _undo_pause(name, err):
    """Resume after a failed PAUSE; the error to raise."""
    try:
        _resume(name)
    except CommandExecutionError as again:
        return CommandExecutionError(
            f"cannot pause {name}: {err}; RESUME failed too ({again}), so its marker stays: "
            f"`pgbouncer_maintenance.resume {name}` or the next maintenance window resumes it"
        )
    _forget(name)
    return CommandExecutionError(f"cannot pause {name}: {err}")


def resume(database=None, jid=None, expired=False):
    """
    ``RESUME`` every database a maintenance marker names, then remove the
    marker. A database pgbouncer reports as not paused (resumed by hand, or
    pgbouncer was restarted) only loses its marker. A database without a
    marker is left alone: ``pgbouncer.resume`` resumes anything.

    Returns ``{"resumed": [...], "not_paused": [...]}``. When a RESUME
    fails, the others are still resumed, that marker stays and
    ``CommandExecutionError`` names it.

    :param database: only this database's marker
    :param jid: only markers of this maintenance job
    :param expired: only markers whose window has expired (what a schedule
        can run as a safety net)

    CLI Example:

    .. code-block:: bash

        salt db1 pgbouncer_maintenance.resume
        salt db1 pgbouncer_maintenance.resume appdb
        salt 'db*' pgbouncer_maintenance.resume expired=True
    """
    done = {"resumed": [], "not_paused": []}
    failed = []
    for marker in markers(database):
        if jid is not None and str(marker.get("jid")) != str(jid):
            continue
        if expired and not marker["expired"]:
            continue
        name = marker["database"]
        try:
            was_paused = _resume(name)
            _forget(name)
        except CommandExecutionError as err:
            failed.append(f"{name}: {err}")
            continue
        done["resumed" if was_paused else "not_paused"].append(name)
    if failed:
        raise CommandExecutionError(
            f"RESUME failed, the marker stays for the next try: {'; '.join(failed)} "
            f"(resumed: {', '.join(done['resumed']) or 'none'})"
        )
    return done
