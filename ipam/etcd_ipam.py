"""etcd-ipam: cluster-wide IPAM with one lease per address in etcd (whereabouts' model),
for flat networks that span hosts (macvlan or bridge on a shared L2).

    "ipam": {"type": "etcd-ipam",
             "clusterStore": "etcd://192.0.2.11:2379,...",
             "clusterStoreOpts": {"kv.cacertfile": ..., "kv.certfile": ..., "kv.keyfile": ...},
             "range": "10.60.0.0/24", "rangeStart": "10.60.0.10", "rangeEnd": "10.60.0.200",
             "exclude": ["10.60.0.64/28"], "gateway": "10.60.0.1",
             "routes": [{"dst": "0.0.0.0/0"}], "nodeName": "host-a"}

    /pycni/ipam/<network>/<address> -> {"containerID", "ifname", "node"}

ADD lists the network's leases, takes the lowest free address with a create-if-absent
transaction and, when another host won the race for it, lists again: no duplicate
under concurrent ADDs on any number of hosts, no lock file on a shared disk. ADD is
idempotent per (containerID, ifname). DEL deletes that attachment's lease (gone is
success). GC (CNI GC with cni.dev/valid-attachments) deletes this node's leases whose
attachment is not valid, e.g. those of a plugin killed mid-ADD. etcd without quorum
answers code 11 within a few seconds.
"""

from __future__ import annotations

import ipaddress

from pycni import conf, errors, fastjson, skel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.overlay.store import KV, Store
    from pycni.result import Result

WHERE = "etcd-ipam"
PREFIX = "/pycni/ipam"


class EtcdIpamConf:
    __slots__ = (
        "cluster",
        "exclude",
        "first",
        "gateway",
        "last",
        "name",
        "node",
        "routes",
        "subnet",
    )

    def __init__(self, d: dict[str, Any]) -> None:
        from pycni.overlay.spec import ClusterStore

        #: network name: the lease namespace in etcd
        self.name: str = d["name"]
        ipam = conf.get_dict(d, "ipam", WHERE)
        where = f"{WHERE}: ipam"
        url = conf.get_str(ipam, "clusterStore", "", where)
        if not url:
            raise errors.InvalidConfig(
                f"{where}.clusterStore is required", "e.g. etcd://192.0.2.11:2379,192.0.2.12:2379"
            )
        opts = conf.get_dict(ipam, "clusterStoreOpts", where)
        #: the etcd members and TLS files
        self.cluster = ClusterStore(url, {k: str(v) for k, v in opts.items() if v})
        text = conf.get_str(ipam, "range", "", where)
        try:
            #: the flat network's subnet
            self.subnet = ipaddress.IPv4Network(text)
        except ValueError:
            raise errors.InvalidConfig(
                f"{where}.range {text!r} is not an IPv4 CIDR", "e.g. 10.60.0.0/24"
            ) from None
        hosts = list(self.subnet.hosts()) or [self.subnet.network_address]
        #: first and last allocatable addresses
        self.first = self._addr(ipam, "rangeStart", hosts[0], where)
        self.last = self._addr(ipam, "rangeEnd", hosts[-1], where)
        gw = conf.get_str(ipam, "gateway", "", where)
        #: the gateway reported in the result (never allocated)
        self.gateway = self._addr(ipam, "gateway", hosts[0], where) if gw else None
        #: excluded CIDRs
        self.exclude: list[ipaddress.IPv4Network] = []
        for n, item in enumerate(conf.get_list(ipam, "exclude", where)):
            try:
                self.exclude.append(ipaddress.IPv4Network(str(item)))
            except ValueError:
                raise errors.InvalidConfig(f"{where}.exclude[{n}] {item!r} is not a CIDR") from None
        from pycni.ipam import config

        #: routes for the result
        self.routes = config.parse_routes(ipam, where)
        import socket

        #: whose leases this node's GC may judge
        self.node = conf.get_str(ipam, "nodeName", "", where) or socket.gethostname()

    def _addr(
        self, ipam: dict[str, Any], key: str, default: ipaddress.IPv4Address, where: str
    ) -> ipaddress.IPv4Address:
        text = conf.get_str(ipam, key, "", where)
        if not text:
            return default
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError:
            raise errors.InvalidConfig(f"{where}.{key} {text!r} is not an IPv4 address") from None
        if addr not in self.subnet:
            raise errors.InvalidConfig(f"{where}.{key} {addr} is outside {self.subnet}")
        return addr

    def candidates(self) -> list[ipaddress.IPv4Address]:
        out = []
        addr = self.first
        while addr <= self.last:
            if addr != self.gateway and not any(addr in x for x in self.exclude):
                out.append(addr)
            addr += 1
        return out


