"""bandwidth: rate-limit a container's traffic (drop-in for the reference `bandwidth`).

A chained plugin after an interface plugin that made a veth (bridge, ptp). Limits come
from the top-level keys `ingressRate/ingressBurst/egressRate/egressBurst` (bits per
second / bits) or, when none of them is there, from runtimeConfig `bandwidth` (the
capability kubelet fills). On the host end of the veth:

- ingress (traffic to the container) leaves the host through the veth: a root tbf
  qdisc (handle 1:) on it shapes it;
- egress (traffic from the container) arrives at the veth: an ingress qdisc (ffff:)
  redirects it to an ifb device, named `bwp` + sha512(network name + container ID) as
  the reference names it, whose root tbf (1:) shapes it.

DEL deletes the ifb (so either plugin's DEL cleans up the other's ADD) and the two
qdiscs on the veth when it is still there.
"""

from __future__ import annotations

import hashlib
import os

from pycni import conf, errors, netns, skel
from pycni.result import Interface, Result, chained_prev_result, parse_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.netlink import Link, Netlink

WHERE = "bandwidth"
KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1


class BandwidthConf:
    __slots__ = ("egress_burst", "egress_rate", "ingress_burst", "ingress_rate", "name")

    def __init__(self, d: dict[str, Any], for_del: bool = False) -> None:
        #: network name (part of the ifb device's name)
        self.name = conf.get_str(d, "name", "", WHERE)
        #: bits per second to the container (0: unlimited) and its burst in bits
        self.ingress_rate = self.ingress_burst = 0
        #: bits per second from the container (0: unlimited) and its burst in bits
        self.egress_rate = self.egress_burst = 0
        if for_del:
            # DEL is keyed by the ifb's name: bad limits must not keep it from cleaning up.
            return
        # Go decodes the four keys into one embedded struct: present at all at the top
        # level, it wins over runtimeConfig.bandwidth.
        source, where = d, WHERE
        if not any(k in d for k in KEYS):
            rc = conf.get_dict(d, "runtimeConfig", WHERE)
            source = conf.get_dict(rc, "bandwidth", f"{WHERE}: runtimeConfig")
            where = f"{WHERE}: runtimeConfig.bandwidth"
        values = [conf.get_int(source, k, 0, where, 0, U64_MAX) for k in KEYS]
        self.ingress_rate, self.ingress_burst, self.egress_rate, self.egress_burst = values
        _validate(self.ingress_rate, self.ingress_burst, "ingress", where)
        _validate(self.egress_rate, self.egress_burst, "egress", where)

    @property
    def is_zero(self) -> bool:
        return not (
            self.ingress_rate or self.ingress_burst or self.egress_rate or self.egress_burst
        )


def _validate(rate: int, burst: int, direction: str, where: str) -> None:
    if rate and not burst:
        raise errors.InvalidConfig(
            f"{where}: if rate is set, burst must also be set",
            f"set {direction}Burst (bits) with {direction}Rate",
        )
    if burst and not rate:
        raise errors.InvalidConfig(
            f"{where}: if burst is set, rate must also be set",
            f"set {direction}Rate (bits per second) with {direction}Burst",
        )
    if not rate:
        return
    if burst // 8 >= U32_MAX:
        raise errors.InvalidConfig(
            f"{where}: burst cannot be more than 4GB", f"{direction}Burst is {burst} bits"
        )
    if rate < 8:
        raise errors.InvalidConfig(
            f"{where}: {direction}Rate must be at least 8 bits per second", f"got {rate}"
        )


def ifb_name(network: str, container_id: str) -> str:
    """`bwp` + the hex sha512 of network name + container ID, 15 characters."""
    return ("bwp" + hashlib.sha512((network + container_id).encode()).hexdigest())[:15]


