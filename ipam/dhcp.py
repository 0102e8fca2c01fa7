"""dhcp IPAM: addresses from a DHCP server, kept by a resident daemon (drop-in for the
reference `dhcp`).

The reference's model: `dhcp daemon` runs once per node, listens on a unix socket
(/run/cni/dhcp.sock, or `-socketpath`), obtains a lease for each container interface
inside the container's namespace and renews it until the lease is released; the
plugin is a thin client that asks the daemon to Allocate (ADD), Release (DEL) or
check (CHECK) a lease. The daemon lives in `pycni.ipam.dhcp_daemon` and is imported
only by `dhcp daemon`: this module is the plugin's whole start-up path (stdlib only).

Keys (ipam section): `daemonSocketPath`; `provide`: [{option, value | fromArg}] sent to
the server (fromArg names a CNI_ARGS key); `request`: [{option, skipDefault}] asked of
it (routers and subnet-mask unless skipDefault); `priority`: the metric of the routes.
Options are dhcp-options(5) names the reference knows or numbers 0-255.

Wire between plugin and daemon: one JSON object per line each way over the unix
socket, {"method", "args": {containerID, netns, ifname, args, path, stdinData}} and
{"result": ...} or {"error": {code, msg, details}}. (The reference uses Go's net/rpc,
gob-encoded, so neither side can talk to the other implementation's half.)
"""

from __future__ import annotations

import os
import sys

from pycni import conf, errors, fastjson, skel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.result import Result

WHERE = "dhcp"
DEFAULT_SOCKET = "/run/cni/dhcp.sock"
#: how long the plugin waits for the daemon's answer; the daemon gives up on a silent
#: server well before this (its -resendtimeout), so this only catches a stuck daemon
RPC_TIMEOUT = 120.0
OPTION_NAMES = ("dhcp-client-identifier", "subnet-mask", "routers", "host-name", "user-class",
                "vendor-class-identifier")  # fmt: skip


def _option(value: object, where: str) -> str:
    if not isinstance(value, str) or not (
        value in OPTION_NAMES or (value.isdigit() and int(value) <= 255)
    ):
        raise errors.InvalidConfig(
            f"{WHERE}: Can not parse option {value!r} in {where}",
            f"use a number 0-255 or one of {', '.join(OPTION_NAMES)}",
        )
    return value


class DhcpConf:
    """The ipam section as the reference reads it."""

    __slots__ = ("priority", "provide", "request", "skip_default", "socket_path")

    def __init__(self, d: dict[str, Any]) -> None:
        ipam = conf.get_dict(d, "ipam", WHERE)
        #: the daemon's unix socket
        self.socket_path = conf.get_str(ipam, "daemonSocketPath", "", WHERE) or DEFAULT_SOCKET
        #: (option, value, CNI_ARGS key) sent to the server
        self.provide: list[tuple[str, str, str]] = []
        for n, item in enumerate(conf.get_list(ipam, "provide", WHERE)):
            where = f"provide[{n}]"
            if not isinstance(item, dict):
                raise errors.InvalidConfig(
                    f"{WHERE}: {where} must be an object",
                    '{"option": "host-name", "fromArg": "K8S_POD_NAME"}',
                )
            option = _option(item.get("option"), where)
            value = conf.get_str(item, "value", "", f"{WHERE} {where}")
            from_arg = conf.get_str(item, "fromArg", "", f"{WHERE} {where}")
            if len(value.encode()) > 255:
                raise errors.InvalidConfig(
                    f"value too long for option {option!r}", "255 bytes at most"
                )
            self.provide.append((option, value, from_arg))
        #: options asked of the server
        self.request: list[str] = []
        #: do not ask for routers and subnet-mask unless listed
        self.skip_default = False
        for n, item in enumerate(conf.get_list(ipam, "request", WHERE)):
            where = f"request[{n}]"
            if not isinstance(item, dict):
                raise errors.InvalidConfig(
                    f"{WHERE}: {where} must be an object", '{"option": "121", "skipDefault": false}'
                )
            if conf.get_bool(item, "skipDefault", False, f"{WHERE} {where}"):
                self.skip_default = True
            if item.get("option") not in (None, ""):
                self.request.append(_option(item["option"], where))
        #: metric of the routes in the result (0: none)
        self.priority = conf.get_int(ipam, "priority", 0, WHERE, 0, (1 << 32) - 1)

    def values(self, cni_args: str) -> list[tuple[str, str]]:
        """(option, value) to send, CNI_ARGS values filled in, as the reference does."""
        args = {}
        for pair in cni_args.split(";"):
            key, sep, value = pair.partition("=")
            if sep:
                args[key] = value
        out = []
        for option, value, from_arg in self.provide:
            if value:
                out.append((option, value))
            if from_arg and from_arg in args:
                if len(args[from_arg].encode()) > 255:
                    raise errors.InvalidConfig(
                        f"value too long for option {option!r} from CNI_ARGS {from_arg!r}"
                    )
                out.append((option, args[from_arg]))
        return out


