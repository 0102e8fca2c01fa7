"""How published ports are shown: the PORTS column of `docker ps` and `docker port`.

The display half of runtime/portspec.py (which re-exports it), kept apart because
`netctl ps` and `netctl port` run it on every call and portspec's parser needs
dataclasses, ipaddress and the firewall types, which cost more than the whole listing.
Any object with host_ip, host_port, container_port and protocol is shown: portspec's
PortMapping (pycni.firewall.base), as portspec expands it and the container record keeps it.
"""

from __future__ import annotations

import _socket

from pycni.firewall.base import PROTOCOLS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Protocol

    class ShownPort(Protocol):
        @property
        def host_ip(self) -> str: ...
        @property
        def host_port(self) -> int: ...
        @property
        def container_port(self) -> int: ...
        @property
        def protocol(self) -> str: ...


class PortSpecError(ValueError):
    """A `-p/--publish` value Docker would refuse; the message is Docker's own."""


def port_number(text: str) -> int | None:
    """A port as Go's strconv.ParseInt(s, 10, 0) reads it (an optional sign, then ASCII
    digits only: no spaces, underscores or other Unicode digits, which Python's int()
    accepts); None when it is not one, or outside 0-65535."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    port = int(text)
    return port if 0 <= port <= 65535 else None


# -- display: docker ps PORTS and docker port --------------------------------------------


def _join_host_port(host: str, port: str | int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _addr_key(ip: str) -> tuple[int, int]:
    # netip.Addr ordering: IPv4 before IPv6, then numerically (so 9.0.0.1 < 10.0.0.2).
    for family, version in ((_socket.AF_INET, 4), (_socket.AF_INET6, 6)):
        try:
            return (version, int.from_bytes(_socket.inet_pton(family, ip), "big"))
        except OSError:
            continue
    import ipaddress  # what inet_pton refuses (a zone index): ipaddress decides

    addr = ipaddress.ip_address(ip)
    return (addr.version, int(addr))


def format_ports(ports: Iterable[ShownPort]) -> str:
    """The PORTS column of `docker ps`, e.g. "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp".

    Docker's rules (cli/command/formatter DisplayablePorts): sort by container port,
    host address, host port, protocol; consecutive ports whose host port equals the
    container port collapse per address and protocol ("0.0.0.0:8000-8002->8000-8002/tcp");
    translated ports (host port != container port) are never collapsed and come last.
    """
    ordered = sorted(
        ports, key=lambda p: (p.container_port, _addr_key(p.host_ip), p.host_port, p.protocol)
    )
    groups: dict[tuple[str, str], list[int]] = {}  # (ip, proto) -> [first, last]
    result: list[str] = []
    translated: list[str] = []
    for port in ordered:
        if port.host_port != port.container_port:
            translated.append(
                f"{_join_host_port(port.host_ip, port.host_port)}->"
                f"{port.container_port}/{port.protocol}"
            )
            continue
        key = (port.host_ip, port.protocol)
        group = groups.get(key)
        if group is not None and port.container_port == group[1] + 1:
            group[1] = port.container_port
            continue
        if group is not None:
            # A gap: this run is finished and printed before the still-open runs.
            result.append(_group(key, group))
        # Re-assigning an existing key keeps its first-seen position, like Docker's
        # separately kept list of keys.
        groups[key] = [port.container_port, port.container_port]
    result.extend(_group(key, group) for key, group in groups.items())
    return ", ".join(result + translated)


def _group(key: tuple[str, str], group: list[int]) -> str:
    ip, protocol = key
    ports = str(group[0]) if group[0] == group[1] else f"{group[0]}-{group[1]}"
    return f"{_join_host_port(ip, ports)}->{ports}/{protocol}"


def _natural_key(text: str) -> list[tuple[int, ...]]:
    # github.com/fvbommel/sortorder.NaturalLess, which `docker port` sorts with:
    # digit runs compare by value (fewer leading zeros first on a tie) and sort before
    # any other byte; other bytes compare one by one.
    key: list[tuple[int, ...]] = []
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and "0" <= text[j] <= "9":
            j += 1
        if j > i:
            chunk = text[i:j]
            digits = chunk.lstrip("0")
            key.append((0, len(digits), int(digits or "0"), len(chunk) - len(digits)))
            i = j
        else:
            key.extend((1, byte) for byte in text[i].encode())
            i += 1
    return key


def format_port_lines(ports: Iterable[ShownPort], container_port: str = "") -> list[str]:
    """What `docker port CONTAINER [PRIVATE_PORT[/PROTO]]` prints, one line each:
    "80/tcp -> 0.0.0.0:8080" for every port, or just "0.0.0.0:8080" for the
    PRIVATE_PORT[/PROTO] asked for (tcp when no protocol is given)."""
    if container_port:
        number_text, _, proto = container_port.partition("/")
        number = port_number(number_text)
        protocol = proto.lower() or "tcp"
        if not number or protocol not in PROTOCOLS:
            raise PortSpecError(f"invalid port: {container_port}")
        lines = [
            _join_host_port(p.host_ip, p.host_port)
            for p in ports
            if p.container_port == number and p.protocol == protocol
        ]
    else:
        lines = [
            f"{p.container_port}/{p.protocol} -> {_join_host_port(p.host_ip, p.host_port)}"
            for p in ports
        ]
    return sorted(lines, key=_natural_key)
