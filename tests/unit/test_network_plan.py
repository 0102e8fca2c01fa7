"""Network planning without I/O: subnet picking, range splitting, validation messages,
conflist shape, and that host-local accepts every ranges list we write."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycni.ipam import config as ipam_config
from pycni.runtime import libcni, networks
from pycni.runtime.daemon_config import DaemonConfig
from pycni.runtime.networks import (
    BridgeOptions,
    IPAMConfig,
    Network,
    NetworkError,
    host_local_ranges,
    network_conflist,
    parse_options,
    pick_subnet,
    plan_ipam,
    split_range,
    ula_subnet,
    validate_name,
)

net = ipaddress.ip_network
ip = ipaddress.ip_address
DOCKER_POOLS = DaemonConfig().pools


# -- picking a subnet ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        ([], "172.17.0.0/16"),
        (["172.17.0.0/16"], "172.18.0.0/16"),  # the default bridge's bip
        (["172.17.0.0/16", "172.18.0.0/16"], "172.19.0.0/16"),
        (["172.17.0.0/16", "172.18.5.0/24"], "172.19.0.0/16"),  # a route inside a block
        (["172.17.0.0/16", "172.16.0.0/12"], "192.168.0.0/20"),  # a route over all of them
        (["172.16.0.0/12", "192.168.0.0/20", "192.168.32.0/24"], "192.168.16.0/20"),
        (["0.0.0.0/1", "128.0.0.0/1"], None),
        (["fd00::/8"], "172.17.0.0/16"),  # other family: irrelevant
    ],
)
def test_pick_subnet_docker_pools(used: list[str], expected: str | None) -> None:
    picked = pick_subnet(DOCKER_POOLS, [net(u) for u in used])
    assert (str(picked) if picked else None) == expected


def test_pick_subnet_big_pool_is_fast_and_skips_ranges() -> None:
    pools = [(net("10.0.0.0/8"), 24)]
    used = [net(f"10.{a}.0.0/16") for a in range(0, 255)]
    assert pick_subnet(pools, used) == net("10.255.0.0/24")
    assert pick_subnet(pools, [*used, net("10.255.0.0/17")]) == net("10.255.128.0/24")


def _naive(pools: list[tuple[ipaddress.IPv4Network, int]], used: list[ipaddress.IPv4Network]):
    for base, size in pools:
        for cand in base.subnets(new_prefix=size):
            if not any(cand.overlaps(u) for u in used):
                return cand
    return None


_v4net = st.builds(
    lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
    st.integers(0, 2**32 - 1).map(lambda x: (x & 0x0FFFFFFF) | 0x0A000000),  # inside 10/8
    st.integers(8, 30),
)


@settings(max_examples=300, deadline=None)
@given(used=st.lists(_v4net, max_size=8), size=st.integers(12, 20))
def test_pick_subnet_matches_the_naive_search(used, size) -> None:
    pools = [(net("10.0.0.0/8"), size)]
    assert pick_subnet(pools, used) == _naive(pools, used)


def test_ula_subnet_is_a_stable_unique_local_64() -> None:
    a = ula_subnet("ab" * 32, [])
    assert a is not None and a.prefixlen == 64 and a.subnet_of(net("fd00::/8"))
    assert ula_subnet("ab" * 32, []) == a
    assert ula_subnet("cd" * 32, []) != a
    nxt = ula_subnet("ab" * 32, [a])
    assert nxt is not None and nxt != a and nxt.supernet(16) == a.supernet(16)


# -- ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "holes", "pieces"),
    [
        ("10.0.0.1", "10.0.0.254", [], [("10.0.0.1", "10.0.0.254")]),
        (
            "10.0.0.1",
            "10.0.0.254",
            ["10.0.0.5"],
            [("10.0.0.1", "10.0.0.4"), ("10.0.0.6", "10.0.0.254")],
        ),
        ("10.0.0.1", "10.0.0.9", ["10.0.0.1", "10.0.0.9"], [("10.0.0.2", "10.0.0.8")]),
        (
            "10.0.0.1",
            "10.0.0.9",
            ["10.0.0.5", "10.0.0.6"],
            [("10.0.0.1", "10.0.0.4"), ("10.0.0.7", "10.0.0.9")],
        ),
        ("10.0.0.1", "10.0.0.3", ["10.0.0.1", "10.0.0.2", "10.0.0.3"], []),
        (
            "10.0.0.1",
            "10.0.0.9",
            ["10.0.1.5", "10.0.0.5", "10.0.0.5"],
            [("10.0.0.1", "10.0.0.4"), ("10.0.0.6", "10.0.0.9")],
        ),
        (
            "fd00::1",
            "fd00::ffff",
            ["fd00::10"],
            [("fd00::1", "fd00::f"), ("fd00::11", "fd00::ffff")],
        ),
    ],
)
def test_split_range(start, end, holes, pieces) -> None:
    got = split_range(ip(start), ip(end), [ip(h) for h in holes])
    assert [(str(a), str(b)) for a, b in got] == pieces


def test_host_local_ranges_cut_aux_addresses_and_honour_ip_range() -> None:
    c = IPAMConfig(
        net("172.19.0.0/24"), ip("172.19.0.1"), net("172.19.0.0/25"), {"x": ip("172.19.0.5")}
    )
    assert host_local_ranges(c) == [
        {
            "subnet": "172.19.0.0/24",
            "gateway": "172.19.0.1",
            "rangeStart": "172.19.0.1",
            "rangeEnd": "172.19.0.4",
        },
        {
            "subnet": "172.19.0.0/24",
            "gateway": "172.19.0.1",
            "rangeStart": "172.19.0.6",
            "rangeEnd": "172.19.0.127",
        },
    ]
    plain = IPAMConfig(net("10.5.0.0/16"), ip("10.5.0.1"))
    assert host_local_ranges(plain) == [{"subnet": "10.5.0.0/16", "gateway": "10.5.0.1"}]
    # An ip-range at the top of a /24 stops before the broadcast address.
    top = IPAMConfig(net("10.5.0.0/24"), ip("10.5.0.1"), net("10.5.0.128/25"))
    assert host_local_ranges(top)[0]["rangeEnd"] == "10.5.0.254"


def test_a_piece_holding_only_the_gateway_is_dropped() -> None:
    c = IPAMConfig(net("10.9.0.0/24"), ip("10.9.0.1"), None, {"a": ip("10.9.0.2")})
    assert [r.get("rangeStart") for r in host_local_ranges(c)] == ["10.9.0.3"]


# -- validation messages ------------------------------------------------------------------

BAD_IPAM = [
    (dict(subnets=["172.26.0.0/33"]), "invalid subnet 172.26.0.0/33: invalid CIDR address"),
    (dict(subnets=["nonsense"]), "invalid subnet nonsense: invalid CIDR address"),
    (dict(subnets=["10.0.0.0"]), "invalid subnet 10.0.0.0: invalid CIDR address"),
    (dict(subnets=["10.0.0.1/24"]), "invalid subnet 10.0.0.1/24: it should be 10.0.0.0/24"),
    (dict(subnets=["10.0.0.0/31"]), "invalid subnet 10.0.0.0/31: too small"),
    (
        dict(subnets=["10.0.0.0/24"], gateways=["10.0.1.1"]),
        "no matching subnet for gateway 10.0.1.1",
    ),
    (dict(subnets=["10.0.0.0/24"], gateways=["fd00::1"]), "no matching subnet for gateway fd00::1"),
    (
        dict(subnets=["10.0.0.0/24"], gateways=["bogus"]),
        "invalid gateway bogus: invalid IP address",
    ),
    (
        dict(subnets=["10.0.0.0/24"], gateways=["10.0.0.1", "10.0.0.2"]),
        "every ip-range or gateway must have a corresponding subnet",
    ),
    (
        dict(subnets=["10.0.0.0/16", "10.1.0.0/16"], gateways=["10.0.5.1", "10.0.5.2"]),
        "cannot configure multiple gateways (10.0.5.2, 10.0.5.1) for the same subnet (10.0.0.0/16)",
    ),
    (
        dict(subnets=["10.0.0.0/24"], gateways=["10.0.0.0"]),
        "invalid gateway 10.0.0.0: it is the network or broadcast",
    ),
    (dict(subnets=["10.0.0.0/24"], gateways=["10.0.0.255"]), "invalid gateway 10.0.0.255"),
    (
        dict(subnets=["10.0.0.0/24"], ip_ranges=["10.1.0.0/24"]),
        "no matching subnet for range 10.1.0.0/24",
    ),
    (
        dict(subnets=["10.1.0.0/24"], ip_ranges=["10.1.0.0/16"]),
        "no matching subnet for range 10.1.0.0/16",
    ),
    (
        dict(subnets=["10.1.0.0/24"], ip_ranges=["10.1.0.0/33"]),
        "invalid ip-range 10.1.0.0/33: invalid CIDR address",
    ),
    (
        dict(subnets=["10.1.0.0/24"], ip_ranges=["10.1.0.7/25"]),
        "invalid ip-range 10.1.0.7/25: it should be 10.1.0.0/25",
    ),
    (
        dict(subnets=["10.1.0.0/16", "10.2.0.0/16"], ip_ranges=["10.1.0.0/24", "10.1.1.0/24"]),
        "cannot configure multiple ranges (10.1.1.0/24, 10.1.0.0/24) on the same subnet (10.1.0.0/16)",
    ),
    (
        dict(subnets=["10.0.0.0/16", "10.0.1.0/24"]),
        "multiple overlapping subnet configuration is not supported",
    ),
    (
        dict(subnets=["10.0.0.0/24"], aux_addresses={"a": "10.9.0.1"}),
        "no matching subnet for aux-address 10.9.0.1",
    ),
    (
        dict(subnets=["10.0.0.0/24"], aux_addresses={"a": "x"}),
        "invalid aux-address a= x: invalid IP address",
    ),
    (
        dict(subnets=["10.0.0.0/24"], aux_addresses={"gw": "10.0.0.1"}),
        "failed to allocate secondary ip address (gw:10.0.0.1): Address already in use",
    ),
    (
        dict(subnets=["10.0.0.0/30"], aux_addresses={"a": "10.0.0.2"}),
        "no addresses left to allocate in 10.0.0.0/30",
    ),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_IPAM)
def test_ipam_validation_messages(kwargs: dict, message: str) -> None:
    kwargs.setdefault("subnets", [])
    with pytest.raises(NetworkError) as info:
        plan_ipam(**kwargs)
    assert message in str(info.value)


def test_ipam_pairs_gateways_ranges_and_aux_with_their_subnets() -> None:
    configs = plan_ipam(
        ["10.1.0.0/16", "fd00:1::/64"],
        ["fd00:1::fe", "10.1.0.254"],
        ["10.1.2.0/24"],
        {"printer": "10.1.2.7", "v6": "fd00:1::7"},
    )
    assert [(str(c.subnet), str(c.gateway), str(c.ip_range)) for c in configs] == [
        ("10.1.0.0/16", "10.1.0.254", "10.1.2.0/24"),
        ("fd00:1::/64", "fd00:1::fe", "None"),
    ]
    assert configs[0].aux_addresses == {"printer": ip("10.1.2.7")}
    assert configs[1].aux_addresses == {"v6": ip("fd00:1::7")}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bridge", "bridge is a pre-defined network and cannot be created"),
        ("host", "host is a pre-defined network and cannot be created"),
        ("none", "none is a pre-defined network and cannot be created"),
        ("", 'invalid network name ""'),
        ("-x", 'invalid network name "-x"'),
        ("a/b", 'invalid network name "a/b"'),
        ("../etc", 'invalid network name "../etc"'),
        ("a b", 'invalid network name "a b"'),
        ("a\nb", "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ("net;drop", "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ("é", "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ("a" * 129, "longer than 128"),
    ],
)
def test_bad_names(name: str, message: str) -> None:
    with pytest.raises(NetworkError) as info:
        validate_name(name)
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["a", "mybr0", "My_Net.2-x", "0", "a" * 128])
def test_good_names(name: str) -> None:
    validate_name(name)


@pytest.mark.parametrize(
    ("options", "mtu", "message"),
    [
        ({"foo": "bar"}, None, 'unknown option "foo" for driver bridge'),
        ({networks.OPT_ICC: "yes"}, None, 'parsing "yes": invalid syntax'),
        ({networks.OPT_MASQ: ""}, None, "enable_ip_masquerade value"),
        ({networks.OPT_BRIDGE_NAME: "a" * 16}, None, "an interface name has 1-15 characters"),
        ({networks.OPT_BRIDGE_NAME: "br 0"}, None, "an interface name"),
        ({networks.OPT_BRIDGE_NAME: "a/b"}, None, "an interface name"),
        ({networks.OPT_HOST_BINDING: "localhost"}, None, "not an IP address"),
        ({networks.OPT_MTU: "big"}, None, "not a number"),
        ({networks.OPT_MTU: "20"}, None, "between 68 and 65535"),
        ({}, 70000, "between 68 and 65535"),
        ({networks.OPT_MTU: "1400"}, 1500, "conflicting MTU"),
    ],
)
def test_option_messages(options: dict, mtu: int | None, message: str) -> None:
    with pytest.raises(NetworkError) as info:
        parse_options(options, mtu)
    assert message in str(info.value)


def test_options_parse_like_docker() -> None:
    opts = parse_options(
        {
            networks.OPT_BRIDGE_NAME: "br*;{x}",
            networks.OPT_ICC: "False",
            networks.OPT_MASQ: "0",
            networks.OPT_HOST_BINDING: "127.0.0.1",
            networks.OPT_MTU: "1400",
        },
        1400,
    )
    assert opts == BridgeOptions("br*;{x}", False, False, "127.0.0.1", 1400)


# -- conflists ----------------------------------------------------------------------------


def _conflist(internal: bool = False, opts: BridgeOptions | None = None) -> dict:
    configs = plan_ipam(["172.26.0.0/16", "fd00:26::/64"], ["172.26.0.1"], [], {"r": "172.26.0.9"})
    return network_conflist(
        "mybr0",
        "0123456789ab" + "c" * 52,
        "2025-01-01T00:00:00.000000Z",
        configs,
        opts or BridgeOptions(),
        internal=internal,
        ipv6=True,
        ipam_dir="/var/lib/netctl/networks",
        labels={"team": "a"},
        options={},
    )


def test_conflist_shape() -> None:
    c = _conflist()
    assert list(c) == ["cniVersion", "cniVersions", "name", "plugins", "netctl"]
    assert c["cniVersion"] == "1.0.0" and c["cniVersions"] == ["1.0.0", "1.1.0"]
    assert c["name"] == "mybr0"
    bridge, portmap, firewall, isolation = c["plugins"]
    assert bridge == {
        "type": "bridge",
        "bridge": "br-0123456789ab",
        "isGateway": True,
        "isDefaultGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "portIsolation": False,
        "macspoofchk": True,
        "ipam": {
            "type": "host-local",
            "ranges": [
                [
                    {
                        "subnet": "172.26.0.0/16",
                        "gateway": "172.26.0.1",
                        "rangeStart": "172.26.0.1",
                        "rangeEnd": "172.26.0.8",
                    },
                    {
                        "subnet": "172.26.0.0/16",
                        "gateway": "172.26.0.1",
                        "rangeStart": "172.26.0.10",
                        "rangeEnd": "172.26.255.254",
                    },
                ],
                [{"subnet": "fd00:26::/64", "gateway": "fd00:26::1"}],
            ],
            "dataDir": "/var/lib/netctl/networks",
        },
    }
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    assert firewall == {"type": "firewall"}
    assert isolation == {"type": "isolation", "internal": False, "icc": True}
    meta = c["netctl"]
    assert meta["id"].startswith("0123456789ab") and meta["driver"] == "bridge"
    assert meta["subnets"] == ["172.26.0.0/16", "fd00:26::/64"]
    assert meta["gateways"] == ["172.26.0.1", "fd00:26::1"]
    assert meta["auxAddresses"] == {"r": "172.26.0.9"} and meta["labels"] == {"team": "a"}


def test_internal_and_options_change_the_chain() -> None:
    c = _conflist(internal=True, opts=BridgeOptions("mine0", False, False, "127.0.0.1", 1400))
    bridge = c["plugins"][0]
    assert bridge["bridge"] == "mine0" and bridge["mtu"] == 1400
    assert bridge["isDefaultGateway"] is False and bridge["ipMasq"] is False
    assert bridge["portIsolation"] is True
    assert c["plugins"][3] == {"type": "isolation", "internal": True, "icc": False}
    assert c["netctl"]["hostBindingIPv4"] == "127.0.0.1"
    # masquerade stays on for a normal network unless the option turns it off
    assert (
        _conflist(opts=BridgeOptions(enable_ip_masquerade=False))["plugins"][0]["ipMasq"] is False
    )


def test_host_local_accepts_what_we_write() -> None:
    """The ranges go through host-local's own validation (overlaps, gateways, families)."""
    c = _conflist()
    conf = {"name": c["name"], **c["plugins"][0]}
    sets = ipam_config.range_sets(conf, conf["ipam"])
    assert [len(s.ranges) for s in sets] == [2, 1]
    assert not any(s.is_reserved(ip("172.26.0.2")) for s in sets)
    assert all(s.range_for(ip("172.26.0.9")) is None for s in sets)  # the aux address


