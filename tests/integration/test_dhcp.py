"""dhcp IPAM against a real DHCP server: Debian's dnsmasq, started by each test in a
throwaway namespace with its own config, lease file and log under the test's tmp dir,
and a `dhcp daemon` (ours, or the reference's /usr/lib/cni/dhcp) on a socket under the
tmp dir; all stopped by PID.

Topologies: (1) the spare veth end pytd0 in the throwaway host namespace, its peer in
the server's namespace where dnsmasq serves; host-device moves pytd0 into the
container and asks dhcp for its address (a chain of our plugins whose DEL releases
the lease while the interface still exists), or pytd0 is moved in by hand for a
plugin called alone, or it is the master of a macvlan, or a port of a bridge; (2)
dnsmasq on a bridge in the host namespace and the reference bridge plugin calling
our dhcp.

The halves mix: our plugin against the reference daemon, the reference plugin
against ours, and chains of our and the reference's interface plugins over either
(both speak Go's net/rpc with gob, pycni.gob)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REFERENCE_DIR, Netns, PluginRun
from tests.traffic import ping

pytestmark = pytest.mark.root


class Dnsmasq:
    def __init__(self, ns: Netns, iface: str, tmp: Path, lease: str = "2m", t1: int = 3) -> None:
        self.dir = tmp / f"dnsmasq-{iface}"
        self.dir.mkdir()
        self.leasefile = self.dir / "leases"
        self.logfile = self.dir / "log"
        cmd = [
            "ip", "netns", "exec", ns.name, "dnsmasq", "--keep-in-foreground",
            "--conf-file=/dev/null", "--port=0", f"--interface={iface}", "--bind-interfaces",
            "--except-interface=lo", f"--dhcp-range=10.99.0.50,10.99.0.99,255.255.255.0,{lease}",
            f"--dhcp-option=option:T1,{t1}", "--dhcp-option=option:T2,100",
            f"--dhcp-leasefile={self.leasefile}", f"--pid-file={self.dir / 'pid'}",
            f"--log-facility={self.logfile}", "--log-dhcp", "--user=root",
            "--dhcp-authoritative", "--no-ping",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while "sockets bound" not in self.log():
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            assert time.monotonic() < deadline, "dnsmasq did not start"
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.logfile.read_text()
        except FileNotFoundError:
            return ""

    def events(self, kind: str, client: str | None = None) -> list[str]:
        return [line for line in self.log().splitlines()
                if f" {kind}(" in line and (client is None or client in line)]  # fmt: skip

    def leases(self) -> list[list[str]]:
        """Lease file lines: expiry, MAC, address, hostname, client id."""
        try:
            return [line.split() for line in self.leasefile.read_text().splitlines() if line]
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by PID: ip netns exec execs dnsmasq in place
            self.proc.wait(timeout=10)


def client_id_hex(cid: str) -> str:
    return ":".join(f"{b:02x}" for b in b"\0" + cid.encode())


REFERENCE_DHCP = REFERENCE_DIR / "dhcp"


class Daemon:
    """`dhcp daemon` from `plugin_dir` (ours), or `binary` (the reference's)."""

    def __init__(self, plugin_dir: Path, ns: Netns, tmp: Path, *flags: str,
                 binary: Path | None = None) -> None:  # fmt: skip
        self.socket = tmp / "run-cni" / "dhcp.sock"
        self.pidfile = tmp / "dhcp.pid"
        self.logfile = tmp / "dhcp-daemon.log"
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYCNI_AGENT_AUTOSTART": "0"}
        log_fd = os.open(self.logfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns.name, str(binary or plugin_dir / "dhcp"), "daemon",
                 "-socketpath", str(self.socket), f"-pidfile={self.pidfile}", *flags],
                stdout=subprocess.DEVNULL, stderr=log_fd, env=env,
            )  # fmt: skip
        finally:
            os.close(log_fd)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert self.proc.poll() is None, self.logfile.read_text()
            assert time.monotonic() < deadline, "dhcp daemon did not start"
            time.sleep(0.05)

    def log(self) -> str:
        return self.logfile.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=15)


