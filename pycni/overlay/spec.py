"""Pure data of the overlay: cluster-store endpoints, network specs, subnet leases, the
per-host lease file the plugin reads. Stdlib only, and json only where it is used (the
plugin imports this on ADD, where it writes with pycni.fastjson)."""

from __future__ import annotations

import ipaddress
import os

from pycni import errors

PREFIX = "/pycni/overlay"
VXLAN_OVERHEAD = 50  # outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14)
DEFAULT_TTL = 30


def network_key(name: str) -> str:
    return f"{PREFIX}/networks/{name}"


def endpoints_prefix(name: str) -> str:
    """Each host's container count: apart from the subnet leases, so a container start
    is not an event for every other host's watch."""
    return f"{PREFIX}/endpoints/{name}/"


def subnets_prefix(name: str) -> str:
    return f"{PREFIX}/subnets/{name}/"


def subnet_key(name: str, subnet: ipaddress.IPv4Network) -> str:
    return f"{subnets_prefix(name)}{subnet.network_address}-{subnet.prefixlen}"


def subnet_from_key(key: str) -> ipaddress.IPv4Network:
    tail = key.rsplit("/", 1)[-1]
    addr, _, plen = tail.partition("-")
    return ipaddress.IPv4Network(f"{addr}/{plen}")


class ClusterStore:
    """Docker's `cluster-store` (etcd://host:port[,host:port...]) and `cluster-store-opts`
    (kv.cacertfile, kv.certfile, kv.keyfile)."""

    __slots__ = ("cacert", "cert", "endpoints", "key")

    def __init__(self, url: str, opts: dict[str, str] | None = None) -> None:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme != "etcd" or not rest:
            raise errors.InvalidConfig(
                f"cluster-store {url!r} is not an etcd URL",
                "use etcd://host:port[,host:port...]",
            )
        opts = opts or {}
        self.cacert = opts.get("kv.cacertfile", "")
        self.cert = opts.get("kv.certfile", "")
        self.key = opts.get("kv.keyfile", "")
        if bool(self.cert) != bool(self.key):
            raise errors.InvalidConfig(
                "cluster-store-opts: kv.certfile and kv.keyfile go together",
                "set both (client certificate and its key) or neither",
            )
        #: (host, port) of each member, in the order given
        self.endpoints: list[tuple[str, int]] = []
        for item in rest.rstrip("/").split(","):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise errors.InvalidConfig(
                    f"cluster-store: bad member {item!r}", "each member is host:port"
                )
            self.endpoints.append((host.strip("[]"), int(port)))

    @property
    def protocol(self) -> str:
        return "https" if self.cacert else "http"

    def url(self) -> str:
        return "etcd://" + ",".join(f"{h}:{p}" for h, p in self.endpoints)

    def opts(self) -> dict[str, str]:
        out = {}
        for k, v in (("kv.cacertfile", self.cacert), ("kv.certfile", self.cert),
                     ("kv.keyfile", self.key)):  # fmt: skip
            if v:
                out[k] = v
        return out


class NetworkSpec:
    """One overlay network as stored in etcd (flannel's net-conf, plus VNI and MTU)."""

    __slots__ = ("internal", "ip_range", "mtu", "name", "subnet", "subnet_len", "vni")

    def __init__(
        self,
        name: str,
        subnet: str,
        vni: int,
        subnet_len: int = 24,
        mtu: int = 0,
        internal: bool = False,
        ip_range: str = "",
    ) -> None:
        where = f"overlay network {name!r}"
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise errors.InvalidConfig(f"{where}: bad subnet {subnet!r}", str(exc)) from None
        if not net.prefixlen < subnet_len <= 30:
            raise errors.InvalidConfig(
                f"{where}: subnetLen {subnet_len} does not fit in {net}",
                f"use a per-host length between /{net.prefixlen + 1} and /30",
            )
        if not 1 <= vni <= 0xFFFFFF:
            raise errors.InvalidConfig(f"{where}: vxlan_id {vni} out of range", "use 1-16777215")
        self.name = name
        self.subnet = net
        self.subnet_len = subnet_len
        self.vni = vni
        #: container MTU; 0 means underlay MTU minus the VXLAN overhead
        self.mtu = mtu
        self.internal = internal
        self.ip_range = ip_range

    def to_json(self) -> str:
        import json

        return json.dumps(
            {
                "Name": self.name,
                "Network": str(self.subnet),
                "SubnetLen": self.subnet_len,
                "VNI": self.vni,
                "MTU": self.mtu,
                "Internal": self.internal,
                "IPRange": self.ip_range,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> NetworkSpec:
        import json

        d = json.loads(text)
        return cls(
            d["Name"],
            d["Network"],
            int(d["VNI"]),
            int(d.get("SubnetLen", 24)),
            int(d.get("MTU", 0)),
            bool(d.get("Internal", False)),
            d.get("IPRange", ""),
        )

    def host_subnets(self) -> list[ipaddress.IPv4Network]:
        """Every per-host subnet, lowest first; the first is skipped (flannel keeps it
        for the network's own use) when there is more than one."""
        subs = list(self.subnet.subnets(new_prefix=self.subnet_len))
        return subs[1:] if len(subs) > 1 else subs


def pick_free(spec: NetworkSpec, taken: set[ipaddress.IPv4Network]) -> ipaddress.IPv4Network | None:
    """The lowest per-host subnet no live lease holds (deterministic: a lease that
    expired is the first to be reused)."""
    for sub in spec.host_subnets():
        if sub not in taken:
            return sub
    return None


def vtep_mac(vni: int, public_ip: str) -> str:
    """A stable, locally administered unicast MAC for this host's VTEP on this VNI, so an
    agent restart (or a re-created device) keeps the address other hosts programmed."""
    import hashlib

    h = hashlib.sha256(f"{vni}/{public_ip}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


def lease_value(public_ip: str, mac: str, hostname: str) -> str:
    # flannel's lease value: PublicIP + backend data
    import json

    return json.dumps(
        {"PublicIP": public_ip, "BackendType": "vxlan", "BackendData": {"VtepMAC": mac},
         "Hostname": hostname},
        sort_keys=True,
    )  # fmt: skip


# -- the host's lease file (the plugin reads it; the agent writes it) ---------------------


def state_root() -> str:
    return os.environ.get("PYCNI_STATE_DIR") or "/var/lib/pycni"


def network_dir(name: str, root: str | None = None) -> str:
    return os.path.join(root or state_root(), "overlay", name)


def write_json_atomic(path: str, obj: object) -> None:
    from pycni import fastjson
    from pycni.atomicfile import write_atomic

    write_atomic(path, fastjson.dumps(obj, sort_keys=True), mode=0o644)


def agent_running(directory: str) -> bool:
    """Whether an agent holds the network's agent.lock (a flock dies with its holder,
    even one left an unreaped zombie, which a pid check would miss)."""
    import fcntl

    try:
        fd = os.open(os.path.join(directory, "agent.lock"), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
