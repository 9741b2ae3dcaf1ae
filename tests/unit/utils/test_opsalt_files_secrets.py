"""
The shared file and redaction helpers.
"""

import os
import stat

import opsalt_files
import opsalt_secrets
import pytest

from tests.support.proc_trees import call_with_timeout


def test_atomic_write_creates_with_mode_and_no_backup(tmp_path):
    path = tmp_path / "f.conf"
    assert opsalt_files.atomic_write(str(path), "a\n", mode=0o600) is None
    assert path.read_text() == "a\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_fifo_is_never_backed_up_or_restored_from(tmp_path):
    # refused from fstat, at once: the old open() waited for a writer for ever
    fifo = tmp_path / "pgbouncer.ini"
    os.mkfifo(fifo)
    with pytest.raises(opsalt_files.UnsafePathError, match=f"refusing {fifo}: not a regular file"):
        call_with_timeout(lambda: opsalt_files.atomic_write(str(fifo), "new\n"))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and opsalt_files.list_backups(str(fifo)) == []
    target = tmp_path / "target.conf"
    target.write_text("keep\n")
    with pytest.raises(opsalt_files.UnsafePathError):
        call_with_timeout(lambda: opsalt_files.restore(str(fifo), str(target)))
    assert target.read_text() == "keep\n"
    with pytest.raises(FileNotFoundError):
        opsalt_files.restore(str(tmp_path / "gone.opsalt-bak"), str(target))


def test_a_link_is_backed_up_as_its_target_and_replaced_by_a_file(tmp_path):
    # files in root's directories, under the operator's policy: an
    # operator's link is followed for the backup and replaced by the write
    real = tmp_path / "real.conf"
    real.write_text("old\n")
    os.chmod(real, 0o640)
    link = tmp_path / "f.conf"
    os.symlink(real, link)
    backup = opsalt_files.atomic_write(str(link), "new\n")
    assert open(backup).read() == "old\n" and stat.S_IMODE(os.stat(backup).st_mode) == 0o640
    assert not os.path.islink(link) and link.read_text() == "new\n" and real.read_text() == "old\n"


def test_atomic_write_backs_up_and_keeps_mode(tmp_path):
    path = tmp_path / "f.conf"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    backup = opsalt_files.atomic_write(str(path), "new\n")
    assert open(backup).read() == "old\n"
    assert backup.endswith(opsalt_files.BACKUP_SUFFIX)
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o640
    second = opsalt_files.atomic_write(str(path), "newer\n")
    assert second != backup and open(second).read() == "new\n"


def test_atomic_write_failure_leaves_file_and_no_temp(tmp_path):
    path = tmp_path / "f.conf"
    path.write_text("keep\n")
    with pytest.raises(KeyError):
        opsalt_files.atomic_write(str(path), "x", user="no-such-user-opsalt")
    assert path.read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.conf"]


def _minion_config(values):
    """``config.get`` of a minion configuration holding ``values`` (full keys)."""
    calls = []

    def config_get(key, default=None, **kwargs):
        calls.append((key, kwargs))
        return values.get(key, default)

    return {"config.get": config_get}, calls


def test_backups_keep_is_read_from_the_minion_config_only(tmp_path):
    salt_funcs, calls = _minion_config({})
    assert opsalt_files.backup_keep(salt_funcs) == opsalt_files.BACKUP_KEEP == 3
    assert calls == [("opsalt:backups:keep", {"omit_pillar": True, "omit_grains": True, "omit_master": True})]
    assert opsalt_files.backup_keep(_minion_config({"opsalt:backups:keep": "5"})[0]) == 5


def test_a_configured_keep_of_one_keeps_one_backup(tmp_path):
    path = str(tmp_path / "pgbouncer.ini")
    keep = opsalt_files.backup_keep(_minion_config({"opsalt:backups:keep": 1})[0])
    for i in range(5):
        opsalt_files.atomic_write(path, f"v{i}\n", keep_backups=keep)
    (backup,) = opsalt_files.list_backups(path)
    assert open(backup, encoding="utf-8").read() == "v3\n"
    opsalt_files.backup(path, keep)
    (newest,) = opsalt_files.list_backups(path)
    assert open(newest, encoding="utf-8").read() == "v4\n"


