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


def write_in(directory: str, values: dict[str, str]) -> None:
    """Best effort, several keys of one directory (net/ipv6/conf/eth0) with one path
    walk: each component of a per-namespace sysctl path is looked up among the entries
    of every namespace, so a walk costs more the more namespaces the node has; the
    files are opened relative to the directory. A missing directory or key is
    skipped, as with try_write."""
    try:
        dfd = os.open(path(directory), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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
