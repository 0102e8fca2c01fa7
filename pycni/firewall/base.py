"""The firewall interface: domain data in, kernel rules out.

Plugins never write rule text. They hand a backend *what* they want (this attachment
is masqueraded; these ports are published to this container) and the backend decides
*how* (nftables sets and maps in one table of our own, or iptables chains of our own).
Every backend:

- owns its objects and never flushes or rewrites anyone else's tables or chains;
- applies each operation as one atomic batch;
- keys every entry by attachment (network, container ID, ifname), so DEL and GC find
  exactly what one attachment added, also without its IP addresses (DEL without netns);
- treats "already gone" as success on removal;
- saves the domain data of each attachment under the state dir, so `replay()` can
  restore everything after someone flushed the ruleset (netavark's firewall-reload).

Backends live next to this module: `nftables.py` (default) and `iptables.py` (fallback).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from typing import Literal, Protocol

    ProtocolName = Literal["tcp", "udp", "sctp"]

    IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

    from pycni.firewall.conditions import Condition
else:
    Protocol = object

#: the transport protocols a port can be published for, by their lower-case name
PROTOCOLS: tuple[ProtocolName, ...] = ("tcp", "udp", "sctp")
DEFAULT_STATE_DIR = "/var/lib/pycni"


def state_dir() -> str:
    """Where plugins keep their own state (saved firewall data, locks).
    PYCNI_STATE_DIR moves it (tests, sandboxes)."""
    return os.environ.get("PYCNI_STATE_DIR") or DEFAULT_STATE_DIR


class Attachment:
    """One container interface on one network: the unit every entry is keyed by."""

    __slots__ = ("bridge", "container_id", "host_veth", "ifname", "ips", "network")

    def __init__(
        self,
        network: str,
        container_id: str,
        ifname: str,
        ips: list[IPInterface] | None = None,
        bridge: str = "",
        host_veth: str = "",
    ) -> None:
        #: CNI network name (validated: [a-zA-Z0-9][a-zA-Z0-9_.-]*)
        self.network = network
        #: CNI_CONTAINERID (validated like the network name)
        self.container_id = container_id
        #: CNI_IFNAME inside the container
        self.ifname = ifname
        #: the container's addresses with their subnet prefix, e.g. 10.88.0.5/16
        self.ips = list(ips or [])
        #: the host bridge the container is attached to ("" when not bridged)
        self.bridge = bridge
        #: the host end of the container's veth ("" when unknown, e.g. on DEL)
        self.host_veth = host_veth

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.network, self.container_id, self.ifname)

    def to_dict(self) -> dict[str, object]:
        return {
            "network": self.network,
            "containerID": self.container_id,
            "ifname": self.ifname,
            "ips": [str(ip) for ip in self.ips],
            "bridge": self.bridge,
            "hostVeth": self.host_veth,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Attachment:
        import ipaddress  # a record is read only off the no-op path

        ips = d.get("ips") or []
        assert isinstance(ips, list)
        return cls(
            str(d["network"]),
            str(d["containerID"]),
            str(d["ifname"]),
            [ipaddress.ip_interface(str(i)) for i in ips],
            str(d.get("bridge") or ""),
            str(d.get("hostVeth") or ""),
        )


class PortMapping:
    """One published port: hostIP:hostPort/protocol -> containerPort. The one type for
    it: the portmap plugin reads runtimeConfig.portMappings into it, netctl's `-p`
    bindings become it once their host port is chosen (runtime/portspec.expand), the
    container record keeps it (`to_record`), `ps`/`port`/`inspect` show it."""

    __slots__ = ("container_port", "host_ip", "host_port", "protocol")

    def __init__(
        self, host_port: int, container_port: int, protocol: str = "tcp", host_ip: str = ""
    ) -> None:
        #: 1-65535
        self.host_port = host_port
        #: 1-65535
        self.container_port = container_port
        #: "tcp" | "udp" | "sctp" (lower case)
        self.protocol = protocol
        #: "" (every local address of the family), or one IPv4/IPv6 address;
        #: "0.0.0.0" / "::" are normalised to "" of that family by the caller
        self.host_ip = host_ip

    def checked(self, where: str = "port mapping") -> PortMapping:
        """The one validator of a published port, wherever it came from (the portmap
        plugin's runtimeConfig, a library caller): ports 1-65535, a protocol of
        PROTOCOLS in any case ("" is tcp), hostIP "" or an address. Returns the mapping
        normalised (lower-case protocol, the address in its canonical form)."""
        from pycni import errors

        for value, name, label in (
            (self.host_port, "hostPort", "host"),
            (self.container_port, "containerPort", "container"),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise errors.InvalidConfig(
                    f"Invalid {label} port number: {value}", f"{where}: {name} must be 1-65535"
                )
        proto = (self.protocol.lower() or "tcp") if isinstance(self.protocol, str) else ""
        if proto not in PROTOCOLS:
            raise errors.InvalidConfig(
                f"{where}: unsupported protocol {self.protocol!r}",
                f"use one of {', '.join(PROTOCOLS)}",
            )
        host_ip = self.host_ip or ""
        if host_ip:
            import ipaddress

            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise errors.InvalidConfig(
                    f"{where}: invalid hostIP {self.host_ip!r}", "use an IPv4 or IPv6 address"
                ) from None
        return PortMapping(self.host_port, self.container_port, proto, host_ip)

    @property
    def family(self) -> int:
        """4 or 6, by host_ip ("" counts as 4)."""
        return 6 if ":" in self.host_ip else 4

    def to_record(self) -> dict[str, object]:
        """netctl's container record form."""
        return {
            "host_port": self.host_port,
            "container_port": self.container_port,
            "protocol": self.protocol,
            "host_ip": self.host_ip,
        }

    def to_dict(self) -> dict[str, object]:
        """The CNI form (an entry of runtimeConfig.portMappings)."""
        d: dict[str, object] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip:
            d["hostIP"] = self.host_ip
        return d

    def __repr__(self) -> str:
        host = f"{self.host_ip}:" if self.host_ip else ""
        return f"PortMapping({host}{self.host_port}->{self.container_port}/{self.protocol})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortMapping) and (
            self.host_port,
            self.container_port,
            self.protocol,
            self.host_ip,
        ) == (other.host_port, other.container_port, other.protocol, other.host_ip)

    def __hash__(self) -> int:
        return hash((self.host_port, self.container_port, self.protocol, self.host_ip))


