"""Sphinx configuration: API reference (autodoc + napoleon) and the markdown guides (MyST).

Build: ``make docs`` (``sphinx-build -W -b html docs docs/_build/html``); ``make test`` builds it
with ``-W`` so a broken docstring or link fails CI.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))

from tailwise import __version__  # noqa: E402

project = "tailwise"
author = "the tailwise authors"
copyright = "2026, the tailwise authors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# docs/README.md is the index for people browsing the repository; the site uses index.md
exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]

# Google-style docstrings ("Args:", "Returns:", "Example:")
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# keep signatures readable and the build independent of torch's own (unbuilt) docs
autodoc_mock_imports = ["triton"]
nitpicky = False

# MyST: $...$ math, definition lists, heading anchors for the guides' in-page links
myst_enable_extensions = ["dollarmath", "deflist"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_static_path: list = []
html_theme_options = {"description": "losses, samplers and metrics for long-tailed learning"}
