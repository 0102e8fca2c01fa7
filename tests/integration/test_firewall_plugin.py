"""The `firewall` meta plugin, exec'd as a runtime does in a chain after bridge and
portmap: the reference's iptables layout and cross-DEL with the reference binary, real
traffic through a throwaway host whose forward chain drops (in an nft table of the
test's own, and in iptables' filter FORWARD), bad input, firewalld refusal, GC."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns, PluginRun
from tests.traffic import connect, server, wire_outside

pytestmark = pytest.mark.root

SUBNET = "10.76.0.0/24"
NET = "fwnet"


def bridge_conf(tmp: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "bridge",
        "bridge": "pytfw0",
        "isDefaultGateway": True,
        "ipMasq": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": SUBNET}]],
            "dataDir": str(tmp / "ipam"),
        },
    }


def chained(kind: str, prev: dict[str, Any], **extra: Any) -> dict[str, Any]:
    conf = {"cniVersion": "1.0.0", "name": NET, "type": kind, "prevResult": prev}
    conf.update(extra)
    return conf


def filter_rules(host: Netns, family: int = 4) -> list[str]:
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    out = host.run(tool, "-t", "filter")
    return [line for line in out.splitlines() if line.startswith(("-A", ":"))]


def ip_rules(rules: list[str], ip: str) -> list[str]:
    return [r for r in rules if f" {ip}/32 " in r]


class Chain:
    """bridge -> portmap -> firewall for one container, each plugin ours or the reference's."""

    def __init__(self, run, host: Netns, c: Netns, tmp: Path, cid: str) -> None:
        self.run, self.host, self.c, self.tmp, self.cid = run, host, c, tmp, cid
        self.prev: dict[str, Any] = {}

    def exec(self, runner, name: str, cmd: str, conf: dict[str, Any]) -> PluginRun:
        return runner(name, cmd, conf, netns=self.c.path, container_id=self.cid, in_ns=self.host)

    def add(self, fw_runner=None, ports=(), **fw: Any) -> str:
        b = self.exec(self.run, "bridge", "ADD", bridge_conf(self.tmp))
        assert b.rc == 0, b.stdout + b.stderr
        self.prev = b.json
        if ports:
            maps = [{"hostPort": h, "containerPort": p, "protocol": "tcp"} for h, p in ports]
            p = self.exec(
                self.run,
                "portmap",
                "ADD",
                chained("portmap", self.prev, runtimeConfig={"portMappings": maps}),
            )
            assert p.rc == 0, p.stdout + p.stderr
        f = self.exec(
            fw_runner or self.run, "firewall", "ADD", chained("firewall", self.prev, **fw)
        )
        assert f.rc == 0, f.stdout + f.stderr
        assert f.json["ips"] == self.prev["ips"]  # prevResult passed through
        assert f.json["interfaces"] == self.prev["interfaces"]
        return self.prev["ips"][0]["address"].split("/")[0]

    def fw(self, runner, cmd: str, **fw: Any) -> PluginRun:
        return self.exec(runner, "firewall", cmd, chained("firewall", self.prev, **fw))


# -- the reference's layout and cross-DEL ---------------------------------------------------


