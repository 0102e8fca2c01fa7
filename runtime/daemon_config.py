"""The daemon-style configuration behind the default `bridge` network (Docker's daemon.json).

The file lives at `Paths().daemon_config` (ROOT/etc/netctl/daemon.json, or the path in
NETCTL_DAEMON_CONFIG). A missing file means the defaults below, which are also what
the repository ships in netconf.d/daemon.json. Keys keep Docker's spelling:

    bridge                 name of the default bridge             "netctl0" (Docker: docker0)
    bip                    the bridge's address and prefix       "172.17.0.1/16"
    fixed-cidr             IPv4 slice of bip handed to containers (default: all of bip)
    fixed-cidr-v6          IPv6 subnet of the default bridge; setting it enables IPv6
    ipv6                   true/false; true needs fixed-cidr-v6, false ignores it
    mtu                    MTU of the bridge and the containers' interfaces
    default-gateway        the containers' IPv4 default route, if not bip's address
    default-gateway-v6     the same for IPv6
    dns, dns-search, dns-opts   what the runtime writes into containers' resolv.conf
    cluster-store          etcd://host:port[,...]: the cluster for overlay networks
    cluster-advertise      interface or address of this host on the underlay
    cluster-store-opts     {"kv.cacertfile", "kv.certfile", "kv.keyfile"}: TLS to etcd
    icc                    containers of the default bridge may talk to each other (true)
    ip-masq                masquerade traffic leaving the default bridge (true)
    ip                     default host address for published ports (-p), "0.0.0.0"
    default-address-pools  where `netctl network create` without --subnet picks subnets:
                           [{"base": "10.10.0.0/16", "size": 24}, ...]; Docker's default is
                           172.17.0.0/16 .. 172.31.0.0/16 as /16s, then 192.168.0.0/16 as /20s

Unknown keys are an error (as dockerd refuses a daemon.json with unknown directives), so
a typo never silently falls back to a default. Every validation message names the key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pycni import errors, names
from pycni.runtime import etcfiles

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_BRIDGE_NAME = "netctl0"
DEFAULT_BIP = "172.17.0.1/16"


class DaemonConfigError(errors.InvalidConfig):
    """daemon.json cannot be used; the message names the file and the key."""


def _docker_default_pools() -> list[dict[str, Any]]:
    pools: list[dict[str, Any]] = [{"base": f"172.{n}.0.0/16", "size": 16} for n in range(17, 32)]
    pools.append({"base": "192.168.0.0/16", "size": 20})
    return pools


def _parse_network(value: str, key: str) -> IPNetwork:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid {key} {value!r}: invalid CIDR address") from None
    if "/" not in value:
        raise ValueError(f"invalid {key} {value!r}: write it in CIDR notation, e.g. 10.10.0.0/16")
    if str(net.network_address) != value.split("/", 1)[0].strip():
        raise ValueError(f"invalid {key} {value!r}: host bits set; it should be {net}")
    return net


def _parse_address(value: str, key: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"invalid {key} {value!r}: not an IP address") from None


class AddressPool(BaseModel):
    """One entry of default-address-pools: subnets of `size` bits carved out of `base`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: the pool, e.g. "10.10.0.0/16" (no host bits)
    base: str
    #: the prefix length of each network taken from the pool, e.g. 24
    size: int

    @field_validator("base")
    @classmethod
    def _base(cls, value: str) -> str:
        return str(_parse_network(value, "default-address-pools base"))

    @model_validator(mode="after")
    def _size(self) -> AddressPool:
        net = self.network
        if not net.prefixlen <= self.size <= net.max_prefixlen - 2:
            raise ValueError(
                f"invalid default-address-pools size {self.size} for base {net}: it must be "
                f"between {net.prefixlen} and {net.max_prefixlen - 2}"
            )
        return self

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.base)