@contextmanager
def running(*procs: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop()


def dhcp_ipam(daemon: Daemon | None, tmp: Path, **extra: Any) -> dict[str, Any]:
    sock = daemon.socket if daemon else tmp / "run-cni" / "dhcp.sock"
    ipam: dict[str, Any] = {"type": "dhcp", "daemonSocketPath": str(sock)}
    ipam.update(extra)
    return ipam


@pytest.fixture
def server_link(host_ns: Netns, container_ns) -> Netns:
    """pytd0 in the host namespace; its peer pyts0 (10.99.0.1/24) in the server's."""
    srv = container_ns()
    host_ns.run("ip", "link", "add", "pytd0", "type", "veth", "peer", "name", "pyts0",
                "netns", srv.name)  # fmt: skip
    srv.run("ip", "addr", "add", "10.99.0.1/24", "dev", "pyts0")
    srv.run("ip", "link", "set", "pyts0", "up")
    return srv


def hd(run_plugin, host: Netns, verb: str, conf: dict, c: Netns | None, cid: str = "c1",
       **kw: Any) -> PluginRun:  # fmt: skip
    return run_plugin("host-device", verb, conf, netns=c.path if c else "", container_id=cid,
                      in_ns=host, **kw)  # fmt: skip


def test_lease_obtained_renewed_released(
    run_plugin, plugin_dir, host_ns, server_link, container_ns, tmp_path
) -> None:
    srv = server_link
    dns = Dnsmasq(srv, "pyts0", tmp_path, lease="2m", t1=3)
    daemon = Daemon(plugin_dir, host_ns, tmp_path)
    with running(daemon, dns):
        c = container_ns()
        conf = {"cniVersion": "1.0.0", "name": "dhnet", "type": "host-device", "device": "pytd0",
                "ipam": dhcp_ipam(daemon, tmp_path)}  # fmt: skip
        started = time.monotonic()
        res = hd(run_plugin, host_ns, "ADD", conf, c)
        assert res.rc == 0, res.stdout + daemon.log()
        assert time.monotonic() - started < 5
        out = res.json
        ip = out["ips"][0]
        assert re.fullmatch(r"10\.99\.0\.(5\d|[6-9]\d)/24", ip["address"]), ip
        assert ip["gateway"] == "10.99.0.1"
        assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}]
        addr = ip["address"].split("/")[0]
        # the container has it; the server leased it to our client id; packets flow
        assert ip["address"] in c.addrs("eth0")
        assert any(r["dst"] == "default" and r["gateway"] == "10.99.0.1" for r in c.routes())
        assert ping(c, "10.99.0.1")
        cid = "c1/dhnet/eth0"
        (lease,) = dns.leases()
        assert lease[2] == addr and lease[4] == client_id_hex(cid), lease
        first_expiry = int(lease[0])
        # renewed before expiry: T1 is 3 s, so within ~7 s the keeper renews (unicast,
        # from the leased address) and the server moves the expiry forward
        deadline = time.monotonic() + 10
        while len(dns.events("DHCPACK", addr)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        acks = dns.events("DHCPACK", addr)
        assert len(acks) >= 3, dns.log()
        assert int(dns.leases()[0][0]) > first_expiry
        assert "lease renewed" in daemon.log()
        chk = hd(run_plugin, host_ns, "CHECK", dict(conf, prevResult=out), c)
        assert chk.rc == 0, chk.stdout
        # released on DEL: DHCPRELEASE reaches the server, the lease is gone there
        d = hd(run_plugin, host_ns, "DEL", conf, c)
        assert d.rc == 0, d.stdout
        deadline = time.monotonic() + 5
        while dns.leases() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dns.events("DHCPRELEASE", addr), dns.log()
        assert dns.leases() == []
        assert host_ns.link("pytd0") is not None  # host-device gave the device back
        n_acks = len(dns.events("DHCPACK"))
        time.sleep(3)
        assert len(dns.events("DHCPACK")) == n_acks  # no keeper renews a released lease
        err = hd(run_plugin, host_ns, "CHECK", dict(conf, prevResult=out), c).error
        assert err["code"] in (3, 999)
    assert daemon.proc.returncode == 0 and not daemon.socket.exists()
    assert not daemon.pidfile.exists()


def test_no_server_is_a_bounded_error(
    run_plugin, plugin_dir, host_ns, server_link, container_ns, tmp_path
) -> None:
    daemon = Daemon(plugin_dir, host_ns, tmp_path, "-resendtimeout", "3s", "-timeout=2s")
    with running(daemon):
        c = container_ns()
        conf = {"cniVersion": "1.0.0", "name": "dhnet", "type": "host-device", "device": "pytd0",
                "ipam": dhcp_ipam(daemon, tmp_path)}  # fmt: skip
        started = time.monotonic()
        err = hd(run_plugin, host_ns, "ADD", conf, c).error
        elapsed = time.monotonic() - started
        assert 2.5 < elapsed < 8, elapsed
        assert err["code"] == 11, err
        assert "no lease for eth0" in err["msg"] and "DHCPOFFER" in err["msg"], err
        # the failed ADD gave the device back
        assert host_ns.link("pytd0") is not None and c.link("eth0") is None
        # standalone too (as IPAM of a plugin that made the interface first)
        c.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x0")
        ipam_conf = {"cniVersion": "1.0.0", "name": "dhnet", "ipam": dhcp_ipam(daemon, tmp_path)}
        started = time.monotonic()
        err = run_plugin("dhcp", "ADD", ipam_conf, netns=c.path, container_id="c2").error
        assert err["code"] == 11 and time.monotonic() - started < 8, err
        # an interface that does not exist (CNI_IFNAME names nothing: 4), a namespace
        # that does not exist (3)
        err = run_plugin("dhcp", "ADD", ipam_conf, netns=c.path, container_id="c3",
                         ifname="nope0").error  # fmt: skip
        assert err["code"] == 4 and "nope0" in err["msg"], err
        err = run_plugin("dhcp", "ADD", ipam_conf, netns="/run/netns/pyt-nosuchns",
                         container_id="c4").error  # fmt: skip
        assert err["code"] == 3 and "does not exist" in err["msg"], err
    assert daemon.proc.returncode == 0


def test_reference_bridge_with_our_dhcp(
    run_plugin, plugin_dir, host_ns, container_ns, tmp_path
) -> None:
    host_ns.run("ip", "link", "add", "pytbrd", "type", "bridge")
    host_ns.run("ip", "addr", "add", "10.99.0.1/24", "dev", "pytbrd")
    host_ns.run("ip", "link", "set", "pytbrd", "up")
    dns = Dnsmasq(host_ns, "pytbrd", tmp_path, t1=3)
    daemon = Daemon(plugin_dir, host_ns, tmp_path)
    with running(daemon, dns):
        c = container_ns()
        conf = {"cniVersion": "1.0.0", "name": "brnet", "type": "bridge", "bridge": "pytbrd",
                "ipam": dhcp_ipam(daemon, tmp_path)}  # fmt: skip
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "r1", "CNI_NETNS": c.path,
               "CNI_IFNAME": "eth0", "CNI_PATH": f"{plugin_dir}:{REFERENCE_DIR}",
               "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYCNI_AGENT_AUTOSTART": "0"}  # fmt: skip
        import json

        proc = subprocess.run(["ip", "netns", "exec", host_ns.name, str(REFERENCE_DIR / "bridge")],
                              input=json.dumps(conf).encode(), env=env, capture_output=True)  # fmt: skip
        assert proc.returncode == 0, proc.stdout.decode() + daemon.log()
        out = json.loads(proc.stdout)
        addr = out["ips"][0]["address"]
        assert addr in c.addrs("eth0") and ping(c, "10.99.0.1")
        deadline = time.monotonic() + 10
        ip = addr.split("/")[0]
        while len(dns.events("DHCPACK", ip)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(dns.events("DHCPACK", ip)) >= 2, dns.log()  # renewed
        env["CNI_COMMAND"] = "DEL"
        proc = subprocess.run(["ip", "netns", "exec", host_ns.name, str(REFERENCE_DIR / "bridge")],
                              input=json.dumps(conf).encode(), env=env, capture_output=True)  # fmt: skip
        assert proc.returncode == 0, proc.stdout
        # the reference bridge (1.1.1) deletes the veth before it calls IPAM DEL, so no
        # DHCPRELEASE can leave the container (the reference daemon fails the same way);
        # the daemon stops keeping the lease all the same
        assert "releasing lease" in daemon.log()
        n = len(dns.events("DHCPACK"))
        time.sleep(3)
        assert len(dns.events("DHCPACK")) == n


def test_provided_options_and_gc(
    run_plugin, plugin_dir, host_ns, server_link, container_ns, tmp_path
) -> None:
    dns = Dnsmasq(server_link, "pyts0", tmp_path)
    daemon = Daemon(plugin_dir, host_ns, tmp_path)
    with running(daemon, dns):
        c = container_ns()
        ipam = dhcp_ipam(daemon, tmp_path,
                         provide=[{"option": "host-name", "fromArg": "K8S_POD_NAME"},
                                  {"option": "60", "value": "pycni-test"}],
                         request=[{"option": "121"}], priority=50)  # fmt: skip
        conf = {"cniVersion": "1.1.0", "name": "dhnet", "type": "host-device", "device": "pytd0",
                "ipam": ipam}  # fmt: skip
        res = hd(run_plugin, host_ns, "ADD", conf, c, args="IgnoreUnknown=1;K8S_POD_NAME=mypod")
        assert res.rc == 0, res.stdout + daemon.log()
        assert res.json["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.99.0.1", "priority": 50}]
        assert any(r["dst"] == "default" and r.get("metric") == 50 for r in c.routes())
        log = dns.log()
        assert "client provides name: mypod" in log, log
        assert "vendor class: pycni-test" in log, log
        assert re.search(r"requested options: .*121", log), log
        # GC with no valid attachment releases the lease (and gives the device back)
        gc = dict(conf)
        gc["cni.dev/valid-attachments"] = []
        r = run_plugin("dhcp", "GC", gc, in_ns=host_ns)
        assert r.rc == 0, r.stdout
        deadline = time.monotonic() + 5
        while dns.leases() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dns.leases() == [] and dns.events("DHCPRELEASE")
        assert run_plugin("dhcp", "STATUS", conf, in_ns=host_ns).rc == 0
        assert hd(run_plugin, host_ns, "DEL", conf, c).rc == 0


