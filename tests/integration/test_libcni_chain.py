"""Chains run by the libcni side (`netctl cni ...`): our plugins and the reference
plugins in one conflist, the cniCacheV1 cache, rollback, GC."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Netns

pytestmark = pytest.mark.root


def netctl(
    host: Netns, root: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NETCTL_ROOT=str(root), NETCTL_CNI_PATH="/usr/lib/cni")
    cmd = ["ip", "netns", "exec", host.name, sys.executable, "-m", "pycni.runtime.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr + proc.stdout)
    return proc


def write_net(root: Path, conflist: dict) -> None:
    d = root / "etc/netctl/net.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{conflist['name']}.conflist").write_text(json.dumps(conflist))


def chain(root: Path, version: str = "1.0.0") -> dict:
    return {
        "cniVersion": version,
        "name": "chain1",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "pytcb0",
                "isGateway": True,
                "ipam": {
                    "type": "host-local",
                    "subnet": "10.71.0.0/24",
                    "dataDir": str(root / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def test_add_check_del_with_portmap_and_cache(host_ns, container_ns, tmp_path) -> None:
    c = container_ns()
    # disableCheck: libcni's rule that CHECK is then a no-op (the network's plugins are
    # never asked), exercised here.
    write_net(tmp_path, chain(tmp_path) | {"disableCheck": True})
    caps = json.dumps(
        {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}
    )
    out = json.loads(
        netctl(
            host_ns,
            tmp_path,
            "cni",
            "add",
            "chain1",
            "--netns",
            c.path,
            "--id",
            "c1",
            "--cap-args",
            caps,
        ).stdout
    )
    assert out["ips"][0]["address"] == "10.71.0.2/24"
    cache = tmp_path / "var/lib/netctl/cni/results/chain1-c1-eth0"
    entry = json.loads(cache.read_text())
    assert list(entry)[:5] == ["kind", "containerId", "config", "ifName", "networkName"]
    assert entry["kind"] == "cniCacheV1" and entry["netns"] == c.path
    assert json.loads(base64.b64decode(entry["config"]))["name"] == "chain1"
    assert entry["capabilityArgs"] == json.loads(caps)
    assert entry["result"]["ips"] == out["ips"]
    # portmap (ours: first in netctl's CNI path) published the port in the throwaway node
    assert "18080" in host_ns.run("nft", "list", "table", "inet", "pycni")
    netctl(
        host_ns,
        tmp_path,
        "cni",
        "check",
        "chain1",
        "--netns",
        c.path,
        "--id",
        "c1",
        "--cap-args",
        caps,
    )
    netctl(
        host_ns,
        tmp_path,
        "cni",
        "del",
        "chain1",
        "--netns",
        c.path,
        "--id",
        "c1",
        "--cap-args",
        caps,
    )
    assert not cache.exists()
    assert c.link("eth0") is None
    assert "18080" not in host_ns.run("nft", "list", "table", "inet", "pycni")


def test_failed_chain_is_rolled_back(host_ns, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = chain(tmp_path)
    conf["plugins"].append({"type": "no-such-plugin"})
    write_net(tmp_path, conf)
    proc = netctl(
        host_ns, tmp_path, "cni", "add", "chain1", "--netns", c.path, "--id", "c1", check=False
    )
    assert proc.returncode == 125 and 'failed to find plugin "no-such-plugin"' in proc.stderr
    assert c.link("eth0") is None
    leases = [p.name for p in (tmp_path / "ipam/chain1").iterdir() if p.name[0].isdigit()]
    assert leases == []
    assert not (tmp_path / "var/lib/netctl/cni/results/chain1-c1-eth0").exists()


def test_gc_deletes_stale_attachments(host_ns, container_ns, tmp_path) -> None:
    a, b = container_ns(), container_ns()
    write_net(tmp_path, chain(tmp_path, "1.1.0") | {"plugins": chain(tmp_path)["plugins"][:1]})
    netctl(host_ns, tmp_path, "cni", "add", "chain1", "--netns", a.path, "--id", "a")
    netctl(host_ns, tmp_path, "cni", "add", "chain1", "--netns", b.path, "--id", "b")
    netctl(host_ns, tmp_path, "cni", "check", "chain1", "--netns", a.path, "--id", "a")
    netctl(host_ns, tmp_path, "cni", "gc", "chain1", "--valid", "a:eth0")
    results = sorted(p.name for p in (tmp_path / "var/lib/netctl/cni/results").iterdir())
    assert results == ["chain1-a-eth0"]
    assert b.link("eth0") is None and a.link("eth0") is not None
    status = netctl(host_ns, tmp_path, "cni", "status", "chain1")
    assert "ready" in status.stdout