def test_network_view_round_trips_the_conflist() -> None:
    c = _conflist()
    raw = json.dumps(c).encode()
    n = Network.from_conflist(libcni.conflist_from_bytes(raw, "/x/mybr0.conflist"))
    assert (n.name, n.kind, n.driver, n.bridge, n.managed) == (
        "mybr0",
        "bridge",
        "bridge",
        "br-0123456789ab",
        True,
    )
    assert [str(s) for s in n.subnets] == ["172.26.0.0/16", "fd00:26::/64"]
    assert [str(g) for g in n.gateways] == ["172.26.0.1", "fd00:26::1"]
    assert n.ipam[0].aux_addresses == {"r": ip("172.26.0.9")} and n.ipam[1].aux_addresses == {}
    assert n.ipv6 and not n.internal and n.short_id == "0123456789ab"
    assert n.config_file == "/x/mybr0.conflist"


def test_network_view_of_a_foreign_conflist() -> None:
    raw = json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "podman",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni-podman0",
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                    },
                },
                {"type": "portmap"},
            ],
        }
    ).encode()
    n = Network.from_conflist(libcni.conflist_from_bytes(raw, ""))
    assert (n.kind, n.driver, n.bridge, n.managed) == ("bridge", "bridge", "cni-podman0", False)
    assert n.subnets == [net("10.88.0.0/16")] and len(n.id) == 64
    legacy = json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "m",
            "plugins": [
                {"type": "macvlan", "ipam": {"type": "host-local", "subnet": "10.3.0.0/24"}}
            ],
        }
    ).encode()
    m = Network.from_conflist(libcni.conflist_from_bytes(legacy, ""))
    assert (m.kind, m.driver, m.bridge) == ("cni", "macvlan", "")
    assert m.subnets == [net("10.3.0.0/24")] and m.gateways == [ip("10.3.0.1")]