def _prefix(c: EtcdIpamConf) -> str:
    return f"{PREFIX}/{c.name}/"


def _store(c: EtcdIpamConf) -> Store:
    from pycni.overlay.store import Store

    return Store(c.cluster)


def _owner(kv: KV) -> tuple[str, str, str]:
    try:
        v = fastjson.loads(kv.value)
        return str(v.get("containerID", "")), str(v.get("ifname", "")), str(v.get("node", ""))
    except (ValueError, AttributeError):
        return "", "", ""


def _result(cmd: skel.CmdArgs, c: EtcdIpamConf, addr: ipaddress.IPv4Address) -> Result:
    from pycni.result import IPConfig, Result

    iface = ipaddress.IPv4Interface(f"{addr}/{c.subnet.prefixlen}")
    return Result(cmd.cni_version, ips=[IPConfig(iface, c.gateway)], routes=c.routes)


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = EtcdIpamConf(cmd.conf)
    store = _store(c)
    value = fastjson.dumps({"containerID": cmd.container_id, "ifname": cmd.ifname, "node": c.node})
    pool = c.candidates()
    for _attempt in range(16):
        _rev, kvs = store.get_prefix(_prefix(c))
        taken = set()
        for kv in kvs:
            cid, ifname, _node = _owner(kv)
            addr = ipaddress.IPv4Address(kv.key.rsplit("/", 1)[-1])
            if (cid, ifname) == (cmd.container_id, cmd.ifname):
                return _result(cmd, c, addr)  # ADD again: the same address
            taken.add(addr)
        free = next((a for a in pool if a not in taken), None)
        if free is None:
            raise errors.InvalidConfig(
                f"{WHERE}: no free address left in {c.subnet} ({len(pool)} allocatable) on "
                f"network {c.name}",
                "remove containers, widen the range, or run CNI GC to drop stale leases",
            )
        if store.create(f"{_prefix(c)}{free}", value):
            from pycni import fault

            fault.point("after-etcd-lease")
            return _result(cmd, c, free)
        # another host took it between our list and our create: list again
    raise errors.TryAgainLater(f"{WHERE}: address allocation kept racing on network {c.name}")


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = EtcdIpamConf(cmd.conf)
    store = _store(c)
    _rev, kvs = store.get_prefix(_prefix(c))
    for kv in kvs:
        cid, ifname, _node = _owner(kv)
        if (cid, ifname) == (cmd.container_id, cmd.ifname):
            store.delete_if(kv.key, kv.mod_revision)


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = EtcdIpamConf(cmd.conf)
    _rev, kvs = _store(c).get_prefix(_prefix(c))
    if not any(_owner(kv)[:2] == (cmd.container_id, cmd.ifname) for kv in kvs):
        raise errors.UnknownContainer(
            f"{WHERE}: no lease for {cmd.container_id}/{cmd.ifname} on network {c.name}"
        )


def cmd_gc(cmd: skel.CmdArgs) -> None:
    valid = skel.valid_attachments(cmd.conf)
    if valid is None:
        return
    c = EtcdIpamConf(cmd.conf)
    store = _store(c)
    _rev, kvs = store.get_prefix(_prefix(c))
    for kv in kvs:
        cid, ifname, node = _owner(kv)
        # only this node's leases: other nodes' attachments are not in our list
        if node == c.node and (cid, ifname) not in valid:
            store.delete_if(kv.key, kv.mod_revision)


VERBS = skel.Verbs(
    about="pycni etcd-ipam plugin", add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc
)


def main() -> None:
    skel.main(VERBS)
