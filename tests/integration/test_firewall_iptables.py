"""iptables backend specifics, real kernel: own chains only, idempotent jumps, one
restore per family, and the xtables lock turning into TryAgainLater."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from pycni import errors
from pycni.firewall import iptables
from pycni.firewall.base import PortMapping
from pycni.firewall.iptables import IptablesFirewall
from tests.integration.test_firewall_support import (
    HOST_OUT4,
    NETWORK,
    OUTSIDE4,
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

ADMIN_RULES = """*filter
:FORWARD ACCEPT [0:0]
:ADMIN-USER - [0:0]
-A FORWARD -j ADMIN-USER
-A ADMIN-USER -s 192.0.2.0/24 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p tcp --dport 2222 -j DNAT --to-destination 198.51.100.9:22
-A POSTROUTING -o out0 -s 172.31.0.0/16 -j MASQUERADE
COMMIT
"""


def _save(topo: Topology, family: int = 4) -> list[str]:
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    return [line for line in topo.host.run(tool).splitlines() if line.startswith("-A ")]


def test_own_chains_only_and_jumps_once(topo: Topology, fw_state: Path, servers: Servers) -> None:
    topo.host.run("iptables-restore", "--noflush", input=ADMIN_RULES)
    before = _save(topo)
    fw = IptablesFirewall()
    servers.start(topo.c1.ns, "tcp", topo.c1.ip4, 80, "c1")
    for c, port in ((topo.c1, 8080), (topo.c2, 8090)):
        in_ns(topo.host, fw.add_masquerade, c.attachment())
        in_ns(topo.host, fw.add_port_mappings, c.attachment(), [PortMapping(port, 80)])
    in_ns(topo.host, fw.add_port_mappings, topo.c1.attachment(), [PortMapping(8080, 80)])
    after = _save(topo)
    foreign = [line for line in after if "PYCNI-" not in line]
    assert sorted(foreign) == sorted(before)  # nothing of anyone else changed
    # Each jump from a built-in chain exists exactly once, appended after the admin's.
    for _, rule in iptables.builtin_jumps(4):
        assert after.count(rule) == 1, rule
    prerouting = [line for line in after if line.startswith("-A PREROUTING")]
    assert prerouting[-1].endswith("-j PYCNI-DNAT")
    assert probe(topo.outside, "tcp", HOST_OUT4, 8080) == f"c1 {OUTSIDE4}"
    # DEL removes the per-attachment chains; the shared ones stay, empty.
    for c in (topo.c1, topo.c2):
        in_ns(topo.host, fw.del_port_mappings, NETWORK, c.name, "eth0")
        in_ns(topo.host, fw.del_masquerade, NETWORK, c.name, "eth0")
    left = [line for line in _save(topo) if "PYCNI-" in line]
    expected = [rule for _, rule in iptables.builtin_jumps(4)] + [iptables.GUARD_RULE]
    assert sorted(left) == sorted(expected)
    assert [line for line in _save(topo, 6) if "PYCNI-" in line and "-j PYCNI-DN-" in line] == []


def test_xtables_lock_held_means_try_again_later(
    topo: Topology, fw_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The legacy variant takes the xtables lock; hold it like a stuck iptables would.
    lock = tmp_path / "xtables.lock"
    monkeypatch.setenv("XTABLES_LOCKFILE", str(lock))
    monkeypatch.setattr(iptables, "WAIT_SECONDS", 1)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        fw = IptablesFirewall(variant="legacy")
        assert fw.available()
        with pytest.raises(errors.TryAgainLater) as info:
            in_ns(topo.host, fw.add_port_mappings, topo.c1.attachment(), [PortMapping(8080, 80)])
        assert info.value.code == 11
        assert "xtables lock" in info.value.msg
        assert list(fw_state.rglob("*.json")) == []  # nothing recorded
    finally:
        os.close(fd)
    # With the lock free the same call succeeds.
    in_ns(topo.host, fw.add_port_mappings, topo.c1.attachment(), [PortMapping(8080, 80)])
    assert (
        in_ns(topo.host, fw.check_port_mappings, topo.c1.attachment(), [PortMapping(8080, 80)])
        == []
    )
    in_ns(topo.host, fw.del_port_mappings, NETWORK, "c1", "eth0")


def test_check_reports_removed_rule(topo: Topology, fw_state: Path) -> None:
    fw = IptablesFirewall()
    att = topo.c1.attachment()
    in_ns(topo.host, fw.add_port_mappings, att, [PortMapping(8080, 80)])
    dn = iptables.chain_name("DN", iptables.owner_tag(att.key))
    topo.host.run("iptables", "-t", "nat", "-F", dn)
    missing = in_ns(topo.host, fw.check_port_mappings, att, [PortMapping(8080, 80)])
    assert missing and all("IPv4" in m and "8080" in m for m in missing), missing
    assert in_ns(topo.host, fw.replay) == 1
    assert in_ns(topo.host, fw.check_port_mappings, att, [PortMapping(8080, 80)]) == []
