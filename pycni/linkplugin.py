"""Shared verbs of the plugins that give a container one link of their own kind:
macvlan, ipvlan and vlan (a child of a parent link, the "master") and dummy and tap
(standalone), each a drop-in for the reference plugin of the same name.

Every such plugin reads like the reference's script:

    ADD    check CNI_IFNAME is free; create the link born inside the container's
           namespace (`create`); IPAM; addresses, routes, up (or just up: L2 only).
           A failure at any step undoes the steps before it, IPAM included.
    DEL    IPAM release, then the link if it is still there and of our kind; a
           namespace that is gone is success (the link went with it).
    CHECK  IPAM CHECK, prevResult's interface, kind, MAC, addresses and routes.
    GC     IPAM GC (these plugins keep no state of their own: links die with their
           namespace); STATUS: IPAM STATUS, and the master must exist.

A kernel without the link kind (ipvlan, vlan, dummy on our CI kernel) answers
RTM_NEWLINK with EOPNOTSUPP ("Unknown device type"): `kind_error` turns that into
InvalidConfig (7) naming the kernel module to load, and nothing was created.
"""

from __future__ import annotations

import os

from pycni import errors, fault, invoke, ipam_exec, netlink, netns, netsetup, skel
from pycni.netlink import Link, Netlink
from pycni.result import DNS, Interface, IPConfig, Result, parse_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: the kernel module behind each link kind (what `modprobe` loads)
MODULES = {"macvlan": "macvlan", "ipvlan": "ipvlan", "vlan": "8021q", "dummy": "dummy"}


def kind_error(exc: netlink.NetlinkError, kind: str, name: str) -> errors.CniError:
    """A refused RTM_NEWLINK as a CNI error: the missing module, a taken name, or the
    kernel's own words."""
    if exc.errno == netlink.EOPNOTSUPP:
        module = MODULES.get(kind, kind)
        return errors.InvalidConfig(
            f"failed to create {kind} {name}: this kernel has no {kind} support "
            f"(kernel module {module})",
            f"load the {module} kernel module (modprobe {module}), or use a kernel built with it",
        )
    if exc.errno == 98:  # EADDRINUSE: the MAC is the master's or another child's
        return errors.InvalidConfig(
            f"failed to create {kind} {name}: its MAC address is already in use on the master",
            "choose another MAC (mac, CNI_ARGS MAC or runtimeConfig.mac), or leave it out",
        )
    if isinstance(exc, netlink.LinkExists):
        return errors.InvalidEnvironment(
            f"failed to create {kind}: interface {name} already exists in the container",
            "CNI_IFNAME must name an interface that does not exist in the container yet",
        )
    return netsetup.nl_error(exc, f"create {kind} {name}")


def check_mac_free(cont: Netlink, ifname: str, kind: str) -> None:
    """A child with a MAC the caller chose: the kernel checks it against the master's
    other children only when the link opens (EADDRINUSE at IFF_UP), so open it once
    here, before any address (the real up must come after arp_notify, for the
    gratuitous ARP). On a collision the link is removed and the caller told."""
    link = cont.link(ifname)
    if link is None:
        return
    try:
        cont.set_link(link.index, up=True)
    except netlink.NetlinkError as exc:
        cont.del_link(link.index)
        raise kind_error(exc, kind, ifname) from None
    cont.set_link(link.index, up=False)


def find_master(nl: Netlink, name: str, where: str) -> Link:
    """The parent link `name` in `nl`'s namespace; "" means the interface of the
    default route (the reference's default)."""
    if not name:
        link = nl.default_route_link()
        if link is None:
            raise errors.InvalidConfig(
                f"{where}: no default route interface found",
                "set 'master' to the host interface the container's link should sit on",
            )
        return link
    link = nl.link(name)
    if link is None:
        raise errors.InvalidConfig(
            f'{where}: failed to lookup master "{name}": Link not found',
            "'master' must name an existing interface (in the container's namespace "
            "with linkInContainer)",
        )
    return link


class parent_netlink:
    """`with parent_netlink(in_container, cont) as nl:` the namespace the master lives
    in: the container's (linkInContainer: `cont` itself, left open) or the host's (a
    socket of its own, closed after the block)."""

    def __init__(self, in_container: bool, cont: Netlink) -> None:
        self.own = None if in_container else Netlink()
        self.nl = cont if self.own is None else self.own

    def __enter__(self) -> Netlink:
        return self.nl

    def __exit__(self, *exc: object) -> None:
        if self.own is not None:
            self.own.close()


def check_mtu(mtu: int, master: Link, where: str) -> None:
    if 0 < mtu < 68:
        raise errors.InvalidConfig(
            f"{where}: invalid MTU {mtu}, must be 0 (the master's) or at least 68",
            f"master {master.name} has MTU {master.mtu}",
        )
    if mtu > master.mtu:
        raise errors.InvalidConfig(
            f"{where}: invalid MTU {mtu}, must be [0, master MTU({master.mtu})]",
            f"master {master.name} has MTU {master.mtu}",
        )


# -- ADD -------------------------------------------------------------------------------


