"""Container names across the hosts of an overlay network (Docker's service discovery on
a multi-host network, with etcd instead of serf):

    <state>/overlay/NAME/names/<cid>-<ifname>.json   {"names": [...], "ips": [...]}
        written by the `overlay` plugin at ADD (the names the runtime gave it: netctl's
        name, aliases, short ID, hostname; K8S_POD_NAME and `aliases` from others),
        removed at DEL and GC
    etcd /pycni/overlay/names/NAME/<publicIP>/<cid>-<ifname>   {"Names", "IPs"}
        put and deleted by this host's agent (`publish`), under its etcd lease: a host
        that dies takes its names with it when the lease expires
    <state>/overlay/NAME/names.json   {"network", "entries": [{"host", "names", "ips"}]}
        the other hosts' names, written by this host's agent (`Mirror`, a watch of the
        prefix in a thread of its own) and read by netctl's resolver (runtime/dns.py)

One owner each: the plugin writes the local files, the agent the etcd keys and the
mirror, the resolver only reads. The plugin path imports nothing of etcd.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable

from pycni import errors
from pycni.overlay import spec as ospec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.overlay.store import Store

MIRROR = "names.json"
LOCAL = "names"
WATCH_IDLE = 10.0  # seconds a quiet watch stays open before it is re-created


def names_prefix(network: str) -> str:
    return f"{ospec.PREFIX}/names/{network}/"


def host_prefix(network: str, public_ip: str) -> str:
    return f"{names_prefix(network)}{public_ip}/"


def mirror_path(network: str, root: str | None = None) -> str:
    return os.path.join(ospec.network_dir(network, root), MIRROR)


def local_dir(network: str) -> str:
    return os.path.join(ospec.network_dir(network), LOCAL)


# -- this host's names -> etcd (the agent) ---------------------------------------------


def _value(path: str) -> dict[str, list[str]] | None:
    """One plugin file as the etcd value ({"Names", "IPs"}); None if unreadable or empty."""
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
        value = {"Names": [str(n) for n in d["names"]], "IPs": [str(i) for i in d["ips"]]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if value["Names"] and value["IPs"] else None


def local_values(network: str, public_ip: str) -> dict[str, str]:
    """{etcd key: value} of every container here that has names (the plugin's files)."""
    directory = local_dir(network)
    try:
        files = sorted(f for f in os.listdir(directory) if f.endswith(".json"))
    except FileNotFoundError:
        return {}
    prefix = host_prefix(network, public_ip)
    values = {prefix + f.removesuffix(".json"): _value(os.path.join(directory, f)) for f in files}
    return {k: json.dumps(v, sort_keys=True) for k, v in values.items() if v is not None}


def publish(store: Store, lease: int, want: dict[str, str], have: dict[str, str]) -> None:
    """Bring etcd from `have` (what this agent put under `lease`) to `want`; `have` is
    updated as each request succeeds (a failure midway is retried at the next call)."""
    for key in [k for k in have if k not in want]:
        store.delete(key)
        del have[key]
    for key, value in want.items():
        if have.get(key) != value:
            store.put(key, value, lease)
            have[key] = value


# -- other hosts' names -> the mirror file (the agent's thread) ----------------------------


def parse(key: str, value: str) -> dict[str, object] | None:
    """One mirror entry from an etcd key and value; None when malformed."""
    host = key.rsplit("/", 2)[-2] if key.count("/") >= 2 else ""
    try:
        d = json.loads(value)
        names = [str(n).lower().rstrip(".") for n in d["Names"] if str(n).rstrip(".")]
        ips = [str(i) for i in d["IPs"]]
    except (ValueError, KeyError, TypeError):
        return None
    if not names or not ips:
        return None
    return {"host": host, "names": names, "ips": ips}


def write_mirror(network: str, entries: dict[str, str]) -> None:
    parsed = [p for p in (parse(k, v) for k, v in sorted(entries.items())) if p is not None]
    ospec.write_json_atomic(mirror_path(network), {"network": network, "entries": parsed})


def read_mirror(path: str) -> list[tuple[list[str], list[str]]]:
    """(names, ips) of each remote container in a mirror file; [] when there is none."""
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
        return [([str(n) for n in e["names"]], [str(i) for i in e["ips"]]) for e in d["entries"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


class Mirror:
    """Watches every host's names of one network and keeps the mirror file (others'
    names only) in step; runs in a thread of the agent, with a Store of its own."""

    def __init__(
        self, store: Store, network: str, public_ip: str, log: Callable[[str], None]
    ) -> None:
        self.store = store
        self.network = network
        self.own = host_prefix(network, public_ip)
        self.log = log
        self.entries: dict[str, str] = {}
        self.revision = 0
        self.stopping = False
        self.thread = threading.Thread(target=self.run, name="names", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def relist(self) -> None:
        rev, kvs = self.store.get_prefix(names_prefix(self.network))
        self.entries = {kv.key: kv.value for kv in kvs if not kv.key.startswith(self.own)}
        self.revision = rev
        write_mirror(self.network, self.entries)

    def run(self) -> None:
        from pycni.overlay.store import Compacted

        while not self.stopping:
            try:
                if self.revision == 0:
                    self.relist()
                watch = self.store.watch_prefix(
                    names_prefix(self.network), self.revision + 1, WATCH_IDLE
                )
                for batch in watch:
                    for ev in batch:
                        key = ev["kv"].key
                        self.revision = max(self.revision, ev["revision"])
                        if key.startswith(self.own):
                            continue
                        if ev["type"] == "DELETE":
                            self.entries.pop(key, None)
                        else:
                            self.entries[key] = ev["kv"].value
                    write_mirror(self.network, self.entries)
                    if self.stopping:
                        return
            except Compacted:
                self.log("names watch fell behind compaction: re-listing")
                self.revision = 0
            except errors.CniError:
                time.sleep(0.5)  # etcd unreachable: keep the names we have, try again
            except Exception as exc:  # never let the thread die: names would go stale
                self.log(f"names watch: {exc!r}")
                time.sleep(1)
