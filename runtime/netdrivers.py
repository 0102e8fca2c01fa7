"""The `macvlan` and `ipvlan` network drivers of `netctl network create`, as Docker
spells them:

    netctl network create -d macvlan -o parent=eth0 [-o macvlan_mode=bridge|private|vepa|passthru]
                          --subnet 192.168.1.0/24 [--gateway 192.168.1.1] NAME
    netctl network create -d ipvlan -o parent=eth0 [-o ipvlan_mode=l2|l3|l3s] ... NAME

The network is one plugin, the reference-compatible `macvlan` or `ipvlan`, with
host-local IPAM: a conflist any CNI runtime can use. The containers' addresses sit on
the parent's LAN, so the gateway is the LAN's router (the subnet's first address unless
--gateway says otherwise) and --internal leaves out the default route. As Docker does,
a parent named like `eth0.10` that does not exist yet is created as VLAN 10 of eth0
(and removed with the network); one parent serves one such network.

Pure planning here (options, the conflist), plus the two kernel-edge helpers for the
parent link; NetworkStore (networks.py) ties them in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pycni.runtime.networks import IPAMConfig

DRIVERS = ("macvlan", "ipvlan")
OPT_PARENT = "parent"
MODE_OPTION = {"macvlan": "macvlan_mode", "ipvlan": "ipvlan_mode"}
MODES = {"macvlan": ("bridge", "private", "vepa", "passthru"), "ipvlan": ("l2", "l3", "l3s")}
OPT_IPVLAN_FLAG = "ipvlan_flag"
OPT_MTU = "com.docker.network.driver.mtu"


@dataclass(frozen=True)
class SublinkOptions:
    """The -o options of a macvlan/ipvlan network, with Docker's defaults."""

    parent: str
    mode: str
    mtu: int | None = None


def parse_options(
    driver: str, options: Mapping[str, str], mtu: int | None = None
) -> SublinkOptions:
    from pycni.runtime.networks import NetworkError, _parse_mtu, valid_ifname

    parent, mode, opt_mtu = "", MODES[driver][0], None
    for key, text in options.items():
        if key == OPT_PARENT:
            if not valid_ifname(text):
                raise NetworkError(
                    f'invalid {key} "{text}": an interface name has 1-15 characters '
                    "without '/', ':' or whitespace"
                )
            parent = text
        elif key == MODE_OPTION[driver]:
            if text not in MODES[driver]:
                raise NetworkError(
                    f'the requested {driver} mode "{text}" is not valid',
                    f"valid modes: {', '.join(MODES[driver])}",
                )
            mode = text
        elif driver == "ipvlan" and key == OPT_IPVLAN_FLAG:
            if text != "bridge":
                raise NetworkError(
                    f'ipvlan flag "{text}" is not supported',
                    "the ipvlan CNI plugin has no flags; only the default (bridge) is possible",
                )
        elif key == OPT_MTU:
            opt_mtu = _parse_mtu(text, key)
        else:
            known = [OPT_PARENT, MODE_OPTION[driver], OPT_MTU]
            if driver == "ipvlan":
                known.append(OPT_IPVLAN_FLAG)
            raise NetworkError(
                f'unknown option "{key}" for driver {driver}', f"known options: {', '.join(known)}"
            )
    if not parent:
        raise NetworkError(
            f"the {driver} driver needs a parent interface",
            "give -o parent=IFACE (the host interface whose LAN the containers join)",
        )
    if mtu is not None:
        _parse_mtu(str(mtu), "--mtu")
        if opt_mtu not in (None, mtu):
            raise NetworkError(f"conflicting MTU: --mtu {mtu} and -o {OPT_MTU}={opt_mtu}")
        opt_mtu = mtu
    return SublinkOptions(parent, mode, opt_mtu)


