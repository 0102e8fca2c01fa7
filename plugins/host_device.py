"""host-device: move an existing host interface into the container (drop-in for the
reference `host-device`).

The device is chosen by exactly the reference's keys, first match wins: `device`
(its name), `hwaddr` (its MAC), `kernelpath` (a /sys/devices/... directory whose
`net/` holds it), `pciBusID` (/sys/bus/pci/devices/<id>/net/), or the runtime's
`runtimeConfig.deviceID` (a PCI or auxiliary-bus device, overriding the others). A PCI
device bound to a userspace driver (vfio-pci, uio_pci_generic, igb_uio: DPDK) has no
netdev: it is not moved, and IPAM (if any) is only reported, not applied.

ADD keeps the device's host name in its alias (IFLA_IFALIAS, as the reference does,
so either implementation's DEL can give it back) and in a record of ours written
before the move, moves it into CNI_NETNS renamed to CNI_IFNAME, brings it up, and
applies IPAM. DEL gives it back to the host under its original name, left down (its
earlier state is unknown). When the container's namespace is gone, a physical device
is already back in the host namespace, under its container name: DEL finds it by the
alias (and the recorded MAC) and renames it. A virtual device (veth) dies with the
namespace; then there is nothing to give back.

The sysfs root can be moved with PYCNI_SYSFS (tests build a fake PCI tree, as the
reference's own tests do).
"""

from __future__ import annotations

import os

from pycni import attstore, conf, errors, fault, invoke, ipam_exec, netlink, netns, netsetup, skel
from pycni.netlink import Netlink
from pycni.result import DNS, Interface, IPConfig, Result, parse_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

WHERE = "host-device"
KNOWN_ARGS = frozenset({"IP", "GATEWAY", "MAC"})
#: drivers that take a NIC away from the kernel's network stack (DPDK)
USERSPACE_DRIVERS = ("vfio-pci", "uio_pci_generic", "igb_uio")


def sysfs() -> str:
    return os.environ.get("PYCNI_SYSFS") or "/sys"


def _sysfs_name(value: str, key: str) -> str:
    """A PCI address or auxiliary device name: one path component of sysfs."""
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        raise errors.InvalidConfig(
            f"{WHERE}: {key!r} is not a device name", f"got {value!r}; e.g. 0000:03:00.1"
        )
    return value


def _parse_mac(text: str) -> str:
    """A MAC in Go's net.ParseMAC spellings of 6 bytes (aa:bb:.., aa-bb-.., aabb.ccdd.eeff)."""
    t = text.lower()
    if len(t) == 14 and t.count(".") == 2:
        hexdigits = t.replace(".", "")
    else:
        parts = t.replace("-", ":").split(":")
        hexdigits = "".join(parts) if len(parts) == 6 and all(len(p) == 2 for p in parts) else ""
    if len(hexdigits) != 12 or any(c not in "0123456789abcdef" for c in hexdigits):
        raise errors.InvalidConfig(
            f"{WHERE}: failed to parse MAC address {text!r}", "use the form 02:42:ac:11:00:02"
        )
    return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2))


