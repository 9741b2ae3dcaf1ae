"""
The v2v runner end to end on a real salt-master and salt-minion, real Ceph
RBD (one mon, one bluestore OSD) and stand-ins for the Xen host, virsh and
virt-v2v. The shared minion plays both the conversion host and the compute
node; its pillar (from the demo asset API) points the v2v module at the
stand-ins and the test cluster.
"""

import hashlib
import json
import os
import subprocess
import time
import uuid

import pytest

from tests.support.loaders import make_loaders
from tests.support.procs import stop_popen, wait_for
from tests.support.prometheus import Prometheus, node_exporter
from tests.support.v2v_fixtures import ceph, standins
from tests.support.v2v_standins import XEN_HOST, write_pattern

MiB = 1024 * 1024
POOL = "rbd"


@pytest.fixture(scope="module")
def v2v_pillar(ceph, standins, asset_api, salt_minion, salt_call_cli):
    """
    The minion's ``v2v`` pillar: tool paths and the Ceph client settings.
    """
    pillar = {"tools": standins.tool_paths, "ceph": ceph.client_config, "migrations": {}}

    def apply(migrations=None, waves=None):
        if migrations is not None:
            pillar["migrations"] = migrations
        if waves is not None:
            pillar["waves"] = waves
        asset_api.set_section(salt_minion.id, "v2v", pillar)
        ret = salt_call_cli.run("saltutil.refresh_pillar", wait=True)
        assert ret.returncode == 0, ret

    apply()
    return apply


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def rbd_sha(ceph, image):
    proc = ceph.rbd("export", "--no-progress", f"{POOL}/{image}", "-", timeout=60)
    return _sha(proc.stdout)


def rbd_names(ceph, prefix):
    return sorted(n for n in ceph.rbd("ls", "-p", POOL).stdout.decode().split() if n.startswith(prefix))


class World:
    """
    One migration's worth of things: a Xen guest with two LVM disks, a
    pre-created target instance (domain + two RBD images) and the definition.
    """

    def __init__(self, ceph, standins, work_root, salt_minion, name, target_state="running"):
        self.ceph, self.standins = ceph, standins
        self.uuid = str(uuid.uuid4())
        self.source = f"instance-{name}"
        self.target = f"instance-t{name}"
        self.devices = standins.add_xen_guest(
            self.source, [3 * MiB, 2 * MiB], state="shut off", seed=hash(name) % 10000
        )
        standins.add_compute_domain(self.target, state=target_state)
        self.images = [f"{self.uuid}_disk", f"{self.uuid}_disk.local"]
        self.originals = {}
        for index, (image, size) in enumerate(zip(self.images, (4 * MiB, 4 * MiB))):
            path = os.path.join(work_root, f"{image}.orig")
            write_pattern(path, size, 777 + index)
            ceph.rbd("import", "--dest-pool", POOL, path, image, timeout=60)
            with open(path, "rb") as handle:
                self.originals[image] = _sha(handle.read())
        self.work_dir = os.path.join(work_root, f"work-{name}")
        self.definition = {
            "source_host": XEN_HOST,
            "source_domain": self.source,
            "conversion_minion": salt_minion.id,
            "compute_minion": salt_minion.id,
            "instance_uuid": self.uuid,
            "target_domain": self.target,
            "pool": POOL,
            "work_dir": self.work_dir,
            "copy_method": "dd",
        }

    def kwargs(self, **extra):
        return [f"{k}={v}" for k, v in {**self.definition, **extra}.items()]

    def expected_converted(self, index):
        with open(self.standins.xen_device_path(self.devices[index]), "rb") as handle:
            data = bytearray(handle.read())
        marker = b"V2V-CONVERTED\0"
        data[: len(marker)] = marker
        return _sha(bytes(data))

    def assert_original(self, target_state="running"):
        """
        The target is exactly as before: same images, byte-identical, no
        leftovers, domain in its original state, no local copies.
        """
        assert rbd_names(self.ceph, self.uuid) == sorted(self.images)
        for image in self.images:
            assert rbd_sha(self.ceph, image) == self.originals[image], image
        assert self.standins.state("compute", self.target) == target_state
        assert not os.path.exists(self.work_dir)


@pytest.fixture
def world(ceph, standins, tmp_path, salt_minion, v2v_pillar):
    standins.control({})
    return lambda name, **kw: World(ceph, standins, str(tmp_path), salt_minion, name, **kw)


