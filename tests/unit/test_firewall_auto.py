"""get_backend(None): one O(1) probe at first use, none for the DEL of a recorded
attachment (the record names its backend). No kernel needed: the backends' verbs and
the probe are replaced by recorders."""

from __future__ import annotations

import ipaddress

import pytest

from pycni import errors
from pycni.firewall import AutoBackend, get_backend
from pycni.firewall.base import Attachment
from pycni.firewall.iptables import IptablesFirewall
from pycni.firewall.nftables import NftablesFirewall
from pycni.firewall.plan import Record
from pycni.firewall.store import Store

KEY = ("net1", "cid1", "eth0")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path) -> list[tuple[str, ...]]:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path))
    seen: list[tuple[str, ...]] = []

    def probe(nft: NftablesFirewall) -> bool:
        seen.append(("probe",))
        return True

    monkeypatch.setattr(NftablesFirewall, "available", probe)
    for cls in (NftablesFirewall, IptablesFirewall):
        for verb in ("del_masquerade", "del_port_mappings"):

            def record(self, network, cid, ifname, _verb=verb, _name=cls.name):  # type: ignore[no-untyped-def]
                seen.append((_name, _verb, network, cid, ifname))

            monkeypatch.setattr(cls, verb, record)
    return seen


def _save(backend: str) -> None:
    record = Record(KEY, backend)
    record.masquerade = Attachment(*KEY, ips=[ipaddress.ip_interface("10.1.0.2/24")])
    Store().save(record)


def test_no_name_is_an_auto_backend_probed_once(calls) -> None:
    fw = get_backend(None)
    assert isinstance(fw, AutoBackend) and isinstance(get_backend(""), AutoBackend)
    assert calls == []  # nothing probed before use
    assert fw.available() and fw.available()
    assert fw.name == "nftables"
    assert calls == [("probe",)]


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_del_of_a_recorded_attachment_probes_nothing(calls, backend: str) -> None:
    _save(backend)
    get_backend(None).del_port_mappings(*KEY)
    get_backend(None).del_masquerade(*KEY)
    assert calls == [
        (backend, "del_port_mappings", *KEY),
        (backend, "del_masquerade", *KEY),
    ]


def test_del_without_a_record_probes_as_before(calls) -> None:
    get_backend(None).del_masquerade(*KEY)
    assert calls == [("probe",), ("nftables", "del_masquerade", *KEY)]


def test_del_falls_back_when_the_recorded_backend_is_gone(calls, monkeypatch) -> None:
    _save("iptables")

    def gone(self, network, cid, ifname):  # type: ignore[no-untyped-def]
        raise errors.PluginNotAvailable("iptables: not installed")

    monkeypatch.setattr(IptablesFirewall, "del_masquerade", gone)
    get_backend(None).del_masquerade(*KEY)
    assert calls == [("probe",), ("nftables", "del_masquerade", *KEY)]


def test_nothing_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycni.firewall import nft, spawn

    monkeypatch.setattr(nft, "_lib", False)
    monkeypatch.setattr(spawn, "which", lambda name: None)
    fw = get_backend(None)
    assert not fw.available()
    assert fw.name == "nftables"  # whose errors say what to install
    assert not NftablesFirewall().available()
