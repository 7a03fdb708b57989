"""Sphinx configuration of the composite-store documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors).
"""

from __future__ import annotations

import sys
from pathlib import Path

# docs/_ext: this documentation's own Sphinx extensions (recipe_plots draws the recipes' figures).
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

# autodoc imports composite_store as installed (pip install -e '.[dev]'): the package's folders
# (repository/, models/) are mapped to that name by setup.cfg, so the checkout is not on sys.path.

project = "composite-store"
author = "composite-store contributors"
copyright = "2026, composite-store contributors"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "recipe_plots",
]
#: Pages whose code is run at build time to draw the figures they show (docs/_ext/recipe_plots.py).
recipe_plot_pages = ["notebook-recipe"]

exclude_patterns = ["_build", "_ext", "_generated"]
templates_path: list[str] = []
# _static/code-blocks.css: code blocks and wide tables scroll inside their box instead of being cut off.
html_static_path = ["_static"]
html_css_files = ["code-blocks.css"]
html_theme = "alabaster"
html_title = "composite-store"

# API reference: members in source order, signatures with their type hints.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
