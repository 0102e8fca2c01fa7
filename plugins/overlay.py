"""overlay: a meta plugin joining containers to a multi-host VXLAN network (flannel's CNI
plugin model).

The host's share of the overlay (a subnet leased in etcd by the per-host agent,
pycni.overlay.agent) is read from <PYCNI_STATE_DIR>/overlay/NAME/subnet.json; ADD then
delegates to `bridge` (bridge ovbr<VNI>, gateway in the host subnet, MTU leaving room
for VXLAN) with `host-local` over that subnet. So ADD does no etcd round trip. The
first ADD on a host starts the agent (no manual step) and waits for its lease; if etcd
cannot be reached then, or the lease has not been renewed for longer than its TTL
(its subnet may already be someone else's), ADD answers code 11.

    {"cniVersion": "1.0.0", "name": "ovl", "type": "overlay",
     "clusterStore": "etcd://192.0.2.11:2379,...",   # Docker's cluster-store
     "clusterAdvertise": "eth0",                     # interface or address (underlay)
     "clusterStoreOpts": {"kv.cacertfile": ..., "kv.certfile": ..., "kv.keyfile": ...},
     "leaseTTL": 30, "startTimeout": 10}

DEL delegates with the bridge config saved at ADD (the lease may have changed since),
and succeeds when there is nothing to delete.
"""

from __future__ import annotations

import os
import time

from pycni import conf, errors, fastjson, invoke, skel

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any

    from pycni.recordstore import FlatRecords
    from pycni.result import Result

WHERE = "overlay"


class OverlayConf:
    __slots__ = ("advertise", "cluster_store", "name", "store_opts", "timeout", "ttl")

    def __init__(self, d: dict[str, Any]) -> None:
        #: network name (the overlay network's name in the cluster store)
        self.name: str = d["name"]
        #: etcd://host:port[,host:port...]; may be empty when the agent already runs
        self.cluster_store = conf.get_str(d, "clusterStore", "", WHERE)
        #: the underlay interface or address VXLAN packets leave from
        self.advertise = conf.get_str(d, "clusterAdvertise", "", WHERE)
        opts = conf.get_dict(d, "clusterStoreOpts", WHERE)
        #: kv.cacertfile / kv.certfile / kv.keyfile, as Docker names them
        self.store_opts: dict[str, str] = {
            k: conf.get_str(opts, k, "", WHERE)
            for k in ("kv.cacertfile", "kv.certfile", "kv.keyfile")
        }
        #: the subnet lease's TTL in etcd (seconds)
        self.ttl = conf.get_int(d, "leaseTTL", 30, WHERE, 2, 3600)
        #: how long the first ADD on a host waits for the agent's lease (seconds)
        self.timeout = conf.get_int(d, "startTimeout", 10, WHERE, 1, 120)


