"""`netctl system gc` and `netctl system reload`: reconcile state after crashes,
reboots and flushes.

gc: containers whose workload is gone but whose network was never torn down (the
supervisor or netctl was SIGKILLed, or the machine rebooted and the run dir is gone)
get their CNI DEL now; then every network gets a CNI GC whose valid list is the
containers that really run, which also reclaims leases and firewall entries that no
record knows about (a crash between ADD and the record); stale netns mounts and
cached results go last.

reload: re-apply the saved firewall state (published ports, masquerade, isolation,
spoof checks, forward accepts: `pycni.firewall.replay()`) without restarting containers, after someone ran `nft flush ruleset` or restarted a
firewall manager (netavark's firewall-reload); and when someone deleted a network's
bridge, re-create it and re-attach the running containers' host veths first (the
kernel detaches them but keeps them, and the containers keep their addresses and
routes), so the firewall state re-applied next has its bridge again.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pycni import errors, netns, netsetup
from pycni.runtime.containers import alive

if TYPE_CHECKING:
    from pycni.firewall.base import Isolation
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
                rt.teardown_locked(rec)
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
    nets = [rt.loopback_network()]
    try:
        nets += [n.conflist for n in rt.networks.list() if n.conflist is not None]
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
    from pycni import firewall

    return _repair_bridges(rt) + firewall.replay(_isolated_networks(rt))


def _isolated_networks(rt: Runtime) -> list[Isolation]:
    """The isolation of each network whose conflist chains the isolation plugin, as
    this runtime writes it (runtime/networks.py): the firewall records it where a
    version that kept no records isolated the network."""
    from pycni import conf
    from pycni.firewall.base import Isolation

    out = []
    for net in rt.networks.list():
        conflist = net.conflist
        plugin = next(
            (p for p in (conflist.plugins if conflist else []) if p.get("type") == "isolation"),
            None,
        )
        if plugin is None or not net.bridge:
            continue
        try:
            routed = frozenset(
                f for f in (4, 6) if conf.get_bool(plugin, f"directRouting{f}", False, "isolation")
            )
            out.append(
                Isolation(
                    net.name,
                    net.bridge,
                    conf.get_bool(plugin, "internal", False, "isolation"),
                    conf.get_bool(plugin, "icc", True, "isolation"),
                    routed,
                )
            )
        except errors.CniError:
            continue  # a hand-edited conflist: its next ADD says what is wrong
    return out


def _bridge_spec(plugin: dict[str, Any]) -> netsetup.BridgeSpec:
    """The bridge plugin's keys that shape the bridge and its ports, as this runtime
    writes them into its conflists (runtime/networks.py)."""
    from pycni import conf

    where = "bridge"
    gateway = conf.get_bool(plugin, "isGateway", False, where) or conf.get_bool(
        plugin, "isDefaultGateway", False, where
    )
    return netsetup.BridgeSpec(
        conf.validate_link_name(conf.get_str(plugin, "bridge", "cni0", where), where, "bridge"),
        mtu=conf.get_int(plugin, "mtu", 0, where, 0, 65535),
        promisc=conf.get_bool(plugin, "promiscMode", False, where),
        vlan=conf.get_int(plugin, "vlan", 0, where, 0, 4094),
        hairpin=conf.get_bool(plugin, "hairpinMode", False, where),
        port_isolation=conf.get_bool(plugin, "portIsolation", False, where),
        is_gateway=gateway,
        force_address=conf.get_bool(plugin, "forceAddress", False, where),
    )


def _repair_bridges(rt: Runtime) -> list[str]:
    """Bridges of networks with running containers, re-created and re-populated when
    someone deleted them (`netsetup.repair_bridge`, the kernel verbs the bridge plugin
    uses too)."""
    running = [rec for rec in rt.store.all() if _running(rec)]
    out: list[str] = []
    for net in rt.networks.list():
        conflist = net.conflist
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
        try:
            spec = _bridge_spec(plugin)
            # The bridge's MAC as the ADDs reported it (libcni's cached results).
            mac = ""
            for rec, att in attached:
                cached = rt.cni.cached_result(conflist, rt.runtime_conf(rec, att.ifname))
                interfaces = cached.interfaces if cached is not None else []
                mac = next((i.mac for i in interfaces if i.name == spec.name), "")
                if mac:
                    break
            done = netsetup.repair_bridge(spec, ports, mac)
        except errors.CniError as exc:
            done = [f"cannot repair bridge: {exc}"]
        out.extend(f"network {net.name}: {line}" for line in done)
    return out
