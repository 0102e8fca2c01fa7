"""ptp: a veth from the container to the host, routed instead of bridged (drop-in for
the reference `ptp`).

The reference's layout, for each IPAM address A/len with gateway G:

    container  A/len on CNI_IFNAME, the kernel's subnet route removed, then
               G/32 (or /128) dev CNI_IFNAME scope link src A
               subnet/len via G src A              (+ IPAM's own routes)
    host       G/32 (or /128) on the host veth, A/32 (or /128) dev host veth

so every packet of the container goes to the host first (a veth cannot be
IFF_POINTTOPOINT; this is the next best thing), and the host routes it. Forwarding is
switched on for each family used; `ipMasq` masquerades traffic leaving the
container's subnet through `pycni/firewall` (as bridge's ipMasq). Any failure after
IPAM undoes everything done so far, IPAM included.

DEL: IPAM release, the container end (the host end goes with it), the recorded host
end when the namespace is gone, the masquerade entry (found by attachment, so DEL
works without CNI_NETNS). GC removes what belongs to attachments the runtime no
longer knows (the reference has no GC for ptp).
"""

from __future__ import annotations

import ipaddress
import os

from pycni import attstore, conf, errors, fault, invoke, ipam_exec, netlink, netns, netsetup, skel
from pycni.netlink import Netlink
from pycni.result import DNS, Interface, IPConfig, Result, parse_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pycni.background import Background
    from pycni.firewall.base import Firewall

    IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

WHERE = "ptp"
KNOWN_ARGS = frozenset({"IP", "GATEWAY"})


class PtpConf:
    """The ptp plugin's keys, with the reference plugin's defaults."""

    __slots__ = ("dns", "ip_masq", "ip_masq_backend", "ipam_type", "mtu", "name")

    def __init__(self, d: dict[str, Any], need_ipam: bool = True) -> None:
        #: network name (validated by skel)
        self.name: str = d["name"]
        #: masquerade traffic leaving the container's subnet
        self.ip_masq = conf.get_bool(d, "ipMasq", False, WHERE)
        #: "nftables" | "iptables" | "" (nftables when usable)
        self.ip_masq_backend = conf.get_str(d, "ipMasqBackend", "", WHERE)
        if self.ip_masq_backend not in ("", "nftables", "iptables"):
            raise errors.InvalidConfig(
                f"{WHERE}: unknown ipMasqBackend {self.ip_masq_backend!r}",
                'use "nftables" or "iptables"',
            )
        #: MTU of both veth ends; 0 = kernel default
        self.mtu = conf.get_int(d, "mtu", 0, WHERE, 0, 65535)
        if 0 < self.mtu < 68:
            raise errors.InvalidConfig(
                f"{WHERE}: 'mtu' must be 0 (kernel default) or between 68 and 65535",
                f"got {self.mtu}",
            )
        #: the IPAM plugin: ptp routes addresses, so it cannot work without one
        self.ipam_type = ipam_exec.ipam_type(d)
        if need_ipam and not self.ipam_type:
            raise errors.InvalidConfig(
                f"{WHERE}: an IPAM plugin is required",
                'add e.g. "ipam": {"type": "host-local", "subnet": "10.1.1.0/24"}',
            )
        dns = conf.get_dict(d, "dns", WHERE)
        #: DNS settings for the result (override IPAM's when any is set)
        self.dns = DNS.from_wire(dns, f"{WHERE}: 'dns'") if dns else DNS()


def load(cmd: skel.CmdArgs) -> PtpConf:
    skel.check_cni_args(cmd.cni_args, KNOWN_ARGS)
    return PtpConf(cmd.conf, need_ipam=cmd.command == "ADD")


def firewall(c: PtpConf) -> Firewall:
    from pycni.firewall import get_backend

    return get_backend(c.ip_masq_backend or None)


# -- plan (pure) -----------------------------------------------------------------------