class HostDeviceConf:
    """The host-device plugin's keys, as the reference reads them."""

    __slots__ = ("aux_device", "device", "dns", "dpdk", "hwaddr", "ipam_type", "kernelpath", "name",
                 "pci_addr")  # fmt: skip

    def __init__(self, d: dict[str, Any], for_del: bool = False) -> None:
        self.name: str = d["name"]
        #: the host interface's name
        self.device = conf.get_str(d, "device", "", WHERE)
        if self.device:
            conf.validate_link_name(self.device, WHERE, "device")
        #: its MAC address
        self.hwaddr = conf.get_str(d, "hwaddr", "", WHERE)
        if self.hwaddr:
            self.hwaddr = _parse_mac(self.hwaddr)
        #: a /sys/devices/... directory whose net/ holds the interface
        self.kernelpath = conf.get_str(d, "kernelpath", "", WHERE)
        #: a PCI address (/sys/bus/pci/devices/<id>)
        self.pci_addr = conf.get_str(d, "pciBusID", "", WHERE)
        if self.pci_addr:
            _sysfs_name(self.pci_addr, "pciBusID")
        #: an auxiliary-bus device, from runtimeConfig.deviceID
        self.aux_device = ""
        #: bound to a userspace (DPDK) driver: no netdev to move
        self.dpdk = False
        self.ipam_type = ipam_exec.ipam_type(d)
        dns = conf.get_dict(d, "dns", WHERE)
        #: DNS settings for the result (override IPAM's when any is set)
        self.dns = DNS.from_wire(dns, f"{WHERE}: 'dns'") if dns else DNS()
        rc = conf.get_dict(d, "runtimeConfig", WHERE)
        device_id = conf.get_str(rc, "deviceID", "", WHERE)
        if for_del:
            return  # DEL finds the device by its alias and our record, not by sysfs
        if device_id:
            _sysfs_name(device_id, "runtimeConfig.deviceID")
            if os.path.exists(os.path.join(sysfs(), "bus/pci/devices", device_id)):
                self.pci_addr = device_id
            elif os.path.exists(os.path.join(sysfs(), "bus/auxiliary/devices", device_id)):
                self.pci_addr, self.aux_device = "", device_id
            else:
                raise errors.InvalidConfig(
                    f"runtime config DeviceID {device_id} not found or unsupported",
                    "it is neither a PCI nor an auxiliary-bus device of this node",
                )
        if not (self.device or self.hwaddr or self.kernelpath or self.pci_addr or self.aux_device):
            raise errors.InvalidConfig(
                'specify either "device", "hwaddr", "kernelpath" or "pciBusID"',
                "host-device needs to know which host interface to move",
            )
        if self.pci_addr:
            self.dpdk = _has_dpdk_driver(self.pci_addr)


def _has_dpdk_driver(pci_addr: str) -> bool:
    link = os.path.join(sysfs(), "bus/pci/devices", pci_addr, "driver")
    try:
        driver = os.path.basename(os.path.realpath(link, strict=True))
    except OSError as exc:
        raise errors.InvalidConfig(
            f"error with host device: {pci_addr} has no driver",
            f"{link}: {exc.strerror}; is {pci_addr} the PCI address of a bound NIC?",
        ) from None
    return driver in USERSPACE_DRIVERS


def load(cmd: skel.CmdArgs) -> HostDeviceConf:
    skel.check_cni_args(cmd.cni_args, KNOWN_ARGS)
    return HostDeviceConf(cmd.conf, for_del=cmd.command in ("DEL", "GC"))


# -- finding the device (host namespace) -------------------------------------------------


def _first_netdev(directory: str, what: str) -> str:
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise errors.InvalidConfig(
            f"{WHERE}: failed to find host device: no net directory for {what}",
            f"{directory}: {exc.strerror}",
        ) from None
    if not names:
        raise errors.InvalidConfig(f"{WHERE}: failed to find network device in path {directory}")
    return names[0]


