"""Kernel edge of the overlay: the VXLAN device and its per-peer entries (flannel's
vxlan backend without learning):

    for each other host P with lease subnet S_P, VTEP MAC M_P, underlay address U_P:
        route   S_P via <S_P network address> dev ovx<vni> onlink
        neigh   <S_P network address> lladdr M_P dev ovx<vni> nud permanent
        fdb     M_P dev ovx<vni> dst U_P self permanent

and the underlay's UDP packets to and from this host's VTEP address are not tracked by
conntrack (`pycni.firewall.tunnel`): each new inner connection would otherwise add two
never-answered UDP entries per host (docs/overlay.md, "Where the request rate goes").

Only the agent (a long-lived process) calls this, so it drives iproute2 (`ip -batch`,
one exec per change set) rather than the plugins' stdlib netlink client, which has no
VXLAN/FDB verbs. Every command is idempotent (`replace`), so a restarted agent
re-programs over what is there without a blip, and removes only what is stale.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

from pycni import errors
from pycni.firewall import tunnel
from pycni.firewall.nft import NftError

DSTPORT = 4789  # IANA's VXLAN port (the kernel's default is Linux's old 8472)


class Peer:
    __slots__ = ("mac", "public_ip", "subnet")

    def __init__(self, subnet: ipaddress.IPv4Network, public_ip: str, mac: str) -> None:
        self.subnet = subnet
        self.public_ip = public_ip
        self.mac = mac

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Peer) and (self.subnet, self.public_ip, self.mac) == (
            other.subnet, other.public_ip, other.mac)  # fmt: skip

    def __hash__(self) -> int:
        return hash((self.subnet, self.public_ip, self.mac))

    def __repr__(self) -> str:
        return f"Peer({self.subnet}, {self.public_ip}, {self.mac})"


def device_name(vni: int) -> str:
    return f"ovx{vni}"


def _ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise errors.CniError(f"ip {' '.join(args)} failed", proc.stderr.strip())
    return proc.stdout


def _batch(lines: list[str]) -> None:
    if not lines:
        return
    proc = subprocess.run(
        ["ip", "-force", "-batch", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise errors.CniError("ip -batch failed", proc.stderr.strip()[:500])


def underlay(advertise: str) -> tuple[str, str, int]:
    """(interface, IPv4 address, MTU) of `cluster-advertise` (an interface name or one of
    this host's addresses)."""
    links = json.loads(_ip("-j", "-4", "addr", "show") or "[]")
    for link in links:
        for a in link.get("addr_info", []):
            if link["ifname"] == advertise or a.get("local") == advertise:
                return link["ifname"], a["local"], int(link.get("mtu", 1500))
    raise errors.InvalidConfig(
        f"cluster-advertise {advertise!r} is neither an interface with an IPv4 address nor "
        "an address of this host",
        "set cluster-advertise to the underlay interface (e.g. eth0) or its address",
    )


def ensure_device(vni: int, local_ip: str, dev: str, mac: str, mtu: int,
                  subnet: ipaddress.IPv4Network) -> None:  # fmt: skip
    """The VXLAN device, up, with our VTEP MAC and the subnet's network address /32
    (the next hop other hosts use for us). Left as is when it already matches."""
    name = device_name(vni)
    cur = json.loads(_ip("-j", "-d", "link", "show", "dev", name, check=False) or "[]")
    if cur:
        info = cur[0].get("linkinfo", {}).get("info_data", {})
        if info.get("id") != vni or info.get("local") != local_ip:
            _ip("link", "del", name)
            cur = []
    if not cur:
        try:
            _ip("link", "add", name, "type", "vxlan", "id", str(vni), "local", local_ip,
                "dev", dev, "dstport", str(DSTPORT), "nolearning")  # fmt: skip
        except errors.CniError as exc:
            if "Unknown device type" in exc.details or "not supported" in exc.details:
                raise errors.CniError(
                    "the kernel has no VXLAN support", "load the vxlan module (modprobe vxlan)"
                ) from None
            raise
    _batch([
        f"link set {name} address {mac} mtu {mtu}",
        f"addr replace {subnet.network_address}/32 dev {name}",
        f"link set {name} up",
    ])  # fmt: skip
    # stale addresses from an earlier lease
    for link in json.loads(_ip("-j", "-4", "addr", "show", "dev", name) or "[]"):
        for a in link.get("addr_info", []):
            if a.get("local") != str(subnet.network_address):
                _ip("addr", "del", f"{a['local']}/{a['prefixlen']}", "dev", name, check=False)
    try:
        tunnel.ensure(local_ip, DSTPORT)
    except (errors.CniError, NftError) as exc:  # a speed-up, never a reason to stop forwarding
        print(f"vxlan: underlay traffic stays tracked by conntrack: {exc}", file=sys.stderr)


def _vteps(skip: str = "") -> set[str]:
    """Local addresses of this host's VXLAN devices on DSTPORT (but `skip`)."""
    links = json.loads(_ip("-j", "-d", "link", "show", "type", "vxlan", check=False) or "[]")
    return {
        info["local"]
        for link in links
        if link.get("ifname") != skip
        and (info := link.get("linkinfo", {}).get("info_data", {})).get("port") == DSTPORT
        and info.get("local")
    }


def delete_device(vni: int) -> None:
    name = device_name(vni)
    cur = json.loads(_ip("-j", "-d", "link", "show", "dev", name, check=False) or "[]")
    local = cur[0].get("linkinfo", {}).get("info_data", {}).get("local", "") if cur else ""
    _ip("link", "del", name, check=False)
    if local and local not in _vteps(skip=name):
        tunnel.release(local, DSTPORT)


def programmed(vni: int) -> set[Peer]:
    """The peers the kernel forwards to now (from the device's routes and FDB)."""
    name = device_name(vni)
    routes = json.loads(_ip("-j", "route", "show", "dev", name, check=False) or "[]")
    neigh = {
        n["dst"]: n.get("lladdr", "")
        for n in json.loads(_ip("-j", "neigh", "show", "dev", name, check=False) or "[]")
    }
    proc = subprocess.run(
        ["bridge", "-j", "fdb", "show", "dev", name], capture_output=True, text=True
    )
    fdb = {f["mac"]: f.get("dst", "") for f in json.loads(proc.stdout or "[]") if f.get("dst")}
    out = set()
    for r in routes:
        gw = r.get("gateway")
        if not gw or "/" not in r.get("dst", ""):
            continue
        mac = neigh.get(gw, "")
        out.add(Peer(ipaddress.IPv4Network(r["dst"]), fdb.get(mac, ""), mac))
    return out


def program(vni: int, add: set[Peer], remove: set[Peer]) -> None:
    name = device_name(vni)
    lines = []
    for p in remove:
        gw = p.subnet.network_address
        lines += [f"route del {p.subnet} dev {name}", f"neigh del {gw} dev {name}"]
        if p.mac:
            lines.append(f"-family bridge fdb del {p.mac} dev {name} self")
    # deletions may name entries already gone: run them one by one, ignoring "not found"
    for line in lines:
        args = line.split()
        if args[0] == "-family":
            subprocess.run(["bridge", *args[2:]], capture_output=True)
        else:
            subprocess.run(["ip", *args], capture_output=True)
    adds = []
    for p in add:
        gw = p.subnet.network_address
        adds += [
            f"neigh replace {gw} lladdr {p.mac} dev {name} nud permanent",
            f"route replace {p.subnet} via {gw} dev {name} onlink",
        ]
    _batch(adds)
    for p in add:
        proc = subprocess.run(
            ["bridge", "fdb", "replace", p.mac, "dev", name, "dst", p.public_ip, "self", "permanent"],
            capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise errors.CniError("bridge fdb replace failed", proc.stderr.strip())