def _journal(salt_master, mig_id):
    path = os.path.join(salt_master.config["cachedir"], "opsalt", "v2v", f"{mig_id}.json")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_migrate_from_asset_api_pillar(
    salt_master, salt_minion, salt_run_cli, world, v2v_pillar, ceph, standins, event_listener
):
    w = world("00000017")
    v2v_pillar({"mig17": w.definition})
    started = time.time()
    ret = salt_run_cli.run("v2v.migrate", "mig17", f"pillar_minion={salt_minion.id}")
    assert ret.returncode == 0, ret
    assert ret.data["state"] == "success", json.dumps(ret.data)
    assert set(ret.data["steps"].values()) == {"done"}
    # the converted disks under the original names, the originals kept as .bak
    assert rbd_names(ceph, w.uuid) == sorted(w.images + [i + ".bak" for i in w.images])
    for index, image in enumerate(w.images):
        assert rbd_sha(ceph, image) == w.expected_converted(index)
        assert rbd_sha(ceph, image + ".bak") == w.originals[image]
    assert standins.state("compute", w.target) == "running"
    journal = _journal(salt_master, "mig17")
    assert journal["flow"]["state"] == "success"
    assert journal["facts"]["target_images"] == w.images
    # copies ran in parallel: both started before either ended
    tasks = journal["flow"]["tasks"]
    assert tasks["copy-disk-0"]["started"] < tasks["copy-disk-1"]["ended"]
    assert tasks["copy-disk-1"]["started"] < tasks["copy-disk-0"]["ended"]

    def flow_events():
        found = event_listener.get_events([(salt_master.id, "opsalt/v2v/mig17/*")], after_time=started)
        states = {(e.tag, e.data.get("state")) for e in found}
        return states if ("opsalt/v2v/mig17/flow", "success") in states else None

    states = wait_for(flow_events, 15, interval=0.2, what="the flow's success event")
    assert ("opsalt/v2v/mig17/convert", "done") in states
    assert ("opsalt/v2v/mig17/copy-disk-1", "running") in states
    # copy progress comes from the conversion minion through the master's bus
    progress = event_listener.get_events(
        [(salt_master.id, "opsalt/v2v/mig17/progress/disk0")], after_time=started
    )
    # (the master wraps a minion's event: its payload is under "data")
    assert any(
        e.data["data"].get("percent") == 100.0 and e.data["data"].get("total") == 3 * MiB for e in progress
    ), [e.data for e in progress]
    # and salt-run printed the steps as they went
    assert "mig17: convert done" in ret.stdout

    # status, then a second migrate is refused, then cleanup removes the .bak only when asked
    ret = salt_run_cli.run("v2v.status", "mig17")
    assert ret.data["state"] == "success"
    assert set(ret.data["step_seconds"]) == set(ret.data["steps"])
    assert set(ret.data["copy_mib_per_s"]) == {"copy-disk-0", "copy-disk-1"}
    assert all(rate > 0 for rate in ret.data["copy_mib_per_s"].values())
    ret = salt_run_cli.run("v2v.migrate", "mig17", f"pillar_minion={salt_minion.id}")
    assert ret.returncode != 0 or ret.data.get("state") != "success"
    ret = salt_run_cli.run("v2v.cleanup", "mig17")
    assert ret.returncode == 0, ret
    assert "would_remove" in ret.data
    assert len(rbd_names(ceph, w.uuid)) == 4
    ret = salt_run_cli.run("v2v.cleanup", "mig17", "remove_backups=True", "remove_local=True")
    assert ret.returncode == 0, ret
    assert rbd_names(ceph, w.uuid) == sorted(w.images)
    assert not os.path.exists(w.work_dir)
    ret = salt_run_cli.run("v2v.rollback", "mig17")
    assert ret.returncode != 0
    assert rbd_names(ceph, w.uuid) == sorted(w.images)


def test_plan_and_test_mode_change_nothing(salt_run_cli, world, ceph, standins):
    w = world("00000020")
    before_calls = len(standins.calls())
    for extra in ([], ["test=True"]):
        fun = "v2v.plan" if not extra else "v2v.migrate"
        ret = salt_run_cli.run(fun, "plan20", *w.kwargs(), *extra)
        assert ret.returncode == 0, ret
        assert ret.data["preflight"]["ok"] is True, ret.data
        steps = {s["step"]: s for s in ret.data["steps"]}
        assert f"rename-{w.uuid}_disk" in steps
        command = steps[f"import-{w.uuid}_disk.local"]["command"]
        assert "--dest-pool rbd" in command and command.endswith(f"{w.uuid}_disk.local")
        assert "dd if=/dev/vg_xen/" in steps["copy-disk-0"]["command"]
    mutating = [
        c
        for c in standins.calls()[before_calls:]
        if (c["tool"] == "virt-v2v" and c["argv"] != ["--version"])
        or (c["tool"] == "ssh" and "dd" in " ".join(c["argv"]))
        or (c["tool"] == "virsh" and set(c["argv"]) & {"shutdown", "start", "destroy"})
    ]
    assert mutating == []
    w.assert_original()


