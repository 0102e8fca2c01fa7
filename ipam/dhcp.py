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

Wire between plugin and daemon: the reference's, so the halves mix (our plugin with
the reference `dhcp daemon`, say a distribution's systemd unit, or the reference plugin
with ours): Go's net/rpc over the unix socket, after rpc.DialHTTP's HTTP CONNECT
handshake, gob-encoded (pycni.gob). Methods "DHCP.Allocate" (ADD; the reference plugin
also sends it for CHECK) and "DHCP.Release" (DEL) take skel.CmdArgs (ContainerID,
Netns, IfName, Args, Path, StdinData) and answer a current.Result or struct{}; our
daemon also has DHCP.Check, DHCP.GC and DHCP.Status, and against a daemon without them
(the reference's answers "rpc: can't find method") CHECK falls back to Allocate as the
reference plugin does, GC collects nothing and STATUS is satisfied by the answer. An
error is the Response's text; ours is followed by the CNI error itself (code, msg,
details), which Go's client discards and our plugin reports as is. The reference
daemon's texts get codes by what they say (REFERENCE_ERRORS: 7 for the config, 3/4
for a namespace or interface that is not there, 11 when no server answered), 999
otherwise; the reference plugin reports all of them as 999.
"""

from __future__ import annotations

import os
import sys

from pycni import conf, errors, fastjson, gob, skel, unixpath

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
        value in OPTION_NAMES or (value.isascii() and value.isdigit() and int(value) <= 255)
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

#: skel.CmdArgs as net/rpc sends it: the field set of CNI v1.2+ (NetnsOverride is new
#: there; a daemon built on an older CNI library ignores it, fields match by name)
CMD_ARGS = gob.Struct("CmdArgs", [
    ("ContainerID", gob.STRING), ("Netns", gob.STRING), ("IfName", gob.STRING),
    ("Args", gob.STRING), ("Path", gob.STRING), ("NetnsOverride", gob.STRING),
    ("StdinData", gob.BYTES),
])  # fmt: skip
#: what our daemon sends after an error's text: the CNI error itself (types.Error's
#: fields), so that our plugin reports the daemon's code; Go clients discard it
CNI_ERROR = gob.Struct("Error", [("Code", gob.UINT), ("Msg", gob.STRING), ("Details", gob.STRING)])
#: the reference daemon's errors (plugins/ipam/dhcp, v1.1 to v1.9) that are not
#: internal ones: (a fragment of its text, the CNI code); anything else is 999, as the
#: reference plugin reports every error of its daemon
REFERENCE_ERRORS = (
    ("error parsing netconf", 7),
    ("Can not parse option", 7),
    ("value too long for option", 7),
    ("error looking up", 4),  # CNI_IFNAME: no such interface in the namespace
    ("failed to Statfs", 3),  # CNI_NETNS: the namespace is gone
    ("unknown FS magic", 4),  # CNI_NETNS: not a network namespace
    ("no more tries", 11),  # no server answered within its resend timeout
    ("NACK", 11),
    ("did not renew", 11),
    ("timed out", 11),
    ("timeout", 11),
)


class MethodMissing(errors.CniError):
    """The daemon has no such method: the reference's has Allocate and Release only."""


def connect(socket_path: str, timeout: float = RPC_TIMEOUT) -> gob.Client:
    """A net/rpc connection to the daemon on `socket_path`, ours or the reference's."""
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.settimeout(2.0)
        try:
            unixpath.connect(s, socket_path)
        except OSError as exc:
            raise errors.TryAgainLater(
                f"error dialing DHCP daemon: {exc.strerror or exc}",
                f"is `dhcp daemon` running? start it (it listens on {socket_path}; "
                "ipam.daemonSocketPath / -socketpath move it)",
            ) from None
        s.settimeout(timeout)
        try:
            return gob.Client(s)
        except (gob.GobError, OSError) as exc:
            raise errors.TryAgainLater(
                f"the DHCP daemon on {socket_path} did not accept a Go RPC connection: {exc}",
                "a pycni `dhcp daemon` older than this plugin spoke JSON lines: restart it",
            ) from None
    except BaseException:
        s.close()
        raise


def _daemon_error(method: str, text: str, body: Any) -> errors.CniError:
    if (
        isinstance(body, dict)
        and type(body.get("Code")) is int
        and isinstance(body.get("Msg"), str)
        and body["Msg"]
    ):
        return errors.from_code(body["Code"], body["Msg"], str(body.get("Details") or ""))
    if text.startswith(("rpc: can't find method ", "rpc: can't find service ")):
        return MethodMissing(f"error calling {method}: {text}")
    for fragment, code in REFERENCE_ERRORS:
        if fragment in text:
            return errors.from_code(code, f"error calling {method}: {text}")
    return errors.InternalError(f"error calling {method}: {text}", "see the DHCP daemon's log")


