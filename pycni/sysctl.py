"""sysctls under /proc/sys, in the network namespace of the calling thread.

Keys are written with slashes (net/ipv6/conf/eth0.1/accept_ra): interface names may
contain dots, so the dotted form is ambiguous. Every key is reached through a procfs
instance of the process's own (see _own_sys), /proc/sys where that is refused.
"""

from __future__ import annotations

import os


def path(key: str) -> str:
    """The key's path in the node's /proc (for messages)."""
    return "/proc/sys/" + key


def open_key(key: str, flags: int) -> int:
    """An fd of `key` opened with `flags` (O_CLOEXEC added)."""
    root = _own_sys()
    if root >= 0:
        try:
            return os.open(key, flags | os.O_CLOEXEC, dir_fd=root)
        except FileNotFoundError:
            raise
        except OSError:
            pass  # refused there (a security module): /proc/sys
    return os.open(path(key), flags | os.O_CLOEXEC)


def read(key: str) -> str:
    fd = open_key(key, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 4096):  # some keys are longer (ip_local_reserved_ports)
            chunks.append(chunk)
        return b"".join(chunks).decode("ascii").strip()
    finally:
        os.close(fd)


def write(key: str, value: str) -> None:
    """Write `value`, skipping the write when it is already set (cheap, and leaves
    no trace in audit logs)."""
    _set(open_key(key, os.O_RDWR), value)


def _set(fd: int, value: str) -> None:
    """Write `value` to the open sysctl `fd` unless it holds it already; closes fd."""
    try:
        if os.read(fd, 64).strip() == value.encode():
            return
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def write_in(directory: str, values: dict[str, str]) -> None:
    """Best effort, several keys of one directory (net/ipv6/conf/eth0) with one path
    walk, the files opened relative to the directory. A missing directory or key is
    skipped, as with try_write."""
    try:
        dfd = open_key(directory, os.O_RDONLY | os.O_DIRECTORY)
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


def try_write(key: str, value: str) -> bool:
    """Best effort (the key may not exist: IPv6 disabled, old kernel)."""
    try:
        write(key, value)
    except OSError:
        return False
    return True


# -- a procfs of our own -----------------------------------------------------------------
#
# The kernel keeps a dentry per live namespace for a name like /proc/sys/net, all in one
# hash chain of the node's /proc, and a lookup there compares its way through them:
# measured here (bench/sysctl_walk.py), a key's open in the node's
# own namespace costs 5 us with no other namespace, 125-140 us with 1,000 alive and 325 us
# with 2,000; the first one in a new namespace 35 / 310-490 / 710-760 us (tens of ms under
# load). Namespaces gone are no longer in the chain. A procfs instance of our own
# (fsopen + fsmount: detached, in no mount table, nosuid/nodev/noexec; the net sysctls
# it shows are still those of the calling thread's namespace) has only the entries this
# process made: 4 us and 35 us whatever the node runs. One per process, made on first
# use and closed when the process ends; where the kernel (before 5.2) or a security
# policy refuses it, /proc/sys as before.

SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 430, 431, 432  # the same on every architecture
FSOPEN_CLOEXEC, FSCONFIG_CMD_CREATE, FSMOUNT_CLOEXEC = 1, 6, 1
MOUNT_ATTR_NOSUID_NODEV_NOEXEC = 0x2 | 0x4 | 0x8
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
        mnt = fsmount(SYS_FSMOUNT, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID_NODEV_NOEXEC)
        if mnt < 0:
            raise OSError(ffi.get_errno(), "fsmount proc")
    finally:
        os.close(fs)
    try:
        return os.open("sys", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=mnt)
    finally:
        os.close(mnt)  # the directory's fd keeps the instance
