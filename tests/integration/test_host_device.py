"""host-device: move a host interface into a container and give it back, exec'd as a
runtime does. The spare devices are veth ends in the throwaway host namespace (their
peers in a namespace of their own, for traffic); kernelpath, pciBusID and deviceID
are resolved through a sysfs tree the test builds (PYCNI_SYSFS), as the reference's
own tests do, since this machine has no spare NIC to hand out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns, PluginRun
from tests.traffic import ping

pytestmark = pytest.mark.root

DEV = "pytd0"


def hd_conf(ipam: bool = True, version: str = "1.0.0", **keys: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": version, "name": "hdnet", "type": "host-device"}
    if ipam:
        conf["ipam"] = {
            "type": "static",
            "addresses": [{"address": "10.88.0.2/24", "gateway": "10.88.0.1"}],
            # with its gateway spelled out: the reference's CHECK (1.1.1) matches a
            # route without "gw" only against a route without a gateway
            "routes": [{"dst": "198.51.100.0/24", "gw": "10.88.0.1"}],
        }
    conf.update(keys)
    return conf


class Env:
    def __init__(self, run_plugin, run_reference, host: Netns, peer: Netns, tmp: Path) -> None:
        self.run_plugin, self.run_reference = run_plugin, run_reference
        self.host, self.peer, self.tmp = host, peer, tmp
        self.sys = tmp / "sys"

    def run(self, verb: str, conf: Any, ns: Netns | None, cid: str = "c1", ref: bool = False,
            netns: str | None = None, ifname: str = "eth0", **kw: Any) -> PluginRun:  # fmt: skip
        env = dict(kw.pop("env_extra", {}), PYCNI_SYSFS=str(self.sys))
        runner = self.run_reference if ref else self.run_plugin
        if ref:
            env = {}
        path = netns if netns is not None else (ns.path if ns else "")
        return runner("host-device", verb, conf, netns=path, container_id=cid, ifname=ifname,
                      in_ns=self.host, env_extra=env, **kw)  # fmt: skip

    def add(self, conf: dict, ns: Netns, cid: str = "c1", **kw: Any) -> dict[str, Any]:
        res = self.run("ADD", conf, ns, cid, **kw)
        assert res.rc == 0, res.stdout + res.stderr
        return res.json

    def fake_pci(self, pci: str = "0000:00:09.0", driver: str = "virtio-pci") -> None:
        drivers = self.sys / "bus/pci/drivers" / driver
        drivers.mkdir(parents=True, exist_ok=True)
        real = self.sys / "devices/pci0000:00" / pci
        (real / "net" / DEV).mkdir(parents=True, exist_ok=True)
        (real / "driver").symlink_to(drivers)
        bus = self.sys / "bus/pci/devices"
        bus.mkdir(parents=True, exist_ok=True)
        (bus / pci).symlink_to(real)


@pytest.fixture
def env(run_plugin, run_reference, host_ns, container_ns, tmp_path) -> Env:
    peer = container_ns()
    host_ns.run("ip", "link", "add", DEV, "type", "veth", "peer", "name", "pytp0",
                "netns", peer.name)  # fmt: skip
    host_ns.run("ip", "link", "set", DEV, "up")
    peer.run("ip", "addr", "add", "10.88.0.1/24", "dev", "pytp0")
    peer.run("ip", "link", "set", "pytp0", "up")
    return Env(run_plugin, run_reference, host_ns, peer, tmp_path)


def _alias(ns: Netns, name: str) -> str | None:
    link = ns.link(name)
    return None if link is None else link.get("ifalias", "")


def _global_addrs(ns: Netns, name: str) -> list[str]:
    return [a for a in ns.addrs(name) if not a.startswith("fe80")]


def _back_home(env: Env, mac: str, c: Netns | None = None, alias: str = "") -> None:
    link = env.host.link(DEV)
    assert link is not None and link["address"] == mac, link
    assert "UP" not in link["flags"]  # given back down, as the reference does
    assert link.get("ifalias", "") == alias and _global_addrs(env.host, DEV) == []
    if c is not None:
        assert c.link("eth0") is None


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_move_in_apply_ipam_check_give_back(version: str, env: Env, container_ns) -> None:
    c = container_ns()
    mac = env.host.link(DEV)["address"]
    conf = hd_conf(version=version, device=DEV)
    out = env.add(conf, c)
    assert out["interfaces"] == [{"name": "eth0", "mac": mac, "sandbox": c.path}]
    assert out["ips"][0]["address"] == "10.88.0.2/24" and out["ips"][0]["interface"] == 0
    # kernel state: gone from the host, in the container as eth0 with its host name as alias
    assert env.host.link(DEV) is None
    link = c.link("eth0")
    assert link["address"] == mac and "UP" in link["flags"] and link["ifalias"] == DEV
    assert c.addrs("eth0")[0] == "10.88.0.2/24"
    assert any(r["dst"] == "198.51.100.0/24" and r["gateway"] == "10.88.0.1" for r in c.routes())
    assert ping(c, "10.88.0.1")  # the device's peer answers through it
    if version not in ("0.3.1",):
        chk = env.run("CHECK", dict(conf, prevResult=out), c)
        assert chk.rc == 0, chk.stdout
        if version != "1.1.0":  # the reference binary speaks up to 1.0.0
            chk = env.run("CHECK", dict(conf, prevResult=out), c, ref=True)
            assert chk.rc == 0, chk.stdout
    d = env.run("DEL", conf, c)
    assert d.rc == 0, d.stdout
    _back_home(env, mac, c)
    assert env.run("DEL", conf, c).rc == 0  # nothing left to give back: success


def test_selectors(env: Env, container_ns) -> None:
    """hwaddr, kernelpath, pciBusID, runtimeConfig.deviceID (PCI and auxiliary bus)."""
    mac = env.host.link(DEV)["address"]
    env.fake_pci()
    aux = env.sys / "bus/auxiliary/devices/mlx5_core.sf.2/net" / DEV
    aux.mkdir(parents=True)
    for keys in (
        {"hwaddr": mac.upper()},
        {"hwaddr": mac.replace(":", "-")},
        {"kernelpath": str(env.sys / "devices/pci0000:00/0000:00:09.0")},
        {"pciBusID": "0000:00:09.0"},
        {"runtimeConfig": {"deviceID": "0000:00:09.0"}},
        {"runtimeConfig": {"deviceID": "mlx5_core.sf.2"}},
    ):
        c = container_ns()
        conf = hd_conf(ipam=False, **keys)
        out = env.add(conf, c)
        assert out["interfaces"] == [{"name": "eth0", "mac": mac, "sandbox": c.path}], keys
        assert c.link("eth0")["address"] == mac and env.host.link(DEV) is None
        assert env.run("DEL", conf, c).rc == 0
        _back_home(env, mac, c)


def test_dpdk_device_is_not_moved(env: Env, container_ns) -> None:
    env.fake_pci(driver="vfio-pci")
    c = container_ns()
    conf = hd_conf(pciBusID="0000:00:09.0")
    out = env.add(conf, c)
    assert out["interfaces"] == [{"name": "eth0", "sandbox": c.path}]
    assert out["ips"][0]["address"] == "10.88.0.2/24"  # reported, not applied
    assert env.host.link(DEV) is not None and c.link("eth0") is None
    assert env.run("CHECK", dict(conf, prevResult=out), c).rc == 0
    assert env.run("DEL", conf, c).rc == 0 and env.host.link(DEV) is not None


def test_without_ipam_and_other_ifname(env: Env, container_ns) -> None:
    c = container_ns()
    conf = hd_conf(ipam=False, device=DEV)
    out = env.add(conf, c, ifname="net1")
    assert out["interfaces"][0]["name"] == "net1" and "ips" not in out
    assert c.addrs("net1") == [] or all(a.startswith("fe80") for a in c.addrs("net1"))
    assert env.run("DEL", conf, c, ifname="net1").rc == 0
    assert env.host.link(DEV) is not None


def test_cross_del_with_the_reference(env: Env, container_ns) -> None:
    mac = env.host.link(DEV)["address"]
    conf = hd_conf(device=DEV)
    c = container_ns()
    out = env.add(conf, c)
    d = env.run("DEL", conf, c, ref=True)  # theirs gives ours back (by the alias)
    assert d.rc == 0, d.stdout
    _back_home(env, mac, c, alias=DEV)  # 1.1.1 leaves the alias set
    env.host.run("ip", "link", "set", DEV, "alias", "")
    c2 = container_ns()
    theirs = env.add(conf, c2, "c2", ref=True)
    assert theirs["interfaces"][0]["mac"] == mac and _alias(c2, "eth0") == DEV
    assert env.run("CHECK", dict(conf, prevResult=theirs), c2, "c2").rc == 0
    d = env.run("DEL", conf, c2, "c2")  # ours gives theirs back
    assert d.rc == 0, d.stdout
    _back_home(env, mac, c2)
    del out


def test_del_after_the_netns_is_gone(env: Env, container_ns, state_dir) -> None:
    mac = env.host.link(DEV)["address"]
    conf = hd_conf(device=DEV)
    # A physical NIC returns to the node when its namespace dies, under its container
    # name and with its alias. (The kernel moves it to the initial namespace; in this
    # sandbox the test moves it to the throwaway host namespace itself, then destroys
    # the container's namespace.)
    c = container_ns()
    env.add(conf, c)
    path = c.path
    c.run("ip", "link", "set", "eth0", "netns", env.host.name)
    os.system(f"ip netns del {c.name}")
    assert env.host.link("eth0")["ifalias"] == DEV
    d = env.run("DEL", conf, None, netns=path)
    assert d.rc == 0, d.stdout
    _back_home(env, mac)
    assert env.host.link("eth0") is None and not list((state_dir / "host-device").rglob("*.json"))
    # and the same with no CNI_NETNS at all
    c2 = container_ns()
    env.add(conf, c2, "c2")
    c2.run("ip", "link", "set", "eth0", "netns", env.host.name)
    d = env.run("DEL", conf, None, "c2")
    assert d.rc == 0, d.stdout
    _back_home(env, mac)
    # A veth dies with its namespace: nothing to give back, DEL still succeeds
    c3 = container_ns()
    env.add(conf, c3, "c3")
    os.system(f"ip netns del {c3.name}")
    d = env.run("DEL", conf, None, "c3", netns=c3.path)
    assert d.rc == 0, d.stdout
    assert env.host.link(DEV) is None and not list((state_dir / "host-device").rglob("*.json"))


def test_gc_gives_back_forgotten_devices(env: Env, container_ns, state_dir) -> None:
    mac = env.host.link(DEV)["address"]
    conf = hd_conf(ipam=False, version="1.1.0", device=DEV)
    c = container_ns()
    env.add(conf, c)
    gc = dict(conf)
    gc["cni.dev/valid-attachments"] = [{"containerID": "c1", "ifname": "eth0"}]
    assert env.run("GC", gc, None).rc == 0 and c.link("eth0") is not None  # still valid
    gc["cni.dev/valid-attachments"] = []
    res = env.run("GC", gc, None)
    assert res.rc == 0, res.stdout
    _back_home(env, mac, c)
    assert env.run("STATUS", conf, None).rc == 0


def test_failed_add_gives_the_device_back(env: Env, container_ns, state_dir) -> None:
    mac = env.host.link(DEV)["address"]
    c = container_ns()
    conf = hd_conf(device=DEV)
    conf["ipam"]["routes"] = [{"dst": "192.0.2.0/24", "gw": "203.0.113.1"}]  # unreachable gw
    res = env.run("ADD", conf, c)
    assert res.rc != 0 and "192.0.2.0/24" in res.error["msg"], res.stdout
    link = env.host.link(DEV)
    assert link["address"] == mac and "UP" in link["flags"]  # back, and up as it was
    assert link.get("ifalias", "") == "" and _global_addrs(env.host, DEV) == []
    assert c.link("eth0") is None
    assert not list((state_dir / "host-device").rglob("*.json"))
    # an IPAM that refuses its config: nothing moved either
    bad = hd_conf(device=DEV)
    bad["ipam"]["addresses"] = [{"address": "nonsense"}]
    err = env.run("ADD", bad, c).error
    assert err["code"] == 7 and env.host.link(DEV) is not None and c.link("eth0") is None


def test_refusals(env: Env, container_ns, state_dir) -> None:
    c = container_ns()
    env.host.run("ip", "link", "add", "pytbr9", "type", "bridge")
    env.fake_pci("0000:00:0a.0")
    os.unlink(env.sys / "devices/pci0000:00/0000:00:0a.0/driver")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({}, 7, 'specify either "device"'),
        ({"device": 5}, 7, "device"),
        ({"device": "a/b"}, 7, "device"),
        ({"device": "x" * 16}, 7, "device"),
        ({"device": "pytnone"}, 7, "not found"),
        ({"device": "lo"}, 7, "loopback"),
        ({"device": "pytbr9"}, 7, "cannot change namespace"),
        ({"hwaddr": "zz:zz"}, 7, "MAC"),
        ({"hwaddr": True}, 7, "hwaddr"),
        ({"hwaddr": "02:00:00:00:00:99"}, 7, "no interface has MAC"),
        ({"kernelpath": "devices/x"}, 7, "must be absolute"),
        ({"kernelpath": "/etc"}, 7, "must be absolute"),
        ({"kernelpath": str(env.sys / "devices/../../etc")}, 7, "must be absolute"),
        ({"kernelpath": str(env.sys / "devices/none")}, 7, "no net directory"),
        ({"pciBusID": "../../etc"}, 7, "pciBusID"),
        ({"pciBusID": "0000:00:0a.0"}, 7, "has no driver"),
        ({"pciBusID": "0000:00:0b.0"}, 7, "has no driver"),
        ({"runtimeConfig": {"deviceID": "0000:99:00.0"}}, 7, "not found or unsupported"),
        ({"runtimeConfig": {"deviceID": ".."}}, 7, "deviceID"),
        ({"runtimeConfig": "x"}, 7, "runtimeConfig"),
        ({"device": DEV, "ipam": {"type": "no-such-ipam"}}, 7, "failed to find plugin"),
        ({"device": DEV, "dns": {"nameservers": "x"}}, 6, "nameservers"),
    ]
    links_before = env.host.ip_json("link", "show")
    for keys, code, needle in cases:
        conf = hd_conf(ipam=False)
        conf.update(keys)
        err = env.run("ADD", conf, c).error
        assert err["code"] == code, (keys, err)
        assert needle.lower() in (err["msg"] + err.get("details", "")).lower(), (keys, err)
        assert env.host.ip_json("link", "show") == links_before, keys
        assert c.link("eth0") is None and not list((state_dir / "host-device").rglob("*.json"))
    c.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x0")
    err = env.run("ADD", hd_conf(device=DEV), c).error
    assert err["code"] == 4 and "already exists" in err["msg"]
    assert env.host.link(DEV) is not None
    assert env.run("ADD", hd_conf(device=DEV), c, args="FOO=1").error["code"] == 4
    err = env.run("CHECK", hd_conf(device=DEV), c).error
    assert err["code"] == 7 and "prevResult" in err["msg"]


@pytest.mark.parametrize("point", ["after-move", "after-ipam"])
def test_injected_failures_roll_back_and_kills_are_cleaned_by_del(
    point: str, env: Env, container_ns, state_dir
) -> None:
    mac = env.host.link(DEV)["address"]
    c = container_ns()
    conf = hd_conf(device=DEV)
    res = env.run("ADD", conf, c, env_extra={"PYCNI_FAULT": f"fail:{point}"})
    assert res.error["msg"] == f"injected failure at {point}"
    link = env.host.link(DEV)
    assert link["address"] == mac and "UP" in link["flags"] and link.get("ifalias", "") == ""
    assert c.link("eth0") is None and not list((state_dir / "host-device").rglob("*.json"))
    # killed (SIGKILL) right there: the device stays in the container, and DEL, which
    # finds it by its alias and our record, gives it back
    res = env.run("ADD", conf, c, env_extra={"PYCNI_FAULT": point})
    assert res.rc == -9 or res.rc == 137, res
    assert c.link("eth0") is not None and env.host.link(DEV) is None
    assert env.run("DEL", conf, c).rc == 0
    _back_home(env, mac, c)
    assert not list((state_dir / "host-device").rglob("*.json"))
