"""sbr: source-based routing for a container interface (drop-in for the reference `sbr`).

A chained plugin. For each address the previous plugin gave CNI_IFNAME, inside the
container's namespace:

    ip rule add from ADDR/32 table T        T: the first table from 100 that no rule
                                              and no route uses yet, one per address
    ip route add default via GW table T     GW: `gateways` (one per family) or the
                                              address's gateway in prevResult
    the interface's routes move from main to T

so a packet leaves through the interface its source address belongs to. Each route
goes to the tables of the addresses it belongs to (its `src` or gateway is in the
address's subnet, or it names neither); where the reference drops a route that matches
no address (a default route via an IPv6 link-local gateway, a route via a gateway
outside every subnet: plugins#893, #866), we keep it in every table of its family.
Routes of a family with no address here stay in main (the reference deletes them too,
taking IPv6 link-local routing down with an IPv4-only config).

`table: N` only adds the rules (`from ADDR table N`) and moves nothing;
`addSourceHints: true` keeps the subnet routes in main, with the address as `src`.
DEL deletes the rules whose source is an address of the interface (or, the interface
gone, one of prevResult's). Like the reference, every call holds an flock on the
namespace file, so concurrent sbr calls on one namespace (ours or the reference's)
serialise.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
from functools import partial

from pycni import conf, errors, netns, skel
from pycni.result import IPConfig, Result, chained_prev_result, parse_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pycni.netlink import IPAddress, Netlink, RouteEntry

WHERE = "sbr"
FIRST_TABLE = 100


class SbrConf:
    __slots__ = ("gateways", "source_hints", "table")

    def __init__(self, d: dict[str, Any]) -> None:
        #: fixed table for the rules (routes are then left alone), None: pick per address
        self.table: int | None = None
        if d.get("table") is not None:
            self.table = conf.get_int(d, "table", 0, WHERE, 1, (1 << 32) - 1)
        #: gateway for the default route in each table, per family (overrides prevResult)
        self.gateways: dict[int, IPAddress] = {}
        raw = conf.get_list(d, "gateways", WHERE)
        if len(raw) > 2:
            raise errors.InvalidConfig(
                f"{WHERE}: gateways list cannot contain more than 2 entries",
                "give at most one IPv4 and one IPv6 gateway",
            )
        for item in raw:
            try:
                gw = ipaddress.ip_address(item) if isinstance(item, str) else None
            except ValueError:
                gw = None
            if gw is None:
                raise errors.InvalidConfig(
                    f"{WHERE}: invalid static gateway IP address: {item!r}",
                    "gateways must be IP addresses",
                )
            if gw.version in self.gateways:
                raise errors.InvalidConfig(
                    f"{WHERE}: gateways list contains multiple IPv{gw.version} addresses",
                    f"{self.gateways[gw.version]} and {gw}",
                )
            self.gateways[gw.version] = gw
        #: keep the subnet routes in main (with the address as source hint)
        self.source_hints = conf.get_bool(d, "addSourceHints", False, WHERE)


def ip_configs(prev: Result, ifname: str) -> list[IPConfig]:
    """prevResult's addresses on `ifname` (an address without an interface counts)."""
    if not prev.ips:
        raise errors.InvalidConfig(
            f"No IP addresses supplied on interface: {ifname}",
            "chain sbr after a plugin that assigns addresses",
        )
    out = []
    for ip in prev.ips:
        idx = ip.interface
        if (
            idx is not None
            and 0 <= idx < len(prev.interfaces)
            and prev.interfaces[idx].name != ifname
        ):
            continue
        out.append(ip)
    return out


class _Locked:
    """The container's netns, flock'd as the reference locks it, with a socket in it."""

    def __init__(self, path: str) -> None:
        self.fd = netns.open_netns(path)
        self.nl: Netlink | None = None

    def __enter__(self) -> Netlink:
        from pycni.netlink import Netlink

        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.nl = Netlink(netns_fd=self.fd)
        except BaseException:
            os.close(self.fd)
            raise
        return self.nl

    def __exit__(self, *exc: object) -> None:
        if self.nl is not None:
            self.nl.close()
        os.close(self.fd)  # closing drops the flock


def _host_net(ip: IPConfig) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(ip.address.ip)


def _family(version: int) -> int:
    from pycni.netlink import AF_INET, AF_INET6

    return AF_INET if version == 4 else AF_INET6


def _belongs(r: RouteEntry, ip: IPConfig) -> bool:
    """The reference's test: the route's src or gateway is in the address's subnet, or
    it has neither."""
    net = ip.address.network
    if r.prefsrc is None and r.gateway is None:
        return True
    return (r.prefsrc is not None and r.prefsrc in net) or (
        r.gateway is not None and r.gateway in net
    )


