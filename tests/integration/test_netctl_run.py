"""netctl end to end: networks, `run` in each mode, published ports, lifecycle, bad input.

netctl runs inside a throwaway "node" namespace (nsenter --net, so the mount namespace
is shared and netns bind mounts are visible to every netctl call), with every path in
the test's tmp dir (NETCTL_ROOT). Workloads are small python/sh commands.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Netns, _delete_netns, _make_netns
from tests.traffic import server

pytestmark = pytest.mark.root
PY = sys.executable


class Netctl:
    def __init__(self, node: Netns, root: Path) -> None:
        self.node = node
        self.root = root
        self.env = dict(
            os.environ, NETCTL_ROOT=str(root), NETCTL_DAEMON_CONFIG=str(root / "daemon.json")
        )
        self.env.pop("PYCNI_STATE_DIR", None)

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["nsenter", f"--net={self.node.path}", PY, "-m", "pycni.runtime.cli", *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=timeout, input=input
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"netctl {' '.join(args)} -> {proc.returncode}\n{proc.stderr}\n{proc.stdout}"
            )
        return proc

    def leases(self) -> list[str]:
        d = self.root / "var/lib/netctl/networks"
        if not d.exists():
            return []
        return sorted(
            f"{p.parent.name}/{p.name}"
            for p in d.rglob("*")
            if (p.is_file() and p.name[0].isdigit()) or (":" in p.name and p.parent.parent == d)
        )

    def netns_files(self) -> list[str]:
        d = self.root / "run/netctl/netns"
        return sorted(os.listdir(d)) if d.exists() else []

    def veths(self) -> list[str]:
        return [x["ifname"] for x in self.node.ip_json("link", "show", "type", "veth")]


@pytest.fixture
def netctl(tmp_path: Path) -> Iterator[Netctl]:
    node = _make_netns("n")
    nc = Netctl(node, tmp_path)
    yield nc
    for rec in nc("ps", "-a", "-q", check=False).stdout.split():
        nc("rm", "-f", rec, check=False)
    # nothing of ours may stay mounted under the sandbox
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if str(tmp_path) in line.split()[4]
    ]
    for m in mounts:
        subprocess.run(["umount", "-l", m], check=False)
    _delete_netns(node)
    assert not mounts, f"mounts left behind: {mounts}"


def run_out(nc: Netctl, *args: str) -> str:
    return nc("run", "--rm", *args).stdout


def test_none_mode_has_only_lo(netctl: Netctl) -> None:
    out = run_out(netctl, "--network", "none", "--", "ip", "-br", "link")
    assert [line.split()[0] for line in out.splitlines()] == ["lo"]
    assert netctl.netns_files() == []


def test_bridge_mode_defaults(netctl: Netctl) -> None:
    out = run_out(
        netctl,
        "--hostname",
        "box1",
        "--dns",
        "10.9.9.9",
        "--dns-search",
        "corp.example",
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "gw:host-gateway",
        "--",
        "sh",
        "-c",
        "hostname; ip -4 -br addr show eth0; ip route; cat /etc/resolv.conf /etc/hosts",
    )
    assert out.splitlines()[0] == "box1"
    assert "172.17.0." in out and "/16" in out
    assert "default via 172.17.0.1 dev eth0" in out
    assert "nameserver 10.9.9.9" in out and "search corp.example" in out
    assert "10.1.2.3\tdb" in out and "172.17.0.1\tgw" in out
    assert "\tbox1" in out  # the container's own address maps to its hostname
    assert netctl.netns_files() == [] and netctl.veths() == []
    assert netctl.node.link("netctl0")["linkinfo"]["info_kind"] == "bridge"


def test_host_mode_sees_the_node(netctl: Netctl) -> None:
    netctl.node.run("ip", "link", "add", "pytmark0", "type", "bridge")
    proc = netctl("run", "--rm", "--network", "host", "-p", "8080:80", "--", "ip", "-br", "link")
    assert "pytmark0" in proc.stdout
    assert "Published ports are discarded when using host network mode" in proc.stderr


def test_published_port_from_the_node(netctl: Netctl) -> None:
    site = netctl.root / "site"
    site.mkdir()
    (site / "index.html").write_text("hello pycni\n")
    cid = netctl(
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:80",
        "--",
        PY,
        "-m",
        "http.server",
        "80",
        "--directory",
        str(site),
    ).stdout.strip()
    assert len(cid) == 64
    deadline = time.time() + 10
    body = None
    while time.time() < deadline and body is None:
        proc = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netctl.node.name,
                "curl",
                "-fs",
                "-m",
                "2",
                "http://127.0.0.1:8080/",
            ],
            capture_output=True,
            text=True,
        )
        body = proc.stdout if proc.returncode == 0 else None
        time.sleep(0.1)
    assert body == "hello pycni\n"
    ps = netctl("ps").stdout
    assert "web" in ps and "0.0.0.0:8080->80/tcp" in ps
    assert netctl("port", "web").stdout.strip() == "80/tcp -> 0.0.0.0:8080"
    assert netctl("port", "web", "80").stdout.strip() == "0.0.0.0:8080"
    doc = json.loads(netctl("inspect", "web").stdout)[0]
    assert doc["NetworkSettings"]["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]
    }
    ip = doc["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    # container:web shares web's network namespace: same address, and web's port on 127.0.0.1
    out = run_out(
        netctl,
        "--network",
        "container:web",
        "--",
        "sh",
        "-c",
        f"ip -4 -br addr show eth0; {PY} -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:80/').read().decode())\"",
    )
    assert ip in out and "hello pycni" in out
    # a second container cannot take the same host port
    clash = netctl("run", "--rm", "-p", "8080:80", "--", "true", check=False)
    assert (
        clash.returncode == 125 and "8080" in clash.stderr and "already allocated" in clash.stderr
    )
    assert netctl("stop", "-t", "1", "web").returncode == 0
    assert "Exited" in netctl("ps", "-a").stdout
    netctl("rm", "web")
    assert netctl.netns_files() == [] and netctl.veths() == [] and netctl.leases() == []


def test_named_network_subnet_gateway_and_ip(netctl: Netctl) -> None:
    netctl("network", "create", "mybr0", "--subnet", "172.26.0.0/16", "--gateway", "172.26.0.1")
    out = run_out(
        netctl, "--network", "mybr0", "--", "sh", "-c", "ip -4 -br addr show eth0; ip route"
    )
    assert "172.26.0." in out and "/16" in out and "default via 172.26.0.1" in out
    out = run_out(
        netctl,
        "--network",
        "mybr0",
        "--ip",
        "172.26.5.5",
        "--",
        "ip",
        "-4",
        "-br",
        "addr",
        "show",
        "eth0",
    )
    assert "172.26.5.5/16" in out
    bad = netctl("run", "--rm", "--network", "mybr0", "--ip", "10.9.9.9", "--", "true", check=False)
    assert (
        bad.returncode == 125
        and "Invalid address 10.9.9.9: It does not belong to any of this network's subnets"
        in bad.stderr
    )


def test_two_containers_talk_on_one_network_not_across(netctl: Netctl) -> None:
    netctl("network", "create", "neta", "--subnet", "10.81.0.0/24")
    netctl("network", "create", "netb", "--subnet", "10.82.0.0/24")
    a = netctl(
        "run", "-d", "--name", "a", "--network", "neta", "--", PY, "-m", "http.server", "8000"
    ).stdout.strip()
    time.sleep(0.5)
    a_ip = json.loads(netctl("inspect", a).stdout)[0]["NetworkSettings"]["Networks"]["neta"][
        "IPAddress"
    ]
    probe = f"import socket; s=socket.create_connection(('{a_ip}', 8000), timeout=2); print('ok')"
    same = netctl("run", "--rm", "--network", "neta", "--", PY, "-c", probe, check=False)
    assert same.returncode == 0 and "ok" in same.stdout, same.stderr
    other = netctl("run", "--rm", "--network", "netb", "--", PY, "-c", probe, check=False)
    assert other.returncode != 0
    bad_rm = netctl("network", "rm", "neta", check=False)
    assert (
        bad_rm.returncode == 125
        and "has active endpoints" in bad_rm.stderr
        and "a" in bad_rm.stderr
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--network", "nosuchnet"], "network nosuchnet not found"),
        (["-p", "99999:80"], "invalid hostPort: 99999"),
        (["-p", "80/icmp"], "invalid proto: icmp"),
        (["--add-host", "nocolon"], 'bad format for add-host: "nocolon"'),
        (["--add-host", "h:not-an-ip"], 'invalid IP address in add-host: "not-an-ip"'),
        (
            ["--network", "container:x", "-p", "80"],
            "conflicting options: port publishing and the container type network mode",
        ),
        (
            ["--network", "container:x", "--hostname", "h"],
            "conflicting options: hostname and the network mode",
        ),
        (
            ["--network", "container:x", "--dns", "1.1.1.1"],
            "conflicting options: dns and the network mode",
        ),
        (["--network", "container:nosuch"], "No such container: nosuch"),
        (
            ["--ip", "172.17.0.9"],
            "user specified IP address is supported only when connecting to networks with user configured subnets",
        ),
        (["--name", "bad/name"], "Invalid container name (bad/name)"),
        (["--mac-address", "zz"], "zz is not a valid mac address"),
    ],
)
def test_bad_input(netctl: Netctl, args: list[str], message: str) -> None:
    proc = netctl("run", "--rm", *args, "--", "true", check=False)
    assert proc.returncode == 125, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert netctl.netns_files() == [] and netctl.veths() == [] and netctl.leases() == []
    assert netctl("ps", "-a", "-q").stdout == ""


def test_name_in_use(netctl: Netctl) -> None:
    netctl("run", "-d", "--name", "dup", "--network", "none", "--", "sleep", "30")
    proc = netctl("run", "--name", "dup", "--network", "none", "--", "true", check=False)
    assert proc.returncode == 125 and 'The container name "/dup" is already in use' in proc.stderr


def test_exit_codes(netctl: Netctl) -> None:
    assert (
        netctl(
            "run", "--rm", "--network", "none", "--", "sh", "-c", "exit 7", check=False
        ).returncode
        == 7
    )
    assert (
        netctl("run", "--rm", "--network", "none", "--", "/no/such/binary", check=False).returncode
        == 127
    )
    assert (
        netctl("run", "--rm", "--network", "none", "--", "/etc/hostname", check=False).returncode
        == 126
    )


def test_exec_and_signals(netctl: Netctl) -> None:
    netctl("run", "-d", "--name", "s1", "--hostname", "sigbox", "--", "sleep", "60")
    out = netctl(
        "exec", "s1", "--", "sh", "-c", "hostname; ip -br link | cut -d' ' -f1"
    ).stdout.split()
    assert out[0] == "sigbox" and any(x.startswith("eth0") for x in out)
    rec = json.loads(netctl("inspect", "s1").stdout)[0]
    os.kill(rec["State"]["Pid"], signal.SIGTERM)
    deadline = time.time() + 10
    while time.time() < deadline and "Exited (143)" not in netctl("ps", "-a").stdout:
        time.sleep(0.1)
    assert "Exited (143)" in netctl("ps", "-a").stdout
    assert netctl.netns_files() == [] and netctl.veths() == []


def test_killed_supervisor_is_cleaned_up_by_rm(netctl: Netctl) -> None:
    """The kernel's truth after the supervisor is SIGKILLed: the workload still runs, so
    the container reads as running (not "Exited" while it serves), and rm -f ends every
    process of it and releases the network."""
    netctl("run", "-d", "--name", "k1", "-p", "8088:80", "--", "sleep", "60")
    rec = json.loads(netctl("inspect", "k1").stdout)[0]
    records = list((netctl.root / "run/netctl/containers").glob("*.json"))
    sup = json.loads(records[0].read_text())["supervisor_pid"]
    os.kill(sup, signal.SIGKILL)
    time.sleep(0.3)
    assert "Up " in netctl("ps").stdout
    assert len(netctl.veths()) == 1 and netctl.leases()  # still held: it still runs
    netctl("rm", "-f", "k1")
    assert netctl.veths() == [] and netctl.leases() == [] and netctl.netns_files() == []
    assert (
        not os.path.exists(f"/proc/{rec['State']['Pid']}")
        or Path(f"/proc/{rec['State']['Pid']}/stat").read_text().split()[2] == "Z"
    )


def test_reboot_then_system_gc(netctl: Netctl) -> None:
    netctl("run", "-d", "--name", "r1", "--", "sleep", "60")
    netctl("run", "-d", "--name", "r2", "-p", "8089:80", "--", "sleep", "60")
    assert len(netctl.leases()) == 2
    # "reboot": every process and namespace gone, the run dir (tmpfs) gone, the lib dir kept
    for f in (netctl.root / "run/netctl/containers").glob("*.json"):
        data = json.loads(f.read_text())
        for pid in (data["supervisor_pid"], data["pid"]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    time.sleep(0.3)
    for name in netctl.netns_files():
        subprocess.run(["umount", str(netctl.root / "run/netctl/netns" / name)], check=False)
    subprocess.run(["rm", "-rf", str(netctl.root / "run")], check=True)
    for v in netctl.veths():
        netctl.node.run("ip", "link", "del", v, check=False)  # a reboot takes the veths too
    out = netctl("system", "gc").stdout
    assert "gc done" in out
    assert netctl.leases() == []
    assert list((netctl.root / "var/lib/netctl/cni/results").glob("*")) == []
    ruleset = netctl.node.run("nft", "-j", "list", "table", "inet", "pycni")
    assert "8089" not in ruleset


def test_flush_then_reload_restores_published_ports(netctl: Netctl) -> None:
    netctl("run", "-d", "--name", "f1", "-p", "8090:8000", "--", PY, "-m", "http.server", "8000")
    time.sleep(0.7)
    probe = [
        "ip",
        "netns",
        "exec",
        netctl.node.name,
        "curl",
        "-fs",
        "-m",
        "2",
        "-o",
        "/dev/null",
        "http://127.0.0.1:8090/",
    ]
    assert subprocess.run(probe).returncode == 0
    netctl.node.run("nft", "flush", "ruleset")
    assert subprocess.run(probe).returncode != 0
    out = netctl("system", "reload").stdout
    assert "re-applied" in out
    assert subprocess.run(probe).returncode == 0


def test_bridge_deleted_then_reload_reconnects_running_containers(netctl: Netctl) -> None:
    """Someone deletes the bridge under running containers: `system reload` re-creates
    it (gateway, MAC pinned), re-attaches the host veths, then re-applies the firewall
    state (route_localnet for 127.0.0.1 lives on the bridge): no restart needed."""
    netctl("run", "-d", "--name", "w1", "-p", "8091:8000", "--", PY, "-m", "http.server", "8000")
    netctl("run", "-d", "--name", "w2", "--", "sleep", "300")
    time.sleep(0.7)
    w1 = json.loads(netctl("inspect", "w1").stdout)[0]
    ip1 = w1["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    bridge = netctl.node.ip_json("link", "show", "type", "bridge")[0]
    name, mac = bridge["ifname"], bridge["address"]
    curl = ["curl", "-fs", "-m", "2", "-o", "/dev/null"]
    from_host = ["ip", "netns", "exec", netctl.node.name, *curl, "http://127.0.0.1:8091/"]
    from_w2 = ["exec", "w2", "--", *curl, f"http://{ip1}:8000/"]
    assert subprocess.run(from_host).returncode == 0
    assert netctl(*from_w2, check=False).returncode == 0
    netctl.node.run("ip", "link", "del", name)
    assert subprocess.run(from_host).returncode != 0
    assert netctl(*from_w2, check=False).returncode != 0
    out = netctl("system", "reload").stdout
    assert f"re-created bridge {name}" in out and out.count("re-attached veth") == 2, out
    assert subprocess.run(from_host).returncode == 0
    assert netctl(*from_w2, check=False).returncode == 0
    again = netctl.node.ip_json("link", "show", name)[0]
    assert again["address"] == mac  # derived, pinned: neighbours' caches stay right
    # A second reload finds everything in place and changes nothing.
    assert "re-created" not in netctl("system", "reload").stdout


def test_outside_traffic_is_masqueraded(netctl: Netctl) -> None:
    outside = _make_netns("o")
    try:
        from tests.traffic import wire_outside

        wire_outside(netctl.node, outside)
        with server(outside, "198.18.0.2", 7000, "out"):
            probe = "import socket; s=socket.create_connection(('198.18.0.2', 7000), timeout=2); print(s.recv(100).decode())"
            out = run_out(netctl, "--", PY, "-c", probe)
        assert out.strip() == "out 198.18.0.1"  # the outside saw the node's address
        netctl("network", "create", "inner", "--internal", "--subnet", "10.83.0.0/24")
        with server(outside, "198.18.0.2", 7001, "out"):
            probe = "import socket; s=socket.create_connection(('198.18.0.2', 7001), timeout=2); print(s.recv(100).decode())"
            internal = netctl(
                "run", "--rm", "--network", "inner", "--", PY, "-c", probe, check=False
            )
        assert internal.returncode != 0
    finally:
        _delete_netns(outside)


def test_dual_stack_network_ip6_and_mac(netctl: Netctl) -> None:
    netctl("network", "create", "ds", "--ipv6", "--subnet", "10.86.0.0/24", "--subnet", "fd86::/64")
    out = run_out(
        netctl,
        "--network",
        "ds",
        "--ip",
        "10.86.0.50",
        "--ip6",
        "fd86::50",
        "--mac-address",
        "02:42:0a:56:00:32",
        "--",
        "sh",
        "-c",
        "ip -br addr show eth0; ip -br link show eth0; ip -6 route",
    )
    assert "10.86.0.50/24" in out and "fd86::50/64" in out
    assert "02:42:0a:56:00:32" in out
    assert "default via fd86::1" in out
    bad = netctl("run", "--rm", "--network", "ds", "--ip6", "fd99::5", "--", "true", check=False)
    assert bad.returncode == 125 and "Invalid address fd99::5" in bad.stderr


def test_reload_after_the_admins_firewall_reload_on_a_dropping_host(
    netctl: Netctl, container_ns
) -> None:
    """A host whose forward policy is drop (as Docker leaves it): the firewall plugin's
    accepts let a published port through; after the administrator's firewall is
    reloaded (our state flushed, their drop back), `netctl system reload` restores them."""
    from tests.traffic import wire_outside

    outside = container_ns()
    wire_outside(netctl.node, outside)
    admin = "add table inet adminfw\nadd chain inet adminfw forward { type filter hook forward priority 0; policy drop; }\n"
    netctl.node.run("nft", "-f", "-", input=admin)
    netctl("run", "-d", "--name", "fw1", "-p", "8092:8000", "--", PY, "-m", "http.server", "8000")
    time.sleep(0.7)
    probe = [
        "ip",
        "netns",
        "exec",
        outside.name,
        "curl",
        "-fs",
        "-m",
        "2",
        "-o",
        "/dev/null",
        "http://198.18.0.1:8092/",
    ]
    assert subprocess.run(probe).returncode == 0
    netctl.node.run("nft", "flush", "ruleset")
    netctl.node.run("nft", "-f", "-", input=admin)
    assert subprocess.run(probe).returncode != 0
    out = netctl("system", "reload").stdout
    assert "firewall: re-applied 1 forward accept(s)" in out, out
    assert subprocess.run(probe).returncode == 0


def test_two_roots_on_one_host_do_not_share_the_default_bridge(
    netctl: Netctl, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two NETCTL_ROOTs on one host derive the same default bridge (netctl0,
    172.17.0.0/16). The second root is refused with what to change (it would hand out the
    first root's addresses again); with a bridge and bip of its own in its daemon.json it
    runs beside the first; once the first root is gone, its bridge can be taken over."""
    other_root = tmp_path_factory.mktemp("root2")
    other = Netctl(netctl.node, other_root)
    netctl("run", "-d", "--name", "a", "--", "sleep", "300")
    alias = netctl.node.ip_json("link", "show", "netctl0")[0].get("ifalias", "")
    assert alias == f"netctl:{os.path.realpath(netctl.root / 'var/lib/netctl')}"
    proc = other("run", "--rm", "--", "true", check=False)
    assert proc.returncode == 125, proc
    assert "belongs to another netctl root" in proc.stderr
    assert 'set "bridge" and "bip" in' in proc.stderr and str(other_root) in proc.stderr
    assert other.netns_files() == [] and other.leases() == []
    # A bridge of its own whose subnet another device already routes: refused too.
    (other_root / "daemon.json").write_text(json.dumps({"bridge": "netctl1"}))
    proc = other("run", "--rm", "--", "true", check=False)
    assert proc.returncode == 125 and "already routed through netctl0" in proc.stderr, proc
    assert not netctl.node.link("netctl1")
    (other_root / "daemon.json").write_text(
        json.dumps({"bridge": "netctl1", "bip": "172.18.0.1/16"})
    )
    out = other("run", "--rm", "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "172.18.0.2/16" in out
    # The first root goes away (its state with it): the second may take its bridge.
    netctl("rm", "-f", "a")
    (other_root / "daemon.json").write_text("{}")
    shutil.rmtree(netctl.root / "var/lib/netctl")
    out = other("run", "--rm", "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "172.17.0.2/16" in out
    alias = netctl.node.ip_json("link", "show", "netctl0")[0].get("ifalias", "")
    assert alias == f"netctl:{os.path.realpath(other_root / 'var/lib/netctl')}"
