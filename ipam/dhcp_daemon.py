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
import struct
import sys
import threading
import time

from pycni import dhcp4, errors, fastjson, skel
from pycni.ipam.dhcp import DEFAULT_SOCKET, DhcpConf

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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
        lease = self.lease
        ip: dict[str, Any] = {"address": str(lease.interface)}
        if lease.router is not None:
            ip["gateway"] = str(lease.router)
        routes = []
        for dst, gw in lease.routes():
            r: dict[str, Any] = {"dst": str(dst)}
            if gw is not None:
                r["gw"] = str(gw)
            else:
                r["scope"] = 253  # on-link (RT_SCOPE_LINK), as the reference marks them
            if self.priority:
                r["priority"] = self.priority
            routes.append(r)
        out: dict[str, Any] = {"cniVersion": "1.1.0", "ips": [ip]}
        if routes:
            out["routes"] = routes
        return out

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
        self.busy: dict[str, threading.Lock] = {}

    def _key_lock(self, cid: str) -> threading.Lock:
        with self.lock:
            return self.busy.setdefault(cid, threading.Lock())

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        method = request.get("method")
        args = request.get("args")
        if not isinstance(args, dict):
            raise errors.DecodingFailure("dhcp daemon: request without args")
        if method == "Status":
            return {"result": None}
        stdin = args.get("stdinData")
        conf = skel.decode_conf(str(stdin or "").encode())
        skel.validate_conf(conf)
        c = DhcpConf(conf)
        cid = client_id(str(args.get("containerID", "")), conf["name"], str(args.get("ifname", "")))
        if method == "Allocate":
            return {"result": self.allocate(cid, c, conf, args)}
        if method == "Release":
            self.release(cid)
            return {"result": None}
        if method == "Check":
            self.check(cid, args)
            return {"result": None}
        if method == "GC":
            self.gc(conf, skel.valid_attachments(conf) or set())
            return {"result": None}
        raise errors.InvalidEnvironment(f"dhcp daemon: unknown method {method!r}")

    def allocate(self, cid: str, c: DhcpConf, conf: dict[str, Any], args: dict[str, Any]) -> Any:
        values = c.values(str(args.get("args", "")))
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
            netns_path = self.opts.hostprefix + str(args.get("netns", ""))
            client = dhcp4.Client(
                netns_path, str(args.get("ifname", "")), cid, options, self.opts.timeout,
                self.opts.resend_max, self.opts.resend_timeout, self.opts.broadcast,
                log=lambda msg: log(f"{cid}: {msg}"),
            )  # fmt: skip
            log(f"{cid}: acquiring lease")
            try:
                lease = client.acquire()
            except dhcp4.DhcpError as exc:
                log(f"{cid}: {exc}")
                raise errors.TryAgainLater(
                    f"dhcp: no lease for {client.ifname}: {exc}",
                    "is a DHCP server reachable on that link?",
                ) from None
            log(
                f"{cid}: lease acquired: {lease.interface}, expires in {lease.expire - time.monotonic():.0f}s"
            )
            keeper = Keeper((str(args.get("containerID")), conf["name"], client.ifname), client,
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
        conn.settimeout(30)
        data = b""
        while not data.endswith(b"\n") and len(data) < skel.MAX_STDIN:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        conn.settimeout(None)
        try:
            request = fastjson.loads(data, go=True)
            if not isinstance(request, dict):
                raise errors.DecodingFailure("dhcp daemon: the request is not an object")
            reply = daemon.handle(request)
        except ValueError as exc:
            reply = {
                "error": errors.DecodingFailure("dhcp daemon: bad request", str(exc)).to_dict(
                    "1.1.0"
                )
            }
        except errors.CniError as exc:
            reply = {"error": exc.to_dict("1.1.0")}
        except Exception as exc:  # a bug: answer, log, keep serving
            import traceback

            log("".join(traceback.format_exception(exc)))
            reply = {
                "error": errors.InternalError(
                    f"dhcp daemon: {type(exc).__name__}", str(exc)
                ).to_dict("1.1.0")
            }
        conn.sendall(fastjson.dumps(reply).encode() + b"\n")
    except OSError:
        pass
    finally:
        conn.close()


def _listen(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            raise SystemExit(f"dhcp daemon: another daemon listens on {path}")
        except OSError:
            os.unlink(path)  # a stale socket of a daemon that died
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        s.bind(path)
    finally:
        os.umask(old)
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
