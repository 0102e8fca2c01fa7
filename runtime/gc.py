"""`netctl system gc` and `netctl system reload`: reconcile state after crashes,
reboots and flushes.

gc: containers whose workload is gone but whose network was never torn down (the
supervisor or netctl was SIGKILLed, or the machine rebooted and the run dir is gone)
get their CNI DEL now; then every network gets a CNI GC whose valid list is the
containers that really run, which also reclaims leases and firewall entries that no
record knows about (a crash between ADD and the record); stale netns mounts and
cached results go last.

reload: re-apply the saved firewall state (published ports, masquerade, isolation)
without restarting containers, after someone ran `nft flush ruleset` or restarted a
firewall manager (netavark's firewall-reload); and when someone deleted a network's
bridge, re-create it and re-attach the running containers' host veths first (the
kernel detaches them but keeps them, and the containers keep their addresses and
routes), so the firewall state re-applied next has its bridge again.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pycni.runtime.containers import alive

from pycni import errors, netns

if TYPE_CHECKING:
    from pycni.runtime.containers import ContainerRecord
    from pycni.runtime.run import Runtime


def _running(rec: ContainerRecord) -> bool:
    """The container's workload runs (its pid, with the start time we recorded)."""
    return rec.status == "running" and alive(rec.pid, rec.pid_start)


def system_gc(rt: Runtime) -> list[str]:
    report: list[str] = []
    live: set[str] = set()
    for rec in rt.store.all():
        if _running(rec):
            live.add(rec.id)
            continue
        if not rec.torn_down:
            try:
                rt._teardown_locked(rec)
                report.append(f"released the network of exited container {rec.name}")
            except errors.CniError as exc:
                report.append(f"could not release {rec.name}: {exc}")
    # every interface of a live container (eth1.. of its other networks too)
    valid = [
        (rec.id, ifname)
        for rec in rt.store.all()
        if rec.id in live
        for ifname in {"eth0", "lo", *(a.ifname for a in rec.attachments if a.ifname)}
    ]
    nets = [rt._loopback_net()]
    try:
        nets += [n.conflist for n in rt.networks.list() if getattr(n, "conflist", None) is not None]
    except Exception as exc:  # a broken network file must not stop the GC of the others
        report.append(f"could not list networks: {exc}")
    for net in nets:
        problems = rt.cni.gc(net, valid)
        report.extend(f"network {net.name}: {p}" for p in problems)
    # Namespaces under our run dir that no live container owns (a crash between
    # create and record, or records lost with a reboot of the run dir).
    try:
        names = os.listdir(rt.paths.netns_dir)
    except FileNotFoundError:
        names = []
    owned = {os.path.basename(r.netns) for r in rt.store.all() if r.netns and not r.torn_down}
    for name in names:
        if name not in owned:
            netns.remove(os.path.join(rt.paths.netns_dir, name))
            report.append(f"removed stale network namespace {name}")
    report.append(f"gc done: {len(live)} running container(s) kept")
    return report


def reload(rt: Runtime) -> list[str]:
    from pycni.firewall import get_backend

    out = _repair_bridges(rt)
    for name in ("nftables", "iptables"):
        try:
            backend = get_backend(name)
        except errors.CniError:
            continue
        if not backend.available():
            continue
        count = backend.replay()
        out.append(f"{name}: re-applied {count} attachment(s)")
    out.append(f"isolation: re-applied {_replay_isolation(rt)} network(s)")
    from pycni import spoofcheck

    out.append(f"macspoofchk: re-applied {spoofcheck.replay()} attachment(s)")
    from pycni.firewall import forward

    out.append(f"firewall: re-applied {forward.replay()} forward accept(s)")
    return out


def _repair_bridges(rt: Runtime) -> list[str]:
    """Bridges of networks with running containers, re-created and re-populated when
    someone deleted them (the bridge plugin's own code does it)."""
    from pycni.plugins import bridge

    running = [rec for rec in rt.store.all() if _running(rec)]
    out: list[str] = []
    for net in rt.networks.list():
        conflist = getattr(net, "conflist", None)
        plugin = next(
            (p for p in (conflist.plugins if conflist else []) if p.get("type") == "bridge"),
            None,
        )
        attached = [
            (rec, att)
            for rec in running
            for att in rec.attachments
            if att.network == net.name and att.host_veth
        ]
        if conflist is None or plugin is None or not attached:
            continue  # an unused bridge is created again by the next ADD
        ports = [(att.host_veth, att.ips, att.gateways) for _rec, att in attached]
        # The bridge's MAC as the ADDs reported it (libcni's cached results).
        bridge_name = plugin.get("bridge") or "cni0"
        mac = ""
        for rec, att in attached:
            cached = rt.cni.cached_result(conflist, rt._runtime_conf(rec, att.ifname))
            interfaces = cached.interfaces if cached is not None else []
            mac = next((i.mac for i in interfaces if i.name == bridge_name), "")
            if mac:
                break
        try:
            done = bridge.repair({**plugin, "name": conflist.name}, ports, mac)
        except errors.CniError as exc:
            done = [f"cannot repair bridge: {exc}"]
        out.extend(f"network {net.name}: {line}" for line in done)
    return out


def _replay_isolation(rt: Runtime) -> int:
    """The isolation plugin's rules live per network bridge and are rebuilt from the
    networks' conflists (the plugin keeps no state of its own)."""
    from pycni.plugins import isolation

    from pycni.netlink import Netlink

    count = 0
    with Netlink() as nl:
        for net in rt.networks.list():
            conflist = getattr(net, "conflist", None)
            plugin = next(
                (p for p in (conflist.plugins if conflist else []) if p.get("type") == "isolation"),
                None,
            )
            link = nl.link(net.bridge) if plugin is not None and net.bridge else None
            if link is None:
                continue
            internal = bool(plugin.get("internal", False)) if plugin is not None else False
            icc = bool(plugin.get("icc", True)) if plugin is not None else True
            routed = frozenset(
                f for f in (4, 6) if plugin is not None and plugin.get(f"directRouting{f}") is True
            )
            isolation.apply(isolation.plan_add(link.index, internal, icc, routed))
            count += 1
    return count
