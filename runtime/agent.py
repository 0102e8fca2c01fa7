"""The resident agent: plugin verbs with warm imports, one forked worker per call.

A plugin process spends most of its life starting Python and importing (pyroute2,
pydantic, ipaddress, the firewall backend). The agent does that once: it imports every
plugin module, then listens on a unix socket. The plugin executable becomes a thin
client (pycni.agent_client: wire format and the fallback rule are described there).

Per connection:
  parent   accept; SO_PEERCRED: only uid 0 and the agent's own uid may use it (others
           get a CNI error); fork; close its copy of the connection; reap later.
  worker   read one request (bounded sizes, a deadline); check the pycni version and
           the plugin; join the *client's* network and mount namespaces through
           /proc/<peer pid>/ns/{net,mnt} (so the bridge is made where the client is, and
           CNI_NETNS paths, /sys and /proc resolve as the client sees them); chdir("/"),
           the client's umask, os.environ = the client's environment exactly; say "R";
           on "G" run skel.run(verbs, environ, stdin) with the same library code a
           plugin process runs; send the answer; _exit.
Everything that can fail before the verb runs happens before "R", so a failure there
is an "F" (the client runs the verb itself) and never a half-applied verb.

The parent never runs a verb and never enters a namespace: it holds no netlink socket,
no nft context and no state that a worker could inherit from another call. Workers
are independent processes, so killing the agent does not interrupt a call in flight
(run it under systemd with KillMode=process, see docs/netctl-agent.service).

On demand: the first plugin call that finds no agent starts one (agent_client.
start_agent -> autostart() here), holding a lock file beside the socket for its whole
life so that concurrent first calls start one agent; it exits after a while without
calls (PYCNI_AGENT_IDLE seconds, default agent_client.AUTOSTART_IDLE).
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from typing import TYPE_CHECKING

from pycni import agent_client as wire
from pycni import errors, fastjson, skel, unixpath
from pycni import version as cniver

if TYPE_CHECKING:
    from collections.abc import Callable

# Request limits. A CNI config is a few KiB; an environment tens of KiB.
MAX_VERSION = 64
MAX_MODULE = 256
MAX_ENV = 1 << 20
MAX_ENV_ITEMS = 4096
MAX_STDIN = skel.MAX_STDIN
# A client sends its whole request, and later "G", as soon as it can: a worker waits
# at most this long for each, then closes. (A connection that sends nothing, or a byte
# at a time, must not hold a worker: as many of them as --max-workers would make every
# plugin call wait for its fallback.)
CLIENT_TIMEOUT = 2.0
# A request answered unread (refused, malformed): how long to wait for the client to
# hang up, and the most we read from it meanwhile.
REFUSE_LINGER = 2.0
MAX_REQUEST = MAX_VERSION + MAX_MODULE + MAX_ENV + MAX_STDIN + 64
DEFAULT_MAX_WORKERS = 64
# Workers forked ahead of time, waiting in accept(); a burst larger than this waits
# for forks (about a millisecond each).
DEFAULT_SPARE = 4
LISTEN_BACKLOG = 256

# What the plugins import lazily (inside functions, to keep plugin processes lean), which
# the agent imports up front so a worker never pays for it: the stdlib modules below and
# every module of the packages the plugins are made of (warm_modules(): read off the
# package directories, never a hand-kept list that falls behind).
WARM_STDLIB = ("ctypes", "fcntl", "select")
WARM_PACKAGES = ("pycni", "pycni.firewall", "pycni.ipam", "pycni.plugins")
# Parts of the core package no plugin imports (the pytest kit, the overlay agent's etcd
# client, the CLI's own helpers).
WARM_SKIP = (
    "pycni.testing",
    "pycni.overlay",
    "pycni.native",
    "pycni.entry",
    "pycni.ipam.dhcp_daemon",
)


def warm_modules() -> list[str]:
    modules = list(WARM_STDLIB)
    for package in WARM_PACKAGES:
        if package != "pycni":
            modules.append(package)
        directory = os.path.dirname(__import__(package, fromlist=["__file__"]).__file__ or "")
        for fname in sorted(os.listdir(directory)):
            name, ext = os.path.splitext(fname)
            module = f"{package}.{name}"
            if ext == ".py" and name != "__init__" and not module.startswith(WARM_SKIP):
                modules.append(module)
    return modules


# Shared libraries the plugins load through ctypes; dlopen'ed once here, a worker's
# own dlopen of the same name is then a reference-count increment.
WARM_LIBRARIES = ("libnftables.so.1",)


# Where the agent's log goes: its stderr, which a worker keeps a copy of when it
# points its own fd 2 at the client's stderr.
_log_fd = 2
# Log every call (`netctl agent --verbose`).
VERBOSE = False


def log(msg: str) -> None:
    try:
        os.write(_log_fd, f"pycni-agent[{os.getpid()}]: {msg}\n".encode(errors="replace"))
    except OSError:
        pass


def warm() -> dict[str, skel.Verbs]:
    """Import every plugin and what they import lazily; returns module name -> verbs."""
    from pycni import plugins

    verbs: dict[str, skel.Verbs] = {}
    for name, module in plugins.PLUGINS.items():
        try:
            loaded = plugins.load(name)
        except Exception as exc:  # a broken plugin must not take the others down
            log(f"cannot load {module}: {type(exc).__name__}: {exc}")
            continue
        if loaded is not None:
            verbs[module] = loaded
    for module in warm_modules():
        try:
            __import__(module)
        except ImportError:
            pass  # optional (a backend that is not part of this version)
        except Exception as exc:
            log(f"cannot preload {module}: {type(exc).__name__}: {exc}")
    try:
        import ctypes

        from pycni import netns

        netns.libc_function("prctl")
        for name in WARM_LIBRARIES:
            try:
                ctypes.CDLL(name)
            except OSError:
                pass
    except Exception as exc:
        log(f"cannot preload libraries: {exc}")
    from pycni import linger

    # A worker exits after its one call: the kernel's part of a veth deletion can end in
    # a thread of its own after the answer, and the worker's exit may wait for nf_tables
    # (no fork per call).
    linger.MODE = "thread"
    return verbs


# -- the request -------------------------------------------------------------------------


class Request:
    __slots__ = ("env", "module", "stdin", "umask", "version")

    def __init__(
        self, umask: int, version: str, module: str, env: dict[bytes, bytes], stdin: bytes
    ) -> None:
        self.umask = umask
        self.version = version
        self.module = module
        self.env = env
        self.stdin = stdin


class BadRequest(Exception):
    """A request that does not follow the wire format; the message says how."""


class SlowRequest(Exception):
    """No complete request within CLIENT_TIMEOUT: the connection is closed unanswered."""


def parse_header(head: bytes) -> tuple[int, list[int]]:
    """umask and the five field lengths; BadRequest when they are not acceptable."""
    if head[:4] != wire.MAGIC[: len(head[:4])]:
        raise BadRequest("not a pycni agent request (bad magic)")
    if len(head) < wire.HEADER_LEN:
        raise BadRequest(f"truncated request header ({len(head)} of {wire.HEADER_LEN} bytes)")
    umask, *lengths = struct.unpack(">5I", head[4 : wire.HEADER_LEN])
    limits = (MAX_VERSION, MAX_MODULE, MAX_ENV, MAX_STDIN)
    names = ("version", "module", "environment", "stdin")
    for name, size, limit in zip(names, lengths, limits, strict=False):
        if size > limit:
            raise BadRequest(f"request too large: {name} is {size} bytes, the limit is {limit}")
    if umask > 0o777:
        raise BadRequest(f"invalid umask {umask:#o}")
    return umask, lengths


def parse_body(umask: int, lengths: list[int], body: bytes) -> Request:
    fields = []
    offset = 0
    for size in lengths:
        fields.append(body[offset : offset + size])
        offset += size
    version_b, module_b, env_b, stdin = fields
    try:
        version = version_b.decode("ascii")
        module = module_b.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("version and module must be ASCII") from None
    env: dict[bytes, bytes] = {}
    if env_b:
        items = env_b.split(b"\0")
        if len(items) > MAX_ENV_ITEMS:
            raise BadRequest(f"too many environment variables ({len(items)})")
        for item in items:
            key, sep, value = item.partition(b"=")
            if not sep or not key:
                raise BadRequest(f"environment item without KEY=: {item[:40]!r}")
            env[key] = value
    return Request(umask, version, module, env, stdin)


def error_answer(exc: errors.CniError, stdin: bytes = b"") -> bytes:
    """An "A" message carrying a CNI error, in the caller's cniVersion when known."""
    version = cniver.CURRENT
    try:
        conf = fastjson.loads(stdin) if stdin else None
    except ValueError:
        conf = None
    if isinstance(conf, dict):
        v = conf.get("cniVersion") or cniver.IMPLICIT
        if isinstance(v, str) and v in cniver.SUPPORTED:
            version = v
    return wire.encode_answer(1, (fastjson.dumps(exc.to_dict(version)) + "\n").encode())


