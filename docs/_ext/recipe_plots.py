"""Sphinx extension: draw the plots of the recipe pages when the documentation is built.

Each page named in ``recipe_plot_pages`` is run as its readers would run it: its ``.. code-block::
python`` blocks in order, in one namespace, in a fresh temporary directory.  The images the code
saves there (``*.png``) are copied to ``_generated/`` beside the pages, where the page's ``..
image::`` directives find them.  So the figures are always those of the code shown, and a page
whose code fails breaks the build.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Any

_BLOCK = re.compile(r"^\.\. code-block:: python\n((?:\n|   .*\n)+)", re.MULTILINE)


def python_blocks(text: str) -> list[str]:
    """The source of every ``.. code-block:: python`` of an reStructuredText page, in order."""
    return [textwrap.dedent(match.group(1)).strip("\n") + "\n" for match in _BLOCK.finditer(text)]


def run_page(page: Path, output: Path) -> list[Path]:
    """Run the Python blocks of ``page`` in a temporary directory; copy the PNGs they saved to
    ``output``; return the copies."""
    output.mkdir(exist_ok=True)
    namespace: dict[str, Any] = {"__name__": "__recipe__"}
    with tempfile.TemporaryDirectory(prefix="recipe-plots-") as directory:
        # What the code prints is the page's text, not the build's output.
        with _working_directory(directory), contextlib.redirect_stdout(io.StringIO()):
            for index, source in enumerate(python_blocks(page.read_text(encoding="utf-8"))):
                exec(compile(source, f"{page.name}, block {index + 1}", "exec"), namespace)  # noqa: S102
        return [Path(shutil.copy(image, output)) for image in sorted(Path(directory).glob("*.png"))]


@contextlib.contextmanager
def _working_directory(path: str):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _draw(app: Any) -> None:
    source = Path(app.srcdir)
    for name in app.config.recipe_plot_pages:
        run_page(source / f"{name}.rst", source / "_generated")


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("recipe_plot_pages", [], "env")
    app.connect("builder-inited", _draw)
    return {"version": "1", "parallel_read_safe": True}
