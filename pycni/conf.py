"""Reading typed values out of a plugin's JSON config, with messages that name the key.

Plugin configs are plain dicts (unknown keys are kept: chaining depends on them); each
plugin's config class reads the keys it knows through these, so a wrong type or an
out-of-range value becomes InvalidConfig (code 7) saying which key and what is expected.
"""

from __future__ import annotations

from pycni import errors, names

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _bad(where: str, key: str, expected: str, value: object) -> errors.InvalidConfig:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return errors.InvalidConfig(f"{where}: {key!r} must be {expected}", f"got {shown}")


def get_bool(d: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = d.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(where, key, "true or false", value)
    return value


def get_int(d: dict[str, Any], key: str, default: int, where: str, lo: int, hi: int) -> int:
    value = d.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(where, key, f"an integer between {lo} and {hi}", value)
    if not lo <= value <= hi:
        raise _bad(where, key, f"an integer between {lo} and {hi}", value)
    return value


def get_str(d: dict[str, Any], key: str, default: str, where: str) -> str:
    value = d.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _bad(where, key, "a string", value)
    return value


def get_dict(d: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = d.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(where, key, "an object", value)
    return value


def get_list(d: dict[str, Any], key: str, where: str) -> list[Any]:
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(where, key, "a list", value)
    return value


def validate_link_name(name: str, where: str, key: str) -> str:
    """A Linux interface name: 1-15 bytes, no '/', ':', whitespace, not '.'/'..'."""
    if not names.valid_ifname(name):
        raise errors.InvalidConfig(
            f"{where}: {key!r} is not a valid interface name",
            f"got {name!r}; use 1-15 characters without '/', ':' or whitespace",
        )
    return name


def validate_mac(mac: str, where: str) -> str:
    parts = mac.split(":")
    if len(parts) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    ):
        raise errors.InvalidConfig(
            f"{where}: invalid MAC address {mac!r}", "use the form 02:42:ac:11:00:02"
        )
    if int(parts[0], 16) & 1:
        raise errors.InvalidConfig(
            f"{where}: {mac!r} is a multicast MAC address", "the first octet must be even"
        )
    return mac.lower()


def dns_names(d: dict[str, Any], cni_args: dict[str, str], where: str) -> list[str]:
    """A container's DNS names as CNI runtimes hand them to a plugin: CNI_ARGS
    K8S_POD_NAME (podman, the kubelet), then the runtimeConfig capability `aliases`
    ({network: [names]}, podman's; netctl's: name, aliases, short ID, hostname) for this
    network; each checked to be a DNS name."""
    out: list[str] = []
    pod = cni_args.get("K8S_POD_NAME", "")
    if pod:
        out.append(pod)
    rc = get_dict(d, "runtimeConfig", where)
    aliases = get_dict(rc, "aliases", where).get(d["name"], [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise errors.InvalidConfig(
            f"{where}: runtimeConfig.aliases.{d['name']} must be a list of strings"
        )
    for name in [*out, *aliases]:
        if not (0 < len(name) <= 253 and all(c in names.NAME_CHARS for c in name)):
            raise errors.InvalidConfig(
                f"{where}: {name!r} is not a valid DNS name",
                "use letters, digits, '-', '_' and '.', at most 253 characters",
            )
    return out + [a for a in aliases if a not in out]