def _peer_index(cmd: skel.CmdArgs) -> int:
    """The ifindex (in this namespace) of the veth peer of CNI_IFNAME, 0 if none."""
    from pycni.netlink import Netlink

    fd = netns.open_netns(cmd.netns)
    try:
        with Netlink(netns_fd=fd) as nl:
            link = nl.link(cmd.ifname)
    finally:
        os.close(fd)
    if link is None or link.kind != "veth":
        return 0
    return link.peer_index


def host_veth(nl: Netlink, cmd: skel.CmdArgs, prev: Result) -> Link:
    """The host end of the container's veth, which prevResult must list (no sandbox)."""
    index = _peer_index(cmd)
    if not index:
        raise errors.InvalidConfig(
            f"container interface {cmd.ifname} has no veth peer",
            "chain bandwidth after a plugin that creates a veth pair (bridge, ptp)",
        )
    link = nl.link_by_index(index)
    if link is None:
        raise errors.InvalidConfig(f"veth peer with index {index} is not in host ns")
    if not any(i.name == link.name and not i.sandbox for i in prev.interfaces):
        raise errors.InvalidConfig(
            "no veth peer of container interface found in host ns",
            f"prevResult does not list {link.name}",
        )
    return link


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = BandwidthConf(cmd.conf)
    if c.is_zero:
        if cmd.conf.get("prevResult") is None:
            return Result(cmd.cni_version)
        return parse_result(cmd.conf["prevResult"])
    prev = chained_prev_result(cmd.conf, WHERE)
    from pycni import tc
    from pycni.netlink import Netlink

    with Netlink() as nl:
        veth = host_veth(nl, cmd, prev)
        ifb = ifb_name(c.name, cmd.container_id)
        done: list[str] = []
        # what the current step does, and the kernel module it needs
        doing, module = f"add a tbf qdisc to {veth.name}", "sch_tbf"
        try:
            if c.ingress_rate:
                tc.add_tbf(nl, veth.index, c.ingress_rate, c.ingress_burst)
                done.append("tbf")
            if c.egress_rate:
                doing, module = f"create ifb device {ifb}", "ifb"
                nl.add_link(ifb, "ifb", mtu=veth.mtu, txqlen=0, up=True)
                done.append("ifb")
                ifb_link = nl.link(ifb)
                if ifb_link is None:
                    raise errors.CniError(f"ifb device {ifb} vanished after its creation")
                doing, module = f"add an ingress qdisc to {veth.name}", "sch_ingress"
                tc.add_ingress(nl, veth.index)
                done.append("ingress")
                doing = f"redirect {veth.name}'s ingress to {ifb}"
                module = "cls_u32 and act_mirred"
                tc.add_redirect(nl, veth.index, ifb_link.index)
                doing, module = f"add a tbf qdisc to {ifb}", "sch_tbf"
                tc.add_tbf(nl, ifb_link.index, c.egress_rate, c.egress_burst)
                prev.interfaces.append(Interface(ifb, ifb_link.mac))
        except BaseException as exc:
            # Undo only what this call made (an ifb of the same name may be another's).
            if "ingress" in done:
                tc.del_qdisc(nl, veth.index, tc.TC_H_INGRESS)
            if "ifb" in done:
                ifb_link = nl.link(ifb)
                if ifb_link is not None:
                    nl.del_link(ifb_link.index)
            if "tbf" in done:
                tc.del_qdisc(nl, veth.index, tc.TC_H_ROOT)
            if isinstance(exc, OSError):
                raise _add_error(exc, doing, module) from None
            raise
    return prev


