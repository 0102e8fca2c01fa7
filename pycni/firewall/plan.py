"""Pure planning shared by the backends: validation, owner tags, bindings, the record.

Nothing here touches the kernel or the disk. A backend turns a `Record` (what one
attachment asked for) into its own objects: nft map elements or iptables rules.
"""

from __future__ import annotations

from pycni import errors
from pycni.firewall.base import Attachment, PortMapping
from pycni.recordstore import decode, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress

    from pycni.firewall.base import IPAddress, IPInterface
    from pycni.firewall.conditions import Condition

    Key = tuple[str, str, str]

#: nft keeps at most 128 bytes of comment (NFTNL_UDATA_COMMENT_MAXLEN); iptables 256.
TAG_MAX = 128
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}


def __getattr__(name: str) -> object:
    """MULTICAST and LOOPBACK4, built at first use: reading a record (portmap's DEL of
    an attachment that published nothing) must not import ipaddress (~3 ms)."""
    if name not in ("MULTICAST", "LOOPBACK4"):  # `from plan import x` asks for __path__
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import ipaddress

    globals()["MULTICAST"] = {
        4: ipaddress.ip_network("224.0.0.0/4"),
        6: ipaddress.ip_network("ff00::/8"),
    }
    globals()["LOOPBACK4"] = ipaddress.ip_network("127.0.0.0/8")
    return globals()[name]


if TYPE_CHECKING:
    MULTICAST: dict[int, ipaddress.IPv4Network | ipaddress.IPv6Network]
    LOOPBACK4: ipaddress.IPv4Network

# -- owner tags: which attachment an entry belongs to -------------------------------


def digest(text: str) -> str:
    import hashlib  # only for the rare over-long key

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def owner_tag(key: Key) -> str:
    """`network/containerID/ifname`, each part encoded; the comment on every entry.

    A key too long for a comment becomes `~<h(network)>/<h(key)>`: still exact for
    DEL/GC of a known key and for GC by network, just not readable."""
    tag = "/".join(encode(part) for part in key)
    if len(tag) <= TAG_MAX:
        return tag
    return f"~{network_hash(key[0])}/{digest(tag)[:40]}"


def network_hash(network: str) -> str:
    return digest(network)[:16]


def parse_owner_tag(tag: str) -> Key | None:
    """The key of a readable tag; None for hashed or foreign comments."""
    parts = tag.split("/")
    if len(parts) != 3 or tag.startswith("~"):
        return None
    return (decode(parts[0]), decode(parts[1]), decode(parts[2]))


def tag_network_matches(tag: str, network: str) -> bool:
    key = parse_owner_tag(tag)
    if key is not None:
        return key[0] == network
    return tag.startswith(f"~{network_hash(network)}/")


# -- port mappings -----------------------------------------------------------------


def family_of(addr: str) -> int:
    import ipaddress

    return ipaddress.ip_address(addr).version


def normalize_mappings(mappings: list[PortMapping]) -> list[PortMapping]:
    """Validate (`PortMapping.checked`) and de-duplicate."""
    seen: list[PortMapping] = []
    for m in mappings:
        norm = m.checked()
        if norm not in seen:
            seen.append(norm)
    return seen


class Binding:
    """One published port of one address family: what a packet to
    (hostIP|any local address, protocol, hostPort) is rewritten to."""

    __slots__ = (
        "container_ip",
        "container_port",
        "family",
        "host_ip",
        "host_port",
        "protocol",
        "subnet",
    )

    def __init__(
        self,
        family: int,
        host_ip: str,
        protocol: str,
        host_port: int,
        container: IPInterface,
        container_port: int,
    ) -> None:
        self.family = family
        #: "" = every local address of the family
        self.host_ip = host_ip
        self.protocol = protocol
        self.host_port = host_port
        self.container_ip: IPAddress = container.ip
        self.container_port = container_port
        #: the container's own subnet (hairpin SNAT applies to clients from it)
        self.subnet = container.network

    @property
    def slot(self) -> tuple[int, str, int]:
        """What the port index is keyed by: (family, protocol, hostPort)."""
        return (self.family, self.protocol, self.host_port)

    def overlaps(self, host_ip: str) -> bool:
        """A wildcard binding overlaps every address of its family, and vice versa."""
        return not self.host_ip or not host_ip or host_ip == self.host_ip

    def __repr__(self) -> str:
        host = self.host_ip or ("0.0.0.0" if self.family == 4 else "::")
        return (
            f"{host}:{self.host_port}/{self.protocol} -> {self.container_ip}:{self.container_port}"
        )


def first_ip(att: Attachment, family: int) -> IPInterface | None:
    for ip in att.ips:
        if ip.version == family:
            return ip
    return None


def bindings(att: Attachment, mappings: list[PortMapping]) -> list[Binding]:
    """Expand mappings into per-family bindings to the attachment's first address of
    each family. hostIP "" publishes on every family the container has an address of;
    "0.0.0.0" / "::" on that family only; a specific hostIP only on its family."""
    out: list[Binding] = []
    for m in mappings:
        if m.host_ip:
            family = family_of(m.host_ip)
            families = [family]
            import ipaddress

            unspecified = ipaddress.ip_address(m.host_ip).is_unspecified
            host_ip = "" if unspecified else m.host_ip
        else:
            families = [4, 6]
            host_ip = ""
        for family in families:
            target = first_ip(att, family)
            if target is None:
                continue  # like the reference portmap: no address of that family, skip
            out.append(Binding(family, host_ip, m.protocol, m.host_port, target, m.container_port))
    _reject_overlaps(out)
    return out