@pytest.mark.parametrize(
    "definition, message",
    [
        ({"source_domain": "x"}, "source_host is required"),
        ({"instance_uuid": "not-a-uuid"}, "instance_uuid"),
        ({"work_dir": "relative/dir"}, "work_dir"),
        ({"pool": "rbd;rm -rf /"}, "pool"),
        ({"copy_method": "scp"}, "copy_method"),
    ],
)
def test_bad_definitions_are_refused(salt_run_cli, world, standins, definition, message):
    w = world("bad" + str(abs(hash(message)) % 1000))
    spec = dict(w.definition)
    spec.update(definition)
    if "source_host" not in definition and message == "source_host is required":
        spec.pop("source_host")
    before = len(standins.calls())
    ret = salt_run_cli.run("v2v.migrate", "bad", *[f"{k}={v}" for k, v in spec.items()])
    assert ret.returncode != 0
    assert message in str(ret.stdout) + str(ret.stderr)
    assert standins.calls()[before:] == []
    w.assert_original()


def test_preflight_refuses_running_source_and_leftover_bak(salt_run_cli, world, ceph, standins):
    w = world("00000021")
    standins.set_state("xen", w.source, "running")
    ret = salt_run_cli.run("v2v.migrate", "pre21", *w.kwargs())
    assert ret.returncode != 0
    assert ret.data["state"] == "refused"
    assert "shutdown_source" in ret.data["comment"]
    standins.set_state("xen", w.source, "shut off")
    ceph.rbd("create", "--size", "1", f"{POOL}/{w.uuid}_disk.bak")
    ret = salt_run_cli.run("v2v.migrate", "pre21", *w.kwargs())
    assert ret.returncode != 0
    assert "left over" in ret.data["comment"]
    ceph.rbd("rm", f"{POOL}/{w.uuid}_disk.bak")
    w.assert_original()


# (fail point, skip matching calls, step that fails); each migration must revert completely.
FAULTS = [
    ("xen-virsh-shutdown", 0, "shutdown-source"),
    ("dd@disk0", 0, "copy-disk-0"),
    ("dd@disk1", 0, "copy-disk-1"),
    ("xen-virsh-dumpxml", 1, "localize-xml"),
    ("virt-v2v", 0, "convert"),
    ("compute-virsh-shutdown", 0, "stop-target"),
    ("rbd-rename@_disk.bak", 0, "rename-{uuid}_disk"),
    ("rbd-rename@_disk.local.bak", 0, "rename-{uuid}_disk.local"),
    ("rbd-import@_disk.local.v2v", 0, "import-{uuid}_disk.local"),
    ("rbd-import@_disk.v2v", 0, "import-{uuid}_disk"),
    ("compute-virsh-start", 0, "start-target"),
    ("compute-crash-after-start", 0, "start-target"),
]
FAULT_IDS = [
    "shutdown-source",
    "copy-disk-0",
    "copy-disk-1",
    "localize-xml",
    "convert",
    "stop-target",
    "rename-disk",
    "rename-disk.local",
    "import-disk.local",
    "import-disk",
    "start-target",
    "start-target-guest-dies",
]


@pytest.mark.parametrize("point, skip, step", FAULTS, ids=FAULT_IDS)
def test_fault_at_every_step_reverts_completely(
    salt_master, salt_run_cli, world, standins, point, skip, step
):
    w = world(f"f{FAULTS.index((point, skip, step)):02d}")
    standins.set_state("xen", w.source, "running")
    standins.fail(point, skip=skip)
    mig_id = f"fault-{w.uuid[:8]}"
    ret = salt_run_cli.run("v2v.migrate", mig_id, *w.kwargs(shutdown_source=True))
    assert ret.returncode != 0, ret
    assert ret.data["state"] == "reverted", ret.data
    step = step.format(uuid=w.uuid)
    assert step in ret.data["errors"], ret.data
    journal = _journal(salt_master, mig_id)
    assert journal["flow"]["tasks"][step]["state"] == "reverted"
    w.assert_original(target_state="running")
    # the source is back as it was, too
    assert standins.state("xen", w.source) == "running"


