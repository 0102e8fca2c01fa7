"""host-local, exec'd as a runtime does: real files in a tmp dataDir, the reference
plugin as interop peer, concurrency, a held lock, read-only and full file systems,
SIGKILL at each mutation point, bad input, GC and STATUS."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import REFERENCE_DIR, PluginRun, exec_plugin

pytestmark = pytest.mark.root

NET = "pytnet"


def conf(data_dir: Path, version: str = "1.0.0", name: str = NET, **ipam) -> dict:
    ipam.setdefault("ranges", [[{"subnet": "10.70.0.0/24"}]])
    return {
        "cniVersion": version,
        "name": name,
        "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": str(data_dir), **ipam},
    }


class HostLocal:
    """ADD/DEL/CHECK/GC/STATUS of our host-local (or the reference, ref=True)."""

    def __init__(self, run_plugin, run_reference, netns: str, data_dir: Path) -> None:
        self.run_plugin = run_plugin
        self.run_reference = run_reference
        self.netns = netns
        self.data_dir = data_dir

    def __call__(
        self, command: str, cfg: dict, cid: str = "", ref: bool = False, **kw
    ) -> PluginRun:
        runner = self.run_reference if ref else self.run_plugin
        if command in ("ADD", "CHECK"):
            kw.setdefault("netns", self.netns)
        return runner("host-local", command, cfg, container_id=cid, **kw)

    def add(self, cfg: dict, cid: str, **kw) -> dict:
        res = self("ADD", cfg, cid, **kw)
        assert res.rc == 0, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        return res.json

    def ok(self, command: str, cfg: dict, cid: str = "", **kw) -> None:
        res = self(command, cfg, cid, **kw)
        assert res.rc == 0 and res.stdout == "", res.stdout + res.stderr

    def net_dir(self, name: str = NET) -> Path:
        return self.data_dir / name

    def files(self, name: str = NET) -> dict[str, bytes]:
        d = self.net_dir(name)
        return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.exists() else {}

    def leases(self, name: str = NET) -> dict[str, bytes]:
        return {k: v for k, v in self.files(name).items() if k[0].isdigit() or ":" in k}


@pytest.fixture
def hl(run_plugin, run_reference, container_ns, tmp_path) -> HostLocal:
    return HostLocal(run_plugin, run_reference, container_ns().path, tmp_path / "data")


def addr(out: dict, n: int = 0) -> str:
    return out["ips"][n]["address"]


# -- results and files -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_result_per_version(hl: HostLocal, version: str) -> None:
    cfg = conf(hl.data_dir, version, routes=[{"dst": "0.0.0.0/0"}])
    out = hl.add(cfg, "c1")
    if version == "0.2.0":
        assert out == {
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.70.0.2/24", "gateway": "10.70.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
            "dns": {},
        }
        return
    ip = {"address": "10.70.0.2/24", "gateway": "10.70.0.1"}
    if version < "1.0.0":
        ip = {"version": "4", **ip}
    assert out == {
        "cniVersion": version,
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }
    assert "interface" not in out["ips"][0]


@pytest.mark.parametrize("version", ["0.2.0", "0.3.1", "0.4.0", "1.0.0"])
def test_result_equals_the_reference(hl: HostLocal, tmp_path, version: str) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.70.0.53\nsearch svc.example example\noptions ndots:2\n")
    ipam = {
        "ranges": [
            [{"subnet": "10.70.0.0/24", "rangeStart": "10.70.0.10", "gateway": "10.70.0.254"}],
            [{"subnet": "fd70::/64"}],
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.70.0.254"}],
        "resolvConf": str(resolv),
    }
    if version == "0.2.0":
        ipam["routes"] = [{"dst": "0.0.0.0/0"}]
    ours = hl.add(conf(tmp_path / "a", version, **ipam), "c1")
    theirs = hl.add(conf(tmp_path / "b", version, **ipam), "c1", ref=True)
    assert ours == theirs
    ours_files = (tmp_path / "a" / NET).iterdir()
    assert {p.name: p.read_bytes() for p in ours_files if p.name != "lock"} == {
        p.name: p.read_bytes() for p in (tmp_path / "b" / NET).iterdir() if p.name != "lock"
    }


def test_lease_file_bytes(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir, ranges=[[{"subnet": "10.70.0.0/24"}], [{"subnet": "fd70::/120"}]])
    hl.add(cfg, "cid-1", ifname="net1")
    assert hl.files() == {
        "10.70.0.2": b"cid-1\r\nnet1",
        "fd70::2": b"cid-1\r\nnet1",
        "last_reserved_ip.0": b"10.70.0.2",
        "last_reserved_ip.1": b"fd70::2",
        "lock": b"",
    }
    hl.ok("CHECK", cfg, "cid-1", ifname="net1")
    hl.ok("DEL", cfg, "cid-1", ifname="net1")
    assert set(hl.files()) == {"last_reserved_ip.0", "last_reserved_ip.1", "lock"}
    hl.ok("DEL", cfg, "cid-1", ifname="net1")  # idempotent


def test_round_robin_and_requested_ips(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir, ranges=[[{"subnet": "10.70.0.0/29"}]])
    assert addr(hl.add(cfg, "a")) == "10.70.0.2/29"
    assert addr(hl.add(cfg, "b")) == "10.70.0.3/29"
    hl.ok("DEL", cfg, "a")
    assert addr(hl.add(cfg, "c")) == "10.70.0.4/29"
    assert addr(hl.add(cfg, "d", args="IP=10.70.0.6")) == "10.70.0.6/29"
    assert addr(hl.add(cfg, "e")) == "10.70.0.2/29"  # after .6 wraps; .1 is the gateway
    assert addr(hl.add(cfg, "f")) == "10.70.0.5/29"
    res = hl("ADD", cfg, "g")
    assert res.error["code"] == 11
    assert res.error["msg"] == (
        "failed to allocate for range 0: no IP addresses available in range set: "
        "10.70.0.1-10.70.0.6"
    )
    assert hl.leases()["10.70.0.6"] == b"d\r\neth0"


def test_requested_ip_sources_and_conflicts(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir, ranges=[[{"subnet": "10.70.0.0/24"}], [{"subnet": "fd70::/64"}]])
    out = hl.add(
        dict(cfg, runtimeConfig={"ips": ["fd70::99/64"]}), "a", args="IgnoreUnknown=1;IP=10.70.0.99"
    )
    assert [i["address"] for i in out["ips"]] == ["10.70.0.99/24", "fd70::99/64"]
    out = hl.add(dict(cfg, args={"cni": {"ips": ["10.70.0.100"]}}), "b")
    assert [i["address"] for i in out["ips"]] == ["10.70.0.100/24", "fd70::9a/64"]
    taken = hl("ADD", cfg, "c", args="IP=10.70.0.99")
    assert taken.error["code"] == 11 and "10.70.0.99 is not available" in taken.error["msg"]
    gw = hl("ADD", cfg, "c", args="IP=10.70.0.1")
    assert gw.error["code"] == 7 and "gateway" in gw.error["msg"]
    outside = hl("ADD", cfg, "c", args="IP=10.99.0.1")
    assert outside.error == {
        "cniVersion": "1.0.0",
        "code": 7,
        "msg": "failed to allocate all requested IPs: 10.99.0.1",
        "details": outside.error["details"],
    }
    dup = hl("ADD", cfg, "a", args="IgnoreUnknown=1")
    assert dup.error["code"] == 7 and "duplicate allocation is not allowed" in dup.error["msg"]
    assert set(hl.leases()) == {"10.70.0.99", "fd70::99", "10.70.0.100", "fd70::9a"}


def test_kubelet_args_need_ignore_unknown(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir)
    k8s = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c1"
    res = hl("ADD", cfg, "c1", args=k8s)
    theirs = hl("ADD", cfg, "c1", args=k8s, ref=True)
    assert res.error["code"] == 4 and theirs.rc != 0
    assert "K8S_POD_NAME=web" in res.error["msg"]
    assert hl.leases() == {}
    hl.add(cfg, "c1", args=k8s + ";IgnoreUnknown=1")
    hl.ok("DEL", cfg, "c1", args=k8s + ";IgnoreUnknown=1")
    assert hl.leases() == {}


def test_check_needs_a_lease(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir)
    res = hl("CHECK", cfg, "nobody")
    assert res.error["msg"] == "host-local: Failed to find address added by container nobody"
    hl.add(cfg, "c1")
    hl.ok("CHECK", cfg, "c1")
    assert hl("CHECK", cfg, "c1", ifname="eth1").rc != 0


def test_del_of_an_unknown_network_creates_nothing(hl: HostLocal) -> None:
    hl.ok("DEL", conf(hl.data_dir), "c1")
    assert not hl.data_dir.exists()


# -- interop with the reference ----------------------------------------------------------


def test_reference_leases_released_by_ours_and_vice_versa(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir, ranges=[[{"subnet": "10.70.0.0/24"}], [{"subnet": "fd70::/64"}]])
    theirs = hl.add(cfg, "ref1", ref=True)
    ours = hl.add(cfg, "our1")
    assert addr(theirs) == "10.70.0.2/24" and addr(ours) == "10.70.0.3/24"  # shared round-robin
    assert addr(ours, 1) == "fd70::3/64"
    # each CHECKs the other's lease
    hl.ok("CHECK", cfg, "ref1")
    hl.ok("CHECK", cfg, "our1", ref=True)
    hl.ok("DEL", cfg, "ref1")
    assert set(hl.leases()) == {"10.70.0.3", "fd70::3"}
    hl.ok("DEL", cfg, "our1", ref=True)
    assert hl.leases() == {}
    assert set(hl.files()) == {"lock", "last_reserved_ip.0", "last_reserved_ip.1"}


def test_legacy_id_only_lease_release_and_check(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir)
    hl.net_dir().mkdir(parents=True)
    (hl.net_dir() / "10.70.0.9").write_bytes(b"old-container\n")
    hl.ok("CHECK", cfg, "old-container")
    dup = hl("ADD", cfg, "old-container")
    assert "duplicate allocation" in dup.error["msg"]
    hl.ok("DEL", cfg, "old-container")
    assert hl.leases() == {}


def test_alternating_allocations_never_collide(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir, ranges=[[{"subnet": "10.70.0.0/28"}]])
    seen = []
    for n in range(13):
        out = hl.add(cfg, f"c{n}", ref=n % 2 == 1)
        seen.append(addr(out))
    assert len(set(seen)) == 13  # .2 ... .14
    assert hl("ADD", cfg, "x").error["code"] == 11
    assert hl("ADD", cfg, "x", ref=True).rc != 0
    # release a few through the other implementation, re-fill alternately
    for n in (3, 4, 7):
        hl.ok("DEL", cfg, f"c{n}", ref=n % 2 == 0)
    again = {addr(hl.add(cfg, f"d{n}", ref=n == 1)) for n in range(3)}
    assert again == {seen[3], seen[4], seen[7]}
    contents = list(hl.leases().values())
    assert len(contents) == len(set(contents)) == 13


def test_our_index_follows_the_references_changes(hl: HostLocal) -> None:
    """Ours keeps an index in <dataDir>/.pycni-index.<net> (never inside the network's
    directory); every change the reference makes in between is seen: its leases count
    for the duplicate check and for allocation, its releases free the address."""
    cfg = conf(hl.data_dir, ranges=[[{"subnet": "10.70.0.0/28"}]])
    # Enough other leases (outside the range) that ours waits for an index newer than
    # the directory, the one it trusts (INDEX_WAIT_MIN), instead of reading them all.
    netdir = hl.data_dir / NET
    netdir.mkdir(parents=True)
    fillers = {f"10.71.0.{n}" for n in range(1, 81)}
    for name in fillers:
        (netdir / name).write_bytes(f"filler-{name}\r\neth0".encode())
    assert addr(hl.add(cfg, "o1")) == "10.70.0.2/28"
    assert addr(hl.add(cfg, "o2")) == "10.70.0.3/28"
    assert sorted(p.name for p in hl.data_dir.iterdir()) == [f".pycni-index.{NET}", NET]
    index = hl.data_dir / f".pycni-index.{NET}"
    assert index.stat().st_mtime_ns > netdir.stat().st_mtime_ns  # trusted by the next call
    assert addr(hl.add(cfg, "r1", ref=True)) == "10.70.0.4/28"
    dup = hl("ADD", cfg, "r1")
    assert "10.70.0.4 has been allocated to r1" in dup.error["msg"]
    assert addr(hl.add(cfg, "o3")) == "10.70.0.5/28"
    hl.ok("DEL", cfg, "o1", ref=True)  # the reference releases ours
    assert addr(hl.add(cfg, "o1")) == "10.70.0.6/28"  # not a duplicate any more
    hl.ok("DEL", cfg, "r1")  # ours releases the reference's
    assert addr(hl.add(cfg, "r1", ref=True)) == "10.70.0.7/28"
    dup = hl("ADD", cfg, "r1")
    assert "10.70.0.7 has been allocated to r1" in dup.error["msg"]
    for cid in ("o1", "o2", "o3", "r1"):
        hl.ok("DEL", cfg, cid)
    assert set(hl.files()) == {"lock", "last_reserved_ip.0"} | fillers


# -- concurrency -----------------------------------------------------------------------


def test_32_parallel_adds_then_dels(hl: HostLocal, plugin_dir) -> None:
    cfg = conf(hl.data_dir, ranges=[[{"subnet": "10.70.0.0/24"}], [{"subnet": "fd70::/64"}]])

    def run(command: str, n: int) -> PluginRun:
        return exec_plugin(
            plugin_dir / "host-local",
            command,
            cfg,
            netns=hl.netns,
            container_id=f"par{n}",
            cni_path=str(plugin_dir),
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda n: run("ADD", n), range(32)))
    assert all(r.rc == 0 for r in results), [r.stdout for r in results if r.rc]
    v4 = [addr(r.json, 0) for r in results]
    v6 = [addr(r.json, 1) for r in results]
    assert len(set(v4)) == len(set(v6)) == 32
    assert len(hl.leases()) == 64
    for r, n in zip(results, range(32), strict=True):
        ip4 = r.json["ips"][0]["address"].split("/")[0]
        assert hl.leases()[ip4] == f"par{n}\r\neth0".encode()
    with ThreadPoolExecutor(max_workers=32) as pool:
        dels = list(pool.map(lambda n: run("DEL", n), range(32)))
    assert all(r.rc == 0 for r in dels), [r.stdout for r in dels if r.rc]
    assert set(hl.files()) == {"lock", "last_reserved_ip.0", "last_reserved_ip.1"}


def test_parallel_ours_and_reference_share_the_lock(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir, ranges=[[{"subnet": "10.70.0.0/27"}]])
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda n: hl("ADD", cfg, f"m{n}", ref=n % 2 == 0), range(24)))
    assert all(r.rc == 0 for r in results), [r.stdout for r in results if r.rc]
    assert len({addr(r.json) for r in results}) == 24
    assert len(hl.leases()) == 24


def test_held_lock_gives_try_again_later(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir)
    hl.add(cfg, "first")
    fd = os.open(hl.net_dir() / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for command in ("ADD", "DEL"):
            res = hl(command, cfg, "second", env_extra={"PYCNI_IPAM_LOCK_TIMEOUT": "0.5"})
            err = res.error
            assert err["code"] == 11, err
            assert str(hl.net_dir() / "lock") in err["msg"] and "timed out after 0.5s" in err["msg"]
    finally:
        os.close(fd)
    assert set(hl.leases()) == {"10.70.0.2"}
    assert addr(hl.add(cfg, "second")) == "10.70.0.3/24"


# -- faults: SIGKILL at each mutation point, read-only and full file systems --------------


@pytest.mark.parametrize("point", ["ipam-temp-written", "ipam-lease-linked", "ipam-before-commit"])
def test_sigkill_leaves_no_partial_lease(hl: HostLocal, point: str) -> None:
    cfg = conf(hl.data_dir, ranges=[[{"subnet": "10.70.0.0/24"}], [{"subnet": "fd70::/64"}]])
    hl.add(cfg, "before")
    res = hl("ADD", cfg, "victim", env_extra={"PYCNI_FAULT": point})
    assert res.rc == -9
    for name, data in hl.leases().items():
        assert data in (b"before\r\neth0", b"victim\r\neth0"), (name, data)
    # the runtime DELs after a failed ADD; then everything of the victim is gone,
    # debris included, and the next ADD works
    hl.ok("DEL", cfg, "victim")
    assert set(hl.leases()) == {"10.70.0.2", "fd70::2"}
    hl.add(cfg, "after")
    assert not [n for n in hl.files() if n.startswith(".")]
    hl.ok("CHECK", cfg, "after")


def test_injected_failure_after_a_lease_rolls_back(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir, ranges=[[{"subnet": "10.70.0.0/24"}], [{"subnet": "fd70::/64"}]])
    res = hl("ADD", cfg, "v", env_extra={"PYCNI_FAULT": "fail:ipam-lease-linked"})
    assert "injected failure" in res.error["msg"]
    assert hl.files() == {"lock": b""}


WRAPPER = """#!/bin/sh
# Run the plugin in a private mount namespace after $PYT_SETUP; record with $PYT_POST.
exec unshare -m --propagation private /bin/sh -c '
  eval "$PYT_SETUP" </dev/null >/dev/null 2>&1 || exit 97
  "$PYT_PLUGIN"; rc=$?
  eval "$PYT_POST" </dev/null >/dev/null 2>&1
  exit $rc'