class DaemonConfig(BaseModel):
    """daemon.json, validated. Attribute names are the keys with '-' turned into '_'."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, validate_default=True
    )

    #: name of the default bridge's Linux bridge
    bridge: str = DEFAULT_BRIDGE_NAME
    #: the bridge's own address with the subnet's prefix length (Docker's --bip)
    bip: str = DEFAULT_BIP
    #: IPv4 range (inside bip's subnet) that containers get addresses from
    fixed_cidr: str | None = Field(default=None, alias="fixed-cidr")
    #: IPv6 subnet of the default bridge
    fixed_cidr_v6: str | None = Field(default=None, alias="fixed-cidr-v6")
    #: IPv6 on the default bridge; None: on exactly when fixed-cidr-v6 is set
    ipv6: bool | None = None
    #: MTU of the bridge and of the containers' interfaces (None: kernel default)
    mtu: Annotated[int, Field(ge=68, le=65535)] | None = None
    #: containers' IPv4 default gateway when it is not bip's address
    default_gateway: str | None = Field(default=None, alias="default-gateway")
    #: containers' IPv6 default gateway
    default_gateway_v6: str | None = Field(default=None, alias="default-gateway-v6")
    #: nameservers for containers' resolv.conf (empty: the host's)
    dns: list[str] = Field(default_factory=list)
    #: search domains for containers' resolv.conf
    dns_search: list[str] = Field(default_factory=list, alias="dns-search")
    #: resolv.conf options, e.g. "ndots:2"
    dns_opts: list[str] = Field(default_factory=list, alias="dns-opts")
    #: inter-container communication on the default bridge
    icc: bool = True
    #: masquerade traffic from the default bridge to the outside
    ip_masq: bool = Field(default=True, alias="ip-masq")
    #: default host address that published ports bind to
    ip: str = "0.0.0.0"
    #: where auto-picked subnets for new networks come from
    default_address_pools: list[AddressPool] = Field(
        default_factory=lambda: [AddressPool(**p) for p in _docker_default_pools()],
        alias="default-address-pools",
    )

    #: etcd://host:port[,host:port...]: join a cluster for overlay networks (Docker's key)
    cluster_store: str | None = Field(default=None, alias="cluster-store")
    #: interface or address this host's VXLAN traffic uses (the underlay)
    cluster_advertise: str | None = Field(default=None, alias="cluster-advertise")
    #: kv.cacertfile, kv.certfile, kv.keyfile: TLS to the cluster store
    cluster_store_opts: dict[str, str] = Field(default_factory=dict, alias="cluster-store-opts")

    # -- per-key validation -----------------------------------------------------------

    @field_validator("bridge")
    @classmethod
    def _bridge(cls, value: str) -> str:
        if not names.valid_ifname(value):
            raise ValueError(
                f"invalid bridge {value!r}: an interface name has 1-15 characters without "
                "'/', ':' or whitespace"
            )
        return value

    @field_validator("bip")
    @classmethod
    def _bip(cls, value: str) -> str:
        try:
            iface = ipaddress.ip_interface(value)
        except ValueError:
            raise ValueError(f"invalid bip {value!r}: invalid CIDR address") from None
        if "/" not in value or iface.version != 4:
            raise ValueError(
                f"invalid bip {value!r}: write an IPv4 address/prefix, e.g. {DEFAULT_BIP}"
            )
        net = iface.network
        if net.prefixlen > 30:
            raise ValueError(f"invalid bip {value!r}: the subnet is too small (at most /30)")
        if iface.ip in (net.network_address, net.broadcast_address):
            raise ValueError(
                f"invalid bip {value!r}: the bridge needs a host address, e.g. "
                f"{net.network_address + 1}/{net.prefixlen}"
            )
        return str(iface)

    @field_validator("fixed_cidr")
    @classmethod
    def _fixed_cidr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        net = _parse_network(value, "fixed-cidr")
        if net.version != 4:
            raise ValueError(f"invalid fixed-cidr {value!r}: must be an IPv4 subnet")
        return str(net)

    @field_validator("fixed_cidr_v6")
    @classmethod
    def _fixed_cidr_v6(cls, value: str | None) -> str | None:
        if value is None:
            return None
        net = _parse_network(value, "fixed-cidr-v6")
        if net.version != 6:
            raise ValueError(f"invalid fixed-cidr-v6 {value!r}: must be an IPv6 subnet")
        if net.prefixlen > 126:
            raise ValueError(f"invalid fixed-cidr-v6 {value!r}: the subnet is too small")
        return str(net)

    @field_validator("default_gateway")
    @classmethod
    def _default_gateway(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _parse_address(value, "default-gateway").version != 4:
            raise ValueError(f"invalid default-gateway {value!r}: must be an IPv4 address")
        return value

    @field_validator("default_gateway_v6")
    @classmethod
    def _default_gateway_v6(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _parse_address(value, "default-gateway-v6").version != 6:
            raise ValueError(f"invalid default-gateway-v6 {value!r}: must be an IPv6 address")
        return value

    @field_validator("dns")
    @classmethod
    def _dns(cls, value: list[str]) -> list[str]:
        return [str(_parse_address(v, "dns")) for v in value]

    @field_validator("dns_search")
    @classmethod
    def _dns_search(cls, value: list[str]) -> list[str]:
        for v in value:
            try:
                etcfiles.check_dns_search(v)
            except etcfiles.EtcValueError:
                raise ValueError(f"invalid dns-search {v!r}: not a domain name") from None
        return value

    @field_validator("dns_opts")
    @classmethod
    def _dns_opts(cls, value: list[str]) -> list[str]:
        for v in value:
            try:
                etcfiles.check_dns_option(v)
            except etcfiles.EtcValueError:
                raise ValueError(f"invalid dns-opts {v!r}: an option has no whitespace") from None
        return value

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        return str(_parse_address(value, "ip"))

    # -- cross-key validation ---------------------------------------------------------

    @model_validator(mode="after")
    def _consistent(self) -> DaemonConfig:
        subnet = self.subnet
        if self.fixed_cidr is not None:
            fixed = ipaddress.ip_network(self.fixed_cidr)
            if not (isinstance(fixed, ipaddress.IPv4Network) and fixed.subnet_of(subnet)):
                raise ValueError(f"fixed-cidr {fixed} is not inside the bip subnet {subnet}")
        if self.default_gateway is not None:
            gw = ipaddress.ip_address(self.default_gateway)
            if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
                raise ValueError(
                    f"default-gateway {gw} is not a host address of the bip subnet {subnet}"
                )
            if gw == self.gateway:
                raise ValueError(f"default-gateway {gw} is bip's own address; leave it unset")
        if self.ipv6 and self.fixed_cidr_v6 is None:
            raise ValueError(
                "ipv6 is enabled for the default bridge, but no subnet is configured: "
                "set fixed-cidr-v6"
            )
        if self.default_gateway_v6 is not None:
            v6 = self.subnet_v6
            if v6 is None:
                raise ValueError(
                    "default-gateway-v6 needs IPv6 on the default bridge (fixed-cidr-v6)"
                )
            if ipaddress.ip_address(self.default_gateway_v6) not in v6:
                raise ValueError(f"default-gateway-v6 {self.default_gateway_v6} is not inside {v6}")
        return self

    # -- derived values ---------------------------------------------------------------

    @property
    def bip_interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.bip)

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        """The default bridge's IPv4 subnet (bip's network)."""
        return self.bip_interface.network

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """bip's address: the bridge's own address and the containers' gateway."""
        return self.bip_interface.ip

    @property
    def subnet_v6(self) -> ipaddress.IPv6Network | None:
        if self.fixed_cidr_v6 is None or self.ipv6 is False:
            return None
        return ipaddress.IPv6Network(self.fixed_cidr_v6)

    @property
    def pools(self) -> list[tuple[IPNetwork, int]]:
        return [(p.network, p.size) for p in self.default_address_pools]

    def digest(self) -> str:
        """Identifies the effective configuration (formatting and key order do not count)."""
        text = self.model_dump_json(by_alias=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _describe(exc: ValidationError) -> str:
    """The first problem, as one line that names the key."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = f"the following directive doesn't match any configuration option: {loc}"
        elif err.get("type") == "json_invalid":
            msg = f"invalid JSON: {err.get('ctx', {}).get('error', msg)}"
        elif loc and not msg.startswith(("invalid ", loc.split(".")[0])):
            msg = f"{loc}: {msg}"
        parts.append(msg)
    return "; ".join(parts)


def parse(raw: bytes | str, path: str = "daemon.json") -> DaemonConfig:
    """Validate daemon.json's text; DaemonConfigError names the file and the key."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not raw.strip():
        return DaemonConfig()
    try:
        return DaemonConfig.model_validate_json(raw)
    except ValidationError as exc:
        raise DaemonConfigError(f"invalid daemon configuration {path}: {_describe(exc)}") from None


def load(path: str) -> DaemonConfig:
    """The configuration at `path`; the defaults when the file does not exist."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return DaemonConfig()
    except OSError as exc:
        raise DaemonConfigError(
            f"cannot read daemon configuration {path}: {exc.strerror or exc}"
        ) from None
    return parse(raw, path)


def shipped_path() -> str:
    """The default daemon.json that ships in the repository (netconf.d/daemon.json)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(here), "netconf.d", "daemon.json")
