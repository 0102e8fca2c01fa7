"""Traffic control over rtnetlink: the qdiscs and the one filter the bandwidth plugin needs.

Spoken on a `pycni.netlink.Netlink` socket (no `tc` exec, no pyroute2 on the plugin's
path). What is here, in `tc` terms:

    tc qdisc add dev DEV root handle 1: tbf rate R burst B latency 25ms   add_tbf
    tc qdisc add dev DEV ingress   (handle ffff:, parent ffff:fff1)       add_ingress
    tc filter add dev DEV parent ffff: protocol all prio 1 u32 match u32 0 0 \\
        classid 1:1 action mirred egress redirect dev IFB                 add_redirect
    tc qdisc del dev DEV root | ingress                                   del_qdisc
    tc qdisc show dev DEV                                                 qdiscs

The token-bucket parameters are computed as the reference plugin computes them
(`tbf_params`): the kernel keeps `buffer` in psched ticks (read from /proc/net/psched,
as iproute2 does) and `limit` is the bytes a 25 ms queue holds plus the burst, so CHECK
of either plugin accepts the other's qdisc.
"""

from __future__ import annotations

import _socket
import struct

from pycni import netlink
from pycni.netlink import NLM_F_CREATE, NLM_F_EXCL, Netlink, NotFound, nla, nla_nested, nla_str

RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTFILTER = 44
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_RATE64 = 1, 4
TCA_U32_CLASSID, TCA_U32_SEL, TCA_U32_ACT = 1, 5, 7
TCA_ACT_KIND, TCA_ACT_OPTIONS = 1, 2
TCA_MIRRED_PARMS = 2
TCA_EGRESS_REDIR = 1
TC_ACT_STOLEN = 4
TC_U32_TERMINAL = 1
ETH_P_ALL = 0x0003

TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
HANDLE_TBF = 0x00010000  # 1:
HANDLE_INGRESS = 0xFFFF0000  # ffff:

TIME_UNITS_PER_SEC = 1_000_000
LATENCY_MS = 25

_TCMSG = struct.Struct("=BxxxiIII")
# tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate
_RATESPEC = struct.Struct("=BBHhHI")
# tc_u32_sel (one all-zero key follows): flags, offshift, nkeys, pad, offmask, off,
# offoff, hoff, hmask
_U32_SEL = struct.Struct("=BBBxHHhhI")
_U32_KEY = struct.Struct("=IIii")
# tc_mirred: tc_gen (index, capab, action, refcnt, bindcnt), eaction, ifindex
_MIRRED = struct.Struct("=IIiiiiI")


def tick_in_usec() -> float:
    """psched ticks per microsecond, as iproute2's tc_core_init computes it."""
    try:
        with open("/proc/net/psched") as f:
            fields = f.read().split()
        t2us, us2t, clock_res = (int(x, 16) for x in fields[:3])
    except (OSError, ValueError):
        return 1.0
    if clock_res == 1_000_000_000:
        t2us = us2t
    return t2us / us2t * (clock_res / TIME_UNITS_PER_SEC)


