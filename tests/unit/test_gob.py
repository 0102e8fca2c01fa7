"""pycni.gob: Go's gob encoding and net/rpc framing.

Three kinds of evidence:
- byte strings worked out by hand from the format's description (Go's encoding/gob
  doc.go), annotated below, including doc.go's own worked example;
- byte strings the reference binaries exchanged (containernetworking-plugins 1.1.1 as
  Debian builds it, /usr/lib/cni/dhcp, plugin and daemon, recorded through a relay on
  their unix socket): we decode them, and our encoder reproduces the plugin's call to
  the byte;
- round trips, and the net/rpc server and client against each other on a socketpair.
That the reference binaries accept what we send is proven by the integration tests
(tests/integration/test_dhcp.py runs each half against the other implementation's).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni import gob


def h(text: str) -> bytes:
    """Hex with spaces, comments after '#', and 'quoted' ASCII."""
    out = b""
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        parts = line.split("'")
        for n, part in enumerate(parts):
            out += part.encode() if n % 2 else bytes.fromhex(part)
    return out


def decode_all(data: bytes) -> list[tuple[int, Any]]:
    dec = gob.Decoder(data=data)
    out = []
    while True:
        try:
            out.append(dec.decode())
        except EOFError:
            return out


# -- integers (doc.go's examples) --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [(0, "00"), (7, "07"), (127, "7f"), (128, "ff 80"), (256, "fe 01 00"),
     ((1 << 64) - 1, "f8 ff ff ff ff ff ff ff ff")],
)  # fmt: skip
def test_unsigned(value: int, wire: str) -> None:
    assert gob.encode_uint(value) == h(wire)
    assert gob._Reader(h(wire)).uint() == value


@pytest.mark.parametrize(
    ("value", "wire"),
    [(0, "00"), (3, "06"), (-1, "01"), (22, "2c"), (33, "42"), (65, "ff 82"), (-65, "ff 81"),
     (-129, "fe 01 01"), ((1 << 63) - 1, "f8 ff ff ff ff ff ff ff fe"),
     (-(1 << 63), "f8 ff ff ff ff ff ff ff ff")],
)  # fmt: skip
def test_signed(value: int, wire: str) -> None:
    assert gob.encode_int(value) == h(wire)
    assert gob._Reader(h(wire)).int() == value


def test_integer_limits_and_float() -> None:
    for bad in (1 << 64, -1):
        with pytest.raises(gob.GobError):
            gob.encode_uint(bad)
    for bad in (1 << 63, -(1 << 63) - 1):
        with pytest.raises(gob.GobError):
            gob.encode_int(bad)
    # doc.go: 17.0 is three bytes, the float64 bits byte-reversed as an unsigned value
    assert gob.encode_uint(gob._float_bits(17.0)) == h("fe 31 40")
    assert gob._bits_float(gob._Reader(h("fe 31 40")).uint()) == 17.0
    with pytest.raises(gob.GobError, match="length"):
        gob._Reader(h("f7 00")).uint()  # 9 bytes: more than 64 bits
    with pytest.raises(gob.GobError, match="end of message"):
        gob._Reader(h("fe 01")).uint()


# -- doc.go's worked example ----------------------------------------------------------------

POINT = gob.Struct("Point", [("X", gob.INT), ("Y", gob.INT)])
POINT_STREAM = h("""
    1f          # a 31-byte message
    ff 81       # -65: the definition of type 65
    03          #   wireType field 2, StructT
    01          #     structType field 0, CommonType
    01 05 'Point'   # Name
    01 ff 82    #       Id 65
    00          #     end of CommonType
    01 02       #     field 1, Field: two fieldTypes
    01 01 'X' 01 04 00  # Name "X", Id 2 (int)
    01 01 'Y' 01 04 00  # Name "Y", Id 2
    00 00       #   end of structType, of wireType
    07 ff 82 01 2c 01 42 00   # a value of type 65: X=22, Y=33
