"""macvlan: a MAC-VLAN child of a host interface as the container's interface
(drop-in for the reference `macvlan`).

The link is created on `master` (default: the interface of the host's default route;
with linkInContainer, a link already inside the container's namespace) and is born
inside the container's namespace as CNI_IFNAME, with its own MAC. Modes are the
kernel's: bridge (children of one master talk to each other directly), private (they
never do), vepa (only through the external switch), passthru (one child takes the
master over). With `ipam` the addresses and routes IPAM gives are set; without, the
link is only brought up (L2). DEL, CHECK, GC and STATUS: see pycni/linkplugin.py.
"""

from __future__ import annotations

from pycni import conf, errors, ipam_exec, linkplugin, skel
from pycni.result import DNS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.netlink import Link, Netlink
    from pycni.result import Result

WHERE = "macvlan"
# CNI_ARGS this plugin and the IPAM it calls understand (as bridge: the reference
# refuses others unless IgnoreUnknown=1).
KNOWN_ARGS = frozenset({"MAC", "IP", "GATEWAY"})
MODES = ("bridge", "private", "vepa", "passthru")


class MacvlanConf:
    __slots__ = (
        "bcqueuelen",
        "dns",
        "ipam_type",
        "link_in_container",
        "mac",
        "master",
        "mode",
        "mtu",
    )

    def __init__(self, d: dict[str, Any], cni_args: dict[str, str], for_del: bool = False) -> None:
        #: the parent link; "" = the interface of the default route
        self.master = conf.get_str(d, "master", "", WHERE)
        if self.master:
            conf.validate_link_name(self.master, WHERE, "master")
        #: bridge | private | vepa | passthru ("" = bridge)
        self.mode = conf.get_str(d, "mode", "", WHERE) or "bridge"
        if self.mode not in MODES:
            raise errors.InvalidConfig(
                f'unknown macvlan mode: "{self.mode}"', "use bridge, private, vepa or passthru"
            )
        #: MTU of the link; 0 = the master's
        self.mtu = conf.get_int(d, "mtu", 0, WHERE, 0, 65535)
        #: the master is in the container's namespace, not the host's
        self.link_in_container = conf.get_bool(d, "linkInContainer", False, WHERE)
        #: broadcast queue length (0 = the kernel's default)
        self.bcqueuelen = conf.get_int(d, "bcqueuelen", 0, WHERE, 0, (1 << 32) - 1)
        #: "" = L2 only
        self.ipam_type = ipam_exec.ipam_type(d)
        dns = conf.get_dict(d, "dns", WHERE)
        #: DNS for the result (overrides IPAM's when set)
        self.dns = DNS.from_wire(dns, f"{WHERE}: 'dns'") if dns else DNS()
        #: the link's MAC: runtimeConfig.mac > CNI_ARGS MAC > "mac" (as the reference)
        self.mac = ""
        if for_del:
            return  # DEL never needs the MAC: a bad one must not keep it from releasing
        mac = conf.get_str(conf.get_dict(d, "runtimeConfig", WHERE), "mac", "", WHERE)
        mac = mac or cni_args.get("MAC", "") or conf.get_str(d, "mac", "", WHERE)
        if mac:
            self.mac = conf.validate_mac(mac, WHERE)


def load(cmd: skel.CmdArgs) -> MacvlanConf:
    args = cmd.cni_args
    skel.check_cni_args(args, KNOWN_ARGS)
    return MacvlanConf(cmd.conf, args, for_del=cmd.command == "DEL")


def info_data(c: MacvlanConf) -> bytes:
    from pycni import netlink

    data = netlink.nla_u32(netlink.IFLA_MACVLAN_MODE, netlink.MACVLAN_MODES[c.mode])
    if c.bcqueuelen:
        data += netlink.nla_u32(netlink.IFLA_MACVLAN_BC_QUEUE_LEN, c.bcqueuelen)
    return data


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = load(cmd)

    def create(fd: int, cont: Netlink) -> None:
        from pycni import netlink

        with linkplugin.parent_netlink(c.link_in_container, cont) as nl:
            master = linkplugin.find_master(nl, c.master, WHERE)
            linkplugin.check_mtu(c.mtu, master, WHERE)
            try:
                nl.add_sublink(
                    cmd.ifname,
                    "macvlan",
                    master.index,
                    None if c.link_in_container else fd,
                    c.mtu,
                    c.mac,
                    info_data(c),
                )
            except netlink.NetlinkError as exc:
                raise linkplugin.kind_error(exc, "macvlan", cmd.ifname) from None
        if c.mac:
            linkplugin.check_mac_free(cont, cmd.ifname, "macvlan")

    return linkplugin.add(cmd, "macvlan", create, c.ipam_type, c.dns, notify_v6=True)


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = load(cmd)
    linkplugin.delete(cmd, ("macvlan",), c.ipam_type)


def _mode_of(cont: Netlink, link: Link, expected: str) -> list[str]:
    from pycni import netlink

    return linkplugin.mode_problems(
        cont,
        link,
        (netlink.IFLA_MACVLAN_MODE, "=I"),
        netlink.MACVLAN_MODES,
        expected,
        "container macvlan mode",
    )


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = load(cmd)
    linkplugin.check(
        cmd,
        "macvlan",
        c.ipam_type,
        lambda cont, link: _mode_of(cont, link, c.mode),
        master=c.master,
        master_in_container=c.link_in_container,
    )


def cmd_gc(cmd: skel.CmdArgs) -> None:
    c = MacvlanConf(cmd.conf, {}, for_del=True)
    linkplugin.gc(cmd, c.ipam_type)


def cmd_status(cmd: skel.CmdArgs) -> None:
    c = MacvlanConf(cmd.conf, {}, for_del=True)
    linkplugin.status(cmd, c.ipam_type, "" if c.link_in_container else c.master, WHERE)


VERBS = skel.Verbs(
    about="pycni macvlan plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    skel.main(VERBS)