_FD_SIZE = struct.calcsize("i")


def _recvmsg_fds(conn: socket.socket, size: int) -> tuple[bytes, list[int]]:
    """recvmsg() that also returns the file descriptors sent with the data."""
    data, anc, _flags, _addr = conn.recvmsg(size, socket.CMSG_SPACE(4 * _FD_SIZE))
    fds: list[int] = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            count = len(payload) // _FD_SIZE
            fds.extend(struct.unpack(f"{count}i", payload[: count * _FD_SIZE]))
    return data, fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _recv_request(conn: socket.socket, timeout: float = CLIENT_TIMEOUT) -> Request:
    """One request; BadRequest when it does not follow the wire format, SlowRequest
    when it is not complete within `timeout` (in all, not per read)."""
    deadline = time.monotonic() + timeout

    def wait() -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SlowRequest(f"no complete request within {timeout:g} s")
        conn.settimeout(left)

    try:
        return _read_request(conn, wait)
    except TimeoutError:
        raise SlowRequest(f"no complete request within {timeout:g} s") from None


def _read_request(conn: socket.socket, wait: Callable[[], None]) -> Request:
    buf = bytearray()
    while len(buf) < wire.HEADER_LEN:
        wait()
        data, fds = _recvmsg_fds(conn, 1 << 16)
        _close_all(fds)  # none belong with a request
        if not data:
            break
        buf += data
        if buf[:4] != wire.MAGIC[: len(buf[:4])]:
            break  # garbage: say so at once instead of waiting for more
    umask, lengths = parse_header(bytes(buf[: wire.HEADER_LEN]))
    total = wire.HEADER_LEN + sum(lengths)
    while len(buf) < total:
        wait()
        data = conn.recv(min(total - len(buf), 1 << 20))
        if not data:
            raise BadRequest(f"truncated request ({len(buf)} of {total} bytes)")
        buf += data
    if len(buf) > total:
        raise BadRequest("extra data after the request")
    return parse_body(umask, lengths, bytes(buf[wire.HEADER_LEN :]))


