"""A text picture of what the network looks like now: for each namespace, its
interfaces (kind, addresses, bridge, VXLAN id and remote, the other end of a veth the
kit wired), routes; for each node, its netctl networks and containers with addresses
and published ports; and the pcap files captured so far.

    == client  (netns pkt1kz_5h3b-client-3fa9c1)
       eth0      veth    10.0.0.2/24           <-> router:eth0        up
       route     default via 10.0.0.1 dev eth0
       pcap      /tmp/.../pcap/client-eth0.pcap
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.testing.node import Node
from pycni.testing.ns import Netns


@dataclass
class Entry:
    label: str
    ns: Netns
    node: Node | None = None
    pcaps: list[Path] = field(default_factory=list)


def _iface_line(link: dict[str, Any], peers: Mapping[str, str]) -> str:
    info = link.get("linkinfo", {})
    kind = info.get("info_kind", link.get("link_type", ""))
    addrs = " ".join(
        f"{a['local']}/{a['prefixlen']}"
        for a in link.get("addr_info", [])
        if a.get("scope") != "link"
    )
    extra = []
    if link.get("master"):
        extra.append(f"in bridge {link['master']}")
    if kind == "vxlan":
        data = info.get("info_data", {})
        extra.append(
            f"vni {data.get('id')} remote {data.get('remote', data.get('group', '-'))} port {data.get('port')}"
        )
    peer = peers.get(link["ifname"])
    if peer:
        extra.append(f"<-> {peer}")
    state = "up" if "UP" in link.get("flags", []) else "down"
    return f"   {link['ifname']:<12} {kind or '-':<8} {addrs or '-':<22} {' '.join(extra)}  {state}".rstrip()


def _nft_lines(ns: Netns) -> list[str]:
    """One line per nft table: its chains (with hook) and how many rules each holds."""
    doc = ns.nft_json().get("nftables", [])
    tables: dict[str, list[str]] = {}
    rules: dict[tuple[str, str], int] = {}
    for item in doc:
        if "table" in item:
            tables[f"{item['table']['family']} {item['table']['name']}"] = []
        elif "rule" in item:
            r = item["rule"]
            key = (f"{r['family']} {r['table']}", r["chain"])
            rules[key] = rules.get(key, 0) + 1
    for item in doc:
        if "chain" in item:
            c = item["chain"]
            table = f"{c['family']} {c['table']}"
            hook = f" ({c['hook']}, policy {c.get('policy', 'accept')})" if c.get("hook") else ""
            tables.setdefault(table, []).append(
                f"{c['name']}{hook}: {rules.get((table, c['name']), 0)} rules"
            )
    return [
        f"   nft          table {t}: {'; '.join(chains) or 'empty'}" for t, chains in tables.items()
    ]


def render(entries: Iterable[Entry], peers: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """`peers[label][ifname]` names the other end of a link ("node:ifname")."""
    out: list[str] = []
    for e in entries:
        kind = "node" if e.node is not None else "netns"
        out.append(f"== {e.label}  ({kind} {e.ns.name})")
        try:
            links = e.ns.links()
        except Exception as exc:  # the namespace may already be half torn down
            out.append(f"   (cannot read: {exc})")
            continue
        for link in links:
            if link["ifname"] == "lo" and len(link.get("addr_info", [])) <= 2:
                continue
            out.append(_iface_line(link, (peers or {}).get(e.label, {})))
        try:
            for r in e.ns.routes():
                via = f" via {r['gateway']}" if r.get("gateway") else ""
                out.append(f"   route        {r['dst']}{via} dev {r.get('dev', '-')}")
        except Exception:
            pass
        try:
            out.extend(_nft_lines(e.ns))
        except Exception:
            pass
        if e.node is not None:
            for c in e.node.containers():
                nets = c.get("NetworkSettings", {}).get("Networks", {}) or {}
                addrs = ", ".join(f"{n}={v.get('IPAddress', '')}" for n, v in nets.items())
                ports = ", ".join(
                    f"{(b or {}).get('HostIp', '')}:{(b or {}).get('HostPort', '')}->{p}"
                    for p, binds in (c.get("NetworkSettings", {}).get("Ports") or {}).items()
                    for b in (binds or [])
                )
                state = c.get("State", {}).get("Status", "")
                out.append(
                    f"   container    {c.get('Name', '').lstrip('/'):<12} {addrs} {ports} [{state}]".rstrip()
                )
            out.append(f"   netctl root  {e.node.root}")
        for p in e.pcaps:
            out.append(f"   pcap         {p}")
    return "\n".join(out)
