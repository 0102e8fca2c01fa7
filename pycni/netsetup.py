"""Shared kernel verbs for interface plugins: what `bridge` (and later `ptp`, ...) do.

Each function is one step a plugin script names: ensure_bridge, setup_veth,
configure_container_iface, ensure_gateway_addr, del_veth. They take an
open `Netlink` for the namespace they work in; namespace switching for sysctls is
done here, in one place.
"""

from __future__ import annotations

import ipaddress
import os
import time

from pycni import errors, netlink, netns, sysctl
from pycni.netlink import Link, Netlink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pycni.result import IPConfig, Route

    IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def nl_error(exc: netlink.NetlinkError, doing: str) -> errors.CniError:
    """A netlink failure as a CNI error that says what we were doing."""
    return errors.CniError(f"failed to {doing}: {exc.strerror}", exc.kernel_msg)


def kernel_error(exc: OSError, doing: str) -> errors.CniError:
    """`nl_error` for any OSError met at the kernel edge (netlink or a syscall)."""
    if isinstance(exc, netlink.NetlinkError):
        return nl_error(exc, doing)
    return errors.CniError(f"failed to {doing}: {exc.strerror or exc}")


def ensure_bridge(
    nl: Netlink,
    name: str,
    mtu: int = 0,
    promisc: bool = False,
    vlan_filtering: bool = False,
    mac: str = "",
) -> tuple[Link, bool]:
    """The bridge `name`, created (MAC pinned, accept_ra=0, up) if missing; `mac`
    gives the MAC to create it with (a repair restores the old one). Returns (link,
    created). Racing creators both succeed."""
    created = False
    link = nl.link(name)
    if link is None:
        try:
            nl.add_bridge(name, mtu=mtu, mac=mac, vlan_filtering=vlan_filtering)
            created = True
        except netlink.LinkExists:
            pass  # another plugin created it between our lookup and our create
        except netlink.NetlinkError as exc:
            if exc.errno == 95 and vlan_filtering:
                raise errors.InvalidConfig(
                    f"cannot create bridge {name!r} with VLAN filtering: this kernel has no bridge VLAN support",
                    'remove "vlan" from the config, or use a kernel built with CONFIG_BRIDGE_VLAN_FILTERING',
                ) from None
            raise nl_error(exc, f"create bridge {name!r}") from None
        link = nl.link(name)
        if link is None:
            raise errors.CniError(f"could not lookup {name!r} after creating it")
    if link.kind != "bridge":
        raise errors.InvalidConfig(
            f"{name!r} already exists but is not a bridge",
            f'it is a {link.kind or "device"}; choose another "bridge" name',
        )
    if vlan_filtering and not created:
        try:
            nl.set_bridge_vlan_filtering(link.index, True)
        except netlink.NetlinkError as exc:
            raise errors.InvalidConfig(
                f"cannot enable VLAN filtering on bridge {name!r}: {exc.strerror}",
                'this kernel may lack CONFIG_BRIDGE_VLAN_FILTERING; remove "vlan" from the config',
            ) from None
    # Router advertisements must never configure the node through a container-facing
    # bridge: a container could otherwise hijack the host's IPv6 routes (CVE-2020-10749).
    # The link lookup reports the value, so /proc/sys is touched only to change it.
    if link.ipv6_accept_ra != 0:
        sysctl.try_write(f"net/ipv6/conf/{name}/accept_ra", "0")
    if created:
        # Pin the MAC: a bridge otherwise takes the lowest MAC of its ports and
        # changes it as containers come and go, breaking neighbours' ARP caches.
        nl.set_link(link.index, mac=link.mac)
    if promisc and not link.promisc:
        nl.set_link(link.index, promisc=True)
    if not link.up:
        nl.set_link(link.index, up=True)
    refreshed = nl.link_by_index(link.index)
    return (refreshed or link), created


def random_veth_name() -> str:
    return "veth" + os.urandom(4).hex()


