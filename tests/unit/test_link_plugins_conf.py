"""The one-link plugins' config classes and netctl's macvlan/ipvlan planning: pure,
no root. (Their kernel side is tested in tests/integration/test_{macvlan,ipvlan,vlan,
dummy,tap}.py and test_netctl_macvlan.py.)"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycni import errors, fastjson, netlink
from pycni.plugins.dummy import DummyConf
from pycni.plugins.ipvlan import IpvlanConf, _master_name
from pycni.plugins.macvlan import MacvlanConf, info_data
from pycni.plugins.tap import TapConf
from pycni.plugins.vlan import VlanConf
from pycni.result import parse_result
from pycni.runtime import netdrivers
from pycni.runtime.networks import IPAMConfig, NetworkError


def go(obj: dict[str, Any]) -> dict[str, Any]:
    """As skel decodes stdin: Go's key matching."""
    out: dict[str, Any] = fastjson.loads(fastjson.dumps(obj).encode(), go=True)
    return out


def test_macvlan_defaults_and_mac_precedence() -> None:
    c = MacvlanConf(go({}), {})
    assert (c.master, c.mode, c.mtu, c.link_in_container, c.mac, c.ipam_type) == (
        "", "bridge", 0, False, "", "",
    )  # fmt: skip
    d = go({"mac": "02:00:00:00:00:01", "runtimeConfig": {"mac": "02:00:00:00:00:03"}})
    assert MacvlanConf(d, {"MAC": "02:00:00:00:00:02"}).mac == "02:00:00:00:00:03"
    assert MacvlanConf(go({"mac": "02:00:00:00:00:01"}), {"MAC": "02:00:00:00:00:02"}).mac == (
        "02:00:00:00:00:02"
    )
    assert MacvlanConf(go({"mac": "02:00:00:00:00:0A"}), {}).mac == "02:00:00:00:00:0a"
    # a DEL never reads the MAC: a bad one cannot keep it from releasing
    assert MacvlanConf(go({"mac": "junk"}), {}, for_del=True).mac == ""
    # Go's case-insensitive keys
    assert MacvlanConf(
        go({"Master": "eth9", "MODE": "vepa", "LinkInContainer": True}), {}
    ).mode == ("vepa")


def test_macvlan_info_data_is_the_kernel_encoding() -> None:
    data = netlink.parse_attrs(info_data(MacvlanConf(go({"mode": "private", "bcqueuelen": 9}), {})))
    assert data[netlink.IFLA_MACVLAN_MODE] == (1).to_bytes(4, "little")
    assert data[netlink.IFLA_MACVLAN_BC_QUEUE_LEN] == (9).to_bytes(4, "little")


@pytest.mark.parametrize(
    ("cls", "d", "needle"),
    [
        (MacvlanConf, {"mode": "l2"}, "unknown macvlan mode"),
        (MacvlanConf, {"mtu": 70000}, "'mtu'"),
        (MacvlanConf, {"master": "bad name"}, "'master' is not a valid interface name"),
        (IpvlanConf, {"mode": "bridge"}, "unknown ipvlan mode"),
        (VlanConf, {}, '"master" field is required'),
        (VlanConf, {"master": "eth0", "vlanId": 4095}, "invalid VLAN ID 4095"),
        (VlanConf, {"master": "eth0", "vlanId": True}, "'vlanId'"),
        (DummyConf, {}, "dummy interface requires an IPAM configuration"),
        (TapConf, {"owner": -1}, "'owner'"),
        (TapConf, {"mtu": 10}, "'mtu' must be 0"),
    ],
)
def test_bad_keys(cls: Any, d: dict[str, Any], needle: str) -> None:
    with pytest.raises(errors.InvalidConfig) as info:
        cls(go(d), {}) if cls in (MacvlanConf, TapConf) else cls(go(d))
    assert needle in str(info.value)