def _dir(name: str) -> str:
    from pycni.overlay.spec import network_dir

    return network_dir(name)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            obj = fastjson.loads(f.read())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def start_agent(c: OverlayConf) -> subprocess.Popen[bytes]:
    """Start the per-host agent for this network, detached (its own session, log file)."""
    import subprocess
    import sys

    if not c.cluster_store or not c.advertise:
        raise errors.InvalidConfig(
            f"{WHERE}: no agent serves network {c.name} on this host, and the config has no "
            "clusterStore/clusterAdvertise to start one",
            "set clusterStore (etcd://host:port,...) and clusterAdvertise (underlay interface)",
        )
    from pycni.overlay.spec import ClusterStore

    cluster = ClusterStore(c.cluster_store, {k: v for k, v in c.store_opts.items() if v})
    d = _dir(c.name)
    os.makedirs(d, exist_ok=True)
    argv = [sys.executable, "-m", "pycni.overlay.agent", "--network", c.name,
            "--cluster-store", cluster.url(), "--cluster-advertise", c.advertise,
            "--ttl", str(c.ttl)]  # fmt: skip
    for flag, key in (
        ("--cacert", "kv.cacertfile"),
        ("--cert", "kv.certfile"),
        ("--key", "kv.keyfile"),
    ):
        if c.store_opts.get(key):
            argv += [flag, c.store_opts[key]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    with open(os.path.join(d, "agent.log"), "ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            start_new_session=True, close_fds=True, cwd="/",
        )  # fmt: skip


def host_lease(c: OverlayConf) -> dict[str, Any]:
    """This host's lease of the network, starting the agent (and waiting) if needed."""
    d = _dir(c.name)
    lease_path = os.path.join(d, "subnet.json")
    status_path = os.path.join(d, "status.json")
    started = False
    agent: subprocess.Popen[bytes] | None = None
    deadline = time.monotonic() + c.timeout
    while True:
        lease = _read_json(lease_path)
        status = _read_json(status_path) or {}
        from pycni.overlay.spec import agent_running

        alive = agent_running(d)
        if lease is not None and alive:
            age = time.time() - float(lease.get("renewed", 0))
            if age <= float(lease.get("ttl", 30)):
                return lease
            raise errors.TryAgainLater(
                f"{WHERE}: this host's lease of {lease.get('subnet')} on network {c.name} was "
                f"last renewed {age:.0f}s ago (TTL {lease.get('ttl')}s): the cluster store is "
                "unreachable",
                str(status.get("error", "")) or "check the etcd members and the agent's log",
            )
        if status.get("state") == "unavailable" and alive:
            raise errors.TryAgainLater(
                f"{WHERE}: cannot lease a subnet of network {c.name}: "
                + str(status.get("error", "etcd unavailable")).split(": ", 1)[0],
                str(status.get("error", "")),
            )
        if status.get("state") == "error" and started and not alive:
            raise errors.InvalidConfig(
                f"{WHERE}: the overlay agent failed", str(status.get("error"))
            )
        if agent is not None and agent.poll() is not None and not agent_running(d):
            raise errors.TryAgainLater(
                f"{WHERE}: the overlay agent of network {c.name} exited ({agent.returncode}) "
                "before it had a lease",
                f"see {os.path.join(d, 'agent.log')}; the next ADD starts it again",
            )
        if not alive and not started:
            if status.get("state") in ("unavailable", "error", "starting"):
                os.unlink(status_path)
            agent = start_agent(c)
            started = True
        if time.monotonic() > deadline:
            raise errors.TryAgainLater(
                f"{WHERE}: the overlay agent of network {c.name} has no lease after {c.timeout}s",
                f"see {os.path.join(d, 'agent.log')}",
            )
        time.sleep(0.02)


def bridge_conf(cmd: skel.CmdArgs, lease: dict[str, Any]) -> dict[str, Any]:
    """The delegate: bridge + host-local over this host's subnet (flannel's delegate)."""
    internal = bool(lease.get("internal"))
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": lease["subnet"]}]],
        "dataDir": os.path.join(_dir(cmd.conf["name"]), "ipam"),
    }
    if internal:
        ipam["routes"] = [{"dst": lease["overlay"]}]
    out: dict[str, Any] = {
        "cniVersion": cmd.cni_version,
        "name": cmd.conf["name"],
        "type": "bridge",
        "bridge": f"ovbr{lease['vni']}"[:15],
        "isGateway": True,
        "isDefaultGateway": not internal,
        # the bridge's masquerade spares only the host's own /24, so it would rewrite
        # cross-host overlay traffic too: egress is masqueraded by this plugin instead,
        # sparing the whole overlay (egress_masquerade)
        "ipMasq": False,
        "hairpinMode": True,
        "mtu": int(lease["mtu"]),
        "ipam": ipam,
    }
    for key in ("runtimeConfig", "args"):
        if key in cmd.conf:
            out[key] = cmd.conf[key]
    return out


def poke_agent(name: str) -> None:
    """Tell the agent a container came or went (it publishes the host's count in etcd)."""
    import signal

    from pycni.overlay.spec import agent_running

    d = _dir(name)
    try:
        with open(os.path.join(d, "agent.pid"), "rb") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return
    if agent_running(d):
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            pass


