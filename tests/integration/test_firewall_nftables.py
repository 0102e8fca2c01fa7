"""nftables backend specifics, real kernel: the table layout, nothing outside it
touched, injection, the fast path (no listing, no skeleton rebuild, constant batch),
both transports, nested subnets, and conflicts found by the kernel itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pycni.firewall import nftables
from pycni.firewall.base import Attachment, PortConflict, PortMapping
from pycni.firewall.iptables import IptablesFirewall
from pycni.firewall.nftables import NftablesFirewall
from pycni.firewall.plan import Record
from tests.integration.test_firewall_support import (
    HOST_OUT4,
    NETWORK,
    OUTSIDE4,
    Servers,
    Topology,
    fw_state,
    in_ns,
    nft_text,
    probe,
    ruleset_without_ours,
    servers,
    topo,
)

pytestmark = pytest.mark.root
__all__ = ["fw_state", "servers", "topo"]  # fixtures re-exported for pytest

ADMIN = """
table inet admin {
    set blocked { type ipv4_addr; elements = { 192.0.2.1 } }
    chain input {
        type filter hook input priority filter; policy accept;
        ip saddr @blocked drop comment "admin's own"
    }
}
table ip legacy {
    chain post { type nat hook postrouting priority srcnat; oifname "out0" counter; }
}
"""


def test_table_layout(topo: Topology, fw_state: Path) -> None:
    fw = NftablesFirewall()
    in_ns(topo.host, fw.add_masquerade, topo.c1.attachment())
    in_ns(topo.host, fw.add_port_mappings, topo.c1.attachment(), [PortMapping(8080, 80)])
    listing = json.loads(topo.host.run("nft", "-j", "list", "ruleset"))["nftables"]
    tables = [(i["table"]["family"], i["table"]["name"]) for i in listing if "table" in i]
    assert tables == [("inet", "pycni")]
    chains = {i["chain"]["name"]: i["chain"] for i in listing if "chain" in i}
    hooks = {n: (c.get("type"), c.get("hook"), c.get("prio")) for n, c in chains.items()}
    assert hooks == {
        "prerouting": ("nat", "prerouting", -100),
        "output": ("nat", "output", -100),
        "postrouting": ("nat", "postrouting", 100),
        "localnet-guard": ("filter", "prerouting", -300),
        "conditional": (None, None, None),  # regular: portmap conditionsV4/V6 only
    }
    sets = {(i.get("set") or i.get("map"))["name"] for i in listing if "set" in i or "map" in i}
    assert sets == set(nftables.SETS)
    # Verdict maps would make every commit re-validate all their elements.
    assert not any(i["map"].get("map") == "verdict" for i in listing if "map" in i)
    # The text listing is valid nft input again (admins save and restore rulesets).
    topo.outside.run("nft", "-c", "-f", "-", input=nft_text(topo.host))


ADMIN_TABLES = [("inet", "admin"), ("ip", "legacy")]
WEIRD = [
    'net"; flush ruleset; #',
    "net}\n}\ntable ip evil { }",
    "n\\x00 'quoted' `tick` $(reboot)",
    "../../../etc/passwd",
    "flush ruleset",
]


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_injection_changes_nothing_outside_our_objects(
    topo: Topology, fw_state: Path, servers: Servers, backend: str
) -> None:
    fw: Any = NftablesFirewall() if backend == "nftables" else IptablesFirewall()
    topo.host.run("nft", "-f", "-", input=ADMIN)
    before = ruleset_without_ours(topo.host)
    admin_before = [topo.host.run("nft", "list", "table", *t) for t in ADMIN_TABLES]
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    keys = []
    for i, name in enumerate(WEIRD):
        cid = f'{name}-cid;"}}\n{i}'
        att = topo.c1.attachment(network=name, cid=cid)
        att.ifname = f"eth0;{name}"
        in_ns(topo.host, fw.add_masquerade, att)
        in_ns(topo.host, fw.add_port_mappings, att, [PortMapping(8000 + i, 80)])
        keys.append(att.key)
    assert probe(topo.outside, "tcp", HOST_OUT4, 8003) == f"c1 {OUTSIDE4}"
    assert set(keys) <= in_ns(topo.host, fw.attachments)
    after = ruleset_without_ours(topo.host)
    if backend == "nftables":
        assert after == before  # byte for byte
    else:
        # iptables-nft's own tables appear, nothing else.
        tables = json.loads(topo.host.run("nft", "-j", "list", "tables"))["nftables"]
        names = {(t["table"]["family"], t["table"]["name"]) for t in tables if "table" in t}
        assert names == {*ADMIN_TABLES, ("ip", "nat"), ("ip", "raw"), ("ip6", "nat")}
    assert [topo.host.run("nft", "list", "table", *t) for t in ADMIN_TABLES] == admin_before
    # Saved state stays under the state dir, one file per attachment.
    files = sorted(p for p in fw_state.rglob("*.json"))
    assert len(files) == len(WEIRD)
    assert all(fw_state in p.parents for p in files)
    # DEL and GC find them by key alone.
    for network, cid, ifname in keys[:2]:
        in_ns(topo.host, fw.del_port_mappings, network, cid, ifname)
        in_ns(topo.host, fw.del_masquerade, network, cid, ifname)
    for network, _, _ in keys[2:]:
        assert in_ns(topo.host, fw.gc, network, set())
    assert in_ns(topo.host, fw.attachments) == set()
    assert [topo.host.run("nft", "list", "table", *t) for t in ADMIN_TABLES] == admin_before
    assert list(fw_state.rglob("*.json")) == []


@pytest.mark.parametrize("transport", ["lib", "exec"])
def test_both_transports_publish(
    topo: Topology, fw_state: Path, servers: Servers, transport: str
) -> None:
    fw = NftablesFirewall(transport)
    assert fw.nft.mode() == transport
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    in_ns(topo.host, fw.add_port_mappings, topo.c1.attachment(), [PortMapping(8080, 80)])
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080) == f"c1 {OUTSIDE4}"
    assert (
        in_ns(topo.host, fw.check_port_mappings, topo.c1.attachment(), [PortMapping(8080, 80)])
        == []
    )
    in_ns(topo.host, fw.del_port_mappings, NETWORK, "c1", "eth0")
    assert in_ns(topo.host, fw.attachments) == set()


def test_fast_path_is_elements_only(
    topo: Topology, fw_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first ADD, ADD/DEL send only element commands: no listing of anything,
    no skeleton, and a batch whose size does not depend on how many others exist."""
    fw = NftablesFirewall()
    # Many attachments already present (one batch, like replay does).
    many = []
    for i in range(2000):
        ip = f"10.{90 + i // 250}.{i % 250}.2/24"
        att = Attachment("bulk", f"b{i}", "eth0", [nftables.ipaddress.ip_interface(ip)])
        r = Record(att.key, "nftables")
        r.masquerade, r.ports, r.mappings = att, att, [PortMapping(10000 + i, 80)]
        many.append(r)
    in_ns(topo.host, fw.nft.run, nftables.rebuild(many))
    sent: list[list[dict[str, Any]]] = []
    real_run = fw.nft.run

    def spy(cmds: list[dict[str, Any]], dry_run: bool = False) -> Any:
        sent.append(cmds)
        return real_run(cmds, dry_run)

    monkeypatch.setattr(fw.nft, "run", spy)
    sizes = []
    for c in (topo.c1, topo.c2):
        sent.clear()
        in_ns(topo.host, fw.add_masquerade, c.attachment())
        in_ns(topo.host, fw.add_port_mappings, c.attachment(), [PortMapping(8080 + len(sizes), 80)])
        in_ns(topo.host, fw.del_port_mappings, NETWORK, c.name, "eth0")
        verbs = {verb for batch in sent for cmd in batch for verb in cmd}
        kinds = {kind for batch in sent for cmd in batch for kind in next(iter(cmd.values()))}
        assert verbs <= {"add", "create", "delete"}, verbs
        assert kinds == {"element"}, kinds
        sizes.append([len(batch) for batch in sent])
    assert sizes[0] == sizes[1]


