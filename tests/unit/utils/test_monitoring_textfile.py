"""
opsalt_monitoring's writers: the Prometheus text format (escaped label
values, no second line from a value), the atomic textfile write, and the
pillar metrics store that several master processes update at once.
"""

import multiprocessing
import os
import sys

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
    assert len(data["minions"]) == workers * 4


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
