"""Data plane benchmark: traffic through a published port vs straight to the container.

    .venv/bin/python bench/dataplane.py             # 3 rounds of 5 s iperf3, 5 s request runs
    .venv/bin/python bench/dataplane.py --quick     # 1 round of 2 s each

For the reference plugins (bridge + portmap with iptables) and ours (bridge + portmap
with the nftables table), each on a throwaway node namespace with an "outside"
namespace wired to it by a veth: a container with an iperf3 server and a small TCP
request server, published on the node (hostPort -> containerPort). From the outside
namespace:
  throughput  iperf3 -c <target> (one TCP stream), Gbit/s
  requests    new TCP connection + 64-byte request + 64-byte answer + close, per second
              (every request is a new connection, so every request walks the DNAT rules)
each to the node's address and published port (DNAT) and to the container's address
directly (routed through the node, no NAT), interleaved round by round. All addresses
are chosen here, inside namespaces created here; nothing else is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain import (
    PATH,
    REPO,
    Container,
    Sandbox,
    Way,
    chain_add,
    entered,
    forget_ns_fds,
    machine,
    outside,
    portmap_conf,
    progress,
)
from common import REFERENCE_DIR, ensure_root, median, table

IPERF_PORT, IPERF_HOST_PORT = 5201, 15201
REQ_PORT, REQ_HOST_PORT = 7000, 17000

REQUEST_SERVER = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4096)
answer = b"a" * 64
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        if c.recv(64):
            c.sendall(answer)
    except OSError:
        pass
    c.close()
"""


def in_ns(sandbox: Sandbox, ns: str, argv: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["nsenter", f"--net={ns}", *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    sandbox.procs.append(proc)
    return proc


def iperf(ns: str, address: str, port: int, seconds: float) -> float:
    """One iperf3 run from namespace `ns`; received Gbit/s."""
    argv = ["iperf3", "-J", "-c", address, "-p", str(port), "-t", str(seconds)]
    out = subprocess.run(
        ["nsenter", f"--net={ns}", *argv],
        capture_output=True,
        timeout=seconds + 60,
        env={"PATH": PATH},
    )
    data = json.loads(out.stdout or b"{}")
    if "error" in data or out.returncode != 0:
        raise RuntimeError(f"iperf3 to {address}:{port}: {data.get('error')} {out.stderr!r}")
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def request_rate(ns: str, address: str, port: int, seconds: float) -> float:
    """Sequential request/answer exchanges per second, each on a new connection."""
    result: list[float] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with entered(ns):
                request = b"q" * 64
                linger = (1).to_bytes(4, sys.byteorder) + (0).to_bytes(4, sys.byteorder)
                done = 0
                t0 = time.perf_counter()
                deadline = t0 + seconds
                while time.perf_counter() < deadline:
                    s = socket.socket()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    s.connect((address, port))
                    s.sendall(request)
                    got = 0
                    while got < 64:
                        chunk = s.recv(64)
                        if not chunk:
                            break
                        got += len(chunk)
                    s.close()
                    done += 1
                result.append(done / (time.perf_counter() - t0))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return result[0]


def setup(sandbox: Sandbox, way: Way) -> dict[str, str]:
    way.fresh(sandbox, "dp")
    c = Container(0, sandbox.netns(f"dp-{way.name}"))
    chain_add(way, c, portmap=False)
    maps = [(IPERF_HOST_PORT, IPERF_PORT), (REQ_HOST_PORT, REQ_PORT)]
    way.call("portmap", "ADD", portmap_conf(c.result, maps), c.cid, c.ns)
    container_ip = c.result["ips"][0]["address"].split("/")[0]
    iperf_server = in_ns(sandbox, c.ns, ["iperf3", "-s", "-p", str(IPERF_PORT)])
    del iperf_server  # runs until the sandbox closes
    req = in_ns(sandbox, c.ns, [sys.executable, "-c", REQUEST_SERVER, str(REQ_PORT)])
    assert req.stdout is not None
    if req.stdout.readline().strip() != b"ready":
        raise RuntimeError("the request server did not start")
    out_ns, node_ip = outside(sandbox, way, "dp")
    time.sleep(0.3)  # iperf3 -s binds asynchronously
    return {"out": out_ns, "node": node_ip, "container": container_ip}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s")
    opts = ap.parse_args()
    if opts.quick:
        opts.rounds, opts.seconds = 1, 2.0
    ensure_root()
    sandbox = Sandbox()
    try:
        run(sandbox, opts)
    finally:
        forget_ns_fds()
        sandbox.close()


def run(sandbox: Sandbox, opts: argparse.Namespace) -> None:
    bindir = os.path.join(sandbox.root, "bin")
    subprocess.run(
        [sys.executable, "-m", "pycni.runtime.cli", "plugins", "install", "--dir", bindir],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    ways = [
        Way("reference", REFERENCE_DIR, os.path.join(sandbox.root, "ref"), {}),
        Way("ours", bindir, os.path.join(sandbox.root, "ours"), {"PYCNI_AGENT": "0"}),
    ]
    print("# pycni data plane benchmark\n")
    print(f"machine: {machine()}")
    print(f"command: {' '.join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])}\n")
    targets = {way.name: setup(sandbox, way) for way in ways}
    samples: dict[tuple[str, str, str], list[float]] = {}
    for r in range(opts.rounds):
        for way in ways if r % 2 == 0 else list(reversed(ways)):
            t = targets[way.name]
            for path, address, ip_port, rq_port in (
                ("published", t["node"], IPERF_HOST_PORT, REQ_HOST_PORT),
                ("direct", t["container"], IPERF_PORT, REQ_PORT),
            ):
                progress(f"round {r + 1}: {way.name} {path}")
                gbit = iperf(t["out"], address, ip_port, opts.seconds)
                samples.setdefault((way.name, path, "gbit"), []).append(gbit)
                rate = request_rate(t["out"], address, rq_port, opts.seconds)
                samples.setdefault((way.name, path, "rps"), []).append(rate)
    progress("")
    rows = [
        [
            "way",
            "throughput direct",
            "published",
            "published/direct",
            "requests/s direct",
            "published",
            "published/direct",
        ]
    ]
    for way in ways:
        g_d = median(samples[(way.name, "direct", "gbit")])
        g_p = median(samples[(way.name, "published", "gbit")])
        r_d = median(samples[(way.name, "direct", "rps")])
        r_p = median(samples[(way.name, "published", "rps")])
        rows.append(
            [
                way.name,
                f"{g_d:.2f} Gbit/s",
                f"{g_p:.2f} Gbit/s",
                f"{g_p / g_d:.2f}",
                f"{r_d:.0f}",
                f"{r_p:.0f}",
                f"{r_p / r_d:.2f}",
            ]
        )
    print(table(rows))
    print(
        f"\n(medians of {opts.rounds} rounds; iperf3: one TCP stream for {opts.seconds:g} s; "
        f"requests: sequential, one new connection each, for {opts.seconds:g} s)"
    )


if __name__ == "__main__":
    main()
