"""Firewall backends, real kernel, real packets: the behaviour both backends share.

Each test builds its own node (tests.integration.test_firewall_support.Topology) and
runs the backend inside it, so tables, chains, sysctls and conntrack entries die
with the namespaces.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pycni import errors
from pycni.firewall import get_backend
from pycni.firewall.base import PortConflict, PortMapping
from pycni.firewall.plan import sctp_supported
from tests.conftest import REPO
from tests.integration.test_firewall_support import (
    BACKENDS,
    GW4,
    HOST_OUT4,
    HOST_OUT4_B,
    HOST_OUT6,
    NETWORK,
    OUTSIDE4,
    OUTSIDE6,
    Servers,
    Topology,
    fw_state,
    in_ns,
    probe,
    servers,
    topo,
)

pytestmark = pytest.mark.root
__all__ = ["fw_state", "servers", "topo"]  # fixtures re-exported for pytest


@pytest.fixture(params=BACKENDS)
def fw(request: pytest.FixtureRequest, fw_state: Path) -> Any:
    return get_backend(request.param)


def publish(
    topo: Topology, fw: Any, container: Any, mappings: list[PortMapping], **kw: Any
) -> None:
    in_ns(topo.host, fw.add_port_mappings, container.attachment(), mappings, **kw)


# -- masquerade --------------------------------------------------------------------------


def test_masquerade_hides_container_behind_host_but_not_inside_subnet(
    topo: Topology, fw: Any, servers: Servers
) -> None:
    in_ns(topo.host, fw.add_masquerade, topo.c1.attachment())
    servers.start(topo.outside, "tcp", OUTSIDE4, 7000, "out")
    servers.start(topo.outside, "tcp", OUTSIDE6, 7000, "out6")
    servers.start(topo.c2.ns, "tcp", topo.c2.ip4, 7000, "c2")
    assert probe(topo.c1.ns, "tcp", OUTSIDE4, 7000) == f"out {HOST_OUT4}"
    assert probe(topo.c1.ns, "tcp", OUTSIDE6, 7000) == f"out6 {HOST_OUT6}"
    # Inside the subnet: the peer sees the container's own address.
    assert probe(topo.c1.ns, "tcp", topo.c2.ip4, 7000) == f"c2 {topo.c1.ip4}"
    # c2 is not masqueraded: the outside (routed back to the subnet) sees it as is.
    topo.route_outside_to_containers()
    assert probe(topo.c2.ns, "tcp", OUTSIDE4, 7000) == f"out {topo.c2.ip4}"
    assert in_ns(topo.host, fw.check_masquerade, topo.c1.attachment()) == []


@pytest.mark.parametrize("state_lost", [False, True], ids=["saved-state", "state-lost"])
def test_masquerade_removed_on_del_without_ips(
    topo: Topology, fw: Any, servers: Servers, fw_state: Path, state_lost: bool
) -> None:
    topo.route_outside_to_containers()
    servers.start(topo.outside, "tcp", OUTSIDE4, 7000, "out")
    in_ns(topo.host, fw.add_masquerade, topo.c1.attachment())
    in_ns(topo.host, fw.add_masquerade, topo.c2.attachment())
    assert probe(topo.c1.ns, "tcp", OUTSIDE4, 7000) == f"out {HOST_OUT4}"
    if state_lost:
        for path in sorted(fw_state.rglob("*.json")):
            path.unlink()
    # DEL knows only (network, containerID, ifname): no netns, no addresses.
    in_ns(topo.host, fw.del_masquerade, NETWORK, "c1", "eth0")
    in_ns(topo.host, fw.del_masquerade, NETWORK, "c1", "eth0")  # already gone: fine
    assert probe(topo.c1.ns, "tcp", OUTSIDE4, 7000) == f"out {topo.c1.ip4}"
    assert probe(topo.c2.ns, "tcp", OUTSIDE4, 7000) == f"out {HOST_OUT4}"
    assert (NETWORK, "c1", "eth0") not in in_ns(topo.host, fw.attachments)
    assert (NETWORK, "c2", "eth0") in in_ns(topo.host, fw.attachments)


# -- published ports -------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_published_port_reaches_container_with_client_address(
    topo: Topology, fw: Any, servers: Servers, proto: str
) -> None:
    servers.start(topo.c1.ns, proto, topo.c1.ip4, 80, "c1")
    servers.start(topo.c1.ns, proto, topo.c1.ip6, 80, "c1v6")
    publish(topo, fw, topo.c1, [PortMapping(8080, 80, proto)])
    # The container sees the real client, not the host (no SNAT for outside traffic).
    assert probe(topo.outside, proto, HOST_OUT4, 8080) == f"c1 {OUTSIDE4}"
    assert probe(topo.outside, proto, HOST_OUT4_B, 8080) == f"c1 {OUTSIDE4}"
    assert probe(topo.outside, proto, HOST_OUT6, 8080) == f"c1v6 {OUTSIDE6}"
    att = topo.c1.attachment()
    assert in_ns(topo.host, fw.check_port_mappings, att, [PortMapping(8080, 80, proto)]) == []
    in_ns(topo.host, fw.del_port_mappings, NETWORK, "c1", "eth0")
    assert probe(topo.outside, proto, HOST_OUT4, 8080, timeout=1).startswith("ERR")
    assert in_ns(topo.host, fw.check_port_mappings, att, [PortMapping(8080, 80, proto)])


def test_sctp_published_or_refused_cleanly(topo: Topology, fw: Any, fw_state: Path) -> None:
    mapping = PortMapping(9000, 90, "sctp")
    if sctp_supported():
        publish(topo, fw, topo.c1, [mapping])
        assert in_ns(topo.host, fw.check_port_mappings, topo.c1.attachment(), [mapping]) == []
        return
    with pytest.raises(errors.InvalidConfig, match="no SCTP support") as info:
        publish(topo, fw, topo.c1, [mapping])
    assert "modprobe sctp" in info.value.details
    assert list(fw_state.rglob("*.json")) == []
    assert in_ns(topo.host, fw.attachments) == set()


def test_host_ip_mapping_only_on_that_address(topo: Topology, fw: Any, servers: Servers) -> None:
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    publish(topo, fw, topo.c1, [PortMapping(8081, 80, "tcp", HOST_OUT4_B)])
    assert probe(topo.outside, "tcp", HOST_OUT4_B, 8081) == f"c1 {OUTSIDE4}"
    assert probe(topo.outside, "tcp", HOST_OUT4, 8081, timeout=1).startswith("ERR")
    assert probe(topo.outside, "tcp", HOST_OUT6, 8081, timeout=1).startswith("ERR")


def test_dnat_only_for_local_destinations(topo: Topology, fw: Any, servers: Servers) -> None:
    """CVE-2025-67499: traffic routed *through* the host to another container on the
    same port must not be captured by a published port."""
    topo.route_outside_to_containers()
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    servers.start(topo.c2.ns, "tcp", topo.c2.ip4, 8080, "c2")
    publish(topo, fw, topo.c1, [PortMapping(8080, 80)])
    assert probe(topo.outside, "tcp", topo.c2.ip4, 8080) == f"c2 {OUTSIDE4}"
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080) == f"c1 {OUTSIDE4}"


def test_from_the_host_itself_and_localhost(topo: Topology, fw: Any, servers: Servers) -> None:
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    servers.start(topo.c1.ns, "tcp", topo.c1.ip6, 80, "c1v6")
    publish(topo, fw, topo.c1, [PortMapping(8080, 80)])
    # Host-originated, to its own addresses: OUTPUT DNAT, the container sees the host.
    assert probe(topo.host, "tcp", HOST_OUT4, 8080) == f"c1 {HOST_OUT4}"
    assert probe(topo.host, "tcp", HOST_OUT6, 8080) == f"c1v6 {HOST_OUT6}"
    # 127.0.0.1 needs route_localnet on the bridge and SNAT to the bridge address.
    assert probe(topo.host, "tcp", "127.0.0.1", 8080) == f"c1 {GW4}"
    assert topo.host.sysctl("net.ipv4.conf.br0.route_localnet") == "1"
    # ::1 is left alone (cannot leave lo): refused locally, not black-holed.
    assert probe(topo.host, "tcp", "::1", 8080, timeout=2) == "ERR ConnectionRefusedError"


def test_hairpin_container_reaches_published_ports_via_host(
    topo: Topology, fw: Any, servers: Servers
) -> None:
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    servers.start(topo.c1.ns, "udp", topo.c1.ip4, 53, "c1u")
    in_ns(topo.host, fw.add_masquerade, topo.c1.attachment())
    publish(topo, fw, topo.c1, [PortMapping(8080, 80), PortMapping(5353, 53, "udp")])
    # Its own published port, and a neighbour's, through the host's address: the reply
    # must come back through the host, so the source is the bridge address.
    assert probe(topo.c1.ns, "tcp", HOST_OUT4, 8080) == f"c1 {GW4}"
    assert probe(topo.c2.ns, "tcp", HOST_OUT4, 8080) == f"c1 {GW4}"
    assert probe(topo.c2.ns, "udp", HOST_OUT4, 5353) == f"c1u {GW4}"


def test_masq_all_snats_outside_clients_too(topo: Topology, fw: Any, servers: Servers) -> None:
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    publish(topo, fw, topo.c1, [PortMapping(8080, 80)], masq_all=True)
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080) == f"c1 {GW4}"


def test_snat_false_means_no_hairpin_snat(topo: Topology, fw: Any, servers: Servers) -> None:
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    publish(topo, fw, topo.c1, [PortMapping(8080, 80)], snat=False)
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080) == f"c1 {OUTSIDE4}"
    # No hairpin SNAT: the neighbour arrives with its own address. (Whether the reply,
    # bridged straight back, is un-NATed depends on br_netfilter, so either way.)
    assert probe(topo.c2.ns, "tcp", HOST_OUT4, 8080, timeout=1) in (
        f"c1 {topo.c2.ip4}",
        "ERR TimeoutError",
        "ERR ConnectionResetError",
    )


# -- conditionsV4 / conditionsV6 ----------------------------------------------------------------


def test_conditions_restrict_who_is_dnated(topo: Topology, fw: Any, servers: Servers) -> None:
    """portmap's conditions, parsed into data: the source and input-interface matches
    decide whether a published port is rewritten; otherwise the host keeps the packet."""
    from pycni.firewall.conditions import parse

    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    servers.start(topo.c1.ns, "tcp", topo.c1.ip6, 80, "c1v6")
    servers.start(topo.c2.ns, "tcp", topo.c2.ip4, 80, "c2")
    servers.start(topo.c2.ns, "tcp", topo.c2.ip6, 80, "c2v6")
    # c1: only clients outside 198.51.100.0/24 (so not the outside namespace), in
    # iptables style; for IPv6 anything that does not arrive on br0, in nft style.
    c1 = {
        4: parse(["!", "-s", "198.51.100.0/24"], 4, "conditionsV4"),
        6: parse(['iifname != "br0"'], 6, "conditionsV6"),
    }
    # c2: only what arrives on an interface named out*, IPv4 only.
    c2 = {4: parse(["-i", "out+"], 4, "conditionsV4")}
    m1, m2 = [PortMapping(8080, 80)], [PortMapping(8090, 80)]
    publish(topo, fw, topo.c1, m1, conditions=c1)
    publish(topo, fw, topo.c2, m2, conditions=c2)

    # c1 over IPv4: the outside's source is excluded, so the host keeps the packet
    # (nothing listens there: refused); from the host itself (source 198.51.100.1,
    # also excluded) the same; from c2 (10.88.0.3) through the host: rewritten.
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080, timeout=1).startswith("ERR")
    assert probe(topo.host, "tcp", HOST_OUT4, 8080, timeout=1).startswith("ERR")
    assert probe(topo.c2.ns, "tcp", HOST_OUT4, 8080).startswith("c1 ")
    # c1 over IPv6: arriving on out0 is rewritten, and so is host-originated traffic
    # (no input interface, which is not br0); from c2 (arriving on br0) it is not.
    assert probe(topo.outside, "tcp", HOST_OUT6, 8080) == f"c1v6 {OUTSIDE6}"
    assert probe(topo.host, "tcp", HOST_OUT6, 8080).startswith("c1v6 ")
    assert probe(topo.c2.ns, "tcp", HOST_OUT6, 8080, timeout=1).startswith("ERR")
    # c2: IPv4 from out0 matches out*; the host itself does not; IPv6 has no
    # conditions, so it is published as usual (through the maps with nftables).
    assert probe(topo.outside, "tcp", HOST_OUT4, 8090) == f"c2 {OUTSIDE4}"
    assert probe(topo.host, "tcp", "127.0.0.1", 8090, timeout=1).startswith("ERR")
    assert probe(topo.outside, "tcp", HOST_OUT6, 8090) == f"c2v6 {OUTSIDE6}"
    assert probe(topo.host, "tcp", HOST_OUT6, 8090).startswith("c2v6 ")

    # CHECK knows the conditional rules; other conditions than the saved ones are missing.
    att1, att2 = topo.c1.attachment(), topo.c2.attachment()
    assert in_ns(topo.host, fw.check_port_mappings, att1, m1, c1) == []
    assert in_ns(topo.host, fw.check_port_mappings, att2, m2, c2) == []
    other = {4: parse(["-s", "192.0.2.0/24"], 4, "conditionsV4"), 6: c1[6]}
    assert in_ns(topo.host, fw.check_port_mappings, att1, m1, other) != []
    assert in_ns(topo.host, fw.check_port_mappings, att1, m1, {4: c1[4]}) != []
    # The records keep them: replay after a flush restores the same behaviour.
    topo.host.run("nft", "flush", "ruleset")
    if fw.name == "iptables":
        topo.host.run("iptables", "-t", "nat", "-F")
        topo.host.run("ip6tables", "-t", "nat", "-F")
    assert in_ns(topo.host, fw.replay) == 2
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080, timeout=1).startswith("ERR")
    assert probe(topo.outside, "tcp", HOST_OUT4, 8090) == f"c2 {OUTSIDE4}"
    assert probe(topo.outside, "tcp", HOST_OUT6, 8080) == f"c1v6 {OUTSIDE6}"
    # DEL removes exactly c1's rules (by handle with nftables), GC the rest.
    in_ns(topo.host, fw.del_port_mappings, NETWORK, "c1", "eth0")
    assert probe(topo.outside, "tcp", HOST_OUT6, 8080, timeout=1).startswith("ERR")
    assert probe(topo.outside, "tcp", HOST_OUT4, 8090) == f"c2 {OUTSIDE4}"
    assert in_ns(topo.host, fw.check_port_mappings, att2, m2, c2) == []
    assert in_ns(topo.host, fw.gc, NETWORK, set())
    assert probe(topo.outside, "tcp", HOST_OUT4, 8090, timeout=1).startswith("ERR")
    assert in_ns(topo.host, fw.attachments) == set()
    if fw.name == "nftables":
        listing = topo.host.run("nft", "list", "chain", "inet", "pycni", "conditional")
        assert "dnat" not in listing


def test_conditional_rules_lost_then_del_by_tag(topo: Topology, fw: Any, fw_state: Path) -> None:
    """DEL without the saved record still finds conditional rules by their owner tag."""
    from pycni.firewall.conditions import parse

    conds = {4: parse(["-s", "192.0.2.0/24"], 4, "conditionsV4")}
    publish(topo, fw, topo.c1, [PortMapping(8080, 80)], conditions=conds)
    for record in fw_state.rglob("*.json"):
        record.unlink()
    assert in_ns(topo.host, fw.attachments) == {(NETWORK, "c1", "eth0")}
    in_ns(topo.host, fw.del_port_mappings, NETWORK, "c1", "eth0")
    assert in_ns(topo.host, fw.attachments) == set()


# -- conflicts ----------------------------------------------------------------------------------


def test_port_conflicts_exact_wildcard_and_specific(
    topo: Topology, fw: Any, fw_state: Path
) -> None:
    a1, a2 = topo.c1.attachment(), topo.c2.attachment()
    in_ns(topo.host, fw.add_port_mappings, a1, [PortMapping(8080, 80)])
    before = sorted(p.name for p in fw_state.rglob("*"))
    for mapping in (
        PortMapping(8080, 81),  # exact
        PortMapping(8080, 81, "tcp", HOST_OUT4_B),  # specific vs the wildcard
        PortMapping(8080, 81, "tcp", "0.0.0.0"),
    ):
        with pytest.raises(PortConflict) as info:
            in_ns(topo.host, fw.add_port_mappings, a2, [PortMapping(9000, 90), mapping])
        assert info.value.holder == (NETWORK, "c1", "eth0")
        assert "port is already allocated" in str(info.value)
    # Nothing was added: not even the non-conflicting 9000 of the same request.
    assert sorted(p.name for p in fw_state.rglob("*")) == before
    assert (NETWORK, "c2", "eth0") not in in_ns(topo.host, fw.attachments)
    # Another protocol, or the same port number inside: no conflict; re-ADD is idempotent.
    in_ns(topo.host, fw.add_port_mappings, a2, [PortMapping(8080, 80, "udp")])
    in_ns(topo.host, fw.add_port_mappings, a1, [PortMapping(8080, 80)])

    # A specific address first, then the wildcard conflicts with it (the other way round).
    in_ns(topo.host, fw.add_port_mappings, a1, [PortMapping(7070, 70, "tcp", HOST_OUT4)])
    with pytest.raises(PortConflict):
        in_ns(topo.host, fw.add_port_mappings, a2, [PortMapping(7070, 71)])
    # A second specific address on the same port is fine.
    in_ns(topo.host, fw.add_port_mappings, a2, [PortMapping(7070, 71, "tcp", HOST_OUT4_B)])
    # Releasing on DEL frees the port for someone else.
    in_ns(topo.host, fw.del_port_mappings, NETWORK, "c1", "eth0")
    in_ns(topo.host, fw.add_port_mappings, a2, [PortMapping(8080, 81)])


RACE = r"""
import ipaddress, os, sys, time
sys.path.insert(0, {repo!r})
from pycni.firewall import get_backend
from pycni.firewall.base import Attachment, PortMapping, PortConflict
fw = get_backend(sys.argv[1])
att = Attachment("racenet", sys.argv[2], "eth0", [ipaddress.ip_interface(sys.argv[3])])
start = float(sys.argv[4])
while time.time() < start:
    pass
