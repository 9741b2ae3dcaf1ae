"""
File helpers shared by every opsalt module: atomic writes with a backup of the
file being replaced, reads that follow no link and never block on a FIFO
(:func:`read_regular`, :func:`read_at`), and unified diffs for a state's
``changes``.

Plain Python (no Salt dunders) so it is importable both from the installed
package and as a synced ``_utils`` module.
"""

import difflib
import errno
import grp
import os
import pwd
import stat
import tempfile
import time

import opsalt_policy
from salt.exceptions import CommandExecutionError

BACKUP_SUFFIX = ".opsalt-bak"
# Backups kept per file; older ones are removed when a new one is made. An
# operator changes it with KEEP_CONFIG_KEY in the minion configuration.
BACKUP_KEEP = 3
KEEP_CONFIG_KEY = "opsalt:backups:keep"


class KeepError(CommandExecutionError, ValueError):
    """A bad ``opsalt:backups:keep``: a ``ValueError`` to helpers, a ``CommandExecutionError`` to Salt."""


def check_keep(value, what=KEEP_CONFIG_KEY):
    """
    ``value`` as a number of backups to keep: a whole number of at least 1
    (the newest backup is the copy a failed change rolls back to), or
    ``None`` for :data:`BACKUP_KEEP`. Raises :class:`KeepError` (a
    ``ValueError`` and a ``CommandExecutionError``) naming ``what``.
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
        raise KeepError(
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
    or ``keep`` to :func:`backup`. Raises :class:`KeepError` (see
    :func:`check_keep`), which execution modules can let through.
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


# -- reading without following a link or blocking ----------------------------
#
# Root reads files whose path comes from pillar (pgbouncer's auth_file and
# pidfile) or that sit in a user's tree (pip.conf, .pypirc): open with
# O_NOFOLLOW | O_NONBLOCK (a FIFO never blocks), then refuse anything fstat
# does not show as a regular file with one link and at most ``max_bytes``.

# The files read this way are small; anything bigger is not one of them.
MAX_BYTES = 1024 * 1024
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnsafePathError(ValueError):
    """A path opsalt refuses to read or write; nothing was read or written."""


def refuse_path(shown, why):
    """Raise :class:`UnsafePathError` for ``shown`` because of ``why``."""
    raise UnsafePathError(f"refusing {shown}: {why}; nothing read or written")


def check_owner(st, uids, shown):
    """Refuse ``shown`` unless its ``stat`` result ``st`` is owned by one of ``uids``."""
    if st.st_uid not in uids:
        refuse_path(shown, f"owned by uid {st.st_uid}, not by {' or '.join(str(u) for u in sorted(uids))}")


def read_at(dir_fd, name, uids, shown, max_bytes=MAX_BYTES):
    """
    ``(bytes, stat)`` of ``name`` in the directory ``dir_fd``, ``(None,
    None)`` when missing. ``uids`` ``None`` accepts any owner (a file in
    root's own directories: protected_hardlinks keeps others' files out of
    them). Raises :class:`UnsafePathError` (naming ``shown``) for a link, a
    non-regular file, a file with other hard links, a wrong owner or a file
    over ``max_bytes``.
    """
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None, None
    if stat.S_ISLNK(before.st_mode):
        refuse_path(shown, "a symbolic link")
    if not stat.S_ISREG(before.st_mode):
        refuse_path(shown, "not a regular file (a FIFO, socket, device or directory)")
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:
            refuse_path(shown, "a symbolic link")
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            refuse_path(shown, "replaced while being opened")
        if uids is not None:
            check_owner(st, uids, shown)
        if st.st_nlink != 1:
            refuse_path(shown, f"has {st.st_nlink} hard links")
        if st.st_size > max_bytes:
            refuse_path(shown, f"{st.st_size} bytes is over the limit of {max_bytes}")
        # Until EOF, not st_size: /proc files say 0. One byte past the limit
        # is the most ever read (a file that grew after fstat).
        chunks = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(65536, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            refuse_path(shown, f"grew over the limit of {max_bytes} bytes")
        return b"".join(chunks), st
    finally:
        os.close(fd)


def read_regular_bytes(path, max_bytes=MAX_BYTES):
    """
    The bytes of the absolute ``path``, read as :func:`read_at` does (no
    link at its last component, no FIFO, one link, at most ``max_bytes``,
    until EOF whatever ``st_size`` says), or ``None`` when it or its
    directory is missing. The directories on the way are trusted as they
    are: use it for paths under root's own directories (the operator policy
    decides which), and ``opsalt_pipconf_fs`` for a user's tree.
    """
    directory, name = os.path.split(os.path.normpath(path))
    try:
        dir_fd = os.open(directory or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        data, _st = read_at(dir_fd, name, None, path, max_bytes)
    finally:
        os.close(dir_fd)
    return data


def read_regular(path, max_bytes=MAX_BYTES):
    """
    The text of the absolute ``path``, read as :func:`read_regular_bytes`
    does, or ``None`` when it or its directory is missing; not UTF-8 text
    is refused.
    """
    data = read_regular_bytes(path, max_bytes)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return refuse_path(path, "not UTF-8 text")


def _resolve_ids(user, group):
    uid = pwd.getpwnam(user).pw_uid if user is not None else -1
    gid = grp.getgrnam(group).gr_gid if group is not None else -1
    return uid, gid


def _read_copy_source(path):
    """
    ``(content, fstat)`` of the regular file ``path``, or ``None`` when it
    does not exist. A FIFO, device or socket is refused from ``fstat`` and
    never waited on (``O_NONBLOCK``). A link is followed: these files sit in
    root's directories under the operator's policy (a user's own files go
    through :mod:`opsalt_pipconf_fs`).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            refuse_path(path, "not a regular file")
        return handle.read(), st


def backup(path, keep=BACKUP_KEEP):
    """
    Copy ``path`` next to itself as ``<path>.<UTC timestamp>.opsalt-bak``
    (owner and mode preserved) and return the backup's path, or ``None`` when
    ``path`` does not exist. Only the newest ``keep`` backups of ``path`` are
    kept (``None`` keeps all).
    """
    found = _read_copy_source(path)
    if found is None:
        return None
    data, st = found
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = f"{path}.{stamp}{BACKUP_SUFFIX}"
    counter = 0
    while os.path.exists(target):
        counter += 1
        target = f"{path}.{stamp}-{counter}{BACKUP_SUFFIX}"
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
    found = _read_copy_source(backup_path)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), backup_path)
    data, st = found
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
