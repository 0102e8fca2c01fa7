"""Real packets between test namespaces: small servers and clients run with
`ip netns exec`, talking only to addresses the test itself assigned."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import Netns, sh

PY = sys.executable

# A TCP server that answers every connection with "<tag> <peer ip>" and closes.
_TCP_SERVER = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
print('ready', flush=True)
while True:
    c, peer = s.accept()
    c.sendall(f"{sys.argv[3]} {peer[0]}\n".encode())
    c.close()
"""

_UDP_SERVER = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print('ready', flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(f"{sys.argv[3]} {peer[0]}\n".encode(), peer)
"""

_TCP_CLIENT = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[3]))
if len(sys.argv) > 4:
    s.bind((sys.argv[4], 0))
s.connect((sys.argv[1], int(sys.argv[2])))
print(s.recv(200).decode().strip())
"""

_UDP_CLIENT = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
s.sendto(b'hi', (sys.argv[1], int(sys.argv[2])))
print(s.recvfrom(200)[0].decode().strip())
"""


@contextmanager
def server(
    ns: Netns | None, ip: str, port: int, tag: str = "hello", proto: str = "tcp"
) -> Iterator[None]:
    """Run a TCP or UDP responder in `ns` (None: the current namespace) until the block ends."""
    code = _TCP_SERVER if proto == "tcp" else _UDP_SERVER
    cmd = [PY, "-c", code, ip, str(port), tag]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns.name, *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise AssertionError(
                f"server in {ns} failed to start: {proc.stderr.read() if proc.stderr else ''}"
            )
        yield
    finally:
        proc.kill()
        proc.wait()


def connect(
    ns: Netns | None, ip: str, port: int, proto: str = "tcp", timeout: float = 2.0, source: str = ""
) -> str | None:
    """What the server at ip:port answered ("<tag> <client address seen>"), or None if unreachable."""
    code = _TCP_CLIENT if proto == "tcp" else _UDP_CLIENT
    cmd = [PY, "-c", code, ip, str(port), str(timeout)]
    if source:
        cmd.append(source)
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns.name, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
    return proc.stdout.strip() if proc.returncode == 0 else None


def ping(ns: Netns, ip: str, count: int = 1, timeout: int = 1) -> bool:
    six = ["-6"] if ":" in ip else []
    proc = subprocess.run(
        ["ip", "netns", "exec", ns.name, "ping", *six, "-c", str(count), "-W", str(timeout), ip],
        capture_output=True,
    )
    return proc.returncode == 0


def wire_outside(
    host: Netns,
    outside: Netns,
    host_ip: str = "198.18.0.1/24",
    outside_ip: str = "198.18.0.2/24",
    host_ip6: str = "",
    outside_ip6: str = "",
) -> None:
    """Connect `outside` (the "internet") to the throwaway host with a veth; the host's
    default route points at it. All addresses are the test's own (RFC 2544 / ULA)."""
    sh(
        "ip",
        "link",
        "add",
        "up0",
        "netns",
        host.name,
        "type",
        "veth",
        "peer",
        "name",
        "wan0",
        "netns",
        outside.name,
    )
    host.run("ip", "addr", "add", host_ip, "dev", "up0")
    outside.run("ip", "addr", "add", outside_ip, "dev", "wan0")
    host.run("ip", "link", "set", "up0", "up")
    outside.run("ip", "link", "set", "wan0", "up")
    host.run("ip", "route", "add", "default", "via", outside_ip.split("/")[0])
    if host_ip6:
        for ns, dev, addr in ((host, "up0", host_ip6), (outside, "wan0", outside_ip6)):
            ns.run("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=0")
            ns.run("ip", "-6", "addr", "add", addr, "dev", dev, "nodad")
        host.run("ip", "-6", "route", "add", "default", "via", outside_ip6.split("/")[0])
    time.sleep(0.05)
