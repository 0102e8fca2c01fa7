"""JSON for the plugin entry path, without importing `re`.

The stdlib `json` package imports `re` (and through it `enum`), which costs more than
a bare interpreter start on small machines. Its C accelerators (`_json`) need none of
that, so plugins parse and print JSON through them. The output is identical to
`json.dumps(obj, separators=(",", ":"))`.
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


_scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]


class JSONError(ValueError):
    """The text is not one well-formed JSON value; `pos` is the offending offset."""

    def __init__(self, msg: str, pos: int) -> None:
        super().__init__(f"{msg} at offset {pos}")
        self.pos = pos


def loads(text: str | bytes) -> Any:
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
        value, i = _scan(text, i)
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


def dumps(obj: Any) -> str:
    """Compact JSON, ASCII-only, like json.dumps(obj, separators=(",", ":"))."""
    return "".join(_encode(obj, 0))