try:
    fw.add_port_mappings(att, [PortMapping(int(sys.argv[5]), 80)])
    print("won")
except PortConflict as exc:
    print("lost", exc.holder[1])
"""


def test_two_processes_racing_for_one_port(topo: Topology, fw: Any, fw_state: Path) -> None:
    code = RACE.format(repo=str(REPO))
    env = {**os.environ, "PYCNI_STATE_DIR": str(fw_state)}
    for round_ in range(4):
        port = 8100 + round_
        start = time.time() + 0.6
        procs = [
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    topo.host.name,
                    sys.executable,
                    "-c",
                    code,
                    fw.name,
                    f"r{round_}{who}",
                    f"10.88.0.{10 + who}/24",
                    str(start),
                    str(port),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for who in (1, 2)
        ]
        outs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        results = [out.strip() for out, _ in outs]
        assert sorted(results)[1] == "won", results
        winner = results.index("won") + 1
        assert results[2 - winner] == f"lost r{round_}{winner}", results


# -- UDP conntrack ---------------------------------------------------------------------------------


def test_udp_port_reused_by_another_container(topo: Topology, fw: Any, servers: Servers) -> None:
    servers.start(topo.c1.ns, "udp", topo.c1.ip4, 53, "c1")
    servers.start(topo.c2.ns, "udp", topo.c2.ip4, 53, "c2")
    # A client that keeps its source port (a resolver, a game) talks to the host port
    # before anything is published: conntrack remembers a flow to the host itself.
    assert probe(topo.outside, "udp", HOST_OUT4, 5353, timeout=0.5, sport=40000).startswith("ERR")
    publish(topo, fw, topo.c1, [PortMapping(5353, 53, "udp")])
    assert probe(topo.outside, "udp", HOST_OUT4, 5353, sport=40000) == f"c1 {OUTSIDE4}"
    # The port moves to another container: the old NAT binding must not survive.
    in_ns(topo.host, fw.del_port_mappings, NETWORK, "c1", "eth0")
    publish(topo, fw, topo.c2, [PortMapping(5353, 53, "udp")])
    assert probe(topo.outside, "udp", HOST_OUT4, 5353, sport=40000) == f"c2 {OUTSIDE4}"


# -- administrator precedence --------------------------------------------------------------------

ADMIN_FORWARD = """
table inet admin {
    chain forward {
        type filter hook forward priority filter; policy accept;
        meta l4proto tcp ct original proto-dst 8080 drop
    }
}
"""
ADMIN_PREROUTING = """
table inet admin {
    chain early {
        type filter hook prerouting priority -150; policy accept;
        tcp dport 8081 drop
    }
}
"""


@pytest.mark.parametrize("where", ["forward", "prerouting-before-dstnat"])
def test_admin_drop_rule_wins_over_published_port(
    topo: Topology, fw: Any, servers: Servers, where: str
) -> None:
    """CVE-2019-9946: the administrator's policy at the documented hooks beats us."""
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    publish(
        topo, fw, topo.c1, [PortMapping(8080, 80), PortMapping(8081, 80), PortMapping(8082, 80)]
    )
    topo.host.run("nft", "-f", "-", input=ADMIN_FORWARD if where == "forward" else ADMIN_PREROUTING)
    blocked = 8080 if where == "forward" else 8081
    assert probe(topo.outside, "tcp", HOST_OUT4, blocked, timeout=1).startswith("ERR")
    assert probe(topo.outside, "tcp", HOST_OUT4, 8082) == f"c1 {OUTSIDE4}"
    # Still true after more ADDs (we never reorder or take precedence later).
    publish(topo, fw, topo.c2, [PortMapping(9090, 80)])
    assert probe(topo.outside, "tcp", HOST_OUT4, blocked, timeout=1).startswith("ERR")


