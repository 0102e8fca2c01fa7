"""Dynamic host ports: which free port a `-p 80` or `-p 8000-8010:80` gets.

Docker's rules (moby daemon/libnetwork/portallocator), stateless here:
- `-p 80`: a port from the kernel's ephemeral range (net.ipv4.ip_local_port_range,
  per network namespace; 49153-65535 when unreadable), minus
  net.ipv4.ip_local_reserved_ports, which the kernel keeps out of its own automatic
  choices and so do we.
- `-p 8000-8010:80`: a port from that range, honoured as given (reserved ports
  included), like an explicitly requested port.
- Lowest port first, which is what a freshly started dockerd hands out.
- Never a port already published (`taken`, the caller's records), never a port any
  socket of that protocol holds in this network namespace (/proc/net/*: listening,
  bound or connected), and only after a bind() to it succeeded; the socket is closed
  again at once, so a concurrent caller can still race us between the pick and the
  firewall rule: the firewall's PortConflict is the final arbiter.

Stdlib only; reads /proc and makes sockets in the caller's network namespace.
"""

from __future__ import annotations

import _socket as socket  # the C module: `socket` would add enum and selectors (~2 ms)
import errno
import os

from pycni.firewall.base import PROTOCOLS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: moby's fallback when ip_local_port_range cannot be read
DEFAULT_DYNAMIC_RANGE = (49153, 65535)

_PORT_RANGE_SYSCTL = "/proc/sys/net/ipv4/ip_local_port_range"
_RESERVED_SYSCTL = "/proc/sys/net/ipv4/ip_local_reserved_ports"
# Socket options not every Python exposes by name (linux/in.h, linux/in6.h).
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
_IPV6_FREEBIND = 78


class PortAllocationError(Exception):
    """No free host port: Docker's "Bind for 0.0.0.0:8000 failed: port is already
    allocated", with the range instead of the port when one was searched."""

    def __init__(self, protocol: str, host_ip: str, port_range: tuple[int, int]) -> None:
        start, end = port_range
        ports = str(start) if start == end else f"{start}-{end}"
        # Docker's format has no brackets around an IPv6 address, and shows the
        # IPv4 unspecified address for "every address".
        super().__init__(
            f"Bind for {host_ip or '0.0.0.0'}:{ports} failed: port is already allocated"
        )
        self.protocol = protocol
        self.host_ip = host_ip
        self.port_range = port_range


# -- what the kernel says ----------------------------------------------------------------


def parse_port_range(text: str) -> tuple[int, int]:
    """ip_local_port_range: two numbers separated by white space ("32768\\t60999")."""
    fields = text.split()
    if len(fields) != 2:
        raise ValueError(f"expected two port numbers, got {text!r}")
    start, end = int(fields[0]), int(fields[1])
    if not 1 <= start <= end <= 65535:
        raise ValueError(f"invalid port range {start}-{end}")
    return start, end


def parse_reserved_ports(text: str) -> set[int]:
    """ip_local_reserved_ports: "" or comma-separated ports and ranges ("8080,9000-9010")."""
    ports: set[int] = set()
    for item in text.strip().split(","):
        item = item.strip()
        if not item:
            continue
        first, _, last = item.partition("-")
        ports.update(range(int(first), int(last or first) + 1))
    return ports


def dynamic_port_range() -> tuple[int, int]:
    """The ephemeral range of this network namespace."""
    try:
        with open(_PORT_RANGE_SYSCTL) as f:
            return parse_port_range(f.read())
    except (OSError, ValueError):
        return DEFAULT_DYNAMIC_RANGE


def reserved_ports() -> set[int]:
    """The ports this network namespace keeps out of automatic assignment."""
    try:
        with open(_RESERVED_SYSCTL) as f:
            return parse_reserved_ports(f.read())
    except (OSError, ValueError):
        return set()  # moby, too, ignores reserved ports it cannot read


def parse_proc_net(text: str) -> set[int]:
    """Local ports of every socket in a /proc/net/{tcp,tcp6,udp,udp6} table
    (`local_address` is ADDR:PORT in hex, e.g. 0100007F:1F90)."""
    ports: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 1 and ":" in fields[1]:
            ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def parse_proc_sctp_eps(text: str) -> set[int]:
    """Local ports of /proc/net/sctp/eps (SCTP endpoints; LPORT is decimal)."""
    lines = text.splitlines()
    if not lines:
        return set()
    column = lines[0].split().index("LPORT")
    return {int(fields[column]) for fields in map(str.split, lines[1:]) if len(fields) > column}


def bound_ports(protocol: str) -> set[int]:
    """Ports any socket of `protocol` holds in this network namespace, any address."""
    if protocol == "sctp":
        paths, parse = ["/proc/net/sctp/eps"], parse_proc_sctp_eps
    else:
        paths, parse = [f"/proc/net/{protocol}", f"/proc/net/{protocol}6"], parse_proc_net
    ports: set[int] = set()
    for path in paths:
        try:
            with open(path) as f:
                ports |= parse(f.read())
        except FileNotFoundError:
            pass  # no IPv6, or no SCTP module: then no such socket either
    return ports