# -- the client side of the daemon's socket ------------------------------------------------


def call(socket_path: str, method: str, cmd: skel.CmdArgs, timeout: float = RPC_TIMEOUT) -> Any:
    """One request to the daemon; its error comes back as the CniError it was."""
    import _socket

    netns = os.path.abspath(cmd.netns) if cmd.netns else ""
    request = {
        "method": method,
        "args": {
            "containerID": cmd.container_id, "netns": netns, "ifname": cmd.ifname,
            "args": cmd.args, "path": cmd.path, "stdinData": cmd.stdin.decode(errors="replace")
            or fastjson.dumps(cmd.conf),
        },
    }  # fmt: skip
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.settimeout(2.0)
        try:
            s.connect(socket_path)
        except OSError as exc:
            raise errors.TryAgainLater(
                f"error dialing DHCP daemon: {exc.strerror or exc}",
                f"is `dhcp daemon` running? start it (it listens on {socket_path}; "
                "ipam.daemonSocketPath / -socketpath move it)",
            ) from None
        s.settimeout(timeout)
        try:
            s.sendall(fastjson.dumps(request).encode() + b"\n")
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if chunk.endswith(b"\n"):
                    break
        except TimeoutError:
            raise errors.TryAgainLater(
                f"the DHCP daemon did not answer {method} within {timeout:g}s",
                "it may be stuck; see its log",
            ) from None
        except OSError as exc:
            raise errors.TryAgainLater(
                f"error talking to the DHCP daemon: {exc.strerror or exc}"
            ) from None
    finally:
        s.close()
    try:
        reply = fastjson.loads(b"".join(chunks))
    except ValueError as exc:
        raise errors.TryAgainLater(
            "the DHCP daemon's answer was cut short", f"{exc}; did it exit?"
        ) from None
    if not isinstance(reply, dict):
        raise errors.TryAgainLater("the DHCP daemon's answer is not an object")
    err = reply.get("error")
    if isinstance(err, dict):
        raise errors.from_code(
            int(err.get("code") or 999),
            str(err.get("msg") or "DHCP daemon error"),
            str(err.get("details") or ""),
        )
    return reply.get("result")


# -- verbs -------------------------------------------------------------------------------


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = DhcpConf(cmd.conf)
    c.values(cmd.args)
    wire = call(c.socket_path, "Allocate", cmd)
    from pycni.result import parse_result

    result = parse_result(wire, "the DHCP daemon's result")
    result.cni_version = cmd.cni_version
    return result


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = DhcpConf(cmd.conf)
    try:
        call(c.socket_path, "Release", cmd)
    except errors.TryAgainLater as exc:
        if "dialing" not in exc.msg:
            raise
        # No daemon: no lease is being kept, so there is nothing to release here (the
        # server lets it expire). DEL must not fail the runtime's teardown for that.
        sys.stderr.write(f"dhcp: {exc}; nothing to release\n")


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = DhcpConf(cmd.conf)
    call(c.socket_path, "Check", cmd)


def cmd_gc(cmd: skel.CmdArgs) -> None:
    c = DhcpConf(cmd.conf)
    if skel.valid_attachments(cmd.conf) is None:
        return
    try:
        call(c.socket_path, "GC", cmd)
    except errors.TryAgainLater as exc:
        if "dialing" not in exc.msg:
            raise  # no daemon: no lease is kept, nothing to collect


def cmd_status(cmd: skel.CmdArgs) -> None:
    c = DhcpConf(cmd.conf)
    try:
        call(c.socket_path, "Status", cmd, timeout=5.0)
    except errors.TryAgainLater as exc:
        raise errors.PluginNotAvailable(exc.msg, exc.details) from None


VERBS = skel.Verbs(
    about="pycni dhcp IPAM plugin (`dhcp daemon` runs the lease keeper)",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "daemon":
        from pycni.ipam import dhcp_daemon

        sys.exit(dhcp_daemon.main(sys.argv[2:]))
    skel.main(VERBS)
