"""Run one helper program (nft, iptables-restore, conntrack) without `subprocess`.

`subprocess` costs more to import than a plugin's whole start budget allows, so the
firewall backends start helpers with `os.posix_spawn` and talk to them through pipes,
multiplexed with `select` so that neither side can block on a full pipe. The child
inherits the calling *thread's* network namespace (posix_spawn clones the calling
task), which is what a plugin that entered a namespace expects.
"""

from __future__ import annotations

import os
import select

from pycni import errors

# Where the helpers live on Debian/Fedora/Alpine, in case the runtime gave the plugin
# a PATH without the sbin directories (CNI runtimes often pass a minimal PATH).
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin")


def which(name: str) -> str | None:
    """The absolute path of `name` from PATH, then the usual sbin directories."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += [d for d in SBIN_DIRS if d not in dirs]
    for d in dirs:
        path = os.path.join(d, name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


class Completed:
    __slots__ = ("argv", "rc", "stderr", "stdout")

    def __init__(self, argv: list[str], rc: int, stdout: bytes, stderr: bytes) -> None:
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    def describe(self) -> str:
        err = self.stderr.decode("utf-8", "replace").strip()
        how = f"exit status {self.rc}" if self.rc >= 0 else f"killed by signal {-self.rc}"
        return f"{' '.join(self.argv)}: {how}" + (f": {err}" if err else "")


def run(argv: list[str], input: bytes = b"", timeout: float = 120.0) -> Completed:
    """Start argv[0] (an absolute path), feed `input`, collect stdout/stderr, wait.

    OSError from starting the program is translated into a CNI error naming it."""
    import time

    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, in_r, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    except OSError as exc:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        raise errors.PluginNotAvailable(f"cannot run {argv[0]}", exc.strerror or str(exc)) from None
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    readers = [out_r, err_r]
    writers = [in_w] if input else []
    if not input:
        os.close(in_w)
    view = memoryview(input)
    deadline = time.monotonic() + timeout
    try:
        while readers or writers:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, 9)
                raise errors.TryAgainLater(f"{argv[0]} did not finish within {timeout:.0f}s")
            rlist, wlist, _ = select.select(readers, writers, [], left)
            for fd in wlist:
                try:
                    n = os.write(fd, view[:65536])
                except BrokenPipeError:
                    n = len(view)
                view = view[n:]
                if not view:
                    os.close(fd)
                    writers.remove(fd)
            for fd in rlist:
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    os.close(fd)
                    readers.remove(fd)
    finally:
        for fd in readers + writers:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
    return Completed(
        argv, os.waitstatus_to_exitcode(status), b"".join(chunks[out_r]), b"".join(chunks[err_r])
    )
