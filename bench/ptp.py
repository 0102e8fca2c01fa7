"""ptp benchmark: ptp + host-local ADD/DEL, ours side by side with the reference.

    .venv/bin/python bench/ptp.py              # N=200 containers per way
    .venv/bin/python bench/ptp.py -n 50 --masq # smaller, with ipMasq

Three ways, each on a throwaway node namespace of its own (created here, deleted at
the end with everything in it; nothing outside them is touched):
  reference   the Go ptp + host-local in /usr/lib/cni
  standalone  ours, exec'd per call with PYCNI_AGENT=0 (the verb runs in the process)
  agent       ours, exec'd per call, handed to `netctl agent` (started here, socket
              under a temporary directory)

Every container is its own netns; calls are made as a runtime makes them (a fresh
process per call, CNI_* and the config on stdin; DEL with the ADD's result as
prevResult), interleaved way by way and container by container so that machine noise
hits all alike. Prints ADD and DEL p50/p90 per way. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from chain import Sandbox, Way, forget_ns_fds, print_header, ratio, standard_ways
from common import ensure_root, pct, table

NETWORK = "benchptp"
SUBNET = "10.201.0.0/16"


def ptp_conf(way: Way, masq: bool) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "ptp",
        "ipMasq": masq,
        "mtu": 1500,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": SUBNET}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": way.data_dir,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=200, help="containers per way")
    ap.add_argument("--masq", action="store_true", help="ipMasq on (iptables for the reference)")
    opts = ap.parse_args()
    ensure_root()
    sandbox = Sandbox()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        run(sandbox, opts.n, opts.masq)
    finally:
        forget_ns_fds()
        sandbox.close()


def run(sandbox: Sandbox, n: int, masq: bool) -> None:
    ways, _agent = standard_ways(sandbox)
    print_header("pycni ptp benchmark")
    print()
    for way in ways:
        way.fresh(sandbox, "ptp")
    containers = {w.name: [sandbox.netns(f"c-{w.name}-{i}") for i in range(n)] for w in ways}
    results: dict[str, list[dict[str, Any]]] = {w.name: [] for w in ways}
    adds: dict[str, list[float]] = {w.name: [] for w in ways}
    dels: dict[str, list[float]] = {w.name: [] for w in ways}
    started = time.perf_counter()
    for i in range(n):
        for way in ways[i % 3 :] + ways[: i % 3]:  # rotate who goes first
            p = way.call("ptp", "ADD", ptp_conf(way, masq), f"ptp{i:05d}", containers[way.name][i])
            adds[way.name].append(p.ms)
            results[way.name].append(json.loads(p.out))
    for i in range(n):
        for way in ways[i % 3 :] + ways[: i % 3]:
            conf = ptp_conf(way, masq)
            conf["prevResult"] = results[way.name][i]
            p = way.call("ptp", "DEL", conf, f"ptp{i:05d}", containers[way.name][i])
            dels[way.name].append(p.ms)
    took = time.perf_counter() - started
    title = f"ptp + host-local{' (ipMasq)' if masq else ''}, N={n}, serial, interleaved"
    print(f"## {title}\n")
    rows = [["way", "ADD p50", "ADD p90", "DEL p50", "DEL p90", "ADD p50/ref", "DEL p50/ref"]]
    ref_add, ref_del = pct(adds["reference"], 50), pct(dels["reference"], 50)
    for way in ways:
        a, d = adds[way.name], dels[way.name]
        rows.append([
            way.name, f"{pct(a, 50):.1f} ms", f"{pct(a, 90):.1f} ms", f"{pct(d, 50):.1f} ms",
            f"{pct(d, 90):.1f} ms", ratio(pct(a, 50), ref_add), ratio(pct(d, 50), ref_del),
        ])  # fmt: skip
    print(table(rows))
    print(f"\n({took:.1f} s in all)")


if __name__ == "__main__":
    main()