def test_iptables_layout_is_the_references_and_cross_del_both_ways(
    run_plugin, run_reference, host_ns, container_ns, tmp_path
):
    ours = Chain(run_plugin, host_ns, container_ns(), tmp_path, "fwours1")
    ip1 = ours.add(backend="iptables", ports=[(8091, 80)])
    rules = filter_rules(host_ns)
    assert '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD' in rules
    assert (
        '-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN'
        in rules
    )
    assert ":CNI-ADMIN - [0:0]" in rules
    assert ip_rules(rules, ip1) == [
        f"-A CNI-FORWARD -d {ip1}/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A CNI-FORWARD -s {ip1}/32 -j ACCEPT",
    ]
    assert ours.fw(run_plugin, "CHECK", backend="iptables").rc == 0
    assert ours.fw(run_reference, "CHECK", backend="iptables").rc == 0  # the reference agrees

    # a reference ADD next to ours writes the same lines for its container
    theirs = Chain(run_plugin, host_ns, container_ns(), tmp_path, "fwref1")
    ip2 = theirs.add(fw_runner=run_reference, backend="iptables", ports=[(8092, 80)])
    rules = filter_rules(host_ns)
    assert len(ip_rules(rules, ip2)) == 2
    assert [r for r in rules if "CNI-FORWARD" in r and r.startswith("-A FORWARD")] == [
        '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD'
    ]
    assert theirs.fw(run_plugin, "CHECK", backend="iptables").rc == 0

    # reference DEL of our ADD, our DEL of the reference's ADD
    assert ours.fw(run_reference, "DEL", backend="iptables").rc == 0
    assert ip_rules(filter_rules(host_ns), ip1) == []
    d = theirs.fw(run_plugin, "DEL", backend="iptables")
    assert d.rc == 0, d.stdout + d.stderr
    assert ip_rules(filter_rules(host_ns), ip2) == []
    # CHECK now fails, with the missing rule named
    err = ours.fw(run_plugin, "CHECK", backend="iptables").error
    assert "not found" in err["msg"]
    # DEL again (nothing left) succeeds, also without prevResult
    again = run_plugin(
        "firewall",
        "DEL",
        {"cniVersion": "1.0.0", "name": NET, "type": "firewall"},
        container_id="fwours1",
        in_ns=host_ns,
    )
    assert again.rc == 0, again.stdout + again.stderr
    # our own DEL of our own ADD leaves no record behind
    assert forward_records(tmp_path) == []


def run_state(tmp: Path) -> Path:
    return tmp / "pycni-state"


def forward_chain_rules(host: Netns) -> list[dict[str, Any]]:
    """The nft rules of every CNI-FORWARD chain (iptables-nft's and ours in other tables)."""
    return [
        i["rule"]
        for i in host.nft_json()["nftables"]
        if "rule" in i and i["rule"]["chain"] == "CNI-FORWARD"
    ]


def forward_records(tmp: Path) -> list[Path]:
    return sorted((run_state(tmp) / "firewall" / ".forward").rglob("*.json"))


def test_ingress_policy_same_bridge_matches_reference(
    run_plugin, run_reference, host_ns, container_ns, tmp_path
):
    Chain(run_plugin, host_ns, container_ns(), tmp_path, "fwsb1").add(
        fw_runner=run_reference, backend="iptables", ingressPolicy="same-bridge"
    )
    ref = [r for r in filter_rules(host_ns) if "ISOLATION" in r]
    host2 = container_ns()  # a second throwaway host, same steps with ours
    Chain(run_plugin, host2, container_ns(), tmp_path / "b", "fwsb1").add(
        backend="iptables", ingressPolicy="same-bridge"
    )
    assert [r for r in filter_rules(host2) if "ISOLATION" in r] == ref
    assert any("-i pytfw0 ! -o pytfw0" in r for r in ref)


def test_ingress_policy_isolated_drops_within_the_bridge(
    run_plugin, host_ns, container_ns, tmp_path
):
    Chain(run_plugin, host_ns, container_ns(), tmp_path, "fwiso1").add(ingressPolicy="isolated")
    rules = filter_rules(host_ns)
    assert (
        "-A CNI-ISOLATION-STAGE-1 -i pytfw0 -o pytfw0 -m comment --comment "
        '"CNI firewall plugin rules (ingressPolicy: isolated)" -j DROP'
    ) in rules


# -- traffic through a host whose forward chain drops -----------------------------------


def drop_in_own_nft_table(host: Netns) -> None:
    host.run("nft", "add table inet tdrop")
    host.run(
        "nft",
        "add chain inet tdrop forward_drop { type filter hook forward priority 0; policy drop; }",
    )


def drop_in_iptables(host: Netns) -> None:
    host.run("iptables", "-P", "FORWARD", "DROP")