def test_without_a_daemon(run_plugin, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = {"cniVersion": "1.1.0", "name": "dhnet", "ipam": dhcp_ipam(None, tmp_path)}
    err = run_plugin("dhcp", "ADD", conf, netns=c.path, container_id="c1").error
    assert err["code"] == 11 and "error dialing DHCP daemon" in err["msg"], err
    assert "dhcp daemon" in err["details"]
    assert run_plugin("dhcp", "DEL", conf, netns=c.path, container_id="c1").rc == 0
    assert run_plugin("dhcp", "STATUS", conf).error["code"] == 50
    assert run_plugin("dhcp", "CHECK", conf, netns=c.path, container_id="c1").error["code"] == 11


@pytest.mark.parametrize(
    ("ipam", "needle"),
    [
        ({"daemonSocketPath": 5}, "daemonSocketPath"),
        ({"provide": {"option": "host-name"}}, "provide"),
        ({"provide": ["x"]}, "provide[0]"),
        ({"provide": [{"option": "no-such-option", "value": "x"}]}, "Can not parse option"),
        ({"provide": [{"option": "300", "value": "x"}]}, "Can not parse option"),
        ({"provide": [{"option": "host-name", "value": "x" * 256}]}, "too long"),
        ({"provide": [{"option": "host-name", "value": 5}]}, "value"),
        ({"request": [{"option": "-1"}]}, "Can not parse option"),
        # str.isdigit() says yes to superscripts, int() says no
        ({"request": [{"option": "\u00b2"}]}, "Can not parse option"),
        ({"provide": [{"option": "1\u00b9", "value": "x"}]}, "Can not parse option"),
        ({"request": [{"option": "121", "skipDefault": "yes"}]}, "skipDefault"),
        ({"priority": "high"}, "priority"),
        ({"priority": -1}, "priority"),
    ],
)
def test_bad_config(ipam: dict, needle: str, run_plugin, container_ns, tmp_path) -> None:
    c = container_ns()
    conf = {"cniVersion": "1.0.0", "name": "dhnet", "ipam": dict(dhcp_ipam(None, tmp_path), **ipam)}
    err = run_plugin("dhcp", "ADD", conf, netns=c.path, container_id="c1").error
    assert err["code"] == 7, err
    assert needle.lower() in (err["msg"] + err.get("details", "")).lower(), err


def test_daemon_flags_and_single_instance(plugin_dir, host_ns, tmp_path) -> None:
    def run(*flags: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(plugin_dir / "dhcp"), "daemon", *flags], capture_output=True,
                              timeout=10, env={"PYCNI_AGENT_AUTOSTART": "0"})  # fmt: skip

    bad = run("-nosuchflag")
    assert bad.returncode == 2 and b"flag provided but not defined" in bad.stderr
    bad = run("-timeout", "ten")
    assert bad.returncode == 2 and b"invalid duration" in bad.stderr
    bad = run("-socketpath", str(tmp_path / "s.sock"), "-pidfile", "rel.pid")
    assert bad.returncode == 1 and b"path not absolute" in bad.stderr
    # a -socketpath that names a file which is not a socket (a typo): refused, kept
    precious = tmp_path / "dhcp.conf"
    precious.write_text("keep me\n")
    bad = run("-socketpath", str(precious))
    assert bad.returncode == 1 and b"not a socket" in bad.stderr, bad.stderr
    assert precious.read_text() == "keep me\n"
    daemon = Daemon(plugin_dir, host_ns, tmp_path)
    with running(daemon):
        assert daemon.pidfile.read_text() == str(daemon.proc.pid) or daemon.pidfile.exists()
        assert oct(daemon.socket.stat().st_mode & 0o777) == "0o600"
        assert oct(daemon.socket.parent.stat().st_mode & 0o777) == "0o700"
        second = run("-socketpath", str(daemon.socket))
        assert second.returncode != 0 and b"another daemon listens" in second.stderr
    assert daemon.proc.returncode == 0 and not daemon.socket.exists()


