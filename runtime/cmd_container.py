"""`netctl run/ps/port/inspect/exec/stop/rm/logs`.

`ps` and `port` are on the CLI's fast path (no argparse): this module imports only
what listing records needs; `run` and the rest load theirs when called.
"""

from __future__ import annotations

import os
import sys
import time

from pycni.runtime.cli import print_json
from pycni.runtime.usage import ArgumentError, UsageError

TYPE_CHECKING = False  # typing itself costs a start-up's worth of imports
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pycni.runtime.containers import ContainerRecord
    from pycni.runtime.run import Runtime


def _runtime() -> Runtime:
    from pycni.runtime.run import Runtime

    return Runtime()


def _records() -> list[ContainerRecord]:
    from pycni.runtime.containers import ContainerStore

    return ContainerStore().all()


def _record(ref: str) -> ContainerRecord:
    """Runtime.get without loading the runtime: what the read-only commands need."""
    from pycni.runtime.containers import ContainerStore

    rec = ContainerStore().find(ref)
    if rec is None:
        raise UsageError(f"No such container: {ref}")
    return rec


def cmd_run(args: argparse.Namespace) -> int:
    from pycni.runtime.run import RunOptions

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    opts = RunOptions(
        command=command,
        name=args.name or "",
        network=args.network,
        publish=args.publish or [],
        ip=args.ip or "",
        ip6=args.ip6 or "",
        mac=args.mac_address or "",
        hostname=args.hostname or "",
        dns=args.dns or [],
        dns_search=args.dns_search or [],
        dns_option=args.dns_option or [],
        add_host=args.add_host or [],
        sysctl=args.sysctl or [],
        cap_add=args.cap_add or [],
        cap_drop=args.cap_drop or [],
        privileged=args.privileged,
        detach=args.detach,
        rm=args.rm,
        env=args.env or [],
        env_file=args.env_file or [],
        workdir=args.workdir or "",
        user=args.user or "",
        interactive=args.interactive,
        tty=args.tty,
        expose=args.expose or [],
        publish_all=args.publish_all,
    )
    code: int = _runtime().run(opts)
    return code


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return f"{int(seconds)} second{'s' if int(seconds) != 1 else ''}"
    if seconds < 3600:
        m = int(seconds // 60)
        return "About a minute" if m == 1 else f"{m} minutes"
    h = int(seconds // 3600)
    return "About an hour" if h == 1 else f"{h} hours"


def status_text(rec: ContainerRecord) -> str:
    now = time.time()
    if rec.status == "running":
        return f"Up {_ago(now - rec.started)}"
    if rec.status == "exited":
        return f"Exited ({rec.exit_code}) {_ago(now - (rec.finished or rec.started or rec.created))} ago"
    return rec.status.capitalize()


def _format_ports(rec: ContainerRecord) -> str:
    from pycni.runtime import portview

    return portview.format_ports(rec.ports)


PS_HEADERS = {
    "ID": "CONTAINER ID",
    "Names": "NAMES",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Ports": "PORTS",
    "Status": "STATUS",
    "State": "STATE",
    "Networks": "NETWORKS",
    "Labels": "LABELS",
    "Mounts": "MOUNTS",
    "Size": "SIZE",
}
PS_FILTERS = ("name", "network", "status", "id", "exited")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def ps_filters(values: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"bad format of filter (expected name=value): {item}")
        if key not in PS_FILTERS:
            raise UsageError(f"invalid filter '{key}'")
        if key == "status" and value not in STATUSES:
            raise UsageError(f"invalid filter 'status={value}'")
        if key == "exited" and not value.lstrip("-").isdigit():
            raise UsageError(f"invalid filter 'exited={value}'")
        out.setdefault(key, []).append(value)
    return out


def ps_matches(rec: ContainerRecord, filters: dict[str, list[str]]) -> bool:
    """Docker's semantics: values of one key are alternatives, keys all must match;
    name= is a regular expression searched in the name, network= a network's name or
    ID prefix the container is attached to."""
    if not filters:
        return True  # plain `ps`: no regular expressions on the hot path
    import re

    networks = {a.network for a in rec.attachments} | {rec.network_mode}
    tests = {
        "name": lambda v: re.search(v, rec.name) is not None,
        "id": lambda v: rec.id.startswith(v),
        "status": lambda v: rec.status == v,
        "exited": lambda v: rec.status == "exited" and rec.exit_code == int(v),
        "network": lambda v: v in networks or _network_id_matches(v, networks),
    }
    return all(any(tests[key](v) for v in values) for key, values in filters.items())


def _network_id_matches(prefix: str, names: set[str]) -> bool:
    if len(prefix) < 3:
        return False
    from pycni.runtime.networks import NetworkStore

    try:
        return any(n.id.startswith(prefix) and n.name in names for n in NetworkStore().list())
    except Exception:
        return False


def ps_row(r: ContainerRecord) -> dict[str, str]:
    return {
        "ID": r.short_id,
        "Names": r.name,
        "Image": "",
        "Command": f'"{" ".join(r.command)}"',
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(r.created)),
        "RunningFor": f"{_ago(time.time() - r.created)} ago",
        "Ports": _format_ports(r),
        "Status": status_text(r),
        "State": r.status,
        "Networks": ",".join(a.network for a in r.attachments) or r.network_mode,
        "Labels": "",
        "Mounts": "",
        "Size": "0B",
    }


def cmd_ps(args: argparse.Namespace) -> int:
    filters = ps_filters(getattr(args, "filter", None) or [])
    every = args.all or "status" in filters or "exited" in filters
    records = [r for r in _records() if (every or r.status == "running") and ps_matches(r, filters)]
    if args.quiet:
        for r in records:
            print(r.short_id)
        return 0
    if args.format not in ("table", "json", ""):
        from pycni.runtime import gotemplate

        rows = []
        for r in records:
            row = gotemplate.Context(ps_row(r))
            row.type_name = "*formatter.ContainerContext"
            rows.append(row)
        try:
            sys.stdout.write(gotemplate.render_table(args.format, rows, PS_HEADERS))
        except gotemplate.TemplateError as exc:
            raise UsageError(str(exc)) from None
        return 0
    if args.format == "json":
        import json

        for r in records:
            print(
                json.dumps(
                    {
                        "ID": r.short_id,
                        "Names": r.name,
                        "Command": " ".join(r.command),
                        "Status": status_text(r),
                        "State": r.status,
                        "Ports": _format_ports(r),
                        "Networks": r.network_mode,
                    }
                )
            )
        return 0
    table = [["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]]
    for r in records:
        command = " ".join(r.command)
        if len(command) > 20:
            command = command[:19] + "…"
        table.append(
            [
                r.short_id,
                f'"{command}"',
                f"{_ago(time.time() - r.created)} ago",
                status_text(r),
                _format_ports(r),
                r.name,
            ]
        )
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    for cells in table:
        print("   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return 0


def cmd_port(args: argparse.Namespace) -> int:
    from pycni.runtime import portview

    rec = _record(args.container)
    try:
        lines = portview.format_port_lines(rec.ports, args.port or "")
    except portview.PortSpecError as exc:
        raise UsageError(str(exc)) from None
    if args.port and not lines:
        raise UsageError(
            f"No public port '{args.port if '/' in args.port else args.port + '/tcp'}' published for {args.container}"
        )
    for line in lines:
        print(line)
    return 0


def inspect_doc(rec: ContainerRecord) -> dict[str, object]:
    networks = {}
    for att in rec.attachments:
        v4 = [ip for ip in att.ips if ":" not in ip]
        v6 = [ip for ip in att.ips if ":" in ip]
        networks[att.network] = {
            "IPAddress": v4[0].split("/")[0] if v4 else "",
            "IPPrefixLen": int(v4[0].split("/")[1]) if v4 else 0,
            "Gateway": next((g for g in att.gateways if ":" not in g), ""),
            "GlobalIPv6Address": v6[0].split("/")[0] if v6 else "",
            "GlobalIPv6PrefixLen": int(v6[0].split("/")[1]) if v6 else 0,
            "IPv6Gateway": next((g for g in att.gateways if ":" in g), ""),
            "MacAddress": att.mac,
            "HostVeth": att.host_veth,
            "InterfaceName": att.ifname,
        }
    first: dict[str, object] = next(iter(networks.values()), {})
    if not first:
        first = {"IPPrefixLen": 0, "GlobalIPv6PrefixLen": 0}
    ports: dict[str, list[dict[str, str]]] = {}
    for p in rec.ports:
        ports.setdefault(f"{p.container_port}/{p.protocol}", []).append(
            {"HostIp": p.host_ip, "HostPort": str(p.host_port)}
        )
    return {
        "Id": rec.id,
        "Name": f"/{rec.name}",
        "Created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rec.created)),
        "Path": rec.command[0] if rec.command else "",
        "Args": rec.command[1:],
        "State": {
            "Status": rec.status,
            "Running": rec.status == "running",
            "Pid": rec.pid if rec.status == "running" else 0,
            "ExitCode": rec.exit_code or 0,
        },
        "Config": {"Hostname": rec.hostname, "Cmd": rec.command},
        "HostConfig": {
            "NetworkMode": rec.network_mode,
            "AutoRemove": rec.auto_remove,
            "Dns": rec.dns,
            "DnsSearch": rec.dns_search,
            "DnsOptions": rec.dns_options,
            "ExtraHosts": rec.extra_hosts,
        },
        "NetworkSettings": {
            "SandboxKey": rec.netns,
            # the first network's addresses at the top too, as Docker has them
            **{
                k: first.get(k, "")
                for k in (
                    "IPAddress",
                    "IPPrefixLen",
                    "Gateway",
                    "GlobalIPv6Address",
                    "GlobalIPv6PrefixLen",
                    "IPv6Gateway",
                    "MacAddress",
                )
            },
            "Networks": networks,
            "Ports": ports,
        },
        "LogPath": rec.log_path,
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    rt = _runtime()
    docs = [inspect_doc(rt.get(ref)) for ref in args.containers]
    if args.format and args.format != "json":
        from pycni.runtime import gotemplate

        try:
            sys.stdout.write(gotemplate.render_each(args.format, docs))
        except gotemplate.TemplateError as exc:
            raise UsageError(str(exc)) from None
        return 0
    print_json(docs)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ArgumentError('"netctl exec" requires at least 2 arguments.')
    from pycni.runtime.run import check_process_options

    check_process_options(args)
    code: int = _runtime().exec(
        args.container,
        command,
        env=args.env,
        workdir=args.workdir or "",
        user=args.user or "",
        interactive=args.interactive,
        tty=args.tty,
    )
    return code


def cmd_stop(args: argparse.Namespace) -> int:
    rt = _runtime()
    for ref in args.containers:
        rt.stop(ref, float(args.time))
        print(ref)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    rt = _runtime()
    failed = 0
    for ref in args.containers:
        try:
            rt.remove(ref, force=args.force)
            print(ref)
        except UsageError as exc:
            sys.stderr.write(f"Error: {exc}\n")
            failed = 1
    return failed


def cmd_logs(args: argparse.Namespace) -> int:
    """The container's output (stdout and stderr as they came); --tail N: its last N
    lines; -f: and what follows, until the container has exited."""
    rec = _record(args.container)
    tail = args.tail
    if tail != "all" and not tail.lstrip("-").isdigit():
        raise UsageError(f'invalid value for "tail": {tail}')
    if not rec.log_path or not os.path.exists(rec.log_path):
        if args.follow and rec.status == "running":
            raise UsageError(f"{rec.name} has no log: it was started before netctl kept one")
        return 0  # nothing written yet, or a container from before logs were kept
    out = sys.stdout.buffer
    with open(rec.log_path, "rb") as fh:
        data = fh.read()
        if tail != "all" and int(tail) >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[len(lines) - int(tail) :]) if int(tail) else b""
        out.write(data)
        out.flush()
        while args.follow:
            chunk = fh.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if _record(rec.id).status != "running":
                out.write(fh.read())
                break
            time.sleep(0.1)
    return 0


NOT_HERE = (
    "netctl runs host commands in their own network namespace; "
    "it has no images, volumes or restart policies"
)
REFUSED_RUN_FLAGS = {
    "--volume": "the workload sees the host's file system as it is (no -v/--volume)",
    "--mount": "the workload sees the host's file system as it is (no --mount)",
    "--restart": "a container runs once (no --restart): use a service manager to restart it",
}


def _refusing_action() -> type[argparse.Action]:
    import argparse

    class Refuse(argparse.Action):
        def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
            why = REFUSED_RUN_FLAGS[self.dest_flag]  # type: ignore[attr-defined]
            raise UsageError(f"{NOT_HERE}: {why}")

    return Refuse


def _process_flags(parser: argparse.ArgumentParser) -> None:
    """What `run` and `exec` share: the workload's environment, user, directory, stdio."""
    parser.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--env-file", action="append", default=[], metavar="FILE")
    parser.add_argument("-w", "--workdir", metavar="DIR")
    parser.add_argument("-u", "--user", metavar="UID[:GID]|NAME[:GROUP]")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached")
    parser.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")


# -- `netctl run` without argparse ----------------------------------------------------------
# argparse (with the re, gettext, shutil and locale it loads) is a tenth of a `run --rm
# --network none -- true`; the command lines people type most are parsed here instead, to
# the very namespace argparse builds (tests/unit/test_cli_fast_run.py holds the two equal
# over a corpus). Anything else, a typo included, returns None and goes to argparse.

#: every destination of `run`'s parser with argparse's default
FAST_RUN_DEFAULTS: dict[str, Any] = {
    "name": None,
    "network": "bridge",
    "publish": None,
    "ip": None,
    "ip6": None,
    "mac_address": None,
    "hostname": None,
    "dns": None,
    "dns_search": None,
    "dns_option": None,
    "add_host": None,
    "sysctl": None,
    "cap_add": None,
    "cap_drop": None,
    "privileged": False,
    "env": [],
    "env_file": [],
    "workdir": None,
    "user": None,
    "interactive": False,
    "tty": False,
    "publish_all": False,
    "expose": None,
    "volume": None,
    "mount": None,
    "restart": None,
    "detach": False,
    "rm": False,
}
_FAST_RUN_SWITCHES = {
    "--rm": ("rm",),
    "-d": ("detach",),
    "--detach": ("detach",),
    "-i": ("interactive",),
    "--interactive": ("interactive",),
    "-t": ("tty",),
    "--tty": ("tty",),
    "-it": ("interactive", "tty"),
    "-ti": ("interactive", "tty"),
    "--privileged": ("privileged",),
    "-P": ("publish_all",),
    "--publish-all": ("publish_all",),
}
#: option -> (destination, appends)
_FAST_RUN_VALUES = {
    "--name": ("name", False),
    "--network": ("network", False),
    "--net": ("network", False),
    "-p": ("publish", True),
    "--publish": ("publish", True),
    "--ip": ("ip", False),
    "--ip6": ("ip6", False),
    "-h": ("hostname", False),
    "--hostname": ("hostname", False),
    "-e": ("env", True),
    "--env": ("env", True),
    "-w": ("workdir", False),
    "--workdir": ("workdir", False),
    "-u": ("user", False),
    "--user": ("user", False),
    "--dns": ("dns", True),
    "--expose": ("expose", True),
}


def fast_run_args(words: list[str]) -> dict[str, Any] | None:
    """`run`'s arguments as argparse would parse them, or None when not sure."""
    out = dict(FAST_RUN_DEFAULTS)
    out["env"], out["env_file"] = [], []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--" or not word.startswith("-"):
            out["command"] = words[i:]
            return out
        if word in _FAST_RUN_SWITCHES:
            for dest in _FAST_RUN_SWITCHES[word]:
                out[dest] = True
            i += 1
            continue
        option, eq, value = word.partition("=")
        if not eq:
            if i + 1 >= len(words):
                return None
            value = words[i + 1]
        if option not in _FAST_RUN_VALUES or (eq and not option.startswith("--")):
            return None
        if not value or value.startswith("-"):
            return None  # argparse's own reading (an error, or a negative number) applies
        dest, appends = _FAST_RUN_VALUES[option]
        if appends:
            out[dest] = [*(out[dest] or []), value]
        else:
            out[dest] = value
        i += 1 if eq else 2
    out["command"] = []
    return out


def register(sub: argparse._SubParsersAction) -> None:
    import argparse

    run = sub.add_parser(
        "run", help="run a command in a new network namespace (like docker run)", add_help=False
    )
    run.add_argument("--help", action="help", help="show this help message and exit")
    run.add_argument("--name")
    run.add_argument(
        "--network",
        "--net",
        default="bridge",
        help="none | bridge | host | container:NAME | a network name",
    )
    run.add_argument(
        "-p",
        "--publish",
        action="append",
        metavar="SPEC",
        help="publish a port: [ip:][hostPort:]containerPort[/proto]",
    )
    run.add_argument("--ip")
    run.add_argument("--ip6")
    run.add_argument("--mac-address")
    run.add_argument("-h", "--hostname")
    run.add_argument("--dns", action="append")
    run.add_argument("--dns-search", action="append")
    run.add_argument("--dns-option", action="append")
    run.add_argument("--add-host", action="append", metavar="HOST:IP")
    run.add_argument("--sysctl", action="append", metavar="net.KEY=VALUE")
    run.add_argument("--cap-add", action="append", metavar="CAP", help="add a capability")
    run.add_argument("--cap-drop", action="append", metavar="CAP", help="drop a capability")
    run.add_argument(
        "--privileged", action="store_true", help="every capability (the node's network too)"
    )
    _process_flags(run)
    run.add_argument(
        "-P", "--publish-all", action="store_true", help="publish every --expose'd port"
    )
    run.add_argument("--expose", action="append", metavar="PORT[-END][/PROTO]")
    refuse = _refusing_action()
    for flags in (("-v", "--volume"), ("--mount",), ("--restart",)):
        action = run.add_argument(*flags, action=refuse, help=argparse.SUPPRESS)
        action.dest_flag = flags[-1]
    run.add_argument("-d", "--detach", action="store_true")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    run.set_defaults(func=cmd_run)

    ps = sub.add_parser("ps", help="list containers")
    ps.add_argument("-a", "--all", action="store_true")
    ps.add_argument("-q", "--quiet", action="store_true")
    ps.add_argument("--format", default="table", help="table | json | a Go template")
    ps.add_argument("-f", "--filter", action="append", metavar="KEY=VALUE")
    ps.set_defaults(func=cmd_ps)

    port = sub.add_parser("port", help="list a container's published ports")
    port.add_argument("container")
    port.add_argument("port", nargs="?")
    port.set_defaults(func=cmd_port)

    insp = sub.add_parser("inspect", help="a container's details as JSON")
    insp.add_argument("-f", "--format", default="", help="json | a Go template")
    insp.add_argument("containers", nargs="+")
    insp.set_defaults(func=cmd_inspect)

    ex = sub.add_parser("exec", help="run a command inside a running container's namespaces")
    _process_flags(ex)
    ex.add_argument("container")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)

    stop = sub.add_parser("stop", help="stop running containers (SIGTERM, then SIGKILL)")
    stop.add_argument("-t", "--time", type=int, default=10)
    stop.add_argument("containers", nargs="+")
    stop.set_defaults(func=cmd_stop)

    rm = sub.add_parser("rm", help="remove containers")
    rm.add_argument("-f", "--force", action="store_true")
    rm.add_argument("containers", nargs="+")
    rm.set_defaults(func=cmd_rm)

    logs = sub.add_parser("logs", help="a container's output")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until it exits")
    logs.add_argument("-n", "--tail", default="all", help="the last N lines (default all)")
    logs.add_argument("container")
    logs.set_defaults(func=cmd_logs)
