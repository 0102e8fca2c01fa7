"""sbr's and vrf's config reading, without root."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from pycni.plugins.sbr import SbrConf, ip_configs
from pycni.plugins.vrf import VrfConf

from pycni import errors
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
