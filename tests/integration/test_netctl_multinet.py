"""Several networks per container (issue 16): `run --network a --network b`, Docker's
advanced `--network name=...` form and refusals, `network connect/disconnect` on a
running container, the default-route election, inspect, and published ports; all
with real traffic between containers netctl ran."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.test_netctl_run import PY, Netctl, netctl  # noqa: F401 (fixture)
from tests.traffic import _TCP_SERVER

pytestmark = pytest.mark.root


def serve(nc: Netctl, name: str, *run_args: str, port: int = 8080) -> str:
    """A detached container answering TCP on every address with its name."""
    cid = nc(
        "run", "-d", "--name", name, *run_args, "--", PY, "-c", _TCP_SERVER, "::", str(port), name
    ).stdout.strip()
    return cid


def tcp_from(nc: Netctl, client: str, ip: str, port: int = 8080) -> str:
    """What a TCP connection from container `client` to ip:port reads ("" on failure)."""
    code = (
        "import socket,sys\n"
        "for _ in range(40):\n"
        "    try:\n"
        f"        s=socket.create_connection(({ip!r},{port}),timeout=1); print(s.recv(100).decode().split()[0]); break\n"
        "    except OSError:\n"
        "        import time; time.sleep(0.1)\n"
    )
    return nc("exec", client, PY, "-c", code, check=False).stdout.strip()


def addr_of(nc: Netctl, ref: str, network: str) -> str:
    doc = json.loads(nc("inspect", ref).stdout)[0]
    return str(doc["NetworkSettings"]["Networks"][network]["IPAddress"])


def links(nc: Netctl, ref: str) -> dict[str, str]:
    out = nc("exec", ref, "ip", "-4", "-o", "addr", "show").stdout
    return {line.split()[1]: line.split()[3] for line in out.splitlines() if "eth" in line}


def default_via(nc: Netctl, ref: str) -> list[str]:
    out = nc("exec", ref, "ip", "-4", "route", "show", "default").stdout
    return [" ".join(line.split()[2:5]) for line in out.splitlines()]


def idle(nc: Netctl, name: str, *args: str) -> None:
    nc("run", "-d", "--name", name, *args, "--", "sleep", "300")


def test_two_networks_eth0_eth1_traffic_and_inspect(netctl: Netctl) -> None:  # noqa: F811
    nc = netctl
    nc("network", "create", "na", "--subnet", "10.81.0.0/24")
    nc("network", "create", "nb", "--subnet", "10.82.0.0/24")
    serve(nc, "web", "--network", "na", "--network", "name=nb,alias=www,ip=10.82.0.50")
    idle(nc, "ca", "--network", "na")
    idle(nc, "cb", "--network", "nb")
    got = links(nc, "web")
    assert got["eth0"].startswith("10.81.0.") and got["eth1"] == "10.82.0.50/24"
    # equal priorities: the network name decides (na < nb)
    assert default_via(nc, "web") == ["10.81.0.1 dev eth0"]
    assert tcp_from(nc, "ca", addr_of(nc, "web", "na")) == "web"
    assert tcp_from(nc, "cb", "10.82.0.50") == "web"
    # the two networks stay isolated from each other: cb cannot reach web's na address
    assert tcp_from(nc, "cb", addr_of(nc, "web", "na")) == ""
    doc = json.loads(nc("inspect", "web").stdout)[0]
    nets = doc["NetworkSettings"]["Networks"]
    assert list(nets) == ["na", "nb"]
    assert nets["nb"]["Aliases"] == ["www"] and nets["nb"]["InterfaceName"] == "eth1"
    assert nets["nb"]["Gateway"] == "10.82.0.1" and len(nets["nb"]["MacAddress"]) == 17
    assert "www" in nets["nb"]["DNSNames"] and "web" in nets["nb"]["DNSNames"]
    for net in ("na", "nb"):
        members = json.loads(nc("network", "inspect", net).stdout)[0]["Containers"]
        assert "web" in {m["Name"] for m in members.values()}
    hosts = nc("exec", "web", "cat", "/etc/hosts").stdout
    assert "10.82.0.50\t" in hosts and addr_of(nc, "web", "na") + "\t" in hosts
    nc("rm", "-f", "web", "ca", "cb")
    assert nc.veths() == [] and nc.leases() == []


def test_gw_priority_and_internal_networks(netctl: Netctl) -> None:  # noqa: F811
    nc = netctl
    nc("network", "create", "ga", "--subnet", "10.83.0.0/24")
    nc("network", "create", "gb", "--subnet", "10.84.0.0/24")
    nc("network", "create", "gi", "--internal", "--subnet", "10.85.0.0/24")
    idle(nc, "p1", "--network", "ga", "--network", "name=gb,gw-priority=10")
    assert default_via(nc, "p1") == ["10.84.0.1 dev eth1"]
    # an internal network never gives the default route, whatever its priority
    idle(nc, "p2", "--network", "gi", "--network", "name=ga,gw-priority=-5")
    assert default_via(nc, "p2") == ["10.83.0.1 dev eth1"]
    idle(nc, "p3", "--network", "name=gi,gw-priority=100")
    assert default_via(nc, "p3") == []
    # recomputed on connect (a higher priority takes over) and disconnect (back again)
    nc("network", "connect", "--gw-priority", "20", "gb", "p2")
    assert default_via(nc, "p2") == ["10.84.0.1 dev eth2"]
    nc("network", "disconnect", "gb", "p2")
    assert default_via(nc, "p2") == ["10.83.0.1 dev eth1"]
    nc("network", "disconnect", "ga", "p2")
    assert default_via(nc, "p2") == []


REFUSED = [
    (
        ["--network", "na2", "--network", "bridge"],
        "conflicting options: cannot attach both user-defined and non-user-defined network-modes",
    ),
    (
        ["--network", "none", "--network", "na2"],
        "conflicting options: cannot attach both user-defined and non-user-defined network-modes",
    ),
    (
        ["--network", "host", "--network", "none"],
        "container cannot be connected to multiple networks with one of the networks in private (none) mode",
    ),
    (
        ["--network", "host", "--network", "bridge"],
        "container sharing network namespace with another container or host cannot be connected to any other network",
    ),
    (["--network", "na2", "--network", "na2"], 'network "na2" is specified multiple times'),
    (
        ["--network-alias", "x", "--network", "name=na2,alias=y"],
        "conflicting options: cannot specify both --network-alias and per-network alias",
    ),
    (
        ["--ip", "10.86.0.9", "--network", "name=na2,ip=10.86.0.8"],
        "conflicting options: cannot specify both --ip and per-network IPv4 address",
    ),
    (
        ["--network", "bridge", "--network-alias", "x"],
        "network-scoped aliases are only supported for user-defined networks",
    ),
    (["--network", "name=na2,colour=red"], "invalid field key colour"),
    (["--network", "alias=x"], "network name/id is not specified"),
    (["--network", "name=na2,gw-priority=high"], "invalid gw-priority (high)"),
    (
        ["--network", "na2", "--network", "name=nothere"],
        "network nothere not found",
    ),
]


def test_refusals_in_dockers_words_leave_nothing(netctl: Netctl) -> None:  # noqa: F811
    nc = netctl
    nc("network", "create", "na2", "--subnet", "10.86.0.0/24")
    for args, message in REFUSED:
        proc = nc("run", "--rm", *args, "--", "true", check=False)
        assert proc.returncode == 125, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert nc("ps", "-a", "-q").stdout == ""
    assert nc.veths() == [] and nc.leases() == [] and nc.netns_files() == []


def test_connect_disconnect_while_serving(netctl: Netctl) -> None:  # noqa: F811
    nc = netctl
    nc("network", "create", "ca1", "--subnet", "10.87.0.0/24")
    nc("network", "create", "cb1", "--subnet", "10.88.0.0/24")
    serve(nc, "svc", "--network", "ca1")
    idle(nc, "left", "--network", "ca1")
    idle(nc, "right", "--network", "cb1")
    svc_a = addr_of(nc, "svc", "ca1")
    assert tcp_from(nc, "left", svc_a) == "svc"
    nc("network", "connect", "--ip", "10.88.0.77", "--alias", "api", "cb1", "svc")
    assert links(nc, "svc")["eth1"] == "10.88.0.77/24"
    assert tcp_from(nc, "right", "10.88.0.77") == "svc"
    # `system gc` knows eth1 of a running container: its lease and rules stay
    nc("system", "gc")
    assert any(lease.endswith("10.88.0.77") for lease in nc.leases())
    assert tcp_from(nc, "right", "10.88.0.77") == "svc"
    assert tcp_from(nc, "left", svc_a) == "svc"  # the first network kept serving
    assert "10.88.0.77\t" in nc("exec", "svc", "cat", "/etc/hosts").stdout
    doc = json.loads(nc("inspect", "svc").stdout)[0]["NetworkSettings"]["Networks"]
    assert doc["cb1"]["Aliases"] == ["api"] and doc["cb1"]["IPAddress"] == "10.88.0.77"
    assert default_via(nc, "svc") == ["10.87.0.1 dev eth0"]
    svc_id = json.loads(nc("inspect", "svc").stdout)[0]["Id"]

    errors = [
        (("connect", "cb1", "svc"), "endpoint with name svc already exists in network cb1"),
        (("connect", "nonet", "svc"), "network nonet not found"),
        (("connect", "cb1", "ghost"), "No such container: ghost"),
        (
            ("connect", "--ip", "10.99.0.5", "ca1", "right"),
            "Invalid address 10.99.0.5: It does not belong to any of this network's subnets",
        ),
        (("connect", "--ip", svc_a, "ca1", "right"), "Address already in use"),
        (("connect", "--alias", "a", "bridge", "right"), "network-scoped alias is supported"),
        (
            ("disconnect", "ca1", "right"),
            f"container {json.loads(nc('inspect', 'right').stdout)[0]['Id']} is not connected to network ca1",
        ),
    ]
    before_veths, before_leases = nc.veths(), nc.leases()
    before_rules = nc.node.run("nft", "list", "ruleset")
    for args, message in errors:
        proc = nc("network", *args, check=False)
        assert proc.returncode == 125 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    # a failed connect left no interface, no lease, no record
    assert nc.veths() == before_veths and nc.leases() == before_leases
    assert nc.node.run("nft", "list", "ruleset") == before_rules
    assert sorted(links(nc, "right")) == ["eth0"]
    # host and container: modes
    nc("run", "-d", "--name", "hosty", "--network", "host", "--", "sleep", "300")
    nc("run", "-d", "--name", "joined", "--network", "container:svc", "--", "sleep", "300")
    proc = nc("network", "connect", "cb1", "hosty", check=False)
    assert (
        "container cannot be disconnected from host network or connected to host network"
        in proc.stderr
    )
    proc = nc("network", "connect", "cb1", "joined", check=False)
    assert "cannot be connected to any other network" in proc.stderr
    nc("run", "-d", "--name", "closed", "--network", "none", "--", "sleep", "300")
    proc = nc("network", "connect", "cb1", "closed", check=False)
    assert "one of the networks in private (none) mode" in proc.stderr
    proc = nc("network", "disconnect", "host", "hosty", check=False)
    assert "container cannot be disconnected from host network" in proc.stderr

    nc("network", "disconnect", "cb1", "svc")
    assert sorted(links(nc, "svc")) == ["eth0"]
    assert tcp_from(nc, "right", "10.88.0.77") == ""
    assert tcp_from(nc, "left", svc_a) == "svc"
    assert "10.88.0.77" not in nc("exec", "svc", "cat", "/etc/hosts").stdout
    assert not any("10.88.0.77" in lease for lease in nc.leases())
    assert svc_id


def test_connect_a_stopped_container_is_recorded(netctl: Netctl) -> None:  # noqa: F811
    nc = netctl
    nc("network", "create", "sa", "--subnet", "10.89.0.0/24")
    nc("run", "--name", "done", "--network", "sa", "--", "true")
    nc("network", "create", "sb", "--subnet", "10.90.0.0/24")
    nc("network", "connect", "--alias", "later", "sb", "done")
    doc = json.loads(nc("inspect", "done").stdout)[0]["NetworkSettings"]["Networks"]
    assert doc["sb"]["Aliases"] == ["later"] and doc["sb"]["IPAddress"] == ""
    nc("network", "disconnect", "sb", "done")
    assert "sb" not in json.loads(nc("inspect", "done").stdout)[0]["NetworkSettings"]["Networks"]


def test_published_port_through_the_first_of_two_networks(netctl: Netctl) -> None:  # noqa: F811
    nc = netctl
    nc("network", "create", "pa", "--subnet", "10.91.0.0/24")
    nc("network", "create", "pb", "--subnet", "10.92.0.0/24")
    serve(nc, "pub", "-p", "18080:8080", "--network", "pa", "--network", "pb")
    assert nc("port", "pub").stdout.strip() == "8080/tcp -> 0.0.0.0:18080"
    deadline, got = time.time() + 10, ""
    while time.time() < deadline and got != "pub":
        out = nc.node.run(
            PY, "-c",
            "import socket;s=socket.create_connection(('127.0.0.1',18080),timeout=1);print(s.recv(99).decode().split()[0])",
            check=False,
        )  # fmt: skip
        got = out.strip()
        time.sleep(0.1)
    assert got == "pub"
    assert "0.0.0.0:18080->8080/tcp" in nc("ps").stdout
