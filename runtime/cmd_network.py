"""`netctl network create|ls|inspect|rm|prune` (and `netctl create` for the first).

Output follows `docker network ...`: `create` prints the new id, `ls` a table of
NETWORK ID / NAME / DRIVER / SCOPE (or one JSON object per line), `inspect` a JSON array
shaped like Docker's plus "ConfigFile", `rm` the names it removed, `prune` a
"Deleted Networks:" list. Every error exits 125 with a Docker-style message.
"""

from __future__ import annotations

import sys

from pycni import errors
from pycni.runtime.cli import print_json, print_table
from pycni.runtime.networks import Network, NetworkError, NetworkStore

TYPE_CHECKING = False  # typing and json cost more than `network ls` may spend
if TYPE_CHECKING:
    import argparse
    from typing import Any

FILTER_KEYS = ("name", "id", "driver", "label", "type", "scope")


def _pairs(values: list[str] | None, what: str, require_value: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not key or (require_value and not sep):
            raise NetworkError(f"invalid {what} '{item}': expected KEY=VALUE")
        out[key] = value
    return out


def _warn(messages: list[str]) -> None:
    for m in messages:
        sys.stderr.write(f"netctl: warning: {m}\n")


def _sync_overlays(store: NetworkStore) -> None:
    """Mirror the cluster store's overlay networks into conflists first (only when
    daemon.json names a cluster store: no etcd client is loaded otherwise)."""
    from pycni.runtime import overlay_networks

    if overlay_networks.clustered(store):
        _warn(overlay_networks.sync(store))


# -- create ---------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    aux = {}
    for item in args.aux_address or []:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise NetworkError(f"invalid aux-address '{item}': expected name=IP")
        aux[key] = value
    labels = _pairs(args.label, "label")
    net = NetworkStore().create(
        args.name,
        driver=args.driver,
        subnets=args.subnet or [],
        gateways=args.gateway or [],
        ip_ranges=args.ip_range or [],
        aux_addresses=aux,
        internal=args.internal,
        ipv6=args.ipv6,
        mtu=args.mtu,
        labels=labels,
        options=_pairs(args.opt, "driver option"),
    )
    print(net.id)
    return 0


def _add_create_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NETWORK")
    p.add_argument(
        "-d",
        "--driver",
        default="bridge",
        help="driver to manage the network: bridge, macvlan, ipvlan",
    )
    p.add_argument(
        "--subnet", action="append", help="subnet in CIDR format (repeatable: one per family)"
    )
    p.add_argument("--gateway", action="append", help="IPv4 or IPv6 gateway of a subnet")
    p.add_argument("--ip-range", action="append", help="allocate container IPs from this sub-range")
    p.add_argument(
        "--aux-address",
        action="append",
        metavar="NAME=IP",
        help="address that is never given to a container",
    )
    p.add_argument("--internal", action="store_true", help="restrict external access")
    p.add_argument("--ipv6", action="store_true", help="enable IPv6 (a ULA /64 unless --subnet)")
    p.add_argument("--mtu", type=int, help="MTU of the bridge and the containers' interfaces")
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="metadata")
    p.add_argument(
        "-o",
        "--opt",
        action="append",
        metavar="KEY=VALUE",
        help="driver option: com.docker.network.bridge.{name,enable_icc,"
        "enable_ip_masquerade,host_binding_ipv4}, com.docker.network.driver.mtu; "
        "macvlan: parent, macvlan_mode; ipvlan: parent, ipvlan_mode",
    )
    p.set_defaults(func=cmd_create)


# -- ls -------------------------------------------------------------------------------------


