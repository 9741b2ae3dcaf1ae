"""
The vmtune beacon: validation, rates between samples on a fixture proc tree
whose counters the test advances, the re-arm delay, and the import fallback
to <extension_modules>/utils.
"""

import os
import shutil
import sys

import opsalt_vmtune
import pytest

from tests.support.proc_trees import (
    PLANTED_MARKER,
    call_with_timeout,
    config_get,
    load_component,
    plant_unsafe,
    writable_copy,
)

vmtune_mod = load_component("_modules")
beacon_mod = load_component("_beacons")


@pytest.fixture
def configure_loader_modules(tmp_path):
    return {
        vmtune_mod: {"__salt__": {"config.get": config_get()}, "__opts__": {}},
        beacon_mod: {
            "__salt__": {
                "config.get": config_get(),
                "vmtune.zoneinfo": vmtune_mod.zoneinfo,
                "vmtune.gaps": vmtune_mod.gaps,
            },
            "__opts__": {"extension_modules": str(tmp_path / "extmods")},
        },
    }


@pytest.fixture
def host(tmp_path, monkeypatch):
    root = tmp_path / "proc"
    writable_copy("seed", root)
    clock = {"now": 1000.0}
    monkeypatch.setattr(beacon_mod.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(beacon_mod, "_LAST", {})

    class Host:
        path = str(root)

        @staticmethod
        def advance(seconds, **bumps):
            vmstat = opsalt_vmtune.read_vmstat(str(root))
            for key, delta in bumps.items():
                vmstat[key] += delta
            with open(root / "vmstat", "w") as handle:
                handle.write("".join(f"{k} {v}\n" for k, v in vmstat.items()))
            clock["now"] += seconds

        @staticmethod
        def load(load1):
            (root / "loadavg").write_text(f"{load1} 1.00 1.00 3/800 4242\n")

    return Host


def config(root, **extra):
    items = [{"interval": 1}, {"proc_root": root}, {"rearm": 60}]
    items += [{k: v} for k, v in extra.items()]
    return items + [{"_beacon_name": "vmtune"}]


def test_virtual_with_helpers_importable():
    assert beacon_mod.__virtual__() == "vmtune"


@pytest.mark.parametrize(
    "conf, ok",
    [
        ([{"interval": 5}, {"allocstall_rate": 1}, {"load_per_cpu": 0.7}], True),
        ([{"direct_scan_rate": None}], True),
        ({"allocstall_rate": 1}, False),
        ([{"allocstall_rate": -1}], False),
        ([{"load_per_cpu": "high"}], False),
        ([{"rearm": None}], False),
        ([{"treshold": 3}], False),
    ],
)
def test_validate(conf, ok):
    valid, message = beacon_mod.validate(conf)
    assert valid is ok, message


def test_first_sample_only_records(host):
    host.load(99)
    assert beacon_mod.beacon(config(host.path)) == []


def test_quiet_host_fires_nothing(host):
    beacon_mod.beacon(config(host.path))
    host.advance(5, allocstall=2, pgscan_direct_normal=100)
    assert beacon_mod.beacon(config(host.path)) == []


def test_allocation_stalls_fire_with_the_evidence(host):
    beacon_mod.beacon(config(host.path))
    host.advance(2, allocstall=50, pgscan_direct_normal=6000, compact_stall=4)
    events = beacon_mod.beacon(config(host.path))
    assert len(events) == 1
    event = events[0]
    assert event["reasons"] == ["pgscan_direct 3000/s exceeds 1000/s", "allocstall 25/s exceeds 1/s"]
    assert event["rates"]["allocstall"] == 25.0 and event["rates"]["compact_stall"] == 2.0
    assert event["counters"]["allocstall"] == 3200
    assert event["load"] == {"load1": 5.12, "cpus": 16, "load_per_cpu": 0.32}
    assert event["zoneinfo"][2]["pages"]["min"] == 15319
    assert event["gaps"]["smallest_min_to_low_kib"] == 15316
    assert [p["comm"] for p in event["top_pss"]] == ["postmaster", "php-fpm"]  # 3.10 tree: summed from smaps
    assert "tag" not in event  # the tag stays salt/beacon/<id>/vmtune/


def test_rearm_delay_prevents_an_event_storm(host):
    beacon_mod.beacon(config(host.path))
    fired = 0
    for _second in range(60):  # fires at t=1 s, then suppressed up to t=60 s
        host.advance(1, allocstall=10)
        fired += len(beacon_mod.beacon(config(host.path)))
    assert fired == 1
    host.advance(1, allocstall=10)
    assert len(beacon_mod.beacon(config(host.path))) == 1  # t=61 s: 60 s after the event, re-armed


def test_load_per_cpu(host):
    beacon_mod.beacon(config(host.path))
    host.load(12.0)  # 12 / 16 CPUs = 0.75
    host.advance(1)
    events = beacon_mod.beacon(config(host.path))
    assert events and events[0]["reasons"] == ["load1 12 on 16 CPUs is 0.75 per CPU, above 0.7"]
    beacon_mod._LAST.clear()
    beacon_mod.beacon(config(host.path, load_per_cpu=None))
    host.advance(1)
    assert beacon_mod.beacon(config(host.path, load_per_cpu=None)) == []


def test_top_pss_in_event(tmp_path, monkeypatch):
    root = writable_copy("multinode", tmp_path / "proc")
    clock = iter([1000.0, 1001.0])
    monkeypatch.setattr(beacon_mod.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(beacon_mod, "_LAST", {})
    conf = config(str(root), top=2, load_per_cpu=0.5)  # 20.5 / 32 = 0.64
    beacon_mod.beacon(conf)
    event = beacon_mod.beacon(conf)[0]
    assert [p["comm"] for p in event["top_pss"]] == ["redis-server", "postgres"]


# opsalt_vmtune and the helpers it imports, as saltutil.sync_all puts them
# into <extension_modules>/utils
HELPERS = ("opsalt_vmtune", "opsalt_files", "opsalt_policy", "opsalt_validate")


def _hide_installed_helpers(monkeypatch):
    utils_dir = os.path.dirname(opsalt_vmtune.__file__)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p or ".") != utils_dir])
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if "editable" not in repr(f)])
    for name in HELPERS:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(beacon_mod, "opsalt_vmtune", None)


