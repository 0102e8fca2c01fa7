"""Chain benchmark: bridge + host-local + portmap, three ways side by side.

    .venv/bin/python bench/chain.py            # the full run (N=300 and N=1000, 10k mappings)
    .venv/bin/python bench/chain.py --quick    # a small run, a couple of minutes
    .venv/bin/python bench/chain.py -n 300 --parallel 8 --mappings 10000 --skip bridge-only

The three ways, each on a throwaway "node" namespace of its own (created here and
deleted at the end; nothing outside them is touched):
  reference   the Go plugins in /usr/lib/cni (bridge + host-local + portmap, ipMasq:
              iptables), exec'd per call
  standalone  ours, exec'd per call with PYCNI_AGENT=0 (the verb runs in the process)
  agent       ours, exec'd per call, handing the call to `netctl agent` (started here,
              in the root namespace, socket under a temporary directory)

Every container is its own netns. Calls are made as a runtime makes them: a fresh
process per plugin with CNI_* and the config on stdin, ADD bridge then portmap with
prevResult, DEL portmap then bridge with the cached result (libcni's order). Serial
runs interleave the three ways call by call, so machine noise hits all alike.

Sections (each prints a table): the chain over N containers, serial and P-way parallel;
bridge + host-local alone (issue 3); portmap at scale (issue 4): one mapping added with
10,000 present vs none, and first-packet latency (TCP connect) through DNAT with
10,000 mappings present vs none.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import REFERENCE_DIR, ensure_root, median, pct, table

from pycni import netns

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NETWORK = "benchnet"
BRIDGE = "cnibench0"
SUBNET = "10.200.0.0/16"
WAYS = ("reference", "standalone", "agent")


# -- processes -------------------------------------------------------------------------


class Proc:
    __slots__ = ("err", "ms", "out", "rc")

    def __init__(self, rc: int, out: bytes, err: bytes, ms: float) -> None:
        self.rc = rc
        self.out = out
        self.err = err
        self.ms = ms


def spawn(argv: list[str], env: dict[str, str], stdin: bytes = b"") -> Proc:
    """Start argv with env, feed stdin, collect output and the wall time. The child
    starts in the calling thread's network namespace."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    actions = [
        (os.POSIX_SPAWN_DUP2, in_r, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    readers = [out_r, err_r]
    view = memoryview(stdin)
    writers = [in_w] if stdin else []
    if not stdin:
        os.close(in_w)
    while readers or writers:
        r, w, _ = select.select(readers, writers, [])
        for fd in r:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                readers.remove(fd)
                os.close(fd)
        if w:
            try:
                view = view[os.write(in_w, view[:65536]) :]
            except BrokenPipeError:
                view = view[:0]
            if not view:
                writers.clear()
                os.close(in_w)
    _, status = os.waitpid(pid, 0)
    ms = (time.perf_counter() - t0) * 1000
    rc = os.waitstatus_to_exitcode(status)
    return Proc(rc, b"".join(chunks[out_r]), b"".join(chunks[err_r]), ms)


# -- namespaces ------------------------------------------------------------------------


class Sandbox:
    """Every namespace this benchmark creates, bind-mounted under a temporary run dir;
    `close()` removes them all (and with them every link, address and firewall rule)."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="pycni-bench-")
        self.dir = os.path.join(self.root, "netns")
        self.made: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def netns(self, name: str, lo: bool = True) -> str:
        path = os.path.join(self.dir, name)
        netns.create(path)
        self.made.append(path)
        if lo:
            with entered(path):
                run_ok(["ip", "link", "set", "lo", "up"])
        return path

    def drop(self, path: str) -> None:
        netns.remove(path)
        if path in self.made:
            self.made.remove(path)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for path in reversed(self.made):
            netns.remove(path)
        self.made.clear()
        shutil.rmtree(self.root, ignore_errors=True)


_ns_fds: dict[str, int] = {}
_ns_lock = threading.Lock()


@contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the block (and processes started in it) in the namespace at `path`; this
    thread only."""
    with _ns_lock:
        fd = _ns_fds.get(path)
        if fd is None:
            fd = _ns_fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with netns.entered(fd):
        yield


def forget_ns_fds() -> None:
    with _ns_lock:
        for fd in _ns_fds.values():
            os.close(fd)
        _ns_fds.clear()


# -- the three ways --------------------------------------------------------------------


class Way:
    """One way of running the plugins, on its own node namespace."""

    def __init__(self, name: str, bindir: str, work: str, env: dict[str, str]) -> None:
        self.name = name
        self.bindir = bindir
        self.cni_path = bindir
        self.work = work
        self.env = env
        self.node = ""  # node namespace path, set per section
        self.maxrss: dict[str, int] = {}
        # Peak RSS through /usr/bin/time (wait4's ru_maxrss of a posix_spawn'ed child
        # includes this benchmark's own memory, shared until exec).
        self.measure_rss = False

    def fresh(self, sandbox: Sandbox, tag: str) -> None:
        """A new node namespace and empty IPAM/state dirs for one section."""
        self.node = sandbox.netns(f"node-{self.name}-{tag}")
        self.data_dir = os.path.join(self.work, tag, "ipam")
        state = os.path.join(self.work, tag, "state")
        os.makedirs(state, exist_ok=True)
        if self.name != "reference":
            self.env = dict(self.env, PYCNI_STATE_DIR=state)

    def bridge_conf(self, masq: bool = True) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": True,
            "ipMasq": masq,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": SUBNET}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.data_dir,
            },
        }

    def call(self, plugin: str, command: str, conf: dict[str, Any], cid: str, ns: str) -> Proc:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": ns,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": self.cni_path,
            "PATH": PATH,
            **self.env,
        }
        argv = [os.path.join(self.bindir, plugin)]
        if self.measure_rss:
            argv = ["/usr/bin/time", "-f", "MAXRSS %M", *argv]
        with entered(self.node):
            proc = spawn(argv, env, json.dumps(conf).encode())
        if self.measure_rss:
            head, _, last = proc.err.rstrip().rpartition(b"\n")
            proc.err = head
            kb = int(last.split()[1]) if last.startswith(b"MAXRSS") else 0
            self.maxrss[plugin] = max(self.maxrss.get(plugin, 0), kb)
        if proc.rc != 0:
            raise RuntimeError(
                f"{self.name} {plugin} {command} {cid}: rc={proc.rc} {proc.out!r} {proc.err!r}"
            )
        return proc


