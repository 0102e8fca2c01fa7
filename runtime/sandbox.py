"""The child side of `netctl run` and `netctl exec`: enter namespaces, then exec.

Stdlib only and small, like mkosi's sandbox: a list of steps, then execvp. Runs in the
forked child, so any failure is reported on stderr and turned into docker's exit codes
(125 setup failed, 126 not executable, 127 not found).
"""

from __future__ import annotations

import os
import sys

from pycni import netns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

CLONE_NEWPID = 0x20000000

# -- capabilities (linux/capability.h) ----------------------------------------------------

CAPS = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
#: Docker's default set for a container, without NET_RAW (as podman ships it): a
#: workload can neither forge packets nor change the node's network, firewall,
#: mounts or namespaces.
DEFAULT_CAPS = frozenset(
    CAPS.index(name)
    for name in (
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "SETGID", "SETUID",
        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
    )
)  # fmt: skip
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_V3 = 0x20080522


class CapabilityError(ValueError):
    """An unknown capability name in --cap-add/--cap-drop."""


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return len(CAPS) - 1


def resolve_caps(add: list[str], drop: list[str], privileged: bool = False) -> frozenset[int]:
    """Docker's rules: the default set, then --cap-drop, then --cap-add (names with or
    without CAP_, any case; ALL means every one); --privileged means all of them."""
    every = frozenset(range(last_cap() + 1))
    if privileged:
        return every

    def names(items: list[str], flag: str) -> set[int] | None:
        out: set[int] = set()
        for item in items:
            name = item.upper().removeprefix("CAP_")
            if name == "ALL":
                return None
            if name not in CAPS or CAPS.index(name) not in every:
                raise CapabilityError(f'invalid {flag}: unknown capability: "CAP_{name}"')
            out.add(CAPS.index(name))
        return out

    dropped = names(drop, "--cap-drop")
    added = names(add, "--cap-add")
    keep = set() if dropped is None else set(DEFAULT_CAPS) - dropped
    return every if added is None else frozenset(keep | added)


def drop_capabilities(keep: frozenset[int], user: ExecUser | None = None) -> None:
    """Limit this process, and everything it execs, to `keep`: the bounding set (what
    an exec'd root program gets), the inheritable and ambient sets, then the
    effective and permitted sets. With `user` (-u), groups, gid and uid are switched
    between the two, as runc does: root still has CAP_SETUID/SETGID then (even when
    they are dropped from the bounding set), and a switch away from uid 0 clears the
    permitted and effective sets, so a non-root workload has none (Docker's way)."""
    prctl = netns.libc_function("prctl")
    top = last_cap()
    for cap in range(top + 1):
        if cap not in keep and prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = netns.last_errno()
            raise SetupError(f"prctl(PR_CAPBSET_DROP, {cap}): {os.strerror(err)}")
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # none before 4.3
    if user is not None:
        _step(f"setgroups({user.groups})", os.setgroups, user.groups)
        _step(f"setgid({user.gid})", os.setgid, user.gid)
        _step(f"setuid({user.uid})", os.setuid, user.uid)
    mask = sum(1 << cap for cap in keep if cap <= top) & permitted_caps()
    low, high = _u32(mask & 0xFFFFFFFF), _u32(mask >> 32)
    header = _u32(_CAP_V3) + _u32(0)  # struct __user_cap_header_struct {version, pid}
    data = low * 3 + high * 3  # {effective, permitted, inheritable} for caps 0-31, then 32-63
    if netns.libc_function("capset")(header, data) != 0:
        err = netns.last_errno()
        raise SetupError(f"capset: {os.strerror(err)}")


def _u32(value: int) -> bytes:
    """A C uint32_t as the kernel reads it (native byte order)."""
    return value.to_bytes(4, sys.byteorder)


