"""`dhcp daemon`: the resident half of the dhcp IPAM plugin (the reference's model).

    dhcp daemon [-socketpath PATH] [-pidfile PATH] [-hostprefix DIR] [-timeout 10s]
                [-resendmax 62s] [-resendtimeout 30s] [-broadcast]

One thread accepts connections on the unix socket (its directory created 0700, the
socket 0600, and only root or our own uid may talk to it: it enters namespaces for
its callers). Each lease has a keeper thread: it sleeps until T1 (option 58, or half
the lease), renews unicast to the server, rebinds from scratch after T2 (option 59,
or 85 %), and takes the interface down if the lease runs out, as the reference does;
it stops when the interface or its namespace disappears. Release (DEL) stops the
keeper and sends DHCPRELEASE.

The wire is the reference daemon's (pycni.ipam.dhcp's docstring has the detail): Go's
net/rpc served over HTTP CONNECT on the socket, gob-encoded (pycni.gob), so the
reference plugin talks to this daemon as to its own, and ours talks to either.
Methods: DHCP.Allocate (skel.CmdArgs -> current.Result; an Allocate for a lease that
is kept answers it, as the reference since v1.2, which is also what the reference
plugin sends for CHECK), DHCP.Release (-> struct{}), and ours alone: DHCP.Check,
DHCP.GC, DHCP.Status. A failed call answers the error's text (what a Go plugin
prints) followed by the CNI error itself (code, msg, details) for our plugin.

Bounded waits: one try waits -timeout for an answer; tries are resent (2 s apart four
times, then doubling up to -resendmax) until -resendtimeout has passed, and then
Allocate answers CNI error 11 naming the interface. The reference's default for the
last is 208 s, longer than kubelet's 2-minute runtime request timeout, so a node
without a DHCP server would see sandboxes time out instead of an error; ours is 30 s.
-broadcast is accepted for compatibility: our client always sets the BOOTP broadcast
flag before it has an address (its UDP socket cannot receive unicast to an address
the interface does not have yet).

SIGTERM/SIGINT: stop listening, remove the socket and the pid file, stop the keepers
(leases are not released: a restarted daemon will not know them, and the server lets
them expire, as with the reference).
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from contextlib import contextmanager

from pycni import dhcp4, errors, gob, skel, unixpath
from pycni.ipam.dhcp import CNI_ERROR, DEFAULT_SOCKET, DhcpConf

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

# current.Result and what is in it, as the reference's Go types are (field names and
# kinds; the newest field sets: a Go plugin built on an older CNI library ignores the
# fields it lacks, by name). Pointers (IPConfig.Interface, Route.Table/Scope) travel as
# their values; net.IP and net.IPMask as bytes.
IPNET = gob.Struct("IPNet", [("IP", gob.BYTES), ("Mask", gob.BYTES)])
_STRINGS = gob.Slice("[]string", gob.STRING)
INTERFACE = gob.Struct("Interface", [
    ("Name", gob.STRING), ("Mac", gob.STRING), ("Mtu", gob.INT), ("Sandbox", gob.STRING),
    ("SocketPath", gob.STRING), ("PciID", gob.STRING),
])  # fmt: skip
IPCONFIG = gob.Struct(
    "IPConfig", [("Interface", gob.INT), ("Address", IPNET), ("Gateway", gob.BYTES)]
)
ROUTE = gob.Struct("Route", [
    ("Dst", IPNET), ("GW", gob.BYTES), ("MTU", gob.INT), ("AdvMSS", gob.INT),
    ("Priority", gob.INT), ("Table", gob.INT), ("Scope", gob.INT),
])  # fmt: skip
DNS = gob.Struct("DNS", [("Nameservers", _STRINGS), ("Domain", gob.STRING),
                         ("Search", _STRINGS), ("Options", _STRINGS)])  # fmt: skip
RESULT = gob.Struct("Result", [
    ("CNIVersion", gob.STRING),
    ("Interfaces", gob.Slice("[]*types100.Interface", INTERFACE)),
    ("IPs", gob.Slice("[]*types100.IPConfig", IPCONFIG)),
    ("Routes", gob.Slice("[]*types.Route", ROUTE)),
    ("DNS", DNS),
])  # fmt: skip


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y/%m/%d %H:%M:%S')} {msg}\n")
    sys.stderr.flush()


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration for the units a person types: 10s, 1m30s, 500ms, 2h."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    total, i, t = 0.0, 0, text.strip()
    if t in ("0", ""):
        return 0.0
    while i < len(t):
        j = i
        while j < len(t) and (t[j].isdigit() or t[j] == "."):
            j += 1
        k = j
        while k < len(t) and not (t[k].isdigit() or t[k] == "."):
            k += 1
        if j == i or t[j:k] not in units:
            raise ValueError(f"invalid duration {text!r}")
        total += float(t[i:j]) * units[t[j:k]]
        i = k
    return total


class Options:
    """The daemon's flags, with the reference's names and defaults (but -resendtimeout)."""

    def __init__(self, argv: list[str]) -> None:
        self.socket_path = ""
        self.pidfile = ""
        self.hostprefix = ""
        self.broadcast = False
        self.timeout = 10.0
        self.resend_max = 62.0
        self.resend_timeout = 30.0
        strings = {"socketpath": "socket_path", "pidfile": "pidfile", "hostprefix": "hostprefix"}
        durations = {"timeout": "timeout", "resendmax": "resend_max",
                     "resendtimeout": "resend_timeout"}  # fmt: skip
        i = 0
        while i < len(argv):
            arg = argv[i]
            if not arg.startswith("-"):
                raise ValueError(f"unexpected argument {arg!r}")
            name, eq, value = arg.lstrip("-").partition("=")
            if name == "broadcast":
                self.broadcast = value.lower() in ("", "1", "true", "t") if eq else True
            elif name in strings or name in durations:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise ValueError(f"flag needs an argument: -{name}")
                    value = argv[i]
                if name in strings:
                    setattr(self, strings[name], value)
                else:
                    setattr(self, durations[name], parse_duration(value))
            else:
                raise ValueError(f"flag provided but not defined: -{name}")
            i += 1
        self.socket_path = self.socket_path or DEFAULT_SOCKET


class Keeper:
    """One lease and the thread that keeps it."""

    def __init__(self, key: tuple[str, str, str], client: dhcp4.Client, lease: dhcp4.Lease,
                 priority: int) -> None:  # fmt: skip
        self.key = key
        self.client = client
        self.lease = lease
        self.priority = priority
        self.wake = threading.Event()
        self.stopping = False
        self.alive = True
        self.thread = threading.Thread(target=self._run, name=f"lease {key}", daemon=True)
        self.thread.start()

    def result(self) -> dict[str, Any]:
        """The lease as current.Result (RESULT). No CNIVersion: a Go plugin keeps the
        version it filled in (one its CNI library knows), as the reference daemon does."""
        lease = self.lease
        iface = lease.interface
        ip: dict[str, Any] = {"Address": {"IP": iface.ip.packed, "Mask": iface.netmask.packed}}
        if lease.router is not None:
            ip["Gateway"] = lease.router.packed
        routes = []
        for dst, gw in lease.routes():
            r: dict[str, Any] = {
                "Dst": {"IP": dst.network_address.packed, "Mask": dst.netmask.packed}
            }
            if gw is not None:
                r["GW"] = gw.packed
            else:
                r["Scope"] = 253  # on-link (RT_SCOPE_LINK), as the reference marks them
            if self.priority:
                r["Priority"] = self.priority
            routes.append(r)
        return {"IPs": [ip], "Routes": routes, "DNS": {}}

    def _run(self) -> None:
        who = f"{self.client.client_id[1:].decode(errors='replace')}"
        try:
            while not self.stopping:
                if not self.client.link_exists():
                    log(f"{who}: interface {self.client.ifname} no longer exists, "
                        "terminating lease maintenance")  # fmt: skip
                    return
                now = time.monotonic()
                lease = self.lease
                if now < lease.renew:
                    self.wake.wait(lease.renew - now)
                    self.wake.clear()
                    continue
                try:
                    if now < lease.rebind:
                        log(f"{who}: renewing lease")
                        self.lease = self.client.renew(
                            lease, min(lease.rebind, now + self.client.deadline)
                        )
                        log(
                            f"{who}: lease renewed, expires in {self.lease.expire - time.monotonic():.0f}s"
                        )
                    elif now < lease.expire:
                        log(f"{who}: renewal time expired, rebinding")
                        self.lease = self.client.acquire()
                        log(f"{who}: lease rebound")
                    else:
                        log(f"{who}: lease expired, bringing interface DOWN")
                        self._down()
                        return
                except dhcp4.DhcpError as exc:
                    if self.stopping:
                        return
                    log(f"{who}: {exc}")
                    self.wake.wait(max(1.0, min(60.0, (lease.expire - time.monotonic()) / 4)))
                    self.wake.clear()
        finally:
            self.alive = False

    def _down(self) -> None:
        from pycni import netns
        from pycni.netlink import Netlink

        try:
            fd = netns.open_netns(self.client.netns_path)
        except errors.CniError:
            return
        try:
            with Netlink(netns_fd=fd) as nl:
                link = nl.link(self.client.ifname)
                if link is not None:
                    nl.set_link(link.index, up=False)
        except OSError as exc:
            log(f"failed to bring {self.client.ifname} down: {exc}")
        finally:
            os.close(fd)

    def stop(self, release: bool) -> None:
        self.stopping = True
        self.client.stopped = True
        self.wake.set()
        self.thread.join(timeout=self.client.attempt + 5)
        if release:
            self.client.stopped = False
            try:
                self.client.release(self.lease)
                log(f"{self.client.client_id[1:].decode(errors='replace')}: lease released")
            except dhcp4.DhcpError as exc:
                log(f"failed to send DHCPRELEASE: {exc}")
            except OSError as exc:
                log(f"failed to send DHCPRELEASE: {exc}")


def client_id(container_id: str, network: str, ifname: str) -> str:
    """The reference's client identifier, so a server sees the same client from both."""
    return f"{container_id}/{network}/{ifname}"[:254]


