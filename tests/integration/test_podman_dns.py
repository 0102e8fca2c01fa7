"""A podman container (CNI backend) and a netctl container on one netctl network resolve
each other by name through netctl's embedded resolver: podman reads netctl's conflist
(network_config_dir = netctl's net.d), whose chain ends in our `dns` plugin, which
registers the podman container (K8S_POD_NAME, runtimeConfig aliases) with the resolver.

Podman runs exactly as in test_podman_cni.py (private containers.conf, its own
root/runroot, a private mount namespace); its plugins keep their state where netctl's
do, so both sides share one lease store and one set of firewall records."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import Netns
from tests.integration.test_netctl_dns import DIG, resolver_pid, wait_gone
from tests.integration.test_netctl_run import PY, Netctl
from tests.integration.test_podman_cni import Podman, busybox_root
from tests.integration.test_podman_cni import podman as podman

pytestmark = pytest.mark.root


def test_podman_and_netctl_containers_resolve_each_other(
    podman: Podman,
    host_ns: Netns,
    tmp_path: Path,
) -> None:
    nc = Netctl(host_ns, tmp_path / "nc")
    (tmp_path / "nc").mkdir()
    nc("network", "create", "shared", "--subnet", "10.78.0.0/24")
    # netctl's conflist as it is, but for podman 4.3's libcni, which stops at CNI 1.0.0
    conflist = json.loads((tmp_path / "nc/etc/netctl/net.d/shared.conflist").read_text())
    assert conflist["plugins"][-1]["type"] == "dns"
    conflist["cniVersion"] = "1.0.0"
    (podman.t / "conf.d" / "shared.conflist").write_text(json.dumps(conflist))
    podman.env["PYCNI_STATE_DIR"] = str(tmp_path / "nc/var/lib/netctl/pycni")
    rootfs = busybox_root(tmp_path)
    ulimits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    try:
        # podman first: its dns plugin starts the resolver inside podman's mount
        # namespace, where podman's /run/netns is (netctl's paths are visible from both)
        cid = podman.podman(
            "run", "-d", "--runtime", "runc", *ulimits, "--name", "pod1", "--network", "shared",
            "--network-alias", "podalias", "--rootfs", str(rootfs), "busybox", "sleep", "300",
        ).strip()  # fmt: skip
        inspect = json.loads(podman.podman("inspect", cid))[0]
        pod_ip = inspect["NetworkSettings"]["Networks"]["shared"]["IPAddress"]
        assert pod_ip.startswith("10.78.0.")
        regs = list((tmp_path / "nc/run/netctl/dns/cni").glob(f"{cid}-*.json"))
        assert len(regs) == 1
        reg = json.loads(regs[0].read_text())
        assert "pod1" in reg["names"] and "podalias" in reg["names"], reg
        assert resolver_pid(nc) is not None

        nc("run", "-d", "--name", "nc1", "--network", "shared", "--", "sleep", "300")
        # netctl -> podman, by its name and its alias
        for name in ("pod1", "podalias"):
            out = nc("exec", "nc1", PY, "-c", DIG, name, "A").stdout.split()
            assert out == ["NOERROR", pod_ip], (name, out)
        nc_ip = json.loads(nc("inspect", "nc1").stdout)[0]["NetworkSettings"]["Networks"]["shared"][
            "IPAddress"
        ]
        # podman -> netctl, busybox's nslookup against the resolver in its namespace
        deadline, out = time.time() + 10, ""
        while time.time() < deadline:
            out = podman.podman("exec", cid, "nslookup", "nc1", "127.0.0.11", check=False)
            if nc_ip in out:
                break
            time.sleep(0.2)
        assert nc_ip in out, out
        # what podman made of the plugin's answer (nameserver 127.0.0.11)
        resolv = podman.podman("exec", cid, "cat", "/etc/resolv.conf", check=False)
        print("podman resolv.conf:", resolv)
        # podman removes its container: its names go at once
        podman.podman("rm", "-f", cid)
        assert list((tmp_path / "nc/run/netctl/dns/cni").glob(f"{cid}-*.json")) == []
        out_after = nc("exec", "nc1", PY, "-c", DIG, "pod1", "A").stdout.split()
        assert out_after[0] != "NOERROR", out_after
    finally:
        nc("rm", "-f", "nc1", check=False)
    pid = resolver_pid(nc)
    if pid is not None:
        assert wait_gone(pid)
