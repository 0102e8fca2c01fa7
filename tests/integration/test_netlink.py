"""Our rtnetlink client against the kernel, read back with iproute2 (independent)."""

from __future__ import annotations

import ipaddress
import os
import select
import time

import pytest

from pycni import netlink, netns
from pycni.netlink import Netlink

pytestmark = pytest.mark.root


@pytest.fixture
def nl(host_ns):
    fd = os.open(host_ns.path, os.O_RDONLY)
    sock = Netlink(netns_fd=fd)
    yield sock
    sock.close()
    os.close(fd)


def test_bridge_veth_into_other_netns(nl, host_ns, container_ns) -> None:
    c = container_ns()
    nl.add_bridge("pytbr0", mtu=1400, vlan_filtering=False)
    br = nl.link("pytbr0")
    assert br is not None and br.kind == "bridge" and br.mtu == 1400
    cfd = netns.open_netns(c.path)
    try:
        nl.add_veth("pytv0", "eth0", peer_netns_fd=cfd, mtu=1400, peer_mac="02:00:00:00:00:07")
    finally:
        os.close(cfd)
    veth = nl.link("pytv0")
    assert veth is not None and veth.kind == "veth"
    nl.set_link(veth.index, up=True, master=br.index)
    nl.set_bridge_port(veth.index, hairpin=True, isolated=True)
    info = host_ns.link("pytv0")
    assert info["master"] == "pytbr0"
    assert info["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert info["linkinfo"]["info_slave_data"]["isolated"] is True
    peer = c.link("eth0")
    assert peer is not None and peer["address"] == "02:00:00:00:00:07" and peer["mtu"] == 1400
    assert nl.link("eth0") is None  # the peer was created in the other namespace, not here


def test_addresses_and_routes(nl, host_ns) -> None:
    nl.add_bridge("pytbr1")
    br = nl.link("pytbr1")
    nl.set_link(br.index, up=True)
    nl.add_addr(br.index, ipaddress.ip_interface("10.250.0.1/24"))
    nl.add_addr(br.index, ipaddress.ip_interface("fd77::1/64"), nodad=True)
    assert set(host_ns.addrs("pytbr1")) >= {"10.250.0.1/24", "fd77::1/64"}
    assert {str(a.interface) for a in nl.addrs(br.index)} >= {"10.250.0.1/24", "fd77::1/64"}
    with pytest.raises(netlink.LinkExists):
        nl.add_addr(br.index, ipaddress.ip_interface("10.250.0.1/24"))
    nl.add_route(
        ipaddress.ip_network("10.251.0.0/16"),
        ipaddress.ip_address("10.250.0.9"),
        oif=br.index,
        mtu=1300,
    )
    routes = host_ns.routes("10.251.0.0/16")
    assert (
        routes
        and routes[0]["gateway"] == "10.250.0.9"
        and routes[0].get("metrics", [{}])[0].get("mtu") == 1300
    )
    ours = [r for r in nl.routes(netlink.AF_INET) if str(r.dst) == "10.251.0.0/16"]
    assert ours and str(ours[0].gateway) == "10.250.0.9" and ours[0].mtu == 1300
    assert nl.del_route(ipaddress.ip_network("10.251.0.0/16"), oif=br.index)
    assert not nl.del_route(ipaddress.ip_network("10.251.0.0/16"), oif=br.index)
    assert nl.del_addr(br.index, ipaddress.ip_interface("10.250.0.1/24"))
    assert not nl.del_addr(br.index, ipaddress.ip_interface("10.250.0.1/24"))


def test_errors_carry_kernel_text(nl) -> None:
    with pytest.raises(netlink.NotFound):
        nl.set_link(987654, up=True)
    nl.add_bridge("pytbr2")
    with pytest.raises(netlink.LinkExists):
        nl.add_bridge("pytbr2")
    assert nl.del_link(nl.link("pytbr2").index)
    assert not nl.del_link(987654)


def test_vlan_on_bridge_port(nl, host_ns, container_ns) -> None:
    c = container_ns()
    try:
        nl.add_bridge("pytbr3", vlan_filtering=True)
    except netlink.NetlinkError as exc:
        # Kernels built without CONFIG_BRIDGE_VLAN_FILTERING (this CI's) refuse it;
        # what we check then is that the refusal is a clean, named error.
        assert exc.errno == 95, exc
        assert "create bridge pytbr3" in str(exc)
        return
    br = nl.link("pytbr3")
    cfd = netns.open_netns(c.path)
    try:
        nl.add_veth("pytv3", "eth0", peer_netns_fd=cfd)
    finally:
        os.close(cfd)
    v = nl.link("pytv3")
    nl.set_link(v.index, master=br.index)
    nl.bridge_vlan_add(v.index, 42, pvid=True, untagged=True)
    assert (
        42,
        netlink.BRIDGE_VLAN_INFO_PVID | netlink.BRIDGE_VLAN_INFO_UNTAGGED,
    ) in nl.bridge_vlans(v.index)
    out = host_ns.run("bridge", "-j", "vlan", "show", "dev", "pytv3")
    assert '"vlan":42' in out.replace(" ", "")


def test_many_links_dump_is_complete(nl) -> None:
    for i in range(60):
        nl.add_bridge(f"pytm{i}")
    names = {link.name for link in nl.links()}
    assert {f"pytm{i}" for i in range(60)} <= names


def test_settings_read_and_written_without_proc_sys(nl, host_ns) -> None:
    """forwarding (RTM_GETNETCONF), accept_ra (with the link), arp_notify (IFLA_AF_SPEC)
    agree with /proc/sys as the sysctl tool reads it."""
    for family, key in (
        (netlink.AF_INET, "net.ipv4.ip_forward"),
        (netlink.AF_INET6, "net.ipv6.conf.all.forwarding"),
    ):
        for value in ("0", "1"):
            host_ns.run("sysctl", "-qw", f"{key}={value}")
            assert nl.forwarding(family) == int(value)
    nl.add_bridge("pytbr2")
    br = nl.link("pytbr2")
    assert br.ipv6_accept_ra == int(host_ns.run("sysctl", "-n", "net.ipv6.conf.pytbr2.accept_ra"))
    host_ns.run("sysctl", "-qw", "net.ipv6.conf.pytbr2.accept_ra=0")
    assert nl.link("pytbr2").ipv6_accept_ra == 0
    nl.set_ipv4_conf(br.index, {netlink.IPV4_DEVCONF_ARP_NOTIFY: 1})
    assert host_ns.run("sysctl", "-n", "net.ipv4.conf.pytbr2.arp_notify").strip() == "1"


def test_sysctl_write_in_one_directory(host_ns) -> None:
    from pycni import sysctl

    host_ns.run("ip", "link", "add", "pytbr3", "type", "bridge")
    fd = os.open(host_ns.path, os.O_RDONLY)
    try:
        with netns.entered(fd):
            values = {"accept_ra": "0", "no_such_key": "1", "accept_dad": "0"}
            sysctl.write_in("net/ipv6/conf/pytbr3", values)
            sysctl.write_in("net/ipv6/conf/no-such-if", {"accept_ra": "0"})  # skipped quietly
    finally:
        os.close(fd)
    assert host_ns.run("sysctl", "-n", "net.ipv6.conf.pytbr3.accept_ra").strip() == "0"
    assert host_ns.run("sysctl", "-n", "net.ipv6.conf.pytbr3.accept_dad").strip() == "0"


# -- netsetup.del_veth: the answer once both ends are unregistered --------------------------


def _children() -> set[int]:
    out: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as fh:
                out.update(int(pid) for pid in fh.read().split())
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    return out


def _veth_pair(host_ns, c, host_name: str) -> None:
    """host_name in host_ns with eth0 in c, both up, an address and a /32 route on the
    host end (as ptp leaves it)."""
    host_ns.run("ip", "link", "add", host_name, "type", "veth", "peer", "name", "eth0",
                "netns", c.path)  # fmt: skip
    host_ns.run("ip", "link", "set", host_name, "up")
    host_ns.run("ip", "addr", "add", "10.252.0.1/32", "dev", host_name)
    host_ns.run("ip", "route", "add", "10.252.0.2/32", "dev", host_name)
    c.run("ip", "link", "set", "eth0", "up")
    c.run("ip", "addr", "add", "10.252.0.2/24", "dev", "eth0")


@pytest.mark.parametrize("waits_in", ["process", "thread"])
def test_del_veth_returns_with_both_ends_gone(host_ns, container_ns, monkeypatch, waits_in) -> None:
    """Either way (a detached child, as plugins and netctl do; a thread, as the
    agent's workers do) the answer comes with both ends unregistered. The grandchild
    keeps none of the caller's files (a runtime reads a plugin's output to its end), and
    once it has ended, linger.reap() leaves no child to reap."""
    from pycni import linger, netsetup

    monkeypatch.setattr(linger, "MODE", waits_in)
    c = container_ns()
    _veth_pair(host_ns, c, "pytdv0")
    hfd, cfd = os.open(host_ns.path, os.O_RDONLY), netns.open_netns(c.path)
    out_r, out_w = os.pipe()  # inheritable, as a plugin's stdout is
    os.set_inheritable(out_w, True)
    before = _children()
    try:
        with netns.entered(hfd):
            assert netsetup.del_veth(cfd, "eth0") is True
            os.close(out_w)
            out_w = -1
            assert select.select([out_r], [], [], 0)[0] and os.read(out_r, 1) == b""
            if waits_in == "process":  # the child, ours until it ends, then reaped
                assert linger._detached and set(linger._detached) <= _children()
                deadline = time.monotonic() + 10
                while linger._detached and time.monotonic() < deadline:
                    linger.reap()
                    time.sleep(0.005)
            assert _children() <= before  # nothing of ours left to reap
            # What a runtime sees right after the answer: names, addresses and routes gone.
            assert host_ns.link("pytdv0") is None and c.link("eth0") is None
            assert host_ns.routes("10.252.0.2/32") == []
            assert "10.252.0.1" not in host_ns.run("ip", "-4", "addr", "show")
            # ... and both names free at once (the same pair made again, deleted again).
            with Netlink() as host:
                host.add_veth("pytdv0", "eth0", peer_netns_fd=cfd)
            assert netsetup.del_veth(cfd, "eth0") is True
            assert host_ns.link("pytdv0") is None and c.link("eth0") is None
            assert netsetup.del_veth(cfd, "eth0") is False  # nothing there: no-op
    finally:
        for fd in (hfd, cfd, out_r, out_w):
            if fd >= 0:
                os.close(fd)


@pytest.mark.parametrize("waits_in", ["process", "thread"])
def test_del_link_of_another_kind(host_ns, container_ns, monkeypatch, waits_in) -> None:
    """macvlan (and the other link plugins' kinds): the answer once the container's
    device is unregistered; a kind not asked for is kept."""
    from pycni import linger, netsetup

    monkeypatch.setattr(linger, "MODE", waits_in)
    c = container_ns()
    c.run("ip", "link", "add", "pytm0", "type", "veth", "peer", "name", "pytm1")
    c.run("ip", "link", "add", "mv0", "link", "pytm0", "type", "macvlan", "mode", "bridge")
    c.run("ip", "addr", "add", "10.252.1.2/24", "dev", "mv0")
    c.run("ip", "link", "set", "mv0", "up")
    hfd, cfd = os.open(host_ns.path, os.O_RDONLY), netns.open_netns(c.path)
    try:
        with netns.entered(hfd):
            assert netsetup.del_link(cfd, "pytm0", ("macvlan",)) is False  # a veth: kept
            assert netsetup.del_link(cfd, "mv0", ("macvlan", "ipvlan")) is True
            assert c.link("mv0") is None and c.link("pytm0") is not None
            assert "10.252.1.2" not in c.run("ip", "-4", "addr", "show")
            assert netsetup.del_link(cfd, "mv0", ("macvlan",)) is False
    finally:
        os.close(hfd)
        os.close(cfd)


def test_del_veth_without_a_child_sends_the_request_itself(
    host_ns, container_ns, monkeypatch
) -> None:
    """No process can be made (a pids limit, say): the request goes from the caller,
    which then waits for the kernel; the answer and the result are the same."""
    from pycni import linger, netsetup

    def refuse(keep: list[int]) -> bool:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(linger, "MODE", "process")
    monkeypatch.setattr(linger, "detach", refuse)
    c = container_ns()
    _veth_pair(host_ns, c, "pytdv2")
    hfd, cfd = os.open(host_ns.path, os.O_RDONLY), netns.open_netns(c.path)
    try:
        with netns.entered(hfd):
            assert netsetup.del_veth(cfd, "eth0") is True
            assert host_ns.link("pytdv2") is None and c.link("eth0") is None
    finally:
        os.close(hfd)
        os.close(cfd)


def test_del_veth_answers_of_the_grandchild() -> None:
    """What the detached deleter writes back: deleted, gone already, the kernel's
    refusal as the netlink error it would have raised, or nothing (it died)."""
    from pycni import netsetup

    for written, expect in ((b"T", True), (b"F", False)):
        r, w = os.pipe()
        os.write(w, written)
        os.close(w)
        assert netsetup._delete_outcome(r) is expect
        os.close(r)
    r, w = os.pipe()
    os.write(w, b"E16 delete link 7")
    os.close(w)
    exc = netsetup._delete_outcome(r)
    os.close(r)
    assert isinstance(exc, netlink.Busy) and exc.errno == 16 and "delete link 7" in str(exc)
    r, w = os.pipe()
    os.close(w)
    exc = netsetup._delete_outcome(r)
    os.close(r)
    assert isinstance(exc, netlink.NetlinkError) and "without an answer" in str(exc)


def test_del_veth_peer_elsewhere_and_other_kinds(host_ns, container_ns) -> None:
    """A peer outside the caller's namespace is never announced there: the answer waits
    for the request itself. Another kind of link of that name is kept."""
    from pycni import netsetup

    c, elsewhere = container_ns(), container_ns()
    elsewhere.run("ip", "link", "add", "pytdv1", "type", "veth", "peer", "name", "eth0",
                  "netns", c.path)  # fmt: skip
    hfd, cfd = os.open(host_ns.path, os.O_RDONLY), netns.open_netns(c.path)
    try:
        with netns.entered(hfd):
            assert netsetup.del_veth(cfd, "eth0") is True
            assert c.link("eth0") is None and elsewhere.link("pytdv1") is None
            c.run("ip", "link", "add", "eth0", "type", "bridge")
            assert netsetup.del_veth(cfd, "eth0") is False
            assert c.link("eth0") is not None
    finally:
        os.close(hfd)
        os.close(cfd)


def test_link_events_see_deletions(host_ns) -> None:
    fd = os.open(host_ns.path, os.O_RDONLY)
    try:
        with netns.entered(fd):
            events = netlink.LinkEvents()
            try:
                assert events.deleted() == []  # nothing yet, and no wait
                host_ns.run("ip", "link", "add", "pytle0", "type", "bridge")
                index = host_ns.link("pytle0")["ifindex"]
                host_ns.run("ip", "link", "del", "pytle0")
                assert index in (events.deleted() or [])
            finally:
                events.close()
    finally:
        os.close(fd)


LONG_PORTS = ",".join(str(p) for p in range(20000, 21600, 2))  # > 4096 bytes


def test_sysctls_through_a_procfs_of_our_own(host_ns, container_ns) -> None:
    """Every key is reached through a procfs instance of the process's own: writes and
    reads land in the calling thread's namespace, and nowhere else; the instance is in
    no mount table; refused (no instance), /proc/sys serves the same."""
    from pycni import sysctl

    a, b = container_ns(), container_ns()
    for ns in (a, b):
        ns.run("ip", "link", "add", "pytsx0", "type", "bridge")
    for ns, own in ((a, True), (b, False)):
        fd = os.open(ns.path, os.O_RDONLY)
        saved = list(sysctl._own)
        try:
            if not own:
                sysctl._own[:] = [-1]  # as where the kernel refuses fsopen
            with netns.entered(fd):
                sysctl.write_in("net/ipv6/conf/pytsx0", {"accept_ra": "0"})
                assert sysctl.try_write("net/ipv6/conf/pytsx0/accept_dad", "0")
                assert not sysctl.try_write("net/ipv6/conf/no-such/accept_dad", "0")
                sysctl.write("net/ipv6/conf/pytsx0/hop_limit", "17")
                assert sysctl.read("net/ipv6/conf/pytsx0/hop_limit") == "17"
                # a long value (the kernel keeps at most a page of what is written)
                sysctl.write("net/ipv4/ip_local_reserved_ports", LONG_PORTS)
                reserved = sysctl.read("net/ipv4/ip_local_reserved_ports")
                with pytest.raises(FileNotFoundError):
                    sysctl.read("net/ipv6/conf/no-such/hop_limit")
            if own:
                assert sysctl._own and sysctl._own[0] >= 0  # the instance was made
                # detached: in no mount table; nosuid, nodev, noexec
                with open(f"/proc/self/fdinfo/{sysctl._own[0]}") as fh:
                    mnt_id = next(ln.split()[1] for ln in fh if ln.startswith("mnt_id:"))
                with open("/proc/self/mountinfo") as fh:
                    assert all(ln.split()[0] != mnt_id for ln in fh)
                # and the keys were reached through it, not /proc/sys
                key_fd = sysctl.open_key("net/ipv4/ip_forward", os.O_RDONLY)
                try:
                    with open(f"/proc/self/fdinfo/{key_fd}") as fh:
                        assert f"mnt_id:\t{mnt_id}\n" in fh.read()
                finally:
                    os.close(key_fd)
                st = os.statvfs(f"/proc/self/fd/{sysctl._own[0]}")
                for flag in (os.ST_NOSUID, os.ST_NODEV, os.ST_NOEXEC):
                    assert st.f_flag & flag
        finally:
            if sysctl._own and sysctl._own[0] >= 0 and sysctl._own != saved:
                os.close(sysctl._own[0])
            sysctl._own[:] = saved
            os.close(fd)
        assert ns.sysctl("net.ipv6.conf.pytsx0.accept_ra") == "0"
        assert ns.sysctl("net.ipv6.conf.pytsx0.accept_dad") == "0"
        assert ns.sysctl("net.ipv6.conf.pytsx0.hop_limit") == "17"
        assert len(reserved) > 4000
        assert ns.sysctl("net.ipv4.ip_local_reserved_ports") == reserved
    assert host_ns.link("pytsx0") is None
