"""podman 4.3's CNI backend drives our macvlan: `podman network create -d macvlan -o
parent=...` writes its own conflist (macvlan + host-local), `podman run --network` on
it gets a LAN address on the parent's segment, a neighbour on that LAN reaches the
container's server directly, and `podman rm -f` leaves no link and no lease. Podman's
sandbox (private containers.conf, mount namespace, state under the test's directory) is
test_podman_cni's."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Netns
from tests.integration.test_podman_cni import Podman, busybox_root, http_get

pytestmark = pytest.mark.root
OUTSIDE = "10.97.0.1"


@pytest.fixture
def pod(tmp_path: Path, host_ns: Netns, plugin_dir: Path) -> Iterator[Podman]:
    short = Path(tempfile.mkdtemp(prefix="pyt-podman-", dir="/tmp"))
    (tmp_path / "podman").symlink_to(short)
    p = Podman(short / "t", host_ns, plugin_dir)
    try:
        yield p
    finally:
        try:
            p.close()
        finally:
            shutil.rmtree(short, ignore_errors=True)


def test_podman_macvlan_network_run_and_rm(pod: Podman, host_ns: Netns, container_ns,
                                           tmp_path: Path) -> None:  # fmt: skip
    lan = container_ns()
    host_ns.run("ip", "link", "add", "mst0", "type", "veth", "peer", "name", "up0",
                "netns", lan.name)  # fmt: skip
    host_ns.run("ip", "link", "set", "mst0", "up")
    lan.run("ip", "addr", "add", f"{OUTSIDE}/24", "dev", "up0")
    lan.run("ip", "link", "set", "up0", "up")
    assert (pod.bin / "macvlan").read_bytes() != Path("/usr/lib/cni/macvlan").read_bytes()

    pod.podman("network", "create", "-d", "macvlan", "-o", "parent=mst0", "--subnet",
               "10.97.0.0/24", "--gateway", OUTSIDE, "lan")  # fmt: skip
    conf = json.loads((pod.t / "conf.d" / "lan.conflist").read_text())
    assert conf["plugins"][0]["type"] == "macvlan" and conf["plugins"][0]["master"] == "mst0"

    rootfs = busybox_root(tmp_path)
    ulimits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    cid = pod.podman(
        "run", "-d", "--runtime", "runc", *ulimits, "--network", "lan",
        "--rootfs", str(rootfs), "busybox", "httpd", "-f", "-p", "80",
    ).strip()  # fmt: skip
    ip = json.loads(pod.podman("inspect", cid))[0]["NetworkSettings"]["Networks"]["lan"][
        "IPAddress"
    ]
    assert ip.startswith("10.97.0.")
    leases = pod.t / "varlib" / "cni" / "networks" / "lan"
    assert (leases / ip).read_text().startswith(cid)
    # the LAN neighbour reaches the container's server on its own address (no NAT)
    deadline = time.monotonic() + 10
    page = ""
    while time.monotonic() < deadline and "hello from podman" not in page:
        page = http_get(lan, ip, 80)
        time.sleep(0.2)
    assert "hello from podman over pycni" in page, page

    pod.podman("rm", "-f", cid)
    assert not (leases / ip).exists()
    assert [x["ifname"] for x in host_ns.ip_json("link", "show")] == ["lo", "mst0"]
    assert list((pod.t / "netns").iterdir()) == []
    assert pod.podman("ps", "-a", "-q").strip() == ""
