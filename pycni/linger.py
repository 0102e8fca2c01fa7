"""Kernel work that outlasts the answer, handed to a detached child.

Some kernel calls go on waiting after everything a caller can observe is done: deleting a
veth waits for RCU grace periods after both ends are unregistered (netsetup.del_veth), and
closing an nftables netlink socket waits for nf_tables' deferred destruction of what
earlier transactions deleted (an RCU grace period too: 15-30 ms on a small VM, paid at
process exit, when the kernel closes the socket). A runtime waits for a plugin's exit,
and `netctl run --rm` is timed to its exit, so a short-lived process hands such work to a
child in a session of its own: it holds only the files it needs (no stdout a runtime
reads to its end, no lock), the caller does not wait for it (a short-lived caller ends
first and its orphan is reaped by whoever inherits it), and it ends when the kernel is
done.

MODE says where a caller may leave such work: "process" (a plugin's or netctl's process,
the default) or "thread" (a long-lived process such as the agent, whose forked worker
answers and then exits: it can wait in a thread of its own, and nothing is handed off).
"""

from __future__ import annotations

import os

MODE = "process"
NETLINK_NETFILTER = 12
_registered: list[bool] = []
_detached: list[int] = []  # children of detach() not reaped yet
# a forked child's children are not these (it must never wait for its parent's)
os.register_at_fork(after_in_child=_detached.clear)


def detach(keep: list[int]) -> bool:
    """Fork a child in a session of its own, with /dev/null as stdin, stdout and stderr
    and no other file than `keep` (fds of 3 and above, else OSError before any fork).
    True in the child, which must end with os._exit; False in the caller, at once.
    OSError when no child could be made.

    The caller does not wait for it. It is the caller's child: a short-lived caller (a
    plugin, netctl) ends first and whoever inherits orphans reaps it; a caller that
    lives on reaps it at its next detach, or with reap(). One fork, not two: waiting
    for an intermediate child's own fork of the whole process cost ~2 ms of every veth
    deletion and ~1 ms of netctl's exit."""
    if any(fd < 3 for fd in keep):
        raise OSError(9, "a file to keep is on fd 0-2, which the child's stdio takes")
    reap()
    pid = os.fork()
    if pid:
        _detached.append(pid)
        return False
    try:  # pragma: no cover - runs in forked children (tests/integration/test_netlink.py)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        low = 3
        for fd in sorted(set(keep)):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 1 << 16)
        os.setsid()  # last: leading a session of its own, it holds nothing else
        return True
    except BaseException:
        os._exit(1)


def reap() -> None:
    """Collect the detached children that have ended (no wait)."""
    for pid in list(_detached):
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid  # reaped elsewhere, or SIGCHLD ignored: the kernel reaped it
        if done:
            _detached.remove(pid)


def netfilter_sockets_at_exit() -> None:
    """Once per process, in "process" mode: at exit, this process's nftables netlink
    sockets (libnftables keeps one per context) are last closed by a child that
    waits for this process to end, so the exit itself does not wait for nf_tables'
    deferred destruction."""
    if _registered or MODE != "process":
        return
    _registered.append(True)
    import atexit

    atexit.register(before_exit)


def before_exit() -> None:
    """What must happen before this process ends. Called by atexit, and by the
    entry points that leave with os._exit (pycni.entry, netctl's hot commands): they
    call it only when this module has been imported (sys.modules), at no cost
    otherwise. Runs once."""
    if _registered and _registered[0]:
        _registered[0] = False
        try:
            _hand_off_netfilter_sockets()
        except Exception:
            pass  # out of files or processes: the exit waits, as before; the answer stands


def _hand_off_netfilter_sockets() -> None:
    keep = _netfilter_sockets()
    if not keep:
        return
    gone_r, gone_w = os.pipe2(os.O_CLOEXEC)  # gone_w: open until this process ends
    try:
        in_child = detach([*keep, gone_r])
    except OSError:
        os.close(gone_r)
        os.close(gone_w)
        return  # no child: the exit waits, as before
    if in_child:  # pragma: no cover - measured from outside
        try:
            os.read(gone_r, 1)  # EOF: the caller's files are closed, ours are the last
        finally:
            os._exit(0)
    os.close(gone_r)


def _netfilter_sockets() -> list[int]:
    found = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    for name in names:
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
        except OSError:
            continue
        if netlink_protocol(fd) == NETLINK_NETFILTER:
            found.append(fd)
    return found


def netlink_protocol(fd: int) -> int | None:
    """The netlink protocol of the socket on `fd`; None for any other file."""
    import _socket

    try:
        sock = _socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        return sock.proto if sock.family == _socket.AF_NETLINK else None
    finally:
        sock.detach()
