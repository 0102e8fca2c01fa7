"""static IPAM: the addresses, routes and DNS written in the config, nothing on disk.

Drop-in for the reference `static`. Addresses come from `ipam.addresses`
([{address: CIDR, gateway?}], the host part of the CIDR is the address), then:
CNI_ARGS `IP=` (comma-separated CIDRs) are appended and CNI_ARGS `GATEWAY=` (comma-
separated) is set on every IP= address whose subnet holds it; a non-empty `args.cni.ips`,
then a non-empty runtimeConfig `ips`, each replaces the whole list. DEL has nothing to
undo; CHECK verifies the gateways the prevResult reports for our addresses.
"""

from __future__ import annotations

from pycni import errors, skel
from pycni.ipam import config
from pycni.result import IPConfig, Result, parse_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.ipam.allocator import IPAddress, IPInterface
    from pycni.result import DNS, Route

KNOWN_ARGS = frozenset({"IP", "GATEWAY"})


class StaticAddress:
    __slots__ = ("address", "gateway")

    def __init__(self, address: IPInterface, gateway: IPAddress | None = None) -> None:
        # The container's address with its prefix length (10.1.0.5/24).
        self.address = address
        # The gateway handed out with it, if any.
        self.gateway = gateway


class StaticConf:
    __slots__ = ("addresses", "dns", "routes")

    def __init__(self, addresses: list[StaticAddress], routes: list[Route], dns: DNS) -> None:
        self.addresses = addresses
        self.routes = routes
        self.dns = dns


def _configured(ipam: dict[str, Any]) -> list[StaticAddress]:
    out = []
    for n, item in enumerate(config.optional_list(ipam, "addresses", "ipam")):
        where = f"ipam.addresses[{n}]"
        if not isinstance(item, dict):
            raise errors.InvalidConfig(
                f"{where} must be an object", '{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}'
            )
        text = config.optional_str(item, "address", where)
        if text is None:
            raise errors.InvalidConfig(
                f"{where}.address is missing", 'write the address in CIDR form, e.g. "10.1.0.5/24"'
            )
        address = config.parse_cidr(text, f"{where}.address")
        gw_text = config.optional_str(item, "gateway", where)
        gateway = config.parse_ip(gw_text, f"{where}.gateway") if gw_text is not None else None
        if gateway is not None and gateway.version != address.version:
            raise errors.InvalidConfig(
                f"{where}.gateway {gateway} is not of the same family as address {address}",
                "give each address a gateway of its own family",
            )
        out.append(StaticAddress(address, gateway))
    return out


def _from_cni_args(cni_args: dict[str, str]) -> list[StaticAddress]:
    """CNI_ARGS IP= addresses, with the CNI_ARGS GATEWAY= gateways inside their subnets.
    As with the reference, GATEWAY= applies to the IP= addresses only, never to those
    of ipam.addresses (which keep their configured gateway)."""
    added = []
    try:
        for n, text in enumerate(cni_args.get("IP", "").split(",")):
            if text.strip():
                added.append(StaticAddress(config.parse_cidr(text, f"CNI_ARGS IP[{n}]")))
        for n, text in enumerate(cni_args.get("GATEWAY", "").split(",")):
            if not text.strip():
                continue
            gateway = config.parse_ip(text, f"CNI_ARGS GATEWAY[{n}]")
            for a in added:
                if a.address.version == gateway.version and gateway in a.address.network:
                    a.gateway = gateway
    except errors.InvalidConfig as exc:
        raise errors.InvalidEnvironment(exc.msg, exc.details) from None
    return added


def _replacement(container: dict[str, Any], where: str) -> list[StaticAddress]:
    return [
        StaticAddress(config.parse_cidr(text, f"{where}.ips[{n}]"))
        for n, text in enumerate(config.optional_list(container, "ips", where))
    ]


def load_conf(cmd: skel.CmdArgs) -> StaticConf:
    conf = cmd.conf
    ipam = config.ipam_section(conf)
    cni_args = cmd.cni_args
    skel.check_cni_args(cni_args, KNOWN_ARGS)
    addresses = _configured(ipam) + _from_cni_args(cni_args)
    args = config.optional_dict(conf, "args", "")
    for replacement in (
        _replacement(config.optional_dict(args, "cni", "args"), "args.cni"),
        _replacement(config.optional_dict(conf, "runtimeConfig", ""), "runtimeConfig"),
    ):
        if replacement:
            addresses = replacement
    config.check_legacy_families(cmd.cni_version, [a.address.version for a in addresses])
    return StaticConf(addresses, config.parse_routes(ipam), config.parse_dns(ipam, "dns", "ipam"))


def cmd_add(cmd: skel.CmdArgs) -> Result:
    conf = load_conf(cmd)
    return Result(
        cmd.cni_version,
        ips=[IPConfig(a.address, a.gateway) for a in conf.addresses],
        routes=conf.routes,
        dns=conf.dns,
    )


def cmd_del(cmd: skel.CmdArgs) -> None:
    """Nothing was allocated, so there is nothing to release (the config is not even
    parsed, as with the reference: a DEL must not fail on what ADD left alone)."""


def cmd_check(cmd: skel.CmdArgs) -> None:
    conf = load_conf(cmd)
    prev = cmd.conf.get("prevResult")
    if prev is None:
        raise errors.InvalidConfig(
            "Required prevResult missing", "CHECK needs the ADD result as prevResult"
        )
    reported = parse_result(prev).ips
    for a in conf.addresses:
        for ip in reported:
            if ip.address.ip != a.address.ip:
                continue
            if a.gateway is not None and a.gateway != ip.gateway:
                raise errors.CniError(
                    f"static: Failed to match addr {ip.address.ip} on interface {cmd.ifname}",
                    f"gateway is {ip.gateway}, the configuration says {a.gateway}",
                )
            break


VERBS = skel.Verbs(about="pycni static IPAM plugin", add=cmd_add, delete=cmd_del, check=cmd_check)


def main() -> None:
    skel.main(VERBS)