def test_known_lease_and_vanished_namespace(
    run_plugin, plugin_dir, host_ns, server_link, container_ns, tmp_path
) -> None:
    dns = Dnsmasq(server_link, "pyts0", tmp_path, t1=3)
    daemon = Daemon(plugin_dir, host_ns, tmp_path)
    with running(daemon, dns):
        c = container_ns()
        conf = {"cniVersion": "1.0.0", "name": "dhnet", "type": "host-device", "device": "pytd0",
                "ipam": dhcp_ipam(daemon, tmp_path)}  # fmt: skip
        out = hd(run_plugin, host_ns, "ADD", conf, c).json
        # the IPAM ADD again (a retried ADD): the kept lease, no new exchange
        ipam_conf = {"cniVersion": "1.0.0", "name": "dhnet", "ipam": conf["ipam"]}
        again = run_plugin("dhcp", "ADD", ipam_conf, netns=c.path, container_id="c1")
        assert again.rc == 0, again.stdout
        assert again.json["ips"][0]["address"] == out["ips"][0]["address"]
        assert len(dns.events("DHCPDISCOVER")) == 1
        # the namespace disappears without DEL: the keeper stops at its next wake-up
        # (it holds nothing that would keep the namespace alive)
        path = c.path
        os.system(f"ip netns del {c.name}")
        deadline = time.monotonic() + 10
        while "terminating lease maintenance" not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "terminating lease maintenance" in daemon.log(), daemon.log()
        d = run_plugin("dhcp", "DEL", ipam_conf, netns=path, container_id="c1")
        assert d.rc == 0, d.stdout


