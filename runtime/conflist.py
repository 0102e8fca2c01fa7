"""The conflist format: parsing and checking a network's configuration as libcni does
(`ConfListFromBytes`, `ConfListFromConf`, the cniVersion(s) pick), and the summary
`netctl network ls` prints (ID, name, driver), read here without the rest of the
runtime: libcni.py (chains, the result cache) and networks.py (subnets, daemon.json)
build on this module, and `network ls` needs nothing else (see `listing`).
"""

from __future__ import annotations

import os

from pycni import errors, fastjson, names
from pycni import version as cniver
from pycni.fastjson import GoDict
from pycni.record import dataclass

TYPE_CHECKING = False  # typing costs more than `network ls` may spend
if TYPE_CHECKING:
    from hashlib import sha256
    from typing import Any

    from pycni.runtime.paths import Paths
else:
    try:  # the builtin module: hashlib's OpenSSL binding alone costs ~3 ms to load
        from _sha256 import sha256
    except ImportError:  # Python >= 3.12 calls it _sha2
        from hashlib import sha256

DEFAULT_NETWORK = "bridge"
# Bump when networks.default_conflist() changes, so existing bridge.conflist files are rewritten.
DEFAULT_LAYOUT = "2"


class ConfigError(errors.InvalidConfig):
    """A network configuration file that cannot be used."""


@dataclass(frozen=True)
class NetworkConfigList:
    """One network: a name, a version and an ordered chain of plugin configs."""

    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    disable_check: bool = False
    disable_gc: bool = False
    raw: bytes = b""
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        return (
            fastjson.loads(self.raw)
            if self.raw
            else {"cniVersion": self.cni_version, "name": self.name, "plugins": self.plugins}
        )


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"error parsing configuration list: invalid value {value!r} for {key}")


def _pick_version(obj: dict[str, Any]) -> str:
    version = obj.get("cniVersion", "")
    if version and not isinstance(version, str):
        raise ConfigError(
            f"error parsing configuration list: invalid cniVersion type {type(version).__name__}"
        )
    versions = obj.get("cniVersions")
    if versions is None:
        return version or cniver.IMPLICIT
    if not isinstance(versions, list):
        raise ConfigError(
            f"error parsing configuration list: invalid type for cniVersions: {type(versions).__name__}"
        )
    candidates = []
    for n, v in enumerate(versions):
        if not isinstance(v, str):
            raise ConfigError(
                f"error parsing configuration list: invalid type for cniVersions index {n}: {type(v).__name__}"
            )
        try:
            cniver.parse(v)
        except ValueError as exc:
            raise ConfigError(
                f"error parsing configuration list: invalid cniVersions entry {v} at index {n}: {exc}"
            ) from None
        candidates.append(v)
    if version:
        candidates.append(version)
    # The highest version both we and the list know (libcni drops newer ones).
    known = [v for v in candidates if cniver.parse(v) <= cniver.parse(cniver.CURRENT)]
    if not known:
        raise ConfigError(
            "error parsing configuration list: no supported version in cniVersions",
            ", ".join(candidates),
        )
    return max(known, key=cniver.parse)