def test_nested_and_wider_subnets(topo: Topology, fw_state: Path, servers: Servers) -> None:
    """A subnet inside one already present (EEXIST from the interval set) and a wider
    one both work; traffic inside the subnet stays un-NATed."""
    fw = NftablesFirewall()
    wide = topo.c2.attachment(cid="wide")
    wide.ips = [nftables.ipaddress.ip_interface("10.88.0.3/16")]
    in_ns(topo.host, fw.add_masquerade, wide)
    in_ns(topo.host, fw.add_masquerade, topo.c1.attachment())  # /24 inside the /16
    narrow = topo.c2.attachment(cid="narrow")
    narrow.ips = [nftables.ipaddress.ip_interface("10.88.0.3/25")]
    in_ns(topo.host, fw.add_masquerade, narrow)
    assert in_ns(topo.host, fw.check_masquerade, topo.c1.attachment()) == []
    servers.start(topo.c2.ns, "tcp", topo.c2.ip4, 7000, "c2")
    assert probe(topo.c1.ns, "tcp", topo.c2.ip4, 7000) == f"c2 {topo.c1.ip4}"
    # GC prunes the pairs nobody needs any more.
    in_ns(topo.host, fw.gc, NETWORK, set())
    listing = json.loads(topo.host.run("nft", "-j", "list", "set", "inet", "pycni", "subnets4"))
    assert not [i for i in listing["nftables"] if "set" in i and i["set"].get("elem")]


