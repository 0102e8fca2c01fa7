"""Parsing shared by the IPAM plugins: the `ipam` object, ranges, routes, dns, resolv.conf,
and the requested IPs a runtime passes (CNI_ARGS `IP=`, `args.cni.ips`, runtimeConfig `ips`).

Every error is a `CniError` naming the offending key: InvalidConfig (7) for the
network configuration, InvalidEnvironment (4) for CNI_ARGS. Addresses are parsed by
`ipaddress`, never sliced as strings.
"""

from __future__ import annotations

import ipaddress

from pycni import conf, errors
from pycni.ipam.allocator import Range, RangeSet, check_disjoint
from pycni.result import DNS, Route

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.ipam.allocator import IPAddress, IPInterface, IPNetwork

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
# Route attributes of spec 1.1.0, integers, carried into the result as given.
_ROUTE_EXTRA = ("mtu", "advmss", "priority", "table", "scope")


def _bad(where: str, what: str, fix: str = "") -> errors.InvalidConfig:
    return errors.InvalidConfig(f"{where} {what}", fix)


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def ipam_section(conf: dict[str, Any]) -> dict[str, Any]:
    ipam = conf.get("ipam")
    if ipam is None:
        raise errors.InvalidConfig(
            "IPAM config missing 'ipam' key", 'the network configuration needs an "ipam" object'
        )
    if not isinstance(ipam, dict):
        raise _bad("ipam", "must be an object", 'e.g. "ipam": {"type": "host-local", ...}')
    return ipam


# The typed getters are pycni.conf's: one family, one wording for every plugin
# ("ipam.dns: 'nameservers' must be a list", detail "got 'x'"). These add the IPAM
# spellings of "absent" (an empty string is no string).


def optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    """A string, None when absent or empty."""
    return conf.get_str(obj, key, "", where or "config") or None


def optional_list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    return conf.get_list(obj, key, where or "config")


