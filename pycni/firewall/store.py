"""Saved firewall state: one record per attachment, a port index, one lock.

Layout under state_dir()/firewall/ (network names cannot start with a dot, and every
path part is percent-encoded, so nothing a runtime passes can escape or collide):

    .lock                                flock'd around every check+apply+save
    .ports/<family>-<proto>-<port>/<hostIP|any>
                                         symlink whose target is the owner tag
                                         (created atomically, read with readlink)
    <network>/<containerID>-<ifname>.json   the attachment's record (plan.Record)

Why a lock and an index rather than kernel-side `create element` alone: a wildcard
binding conflicts with every specific address of the same port, which no single nft
element lookup can answer; the index answers it by listing one tiny directory. The
lock makes check-then-insert atomic across plugin processes. The nft backend still
inserts with `create` (fails on an existing key), as a second line of defence for
state that was lost or edited underneath us.
"""

from __future__ import annotations

import fcntl
import os

from pycni import errors, fastjson, recordstore
from pycni.firewall.base import state_dir
from pycni.firewall.plan import Binding, Record, owner_tag
from pycni.recordstore import encode, read_file, write_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from pycni.firewall.plan import Key

LOCK_TIMEOUT = 60.0


class Lock:
    """flock on .lock; TryAgainLater when another process holds it too long."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fd = -1

    def __enter__(self) -> Lock:
        import time

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = -1
                    raise errors.TryAgainLater(
                        f"firewall state is locked by another process ({self.path})",
                        f"waited {self.timeout:.0f}s; retry the operation",
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = -1


class Store:
    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.join(root or state_dir(), "firewall")
        #: the backends' own records, <network>/<cid>-<ifname>.json, in the one store
        self.files = recordstore.Records(self.root)

    # -- plumbing --------------------------------------------------------------------

    def _makedirs(self, path: str) -> None:
        recordstore.makedirs(path)

    def lock(self, timeout: float = LOCK_TIMEOUT) -> Lock:
        self._makedirs(self.root)
        return Lock(os.path.join(self.root, ".lock"), timeout)

    def record_path(self, key: Key) -> str:
        network, container_id, ifname = key
        return os.path.join(
            self.root, encode(network), recordstore.record_name(container_id, ifname)
        )

    # -- records ---------------------------------------------------------------------

    def load(self, key: Key) -> Record | None:
        return self._read(self.record_path(key))

    def _read(self, path: str) -> Record | None:
        data = read_file(path)
        if data is None:
            return None
        try:
            return Record.from_dict(fastjson.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise errors.IOFailure(
                f"firewall state {path} is corrupt",
                f"{exc}; remove the file and run `netctl system reload`",
            ) from None

    def save(self, record: Record) -> None:
        """Atomic: write a temp file, rename it over. Not fsync'd: a record describes
        kernel state (nft elements), which a power loss or kernel crash takes with it;
        a killed process leaves what it wrote in the page cache, and the rename means
        no reader ever sees half a record. (fsync here cost 0.3-14 ms per ADD.)"""
        if record.empty:
            self.remove(record.key)
            return
        write_file(self.record_path(record.key), fastjson.dumps(record.to_dict()).encode())

    def remove(self, key: Key) -> None:
        recordstore.remove_file(self.record_path(key))

    def has_records(self, network: str) -> bool:
        """Whether any attachment of `network` has a record (its directory exists only
        while it holds one: `remove` drops it with the last)."""
        return os.path.isdir(os.path.join(self.root, encode(network)))

    def records(self, network: str | None = None) -> Iterator[Record]:
        for key in self.files.attachments(network):
            record = self._read(self.record_path(key))
            if record is not None:
                yield record

    # -- the port index ----------------------------------------------------------------

    def _slot_dir(self, b: Binding) -> str:
        return os.path.join(self.root, ".ports", f"{b.family}-{b.protocol}-{b.host_port}")

    def holders(self, b: Binding) -> dict[str, str]:
        """{hostIP ("" = any): owner tag} of everything published on b's slot."""
        directory = self._slot_dir(b)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return {}
        out = {}
        for name in names:
            try:
                out["" if name == "any" else name] = os.readlink(os.path.join(directory, name))
            except OSError:
                continue
        return out

    def conflict(self, b: Binding, key: Key) -> str | None:
        """The owner tag of an existing binding of another attachment that overlaps b."""
        mine = owner_tag(key)
        for host_ip, tag in self.holders(b).items():
            if tag != mine and b.overlaps(host_ip):
                return tag
        return None

    def claim(self, items: list[Binding], key: Key) -> None:
        tag = owner_tag(key)
        for b in items:
            directory = self._slot_dir(b)
            self._makedirs(directory)
            path = os.path.join(directory, b.host_ip or "any")
            try:
                os.symlink(tag, path)
            except FileExistsError:
                if os.readlink(path) != tag:
                    tmp = f"{path}.tmp{os.getpid()}"
                    os.symlink(tag, tmp)
                    os.rename(tmp, path)
            except OSError as exc:
                raise errors.IOFailure(
                    f"cannot record published port in {directory}", exc.strerror or ""
                ) from None

    def release(self, items: list[Binding], key: Key) -> None:
        tag = owner_tag(key)
        for b in items:
            directory = self._slot_dir(b)
            path = os.path.join(directory, b.host_ip or "any")
            try:
                if os.readlink(path) == tag:
                    os.unlink(path)
            except OSError:
                continue
            try:
                os.rmdir(directory)
            except OSError:
                pass

    def release_all(self, key: Key) -> None:
        """Drop every index entry of `key` (used when its record is gone or corrupt)."""
        tag = owner_tag(key)
        base = os.path.join(self.root, ".ports")
        try:
            slots = os.listdir(base)
        except FileNotFoundError:
            return
        for slot in slots:
            directory = os.path.join(base, slot)
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                path = os.path.join(directory, name)
                try:
                    if os.readlink(path) == tag:
                        os.unlink(path)
                except OSError:
                    continue
            try:
                os.rmdir(directory)
            except OSError:
                pass


class Records(recordstore.Records):
    """Plain JSON records of one kind beside the backends' own, in the same store:
    `state_dir()/firewall/.<kind>/<network>/<containerID>-<ifname>.json` per attachment
    (spoof checks; the forward accepts use the same layout) or `.<kind>/<network>.json`
    per network (isolation): the one record store (pycni.recordstore) rooted there."""

    def __init__(self, kind: str, store: Store | None = None) -> None:
        self.store = store or Store()
        super().__init__(os.path.join(self.store.root, f".{kind}"))
