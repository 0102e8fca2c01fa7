"""netctl's embedded resolver vs aardvark-dns 1.4 (podman's), same machine, same run.

    sudo .venv/bin/python bench/dns.py [--seconds 3] [--queries 3000] [--window 32]

Topology (all throwaway namespaces, addresses of our own):

    client ns (10.120.0.2) --veth-- node ns (10.120.0.1) --veth-- upstream ns (10.121.0.2)
                                                                  dnsmasq :53

- netctl: its resolver (runtime/dns.py) started from records in a private run dir,
  listening on 127.0.0.11:53 inside the client namespace; forwards to dnsmasq (the
  container's --dns) from the client's namespace, through the node.
- aardvark-dns 1.4: `aardvark-dns --config DIR -p 53 run` in the node namespace,
  listening on the gateway 10.120.0.1:53, the client a container entry of its config
  (aardvark answers by the source address); forwards to dnsmasq (the network's dns).

For each: p50/p99 of one query at a time (UDP, a local name and a forwarded name), then
queries/s with `--window` queries in flight for `--seconds`, the same Python load
generator in the client namespace for both, then each server's resident memory. The
runs are interleaved (ours, theirs, ours, theirs) and the better of two is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ensure_root, table

AARDVARK = "/usr/lib/podman/aardvark-dns"
PREFIX = "pytbdns"

LOAD = r"""
import json, os, random, socket, struct, sys, time
import dns.message
server, name, mode, arg1, arg2 = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
wire = bytearray(dns.message.make_query(name, "A").to_wire())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((server, 53))
def ask(qid):
    wire[0:2] = struct.pack("!H", qid)
    s.send(wire)
if mode == "latency":
    s.settimeout(3)
    lat, fails = [], 0
    for i in range(int(arg2)):
        qid = i & 0xffff
        t = time.perf_counter()
        ask(qid)
        while True:
            try:
                r = s.recv(4096)
            except socket.timeout:
                fails += 1
                break
            if r[:2] == wire[:2]:
                lat.append((time.perf_counter() - t) * 1e6)
                break
    lat.sort()
    pick = lambda p: lat[min(len(lat) - 1, int(len(lat) * p / 100))] if lat else float("nan")
    rcode = r[3] & 15 if lat else -1
    print(json.dumps({"p50": pick(50), "p99": pick(99), "n": len(lat), "fails": fails, "rcode": rcode}))
else:
    s.setblocking(False)
    import selectors
    sel = selectors.DefaultSelector(); sel.register(s, selectors.EVENT_READ)
    window, end, done, qid, inflight = int(arg2), time.perf_counter() + arg1, 0, 0, {}
    start = time.perf_counter()
    for _ in range(window):
        qid = (qid + 1) & 0xffff; inflight[qid] = time.perf_counter(); ask(qid)
    while time.perf_counter() < end:
        if not sel.select(0.5):
            # lost answers: refill the window
            inflight.clear()
            for _ in range(window):
                qid = (qid + 1) & 0xffff; inflight[qid] = time.perf_counter(); ask(qid)
            continue
        while True:
            try:
                r = s.recv(4096)
            except BlockingIOError:
                break
            got = struct.unpack("!H", r[:2])[0]
            if inflight.pop(got, None) is not None:
                done += 1
                qid = (qid + 1) & 0xffff; inflight[qid] = time.perf_counter(); ask(qid)
    print(json.dumps({"qps": done / (time.perf_counter() - start)}))