class Plan:
    """What ADD puts where, from IPAM's answer."""

    __slots__ = ("container_routes", "host_addrs", "host_routes", "ips")

    def __init__(self) -> None:
        #: the container's addresses (interface 1: the container end in the result)
        self.ips: list[IPConfig] = []
        #: (dst, gateway, src) in the container, replacing the kernel's subnet route
        self.container_routes: list[tuple[IPNetwork, IPAddress | None, IPAddress]] = []
        #: gateway addresses (/32, /128) on the host veth
        self.host_addrs: list[IPInterface] = []
        #: container addresses (/32, /128) routed to the host veth
        self.host_routes: list[IPNetwork] = []


def plan(ipam: Result) -> Plan:
    if not ipam.ips:
        raise errors.CniError("IPAM plugin returned missing IP config", "ptp needs an address")
    p = Plan()
    for ip in ipam.ips:
        if ip.gateway is None:
            raise errors.InvalidConfig(
                f"{WHERE}: IPAM gave {ip.address} without a gateway",
                "ptp routes through the gateway address on the host end: set 'gateway' in the IPAM config",
            )
        if ip.gateway == ip.address.ip:
            raise errors.InvalidConfig(
                f"{WHERE}: the gateway {ip.gateway} is the container's own address",
                "choose another gateway in the IPAM config",
            )
        bits = ip.address.max_prefixlen
        p.ips.append(IPConfig(ip.address, ip.gateway, 1))
        p.container_routes.append(
            (ipaddress.ip_network(f"{ip.gateway}/{bits}"), None, ip.address.ip)
        )
        p.container_routes.append((ip.address.network, ip.gateway, ip.address.ip))
        gw = ipaddress.ip_interface(f"{ip.gateway}/{bits}")
        if gw not in p.host_addrs:
            p.host_addrs.append(gw)
        p.host_routes.append(ipaddress.ip_network(f"{ip.address.ip}/{bits}"))
    return p


# -- ADD -------------------------------------------------------------------------------


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = load(cmd)
    fw = firewall(c) if c.ip_masq else None
    if fw is not None and not fw.available():
        raise errors.InvalidConfig(
            f"{WHERE}: ipMasq needs the {fw.name} backend, which is not usable here",
            "install nftables (or iptables) or set ipMasqBackend to the one that is installed",
        )
    invoke.find_in_path(c.ipam_type, cmd.path_list)  # a missing IPAM fails before any change
    fd = netns.open_netns(cmd.netns)
    host = Netlink()
    cont = Netlink(netns_fd=fd)
    undo: list[tuple[str, int]] = []
    try:
        if cont.link(cmd.ifname) is not None:
            raise errors.InvalidEnvironment(
                f"container veth name provided ({cmd.ifname}) already exists",
                "CNI_IFNAME must name an interface that does not exist in the container yet",
            )

        def record(host_name: str) -> None:
            # Before the veth exists: after a SIGKILL, DEL and GC still know its name.
            attstore.save(
                WHERE, c.name, cmd.container_id, cmd.ifname,
                {"hostVeth": host_name, "netns": cmd.netns},
            )  # fmt: skip

        # The veth needs nothing of IPAM's answer: it is made and prepared in a thread
        # (which has `host` and `cont` to itself until joined) while IPAM allocates, so
        # the kernel's share of it overlaps IPAM's file work. Rollback is as if made after.
        from pycni.background import Background

        def make_veth() -> tuple[netlink.Link, netlink.Link, BaseException | None]:
            host_end, cont_end = netsetup.setup_veth(
                host, fd, cont, cmd.ifname, c.mtu, before_create=record, checked=True
            )
            try:
                netsetup.prepare_container_iface(fd, cont, cont_end)
            except BaseException as exc:  # raised once the veth is on the undo list
                return host_end, cont_end, exc
            return host_end, cont_end, None

        undo.append(("record", 0))
        making = Background(make_veth)
        try:
            ipam = ipam_exec.run("ADD", cmd)
            assert ipam is not None
            undo.append(("ipam", 0))
            fault.point("after-ipam")
        except BaseException:
            _join_quietly(making, undo)  # IPAM's failure is the one reported
            raise
        host_veth, cont_link, failed = making.join()
        undo.append(("veth", host_veth.index))
        if failed is not None:
            raise failed
        fault.point("after-veth")
        p = plan(ipam)
        for family in sorted({ip.family for ip in p.ips}):
            netsetup.enable_forwarding(family, host)
        netsetup.configure_container_iface(fd, cont, cont_link, p.ips, ipam.routes, prepared=True)
        fault.point("after-addresses")
        _route_via_gateway(cont, cont_link, p)
        fault.point("after-routes")
        _host_side(host, host_veth, p)
        result = Result(
            cmd.cni_version,
            interfaces=[
                Interface(host_veth.name, host_veth.mac),
                Interface(cmd.ifname, cont_link.mac, cmd.netns),
            ],
            ips=p.ips,
            routes=list(ipam.routes),
            dns=ipam.dns,
        )
        if fw is not None:
            from pycni.firewall.base import Attachment

            undo.append(("masq", 0))
            fw.add_masquerade(
                Attachment(
                    c.name, cmd.container_id, cmd.ifname,
                    [ip.address for ip in p.ips], "", host_veth.name,
                )
            )  # fmt: skip
            fault.point("after-firewall")
        if not c.dns.is_empty():
            result.dns = c.dns
        return result
    except BaseException as exc:
        _rollback(cmd, c, fw, host, undo)
        if isinstance(exc, netlink.NetlinkError):
            raise netsetup.nl_error(exc, "set up the container's network") from None
        raise
    finally:
        host.close()
        cont.close()
        os.close(fd)


