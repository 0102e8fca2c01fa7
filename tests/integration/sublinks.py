"""Shared topology and probes of the one-link plugin tests (macvlan, ipvlan, vlan,
dummy, tap): the node's master `mst0` is a veth end whose peer `up0` sits in an
"outside" namespace at 10.91.0.1/24."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Netns, PluginRun, short_id

SUBNET = "10.91.0.0/24"
OUTSIDE = "10.91.0.1"


def make_lan(host_ns: Netns, container_ns: Callable[[], Netns]) -> Netns:
    """The outside namespace, wired to host_ns's mst0 (left without an address); each
    test module wraps it in a `lan` fixture."""
    out = container_ns()
    host_ns.run("ip", "link", "add", "mst0", "type", "veth", "peer", "name", "up0",
                "netns", out.name)  # fmt: skip
    host_ns.run("ip", "link", "set", "mst0", "up")
    out.run("ip", "addr", "add", f"{OUTSIDE}/24", "dev", "up0")
    out.run("ip", "link", "set", "up0", "up")
    return out


def host_local(tmp_path: Path, **keys: Any) -> dict[str, Any]:
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": SUBNET, "gateway": OUTSIDE}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": str(tmp_path / "ipam"),
    }
    ipam.update(keys)
    return ipam


def leases(tmp_path: Path, network: str) -> list[str]:
    d = tmp_path / "ipam" / network
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []


def links(ns: Netns) -> list[tuple[str, str]]:
    return sorted(
        (x["ifname"], x.get("linkinfo", {}).get("info_kind", ""))
        for x in ns.ip_json("-d", "link", "show")
    )


def ok(r: PluginRun) -> Any:
    assert r.rc == 0, r.stdout + r.stderr
    return r.json if r.stdout.strip() else None


def reaches(src: Netns, dst: str) -> bool:
    return (
        subprocess.run(
            ["ip", "netns", "exec", src.name, "ping", "-c", "1", "-W", "1", dst],
            capture_output=True,
            timeout=10,
        ).returncode
        == 0
    )


def kernel_has(kind: str, *args: str) -> bool:
    """Whether this kernel can make a link of `kind` (tried in a namespace of its own)."""
    ns = f"pytprobe{short_id(8)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"],
                       check=True)  # fmt: skip
        cmd = ["ip", "-n", ns, "link", "add"]
        cmd += ["pr0", "type", kind] if kind == "dummy" else ["pr0", "link", "p0", "type", kind]
        return subprocess.run([*cmd, *args], capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