# -- gc and replay -----------------------------------------------------------------------------------


def test_gc_keeps_valid_and_removes_the_rest(
    topo: Topology, fw: Any, servers: Servers, fw_state: Path
) -> None:
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    servers.start(topo.c2.ns, "tcp", topo.c2.ip4, 80, "c2")
    for c, port in ((topo.c1, 8080), (topo.c2, 8090)):
        in_ns(topo.host, fw.add_masquerade, c.attachment())
        publish(topo, fw, c, [PortMapping(port, 80)])
    other = topo.c2.attachment(network="othernet", cid="c9")
    in_ns(topo.host, fw.add_port_mappings, other, [PortMapping(8095, 80)])
    removed = in_ns(topo.host, fw.gc, NETWORK, {("c1", "eth0")})
    assert removed and all("c2" in line for line in removed), removed
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080) == f"c1 {OUTSIDE4}"
    assert probe(topo.outside, "tcp", HOST_OUT4, 8090, timeout=1).startswith("ERR")
    assert probe(topo.outside, "tcp", HOST_OUT4, 8095) == f"c2 {OUTSIDE4}"  # other network
    assert in_ns(topo.host, fw.attachments) == {(NETWORK, "c1", "eth0"), ("othernet", "c9", "eth0")}
    # The port freed by GC can be published again by someone else.
    in_ns(topo.host, fw.add_port_mappings, topo.c2.attachment(cid="c3"), [PortMapping(8090, 80)])
    assert in_ns(topo.host, fw.gc, NETWORK, {("c1", "eth0"), ("c3", "eth0")}) == []