def _join_quietly(making: Background, undo: list[tuple[str, int]]) -> None:
    """Wait for the veth thread after IPAM failed; what it made goes on the undo list."""
    try:
        host_veth, _cont_link, _failed = making.join()
    except BaseException:
        return
    undo.append(("veth", host_veth.index))


def _route_via_gateway(cont: Netlink, link: netlink.Link, p: Plan) -> None:
    """Replace the kernel's subnet route by gateway/32 + subnet via gateway: every
    packet, to neighbours in the subnet too, is sent to the host."""
    # The kernel's prefix routes, named exactly (no dump of the table to find them).
    for subnet in dict.fromkeys(ip.address.network for ip in p.ips):
        cont.del_route(
            subnet,
            oif=link.index,
            scope=netlink.RT_SCOPE_LINK,
            protocol=netlink.RTPROT_KERNEL,
        )
    for dst, gw, src in p.container_routes:
        try:
            cont.add_route(dst, gw, oif=link.index, src=src)
        except netlink.LinkExists:
            continue  # two addresses with one gateway
        except netlink.NetlinkError as exc:
            via = f" via {gw}" if gw is not None else ""
            raise netsetup.nl_error(exc, f"add route {dst}{via} dev {link.name}") from None


def _host_side(host: Netlink, veth: netlink.Link, p: Plan) -> None:
    from pycni import sysctl

    # Router advertisements from the container must not configure the node (CVE-2020-10749).
    sysctl.try_write(f"net/ipv6/conf/{veth.name}/accept_ra", "0")
    if any(a.version == 6 for a in p.host_addrs):
        # No DAD on a link with exactly one peer: while the host end's link-local address
        # is tentative the kernel answers no neighbour solicitation for it, and the
        # container's first packets (~1 s) are lost.
        sysctl.write_in(f"net/ipv6/conf/{veth.name}", {"disable_ipv6": "0", "accept_dad": "0"})
    try:
        host.set_link(veth.index, up=True)
        for gw in p.host_addrs:
            host.add_addr(veth.index, gw, nodad=True)
        for dst in p.host_routes:
            try:
                host.add_route(dst, None, oif=veth.index)
            except netlink.LinkExists:
                continue
    except netlink.NetlinkError as exc:
        raise netsetup.nl_error(exc, f"configure the host end {veth.name}") from None


def _rollback(
    cmd: skel.CmdArgs, c: PtpConf, fw: Firewall | None, host: Netlink, undo: list[tuple[str, int]]
) -> None:
    """Undo a failed ADD, newest first; every step is best effort."""
    for kind, index in reversed(undo):
        try:
            if kind == "masq" and fw is not None:
                fw.del_masquerade(c.name, cmd.container_id, cmd.ifname)
            elif kind == "veth":
                host.del_link(index)
            elif kind == "record":
                attstore.delete(WHERE, c.name, cmd.container_id, cmd.ifname)
            elif kind == "ipam":
                ipam_exec.run("DEL", cmd)
        except Exception as exc:  # keep undoing the rest
            skel.log_exception(exc)


