"""portmap as a chained plugin, exec'd as a runtime does: traffic through published
ports, and interop with the reference bridge and portmap in both directions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns, PluginRun
from tests.traffic import connect, server, wire_outside

pytestmark = pytest.mark.root


def bridge_conf(tmp: Path, subnet: str = "10.74.0.0/24", **extra: Any) -> dict[str, Any]:
    conf = {
        "cniVersion": "1.0.0",
        "name": "pmnet",
        "type": "bridge",
        "bridge": "pytpm0",
        "isDefaultGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "dataDir": str(tmp / "ipam"),
        },
    }
    conf.update(extra)
    return conf


def portmap_conf(
    prev: dict[str, Any], mappings: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    conf = {
        "cniVersion": "1.0.0",
        "name": "pmnet",
        "type": "portmap",
        "runtimeConfig": {"portMappings": mappings},
        "prevResult": prev,
    }
    conf.update(extra)
    return conf


def attach(
    runner,
    host: Netns,
    c: Netns,
    tmp: Path,
    cid: str,
    mappings: list[dict[str, Any]],
    bridge_runner=None,
) -> tuple[dict[str, Any], str]:
    b = (bridge_runner or runner)(
        "bridge", "ADD", bridge_conf(tmp), netns=c.path, container_id=cid, in_ns=host
    )
    assert b.rc == 0, b.stdout + b.stderr
    prev = b.json
    p: PluginRun = runner(
        "portmap", "ADD", portmap_conf(prev, mappings), netns=c.path, container_id=cid, in_ns=host
    )
    assert p.rc == 0, p.stdout + p.stderr
    assert p.json == prev  # prevResult passed through
    return prev, prev["ips"][0]["address"].split("/")[0]


@pytest.fixture
def world(host_ns, container_ns):
    outside = container_ns()
    wire_outside(host_ns, outside)
    return host_ns, outside


def test_outside_reaches_published_port_and_sees_real_client(
    run_plugin, world, container_ns, tmp_path
) -> None:
    host, outside = world
    c = container_ns()
    _prev, cip = attach(
        run_plugin,
        host,
        c,
        tmp_path,
        "c1",
        [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
        ],
    )
    with server(c, cip, 80, "web"), server(c, cip, 53, "dns", proto="udp"):
        # the container sees the outside's own address, not the node's
        assert connect(outside, "198.18.0.1", 8080) == "web 198.18.0.2"
        assert connect(outside, "198.18.0.1", 5353, proto="udp") == "dns 198.18.0.2"
        # from the node itself: its own address and 127.0.0.1
        assert (connect(host, "198.18.0.1", 8080) or "").startswith("web ")
        assert (connect(host, "127.0.0.1", 8080) or "").startswith("web ")
        # a port nobody published stays closed
        assert connect(outside, "198.18.0.1", 8081, timeout=1) is None


def test_hairpin_and_neighbour(run_plugin, world, container_ns, tmp_path) -> None:
    host, _outside = world
    a, b = container_ns(), container_ns()
    _pa, aip = attach(run_plugin, host, a, tmp_path, "a", [{"hostPort": 8080, "containerPort": 80}])
    _pb, _bip = attach(
        run_plugin, host, b, tmp_path, "b", [{"hostPort": 8081, "containerPort": 80}]
    )
    with server(a, aip, 80, "a"):
        assert (connect(a, "198.18.0.1", 8080) or "").startswith("a ")  # its own published port
        assert (connect(b, "198.18.0.1", 8080) or "").startswith("a ")  # a neighbour's


def test_host_ip_binding_only_that_address(run_plugin, world, container_ns, tmp_path) -> None:
    host, outside = world
    host.run("ip", "addr", "add", "198.18.0.3/24", "dev", "up0")
    c = container_ns()
    _prev, cip = attach(
        run_plugin,
        host,
        c,
        tmp_path,
        "c1",
        [{"hostPort": 8080, "containerPort": 80, "hostIP": "198.18.0.3"}],
    )
    with server(c, cip, 80, "web"):
        assert connect(outside, "198.18.0.3", 8080) == "web 198.18.0.2"
        assert connect(outside, "198.18.0.1", 8080, timeout=1) is None


def test_del_without_prev_result_or_mappings(run_plugin, world, container_ns, tmp_path) -> None:
    host, outside = world
    c = container_ns()
    _prev, cip = attach(
        run_plugin, host, c, tmp_path, "c1", [{"hostPort": 8080, "containerPort": 80}]
    )
    res = run_plugin(
        "portmap",
        "DEL",
        {"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap"},
        netns="",
        container_id="c1",
        in_ns=host,
    )
    assert res.rc == 0, res.stdout
    with server(c, cip, 80, "web"):
        assert connect(outside, "198.18.0.1", 8080, timeout=1) is None
    assert (
        run_plugin(
            "portmap",
            "DEL",
            {"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap"},
            container_id="c1",
            in_ns=host,
        ).rc
        == 0
    )


def test_conflict_between_containers(run_plugin, world, container_ns, tmp_path) -> None:
    host, _ = world
    a, b = container_ns(), container_ns()
    attach(run_plugin, host, a, tmp_path, "a", [{"hostPort": 9090, "containerPort": 80}])
    prev = run_plugin(
        "bridge", "ADD", bridge_conf(tmp_path), netns=b.path, container_id="b", in_ns=host
    ).json
    res = run_plugin(
        "portmap",
        "ADD",
        portmap_conf(prev, [{"hostPort": 9090, "containerPort": 80, "hostIP": "198.18.0.1"}]),
        netns=b.path,
        container_id="b",
        in_ns=host,
    )
    err = res.error
    assert "Bind for" in err["msg"] and "9090" in err["msg"] and "already allocated" in err["msg"]


def test_check(run_plugin, world, container_ns, tmp_path) -> None:
    host, _ = world
    c = container_ns()
    mappings = [{"hostPort": 8080, "containerPort": 80}]
    prev, _cip = attach(run_plugin, host, c, tmp_path, "c1", mappings)
    assert (
        run_plugin(
            "portmap",
            "CHECK",
            portmap_conf(prev, mappings),
            netns=c.path,
            container_id="c1",
            in_ns=host,
        ).rc
        == 0
    )
    host.run("nft", "flush", "table", "inet", "pycni")
    err = run_plugin(
        "portmap",
        "CHECK",
        portmap_conf(prev, mappings),
        netns=c.path,
        container_id="c1",
        in_ns=host,
    ).error
    assert "8080" in err["msg"] or "rules, expected" in err["msg"]


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_conditions_from_the_config(
    run_plugin, world, container_ns, tmp_path, backend: str
) -> None:
    """conditionsV4 as the reference takes them (iptables arguments), with either backend."""
    host, outside = world
    c = container_ns()
    b = run_plugin(
        "bridge", "ADD", bridge_conf(tmp_path), netns=c.path, container_id="c1", in_ns=host
    )
    assert b.rc == 0, b.stderr
    prev, cip = b.json, b.json["ips"][0]["address"].split("/")[0]
    mappings = [{"hostPort": 8080, "containerPort": 80}]
    extra = {"backend": backend, "conditionsV4": ["!", "-s", "198.18.0.2"]}
    conf = portmap_conf(prev, mappings, **extra)
    kw = {"netns": c.path, "container_id": "c1", "in_ns": host}
    assert run_plugin("portmap", "ADD", conf, **kw).rc == 0
    with server(c, cip, 80, "web"):
        assert connect(outside, "198.18.0.1", 8080, timeout=1) is None  # excluded source
        assert (connect(host, "198.18.0.1", 8080) or "").startswith("web ")  # the host is not
        assert run_plugin("portmap", "CHECK", conf, **kw).rc == 0
        # CHECK with other conditions (here: none) reports what is missing.
        plain = portmap_conf(prev, mappings, backend=backend)
        assert run_plugin("portmap", "CHECK", plain, **kw).rc != 0
        assert run_plugin("portmap", "DEL", conf, **kw).rc == 0
        assert connect(host, "198.18.0.1", 8080, timeout=1) is None
    bad = portmap_conf(prev, mappings, conditionsV4=["-j", "ACCEPT"])
    err = run_plugin("portmap", "ADD", bad, **kw).error
    assert err["code"] == 7 and "unsupported condition '-j'" in err["msg"]
    assert run_plugin("bridge", "DEL", bridge_conf(tmp_path), **kw).rc == 0


def test_our_portmap_after_reference_bridge(
    run_plugin, run_reference, world, container_ns, tmp_path
) -> None:
    host, outside = world
    c = container_ns()
    _prev, cip = attach(
        run_plugin,
        host,
        c,
        tmp_path,
        "c1",
        [{"hostPort": 8080, "containerPort": 80}],
        bridge_runner=run_reference,
    )
    with server(c, cip, 80, "web"):
        assert connect(outside, "198.18.0.1", 8080) == "web 198.18.0.2"


def test_reference_portmap_after_our_bridge(
    run_plugin, run_reference, world, container_ns, tmp_path
) -> None:
    host, outside = world
    c = container_ns()
    b = run_plugin(
        "bridge", "ADD", bridge_conf(tmp_path), netns=c.path, container_id="c1", in_ns=host
    )
    prev = b.json
    cip = prev["ips"][0]["address"].split("/")[0]
    res = run_reference(
        "portmap",
        "ADD",
        portmap_conf(prev, [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        netns=c.path,
        container_id="c1",
        in_ns=host,
    )
    assert res.rc == 0, res.stdout + res.stderr
    with server(c, cip, 80, "web"):
        assert connect(outside, "198.18.0.1", 8080) == "web 198.18.0.2"


def test_bad_mappings(run_plugin, host_ns, container_ns, tmp_path) -> None:
    c = container_ns()
    prev = run_plugin(
        "bridge", "ADD", bridge_conf(tmp_path), netns=c.path, container_id="c1", in_ns=host_ns
    ).json
    for mapping, text in (
        ({"hostPort": 0, "containerPort": 80}, "Invalid host port number: 0"),
        ({"hostPort": 80, "containerPort": 0}, "Invalid container port number: 0"),
        ({"hostPort": 70000, "containerPort": 80}, "hostPort"),
        ({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}, "protocol"),
        ({"hostPort": 80, "containerPort": 80, "hostIP": "localhost"}, "hostIP"),
    ):
        err = run_plugin(
            "portmap",
            "ADD",
            portmap_conf(prev, [mapping]),
            netns=c.path,
            container_id="c1",
            in_ns=host_ns,
        ).error
        assert err["code"] == 7 and text in err["msg"] + err.get("details", ""), err
    err = run_plugin(
        "portmap",
        "ADD",
        {
            "cniVersion": "1.0.0",
            "name": "pmnet",
            "type": "portmap",
            "runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 1}]},
        },
        netns=c.path,
        container_id="c1",
        in_ns=host_ns,
    ).error
    assert err["msg"] == "must be called as chained plugin"
