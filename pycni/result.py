"""CNI results: one in-memory form, every wire version in and out.

Internally a result is always the 1.x shape (`Result`). `parse_result` accepts any
version a previous plugin may have printed (0.1.0 ... 1.1.0) and `Result.to_wire`
prints the version the caller's config asked for:

- 1.0.0 / 1.1.0: interfaces, ips (address, gateway, interface), routes, dns;
  1.1.0 adds route mtu/advmss/priority/table/scope (kept when present).
- 0.3.0 / 0.3.1 / 0.4.0: the same plus ips[].version ("4"/"6"); routes only dst/gw.
- 0.1.0 / 0.2.0: ip4 / ip6 objects (ip, gateway, routes), no interfaces.

Addresses stay in `ipaddress` objects so nothing is done by string slicing.
"""

from __future__ import annotations

import ipaddress

from pycni import errors
from pycni import version as cniver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_ROUTE_EXTRA = ("mtu", "advmss", "priority", "table", "scope")


def _fail(msg: str) -> errors.DecodingFailure:
    return errors.DecodingFailure("invalid result", msg)


def _str(obj: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _fail(f"{where}: missing {key!r}")
        return None
    if not isinstance(value, str):
        raise _fail(f"{where}: {key!r} must be a string")
    return value


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(f"{where}: {key!r} must be a list")
    return value


def _dict(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{where} must be an object")
    return value


def parse_interface_addr(text: str, where: str) -> IPInterface:
    if "/" not in text:
        raise _fail(f"{where}: {text!r} is not an address in CIDR form (e.g. 10.1.0.5/24)")
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise _fail(f"{where}: {text!r} is not an address in CIDR form") from None


def parse_addr(text: str, where: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _fail(f"{where}: {text!r} is not an IP address") from None


def parse_net(text: str, where: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _fail(f"{where}: {text!r} is not a CIDR") from None


class Interface:
    __slots__ = ("extra", "mac", "mtu", "name", "sandbox")

    def __init__(
        self,
        name: str,
        mac: str = "",
        sandbox: str = "",
        mtu: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.mac = mac
        self.sandbox = sandbox
        self.mtu = mtu
        # 1.1.0 fields we carry through untouched (socketPath, pciID).
        self.extra = extra or {}

    def to_wire(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.mtu and cniver.at_least(version, "1.0.0"):
            out["mtu"] = self.mtu
        if self.sandbox:
            out["sandbox"] = self.sandbox
        if cniver.at_least(version, "1.1.0"):
            out.update(self.extra)
        return out


class IPConfig:
    __slots__ = ("address", "gateway", "interface")

    def __init__(
        self, address: IPInterface, gateway: IPAddress | None = None, interface: int | None = None
    ) -> None:
        self.address = address
        self.gateway = gateway
        self.interface = interface

    @property
    def family(self) -> int:
        return self.address.version

    def to_wire(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not cniver.at_least(version, "1.0.0"):
            out["version"] = str(self.address.version)
        if self.interface is not None:
            out["interface"] = self.interface
        out["address"] = str(self.address)
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        return out


class Route:
    __slots__ = ("dst", "extra", "gw")

    def __init__(
        self, dst: IPNetwork, gw: IPAddress | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        self.dst = dst
        self.gw = gw
        # mtu/advmss/priority/table/scope (1.1.0); emitted for >= 1.0.0 when set.
        self.extra = extra or {}

    def to_wire(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        if cniver.at_least(version, "1.0.0"):
            out.update(self.extra)
        return out

    @classmethod
    def from_wire(cls, obj: object, where: str) -> Route:
        d = _dict(obj, where)
        dst = parse_net(_str(d, "dst", where, required=True) or "", where)
        gw_text = _str(d, "gw", where)
        gw = parse_addr(gw_text, where) if gw_text else None
        extra: dict[str, Any] = {}
        for key in _ROUTE_EXTRA:
            if key in d and d[key] is not None:
                value = d[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise _fail(f"{where}: {key!r} must be an integer")
                extra[key] = value
        return cls(dst, gw, extra)


class DNS:
    __slots__ = ("domain", "nameservers", "options", "search")

    def __init__(
        self,
        nameservers: list[str] | None = None,
        domain: str = "",
        search: list[str] | None = None,
        options: list[str] | None = None,
    ) -> None:
        self.nameservers = list(nameservers or [])
        self.domain = domain
        self.search = list(search or [])
        self.options = list(options or [])

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_wire(cls, obj: object, where: str = "dns") -> DNS:
        if obj is None:
            return cls()
        d = _dict(obj, where)
        lists = {}
        for key in ("nameservers", "search", "options"):
            items = _list(d, key, where)
            if not all(isinstance(i, str) for i in items):
                raise _fail(f"{where}: {key!r} must be a list of strings")
            lists[key] = items
        return cls(
            lists["nameservers"], _str(d, "domain", where) or "", lists["search"], lists["options"]
        )


class Result:
    """A CNI result in its 1.x shape."""

    __slots__ = ("cni_version", "dns", "interfaces", "ips", "routes")

    def __init__(
        self,
        cni_version: str = cniver.CURRENT,
        interfaces: list[Interface] | None = None,
        ips: list[IPConfig] | None = None,
        routes: list[Route] | None = None,
        dns: DNS | None = None,
    ) -> None:
        self.cni_version = cni_version
        self.interfaces = list(interfaces or [])
        self.ips = list(ips or [])
        self.routes = list(routes or [])
        self.dns = dns or DNS()

    def to_wire(self, version: str | None = None) -> dict[str, Any]:
        """The result as the given spec version prints it."""
        version = version or self.cni_version
        if not cniver.at_least(version, "0.3.0"):
            return self._to_wire_02(version)
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [i.to_wire(version) for i in self.interfaces]
        if self.ips:
            out["ips"] = [ip.to_wire(version) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_wire(version) for r in self.routes]
        out["dns"] = self.dns.to_wire()
        return out

    def _to_wire_02(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version}
        for family, key in ((4, "ip4"), (6, "ip6")):
            ip = next((i for i in self.ips if i.family == family), None)
            if ip is None:
                continue
            block: dict[str, Any] = {"ip": str(ip.address)}
            if ip.gateway is not None:
                block["gateway"] = str(ip.gateway)
            routes = [r.to_wire("0.2.0") for r in self.routes if r.dst.version == family]
            if routes:
                block["routes"] = routes
            out[key] = block
        if "ip4" not in out and "ip6" not in out:
            raise errors.IncompatibleVersion(
                "cannot convert: no valid IP addresses",
                f"a cniVersion {version} result needs at least one IP address; use cniVersion 0.3.0 or later",
            )
        out["dns"] = self.dns.to_wire()
        return out

    def container_ips(self, ifindex: int | None = None) -> list[IPConfig]:
        """IPs that belong to the interface at `ifindex` (or all when not given)."""
        if ifindex is None:
            return list(self.ips)
        return [ip for ip in self.ips if ip.interface == ifindex]


def chained_prev_result(conf: dict[str, Any], plugin: str) -> Result:
    """The prevResult a chained plugin (bandwidth, sbr, ...) cannot work without."""
    if conf.get("prevResult") is None:
        raise errors.InvalidConfig(
            "must be called as chained plugin",
            f"{plugin} needs the interface plugin's result as prevResult",
        )
    return parse_result(conf["prevResult"])


def parse_result(obj: object, where: str = "prevResult") -> Result:
    """Parse a result of any supported version into the 1.x shape."""
    d = _dict(obj, where)
    raw_version = d.get("cniVersion", cniver.IMPLICIT)
    if not isinstance(raw_version, str):
        raise _fail(f"{where}: 'cniVersion' must be a string")
    if raw_version not in cniver.SUPPORTED:
        raise errors.IncompatibleVersion(
            f"unsupported result version {raw_version!r}",
            f"supported: {', '.join(cniver.SUPPORTED)}",
        )
    dns = DNS.from_wire(d.get("dns"), f"{where}.dns")
    if not cniver.at_least(raw_version, "0.3.0"):
        return _parse_02(d, raw_version, dns, where)
    interfaces: list[Interface] = []
    for n, item in enumerate(_list(d, "interfaces", where)):
        w = f"{where}.interfaces[{n}]"
        idict = _dict(item, w)
        mtu = idict.get("mtu")
        if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int)):
            raise _fail(f"{w}: 'mtu' must be an integer")
        extra = {k: v for k, v in idict.items() if k in ("socketPath", "pciID")}
        interfaces.append(
            Interface(
                _str(idict, "name", w, required=True) or "",
                _str(idict, "mac", w) or "",
                _str(idict, "sandbox", w) or "",
                mtu,
                extra,
            )
        )
    ips: list[IPConfig] = []
    for n, item in enumerate(_list(d, "ips", where)):
        w = f"{where}.ips[{n}]"
        idict = _dict(item, w)
        address = parse_interface_addr(_str(idict, "address", w, required=True) or "", w)
        gw_text = _str(idict, "gateway", w)
        iface = idict.get("interface")
        if iface is not None:
            if isinstance(iface, bool) or not isinstance(iface, int) or iface < 0:
                raise _fail(f"{w}: 'interface' must be a non-negative integer")
            if iface >= len(interfaces):
                raise _fail(f"{w}: 'interface' {iface} is out of range")
        ips.append(IPConfig(address, parse_addr(gw_text, w) if gw_text else None, iface))
    routes = [
        Route.from_wire(r, f"{where}.routes[{n}]") for n, r in enumerate(_list(d, "routes", where))
    ]
    return Result(raw_version, interfaces, ips, routes, dns)


def _parse_02(d: dict[str, Any], raw_version: str, dns: DNS, where: str) -> Result:
    ips: list[IPConfig] = []
    routes: list[Route] = []
    for key in ("ip4", "ip6"):
        if d.get(key) is None:
            continue
        w = f"{where}.{key}"
        block = _dict(d[key], w)
        address = parse_interface_addr(_str(block, "ip", w, required=True) or "", w)
        gw_text = _str(block, "gateway", w)
        ips.append(IPConfig(address, parse_addr(gw_text, w) if gw_text else None))
        routes.extend(
            Route.from_wire(r, f"{w}.routes[{n}]") for n, r in enumerate(_list(block, "routes", w))
        )
    return Result(raw_version, [], ips, routes, dns)
