"""The picture of a host's container networks: networks (with their bridge, subnets and
gateway), containers (with their addresses on each network), published ports, and the
host; containers on several networks are what connects networks.

A `Graph` is plain data, built from netctl's own records (`from_store`) and written as
Graphviz DOT (`to_dot`), mermaid (`to_mermaid`), or plain text (`to_text`); SVG is
DOT laid out by Graphviz's `dot` (`to_svg`), a well-kept layout engine, rather than
boxes placed by hand.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pycni.runtime.paths import Paths


@dataclass
class Node:
    id: str
    kind: str  # host | network | container | port
    lines: list[str]  # first line is the title


@dataclass
class Edge:
    a: str
    b: str
    label: str = ""
    style: str = "solid"  # solid | dashed


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node(self, id: str) -> Node | None:
        return next((n for n in self.nodes if n.id == id), None)

    def node_ids(self) -> set[str]:
        return {n.id for n in self.nodes}

    # -- writers --------------------------------------------------------------------------

    def to_dot(self) -> str:
        shapes = {
            "host": 'shape=box3d, style=filled, fillcolor="#eeeeee"',
            "network": 'shape=box, style="rounded,filled", fillcolor="#dbeafe"',
            "container": 'shape=box, style=filled, fillcolor="#dcfce7"',
            "port": 'shape=cds, style=filled, fillcolor="#fef3c7"',
        }
        out = [
            "graph netctl {",
            '  graph [rankdir=LR, fontname="Helvetica"];',
            '  node [fontname="Helvetica", fontsize=10];',
            '  edge [fontname="Helvetica", fontsize=9];',
        ]
        for n in self.nodes:
            label = "\\n".join(_dot_escape(line) for line in n.lines)
            out.append(f'  "{_dot_escape(n.id)}" [label="{label}", {shapes[n.kind]}];')
        for e in self.edges:
            attrs = [f'label="{_dot_escape(e.label)}"'] if e.label else []
            if e.style != "solid":
                attrs.append(f"style={e.style}")
            suffix = f" [{', '.join(attrs)}]" if attrs else ""
            out.append(f'  "{_dot_escape(e.a)}" -- "{_dot_escape(e.b)}"{suffix};')
        out.append("}")
        return "\n".join(out) + "\n"

    def to_mermaid(self) -> str:
        ids = {n.id: f"n{i}" for i, n in enumerate(self.nodes)}
        shape = {
            "host": ("[[", "]]"),
            "network": ("([", "])"),
            "container": ("[", "]"),
            "port": ("{{", "}}"),
        }
        out = ["flowchart LR"]
        for n in self.nodes:
            left, right = shape[n.kind]
            label = "<br/>".join(_mermaid_escape(line) for line in n.lines)
            out.append(f'  {ids[n.id]}{left}"{label}"{right}')
        for e in self.edges:
            arrow = "-.-" if e.style == "dashed" else "---"
            label = f'|"{_mermaid_escape(e.label)}"|' if e.label else ""
            out.append(f"  {ids[e.a]} {arrow}{label} {ids[e.b]}")
        return "\n".join(out) + "\n"

    def to_text(self) -> str:
        out = []
        for n in self.nodes:
            out.append(f"[{n.kind}] " + " | ".join(n.lines))
            for e in self.edges:
                if e.a == n.id or e.b == n.id:
                    other = self.node(e.b if e.a == n.id else e.a)
                    if other is not None:
                        label = f" ({e.label})" if e.label else ""
                        out.append(f"    -- {other.lines[0]}{label}")
        return "\n".join(out) + "\n"

    def to_svg(self, timeout: float = 30) -> str:
        dot = shutil.which("dot")
        if dot is None:
            raise FileNotFoundError(
                "SVG output needs Graphviz's `dot` (Debian: apt-get install graphviz); "
                "--format dot and --format mermaid work without it"
            )
        proc = subprocess.run(
            [dot, "-Tsvg"], input=self.to_dot(), capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dot -Tsvg failed: {proc.stderr.strip()}")
        return proc.stdout


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _mermaid_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace('"', "#quot;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\n", " ")
    )


def from_store(paths: Paths | None = None, only: list[str] | None = None) -> Graph:
    """The graph of the networks and the containers netctl knows on this host (`only`:
    just these networks and what is attached to them)."""
    from pycni.runtime.containers import ContainerStore
    from pycni.runtime.networks import NetworkStore

    store = NetworkStore(paths)
    networks = [n for n in store.list() if n.kind not in ("host", "none")]
    if only:
        networks = [n for n in networks if n.name in only or n.id.startswith(tuple(only))]
    records = ContainerStore(store.paths)
    g = Graph()
    g.nodes.append(Node("host", "host", ["host"]))
    names = {n.name for n in networks}
    for net in networks:
        lines = [f"network {net.name}", f"driver {net.driver}"]
        if net.bridge:
            lines.append(f"bridge {net.bridge}")
        for c in net.ipam:
            lines.append(f"{c.subnet} gw {c.gateway}")
        if net.internal:
            lines.append("internal")
        g.nodes.append(Node(f"net:{net.name}", "network", lines))
        if not net.internal:
            g.edges.append(Edge("host", f"net:{net.name}", net.bridge or "", "dashed"))
    by_id: dict[str, str] = {}
    recs = [records.refresh(r) for r in records.all() if not r.torn_down]
    for rec in recs:
        attached = [a for a in rec.attachments if a.network in names]
        mode = rec.network_mode
        if (
            only
            and not attached
            and not any(
                mode == f"container:{o.name}" or mode == f"container:{o.id}"
                for o in recs
                if o.attachments
            )
        ):
            continue
        by_id[rec.id] = f"ctr:{rec.id}"
        g.nodes.append(Node(f"ctr:{rec.id}", "container", [rec.name, rec.id[:12], rec.status]))
        for att in attached:
            g.edges.append(
                Edge(f"ctr:{rec.id}", f"net:{att.network}", f"{att.ifname} {' '.join(att.ips)}")
            )
        if mode == "host" and not only:
            g.edges.append(Edge(f"ctr:{rec.id}", "host", "host network", "dashed"))
        for p in rec.ports:
            pid = f"port:{p.host_ip or '0.0.0.0'}:{p.host_port}/{p.protocol}"
            if g.node(pid) is None:
                g.nodes.append(
                    Node(pid, "port", [f"{p.host_ip or '0.0.0.0'}:{p.host_port}/{p.protocol}"])
                )
                g.edges.append(Edge("host", pid, "", "dashed"))
            g.edges.append(Edge(pid, f"ctr:{rec.id}", f"-> {p.container_port}/{p.protocol}"))
    for rec in recs:
        mode = rec.network_mode
        if mode.startswith("container:") and f"ctr:{rec.id}" in g.node_ids():
            target = mode.split(":", 1)[1]
            peer = next((r for r in recs if r.id.startswith(target) or r.name == target), None)
            if peer is not None and peer.id in by_id:
                g.edges.append(Edge(f"ctr:{rec.id}", by_id[peer.id], "shares netns", "dashed"))
    return g