def _reject_overlaps(items: list[Binding]) -> None:
    for i, a in enumerate(items):
        for b in items[:i]:
            if a.slot == b.slot and a.overlaps(b.host_ip):
                raise errors.InvalidConfig(
                    "port mappings of one container overlap", f"{b!r} and {a!r}"
                )


def check_protocols_supported(items: list[Binding]) -> None:
    """SCTP needs the kernel's SCTP support: without it the container could not
    listen anyway, so refuse with a message instead of installing dead rules."""
    for b in items:
        if b.protocol == "sctp" and not sctp_supported():
            raise errors.InvalidConfig(
                f"cannot publish {b.host_port}/sctp: this kernel has no SCTP support",
                "load the sctp kernel module (modprobe sctp) or remove the sctp port mapping",
            )


_sctp: bool | None = None


def sctp_supported() -> bool:
    global _sctp
    if _sctp is None:
        try:
            with open("/proc/net/protocols", encoding="ascii") as fh:
                _sctp = any(line.startswith("SCTP") for line in fh)
        except OSError:
            _sctp = False
        if not _sctp:
            # Opening an SCTP socket makes the kernel load the module when it can.
            import socket  # only when an sctp mapping is requested

            try:
                socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132).close()
                _sctp = True
            except OSError:
                _sctp = False
    return _sctp


# -- the record: what one attachment asked for --------------------------------------


class Record:
    """Saved domain data of one attachment: its masquerade and its published ports.

    The bridge plugin (masquerade) and portmap (ports) each own one part; a part is
    None when absent. Each part keeps the Attachment it was applied with, so DEL and
    GC can remove exactly those entries without being given the addresses again."""

    __slots__ = (
        "backend",
        "conditions",
        "key",
        "mappings",
        "masq_all",
        "masquerade",
        "ports",
        "snat",
    )

    def __init__(self, key: Key, backend: str) -> None:
        self.key = key
        self.backend = backend
        self.masquerade: Attachment | None = None
        self.ports: Attachment | None = None
        self.mappings: list[PortMapping] = []
        self.snat = True
        self.masq_all = False
        #: portmap conditionsV4/V6 by family: the published ports of a family with
        #: conditions are DNATed only when all of them hold
        self.conditions: dict[int, list[Condition]] = {}

    @property
    def empty(self) -> bool:
        return self.masquerade is None and self.ports is None

    def copy(self) -> Record:
        r = Record(self.key, self.backend)
        r.masquerade, r.ports, r.mappings = self.masquerade, self.ports, list(self.mappings)
        r.snat, r.masq_all = self.snat, self.masq_all
        r.conditions = {f: list(c) for f, c in self.conditions.items()}
        return r

    def conditions_of(self, family: int) -> list[Condition]:
        return self.conditions.get(family, []) if self.ports is not None else []

    def bindings(self) -> list[Binding]:
        return bindings(self.ports, self.mappings) if self.ports is not None else []

    def masq_ips(self) -> list[IPInterface]:
        return list(self.masquerade.ips) if self.masquerade is not None else []

    def localnet_bridge(self) -> str:
        """The bridge whose route_localnet must be 1 so that 127.0.0.1:hostPort reaches
        the container ("" when that does not apply)."""
        if self.ports is None or not self.snat or not self.ports.bridge:
            return ""
        if any(b.family == 4 for b in self.bindings()):
            return self.ports.bridge
        return ""

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "version": 1,
            "backend": self.backend,
            "network": self.key[0],
            "containerID": self.key[1],
            "ifname": self.key[2],
        }
        if self.masquerade is not None:
            d["masquerade"] = self.masquerade.to_dict()
        if self.ports is not None:
            d["ports"] = {
                "attachment": self.ports.to_dict(),
                "portMappings": [m.to_dict() for m in self.mappings],
                "snat": self.snat,
                "masqAll": self.masq_all,
            }
            conds = {
                str(f): [c.to_dict() for c in cs] for f, cs in sorted(self.conditions.items()) if cs
            }
            if conds:
                d["ports"]["conditions"] = conds  # type: ignore[index]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Record:
        r = cls((str(d["network"]), str(d["containerID"]), str(d["ifname"])), str(d["backend"]))
        masq = d.get("masquerade")
        if isinstance(masq, dict):
            r.masquerade = Attachment.from_dict(masq)
        ports = d.get("ports")
        if isinstance(ports, dict):
            r.ports = Attachment.from_dict(ports["attachment"])
            r.mappings = [
                PortMapping(
                    int(m["hostPort"]),
                    int(m["containerPort"]),
                    str(m.get("protocol") or "tcp"),
                    str(m.get("hostIP") or ""),
                )
                for m in ports.get("portMappings") or []
            ]
            r.snat = bool(ports.get("snat", True))
            r.masq_all = bool(ports.get("masqAll", False))
            saved = ports.get("conditions")
            if saved:  # only records with portmap conditions load that module
                from pycni.firewall.conditions import Condition

                for family, items in saved.items():
                    r.conditions[int(family)] = [Condition.from_dict(c) for c in items]
        return r