def tbf_params(rate_bits: int, burst_bits: int) -> tuple[int, int, int]:
    """(rate in bytes/s, buffer in ticks, limit in bytes) for a rate in bits/s and a burst
    in bits: the same numbers the reference plugin gives the kernel, wrapped to 32 bits
    as its Go conversions wrap them. (containerd asks for a burst of 2^32-1 bits, whose
    bucket time does not fit 32 bits of ticks at common rates; the reference sends the
    wrapped value and its CHECK expects it, so ours does the same.)"""
    rate = rate_bits // 8
    burst = (burst_bits // 8) & 0xFFFFFFFF
    buffer = int(float(int(burst * TIME_UNITS_PER_SEC / rate) & 0xFFFFFFFF) * tick_in_usec())
    latency = TIME_UNITS_PER_SEC * (LATENCY_MS / 1000.0)
    limit = (int(rate * latency / TIME_UNITS_PER_SEC) + burst) & 0xFFFFFFFF
    return rate, buffer & 0xFFFFFFFF, limit


class Qdisc:
    """One RTM_NEWQDISC record; `rate/limit/buffer` are set for a tbf."""

    __slots__ = ("buffer", "handle", "index", "kind", "limit", "parent", "rate")

    def __init__(self, payload: bytes) -> None:
        _family, self.index, self.handle, self.parent, _info = _TCMSG.unpack_from(payload)
        attrs = netlink.parse_attrs(payload, _TCMSG.size)
        self.kind = attrs.get(TCA_KIND, b"").rstrip(b"\0").decode()
        self.rate = self.limit = self.buffer = 0
        if self.kind == "tbf":
            opts = netlink.parse_attrs(attrs.get(TCA_OPTIONS, b""))
            parms = opts.get(TCA_TBF_PARMS, b"")
            if len(parms) >= 2 * _RATESPEC.size + 8:
                self.rate = _RATESPEC.unpack_from(parms)[5]
                self.limit, self.buffer = struct.unpack_from("=II", parms, 2 * _RATESPEC.size)
            if TCA_TBF_RATE64 in opts:
                self.rate = struct.unpack("=Q", opts[TCA_TBF_RATE64])[0]

    def __repr__(self) -> str:
        return f"Qdisc({self.kind} {self.handle:#x} parent {self.parent:#x} dev {self.index})"


def qdiscs(nl: Netlink, index: int = 0) -> list[Qdisc]:
    """The qdiscs of one link (all links with index 0)."""
    body = _TCMSG.pack(0, index, 0, 0, 0)
    out = []
    for t, payload in nl.dump(RTM_GETQDISC, body, "list qdiscs"):
        if t == RTM_NEWQDISC:
            q = Qdisc(payload)
            if not index or q.index == index:
                out.append(q)
    return out


def add_tbf(nl: Netlink, index: int, rate_bits: int, burst_bits: int) -> None:
    """`tc qdisc add dev INDEX root handle 1: tbf ...` (EEXIST when a root qdisc other
    than the default is there)."""
    rate, buffer, limit = tbf_params(rate_bits, burst_bits)
    ratespec = _RATESPEC.pack(0, 0, 0, 0, 0, rate & 0xFFFFFFFF)
    parms = ratespec + _RATESPEC.pack(0, 0, 0, 0, 0, 0) + struct.pack("=III", limit, buffer, 0)
    opts = [nla(TCA_TBF_PARMS, parms)]
    if rate >= 1 << 32:
        opts.append(nla(TCA_TBF_RATE64, struct.pack("=Q", rate)))
    body = (
        _TCMSG.pack(0, index, HANDLE_TBF, TC_H_ROOT, 0)
        + nla_str(TCA_KIND, "tbf")
        + nla_nested(TCA_OPTIONS, *opts)
    )
    nl.request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, body, f"add tbf qdisc on link {index}")


def add_ingress(nl: Netlink, index: int) -> None:
    """`tc qdisc add dev INDEX ingress` (handle ffff:)."""
    body = (
        _TCMSG.pack(0, index, HANDLE_INGRESS, TC_H_INGRESS, 0)
        + nla_str(TCA_KIND, "ingress")
        + nla_nested(TCA_OPTIONS)
    )
    nl.request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, body, f"add ingress qdisc on {index}")


def add_redirect(nl: Netlink, index: int, target_index: int) -> None:
    """Redirect everything arriving at link `index` (its ingress qdisc) to the egress of
    link `target_index`: a match-all u32 filter, prio 1, with a mirred action."""
    sel = _U32_SEL.pack(TC_U32_TERMINAL, 0, 1, 0, 0, 0, 0, 0) + _U32_KEY.pack(0, 0, 0, 0)
    mirred = _MIRRED.pack(0, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR, target_index)
    action = nla_nested(
        1,
        nla_str(TCA_ACT_KIND, "mirred"),
        nla_nested(TCA_ACT_OPTIONS, nla(TCA_MIRRED_PARMS, mirred)),
    )
    opts = nla_nested(
        TCA_OPTIONS,
        nla(TCA_U32_SEL, sel),
        netlink.nla_u32(TCA_U32_CLASSID, HANDLE_TBF | 1),
        nla_nested(TCA_U32_ACT, action),
    )
    info = (1 << 16) | _socket.htons(ETH_P_ALL)  # tcm_info: priority, protocol
    body = _TCMSG.pack(0, index, 0, HANDLE_INGRESS, info) + nla_str(TCA_KIND, "u32") + opts
    nl.request(
        RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, body, f"add redirect filter on link {index}"
    )


def del_qdisc(nl: Netlink, index: int, parent: int) -> bool:
    """Delete the root (TC_H_ROOT) or ingress (TC_H_INGRESS) qdisc of a link, with its
    filters; False when there was none."""
    handle = HANDLE_INGRESS if parent == TC_H_INGRESS else 0
    body = _TCMSG.pack(0, index, handle, parent, 0)
    try:
        nl.request(RTM_DELQDISC, 0, body, f"delete qdisc of link {index}")
    except NotFound:
        return False
    except netlink.NetlinkError as exc:
        if exc.errno == 22:  # EINVAL: only the default qdisc is there
            return False
        raise
    return True
