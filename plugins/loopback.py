"""loopback: bring `lo` up inside the container's network namespace (the `none` mode).

ADD sets lo up and returns it with its addresses (or passes a prevResult through);
DEL sets it down, and succeeds when the namespace is already gone; CHECK verifies it
is up. Drop-in for the reference `loopback`.
"""

from __future__ import annotations

import os

from pycni import errors, netns, skel
from pycni import version as cniver
from pycni.netlink import Link, Netlink, format_ip

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.result import Result

LOOPBACK = "lo"
LOOPBACK_MAC = "00:00:00:00:00:00"


def _lo(nl: Netlink, netns_path: str) -> Link:
    link = nl.link(LOOPBACK)
    if link is None:
        raise errors.CniError(f"no loopback interface in {netns_path}")
    return link


def cmd_add(args: skel.CmdArgs) -> Result | skel.PassThrough:
    fd = netns.open_netns(args.netns)
    try:
        with Netlink(netns_fd=fd) as nl:
            lo = _lo(nl, args.netns)
            nl.set_link(lo.index, up=True)
            addrs = [(raw, plen) for _i, raw, plen, _f, _s in nl.raw_addrs(index=lo.index)]
    finally:
        os.close(fd)
    prev = args.conf.get("prevResult")
    if prev is not None:
        from pycni.result import parse_result

        # Chained after another plugin: lo is up, the result is theirs to report.
        return parse_result(prev)
    version = args.cni_version
    if not cniver.at_least(version, "0.3.0"):
        import ipaddress

        from pycni.result import Interface, IPConfig, Result

        return Result(
            version,
            interfaces=[Interface(LOOPBACK, LOOPBACK_MAC, args.netns)],
            ips=[
                IPConfig(ipaddress.ip_interface((ipaddress.ip_address(r), p)), None, 0)
                for r, p in addrs
            ],
        )
    return skel.PassThrough(result_wire(version, args.netns, addrs))


def result_wire(version: str, netns_path: str, addrs: list[tuple[bytes, int]]) -> dict[str, Any]:
    """What Result(interfaces=[lo], ips=[each address on interface 0]).to_wire(version)
    prints for versions 0.3.0 and later, built without the result and ipaddress modules
    (their import costs more than this plugin's work; tests compare the two)."""
    old = not cniver.at_least(version, "1.0.0")
    iface: dict[str, Any] = {"name": LOOPBACK, "mac": LOOPBACK_MAC}
    if netns_path:
        iface["sandbox"] = netns_path
    out: dict[str, Any] = {"cniVersion": version, "interfaces": [iface]}
    ips = []
    for raw, plen in addrs:
        ip: dict[str, Any] = {"version": "4" if len(raw) == 4 else "6"} if old else {}
        ip["interface"] = 0
        ip["address"] = f"{format_ip(raw)}/{plen}"
        ips.append(ip)
    if ips:
        out["ips"] = ips
    out["dns"] = {}
    return out


def cmd_del(args: skel.CmdArgs) -> None:
    if not args.netns:
        return
    try:
        fd = netns.open_netns(args.netns)
    except errors.CniError:
        return  # DEL must succeed when there is nothing left to tear down
    try:
        with Netlink(netns_fd=fd) as nl:
            lo = nl.link(LOOPBACK)
            if lo is not None:
                nl.set_link(lo.index, up=False)
    finally:
        os.close(fd)


def cmd_check(args: skel.CmdArgs) -> None:
    if args.conf.get("prevResult") is not None:
        from pycni.result import parse_result

        parse_result(args.conf["prevResult"])  # a malformed one is the caller's mistake (6/7)
    fd = netns.open_netns(args.netns)
    try:
        with Netlink(netns_fd=fd) as nl:
            if not _lo(nl, args.netns).up:
                raise errors.CniError(f"loopback interface is down in {args.netns}")
    finally:
        os.close(fd)


VERBS = skel.Verbs(
    about="pycni loopback plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
)


def main() -> None:
    skel.main(VERBS)
