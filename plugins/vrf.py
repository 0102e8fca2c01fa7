"""vrf: put the container's interface into a VRF (drop-in for the reference `vrf`).

A chained plugin. Inside the container's namespace it creates the VRF device
`vrfname` (routing table `table`, or the first table no other VRF uses, from 1) or
reuses it (its table must then match a given `table`), and enslaves CNI_IFNAME to it.
Enslaving flushes what the kernel ties to the old table, so, as the reference does:

- global IPv6 addresses that vanished (net.ipv6.conf.all.keep_addr_on_down=0) are
  added again, and we wait until their local route shows in the VRF's table;
- the interface's gateway routes from main (the IPAM routes: scope universe) are
  copied into the VRF's table.

DEL releases the interface and deletes the VRF once no interface is left in it.
A kernel without VRF support (no `vrf` module) gets a clear error and no change.
"""

from __future__ import annotations

import os
import time

from pycni import conf, errors, netns, skel
from pycni.result import Result, chained_prev_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.netlink import Addr, Link, Netlink

WHERE = "vrf"


class VrfConf:
    __slots__ = ("table", "vrfname")

    def __init__(self, d: dict[str, Any]) -> None:
        #: name of the VRF device inside the container's namespace
        self.vrfname = conf.get_str(d, "vrfname", "", WHERE)
        if not self.vrfname:
            raise errors.InvalidConfig(
                "configuration is expected to have a valid vrf name", "set 'vrfname'"
            )
        conf.validate_link_name(self.vrfname, WHERE, "vrfname")
        #: its routing table; 0: the first one no other VRF uses
        self.table = conf.get_int(d, "table", 0, WHERE, 0, (1 << 32) - 1)


def vrf_table(nl: Netlink, link: Link) -> int:
    import struct

    from pycni.netlink import IFLA_VRF_TABLE

    raw = nl.link_info_data(link.index).get(IFLA_VRF_TABLE)
    return struct.unpack("=I", raw)[0] if raw and len(raw) >= 4 else 0


def _free_table(nl: Netlink) -> int:
    taken = {vrf_table(nl, link) for link in nl.links() if link.kind == "vrf"}
    table = 1
    while table in taken:
        table += 1
    return table


def _find_vrf(nl: Netlink, name: str) -> Link | None:
    link = nl.link(name)
    if link is not None and link.kind != "vrf":
        raise errors.InvalidConfig(
            f"Netlink {name} is not a VRF",
            f"{name} is a {link.kind or 'device'}; pick another vrfname",
        )
    return link


def _create_vrf(nl: Netlink, name: str, table: int) -> Link:
    from pycni import netlink

    table = table or _free_table(nl)
    try:
        nl.add_link(name, "vrf", up=True, info_data=netlink.nla_u32(netlink.IFLA_VRF_TABLE, table))
    except netlink.NetlinkError as exc:
        if exc.errno == 95:  # EOPNOTSUPP: "Unknown device type"
            raise errors.InvalidConfig(
                f"could not add VRF {name}: this kernel has no VRF support",
                "load the vrf kernel module (modprobe vrf)",
            ) from None
        from pycni import netsetup

        raise netsetup.kernel_error(exc, f"add VRF {name}") from None
    link = nl.link(name)
    if link is None:
        raise errors.CniError(f"VRF {name} vanished after its creation")
    return link


def _global_v6(nl: Netlink, index: int) -> list[Addr]:
    from pycni import netlink

    return [a for a in nl.addrs(index, netlink.AF_INET6) if a.scope == netlink.RT_SCOPE_UNIVERSE]


def enslave(nl: Netlink, vrf: Link, table: int, ifname: str) -> None:
    from pycni import netlink

    link = nl.link(ifname)
    if link is None:
        raise errors.InvalidConfig(f"could not get link by name {ifname}")
    if link.master:
        master = nl.link_by_index(link.master)
        raise errors.InvalidConfig(
            f"interface {ifname} has already a master set: {master.name if master else link.master}"
        )
    before = _global_v6(nl, link.index)
    routes = [
        r
        for r in nl.routes(netlink.AF_UNSPEC, netlink.RT_TABLE_MAIN)
        if r.oif == link.index and r.scope == netlink.RT_SCOPE_UNIVERSE
    ]
    nl.set_link(link.index, master=vrf.index)
    after = {a.interface for a in _global_v6(nl, link.index)}
    for a in before:
        if a.interface in after:
            continue
        nl.add_addr(link.index, a.interface, nodad=bool(a.flags & netlink.IFA_F_NODAD))
        _wait_local_route(nl, a, table, ifname)
    for r in routes:
        nl.copy_route(r, table)