""")


def test_doc_example_point() -> None:
    enc = gob.Encoder()
    assert enc.encode(POINT, {"X": 22, "Y": 33}) == POINT_STREAM
    # sent again on the same stream: the value only
    assert enc.encode(POINT, {"X": 22, "Y": 33}) == h("07 ff 82 01 2c 01 42 00")
    assert decode_all(POINT_STREAM + h("07 ff 82 01 2c 01 42 00")) == [(65, {"X": 22, "Y": 33})] * 2
    # a new stream defines the type again
    assert gob.Encoder().encode(POINT, {"X": 22, "Y": 33}) == POINT_STREAM
    # zero fields are left out, and a receiver sees them absent
    assert gob.Encoder().encode(POINT, {"X": 0, "Y": 33})[-6:] == h("05 ff 82 02 42 00")
    assert decode_all(POINT_STREAM[:32] + h("05 ff 82 02 42 00")) == [(65, {"Y": 33})]


def test_doc_example_single_value() -> None:
    # a top-level value that is not a struct: delta 0, then the value
    assert gob.Encoder().encode(gob.INT, 3) == h("03 04 00 06")
    assert decode_all(h("03 04 00 06")) == [(2, 3)]


# -- what the reference plugin and daemon exchanged (1.1.1, Debian) ---------------------------
# The plugin's ADD of container "cap1", CNI_IFNAME eth0, netns /run/netns/gobcap-c;
# the daemon's answer with a lease from dnsmasq; DEL's Release and its answer; and an
# ADD for an interface that does not exist (the daemon's error).

REF_ALLOCATE_CALL = bytes.fromhex(
    "2fff81030101075265717565737401ff82000102010d536572766963654d6574686f64010c000103"
    "536571010600000012ff82010d444843502e416c6c6f63617465005aff8303010107436d64417267"
    "7301ff84000106010b436f6e7461696e65724944010c0001054e65746e73010c00010649664e616d"
    "65010c00010441726773010c00010450617468010c000109537464696e44617461010a000000ffa5"
    "ff8401046361703101132f72756e2f6e65746e732f676f626361702d63010465746830020c2f7573"
    "722f6c69622f636e6901717b22636e6956657273696f6e223a2022312e302e30222c20226e616d65"
    "223a20226361706e6574222c20226970616d223a207b2274797065223a202264686370222c202264"
    "61656d6f6e536f636b657450617468223a20222f746d702f676f626361702f72656c61792e736f63"
    "6b227d7d00"
)
REF_ALLOCATE_REPLY = bytes.fromhex(
    "3aff8103010108526573706f6e736501ff82000103010d536572766963654d6574686f64010c0001"
    "0353657101060001054572726f72010c00000012ff82010d444843502e416c6c6f636174650051ff"
    "8303010106526573756c7401ff84000105010a434e4956657273696f6e010c00010a496e74657266"
    "6163657301ff8800010349507301ff8e000106526f7574657301ff92000103444e5301ff94000000"
    "24ff87020101155b5d2a74797065733130302e496e7465726661636501ff880001ff86000029ff85"
    "030102ff8600010301044e616d65010c0001034d6163010c00010753616e64626f78010c00000023"
    "ff8d020101145b5d2a74797065733130302e4950436f6e66696701ff8e0001ff8a000033ff890301"
    "02ff8a0001030109496e7465726661636501040001074164647265737301ff8c0001074761746577"
    "6179010a00000023ff8b0301010549504e657401ff8c00010201024950010a0001044d61736b010a"
    "0000001dff910201010e5b5d2a74797065732e526f75746501ff920001ff9000001cff8f030102ff"
    "90000102010344737401ff8c0001024757010a00000046ff9303010103444e5301ff94000104010b"
    "4e616d657365727665727301ff96000106446f6d61696e010c00010653656172636801ff96000107"
    "4f7074696f6e7301ff9600000016ff95020101085b5d737472696e6701ff9600010c000033ff8403"
    "010201040a4d00320104ffffff000001040a4d000100010101010400000000010400000000000104"
    "0a4d000100010000"
)
REF_RELEASE_REPLY = bytes.fromhex(
    "3aff8103010108526573706f6e736501ff82000103010d536572766963654d6574686f64010c0001"
    "0353657101060001054572726f72010c00000011ff82010c444843502e52656c65617365000aff97"
    "030102ff9800000003ff9800"
)
REF_ERROR_REPLY = bytes.fromhex(
    "3aff8103010108526573706f6e736501ff82000103010d536572766963654d6574686f64010c0001"
    "0353657101060001054572726f72010c0000003cff82010d444843502e416c6c6f63617465022865"
    "72726f72206c6f6f6b696e6720757020226e6f706530223a204c696e6b206e6f7420666f756e6400"
    "0aff97030102ff9800000003ff9800"
)
STDIN = (
    b'{"cniVersion": "1.0.0", "name": "capnet", "ipam": {"type": "dhcp", '
    b'"daemonSocketPath": "/tmp/gobcap/relay.sock"}}'
)
#: skel.CmdArgs of the CNI library 1.1.1 is built on (v1.2+ adds NetnsOverride)
CMD_ARGS_1_0 = gob.Struct(
    "CmdArgs", [(n, gob.STRING) for n in ("ContainerID", "Netns", "IfName", "Args", "Path")]
    + [("StdinData", gob.BYTES)],
)  # fmt: skip
CALL_ARGS = {"ContainerID": "cap1", "Netns": "/run/netns/gobcap-c", "IfName": "eth0",
             "Path": "/usr/lib/cni", "StdinData": STDIN}  # fmt: skip


def test_reference_plugin_call_decoded_and_reproduced() -> None:
    assert decode_all(REF_ALLOCATE_CALL) == [
        (65, {"ServiceMethod": "DHCP.Allocate"}),
        (66, CALL_ARGS),
    ]
    enc = gob.Encoder()
    ours = enc.encode(gob.REQUEST, {"ServiceMethod": "DHCP.Allocate", "Seq": 0})
    ours += enc.encode(CMD_ARGS_1_0, CALL_ARGS)
    assert ours == REF_ALLOCATE_CALL  # to the byte: ids, names, order, left-out Seq/Args


def test_request_header_by_hand() -> None:
    """The first two messages of any net/rpc call on a fresh connection."""
    assert (
        gob.Encoder().encode(gob.REQUEST, {"ServiceMethod": "DHCP.Allocate"})
        == h("""
        2f ff 81 03 01      # 47 bytes: type 65 is a struct, its CommonType:
        01 07 'Request' 01 ff 82 00     # Name, Id 65
        01 02               # two fields
        01 0d 'ServiceMethod' 01 0c 00  # string (6)
        01 03 'Seq' 01 06 00            # uint (3)
        00 00
        12 ff 82 01 0d 'DHCP.Allocate' 00   # the value; Seq 0 left out
    """)
        == REF_ALLOCATE_CALL[:67]
    )


def test_reference_daemon_replies_decoded() -> None:
    header, result = decode_all(REF_ALLOCATE_REPLY)
    assert header == (65, {"ServiceMethod": "DHCP.Allocate"})
    assert result == (66, {
        "IPs": [{"Address": {"IP": bytes((10, 77, 0, 50)), "Mask": bytes((255, 255, 255, 0))},
                 "Gateway": bytes((10, 77, 0, 1))}],
        "Routes": [{"Dst": {"IP": bytes(4), "Mask": bytes(4)}, "GW": bytes((10, 77, 0, 1))}],
        "DNS": {},  # a struct field is always sent, even empty
    })  # fmt: skip
    # Release answers struct{}: a struct type without name or fields (id 76 there)
    assert decode_all(REF_RELEASE_REPLY) == [(65, {"ServiceMethod": "DHCP.Release"}), (76, {})]
    assert decode_all(REF_ERROR_REPLY) == [
        (65, {"ServiceMethod": "DHCP.Allocate",
              "Error": 'error looking up "nope0": Link not found'}),
        (76, {}),
    ]  # fmt: skip


def test_our_error_reply_by_hand() -> None:
    """What our daemon sends for a failed call: Go's client takes the text and
    discards the body; our plugin reads the CNI error from the body."""
    error = gob.Struct("Error", [("Code", gob.UINT), ("Msg", gob.STRING),
                                 ("Details", gob.STRING)])  # fmt: skip
    enc = gob.Encoder()
    enc.encode(gob.RESPONSE, {})  # the header type, already sent on this stream
    out = enc.encode(gob.RESPONSE, {"ServiceMethod": "DHCP.Allocate", "Error": "e: d"})
    out += enc.encode(error, {"Code": 11, "Msg": "e", "Details": "d"})
    assert out == h("""
        18 ff 82 01 0d 'DHCP.Allocate' 02 04 'e: d' 00  # header: field 0, then field 2
        30 ff 83 03 01 01 05 'Error' 01 ff 84 00 01 03  # type 66: struct Error, 3 fields
        01 04 'Code' 01 06 00                           # uint
        01 03 'Msg' 01 0c 00 01 07 'Details' 01 0c 00 00 00
        0b ff 84 01 0b 01 01 'e' 01 01 'd' 00           # Code 11, Msg, Details
    """)


# -- round trips -------------------------------------------------------------------------------

INNER = gob.Struct("Inner", [("A", gob.INT), ("B", gob.BYTES)])
EVERYTHING = gob.Struct("Everything", [
    ("Bool", gob.BOOL), ("Int", gob.INT), ("Uint", gob.UINT), ("Float", gob.FLOAT),
    ("Bytes", gob.BYTES), ("String", gob.STRING), ("Complex", gob.COMPLEX),
    ("Inner", INNER), ("Inners", gob.Slice("[]Inner", INNER)),
    ("Strings", gob.Slice("[]string", gob.STRING)),
    ("Map", gob.Map("map[string]int", gob.STRING, gob.INT)),
    ("Array", gob.Array("[3]uint", gob.UINT, 3)),
    ("IP", gob.External("net.IP", "TextMarshalerT")),
])  # fmt: skip


def test_round_trip_every_kind() -> None:
    value = {
        "Bool": True, "Int": -(1 << 40), "Uint": 1 << 63, "Float": -2.5, "Bytes": b"\0\xff",
        "String": "héllo ☃", "Complex": 1.5 - 2j, "Inner": {"A": 1},
        "Inners": [{"A": 2, "B": b"x"}, {}], "Strings": ["", "a"], "Map": {"k": 0, "": -3},
        "Array": [0, 1, 2], "IP": b"10.0.0.1",
    }  # fmt: skip
    enc = gob.Encoder()
    data = enc.encode(EVERYTHING, value) + enc.encode(EVERYTHING, value)
    assert decode_all(data) == [(65, value)] * 2
    # zero values are left out; empty structs and maps are still sent
    empty = {"Bool": False, "Int": 0, "String": "", "Inners": [], "Inner": {}, "Map": {}}
    assert decode_all(gob.Encoder().encode(EVERYTHING, empty)) == [(65, {"Inner": {}, "Map": {}})]


values = st.fixed_dictionaries(
    {},
    optional={
        "Bool": st.booleans(), "Int": st.integers(-(1 << 63), (1 << 63) - 1),
        "Uint": st.integers(0, (1 << 64) - 1), "Bytes": st.binary(), "String": st.text(),
        "Float": st.floats(allow_nan=False),
        "Inners": st.lists(st.fixed_dictionaries({}, optional={
            "A": st.integers(-5, 5).filter(bool), "B": st.binary(min_size=1, max_size=3)})),
        "Strings": st.lists(st.text(max_size=5)),
        "Map": st.dictionaries(st.text(max_size=3), st.integers(-(1 << 63), (1 << 63) - 1)),
    },
)  # fmt: skip


@given(values)
def test_round_trip_property(value: dict[str, Any]) -> None:
    ((_, back),) = decode_all(gob.Encoder().encode(EVERYTHING, value))
    zero = (False, 0, 0.0, b"", "", [])
    assert back == {k: v for k, v in value.items() if v not in zero or k == "Map"}


def test_definitions_depend_on_what_the_stream_defined() -> None:
    """Definitions are worked out once per stream state and reused: streams that sent
    the same types in the same order send the same bytes, any other order decodes."""
    value = {"Inner": {"A": 1}, "Inners": [{"B": b"x"}], "IP": b"ip"}

    def stream(*types: Any) -> bytes:
        enc = gob.Encoder()
        return b"".join(enc.encode(t, value if t is EVERYTHING else {"X": 1}) for t in types)

    first = stream(POINT, EVERYTHING, POINT)
    assert stream(POINT, EVERYTHING, POINT) == first
    assert [v for _, v in decode_all(first)] == [{"X": 1}, value, {"X": 1}]
    assert [v for _, v in decode_all(stream(EVERYTHING, POINT))] == [value, {"X": 1}]
    assert [i for i, _ in decode_all(stream(EVERYTHING, POINT))] == [65, 72]
    with pytest.raises(gob.GobError):
        stream(gob.Struct("Bad", [("F", object())]))
    assert stream(POINT, EVERYTHING, POINT) == first  # a failed stream left nothing behind


def test_encoder_refuses_what_go_would_not_send() -> None:
    for t, v in [(gob.INT, "1"), (gob.INT, True), (gob.UINT, -1), (gob.BYTES, "s"),
                 (gob.STRING, b"b"), (gob.BOOL, 1), (POINT, [1, 2]),
                 (gob.Slice("[]Point", POINT), [None]), (gob.INTERFACE, 1),
                 (gob.Array("[2]int", gob.INT, 2), [1])]:  # fmt: skip
        with pytest.raises(gob.GobError):
            gob.Encoder().encode(t, v)


# -- decoding what is not a gob stream ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (h("05 ff 82 01 2c"), "ends inside a message"),  # 5 bytes announced, 4 there
        (h("ff"), "ends inside a message length"),
        (h("80 00"), "length prefix"),
        (h("00"), "invalid message length"),
        (h("03 ff 82 00"), "never defined"),
        (POINT_STREAM[:32] + h("05 ff 82 05 02 00"), "out of range"),  # field 4 of 2
        (POINT_STREAM[:32] + h("07 ff 82 01 2c 00 00 00"), "left over"),
        (POINT_STREAM[:32] + POINT_STREAM[:32], "duplicate type"),
        (h("0a 7d 03 01 02 7e 00 00 00 00 00"), "duplicate type"),  # id 63 is reserved
        (h("05 0a 00 63 61 74"), "runs past"),  # bytes of length 0x63
        (h("04 04 01 06 00"), "non-zero delta"),
        (POINT_STREAM[:32] + h("05 ff 82 01 2c 01"), "end of message"),  # Y cut off
    ],
)  # fmt: skip
def test_malformed(data: bytes, match: str) -> None:
    with pytest.raises(gob.GobError, match=match):
        decode_all(data)


def test_counts_bounded_by_the_message() -> None:
    """A forged count is refused before anything is allocated for it."""
    for t in (gob.Slice("[]string", gob.STRING), gob.Map("map[int]int", gob.INT, gob.INT)):
        data = gob.Encoder().encode(t, [] if type(t) is gob.Slice else {})
        definition = data[: data[0] + 1]
        with pytest.raises(gob.GobError, match="cannot fit"):
            decode_all(definition + h("0c ff 82 00 f8 7f ff ff ff ff ff ff ff"))  # 2**63 - 1


def test_stream_read_in_pieces() -> None:
    """A socket delivers what it has: one byte at a time must decode the same."""
    data = REF_ALLOCATE_REPLY
    chunks = iter(data[i : i + 1] for i in range(len(data)))
    dec = gob.Decoder(lambda _n: next(chunks, b""))
    assert dec.decode()[1] == {"ServiceMethod": "DHCP.Allocate"}
    assert dec.decode()[1]["DNS"] == {}
    with pytest.raises(EOFError):
        dec.decode()


# -- net/rpc over a socketpair ------------------------------------------------------------------

ARGS = gob.Struct("Args", [("A", gob.INT)])


@pytest.fixture
def served() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A client socket connected to gob.serve_conn, with DHCP.Echo and DHCP.Fail."""

    def echo(args: Any) -> tuple[Any, Any]:
        return ARGS, {"A": args.get("A", 0) + 1}

    def fail(_args: Any) -> tuple[Any, Any]:
        raise gob.RpcError("it failed", ARGS, {"A": 7})

    client, server = socket.socketpair()
    client.settimeout(5)
    server.settimeout(5)
    seen: list[bytes] = []

    class Spy:
        def recv(self, n: int) -> bytes:
            data = server.recv(n)
            seen.append(data)
            return data

        def sendall(self, data: bytes) -> None:
            server.sendall(data)

    t = threading.Thread(
        target=gob.serve_conn, args=(Spy(), {"DHCP.Echo": echo, "DHCP.Fail": fail}), daemon=True
    )
    t.start()
    yield client, seen
    client.close()
    t.join(5)
    assert not t.is_alive()
    server.close()