def test_ipvlan_master_from_a_chained_result() -> None:
    one = parse_result({"cniVersion": "1.0.0", "interfaces": [{"name": "eth5"}]})
    two = parse_result({"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}]})
    assert _master_name(IpvlanConf(go({})), None) == ""
    assert _master_name(IpvlanConf(go({})), one) == "eth5"
    assert _master_name(IpvlanConf(go({"master": "eth1"})), two) == "eth1"
    with pytest.raises(errors.InvalidConfig, match="chained master failure"):
        _master_name(IpvlanConf(go({})), two)


def test_tap_owner_group_and_selinux_spelling() -> None:
    c = TapConf(go({"owner": 0, "group": 100, "selinuxcontext": "x_t", "multiQueue": True}), {})
    assert (c.owner, c.group, c.selinux_context, c.multi_queue) == (0, 100, "x_t", True)
    assert TapConf(go({}), {}).owner is None


# -- netctl's drivers ----------------------------------------------------------------------


def test_docker_options() -> None:
    o = netdrivers.parse_options("macvlan", {"parent": "eth0"})
    assert (o.parent, o.mode, o.mtu) == ("eth0", "bridge", None)
    o = netdrivers.parse_options("ipvlan", {"parent": "eth0", "ipvlan_mode": "l3s"}, 1400)
    assert (o.mode, o.mtu) == ("l3s", 1400)
    o = netdrivers.parse_options("ipvlan", {"parent": "e", "ipvlan_flag": "bridge"})
    assert o.mode == "l2"
    for driver, opts, needle in (
        ("macvlan", {}, "needs a parent interface"),
        ("macvlan", {"parent": "eth0", "ipvlan_mode": "l2"}, 'unknown option "ipvlan_mode"'),
        ("macvlan", {"parent": "eth0", "macvlan_mode": "l3"}, 'mode "l3" is not valid'),
        ("ipvlan", {"parent": "eth0", "ipvlan_flag": "vepa"}, 'flag "vepa" is not supported'),
        ("ipvlan", {"parent": "x" * 16}, "an interface name has 1-15 characters"),
    ):
        with pytest.raises(NetworkError, match=needle):
            netdrivers.parse_options(driver, opts)
    with pytest.raises(NetworkError, match="conflicting MTU"):
        netdrivers.parse_options(
            "macvlan", {"parent": "e", "com.docker.network.driver.mtu": "1500"}, 1400
        )


def test_conflist_shape() -> None:
    configs = [
        IPAMConfig(ipaddress.ip_network("192.168.5.0/24"), ipaddress.ip_address("192.168.5.254")),
        IPAMConfig(ipaddress.ip_network("fd00:5::/64"), ipaddress.ip_address("fd00:5::1")),
    ]
    opts = netdrivers.SublinkOptions("eth0", "private", 1400)
    conf = netdrivers.conflist("lan", "macvlan", "f" * 64, "now", configs, opts, internal=False,
                               ipv6=True, ipam_dir="/x", labels={"a": "b"},
                               options={"parent": "eth0"}, created_parent=False)  # fmt: skip
    [plugin] = conf["plugins"]
    assert plugin == {
        "type": "macvlan",
        "master": "eth0",
        "mode": "private",
        "mtu": 1400,
        "capabilities": {"mac": True},
        "ipam": {
            "type": "host-local",
            "ranges": [
                [{"subnet": "192.168.5.0/24", "gateway": "192.168.5.254"}],
                [{"subnet": "fd00:5::/64", "gateway": "fd00:5::1"}],
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "192.168.5.254"},
                {"dst": "::/0", "gw": "fd00:5::1"},
            ],
            "dataDir": "/x",
        },
    }
    assert conf["netctl"]["driver"] == "macvlan" and conf["netctl"]["parent"] == "eth0"
    internal = netdrivers.conflist("lan", "ipvlan", "f" * 64, "now", configs[:1], opts,
                                   internal=True, ipv6=False, ipam_dir="/x", labels={},
                                   options={}, created_parent=True)  # fmt: skip
    assert "routes" not in internal["plugins"][0]["ipam"]
    assert "capabilities" not in internal["plugins"][0]


# -- the rtnetlink message of each kind (what the kernel would get; the kinds this
# kernel lacks are checked here byte by byte, their refusal in the integration tests) --


def _sent(kind: str, **kw: Any) -> dict[int, Any]:
    nl = netlink.Netlink.__new__(netlink.Netlink)
    sent: list[tuple[int, int, bytes]] = []
    nl.request = lambda t, f, body, what: sent.append((t, f, body))  # type: ignore[method-assign]
    nl.add_sublink("eth0", kind, **kw)
    [(msg_type, flags, body)] = sent
    assert msg_type == netlink.RTM_NEWLINK
    assert flags == netlink.NLM_F_CREATE | netlink.NLM_F_EXCL
    attrs = netlink.parse_attrs(body, 16)
    info = netlink.parse_attrs(attrs[netlink.IFLA_LINKINFO])
    return {
        "name": attrs[netlink.IFLA_IFNAME],
        "parent": attrs.get(netlink.IFLA_LINK),
        "netns": attrs.get(netlink.IFLA_NET_NS_FD),
        "kind": info[netlink.IFLA_INFO_KIND],
        "data": netlink.parse_attrs(info.get(netlink.IFLA_INFO_DATA, b"")),
    }


def test_sublink_messages() -> None:
    u32 = lambda v: v.to_bytes(4, "little")  # noqa: E731
    u16 = lambda v: v.to_bytes(2, "little")  # noqa: E731
    m = _sent("ipvlan", parent=7, netns_fd=9,
              info_data=netlink.nla_u16(netlink.IFLA_IPVLAN_MODE, netlink.IPVLAN_MODES["l3s"]))  # fmt: skip
    assert m == {"name": b"eth0\0", "parent": u32(7), "netns": u32(9), "kind": b"ipvlan\0",
                 "data": {netlink.IFLA_IPVLAN_MODE: u16(2)}}  # fmt: skip
    m = _sent("vlan", parent=3, info_data=netlink.nla_u16(netlink.IFLA_VLAN_ID, 100))
    assert m["kind"] == b"vlan\0" and m["data"] == {netlink.IFLA_VLAN_ID: u16(100)}
    assert m["netns"] is None
    m = _sent("dummy")
    assert m["kind"] == b"dummy\0" and m["parent"] is None and m["data"] == {}
