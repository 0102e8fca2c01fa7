"""What Go-based runtimes really send, and DELs that never wedge them.

containerd's CRI plugin (kubelet's path) builds configs with go-cni, whose capability
structs carry no json tags: portMappings arrive as {"HostPort","ContainerPort",
"Protocol","HostIP"}, ipRanges as {"Subnet","RangeStart","RangeEnd","Gateway"}. The
reference plugins accept them because Go matches keys case-insensitively; so must we.
The shapes below are the ones go-cni marshals (namespace_opts.go / types.go).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns
from tests.integration.test_portmap import bridge_conf, portmap_conf
from tests.traffic import connect, server, wire_outside

pytestmark = pytest.mark.root

# CNI_ARGS as containerd's CRI plugin sets them for a pod sandbox.
K8S_ARGS = (
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
    "K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID=0f3c9b4e-1111-2222-3333-444455556666"
)


def go_mapping(host: int, container: int, proto: str = "tcp") -> dict[str, Any]:
    return {"HostPort": host, "ContainerPort": container, "Protocol": proto, "HostIP": ""}


def nft_sets(host: Netns) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in host.nft_json().get("nftables", []):
        for kind in ("set", "map"):
            if kind in item and item[kind].get("table") == "pycni":
                out[item[kind]["name"]] = item[kind].get("elem") or []
    return out


def leases(tmp: Path, network: str = "pmnet") -> list[str]:
    d = tmp / "ipam" / network
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []


@pytest.fixture
def world(host_ns, container_ns):
    outside = container_ns()
    wire_outside(host_ns, outside)
    return host_ns, outside


@pytest.mark.parametrize("runner", ["ours", "reference"])
def test_go_spelled_port_mappings_publish_and_release(
    runner, run_plugin, run_reference, world, container_ns, tmp_path
) -> None:
    """The exact runtimeConfig containerd sends: ours publishes the port as the reference
    does (the reference run is the control), and DEL releases it."""
    run = run_plugin if runner == "ours" else run_reference
    host, outside = world
    c = container_ns()
    cid = f"go{runner}"
    args = K8S_ARGS.format(cid=cid)
    b = run(
        "bridge",
        "ADD",
        bridge_conf(tmp_path),
        netns=c.path,
        container_id=cid,
        args=args,
        in_ns=host,
    )
    assert b.rc == 0, b.stdout + b.stderr
    prev = b.json
    cip = prev["ips"][0]["address"].split("/")[0]
    pm = portmap_conf(prev, [go_mapping(18480, 8080), go_mapping(18481, 53, "udp")])
    p = run("portmap", "ADD", pm, netns=c.path, container_id=cid, args=args, in_ns=host)
    assert p.rc == 0, p.stdout + p.stderr
    with server(c, cip, 8080, "web"), server(c, cip, 53, "dns", proto="udp"):
        assert connect(outside, "198.18.0.1", 18480) == "web 198.18.0.2"
        assert connect(outside, "198.18.0.1", 18481, proto="udp") == "dns 198.18.0.2"
    for name, conf in (("portmap", pm), ("bridge", bridge_conf(tmp_path))):
        d = run(name, "DEL", conf, netns=c.path, container_id=cid, args=args, in_ns=host)
        assert d.rc == 0, d.stdout + d.stderr
    assert connect(outside, "198.18.0.1", 18480, timeout=1) is None
    assert leases(tmp_path) == []
    if runner == "ours":
        assert not any(nft_sets(host).values()), nft_sets(host)


def test_go_spelled_ip_ranges_and_top_level_keys(
    run_plugin, host_ns, container_ns, tmp_path
) -> None:
    """runtimeConfig.ipRanges as go-cni marshals it, and netconf keys in another case
    (Go reads "IsDefaultGateway" as isDefaultGateway)."""
    c = container_ns()
    conf = bridge_conf(tmp_path, subnet="10.75.0.0/16")
    del conf["isDefaultGateway"]
    conf["IsDefaultGateway"] = True
    conf["ipam"]["ranges"] = []  # the runtime's ranges come first; keep only them
    conf["runtimeConfig"] = {
        "ipRanges": [
            [
                {
                    "Subnet": "10.76.0.0/24",
                    "RangeStart": "10.76.0.50",
                    "RangeEnd": "10.76.0.60",
                    "Gateway": "10.76.0.1",
                }
            ]
        ]
    }
    r = run_plugin("bridge", "ADD", conf, netns=c.path, container_id="rng", in_ns=host_ns)
    assert r.rc == 0, r.stdout + r.stderr
    addrs = [ip["address"] for ip in r.json["ips"]]
    assert addrs[0].startswith("10.76.0.5") and addrs[0].endswith("/24"), addrs
    routes = c.routes()
    assert any(rt["dst"] == "default" and rt.get("gateway") == "10.76.0.1" for rt in routes), routes
    d = run_plugin("bridge", "DEL", conf, netns=c.path, container_id="rng", in_ns=host_ns)
    assert d.rc == 0, d.stdout
    assert leases(tmp_path) == []


BAD_RUNTIME_CONFIGS: list[Any] = [
    {"portMappings": "nope"},
    {"portMappings": [{"hostPort": "x", "containerPort": -1}]},
    {"portMappings": [7]},
    {"ips": "10.0.0.1", "mac": 5, "ipRanges": "bad"},
    "not-an-object",
]


@pytest.mark.parametrize("bad", BAD_RUNTIME_CONFIGS, ids=lambda b: str(b)[:30])
def test_del_with_unparseable_runtime_config_or_prev_result_releases_everything(
    bad, run_plugin, world, container_ns, tmp_path
) -> None:
    """A DEL whose runtimeConfig or prevResult cannot be parsed still releases what the
    ADD made (veth, lease, published port, masquerade) and succeeds: a failing DEL is
    retried forever by containerd and the kubelet."""
    host, outside = world
    c = container_ns()
    b = run_plugin(
        "bridge", "ADD", bridge_conf(tmp_path), netns=c.path, container_id="bad", in_ns=host
    )
    assert b.rc == 0, b.stdout
    prev = b.json
    cip = prev["ips"][0]["address"].split("/")[0]
    p = run_plugin(
        "portmap",
        "ADD",
        portmap_conf(prev, [go_mapping(18490, 80)]),
        netns=c.path,
        container_id="bad",
        in_ns=host,
    )
    assert p.rc == 0, p.stdout
    sets = nft_sets(host)
    assert sets["masq4"] and sets["pm4_any_addr"] and sets["subnets4"]
    with server(c, cip, 80, "web"):
        assert connect(outside, "198.18.0.1", 18490) == "web 198.18.0.2"
    for name, base in (("portmap", portmap_conf(prev, [])), ("bridge", bridge_conf(tmp_path))):
        conf = dict(base, runtimeConfig=bad, prevResult={"ips": "nope", "interfaces": 3})
        d = run_plugin(
            "bridge" if name == "bridge" else "portmap",
            "DEL",
            conf,
            netns=c.path,
            container_id="bad",
            in_ns=host,
        )
        assert d.rc == 0, f"{name} DEL: {d.stdout} {d.stderr}"
    assert c.link("eth0") is None
    assert leases(tmp_path) == []
    assert not any(nft_sets(host).values()), nft_sets(host)
    # ADD and CHECK still refuse the same input, with a config error (not 999)
    conf = dict(portmap_conf(prev, []), runtimeConfig=bad)
    a = run_plugin("portmap", "ADD", conf, netns=c.path, container_id="bad2", in_ns=host)
    if a.rc != 0:
        assert a.error["code"] == 7, a.stdout


def test_last_attachment_of_a_network_leaves_no_masquerade_pair(
    run_plugin, host_ns, container_ns, tmp_path
) -> None:
    """The shared "same subnet" pair lives while a container of the subnet does; when
    the network's last one is deleted nothing of it stays in `inet pycni` (containerd
    1.6 never calls GC)."""
    a, b = container_ns(), container_ns()
    conf = bridge_conf(tmp_path)
    for cid, ns in (("a", a), ("b", b)):
        r = run_plugin("bridge", "ADD", conf, netns=ns.path, container_id=cid, in_ns=host_ns)
        assert r.rc == 0, r.stdout
    assert nft_sets(host_ns)["subnets4"]
    assert run_plugin("bridge", "DEL", conf, netns=a.path, container_id="a", in_ns=host_ns).rc == 0
    assert nft_sets(host_ns)["subnets4"], "b still needs the pair"
    assert run_plugin("bridge", "DEL", conf, netns=b.path, container_id="b", in_ns=host_ns).rc == 0
    assert not any(nft_sets(host_ns).values()), nft_sets(host_ns)