# -- the halves mix: our plugin and the reference daemon, the reference plugin and ours -----


def in_container(host: Netns, c: Netns, name: str = "eth0") -> None:
    """pytd0 moved into the container as `name`, for an IPAM plugin called alone."""
    host.run("ip", "link", "set", "pytd0", "netns", c.name)
    c.run("ip", "link", "set", "pytd0", "name", name)


def released(dns: Dnsmasq, addr: str) -> None:
    deadline = time.monotonic() + 5
    while dns.leases() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dns.events("DHCPRELEASE", addr), dns.log()
    assert dns.leases() == []


def test_our_plugin_with_the_reference_daemon(
    run_plugin, plugin_dir, host_ns, server_link, container_ns, tmp_path
) -> None:
    # T1 60 s: no renewal during the test (see CHECK below)
    dns = Dnsmasq(server_link, "pyts0", tmp_path, t1=60)
    ref = Daemon(plugin_dir, host_ns, tmp_path, binary=REFERENCE_DHCP)
    with running(ref, dns):
        c = container_ns()
        conf = {"cniVersion": "1.0.0", "name": "dhnet", "type": "host-device", "device": "pytd0",
                "ipam": dhcp_ipam(ref, tmp_path)}  # fmt: skip
        res = hd(run_plugin, host_ns, "ADD", conf, c)
        assert res.rc == 0, res.stdout + ref.log()
        out = res.json
        ip = out["ips"][0]
        assert re.fullmatch(r"10\.99\.0\.(5\d|[6-9]\d)/24", ip["address"]), ip
        assert ip["gateway"] == "10.99.0.1" and out["cniVersion"] == "1.0.0"
        assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}]
        addr = ip["address"].split("/")[0]
        assert ip["address"] in c.addrs("eth0") and ping(c, "10.99.0.1")
        (lease,) = dns.leases()
        assert lease[2] == addr and lease[4] == client_id_hex("c1/dhnet/eth0"), lease
        assert "c1/dhnet/eth0: lease acquired" in ref.log()
        # CHECK: the reference daemon has no Check; our plugin sends Allocate on the
        # same connection, as the reference plugin does (1.1.1 acquires the lease once
        # more, and keeps the first keeper running: its own behaviour, fixed in 1.2)
        chk = hd(run_plugin, host_ns, "CHECK", dict(conf, prevResult=out), c)
        assert chk.rc == 0, chk.stdout + ref.log()
        # DEL: Release, and the DHCPRELEASE reaches the server
        d = hd(run_plugin, host_ns, "DEL", conf, c)
        assert d.rc == 0, d.stdout
        released(dns, addr)
        # the reference daemon's errors, with codes by what they say
        c2 = container_ns()
        ipam_conf = {"cniVersion": "1.1.0", "name": "dhnet", "ipam": conf["ipam"]}
        err = run_plugin("dhcp", "ADD", ipam_conf, netns=c2.path, container_id="c2",
                         ifname="nope0").error  # fmt: skip
        assert err["code"] == 4, err
        assert err["msg"] == 'error calling DHCP.Allocate: error looking up "nope0": Link not found'
        bad = dict(
            ipam_conf, ipam=dict(ipam_conf["ipam"], provide=[{"option": "60", "value": "x"}])
        )
        assert run_plugin("dhcp", "ADD", bad, netns="/run/netns/pyt-nosuchns",
                          container_id="c3").error["code"] == 3  # fmt: skip
        # STATUS: it answers (with "can't find method"), so it serves; GC: nothing to do
        assert run_plugin("dhcp", "STATUS", ipam_conf).rc == 0
        gc = dict(ipam_conf, **{"cni.dev/valid-attachments": []})
        r = run_plugin("dhcp", "GC", gc)
        assert r.rc == 0 and "has no GC" in r.stderr, r.stdout + r.stderr


