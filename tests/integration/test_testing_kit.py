"""pycni.testing, the pytest plugin for users: its fixtures used for real (namespaces,
topologies from a dict and from YAML, a node running netctl, traffic and scapy helpers),
and its guarantees checked from the outside by running pytest itself in a subprocess:
the failure report with its picture and pcap files, reaping after a SIGKILL without
touching a live run, xdist workers that never collide, the unprivileged path as a
non-root user, and the cost of the plugin to a run that does not use it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.testing import packets, runs, topology_fixture, traffic
from pycni.testing.node import Node
from pycni.testing.ns import Netns
from pycni.testing.topology import Topology, TopologyError

pytestmark = pytest.mark.root
PY = sys.executable
REPO = Path(__file__).resolve().parents[2]

ROUTED = {
    "nodes": {
        "client": {"routes": ["default via 10.0.0.1", "default via fd00:0::1"]},
        "router": {
            "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1},
            "bridges": {"lan": {"addresses": ["10.0.1.1/24"]}},
        },
        "server": {"routes": ["default via 10.0.1.1", "default via fd00:1::1"]},
    },
    "links": [
        {"endpoints": ["client:eth0", "router:eth0"], "addresses": ["10.0.0.2/24", "10.0.0.1/24"]},
        {"endpoints": ["server:eth0", "router:lan"], "addresses": ["10.0.1.2/24"]},
    ],
    "addresses": {
        "client:eth0": ["fd00:0::2/64"],
        "router:eth0": ["fd00:0::1/64"],
        "router:lan": ["fd00:1::1/64"],
        "server:eth0": ["fd00:1::2/64"],
    },
}


# -- the fixtures, used for real -------------------------------------------------------


def test_netns_is_fresh_tagged_and_runs_commands(netns: Netns) -> None:
    assert netns.name.startswith(runs.current_tag() + "-")
    assert os.path.exists(netns.path)
    proc = netns.run("ip", "-j", "link", "show")
    assert isinstance(proc, subprocess.CompletedProcess)
    assert [x["ifname"] for x in json.loads(proc.stdout)] == ["lo"]
    assert netns.run("false", check=False).returncode == 1
    with netns.netlink() as ipr:  # pyroute2, for what `ip` does not say in JSON
        assert [link.get("ifname") for link in ipr.get_links()] == ["lo"]


def test_routed_topology_carries_tcp_udp_http_icmp_and_bulk(
    topology: type[Topology],
) -> None:
    topo = topology(ROUTED)
    client, server = topo["client"], topo["server"]
    assert topo.ip("server:eth0") == "10.0.1.2"
    assert topo["router"].link("lanp1")["master"] == "lan"
    assert traffic.ping(client, "10.0.1.2", count=2)
    # dual stack, routed (the first echo waits for neighbour discovery on two hops)
    assert traffic.ping(client, "fd00:1::2", timeout=3)
    assert not traffic.ping(client, "10.0.9.9", timeout=0.3)  # nothing there: bounded
    with traffic.echo_server(server, "0.0.0.0", 7000):
        assert traffic.echo_reply(client, "10.0.1.2", 7000, "hi") == "hi 10.0.0.2"
    with traffic.echo_server(server, "::", 7000):
        assert traffic.echo_reply(client, "fd00:1::2", 7000, "six") == "six fd00::2"
    with traffic.echo_server(server, "0.0.0.0", 7001, proto="udp"):
        assert traffic.echo(client, "10.0.1.2", 7001, "dgram", proto="udp") == "dgram"
    assert traffic.echo(client, "10.0.1.2", 7002, timeout=0.5) is None  # refused, not hung
    with traffic.http_server(server, "0.0.0.0", 8080, body="hello"):
        assert traffic.http_get(client, "http://10.0.1.2:8080/") == (200, "hello")
    bps = traffic.throughput(client, server, "10.0.1.2", seconds=0.5)
    print(f"throughput client->server through the router: {bps / 1e9:.2f} Gbit/s")
    assert bps > 1e6


def test_yaml_topology_with_vxlan_between_nodes(topology: type[Topology], tmp_path: Path) -> None:
    spec = tmp_path / "overlay.yaml"
    spec.write_text(
        textwrap.dedent("""
        nodes:
          a: {}
          b: {}
        links:
          - {endpoints: [a:under0, b:under0], addresses: [192.0.2.1/24, 192.0.2.2/24]}
        vxlans:
          - name: vx42
            vni: 42
            nodes:
              a: {underlay: 192.0.2.1, address: 10.42.0.1/24}
              b: {underlay: 192.0.2.2, address: 10.42.0.2/24}
        """)
    )
    topo = topology(str(spec))
    info = topo["a"].link("vx42")["linkinfo"]
    assert info["info_kind"] == "vxlan" and info["info_data"]["id"] == 42
    with packets.sniffer(
        topo["b"], "under0", match=lambda p: p.haslayer("UDP") and p["UDP"].dport == 4789
    ) as sniff:
        assert traffic.ping(topo["a"], "10.42.0.2")
        assert sniff.wait(count=1, timeout=2), "the overlay's ping did not travel in VXLAN"


def test_topology_spec_errors_name_the_fix(topology: type[Topology]) -> None:
    with pytest.raises(TopologyError, match="NODE:IFNAME"):
        topology({"nodes": {"a": {}, "b": {}}, "links": [["a", "b:eth0"]]})
    with pytest.raises(TopologyError, match="netctl: true"):
        topology({"nodes": {"a": {"containers": {"x": {}}}}})
    with pytest.raises(TopologyError, match="unknown topology keys"):
        topology({"nodes": {"a": {}}, "lnks": []})
    # a failed build leaves nothing behind
    assert not [n for n in os.listdir(runs.NETNS_DIR) if n.startswith(runs.current_tag() + "-a-")]


SERVICE = {
    "nodes": {
        "web": {
            "netctl": True,
            "networks": {"front": {"subnet": "10.89.0.0/24"}},
            "containers": {
                "api": {
                    "network": "front",
                    "publish": ["8080:80"],
                    "command": [PY, "-m", "http.server", "80", "--bind", "0.0.0.0"],
                },
                "worker": {"network": "front"},
            },
        },
        "outside": {},
    },
    "links": [
        {"endpoints": ["outside:eth0", "web:eth0"], "addresses": ["198.18.0.2/24", "198.18.0.1/24"]}
    ],
}


def _wait_http(place: object, url: str) -> tuple[int, str] | None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = traffic.http_get(place, url, timeout=1)  # type: ignore[arg-type]
        if got is not None:
            return got
        time.sleep(0.1)
    return None


def test_node_service_published_port_reached_from_another_namespace(
    topology: type[Topology],
) -> None:
    topo = topology(SERVICE)
    web: Node = topo["web"]
    api_ip = topo.ip("web/api")
    assert api_ip.startswith("10.89.0.")
    # container to container on the network, published port from the outside
    got = _wait_http(topo["web/worker"], f"http://{api_ip}:80/")
    assert got is not None and got[0] == 200
    got = _wait_http(topo["outside"], "http://198.18.0.1:8080/")
    assert got is not None and got[0] == 200
    assert "0.0.0.0:8080->80/tcp" in web.netctl("ps").stdout
    # the node's state is all under its own root, none on the real host
    assert (web.root / "etc/netctl/net.d/front.conflist").exists()
    assert web.root.name.startswith(runs.current_tag() + "-web-")


def test_scapy_send_and_sniff(topology: type[Topology]) -> None:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import ARP, Ether

    topo = topology({"nodes": {"a": {}, "b": {}}, "links": [["a:eth0", "b:eth0"]]})
    topo["b"].run("ip", "addr", "add", "10.7.0.2/24", "dev", "eth0")
    mac_a = topo["a"].link("eth0")["address"]
    with packets.sniffer(topo["b"], "eth0", match=lambda p: ARP in p, incoming_only=True) as s:
        packets.send(
            topo["a"],
            Ether(src=mac_a, dst="ff:ff:ff:ff:ff:ff")
            / ARP(hwsrc=mac_a, psrc="10.7.0.9", pdst="10.7.0.2"),
            iface="eth0",
        )
        got = s.wait(count=1, timeout=3)
    assert got and got[0][ARP].psrc == "10.7.0.9"
    # b answered the crafted request: a sees the reply (bounded sniff)
    reply = packets.sniff(
        topo["a"], "eth0", count=1, timeout=2, match=lambda p: ARP in p and p[ARP].op == 2
    )
    assert reply == [] or reply[0][ARP].psrc == "10.7.0.2"
    # an IP packet through a raw socket
    topo["a"].run("ip", "addr", "add", "10.7.0.1/24", "dev", "eth0")
    with packets.sniffer(topo["b"], "eth0", match=lambda p: ICMP in p and p[ICMP].id == 4242) as s:
        packets.send(topo["a"], IP(src="10.7.0.1", dst="10.7.0.2") / ICMP(id=4242), iface="eth0")
        assert s.wait(count=2, timeout=3)  # the request and b's reply


# one topology for the module, built once (topology_fixture), and module_topology
lab = topology_fixture({"nodes": {"x": {}, "y": {}}, "links": [["x:eth0", "y:eth0"]]})
_seen: dict[str, str] = {}


@pytest.mark.parametrize("turn", [1, 2])
def test_module_scoped_topology_is_built_once(
    lab: Topology, module_topology: type[Topology], turn: int
) -> None:
    _seen.setdefault("lab", lab.ns("x").name)
    assert lab.ns("x").name == _seen["lab"]  # the same namespace in both turns
    shared = module_topology({"nodes": {"m": {}}})
    _seen.setdefault("module", shared.ns("m").name)
    assert shared.ns("m").name == _seen["module"]
    assert lab["x"].link("eth0") is not None


# -- the guarantees, checked from outside: pytest in a subprocess --------------------------


def _pytest(
    directory: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYCNI_TESTING"))}
    base.update(env or {})
    return subprocess.run(
        [PY, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=base,
    )


FAILING = """
from pycni.testing import traffic

