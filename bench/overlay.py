"""Overlay benchmark: a real 3-member etcd and "hosts" as namespaces on an underlay bridge
(the test topology of tests/overlay_kit.py), everything made here and removed at the end.

    .venv/bin/python bench/overlay.py            # all figures (~2-3 min on 2 vCPU)
    .venv/bin/python bench/overlay.py --quick    # fewer rounds

Figures:
  add         container ADD p50/p90 on an overlay network (overlay -> bridge ->
              host-local + egress masquerade, the host's lease already held) vs a
              local bridge network (bridge -> host-local, ipMasq as netctl's
              networks), same host, interleaved
  dataplane   TCP throughput (iperf3, one stream) and request rate (new connection +
              64 B request/answer each) container->container across hosts (VXLAN) vs
              on the same host (one bridge)
  join        time from a new host's first ADD until every other host's containers
              reach its container (ping), p50 over the joins
  etcd        etcd requests per container ADD (from etcd's own /metrics counters):
              overlay ADD on a leased host, first ADD on a new host (agent join),
              etcd-ipam ADD
  sim         N hosts (default 20) joining the same network one after another: the
              convergence of the last join, and etcd's steady-state request rate
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import median, pct, table  # noqa: E402
from dataplane import REQUEST_SERVER, iperf, request_rate  # noqa: E402

from tests.conftest import WORKER_PREFIX, exec_plugin, sh, short_id  # noqa: E402
from tests.overlay_kit import (  # noqa: E402
    EtcdCluster,
    Host,
    Underlay,
    make_host,
    make_netns,
    put_network,
    start_etcd,
)

PLUGINS = Path(tempfile.mkdtemp(prefix="pycni-bench-bin-"))
REF = "/usr/lib/cni"


def install_plugins() -> None:
    sh(sys.executable, "-m", "pycni.runtime.cli", "plugins", "install", "--dir", str(PLUGINS))


def overlay_conf(cluster: EtcdCluster, name: str) -> dict:
    return {"cniVersion": "1.0.0", "name": name, "type": "overlay",
            "clusterStore": cluster.endpoints, "clusterAdvertise": "ul0", "leaseTTL": 10}  # fmt: skip


def bridge_conf(name: str, tmp: Path) -> dict:
    return {"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": "lbr0",
            "isGateway": True, "ipMasq": True, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.90.0.0/24"}]],
                     "dataDir": str(tmp / "ipam-local")}}  # fmt: skip


def plugin(host: Host, kind: str, command: str, conf: dict, netns: str, cid: str,
           binary: str | None = None) -> dict:  # fmt: skip
    r = exec_plugin(binary or PLUGINS / kind, command, conf, netns=netns, container_id=cid,
                    in_ns=host.ns, cni_path=f"{PLUGINS}:{REF}", env_extra=host.env())  # fmt: skip
    if r.rc != 0:
        raise RuntimeError(f"{kind} {command}: {r.stdout} {r.stderr}")
    return r.json if command == "ADD" else {}


def ping(ns: str, ip: str) -> bool:
    # -W 0.2: a ping sent just before the route exists must not add a whole second
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W", "0.2", ip],
                          capture_output=True).returncode == 0  # fmt: skip


def etcd_counters(cluster: EtcdCluster) -> dict[str, float]:
    """Sum of etcd's gRPC request counters over the members, by method."""
    out: dict[str, float] = {}
    for m in cluster.members:
        text = m.ns.run("curl", "-s", f"{m.client_url}/metrics", check=False)
        for line in text.splitlines():
            if line.startswith("grpc_server_handled_total{"):
                method = re.search(r'grpc_method="(\w+)"', line)
                if method:
                    out[method.group(1)] = out.get(method.group(1), 0) + float(line.split()[-1])
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}


def bench_add(cluster: EtcdCluster, host: Host, tmp: Path, rounds: int) -> list[list[str]]:
    net = f"bo{short_id(4)}"
    put_network(cluster, net, "10.80.0.0/16", 80)
    oc, bc = overlay_conf(cluster, net), bridge_conf(f"bl{short_id(4)}", tmp)
    c0 = make_netns("c")
    plugin(host, "overlay", "ADD", oc, c0.path, "warm")  # the agent joins; not measured
    times: dict[str, list[float]] = {"overlay": [], "bridge": []}
    for i in range(rounds):
        for kind, conf in (("overlay", oc), ("bridge", bc)):
            c = make_netns("c")
            t = time.perf_counter()
            plugin(host, kind, "ADD", conf, c.path, f"{kind}{i}")
            times[kind].append((time.perf_counter() - t) * 1000)
            plugin(host, kind, "DEL", conf, c.path, f"{kind}{i}")
            sh("ip", "netns", "del", c.name)
    sh("ip", "netns", "del", c0.name)
    o, b = times["overlay"], times["bridge"]
    return [
        ["ADD (ms)", "p50", "p90"],
        ["overlay (overlay->bridge->host-local)", f"{median(o):.1f}", f"{pct(o, 90):.1f}"],
        ["local bridge (bridge->host-local)", f"{median(b):.1f}", f"{pct(b, 90):.1f}"],
        ["ratio", f"{median(o) / median(b):.2f}x", ""],
    ]


