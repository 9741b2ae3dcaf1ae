"""
The v2v execution module through Salt's loaders: every rbd step against a
real one-node Ceph, the Xen side and virt-v2v against the stand-ins.
"""

import hashlib
import os
import subprocess
import uuid

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.loaders import make_loaders
from tests.support.procs import stop_popen, wait_for
from tests.support.v2v_fixtures import ceph, standins
from tests.support.v2v_standins import XEN_HOST, write_pattern

MiB = 1024 * 1024
POOL = "rbd"


@pytest.fixture(scope="module")
def v2v(tmp_path_factory, ceph, standins):
    return make_loaders(
        tmp_path_factory.mktemp("minion"),
        id="v2v-functional",
        v2v={"tools": standins.tool_paths, "ceph": ceph.client_config},
    ).modules.v2v


@pytest.fixture
def standin_world(standins):
    standins.control({})
    return standins


def _file_sha(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _image(ceph, tmp_path, name, size=2 * MiB, seed=1):
    path = str(tmp_path / f"{name}.raw")
    write_pattern(path, size, seed)
    ceph.rbd("import", "--dest-pool", POOL, path, name)
    return _file_sha(path)


def test_tools_and_free_space(v2v, standins, tmp_path):
    found = v2v.tools()
    assert found["virt-v2v"]["found"] and found["virt-v2v"]["version"] == "virt-v2v 2.2.0"
    assert found["rbd"]["found"]
    calls = len(standins.calls())
    quick = v2v.tools(versions=False)
    assert quick["virt-v2v"]["found"] and "version" not in quick["virt-v2v"]
    assert len(standins.calls()) == calls  # nothing was run
    standins.uninstall("virt-v2v-copy-to-local")
    try:
        assert v2v.tools(["virt-v2v-copy-to-local"])["virt-v2v-copy-to-local"]["found"] is False
    finally:
        standins.install("virt-v2v-copy-to-local")
    assert v2v.free_space(str(tmp_path / "not" / "yet")) > 0


def test_instance_images_in_nova_order(v2v, ceph, tmp_path):
    inst = str(uuid.uuid4())
    for suffix in ("disk.eph1", "disk.swap", "disk", "disk.eph0", "disk.local", "disk.config"):
        ceph.rbd("create", "--size", "1", f"{POOL}/{inst}_{suffix}")
    found = v2v.instance_images(POOL, inst)
    assert [d["name"][len(inst) + 1 :] for d in found["disks"]] == [
        "disk",
        "disk.local",
        "disk.eph0",
        "disk.eph1",
    ]
    assert found["disks"][0]["size"] == MiB
    assert sorted(found["other"]) == [f"{inst}_disk.config", f"{inst}_disk.swap"]
    assert v2v.rbd_info(POOL, f"{inst}_nothing") is None


def test_rename_is_idempotent_and_refuses_to_overwrite(v2v, ceph, tmp_path):
    name = f"{uuid.uuid4()}_disk"
    sha = _image(ceph, tmp_path, name)
    assert v2v.rbd_rename(POOL, name, name + ".bak") == {"renamed": True}
    assert v2v.rbd_rename(POOL, name, name + ".bak")["renamed"] is False
    assert v2v.checksum(pool=POOL, image=name + ".bak") == sha
    ceph.rbd("create", "--size", "1", f"{POOL}/{name}")
    with pytest.raises(CommandExecutionError, match="already exists"):
        v2v.rbd_rename(POOL, name + ".bak", name)
    with pytest.raises(CommandExecutionError, match="does not exist"):
        v2v.rbd_rename(POOL, "missing_disk", "missing_disk.bak")
    assert v2v.checksum(pool=POOL, image=name + ".bak") == sha


def test_watched_image_is_neither_renamed_nor_removed(v2v, ceph, tmp_path):
    name = f"{uuid.uuid4()}_disk"
    sha = _image(ceph, tmp_path, name)
    # `rbd watch` keeps a watch on the image open, as a running qemu would
    watcher = subprocess.Popen(
        ["rbd", "-c", ceph.conf, "watch", f"{POOL}/{name}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: v2v.rbd_status(POOL, name), 30, what="a watcher")
        with pytest.raises(CommandExecutionError, match="is open by"):
            v2v.rbd_rename(POOL, name, name + ".bak")
        with pytest.raises(CommandExecutionError, match="is open by"):
            v2v.rbd_remove(POOL, name)
    finally:
        stop_popen(watcher)
    assert v2v.checksum(pool=POOL, image=name) == sha
    assert v2v.rbd_status(POOL, "missing_disk") is None


def test_import_never_overwrites_and_remove_guards_originals(v2v, ceph, tmp_path):
    name = f"{uuid.uuid4()}_disk"
    src = str(tmp_path / "converted.raw")
    write_pattern(src, 3 * MiB, 9)
    result = v2v.rbd_import(src, POOL, name)
    assert result["imported"] is True
    assert v2v.checksum(pool=POOL, image=name) == _file_sha(src) == v2v.checksum(path=src)
    with pytest.raises(CommandExecutionError, match="refusing to overwrite"):
        v2v.rbd_import(src, POOL, name)
    # without the .bak the image may be the original: not removed
    with pytest.raises(CommandExecutionError, match="may be the original"):
        v2v.rbd_remove(POOL, name, keep_if_missing=name + ".bak")
    assert v2v.rbd_info(POOL, name) is not None
    ceph.rbd("create", "--size", "1", f"{POOL}/{name}.bak")
    assert v2v.rbd_remove(POOL, name, keep_if_missing=name + ".bak")["removed"] is True
    assert v2v.rbd_remove(POOL, name)["removed"] is False


def test_interrupted_import_leaves_no_final_image(v2v, ceph, standins, tmp_path):
    name = f"{uuid.uuid4()}_disk"
    src = str(tmp_path / "converted.raw")
    write_pattern(src, 2 * MiB, 3)
    standins.fail("rbd-rename@v2v-importing")
    with pytest.raises(CommandExecutionError, match="rename"):
        v2v.rbd_import(src, POOL, name)
    assert v2v.rbd_info(POOL, name) is None
    assert v2v.rbd_info(POOL, name + ".v2v-importing") is not None
    standins.control({})
    # the retry clears the staging image and imports again
    assert v2v.rbd_import(src, POOL, name)["imported"] is True
    assert v2v.rbd_info(POOL, name + ".v2v-importing") is None
    assert v2v.checksum(pool=POOL, image=name) == _file_sha(src)


def test_copy_convert_from_the_xen_stand_in(v2v, standin_world, tmp_path):
    standins = standin_world
    devices = standins.add_xen_guest("instance-00000042", [3 * MiB, 1 * MiB], state="running")
    assert v2v.ssh_check(XEN_HOST) is True
    assert v2v.source_domain_state(XEN_HOST, "instance-00000042") == "running"
    assert v2v.source_domain_state(XEN_HOST, "instance-missing") is None
    disks = v2v.source_disks(XEN_HOST, "instance-00000042")
    assert [(d["source"], d["size"]) for d in disks] == [(devices[0], 3 * MiB), (devices[1], MiB)]
    assert v2v.source_shutdown(XEN_HOST, "instance-00000042") == {"before": "running", "after": "shut off"}
    assert v2v.source_shutdown(XEN_HOST, "instance-00000042")["before"] == "shut off"

    work = str(tmp_path / "work")
    v2v.prepare_work_dir(work)
    copies = []
    for index, dev in enumerate(devices):
        dest = f"{work}/source/instance-00000042-disk{index}"
        assert v2v.copy_disk(XEN_HOST, dev, dest, work)["copied"] is True
        assert v2v.copy_disk(XEN_HOST, dev, dest, work)["copied"] is False
        assert _file_sha(dest) == _file_sha(standins.xen_device_path(dev))
        copies.append(dest)
    xml = v2v.localize_xml(XEN_HOST, "instance-00000042", work, copies)["xml"]
    with open(xml, encoding="utf-8") as handle:
        text = handle.read()
    assert copies[0] in text and "/dev/vg_xen" not in text
    out = v2v.convert(xml, work, "instance-00000042", expected_disks=2)
    assert out["converted"] is True
    assert [os.path.basename(d["path"]) for d in out["disks"]] == [
        "instance-00000042-sda",
        "instance-00000042-sdb",
    ]
    assert v2v.convert(xml, work, "instance-00000042", expected_disks=2)["converted"] is False
    assert os.path.isdir(f"{work}/tmp")  # VIRT_V2V_TMPDIR
    assert v2v.remove_work_dir(work) == {"removed": True}
    assert not os.path.exists(work)


def test_copy_failure_leaves_no_partial_file(v2v, standin_world, tmp_path):
    standins = standin_world
    devices = standins.add_xen_guest("instance-00000043", [2 * MiB])
    work = str(tmp_path / "work")
    v2v.prepare_work_dir(work)
    dest = f"{work}/source/disk0"
    standins.fail("dd")
    with pytest.raises(CommandExecutionError, match="failed after"):
        v2v.copy_disk(XEN_HOST, devices[0], dest, work)
    assert not os.path.exists(dest) and not os.path.exists(dest + ".part")


def test_copy_stream_paced_like_a_remote_link(v2v, standin_world, tmp_path):
    # the benchmark's remote-Xen scenario relies on the stand-in pacing each dd stream
    standins = standin_world
    devices = standins.add_xen_guest("instance-00000046", [2 * MiB])
    work = str(tmp_path / "work")
    v2v.prepare_work_dir(work)
    standins.control({"rate": {"dd": 4 * MiB}})
    result = v2v.copy_disk(XEN_HOST, devices[0], f"{work}/source/disk0", work)
    assert result["bytes"] == 2 * MiB and result["seconds"] >= 0.5, result
    assert _file_sha(f"{work}/source/disk0") == _file_sha(standins.xen_device_path(devices[0]))


def test_copy_to_local_path(v2v, standin_world, tmp_path):
    standins = standin_world
    standins.add_xen_guest("instance-00000044", [MiB, MiB], state="shut off")
    work = str(tmp_path / "work")
    v2v.prepare_work_dir(work)
    result = v2v.copy_to_local(XEN_HOST, "instance-00000044", work)
    assert result["copied"] is True and len(result["disks"]) == 2
    assert all(p.startswith(f"{work}/source/") for p in result["disks"])
    assert v2v.copy_to_local(XEN_HOST, "instance-00000044", work)["copied"] is False


def test_compute_domain_stop_start(v2v, standin_world):
    standins = standin_world
    standins.add_compute_domain("instance-000007a2", "running")
    assert v2v.domain_stop("instance-000007a2") == {"before": "running", "after": "shut off"}
    assert v2v.domain_stop("instance-000007a2")["before"] == "shut off"
    assert v2v.domain_start("instance-000007a2") == {"before": "shut off", "after": "running"}
    assert v2v.domain_start("instance-000007a2")["before"] == "running"
    assert v2v.domain_state("instance-nope") is None
    with pytest.raises(CommandExecutionError, match="does not exist"):
        v2v.domain_stop("instance-nope")


def test_probe_asks_several_things_at_once(v2v, standin_world, ceph):
    standins = standin_world
    standins.add_xen_guest("instance-00000045", [MiB], state="shut off")
    standins.add_compute_domain("instance-000007a5", "running")
    # each domstate takes 2 s: run one after the other they would start >= 2 s apart
    standins.control({"slow": {"xen-virsh-domstate": 2, "compute-virsh-domstate": 2}})
    before = len(standins.calls())
    answers = v2v.probe(
        [
            {"fun": "source_domain_state", "args": [XEN_HOST, "instance-00000045"]},
            {"fun": "domain_state", "args": ["instance-000007a5"]},
            {"fun": "ssh_check", "args": ["xen-unknown01"]},
            {"fun": "rbd_info", "args": [POOL, f"{uuid.uuid4()}_disk"]},
            {"fun": "tools", "args": [["virsh", "rbd"]]},
        ]
    )
    assert answers[0] == {"ok": True, "value": "shut off"}
    assert answers[1] == {"ok": True, "value": "running"}
    assert answers[2]["ok"] is False and "ssh to root@xen-unknown01 failed" in answers[2]["error"]
    assert answers[3] == {"ok": True, "value": None}
    assert answers[4]["ok"] and answers[4]["value"]["rbd"]["found"] is True  # config.get works in threads
    started = sorted(
        c["t"] for c in standins.calls()[before:] if c["tool"] == "virsh" and "domstate" in c["argv"]
    )
    assert len(started) == 2 and started[1] - started[0] < 1.8, started


@pytest.mark.parametrize(
    "calls",
    [
        [{"fun": "rbd_remove", "args": ["rbd", "x"]}],
        [{"fun": "copy_disk", "args": []}],
        "ssh_check",
        [{"fun": "ssh_check", "args": "xen01"}],
    ],
)
def test_probe_runs_only_read_only_functions(v2v, standin_world, calls):
    before = len(standin_world.calls())
    with pytest.raises(SaltInvocationError):
        v2v.probe(calls)
    assert standin_world.calls()[before:] == []


@pytest.mark.parametrize(
    "call",
    [
        lambda v: v.rbd_rename("rbd", "a; rm -rf /", "b"),
        lambda v: v.rbd_rename("-p", "a", "b"),
        lambda v: v.instance_images("rbd", "../etc/passwd"),
        lambda v: v.copy_disk(XEN_HOST, "/etc/shadow", "/tmp/x/y", "/tmp/x"),
        lambda v: v.copy_disk("-oProxyCommand=sh", "/dev/vg/lv", "/tmp/x/y", "/tmp/x"),
        lambda v: v.source_domain_state(XEN_HOST, "dom`id`"),
        lambda v: v.prepare_work_dir("relative/path"),
        lambda v: v.remove_work_dir("/tmp/../etc"),
    ],
)
def test_bad_input_is_refused_before_running_anything(v2v, standin_world, call):
    before = len(standin_world.calls())
    with pytest.raises(SaltInvocationError):
        call(v2v)
    assert standin_world.calls()[before:] == []


def test_remove_work_dir_refuses_unmarked_dirs(v2v, tmp_path):
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "data").write_text("x")
    with pytest.raises(CommandExecutionError, match="marker"):
        v2v.remove_work_dir(str(keep))
    assert v2v.work_dir_state(str(keep)) == "foreign"
    with pytest.raises(CommandExecutionError, match="did not create"):
        v2v.prepare_work_dir(str(keep))
    assert not (keep / ".opsalt-v2v").exists()
    assert (keep / "data").exists()
    assert v2v.work_dir_state(str(tmp_path / "new")) == "missing"
    assert v2v.prepare_work_dir(str(tmp_path / "new")) == str(tmp_path / "new")
    assert v2v.work_dir_state(str(tmp_path / "new")) == "ours"


def test_commands_show_exact_lines(v2v, ceph):
    lines = v2v.commands(
        [
            {"op": "rbd_import", "pool": "rbd", "path": "/w/converted/vm-sda", "image": "u_disk"},
            {"op": "copy_disk", "host": XEN_HOST, "device": "/dev/vg/lv", "dest": "/w/source/d0"},
        ]
    )
    assert lines[0].endswith("import --image-format 2 --dest-pool rbd /w/converted/vm-sda u_disk")
    assert f"--conf {ceph.conf}" in lines[0]
    assert "'dd if=/dev/vg/lv bs=4M' > /w/source/d0" in lines[1]