def test_reference_plugin_with_our_daemon(
    run_reference, plugin_dir, host_ns, server_link, container_ns, tmp_path
) -> None:
    dns = Dnsmasq(server_link, "pyts0", tmp_path, t1=60)
    daemon = Daemon(plugin_dir, host_ns, tmp_path)
    with running(daemon, dns):
        c = container_ns()
        in_container(host_ns, c)
        conf = {"cniVersion": "1.0.0", "name": "dhnet", "ipam": dhcp_ipam(daemon, tmp_path)}

        def ref(verb: str, conf: dict[str, Any], **kw: Any) -> PluginRun:
            kw.setdefault("netns", c.path)
            kw.setdefault("container_id", "r1")
            return run_reference("dhcp", verb, conf, in_ns=host_ns, **kw)

        res = ref("ADD", conf)
        assert res.rc == 0, res.stdout + daemon.log()
        out = res.json
        assert out["cniVersion"] == "1.0.0"
        ip = out["ips"][0]
        assert re.fullmatch(r"10\.99\.0\.(5\d|[6-9]\d)/24", ip["address"]), ip
        assert ip["gateway"] == "10.99.0.1"
        assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}]
        addr = ip["address"].split("/")[0]
        (lease,) = dns.leases()
        assert lease[2] == addr and lease[4] == client_id_hex("r1/dhnet/eth0"), lease
        # CHECK (Allocate, from the reference plugin) answers the kept lease: no new exchange
        assert ref("CHECK", dict(conf, prevResult=out)).rc == 0
        assert len(dns.events("DHCPDISCOVER")) == 1
        assert ref("ADD", conf).json["ips"] == out["ips"]
        # DEL: Release; the container's interface has no address (IPAM only), so the
        # DHCPRELEASE leaves by broadcast
        d = ref("DEL", conf)
        assert d.rc == 0, d.stdout + daemon.log()
        released(dns, addr)
        # our daemon's errors reach the reference plugin as text (it reports 999)
        err = ref("ADD", conf, container_id="r2", ifname="nope0")
        assert err.rc != 0
        assert err.json["msg"] == ("error calling DHCP.Allocate: dhcp: no lease for nope0: "
                                   "error looking up 'nope0': no such interface"), err.stdout  # fmt: skip
        assert "Traceback" not in daemon.log()


