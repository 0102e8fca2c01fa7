"""What both backends share: the lock, the records, conflicts, conntrack, sysctls.

A backend subclass only knows how to turn records into kernel objects:

    _apply(old, new, parts)   one atomic change from `old` to `new` for the named
                              parts ("masq", "ports"); either record may be None
    _orphans()                {owner tag: [descriptions]} of entries in the kernel
    _remove_tags(tags, parts) remove the parts' entries carrying one of these owner tags
    _rebuild(records)         replace all of our kernel state with these records
    _check(record, parts)     descriptions of what is missing for the record
    _kernel_holder(binding)   the owner tag of the kernel entry publishing that slot

Everything else (validation, locking, the port index, saving, conntrack flushes,
route_localnet) happens here once, so the two backends cannot drift apart.
"""

from __future__ import annotations

import os

from pycni import errors, names
from pycni.firewall.base import Attachment, NetworkVerbs, PortConflict, PortMapping
from pycni.firewall.plan import (
    Binding,
    Record,
    check_protocols_supported,
    normalize_mappings,
    owner_tag,
    parse_owner_tag,
    tag_network_matches,
)
from pycni.firewall.store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.firewall.conditions import Condition
    from pycni.firewall.plan import Key

MASQ = "masq"
PORTS = "ports"


class KernelConflict(Exception):
    """The kernel refused to create a port element because its key exists."""


