"""loopback, exec'd as a runtime does, against real namespaces (all spec versions)."""

from __future__ import annotations

import pytest
from pyroute2 import IPRoute

from tests.conftest import Netns

pytestmark = pytest.mark.root

VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def conf(version: str) -> dict:
    return {"cniVersion": version, "name": "lo-net", "type": "loopback"}


def lo_up(ns: Netns) -> bool:
    # Read back through pyroute2: an implementation independent of ours.
    with IPRoute(netns=ns.name) as ipr:
        return bool(ipr.link("get", ifname="lo")[0]["flags"] & 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del(version: str, run_plugin, container_ns) -> None:
    ns = container_ns()
    ns.run("ip", "link", "set", "lo", "down")
    res = run_plugin(
        "loopback", "ADD", conf(version), netns=ns.path, container_id="c1", ifname="eth0"
    )
    assert res.rc == 0, res.stdout + res.stderr
    assert lo_up(ns)
    out = res.json
    assert out["cniVersion"] == version
    if version >= "0.3.0":
        assert out["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": ns.path}]
        addrs = {ip["address"] for ip in out["ips"]}
        assert "127.0.0.1/8" in addrs
        assert all(ip["interface"] == 0 for ip in out["ips"])
    else:
        assert out["ip4"] == {"ip": "127.0.0.1/8"}
    if version >= "0.4.0":
        chk = run_plugin(
            "loopback",
            "CHECK",
            dict(conf(version), prevResult=out),
            netns=ns.path,
            container_id="c1",
        )
        assert chk.rc == 0, chk.stdout
    dele = run_plugin("loopback", "DEL", conf(version), netns=ns.path, container_id="c1")
    assert dele.rc == 0 and dele.stdout == ""
    assert not lo_up(ns)
    if version >= "0.4.0":
        chk = run_plugin("loopback", "CHECK", conf(version), netns=ns.path, container_id="c1")
        assert chk.error["msg"].startswith("loopback interface is down")


def test_add_is_idempotent_and_passes_prev_result_through(run_plugin, container_ns) -> None:
    ns = container_ns()
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.2/24"}], "dns": {}}
    for _ in range(2):
        res = run_plugin(
            "loopback",
            "ADD",
            dict(conf("1.0.0"), prevResult=prev),
            netns=ns.path,
            container_id="c1",
        )
        assert res.rc == 0 and res.json == prev
    assert lo_up(ns)


def test_del_succeeds_when_netns_is_gone(run_plugin, container_ns) -> None:
    ns = container_ns()
    path = ns.path
    ns.run("true")
    import subprocess

    subprocess.run(["ip", "netns", "del", ns.name], check=True)
    for netns in (path, ""):
        res = run_plugin("loopback", "DEL", conf("1.0.0"), netns=netns, container_id="c1")
        assert res.rc == 0, res.stdout


@pytest.mark.parametrize(
    ("netns", "code"),
    [
        ("/var/run/netns/pyt-does-not-exist", 3),
        ("/etc", 4),
        ("/etc/hostname", 4),
        ("/proc/self/ns/uts", 4),
    ],
)
def test_add_with_a_path_that_is_not_a_netns(netns: str, code: int, run_plugin) -> None:
    res = run_plugin("loopback", "ADD", conf("1.0.0"), netns=netns, container_id="c1")
    err = res.error
    assert err["code"] == code
    assert netns in err["msg"]


def test_reference_and_ours_agree(run_plugin, run_reference, container_ns) -> None:
    """Same config, same namespace kind: our result equals the reference plugin's."""
    ours, theirs = container_ns(), container_ns()
    a = run_plugin("loopback", "ADD", conf("1.0.0"), netns=ours.path, container_id="c1")
    b = run_reference("loopback", "ADD", conf("1.0.0"), netns=theirs.path, container_id="c1")
    assert a.rc == b.rc == 0
    norm = lambda r, p: {**r, "interfaces": [{**i, "sandbox": "X"} for i in r["interfaces"]]}  # noqa: E731
    assert norm(a.json, ours.path) == norm(b.json, theirs.path)
