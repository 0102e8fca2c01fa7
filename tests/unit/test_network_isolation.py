"""The isolation plugin's nft input (golden) and its reading of `nft -j list table`."""

from __future__ import annotations

import json

import pytest

from pycni import errors
from pycni.firewall.isolation import TableView, plan_add, plan_remove
from pycni.plugins import isolation

T = {"family": "inet", "table": "pycni_isolation"}


def _rule_exprs(cmds: list[dict], chain: str) -> list[list]:
    return [
        c["add"]["rule"]["expr"]
        for c in cmds
        if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain
    ]


def test_add_is_one_transaction_with_a_fixed_skeleton() -> None:
    cmds = plan_add(7, internal=False)
    assert cmds[:5] == [
        {"add": {"table": {"family": "inet", "name": "pycni_isolation"}}},
        {"add": {"set": {**T, "name": "bridges", "type": "iface_index"}}},
        {"add": {"map": {**T, "name": "networks", "type": "iface_index", "map": "verdict"}}},
        {
            "add": {
                "chain": {
                    **T,
                    "name": "forward",
                    "type": "filter",
                    "hook": "forward",
                    "prio": -10,
                    "policy": "accept",
                }
            }
        },
        {"flush": {"chain": {**T, "name": "forward"}}},
    ]
    assert _rule_exprs(cmds, "forward") == [
        [{"vmap": {"key": {"meta": {"key": "iif"}}, "data": "@networks"}}],
        [{"vmap": {"key": {"meta": {"key": "oif"}}, "data": "@networks"}}],
    ]
    assert {"flush": {"chain": {**T, "name": "net-7"}}} in cmds
    rules = _rule_exprs(cmds, "net-7")
    assert rules[0] == [
        {"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": 7}},
        {"match": {"op": "!=", "left": {"meta": {"key": "oif"}}, "right": 7}},
        {"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "@bridges"}},
        {"drop": None},
    ]
    # routed traffic into the bridge: only published (DNATed) or asked for (established)
    for family, rule in zip((4, 6), rules[1:], strict=True):
        assert rule == [
            {"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": 7}},
            {"match": {"op": "!=", "left": {"meta": {"key": "iif"}}, "right": 7}},
            {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": f"ipv{family}"}},
            {
                "match": {
                    "op": "==",
                    "left": {"&": [{"ct": {"key": "state"}}, {"|": ["established", "related"]}]},
                    "right": 0,
                }
            },
            {"match": {"op": "==", "left": {"&": [{"ct": {"key": "status"}}, "dnat"]}, "right": 0}},
            {"drop": None},
        ]
    assert len(_rule_exprs(plan_add(7, False, direct_routing=frozenset({4})), "net-7")) == 2
    assert len(_rule_exprs(plan_add(7, False, direct_routing=frozenset({4, 6})), "net-7")) == 1
    assert cmds[-2:] == [
        {"add": {"element": {**T, "name": "bridges", "elem": [7]}}},
        {
            "add": {
                "element": {**T, "name": "networks", "elem": [[7, {"jump": {"target": "net-7"}}]]}
            }
        },
    ]


def test_add_cost_does_not_grow_with_the_number_of_networks() -> None:
    assert len(plan_add(7, False)) == len(plan_add(70000, False)) == 14


def test_internal_drops_both_ways() -> None:
    assert _rule_exprs(plan_add(9, internal=True), "net-9") == [
        [
            {"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": 9}},
            {"match": {"op": "!=", "left": {"meta": {"key": "oif"}}, "right": 9}},
            {"drop": None},
        ],
        [
            {"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": 9}},
            {"match": {"op": "!=", "left": {"meta": {"key": "iif"}}, "right": 9}},
            {"drop": None},
        ],
    ]


