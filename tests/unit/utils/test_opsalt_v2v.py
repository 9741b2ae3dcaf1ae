"""
opsalt_v2v, the pure parts of v2v: the name patterns and the schema hold the
same rules, the step table's fields replace name-based special cases, the
preflight table runs each check on its own, and the command lines render
from one place.
"""

import json
import os

import jsonschema
import opsalt_v2v
import opsalt_validate
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.asset_api import REPO_ROOT

UUID = "5f1b7f3e-6d7c-4b4a-9a3e-2f8f0c1d2e3f"


@pytest.fixture(scope="module")
def schema():
    with open(os.path.join(REPO_ROOT, "schema", "pillar.schema.json"), encoding="utf-8") as handle:
        return json.load(handle)


def definition(**extra):
    spec = {
        "source_host": "xen01.example.com",
        "source_domain": "instance-00000017",
        "conversion_minion": "conv01",
        "compute_minion": "compute07",
        "instance_uuid": UUID,
        "target_domain": "instance-000007a2",
        "pool": "vms",
        "work_dir": "/data/v2v/instance-00000017",
    }
    spec.update(extra)
    return spec


def test_schema_patterns_are_the_helpers_patterns(schema):
    section = schema["$defs"]["v2v"]
    migration = section["$defs"]["migration"]["properties"]
    assert section["properties"]["migrations"]["propertyNames"]["pattern"] == opsalt_v2v.MIGRATION_ID_PATTERN
    assert migration["source_host"]["pattern"] == opsalt_v2v.HOST_PATTERN
    assert migration["source_user"]["pattern"] == opsalt_v2v.USER_PATTERN
    for key in ("source_domain", "target_domain", "pool"):
        assert migration[key]["pattern"] == opsalt_v2v.NAME_PATTERN, key
    for key in ("conversion_minion", "compute_minion"):
        assert migration[key]["pattern"] == opsalt_v2v.MINION_PATTERN, key
    assert migration["instance_uuid"]["pattern"] == opsalt_v2v.UUID_ANY_CASE_PATTERN
    waves = section["properties"]["waves"]
    assert waves["propertyNames"]["pattern"] == opsalt_v2v.MIGRATION_ID_PATTERN
    assert waves["additionalProperties"]["items"]["pattern"] == opsalt_v2v.MIGRATION_ID_PATTERN
    assert section["properties"]["work_root"]["$ref"] == "#/$defs/abs_path"
    assert migration["work_dir"]["$ref"] == "#/$defs/abs_path"


@pytest.mark.parametrize(
    "field, value",
    [
        ("conversion_minion", "conv01\n  cmd.run: x"),
        ("compute_minion", "a b"),
        ("source_domain", "vm{{ 1 }}"),
        ("pool", "vms'"),
        ("work_dir", "/data/v2v/vm17\nx"),
        ("work_dir", "/data/v2v/vm17\u2028x"),
    ],
)
def test_schema_and_code_refuse_the_same_values(schema, field, value):
    document = {"v2v": {"migrations": {"mig17": definition(**{field: value})}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)
    with pytest.raises(SaltInvocationError, match=field):
        opsalt_v2v.validate_definition(definition(**{field: value}))


def test_a_valid_definition_passes_both(schema):
    jsonschema.validate({"v2v": {"migrations": {"mig17": definition()}}}, schema)
    assert opsalt_v2v.validate_definition(definition())["work_dir"] == "/data/v2v/instance-00000017"


@pytest.mark.parametrize(
    "field, value",
    [
        ("conversion_minion", "conv01\n"),
        ("source_domain", "vm17\n"),
        ("source_host", "xen01\n"),
        ("work_dir", "/data/v2v/vm17\n"),
    ],
)
def test_a_trailing_newline_is_refused_by_code_and_schema(schema, field, value):
    """Python's ``$`` matches before a final newline; the checks must not."""
    with pytest.raises(SaltInvocationError, match=field):
        opsalt_v2v.validate_definition(definition(**{field: value}))
    document = {"v2v": {"migrations": {"mig17": definition(**{field: value})}}}
    assert list(opsalt_validate.schema_validator(schema).iter_errors(document))
    with pytest.raises(SaltInvocationError, match="invalid migration id"):
        opsalt_v2v.migration_id({}, "vm17\n")


@pytest.mark.parametrize("mig_id", ["mig 17", "-rf", "a" * 65, "x\ny", "../etc", ""])
def test_bad_migration_ids(schema, mig_id):
    with pytest.raises(SaltInvocationError, match="invalid migration id"):
        opsalt_v2v.migration_id({}, mig_id or None)
    if mig_id:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"v2v": {"migrations": {mig_id: definition()}}}, schema)