SPEC = {"nodes": {"client": {}, "server": {}},
        "links": [{"endpoints": ["client:eth0", "server:eth0"],
                   "addresses": ["10.5.0.1/24", "10.5.0.2/24"]}]}

def test_passes(topology):
    t = topology(SPEC)
    assert traffic.ping(t["client"], "10.5.0.2")

def test_fails(topology):
    t = topology(SPEC)
    t["server"].run("nft", "add table inet f; add chain inet f in { type filter hook input priority 0; policy drop; }")
    assert traffic.ping(t["client"], "10.5.0.2", timeout=0.5), "server unreachable"
"""


def test_failure_report_shows_the_topology_and_keeps_pcaps(tmp_path: Path) -> None:
    from scapy.all import rdpcap
    from scapy.layers.inet import ICMP

    (tmp_path / "test_user.py").write_text(FAILING)
    base = tmp_path / "base"
    proc = _pytest(tmp_path, "test_user.py", f"--basetemp={base}")
    out = proc.stdout
    assert proc.returncode == 1 and "1 failed, 1 passed" in out, out + proc.stderr
    section = out[out.index("pycni network") :]
    assert "== client  (netns pkt" in section and "== server  (netns pkt" in section
    assert "10.5.0.1/24" in section and "<-> server:eth0" in section
    pcaps = [
        Path(line.split()[-1]) for line in section.splitlines() if line.strip().startswith("pcap")
    ]
    assert {p.name for p in pcaps} >= {"client-eth0.pcap", "server-eth0.pcap"}
    icmp = [
        p for p in rdpcap(str(next(p for p in pcaps if p.name == "server-eth0.pcap"))) if ICMP in p
    ]
    assert icmp and icmp[0]["IP"].dst == "10.5.0.2"
    # the passing test's captures are deleted; nothing of either run is left
    assert not list((base / "test_passes0").rglob("*.pcap"))
    assert not [n for n in os.listdir(runs.NETNS_DIR) if n.startswith("pkt") and not runs.alive(n)]

    # without captures the picture is there, the pcap lines are not
    proc = _pytest(tmp_path, "test_user.py", "--pycni-capture=off", f"--basetemp={base}-off")
    section = proc.stdout[proc.stdout.index("pycni network") :]
    assert "<-> server:eth0" in section and "pcap  " not in section, section
    assert not list(Path(f"{base}-off").rglob("*.pcap"))


HOLDER = """
import os, sys, time
from pathlib import Path
from pycni.testing import runs