def _filters(values: list[str] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise NetworkError(f"bad format of filter '{item}' (expected name=value)")
        if key not in FILTER_KEYS:
            raise NetworkError(f"invalid filter '{key}'")
        out.setdefault(key, []).append(value)
    return out


def _matches(net: Network, filters: dict[str, list[str]]) -> bool:
    """Values of one key are alternatives; different keys must all match (as docker)."""
    tests = {
        "name": lambda v: v in net.name,
        "id": lambda v: net.id.startswith(v),
        "driver": lambda v: net.driver == v,
        "label": lambda v: (
            v.partition("=")[0] in net.labels
            and ("=" not in v or net.labels[v.partition("=")[0]] == v.partition("=")[2])
        ),
        "type": lambda v: (v == "builtin") == net.builtin,
        "scope": lambda v: v == "local",
    }
    return all(any(tests[key](v) for v in values) for key, values in filters.items())


def cmd_ls(args: argparse.Namespace) -> int:
    filters = _filters(args.filter)
    store = NetworkStore()
    _sync_overlays(store)
    nets = [n for n in store.list() if _matches(n, filters)]
    _warn([f"skipped {p}" for p in store.problems])
    if args.quiet:
        for n in nets:
            print(n.id if args.no_trunc else n.short_id)
        return 0
    if args.format not in ("table", "json"):
        from pycni.runtime import gotemplate

        rows = []
        for n in nets:
            row = gotemplate.Context(
                {
                    "ID": n.id if args.no_trunc else n.short_id,
                    "Name": n.name,
                    "Driver": n.driver,
                    "Scope": "global" if n.driver == "overlay" else "local",
                    "IPv6": str(n.ipv6).lower(),
                    "Internal": str(n.internal).lower(),
                    "Labels": ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())),
                    "CreatedAt": n.created,
                }
            )
            row.type_name = "*formatter.networkContext"
            rows.append(row)
        headers = {"ID": "NETWORK ID", "IPv6": "IPV6", "CreatedAt": "CREATED"}
        try:
            sys.stdout.write(gotemplate.render_table(args.format, rows, headers))
        except gotemplate.TemplateError as exc:
            raise NetworkError(str(exc)) from None
        return 0
    if args.format == "json":
        for n in nets:
            labels = ",".join(f"{k}={v}" for k, v in sorted(n.labels.items()))
            obj = {
                "CreatedAt": n.created,
                "Driver": n.driver,
                "ID": n.id if args.no_trunc else n.short_id,
                "IPv6": str(n.ipv6).lower(),
                "Internal": str(n.internal).lower(),
                "Labels": labels,
                "Name": n.name,
                "Scope": "global" if n.driver == "overlay" else "local",
            }
            import json

            print(json.dumps(obj))
        return 0
    table = [["NETWORK ID", "NAME", "DRIVER", "SCOPE"]]
    table += [
        [
            n.id if args.no_trunc else n.short_id,
            n.name,
            n.driver,
            "global" if n.driver == "overlay" else "local",
        ]
        for n in nets
    ]
    print_table(table)
    return 0


# -- inspect --------------------------------------------------------------------------------


def inspect_obj(net: Network, store: NetworkStore) -> dict[str, Any]:
    """Docker's `network inspect` shape, plus the path of the conflist."""
    from pycni.runtime.containers import ContainerStore

    containers: dict[str, Any] = {}
    records = ContainerStore(store.paths)
    if net.kind in ("host", "none"):
        for rec in records.all():
            if rec.network_mode == net.name and not rec.torn_down:
                containers[rec.id] = {
                    "Name": rec.name,
                    "MacAddress": "",
                    "IPv4Address": "",
                    "IPv6Address": "",
                }
    for rec in records.attached_to(net.name) if net.kind not in ("host", "none") else []:
        for att in rec.attachments:
            if att.network == net.name:
                containers[rec.id] = {
                    "Name": rec.name,
                    "MacAddress": att.mac,
                    "IPv4Address": next((ip for ip in att.ips if ":" not in ip), ""),
                    "IPv6Address": next((ip for ip in att.ips if ":" in ip), ""),
                }
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "global" if net.driver == "overlay" else "local",
        "Driver": net.driver,
        "EnableIPv4": net.kind not in ("host", "none"),
        "EnableIPv6": net.ipv6,
        "IPAM": {
            "Driver": "default",
            "Options": None if net.kind in ("host", "none") else {},
            "Config": [c.to_inspect() for c in net.ipam],
        },
        "Internal": net.internal,
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers,
        "Options": net.options,
        "Labels": net.labels,
        "ConfigFile": net.config_file,
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    store = NetworkStore()
    _sync_overlays(store)
    out, missing = [], []
    for ref in args.networks:
        try:
            out.append(inspect_obj(store.resolve(ref), store))
        except errors.CniError as exc:
            if "not found" not in exc.msg:
                raise
            missing.append(ref)
    if args.format not in ("json", "") and out:
        from pycni.runtime import gotemplate

        try:
            sys.stdout.write(gotemplate.render_each(args.format, out))
        except gotemplate.TemplateError as exc:
            raise NetworkError(str(exc)) from None
    elif out or not missing:
        print_json(out)
    for ref in missing:
        sys.stderr.write(f"Error: No such network: {ref}\n")
    return 125 if missing else 0


