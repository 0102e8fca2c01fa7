"""The dhcp IPAM's two halves on gob: the result and error mapping of the plugin, the
reply encoding and method table of the daemon (pure, no root, no socket)."""

from __future__ import annotations

import ipaddress
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from pycni import dhcp4, errors, gob, skel
from pycni.ipam import dhcp, dhcp_daemon
from pycni.result import parse_result
from tests.unit.test_dhcp4 import ack
from tests.unit.test_gob import REF_ALLOCATE_REPLY, decode_all

IP4 = bytes((10, 77, 0, 50))
MASK24 = bytes((255, 255, 255, 0))
GW = bytes((10, 77, 0, 1))


def test_reference_daemon_result_to_cni() -> None:
    (_, body) = decode_all(REF_ALLOCATE_REPLY)[1]
    wire = dhcp.result_wire(body)
    assert wire == {
        "cniVersion": "1.1.0",  # Go's daemon sends none; our plugin prints the config's
        "ips": [{"address": "10.77.0.50/24", "gateway": "10.77.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}],
        "dns": {},
    }
    out = parse_result(wire).to_wire("1.0.0")
    assert out["ips"] == [{"address": "10.77.0.50/24", "gateway": "10.77.0.1"}]


def test_our_daemon_result_is_the_reference_daemons_value() -> None:
    """For the same lease our daemon's Result value is byte for byte the reference
    daemon's (the type ids come out the same too: both number types as Go does)."""
    lease = dhcp4.Lease(ack(o3=GW, o51=struct.pack("!I", 3600)), ipaddress.IPv4Address("10.9.0.1"))
    lease.interface = ipaddress.IPv4Interface("10.77.0.50/24")
    lease.router = ipaddress.IPv4Address("10.77.0.1")
    result = dhcp_daemon.Keeper.result(SimpleNamespace(lease=lease, priority=0))  # type: ignore[arg-type]
    enc = gob.Encoder()
    ours = enc.encode(gob.RESPONSE, {"ServiceMethod": "DHCP.Allocate"})
    ours += enc.encode(dhcp_daemon.RESULT, result)
    value = ours[-0x34:]
    assert value == REF_ALLOCATE_REPLY[-0x34:]
    assert decode_all(ours)[1][1] == decode_all(REF_ALLOCATE_REPLY)[1][1]


def test_route_extras_and_on_link_routes() -> None:
    classless = bytes((24, 192, 0, 2, 0, 0, 0, 0, 0, 10, 9, 0, 1))
    lease = dhcp4.Lease(
        ack(o3=bytes((10, 9, 0, 1)), o121=classless), ipaddress.IPv4Address("10.9.0.1")
    )
    result = dhcp_daemon.Keeper.result(SimpleNamespace(lease=lease, priority=50))  # type: ignore[arg-type]
    ((_, body),) = decode_all(gob.Encoder().encode(dhcp_daemon.RESULT, result))
    assert dhcp.result_wire(body)["routes"] == [
        {"dst": "192.0.2.0/24", "priority": 50, "scope": 253},
        {"dst": "0.0.0.0/0", "gw": "10.9.0.1", "priority": 50},
    ]


@pytest.mark.parametrize(
    ("address", "want"),
    [
        ({"IP": bytes(10) + b"\xff\xff" + IP4, "Mask": MASK24}, "10.77.0.50/24"),
        ({"IP": IP4, "Mask": b"\xff" * 12 + MASK24}, "10.77.0.50/24"),
        (
            {"IP": ipaddress.IPv6Address("fd00::5").packed, "Mask": b"\xff" * 8 + bytes(8)},
            "fd00::5/64",
        ),
        ({"IP": IP4, "Mask": bytes((255, 0, 255, 0))}, "not a prefix"),
        ({"IP": IP4, "Mask": b"\xff" * 16}, "10.77.0.50/32"),  # as Go reads it
        ({"IP": IP4, "Mask": b"\xff" * 8}, "Mask"),
        ({"IP": b"\x01\x02", "Mask": MASK24}, "IP"),
        ({"IP": "10.77.0.50", "Mask": MASK24}, "IP"),
        ("10.77.0.50/24", "Address"),
    ],
)
def test_addresses(address: Any, want: str) -> None:
    body = {"IPs": [{"Address": address}]}
    if "/" in want:
        assert dhcp.result_wire(body)["ips"] == [{"address": want}]
    else:
        with pytest.raises(errors.DecodingFailure) as exc:
            dhcp.result_wire(body)
        assert want in exc.value.details


def test_other_result_fields() -> None:
    body = {
        "CNIVersion": "1.0.0",
        "Interfaces": [{"Name": "eth0", "Mac": "02:00:00:00:00:01", "Mtu": 1400}],
        "IPs": [{"Interface": 1, "Address": {"IP": IP4, "Mask": MASK24}}],
        "DNS": {"Nameservers": ["10.77.0.1"], "Search": ["example"]},
    }
    assert dhcp.result_wire(body) == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1400}],
        "ips": [{"address": "10.77.0.50/24", "interface": 1}],
        "dns": {"nameservers": ["10.77.0.1"], "search": ["example"]},
    }
    for bad in ([], {"IPs": {"x": 1}}, {"Routes": ["x"]}):
        with pytest.raises(errors.DecodingFailure):
            dhcp.result_wire(bad)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("error parsing netconf: unexpected end of JSON input", 7),
        ('Can not parse option "x": strconv.Atoi: parsing "x": invalid syntax', 7),
        ('value too long for option "host-name": "xxx"', 7),
        ('error looking up "nope0": Link not found', 4),
        ('failed to Statfs "/run/netns/x": no such file or directory', 3),
        ('unknown FS magic on "/tmp": 1021994', 4),
        ("no more tries", 11),
        ("DHCP server NACK'd own offer", 11),
        ("DHCP option Subnet Mask not found in DHCPACK", 999),
        ("failed to send DHCPRELEASE", 999),
    ],
)
def test_reference_daemon_errors(text: str, code: int) -> None:
    err = dhcp._daemon_error("DHCP.Allocate", text, {})
    assert err.code == code
    assert err.msg == f"error calling DHCP.Allocate: {text}"  # the reference plugin's words


