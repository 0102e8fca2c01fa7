"""The plugin side of the resident agent (`netctl agent`): hand one invocation over.

A plugin executable that finds the agent's socket forwards its environment and stdin
and prints what the agent's worker printed, exiting with its code; without an agent it
runs the verb itself. Everything here is on the start-up path of every plugin process,
so it uses `_socket` (not `socket`), int.to_bytes (not `struct`) and nothing else.

Wire format (one connection per invocation; integers are big-endian):

    client -> agent   request   "PCA1" umask:u32 len(version):u32 len(module):u32
                                len(env):u32 len(stdin):u32, then the five fields:
                                pycni version, plugin module, the environment as
                                NUL-separated KEY=VALUE items (exactly os.environb),
                                the raw stdin.
    agent -> client   "R"       ready: the worker has joined the client's namespaces
                                and will run the verb when told to
                      "F"       fall back: the agent will not run this request (other
                                pycni version, unknown plugin, cannot join); nothing ran
                      "A" code:i32 len:u32 stdout
                                the answer: exactly what the plugin prints, and its
                                exit code (also for errors found before "R")
    client -> agent   "G"       go: run it. Sent once, after "R", with the client's
                                stderr as SCM_RIGHTS ancillary data (the worker's fd 2,
                                so debug output lands where it would without the
                                agent). Only now: an fd in flight to an agent that
                                never reads it would keep the runtime's stderr pipe
                                open, and a runtime waiting for EOF would hang.

The fallback rule. A verb such as ADD is not idempotent, so it must never run twice
for one invocation. The worker runs the verb only after it has read "G", and the
client sends "G" only after it has decided never to run the verb itself. So:
- the client runs the verb in-process when anything fails before "G" is sent
  (no socket, connection refused on a stale socket, a send error, EOF or a timeout
  while waiting for "R", or an "F"): the agent cannot have run it;
- once "G" is sent, the client never runs the verb itself. If the answer does not
  arrive whole (the worker crashed or was killed, the connection broke), the verb may
  have been partly applied, and the client prints CNI error 11 ("try again later");
  the runtime retries (or runs DEL, which is idempotent, then ADD).
A failed send of "G" itself means the worker never read it (a send succeeds once the
byte is queued at the peer), so that case still falls back.

Trust. Everything a plugin is given (the runtime's environment, the config, its
stderr) goes to whatever listens on the socket, and its answer is printed as the
plugin's. So the client talks only to a socket owned by root (or by its own user) in a
directory owned by root (or its own user) that no group or other may write to; any
other socket is ignored and the verb runs in-process (the agent checks its peer the
same way round). The compiled client (pycni/native/cniclient.c) applies the same rule.

On demand. When nothing is at the socket path (no file, or connection refused), the
plugin starts an agent for the calls that follow (start_agent) and runs its own verb
in-process, so nobody waits for it; a lock file next to the socket, held by the agent
for its life, makes concurrent first calls start exactly one. PYCNI_AGENT_AUTOSTART=0
turns that off and =1 on; unset, the default written in by `netctl plugins install`
applies (on, unless PYCNI_AGENT_AUTOSTART=0 was set when installing: the tests do
that). An agent started this way exits after AUTOSTART_IDLE seconds without a call.
"""

from __future__ import annotations

import _socket
import os
import sys

#: where `netctl agent` listens unless told otherwise
DEFAULT_SOCKET = "/run/pycni/agent.sock"
#: moves the socket (for the agent and for every plugin that should find it)
SOCKET_ENV = "PYCNI_AGENT_SOCKET"
#: PYCNI_AGENT=0 makes every plugin run its verb in-process
DISABLE_ENV = "PYCNI_AGENT"

