"""bridge: a veth from the container to a Linux bridge on the host (drop-in for the
reference `bridge`).

ADD: ensure the bridge; IPAM; veth with its container end born in CNI_NETNS; addresses,
routes and sysctls inside; the gateway (Docker's "bip") on the bridge; forwarding;
masquerade. Any failure after IPAM undoes everything done so far, IPAM included.
DEL: IPAM release, container veth, masquerade: each "already gone" is success, and the
masquerade entry is found by attachment, so DEL works without CNI_NETNS too
(the reference leaks it then, plugins#810).
"""

from __future__ import annotations

import ipaddress
import os

from pycni import attstore, conf, errors, fault, invoke, ipam_exec, netlink, netns, netsetup, skel
from pycni.netlink import Netlink
from pycni.result import DNS, Interface, IPConfig, Result, Route, parse_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pycni.firewall.base import Firewall

WHERE = "bridge"
# CNI_ARGS this plugin and the IPAM it calls understand; anything else (K8S_* from
# kubelet, ...) needs IgnoreUnknown=1, as with the reference plugins.
KNOWN_ARGS = frozenset({"MAC", "IP", "GATEWAY"})
DEFAULT_ROUTES = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}


class BridgeConf:
    """The bridge plugin's keys, with the reference plugin's defaults."""

    __slots__ = (
        "bridge",
        "disable_container_interface",
        "dns",
        "enable_dad",
        "force_address",
        "hairpin",
        "ip_masq",
        "ip_masq_backend",
        "ipam_type",
        "is_default_gateway",
        "is_gateway",
        "mac",
        "macspoofchk",
        "mtu",
        "name",
        "port_isolation",
        "promisc",
        "vlan",
    )

    def __init__(self, d: dict[str, Any], cni_args: dict[str, str], for_del: bool = False) -> None:
        #: network name (validated by skel)
        self.name: str = d["name"]
        #: host bridge name; "cni0" when absent
        self.bridge = conf.validate_link_name(
            conf.get_str(d, "bridge", "cni0", WHERE), WHERE, "bridge"
        )
        #: a default route via the gateway; implies isGateway
        self.is_default_gateway = conf.get_bool(d, "isDefaultGateway", False, WHERE)
        #: the gateway address lives on the bridge
        self.is_gateway = conf.get_bool(d, "isGateway", False, WHERE) or self.is_default_gateway
        #: replace a different address already on the bridge
        self.force_address = conf.get_bool(d, "forceAddress", False, WHERE)
        #: masquerade traffic leaving the container's subnet
        self.ip_masq = conf.get_bool(d, "ipMasq", False, WHERE)
        #: "nftables" | "iptables" | "" (nftables when usable)
        self.ip_masq_backend = conf.get_str(d, "ipMasqBackend", "", WHERE)
        if self.ip_masq_backend not in ("", "nftables", "iptables"):
            raise errors.InvalidConfig(
                f"{WHERE}: unknown ipMasqBackend {self.ip_masq_backend!r}",
                'use "nftables" or "iptables"',
            )
        #: MTU of the bridge (when created) and of the veth; 0 = kernel default
        self.mtu = conf.get_int(d, "mtu", 0, WHERE, 0, 65535)
        if 0 < self.mtu < 68:
            raise errors.InvalidConfig(
                f"{WHERE}: 'mtu' must be 0 (kernel default) or between 68 and 65535",
                f"got {self.mtu}",
            )
        #: let a container reach itself through the bridge (hairpin NAT)
        self.hairpin = conf.get_bool(d, "hairpinMode", False, WHERE)
        #: bridge in promiscuous mode
        self.promisc = conf.get_bool(d, "promiscMode", False, WHERE)
        if self.hairpin and self.promisc:
            raise errors.InvalidConfig(
                f"{WHERE}: cannot set hairpin mode and promiscuous mode at the same time"
            )
        #: VLAN tag of the container's port (0 = none)
        self.vlan = conf.get_int(d, "vlan", 0, WHERE, 0, 4094)
        #: drop frames whose source MAC is not the container's
        self.macspoofchk = conf.get_bool(d, "macspoofchk", False, WHERE)
        #: run IPv6 duplicate address detection
        self.enable_dad = conf.get_bool(d, "enabledad", False, WHERE)
        #: leave the container end down and unaddressed (L2 only)
        self.disable_container_interface = conf.get_bool(
            d, "disableContainerInterface", False, WHERE
        )
        #: container ports cannot talk to each other, only to the uplink/gateway
        self.port_isolation = conf.get_bool(d, "portIsolation", False, WHERE)
        self.ipam_type = ipam_exec.ipam_type(d)
        if self.disable_container_interface and self.ipam_type:
            raise errors.InvalidConfig(
                f"{WHERE}: cannot use IPAM when disableContainerInterface is set"
            )
        dns = conf.get_dict(d, "dns", WHERE)
        #: DNS settings for the result (override IPAM's when any is set)
        self.dns = DNS.from_wire(dns, f"{WHERE}: 'dns'") if dns else DNS()
        #: container MAC: runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC
        self.mac = ""
        if for_del:
            # DEL releases by attachment and never needs the MAC: a malformed
            # runtimeConfig must not keep it from releasing (the runtime would retry
            # the DEL forever and leak the veth and the lease).
            return
        mac = conf.get_str(conf.get_dict(d, "runtimeConfig", WHERE), "mac", "", WHERE)
        if not mac:
            mac = conf.get_str(
                conf.get_dict(conf.get_dict(d, "args", WHERE), "cni", WHERE), "mac", "", WHERE
            )
        if not mac:
            mac = cni_args.get("MAC", "")
        if mac:
            self.mac = conf.validate_mac(mac, WHERE)


