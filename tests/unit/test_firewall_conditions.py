"""portmap conditionsV4/V6 (pure): parsing both spellings into data, the errors a
person gets, and what each backend makes of them."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni import errors
from pycni.firewall import iptables, nftables
from pycni.firewall.base import Attachment, PortMapping
from pycni.firewall.conditions import IIFNAME, SADDR, Condition, iptables_args, parse
from pycni.firewall.plan import Record


def c4(*items: str) -> list[Condition]:
    return parse(list(items), 4, "conditionsV4")


@pytest.mark.parametrize(
    "items, family, want",
    [
        (["-s", "192.0.2.0/24"], 4, [Condition(SADDR, "192.0.2.0/24")]),
        (["--source", "192.0.2.7"], 4, [Condition(SADDR, "192.0.2.7/32")]),
        (["!", "-s", "10.0.0.0/8"], 4, [Condition(SADDR, "10.0.0.0/8", True)]),
        (["-s", "!", "10.0.0.0/8"], 4, [Condition(SADDR, "10.0.0.0/8", True)]),
        (["--src", "2001:db8::/32"], 6, [Condition(SADDR, "2001:db8::/32")]),
        (["-i", "eth0"], 4, [Condition(IIFNAME, "eth0")]),
        (["!", "--in-interface", "eth+"], 4, [Condition(IIFNAME, "eth*", True)]),
        (
            ["-s", "192.0.2.0/24", "!", "-i", "br-1"],
            4,
            [Condition(SADDR, "192.0.2.0/24"), Condition(IIFNAME, "br-1", True)],
        ),
        (["ip saddr 192.0.2.0/24"], 4, [Condition(SADDR, "192.0.2.0/24")]),
        (["ip saddr != 10.0.0.0/8"], 4, [Condition(SADDR, "10.0.0.0/8", True)]),
        (["ip6 saddr == fd00::/8"], 6, [Condition(SADDR, "fd00::/8")]),
        (['iifname "eth*"'], 4, [Condition(IIFNAME, "eth*")]),
        (["meta iifname != lo"], 6, [Condition(IIFNAME, "lo", True)]),
        (
            ["ip saddr 192.0.2.0/24 iifname eth0"],
            4,
            [Condition(SADDR, "192.0.2.0/24"), Condition(IIFNAME, "eth0")],
        ),
        ([], 4, []),
    ],
)
def test_both_spellings_parse_to_the_same_data(
    items: list[str], family: int, want: list[Condition]
) -> None:
    assert parse(list(items), family, "conditions") == want


@pytest.mark.parametrize(
    "items, family, message",
    [
        (["-m", "comment"], 4, "unsupported condition '-m'"),
        (["-j", "ACCEPT"], 4, "unsupported condition '-j'"),
        (["-s"], 4, "-s needs a value"),
        (["!"], 4, "'!' at the end"),
        (["-s", "not-an-ip"], 4, "invalid source 'not-an-ip'"),
        (["-s", "10.0.0.1/8"], 4, "invalid source '10.0.0.1/8'"),  # host bits set
        (["-s", "2001:db8::/32"], 4, "is not an IPv4 network"),
        (["ip6 saddr fd00::/8"], 4, "'ip6' match in the conditions for IPv4"),
        (["-s", "192.0.2.0/24", "-s", "198.51.100.0/24"], 4, "more than one saddr"),
        (["-i", "a-very-long-interface-name"], 4, "invalid interface name"),
        (["-i", 'eth0"; flush ruleset'], 4, "invalid interface name"),
        (["iifname eth0}"], 4, "invalid interface name"),
        (["tcp dport 22 drop"], 4, "unsupported condition"),
        (["flush ruleset"], 4, "unsupported condition"),
        (["ip saddr 1.2.3.4; flush ruleset"], 4, "invalid source"),
        (["ip saddr"], 4, "needs a value"),
        ([""], 4, "empty condition"),
        ([5], 4, "must be a list of strings"),
    ],
)
def test_bad_conditions_say_what_to_fix(items: list[object], family: int, message: str) -> None:
    with pytest.raises(errors.InvalidConfig) as info:
        parse(items, family, "conditionsV4")
    assert message in info.value.msg
    assert info.value.code == 7
    assert info.value.details  # what is supported, or how to fix it


@given(st.lists(st.text(max_size=40), min_size=1, max_size=6))
def test_any_input_is_data_or_a_clean_error(items: list[str]) -> None:
    """Whatever is given, the result is conditions from a closed alphabet or code 7."""
    for family in (4, 6):
        try:
            conds = parse(list(items), family, "conditions")
        except errors.InvalidConfig:
            continue
        for c in conds:
            assert c.kind in (SADDR, IIFNAME)
            if c.kind == SADDR:
                assert ipaddress.ip_network(c.value).version == family
            else:
                stem = c.value.removesuffix("*")
                assert 0 < len(stem) <= 15
                assert all(ch.isalnum() or ch in "_.@-" for ch in stem)
                assert stem.isascii()


def test_iptables_args_in_iptables_save_order() -> None:
    conds = c4("-i", "eth+", "!", "-s", "10.0.0.0/8")
    assert iptables_args(conds, SADDR) == "! -s 10.0.0.0/8 "
    assert iptables_args(conds, IIFNAME) == "-i eth+ "
    assert iptables_args([], SADDR) == ""


def record(conditions: dict[int, list[Condition]]) -> Record:
    r = Record(("net", "cid", "eth0"), "nftables")
    r.ports = Attachment(
        "net",
        "cid",
        "eth0",
        [ipaddress.ip_interface("10.9.0.2/24"), ipaddress.ip_interface("fd09::2/64")],
        "br0",
    )
    r.mappings = [PortMapping(8080, 80), PortMapping(5353, 53, "udp", "192.0.2.1")]
    r.conditions = conditions
    return r


def test_record_keeps_conditions_through_save_and_copy() -> None:
    r = record({4: c4("!", "-s", "10.0.0.0/8"), 6: parse(["iifname eth*"], 6, "v6")})
    back = Record.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.conditions == r.conditions
    assert back.copy().conditions == r.conditions
    assert "conditions" not in json.dumps(record({}).to_dict())


def test_nftables_conditional_family_leaves_the_maps() -> None:
    r = record({4: c4("-s", "192.0.2.0/24")})
    names = {name for name, _, _ in nftables.elements(r, {"ports"})}
    # IPv4 ports become rules; IPv6 (no conditions) stays in the maps; hairpin stays.
    assert not any(n.startswith("pm4") for n in names)
    assert {"pm6_any_addr", "pm6_any_port", "hp4", "hp6"} <= names
    rules = nftables.cond_rules(r, {"ports"})
    assert len(rules) == 2  # 8080 on any IPv4 address, 5353 on 192.0.2.1
    text = json.dumps(rules)
    assert '"comment": "net/cid/eth0"' in text
    assert '"right": {"prefix": {"addr": "192.0.2.0", "len": 24}}' in text
    assert nftables.cond_rules(r, {"masq"}) == []
    # Removal is by handle, alongside the element changes, in one batch.
    batch = nftables.transition(r, None, {"ports"}, handles=[7, 9])
    assert batch[:2] == nftables.delete_rules([7, 9])


def test_iptables_conditions_go_on_the_dnat_rules_only() -> None:
    r = record({4: c4("!", "-s", "10.0.0.0/8", "-i", "eth0")})
    r.backend = "iptables"
    rules = iptables.chains(r, 4)
    dnat = [rule for rules_ in rules.values() for rule in rules_ if "DNAT --to" in rule]
    assert dnat and all(rule.split(" ", 2)[2].startswith("! -s 10.0.0.0/8 ") for rule in dnat)
    assert all("-i eth0 -p " in rule for rule in dnat)
    assert "-d 192.0.2.1/32 -i eth0 -p udp" in " ".join(dnat)
    v6 = [
        rule for rules_ in iptables.chains(r, 6).values() for rule in rules_ if "DNAT --to" in rule
    ]
    assert v6 and not any(" -s " in rule or " -i " in rule for rule in v6)
