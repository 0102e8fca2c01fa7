"""The common pod start (issue 12): no published port. Ours, four ways, side by side with
the reference Go plugins in one run, interleaved call by call.

    .venv/bin/python bench/podstart.py [-n 60] [--chain-n 30] [--rounds 1]

Ways (each on a node namespace of its own, created here and deleted at the end):
  reference  the Go plugins in /usr/lib/cni
  exec       ours as Python executables (`PYCNI_NATIVE=0 netctl plugins install`),
             no agent (PYCNI_AGENT=0): the plugin path without an agent
  agent      the same Python executables handing calls to a `netctl agent` started here
  native     what `netctl plugins install` writes where a C compiler exists (the
             compiled client, pycni/native/cniclient.c), nothing configured by hand:
             the first call finds no agent, runs in-process and starts one on demand,
             the calls after it go to that agent. (Its socket is under this run's
             temporary directory, not /run/pycni: the machine is shared.)
Cases: VERSION (and a bare `python -I -S -c pass` for scale); portmap ADD and DEL with
no mappings; loopback ADD; bridge + host-local ADD and DEL, one container re-added per
sample; then the chain bridge + host-local + portmap with no ports over --chain-n
containers (bench/chain.py's serial run). --rounds repeats everything to show noise.
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
    PATH,
    REPO,
    AgentProc,
    Sandbox,
    Way,
    forget_ns_fds,
    machine,
    report_serial,
    serial,
    spawn,
)
from common import REFERENCE_DIR, ensure_root, median, pct, table


def install(directory: str, native: bool) -> None:
    env = dict(os.environ, PYCNI_NATIVE="1" if native else "0")
    env.pop("PYCNI_AGENT_AUTOSTART", None)  # the installed default, as a user gets it
    subprocess.run(
        [sys.executable, "-m", "pycni.runtime.cli", "plugins", "install", "--dir", directory],
        check=True,
        capture_output=True,
        cwd=REPO,
        env=env,
    )
    with open(os.path.join(directory, "loopback"), "rb") as fh:
        if fh.read(4).startswith(b"\x7fELF") != native:
            raise SystemExit("the compiled client did not build (is a C compiler installed?)")


def on_demand_agents(root: str) -> list[int]:
    """PIDs of agents started on demand with a socket under `root` (not their workers)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if any(b"import autostart" in a for a in argv) and any(
            a.startswith(root.encode()) for a in argv
        ):
            found[int(entry)] = ppid
    return [pid for pid, ppid in found.items() if ppid not in found]


def stop_on_demand_agents(root: str) -> None:
    for pid in on_demand_agents(root):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)


def portmap_empty(prev: dict[str, Any]) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "benchnet",
        "type": "portmap",
        "snat": True,
        "capabilities": {"portMappings": True},
        "runtimeConfig": {"portMappings": []},
        "prevResult": prev,
    }


LOOPBACK = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


def micro(ways: list[Way], sandbox: Sandbox, n: int, tag: str, bare: list[str]) -> dict[str, Any]:
    """Single calls, interleaved across the ways; {case: {way: [ms]}}."""
    samples: dict[str, dict[str, list[float]]] = {}

    def add(case: str, way: str, ms: float) -> None:
        samples.setdefault(case, {}).setdefault(way, []).append(ms)

    conts = {}
    for way in ways:
        way.fresh(sandbox, tag)
        conts[way.name] = sandbox.netns(f"c-{way.name}-{tag}", lo=False)
    prev: dict[str, dict[str, Any]] = {}
    for i in range(n + 3):  # 3 warm-up rounds (the native way's agent starts in them)
        keep = i >= 3
        t = time.perf_counter()
        spawn(bare, {"PATH": PATH})
        if keep:
            add("bare interpreter", "-", (time.perf_counter() - t) * 1000)
        for way in ways[i % len(ways) :] + ways[: i % len(ways)]:
            cid, ns = f"pod{i}", conts[way.name]
            if way.name != "agent":  # VERSION never reaches the agent
                p = way.call("loopback", "VERSION", {}, cid, ns)
                if keep:
                    add("VERSION", way.name, p.ms)
            p = way.call("loopback", "ADD", LOOPBACK, cid, ns)
            if keep:
                add("loopback ADD", way.name, p.ms)
            conf = way.bridge_conf()
            p = way.call("bridge", "ADD", conf, cid, ns)
            prev[way.name] = json.loads(p.out)
            if keep:
                add("bridge + host-local ADD", way.name, p.ms)
            p = way.call("portmap", "ADD", portmap_empty(prev[way.name]), cid, ns)
            if keep:
                add("portmap ADD, no mappings", way.name, p.ms)
            p = way.call("portmap", "DEL", portmap_empty(prev[way.name]), cid, ns)
            if keep:
                add("portmap DEL, no mappings", way.name, p.ms)
            conf["prevResult"] = prev[way.name]
            p = way.call("bridge", "DEL", conf, cid, ns)
            if keep:
                add("bridge + host-local DEL", way.name, p.ms)
        print(f"\r{tag}: {i + 1}/{n + 3}", end="", file=sys.stderr, flush=True)
    print("\r", end="", file=sys.stderr)
    return samples


