"""CNI specification versions and the rules that depend on them."""

from __future__ import annotations

SUPPORTED = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"
# A config without "cniVersion" is 0.1.0: the field did not exist before 0.2.0.
IMPLICIT = "0.1.0"


def parse(version: str) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); raises ValueError on anything that is not three numbers."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() and p.isascii() for p in parts):
        raise ValueError(f"invalid version {version!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def supports_check(version: str) -> bool:
    return at_least(version, "0.4.0")


def supports_gc_status(version: str) -> bool:
    return at_least(version, "1.1.0")


def version_info_json() -> str:
    quoted = ",".join(f'"{v}"' for v in SUPPORTED)
    return f'{{"cniVersion":"{CURRENT}","supportedVersions":[{quoted}]}}'
