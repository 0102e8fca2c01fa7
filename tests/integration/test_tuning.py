"""tuning exec'd as a runtime does, in throwaway namespaces: every key set in the
container's namespace (read back from /proc/sys and netlink) and restored on DEL, CHECK,
every bad input refused with nothing changed, the allowlist (in a private mount
namespace, so the real /etc/cni is never written), and interop with the reference
tuning (Debian 1.1.1) in a bridge + tuning chain: its DEL restores our ADD and ours
restores its ADD, from the same backup file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns, PluginRun, exec_plugin, sh
from tests.integration.test_netctl_run import Netctl
from tests.integration.test_netctl_run import netctl as nc  # noqa: F401 (the fixture, as `nc`)

pytestmark = pytest.mark.root

CID = "tuningcid1"
SYSCTL_IF = "net.ipv4.conf.IFNAME.rp_filter"
SYSCTL_GLOBAL = "net.core.somaxconn"


def prev_result(c: Netns, ifname: str = "eth0") -> dict[str, Any]:
    link = c.link(ifname)
    assert link is not None
    return {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": ifname, "mac": link["address"], "sandbox": c.path}],
        "ips": [{"interface": 0, "address": "10.98.0.2/24"}],
        "dns": {},
    }


def veth_in(c: Netns, ifname: str = "eth0") -> None:
    """The interface a previous plugin would have made: a veth pair inside the container."""
    sh("ip", "-n", c.name, "link", "add", ifname, "type", "veth", "peer", "name", "pytpeer0")
    sh("ip", "-n", c.name, "link", "set", ifname, "up")


def tconf(tmp: Path, prev: dict[str, Any] | None, **keys: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "tunenet",
        "type": "tuning",
        "dataDir": str(tmp / "tuning"),
    }
    if prev is not None:
        conf["prevResult"] = prev
    conf.update(keys)
    return conf


def state(c: Netns, ifname: str = "eth0", sysctls: tuple[str, ...] = ()) -> dict[str, Any]:
    """What tuning may change: the link's attributes and the named sysctls."""
    link = c.link(ifname)
    assert link is not None
    out = {
        "mac": link["address"],
        "mtu": link["mtu"],
        "promisc": "PROMISC" in link["flags"],
        "allmulti": "ALLMULTI" in link["flags"],
        "txqlen": link.get("txqlen"),
    }
    for key in sysctls:
        out[key] = c.sysctl(key.replace("IFNAME", ifname))
    return out


def backups(tmp: Path) -> list[str]:
    d = tmp / "tuning"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


ALL_KEYS = {
    "mac": "02:aa:bb:cc:dd:01",
    "mtu": 1280,
    "promisc": True,
    "allmulti": True,
    "txQLen": 77,
    "sysctl": {SYSCTL_IF: "2", SYSCTL_GLOBAL: "777"},
}


