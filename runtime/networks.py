"""Networks: Docker-like network management on top of plain CNI conflists.

A netctl network is one file, `<config>/net.d/<name>.conflist`, that any CNI runtime can
use as it is. `netctl network create` writes it; nothing else about the network is kept
anywhere, so `ls`/`inspect` read the same files a runtime reads. The chain is:

    bridge     the Linux bridge "br-<12 hex of the id>", gateway on it, host-local IPAM
               (one range set per family; aux addresses cut out of the ranges)
    portmap    published ports (-p), capability portMappings
    isolation  keeps this bridge's routed traffic away from every other netctl bridge;
               with "internal": true, away from everything but itself

and the top-level key "netctl" (ignored by CNI runtimes) holds what Docker shows in
`network inspect`: id, creation time, driver, labels, options, the IPAM request.

The default `bridge` network is derived from daemon.json (see daemon_config) and
(re)written on first use; `host` and `none` are modes, not files.

Layout of this module: errors; pure planning (names, options, IPAM validation, subnet
picking, range splitting, conflist building: no I/O, unit-tested); the `Network` view
of a conflist; the kernel edge (routes, the bridge at removal); `NetworkStore`, which
ties them together under a lock.
"""

from __future__ import annotations

import builtins
import fcntl
import ipaddress
import os
from collections.abc import Iterable, Mapping

from pycni import errors, fastjson, names
from pycni.atomicfile import write_atomic
from pycni.record import dataclass, field
from pycni.runtime import conflist, libcni
from pycni.runtime.conflist import DEFAULT_NETWORK
from pycni.runtime.paths import Paths

TYPE_CHECKING = False  # typing, json, hashlib and datetime cost more than `network ls` may spend
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from hashlib import sha256
else:
    try:  # the builtin module: hashlib's OpenSSL binding alone costs ~3 ms to load
        from _sha256 import sha256
    except ImportError:  # Python >= 3.12 calls it _sha2
        from hashlib import sha256

