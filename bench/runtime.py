"""`netctl` against podman, command by command, interleaved in one run.

Everything runs inside a throwaway node namespace (nsenter --net), so neither tool
touches the real host's links or firewall; each keeps its state in a private tmp dir
(netctl: NETCTL_ROOT; podman: --root, --runroot, --network-config-dir, a busybox-static
rootfs). Podman 4.3 with netavark, as these machines need it: --runtime runc and the
nofile/nproc ulimits. netctl is the `.venv/bin/netctl` the README runs.

    unshare -n true                       a bare new network namespace (the floor)
    run --rm --network none -- true       netns + loopback (podman: + runc container)
    run --rm -p 18080:80 -- true          + bridge, IPAM, port mapping
    ps / port NAME / network ls           with one running container publishing a port

Rounds interleave every case (A B A B ...), so a drift of the machine's speed hits
both tools alike; the table shows medians and p90 and the ratio netctl / podman of
the medians, with the goal each ratio is held to.

    .venv/bin/python bench/runtime.py [-n 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(__file__))
from common import ensure_root, median, pct, table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETCTL = os.path.join(REPO, ".venv", "bin", "netctl")
APPLETS = ("sh", "true", "sleep", "cat", "ls", "ip")
# netctl / podman ratio each case must stay under (issue 17's goals).
GOALS = {
    "run --network none": 0.3,
    "run -p": 0.25,
    "ps": 0.5,
    "port": 0.5,
    "network ls": 0.5,
}


def busybox_rootfs(directory: str) -> str:
    os.makedirs(os.path.join(directory, "bin"))
    for sub in ("proc", "sys", "dev", "etc", "tmp"):
        os.makedirs(os.path.join(directory, sub))
    shutil.copy2("/bin/busybox", os.path.join(directory, "bin", "busybox"))
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(directory, "bin", applet))
    return directory


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="rounds (every case once per round)")
    opts = ap.parse_args()
    ensure_root()
    if not os.access(NETCTL, os.X_OK):
        raise SystemExit(f"{NETCTL} missing: run ./scripts/setup.sh first")
    node = f"pycni-bench-node-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="pycni-bench-run-")
    root = os.path.join(tmp, "netctl")
    rootfs = busybox_rootfs(os.path.join(tmp, "rootfs"))
    subprocess.run(["ip", "netns", "add", node], check=True)
    subprocess.run(["ip", "-n", node, "link", "set", "lo", "up"], check=True)
    enter = ["nsenter", f"--net=/var/run/netns/{node}"]
    env = dict(os.environ, NETCTL_ROOT=root, NETCTL_DAEMON_CONFIG=os.path.join(root, "daemon.json"))
    netctl = [*enter, NETCTL]
    podman = [
        *enter,
        "podman",
        "--root",
        os.path.join(tmp, "podman-root"),
        "--runroot",
        os.path.join(tmp, "podman-run"),
        "--network-config-dir",
        os.path.join(tmp, "podman-net"),
        "--runtime",
        "runc",
        "--events-backend",
        "none",
    ]
    podman_run = [
        "run",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--rootfs",  # a flag: the "image" argument after the options is then a directory
    ]

    def run(cmd: list[str]) -> None:
        proc = subprocess.run(cmd, env=env, capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} failed: {proc.stderr.decode()}")

    ports = iter(range(30000, 40000))
    cases: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "run --network none": (
            lambda: run([*netctl, "run", "--rm", "--network", "none", "--", "true"]),
            lambda: run([*podman, *podman_run, "--rm", "--network", "none", rootfs, "true"]),
        ),
        "run -p": (
            lambda: run([*netctl, "run", "--rm", "-p", f"{next(ports)}:80", "--", "true"]),
            lambda: run([*podman, *podman_run, "--rm", "-p", f"{next(ports)}:80", rootfs, "true"]),
        ),
        "ps": (lambda: run([*netctl, "ps"]), lambda: run([*podman, "ps"])),
        "port": (
            lambda: run([*netctl, "port", "bench-web"]),
            lambda: run([*podman, "port", "bench-web"]),
        ),
        "network ls": (
            lambda: run([*netctl, "network", "ls"]),
            lambda: run([*podman, "network", "ls"]),
        ),
    }
    floor: list[float] = []
    samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in cases}
    try:
        run([*netctl, "run", "-d", "--name", "bench-web", "-p", "18090:80", "--", "sleep", "600"])
        run(
            [
                *podman,
                *podman_run,
                "-d",
                "--name",
                "bench-web",
                "-p",
                "18091:80",
                rootfs,
                "sleep",
                "600",
            ]
        )
        for mine, theirs in cases.values():  # warm up: default networks, plugins, caches
            mine()
            theirs()
        for _ in range(opts.n):
            t = time.perf_counter()
            run(["unshare", "-n", "true"])
            floor.append((time.perf_counter() - t) * 1000)
            for name, pair in cases.items():
                for fn, out in zip(pair, samples[name], strict=True):
                    t = time.perf_counter()
                    fn()
                    out.append((time.perf_counter() - t) * 1000)
    finally:
        subprocess.run([*netctl, "rm", "-f", "bench-web"], env=env, capture_output=True)
        subprocess.run([*podman, "rm", "-f", "-t", "0", "bench-web"], capture_output=True)
        subprocess.run(["ip", "netns", "del", node], check=False)
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            mounts = [line.split()[4] for line in fh]
        for mount in mounts:
            if mount.startswith(tmp + "/"):
                subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [["case", "netctl p50", "p90", "podman p50", "p90", "ratio", "goal", ""]]
    for name, (mine, theirs) in samples.items():
        ratio = median(mine) / median(theirs)
        rows.append(
            [
                name,
                f"{median(mine):.1f}",
                f"{pct(mine, 90):.1f}",
                f"{median(theirs):.1f}",
                f"{pct(theirs, 90):.1f}",
                f"{ratio:.2f}x",
                f"<= {GOALS[name]}x",
                "ok" if ratio <= GOALS[name] else "MISSED",
            ]
        )
    print(
        f"milliseconds, median of {opts.n} interleaved rounds; unshare -n true: {median(floor):.1f}"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
