"""
Reading and writing pipconf's files without following anything a local user
planted (issue 12, finding 4).

Root writes ``~/.config/pip/pip.conf`` and ``~/.pypirc`` in trees the user
controls. Every access here starts at a trusted directory (the home from the
passwd database, or a policy root such as ``/etc``) and walks down with
``dir_fd``: each directory is opened with ``O_NOFOLLOW | O_DIRECTORY`` and its
owner checked against the allowed uids (the user and root), files are opened
with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO never blocks), refused unless
``fstat`` shows a regular file with one link and at most :data:`MAX_BYTES`.
Temporary files and backups are created in the same directory with
``O_CREAT | O_EXCL | O_NOFOLLOW``, owned by the file's owner, mode set before
content, then renamed into place relative to the directory descriptor, so a
link swapped in at any moment is never followed.

Plain Python (no Salt dunders) so it is importable both from the installed
package and as a synced ``_utils`` module.
"""

import errno
import os
import secrets
import stat
import time

import opsalt_files

# The generic reader lives in opsalt_files (pgbouncer's auth_file uses it too).
MAX_BYTES = opsalt_files.MAX_BYTES
UnsafePathError = opsalt_files.UnsafePathError
_refuse = opsalt_files.refuse_path
_check_owner = opsalt_files.check_owner
_read_at = opsalt_files.read_at
BACKUP_SUFFIX = ".opsalt-bak"
BACKUP_KEEP = 3

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(name, dir_fd, uids, shown):
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            _refuse(shown, "a symbolic link or not a directory")
        raise
    try:
        _check_owner(os.fstat(fd), uids, shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _walk(root, dirs, uids, create=None):
    """
    A descriptor of ``root/dirs...``, or ``None`` when a directory is
    missing and ``create`` (``(uid, gid)`` for new directories) is not given.
    """
    shown = root
    fd = _open_dir(root, None, uids, shown)
    try:
        for name in dirs:
            shown = os.path.join(shown, name)
            try:
                next_fd = _open_dir(name, fd, uids, shown)
            except FileNotFoundError:
                if create is None:
                    os.close(fd)
                    return None
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                next_fd = _open_dir(name, fd, uids, shown)
                os.fchown(next_fd, *create)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _split(relpath):
    parts = [p for p in relpath.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise UnsafePathError(f"{relpath!r} is not a plain relative path")
    return parts[:-1], parts[-1]


def read(root, relpath, uids, file_uids=()):
    """
    ``(text, (uid, gid, mode))`` of ``root/relpath``, or ``(None, None)``
    when it (or a directory on the way) is missing. Directories must belong
    to one of ``uids``, the file to one of ``file_uids`` (default ``uids``;
    ``None``: any owner). Raises :class:`UnsafePathError` for a link, a
    non-regular file, a file with other hard links, a wrong owner or a huge
    file.
    """
    dirs, name = _split(relpath)
    dir_fd = _walk(root, dirs, set(uids))
    if dir_fd is None:
        return None, None
    try:
        data, st = _read_at(dir_fd, name, _file_uids(uids, file_uids), os.path.join(root, relpath))
    finally:
        os.close(dir_fd)
    if data is None:
        return None, None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _refuse(os.path.join(root, relpath), "not UTF-8 text")
    return text, (st.st_uid, st.st_gid, st.st_mode & 0o7777)


def _file_uids(uids, file_uids):
    if file_uids is None:
        return None
    return set(file_uids or uids)


def _create_at(dir_fd, name, data, mode, uid, gid):
    """Write ``name`` in ``dir_fd`` by temp file + rename; mode before content."""
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise


def _backup_name(dir_fd, name):
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    candidate = f"{name}.{stamp}{BACKUP_SUFFIX}"
    counter = 0
    while True:
        try:
            os.stat(candidate, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return candidate
        counter += 1
        candidate = f"{name}.{stamp}-{counter}{BACKUP_SUFFIX}"


def _prune_backups(dir_fd, name, keep):
    prefix = name + "."
    found = []
    for entry in os.listdir(dir_fd):
        if entry.startswith(prefix) and entry.endswith(BACKUP_SUFFIX):
            st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                found.append((st.st_mtime_ns, entry))
    for _mtime, entry in sorted(found)[: -max(int(keep), 1)]:
        os.unlink(entry, dir_fd=dir_fd)


def write(root, relpath, text, mode, uid, gid, uids, file_uids=(), keep_backups=BACKUP_KEEP):
    """
    Replace ``root/relpath`` with ``text`` (owner ``uid:gid``, ``mode``),
    creating missing directories (mode 0755, owned by ``uid:gid``) and
    keeping a backup of the file it replaces, owned and moded like it.
    Returns the backup's path or ``None``.
    """
    dirs, name = _split(relpath)
    uids = set(uids)
    dir_fd = _walk(root, dirs, uids, create=(uid, gid))
    try:
        old, st = _read_at(dir_fd, name, _file_uids(uids, file_uids), os.path.join(root, relpath))
        backup = None
        if old is not None:
            backup = _backup_name(dir_fd, name)
            _create_at(dir_fd, backup, old, st.st_mode & 0o7777, st.st_uid, st.st_gid)
            _prune_backups(dir_fd, name, keep_backups)
        _create_at(dir_fd, name, text.encode("utf-8"), mode, uid, gid)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return os.path.join(root, os.path.dirname(relpath), backup) if backup else None


def remove(root, relpath, uids, file_uids=()):
    """
    Remove ``root/relpath`` (a regular file, checked as for :func:`read`).
    Returns ``True`` when a file was removed.
    """
    dirs, name = _split(relpath)
    uids = set(uids)
    dir_fd = _walk(root, dirs, uids)
    if dir_fd is None:
        return False
    try:
        old, _st = _read_at(dir_fd, name, _file_uids(uids, file_uids), os.path.join(root, relpath))
        if old is None:
            return False
        os.unlink(name, dir_fd=dir_fd)
        return True
    finally:
        os.close(dir_fd)
