"""
File helpers shared by every opsalt module: atomic writes with a backup of the
file being replaced, and unified diffs for a state's ``changes``.

Plain Python (no Salt dunders) so it is importable both from the installed
package and as a synced ``_utils`` module.
"""

import difflib
import grp
import os
import pwd
import tempfile
import time

import opsalt_policy

BACKUP_SUFFIX = ".opsalt-bak"
# Backups kept per file; older ones are removed when a new one is made. An
# operator changes it with KEEP_CONFIG_KEY in the minion configuration.
BACKUP_KEEP = 3
KEEP_CONFIG_KEY = "opsalt:backups:keep"


def check_keep(value, what=KEEP_CONFIG_KEY):
    """
    ``value`` as a number of backups to keep: a whole number of at least 1
    (the newest backup is the copy a failed change rolls back to), or
    ``None`` for :data:`BACKUP_KEEP`. Raises ``ValueError`` naming ``what``.
    """
    if value is None:
        return BACKUP_KEEP
    text = str(value).strip()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, str))
        or not (text.isascii() and text.isdigit())
        or int(text) < 1
    ):
        raise ValueError(
            f"{what}: {value!r} is not a whole number of at least 1 (backups kept per file; "
            f"the newest is the rollback copy); set it in the minion configuration or leave it out "
            f"for {BACKUP_KEEP}"
        )
    return int(text)


def backup_keep(salt_funcs):
    """
    How many backups of each file a module keeps: :data:`KEEP_CONFIG_KEY`
    (``opsalt:backups:keep``) from the minion configuration only, never the
    pillar (the asset system must not decide how much rollback history a
    host has), default :data:`BACKUP_KEEP`. ``salt_funcs`` is the module's
    ``__salt__``; pass the result as ``keep_backups`` to :func:`atomic_write`
    or ``keep`` to :func:`backup`. Raises ``ValueError`` (see
    :func:`check_keep`).
    """
    return check_keep(opsalt_policy.operator_config(salt_funcs, KEEP_CONFIG_KEY, BACKUP_KEEP))


def read_text(path):
    """
    Return the text of ``path``, or ``None`` when it does not exist.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _resolve_ids(user, group):
    uid = pwd.getpwnam(user).pw_uid if user is not None else -1
    gid = grp.getgrnam(group).gr_gid if group is not None else -1
    return uid, gid


def backup(path, keep=BACKUP_KEEP):
    """
    Copy ``path`` next to itself as ``<path>.<UTC timestamp>.opsalt-bak``
    (owner and mode preserved) and return the backup's path, or ``None`` when
    ``path`` does not exist. Only the newest ``keep`` backups of ``path`` are
    kept (``None`` keeps all).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = f"{path}.{stamp}{BACKUP_SUFFIX}"
    counter = 0
    while os.path.exists(target):
        counter += 1
        target = f"{path}.{stamp}-{counter}{BACKUP_SUFFIX}"
    with open(path, "rb") as src:
        data = src.read()
    _write_temp_and_rename(target, data, st.st_mode & 0o7777, st.st_uid, st.st_gid)
    if keep is not None:
        for old in list_backups(path)[: -max(int(keep), 1)]:
            os.unlink(old)
    return target


def list_backups(path):
    """The backups :func:`backup` made of ``path``, oldest first."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = os.path.basename(path) + "."
    found = []
    for entry in os.scandir(directory):
        if (
            entry.name.startswith(prefix)
            and entry.name.endswith(BACKUP_SUFFIX)
            and entry.is_file(follow_symlinks=False)
        ):
            found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name, entry.path))
    return [item[2] for item in sorted(found)]


def _write_temp_and_rename(path, data, mode, uid, gid, durable=True):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        # Mode before content, so a secret is never readable by others.
        os.fchmod(fd, mode)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(
    path, content, mode=None, user=None, group=None, make_backup=True, durable=True, keep_backups=BACKUP_KEEP
):
    """
    Replace ``path`` with ``content`` (``str`` or ``bytes``) atomically: a
    temporary file in the same directory, fsync, then ``rename``. The mode is
    ``mode`` if given, else the old file's mode, else 0644. When the file
    existed and ``make_backup`` is true a backup is made first. ``durable``
    fsyncs the file and its directory; caches that can be refetched skip it
    (the rename alone keeps readers from seeing a torn file).

    ``keep_backups`` is how many backups of ``path`` stay (see :func:`backup`).

    Returns the backup path (or ``None``).
    """
    if isinstance(content, str):
        content = content.encode("utf-8")
    uid, gid = _resolve_ids(user, group)
    try:
        st = os.stat(path)
        old_mode = st.st_mode & 0o7777
    except FileNotFoundError:
        st = None
        old_mode = 0o644
    backup_path = backup(path, keep_backups) if (st is not None and make_backup) else None
    _write_temp_and_rename(path, content, old_mode if mode is None else mode, uid, gid, durable)
    return backup_path


def restore(backup_path, path):
    """
    Put the content, owner and mode of ``backup_path`` (made by
    :func:`backup`) back at ``path``, atomically. The backup is kept.
    """
    st = os.stat(backup_path)
    with open(backup_path, "rb") as src:
        data = src.read()
    _write_temp_and_rename(path, data, st.st_mode & 0o7777, st.st_uid, st.st_gid)


def ownership(path):
    """
    Return ``(user, group, mode)`` of ``path``, or ``None`` when it is missing.
    Unknown uids/gids are returned as numbers (as strings).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return user, group, st.st_mode & 0o7777


def unified_diff(old, new, path):
    """
    Unified diff between two texts (``None`` meaning "no file").
    """
    return "".join(
        difflib.unified_diff(
            (old or "").splitlines(keepends=True),
            (new or "").splitlines(keepends=True),
            fromfile=path if old is not None else "/dev/null",
            tofile=path,
        )
    )
