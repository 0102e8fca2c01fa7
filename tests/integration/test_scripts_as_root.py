"""The README's two commands run as written for root (no sudo needed, none installed
here) and for a user with sudo; without either they say what to do.

The non-root cases run the real scripts as `nobody` (setpriv); the sudo they find is a
stand-in on PATH that prints what it was asked to run, so nothing runs as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ["scripts/demo.sh", "scripts/test.sh"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def bin_dir() -> Iterator[Path]:
    """The only PATH the script gets: what it needs, and no sudo unless a test adds one."""
    d = Path(tempfile.mkdtemp(prefix="pycni-sudo-"))
    d.chmod(0o755)
    for tool in ("bash", "id", "dirname", "basename", "env"):
        (d / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    yield d
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def checkout() -> Iterator[Path]:
    """The scripts in a directory `nobody` can reach: a checkout may sit under a
    directory only root can enter (a CI's `mktemp -d`), which would make every run
    below fail with "Permission denied" before the scripts say anything."""
    d = Path(tempfile.mkdtemp(prefix="pycni-scripts-"))
    d.chmod(0o755)
    shutil.copytree(REPO / "scripts", d / "scripts")
    yield d
    shutil.rmtree(d)


def _as_nobody(
    checkout: Path, script: str, path: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *NOBODY,
            "--",
            "env",
            "-i",
            f"PATH={path}",
            *(f"{k}={v}" for k, v in env.items()),
            f"./{script}",
            *args,
        ],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_without_root_or_sudo_it_says_so(script: str, bin_dir: Path, checkout: Path) -> None:
    proc = _as_nobody(checkout, script, str(bin_dir))
    assert proc.returncode == 1, proc.stderr
    assert "needs root" in proc.stderr and "sudo is not installed" in proc.stderr, proc.stderr
    assert "run it as root" in proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_user_with_sudo_gets_the_same_command_through_sudo(
    script: str, bin_dir: Path, checkout: Path
) -> None:
    fake = bin_dir / "sudo"
    fake.write_text('#!/bin/sh\necho "SUDO $*"\n')
    fake.chmod(0o755)
    proc = _as_nobody(checkout, script, str(bin_dir), "-k", "x y", NETCTL_ROOT="/tmp/sbx")
    assert proc.returncode == 0, proc.stderr
    assert "running it again with sudo" in proc.stderr
    assert proc.stdout.strip() == f"SUDO -- env NETCTL_ROOT=/tmp/sbx {checkout / script} -k x y"


@pytest.mark.parametrize("script", SCRIPTS)
def test_as_root_nothing_changes(script: str) -> None:
    """Sourced as root, the helper neither execs nor prints: the script goes on."""
    proc = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . scripts/as-root.sh; echo "still {script}"'],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert os.geteuid() == 0
    assert proc.returncode == 0 and proc.stdout == f"still {script}\n" and proc.stderr == ""