def permitted_caps() -> int:
    """This process's permitted set (a node may lack some, e.g. CAP_SYS_RESOURCE in a
    container): nothing outside it can be kept."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapPrm:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return (1 << (last_cap() + 1)) - 1


class ExecUser:
    """Who the workload runs as (-u): uid, gid, supplementary groups and home."""

    def __init__(self, uid: int, gid: int, groups: list[int], home: str) -> None:
        self.uid, self.gid, self.groups, self.home = uid, gid, groups, home

    def __repr__(self) -> str:
        return f"ExecUser({self.uid}, {self.gid}, {self.groups}, {self.home!r})"


def resolve_user(spec: str) -> ExecUser | None:
    """-u uid[:gid] | name[:group], resolved as runc does against the host's passwd and
    group files: a numeric uid needs no entry (gid 0, home /); a name does; the
    supplementary groups are the groups listing the user by name. ValueError in
    Docker's words when a name is unknown."""
    import grp
    import pwd

    if not spec:
        return None
    user, sep, group = spec.partition(":")
    entry = None
    if user.isdigit():
        try:
            entry = pwd.getpwuid(int(user))
        except KeyError:
            entry = None
        uid = int(user)
    else:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ValueError(
                f"unable to find user {user}: no matching entries in passwd file"
            ) from None
        uid = entry.pw_uid
    gid = entry.pw_gid if entry is not None else 0
    if sep and group:
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ValueError(
                    f"unable to find group {group}: no matching entries in group file"
                ) from None
    groups: list[int] = []
    if entry is not None:
        groups = sorted({g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem} - {gid})
    return ExecUser(uid, gid, [gid, *groups], entry.pw_dir if entry is not None else "/")


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class EnvError(ValueError):
    """A bad -e / --env-file value, in Docker's words."""