def setup_veth(
    host: Netlink,
    container_fd: int,
    container_nl: Netlink,
    ifname: str,
    mtu: int = 0,
    mac: str = "",
    before_create: Callable[[str], None] | None = None,
    checked: bool = False,
) -> tuple[Link, Link]:
    """Create a veth pair whose container end is born inside the container namespace
    as `ifname`; returns (host end, container end). `before_create(host_name)` runs
    right before the kernel call, so the caller can record the name first. `checked`:
    the caller has just found `ifname` free (a name taken since still fails the create)."""
    if not checked and container_nl.link(ifname) is not None:
        raise errors.InvalidEnvironment(
            f"container veth name provided ({ifname}) already exists",
            "CNI_IFNAME must name an interface that does not exist in the container yet",
        )
    for _attempt in range(10):
        host_name = random_veth_name()
        if before_create is not None:
            before_create(host_name)
        try:
            host.add_veth(host_name, ifname, peer_netns_fd=container_fd, mtu=mtu, peer_mac=mac)
            break
        except netlink.LinkExists:
            if container_nl.link(ifname) is not None:
                raise errors.InvalidEnvironment(
                    f"container veth name provided ({ifname}) already exists"
                ) from None
            continue  # our random host name collided; try another
        except netlink.NetlinkError as exc:
            raise nl_error(exc, "make veth pair") from None
    else:
        raise errors.TryAgainLater("failed to find a unique veth name")
    host_link = host.link(host_name)
    cont_link = container_nl.link(ifname)
    if host_link is None or cont_link is None:
        raise errors.CniError("veth pair vanished right after it was created")
    return host_link, cont_link


def attach_to_bridge(
    nl: Netlink,
    port: Link,
    bridge: Link,
    hairpin: bool = False,
    isolated: bool = False,
    vlan: int = 0,
) -> None:
    # accept_ra=0 on every host veth too (CVE-2020-10749).
    sysctl.try_write(f"net/ipv6/conf/{port.name}/accept_ra", "0")
    try:
        nl.set_link(port.index, master=bridge.index, up=True)
        if hairpin or isolated:
            nl.set_bridge_port(port.index, hairpin=hairpin or None, isolated=isolated or None)
        if vlan:
            nl.bridge_vlan_add(port.index, vlan, pvid=True, untagged=True)
    except netlink.NetlinkError as exc:
        raise nl_error(exc, f"connect {port.name} to bridge {bridge.name}") from None


def _wait_for_dad(nl: Netlink, index: int, timeout: float) -> None:
    """Wait until no IPv6 address of `index` is tentative (DAD done), at most `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        tentative = [
            a for a in nl.addrs(index, netlink.AF_INET6) if a.flags & netlink.IFA_F_TENTATIVE
        ]
        failed = [a for a in nl.addrs(index, netlink.AF_INET6) if a.flags & netlink.IFA_F_DADFAILED]
        if failed:
            raise errors.CniError(
                f"address {failed[0].interface} failed duplicate address detection"
            )
        if not tentative or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _iface_v6_settings(enable_dad: bool) -> dict[str, str]:
    """The container interface's IPv6 settings that do not depend on its addresses."""
    v6: dict[str, str] = {}
    if enable_dad:
        v6["enhanced_dad"] = "1"
        v6["accept_dad"] = "1"
    else:
        v6["accept_dad"] = "0"
    # Addresses and routes come from IPAM: a router advertisement sent by another
    # container on the bridge must not add a route or address here (CVE-2020-10749,
    # the container side of it).
    v6["accept_ra"] = "0"
    return v6


def prepare_container_iface(
    container_fd: int, nl: Netlink, link: Link, enable_dad: bool = False
) -> None:
    """What configure_container_iface sets that needs no address (IPv6 DAD and RA
    settings, arp_notify), for a caller that can do it before IPAM has answered; then
    call configure_container_iface with prepared=True."""
    with netns.entered(container_fd):
        settings = _iface_v6_settings(enable_dad)
        sysctl.write_in(f"net/ipv6/conf/{link.name}", settings)
    try:
        nl.set_ipv4_conf(link.index, {netlink.IPV4_DEVCONF_ARP_NOTIFY: 1})
    except netlink.NetlinkError as exc:
        raise nl_error(exc, f"configure {link.name}") from None