"""


def run_wrapped(
    tmp_path: Path, plugin: Path, command: str, cfg: dict, setup: str, post: str = "", **kw
) -> PluginRun:
    wrapper = tmp_path / "in-mount-ns.sh"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    env = {"PYT_SETUP": setup, "PYT_POST": post, "PYT_PLUGIN": str(plugin)}
    env.update(kw.pop("env_extra", {}))
    kw.setdefault("cni_path", str(plugin.parent))
    return exec_plugin(wrapper, command, cfg, env_extra=env, **kw)


@pytest.mark.parametrize("existing", [True, False])
def test_read_only_data_dir(hl: HostLocal, tmp_path, plugin_dir, existing: bool) -> None:
    cfg = conf(hl.data_dir)
    hl.data_dir.mkdir()
    if existing:
        hl.add(cfg, "c0")
    before = hl.files()
    ro = f"mount --bind {hl.data_dir} {hl.data_dir} && mount -o remount,bind,ro {hl.data_dir}"
    res = run_wrapped(
        tmp_path, plugin_dir / "host-local", "ADD", cfg, ro, netns=hl.netns, container_id="c1"
    )
    err = res.error
    assert err["code"] == 5, err
    assert "Read-only file system" in err["msg"] and str(hl.data_dir) in err["msg"]
    assert "read-only" in err["details"]
    assert hl.files() == before
    status = run_wrapped(
        tmp_path, plugin_dir / "host-local", "STATUS", dict(cfg, cniVersion="1.1.0"), ro
    )
    assert status.error["code"] == 50 and "read-only" in status.error["msg"]
    if existing:
        dele = run_wrapped(tmp_path, plugin_dir / "host-local", "DEL", cfg, ro, container_id="c0")
        assert dele.error["code"] == 5 and "cannot remove the lease" in dele.error["msg"]
        assert hl.files() == before


@pytest.mark.parametrize("full", ["blocks", "inodes"])
def test_full_file_system(hl: HostLocal, tmp_path, plugin_dir, full: str) -> None:
    cfg = conf(hl.data_dir)
    hl.data_dir.mkdir()
    listing = tmp_path / "listing.json"
    d = hl.data_dir
    mount = f"mount -t tmpfs -o size=64k,nr_inodes={4 if full == 'inodes' else 64} tmpfs {d}"
    prepare = f"{mount} && mkdir {d}/{NET} && : > {d}/{NET}/lock"
    if full == "blocks":
        prepare += f" && (dd if=/dev/zero of={d}/filler bs=4k count=64 || true)"
    else:
        prepare += f" && (for i in 1 2 3 4 5 6; do touch {d}/f$i || break; done; true)"
    post = (
        f"{sys.executable} -c 'import json,os,sys; d=sys.argv[1]; "
        f'json.dump({{n: open(os.path.join(d,n),"rb").read().decode() for n in os.listdir(d)}}, '
        f'open(sys.argv[2],"w"))\' {d}/{NET} {listing}'
    )
    res = run_wrapped(
        tmp_path,
        plugin_dir / "host-local",
        "ADD",
        cfg,
        prepare,
        post,
        netns=hl.netns,
        container_id="c1",
    )
    err = res.error
    assert err["code"] == 5, err
    assert "No space left on device" in err["msg"] and "full" in err["details"]
    assert json.loads(listing.read_text()) == {"lock": ""}


# -- bad input -------------------------------------------------------------------------

BAD = [
    ({"ranges": [[{"subnet": "10.70.0.0/31"}]]}, "ipam.ranges[0][0].subnet"),
    ({"ranges": [[{"subnet": "10.70.0.1/24"}]]}, "host bits set"),
    (
        {
            "ranges": [
                [{"subnet": "10.70.0.0/24", "rangeStart": "10.70.0.9", "rangeEnd": "10.70.0.3"}]
            ]
        },
        "rangeStart 10.70.0.9 is after rangeEnd",
    ),
    (
        {"ranges": [[{"subnet": "10.70.0.0/24", "rangeEnd": "10.71.0.3"}]]},
        "ipam.ranges[0][0].rangeEnd",
    ),
    ({"ranges": [[{"subnet": "10.70.0.0/24"}, {"subnet": "fd70::/64"}]]}, "mixes IPv4 and IPv6"),
    (
        {"ranges": [[{"subnet": "10.70.0.0/24"}], [{"subnet": "10.70.0.0/25"}]]},
        "range set 0 overlaps with 1",
    ),
    ({"ranges": [[{"subnet": "10.70.0.0/24"}, {"subnet": "10.70.0.0/24"}]]}, "overlap"),
    ({"ranges": []}, "no IP ranges specified"),
    ({"ranges": "10.70.0.0/24"}, "ipam: 'ranges' must be a list"),
    ({"ranges": [[{"subnet": ["10.70.0.0/24"]}]]}, "ipam.ranges[0][0]: 'subnet' must be a string"),
    ({"routes": [{"dst": "10.0.0.0"}]}, "ipam.routes[0].dst"),
    ({"dataDir": "data"}, "ipam.dataDir"),
    ({"resolvConf": "/nonexistent/resolv.conf"}, "ipam.resolvConf"),
]


@pytest.mark.parametrize(("ipam", "words"), BAD, ids=[w for _i, w in BAD])
def test_bad_config_code_7_and_no_files(hl: HostLocal, ipam: dict, words: str) -> None:
    cfg = conf(hl.data_dir, **ipam)
    err = hl("ADD", cfg, "c1").error
    assert err["code"] == 7, err
    assert words in err["msg"], err
    # DEL reads only what it needs (the network's name and dataDir): a DEL that fails
    # on the rest would be retried forever by the runtime, and nothing was allocated.
    if "dataDir" in ipam:
        assert hl("DEL", cfg, "c1").error["code"] == 7
    else:
        assert hl("DEL", cfg, "c1").rc == 0
    assert not hl.data_dir.exists()


def test_no_ipam_key_and_bad_args(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir)
    del cfg["ipam"]
    assert hl("ADD", cfg, "c1").error["msg"] == "IPAM config missing 'ipam' key"
    cfg = conf(hl.data_dir)
    assert hl("ADD", cfg, "c1", args="IP=10.70.0.300").error["code"] == 4
    assert hl("ADD", cfg, "c1", args="IP=10.70.0.3=4").error["code"] == 4
    assert hl("ADD", dict(cfg, runtimeConfig={"ips": ["nope"]}), "c1").error["code"] == 7
    assert hl("ADD", b"{", "c1").error["code"] == 6
    assert not hl.data_dir.exists()


# -- GC and STATUS ---------------------------------------------------------------------


def test_gc_releases_what_is_not_valid(hl: HostLocal) -> None:
    cfg = conf(
        hl.data_dir, "1.1.0", ranges=[[{"subnet": "10.70.0.0/24"}], [{"subnet": "fd70::/64"}]]
    )
    for cid, ifname in (("keep", "eth0"), ("keep", "eth1"), ("gone", "eth0")):
        hl.add(cfg, cid, ifname=ifname)
    hl.add(dict(cfg, cniVersion="1.0.0"), "ref", ref=True)  # a reference lease, valid
    (hl.net_dir() / "10.70.0.200").write_bytes(b"legacy-gone")
    (hl.net_dir() / "10.70.0.201").write_bytes(b"keep")
    valid = [{"containerID": "keep", "ifname": "eth0"}, {"containerID": "ref", "ifname": "eth0"}]
    hl.ok("GC", dict(cfg, **{"cni.dev/valid-attachments": valid}))
    assert sorted(hl.leases().values()) == sorted(
        [b"keep\r\neth0", b"keep\r\neth0", b"ref\r\neth0", b"ref\r\neth0", b"keep"]
    )
    assert {"lock", "last_reserved_ip.0", "last_reserved_ip.1"} <= set(hl.files())
    # the spec-1.1.0-tag spelling works too; no key at all releases nothing
    hl.ok("GC", cfg)
    assert len(hl.leases()) == 5
    hl.ok("GC", dict(cfg, **{"cni.dev/attachments": []}))
    assert hl.leases() == {}
    assert {"lock", "last_reserved_ip.0", "last_reserved_ip.1"} == set(hl.files())


def test_gc_bad_input(hl: HostLocal) -> None:
    cfg = conf(hl.data_dir, "1.1.0")
    res = hl("GC", dict(cfg, **{"cni.dev/valid-attachments": [{"containerID": "a"}]}))
    assert res.error["code"] == 7 and "cni.dev/valid-attachments[0]" in res.error["msg"]
    assert hl("GC", dict(cfg, cniVersion="1.0.0")).error["code"] == 1


def test_status(hl: HostLocal, tmp_path) -> None:
    hl.ok("STATUS", conf(hl.data_dir, "1.1.0"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = hl("STATUS", conf(blocker / "sub", "1.1.0"))
    assert res.error["code"] == 50 and "is not a directory" in res.error["msg"]


def test_reference_binary_is_the_peer() -> None:
    assert (REFERENCE_DIR / "host-local").exists()
    out = subprocess.run(
        [REFERENCE_DIR / "host-local"],
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        check=True,
    )
    assert "1.0.0" in json.loads(out.stdout)["supportedVersions"]


def test_in_process_verbs_use_cmd_args_not_environ(tmp_path, monkeypatch) -> None:
    """The bridge calls VERBS.add(cmd) in its own process: only `cmd` counts."""
    from pycni import skel
    from pycni.ipam import host_local

    monkeypatch.setenv("CNI_CONTAINERID", "from-environ")
    monkeypatch.setenv("CNI_IFNAME", "wrong0")
    monkeypatch.setenv("CNI_ARGS", "BOGUS=1")
    cfg = conf(tmp_path)
    cmd = skel.CmdArgs("ADD", "from-cmd", "/proc/self/ns/net", "eth3", "", "/x", conf=cfg)
    result = host_local.VERBS.add(cmd)
    assert [str(i.address) for i in result.ips] == ["10.70.0.2/24"]
    assert (tmp_path / NET / "10.70.0.2").read_bytes() == b"from-cmd\r\neth3"
    host_local.VERBS.delete(skel.CmdArgs("DEL", "from-cmd", "", "eth3", "", "/x", conf=cfg))
    assert not (tmp_path / NET / "10.70.0.2").exists()