def test_fault_at_prepare_work_dir_reverts(salt_run_cli, world, standins, tmp_path):
    w = world("00000019")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the work dir's parent should be")
    w.work_dir = str(blocker / "work")
    ret = salt_run_cli.run("v2v.migrate", "fault-prepare", *w.kwargs(work_dir=w.work_dir))
    assert ret.returncode != 0, ret
    assert ret.data["state"] == "reverted", ret.data
    assert "prepare-work-dir" in ret.data["errors"]
    w.assert_original(target_state="running")
    assert blocker.read_text().startswith("a file")


def _runner_cmdline(salt_run_cli, *args):
    return salt_run_cli.cmdline(*args)


def _kill_when(salt_master, salt_run_cli, mig_id, args, step):
    proc = subprocess.Popen(
        _runner_cmdline(salt_run_cli, *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def running():
            try:
                return _journal(salt_master, mig_id)["flow"]["tasks"][step]["state"] == "running"
            except (OSError, ValueError, KeyError):
                return False

        wait_for(running, 120, interval=0.1, what=f"{step} running")
        proc.kill()
        proc.wait(10)
    finally:
        stop_popen(proc)
    return _journal(salt_master, mig_id)


def test_runner_killed_mid_flight_then_resume(salt_master, salt_run_cli, world, ceph, standins):
    w = world("00000031")
    standins.control({"slow": {"virt-v2v": 4}})
    journal = _kill_when(
        salt_master, salt_run_cli, "kill31", ["v2v.migrate", "kill31", *w.kwargs()], "convert"
    )
    assert journal["flow"]["state"] == "running"
    ret = salt_run_cli.run("v2v.status", "kill31")
    assert ret.data["steps"]["convert"] == "running"
    standins.control({})
    ret = salt_run_cli.run("v2v.resume", "kill31")
    assert ret.returncode == 0, ret
    assert ret.data["state"] == "success", json.dumps(ret.data)
    for index, image in enumerate(w.images):
        assert rbd_sha(ceph, image) == w.expected_converted(index)
        assert rbd_sha(ceph, image + ".bak") == w.originals[image]
    assert standins.state("compute", w.target) == "running"
    assert len(_journal(salt_master, "kill31")["runs"]) == 2


def test_runner_killed_during_import_then_rollback(salt_master, salt_run_cli, world, ceph, standins):
    w = world("00000032")
    standins.control({"slow": {"rbd-import": 3}})
    step = f"import-{w.uuid}_disk"
    journal = _kill_when(salt_master, salt_run_cli, "kill32", ["v2v.migrate", "kill32", *w.kwargs()], step)
    assert journal["flow"]["tasks"][f"rename-{w.uuid}_disk"]["state"] == "done"
    standins.control({})
    ret = salt_run_cli.run("v2v.rollback", "kill32")
    assert ret.returncode == 0, ret
    assert ret.data["state"] == "reverted", ret.data
    w.assert_original(target_state="running")


def test_orchestrate_sls_runs_a_migration_from_pillar(
    salt_minion, salt_run_cli, world, v2v_pillar, ceph, standins
):
    w = world("00000041")
    v2v_pillar({"mig41": w.definition})
    pillar = json.dumps({"v2v_run": {"id": "mig41", "pillar_minion": salt_minion.id}})
    ret = salt_run_cli.run("state.orchestrate", "v2v.orchestrate", f"pillar={pillar}")
    assert ret.returncode == 0, ret
    for index, image in enumerate(w.images):
        assert rbd_sha(ceph, image) == w.expected_converted(index)
    assert standins.state("compute", w.target) == "running"


@pytest.fixture
def v2v_policy(salt_minion):
    """
    ``allow(*paths)``: the operator's policy ``opsalt:policy:v2v:allowed_paths``
    in a ``minion.d`` file of the minion's config dir, where ``salt-call``
    reads it (the asset API cannot write there). Removed afterwards.
    """
    path = os.path.join(salt_minion.config_dir, "minion.d", "zz-opsalt-v2v-policy.conf")
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def allow(*paths):
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"opsalt": {"policy": {"v2v": {"allowed_paths": [str(p) for p in paths]}}}}, handle)

    try:
        yield allow
    finally:
        if os.path.exists(path):
            os.unlink(path)