"""


def sh(*cmd: str, check: bool = True) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr}")
    return proc.stdout


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Topology:
    def __init__(self) -> None:
        tag = os.urandom(3).hex()
        self.client, self.node, self.up = (f"{PREFIX}{k}-{tag}" for k in ("c", "n", "u"))
        for ns in (self.client, self.node, self.up):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.client, "link", "add", "eth0", "type", "veth", "peer", "name", "c0",
           "netns", self.node)  # fmt: skip
        sh("ip", "-n", self.up, "link", "add", "eth0", "type", "veth", "peer", "name", "u0",
           "netns", self.node)  # fmt: skip
        for ns, dev, addr in (
            (self.client, "eth0", "10.120.0.2/24"),
            (self.node, "c0", "10.120.0.1/24"),
            (self.node, "u0", "10.121.0.1/24"),
            (self.up, "eth0", "10.121.0.2/24"),
        ):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", self.client, "route", "add", "default", "via", "10.120.0.1")
        sh("ip", "-n", self.up, "route", "add", "default", "via", "10.121.0.1")
        sh(*in_ns(self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1"))

    def close(self) -> None:
        for ns in (self.client, self.node, self.up):
            sh("ip", "netns", "del", ns, check=False)


def start_dnsmasq(topo: Topology, d: str) -> subprocess.Popen[bytes]:
    conf = os.path.join(d, "dnsmasq.conf")
    with open(conf, "w") as fh:
        fh.write(
            "no-resolv\nno-hosts\nbind-interfaces\nlisten-address=10.121.0.2\n"
            "address=/fwd.example.test/198.51.100.7\ncache-size=1000\n"
            f"pid-file={d}/dnsmasq.pid\n"
        )
    proc = subprocess.Popen(
        in_ns(topo.up, "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return proc


def start_ours(topo: Topology, d: str) -> int:
    """netctl's resolver from records in a private run dir (as `netctl run` leaves them)."""
    from pycni.runtime import dns
    from pycni.runtime.containers import Attachment, ContainerRecord, ContainerStore
    from pycni.runtime.paths import Paths

    env = {"NETCTL_ROOT": d}
    paths = Paths(env)
    store = ContainerStore(paths)
    client = ContainerRecord("c" * 64, "client", ["true"], status="created")
    client.netns = f"/var/run/netns/{topo.client}"
    client.dns = ["10.121.0.2"]
    client.attachments = [Attachment("benchnet", ips=["10.120.0.2/24"])]
    web = ContainerRecord("w" * 64, "web", ["true"], status="created")
    web.netns = f"/var/run/netns/{topo.node}"  # any live netns: it only needs to exist
    web.attachments = [Attachment("benchnet", ips=["10.120.0.3/24"])]
    for rec in (client, web):
        store.save(rec)
    os.environ.update(NETCTL_RUN_DIR=paths.run)
    from pycni import netns

    fd = netns.open_netns(f"/var/run/netns/{topo.node}")
    try:
        with netns.entered(fd):  # the resolver lives in the node's namespace, as netctl's
            if not dns.ensure(paths):
                raise RuntimeError("our resolver did not start")
    finally:
        os.close(fd)
    with open(os.path.join(paths.run, "dns", "pid")) as fh:
        return int(fh.read())


def aardvark_pid(d: str) -> int:
    """aardvark-dns `run` daemonizes: its pid is in the config dir."""
    try:
        with open(os.path.join(d, "aardvark", "aardvark.pid")) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return 0


def start_aardvark(topo: Topology, d: str) -> subprocess.Popen[bytes]:
    cfg = os.path.join(d, "aardvark")
    os.makedirs(cfg)
    with open(os.path.join(cfg, "benchnet"), "w") as fh:
        fh.write("10.120.0.1 10.121.0.2\n")
        fh.write(f"{'c' * 64} 10.120.0.2  client\n")
        fh.write(f"{'w' * 64} 10.120.0.3  web\n")
    proc = subprocess.Popen(
        in_ns(topo.node, AARDVARK, "--config", cfg, "-p", "53", "run"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return proc


def load(topo: Topology, server: str, name: str, mode: str, a: float, b: int) -> dict:
    out = sh(*in_ns(topo.client, sys.executable, "-c", LOAD, server, name, mode, str(a), str(b)))
    return json.loads(out)


def main() -> None:
    ensure_root()
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--queries", type=int, default=3000)
    ap.add_argument("--window", type=int, default=32)
    args = ap.parse_args()
    if not os.path.exists(AARDVARK):
        raise SystemExit(f"{AARDVARK} missing: apt-get install aardvark-dns")
    d = tempfile.mkdtemp(prefix="pyt-bench-dns-")
    topo = Topology()
    procs: list[subprocess.Popen[bytes]] = []
    ours_pid = 0
    try:
        procs.append(start_dnsmasq(topo, d))
        ours_pid = start_ours(topo, d)
        aard = start_aardvark(topo, d)
        procs.append(aard)
        servers = {"netctl": "127.0.0.11", "aardvark-dns": "10.120.0.1"}
        results: dict[tuple[str, str], dict] = {}
        for name, label in (("web", "local"), ("fwd.example.test", "forwarded")):
            for server in servers:  # warm up (caches, dnsmasq)
                load(topo, servers[server], name, "latency", 0, 200)
            for _round in range(2):
                for server, ip in servers.items():
                    lat = load(topo, ip, name, "latency", 0, args.queries)
                    qps = load(topo, ip, name, "throughput", args.seconds, args.window)
                    key = (server, label)
                    best = results.get(key)
                    if best is None or lat["p50"] < best["p50"]:
                        results[key] = {**lat, "qps": max(qps["qps"], (best or {}).get("qps", 0))}
                    else:
                        best["qps"] = max(best["qps"], qps["qps"])
        rows = [["name", "server", "p50 us", "p99 us", "queries/s", "fails", "rcode"]]
        for (server, label), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            rows.append(
                [label, server, f"{r['p50']:.0f}", f"{r['p99']:.0f}", f"{r['qps']:.0f}",
                 str(r["fails"]), str(r["rcode"])]
            )  # fmt: skip
        print(table(rows))
        print()
        print(
            table(
                [
                    ["server", "RSS KiB"],
                    ["netctl resolver (python, dnspython)", str(rss_kib(ours_pid))],
                    ["aardvark-dns 1.4 (rust)", str(rss_kib(aardvark_pid(d)))],
                ]
            )
        )
    finally:
        for pid in (ours_pid, aardvark_pid(d)):
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        topo.close()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
