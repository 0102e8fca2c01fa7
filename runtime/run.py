"""`netctl run`: a workload in its own network namespace, on a network, with ports.

Order of work (docs/architecture.md draws where it sits): resolve the network mode; create the netns
(bind-mounted under the run dir); run the chain's ADD with runtimeConfig (portMappings,
ips via CNI_ARGS, mac); write the container's resolv.conf, hosts and hostname; fork:
the child joins the netns, unshares UTS and mount namespaces, sets the hostname,
bind-mounts its files and execs the workload. When the workload ends, DEL runs in
reverse and the netns is removed, in the foreground or by the `-d` supervisor.

Every failure before the workload starts undoes what was done (exit 125, nothing left
behind). Teardown is idempotent and also run by `netctl rm`, `stop` and `system prune`
for containers whose supervisor was killed.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import sys
import time

from pycni import errors, netns
from pycni.record import dataclass, field
from pycni.runtime import etcfiles, sandbox
from pycni.runtime.containers import (
    Attachment,
    ContainerRecord,
    ContainerStore,
    alive,
    new_id,
    process_start_time,
    random_name,
    valid_name,
)
from pycni.runtime.paths import Paths
from pycni.runtime.usage import UsageError

TYPE_CHECKING = False  # typing costs more than a tenth of `run --network none`
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
    from typing import Any

    from pycni.runtime import libcni, portspec
    from pycni.runtime.networks import Network, NetworkStore
else:  # the same ints and calls; `signal` wraps them in enums (and imports `enum`, ~2 ms)
    import _signal as signal

EXIT_SETUP = 125


class _Worker:
    """A daemon thread with `join(timeout)`, made with `_thread`: `threading` costs
    about 2 ms to import, a tenth of what `run --network none` may spend in all."""

    def __init__(self, target: Any) -> None:
        import _thread

        self._done = _thread.allocate_lock()
        self._done.acquire()

        def run() -> None:
            try:
                target()
            finally:
                self._done.release()

        _thread.start_new_thread(run, ())

    def join(self, timeout: float) -> None:
        if self._done.acquire(timeout=timeout):
            self._done.release()


IFNAME = "eth0"


@dataclass
class RunOptions:
    command: list[str]
    name: str = ""
    network: str = "bridge"
    publish: list[str] = field(default_factory=list)
    ip: str = ""
    ip6: str = ""
    mac: str = ""
    hostname: str = ""
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_option: list[str] = field(default_factory=list)
    add_host: list[str] = field(default_factory=list)
    sysctl: list[str] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    detach: bool = False
    rm: bool = False
    env: list[str] = field(default_factory=list)
    env_file: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    interactive: bool = False
    tty: bool = False
    expose: list[str] = field(default_factory=list)
    publish_all: bool = False
    #: every --network as given (NAME or name=NAME,ip=...,alias=...,gw-priority=N);
    #: empty: `network` alone
    networks: list[str] = field(default_factory=list)
    network_alias: list[str] = field(default_factory=list)
    #: the attachments validate() made of `networks` and the first-network flags
    attach: list[NetworkAttach] = field(default_factory=list)


@dataclass
class NetworkAttach:
    """One network a container asks for (`--network` advanced form, or `connect`)."""

    network: str
    ip: str = ""
    ip6: str = ""
    aliases: list[str] = field(default_factory=list)
    gw_priority: int = 0
    mac: str = ""


def user_defined(mode: str) -> bool:
    """Docker's NetworkMode.IsUserDefined: not one of the modes every daemon has."""
    return mode not in ("default", "bridge", "host", "none") and not mode.startswith("container:")


def _go_atoi(text: str) -> int:
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        raise UsageError(
            f'invalid gw-priority ({text}): strconv.Atoi: parsing "{text}": invalid syntax'
        )
    return int(text)


def parse_network_spec(spec: str) -> NetworkAttach:
    """`--network NAME` or Docker's advanced form `name=N,alias=A,ip=IP,ip6=IP,
    mac-address=M,gw-priority=N,driver-opt=K=V,link-local-ip=IP` (docker/cli opts)."""
    if "=" not in spec:
        return NetworkAttach(network=spec)
    out = NetworkAttach(network="")
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise UsageError(
                f'invalid argument "{spec}" for "--network" flag: invalid field {part}'
            )
        if key in ("name", "target"):
            out.network = value
        elif key == "alias":
            out.aliases.append(value)
        elif key == "ip":
            out.ip = value
        elif key == "ip6":
            out.ip6 = value
        elif key == "mac-address":
            out.mac = value
        elif key == "gw-priority":
            out.gw_priority = _go_atoi(value)
        elif key in ("driver-opt", "link-local-ip"):
            continue  # accepted as Docker does; nothing of netctl's reads them
        else:
            raise UsageError(
                f'invalid argument "{spec}" for "--network" flag: invalid field key {key}'
            )
    if not out.network:
        raise UsageError(
            f'invalid argument "{spec}" for "--network" flag: network name/id is not specified'
        )
    return out


def plan_attachments(opts: RunOptions) -> list[NetworkAttach]:
    """The networks of a `run`, in order, with --ip/--ip6/--network-alias/--mac-address
    on the first one, refused where Docker's CLI refuses them (parseNetworkOpts)."""
    specs = [parse_network_spec(s) for s in opts.networks] or [NetworkAttach(opts.network)]
    first = specs[0]
    for given, flag, have in (
        (opts.network_alias, "--network-alias", first.aliases),
        (opts.ip, "--ip", first.ip),
        (opts.ip6, "--ip6", first.ip6),
        (opts.mac, "--mac-address", first.mac),
    ):
        if given and have:
            what = {
                "--network-alias": "per-network alias",
                "--ip": "per-network IPv4 address",
                "--ip6": "per-network IPv6 address",
                "--mac-address": "per-network MAC address",
            }[flag]
            raise UsageError(f"conflicting options: cannot specify both {flag} and {what}")
    first.aliases = first.aliases or list(opts.network_alias)
    first.ip, first.ip6, first.mac = (
        first.ip or opts.ip,
        first.ip6 or opts.ip6,
        first.mac or opts.mac,
    )
    seen: set[str] = set()
    for spec in specs:
        if not spec.network.strip():
            raise UsageError("no name set for network")
        if not user_defined(spec.network) and spec.aliases:
            raise UsageError("network-scoped aliases are only supported for user-defined networks")
        if spec.network in seen:
            raise UsageError(f'network "{spec.network}" is specified multiple times')
        seen.add(spec.network)
    if len(specs) > 1:
        if any(user_defined(s.network) for s in specs) and not all(
            user_defined(s.network) for s in specs
        ):
            raise UsageError(
                "conflicting options: cannot attach both user-defined and non-user-defined network-modes"
            )
        if any(s.network == "none" for s in specs):
            raise UsageError(CONFLICT_NONE)
        if any(s.network == "host" or s.network.startswith("container:") for s in specs):
            raise UsageError(CONFLICT_SHARED)
    for spec in specs[1:]:
        if spec.mac:
            from pycni import conf

            try:
                spec.mac = conf.validate_mac(spec.mac, "mac-address")
            except errors.CniError:
                raise UsageError(f"{spec.mac} is not a valid mac address") from None
        _check_ip_flags(spec.ip, spec.ip6)
    return specs


#: Docker's words (moby runconfig/errors.go)
CONFLICT_SHARED = (
    "container sharing network namespace with another container or host cannot be "
    "connected to any other network"
)
CONFLICT_HOST = "container cannot be disconnected from host network or connected to host network"
CONFLICT_NONE = (
    "container cannot be connected to multiple networks with one of the networks in "
    "private (none) mode"
)
ALIAS_ON_DEFAULT = "network-scoped alias is supported only for containers in user defined networks"


def warn(msg: str) -> None:
    sys.stderr.write(f"WARNING: {msg}\n")


# -- the container's processes -----------------------------------------------------------