def _apply(salt_call_cli, sls, pillar=None, *extra):
    args = ["state.apply", sls, *extra]
    if pillar is not None:
        args.append(f"pillar={json.dumps(pillar)}")
    return salt_call_cli.run(*args)


def test_v2v_sls_prepares_the_work_root(salt_call_cli, standins, tmp_path, v2v_pillar, v2v_policy):
    work_root = tmp_path / "v2v-root"
    v2v_policy(tmp_path)
    pillar = {"v2v": {"work_root": str(work_root), "tools": standins.tool_paths}}
    ret = _apply(salt_call_cli, "v2v", pillar)
    assert ret.returncode == 0, ret
    assert work_root.is_dir() and (work_root.stat().st_mode & 0o777) == 0o700
    ret = _apply(salt_call_cli, "v2v", pillar)
    assert ret.returncode == 0, ret
    assert not any(state["changes"] for state in ret.data.values())
    # a conversion host without nbdkit fails the tool check and says what to do
    standins.uninstall("nbdkit")
    try:
        ret = _apply(salt_call_cli, "v2v", pillar)
    finally:
        standins.install("nbdkit")
    assert ret.returncode != 0
    failed = [s for s in ret.data.values() if s["result"] is False]
    assert len(failed) == 1 and "missing: nbdkit" in failed[0]["comment"]
    ret = _apply(salt_call_cli, "v2v.clean", pillar)
    assert ret.returncode == 0, ret
    assert not work_root.exists()


def test_v2v_sls_not_a_conversion_host_reports_and_passes(salt_call_cli, standins, tmp_path, v2v_pillar):
    # what `make demo` passes on a host without the tools: nothing managed, no failure
    work_root = tmp_path / "v2v-root"
    pillar = {"v2v": {"work_root": str(work_root), "tools": standins.tool_paths, "conversion_host": False}}
    standins.uninstall("nbdkit")
    try:
        ret = _apply(salt_call_cli, "v2v", pillar)
        assert ret.returncode == 0, ret
        (state,) = ret.data.values()
        assert state["comment"] == "skipped: not a conversion host (missing nbdkit)"
        assert state["result"] is True and not state["changes"]
        # the same host as a conversion host (the default) still fails
        pillar["v2v"]["conversion_host"] = True
        ret = _apply(salt_call_cli, "v2v", pillar)
        assert ret.returncode != 0
    finally:
        standins.install("nbdkit")
    assert not work_root.exists()


@pytest.mark.parametrize("test_mode", [False, True])
def test_v2v_sls_refuses_a_work_root_outside_policy(salt_call_cli, standins, tmp_path, v2v_pillar, test_mode):
    # issue 12: the pillar decides where root creates (and clean removes) a
    # directory, so the operator's policy bounds it; default /var/lib/opsalt-v2v
    work_root = tmp_path / "elsewhere"
    pillar = {"v2v": {"work_root": str(work_root), "tools": standins.tool_paths}}
    extra = ["test=True"] if test_mode else []
    for sls in ("v2v", "v2v.clean"):
        ret = _apply(salt_call_cli, sls, pillar, *extra)
        assert ret.returncode != 0, ret
        states = {s["__id__"]: s for s in ret.data.values()}
        verdict = states["v2v-work-root-allowed"]
        assert verdict["result"] is False and not verdict["changes"]
        assert "v2v:work_root" in verdict["comment"]
        assert "opsalt:policy:v2v:allowed_paths" in verdict["comment"]
        touched = "v2v-work-root-directory-managed" if sls == "v2v" else "v2v-work-root-directory-absent"
        assert states[touched]["result"] is False and not states[touched]["changes"]
    assert not work_root.exists()


def test_v2v_sls_accepts_a_work_root_the_operator_allows(
    salt_call_cli, standins, tmp_path, v2v_pillar, v2v_policy
):
    work_root = tmp_path / "elsewhere" / "v2v"
    v2v_policy(tmp_path / "elsewhere")
    pillar = {"v2v": {"work_root": str(work_root), "tools": standins.tool_paths}}
    ret = _apply(salt_call_cli, "v2v", pillar)
    assert ret.returncode == 0, ret
    assert work_root.is_dir()
    # the asset system cannot widen the policy: opsalt:policy in the pillar is ignored
    other = tmp_path / "other"
    ret = _apply(
        salt_call_cli,
        "v2v",
        {"v2v": pillar["v2v"] | {"work_root": str(other)}, "opsalt": {"policy": {"allowed_paths": ["/"]}}},
    )
    assert ret.returncode != 0 and not other.exists()


