"""`netctl cni add|del|check|gc|status`: run a network's plugin chain by hand (cnitool)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from pycni import errors
from pycni.runtime import libcni
from pycni.runtime.cli import print_json
from pycni.runtime.paths import Paths
from pycni.runtime.usage import UsageError


def conf_dirs(paths: Paths, explicit: str | None = None) -> list[str]:
    """Where networks are looked up: netctl's own, then NETCONFPATH (cnitool's variable)."""
    if explicit:
        return [explicit]
    return [paths.networks, os.environ.get("NETCONFPATH", "/etc/cni/net.d")]


def find_network(name: str, dirs: list[str]) -> libcni.NetworkConfigList:
    for directory in dirs:
        for net in libcni.load_networks(directory):
            if net.name == name:
                return net
    raise UsageError(f"network {name} not found (looked in {', '.join(dirs)})")


def cni_config(paths: Paths) -> libcni.CNIConfig:
    from pycni.runtime import install

    install.ensure(paths.plugin_dir)
    return libcni.CNIConfig(paths.cni_path(), paths.cache_dir)


def _runtime_conf(args: argparse.Namespace) -> libcni.RuntimeConf:
    cap_args = {}
    if args.cap_args:
        try:
            cap_args = json.loads(args.cap_args)
        except ValueError as exc:
            raise UsageError(f"--cap-args is not valid JSON: {exc}") from None
        if not isinstance(cap_args, dict):
            raise UsageError("--cap-args must be a JSON object, e.g. '{\"portMappings\": [...]}'")
    pairs = []
    for pair in (args.args or "").split(";"):
        if pair:
            key, sep, value = pair.partition("=")
            if not sep:
                raise UsageError(f"--args: invalid pair {pair!r}; expected K=V;K=V")
            pairs.append((key, value))
    return libcni.RuntimeConf(
        args.id, os.path.abspath(args.netns) if args.netns else "", args.ifname, pairs, cap_args
    )


def cmd_cni(args: argparse.Namespace) -> int:
    paths = Paths()
    net = find_network(args.network, conf_dirs(paths, args.conf_dir))
    cni = cni_config(paths)
    verb = args.cni_cmd
    if verb in ("add", "del", "check"):
        if not args.id:
            raise UsageError(f"netctl cni {verb} needs --id CONTAINER_ID")
        if verb != "del" and not args.netns:
            raise UsageError(f"netctl cni {verb} needs --netns PATH")
        rt = _runtime_conf(args)
        if verb == "add":
            result = cni.add(net, rt)
            print_json(result.to_wire(net.cni_version))
        elif verb == "del":
            cni.delete(net, rt)
        else:
            cni.check(net, rt)
        return 0
    if verb == "gc":
        valid = []
        for item in args.valid or []:
            cid, _, ifname = item.partition(":")
            valid.append((cid, ifname or "eth0"))
        if not args.valid:
            # Without a list: an attachment is live while its namespace still exists.
            valid = [
                (e["containerId"], e["ifName"])
                for e in cni.cached_attachments(net.name)
                if e.get("netns") and os.path.exists(e["netns"])
            ]
        problems = cni.gc(net, valid)
        for p in problems:
            sys.stderr.write(f"netctl: {p}\n")
        return 1 if problems else 0
    try:
        cni.status(net)
    except errors.CniError as exc:
        sys.stderr.write(f"netctl: network {net.name} not ready: {exc}\n")
        return exc.code if 0 < exc.code < 125 else 1
    print(f"network {net.name}: ready")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cni", help="run a network's CNI plugin chain by hand (like cnitool)")
    csub = p.add_subparsers(dest="cni_cmd", required=True, metavar="VERB")
    for verb, text in (
        ("add", "attach a namespace to NETWORK; prints the result"),
        ("del", "detach it"),
        ("check", "verify the attachment is intact"),
        ("gc", "garbage-collect attachments not in the valid list"),
        ("status", "ask every plugin whether it is ready for ADDs"),
    ):
        v = csub.add_parser(verb, help=text)
        v.add_argument("network")
        v.add_argument("--conf-dir", help="look for NETWORK only in this directory")
        if verb in ("add", "del", "check"):
            v.add_argument(
                "--netns", help="path of the network namespace (e.g. /var/run/netns/NAME)"
            )
            v.add_argument("--id", help="container ID")
            v.add_argument("--ifname", default="eth0")
            v.add_argument(
                "--cap-args", help="capability arguments as JSON (portMappings, ips, mac, ...)"
            )
            v.add_argument("--args", help="CNI_ARGS as K=V;K=V")
        if verb == "add":
            v.add_argument("--format", choices=["json"], default="json")
        if verb == "gc":
            v.add_argument(
                "--valid",
                action="append",
                metavar="CID[:IFNAME]",
                help="a live attachment (repeatable)",
            )
        v.set_defaults(func=cmd_cni)