def configure_container_iface(
    container_fd: int,
    nl: Netlink,
    link: Link,
    ips: list[IPConfig],
    routes: list[Route],
    enable_dad: bool = False,
    prepared: bool = False,
) -> None:
    """Addresses, sysctls, link up and routes on the container's interface.
    `prepared`: prepare_container_iface has run for it."""
    has_v6 = any(ip.family == 6 for ip in ips)
    # One path walk for the interface's IPv6 settings (sysctl.write_in).
    v6: dict[str, str] = {}
    if has_v6:
        v6["disable_ipv6"] = "0"
    if not prepared:
        v6.update(_iface_v6_settings(enable_dad))
    if v6:
        with netns.entered(container_fd):
            if has_v6:
                sysctl.try_write("net/ipv6/conf/lo/disable_ipv6", "0")
            sysctl.write_in(f"net/ipv6/conf/{link.name}", v6)
    try:
        if not prepared:
            # Tell neighbours our (possibly reused) address moved: gratuitous ARP on
            # up. Through netlink, before the link goes up (one /proc/sys tree fewer).
            nl.set_ipv4_conf(link.index, {netlink.IPV4_DEVCONF_ARP_NOTIFY: 1})
        for ip in ips:
            nl.add_addr(link.index, ip.address, nodad=not enable_dad)
        nl.set_link(link.index, up=True)
    except netlink.NetlinkError as exc:
        raise nl_error(exc, f"configure addresses on {link.name}") from None
    if has_v6 and enable_dad:
        # DAD takes dad_transmits x retrans_time (1 s by default) after a random delay
        # of up to a second; wait for it, at most 10 s as the reference does
        # (ip.SettleAddresses): a loaded node can take well over 3 s.
        _wait_for_dad(nl, link.index, timeout=10.0)
    gateways = {ip.family: ip.gateway for ip in reversed(ips) if ip.gateway is not None}
    for route in routes:
        gw = route.gw if route.gw is not None else gateways.get(route.dst.version)
        try:
            nl.add_route(
                route.dst,
                gw,
                oif=link.index,
                priority=int(route.extra.get("priority", 0)),
                table=int(route.extra.get("table", netlink.RT_TABLE_MAIN)),
                mtu=int(route.extra.get("mtu", 0)),
                advmss=int(route.extra.get("advmss", 0)),
            )
        except netlink.LinkExists:
            continue  # the same route from two sources (IPAM + default gateway)
        except netlink.NetlinkError as exc:
            via = f" via {gw}" if gw is not None else ""
            raise nl_error(exc, f"add route {route.dst}{via} dev {link.name}") from None


def ensure_gateway_addr(nl: Netlink, bridge: Link, gw: IPInterface, force: bool) -> None:
    """Put the gateway address on the bridge; refuse to replace a different one
    unless `force` (the reference's forceAddress)."""
    family = netlink.AF_INET if gw.version == 4 else netlink.AF_INET6
    for addr in nl.addrs(bridge.index, family):
        if addr.interface == gw:
            return
        if gw.version == 6 and not addr.interface.network.overlaps(gw.network):
            continue  # link-local and other subnets may coexist on an IPv6 bridge
        if not force:
            raise errors.InvalidConfig(
                f"{bridge.name!r} already has an IP address different from {gw}",
                f'it has {addr.interface}; set "forceAddress": true to replace it, or use another bridge',
            )
        nl.del_addr(bridge.index, addr.interface)
    try:
        nl.add_addr(bridge.index, gw, nodad=True)
    except netlink.LinkExists:
        pass  # a concurrent ADD on the same network added it first
    except netlink.NetlinkError as exc:
        raise nl_error(exc, f"add IP address {gw} to {bridge.name!r}") from None


def enable_forwarding(family: int, nl: Netlink | None = None) -> None:
    """ip_forward (or IPv6's all.forwarding) on. With `nl`, read through netlink first:
    every /proc/sys path walk costs more the more namespaces the node has, and the
    value is nearly always set already."""
    if nl is not None and nl.forwarding(netlink.AF_INET if family == 4 else netlink.AF_INET6):
        return
    key = "net/ipv4/ip_forward" if family == 4 else "net/ipv6/conf/all/forwarding"
    try:
        sysctl.write(key, "1")
    except OSError as exc:
        raise errors.CniError(
            f"failed to enable forwarding: {exc.strerror}", f"/proc/sys/{key}"
        ) from None


def del_veth(container_fd: int, ifname: str) -> bool:
    """Delete the veth `ifname` of the namespace `container_fd`; its peer (in this
    thread's namespace) goes with it. False when there is no such link or it is not a
    veth (another plugin's interface of that name is kept). See del_link."""
    return del_link(container_fd, ifname, ("veth",))


