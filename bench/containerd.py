"""containerd's CRI RunPodSandbox / StopPodSandbox with our plugins vs the reference.

The kubelet's path, measured end to end: two containerd 1.6 instances (Debian's), one
with our plugins in its CNI bin_dir and one with the reference Go plugins, each in a
throwaway host namespace with the same bridge + portmap conflist, driven over CRI
(tests/cri). Rounds alternate between the two (ours, reference, reference, ours, ...)
so machine noise falls on both alike; each round starts PODS pods without a hostPort
(the common pod) and stops and removes them, timing each call. Prints medians and the
ratio ours / reference.

    .venv/bin/python -m bench.containerd [--rounds 5] [--pods 3] [--host-port]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REFERENCE_DIR, ensure_root, median, pct, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cri import Containerd, conflist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pods", type=int, default=3)
    ap.add_argument("--host-port", action="store_true", help="publish one hostPort per pod")
    opts = ap.parse_args()
    ensure_root()
    work = Path(tempfile.mkdtemp(prefix="pytbench-cd-"))
    ours_bin = work / "bin"
    subprocess.run(
        [sys.executable, "-m", "pycni.runtime.cli", "plugins", "install", "--dir", str(ours_bin)],
        check=True,
        capture_output=True,
    )
    nodes: dict[str, Containerd] = {}
    netns: list[str] = []
    try:
        for kind, bin_dir in (("ours", str(ours_bin)), ("reference", REFERENCE_DIR)):
            ns = f"pytbench{kind[:3]}{os.getpid()}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            netns.append(ns)
            env = {
                "PYCNI_STATE_DIR": str(work / kind / "state"),
                "PYCNI_AGENT_SOCKET": os.environ.get(
                    "PYCNI_AGENT_SOCKET", str(work / kind / "agent.sock")
                ),
            }
            cd = Containerd(f"/var/run/netns/{ns}", bin_dir, conflist(work / kind / "leases"), env)
            cd.start()
            nodes[kind] = cd
        times: dict[str, dict[str, list[float]]] = {
            k: {"run": [], "stop": [], "remove": []} for k in nodes
        }
        order = ["ours", "reference"]
        for r in range(opts.rounds + 1):  # round 0 warms both up and is not counted
            for kind in order if r % 2 == 0 else order[::-1]:
                cd = nodes[kind]
                pods = []
                for i in range(opts.pods):
                    ports = [(18500 + i, 80)] if opts.host_port else []
                    t = time.perf_counter()
                    pods.append(cd.run_pod(f"b{r}-{i}", ports=ports))
                    if r:
                        times[kind]["run"].append((time.perf_counter() - t) * 1000)
                for pod in pods:
                    t = time.perf_counter()
                    cd.stop_pod(pod)
                    t2 = time.perf_counter()
                    cd.remove_pod(pod)
                    if r:
                        times[kind]["stop"].append((t2 - t) * 1000)
                        times[kind]["remove"].append((time.perf_counter() - t2) * 1000)
        rows = [["CRI call (ms)", "ours p50", "ref p50", "ours/ref", "ours p90", "ref p90"]]
        for verb in ("run", "stop", "remove"):
            o, f = times["ours"][verb], times["reference"][verb]
            rows.append(
                [
                    {
                        "run": "RunPodSandbox",
                        "stop": "StopPodSandbox",
                        "remove": "RemovePodSandbox",
                    }[verb],
                    f"{median(o):.1f}",
                    f"{median(f):.1f}",
                    f"{median(o) / median(f):.2f}x",
                    f"{pct(o, 90):.1f}",
                    f"{pct(f, 90):.1f}",
                ]
            )
        kind = "with one hostPort each" if opts.host_port else "without ports"
        print(f"{opts.rounds} rounds x {opts.pods} pods {kind}, alternating ours/reference")
        print(table(rows))
    finally:
        from bench.podstart import stop_on_demand_agents

        for cd in nodes.values():
            cd.stop()
        stop_on_demand_agents(str(work))  # what our plugins started on demand, by PID
        for ns in netns:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