def test_hold(node, netns, topology):
    topo = topology({"nodes": {"a": {}, "b": {}}, "links": [["a:eth0", "b:eth0"]]})
    node.netctl("network", "create", "n1", "--subnet", "10.66.0.0/24")
    node.netctl("run", "-d", "--name", "c1", "--network", "n1", "--", sys.executable, "-c", "import time; time.sleep(600)")
    server = netns.popen(sys.executable, "-c", "import time; time.sleep(600)")
    info = {"tag": runs.current_tag(), "netns": [netns.name, node.ns.name, topo.ns("a").name, topo.ns("b").name],
            "root": str(node.root), "server": server.pid}
    Path(os.environ["HOLD_FILE"]).write_text(__import__("json").dumps(info))
    time.sleep(600)
"""


def _start_holder(directory: Path, name: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    directory.mkdir()
    (directory / "test_hold.py").write_text(HOLDER)
    hold = directory / "hold.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["HOLD_FILE"] = str(hold)
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-s",
            "test_hold.py",
            f"--basetemp={directory / 'base'}",
        ],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not hold.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert hold.exists(), (
        f"{name} never got ready: {proc.communicate(timeout=30)[0] if proc.poll() is not None else ''}"
    )
    return proc, json.loads(hold.read_text())


def _processes_with_tag(tag: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if f"{runs.ENV}={tag}".encode() in env.split(b"\0"):
                out.append(int(entry))
    return out


def _mounts_under(root: str) -> list[str]:
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if root in line.split()[4]
    ]


def test_sigkill_leftovers_are_reaped_by_the_next_run_and_live_runs_untouched(
    tmp_path: Path,
) -> None:
    killed, dead = _start_holder(tmp_path / "killed", "the run to kill")
    live, alive_info = _start_holder(tmp_path / "live", "the live run")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        names = set(os.listdir(runs.NETNS_DIR))
        assert set(dead["netns"]) <= names, "SIGKILL left nothing to reap (the test proves nothing)"  # type: ignore[arg-type]
        assert _processes_with_tag(str(dead["tag"])), "no process of the killed run survived it"
        assert _mounts_under(str(dead["root"])), "the killed node's netns mounts are gone already"
        assert not runs.alive(str(dead["tag"])) and runs.alive(str(alive_info["tag"]))

        # the next run (any run that uses a fixture) reaps
        (tmp_path / "next").mkdir()
        (tmp_path / "next" / "test_next.py").write_text("def test_next(netns):\n    pass\n")
        proc = _pytest(
            tmp_path / "next", "test_next.py", f"--basetemp={tmp_path / 'next' / 'base'}"
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "pycni.testing: reaped what dead runs left: 4 namespaces" in proc.stdout, proc.stdout

        names = set(os.listdir(runs.NETNS_DIR))
        assert not set(dead["netns"]) & names  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while _processes_with_tag(str(dead["tag"])) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_with_tag(str(dead["tag"]))
        assert not _mounts_under(str(dead["root"]))
        # the live run keeps everything
        assert set(alive_info["netns"]) <= names  # type: ignore[arg-type]
        assert live.poll() is None
        os.kill(int(alive_info["server"]), 0)  # type: ignore[call-overload]
        assert _mounts_under(str(alive_info["root"]))
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        runs.reap_dead_runs()  # the live run is dead now: leave nothing behind
    assert not set(alive_info["netns"]) & set(os.listdir(runs.NETNS_DIR))  # type: ignore[arg-type]


PARALLEL = """
import pytest
from pycni.testing import runs, traffic

