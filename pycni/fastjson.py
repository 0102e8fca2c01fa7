"""JSON for the plugin entry path, without importing `re`.

The stdlib `json` package imports `re` (and through it `enum`), which costs more than
a bare interpreter start on small machines. Its C accelerators (`_json`) need none of
that, so plugins parse and print JSON through them. The output is identical to
`json.dumps(obj, separators=(",", ":"))`.

`loads(text, go=True)` reads objects the way Go's encoding/json fills a struct, which is
how the reference plugins and libcni read every config and result: see `GoDict`.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WS = " \t\n\r"


class _ScannerContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, Any] = {}

    @staticmethod
    def parse_constant(name: str) -> Any:
        # NaN and Infinity are not JSON; CNI configs never contain them.
        raise ValueError(f"{name} is not valid JSON")


def _go_fold(key: str) -> str:
    """Go's case folding of JSON object keys (encoding/json foldName): ASCII letters
    compare without case; other characters through their simple (one-character) case
    mapping, so the Kelvin sign matches K and the long s matches s, but "ß" never
    matches "ss"."""
    if key.isascii():
        return key.upper()
    out = []
    for ch in key:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out).translate(_GO_SPECIAL)


_GO_SPECIAL = {0x212A: "K", 0x17F: "S"}


class GoDict(dict):
    """A decoded JSON object whose lookups behave as Go's encoding/json filling a struct.

    The reference plugins decode configs, runtimeConfig, prevResult and IPAM sections into
    Go structs, and Go matches an object key to a field by its exact spelling, else
    case-insensitively. Runtimes built on go-cni rely on that: containerd sends
    portMappings as `{"HostPort":80,"ContainerPort":8080,"Protocol":"tcp","HostIP":""}`
    (an untagged Go struct), likewise `ipRanges` and `bandwidth`. So `d[key]`, `d.get(key)`
    and `key in d` here look for the exact key first and then for a key that differs only
    in case (the last such key of the object wins, as Go assigns fields in document
    order). Iteration, `len` and serialisation see the keys as they were written, so a
    config handed on to the next plugin is unchanged.
    """

    __slots__ = ()

    def _folded(self, key: object) -> str | None:
        """The key of this object that Go would match to `key` when no key is spelled
        exactly so (None when there is none)."""
        if not isinstance(key, str):
            return None
        want = _go_fold(key)
        found = None
        for k in dict.__iter__(self):
            if isinstance(k, str) and _go_fold(k) == want:
                found = k
        return found

    def __missing__(self, key: str) -> Any:
        k = self._folded(key)
        if k is None:
            raise KeyError(key)
        return dict.__getitem__(self, k)

    def get(self, key: str, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        k = self._folded(key)
        return default if k is None else dict.__getitem__(self, k)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self._folded(key) is not None


class _GoScannerContext(_ScannerContext):
    object_pairs_hook = GoDict  # type: ignore[assignment]


_scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]
_go_scan = _json.make_scanner(_GoScannerContext())  # type: ignore[arg-type]


class JSONError(ValueError):
    """The text is not one well-formed JSON value; `pos` is the offending offset."""

    def __init__(self, msg: str, pos: int) -> None:
        super().__init__(f"{msg} at offset {pos}")
        self.pos = pos


def loads(text: str | bytes, go: bool = False) -> Any:
    """One JSON value; with `go`, every object is a `GoDict` (Go's key matching)."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONError("input is not UTF-8", exc.start) from None
    end = len(text)
    i = 0
    while i < end and text[i] in _WS:
        i += 1
    try:
        value, i = (_go_scan if go else _scan)(text, i)
    except StopIteration as exc:
        raise JSONError("expecting a JSON value", exc.value) from None
    except RecursionError:
        raise JSONError("nesting too deep", 0) from None
    except Exception:
        # Malformed input. The C scanner reports it through json.decoder, which it
        # cannot always import mid-scan; the stdlib parser (imported only on this error
        # path) gives the precise message and offset.
        import json

        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise JSONError(exc.msg, exc.pos) from None
        except (ValueError, RecursionError) as exc:
            raise JSONError(str(exc), 0) from None
        raise JSONError("NaN and Infinity are not valid JSON", 0) from None
    finally:
        _ScannerContext.memo.clear()
    while i < end and text[i] in _WS:
        i += 1
    if i != end:
        raise JSONError("extra data after the JSON value", i)
    return value


def _reject(obj: object) -> object:
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


_encode = _json.make_encoder(
    None, _reject, _json.encode_basestring_ascii, None, ":", ",", False, False, False
)


_encode_sorted = _json.make_encoder(
    None, _reject, _json.encode_basestring_ascii, None, ":", ",", True, False, False
)


def dumps(obj: Any, sort_keys: bool = False) -> str:
    """Compact JSON, ASCII-only, like json.dumps(obj, separators=(",", ":"), sort_keys=...)."""
    return "".join((_encode_sorted if sort_keys else _encode)(obj, 0))