def del_link(container_fd: int, ifname: str, kinds: tuple[str, ...]) -> bool:
    """Delete the link `ifname` of the namespace `container_fd` if its kind is one of
    `kinds` (False when there is none, or another kind: kept); a veth's peer in this
    thread's namespace goes with it.

    Returns once the kernel has unregistered the link (a veth: both ends), not when the
    request returns. The kernel announces each device (RTM_DELLINK) after it has taken
    its name, addresses, routes and neighbours away; the request then still waits for
    RCU grace periods before the devices are freed (15-25 ms on a small VM), a wait that
    cannot fail any more. Where that wait ends is linger.MODE: "thread" (a long-lived
    process such as the agent: a thread of its own) or "process" (a plugin's or netctl's
    process, which a thread in a kernel call would keep from exiting: a detached
    child that holds nothing but the netlink socket, linger.detach). A refusal is
    raised either way: the kernel refuses before it announces anything. When an
    announcement is not seen (a veth's peer lives in another namespace, notifications
    were lost) it returns when the request does."""
    import _thread
    import select

    from pycni import linger  # not on ADD's path

    watches: list[netlink.LinkEvents] = []
    with netns.entered(container_fd):  # one visit for both sockets
        nl = Netlink()
        try:
            watches.append(netlink.LinkEvents())
        except BaseException:
            nl.close()
            raise
    try:
        link = nl.link(ifname)
        if link is None or link.kind not in kinds:
            nl.close()
            for w in watches:
                w.close()
            return False
        if link.kind == "veth":
            watches.append(netlink.LinkEvents())
        done_r, done_w = os.pipe2(os.O_CLOEXEC)
    except BaseException:
        nl.close()
        for w in watches:
            w.close()
        raise
    index = link.index

    # socket -> index of the device it announces, while still awaited. A veth peer's
    # index is the one in its own namespace, which for a pair we made is this thread's.
    awaited = {watches[0].fileno(): index}
    if len(watches) > 1:
        awaited[watches[1].fileno()] = link.peer_index
    by_fd = {w.fileno(): w for w in watches}
    poller = select.poll()
    for fd in (done_r, *awaited):
        poller.register(fd, select.POLLIN)
    try:
        if linger.MODE == "thread":
            try:
                _thread.start_new_thread(_send_delete, (nl, index, done_w))
            except BaseException:
                nl.close()
                os.close(done_w)
                raise
        else:
            _delete_in_child(nl, index, done_w)
        while True:
            ready = [fd for fd, _mask in poller.poll()]
            if done_r in ready:
                result = _delete_outcome(done_r)
                if isinstance(result, BaseException):
                    raise result
                return result
            for fd in ready:
                if fd not in awaited:
                    continue
                seen = by_fd[fd].deleted()
                if seen is None:  # overran: only the request itself tells now
                    for other in awaited:
                        poller.unregister(other)
                    awaited.clear()
                elif awaited[fd] in seen:
                    poller.unregister(fd)
                    del awaited[fd]
                    if not awaited:
                        return True
    finally:
        os.close(done_r)
        for w in watches:
            w.close()


def _delete_in_child(nl: Netlink, index: int, done_w: int) -> None:
    """_send_delete from a detached child (linger.detach); where no child can be
    made, from here, as before (the caller then waits for the kernel). Takes `nl` and
    `done_w`."""
    from pycni import linger

    try:
        in_child = linger.detach([nl.sock.fileno(), done_w])
    except OSError:
        in_child = None  # no child (out of processes, say): the request from here
    if in_child is None:
        _send_delete(nl, index, done_w)
        return
    if in_child:  # pragma: no cover - measured from outside (tests/integration)
        try:
            _send_delete(nl, index, done_w)
        finally:
            os._exit(0)
    nl.close()
    os.close(done_w)


def _send_delete(nl: Netlink, index: int, done_w: int) -> None:
    """The request, its outcome written to `done_w` ("T" deleted, "F" gone already,
    "E<errno> <what>\0<kernel message>"); closes both. The caller may have answered
    long before this ends (EPIPE then)."""
    try:
        try:
            answer = b"T" if nl.del_link(index) else b"F"
        except OSError as exc:
            what = getattr(exc, "what", "").encode()
            answer = b"E%d %s\0%s" % (exc.errno or 0, what, getattr(exc, "kernel_msg", "").encode())
        os.write(done_w, answer)
    except OSError:
        pass
    finally:
        nl.close()
        os.close(done_w)


def _delete_outcome(done_r: int) -> bool | BaseException:
    answer = os.read(done_r, 4096)
    if answer in (b"T", b"F"):
        return answer == b"T"
    if answer.startswith(b"E"):
        head, _, kernel_msg = answer[1:].decode(errors="replace").partition("\0")
        err, _, what = head.partition(" ")
        return netlink._error_for(int(err), what or "delete link", kernel_msg)
    return netlink.NetlinkError(5, "delete link", "the process deleting it ended without an answer")


