"""
opsalt_monitoring's writers: the Prometheus text format (escaped label
values, no second line from a value), the atomic textfile write, and the
pillar metrics store that several master processes update at once.
"""

import json
import multiprocessing
import os
import sys
import threading

import pytest

from tests.support.asset_api import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "_utils"))
import opsalt_monitoring as monitoring


def test_label_values_are_escaped_so_no_value_starts_a_line():
    text = monitoring.format_metrics(
        [("opsalt_x", "gauge", "help\nmore", [({"zone": 'a"b\\c\nopsalt_evil 1'}, 1.5), ({}, 2)])]
    )
    assert text == (
        "# HELP opsalt_x help more\n# TYPE opsalt_x gauge\n"
        'opsalt_x{zone="a\\"b\\\\c\\nopsalt_evil 1"} 1.5\nopsalt_x 2\n'
    )
    assert not any(line.startswith("opsalt_evil") for line in text.splitlines())


@pytest.mark.parametrize("name", ["bad-name", "1x", "x y"])
def test_bad_metric_names_are_refused(name):
    with pytest.raises(monitoring.MonitoringError):
        monitoring.format_metrics([(name, "gauge", "h", [])])


def test_bad_label_names_are_refused():
    with pytest.raises(monitoring.MonitoringError, match="label name"):
        monitoring.format_metrics([("opsalt_x", "gauge", "h", [({"a-b": "1"}, 1)])])


def test_write_textfile_replaces_atomically_and_leaves_no_temp(tmp_path):
    path = monitoring.write_textfile(str(tmp_path), "opsalt_host.prom", "opsalt_x 1\n")
    first_inode = os.stat(path).st_ino
    monitoring.write_textfile(str(tmp_path), "opsalt_host.prom", "opsalt_x 2\n")
    assert os.listdir(tmp_path) == ["opsalt_host.prom"]
    assert open(path, encoding="utf-8").read() == "opsalt_x 2\n"
    assert os.stat(path).st_ino != first_inode  # a rename, not an in-place rewrite
    assert os.stat(path).st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", ["../opsalt_x.prom", "opsalt_x.txt", "other.prom", "opsalt_/x.prom"])
def test_write_textfile_refuses_other_names(tmp_path, name):
    with pytest.raises(monitoring.MonitoringError, match="textfile name"):
        monitoring.write_textfile(str(tmp_path), name, "x\n")
    assert os.listdir(tmp_path) == []


def _record_many(directory, worker, count):
    store = monitoring.PillarMetricsStore(directory)
    for index in range(count):
        result = monitoring.PILLAR_RESULTS[(worker + index) % len(monitoring.PILLAR_RESULTS)]
        store.record(result, 0.02 * (index % 3), minion_id=f"m{worker}-{index % 4}")


