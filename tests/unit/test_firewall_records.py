"""The firewall store's plain records (spoof checks, isolated networks), the legacy
spoofcheck location, and the counts CHECK expects (no root needed)."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from pathlib import Path

import pytest

from pycni import recordstore
from pycni.firewall import isolation, nft, nftables, spoofcheck
from pycni.firewall.base import Isolation
from pycni.firewall.store import Records


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path))
    return tmp_path


def test_records_are_private_and_encoded(tmp_path: Path) -> None:
    records = Records("spoof")
    key = ("net/../x", "c1", "eth-0")
    path = records.path(key)
    records.write(path, {"hostVeth": "veth1", "mac": "02:00:00:00:00:01"})
    assert path.startswith(str(tmp_path / "firewall" / ".spoof") + os.sep)
    assert "/../" not in path[len(str(tmp_path)) :]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert records.attachments() == [key]
    assert records.attachments("net/../x") == [key]
    assert records.read(path) == {"hostVeth": "veth1", "mac": "02:00:00:00:00:01"}
    records.remove(path)
    assert records.attachments() == [] and not os.path.exists(os.path.dirname(path))


def test_a_corrupt_record_reads_as_missing(capfd: pytest.CaptureFixture[str]) -> None:
    records = Records("isolation")
    path = records.network_path("n")
    records.write(path, {"bridge": "br0"})
    Path(path).write_text("{not json")
    assert records.read(path) is None
    assert "ignoring corrupt" in capfd.readouterr().err
    assert records.networks() == ["n"]


def test_the_backends_records_never_list_the_plain_ones() -> None:
    from pycni.firewall.store import Store

    Records("spoof").write(Records("spoof").path(("n", "c", "eth0")), {"x": 1})
    Records("isolation").write(Records("isolation").network_path("n"), {"bridge": "b"})
    assert list(Store().records()) == []


def test_isolation_intent_round_trip() -> None:
    net = Isolation("n", "br-n", internal=True, icc=False, direct_routing=frozenset({6}))
    back = Isolation.from_dict("n", json.loads(json.dumps(net.to_dict())))
    assert (back.bridge, back.internal, back.icc, back.direct_routing) == (
        "br-n",
        True,
        False,
        frozenset({6}),
    )
    default = Isolation.from_dict("n", {"bridge": "b"})
    assert (default.internal, default.icc, default.direct_routing) == (False, True, frozenset())


def test_spoof_records_of_older_versions_are_still_found(tmp_path: Path) -> None:
    legacy = tmp_path / "spoofcheck" / "net1" / "cid1:eth0.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"hostVeth": "vethold", "mac": "02:00:00:00:00:09", "ips": []}))
    record, path = spoofcheck._load("net1", "cid1", "eth0")
    assert record is not None and record["hostVeth"] == "vethold" and path == str(legacy)
    assert recordstore.legacy_keys(spoofcheck._legacy_root()) == [("net1", "cid1", "eth0")]
    assert recordstore.legacy_keys(spoofcheck._legacy_root(), "net1") == [("net1", "cid1", "eth0")]
    # a record in the store wins over the legacy one
    records = Records("spoof")
    records.write(
        records.path(("net1", "cid1", "eth0")),
        {"hostVeth": "vethnew", "mac": "02:00:00:00:00:09", "ips": ["10.0.0.2/24"]},
    )
    record, _path = spoofcheck._load("net1", "cid1", "eth0")
    assert record is not None and record["hostVeth"] == "vethnew"
    assert spoofcheck._record_elements(record)["ip4"] == [
        {"concat": ["vethnew", str(ipaddress.ip_address("10.0.0.2"))]}
    ]


def test_check_counts_come_from_the_builders() -> None:
    counted = nft.rule_counts(nftables.skeleton())
    assert {c: counted.get(c, 0) for c in nftables.BASE_CHAINS} == nftables.RULE_COUNTS
    assert nftables.RULE_COUNTS == {
        "prerouting": 7,
        "output": 7,
        "postrouting": 7,
        "localnet-guard": 1,
    }
    assert nft.rule_counts(isolation.skeleton()) == {isolation.BASE_CHAIN: 2}


def test_replay_records_the_intents_a_runtime_knows_of() -> None:
    """Networks isolated by a version without records: reload hands their intents in,
    they are recorded (no bridge of that name here, so nothing reaches nft)."""
    records = Records("isolation")
    records.write(records.network_path("kept"), {"bridge": "pytnobr1", "internal": True})
    known = [Isolation("old", "pytnobr0", icc=False), Isolation("kept", "pytnobr1")]
    assert isolation.replay(known) == 0
    assert records.networks() == ["kept", "old"]
    assert records.read(records.network_path("old")) == {
        "bridge": "pytnobr0",
        "internal": False,
        "icc": False,
        "directRouting": [],
    }
    assert records.read(records.network_path("kept"))["internal"] is True  # never replaced
