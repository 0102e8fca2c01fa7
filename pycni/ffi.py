"""C functions for the plugin entry path, without `import ctypes`.

`ctypes/__init__.py` costs ~3 ms of a plugin start (it builds every C type, imports
struct and the endian helpers) while its C half, `_ctypes`, costs ~0.4 ms; the few
calls a plugin makes (setns, libnftables) need nothing but a function pointer with
its argument and result types, which `_ctypes` gives directly. The types below are
ctypes' own definitions (`class c_int(_SimpleCData): _type_ = "i"`), so calls convert
exactly as they do through ctypes.

    lib = Library(None)                       # the process's own symbols (libc)
    setns = lib.function("setns", c_int, (c_int, c_int))
    if setns(fd, 0) != 0: err = get_errno()
"""

from __future__ import annotations

import _ctypes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


class c_int(_ctypes._SimpleCData):
    _type_ = "i"


class c_uint(_ctypes._SimpleCData):
    _type_ = "I"


class c_bool(_ctypes._SimpleCData):
    _type_ = "?"


class c_void_p(_ctypes._SimpleCData):
    _type_ = "P"


class c_char_p(_ctypes._SimpleCData):
    _type_ = "z"


get_errno: Callable[[], int] = _ctypes.get_errno
RTLD_LOCAL = 0  # ctypes' DEFAULT_MODE on Linux; _ctypes.dlopen adds RTLD_NOW


class Library:
    """A shared library (None: the symbols already in the process, as CDLL(None)).
    Raises OSError when it cannot be loaded, as ctypes.CDLL does."""

    __slots__ = ("_handle", "name")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._handle: int = _ctypes.dlopen(name, RTLD_LOCAL)  # type: ignore[arg-type]

    def function(
        self, name: str, restype: Any = c_int, argtypes: Sequence[Any] = ()
    ) -> Callable[..., Any]:
        """The C function `name`; errno is kept for get_errno() (use_errno=True).
        AttributeError when the library has no such symbol, as with ctypes."""

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = restype
            _argtypes_ = tuple(argtypes)

        # CFuncPtr((name, library)) reads only the library's `_handle`, as from a CDLL.
        fn: Callable[..., Any] = Function((name, self))  # type: ignore[arg-type]
        return fn