FACTS = {
    "id": "mig17",
    "copy_method": "dd",
    "source_disks": [{"source": "/dev/vg/a", "size": 10}, {"source": "/dev/vg/b", "size": 5}],
    "target_images": [f"{UUID}_disk", f"{UUID}_disk.local"],
    "source_state": "shut off",
    "target_state": "running",
}


def test_step_fields_replace_the_special_cases():
    spec = opsalt_v2v.validate_definition(definition())
    steps = {s["name"]: s for s in opsalt_v2v.step_table(spec, FACTS)}
    start = steps["start-target"]
    assert opsalt_v2v.verify_result(start, {"after": "running"}) == {"after": "running"}
    with pytest.raises(CommandExecutionError, match="instance-000007a2 is 'shut off' right after start"):
        opsalt_v2v.verify_result(start, {"after": "shut off"})
    # the source was off before: its revert must not start it; the target was running: restart it
    assert not opsalt_v2v.should_revert(steps["shutdown-source"], FACTS)
    assert opsalt_v2v.should_revert(steps["shutdown-source"], dict(FACTS, source_state="running"))
    assert opsalt_v2v.should_revert(steps["stop-target"], FACTS)
    assert not opsalt_v2v.should_revert(steps["stop-target"], dict(FACTS, target_state="shut off"))
    assert not opsalt_v2v.should_revert(steps["localize-xml"], FACTS)  # nothing to undo
    assert opsalt_v2v.should_revert(steps["prepare-work-dir"], FACTS)
    assert [s["verify"] is not None for s in steps.values()].count(True) == 1


def _answers(**override):
    values = {
        "conversion tools": {n: {"found": True} for n in opsalt_v2v.CONVERSION_TOOLS},
        "ssh": True,
        "source state": "shut off",
        "source disks": [{"type": "block", "source": "/dev/vg/a", "size": 10}],
        "target images": {"disks": [{"name": f"{UUID}_disk", "size": 10}], "other": []},
        "work dir": "missing",
        "free space": 100,
        "compute tools": {"virsh": {"found": True}},
        "target state": "running",
    }
    values.update(override)
    return {key: {"ok": True, "value": value} for key, value in values.items()}


def test_each_preflight_check_runs_on_its_own():
    spec = opsalt_v2v.validate_definition(definition())
    answers = _answers()
    # one check alone, with only the facts it needs
    ok, detail, found = opsalt_v2v.check_target_images(
        spec, answers, {"source_disks": answers["source disks"]["value"], "copy_method": "dd"}
    )
    assert ok and found == {"target_images": [f"{UUID}_disk"]} and "/dev/vg/a ->" in detail
    # a table of one check whose facts are missing runs nothing
    table = [opsalt_v2v.Check("target images", opsalt_v2v.check_target_images, ("source_disks",))]
    assert opsalt_v2v.preflight(spec, answers, "m", table=table) == (True, [], {"id": "m"})


def test_a_failed_probe_fails_only_its_check_and_its_dependants():
    spec = opsalt_v2v.validate_definition(definition())
    answers = _answers()
    answers["source disks"] = {"ok": False, "error": "v2v.source_disks on conv01: dumpxml failed"}
    ok, checks, facts = opsalt_v2v.preflight(spec, answers, "m")
    assert not ok
    assert [c["check"] for c in checks if not c["ok"]] == ["source disks"]
    # copy method, target images and free space need the disks: not run, no facts
    assert [c["check"] for c in checks] == [
        "conversion tools",
        "compute tools",
        "ssh to the Xen host",
        "source domain",
        "source disks",
        "target domain",
    ]
    assert "target_images" not in facts and facts["copy_method"] == "copy-to-local"