#: what the supervisor and the container's init pass on to the workload
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
_SI_KERNEL = 0x80  # si_code of a signal the kernel sent (a terminal's Ctrl-C)


def _gc_paused_by_cli() -> bool:
    """netctl's main() turned the cyclic collector off for this hot command (not an
    in-process caller, whose collector is its own business)."""
    cli = sys.modules.get("pycni.runtime.cli")
    return bool(getattr(cli, "GC_PAUSED", False)) and not gc.isenabled()


def _foreground_tty() -> bool:
    """stdin is our terminal and we are its foreground job (an interactive run)."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def _take_foreground() -> None:
    """Make our process group the terminal's foreground job (the container's init on
    start, the supervisor again when it ended); SIGTTOU blocked, as a shell does."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(0, os.getpgrp())
    except OSError:
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exec_failure(answer: bytes) -> tuple[int, str] | None:
    """What the exec pipe said: nothing or "x" (exec'd), else "<code> <reason>"."""
    text = answer.decode("utf-8", "replace")
    code, _, message = text.partition(" ")
    if not code.isdigit():
        return None
    return int(code), message


def _workload_stdio(rec: ContainerRecord, pty_slave: int) -> None:
    """-t: the pseudo-terminal is the workload's controlling terminal and its stdout and
    stderr (and stdin with -i); without -i, stdin is /dev/null, as Docker has it."""
    if pty_slave >= 0:
        import termios

        os.setsid()
        fcntl.ioctl(pty_slave, termios.TIOCSCTTY, 0)
        os.dup2(pty_slave, 1)
        os.dup2(pty_slave, 2)
        if rec.interactive:
            os.dup2(pty_slave, 0)
        os.close(pty_slave)
    if not rec.interactive:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)


def _process_settings(
    rec: ContainerRecord, env: list[str], user_spec: str, workdir: str
) -> tuple[dict[str, str], sandbox.ExecUser | None]:
    """-e/-u/-w applied in the workload's process: its environment, who it runs as,
    and its working directory (chdir'd here, before the user switch, as runc does)."""
    user = sandbox.resolve_user(user_spec)
    if workdir:
        sandbox.enter_workdir(workdir)
    home = user.home if user is not None else "/root"
    return sandbox.workload_env(env, rec.hostname, home, tty=rec.tty), user


def _container_init(
    rec: ContainerRecord,
    files: dict[str, str],
    exec_w: int,
    took_tty: bool,
    pty_slave: int,
    go_r: int,
) -> None:
    """PID 1 of the container: enter its namespaces, start the workload (once `go_r`
    reads that the supervisor has recorded this process: meanwhile the namespaces are
    set up), pass signals on to it exactly once, reap every orphan, and exit with the
    workload's status.

    The container (init and workload) is a process group of its own: a signal sent to
    netctl's group by a script reaches the workload once, through the supervisor and
    this init. On an interactive terminal the container becomes the foreground job, so
    Ctrl-C reaches the workload directly and is not passed on again.
    """
    os.setpgid(0, 0)
    if took_tty:
        _take_foreground()
    try:
        sandbox.enter_container(
            "" if rec.network_mode == "host" else rec.netns,
            "" if rec.network_mode.startswith("container:") else rec.hostname,
            files,
        )
        sandbox.mount_proc()
    except sandbox.SetupError as exc:
        message = str(exc)
        sys.stderr.write(f"netctl: {message}\n")
        os.write(exec_w, f"{EXIT_SETUP} {message}".encode())
        os._exit(EXIT_SETUP)
    if os.read(go_r, 1) != b"x":  # the supervisor ended before it recorded us
        os._exit(EXIT_SETUP)
    os.close(go_r)
    workload = os.fork()
    if workload == 0:
        try:
            for sig in FORWARDED:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {*FORWARDED, signal.SIGCHLD})
            _workload_stdio(rec, pty_slave)
            env, user = _process_settings(rec, rec.env, rec.user, rec.workdir)
            sandbox.drop_capabilities(frozenset(rec.caps), user)
        except (sandbox.SetupError, ValueError) as exc:
            sys.stderr.write(f"netctl: {exc}\n")
            os.write(exec_w, f"{EXIT_SETUP} {exc}".encode())
            os._exit(EXIT_SETUP)
        except OSError as exc:  # -w: Docker's codes for a cwd that is not there
            code = 127 if exc.errno == errno.ENOENT else 126
            sys.stderr.write(f"netctl: {exc.strerror}\n")
            os.write(exec_w, f"{code} {exc.strerror}".encode())
            os._exit(code)
        sandbox.execvp(rec.command, env=env, report_fd=exec_w)
    os.close(exec_w)
    from pycni import linger

    for fd in range(3, 256):  # nothing of netctl's but what holds the published ports
        try:
            # (a netlink socket is libnftables', the chain's: closed too)
            if (
                os.fstat(fd).st_mode & 0o170000 != 0o140000
                or linger.netlink_protocol(fd) is not None
            ):
                os.close(fd)
        except OSError:
            pass
    while True:
        info = signal.sigwaitinfo({*FORWARDED, signal.SIGCHLD})
        if info.si_signo != signal.SIGCHLD:
            if info.si_code != _SI_KERNEL:  # a terminal's signal reached the job already
                try:
                    os.kill(workload, info.si_signo)
                except ProcessLookupError:
                    pass
            continue
        while True:  # reap the workload and every orphan that ended
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                break
            if done == workload:
                code = os.waitstatus_to_exitcode(status)
                os._exit(128 - code if code < 0 else code)


