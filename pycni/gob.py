"""Go's encoding/gob and net/rpc: the subset that Go's net/rpc calls need.

Written for the dhcp IPAM plugin and `dhcp daemon` (pycni.ipam.dhcp*), which must mix
with the reference's halves: those speak Go's net/rpc, gob-encoded, over the HTTP
CONNECT handshake of rpc.DialHTTP / rpc.HandleHTTP. The plugin side of this module is
on a plugin's exec start-up path, so it imports nothing at all (float encoding aside,
which imports `struct` when a float is actually sent). There is no maintained gob
library for Python, hence this one, written from the format's description in Go's
encoding/gob documentation (doc.go) and net/rpc's.

The format, as implemented here:

- Integers: an unsigned value below 128 is one byte; above, a byte holding the negated
  byte count, then the value big-endian in that many bytes (at most 8). A signed value
  travels as an unsigned one whose bit 0 says "complement the rest" (i >= 0: i << 1,
  i < 0: (~i << 1) | 1). Booleans are 0/1, floats the byte-reversed IEEE-754 bits of a
  float64 as an unsigned value, strings and []byte a length and the bytes.
- Struct values: (field delta, value) pairs in increasing field order, starting from
  field -1, fields with the zero value left out, then a 0 delta. Slices, arrays and
  maps: a count, then every element (zero ones too), maps as key, value pairs.
  Pointers are not sent: the value they point to is (a nil pointer is a left-out field).
- A stream is a series of messages, each an unsigned byte count and the bytes. A
  message holds either a type definition, (-id, the wireType describing it), or a
  value, (id, the value); a top-level value that is not a struct has a 0 delta first.
  Every type is defined once per stream (per Encoder), before the first value that
  uses it; ids 1-8 (bool int uint float []byte string complex interface) and 16-24
  (the wireType machinery) are predefined, user types start at 65 (64 is the lowest
  a decoder accepts). Types are matched by shape, struct fields by name: a receiver
  ignores fields it does not have, and keeps its own for fields that were not sent.

What is left out: interface values (a registered type name and a nested value), and
types with GobEncode/MarshalBinary methods are decoded to their bytes only (gob does
not use MarshalText: a net.IP travels as its 4 or 16 bytes, a net.IPNet as the struct
{IP, Mask}). Values
decode to plain Python: dict (struct, by field name, only the fields sent), list
(slice, array), dict (map), bytes, str, int, float, complex, bool.

net/rpc (rpc.DialHTTP, rpc.HandleHTTP): the client sends "CONNECT /_goRPC_ HTTP/1.0"
and waits for "HTTP/1.0 200 Connected to Go RPC" (Go's server drops what it read past
the request, so nothing may be sent before that answer); then each call is a Request header {ServiceMethod, Seq} and the
argument, each answer a Response header {ServiceMethod, Seq, Error} and the reply (an
empty struct when Error is set; Go's client reads and discards that body whatever its
type). One gob stream per direction for the life of the connection.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

# Predefined type ids (gob's bootstrap types).
BOOL, INT, UINT, FLOAT, BYTES, STRING, COMPLEX, INTERFACE = 1, 2, 3, 4, 5, 6, 7, 8
_BASIC_NAMES = {1: "bool", 2: "int", 3: "uint", 4: "float", 5: "bytes", 6: "string",
                7: "complex", 8: "interface"}  # fmt: skip
#: the first id this encoder gives a type (Go's decoder accepts any id from 64 up)
FIRST_USER_ID = 65
_LOWEST_USER_ID = 64
#: the largest message accepted (Go's limit is 1 GiB; what we exchange is a few KiB)
MAX_MESSAGE = 64 << 20


class GobError(ValueError):
    """Bytes that are not a gob stream we can read, or a value that does not fit its type."""


# -- types ---------------------------------------------------------------------------------


class Struct:
    """A struct type: (field name, type) in declaration order. Values are dicts."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str, fields: Sequence[tuple[str, Any]]) -> None:
        self.name = name
        self.fields = tuple(fields)

    def __repr__(self) -> str:
        return f"Struct({self.name!r}, {[f for f, _ in self.fields]})"


class Slice:
    """[]elem (a []byte is BYTES, not a Slice). Values are lists."""

    __slots__ = ("elem", "name")

    def __init__(self, name: str, elem: Any) -> None:
        self.name = name
        self.elem = elem


