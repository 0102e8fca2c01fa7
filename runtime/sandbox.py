"""The child side of `netctl run` and `netctl exec`: enter namespaces, then exec.

Stdlib only and small, like mkosi's sandbox: a list of steps, then execvp. Runs in the
forked child, so any failure is reported on stderr and turned into docker's exit codes
(125 setup failed, 126 not executable, 127 not found).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from pycni import netns


class SetupError(Exception):
    """A namespace or mount step failed; the message names the syscall and the path."""


def _step(what: str, fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except OSError as exc:
        raise SetupError(f"{what}: {exc.strerror or exc}") from None


def sethostname(name: str) -> None:
    data = name.encode()
    if netns.libc().sethostname(data, len(data)) != 0:
        import ctypes

        err = ctypes.get_errno()
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


def join_namespaces(pid: int) -> None:
    """`netctl exec`: the net, UTS and mount namespaces of a running workload."""
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


def execvp(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Replace this process with the workload; on failure exit as a shell would."""
    close_on_exec_above_stderr()
    try:
        if env is None:
            os.execvp(argv[0], argv)
        else:
            os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        sys.stderr.write(f"netctl: exec: {argv[0]!r}: executable file not found in $PATH\n")
        os._exit(127)
    except PermissionError:
        sys.stderr.write(f"netctl: exec: {argv[0]!r}: permission denied\n")
        os._exit(126)
    except OSError as exc:
        sys.stderr.write(f"netctl: exec: {argv[0]!r}: {exc.strerror}\n")
        os._exit(126)