@pytest.mark.parametrize(
    "where,backend",
    [("nft", "nftables"), ("iptables", "nftables"), ("iptables", "iptables"), ("nft", "")],
)
def test_traffic_through_a_dropping_host(
    run_plugin, host_ns, container_ns, tmp_path, where, backend
):
    outside = container_ns()
    wire_outside(host_ns, outside)
    outside.run("ip", "route", "add", SUBNET, "via", "198.18.0.1")
    (drop_in_own_nft_table if where == "nft" else drop_in_iptables)(host_ns)
    c = container_ns()
    chain = Chain(run_plugin, host_ns, c, tmp_path, "fwtraf1")
    fw = {"backend": backend} if backend else {}
    b = chain.exec(run_plugin, "bridge", "ADD", bridge_conf(tmp_path))
    assert b.rc == 0
    chain.prev = b.json
    ip = chain.prev["ips"][0]["address"].split("/")[0]
    maps = [{"hostPort": 8086, "containerPort": 80, "protocol": "tcp"}]
    p = chain.exec(
        run_plugin,
        "portmap",
        "ADD",
        chained("portmap", chain.prev, runtimeConfig={"portMappings": maps}),
    )
    assert p.rc == 0, p.stdout + p.stderr
    with (
        server(outside, "198.18.0.2", 9090, "out"),
        server(c, "0.0.0.0", 80, "ctr"),
        server(c, "0.0.0.0", 81, "hidden"),
    ):
        # the drop is real: without the firewall plugin nothing is forwarded
        assert connect(c, "198.18.0.2", 9090, timeout=1) is None
        assert connect(outside, "198.18.0.1", 8086, timeout=1) is None
        f = chain.fw(run_plugin, "ADD", **fw)
        assert f.rc == 0, f.stdout + f.stderr
        assert f.json == chain.prev
        assert chain.fw(run_plugin, "CHECK", **fw).rc == 0
        # container -> outside (masqueraded: the outside sees the host)
        assert connect(c, "198.18.0.2", 9090) == "out 198.18.0.1", host_ns.run(
            "nft", "list", "ruleset"
        ) + host_ns.sysctl("net.ipv4.ip_forward")
        # outside -> published port -> container
        assert (connect(outside, "198.18.0.1", 8086) or "").startswith("ctr ")
        # outside -> container directly, unpublished: still dropped
        assert connect(outside, ip, 81, timeout=1) is None
        # the admin chain runs first: a drop there wins over our accepts
        if where == "nft":
            admin = ("nft", "add rule inet tdrop CNI-ADMIN ip daddr 198.18.0.2 drop")
            flush = ("nft", "flush chain inet tdrop CNI-ADMIN")
        else:
            admin = ("iptables", "-A", "CNI-ADMIN", "-d", "198.18.0.2", "-j", "DROP")
            flush = ("iptables", "-F", "CNI-ADMIN")
        host_ns.run(*admin)
        assert connect(c, "198.18.0.2", 9090, timeout=1) is None
        host_ns.run(*flush)
        assert connect(c, "198.18.0.2", 9090) == "out 198.18.0.1"
        d = chain.fw(run_plugin, "DEL", **fw)
        assert d.rc == 0, d.stdout + d.stderr
        assert connect(c, "198.18.0.2", 9090, timeout=1) is None
    # nothing of this container's left in either place
    assert ip_rules(filter_rules(host_ns), ip) == []
    assert ip not in json.dumps(forward_chain_rules(host_ns))
    assert forward_records(tmp_path) == []


def test_nftables_backend_on_an_open_host_touches_nothing(
    run_plugin, host_ns, container_ns, tmp_path
):
    chain = Chain(run_plugin, host_ns, container_ns(), tmp_path, "fwopen1")
    before_nft = host_ns.nft_json()
    chain.add(backend="nftables")
    # bridge ipMasq's own table only; no filter chain anywhere gains a rule
    assert "CNI-FORWARD" not in json.dumps(host_ns.nft_json())
    assert "CNI-FORWARD" not in json.dumps(before_nft)
    assert chain.fw(run_plugin, "CHECK", backend="nftables").rc == 0
    assert chain.fw(run_plugin, "DEL", backend="nftables").rc == 0
    assert forward_records(tmp_path) == []


# -- bad input, firewalld, GC ---------------------------------------------------------------------

PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "pytfw0"}],
    "ips": [{"address": "10.76.0.9/24"}],
}


@pytest.mark.parametrize(
    "extra,code,words",
    [
        ({"backend": "pf"}, 7, "unknown backend"),
        ({"ingressPolicy": "closed"}, 7, "unknown ingress policy"),
        ({"iptablesAdminChainName": "bad name"}, 7, "iptablesAdminChainName"),
        ({"iptablesAdminChainName": "FORWARD"}, 7, "iptablesAdminChainName"),
        ({"backend": "firewalld"}, 50, "firewalld is not running"),
        ({"prevResult": None}, 7, "missing prevResult"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(run_plugin, host_ns, extra, code, words):
    before = (host_ns.run("iptables-save"), host_ns.nft_json())
    conf = chained("firewall", PREV, **extra)
    if conf.get("prevResult") is None:
        conf.pop("prevResult")
    err = run_plugin(
        "firewall", "ADD", conf, container_id="fwbad1", netns=host_ns.path, in_ns=host_ns
    ).error
    assert err["code"] == code, err
    assert words in err["msg"], err
    assert (host_ns.run("iptables-save"), host_ns.nft_json()) == before


def test_firewalld_del_when_not_running_succeeds(run_plugin, host_ns):
    r = run_plugin(
        "firewall",
        "DEL",
        chained("firewall", PREV, backend="firewalld"),
        container_id="fwd1",
        in_ns=host_ns,
    )
    assert r.rc == 0, r.stdout + r.stderr


def test_gc_removes_what_is_not_valid(run_plugin, host_ns, container_ns, tmp_path):
    keep = Chain(run_plugin, host_ns, container_ns(), tmp_path, "fwkeep")
    gone = Chain(run_plugin, host_ns, container_ns(), tmp_path, "fwgone")
    ip_keep = keep.add(backend="iptables")
    ip_gone = gone.add(backend="iptables")
    gc = {
        "cniVersion": "1.1.0",
        "name": NET,
        "type": "firewall",
        "backend": "iptables",
        "cni.dev/valid-attachments": [{"containerID": "fwkeep", "ifname": "eth0"}],
    }
    r = run_plugin("firewall", "GC", gc, in_ns=host_ns)
    assert r.rc == 0, r.stdout + r.stderr
    rules = filter_rules(host_ns)
    assert len(ip_rules(rules, ip_keep)) == 2
    assert ip_rules(rules, ip_gone) == []


def test_gc_keeps_rules_of_an_address_a_live_attachment_reuses(run_plugin, host_ns, tmp_path):
    """A stale record (its DEL never came) whose address was handed to a new container
    since: GC drops the record, and the reference-keyed rules of that address stay."""
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.76.0.44/24"}]}
    conf = chained("firewall", prev, backend="iptables")
    for cid in ("fwstale", "fwlive"):
        r = run_plugin("firewall", "ADD", conf, container_id=cid, netns=host_ns.path, in_ns=host_ns)
        assert r.rc == 0, r.stdout + r.stderr
    gc = {
        "cniVersion": "1.1.0",
        "name": NET,
        "type": "firewall",
        "cni.dev/valid-attachments": [{"containerID": "fwlive", "ifname": "eth0"}],
    }
    assert run_plugin("firewall", "GC", gc, in_ns=host_ns).rc == 0
    assert len(ip_rules(filter_rules(host_ns), "10.76.0.44")) == 2
    assert [p.stem for p in forward_records(tmp_path)] == ["fwlive-eth0"]


def test_dual_stack_layout_equals_the_references_line_for_line(
    run_plugin, run_reference, host_ns, container_ns
):
    """Same ADD, reference binary in one throwaway host, ours in another: the same
    iptables and ip6tables filter tables, but for our one shared published-ports rule."""
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "pytfw0"}],
        "ips": [{"address": "10.76.0.7/24"}, {"address": "fd00:76::7/64"}],
    }
    conf = chained("firewall", prev, backend="iptables", iptablesAdminChainName="MY-ADMIN")
    other = container_ns()
    for runner, ns in ((run_reference, host_ns), (run_plugin, other)):
        r = runner("firewall", "ADD", conf, container_id="fwds1", netns=ns.path, in_ns=ns)
        assert r.rc == 0, r.stdout + r.stderr
    for family in (4, 6):
        ref, ours = filter_rules(host_ns, family), filter_rules(other, family)
        assert [r for r in ours if "published ports" not in r] == ref
        assert any("MY-ADMIN" in r for r in ref)
    # and the reference's DEL takes ours away in both families
    assert run_reference("firewall", "DEL", conf, container_id="fwds1", in_ns=other).rc == 0
    assert not [r for r in filter_rules(other, 6) if "fd00:76::7" in r]
    assert not [r for r in filter_rules(other, 4) if "10.76.0.7" in r]


