"""Run tags: what lets the next pytest run reap what a killed one left behind.

A run is one pytest process (an xdist worker is a run of its own). Its tag is

    pkt<pid base36>_<process start time base36>      e.g. pkt1kz_5h3b

and every global name the kit makes starts with `<tag>-`: namespace names under
/run/netns and directories that hold mounts (a node's netctl root). Every process the
kit starts carries `PYCNI_TESTING_RUN=<tag>` in its environment. A tag is alive while
a process with that pid and that start time exists; pids are reused, start times make
the pair unique. So a later run can tell, without any shared state file, which
leftovers belong to a dead run, and it touches nothing whose owner still lives.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass, field

PREFIX = "pkt"
ENV = "PYCNI_TESTING_RUN"
NETNS_DIR = "/run/netns"
_TAG = re.compile(r"^pkt([0-9a-z]+)_([0-9a-z]+)(?:-|$)")


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def tag_of(pid: int) -> str:
    start = start_time(pid)
    assert start is not None, f"process {pid} has no /proc entry"
    return f"{PREFIX}{_b36(pid)}_{_b36(start)}"


def current_tag() -> str:
    return tag_of(os.getpid())


def parse(name: str) -> tuple[str, int, int] | None:
    """(tag, pid, start) when `name` starts with a run tag, else None."""
    m = _TAG.match(name)
    if not m:
        return None
    return f"{PREFIX}{m.group(1)}_{m.group(2)}", int(m.group(1), 36), int(m.group(2), 36)


def alive(tag: str) -> bool:
    parsed = parse(tag)
    if parsed is None:
        return True  # not ours: never reap
    _, pid, start = parsed
    return start_time(pid) == start


@dataclass
class Reaped:
    """What `reap_dead_runs` removed (for the log and the tests)."""

    processes: list[int] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.mounts or self.namespaces)


def _proc_run_tag(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read()
    except OSError:
        return None
    key = f"{ENV}=".encode()
    for item in env.split(b"\0"):
        if item.startswith(key):
            return item[len(key) :].decode(errors="replace")
    return None


def _netns_inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return None


def _dead_tag(name: str, dead_cache: dict[str, bool]) -> bool:
    parsed = parse(name)
    if parsed is None:
        return False
    tag = parsed[0]
    if tag not in dead_cache:
        dead_cache[tag] = not alive(tag)
    return dead_cache[tag]


def reap_dead_runs(netns_dir: str = NETNS_DIR) -> Reaped:
    """Remove what runs that no longer exist left behind: their processes (found by
    the run tag in their environment, or by living in a dead run's namespace), the
    mounts under their directories, their namespaces. Objects of live runs, and
    anything without a tag, are never touched."""
    reaped = Reaped()
    dead: dict[str, bool] = {}
    try:
        ns_names = sorted(n for n in os.listdir(netns_dir) if _dead_tag(n, dead))
    except OSError:
        ns_names = []
    dead_inodes = {
        ino for n in ns_names if (ino := _netns_inode(os.path.join(netns_dir, n))) is not None
    }
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        tag = _proc_run_tag(pid)
        hit = tag is not None and _dead_tag(tag, dead)
        if not hit and dead_inodes:
            hit = _netns_inode(f"/proc/{pid}/ns/net") in dead_inodes
        if hit:
            try:
                os.kill(pid, signal.SIGKILL)
                reaped.processes.append(pid)
            except OSError:
                pass
    mounts = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                point = line.split()[4].replace("\\040", " ")
                if any(_dead_tag(part, dead) for part in point.split("/")):
                    mounts.append(point)
    except OSError:
        pass
    for point in sorted(set(mounts), key=len, reverse=True):  # deepest first
        if subprocess.run(["umount", "-l", point], capture_output=True).returncode == 0:
            reaped.mounts.append(point)
    for name in ns_names:
        if subprocess.run(["ip", "netns", "del", name], capture_output=True).returncode == 0:
            reaped.namespaces.append(name)
    return reaped
