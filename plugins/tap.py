"""tap: a persistent tap device as the container's interface (drop-in for the
reference `tap`), for a VM or a userspace switch inside the pod to attach to.

The device is created inside the container's namespace through /dev/net/tun
(pycni/tuntap.py), owned by `owner`/`group` when given (who may attach to it), with
`multiQueue`, then MTU and MAC through rtnetlink; `bridge` makes it a port of that
bridge (which must exist in the container's namespace). `selinuxcontext` is the SELinux
context to create it under; where SELinux is off it is ignored, with a note on stderr.
With `ipam` the addresses and routes are set; without, the link is only brought up.
"""

from __future__ import annotations

import sys

from pycni import conf, errors, ipam_exec, linkplugin, skel, tuntap
from pycni.result import DNS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.netlink import Link, Netlink
    from pycni.result import Result

WHERE = "tap"
KNOWN_ARGS = frozenset({"MAC", "IP", "GATEWAY"})
_UINT32 = (1 << 32) - 1


class TapConf:
    __slots__ = (
        "bridge",
        "dns",
        "group",
        "ipam_type",
        "mac",
        "mtu",
        "multi_queue",
        "owner",
        "selinux_context",
    )

    def __init__(self, d: dict[str, Any], cni_args: dict[str, str], for_del: bool = False) -> None:
        #: a multi-queue device (one queue per attaching file)
        self.multi_queue = conf.get_bool(d, "multiQueue", False, WHERE)
        #: MTU of the device; 0 = the kernel's default
        self.mtu = conf.get_int(d, "mtu", 0, WHERE, 0, 65535)
        if 0 < self.mtu < 68:
            raise errors.InvalidConfig(
                f"{WHERE}: 'mtu' must be 0 (kernel default) or between 68 and 65535",
                f"got {self.mtu}",
            )
        #: uid allowed to attach (None: no owner)
        self.owner: int | None = (
            conf.get_int(d, "owner", 0, WHERE, 0, _UINT32) if d.get("owner") is not None else None
        )
        #: gid allowed to attach (None: no group)
        self.group: int | None = (
            conf.get_int(d, "group", 0, WHERE, 0, _UINT32) if d.get("group") is not None else None
        )
        #: SELinux context to create the device under ("" = the plugin's own)
        self.selinux_context = conf.get_str(d, "selinuxContext", "", WHERE)
        #: a bridge in the container's namespace to make the tap a port of
        self.bridge = conf.get_str(d, "bridge", "", WHERE)
        if self.bridge:
            conf.validate_link_name(self.bridge, WHERE, "bridge")
        self.ipam_type = ipam_exec.ipam_type(d)
        dns = conf.get_dict(d, "dns", WHERE)
        #: DNS for the result (overrides IPAM's when set)
        self.dns = DNS.from_wire(dns, f"{WHERE}: 'dns'") if dns else DNS()
        #: the device's MAC: runtimeConfig.mac > CNI_ARGS MAC > "mac"
        self.mac = ""
        if for_del:
            return
        mac = conf.get_str(conf.get_dict(d, "runtimeConfig", WHERE), "mac", "", WHERE)
        mac = mac or cni_args.get("MAC", "") or conf.get_str(d, "mac", "", WHERE)
        if mac:
            self.mac = conf.validate_mac(mac, WHERE)


def load(cmd: skel.CmdArgs) -> TapConf:
    args = cmd.cni_args
    skel.check_cni_args(args, KNOWN_ARGS)
    return TapConf(cmd.conf, args, for_del=cmd.command == "DEL")


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = load(cmd)

    def create(fd: int, cont: Netlink) -> None:
        if c.bridge:
            br = cont.link(c.bridge)
            if br is None or br.kind != "bridge":
                raise errors.InvalidConfig(
                    f"failed to get bridge {c.bridge}: "
                    + ("Link not found" if br is None else f"it is a {br.kind or 'device'}"),
                    "'bridge' must name a bridge in the container's namespace",
                )
        if c.selinux_context and tuntap.selinux_enabled():
            tuntap.create_tap_labelled(
                fd, cmd.ifname, c.selinux_context, c.multi_queue, c.owner, c.group
            )
        else:
            if c.selinux_context:
                sys.stderr.write(
                    f"{WHERE}: SELinux is not enabled on this host; "
                    f"selinuxcontext {c.selinux_context!r} is ignored\n"
                )
            tuntap.create_tap(fd, cmd.ifname, c.multi_queue, c.owner, c.group)

    def configure(fd: int, cont: Netlink, link: Link) -> None:
        from pycni import netlink, netsetup

        try:
            if c.mtu or c.mac:
                cont.set_link(link.index, mtu=c.mtu, mac=c.mac)
            if c.bridge:
                br = cont.link(c.bridge)
                if br is not None:
                    cont.set_link(link.index, master=br.index)
        except netlink.NetlinkError as exc:
            raise netsetup.nl_error(exc, f"configure tap {cmd.ifname}") from None

    return linkplugin.add(cmd, "tap", create, c.ipam_type, c.dns, after_create=configure)


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = load(cmd)
    linkplugin.delete(cmd, ("tun",), c.ipam_type)


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = load(cmd)
    linkplugin.check(cmd, "tun", c.ipam_type, where=WHERE)


def cmd_gc(cmd: skel.CmdArgs) -> None:
    linkplugin.gc(cmd, TapConf(cmd.conf, {}, for_del=True).ipam_type)


def cmd_status(cmd: skel.CmdArgs) -> None:
    linkplugin.status(cmd, TapConf(cmd.conf, {}, for_del=True).ipam_type, None, WHERE)


VERBS = skel.Verbs(
    about="pycni tap plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    skel.main(VERBS)