MAGIC = b"PCA1"
HEADER_LEN = 4 + 5 * 4
READY = b"R"
FALLBACK = b"F"
ANSWER = b"A"
GO = b"G"
# Connect, send and the wait for "R" are bounded: an agent that is stopped or
# overloaded costs at most this long (seconds; PYCNI_AGENT_TIMEOUT overrides), then the
# plugin runs the verb itself.
READY_TIMEOUT = 10.0
TIMEOUT_ENV = "PYCNI_AGENT_TIMEOUT"
#: PYCNI_AGENT_AUTOSTART=0: never start an agent on demand
AUTOSTART_ENV = "PYCNI_AGENT_AUTOSTART"
#: seconds an agent started on demand waits for calls before it exits (PYCNI_AGENT_IDLE)
AUTOSTART_IDLE = 600.0
IDLE_ENV = "PYCNI_AGENT_IDLE"
# As skel.MAX_STDIN; a larger config is refused by skel in-process with the usual error.
MAX_STDIN = 16 * 1024 * 1024


def socket_path(environ: os._Environ[str] | dict[str, str]) -> str:
    return environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def ready_timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if text:
        try:
            value = float(text)
        except ValueError:
            return READY_TIMEOUT
        if value > 0:
            return value
    return READY_TIMEOUT


def _owner_ok(uid: int) -> bool:
    return uid == 0 or uid == os.geteuid()