def _low(salt_call_cli, work_root, standins):
    pillar = {"v2v": {"work_root": work_root, "tools": standins.tool_paths}}
    ret = salt_call_cli.run("state.show_low_sls", "v2v", f"pillar={json.dumps(pillar)}")
    assert ret.returncode == 0, ret
    return ret.data


@pytest.mark.parametrize(
    "poison",
    [
        "x\n  cmd.run:\n    - name: touch /tmp/PWNED\n\ny",
        "/var/lib/opsalt-v2v\nv2v-extra:\n  cmd.run:\n    - name: touch /tmp/PWNED",
        "/var/lib/opsalt-v2v\r\n{{ salt['cmd.run']('touch /tmp/PWNED') }}",
        "/var/lib/opsalt-v2v\u2028{% raw %}x{% endraw %}",
        "/var/lib/opsalt-v2v'\"[x]",
    ],
)
def test_v2v_sls_poisoned_work_root_adds_no_state(salt_call_cli, standins, v2v_pillar, poison):
    # issue 12 finding 1: a work_root value must not become a state of its own
    benign = _low(salt_call_cli, "/var/lib/opsalt-v2v/benign", standins)
    poisoned = _low(salt_call_cli, poison, standins)
    if "\u2028" in poison:
        # Salt's `| json` would pass it raw and YAML fold it: the component is refused, the field named
        ((refusal),) = poisoned
        assert (refusal["__id__"], refusal["result"]) == ("v2v-pillar-refused", False), refusal
        assert refusal["comment"].startswith("v2v:work_root: holds U+2028"), refusal
        return

    def shape(low):
        return [(s["__id__"], s["state"], s["fun"], sorted(s)) for s in low]

    assert shape(poisoned) == shape(benign)
    for good, bad in zip(benign, poisoned):
        if good["__id__"] == "v2v-work-root-directory-managed":
            assert good["name"] == "/var/lib/opsalt-v2v/benign" and bad["name"] == poison
        elif good["__id__"] == "v2v-work-root-allowed":
            # the verdict: allowed vs refused, naming the key
            assert good["result"] is True and bad["result"] is False
            assert "v2v:work_root" in bad["comment"]
        else:
            assert good == bad
    assert not os.path.exists("/tmp/PWNED")


def test_v2v_sls_without_v2v_pillar_manages_nothing(salt_call_cli, asset_api, salt_minion, v2v_pillar):
    # issue 12 finding 6: a host whose asset record lacks the key gets nothing
    document = asset_api.get_document(salt_minion.id)
    asset_api.set_document(salt_minion.id, {k: v for k, v in document.items() if k != "v2v"})
    try:
        assert salt_call_cli.run("saltutil.refresh_pillar", wait=True).returncode == 0
        for sls in ("v2v", "v2v.clean"):
            ret = salt_call_cli.run("state.apply", sls)
            assert ret.returncode == 0, ret
            (state,) = ret.data.values()
            assert state["__id__"] == "v2v-pillar-absent-nothing-managed"
            assert state["result"] is True and not state["changes"]
            assert "nothing managed" in state["comment"]
    finally:
        asset_api.set_document(salt_minion.id, document)
        salt_call_cli.run("saltutil.refresh_pillar", wait=True)


def test_copy_to_local_path_when_the_host_has_it(salt_master, salt_run_cli, world, ceph, standins):
    # virt-v2v 1.x conversion hosts: copy_method auto picks virt-v2v-copy-to-local
    w = world("00000051")
    ret = salt_run_cli.run("v2v.migrate", "ctl51", *w.kwargs(copy_method="auto"))
    assert ret.returncode == 0, ret
    assert ret.data["state"] == "success", ret.data
    assert "copy-to-local" in ret.data["steps"] and "copy-disk-0" not in ret.data["steps"]
    assert _journal(salt_master, "ctl51")["facts"]["copy_method"] == "copy-to-local"
    for index, image in enumerate(w.images):
        assert rbd_sha(ceph, image) == w.expected_converted(index)
        assert rbd_sha(ceph, image + ".bak") == w.originals[image]
    assert standins.calls("virt-v2v-copy-to-local")


