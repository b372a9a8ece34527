"""Sphinx configuration of the mio-mux documentation (Read the Docs: .readthedocs.yaml).

Build: ``python -m pip install '.[docs]' && python -m sphinx -W --keep-going -b html docs
docs/_build/html``. Pages are Markdown (MyST); the API reference is generated from the
docstrings of the installed package, so build against the version being documented.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import mio
from mio._version import DISTRIBUTION

project = DISTRIBUTION
author = "The mio developers"
copyright = "2026, The mio developers"
release = mio.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: headings get anchors (PROTOCOL.md#9-talking-to-the-reference works as on GitHub),
# ```{directive} fences and :::{note} blocks.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# autodoc: the public names (each module's __all__), in source order, signatures with
# the type hints written out in the description.
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autoclass_content = "both"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Config's "Attributes:" section becomes fields of the class entry instead of a second
# description of each dataclass field.
napoleon_use_ivar = True

#: asyncio's protocol callbacks (Session is an asyncio.BufferedProtocol): the event loop
#: calls them, applications do not; their inherited docstrings point into Python's docs.
ASYNCIO_CALLBACKS = frozenset(
    name
    for cls in (asyncio.BaseProtocol, asyncio.Protocol, asyncio.BufferedProtocol)
    for name in vars(cls)
    if not name.startswith("_")
)


def _skip_asyncio_callbacks(
    app: Any, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    return True if what == "class" and name in ASYNCIO_CALLBACKS else None


def _keep_property_colons(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    # napoleon reads the first line of a property docstring as "type: description", so
    # "The stream id (odd: opened by the client...)" became the type "The stream id (odd".
    # A property's type is its annotation (shown in the signature): after napoleon, put
    # back the docstring as written when its first line merely contained a colon.
    doc = inspect.getdoc(obj)
    if what != "property" or not doc or ":" not in doc.splitlines()[0]:
        return
    if any(line.startswith(":type:") for line in lines):
        lines[:] = doc.splitlines()


def setup(app: Any) -> None:
    app.connect("autodoc-skip-member", _skip_asyncio_callbacks)
    # after napoleon (priority 500), which rewrote the lines
    app.connect("autodoc-process-docstring", _keep_property_colons, priority=600)


html_theme = "furo"
html_title = f"{DISTRIBUTION} {release}"
html_theme_options = {
    "source_repository": "https://github.com/mio-project/mio/",
    "source_branch": "main",
    "source_directory": "docs/",
}
html_static_path: list[str] = []
