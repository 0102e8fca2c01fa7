"""`table inet pycni_tunnel`'s batch (pure): the two notrack rules and one element."""

from __future__ import annotations

import pytest

from pycni.firewall import tunnel


def test_ensure_batch_notracks_vxlan_to_and_from_the_vtep() -> None:
    cmds = tunnel.ensure_batch("192.0.2.101", 4789)
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    assert [(r["chain"], r["expr"][0]["match"]["left"]["concat"][0]["payload"]["field"])
            for r in rules] == [("prerouting", "daddr"), ("output", "saddr")]  # fmt: skip
    assert all(r["expr"][1] == {"notrack": None} for r in rules)
    # the chains are flushed before the rules: ensuring twice leaves two rules, not four
    flushed = [c["flush"]["chain"]["name"] for c in cmds if "flush" in c]
    assert flushed == ["prerouting", "output"]
    assert cmds.index({"flush": {"chain": {**tunnel.T, "name": "output"}}}) < cmds.index(
        {"add": {"rule": rules[0]}}
    )
    chains = [c["add"]["chain"] for c in cmds if "chain" in c.get("add", {})]
    assert {(c["hook"], c["prio"]) for c in chains} == {("prerouting", -300), ("output", -300)}
    assert cmds[-1]["add"]["element"]["elem"] == [{"concat": ["192.0.2.101", 4789]}]


def test_only_an_address_reaches_nft() -> None:
    with pytest.raises(ValueError):
        tunnel.ensure_batch('192.0.2.1" } ; flush ruleset', 4789)
