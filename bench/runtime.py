"""`netctl run` end to end: what network setup costs.

Interleaved in one run, inside a throwaway node namespace with a sandboxed NETCTL_ROOT:
  unshare -n true                                   a bare new network namespace
  netctl run --rm --network none -- true            + netns file, loopback plugin, records
  netctl run --rm --network bridge -p P:80 -- true  + bridge, host-local, portmap, isolation
Prints medians and the share of the bridge run that network setup takes.

    .venv/bin/python bench/runtime.py [-n 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import ensure_root, median, pct, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30)
    opts = ap.parse_args()
    ensure_root()
    node = f"pycni-bench-node-{os.getpid()}"
    root = tempfile.mkdtemp(prefix="pycni-bench-run-")
    subprocess.run(["ip", "netns", "add", node], check=True)
    subprocess.run(["ip", "-n", node, "link", "set", "lo", "up"], check=True)
    env = dict(os.environ, NETCTL_ROOT=root, NETCTL_DAEMON_CONFIG=os.path.join(root, "daemon.json"))
    netctl = ["nsenter", f"--net=/var/run/netns/{node}", sys.executable, "-m", "pycni.runtime.cli"]

    def run(cmd: list[str]) -> None:
        proc = subprocess.run(cmd, env=env, capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} failed: {proc.stderr.decode()}")

    port = iter(range(30000, 40000))
    cases = {
        "unshare -n true": lambda: run(["unshare", "-n", "true"]),
        "netctl run --network none": lambda: run(
            [*netctl, "run", "--rm", "--network", "none", "--", "true"]
        ),
        "netctl run --network bridge -p": lambda: run(
            [*netctl, "run", "--rm", "--network", "bridge", "-p", f"{next(port)}:80", "--", "true"]
        ),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    try:
        for fn in cases.values():  # warm up: the default network and the plugins get installed
            fn()
        for _ in range(opts.n):
            for name, fn in cases.items():
                t = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t) * 1000)
    finally:
        subprocess.run(["ip", "netns", "del", node], check=False)
        shutil.rmtree(root, ignore_errors=True)
    rows = [["case", "p50 ms", "p90 ms"]]
    for name, vals in samples.items():
        rows.append([name, f"{median(vals):.1f}", f"{pct(vals, 90):.1f}"])
    print(table(rows))
    m = {k: median(v) for k, v in samples.items()}
    bridge, none = m["netctl run --network bridge -p"], m["netctl run --network none"]
    print()
    print(
        f"network setup share of a bridge run (bridge - none) / bridge: {(bridge - none) / bridge:.0%}"
    )
    print(f"bridge run / bare unshare: {bridge / m['unshare -n true']:.1f}x")


if __name__ == "__main__":
    main()