def _add_error(exc: OSError, doing: str, module: str) -> errors.CniError:
    from pycni import netlink

    # A link kind the kernel lacks is EOPNOTSUPP ("Unknown device type"), a qdisc,
    # classifier or action kind ENOENT with an extended ack saying so.
    if isinstance(exc, netlink.NetlinkError) and (
        exc.errno == 95 or (exc.errno == 2 and "unknown" in exc.kernel_msg.lower())
    ):
        return errors.InvalidConfig(
            f"failed to {doing}: this kernel has no support for it ({exc.kernel_msg or exc.strerror})",
            f"load the kernel module {module} (modprobe), or remove the bandwidth limits",
        )
    if isinstance(exc, netlink.LinkExists):
        return errors.CniError(
            f"failed to {doing}: {exc.strerror}",
            "the container already has bandwidth limits (was ADD called twice?)",
        )
    from pycni import netsetup

    return netsetup.kernel_error(exc, doing)


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = BandwidthConf(cmd.conf, for_del=True)
    from pycni import tc
    from pycni.netlink import Netlink

    with Netlink() as nl:
        ifb = nl.link(ifb_name(c.name, cmd.container_id))
        if ifb is not None and ifb.kind == "ifb":
            nl.del_link(ifb.index)
        # The veth's own qdiscs: only while the container (and so the veth) still exists.
        if not cmd.netns or not cmd.ifname:
            return
        try:
            index = _peer_index(cmd)
        except errors.CniError:
            return  # the netns is gone: so is the veth, with its qdiscs
        veth = nl.link_by_index(index) if index else None
        if veth is None:
            return
        for q in tc.qdiscs(nl, veth.index):
            if q.kind == "tbf" and q.handle == tc.HANDLE_TBF and q.parent == tc.TC_H_ROOT:
                tc.del_qdisc(nl, veth.index, tc.TC_H_ROOT)
            elif q.kind == "ingress" and q.parent == tc.TC_H_INGRESS:
                tc.del_qdisc(nl, veth.index, tc.TC_H_INGRESS)


def _check_tbf(nl: Netlink, index: int, rate: int, burst: int, what: str) -> None:
    from pycni import tc

    want_rate, want_buffer, want_limit = tc.tbf_params(rate, burst)
    tbfs = [q for q in tc.qdiscs(nl, index) if q.kind == "tbf" and q.parent == tc.TC_H_ROOT]
    if not tbfs:
        raise errors.CniError(f"{WHERE} CHECK failed: no tbf qdisc on {what}")
    q = tbfs[0]
    if q.rate != want_rate:
        raise errors.CniError(
            f"{WHERE} CHECK failed: rate doesn't match on {what}",
            f"{q.rate * 8} bit/s, expected {want_rate * 8}",
        )
    if q.limit != want_limit:
        raise errors.CniError(
            f"{WHERE} CHECK failed: limit doesn't match on {what}",
            f"{q.limit} bytes, expected {want_limit}",
        )
    if q.buffer != want_buffer:
        raise errors.CniError(
            f"{WHERE} CHECK failed: buffer doesn't match on {what}",
            f"{q.buffer} ticks, expected {want_buffer}",
        )


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = BandwidthConf(cmd.conf)
    prev = chained_prev_result(cmd.conf, WHERE)
    from pycni import tc
    from pycni.netlink import Netlink

    with Netlink() as nl:
        veth = host_veth(nl, cmd, prev)
        if c.is_zero:
            return
        if c.ingress_rate:
            _check_tbf(nl, veth.index, c.ingress_rate, c.ingress_burst, veth.name)
        if c.egress_rate:
            name = ifb_name(c.name, cmd.container_id)
            ifb = nl.link(name)
            if ifb is None:
                raise errors.CniError(f"{WHERE} CHECK failed: ifb device {name} is missing")
            if not any(q.kind == "ingress" for q in tc.qdiscs(nl, veth.index)):
                raise errors.CniError(
                    f"{WHERE} CHECK failed: no ingress qdisc on {veth.name} redirecting to {name}"
                )
            _check_tbf(nl, ifb.index, c.egress_rate, c.egress_burst, name)


VERBS = skel.Verbs(about="pycni bandwidth plugin", add=cmd_add, delete=cmd_del, check=cmd_check)


def main() -> None:
    skel.main(VERBS)