SPEC = {"nodes": {"a": {}, "b": {}},
        "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.1.0.1/24", "10.1.0.2/24"]}]}

@pytest.mark.parametrize("i", range(6))
def test_same_names_and_subnets(topology, i):
    t = topology(SPEC)
    with traffic.echo_server(t["b"], "10.1.0.2", 9000):
        assert traffic.echo_reply(t["a"], "10.1.0.2", 9000, str(i)) == f"{i} 10.1.0.1"
    print("TAG", runs.current_tag(), t.ns("a").name)
"""


def test_xdist_workers_never_collide(tmp_path: Path) -> None:
    (tmp_path / "test_par.py").write_text(PARALLEL)
    proc = _pytest(
        tmp_path, "test_par.py", "-n", "2", "-rA", "-s", f"--basetemp={tmp_path / 'base'}"
    )
    assert proc.returncode == 0 and "6 passed" in proc.stdout, proc.stdout + proc.stderr


UNPRIVILEGED = """
import os
from pycni.testing import packets, traffic

def test_rootless(topology, netns):
    assert os.geteuid() != 0
    t = topology({"nodes": {"a": {}, "b": {}},
                  "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.2.0.1/24", "10.2.0.2/24"]}]})
    assert traffic.ping(t["a"], "10.2.0.2")
    with traffic.echo_server(t["b"], "10.2.0.2", 80):
        assert traffic.echo(t["a"], "10.2.0.2", 80, "low port as root of the userns") == "low port as root of the userns"
    t["b"].run("nft", "add table inet t; add chain inet t in { type filter hook input priority 0; policy drop; }")
    assert not traffic.ping(t["a"], "10.2.0.2", timeout=0.3)
    assert netns.run("ip", "-br", "link").stdout.startswith("lo")


