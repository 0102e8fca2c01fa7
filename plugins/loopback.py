"""loopback: bring `lo` up inside the container's network namespace (the `none` mode).

ADD sets lo up and returns it with its addresses (or passes a prevResult through);
DEL sets it down, and succeeds when the namespace is already gone; CHECK verifies it
is up. Drop-in for the reference `loopback`.
"""

from __future__ import annotations

import os

from pycni import errors, netns, skel
from pycni.netlink import Link, Netlink
from pycni.result import Interface, IPConfig, Result, parse_result

LOOPBACK = "lo"


def _lo(nl: Netlink, netns_path: str) -> Link:
    link = nl.link(LOOPBACK)
    if link is None:
        raise errors.CniError(f"no loopback interface in {netns_path}")
    return link


def cmd_add(args: skel.CmdArgs) -> Result:
    fd = netns.open_netns(args.netns)
    try:
        with Netlink(netns_fd=fd) as nl:
            lo = _lo(nl, args.netns)
            nl.set_link(lo.index, up=True)
            addrs = nl.addrs(index=lo.index)
    finally:
        os.close(fd)
    prev = args.conf.get("prevResult")
    if prev is not None:
        # Chained after another plugin: lo is up, the result is theirs to report.
        return parse_result(prev)
    return Result(
        args.cni_version,
        interfaces=[Interface(LOOPBACK, "00:00:00:00:00:00", args.netns)],
        ips=[IPConfig(a.interface, None, 0) for a in addrs],
    )


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
