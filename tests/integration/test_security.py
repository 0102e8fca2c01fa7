"""Known attacks, each shown to fail, with packets crafted by scapy inside throwaway
namespaces (only to addresses the test assigned)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns
from tests.traffic import connect, server, wire_outside

pytestmark = pytest.mark.root
PY = sys.executable


def scapy(ns: Netns, code: str, timeout: float = 60) -> str:
    """Run scapy code inside `ns`; returns stdout."""
    prog = (
        "import logging; logging.getLogger('scapy.runtime').setLevel(logging.ERROR)\nfrom scapy.all import *\nconf.verb = 0\n"
        + code
    )
    proc = subprocess.run(
        ["ip", "netns", "exec", ns.name, PY, "-c", prog],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def bridge_conf(tmp: Path, **extra: Any) -> dict[str, Any]:
    conf = {
        "cniVersion": "1.0.0",
        "name": "secnet",
        "type": "bridge",
        "bridge": "pytsec0",
        "isDefaultGateway": True,
        "ipMasq": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.75.0.0/24"}], [{"subnet": "fd75::/64"}]],
            "dataDir": str(tmp / "ipam"),
        },
    }
    conf.update(extra)
    return conf


def add(run_plugin, host: Netns, c: Netns, tmp: Path, cid: str, **extra: Any) -> dict[str, Any]:
    res = run_plugin(
        "bridge", "ADD", bridge_conf(tmp, **extra), netns=c.path, container_id=cid, in_ns=host
    )
    assert res.rc == 0, res.stdout + res.stderr
    return res.json


def ipv6_state(ns: Netns) -> str:
    routes = ns.run("ip", "-6", "route", "show")
    addrs = ns.run("ip", "-6", "addr", "show")
    return routes + addrs


def test_rogue_router_advertisement(run_plugin, host_ns, container_ns, tmp_path) -> None:
    """CVE-2020-10749: a container's RA must not give the node or other containers a
    route or an address."""
    attacker, victim = container_ns(), container_ns()
    add(run_plugin, host_ns, attacker, tmp_path, "att")
    add(run_plugin, host_ns, victim, tmp_path, "vic")
    # the node accepts RAs in general (as a default host would); only our devices must not
    host_ns.run(
        "sysctl", "-qw", "net.ipv6.conf.all.accept_ra=1", "net.ipv6.conf.default.accept_ra=1"
    )
    time.sleep(0.3)
    before_host, before_victim = ipv6_state(host_ns), ipv6_state(victim)
    mac = attacker.link("eth0")["address"]
    scapy(
        attacker,
        f"""
ra = Ether(src='{mac}', dst='33:33:00:00:00:01') / IPv6(src='fe80::bad:1', dst='ff02::1', hlim=255) / ICMPv6ND_RA(routerlifetime=1800) / \\
     ICMPv6NDOptPrefixInfo(prefix='2001:db8:bad::', prefixlen=64, L=1, A=1, validlifetime=3600, preferredlifetime=3600) / \\
     ICMPv6NDOptRouteInfo(prefix='2001:db8:bad:1::', plen=64, rtlifetime=3600) / ICMPv6NDOptSrcLLAddr(lladdr='{mac}')
for _ in range(3):
    sendp(ra, iface='eth0')
""",
    )
    time.sleep(1.5)
    for state in (ipv6_state(host_ns), ipv6_state(victim)):
        assert "2001:db8:bad" not in state
        assert "fe80::bad:1" not in state
    assert "via fe80::bad:1" not in host_ns.run("ip", "-6", "route", "show", "table", "all")
    assert before_host.count("default") == ipv6_state(host_ns).count("default")
    assert before_victim.count("default") == ipv6_state(victim).count("default")


def test_mac_arp_ip_spoofing_dropped(run_plugin, host_ns, container_ns, tmp_path) -> None:
    attacker, victim = container_ns(), container_ns()
    a = add(run_plugin, host_ns, attacker, tmp_path, "att", macspoofchk=True)
    v = add(run_plugin, host_ns, victim, tmp_path, "vic", macspoofchk=True)
    a_mac, a_ip = a["interfaces"][2]["mac"], a["ips"][0]["address"].split("/")[0]
    v_mac, v_ip = v["interfaces"][2]["mac"], v["ips"][0]["address"].split("/")[0]
    gw_mac = host_ns.link("pytsec0")["address"]
    # the gateway learns the victim's real MAC
    host_ns.run("ping", "-c1", "-W1", v_ip)
    neigh_before = host_ns.run("ip", "neigh", "show", v_ip)
    assert v_mac in neigh_before
    # 1. ARP cache poisoning: "victim's IP is at the attacker's MAC", twice over
    scapy(
        attacker,
        f"""
