"""podman (its CNI backend) joins an overlay network with the `overlay` conflist: a
podman container on one host serves HTTP to a container our CNI exec put on another
host, over VXLAN, with a real 3-member etcd. The agent podman's first ADD started on
its host is stopped by PID at the end."""

# ruff: noqa: F811  (the fixtures shared with test_overlay.py are imported by name)
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Netns, short_id
from tests.integration.test_overlay import (  # noqa: F401
    add,
    cluster,
    hosts,
    overlay_conf,
    put_network,
    underlay,
)
from tests.integration.test_podman_cni import Podman, busybox_root, http_get
from tests.overlay_kit import EtcdCluster, Host

pytestmark = pytest.mark.root


def test_podman_container_joins_the_overlay(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns], tmp_path: Path,
) -> None:  # fmt: skip
    net = f"ovp{short_id(4)}"
    put_network(cluster, net, "10.46.0.0/16", 46)
    h1, h2 = hosts(), hosts()
    c1 = container_ns()
    _, ip1 = add(plugin_dir, h1, overlay_conf(cluster, net), c1)
    short = Path(tempfile.mkdtemp(prefix="pyt-podman-", dir="/tmp"))
    p = Podman(short / "t", h2.ns, plugin_dir)
    try:
        conflist = {"cniVersion": "1.0.0", "name": net, "plugins": [overlay_conf(cluster, net)]}
        del conflist["plugins"][0]["cniVersion"], conflist["plugins"][0]["name"]
        (p.t / "conf.d" / f"{net}.conflist").write_text(json.dumps(conflist))
        rootfs = busybox_root(tmp_path)
        ulimits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
        cid = p.podman(
            "run", "-d", "--runtime", "runc", *ulimits, "--network", net,
            "--rootfs", str(rootfs), "busybox", "httpd", "-f", "-p", "80",
        ).strip()  # fmt: skip
        inspect = json.loads(p.podman("inspect", cid))[0]
        ip2 = inspect["NetworkSettings"]["Networks"][net]["IPAddress"]
        lease = json.loads((p.t / "varlib" / "pycni" / "overlay" / net / "subnet.json").read_text())
        assert ip2.startswith(lease["subnet"].rsplit(".", 1)[0]), (ip2, lease)
        page = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "hello from podman" not in page:
            page = http_get(c1, ip2, 80)
            time.sleep(0.2)
        assert "hello from podman over pycni" in page, page
        p.podman("rm", "-f", cid)
        assert not list((p.t / "varlib" / "pycni" / "overlay" / net / "containers").iterdir())
    finally:
        for pidfile in (p.t / "varlib" / "pycni" / "overlay").glob("*/agent.pid"):
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        try:
            p.close()
        finally:
            shutil.rmtree(short, ignore_errors=True)
    assert ip1