def device_name(nl: Netlink, c: HostDeviceConf) -> str:
    """The host name of the device the config selects."""
    if c.device:
        return c.device
    if c.hwaddr:
        for link in nl.links():
            if link.mac == c.hwaddr:
                return link.name
        raise errors.InvalidConfig(
            f"{WHERE}: failed to find host device: no interface has MAC {c.hwaddr}",
            "check 'hwaddr' against `ip link` on the node",
        )
    if c.kernelpath:
        root = os.path.join(sysfs(), "devices") + "/"
        if not os.path.isabs(c.kernelpath) or not os.path.normpath(c.kernelpath).startswith(root):
            raise errors.InvalidConfig(
                f'kernel device path "{c.kernelpath}" must be absolute and begin with {root}',
                "e.g. /sys/devices/pci0000:00/0000:00:03.0",
            )
        return _first_netdev(os.path.join(os.path.normpath(c.kernelpath), "net"), c.kernelpath)
    if c.pci_addr:
        base = os.path.join(sysfs(), "bus/pci/devices", c.pci_addr)
        net_dir = os.path.join(base, "net")
        if not os.path.isdir(net_dir):
            import glob

            virtio = sorted(glob.glob(os.path.join(glob.escape(base), "virtio*", "net")))
            if not virtio:
                raise errors.InvalidConfig(f"no net directory under pci device {c.pci_addr}")
            net_dir = virtio[0]
        return _first_netdev(net_dir, c.pci_addr)
    return _first_netdev(
        os.path.join(sysfs(), "bus/auxiliary/devices", c.aux_device, "net"), c.aux_device
    )


def _host_link(nl: Netlink, name: str) -> netlink.Link:
    link = nl.link(name)
    if link is None:
        raise errors.InvalidConfig(
            f"{WHERE}: failed to find host device: {name!r} not found in the host namespace",
            "is it already in a container, or spelled differently?",
        )
    if name == "lo":
        raise errors.InvalidConfig(f"{WHERE}: the loopback device cannot be moved")
    return link


# -- ADD -------------------------------------------------------------------------------


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = load(cmd)
    if c.ipam_type:
        invoke.find_in_path(c.ipam_type, cmd.path_list)  # a missing IPAM fails before any change
    fd = netns.open_netns(cmd.netns)
    result = Result(cmd.cni_version, interfaces=[Interface(cmd.ifname, "", cmd.netns)])
    host_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    host, cont = Netlink(), Netlink(netns_fd=fd)
    moved: tuple[str, bool] | None = None  # (host name, was up)
    ipam_done = False
    try:
        if not c.dpdk:
            if cont.link(cmd.ifname) is not None:
                raise errors.InvalidEnvironment(
                    f"interface {cmd.ifname} already exists in the container",
                    "CNI_IFNAME must name an interface that does not exist in the container yet",
                )
            link = _host_link(host, device_name(host, c))
            attstore.save(
                WHERE, c.name, cmd.container_id, cmd.ifname,
                {"device": link.name, "mac": link.mac, "netns": cmd.netns},
            )  # fmt: skip
            moved = (link.name, link.up)
            cont_link = _move_in(host, cont, link, fd, cmd.ifname)
            fault.point("after-move")
            result.interfaces[0].mac = cont_link.mac
        if c.ipam_type:
            ipam = ipam_exec.run("ADD", cmd)
            assert ipam is not None
            ipam_done = True
            fault.point("after-ipam")
            if not ipam.ips:
                raise errors.CniError("IPAM plugin returned missing IP config")
            result.ips = [IPConfig(ip.address, ip.gateway, 0) for ip in ipam.ips]
            result.routes = list(ipam.routes)
            result.dns = ipam.dns
            if not c.dpdk:
                cont_link = cont.link(cmd.ifname) or cont_link
                netsetup.configure_container_iface(fd, cont, cont_link, result.ips, result.routes)
        if not c.dns.is_empty():
            result.dns = c.dns
        return result
    except BaseException as exc:
        if ipam_done:
            _best_effort(lambda: ipam_exec.run("DEL", cmd))
        if moved is not None:
            name, was_up = moved
            _best_effort(lambda: _move_out(cont, fd, host, host_fd, cmd.ifname, name))
            if was_up:
                _best_effort(lambda: _set_up(host, name))
            attstore.delete(WHERE, c.name, cmd.container_id, cmd.ifname)
        if isinstance(exc, netlink.NetlinkError):
            raise netsetup.nl_error(exc, f"move the host device into {cmd.netns}") from None
        raise
    finally:
        host.close()
        cont.close()
        os.close(host_fd)
        os.close(fd)


