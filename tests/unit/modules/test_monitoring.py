"""
The monitoring execution module's master-side pieces: the pillar metrics
store the ext_pillar records into is the one the ``master`` collector reads,
and every metric name the code emits is in the docs' metrics table.
"""

import ast
import os
import re

import opsalt_monitoring
import opsalt_ops_http_json

from tests.support.asset_api import REPO_ROOT
from tests.support.components import load_component

monitoring = load_component("_modules", "monitoring")

SOURCES = [
    os.path.join(REPO_ROOT, "_modules", "monitoring.py"),
    os.path.join(REPO_ROOT, "_utils", "opsalt_monitoring.py"),
]
DOCS = os.path.join(REPO_ROOT, "docs", "components", "monitoring.rst")
METRIC_TYPES = {"gauge", "counter", "histogram", "summary"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# The names issue 15 asked for: kept.
ISSUE_NAMES = [
    "opsalt_pillar_fetch_total",
    "opsalt_pillar_fetch_duration_seconds",
    "opsalt_pillar_stale_minions",
    "opsalt_pillar_last_success_timestamp_seconds",
    "opsalt_vmtune_watermark_gap_kib",
    "opsalt_vmtune_min_free_kbytes",
    "opsalt_redis_aof_fsync_stalls_total",
    "opsalt_v2v_migration_state",
    "opsalt_v2v_copy_mib_per_second",
]


def _with_settings(master_cachedir):
    settings = {"monitoring": {"textfile": {"master_cachedir": master_cachedir}}}
    monitoring.__salt__ = {"config.get": lambda key, default=None, **_: settings.get(key, default)}
    monitoring.__opts__ = {"cachedir": "/nonexistent/minion-cache"}


def test_the_ext_pillar_records_where_the_master_collector_reads(tmp_path):
    master = str(tmp_path / "master-cache")
    os.makedirs(master)
    _with_settings(master)
    client = opsalt_ops_http_json.AssetApiClient({"url": "https://assets.example.com/%s/"}, master)
    assert client.metrics_dir == monitoring._store_dir() == opsalt_monitoring.pillar_store_dir(master)
    client._record_metrics("web01", "stale", 0.2)
    monitoring.record_fetch("ok", 0.01, minion_id="db01")  # same store by default
    text = monitoring.textfile_metrics(collectors=["master"])
    assert 'opsalt_pillar_fetch_total{result="stale"} 1\n' in text
    assert 'opsalt_pillar_fetch_total{result="ok"} 1\n' in text
    assert "opsalt_pillar_stale_minions 1\n" in text
    assert monitoring.pillar_metrics() in text


def _emitted_families():
    """
    Every metric family the code builds: the ``(name, type, help, samples)``
    tuples, and the sample names given with ``__name__`` (histogram parts).
    """
    families, sample_names = {}, set()
    for path in SOURCES:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and len(node.elts) == 4:
                name, kind = node.elts[0], node.elts[1]
                if (
                    isinstance(name, ast.Constant)
                    and isinstance(kind, ast.Constant)
                    and kind.value in METRIC_TYPES
                ):
                    families[name.value] = kind.value
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "__name__":
                        sample_names.add(value.value)
    return families, sample_names


def _documented():
    with open(DOCS, encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("Metrics opsalt writes\n=====================", 1)[1].split("\n====", 1)[0]
    return re.findall(r"^   \* - ``([a-z_:][a-z0-9_:]*)", section, flags=re.M)


def test_every_metric_the_code_emits_is_in_the_docs_table():
    families, sample_names = _emitted_families()
    documented = _documented()
    assert set(ISSUE_NAMES) <= set(families), families  # the walk finds them; the names stay
    missing = sorted(set(families) - set(documented))
    assert missing == [], f"add these to the metrics table of {DOCS}: {missing}"
    assert sorted(set(documented) - set(families)) == [], (
        "the docs table names metrics the code does not emit"
    )
    assert len(documented) == len(set(documented))
    for sample in sample_names:
        base = next((sample[: -len(s)] for s in HISTOGRAM_SUFFIXES if sample.endswith(s)), None)
        assert families.get(base) == "histogram", sample
