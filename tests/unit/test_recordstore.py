"""The one record store (issue 11): the interface plugins' attachment records and the
firewall's share `pycni.recordstore`; records of earlier versions are still found."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pycni import attstore, recordstore
from pycni.firewall.store import Records

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path))
    return tmp_path


def test_plugin_records_are_private_encoded_and_listed(tmp_path: Path) -> None:
    attstore.save("bridge", "net/../x", "c-1", "eth-0", {"hostVeth": "veth1"})
    [path] = [p for p in tmp_path.rglob("*.json")]
    assert path.parent.parent == tmp_path / "bridge"  # nothing escaped the root
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert attstore.load("bridge", "net/../x", "c-1", "eth-0") == {"hostVeth": "veth1"}
    assert attstore.entries("bridge", "net/../x") == [("c-1", "eth-0")]
    assert attstore.entries("ptp", "net/../x") == []
    attstore.delete("bridge", "net/../x", "c-1", "eth-0")
    assert attstore.load("bridge", "net/../x", "c-1", "eth-0") is None
    assert list(tmp_path.rglob("*")) == [tmp_path / "bridge"]  # the network's dir went too


def test_a_record_of_an_earlier_version_is_read_listed_and_released(tmp_path: Path) -> None:
    legacy = tmp_path / "ptp" / "n1" / "abc-def:eth0.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text('{"hostVeth": "veth9"}')
    attstore.save("ptp", "n1", "new1", "eth0", {"hostVeth": "veth2"})
    assert attstore.load("ptp", "n1", "abc-def", "eth0") == {"hostVeth": "veth9"}
    assert sorted(attstore.entries("ptp", "n1")) == [("abc-def", "eth0"), ("new1", "eth0")]
    attstore.delete("ptp", "n1", "abc-def", "eth0")
    assert not legacy.exists()
    assert attstore.entries("ptp", "n1") == [("new1", "eth0")]


def test_a_corrupt_or_unreadable_record_is_no_record(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    attstore.save("bridge", "n", "c", "eth0", {"hostVeth": "v"})
    [path] = list(tmp_path.rglob("*.json"))
    path.write_text("[1, 2")
    assert attstore.load("bridge", "n", "c", "eth0") is None
    assert "ignoring corrupt" in capfd.readouterr().err
    path.unlink()
    path.mkdir()  # reading it fails with EISDIR: still no record, no exception
    assert attstore.load("bridge", "n", "c", "eth0") is None
    attstore.delete("bridge", "n", "c", "eth0")  # and DEL does not fail on it


def test_plugin_and_firewall_records_name_files_alike(tmp_path: Path) -> None:
    key = ("net 1", "c1", "e-th0")
    attstore.save("bridge", *key, {"a": 1})
    Records("spoof").save(key, {"a": 1})
    names = sorted(p.relative_to(p.parents[1]).as_posix() for p in tmp_path.rglob("*.json"))
    assert names == ["net%201/c1-e%2Dth0.json"] * 2


def test_one_record_store_in_the_code() -> None:
    """Per-attachment records are written through pycni.recordstore only: no other
    module spells the `<cid>-<ifname>.json` / `<cid>:<ifname>.json` names itself or
    parses them back. (tuning's `<cid>_<ifname>.json` is the reference's own file.)"""
    offenders = []
    for top in ("pycni", "plugins", "ipam", "runtime"):
        for path in (REPO / top).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel == "pycni/recordstore.py":
                continue
            text = path.read_text(encoding="utf-8")
            if "}:{ifname}.json" in text or "}-{encode(ifname)" in text:
                offenders.append(rel)
    assert offenders == []
    assert os.path.exists(REPO / "pycni" / "recordstore.py")


def test_encoding_round_trips() -> None:
    for text in ("", ".hidden", "a/b", "net 1", "ünï", "%41", "x-y"):
        assert recordstore.decode(recordstore.encode(text)) == text
        assert "/" not in recordstore.encode(text)
        assert not recordstore.encode(text).startswith(".")


def test_flat_records_round_trip_an_ifname_with_a_dash(tmp_path: Path) -> None:
    """The dns and overlay plugins' one-directory stores: a "-" in the ifname no longer
    splits wrongly, and a name written before the encoding ("<cid>-<ifname>.json")
    is found under the same key when the ifname has no "-"."""
    flat = recordstore.FlatRecords(str(tmp_path / "d"))
    flat.save("c-1", "e-th0", {"a": 1})
    assert flat.entries() == [("c-1", "e-th0")]
    assert flat.load("c-1", "e-th0") == {"a": 1}
    (tmp_path / "d" / "old-2-eth0.json").write_text('{"b": 2}')
    assert flat.load("old-2", "eth0") == {"b": 2}
    assert sorted(flat.entries()) == [("c-1", "e-th0"), ("old-2", "eth0")]
    assert flat.delete("old-2", "eth0") and not flat.delete("old-2", "eth0")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
