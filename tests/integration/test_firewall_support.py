"""Helpers for the firewall tests (this module holds no tests itself).

- `in_ns(ns, fn, ...)` runs backend code inside a throwaway namespace, in a thread that
  entered it, so the table, chains, sysctls and conntrack entries it touches live and
  die with that namespace.
- `Topology` wires a throwaway node: a bridge with two containers, and an "outside"
  namespace on a veth, all with addresses this module chose.
- `serve` / `probe` send real packets with real sockets (python in `ip netns exec`).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pycni import netns
from pycni.firewall.base import Attachment
from tests.conftest import Netns, sh

BACKENDS = ("nftables", "iptables")

# Addresses of the test topology (only ever inside namespaces the test created).
BRIDGE = "br0"
GW4, GW6 = "10.88.0.1", "fd88::1"
HOST_OUT4, HOST_OUT4_B, HOST_OUT6 = "198.51.100.1", "198.51.100.3", "2001:db8:5::1"
OUTSIDE4, OUTSIDE6 = "198.51.100.2", "2001:db8:5::2"
NETWORK = "testnet"


def in_ns(ns: Netns, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """fn(*args, **kw) inside `ns` (this thread only), returning or raising its result."""
    box: dict[str, Any] = {}

    def target() -> None:
        fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with netns.entered(fd):
                box["value"] = fn(*args, **kw)
        except BaseException as exc:
            box["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class Container:
    def __init__(self, name: str, ns: Netns, ip4: str, ip6: str, host_veth: str) -> None:
        self.name = name
        self.ns = ns
        self.ip4 = ip4
        self.ip6 = ip6
        self.host_veth = host_veth

    def attachment(self, network: str = NETWORK, cid: str | None = None) -> Attachment:
        return Attachment(
            network,
            cid or self.name,
            "eth0",
            [ipaddress.ip_interface(f"{self.ip4}/24"), ipaddress.ip_interface(f"{self.ip6}/64")],
            bridge=BRIDGE,
            host_veth=self.host_veth,
        )


class Topology:
    """host: br0 (10.88.0.1/24, fd88::1/64) with containers c1 (.2) and c2 (.3);
    out0 (198.51.100.1 and .3/24, 2001:db8:5::1/64) to the outside namespace (.2)."""

    def __init__(self, host: Netns, make_ns: Callable[[], Netns]) -> None:
        self.host = host
        self.outside = make_ns()
        h = host.name
        for key in (
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv6.conf.default.accept_dad=0",
        ):
            sh("ip", "netns", "exec", h, "sysctl", "-qw", key)
        sh("ip", "-n", h, "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "-n", h, "addr", "add", f"{GW4}/24", "dev", BRIDGE)
        sh("ip", "-n", h, "addr", "add", f"{GW6}/64", "dev", BRIDGE, "nodad")
        sh("ip", "-n", h, "link", "set", BRIDGE, "up")
        o = self.outside.name
        sh("ip", "-n", h, "link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", o)
        for addr in (f"{HOST_OUT4}/24", f"{HOST_OUT4_B}/24"):
            sh("ip", "-n", h, "addr", "add", addr, "dev", "out0")
        sh("ip", "-n", h, "addr", "add", f"{HOST_OUT6}/64", "dev", "out0", "nodad")
        sh("ip", "-n", h, "link", "set", "out0", "up")
        sh("ip", "-n", o, "addr", "add", f"{OUTSIDE4}/24", "dev", "eth0")
        sh("ip", "-n", o, "addr", "add", f"{OUTSIDE6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", o, "link", "set", "eth0", "up")
        self.c1 = self._container("c1", make_ns(), "10.88.0.2", "fd88::2")
        self.c2 = self._container("c2", make_ns(), "10.88.0.3", "fd88::3")

    def _container(self, name: str, ns: Netns, ip4: str, ip6: str) -> Container:
        h = self.host.name
        veth = f"veth{name}"
        sh(
            "ip",
            "-n",
            h,
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name,
        )
        sh("ip", "-n", h, "link", "set", veth, "master", BRIDGE, "up")
        # Like the bridge plugin's hairpinMode (podman's default): a container reaching
        # its *own* published port gets the packet back on the port it came from.
        sh("ip", "-n", h, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
        sh("ip", "-n", ns.name, "addr", "add", f"{ip4}/24", "dev", "eth0")
        sh("ip", "-n", ns.name, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns.name, "link", "set", "eth0", "up")
        sh("ip", "-n", ns.name, "route", "add", "default", "via", GW4)
        sh("ip", "-n", ns.name, "-6", "route", "add", "default", "via", GW6)
        return Container(name, ns, ip4, ip6, veth)

    def route_outside_to_containers(self) -> None:
        """Let the outside reach container addresses directly through the host."""
        sh("ip", "-n", self.outside.name, "route", "add", "10.88.0.0/24", "via", HOST_OUT4)
        sh("ip", "-n", self.outside.name, "-6", "route", "add", "fd88::/64", "via", HOST_OUT6)


@pytest.fixture
def topo(host_ns: Netns, container_ns: Callable[[], Netns]) -> Topology:
    return Topology(host_ns, container_ns)


@pytest.fixture
def fw_state(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    state = tmp_path / "fw-state"
    state.mkdir()
    monkeypatch.setenv("PYCNI_STATE_DIR", str(state))
    return state


# -- traffic ----------------------------------------------------------------------------

SERVER = r"""
import socket, sys
proto, host, port, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(fam, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind((host, port))
if proto == "tcp":
    s.listen(16)
print("ready", flush=True)
while True:
    if proto == "tcp":
        c, peer = s.accept()
        c.sendall(f"{tag} {peer[0]}".encode())
        c.close()
    else:
        data, peer = s.recvfrom(2048)
        s.sendto(f"{tag} {peer[0]}".encode(), peer)
"""

CLIENT = r"""
import socket, sys
proto, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sport = int(sys.argv[5]) if len(sys.argv) > 5 else 0
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(fam, kind)
s.settimeout(timeout)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if sport:
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
try:
    if proto == "tcp":
        s.connect((host, port))
        print(s.recv(200).decode())
    else:
        s.sendto(b"ping", (host, port))
        print(s.recvfrom(200)[0].decode())
except Exception as exc:
    print(f"ERR {type(exc).__name__}")
"""


class Servers:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, ns: Netns, proto: str, host: str, port: int, tag: str) -> None:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns.name,
                sys.executable,
                "-c",
                SERVER,
                proto,
                host,
                str(port),
                tag,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    yield s
    s.stop()


def probe(ns: Netns, proto: str, host: str, port: int, timeout: float = 2.0, sport: int = 0) -> str:
    """The server's answer ("<tag> <client address>"), or "ERR <exception>"."""
    args = [proto, host, str(port), str(timeout)] + ([str(sport)] if sport else [])
    return ns.run(sys.executable, "-c", CLIENT, *args, timeout=timeout + 30).strip()


def nft_text(ns: Netns) -> str:
    return ns.run("nft", "list", "ruleset")


def ruleset_without_ours(ns: Netns) -> str:
    """`nft list ruleset` minus `table inet pycni { ... }` (text, byte for byte)."""
    out, skip = [], False
    for line in nft_text(ns).splitlines(keepends=True):
        if line.startswith("table inet pycni {"):
            skip = True
            continue
        if skip:
            if line.startswith("}"):
                skip = False
            continue
        out.append(line)
    return "".join(out)