def setup(nl: Netlink, c: SbrConf, ips: list[IPConfig], ifname: str) -> None:
    """The ADD's kernel changes, undone if one fails."""
    from pycni import netlink

    undo: list[Callable[[], object]] = []
    doing = "list rules and routes"
    try:
        if c.table is not None:
            for ip in ips:
                doing = f"add rule from {ip.address.ip} table {c.table}"
                nl.add_rule(c.table, _host_net(ip))
                undo.append(partial(_del_rules, nl, [ip.address.ip], c.table))
            return
        used = {r.table for fam in (netlink.AF_INET, netlink.AF_INET6) for r in nl.rules(fam)}
        used |= {r.table for r in nl.routes(netlink.AF_UNSPEC, table=0)}
        link = nl.link(ifname)
        if link is None:
            raise errors.CniError(f"Cannot find network interface {ifname}")
        routes = [
            r
            for r in nl.routes(netlink.AF_UNSPEC, table=netlink.RT_TABLE_MAIN)
            if r.oif == link.index and r.type == netlink.RTN_UNICAST
        ]
        tables: dict[int, list[int]] = {4: [], 6: []}
        placed: set[int] = set()
        table = FIRST_TABLE
        for ip in ips:
            while table in used:
                table += 1
            used.add(table)
            tables[ip.family].append(table)
            doing = f"add rule from {ip.address.ip} table {table}"
            nl.add_rule(table, _host_net(ip))
            undo.append(partial(_del_rules, nl, [ip.address.ip], table))
            undo.append(partial(_flush_table, nl, table))
            gw = c.gateways.get(ip.family) or ip.gateway
            if gw is not None:
                default = ipaddress.ip_network("0.0.0.0/0" if ip.family == 4 else "::/0")
                doing = f"add default route via {gw} to table {table}"
                try:
                    nl.add_route(default, gw, link.index, table=table, replace=True)
                except netlink.NetlinkError as exc:
                    if exc.errno not in (22, 101):  # EINVAL, ENETUNREACH
                        raise
                    raise errors.InvalidConfig(
                        f"{WHERE}: gateway {gw} is not reachable through {ifname}",
                        f"{exc.kernel_msg or exc.strerror}; give a gateway in {ip.address.network}",
                    ) from None
            for n, r in enumerate(routes):
                if r.dst.version == ip.family and _belongs(r, ip):
                    doing = f"copy route {r.dst} to table {table}"
                    nl.copy_route(r, table)
                    placed.add(n)
        # Keep what matched no address (the reference drops it) in its family's tables.
        for n, r in enumerate(routes):
            if n not in placed:
                for t in tables[r.dst.version]:
                    doing = f"copy route {r.dst} to table {t}"
                    nl.copy_route(r, t)
        # Only then empty main: several addresses may share a subnet's routes.
        for r in routes:
            if not tables[r.dst.version]:
                continue  # no source of this family is routed by source: leave it
            if c.source_hints and r.scope == netlink.RT_SCOPE_LINK:
                continue
            doing = f"move route {r.dst} out of the main table"
            if nl.del_route_entry(r):
                undo.append(partial(nl.copy_route, r, netlink.RT_TABLE_MAIN))
        if c.source_hints:
            for ip in ips:
                doing = f"add subnet route {ip.address.network} src {ip.address.ip}"
                nl.add_route(
                    ip.address.network, None, link.index, scope=netlink.RT_SCOPE_LINK,
                    replace=True, protocol=netlink.RTPROT_KERNEL, src=ip.address.ip,
                )  # fmt: skip
    except BaseException as exc:
        for step in reversed(undo):
            try:
                step()
            except OSError:
                pass
        if isinstance(exc, OSError):
            from pycni import netsetup

            raise netsetup.kernel_error(exc, doing) from None
        raise


def _flush_table(nl: Netlink, table: int) -> None:
    for r in nl.routes(table=table):
        nl.del_route_entry(r)


def _del_rules(nl: Netlink, sources: list[Any], table: int | None) -> None:
    """Delete the rules whose source is exactly one of `sources` (in `table` if given)."""
    from pycni import netlink

    wanted = {ipaddress.ip_network(a) for a in sources}
    for fam in (netlink.AF_INET, netlink.AF_INET6):
        for rule in nl.rules(fam):
            if rule.src in wanted and (table is None or rule.table == table):
                nl.del_rule(rule)


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = SbrConf(cmd.conf)
    prev = chained_prev_result(cmd.conf, WHERE)
    ips = ip_configs(prev, cmd.ifname)
    with _Locked(cmd.netns) as nl:
        setup(nl, c, ips, cmd.ifname)
    return prev


def cmd_del(cmd: skel.CmdArgs) -> None:
    try:
        c = SbrConf(cmd.conf)
        table = c.table
    except errors.CniError:
        table = None  # a bad key must not keep DEL from removing the rules
    sources: list[Any] = []
    if cmd.conf.get("prevResult") is not None:
        try:
            prev = parse_result(cmd.conf["prevResult"])
            sources = [ip.address.ip for ip in _on(prev, cmd)]
        except errors.CniError:
            sources = []
    if not cmd.netns:
        return
    try:
        locked = _Locked(cmd.netns)
    except errors.CniError:
        return  # the namespace is gone, and its rules with it
    with locked as nl:
        link = nl.link(cmd.ifname)
        if link is not None:
            sources += [a.interface.ip for a in nl.addrs(link.index)]
        if sources:
            try:
                _del_rules(nl, sources, table)
            except OSError as exc:
                from pycni import netsetup

                raise netsetup.kernel_error(exc, "delete rules") from None


def _on(prev: Result, cmd: skel.CmdArgs) -> list[IPConfig]:
    try:
        return ip_configs(prev, cmd.ifname)
    except errors.CniError:
        return []


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = SbrConf(cmd.conf)
    prev = chained_prev_result(cmd.conf, WHERE)
    ips = ip_configs(prev, cmd.ifname)
    from pycni import netlink

    with _Locked(cmd.netns) as nl:
        rules = [r for fam in (netlink.AF_INET, netlink.AF_INET6) for r in nl.rules(fam)]
    for ip in ips:
        src = _host_net(ip)
        if not any(r.src == src and (c.table is None or r.table == c.table) for r in rules):
            raise errors.CniError(
                f"{WHERE} CHECK failed: no rule from {ip.address.ip}",
                f"expected a rule selecting table {c.table}" if c.table else "",
            )


VERBS = skel.Verbs(about="pycni sbr plugin", add=cmd_add, delete=cmd_del, check=cmd_check)


def main() -> None:
    skel.main(VERBS)