# -- DEL -------------------------------------------------------------------------------


def cmd_del(cmd: skel.CmdArgs) -> None:
    """Release everything the attachment may hold; every step runs even when an
    earlier one failed, and the first failure is reported with its own code."""
    c = load(cmd)
    ipam_problems: list[errors.CniError] = []
    link_problems: list[errors.CniError] = []
    later: list[errors.CniError] = []

    def step(fn: Callable[[], object], into: list[errors.CniError]) -> None:
        try:
            fn()
        except errors.CniError as exc:
            into.append(exc)
        except netlink.NetlinkError as exc:
            into.append(netsetup.nl_error(exc, f"delete {cmd.ifname}"))

    def links() -> None:
        gone: list[bool] = []
        if cmd.netns:
            step(lambda: gone.append(_del_container_side(cmd)), link_problems)
        if gone == [True]:
            # The host end went with the container end. Not looked up again: a lookup
            # waits (~40 ms) for the kernel to finish unregistering the pair.
            attstore.delete(WHERE, c.name, cmd.container_id, cmd.ifname)
        else:
            step(lambda: _del_recorded_veth(c.name, cmd.container_id, cmd.ifname), link_problems)

    # The links go beside the other steps or after them (pycni.background.for_teardown:
    # in the agent a thread, elsewhere last), unless the IPAM needs the link to release
    # (dhcp): then IPAM goes first, as the reference orders it. The masquerade element
    # goes before IPAM frees the address: the kernel's element is the address itself,
    # which the next container may be given at once. IPAM and the links run whatever the
    # masquerade step raised. Failures are reported in the order of one thread: IPAM's,
    # the links', the firewall's.
    ipam_first = bool(c.ipam_type) and not ipam_exec.releases_without_link(c.ipam_type)
    if ipam_first:
        step(lambda: ipam_exec.run("DEL", cmd), ipam_problems)
    from pycni.background import for_teardown

    background = for_teardown(links)
    try:
        if c.ip_masq:
            # Keyed by attachment: works without the netns or the container's addresses.
            step(lambda: firewall(c).del_masquerade(c.name, cmd.container_id, cmd.ifname), later)
    finally:
        try:
            if c.ipam_type and not ipam_first:
                step(lambda: ipam_exec.run("DEL", cmd), ipam_problems)
        finally:
            background.join()
    problems = ipam_problems + link_problems + later
    if problems:
        first = problems[0]
        if len(problems) > 1:
            raise errors.CniError(
                "; ".join(p.msg for p in problems), first.details, code=first.code
            )
        raise first


def _del_container_side(cmd: skel.CmdArgs) -> bool:
    """Delete the container's veth (its host end goes with it); False when there was
    none (the namespace or the interface is gone already, or the interface is another
    plugin's: kept). Returns once the kernel has unregistered both ends, before it has
    freed them (netsetup.del_veth)."""
    try:
        fd = netns.open_netns(cmd.netns)
    except errors.CniError:
        return False  # the namespace is gone, and the veth with it
    try:
        return netsetup.del_veth(fd, cmd.ifname)
    finally:
        os.close(fd)


def _del_recorded_veth(network: str, container_id: str, ifname: str) -> None:
    """Remove the host end we recorded if it still exists and is still an unenslaved
    veth (ours), then forget the record."""
    rec = attstore.load(WHERE, network, container_id, ifname)
    if rec is not None and isinstance(rec.get("hostVeth"), str):
        with Netlink() as host:
            link = host.link(rec["hostVeth"])
            if link is not None and link.kind == "veth" and link.master == 0:
                host.del_link(link.index)
    attstore.delete(WHERE, network, container_id, ifname)