def test_builtin_modes() -> None:
    host, none = Network.builtin_mode("host"), Network.builtin_mode("none")
    assert (host.kind, host.driver, none.kind, none.driver) == ("host", "host", "none", "null")
    assert host.conflist is None and host.builtin and len(host.id) == 64
    assert host.id == Network.builtin_mode("host").id != none.id


def test_gateway_mode_options_allow_direct_routing_per_family() -> None:
    from pycni.runtime.networks import NetworkError, _chain, parse_options

    v4 = "com.docker.network.bridge.gateway_mode_ipv4"
    v6 = "com.docker.network.bridge.gateway_mode_ipv6"
    assert parse_options({}).direct_routing == frozenset()
    assert parse_options({v4: "nat"}).direct_routing == frozenset()
    assert parse_options({v4: "routed"}).direct_routing == frozenset({4})
    assert parse_options({v4: "routed", v6: "nat-unprotected"}).direct_routing == frozenset({4, 6})
    with pytest.raises(NetworkError, match="valid modes: nat, nat-unprotected, routed"):
        parse_options({v6: "isolated"})
    isolation = _chain({"type": "bridge"}, False, frozenset({6}))[3]
    assert isolation == {
        "type": "isolation",
        "internal": False,
        "icc": True,
        "directRouting6": True,
    }
