"""`netctl network create -d overlay` and friends: overlay networks live in the cluster
store (etcd, daemon.json's `cluster-store`), so every member sees the same ones.

    create  -> one etcd transaction: the network's spec and its VNI's claim, both only
               if absent (two members creating at once cannot share a name or a VNI);
               then this member's conflist
    sync    -> every member mirrors the store into conflists (`ls`, `inspect`, `rm` call
               it), so any CNI runtime on a member can use the network by name
    rm      -> refused while any host's lease says it has containers on the network
    reload  -> tells this host's agents (SIGHUP) to re-list and re-program from etcd

The conflist holds one plugin, `overlay`, carrying the cluster-store keys, so the
plugin can start this host's agent on the first ADD.
"""

from __future__ import annotations

import json
import os
import signal
from typing import TYPE_CHECKING, Any

from pycni import errors
from pycni.overlay import spec as ospec
from pycni.runtime.networks import NetworkError

if TYPE_CHECKING:
    from pycni.overlay.store import Store
    from pycni.runtime.networks import Network, NetworkStore

VNI_BASE = 4096  # Docker's overlay driver starts its VXLAN IDs above 4096
OPT_VNI = "vxlan_id"
OPT_MTU = "com.docker.network.driver.mtu"


class OverlayError(NetworkError):
    """An overlay network cannot be created or removed as asked (code 7, like any
    network error, in Docker's words)."""


def cluster_of(netstore: NetworkStore) -> ospec.ClusterStore | None:
    cfg = netstore.daemon_config()
    if not cfg.cluster_store:
        return None
    return ospec.ClusterStore(cfg.cluster_store, cfg.cluster_store_opts)


def _store(netstore: NetworkStore) -> tuple[Store, ospec.ClusterStore]:
    cluster = cluster_of(netstore)
    if cluster is None:
        raise OverlayError(
            "overlay networks need a cluster store",
            'set "cluster-store": "etcd://host:port,..." and "cluster-advertise" in daemon.json',
        )
    from pycni.overlay.store import Store

    return Store(cluster), cluster


def _vni_key(vni: int) -> str:
    return f"{ospec.PREFIX}/vnis/{vni}"


def create(
    netstore: NetworkStore,
    name: str,
    subnets: list[str],
    ip_ranges: list[str],
    internal: bool,
    mtu: int | None,
    labels: dict[str, str],
    options: dict[str, str],
) -> Network:
    store, cluster = _store(netstore)
    if len(subnets) != 1:
        raise OverlayError(
            "an overlay network needs exactly one IPv4 --subnet",
            "e.g. --subnet 10.50.0.0/16 (each host leases a /24 of it)",
        )
    if ip_ranges:
        raise OverlayError(
            "--ip-range is not supported for overlay networks",
            "each host leases a /24 of --subnet and hands out its addresses",
        )
    unknown = sorted(set(options) - {OPT_VNI, OPT_MTU})
    if unknown:
        raise OverlayError(
            f'unknown option "{unknown[0]}" for driver overlay',
            "use vxlan_id, com.docker.network.driver.mtu",
        )
    if OPT_MTU in options:
        try:
            mtu = int(options[OPT_MTU])
        except ValueError:
            raise OverlayError(f"invalid {OPT_MTU} {options[OPT_MTU]!r}") from None
    vnis: list[int]
    if OPT_VNI in options:
        try:
            vnis = [int(options[OPT_VNI])]
        except ValueError:
            raise OverlayError(f"invalid {OPT_VNI} {options[OPT_VNI]!r}") from None
    else:
        _rev, used = store.get_prefix(f"{ospec.PREFIX}/vnis/")
        taken = {int(kv.key.rsplit("/", 1)[-1]) for kv in used}
        vnis = [v for v in range(VNI_BASE + 1, VNI_BASE + 1 + len(taken) + 8) if v not in taken]
    network_spec = None
    for vni in vnis:
        network_spec = ospec.NetworkSpec(
            name, subnets[0], vni, mtu=mtu or 0, internal=internal,
        )  # fmt: skip
        made = store.create_all(
            {ospec.network_key(name): network_spec.to_json(), _vni_key(vni): name}
        )
        if made:
            break
        if store.get(ospec.network_key(name)) is not None:
            raise OverlayError(f"network with name {name} already exists")
        if OPT_VNI in options:
            raise OverlayError(f"{OPT_VNI} {vni} is already used by another overlay network")
    else:
        raise errors.TryAgainLater("could not claim a free VXLAN ID (concurrent creates)")
    assert network_spec is not None
    meta_extra = {"labels": labels, "options": options}
    write_conflist(netstore, network_spec, cluster, meta_extra)
    return netstore.resolve(name)