def test_replay_after_flush_restores_traffic(topo: Topology, fw: Any, servers: Servers) -> None:
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    servers.start(topo.outside, "tcp", OUTSIDE4, 7000, "out")
    in_ns(topo.host, fw.add_masquerade, topo.c1.attachment())
    publish(topo, fw, topo.c1, [PortMapping(8080, 80)])
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080) == f"c1 {OUTSIDE4}"
    topo.host.run("nft", "flush", "ruleset")  # also empties iptables-nft's tables
    if fw.name == "iptables":
        topo.host.run("iptables", "-t", "nat", "-F")
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080, timeout=1).startswith("ERR")
    assert in_ns(topo.host, fw.replay) == 1
    assert in_ns(topo.host, fw.replay) == 1  # idempotent
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080) == f"c1 {OUTSIDE4}"
    assert probe(topo.c1.ns, "tcp", OUTSIDE4, 7000) == f"out {HOST_OUT4}"
    assert probe(topo.host, "tcp", "127.0.0.1", 8080) == f"c1 {GW4}"
    # ... and normal operations go on from the replayed state.
    in_ns(topo.host, fw.del_port_mappings, NETWORK, "c1", "eth0")
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080, timeout=1).startswith("ERR")


def test_add_after_flush_rebuilds_skeleton(topo: Topology, fw: Any, servers: Servers) -> None:
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    servers.start(topo.c2.ns, "tcp", topo.c2.ip4, 80, "c2")
    publish(topo, fw, topo.c1, [PortMapping(8080, 80)])
    topo.host.run("nft", "flush", "ruleset")
    publish(topo, fw, topo.c2, [PortMapping(8090, 80)])
    assert probe(topo.outside, "tcp", HOST_OUT4, 8090) == f"c2 {OUTSIDE4}"
    # c1's mapping is gone from the kernel until replay; CHECK says so.
    assert in_ns(topo.host, fw.check_port_mappings, topo.c1.attachment(), [PortMapping(8080, 80)])


