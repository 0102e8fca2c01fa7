"""pycni.firewall.forward and the firewall plugin's config, without root: the rule text
is the reference's, the records round-trip, bad keys are refused with code 7."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pycni import errors
from pycni.firewall import forward
from pycni.firewall.store import Store
from pycni.plugins.firewall import FirewallConf


def test_address_rules_are_the_references() -> None:
    v4 = ipaddress.ip_interface("10.88.0.5/16")
    v6 = ipaddress.ip_interface("fd00::5/64")
    assert forward.ipt_ip_rules(v4) == [
        "-A CNI-FORWARD -d 10.88.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A CNI-FORWARD -s 10.88.0.5/32 -j ACCEPT",
    ]
    assert forward.ipt_ip_rules(v6)[1] == "-A CNI-FORWARD -s fd00::5/128 -j ACCEPT"
    assert forward.ipt_jump_rule() == (
        '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD'
    )
    assert forward.ipt_admin_rule("MY-ADMIN") == (
        '-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j MY-ADMIN'
    )


def test_ingress_policy_rules() -> None:
    same = forward.ipt_policy_rules("cni0", isolated=False)
    assert all("(ingressPolicy: same-bridge)" in line for _, line, _ in same)  # 1.1.1's
    assert not any("-o cni0 -j DROP" in line and "-i cni0" in line for _, line, _ in same)
    iso = forward.ipt_policy_rules("cni0", isolated=True)
    drops = [line for chain, line, _ in iso if chain == forward.STAGE1 and line.endswith("DROP")]
    assert drops == [
        "-A CNI-ISOLATION-STAGE-1 -i cni0 -o cni0 -m comment --comment "
        '"CNI firewall plugin rules (ingressPolicy: isolated)" -j DROP'
    ]
    # RETURN rules are appended, the rest prepended (as the reference's InsertUnique)
    assert [p for _, line, p in iso if line.endswith("RETURN")] == [False, False]


def test_insert_unique_spells_restore_lines() -> None:
    t = forward.FilterTable(":FORWARD ACCEPT [0:0]\n-A FORWARD -j X\n")
    out: list[str] = []
    forward.Iptables._ensure_chain(t, "CNI-FORWARD", out)
    forward.Iptables._insert_unique(t, forward.ipt_jump_rule(), True, out)
    forward.Iptables._insert_unique(t, forward.ipt_jump_rule(), True, out)  # once only
    forward.Iptables._insert_unique(t, "-A FORWARD -j X", False, out)  # present already
    assert out == [
        ":CNI-FORWARD - [0:0]",
        '-I FORWARD 1 -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
    ]


@pytest.mark.parametrize("name", ["", "a b", "x" * 29, "FORWARD", "CNI-FORWARD", "a;b"])
def test_bad_admin_chain_names(name: str) -> None:
    with pytest.raises(errors.InvalidConfig):
        forward.check_chain_name(name, "firewall")


@pytest.mark.parametrize(
    "extra",
    [
        {"backend": "pf"},
        {"ingressPolicy": "closed"},
        {"iptablesAdminChainName": "has space"},
        {"backend": 3},
    ],
)
def test_conf_refuses_bad_keys(extra: dict[str, object]) -> None:
    with pytest.raises(errors.CniError) as exc:
        FirewallConf({"name": "n", "type": "firewall", **extra})
    assert exc.value.code == 7


def test_conf_defaults() -> None:
    c = FirewallConf({"name": "n", "type": "firewall"})
    assert (c.backend, c.admin, c.ingress_policy, c.zone) == ("", "CNI-ADMIN", "open", "trusted")


def test_record_round_trip_under_dot_forward(tmp_path: Path) -> None:
    fs = forward.ForwardStore(Store(str(tmp_path)))
    key = ("net", "cid1", "eth0")
    rec = forward.ForwardRecord(
        key,
        "nftables",
        [ipaddress.ip_interface("10.1.0.2/24")],
        "CNI-ADMIN",
        [4],
        [("inet", "mine", "forward")],
    )
    fs.save(rec)
    path = Path(fs.path(key))
    assert path.is_relative_to(tmp_path / "firewall" / ".forward")
    back = fs.load(key)
    assert back is not None and back.to_dict() == rec.to_dict()
    assert [r.key for r in fs.records("net")] == [key]
    # the backends' own record listing never sees these
    assert list(Store(str(tmp_path)).records()) == []
    fs.remove(key)
    assert fs.load(key) is None and not path.parent.exists()


def test_corrupt_record_is_ignored_not_fatal(tmp_path: Path) -> None:
    fs = forward.ForwardStore(Store(str(tmp_path)))
    key = ("net", "cid1", "eth0")
    path = Path(fs.path(key))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert fs.load(key) is None