def run_bridge(command: str, delegate: dict[str, Any], cmd: skel.CmdArgs) -> Result | None:
    """The bridge delegate's verb: in this process when the `bridge` found in CNI_PATH is
    ours (the same verbs, one process start less, as ipam_exec does for IPAM), exec'd
    otherwise (the reference bridge, or PYCNI_DELEGATE_EXEC=1)."""
    stdin = fastjson.dumps(delegate).encode()
    path = invoke.find_in_path("bridge", cmd.path_list)
    if os.environ.get("PYCNI_DELEGATE_EXEC") != "1" and invoke.own_plugin(path) == "bridge":
        from pycni.plugins import bridge

        sub = skel.CmdArgs(command, cmd.container_id, cmd.netns, cmd.ifname, cmd.args,
                           cmd.path, stdin, skel.decode_conf(stdin))  # fmt: skip
        if command == "ADD":
            result = bridge.VERBS.add(sub)
            assert not isinstance(result, skel.PassThrough)  # bridge always makes a result
            return result
        verb = bridge.VERBS.delete if command == "DEL" else bridge.VERBS.check
        if verb is not None:
            verb(sub)
        return None
    if command == "ADD":
        return invoke.delegate_add("bridge", stdin)
    invoke.delegate("bridge", command, stdin)
    return None


def egress_masquerade(cmd: skel.CmdArgs, lease: dict[str, Any], result: Result) -> None:
    """Traffic from the container to anything outside the overlay leaves with the host's
    address; traffic to other overlay addresses keeps the container's (given to the
    firewall as data: the container's address with the overlay's prefix, so the backend's
    "same subnet" exemption covers every host's subnet)."""
    import ipaddress

    from pycni.firewall import get_backend
    from pycni.firewall.base import Attachment

    overlay = ipaddress.IPv4Network(lease["overlay"])
    ips = [
        ipaddress.ip_interface(f"{ip.address.ip}/{overlay.prefixlen}")
        for ip in result.ips
        if ip.address.version == 4 and ip.address.ip in overlay
    ]
    if not ips:
        return
    bridge = f"ovbr{lease['vni']}"[:15]
    get_backend(None).add_masquerade(
        Attachment(cmd.conf["name"], cmd.container_id, cmd.ifname, ips, bridge)
    )


