"""Sphinx configuration for the opsalt documentation (``make docs``)."""

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, DOCS)

import make_autodocs  # noqa: E402 - the generator lives beside this file

project = "opsalt"
author = "opsalt developers"
copyright = "2026, opsalt developers"
extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_default_options = {"members": True, "undoc-members": False}
# The loader modules import Salt at module level; autodoc imports them as the
# installed package (opsalt._modules.pgbouncer, ...), as Salt's loader would.
autodoc_member_order = "bysource"

# The function reference is generated from the loader modules on every build,
# so it cannot fall behind the code.
make_autodocs.write_reference(os.path.join(DOCS, "reference"))
make_autodocs.write_unreleased(
    os.path.join(os.path.dirname(DOCS), "changelog"), os.path.join(DOCS, "reference")
)