def test_replay_after_a_flush_restores_the_accepts(run_plugin, host_ns, tmp_path, state_dir):
    """`nft flush ruleset` (a firewall reload) takes the accepts away; replay() puts
    them back where the drop lives now, from the saved records."""
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.76.0.55/24"}]}
    drop_in_iptables(host_ns)
    r = run_plugin(
        "firewall", "ADD", chained("firewall", prev), container_id="fwrp1",
        netns=host_ns.path, in_ns=host_ns,
    )  # fmt: skip
    assert r.rc == 0, r.stdout + r.stderr
    assert len(ip_rules(filter_rules(host_ns), "10.76.0.55")) == 2
    host_ns.run("nft", "flush ruleset")
    drop_in_iptables(host_ns)  # the admin's own policy comes back first
    assert ip_rules(filter_rules(host_ns), "10.76.0.55") == []
    code = "from pycni.firewall.forward import replay; print(replay())"
    out = host_ns.run("env", f"PYCNI_STATE_DIR={state_dir}", sys.executable, "-c", code)
    assert out.strip() == "1"
    assert len(ip_rules(filter_rules(host_ns), "10.76.0.55")) == 2
    assert run_plugin("firewall", "CHECK", chained("firewall", prev), container_id="fwrp1",
                      netns=host_ns.path, in_ns=host_ns).rc == 0  # fmt: skip


def test_ingress_policy_same_bridge_isolates_networks_for_real(
    run_plugin, host_ns, container_ns, tmp_path
):
    """Two bridge networks on one host: traffic between them flows until both are
    chained with ingressPolicy same-bridge; then it is dropped, while each container
    still reaches its own gateway."""
    nets = []
    for n, (bridge, subnet) in enumerate(
        (("pytfwa", "10.76.10.0/24"), ("pytfwb", "10.76.11.0/24"))
    ):
        c = container_ns()
        conf = bridge_conf(tmp_path / f"n{n}")
        conf.update(name=f"fwiso{n}", bridge=bridge)
        conf["ipam"]["ranges"] = [[{"subnet": subnet}]]
        b = run_plugin("bridge", "ADD", conf, netns=c.path, container_id=f"fwsb{n}", in_ns=host_ns)
        assert b.rc == 0, b.stdout + b.stderr
        nets.append((c, b.json, conf))
    (ca, _, _), (cb, prevb, _) = nets
    ip_b = prevb["ips"][0]["address"].split("/")[0]
    with server(cb, "0.0.0.0", 8080, "b"):
        assert (connect(ca, ip_b, 8080) or "").startswith("b ")
        for n, (c, prev, conf) in enumerate(nets):
            f = run_plugin(
                "firewall", "ADD",
                {"cniVersion": "1.0.0", "name": conf["name"], "type": "firewall",
                 "ingressPolicy": "same-bridge", "prevResult": prev},
                netns=c.path, container_id=f"fwsb{n}", in_ns=host_ns,
            )  # fmt: skip
            assert f.rc == 0, f.stdout + f.stderr
        assert connect(ca, ip_b, 8080, timeout=1) is None
        gw_b = prevb["ips"][0]["gateway"]
        with server(host_ns, gw_b, 8081, "gw"):
            assert (connect(cb, gw_b, 8081) or "").startswith("gw ")
