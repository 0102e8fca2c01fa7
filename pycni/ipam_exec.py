"""Calling the IPAM plugin named by `ipam.type`: in-process when it is ours.

A delegated IPAM is normally exec'd (one more process per container start). When the
executable found in CNI_PATH is one written by `netctl plugins install` for one of
our IPAM plugins, its verb runs in this process instead, with the same CmdArgs; the
outcome (result or CniError) is identical, only one process start cheaper. Any other
IPAM plugin (the reference host-local, dhcp, whereabouts, ...) is exec'd as usual.
"""

from __future__ import annotations

import os

from pycni import errors, fastjson, invoke, skel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.result import Result

OWN = ("host-local", "static")  # our IPAM plugins a delegating plugin runs in-process
#: IPAM plugins whose DEL needs nothing of the container's interface (they release from
#: their own records), so an interface plugin may remove the link meanwhile; any other
#: (dhcp sends its DHCPRELEASE through the interface) gets the reference's order: IPAM
#: DEL first, then the link.
LINK_FREE = frozenset({"host-local", "static", "etcd-ipam"})


def releases_without_link(kind: str) -> bool:
    return kind in LINK_FREE


def ipam_type(conf: dict[str, object]) -> str:
    ipam = conf.get("ipam")
    if ipam is None:
        return ""
    if not isinstance(ipam, dict):
        raise errors.InvalidConfig(
            "'ipam' must be an object", 'e.g. "ipam": {"type": "host-local", ...}'
        )
    kind = ipam.get("type", "")
    if not isinstance(kind, str):
        raise errors.InvalidConfig("'ipam.type' must be a string")
    return kind


def _own_verbs(path: str, kind: str) -> skel.Verbs | None:
    if os.environ.get("PYCNI_IPAM_EXEC") == "1":  # tests force the exec path
        return None
    name = invoke.own_plugin(path)
    if name != kind or kind not in OWN:
        return None
    from pycni import plugins

    return plugins.load(kind)


def _env(cmd: skel.CmdArgs, command: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(cmd.env())
    env["CNI_COMMAND"] = command
    return env


def run(command: str, cmd: skel.CmdArgs) -> Result | None:
    """Run `command` (ADD, DEL, CHECK, GC, STATUS) of the configured IPAM plugin."""
    kind = ipam_type(cmd.conf)
    path = invoke.find_in_path(kind, cmd.path_list)
    verbs = _own_verbs(path, kind)
    if verbs is not None:
        sub = skel.CmdArgs(
            command,
            cmd.container_id,
            cmd.netns,
            cmd.ifname,
            cmd.args,
            cmd.path,
            cmd.stdin,
            cmd.conf,
        )
        if command == "ADD":
            result = verbs.add(sub)
            assert not isinstance(result, skel.PassThrough)  # host-local, static: allocate
            return result
        verb = {"DEL": verbs.delete, "CHECK": verbs.check, "GC": verbs.gc, "STATUS": verbs.status}[
            command
        ]
        if verb is not None:
            verb(sub)
        return None
    stdin = cmd.stdin or fastjson.dumps(cmd.conf).encode()
    out = invoke.exec_plugin(path, command, stdin, _env(cmd, command))
    if command != "ADD":
        return None
    from pycni.result import parse_result

    try:
        obj = fastjson.loads(out, go=True)
    except ValueError as exc:
        raise errors.DecodingFailure(
            f"IPAM plugin {kind} printed an invalid result", str(exc)
        ) from None
    if isinstance(obj, dict) and not obj.get("cniVersion"):
        obj["cniVersion"] = cmd.cni_version
    return parse_result(obj, f"result of IPAM plugin {kind}")