def test_rpc_calls_errors_and_go_texts(served: tuple[socket.socket, list[bytes]]) -> None:
    sock, seen = served
    c = gob.Client(sock)
    assert c.call("DHCP.Echo", ARGS, {"A": 1}) == ("", {"A": 2})
    assert c.call("DHCP.Fail", ARGS, {}) == ("it failed", {"A": 7})
    # net/rpc's own texts; the connection stays usable after them
    assert c.call("DHCP.Nope", ARGS, {}) == ("rpc: can't find method DHCP.Nope", {})
    assert c.call("Other.Echo", ARGS, {}) == ("rpc: can't find service Other.Echo", {})
    assert c.call("Echo", ARGS, {}) == ("rpc: service/method request ill-formed: Echo", {})
    assert c.call("DHCP.Echo", ARGS, {"A": -5}) == ("", {"A": -4})
    assert seen[0] == b"CONNECT /_goRPC_ HTTP/1.0\n\n"
    # the argument type was defined once on the stream: later calls carry no definition
    assert b"".join(seen).count(b"Args") == 1


@pytest.mark.parametrize(
    ("request_head", "status"),
    [(b"GET /_goRPC_ HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
     (b"CONNECT /other HTTP/1.0\n\n", b"404"),
     (b'{"method": "Allocate"}\n\n', b"400")],
)  # fmt: skip
def test_rpc_server_refuses_other_http(request_head: bytes, status: bytes) -> None:
    client, server = socket.socketpair()
    with client, server:
        client.settimeout(5)
        client.sendall(request_head)
        gob.serve_conn(server, {})
        assert client.recv(4096).split(b" ")[1] == status


def test_rpc_client_refuses_a_server_that_is_not_go_rpc() -> None:
    client, server = socket.socketpair()
    with client, server:
        client.settimeout(5)
        server.sendall(b'{"error": {"code": 4}}\n\n')
        with pytest.raises(gob.GobError, match="unexpected HTTP response"):
            gob.Client(client)
    client, server = socket.socketpair()
    with client, server:
        client.settimeout(5)
        server.shutdown(socket.SHUT_WR)
        with pytest.raises(gob.GobError, match="closed before"):
            gob.Client(client)


def test_rpc_server_answers_an_unreadable_argument() -> None:
    client, server = socket.socketpair()
    with client, server:
        client.settimeout(5)
        t = threading.Thread(
            target=gob.serve_conn, args=(server, {"DHCP.Echo": lambda a: (ARGS, a)})
        )
        t.start()
        c = gob.Client(client)
        client.sendall(c.enc.encode(gob.REQUEST, {"ServiceMethod": "DHCP.Echo", "Seq": 0})
                       + h("03 ff 90 00"))  # fmt: skip
        _, header = c.dec.decode()
        assert header["Error"].startswith("rpc: cannot decode the argument: type id 72")
        t.join(5)