def test_every_key_set_in_the_namespace_checked_and_restored(
    run_plugin, host_ns, container_ns, tmp_path
):
    c = container_ns()
    veth_in(c)
    before = state(c, sysctls=(SYSCTL_IF, SYSCTL_GLOBAL))
    host_before = (
        host_ns.sysctl("net.core.somaxconn"),
        host_ns.sysctl("net.ipv4.conf.all.rp_filter"),
    )
    prev = prev_result(c)
    conf = tconf(tmp_path, prev, **ALL_KEYS)
    r = run_plugin("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns)
    assert r.rc == 0, r.stdout + r.stderr
    # prevResult passed through, with the new MAC in the interface entry
    want = json.loads(json.dumps(prev))
    want["interfaces"][0]["mac"] = "02:aa:bb:cc:dd:01"
    assert r.json == want
    after = state(c, sysctls=(SYSCTL_IF, SYSCTL_GLOBAL))
    assert after == {
        "mac": "02:aa:bb:cc:dd:01",
        "mtu": 1280,
        "promisc": True,
        "allmulti": True,
        "txqlen": 77,
        SYSCTL_IF: "2",
        SYSCTL_GLOBAL: "777",
    }
    # only inside the container's namespace
    assert (
        host_ns.sysctl("net.core.somaxconn"),
        host_ns.sysctl("net.ipv4.conf.all.rp_filter"),
    ) == host_before
    # the reference's backup file, name and format
    assert backups(tmp_path) == [f"{CID}_eth0.json"]
    saved = (tmp_path / "tuning" / f"{CID}_eth0.json").read_text()
    assert saved.startswith('{\n "mac": "' + before["mac"] + '",\n "promisc": false,\n "mtu": ')
    assert json.loads(saved)["sysctl"] == {
        SYSCTL_IF: before[SYSCTL_IF],
        SYSCTL_GLOBAL: before[SYSCTL_GLOBAL],
    }
    assert stat.S_IMODE(os.stat(tmp_path / "tuning" / f"{CID}_eth0.json").st_mode) == 0o600

    check = run_plugin("tuning", "CHECK", conf, netns=c.path, container_id=CID, in_ns=host_ns)
    assert check.rc == 0, check.stdout
    d = run_plugin("tuning", "DEL", conf, netns=c.path, container_id=CID, in_ns=host_ns)
    assert d.rc == 0, d.stdout
    assert state(c, sysctls=(SYSCTL_IF, SYSCTL_GLOBAL)) == before
    assert backups(tmp_path) == []
    again = run_plugin("tuning", "DEL", conf, netns=c.path, container_id=CID, in_ns=host_ns)
    assert again.rc == 0 and again.stdout == ""


def test_mac_from_runtime_config_cni_args_and_args_cni(run_plugin, host_ns, container_ns, tmp_path):
    c = container_ns()
    veth_in(c)
    prev = prev_result(c)

    def add(conf: dict[str, Any], args: str = "") -> PluginRun:
        r = run_plugin(
            "tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns, args=args
        )
        assert r.rc == 0, r.stdout
        return r

    # capability mac (runtimeConfig) beats CNI_ARGS MAC, which beats the mac key
    conf = tconf(
        tmp_path,
        prev,
        mac="02:00:00:00:00:01",
        capabilities={"mac": True},
        runtimeConfig={"mac": "02:00:00:00:00:03"},
    )
    r = add(conf, "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=02:00:00:00:00:02")
    assert c.link("eth0")["address"] == "02:00:00:00:00:03"
    assert r.json["interfaces"][0]["mac"] == "02:00:00:00:00:03"
    r = add(tconf(tmp_path, prev, mac="02:00:00:00:00:01"), "MAC=02-00-00-00-00-0A")
    assert c.link("eth0")["address"] == "02:00:00:00:00:0a"
    # args.cni overrides every key, and its sysctls join the config's
    conf = tconf(
        tmp_path,
        prev,
        mac="02:00:00:00:00:01",
        mtu=1400,
        runtimeConfig={"mac": "02:00:00:00:00:03"},
        sysctl={SYSCTL_GLOBAL: "300"},
        args={
            "cni": {
                "mac": "02:00:00:00:00:04",
                "mtu": 1300,
                "promisc": True,
                "allmulti": True,
                "txQLen": 5,
                "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "1"},
            }
        },
    )
    add(conf)
    assert state(c, sysctls=(SYSCTL_GLOBAL, "net.ipv4.conf.eth0.arp_ignore")) == {
        "mac": "02:00:00:00:00:04",
        "mtu": 1300,
        "promisc": True,
        "allmulti": True,
        "txqlen": 5,
        SYSCTL_GLOBAL: "300",
        "net.ipv4.conf.eth0.arp_ignore": "1",
    }
    # the first ADD's originals are kept across repeated ADDs: DEL restores the real ones
    d = run_plugin("tuning", "DEL", conf, netns=c.path, container_id=CID, in_ns=host_ns)
    assert d.rc == 0
    assert c.link("eth0")["address"] == prev["interfaces"][0]["mac"]
    assert c.link("eth0")["mtu"] == 1500
    assert c.sysctl("net.ipv4.conf.eth0.arp_ignore") == "0"


def test_ifname_with_dots_and_write_only_sysctl(run_plugin, host_ns, container_ns, tmp_path):
    c = container_ns()
    veth_in(c, "eth0.5")
    conf = tconf(
        tmp_path,
        prev_result(c, "eth0.5"),
        sysctl={"net.ipv4.conf.IFNAME.arp_ignore": "2", "net.ipv4.route.flush": "1"},
    )
    r = run_plugin(
        "tuning", "ADD", conf, netns=c.path, container_id=CID, ifname="eth0.5", in_ns=host_ns
    )
    assert r.rc == 0, r.stdout
    assert c.run("cat", "/proc/sys/net/ipv4/conf/eth0.5/arp_ignore").strip() == "2"
    d = run_plugin(
        "tuning", "DEL", conf, netns=c.path, container_id=CID, ifname="eth0.5", in_ns=host_ns
    )
    assert d.rc == 0
    assert c.run("cat", "/proc/sys/net/ipv4/conf/eth0.5/arp_ignore").strip() == "0"


def test_check_finds_each_drift(run_plugin, run_reference, host_ns, container_ns, tmp_path):
    c = container_ns()
    veth_in(c)
    prev = prev_result(c)
    # 1.1.1 has no txQLen, and its CHECK does not substitute IFNAME (fixed later)
    keys = {k: v for k, v in ALL_KEYS.items() if k not in ("txQLen", "sysctl")}
    conf = tconf(tmp_path, prev, **keys, sysctl={"net.ipv4.conf.eth0.rp_filter": "2"})
    assert run_plugin("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0

    def both(cf: dict[str, Any]) -> tuple[int, int]:
        ours = run_plugin("tuning", "CHECK", cf, netns=c.path, container_id=CID, in_ns=host_ns)
        ref = run_reference("tuning", "CHECK", cf, netns=c.path, container_id=CID, in_ns=host_ns)
        if ours.rc:
            assert ours.error["msg"]
        return ours.rc, ref.rc

    assert both(conf) == (0, 0)
    drifts = [
        (
            ["link", "set", "eth0", "address", "02:aa:bb:cc:dd:02"],
            ["link", "set", "eth0", "address", "02:aa:bb:cc:dd:01"],
        ),
        (["link", "set", "eth0", "mtu", "1300"], ["link", "set", "eth0", "mtu", "1280"]),
        (["link", "set", "eth0", "promisc", "off"], ["link", "set", "eth0", "promisc", "on"]),
        (
            ["link", "set", "eth0", "allmulticast", "off"],
            ["link", "set", "eth0", "allmulticast", "on"],
        ),
    ]
    for change, back in drifts:
        sh("ip", "-n", c.name, *change)
        assert both(conf) != (0, 0) and both(conf)[0] != 0, change
        sh("ip", "-n", c.name, *back)
        assert both(conf) == (0, 0)
    c.run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/rp_filter")
    assert both(conf) == (1, 1)
    c.run("sh", "-c", "echo 2 > /proc/sys/net/ipv4/conf/eth0/rp_filter")
    # txQLen (newer than 1.1.1): ours only
    conf_q = tconf(tmp_path, prev, txQLen=1000)
    assert (
        run_plugin("tuning", "CHECK", conf_q, netns=c.path, container_id=CID, in_ns=host_ns).rc == 1
    )
    sh("ip", "-n", c.name, "link", "set", "eth0", "promisc", "off")
    assert (
        run_plugin("tuning", "CHECK", conf_q, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
    )
    # promisc not configured means "must be off", as the reference
    sh("ip", "-n", c.name, "link", "set", "eth0", "promisc", "on")
    assert both(tconf(tmp_path, prev)) == (1, 1)
    # no prevResult, no interface
    assert (
        run_plugin(
            "tuning", "CHECK", tconf(tmp_path, None), netns=c.path, container_id=CID, in_ns=host_ns
        ).error["code"]
        == 7
    )
    missing = run_plugin(
        "tuning", "CHECK", conf, netns=c.path, container_id=CID, ifname="eth9", in_ns=host_ns
    )
    assert missing.rc == 1


BAD = [
    ("sysctl", "net.ipv4.ip_forward=1", 7),
    ("sysctl", {"net.ipv4.ip_forward": 1}, 7),
    ("sysctl", {"net.ipv4.ip_forward": None}, 7),
    ("sysctl", {"kernel.hostname": "x"}, 7),
    ("sysctl", {"fs.file-max": "1"}, 7),
    ("sysctl", {"net": "1"}, 7),
    ("sysctl", {"net.ipv4": "1"}, 7),
    ("sysctl", {"net..ipv4.ip_forward": "1"}, 7),
    ("sysctl", {"net.ipv4.conf.eth0..rp_filter": "1"}, 7),
    ("sysctl", {"net/ipv4/ip_forward": "1"}, 7),
    ("sysctl", {"net.ipv4.conf.eth0/../../../kernel.hostname": "x"}, 7),
    ("sysctl", {"net.ipv4.ip_forward\n": "1"}, 7),
    ("sysctl", {"net.ipv4.nosuchkey": "1"}, 7),
    ("sysctl", {"net.ipv4.conf": "1"}, 7),
    ("sysctl", {"net.ipv4.conf.eth0.rp_filter": "2", "net.ipv4.ip_forward": "abc"}, 7),
    ("mac", 1234, 7),
    ("mac", "02:00:00:00:00", 7),
    ("mac", "zz:00:00:00:00:01", 7),
    ("mac", "01:00:5e:00:00:01", 7),
    ("mac", "00:00:00:00:00:00", 7),
    ("mac", "02:00:00:00:00:01:02:03", 7),
    ("mtu", "1400", 7),
    ("mtu", -1, 7),
    ("mtu", 1.5, 7),
    ("mtu", 67, 7),
    ("mtu", 70000, 7),
    ("mtu", 2**40, 7),
    ("promisc", "yes", 7),
    ("promisc", 1, 7),
    ("allmulti", "true", 7),
    ("txQLen", -1, 7),
    ("txQLen", "5", 7),
    ("txQLen", 2**32, 7),
    ("dataDir", 5, 7),
    ("runtimeConfig", {"mac": "nonsense"}, 7),
    ("runtimeConfig", {"mac": 5}, 7),
    ("args", {"cni": {"mtu": "big"}}, 7),
    ("args", {"cni": {"sysctl": {"kernel.panic": "1"}}}, 7),
    ("args", {"cni": "x"}, 7),
]


@pytest.mark.parametrize(("key", "value", "code"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_input_refused_and_nothing_changed(
    run_plugin, run_reference, host_ns, container_ns, tmp_path, key, value, code
):
    c = container_ns()
    veth_in(c)
    watched = (SYSCTL_IF, "net.ipv4.ip_forward")
    before = state(c, sysctls=watched)
    # every other key set too, so a partial apply would show
    conf = tconf(
        tmp_path, prev_result(c), mtu=1400, mac="02:00:00:00:00:09", sysctl={SYSCTL_IF: "2"}
    )
    conf[key] = value
    r = run_plugin("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns)
    err = r.error
    assert err["code"] == code, err
    assert state(c, sysctls=watched) == before
    assert backups(tmp_path) == []


def test_bad_cni_args_env_and_missing_things(run_plugin, host_ns, container_ns, tmp_path):
    c = container_ns()
    veth_in(c)
    before = state(c)
    conf = tconf(tmp_path, prev_result(c), mtu=1400)

    def run(cf: Any, **kw: Any) -> PluginRun:
        kw = {"netns": c.path, "container_id": CID, **kw}
        return run_plugin("tuning", "ADD", cf, in_ns=host_ns, **kw)

    assert run(conf, args="MAC=nonsense").error["code"] == 7
    assert run(conf, args="K8S_POD_NAME=x").error["code"] == 4  # unknown arg without IgnoreUnknown
    assert run(conf, args="MAC").error["code"] == 4
    missing = run(conf, ifname="eth9").error
    assert missing["code"] == 7 and "eth9" in missing["msg"]
    assert (
        run(
            tconf(tmp_path, prev_result(c), sysctl={"net.ipv4.conf.IFNAME.rp_filter": "1"}),
            ifname="eth9",
        ).error["code"]
        == 7
    )
    assert run(conf, netns="/var/run/netns/pytnosuchns").error["code"] == 3
    assert run(conf, netns="/tmp").error["code"] == 4
    assert run(tconf(tmp_path, None, mtu=1400)).error["code"] == 7  # no prevResult
    dup = json.dumps(tconf(tmp_path, prev_result(c), sysctl={"net.core.somaxconn": "1"}))
    dup = dup.replace('"1"}', '"1", "net.core.somaxconn": "2"}')  # a repeated key
    assert run(dup).error["code"] == 7
    assert run("{not json").error["code"] == 6
    assert state(c) == before
    assert backups(tmp_path) == []


def test_del_without_netns_or_interface_removes_the_backup(
    run_plugin, host_ns, container_ns, tmp_path
):
    c = container_ns()
    veth_in(c)
    conf = tconf(tmp_path, prev_result(c), mtu=1400)
    assert run_plugin("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
    sh("ip", "-n", c.name, "link", "del", "eth0")
    assert run_plugin("tuning", "DEL", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
    assert backups(tmp_path) == []
    veth_in(c)
    assert run_plugin("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
    gone = run_plugin(
        "tuning", "DEL", conf, netns="/var/run/netns/pytgone", container_id=CID, in_ns=host_ns
    )
    assert gone.rc == 0
    assert backups(tmp_path) == []
    # a config ADD would refuse still cleans up on DEL
    sh("ip", "-n", c.name, "link", "set", "eth0", "mtu", "1500")
    assert run_plugin("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
    bad = dict(conf, mtu="huge", sysctl={"kernel.x": 1})
    assert run_plugin("tuning", "DEL", bad, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
    assert c.link("eth0")["mtu"] == 1500 and backups(tmp_path) == []


# -- the allowlist, in a private mount namespace ----------------------------------------


def with_allowlist(tmp: Path, plugin: Path, allowlist: str | None) -> Path:
    """A wrapper executable that runs `plugin` with /etc overlaid (in a private mount
    namespace) so that /etc/cni/tuning/allowlist.conf holds `allowlist` (a directory
    when None: unreadable). The real /etc is never written."""
    d = tmp / f"allow{len(list(tmp.glob('allow*')))}"
    (d / "upper/cni/tuning").mkdir(parents=True)
    (d / "work").mkdir()
    target = d / "upper/cni/tuning/allowlist.conf"
    if allowlist is None:
        target.mkdir()
    else:
        target.write_text(allowlist)
    wrapper = d / "tuning"
    wrapper.write_text(
        "#!/bin/sh\n"
        "exec unshare -m --propagation private sh -c "
        f"'mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/upper,workdir={d}/work /etc "
        f"&& exec {plugin}'\n"
    )
    wrapper.chmod(0o755)
    return wrapper


def test_allowlist_honoured(plugin_dir, host_ns, container_ns, tmp_path):
    """Upstream semantics (v1.2.0 and later; Debian's 1.1.1 predates the allowlist and
    ignores the file): unanchored regexes on the key as written, one per line."""
    c = container_ns()
    veth_in(c)
    prev = prev_result(c)
    allow = "^net\\.ipv4\\.conf\\.IFNAME\\.\n\n   net\\.core\\.somaxconn$  \n"
    exe = with_allowlist(tmp_path, plugin_dir / "tuning", allow)

    def run(cf: dict[str, Any]) -> PluginRun:
        return exec_plugin(
            exe, "ADD", cf, netns=c.path, container_id=CID, in_ns=host_ns, cni_path="/x"
        )

    # a new namespace inherits ip_forward from the node's (devconf_inherit_init_net=0):
    # start from 0, so that a refused config setting it would show
    c.run("sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
    forward_before = c.sysctl("net.ipv4.ip_forward")
    ok = run(tconf(tmp_path, prev, sysctl={SYSCTL_IF: "1", SYSCTL_GLOBAL: "555"}))
    assert ok.rc == 0, ok.stdout
    assert c.sysctl("net.ipv4.conf.eth0.rp_filter") == "1"
    assert c.sysctl(SYSCTL_GLOBAL) == "555"
    c.run("sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/eth0/rp_filter")
    refused = run(tconf(tmp_path, prev, sysctl={SYSCTL_IF: "2", "net.ipv4.ip_forward": "1"}))
    err = refused.error
    assert err["code"] == 7 and "net.ipv4.ip_forward" in err["msg"], err
    # the literal name does not match the IFNAME pattern: refused
    assert run(tconf(tmp_path, prev, sysctl={"net.ipv4.conf.eth0.rp_filter": "2"})).rc == 1
    assert c.sysctl("net.ipv4.conf.eth0.rp_filter") == "0"
    assert c.sysctl("net.ipv4.ip_forward") == forward_before
    assert backups(tmp_path) == [f"{CID}_eth0.json"]  # the first ADD's, untouched
    # a config without sysctls never reads it
    assert run(tconf(tmp_path, prev, mtu=1400)).rc == 0
    # the real /etc was not touched
    assert not Path("/etc/cni/tuning").exists()


def test_unreadable_or_invalid_allowlist(plugin_dir, host_ns, container_ns, tmp_path):
    c = container_ns()
    veth_in(c)
    prev = prev_result(c)
    ours = with_allowlist(tmp_path, plugin_dir / "tuning", None)
    with_sysctl = tconf(tmp_path, prev, sysctl={SYSCTL_GLOBAL: "555"})
    err = exec_plugin(
        ours, "ADD", with_sysctl, netns=c.path, container_id=CID, in_ns=host_ns, cni_path="/x"
    ).error
    assert err["code"] == 5 and "allowlist" in err["msg"], err
    assert c.sysctl(SYSCTL_GLOBAL) != "555"
    # without sysctls the chain goes on (upstream fails here too: it reads the file anyway)
    plain = tconf(tmp_path, prev, mtu=1400)
    assert (
        exec_plugin(
            ours, "ADD", plain, netns=c.path, container_id=CID, in_ns=host_ns, cni_path="/x"
        ).rc
        == 0
    )
    assert c.link("eth0")["mtu"] == 1400
    bad_regex = with_allowlist(tmp_path, plugin_dir / "tuning", "net\\.core\\.(\n")
    err = exec_plugin(
        bad_regex, "ADD", with_sysctl, netns=c.path, container_id=CID, in_ns=host_ns, cni_path="/x"
    ).error
    assert err["code"] == 7 and "regular expression" in err["msg"]
    assert c.sysctl(SYSCTL_GLOBAL) != "555"


# -- interop with the reference in a bridge + tuning chain ------------------------------


def bridge_add(run, host: Netns, c: Netns, tmp: Path) -> dict[str, Any]:
    r = run("bridge", "ADD", bridge_conf(tmp), netns=c.path, container_id=CID, in_ns=host)
    assert r.rc == 0, r.stdout
    return r.json


LINK_KEYS = {"mac": "02:aa:bb:cc:dd:07", "mtu": 1300, "promisc": True, "allmulti": True}


@pytest.mark.parametrize("adder", ["ours", "reference"])
def test_cross_del_with_the_reference(
    run_plugin, run_reference, host_ns, container_ns, tmp_path, adder
):
    """The tuning that adds runs after the other side's bridge; the other side's
    tuning DEL restores from the same file."""
    c = container_ns()
    add, delete = (run_plugin, run_reference) if adder == "ours" else (run_reference, run_plugin)
    prev = bridge_add(delete, host_ns, c, tmp_path)
    before = state(c)
    conf = tconf(tmp_path, prev, **LINK_KEYS, sysctl={SYSCTL_IF: "2"})
    r = add("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns)
    assert r.rc == 0, r.stdout
    assert r.json["interfaces"][2]["mac"] == "02:aa:bb:cc:dd:07"
    assert state(c) == dict(before, mac="02:aa:bb:cc:dd:07", mtu=1300, promisc=True, allmulti=True)
    assert backups(tmp_path) == [f"{CID}_eth0.json"]
    d = delete("tuning", "DEL", conf, netns=c.path, container_id=CID, in_ns=host_ns)
    assert d.rc == 0, d.stdout
    assert state(c) == before
    assert backups(tmp_path) == []
    b = delete(
        "bridge", "DEL", bridge_conf(tmp_path), netns=c.path, container_id=CID, in_ns=host_ns
    )
    assert b.rc == 0 and c.link("eth0") is None


def bridge_conf(tmp: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "tunenet",
        "type": "bridge",
        "bridge": "pyttun0",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.97.0.0/24"}]],
            "dataDir": str(tmp / "ipam"),
        },
    }


def test_backup_file_is_byte_identical_to_the_reference(
    run_plugin, run_reference, host_ns, container_ns, tmp_path
):
    c = container_ns()
    prev = bridge_add(run_plugin, host_ns, c, tmp_path)
    path = tmp_path / "tuning" / f"{CID}_eth0.json"
    for keys in (
        LINK_KEYS,
        {"mtu": 1400},
        {"promisc": True},
        {"allmulti": False},
        {"mac": "02:aa:bb:cc:dd:08"},
    ):
        conf = tconf(tmp_path, prev, **keys)
        assert (
            run_reference("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc
            == 0
        )
        theirs = path.read_bytes()
        assert (
            run_reference("tuning", "DEL", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc
            == 0
        )
        assert (
            run_plugin("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
        )
        assert path.read_bytes() == theirs, keys
        assert (
            run_plugin("tuning", "DEL", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
        )
    # sysctl only: the reference saves nothing; our extra file is one the reference
    # DEL reads and removes
    conf = tconf(tmp_path, prev, sysctl={SYSCTL_IF: "2"})
    assert run_plugin("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
    assert (
        run_reference("tuning", "DEL", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
    )
    assert backups(tmp_path) == []


# -- netctl run --sysctl (Docker's per-container network sysctls) -----------------------


def tuning_backups(netctl: Netctl) -> list[str]:
    d = netctl.root / "run/netctl/tuning"
    return sorted(os.listdir(d)) if d.exists() else []


def test_netctl_run_sysctl(nc: Netctl) -> None:  # noqa: F811
    netctl = nc
    node_before = netctl.node.sysctl("net.core.somaxconn")
    out = netctl(
        "run",
        "--rm",
        "--sysctl",
        "net.ipv4.conf.eth0.arp_ignore=2",
        "--sysctl",
        "net.ipv4.conf.IFNAME.arp_announce=1",
        "--sysctl",
        "net.core.somaxconn=555",
        "--",
        "cat",
        "/proc/sys/net/ipv4/conf/eth0/arp_ignore",
        "/proc/sys/net/ipv4/conf/eth0/arp_announce",
        "/proc/sys/net/core/somaxconn",
    ).stdout
    assert out.split() == ["2", "1", "555"]
    assert netctl.node.sysctl("net.core.somaxconn") == node_before
    assert tuning_backups(netctl) == [] and netctl.netns_files() == [] and netctl.veths() == []
    out = netctl(
        "run", "--rm", "--network", "none", "--sysctl", "net.ipv4.ip_forward=1", "--",
        "cat", "/proc/sys/net/ipv4/ip_forward",
    ).stdout  # fmt: skip
    assert out.strip() == "1"
    # detached: the saved originals live until the container is removed
    netctl(
        "run",
        "-d",
        "--name",
        "tuned",
        "--sysctl",
        "net.ipv4.conf.eth0.arp_ignore=1",
        "--",
        "sleep",
        "30",
    )
    assert len(tuning_backups(netctl)) == 1
    assert (
        netctl("exec", "tuned", "cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore").stdout.strip()
        == "1"
    )
    netctl("rm", "-f", "tuned")
    assert tuning_backups(netctl) == [] and netctl.netns_files() == [] and netctl.veths() == []
    assert netctl.leases() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sysctl", "kernel.panic=1"], "only net.* sysctls are supported"),
        (["--sysctl", "net.ipv4.ip_forward"], "expected KEY=VALUE"),
        (["--sysctl", "net/ipv4/ip_forward=1"], "only net.* sysctls"),
        (
            ["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
            "not allowed in host network namespace",
        ),
        (["--sysctl", "net.ipv4.nosuch.key=1"], "no sysctl net.ipv4.nosuch.key"),
        (["--sysctl", "net.ipv4.ip_forward=abc"], "the kernel refused net.ipv4.ip_forward"),
    ],
)
def test_netctl_run_bad_sysctl(nc: Netctl, args: list[str], message: str) -> None:  # noqa: F811
    netctl = nc
    proc = netctl("run", "--rm", *args, "--", "true", check=False)
    assert proc.returncode == 125, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert netctl.netns_files() == [] and netctl.veths() == [] and netctl.leases() == []
    assert tuning_backups(netctl) == []


def test_versions_gc_and_status(run_plugin, host_ns, container_ns, tmp_path):
    c = container_ns()
    veth_in(c)
    prev = dict(prev_result(c), cniVersion="0.3.1")
    conf = tconf(tmp_path, prev, mac="02:00:00:00:00:31", cniVersion="0.3.1")
    r = run_plugin("tuning", "ADD", conf, netns=c.path, container_id=CID, in_ns=host_ns)
    assert r.rc == 0, r.stdout
    assert r.json["cniVersion"] == "0.3.1"
    assert r.json["interfaces"][0]["mac"] == "02:00:00:00:00:31"
    # GC and STATUS have nothing to do: the backup stays for DEL
    gc = dict(tconf(tmp_path, None, cniVersion="1.1.0"), **{"cni.dev/valid-attachments": []})
    assert run_plugin("tuning", "GC", gc, in_ns=host_ns).rc == 0
    assert run_plugin("tuning", "STATUS", tconf(tmp_path, None, cniVersion="1.1.0")).rc == 0
    assert backups(tmp_path) == [f"{CID}_eth0.json"]
    assert run_plugin("tuning", "DEL", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
    assert c.link("eth0")["address"] == prev["interfaces"][0]["mac"]


WATCHED = (SYSCTL_IF, SYSCTL_GLOBAL)


@pytest.mark.parametrize(
    ("fault", "rc"), [("fail:after-sysctls", 1), ("fail:after-link", 1), ("after-sysctls", -9)]
)
def test_fault_at_each_step(run_plugin, host_ns, container_ns, tmp_path, fault, rc):
    """An injected failure undoes everything; a kill leaves the backup (written before
    anything changed), from which DEL restores."""
    c = container_ns()
    veth_in(c)
    before = state(c, sysctls=WATCHED)
    conf = tconf(tmp_path, prev_result(c), **ALL_KEYS)

    def add(cf: dict[str, Any], spec: str = "") -> PluginRun:
        env = {"PYCNI_FAULT": spec} if spec else {}
        kw = {"netns": c.path, "container_id": CID, "in_ns": host_ns, "env_extra": env}
        return run_plugin("tuning", "ADD", cf, **kw)

    r = add(conf, fault)
    assert r.rc == rc
    if rc == 1:
        assert r.error["msg"].startswith("injected failure")
        assert state(c, sysctls=WATCHED) == before
        assert backups(tmp_path) == []
        # a failed second ADD keeps the first ADD's originals for its DEL
        assert add(conf).rc == 0
        assert add(dict(conf, mtu=1300), fault).rc == 1
        assert c.link("eth0")["mtu"] == 1280
    else:
        assert r.stdout == ""
        assert c.sysctl(SYSCTL_GLOBAL) == "777"  # half done: sysctls written, link untouched
        assert backups(tmp_path) == [f"{CID}_eth0.json"]
    assert run_plugin("tuning", "DEL", conf, netns=c.path, container_id=CID, in_ns=host_ns).rc == 0
    assert state(c, sysctls=WATCHED) == before
    assert backups(tmp_path) == []
