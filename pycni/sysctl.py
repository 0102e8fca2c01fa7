"""sysctls under /proc/sys, in the network namespace of the calling thread.

Keys are written with slashes (net/ipv6/conf/eth0.1/accept_ra): interface names may
contain dots, so the dotted form is ambiguous.
"""

from __future__ import annotations

import os


def path(key: str) -> str:
    return "/proc/sys/" + key


def read(key: str) -> str:
    with open(path(key), encoding="ascii") as fh:
        return fh.read().strip()


def write(key: str, value: str) -> None:
    """Write `value`, skipping the write when it is already set (cheap, and leaves
    no trace in audit logs)."""
    _set(os.open(path(key), os.O_RDWR | os.O_CLOEXEC), value)


def _set(fd: int, value: str) -> None:
    """Write `value` to the open sysctl `fd` unless it holds it already; closes fd."""
    try:
        if os.read(fd, 64).strip() == value.encode():
            return
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def write_in(directory: str, values: dict[str, str], new_netns: bool = False) -> None:
    """Best effort, several keys of one directory (net/ipv6/conf/eth0) with one path
    walk: each component of a per-namespace sysctl path is looked up among the entries
    of every namespace, so a walk costs more the more namespaces the node has; the
    files are opened relative to the directory. A missing directory or key is
    skipped, as with try_write. `new_netns`: the thread is in a namespace made moments
    ago (a container's); see _own_sys."""
    try:
        dfd = _open_dir(directory, new_netns)
    except OSError:
        return
    try:
        for name, value in values.items():
            try:
                _set(os.open(name, os.O_RDWR | os.O_CLOEXEC, dir_fd=dfd), value)
            except OSError:
                continue
    finally:
        os.close(dfd)


def try_write(key: str, value: str, new_netns: bool = False) -> bool:
    """Best effort (the key may not exist: IPv6 disabled, old kernel)."""
    try:
        if new_netns:
            directory, _, name = key.rpartition("/")
            dfd = _open_dir(directory, True)
            try:
                _set(os.open(name, os.O_RDWR | os.O_CLOEXEC, dir_fd=dfd), value)
            finally:
                os.close(dfd)
        else:
            write(key, value)
    except OSError:
        return False
    return True


# -- a procfs of our own, for the sysctls of a namespace made moments ago -----------------
#
# The kernel caches a dentry per namespace for a name like /proc/sys/net/ipv6, all in one
# hash chain of the node's /proc, and keeps those of namespaces long gone: the first
# lookup in a new namespace compares its way through all of them (1-3 ms of kernel time,
# tens under load, on a node that has run many containers; the second is microseconds).
# A procfs instance of our own (fsopen + fsmount: detached, in no mount table, the
# sysctls it shows are still those of the calling thread's namespace) has no such
# history. One per process, closed when the process ends; where the kernel (before 5.2)
# or a security policy refuses it, /proc/sys as before.

SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 430, 431, 432  # the same on every architecture
FSOPEN_CLOEXEC, FSCONFIG_CMD_CREATE, FSMOUNT_CLOEXEC = 1, 6, 1
_own: list[int] = []  # [fd of its sys/ directory], or [-1] once refused


def _own_sys() -> int:
    """The fd of sys/ in this process's own procfs, or -1."""
    if not _own:
        try:
            _own.append(_mount_own_sys())
        except OSError:
            _own.append(-1)
    return _own[0]


def _mount_own_sys() -> int:
    from pycni import ffi

    lib = ffi.Library(None)
    fsopen = lib.function("syscall", ffi.c_int, (ffi.c_int, ffi.c_char_p, ffi.c_uint))
    fsconfig = lib.function(
        "syscall",
        ffi.c_int,
        (ffi.c_int, ffi.c_int, ffi.c_uint, ffi.c_void_p, ffi.c_void_p, ffi.c_int),
    )
    fsmount = lib.function("syscall", ffi.c_int, (ffi.c_int, ffi.c_int, ffi.c_uint, ffi.c_uint))
    fs = fsopen(SYS_FSOPEN, b"proc", FSOPEN_CLOEXEC)
    if fs < 0:
        raise OSError(ffi.get_errno(), "fsopen proc")
    try:
        if fsconfig(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            raise OSError(ffi.get_errno(), "fsconfig proc")
        mnt = fsmount(SYS_FSMOUNT, fs, FSMOUNT_CLOEXEC, 0)
        if mnt < 0:
            raise OSError(ffi.get_errno(), "fsmount proc")
    finally:
        os.close(fs)
    try:
        return os.open("sys", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=mnt)
    finally:
        os.close(mnt)  # the directory's fd keeps the instance


def _open_dir(directory: str, new_netns: bool) -> int:
    root = _own_sys() if new_netns else -1
    if root >= 0:
        try:
            return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root)
        except FileNotFoundError:
            raise
        except OSError:
            pass  # refused there (a security module): /proc/sys
    return os.open(path(directory), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
