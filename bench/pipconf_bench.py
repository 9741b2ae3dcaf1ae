"""
Benchmark of the pipconf state (``.venv/bin/python bench/pipconf_bench.py``).

What every highstate pays on a build host: ``pipconf.managed`` on a pip.conf
that already has the wanted settings (no change), and the run that changes
one value. Baselines in the same run, through the same Salt loaders, on the
same hand-written file (comments, three sections):

- ``ini.options_present``: Salt core's INI state, the obvious alternative;
- ``file.managed`` with the whole text (``contents``), what a hand-rolled SLS
  would do (it loses the hand-written part of the file, so it is a floor,
  not an equivalent).

After each variant the file is read back with pip's own parser, and the
table says whether the hand-written comments survived. Two tables, both
with per-run median and p90 in ms and the ratio to ``ini.options_present``:
through ``state.single`` (what a highstate pays, Salt's state machinery
included), and the state functions alone from a raw ``salt.loader.states``
(``file.managed`` needs the state machinery, so it is only in the first).
"""

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import salt.config
import salt.loader

from tests.support.loaders import make_loaders

HAND_WRITTEN = """\
# Build host pip config. The cache lives on the big disk.
[global]
timeout = 30
cache-dir = /srv/pip-cache
index-url = https://pypi.org/simple

[install]
; wheels only for these
only-binary = numpy
no-compile = true

[download]
no-deps = false
"""
GROUP = "http://deploy:bench-pw@nexus.example.com:8081/repository/pypi-group/simple"


def _loaders(root):
    # The operator policy (minion config) lets the benchmark write under its
    # temporary directory and name the bench's index host.
    policy = {"allowed_paths": [root], "pipconf": {"index_hosts": ["nexus.example.com"]}}
    return make_loaders(root, opsalt={"policy": policy})


def _settings(timeout):
    return {"global": {"index-url": GROUP, "trusted-host": "nexus.example.com:8081", "timeout": str(timeout)}}


def _raw_variants(opts):
    opts = dict(opts)
    opts["grains"] = salt.loader.grains(opts)
    utils = salt.loader.utils(opts)
    funcs = salt.loader.minion_mods(opts, utils=utils)
    states = salt.loader.states(opts, funcs, utils, salt.loader.serializers(opts))

    def pipconf_managed(path, timeout):
        return states["pipconf.managed"](name=path, settings=_settings(timeout))

    def ini_options_present(path, timeout):
        return states["ini.options_present"](name=path, sections=_settings(timeout))

    return {"ini.options_present": ini_options_present, "pipconf.managed": pipconf_managed}


def _variants(loaders):
    states = loaders.states

    def pipconf_managed(path, timeout):
        return states.pipconf.managed(name=path, settings=_settings(timeout)).full_return

    def ini_options_present(path, timeout):
        return states.ini.options_present(name=path, sections=_settings(timeout)).full_return

    def file_managed(path, timeout):
        text = loaders.modules.pipconf.render(_settings(timeout))
        return states.file.managed(name=path, contents=text, mode="0600").full_return

    return {
        "ini.options_present": ini_options_present,
        "pipconf.managed": pipconf_managed,
        "file.managed": file_managed,
    }


def _pip_reads(path):
    from pip._internal.configuration import _RawConfigParser

    parser = _RawConfigParser()
    try:
        parser.read(path)
    except Exception:
        return False
    return parser.get("global", "index-url", fallback=None) == GROUP


def _time(func, path, timeout, runs):
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        ret = func(path, timeout)
        samples.append((time.perf_counter() - started) * 1000)
        if ret["result"] is False:
            raise SystemExit(f"{func.__name__} failed: {ret['comment']}")
    return samples


def _measure(variants, root, runs):
    os.makedirs(root)
    results = {}
    for name, func in variants.items():
        path = os.path.join(root, f"{name}.conf")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(HAND_WRITTEN)
        func(path, 60)  # first apply + warm-up
        steady = _time(func, path, 60, runs)
        changing = []
        for i in range(runs // 2):
            changing += _time(func, path, 61 + i % 2, 1)
        text = open(path, encoding="utf-8").read()
        results[name] = {
            "steady": steady,
            "change": changing,
            "comments": "The cache lives on the big disk" in text and "wheels only" in text,
            "pip": _pip_reads(path),
        }
        for leftover in os.listdir(root):
            if leftover.endswith(".opsalt-bak"):
                os.unlink(os.path.join(root, leftover))
    return results


def _table(title, results):
    base = statistics.median(results["ini.options_present"]["steady"])
    base_change = statistics.median(results["ini.options_present"]["change"])
    header = (
        "variant",
        "no-change median ms",
        "p90 ms",
        "ratio",
        "change median ms",
        "ratio",
        "comments kept",
        "pip reads it",
    )
    rows = []
    for name, data in results.items():
        steady = sorted(data["steady"])
        rows.append(
            (
                name,
                f"{statistics.median(steady):.2f}",
                f"{steady[int(len(steady) * 0.9) - 1]:.2f}",
                f"{statistics.median(steady) / base:.2f}",
                f"{statistics.median(data['change']):.2f}",
                f"{statistics.median(data['change']) / base_change:.2f}",
                "yes" if data["comments"] else "no",
                "yes" if data["pip"] else "no",
            )
        )
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    print(title)
    print()
    print(rule)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    print(rule)
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    print(rule)
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="opsalt-pipconf-bench-")
    try:
        loaders = _loaders(root)
        print(
            f"pipconf bench: {args.runs} no-change and {args.runs // 2} changing runs per variant; Python {platform.python_version()}"
        )
        print()
        _table("Through state.single", _measure(_variants(loaders), os.path.join(root, "single"), args.runs))
        _table(
            "State function alone (raw loader)",
            _measure(_raw_variants(loaders.opts), os.path.join(root, "raw"), args.runs * 10),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
