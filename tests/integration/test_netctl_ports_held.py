"""A published port never silently takes over a host service, and stays ours while the
container lives (Docker refuses with "bind: address already in use"; podman holds its
published ports with sockets). Every process here runs in the test's node namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_netctl_run import Netctl, netctl  # noqa: F401 (fixture)

pytestmark = pytest.mark.root

HOLD = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
kind = socket.SOCK_STREAM if sys.argv[3] == 'tcp' else socket.SOCK_DGRAM
s = socket.socket(fam, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
if kind == socket.SOCK_STREAM:
    s.listen(1)
print('ready', flush=True)
sys.stdin.read()
"""

TRY_BIND = r"""
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[2] == 'tcp' else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(('0.0.0.0', int(sys.argv[1])))
    print('bound')
except OSError as exc:
    print(exc.strerror)
"""


def host_service(nc: Netctl, addr: str, port: int, proto: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["nsenter", f"--net={nc.node.path}", sys.executable, "-c", HOLD, addr, str(port), proto],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def try_bind(nc: Netctl, port: int, proto: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net={nc.node.path}", sys.executable, "-c", TRY_BIND, str(port), proto],
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.mark.parametrize(
    ("service_addr", "publish", "proto"),
    [
        ("0.0.0.0", "18611:80", "tcp"),
        ("127.0.0.1", "18611:80", "tcp"),  # a loopback-only service still owns the port
        ("0.0.0.0", "127.0.0.1:18611:80", "tcp"),
        ("::", "18611:80", "tcp"),
        ("0.0.0.0", "18611:53/udp", "udp"),
    ],
)
def test_a_port_a_host_service_holds_is_refused(
    netctl: Netctl,  # noqa: F811
    service_addr,
    publish,
    proto,
) -> None:
    svc = host_service(netctl, service_addr, 18611, proto)
    try:
        proc = netctl("run", "-d", "-p", publish, "--", "sleep", "30", check=False)
    finally:
        svc.kill()
        svc.wait()
    assert proc.returncode == 125, proc.stdout + proc.stderr
    assert "bind: address already in use" in proc.stderr and "18611" in proc.stderr
    assert netctl("ps", "-a", "-q").stdout.strip() == ""
    assert netctl.veths() == [] and netctl.leases() == [] and netctl.netns_files() == []


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_a_published_port_is_held_while_the_container_lives(netctl: Netctl, proto) -> None:  # noqa: F811
    spec = "18612:80" if proto == "tcp" else "18612:53/udp"
    netctl("run", "-d", "--name", "held", "-p", spec, "--", "sleep", "60")
    assert try_bind(netctl, 18612, proto) == "Address already in use"
    # the workload itself never sees the socket that holds the port
    init = json.loads(netctl("inspect", "held").stdout)[0]["State"]["Pid"]
    [pid] = Path(f"/proc/{init}/task/{init}/children").read_text().split()  # the workload
    fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert not [f for f in fds if f.startswith("socket:")], fds
    # ... and the init holds that socket but no netlink socket of the chain's (the
    # firewall library's, in the node's namespace)
    supervisor = int(Path(f"/proc/{init}/stat").read_text().rsplit(")", 1)[1].split()[1])
    netlink = set()
    for owner in (supervisor, init):
        for line in Path(f"/proc/{owner}/net/netlink").read_text().splitlines()[1:]:
            netlink.add(line.split()[-1])  # the socket's inode
    held = [os.readlink(f"/proc/{init}/fd/{fd}") for fd in os.listdir(f"/proc/{init}/fd")]
    inodes = [f[len("socket:[") : -1] for f in held if f.startswith("socket:[")]
    assert inodes and not set(inodes) & netlink, (held, netlink)
    netctl("rm", "-f", "held")
    assert try_bind(netctl, 18612, proto) == "bound"


def test_the_workload_inherits_no_descriptor_of_netctl(netctl: Netctl) -> None:  # noqa: F811
    """Only stdin, stdout and stderr reach the workload: before, it inherited netlink
    sockets of the firewall library and a pipe to its supervisor."""
    out = netctl(
        "run",
        "--rm",
        "-p",
        "18613:80",
        "--",
        sys.executable,
        "-c",
        "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))",
    ).stdout
    assert out.strip() in ("[0, 1, 2]", "[0, 1, 2, 3]"), out  # 3: the listing itself


def test_internal_networks_publish_nothing_and_say_so(netctl: Netctl) -> None:  # noqa: F811
    netctl("network", "create", "--internal", "--subnet", "10.67.0.0/24", "inner")
    proc = netctl(
        "run", "-d", "--name", "in1", "--network", "inner", "-p", "18614:80", "--", "sleep", "30"
    )
    assert "Published ports are discarded when using the internal network inner" in proc.stderr
    assert netctl("port", "in1").stdout.strip() == ""
    assert try_bind(netctl, 18614, "tcp") == "bound"  # not held either
    nft = subprocess.run(
        ["nsenter", f"--net={netctl.node.path}", "nft", "list", "ruleset"],
        capture_output=True,
        text=True,
    ).stdout
    assert "18614" not in nft
    netctl("rm", "-f", "in1")
