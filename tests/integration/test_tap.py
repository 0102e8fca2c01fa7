"""tap, exec'd as a runtime does, in real namespaces: the device read back with
`ip -d -j`, frames read by a process that attaches to it (as a VM would), the bridge
port, bad keys, rollback. The reference plugins on this machine (1.1.1) have no tap,
so there is no cross-DEL peer here (its DEL is `ip link del` of the name, which is
what ours does too)."""

from __future__ import annotations

import grp
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration import sublinks
from tests.integration.sublinks import links, ok

pytestmark = pytest.mark.root

# Attach to the tap as a VM does, wait for one ARP request from the container's
# address, print its sender IP.
_READER = r"""
import fcntl, os, select, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
flags = 0x0002 | 0x1000 | (0x0100 if sys.argv[2] == "1" else 0)
fcntl.ioctl(fd, 0x400454CA, struct.pack("=16sH22x", sys.argv[1].encode(), flags))
print("ready", flush=True)
while select.select([fd], [], [], 5)[0]:
    frame = os.read(fd, 2048)
    if frame[12:14] == b"\x08\x06":
        print(".".join(str(b) for b in frame[28:32]), flush=True)
        break
"""


def conf(tmp_path: Path, with_ipam: bool = True, **keys: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"cniVersion": "1.0.0", "name": "tapnet", "type": "tap"}
    if with_ipam:
        c["ipam"] = sublinks.host_local(tmp_path, routes=[],
                                        ranges=[[{"subnet": "10.93.0.0/24"}]])  # fmt: skip
    c.update(keys)
    return {k: v for k, v in c.items() if v is not None}


def leases(tmp_path: Path) -> list[str]:
    return sublinks.leases(tmp_path, "tapnet")


def tap_info(ns: Any, name: str) -> dict[str, Any]:
    return ns.ip_json("-d", "link", "show", "dev", name)[0]