# Our bridge runs an IPAM that needs the interface (dhcp) after the veth exists, as the
# reference does (host-local and static still run first: config errors before any change).
CHAINS = [
    # (interface plugin, whose; the dhcp plugin it finds first in CNI_PATH; the daemon)
    ("macvlan", "ours", "ours", "reference"),
    ("macvlan", "ours", "reference", "ours"),
    ("macvlan", "reference", "ours", "reference"),
    ("macvlan", "reference", "reference", "ours"),
    ("bridge", "reference", "reference", "ours"),
    ("bridge", "reference", "ours", "reference"),
    ("bridge", "ours", "ours", "ours"),
    ("bridge", "ours", "reference", "reference"),
]  # fmt: skip


@pytest.mark.parametrize(("main", "main_by", "ipam_by", "daemon_by"), CHAINS)
def test_mixed_chains(
    main: str, main_by: str, ipam_by: str, daemon_by: str, run_plugin, run_reference,
    plugin_dir, host_ns, server_link, container_ns, tmp_path,
) -> None:  # fmt: skip
    dns = Dnsmasq(server_link, "pyts0", tmp_path, t1=60)
    binary = REFERENCE_DHCP if daemon_by == "reference" else None
    daemon = Daemon(plugin_dir, host_ns, tmp_path, binary=binary)
    with running(daemon, dns):
        c = container_ns()
        conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "chnet", "type": main,
                                "ipam": dhcp_ipam(daemon, tmp_path)}  # fmt: skip
        if main == "bridge":
            for cmd in (("link", "add", "pytbrd", "type", "bridge"),
                        ("link", "set", "pytd0", "master", "pytbrd"),
                        ("link", "set", "pytd0", "up"), ("link", "set", "pytbrd", "up")):  # fmt: skip
                host_ns.run("ip", *cmd)
            conf["bridge"] = "pytbrd"
        else:
            host_ns.run("ip", "link", "set", "pytd0", "up")
            conf["master"] = "pytd0"
        # the dhcp plugin the interface plugin finds first in CNI_PATH
        dirs = [str(plugin_dir), str(REFERENCE_DIR)]
        cni_path = ":".join(dirs if ipam_by == "ours" else dirs[::-1])
        run = run_plugin if main_by == "ours" else run_reference

        def call(verb: str, conf: dict[str, Any]) -> PluginRun:
            return run(main, verb, conf, netns=c.path, container_id="m1", in_ns=host_ns,
                       cni_path=cni_path)  # fmt: skip

        res = call("ADD", conf)
        assert res.rc == 0, res.stdout + res.stderr + daemon.log()
        ip = res.json["ips"][0]
        assert re.fullmatch(r"10\.99\.0\.(5\d|[6-9]\d)/24", ip["address"]), ip
        addr = ip["address"].split("/")[0]
        assert ip["address"] in c.addrs("eth0") and ping(c, "10.99.0.1")
        assert any(r["dst"] == "default" and r["gateway"] == "10.99.0.1" for r in c.routes())
        (lease,) = dns.leases()
        assert lease[2] == addr and lease[4] == client_id_hex("m1/chnet/eth0"), lease
        chk = call("CHECK", dict(conf, prevResult=res.json))
        assert chk.rc == 0, chk.stdout + chk.stderr + daemon.log()
        d = call("DEL", conf)
        assert d.rc == 0, d.stdout + d.stderr + daemon.log()
        assert c.link("eth0") is None
        if main == "macvlan" or main_by == "ours":
            # IPAM DEL first, while the interface exists (ours keeps the reference's
            # order for dhcp): the server sees the release
            released(dns, addr)
        else:
            # the reference bridge (1.1.1) removes the link before IPAM DEL: the
            # DHCPRELEASE may find no interface to leave by; the daemon stops keeping
            # the lease all the same (both log it)
            deadline = time.monotonic() + 5
            while "m1/chnet/eth0: releasing lease" not in daemon.log():
                assert time.monotonic() < deadline, daemon.log()
                time.sleep(0.1)
