"""Dynamic host ports, picked inside a throwaway namespace.

The ephemeral range, reserved ports and /proc/net tables are per network namespace,
so each test narrows them in its own `host_ns` and runs the allocator there (a fresh
Python exec'd through `ip netns exec`). The real host's sysctls are only read, to
prove they did not change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycni.runtime.hostports import (
    PortAllocationError,
    parse_port_range,
    parse_proc_net,
    parse_proc_sctp_eps,
    parse_reserved_ports,
)
from tests.conftest import REPO, Netns

pytestmark = pytest.mark.root

PYTHON = str(REPO / ".venv" / "bin" / "python")
SYSCTL = Path("/proc/sys/net/ipv4")

# Runs in the namespace: hold the sockets in `hold`, then report what each call gave.
SCRIPT = """
import json, socket, sys
from pycni.runtime import hostports

args = json.loads(sys.argv[1])
held = []
for proto, family, addr, port, v6only in args["hold"]:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, kind)
    if family == 6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    sock.bind((addr, port))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    held.append(sock)
out = []
for name, kwargs in args["calls"]:
    if "port_range" in kwargs:
        kwargs["port_range"] = tuple(kwargs["port_range"])
    if "taken" in kwargs:
        kwargs["taken"] = set(kwargs["taken"])
    try:
        out.append({"ok": getattr(hostports, name)(**kwargs)})
    except hostports.PortAllocationError as exc:
        out.append({"error": str(exc)})