def test_node_says_it_needs_root(node):
    pass
"""


NOBODY = (
    shutil.which("setpriv") or "setpriv",
    "--reuid",
    "nobody",
    "--regid",
    "nogroup",
    "--clear-groups",
)


def _exec_in_userns_as_nobody(executable: str) -> bool:
    proc = subprocess.run(
        [*NOBODY, "unshare", "-rn", executable, "-c", "pass"],
        capture_output=True,
    )
    return proc.returncode == 0


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pycni-kit-nobody-"))
    os.chmod(directory, 0o755)
    shutil.chown(directory, "nobody", "nogroup")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _pytest_as_nobody(
    directory: Path, test_file: str, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(directory), "PATH": path or os.environ.get("PATH", "/usr/bin:/bin")}
    python = PY
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not _exec_in_userns_as_nobody(PY) and system.exists():
        # This machine's interpreter lives under /root, which a user namespace of nobody
        # cannot traverse: run the same packages with Debian's interpreter of the same
        # version, as a user's own venv would.
        python = str(system)
        site = next(Path(sys.prefix).glob("lib/python*/site-packages"))
        env["PYTHONPATH"] = f"{REPO}:{site}"
    argv = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", test_file]
    return subprocess.run(
        [*NOBODY, *argv, f"--basetemp={directory / 'base'}"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def repo_readable() -> Iterator[None]:
    """A checkout made in `mktemp -d` is 0700: `nobody` could not import the package
    from it. Open its top directory to others for this test only, then restore it."""
    mode = REPO.stat().st_mode & 0o7777
    if mode & 0o005 != 0o005:
        os.chmod(REPO, mode | 0o055)
    try:
        yield
    finally:
        os.chmod(REPO, mode)


@pytest.mark.usefixtures("repo_readable")
def test_fixtures_work_unprivileged_as_a_plain_user(nobody_dir: Path) -> None:
    """The kit's own CI runs as root; the rootless path runs here as `nobody`: with
    unprivileged user namespaces it must pass, without them skip naming the reason."""
    (nobody_dir / "test_rootless.py").write_text(UNPRIVILEGED)
    shutil.chown(nobody_dir / "test_rootless.py", "nobody", "nogroup")
    userns = subprocess.run([*NOBODY, "unshare", "-rn", "true"], capture_output=True)
    proc = _pytest_as_nobody(nobody_dir, "test_rootless.py")
    if userns.returncode == 0:
        assert proc.returncode == 0 and "1 passed, 1 skipped" in proc.stdout, (
            proc.stdout + proc.stderr
        )
        assert "a node runs netctl, which needs real root" in proc.stdout
    else:  # a kernel without unprivileged user namespaces: a clear skip, not an error
        assert "2 skipped" in proc.stdout and "user namespaces" in proc.stdout, proc.stdout

    # where the tools are missing, the skip says which (a PATH without util-linux here)
    proc = _pytest_as_nobody(nobody_dir, "test_rootless.py", path=str(nobody_dir))
    assert "2 skipped" in proc.stdout, proc.stdout + proc.stderr
    assert "unshare is not installed" in proc.stdout, proc.stdout


LEAKY = """
import subprocess
from pycni.testing import runs

