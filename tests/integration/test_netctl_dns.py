"""The embedded resolver (issue 16): containers find each other by name on user-defined
networks, through 127.0.0.11 inside their own namespace; forwarding to a real dnsmasq
in a throwaway "outside" namespace; the internal-only flip; the resolver's lifecycle;
a hostile-query corpus. Every query is sent from inside a container netctl ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import _delete_netns, _make_netns
from tests.integration.test_netctl_multinet import addr_of, idle, serve, tcp_from
from tests.integration.test_netctl_run import PY, Netctl, netctl  # noqa: F401 (fixture)
from tests.traffic import wire_outside

pytestmark = pytest.mark.root

DIG = r"""
import sys, dns.message, dns.query, dns.rcode, dns.rdatatype
name, rtype = sys.argv[1], sys.argv[2]
q = dns.message.make_query(name, rtype)
ask = dns.query.tcp if "tcp" in sys.argv[3:] else dns.query.udp
r = ask(q, "127.0.0.11", timeout=8)
print(dns.rcode.to_text(r.rcode()), *[rd.to_text() for rrs in r.answer for rd in rrs])
"""


def dig(nc: Netctl, client: str, name: str, rtype: str = "A", tcp: bool = False) -> list[str]:
    """[rcode, answer...] of a query from inside `client` to its 127.0.0.11."""
    args = ["tcp"] if tcp else []
    proc = nc("exec", client, PY, "-c", DIG, name, rtype, *args, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def resolver_pid(nc: Netctl) -> int | None:
    try:
        return int((nc.root / "run/netctl/dns/pid").read_text())
    except (OSError, ValueError):
        return None


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if st == "Z":
            return True
        time.sleep(0.05)
    return False


def test_names_aliases_short_id_hostname_and_traffic(netctl: Netctl) -> None:  # noqa: F811
    nc = netctl
    nc("network", "create", "mybr0", "--subnet", "172.30.0.0/16")
    cid = serve(nc, "web", "--network", "mybr0", "--network-alias", "www", "-h", "webhost")
    idle(nc, "client", "--network", "mybr0")
    ip = addr_of(nc, "web", "mybr0")
    for name in ("web", "www", cid[:12], "webhost", "web.mybr0", "WEB"):
        assert dig(nc, "client", name) == ["NOERROR", ip], name
    assert dig(nc, "client", "web", tcp=True) == ["NOERROR", ip]
    # the name exists, no IPv6 address: an empty NOERROR, not NXDOMAIN
    assert dig(nc, "client", "web", "AAAA") == ["NOERROR"]
    # PTR for a container address
    rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    assert dig(nc, "client", rev, "PTR") == ["NOERROR", "web.mybr0."]
    # real traffic by name: TCP through glibc's resolver (getaddrinfo) to the resolver
    assert tcp_from(nc, "client", "web") == "web"
    assert tcp_from(nc, "client", "www") == "web"
    conf = nc("exec", "client", "cat", "/etc/resolv.conf").stdout
    assert conf.startswith("nameserver 127.0.0.11\n") and "options ndots:0" in conf
    # the host's port 53 is free: nothing of ours listens in the node's namespace
    listening = nc.node.run("ss", "-lntuH")
    assert ":53 " not in listening
    # --dns-search and --dns-option say what they say, ndots:0 unless given
    out = nc(
        "run", "--rm", "--network", "mybr0", "--dns-search", "corp.example", "--dns-option",
        "ndots:3", "--dns-option", "edns0", "--", "cat", "/etc/resolv.conf",
    ).stdout  # fmt: skip
    assert out.splitlines()[:3] == [
        "nameserver 127.0.0.11",
        "search corp.example",
        "options ndots:3 edns0",
    ]
    # the default bridge keeps Docker's behaviour: no names, no embedded resolver
    out = nc("run", "--rm", "--", "cat", "/etc/resolv.conf").stdout
    assert "127.0.0.11" not in out
    # a default-bridge container connected to mybr0 switches to the resolver, as Docker's
    idle(nc, "late")
    assert "127.0.0.11" not in nc("exec", "late", "cat", "/etc/resolv.conf").stdout
    nc("network", "connect", "mybr0", "late")
    assert nc("exec", "late", "cat", "/etc/resolv.conf").stdout.startswith("nameserver 127.0.0.11")
    assert dig(nc, "late", "web") == ["NOERROR", ip]
    assert dig(nc, "client", "late")[:1] == ["NOERROR"]


def test_round_robin_and_two_networks_one_nameserver(netctl: Netctl) -> None:  # noqa: F811
    nc = netctl
    nc("network", "create", "front", "--subnet", "10.93.0.0/24")
    nc("network", "create", "back", "--subnet", "10.94.0.0/24")
    for n in ("r1", "r2", "r3"):
        idle(nc, n, "--network", "front", "--network-alias", "pool")
    idle(nc, "db", "--network", "back")
    idle(nc, "app", "--network", "front", "--network", "back")
    ips = sorted(addr_of(nc, n, "front") for n in ("r1", "r2", "r3"))
    orders = set()
    for _ in range(12):
        answer = dig(nc, "app", "pool")
        assert answer[0] == "NOERROR" and sorted(answer[1:]) == ips
        orders.add(tuple(answer[1:]))
    assert len(orders) > 1, "the order is shuffled per answer"
    # one nameserver answers the names of both networks
    assert dig(nc, "app", "db") == ["NOERROR", addr_of(nc, "db", "back")]
    assert dig(nc, "app", "r1") == ["NOERROR", addr_of(nc, "r1", "front")]
    # a container on front only does not see back's names
    assert dig(nc, "r1", "db")[0] in ("SERVFAIL", "NXDOMAIN")
    # connect: the names follow at once; disconnect: they are gone at once
    nc("network", "connect", "--alias", "cache", "back", "r1")
    assert dig(nc, "db", "cache") == ["NOERROR", addr_of(nc, "r1", "back")]
    assert dig(nc, "r1", "db") == ["NOERROR", addr_of(nc, "db", "back")]
    nc("network", "disconnect", "back", "r1")
    assert dig(nc, "db", "cache")[0] != "NOERROR"
    nc("rm", "-f", "r2")
    assert len(dig(nc, "app", "pool")) == 3  # NOERROR and the two left


@pytest.fixture
def outside(netctl: Netctl):  # noqa: F811
    """A dnsmasq at 198.18.0.2 in an "outside" namespace the node routes to."""
    ns = _make_netns("o")
    wire_outside(netctl.node, ns)
    conf = netctl.root / "dnsmasq.conf"
    conf.write_text(
        "no-resolv\nno-hosts\nbind-interfaces\nlisten-address=198.18.0.2\n"
        "address=/ext.example.test/198.51.100.7\naddress=/nothing.example.test/\n"
        f"pid-file={netctl.root / 'dnsmasq.pid'}\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.3)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    yield ns
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    _delete_netns(ns)


def test_forwarding_and_the_internal_flip(netctl: Netctl, outside) -> None:  # noqa: F811
    nc = netctl
    nc("network", "create", "pub", "--subnet", "10.95.0.0/24")
    nc("network", "create", "sealed", "--internal", "--subnet", "10.96.0.0/24")
    idle(nc, "open", "--network", "pub", "--dns", "198.18.0.2")
    idle(nc, "iso", "--network", "sealed", "--dns", "198.18.0.2")
    assert dig(nc, "open", "ext.example.test") == ["NOERROR", "198.51.100.7"]
    assert dig(nc, "open", "ext.example.test", tcp=True) == ["NOERROR", "198.51.100.7"]
    assert dig(nc, "open", "nothing.example.test")[0] == "NXDOMAIN"  # dnsmasq's own answer
    conf = nc("exec", "open", "cat", "/etc/resolv.conf").stdout
    assert "# ExtServers: [198.18.0.2]" in conf
    # only internal networks: local names, no forwarding
    assert dig(nc, "iso", "ext.example.test") == ["SERVFAIL"]
    assert dig(nc, "iso", "iso") == ["NOERROR", addr_of(nc, "iso", "sealed")]
    nc("network", "connect", "pub", "iso")
    assert dig(nc, "iso", "ext.example.test") == ["NOERROR", "198.51.100.7"]
    nc("network", "disconnect", "pub", "iso")
    assert dig(nc, "iso", "ext.example.test") == ["SERVFAIL"]
    # an upstream that does not answer: SERVFAIL within the bounded time
    idle(nc, "lost", "--network", "pub", "--dns", "198.18.0.99")
    start = time.time()
    assert dig(nc, "lost", "ext.example.test") == ["SERVFAIL"]
    assert time.time() - start < 7


def test_lifecycle_on_demand_restart_and_reload(netctl: Netctl) -> None:  # noqa: F811
    nc = netctl
    nc("network", "create", "life", "--subnet", "10.97.0.0/24")
    assert resolver_pid(nc) is None
    idle(nc, "a", "--network", "life")
    idle(nc, "b", "--network", "life")
    pid = resolver_pid(nc)
    assert pid is not None and os.path.exists(f"/proc/{pid}")
    # killed: names come back with `netctl system reload`, from the records
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    nc("system", "reload")
    new = resolver_pid(nc)
    assert new is not None and new != pid
    assert dig(nc, "a", "b") == ["NOERROR", addr_of(nc, "b", "life")]
    # gone when no container needs it
    nc("rm", "-f", "a", "b")
    assert wait_gone(new)
    assert resolver_pid(nc) is None


def _corpus() -> list[tuple[str, bytes]]:
    import struct

    hdr = lambda qid, flags, qd=1, an=0, ns=0, ar=0: struct.pack(  # noqa: E731
        "!HHHHHH", qid, flags, qd, an, ns, ar
    )
    q = b"\x03web\x00\x00\x01\x00\x01"
    return [
        ("empty", b""),
        ("one byte", b"\x01"),
        ("short header", b"\x12\x34\x01\x00\x00\x01"),
        ("header, no question", hdr(1, 0x0100)),
        ("compression loop", hdr(2, 0x0100) + b"\xc0\x0c\x00\x01\x00\x01"),
        ("forward pointer", hdr(3, 0x0100) + b"\xc0\x20\x00\x01\x00\x01" + b"\x00" * 30),
        ("label past the end", hdr(4, 0x0100) + b"\x3fabc"),
        ("name too long", hdr(5, 0x0100) + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01"),
        ("bad label type", hdr(6, 0x0100) + b"\x80abc\x00\x00\x01\x00\x01"),
        ("two questions", hdr(7, 0x0100, qd=2) + q + q),
        ("a response", hdr(8, 0x8100) + q),
        ("update opcode", hdr(9, 0x2800) + q),
        ("unknown type", hdr(10, 0x0100) + b"\x08attacker\x00\xff\x00\x00\x01"),
        ("unknown class", hdr(11, 0x0100) + b"\x03web\x00\x00\x01\x00\x99"),
        ("claims 65535 records", hdr(12, 0x0100, 1, 65535, 65535, 65535) + q),
        ("oversized", hdr(13, 0x0100) + q + os.urandom(9000)),
        ("random", os.urandom(300)),
    ]


HOSTILE = r"""
import socket, struct, sys, time, json, base64
corpus = [(n, base64.b64decode(b)) for n, b in json.loads(sys.stdin.read())]
out = {}
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(0.5)
for name, data in corpus:
    u.sendto(data, ("127.0.0.11", 53))
    try:
        r = u.recv(65535)
        out[name] = (r[3] & 0x0f) if len(r) >= 4 else -1
    except socket.timeout:
        out[name] = None
