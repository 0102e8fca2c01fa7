"""Podman-style chain benchmark: bridge -> portmap -> firewall -> tuning, as podman's CNI
backend generates for its default network, ADD and DEL p50 per container, ours vs the
reference binaries, interleaved container by container in one run.

    .venv/bin/python bench/podman_chain.py            # N=60 per host kind
    .venv/bin/python bench/podman_chain.py -n 200

Two host kinds, each a throwaway node namespace per way (nothing outside is touched):
  open   FORWARD policy accept: the reference firewall still writes its iptables rules;
         ours (backend nftables, the default) finds no dropping chain and writes only
         its record
  drop   iptables FORWARD policy DROP (Docker's): both write the reference's layout

Ours is all ours (tuning included, once installed by `netctl plugins install`); where
an older tree lacks `tuning`, the reference's is linked in and the header says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from chain import (
    NETWORK,
    AgentProc,
    Container,
    Sandbox,
    Way,
    entered,
    forget_ns_fds,
    rotate,
    run_ok,
)
from common import REFERENCE_DIR, ensure_root, median, pct, table

PLUGINS = ("bridge", "portmap", "firewall", "tuning")


def podman_confs(way: Way, prev: dict[str, Any] | None, c: Container) -> dict[str, dict[str, Any]]:
    """The conflist podman 4.3 writes for its default network, one conf per plugin."""
    base = {"cniVersion": "0.4.0", "name": NETWORK}
    bridge = way.bridge_conf()
    bridge.update(base)
    bridge["ipam"]["ranges"][0][0]["gateway"] = "10.200.0.1"
    out = {
        "bridge": bridge,
        "portmap": {
            **base,
            "type": "portmap",
            "capabilities": {"portMappings": True},
            "runtimeConfig": {
                "portMappings": [
                    {"hostPort": 20000 + c.index, "containerPort": 80, "protocol": "tcp"}
                ]
            },
        },
        "firewall": {**base, "type": "firewall", "backend": ""},
        "tuning": {**base, "type": "tuning"},
    }
    if prev is not None:
        for name in PLUGINS[1:]:
            out[name]["prevResult"] = prev
    return out


def add(way: Way, c: Container, per: dict[str, list[float]]) -> float:
    took = 0.0
    prev: dict[str, Any] | None = None
    for name in PLUGINS:
        proc = way.call(name, "ADD", podman_confs(way, prev, c)[name], c.cid, c.ns)
        prev = json.loads(proc.out)
        took += proc.ms
        per[f"{name} ADD"].append(proc.ms)
    c.result = prev or {}
    return took


def delete(way: Way, c: Container, per: dict[str, list[float]]) -> float:
    confs = podman_confs(way, c.result, c)
    confs["bridge"]["prevResult"] = c.result
    took = 0.0
    for name in reversed(PLUGINS):
        proc = way.call(name, "DEL", confs[name], c.cid, c.ns)
        per[f"{name} DEL"].append(proc.ms)
        took += proc.ms
    return took


def run(ways: list[Way], sandbox: Sandbox, n: int, kind: str) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {
        w.name: {"add": [], "del": [], **{f"{p} {v}": [] for p in PLUGINS for v in ("ADD", "DEL")}}
        for w in ways
    }
    for w in ways:
        w.fresh(sandbox, kind)
        if kind == "drop":
            with entered(w.node):
                run_ok(["iptables", "-P", "FORWARD", "DROP"])
    containers = {w.name: [] for w in ways}  # type: dict[str, list[Container]]
    for i in range(n):
        for w in rotate(ways, i):  # interleaved, each way first in turn
            c = Container(i, sandbox.netns(f"c-{w.name}-{kind}-{i}"))
            times[w.name]["add"].append(add(w, c, times[w.name]))
            containers[w.name].append(c)
    for i in range(n):
        for w in rotate(ways, i):
            c = containers[w.name][i]
            times[w.name]["del"].append(delete(w, c, times[w.name]))
            sandbox.drop(c.ns)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=60, help="containers per host kind")
    ap.add_argument("--agent", action="store_true", help="also ours through `netctl agent`")
    args = ap.parse_args()
    ensure_root()
    sandbox = Sandbox()
    try:
        bindir = os.path.join(sandbox.root, "ours")
        run_ok([sys.executable, "-m", "pycni.runtime.cli", "plugins", "install", "--dir", bindir])
        if not os.path.exists(os.path.join(bindir, "tuning")):
            os.symlink(os.path.join(REFERENCE_DIR, "tuning"), os.path.join(bindir, "tuning"))
        work = tempfile.mkdtemp(dir=sandbox.root)
        ours = Way("ours", bindir, os.path.join(work, "ours"), {"PYCNI_AGENT": "0"})
        ref = Way("reference", str(REFERENCE_DIR), os.path.join(work, "ref"), {})
        ways = [ref, ours]
        if args.agent:
            agent = AgentProc(sandbox)
            env = {"PYCNI_AGENT_SOCKET": agent.socket}
            ways.append(Way("ours+agent", bindir, os.path.join(work, "agent"), env))
        rows = [["host", "way", "ADD p50 ms", "ADD p90 ms", "DEL p50 ms", "DEL p90 ms"]]
        per = [["host", "plugin call", *(f"{w.name} p50 ms" for w in ways)]]
        for kind in ("open", "drop"):
            t = run(ways, sandbox, args.n, kind)
            for w in ways:
                a, d = t[w.name]["add"], t[w.name]["del"]
                rows.append(
                    [kind, w.name, f"{median(a):.1f}", f"{pct(a, 90):.1f}",
                     f"{median(d):.1f}", f"{pct(d, 90):.1f}"]
                )  # fmt: skip
            for p in PLUGINS:
                for v in ("ADD", "DEL"):
                    k = f"{p} {v}"
                    per.append([kind, k, *(f"{median(t[w.name][k]):.1f}" for w in ways)])
        tuning = "ours" if not os.path.islink(os.path.join(bindir, "tuning")) else "reference"
        print(f"podman-style chain (bridge, portmap, firewall, tuning[{tuning}]), N={args.n}")
        print(f"load average: {os.getloadavg()[0]:.2f} (2 vCPU shared; figures are noisy)")
        print(table(rows))
        print()
        print(table(per))
    finally:
        forget_ns_fds()
        sandbox.close()


if __name__ == "__main__":
    main()
