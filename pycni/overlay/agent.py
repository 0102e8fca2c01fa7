"""The per-host overlay agent: one process per host and overlay network.

    python -m pycni.overlay.agent --network NAME --cluster-store etcd://h:p[,h:p]
        --cluster-advertise IFACE|ADDR [--cacert F --cert F --key F] [--ttl S]

It holds this host's subnet lease in etcd (TTL, renewed every TTL/3), programs the VXLAN
device from a watch of every host's lease, and writes the lease file the `overlay` CNI
plugin reads (<PYCNI_STATE_DIR>/overlay/NAME/subnet.json). One agent per network and
host (a flock on agent.lock); started on demand by the plugin, or by systemd
(docs/overlay.md). Killing it disturbs nothing: the kernel keeps forwarding, and the
next agent takes its own lease back (same publicIP) if it comes within the TTL.

Failures: etcd unreachable -> keep forwarding with what is programmed, keep retrying,
status.json says why (the plugin answers code 11 once the lease is older than its
TTL); a watch below the compacted revision -> re-list; the lease found expired on
recovery -> acquire again (own subnet first).
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import signal
import socket
import sys
import time

from pycni import errors
from pycni.overlay import names as onames
from pycni.overlay import spec as ospec
from pycni.overlay import vxlan
from pycni.overlay.store import Compacted, Store, Unavailable


class LeaseLost(Exception):
    pass


class NetworkRemoved(Exception):
    pass


class Wakeup(Exception):
    """Raised by a signal handler to leave a blocking watch read (only while watching)."""


def log(msg: str) -> None:
    print(
        f"{time.strftime('%H:%M:%S')} overlay-agent[{os.getpid()}]: {msg}",
        file=sys.stderr,
        flush=True,
    )


def _public_ip(lease_value: str) -> str | None:
    """The PublicIP of a lease value; None when it is not one (a key someone else wrote)."""
    try:
        v = json.loads(lease_value)
    except ValueError:
        return None
    ip = v.get("PublicIP") if isinstance(v, dict) else None
    return ip if isinstance(ip, str) else None


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        opts = {}
        for k, v in (
            ("kv.cacertfile", args.cacert),
            ("kv.certfile", args.cert),
            ("kv.keyfile", args.key),
        ):
            if v:
                opts[k] = v
        self.cluster = ospec.ClusterStore(args.cluster_store, opts)
        self.name: str = args.network
        self.advertise: str = args.cluster_advertise
        self.ttl: int = args.ttl
        self.dir = ospec.network_dir(self.name)
        self.store = Store(self.cluster)
        self.spec: ospec.NetworkSpec | None = None
        self.lease = 0
        self.subnet: ipaddress.IPv4Network | None = None
        self.public_ip = ""
        self.mtu = 0
        self.renewed = 0.0
        self.peers: dict[str, vxlan.Peer] = {}  # etcd key -> peer
        self.revision = 0
        self.stopping = False
        self.underlay_dev = ""
        self.relist_wanted = False
        self.poked = False
        self.watching = False
        self.key = ""
        self.endpoints = 0
        #: this host's container names as put in etcd under the current lease
        self.names: dict[str, str] = {}
        self.mirror: onames.Mirror | None = None

    # -- files the plugin reads ----------------------------------------------------------

    def status(self, state: str, error: str = "") -> None:
        ospec.write_json_atomic(
            os.path.join(self.dir, "status.json"),
            {"state": state, "error": error, "pid": os.getpid(), "time": time.time()},
        )

    def write_lease_file(self) -> None:
        assert self.spec is not None and self.subnet is not None
        ospec.write_json_atomic(
            os.path.join(self.dir, "subnet.json"),
            {
                "network": self.name,
                "overlay": str(self.spec.subnet),
                "subnet": str(self.subnet),
                "vni": self.spec.vni,
                "mtu": self.mtu,
                "internal": self.spec.internal,
                "publicIP": self.public_ip,
                "ttl": self.ttl,
                "renewed": self.renewed,
                "pid": os.getpid(),
            },
        )

    def previous_subnet(self) -> ipaddress.IPv4Network | None:
        try:
            with open(os.path.join(self.dir, "subnet.json")) as f:
                return ipaddress.IPv4Network(json.load(f)["subnet"])
        except (OSError, ValueError, KeyError):
            return None

    # -- the lease -------------------------------------------------------------------------

    def load_spec(self) -> ospec.NetworkSpec:
        kv = self.store.get(ospec.network_key(self.name))
        if kv is None:
            raise errors.InvalidConfig(
                f"overlay network {self.name!r} is not in the cluster store",
                "create it with `netctl network create -d overlay` on any member",
            )
        return ospec.NetworkSpec.from_json(kv.value)

    def acquire(self) -> None:
        assert self.spec is not None
        spec = self.spec
        mac = ospec.vtep_mac(spec.vni, self.public_ip)
        self.endpoints = -1  # published again under the new lease
        self.names = {}
        value = ospec.lease_value(self.public_ip, mac, socket.gethostname())
        self.lease = self.store.grant(self.ttl)
        prefix = ospec.subnets_prefix(self.name)
        for _ in range(32):
            _rev, kvs = self.store.get_prefix(prefix)
            taken = set()
            for kv in kvs:
                try:
                    taken.add(ospec.subnet_from_key(kv.key))
                except ValueError:
                    log(f"ignoring a key that names no subnet: {kv.key}")
            # 1. a restart within the TTL: our own key (same publicIP) is still there
            for kv in kvs:
                if _public_ip(kv.value) == self.public_ip:
                    if self.store.replace(kv.key, kv.mod_revision, value, self.lease):
                        self.subnet = ospec.subnet_from_key(kv.key)
                        self.key = kv.key
                        if kv.lease and kv.lease != self.lease:
                            try:
                                self.store.revoke(kv.lease)
                            except errors.CniError:
                                pass  # it expires by itself
                        return
                    break  # changed under us: list again
            else:
                # 2. the subnet this host had before, if still free; 3. the lowest free one
                prev = self.previous_subnet()
                candidates = []
                if prev is not None and prev not in taken and prev.subnet_of(spec.subnet):
                    candidates.append(prev)
                free = ospec.pick_free(spec, taken | set(candidates))
                if free is not None:
                    candidates.append(free)
                if not candidates:
                    raise errors.InvalidConfig(
                        f"overlay network {self.name}: no free /{spec.subnet_len} left in {spec.subnet}",
                        "remove hosts or use a larger subnet",
                    )
                for sub in candidates:
                    if self.store.create(ospec.subnet_key(self.name, sub), value, self.lease):
                        from pycni import fault

                        fault.point("after-subnet-lease")
                        self.subnet = sub
                        self.key = ospec.subnet_key(self.name, sub)
                        return
        raise errors.TryAgainLater(f"overlay network {self.name}: subnet allocation kept racing")

    def count_endpoints(self) -> int:
        """Containers attached on this host (the plugin's saved delegate configs)."""
        try:
            return len(os.listdir(os.path.join(self.dir, "containers")))
        except FileNotFoundError:
            return 0

    def renew(self) -> None:
        left = self.store.keepalive(self.lease)
        if left <= 0:
            raise LeaseLost()
        self.renewed = time.time()
        self.write_lease_file()
        if self.store.get(ospec.network_key(self.name)) is None:
            raise NetworkRemoved()
        self.publish_endpoints()
        self.publish_names()

    def publish_endpoints(self) -> None:
        """This host's container count, under its lease, in a prefix no agent watches:
        what `netctl network rm` on any member checks. Written only when it changed."""
        n = self.count_endpoints()
        if n != self.endpoints:
            self.store.put(ospec.endpoints_prefix(self.name) + self.public_ip, str(n), self.lease)
            self.endpoints = n

    def publish_names(self) -> None:
        """The names of this host's containers (the plugin's files), under its lease:
        what every other host's resolver answers for them (pycni/overlay/names.py)."""
        want = onames.local_values(self.name, self.public_ip)
        onames.publish(self.store, self.lease, want, self.names)

    # -- the datapath -----------------------------------------------------------------------

    def relist(self) -> None:
        rev, kvs = self.store.get_prefix(ospec.subnets_prefix(self.name))
        self.peers = {}
        for kv in kvs:
            self._put(kv.key, kv.value)
        self.revision = rev
        self.reconcile()

    def _put(self, key: str, value: str) -> None:
        try:
            sub = ospec.subnet_from_key(key)
            if sub == self.subnet:
                return
            v = json.loads(value)
            self.peers[key] = vxlan.Peer(sub, v["PublicIP"], v["BackendData"]["VtepMAC"])
        except (ValueError, KeyError, TypeError):
            log(f"ignoring malformed lease {key}")

    def reconcile(self) -> None:
        assert self.spec is not None
        want = set(self.peers.values())
        have = vxlan.programmed(self.spec.vni)
        vxlan.program(self.spec.vni, want - have, have - want)

    def serve(self) -> None:
        """Watch leases and renew ours until the lease is lost or we are told to stop."""
        assert self.spec is not None
        self.relist()
        # renewed first (it publishes the endpoints and names too): a lease that ended
        # behind our back (etcd out of reach for longer than the TTL) is LeaseLost here,
        # whereas a put under it fails as if etcd were unavailable, again at every retry
        self.renew()
        if self.mirror is None:
            # other hosts' names, watched in a thread (and a connection) of their own
            self.mirror = onames.Mirror(Store(self.cluster), self.name, self.public_ip, log)
            self.mirror.start()
        self.status("ready")
        interval = max(self.ttl / 3, 0.5)
        while not self.stopping:
            if time.time() - self.renewed >= interval:
                self.renew()
            idle = max(0.2, interval - (time.time() - self.renewed))
            try:
                self.watching = True
                if self.poked:  # poked while not watching: no Wakeup was raised then
                    raise Wakeup()
                for batch in self.store.watch_prefix(
                    ospec.subnets_prefix(self.name), self.revision + 1, idle
                ):
                    self.watching = False
                    before = set(self.peers.values())
                    for ev in batch:
                        if ev["type"] == "DELETE":
                            self.peers.pop(ev["kv"].key, None)
                        else:
                            self._put(ev["kv"].key, ev["kv"].value)
                        self.revision = max(self.revision, ev["revision"])
                    # events are applied as deltas (a join or a leave touches one peer's
                    # entries); kernel state is read back only on a re-list
                    after = set(self.peers.values())
                    vxlan.program(self.spec.vni, after - before, before - after)
                    self.watching = True  # a poke from here on raises Wakeup
                    if time.time() - self.renewed >= interval or self.stopping or self.poked:
                        break
            except Compacted:
                log("watch fell behind compaction: re-listing")
                self.relist()
            except Wakeup:
                pass
            finally:
                self.watching = False
            if self.poked:
                self.poked = False
                self.publish_endpoints()
                self.publish_names()
            if self.relist_wanted:
                self.relist_wanted = False
                log("reload: re-listing and re-programming")
                if self.store.get(ospec.network_key(self.name)) is None:
                    raise NetworkRemoved()
                assert self.subnet is not None
                vxlan.ensure_device(
                    self.spec.vni, self.public_ip, self.underlay_dev,
                    ospec.vtep_mac(self.spec.vni, self.public_ip), self.mtu, self.subnet,
                )  # fmt: skip
                self.relist()

    def run(self) -> int:
        os.makedirs(self.dir, exist_ok=True)
        # handlers first: a plugin may signal us as soon as agent.pid names us
        signal.signal(signal.SIGHUP, self._reload)
        signal.signal(signal.SIGUSR1, self._poke)
        lock = open(os.path.join(self.dir, "agent.lock"), "w")  # noqa: SIM115 (held for life)
        # A plugin probing for a live agent holds a shared lock for microseconds: retry
        # briefly before concluding that another agent serves the network.
        for attempt in range(50):
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 49:
                    log("another agent serves this network")
                    return 0
                time.sleep(0.01)
        with open(os.path.join(self.dir, "agent.pid"), "w") as f:
            f.write(f"{os.getpid()}\n")
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.status("starting")
        dev, self.public_ip, ul_mtu = vxlan.underlay(self.advertise)
        self.underlay_dev = dev
        while not self.stopping:
            try:
                if self.spec is None:
                    self.spec = self.load_spec()
                    self.mtu = self.spec.mtu or ul_mtu - ospec.VXLAN_OVERHEAD
                if self.lease == 0:
                    self.acquire()
                    assert self.subnet is not None
                    log(f"lease {self.subnet} (etcd lease {self.lease:x})")
                    vxlan.ensure_device(
                        self.spec.vni, self.public_ip, dev,
                        ospec.vtep_mac(self.spec.vni, self.public_ip), self.mtu, self.subnet,
                    )  # fmt: skip
                    self.renewed = time.time()
                    self.write_lease_file()
                self.serve()
            except LeaseLost:
                log("lease expired: acquiring again")
                self.lease = 0
            except NetworkRemoved:
                log("the network was removed from the cluster store: leaving it")
                assert self.spec is not None
                vxlan.delete_device(self.spec.vni)
                if self.mirror is not None:
                    self.mirror.stopping = True
                try:
                    os.unlink(onames.mirror_path(self.name))
                except FileNotFoundError:
                    pass
                try:
                    self.store.revoke(self.lease)
                except errors.CniError:
                    pass
                self.status("removed")
                return 0
            except Unavailable as exc:
                self.status("unavailable", str(exc))
                time.sleep(0.5)
            except errors.CniError as exc:
                log(f"error: {exc}")
                self.status("error", str(exc))
                if exc.code == 7:
                    return 1
                time.sleep(1)
        self.status("stopped")
        return 0

    def _reload(self, signum: int, frame: object) -> None:
        self.relist_wanted = True
        if self.watching:
            raise Wakeup()

    def _poke(self, signum: int, frame: object) -> None:
        # the plugin added or deleted a container here
        self.poked = True
        if self.watching:
            raise Wakeup()

    def _stop(self, signum: int, frame: object) -> None:
        # Stop renewing; leave the datapath and the lease as they are (the lease runs out
        # by itself unless a new agent takes it back within the TTL).
        self.stopping = True
        raise SystemExit(0)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pycni-overlay-agent")
    p.add_argument("--network", required=True)
    p.add_argument("--cluster-store", required=True)
    p.add_argument("--cluster-advertise", required=True)
    p.add_argument("--cacert", default="")
    p.add_argument("--cert", default="")
    p.add_argument("--key", default="")
    p.add_argument("--ttl", type=int, default=ospec.DEFAULT_TTL)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return Agent(args).run()
    except errors.CniError as exc:
        log(f"fatal: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