sendp(Ether(src='{a_mac}', dst='{gw_mac}') / ARP(op=2, hwsrc='{a_mac}', psrc='{v_ip}', hwdst='{gw_mac}', pdst='10.75.0.1'), iface='eth0', count=3)
sendp(Ether(src='{v_mac}', dst='ff:ff:ff:ff:ff:ff') / ARP(op=1, hwsrc='{v_mac}', psrc='{v_ip}', pdst='10.75.0.1'), iface='eth0', count=3)
""",
    )
    time.sleep(0.3)
    neigh_after = host_ns.run("ip", "neigh", "show", v_ip)
    assert v_mac in neigh_after and a_mac not in neigh_after
    # 2. IP spoofing (own MAC, victim's source IP) and 3. MAC spoofing: nothing arrives
    log = tmp_path / "udp.log"
    listener = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            host_ns.name,
            PY,
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.75.0.1', 7070))\n"
            "print('ready', flush=True)\nwhile True:\n  d, p = s.recvfrom(100)\n  open(sys.argv[1], 'a').write(f'{p[0]} {p[1]}\\n')",
            str(log),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        scapy(
            attacker,
            f"""
sendp(Ether(src='{a_mac}', dst='{gw_mac}') / IP(src='{v_ip}', dst='10.75.0.1') / UDP(sport=4444, dport=7070) / b'x', iface='eth0', count=2)
sendp(Ether(src='{v_mac}', dst='{gw_mac}') / IP(src='{v_ip}', dst='10.75.0.1') / UDP(sport=4445, dport=7070) / b'x', iface='eth0', count=2)
sendp(Ether(src='{a_mac}', dst='{gw_mac}') / IP(src='{a_ip}', dst='10.75.0.1') / UDP(sport=4446, dport=7070) / b'x', iface='eth0', count=2)
""",
        )
        time.sleep(0.5)
    finally:
        listener.kill()
        listener.wait()
    received = log.read_text().split("\n") if log.exists() else []
    assert f"{a_ip} 4446" in received  # honest packets from the attacker do arrive
    assert not any(line.endswith((" 4444", " 4445")) for line in received), (
        received
    )  # spoofed ones do not


def test_ipv6_neighbour_spoofing_dropped(run_plugin, host_ns, container_ns, tmp_path) -> None:
    """An advertisement sent from the attacker's own link-local address (which passes
    every source check) naming the victim's global address, or carrying another MAC in
    its link-layer option, must not reach the gateway; the victim's own neighbour
    discovery keeps working."""
    attacker, victim = container_ns(), container_ns()
    a = add(run_plugin, host_ns, attacker, tmp_path, "att", macspoofchk=True)
    v = add(run_plugin, host_ns, victim, tmp_path, "vic", macspoofchk=True)
    a_mac = a["interfaces"][2]["mac"]
    v_mac = v["interfaces"][2]["mac"]
    a_ip6 = next(ip["address"].split("/")[0] for ip in a["ips"] if ":" in ip["address"])
    v_ip6 = next(ip["address"].split("/")[0] for ip in v["ips"] if ":" in ip["address"])
    gw_mac = host_ns.link("pytsec0")["address"]
    time.sleep(2.2)  # DAD of the containers' addresses (the bridge plugin turns it off; be safe)
    # the gateway learns the victim's real MAC through the victim's own NA
    assert (
        subprocess.run(
            ["ip", "netns", "exec", host_ns.name, "ping", "-6", "-c1", "-W2", v_ip6],
            capture_output=True,
        ).returncode
        == 0
    )
    assert v_mac in host_ns.run("ip", "-6", "neigh", "show", v_ip6)
    a_ll = attacker.run("ip", "-6", "-br", "addr", "show", "dev", "eth0").split()[2].split("/")[0]
    scapy(
        attacker,
        f"""
