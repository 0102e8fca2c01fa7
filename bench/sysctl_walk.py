"""What a /proc/sys lookup costs as a node runs more network namespaces: the node's
/proc against the procfs instance of our own that pycni.sysctl uses.

Namespaces are made by forked children (unshare, touch a net sysctl so the kernel has
made its entries, exit) and kept alive by an fd each in this process; they all go when
it exits. Each step adds namespaces, then times (median) opening a net sysctl:

    host      from the node's own namespace (a bridge's accept_ra, ip_forward)
    first     the first open in a namespace made moments ago (a container's)

A second run with the namespaces released shows that namespaces gone no longer cost.

    .venv/bin/python bench/sysctl_walk.py [--steps 300,700,1000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(__file__))
from common import ensure_root, median, table

from pycni import netns, sysctl

KEY = "net/ipv6/conf/lo/accept_ra"


def open_proc() -> None:
    os.close(os.open(sysctl.path(KEY), os.O_RDONLY))


def open_own() -> None:
    os.close(sysctl.open_key(KEY, os.O_RDONLY))


def make_namespaces(n: int, keep: list[int]) -> None:
    for _ in range(n):
        ready_r, ready_w = os.pipe()
        hold_r, hold_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            netns.unshare(netns.CLONE_NEWNET)
            open_proc()
            os.write(ready_w, b"x")
            os.close(hold_w)
            os.read(hold_r, 1)  # until the parent holds the namespace
            os._exit(0)
        os.read(ready_r, 1)
        keep.append(os.open(f"/proc/{pid}/ns/net", os.O_RDONLY))
        for fd in (ready_r, ready_w, hold_r, hold_w):
            os.close(fd)
        os.waitpid(pid, 0)


def host_us(fn: Callable[[], None], k: int = 101) -> float:
    out = []
    for _ in range(k):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return median(out)


def first_us(fn: Callable[[], None], k: int = 21) -> float:
    out = []
    for _ in range(k):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            netns.unshare(netns.CLONE_NEWNET)
            t = time.perf_counter()
            fn()
            os.write(w, b"%f" % ((time.perf_counter() - t) * 1e6))
            os._exit(0)
        os.close(w)
        out.append(float(os.read(r, 64)))
        os.close(r)
        os.waitpid(pid, 0)
    return median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="300,700,1000", help="namespaces added per step")
    args = ap.parse_args()
    ensure_root()
    steps = [int(s) for s in args.steps.split(",")]
    resource.setrlimit(resource.RLIMIT_NOFILE, (sum(steps) + 1024,) * 2)
    if sysctl._own_sys() < 0:
        sys.exit("this kernel refuses a procfs of our own (fsopen): nothing to compare")
    rows = [["namespaces", "host /proc", "host own", "first /proc", "first own"]]
    keep: list[int] = []

    def row(label: str) -> None:
        rows.append(
            [label]
            + [f"{host_us(f):.1f} us" for f in (open_proc, open_own)]
            + [f"{first_us(f):.1f} us" for f in (open_proc, open_own)]
        )

    row("0 alive")
    for n in steps:
        make_namespaces(n, keep)
        row(f"{len(keep)} alive")
    for fd in keep:
        os.close(fd)
    time.sleep(3)  # the kernel frees namespaces in a worker
    row(f"{len(keep)} gone")
    print(f"open({KEY}), median\n")
    print(table(rows))


if __name__ == "__main__":
    main()
