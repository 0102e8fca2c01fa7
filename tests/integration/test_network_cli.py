"""`netctl network ...` end to end: the real CLI (`python -m pycni.runtime.cli`) inside a
throwaway host namespace, with NETCTL_ROOT (and every state dir) under tmp_path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Netns

pytestmark = pytest.mark.root

HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX12 = re.compile(r"^[0-9a-f]{12}$")


def netctl(
    host: Netns,
    root: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NETCTL_", "CNI_"))}
    full_env.update(
        NETCTL_ROOT=str(root),
        NETCTL_CNI_PATH="/usr/lib/cni",
        PYCNI_STATE_DIR=str(root / "pycni-state"),
    )
    full_env.update(env or {})
    cmd = ["ip", "netns", "exec", host.name, sys.executable, "-m", "pycni.runtime.cli", *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=full_env, timeout=120, input=stdin
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr + proc.stdout)
    return proc


def net_dir(root: Path) -> Path:
    return root / "etc/netctl/net.d"


def conflists(root: Path) -> list[str]:
    d = net_dir(root)
    return sorted(p.name for p in d.iterdir() if p.suffix == ".conflist") if d.exists() else []


def save_container(root: Path, name: str, network: str, ips: list[str]) -> str:
    from pycni.runtime.containers import Attachment, ContainerRecord, ContainerStore
    from pycni.runtime.paths import Paths

    rec = ContainerRecord(
        id=os.urandom(32).hex(),
        name=name,
        command=["sleep", "60"],
        network_mode=network,
        attachments=[Attachment(network=network, ips=ips, mac="02:42:ac:1a:00:02")],
        status="running",
    )
    ContainerStore(Paths({"NETCTL_ROOT": str(root)})).save(rec)
    return rec.id


def drop_containers(root: Path) -> None:
    for p in (root / "run/netctl/containers").glob("*.json"):
        p.unlink()


def test_create_ls_inspect_rm_prune(host_ns, tmp_path) -> None:
    out = netctl(
        host_ns, tmp_path, "network", "create", "mybr0", "--subnet", "172.26.0.0/16",
        "--gateway", "172.26.0.1", "--label", "team=a",
    ).stdout.strip()  # fmt: skip
    assert HEX64.match(out), out
    my_id = out
    # `netctl create` is `netctl network create`
    other_id = netctl(
        host_ns, tmp_path, "create", "other", "--subnet", "172.27.0.0/16", "--ip-range", "172.27.1.0/24",
        "--aux-address", "printer=172.27.1.9", "-o", "com.docker.network.bridge.enable_icc=false",
    ).stdout.strip()  # fmt: skip
    assert conflists(tmp_path) == ["bridge.conflist", "mybr0.conflist", "other.conflist"]

    lines = netctl(host_ns, tmp_path, "network", "ls").stdout.splitlines()
    assert re.match(r"^NETWORK ID\s{3,}NAME\s{3,}DRIVER\s{3,}SCOPE$", lines[0]), lines[0]
    rows = [line.split() for line in lines[1:]]
    assert [r[1:] for r in rows] == [
        ["bridge", "bridge", "local"],
        ["host", "host", "local"],
        ["mybr0", "bridge", "local"],
        ["none", "null", "local"],
        ["other", "bridge", "local"],
    ]
    assert all(HEX12.match(r[0]) for r in rows)
    assert rows[2][0] == my_id[:12] and rows[4][0] == other_id[:12]
    # columns line up as docker's tabwriter does: each starts where the header's does
    starts = [lines[0].index(h) for h in ("NAME", "DRIVER", "SCOPE")]
    for line in lines[1:]:
        assert all(line[s - 1] == " " and line[s] != " " for s in starts), line

    def ls(*args: str) -> list[str]:
        return netctl(host_ns, tmp_path, "network", "ls", "-q", *args).stdout.split()

    assert len(ls()) == 5 and all(HEX12.match(x) for x in ls())
    assert ls("--filter", "name=my") == [my_id[:12]]
    assert ls("--filter", "label=team=a") == [my_id[:12]]
    assert ls("--filter", "label=team") == [my_id[:12]]
    assert ls("--filter", "label=team=b") == []
    assert ls("-f", "type=custom") == [my_id[:12], other_id[:12]]
    ids = {r[1]: r[0] for r in rows}
    assert ls("-f", "driver=null", "-f", "driver=host") == [ids["host"], ids["none"]]
    assert ls("--filter", f"id={other_id[:6]}") == [other_id[:12]]
    assert netctl(
        host_ns, tmp_path, "network", "ls", "-q", "--no-trunc", "-f", "name=mybr0"
    ).stdout.split() == [my_id]
    js = [
        json.loads(x)
        for x in netctl(host_ns, tmp_path, "network", "ls", "--format", "json").stdout.splitlines()
    ]
    assert [j["Name"] for j in js] == ["bridge", "host", "mybr0", "none", "other"]
    assert js[2]["Labels"] == "team=a" and js[2]["Scope"] == "local" and js[2]["ID"] == my_id[:12]

    cid = save_container(tmp_path, "c1", "mybr0", ["172.26.0.2/16", "fd00::2/64"])
    [insp] = json.loads(netctl(host_ns, tmp_path, "network", "inspect", "mybr0").stdout)
    assert insp["Name"] == "mybr0" and insp["Id"] == my_id and insp["Driver"] == "bridge"
    assert insp["Scope"] == "local" and insp["Internal"] is False and insp["EnableIPv6"] is False
    assert insp["IPAM"]["Config"] == [{"Subnet": "172.26.0.0/16", "Gateway": "172.26.0.1"}]
    assert insp["Labels"] == {"team": "a"} and insp["Options"] == {}
    assert insp["ConfigFile"] == str(net_dir(tmp_path) / "mybr0.conflist")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", insp["Created"])
    assert insp["Containers"] == {
        cid: {
            "Name": "c1",
            "MacAddress": "02:42:ac:1a:00:02",
            "IPv4Address": "172.26.0.2/16",
            "IPv6Address": "fd00::2/64",
        }
    }
    two = json.loads(netctl(host_ns, tmp_path, "network", "inspect", "other", other_id[:10]).stdout)
    assert [x["Name"] for x in two] == ["other", "other"]
    assert two[0]["IPAM"]["Config"] == [
        {
            "Subnet": "172.27.0.0/16",
            "Gateway": "172.27.0.1",
            "IPRange": "172.27.1.0/24",
            "AuxiliaryAddresses": {"printer": "172.27.1.9"},
        }
    ]
    assert two[0]["Options"] == {"com.docker.network.bridge.enable_icc": "false"}
    missing = netctl(host_ns, tmp_path, "network", "inspect", "mybr0", "nope", check=False)
    assert missing.returncode == 125 and "Error: No such network: nope" in missing.stderr
    assert [x["Name"] for x in json.loads(missing.stdout)] == ["mybr0"]

    busy = netctl(host_ns, tmp_path, "network", "rm", "mybr0", check=False)
    assert busy.returncode == 125
    assert (
        f"error while removing network: network mybr0 id {my_id} has active endpoints (c1)"
        in busy.stderr
    )
    for builtin in ("bridge", "host", "none"):
        res = netctl(host_ns, tmp_path, "network", "rm", builtin, check=False)
        assert (
            res.returncode == 125
            and f"{builtin} is a pre-defined network and cannot be removed" in res.stderr
        )
    nope = netctl(host_ns, tmp_path, "network", "rm", "nope", check=False)
    assert nope.returncode == 125 and "network nope not found" in nope.stderr
    assert conflists(tmp_path) == ["bridge.conflist", "mybr0.conflist", "other.conflist"]

    # prune keeps the network in use, asks first without -f
    assert netctl(host_ns, tmp_path, "network", "prune", stdin="n\n").stdout.endswith("[y/N] ")
    assert conflists(tmp_path) == ["bridge.conflist", "mybr0.conflist", "other.conflist"]
    pruned = netctl(host_ns, tmp_path, "network", "prune", "-f").stdout
    assert pruned == "Deleted Networks:\nother\n"
    assert netctl(host_ns, tmp_path, "network", "prune", "-f").stdout == ""

    drop_containers(tmp_path)
    assert netctl(host_ns, tmp_path, "network", "rm", "mybr0").stdout == "mybr0\n"
    assert conflists(tmp_path) == ["bridge.conflist"]
    assert ls("-f", "type=custom") == []


def test_builtins_inspect(host_ns, tmp_path) -> None:
    host, none, bridge = json.loads(
        netctl(host_ns, tmp_path, "network", "inspect", "host", "none", "bridge").stdout
    )
    assert (host["Driver"], none["Driver"], bridge["Driver"]) == ("host", "null", "bridge")
    assert host["IPAM"]["Config"] == [] and none["ConfigFile"] == ""
    assert bridge["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]
    assert bridge["Options"]["com.docker.network.bridge.name"] == "netctl0"
    assert bridge["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    conf = json.loads((net_dir(tmp_path) / "bridge.conflist").read_text())
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "firewall", "isolation"]


BAD = [
    (["mybr0", "--subnet", "172.26.0.0/33"], "invalid subnet 172.26.0.0/33: invalid CIDR address"),
    (
        ["mybr0", "--subnet", "172.26.0.1/16"],
        "invalid subnet 172.26.0.1/16: it should be 172.26.0.0/16",
    ),
    (
        ["mybr0", "--subnet", "10.0.0.0/24", "--gateway", "10.0.1.1"],
        "no matching subnet for gateway 10.0.1.1",
    ),
    (
        ["mybr0", "--gateway", "10.0.0.1"],
        "every ip-range or gateway must have a corresponding subnet",
    ),
    (
        ["mybr0", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--gateway", "10.0.0.2"],
        "every ip-range or gateway must have a corresponding subnet",
    ),
    (
        ["mybr0", "--subnet", "10.1.0.0/24", "--ip-range", "10.1.0.0/16"],
        "no matching subnet for range 10.1.0.0/16",
    ),
    (
        ["mybr0", "--subnet", "10.1.0.0/24", "--ip-range", "10.2.0.0/24"],
        "no matching subnet for range 10.2.0.0/24",
    ),
    (
        ["mybr0", "--subnet", "10.1.0.0/24", "--aux-address", "a=10.2.0.1"],
        "no matching subnet for aux-address 10.2.0.1",
    ),
    (
        ["mybr0", "--subnet", "10.1.0.0/24", "--aux-address", "nonsense"],
        "invalid aux-address 'nonsense': expected name=IP",
    ),
    (["mybr0", "--subnet", "172.17.5.0/24"], "Pool overlaps with other one on this address space"),
    (["taken", "--subnet", "10.9.0.0/24"], "network with name taken already exists"),
    (["mybr0", "--subnet", "10.8.1.0/24"], "Pool overlaps with other one on this address space"),
    (["bridge"], "bridge is a pre-defined network and cannot be created"),
    (["none"], "none is a pre-defined network and cannot be created"),
    (["--", "-bad"], 'invalid network name "-bad": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'),
    (["a/b"], 'invalid network name "a/b"'),
    (["..", "--subnet", "10.3.0.0/24"], 'invalid network name ".."'),
    (['x";flush ruleset;"'], "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
    (["mybr0", "-o", "foo=bar"], 'unknown option "foo" for driver bridge'),
    (
        ["mybr0", "-o", "com.docker.network.bridge.enable_icc=maybe"],
        'parsing "maybe": invalid syntax',
    ),
    (
        ["mybr0", "-o", "com.docker.network.bridge.name=way-too-long-name0"],
        "an interface name has 1-15 characters",
    ),
    (["mybr0", "-o", "com.docker.network.driver.mtu=10"], "the MTU must be between 68 and 65535"),
    (["mybr0", "--mtu", "1400", "-o", "com.docker.network.driver.mtu=1500"], "conflicting MTU"),
    (["mybr0", "-d", "weave"], 'plugin "weave" not found'),
    (["mybr0", "-d", "overlay"], "overlay networks need a cluster store"),
    (["mybr0", "--label", "=v"], "invalid label '=v'"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_input_is_refused_and_nothing_written(host_ns, tmp_path, args, message) -> None:
    netctl(host_ns, tmp_path, "network", "create", "taken", "--subnet", "10.8.0.0/16")
    before = sorted(p.name for p in net_dir(tmp_path).iterdir())
    res = netctl(host_ns, tmp_path, "network", "create", *args, check=False)
    assert res.returncode == 125, res.stderr
    assert message in res.stderr, res.stderr
    assert res.stdout == ""
    assert sorted(p.name for p in net_dir(tmp_path).iterdir()) == before


def test_auto_subnet_avoids_routes_and_pools_run_out(host_ns, tmp_path) -> None:
    host_ns.run("ip", "link", "add", "pytdum0", "type", "veth", "peer", "name", "pytdum1")
    host_ns.run("ip", "link", "set", "pytdum0", "up")
    host_ns.run("ip", "route", "add", "172.18.0.0/16", "dev", "pytdum0")
    host_ns.run("ip", "route", "add", "172.19.7.0/24", "dev", "pytdum0")
    netctl(host_ns, tmp_path, "network", "create", "auto1")
    netctl(host_ns, tmp_path, "network", "create", "auto2", "--ipv6")
    a1, a2 = json.loads(netctl(host_ns, tmp_path, "network", "inspect", "auto1", "auto2").stdout)
    assert a1["IPAM"]["Config"] == [{"Subnet": "172.20.0.0/16", "Gateway": "172.20.0.1"}]
    assert a2["IPAM"]["Config"][0] == {"Subnet": "172.21.0.0/16", "Gateway": "172.21.0.1"}
    v6 = a2["IPAM"]["Config"][1]["Subnet"]
    assert a2["EnableIPv6"] is True and v6.startswith("fd") and v6.endswith("::/64")

    daemon = tmp_path / "custom-daemon.json"
    daemon.write_text(json.dumps({"default-address-pools": [{"base": "10.66.0.0/23", "size": 24}]}))
    env = {"NETCTL_DAEMON_CONFIG": str(daemon)}
    host_ns.run("ip", "route", "add", "10.66.0.0/24", "dev", "pytdum0")
    netctl(host_ns, tmp_path, "network", "create", "pool1", env=env)
    [p1] = json.loads(netctl(host_ns, tmp_path, "network", "inspect", "pool1", env=env).stdout)
    assert p1["IPAM"]["Config"][0]["Subnet"] == "10.66.1.0/24"
    res = netctl(host_ns, tmp_path, "network", "create", "pool2", env=env, check=False)
    assert res.returncode == 125
    assert (
        "could not find an available, non-overlapping IPv4 address pool among the defaults "
        "to assign to the network"
    ) in res.stderr
    assert not (net_dir(tmp_path) / "pool2.conflist").exists()


def test_default_bridge_follows_daemon_json(host_ns, tmp_path) -> None:
    daemon = tmp_path / "daemon.json"
    env = {"NETCTL_DAEMON_CONFIG": str(daemon)}
    [first] = json.loads(netctl(host_ns, tmp_path, "network", "inspect", "bridge", env=env).stdout)
    assert first["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]
    daemon.write_text(
        json.dumps(
            {
                "bip": "10.50.0.1/24",
                "fixed-cidr": "10.50.0.128/25",
                "bridge": "pytdef0",
                "mtu": 1400,
                "icc": False,
            }
        )
    )
    [second] = json.loads(netctl(host_ns, tmp_path, "network", "inspect", "bridge", env=env).stdout)
    assert second["Id"] == first["Id"]
    assert second["IPAM"]["Config"] == [
        {"Subnet": "10.50.0.0/24", "Gateway": "10.50.0.1", "IPRange": "10.50.0.128/25"}
    ]
    conf = json.loads((net_dir(tmp_path) / "bridge.conflist").read_text())
    bridge = conf["plugins"][0]
    assert (bridge["bridge"], bridge["mtu"], bridge["portIsolation"]) == ("pytdef0", 1400, True)
    # the new bip is taken: a user network cannot have it
    res = netctl(
        host_ns,
        tmp_path,
        "network",
        "create",
        "clash",
        "--subnet",
        "10.50.0.0/16",
        env=env,
        check=False,
    )
    assert res.returncode == 125 and "Pool overlaps" in res.stderr

    daemon.write_text('{"bip": "10.50.0.1/24", "icc": "no"}')
    res = netctl(host_ns, tmp_path, "network", "ls", env=env, check=False)
    assert res.returncode == 125
    assert (
        f"invalid daemon configuration {daemon}: icc: Input should be a valid boolean" in res.stderr
    )