class PtyRelay:
    """-t: a pseudo-terminal for the workload; this side copies what the workload
    writes to our stdout (and to `log_fd`, the container's log, when given) and, with
    -i, what the caller types to the workload. The caller's terminal is raw while the
    relay runs (the pty's own line discipline does the echo and Ctrl-C) and its
    window size is passed on, at start and on SIGWINCH."""

    def __init__(self, interactive: bool, log_fd: int = -1) -> None:
        self.master, self.slave = os.openpty()
        os.set_inheritable(self.master, False)
        self.interactive = interactive
        self.log_fd = log_fd
        self._saved: list[Any] | None = None
        self._thread: Any = None
        self.resize()

    def resize(self) -> None:
        import termios

        for fd in (0, 1):
            try:
                size = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
            except OSError:
                continue
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
            return

    def start(self) -> None:
        """After the fork: our copy of the workload's side closes, the relay starts."""
        import threading
        import tty

        os.close(self.slave)
        if self.interactive and os.isatty(0):
            import termios

            self._saved = termios.tcgetattr(0)
            tty.setraw(0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import select

        fds = [self.master] + ([0] if self.interactive else [])
        while True:
            ready, _, _ = select.select(fds, [], [])
            if self.master in ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: every holder of the workload's side is gone
                    data = b""
                if not data:
                    return
                for fd in (1, self.log_fd):
                    _write_all(fd, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:  # our stdin ended: the terminal's end of file
                    fds.remove(0)
                    data = b"\x04"
                os.write(self.master, data)

    def finish(self) -> None:
        """The workload ended: drain what it wrote, restore the caller's terminal."""
        if self._thread is not None:
            self._thread.join(5)
        if self._saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self._saved)
        try:
            os.close(self.master)
        except OSError:
            pass


class OutputTee:
    """A foreground container without -t: the workload's stdout and stderr are pipes
    this side copies to our own stdout and stderr and to the container's log, so
    `netctl logs` has it as for -d (Docker's json-file logging does the same)."""

    def __init__(self, log_fd: int) -> None:
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        for fd in (self.out_r, self.err_r):
            os.set_inheritable(fd, False)
        self.log_fd = log_fd
        self._thread: Any = None

    def child(self) -> None:
        """In the container's init: its stdout and stderr (and the workload's) are ours."""
        os.dup2(self.out_w, 1)
        os.dup2(self.err_w, 2)
        for fd in (self.out_r, self.err_r, self.out_w, self.err_w, self.log_fd):
            os.close(fd)

    def start(self) -> None:
        os.close(self.out_w)
        os.close(self.err_w)
        self._thread = _Worker(self._run)

    def _run(self) -> None:
        import select

        where = {self.out_r: 1, self.err_r: 2}
        while where:
            ready, _, _ = select.select(list(where), [], [])
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    os.close(fd)
                    del where[fd]
                    continue
                for out in (where[fd], self.log_fd):
                    _write_all(out, data)

    def finish(self) -> None:
        if self._thread is not None:
            self._thread.join(5)
        os.close(self.log_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while fd >= 0 and view:
        try:
            view = view[os.write(fd, view) :]
        except OSError:
            return


# -- validation (Docker's rejections, Docker's words) ----------------------------------


def validate(opts: RunOptions) -> None:
    if not opts.command:
        raise UsageError(
            '"netctl run" requires at least 1 argument: the command to run (netctl run [OPTIONS] -- CMD [ARG...])'
        )
    check_process_options(opts)
    if opts.name and not valid_name(opts.name):
        raise UsageError(
            f"Invalid container name ({opts.name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    if opts.networks:
        opts.network = opts.networks[0]
    opts.attach = plan_attachments(opts)
    opts.network = opts.attach[0].network
    first = opts.attach[0]
    opts.ip, opts.ip6, opts.mac = first.ip, first.ip6, first.mac
    mode = opts.network
    if mode.startswith("container:"):
        if not mode.split(":", 1)[1]:
            raise UsageError("invalid container format container:<name|id>")
        if opts.hostname:
            raise UsageError("conflicting options: hostname and the network mode")
        if opts.dns or opts.dns_search or opts.dns_option:
            raise UsageError("conflicting options: dns and the network mode")
        if opts.add_host:
            raise UsageError("conflicting options: custom host-to-IP mapping and the network mode")
        if opts.mac:
            raise UsageError("conflicting options: mac-address and the network mode")
        if opts.publish:
            raise UsageError(
                "conflicting options: port publishing and the container type network mode"
            )
        if opts.ip or opts.ip6:
            raise UsageError("conflicting options: IP address and the network mode")
    if mode in ("host", "none") and (opts.ip or opts.ip6):
        raise UsageError(
            f"user specified IP address is supported on user defined networks only (network mode: {mode})"
        )
    if mode == "host" and opts.mac:
        raise UsageError("conflicting options: mac-address and the network mode")
    _check_ip_flags(opts.ip, opts.ip6)
    if opts.mac:
        from pycni import conf

        try:
            opts.mac = conf.validate_mac(opts.mac, "--mac-address")
        except errors.CniError:
            raise UsageError(f"{opts.mac} is not a valid mac address") from None
    for spec in opts.add_host:
        try:
            etcfiles.parse_add_host(spec, host_gateway="0.0.0.0")
        except etcfiles.AddHostError as exc:
            raise UsageError(str(exc)) from None
    # Each of these becomes a line of the container's resolv.conf, hosts or hostname:
    # the validators daemon.json's keys go through too.
    try:
        opts.dns = [etcfiles.check_dns(v) for v in opts.dns]
        for v in opts.dns_search:
            etcfiles.check_dns_search(v)
        for v in opts.dns_option:
            etcfiles.check_dns_option(v)
        if opts.hostname:
            etcfiles.check_hostname(opts.hostname)
    except etcfiles.EtcValueError as exc:
        raise UsageError(str(exc)) from None
    parse_sysctls(opts)
    opts.publish = [*opts.publish, *published_exposed(opts)]
    _refuse_ipv6_loopback(opts.publish)


def _check_ip_flags(ip: str, ip6: str) -> None:
    for flag, value, version in (("--ip", ip, 4), ("--ip6", ip6, 6)):
        if value:
            import ipaddress

            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                raise UsageError(
                    f'invalid argument "{value}" for "{flag}" flag: invalid IP address'
                ) from None
            if addr.version != version:
                raise UsageError(
                    f'invalid argument "{value}" for "{flag}" flag: not an IPv{version} address'
                )


def published_exposed(opts: RunOptions) -> list[str]:
    """--expose PORT[-END][/PROTO] checked as Docker checks it; with -P/--publish-all,
    each exposed port not published already gets a dynamic host port (a `-p PORT`)."""
    if not opts.expose and not opts.publish_all:
        return []
    from pycni.runtime import portspec

    exposed = []
    for spec in opts.expose:
        if ":" in spec:
            raise UsageError(f"invalid port format for --expose: {spec}")
        try:
            exposed += portspec.parse_publish(spec)
        except portspec.PortSpecError as exc:
            raise UsageError(f"invalid range format for --expose: {spec}: {exc}") from None
    if not opts.publish_all:
        return []
    try:
        published = {
            (b.container_port, b.protocol) for b in portspec.parse_publish_all(opts.publish)
        }
    except portspec.PortSpecError:
        published = set()  # said in Docker's words where the ports are bound
    out = []
    for b in exposed:
        if (b.container_port, b.protocol) not in published:
            published.add((b.container_port, b.protocol))
            out.append(f"{b.container_port}/{b.protocol}")
    return out


def _refuse_ipv6_loopback(publish: list[str]) -> None:
    """-p '[::1]:PORT:80' could never be reached: the kernel does not route IPv6
    loopback traffic anywhere else (IPv6 has no route_localnet), so no DNAT can carry it
    into the container. Refused rather than accepted and silently dropped."""
    if not publish:
        return
    import ipaddress

    from pycni.runtime import portspec

    try:
        bindings = portspec.parse_publish_all(publish)
    except portspec.PortSpecError:
        return  # said in Docker's words where the ports are bound
    for b in bindings:
        try:
            addr = ipaddress.ip_address(b.host_ip) if b.host_ip else None
        except ValueError:
            continue
        if addr is not None and addr.version == 6 and addr.is_loopback:
            raise UsageError(
                f"cannot publish on [{b.host_ip}]: the kernel cannot forward IPv6 loopback "
                "traffic to a container (IPv6 has no route_localnet); publish on 127.0.0.1 "
                "or on one of the host's IPv6 addresses instead"
            )


def check_process_options(opts: Any) -> None:
    """-e/--env-file resolved into opts.env (KEY=VALUE, the caller's value for a bare
    KEY), -u resolved once here so an unknown user fails before anything is set up,
    -it refused when stdin is no terminal (Docker's words)."""
    try:
        given: list[str] = []
        for path in getattr(opts, "env_file", []):
            given += sandbox.parse_env_file(path, dict(os.environ))
        opts.env = given + sandbox.parse_env(opts.env, dict(os.environ))
        sandbox.resolve_user(opts.user)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if opts.interactive and opts.tty and not os.isatty(0):
        raise UsageError("the input device is not a TTY")


def parse_sysctls(opts: RunOptions) -> dict[str, str]:
    """--sysctl KEY=VALUE: Docker's per-container sysctls, the net.* ones (applied in the
    container's namespace by a chained `tuning`; see Runtime._with_sysctls)."""
    out: dict[str, str] = {}
    if not opts.sysctl:
        return out
    from pycni import names

    for spec in opts.sysctl:
        key, sep, value = spec.partition("=")
        bad = f'invalid argument "{spec}" for "--sysctl" flag'
        if not sep or not key:
            raise UsageError(f"{bad}: expected KEY=VALUE")
        if not names.valid_net_sysctl_key(key):
            raise UsageError(f"{bad}: only net.* sysctls are supported (net.a.b=value)")
        if opts.network == "host" or opts.network.startswith("container:"):
            raise UsageError(
                f"{bad}: sysctl '{key}' is not allowed in {opts.network.split(':')[0]} network namespace"
            )
        out[key] = value
    return out


def uses_names(rec: ContainerRecord) -> bool:
    """On a user-defined network: the embedded resolver answers its names."""
    return any(a.network != "bridge" for a in rec.attachments)


def gateway_rank(att: Attachment) -> tuple[int, bool, bool, str]:
    """Sort key of the default-route election (smallest wins)."""
    dual = {":" in g for g in att.gateways} == {True, False}
    return (-att.gw_priority, att.internal, not dual, att.network)


# -- names -----------------------------------------------------------------------------


class NameLock:
    """Reserve a container name atomically: <run>/names/<name> holds the container ID."""

    def __init__(self, paths: Paths) -> None:
        self.dir = os.path.join(paths.run, "names")

    def claim(self, name: str, cid: str, store: ContainerStore) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.dir, name)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                holder = self._holder(path)
                if holder and store.find(holder) is not None:
                    raise UsageError(
                        f'Conflict. The container name "/{name}" is already in use by container "{holder}". '
                        "You have to remove (or rename) that container to be able to reuse that name."
                    ) from None
                os.unlink(path)  # a stale reservation from a crashed run
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(cid)
            return

    @staticmethod
    def _holder(path: str) -> str:
        try:
            with open(path, encoding="ascii") as fh:
                return fh.read().strip()
        except OSError:
            return ""

    def release(self, name: str, cid: str) -> None:
        path = os.path.join(self.dir, name)
        if self._holder(path) == cid:
            try:
                os.unlink(path)
            except OSError:
                pass


# -- network setup and teardown ----------------------------------------------------------


class Runtime:
    def __init__(self, paths: Paths | None = None) -> None:
        self.paths = paths or Paths()
        self.store = ContainerStore(self.paths)
        self.names = NameLock(self.paths)
        self._cni: Any = None
        self._networks: Any = None
        #: sockets that hold the published host ports of the container being run
        self.held_ports: list[Any] = []  # socket.socket

    @property
    def cni(self) -> libcni.CNIConfig:
        if self._cni is None:
            from pycni.runtime import install, libcni

            install.ensure(self.paths.plugin_dir)
            env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
            self._cni = libcni.CNIConfig(
                self.paths.cni_path(), self.paths.cache_dir, env, inprocess=True
            )
        return self._cni

    @property
    def networks(self) -> NetworkStore:
        if self._networks is None:
            from pycni.runtime.networks import NetworkStore

            self._networks = NetworkStore(self.paths)
        return self._networks

    def container_dir(self, cid: str) -> str:
        return os.path.join(self.paths.containers, cid)

    def lock(self, cid: str) -> int:
        """Serialise teardown of one container between its supervisor and `netctl rm`."""
        os.makedirs(self.paths.containers, mode=0o700, exist_ok=True)
        fd = os.open(
            os.path.join(self.paths.containers, f"{cid}.lock"),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
            0o600,
        )
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def loopback_network(self) -> libcni.NetworkConfigList:
        """The chain that brings up a container's `lo` (also what GC keeps valid)."""
        from pycni.runtime import libcni

        raw = (
            b'{"cniVersion": "1.1.0", "name": "netctl-loopback", "plugins": [{"type": "loopback"}]}'
        )
        return libcni.conflist_from_bytes(raw)

    def _with_sysctls(self, net: Any, rec: ContainerRecord) -> Any:
        """The chain with `tuning` appended for the container's --sysctl values (its
        backups in the run dir); the chain as it is without them."""
        if not rec.cap_args.get("sysctl"):
            return net
        from pycni.record import replace

        tuning = {
            "type": "tuning",
            "sysctl": rec.cap_args["sysctl"],
            "dataDir": os.path.join(self.paths.run, "tuning"),
        }
        return replace(net, plugins=[*net.plugins, tuning], raw=b"")

    def _lo_chain(self, rec: ContainerRecord) -> Any:
        """loopback, with the --sysctl values when there is no network chain to carry them."""
        net = self.loopback_network()
        return self._with_sysctls(net, rec) if rec.network_mode == "none" else net

    def runtime_conf(self, rec: ContainerRecord, ifname: str = IFNAME) -> libcni.RuntimeConf:
        """libcni's per-attachment arguments for `rec`'s interface `ifname`."""
        from pycni.runtime import libcni

        args: list[tuple[str, str]] = [("IgnoreUnknown", "1")]
        given = rec.cap_args
        if ifname not in (IFNAME, "lo"):
            # a second network's own ips/mac; published ports stay with the first one's
            given = next((a.cap_args for a in rec.attachments if a.ifname == ifname), {})
        ips = given.get("ips") or []
        if ips:
            args.append(("IP", ",".join(ips)))
        caps = {k: v for k, v in given.items() if k in ("portMappings", "mac")}
        att = next((a for a in rec.attachments if a.ifname == ifname), None)
        if att is not None and att.network != "bridge":
            # podman's capability: the names a plugin that declares `aliases` may publish
            # (the overlay plugin, to every member of the network); what is no DNS name
            # stays local (the resolver reads netctl's records as they are)
            from pycni.names import NAME_CHARS
            from pycni.runtime.dns import names_of

            dns_names = names_of(rec.name, rec.short_id, rec.hostname, att.aliases)
            caps["aliases"] = {
                att.network: [
                    n for n in dict.fromkeys(dns_names) if len(n) <= 253 and set(n) <= NAME_CHARS
                ]
            }
        if given.get("mac"):
            args.append(("MAC", given["mac"]))
        return libcni.RuntimeConf(rec.id, rec.netns, ifname, args, caps)

    def setup(self, rec: ContainerRecord, opts: RunOptions) -> None:
        """Everything before the workload starts. On failure, teardown() undoes it."""
        mode = opts.network
        if mode == "host":
            parse_sysctls(opts)  # refuses net.* sysctls, also for a network of kind host
            rec.network_mode, rec.owns_netns = "host", False
            if opts.publish:
                warn("Published ports are discarded when using host network mode")
            return
        if mode.startswith("container:"):
            target = self.store.find(mode.split(":", 1)[1])
            if target is None:
                raise UsageError(f"No such container: {mode.split(':', 1)[1]}")
            if target.status != "running" or not target.netns:
                raise UsageError(f"cannot join network of a non running container: {target.name}")
            # Join through the workload's own /proc entry: valid in any mount namespace,
            # unlike the bind mount, and it cannot outlive the process it names.
            live = alive(target.pid, process_start_time(target.pid))
            join = f"/proc/{target.pid}/ns/net" if live else target.netns
            rec.network_mode, rec.netns, rec.owns_netns = f"container:{target.id}", join, False
            rec.hostname = target.hostname
            return
        network = None if mode == "none" else self.networks.resolve(mode)
        if network is not None and network.kind == "none":
            network = None
            mode = "none"
        if network is not None and network.kind == "host":
            opts.network = "host"
            return self.setup(rec, opts)
        rec.network_mode = mode
        rec.netns = os.path.join(self.paths.netns_dir, rec.id)
        try:
            netns.create(rec.netns)
        except OSError as exc:
            raise errors.CniError(
                f"failed to create the network namespace {rec.netns}: {exc.strerror}"
            ) from None
        if opts.sysctl:
            rec.cap_args["sysctl"] = parse_sysctls(opts)
        self.store.save(rec)  # from here on, teardown knows what to undo
        self.cni.add(self._lo_chain(rec), self.runtime_conf(rec, "lo"))
        if network is None:
            if opts.publish:
                warn("Published ports are discarded when using the none network mode")
            return
        self._check_requested_ips(network, opts)
        if opts.publish and network.internal:
            # An internal network has no gateway to the outside to DNAT through: Docker
            # publishes nothing for it, and says so.
            warn(f"Published ports are discarded when using the internal network {network.name}")
            opts.publish = []
        # every network exists before anything is attached (Docker checks them first)
        others = [(self._resolve_attachable(spec.network), spec) for spec in opts.attach[1:]]
        for net, spec in others:
            self._check_requested_ips(net, spec)
        bindings = self._bindings(network, opts)
        cap_ports = [b.to_port_mapping().to_dict() for b in bindings]
        if cap_ports:
            rec.cap_args["portMappings"] = cap_ports
        ips = [ip for ip in (opts.ip, opts.ip6) if ip]
        if ips:
            rec.cap_args["ips"] = ips
        if opts.mac:
            rec.cap_args["mac"] = opts.mac
        first = opts.attach[0] if opts.attach else NetworkAttach(network.name)

        def ports(att: Attachment) -> None:  # saved with the attachment's addresses
            from pycni.runtime import portspec

            rec.ports = portspec.expand(bindings, ipv6=any(":" in ip for ip in att.ips))

        self.attach(rec, network, first, IFNAME, finish=ports)  # saves rec first
        for n, (net, spec) in enumerate(others, start=1):
            self.attach(rec, net, spec, f"eth{n}")
        if others:
            self.route_default(rec)

    def _resolve_attachable(self, ref: str) -> Any:
        """A network another interface can be made on (bridge or CNI conflist)."""
        net = self.networks.resolve(ref)
        if net.kind == "host":
            raise UsageError(CONFLICT_HOST)
        if net.kind == "none":
            raise UsageError(CONFLICT_NONE)
        return net

    def _chain_for(self, rec: ContainerRecord, network: Any, ifname: str) -> Any:
        """The chain an attachment is added and deleted with: the network's as it is for
        eth0 (with --sysctl's tuning); for another interface, the bridge installs no
        default route (route_default() puts the one winner's in place)."""
        if ifname == IFNAME:
            return self._with_sysctls(network.conflist, rec)
        from pycni.record import replace

        plugins = []
        for p in network.conflist.plugins:
            if isinstance(p, dict) and p.get("type") == "bridge":
                p = {**p, "isDefaultGateway": False}
            plugins.append(p)
        return replace(network.conflist, plugins=plugins, raw=b"")

    def attach(
        self,
        rec: ContainerRecord,
        network: Any,
        spec: NetworkAttach,
        ifname: str,
        finish: Callable[[Attachment], None] | None = None,
    ) -> Attachment:
        """CNI ADD of `network` as `ifname`; recorded in rec.attachments (and saved first,
        so that a crash half-way is still torn down). `finish(attachment)` runs before
        the last save: what depends on its addresses is saved with them."""
        att = Attachment(
            network=network.name,
            ifname=ifname,
            aliases=list(spec.aliases),
            gw_priority=spec.gw_priority,
            internal=bool(network.internal),
        )
        if ifname != IFNAME:
            ips = [ip for ip in (spec.ip, spec.ip6) if ip]
            if ips:
                att.cap_args["ips"] = ips
            if spec.mac:
                att.cap_args["mac"] = spec.mac
        att.pending = True  # until ADD answered: teardown DELs it all the same
        rec.attachments = [a for a in rec.attachments if a.ifname != ifname] + [att]
        self.store.save(rec)
        mark = self._claim_bridge(network)
        try:
            result = self.cni.add(
                self._chain_for(rec, network, ifname), self.runtime_conf(rec, ifname)
            )
        except errors.CniError as exc:
            if (spec.ip or spec.ip6) and "not available" in exc.msg:
                raise UsageError("Address already in use") from None
            raise
        if mark:
            from pycni.runtime.networks import mark_bridge

            mark_bridge(network, os.path.realpath(self.paths.lib))
        for i, iface in enumerate(result.interfaces):
            if iface.name == ifname and iface.sandbox:
                att.mac = iface.mac
                att.ips = [str(ip.address) for ip in result.ips if ip.interface in (None, i)]
                att.gateways = [
                    str(ip.gateway)
                    for ip in result.ips
                    if ip.gateway is not None and ip.interface in (None, i)
                ]
            elif iface.name.startswith("veth") and not iface.sandbox:
                att.host_veth = iface.name
        if not att.ips:
            att.ips = [str(ip.address) for ip in result.ips]
            att.gateways = [str(ip.gateway) for ip in result.ips if ip.gateway is not None]
        att.pending = False
        if finish is not None:
            finish(att)
        self.store.save(rec)
        return att

    def route_default(self, rec: ContainerRecord) -> None:
        """One default route per family, through the winning attachment: highest
        gw-priority, then a non-internal network before an internal one, then a
        dual-stack one, then the network name (Docker's order). Internal networks never
        give a default route; with no candidate left, there is none."""
        from pycni import netlink

        live = [a for a in rec.attachments if not a.pending]
        ranked = sorted(live, key=gateway_rank)
        fd = netns.open_netns(rec.netns)
        try:
            with netlink.Netlink(netns_fd=fd) as nl:
                for version, dst in ((4, "0.0.0.0/0"), (6, "::/0")):
                    import ipaddress

                    want = next(
                        (
                            (a, g)
                            for a in ranked
                            if not a.internal
                            for g in a.gateways
                            if ipaddress.ip_address(g).version == version
                        ),
                        None,
                    )
                    family = netlink.AF_INET if version == 4 else netlink.AF_INET6
                    for r in nl.routes(family):
                        if r.dst.prefixlen == 0 and r.type == 1:
                            link = nl.link_by_index(r.oif)
                            keep = (
                                want is not None
                                and link is not None
                                and (link.name == want[0].ifname and str(r.gateway) == want[1])
                            )
                            if not keep:
                                nl.del_route_entry(r)
                    if want is not None:
                        link = nl.link(want[0].ifname)
                        if link is not None:
                            nl.add_route(
                                ipaddress.ip_network(dst),
                                ipaddress.ip_address(want[1]),
                                oif=link.index,
                                replace=True,
                            )
        finally:
            os.close(fd)

    def _claim_bridge(self, network: Network) -> bool:
        """Refuse a bridge another netctl root owns (see networks.claim_bridge)."""
        if network.kind != "bridge" or not network.managed or not network.bridge:
            return False
        from pycni.runtime.networks import claim_bridge

        if network.default:
            hint = f'set "bridge" and "bip" in {self.paths.daemon_config} to a name and subnet of its own'
        else:
            hint = "create the network with another -o com.docker.network.bridge.name and --subnet"
        return claim_bridge(network, os.path.realpath(self.paths.lib), hint)

    def _check_requested_ips(self, network: Network, opts: RunOptions | NetworkAttach) -> None:
        for value in (opts.ip, opts.ip6):
            if not value:
                continue
            if network.default:
                raise UsageError(
                    "user specified IP address is supported only when connecting to networks with user configured subnets"
                )
            import ipaddress

            addr = ipaddress.ip_address(value)
            subnets = [ipaddress.ip_network(str(s)) for s in network.subnets]
            if subnets and not any(addr in s for s in subnets):
                raise UsageError(
                    f"Invalid address {value}: It does not belong to any of this network's subnets"
                )

    def _bindings(self, network: Any, opts: RunOptions) -> list[portspec.PortBinding]:
        from pycni.runtime import hostports, portspec

        try:
            parsed = portspec.parse_publish_all(opts.publish)
        except portspec.PortSpecError as exc:
            raise UsageError(str(exc)) from None
        default_ip = getattr(network, "host_binding_ipv4", "") or self._daemon_ip()
        taken: dict[str, set[int]] = {}
        for other in self.store.all():
            if other.status == "running":
                for p in other.ports:
                    taken.setdefault(p.protocol, set()).add(p.host_port)
        out = []
        for b in parsed:
            if not b.host_ip and default_ip and default_ip not in ("0.0.0.0", "::"):
                b = portspec.PortBinding(
                    host_ip=default_ip,
                    host_port=b.host_port,
                    host_port_end=b.host_port_end,
                    container_port=b.container_port,
                    protocol=b.protocol,
                )
            if b.needs_host_port:
                try:
                    port = hostports.pick_free_port(
                        b.protocol, b.host_ip, taken.get(b.protocol, set()), b.host_port_range
                    )
                except hostports.PortAllocationError as exc:
                    raise UsageError(str(exc)) from None
                b = b.with_host_port(port)
            elif b.host_port in taken.get(b.protocol, set()):
                raise UsageError(
                    str(hostports.PortAllocationError(b.protocol, b.host_ip, (b.host_port,) * 2))
                )
            try:
                # Held (bound, never listening) by this process and the supervisor it
                # forks, for as long as the container lives; closed on exec, so the
                # workload never sees it.
                held = hostports.hold_port(b.protocol, b.host_ip, b.host_port)
            except hostports.PortInUseError as exc:
                raise UsageError(str(exc)) from None
            if held is not None:
                self.held_ports.append(held)
            taken.setdefault(b.protocol, set()).add(b.host_port)
            out.append(b)
        return out

    def _daemon_ip(self) -> str:
        try:
            cfg = self.networks.runtime_defaults()
        except Exception:
            return ""
        return cfg.ip

    def teardown(self, rec: ContainerRecord) -> None:
        """Undo setup(): CNI DEL in reverse, then remove the netns. Idempotent."""
        if rec.torn_down:
            return
        problems = []
        if rec.owns_netns and rec.netns:
            for att in reversed(rec.attachments):
                if not att.ifname:
                    continue  # connected while stopped: never attached
                try:
                    net = self.networks.resolve(att.network)
                    chain = self._chain_for(rec, net, att.ifname)
                    self.cni.delete(chain, self.runtime_conf(rec, att.ifname))
                except Exception as exc:
                    problems.append(f"network {att.network}: {exc}")
            if (
                rec.network_mode not in ("host",)
                and not rec.attachments
                and rec.network_mode != "none"
            ):
                # ADD failed half-way: the chain rolled itself back; DEL once more by
                # attachment key in case the process died before it could.
                try:
                    net = self.networks.resolve(rec.network_mode)
                    self.cni.delete(self._with_sysctls(net.conflist, rec), self.runtime_conf(rec))
                except Exception as exc:
                    problems.append(f"network {rec.network_mode}: {exc}")
            try:
                self.cni.delete(self._lo_chain(rec), self.runtime_conf(rec, "lo"))
            except Exception as exc:
                problems.append(f"loopback: {exc}")
            try:
                netns.remove(rec.netns)
            except OSError as exc:
                problems.append(f"netns {rec.netns}: {exc.strerror}")
        if problems:
            raise errors.CniError(f"teardown of {rec.name} incomplete: " + "; ".join(problems))
        rec.torn_down = True

    # -- files -----------------------------------------------------------------------

    def write_files(self, rec: ContainerRecord, opts: RunOptions) -> dict[str, str]:
        """resolv.conf, hosts and hostname of the container; returns {target: source}."""
        directory = self.container_dir(rec.id)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        if rec.network_mode.startswith("container:"):
            target_dir = self.container_dir(rec.network_mode.split(":", 1)[1])
            return {
                t: os.path.join(target_dir, n)
                for t, n in (
                    ("/etc/resolv.conf", "resolv.conf"),
                    ("/etc/hosts", "hosts"),
                    ("/etc/hostname", "hostname"),
                )
                if os.path.exists(os.path.join(target_dir, n))
            }
        host_mode = rec.network_mode == "host"
        try:
            with open("/etc/resolv.conf", encoding="utf-8") as fh:
                host_resolv = fh.read()
        except OSError:
            host_resolv = ""
        dns, search, options = opts.dns, opts.dns_search, opts.dns_option
        if not (dns or search or options):
            try:
                cfg = self.networks.runtime_defaults()
                dns, search, options = (
                    list(cfg.dns or []),
                    list(cfg.dns_search or []),
                    list(cfg.dns_opts or []),
                )
            except Exception:
                pass
        rec.dns, rec.dns_search, rec.dns_options = dns, search, options
        has_v6 = any(":" in ip for a in rec.attachments for ip in a.ips)
        if uses_names(rec):
            from pycni.runtime import dns as resolver

            ups = resolver.upstreams_for(rec.dns, host_resolv)
            shown = [s if own else f"host({s})" for s, own in ups]
            text = etcfiles.embedded_resolv_conf(host_resolv, shown, search, options)
        else:
            text = etcfiles.resolv_conf(
                host_resolv, dns, search, options, host_mode=host_mode, ipv6=has_v6
            )
        files = {"resolv.conf": text}
        gateway = next((g for a in rec.attachments for g in a.gateways if ":" not in g), "")
        if not gateway and rec.network_mode == "host":
            gateway = "127.0.0.1"
        extra = [etcfiles.parse_add_host(spec, gateway) for spec in opts.add_host]
        rec.extra_hosts = [f"{h}:{ip}" for h, ip in extra]
        host_hosts = ""
        if host_mode:
            try:
                with open("/etc/hosts", encoding="utf-8") as fh:
                    host_hosts = fh.read()
            except OSError:
                host_hosts = ""
        addresses = [ip.split("/")[0] for a in rec.attachments for ip in a.ips]
        files["hosts"] = etcfiles.hosts_file(rec.hostname, addresses, extra, host_hosts)
        files["hostname"] = rec.hostname + "\n"
        out = {}
        for name, text in files.items():
            path = os.path.join(directory, name)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            out[f"/etc/{name}"] = path
        return out

    # -- the whole run ---------------------------------------------------------------

    def run(self, opts: RunOptions) -> int:
        validate(opts)
        cid = new_id()
        name = opts.name or random_name()
        rec = ContainerRecord(
            id=cid, name=name, command=opts.command, detach=opts.detach, auto_remove=opts.rm
        )
        rec.hostname = opts.hostname or cid[:12]
        rec.env, rec.workdir, rec.user = opts.env, opts.workdir, opts.user
        rec.interactive, rec.tty = opts.interactive and not opts.detach, opts.tty
        try:
            rec.caps = sorted(sandbox.resolve_caps(opts.cap_add, opts.cap_drop, opts.privileged))
        except sandbox.CapabilityError as exc:
            raise UsageError(str(exc)) from None
        self.names.claim(name, cid, self.store)
        try:
            self.setup(rec, opts)
            files = self.write_files(rec, opts)
            rec.log_path = os.path.join(self.container_dir(cid), "log")
            names = uses_names(rec)
            if names or opts.detach:
                self.store.save(rec)
            # else supervise() saves it, with its PID, before the workload may start
            if names:
                self.names_changed()
        except BaseException:
            try:
                self.teardown(rec)
            except Exception as exc:
                warn(str(exc))
            self._forget(rec)
            raise
        if opts.detach:
            failure = self._spawn_supervisor(rec, files)
            if failure is not None:
                # as docker run -d: the reason and the shell's code, not a container ID
                code, message = failure
                sys.stderr.write(f"netctl: {message}\n")
                return code
            print(cid)
            return 0
        return self.supervise(rec, files, foreground=True)

    def _forget(self, rec: ContainerRecord) -> None:
        self.store.delete(rec.id)
        self.names.release(rec.name, rec.id)
        d = self.container_dir(rec.id)
        for leftover in ("resolv.conf", "hosts", "hostname", "log"):
            try:
                os.unlink(os.path.join(d, leftover))
            except OSError:
                pass
        try:
            os.rmdir(d)
        except OSError:
            pass
        try:
            os.unlink(os.path.join(self.paths.containers, f"{rec.id}.lock"))
        except OSError:
            pass

    def _spawn_supervisor(
        self, rec: ContainerRecord, files: dict[str, str]
    ) -> tuple[int, str] | None:
        """Start the -d supervisor; returns once the workload was exec'd (None) or could
        not be started ((exit code, reason), as `docker run -d` reports it)."""
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # first child: detach from the terminal and the session
            try:
                os.close(ready_r)
                os.setsid()
                if os.fork() != 0:
                    os._exit(0)
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)
                log = os.open(rec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
                os.dup2(log, 1)
                os.dup2(log, 2)
                rec.supervisor_pid = os.getpid()
                rec.supervisor_start = process_start_time(rec.supervisor_pid)
                code = self.supervise(rec, files, foreground=False, ready_fd=ready_w)
                os._exit(code)
            except BaseException:
                os._exit(EXIT_SETUP)
        os.close(ready_w)
        os.waitpid(pid, 0)
        # Wait until the supervisor recorded the workload as exec'd, or why it was not.
        answer = b""
        while chunk := os.read(ready_r, 4096):
            answer += chunk
        os.close(ready_r)
        return _exec_failure(answer)

    def supervise(
        self, rec: ContainerRecord, files: dict[str, str], foreground: bool, ready_fd: int = -1
    ) -> int:
        """Start the container's init (PID 1 of a PID namespace of its own, in the
        container's namespaces), which starts the workload; pass signals on; when it
        ends, tear the network down. Every process of the container lives in that PID
        namespace, so ending its init ends them all (the kernel kills the rest)."""
        rec.supervisor_pid = os.getpid()
        rec.supervisor_start = process_start_time(rec.supervisor_pid)
        waited = {*FORWARDED, signal.SIGCHLD} | ({signal.SIGWINCH} if rec.tty else set())
        signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        go_r, go_w = os.pipe()
        exec_r, exec_w = os.pipe()  # closed on the workload's exec, or its reason
        log_fd = -1
        if foreground and rec.log_path:
            log_fd = os.open(rec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            os.set_inheritable(log_fd, False)
        relay = PtyRelay(rec.interactive, log_fd) if rec.tty else None
        tee = OutputTee(log_fd) if relay is None and log_fd >= 0 else None
        # with -t the terminal is the pty's, through the relay: we stay its foreground job
        took_tty = foreground and relay is None and _foreground_tty()
        own_pidns = sandbox.new_pid_namespace_for_next_child()
        try:
            pid = os.fork()
        finally:
            if os.getpid() == rec.supervisor_pid:
                sandbox.restore_pid_namespace(own_pidns)
        if pid == 0:  # the container's init
            try:
                os.close(go_w)
                os.close(exec_r)
                if relay is not None:
                    os.close(relay.master)
                if tee is not None:
                    tee.child()
                _container_init(rec, files, exec_w, took_tty, relay.slave if relay else -1, go_r)
            except BaseException:
                os._exit(EXIT_SETUP)
        os.close(go_r)
        os.close(exec_w)
        if relay is not None:
            relay.start()
        if tee is not None:
            tee.start()
        rec.pid = pid
        rec.pid_start = process_start_time(pid)
        rec.status = "running"
        rec.started = time.time()
        self.store.save(rec)
        try:
            os.write(go_w, b"x")
        except BrokenPipeError:
            pass  # the init failed to set up, and says why on exec_r
        os.close(go_w)
        answer = b""
        while chunk := os.read(exec_r, 4096):
            answer += chunk
        os.close(exec_r)
        if ready_fd >= 0:
            os.write(ready_fd, answer or b"x")
            os.close(ready_fd)
        quiet_gc = _gc_paused_by_cli()
        if quiet_gc:
            # A supervisor may live as long as its workload: collect from here on, but
            # not what exists now (one pass over all of it cost 3-6 ms here).
            gc.freeze()
            gc.enable()
        try:
            code = self._wait(pid, relay.resize if relay is not None else None)
        finally:
            if relay is not None:
                relay.finish()
            if tee is not None:
                tee.finish()
            elif log_fd >= 0:
                os.close(log_fd)
        if quiet_gc:
            gc.disable()  # the teardown and the exit: short again
        if took_tty:
            _take_foreground()
        rec.exit_code = code
        rec.status = "exited"
        rec.finished = time.time()
        lock = self.lock(rec.id)
        try:
            fresh = self.store.find(rec.id) or rec
            rec.torn_down = fresh.torn_down
            try:
                self.teardown(rec)
            except errors.CniError as exc:
                sys.stderr.write(f"netctl: {exc}\n")
            if rec.auto_remove:
                self._forget(rec)
            else:
                self.store.save(rec)
        finally:
            os.close(lock)
        if uses_names(rec):
            self.names_changed()
        return code

    @staticmethod
    def _wait(pid: int, on_winch: Any = None) -> int:
        """Pass every signal sent to us on to the container's init (which passes it to
        the workload, once), until the init exits; its exit code, docker's way. With
        a pty (-t), SIGWINCH calls `on_winch` (the new window size goes to the pty)."""
        waited = {*FORWARDED, signal.SIGCHLD} | ({signal.SIGWINCH} if on_winch else set())
        while True:
            info = signal.sigwaitinfo(waited)
            if info.si_signo == signal.SIGWINCH:
                on_winch()
                continue
            if info.si_signo != signal.SIGCHLD:
                try:
                    os.kill(pid, info.si_signo)
                except ProcessLookupError:
                    pass
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                code = os.waitstatus_to_exitcode(status)
                return 128 - code if code < 0 else code

    # -- network connect / disconnect ---------------------------------------------------

    def connect(self, net_ref: str, ref: str, spec: NetworkAttach) -> ContainerRecord:
        """`netctl network connect`: a new interface (ethN) in a running container, or a
        recorded attachment for a stopped one. A failure leaves nothing behind."""
        network = self.networks.resolve(net_ref)  # "network X not found"
        rec = self.get(ref)
        mode = rec.network_mode
        if mode.startswith("container:"):
            raise UsageError(CONFLICT_SHARED)
        if mode == "host" or network.kind == "host":
            raise UsageError(CONFLICT_HOST)
        if mode == "none" or network.kind == "none":
            raise UsageError(CONFLICT_NONE)
        if spec.aliases and network.default:
            raise UsageError(ALIAS_ON_DEFAULT)
        _check_ip_flags(spec.ip, spec.ip6)
        self._check_requested_ips(network, spec)
        lock = self.lock(rec.id)
        try:
            rec = self.get(rec.id)
            if any(a.network == network.name for a in rec.attachments):
                raise UsageError(
                    f"endpoint with name {rec.name} already exists in network {network.name}"
                )
            running = rec.status == "running" and alive(rec.pid, rec.pid_start)
            if not running:
                if rec.torn_down or rec.status == "exited":
                    att = Attachment(
                        network=network.name,
                        ifname="",
                        aliases=list(spec.aliases),
                        gw_priority=spec.gw_priority,
                        internal=bool(network.internal),
                        pending=True,
                    )
                    att.cap_args = {"ips": [ip for ip in (spec.ip, spec.ip6) if ip]}
                    rec.attachments.append(att)
                    self.store.save(rec)
                    return rec
                raise UsageError(f"container {rec.id} is not running")
            used = {a.ifname for a in rec.attachments}
            ifname = next(f"eth{n}" for n in range(1, 4096) if f"eth{n}" not in used)
            try:
                self.attach(rec, network, spec, ifname)
            except BaseException:
                # ADD rolled itself back; DEL once more by key and forget the attachment
                try:
                    self.cni.delete(
                        self._chain_for(rec, network, ifname), self.runtime_conf(rec, ifname)
                    )
                except Exception as exc:
                    warn(str(exc))
                rec.attachments = [a for a in rec.attachments if a.ifname != ifname]
                self.store.save(rec)
                raise
            self.route_default(rec)
            self.refresh_hosts(rec)
            self.refresh_resolv(rec)
            self.store.save(rec)
        finally:
            os.close(lock)
        self.names_changed()
        return rec

    def disconnect(self, net_ref: str, ref: str, force: bool = False) -> ContainerRecord:
        """`netctl network disconnect`: DEL of that interface; -f also when the network
        itself is gone."""
        rec = self.get(ref)
        try:
            network = self.networks.resolve(net_ref)
            name = network.name
        except errors.CniError:
            if not force:
                raise
            network, name = None, net_ref
        if rec.network_mode == "host" or name == "host":
            raise UsageError(CONFLICT_HOST)
        lock = self.lock(rec.id)
        try:
            rec = self.get(rec.id)
            att = next((a for a in rec.attachments if a.network == name), None)
            if att is None:
                raise UsageError(f"container {rec.id} is not connected to network {name}")
            running = rec.status == "running" and alive(rec.pid, rec.pid_start)
            if running and not att.pending:
                if network is not None:
                    self.cni.delete(
                        self._chain_for(rec, network, att.ifname),
                        self.runtime_conf(rec, att.ifname),
                    )
                else:
                    self._unplug(rec, att.ifname)
                if att.ifname == IFNAME:
                    rec.ports = []  # published through this network: gone with it
                    rec.cap_args.pop("portMappings", None)
            rec.attachments = [a for a in rec.attachments if a is not att]
            self.store.save(rec)
            if running:
                self.route_default(rec)
                self.refresh_hosts(rec)
        finally:
            os.close(lock)
        self.names_changed()
        return rec

    def _unplug(self, rec: ContainerRecord, ifname: str) -> None:
        """-f for a network that no longer exists: remove the interface itself (its veth
        peer goes with it)."""
        from pycni import netlink

        fd = netns.open_netns(rec.netns)
        try:
            with netlink.Netlink(netns_fd=fd) as nl:
                link = nl.link(ifname)
                if link is not None:
                    nl.del_link(link.index)
        finally:
            os.close(fd)

    def refresh_hosts(self, rec: ContainerRecord) -> None:
        """Rewrite the container's /etc/hosts in place (it is bind-mounted: the same
        inode must change) after its addresses changed."""
        path = os.path.join(self.container_dir(rec.id), "hosts")
        if not os.path.exists(path):
            return
        extra = [(h.partition(":")[0], h.partition(":")[2]) for h in rec.extra_hosts if ":" in h]
        addresses = [ip.split("/")[0] for a in rec.attachments for ip in a.ips]
        text = etcfiles.hosts_file(rec.hostname, addresses, extra)
        with open(path, "r+", encoding="utf-8") as fh:
            fh.truncate(0)
            fh.write(text)

    def refresh_resolv(self, rec: ContainerRecord) -> None:
        """A container that joined its first user-defined network now asks the embedded
        resolver (Docker rebuilds resolv.conf then too); rewritten in place."""
        path = os.path.join(self.container_dir(rec.id), "resolv.conf")
        if not uses_names(rec) or not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as fh:
            if fh.read().startswith("nameserver 127.0.0.11\n"):
                return
        try:
            with open("/etc/resolv.conf", encoding="utf-8") as fh:
                host_resolv = fh.read()
        except OSError:
            host_resolv = ""
        from pycni.runtime import dns as resolver

        ups = resolver.upstreams_for(rec.dns, host_resolv)
        shown = [s if own else f"host({s})" for s, own in ups]
        text = etcfiles.embedded_resolv_conf(host_resolv, shown, rec.dns_search, rec.dns_options)
        with open(path, "r+", encoding="utf-8") as fh:
            fh.truncate(0)
            fh.write(text)

    def names_changed(self) -> None:
        """The embedded resolver re-reads netctl's records (see runtime/dns.py): started
        when the first container needs it, gone after the last."""
        from pycni.runtime import dns as resolver

        try:
            if not resolver.ensure(self.paths) and any(
                resolver.needs_resolver(r) for r in self.store.all()
            ):
                warn("the embedded DNS resolver did not start (see its log under the run dir)")
        except Exception as exc:
            warn(f"embedded DNS resolver: {exc}")

    # -- lifecycle commands ------------------------------------------------------------

    def get(self, ref: str) -> ContainerRecord:
        rec = self.store.find(ref)
        if rec is None:
            raise UsageError(f"No such container: {ref}")
        return rec

    def stop(self, ref: str, timeout: float = 10.0) -> ContainerRecord:
        rec = self.get(ref)
        signalled = rec.status == "running" and self._signal(rec, signal.SIGTERM)
        if signalled and not self._wait_gone(rec, timeout):
            self._signal(rec, signal.SIGKILL)  # the kernel ends the whole PID namespace
            self._wait_gone(rec, 10.0)
        # Wait for the supervisor's teardown; if it is gone (killed), do it ourselves.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rec = self.get(ref)
            if rec.torn_down or (
                rec.status == "exited" and not alive(rec.supervisor_pid, rec.supervisor_start)
            ):
                break
            time.sleep(0.05)
        self.teardown_locked(rec)
        return rec

    @staticmethod
    def _signal(rec: ContainerRecord, sig: int) -> bool:
        """Signal the container's init through a pidfd, and only when it is the process
        recorded (PID and start time, checked once the pidfd pins it): never a process
        that reused the PID. False when it is gone already."""
        if not rec.pid or not rec.pid_start:
            return False
        try:
            fd = os.pidfd_open(rec.pid)
        except OSError:
            return False
        try:
            if not alive(rec.pid, rec.pid_start):
                return False
            signal.pidfd_send_signal(fd, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(fd)

    @staticmethod
    def _wait_gone(rec: ContainerRecord, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while alive(rec.pid, rec.pid_start):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def teardown_locked(self, rec: ContainerRecord) -> None:
        """teardown() under the container's lock, from its freshest record: for `rm`,
        `stop`, `system prune` and `system gc` of containers whose supervisor is gone."""
        lock = self.lock(rec.id)
        try:
            fresh = self.store.find(rec.id)
            if fresh is None:
                return
            if not fresh.torn_down:
                self.teardown(fresh)
                self.store.save(fresh)
                if uses_names(fresh):
                    self.names_changed()
            rec.torn_down = True
        finally:
            os.close(lock)

    def remove(self, ref: str, force: bool = False) -> str:
        rec = self.get(ref)
        if rec.status == "running":
            if not force:
                raise UsageError(
                    f'cannot remove container "/{rec.name}": container is running: stop the container before removing or force remove'
                )
            self._signal(rec, signal.SIGKILL)  # every process of its PID namespace ends
            self.stop(rec.id, timeout=5)
            rec = self.get(rec.id)
        self.teardown_locked(rec)
        self._forget(rec)
        return rec.name

    def prune(self) -> list[str]:
        removed = []
        for rec in self.store.all():
            if rec.status == "exited":
                self.teardown_locked(rec)
                self._forget(rec)
                removed.append(rec.id)
        return removed

    def exec(
        self,
        ref: str,
        argv: list[str],
        env: list[str] | None = None,
        workdir: str = "",
        user: str = "",
        interactive: bool = False,
        tty: bool = False,
    ) -> int:
        """Run `argv` in the container: its namespaces (PID namespace included, so the
        process ends with the container) and its capabilities; its environment with
        `env` on top, its user and working directory unless given (Docker's exec)."""
        rec = self.get(ref)
        if rec.status != "running" or not alive(rec.pid, rec.pid_start):
            raise UsageError(f"container {rec.id} is not running")
        try:
            target = sandbox.pid_namespace_fd(rec.pid)
        except sandbox.SetupError:
            raise UsageError(f"container {rec.id} is not running") from None
        own = sandbox.pid_namespace_fd(os.getpid())
        try:
            netns.setns(target, sandbox.CLONE_NEWPID)  # for the child forked next
        finally:
            os.close(target)
        relay = PtyRelay(interactive) if tty else None
        pid = os.fork()
        if pid != 0:
            sandbox.restore_pid_namespace(own)
        if pid == 0:
            proc = ContainerRecord(rec.id, rec.name, argv, hostname=rec.hostname)
            proc.interactive, proc.tty = interactive, tty
            try:
                if relay is not None:
                    os.close(relay.master)
                _workload_stdio(proc, relay.slave if relay else -1)
                sandbox.join_namespaces(rec.pid)
                penv, puser = _process_settings(
                    proc, [*rec.env, *(env or [])], user or rec.user, workdir or rec.workdir
                )
                sandbox.drop_capabilities(frozenset(rec.caps), puser)
            except (sandbox.SetupError, ValueError) as exc:
                sys.stderr.write(f"netctl: {exc}\n")
                os._exit(EXIT_SETUP)
            except OSError as exc:
                sys.stderr.write(f"netctl: {exc.strerror}\n")
                os._exit(127 if exc.errno == errno.ENOENT else 126)
            sandbox.execvp(argv, env=penv)
        if relay is not None:
            relay.start()
        try:
            _pid, status = os.waitpid(pid, 0)
        finally:
            if relay is not None:
                relay.finish()
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code
