"""containerd's CRI plugin (the kubelet's path to CNI) drives our plugins.

A real containerd 1.6 (Debian's), started by the test in a throwaway host namespace
with its own root, state, socket, netns mounts, CNI config and leases, is driven over
CRI as the kubelet drives it: RunPodSandbox with and without a hostPort,
PodSandboxStatus, StopPodSandbox, RemovePodSandbox, and a containerd restart between
Run and Stop. The reference plugins run through the same test as the control. After
every pod is gone nothing is left: no veth, no lease, no firewall entry, no netns.

containerd sends portMappings as Go-spelled keys ({"HostPort":...}); before our
plugins read keys as Go does, the hostPort pod failed ADD and then every DEL, and the
sandbox could never be removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REFERENCE_DIR, Netns, _delete_netns, _make_netns
from tests.cri import Containerd, conflist, mounts_under
from tests.traffic import connect, wire_outside

pytestmark = pytest.mark.root


class Node:
    def __init__(
        self, kind: str, host: Netns, outside: Netns, cd: Containerd, leases: Path
    ) -> None:
        self.kind, self.host, self.outside, self.cd, self.leases = kind, host, outside, cd, leases

    def lease_files(self) -> list[str]:
        d = self.leases / "k8s-pod-network"
        return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []

    def host_veths(self) -> list[str]:
        return [
            x["ifname"]
            for x in self.host.ip_json("link", "show", "type", "veth")
            if x["ifname"] != "up0"
        ]

    def firewall_entries(self) -> list[str]:
        """Our nft elements, or the reference's per-container iptables chains."""
        found = []
        for item in self.host.nft_json().get("nftables", []):
            for kind in ("set", "map"):
                obj = item.get(kind)
                if obj and obj.get("table") == "pycni" and obj.get("elem"):
                    found.append(f"{obj['name']}: {obj['elem']}")
        for line in self.host.run("iptables-save", check=False).splitlines():
            if line.startswith(":CNI-") and not line.startswith(
                (":CNI-HOSTPORT-", ":CNI-FORWARD", ":CNI-ADMIN")
            ):
                found.append(line)
            if "-A CNI-HOSTPORT-DNAT" in line or (
                "-A CNI-HOSTPORT-SETMARK" in line and "--dport" in line
            ):
                found.append(line)
        return found

    def pod_netns_mounts(self) -> list[str]:
        d = self.cd.dir / "state"
        return [str(p) for p in d.rglob("cni-*") if p.is_file()] if d.exists() else []

    def assert_clean(self) -> None:
        assert self.lease_files() == [], self.lease_files()
        assert self.host_veths() == [], self.host_veths()
        assert self.firewall_entries() == [], self.firewall_entries()


@pytest.fixture(scope="module", params=["ours", "reference"])
def node(request, plugin_dir: Path, tmp_path_factory) -> Iterator[Node]:
    kind = request.param
    work = tmp_path_factory.mktemp(f"containerd-{kind}")
    host, outside = _make_netns("h"), _make_netns("c")
    cd = None
    try:
        wire_outside(host, outside)
        leases = work / "leases"
        bin_dir = str(plugin_dir if kind == "ours" else REFERENCE_DIR)
        env = {
            # our plugins' own state and agent socket stay under the test's directory
            "PYCNI_STATE_DIR": str(work / "pycni-state"),
            "PYCNI_AGENT_SOCKET": str(work / "agent.sock"),
        }
        cd = Containerd(host.path, bin_dir, conflist(leases), env)
        cd.start()
        yield Node(kind, host, outside, cd, leases)
    finally:
        if cd is not None:
            cd.stop()
            # containerd, its shims and the mount namespace they shared are gone
            assert not cd.shim_pids() and cd.proc is None and cd.holder is None
            assert not mounts_under(cd.dir) and not cd.dir.exists()
        _delete_netns(host)
        _delete_netns(outside)


def pod_ip(node: Node, pod: str) -> str:
    status, _info = node.cd.pod_status(pod)
    assert status.state == node.cd.pb.SANDBOX_READY
    return str(status.network.ip)


def serve_in_pod(node: Node, pod: str, port: int) -> Any:
    """A TCP responder inside the pod's network namespace (containerd's own netns mount)."""
    import subprocess
    import sys

    from tests.traffic import _TCP_SERVER

    netns = node.cd.pod_netns(pod)
    proc = subprocess.Popen(
        node.cd.in_mounts(
            "nsenter",
            f"--net={netns}",
            sys.executable,
            "-c",
            _TCP_SERVER,
            "0.0.0.0",
            str(port),
            "pod",
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_pod_with_host_port_runs_serves_stops_and_leaves_nothing(node: Node) -> None:
    pod = node.cd.run_pod(f"web-{node.kind}", ports=[(18480, 8080)])
    ip = pod_ip(node, pod)
    assert ip.startswith("10.88.")
    assert len(node.lease_files()) == 1 and len(node.host_veths()) == 1
    server = serve_in_pod(node, pod, 8080)
    try:
        # from the LAN through the published port (the client's own address is kept)
        assert connect(node.outside, "198.18.0.1", 18480) == "pod 198.18.0.2"
        # the pod's address directly from the node
        assert (connect(node.host, ip, 8080) or "").startswith("pod ")
    finally:
        server.kill()
        server.wait()
    node.cd.stop_pod(pod)
    node.assert_clean()
    assert connect(node.outside, "198.18.0.1", 18480, timeout=1) is None
    node.cd.remove_pod(pod)
    assert node.cd.list_pods() == []
    assert node.pod_netns_mounts() == []


def test_pods_without_ports(node: Node) -> None:
    pods = [node.cd.run_pod(f"plain{i}-{node.kind}") for i in range(3)]
    ips = [pod_ip(node, p) for p in pods]
    assert len(set(ips)) == 3 and len(node.lease_files()) == 3
    for p in pods:
        node.cd.stop_pod(p)
        node.cd.remove_pod(p)
    node.assert_clean()
    assert node.pod_netns_mounts() == []


def test_containerd_restart_then_stop(node: Node) -> None:
    """A pod outlives a containerd restart; Stop after the restart tears its network
    down from containerd's saved state (the CNI result cache) alone."""
    pod = node.cd.run_pod(f"survivor-{node.kind}", ports=[(18481, 8080)])
    ip = pod_ip(node, pod)
    node.cd.kill()
    node.cd.start()
    assert pod_ip(node, pod) == ip
    node.cd.stop_pod(pod)
    node.cd.remove_pod(pod)
    node.assert_clean()
    assert node.pod_netns_mounts() == []


def test_kubelet_style_retry_of_stop_and_remove_is_harmless(node: Node) -> None:
    pod = node.cd.run_pod(f"retry-{node.kind}", ports=[(18482, 8080)])
    for _ in range(2):
        node.cd.stop_pod(pod)
    node.cd.remove_pod(pod)
    node.cd.remove_pod(pod)  # the kubelet retries; a gone sandbox is removed already
    node.assert_clean()