def test_leaks_a_namespace():
    subprocess.run(["ip", "netns", "add", runs.current_tag() + "-leak-1"], check=True)
"""


def test_host_check_fails_a_module_that_leaks_a_namespace(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    (tmp_path / "pytest.ini").write_text("[pytest]\npycni_host_check = true\n")
    proc = _pytest(tmp_path, "test_leaky.py", f"--basetemp={tmp_path / 'base'}")
    assert proc.returncode == 1 and "namespaces leaked by this module" in proc.stdout, proc.stdout
    assert "1 passed, 1 error" in proc.stdout
    assert not [n for n in os.listdir(runs.NETNS_DIR) if n.endswith("-leak-1")]


CHANGES_ITS_HOST = """
import subprocess

def test_adds_a_link_to_its_host():
    subprocess.run(["ip", "link", "add", "hostleak0", "type", "veth", "peer", "name", "hostleak1"], check=True)
"""


def test_host_check_fails_a_session_that_changed_its_host(netns: Netns, tmp_path: Path) -> None:
    """The session check, seen failing: the sub-pytest runs inside `netns`, which is
    then its "real host", so the change it makes stays in a namespace of ours."""
    (tmp_path / "test_host.py").write_text(CHANGES_ITS_HOST)
    (tmp_path / "pytest.ini").write_text("[pytest]\npycni_host_check = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        netns.argv(
            PY,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "test_host.py",
            f"--basetemp={tmp_path / 'base'}",
        ),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "changed the real host's network state: ['links'" in proc.stdout, proc.stdout
    assert netns.link("hostleak0") is not None  # it really happened, in our namespace


EMPTY = """
import sys

def test_empty():
    loaded = {m for m in sys.modules if m.startswith(("pycni", "scapy", "pyroute2", "yaml"))}
    assert loaded == {"pycni", "pycni.testing", "pycni.testing.plugin"}, loaded
"""


def test_plugin_costs_nothing_to_runs_that_do_not_use_it(tmp_path: Path) -> None:
    (tmp_path / "test_empty.py").write_text(EMPTY)
    proc = _pytest(tmp_path, "test_empty.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # CPU time (user + sys) of the pytest process, not wall time: other work on a shared
    # machine stretches wall time far more than it changes what the process itself does
    cpu: dict[str, list[float]] = {"with": [], "without": []}
    wall: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(7):  # interleaved, so a busy machine weighs on both alike
        for which, extra in (("with", ()), ("without", ("-p", "no:pycni"))):
            before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            done = _pytest(tmp_path, "--collect-only", "test_empty.py", *extra)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall[which].append(time.perf_counter() - start)
            cpu[which].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            assert done.returncode == 0
    best = {k: min(v) for k, v in cpu.items()}
    print(
        "pytest --collect-only of an empty test, best of 7: "
        f"CPU {best['with'] * 1000:.0f} ms with the plugin, {best['without'] * 1000:.0f} ms "
        f"without; wall {min(wall['with']) * 1000:.0f} / {min(wall['without']) * 1000:.0f} ms"
    )
    # a guard against gross regressions only: on a shared machine even CPU time moves by
    # tens of ms; the exact checks are the loaded modules above and the import below
    assert best["with"] - best["without"] < 0.15
    # what registering the plugin costs, measured in-process: importing it (pytest loaded)
    out = subprocess.run(
        [PY, "-X", "importtime", "-c", "import pytest; import pycni.testing.plugin"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    line = next(x for x in out.splitlines() if x.rstrip().endswith("| pycni.testing.plugin"))
    cumulative_us = int(line.split("|")[1])
    print(f"import pycni.testing.plugin (pytest already loaded): {cumulative_us / 1000:.1f} ms")
    assert cumulative_us < 30_000


# -- netctl graph -------------------------------------------------------------------------


def _png_ink(path: Path) -> tuple[int, int, int]:
    """(width, height, pixels that are not background) of an 8-bit RGBA/RGB PNG."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = depth = color = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 4 if color == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    prev, ink = bytearray(stride), 0
    for y in range(height):
        ftype, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        ink += sum(
            1
            for x in range(0, stride, bpp)
            if (bpp == 4 and line[x + 3] > 0 and line[x : x + 3] != b"\xff\xff\xff")
            or (bpp == 3 and line[x : x + 3] != b"\xff\xff\xff")
        )
        prev = line
    return width, height, ink