def portmap_conf(prev: dict[str, Any], mappings: list[tuple[int, int]]) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "portmap",
        "snat": True,
        "runtimeConfig": {
            "portMappings": [
                {"hostPort": h, "containerPort": c, "protocol": "tcp"} for h, c in mappings
            ]
        },
        "prevResult": prev,
    }


class Container:
    __slots__ = ("cid", "index", "ns", "result")

    def __init__(self, index: int, ns: str) -> None:
        self.index = index
        self.cid = f"bench{index:05d}"
        self.ns = ns
        self.result: dict[str, Any] = {}


def host_ports(index: int) -> list[tuple[int, int]]:
    return [(20000 + 2 * index, 80), (20001 + 2 * index, 443)]


def chain_add(way: Way, c: Container, portmap: bool, ports: int = 2) -> float:
    """ADD of the chain for one container; returns the ms of all its plugin calls.
    `ports`: how many of the container's two host ports portmap publishes (0: portmap
    runs with no mappings, as for most pods)."""
    conf = way.bridge_conf()
    first = way.call("bridge", "ADD", conf, c.cid, c.ns)
    c.result = json.loads(first.out)
    took = first.ms
    if portmap:
        second = way.call(
            "portmap", "ADD", portmap_conf(c.result, host_ports(c.index)[:ports]), c.cid, c.ns
        )
        c.result = json.loads(second.out)
        took += second.ms
    return took


def chain_del(way: Way, c: Container, portmap: bool, ports: int = 2) -> float:
    took = 0.0
    if portmap:
        conf = portmap_conf(c.result, host_ports(c.index)[:ports])
        took += way.call("portmap", "DEL", conf, c.cid, c.ns).ms
    conf = way.bridge_conf()
    conf["prevResult"] = c.result
    took += way.call("bridge", "DEL", conf, c.cid, c.ns).ms
    return took


# -- the agent -------------------------------------------------------------------------