class Array:
    """[length]elem. Values are lists of exactly `length` elements."""

    __slots__ = ("elem", "length", "name")

    def __init__(self, name: str, elem: Any, length: int) -> None:
        self.name = name
        self.elem = elem
        self.length = length


class Map:
    """map[key]elem. Values are dicts."""

    __slots__ = ("elem", "key", "name")

    def __init__(self, name: str, key: Any, elem: Any) -> None:
        self.name = name
        self.key = key
        self.elem = elem


class External:
    """A type that encodes itself (GobEncoder, BinaryMarshaler, TextMarshaler): the
    value is the bytes its method produced. `kind` is the wireType field naming it."""

    __slots__ = ("kind", "name")

    def __init__(self, name: str, kind: str = "GobEncoderT") -> None:
        self.name = name
        self.kind = kind


# The types that describe types, predefined on every stream with these ids. Their
# shape is Go's (encoding/gob type.go): wireType's fields in order, CommonType embedded
# as a field named CommonType, type ids sent as signed integers. Definitions are
# written and read by hand after this shape (Encoder._define, _read_type: the plugin's
# start-up path); the table serves a value that uses one of these types.
_COMMON = Struct("CommonType", [("Name", STRING), ("Id", INT)])
_ARRAY_T = Struct("arrayType", [("CommonType", _COMMON), ("Elem", INT), ("Len", INT)])
_SLICE_T = Struct("sliceType", [("CommonType", _COMMON), ("Elem", INT)])
_FIELD_T = Struct("fieldType", [("Name", STRING), ("Id", INT)])
_FIELDS = Slice("[]*gob.fieldType", _FIELD_T)
_STRUCT_T = Struct("structType", [("CommonType", _COMMON), ("Field", _FIELDS)])
_MAP_T = Struct("mapType", [("CommonType", _COMMON), ("Key", INT), ("Elem", INT)])
_GOB_ENCODER_T = Struct("gobEncoderType", [("CommonType", _COMMON)])
_EXTERNAL_KINDS = ("GobEncoderT", "BinaryMarshalerT", "TextMarshalerT")
#: wireType's fields in order: the kinds of type a definition can describe
_WIRE_KINDS = ("ArrayT", "SliceT", "StructT", "MapT", *_EXTERNAL_KINDS)
_WIRE_T = Struct("wireType", [
    ("ArrayT", _ARRAY_T), ("SliceT", _SLICE_T), ("StructT", _STRUCT_T), ("MapT", _MAP_T),
    *((kind, _GOB_ENCODER_T) for kind in _EXTERNAL_KINDS),
])  # fmt: skip
_PREDEFINED: dict[int, Any] = {
    16: _WIRE_T, 17: _ARRAY_T, 18: _COMMON, 19: _SLICE_T, 20: _STRUCT_T, 21: _FIELD_T,
    22: _FIELDS, 23: _MAP_T, 24: _GOB_ENCODER_T,
}  # fmt: skip


# -- integers ------------------------------------------------------------------------------


def encode_uint(u: int) -> bytes:
    if u < 128:
        if u < 0:
            raise GobError(f"negative value {u} for an unsigned integer")
        return bytes((u,))
    n = (u.bit_length() + 7) >> 3
    if n > 8:
        raise GobError(f"{u} does not fit in 64 bits")
    return bytes((256 - n,)) + u.to_bytes(n, "big")


def encode_int(i: int) -> bytes:
    if not -(1 << 63) <= i < 1 << 63:
        raise GobError(f"{i} does not fit in 64 bits")
    return encode_uint(((~i) << 1) | 1 if i < 0 else i << 1)


def _float_bits(f: float) -> int:
    import struct

    return int.from_bytes(struct.pack("<d", f), "big")  # the bits, byte-reversed


def _bits_float(u: int) -> float:
    import struct

    return float(struct.unpack("<d", u.to_bytes(8, "big"))[0])


# -- encoding ------------------------------------------------------------------------------


def _common(name: str, tid: int) -> bytes:
    """Field 0 of every kind of type: the CommonType {Name (left out when empty), Id}."""
    data = name.encode()
    head = b"\x01\x01" + encode_uint(len(data)) + data + b"\x01" if data else b"\x01\x02"
    return head + encode_int(tid) + b"\x00"