def _recv_go(conn: socket.socket) -> int | None:
    """Wait for "G": None when something else (or nothing) came; else the client's
    stderr fd sent with it (-1 when none)."""
    data, fds = _recvmsg_fds(conn, 1)
    if data != wire.GO:
        _close_all(fds)
        return None
    _close_all(fds[1:])
    return fds[0] if fds else -1


# -- the worker --------------------------------------------------------------------------


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def _join_client(pid: int) -> None:
    """Enter the client's network and mount namespaces (skipped where we already are)."""
    from pycni import netns

    for kind, flag in (("net", netns.CLONE_NEWNET), ("mnt", netns.CLONE_NEWNS)):
        target = f"/proc/{pid}/ns/{kind}"
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_ino != _ns_inode(f"/proc/self/ns/{kind}"):
                netns.setns(fd, flag)
        finally:
            os.close(fd)


def _become_client(req: Request) -> None:
    """The client's working directory, umask and environment; stdin and stdout on
    /dev/null (stdin came in the request, stdout goes back in the answer)."""
    os.chdir("/")
    # as the plugins themselves (skel.UMASK): what they make is never writable by others
    os.umask(req.umask | 0o022)
    os.environb.clear()
    os.environb.update(req.env)
    # pycni.fault reads PYCNI_FAULT when it is imported, which was in the parent.
    fault = sys.modules.get("pycni.fault")
    if fault is not None and hasattr(fault, "_SPEC"):
        setattr(fault, "_SPEC", os.environ.get("PYCNI_FAULT", ""))  # noqa: B010
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