# -- CHECK -----------------------------------------------------------------------------


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = load(cmd)
    if c.ipam_type:
        ipam_exec.run("CHECK", cmd)
    if "prevResult" not in cmd.conf:
        raise errors.InvalidConfig(
            f"{WHERE}: Required prevResult missing",
            "CHECK needs the result of the ADD as prevResult",
        )
    prev = parse_result(cmd.conf["prevResult"])
    index = next(
        (i for i, f in enumerate(prev.interfaces) if f.name == cmd.ifname and f.sandbox), None
    )
    if index is None or prev.interfaces[index].sandbox != cmd.netns:
        raise errors.InvalidConfig(
            f"Sandbox in prevResult doesn't match configured netns: {cmd.netns}",
            f"prevResult has no interface {cmd.ifname} in {cmd.netns}",
        )
    want = [ip for ip in prev.ips if ip.interface is None or ip.interface == index]
    missing: list[str] = []
    fd = netns.open_netns(cmd.netns)
    try:
        with Netlink() as host, Netlink(netns_fd=fd) as cont:
            link = cont.link(cmd.ifname)
            if link is None:
                if attstore.load(WHERE, c.name, cmd.container_id, cmd.ifname) is None:
                    raise errors.UnknownContainer(
                        f"{WHERE}: unknown container {cmd.container_id}",
                        f"no {cmd.ifname} in {cmd.netns} and no record of an ADD for it",
                    )
                raise errors.CniError(
                    f"{WHERE}: Container Interface name in prevResult: {cmd.ifname} not found"
                )
            if link.kind != "veth":
                missing.append(f"{cmd.ifname} is a {link.kind or 'device'}, not a veth")
            have = {a.interface for a in cont.addrs(link.index)}
            missing += [f"address {ip.address} missing on {cmd.ifname}" for ip in want
                        if ip.address not in have]  # fmt: skip
            table = cont.routes(netlink.AF_UNSPEC)
            p = plan(Result(ips=want)) if want else Plan()
            expected = [(dst, gw) for dst, gw, _src in p.container_routes]
            expected += [(r.dst, r.gw) for r in prev.routes]
            for dst, gw in expected:
                if not any(r.dst == dst and (gw is None or r.gateway == gw) for r in table):
                    missing.append(
                        f"route {dst}{f' via {gw}' if gw else ''} missing in the container"
                    )
            peer = host.link_by_index(link.peer_index) if link.peer_index else None
            if peer is None or peer.kind != "veth":
                missing.append(f"the host end of {cmd.ifname} was not found")
            else:
                on_host = {a.interface for a in host.addrs(peer.index)}
                missing += [f"gateway {gw} missing on {peer.name}" for gw in p.host_addrs
                            if gw not in on_host]  # fmt: skip
                host_table = host.routes(netlink.AF_UNSPEC)
                missing += [f"host route {dst} dev {peer.name} missing" for dst in p.host_routes
                            if not any(r.dst == dst and r.oif == peer.index for r in host_table)]  # fmt: skip
            if c.ip_masq:
                from pycni.firewall.base import Attachment

                att = Attachment(c.name, cmd.container_id, cmd.ifname, [ip.address for ip in want])
                missing += firewall(c).check_masquerade(att)
    finally:
        os.close(fd)
    if missing:
        raise errors.CniError(f"{WHERE} CHECK failed: " + "; ".join(missing))


# -- GC / STATUS -----------------------------------------------------------------------


def cmd_gc(cmd: skel.CmdArgs) -> None:
    c = PtpConf(cmd.conf, need_ipam=False)
    valid = skel.valid_attachments(cmd.conf)
    if valid is None:
        return
    for key in attstore.entries(WHERE, c.name):
        if key not in valid:
            _del_recorded_veth(c.name, *key)
    if c.ip_masq:
        firewall(c).gc(c.name, valid)
    if c.ipam_type:
        ipam_exec.run("GC", cmd)


def cmd_status(cmd: skel.CmdArgs) -> None:
    c = PtpConf(cmd.conf, need_ipam=False)
    if c.ipam_type:
        ipam_exec.run("STATUS", cmd)


VERBS = skel.Verbs(
    about="pycni ptp plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    skel.main(VERBS)