def conflist_from_bytes(raw: bytes, path: str = "") -> NetworkConfigList:
    where = f" ({path})" if path else ""
    try:
        obj = fastjson.loads(raw, go=True)  # libcni's keys match as Go's
    except ValueError as exc:
        raise ConfigError(f"error parsing configuration list{where}: {exc}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"error parsing configuration list{where}: not a JSON object")
    name = obj.get("name")
    if not name:
        raise ConfigError(f"error parsing configuration list{where}: no name")
    if not isinstance(name, str):
        raise ConfigError(
            f"error parsing configuration list{where}: invalid name type {type(name).__name__}"
        )
    names.validate_network_name(name)
    plugins = obj.get("plugins")
    if plugins is None:
        raise ConfigError(f"error parsing configuration list{where}: no 'plugins' key")
    if not isinstance(plugins, list):
        raise ConfigError(
            f"error parsing configuration list{where}: invalid 'plugins' type {type(plugins).__name__}"
        )
    if not plugins:
        raise ConfigError(f"error parsing configuration list{where}: no plugins in list")
    for n, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise ConfigError(f"failed to parse plugin config {n}{where}: not a JSON object")
        names.validate_type(plugin.get("type"))
    return NetworkConfigList(
        name=name,
        cni_version=_pick_version(obj),
        plugins=plugins,
        disable_check=_bool(obj.get("disableCheck", False), "disableCheck"),
        disable_gc=_bool(obj.get("disableGC", False), "disableGC"),
        raw=raw,
        path=path,
    )


def conflist_from_conf(raw: bytes, path: str = "") -> NetworkConfigList:
    """A single-plugin `.conf` wrapped into a list, as libcni's ConfListFromConf."""
    try:
        obj = fastjson.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"error parsing {path}: {exc}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"error parsing {path}: not a JSON object")
    obj = GoDict(obj)
    if "type" not in obj:
        raise ConfigError(f"error parsing configuration: missing 'type' in {path}")
    wrapped = {
        "cniVersion": obj.get("cniVersion", cniver.IMPLICIT),
        "name": obj.get("name"),
        "plugins": [obj],
    }
    return conflist_from_bytes(fastjson.dumps(wrapped).encode(), path)


# -- what `network ls` shows --------------------------------------------------------------


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    """The conflist's "netctl" object (netctl's own metadata), {} when absent."""
    meta = obj.get("netctl")
    return meta if isinstance(meta, dict) else {}


def network_id(meta: dict[str, Any], name: str) -> str:
    """netctl's id, or for a conflist netctl did not write one derived from its name."""
    value = meta.get("id")
    return value if isinstance(value, str) and value else sha256(f"cni {name}".encode()).hexdigest()


def network_driver(meta: dict[str, Any], plugins: list[dict[str, Any]]) -> str:
    """What `ls` shows as DRIVER: netctl's driver, else the first plugin's type."""
    value = meta.get("driver")
    if isinstance(value, str) and value:
        return value
    return str(plugins[0].get("type", "")) if plugins else ""


def builtin_id(name: str) -> str:
    return sha256(f"netctl builtin network {name}".encode()).hexdigest()


def daemon_digest(paths: Paths) -> str:
    """Identifies daemon.json's bytes (or its absence), the layout of the default
    conflist and the IPAM dir: what bridge.conflist was derived from."""
    ipam_dir = os.path.abspath(paths.ipam_dir)
    h = sha256(f"netctl default network {DEFAULT_LAYOUT}\0{ipam_dir}\0".encode())
    try:
        with open(paths.daemon_config, "rb") as fh:
            h.update(b"file\0" + fh.read())
    except FileNotFoundError:
        h.update(b"absent")
    except OSError as exc:
        # Unreadable: let the full load report it (with the path).
        h.update(f"error {exc.errno}".encode())
    return h.hexdigest()


def listing(paths: Paths) -> list[tuple[str, str, str]] | None:
    """(id, name, driver) of every network, builtins included, sorted by name, as
    networks.NetworkStore.list() has them; None whenever that needs more than reading
    (a default network to write or refresh, a file to report as unusable), and the
    caller then takes the full path."""
    directory = paths.networks
    try:
        with open(os.path.join(directory, f"{DEFAULT_NETWORK}.conflist"), "rb") as fh:
            default = conflist_from_bytes(fh.read())
        names = sorted(os.listdir(directory))
    except (OSError, errors.CniError):
        return None
    meta = _meta(default.to_json())
    source = meta.get("daemonConfig")
    if not isinstance(source, dict) or source.get("digest") != daemon_digest(paths):
        return None  # daemon.json changed: the full path rewrites bridge.conflist
    rows = {
        DEFAULT_NETWORK: (
            network_id(meta, DEFAULT_NETWORK),
            DEFAULT_NETWORK,
            network_driver(meta, default.plugins),
        )
    }
    seen: set[str] = set()
    for ext in (".conflist", ".conf", ".json"):
        for fname in names:
            path = os.path.join(directory, fname)
            if os.path.splitext(fname)[1] != ext or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as fh:
                    raw = fh.read()
                conf = (conflist_from_bytes if ext == ".conflist" else conflist_from_conf)(
                    raw, path
                )
            except (OSError, errors.CniError):
                return None  # the full path reports it
            if conf.name in seen or conf.name in ("host", "none"):
                continue
            seen.add(conf.name)
            if conf.name != DEFAULT_NETWORK:
                meta = _meta(conf.to_json())
                rows[conf.name] = (
                    network_id(meta, conf.name),
                    conf.name,
                    network_driver(meta, conf.plugins),
                )
    for name in ("host", "none"):
        rows[name] = (builtin_id(name), name, "null" if name == "none" else name)
    return [rows[n] for n in sorted(rows)]