def _name(lookup: Any, number: int) -> str:
    """What `ip` prints for a tap's owner or group: the name when it has one."""
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def test_add_check_del_with_frames(run_plugin, host_ns, container_ns, tmp_path) -> None:
    a = container_ns()
    c = conf(tmp_path, mac="02:11:22:33:44:55", mtu=1400, multiQueue=True, owner=1000,
             group=100)  # fmt: skip
    r = ok(run_plugin("tap", "ADD", c, netns=a.path, ifname="tap0", container_id="ca",
                      in_ns=host_ns))  # fmt: skip
    assert r["interfaces"] == [{"name": "tap0", "mac": "02:11:22:33:44:55", "sandbox": a.path}]
    assert r["ips"] == [{"interface": 0, "address": "10.93.0.2/24", "gateway": "10.93.0.1"}]
    info = tap_info(a, "tap0")
    data = info["linkinfo"]["info_data"]
    assert info["linkinfo"]["info_kind"] == "tun" and data["type"] == "tap"
    assert data["persist"] is True and data["multi_queue"] is True and data["pi"] is False
    assert str(data["user"]) == _name(pwd.getpwuid, 1000)
    assert str(data["group"]) == _name(grp.getgrgid, 100)
    assert info["mtu"] == 1400 and info["address"] == "02:11:22:33:44:55"
    assert "UP" in info["flags"] and a.addrs("tap0") == ["10.93.0.2/24"]
    assert host_ns.link("tap0") is None
    # a reader attaches to the persistent device and sees the container's ARP request
    reader = subprocess.Popen(
        ["ip", "netns", "exec", a.name, sys.executable, "-c", _READER, "tap0", "1"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "netns", "exec", a.name, "ping", "-c", "1", "-W", "1",
                        "10.93.0.9"], capture_output=True)  # fmt: skip
        assert reader.stdout.readline().strip() == "10.93.0.2"
    finally:
        reader.kill()
        reader.wait()
    ok(run_plugin("tap", "CHECK", {**c, "prevResult": r}, netns=a.path, ifname="tap0",
                  container_id="ca", in_ns=host_ns))  # fmt: skip
    ok(run_plugin("tap", "DEL", c, netns=a.path, ifname="tap0", container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    assert a.link("tap0") is None and leases(tmp_path) == []
    ok(run_plugin("tap", "DEL", c, netns=a.path, ifname="tap0", container_id="ca",
                  in_ns=host_ns))  # fmt: skip


def test_l2_bridge_port_and_selinux_note(run_plugin, host_ns, container_ns, tmp_path) -> None:
    a = container_ns()
    a.run("ip", "link", "add", "br0", "type", "bridge")
    c = conf(tmp_path, with_ipam=False, bridge="br0",
             selinuxcontext="system_u:system_r:container_t:s0")  # fmt: skip
    run = run_plugin("tap", "ADD", c, netns=a.path, ifname="tap0", container_id="ca",
                     in_ns=host_ns)  # fmt: skip
    r = ok(run)
    assert "ips" not in r
    info = tap_info(a, "tap0")
    assert info["master"] == "br0" and "UP" in info["flags"]
    assert info["linkinfo"]["info_data"]["multi_queue"] is False
    assert "user" not in info["linkinfo"]["info_data"]  # no owner: root attaches
    if not Path("/sys/fs/selinux/enforce").exists():
        assert "SELinux is not enabled" in run.stderr and "ignored" in run.stderr
    ok(run_plugin("tap", "DEL", c, netns=a.path, ifname="tap0", container_id="ca",
                  in_ns=host_ns))  # fmt: skip
    assert a.link("tap0") is None and a.link("br0") is not None


BAD_KEYS = [
    ({"bridge": "nobr0"}, 7, "failed to get bridge nobr0"),
    ({"bridge": "lo"}, 7, "failed to get bridge lo"),
    ({"bridge": "a b"}, 7, "'bridge' is not a valid interface name"),
    ({"owner": -1}, 7, "'owner'"),
    ({"group": "wheel"}, 7, "'group'"),
    ({"multiQueue": "true"}, 7, "'multiQueue' must be true or false"),
    ({"mtu": 20}, 7, "'mtu' must be 0"),
    ({"mtu": 70000}, 7, "'mtu'"),
    ({"mac": "not-a-mac"}, 7, "invalid MAC address"),
    ({"selinuxcontext": 5}, 7, "'selinuxContext' must be a string"),
    ({"ipam": {"type": "nosuchipam"}}, 7, "nosuchipam"),
]


@pytest.mark.parametrize(("keys", "code", "needle"), BAD_KEYS)
def test_bad_keys_change_nothing(run_plugin, host_ns, container_ns, tmp_path,
                                 keys: dict[str, Any], code: int, needle: str) -> None:  # fmt: skip
    a = container_ns()
    before = links(a)
    err = run_plugin("tap", "ADD", conf(tmp_path, **keys), netns=a.path, ifname="tap0",
                     container_id="ca", in_ns=host_ns).error  # fmt: skip
    assert err["code"] == code and needle in err["msg"] + err.get("details", ""), err
    assert links(a) == before and leases(tmp_path) == []


@pytest.mark.parametrize("point", ["after-link", "after-ipam", "after-addresses"])
def test_failed_add_rolls_back(run_plugin, host_ns, container_ns, tmp_path, point: str) -> None:
    a = container_ns()
    before = links(a)
    r = run_plugin("tap", "ADD", conf(tmp_path, mtu=1400), netns=a.path, ifname="tap0",
                   container_id="ca", in_ns=host_ns,
                   env_extra={"PYCNI_FAULT": f"fail:{point}"})  # fmt: skip
    assert "injected failure" in r.error["msg"]
    assert links(a) == before and leases(tmp_path) == []


def test_existing_name_is_refused_not_attached(run_plugin, host_ns, container_ns,
                                               tmp_path) -> None:  # fmt: skip
    """TUNSETIFF on an existing tap would attach to it: the plugin must refuse first."""
    a = container_ns()
    a.run("ip", "tuntap", "add", "mode", "tap", "name", "tap0")
    err = run_plugin("tap", "ADD", conf(tmp_path), netns=a.path, ifname="tap0",
                     container_id="ca", in_ns=host_ns).error  # fmt: skip
    assert err["code"] == 4 and "already exists" in err["msg"]
    assert a.link("tap0") is not None and leases(tmp_path) == []
