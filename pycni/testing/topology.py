"""Topologies from a dict or a YAML file.

    nodes:
      client: {}                                  # a namespace
      router:
        sysctls: {net.ipv4.ip_forward: 1}
        bridges: {lan: {addresses: [10.0.1.1/24]}}  # a Linux bridge in router
      web:
        netctl: true                              # a node: its own netctl root
        routes: [default via 10.0.1.1]
        networks: {front: {subnet: 10.89.0.0/24}} # netctl network create
        containers:                               # netctl run -d
          api: {network: front, publish: ["8080:80"], command: [python3, -m, http.server, "80"]}
    links:                                        # veth pairs
      - [client:eth0, router:eth0]                # "node:ifname" at each end
      - {endpoints: [web:eth0, router:lan], addresses: [10.0.1.2/24]}   # into bridge lan
    addresses:
      client:eth0: [10.0.0.2/24]
      router:eth0: [10.0.0.1/24]
    vxlans:                                       # a VXLAN device on each named node
      - name: vx0
        vni: 42
        nodes: {a: {underlay: 192.0.2.1, address: 10.9.0.1/24}, b: {underlay: 192.0.2.2, address: 10.9.0.2/24}}

Every object is addressable: `topo["client"]` (a Netns or a Node), `topo["web/api"]`
(a container), `topo.ip("client:eth0")`, `topo.ns("web")`. Interface names are per
namespace, so the same spec runs in parallel (xdist, or two pytest runs) without
collisions; only the namespaces' global names carry the run tag.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.testing.node import Container, Node
from pycni.testing.ns import PY, Netns


class TopologyError(ValueError):
    """The spec is wrong (names the key and what to write instead)."""


def load_spec(
    spec: Mapping[str, Any] | str | Path, relative_to: Path | None = None
) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    path = Path(spec)
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    import importlib

    try:
        yaml = importlib.import_module("yaml")  # PyYAML, untyped: Any
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise TopologyError("a YAML topology needs PyYAML: pip install 'pycni[testing]'") from exc
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise TopologyError(f"{path}: a topology is a mapping with nodes/links/...")
    return data


def _endpoint(text: str) -> tuple[str, str]:
    node, sep, ifname = str(text).partition(":")
    if not sep or not node or not ifname:
        raise TopologyError(f"link endpoint {text!r}: write NODE:IFNAME")
    if len(ifname) > 15:
        raise TopologyError(f"link endpoint {text!r}: interface names are at most 15 characters")
    return node, ifname


@dataclass
class Link:
    a: str  # "node:ifname"
    b: str  # "node:ifname", or a description (a VXLAN's remote ends)
    kind: str = "veth"


@dataclass
class Topology:
    nodes: dict[str, Netns | Node] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)

    # -- access -------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        node, sep, container = name.partition("/")
        if node not in self.nodes:
            raise KeyError(f"no node {node!r} in this topology (nodes: {', '.join(self.nodes)})")
        obj = self.nodes[node]
        if sep:
            if not isinstance(obj, Node):
                raise KeyError(f"{node!r} is a plain namespace: containers live on netctl nodes")
            return Container(obj, container)
        return obj

    def ns(self, name: str) -> Netns:
        obj = self.nodes[name]
        return obj.ns if isinstance(obj, Node) else obj

    def ip(self, ref: str) -> str:
        """The first address of "node:ifname", or of the container "node/name"."""
        if "/" in ref:
            return str(self[ref].ip)
        node, ifname = _endpoint(ref)
        addrs = self.ns(node).addrs(ifname)
        if not addrs:
            raise KeyError(f"{ref} has no address")
        return addrs[0].split("/")[0]

    def peers(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for link in self.links:
            pairs = (
                [(link.a, link.b)] if link.kind != "veth" else [(link.a, link.b), (link.b, link.a)]
            )
            for here, there in pairs:
                node, ifname = _endpoint(here)
                out.setdefault(node, {})[ifname] = there
        return out

    def close(self) -> None:
        """Tear everything down (containers first, then namespaces); never raises for
        what is already gone."""
        closer = self._closer
        for obj in reversed(list(self.nodes.values())):
            closer(obj)
        self.nodes.clear()

    _closer: Callable[[Netns | Node], None] = field(default=lambda obj: None, repr=False)


def build(
    spec: Mapping[str, Any] | str | Path,
    make_netns: Callable[[str], Netns],
    make_node: Callable[[str], Node],
    closer: Callable[[Netns | Node], None],
    relative_to: Path | None = None,
) -> Topology:
    data = load_spec(spec, relative_to)
    unknown = set(data) - {"nodes", "links", "addresses", "vxlans", "name"}
    if unknown:
        raise TopologyError(
            f"unknown topology keys {sorted(unknown)}: use nodes, links, addresses, vxlans"
        )
    nodes_spec = data.get("nodes") or {}
    if not isinstance(nodes_spec, Mapping) or not nodes_spec:
        raise TopologyError("a topology needs `nodes:` (a mapping of name -> settings)")
    topo = Topology(spec=data, _closer=closer)
    try:
        _build(topo, data, nodes_spec, make_netns, make_node)
    except BaseException:
        topo.close()
        raise
    return topo


def _build(
    topo: Topology,
    data: Mapping[str, Any],
    nodes_spec: Mapping[str, Any],
    make_netns: Callable[[str], Netns],
    make_node: Callable[[str], Node],
) -> None:
    for name, conf in nodes_spec.items():
        conf = conf or {}
        if "/" in name or ":" in name:
            raise TopologyError(f"node name {name!r}: no '/' or ':' in node names")
        topo.nodes[name] = make_node(name) if conf.get("netctl") else make_netns(name)
    bridges: dict[tuple[str, str], dict[str, Any]] = {}
    for name, conf in nodes_spec.items():
        conf = conf or {}
        ns = topo.ns(name)
        for key, value in (conf.get("sysctls") or {}).items():
            ns.run("sysctl", "-qw", f"{key}={value}")
        for br, brconf in (conf.get("bridges") or {}).items():
            brconf = brconf or {}
            ns.run("ip", "link", "add", br, "type", "bridge")
            for addr in brconf.get("addresses") or []:
                extra = ["nodad"] if ":" in addr else []  # usable at once, as on links
                ns.run("ip", "addr", "add", addr, "dev", br, *extra)
            ns.run("ip", "link", "set", br, "up")
            bridges[(name, br)] = brconf
    addresses: dict[str, list[str]] = {k: list(v) for k, v in (data.get("addresses") or {}).items()}
    for name, conf in nodes_spec.items():
        for ifname, addrs in ((conf or {}).get("addresses") or {}).items():
            addresses.setdefault(f"{name}:{ifname}", []).extend(
                addrs if isinstance(addrs, list) else [addrs]
            )
    port_numbers: dict[tuple[str, str], int] = {}
    for raw in data.get("links") or []:
        if isinstance(raw, Mapping):
            ends, link_addrs = list(raw.get("endpoints") or []), list(raw.get("addresses") or [])
            mtu = raw.get("mtu")
        else:
            ends, link_addrs, mtu = list(raw), [], None
        if len(ends) != 2:
            raise TopologyError(f"link {raw!r}: a link has two endpoints NODE:IFNAME")
        real_ends = []
        for end in ends:
            node, ifname = _endpoint(end)
            if node not in topo.nodes:
                raise TopologyError(f"link {raw!r}: no node {node!r}")
            if (node, ifname) in bridges:  # a veth end enslaved to that bridge
                n = port_numbers[(node, ifname)] = port_numbers.get((node, ifname), 0) + 1
                real_ends.append((node, f"{ifname[:10]}p{n}", ifname))
            else:
                real_ends.append((node, ifname, ""))
        (na, ia, _), (nb, ib, _) = real_ends
        host = topo.ns(na).host
        cmd = [
            "ip",
            "link",
            "add",
            ia,
            "netns",
            topo.ns(na).name,
            "type",
            "veth",
            "peer",
            "name",
            ib,
            "netns",
            topo.ns(nb).name,
        ]
        host.run(*cmd)
        for node, ifname, br in real_ends:
            ns = topo.ns(node)
            if mtu:
                ns.run("ip", "link", "set", ifname, "mtu", str(mtu))
            if br:
                ns.run("ip", "link", "set", ifname, "master", br)
            ns.run("ip", "link", "set", ifname, "up")
        topo.links.append(Link(f"{na}:{ia}", f"{nb}:{ib}"))
        for (node, ifname, _), addr in zip(real_ends, link_addrs, strict=False):
            if addr:
                addresses.setdefault(f"{node}:{ifname}", []).append(addr)
    for ref, addrs in addresses.items():
        node, ifname = _endpoint(ref)
        for addr in addrs:
            ipaddress.ip_interface(addr)  # a clear error for a typo
            extra = ["nodad"] if ":" in addr else []
            topo.ns(node).run("ip", "addr", "add", addr, "dev", ifname, *extra)
    for vx in data.get("vxlans") or []:
        _vxlan(topo, vx)
    for name, conf in nodes_spec.items():
        for route in (conf or {}).get("routes") or []:
            words = route.split() if isinstance(route, str) else [str(w) for w in route]
            family = "-6" if any(":" in w for w in words) else "-4"
            topo.ns(name).run("ip", family, "route", "add", *words)
    for name, conf in nodes_spec.items():
        conf = conf or {}
        obj = topo.nodes[name]
        if not isinstance(obj, Node):
            if conf.get("networks") or conf.get("containers"):
                raise TopologyError(f"node {name!r}: networks/containers need `netctl: true`")
            continue
        for net, nconf in (conf.get("networks") or {}).items():
            args = ["network", "create"]
            for key, value in (nconf or {}).items():
                for v in value if isinstance(value, list) else [value]:
                    args += (
                        [f"--{key.replace('_', '-')}", str(v)] if v is not True else [f"--{key}"]
                    )
            obj.netctl(*args, net)
        for cname, cconf in (conf.get("containers") or {}).items():
            cconf = dict(cconf or {})
            args = ["run", "-d", "--name", cname]
            if cconf.get("network"):
                args += ["--network", str(cconf.pop("network"))]
            for p in cconf.pop("publish", []) or []:
                args += ["-p", str(p)]
            command = cconf.pop("command", None) or [PY, "-c", "import time; time.sleep(3600)"]
            for key, value in cconf.items():
                for v in value if isinstance(value, list) else [value]:
                    args += [f"--{key.replace('_', '-')}", str(v)]
            obj.netctl(*args, "--", *[str(w) for w in command])


def _vxlan(topo: Topology, vx: Mapping[str, Any]) -> None:
    name, vni = str(vx.get("name", "vx0")), int(vx["vni"])
    port = int(vx.get("port", 4789))
    members: Mapping[str, Any] = vx.get("nodes") or {}
    if len(members) < 2:
        raise TopologyError(f"vxlan {name}: list at least two nodes with their underlay address")
    for node, conf in members.items():
        ns = topo.ns(node)
        local = str(conf["underlay"])
        others = [str(c["underlay"]) for n, c in members.items() if n != node]
        args = [
            "ip",
            "link",
            "add",
            name,
            "type",
            "vxlan",
            "id",
            str(vni),
            "local",
            local,
            "dstport",
            str(port),
        ]
        if conf.get("dev"):
            args += ["dev", str(conf["dev"])]
        if len(others) == 1:
            args += ["remote", others[0]]
        ns.run(*args)
        if len(others) > 1:  # head-end replication: one all-zeros FDB entry per peer
            for other in others:
                ns.run("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", name, "dst", other)
        if conf.get("address"):
            addr = str(conf["address"])
            ns.run("ip", "addr", "add", addr, "dev", name, *(["nodad"] if ":" in addr else []))
        ns.run("ip", "link", "set", name, "up")
        topo.links.append(Link(f"{node}:{name}", f"remote {', '.join(others)}", "vxlan"))
