"""sbr's and vrf's config reading, without root."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycni import errors
from pycni.plugins.sbr import SbrConf, ip_configs
from pycni.plugins.vrf import VrfConf
from pycni.result import parse_result


def test_sbr_defaults_and_keys() -> None:
    c = SbrConf({})
    assert (c.table, c.gateways, c.source_hints) == (None, {}, False)
    c = SbrConf({"table": 7, "gateways": ["10.0.0.1", "fd00::1"], "addSourceHints": True})
    assert c.table == 7 and c.source_hints
    assert c.gateways == {4: ipaddress.ip_address("10.0.0.1"), 6: ipaddress.ip_address("fd00::1")}
    assert SbrConf({"table": None}).table is None


@pytest.mark.parametrize(
    "d",
    [
        {"table": 0},
        {"table": 2**32},
        {"table": "100"},
        {"gateways": ["10.0.0.1", "10.0.0.2"]},
        {"gateways": ["1.1.1.1", "::1", "2.2.2.2"]},
        {"gateways": [5]},
        {"addSourceHints": 1},
    ],
)
def test_sbr_invalid(d: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidConfig):
        SbrConf(d)


def test_sbr_picks_the_interfaces_addresses() -> None:
    prev = parse_result(
        {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0"}, {"name": "net1", "sandbox": "/x"}],
            "ips": [
                {"address": "10.0.0.2/24", "interface": 0},
                {"address": "10.1.0.2/24", "interface": 1},
                {"address": "10.2.0.2/24"},
            ],
        }
    )
    assert [str(ip.address) for ip in ip_configs(prev, "net1")] == ["10.1.0.2/24", "10.2.0.2/24"]
    with pytest.raises(errors.InvalidConfig):
        ip_configs(parse_result({"cniVersion": "1.0.0"}), "net1")


def test_vrf_conf() -> None:
    assert (VrfConf({"vrfname": "blue"}).table, VrfConf({"vrfname": "b", "table": 9}).table) == (
        0,
        9,
    )
    for d in ({}, {"vrfname": ""}, {"vrfname": "a b"}, {"vrfname": "v", "table": -1}):
        with pytest.raises(errors.InvalidConfig):
            VrfConf(d)


# -- vrf's enslave sequence against a recording fake (the kernel here has no VRF; the
#    integration test runs it for real where one exists) -------------------------------


class _Obj:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class FakeNetlink:
    """Just enough of pycni.netlink.Netlink: a kernel that drops global IPv6 addresses
    when a link changes master (net.ipv6.conf.all.keep_addr_on_down=0)."""

    def __init__(self) -> None:
        from pycni import netlink

        self.nl = netlink
        self.eth0 = _Obj(index=2, name="eth0", master=0, kind="veth")
        self.v6 = [
            _Obj(interface=ipaddress.ip_interface("fd83::5/64"), flags=0x02, scope=0, family=6)
        ]
        self.main = [
            _Obj(dst=ipaddress.ip_network("0.0.0.0/0"), oif=2, scope=0, table=254),
            _Obj(dst=ipaddress.ip_network("10.83.0.0/24"), oif=2, scope=253, table=254),
            _Obj(dst=ipaddress.ip_network("198.51.100.0/24"), oif=3, scope=0, table=254),
        ]
        self.vrf_table: list[Any] = []
        self.calls: list[tuple[Any, ...]] = []

    def link(self, name: str) -> Any:
        return self.eth0 if name == "eth0" else None

    def link_by_index(self, index: int) -> Any:
        return None

    def addrs(self, index: int, family: int) -> list[Any]:
        return list(self.v6)

    def routes(self, family: int = 0, table: int = 254) -> list[Any]:
        return list(self.main) if table == 254 else list(self.vrf_table)

    def set_link(self, index: int, master: int | None = None) -> None:
        self.calls.append(("master", index, master))
        self.eth0.master = master
        self.v6 = []

    def add_addr(self, index: int, interface: Any, nodad: bool = False) -> None:
        self.calls.append(("addr", index, str(interface), nodad))
        self.vrf_table.append(_Obj(dst=ipaddress.ip_network(f"{interface.ip}/128")))

    def copy_route(self, r: Any, table: int) -> None:
        self.calls.append(("route", str(r.dst), table))


def test_vrf_enslave_restores_ipv6_and_copies_gateway_routes() -> None:
    from pycni.plugins.vrf import enslave

    nl = FakeNetlink()
    vrf = _Obj(index=9, name="blue", kind="vrf")
    enslave(nl, vrf, 7, "eth0")  # type: ignore[arg-type]
    assert nl.calls == [
        ("master", 2, 9),
        ("addr", 2, "fd83::5/64", True),
        ("route", "0.0.0.0/0", 7),  # scope universe on eth0: copied; link scope and
    ]  # other links' routes are not


def test_vrf_enslave_refuses_an_enslaved_interface() -> None:
    from pycni.plugins.vrf import enslave

    nl = FakeNetlink()
    nl.eth0.master = 5
    with pytest.raises(errors.InvalidConfig, match="already a master"):
        enslave(nl, _Obj(index=9, name="blue"), 7, "eth0")  # type: ignore[arg-type]
    assert nl.calls == []
