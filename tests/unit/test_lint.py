"""Linters are part of the suite: ruff (lint + format) and mypy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_lint() -> None:
    proc = _run(str(BIN / "ruff"), "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format() -> None:
    proc = _run(str(BIN / "ruff"), "format", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy() -> None:
    proc = _run(sys.executable, "scripts/typecheck.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_sees_across_packages(tmp_path: Path) -> None:
    """The gate fails on a wrong call from one mapped package into another (the
    runtime's CLI into the network store, a plugin's config into the core)."""
    bad = tmp_path / "wrong_calls.py"
    bad.write_text(
        "from pycni.runtime.networks import NetworkStore\n"
        "from pycni.runtime import libcni\n\n\n"
        "def f() -> None:\n"
        "    NetworkStore().create(42)\n"
        "    libcni.conflist_from_bytes('not bytes', 7)\n"
    )
    proc = _run(sys.executable, "scripts/typecheck.py", "--extra", str(bad))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "wrong_calls.py:6: error" in proc.stdout and "wrong_calls.py:7: error" in proc.stdout
