"""
Write ``docs/reference/``: one page per loader module (execution modules,
states, runners, the ext_pillar, beacons), each an ``automodule``, so the
reference shows the docstrings that ``salt-call sys.doc`` shows. Run by
``docs/conf.py`` on every build.

Salt loads these files by path, not as a package, so they are imported here
the same way, under ``opsalt_reference.<kind>.<name>``.
"""

import importlib.util
import os
import sys
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = [
    ("_modules", "Execution modules"),
    ("_states", "States"),
    ("_runners", "Runners"),
    ("_pillar", "External pillar"),
    ("_beacons", "Beacons"),
]


def loader_modules():
    """Yield ``(kind dir, kind title, module name)`` for every loader module."""
    for kind, title in KINDS:
        for filename in sorted(os.listdir(os.path.join(REPO, kind))):
            if filename.endswith(".py") and not filename.startswith("_"):
                yield kind, title, filename[:-3]


def import_loader_modules():
    """Import every loader module by path under ``opsalt_reference.<kind>``."""
    sys.modules.setdefault("opsalt_reference", types.ModuleType("opsalt_reference"))
    for kind, _title, name in loader_modules():
        package = f"opsalt_reference.{kind.strip('_')}"
        sys.modules.setdefault(package, types.ModuleType(package))
        spec = importlib.util.spec_from_file_location(
            f"{package}.{name}", os.path.join(REPO, kind, name + ".py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)


def write_reference(out_dir):
    """Write one page per loader module and an index, replacing stale pages."""
    import_loader_modules()
    os.makedirs(out_dir, exist_ok=True)
    for stale in os.listdir(out_dir):
        if stale.endswith(".rst"):
            os.unlink(os.path.join(out_dir, stale))
    sections = {}
    for kind, title, name in loader_modules():
        page = f"{kind.strip('_')}.{name}"
        heading = f"{name} ({title.lower().rstrip('s') if kind != '_pillar' else 'ext_pillar'})"
        with open(os.path.join(out_dir, page + ".rst"), "w", encoding="utf-8") as handle:
            handle.write(
                f"{heading}\n{'=' * len(heading)}\n\n.. automodule:: opsalt_reference.{kind.strip('_')}.{name}\n"
            )
        sections.setdefault(title, []).append(page)
    lines = ["Function reference", "==================", ""]
    lines.append("Generated from the docstrings, the same text ``salt-call sys.doc`` shows.")
    lines.append("")
    for title, pages in sections.items():
        lines += [title, "-" * len(title), "", ".. toctree::", "   :maxdepth: 1", ""]
        lines += [f"   {page}" for page in pages]
        lines.append("")
    with open(os.path.join(out_dir, "index.rst"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))


def write_unreleased(fragments_dir, out_dir):
    """Write ``unreleased.rst``: the changelog fragments not yet folded into CHANGELOG.rst."""
    lines = ["Unreleased", "==========", ""]
    for filename in sorted(os.listdir(fragments_dir)):
        if not filename.endswith(".rst"):
            continue
        issue, kind = filename.split(".")[:2]
        with open(os.path.join(fragments_dir, filename), encoding="utf-8") as handle:
            text = " ".join(handle.read().split())
        lines.append(f"- {kind.capitalize()} (#{issue}): {text}")
    with open(os.path.join(out_dir, "unreleased.rst"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
