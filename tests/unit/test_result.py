"""Results: parse any version, print any version, round trips."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni import errors
from pycni import version as cniver
from pycni.result import DNS, Interface, IPConfig, Result, Route, parse_result

R100 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "0a:58:0a:01:00:01"},
        {"name": "veth1234abcd", "mac": "aa:bb:cc:dd:ee:ff"},
        {"name": "eth0", "mac": "11:22:33:44:55:66", "sandbox": "/var/run/netns/c1"},
    ],
    "ips": [
        {"interface": 2, "address": "10.1.0.5/16", "gateway": "10.1.0.1"},
        {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "::/0"}],
    "dns": {"nameservers": ["10.1.0.1"], "search": ["example.org"]},
}


def test_1_0_round_trip() -> None:
    assert parse_result(R100).to_wire("1.0.0") == R100


def test_to_0_4_adds_ip_versions() -> None:
    out = parse_result(R100).to_wire("0.4.0")
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    assert out["ips"][0] == {
        "version": "4",
        "interface": 2,
        "address": "10.1.0.5/16",
        "gateway": "10.1.0.1",
    }
    assert parse_result(out).to_wire("1.0.0") == R100


def test_to_0_2_keeps_first_of_each_family() -> None:
    r = parse_result(R100)
    r.ips.append(IPConfig(ipaddress.ip_interface("10.2.0.9/24")))
    out = r.to_wire("0.2.0")
    assert out == {
        "cniVersion": "0.2.0",
        "ip4": {
            "ip": "10.1.0.5/16",
            "gateway": "10.1.0.1",
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
        },
        "ip6": {"ip": "fd00::5/64", "gateway": "fd00::1", "routes": [{"dst": "::/0"}]},
        "dns": {"nameservers": ["10.1.0.1"], "search": ["example.org"]},
    }


def test_from_0_2() -> None:
    r = parse_result(
        {
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        }
    )
    out = r.to_wire("1.0.0")
    assert out["ips"] == [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]
    assert out["routes"] == [{"dst": "0.0.0.0/0"}]


def test_1_1_route_fields_kept_for_1_x_dropped_for_0_x() -> None:
    obj = dict(
        R100,
        cniVersion="1.1.0",
        routes=[
            {
                "dst": "10.9.0.0/16",
                "gw": "10.1.0.1",
                "mtu": 1400,
                "priority": 5,
                "table": 100,
                "scope": 0,
            }
        ],
    )
    r = parse_result(obj)
    assert r.to_wire("1.1.0")["routes"] == obj["routes"]
    assert r.to_wire("0.4.0")["routes"] == [{"dst": "10.9.0.0/16", "gw": "10.1.0.1"}]


@pytest.mark.parametrize(
    "bad",
    [
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "nope/8"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": 3}]},
        {"cniVersion": "1.0.0", "ips": "x"},
        {"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]},
        {"cniVersion": "1.0.0", "interfaces": [{"mac": "x"}]},
        {"cniVersion": "1.0.0", "dns": {"nameservers": [1]}},
        [],
    ],
)
def test_malformed_results_are_decoding_errors(bad: object) -> None:
    with pytest.raises(errors.DecodingFailure):
        parse_result(bad)


def test_unknown_result_version() -> None:
    with pytest.raises(errors.IncompatibleVersion):
        parse_result({"cniVersion": "7.0.0"})


v4 = st.builds(
    lambda a, p: ipaddress.ip_interface((ipaddress.IPv4Address(a), p)),
    st.integers(0, 2**32 - 1),
    st.integers(1, 30),
)
v6 = st.builds(
    lambda a, p: ipaddress.ip_interface((ipaddress.IPv6Address(a), p)),
    st.integers(0, 2**128 - 1),
    st.integers(1, 126),
)


@given(
    addrs=st.lists(st.one_of(v4, v6), min_size=1, max_size=4),
    version=st.sampled_from(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]),
)
def test_round_trip_every_version(addrs: list, version: str) -> None:
    r = Result(
        version,
        interfaces=[Interface("eth0", "aa:bb:cc:dd:ee:ff", "/x")],
        ips=[IPConfig(a, None, 0) for a in addrs],
        routes=[Route(a.network) for a in addrs],
        dns=DNS(["1.1.1.1"]),
    )
    wire = json.loads(json.dumps(r.to_wire(version)))
    again = parse_result(wire)
    assert again.to_wire(version) == wire
    for target in cniver.SUPPORTED:
        out = again.to_wire(target)
        assert out["cniVersion"] == target
        # every version keeps at least the first address of each family
        assert parse_result(out).ips[0].address == addrs[0] or target < "0.3.0"
