"""pycni.atomicfile: the one whole-file writer (issue 11: one helper, not nine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycni.atomicfile import write_atomic


def test_replaces_with_the_mode_given_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    old = os.umask(0o077)
    try:
        write_atomic(str(target), "one", 0o644, dir_mode=0o700)
        assert target.read_text() == "one" and target.stat().st_mode & 0o777 == 0o644
        assert target.parent.stat().st_mode & 0o777 == 0o700
        write_atomic(str(target), b"two", 0o600, fsync=True)
        assert target.read_bytes() == b"two" and target.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert sorted(os.listdir(target.parent)) == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    write_atomic(str(target), "old")

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_atomic(str(target), "new")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["f"]


def test_one_writer_in_the_code() -> None:
    """No module writes whole files through its own temp-and-rename any more, except
    host-local's lease store (leases are linked into place, a different protocol) and
    the firewall's port index (symlinks swapped into place); the record store,
    pycni/recordstore.py, writes through it."""
    repo = Path(__file__).resolve().parents[2]
    allowed = {
        "pycni/atomicfile.py",
        "ipam/store.py",
        "pycni/firewall/store.py",
    }
    offenders = []
    for top in ("pycni", "plugins", "ipam", "runtime"):
        for path in (repo / top).rglob("*.py"):
            rel = str(path.relative_to(repo))
            if rel in allowed:
                continue
            text = path.read_text(encoding="utf-8")
            if "os.replace(tmp" in text or "os.rename(tmp" in text:
                offenders.append(rel)
    assert offenders == []