gw_ll = 'fe80::1'
na = lambda target, lladdr: Ether(src='{a_mac}', dst='{gw_mac}') / IPv6(src='{a_ll}', dst='ff02::1', hlim=255) / \
     ICMPv6ND_NA(tgt=target, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=lladdr)
sendp(na('{v_ip6}', '{a_mac}'), iface='eth0', count=3)     # the victim's address is at my MAC
sendp(na('{a_ip6}', '{v_mac}'), iface='eth0', count=3)     # my address, another's MAC
two = Ether(src='{a_mac}', dst='{gw_mac}') / IPv6(src='{a_ll}', dst='ff02::1', hlim=255) / \
      ICMPv6ND_NA(tgt='{a_ip6}', O=1) / ICMPv6NDOptDstLLAddr(lladdr='{a_mac}') / ICMPv6NDOptDstLLAddr(lladdr='{v_mac}')
sendp(two, iface='eth0', count=3)                          # a second option behind an honest one
ns = Ether(src='{a_mac}', dst='{gw_mac}') / IPv6(src='{a_ip6}', dst='ff02::1:ff00:1') / \
     ICMPv6ND_NS(tgt='fd75::1') / ICMPv6NDOptSrcLLAddr(lladdr='{v_mac}')
sendp(ns, iface='eth0', count=3)                           # a solicitation naming another's MAC
""",
    )
    time.sleep(0.5)
    neigh = host_ns.run("ip", "-6", "neigh", "show", v_ip6)
    assert v_mac in neigh and a_mac not in neigh, neigh
    mine = host_ns.run("ip", "-6", "neigh", "show", a_ip6)
    assert v_mac not in mine, mine
    # the victim's traffic still flows (its own NS/NA pass), and so does the attacker's
    for ns_, ip in ((victim, "fd75::1"), (attacker, "fd75::1")):
        assert (
            subprocess.run(
                ["ip", "netns", "exec", ns_.name, "ping", "-6", "-c1", "-W2", ip],
                capture_output=True,
            ).returncode
            == 0
        )
    rules = host_ns.run("nft", "list", "table", "bridge", "pycni_spoof")
    assert "nd-neighbor-advert" in rules and "@nd_target" in rules


def test_localhost_published_port_not_reachable_from_neighbour(
    run_plugin, host_ns, container_ns, tmp_path
) -> None:
    """CVE-2020-8558 / moby#45610: publishing on 127.0.0.1 must not expose the port to a
    neighbour that sends to 127.0.0.1 with the node's MAC."""
    outside = container_ns()
    wire_outside(host_ns, outside)
    c = container_ns()
    prev = add(run_plugin, host_ns, c, tmp_path, "c1")
    cip = prev["ips"][0]["address"].split("/")[0]
    pm = {
        "cniVersion": "1.0.0",
        "name": "secnet",
        "type": "portmap",
        "runtimeConfig": {
            "portMappings": [{"hostPort": 8484, "containerPort": 80, "hostIP": "127.0.0.1"}]
        },
        "prevResult": prev,
    }
    res = run_plugin("portmap", "ADD", pm, netns=c.path, container_id="c1", in_ns=host_ns)
    assert res.rc == 0, res.stdout + res.stderr
    node_mac = host_ns.link("up0")["address"]
    with server(c, cip, 80, "secret"):
        assert (connect(host_ns, "127.0.0.1", 8484) or "").startswith(
            "secret"
        )  # the node itself: yes
        out = scapy(
            outside,
            f"""
syn = Ether(dst='{node_mac}') / IP(src='198.18.0.2', dst='127.0.0.1') / TCP(sport=40000, dport=8484, flags='S', seq=1)
ans = srp1(syn, iface='wan0', timeout=2)
print('answered', ans is not None and ans.haslayer(TCP) and ans[TCP].flags & 0x12 == 0x12)
""",
        )
    assert "answered False" in out
    assert connect(outside, "198.18.0.1", 8484, timeout=1) is None  # nor via the node's address


