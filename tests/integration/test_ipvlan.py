"""ipvlan, exec'd as a runtime does. Our kernel has no ipvlan ("Unknown device
type"): ADD must answer a CNI error naming the module and leave nothing behind (no
link, no lease); where the kernel has it, the real behaviour is tested. One test
covers both, so the suite never skips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns
from tests.integration import sublinks
from tests.integration.sublinks import OUTSIDE, kernel_has, links, ok, reaches

pytestmark = pytest.mark.root


@pytest.fixture
def lan(host_ns: Netns, container_ns: Callable[[], Netns]) -> Netns:
    return sublinks.make_lan(host_ns, container_ns)


def conf(tmp_path: Path, with_ipam: bool = True, **keys: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"cniVersion": "1.0.0", "name": "ipvnet", "type": "ipvlan",
                         "master": "mst0"}  # fmt: skip
    if with_ipam:
        c["ipam"] = sublinks.host_local(tmp_path)
    c.update(keys)
    return {k: v for k, v in c.items() if v is not None}


def leases(tmp_path: Path) -> list[str]:
    return sublinks.leases(tmp_path, "ipvnet")


def test_ipvlan_add_check_del_or_clean_refusal(run_plugin, run_reference, host_ns, lan,
                                               container_ns, tmp_path) -> None:  # fmt: skip
    a, b = container_ns(), container_ns()
    if not kernel_has("ipvlan"):
        for keys in ({}, {"mode": "l3"}, {"mode": "l3s", "mtu": 1400}):
            before, host_before = links(a), links(host_ns)
            err = run_plugin("ipvlan", "ADD", conf(tmp_path, **keys), netns=a.path,
                             container_id="ca", in_ns=host_ns).error  # fmt: skip
            assert err["code"] == 7, err
            assert "no ipvlan support" in err["msg"] and "kernel module ipvlan" in err["msg"]
            assert "modprobe ipvlan" in err["details"]
            assert links(a) == before and links(host_ns) == host_before
            assert leases(tmp_path) == []  # IPAM never kept an address
        # chained after a plugin that assigned the addresses: the same refusal
        prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "mst0"}],
                "ips": [{"address": "10.91.0.7/24"}]}  # fmt: skip
        err = run_plugin("ipvlan", "ADD", conf(tmp_path, False, master=None, prevResult=prev),
                         netns=a.path, container_id="ca", in_ns=host_ns).error  # fmt: skip
        assert err["code"] == 7 and "modprobe ipvlan" in err["details"]
        ok(run_plugin("ipvlan", "DEL", conf(tmp_path), netns=a.path, container_id="ca",
                      in_ns=host_ns))  # fmt: skip
        return

    # -- the kernel has ipvlan: the real behaviour --
    c = conf(tmp_path)
    ra = ok(run_plugin("ipvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    rb = ok(run_plugin("ipvlan", "ADD", c, netns=b.path, container_id="cb", in_ns=host_ns))
    link = a.link("eth0")
    assert link["linkinfo"]["info_kind"] == "ipvlan"
    assert link["linkinfo"]["info_data"]["mode"] == "l2"
    assert link["address"] == host_ns.link("mst0")["address"]  # children share the MAC
    assert ra["interfaces"][0] == {"name": "eth0", "mac": link["address"], "sandbox": a.path}
    assert reaches(a, rb["ips"][0]["address"].split("/")[0]) and reaches(a, OUTSIDE)
    ok(run_plugin("ipvlan", "CHECK", {**c, "prevResult": ra}, netns=a.path, container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    ok(run_reference("ipvlan", "CHECK", {**c, "prevResult": ra}, netns=a.path,
                     container_id="ca", in_ns=host_ns))  # fmt: skip
    bad = run_plugin("ipvlan", "CHECK", {**c, "mode": "l3", "prevResult": ra}, netns=a.path,
                     container_id="ca", in_ns=host_ns)  # fmt: skip
    assert "does not match expected value: l3" in bad.error["msg"]
    # cross-DEL both ways
    ok(run_reference("ipvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None
    ok(run_plugin("ipvlan", "DEL", c, netns=b.path, container_id="cb", in_ns=host_ns))
    ok(run_reference("ipvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    ok(run_plugin("ipvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None and leases(tmp_path) == []
    # l3: children on one master still reach each other
    c3 = conf(tmp_path, mode="l3")
    ra = ok(run_plugin("ipvlan", "ADD", c3, netns=a.path, container_id="ca", in_ns=host_ns))
    rb = ok(run_plugin("ipvlan", "ADD", c3, netns=b.path, container_id="cb", in_ns=host_ns))
    assert a.link("eth0")["linkinfo"]["info_data"]["mode"] == "l3"
    assert reaches(a, rb["ips"][0]["address"].split("/")[0])
    for ns, cid in ((a, "ca"), (b, "cb")):
        ok(run_plugin("ipvlan", "DEL", c3, netns=ns.path, container_id=cid, in_ns=host_ns))
    assert leases(tmp_path) == []


BAD_KEYS = [
    ({"mode": "l4"}, "unknown ipvlan mode"),
    ({"mode": ["l2"]}, "'mode' must be a string"),
    ({"mtu": 9001}, "invalid MTU 9001, must be [0, master MTU(1500)]"),
    ({"mtu": "big"}, "'mtu'"),
    ({"master": "nosuch0"}, 'failed to lookup master "nosuch0"'),
    ({"master": "x" * 16}, "'master' is not a valid interface name"),
    ({"linkInContainer": 1}, "'linkInContainer' must be true or false"),
    ({"ipam": None}, "no addresses for the interface"),
    ({"ipam": None, "master": None,
      "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}],
                     "ips": [{"address": "10.91.0.7/24"}]}},
     "chained master failure"),
    ({"ipam": []}, "'ipam' must be an object"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "needle"), BAD_KEYS)
def test_bad_keys_change_nothing(run_plugin, host_ns, lan, container_ns, tmp_path,
                                 keys: dict[str, Any], needle: str) -> None:  # fmt: skip
    a = container_ns()
    before, host_before = links(a), links(host_ns)
    c = conf(tmp_path)
    c.update(keys)
    c = {k: v for k, v in c.items() if v is not None}
    err = run_plugin("ipvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns).error
    assert err["code"] == 7 and needle in err["msg"] + err.get("details", ""), err
    assert links(a) == before and links(host_ns) == host_before and leases(tmp_path) == []


def test_del_without_anything_and_status(run_plugin, host_ns, lan, container_ns,
                                         tmp_path) -> None:  # fmt: skip
    c = conf(tmp_path)
    ok(run_plugin("ipvlan", "DEL", c, netns="/var/run/netns/pyt-gone-ipv", container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    ok(run_plugin("ipvlan", "DEL", c, container_id="ca", in_ns=host_ns))  # no CNI_NETNS
    c11 = {**c, "cniVersion": "1.1.0"}
    ok(run_plugin("ipvlan", "STATUS", c11, in_ns=host_ns))
    err = run_plugin("ipvlan", "STATUS", {**c11, "master": "gone0"}, in_ns=host_ns).error
    assert err["code"] == 50