def conflist(
    network_spec: ospec.NetworkSpec, cluster: ospec.ClusterStore, advertise: str,
    meta_extra: dict[str, Any] | None = None, run_dir: str = "",
) -> dict[str, Any]:  # fmt: skip
    import hashlib

    plugin: dict[str, Any] = {
        "type": "overlay",
        "clusterStore": cluster.url(),
        "clusterAdvertise": advertise,
        # the container's names (netctl's, podman's), published to every member
        "capabilities": {"aliases": True},
    }
    if cluster.opts():
        plugin["clusterStoreOpts"] = cluster.opts()
    meta: dict[str, Any] = {
        # the same id on every member: derived from the name and the VNI
        "id": hashlib.sha256(
            f"overlay {network_spec.name} {network_spec.vni}".encode()
        ).hexdigest(),
        "created": "",
        "driver": "overlay",
        "scope": "global",
        "internal": network_spec.internal,
        "ipv6": False,
        "subnets": [str(network_spec.subnet)],
        "gateways": [str(network_spec.subnet.network_address + 1)],
        "ipRange": {str(network_spec.subnet): network_spec.ip_range}
        if network_spec.ip_range
        else {},
        "auxAddresses": {},
        "vni": network_spec.vni,
        "labels": {},
        "options": {OPT_VNI: str(network_spec.vni)},
    }
    meta.update(meta_extra or {})
    plugins = [plugin]
    if run_dir:
        # names for other runtimes' containers too (podman, kubelet): netctl's resolver
        plugins.append({"type": "dns", "runDir": run_dir, "internal": network_spec.internal,
                        "capabilities": {"aliases": True}})  # fmt: skip
    return {"cniVersion": "1.0.0", "name": network_spec.name, "plugins": plugins, "netctl": meta}


def write_conflist(
    netstore: NetworkStore, network_spec: ospec.NetworkSpec, cluster: ospec.ClusterStore,
    meta_extra: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    cfg = netstore.daemon_config()
    obj = conflist(
        network_spec, cluster, cfg.cluster_advertise or "", meta_extra,
        os.path.abspath(netstore.paths.run),
    )  # fmt: skip
    from pycni.atomicfile import write_atomic

    path = netstore.path_of(network_spec.name)
    text = json.dumps(obj, indent=2, sort_keys=True)
    write_atomic(path, text, mode=0o644, dir_mode=0o755)


def outdated(net: Network) -> bool:
    """An overlay conflist of an earlier version, whose overlay plugin lacks the
    `aliases` capability: its containers would publish no names to the other members."""
    if net.driver != "overlay" or net.conflist is None:
        return False
    return not any(
        p.get("type") == "overlay" and (p.get("capabilities") or {}).get("aliases") is True
        for p in net.conflist.plugins
    )


def _local_overlays(netstore: NetworkStore) -> dict[str, Network]:
    return {n.name: n for n in netstore.list() if n.driver == "overlay"}


def clustered(netstore: NetworkStore) -> bool:
    """Whether daemon.json names a cluster store, read without parsing it (this runs
    on `network ls` and on a network name not found, which must stay cheap)."""
    try:
        with open(netstore.paths.daemon_config, "rb") as fh:
            return b'"cluster-store"' in fh.read()
    except OSError:
        return False


def sync(netstore: NetworkStore) -> list[str]:
    """Mirror the store's overlay networks into this member's conflists; warnings."""
    if cluster_of(netstore) is None:
        return []
    try:
        store, cluster = _store(netstore)
        _rev, kvs = store.get_prefix(f"{ospec.PREFIX}/networks/")
    except errors.TryAgainLater as exc:
        return [f"overlay networks not refreshed: {exc.msg}"]
    remote = {}
    for kv in kvs:
        try:
            remote[kv.key.rsplit("/", 1)[-1]] = ospec.NetworkSpec.from_json(kv.value)
        except (ValueError, KeyError, errors.CniError):
            continue
    local = _local_overlays(netstore)
    for name, network_spec in remote.items():
        have = local.get(name)
        if have is None or have.meta.get("vni") != network_spec.vni:
            write_conflist(netstore, network_spec, cluster)
        elif outdated(have):
            # written by an earlier version: the same network, today's chain, its labels
            kept: dict[str, Any] = {
                k: have.meta[k] for k in ("labels", "options", "created") if k in have.meta
            }
            write_conflist(netstore, network_spec, cluster, kept)
    for name, net in local.items():
        if name not in remote:
            try:
                os.unlink(net.config_file)
            except FileNotFoundError:
                pass
    return []


def remove(netstore: NetworkStore, net: Network) -> None:
    """Delete the network from the store, refused while any host has containers on it."""
    store, _cluster = _store(netstore)
    _rev, counts = store.get_prefix(ospec.endpoints_prefix(net.name))
    busy = [
        f"{kv.key.rsplit('/', 1)[-1]} ({kv.value})"
        for kv in counts
        if kv.value.isdigit() and int(kv.value) > 0
    ]
    if busy:
        raise OverlayError(
            f"error while removing network: network {net.name} id {net.id} has active "
            f"endpoints on hosts {', '.join(busy)}",
            "remove the containers on those hosts first",
        )
    spec_kv = store.get(ospec.network_key(net.name))
    if spec_kv is not None:
        network_spec = ospec.NetworkSpec.from_json(spec_kv.value)
        store.delete(ospec.network_key(net.name))
        store.delete(_vni_key(network_spec.vni))
    try:
        os.unlink(net.config_file)
    except FileNotFoundError:
        pass


def reload(state_dir: str) -> list[str]:
    """SIGHUP every overlay agent of this host: re-list from etcd and re-program."""
    out: list[str] = []
    root = os.path.join(state_dir, "overlay")
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return out
    for name in names:
        if not ospec.agent_running(os.path.join(root, name)):
            continue
        try:
            with open(os.path.join(root, name, "agent.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError):
            continue
        out.append(f"overlay network {name}: agent {pid} re-programs from the cluster store")
    return out
