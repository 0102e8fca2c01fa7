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
    p = path(key)
    fd = os.open(p, os.O_RDWR | os.O_CLOEXEC)
    try:
        if os.read(fd, 64).strip() == value.encode():
            return
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def try_write(key: str, value: str) -> bool:
    """Best effort (the key may not exist: IPv6 disabled, old kernel)."""
    try:
        write(key, value)
    except OSError:
        return False
    return True