def test_kernel_refuses_a_taken_port_when_state_was_lost(topo: Topology, fw_state: Path) -> None:
    fw = NftablesFirewall()
    in_ns(topo.host, fw.add_port_mappings, topo.c1.attachment(), [PortMapping(8080, 80)])
    shutil.rmtree(fw_state / "firewall")
    with pytest.raises(PortConflict) as info:
        in_ns(topo.host, fw.add_port_mappings, topo.c2.attachment(), [PortMapping(8080, 80)])
    assert info.value.holder == (NETWORK, "c1", "eth0")
    assert list(fw_state.rglob("*.json")) == []


def test_check_reports_what_someone_removed(topo: Topology, fw_state: Path) -> None:
    fw = NftablesFirewall()
    att = topo.c1.attachment()
    in_ns(topo.host, fw.add_port_mappings, att, [PortMapping(8080, 80)])
    in_ns(topo.host, fw.add_masquerade, att)
    topo.host.run("nft", "delete", "element", "inet", "pycni", "pm4_any_port", "{ tcp . 8080 }")
    topo.host.run("nft", "flush", "chain", "inet", "pycni", "postrouting")
    missing = in_ns(topo.host, fw.check_port_mappings, att, [PortMapping(8080, 80)])
    assert any("pm4_any_port" in m for m in missing), missing
    assert any("postrouting" in m for m in missing), missing
    # replay repairs both.
    assert in_ns(topo.host, fw.replay) == 1
    assert in_ns(topo.host, fw.check_port_mappings, att, [PortMapping(8080, 80)]) == []
    assert in_ns(topo.host, fw.check_masquerade, att) == []


def test_replay_with_nothing_saved_leaves_no_table(topo: Topology, fw_state: Path) -> None:
    fw = NftablesFirewall()
    assert in_ns(topo.host, fw.replay) == 0
    assert "pycni" not in nft_text(topo.host)
    in_ns(topo.host, fw.add_masquerade, topo.c1.attachment())
    in_ns(topo.host, fw.del_masquerade, NETWORK, "c1", "eth0")
    assert in_ns(topo.host, fw.replay) == 0
    assert "pycni" not in nft_text(topo.host)