if TYPE_CHECKING:
    # pydantic costs ~200 ms to import: `netctl run` on an up-to-date network never does.
    from pycni.runtime.daemon_config import DaemonConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A netctl conflist says cniVersion 1.0.0, which every runtime reads (podman 4.3's and
# containerd 1.6's libcni stop at 1.0.0), and lists cniVersions, from which a CNI 1.1
# runtime (netctl's own libcni among them) picks 1.1.0, with GC and STATUS.
CNI_VERSION = "1.0.0"
CNI_VERSIONS = ["1.0.0", "1.1.0"]
BUILTINS = ("bridge", "host", "none")
# Longest network name: it becomes a file name, an IPAM directory and part of libcni's
# cache file names (<network>-<container id>-<ifname>), which must stay under 255 bytes.
MAX_NAME = 128
NAME_CHARS = names.NAME_CHARS

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_GATEWAY_MODE = {
    4: "com.docker.network.bridge.gateway_mode_ipv4",
    6: "com.docker.network.bridge.gateway_mode_ipv6",
}
#: Docker's gateway modes; "nat" (the default) lets routed traffic reach a container only
#: through a published port, "routed" and "nat-unprotected" allow direct routing to it
GATEWAY_MODES = ("nat", "nat-unprotected", "routed")
KNOWN_OPTIONS = (
    OPT_BRIDGE_NAME,
    OPT_ICC,
    OPT_MASQ,
    OPT_HOST_BINDING,
    OPT_MTU,
    *OPT_GATEWAY_MODE.values(),
)


class NetworkError(errors.InvalidConfig):
    """A network request that cannot be honoured; the message says why, Docker-style."""


class NetworkNotFound(NetworkError):
    pass


class NetworkInUse(NetworkError):
    pass


# -- names, options, labels (pure) ------------------------------------------------------


def validate_name(name: str) -> None:
    if name in BUILTINS:
        raise NetworkError(f"{name} is a pre-defined network and cannot be created")
    if not names.valid_name(name):
        raise NetworkError(
            f'invalid network name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'
        )
    if len(name) > MAX_NAME:
        raise NetworkError(f'invalid network name "{name[:20]}...": longer than {MAX_NAME}')


valid_ifname = names.valid_ifname  # the kernel's rule for interface names


def parse_bool(text: str, key: str) -> bool:
    """Go's strconv.ParseBool, which is what Docker uses for option values."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise NetworkError(
        f'failed to parse {key} value: strconv.ParseBool: parsing "{text}": invalid syntax'
    )


@dataclass(frozen=True)
class BridgeOptions:
    """The driver options (-o) netctl understands, with Docker's defaults."""

    bridge_name: str = ""  # "" = br-<12 hex of the id>
    enable_icc: bool = True
    enable_ip_masquerade: bool = True
    host_binding_ipv4: str = ""  # "" = daemon.json "ip"
    mtu: int | None = None
    direct_routing: frozenset[int] = frozenset()  # families whose gateway mode allows it


def parse_options(options: Mapping[str, str], mtu: int | None = None) -> BridgeOptions:
    values: dict[str, Any] = {}
    for key, text in options.items():
        if key == OPT_BRIDGE_NAME:
            if not valid_ifname(text):
                raise NetworkError(
                    f'invalid {key} "{text}": an interface name has 1-15 characters '
                    "without '/', ':' or whitespace"
                )
            values["bridge_name"] = text
        elif key == OPT_ICC:
            values["enable_icc"] = parse_bool(text, key)
        elif key == OPT_MASQ:
            values["enable_ip_masquerade"] = parse_bool(text, key)
        elif key == OPT_HOST_BINDING:
            try:
                values["host_binding_ipv4"] = str(ipaddress.ip_address(text))
            except ValueError:
                raise NetworkError(f'invalid {key} "{text}": not an IP address') from None
        elif key == OPT_MTU:
            values["mtu"] = _parse_mtu(text, key)
        elif key in OPT_GATEWAY_MODE.values():
            if text not in GATEWAY_MODES:
                raise NetworkError(
                    f'invalid {key} "{text}"', f"valid modes: {', '.join(GATEWAY_MODES)}"
                )
            family = 4 if key == OPT_GATEWAY_MODE[4] else 6
            routed = set(values.get("direct_routing", ()))
            if text != "nat":
                routed.add(family)
            values["direct_routing"] = frozenset(routed)
        else:
            raise NetworkError(
                f'unknown option "{key}" for driver bridge',
                "known options: " + ", ".join(KNOWN_OPTIONS),
            )
    if mtu is not None:
        _parse_mtu(str(mtu), "--mtu")
        if values.get("mtu") not in (None, mtu):
            raise NetworkError(
                f"conflicting MTU: --mtu {mtu} and -o {OPT_MTU}={values['mtu']}",
                "give one of them",
            )
        values["mtu"] = mtu
    return BridgeOptions(**values)


def _parse_mtu(text: str, key: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise NetworkError(f'invalid {key} "{text}": not a number') from None
    if not 68 <= value <= 65535:
        raise NetworkError(f"invalid {key} {value}: the MTU must be between 68 and 65535")
    return value


# -- IPAM request (pure) ------------------------------------------------------------------


@dataclass
class IPAMConfig:
    """One subnet of a network, as Docker's IPAM.Config entry."""

    subnet: IPNetwork
    gateway: IPAddress
    ip_range: IPNetwork | None = None
    aux_addresses: dict[str, IPAddress] = field(default_factory=dict)

    def to_inspect(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Subnet": str(self.subnet), "Gateway": str(self.gateway)}
        if self.ip_range is not None:
            out["IPRange"] = str(self.ip_range)
        if self.aux_addresses:
            out["AuxiliaryAddresses"] = {k: str(v) for k, v in self.aux_addresses.items()}
        return out


def _last_host(net: IPNetwork) -> IPAddress:
    return net.broadcast_address - 1 if net.version == 4 else net.broadcast_address


def _parse_subnet(text: str) -> IPNetwork:
    try:
        iface = ipaddress.ip_interface(text.strip())
    except ValueError:
        raise NetworkError(f"invalid subnet {text}: invalid CIDR address: {text}") from None
    if "/" not in text:
        raise NetworkError(f"invalid subnet {text}: invalid CIDR address: {text}")
    net = iface.network
    if iface.ip != net.network_address:
        raise NetworkError(f"invalid subnet {text}: it should be {net}")
    if net.prefixlen > net.max_prefixlen - 2:
        raise NetworkError(
            f"invalid subnet {text}: too small to give containers addresses",
            f"use a prefix of /{net.max_prefixlen - 2} or shorter",
        )
    return net


def _parse_ip_range(text: str) -> IPNetwork:
    try:
        iface = ipaddress.ip_interface(text.strip())
    except ValueError:
        raise NetworkError(f"invalid ip-range {text}: invalid CIDR address: {text}") from None
    if "/" not in text:
        raise NetworkError(f"invalid ip-range {text}: invalid CIDR address: {text}")
    if iface.ip != iface.network.network_address:
        raise NetworkError(f"invalid ip-range {text}: it should be {iface.network}")
    return iface.network


def _parse_ip(text: str, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise NetworkError(f"invalid {what} {text}: invalid IP address") from None


def plan_ipam(
    subnets: Iterable[str],
    gateways: Iterable[str] = (),
    ip_ranges: Iterable[str] = (),
    aux_addresses: Mapping[str, str] | None = None,
) -> list[IPAMConfig]:
    """Validate the user's --subnet/--gateway/--ip-range/--aux-address and pair them up,
    in the order and with the messages of `docker network create`."""
    subnet_texts, gateway_texts, range_texts = list(subnets), list(gateways), list(ip_ranges)
    aux = dict(aux_addresses or {})
    if len(subnet_texts) < len(range_texts) or len(subnet_texts) < len(gateway_texts):
        raise NetworkError("every ip-range or gateway must have a corresponding subnet")
    configs: list[IPAMConfig] = []
    for text in subnet_texts:
        net = _parse_subnet(text)
        for other in configs:
            if other.subnet.version == net.version and other.subnet.overlaps(net):
                raise NetworkError("multiple overlapping subnet configuration is not supported")
        first = net.network_address + 1
        configs.append(IPAMConfig(net, first))
    explicit_gateway: set[int] = set()
    for text in range_texts:
        rng = _parse_ip_range(text)
        match = [
            c
            for c in configs
            if c.subnet.version == rng.version and rng.subnet_of(c.subnet)  # type: ignore[arg-type]
        ]
        if not match:
            raise NetworkError(f"no matching subnet for range {rng}")
        c = match[0]
        if c.ip_range is not None:
            raise NetworkError(
                f"cannot configure multiple ranges ({rng}, {c.ip_range}) on the same subnet ({c.subnet})"
            )
        c.ip_range = rng
    for text in gateway_texts:
        gw = _parse_ip(text, "gateway")
        match = [c for c in configs if gw.version == c.subnet.version and gw in c.subnet]
        if not match:
            raise NetworkError(f"no matching subnet for gateway {gw}")
        c = match[0]
        n = configs.index(c)
        if n in explicit_gateway:
            raise NetworkError(
                f"cannot configure multiple gateways ({gw}, {c.gateway}) for the same subnet ({c.subnet})"
            )
        if gw == c.subnet.network_address or (
            c.subnet.version == 4 and gw == c.subnet.broadcast_address
        ):
            raise NetworkError(
                f"invalid gateway {gw}: it is the network or broadcast address of {c.subnet}"
            )
        explicit_gateway.add(n)
        c.gateway = gw
    for key, text in aux.items():
        ip = _parse_ip(text, f"aux-address {key}=")
        match = [c for c in configs if ip.version == c.subnet.version and ip in c.subnet]
        if not match:
            raise NetworkError(f"no matching subnet for aux-address {ip}")
        c = match[0]
        if ip == c.gateway:
            raise NetworkError(
                f"failed to allocate secondary ip address ({key}:{ip}): Address already in use",
                f"{ip} is the gateway of {c.subnet}",
            )
        c.aux_addresses[key] = ip
    for c in configs:
        if not host_ranges(c):
            raise NetworkError(
                f"no addresses left to allocate in {c.ip_range or c.subnet}",
                "the gateway and the aux-addresses take every address of the range",
            )
    return configs


def split_range(
    start: IPAddress, end: IPAddress, excluded: Iterable[IPAddress]
) -> list[tuple[IPAddress, IPAddress]]:
    """start..end without the excluded addresses, as the fewest contiguous pieces."""
    make = type(start)
    holes = sorted({int(x) for x in excluded if int(start) <= int(x) <= int(end)})
    pieces: list[tuple[IPAddress, IPAddress]] = []
    low = int(start)
    for hole in holes:
        if hole > low:
            pieces.append((make(low), make(hole - 1)))
        low = hole + 1
    if low <= int(end):
        pieces.append((make(low), make(int(end))))
    return pieces


def host_ranges(c: IPAMConfig) -> list[tuple[IPAddress, IPAddress]]:
    """The addresses containers may get in subnet `c`: its ip-range (or the whole subnet)
    without the network and broadcast addresses and the aux-addresses. The gateway stays
    inside: host-local never hands it out and the fewer ranges, the simpler the file."""
    net = c.subnet
    first, last = net.network_address + 1, _last_host(net)
    if c.ip_range is not None:
        first = max(first, c.ip_range.network_address)
        last = min(last, c.ip_range.broadcast_address)
    pieces = split_range(first, last, c.aux_addresses.values())
    # A piece holding nothing but the gateway gives host-local nothing to hand out.
    return [p for p in pieces if not (p[0] == p[1] == c.gateway)]


def host_local_ranges(c: IPAMConfig) -> list[dict[str, str]]:
    """The ranges of one subnet for host-local's `ranges` (several ranges of one set are
    allowed; each shares the subnet and the gateway)."""
    whole = (c.subnet.network_address + 1, _last_host(c.subnet))
    out = []
    for start, end in host_ranges(c):
        entry = {"subnet": str(c.subnet), "gateway": str(c.gateway)}
        if (start, end) != whole:
            entry["rangeStart"] = str(start)
            entry["rangeEnd"] = str(end)
        out.append(entry)
    return out


# -- picking a free subnet (pure) ----------------------------------------------------------


def pick_subnet(
    pools: Iterable[tuple[IPNetwork, int]], used: Iterable[IPNetwork]
) -> IPNetwork | None:
    """The first `size`-bit block of each pool, in order, that overlaps nothing in `used`.
    Skips past each used network at once, so a big pool costs O(used), not O(blocks)."""
    used_list = list(used)
    for base, size in pools:
        taken = sorted(
            (u for u in used_list if u.version == base.version and u.overlaps(base)),
            key=lambda u: int(u.network_address),
        )
        block = 1 << (base.max_prefixlen - size)
        start, stop = int(base.network_address), int(base.broadcast_address)
        cursor = start
        for u in taken:
            u_start, u_end = int(u.network_address), int(u.broadcast_address)
            if u_end < cursor:
                continue
            if cursor + block - 1 < u_start:
                break  # the block at the cursor ends before this used network
            # Skip to the first block boundary after the used network.
            cursor = start + ((u_end - start) // block + 1) * block
        if cursor + block - 1 <= stop:
            return ipaddress.ip_network((cursor, size))
    return None


def ula_subnet(network_id: str, used: Iterable[IPNetwork]) -> ipaddress.IPv6Network | None:
    """A unique local /64 (RFC 4193): fd00::/8 + a 40-bit global ID taken from the
    network id + a 16-bit subnet ID, the first that overlaps nothing in `used`."""
    global_id = int(sha256(network_id.encode()).hexdigest()[:10], 16)
    site = ipaddress.IPv6Network(((0xFD << 120) | (global_id << 80), 48))
    return pick_subnet([(site, 64)], [u for u in used if u.version == 6])  # type: ignore[return-value]


# -- conflists (pure) ------------------------------------------------------------------------


def now_rfc3339() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _chain(
    bridge: dict[str, Any], internal: bool, direct_routing: frozenset[int] = frozenset()
) -> list[dict[str, Any]]:
    isolation: dict[str, Any] = {
        "type": "isolation",
        "internal": internal,
        "icc": not bridge.get("portIsolation"),
    }
    for family in sorted(direct_routing):
        isolation[f"directRouting{family}"] = True
    return [
        bridge,
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        # forward-accept for the container's addresses: works on a host whose FORWARD
        # policy is drop (Docker's); isolation's drops stay final (a drop always is)
        {"type": "firewall"},
        isolation,
    ]


def _ranges(configs: list[IPAMConfig]) -> list[list[dict[str, str]]]:
    sets = []
    for version in (4, 6):
        ranges = [r for c in configs if c.subnet.version == version for r in host_local_ranges(c)]
        if ranges:
            sets.append(ranges)
    return sets


def network_conflist(
    name: str,
    net_id: str,
    created: str,
    configs: list[IPAMConfig],
    opts: BridgeOptions,
    *,
    internal: bool,
    ipv6: bool,
    ipam_dir: str,
    labels: Mapping[str, str],
    options: Mapping[str, str],
    run_dir: str = "",
) -> dict[str, Any]:
    """The conflist of a user-defined network (with the `dns` plugin when `run_dir`,
    netctl's run directory, is given)."""
    bridge_name = opts.bridge_name or f"br-{net_id[:12]}"
    bridge: dict[str, Any] = {
        "type": "bridge",
        "bridge": bridge_name,
        "isGateway": True,
        "isDefaultGateway": not internal,
        "ipMasq": opts.enable_ip_masquerade and not internal,
        "hairpinMode": True,
        "portIsolation": not opts.enable_icc,
        # a container sends only as itself (MAC, ARP, IP, neighbour discovery): without
        # it any workload with CAP_NET_RAW can take over a neighbour's traffic
        "macspoofchk": True,
    }
    if opts.mtu is not None:
        bridge["mtu"] = opts.mtu
    bridge["ipam"] = {"type": "host-local", "ranges": _ranges(configs), "dataDir": ipam_dir}
    meta: dict[str, Any] = {
        "id": net_id,
        "created": created,
        "driver": "bridge",
        "labels": dict(labels),
        "options": dict(options),
        "internal": internal,
        "ipv6": ipv6,
        "subnets": [str(c.subnet) for c in configs],
        "gateways": [str(c.gateway) for c in configs],
        "ipRange": {str(c.subnet): str(c.ip_range) for c in configs if c.ip_range is not None},
        "auxAddresses": {k: str(v) for c in configs for k, v in c.aux_addresses.items()},
    }
    if opts.host_binding_ipv4:
        meta["hostBindingIPv4"] = opts.host_binding_ipv4
    plugins = _chain(bridge, internal, opts.direct_routing)
    if run_dir:
        # names for other runtimes' containers too (podman, kubelet): netctl's resolver
        plugins.append(
            {
                "type": "dns",
                "runDir": run_dir,
                "internal": internal,
                "capabilities": {"aliases": True},
            }
        )
    return {
        "cniVersion": CNI_VERSION,
        "cniVersions": CNI_VERSIONS,
        "name": name,
        "plugins": plugins,
        "netctl": meta,
    }


def default_conflist(
    cfg: DaemonConfig, net_id: str, created: str, ipam_dir: str, digest: str = ""
) -> dict[str, Any]:
    """The default `bridge` network, from daemon.json. `digest` identifies the daemon.json
    it came from; the runtime's per-container defaults ride along in the metadata, so
    neither needs daemon.json parsed again while it is unchanged."""
    v4 = IPAMConfig(
        cfg.subnet,
        cfg.gateway,
        ipaddress.IPv4Network(cfg.fixed_cidr) if cfg.fixed_cidr else None,
    )
    configs = [v4]
    if cfg.subnet_v6 is not None:
        configs.append(IPAMConfig(cfg.subnet_v6, cfg.subnet_v6.network_address + 1))
    ipam: dict[str, Any] = {"type": "host-local", "ranges": _ranges(configs), "dataDir": ipam_dir}
    routes = [
        {"dst": dst, "gw": gw}
        for dst, gw in (("0.0.0.0/0", cfg.default_gateway), ("::/0", cfg.default_gateway_v6))
        if gw is not None
    ]
    if routes:
        ipam["routes"] = routes
    bridge: dict[str, Any] = {
        "type": "bridge",
        "bridge": cfg.bridge,
        "isGateway": True,
        "isDefaultGateway": True,
        "ipMasq": cfg.ip_masq,
        "hairpinMode": True,
        "portIsolation": not cfg.icc,
        "macspoofchk": True,  # as for user-defined networks
    }
    if cfg.mtu is not None:
        bridge["mtu"] = cfg.mtu
    dns: dict[str, Any] = {}
    if cfg.dns:
        dns["nameservers"] = list(cfg.dns)
    if cfg.dns_search:
        dns["search"] = list(cfg.dns_search)
    if cfg.dns_opts:
        dns["options"] = list(cfg.dns_opts)
    if dns:
        bridge["dns"] = dns
    bridge["ipam"] = ipam
    options = {
        "com.docker.network.bridge.default_bridge": "true",
        OPT_ICC: str(cfg.icc).lower(),
        OPT_MASQ: str(cfg.ip_masq).lower(),
        OPT_HOST_BINDING: cfg.ip,
        OPT_BRIDGE_NAME: cfg.bridge,
    }
    if cfg.mtu is not None:
        options[OPT_MTU] = str(cfg.mtu)
    meta: dict[str, Any] = {
        "id": net_id,
        "created": created,
        "driver": "bridge",
        "default": True,
        "labels": {},
        "options": options,
        "internal": False,
        "ipv6": cfg.subnet_v6 is not None,
        "subnets": [str(c.subnet) for c in configs],
        "gateways": [str(c.gateway) for c in configs],
        "ipRange": {str(c.subnet): str(c.ip_range) for c in configs if c.ip_range is not None},
        "auxAddresses": {},
        "hostBindingIPv4": cfg.ip,
        "daemonConfig": {
            "digest": digest,
            "ip": cfg.ip,
            "dns": list(cfg.dns),
            "dnsSearch": list(cfg.dns_search),
            "dnsOpts": list(cfg.dns_opts),
        },
    }
    return {
        "cniVersion": CNI_VERSION,
        "cniVersions": CNI_VERSIONS,
        "name": DEFAULT_NETWORK,
        "plugins": _chain(bridge, False),
        "netctl": meta,
    }


# -- the Network view ------------------------------------------------------------------------


@dataclass
class Network:
    """One network as the runtime and `inspect` see it."""

    name: str
    id: str
    kind: str  # "bridge" (bridge-based conflist) | "cni" (another conflist) | "host" | "none"
    driver: str  # what `ls` shows: bridge | host | null | the first plugin's type
    conflist: libcni.NetworkConfigList | None = None
    bridge: str = ""
    ipam: list[IPAMConfig] = field(default_factory=list)
    internal: bool = False
    ipv6: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    created: str = ""
    host_binding_ipv4: str = ""  # default host address for -p on this network ("" = daemon's)
    config_file: str = ""
    default: bool = False  # the default `bridge` network
    managed: bool = False  # written by netctl (has the "netctl" metadata)
    meta: dict[str, Any] = field(default_factory=dict)  # the conflist's "netctl" object

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def subnets(self) -> list[IPNetwork]:
        return [c.subnet for c in self.ipam]

    @property
    def gateways(self) -> list[IPAddress]:
        return [c.gateway for c in self.ipam]

    @property
    def builtin(self) -> bool:
        return self.name in BUILTINS

    @classmethod
    def builtin_mode(cls, name: str) -> Network:
        return cls(name, conflist.builtin_id(name), name, "null" if name == "none" else name)

    @classmethod
    def from_conflist(cls, net: libcni.NetworkConfigList) -> Network:
        obj = net.to_json()
        meta = obj.get("netctl") if isinstance(obj.get("netctl"), dict) else {}
        assert isinstance(meta, dict)
        bridge_conf = next(
            (p for p in net.plugins if isinstance(p, dict) and p.get("type") == "bridge"), None
        )
        out = cls(
            name=net.name,
            id=conflist.network_id(meta, net.name),
            kind="bridge" if bridge_conf is not None else "cni",
            driver=conflist.network_driver(meta, net.plugins),
            conflist=net,
            bridge=str((bridge_conf or {}).get("bridge", "cni0" if bridge_conf else "")),
            internal=bool(meta.get("internal", False)),
            ipv6=bool(meta.get("ipv6", False)),
            labels=_str_dict(meta.get("labels")),
            options=_str_dict(meta.get("options")),
            created=_meta_str(meta, "created") or _mtime(net.path),
            host_binding_ipv4=_meta_str(meta, "hostBindingIPv4"),
            config_file=net.path,
            default=bool(meta.get("default", False)) and net.name == DEFAULT_NETWORK,
            managed=bool(_meta_str(meta, "id")),
            meta=meta,
        )
        out.ipam = _ipam_from_meta(meta) if meta.get("subnets") else _ipam_from_plugins(net.plugins)
        if not meta.get("ipv6") and any(c.subnet.version == 6 for c in out.ipam):
            out.ipv6 = True
        return out


def _meta_str(meta: dict[str, Any], key: str) -> str:
    value = meta.get(key)
    return value if isinstance(value, str) else ""


def _str_dict(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _mtime(path: str) -> str:
    try:
        t = os.stat(path).st_mtime
    except OSError:
        return ""
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ipam_from_meta(meta: dict[str, Any]) -> list[IPAMConfig]:
    out = []
    gateways = meta.get("gateways") or []
    ranges = _str_dict(meta.get("ipRange"))
    aux = _str_dict(meta.get("auxAddresses"))
    for n, text in enumerate(meta.get("subnets") or []):
        try:
            net = ipaddress.ip_network(text)
            gw = ipaddress.ip_address(gateways[n]) if n < len(gateways) else net.network_address + 1
            rng = ipaddress.ip_network(ranges[text]) if text in ranges else None
            own_aux = {
                k: ip
                for k, v in aux.items()
                if (ip := ipaddress.ip_address(v)).version == net.version and ip in net
            }
        except (ValueError, IndexError):
            continue
        out.append(IPAMConfig(net, gw, rng, own_aux))
    return out


def _ipam_from_plugins(plugins: list[dict[str, Any]]) -> list[IPAMConfig]:
    """Subnets of a conflist netctl did not write: host-local's ranges or legacy subnet."""
    out: list[IPAMConfig] = []
    for plugin in plugins:
        ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
        if not isinstance(ipam, dict):
            continue
        entries: list[Any] = [ipam] if ipam.get("subnet") else []
        for rs in ipam.get("ranges") or []:
            if isinstance(rs, list):
                entries.extend(rs)
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            try:
                net = ipaddress.ip_network(str(entry.get("subnet")), strict=False)
                gw_text = entry.get("gateway")
                gw = ipaddress.ip_address(gw_text) if gw_text else net.network_address + 1
            except ValueError:
                continue
            if not any(c.subnet == net for c in out):
                out.append(IPAMConfig(net, gw))
    return out


# -- the kernel edge ---------------------------------------------------------------------------


def route_subnets() -> list[IPNetwork]:
    """Destinations of the routes in this network namespace's main table (not the
    default routes): an auto-picked subnet must not shadow any of them."""
    from pycni.netlink import Netlink

    with Netlink() as nl:
        return [r.dst for r in nl.routes() if r.dst.prefixlen > 0]


#: the ifalias prefix with which a netctl root marks the bridges it made (netctl:STATE_DIR)
BRIDGE_OWNER_PREFIX = "netctl:"


def claim_bridge(net: Network, owner: str, hint: str) -> bool:
    """Refuse to attach to `net`'s bridge when it belongs to another netctl root.

    Two roots (NETCTL_ROOT) on one host that derive the same bridge (the default
    network's `netctl0`, 172.17.0.0/16) would share one bridge with two IPAM stores and
    hand out the same addresses twice. The bridge carries its owner's state directory in
    its ifalias; another live owner, or a subnet already routed through another device
    (Docker's docker0 on 172.17.0.0/16, say), is refused with what to change (`hint`).
    Returns True when the bridge still has to be marked (after the ADD made it)."""
    from pycni.netlink import Netlink

    mine = BRIDGE_OWNER_PREFIX + owner
    with Netlink() as nl:
        link = nl.link(net.bridge)
        if link is not None:
            if link.alias == mine:
                return False
            other = link.alias[len(BRIDGE_OWNER_PREFIX) :]
            if link.alias.startswith(BRIDGE_OWNER_PREFIX) and os.path.isdir(other):
                raise NetworkError(
                    f"the bridge {net.bridge} of network {net.name} belongs to another netctl "
                    f"root (state in {other}); two roots on one host need their own bridge "
                    f"and subnet: {hint}"
                )
            return True  # unmarked (an older netctl) or its owner is gone: take it over
        for route in nl.routes():
            for subnet in net.subnets:
                if (
                    route.dst.prefixlen
                    and route.dst.version == subnet.version
                    and route.dst.overlaps(subnet)
                    and route.oif
                ):
                    dev = nl.link_by_index(route.oif)
                    raise NetworkError(
                        f"the subnet {subnet} of network {net.name} is already routed through "
                        f"{dev.name if dev else route.oif} ({route.dst}); {hint}"
                    )
    return True


def mark_bridge(net: Network, owner: str) -> None:
    """Record this root as the owner of `net`'s bridge (its ifalias); best effort."""
    from pycni.netlink import Netlink, NetlinkError

    with Netlink() as nl:
        link = nl.link(net.bridge)
        if link is not None:
            try:
                nl.set_link(link.index, alias=BRIDGE_OWNER_PREFIX + owner)
            except NetlinkError:
                pass


def release_bridge(name: str) -> list[str]:
    """Delete a removed network's bridge when no port is left on it, then drop the
    isolation rules of bridges that are gone. Best effort: returns what was left."""
    from pycni import netlink
    from pycni.netlink import Netlink

    problems: list[str] = []
    try:
        with Netlink() as nl:
            link = nl.link(name)
            if link is not None and link.kind == "bridge":
                ports = [x.name for x in nl.links() if x.master == link.index]
                if ports:
                    problems.append(
                        f"bridge {name} still has ports ({', '.join(ports)}); left in place"
                    )
                else:
                    nl.del_link(link.index)
    except netlink.NetlinkError as exc:
        problems.append(f"could not remove bridge {name}: {exc.strerror or exc}")
    try:
        from pycni.firewall import get_backend

        get_backend(None).gc_isolation()
    except errors.CniError as exc:
        problems.append(f"could not clean the isolation rules: {exc}")
    return problems


# -- the store ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeDefaults:
    """What the runtime needs from daemon.json for each container."""

    ip: str  # default host address for published ports
    dns: list[str]
    dns_search: list[str]
    dns_opts: list[str]


def _write_atomic(path: str, obj: dict[str, Any]) -> None:
    import json

    # A runtime reading the directory sees the old file or the new one.
    write_atomic(path, json.dumps(obj, indent=4) + "\n", 0o644, fsync=True, dir_mode=0o755)


class _DirLock:
    """flock on <dir>/.netctl.lock for a `with` block (a class, not contextlib, which
    `netctl run` would import for this one use)."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.fd = -1

    def __enter__(self) -> None:
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        self.fd = os.open(
            os.path.join(self.dir, ".netctl.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing the descriptor releases the flock


class NetworkStore:
    """Networks in `paths.networks`; the API the runtime and the CLI use."""

    def __init__(self, paths: Paths | None = None) -> None:
        self.paths = paths or Paths()
        self.dir = self.paths.networks
        self._daemon: DaemonConfig | None = None
        #: files in the directory that could not be read, with the reason (for `ls`)
        self.problems: list[str] = []

    # -- configuration --------------------------------------------------------------

    def daemon_config(self) -> DaemonConfig:
        if self._daemon is None:
            from pycni.runtime.daemon_config import load

            self._daemon = load(self.paths.daemon_config)
        return self._daemon

    def daemon_digest(self) -> str:
        return conflist.daemon_digest(self.paths)

    def runtime_defaults(self) -> RuntimeDefaults:
        """daemon.json's per-container defaults (ip, dns, dns-search, dns-opts), read from
        bridge.conflist while daemon.json is unchanged: no pydantic on `netctl run`."""
        cached = self.ensure_default_network().meta.get("daemonConfig")
        if isinstance(cached, dict):
            try:
                return RuntimeDefaults(
                    str(cached["ip"]),
                    [str(x) for x in cached["dns"]],
                    [str(x) for x in cached["dnsSearch"]],
                    [str(x) for x in cached["dnsOpts"]],
                )
            except (KeyError, TypeError):
                pass
        cfg = self.daemon_config()
        return RuntimeDefaults(cfg.ip, list(cfg.dns), list(cfg.dns_search), list(cfg.dns_opts))

    @property
    def ipam_dir(self) -> str:
        return os.path.abspath(self.paths.ipam_dir)

    def path_of(self, name: str) -> str:
        return os.path.join(self.dir, f"{name}.conflist")

    def _locked(self) -> _DirLock:
        """One writer at a time: name and subnet checks and the write are one step."""
        return _DirLock(self.dir)

    # -- reading --------------------------------------------------------------------

    def _load(self) -> list[Network]:
        """Every network file of the directory (conflists first), unreadable ones noted."""
        self.problems = []
        out: list[Network] = []
        seen: set[str] = set()
        try:
            fnames = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        for ext in (".conflist", ".conf", ".json"):
            for fname in fnames:
                path = os.path.join(self.dir, fname)
                if os.path.splitext(fname)[1] != ext or not os.path.isfile(path):
                    continue
                try:
                    with open(path, "rb") as fh:
                        raw = fh.read()
                    if ext == ".conflist":
                        conf = libcni.conflist_from_bytes(raw, path)
                    else:
                        conf = libcni.conflist_from_conf(raw, path)
                except (OSError, errors.CniError) as exc:
                    self.problems.append(f"{path}: {exc}")
                    continue
                if conf.name in seen or conf.name in ("host", "none"):
                    continue
                seen.add(conf.name)
                out.append(Network.from_conflist(conf))
        return out

    def ensure_default_network(self) -> Network:
        """Write (or refresh, when daemon.json changed) bridge.conflist; keeps the id."""
        path = self.path_of(DEFAULT_NETWORK)
        digest = self.daemon_digest()
        current = self._read_default(path)
        source = current.meta.get("daemonConfig") if current is not None else None
        if current is not None and isinstance(source, dict) and source.get("digest") == digest:
            return current  # the fast path: daemon.json is not even parsed
        with self._locked():
            # Under the lock, from what is there now: a concurrent first use may have
            # written it (with its own new id, which must then win).
            existing = self._read_json(path)
            desired = self._desired_default(existing, digest)
            if existing != desired:
                _write_atomic(path, desired)
        net = self._read_default(path)
        assert net is not None
        return net

    def _read_default(self, path: str) -> Network | None:
        try:
            with open(path, "rb") as fh:
                return Network.from_conflist(libcni.conflist_from_bytes(fh.read(), path))
        except (OSError, errors.CniError):
            return None

    def _desired_default(self, existing: dict[str, Any], digest: str) -> dict[str, Any]:
        """bridge.conflist as daemon.json wants it, keeping the existing id and time."""
        meta = existing.get("netctl")
        meta = meta if isinstance(meta, dict) else {}
        net_id = meta.get("id")
        if not (isinstance(net_id, str) and len(net_id) == 64):
            net_id = os.urandom(32).hex()  # secrets.token_hex(32), without loading secrets
        created = meta.get("created")
        if not isinstance(created, str) or not created:
            created = now_rfc3339()
        return default_conflist(self.daemon_config(), net_id, created, self.ipam_dir, digest)

    @staticmethod
    def _read_json(path: str) -> dict[str, Any]:
        try:
            with open(path, "rb") as fh:
                obj = fastjson.loads(fh.read())
        except (OSError, ValueError):
            return {}
        return obj if isinstance(obj, dict) else {}

    def list(self) -> list[Network]:
        """Every network, the built-in bridge, host and none included, by name (as docker)."""
        default = self.ensure_default_network()
        others = [n for n in self._load() if n.name != DEFAULT_NETWORK]
        builtins = [default, Network.builtin_mode("host"), Network.builtin_mode("none")]
        return sorted(builtins + others, key=lambda n: n.name)

    @staticmethod
    def _outdated(net: Network) -> bool:
        if net.driver != "overlay":
            return False
        from pycni.runtime import overlay_networks

        return overlay_networks.outdated(net)

    def resolve(self, ref: str, _synced: bool = False) -> Network:
        """A network by name, full id or unique id prefix (as docker does)."""
        if ref in ("host", "none"):
            return Network.builtin_mode(ref)
        if ref == DEFAULT_NETWORK:
            return self.ensure_default_network()
        if ref and all(c in NAME_CHARS for c in ref):
            path = self.path_of(ref)
            if os.path.isfile(path):
                try:
                    with open(path, "rb") as fh:
                        conf = libcni.conflist_from_bytes(fh.read(), path)
                    if conf.name == ref:
                        net = Network.from_conflist(conf)
                        if not _synced and self._outdated(net):
                            return self._synced_overlays(ref)
                        return net
                except (OSError, errors.CniError):
                    pass
        networks = self.list()
        for net in networks:
            if net.name == ref:
                return net
        for net in networks:
            if net.id == ref:
                return net
        matches = [n for n in networks if ref and n.id.startswith(ref.lower())]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NetworkError(
                f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)"
            )
        if not _synced:
            # an overlay network another member created: mirror the cluster store, look again
            return self._synced_overlays(ref)
        raise NetworkNotFound(f"network {ref} not found")

    def _synced_overlays(self, ref: str) -> Network:
        """resolve(ref) after mirroring the cluster store's overlays into conflists (new
        ones, and those an earlier version wrote), when daemon.json names a store."""
        from pycni.runtime import overlay_networks

        if overlay_networks.clustered(self):
            overlay_networks.sync(self)
        return self.resolve(ref, _synced=True)

    # -- creating -------------------------------------------------------------------

    def used_subnets(
        self, networks: Iterable[Network] | None = None
    ) -> builtins.list[tuple[IPNetwork, str]]:
        """Subnets in use by netctl networks (and the default bridge's bip), with owners."""
        cfg = self.daemon_config()
        nets = self._load() if networks is None else list(networks)
        used: builtins.list[tuple[IPNetwork, str]] = [(cfg.subnet, DEFAULT_NETWORK)]
        if cfg.subnet_v6 is not None:
            used.append((cfg.subnet_v6, DEFAULT_NETWORK))
        for net in nets:
            used.extend((s, net.name) for s in net.subnets)
        return used

    def create(
        self,
        name: str,
        *,
        driver: str = "bridge",
        subnets: Iterable[str] = (),
        gateways: Iterable[str] = (),
        ip_ranges: Iterable[str] = (),
        aux_addresses: Mapping[str, str] | None = None,
        internal: bool = False,
        ipv6: bool = False,
        mtu: int | None = None,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> Network:
        """Validate everything, pick what was not given, write <name>.conflist."""
        validate_name(name)
        if driver in ("host", "null"):
            raise NetworkError(f'only one instance of "{driver}" network is allowed')
        if driver == "overlay":  # the network lives in the cluster store (etcd)
            from pycni.runtime import overlay_networks

            return overlay_networks.create(
                self, name, list(subnets), list(ip_ranges), internal, mtu,
                dict(labels or {}), dict(options or {}),
            )  # fmt: skip
        from pycni.runtime import netdrivers

        if driver != "bridge" and driver not in netdrivers.DRIVERS:
            raise NetworkError(
                f'plugin "{driver}" not found',
                "netctl creates bridge, macvlan, ipvlan and overlay networks",
            )
        sub = netdrivers.parse_options(driver, options or {}, mtu) if driver != "bridge" else None
        opts = parse_options({} if sub else options or {}, mtu)
        configs = plan_ipam(subnets, gateways, ip_ranges, aux_addresses)
        cfg = self.daemon_config()
        self.ensure_default_network()  # before the lock: it takes the lock itself
        net_id = os.urandom(32).hex()  # secrets.token_hex(32), without loading secrets
        with self._locked():
            existing = self._load()
            if any(n.name == name for n in existing):
                raise NetworkError(f"network with name {name} already exists")
            bridge = opts.bridge_name or f"br-{net_id[:12]}"
            holders = [n.name for n in existing if n.bridge == bridge]
            if bridge == cfg.bridge:
                holders.append(DEFAULT_NETWORK)
            if sub is not None:
                holders = []  # no bridge; one network per parent instead
                if other := netdrivers.parent_in_use(existing, sub.parent):
                    raise NetworkError(
                        f"network {other} is already using parent interface {sub.parent}"
                    )
            if holders:
                raise NetworkError(
                    f"bridge name {bridge} is already in use by network {holders[0]}",
                    f"choose another {OPT_BRIDGE_NAME}",
                )
            used = self.used_subnets(existing)
            for c in configs:
                for net, owner in used:
                    if net.version == c.subnet.version and net.overlaps(c.subnet):
                        raise NetworkError(
                            "Pool overlaps with other one on this address space",
                            f"{c.subnet} overlaps {net} of network {owner}",
                        )
            taken = [u for u, _ in used] + [c.subnet for c in configs]
            if not any(c.subnet.version == 4 for c in configs):
                taken += route_subnets()
                v4_pools = [(b, s) for b, s in cfg.pools if b.version == 4]
                picked = pick_subnet(v4_pools, taken)
                if picked is None:
                    raise NetworkError(
                        "could not find an available, non-overlapping IPv4 address pool "
                        "among the defaults to assign to the network"
                    )
                configs.insert(0, IPAMConfig(picked, picked.network_address + 1))
                taken.append(picked)
            if any(c.subnet.version == 6 for c in configs):
                ipv6 = True
            elif ipv6:
                v6_pools = [(b, s) for b, s in cfg.pools if b.version == 6]
                v6 = pick_subnet(v6_pools, taken + route_subnets()) if v6_pools else None
                if v6 is None:
                    v6 = ula_subnet(net_id, taken + route_subnets())
                if v6 is None:
                    raise NetworkError(
                        "could not find an available, non-overlapping IPv6 address pool "
                        "among the defaults to assign to the network"
                    )
                configs.append(IPAMConfig(v6, v6.network_address + 1))
            conflist = network_conflist(
                name,
                net_id,
                now_rfc3339(),
                configs,
                opts,
                internal=internal,
                ipv6=ipv6,
                ipam_dir=self.ipam_dir,
                labels=labels or {},
                options=options or {},
                run_dir=os.path.abspath(self.paths.run),
            )
            if sub is not None:
                conflist = netdrivers.conflist(
                    name, driver, net_id, now_rfc3339(), configs, sub, internal=internal,
                    ipv6=ipv6, ipam_dir=self.ipam_dir, labels=labels or {},
                    options=options or {}, created_parent=netdrivers.ensure_parent(sub.parent),
                )  # fmt: skip
            path = self.path_of(name)
            _write_atomic(path, conflist)
        with open(path, "rb") as fh:
            return Network.from_conflist(libcni.conflist_from_bytes(fh.read(), path))

    # -- removing -------------------------------------------------------------------

    def attached(self, net: Network) -> builtins.list[str]:
        """Names of the containers attached to `net` (netctl's own records)."""
        from pycni.runtime.containers import ContainerStore

        return [r.name for r in ContainerStore(self.paths).attached_to(net.name)]

    def remove(self, ref: str) -> tuple[Network, builtins.list[str]]:
        """Remove a network without containers; returns it and cleanup warnings."""
        if ref in BUILTINS:
            raise NetworkError(f"{ref} is a pre-defined network and cannot be removed")
        net = self.resolve(ref)
        if net.builtin:
            raise NetworkError(f"{net.name} is a pre-defined network and cannot be removed")
        if net.driver == "overlay":  # removed from the cluster store, for every member
            from pycni.runtime import overlay_networks

            overlay_networks.remove(self, net)
            return net, []
        with self._locked():
            users = self.attached(net)
            if users:
                raise NetworkInUse(
                    f"error while removing network: network {net.name} id {net.id} "
                    f"has active endpoints ({', '.join(users)})"
                )
            try:
                os.unlink(net.config_file)
            except FileNotFoundError:
                pass
        warnings: builtins.list[str] = []
        if net.kind == "bridge" and net.bridge:
            warnings = release_bridge(net.bridge)
        if net.managed and net.kind == "cni":
            from pycni.runtime import netdrivers

            warnings = netdrivers.release_parent(net.meta)
        if not any(w.startswith(f"bridge {net.bridge} still has ports") for w in warnings):
            # No attachment is left: the leases are stale, and a future network of the
            # same name must not inherit them.
            from pycni.ipam import store

            store.forget_network(self.ipam_dir, net.name)
        return net, warnings

    def prune(self) -> tuple[builtins.list[str], builtins.list[str]]:
        """Remove every non-builtin network without containers; (removed names, warnings)."""
        removed: builtins.list[str] = []
        warnings: builtins.list[str] = []
        for net in self._load():
            if not net.managed or net.builtin or self.attached(net):
                continue
            try:
                _, more = self.remove(net.name)
            except NetworkInUse:
                continue
            removed.append(net.name)
            warnings.extend(more)
        return removed, warnings


def ensure_default_network(paths: Paths | None = None) -> Network:
    """The default `bridge` network, (re)written from daemon.json when needed."""
    return NetworkStore(paths).ensure_default_network()