class AgentProc:
    def __init__(self, sandbox: Sandbox) -> None:
        self.socket = os.path.join(sandbox.root, "agent", "agent.sock")
        self.log = os.path.join(sandbox.root, "agent.log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pycni.runtime.cli",
                    "agent",
                    "--socket",
                    self.socket,
                    "--foreground",
                ],
                stdout=log,
                stderr=log,
                cwd=REPO,
            )
        sandbox.procs.append(self.proc)
        deadline = time.monotonic() + 60
        while not _listening(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log) as fh:
                    raise RuntimeError(f"the agent did not start: {fh.read()}")
            time.sleep(0.05)

    def memory(self) -> dict[str, int]:
        """kB: the parent's peak RSS, and the PSS of the parent plus its idle workers."""
        out = {"hwm": _status_kb(self.proc.pid, "VmHWM"), "pss": _pss_kb(self.proc.pid)}
        for child in _children(self.proc.pid):
            out["pss"] += _pss_kb(child)
        return out


def _listening(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- sections --------------------------------------------------------------------------


def rotate(items: list[Way], k: int) -> list[Way]:
    k %= len(items)
    return items[k:] + items[:k]


def serial(
    ways: list[Way], sandbox: Sandbox, n: int, tag: str, portmap: bool, ports: int = 2
) -> dict[str, Any]:
    """N containers per way, ADD then DEL, interleaved call by call across the ways."""
    stats: dict[str, dict[str, list[float]]] = {w.name: {"add": [], "del": []} for w in ways}
    containers: dict[str, list[Container]] = {}
    for way in ways:
        way.fresh(sandbox, tag)
        containers[way.name] = [
            Container(i, sandbox.netns(f"c-{way.name}-{tag}-{i}", lo=False)) for i in range(n)
        ]
    for i in range(n):
        for way in rotate(ways, i):
            stats[way.name]["add"].append(chain_add(way, containers[way.name][i], portmap, ports))
        progress(f"{tag}: ADD {i + 1}/{n}")
    for i in range(n):
        for way in rotate(ways, i):
            stats[way.name]["del"].append(chain_del(way, containers[way.name][i], portmap, ports))
        progress(f"{tag}: DEL {i + 1}/{n}")
    for way in ways:
        for c in containers[way.name]:
            sandbox.drop(c.ns)
    progress("")
    return stats


def parallel(
    ways: list[Way], sandbox: Sandbox, n: int, workers: int, tag: str
) -> dict[str, dict[str, float]]:
    """Each way on its own: N chain ADDs by `workers` threads, then N DELs; wall times."""
    out: dict[str, dict[str, float]] = {}
    for way in ways:
        way.fresh(sandbox, tag)
        containers = [
            Container(i, sandbox.netns(f"p-{way.name}-{tag}-{i}", lo=False)) for i in range(n)
        ]
        walls = {}
        lat: dict[str, list[float]] = {"add": [], "del": []}
        for verb, fn in (("add", chain_add), ("del", chain_del)):
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                lat[verb] = list(pool.map(lambda c, fn=fn, way=way: fn(way, c, True), containers))
            walls[verb] = time.perf_counter() - t0
            progress(f"{tag}: {way.name} parallel {verb} {walls[verb]:.1f}s")
        for c in containers:
            sandbox.drop(c.ns)
        out[way.name] = {
            "add_wall": walls["add"],
            "del_wall": walls["del"],
            "add_p50": median(lat["add"]),
            "add_p90": pct(lat["add"], 90),
        }
    progress("")
    return out


def rss(ways: list[Way], sandbox: Sandbox, n: int = 5) -> None:
    """Peak RSS of the plugin processes over n chain ADD/DELs per way."""
    for way in ways:
        way.fresh(sandbox, "rss")
        way.measure_rss = True
        containers = [Container(i, sandbox.netns(f"r-{way.name}-{i}", lo=False)) for i in range(n)]
        for c in containers:
            chain_add(way, c, portmap=True)
        for c in containers:
            chain_del(way, c, portmap=True)
            sandbox.drop(c.ns)
        way.measure_rss = False


def growth(values: list[float]) -> float:
    tenth = max(1, len(values) // 10)
    return median(values[-tenth:]) / median(values[:tenth])


# -- portmap at scale ------------------------------------------------------------------

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""


def start_server(sandbox: Sandbox, ns: str, port: int) -> None:
    proc = subprocess.Popen(
        ["nsenter", f"--net={ns}", sys.executable, "-c", SERVER, str(port)],
        stdout=subprocess.PIPE,
    )
    sandbox.procs.append(proc)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("the server in the container did not start")


def outside(sandbox: Sandbox, way: Way, tag: str) -> tuple[str, str]:
    """An 'outside' namespace wired to the node with a veth; returns (ns, node address)."""
    ns = sandbox.netns(f"out-{way.name}-{tag}")
    node_if, out_if = f"bo{way.name[:3]}", "eth0"
    with entered(way.node):
        for cmd in (
            ["ip", "link", "add", node_if, "type", "veth", "peer", "name", out_if, "netns", ns],
            ["ip", "addr", "add", "192.168.251.1/24", "dev", node_if],
            ["ip", "link", "set", node_if, "up"],
        ):
            run_ok(cmd)
    with entered(ns):
        for cmd in (
            ["ip", "addr", "add", "192.168.251.2/24", "dev", out_if],
            ["ip", "link", "set", out_if, "up"],
            ["ip", "route", "add", SUBNET, "via", "192.168.251.1"],
        ):
            run_ok(cmd)
    return ns, "192.168.251.1"


def run_ok(cmd: list[str]) -> None:
    proc = spawn([shutil.which(cmd[0]) or cmd[0], *cmd[1:]], {"PATH": PATH})
    if proc.rc != 0:
        raise RuntimeError(f"{cmd}: {proc.err!r}")


def connect_latency(ns: str, address: str, port: int, count: int) -> list[float]:
    """TCP connect() times in µs (SYN out, SYN-ACK back: the first packet of a new
    connection, which is the one that walks the NAT rules), from namespace `ns`."""
    out: list[float] = []
    result: list[BaseException] = []

    def work() -> None:
        try:
            with entered(ns):
                linger = (1).to_bytes(4, sys.byteorder) + (0).to_bytes(4, sys.byteorder)
                for _ in range(count):
                    s = socket.socket()
                    # RST on close: no TIME_WAIT pile-up over thousands of connections
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    t0 = time.perf_counter()
                    s.connect((address, port))
                    out.append((time.perf_counter() - t0) * 1e6)
                    s.close()
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if result:
        raise result[0]
    return out


def fake_prev(index: int) -> dict[str, Any]:
    """A bridge result for a container that exists only on paper (portmap needs the
    address; the kernel never sees it)."""
    a, b = divmod(index + 2, 250)
    return {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": BRIDGE, "mac": "02:00:00:00:00:01"},
            {"name": f"vethfake{index}", "mac": "02:00:00:00:00:02"},
            {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/nonexistent"},
        ],
        "ips": [{"interface": 2, "address": f"10.200.{100 + a}.{b + 1}/16"}],
    }


def portmap_scale(
    sandbox: Sandbox,
    ref: Way,
    ours: list[Way],
    total: int,
    per_call: int,
    reps: int,
    connects: int,
) -> dict[str, Any]:
    """One mapping added with `total` mappings present vs none, and DNAT connect latency
    likewise. Two nodes per data plane, one empty and one filled, so that every
    measurement alternates between them (machine noise hits both alike)."""
    ways = [ref, *ours]
    planes = [ref, ours[0]]  # ours: one data plane, whichever way its rules were made
    nodes: dict[tuple[str, str], tuple[str, str, dict[str, str]]] = {}
    probes: dict[tuple[str, str], tuple[str, str]] = {}

    def use(way: Way, which: str) -> None:
        plane = ref if way is ref else ours[0]
        way.node, way.data_dir, env = nodes[(plane.name, which)]
        if way is not ref:
            way.env = dict(way.env, PYCNI_STATE_DIR=env["PYCNI_STATE_DIR"])

    for way in planes:
        for which in ("empty", "full"):
            tag = f"scale-{which}"
            way.fresh(sandbox, tag)
            nodes[(way.name, which)] = (way.node, way.data_dir, dict(way.env))
            c = Container(0, sandbox.netns(f"s-{way.name}-{which}"))
            chain_add(way, c, portmap=False)
            way.call("portmap", "ADD", portmap_conf(c.result, [(8080, 80)]), c.cid, c.ns)
            start_server(sandbox, c.ns, 80)
            probes[(way.name, which)] = outside(sandbox, way, tag)
    calls = total // per_call  # (paper) containers of per_call mappings each
    results: dict[str, Any] = {w.name: {} for w in ways}
    for way in (ref, ours[-1]):  # ours filled through the agent: the same node, faster
        use(way, "full")
        t0 = time.perf_counter()
        for k in range(calls):
            maps = [(10000 + k * per_call + j, 80) for j in range(per_call)]
            conf = portmap_conf(fake_prev(k), maps)
            way.call("portmap", "ADD", conf, f"fill{k}", "/nonexistent")
            if k % 10 == 0:
                progress(f"scale: {way.name} {k * per_call}/{total} mappings")
        results[way.name]["fill_s"] = time.perf_counter() - t0
    for w in ours[:-1]:
        results[w.name]["fill_s"] = results[ours[-1].name]["fill_s"]
    progress("add one mapping, alternating between the empty and the full node")
    adds: dict[tuple[str, str], list[float]] = {}
    for r in range(reps):
        for way in rotate(ways, r):
            for which in ("empty", "full") if r % 2 else ("full", "empty"):
                use(way, which)
                conf = portmap_conf(fake_prev(calls + r), [(9000 + r, 80)])
                took = way.call("portmap", "ADD", conf, f"probe{r}", "/nonexistent").ms
                adds.setdefault((way.name, which), []).append(took)
                way.call("portmap", "DEL", conf, f"probe{r}", "/nonexistent")
    for (name, which), times in adds.items():
        results[name][f"add_{which}"] = median(times)
    progress("connect latency, alternating between the empty and the full node")
    batch = 250
    lats: dict[tuple[str, str], list[float]] = {}
    for ns, address in probes.values():
        connect_latency(ns, address, 8080, 200)  # warm-up: caches, neighbours, conntrack
    for r in range(max(1, connects // batch)):
        for key in probes if r % 2 else reversed(list(probes)):
            ns, address = probes[key]
            lats.setdefault(key, []).extend(connect_latency(ns, address, 8080, batch))
    for (name, which), values in lats.items():
        results[name][f"lat_{which}"] = median(values)
    progress("")
    return results


def progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{text}")
        sys.stderr.flush()
    elif text:
        sys.stderr.write(text + "\n")


# -- the report ------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report_serial(title: str, stats: dict[str, Any], ways: list[Way]) -> None:
    print(f"\n## {title}\n")
    rows = [["way", "ADD p50", "ADD p90", "DEL p50", "DEL p90", "growth", "ADD/ref", "DEL/ref"]]
    ref = stats["reference"]
    for way in ways:
        s = stats[way.name]
        rows.append(
            [
                way.name,
                f"{median(s['add']):.1f} ms",
                f"{pct(s['add'], 90):.1f} ms",
                f"{median(s['del']):.1f} ms",
                f"{pct(s['del'], 90):.1f} ms",
                f"{growth(s['add']):.2f}x",
                ratio(median(s["add"]), median(ref["add"])),
                ratio(median(s["del"]), median(ref["del"])),
            ]
        )
    print(table(rows))


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as fh:
        mem = int(fh.readline().split()[1]) // 1024
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} x {cpu}, {mem} MiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}, load average at start {load[0]:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, action="append", help="containers per way (repeatable)")
    ap.add_argument("--parallel", type=int, default=8, help="threads of the parallel run")
    ap.add_argument(
        "--mappings", type=int, default=10000, help="mappings present at scale (<= 50000)"
    )
    ap.add_argument(
        "--per-container", type=int, default=20, help="mappings per container when filling"
    )
    ap.add_argument("--reps", type=int, default=15, help="samples of one added mapping")
    ap.add_argument(
        "--connects", type=int, default=10000, help="connects per latency sample (node)"
    )
    ap.add_argument("--bridge-n", type=int, default=300, help="containers, bridge-only run")
    ap.add_argument("--quick", action="store_true", help="small sizes: a couple of minutes")
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["chain", "parallel", "bridge-only", "portmap"],
        help="leave a section out (repeatable)",
    )
    opts = ap.parse_args()
    sizes = opts.n or ([40] if opts.quick else [300, 1000])
    if opts.quick:
        opts.mappings, opts.reps, opts.connects, opts.bridge_n = 1000, 7, 1000, 40
    ensure_root()
    sandbox = Sandbox()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        run(sandbox, opts, sizes)
    finally:
        forget_ns_fds()
        sandbox.close()


def standard_ways(sandbox: Sandbox, agent: bool = True) -> tuple[list[Way], AgentProc | None]:
    """Our plugins installed into the sandbox, and the three ways the benchmarks compare:
    the reference binaries, ours exec'd standalone (PYCNI_AGENT=0), ours handing calls
    to an agent started here (its socket in the sandbox). On-demand agents stay off."""
    bindir = os.path.join(sandbox.root, "bin")
    subprocess.run(
        [sys.executable, "-m", "pycni.runtime.cli", "plugins", "install", "--dir", bindir],
        check=True,
        capture_output=True,
        cwd=REPO,
        env=dict(os.environ, PYCNI_AGENT_AUTOSTART="0"),
    )
    ways = [
        Way("reference", REFERENCE_DIR, os.path.join(sandbox.root, "ref"), {}),
        Way("standalone", bindir, os.path.join(sandbox.root, "alone"), {"PYCNI_AGENT": "0"}),
    ]
    proc = AgentProc(sandbox) if agent else None
    if proc is not None:
        ways.append(
            Way(
                "agent",
                bindir,
                os.path.join(sandbox.root, "agent-way"),
                {"PYCNI_AGENT_SOCKET": proc.socket},
            )
        )
    return ways, proc


def print_header(title: str) -> None:
    print(f"# {title}\n")
    print(f"machine: {machine()}")
    print(f"command: {' '.join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])}")


def run(sandbox: Sandbox, opts: argparse.Namespace, sizes: list[int]) -> None:
    ways, agent = standard_ways(sandbox)
    assert agent is not None
    print_header("pycni chain benchmark")
    started = time.perf_counter()
    if "chain" not in opts.skip:
        for n in sizes:
            stats = serial(ways, sandbox, n, f"chain{n}", portmap=True)
            report_serial(
                f"bridge + host-local + portmap (2 mappings), N={n}, serial, interleaved",
                stats,
                ways,
            )
    if "parallel" not in opts.skip:
        for n in sizes:
            par = parallel(ways, sandbox, n, opts.parallel, f"par{n}")
            print(f"\n## the same chain, N={n}, {opts.parallel} in parallel\n")
            rows = [["way", "ADD wall", "DEL wall", "ADD p50", "ADD p90", "ADD wall/ref"]]
            for way in ways:
                p = par[way.name]
                rows.append(
                    [
                        way.name,
                        f"{p['add_wall']:.1f} s",
                        f"{p['del_wall']:.1f} s",
                        f"{p['add_p50']:.1f} ms",
                        f"{p['add_p90']:.1f} ms",
                        ratio(p["add_wall"], par["reference"]["add_wall"]),
                    ]
                )
            print(table(rows))
    rss(ways, sandbox)
    print("\n## peak RSS of one plugin process (/usr/bin/time %M), and the agent\n")
    rows = [["way", "bridge", "portmap"]]
    for way in ways:
        rows.append(
            [
                way.name,
                f"{way.maxrss.get('bridge', 0) / 1024:.1f} MiB",
                f"{way.maxrss.get('portmap', 0) / 1024:.1f} MiB",
            ]
        )
    print(table(rows))
    mem = agent.memory()
    print(
        f"agent: parent peak RSS {mem['hwm'] / 1024:.1f} MiB; "
        f"PSS of parent + idle workers {mem['pss'] / 1024:.1f} MiB"
    )
    if "bridge-only" not in opts.skip:
        stats = serial(ways, sandbox, opts.bridge_n, "bridge", portmap=False)
        report_serial(
            f"bridge + host-local only (ipMasq), N={opts.bridge_n}, serial, interleaved",
            stats,
            ways,
        )
    if "portmap" not in opts.skip:
        res = portmap_scale(
            sandbox,
            ways[0],
            ways[1:],
            opts.mappings,
            opts.per_container,
            opts.reps,
            opts.connects,
        )
        print(
            f"\n## portmap at scale: {opts.mappings} mappings present "
            f"({opts.per_container} per container) vs none\n"
        )
        rows = [
            [
                "way",
                "add 1 (none)",
                f"add 1 ({opts.mappings})",
                "ratio",
                f"fill {opts.mappings}",
                "connect (none)",
                f"connect ({opts.mappings})",
                "delta",
            ]
        ]
        for way in ways:
            r = res[way.name]
            plane = r if "lat_empty" in r else res["standalone"]
            rows.append(
                [
                    way.name,
                    f"{r['add_empty']:.1f} ms",
                    f"{r['add_full']:.1f} ms",
                    ratio(r["add_full"], r["add_empty"]),
                    f"{r['fill_s']:.0f} s",
                    f"{plane['lat_empty']:.1f} µs",
                    f"{plane['lat_full']:.1f} µs",
                    f"{plane['lat_full'] - plane['lat_empty']:+.1f} µs",
                ]
            )
        print(table(rows))
        print("(connect: median TCP connect() from an outside namespace to node:8080, DNAT to")
        print(f" a container; {opts.connects} connections per node, in batches alternating")
        print(" between the empty and the full node; ours: one data plane for both ways)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