print(json.dumps(out, default=sorted))
"""


def in_ns(
    ns: Netns, calls: list[tuple[str, dict[str, Any]]], hold: list[tuple[Any, ...]] | None = None
) -> list[Any]:
    args = json.dumps({"hold": hold or [], "calls": calls})
    out = json.loads(ns.run(PYTHON, "-c", SCRIPT, args))
    return [r.get("ok", r.get("error")) for r in out]


def pick(**kwargs: Any) -> tuple[str, dict[str, Any]]:
    kwargs.setdefault("protocol", "tcp")
    return ("pick_free_port", kwargs)


def set_sysctl(ns: Netns, name: str, value: str) -> None:
    # Written from inside the namespace: these two are per network namespace.
    ns.run("sh", "-c", f"echo '{value}' > /proc/sys/net/ipv4/{name}")


@pytest.fixture(autouse=True)
def real_host_sysctls_unchanged() -> Any:
    names = ("ip_local_port_range", "ip_local_reserved_ports")
    before = {n: (SYSCTL / n).read_text() for n in names}
    yield
    assert {n: (SYSCTL / n).read_text() for n in names} == before


@pytest.fixture
def narrow(host_ns: Netns) -> Netns:
    """host_ns with the ephemeral range 40000-40009."""
    set_sysctl(host_ns, "ip_local_port_range", "40000 40009")
    assert host_ns.sysctl("net.ipv4.ip_local_port_range").split() == ["40000", "40009"]
    return host_ns


def test_fresh_namespace_gives_the_lowest_ephemeral_port(narrow: Netns) -> None:
    assert in_ns(narrow, [pick(), pick(protocol="udp"), pick(protocol="sctp")]) == [40000] * 3
    assert in_ns(narrow, [("dynamic_port_range", {}), ("reserved_ports", {})]) == [
        [40000, 40009],
        [],
    ]


def test_port_held_by_a_socket_is_skipped(narrow: Netns) -> None:
    hold = [("tcp", 4, "0.0.0.0", 40000, 0), ("udp", 6, "::", 40001, 0)]
    assert in_ns(narrow, [pick(), pick(protocol="udp")], hold) == [40001, 40000]


def test_socket_on_one_address_blocks_every_address(narrow: Netns) -> None:
    hold = [("tcp", 4, "127.0.0.1", 40000, 0), ("tcp", 6, "::1", 40001, 1)]
    calls = [pick(), pick(host_ip="0.0.0.0"), pick(host_ip="::"), pick(host_ip="192.0.2.1")]
    assert in_ns(narrow, calls, hold) == [40002] * 4


def test_bind_check_by_family(narrow: Netns) -> None:
    # [::]:40000 v6only conflicts with "every address" and IPv6, not with IPv4.
    hold = [("tcp", 6, "::", 40000, 1)]
    calls = [
        ("port_is_free", {"protocol": "tcp", "host_ip": "", "port": 40000}),
        ("port_is_free", {"protocol": "tcp", "host_ip": "::1", "port": 40000}),
        ("port_is_free", {"protocol": "tcp", "host_ip": "0.0.0.0", "port": 40000}),
        ("port_is_free", {"protocol": "tcp", "host_ip": "127.0.0.1", "port": 40000}),
        ("port_is_free", {"protocol": "udp", "host_ip": "", "port": 40000}),
        # an address that is not local: IP_FREEBIND lets the check run anyway
        ("port_is_free", {"protocol": "tcp", "host_ip": "198.51.100.7", "port": 40000}),
        ("port_is_free", {"protocol": "tcp", "host_ip": "2001:db8::7", "port": 40000}),
    ]
    assert in_ns(narrow, calls, hold) == [False, False, True, True, True, True, False]


def test_taken_ports_are_skipped(narrow: Netns) -> None:
    assert in_ns(narrow, [pick(taken=[40000, 40001, 40003])]) == [40002]


def test_reserved_ports_are_skipped(narrow: Netns) -> None:
    set_sysctl(narrow, "ip_local_reserved_ports", "40000-40002,40004")
    assert narrow.sysctl("net.ipv4.ip_local_reserved_ports") == "40000-40002,40004"
    calls = [
        ("reserved_ports", {}),
        pick(),
        pick(taken=[40003]),
        pick(protocol="udp", taken=[40003, 40005]),
        # an explicit range is honoured as given, reserved ports included (moby)
        pick(port_range=[40000, 40009]),
    ]
    assert in_ns(narrow, calls) == [[40000, 40001, 40002, 40004], 40003, 40005, 40006, 40000]


def test_explicit_range(narrow: Netns) -> None:
    hold = [("tcp", 4, "0.0.0.0", 8000, 0)]
    calls = [
        pick(port_range=[8000, 8010]),
        pick(port_range=[8000, 8010], taken=[8001]),
        pick(port_range=[8005, 8005]),
        pick(protocol="udp", port_range=[8000, 8010]),
    ]
    assert in_ns(narrow, calls, hold) == [8001, 8002, 8005, 8000]


def test_exhausted(narrow: Netns) -> None:
    hold = [("tcp", 4, "0.0.0.0", 8000, 0), ("tcp", 4, "0.0.0.0", 40009, 0)]
    calls = [
        pick(port_range=[8000, 8000]),
        pick(port_range=[8000, 8001], taken=[8001]),
        pick(host_ip="::1", port_range=[8000, 8000]),
        pick(taken=list(range(40000, 40009))),
    ]
    assert in_ns(narrow, calls, hold) == [
        "Bind for 0.0.0.0:8000 failed: port is already allocated",
        "Bind for 0.0.0.0:8000-8001 failed: port is already allocated",
        "Bind for ::1:8000 failed: port is already allocated",
        "Bind for 0.0.0.0:40000-40009 failed: port is already allocated",
    ]


def test_all_reserved(narrow: Netns) -> None:
    set_sysctl(narrow, "ip_local_reserved_ports", "40000-40009")
    assert in_ns(narrow, [pick(protocol="udp", host_ip="10.1.2.3")]) == [
        "Bind for 10.1.2.3:40000-40009 failed: port is already allocated"
    ]


# -- the parsers, on the kernel's formats ------------------------------------------------


def test_parse_port_range() -> None:
    assert parse_port_range("32768\t60999\n") == (32768, 60999)
    assert parse_port_range("40000 40000") == (40000, 40000)
    for bad in ("", "1", "5 4", "0 10", "1 65536", "a b"):
        with pytest.raises(ValueError):
            parse_port_range(bad)


def test_parse_reserved_ports() -> None:
    assert parse_reserved_ports("\n") == set()
    assert parse_reserved_ports("8080\n") == {8080}
    assert parse_reserved_ports("1-3,5,7-8\n") == {1, 2, 3, 5, 7, 8}


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0F02000A:A2C4 0100000A:0016 01 00000000:00000000 02:000A7B6D 00000000     0        0 2 1
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A
"""
PROC_SCTP_EPS = """\
 ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS
ffff8f  ffff8e 2   10  29   36412     0 24735 10.0.0.1
"""


def test_parse_proc_tables() -> None:
    assert parse_proc_net(PROC_NET_TCP) == {8080, 41668}
    assert parse_proc_net(PROC_NET_TCP6) == {80}
    assert parse_proc_net("header only\n") == set()
    assert parse_proc_sctp_eps(PROC_SCTP_EPS) == {36412}
    assert parse_proc_sctp_eps("") == set()


def test_error_message_and_fields() -> None:
    exc = PortAllocationError("udp", "", (8000, 8010))
    assert str(exc) == "Bind for 0.0.0.0:8000-8010 failed: port is already allocated"
    assert (exc.protocol, exc.host_ip, exc.port_range) == ("udp", "", (8000, 8010))
