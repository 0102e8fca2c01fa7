"""pycni: CNI plugins, a thin runtime and the netctl CLI.

This package is imported by every plugin process, so it imports nothing: a plugin is
exec'd for every container start and pays for every module it loads.

One import root: the core is this folder; `pycni.plugins`, `pycni.ipam` and
`pycni.runtime` are the repository's top-level plugins/, ipam/ and runtime/ folders.
An installed wheel has them inside this folder; in a source checkout they sit beside
it, so the checkout's root joins the package path.
"""

import os as _os  # already loaded by the interpreter's start-up: costs nothing

__version__ = "0.1.0"

_src_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_src_root, "plugins", "__init__.py")) and _os.path.isfile(
    _os.path.join(_src_root, "pyproject.toml")
):
    __path__.append(_src_root)
