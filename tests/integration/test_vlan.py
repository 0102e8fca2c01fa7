"""vlan, exec'd as a runtime does. Our kernel has no 802.1q ("Unknown device type"):
ADD must answer a CNI error naming the module (8021q) and leave nothing behind; where
the kernel has it, the real behaviour is tested. One test covers both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns
from tests.integration import sublinks
from tests.integration.sublinks import kernel_has, links, ok, reaches

pytestmark = pytest.mark.root


@pytest.fixture
def lan(host_ns: Netns, container_ns: Callable[[], Netns]) -> Netns:
    return sublinks.make_lan(host_ns, container_ns)


def conf(tmp_path: Path, **keys: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"cniVersion": "1.0.0", "name": "vlnet", "type": "vlan",
                         "master": "mst0", "vlanId": 100,
                         "ipam": sublinks.host_local(tmp_path, ranges=[[{"subnet": "10.92.0.0/24"}]])}  # fmt: skip
    c.update(keys)
    return {k: v for k, v in c.items() if v is not None}


def leases(tmp_path: Path) -> list[str]:
    return sublinks.leases(tmp_path, "vlnet")


def test_vlan_add_check_del_or_clean_refusal(run_plugin, run_reference, host_ns, lan,
                                             container_ns, tmp_path) -> None:  # fmt: skip
    a = container_ns()
    if not kernel_has("vlan", "id", "5"):
        for keys in ({}, {"vlanId": 0, "mtu": 1400}, {"linkInContainer": False}):
            before, host_before = links(a), links(host_ns)
            err = run_plugin("vlan", "ADD", conf(tmp_path, **keys), netns=a.path,
                             container_id="ca", in_ns=host_ns).error  # fmt: skip
            assert err["code"] == 7, err
            assert "no vlan support" in err["msg"] and "kernel module 8021q" in err["msg"]
            assert "modprobe 8021q" in err["details"]
            assert links(a) == before and links(host_ns) == host_before
            assert leases(tmp_path) == []
        ok(run_plugin("vlan", "DEL", conf(tmp_path), netns=a.path, container_id="ca",
                      in_ns=host_ns))  # fmt: skip
        return

    # -- the kernel has 802.1q: the real behaviour --
    lan.run("ip", "link", "add", "link", "up0", "name", "up0.100", "type", "vlan", "id", "100")
    lan.run("ip", "addr", "add", "10.92.0.254/24", "dev", "up0.100")
    lan.run("ip", "link", "set", "up0.100", "up")
    c = conf(tmp_path, mtu=1400)
    r = ok(run_plugin("vlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    link = a.link("eth0")
    assert link["linkinfo"]["info_kind"] == "vlan" and link["mtu"] == 1400
    assert link["linkinfo"]["info_data"]["id"] == 100
    assert reaches(a, "10.92.0.254")  # tagged frames through mst0 to the outside's VLAN 100
    ok(run_plugin("vlan", "CHECK", {**c, "prevResult": r}, netns=a.path, container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    ok(run_reference("vlan", "CHECK", {**c, "prevResult": r}, netns=a.path, container_id="ca",
                     in_ns=host_ns))  # fmt: skip
    bad = run_plugin("vlan", "CHECK", {**c, "vlanId": 7, "prevResult": r}, netns=a.path,
                     container_id="ca", in_ns=host_ns)  # fmt: skip
    assert "VLAN id 100" in bad.error["msg"]
    ok(run_reference("vlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None and leases(tmp_path) == []
    ok(run_reference("vlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    ok(run_plugin("vlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None and leases(tmp_path) == []


BAD_KEYS = [
    ({"master": None}, '"master" field is required'),
    ({"master": "nosuch0"}, 'failed to lookup master "nosuch0"'),
    ({"vlanId": 4095}, "invalid VLAN ID 4095"),
    ({"vlanId": -1}, "invalid VLAN ID -1"),
    ({"vlanId": "100"}, "'vlanId'"),
    ({"mtu": 1501}, "invalid MTU 1501"),
    ({"ipam": None}, "an IPAM configuration is required"),
    ({"linkInContainer": "no"}, "'linkInContainer' must be true or false"),
]


@pytest.mark.parametrize(("keys", "needle"), BAD_KEYS)
def test_bad_keys_change_nothing(run_plugin, host_ns, lan, container_ns, tmp_path,
                                 keys: dict[str, Any], needle: str) -> None:  # fmt: skip
    a = container_ns()
    before, host_before = links(a), links(host_ns)
    err = run_plugin("vlan", "ADD", conf(tmp_path, **keys), netns=a.path, container_id="ca",
                     in_ns=host_ns).error  # fmt: skip
    assert err["code"] == 7 and needle in err["msg"] + err.get("details", ""), err
    assert links(a) == before and links(host_ns) == host_before and leases(tmp_path) == []