def _zero(t: Any, v: Any) -> bool:
    """Whether a struct field is left out: Go leaves out zero values, empty slices and
    nil pointers (None here), and always sends structs, arrays and non-nil maps."""
    if v is None:
        return True
    if type(t) is int:
        return not v
    if type(t) is Slice:
        return len(v) == 0
    if type(t) is External:
        return len(v) == 0
    return False


#: definitions already worked out: (the user types a stream has defined, in the order
#: of their ids; a type to send) -> (its definition messages; the user types defined
#: after). A daemon answers every connection with the same few types: this spares it
#: building their definitions again each time (most of the cost of a reply).
_DEFINITIONS: dict[tuple[tuple[Any, ...], Any], tuple[bytes, tuple[Any, ...]]] = {}


class Encoder:
    """One direction of one stream: remembers which types it has defined."""

    def __init__(self) -> None:
        self._ids: dict[Any, int] = {t: i for i, t in _PREDEFINED.items()}
        self._sent: set[Any] = set(_PREDEFINED.values())
        self._next = FIRST_USER_ID
        self._building: set[Any] = set()
        #: the user types defined so far, by id (the stream's whole state)
        self._order: tuple[Any, ...] = ()

    def encode(self, t: Any, value: Any) -> bytes:
        """The messages that send `value` of type `t`: any type definitions this stream
        has not seen yet, then the value itself."""
        out = bytearray()
        if type(t) is not int and t not in self._sent:
            key = (self._order, t)
            known = _DEFINITIONS.get(key)
            if known is None:
                consistent = len(self._ids) == len(_PREDEFINED) + len(self._order)
                self._assign(t)
                self._define(t, out)
                order = sorted((u for u in self._ids if self._ids[u] >= FIRST_USER_ID),
                               key=self._ids.__getitem__)  # fmt: skip
                if consistent and len(_DEFINITIONS) < 256:
                    _DEFINITIONS[key] = (bytes(out), tuple(order))
                self._order = tuple(order)
            else:
                out += known[0]
                for u in known[1][len(self._order) :]:
                    self._new_id(u)
                    self._sent.add(u)
                self._order = known[1]
        elif type(t) is int:
            self._assign(t)  # checks it is a basic type
        msg = bytearray(encode_int(self._id(t)))
        if type(t) is Struct:
            self._struct(t, value, msg)
        else:
            msg.append(0)  # a single value travels as field 0 of nothing
            self._value(t, value, msg)
        out += encode_uint(len(msg))
        out += msg
        return bytes(out)

    # type ids: as Go numbers them, a struct before its fields, a slice, array or map
    # after its elements (the numbers only have to be unique within the stream)
    def _id(self, t: Any) -> int:
        return t if type(t) is int else self._ids[t]

    def _new_id(self, t: Any) -> None:
        self._ids[t] = self._next
        self._next += 1

    def _assign(self, t: Any) -> None:
        if type(t) is int or t in self._ids:
            if type(t) is int and not 1 <= t <= 8:
                raise GobError(f"type id {t} is not a basic type")
            return
        kind = type(t)
        if kind is Struct:
            self._new_id(t)
            for _, ft in t.fields:
                self._assign(ft)
        elif kind is External:
            self._new_id(t)
        elif kind in (Slice, Array, Map):
            if t in self._building:  # reached again through a struct of its own
                self._new_id(t)
                return
            self._building.add(t)
            if kind is Map:
                self._assign(t.key)
            self._assign(t.elem)
            self._building.discard(t)
            if t not in self._ids:
                self._new_id(t)
        else:
            raise GobError(f"not a gob type: {t!r}")

    def _define(self, t: Any, out: bytearray) -> None:
        """Send the definition of `t`, then of the types inside it (Go's order)."""
        if type(t) is int or t in self._sent:
            return
        self._sent.add(t)
        # the wireType value, written directly: the field of wireType that says which
        # kind of type this is, then that type's struct, whose field 0 is CommonType
        kind = type(t)
        common = _common(t.name, self._ids[t])
        if kind is Struct:
            wire = b"\x03" + common
            if t.fields:
                wire += b"\x01" + encode_uint(len(t.fields))
                for name, ft in t.fields:
                    data = name.encode()
                    wire += b"\x01" + encode_uint(len(data)) + data + b"\x01"
                    wire += encode_int(self._id(ft)) + b"\x00"
        elif kind is Slice:
            wire = b"\x02" + common + b"\x01" + encode_int(self._id(t.elem))
        elif kind is Array:
            wire = b"\x01" + common + b"\x01" + encode_int(self._id(t.elem))
            if t.length:
                wire += b"\x01" + encode_int(t.length)
        elif kind is Map:
            wire = b"\x04" + common + b"\x01" + encode_int(self._id(t.key))
            wire += b"\x01" + encode_int(self._id(t.elem))
        else:
            wire = bytes((_WIRE_KINDS.index(t.kind) + 1,)) + common
        msg = encode_int(-self._ids[t]) + wire + b"\x00\x00"  # end of the type, of wireType
        out += encode_uint(len(msg))
        out += msg
        if kind is Struct:
            for _, ft in t.fields:
                self._define(ft, out)
        elif kind is Map:
            self._define(t.key, out)
            self._define(t.elem, out)
        elif kind is not External:
            self._define(t.elem, out)

    def _struct(self, t: Struct, value: Any, out: bytearray) -> None:
        if not isinstance(value, dict):
            raise GobError(
                f"a {t.name or 'struct'} value must be a dict, not {type(value).__name__}"
            )
        last = -1
        for n, (name, ft) in enumerate(t.fields):
            v = value.get(name)
            if _zero(ft, v):
                continue
            out += encode_uint(n - last)
            last = n
            self._value(ft, v, out)
        out.append(0)

    def _value(self, t: Any, v: Any, out: bytearray) -> None:
        kind = type(t)
        try:
            if kind is int:
                if t == STRING:
                    data = v.encode("utf-8", "surrogateescape")
                    out += encode_uint(len(data))
                    out += data
                elif t == INT:
                    if isinstance(v, bool) or not isinstance(v, int):
                        raise TypeError
                    out += encode_int(v)
                elif t == UINT:
                    if isinstance(v, bool) or not isinstance(v, int):
                        raise TypeError
                    out += encode_uint(v)
                elif t == BYTES:
                    data = bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else None
                    if data is None:
                        raise TypeError
                    out += encode_uint(len(data))
                    out += data
                elif t == BOOL:
                    if not isinstance(v, bool):
                        raise TypeError
                    out.append(1 if v else 0)
                elif t == FLOAT:
                    out += encode_uint(_float_bits(float(v)))
                elif t == COMPLEX:
                    c = complex(v)
                    out += encode_uint(_float_bits(c.real))
                    out += encode_uint(_float_bits(c.imag))
                else:
                    raise GobError("interface values are not supported")
            elif kind is Struct:
                self._struct(t, v, out)
            elif kind is Slice or kind is Array:
                if not isinstance(v, (list, tuple)):
                    raise TypeError
                if kind is Array and len(v) != t.length:
                    raise GobError(f"{t.name}: {len(v)} elements for an array of {t.length}")
                out += encode_uint(len(v))
                for item in v:
                    if item is None:
                        raise GobError(f"{t.name}: nil element")
                    self._value(t.elem, item, out)
            elif kind is Map:
                if not isinstance(v, dict):
                    raise TypeError
                out += encode_uint(len(v))
                for key, item in v.items():
                    self._value(t.key, key, out)
                    self._value(t.elem, item, out)
            elif kind is External:
                data = bytes(v)
                out += encode_uint(len(data))
                out += data
            else:
                raise GobError(f"not a gob type: {t!r}")
        except (TypeError, AttributeError):
            name = _BASIC_NAMES.get(t, "") if kind is int else t.name
            raise GobError(f"{type(v).__name__} value {v!r:.40} for a {name}") from None