def test_rollback_after_success_restores_the_original(salt_run_cli, world, ceph, standins):
    w = world("00000052")
    standins.set_state("xen", w.source, "running")
    ret = salt_run_cli.run("v2v.migrate", "rb52", *w.kwargs(shutdown_source=True))
    assert ret.data["state"] == "success", ret.data
    # cleanup needs the new instance running
    standins.set_state("compute", w.target, "shut off")
    ret = salt_run_cli.run("v2v.cleanup", "rb52", "remove_backups=True")
    assert ret.returncode != 0
    assert "verified running" in ret.data["comment"]
    assert len(rbd_names(ceph, w.uuid)) == 4
    standins.set_state("compute", w.target, "running")
    ret = salt_run_cli.run("v2v.rollback", "rb52")
    assert ret.returncode == 0, ret
    assert ret.data["state"] == "reverted", ret.data
    w.assert_original(target_state="running")
    assert standins.state("xen", w.source) == "running"
    # a new attempt after the rollback is allowed; the old journal is kept
    ret = salt_run_cli.run("v2v.migrate", "rb52", *w.kwargs(shutdown_source=True))
    assert ret.data["state"] == "success", ret.data
    journal_dir = os.path.dirname(ret.data["journal"])
    assert [n for n in os.listdir(journal_dir) if n.startswith("rb52.json.") and n.endswith(".opsalt-bak")]


def test_revert_leaves_a_target_that_was_off_switched_off(salt_run_cli, world, standins):
    w = world("00000053", target_state="shut off")
    standins.fail("rbd-import@_disk.local.v2v")
    ret = salt_run_cli.run("v2v.migrate", "off53", *w.kwargs())
    assert ret.data["state"] == "reverted", ret.data
    w.assert_original(target_state="shut off")
    starts = [c for c in standins.calls("virsh") if "start" in c["argv"] and w.target in c["argv"]]
    assert starts == []


def _assert_in_prometheus(salt_master, tmp_path, journals, states):
    """
    The migrations' journals on the master, through opsalt's textfile
    metrics (the ``master`` collector), a real node_exporter and a real
    Prometheus (issue 15): each migration's state and each copy's MiB/s.
    """
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    monitoring = {"textfile": {"directory": str(textfile), "master_cachedir": salt_master.config["cachedir"]}}
    loaders = make_loaders(
        tmp_path / "metrics-minion",
        monitoring=monitoring,
        opsalt={"policy": {"allowed_paths": [str(tmp_path)]}},
    )
    loaders.modules.monitoring.write_textfile(collectors=["master"])
    exporter = node_exporter(["--collector.textfile"], str(textfile))
    prometheus = Prometheus()

    def value(expr):
        result = prometheus.query(expr)
        return float(result[0]["value"][1]) if result else None

    try:
        exporter.start()
        prometheus.targets = {"node": [exporter.address]}
        prometheus.start()
        wait_for(lambda: value("count(opsalt_v2v_migration_state)") is not None, timeout=30)
        for key, state in states.items():
            assert value(f'opsalt_v2v_migration_state{{migration="{key}",state="{state}"}}') == 1, key
            assert value(f'sum(opsalt_v2v_migration_state{{migration="{key}"}})') == 1, key
            copies = {
                step: task["result"]
                for step, task in journals[key]["flow"]["tasks"].items()
                if isinstance(task.get("result"), dict)
                and task["result"].get("bytes")
                and task["result"].get("seconds")
            }
            if state == "success":
                assert copies, f"{key}: no copy step recorded its bytes"
            for step, copied in copies.items():
                rate = value(f'opsalt_v2v_copy_mib_per_second{{migration="{key}",disk="{step}"}}')
                assert rate == pytest.approx(copied["bytes"] / copied["seconds"] / MiB, abs=0.001), (
                    key,
                    step,
                )
    finally:
        prometheus.cleanup()
        exporter.stop()


