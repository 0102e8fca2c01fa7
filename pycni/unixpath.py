"""Unix socket paths longer than sun_path (108 bytes): bind and connect through
/proc/self/fd/N/NAME, N a descriptor of the socket's directory, a path the kernel
resolves as the long one (the socket file lands in that directory, with the same
permissions as a direct bind). A NETCTL_ROOT, a pytest tmp_path or a
PYCNI_AGENT_SOCKET deep in a directory tree would otherwise make the resolver or the
agent fail to start ("AF_UNIX path too long"). Stdlib only: the plugin's agent client
uses it.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUN_PATH_MAX = 107  # sizeof(sun_path) - 1: a path name needs its terminating NUL


def bind(sock: Any, path: str, umask: int | None = None) -> None:
    """Bind `sock` to `path`; with `umask`, under that umask, so the socket file is
    born with its final permissions (no moment where others could connect)."""
    if umask is None:
        _through_dir(sock.bind, path)
        return
    old = os.umask(umask)
    try:
        _through_dir(sock.bind, path)
    finally:
        os.umask(old)


def connect(sock: Any, path: str) -> None:
    _through_dir(sock.connect, path)


def _through_dir(call: Any, path: str) -> None:
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        call(path)
        return
    directory, name = os.path.split(path)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        short = f"/proc/self/fd/{fd}/{name}"
        if len(os.fsencode(short)) > SUN_PATH_MAX:
            call(path)  # a name that alone is too long: the kernel's own error
        else:
            call(short)
    finally:
        os.close(fd)
