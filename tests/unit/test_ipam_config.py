"""host-local configuration, pure: every validation message, range-set assembly order,
requested IPs from all three sources, routes, DNS and resolv.conf parsing."""

from __future__ import annotations

import pytest

from pycni import errors, skel
from pycni.ipam import config, host_local


def cmd(ipam: dict | None, *, cni_args: str = "", version: str = "1.0.0", **top) -> skel.CmdArgs:
    conf = {"cniVersion": version, "name": "net1", "type": "bridge", **top}
    if ipam is not None:
        conf["ipam"] = {"type": "host-local", "dataDir": "/tmp/x", **ipam}
    return skel.CmdArgs(
        "ADD", "c1", "/proc/self/ns/net", "eth0", cni_args, "/opt/cni/bin", conf=conf
    )


def load(ipam: dict | None, **kw) -> host_local.HostLocalConf:
    return host_local.load_conf(cmd(ipam, **kw))


def failure(ipam: dict | None, **kw) -> errors.CniError:
    with pytest.raises(errors.CniError) as exc:
        load(ipam, **kw)
    return exc.value


def ranges(*items: dict) -> dict:
    return {"ranges": [list(items)]}


# -- range validation: (ipam, code, message, words the fix hint must contain) ----------

INVALID = [
    (None, "IPAM config missing 'ipam' key", ""),
    ({}, "no IP ranges specified", "ipam.ranges"),
    ({"ranges": []}, "no IP ranges specified", "ipam.subnet"),
    ({"ranges": [[]]}, "ipam.ranges[0] is an empty range set", ""),
    ({"ranges": {"subnet": "10.1.0.0/24"}}, "ipam: 'ranges' must be a list", ""),
    ({"ranges": [{"subnet": "10.1.0.0/24"}]}, "ipam.ranges[0] must be a list of ranges", ""),
    (ranges({"rangeStart": "10.1.0.5"}), "ipam.ranges[0][0].subnet is missing", "subnet"),
    (ranges({"subnet": 5}), "ipam.ranges[0][0]: 'subnet' must be a string", ""),
    (ranges({"subnet": "10.1.0.0"}), "ipam.ranges[0][0].subnet '10.1.0.0' is not in CIDR", ""),
    (
        ranges({"subnet": "10.1.0.0/33"}),
        "ipam.ranges[0][0].subnet '10.1.0.0/33' is not in CIDR",
        "",
    ),
    (ranges({"subnet": "nonsense/8"}), "ipam.ranges[0][0].subnet 'nonsense/8' is not in CIDR", ""),
    (
        ranges({"subnet": "10.1.0.5/24"}),
        "ipam.ranges[0][0].subnet 10.1.0.5/24 has host bits set",
        "network address is 10.1.0.0; write 10.1.0.0/24",
    ),
    (
        ranges({"subnet": "fd00::1/64"}),
        "ipam.ranges[0][0].subnet fd00::1/64 has host bits set",
        "write fd00::/64",
    ),
    (ranges({"subnet": "10.1.0.0/31"}), "ipam.ranges[0][0].subnet 10.1.0.0/31 is too small", "/30"),
    (ranges({"subnet": "10.1.0.1/32"}), "ipam.ranges[0][0].subnet 10.1.0.1/32 is too small", "/30"),
    (ranges({"subnet": "fd00::/127"}), "ipam.ranges[0][0].subnet fd00::/127 is too small", "/126"),
    (
        ranges({"subnet": "fd00::1/128"}),
        "ipam.ranges[0][0].subnet fd00::1/128 is too small",
        "/126",
    ),
    (
        ranges({"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.5"}),
        "ipam.ranges[0][0].rangeStart 10.2.0.5 not in network 10.1.0.0/24",
        "10.1.0.1",
    ),
    (
        ranges({"subnet": "10.1.0.0/24", "rangeEnd": "10.1.1.0"}),
        "ipam.ranges[0][0].rangeEnd 10.1.1.0 not in network 10.1.0.0/24",
        "10.1.0.254",
    ),
    (
        ranges({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.50", "rangeEnd": "10.1.0.20"}),
        "ipam.ranges[0][0].rangeStart 10.1.0.50 is after rangeEnd 10.1.0.20",
        "swap",
    ),
    (
        ranges({"subnet": "10.1.0.0/24", "rangeStart": "fd00::1"}),
        "ipam.ranges[0][0].rangeStart fd00::1 is not an IPv4 address like subnet 10.1.0.0/24",
        "",
    ),
    (
        ranges({"subnet": "fd00::/64", "gateway": "10.1.0.1"}),
        "ipam.ranges[0][0].gateway 10.1.0.1 is not an IPv6 address like subnet fd00::/64",
        "",
    ),
    (
        ranges({"subnet": "10.1.0.0/24", "gateway": "10.1.0.300"}),
        "ipam.ranges[0][0].gateway '10.1.0.300' is not an IP address",
        "",
    ),
    (
        ranges({"subnet": "fe80::/64", "gateway": "fe80::1%eth0"}),
        "ipam.ranges[0][0].gateway 'fe80::1%eth0' is not an IP address",
        "",
    ),
    (
        ranges({"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}),
        "ipam.ranges[0] mixes IPv4 and IPv6 ranges (10.1.0.0/24 and fd00::/64)",
        "own range set",
    ),
    (
        ranges(
            {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.100"},
            {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.100", "rangeEnd": "10.1.0.200"},
        ),
        "ipam.ranges[0]: subnets 10.1.0.10-10.1.0.100 and 10.1.0.100-10.1.0.200 overlap",
        "ipam.ranges[0][0] and ipam.ranges[0][1]",
    ),
    (
        {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/16"}]]},
        "range set 0 overlaps with 1",
        "ipam.ranges[0] (10.1.0.1-10.1.0.254) and ipam.ranges[1] (10.1.0.1-10.1.255.254)",
    ),
    (
        {"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.1.0.128/25"}]]},
        "range set 0 overlaps with 1",
        "ipam (10.1.0.1-10.1.0.254) and ipam.ranges[0] (10.1.0.129-10.1.0.254)",
    ),
    ({"subnet": "10.1.0.0/31"}, "ipam.subnet 10.1.0.0/31 is too small to allocate from", ""),
    (
        {"subnet": "10.1.0.0/24", "rangeEnd": "10.9.0.1"},
        "ipam.rangeEnd 10.9.0.1 not in network",
        "",
    ),
    (
        {**ranges({"subnet": "10.1.0.0/24"}), "dataDir": "relative/dir"},
        "ipam.dataDir 'relative/dir' is not an absolute path",
        "/var/lib/cni/networks",
    ),
    ({**ranges({"subnet": "10.1.0.0/24"}), "dataDir": 7}, "ipam: 'dataDir' must be a string", ""),
    (
        {**ranges({"subnet": "10.1.0.0/24"}), "routes": [{"gw": "10.1.0.1"}]},
        "ipam.routes[0].dst is missing",
        "0.0.0.0/0",
    ),
    (
        {**ranges({"subnet": "10.1.0.0/24"}), "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]},
        "ipam.routes[0].gw fd00::1 is not of the same family as dst 0.0.0.0/0",
        "",
    ),
    (
        {**ranges({"subnet": "10.1.0.0/24"}), "routes": [{"dst": "0.0.0.0/0", "mtu": "big"}]},
        "ipam.routes[0].mtu must be a non-negative integer",
        "",
    ),
    (
        {**ranges({"subnet": "10.1.0.0/24"}), "routes": "0.0.0.0/0"},
        "ipam: 'routes' must be a list",
        "",
    ),
    ({**ranges({"subnet": "10.1.0.0/24"}), "resolvConf": ["x"]}, "ipam: 'resolvConf' must be", ""),
]


@pytest.mark.parametrize(("ipam", "msg", "hint"), INVALID, ids=[m for _i, m, _h in INVALID])
def test_invalid_config_names_the_key(ipam, msg, hint) -> None:
    err = failure(ipam)
    assert err.code == 7
    assert err.msg.startswith(msg), err.msg
    assert hint in err.details, err.details


def test_ipam_not_an_object() -> None:
    conf = cmd(None)
    conf.conf["ipam"] = "host-local"
    with pytest.raises(errors.InvalidConfig, match="ipam must be an object"):
        host_local.load_conf(conf)


def test_runtime_ip_ranges_errors_name_runtime_config() -> None:
    err = failure(
        ranges({"subnet": "10.1.0.0/24"}),
        runtimeConfig={"ipRanges": [[{"subnet": "10.2.0.0/31"}]]},
    )
    assert err.msg.startswith("runtimeConfig.ipRanges[0][0].subnet 10.2.0.0/31 is too small")


def test_more_than_one_address_per_family_needs_0_3_0() -> None:
    two_v4 = {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}
    for version in ("0.1.0", "0.2.0"):
        err = failure(two_v4, version=version)
        assert err.code == 7
        assert err.msg == f"CNI version {version} does not support more than 1 address per family"
    load(two_v4, version="0.3.0")
    load({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]}, version="0.2.0")


# -- assembly of range sets ------------------------------------------------------------


def test_order_runtime_ranges_then_legacy_then_ranges() -> None:
    c = load(
        {"subnet": "10.2.0.0/24", "gateway": "10.2.0.254", "ranges": [[{"subnet": "10.3.0.0/24"}]]},
        runtimeConfig={"ipRanges": [[{"subnet": "10.1.0.0/24"}]]},
    )
    assert [str(rs) for rs in c.range_sets] == [
        "10.1.0.1-10.1.0.254",
        "10.2.0.1-10.2.0.254",
        "10.3.0.1-10.3.0.254",
    ]
    assert [rs.where for rs in c.range_sets] == [
        "runtimeConfig.ipRanges[0]",
        "ipam",
        "ipam.ranges[0]",
    ]
    assert str(c.range_sets[1].ranges[0].gateway) == "10.2.0.254"
    assert c.data_dir == "/tmp/x" and c.name == "net1"


def test_defaults() -> None:
    conf = cmd(ranges({"subnet": "10.1.0.0/24"}))
    del conf.conf["ipam"]["dataDir"]
    c = host_local.load_conf(conf)
    assert c.data_dir == "/var/lib/cni/networks"
    assert c.routes == [] and c.requested == [] and c.resolv_conf is None


def test_explicit_bounds_may_include_network_and_broadcast() -> None:
    c = load(ranges({"subnet": "10.1.0.0/29", "rangeStart": "10.1.0.0", "rangeEnd": "10.1.0.7"}))
    r = c.range_sets[0]
    assert str(r) == "10.1.0.0-10.1.0.7"
    assert [str(a) for a, _r in r.candidates(None)] == [f"10.1.0.{n}" for n in range(2, 7)]


def test_disjoint_ranges_in_one_subnet_are_fine() -> None:
    load(
        ranges(
            {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.99"},
            {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.100", "rangeEnd": "10.1.0.200"},
        )
    )


def test_gateway_outside_subnet_is_accepted_like_the_reference() -> None:
    c = load(ranges({"subnet": "10.1.0.0/24", "gateway": "10.9.9.9"}))
    assert str(c.range_sets[0].ranges[0].gateway) == "10.9.9.9"


# -- CNI_ARGS and requested IPs --------------------------------------------------------


def test_requested_ips_from_all_sources_in_order() -> None:
    c = load(
        ranges({"subnet": "10.1.0.0/24"}),
        cni_args="IP=10.1.0.5,10.1.0.6/24",
        runtimeConfig={"ips": ["10.1.0.8/24"]},
        args={"cni": {"ips": ["10.1.0.7"]}},
    )
    assert [str(a) for a in c.requested] == ["10.1.0.5", "10.1.0.6", "10.1.0.7", "10.1.0.8"]


@pytest.mark.parametrize(
    ("top", "args", "code", "msg"),
    [
        ({}, "IP=10.1.0.999", 4, "CNI_ARGS IP[0] '10.1.0.999' is not an IP address"),
        ({}, "IP=10.1.0.5,bogus", 4, "CNI_ARGS IP[1] 'bogus' is not an IP address"),
        ({"args": {"cni": {"ips": [5]}}}, "", 7, "args.cni.ips[0] 5 is not an IP address"),
        ({"args": {"cni": {"ips": "10.1.0.5"}}}, "", 7, "args.cni: 'ips' must be a list"),
        ({"args": []}, "", 7, "config: 'args' must be an object"),
        ({"runtimeConfig": {"ips": ["x/24"]}}, "", 7, "runtimeConfig.ips[0] 'x/24' is not in CIDR"),
        ({"runtimeConfig": 3}, "", 7, "config: 'runtimeConfig' must be an object"),
        ({}, "FOO=1", 4, 'ARGS: unknown args ["FOO=1"]'),
        ({}, "K8S_POD_NAME=p", 4, 'ARGS: unknown args ["K8S_POD_NAME=p"]'),
        ({}, "IP", 4, "ARGS: invalid pair 'IP'"),
    ],
)
def test_bad_requests(top, args, code, msg) -> None:
    err = failure(ranges({"subnet": "10.1.0.0/24"}), cni_args=args, **top)
    assert err.code == code
    assert err.msg.startswith(msg), err.msg


def test_ignore_unknown_accepts_kubelet_keys_and_keeps_ip() -> None:
    c = load(
        ranges({"subnet": "10.1.0.0/24"}),
        cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;IP=10.1.0.9",
    )
    assert [str(a) for a in c.requested] == ["10.1.0.9"]


# -- routes, dns, resolv.conf ----------------------------------------------------------


def test_routes_with_1_1_attributes() -> None:
    c = load(
        {
            **ranges({"subnet": "10.1.0.0/24"}),
            "routes": [
                {"dst": "0.0.0.0/0"},
                {"dst": "192.168.5.3/24", "gw": "10.1.0.254", "mtu": 1400, "priority": 5},
            ],
        }
    )
    wire = [r.to_wire("1.1.0") for r in c.routes]
    assert wire == [
        {"dst": "0.0.0.0/0"},
        {"dst": "192.168.5.0/24", "gw": "10.1.0.254", "mtu": 1400, "priority": 5},
    ]


def test_resolv_conf_parsing() -> None:
    dns = config.parse_resolv_conf(
        "# comment\n; also a comment\nnameserver 10.0.0.1\n  nameserver   fd00::53  \n"
        "domain example.com\nsearch a.example b.example\nsearch c.example\n"
        "options ndots:5 edns0\nnameserver\nsortlist 10.0.0.0\n"
    )
    assert dns.to_wire() == {
        "nameservers": ["10.0.0.1", "fd00::53"],
        "domain": "example.com",
        "search": ["a.example", "b.example", "c.example"],
        "options": ["ndots:5", "edns0"],
    }


def test_read_resolv_conf_errors(tmp_path) -> None:
    with pytest.raises(errors.InvalidConfig, match=r"ipam\.resolvConf .* does not exist"):
        config.read_resolv_conf(str(tmp_path / "missing"))
    with pytest.raises(errors.IOFailure, match=r"cannot read ipam\.resolvConf"):
        config.read_resolv_conf(str(tmp_path))
    (tmp_path / "r").write_text("nameserver 1.1.1.1\n")
    assert config.read_resolv_conf(str(tmp_path / "r")).nameservers == ["1.1.1.1"]


def test_dns_object_validation() -> None:
    assert config.parse_dns({"dns": {"nameservers": ["1.1.1.1"]}}, "dns", "ipam").nameservers == [
        "1.1.1.1"
    ]
    with pytest.raises(errors.InvalidConfig, match=r"ipam.dns.search\[1\] must be a string"):
        config.parse_dns({"dns": {"search": ["a", 1]}}, "dns", "ipam")
    with pytest.raises(errors.InvalidConfig, match=r"ipam: 'dns' must be an object"):
        config.parse_dns({"dns": []}, "dns", "ipam")


# -- GC input --------------------------------------------------------------------------


def test_valid_attachments() -> None:
    va = skel.valid_attachments
    pair = {"containerID": "a", "ifname": "eth0"}
    assert va({}) is None
    assert va({"cni.dev/valid-attachments": None}) == set()
    assert va({"cni.dev/attachments": [pair]}) == {("a", "eth0")}
    # the newer key wins
    assert va({"cni.dev/valid-attachments": [], "cni.dev/attachments": [pair]}) == set()
    for bad in ({}, {"containerID": "a"}, {"containerID": 1, "ifname": "x"}, "a"):
        with pytest.raises(errors.InvalidConfig, match=r"cni.dev/valid-attachments\[0\]"):
            va({"cni.dev/valid-attachments": [bad]})
    with pytest.raises(errors.InvalidConfig, match="must be a list"):
        va({"cni.dev/valid-attachments": {}})