def call(client: gob.Client, method: str, cmd: skel.CmdArgs, timeout: float = RPC_TIMEOUT) -> Any:
    """One call ("DHCP.Allocate", ...); the daemon's error comes back as a CniError."""
    netns = os.path.abspath(cmd.netns) if cmd.netns else ""
    args = {
        "ContainerID": cmd.container_id, "Netns": netns, "IfName": cmd.ifname,
        "Args": cmd.args, "Path": cmd.path,
        "StdinData": cmd.stdin or fastjson.dumps(cmd.conf).encode(),
    }  # fmt: skip
    try:
        text, body = client.call(method, CMD_ARGS, args)
    except TimeoutError:
        raise errors.TryAgainLater(
            f"the DHCP daemon did not answer {method} within {timeout:g}s",
            "it may be stuck; see its log",
        ) from None
    except EOFError:
        raise errors.TryAgainLater(
            f"the DHCP daemon closed the connection without answering {method}",
            "did it exit? see its log",
        ) from None
    except OSError as exc:
        raise errors.TryAgainLater(
            f"error talking to the DHCP daemon: {exc.strerror or exc}"
        ) from None
    except gob.GobError as exc:
        raise errors.DecodingFailure(
            f"the DHCP daemon's answer to {method} is not readable", str(exc)
        ) from None
    if text:
        raise _daemon_error(method, text, body)
    return body


def _ip(raw: object, where: str) -> str:
    """net.IP (4 or 16 bytes; an IPv4-mapped address is IPv4, as Go prints it)."""
    import ipaddress

    if not isinstance(raw, bytes) or len(raw) not in (4, 16):
        raise errors.DecodingFailure("invalid result from the DHCP daemon", f"{where}: {raw!r}")
    if len(raw) == 16 and raw[:12] == b"\0" * 10 + b"\xff\xff":
        raw = raw[12:]
    return str(ipaddress.ip_address(raw))


def _ipnet(raw: object, where: str) -> str:
    """net.IPNet {IP, Mask} -> "address/prefix" (a 16-byte mask of an IPv4 address is
    the IPv4 one behind 12 bytes of ones, as Go reads it)."""
    if not isinstance(raw, dict):
        raise errors.DecodingFailure("invalid result from the DHCP daemon", f"{where}: {raw!r}")
    ip = _ip(raw.get("IP"), f"{where}.IP")
    mask = raw.get("Mask")
    if isinstance(mask, bytes) and len(mask) == 16 and "." in ip and mask[:12] == b"\xff" * 12:
        mask = mask[12:]
    if not isinstance(mask, bytes) or len(mask) != (4 if "." in ip else 16):
        raise errors.DecodingFailure(
            "invalid result from the DHCP daemon", f"{where}.Mask: {mask!r}"
        )
    bits = int.from_bytes(mask, "big")
    prefix = bin(bits).count("1")
    if bits != ((1 << len(mask) * 8) - 1) ^ ((1 << (len(mask) * 8 - prefix)) - 1):
        raise errors.DecodingFailure("invalid result from the DHCP daemon",
                                     f"{where}.Mask: {mask.hex()} is not a prefix")  # fmt: skip
    return f"{ip}/{prefix}"


_ROUTE_INTS = (("MTU", "mtu"), ("AdvMSS", "advmss"), ("Priority", "priority"),
               ("Table", "table"), ("Scope", "scope"))  # fmt: skip
_IFACE_KEYS = (("Name", "name"), ("Mac", "mac"), ("Mtu", "mtu"), ("Sandbox", "sandbox"),
               ("SocketPath", "socketPath"), ("PciID", "pciID"))  # fmt: skip
_DNS_KEYS = (("Nameservers", "nameservers"), ("Domain", "domain"), ("Search", "search"),
             ("Options", "options"))  # fmt: skip


