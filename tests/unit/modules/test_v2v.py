"""
The v2v execution module's edge cases with the commands answered by a fake:
rbd exit codes (2, 17, others), virsh errors, timeouts waiting for a state,
configuration turned into argument lists, Nova disk ordering.
"""

import itertools
import os
import subprocess

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.components import load_component


@pytest.fixture
def v2v(monkeypatch):
    module = load_component("_modules", "v2v")
    config = {
        "v2v:tools:rbd": "/opt/ceph/bin/rbd",
        "v2v:ceph:conf": "/srv/ceph/site.conf",
        "v2v:ceph:keyring": "/srv/ceph/nova.keyring",
        "v2v:ceph:id": "nova",
        "v2v:libvirt_uri": "qemu+ssh://compute07/system",
    }
    module.__salt__ = {"config.get": lambda key, default=None: config.get(key, default)}
    module.calls = []
    module.answers = []

    def fake_run(argv, timeout=600, check=True, env=None, cwd=None):
        module.calls.append(list(argv))
        rc, out, err = module.answers.pop(0) if module.answers else (0, "", "")
        if check and rc:
            raise CommandExecutionError(f"{argv[0]} failed with exit code {rc}: {err}")
        return subprocess.CompletedProcess(argv, rc, out, err)

    monkeypatch.setattr(module, "_run", fake_run)
    monkeypatch.setattr(module.time, "sleep", lambda s: None)
    return module


def test_rbd_argv_carries_the_configured_client(v2v):
    v2v.answers = [(0, '["u_disk"]', "")]
    assert v2v.rbd_list("vms") == ["u_disk"]
    assert v2v.calls[0][:7] == [
        "/opt/ceph/bin/rbd",
        "--conf",
        "/srv/ceph/site.conf",
        "--keyring",
        "/srv/ceph/nova.keyring",
        "--id",
        "nova",
    ]


def test_rbd_info_none_on_errno_2_and_error_otherwise(v2v):
    v2v.answers = [(2, "", "rbd: error opening image x: (2) No such file or directory")]
    assert v2v.rbd_info("vms", "x") is None
    v2v.answers = [(110, "", "rbd: connect timed out\n2026 more noise")]
    with pytest.raises(CommandExecutionError, match=r"exit 110\): rbd: connect timed out$"):
        v2v.rbd_info("vms", "x")


def test_rename_maps_errno_17_to_a_clear_message(v2v):
    v2v.answers = [(0, '{"watchers": []}', ""), (17, "", "rbd: rename error: (17) File exists")]
    with pytest.raises(CommandExecutionError, match="vms/u_disk.bak already exists"):
        v2v.rbd_rename("vms", "u_disk", "u_disk.bak")


def test_rename_refuses_watched_image_without_renaming(v2v):
    v2v.answers = [(0, '{"watchers": [{"address": "10.0.0.7:0/123"}]}', "")]
    with pytest.raises(CommandExecutionError, match="open by 10.0.0.7:0/123"):
        v2v.rbd_rename("vms", "u_disk", "u_disk.bak")
    assert not any("rename" in call for call in v2v.calls)


def test_domain_state_none_when_missing(v2v):
    v2v.answers = [(1, "", "error: failed to get domain 'instance-1'")]
    assert v2v.domain_state("instance-1") is None
    assert v2v.calls[0][:3] == ["virsh", "-c", "qemu+ssh://compute07/system"]
    v2v.answers = [(1, "", "error: failed to connect to the hypervisor")]
    with pytest.raises(CommandExecutionError, match="failed to connect"):
        v2v.domain_state("instance-1")


def test_domain_stop_times_out_with_the_state_it_is_stuck_in(v2v, monkeypatch):
    clock = itertools.count(0, 50)
    monkeypatch.setattr(v2v.time, "monotonic", lambda: next(clock))
    v2v.answers = [(0, "running\n", ""), (0, "Domain is being shutdown", "")] + [
        (0, "in shutdown\n", "")
    ] * 10
    with pytest.raises(CommandExecutionError, match="still 'in shutdown' after 120 s"):
        v2v.domain_stop("instance-1", timeout=120)


