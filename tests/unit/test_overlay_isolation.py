"""An overlay network's place in the isolation table (pycni/firewall/overlay_isolation.py):
its chain's rules, its set and map elements, and the reading of a listing (pure)."""

from __future__ import annotations

from pycni.firewall import overlay_isolation as ovi

T = {"family": "inet", "table": "pycni_isolation"}


def _m(key: str, op: str, right: object) -> dict:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}}


def test_rules_let_the_network_through_its_vxlan_device_and_nothing_else() -> None:
    drop, accept = {"drop": None}, {"accept": None}
    rules = ovi.rules(bridge=7, vxlan=9, internal=False)
    assert rules[:3] == [
        [_m("iif", "==", 9), _m("oif", "!=", 7), drop],  # VXLAN -> only its bridge
        [_m("iif", "==", 9), accept],  # ...and that is the network's own traffic
        [_m("oif", "==", 9), _m("iif", "!=", 7), drop],  # only the bridge sends over it
    ]
    assert rules[3] == [
        _m("iif", "==", 7), _m("oif", "!=", 7), _m("oif", "!=", 9), _m("oif", "==", "@bridges"),
        drop,
    ]  # fmt: skip
    assert rules[4][:2] == [_m("oif", "==", 7), _m("iif", "!=", 7)] and rules[4][-1] == drop
    internal = ovi.rules(bridge=7, vxlan=9, internal=True)
    assert internal[:3] == rules[:3]
    assert internal[3:] == [
        [_m("iif", "==", 7), _m("oif", "!=", 7), _m("oif", "!=", 9), drop],
        [_m("oif", "==", 7), _m("iif", "!=", 7), drop],
    ]


def test_both_interfaces_jump_to_the_networks_chain() -> None:
    cmds = ovi.network_cmds(7, 9, internal=False)
    jump = {"jump": {"target": "ovl-7"}}
    assert cmds[:2] == [
        {"add": {"chain": {**T, "name": "ovl-7"}}},
        {"flush": {"chain": {**T, "name": "ovl-7"}}},
    ]
    assert {"add": {"element": {**T, "name": "bridges", "elem": [7, 9]}}} in cmds
    assert {"add": {"element": {**T, "name": "networks", "elem": [[7, jump], [9, jump]]}}} in cmds
    removal = ovi.remove_cmds("ovl-7", [7, 9])
    assert removal[-1] == {"delete": {"chain": {**T, "name": "ovl-7"}}}
    deleted = [c["delete"]["element"] for c in removal if "element" in c.get("delete", {})]
    assert [(d["name"], d["elem"]) for d in deleted] == [
        ("networks", [7]), ("bridges", [7]), ("networks", [9]), ("bridges", [9]),
    ]  # fmt: skip


def test_only_elements_jumping_to_the_chain_are_ours() -> None:
    listing = [
        {"map": {"name": "networks", "elem": [
            ["ovbr41", {"jump": {"target": "ovl-7"}}],
            [9, {"jump": {"target": "ovl-7"}}],
            ["br-1", {"jump": {"target": "net-3"}}],
        ]}},
        {"map": {"name": "other", "elem": [[5, {"jump": {"target": "ovl-7"}}]]}},
        {"chain": {"name": "ovl-7"}},
    ]  # fmt: skip
    assert ovi.jumping_to(listing, "ovl-7") == ["ovbr41", 9]
    assert ovi.jumping_to(listing, "ovl-8") == []
