"""containerd's CRI plugin (the kubelet's path to CNI) drives our macvlan, as Multus
users chain it: a node whose /etc/cni/net.d holds macvlan + host-local on a LAN
interface. Pods get addresses on the LAN, a LAN neighbour reaches a pod directly, and
after Stop/Remove nothing is left (no link, no lease). The reference plugins run the
same test as the control."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REFERENCE_DIR, Netns, _delete_netns, _make_netns
from tests.cri import Containerd, mounts_under
from tests.integration.test_containerd import serve_in_pod
from tests.traffic import connect

pytestmark = pytest.mark.root
NETWORK = "k8s-lan"
OUTSIDE = "10.98.0.1"


def lan_conflist(leases: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "macvlan",
                "master": "mst0",
                "mode": "bridge",
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.98.0.0/24", "gateway": OUTSIDE}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(leases),
                },
            }
        ],
    }


class LanNode:
    def __init__(self, kind: str, host: Netns, lan: Netns, cd: Containerd, leases: Path) -> None:
        self.kind, self.host, self.lan, self.cd, self.leases = kind, host, lan, cd, leases

    def lease_files(self) -> list[str]:
        d = self.leases / NETWORK
        return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []


@pytest.fixture(scope="module", params=["ours", "reference"])
def lan_node(request, plugin_dir: Path, tmp_path_factory) -> Iterator[LanNode]:
    kind = request.param
    work = tmp_path_factory.mktemp(f"containerd-mv-{kind}")
    host, lan = _make_netns("h"), _make_netns("c")
    cd = None
    try:
        host.run("ip", "link", "add", "mst0", "type", "veth", "peer", "name", "up0",
                 "netns", lan.name)  # fmt: skip
        host.run("ip", "link", "set", "mst0", "up")
        lan.run("ip", "addr", "add", f"{OUTSIDE}/24", "dev", "up0")
        lan.run("ip", "link", "set", "up0", "up")
        leases = work / "leases"
        env = {
            "PYCNI_STATE_DIR": str(work / "pycni-state"),
            "PYCNI_AGENT_SOCKET": str(work / "agent.sock"),
        }
        bin_dir = str(plugin_dir if kind == "ours" else REFERENCE_DIR)
        cd = Containerd(host.path, bin_dir, lan_conflist(leases), env)
        cd.start()
        yield LanNode(kind, host, lan, cd, leases)
    finally:
        if cd is not None:
            cd.stop()
            assert not cd.shim_pids() and cd.proc is None and cd.holder is None
            assert not mounts_under(cd.dir) and not cd.dir.exists()
        _delete_netns(host)
        _delete_netns(lan)


def test_pods_on_the_lan(lan_node: LanNode) -> None:
    node = lan_node
    pods = [node.cd.run_pod(f"lan{i}-{node.kind}") for i in range(2)]
    ips = []
    for pod in pods:
        status, _info = node.cd.pod_status(pod)
        assert status.state == node.cd.pb.SANDBOX_READY
        ips.append(str(status.network.ip))
    assert all(ip.startswith("10.98.0.") for ip in ips) and len(set(ips)) == 2
    assert node.lease_files() == sorted(ips)
    server = serve_in_pod(node, pods[0], 8080)  # type: ignore[arg-type]
    try:
        # a LAN neighbour reaches the pod on its own address; the pod sees the neighbour's
        assert connect(node.lan, ips[0], 8080) == f"pod {OUTSIDE}"
    finally:
        server.kill()
        server.wait()
    for pod in pods:
        node.cd.stop_pod(pod)
        node.cd.remove_pod(pod)
    assert node.lease_files() == []
    assert [x["ifname"] for x in node.host.ip_json("link", "show")] == ["lo", "mst0"]
    assert node.cd.list_pods() == []
