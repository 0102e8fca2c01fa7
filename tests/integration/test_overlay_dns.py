"""Names across the hosts of an overlay network: a container's names are put in etcd
under its host's lease by that host's agent, every other member's agent mirrors them,
and netctl's resolver there answers them (A and PTR, NAME and NAME.NETWORK) to
containers on the same overlay only. Real 3-member etcd, hosts as namespaces, queries
sent from inside the containers' namespaces to their 127.0.0.11."""

# ruff: noqa: F811  (the fixtures shared with test_overlay.py are imported by name)
from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pycni import netns
from tests.conftest import Netns, exec_plugin, short_id
from tests.integration.test_overlay import (  # noqa: F401
    TTL,
    cluster,
    hosts,
    overlay_conf,
    underlay,
    wait_for,
)
from tests.overlay_kit import EtcdCluster, Host, netctl, put_network, write_daemon_json

pytestmark = pytest.mark.root

SLEEP = ["python3", "-c", "import time; time.sleep(600)"]


def ask(netns_path: str, name: str, rtype: str = "A") -> tuple[str, list[str]]:
    """(rcode, answers) of one UDP query to 127.0.0.11 from inside `netns_path`."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    box: dict[str, Any] = {}

    def query() -> None:
        fd = netns.open_netns(netns_path)
        try:
            with netns.entered(fd):
                r = dns.query.udp(dns.message.make_query(name, rtype), "127.0.0.11", timeout=2)
            box["out"] = (
                dns.rcode.to_text(r.rcode()),
                sorted(rd.to_text() for rrs in r.answer for rd in rrs),
            )
        except dns.exception.Timeout:
            box["out"] = ("timeout", [])
        finally:
            os.close(fd)

    t = threading.Thread(target=query)
    t.start()
    t.join()
    out: tuple[str, list[str]] = box["out"]
    return out


def record(host: Host, name: str) -> dict[str, Any]:
    for f in (host.netctl_root / "run/netctl/containers").glob("*.json"):
        rec = json.loads(f.read_text())
        if rec.get("name") == name:
            return rec
    raise AssertionError(f"no container {name} on {host.ip}")


def ns_of(host: Host, name: str) -> str:
    """The container's network namespace as this process sees it (netctl's bind mount
    lives in the mount namespace `ip netns exec` gave it)."""
    return f"/proc/{record(host, name)['pid']}/ns/net"


def ip_of(host: Host, name: str, network: str) -> str:
    rec = record(host, name)
    att = next(a for a in rec["attachments"] if a["network"] == network)
    return str(att["ips"][0].split("/")[0])


def cleanup(host: Host, *names: str) -> None:
    """Remove the containers (netctl stops the resolver with the last of them), and
    stop by PID a resolver a failed test left."""
    for name in names:
        netctl(host, "rm", "-f", name, check=False)
    pidfile = host.netctl_root / "run/netctl/dns/pid"
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGTERM)


def resolves(cluster: EtcdCluster, hosts: list[Host], netns_path: str, name: str, want: list[str],
             network: str, timeout: float = 10) -> float:  # fmt: skip
    """wait_for the answer; on a timeout, what each part of the chain had."""
    try:
        return wait_for(lambda: ask(netns_path, name) == ("NOERROR", want), timeout, name)
    except AssertionError:
        seen = [f"answer: {ask(netns_path, name)}",
                f"etcd: {cluster.get_prefix(f'/pycni/overlay/names/{network}/')}"]  # fmt: skip
        for h in hosts:
            d = h.state_dir / "overlay" / network
            for f in (d / "names.json", d / "agent.log", h.netctl_root / "run/netctl/dns/log"):
                seen.append(f"{f}: {f.read_text()[-1500:] if f.exists() else '(none)'}")
            seen.append(f"{d / 'names'}: {sorted(p.name for p in (d / 'names').glob('*'))}")
        raise AssertionError(f"{name} not resolved to {want}\n" + "\n".join(seen)) from None


def etcd_lease_of(cluster: EtcdCluster, key: str) -> int:
    out = json.loads(cluster.etcdctl("get", key, "-w", "json"))
    return int(out["kvs"][0].get("lease", 0))


def test_names_resolve_across_hosts_on_the_same_overlay_only(
    cluster: EtcdCluster, hosts: Callable[[], Host]
) -> None:
    h1, h2 = hosts(), hosts()
    for h in (h1, h2):
        write_daemon_json(h, cluster)
    net, other = f"ond{short_id(4)}", f"onx{short_id(4)}"
    netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.39.0.0/16", net)
    netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.38.0.0/16", other)
    try:
        netctl(h2, "run", "-d", "--name", "cli", "--network", net, "--", *SLEEP)
        netctl(h2, "run", "-d", "--name", "dup", "--network", net, "--", *SLEEP)
        netctl(h2, "run", "-d", "--name", "stranger", "--network", other, "--", *SLEEP)
        cli, stranger = ns_of(h2, "cli"), ns_of(h2, "stranger")
        # a container with a name, an alias and a hostname joins on h1
        netctl(h1, "run", "-d", "--name", "web", "--network-alias", "www", "--hostname",
               "webhost", "--network", net, "--", *SLEEP)  # fmt: skip
        added = time.monotonic()
        ip = ip_of(h1, "web", net)
        took = resolves(cluster, [h1, h2], cli, "web", [ip], net)
        print(f"name registered on h1 -> resolved on h2 after {time.monotonic() - added:.3f}s "
              f"({took:.3f}s of polling after netctl returned)")  # fmt: skip
        short = record(h1, "web")["id"][:12]
        for name in ("web", "www", "webhost", short, f"web.{net}", "WEB"):
            assert ask(cli, name) == ("NOERROR", [ip]), name
        ptr = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
        assert ask(cli, ptr, "PTR") == ("NOERROR", [f"web.{net}."])
        # in etcd under h1's subnet lease
        names = cluster.get_prefix(f"/pycni/overlay/names/{net}/")
        (key,) = [k for k in names if f"/{h1.ip}/" in k]
        assert json.loads(names[key])["IPs"] == [ip]
        assert sorted(json.loads(names[key])["Names"]) == sorted(["web", "www", short, "webhost"])
        (subnet_key,) = [
            k for k, v in cluster.get_prefix(f"/pycni/overlay/subnets/{net}/").items()
            if json.loads(v)["PublicIP"] == h1.ip
        ]  # fmt: skip
        assert etcd_lease_of(cluster, key) == etcd_lease_of(cluster, subnet_key) != 0
        # not for a container on another overlay, even on the same host as cli
        rcode, answers = ask(stranger, "web")
        assert rcode != "NOERROR" and answers == [], (rcode, answers)
        assert ask(stranger, ptr, "PTR")[1] == []
        # a name both here and there: every address (Docker's answer)
        netctl(h1, "run", "-d", "--name", "dup", "--network", net, "--", *SLEEP)
        both = sorted([ip_of(h1, "dup", net), ip_of(h2, "dup", net)])
        wait_for(lambda: ask(cli, "dup") == ("NOERROR", both), 10, "both dups")
        # DEL (rm) on h1: gone from h2's answers
        netctl(h1, "rm", "-f", "web")
        removed = time.monotonic()
        wait_for(lambda: ask(cli, "web")[0] == "SERVFAIL", 10, "web forgotten on h2")
        print(f"name removed on h1 -> unresolved on h2 after {time.monotonic() - removed:.3f}s")
        assert ask(cli, f"web.{net}")[1] == [] and ask(cli, ptr, "PTR")[1] == []
        assert ask(cli, "dup") == ("NOERROR", both)
        left = cluster.get_prefix(f"/pycni/overlay/names/{net}/")
        assert key not in left and len(left) == 3, left  # the two dups, cli
    finally:
        cleanup(h1, "web", "dup")
        cleanup(h2, "cli", "dup", "stranger")


def test_names_of_a_dead_host_expire_with_its_lease(
    plugin_dir: Path, cluster: EtcdCluster, hosts: Callable[[], Host],
    container_ns: Callable[[], Netns],
) -> None:  # fmt: skip
    """A container another runtime added through the overlay plugin (podman's inputs:
    K8S_POD_NAME and the `aliases` capability) on h1, whose agent then dies: its names
    leave h2's answers once h1's lease expires, not before."""
    net = f"one{short_id(4)}"
    put_network(cluster, net, "10.37.0.0/16", 37)
    h1, h2 = hosts(), hosts()
    write_daemon_json(h2, cluster)
    try:
        netctl(h2, "run", "-d", "--name", "cli", "--network", net, "--", *SLEEP)
        cli = ns_of(h2, "cli")
        conf = overlay_conf(cluster, net, runtimeConfig={"aliases": {net: ["api", "api2"]}})
        c1 = container_ns()
        r = exec_plugin(
            plugin_dir / "overlay", "ADD", conf, netns=c1.path, container_id="ctrpod1",
            args="IgnoreUnknown=1;K8S_POD_NAME=apipod", in_ns=h1.ns,
            cni_path=f"{plugin_dir}:/usr/lib/cni", env_extra=h1.env(),
        )  # fmt: skip
        assert r.rc == 0, r.stdout + r.stderr
        ip = r.json["ips"][0]["address"].split("/")[0]
        resolves(cluster, [h1, h2], cli, "apipod", [ip], net)
        for name in ("api", "api2", f"apipod.{net}"):
            assert ask(cli, name) == ("NOERROR", [ip]), name
        # h1 dies (its agent killed -9: nobody deletes its keys, its lease runs out)
        h1.kill_agents()
        t = wait_for(lambda: ask(cli, "apipod")[1] == [], TTL + 10, "apipod expires on h2")
        print(f"h1's agent killed -> its names gone from h2 after {t:.2f}s (TTL {TTL}s)")
        assert t >= TTL - 1.5, f"forgotten after {t:.1f}s, before the TTL ({TTL}s)"
        left = cluster.get_prefix(f"/pycni/overlay/names/{net}/")
        assert not [k for k in left if f"/{h1.ip}/" in k] and len(left) == 1, left  # cli's
        assert exec_plugin(
            plugin_dir / "overlay", "DEL", conf, netns=c1.path, container_id="ctrpod1",
            in_ns=h1.ns, cni_path=f"{plugin_dir}:/usr/lib/cni", env_extra=h1.env(),
        ).rc == 0  # fmt: skip
        assert not list((h1.state_dir / "overlay" / net / "names").iterdir())
    finally:
        cleanup(h2, "cli")


def test_an_overlay_conflist_of_an_earlier_version_is_rewritten_and_publishes_names(
    cluster: EtcdCluster, hosts: Callable[[], Host]
) -> None:
    """A member whose conflist an earlier version wrote (no `aliases` capability on the
    overlay plugin, so its containers published no names): the first `run` on it
    rewrites the conflist from the cluster store, keeping its labels, and the new
    container's name resolves on the other member."""
    h1, h2 = hosts(), hosts()
    for h in (h1, h2):
        write_daemon_json(h, cluster)
    net = f"onu{short_id(4)}"
    netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.37.0.0/16", net)
    try:
        netctl(h2, "network", "ls")  # mirrors the network into h2's conflists
        (path,) = h2.netctl_root.rglob(f"{net}.conflist")
        old = json.loads(path.read_text())
        (plugin,) = [p for p in old["plugins"] if p["type"] == "overlay"]
        del plugin["capabilities"]
        old["netctl"]["labels"] = {"team": "blue"}
        path.write_text(json.dumps(old))
        netctl(h1, "run", "-d", "--name", "cli", "--network", net, "--", *SLEEP)
        netctl(h2, "run", "-d", "--name", "late", "--network", net, "--", *SLEEP)
        new = json.loads(path.read_text())
        (plugin,) = [p for p in new["plugins"] if p["type"] == "overlay"]
        assert plugin["capabilities"] == {"aliases": True}
        assert (
            new["netctl"]["labels"] == {"team": "blue"}
            and new["netctl"]["id"] == old["netctl"]["id"]
        )
        resolves(cluster, [h1, h2], ns_of(h1, "cli"), "late", [ip_of(h2, "late", net)], net)
    finally:
        cleanup(h1, "cli")
        cleanup(h2, "late")
        netctl(h1, "network", "rm", net, check=False)