# -- bridges: what ADD sets up, and the repair after someone deleted one ------------------------


class BridgeSpec:
    """How a bridge network's bridge and its ports are set up (the bridge plugin's keys,
    validated by whoever read them)."""

    __slots__ = (
        "force_address",
        "hairpin",
        "is_gateway",
        "mtu",
        "name",
        "port_isolation",
        "promisc",
        "vlan",
    )

    def __init__(
        self,
        name: str,
        mtu: int = 0,
        promisc: bool = False,
        vlan: int = 0,
        hairpin: bool = False,
        port_isolation: bool = False,
        is_gateway: bool = False,
        force_address: bool = False,
    ) -> None:
        #: the bridge's name
        self.name = name
        #: MTU the bridge is created with (0: the kernel's default)
        self.mtu = mtu
        #: the bridge in promiscuous mode
        self.promisc = promisc
        #: VLAN tag of each port (0: none; needs VLAN filtering on the bridge)
        self.vlan = vlan
        #: ports in hairpin mode
        self.hairpin = hairpin
        #: ports isolated from each other (kernel bridge port isolation)
        self.port_isolation = port_isolation
        #: the gateway addresses live on the bridge
        self.is_gateway = is_gateway
        #: replace a different address already on the bridge
        self.force_address = force_address


def gateway_on_bridge(addr: IPInterface, gateway: IPAddress | None) -> IPInterface:
    """The address a gateway bridge carries for a container address: its gateway (the
    subnet's first address when none is given) with the subnet's prefix."""
    gw = gateway if gateway is not None else addr.network.network_address + 1
    return ipaddress.ip_interface(f"{gw}/{addr.network.prefixlen}")


def ensure_gateways(
    nl: Netlink, bridge: Link, addrs: dict[int, list[IPInterface]], force: bool
) -> None:
    """The gateway addresses on the bridge (idempotent), IPv6 enabled there when it
    carries one, forwarding on for each family that has one."""
    for family in (4, 6):
        for gw in addrs.get(family, []):
            ensure_gateway_addr(nl, bridge, gw, force)
        if addrs.get(family):
            if family == 6:
                sysctl.try_write(f"net/ipv6/conf/{bridge.name}/disable_ipv6", "0")
            enable_forwarding(family, nl)


def repair_bridge(
    spec: BridgeSpec, ports: list[tuple[str, list[str], list[str]]], mac: str = ""
) -> list[str]:
    """After someone deleted the bridge: re-create it as ADD would (accept_ra=0, MTU,
    up) with its old MAC when known (`mac`: the containers' neighbour caches hold it),
    put the gateway addresses back (is_gateway) and re-attach the live containers' host
    veths, which the kernel only detached. `ports` is (host veth, container CIDRs,
    gateways) of each live attachment. Idempotent: with everything in place it changes
    nothing. Returns what it did, for a person."""
    done: list[str] = []
    with Netlink() as host:
        br, created = ensure_bridge(
            host, spec.name, spec.mtu, spec.promisc, vlan_filtering=bool(spec.vlan), mac=mac
        )
        if created:
            done.append(f"re-created bridge {spec.name}")
        gateways: dict[int, list[IPInterface]] = {4: [], 6: []}
        for name, cidrs, gws in ports:
            link = host.link(name)
            if link is None or link.kind != "veth":
                done.append(f"{name} is gone: restart its container to reconnect it")
                continue
            if link.master != br.index:
                attach_to_bridge(host, link, br, spec.hairpin, spec.port_isolation, spec.vlan)
                done.append(f"re-attached {name} to {spec.name}")
            for cidr in cidrs:
                addr = ipaddress.ip_interface(cidr)
                via = next(
                    (
                        ipaddress.ip_address(g)
                        for g in gws
                        if ipaddress.ip_address(g).version == addr.version
                    ),
                    None,
                )
                gw = gateway_on_bridge(addr, via)
                if gw not in gateways[addr.version]:
                    gateways[addr.version].append(gw)
        if spec.is_gateway:
            have = {a.interface for a in host.addrs(br.index)}
            ensure_gateways(host, br, gateways, spec.force_address)
            done += [
                f"gateway {gw} back on {spec.name}"
                for family in (4, 6)
                for gw in gateways[family]
                if gw not in have
            ]
    return done
