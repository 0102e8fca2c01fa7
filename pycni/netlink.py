"""A small rtnetlink client: links, addresses, routes and bridge ports.

Why not pyroute2 here: this module sits on the entry path of every plugin process,
and pyroute2 0.9 costs ~250 ms of imports on our CI machines (it pulls in asyncio,
multiprocessing and its whole NDB), several times the reference Go plugin's entire
ADD. What a CNI plugin needs from netlink is a dozen message types, so they are
spelled out here with `_socket` and `struct` only (stdlib, ~1 ms). The test suite
reads kernel state back through pyroute2 and `ip -j`, so this code is checked by
independent implementations.

Kernel quirks live here: interrupted dumps (NLM_F_DUMP_INTR) are retried, extended
acks give the kernel's own error text, and errors become a few exceptions with
names (`LinkExists`, `NotFound`, ...).
"""

from __future__ import annotations

import _socket
import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Iterator

    IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AF_UNSPEC, AF_INET, AF_BRIDGE, AF_INET6, AF_NETLINK = 0, 2, 7, 10, 16
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34

NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_DUMP = 0x300
NLM_F_ACK_TLVS = 0x200
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000

IFF_UP, IFF_PROMISC, IFF_ALLMULTI, IFF_LOWER_UP = 0x1, 0x100, 0x200, 0x10000

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK = 1, 3, 4, 5
IFLA_MASTER, IFLA_PROTINFO, IFLA_OPERSTATE, IFLA_LINKINFO = 10, 12, 16, 18
IFLA_TXQLEN, IFLA_AF_SPEC, IFLA_NET_NS_FD, IFLA_LINK_NETNSID = 13, 26, 28, 37
IFLA_MIN_MTU, IFLA_MAX_MTU = 50, 51
IFLA_IFALIAS = 20
IFLA_VRF_TABLE = 1  # in IFLA_INFO_DATA of a vrf link
# IFLA_INFO_DATA of the links that sit on a parent ("master") link
IFLA_MACVLAN_MODE, IFLA_MACVLAN_BC_QUEUE_LEN = 1, 7  # u32 each
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
IFLA_IPVLAN_MODE = 1  # u16
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
IFLA_VLAN_ID = 1  # u16
EOPNOTSUPP = 95  # RTM_NEWLINK of a kind the kernel has no module for ("Unknown device type")
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND = 1, 2, 4
VETH_INFO_PEER = 1
IFLA_BR_VLAN_FILTERING = 7
IFLA_BRPORT_MODE, IFLA_BRPORT_LEARNING, IFLA_BRPORT_ISOLATED = 4, 8, 33
IFLA_BRIDGE_FLAGS, IFLA_BRIDGE_VLAN_INFO = 0, 2
BRIDGE_FLAGS_SELF = 2
BRIDGE_VLAN_INFO_PVID, BRIDGE_VLAN_INFO_UNTAGGED = 0x2, 0x4
RTEXT_FILTER_BRVLAN = 0x2
IFLA_EXT_MASK = 29
IFLA_INET_CONF = 1  # in IFLA_AF_SPEC / AF_INET: {IPV4_DEVCONF_*: u32}
IPV4_DEVCONF_ARP_NOTIFY = 22
IFLA_INET6_CONF = 2  # in IFLA_AF_SPEC / AF_INET6: s32[DEVCONF_*]
DEVCONF_ACCEPT_RA = 3
RTM_NEWNETCONF, RTM_GETNETCONF = 80, 82
NETCONFA_IFINDEX, NETCONFA_FORWARDING = 1, 2
NETCONFA_IFINDEX_ALL = -1

IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
IFA_F_NODAD, IFA_F_DADFAILED, IFA_F_TENTATIVE, IFA_F_PERMANENT = 0x02, 0x08, 0x40, 0x80

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 4, 5, 6, 7
RTA_METRICS, RTA_TABLE = 8, 15
RTAX_MTU, RTAX_ADVMSS = 2, 8
RT_TABLE_MAIN = 254
RTPROT_KERNEL, RTPROT_BOOT, RTPROT_STATIC = 2, 3, 4
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
RTN_UNICAST = 1
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_TABLE, FRA_OIFNAME = 1, 2, 3, 6, 15, 17
FR_ACT_TO_TBL = 1

_HDR = struct.Struct("=IHHII")
_ATTR = struct.Struct("=HH")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_FIBRULE = struct.Struct("=BBBBBBBBI")


class NetlinkError(OSError):
    """A request the kernel refused; `errno` is the kernel's, `msg` its extended ack."""

    def __init__(self, err: int, what: str, kernel_msg: str = "") -> None:
        text = os.strerror(err)
        if kernel_msg:
            text = f"{text} ({kernel_msg})"
        super().__init__(err, f"{what}: {text}")
        self.what = what
        self.kernel_msg = kernel_msg


class LinkExists(NetlinkError):
    """EEXIST: a link, address or route with that identity is already there."""


class NotFound(NetlinkError):
    """ENODEV / ENOENT / ESRCH / EADDRNOTAVAIL: the object is not there."""


class Busy(NetlinkError):
    """EBUSY."""


_NOT_FOUND = (19, 2, 3, 99)  # ENODEV, ENOENT, ESRCH, EADDRNOTAVAIL