# -- decoding ------------------------------------------------------------------------------


class _Reader:
    """One message's bytes and a position in them."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def uint(self) -> int:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise GobError("unexpected end of message")
        b = data[pos]
        if b < 128:
            self.pos = pos + 1
            return b
        n = 256 - b
        if n > 8:
            raise GobError(f"invalid unsigned integer length {n}")
        end = pos + 1 + n
        if end > len(data):
            raise GobError("unexpected end of message")
        self.pos = end
        return int.from_bytes(data[pos + 1 : end], "big")

    def int(self) -> int:
        u = self.uint()
        return ~(u >> 1) if u & 1 else u >> 1

    def bytes(self) -> bytes:
        n = self.uint()
        end = self.pos + n
        if end > len(self.data):
            raise GobError(f"a length of {n} runs past the end of the message")
        out = self.data[self.pos : end]
        self.pos = end
        return out


def _read_type(r: _Reader) -> Any:
    """A wireType value -> the type it describes (its inner types as ids). Read
    directly: one field of wireType is set, a struct whose field 0 is the CommonType
    {Name, Id}; then a structType's Field ([]fieldType {Name, Id}), a sliceType's Elem,
    an arrayType's Elem and Len, a mapType's Key and Elem."""
    k = r.uint() - 1
    if not 0 <= k < len(_WIRE_KINDS):
        raise GobError("a type definition must describe exactly one type")
    kind = _WIRE_KINDS[k]
    last = {"ArrayT": 2, "SliceT": 1, "StructT": 1, "MapT": 2}.get(kind, 0)
    name = ""
    ints = [0, 0, 0]
    fields: list[tuple[str, int]] = []
    f = -1
    while delta := r.uint():
        f += delta
        if f == 0:
            name = _read_name_id(r)[0]
        elif f > last:
            raise GobError(f"field number {f} out of range for a {kind}")
        elif kind == "StructT":
            n = r.uint()
            if n > r.left():
                raise GobError(f"{n} fields cannot fit in the rest of the message")
            for _ in range(n):
                fname, fid = _read_name_id(r)
                if not fname:
                    raise GobError(f"empty name for a field of {name or 'a struct'}")
                fields.append((fname, fid))
        else:
            ints[f] = r.int()
    if r.uint() != 0:
        raise GobError("a type definition must describe exactly one type")
    if kind == "StructT":
        return Struct(name, fields)
    if kind == "SliceT":
        return Slice(name, ints[1])
    if kind == "ArrayT":
        return Array(name, ints[1], ints[2])
    if kind == "MapT":
        return Map(name, ints[1], ints[2])
    return External(name, kind)


def _read_name_id(r: _Reader) -> tuple[str, int]:
    """A CommonType or a fieldType: {Name string; Id typeId}."""
    name, tid, f = "", 0, -1
    while delta := r.uint():
        f += delta
        if f == 0:
            name = r.bytes().decode("utf-8", "surrogateescape")
        elif f == 1:
            tid = r.int()
        else:
            raise GobError(f"field number {f} out of range in a type definition")
    return name, tid


class Decoder:
    """The reading side of one stream. `recv(n)` returns up to n bytes (b"" at the end)."""

    def __init__(self, recv: Callable[[int], bytes] | None = None, data: bytes = b"") -> None:
        self._recv = recv
        self._buf = bytearray(data)
        #: the types of this stream by id: the predefined ones and those it defined
        self.types: dict[int, Any] = dict(_PREDEFINED)

    def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = self._recv(max(65536, n - len(self._buf))) if self._recv else b""
            if not chunk:
                return False
            self._buf += chunk
        return True

    def _message(self) -> bytes | None:
        if not self._fill(1):
            return None
        b = self._buf[0]
        if b < 128:
            size, head = b, 1
        else:
            k = 256 - b
            if k > 8:
                raise GobError(f"invalid message length prefix {b:#x}")
            if not self._fill(1 + k):
                raise GobError("the stream ends inside a message length")
            size, head = int.from_bytes(self._buf[1 : 1 + k], "big"), 1 + k
        if size == 0 or size > MAX_MESSAGE:
            raise GobError(f"invalid message length {size}")
        if not self._fill(head + size):
            raise GobError("the stream ends inside a message")
        msg = bytes(self._buf[head : head + size])
        del self._buf[: head + size]
        return msg

    def decode(self) -> tuple[int, Any]:
        """The next value of the stream: (its type id, the value). Type definitions on
        the way are read and kept. EOFError when the stream ends between messages."""
        try:
            while True:
                msg = self._message()
                if msg is None:
                    raise EOFError("end of the gob stream")
                r = _Reader(msg)
                tid = r.int()
                if tid < 0:
                    self._define(-tid, r)
                    continue
                t = self._type(tid)
                if type(t) is Struct:
                    value = self._struct(t, r)
                else:
                    if r.uint() != 0:
                        raise GobError("corrupted data: non-zero delta for a single value")
                    value = self._value(t, r)
                if r.left():
                    raise GobError(f"{r.left()} bytes left over after a value")
                return tid, value
        except RecursionError:
            raise GobError("values nested too deeply") from None

    def _define(self, tid: int, r: _Reader) -> None:
        if tid < _LOWEST_USER_ID or tid in self.types:
            raise GobError(f"duplicate type received (id {tid})")
        t = _read_type(r)
        if r.left():
            raise GobError("extra data after a type definition")
        self.types[tid] = t

    def _type(self, t: Any) -> Any:
        if type(t) is not int or 1 <= t <= 8:
            return t
        try:
            return self.types[t]
        except KeyError:
            raise GobError(f"type id {t} was never defined") from None

    def _struct(self, t: Struct, r: _Reader) -> dict[str, Any]:
        out: dict[str, Any] = {}
        fields = t.fields
        n = -1
        while True:
            delta = r.uint()
            if delta == 0:
                return out
            n += delta
            if n >= len(fields):
                raise GobError(f"field number {n} out of range for {t.name or 'a struct'}")
            name, ft = fields[n]
            out[name] = self._value(ft, r)

    def _value(self, t: Any, r: _Reader) -> Any:
        t = self._type(t)
        kind = type(t)
        if kind is int:
            if t == STRING:
                return r.bytes().decode("utf-8", "surrogateescape")
            if t == INT:
                return r.int()
            if t == UINT:
                return r.uint()
            if t == BYTES:
                return r.bytes()
            if t == BOOL:
                return r.uint() != 0
            if t == FLOAT:
                return _bits_float(r.uint())
            if t == COMPLEX:
                real = _bits_float(r.uint())
                return complex(real, _bits_float(r.uint()))
            raise GobError("interface values are not supported")
        if kind is Struct:
            return self._struct(t, r)
        if kind is Slice or kind is Array:
            n = r.uint()
            if n > r.left():  # every element takes a byte at least
                raise GobError(f"{n} elements cannot fit in the rest of the message")
            if kind is Array and n != t.length:
                raise GobError(f"{n} elements for an array of {t.length}")
            elem = t.elem
            return [self._value(elem, r) for _ in range(n)]
        if kind is Map:
            n = r.uint()
            if n > r.left():
                raise GobError(f"{n} entries cannot fit in the rest of the message")
            out: dict[Any, Any] = {}
            for _ in range(n):
                key = self._value(t.key, r)
                try:
                    out[key] = self._value(t.elem, r)
                except TypeError:
                    raise GobError("map keys of this type are not supported") from None
            return out
        if kind is External:
            return r.bytes()
        raise GobError(f"type id {t} was never defined")


# -- net/rpc -------------------------------------------------------------------------------

REQUEST = Struct("Request", [("ServiceMethod", STRING), ("Seq", UINT)])
RESPONSE = Struct("Response", [("ServiceMethod", STRING), ("Seq", UINT), ("Error", STRING)])
#: struct{}: the reply of a method without one, and what follows an error
EMPTY = Struct("", [])
RPC_PATH = "/_goRPC_"
CONNECTED = "200 Connected to Go RPC"
MAX_HEAD = 8192


class RpcError(Exception):
    """A call's error: `text` is the Response's Error (what a Go client gets as its
    error), `body` what is sent after it (Go sends struct{}; its clients discard it)."""

    def __init__(self, text: str, body_type: Any = EMPTY, body: Any = None) -> None:
        super().__init__(text)
        self.text = text
        self.body_type = body_type
        self.body = {} if body is None else body


def _read_head(recv: Callable[[int], bytes]) -> tuple[str, bytes]:
    """An HTTP/1.x head up to its blank line (Go writes bare LFs); (head, what follows)."""
    data = b""
    while True:
        for end in (b"\r\n\r\n", b"\n\n"):
            i = data.find(end)
            if i >= 0:
                return data[:i].decode("latin-1"), data[i + len(end) :]
        if len(data) > MAX_HEAD:
            raise GobError("no HTTP head within 8 KiB")
        chunk = recv(4096)
        if not chunk:
            raise GobError(f"the connection closed before the HTTP head ended: {data[:60]!r}")
        data += chunk


class Client:
    """A connection to a Go net/rpc server that is served over HTTP (rpc.DialHTTP):
    `sock` is connected; the handshake happens here. Calls are made one at a time."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        sock.sendall(b"CONNECT " + RPC_PATH.encode() + b" HTTP/1.0\n\n")
        head, rest = _read_head(sock.recv)
        status = head.split("\n", 1)[0].strip()
        version, _, reason = status.partition(" ")
        if not version.startswith("HTTP/") or reason != CONNECTED:
            raise GobError(f"unexpected HTTP response: {status[:120]!r}")
        self.enc = Encoder()
        self.dec = Decoder(sock.recv, rest)
        self.seq = 0

    def call(self, method: str, args_type: Any, args: Any) -> tuple[str, Any]:
        """One call: (the Response's Error, "" for none; the reply value)."""
        seq = self.seq
        self.seq += 1
        self.sock.sendall(
            self.enc.encode(REQUEST, {"ServiceMethod": method, "Seq": seq})
            + self.enc.encode(args_type, args)
        )
        _, header = self.dec.decode()
        if not isinstance(header, dict) or header.get("Seq", 0) != seq:
            raise GobError(f"a response that answers no call of ours: {header!r:.80}")
        _, body = self.dec.decode()
        error = header.get("Error", "")
        return (error if isinstance(error, str) else str(error)), body


