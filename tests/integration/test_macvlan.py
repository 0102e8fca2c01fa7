"""macvlan, exec'd as a runtime does, in real namespaces.

Topology of each test: the throwaway node `host_ns` has a veth end `mst0` (the master);
its peer `up0` lives in an "outside" namespace holding 10.91.0.1/24 (the upstream
router). Containers get macvlan children of mst0 with host-local addresses from
10.91.0.0/24. Kernel state is read back with `ip -j`; packets are real pings.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns, PluginRun
from tests.integration import sublinks
from tests.integration.sublinks import OUTSIDE, links, ok, reaches

pytestmark = pytest.mark.root


@pytest.fixture
def lan(host_ns: Netns, container_ns: Callable[[], Netns]) -> Netns:
    return sublinks.make_lan(host_ns, container_ns)


def conf(tmp_path: Path, with_ipam: bool = True, **keys: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"cniVersion": "1.0.0", "name": "mvnet", "type": "macvlan",
                         "master": "mst0"}  # fmt: skip
    if with_ipam:
        c["ipam"] = sublinks.host_local(tmp_path)
    c.update(keys)
    return {k: v for k, v in c.items() if v is not None}


def leases(tmp_path: Path) -> list[str]:
    return sublinks.leases(tmp_path, "mvnet")


def container_ip(r: dict[str, Any]) -> str:
    return r["ips"][0]["address"].split("/")[0]


def test_add_check_del_traffic_bridge_mode(run_plugin, run_reference, host_ns, lan,
                                            container_ns, tmp_path) -> None:  # fmt: skip
    a, b = container_ns(), container_ns()
    c = conf(tmp_path)
    ra = ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    rb = ok(run_plugin("macvlan", "ADD", c, netns=b.path, container_id="cb", in_ns=host_ns))
    # the result, and the kernel's own view of the link
    assert ra["interfaces"] == [
        {"name": "eth0", "mac": a.link("eth0")["address"], "sandbox": a.path}
    ]
    assert ra["ips"] == [{"interface": 0, "address": "10.91.0.2/24", "gateway": OUTSIDE}]
    link = a.link("eth0")
    assert link["linkinfo"]["info_kind"] == "macvlan"
    assert link["linkinfo"]["info_data"]["mode"] == "bridge"
    assert "UP" in link["flags"] and link["mtu"] == 1500
    mst0 = host_ns.link("mst0")
    assert link["link_index"] == mst0["ifindex"] and link.get("link_netnsid") is not None
    assert a.addrs("eth0") == ["10.91.0.2/24"] or "10.91.0.2/24" in a.addrs("eth0")
    assert {"dst": "default", "gateway": OUTSIDE, "dev": "eth0"}.items() <= a.routes()[0].items()
    assert host_ns.link("eth0") is None  # never visible in the node's namespace
    assert leases(tmp_path) == ["10.91.0.2", "10.91.0.3"]
    # real packets: container <-> container (bridge mode), container <-> outside
    assert reaches(a, container_ip(rb)) and reaches(b, container_ip(ra))
    assert reaches(a, OUTSIDE) and reaches(lan, container_ip(rb))
    # CHECK: ours and the reference's, with the ADD's result as prevResult
    ok(run_plugin("macvlan", "CHECK", {**c, "prevResult": ra}, netns=a.path, container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    ok(run_reference("macvlan", "CHECK", {**c, "prevResult": ra}, netns=a.path,
                     container_id="ca", in_ns=host_ns))  # fmt: skip
    # DEL: link and lease gone; a second DEL and a DEL without the netns succeed
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None and leases(tmp_path) == ["10.91.0.3"]
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    b_path = b.path
    subprocess.run(["ip", "netns", "del", b.name], check=True)
    ok(run_plugin("macvlan", "DEL", c, netns=b_path, container_id="cb", in_ns=host_ns))
    assert leases(tmp_path) == []
    assert [x["ifname"] for x in host_ns.ip_json("link", "show")] == ["lo", "mst0"]


@pytest.mark.parametrize("mode", ["private", "vepa"])
def test_modes_that_keep_children_apart(run_plugin, host_ns, lan, container_ns, tmp_path,
                                        mode: str) -> None:  # fmt: skip
    a, b = container_ns(), container_ns()
    c = conf(tmp_path, mode=mode)
    ra = ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    rb = ok(run_plugin("macvlan", "ADD", c, netns=b.path, container_id="cb", in_ns=host_ns))
    assert a.link("eth0")["linkinfo"]["info_data"]["mode"] == mode
    # the outside is reachable; the sibling is not (private: never; vepa: only through
    # an external switch that reflects frames, and a veth does not)
    assert reaches(a, OUTSIDE) and reaches(b, OUTSIDE)
    assert not reaches(a, container_ip(rb))
    assert not reaches(b, container_ip(ra))
    ok(run_plugin("macvlan", "CHECK", {**c, "prevResult": ra}, netns=a.path, container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    # CHECK notices a mode that is not the configured one
    bad = run_plugin("macvlan", "CHECK", {**c, "mode": "bridge", "prevResult": ra},
                     netns=a.path, container_id="ca", in_ns=host_ns)  # fmt: skip
    assert f"mode {mode} does not match expected value: bridge" in bad.error["msg"]
    for ns, cid in ((a, "ca"), (b, "cb")):
        ok(run_plugin("macvlan", "DEL", c, netns=ns.path, container_id=cid, in_ns=host_ns))
    assert leases(tmp_path) == []


def test_passthru_takes_the_master(run_plugin, host_ns, lan, container_ns, tmp_path) -> None:
    a, b = container_ns(), container_ns()
    c = conf(tmp_path, mode="passthru")
    ra = ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0")["linkinfo"]["info_data"]["mode"] == "passthru"
    assert reaches(a, OUTSIDE)
    # one passthru child per master: the second ADD fails and leaves nothing behind
    before = links(b)
    err = run_plugin("macvlan", "ADD", c, netns=b.path, container_id="cb", in_ns=host_ns).error
    assert "macvlan" in err["msg"], err
    assert links(b) == before and leases(tmp_path) == [container_ip(ra)]
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert leases(tmp_path) == []


def test_l2_only_mtu_mac_and_bcqueuelen(run_plugin, host_ns, lan, container_ns,
                                        tmp_path) -> None:  # fmt: skip
    host_ns.run("ip", "link", "set", "mst0", "mtu", "9000")
    a = container_ns()
    c = conf(tmp_path, with_ipam=False, mtu=1400, mac="02:00:00:aa:bb:01", bcqueuelen=123)
    r = ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert "ips" not in r and r["interfaces"][0]["mac"] == "02:00:00:aa:bb:01"
    link = a.link("eth0")
    assert link["mtu"] == 1400 and link["address"] == "02:00:00:aa:bb:01"
    assert link["linkinfo"]["info_data"].get("bcqueuelen") == 123
    assert "UP" in link["flags"]
    assert [x for x in a.addrs("eth0") if not x.startswith("fe80")] == []
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    # the MAC's sources, in the reference's order: runtimeConfig > CNI_ARGS MAC > "mac"
    for keys, args, want in (
        ({"runtimeConfig": {"mac": "02:00:00:aa:bb:03"}}, "MAC=02:00:00:aa:bb:02",
         "02:00:00:aa:bb:03"),
        ({}, "MAC=02:00:00:aa:bb:02", "02:00:00:aa:bb:02"),
    ):  # fmt: skip
        r = ok(run_plugin("macvlan", "ADD", {**c, **keys}, netns=a.path, container_id="ca",
                          args=args, in_ns=host_ns))  # fmt: skip
        assert a.link("eth0")["address"] == want == r["interfaces"][0]["mac"]
        ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))


def test_default_master_and_link_in_container(run_plugin, host_ns, lan, container_ns,
                                              tmp_path) -> None:  # fmt: skip
    # no "master": the interface of the node's default route
    host_ns.run("ip", "addr", "add", "10.91.0.250/24", "dev", "mst0")
    host_ns.run("ip", "route", "add", "default", "via", OUTSIDE)
    a = container_ns()
    c = conf(tmp_path, master=None)
    ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0")["link_index"] == host_ns.link("mst0")["ifindex"]
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    # linkInContainer: the master is a link inside the container's namespace
    a.run("ip", "link", "add", "inner0", "type", "veth", "peer", "name", "inner1")
    a.run("ip", "link", "set", "inner0", "up")
    c = conf(tmp_path, master="inner0", linkInContainer=True)
    r = ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    link = a.link("eth0")
    assert link["link"] == "inner0" and link["linkinfo"]["info_kind"] == "macvlan"
    ok(run_plugin("macvlan", "CHECK", {**c, "prevResult": r}, netns=a.path, container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None and leases(tmp_path) == []


def test_cross_del_with_the_reference(run_plugin, run_reference, host_ns, lan, container_ns,
                                      tmp_path) -> None:  # fmt: skip
    a = container_ns()
    c = conf(tmp_path)
    # our ADD, the reference's DEL
    ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    ok(run_reference("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None and leases(tmp_path) == []
    # the reference's ADD (same lease store, same link), our CHECK and DEL
    r = ok(run_reference("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0")["linkinfo"]["info_kind"] == "macvlan"
    ok(run_plugin("macvlan", "CHECK", {**c, "prevResult": r}, netns=a.path, container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None and leases(tmp_path) == []


BAD_KEYS = [
    ({"mode": "bridged"}, 7, "unknown macvlan mode"),
    ({"mode": 4}, 7, "'mode' must be a string"),
    ({"mtu": 1501}, 7, "invalid MTU 1501, must be [0, master MTU(1500)]"),
    ({"mtu": -1}, 7, "'mtu'"),
    ({"mtu": 60}, 7, "invalid MTU 60, must be 0 (the master's) or at least 68"),
    ({"mtu": "1400"}, 7, "'mtu'"),
    ({"master": "nosuch0"}, 7, 'failed to lookup master "nosuch0"'),
    ({"master": "a/b"}, 7, "'master' is not a valid interface name"),
    ({"master": 3}, 7, "'master' must be a string"),
    ({"mac": "02:00:00:00:00"}, 7, "invalid MAC address"),
    ({"mac": "01:00:5e:00:00:01"}, 7, "multicast MAC"),
    ({"runtimeConfig": {"mac": "zz"}}, 7, "invalid MAC address"),
    ({"runtimeConfig": []}, 7, "'runtimeConfig' must be an object"),
    ({"linkInContainer": "yes"}, 7, "'linkInContainer' must be true or false"),
    ({"bcqueuelen": -5}, 7, "'bcqueuelen'"),
    ({"ipam": "host-local"}, 7, "'ipam' must be an object"),
    ({"ipam": {"type": 5}}, 7, "'ipam.type' must be a string"),
    ({"ipam": {"type": "nosuchipam"}}, 7, "nosuchipam"),
    ({"dns": "8.8.8.8"}, 7, "'dns' must be an object"),
]


@pytest.mark.parametrize(("keys", "code", "needle"), BAD_KEYS)
def test_bad_keys_change_nothing(run_plugin, host_ns, lan, container_ns, tmp_path,
                                 keys: dict[str, Any], code: int, needle: str) -> None:  # fmt: skip
    a = container_ns()
    before, host_before = links(a), links(host_ns)
    r = run_plugin("macvlan", "ADD", conf(tmp_path, **keys), netns=a.path, container_id="ca",
                   in_ns=host_ns)  # fmt: skip
    err = r.error
    assert err["code"] == code and needle in err["msg"] + err.get("details", ""), err
    assert links(a) == before and links(host_ns) == host_before and leases(tmp_path) == []


def test_bad_environment(run_plugin, host_ns, lan, container_ns, tmp_path) -> None:
    a = container_ns()
    c = conf(tmp_path)
    # CNI_IFNAME taken in the container
    a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth9")
    err = run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns).error
    assert err["code"] == 4 and "already exists" in err["msg"]
    assert leases(tmp_path) == [] and a.link("eth0")["linkinfo"]["info_kind"] == "veth"
    # DEL leaves an interface of another kind alone
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is not None
    # unknown CNI_ARGS (as the reference: IgnoreUnknown=1 lets them through)
    b = container_ns()
    err = run_plugin("macvlan", "ADD", c, netns=b.path, container_id="cb", args="FOO=1",
                     in_ns=host_ns).error  # fmt: skip
    assert err["code"] == 4 and "unknown args" in err["msg"]
    ok(run_plugin("macvlan", "ADD", c, netns=b.path, container_id="cb",
                  args="IgnoreUnknown=1;FOO=1", in_ns=host_ns))  # fmt: skip
    ok(run_plugin("macvlan", "DEL", c, netns=b.path, container_id="cb", in_ns=host_ns))
    # a netns that is not there, one that is not a netns
    err = run_plugin("macvlan", "ADD", c, netns="/var/run/netns/pyt-gone-mv", container_id="cc",
                     in_ns=host_ns).error  # fmt: skip
    assert err["code"] == 3
    err = run_plugin("macvlan", "ADD", c, netns=str(tmp_path), container_id="cc",
                     in_ns=host_ns).error  # fmt: skip
    assert err["code"] == 4
    assert leases(tmp_path) == []


@pytest.mark.parametrize("point", ["after-link", "after-ipam", "after-addresses"])
def test_failed_add_rolls_back(run_plugin, host_ns, lan, container_ns, tmp_path,
                               point: str) -> None:  # fmt: skip
    a = container_ns()
    before = links(a)
    r = run_plugin("macvlan", "ADD", conf(tmp_path), netns=a.path, container_id="ca",
                   in_ns=host_ns, env_extra={"PYCNI_FAULT": f"fail:{point}"})  # fmt: skip
    assert "injected failure" in r.error["msg"]
    assert links(a) == before and leases(tmp_path) == []


def test_kernel_refusal_midway_rolls_back(run_plugin, host_ns, lan, container_ns,
                                          tmp_path) -> None:  # fmt: skip
    """A route the kernel refuses (its gateway is on no connected network): the lease
    is released and the link removed."""
    a = container_ns()
    c = conf(tmp_path)
    c["ipam"]["routes"] = [{"dst": "198.51.100.0/24", "gw": "192.0.2.1"}]
    before = links(a)
    err = run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns).error
    assert "198.51.100.0/24" in err["msg"], err
    assert links(a) == before and leases(tmp_path) == []


def test_check_findings(run_plugin, host_ns, lan, container_ns, tmp_path) -> None:
    a = container_ns()
    c = conf(tmp_path)
    r = ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))

    def check(conf_: dict[str, Any], netns: str = a.path) -> PluginRun:
        return run_plugin("macvlan", "CHECK", conf_, netns=netns, container_id="ca",
                          in_ns=host_ns)  # fmt: skip

    assert check(c).error["code"] == 7  # no prevResult
    other = {**r, "interfaces": [{**r["interfaces"][0], "sandbox": "/var/run/netns/elsewhere"}]}
    assert "doesn't match configured netns" in check({**c, "prevResult": other}).error["msg"]
    a.run("ip", "addr", "flush", "dev", "eth0")
    msg = check({**c, "prevResult": r}).error["msg"]
    assert "address 10.91.0.2/24 missing on eth0" in msg and "route 0.0.0.0/0" in msg
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert "Failed to find address" in check({**c, "prevResult": r}).error["msg"]  # IPAM's
    l2 = conf(tmp_path, with_ipam=False)
    assert "eth0 not found" in check({**l2, "prevResult": r}).error["msg"]


def test_gc_and_status(run_plugin, host_ns, lan, container_ns, tmp_path) -> None:
    a, b = container_ns(), container_ns()
    c = {**conf(tmp_path), "cniVersion": "1.1.0"}
    ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    ok(run_plugin("macvlan", "ADD", c, netns=b.path, container_id="cb", in_ns=host_ns))
    gc = {**c, "cni.dev/valid-attachments": [{"containerID": "ca", "ifname": "eth0"}]}
    ok(run_plugin("macvlan", "GC", gc, in_ns=host_ns))
    assert leases(tmp_path) == ["10.91.0.2"]  # cb's lease was stale
    ok(run_plugin("macvlan", "STATUS", c, in_ns=host_ns))
    host_ns.run("ip", "link", "set", "mst0", "name", "mst9")
    err = run_plugin("macvlan", "STATUS", c, in_ns=host_ns).error
    assert err["code"] == 50 and "mst0" in err["msg"]
    host_ns.run("ip", "link", "set", "mst9", "name", "mst0")
    for ns, cid in ((a, "ca"), (b, "cb")):
        ok(run_plugin("macvlan", "DEL", c, netns=ns.path, container_id=cid, in_ns=host_ns))


def test_result_versions(run_plugin, host_ns, lan, container_ns, tmp_path) -> None:
    a = container_ns()
    for version in ("0.3.1", "0.4.0", "1.0.0", "1.1.0"):
        c = {**conf(tmp_path), "cniVersion": version}
        r = ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
        assert r["cniVersion"] == version and r["interfaces"][0]["name"] == "eth0"
        ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert json.dumps(leases(tmp_path)) == "[]"


def test_dual_stack(run_plugin, host_ns, lan, container_ns, tmp_path) -> None:
    lan.run("ip", "addr", "add", "fd91::1/64", "dev", "up0", "nodad")
    a, b = container_ns(), container_ns()
    c = conf(tmp_path)
    c["ipam"]["ranges"].append([{"subnet": "fd91::/64", "gateway": "fd91::1"}])
    c["ipam"]["routes"].append({"dst": "::/0"})
    ra = ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    rb = ok(run_plugin("macvlan", "ADD", c, netns=b.path, container_id="cb", in_ns=host_ns))
    assert [ip["address"] for ip in ra["ips"]] == ["10.91.0.2/24", "fd91::2/64"]
    assert "fd91::2/64" in a.addrs("eth0")
    assert a.sysctl("net.ipv6.conf.eth0.ndisc_notify") == "1"
    assert any(r["dst"] == "default" for r in a.ip_json("-6", "route", "show"))
    assert reaches(a, "fd91::1") and reaches(a, rb["ips"][1]["address"].split("/")[0])
    ok(run_plugin("macvlan", "CHECK", {**c, "prevResult": ra}, netns=a.path, container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    for ns, cid in ((a, "ca"), (b, "cb")):
        ok(run_plugin("macvlan", "DEL", c, netns=ns.path, container_id=cid, in_ns=host_ns))
    assert leases(tmp_path) == []


def test_killed_add_is_cleaned_by_del(run_plugin, host_ns, lan, container_ns, tmp_path) -> None:
    """SIGKILL right after IPAM (link made, lease taken): the runtime's DEL frees both."""
    a = container_ns()
    c = conf(tmp_path)
    r = run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns,
                   env_extra={"PYCNI_FAULT": "after-ipam"})  # fmt: skip
    assert r.rc != 0
    assert a.link("eth0") is not None and leases(tmp_path) == ["10.91.0.2"]
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None and leases(tmp_path) == []


