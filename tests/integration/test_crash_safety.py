"""Crash safety: the plugin is SIGKILLed at each mutation point of ADD; afterwards DEL
with the same arguments, and separately GC with an empty valid list, must leave no
link, lease, firewall entry or record behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns

pytestmark = pytest.mark.root

POINTS = ["after-ipam", "after-veth", "after-addresses", "after-routes", "after-firewall"]


def conf(tmp: Path, version: str = "1.1.0") -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "crashnet",
        "type": "bridge",
        "bridge": "pytcr0",
        "isDefaultGateway": True,
        "ipMasq": True,
        "macspoofchk": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.72.0.0/24"}], [{"subnet": "fd72::/64"}]],
            "dataDir": str(tmp / "ipam"),
        },
    }


def leases(tmp: Path) -> list[str]:
    d = tmp / "ipam" / "crashnet"
    if not d.exists():
        return []
    return sorted(
        p.name
        for p in d.iterdir()
        if p.name != "lock" and not p.name.startswith("last_reserved_ip")
    )


def firewall_elements(host: Netns) -> list[str]:
    """Every element of our tables that belongs to an attachment (shared subnet pairs excluded)."""
    out = []
    for item in host.nft_json().get("nftables", []):
        obj = item.get("set") or item.get("map")
        if (
            not obj
            or obj.get("table") not in ("pycni", "pycni_spoof")
            or obj.get("name", "").startswith("subnets")
        ):
            continue
        out.extend(f"{obj['table']}/{obj['name']}: {json.dumps(e)}" for e in obj.get("elem") or [])
    return out


def host_veths(host: Netns) -> list[str]:
    return [link["ifname"] for link in host.ip_json("link", "show", "type", "veth")]


def records(state: Path) -> list[str]:
    return sorted(str(p.relative_to(state)) for p in state.rglob("*.json"))


def assert_clean(host: Netns, c: Netns | None, tmp: Path, state: Path) -> None:
    assert host_veths(host) == []
    if c is not None:
        assert c.link("eth0") is None
    assert leases(tmp) == []
    assert firewall_elements(host) == []
    assert records(state) == []


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_then_del(
    point: str, run_plugin, host_ns, container_ns, tmp_path, state_dir
) -> None:
    c = container_ns()
    cfg = conf(tmp_path)
    res = run_plugin(
        "bridge",
        "ADD",
        cfg,
        netns=c.path,
        container_id="k1",
        in_ns=host_ns,
        env_extra={"PYCNI_FAULT": point},
    )
    assert res.rc == -9 or res.rc == 137, (res.rc, res.stdout, res.stderr)
    assert res.stdout == ""  # killed before printing anything
    assert leases(tmp_path), "the lease was taken before the kill"
    dele = run_plugin("bridge", "DEL", cfg, netns=c.path, container_id="k1", in_ns=host_ns)
    assert dele.rc == 0, dele.stdout
    assert_clean(host_ns, c, tmp_path, state_dir)
    # and the node works: a new ADD succeeds and traffic flows
    ok = run_plugin("bridge", "ADD", cfg, netns=c.path, container_id="k2", in_ns=host_ns)
    assert ok.rc == 0, ok.stdout


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_then_gc(
    point: str, run_plugin, host_ns, container_ns, tmp_path, state_dir
) -> None:
    keep = container_ns()
    cfg = conf(tmp_path)
    assert (
        run_plugin("bridge", "ADD", cfg, netns=keep.path, container_id="keep", in_ns=host_ns).rc
        == 0
    )
    kept = {
        "veths": host_veths(host_ns),
        "leases": leases(tmp_path),
        "fw": firewall_elements(host_ns),
    }
    c = container_ns()
    res = run_plugin(
        "bridge",
        "ADD",
        cfg,
        netns=c.path,
        container_id="k1",
        in_ns=host_ns,
        env_extra={"PYCNI_FAULT": point},
    )
    assert res.rc in (-9, 137)
    gc = dict(cfg)
    gc["cni.dev/valid-attachments"] = [{"containerID": "keep", "ifname": "eth0"}]
    out = run_plugin("bridge", "GC", gc, in_ns=host_ns)
    assert out.rc == 0, out.stdout
    # exactly the live attachment's state is left
    assert host_veths(host_ns) == kept["veths"]
    assert leases(tmp_path) == kept["leases"]
    assert firewall_elements(host_ns) == kept["fw"]
    assert c.link("eth0") is None or c.link("eth0")["linkinfo"]["info_kind"] == "veth"
    # an empty valid list then removes the rest
    gc["cni.dev/valid-attachments"] = []
    assert run_plugin("bridge", "GC", gc, in_ns=host_ns).rc == 0
    assert_clean(host_ns, None, tmp_path, state_dir)