def _error_for(err: int, what: str, kernel_msg: str) -> NetlinkError:
    if err == 17:
        return LinkExists(err, what, kernel_msg)
    if err in _NOT_FOUND:
        return NotFound(err, what, kernel_msg)
    if err == 16:
        return Busy(err, what, kernel_msg)
    return NetlinkError(err, what, kernel_msg)


def _attr(kind: int, payload: bytes) -> bytes:
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length & 3)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _u8(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=B", value))


def _u16(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=H", value))


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


# Public names of the attribute encoders, for the other kernel-edge modules that build
# rtnetlink messages on this client (pycni.tc).
nla = _attr
nla_nested = _nested
nla_u32 = _u32
nla_u16 = _u16
nla_str = _str


def parse_attrs(data: bytes | memoryview, offset: int = 0) -> dict[int, bytes]:
    """rtattrs -> {type: payload}; the nested flag is masked off."""
    out: dict[int, bytes] = {}
    end = len(data)
    while offset + 4 <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < 4:
            break
        out[kind & 0x7FFF] = bytes(data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return out


def _mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"invalid MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def format_ip(raw: bytes) -> str:
    """str(ipaddress.ip_address(raw)) without importing ipaddress (~3 ms with functools
    and collections, more than the loopback plugin's whole verb): inet_ntop prints the
    same text (RFC 5952: lowercase, the first longest run of zero groups compressed, a
    single zero group never), except that glibc prints an IPv6 address with an
    embedded IPv4 one (::ffff:a.b.c.d, ::a.b.c.d) in dotted form, which ipaddress
    does not: those few go through ipaddress."""
    if len(raw) == 4:
        return _socket.inet_ntop(AF_INET, raw)
    text = _socket.inet_ntop(AF_INET6, raw)
    if "." in text:
        import ipaddress

        return str(ipaddress.IPv6Address(raw))
    return text


class Link:
    """One RTM_NEWLINK record."""

    __slots__ = (
        "alias",
        "flags",
        "index",
        "ipv6_accept_ra",
        "kind",
        "link_netnsid",
        "mac",
        "master",
        "max_mtu",
        "min_mtu",
        "mtu",
        "name",
        "operstate",
        "peer_index",
        "slave_kind",
        "txqlen",
    )

    def __init__(self, index: int, flags: int, attrs: dict[int, bytes]) -> None:
        self.index = index
        self.flags = flags
        #: net.ipv6.conf.<name>.accept_ra as the kernel reports it with the link
        #: (None without IPv6 on it): read without /proc/sys
        self.ipv6_accept_ra: int | None = None
        if IFLA_AF_SPEC in attrs:
            inet6 = parse_attrs(attrs[IFLA_AF_SPEC]).get(AF_INET6)
            conf = parse_attrs(inet6).get(IFLA_INET6_CONF) if inet6 is not None else None
            if conf is not None and len(conf) >= 4 * (DEVCONF_ACCEPT_RA + 1):
                self.ipv6_accept_ra = struct.unpack_from("=i", conf, 4 * DEVCONF_ACCEPT_RA)[0]
        self.name = attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode()
        self.mac = format_mac(attrs[IFLA_ADDRESS]) if IFLA_ADDRESS in attrs else ""
        #: the link's ifalias (`ip link set DEV alias TEXT`), "" when unset
        self.alias = attrs.get(IFLA_IFALIAS, b"").rstrip(b"\0").decode(errors="replace")
        self.mtu = struct.unpack("=I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0
        self.master = struct.unpack("=I", attrs[IFLA_MASTER])[0] if IFLA_MASTER in attrs else 0
        self.txqlen = struct.unpack("=I", attrs[IFLA_TXQLEN])[0] if IFLA_TXQLEN in attrs else 0
        #: the MTU range the device accepts (0: the kernel did not say)
        self.min_mtu = struct.unpack("=I", attrs[IFLA_MIN_MTU])[0] if IFLA_MIN_MTU in attrs else 0
        self.max_mtu = struct.unpack("=I", attrs[IFLA_MAX_MTU])[0] if IFLA_MAX_MTU in attrs else 0
        self.operstate = attrs[IFLA_OPERSTATE][0] if IFLA_OPERSTATE in attrs else 0
        # For a veth, IFLA_LINK is the peer's ifindex (in the peer's namespace).
        self.peer_index = struct.unpack("=I", attrs[IFLA_LINK])[0] if IFLA_LINK in attrs else 0
        self.link_netnsid = (
            struct.unpack("=i", attrs[IFLA_LINK_NETNSID])[0] if IFLA_LINK_NETNSID in attrs else None
        )
        info = parse_attrs(attrs.get(IFLA_LINKINFO, b""))
        self.kind = info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
        self.slave_kind = info.get(IFLA_INFO_SLAVE_KIND, b"").rstrip(b"\0").decode()

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def promisc(self) -> bool:
        return bool(self.flags & IFF_PROMISC)

    @property
    def allmulti(self) -> bool:
        return bool(self.flags & IFF_ALLMULTI)

    def __repr__(self) -> str:
        return f"Link({self.index}, {self.name!r}, kind={self.kind!r}, master={self.master})"


class Addr:
    __slots__ = ("flags", "index", "interface", "scope")

    def __init__(self, index: int, interface: IPInterface, flags: int, scope: int) -> None:
        self.index = index
        self.interface = interface
        self.flags = flags
        self.scope = scope

    @property
    def family(self) -> int:
        return self.interface.version

    def __repr__(self) -> str:
        return f"Addr({self.index}, {self.interface})"


class RouteEntry:
    __slots__ = (
        "advmss",
        "dst",
        "family",
        "gateway",
        "mtu",
        "oif",
        "prefsrc",
        "priority",
        "protocol",
        "scope",
        "table",
        "type",
    )

    def __init__(
        self, family: int, dst: IPNetwork, hdr: tuple[int, ...], attrs: dict[int, bytes]
    ) -> None:
        self.family = family
        self.dst = dst
        self.table = struct.unpack("=I", attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else hdr[4]
        self.protocol = hdr[5]
        self.scope = hdr[6]
        self.type = hdr[7]
        self.oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0
        self.priority = struct.unpack("=I", attrs[RTA_PRIORITY])[0] if RTA_PRIORITY in attrs else 0
        import ipaddress  # not on the loopback plugin's path (see format_ip)

        self.gateway = ipaddress.ip_address(attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
        #: the source address hint (`src` in `ip route`)
        self.prefsrc = ipaddress.ip_address(attrs[RTA_PREFSRC]) if RTA_PREFSRC in attrs else None
        metrics = parse_attrs(attrs.get(RTA_METRICS, b""))
        self.mtu = struct.unpack("=I", metrics[RTAX_MTU])[0] if RTAX_MTU in metrics else 0
        self.advmss = struct.unpack("=I", metrics[RTAX_ADVMSS])[0] if RTAX_ADVMSS in metrics else 0

    def __repr__(self) -> str:
        return f"RouteEntry({self.dst} via {self.gateway} dev {self.oif} table {self.table})"


class Netlink:
    """One rtnetlink socket, bound to the network namespace it was created in.

    `Netlink()` talks to the current namespace; `Netlink(netns_fd=fd)` creates its
    socket inside another one (a socket stays in the namespace it was made in, so the
    thread switches in, opens it and switches straight back).
    """

    def __init__(self, netns_fd: int | None = None) -> None:
        if netns_fd is None:
            self.sock = self._open()
        else:
            from pycni import netns

            with netns.entered(netns_fd):
                self.sock = self._open()
        self.seq = 0

    @staticmethod
    def _open() -> _socket.socket:
        sock = _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        except OSError:
            pass  # older kernels: plain errnos, unfiltered dumps (we filter again below)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        return sock

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------

    def _send(self, msg_type: int, flags: int, body: bytes) -> int:
        self.seq += 1
        self.sock.send(
            _HDR.pack(_HDR.size + len(body), msg_type, flags | NLM_F_REQUEST, self.seq, 0) + body
        )
        return self.seq

    def request(self, msg_type: int, flags: int, body: bytes, what: str) -> None:
        """Send one request and wait for its ack; raise the kernel's error."""
        seq = self._send(msg_type, flags | NLM_F_ACK, body)
        for mtype, _mflags, _payload in self._recv(seq, what):
            if mtype == NLMSG_ERROR:
                return

    def dump(self, msg_type: int, body: bytes, what: str) -> Iterator[tuple[int, bytes]]:
        """A dump request; retried when the kernel says it was interrupted."""
        for _attempt in range(5):
            seq = self._send(msg_type, NLM_F_DUMP, body)
            records: list[tuple[int, bytes]] = []
            interrupted = False
            for mtype, mflags, payload in self._recv(seq, what):
                if mflags & NLM_F_DUMP_INTR:
                    interrupted = True
                if mtype not in (NLMSG_DONE, NLMSG_ERROR):
                    records.append((mtype, payload))
            if not interrupted:
                return iter(records)
        return iter(records)

    def _recv(self, seq: int, what: str) -> Iterator[tuple[int, int, bytes]]:
        while True:
            data = self.sock.recv(1 << 20)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, mtype, mflags, mseq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    return
                payload = data[offset + _HDR.size : offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue  # a late answer to an earlier request
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    if err:
                        kernel_msg = ""
                        if mflags & NLM_F_ACK_TLVS:
                            # The request we sent is echoed first (only its header when
                            # NLM_F_CAPPED is set); the TLVs with the kernel's text follow.
                            orig_len = (
                                16 if mflags & 0x100 else struct.unpack_from("=I", payload, 4)[0]
                            )
                            tlv = parse_attrs(payload, 4 + ((orig_len + 3) & ~3))
                            kernel_msg = (
                                tlv.get(NLMSGERR_ATTR_MSG, b"")
                                .rstrip(b"\0")
                                .decode(errors="replace")
                            )
                        raise _error_for(err, what, kernel_msg)
                    yield mtype, mflags, payload
                    return
                yield mtype, mflags, payload
                if mtype == NLMSG_DONE:
                    return
                if not mflags & NLM_F_MULTI:
                    return

    # -- links ----------------------------------------------------------------------

    def links(self) -> list[Link]:
        body = _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0)
        return [
            Link(*_parse_ifinfo(p))
            for t, p in self.dump(RTM_GETLINK, body, "list links")
            if t == RTM_NEWLINK
        ]

    def link(self, name: str) -> Link | None:
        """The link called `name`, or None."""
        body = _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + _str(IFLA_IFNAME, name)
        seq = self._send(RTM_GETLINK, 0, body)
        try:
            for mtype, _f, payload in self._recv(seq, f"get link {name}"):
                if mtype == RTM_NEWLINK:
                    return Link(*_parse_ifinfo(payload))
        except NotFound:
            return None
        return None

    def link_by_index(self, index: int) -> Link | None:
        body = _IFINFO.pack(AF_UNSPEC, 0, index, 0, 0)
        seq = self._send(RTM_GETLINK, 0, body)
        try:
            for mtype, _f, payload in self._recv(seq, f"get link {index}"):
                if mtype == RTM_NEWLINK:
                    return Link(*_parse_ifinfo(payload))
        except NotFound:
            return None
        return None

    def add_bridge(
        self, name: str, mtu: int = 0, mac: str = "", vlan_filtering: bool = False
    ) -> None:
        attrs = [_str(IFLA_IFNAME, name)]
        if mtu:
            attrs.append(_u32(IFLA_MTU, mtu))
        if mac:
            attrs.append(_attr(IFLA_ADDRESS, _mac_bytes(mac)))
        info = [_str(IFLA_INFO_KIND, "bridge")]
        if vlan_filtering:
            info.append(_nested(IFLA_INFO_DATA, _u8(IFLA_BR_VLAN_FILTERING, 1)))
        attrs.append(_nested(IFLA_LINKINFO, *info))
        body = _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + b"".join(attrs)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create bridge {name}")

    def set_bridge_vlan_filtering(self, index: int, on: bool) -> None:
        info = _nested(
            IFLA_LINKINFO,
            _str(IFLA_INFO_KIND, "bridge"),
            _nested(IFLA_INFO_DATA, _u8(IFLA_BR_VLAN_FILTERING, int(on))),
        )
        body = _IFINFO.pack(AF_UNSPEC, 0, index, 0, 0) + info
        self.request(RTM_NEWLINK, 0, body, f"set vlan_filtering on {index}")

    def add_veth(
        self,
        name: str,
        peer_name: str,
        peer_netns_fd: int | None = None,
        mtu: int = 0,
        mac: str = "",
        peer_mac: str = "",
        up: bool = False,
    ) -> None:
        """Create a veth pair; the peer is created directly inside `peer_netns_fd`
        (moving a link between namespaces afterwards costs ~10x more)."""
        peer = [_str(IFLA_IFNAME, peer_name)]
        if mtu:
            peer.append(_u32(IFLA_MTU, mtu))
        if peer_mac:
            peer.append(_attr(IFLA_ADDRESS, _mac_bytes(peer_mac)))
        if peer_netns_fd is not None:
            peer.append(_u32(IFLA_NET_NS_FD, peer_netns_fd))
        peer_msg = _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + b"".join(peer)
        attrs = [_str(IFLA_IFNAME, name)]
        if mtu:
            attrs.append(_u32(IFLA_MTU, mtu))
        if mac:
            attrs.append(_attr(IFLA_ADDRESS, _mac_bytes(mac)))
        attrs.append(
            _nested(
                IFLA_LINKINFO,
                _str(IFLA_INFO_KIND, "veth"),
                _nested(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_msg)),
            )
        )
        flags = IFF_UP if up else 0
        body = _IFINFO.pack(AF_UNSPEC, 0, 0, flags, flags) + b"".join(attrs)
        self.request(
            RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create veth {name} (peer {peer_name})"
        )

    def set_link(
        self,
        index: int,
        up: bool | None = None,
        master: int | None = None,
        mtu: int = 0,
        mac: str = "",
        promisc: bool | None = None,
        name: str = "",
        allmulti: bool | None = None,
        txqlen: int | None = None,
        alias: str | None = None,
    ) -> None:
        flags = change = 0
        if up is not None:
            change |= IFF_UP
            flags |= IFF_UP if up else 0
        if promisc is not None:
            change |= IFF_PROMISC
            flags |= IFF_PROMISC if promisc else 0
        if allmulti is not None:
            change |= IFF_ALLMULTI
            flags |= IFF_ALLMULTI if allmulti else 0
        attrs = []
        if master is not None:
            attrs.append(_u32(IFLA_MASTER, master))
        if mtu:
            attrs.append(_u32(IFLA_MTU, mtu))
        if mac:
            attrs.append(_attr(IFLA_ADDRESS, _mac_bytes(mac)))
        if name:
            attrs.append(_str(IFLA_IFNAME, name))
        if txqlen is not None:
            attrs.append(_u32(IFLA_TXQLEN, txqlen))
        if alias is not None:
            attrs.append(_str(IFLA_IFALIAS, alias))
        body = _IFINFO.pack(AF_UNSPEC, 0, index, flags, change) + b"".join(attrs)
        self.request(RTM_NEWLINK, 0, body, f"set link {index}")

    def forwarding(self, family: int) -> int | None:
        """net.ipv4.ip_forward / net.ipv6.conf.all.forwarding of this namespace, read
        through netlink (RTM_GETNETCONF), or None when the kernel does not say."""
        body = struct.pack("=Bxxx", family) + struct.pack(
            "=HHi", 8, NETCONFA_IFINDEX, NETCONFA_IFINDEX_ALL
        )
        seq = self._send(RTM_GETNETCONF, 0, body)
        value = None
        try:
            for mtype, _f, payload in self._recv(seq, "get forwarding"):
                if mtype == RTM_NEWNETCONF:
                    raw = parse_attrs(payload, 4).get(NETCONFA_FORWARDING)
                    if raw is not None and len(raw) >= 4:
                        value = struct.unpack_from("=i", raw)[0]
        except NetlinkError:
            return None
        return value

    def set_ipv4_conf(self, index: int, conf: dict[int, int]) -> None:
        """Per-interface IPv4 sysctls (net.ipv4.conf.<if>.*) in one request, without
        /proc/sys: the first access to a new namespace's sysctl tree costs 1-3 ms, and
        more the more namespaces the node has."""
        values = b"".join(_u32(key, value) for key, value in sorted(conf.items()))
        spec = _nested(IFLA_AF_SPEC, _nested(AF_INET, _nested(IFLA_INET_CONF, values)))
        body = _IFINFO.pack(AF_UNSPEC, 0, index, 0, 0) + spec
        self.request(RTM_NEWLINK, 0, body, f"set IPv4 settings of link {index}")

    def set_bridge_port(
        self,
        index: int,
        hairpin: bool | None = None,
        isolated: bool | None = None,
        learning: bool | None = None,
    ) -> None:
        """Per-port bridge settings (IFLA_PROTINFO on an AF_BRIDGE RTM_SETLINK)."""
        attrs = []
        if hairpin is not None:
            attrs.append(_u8(IFLA_BRPORT_MODE, int(hairpin)))
        if isolated is not None:
            attrs.append(_u8(IFLA_BRPORT_ISOLATED, int(isolated)))
        if learning is not None:
            attrs.append(_u8(IFLA_BRPORT_LEARNING, int(learning)))
        if not attrs:
            return
        body = _IFINFO.pack(AF_BRIDGE, 0, index, 0, 0) + _nested(IFLA_PROTINFO, *attrs)
        self.request(RTM_SETLINK, 0, body, f"set bridge port {index}")

    def bridge_port_info(self, index: int) -> dict[int, bytes]:
        """IFLA_PROTINFO of a bridge port (IFLA_BRPORT_* -> raw value)."""
        body = _IFINFO.pack(AF_BRIDGE, 0, 0, 0, 0)
        for t, payload in self.dump(RTM_GETLINK, body, "list bridge ports"):
            if t != RTM_NEWLINK:
                continue
            idx, _flags, attrs = _parse_ifinfo(payload)
            if idx == index:
                return parse_attrs(attrs.get(IFLA_PROTINFO, b""))
        return {}

    def bridge_vlan_add(
        self, index: int, vid: int, pvid: bool = False, untagged: bool = False, self_: bool = False
    ) -> None:
        flags = (BRIDGE_VLAN_INFO_PVID if pvid else 0) | (
            BRIDGE_VLAN_INFO_UNTAGGED if untagged else 0
        )
        spec = []
        if self_:
            spec.append(_u16(IFLA_BRIDGE_FLAGS, BRIDGE_FLAGS_SELF))
        spec.append(_attr(IFLA_BRIDGE_VLAN_INFO, struct.pack("=HH", flags, vid)))
        body = _IFINFO.pack(AF_BRIDGE, 0, index, 0, 0) + _nested(IFLA_AF_SPEC, *spec)
        self.request(RTM_SETLINK, 0, body, f"add vlan {vid} on {index}")

    def bridge_vlans(self, index: int) -> list[tuple[int, int]]:
        """(vid, flags) of the VLANs configured on a bridge port."""
        body = _IFINFO.pack(AF_BRIDGE, 0, 0, 0, 0) + _u32(IFLA_EXT_MASK, RTEXT_FILTER_BRVLAN)
        out = []
        for t, payload in self.dump(RTM_GETLINK, body, "list bridge vlans"):
            idx, _flags, attrs = _parse_ifinfo(payload)
            if t != RTM_NEWLINK or idx != index:
                continue
            data = attrs.get(IFLA_AF_SPEC, b"")
            offset = 0
            while offset + 4 <= len(data):
                length, kind = _ATTR.unpack_from(data, offset)
                if length < 4:
                    break
                if kind & 0x7FFF == IFLA_BRIDGE_VLAN_INFO:
                    flags, vid = struct.unpack_from("=HH", data, offset + 4)
                    out.append((vid, flags))
                offset += (length + 3) & ~3
        return out

    def del_link(self, index: int) -> bool:
        """Delete a link; False when it was already gone."""
        body = _IFINFO.pack(AF_UNSPEC, 0, index, 0, 0)
        try:
            self.request(RTM_DELLINK, 0, body, f"delete link {index}")
        except NotFound:
            return False
        return True

    # -- addresses ------------------------------------------------------------------

    def raw_addrs(
        self, index: int = 0, family: int = AF_UNSPEC
    ) -> list[tuple[int, bytes, int, int, int]]:
        """(ifindex, packed address, prefix length, flags, scope) of each address, in
        the kernel's order."""
        body = _IFADDR.pack(family, 0, 0, 0, index)
        out = []
        for t, payload in self.dump(RTM_GETADDR, body, "list addresses"):
            if t != RTM_NEWADDR:
                continue
            fam, plen, flags, scope, idx = _IFADDR.unpack_from(payload)
            if index and idx != index:
                continue
            attrs = parse_attrs(payload, _IFADDR.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is None or fam not in (AF_INET, AF_INET6):
                continue
            if IFA_FLAGS in attrs:
                flags = struct.unpack("=I", attrs[IFA_FLAGS])[0]
            out.append((idx, raw, plen, flags, scope))
        return out

    def addrs(self, index: int = 0, family: int = AF_UNSPEC) -> list[Addr]:
        import ipaddress

        return [
            Addr(idx, ipaddress.ip_interface((ipaddress.ip_address(raw), plen)), flags, scope)
            for idx, raw, plen, flags, scope in self.raw_addrs(index, family)
        ]

    def add_addr(
        self, index: int, interface: IPInterface, nodad: bool = False, replace: bool = False
    ) -> None:
        family = AF_INET if interface.version == 4 else AF_INET6
        raw = interface.ip.packed
        attrs = [_attr(IFA_LOCAL, raw), _attr(IFA_ADDRESS, raw)]
        if interface.version == 4 and interface.network.prefixlen < 31:
            attrs.append(_attr(IFA_BROADCAST, interface.network.broadcast_address.packed))
        flags = IFA_F_NODAD if nodad else 0
        if flags:
            attrs.append(_u32(IFA_FLAGS, flags))
        body = _IFADDR.pack(
            family, interface.network.prefixlen, flags & 0xFF, RT_SCOPE_UNIVERSE, index
        ) + b"".join(attrs)
        nlflags = NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        self.request(RTM_NEWADDR, nlflags, body, f"add address {interface} on {index}")

    def del_addr(self, index: int, interface: IPInterface) -> bool:
        family = AF_INET if interface.version == 4 else AF_INET6
        body = _IFADDR.pack(family, interface.network.prefixlen, 0, 0, index) + _attr(
            IFA_LOCAL, interface.ip.packed
        )
        try:
            self.request(RTM_DELADDR, 0, body, f"delete address {interface} on {index}")
        except NotFound:
            return False
        return True

    # -- routes ---------------------------------------------------------------------

    def routes(self, family: int = AF_UNSPEC, table: int = RT_TABLE_MAIN) -> list[RouteEntry]:
        import ipaddress

        body = _RTMSG.pack(family, 0, 0, 0, table if table < 256 else 0, 0, 0, 0, 0)
        if table >= 256:
            body += _u32(RTA_TABLE, table)
        out = []
        for t, payload in self.dump(RTM_GETROUTE, body, "list routes"):
            if t != RTM_NEWROUTE:
                continue
            hdr = _RTMSG.unpack_from(payload)
            fam, dst_len = hdr[0], hdr[1]
            if fam not in (AF_INET, AF_INET6):
                continue
            attrs = parse_attrs(payload, _RTMSG.size)
            if RTA_DST in attrs:
                dst = ipaddress.ip_network((ipaddress.ip_address(attrs[RTA_DST]), dst_len))
            else:
                dst = ipaddress.ip_network("0.0.0.0/0" if fam == AF_INET else "::/0")
            entry = RouteEntry(fam, dst, hdr, attrs)
            if table and entry.table != table:
                continue
            out.append(entry)
        return out

    def _route_body(
        self,
        dst: IPNetwork,
        gateway: IPAddress | None,
        oif: int,
        priority: int,
        table: int,
        scope: int | None,
        mtu: int,
        advmss: int,
        protocol: int,
        src: IPAddress | None = None,
    ) -> bytes:
        family = AF_INET if dst.version == 4 else AF_INET6
        if scope is None:
            scope = RT_SCOPE_UNIVERSE if gateway is not None else RT_SCOPE_LINK
        body = _RTMSG.pack(
            family,
            dst.prefixlen,
            0,
            0,
            table if table < 256 else 0,
            protocol,
            scope,
            RTN_UNICAST,
            0,
        )
        attrs = [_u32(RTA_TABLE, table)]
        if dst.prefixlen:
            attrs.append(_attr(RTA_DST, dst.network_address.packed))
        if gateway is not None:
            attrs.append(_attr(RTA_GATEWAY, gateway.packed))
        if oif:
            attrs.append(_u32(RTA_OIF, oif))
        if priority:
            attrs.append(_u32(RTA_PRIORITY, priority))
        if src is not None:
            attrs.append(_attr(RTA_PREFSRC, src.packed))
        metrics = []
        if mtu:
            metrics.append(_u32(RTAX_MTU, mtu))
        if advmss:
            metrics.append(_u32(RTAX_ADVMSS, advmss))
        if metrics:
            attrs.append(_nested(RTA_METRICS, *metrics))
        return body + b"".join(attrs)

    def add_route(
        self,
        dst: IPNetwork,
        gateway: IPAddress | None = None,
        oif: int = 0,
        priority: int = 0,
        table: int = RT_TABLE_MAIN,
        scope: int | None = None,
        mtu: int = 0,
        advmss: int = 0,
        replace: bool = False,
        protocol: int = RTPROT_BOOT,
        src: IPAddress | None = None,
    ) -> None:
        body = self._route_body(
            dst, gateway, oif, priority, table, scope, mtu, advmss, protocol, src
        )
        nlflags = NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        via = f" via {gateway}" if gateway is not None else ""
        self.request(RTM_NEWROUTE, nlflags, body, f"add route {dst}{via}")

    def del_route(
        self,
        dst: IPNetwork,
        gateway: IPAddress | None = None,
        oif: int = 0,
        table: int = RT_TABLE_MAIN,
        priority: int = 0,
        scope: int = RT_SCOPE_UNIVERSE,
        protocol: int = 0,
    ) -> bool:
        """Delete a route; False when there was none. `protocol` (0: any) and `scope`
        (IPv4 matches it exactly) narrow the match, e.g. to the prefix route the kernel
        adds with an address: protocol=RTPROT_KERNEL, scope=RT_SCOPE_LINK."""
        body = self._route_body(dst, gateway, oif, priority, table, scope, 0, 0, protocol)
        try:
            self.request(RTM_DELROUTE, 0, body, f"delete route {dst}")
        except NotFound:
            return False
        return True

    def copy_route(self, r: RouteEntry, table: int) -> None:
        """Add (or replace) route `r` as it is, in another table."""
        self.add_route(
            r.dst, r.gateway, r.oif, r.priority, table, r.scope, r.mtu, r.advmss,
            replace=True, protocol=r.protocol, src=r.prefsrc,
        )  # fmt: skip

    def del_route_entry(self, r: RouteEntry) -> bool:
        """Delete exactly route `r` as listed by `routes()` (any scope, e.g. the kernel's
        link-scope subnet routes); False when it was already gone."""
        body = self._route_body(
            r.dst, r.gateway, r.oif, r.priority, r.table, r.scope, 0, 0, 0, r.prefsrc
        )
        try:
            self.request(RTM_DELROUTE, 0, body, f"delete route {r.dst} table {r.table}")
        except NotFound:
            return False
        return True

    # -- generic links (ifb, vrf, ...) --------------------------------------------

    def add_link(
        self,
        name: str,
        kind: str,
        mtu: int = 0,
        txqlen: int | None = None,
        up: bool = False,
        info_data: bytes = b"",
    ) -> None:
        """Create a link of `kind` (EOPNOTSUPP when the kernel has no such type: the
        caller names the module); `info_data` is the kind's IFLA_INFO_DATA payload."""
        attrs = [_str(IFLA_IFNAME, name)]
        if mtu:
            attrs.append(_u32(IFLA_MTU, mtu))
        if txqlen is not None:
            attrs.append(_u32(IFLA_TXQLEN, txqlen))
        info = [_str(IFLA_INFO_KIND, kind)]
        if info_data:
            info.append(_nested(IFLA_INFO_DATA, info_data))
        attrs.append(_nested(IFLA_LINKINFO, *info))
        flags = IFF_UP if up else 0
        body = _IFINFO.pack(AF_UNSPEC, 0, 0, flags, flags) + b"".join(attrs)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create {kind} {name}")

    def link_info_data(self, index: int) -> dict[int, bytes]:
        """IFLA_INFO_DATA of a link ({} when it has none), e.g. a vrf's table."""
        body = _IFINFO.pack(AF_UNSPEC, 0, index, 0, 0)
        seq = self._send(RTM_GETLINK, 0, body)
        for mtype, _f, payload in self._recv(seq, f"get link {index}"):
            if mtype == RTM_NEWLINK:
                attrs = _parse_ifinfo(payload)[2]
                info = parse_attrs(attrs.get(IFLA_LINKINFO, b""))
                return parse_attrs(info.get(IFLA_INFO_DATA, b""))
        return {}

    def add_sublink(
        self,
        name: str,
        kind: str,
        parent: int = 0,
        netns_fd: int | None = None,
        mtu: int = 0,
        mac: str = "",
        info_data: bytes = b"",
    ) -> None:
        """Create a link of `kind` on the parent link `parent` (an ifindex in this
        socket's namespace; 0 for a kind without one, such as dummy), born inside
        `netns_fd` when given, so it never shows up under `name` in this namespace
        (macvlan, ipvlan, vlan, dummy). EOPNOTSUPP: the kernel has no such kind."""
        attrs = [_str(IFLA_IFNAME, name)]
        if parent:
            attrs.append(_u32(IFLA_LINK, parent))
        if mtu:
            attrs.append(_u32(IFLA_MTU, mtu))
        if mac:
            attrs.append(_attr(IFLA_ADDRESS, _mac_bytes(mac)))
        if netns_fd is not None:
            attrs.append(_u32(IFLA_NET_NS_FD, netns_fd))
        info = [_str(IFLA_INFO_KIND, kind)]
        if info_data:
            info.append(_nested(IFLA_INFO_DATA, info_data))
        attrs.append(_nested(IFLA_LINKINFO, *info))
        body = _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + b"".join(attrs)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create {kind} {name}")

    def default_route_link(self) -> Link | None:
        """The link of this namespace's first default route in the main table (the
        reference plugins' default `master`), or None when there is none."""
        for r in self.routes(AF_UNSPEC, RT_TABLE_MAIN):
            if r.dst.prefixlen == 0 and r.oif:
                return self.link_by_index(r.oif)
        return None

    # -- policy routing rules -----------------------------------------------------

    def rules(self, family: int) -> list[Rule]:
        body = _FIBRULE.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        out = []
        for t, payload in self.dump(RTM_GETRULE, body, "list rules"):
            if t != RTM_NEWRULE:
                continue
            hdr = _FIBRULE.unpack_from(payload)
            if hdr[0] != family:
                continue
            out.append(Rule(hdr, parse_attrs(payload, _FIBRULE.size)))
        return out

    def _rule_body(
        self, table: int, src: IPNetwork | None, priority: int, iif: str, oif: str, family: int
    ) -> bytes:
        body = _FIBRULE.pack(
            family,
            0,
            src.prefixlen if src is not None else 0,
            0,
            table if table < 256 else 0,
            0,
            0,
            FR_ACT_TO_TBL,
            0,
        )
        attrs = [_u32(FRA_TABLE, table)]
        if src is not None:
            attrs.append(_attr(FRA_SRC, src.network_address.packed))
        if priority:
            attrs.append(_u32(FRA_PRIORITY, priority))
        if iif:
            attrs.append(_str(FRA_IIFNAME, iif))
        if oif:
            attrs.append(_str(FRA_OIFNAME, oif))
        return body + b"".join(attrs)

    def add_rule(
        self,
        table: int,
        src: IPNetwork | None = None,
        priority: int = 0,
        iif: str = "",
        oif: str = "",
        family: int = AF_INET,
    ) -> None:
        """`ip rule add [from SRC] [iif X] [oif Y] [priority P] table T`."""
        if src is not None:
            family = AF_INET if src.version == 4 else AF_INET6
        body = self._rule_body(table, src, priority, iif, oif, family)
        self.request(
            RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, body, f"add rule from {src} table {table}"
        )

    def del_rule(self, rule: Rule) -> bool:
        """Delete one rule as listed by `rules()`; False when it was already gone."""
        body = self._rule_body(rule.table, rule.src, rule.priority, rule.iif, rule.oif, rule.family)
        try:
            self.request(RTM_DELRULE, 0, body, f"delete rule {rule}")
        except NotFound:
            return False
        return True


class Rule:
    """One RTM_NEWRULE record (a policy routing rule)."""

    __slots__ = ("action", "family", "iif", "oif", "priority", "src", "table")

    def __init__(self, hdr: tuple[int, ...], attrs: dict[int, bytes]) -> None:
        self.family = hdr[0]
        self.action = hdr[7]
        self.table = struct.unpack("=I", attrs[FRA_TABLE])[0] if FRA_TABLE in attrs else hdr[4]
        self.priority = struct.unpack("=I", attrs[FRA_PRIORITY])[0] if FRA_PRIORITY in attrs else 0
        import ipaddress

        self.src: IPNetwork | None = (
            ipaddress.ip_network((ipaddress.ip_address(attrs[FRA_SRC]), hdr[2]))
            if FRA_SRC in attrs
            else None
        )
        self.iif = attrs.get(FRA_IIFNAME, b"").rstrip(b"\0").decode()
        self.oif = attrs.get(FRA_OIFNAME, b"").rstrip(b"\0").decode()

    def __repr__(self) -> str:
        return f"Rule(from {self.src} table {self.table} prio {self.priority})"


def _parse_ifinfo(payload: bytes) -> tuple[int, int, dict[int, bytes]]:
    _family, _type, index, flags, _change = _IFINFO.unpack_from(payload)
    return index, flags, parse_attrs(payload, _IFINFO.size)


# -- moving links between namespaces (host-device) ------------------------------------
# (a block of its own: other link kinds are added above by other plugins)


def move_link(nl: Netlink, index: int, netns_fd: int, name: str = "") -> None:
    """Move link `index` of `nl`'s namespace into the namespace `netns_fd`, renamed to
    `name` there in the same request (the kernel applies the name after the move; the
    move takes the link down)."""
    attrs = _u32(IFLA_NET_NS_FD, netns_fd)
    if name:
        attrs += _str(IFLA_IFNAME, name)
    body = _IFINFO.pack(AF_UNSPEC, 0, index, 0, 0) + attrs
    nl.request(RTM_NEWLINK, 0, body, f"move link {index} to another namespace")


# -- link notifications (a teardown that returns once the kernel has unregistered) -----

RTNLGRP_LINK = 1
ENOBUFS = 105


class LinkEvents:
    """A socket subscribed to the link notifications (RTNLGRP_LINK) of the namespace it
    is created in: it learns that links are unregistered (RTM_DELLINK), which the kernel
    announces well before a deletion request returns."""

    __slots__ = ("sock",)

    def __init__(self) -> None:
        sock = _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, 1 << (RTNLGRP_LINK - 1)))
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def deleted(self) -> list[int] | None:
        """Indexes of the links announced as deleted in what has arrived so far (never
        waits); None when notifications were lost (the socket overran)."""
        out: list[int] = []
        while True:
            try:
                data = self.sock.recv(1 << 20, _socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == ENOBUFS:
                    return None
                raise
            offset = 0
            while offset + _HDR.size + _IFINFO.size <= len(data):
                length, mtype, _flags, _seq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    break
                if mtype == RTM_DELLINK:
                    out.append(_IFINFO.unpack_from(data, offset + _HDR.size)[2])
                offset += (length + 3) & ~3