def report_micro(title: str, samples: dict[str, Any], ways: list[Way]) -> None:
    print(f"\n## {title}\n")
    names = [w.name for w in ways]
    rows = [["case", *[f"{w} p50" for w in names], *[f"{w}/ref" for w in names[1:]]]]
    for case, by_way in samples.items():
        if case == "bare interpreter":
            vals = by_way["-"]
            rows.append(
                [case, f"{median(vals):.1f} ms (p90 {pct(vals, 90):.1f})"]
                + [""] * (2 * len(names) - 2)
            )
            continue
        ref = median(by_way["reference"])
        cells = [f"{median(by_way[w]):.1f} ms" if w in by_way else "-" for w in names]
        ratios = [f"{median(by_way[w]) / ref:.2f}x" if w in by_way else "-" for w in names[1:]]
        rows.append([case, *cells, *ratios])
    print(table(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=60, help="samples per single-call case")
    ap.add_argument("--chain-n", type=int, default=30, help="containers in the no-port chain")
    ap.add_argument("--rounds", type=int, default=1, help="repeat everything (noise)")
    opts = ap.parse_args()
    ensure_root()
    sandbox = Sandbox()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        pybin = os.path.join(sandbox.root, "bin-python")
        nativebin = os.path.join(sandbox.root, "bin-native")
        install(pybin, native=False)
        install(nativebin, native=True)
        agent = AgentProc(sandbox)
        on_demand = os.path.join(sandbox.root, "on-demand", "agent.sock")
        ways = [
            Way("reference", REFERENCE_DIR, os.path.join(sandbox.root, "ref"), {}),
            Way("exec", pybin, os.path.join(sandbox.root, "exec"), {"PYCNI_AGENT": "0"}),
            Way(
                "agent",
                pybin,
                os.path.join(sandbox.root, "agent"),
                {"PYCNI_AGENT_SOCKET": agent.socket},
            ),
            Way(
                "native",
                nativebin,
                os.path.join(sandbox.root, "native"),
                {"PYCNI_AGENT_SOCKET": on_demand},
            ),
        ]
        with open(os.path.join(pybin, "loopback")) as fh:
            interpreter = fh.readline()[2:].split()[0]
        print("# pycni: the common pod start (no published port)\n")
        print(f"machine: {machine()}")
        print(f"command: {' '.join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])}")
        started = time.perf_counter()
        for r in range(opts.rounds):
            res = micro(ways, sandbox, opts.n, f"micro{r}", [interpreter, "-I", "-S", "-c", "pass"])
            report_micro(f"single calls, round {r + 1}, n={opts.n}, interleaved", res, ways)
            stats = serial(ways, sandbox, opts.chain_n, f"nop{r}", portmap=True, ports=0)
            report_serial(
                f"bridge + host-local + portmap, no ports, N={opts.chain_n}, round {r + 1}",
                stats,
                ways,
            )
        agents = on_demand_agents(sandbox.root)
        print(f"\nagents started on demand during the run: {len(agents)}")
        with open("/proc/loadavg") as fh:
            print(f"load average at the end: {fh.read().split()[0]}")
        print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        stop_on_demand_agents(sandbox.root)
        forget_ns_fds()
        sandbox.close()


if __name__ == "__main__":
    main()