def _wait_local_route(nl: Netlink, a: Addr, table: int, ifname: str) -> None:
    """The kernel installs an IPv6 address's local route (in the VRF's table) only when
    the address is usable (after DAD): wait for it, ~2.5 s at most, as the reference."""
    from pycni.netlink import AF_INET6

    for attempt in range(9):
        if any(
            r.dst.prefixlen == 128 and r.dst.network_address == a.interface.ip
            for r in nl.routes(AF_INET6, table=table)
        ):
            return
        time.sleep(0.01 * (1 << attempt))
    raise errors.CniError(
        f"failed getting local/host addresses for {ifname} in table {table}",
        f"no local route for {a.interface.ip} appeared",
    )


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = VrfConf(cmd.conf)
    prev = chained_prev_result(cmd.conf, WHERE)
    fd = netns.open_netns(cmd.netns)
    from pycni.netlink import Netlink

    try:
        with Netlink(netns_fd=fd) as nl:
            vrf = _find_vrf(nl, c.vrfname)
            created = False
            if vrf is not None:
                table = vrf_table(nl, vrf)
                if c.table and table != c.table:
                    raise errors.InvalidConfig(
                        f"VRF {c.vrfname} already exist with different routing table {table}",
                        f"the config asks for table {c.table}",
                    )
            else:
                vrf = _create_vrf(nl, c.vrfname, c.table)
                table = vrf_table(nl, vrf)
                created = True
            try:
                enslave(nl, vrf, table, cmd.ifname)
            except BaseException as exc:
                link = nl.link(cmd.ifname)
                if link is not None and link.master == vrf.index:
                    nl.set_link(link.index, master=0)
                if created:
                    nl.del_link(vrf.index)
                if isinstance(exc, OSError):
                    from pycni import netsetup

                    raise netsetup.kernel_error(
                        exc, f"add {cmd.ifname} to VRF {c.vrfname}"
                    ) from None
                raise
    finally:
        os.close(fd)
    return prev


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = VrfConf(cmd.conf)
    try:
        fd = netns.open_netns(cmd.netns)
    except errors.CniError:
        return  # the namespace is gone, with the VRF in it
    from pycni.netlink import Netlink

    try:
        with Netlink(netns_fd=fd) as nl:
            vrf = nl.link(c.vrfname)
            if vrf is None or vrf.kind != "vrf":
                return
            link = nl.link(cmd.ifname)
            if link is not None and link.master == vrf.index:
                nl.set_link(link.index, master=0)
            if not any(x.master == vrf.index for x in nl.links()):
                nl.del_link(vrf.index)
    except OSError as exc:
        from pycni import netsetup

        raise netsetup.kernel_error(exc, f"release {cmd.ifname} from VRF {c.vrfname}") from None
    finally:
        os.close(fd)


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = VrfConf(cmd.conf)
    chained_prev_result(cmd.conf, WHERE)
    fd = netns.open_netns(cmd.netns)
    from pycni.netlink import Netlink

    try:
        with Netlink(netns_fd=fd) as nl:
            vrf = nl.link(c.vrfname)
            if vrf is None or vrf.kind != "vrf":
                raise errors.CniError(f"{WHERE} CHECK failed: no VRF {c.vrfname}")
            link = nl.link(cmd.ifname)
            if link is None or link.master != vrf.index:
                raise errors.CniError(f"failed to find {cmd.ifname} associated to vrf {c.vrfname}")
            if c.table and vrf_table(nl, vrf) != c.table:
                raise errors.CniError(
                    f"{WHERE} CHECK failed: VRF {c.vrfname} uses table {vrf_table(nl, vrf)}",
                    f"expected {c.table}",
                )
    finally:
        os.close(fd)


VERBS = skel.Verbs(about="pycni vrf plugin", add=cmd_add, delete=cmd_del, check=cmd_check)


def main() -> None:
    skel.main(VERBS)
