"""ipvlan: an IP-VLAN child of a host interface as the container's interface (drop-in
for the reference `ipvlan`).

Like macvlan, but every child shares the master's MAC and the kernel switches by IP
address: l2 (the children answer ARP/ND themselves), l3 (the master routes for them,
no broadcast), l3s (l3 through netfilter). Addresses come from `ipam` or, chained
after a plugin that assigned them, from prevResult; with a prevResult and no
`master`, the master is the one interface that result names (the reference's
chained mode). A kernel without ipvlan (ours) gets a clean refusal naming the module.
"""

from __future__ import annotations

from pycni import conf, errors, ipam_exec, linkplugin, skel
from pycni.result import DNS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.netlink import Link, Netlink
    from pycni.result import Result

WHERE = "ipvlan"
MODES = ("l2", "l3", "l3s")


class IpvlanConf:
    __slots__ = ("dns", "ipam_type", "link_in_container", "master", "mode", "mtu")

    def __init__(self, d: dict[str, Any]) -> None:
        #: the parent link; "" = prevResult's one interface, else the default route's
        self.master = conf.get_str(d, "master", "", WHERE)
        if self.master:
            conf.validate_link_name(self.master, WHERE, "master")
        #: l2 | l3 | l3s ("" = l2)
        self.mode = conf.get_str(d, "mode", "", WHERE) or "l2"
        if self.mode not in MODES:
            raise errors.InvalidConfig(f'unknown ipvlan mode: "{self.mode}"', "use l2, l3 or l3s")
        #: MTU of the link; 0 = the master's
        self.mtu = conf.get_int(d, "mtu", 0, WHERE, 0, 65535)
        #: the master is in the container's namespace, not the host's
        self.link_in_container = conf.get_bool(d, "linkInContainer", False, WHERE)
        #: "" = addresses from prevResult (chained)
        self.ipam_type = ipam_exec.ipam_type(d)
        dns = conf.get_dict(d, "dns", WHERE)
        #: DNS for the result (overrides IPAM's when set)
        self.dns = DNS.from_wire(dns, f"{WHERE}: 'dns'") if dns else DNS()


def _prev(cmd: skel.CmdArgs) -> Result | None:
    if cmd.conf.get("prevResult") is None:
        return None
    from pycni.result import parse_result

    return parse_result(cmd.conf["prevResult"])


def _master_name(c: IpvlanConf, prev: Result | None) -> str:
    """The reference's rule: `master`, else (chained) prevResult's single named
    interface, else "" (the default route's interface)."""
    if c.master or prev is None:
        return c.master
    if len(prev.interfaces) == 1 and prev.interfaces[0].name:
        return prev.interfaces[0].name
    raise errors.InvalidConfig(
        "chained master failure. PrevResult lacks a single named interface",
        "set 'master', or chain ipvlan after a plugin that reports one interface",
    )


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = IpvlanConf(cmd.conf)
    prev = _prev(cmd)
    master_name = _master_name(c, prev)
    prev_ips = prev if not c.ipam_type and prev is not None and prev.ips else None
    if not c.ipam_type and prev_ips is None:
        raise errors.InvalidConfig(
            f"{WHERE}: no addresses for the interface",
            "configure 'ipam', or chain ipvlan after a plugin whose result has IPs",
        )

    def create(fd: int, cont: Netlink) -> None:
        from pycni import netlink

        with linkplugin.parent_netlink(c.link_in_container, cont) as nl:
            master = linkplugin.find_master(nl, master_name, WHERE)
            linkplugin.check_mtu(c.mtu, master, WHERE)
            data = netlink.nla_u16(netlink.IFLA_IPVLAN_MODE, netlink.IPVLAN_MODES[c.mode])
            try:
                nl.add_sublink(
                    cmd.ifname,
                    "ipvlan",
                    master.index,
                    None if c.link_in_container else fd,
                    c.mtu,
                    info_data=data,
                )
            except netlink.NetlinkError as exc:
                raise linkplugin.kind_error(exc, "ipvlan", cmd.ifname) from None

    return linkplugin.add(
        cmd, "ipvlan", create, c.ipam_type, c.dns, prev_ips=prev_ips, notify_v6=True
    )


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = IpvlanConf(cmd.conf)
    linkplugin.delete(cmd, ("ipvlan",), c.ipam_type)


def _mode_of(cont: Netlink, link: Link, expected: str) -> list[str]:
    from pycni import netlink

    return linkplugin.mode_problems(
        cont,
        link,
        (netlink.IFLA_IPVLAN_MODE, "=H"),
        netlink.IPVLAN_MODES,
        expected,
        "Container IPVlan mode",
    )


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = IpvlanConf(cmd.conf)
    linkplugin.check(
        cmd,
        "ipvlan",
        c.ipam_type,
        lambda cont, link: _mode_of(cont, link, c.mode),
        master=c.master if c.master else None,
        master_in_container=c.link_in_container,
    )


def cmd_gc(cmd: skel.CmdArgs) -> None:
    linkplugin.gc(cmd, IpvlanConf(cmd.conf).ipam_type)


def cmd_status(cmd: skel.CmdArgs) -> None:
    c = IpvlanConf(cmd.conf)
    linkplugin.status(cmd, c.ipam_type, "" if c.link_in_container else c.master, WHERE)


VERBS = skel.Verbs(
    about="pycni ipvlan plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    skel.main(VERBS)