def test_ssh_check_failure_says_what_is_needed(v2v):
    v2v.answers = [(255, "", "root@xen01: Permission denied (publickey).")]
    with pytest.raises(CommandExecutionError, match="passwordless root ssh"):
        v2v.ssh_check("xen01")
    # one remote word list, quoted: ssh joins it into a shell line
    assert v2v.calls[0][-2:] == ["root@xen01", "true"]


def test_nova_disk_order(v2v):
    names = ["disk.eph10", "disk.eph2", "disk.local", "disk"]
    assert sorted(names, key=v2v._nova_sort_key) == ["disk", "disk.local", "disk.eph2", "disk.eph10"]


@pytest.mark.parametrize("value", ["rbd pool", "-rf", ".hidden", "a/b", "", None, "x" * 200])
def test_bad_names_refused(v2v, value):
    with pytest.raises(SaltInvocationError):
        v2v._name(value, "pool name")


def test_convert_refuses_a_short_result(v2v, tmp_path):
    work = str(tmp_path / "w")
    v2v.__salt__["config.get"] = lambda key, default=None: default
    os.makedirs(work)
    open(os.path.join(work, v2v.WORK_MARKER), "w").close()
    xml = os.path.join(work, "source", "vm.xml")
    os.makedirs(os.path.dirname(xml))
    open(xml, "w").close()

    # virt-v2v "succeeds" but writes one disk of the expected two
    def fake_convert(argv, **kwargs):
        out_dir = argv[argv.index("-os") + 1]
        with open(os.path.join(out_dir, "vm-sda"), "wb") as handle:
            handle.write(b"x")
        return subprocess.CompletedProcess(argv, 0, "", "")

    v2v._run = fake_convert
    with pytest.raises(CommandExecutionError, match="wrote 1 disks for vm .* \\(expected 2\\)"):
        v2v.convert(xml, work, "vm", expected_disks=2)
    assert not os.path.exists(os.path.join(work, "converted", ".vm.converted"))


def _with_policy(v2v, policy):
    def config_get(key, default=None, **kwargs):
        # the policy comes from the minion config only, never the pillar
        assert key != "opsalt:policy" or kwargs.get("omit_pillar") is True
        return policy if key == "opsalt:policy" else default

    v2v.__salt__ = {"config.get": config_get}
    return v2v


@pytest.mark.parametrize(
    "work_root, fragment",
    [
        ("x\n  cmd.run: touch /tmp/PWNED", "not an absolute path"),
        ("/var/lib/opsalt-v2v\nx", "line break or control character"),
        ("/var/lib/opsalt-v2v/../../etc", "not normalised"),
        ("/var/lib/opsalt-v2v/", "not normalised"),
        ("/srv/v2v", "outside the allowed paths (/var/lib/opsalt-v2v)"),
        ("/var/lib/opsalt-v2v-evil", "outside the allowed paths"),
        (None, "not an absolute path"),
    ],
)
def test_work_root_refused_naming_the_key(v2v, work_root, fragment):
    verdict = _with_policy(v2v, {}).work_root_verdict(work_root)
    assert verdict["ok"] is False
    assert "v2v:work_root" in verdict["comment"] and fragment in verdict["comment"]


def test_work_root_default_and_operator_policy(v2v):
    assert _with_policy(v2v, {}).work_root_verdict()["path"] == "/var/lib/opsalt-v2v"
    assert _with_policy(v2v, {}).work_root_verdict("/var/lib/opsalt-v2v/site")["ok"] is True
    assert _with_policy(v2v, {"v2v": {"allowed_paths": ["/srv"]}}).work_root_verdict("/srv/v2v")["ok"]
    assert _with_policy(v2v, {"allowed_paths": ["/data"]}).work_root_verdict("/data/v2v")["ok"]
    # another component's policy does not widen v2v's
    assert not _with_policy(v2v, {"pgbouncer": {"allowed_paths": ["/srv"]}}).work_root_verdict("/srv/v2v")[
        "ok"
    ]