def add(
    cmd: skel.CmdArgs,
    kind: str,
    create: Callable[[int, Netlink], None],
    ipam_type: str,
    dns: DNS,
    prev_ips: Result | None = None,
    l3_required: bool = False,
    after_create: Callable[[int, Netlink, Link], None] | None = None,
    notify_v6: bool = False,
) -> Result:
    """The ADD of every plugin here. `create(netns_fd, cont)` makes CNI_IFNAME in the
    container's namespace (nothing when it raises); `after_create` (tap: its bridge)
    runs on the new link before any address. With `prev_ips` (ipvlan chained after a
    plugin that assigned addresses) IPAM is not called and those addresses are used;
    `notify_v6`: ndisc_notify on (macvlan, ipvlan)."""
    if ipam_type:
        invoke.find_in_path(ipam_type, cmd.path_list)  # a missing IPAM fails before any change
    fd = netns.open_netns(cmd.netns)
    cont = Netlink(netns_fd=fd)
    created = 0
    ipam_done = False
    try:
        if cont.link(cmd.ifname) is not None:
            raise errors.InvalidEnvironment(
                f"interface {cmd.ifname} already exists in the container",
                "CNI_IFNAME must name an interface that does not exist in the container yet",
            )
        create(fd, cont)
        link = cont.link(cmd.ifname)
        if link is None:
            raise errors.CniError(f"{kind} {cmd.ifname} vanished right after it was created")
        created = link.index
        fault.point("after-link")
        if after_create is not None:
            after_create(fd, cont, link)
            link = cont.link_by_index(created) or link  # its MAC may have changed
        result = Result(cmd.cni_version, interfaces=[Interface(cmd.ifname, link.mac, cmd.netns)])
        l3 = prev_ips
        if ipam_type:
            l3 = ipam_exec.run("ADD", cmd)
            ipam_done = True
            fault.point("after-ipam")
        if l3 is None and l3_required:
            raise errors.InvalidConfig(f"{kind} interface requires an IPAM configuration")
        if l3 is not None:
            if not l3.ips:
                raise errors.CniError(
                    "IPAM plugin returned missing IP config", f"ipam type {ipam_type!r}"
                )
            # Every address belongs to the one interface of the result.
            result.ips = [IPConfig(ip.address, ip.gateway, 0) for ip in l3.ips]
            result.routes = list(l3.routes)
            result.dns = l3.dns
            if notify_v6 and any(ip.family == 6 for ip in result.ips):
                # Unsolicited neighbour advertisements when the link comes up, as the
                # reference: a reused address's neighbours learn the new MAC at once.
                from pycni import sysctl

                with netns.entered(fd):
                    sysctl.write_in(f"net/ipv6/conf/{link.name}", {"ndisc_notify": "1"})
            netsetup.configure_container_iface(fd, cont, link, result.ips, result.routes)
            fault.point("after-addresses")
        else:
            cont.set_link(link.index, up=True)  # L2 only: just up
        if not dns.is_empty():
            result.dns = dns
        return result
    except BaseException as exc:
        if ipam_done:
            try:
                ipam_exec.run("DEL", cmd)
            except Exception as undo:  # keep undoing
                skel.log_exception(undo)
        if created:
            try:
                cont.del_link(created)
            except OSError:
                pass
        if isinstance(exc, netlink.NetlinkError):
            raise netsetup.nl_error(exc, f"set up {kind} {cmd.ifname}") from None
        raise
    finally:
        cont.close()
        os.close(fd)


# -- DEL -------------------------------------------------------------------------------


def delete(cmd: skel.CmdArgs, kinds: tuple[str, ...], ipam_type: str) -> None:
    """IPAM release, and CNI_IFNAME if it is one of `kinds`; teardown goes on past a
    failure and reports the first one (IPAM's first, as the reference orders them).

    The link goes beside the address's release or after it (pycni.background.
    for_teardown: in the agent a thread, elsewhere last). For an IPAM that needs the
    link to release (dhcp: ipam_exec.releases_without_link) IPAM DEL runs first, as the
    reference's."""
    from pycni.background import for_teardown

    link_problems: list[errors.CniError] = []
    meanwhile = not ipam_type or ipam_exec.releases_without_link(ipam_type)
    links = (
        for_teardown(lambda: _delete_link(cmd, kinds, link_problems))
        if cmd.netns and meanwhile
        else None
    )
    problems: list[errors.CniError] = []
    try:
        if ipam_type:
            try:
                ipam_exec.run("DEL", cmd)
            except errors.CniError as exc:
                problems.append(exc)
    finally:
        if links is not None:
            links.join()
    if cmd.netns and not meanwhile:
        _delete_link(cmd, kinds, link_problems)
    problems.extend(link_problems)
    if problems:
        raise problems[0]


def _delete_link(
    cmd: skel.CmdArgs, kinds: tuple[str, ...], problems: list[errors.CniError]
) -> None:
    try:
        fd = netns.open_netns(cmd.netns)
    except errors.CniError:
        return  # the namespace is gone, and the link with it
    try:
        # answers once the kernel has unregistered the link (its RCU wait ends apart)
        netsetup.del_link(fd, cmd.ifname, kinds)
    except netlink.NetlinkError as exc:
        problems.append(netsetup.nl_error(exc, f"delete {cmd.ifname}"))
    finally:
        os.close(fd)


