"""host-local IPAM: addresses from configured ranges, leases in files on this node.

Drop-in for the reference `host-local`: same config, same lease files (a node can
switch between the two without losing or duplicating a lease). Differences, all
stricter: the network's lock is held for a whole ADD/DEL/GC (not per range set) and
waited on for a bounded time; leases are written atomically (temp + link); the
network, gateway and IPv4 broadcast addresses are never handed out, even when an
explicit rangeStart/rangeEnd includes them; a second ADD of one attachment is refused
also when it requests an IP; an exhausted range set, or a requested IP held by another
attachment, is code 11 (TryAgainLater); a requested IP outside every range is refused
before anything is reserved. Additions: CNI_ARGS `IP=` may list several addresses
(comma-separated); GC (cni.dev/valid-attachments) and STATUS are implemented.

Also called in-process by our bridge plugin: `VERBS.add(cmd)` with the CmdArgs the
bridge received, so the verbs read the CNI_* values from `cmd`, never from os.environ.
"""

from __future__ import annotations

import ipaddress
import os

from pycni import errors, skel
from pycni.ipam import config
from pycni.ipam.allocator import allocate_all, assign_requested
from pycni.ipam.store import DiskStore, status
from pycni.result import DNS, IPConfig, Result, parse_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.ipam.allocator import IPAddress, RangeSet
    from pycni.result import Route

# CNI_ARGS keys host-local understands; others (K8S_POD_NAME, ...) need IgnoreUnknown=1,
# as with the reference plugin.
KNOWN_ARGS = frozenset({"IP"})


class HostLocalConf:
    """The `ipam` section of a host-local network, validated."""

    __slots__ = ("data_dir", "name", "range_sets", "requested", "resolv_conf", "routes")

    def __init__(
        self,
        name: str,
        data_dir: str,
        range_sets: list[RangeSet],
        requested: list[IPAddress],
        routes: list[Route],
        resolv_conf: str | None,
    ) -> None:
        # Network name; also the lease directory's name under data_dir.
        self.name = name
        # Where lease directories live (ipam.dataDir).
        self.data_dir = data_dir
        # runtimeConfig.ipRanges + legacy subnet + ipam.ranges; one address from each.
        self.range_sets = range_sets
        # Addresses the runtime asked for (CNI_ARGS IP, args.cni.ips, runtimeConfig.ips).
        self.requested = requested
        # Routes returned in the result (ipam.routes).
        self.routes = routes
        # resolv.conf-style file whose nameserver/domain/search/options fill result.dns.
        self.resolv_conf = resolv_conf


def _name_and_data_dir(conf: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    name = conf.get("name")
    if not isinstance(name, str):
        raise errors.InvalidConfig("missing network name", 'the configuration needs a "name"')
    skel.validate_network_name(name)  # it becomes a directory name
    ipam = config.ipam_section(conf)
    data_dir = config.optional_str(ipam, "dataDir", "ipam") or config.DEFAULT_DATA_DIR
    if not os.path.isabs(data_dir) or "\0" in data_dir:
        raise errors.InvalidConfig(
            f"ipam.dataDir {data_dir!r} is not an absolute path",
            "write an absolute directory, e.g. /var/lib/cni/networks",
        )
    return name, data_dir, ipam


def load_conf(cmd: skel.CmdArgs) -> HostLocalConf:
    """Validate everything before anything touches the disk."""
    conf = cmd.conf
    name, data_dir, ipam = _name_and_data_dir(conf)
    cni_args = cmd.cni_args
    skel.check_cni_args(cni_args, KNOWN_ARGS)
    range_sets = config.range_sets(conf, ipam)
    config.check_legacy_families(cmd.cni_version, [rs.version for rs in range_sets])
    return HostLocalConf(
        name,
        data_dir,
        range_sets,
        config.requested_ips(conf, cni_args),
        config.parse_routes(ipam),
        config.optional_str(ipam, "resolvConf", "ipam"),
    )


def cmd_add(cmd: skel.CmdArgs) -> Result:
    conf = load_conf(cmd)
    dns = config.read_resolv_conf(conf.resolv_conf) if conf.resolv_conf else DNS()
    assign_requested(conf.range_sets, conf.requested)  # bad requests never touch the disk
    with DiskStore(conf.data_dir, conf.name).open() as store:
        store.refresh()
        allocated = allocate_all(
            conf.range_sets, store, cmd.container_id, cmd.ifname, conf.requested
        )
        store.commit()
    ips = [
        IPConfig(ipaddress.ip_interface(f"{ip}/{r.subnet.prefixlen}"), r.gateway)
        for ip, r in allocated
    ]
    return Result(cmd.cni_version, ips=ips, routes=conf.routes, dns=dns)


def cmd_del(cmd: skel.CmdArgs) -> None:
    # Leases are keyed by container ID and interface: DEL needs only the store, so
    # ranges, requested IPs or a runtimeConfig that cannot be parsed never keep it
    # from releasing (a DEL that fails is retried forever by the runtime).
    name, data_dir, _ipam = _name_and_data_dir(cmd.conf)
    skel.check_cni_args(cmd.cni_args, KNOWN_ARGS)
    with DiskStore(data_dir, name).open(create=False) as store:
        if store.exists:
            store.release(cmd.container_id, cmd.ifname)


def cmd_check(cmd: skel.CmdArgs) -> None:
    conf = load_conf(cmd)
    if cmd.conf.get("prevResult") is not None:
        parse_result(cmd.conf["prevResult"])  # a malformed one is the caller's mistake (6/7)
    # Without the lock: leases appear and vanish atomically (link/unlink).
    store = DiskStore(conf.data_dir, conf.name)
    store.scan(locked=False)
    if not store.held_by(cmd.container_id, cmd.ifname):
        raise errors.UnknownContainer(
            f"host-local: Failed to find address added by container {cmd.container_id}",
            f"no lease for {cmd.container_id}/{cmd.ifname} in {store.directory}",
        )


def cmd_gc(cmd: skel.CmdArgs) -> None:
    name, data_dir, _ipam = _name_and_data_dir(cmd.conf)
    valid = skel.valid_attachments(cmd.conf)
    if valid is None:
        # No list means the caller did not say what is valid; releasing everything on a
        # guess would strand every running container on this network.
        return
    with DiskStore(data_dir, name).open(create=False) as store:
        if store.exists:
            store.gc(valid)


def cmd_status(cmd: skel.CmdArgs) -> None:
    _name, data_dir, _ipam = _name_and_data_dir(cmd.conf)
    problem = status(data_dir)
    if problem is not None:
        raise errors.PluginNotAvailable(
            f"host-local cannot write leases: {problem}",
            f"ipam.dataDir is {data_dir}; make it writable and give it free space",
        )


VERBS = skel.Verbs(
    about="pycni host-local IPAM plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    skel.main(VERBS)