def _best_effort(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:  # undo keeps going
        skel.log_exception(exc)


def _set_up(nl: Netlink, name: str) -> None:
    link = nl.link(name)
    if link is not None:
        nl.set_link(link.index, up=True)


def _move_in(
    host: Netlink, cont: Netlink, link: netlink.Link, cont_fd: int, ifname: str
) -> netlink.Link:
    """Alias := host name, then one request moves and renames it; up in the container."""
    host.set_link(link.index, alias=link.name)
    try:
        netlink.move_link(host, link.index, cont_fd, ifname)
    except netlink.NetlinkError as exc:
        _best_effort(lambda: host.set_link(link.index, alias=""))
        if exc.errno == 22:  # EINVAL: NETIF_F_NETNS_LOCAL (bridge, lo, vrf, ...)
            raise errors.InvalidConfig(
                f"{WHERE}: {link.name} cannot change namespace",
                f"the kernel keeps a {link.kind or 'device'} in its namespace: {exc.strerror}",
            ) from None
        raise netsetup.nl_error(exc, f"move {link.name} into the container") from None
    cont_link = cont.link(ifname)
    if cont_link is None:
        raise errors.CniError(f"{link.name} vanished while it was moved into the container")
    cont.set_link(cont_link.index, up=True)
    return cont.link_by_index(cont_link.index) or cont_link


def _move_out(
    cont: Netlink, cont_fd: int, host: Netlink, host_fd: int, ifname: str, name: str
) -> bool:
    """Give container interface `ifname` back to the host as `name`, alias cleared,
    left down. False when it is not in the container."""
    link = cont.link(ifname)
    if link is None:
        return False
    try:
        netlink.move_link(cont, link.index, host_fd, name)
    except netlink.NetlinkError as exc:
        if cont.link(ifname) is None:
            # Moved, but the rename was refused: back into the container with it
            # rather than leave it on the host under its container name.
            stray = next((x for x in host.links() if x.alias == name and x.mac == link.mac), None)
            if stray is not None:
                _best_effort(lambda: netlink.move_link(host, stray.index, cont_fd, ifname))
        if isinstance(exc, netlink.LinkExists):
            raise errors.CniError(
                f"failed to give {ifname} back to the host as {name}",
                f"the host has an interface called {name} already; rename it and retry DEL",
            ) from None
        raise netsetup.nl_error(exc, f"give {ifname} back to the host as {name}") from None
    back = host.link(name)
    if back is not None:
        host.set_link(back.index, alias="")
    return True


def _give_back_returned(host: Netlink, rec: dict[str, Any]) -> bool:
    """After its namespace was destroyed, a physical device is in the host namespace
    again under its container name (or devN), its alias still the host name: rename
    it back and clear the alias. False when no such device is there."""
    name, mac = rec.get("device"), rec.get("mac")
    if not isinstance(name, str) or not name:
        return False
    for x in host.links():
        if x.alias != name or (isinstance(mac, str) and mac and x.mac != mac):
            continue
        if x.name != name:
            if x.up:
                host.set_link(x.index, up=False)
            try:
                host.set_link(x.index, name=name)
            except netlink.NetlinkError as exc:
                raise netsetup.nl_error(exc, f"rename {x.name} back to {name}") from None
        host.set_link(x.index, alias="")
        return True
    return False


# -- DEL -------------------------------------------------------------------------------


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = load(cmd)
    if c.ipam_type:
        ipam_exec.run("DEL", cmd)
    give_back(c.name, cmd.container_id, cmd.ifname, cmd.netns)


def give_back(network: str, container_id: str, ifname: str, netns_path: str) -> None:
    """Whatever state the container is in, the device ends on the host under its
    original name; then the record goes."""
    rec = attstore.load(WHERE, network, container_id, ifname) or {}
    fd = None
    if netns_path:
        try:
            fd = netns.open_netns(netns_path)
        except errors.CniError:
            fd = None  # the namespace is gone: a physical device is back on the host
    host_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with Netlink() as host:
            done = False
            if fd is not None:
                with Netlink(netns_fd=fd) as cont:
                    found = cont.link(ifname)
                    name = (found.alias if found else "") or str(rec.get("device") or "")
                    if found is not None and name:
                        done = _move_out(cont, fd, host, host_fd, ifname, name)
                    # else: no alias and no record: not a device we moved; leave it
            if not done and rec:
                _give_back_returned(host, rec)
    finally:
        os.close(host_fd)
        if fd is not None:
            os.close(fd)
    attstore.delete(WHERE, network, container_id, ifname)


# -- CHECK -----------------------------------------------------------------------------


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = load(cmd)
    if c.ipam_type:
        ipam_exec.run("CHECK", cmd)
    if "prevResult" not in cmd.conf:
        raise errors.InvalidConfig(
            "Required prevResult missing", "CHECK needs the result of the ADD as prevResult"
        )
    prev = parse_result(cmd.conf["prevResult"])
    if c.dpdk:
        return
    index = next(
        (i for i, f in enumerate(prev.interfaces) if f.name == cmd.ifname and f.sandbox), None
    )
    if index is None or prev.interfaces[index].sandbox != cmd.netns:
        raise errors.InvalidConfig(
            f"Sandbox in prevResult doesn't match configured netns: {cmd.netns}",
            f"prevResult has no interface {cmd.ifname} in {cmd.netns}",
        )
    fd = netns.open_netns(cmd.netns)
    missing: list[str] = []
    try:
        with Netlink(netns_fd=fd) as cont:
            link = cont.link(cmd.ifname)
            if link is None:
                if attstore.load(WHERE, c.name, cmd.container_id, cmd.ifname) is None:
                    raise errors.UnknownContainer(
                        f"{WHERE}: unknown container {cmd.container_id}",
                        f"no {cmd.ifname} in {cmd.netns} and no record of an ADD for it",
                    )
                raise errors.CniError(
                    f"Container Interface name in prevResult: {cmd.ifname} not found"
                )
            mac = prev.interfaces[index].mac
            if mac and mac.lower() != link.mac:
                missing.append(
                    f"Interface {cmd.ifname} Mac {mac} doesn't match container Mac: {link.mac}"
                )
            have = {a.interface for a in cont.addrs(link.index)}
            missing += [
                f"address {ip.address} missing on {cmd.ifname}"
                for ip in prev.ips
                if (ip.interface is None or ip.interface == index) and ip.address not in have
            ]
            table = cont.routes(netlink.AF_UNSPEC)
            for route in prev.routes:
                if not any(r.dst == route.dst and (route.gw is None or r.gateway == route.gw)
                           for r in table):  # fmt: skip
                    via = f" via {route.gw}" if route.gw is not None else ""
                    missing.append(f"route {route.dst}{via} missing in the container")
    finally:
        os.close(fd)
    if missing:
        raise errors.CniError(f"{WHERE} CHECK failed: " + "; ".join(missing))


# -- GC / STATUS -----------------------------------------------------------------------


def cmd_gc(cmd: skel.CmdArgs) -> None:
    c = load(cmd)
    valid = skel.valid_attachments(cmd.conf)
    if valid is None:
        return
    for cid, ifname in attstore.entries(WHERE, c.name):
        if (cid, ifname) in valid:
            continue
        rec = attstore.load(WHERE, c.name, cid, ifname) or {}
        give_back(c.name, cid, ifname, str(rec.get("netns") or ""))
    if c.ipam_type:
        ipam_exec.run("GC", cmd)


def cmd_status(cmd: skel.CmdArgs) -> None:
    c = HostDeviceConf(cmd.conf, for_del=True)
    if c.ipam_type:
        ipam_exec.run("STATUS", cmd)


VERBS = skel.Verbs(
    about="pycni host-device plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    skel.main(VERBS)