def load(cmd: skel.CmdArgs) -> BridgeConf:
    args = cmd.cni_args
    skel.check_cni_args(args, KNOWN_ARGS)
    return BridgeConf(cmd.conf, args, for_del=cmd.command == "DEL")


def firewall(c: BridgeConf) -> Firewall:
    from pycni.firewall import get_backend

    return get_backend(c.ip_masq_backend or None)


def spoof_guard() -> Firewall:
    """The firewall for macspoofchk: nftables on every backend, so nothing is probed."""
    from pycni.firewall import get_backend

    return get_backend(None)


# -- plan (pure) -----------------------------------------------------------------------


def plan_l3(
    c: BridgeConf, ipam: Result
) -> tuple[
    list[IPConfig], list[Route], dict[int, list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]]
]:
    """From IPAM's answer: the container's IPs (interface index 2, gateway filled),
    its routes (+ default routes for isDefaultGateway), and the gateway addresses the
    bridge must carry, per family."""
    if not ipam.ips:
        raise errors.CniError(
            "IPAM plugin returned missing IP config", f"ipam type {c.ipam_type!r} gave no addresses"
        )
    ips: list[IPConfig] = []
    routes = list(ipam.routes)
    bridge_addrs: dict[int, list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = {
        4: [],
        6: [],
    }
    for ip in ipam.ips:
        family = ip.family
        gateway = ip.gateway
        if gateway is None and c.is_gateway:
            gateway = ip.address.network.network_address + 1
        ips.append(IPConfig(ip.address, gateway, 2))
        if gateway is None:
            continue
        if c.is_default_gateway and not any(
            r.dst == DEFAULT_ROUTES[family] and r.gw is not None for r in routes
        ):
            routes.append(Route(DEFAULT_ROUTES[family], gateway))
        if c.is_gateway:
            gw = netsetup.gateway_on_bridge(ip.address, gateway)
            if gw not in bridge_addrs[family]:
                bridge_addrs[family].append(gw)
    return ips, routes, bridge_addrs


# -- ADD -------------------------------------------------------------------------------


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = load(cmd)
    fw = firewall(c) if c.ip_masq else None
    if fw is not None and not fw.available():
        raise errors.InvalidConfig(
            f"{WHERE}: ipMasq needs the {fw.name} backend, which is not usable here",
            "install nftables (or iptables) or set ipMasqBackend to the one that is installed",
        )
    if c.ipam_type:
        invoke.find_in_path(
            c.ipam_type, cmd.path_list
        )  # a missing IPAM plugin fails before any change
    fd = netns.open_netns(cmd.netns)
    host = Netlink()
    cont = Netlink(netns_fd=fd)
    undo: list[tuple[str, object]] = []
    try:
        if cont.link(cmd.ifname) is not None:
            raise errors.InvalidEnvironment(
                f"container veth name provided ({cmd.ifname}) already exists",
                "CNI_IFNAME must name an interface that does not exist in the container yet",
            )
        ipam: Result | None = None
        # IPAM first: its config errors surface before the node is touched. Not for an
        # IPAM that needs the container's interface (dhcp asks the server through it):
        # then after the veth, as the reference orders it.
        ipam_first = bool(c.ipam_type) and ipam_exec.releases_without_link(c.ipam_type)
        if ipam_first:
            ipam = ipam_exec.run("ADD", cmd)
            undo.append(("ipam", None))
            fault.point("after-ipam")
        br, created = netsetup.ensure_bridge(
            host, c.bridge, c.mtu, c.promisc, vlan_filtering=bool(c.vlan)
        )
        if created:
            undo.append(("bridge", br.index))

        def record(host_name: str) -> None:
            # Before the veth exists: after a SIGKILL, DEL and GC still know its name.
            attstore.save(
                "bridge",
                c.name,
                cmd.container_id,
                cmd.ifname,
                {"hostVeth": host_name, "bridge": c.bridge, "netns": cmd.netns},
            )

        undo.append(("record", None))
        host_veth, cont_link = netsetup.setup_veth(
            host, fd, cont, cmd.ifname, c.mtu, c.mac, before_create=record
        )
        undo.append(("veth", host_veth.index))
        fault.point("after-veth")
        netsetup.attach_to_bridge(host, host_veth, br, c.hairpin, c.port_isolation, c.vlan)
        if c.ipam_type and not ipam_first:
            cont.set_link(cont_link.index, up=True)
            undo.append(("ipam", None))
            ipam = ipam_exec.run("ADD", cmd)
            fault.point("after-ipam")
        result = Result(
            cmd.cni_version,
            interfaces=[
                Interface(br.name, br.mac),
                Interface(host_veth.name, host_veth.mac),
                Interface(cmd.ifname, cont_link.mac, cmd.netns),
            ],
        )
        if ipam is not None:
            ips, routes, bridge_addrs = plan_l3(c, ipam)
            result.ips, result.routes = ips, routes
            result.dns = ipam.dns
            netsetup.configure_container_iface(fd, cont, cont_link, ips, routes, c.enable_dad)
            fault.point("after-addresses")
            fault.point("after-routes")
            netsetup.ensure_gateways(host, br, bridge_addrs, c.force_address)
            if fw is not None:
                from pycni.firewall.base import Attachment

                fw.add_masquerade(
                    Attachment(
                        c.name,
                        cmd.container_id,
                        cmd.ifname,
                        [ip.address for ip in ips],
                        br.name,
                        host_veth.name,
                    )
                )
                undo.append(("masq", None))
                fault.point("after-firewall")
        elif not c.disable_container_interface:
            cont.set_link(cont_link.index, up=True)
        if c.macspoofchk:
            from pycni.firewall.base import Attachment

            undo.append(("spoofcheck", None))
            spoof_guard().add_spoofcheck(
                Attachment(
                    c.name,
                    cmd.container_id,
                    cmd.ifname,
                    [ip.address for ip in result.ips],
                    br.name,
                    host_veth.name,
                ),
                cont_link.mac,
            )
        # The bridge's MAC is final only now (ports joined, address set): report that one.
        final_br = host.link_by_index(br.index)
        if final_br is not None:
            result.interfaces[0].mac = final_br.mac
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


def _rollback(
    cmd: skel.CmdArgs,
    c: BridgeConf,
    fw: Firewall | None,
    host: Netlink,
    undo: list[tuple[str, object]],
) -> None:
    """Undo a failed ADD, newest first; every step is best effort."""
    for kind, data in reversed(undo):
        try:
            if kind == "masq" and fw is not None:
                fw.del_masquerade(c.name, cmd.container_id, cmd.ifname)
            elif kind == "spoofcheck":
                spoof_guard().del_spoofcheck(c.name, cmd.container_id, cmd.ifname)
            elif kind == "record":
                attstore.delete("bridge", c.name, cmd.container_id, cmd.ifname)
            elif kind == "veth":
                assert isinstance(data, int)
                host.del_link(data)
            elif kind == "bridge":
                # Only a bridge this ADD created, and only while no other port uses it.
                assert isinstance(data, int)
                if not any(link.master == data for link in host.links()):
                    host.del_link(data)
            elif kind == "ipam":
                ipam_exec.run("DEL", cmd)
        except Exception as exc:  # keep undoing the rest
            skel.log_exception(exc)


# -- DEL -------------------------------------------------------------------------------


def cmd_del(cmd: skel.CmdArgs) -> None:
    """Release everything the attachment may hold; every step runs even when an
    earlier one failed (teardown keeps going), and the first failure is reported
    with its own code."""
    c = load(cmd)
    problems: list[errors.CniError] = []

    def step(fn: Callable[[], object], into: list[errors.CniError] = problems) -> None:
        try:
            fn()
        except errors.CniError as exc:
            into.append(exc)
        except netlink.NetlinkError as exc:
            into.append(netsetup.nl_error(exc, f"delete {cmd.ifname}"))

    # The links go beside the other steps or after them (pycni.background.for_teardown:
    # in the agent a thread, elsewhere last). The masquerade element goes before IPAM
    # frees the address: the kernel's element is the address itself, which the next
    # container may be given at once. IPAM and the links run whatever the steps before
    # them raised; the spoof check goes once the link is gone (until then the workload
    # could still send from it). Failures are reported as before: IPAM's, the links',
    # the firewall's.
    from pycni.background import for_teardown

    links_problems: list[errors.CniError] = []

    def links() -> None:
        if cmd.netns:
            step(lambda: _del_container_side(cmd), links_problems)
        step(lambda: _del_recorded_veth(c, cmd.container_id, cmd.ifname), links_problems)

    # An IPAM that releases through the interface (dhcp) goes first, as the reference
    # orders it; the others release from their own records meanwhile.
    ipam_first = bool(c.ipam_type) and not ipam_exec.releases_without_link(c.ipam_type)
    if ipam_first:
        step(lambda: ipam_exec.run("DEL", cmd))
    background = for_teardown(links)
    later: list[errors.CniError] = []
    try:
        if c.ip_masq:
            # Keyed by attachment: works without the netns or the container's addresses.
            step(lambda: firewall(c).del_masquerade(c.name, cmd.container_id, cmd.ifname), later)
    finally:
        try:
            if c.ipam_type and not ipam_first:
                step(lambda: ipam_exec.run("DEL", cmd))
        finally:
            background.join()
    if c.macspoofchk:
        step(lambda: spoof_guard().del_spoofcheck(c.name, cmd.container_id, cmd.ifname), later)
    problems.extend(links_problems)
    problems.extend(later)
    if problems:
        first = problems[0]
        if len(problems) > 1:
            raise errors.CniError(
                "; ".join(p.msg for p in problems), first.details, code=first.code
            )
        raise first


def _del_container_side(cmd: skel.CmdArgs) -> None:
    """Delete the container's veth (its host end goes with it; another plugin's
    interface of that name is kept). Returns once the kernel has unregistered both
    ends, before it has freed them (netsetup.del_veth)."""
    try:
        fd = netns.open_netns(cmd.netns)
    except errors.CniError:
        return  # the namespace is gone, and the veth with it
    try:
        netsetup.del_veth(fd, cmd.ifname)
    finally:
        os.close(fd)


def _del_recorded_veth(c: BridgeConf, container_id: str, ifname: str) -> None:
    """Remove the host end we recorded, if it still exists and is still ours (a veth
    on our bridge or on none), then forget the record."""
    rec = attstore.load("bridge", c.name, container_id, ifname)
    if rec is not None and isinstance(rec.get("hostVeth"), str):
        with Netlink() as host:
            link = host.link(rec["hostVeth"])
            br = host.link(str(rec.get("bridge") or c.bridge))
            if (
                link is not None
                and link.kind == "veth"
                and (link.master == 0 or (br is not None and link.master == br.index))
            ):
                host.del_link(link.index)
    attstore.delete("bridge", c.name, container_id, ifname)


# -- CHECK -----------------------------------------------------------------------------


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = load(cmd)
    if "prevResult" not in cmd.conf:
        raise errors.InvalidConfig(
            "Required prevResult missing", "CHECK needs the result of the ADD as prevResult"
        )
    prev = parse_result(cmd.conf["prevResult"])
    if c.ipam_type:
        ipam_exec.run("CHECK", cmd)
    missing: list[str] = []
    fd = netns.open_netns(cmd.netns)
    try:
        with Netlink() as host, Netlink(netns_fd=fd) as cont:
            br = host.link(c.bridge)
            if br is None or br.kind != "bridge":
                missing.append(f"bridge {c.bridge} not found in the host namespace")
            link = cont.link(cmd.ifname)
            if link is None:
                missing.append(f"interface {cmd.ifname} not found in {cmd.netns}")
            elif link.kind != "veth":
                missing.append(
                    f"interface {cmd.ifname} in {cmd.netns} is a {link.kind or 'device'}, not a veth"
                )
            else:
                peer = host.link_by_index(link.peer_index) if link.peer_index else None
                if peer is None or peer.kind != "veth":
                    missing.append(f"the host end of {cmd.ifname} was not found")
                elif br is not None and peer.master != br.index:
                    missing.append(f"the host end {peer.name} is not attached to bridge {c.bridge}")
                cont_ifaces = [
                    i
                    for i, iface in enumerate(prev.interfaces)
                    if iface.name == cmd.ifname and iface.sandbox
                ]
                want_ips = [
                    ip for ip in prev.ips if ip.interface is None or ip.interface in cont_ifaces
                ]
                have = {a.interface for a in cont.addrs(link.index)}
                missing.extend(
                    f"address {ip.address} missing on {cmd.ifname}"
                    for ip in want_ips
                    if ip.address not in have
                )
                table = cont.routes()
                for route in prev.routes:
                    if not any(
                        r.dst == route.dst and (route.gw is None or r.gateway == route.gw)
                        for r in table
                    ):
                        via = f" via {route.gw}" if route.gw is not None else ""
                        missing.append(f"route {route.dst}{via} missing in {cmd.netns}")
                if c.is_gateway and br is not None:
                    _ips, _routes, bridge_addrs = (
                        plan_l3(
                            c, Result(ips=[IPConfig(ip.address, ip.gateway) for ip in want_ips])
                        )
                        if want_ips
                        else ([], [], {4: [], 6: []})
                    )
                    on_bridge = {a.interface for a in host.addrs(br.index)}
                    missing.extend(
                        f"gateway {gw} missing on bridge {c.bridge}"
                        for fam in (4, 6)
                        for gw in bridge_addrs[fam]
                        if gw not in on_bridge
                    )
                if c.macspoofchk:
                    guard = spoof_guard()
                    missing.extend(guard.check_spoofcheck(c.name, cmd.container_id, cmd.ifname))
                if c.ip_masq:
                    from pycni.firewall.base import Attachment

                    att = Attachment(
                        c.name,
                        cmd.container_id,
                        cmd.ifname,
                        [ip.address for ip in want_ips],
                        c.bridge,
                    )
                    missing.extend(firewall(c).check_masquerade(att))
    finally:
        os.close(fd)
    if link is None and attstore.load("bridge", c.name, cmd.container_id, cmd.ifname) is None:
        raise errors.UnknownContainer(
            f"{WHERE}: unknown container {cmd.container_id}",
            f"no {cmd.ifname} in {cmd.netns} and no record of an ADD for it on network {c.name}",
        )
    if missing:
        raise errors.CniError(f"{WHERE} CHECK failed: " + "; ".join(missing))


# -- GC / STATUS -----------------------------------------------------------------------


def cmd_gc(cmd: skel.CmdArgs) -> None:
    c = BridgeConf(cmd.conf, {})
    valid = skel.valid_attachments(cmd.conf)
    if valid is None:
        return
    for key in attstore.entries("bridge", c.name):
        if key not in valid:
            _del_recorded_veth(c, *key)
    if c.ip_masq:
        firewall(c).gc(c.name, valid)
    if c.macspoofchk:
        spoof_guard().gc_spoofcheck(c.name, valid)
    if c.ipam_type:
        ipam_exec.run("GC", cmd)


def cmd_status(cmd: skel.CmdArgs) -> None:
    c = BridgeConf(cmd.conf, {})
    if c.ipam_type:
        ipam_exec.run("STATUS", cmd)


VERBS = skel.Verbs(
    about="pycni bridge plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    skel.main(VERBS)