def test_commands_render_every_op_from_one_table():
    cmds = opsalt_v2v.Commands(
        lambda tool: f"/opt/{tool}", libvirt_uri="qemu:///system", ceph={"id": "nova"}, ssh_options=["-q"]
    )
    rendered = {
        op: cmds.render({"op": op, **args})
        for op, args in {
            "ssh_check": {"host": "xen01"},
            "copy_disk": {"host": "xen01", "device": "/dev/vg/a", "dest": "/w/source/a"},
            "convert": {"xml_path": "/w/source/vm.xml", "work_dir": "/w", "name": "vm"},
            "rbd_remove": {"pool": "vms", "image": "u_disk"},
            "domain_start": {"domain": "instance-1"},
        }.items()
    }
    assert rendered["ssh_check"] == "/opt/ssh -q root@xen01 true"
    assert rendered["copy_disk"] == "/opt/ssh -q root@xen01 'dd if=/dev/vg/a bs=4M' > /w/source/a"
    assert rendered["convert"].startswith(
        "VIRT_V2V_TMPDIR=/w/tmp /opt/virt-v2v -i libvirtxml /w/source/vm.xml"
    )
    assert rendered["rbd_remove"] == "/opt/rbd --id nova rm vms/u_disk"
    assert rendered["domain_start"] == "/opt/virsh -c qemu:///system start instance-1"
    assert set(opsalt_v2v.OPS) >= {"source_shutdown", "copy_to_local", "rbd_rename", "rbd_import", "checksum"}
    with pytest.raises(SaltInvocationError, match="unknown step op"):
        cmds.render({"op": "rm_rf"})
    with pytest.raises(SaltInvocationError, match="invalid Xen host name"):
        cmds.render({"op": "ssh_check", "host": "xen01;reboot"})


def test_xml_disks_localised_in_guest_order():
    xml = (
        "<domain><devices>"
        "<disk type='block' device='disk'><driver name='phy'/><source dev='/dev/vg/a'/><target dev='xvda'/></disk>"
        "<disk type='file' device='cdrom'><source file='/iso'/><target dev='xvdc'/></disk>"
        "<disk type='block' device='disk'><source dev='/dev/vg/b'/><target dev='xvdb'/></disk>"
        "</devices></domain>"
    )
    root, disks = opsalt_v2v.disks_of(xml)
    assert [(d["source"], d["target"]) for d in disks] == [("/dev/vg/a", "xvda"), ("/dev/vg/b", "xvdb")]
    _root, local = opsalt_v2v.disks_of(opsalt_v2v.localized_xml(root, ["/w/a", "/w/b"]))
    assert [(d["type"], d["source"]) for d in local] == [("file", "/w/a"), ("file", "/w/b")]
    assert sorted(["disk.eph1", "disk.local", "disk"], key=opsalt_v2v.nova_sort_key) == [
        "disk",
        "disk.local",
        "disk.eph1",
    ]
    assert opsalt_v2v.is_nova_disk("disk.eph3") and not opsalt_v2v.is_nova_disk("disk.swap")


def test_wave_members_from_pillar_or_ids(schema):
    pillar = {"waves": {"w1": ["vm1", "vm2"]}}
    assert opsalt_v2v.wave_members("w1", None, pillar) == ("w1", ["vm1", "vm2"])
    assert opsalt_v2v.wave_members(None, "vm3, vm4", pillar) == ("wave-vm3", ["vm3", "vm4"])
    assert opsalt_v2v.wave_members("mine", ["vm5"], pillar) == ("mine", ["vm5"])
    for bad in ({"w1": ["vm1", "vm1"]}, {"w1": ["vm 1"]}, {"w 1": ["vm1"]}, {"w1": []}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"v2v": {"waves": bad}}, schema)


def test_wave_table_and_state():
    entries = {
        "vm1": opsalt_v2v.wave_entry({"state": "success", "result": True}, [{"size": 512 * 2**20}], 4.0),
        "vm2": opsalt_v2v.wave_entry({"state": "reverted", "errors": {"convert": "x"}}, None, 2.0),
    }
    assert entries["vm1"]["mib_per_s"] == 128.0 and entries["vm2"]["mib_per_s"] is None
    # a rollback (or an "already rolled back" in no time) shows no rate
    disks = [{"size": 512 * 2**20}]
    assert opsalt_v2v.wave_entry({"state": "reverted"}, disks, 3.0)["mib_per_s"] is None
    assert (
        opsalt_v2v.wave_entry({"state": "reverted", "comment": "already rolled back"}, disks, 0.0)[
            "mib_per_s"
        ]
        is None
    )
    assert entries["vm2"]["errors"] == {"convert": "x"}
    assert opsalt_v2v.wave_state(entries) == "failed"
    assert opsalt_v2v.wave_table(entries)[1].split() == ["vm1", "success", "4.0", "128.0"]
    assert opsalt_v2v.wave_state({"a": {"state": "success"}, "b": {"state": "not started"}}) == "stopped"
    # a wave still running (or whose runner died) is not "failed"
    unfinished = {"a": {"state": "reverted"}, "b": {"state": "running"}, "c": {"state": "pending"}}
    assert opsalt_v2v.wave_state(unfinished) == "incomplete"