def test_the_only_strings_are_ours() -> None:
    """Interface names never reach nft: every string in the batch is a constant of ours."""
    strings: set[str] = set()

    def walk(x: object) -> None:
        if isinstance(x, str):
            strings.add(x)
        elif isinstance(x, dict):
            for k, v in x.items():
                strings.add(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(plan_add(3, True) + plan_add(4, False) + plan_remove([5]))
    ours = {
        "add", "flush", "delete", "table", "set", "map", "chain", "rule", "element", "family",
        "name", "type", "hook", "prio", "policy", "expr", "elem", "match", "op", "left", "right",
        "meta", "key", "vmap", "data", "jump", "target", "drop", "inet", "pycni_isolation",
        "bridges", "networks", "forward", "filter", "accept", "iface_index", "verdict", "iif",
        "oif", "==", "!=", "@bridges", "@networks", "net-3", "net-4", "net-5",
        "nfproto", "ipv4", "ipv6", "ct", "state", "status", "established", "related", "dnat",
        "&", "|",
    }  # fmt: skip
    assert strings <= ours, strings - ours


def test_remove_is_safe_whether_or_not_the_elements_exist() -> None:
    assert plan_remove([]) == []
    cmds = plan_remove([12])
    verbs = [(next(iter(c)), next(iter(next(iter(c.values()))))) for c in cmds]
    assert verbs == [
        ("add", "table"), ("add", "set"), ("add", "map"),
        ("add", "chain"), ("add", "element"), ("delete", "element"),
        ("add", "element"), ("delete", "element"), ("flush", "chain"), ("delete", "chain"),
    ]  # fmt: skip
    # the map element that jumps to the chain goes before the chain
    assert cmds.index({"delete": {"chain": {**T, "name": "net-12"}}}) == len(cmds) - 1


LISTING = json.loads(
    """{"nftables": [{"metainfo": {"version": "1.0.6"}},
 {"table": {"family": "inet", "name": "pycni_isolation", "handle": 1}},
 {"set": {"family": "inet", "name": "bridges", "table": "pycni_isolation", "type": "iface_index", "handle": 1, "elem": ["br-a", "12", "9999"]}},
 {"map": {"family": "inet", "name": "networks", "table": "pycni_isolation", "type": "iface_index", "handle": 2, "map": "verdict",
   "elem": [["br-a", {"jump": {"target": "net-4"}}], ["12", {"jump": {"target": "net-7"}}], ["9999", {"jump": {"target": "net-9999"}}]]}},
 {"chain": {"family": "inet", "table": "pycni_isolation", "name": "forward", "handle": 3, "type": "filter", "hook": "forward", "prio": -10, "policy": "accept"}},
 {"chain": {"family": "inet", "table": "pycni_isolation", "name": "net-4", "handle": 6}},
 {"chain": {"family": "inet", "table": "pycni_isolation", "name": "net-7", "handle": 8}},
 {"chain": {"family": "inet", "table": "pycni_isolation", "name": "net-9999", "handle": 9}},
 {"rule": {"family": "inet", "table": "pycni_isolation", "chain": "forward", "handle": 4, "expr": [{"vmap": {"key": {"meta": {"key": "iif"}}, "data": "@networks"}}]}},
 {"rule": {"family": "inet", "table": "pycni_isolation", "chain": "forward", "handle": 5, "expr": [{"vmap": {"key": {"meta": {"key": "oif"}}, "data": "@networks"}}]}},
 {"rule": {"family": "inet", "table": "pycni_isolation", "chain": "net-4", "handle": 7, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "br-a"}}, {"drop": null}]}},
 {"rule": {"family": "inet", "table": "pycni_isolation", "chain": "net-7", "handle": 10, "expr": [{"drop": null}]}},
 {"rule": {"family": "inet", "table": "pycni_isolation", "chain": "net-7", "handle": 11, "expr": [{"drop": null}]}}
]}"""
)["nftables"]


def test_table_view_keys_networks_by_chain_not_by_printed_name() -> None:
    # nft prints an iface_index element as the interface's name, or as a number when the
    # interface is gone; a bridge may even be *named* "12". Only our chain names count.
    view = TableView(LISTING)
    assert view.network_indexes() == [4, 7, 9999]
    assert "does not hold the 3 drop rule(s)" in view.problems(4, False, "br-a")[0]
    both = frozenset({4, 6})  # the listing's networks allow direct routing: one rule
    assert view.problems(4, False, "br-a", direct_routing=both) == []
    assert view.problems(7, True, "12") == []
    assert view.problems(7, False, "12", direct_routing=both) == [
        "chain net-7 does not hold the 1 drop rule(s) of an isolated network"
    ]
    missing = view.problems(5, False, "br-b", direct_routing=both)
    assert "chain net-5 (bridge br-b) is missing" in missing
    assert "bridge br-b is not in map networks" in missing
    broken = TableView([x for x in LISTING if x.get("rule", {}).get("handle") != 5])
    assert (
        "the forward chain of table inet pycni_isolation is missing or altered"
        in broken.problems(4, False, "br-a", direct_routing=both)
    )


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_internal_must_be_a_boolean(value: object) -> None:
    conf = {"name": "n", "internal": value}
    if value is None:
        assert isolation.IsolationConf(conf).internal is False
        return
    with pytest.raises(errors.InvalidConfig, match="'internal' must be true or false"):
        isolation.IsolationConf(conf)


def test_icc_false_adds_the_same_bridge_drop_with_a_dnat_exemption() -> None:
    rules = _rule_exprs(plan_add(9, internal=False, icc=False), "net-9")
    assert len(rules) == 4
    last = rules[1]
    assert {"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": 9}} in last
    assert {"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": 9}} in last
    assert any("ct" in json.dumps(e) and "dnat" in json.dumps(e) for e in last)
    assert last[-1] == {"drop": None}
    assert len(_rule_exprs(plan_add(9, internal=False), "net-9")) == 3