# -- the bind test -----------------------------------------------------------------------

_SOCKET_TYPES = {
    "tcp": (socket.SOCK_STREAM, socket.IPPROTO_TCP),
    "udp": (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
    "sctp": (socket.SOCK_STREAM, getattr(socket, "IPPROTO_SCTP", 132)),
}


def port_is_free(protocol: str, host_ip: str, port: int) -> bool:
    """Whether bind() to host_ip:port succeeds now ("" = every IPv4 and IPv6 address).

    The socket never listens and is closed at once. IP_FREEBIND lets the test work
    for an address that is not (yet) local: a published port is a DNAT rule, it does
    not need the address. Errors other than EADDRINUSE (EACCES below
    ip_unprivileged_port_start, say) are raised: retrying other ports would not help.
    """
    sock = _bind_port(protocol, host_ip, port)
    if sock is None:
        return False
    if sock is not _NO_SOCKET:
        sock.close()
    return True


class PortInUseError(Exception):
    """A host socket holds the port: Docker's "bind: address already in use"."""

    def __init__(self, protocol: str, host_ip: str, port: int) -> None:
        family = "6" if ":" in host_ip else "4"
        shown = f"[{host_ip}]" if ":" in host_ip else host_ip or "0.0.0.0"
        super().__init__(
            f"driver failed programming external connectivity: Error starting userland "
            f"proxy: listen {protocol}{family} {shown}:{port}: bind: address already in use"
        )


def hold_port(protocol: str, host_ip: str, port: int) -> socket.socket | None:
    """Bind host_ip:port for as long as the returned socket stays open (never listening,
    so nothing is accepted on it): a host service that holds the port already makes
    this fail with PortInUseError instead of being silently overridden by the DNAT of
    the published port, and while it is held no host process can bind it unnoticed
    (podman's conmon holds published ports the same way). None where no socket of the
    protocol can exist (SCTP without the module)."""
    sock = _bind_port(protocol, host_ip, port)
    if sock is None:
        raise PortInUseError(protocol, host_ip, port)
    return None if sock is _NO_SOCKET else sock


_NO_SOCKET = socket.socket  # sentinel: "no socket of this protocol can exist here"


def _bind_port(protocol: str, host_ip: str, port: int) -> Any:
    """A socket bound to host_ip:port, None when the port is in use, or _NO_SOCKET."""
    if protocol == "sctp" and not os.path.exists("/proc/net/sctp"):
        # Without the sctp module no SCTP socket exists; creating one to find out
        # would load the module into the host's kernel.
        return _NO_SOCKET
    kind, proto = _SOCKET_TYPES[protocol]
    if host_ip:
        family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
        return _bind(family, kind, proto, host_ip, port, dual_stack=False)
    try:
        # One dual-stack socket on [::] conflicts with anything bound on the port in
        # either family, so it answers for both at once.
        return _bind(socket.AF_INET6, kind, proto, "::", port, dual_stack=True)
    except OSError as exc:
        if exc.errno != errno.EAFNOSUPPORT:  # kernel without IPv6
            raise
    return _bind(socket.AF_INET, kind, proto, "0.0.0.0", port, dual_stack=False)


def _bind(
    family: int, kind: int, proto: int, addr: str, port: int, dual_stack: bool
) -> socket.socket | None:
    # No SO_REUSEADDR: a later bind() by anyone, with or without it, then conflicts.
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
            level, option = socket.IPPROTO_IPV6, _IPV6_FREEBIND
        else:
            level, option = socket.IPPROTO_IP, _IP_FREEBIND
        try:
            sock.setsockopt(level, option, 1)
        except OSError:
            pass  # old kernel: the test then needs a local address, as Docker's does
        try:
            sock.bind((addr, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                sock.close()
                return None
            raise
    except BaseException:
        sock.close()
        raise
    return sock


def pick_free_port(
    protocol: str,
    host_ip: str = "",
    taken: set[int] | frozenset[int] = frozenset(),
    port_range: tuple[int, int] | None = None,
) -> int:
    """A free host port for `protocol` on `host_ip` ("" = every address): from
    `port_range` when given (PortBinding.host_port_range), else from the ephemeral
    range minus reserved ports; never one in `taken` or held by a socket.
    Raises PortAllocationError when there is none."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"invalid proto: {protocol}")
    if port_range is None:
        start, end = dynamic_port_range()
        skip = reserved_ports()
    else:
        start, end = port_range
        if not 1 <= start <= end <= 65535:
            raise ValueError(f"invalid port range: {start}-{end}")
        skip = set()
    busy = bound_ports(protocol)
    for port in range(start, end + 1):
        if port in taken or port in skip or port in busy:
            continue
        if port_is_free(protocol, host_ip, port):
            return port
    raise PortAllocationError(protocol, host_ip, (start, end))