def result_wire(body: object) -> dict[str, Any]:
    """current.Result as gob carries it (Go's field names, IPs as bytes) -> the CNI JSON
    form. The daemon leaves out CNIVersion (a Go plugin keeps its own)."""
    if not isinstance(body, dict):
        raise errors.DecodingFailure("invalid result from the DHCP daemon", f"{body!r:.80}")

    def items(key: str) -> list[Any]:
        value = body.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise errors.DecodingFailure(
                "invalid result from the DHCP daemon", f"{key}: {value!r:.80}"
            )
        return value

    out: dict[str, Any] = {"cniVersion": body.get("CNIVersion") or "1.1.0"}
    ifaces = [{w: i[g] for g, w in _IFACE_KEYS if i.get(g)} for i in items("Interfaces")]
    if ifaces:
        out["interfaces"] = ifaces
    ips = []
    for n, i in enumerate(items("IPs")):
        ip: dict[str, Any] = {"address": _ipnet(i.get("Address"), f"IPs[{n}].Address")}
        if i.get("Gateway"):
            ip["gateway"] = _ip(i["Gateway"], f"IPs[{n}].Gateway")
        if i.get("Interface") is not None:
            ip["interface"] = i["Interface"]
        ips.append(ip)
    if ips:
        out["ips"] = ips
    routes = []
    for n, r in enumerate(items("Routes")):
        route: dict[str, Any] = {"dst": _ipnet(r.get("Dst"), f"Routes[{n}].Dst")}
        if r.get("GW"):
            route["gw"] = _ip(r["GW"], f"Routes[{n}].GW")
        route.update((w, r[g]) for g, w in _ROUTE_INTS if r.get(g) is not None)
        routes.append(route)
    if routes:
        out["routes"] = routes
    dns = body.get("DNS")
    if isinstance(dns, dict):
        out["dns"] = {w: dns[g] for g, w in _DNS_KEYS if dns.get(g)}
    return out


# -- verbs -------------------------------------------------------------------------------


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = DhcpConf(cmd.conf)
    c.values(cmd.args)
    client = connect(c.socket_path)
    try:
        body = call(client, "DHCP.Allocate", cmd)
    finally:
        client.sock.close()
    from pycni.result import parse_result

    result = parse_result(result_wire(body), "the DHCP daemon's result")
    result.cni_version = cmd.cni_version
    return result


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = DhcpConf(cmd.conf)
    try:
        client = connect(c.socket_path)
    except errors.TryAgainLater as exc:
        if "dialing" not in exc.msg:
            raise
        # No daemon: no lease is being kept, so there is nothing to release here (the
        # server lets it expire). DEL must not fail the runtime's teardown for that.
        sys.stderr.write(f"dhcp: {exc}; nothing to release\n")
        return
    try:
        call(client, "DHCP.Release", cmd)
    finally:
        client.sock.close()


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = DhcpConf(cmd.conf)
    client = connect(c.socket_path)
    try:
        try:
            call(client, "DHCP.Check", cmd)
            return
        except MethodMissing:
            pass
        # The reference daemon has no Check: its plugin sends Allocate, which answers
        # the lease the daemon keeps (v1.2+; v1.1 acquires one again), and so do we, on
        # the same connection; the address must be the one the runtime was given.
        body = call(client, "DHCP.Allocate", cmd)
    finally:
        client.sock.close()
    prev = cmd.conf.get("prevResult")
    wanted = {ip.get("address") for ip in (prev or {}).get("ips") or [] if isinstance(ip, dict)}
    got = {ip["address"] for ip in result_wire(body).get("ips", [])}
    if wanted and not wanted & got:
        raise errors.CniError(
            f"dhcp: the DHCP daemon's lease for {cmd.ifname} is {', '.join(sorted(got)) or 'none'}",
            f"prevResult has {', '.join(sorted(str(w) for w in wanted))}",
        )


def cmd_gc(cmd: skel.CmdArgs) -> None:
    c = DhcpConf(cmd.conf)
    if skel.valid_attachments(cmd.conf) is None:
        return
    try:
        client = connect(c.socket_path)
    except errors.TryAgainLater as exc:
        if "dialing" not in exc.msg:
            raise
        return  # no daemon: no lease is kept, nothing to collect
    try:
        call(client, "DHCP.GC", cmd)
    except MethodMissing:
        # the reference daemon keeps leases until Release; it has nothing to collect by
        sys.stderr.write("dhcp: the DHCP daemon has no GC (the reference's); nothing collected\n")
    finally:
        client.sock.close()


def cmd_status(cmd: skel.CmdArgs) -> None:
    c = DhcpConf(cmd.conf)
    try:
        client = connect(c.socket_path, timeout=5.0)
    except errors.TryAgainLater as exc:
        raise errors.PluginNotAvailable(exc.msg, exc.details) from None
    try:
        call(client, "DHCP.Status", cmd, timeout=5.0)
    except MethodMissing:
        pass  # the reference daemon has no Status; it answered, so it serves
    except errors.TryAgainLater as exc:
        raise errors.PluginNotAvailable(exc.msg, exc.details) from None
    finally:
        client.sock.close()


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