def parse_env_file(path: str, environ: dict[str, str]) -> list[str]:
    """Docker's --env-file: one KEY=VALUE a line (the value verbatim, quotes and all),
    blank lines and #-comments skipped, a bare KEY taken from the caller's environment
    (left out when unset)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise EnvError(f"open {path}: {(exc.strerror or str(exc)).lower()}") from None
    out = []
    for line in lines:
        text = line.lstrip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        if not key:
            raise EnvError(f"no variable name on line '{line}'")
        if any(c.isspace() for c in key):
            raise EnvError(f"variable '{key}' contains whitespaces")
        if sep:
            out.append(f"{key}={value}")
        elif key in environ:
            out.append(f"{key}={environ[key]}")
    return out


def parse_env(values: list[str], environ: dict[str, str]) -> list[str]:
    """-e KEY=VALUE | KEY (from the caller's environment, left out when unset)."""
    out = []
    for value in values:
        key, sep, _ = value.partition("=")
        if not key:
            raise EnvError(f"invalid environment variable: {value}")
        if sep:
            out.append(value)
        elif key in environ:
            out.append(f"{key}={environ[key]}")
    return out


def workload_env(
    given: list[str], hostname: str, home: str = "/root", tty: bool = False
) -> dict[str, str]:
    """The workload's whole environment, built as Docker builds it: PATH and HOSTNAME
    (TERM=xterm with -t), then the given variables (a later one wins), then HOME
    from the user's passwd entry when still unset. Nothing of the caller's."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    if tty:
        env["TERM"] = "xterm"
    for item in given:
        key, _, value = item.partition("=")
        env[key] = value
    env.setdefault("HOME", home)
    return env


def enter_workdir(path: str) -> None:
    """-w: the workload's working directory, which must exist on the host (netctl
    creates nothing on the host's file system). OSError as Docker words it."""
    try:
        os.chdir(path)
    except OSError as exc:
        raise OSError(
            exc.errno, f'chdir to cwd ("{path}"): {(exc.strerror or "").lower()}'
        ) from None


def cap_names(caps: frozenset[int]) -> list[str]:
    return [f"CAP_{CAPS[c]}" if c < len(CAPS) else str(c) for c in sorted(caps)]


class SetupError(Exception):
    """A namespace or mount step failed; the message names the syscall and the path."""


def _step(what: str, fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except OSError as exc:
        raise SetupError(f"{what}: {exc.strerror or exc}") from None


def sethostname(name: str) -> None:
    data = name.encode()
    if netns.libc_function("sethostname")(data, len(data)) != 0:
        err = netns.last_errno()
        raise OSError(err, f"sethostname({name!r}): {os.strerror(err)}")


def enter_container(
    netns_path: str,
    hostname: str,
    files: dict[str, str],
    new_uts_mnt: bool = True,
) -> None:
    """Join the network namespace at `netns_path` (unless ""), get private UTS and mount
    namespaces, set the hostname, bind-mount `files` ({/etc/hosts: our copy, ...}) and
    give /sys the container's view of the network."""
    if netns_path:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        _step(f"setns({netns_path}, CLONE_NEWNET)", netns.setns, fd, netns.CLONE_NEWNET)
        os.close(fd)
    if not new_uts_mnt:
        return
    _step(
        "unshare(CLONE_NEWUTS|CLONE_NEWNS)", netns.unshare, netns.CLONE_NEWUTS | netns.CLONE_NEWNS
    )
    # Our mounts must not leak back to the host's mount namespace.
    _step("mount --make-rprivate /", netns.mount, "", "/", None, netns.MS_REC | netns.MS_PRIVATE)
    if hostname:
        _step(f"sethostname({hostname})", sethostname, hostname)
    for target, source in files.items():
        if os.path.exists(target):
            _step(
                f"mount --bind {source} {target}", netns.mount, source, target, None, netns.MS_BIND
            )
    if netns_path:
        # /sys/class/net shows the namespace of whoever mounted sysfs: remount it, as
        # `ip netns exec` does, so tools inside see the container's interfaces.
        try:
            netns.umount("/sys", netns.MNT_DETACH)
            netns.mount("sysfs", "/sys", "sysfs", 0)
        except OSError:
            pass  # a read-only or absent /sys is not fatal for networking


def pid_namespace_fd(pid: int) -> int:
    path = f"/proc/{pid}/ns/pid"
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SetupError(f"open {path}: {exc.strerror}") from None


def new_pid_namespace_for_next_child() -> int:
    """unshare(CLONE_NEWPID): the next child this process forks is PID 1 of a new PID
    namespace. Returns a descriptor of our own PID namespace, for
    `restore_pid_namespace`, so later children (nft, conntrack) are ordinary again."""
    own = pid_namespace_fd(os.getpid())
    try:
        _step("unshare(CLONE_NEWPID)", netns.unshare, CLONE_NEWPID)
    except BaseException:
        os.close(own)
        raise
    return own


def restore_pid_namespace(own: int) -> None:
    try:
        _step("setns(CLONE_NEWPID)", netns.setns, own, CLONE_NEWPID)
    finally:
        os.close(own)


def mount_proc() -> None:
    """A /proc of the container's own PID namespace (inside its private mount ns)."""
    _step("mount proc /proc", netns.mount, "proc", "/proc", "proc", 0)


def join_namespaces(pid: int) -> None:
    """`netctl exec`: the net, UTS and mount namespaces of a running workload (its PID
    namespace is joined by the parent before it forks, see Runtime.exec)."""
    for kind, flag in (
        ("net", netns.CLONE_NEWNET),
        ("uts", netns.CLONE_NEWUTS),
        ("mnt", netns.CLONE_NEWNS),
    ):
        path = f"/proc/{pid}/ns/{kind}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SetupError(f"open {path}: {exc.strerror}") from None
        _step(f"setns({path})", netns.setns, fd, flag)
        os.close(fd)
    os.chdir("/")


def close_on_exec_above_stderr() -> None:
    """Mark every descriptor but stdin, stdout and stderr close-on-exec: the workload
    must not inherit what netctl holds (netlink sockets of the firewall library, the
    sockets that hold published ports, pipes to the supervisor), as runc closes them."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed by now


def _execvpe(argv: list[str], env: Mapping[str, str]) -> None:
    """os.execvpe's search of PATH (the first error other than "not there" wins), without
    os.get_exec_path, which imports `warnings` in the container's init before every exec."""
    name = argv[0]
    if "/" in name:
        os.execve(name, argv, env)
    first: OSError | None = None
    last: OSError = FileNotFoundError(2, "No such file or directory", name)
    for directory in (env.get("PATH") or os.defpath).split(os.pathsep):
        try:
            os.execve(os.path.join(directory or ".", name), argv, env)
        except (FileNotFoundError, NotADirectoryError) as exc:
            last = exc
        except OSError as exc:
            last = exc
            first = first or exc
    raise first or last


def execvp(argv: list[str], env: dict[str, str] | None = None, report_fd: int = -1) -> None:
    """Replace this process with the workload; on failure exit as a shell would, with
    the reason on stderr and, when given, on `report_fd` (whose close-on-exec end tells
    the supervisor that the exec succeeded)."""
    close_on_exec_above_stderr()
    try:
        _execvpe(argv, os.environ if env is None else env)
    except FileNotFoundError:
        code, why = 127, "executable file not found in $PATH"
    except PermissionError:
        code, why = 126, "permission denied"
    except OSError as exc:
        code, why = 126, exc.strerror or str(exc)
    message = f'exec: "{argv[0]}": {why}'
    sys.stderr.write(f"netctl: {message}\n")
    sys.stderr.flush()
    if report_fd >= 0:
        try:
            os.write(report_fd, f"{code} {message}".encode())
        except OSError:
            pass
    os._exit(code)
