"""One-link interface plugins benchmark: a macvlan + host-local chain, ours beside the
reference, in one interleaved run.

    .venv/bin/python bench/ifplugins.py              # N=200 containers per way
    .venv/bin/python bench/ifplugins.py -n 50        # quicker

Each way has a throwaway "node" namespace (made here, deleted at the end; nothing
outside it is touched) holding a veth end `mst0`, the macvlan master; every container
is a namespace of its own. The ways, as in bench/chain.py:
  reference   /usr/lib/cni/macvlan + host-local (Go), exec'd per call
  standalone  ours, exec'd per call with PYCNI_AGENT=0 (the verb runs in the process)
  agent       ours, exec'd per call, handed to a `netctl agent` started here
Calls are made as a runtime makes them (a fresh process, CNI_* and the config on
stdin); ADDs then DELs, interleaved call by call across the ways (the order rotates),
so machine noise hits all alike. Prints p50/p90 of ADD and DEL per way.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from chain import (
    Container,
    Sandbox,
    Way,
    entered,
    forget_ns_fds,
    print_header,
    progress,
    report_serial,
    rotate,
    standard_ways,
)
from common import ensure_root

NETWORK = "benchmv"
SUBNET = "10.201.0.0/16"


def macvlan_conf(way: Way, mode: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "macvlan",
        "master": "mst0",
        "mode": mode,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": SUBNET}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": way.data_dir,
        },
    }


def with_master(way: Way) -> None:
    with entered(way.node):
        for cmd in (
            ["ip", "link", "add", "mst0", "type", "veth", "peer", "name", "up0"],
            ["ip", "link", "set", "mst0", "up"],
            ["ip", "link", "set", "up0", "up"],
        ):
            subprocess.run(cmd, check=True, capture_output=True)


def serial(ways: list[Way], sandbox: Sandbox, n: int, mode: str) -> dict[str, Any]:
    stats: dict[str, dict[str, list[float]]] = {w.name: {"add": [], "del": []} for w in ways}
    containers: dict[str, list[Container]] = {}
    tag = f"mv-{mode}"
    for way in ways:
        way.fresh(sandbox, tag)
        with_master(way)
        containers[way.name] = [
            Container(i, sandbox.netns(f"c-{way.name}-{tag}-{i}", lo=False)) for i in range(n)
        ]
    for i in range(n):
        for way in rotate(ways, i):
            c = containers[way.name][i]
            proc = way.call("macvlan", "ADD", macvlan_conf(way, mode), c.cid, c.ns)
            c.result = json.loads(proc.out)
            stats[way.name]["add"].append(proc.ms)
        progress(f"{tag}: ADD {i + 1}/{n}")
    for i in range(n):
        for way in rotate(ways, i):
            c = containers[way.name][i]
            conf = dict(macvlan_conf(way, mode), prevResult=c.result)
            stats[way.name]["del"].append(way.call("macvlan", "DEL", conf, c.cid, c.ns).ms)
        progress(f"{tag}: DEL {i + 1}/{n}")
    for way in ways:
        for c in containers[way.name]:
            sandbox.drop(c.ns)
        sandbox.drop(way.node)
    progress("")
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200, help="containers per way")
    ap.add_argument("--mode", default="bridge", help="macvlan mode")
    ap.add_argument("--no-agent", action="store_true", help="leave the agent way out")
    opts = ap.parse_args()
    ensure_root()
    sandbox = Sandbox()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        ways, _agent = standard_ways(sandbox, agent=not opts.no_agent)
        print_header("pycni one-link plugins benchmark")
        started = time.perf_counter()
        stats = serial(ways, sandbox, opts.n, opts.mode)
        report_serial(
            f"macvlan ({opts.mode}) + host-local, N={opts.n}, serial, interleaved", stats, ways
        )
        print(f"\n(total {time.perf_counter() - started:.0f} s)")
    finally:
        forget_ns_fds()
        sandbox.close()


if __name__ == "__main__":
    main()