def _http_error(sock: Any, status: str, text: str) -> None:
    sock.sendall(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Connection: close\r\nContent-Length: {len(text)}\r\n\r\n{text}".encode()
    )


def serve_conn(sock: Any, methods: dict[str, Callable[[Any], tuple[Any, Any]]]) -> None:
    """Serve one accepted connection as Go's http.Serve with rpc.HandleHTTP does: the
    CONNECT handshake on RPC_PATH, then calls in order until the client hangs up.

    `methods` maps "Service.Method" to a function of the decoded argument returning
    (reply type, reply value) or raising RpcError. Unknown names get Go's own errors
    ("rpc: can't find method DHCP.X"), and the connection stays usable after them."""
    head, rest = _read_head(sock.recv)
    parts = head.split("\n", 1)[0].strip().split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        _http_error(sock, "400 Bad Request", "400 Bad Request")
        return
    verb, path, _ = parts
    if path != RPC_PATH:
        _http_error(sock, "404 Not Found", "404 page not found\n")
        return
    if verb != "CONNECT":
        _http_error(sock, "405 Method Not Allowed", "405 must CONNECT\n")
        return
    sock.sendall(b"HTTP/1.0 " + CONNECTED.encode() + b"\n\n")
    enc, dec = Encoder(), Decoder(sock.recv, rest)
    services = {name.rpartition(".")[0] for name in methods}
    while True:
        try:
            _, header = dec.decode()
        except EOFError:
            return
        if not isinstance(header, dict):
            raise GobError("a request header that is not a struct")
        method = header.get("ServiceMethod", "")
        seq = header.get("Seq", 0)
        if not isinstance(method, str) or type(seq) is not int or seq < 0:
            raise GobError(f"a request header that is not net/rpc's: {header!r:.80}")
        error: RpcError | None = None
        reply_type: Any = EMPTY
        reply: Any = {}
        dot = method.rfind(".")
        if dot < 0:
            error = RpcError(f"rpc: service/method request ill-formed: {method}")
        elif method[:dot] not in services:
            error = RpcError(f"rpc: can't find service {method}")
        elif method not in methods:
            error = RpcError(f"rpc: can't find method {method}")
        try:
            _, args = dec.decode()  # read (and for a bad header, discard) the argument
        except EOFError:
            return
        except GobError as exc:  # the stream cannot be followed any further: say why, stop
            sock.sendall(
                enc.encode(RESPONSE, {"ServiceMethod": method, "Seq": seq,
                                      "Error": f"rpc: cannot decode the argument: {exc}"})
                + enc.encode(EMPTY, {})
            )  # fmt: skip
            return
        if error is None:
            try:
                reply_type, reply = methods[method](args)
            except RpcError as exc:
                error = exc
        if error is not None:
            reply_type, reply = error.body_type, error.body
        header = {"ServiceMethod": method, "Seq": seq, "Error": error.text if error else ""}
        sock.sendall(enc.encode(RESPONSE, header) + enc.encode(reply_type, reply))