def _network_lock(name: str) -> int:
    """A flock on the network's directory: an ADD's isolation and the last DEL's removal
    of it never interleave (a container added as the last one leaves stays isolated)."""
    import fcntl

    fd = os.open(os.path.join(_dir(name), "isolation.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)  # fmt: skip
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def isolate(name: str, lease: dict[str, Any]) -> None:
    """Keep this overlay apart from every other isolated network on the host (other
    overlays, netctl's bridge networks): its bridge and VXLAN device, handed to the
    firewall as data (pycni/firewall/overlay_isolation.py)."""
    from pycni.firewall import get_backend

    fd = _network_lock(name)
    try:
        vni = lease["vni"]
        get_backend(None).ensure_overlay_isolation(
            name, f"ovbr{vni}"[:15], f"ovx{vni}", bool(lease.get("internal"))
        )
    finally:
        os.close(fd)


def unisolate_if_unused(name: str) -> None:
    """After a DEL: the last container of the network on this host takes the network's
    isolation rules with it."""
    from pycni.firewall import get_backend

    fd = _network_lock(name)
    try:
        try:
            if os.listdir(os.path.join(_dir(name), "containers")):
                return
        except FileNotFoundError:
            pass
        get_backend(None).remove_overlay_isolation(name)
    finally:
        os.close(fd)


def _containers(network: str) -> FlatRecords:
    """The delegate conf of each attachment on this host (what DEL, CHECK and GC run)."""
    from pycni.recordstore import FlatRecords

    return FlatRecords(os.path.join(_dir(network), "containers"))


def _saved(cmd: skel.CmdArgs) -> str:
    return _containers(cmd.conf["name"]).path(cmd.container_id, cmd.ifname)


def _names(network: str) -> FlatRecords:
    """Each attachment's names and addresses, which the agent puts in etcd."""
    from pycni.overlay.names import local_dir
    from pycni.recordstore import FlatRecords

    return FlatRecords(local_dir(network))


def save_names(cmd: skel.CmdArgs, names: list[str], result: Result) -> None:
    """The container's names and addresses on this network, for the agent to put in etcd
    under the host's lease (every member's resolver answers them: docs/overlay.md)."""
    ips = [str(ip.address.ip) for ip in result.ips if ip.address.version == 4]
    if not names or not ips:
        return
    _names(cmd.conf["name"]).save(cmd.container_id, cmd.ifname, {"names": names, "ips": ips})


def forget_names(cmd: skel.CmdArgs) -> None:
    _names(cmd.conf["name"]).delete(cmd.container_id, cmd.ifname)


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = OverlayConf(cmd.conf)
    names = conf.dns_names(cmd.conf, cmd.cni_args, WHERE)
    lease = host_lease(c)
    delegate = bridge_conf(cmd, lease)
    path = _saved(cmd)
    _containers(c.name).write(path, delegate)
    try:
        result = run_bridge("ADD", delegate, cmd)
        assert result is not None
        if not lease.get("internal"):
            egress_masquerade(cmd, lease, result)
        isolate(c.name, lease)
        save_names(cmd, names, result)
        poke_agent(c.name)
        return result
    except errors.CniError:
        try:
            _release(cmd, delegate)
        except errors.CniError:
            pass
        os.unlink(path)
        forget_names(cmd)
        unisolate_if_unused(c.name)
        raise


def _release(cmd: skel.CmdArgs, delegate: dict[str, Any]) -> None:
    """Undo one attachment: its masquerade entry (keyed by attachment; gone is fine),
    then the bridge delegate's DEL."""
    from pycni.firewall import get_backend

    get_backend(None).del_masquerade(cmd.conf["name"], cmd.container_id, cmd.ifname)
    run_bridge("DEL", delegate, cmd)


def cmd_del(cmd: skel.CmdArgs) -> None:
    path = _saved(cmd)
    delegate = _read_json(path)
    if delegate is None:
        forget_names(cmd)
        return  # never added here, or already deleted
    _release(cmd, delegate)
    forget_names(cmd)
    os.unlink(path)
    unisolate_if_unused(cmd.conf["name"])
    poke_agent(cmd.conf["name"])


def cmd_check(cmd: skel.CmdArgs) -> None:
    delegate = _read_json(_saved(cmd))
    if delegate is None:
        raise errors.UnknownContainer(
            f"{WHERE}: unknown container {cmd.container_id}",
            f"no overlay attachment {cmd.ifname} was added for it on {cmd.conf['name']}",
        )
    if "prevResult" in cmd.conf:
        delegate["prevResult"] = cmd.conf["prevResult"]
    run_bridge("CHECK", delegate, cmd)


def cmd_gc(cmd: skel.CmdArgs) -> None:
    """CNI GC: every attachment saved here that the runtime no longer lists is deleted
    through its delegate (its host-local lease, veth and records go with it), e.g. one
    whose ADD was killed midway."""
    valid = skel.valid_attachments(cmd.conf)
    if valid is None:
        return
    containers = _containers(cmd.conf["name"])
    removed = 0
    for cid, ifname in containers.entries():
        path = containers.path(cid, ifname)
        delegate = _read_json(path)
        if delegate is None or (cid, ifname) in valid:
            continue
        sub = skel.CmdArgs("DEL", cid, "", ifname, "", cmd.path, b"", cmd.conf)
        _release(sub, delegate)
        forget_names(sub)
        os.unlink(path)
        removed += 1
    if removed:
        unisolate_if_unused(cmd.conf["name"])
        poke_agent(cmd.conf["name"])


VERBS = skel.Verbs(
    about="pycni overlay meta plugin", add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc
)


def main() -> None:
    skel.main(VERBS)