# TCP: zero length, a truncated message then close, a slowloris, many idle connections
t = socket.create_connection(("127.0.0.11", 53)); t.sendall(b"\x00\x00"); t.settimeout(2)
try: out["tcp zero length"] = t.recv(10).hex()
except OSError as e: out["tcp zero length"] = str(e)
t = socket.create_connection(("127.0.0.11", 53)); t.sendall(b"\x00\x64abcdefgh"); t.close()
slow = socket.create_connection(("127.0.0.11", 53)); slow.settimeout(15)
start = time.time(); closed = None
for i in range(30):
    try:
        slow.sendall(b"\x00" if i == 0 else b"a")
        time.sleep(0.5)
    except OSError:
        closed = time.time() - start; break
    try:
        slow.setblocking(False)
        if slow.recv(10) == b"":
            closed = time.time() - start; break
    except BlockingIOError:
        pass
    finally:
        slow.setblocking(True)
out["slowloris closed after"] = closed
idle = [socket.create_connection(("127.0.0.11", 53)) for _ in range(100)]
print(json.dumps(out))
"""


def _two_containers(nc: Netctl, network: str, subnet: str, *names: str) -> int:
    """A network, containers idling on it, and the pid of the resolver they use."""
    nc("network", "create", network, "--subnet", subnet)
    for name in names:
        idle(nc, name, "--network", network)
    pid = resolver_pid(nc)
    assert pid is not None
    return pid


def test_hostile_queries_never_kill_the_resolver(netctl: Netctl) -> None:  # noqa: F811
    import base64

    nc = netctl
    pid = _two_containers(nc, "rough", "10.98.0.0/24", "victim", "attacker")
    corpus = [(n, base64.b64encode(b).decode()) for n, b in _corpus()]
    cpu_before = _cpu(pid)
    proc = nc("exec", "-i", "attacker", PY, "-c", HOSTILE, input=json.dumps(corpus), timeout=120)
    got = json.loads(proc.stdout)
    FORMERR, NOTIMP = 1, 4
    for name in ("empty", "one byte", "short header", "a response"):
        assert got[name] is None, name  # dropped
    for name in (
        "header, no question",
        "compression loop",
        "forward pointer",
        "label past the end",
    ):
        assert got[name] == FORMERR, (name, got[name])
    for name in ("name too long", "bad label type", "two questions", "claims 65535 records"):
        assert got[name] == FORMERR, (name, got[name])
    assert got["update opcode"] == NOTIMP
    assert got["unknown type"] == 0  # a local name: NOERROR, no data
    assert got["oversized"] in (FORMERR, None)
    assert got["slowloris closed after"] is not None and got["slowloris closed after"] < 9
    # still alive, still the same process, still answering, and it burnt little CPU
    assert resolver_pid(nc) == pid and os.path.exists(f"/proc/{pid}")
    assert dig(nc, "victim", "attacker") == ["NOERROR", addr_of(nc, "attacker", "rough")]
    assert dig(nc, "victim", "attacker", tcp=True)[0] == "NOERROR"
    assert _cpu(pid) - cpu_before < 5.0


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_names_resolve_under_a_root_deeper_than_a_unix_socket_path(tmp_path: Path) -> None:
    """A NETCTL_ROOT (a pytest tmp_path, the testing kit's) whose resolver control
    socket path is longer than sun_path's 107 bytes: the resolver still starts, netctl
    still talks to it, and names resolve."""
    node = _make_netns("n")
    root = tmp_path / ("r" * 60) / ("o" * 60)
    nc = Netctl(node, root)
    try:
        nc("network", "create", "deep0", "--subnet", "172.31.0.0/24")
        idle(nc, "one", "--network", "deep0")
        idle(nc, "two", "--network", "deep0")
        sock = root / "run/netctl/dns/control.sock"
        assert len(str(sock)) > 107 and sock.is_socket()
        assert dig(nc, "two", "one") == ["NOERROR", addr_of(nc, "one", "deep0")]
        pid = resolver_pid(nc)
        assert pid is not None
        nc("rm", "-f", "one", "two")
        assert wait_gone(pid)  # the last container gone: told over the long path, it left
    finally:
        for rec in nc("ps", "-a", "-q", check=False).stdout.split():
            nc("rm", "-f", rec, check=False)
        _delete_netns(node)


BIG_QUERIES = r"""
import socket, struct, sys
name = sys.argv[1].encode()
question = bytes((len(name),)) + name + b"\x00\x00\x01\x00\x01"
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
answered = 0
for n in range(int(sys.argv[2])):
    # a question for a local name, then one additional record of 60000 bytes (type 65280,
    # private use): a valid message, each one different
    extra = b"\x00" + struct.pack("!HHIH", 65280, 1, 0, 60000) + n.to_bytes(4, "big") * 15000
    u.sendto(struct.pack("!HHHHHH", n & 0xFFFF, 0x0100, 1, 0, 0, 1) + question + extra,
             ("127.0.0.11", 53))
    try:
        answered += len(u.recv(65535)) > 12
    except OSError:
        pass
print(answered)
"""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_big_distinct_queries_do_not_grow_the_resolver(netctl: Netctl) -> None:  # noqa: F811
    """Queries padded to 60 KB, each different: the resolver's caches of answers and of
    forwarded questions were keyed by the whole query, so 8192 of them (each cache's
    size) held half a gigabyte apiece in a process every container on the node relies on."""
    nc = netctl
    pid = _two_containers(nc, "padded", "10.100.0.0/24", "target", "sender")
    before = _rss_kib(pid)
    out = nc("exec", "sender", PY, "-c", BIG_QUERIES, "target", "2000", timeout=300).stdout
    assert int(out) == 2000  # every one answered (locally)
    grown = _rss_kib(pid) - before
    assert grown < 40 * 1024, f"the resolver grew by {grown // 1024} MiB"
    assert dig(nc, "sender", "target") == ["NOERROR", addr_of(nc, "target", "padded")]
