"""The `dns` CNI plugin exec'd as a runtime execs it: chained after our bridge, it
registers K8S_POD_NAME and runtimeConfig aliases with netctl's resolver, which then
answers inside the container's namespace; DEL removes the names (twice is fine); bad
input answers CNI errors with the right codes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.integration.test_netctl_dns import DIG, wait_gone
from tests.integration.test_netctl_run import PY

pytestmark = pytest.mark.root

NET = "plugnet"


def bridge_conf(tmp_path: Path) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "bridge",
        "bridge": "pytdnsbr0",
        "isGateway": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.77.0.0/24"}]],
            "dataDir": str(tmp_path / "ipam"),
        },
    }


def dns_conf(tmp_path: Path, prev: dict | None, aliases: list[str] | None = None) -> dict:
    conf: dict = {
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "dns",
        "runDir": str(tmp_path / "run"),
        "capabilities": {"aliases": True},
    }
    if prev is not None:
        conf["prevResult"] = prev
    if aliases is not None:
        conf["runtimeConfig"] = {"aliases": {NET: aliases}}
    return conf


def dig(ns, name: str) -> list[str]:
    out = ns.run(PY, "-c", DIG, name, "A", check=False)
    return out.split()


def test_registered_names_answer_in_the_namespace_and_go_on_del(
    run_plugin, host_ns, container_ns, tmp_path: Path
) -> None:
    conts = {}
    for n, (pod, aliases) in enumerate((("alpha", ["one"]), ("beta", ["two", "both"]))):
        c = container_ns()
        c.run("ip", "link", "set", "lo", "up")
        cid = f"cid{n}"
        add = run_plugin(
            "bridge", "ADD", bridge_conf(tmp_path), netns=c.path, container_id=cid, in_ns=host_ns
        )
        assert add.rc == 0, add.stdout + add.stderr
        prev = add.json
        res = run_plugin(
            "dns", "ADD", dns_conf(tmp_path, prev, aliases), netns=c.path, container_id=cid,
            args=f"IgnoreUnknown=1;K8S_POD_NAME={pod}", in_ns=host_ns,
        )  # fmt: skip
        assert res.rc == 0, res.stdout + res.stderr
        assert res.json["dns"]["nameservers"][0] == "127.0.0.11"
        assert res.json["ips"] == prev["ips"]
        conts[pod] = (c, cid, prev["ips"][0]["address"].split("/")[0])
    a, b = conts["alpha"], conts["beta"]
    for name in ("beta", "two", "both", f"beta.{NET}"):
        assert dig(a[0], name) == ["NOERROR", b[2]], name
    assert dig(b[0], "one") == ["NOERROR", a[2]]
    check = run_plugin(
        "dns", "CHECK", dns_conf(tmp_path, None), netns=b[0].path, container_id=b[1], in_ns=host_ns
    )
    assert check.rc == 0, check.stdout
    pid = int((tmp_path / "run/dns/pid").read_text())
    for c, cid, _ip in (b, a):
        for _ in range(2):  # the second DEL finds nothing: success
            res = run_plugin(
                "dns",
                "DEL",
                dns_conf(tmp_path, None),
                netns=c.path,
                container_id=cid,
                in_ns=host_ns,
            )
            assert res.rc == 0, res.stdout + res.stderr
        if cid == b[1]:
            assert dig(a[0], "beta")[0] != "NOERROR"
        run_plugin(
            "bridge", "DEL", bridge_conf(tmp_path), netns=c.path, container_id=cid, in_ns=host_ns
        )
    assert wait_gone(pid), "the resolver exits when nothing is registered"
    assert not (tmp_path / "run/dns/pid").exists()
    host_ns.run("ip", "link", "del", "pytdnsbr0")


def test_bad_input_gets_cni_errors(run_plugin, host_ns, container_ns, tmp_path: Path) -> None:
    c = container_ns()
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": c.path}],
            "ips": [{"address": "10.77.0.9/24", "interface": 0}]}  # fmt: skip
    cases = [
        (dns_conf(tmp_path, None), "", 7, "must be called as chained plugin"),
        ({**dns_conf(tmp_path, prev), "runDir": "relative/dir"}, "", 7, "not an absolute path"),
        (dns_conf(tmp_path, prev, ["bad name"]), "", 7, "is not a valid DNS name"),
        ({**dns_conf(tmp_path, prev), "runtimeConfig": {"aliases": {NET: "x"}}}, "", 7, "list of strings"),
        (dns_conf(tmp_path, prev), "K8S_POD_NAME=a/b;IgnoreUnknown=1", 7, "is not a valid DNS name"),
        ({**dns_conf(tmp_path, prev), "internal": "yes"}, "", 7, "internal"),
        (dns_conf(tmp_path, {**prev, "ips": []}), "", 7, "no container address"),
    ]  # fmt: skip
    for conf, args, code, words in cases:
        res = run_plugin(
            "dns", "ADD", conf, netns=c.path, container_id="x1", args=args, in_ns=host_ns
        )
        err = res.error
        assert err["code"] == code and words in err["msg"], (conf, err)
    assert (
        not list((tmp_path / "run/dns/cni").glob("*.json"))
        if (tmp_path / "run/dns/cni").exists()
        else True
    )
    res = run_plugin(
        "dns", "CHECK", dns_conf(tmp_path, prev), netns=c.path, container_id="nope", in_ns=host_ns
    )
    assert res.error["code"] == 3
    # DEL of something never added: success, nothing started
    res = run_plugin(
        "dns", "DEL", dns_conf(tmp_path, None), netns=c.path, container_id="nope", in_ns=host_ns
    )
    assert res.rc == 0
    time.sleep(0.2)
    assert not (tmp_path / "run/dns/pid").exists()
    assert os.path.isdir(tmp_path)
    assert json.dumps(prev)


def test_a_container_without_a_name_is_served_and_never_slows_add(
    run_plugin, host_ns, container_ns, tmp_path: Path
) -> None:
    """`netctl cni add`, cnitool and a runtime that sets no K8S_POD_NAME register a
    container without names: it still gets the resolver (forwarding, other containers'
    names), and its registration never stops the resolver from starting (it once
    crashed it, and every ADD then waited 10 s for a resolver that was not coming)."""
    conts = []
    for n, pod in enumerate(("", "named")):
        c = container_ns()
        c.run("ip", "link", "set", "lo", "up")
        cid = f"nn{n}"
        add = run_plugin(
            "bridge", "ADD", bridge_conf(tmp_path), netns=c.path, container_id=cid, in_ns=host_ns
        )
        assert add.rc == 0, add.stdout + add.stderr
        args = f"IgnoreUnknown=1;K8S_POD_NAME={pod}" if pod else ""
        started = time.monotonic()
        res = run_plugin(
            "dns", "ADD", dns_conf(tmp_path, add.json), netns=c.path, container_id=cid,
            args=args, in_ns=host_ns,
        )  # fmt: skip
        assert res.rc == 0, res.stdout + res.stderr
        assert time.monotonic() - started < 5, "the ADD waited for a resolver that died"
        conts.append((c, cid, add.json["ips"][0]["address"].split("/")[0]))
    unnamed, named = conts
    assert dig(unnamed[0], "named") == ["NOERROR", named[2]]
    log = tmp_path / "run/dns/log"
    assert "Traceback" not in (log.read_text() if log.exists() else "")
    pid = int((tmp_path / "run/dns/pid").read_text())
    for c, cid, _ip in conts:
        assert (
            run_plugin(
                "dns",
                "DEL",
                dns_conf(tmp_path, None),
                netns=c.path,
                container_id=cid,
                in_ns=host_ns,
            ).rc
            == 0
        )
        run_plugin(
            "bridge", "DEL", bridge_conf(tmp_path), netns=c.path, container_id=cid, in_ns=host_ns
        )
    assert wait_gone(pid)
    host_ns.run("ip", "link", "del", "pytdnsbr0")


def test_a_namespace_dropped_without_del_does_not_keep_the_resolver(
    run_plugin, host_ns, tmp_path: Path
) -> None:
    """A runtime that deletes a container's namespace without DEL (a crash, or a test
    that only removes its namespaces): the resolver's handle on it must not keep the
    namespace, and the resolver, alive. It drops the client and exits within seconds."""
    from tests.conftest import _delete_netns, _make_netns

    c = _make_netns("dnsdrop")
    try:
        add = run_plugin(
            "bridge", "ADD", bridge_conf(tmp_path), netns=c.path, container_id="drop1",
            in_ns=host_ns,
        )  # fmt: skip
        assert add.rc == 0, add.stdout + add.stderr
        res = run_plugin(
            "dns", "ADD", dns_conf(tmp_path, add.json), netns=c.path, container_id="drop1",
            args="IgnoreUnknown=1;K8S_POD_NAME=dropped", in_ns=host_ns,
        )  # fmt: skip
        assert res.rc == 0, res.stdout + res.stderr
        pid = int((tmp_path / "run/dns/pid").read_text())
    finally:
        _delete_netns(c)
    assert wait_gone(pid, timeout=15), "the resolver kept a dropped namespace alive"
    run_plugin(
        "bridge", "DEL", bridge_conf(tmp_path), netns=c.path, container_id="drop1", in_ns=host_ns
    )
    host_ns.run("ip", "link", "del", "pytdnsbr0", check=False)