@pytest.mark.parametrize("value", [0, -1, "0", "three", 2.5, True, [3], "", "\u0663"])
def test_backups_keep_refuses_anything_but_a_whole_number_from_one(value):
    with pytest.raises(ValueError, match="opsalt:backups:keep: .* is not a whole number of at least 1"):
        opsalt_files.backup_keep(_minion_config({"opsalt:backups:keep": value})[0])


def test_read_regular_follows_no_link_and_never_blocks(tmp_path):
    # issue 12: root reads paths pillar chose (pgbouncer's auth_file, pidfile)
    good = tmp_path / "good.txt"
    good.write_text("a = 1\n")
    assert opsalt_files.read_regular(str(good)) == "a = 1\n"
    assert opsalt_files.read_regular(str(tmp_path / "missing")) is None
    assert opsalt_files.read_regular(str(tmp_path / "no-dir" / "missing")) is None
    link = tmp_path / "link.txt"
    link.symlink_to(good)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    hard = tmp_path / "hard.txt"
    os.link(good, hard)
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 11)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    for path, why, limit in (
        (link, "a symbolic link", None),
        (fifo, "not a regular file (a FIFO, socket, device or directory)", None),
        (hard, "has 2 hard links", None),
        (big, "11 bytes is over the limit of 10", 10),
        (binary, "not UTF-8 text", None),
    ):
        args = (str(path),) if limit is None else (str(path), limit)
        with pytest.raises(opsalt_files.UnsafePathError) as err:
            opsalt_files.read_regular(*args)
        assert str(err.value) == f"refusing {path}: {why}; nothing read or written"


def test_read_regular_bytes_reads_to_eof_and_at_most_one_byte_past_the_limit(monkeypatch):
    # /proc files say st_size 0: the limit holds on what is read, not on fstat
    path = "/proc/self/status"
    if not os.path.exists(path):
        pytest.skip("no /proc: not a Linux host")
    data = opsalt_files.read_regular_bytes(path)
    assert data.startswith(b"Name:") and os.stat(path).st_size == 0
    asked = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, size: asked.append(size) or real_read(fd, size))
    with pytest.raises(opsalt_files.UnsafePathError, match="grew over the limit of 10 bytes"):
        opsalt_files.read_regular_bytes(path, 10)
    assert sum(asked) == 11


def test_unified_diff_marks_new_files(tmp_path):
    diff = opsalt_files.unified_diff(None, "a\n", "/x")
    assert diff.startswith("--- /dev/null\n+++ /x\n")
    assert opsalt_files.unified_diff("a\n", "a\n", "/x") == ""


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://u:p@h/x", "https://***@h/x"),
        ("http://u:p@h:8081/x", "http://***@h:8081/x"),
        ("https://h/x", "https://h/x"),
        ("http://tok@[::1]:80/", "http://***@[::1]:80/"),
    ],
)
def test_redact_url(url, expected):
    assert opsalt_secrets.redact_url(url) == expected


def test_redact_text_and_mapping():
    text = "GET http://salt:pw@h/ failed, token abc123"
    assert opsalt_secrets.redact_text(text, ["abc123"]) == "GET http://***@h/ failed, token ***"
    data = {"user": "salt", "password": "pw", "nested": [{"api_token": "t"}], "url": "https://a:b@h/"}
    assert opsalt_secrets.redact_mapping(data) == {
        "user": "salt",
        "password": "***",
        "nested": [{"api_token": "***"}],
        "url": "https://***@h/",
    }


def test_mask_values_keeps_the_shape_and_hides_every_leaf():
    document = {"ops": {"role": "web", "port": 6432, "tls": False, "hosts": ["a", "b"], "none": None}}
    assert opsalt_secrets.mask_values(document) == {
        "ops": {"role": "***", "port": "***", "tls": "***", "hosts": ["***", "***"], "none": None}
    }
    assert "web" not in str(opsalt_secrets.mask_values(document))