# -- localnet guard -------------------------------------------------------------------------------

CRAFT = r"""
import socket, struct, sys
# A TCP SYN to 127.0.0.1 in a raw Ethernet frame to the bridge's MAC: what a hostile
# neighbour on the bridge sends. (Built by hand: scapy reroutes 127/8 via lo.)
def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
mac, src, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
sa, da = socket.inet_aton(src), socket.inet_aton("127.0.0.1")
tcp = struct.pack("!HHIIBBHHH", 41000, port, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
tcp = tcp[:16] + struct.pack("!H", csum(sa + da + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, sa, da)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
for _ in range(3):
    s.send(bytes.fromhex(mac.replace(":", "")) + s.getsockname()[4] + b"\x08\x00" + ip + tcp)
"""

OBSERVE = """
table inet observe {
    chain delivered {
        type filter hook input priority 100; policy accept;
        iifname "br0" ip daddr 127.0.0.0/8 counter
    }
    chain forwarded {
        type filter hook forward priority 100; policy accept;
        ct original ip daddr 127.0.0.0/8 counter
    }
}
"""


def _observed(topo: Topology) -> tuple[int, int]:
    """(packets to 127/8 delivered locally from br0, packets to 127/8 DNATed onwards)."""
    out = topo.host.run("nft", "-j", "list", "table", "inet", "observe")
    import json

    counters = [
        e["counter"]["packets"]
        for item in json.loads(out)["nftables"]
        if "rule" in item
        for e in item["rule"]["expr"]
        if "counter" in e
    ]
    return counters[0], counters[1]