def test_wave_of_three_with_a_fault_in_the_second(
    salt_master, salt_minion, salt_run_cli, world, v2v_pillar, ceph, standins, tmp_path
):
    # issue 16: each VM keeps its own flow, journal and revert; a failure
    # reverts only that VM and the others complete
    worlds = {f"wave-vm{n}": world(f"w0000{n}") for n in (1, 2, 3)}
    v2v_pillar({k: w.definition for k, w in worlds.items()}, waves={"wave3": list(worlds)})
    second = worlds["wave-vm2"]
    standins.fail(f"rbd-import@{second.uuid}_disk.local.v2v")
    ret = salt_run_cli.run("v2v.migrate_wave", "wave3", f"pillar_minion={salt_minion.id}")
    assert ret.returncode != 0, ret
    data = ret.data
    assert data["state"] == "failed" and data["concurrency"] == 2, json.dumps(data)
    states = {k: v["state"] for k, v in data["migrations"].items()}
    assert states == {"wave-vm1": "success", "wave-vm2": "reverted", "wave-vm3": "success"}
    assert f"import-{second.uuid}_disk.local" in data["migrations"]["wave-vm2"]["errors"]
    second.assert_original(target_state="running")
    for key in ("wave-vm1", "wave-vm3"):
        w = worlds[key]
        for index, image in enumerate(w.images):
            assert rbd_sha(ceph, image) == w.expected_converted(index)
            assert rbd_sha(ceph, image + ".bak") == w.originals[image]
        assert data["migrations"][key]["mib_per_s"] > 0
        assert _journal(salt_master, key)["flow"]["state"] == "success"
    # never more than two at once: the third started after one of the first two ended
    journals = {k: _journal(salt_master, k) for k in worlds}
    first_end = min(journals[k]["runs"][0]["ended"] for k in ("wave-vm1", "wave-vm2"))
    assert journals["wave-vm3"]["runs"][0]["started"] >= first_end
    assert len(data["table"]) == 4 and data["table"][2].split()[:2] == ["wave-vm2", "reverted"]
    ret = salt_run_cli.run("v2v.status", "wave=wave3")
    assert ret.data["migrations"] == data["migrations"] and ret.data["state"] == "failed"
    # the wave's outcome reaches Prometheus through opsalt's textfile metrics
    _assert_in_prometheus(salt_master, tmp_path, journals, states)


def test_wave_stop_on_failure_starts_nothing_after_a_failure(
    salt_minion, salt_run_cli, world, v2v_pillar, ceph, standins
):
    worlds = {f"stop-vm{n}": world(f"s0000{n}") for n in (1, 2)}
    v2v_pillar({k: w.definition for k, w in worlds.items()})
    first = worlds["stop-vm1"]
    standins.fail(f"rbd-import@{first.uuid}_disk.v2v")
    ret = salt_run_cli.run(
        "v2v.migrate_wave",
        "ids=stop-vm1,stop-vm2",
        f"pillar_minion={salt_minion.id}",
        "concurrency=1",
        "stop_on_failure=True",
    )
    assert ret.returncode != 0, ret
    states = {k: v["state"] for k, v in ret.data["migrations"].items()}
    assert states == {"stop-vm1": "reverted", "stop-vm2": "not started"}
    assert ret.data["state"] == "stopped"
    first.assert_original(target_state="running")
    # the second VM was never touched
    assert rbd_names(ceph, worlds["stop-vm2"].uuid) == sorted(worlds["stop-vm2"].images)


def test_runner_killed_mid_wave_then_resume_wave(
    salt_master, salt_minion, salt_run_cli, world, v2v_pillar, ceph, standins
):
    worlds = {f"kw-vm{n}": world(f"k0000{n}") for n in (1, 2, 3)}
    v2v_pillar({k: w.definition for k, w in worlds.items()}, waves={"killwave": list(worlds)})
    standins.control({"slow": {"virt-v2v": 4}})
    journal = _kill_when(
        salt_master,
        salt_run_cli,
        "kw-vm1",
        ["v2v.migrate_wave", "killwave", f"pillar_minion={salt_minion.id}"],
        "convert",
    )
    assert journal["flow"]["state"] == "running"
    ret = salt_run_cli.run("v2v.status", "wave=killwave")
    assert ret.data["migrations"]["kw-vm3"]["state"] == "pending", ret.data
    assert ret.data["state"] == "incomplete", ret.data  # not "failed": resume_wave finishes it
    standins.control({})
    ret = salt_run_cli.run("v2v.resume_wave", "killwave")
    assert ret.returncode == 0, ret
    assert ret.data["state"] == "success", json.dumps(ret.data)
    assert {v["state"] for v in ret.data["migrations"].values()} == {"success"}
    for w in worlds.values():
        for index, image in enumerate(w.images):
            assert rbd_sha(ceph, image) == w.expected_converted(index)
            assert rbd_sha(ceph, image + ".bak") == w.originals[image]
    # the interrupted one was resumed from its journal, not started again
    assert len(_journal(salt_master, "kw-vm1")["runs"]) == 2
    # and the whole wave can be undone, each VM back to its originals
    ret = salt_run_cli.run("v2v.rollback_wave", "killwave")
    assert ret.returncode == 0, ret
    assert ret.data["state"] == "reverted", json.dumps(ret.data)
    for w in worlds.values():
        w.assert_original(target_state="running")
