"""A DHCPv4 client for one interface inside a container's network namespace (stdlib).

Used by the `dhcp daemon` (pycni.ipam.dhcp_daemon), never on a plugin's start-up path.
The wire format (RFC 2131/2132) is a fixed 236-byte BOOTP header, the magic cookie and
type-length-value options; the handful the reference plugin uses are spelled out here.

Sockets: one UDP socket per exchange, created while this thread is inside the
container's namespace (a socket stays in the namespace it was made in), bound to
0.0.0.0:68 and to the interface (SO_BINDTODEVICE). Before the interface has an
address the kernel sends limited broadcasts from 0.0.0.0, and we set the BOOTP
broadcast flag so that the server broadcasts its answers too (an unconfigured
interface cannot receive unicast to an address it does not have yet). Renewals and
releases go unicast to the server from the leased address, as RFC 2131 says, and fall
back to a broadcast when the container has no route to the server. A release is
written whole on a raw IP socket, so that it comes from the leased address even when
the interface does not carry it (an IPAM plugin called alone: a UDP socket would send
from 0.0.0.0, which servers ignore); the reference uses a packet socket for the same.

Nothing here holds a namespace open between exchanges: a container whose namespace
is deleted without DEL is not kept alive by its lease.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import struct
import time

from pycni import netns
from pycni.netlink import Netlink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE = 1, 2, 3, 4, 5, 6, 7
TYPE_NAMES = {
    1: "DISCOVER",
    2: "OFFER",
    3: "REQUEST",
    4: "DECLINE",
    5: "ACK",
    6: "NAK",
    7: "RELEASE",
}
OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_HOST_NAME, OPT_DOMAIN = 1, 3, 6, 12, 15
OPT_STATIC_ROUTES, OPT_REQUESTED_IP, OPT_LEASE_TIME, OPT_MSG_TYPE = 33, 50, 51, 53
OPT_SERVER_ID, OPT_PARAM_LIST, OPT_MAX_SIZE, OPT_T1, OPT_T2 = 54, 55, 57, 58, 59
OPT_VENDOR_CLASS, OPT_CLIENT_ID, OPT_USER_CLASS, OPT_CLASSLESS_ROUTES = 60, 61, 77, 121
OPT_END, OPT_PAD = 255, 0
#: dhcp-options(5) names the reference accepts, besides option numbers
OPTION_NAMES = {
    "dhcp-client-identifier": OPT_CLIENT_ID,
    "subnet-mask": OPT_SUBNET_MASK,
    "routers": OPT_ROUTER,
    "host-name": OPT_HOST_NAME,
    "user-class": OPT_USER_CLASS,
    "vendor-class-identifier": OPT_VENDOR_CLASS,
}
DEFAULT_REQUEST = (OPT_ROUTER, OPT_SUBNET_MASK)
#: the reference's default when the server sends no lease time
DEFAULT_LEASE_TIME = 3600
CLIENT_PORT, SERVER_PORT = 68, 67
BROADCAST_FLAG = 0x8000
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")


class DhcpError(Exception):
    """An exchange failed: no answer in time, a NAK, the interface is gone. `code` is
    the CNI error it amounts to: 11 (try again later), or 3/4 when the namespace or
    the interface the caller named is not there."""

    def __init__(self, msg: str, code: int = 11) -> None:
        super().__init__(msg)
        self.code = code


class Message:
    """One DHCP message: the BOOTP fields we use and the options in arrival order."""

    __slots__ = ("chaddr", "ciaddr", "flags", "op", "options", "siaddr", "xid", "yiaddr")

    def __init__(self) -> None:
        self.op = 1
        self.xid = 0
        self.flags = 0
        self.ciaddr = ipaddress.IPv4Address(0)
        self.yiaddr = ipaddress.IPv4Address(0)
        self.siaddr = ipaddress.IPv4Address(0)
        self.chaddr = b"\0" * 6
        self.options: dict[int, bytes] = {}

    @property
    def msg_type(self) -> int:
        raw = self.options.get(OPT_MSG_TYPE, b"")
        return raw[0] if raw else 0

    def pack(self) -> bytes:
        head = _HEADER.pack(
            self.op, 1, 6, 0, self.xid, 0, self.flags,
            self.ciaddr.packed, self.yiaddr.packed, self.siaddr.packed, b"\0" * 4,
            self.chaddr.ljust(16, b"\0"), b"", b"",
        )  # fmt: skip
        opts = bytearray(MAGIC)
        for code, value in self.options.items():
            for i in range(0, max(len(value), 1), 255):  # RFC 3396: long options split
                chunk = value[i : i + 255]
                opts += bytes((code, len(chunk))) + chunk
        opts.append(OPT_END)
        data = head + bytes(opts)
        return data.ljust(300, b"\0")  # BOOTP minimum; some relays drop shorter ones

    @classmethod
    def unpack(cls, data: bytes) -> Message | None:
        if len(data) < _HEADER.size + 4 or data[_HEADER.size : _HEADER.size + 4] != MAGIC:
            return None
        f = _HEADER.unpack_from(data)
        m = cls()
        m.op, m.xid, m.flags = f[0], f[4], f[6]
        m.ciaddr, m.yiaddr, m.siaddr = (ipaddress.IPv4Address(f[i]) for i in (7, 8, 9))
        m.chaddr = f[11][:6]
        i = _HEADER.size + 4
        while i < len(data):
            code = data[i]
            if code == OPT_END:
                break
            if code == OPT_PAD:
                i += 1
                continue
            if i + 1 >= len(data):
                return None
            size = data[i + 1]
            value = data[i + 2 : i + 2 + size]
            if len(value) != size:
                return None
            m.options[code] = m.options.get(code, b"") + value  # RFC 3396 concatenation
            i += 2 + size
        return m


class Lease:
    """What an ACK granted, with the times (monotonic) to renew, rebind and give up."""

    __slots__ = ("ack", "expire", "interface", "rebind", "renew", "router", "server_id")

    def __init__(self, ack: Message, server_id: ipaddress.IPv4Address) -> None:
        mask = ack.options.get(OPT_SUBNET_MASK)
        if mask is None or len(mask) != 4:
            raise DhcpError("DHCP option Subnet Mask not found in DHCPACK")
        self.ack = ack
        self.server_id = server_id
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{ipaddress.IPv4Address(mask)}").prefixlen
        self.interface = ipaddress.IPv4Interface((ack.yiaddr, prefix))
        routers = ack.options.get(OPT_ROUTER, b"")
        self.router = ipaddress.IPv4Address(routers[:4]) if len(routers) >= 4 else None
        lease = _u32(ack.options.get(OPT_LEASE_TIME), DEFAULT_LEASE_TIME)
        now = time.monotonic()
        self.expire = now + lease
        self.renew = now + _u32(ack.options.get(OPT_T1), lease // 2)
        self.rebind = now + _u32(ack.options.get(OPT_T2), lease * 85 // 100)

    def routes(self) -> list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address | None]]:
        """(destination, gateway or None for on-link), as the reference derives them:
        option 121 when present, else option 33 plus a default route via the router."""
        classless = self.ack.options.get(OPT_CLASSLESS_ROUTES)
        if classless:
            out = []
            i = 0
            while i < len(classless):
                width = classless[i]
                octets = (width + 7) // 8
                if width > 32 or i + 1 + octets + 4 > len(classless):
                    break
                dst = classless[i + 1 : i + 1 + octets].ljust(4, b"\0")
                gw = ipaddress.IPv4Address(classless[i + 1 + octets : i + 5 + octets])
                out.append(
                    (
                        ipaddress.IPv4Network((dst, width), strict=False),
                        None if int(gw) == 0 else gw,
                    )
                )
                i += 5 + octets
            return out
        out2: list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address | None]] = []
        static = self.ack.options.get(OPT_STATIC_ROUTES, b"")
        for i in range(0, len(static) - 7, 8):
            net = ipaddress.IPv4Address(static[i : i + 4])
            first = static[i]
            plen = 8 if first < 128 else 16 if first < 192 else 24  # classful, as the reference
            out2.append(
                (ipaddress.IPv4Network((net, plen), strict=False),
                 ipaddress.IPv4Address(static[i + 4 : i + 8]))
            )  # fmt: skip
        if self.router is not None:
            out2.append((ipaddress.IPv4Network("0.0.0.0/0"), self.router))
        return out2


def _u32(raw: bytes | None, default: int) -> int:
    return struct.unpack("!I", raw)[0] if raw and len(raw) == 4 else default


class Client:
    """Exchanges for one interface in one namespace, identified by `client_id`.

    `attempt` is how long one try waits for an answer (the reference's -timeout);
    tries are resent after 2 s (four fast tries) and then with doubling delays up to
    `resend_max`, until `deadline` seconds have passed (-resendtimeout)."""

    def __init__(self, netns_path: str, ifname: str, client_id: str, options: list[tuple[int, bytes]],
                 attempt: float, resend_max: float, deadline: float, broadcast: bool = True,
                 log: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.netns_path = netns_path
        self.ifname = ifname
        self.client_id = b"\0" + client_id.encode()[:254]
        self.options = options
        self.attempt = attempt
        self.resend_max = resend_max
        self.deadline = deadline
        self.broadcast = broadcast
        self.log = log or (lambda _msg: None)
        self.stopped = False

    # -- the interface and its socket --------------------------------------------------

    def _open(self, raw: bool = False) -> tuple[socket.socket, bytes]:
        """A UDP socket in the container's namespace bound to the interface, and the
        interface's MAC; the interface is brought up first if it is down. `raw`: a raw
        IP socket instead, whose datagrams carry the IP header we write."""
        try:
            fd = netns.open_netns(self.netns_path)
        except Exception as exc:
            # netns.open_netns: UnknownContainer (3) when the path is not there,
            # InvalidEnvironment (4) when it is not a network namespace
            code = getattr(exc, "code", 11)
            msg = str(exc) if code != 11 else f"network namespace {self.netns_path} is gone: {exc}"
            raise DhcpError(msg, code) from None
        try:
            with Netlink(netns_fd=fd) as nl:
                link = nl.link(self.ifname)
                if link is None:
                    raise DhcpError(f"error looking up {self.ifname!r}: no such interface", 4)
                if not link.up:
                    self.log(f"link {self.ifname} down, setting it up")
                    nl.set_link(link.index, up=True)
                mac = bytes.fromhex(link.mac.replace(":", ""))
            with netns.entered(fd):
                if raw:
                    s = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                      socket.IPPROTO_UDP)  # fmt: skip
                else:
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
                if raw:
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
                else:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("0.0.0.0", CLIENT_PORT))
            except BaseException:
                s.close()
                raise
            return s, mac
        except OSError as exc:
            raise DhcpError(f"cannot open a DHCP socket on {self.ifname}: {exc}") from None
        finally:
            os.close(fd)

    def link_exists(self) -> bool:
        try:
            fd = netns.open_netns(self.netns_path)
        except Exception:
            return False
        try:
            with Netlink(netns_fd=fd) as nl:
                return nl.link(self.ifname) is not None
        finally:
            os.close(fd)

    def _message(self, mtype: int, xid: int, mac: bytes, ciaddr: ipaddress.IPv4Address | None = None,
                 extra: list[tuple[int, bytes]] | None = None) -> Message:  # fmt: skip
        m = Message()
        m.xid = xid
        m.chaddr = mac
        m.flags = BROADCAST_FLAG if ciaddr is None else 0  # see the module docstring
        if ciaddr is not None:
            m.ciaddr = ciaddr
        m.options[OPT_MSG_TYPE] = bytes((mtype,))
        m.options[OPT_CLIENT_ID] = self.client_id
        m.options[OPT_MAX_SIZE] = struct.pack("!H", 1500)
        for code, value in extra or []:
            m.options[code] = value
        if mtype in (DISCOVER, REQUEST):
            for code, value in self.options:
                m.options[code] = value
        return m

    # -- one request/answer with resends ------------------------------------------------

    def _exchange(self, s: socket.socket, msg: Message, want: tuple[int, ...], mac: bytes,
                  dest: str, deadline: float) -> Message:  # fmt: skip
        delay, fast = 2.0, 4
        while True:
            if self.stopped:
                raise DhcpError("stopped")
            self._send(s, msg, dest)
            wait_until = min(time.monotonic() + min(self.attempt, delay), deadline)
            answer = self._receive(s, msg.xid, mac, want, wait_until)
            if answer is not None:
                return answer
            if time.monotonic() >= deadline:
                raise DhcpError(
                    f"no DHCP{'/'.join(TYPE_NAMES[w] for w in want)} for "
                    f"DHCP{TYPE_NAMES[msg.msg_type]} on {self.ifname} within {self.deadline:g}s"
                )
            if fast:
                fast -= 1
            else:
                delay = min(delay * 2, self.resend_max)

    def _send(self, s: socket.socket, msg: Message, dest: str) -> None:
        try:
            s.sendto(msg.pack(), (dest, SERVER_PORT))
        except OSError:
            if dest == "255.255.255.255":
                raise
            s.sendto(msg.pack(), ("255.255.255.255", SERVER_PORT))  # no route to the server

    def _receive(self, s: socket.socket, xid: int, mac: bytes, want: tuple[int, ...],
                 until: float) -> Message | None:  # fmt: skip
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(left)
            try:
                data = s.recv(4096)
            except TimeoutError:
                return None
            m = Message.unpack(data)
            if m is None or m.op != 2 or m.xid != xid or m.chaddr != mac:
                continue
            if m.msg_type in want:
                return m

    # -- the verbs the daemon uses ----------------------------------------------------------

    def acquire(self) -> Lease:
        """DISCOVER, OFFER, REQUEST, ACK (a NAK starts over), within the deadline."""
        deadline = time.monotonic() + self.deadline
        s, mac = self._open()
        try:
            while True:
                xid = random.getrandbits(32)
                offer = self._exchange(
                    s, self._message(DISCOVER, xid, mac), (OFFER,), mac, "255.255.255.255", deadline
                )
                server = offer.options.get(OPT_SERVER_ID, b"")
                if len(server) != 4:
                    continue
                req = self._message(
                    REQUEST, xid, mac,
                    extra=[(OPT_REQUESTED_IP, offer.yiaddr.packed), (OPT_SERVER_ID, server)],
                )  # fmt: skip
                ack = self._exchange(s, req, (ACK, NAK), mac, "255.255.255.255", deadline)
                if ack.msg_type == NAK:
                    self.log(f"DHCPNAK for {offer.yiaddr}, starting over")
                    continue
                return Lease(ack, ipaddress.IPv4Address(server))
        finally:
            s.close()

    def renew(self, lease: Lease, until: float) -> Lease:
        """REQUEST from the leased address, unicast to the server (RENEWING)."""
        s, mac = self._open()
        try:
            xid = random.getrandbits(32)
            req = self._message(REQUEST, xid, mac, ciaddr=lease.interface.ip)
            ack = self._exchange(s, req, (ACK, NAK), mac, str(lease.server_id), until)
            if ack.msg_type == NAK:
                raise DhcpError(f"the server refused to renew {lease.interface.ip} (DHCPNAK)")
            return Lease(ack, lease.server_id)
        finally:
            s.close()

    def release(self, lease: Lease) -> None:
        """RELEASE, unicast to the server from the leased address, as RFC 2131 says (a
        server ignores one from 0.0.0.0). An IPAM plugin called alone leaves the address
        off the interface, and a UDP socket then sends from 0.0.0.0; so the datagram is
        written whole on a raw IP socket, as the reference's packet socket does (a UDP
        socket when no raw one can be had). No answer is expected."""
        try:
            s, mac = self._open(raw=True)
        except DhcpError:
            s, mac = self._open()
            raw = False
        else:
            raw = True
        try:
            msg = self._message(
                RELEASE, random.getrandbits(32), mac, ciaddr=lease.interface.ip,
                extra=[(OPT_SERVER_ID, lease.server_id.packed)],
            )  # fmt: skip
            if not raw:
                self._send(s, msg, str(lease.server_id))
                return
            for dest in (lease.server_id, ipaddress.IPv4Address("255.255.255.255")):
                try:
                    s.sendto(_ip_udp(lease.interface.ip, dest, msg.pack()), (str(dest), 0))
                    return
                except OSError:
                    if int(dest) == 0xFFFFFFFF:
                        raise  # no route to the server, and no broadcast either
        finally:
            s.close()


def _ip_udp(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, payload: bytes) -> bytes:
    """IPv4 + UDP headers (client port to server port) for a raw socket: the kernel
    fills in the IP checksum and id; a UDP checksum of 0 means none (RFC 768)."""
    udp = struct.pack("!HHHH", CLIENT_PORT, SERVER_PORT, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                       src.packed, dst.packed) + udp  # fmt: skip


def option_code(name: str) -> int:
    """A dhcp-options(5) name the reference knows, or an option number 0-255."""
    if name in OPTION_NAMES:
        return OPTION_NAMES[name]
    if name.isdigit() and int(name) <= 255:
        return int(name)
    raise ValueError(f"Can not parse option {name!r}")
