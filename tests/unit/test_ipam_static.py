"""static IPAM, pure: every source of addresses and how they combine, validation, CHECK."""

from __future__ import annotations

import pytest

from pycni import errors, skel
from pycni.ipam import static


def cmd(ipam: dict | None, *, cni_args: str = "", version: str = "1.0.0", **top) -> skel.CmdArgs:
    conf = {"cniVersion": version, "name": "net1", "type": "bridge", **top}
    if ipam is not None:
        conf["ipam"] = {"type": "static", **ipam}
    return skel.CmdArgs(
        "ADD", "c1", "/proc/self/ns/net", "eth0", cni_args, "/opt/cni/bin", conf=conf
    )


def wire(ipam: dict | None, **kw) -> dict:
    c = cmd(ipam, **kw)
    return static.cmd_add(c).to_wire(c.cni_version)


ADDRS = {
    "addresses": [
        {"address": "10.10.0.5/24", "gateway": "10.10.0.1"},
        {"address": "3ffe:ffff:0:1ff::1/64", "gateway": "3ffe:ffff:0::1"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
    "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]},
}


def test_full_config() -> None:
    assert wire(ADDRS) == {
        "cniVersion": "1.0.0",
        "ips": [
            {"address": "10.10.0.5/24", "gateway": "10.10.0.1"},
            {"address": "3ffe:ffff:0:1ff::1/64", "gateway": "3ffe:ffff::1"},
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
        "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]},
    }


def test_0_3_1_and_0_2_0_shapes() -> None:
    out = wire(ADDRS, version="0.3.1")
    assert out["ips"][0] == {"version": "4", "address": "10.10.0.5/24", "gateway": "10.10.0.1"}
    old = wire(ADDRS, version="0.2.0")
    assert old["ip4"] == {
        "ip": "10.10.0.5/24",
        "gateway": "10.10.0.1",
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
    }
    assert old["ip6"]["ip"] == "3ffe:ffff:0:1ff::1/64"


def test_empty_address_list_is_no_error() -> None:
    assert wire({}) == {"cniVersion": "1.0.0", "dns": {}}


def test_cni_args_ip_appends_and_gateway_assigns() -> None:
    out = wire(
        {"addresses": [{"address": "10.10.0.5/24"}]},
        cni_args="IP=10.20.0.5/16,fd00::5/64;GATEWAY=10.20.0.1,fd00::1,10.10.0.1",
    )
    # GATEWAY= applies to the IP= addresses only (the reference's behaviour)
    assert out["ips"] == [
        {"address": "10.10.0.5/24"},
        {"address": "10.20.0.5/16", "gateway": "10.20.0.1"},
        {"address": "fd00::5/64", "gateway": "fd00::1"},
    ]


def test_gateway_outside_every_subnet_is_ignored() -> None:
    out = wire({"addresses": [{"address": "10.10.0.5/24"}]}, cni_args="GATEWAY=10.99.0.1")
    assert out["ips"] == [{"address": "10.10.0.5/24"}]


def test_args_ips_replace_then_runtime_config_ips_replace() -> None:
    ipam = {"addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}]}
    out = wire(ipam, cni_args="IP=10.30.0.5/24", args={"cni": {"ips": ["10.40.0.5/24"]}})
    assert out["ips"] == [{"address": "10.40.0.5/24"}]
    out = wire(
        ipam,
        args={"cni": {"ips": ["10.40.0.5/24"]}},
        runtimeConfig={"ips": ["10.50.0.5/24", "fd00::7/64"]},
    )
    assert out["ips"] == [{"address": "10.50.0.5/24"}, {"address": "fd00::7/64"}]
    # empty lists replace nothing
    out = wire(ipam, args={"cni": {"ips": []}}, runtimeConfig={"ips": []})
    assert out["ips"] == [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}]


@pytest.mark.parametrize(
    ("ipam", "kw", "code", "msg"),
    [
        (None, {}, 7, "IPAM config missing 'ipam' key"),
        ({"addresses": {}}, {}, 7, "ipam: 'addresses' must be a list"),
        ({"addresses": ["10.1.0.5/24"]}, {}, 7, "ipam.addresses[0] must be an object"),
        ({"addresses": [{"gateway": "10.1.0.1"}]}, {}, 7, "ipam.addresses[0].address is missing"),
        (
            {"addresses": [{"address": "10.1.0.5"}]},
            {},
            7,
            "ipam.addresses[0].address '10.1.0.5' is not in CIDR",
        ),
        (
            {"addresses": [{"address": "10.1.0.5/24", "gateway": "x"}]},
            {},
            7,
            "ipam.addresses[0].gateway 'x' is not an IP",
        ),
        (
            {"addresses": [{"address": "10.1.0.5/24", "gateway": "fd00::1"}]},
            {},
            7,
            "ipam.addresses[0].gateway fd00::1 is not of the same family",
        ),
        ({}, {"cni_args": "IP=10.1.0.5"}, 4, "CNI_ARGS IP[0] '10.1.0.5' is not in CIDR"),
        (
            {},
            {"cni_args": "IP=10.1.0.5/24;GATEWAY=nope"},
            4,
            "CNI_ARGS GATEWAY[0] 'nope' is not an IP",
        ),
        ({}, {"cni_args": "MAC=00:11:22:33:44:55"}, 4, "ARGS: unknown args"),
        (
            {},
            {"args": {"cni": {"ips": ["10.1.0.5"]}}},
            7,
            "args.cni.ips[0] '10.1.0.5' is not in CIDR",
        ),
        ({}, {"runtimeConfig": {"ips": [7]}}, 7, "runtimeConfig.ips[0] 7 is not in CIDR"),
        ({"routes": [{"dst": "nope"}]}, {}, 7, "ipam.routes[0].dst 'nope' is not in CIDR"),
        ({"dns": {"nameservers": "8.8.8.8"}}, {}, 7, "ipam.dns: 'nameservers' must be a list"),
        (
            {"addresses": [{"address": "10.1.0.5/24"}, {"address": "10.2.0.5/24"}]},
            {"version": "0.2.0"},
            7,
            "CNI version 0.2.0 does not support more than 1 address per family",
        ),
    ],
)
def test_invalid(ipam, kw, code, msg) -> None:
    with pytest.raises(errors.CniError) as exc:
        static.load_conf(cmd(ipam, **kw))
    assert exc.value.code == code
    assert exc.value.msg.startswith(msg), exc.value.msg


def test_ignore_unknown() -> None:
    out = wire({}, cni_args="IgnoreUnknown=true;K8S_POD_NAME=x;IP=10.1.0.5/24")
    assert out["ips"] == [{"address": "10.1.0.5/24"}]


def test_del_does_not_even_parse() -> None:
    c = cmd(None, cni_args="garbage")
    assert static.cmd_del(c) is None


def check(ipam: dict, prev: dict | None) -> None:
    c = cmd(ipam, **({"prevResult": prev} if prev is not None else {}))
    static.cmd_check(c)


def test_check() -> None:
    ipam = {"addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}]}
    good = {"cniVersion": "1.0.0", "ips": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}]}
    check(ipam, good)
    # an address missing from prevResult is not an error (as the reference)
    check(ipam, {"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.5/24"}]})
    # no configured gateway: any gateway matches
    check({"addresses": [{"address": "10.10.0.5/24"}]}, good)
    with pytest.raises(
        errors.CniError, match=r"static: Failed to match addr 10\.10\.0\.5 on interface eth0"
    ):
        check(
            ipam,
            {"cniVersion": "1.0.0", "ips": [{"address": "10.10.0.5/24", "gateway": "10.10.0.9"}]},
        )
    with pytest.raises(errors.InvalidConfig, match="Required prevResult missing"):
        check(ipam, None)
