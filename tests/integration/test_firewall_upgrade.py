"""State written by a version before `pycni/firewall/` owned the spoof checks: a
container attached then is still released cleanly (its record in the old location),
and its guard comes back on `replay()`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycni import firewall
from tests.integration.test_firewall_support import in_ns

pytestmark = pytest.mark.root


def _conf(tmp: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "upgnet",
        "type": "bridge",
        "bridge": "pytupg0",
        "isGateway": True,
        "macspoofchk": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.76.0.0/24"}]],
            "dataDir": str(tmp / "ipam"),
        },
    }


def _guarded(host_ns) -> list[str]:
    listing = json.loads(
        host_ns.run("nft", "-j", "list", "set", "bridge", "pycni_spoof", "guarded")
    )
    sets = [x["set"] for x in listing["nftables"] if "set" in x]
    return list(sets[0].get("elem") or []) if sets else []


def test_a_legacy_spoof_record_is_released_and_replayed(
    run_plugin, host_ns, container_ns, state_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    c = container_ns()
    kw = {"netns": c.path, "container_id": "old1", "in_ns": host_ns}
    add = run_plugin("bridge", "ADD", _conf(tmp_path), **kw)
    assert add.rc == 0, add.stdout + add.stderr
    host_veth = next(i["name"] for i in add.json["interfaces"] if i["name"].startswith("veth"))
    assert _guarded(host_ns) == [host_veth]
    new = list((state_dir / "firewall" / ".spoof").rglob("*.json"))
    assert len(new) == 1
    # what the old version left: <state>/spoofcheck/<network>/<cid>:<ifname>.json
    legacy = state_dir / "spoofcheck" / "upgnet" / "old1:eth0.json"
    legacy.parent.mkdir(parents=True)
    new[0].rename(legacy)

    host_ns.run("nft", "flush", "ruleset")
    monkeypatch.setenv("PYCNI_STATE_DIR", str(state_dir))
    lines = in_ns(host_ns, firewall.replay)
    assert "macspoofchk: re-applied 1 attachment(s)" in lines, lines
    assert _guarded(host_ns) == [host_veth]

    dele = run_plugin("bridge", "DEL", _conf(tmp_path), **kw)
    assert dele.rc == 0, dele.stdout + dele.stderr
    assert _guarded(host_ns) == []
    assert not legacy.exists()
