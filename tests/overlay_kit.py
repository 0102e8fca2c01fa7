"""Multi-host topology for the overlay tests: "hosts" and etcd members are namespaces on
one underlay bridge (itself in a throwaway namespace), etcd is Debian's etcd-server 3.4
started by the test with its data under the test's tmp dir and stopped by PID.

    underlay ns (bridge "ul", no address)
      |-- veth -- etcd member ns e1 (192.0.2.11)   etcd --name m1 ...
      |-- veth -- etcd member ns e2 (192.0.2.12)
      |-- veth -- etcd member ns e3 (192.0.2.13)
      |-- veth -- host ns h1 (192.0.2.101, ul0)    NETCTL_ROOT / PYCNI_STATE_DIR of its own
      |-- veth -- host ns h2 (192.0.2.102, ul0)
      ...

192.0.2.0/24 is TEST-NET-1: it exists only inside these namespaces.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import WORKER_PREFIX, Netns, sh, short_id

UNDERLAY_PREFIX = "192.0.2"
CLIENT_PORT = 2379
PEER_PORT = 2380


def make_netns(kind: str) -> Netns:
    ns = Netns(f"{WORKER_PREFIX}{kind}-{short_id(8)}")
    sh("ip", "netns", "add", ns.name)
    sh("ip", "-n", ns.name, "link", "set", "lo", "up")
    return ns


@dataclass
class Underlay:
    """The shared L2 segment every host and etcd member sits on."""

    ns: Netns
    members: list[Netns] = field(default_factory=list)
    _n: int = 0

    @classmethod
    def create(cls) -> Underlay:
        ns = make_netns("u")
        ns.run("ip", "link", "add", "ul", "type", "bridge")
        ns.run("ip", "link", "set", "ul", "up")
        return cls(ns)

    def attach(self, kind: str, address: str) -> Netns:
        """A new namespace with `ul0` (address/24) plugged into the underlay bridge."""
        node = make_netns(kind)
        self._n += 1
        port = f"p{self._n}"
        sh("ip", "link", "add", "ul0", "netns", node.name, "type", "veth",
           "peer", "name", port, "netns", self.ns.name)  # fmt: skip
        self.ns.run("ip", "link", "set", port, "master", "ul", "up")
        node.run("ip", "addr", "add", f"{address}/24", "dev", "ul0")
        node.run("ip", "link", "set", "ul0", "up")
        self.members.append(node)
        return node

    def destroy(self) -> None:
        for node in [*self.members, self.ns]:
            sh("ip", "netns", "del", node.name, check=False)


@dataclass
class EtcdMember:
    name: str
    ns: Netns
    ip: str
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    tls: Path | None = None  # directory with ca.crt, <name>.crt/.key, client.crt/.key

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.ip}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:{PEER_PORT}"


@dataclass
class EtcdCluster:
    """A real etcd cluster (Debian etcd-server) on the underlay; each member in its own
    namespace, started and stopped (by PID) by the test."""

    members: list[EtcdMember]
    token: str

    @property
    def endpoints(self) -> str:
        """Docker's cluster-store spelling: etcd://ip:port,ip:port,..."""
        return "etcd://" + ",".join(f"{m.ip}:{CLIENT_PORT}" for m in self.members)

    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def start(self, member: EtcdMember, state: str = "new") -> None:
        assert member.proc is None or member.proc.poll() is not None
        member.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            "ip", "netns", "exec", member.ns.name, "etcd",
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", self.initial_cluster(),
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            "--logger", "zap",
            "--log-outputs", str(member.log),
        ]  # fmt: skip
        if member.tls is not None:
            cmd += [
                "--cert-file", str(member.tls / f"{member.name}.crt"),
                "--key-file", str(member.tls / f"{member.name}.key"),
                "--trusted-ca-file", str(member.tls / "ca.crt"), "--client-cert-auth",
            ]  # fmt: skip
        # `ip netns exec` execs etcd itself, so this PID is etcd's.
        member.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self, member: EtcdMember, sig: int = signal.SIGTERM) -> None:
        if member.proc is None or member.proc.poll() is not None:
            return
        os.kill(member.proc.pid, sig)
        try:
            member.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(member.proc.pid, signal.SIGKILL)
            member.proc.wait(10)

    def tls_args(self) -> list[str]:
        tls = self.members[0].tls
        if tls is None:
            return []
        return ["--cacert", str(tls / "ca.crt"), "--cert", str(tls / "client.crt"),
                "--key", str(tls / "client.key")]  # fmt: skip

    def store_opts(self) -> dict[str, str]:
        tls = self.members[0].tls
        assert tls is not None
        return {"kv.cacertfile": str(tls / "ca.crt"), "kv.certfile": str(tls / "client.crt"),
                "kv.keyfile": str(tls / "client.key")}  # fmt: skip

    def etcdctl(self, *args: str, via: EtcdMember | None = None, check: bool = True) -> str:
        m = via or next(m for m in self.members if m.proc and m.proc.poll() is None)
        endpoints = ",".join(m.client_url for m in self.members if m.proc and m.proc.poll() is None)
        return m.ns.run(
            "env", "ETCDCTL_API=3", "etcdctl", "--endpoints", endpoints,
            "--dial-timeout", "2s", "--command-timeout", "3s", *self.tls_args(), *args,
            check=check, timeout=20,
        )  # fmt: skip

    def get_prefix(self, prefix: str) -> dict[str, Any]:
        out = self.etcdctl("get", "--prefix", prefix, "-w", "json")
        kvs = json.loads(out).get("kvs", [])
        import base64

        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in kvs
        }

    def wait_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None:
                    raise AssertionError(f"etcd {m.name} exited: {m.log.read_text()[-2000:]}")
            proc = subprocess.run(
                ["ip", "netns", "exec", self.members[0].ns.name, "env", "ETCDCTL_API=3",
                 "etcdctl", "--endpoints", self.members[0].client_url, "--dial-timeout", "1s",
                 "--command-timeout", "1s", *self.tls_args(), "put", "/pycni-health", "ok"],
                capture_output=True, timeout=10,
            )  # fmt: skip
            if proc.returncode == 0:
                return
            last = proc.stderr.decode()
            time.sleep(0.1)
        raise AssertionError(f"etcd cluster not healthy after {timeout}s: {last}")

    def destroy(self) -> None:
        for m in self.members:
            self.stop(m)