def test_isolation_survives_flush_and_repair(tmp_path, container_ns) -> None:
    """Two netctl networks cannot reach each other over IPv4 and IPv6; after `nft flush
    ruleset` and `netctl system reload`, they still cannot."""
    from tests.conftest import _delete_netns, _make_netns

    node = _make_netns("n")
    env = {
        "NETCTL_ROOT": str(tmp_path),
        "NETCTL_DAEMON_CONFIG": str(tmp_path / "daemon.json"),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }

    def netctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["nsenter", f"--net={node.path}", PY, "-m", "pycni.runtime.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    try:
        netctl(
            "network",
            "create",
            "iso-a",
            "--subnet",
            "10.84.0.0/24",
            "--ipv6",
            "--subnet",
            "fd84::/64",
        )
        netctl(
            "network",
            "create",
            "iso-b",
            "--subnet",
            "10.85.0.0/24",
            "--ipv6",
            "--subnet",
            "fd85::/64",
        )
        netctl(
            "run",
            "-d",
            "--name",
            "srv",
            "--network",
            "iso-a",
            "--",
            PY,
            "-c",
            "import socket,time\nfor fam,a in ((socket.AF_INET,'0.0.0.0'),(socket.AF_INET6,'::')):\n  s=socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n  s.bind((a, 7000)) if fam==socket.AF_INET else (s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1), s.bind((a,7000)))\n  s.listen(); globals()['k'+str(fam)]=s\ntime.sleep(120)",
        )
        time.sleep(0.8)
        doc = json.loads(netctl("inspect", "srv").stdout)[0]["NetworkSettings"]["Networks"]["iso-a"]
        targets = [doc["IPAddress"], doc["GlobalIPv6Address"]]
        assert all(targets), doc

        def reach(network: str) -> list[bool]:
            out = []
            for t in targets:
                probe = f"import socket; socket.create_connection(('{t}', 7000), timeout=1.5); print('ok')"
                out.append(
                    netctl(
                        "run", "--rm", "--network", network, "--", PY, "-c", probe, check=False
                    ).returncode
                    == 0
                )
            return out

        assert reach("iso-a") == [True, True]
        assert reach("iso-b") == [False, False]
        node.run("nft", "flush", "ruleset")
        netctl("system", "reload")
        assert reach("iso-b") == [False, False]
        assert reach("iso-a") == [True, True]
    finally:
        for cid in netctl("ps", "-a", "-q", check=False).stdout.split():
            netctl("rm", "-f", cid, check=False)
        _delete_netns(node)


def test_spoof_check_del_paths(run_plugin, host_ns, container_ns, tmp_path) -> None:
    """DEL removes only this port's elements (one small transaction); after the table
    was deleted behind our back, and on a second DEL, it still succeeds; the next ADD
    builds the table again with its full chain."""

    def guarded() -> list[str]:
        out = host_ns.run("nft", "-j", "list", "set", "bridge", "pycni_spoof", "guarded")
        items = json.loads(out)["nftables"][1]["set"].get("elem", [])
        return sorted(str(e) for e in items)

    a, b = container_ns(), container_ns()
    add(run_plugin, host_ns, a, tmp_path, "sa", macspoofchk=True)
    add(run_plugin, host_ns, b, tmp_path, "sb", macspoofchk=True)
    assert len(guarded()) == 2
    conf = bridge_conf(tmp_path, macspoofchk=True)
    res = run_plugin("bridge", "DEL", conf, netns=a.path, container_id="sa", in_ns=host_ns)
    assert res.rc == 0, res.stdout + res.stderr
    assert len(guarded()) == 1  # b's stays
    rules = host_ns.run("nft", "list", "chain", "bridge", "pycni_spoof", "prerouting")
    assert rules.count("drop") >= 4  # the chain untouched
    host_ns.run("nft", "delete", "table", "bridge", "pycni_spoof")
    for _ in range(2):  # the table gone, then a second DEL
        res = run_plugin("bridge", "DEL", conf, netns=b.path, container_id="sb", in_ns=host_ns)
        assert res.rc == 0, res.stdout + res.stderr
    c = container_ns()
    add(run_plugin, host_ns, c, tmp_path, "sc", macspoofchk=True)
    assert len(guarded()) == 1
    rules = host_ns.run("nft", "list", "chain", "bridge", "pycni_spoof", "prerouting")
    assert rules.count("drop") >= 4