# -- CHECK -----------------------------------------------------------------------------


def check(
    cmd: skel.CmdArgs,
    kind: str,
    ipam_type: str,
    validate: Callable[[Netlink, Link], list[str]] | None = None,
    master: str | None = None,
    master_in_container: bool = False,
    where: str = "",
) -> None:
    """CHECK against prevResult: the interface (sandbox, kind, MAC), its addresses and
    the routes; `validate(cont, link)` adds the kind's own findings (mode, VLAN id);
    `master` (None: none to check) must still exist."""
    where = where or kind
    if ipam_type:
        ipam_exec.run("CHECK", cmd)
    if cmd.conf.get("prevResult") is None:
        raise errors.InvalidConfig(
            "Required prevResult missing", "CHECK needs the result of the ADD as prevResult"
        )
    prev = parse_result(cmd.conf["prevResult"])
    ours = [
        (i, iface)
        for i, iface in enumerate(prev.interfaces)
        if iface.name == cmd.ifname and iface.sandbox == cmd.netns
    ]
    if not ours:
        sandboxes = [iface.sandbox for iface in prev.interfaces if iface.name == cmd.ifname]
        raise errors.InvalidConfig(
            f"Sandbox in prevResult {sandboxes[0] if sandboxes else ''} doesn't match "
            f"configured netns: {cmd.netns}",
            f"prevResult has no interface {cmd.ifname} in {cmd.netns}",
        )
    index, iface = ours[0]
    missing: list[str] = []
    fd = netns.open_netns(cmd.netns)
    try:
        with Netlink(netns_fd=fd) as cont:
            if master is not None:
                if master_in_container:
                    master_link = cont.link(master) if master else cont.default_route_link()
                else:
                    with Netlink() as host:
                        master_link = host.link(master) if master else host.default_route_link()
                if master_link is None:
                    missing.append(f'failed to lookup master "{master}"')
            link = cont.link(cmd.ifname)
            if link is None:
                missing.append(f"Container Interface name in prevResult: {cmd.ifname} not found")
            elif link.kind != kind:
                missing.append(
                    f"Container interface {cmd.ifname} not of type {kind} "
                    f"(it is a {link.kind or 'device'})"
                )
            else:
                if iface.mac and iface.mac.lower() != link.mac:
                    missing.append(
                        f"Interface {cmd.ifname} Mac {iface.mac} doesn't match container Mac: {link.mac}"
                    )
                if validate is not None:
                    missing.extend(validate(cont, link))
                want = [ip for ip in prev.ips if ip.interface is None or ip.interface == index]
                have = {a.interface for a in cont.addrs(link.index)}
                missing.extend(
                    f"address {ip.address} missing on {cmd.ifname}"
                    for ip in want
                    if ip.address not in have
                )
                # any table: a chained sbr moves the interface's routes out of main
                table = cont.routes(netlink.AF_UNSPEC, 0)
                for route in prev.routes:
                    if not any(
                        r.dst == route.dst and (route.gw is None or r.gateway == route.gw)
                        for r in table
                    ):
                        via = f" via {route.gw}" if route.gw is not None else ""
                        missing.append(f"route {route.dst}{via} missing in {cmd.netns}")
    finally:
        os.close(fd)
    if missing:
        raise errors.CniError(f"{where} CHECK failed: " + "; ".join(missing))


# -- GC / STATUS -----------------------------------------------------------------------


def mode_problems(
    cont: Netlink,
    link: Link,
    attr: tuple[int, str],
    modes: dict[str, int],
    expected: str,
    label: str,
) -> list[str]:
    """CHECK's drift line when the link's mode (IFLA_INFO_DATA attribute attr[0], packed
    as struct format attr[1]) is not `expected`; the reference's words, `label` first."""
    import struct

    kind, fmt = attr
    raw = cont.link_info_data(link.index).get(kind, b"")
    size = struct.calcsize(fmt)
    mode = struct.unpack(fmt, raw[:size])[0] if len(raw) >= size else -1
    if mode == modes[expected]:
        return []
    names = {v: k for k, v in modes.items()}
    return [f"{label} {names.get(mode, mode)} does not match expected value: {expected}"]


def gc(cmd: skel.CmdArgs, ipam_type: str) -> None:
    if ipam_type:
        ipam_exec.run("GC", cmd)


def status(cmd: skel.CmdArgs, ipam_type: str, master: str | None, where: str) -> None:
    """IPAM's STATUS; then a named master in the host namespace must exist, or the
    plugin cannot serve an ADD (PluginNotAvailable, 50)."""
    if ipam_type:
        ipam_exec.run("STATUS", cmd)
    if master:
        with Netlink() as host:
            if host.link(master) is None:
                raise errors.PluginNotAvailable(
                    f"{where}: master interface {master} does not exist",
                    "ADDs fail until it is back",
                )