# -- rm / prune -----------------------------------------------------------------------------


def cmd_rm(args: argparse.Namespace) -> int:
    store = NetworkStore()
    _sync_overlays(store)
    failed = False
    for ref in args.networks:
        try:
            _net, warnings = store.remove(ref)
        except errors.CniError as exc:
            sys.stderr.write(f"Error: {exc}\n")
            failed = True
            continue
        _warn(warnings)
        print(ref)
    return 125 if failed else 0


def cmd_prune(args: argparse.Namespace) -> int:
    if not args.force:
        sys.stdout.write(
            "WARNING! This will remove all custom networks not used by at least one container.\n"
            "Are you sure you want to continue? [y/N] "
        )
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    removed, warnings = NetworkStore().prune()
    _warn(warnings)
    if removed:
        print("Deleted Networks:")
        for name in removed:
            print(name)
    return 0


# -- connect / disconnect ---------------------------------------------------------------------


def cmd_connect(args: argparse.Namespace) -> int:
    from pycni.runtime.run import NetworkAttach, Runtime

    spec = NetworkAttach(
        network=args.network, ip=args.ip or "", ip6=args.ip6 or "", aliases=args.alias or []
    )
    spec.gw_priority = args.gw_priority
    Runtime().connect(args.network, args.container, spec)
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    from pycni.runtime.run import Runtime

    Runtime().disconnect(args.network, args.container, force=args.force)
    return 0


# -- registration ---------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("network", help="manage networks (CNI conflists)")
    nsub = p.add_subparsers(dest="network_cmd", required=True, metavar="COMMAND")

    _add_create_args(nsub.add_parser("create", help="create a network"))

    ls = nsub.add_parser("ls", aliases=["list"], help="list networks")
    ls.add_argument("-q", "--quiet", action="store_true", help="only network IDs")
    ls.add_argument(
        "-f",
        "--filter",
        action="append",
        metavar="KEY=VALUE",
        help="name=, id=, driver=, label=KEY[=VALUE], type=custom|builtin, scope=local",
    )
    ls.add_argument("--format", default="table", help="table | json | a Go template")
    ls.add_argument("--no-trunc", action="store_true", help="full network IDs")
    ls.set_defaults(func=cmd_ls)

    insp = nsub.add_parser("inspect", help="details of networks as JSON")
    insp.add_argument("networks", nargs="+", metavar="NETWORK")
    insp.add_argument("-f", "--format", default="json", help="json | a Go template")
    insp.set_defaults(func=cmd_inspect)

    rm = nsub.add_parser("rm", aliases=["remove"], help="remove networks without containers")
    rm.add_argument("networks", nargs="+", metavar="NETWORK")
    rm.set_defaults(func=cmd_rm)

    conn = nsub.add_parser("connect", help="connect a container to a network")
    conn.add_argument("--ip", help="IPv4 address")
    conn.add_argument("--ip6", help="IPv6 address")
    conn.add_argument("--alias", action="append", help="a DNS name on this network")
    conn.add_argument("--gw-priority", type=int, default=0, help="default-route priority")
    conn.add_argument("network", metavar="NETWORK")
    conn.add_argument("container", metavar="CONTAINER")
    conn.set_defaults(func=cmd_connect)

    disc = nsub.add_parser("disconnect", help="disconnect a container from a network")
    disc.add_argument("-f", "--force", action="store_true", help="also when the network is gone")
    disc.add_argument("network", metavar="NETWORK")
    disc.add_argument("container", metavar="CONTAINER")
    disc.set_defaults(func=cmd_disconnect)

    prune = nsub.add_parser("prune", help="remove all networks without containers")
    prune.add_argument("-f", "--force", action="store_true", help="do not prompt")
    prune.set_defaults(func=cmd_prune)

    # `netctl create NAME` is `netctl network create NAME` (unless a container command
    # claimed the name first).
    if "create" not in sub.choices:
        _add_create_args(sub.add_parser("create", help="create a network (= network create)"))