def test_our_daemon_errors_and_missing_methods() -> None:
    err = dhcp._daemon_error("DHCP.Allocate", "x: y", {"Code": 11, "Msg": "x", "Details": "y"})
    assert (type(err), err.code, err.msg, err.details) == (errors.TryAgainLater, 11, "x", "y")
    missing = dhcp._daemon_error("DHCP.Check", "rpc: can't find method DHCP.Check", {})
    assert isinstance(missing, dhcp.MethodMissing)


class FakeClient:
    def __init__(self, answer: tuple[str, Any]) -> None:
        self.answer = answer
        self.calls: list[tuple[str, Any, Any]] = []

    def call(self, method: str, args_type: Any, args: Any) -> tuple[str, Any]:
        self.calls.append((method, args_type, args))
        return self.answer


def test_call_sends_cmd_args() -> None:
    conf = {"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "dhcp"}}
    cmd = skel.CmdArgs("ADD", "c1", "rel/ns", "eth0", "K=V", "/opt/cni/bin", b"", conf)
    fake = FakeClient(("", {}))
    assert dhcp.call(fake, "DHCP.Allocate", cmd) == {}  # type: ignore[arg-type]
    ((method, args_type, args),) = fake.calls
    assert (method, args_type) == ("DHCP.Allocate", dhcp.CMD_ARGS)
    assert args["Netns"].startswith("/") and args["Netns"].endswith("/rel/ns")  # made absolute
    assert args["StdinData"] == b'{"cniVersion":"1.0.0","name":"n","ipam":{"type":"dhcp"}}'
    # and the bytes are a CmdArgs any Go daemon decodes by field name
    ((_, sent),) = decode_all(gob.Encoder().encode(dhcp.CMD_ARGS, args))
    assert sent == {k: v for k, v in args.items() if v}
    with pytest.raises(errors.InvalidConfig):
        dhcp.call(FakeClient(("Can not parse option", {})), "DHCP.Allocate", cmd)  # type: ignore[arg-type]


def test_daemon_methods() -> None:
    d = dhcp_daemon.Daemon(dhcp_daemon.Options([]))
    assert sorted(d.rpc) == [
        "DHCP.Allocate",
        "DHCP.Check",
        "DHCP.GC",
        "DHCP.Release",
        "DHCP.Status",
    ]
    assert d.rpc["DHCP.Status"]({}) == (gob.EMPTY, {})
    stdin = b'{"cniVersion":"1.0.0","name":"n","ipam":{"type":"dhcp"}}'
    args = {"ContainerID": "c1", "IfName": "eth0", "StdinData": stdin}
    assert d.rpc["DHCP.Release"](args) == (gob.EMPTY, {})  # nothing kept: nothing to do

    def fails(method: str, value: Any) -> dict[str, Any]:
        with pytest.raises(gob.RpcError) as exc:
            d.rpc[method](value)
        e = exc.value
        assert e.body_type is dhcp.CNI_ERROR
        assert e.text == (
            f"{e.body['Msg']}: {e.body['Details']}" if e.body["Details"] else e.body["Msg"]
        )
        return e.body

    assert fails("DHCP.Check", args)["Code"] == 3
    assert fails("DHCP.Allocate", "not a struct")["Code"] == 6
    assert fails("DHCP.Allocate", dict(args, StdinData=b"{"))["Code"] == 6
    assert fails("DHCP.Allocate", dict(args, StdinData=b'{"cniVersion":"1.0.0"}'))["Code"] == 7
    assert fails("DHCP.Allocate", dict(args, IfName="a/b"))["Code"] == 4
    assert fails("DHCP.Allocate", dict(args, ContainerID=""))["Code"] == 3
    assert (
        fails("DHCP.GC", dict(args, StdinData=stdin[:-1] + b',"cni.dev/valid-attachments":5}'))[
            "Code"
        ]
        == 7
    )


def test_daemon_forgets_containers_it_has_released() -> None:
    """The daemon runs for the node's life: a DEL (Release) of a container it never saw,
    or saw and released, must leave nothing behind (a per-container lock used to stay
    forever, some 300 bytes a container, also for DELs of containers it never knew)."""
    import tracemalloc

    d = dhcp_daemon.Daemon(dhcp_daemon.Options([]))
    stdin = b'{"cniVersion":"1.0.0","name":"n","ipam":{"type":"dhcp"}}'
    release = d.rpc["DHCP.Release"]
    release({"ContainerID": "warm", "IfName": "eth0", "StdinData": stdin})
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n in range(5000):
            assert release({"ContainerID": f"c{n:08x}" * 4, "IfName": "eth0", "StdinData": stdin})
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 64 * 1024, f"{grown} bytes kept after 5000 releases"
