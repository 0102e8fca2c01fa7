"""Generated firewall input, golden: the nft JSON batches and the iptables-restore text.

No kernel here; the integration tests prove the same batches work on a real one.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycni.firewall import iptables, nftables
from pycni.firewall.base import Attachment, PortMapping
from pycni.firewall.plan import Record

T = {"family": "inet", "table": "pycni"}
TAG = "net/cid/eth0"
DN = "PYCNI-DN-f782195e255238dfa3b"
HP = "PYCNI-HP-f782195e255238dfa3b"
MQ = "PYCNI-MQ-f782195e255238dfa3b"


def record(
    *, masq: bool = True, ports: bool = True, snat: bool = True, masq_all: bool = False
) -> Record:
    att = Attachment(
        "net",
        "cid",
        "eth0",
        [ipaddress.ip_interface("10.0.0.2/24"), ipaddress.ip_interface("fd00::2/64")],
        "br0",
    )
    r = Record(att.key, "nftables")
    r.masquerade = att if masq else None
    if ports:
        r.ports = att
        r.mappings = [PortMapping(8080, 80), PortMapping(53, 53, "udp", "192.0.2.1")]
    r.snat, r.masq_all = snat, masq_all
    return r


def elem(name: str, verb: str, *items: Any) -> dict[str, Any]:
    return {verb: {"element": {**T, "name": name, "elem": list(items)}}}


def tagged(val: Any, data: Any = None) -> Any:
    e = {"elem": {"val": val, "comment": TAG}}
    return e if data is None else [e, data]


def pair(addr: str, plen: int) -> dict[str, Any]:
    p = {"prefix": {"addr": addr, "len": plen}}
    return {"concat": [p, p]}


C = nftables._concat


# -- nft --------------------------------------------------------------------------------------


def test_add_batch_is_elements_only() -> None:
    assert nftables.transition(None, record(), {"masq", "ports"}) == [
        elem("subnets4", "add", pair("10.0.0.0", 24)),
        elem("subnets6", "add", pair("fd00::", 64)),
        elem("masq4", "add", tagged("10.0.0.2")),
        elem("masq6", "add", tagged("fd00::2")),
        elem("pm4_any_addr", "create", tagged(C(6, 8080), "10.0.0.2")),
        elem("pm4_any_port", "create", tagged(C(6, 8080), 80)),
        elem("pm6_any_addr", "create", tagged(C(6, 8080), "fd00::2")),
        elem("pm6_any_port", "create", tagged(C(6, 8080), 80)),
        elem("pm4_ip_addr", "create", tagged(C("192.0.2.1", 17, 53), "10.0.0.2")),
        elem("pm4_ip_port", "create", tagged(C("192.0.2.1", 17, 53), 53)),
        elem("hp4", "add", tagged(C("10.0.0.2", 6, 80)), tagged(C("10.0.0.2", 17, 53))),
        elem("hp6", "add", tagged(C("fd00::2", 6, 80))),
    ]


def test_remove_batch_adds_then_deletes_so_gone_is_fine() -> None:
    assert nftables.transition(record(), None, {"masq"}) == [
        elem("masq4", "add", tagged("10.0.0.2")),
        elem("masq4", "delete", "10.0.0.2"),
        elem("masq6", "add", tagged("fd00::2")),
        elem("masq6", "delete", "fd00::2"),
    ]


def test_masq_all_and_no_snat() -> None:
    names = [
        next(iter(c.values()))["element"]["name"]
        for c in nftables.transition(None, record(masq=False, masq_all=True), {"ports"})
    ]
    assert "hp4_all" in names and "hp4" not in names and "subnets4" not in names
    names = [
        next(iter(c.values()))["element"]["name"]
        for c in nftables.transition(None, record(masq=False, snat=False), {"ports"})
    ]
    assert not [n for n in names if n.startswith(("hp", "subnets"))]


def test_batch_mentions_only_its_own_elements() -> None:
    one = nftables.transition(None, record(), {"ports"})
    # The batch only ever mentions this attachment's own elements.
    assert all(c[v]["element"]["name"] in nftables.SETS for c in one for v in c)
    assert len(one) == 10  # 2 subnet pairs, 6 DNAT map entries, 2 hairpin sets


def test_postrouting_rules_golden() -> None:
    def p(fam: str, field: str) -> dict[str, Any]:
        return {"payload": {"protocol": fam, "field": field}}

    dnated = {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}
    target4 = {"concat": [p("ip", "daddr"), {"meta": {"key": "l4proto"}}, p("th", "dport")]}
    rules = [c["add"]["rule"]["expr"] for c in nftables._postrouting_rules()]
    assert rules[0] == [
        dnated,
        {"match": {"op": "==", "left": target4, "right": "@hp4_all"}},
        {"masquerade": None},
    ]
    assert rules[2] == [
        dnated,
        {"match": {"op": "==", "left": target4, "right": "@hp4"}},
        {
            "match": {
                "op": "==",
                "left": {"concat": [p("ip", "saddr"), p("ip", "daddr")]},
                "right": "@subnets4",
            }
        },
        {"masquerade": None},
    ]
    assert rules[5] == [
        {"match": {"op": "==", "left": p("ip", "saddr"), "right": "@masq4"}},
        {
            "match": {
                "op": "!=",
                "left": p("ip", "daddr"),
                "right": {"prefix": {"addr": "224.0.0.0", "len": 4}},
            }
        },
        {
            "match": {
                "op": "!=",
                "left": {"concat": [p("ip", "saddr"), p("ip", "daddr")]},
                "right": "@subnets4",
            }
        },
        {"masquerade": None},
    ]


def test_prerouting_rules_golden() -> None:
    rules = [c["add"]["rule"]["expr"] for c in nftables._dnat_rules("prerouting")]
    fib = {"fib": {"result": "type", "flags": ["daddr"]}}
    assert rules[0] == [{"match": {"op": "!=", "left": fib, "right": "local"}}, {"return": None}]
    loop = {"prefix": {"addr": "127.0.0.0", "len": 8}}
    assert rules[1] == [
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": loop,
            }
        },
        {"return": None},
    ]
    # Ports with portmap conditions are rules in a regular chain, tried first.
    assert rules[2] == [{"jump": {"target": "conditional"}}]
    key = {
        "concat": [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]
    }
    assert rules[4] == [
        {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}},
        {
            "dnat": {
                "family": "ip",
                "addr": {"map": {"key": key, "data": "@pm4_any_addr"}},
                "port": {"map": {"key": key, "data": "@pm4_any_port"}},
            }
        },
    ]
    assert len(rules) == nftables.RULE_COUNTS["prerouting"]
    assert len(nftables._dnat_rules("output")) == nftables.RULE_COUNTS["output"]


def test_skeleton_declares_everything_and_refills_base_chains() -> None:
    sk = nftables.skeleton()
    assert sk[0] == {"add": {"table": {"family": "inet", "name": "pycni"}}}
    declared = {c["add"].get("set", c["add"].get("map", {})).get("name") for c in sk if "add" in c}
    assert set(nftables.SETS) <= declared
    flushed = [c["flush"]["chain"]["name"] for c in sk if "flush" in c]
    assert flushed == ["prerouting", "output", "postrouting", "localnet-guard"]
    assert {
        "add": {
            "set": {
                **T,
                "name": "subnets4",
                "type": ["ipv4_addr", "ipv4_addr"],
                "flags": ["interval"],
            }
        }
    } in sk
    assert {
        "add": {
            "map": {
                **T,
                "name": "pm6_ip_port",
                "type": ["ipv6_addr", "inet_proto", "inet_service"],
                "map": "inet_service",
            }
        }
    } in sk
    guard = [
        c["add"]["rule"]["expr"]
        for c in sk
        if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == "localnet-guard"
    ]
    assert guard == [
        [
            {"match": {"op": "!=", "left": {"meta": {"key": "iif"}}, "right": "lo"}},
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": {"prefix": {"addr": "127.0.0.0", "len": 8}},
                }
            },
            {"drop": None},
        ]
    ]


def test_rebuild_replaces_the_table_atomically() -> None:
    cmds = nftables.rebuild([record()])
    assert cmds[:2] == [
        {"add": {"table": {"family": "inet", "name": "pycni"}}},
        {"delete": {"table": {"family": "inet", "name": "pycni"}}},
    ]
    verbs = {v for c in cmds[2:] for v in c}
    assert "create" not in verbs  # replay is idempotent: add only


def test_uncovered_subnets() -> None:
    n = ipaddress.ip_network
    assert nftables.uncovered([n("10.0.1.0/24"), n("10.0.0.0/16")], [n("10.0.0.0/8")]) == []
    assert nftables.uncovered([n("10.0.1.0/24"), n("10.0.0.0/16")], []) == [n("10.0.0.0/16")]
    assert nftables.uncovered([n("fd00::/64")], [n("10.0.0.0/8")]) == [n("fd00::/64")]


def test_listing_parsed_back() -> None:
    listing = [
        {"set": {"name": "masq4", "elem": [{"elem": {"val": "10.0.0.2", "comment": TAG}}]}},
        {
            "map": {
                "name": "pm4_any_addr",
                "elem": [
                    [{"elem": {"val": {"concat": ["tcp", 8080]}, "comment": TAG}}, "10.0.0.2"]
                ],
            }
        },
        {"set": {"name": "subnets4", "elem": [pair("10.0.0.0", 24)]}},
        {"chain": {"name": "postrouting"}},
        {"rule": {"chain": "postrouting"}},
    ]
    table = nftables.Table(listing)
    assert table.sets["pm4_any_addr"] == {(6, 8080): ("10.0.0.2", TAG)}
    assert table.subnets(4) == [ipaddress.ip_network("10.0.0.0/24")]
    assert table.rules == {"postrouting": 1}
    assert table.owners(("masq4", "pm4_any_addr")) == {
        TAG: ["masquerade of 10.0.0.2", "published port tcp . 8080 -> 10.0.0.2"]
    }


# -- iptables ---------------------------------------------------------------------------------


def test_iptables_restore_text_golden() -> None:
    r = record()
    r.backend = "iptables"
    assert iptables.transition(iptables.Saved(""), None, r, 4) == "\n".join(
        [
            "*nat",
            ":PYCNI-DNAT - [0:0]",
            ":PYCNI-POSTROUTING - [0:0]",
            f":{DN} - [0:0]",
            f":{HP} - [0:0]",
            f":{MQ} - [0:0]",
            "-A PREROUTING ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j PYCNI-DNAT",
            "-A OUTPUT -m addrtype --dst-type LOCAL -j PYCNI-DNAT",
            "-A POSTROUTING -j PYCNI-POSTROUTING",
            f"-A {DN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80",
            f"-A {DN} -d 192.0.2.1/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.0.0.2:53",
            f"-A PYCNI-DNAT -m comment --comment {TAG} -j {DN}",
            f"-A {HP} -s 10.0.0.0/24 -d 10.0.0.2/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT -j MASQUERADE",
            f"-A {HP} -s 127.0.0.0/8 -d 10.0.0.2/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT -j MASQUERADE",
            f"-A {HP} -s 10.0.0.0/24 -d 10.0.0.2/32 -p udp -m udp --dport 53 -m conntrack --ctstate DNAT -j MASQUERADE",
            f"-A {HP} -s 127.0.0.0/8 -d 10.0.0.2/32 -p udp -m udp --dport 53 -m conntrack --ctstate DNAT -j MASQUERADE",
            f"-A PYCNI-POSTROUTING -m comment --comment {TAG} -j {HP}",
            f"-A {MQ} -s 10.0.0.2/32 -d 10.0.0.0/24 -j RETURN",
            f"-A {MQ} -s 10.0.0.2/32 -d 224.0.0.0/4 -j RETURN",
            f"-A {MQ} -s 10.0.0.2/32 -j MASQUERADE",
            f"-A PYCNI-POSTROUTING -m comment --comment {TAG} -j {MQ}",
            "COMMIT",
            "*raw",
            ":PYCNI-LOCALNET - [0:0]",
            "-A PREROUTING -j PYCNI-LOCALNET",
            "-A PYCNI-LOCALNET -d 127.0.0.0/8 ! -i lo -j DROP",
            "COMMIT",
            "",
        ]
    )


def test_iptables_v6_uses_brackets_and_no_loopback_rules() -> None:
    text = iptables.transition(iptables.Saved(""), None, record(masq=False), 6)
    assert f"-A {DN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::2]:80" in text
    assert "-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j PYCNI-DNAT" in text
    assert "127.0.0.0/8" not in text and "*raw" not in text
    assert "192.0.2.1" not in text  # an IPv4 hostIP is not an IPv6 binding


SAVED = f"""# Generated by iptables-save
*raw
:PREROUTING ACCEPT [0:0]
:PYCNI-LOCALNET - [0:0]
-A PREROUTING -j PYCNI-LOCALNET
-A PYCNI-LOCALNET -d 127.0.0.0/8 ! -i lo -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:PYCNI-DNAT - [0:0]
:PYCNI-POSTROUTING - [0:0]
:{DN} - [0:0]
:{MQ} - [0:0]
-A PREROUTING -p tcp --dport 2222 -j DNAT --to-destination 198.51.100.9:22
-A PREROUTING ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j PYCNI-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j PYCNI-DNAT
-A POSTROUTING -j PYCNI-POSTROUTING
-A PYCNI-DNAT -m comment --comment "{TAG}" -j {DN}
-A PYCNI-POSTROUTING -m comment --comment "{TAG}" -j {MQ}
-A {DN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.2:80
COMMIT
"""


def test_iptables_saved_parsed() -> None:
    saved = iptables.Saved(SAVED)
    assert saved.has_chain("nat", DN) and saved.has_chain("raw", "PYCNI-LOCALNET")
    assert saved.entries() == [
        (f"-A PYCNI-DNAT -m comment --comment {TAG} -j {DN}", TAG, DN),
        (f"-A PYCNI-POSTROUTING -m comment --comment {TAG} -j {MQ}", TAG, MQ),
    ]
    assert saved.ours() == {DN, MQ}


def test_iptables_present_jumps_not_repeated_and_removal_unhooks_first() -> None:
    saved = iptables.Saved(SAVED)
    r = record(masq=False)
    # Ports only now: DN rewritten (no new entry, it exists), HP added, MQ dropped.
    text = iptables.transition(saved, None, r, 4)
    assert "-A PREROUTING" not in text and "-A POSTROUTING" not in text and "*raw" not in text
    assert f"-A PYCNI-DNAT -m comment --comment {TAG} -j {DN}" not in text
    assert f"-A PYCNI-POSTROUTING -m comment --comment {TAG} -j {HP}" in text
    lines = text.splitlines()
    assert lines.index(f"-D PYCNI-POSTROUTING -m comment --comment {TAG} -j {MQ}") < lines.index(
        f"-X {MQ}"
    )
    # Everything gone: both chains unhooked and deleted, nothing added.
    text = iptables.transition(saved, r, None, 4)
    assert "-A " not in text
    assert f"-X {DN}" in text and f"-X {MQ}" in text


def test_iptables_rebuild_flushes_shared_chains_and_drops_strays() -> None:
    text = iptables.rebuild(iptables.Saved(SAVED), [], 4)
    assert ":PYCNI-DNAT - [0:0]" in text and ":PYCNI-POSTROUTING - [0:0]" in text
    assert f"-X {DN}" in text and f"-X {MQ}" in text
    assert "-D " not in text  # flushing the shared chains already unhooked them


@pytest.mark.parametrize("kind", ["DN", "HP", "MQ"])
def test_iptables_chain_names_fit(kind: str) -> None:
    assert len(iptables.chain_name(kind, "x" * 200)) == 28