def test_netctl_graph_draws_networks_containers_and_ports(node: Node, tmp_path: Path) -> None:
    node.netctl("network", "create", "front", "--subnet", "10.90.0.0/24")
    node.netctl("network", "create", "back", "--subnet", "10.91.0.0/24", "--internal")
    sleeper = [PY, "-c", "import time; time.sleep(600)"]
    node.netctl("run", "-d", "--name", "web", "--network", "front", "-p", "8080:80", "--", *sleeper)
    node.netctl("run", "-d", "--name", "db", "--network", "back", "--", *sleeper)
    node.netctl("run", "-d", "--name", "side", "--network", "container:web", "--", *sleeper)
    web_ip = node.ip("web")

    dot = node.netctl("graph").stdout
    assert dot.startswith("graph netctl {") and dot.rstrip().endswith("}")
    for text in (
        "network front",
        "10.90.0.0/24",
        "network back",
        "internal",
        "web",
        "db",
        "0.0.0.0:8080/tcp",
        "-> 80/tcp",
        web_ip,
        "shares netns",
    ):
        assert text in dot, text
    mermaid = node.netctl("graph", "--format", "mermaid").stdout
    assert (
        mermaid.startswith("flowchart LR\n") and "network front" in mermaid and " ---|" in mermaid
    )
    text = node.netctl("graph", "--format", "text").stdout
    assert "[container] web" in text and "-- network front" in text
    only = node.netctl("graph", "back").stdout
    assert "network back" in only and "network front" not in only and "web" not in only

    svg = tmp_path / "net.svg"
    node.netctl("graph", "--format", "svg", "-o", str(svg))
    assert (
        svg.read_text().lstrip().startswith(("<?xml", "<svg"))
        and "network front" in svg.read_text()
    )
    png = tmp_path / "net.png"
    subprocess.run(["rsvg-convert", "-o", str(png), str(svg)], check=True, timeout=60)
    width, height, ink = _png_ink(png)
    assert width > 200 and height > 100 and ink > 0.02 * width * height, (width, height, ink)


def test_netctl_graph_without_graphviz_says_what_to_install(node: Node, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with nsenter but no Graphviz
    bin_dir.mkdir()
    (bin_dir / "nsenter").symlink_to(shutil.which("nsenter") or "/usr/bin/nsenter")
    saved = node.env["PATH"]
    node.env["PATH"] = str(bin_dir)
    try:
        proc = node.netctl("graph", "--format", "svg", check=False)
    finally:
        node.env["PATH"] = saved
    assert proc.returncode == 125 and "graphviz" in proc.stderr and "Traceback" not in proc.stderr
    assert node.netctl("graph", "--format", "mermaid").returncode == 0


# -- the tutorial's example (docs/testing.md), as a user runs it ----------------------------


def test_the_tutorial_example_passes_and_its_failure_report_shows_the_network(
    tmp_path: Path,
) -> None:
    for name in ("service.yaml", "test_service.py"):
        shutil.copy(REPO / "docs/examples" / name, tmp_path / name)
    proc = _pytest(tmp_path, "test_service.py", f"--basetemp={tmp_path / 'ok'}")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr

    # the rule that also blocks the office: the test fails and says what the network was
    proc = _pytest(
        tmp_path,
        "test_service.py",
        f"--basetemp={tmp_path / 'broken'}",
        env={"FIREWALL_SOURCE": "198.18.0.0/16"},
    )
    out = proc.stdout
    assert proc.returncode == 1 and "1 failed" in out, out + proc.stderr
    section = out[out.index("pycni network") :]
    for text in (
        "== web  (node pkt",
        "198.18.1.1/24",
        "<-> office:eth0",
        "container    api",
        "0.0.0.0:8080->80/tcp",
        "== internet  (netns pkt",
        "web-eth1.pcap",
    ):
        assert text in section, text
    (tmp_path / "report.txt").write_text(out)
    print(out)
