"""The DHCP wire format, lease arithmetic and the daemon's flags (pure, no root)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from pycni import dhcp4
from pycni.ipam import dhcp_daemon


def ack(**opts: bytes) -> dhcp4.Message:
    m = dhcp4.Message()
    m.op, m.xid = 2, 7
    m.yiaddr = ipaddress.IPv4Address("10.9.0.5")
    m.options[dhcp4.OPT_MSG_TYPE] = bytes((dhcp4.ACK,))
    m.options[dhcp4.OPT_SUBNET_MASK] = bytes((255, 255, 255, 0))
    for code, value in opts.items():
        m.options[int(code[1:])] = value
    return m


def test_pack_unpack_round_trip_and_long_options() -> None:
    m = ack(o3=bytes((10, 9, 0, 1)), o12=b"x" * 300)
    m.chaddr = bytes.fromhex("020000000001")
    data = m.pack()
    assert len(data) >= 300 and data[236:240] == dhcp4.MAGIC
    back = dhcp4.Message.unpack(data)
    assert back is not None
    assert (back.op, back.xid, back.yiaddr, back.chaddr) == (2, 7, m.yiaddr, m.chaddr)
    assert back.options[12] == b"x" * 300  # split in two on the wire, joined again (RFC 3396)
    assert back.msg_type == dhcp4.ACK
    assert dhcp4.Message.unpack(data[:100]) is None
    assert dhcp4.Message.unpack(data[:236] + b"nope" + data[240:]) is None


def test_lease_times_and_routes() -> None:
    lease = dhcp4.Lease(ack(o3=bytes((10, 9, 0, 1)), o51=struct.pack("!I", 120)),
                        ipaddress.IPv4Address("10.9.0.1"))  # fmt: skip
    assert str(lease.interface) == "10.9.0.5/24" and str(lease.router) == "10.9.0.1"
    assert round(lease.renew - lease.expire) == -60 and round(lease.rebind - lease.expire) == -18
    assert [(str(d), str(g)) for d, g in lease.routes()] == [("0.0.0.0/0", "10.9.0.1")]
    # option 33 (classful) plus the default route
    static = bytes((172, 16, 0, 0, 10, 9, 0, 254))
    lease = dhcp4.Lease(ack(o3=bytes((10, 9, 0, 1)), o33=static), ipaddress.IPv4Address("10.9.0.1"))
    assert [(str(d), str(g)) for d, g in lease.routes()] == [
        ("172.16.0.0/16", "10.9.0.254"), ("0.0.0.0/0", "10.9.0.1")]  # fmt: skip
    # option 121 wins over both; 0.0.0.0 as router means on-link
    classless = bytes((24, 192, 0, 2, 0, 0, 0, 0, 0, 10, 9, 0, 1))
    lease = dhcp4.Lease(
        ack(o3=bytes((10, 9, 0, 1)), o121=classless), ipaddress.IPv4Address("10.9.0.1")
    )
    assert [(str(d), g and str(g)) for d, g in lease.routes()] == [
        ("192.0.2.0/24", None), ("0.0.0.0/0", "10.9.0.1")]  # fmt: skip
    with pytest.raises(dhcp4.DhcpError, match="Subnet Mask"):
        m = ack()
        del m.options[dhcp4.OPT_SUBNET_MASK]
        dhcp4.Lease(m, ipaddress.IPv4Address("10.9.0.1"))


def test_option_names() -> None:
    assert dhcp4.option_code("host-name") == 12 and dhcp4.option_code("121") == 121
    for bad in ("256", "-1", "hostname", ""):
        with pytest.raises(ValueError):
            dhcp4.option_code(bad)


def test_daemon_flags() -> None:
    o = dhcp_daemon.Options(["-socketpath", "/x.sock", "--timeout=1m30s", "-resendmax", "500ms",
                             "-broadcast"])  # fmt: skip
    assert (o.socket_path, o.timeout, o.resend_max, o.broadcast) == ("/x.sock", 90.0, 0.5, True)
    assert dhcp_daemon.Options([]).socket_path == "/run/cni/dhcp.sock"
    assert dhcp_daemon.Options([]).resend_timeout == 30.0
    for bad in (["-x"], ["-timeout"], ["-timeout", "5"], ["daemon"]):
        with pytest.raises(ValueError):
            dhcp_daemon.Options(bad)
    assert dhcp_daemon.client_id("c" * 300, "n", "eth0") == ("c" * 300)[:254]