def test_pillar_store_counts_every_fetch_across_processes(tmp_path):
    workers, per_worker = 6, 40
    context = multiprocessing.get_context("fork")
    procs = [
        context.Process(target=_record_many, args=(str(tmp_path), w, per_worker)) for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    data = monitoring.PillarMetricsStore(str(tmp_path)).snapshot()
    total = workers * per_worker
    assert sum(data["fetch_total"].values()) == total
    # Each worker cycles through the five results, 40 fetches each: 8 of every result.
    assert data["fetch_total"] == dict.fromkeys(monitoring.PILLAR_RESULTS, total // 5)
    assert data["duration_count"] == total
    assert data["duration_buckets"][-1] == total
    # Only the minions whose last fetch was stale are held (each as a marker file).
    last = {
        f"m{w}-{i % 4}": monitoring.PILLAR_RESULTS[(w + i) % 5]
        for w in range(workers)
        for i in range(per_worker)
    }
    assert set(data["minions"]) == {minion for minion, result in last.items() if result == "stale"}


def test_pillar_families_give_the_issue_names(tmp_path):
    store = monitoring.PillarMetricsStore(str(tmp_path))
    store.record("ok", 0.03, minion_id="web01", now=1000.0)
    store.record("stale", 2.0, minion_id="db01", now=1010.0)
    store.record("error", 0.2, minion_id="app01", now=1020.0)
    text = monitoring.format_metrics(monitoring.pillar_families(store.snapshot(), now=1030.0))
    assert 'opsalt_pillar_fetch_total{result="ok"} 1\n' in text
    assert 'opsalt_pillar_fetch_total{result="stale"} 1\n' in text
    assert 'opsalt_pillar_fetch_total{result="not_modified"} 0\n' in text
    assert 'opsalt_pillar_fetch_duration_seconds_bucket{le="0.05"} 1\n' in text
    assert 'opsalt_pillar_fetch_duration_seconds_bucket{le="2.5"} 3\n' in text
    assert 'opsalt_pillar_fetch_duration_seconds_bucket{le="+Inf"} 3\n' in text
    assert "opsalt_pillar_fetch_duration_seconds_count 3\n" in text
    assert "opsalt_pillar_stale_minions 1\n" in text
    assert "opsalt_pillar_last_success_timestamp_seconds 1000.0\n" in text
    # A minion whose later fetch succeeded is no longer stale.
    store.record("ok", 0.01, minion_id="db01", now=1040.0)
    text = monitoring.format_metrics(monitoring.pillar_families(store.snapshot(), now=1050.0))
    assert "opsalt_pillar_stale_minions 0\n" in text


def test_pillar_store_refuses_unknown_results(tmp_path):
    with pytest.raises(monitoring.MonitoringError, match="not one of"):
        monitoring.PillarMetricsStore(str(tmp_path)).record("fine", 0.1)


def test_pillar_store_counts_every_fetch_across_threads(tmp_path):
    store = monitoring.PillarMetricsStore(str(tmp_path))
    threads = [
        threading.Thread(target=lambda: [store.record("ok", 0.01, "m") for _ in range(25)]) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert store.snapshot()["fetch_total"]["ok"] == 200


@pytest.mark.parametrize("minion_id", ["..", ".", "a/b", "web 01?#%", "é" * 100, "x" * 250])
def test_stale_markers_hold_any_minion_id(tmp_path, minion_id):
    store = monitoring.PillarMetricsStore(str(tmp_path))
    store.record("stale", 0.1, minion_id, now=1000.0)
    assert os.listdir(tmp_path / "stale-minions")[0].startswith(("m-", "h-"))
    minions = store.snapshot()["minions"]
    assert len(minions) == 1
    if len(minion_id) < 60:
        assert minions == {minion_id: {"result": "stale", "at": 1000.0}}
    store.record("not_modified", 0.1, minion_id, now=1001.0)
    assert store.snapshot()["minions"] == {} and os.listdir(tmp_path / "stale-minions") == []


def test_old_stale_markers_are_pruned_and_the_counters_file_stays_small(tmp_path, monkeypatch):
    monkeypatch.setattr(monitoring, "PRUNE_EVERY", 10)
    store = monitoring.PillarMetricsStore(str(tmp_path))
    for index in range(9):
        store.record("stale", 0.1, f"old{index}", now=1000.0)
    assert len(store.snapshot()["minions"]) == 9
    store.record("stale", 0.1, "new", now=1000.0 + monitoring.STALE_WINDOW + 1)  # the 10th record
    assert list(store.snapshot()["minions"]) == ["new"]
    assert os.path.getsize(store.path) < 1000  # no per-minion data in the JSON


def test_a_damaged_counters_file_starts_over_and_leaves_no_temp(tmp_path):
    store = monitoring.PillarMetricsStore(str(tmp_path))
    with open(store.path, "w", encoding="utf-8") as handle:
        handle.write('["not", "a", "store"]')
    store.record("ok", 0.1)
    assert store.snapshot()["fetch_total"]["ok"] == 1
    with open(store.path, "w", encoding="utf-8") as handle:
        json.dump({"fetch_total": {"ok": 5}, "minions": {"legacy": {"result": "stale", "at": 1}}}, handle)
    store.record("ok", 0.1)
    data = store.snapshot()
    assert data["fetch_total"]["ok"] == 6 and data["minions"] == {}
    assert sorted(os.listdir(tmp_path)) == [
        "opsalt_pillar_metrics.json",
        "opsalt_pillar_metrics.json.lock",
        "stale-minions",
    ]
