#!/usr/bin/env python3
"""mypy over the package as it is installed: `pycni.plugins`, `pycni.ipam` and
`pycni.runtime` are the checkout's plugins/, ipam/ and runtime/ folders (pyproject's
package-dir mapping), which mypy cannot follow on its own. So this builds that layout
out of symlinks in .mypy-view/ and checks `-p pycni` there: every cross-package import
resolves to the real module, and a wrong call across packages fails the gate.

    .venv/bin/python scripts/typecheck.py [--extra FILE.py ...] [mypy args]

--extra adds a module to the view (as pycni/FILE.py), for the test that proves a
wrong call is caught.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIEW = os.path.join(REPO, ".mypy-view")
MAPPED = ("plugins", "ipam", "runtime")  # pyproject [tool.setuptools.package-dir]


def build(view: str, extra: list[str]) -> None:
    shutil.rmtree(view, ignore_errors=True)
    pkg = os.path.join(view, "pycni")
    os.makedirs(pkg)
    for name in os.listdir(os.path.join(REPO, "pycni")):
        if name != "__pycache__":
            os.symlink(os.path.join(REPO, "pycni", name), os.path.join(pkg, name))
    for name in MAPPED:
        os.symlink(os.path.join(REPO, name), os.path.join(pkg, name))
    for path in extra:
        shutil.copy(path, os.path.join(pkg, os.path.basename(path)))


def main(argv: list[str]) -> int:
    extra = []
    while argv[:1] == ["--extra"]:
        extra.append(os.path.abspath(argv[1]))
        argv = argv[2:]
    view = VIEW if not extra else f"{VIEW}-{os.getpid()}"
    build(view, extra)
    try:
        cmd = [
            os.path.join(os.path.dirname(sys.executable), "mypy"),
            "--config-file",
            os.path.join(REPO, "pyproject.toml"),
            "--cache-dir",
            os.path.join(REPO, ".mypy_cache"),
            "-p",
            "pycni",
            *argv,
        ]
        return subprocess.run(cmd, cwd=view).returncode
    finally:
        if extra:
            shutil.rmtree(view, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