def bench_dataplane(
    cluster: EtcdCluster, h1: Host, h2: Host, seconds: float, rounds: int
) -> list[list[str]]:
    net = f"bd{short_id(4)}"
    put_network(cluster, net, "10.81.0.0/16", 81)
    conf = overlay_conf(cluster, net)
    ca, cb, cc = make_netns("c"), make_netns("c"), make_netns("c")
    plugin(h1, "overlay", "ADD", conf, ca.path, "dpa")
    rb = plugin(h1, "overlay", "ADD", conf, cb.path, "dpb")  # same host as a
    rc = plugin(h2, "overlay", "ADD", conf, cc.path, "dpc")  # the other host
    ip_same = rb["ips"][0]["address"].split("/")[0]
    ip_cross = rc["ips"][0]["address"].split("/")[0]
    procs = []
    for c in (cb, cc):
        procs.append(subprocess.Popen(["ip", "netns", "exec", c.name, "iperf3", "-s", "-p", "5201"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        p = subprocess.Popen(["ip", "netns", "exec", c.name, sys.executable, "-c", REQUEST_SERVER, "7000"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        procs.append(p)
    time.sleep(0.5)
    deadline = time.monotonic() + 10
    while not ping(ca.name, ip_cross) and time.monotonic() < deadline:
        time.sleep(0.1)
    res: dict[str, dict[str, list[float]]] = {
        "same": {"gbit": [], "rps": []},
        "cross": {"gbit": [], "rps": []},
    }
    try:
        for _ in range(rounds):
            for where, ip in (("same", ip_same), ("cross", ip_cross)):
                res[where]["gbit"].append(iperf(ca.path, ip, 5201, seconds))
                res[where]["rps"].append(request_rate(ca.path, ip, 7000, seconds))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    for c in (ca, cb, cc):
        sh("ip", "netns", "del", c.name)
    s_g, c_g = median(res["same"]["gbit"]), median(res["cross"]["gbit"])
    s_r, c_r = median(res["same"]["rps"]), median(res["cross"]["rps"])
    return [
        ["container -> container", "TCP Gbit/s", "requests/s"],
        ["same host (bridge)", f"{s_g:.2f}", f"{s_r:.0f}"],
        ["across hosts (VXLAN)", f"{c_g:.2f}", f"{c_r:.0f}"],
        ["cross / same", f"{100 * c_g / s_g:.0f}%", f"{100 * c_r / s_r:.0f}%"],
    ]


def bench_etcd_per_add(
    cluster: EtcdCluster, underlay: Underlay, tmp: Path, n0: int
) -> list[list[str]]:
    net = f"be{short_id(4)}"
    put_network(cluster, net, "10.82.0.0/16", 82)
    conf = overlay_conf(cluster, net)
    h = make_host(underlay, tmp, n0)
    rows = [["etcd requests", "Range", "Txn", "Put", "LeaseGrant", "LeaseKeepAlive", "Watch"]]

    def row(label: str, d: dict[str, float], n: int = 1) -> list[str]:
        keys = ["Range", "Txn", "Put", "LeaseGrant", "LeaseKeepAlive", "Watch"]
        return [label, *(f"{d.get(k, 0) / n:.1f}" for k in keys)]

    before = etcd_counters(cluster)
    plugin(h, "overlay", "ADD", conf, make_netns("c").path, "e0")
    rows.append(
        row("first overlay ADD on a new host (join)", delta(before, etcd_counters(cluster)))
    )
    before = etcd_counters(cluster)
    for i in range(5):
        plugin(h, "overlay", "ADD", conf, make_netns("c").path, f"e{i + 1}")
    rows.append(row("overlay ADD, lease held (per ADD)", delta(before, etcd_counters(cluster)), 5))
    ipam = {"cniVersion": "1.0.0", "name": f"bi{short_id(4)}", "type": "macvlan", "master": "ul0",
            "ipam": {"type": "etcd-ipam", "clusterStore": cluster.endpoints, "range": "10.83.0.0/24",
                     "nodeName": h.ip}}  # fmt: skip
    before = etcd_counters(cluster)
    for i in range(5):
        plugin(h, "macvlan", "ADD", ipam, make_netns("c").path, f"i{i}", binary=f"{REF}/macvlan")
    rows.append(row("etcd-ipam ADD (per ADD)", delta(before, etcd_counters(cluster)), 5))
    h.kill_agents()
    return rows


def bench_join(
    cluster: EtcdCluster, underlay: Underlay, tmp: Path, n_hosts: int, first: int
) -> tuple[list[list[str]], float]:
    """Hosts join one by one; each join: time until every earlier host's container pings
    the new host's container. Returns the rows and etcd's steady-state request rate."""
    net = f"bj{short_id(4)}"
    put_network(cluster, net, "10.84.0.0/16", 84)
    conf = overlay_conf(cluster, net)
    hosts: list[Host] = []
    containers: list[tuple[str, str]] = []  # (netns name, address)
    joins: list[float] = []
    add_ms: list[float] = []
    after: list[float] = []  # from the new host's lease (its ADD returned) on
    try:
        for i in range(n_hosts):
            h = make_host(underlay, tmp, first + i)
            hosts.append(h)
            c = make_netns("c")
            t0 = time.perf_counter()
            r = plugin(h, "overlay", "ADD", conf, c.path, f"j{i}")
            add_ms.append((time.perf_counter() - t0) * 1000)
            ip = r["ips"][0]["address"].split("/")[0]
            pending = {ns for ns, _ in containers}
            deadline = time.monotonic() + 15
            while pending and time.monotonic() < deadline:
                # in parallel: sequential pings would add their own start-up per host
                with ThreadPoolExecutor(8) as pool:
                    ok = dict(
                        zip(pending, pool.map(ping, pending, [ip] * len(pending)), strict=True)
                    )
                pending = {ns for ns, reached in ok.items() if not reached}
            if pending:
                raise RuntimeError(f"host {i}: {len(pending)} hosts never reached it")
            if containers:
                joins.append((time.perf_counter() - t0) * 1000)
                after.append(joins[-1] - add_ms[-1])
            containers.append((c.name, ip))
        before = etcd_counters(cluster)
        t = time.monotonic()
        time.sleep(10)
        steady = sum(delta(before, etcd_counters(cluster)).values()) / (time.monotonic() - t)
    finally:
        for h in hosts:
            h.kill_agents()
    rows = [
        [f"{n_hosts} hosts joining one by one", "p50", "p90", "max"],
        ["first ADD on the new host (agent start + lease) ms", f"{median(add_ms):.0f}",
         f"{pct(add_ms, 90):.0f}", f"{max(add_ms):.0f}"],
        ["ADD start -> every other host reaches it, ms", f"{median(joins):.0f}",
         f"{pct(joins, 90):.0f}", f"{max(joins):.0f}"],
        ["ADD returned -> every other host reaches it, ms", f"{median(after):.0f}",
         f"{pct(after, 90):.0f}", f"{max(after):.0f}"],
    ]  # fmt: skip
    return rows, steady


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--hosts", type=int, default=20, help="hosts in the join simulation")
    ap.add_argument("--only", choices=["add", "dataplane", "etcd", "join"], default=None)
    opts = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark makes namespaces")
    rounds, seconds = (10, 2.0) if opts.quick else (30, 5.0)
    install_plugins()
    tmp = Path(tempfile.mkdtemp(prefix="pycni-bench-overlay-"))
    underlay = Underlay.create()
    cluster = None
    hosts: list[Host] = []
    try:
        cluster = start_etcd(underlay, tmp)
        h1, h2 = make_host(underlay, tmp, 1), make_host(underlay, tmp, 2)
        hosts += [h1, h2]
        if opts.only in (None, "add"):
            print(table(bench_add(cluster, h1, tmp, rounds)), "\n", flush=True)
        if opts.only in (None, "dataplane"):
            rows = bench_dataplane(cluster, h1, h2, seconds, 1 if opts.quick else 3)
            print(table(rows), "\n", flush=True)
        if opts.only in (None, "etcd"):
            print(table(bench_etcd_per_add(cluster, underlay, tmp, 3)), "\n", flush=True)
        if opts.only not in (None, "join"):
            return
        rows, steady = bench_join(cluster, underlay, tmp, opts.hosts, 10)
        print(table(rows))
        print(f"etcd steady state with {opts.hosts} joined hosts (+3 from above), TTL 10 s: "
              f"{steady:.1f} requests/s (keepalives, renew-time reads, watch re-creates)")  # fmt: skip
    finally:
        for h in hosts:
            h.kill_agents()
        if cluster is not None:
            cluster.destroy()
        underlay.destroy()
        for line in sh("ip", "netns", "list").splitlines():
            name = line.split(" ")[0]
            if name.startswith(WORKER_PREFIX):  # the containers made here
                sh("ip", "netns", "del", name, check=False)


if __name__ == "__main__":
    main()