class Isolation:
    """One bridge network kept apart from the others (the isolation plugin's keys)."""

    __slots__ = ("bridge", "direct_routing", "icc", "index", "internal", "network")

    def __init__(
        self,
        network: str,
        bridge: str,
        internal: bool = False,
        icc: bool = True,
        direct_routing: frozenset[int] = frozenset(),
        index: int = 0,
    ) -> None:
        #: CNI network name
        self.network = network
        #: the network's host bridge (found again by name: a re-created one has a new index)
        self.bridge = bridge
        #: no routed traffic in or out of the network at all (docker network create --internal)
        self.internal = internal
        #: containers of the network may talk to each other through the gateway
        self.icc = icc
        #: the families (4, 6) whose containers may be reached by routed traffic they did
        #: not publish or ask for (Docker's gateway_mode_ipvN=routed)
        self.direct_routing = direct_routing
        #: the bridge's interface index when the caller looked it up already (0: unknown)
        self.index = index

    def to_dict(self) -> dict[str, object]:
        return {
            "bridge": self.bridge,
            "internal": self.internal,
            "icc": self.icc,
            "directRouting": sorted(self.direct_routing),
        }

    @classmethod
    def from_dict(cls, network: str, d: dict[str, object]) -> Isolation:
        routed = d.get("directRouting") or []
        assert isinstance(routed, list)
        return cls(
            network,
            str(d["bridge"]),
            d.get("internal") is True,
            d.get("icc") is not False,
            frozenset(f for f in routed if f in (4, 6)),
        )


class NetworkVerbs:
    """The verbs every backend shares: network isolation and spoof checking live in
    nftables tables of their own (`inet pycni_isolation`, `bridge pycni_spoof`) whichever
    backend publishes ports, so these never probe or pick a backend."""

    def ensure_isolation(self, net: Isolation) -> None:
        from pycni.firewall import isolation

        isolation.ensure(net)

    def check_isolation(self, net: Isolation) -> list[str]:
        from pycni.firewall import isolation

        return isolation.check(net)

    def remove_isolation(self, network: str) -> None:
        from pycni.firewall import isolation

        isolation.remove(network)

    def gc_isolation(self) -> list[int]:
        from pycni.firewall import isolation, overlay_isolation

        return isolation.collect_garbage() + overlay_isolation.collect_garbage()

    def ensure_overlay_isolation(
        self, network: str, bridge: str, vxlan: str, internal: bool
    ) -> None:
        from pycni.firewall import overlay_isolation

        overlay_isolation.ensure(network, bridge, vxlan, internal)

    def remove_overlay_isolation(self, network: str) -> None:
        from pycni.firewall import overlay_isolation

        overlay_isolation.remove(network)

    def add_spoofcheck(self, att: Attachment, mac: str) -> None:
        from pycni.firewall import spoofcheck

        spoofcheck.add(att, mac)

    def del_spoofcheck(self, network: str, container_id: str, ifname: str) -> None:
        from pycni.firewall import spoofcheck

        spoofcheck.delete(network, container_id, ifname)

    def check_spoofcheck(self, network: str, container_id: str, ifname: str) -> list[str]:
        from pycni.firewall import spoofcheck

        return spoofcheck.check(network, container_id, ifname)

    def gc_spoofcheck(self, network: str, valid: set[tuple[str, str]]) -> None:
        from pycni.firewall import spoofcheck

        spoofcheck.gc(network, valid)


