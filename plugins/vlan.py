"""vlan: an 802.1q sub-interface of a host interface as the container's interface
(drop-in for the reference `vlan`).

The link tags what it sends with `vlanId` on `master` (required) and is born inside
the container's namespace as CNI_IFNAME; addresses come from `ipam` (required). A
kernel without 802.1q support (ours: no 8021q module) gets a clean refusal naming the
module, and nothing is left behind. DEL, CHECK, GC and STATUS: pycni/linkplugin.py.
"""

from __future__ import annotations

from pycni import conf, errors, ipam_exec, linkplugin, skel
from pycni.result import DNS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.netlink import Link, Netlink
    from pycni.result import Result

WHERE = "vlan"


class VlanConf:
    __slots__ = ("dns", "ipam_type", "link_in_container", "master", "mtu", "vlan_id")

    def __init__(self, d: dict[str, Any]) -> None:
        #: the parent link (required)
        self.master = conf.get_str(d, "master", "", WHERE)
        if not self.master:
            raise errors.InvalidConfig(
                '"master" field is required. It specifies the host interface name to '
                "create the VLAN for"
            )
        conf.validate_link_name(self.master, WHERE, "master")
        #: the 802.1q VLAN id
        value = d.get("vlanId", 0)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= 4094:
            raise errors.InvalidConfig(
                f"invalid VLAN ID {value} (must be between 0 and 4095 inclusive)",
                "'vlanId' must be 0-4094",
            )
        self.vlan_id = conf.get_int(d, "vlanId", 0, WHERE, 0, 4094)
        #: MTU of the link; 0 = the master's
        self.mtu = conf.get_int(d, "mtu", 0, WHERE, 0, 65535)
        #: the master is in the container's namespace, not the host's
        self.link_in_container = conf.get_bool(d, "linkInContainer", False, WHERE)
        self.ipam_type = ipam_exec.ipam_type(d)
        dns = conf.get_dict(d, "dns", WHERE)
        #: DNS for the result (overrides IPAM's when set)
        self.dns = DNS.from_wire(dns, f"{WHERE}: 'dns'") if dns else DNS()


def _require_ipam(c: VlanConf) -> None:
    if not c.ipam_type:
        raise errors.InvalidConfig(
            f"{WHERE}: an IPAM configuration is required", 'add "ipam": {"type": ...}'
        )


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = VlanConf(cmd.conf)
    _require_ipam(c)

    def create(fd: int, cont: Netlink) -> None:
        from pycni import netlink

        with linkplugin.parent_netlink(c.link_in_container, cont) as nl:
            master = linkplugin.find_master(nl, c.master, WHERE)
            linkplugin.check_mtu(c.mtu, master, WHERE)
            try:
                nl.add_sublink(
                    cmd.ifname,
                    "vlan",
                    master.index,
                    None if c.link_in_container else fd,
                    c.mtu,
                    info_data=netlink.nla_u16(netlink.IFLA_VLAN_ID, c.vlan_id),
                )
            except netlink.NetlinkError as exc:
                raise linkplugin.kind_error(exc, "vlan", cmd.ifname) from None

    return linkplugin.add(cmd, "vlan", create, c.ipam_type, c.dns, l3_required=True)


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = VlanConf(cmd.conf)
    linkplugin.delete(cmd, ("vlan",), c.ipam_type)


def _vlan_of(cont: Netlink, link: Link, c: VlanConf) -> list[str]:
    import struct

    from pycni import netlink

    raw = cont.link_info_data(link.index).get(netlink.IFLA_VLAN_ID, b"")
    vid = struct.unpack("=H", raw[:2])[0] if len(raw) >= 2 else -1
    out = []
    if vid != c.vlan_id:
        out.append(f"link {link.name} has VLAN id {vid}, the config says {c.vlan_id}")
    if c.mtu and c.mtu != link.mtu:
        out.append(f"configured MTU of {link.name} is {c.mtu}, current value is {link.mtu}")
    return out


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = VlanConf(cmd.conf)
    _require_ipam(c)
    linkplugin.check(
        cmd,
        "vlan",
        c.ipam_type,
        lambda cont, link: _vlan_of(cont, link, c),
        master=c.master,
        master_in_container=c.link_in_container,
    )


def cmd_gc(cmd: skel.CmdArgs) -> None:
    linkplugin.gc(cmd, VlanConf(cmd.conf).ipam_type)


def cmd_status(cmd: skel.CmdArgs) -> None:
    c = VlanConf(cmd.conf)
    linkplugin.status(cmd, c.ipam_type, "" if c.link_in_container else c.master, WHERE)


VERBS = skel.Verbs(
    about="pycni vlan plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    skel.main(VERBS)
