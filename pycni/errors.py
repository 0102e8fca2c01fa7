"""CNI errors: one class per code of the CNI specification.

    CniError (999 internal, and the base)
     +-- IncompatibleVersion      1   the config's cniVersion is not supported
     +-- UnsupportedField         2   a field the plugin does not know how to honour
     +-- UnknownContainer         3   container unknown or does not exist
     +-- InvalidEnvironment       4   a CNI_* variable is missing or malformed
     +-- IOFailure                5   reading or writing state failed
     +-- DecodingFailure          6   stdin (or a delegate's stdout) is not valid JSON
     +-- InvalidConfig            7   the network configuration is invalid
     +-- TryAgainLater           11   transient: a lock or a resource is busy
     +-- PluginNotAvailable      50   STATUS: the plugin cannot serve ADDs now
     +-- LimitedConnectivity     51   STATUS: available, with limited connectivity

`pycni.skel` is the only place that turns one of these into the error JSON on stdout
and a non-zero exit. Everything else raises; foreign exceptions (OSError, netlink
errors, JSON errors) are translated where they enter, keeping the cause.
"""

from __future__ import annotations


class CniError(Exception):
    """Base class; also used as-is for codes we relay from a delegated plugin."""

    code: int = 999

    def __init__(self, msg: str, details: str = "", code: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self, cni_version: str) -> dict[str, object]:
        out: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


class InternalError(CniError):
    code = 999


class IncompatibleVersion(CniError):
    code = 1


class UnsupportedField(CniError):
    code = 2


class UnknownContainer(CniError):
    code = 3


class InvalidEnvironment(CniError):
    code = 4


class IOFailure(CniError):
    code = 5


class DecodingFailure(CniError):
    code = 6


class InvalidConfig(CniError):
    code = 7


class TryAgainLater(CniError):
    code = 11


class PluginNotAvailable(CniError):
    code = 50


class LimitedConnectivity(CniError):
    code = 51


BY_CODE: dict[int, type[CniError]] = {
    cls.code: cls
    for cls in (
        InternalError,
        IncompatibleVersion,
        UnsupportedField,
        UnknownContainer,
        InvalidEnvironment,
        IOFailure,
        DecodingFailure,
        InvalidConfig,
        TryAgainLater,
        PluginNotAvailable,
        LimitedConnectivity,
    )
}


def from_code(code: int, msg: str, details: str = "") -> CniError:
    """Rebuild an error relayed from another plugin, keeping its code."""
    cls = BY_CODE.get(code, CniError)
    return cls(msg, details, code=code)