def optional_dict(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    return conf.get_dict(obj, key, where or "config")


def parse_ip(text: object, where: str) -> IPAddress:
    # A scope ("fe80::1%eth0") would end up in lease file names; the spec has no use for it.
    if not isinstance(text, str) or "%" in text:
        raise _bad(where, f"{text!r} is not an IP address", "write e.g. 10.1.0.1 or fd00::1")
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise _bad(
            where, f"{text!r} is not an IP address", "write e.g. 10.1.0.1 or fd00::1"
        ) from None


def parse_cidr(text: object, where: str) -> IPInterface:
    """An address with a prefix length; the host part is kept (10.1.0.5/24)."""
    if not isinstance(text, str) or "/" not in text or "%" in text:
        raise _bad(where, f"{text!r} is not in CIDR notation", "write e.g. 10.1.0.0/24")
    try:
        return ipaddress.ip_interface(text.strip())
    except ValueError:
        raise _bad(where, f"{text!r} is not in CIDR notation", "write e.g. 10.1.0.0/24") from None


def parse_ip_or_cidr(text: object, where: str) -> IPAddress:
    """A requested IP: a bare address or a CIDR whose mask is ignored."""
    if isinstance(text, str) and "/" in text:
        return parse_cidr(text, where).ip
    return parse_ip(text, where)


# -- ranges ----------------------------------------------------------------------------


def parse_range(obj: object, where: str) -> Range:
    if not isinstance(obj, dict):
        raise _bad(where, "must be an object", 'e.g. {"subnet": "10.1.0.0/24"}')
    subnet_text = optional_str(obj, "subnet", where)
    if subnet_text is None:
        raise _bad(
            f"{where}.subnet", "is missing", 'every range needs a "subnet", e.g. 10.1.0.0/24'
        )
    subnet = parse_cidr(subnet_text, f"{where}.subnet")
    values: dict[str, IPAddress | None] = {}
    for key in ("rangeStart", "rangeEnd", "gateway"):
        text = optional_str(obj, key, where)
        values[key] = parse_ip(text, f"{where}.{key}") if text is not None else None
    return Range.checked(subnet, values["rangeStart"], values["rangeEnd"], values["gateway"], where)


def parse_range_set(obj: object, where: str) -> RangeSet:
    if not isinstance(obj, list):
        raise _bad(
            where,
            "must be a list of ranges (a range set)",
            'e.g. "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]]',
        )
    return RangeSet.checked([parse_range(r, f"{where}[{j}]") for j, r in enumerate(obj)], where)


def range_sets(conf: dict[str, Any], ipam: dict[str, Any]) -> list[RangeSet]:
    """runtimeConfig.ipRanges, then the legacy single range, then ipam.ranges: validated."""
    sets: list[RangeSet] = []
    runtime = optional_dict(conf, "runtimeConfig", "")
    for i, rs in enumerate(optional_list(runtime, "ipRanges", "runtimeConfig")):
        sets.append(parse_range_set(rs, f"runtimeConfig.ipRanges[{i}]"))
    if ipam.get("subnet"):
        sets.append(RangeSet.checked([parse_range(ipam, "ipam")], "ipam"))
    for i, rs in enumerate(optional_list(ipam, "ranges", "ipam")):
        sets.append(parse_range_set(rs, f"ipam.ranges[{i}]"))
    if not sets:
        raise errors.InvalidConfig(
            "no IP ranges specified",
            'set "ipam.ranges" (e.g. [[{"subnet": "10.1.0.0/24"}]]) or "ipam.subnet"',
        )
    check_disjoint(sets)
    return sets


def check_legacy_families(version: str, families: list[int]) -> None:
    """Results of cniVersion 0.1.0/0.2.0 carry one ip4 and one ip6 at most."""
    if version in ("0.1.0", "0.2.0") and (families.count(4) > 1 or families.count(6) > 1):
        raise errors.InvalidConfig(
            f"CNI version {version} does not support more than 1 address per family",
            "use cniVersion 0.3.0 or later, or one range set (address) per family",
        )


# -- requested IPs ---------------------------------------------------------------------


def requested_ips(conf: dict[str, Any], cni_args: dict[str, str]) -> list[IPAddress]:
    """CNI_ARGS IP= (comma separated), then args.cni.ips, then runtimeConfig.ips."""
    out: list[IPAddress] = []
    for n, item in enumerate(cni_args.get("IP", "").split(",")):
        if item.strip():
            try:
                out.append(parse_ip_or_cidr(item, f"CNI_ARGS IP[{n}]"))
            except errors.InvalidConfig as exc:
                raise errors.InvalidEnvironment(exc.msg, exc.details) from None
    args = optional_dict(conf, "args", "")
    cni = optional_dict(args, "cni", "args")
    for n, item in enumerate(optional_list(cni, "ips", "args.cni")):
        out.append(parse_ip_or_cidr(item, f"args.cni.ips[{n}]"))
    runtime = optional_dict(conf, "runtimeConfig", "")
    for n, item in enumerate(optional_list(runtime, "ips", "runtimeConfig")):
        out.append(parse_ip_or_cidr(item, f"runtimeConfig.ips[{n}]"))
    return out


# -- routes and DNS --------------------------------------------------------------------


def parse_routes(ipam: dict[str, Any], where: str = "ipam") -> list[Route]:
    routes = []
    for n, item in enumerate(optional_list(ipam, "routes", where)):
        w = f"{where}.routes[{n}]"
        if not isinstance(item, dict):
            raise _bad(w, "must be an object", 'e.g. {"dst": "0.0.0.0/0"}')
        dst_text = optional_str(item, "dst", w)
        if dst_text is None:
            raise _bad(f"{w}.dst", "is missing", 'every route needs a "dst" CIDR, e.g. 0.0.0.0/0')
        dst: IPNetwork = parse_cidr(dst_text, f"{w}.dst").network
        gw_text = optional_str(item, "gw", w)
        gw = parse_ip(gw_text, f"{w}.gw") if gw_text is not None else None
        if gw is not None and gw.version != dst.version:
            raise _bad(f"{w}.gw", f"{gw} is not of the same family as dst {dst}")
        extra: dict[str, Any] = {}
        for key in _ROUTE_EXTRA:
            value = item.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _bad(f"{w}.{key}", f"must be a non-negative integer, not {value!r}")
            extra[key] = value
        routes.append(Route(dst, gw, extra))
    return routes


def parse_dns(obj: dict[str, Any], key: str, where: str) -> DNS:
    dns = optional_dict(obj, key, where)
    w = f"{where}.{key}"
    lists: dict[str, list[str]] = {}
    for name in ("nameservers", "search", "options"):
        items = optional_list(dns, name, w)
        for n, item in enumerate(items):
            if not isinstance(item, str):
                raise _bad(f"{w}.{name}[{n}]", f"must be a string, not {type(item).__name__}")
        lists[name] = items
    return DNS(
        lists["nameservers"],
        optional_str(dns, "domain", w) or "",
        lists["search"],
        lists["options"],
    )


def parse_resolv_conf(text: str) -> DNS:
    """nameserver / domain / search / options lines; '#' and ';' start comments."""
    dns = DNS()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        keyword, values = fields[0], fields[1:]
        if keyword == "nameserver":
            dns.nameservers.append(values[0])
        elif keyword == "domain":
            dns.domain = values[0]
        elif keyword == "search":
            dns.search.extend(values)
        elif keyword == "options":
            dns.options.extend(values)
    return dns


def read_resolv_conf(path: str, where: str = "ipam.resolvConf") -> DNS:
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except FileNotFoundError:
        raise errors.InvalidConfig(
            f"{where} {path} does not exist", "point resolvConf at a resolv.conf-style file"
        ) from None
    except OSError as exc:
        raise errors.IOFailure(
            f"cannot read {where} {path}: {exc.strerror or exc}",
            "make the file readable or remove resolvConf",
        ) from None
    return parse_resolv_conf(data.decode("utf-8", "replace"))