class Firewall(Protocol):
    """What the bridge, portmap and isolation plugins (and `netctl system reload`, through
    `pycni.firewall.replay()`) ask of a backend."""

    name: str

    def available(self) -> bool:
        """True when this backend can be used on this machine (binary/library present, kernel support)."""
        ...

    # masquerade (bridge ipMasq): traffic from the container's address to anywhere
    # outside its own subnet, multicast excluded, leaves with the host's address.
    def add_masquerade(self, att: Attachment) -> None: ...
    def del_masquerade(self, network: str, container_id: str, ifname: str) -> None: ...
    def check_masquerade(self, att: Attachment) -> list[str]:
        """Human-readable descriptions of what is missing ([] when intact)."""
        ...

    # published ports (portmap)
    def add_port_mappings(
        self,
        att: Attachment,
        mappings: list[PortMapping],
        snat: bool = True,
        masq_all: bool = False,
        conditions: dict[int, list[Condition]] | None = None,
    ) -> None:
        """Publish atomically; with `conditions` (by address family) the ports of that
        family are rewritten only for packets that satisfy all of them. Raises
        PortConflict naming the first (hostIP, hostPort, protocol) another attachment
        already holds; nothing is added then."""
        ...

    def del_port_mappings(self, network: str, container_id: str, ifname: str) -> None: ...
    def check_port_mappings(
        self,
        att: Attachment,
        mappings: list[PortMapping],
        conditions: dict[int, list[Condition]] | None = None,
    ) -> list[str]: ...

    def gc(self, network: str, valid: set[tuple[str, str]]) -> list[str]:
        """Remove every entry of `network` whose (containerID, ifname) is not in `valid`;
        returns descriptions of what was removed."""
        ...

    def attachments(self) -> set[tuple[str, str, str]]:
        """(network, containerID, ifname) of every attachment that has entries now."""
        ...

    def replay(self) -> int:
        """Re-apply the saved domain data of every attachment (after a flush); returns how many."""
        ...

    # network isolation (the isolation plugin): nft on every backend, see NetworkVerbs
    def ensure_isolation(self, net: Isolation) -> None:
        """Isolate the network (idempotent) and save its intent for replay."""
        ...

    def check_isolation(self, net: Isolation) -> list[str]: ...
    def remove_isolation(self, network: str) -> None: ...
    def gc_isolation(self) -> list[int]:
        """Drop the isolation of bridges and overlays whose interfaces no longer exist;
        their bridges' interface indexes."""
        ...

    # an overlay network (bridge + VXLAN device) in the same table (overlay_isolation.py)
    def ensure_overlay_isolation(
        self, network: str, bridge: str, vxlan: str, internal: bool
    ) -> None:
        """Isolate the overlay (idempotent) and save its intent for replay."""
        ...

    def remove_overlay_isolation(self, network: str) -> None: ...

    # spoof checks (the bridge plugin's macspoofchk): the port may send only as itself
    def add_spoofcheck(self, att: Attachment, mac: str) -> None:
        """Guard att.host_veth: frames only from `mac` and att.ips (idempotent)."""
        ...

    def del_spoofcheck(self, network: str, container_id: str, ifname: str) -> None: ...
    def check_spoofcheck(self, network: str, container_id: str, ifname: str) -> list[str]: ...
    def gc_spoofcheck(self, network: str, valid: set[tuple[str, str]]) -> None: ...


class PortConflict(Exception):
    """A (hostIP, hostPort, protocol) is already published by another attachment."""

    def __init__(self, mapping: PortMapping, holder: tuple[str, str, str]) -> None:
        host = mapping.host_ip or "0.0.0.0"
        super().__init__(
            f"Bind for {host}:{mapping.host_port} failed: port is already allocated "
            f"(published by container {holder[1]} on network {holder[0]})"
        )
        self.mapping = mapping
        self.holder = holder