def log(msg: str) -> None:
    """Plugins log to stderr; stdout carries the CNI result only."""
    try:
        os.write(2, f"pycni firewall: {msg}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def holder_of(tag: str | None) -> tuple[str, str, str]:
    key = parse_owner_tag(tag) if tag else None
    return key if key is not None else ("(unknown)", tag or "(unknown)", "")


def mapping_of(b: Binding) -> PortMapping:
    return PortMapping(b.host_port, b.container_port, b.protocol, b.host_ip)


class Backend(NetworkVerbs):
    name = ""

    def __init__(self, store: Store | None = None) -> None:
        self._store = store

    @property
    def store(self) -> Store:
        # Resolved at use, so PYCNI_STATE_DIR set after construction still counts.
        return self._store if self._store is not None else Store()

    # -- kernel primitives (subclasses) -----------------------------------------------

    def available(self) -> bool:
        raise NotImplementedError

    def _apply(self, old: Record | None, new: Record | None, parts: set[str]) -> None:
        raise NotImplementedError

    def _orphans(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def _remove_tags(self, tags: set[str], parts: set[str]) -> None:
        raise NotImplementedError

    def _rebuild(self, records: list[Record]) -> None:
        raise NotImplementedError

    def _check(self, record: Record, parts: set[str]) -> list[str]:
        raise NotImplementedError

    def _kernel_holder(self, b: Binding) -> str | None:
        return None

    def _prune(self) -> None:
        """Drop shared objects nobody needs any more (GC's last step)."""

    # -- masquerade ---------------------------------------------------------------------

    def add_masquerade(self, att: Attachment) -> None:
        with self.store.lock():
            old = self._load(att.key)
            new = old.copy() if old is not None else Record(att.key, self.name)
            new.masquerade = att
            self._commit(old, new, {MASQ})

    def del_masquerade(self, network: str, container_id: str, ifname: str) -> None:
        self._del((network, container_id, ifname), MASQ)

    def check_masquerade(self, att: Attachment) -> list[str]:
        record = Record(att.key, self.name)
        record.masquerade = att
        return self._check(record, {MASQ})

    # -- published ports ----------------------------------------------------------------

    def add_port_mappings(
        self,
        att: Attachment,
        mappings: list[PortMapping],
        snat: bool = True,
        masq_all: bool = False,
        conditions: dict[int, list[Condition]] | None = None,
    ) -> None:
        mappings = normalize_mappings(mappings)
        if mappings and not att.ips:
            raise errors.InvalidConfig(
                "cannot publish ports: the attachment has no IP address",
                "portmap must run after a plugin that assigns addresses (prevResult.ips)",
            )
        with self.store.lock():
            old = self._load(att.key)
            new = old.copy() if old is not None else Record(att.key, self.name)
            new.ports = att if mappings else None
            new.mappings = mappings
            new.snat, new.masq_all = snat, masq_all
            new.conditions = _by_family(conditions)
            items = new.bindings()
            check_protocols_supported(items)
            for b in items:
                tag = self.store.conflict(b, att.key)
                if tag is not None:
                    raise PortConflict(mapping_of(b), holder_of(tag))
            self._commit(old, new, {PORTS})
        self._after_ports(old, new)

    def del_port_mappings(self, network: str, container_id: str, ifname: str) -> None:
        self._del((network, container_id, ifname), PORTS)

    def check_port_mappings(
        self,
        att: Attachment,
        mappings: list[PortMapping],
        conditions: dict[int, list[Condition]] | None = None,
    ) -> list[str]:
        record = Record(att.key, self.name)
        record.ports = att
        record.mappings = normalize_mappings(mappings)
        record.conditions = _by_family(conditions)
        saved = self.store.load(att.key)
        if saved is not None and saved.ports is not None:
            record.snat, record.masq_all = saved.snat, saved.masq_all
        return self._check(record, {PORTS})

    # -- whole-state operations ------------------------------------------------------------

    def gc(self, network: str, valid: set[tuple[str, str]]) -> list[str]:
        removed: list[str] = []
        with self.store.lock():
            for record in list(self.store.records(network)):
                if record.backend != self.name or (record.key[1], record.key[2]) in valid:
                    continue
                self._apply(record, None, {MASQ, PORTS})
                self.store.release(record.bindings(), record.key)
                self.store.remove(record.key)
                self._flush_udp(record.bindings())
                removed.append(f"{self.name}: removed saved entries of {_describe(record.key)}")
            keep = {owner_tag((network, cid, ifname)) for cid, ifname in valid}
            stale = {
                tag: what
                for tag, what in self._orphans().items()
                if tag_network_matches(tag, network) and tag not in keep
            }
            if stale:
                self._remove_tags(set(stale), {MASQ, PORTS})
                for tag, what in sorted(stale.items()):
                    key = parse_owner_tag(tag)
                    who = _describe(key) if key else tag
                    removed.extend(f"{self.name}: removed {w} of {who}" for w in what)
            self._prune()
        return removed

    def attachments(self) -> set[tuple[str, str, str]]:
        found = {k for k in map(parse_owner_tag, self._orphans()) if k is not None}
        found.update(r.key for r in self.store.records() if r.backend == self.name)
        return found

    def replay(self) -> int:
        with self.store.lock():
            records = [r for r in self.store.records() if r.backend == self.name]
            self._rebuild(records)
        for record in records:
            self._enable_localnet(record)
        return len(records)

    # -- shared steps ------------------------------------------------------------------------

    def _load(self, key: Key) -> Record | None:
        """The saved record of `key` as this backend's. A record made by the other
        backend (the node switched backends) has its entries removed there first."""
        record = self.store.load(key)
        if record is None or record.backend == self.name:
            return record
        other = self._other(record.backend)
        if other is not None:
            try:
                other._apply(record, None, {MASQ, PORTS})
            except errors.CniError as exc:
                log(f"cannot remove {record.backend} entries of {_describe(key)}: {exc}")
        self.store.release(record.bindings(), key)
        self.store.remove(key)
        return None

    def _other(self, name: str) -> Backend | None:
        from pycni.firewall import get_backend

        try:
            other = get_backend(name)
        except errors.CniError:
            return None
        if not isinstance(other, Backend) or not other.available():
            return None
        return other

    def _commit(self, old: Record | None, new: Record, parts: set[str]) -> None:
        """Apply old -> new in the kernel, then index and save; undo the kernel change
        when saving fails, so the record never disagrees with the kernel for long."""
        try:
            self._apply(old, new, parts)
        except KernelConflict:
            for b in new.bindings():
                tag = self._kernel_holder(b)
                if tag is not None and tag != owner_tag(new.key):
                    raise PortConflict(mapping_of(b), holder_of(tag)) from None
            raise errors.CniError(
                "nftables refused a port mapping that the saved state says is free",
                "the kernel and the saved state disagree; run `netctl system reload`",
            ) from None
        try:
            if PORTS in parts:
                old_items = old.bindings() if old is not None else []
                self.store.claim(new.bindings(), new.key)
                keep = {(b.slot, b.host_ip) for b in new.bindings()}
                self.store.release(
                    [b for b in old_items if (b.slot, b.host_ip) not in keep], new.key
                )
            self.store.save(new)
        except errors.CniError:
            try:
                self._apply(new, old, parts)
            except errors.CniError as exc:
                log(f"could not undo the firewall change for {_describe(new.key)}: {exc}")
            raise

    def _del(self, key: Key, part: str) -> None:
        try:
            peek = self.store.load(key)
        except errors.IOFailure:
            peek = None
        if peek is not None and peek.backend != self.name:
            other = self._other(peek.backend)
            if other is not None:
                other._del(key, part)
                return
        with self.store.lock():
            try:
                old = self._load(key)
            except errors.IOFailure as exc:
                # A corrupt record must not make DEL fail forever: fall back to the tags.
                log(str(exc))
                old = None
            has_part = old is not None and (
                old.masquerade is not None if part == MASQ else old.ports is not None
            )
            if old is None or not has_part:
                self._remove_unrecorded(key, part)
                if part == PORTS:
                    self.store.release_all(key)
                return
            new = old.copy()
            if part == MASQ:
                new.masquerade = None
            else:
                new.ports, new.mappings = None, []
            self._apply(old, new, {part})
            if part == PORTS:
                self.store.release(old.bindings(), key)
            self.store.save(new)
            if new.empty and not self.store.has_records(key[0]):
                # The network's last attachment is gone: drop the shared "same subnet"
                # pairs nothing needs any more, so an idle network leaves no entry
                # behind (runtimes such as containerd 1.6 never call GC). Once per
                # network emptying, never on the per-container path.
                self._prune()
        if part == PORTS:
            self._flush_udp(old.bindings())

    def _remove_unrecorded(self, key: Key, part: str) -> None:
        """DEL without saved state (lost, or never written because ADD crashed): find
        entries by owner tag in the kernel. O(entries), but only on this rare path."""
        tag = owner_tag(key)
        if tag in self._orphans():
            self._remove_tags({tag}, {part})

    def _after_ports(self, old: Record | None, new: Record) -> None:
        changed = (old.bindings() if old is not None else []) + new.bindings()
        self._flush_udp(changed)
        self._enable_localnet(new)

    def _flush_udp(self, items: list[Binding]) -> None:
        """Forget UDP conntrack entries of these host ports, so that datagrams to a
        reused port reach the new container instead of a stale NAT binding."""
        slots = sorted({(b.family, b.host_port) for b in items if b.protocol == "udp"})
        if not slots:
            return
        from pycni.firewall import spawn

        conntrack = spawn.which("conntrack")
        if conntrack is None:
            log("conntrack not found; stale UDP flows to published ports are not flushed")
            return
        for family, port in slots:
            argv = [conntrack, "-D", "-f", f"ipv{family}", "-p", "udp"]
            argv += ["--orig-port-dst", str(port)]
            try:
                done = spawn.run(argv, timeout=30)
            except errors.CniError as exc:
                log(f"failed to delete stale UDP conntrack entries for port {port}: {exc}")
                continue
            # conntrack exits 1 with "0 flow entries have been deleted" when none matched.
            if done.rc != 0 and b" 0 flow entries" not in done.stderr:
                log(f"failed to delete stale UDP conntrack entries: {done.describe()}")

    def _enable_localnet(self, record: Record) -> None:
        """127.0.0.1:hostPort is DNATed to the container; the kernel drops packets with
        a loopback address that leave through (or come back on) a non-loopback device
        unless route_localnet is 1 there. The backend installed the guard that drops
        127.0.0.0/8 arriving from outside before this runs (CVE-2020-8558)."""
        bridge = record.localnet_bridge()
        if not bridge:
            return
        if not names.valid_ifname(bridge):
            log(f"not enabling route_localnet on invalid interface name {bridge!r}")
            return
        path = f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet"
        try:
            with open(path, "r+b", buffering=0) as fh:
                if fh.read().strip() != b"1":
                    fh.seek(0)
                    fh.write(b"1")
        except OSError as exc:
            log(f"unable to enable route_localnet on {bridge}: {exc.strerror or exc}")


def _by_family(conditions: dict[int, list[Condition]] | None) -> dict[int, list[Condition]]:
    """The record's form of portmap conditions: families without any left out."""
    return {family: list(c) for family, c in (conditions or {}).items() if c}


def _describe(key: Key) -> str:
    return f"container {key[1]} ifname {key[2]} on network {key[0]}"