def test_localnet_guard_drops_127_from_the_bridge(
    topo: Topology, fw: Any, servers: Servers
) -> None:
    """CVE-2020-8558 / moby#45610: route_localnet=1 on the bridge must not let a
    neighbour reach the host's 127.0.0.1 services or a 127.0.0.1-published port."""
    servers.start(topo.host, "tcp", "127.0.0.1", 9999, "host-local")
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    publish(topo, fw, topo.c1, [PortMapping(8080, 80, "tcp", "127.0.0.1")])
    assert topo.host.sysctl("net.ipv4.conf.br0.route_localnet") == "1"
    assert probe(topo.host, "tcp", "127.0.0.1", 8080) == f"c1 {GW4}"  # the host itself: yes
    topo.host.run("nft", "-f", "-", input=OBSERVE)
    mac = topo.host.link("br0")["address"]  # type: ignore[index]

    def craft(port: int) -> None:
        topo.c2.ns.run(sys.executable, "-c", CRAFT, mac, topo.c2.ip4, str(port))
        time.sleep(0.2)

    craft(9999)
    craft(8080)
    assert _observed(topo) == (0, 0)
    # Control: without the guard the host does accept 127.0.0.1 from the bridge (so the
    # zero above is the guard's doing); the published port still is not DNATed.
    if fw.name == "nftables":
        topo.host.run("nft", "flush", "chain", "inet", "pycni", "localnet-guard")
    else:
        topo.host.run("iptables", "-t", "raw", "-F", "PYCNI-LOCALNET")
    craft(9999)
    craft(8080)
    delivered, dnated = _observed(topo)
    assert delivered > 0 and dnated == 0
