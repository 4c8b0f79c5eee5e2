"""Sphinx configuration of the structattn documentation.

Build (warnings are errors; no network access is needed or attempted)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the gallery scripts run headless during the build

# Import the package from this checkout even when it is not installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structattn

# Tutorials run in the build process: keep them on the CPU and quiet.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# -- project ------------------------------------------------------------------------
project = "structattn"
author = "the structattn developers"
copyright = "the structattn developers"
version = release = structattn.__version__

# -- extensions ---------------------------------------------------------------------
# sphinx.ext.intersphinx is deliberately absent: the build never touches the network.
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_generated"]
root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
default_role = "code"  # `x` renders as inline code instead of a dangling reference
pygments_style = "sphinx"

# -- autodoc / autosummary ----------------------------------------------------------
autosummary_generate = True  # pages go to docs/api/generated (git-ignored)
autosummary_imported_members = False
autodoc_typehints = "none"  # signatures and numpydoc sections carry the types
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
autodoc_inherit_docstrings = True

# -- numpydoc -----------------------------------------------------------------------
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()  # validation is for the linters, never a build warning
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True

# -- sphinx-gallery -----------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "reference_url": {},  # no links to remote docs (no network)
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": False,  # a failing tutorial is reported as a build error
}

# -- HTML ---------------------------------------------------------------------------
try:
    import pydata_sphinx_theme  # noqa: F401
except ImportError:  # pragma: no cover - fallback for minimal environments
    html_theme = "alabaster"
    html_theme_options = {}
else:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_depth": 2,
        "show_toc_level": 2,
        "navbar_end": ["theme-switcher", "navbar-icon-links"],
        "icon_links": [],
        "footer_start": ["copyright"],
        "footer_end": ["sphinx-version"],
    }
html_title = f"structattn {release}"
html_show_sourcelink = False
html_sidebars = {"index": [], "getting_started": [], "cli": [], "benchmarks": []}
