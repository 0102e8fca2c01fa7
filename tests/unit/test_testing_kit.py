"""pycni.testing's pure parts, without root: run tags, topology specs turned into
commands (recorded, not run), and netctl graph's writers."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from pycni.runtime.graph import Edge, Graph, Node
from pycni.testing import runs
from pycni.testing.ns import Netns
from pycni.testing.topology import TopologyError, build


def test_run_tag_names_this_process_and_its_start() -> None:
    tag = runs.current_tag()
    parsed = runs.parse(f"{tag}-client-abc123")
    assert parsed is not None and parsed[0] == tag and parsed[1] == os.getpid()
    assert runs.alive(tag)
    start = runs.start_time(os.getpid())
    assert start is not None
    # same pid, another start time: a reused pid is not the same run
    assert not runs.alive(f"pkt{runs._b36(os.getpid())}_{runs._b36(start + 1)}")
    # every pid and start time round-trips (base 36 digits include x: the separator is _)
    for pid, st in ((1, 0), (33, 35), (1221, 44061), (4194304, 10**12), (43, 1189)):
        assert runs.parse(f"pkt{runs._b36(pid)}_{runs._b36(st)}-n-1")[1:] == (pid, st)  # type: ignore[index]
    assert runs.alive("pyt123c-abc")  # not a run tag: never reaped
    assert runs.parse("pktZZ-x") is None and runs.parse("lo") is None


class FakeHost:
    """Records what the topology would run, instead of running it."""

    tag = "pkt1x1"
    netns_dir = "/run/netns"
    env: dict[str, str] = {}
    rootless = False

    def __init__(self) -> None:
        self.commands: list[tuple[str, ...]] = []

    def argv(self, *cmd: str) -> list[str]:
        return list(cmd)

    def run(self, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        self.commands.append(cmd)
        return subprocess.CompletedProcess(list(cmd), 0, "", "")


def _build(spec: dict[str, Any]) -> tuple[FakeHost, list[str]]:
    host = FakeHost()
    closed: list[str] = []

    def make(label: str) -> Netns:
        return Netns(f"pkt1x1-{label}-0", host, label)  # type: ignore[arg-type]

    def no_nodes(label: str) -> Any:
        raise AssertionError("no netctl nodes in these specs")

    try:
        build(spec, make, no_nodes, lambda obj: closed.append(obj.label))
    finally:
        pass
    return host, closed


def _cmds(host: FakeHost) -> list[str]:
    return [" ".join(c) for c in host.commands]


def test_bridge_ports_get_numbered_veth_ends_enslaved_to_the_bridge() -> None:
    host, _ = _build(
        {
            "nodes": {"r": {"bridges": {"lan": {"addresses": ["10.0.1.1/24"]}}}, "a": {}, "b": {}},
            "links": [["a:eth0", "r:lan"], ["b:eth0", "r:lan"]],
            "addresses": {"a:eth0": ["10.0.1.2/24"]},
        }
    )
    cmds = _cmds(host)
    assert "ip netns exec pkt1x1-r-0 ip link add lan type bridge" in cmds
    assert any(
        "ip link add eth0 netns pkt1x1-a-0 type veth peer name lanp1 netns pkt1x1-r-0" in c
        for c in cmds
    )
    assert any("peer name lanp2 netns pkt1x1-r-0" in c for c in cmds)
    assert "ip netns exec pkt1x1-r-0 ip link set lanp2 master lan" in cmds
    assert "ip netns exec pkt1x1-a-0 ip addr add 10.0.1.2/24 dev eth0" in cmds


def test_vxlan_with_three_members_uses_head_end_replication() -> None:
    host, _ = _build(
        {
            "nodes": {"a": {}, "b": {}, "c": {}},
            "vxlans": [
                {
                    "name": "vx1",
                    "vni": 7,
                    "nodes": {
                        "a": {"underlay": "192.0.2.1"},
                        "b": {"underlay": "192.0.2.2"},
                        "c": {"underlay": "192.0.2.3"},
                    },
                }
            ],
        }
    )
    cmds = _cmds(host)
    assert (
        "ip netns exec pkt1x1-a-0 ip link add vx1 type vxlan id 7 local 192.0.2.1 dstport 4789"
        in cmds
    )
    assert (
        "ip netns exec pkt1x1-a-0 bridge fdb append 00:00:00:00:00:00 dev vx1 dst 192.0.2.3" in cmds
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nodes": {}}, "needs `nodes:`"),
        ({"nodes": {"a": {}}, "lnks": []}, "unknown topology keys"),
        ({"nodes": {"a": {}, "b": {}}, "links": [["a", "b:eth0"]]}, "NODE:IFNAME"),
        ({"nodes": {"a": {}}, "links": [["a:eth0", "z:eth0"]]}, "no node 'z'"),
        (
            {"nodes": {"a": {}, "b": {}}, "links": [["a:averyveryverylongname", "b:e"]]},
            "15 characters",
        ),
        ({"nodes": {"a": {"containers": {"x": {}}}}}, "netctl: true"),
        ({"nodes": {"a/b": {}}}, "no '/'"),
        ({"nodes": {"a": {}}, "addresses": {"a:eth0": ["10.0.0.300/24"]}}, "does not appear"),
        (
            {"nodes": {"a": {}}, "vxlans": [{"vni": 1, "nodes": {"a": {"underlay": "1.1.1.1"}}}]},
            "two nodes",
        ),
    ],
)
def test_spec_errors_say_what_to_write(spec: dict[str, Any], message: str) -> None:
    with pytest.raises((TopologyError, ValueError), match=message):
        _build(spec)


def test_a_failed_build_closes_what_it_made() -> None:
    closed: list[str] = []
    host = FakeHost()

    def make(label: str) -> Netns:
        return Netns(f"pkt1x1-{label}-0", host, label)  # type: ignore[arg-type]

    with pytest.raises(TopologyError):
        build(
            {"nodes": {"a": {}, "b": {}}, "links": [["a:eth0", "q:eth0"]]},
            make,
            lambda label: None,  # type: ignore[arg-type, return-value]
            lambda obj: closed.append(obj.label),
        )
    assert sorted(closed) == ["a", "b"]


def test_graph_writers_escape_and_shape() -> None:
    g = Graph(
        [
            Node("host", "host", ["host"]),
            Node("net:a", "network", ['network "a"', "10.0.0.0/24 gw 10.0.0.1"]),
            Node("ctr:1", "container", ["web<1>", "abc"]),
            Node("port:8080", "port", ["0.0.0.0:8080/tcp"]),
        ],
        [
            Edge("host", "net:a", "br0", "dashed"),
            Edge("ctr:1", "net:a", "eth0 10.0.0.2/24"),
            Edge("port:8080", "ctr:1", "-> 80/tcp"),
        ],
    )
    dot = g.to_dot()
    assert 'label="network \\"a\\"\\n10.0.0.0/24 gw 10.0.0.1"' in dot
    assert '"host" -- "net:a" [label="br0", style=dashed];' in dot
    mermaid = g.to_mermaid()
    assert 'n1(["network #quot;a#quot;<br/>10.0.0.0/24 gw 10.0.0.1"])' in mermaid
    assert 'n2["web&lt;1&gt;<br/>abc"]' in mermaid
    assert 'n0 -.-|"br0"| n1' in mermaid and 'n3 ---|"-&gt; 80/tcp"| n2' in mermaid
    text = g.to_text()
    assert '[container] web<1> | abc\n    -- network "a" (eth0 10.0.0.2/24)' in text
