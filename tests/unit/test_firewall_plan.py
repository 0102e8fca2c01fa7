"""Firewall planning (pure): owner tags, mapping validation, bindings, records,
the store's paths, conflict index and lock, and the backend selector."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni import errors
from pycni.firewall import get_backend
from pycni.firewall.base import Attachment, PortMapping
from pycni.firewall.iptables import IptablesFirewall
from pycni.firewall.nftables import NftablesFirewall
from pycni.firewall.plan import (
    TAG_MAX,
    Record,
    bindings,
    decode,
    encode,
    normalize_mappings,
    owner_tag,
    parse_owner_tag,
    tag_network_matches,
)
from pycni.firewall.store import Store


def att(*ips: str, network: str = "net", cid: str = "cid", bridge: str = "br0") -> Attachment:
    return Attachment(network, cid, "eth0", [ipaddress.ip_interface(i) for i in ips], bridge)


# -- tags ---------------------------------------------------------------------------------


@given(st.text())
def test_encode_is_safe_and_reversible(text: str) -> None:
    enc = encode(text)
    assert set(enc) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-%")
    assert not enc.startswith(".")
    assert decode(enc) == text


def test_owner_tag_readable_and_parsed_back() -> None:
    key = ("my-net", "0123abcd", "eth0")
    assert owner_tag(key) == "my-net/0123abcd/eth0"
    assert parse_owner_tag(owner_tag(key)) == key
    weird = ('a"; flush ruleset', "}\n{", "e/t h")
    tag = owner_tag(weird)
    assert all(c not in tag for c in ' "\n;{}')
    assert parse_owner_tag(tag) == weird
    assert tag_network_matches(tag, weird[0]) and not tag_network_matches(tag, "a")


def test_owner_tag_too_long_is_hashed_but_still_matches_its_network() -> None:
    key = ("n" * 60, "c" * 64, "eth0")
    tag = owner_tag(key)
    assert len(tag) <= TAG_MAX and tag.startswith("~")
    assert parse_owner_tag(tag) is None
    assert tag_network_matches(tag, "n" * 60)
    assert not tag_network_matches(tag, "other")
    assert owner_tag(key) == tag  # stable


# -- mappings and bindings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (PortMapping(0, 80), "Invalid host port number: 0"),
        (PortMapping(65536, 80), "Invalid host port number: 65536"),
        (PortMapping(80, 0), "Invalid container port number: 0"),
        (PortMapping(80, 80, "icmp"), "unsupported protocol 'icmp'"),
        (PortMapping(80, 80, "tcp", "not-an-ip"), "invalid hostIP 'not-an-ip'"),
    ],
)
def test_invalid_mappings(mapping: PortMapping, message: str) -> None:
    with pytest.raises(errors.InvalidConfig, match=message):
        normalize_mappings([mapping])


def test_mappings_normalized_and_deduplicated() -> None:
    out = normalize_mappings(
        [PortMapping(80, 8080, "TCP"), PortMapping(80, 8080), PortMapping(53, 53, "udp", "::0")]
    )
    assert out == [PortMapping(80, 8080, "tcp"), PortMapping(53, 53, "udp", "::")]


def test_bindings_per_family() -> None:
    a = att("10.0.0.2/24", "fd00::2/64")
    got = bindings(
        a,
        [
            PortMapping(80, 8080),  # both families
            PortMapping(81, 8081, "tcp", "0.0.0.0"),  # v4 wildcard only
            PortMapping(82, 8082, "tcp", "::"),  # v6 wildcard only
            PortMapping(83, 8083, "udp", "192.0.2.1"),  # one address
        ],
    )
    assert [repr(b) for b in got] == [
        "0.0.0.0:80/tcp -> 10.0.0.2:8080",
        ":::80/tcp -> fd00::2:8080",
        "0.0.0.0:81/tcp -> 10.0.0.2:8081",
        ":::82/tcp -> fd00::2:8082",
        "192.0.2.1:83/udp -> 10.0.0.2:8083",
    ]
    assert got[0].subnet == ipaddress.ip_network("10.0.0.0/24")
    # A family the container has no address of is skipped (like the reference).
    assert [b.family for b in bindings(att("10.0.0.2/24"), [PortMapping(80, 80)])] == [4]
    assert bindings(att("10.0.0.2/24"), [PortMapping(80, 80, "tcp", "fd00::1")]) == []


def test_overlapping_mappings_of_one_container_rejected() -> None:
    with pytest.raises(errors.InvalidConfig, match="overlap"):
        bindings(att("10.0.0.2/24"), [PortMapping(80, 80), PortMapping(80, 81, "tcp", "192.0.2.1")])
    # Different protocols do not overlap.
    assert len(bindings(att("10.0.0.2/24"), [PortMapping(80, 80), PortMapping(80, 80, "udp")])) == 2


def test_record_roundtrip_and_localnet() -> None:
    r = Record(("n", "c", "eth0"), "nftables")
    r.masquerade = att("10.0.0.2/24")
    r.ports = att("10.0.0.2/24", "fd00::2/64")
    r.mappings = [PortMapping(80, 8080), PortMapping(53, 53, "udp", "192.0.2.1")]
    r.snat, r.masq_all = True, True
    back = Record.from_dict(r.to_dict())
    assert back.to_dict() == r.to_dict()
    assert back.localnet_bridge() == "br0"
    r.snat = False
    assert r.localnet_bridge() == ""
    assert Record(("n", "c", "e"), "x").empty


# -- store -----------------------------------------------------------------------------------


def test_record_paths_stay_inside_the_state_dir(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    for key in [("../../etc", "../x", "eth0"), (".hidden", "a/b", "if-0"), ("", "", "")]:
        path = Path(store.record_path(key))
        assert tmp_path / "firewall" in path.parents
        assert ".." not in path.relative_to(tmp_path).parts
        assert not path.parent.name.startswith(".")
    # <cid>-<ifname> stays unambiguous when both contain dashes.
    assert store.record_path(("n", "a-b", "c")) != store.record_path(("n", "a", "b-c"))


def test_save_load_remove(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    r = Record(("n", "c", "eth0"), "iptables")
    r.masquerade = att("10.0.0.2/24")
    store.save(r)
    loaded = store.load(r.key)
    assert loaded is not None and loaded.to_dict() == r.to_dict()
    assert [x.key for x in store.records()] == [r.key]
    assert [x.key for x in store.records("n")] == [r.key]
    assert list(store.records("other")) == []
    assert not [p for p in (tmp_path / "firewall" / "n").iterdir() if ".tmp" in p.name]
    r.masquerade = None
    store.save(r)  # empty record: removed
    assert store.load(r.key) is None
    assert not (tmp_path / "firewall" / "n").exists()


def test_corrupt_record_is_an_io_failure(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    path = Path(store.record_path(("n", "c", "eth0")))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(errors.IOFailure, match="corrupt"):
        store.load(("n", "c", "eth0"))


def test_port_index_wildcard_and_specific(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    a, b = ("n", "a", "eth0"), ("n", "b", "eth0")
    wild = bindings(att("10.0.0.2/24", cid="a"), [PortMapping(80, 80)])
    store.claim(wild, a)
    specific = bindings(att("10.0.0.3/24", cid="b"), [PortMapping(80, 80, "tcp", "192.0.2.1")])
    assert store.conflict(specific[0], b) == "n/a/eth0"
    assert store.conflict(specific[0], a) is None  # its own binding is no conflict
    udp = bindings(att("10.0.0.3/24"), [PortMapping(80, 80, "udp")])
    assert store.conflict(udp[0], b) is None
    v6 = bindings(att("fd00::3/64"), [PortMapping(80, 80)])
    assert store.conflict(v6[0], b) is None  # a's wildcard covers only IPv4 (no v6 address)
    store.release(wild, b)  # not b's: nothing happens
    assert store.conflict(specific[0], b) == "n/a/eth0"
    store.release(wild, a)
    assert store.conflict(specific[0], b) is None
    store.claim(specific, b)
    assert store.conflict(wild[0], a) == "n/b/eth0"  # and the other way round
    store.release_all(b)
    assert store.conflict(wild[0], a) is None
    assert list((tmp_path / "firewall" / ".ports").iterdir()) == []


def test_lock_times_out_with_try_again_later(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    with store.lock():
        with pytest.raises(errors.TryAgainLater) as info, store.lock(timeout=0.2):
            pass
        assert info.value.code == 11
    with store.lock(timeout=0.2):  # released
        pass


# -- selection -------------------------------------------------------------------------------


def test_get_backend_names() -> None:
    assert isinstance(get_backend("nftables"), NftablesFirewall)
    assert isinstance(get_backend("iptables"), IptablesFirewall)
    with pytest.raises(errors.InvalidConfig) as info:
        get_backend("firewalld")
    assert "firewalld" in info.value.msg
    assert "nftables, iptables" in info.value.details


def test_nft_missing_gives_an_actionable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycni.firewall import nft, spawn

    monkeypatch.setattr(nft, "_lib", False)
    monkeypatch.setattr(spawn, "which", lambda name: None)
    fw = NftablesFirewall()
    assert not fw.available()
    with pytest.raises(errors.PluginNotAvailable) as info:
        fw.nft.run([])
    assert "install the nftables package or set ipMasqBackend to iptables" in info.value.msg
    assert not IptablesFirewall().available()