def _take_stderr(stderr_fd: int) -> None:
    """fd 2 becomes the client's stderr (or /dev/null); the agent's log keeps a copy."""
    global _log_fd
    _log_fd = fcntl.fcntl(2, fcntl.F_DUPFD_CLOEXEC, 3)
    if stderr_fd < 0:
        stderr_fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(stderr_fd, 2)
    os.close(stderr_fd)


def _release_stderr() -> None:
    """Before the answer, fd 2 goes back to the agent's log: a verb may leave a thread
    finishing a kernel call after it has answered (netsetup.del_veth), and the worker
    must not hold the client's stderr meanwhile (a runtime reads it to its end before
    it takes the plugin's exit)."""
    if _log_fd != 2:
        try:
            sys.stderr.flush()  # what the verb wrote still goes to the client
        except (OSError, ValueError):
            pass
        os.dup2(_log_fd, 2)


def run_verb(verbs: skel.Verbs, stdin: bytes) -> tuple[bytes, int]:
    """What the plugin process would print and its exit code (as skel.main)."""
    try:
        out, code = skel.run(verbs, os.environ, stdin)
    except SystemExit as exc:  # skel never raises; a verb calling sys.exit might
        return b"", exc.code if isinstance(exc.code, int) else 1
    return ((out + "\n").encode() if out else b""), code


def serve_connection(conn: socket.socket, pid: int, verbs_by_module: dict[str, skel.Verbs]) -> None:
    """The worker: one request on `conn` from the process `pid`."""
    try:
        req = _recv_request(conn)
    except SlowRequest as exc:
        log(f"request from pid {pid}: {exc}; closed")
        return
    except BadRequest as exc:
        log(f"malformed request from pid {pid}: {exc}")
        answer_unread(
            conn,
            error_answer(
                errors.DecodingFailure(
                    "malformed pycni agent request", f"{exc}; see pycni/agent_client.py"
                )
            ),
        )
        return
    verbs = verbs_by_module.get(req.module)
    if req.version != _own_version() or verbs is None or req.env.get(b"CNI_COMMAND") is None:
        # Another pycni version (the agent predates an upgrade) or a plugin it does not
        # have: the client runs its own code.
        conn.sendall(wire.FALLBACK)
        if ON_DEMAND and req.version != _own_version() and _upgraded():
            # Started on demand and overtaken by an upgrade: stop, so that the next
            # call finds no agent and starts one of the new version.
            log(f"pycni {req.version} installed over {_own_version()}: stopping")
            os.kill(os.getppid(), signal.SIGTERM)
        return
    try:
        _join_client(pid)
    except OSError as exc:
        log(f"cannot join the namespaces of pid {pid}: {exc}")
        conn.sendall(wire.FALLBACK)
        return
    _become_client(req)
    conn.settimeout(CLIENT_TIMEOUT)
    conn.sendall(wire.READY)
    try:
        stderr_fd = _recv_go(conn)
    except TimeoutError:
        stderr_fd = None
    if stderr_fd is None:
        return  # the client went away (or gave up waiting): nothing ran
    _take_stderr(stderr_fd)
    conn.settimeout(None)
    started = time.perf_counter()
    out, code = run_verb(verbs, req.stdin)
    if VERBOSE:  # before the answer, so that a client that has its answer finds the line
        command = req.env.get(b"CNI_COMMAND", b"").decode(errors="replace")
        took = (time.perf_counter() - started) * 1000
        log(f"{req.module} {command} for pid {pid}: exit {code} ({took:.1f} ms)")
    _release_stderr()
    conn.sendall(wire.encode_answer(code, out))


