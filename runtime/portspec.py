"""Docker's `-p/--publish` syntax: parse it, show it, expand it into firewall data.

Pure: no I/O, no kernel. The grammar and every error message follow Docker's own
parser (moby/go-connections `nat.ParsePortSpec`, behind `docker run -p`), so a user
moving a command line from Docker gets the same bindings or the same complaint.

Short syntax, `[ip:][hostPort:]containerPort[/proto]`:

    80                      container port 80, a dynamic host port, every address
    8080:80                 host port 8080
    1.2.3.4::80             one host address, a dynamic host port
    1.2.3.4:8080:80         one host address, host port 8080
    [::1]:8080:80           IPv6 in brackets (or without: Docker splits at the last
    ::1:8080:80             two colons, so `::1:8080:80` is [::1]:8080:80)
    8000-8010:80-90         equal ranges: one binding per port, pairwise
    8000-8010:80            a host range for one container port: one host port is
                            picked from the range when the container starts
    80-85                   a container range, each with a dynamic host port
    80/udp                  /tcp (default), /udp, /sctp, any case

Long syntax (docker run turns it into the short one; so do we):
`published=8080,target=80,protocol=udp,host_ip=1.2.3.4,mode=host`. `mode` is
accepted for compatibility with compose/swarm files and ignored: on one host,
`ingress` means nothing special. Unlike docker run, which silently drops them,
`host_ip` is honoured and an unknown key is an error.

Deliberate differences from Docker, each stricter: container port 0 is refused
(`invalid containerPort: 0`), and so is a host range starting at 0 (`0-10`, which
Docker lets through to its allocator with undefined results).

Types:
- `PortBinding`: one parsed binding; its host port may still be dynamic.
- `PortMapping` (pycni.firewall.base, the one published-port type): one binding on one
  address family with its host port chosen; what `docker ps` and `docker port` show,
  what the container record keeps, and (as runtimeConfig.portMappings) what the
  portmap plugin receives.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pycni.firewall.base import PROTOCOLS, PortMapping
from pycni.record import dataclass, replace
from pycni.runtime.portview import (  # noqa: F401 (the display half, re-exported)
    PortSpecError,
    format_port_lines,
    format_ports,
)
from pycni.runtime.portview import port_number as _port_number

TYPE_CHECKING = False  # typing costs more than a tenth of `run --network none`
if TYPE_CHECKING:
    from pycni.firewall.base import ProtocolName as Protocol
#: the protocols `-p` takes, by their lower-case name
_PROTOCOLS: dict[str, Protocol] = {p: p for p in PROTOCOLS}

#: Keys of the long syntax.
LONG_SYNTAX_KEYS = ("published", "target", "protocol", "host_ip", "mode")
#: Values of `mode=` (swarm's publish modes; both mean "on this host" here).
PUBLISH_MODES = ("host", "ingress")

IPV4_ANY = "0.0.0.0"
IPV6_ANY = "::"


@dataclass(frozen=True, kw_only=True, slots=True)
class PortBinding:
    """One `-p` binding: host address and port (maybe still to pick) -> container port."""

    #: "" = every IPv4 and IPv6 address; otherwise one address, normalised
    #: ("0.0.0.0" = every IPv4 address only, "::" = every IPv6 address only)
    host_ip: str = ""
    #: 1-65535, or 0 for a dynamic port from the kernel's ephemeral range;
    #: with `host_port_end`, the first port of the range to pick one from
    host_port: int = 0
    #: 0, or the last port of the host range one port is picked from
    host_port_end: int = 0
    #: 1-65535
    container_port: int
    #: "tcp" | "udp" | "sctp"
    protocol: Protocol = "tcp"

    @property
    def needs_host_port(self) -> bool:
        """True when a host port must still be picked (dynamic, or from a range)."""
        return self.host_port == 0 or self.host_port_end != 0

    @property
    def host_port_range(self) -> tuple[int, int] | None:
        """The ports a host port may be picked from; None for the kernel's ephemeral
        range (hostports.pick_free_port takes this as `port_range`)."""
        if self.host_port == 0:
            return None
        return (self.host_port, self.host_port_end or self.host_port)

    def with_host_port(self, host_port: int) -> PortBinding:
        """This binding with its host port chosen."""
        allowed = self.host_port_range
        if not 1 <= host_port <= 65535 or (
            allowed is not None and not allowed[0] <= host_port <= allowed[1]
        ):
            raise ValueError(f"host port {host_port} is outside {self.to_spec()}")
        return replace(self, host_port=host_port, host_port_end=0)

    def to_port_mapping(self) -> PortMapping:
        """This binding, its host port chosen, as the portmap plugin receives it
        (host_ip "" = every address of both families)."""
        if self.needs_host_port:
            raise ValueError(f"no host port chosen yet for {self.to_spec()}")
        return PortMapping(self.host_port, self.container_port, self.protocol, self.host_ip)

    def to_spec(self) -> str:
        """The short `-p` syntax that parses back to exactly this binding."""
        return _spec(self, self.container_port, self.container_port)


# -- parsing ---------------------------------------------------------------------------


def parse_publish(spec: str) -> list[PortBinding]:
    """Parse one `-p/--publish` value (short or long syntax) into bindings, in order."""
    if "=" in spec:  # docker run's test for the long syntax
        spec = _long_to_short(spec)
    return _parse_short(spec)


def parse_publish_all(specs: Iterable[str]) -> list[PortBinding]:
    """Parse several `-p` values (one per flag), keeping their order."""
    return [binding for spec in specs for binding in parse_publish(spec)]


def _long_to_short(spec: str) -> str:
    # docker run rewrites the long syntax to "published:target/protocol" and parses
    # that, so a missing or bad value gets the short syntax's message; we do the same.
    params = {"protocol": "tcp"}
    for field in spec.split(","):
        key, sep, value = field.partition("=")
        if not sep or not key:
            raise PortSpecError(
                f"invalid publish opts format (should be name=value but got '{field}')"
            )
        if key not in LONG_SYNTAX_KEYS:
            raise PortSpecError(f"invalid field key: {key}")  # swarm's --publish wording
        params[key] = value
    mode = params.get("mode")
    if mode is not None and mode not in PUBLISH_MODES:
        raise PortSpecError(
            f"invalid publish mode value ({mode}): must be either 'ingress' or 'host'"
        )
    short = f"{params.get('published', '')}:{params.get('target', '')}/{params['protocol']}"
    host_ip = params.get("host_ip", "")
    if host_ip:
        if ":" in host_ip and not host_ip.startswith("["):
            host_ip = f"[{host_ip}]"
        short = f"{host_ip}:{short}"
    return short


def _split_parts(raw: str) -> tuple[str, str, str]:
    # Docker splits at every colon and takes the last two fields as the ports, so an
    # IPv6 address works without brackets as long as both port fields are present.
    parts = raw.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _parse_short(raw: str) -> list[PortBinding]:
    ip_text, host_text, container_text = _split_parts(raw)
    port_text, _, proto_text = container_text.partition("/")
    if not port_text:
        raise PortSpecError(f"no port specified: {raw}<empty>")
    proto_text = proto_text.lower() or "tcp"
    protocol = _PROTOCOLS.get(proto_text)
    if protocol is None:
        raise PortSpecError(f"invalid proto: {proto_text}")
    host_ip = _parse_host_ip(ip_text)

    container = _port_range(port_text)
    if container is None or container[0] == 0:
        raise PortSpecError(f"invalid containerPort: {port_text}")
    host = (0, 0)
    if host_text:
        parsed = _port_range(host_text)
        if parsed is None or (parsed[0] == 0 and parsed[1] != 0):
            raise PortSpecError(f"invalid hostPort: {host_text}")
        host = parsed
        # A host range for a single container port is the range to pick one from;
        # otherwise the two ranges pair up port by port and must be equally long.
        if host[1] - host[0] != container[1] - container[0] and container[0] != container[1]:
            raise PortSpecError(
                "invalid ranges specified for container and host Ports: "
                f"{port_text} and {host_text}"
            )

    if container[0] == container[1] and host[0] != host[1]:
        return [
            PortBinding(
                host_ip=host_ip,
                host_port=host[0],
                host_port_end=host[1],
                container_port=container[0],
                protocol=protocol,
            )
        ]
    return [
        PortBinding(
            host_ip=host_ip,
            host_port=host[0] + i if host[0] else 0,
            container_port=port,
            protocol=protocol,
        )
        for i, port in enumerate(range(container[0], container[1] + 1))
    ]


def _port_range(text: str) -> tuple[int, int] | None:
    """A port or a range, "80" or "80-90" (nat.ParsePortRange); None when invalid."""
    start_text, sep, end_text = text.partition("-")
    start = _port_number(start_text)
    if start is None:
        return None
    if not sep or start_text == end_text:
        return (start, start)
    end = _port_number(end_text)
    if end is None or end < start:
        return None
    return (start, end)


def _parse_host_ip(text: str) -> str:
    if text.startswith("["):
        text = _unbracket(text)
    if not text:
        return ""  # also "[]": Docker reads it as "every address"
    # Go's net.ParseIP knows no IPv6 zones ("fe80::1%eth0"); Python's does.
    try:
        addr = ipaddress.ip_address(text) if "%" not in text else None
    except ValueError:
        addr = None
    if addr is None:
        raise PortSpecError(f"invalid IP address: {text}")
    # Docker's allocator unmaps ::ffff:a.b.c.d and binds the IPv4 address.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _unbracket(ip: str) -> str:
    """Strip the brackets of "[addr]" with the checks (and messages) of Go's
    net.SplitHostPort(ip + ":"), which is how Docker does it."""
    hostport = ip + ":"

    def fail(why: str) -> PortSpecError:
        return PortSpecError(f"invalid IP address {ip}: address {hostport}: {why}")

    end = hostport.find("]")
    if end < 0:
        raise fail("missing ']' in address")
    if end + 1 != len(hostport) - 1:  # "]" must be followed by the final ":"
        raise fail(
            "too many colons in address" if hostport[end + 1] == ":" else "missing port in address"
        )
    if "[" in hostport[1:]:
        raise fail("unexpected '[' in address")
    return hostport[1:end]


# -- the other way: bindings back to -p strings ------------------------------------------


def _host_spec(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _spec(first: PortBinding, container_start: int, container_end: int) -> str:
    container = str(container_start)
    if container_end != container_start:
        container += f"-{container_end}"
    host = ""
    if first.host_port:
        host = str(first.host_port)
        last = first.host_port_end or first.host_port + (container_end - container_start)
        if last != first.host_port:
            host += f"-{last}"
    if first.host_ip:
        return f"{_host_spec(first.host_ip)}:{host}:{container}/{first.protocol}"
    if host:
        return f"{host}:{container}/{first.protocol}"
    return f"{container}/{first.protocol}"


def format_publish(bindings: Iterable[PortBinding]) -> list[str]:
    """`-p` values that parse back to `bindings`, in order; runs of consecutive
    ports (as a range spec produces them) are written as one range."""
    specs: list[str] = []
    run: list[PortBinding] = []

    def flush() -> None:
        if run:
            specs.append(_spec(run[0], run[0].container_port, run[-1].container_port))
            run.clear()

    for binding in bindings:
        if run and _continues(run[-1], binding):
            run.append(binding)
            continue
        flush()
        run.append(binding)
    flush()
    return specs


def _continues(prev: PortBinding, nxt: PortBinding) -> bool:
    if prev.host_port_end or nxt.host_port_end:
        return False  # "8000-8010:80" is one binding and never part of a run
    return (
        prev.host_ip == nxt.host_ip
        and prev.protocol == nxt.protocol
        and nxt.container_port == prev.container_port + 1
        and (nxt.host_port == prev.host_port + 1 if prev.host_port else nxt.host_port == 0)
    )


# -- expanding into both families --------------------------------------------------------


def expand(bindings: Iterable[PortBinding], *, ipv6: bool = True) -> list[PortMapping]:
    """One PortMapping per address family a binding covers: host_ip "" becomes
    0.0.0.0 and (with `ipv6`) ::, on the same host port. Every host port must have
    been chosen already (`PortBinding.with_host_port`)."""
    published: list[PortMapping] = []
    for binding in bindings:
        if binding.needs_host_port:
            raise ValueError(f"no host port chosen yet for {binding.to_spec()}")
        addrs = [binding.host_ip] if binding.host_ip else [IPV4_ANY, IPV6_ANY][: 2 if ipv6 else 1]
        published.extend(
            PortMapping(
                host_ip=addr,
                host_port=binding.host_port,
                container_port=binding.container_port,
                protocol=binding.protocol,
            )
            for addr in addrs
        )
    return published