def trusted_dir(directory: str) -> bool | None:
    """True for a directory owned by root (or us) that group and others cannot write;
    None when it does not exist."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    is_dir = (st.st_mode & 0o170000) == 0o040000
    return is_dir and _owner_ok(st.st_uid) and not st.st_mode & 0o022


def trusted_socket(path: str) -> bool | None:
    """True when `path` may be trusted (see the module docstring); None when nothing is
    there (no directory or no socket file); False otherwise."""
    ok = trusted_dir(os.path.dirname(path) or ".")
    if not ok:
        return ok
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o140000 and _owner_ok(st.st_uid)


def read_stdin() -> bytes | None:
    """All of stdin, read as skel reads it; None when it cannot be read (skel then
    reports the error in-process)."""
    chunks = []
    total = 0
    try:
        while True:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_STDIN:
                break
    except OSError:
        return None
    return b"".join(chunks)


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def encode_request(module: str, version: str, umask: int, env: bytes, stdin: bytes) -> bytes:
    mod = module.encode()
    ver = version.encode()
    return b"".join(
        (
            MAGIC,
            _u32(umask),
            _u32(len(ver)),
            _u32(len(mod)),
            _u32(len(env)),
            _u32(len(stdin)),
            ver,
            mod,
            env,
            stdin,
        )
    )


def encode_answer(code: int, stdout: bytes) -> bytes:
    return ANSWER + code.to_bytes(4, "big", signed=True) + _u32(len(stdout)) + stdout


def environ_block() -> bytes:
    return b"\0".join(k + b"=" + v for k, v in os.environb.items())


def _recv_exact(sock: _socket.socket, n: int) -> bytes:
    """n bytes, or fewer when the connection ends first."""
    parts = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _read_answer(sock: _socket.socket) -> tuple[bytes, int] | None:
    """The rest of an "A" message (after its type byte); None when it is cut short."""
    head = _recv_exact(sock, 8)
    if len(head) != 8:
        return None
    code = int.from_bytes(head[:4], "big", signed=True)
    size = int.from_bytes(head[4:], "big")
    out = _recv_exact(sock, size)
    if len(out) != size:
        return None
    return out, code


def _send_go(sock: _socket.socket) -> None:
    fds = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, (2).to_bytes(4, sys.byteorder))]
    try:
        sock.sendmsg([GO], fds)
    except OSError as exc:
        if exc.errno != 9:  # EBADF: our stderr is closed; go without it
            raise
        sock.sendall(GO)


def forward(module: str, version: str, stdin: bytes) -> tuple[bytes, int] | None:
    """Run this invocation in the agent: (stdout bytes, exit code), or None when the
    agent did not take it and the caller must run the verb itself (see the module
    docstring for why that is safe exactly then)."""
    global absent
    path = socket_path(os.environ)
    trust = trusted_socket(path)
    if not trust:
        absent = trust is None
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    go_sent = False
    try:
        sock.settimeout(ready_timeout())
        if len(path) < 100:
            sock.connect(path)
        else:  # maybe deeper than sun_path: through the directory (one more import)
            from pycni import unixpath

            unixpath.connect(sock, path)
        umask = os.umask(0o022)
        os.umask(umask)
        sock.sendall(encode_request(module, version, umask, environ_block(), stdin))
        kind = sock.recv(1)
        if kind == ANSWER:  # refused or malformed: the agent's answer is final
            return _read_answer(sock)
        if kind != READY:
            return None
        _send_go(sock)
        go_sent = True
        sock.settimeout(None)  # the verb takes as long as it takes; the runtime has a timeout
        if sock.recv(1) == ANSWER:
            answer = _read_answer(sock)
            if answer is not None:
                return answer
    except OSError as exc:
        if not go_sent:
            # ENOENT (removed meanwhile), ECONNREFUSED (a stale socket: nobody listens)
            absent = exc.errno in (2, 111)
            return None
    finally:
        sock.close()
    return interrupted(stdin), 1


#: set by forward(): the last call found no agent at all (so one may be started)
absent = False


def autostart_enabled(default: bool) -> bool:
    value = os.environ.get(AUTOSTART_ENV)
    return default if value not in ("0", "1") else value == "1"


def start_agent(path: str, default: bool = True) -> None:
    """Start an agent on `path`, detached, unless one is starting or running already
    (its lock is held), the directory is not trusted, or on-demand starts are off
    (autostart_enabled). Returns at once: the caller runs its own verb in-process
    meanwhile."""
    if not autostart_enabled(default):
        return
    directory = os.path.dirname(path) or "."
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return
    if not trusted_dir(directory):
        return
    import fcntl

    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # another agent holds it: running, starting or just stopping
        import pycni

        parent = os.path.dirname(os.path.dirname(os.path.abspath(pycni.__file__)))
        env = {"PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"}
        idle = os.environ.get(IDLE_ENV)
        if idle:
            env[IDLE_ENV] = idle
        code = (
            "import sys;a=sys.argv;sys.path.insert(0,a[1]);"
            "from pycni.runtime.agent import autostart;autostart(a[2],int(a[3]))"
        )
        os.set_inheritable(fd, True)
        try:
            # The lock's open file description goes to the agent, which holds it for
            # its life; our copy closes below without releasing it.
            os.posix_spawn(
                sys.executable,
                [sys.executable, "-IS", "-c", code, parent, os.path.abspath(path), str(fd)],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
                    (os.POSIX_SPAWN_DUP2, 0, 1),
                    (os.POSIX_SPAWN_DUP2, 0, 2),
                ],
                setsid=True,
            )
        except OSError:
            pass
    finally:
        os.close(fd)


def interrupted(stdin: bytes) -> bytes:
    """CNI error 11, in the caller's cniVersion: the worker took the request and did
    not answer, so the verb may have been partly applied."""
    from pycni import errors, fastjson
    from pycni import version as cniver

    version = cniver.CURRENT
    try:
        conf = fastjson.loads(stdin)
    except ValueError:
        conf = None
    if isinstance(conf, dict):  # as skel: errors speak the caller's version when known
        v = conf.get("cniVersion") or cniver.IMPLICIT
        if isinstance(v, str) and v in cniver.SUPPORTED:
            version = v
    err = errors.TryAgainLater(
        "the pycni agent's worker ended before it answered",
        "the operation may have been partly applied; retry it (DEL is always safe to retry)",
    )
    return (fastjson.dumps(err.to_dict(version)) + "\n").encode()


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def run(module: str, autostart: bool = True) -> bytes | None:
    """Hand this process's invocation to the agent. Exits with the agent's answer when
    there is one; otherwise returns the stdin it consumed (None if it could not read
    it) for the caller to run the verb in-process."""
    stdin = read_stdin()
    if stdin is None or len(stdin) > MAX_STDIN:
        return stdin
    from pycni import __version__

    answer = forward(module, __version__, stdin)
    if answer is None:
        if absent:
            start_agent(socket_path(os.environ), autostart)
        return stdin
    out, code = answer
    try:
        write_all(1, out)
    except OSError:
        code = code or 1
    # Nothing is buffered (stdout was written with os.write): skip the interpreter's
    # teardown, which costs a noticeable share of a forwarded call.
    os._exit(code)
