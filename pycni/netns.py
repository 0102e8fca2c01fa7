"""Network namespaces: enter one for a moment, create and remove bind-mounted ones.

Python 3.12 has os.setns/os.unshare; on 3.11 the syscalls come from libc through
pycni.ffi (`_ctypes` without the ~3 ms `ctypes` package), loaded only when a namespace
is actually switched. A namespace switch affects
only the calling thread, which is all a plugin needs: it enters, opens a netlink
socket or a /proc/sys file (both stay bound to the namespace they were opened in),
and comes straight back.
"""

from __future__ import annotations

import os

from pycni import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 2

_calls: dict[str, Any] = {}


def libc_function(name: str) -> Any:
    """libc's `name` through pycni.ffi, for the runtime's other calls (sethostname,
    prctl, capset, ...): int and bytes arguments (a bytes object is passed as a
    pointer to its data), an int result, errno kept for `last_errno()`; as a ctypes
    function without argtypes converts them, without importing ctypes (~4 ms of a
    container's start)."""
    fn = _calls.get(name)
    if fn is None:
        from pycni import ffi

        if "lib" not in _calls:
            _calls["lib"] = ffi.Library(None)
        fn = _calls[name] = _calls["lib"].function(name)
    return fn


def last_errno() -> int:
    """errno as the last libc_function call left it."""
    from pycni import ffi

    return ffi.get_errno()


def _check(ret: int, what: str, path: str = "") -> None:
    if ret != 0:
        from pycni import ffi

        err = ffi.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path or None)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    native = getattr(os, "setns", None)  # Python 3.12+
    if native is not None:
        try:
            native(fd, nstype)
        except OSError as exc:
            raise OSError(exc.errno, f"setns: {exc.strerror}") from None
        return
    _check(libc_function("setns")(fd, nstype), "setns")


def unshare(flags: int) -> None:
    native = getattr(os, "unshare", None)  # Python 3.12+
    if native is not None:
        try:
            native(flags)
        except OSError as exc:
            raise OSError(exc.errno, f"unshare: {exc.strerror}") from None
        return
    _check(libc_function("unshare")(flags), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    _check(
        libc_function("mount")(
            source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None
        ),
        f"mount {source} on {target}",
        target,
    )


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(libc_function("umount2")(target.encode(), flags), f"umount {target}", target)


NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3): which kind of namespace an nsfs fd is


def is_netns_fd(fd: int) -> bool:
    """True when `fd` is a network namespace (not a directory, file or other ns type)."""
    import fcntl

    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


def open_netns(path: str) -> int:
    """Open CNI_NETNS; UnknownContainer when it is missing, InvalidEnvironment when it
    is not a network namespace (a directory, a regular file, another ns type)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise errors.UnknownContainer(f"network namespace {path} does not exist") from None
    except OSError as exc:
        raise errors.InvalidEnvironment(
            f"cannot open network namespace {path}", exc.strerror or ""
        ) from None
    if not is_netns_fd(fd):
        os.close(fd)
        raise errors.InvalidEnvironment(
            f"{path} is not a network namespace",
            "CNI_NETNS must be a path such as /var/run/netns/NAME or /proc/PID/ns/net",
        )
    return fd


class entered:
    """`with entered(fd):` runs the block inside that network namespace (this thread)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.home = -1

    def __enter__(self) -> None:
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(self.fd)
        except BaseException:
            os.close(self.home)
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            setns(self.home)
        finally:
            os.close(self.home)


def same_netns(fd: int) -> bool:
    """True when `fd` is the namespace this thread is already in."""
    return os.fstat(fd).st_ino == os.stat("/proc/thread-self/ns/net").st_ino


def create(path: str) -> None:
    """Create a new network namespace bind-mounted at `path` (as `ip netns add`)."""
    # No shared-mountpoint dance as `ip netns add` does for /run/netns: the workloads
    # we start make their own mount namespace private, so nothing pins our mounts,
    # and a plain directory leaves no mount behind when a sandbox is removed.
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        unshare(CLONE_NEWNET)
        try:
            mount(
                f"/proc/self/task/{os.gettid()}/ns/net"
                if hasattr(os, "gettid")
                else "/proc/thread-self/ns/net",
                path,
                "none",
                MS_BIND,
            )
        finally:
            setns(home)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    finally:
        os.close(home)


def remove(path: str) -> bool:
    """Unmount and delete a bind-mounted namespace; False if it was not there."""
    if not os.path.exists(path):
        return False
    try:
        umount(path, MNT_DETACH)
    except OSError:
        pass  # not a mount point any more (already unmounted)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def iter_entered(fd: int) -> Iterator[None]:
    with entered(fd):
        yield
