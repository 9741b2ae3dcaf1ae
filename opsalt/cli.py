"""
The ``opsalt`` command: where the installed package keeps what a master
needs besides the loader modules.

``opsalt paths`` prints the SLS tree (for ``file_roots``), the pillar schema
(for the ext_pillar's ``schema:``) and the loader directories, one
``name: path`` per line; ``opsalt paths --json`` prints the same as JSON;
``opsalt paths sls`` (or ``schema``) prints one path alone, for scripts.
"""

import argparse
import json
import sys

from opsalt import loader


def paths():
    """``{name: path}``: the SLS tree, the schema and each loader directory."""
    found = {"sls": loader.sls_root(), "schema": loader.schema_path()}
    for kind, dirs in sorted(loader.loader_dirs().items()):
        found[kind] = dirs[0]
    return found


def _parser():
    parser = argparse.ArgumentParser(prog="opsalt", description="opsalt's installed files")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("paths", help="print where the SLS tree, the schema and the modules are")
    show.add_argument("name", nargs="?", help="print only this path (sls, schema, modules, states, ...)")
    show.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv=None):
    """Entry point of the ``opsalt`` console script."""
    args = _parser().parse_args(argv)
    found = paths()
    if args.name:
        if args.name not in found:
            print(f"opsalt paths: unknown name {args.name!r} (one of {', '.join(found)})", file=sys.stderr)
            return 2
        print(found[args.name])
    elif args.json:
        print(json.dumps(found, indent=2, sort_keys=True))
    else:
        for name, path in found.items():
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