def make_ca(directory: Path, members: list[tuple[str, str]]) -> None:
    """A CA made here with openssl, a server certificate per member (IP SAN) and a client
    certificate: everything TLS to etcd needs, valid for a day, under the test's tmp dir."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-keyout", str(directory / "ca.key"),
       "-out", str(directory / "ca.crt"), "-days", "1", "-subj", "/CN=pycni-test-ca")  # fmt: skip
    for name, ip in [*members, ("client", "")]:
        sh("openssl", "req", *ec, "-keyout", str(directory / f"{name}.key"),
           "-out", str(directory / f"{name}.csr"), "-subj", f"/CN={name}")  # fmt: skip
        ext = directory / f"{name}.ext"
        usage = "serverAuth,clientAuth" if ip else "clientAuth"
        ext.write_text((f"subjectAltName=IP:{ip}\n" if ip else "") + f"extendedKeyUsage={usage}\n")
        sh("openssl", "x509", "-req", "-in", str(directory / f"{name}.csr"),
           "-CA", str(directory / "ca.crt"), "-CAkey", str(directory / "ca.key"),
           "-CAcreateserial", "-out", str(directory / f"{name}.crt"), "-days", "1",
           "-extfile", str(ext))  # fmt: skip


def start_etcd(underlay: Underlay, tmp: Path, size: int = 3, tls: bool = False) -> EtcdCluster:
    members = []
    tls_dir = tmp / "tls" if tls else None
    for i in range(1, size + 1):
        ip = f"{UNDERLAY_PREFIX}.{10 + i}"
        ns = underlay.attach("e", ip)
        members.append(
            EtcdMember(f"m{i}", ns, ip, tmp / f"etcd-m{i}", tmp / f"etcd-m{i}.log", tls=tls_dir)
        )
    if tls_dir is not None:
        make_ca(tls_dir, [(m.name, m.ip) for m in members])
    cluster = EtcdCluster(members, f"pyt-{short_id(8)}")
    for m in members:
        cluster.start(m)
    cluster.wait_healthy()
    return cluster


# -- hosts -------------------------------------------------------------------------------


@dataclass
class Host:
    """A "host": a namespace on the underlay with its own PYCNI_STATE_DIR and NETCTL_ROOT."""

    ns: Netns
    ip: str
    state_dir: Path
    netctl_root: Path

    def env(self) -> dict[str, str]:
        return {"PYCNI_STATE_DIR": str(self.state_dir), "NETCTL_ROOT": str(self.netctl_root)}

    def agent_pids(self) -> list[int]:
        pids = []
        for f in self.state_dir.glob("overlay/*/agent.pid"):
            try:
                pids.append(int(f.read_text().strip()))
            except ValueError:
                continue
        return [p for p in pids if _alive(p)]

    def kill_agents(self, sig: int = signal.SIGKILL) -> None:
        for pid in self.agent_pids():
            os.kill(pid, sig)
            _wait_gone(pid)

    def lease(self, network: str) -> dict[str, Any]:
        return json.loads((self.state_dir / "overlay" / network / "subnet.json").read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours (Popen child) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def make_host(underlay: Underlay, tmp: Path, n: int) -> Host:
    ip = f"{UNDERLAY_PREFIX}.{100 + n}"
    ns = underlay.attach("h", ip)
    ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    base = tmp / f"host{n}"
    state, root = base / "state", base / "root"
    state.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    return Host(ns, ip, state, root)


def put_network(cluster: EtcdCluster, name: str, subnet: str, vni: int, subnet_len: int = 24,
                internal: bool = False) -> None:  # fmt: skip
    spec = {"Name": name, "Network": subnet, "SubnetLen": subnet_len, "VNI": vni, "MTU": 0,
            "Internal": internal, "IPRange": ""}  # fmt: skip
    cluster.etcdctl("put", f"/pycni/overlay/networks/{name}", json.dumps(spec, sort_keys=True))


NETCTL = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "netctl"


def write_daemon_json(host: Host, cluster: EtcdCluster, **extra: Any) -> None:
    d = host.netctl_root / "etc" / "netctl"
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"cluster-store": cluster.endpoints, "cluster-advertise": "ul0"}
    cfg.update(extra)
    (d / "daemon.json").write_text(json.dumps(cfg))


def netctl(host: Host, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # the plugins netctl installs must not start the machine's agent (/run/pycni)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYCNI_AGENT_AUTOSTART": "0", **host.env()}
    proc = subprocess.run(
        ["ip", "netns", "exec", host.ns.name, str(NETCTL), *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"netctl {' '.join(args)} failed: {proc.stderr}{proc.stdout}")
    return proc
