"""Concurrency: exhaustion under a stampede, racing creators, and a randomized soak of
ADD/DEL/CHECK over several networks sharing one dataDir, with invariants checked after
every batch. Sizes fit CI; `PYCNI_SOAK_OPS=20000 pytest -k soak` runs a bigger soak."""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns, PluginRun

pytestmark = pytest.mark.root


def bridge_conf(
    tmp: Path, net: str = "cc0", subnet: str = "10.76.0.0/24", **ipam_extra: Any
) -> dict[str, Any]:
    rng = {"subnet": subnet, **ipam_extra}
    return {
        "cniVersion": "1.1.0",
        "name": net,
        "type": "bridge",
        "bridge": f"pyt{net}",
        "isDefaultGateway": True,
        "ipMasq": True,
        "ipam": {"type": "host-local", "ranges": [[rng]], "dataDir": str(tmp / "ipam")},
    }


def leases(tmp: Path, net: str) -> dict[str, str]:
    d = tmp / "ipam" / net
    if not d.exists():
        return {}
    return {
        p.name: p.read_bytes().decode()
        for p in d.iterdir()
        if p.name != "lock" and not p.name.startswith("last_reserved")
    }


def test_exactly_k_of_64_succeed(run_plugin, host_ns, container_ns, tmp_path) -> None:
    k = 5
    conf = bridge_conf(tmp_path, rangeStart="10.76.0.10", rangeEnd=f"10.76.0.{10 + k - 1}")
    nss = [container_ns() for _ in range(64)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results: list[PluginRun] = list(
            pool.map(
                lambda i: run_plugin(
                    "bridge", "ADD", conf, netns=nss[i].path, container_id=f"s{i}", in_ns=host_ns
                ),
                range(64),
            )
        )
    ok = [r for r in results if r.rc == 0]
    failed = [r for r in results if r.rc != 0]
    assert len(ok) == k
    addresses = [r.json["ips"][0]["address"] for r in ok]
    assert len(set(addresses)) == k
    for r in failed:
        err = r.error
        assert err["code"] == 11, err  # retrying helps once an address is freed
        assert "no IP addresses available" in err["msg"] or "no IP addresses available" in err.get(
            "details", ""
        ), err
    # nothing half-created by the failures
    assert len(leases(tmp_path, "cc0")) == k
    assert len(host_ns.ip_json("link", "show", "type", "veth")) == k
    assert sum(1 for n in nss if n.link("eth0") is not None) == k


def test_racing_creators_of_one_bridge_and_table(
    run_plugin, host_ns, container_ns, tmp_path
) -> None:
    conf = bridge_conf(tmp_path, net="race")
    nss = [container_ns() for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(
                lambda i: run_plugin(
                    "bridge", "ADD", conf, netns=nss[i].path, container_id=f"r{i}", in_ns=host_ns
                ),
                range(8),
            )
        )
    assert all(r.rc == 0 for r in results), [r.stdout for r in results if r.rc]
    bridges = [
        x for x in host_ns.ip_json("link", "show", "type", "bridge") if x["ifname"] == "pytrace"
    ]
    assert len(bridges) == 1
    assert host_ns.run("nft", "list", "tables").count("table inet pycni\n") == 1


def _tags(host: Netns) -> set[str]:
    """Owner tags of every element of our tables (network/container/ifname)."""
    out = set()
    for item in host.nft_json().get("nftables", []):
        obj = item.get("set") or item.get("map")
        if not obj or obj.get("table") != "pycni" or obj.get("name", "").startswith("subnets"):
            continue
        for elem in obj.get("elem") or []:
            comment = elem.get("elem", {}).get("comment") if isinstance(elem, dict) else None
            if comment:
                out.add(comment)
    return out


def test_soak(run_plugin, host_ns, container_ns, tmp_path, state_dir) -> None:
    total_ops = int(os.environ.get("PYCNI_SOAK_OPS", "320"))
    rnd = random.Random(int(os.environ.get("PYCNI_SOAK_SEED", "1")))
    nets = {
        "sa": bridge_conf(tmp_path, net="sa", subnet="10.77.0.0/27"),
        "sb": bridge_conf(tmp_path, net="sb", subnet="10.77.1.0/27"),
        "sc": bridge_conf(tmp_path, net="sc", subnet="10.77.2.0/28"),  # small: exhaustion happens
    }
    pools = {name: [container_ns() for _ in range(10)] for name in nets}
    live: dict[tuple[str, int], dict[str, Any]] = {}
    port_of = {(n, i): 20000 + 100 * list(nets).index(n) + i for n in nets for i in range(10)}

    def chain_add(net: str, i: int) -> tuple[str, PluginRun]:
        ns = pools[net][i]
        res = run_plugin(
            "bridge", "ADD", nets[net], netns=ns.path, container_id=f"{net}c{i}", in_ns=host_ns
        )
        if res.rc != 0:
            return "add-failed", res
        pm = {
            "cniVersion": "1.1.0",
            "name": net,
            "type": "portmap",
            "runtimeConfig": {
                "portMappings": [{"hostPort": port_of[(net, i)], "containerPort": 80}]
            },
            "prevResult": res.json,
        }
        p = run_plugin(
            "portmap", "ADD", pm, netns=ns.path, container_id=f"{net}c{i}", in_ns=host_ns
        )
        if p.rc != 0:
            run_plugin(
                "bridge", "DEL", nets[net], netns=ns.path, container_id=f"{net}c{i}", in_ns=host_ns
            )
            return "portmap-failed", p
        return "added", res

    def chain_del(net: str, i: int) -> tuple[str, PluginRun]:
        ns = pools[net][i]
        pm = {"cniVersion": "1.1.0", "name": net, "type": "portmap"}
        p = run_plugin(
            "portmap", "DEL", pm, netns=ns.path, container_id=f"{net}c{i}", in_ns=host_ns
        )
        b = run_plugin(
            "bridge", "DEL", nets[net], netns=ns.path, container_id=f"{net}c{i}", in_ns=host_ns
        )
        return ("deleted" if p.rc == 0 and b.rc == 0 else "del-failed"), (b if b.rc else p)

    def chain_check(net: str, i: int) -> tuple[str, PluginRun]:
        ns = pools[net][i]
        conf = dict(nets[net], prevResult=live[(net, i)])
        res = run_plugin(
            "bridge", "CHECK", conf, netns=ns.path, container_id=f"{net}c{i}", in_ns=host_ns
        )
        return ("checked" if res.rc == 0 else "check-failed"), res

    done = 0
    counts: dict[str, int] = {}
    while done < total_ops:
        # one op per container per batch: CNI never runs two ops on one attachment at once
        keys = rnd.sample([(n, i) for n in nets for i in range(10)], 16)
        batch = []
        for key in keys:
            if key in live:
                batch.append((rnd.choice(["del", "check", "del"]), key))
            else:
                batch.append(("add", key))
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            futures = {
                pool.submit({"add": chain_add, "del": chain_del, "check": chain_check}[op], *key): (
                    op,
                    key,
                )
                for op, key in batch
            }
            for fut in concurrent.futures.as_completed(futures):
                op, key = futures[fut]
                outcome, res = fut.result()
                counts[outcome] = counts.get(outcome, 0) + 1
                if outcome == "added":
                    live[key] = res.json
                elif outcome == "deleted":
                    live.pop(key, None)
                elif outcome == "checked":
                    pass
                elif outcome == "add-failed":
                    assert res.error["code"] == 11 and key[0] == "sc", (
                        key,
                        res.stdout,
                    )  # only the small network runs out
                else:
                    raise AssertionError(f"{op} {key}: {outcome}: {res.stdout} {res.stderr}")
        done += len(batch)
        # invariants
        for net in nets:
            held = leases(tmp_path, net)
            owners = [v.split("\r\n")[0] for v in held.values()]
            assert len(owners) == len(set(owners)), (
                f"{net}: a container holds two addresses: {held}"
            )
            expected = {f"{net}c{i}" for (n, i) in live if n == net}
            assert set(owners) == expected, (net, sorted(owners), sorted(expected))
            addrs = [live[k]["ips"][0]["address"] for k in live if k[0] == net]
            assert len(addrs) == len(set(addrs)), f"{net}: an address is held twice: {addrs}"
        tags = _tags(host_ns)
        expected_tags = {f"{n}/{n}c{i}/eth0" for (n, i) in live}
        assert tags == expected_tags, (sorted(tags - expected_tags), sorted(expected_tags - tags))
        assert len(host_ns.ip_json("link", "show", "type", "veth")) == len(live)
    (tmp_path / "soak.json").write_text(json.dumps({"ops": done, "outcomes": counts}))
    print(f"soak: {done} operations: {counts}")
