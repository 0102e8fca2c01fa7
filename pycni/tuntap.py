"""Persistent tap devices through /dev/net/tun (the kernel has no rtnetlink "create" for
tun/tap: `ip tuntap add` and the reference `tap` plugin use these ioctls too).

A tun/tap device is created in the network namespace of the process that *opened*
/dev/net/tun (the open file remembers it), so `create` opens the device node inside the
target namespace and does the ioctls from there: TUNSETIFF makes the device, TUNSETOWNER
and TUNSETGROUP say who may attach to it later (a qemu or a DPDK process), TUNSETPERSIST
keeps it after our file is closed. Everything else (MTU, MAC, master, up) is rtnetlink.
"""

from __future__ import annotations

import os
import struct

from pycni import errors, netns

TUN_DEVICE = "/dev/net/tun"
# _IOW('T', 202..206, int)
TUNSETIFF, TUNSETPERSIST, TUNSETOWNER, TUNSETGROUP = 0x400454CA, 0x400454CB, 0x400454CC, 0x400454CE
IFF_TAP, IFF_MULTI_QUEUE, IFF_NO_PI = 0x0002, 0x0100, 0x1000
_IFREQ = struct.Struct("=16sH22x")  # struct ifreq: the name, then ifr_flags (40 bytes)


def create_tap(
    netns_fd: int,
    name: str,
    multi_queue: bool = False,
    owner: int | None = None,
    group: int | None = None,
) -> None:
    """A persistent tap `name` inside `netns_fd` (no packet-information header, as
    `ip tuntap add mode tap`); owner/group None: anyone with CAP_NET_ADMIN may attach."""
    import fcntl

    try:
        with netns.entered(netns_fd):
            fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise errors.InvalidConfig(
            f"cannot create tap {name}: {TUN_DEVICE} does not exist",
            "load the tun kernel module (modprobe tun) and create the device node",
        ) from None
    except OSError as exc:
        raise errors.CniError(
            f"failed to open {TUN_DEVICE}: {exc.strerror}", f"creating tap {name}"
        ) from None
    flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
        # Until TUNSETPERSIST the device dies with our file: a failure below leaves nothing.
        if owner is not None:
            fcntl.ioctl(fd, TUNSETOWNER, owner)
        if group is not None:
            fcntl.ioctl(fd, TUNSETGROUP, group)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as exc:
        raise errors.CniError(f"failed to create tap {name}: {exc.strerror}") from None
    finally:
        os.close(fd)


def create_tap_labelled(
    netns_fd: int,
    name: str,
    context: str,
    multi_queue: bool = False,
    owner: int | None = None,
    group: int | None = None,
) -> None:
    """`create_tap` on an SELinux host, by `ip tuntap add` exec'd under the SELinux
    context `context`, so the device's tun socket carries that label (as the reference
    does: setexeccon, then ip). The exec label and the namespace are per thread, and
    the forked child inherits both from this thread."""
    import subprocess

    argv = ["ip", "tuntap", "add", "mode", "tap", "name", name]
    if multi_queue:
        argv.append("multi_queue")
    if owner is not None:
        argv += ["user", str(owner)]
    if group is not None:
        argv += ["group", str(group)]
    attr = "/proc/thread-self/attr/exec"
    with netns.entered(netns_fd):
        try:
            with open(attr, "w", encoding="ascii") as fh:
                fh.write(context)
        except OSError as exc:
            raise errors.InvalidConfig(
                f"failed to set the SELinux exec context {context!r}: {exc.strerror}",
                "check 'selinuxcontext'",
            ) from None
        try:
            proc = subprocess.run(argv, capture_output=True, check=False)
        finally:
            with open(attr, "w", encoding="ascii") as fh:
                fh.write("")  # back to the default for what this thread execs next
    if proc.returncode != 0:
        raise errors.CniError(
            f"failed to create tap {name}: ip tuntap exited with {proc.returncode}",
            proc.stderr.decode(errors="replace").strip(),
        )


def selinux_enabled() -> bool:
    """SELinux is on when selinuxfs is mounted (the test libselinux makes)."""
    return os.path.exists("/sys/fs/selinux/enforce")