def test_master_named_like_the_container_interface(run_plugin, host_ns, lan, container_ns,
                                                   tmp_path) -> None:  # fmt: skip
    """The link is born in the container's namespace: a master called eth0 on the node
    and CNI_IFNAME eth0 do not collide (no temporary name, no rename)."""
    host_ns.run("ip", "link", "set", "mst0", "name", "eth0")
    a = container_ns()
    c = conf(tmp_path, master="eth0")
    ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0")["linkinfo"]["info_kind"] == "macvlan"
    assert host_ns.link("eth0")["linkinfo"]["info_kind"] == "veth"
    assert reaches(a, OUTSIDE)
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
    assert a.link("eth0") is None and host_ns.link("eth0") is not None


def test_mac_in_use_is_the_callers_mistake(run_plugin, host_ns, lan, container_ns,
                                           tmp_path) -> None:  # fmt: skip
    a, b = container_ns(), container_ns()
    c = conf(tmp_path, mac="02:00:00:aa:bb:77")
    ok(run_plugin("macvlan", "ADD", c, netns=a.path, container_id="ca", in_ns=host_ns))
    before = links(b)
    err = run_plugin("macvlan", "ADD", c, netns=b.path, container_id="cb", in_ns=host_ns).error
    assert err["code"] == 7 and "already in use" in err["msg"], err
    assert links(b) == before and leases(tmp_path) == ["10.91.0.2"]
    ok(run_plugin("macvlan", "DEL", c, netns=a.path, container_id="ca", in_ns=host_ns))