def test_virtual_falls_back_to_extension_modules_utils(tmp_path, monkeypatch):
    installed = os.path.dirname(opsalt_vmtune.__file__)
    _hide_installed_helpers(monkeypatch)
    with pytest.raises(ImportError):
        __import__("opsalt_vmtune")
    utils = tmp_path / "extmods" / "utils"
    utils.mkdir(parents=True)
    for name in HELPERS:
        shutil.copy(os.path.join(installed, f"{name}.py"), utils / f"{name}.py")
    assert beacon_mod.__virtual__() == "vmtune"
    assert beacon_mod.opsalt_vmtune.__file__ == str(utils / "opsalt_vmtune.py")
    assert sys.modules["opsalt_files"].__file__ == str(utils / "opsalt_files.py")
    assert str(utils) in sys.path


def test_virtual_without_helpers_says_what_to_do(monkeypatch):
    _hide_installed_helpers(monkeypatch)
    ok, reason = beacon_mod.__virtual__()
    assert ok is False and "saltutil.sync_all" in reason


def test_unreadable_proc_root_logs_instead_of_raising(tmp_path, caplog):
    beacon_mod._LAST.clear()
    assert beacon_mod.beacon(config(str(tmp_path / "gone"))) == []
    assert "cannot read" in caplog.text


@pytest.mark.parametrize("key", ["vmtune:proc_root", "vmtune.proc_root"])
def test_proc_root_from_the_config_nested_or_flat(host, monkeypatch, caplog, key):
    # issue 14: nested vmtune:proc_root; the flat key of older releases warns
    monkeypatch.setitem(beacon_mod.__salt__, "config.get", config_get({key: host.path}))
    with caplog.at_level("WARNING"):
        assert beacon_mod._settings([{"top": 1}])["proc_root"] == host.path
    assert ("vmtune.proc_root is deprecated" in caplog.text) is (key == "vmtune.proc_root")


def test_a_parse_error_is_logged_without_the_files_content(host, caplog):
    """The beacon logs the kind of error, never what the file held."""
    beacon_mod._LAST.clear()
    with open(os.path.join(host.path, "loadavg"), "w") as handle:
        handle.write("root-secret-5f3a 1.00 1.00 3/800 4242\n")
    assert beacon_mod.beacon(config(host.path)) == []
    assert "cannot read" in caplog.text and "ValueError" in caplog.text
    assert "root-secret-5f3a" not in caplog.text


@pytest.mark.parametrize("kind", ["fifo", "huge"])
@pytest.mark.parametrize("relpath", ["vmstat", "loadavg", "stat"])
def test_a_fifo_or_huge_file_is_logged_and_the_sample_returns(host, caplog, relpath, kind):
    # issue 12: a FIFO named vmstat under a pillar-chosen proc_root would
    # block the beacon (and the minion's beacon loop) for ever
    beacon_mod._LAST.clear()
    path = plant_unsafe(host.path, relpath, kind)
    with caplog.at_level("ERROR"):
        assert call_with_timeout(lambda: beacon_mod.beacon(config(host.path))) == []
    why = (
        "not a regular file" if kind == "fifo" else f"{16 * opsalt_vmtune.MAX_BYTES} bytes is over the limit"
    )
    assert f"cannot read {host.path} (is proc_root right?): refusing {path}: {why}" in caplog.text
    assert PLANTED_MARKER not in caplog.text


@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_refused_evidence_is_reported_in_the_event(host, kind):
    # the alarm still goes out; the zoneinfo it could not read says why
    beacon_mod.beacon(config(host.path))
    host.advance(2, allocstall=50)
    path = plant_unsafe(host.path, "zoneinfo", kind)
    (event,) = call_with_timeout(lambda: beacon_mod.beacon(config(host.path)))
    assert event["reasons"] == ["allocstall 25/s exceeds 1/s"]
    for key in ("zoneinfo", "gaps"):
        assert event[key]["error"].startswith(f"refusing {path}: "), event[key]
    assert PLANTED_MARKER not in str(event)


def test_a_proc_root_outside_the_policy_is_logged_not_read(host, monkeypatch, caplog):
    # the beacon's proc_root is pillar's too (vmtune:proc_root, beacons:)
    beacon_mod._LAST.clear()
    monkeypatch.setitem(beacon_mod.__salt__, "config.get", config_get(policy=None))
    opened = []
    monkeypatch.setattr(opsalt_vmtune.opsalt_files, "read_regular_bytes", lambda *a: opened.append(a))
    with caplog.at_level("ERROR"):
        assert beacon_mod.beacon(config(host.path)) == []
    assert opened == []
    assert f"vmtune:proc_root: {host.path!r} is outside the allowed paths (/proc)" in caplog.text
    assert "opsalt:policy:vmtune:allowed_paths" in caplog.text