_VERSION = ""
# Set by autostart(): this agent was started on demand by a plugin.
ON_DEMAND = False
# The package's __init__ as loaded: (path, mtime); an upgrade replaces it.
_LOADED: tuple[str, int] = ("", 0)


def _upgraded() -> bool:
    path, mtime = _LOADED
    try:
        return bool(path) and os.stat(path).st_mtime_ns != mtime
    except OSError:
        return True


def _own_version() -> str:
    global _VERSION
    if not _VERSION:
        import pycni

        _VERSION = pycni.__version__
    return _VERSION


PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(sig: int) -> None:
    from pycni import netns

    netns.libc_function("prctl")(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, as the kernel saw it at connect()."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def refuse(conn: socket.socket, uid: int, owner: int) -> None:
    """The refusal, without reading (let alone parsing) the request."""
    answer_unread(
        conn,
        error_answer(
            errors.InvalidEnvironment(
                f"pycni agent: uid {uid} may not use this agent",
                f"only root and uid {owner} may; set PYCNI_AGENT=0 to run plugins without it",
            )
        ),
    )


def answer_unread(conn: socket.socket, answer: bytes) -> None:
    """Send a final answer to a request not (fully) read, then drain and discard the
    rest, bounded in time and size, until the client hangs up: closing a unix socket
    with unread data resets the connection, and the client would take the reset for
    "no agent" and fall back instead of reporting the answer."""
    try:
        conn.sendall(answer)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(REFUSE_LINGER)
        drained = 0
        while drained <= MAX_REQUEST:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass


class _Pool:
    """What a forked worker inherits from the parent and must let go of."""

    __slots__ = ("busy_w", "listener", "owner", "parent", "private_fds", "verbs")

    def __init__(
        self,
        listener: socket.socket,
        busy_w: int,
        private_fds: tuple[int, ...],
        verbs: dict[str, skel.Verbs],
        owner: int,
    ) -> None:
        self.listener = listener
        self.busy_w = busy_w
        self.private_fds = private_fds
        self.verbs = verbs
        self.owner = owner
        self.parent = os.getpid()


def _worker_main(pool: _Pool) -> None:
    """A forked worker: wait for one connection, serve it, exit. Never returns."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        for fd in pool.private_fds:
            os.close(fd)
        # An idle worker dies with the parent (killed with -9, say), so the socket stops
        # answering and plugins fall back; a worker that holds a call outlives it.
        _set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != pool.parent:
            return
        gc.disable()  # a short life: collecting costs more than the garbage
        try:
            conn, _ = pool.listener.accept()
        except OSError:
            return  # the parent shut the listener down: the agent is stopping
        _set_parent_death_signal(0)
        # The parent learns that this worker is taken and starts another one.
        os.write(pool.busy_w, os.getpid().to_bytes(4, "little"))
        pool.listener.close()  # a dead parent must leave no listener open in its workers
        os.close(pool.busy_w)
        pid, uid = peer_credentials(conn)
        if uid not in (0, pool.owner) or pid <= 0:
            log(f"refused pid {pid} uid {uid}")
            refuse(conn, uid, pool.owner)
            return
        serve_connection(conn, pid, pool.verbs)
    except BaseException as exc:  # never let a worker fall back into the parent's loop
        code = 1
        if not isinstance(exc, OSError):
            log(f"worker failed: {type(exc).__name__}: {exc}")
    finally:
        os._exit(code)


# -- the parent --------------------------------------------------------------------------


class Agent:
    """Listens on `path`; `serve()` until SIGTERM/SIGINT/SIGHUP; `close()` removes the socket.

    Pre-forked, one call per process: `spare` workers wait in accept() on the shared
    listening socket, so a call never waits for a fork; a worker that takes a
    connection tells the parent (a pipe), which forks its replacement while the call
    runs. Every worker serves exactly one call and exits, so no state (netlink
    sockets, nft contexts, namespaces, environment) passes from one call to the next.
    """

    def __init__(
        self, path: str, max_workers: int = DEFAULT_MAX_WORKERS, spare: int = DEFAULT_SPARE
    ) -> None:
        self.path = os.path.abspath(path)
        self.max_workers = max_workers
        self.spare = max(1, min(spare, max_workers))
        self.verbs: dict[str, skel.Verbs] = {}
        self.listener: socket.socket | None = None
        self.idle: set[int] = set()
        self.busy: set[int] = set()
        self.uid = os.geteuid()
        self._inode = 0

    def bind(self) -> None:
        """Create the socket directory (0700) and the socket (0600); refuse when another
        agent answers on it; replace a stale socket nobody listens on. Refuse a
        directory that another user owns or that group or others may write to: clients
        do not trust a socket there (agent_client.trusted_socket)."""
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        if not wire.trusted_dir(directory):
            raise OSError(
                errno.EPERM,
                "the socket directory must be owned by root (or this user) and not "
                "writable by group or others; plugins would not trust a socket there",
                directory,
            )
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.EEXIST, "exists and is not a socket; remove it", self.path)
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                unixpath.connect(probe, self.path)
            except ConnectionRefusedError:
                os.unlink(self.path)  # stale: its agent is gone
            else:
                raise OSError(errno.EADDRINUSE, "another agent is listening on it", self.path)
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        unixpath.bind(listener, self.path, umask=0o177)  # born 0600
        os.chmod(self.path, 0o600)
        listener.listen(LISTEN_BACKLOG)
        self.listener = listener
        self._inode = os.stat(self.path).st_ino

    def load(self) -> None:
        global _LOADED
        import pycni

        _LOADED = (pycni.__file__ or "", os.stat(pycni.__file__ or "/").st_mtime_ns)
        self.verbs = warm()
        # Everything imported so far lives as long as the agent: keep it out of the
        # collector, so no worker's collection touches (and copies) those pages.
        gc.collect()
        gc.freeze()

    def _spawn(self, pool: _Pool) -> None:
        pid = os.fork()
        if pid == 0:
            _worker_main(pool)
        self.idle.add(pid)

    def _reap(self) -> None:
        while self.idle or self.busy:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.idle.clear()
                self.busy.clear()
                return
            if pid == 0:
                return
            self.idle.discard(pid)
            self.busy.discard(pid)
            if os.WIFSIGNALED(status):
                log(f"worker {pid} killed by signal {os.WTERMSIG(status)}")

    def _mark_busy(self, data: bytes) -> None:
        for i in range(0, len(data) - 3, 4):
            pid = int.from_bytes(data[i : i + 4], "little")
            if pid in self.idle:
                self.idle.discard(pid)
                self.busy.add(pid)

    def serve(
        self,
        on_ready: Callable[[], None] | None = None,
        idle_exit: float = 0.0,
        keep_fds: tuple[int, ...] = (),
    ) -> None:
        """Serve until SIGTERM, SIGINT or SIGHUP (or `idle_exit` seconds without a call
        when it is set); then remove the socket. Calls in flight are not waited for:
        their workers finish and answer on their own. `keep_fds` are the parent's own
        (a lock): workers close them."""
        assert self.listener is not None
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        busy_r, busy_w = os.pipe2(os.O_CLOEXEC)
        private = (wake_r, wake_w, busy_r, *keep_fds)
        pool = _Pool(self.listener, busy_w, private, self.verbs, self.uid)
        last_call = time.monotonic()
        stopping: list[int] = []
        handlers = {
            sig: signal.signal(sig, lambda signum, _frame: stopping.append(signum))
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda _s, _f: None)
        old_wakeup = signal.set_wakeup_fd(wake_w)  # a signal wakes poll() at once
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        poller.register(busy_r, select.POLLIN)
        try:
            while len(self.idle) < self.spare:
                self._spawn(pool)
            log(f"listening on {self.path} ({len(self.verbs)} plugins, pid {os.getpid()})")
            if on_ready is not None:
                on_ready()
            while not stopping:
                for fd, _mask in poller.poll(1000):
                    try:
                        data = os.read(fd, 4096)
                    except BlockingIOError:
                        continue
                    if fd == busy_r:
                        self._mark_busy(data)
                        last_call = time.monotonic()
                self._reap()
                if idle_exit and not self.busy and time.monotonic() - last_call > idle_exit:
                    log(f"no call for {idle_exit:g} s: exiting")
                    break
                # While calls run, keep one worker ready and fork the rest when they
                # are done: a fork (page tables of the whole agent) competing with a
                # call for the CPU costs that call more than the fork saves the next.
                target = self.spare if not self.busy else 1
                while (
                    not stopping
                    and len(self.idle) < target
                    and len(self.idle) + len(self.busy) < self.max_workers
                ):
                    try:
                        self._spawn(pool)
                    except OSError as exc:  # e.g. fork failing under memory pressure
                        log(f"fork failed: {exc}")
                        time.sleep(0.05)
                        break
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.close()
            for fd in (wake_r, wake_w, busy_r, busy_w):
                os.close(fd)
        log(f"stopped ({len(self.busy)} calls in flight finish on their own)")

    def close(self) -> None:
        """Stop accepting: idle workers leave accept() and exit; remove our socket."""
        if self.listener is None:
            return
        try:
            # Shutting the shared socket down wakes every worker blocked in accept()
            # (EINVAL), without touching connections a worker has already taken.
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.listener = None
        try:
            # Only our own socket: a newer agent may have replaced it meanwhile.
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
        deadline = time.monotonic() + 2.0
        while self.idle and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.005)


def notify_systemd(state: str) -> None:
    """sd_notify(3) for Type=notify units; nothing when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log(f"sd_notify failed: {exc}")


def autostart(path: str, lock_fd: int) -> None:
    """The agent a plugin started on demand (agent_client.start_agent): it runs in a
    session of its own with stdio on /dev/null, holds `lock_fd` (flock'ed by the
    starter) until it exits, logs to `<socket>.log`, and exits when idle. Never
    returns."""
    global ON_DEMAND
    code = 0
    try:
        os.closerange(3, lock_fd)
        os.closerange(lock_fd + 1, 1 << 16)  # nothing of the caller's (its pipes) stays open
        os.set_inheritable(lock_fd, False)
        os.chdir("/")
        os.umask(0o022)
        log_fd = os.open(
            path + ".log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        os.dup2(log_fd, 2)
        os.close(log_fd)
        try:
            idle = float(os.environ.get(wire.IDLE_ENV) or wire.AUTOSTART_IDLE)
        except ValueError:
            idle = wire.AUTOSTART_IDLE
        ON_DEMAND = True
        server = Agent(path)
        server.load()
        server.bind()
        log("started on demand")
        server.serve(idle_exit=max(idle, 0.1), keep_fds=(lock_fd,))
    except OSError as exc:  # e.g. another agent listens already
        log(f"not starting: {exc}")
        code = 1
    finally:
        os._exit(code)


def default_socket() -> str:
    return wire.socket_path(os.environ)