class Daemon:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.lock = threading.Lock()
        self.keepers: dict[str, Keeper] = {}
        #: client id -> (its lock, how many calls hold or wait for it): an entry lives
        #: only while a call for that client runs (the daemon lives as long as the node)
        self.busy: dict[str, tuple[threading.Lock, list[int]]] = {}
        self.rpc = self.methods()

    @contextmanager
    def _key_lock(self, cid: str) -> Iterator[None]:
        """One call at a time for a client id (Allocate, Release)."""
        with self.lock:
            lock, users = self.busy.setdefault(cid, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self.lock:
                users[0] -= 1
                if not users[0]:
                    del self.busy[cid]

    def methods(self) -> dict[str, Callable[[Any], tuple[Any, Any]]]:
        """The net/rpc methods: the reference daemon's two, and Check, GC and Status."""
        return {
            "DHCP.Allocate": self._method(self.rpc_allocate, RESULT),
            "DHCP.Release": self._method(self.rpc_release),
            "DHCP.Check": self._method(self.rpc_check),
            "DHCP.GC": self._method(self.rpc_gc),
            "DHCP.Status": self._method(lambda _args: {}),
        }

    @staticmethod
    def _method(
        fn: Callable[[Any], Any], reply: Any = gob.EMPTY
    ) -> Callable[[Any], tuple[Any, Any]]:
        def run(args: Any) -> tuple[Any, Any]:
            try:
                return reply, fn(args)
            except Exception as exc:
                if not isinstance(exc, errors.CniError):  # a bug: answer, log, keep serving
                    import traceback

                    log("".join(traceback.format_exception(exc)))
                    exc = errors.InternalError(f"dhcp daemon: {type(exc).__name__}", str(exc))
                # the text for Go's client (its plugin prints it), then the error itself
                raise gob.RpcError(str(exc), CNI_ERROR,
                                   {"Code": exc.code, "Msg": exc.msg, "Details": exc.details}) from None  # fmt: skip

        return run

    @staticmethod
    def _args(args: Any, names: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
        """skel.CmdArgs as net/rpc delivered it, and the network config in it."""
        if not isinstance(args, dict) or not isinstance(args.get("StdinData", b""), bytes):
            raise errors.DecodingFailure("dhcp daemon: the argument is not a skel.CmdArgs")
        for key in ("ContainerID", "Netns", "IfName", "Args", "Path"):
            if not isinstance(args.get(key, ""), str):
                raise errors.DecodingFailure(f"dhcp daemon: CmdArgs.{key} is not a string")
        conf = skel.decode_conf(args.get("StdinData") or b"")
        skel.validate_conf(conf)
        if names:
            skel.validate_container_id(args.get("ContainerID", ""))
            skel.validate_ifname(args.get("IfName", ""))
        return args, conf

    def _cid(self, args: dict[str, Any], conf: dict[str, Any]) -> str:
        return client_id(args.get("ContainerID", ""), conf["name"], args.get("IfName", ""))

    def rpc_allocate(self, raw: Any) -> dict[str, Any]:
        args, conf = self._args(raw)
        return self.allocate(self._cid(args, conf), DhcpConf(conf), conf, args)

    def rpc_release(self, raw: Any) -> dict[str, Any]:
        args, conf = self._args(raw)
        self.release(self._cid(args, conf))
        return {}

    def rpc_check(self, raw: Any) -> dict[str, Any]:
        args, conf = self._args(raw)
        self.check(self._cid(args, conf), args)
        return {}

    def rpc_gc(self, raw: Any) -> dict[str, Any]:
        _, conf = self._args(raw, names=False)
        self.gc(conf, skel.valid_attachments(conf) or set())
        return {}

    def allocate(self, cid: str, c: DhcpConf, conf: dict[str, Any], args: dict[str, Any]) -> Any:
        values = c.values(args.get("Args", ""))
        options: list[tuple[int, bytes]] = [(dhcp4.option_code(o), v.encode()) for o, v in values]
        wanted = [dhcp4.option_code(o) for o in c.request]
        if not c.skip_default:
            wanted += [o for o in dhcp4.DEFAULT_REQUEST if o not in wanted]
        if wanted:
            options.append((dhcp4.OPT_PARAM_LIST, bytes(wanted)))
        with self._key_lock(cid):
            with self.lock:
                keeper = self.keepers.get(cid)
            if keeper is not None and keeper.alive:
                keeper.wake.set()  # as the reference: an ADD for a known lease checks it
                return keeper.result()
            netns_path = self.opts.hostprefix + args.get("Netns", "")
            client = dhcp4.Client(
                netns_path, args.get("IfName", ""), cid, options, self.opts.timeout,
                self.opts.resend_max, self.opts.resend_timeout, self.opts.broadcast,
                log=lambda msg: log(f"{cid}: {msg}"),
            )  # fmt: skip
            log(f"{cid}: acquiring lease")
            try:
                lease = client.acquire()
            except dhcp4.DhcpError as exc:
                log(f"{cid}: {exc}")
                raise errors.from_code(
                    exc.code,
                    f"dhcp: no lease for {client.ifname}: {exc}",
                    "is a DHCP server reachable on that link?" if exc.code == 11 else "",
                ) from None
            log(
                f"{cid}: lease acquired: {lease.interface}, expires in {lease.expire - time.monotonic():.0f}s"
            )
            keeper = Keeper((args.get("ContainerID", ""), conf["name"], client.ifname), client,
                            lease, c.priority)  # fmt: skip
            with self.lock:
                self.keepers[cid] = keeper
            return keeper.result()

    def release(self, cid: str) -> None:
        with self._key_lock(cid):
            with self.lock:
                keeper = self.keepers.pop(cid, None)
            if keeper is not None:
                log(f"{cid}: releasing lease")
                keeper.stop(release=True)

    def check(self, cid: str, args: dict[str, Any]) -> None:
        with self.lock:
            keeper = self.keepers.get(cid)
        if keeper is None:
            raise errors.UnknownContainer(
                f"dhcp: no lease is kept for {cid}", "the daemon restarted, or ADD never ran"
            )
        if not keeper.alive:
            raise errors.CniError(f"dhcp: the lease of {cid} is no longer maintained",
                                  "its interface is gone or the lease expired")  # fmt: skip
        if time.monotonic() >= keeper.lease.expire:
            raise errors.CniError(f"dhcp: the lease of {cid} expired")
        keeper.wake.set()

    def gc(self, conf: dict[str, Any], valid: set[tuple[str, str]]) -> None:
        with self.lock:
            stale = [cid for cid, k in self.keepers.items()
                     if k.key[1] == conf["name"] and (k.key[0], k.key[2]) not in valid]  # fmt: skip
        for cid in stale:
            self.release(cid)

    def stop_all(self) -> None:
        with self.lock:
            keepers = list(self.keepers.values())
            self.keepers.clear()
        for k in keepers:
            k.stop(release=False)


def _peer_allowed(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


def _serve_one(daemon: Daemon, conn: socket.socket) -> None:
    try:
        if not _peer_allowed(conn):
            return
        conn.settimeout(30)  # for the client's bytes; a call itself may take longer
        gob.serve_conn(conn, daemon.rpc)
    except gob.GobError as exc:
        log(f"dropped a connection that is not Go net/rpc: {exc}")
    except OSError:
        pass
    except Exception as exc:  # a bug: log it, keep serving the others
        import traceback

        log("".join(traceback.format_exception(exc)))
    finally:
        conn.close()


def _listen(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):  # a typo: never remove a user's file
            raise SystemExit(
                f"Error getting listener: {path} exists and is not a socket; "
                "give a -socketpath of its own (default /run/cni/dhcp.sock)"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            unixpath.connect(probe, path)
            raise SystemExit(f"dhcp daemon: another daemon listens on {path}")
        except OSError:
            os.unlink(path)  # a stale socket of a daemon that died
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    unixpath.bind(s, path, umask=0o177)
    s.listen(64)
    return s


def main(argv: list[str]) -> int:
    try:
        opts = Options(argv)
    except ValueError as exc:
        sys.stderr.write(f"dhcp daemon: {exc}\n")
        return 2
    if opts.pidfile and not os.path.isabs(opts.pidfile):
        sys.stderr.write(f"Error writing pidfile {opts.pidfile!r}: path not absolute\n")
        return 1
    path = opts.hostprefix + opts.socket_path
    try:
        listener = _listen(path)
    except OSError as exc:
        sys.stderr.write(f"Error getting listener: {exc}\n")
        return 1
    if opts.pidfile:
        with open(opts.pidfile, "w", encoding="ascii") as fh:
            fh.write(str(os.getpid()))
    daemon = Daemon(opts)
    done = threading.Event()

    def shutdown(_sig: int, _frame: object) -> None:
        done.set()
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    log(f"dhcp daemon listening on {path} (pid {os.getpid()})")
    try:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                if done.is_set():
                    break
                continue
            threading.Thread(target=_serve_one, args=(daemon, conn), daemon=True).start()
    finally:
        listener.close()
        for p in (path, opts.pidfile):
            if p:
                try:
                    os.unlink(p)
                except OSError:
                    pass
        daemon.stop_all()
        log("dhcp daemon stopped")
    return 0
