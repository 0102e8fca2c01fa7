"""The one way pycni writes a whole file: readers see the old file or the new one,
never half of either, and a failed write leaves nothing behind.

The data goes to a temporary file beside the target (same directory, so the rename is
atomic), created with its final mode (0600 for state, 0644 for what others read, 0755
for executables), optionally fsync'd, then renamed over the target. Stdlib only and
import-free beyond `os`: plugins call it on their start-up path.
"""

from __future__ import annotations

import os


def write_atomic(
    path: str,
    data: bytes | str,
    mode: int = 0o600,
    fsync: bool = False,
    dir_mode: int | None = None,
) -> None:
    """Replace `path` with `data`. `dir_mode`: create missing parent directories with
    that mode first. `fsync`: the data is on disk before the rename (for state that
    must survive a power cut; the rename itself is then as durable as the directory)."""
    if dir_mode is not None:
        os.makedirs(os.path.dirname(path) or ".", mode=dir_mode, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it; mode is the contract
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