def conflist(
    name: str,
    driver: str,
    net_id: str,
    created: str,
    configs: list[IPAMConfig],
    opts: SublinkOptions,
    *,
    internal: bool,
    ipv6: bool,
    ipam_dir: str,
    labels: Mapping[str, str],
    options: Mapping[str, str],
    created_parent: bool,
) -> dict[str, Any]:
    """The conflist of a macvlan/ipvlan network: the plugin with host-local."""
    from pycni.runtime.networks import CNI_VERSION, CNI_VERSIONS, _ranges

    plugin: dict[str, Any] = {"type": driver, "master": opts.parent, "mode": opts.mode}
    if opts.mtu is not None:
        plugin["mtu"] = opts.mtu
    if driver == "macvlan":
        plugin["capabilities"] = {"mac": True}  # `netctl run --mac-address`
    ipam: dict[str, Any] = {"type": "host-local", "ranges": _ranges(configs)}
    if not internal:
        ipam["routes"] = [
            {"dst": "0.0.0.0/0" if c.subnet.version == 4 else "::/0", "gw": str(c.gateway)}
            for c in configs
        ]
    ipam["dataDir"] = ipam_dir
    plugin["ipam"] = ipam
    meta: dict[str, Any] = {
        "id": net_id,
        "created": created,
        "driver": driver,
        "labels": dict(labels),
        "options": dict(options),
        "internal": internal,
        "ipv6": ipv6,
        "subnets": [str(c.subnet) for c in configs],
        "gateways": [str(c.gateway) for c in configs],
        "ipRange": {str(c.subnet): str(c.ip_range) for c in configs if c.ip_range is not None},
        "auxAddresses": {k: str(v) for c in configs for k, v in c.aux_addresses.items()},
        "parent": opts.parent,
        "createdParent": created_parent,
    }
    return {
        "cniVersion": CNI_VERSION,
        "cniVersions": CNI_VERSIONS,
        "name": name,
        "plugins": [plugin],
        "netctl": meta,
    }


def parent_in_use(networks: list[Any], parent: str) -> str:
    """The name of the netctl macvlan/ipvlan network already on `parent` ("" if none):
    Docker gives a parent to one such network."""
    for net in networks:
        if net.driver in DRIVERS and net.meta.get("parent") == parent:
            return str(net.name)
    return ""


# -- the kernel edge ----------------------------------------------------------------------


def ensure_parent(parent: str) -> bool:
    """Check the parent link exists; create `eth0.10` as VLAN 10 of eth0 when it does
    not (as Docker does). Returns whether it was created here."""
    from pycni import netlink
    from pycni.netlink import Netlink
    from pycni.runtime.networks import NetworkError

    with Netlink() as nl:
        if nl.link(parent) is not None:
            return False
        base, dot, vid = parent.rpartition(".")
        if not dot or not vid.isdigit() or not 1 <= int(vid) <= 4094 or nl.link(base) is None:
            raise NetworkError(f"-o parent interface was not found on the host: {parent}")
        try:
            nl.add_sublink(
                parent, "vlan", nl.link(base).index,  # type: ignore[union-attr]
                info_data=netlink.nla_u16(netlink.IFLA_VLAN_ID, int(vid)),
            )  # fmt: skip
        except netlink.NetlinkError as exc:
            if exc.errno == netlink.EOPNOTSUPP:
                raise NetworkError(
                    f"cannot create VLAN sub-interface {parent}: this kernel has no 802.1q "
                    "support (kernel module 8021q)",
                    "load it (modprobe 8021q), or give an existing -o parent",
                ) from None
            raise NetworkError(
                f"cannot create VLAN sub-interface {parent}: {exc.strerror}"
            ) from None
        link = nl.link(parent)
        if link is not None:
            nl.set_link(link.index, up=True)
        return True


def release_parent(meta: Mapping[str, Any]) -> list[str]:
    """At `network rm`: delete the VLAN sub-interface netctl created for the network."""
    parent = meta.get("parent")
    if not meta.get("createdParent") or not isinstance(parent, str) or not parent:
        return []
    from pycni import netlink
    from pycni.netlink import Netlink

    try:
        with Netlink() as nl:
            link = nl.link(parent)
            if link is not None and link.kind == "vlan":
                nl.del_link(link.index)
    except netlink.NetlinkError as exc:
        return [f"could not remove parent interface {parent}: {exc.strerror or exc}"]
    return []
