"""host-local's on-disk lease store, byte-compatible with the reference plugin's.

Under `<dataDir>/<network>/`:

    <ip>                  one lease, named by the address as the reference names it
                          (IPv4 dotted quad, IPv6 RFC 5952 lowercase: `fd00::2`), holding
                          exactly b"<containerID>\\r\\n<ifname>" (no newline). A legacy
                          lease holds the bare container ID.
    last_reserved_ip.<n>  round-robin hint of range set n: the address, no newline.
    lock                  flock(LOCK_EX)'d by every writer, ours and the reference's.
    .pycni-tmp.<pid>.<n>  our temp files (a leading dot: never an address). They exist
                          only while we hold the lock, so one seen under the lock is
                          debris of a killed process and is removed.

Crash safety: a lease is written to a temp file in the same directory, fsync'd, then
`link()`ed to its address name. link is atomic and fails with EEXIST when the name is
taken, so no reader (nor a SIGKILL or a power loss at any point) can ever see an empty
or half-written lease. The directory itself is not fsync'd: after a power loss a lease
written just before may be missing, and its container is gone too. The reference writes in place (O_EXCL then write), which can leave an empty
lease after a crash; GC releases those.

The lease index (ours only, outside the network's directory so the reference never
sees it): `<dataDir>/.pycni-index.<network>`. Reading every lease on every ADD (the
duplicate-allocation check needs the owner of every lease) costs ~20 ms at 1,000
leases; the index lets an ADD/DEL read none. It is a cache, trusted only when provably
current, otherwise every lease is read as before and the index rewritten:

- every writer of the directory (ours and the reference) holds the lock, and a lease
  file is never rewritten in place (the reference creates it with O_EXCL and writes it
  under the lock; we link a complete file), so the leases change only by names
  appearing or vanishing, and each such change updates the directory's mtime/ctime;
- we write the index under the lock after our last change, recording the directory's
  (st_dev, st_ino, st_mtime_ns, st_ctime_ns), and make sure the index file's own mtime
  (same file system) is later than the recorded mtime. Anyone changing the directory
  after we unlock gets a timestamp at least the index's, so a different one: equality
  of the recorded stat proves no change since (the git "racy index" rule). With
  coarse timestamps that means waiting for the next clock tick, done only for networks
  of INDEX_WAIT_MIN leases or more; a smaller one's index is left not newer, so
  untrusted, and the next call reads its few leases (cheaper than the wait);
- in addition every use lists the directory (names and inode numbers, no reads): a
  lease name or inode the index does not have, or a missing one, is a full read. This
  also covers a clock stepped backwards;
- a positive hit (this attachment already holds X) is what an ADD acts on; leases are
  only removed by DEL/GC by name;
- it is rewritten in place (written over, then cut to length: no file created or
  renamed). A write cut short leaves the new text followed by a rest of the old one,
  whose "end" line then stands among the entries: rejected. Entry lines name a lease
  by name and inode, and a lease never changes content, so old and new lines agree.

OSErrors become IOFailure (code 5) naming the path; a lock wait that times out becomes
TryAgainLater (code 11) naming the lock. Fault points for tests (pycni.fault):
ipam-temp-written, ipam-lease-linked, ipam-before-commit.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import sys
import time

from pycni import errors, fault

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.ipam.allocator import IPAddress

LOCK_NAME = "lock"
LAST_RESERVED = "last_reserved_ip."
TEMP_PREFIX = ".pycni-tmp."
INDEX_PREFIX = ".pycni-index."  # in <dataDir>, never in <dataDir>/<network>
INDEX_MAGIC = "pycni host-local index 1"
# Waiting for a clock tick (1-4 ms, HZ=250) so that the index is newer than the
# directory pays off from about this many leases: reading one costs ~20 us.
INDEX_WAIT_MIN = 64
# The mode the reference (v1.1.1, as installed) gives lease files.
LEASE_MODE = 0o644
DEFAULT_LOCK_TIMEOUT = 10.0
LOCK_TIMEOUT_ENV = "PYCNI_IPAM_LOCK_TIMEOUT"

_HINTS = {
    errno.ENOSPC: "the file system is full; free some space",
    errno.EDQUOT: "the disk quota is exhausted; free some space",
    errno.EROFS: "the file system is read-only; remount it read-write or point ipam.dataDir elsewhere",
    errno.EACCES: "permission denied; the plugin needs write access to ipam.dataDir",
    errno.EPERM: "operation not permitted; the plugin needs write access to ipam.dataDir",
}


def io_failure(action: str, path: str, exc: OSError) -> errors.IOFailure:
    reason = exc.strerror or str(exc)
    hint = _HINTS.get(exc.errno or 0, "check the file system holding ipam.dataDir")
    return errors.IOFailure(f"{action} {path}: {reason}", hint)


def lock_timeout() -> float:
    text = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT
    return value if value >= 0 else DEFAULT_LOCK_TIMEOUT


def lease_ip(name: str) -> IPAddress | None:
    """The address a directory entry names, or None (lock, hints, temp files, others)."""
    if not name or not (name[0].isdigit() or name[0] in "abcdefABCDEF:"):
        return None
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def parse_lease(data: bytes) -> tuple[str, str | None]:
    """(containerID, ifname) of a lease; ifname None for a legacy ID-only lease. The
    content is whitespace-trimmed as the reference compares it."""
    text = data.strip().decode("utf-8", "replace")
    cid, sep, ifname = text.partition("\r\n")
    return (cid, ifname) if sep else (cid, None)


def _read_small(path: str) -> bytes | None:
    """A lease or hint file's content; None when it vanished."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


class DiskStore:
    """The leases of one network. Use as `with DiskStore(dir, net).open() as store:`;
    every method but `scan(locked=False)` expects the lock held."""

    __slots__ = (
        "_created",
        "_dirty",
        "_fd",
        "_ignored",
        "_index",
        "_leases",
        "_seq",
        "_stale",
        "_temp",
        "_temp_ino",
        "directory",
    )

    def __init__(self, data_dir: str, network: str) -> None:
        self.directory = os.path.join(data_dir, network)
        self._index = os.path.join(data_dir, INDEX_PREFIX + network)
        self._fd = -1
        # canonical address text -> (containerID, ifname or None, file name, inode),
        # filled by scan()/refresh().
        self._leases: dict[str, tuple[str, str | None, str, int]] = {}
        # Entries named like an address that are no lease (a directory, a symlink): inode.
        self._ignored: dict[str, int] = {}
        self._temp: str | None = None  # the fsync'd temp file of the lease being placed
        self._temp_ino = 0
        self._created: list[IPAddress] = []
        self._seq = 0
        # _stale: the index does not describe the directory (rewrite it when done);
        # _dirty: our view of the directory is incomplete (never write an index from it).
        self._stale = True
        self._dirty = False

    # -- lock --------------------------------------------------------------------------

    def open(self, timeout: float | None = None, create: bool = True) -> DiskStore:
        """Take the network's lock, waiting at most `timeout` seconds. With
        create=False a missing network directory is left alone (nothing is leased)."""
        if create:
            try:
                os.makedirs(self.directory, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise io_failure("cannot create the lease directory", self.directory, exc) from None
        elif not os.path.isdir(self.directory):
            return self
        path = os.path.join(self.directory, LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise io_failure("cannot open the IPAM lock", path, exc) from None
        wait = lock_timeout() if timeout is None else timeout
        deadline = time.monotonic() + wait
        delay = 0.001
        while True:
            try:
                # Non-blocking and polled, so the wait is bounded without signals (this
                # also runs inside the bridge plugin's process, possibly off the main thread).
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    os.close(fd)
                    raise errors.TryAgainLater(
                        f"timed out after {wait:g}s waiting for the IPAM lock {path}",
                        "another IPAM operation on this network holds it; retry later",
                    ) from None
                time.sleep(min(delay, deadline - now))
                delay = min(delay * 2, 0.02)
            except OSError as exc:
                os.close(fd)
                raise io_failure("cannot lock", path, exc) from None
        self._fd = fd
        return self

    @property
    def exists(self) -> bool:
        return self._fd >= 0

    def close(self) -> None:
        """Unlock. Leases reserved but not committed (the ADD failed) are removed first."""
        self._drop_temp()
        for ip in list(self._created):
            self.release_ip(ip)
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------

    def refresh(self) -> dict[str, tuple[str, str | None, str, int]]:
        """Under the lock: every lease, from the index when it is provably current,
        else read from the directory (scan)."""
        if self._load_index():
            return self._leases
        return self.scan()

    def scan(self, locked: bool = True) -> dict[str, tuple[str, str | None, str, int]]:
        """Read every lease. Under the lock, temp files are debris and are removed."""
        leases: dict[str, tuple[str, str | None, str, int]] = {}
        ignored: dict[str, int] = {}
        try:
            entries = os.scandir(self.directory)
        except FileNotFoundError:
            entries = None
        except OSError as exc:
            raise io_failure("cannot list the lease directory", self.directory, exc) from None
        if entries is not None:
            with entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(TEMP_PREFIX):
                        if locked:
                            self._unlink_quietly(entry.path)
                        continue
                    ip = lease_ip(name)
                    if ip is None:
                        continue
                    try:
                        data = _read_small(entry.path)
                    except OSError as exc:
                        if exc.errno in (errno.EISDIR, errno.ELOOP):
                            ignored[name] = entry.inode()  # not a lease file
                            continue
                        raise io_failure("cannot read the lease", entry.path, exc) from None
                    if data is not None:
                        leases[str(ip)] = (*parse_lease(data), name, entry.inode())
        self._leases = leases
        self._ignored = ignored
        self._stale = True
        self._dirty = not locked
        return leases

    def _load_index(self) -> bool:
        """Fill _leases from the index if it provably describes the directory now
        (see the module's docstring); False (and nothing changed) otherwise."""
        try:
            fd = os.open(self._index, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            ist = os.fstat(fd)
            dst = os.stat(self.directory)
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError:
            return False
        finally:
            os.close(fd)
        if (
            ist.st_dev != dst.st_dev
            or ist.st_mtime_ns <= dst.st_mtime_ns
            or ist.st_mtime_ns <= dst.st_ctime_ns
        ):
            return False
        try:
            lines = b"".join(chunks).decode("utf-8").split("\n")
        except UnicodeDecodeError:
            return False
        if (
            len(lines) < 4
            or lines[0] != INDEX_MAGIC
            or lines[1] != f"{dst.st_dev} {dst.st_ino} {dst.st_mtime_ns} {dst.st_ctime_ns}"
            or lines[-1] != ""
            or lines[-2] != f"end {len(lines) - 4}"
        ):
            return False
        leases: dict[str, tuple[str, str | None, str, int]] = {}
        ignored: dict[str, int] = {}
        inodes: dict[str, int] = {}
        try:
            for line in lines[2:-2]:
                name, ino_text, key, kind, cid, ifname = line.split("\t")
                ino = int(ino_text)
                if kind == "I":
                    leases[key] = (cid, ifname, name, ino)
                elif kind == "L":
                    leases[key] = (cid, None, name, ino)
                elif kind == "X":
                    ignored[name] = ino
                else:
                    return False
                inodes[name] = ino
        except ValueError:
            return False
        # The listing must match name for name, inode for inode (no reads).
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    name = entry.name
                    ino = inodes.pop(name, -1)
                    if ino < 0:
                        if name.startswith(TEMP_PREFIX) or lease_ip(name) is not None:
                            return False  # debris (a full scan removes it) or a new lease
                    elif ino != entry.inode():
                        return False
        except OSError:
            return False
        if inodes:
            return False  # a lease vanished
        self._leases = leases
        self._ignored = ignored
        self._stale = False
        self._dirty = False
        return True

    def _save_index(self) -> None:
        """Under the lock, after our last change: record the leases and the directory's
        stat, in a file whose mtime is later than the directory's. Best effort: on any
        failure the index is removed (the next call reads every lease)."""
        if not self._stale:
            return
        self._stale = False
        try:
            dst = os.stat(self.directory)
        except OSError:
            return
        lines = [INDEX_MAGIC, f"{dst.st_dev} {dst.st_ino} {dst.st_mtime_ns} {dst.st_ctime_ns}"]
        ok = not self._dirty
        for key, (cid, ifname, name, ino) in self._leases.items():
            if ino < 0:
                ok = False
                break
            lines.append(
                f"{name}\t{ino}\t{key}\t{'L' if ifname is None else 'I'}\t{cid}\t{ifname or ''}"
            )
        for name, ino in self._ignored.items():
            lines.append(f"{name}\t{ino}\t\tX\t\t")
        lines.append(f"end {len(lines) - 2}")
        text = "\n".join(lines) + "\n"
        if ok and (text.count("\n") != len(lines) or text.count("\t") != 5 * (len(lines) - 3)):
            ok = False  # a container ID or ifname with a tab or newline: no index
        if not ok:
            self._unlink_quietly(self._index)
            return
        data = text.encode()
        newer = max(dst.st_mtime_ns, dst.st_ctime_ns)
        try:
            fd = _open_in_place(self._index, 0o600)
        except OSError:
            self._unlink_quietly(self._index)
            return
        try:
            if os.fstat(fd).st_dev != dst.st_dev:
                raise OSError(errno.EXDEV, "the index is on another file system")
            # The index's mtime must be later than the directory's. A file system with
            # fine-grained timestamps gives a later one at once (the fstat above asks for
            # it); one with coarse timestamps (ext4 here) after a clock tick: wait up to
            # 10 ms, but only for a network whose full read costs more than the wait. A
            # smaller one keeps the index as written: not newer, so never trusted, and
            # the next call reads its few leases.
            deadline = time.monotonic() + 0.01
            while True:
                _rewrite(fd, data)
                if os.fstat(fd).st_mtime_ns > newer:
                    break
                if len(self._leases) < INDEX_WAIT_MIN:
                    return
                if time.monotonic() >= deadline:
                    raise OSError(errno.EAGAIN, "the index is not newer than the directory")
                time.sleep(0.001)
        except OSError:
            self._unlink_quietly(self._index)
        finally:
            os.close(fd)

    def held_by(self, container_id: str, ifname: str) -> list[IPAddress]:
        return [
            ipaddress.ip_address(key)
            for key, (cid, ifn, _name, _ino) in self._leases.items()
            if cid == container_id and ifn in (ifname, None)
        ]

    def last_reserved(self, index: int) -> IPAddress | None:
        try:
            data = _read_small(os.path.join(self.directory, f"{LAST_RESERVED}{index}"))
        except OSError:
            return None  # only a hint: start from the beginning of the range set
        if not data:
            return None
        try:
            return ipaddress.ip_address(data.strip().decode("ascii", "replace"))
        except ValueError:
            return None

    # -- writing -----------------------------------------------------------------------

    def _temp_name(self) -> str:
        self._seq += 1
        return os.path.join(self.directory, f"{TEMP_PREFIX}{os.getpid()}.{self._seq}")

    def _write_temp(self, content: bytes, mode: int, sync: bool) -> tuple[str, int]:
        """(path, inode) of a new temp file holding `content`."""
        path = self._temp_name()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            # Debris of an earlier process that had our pid; we hold the lock.
            self._unlink_quietly(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
                fault.point("ipam-temp-written")
            ino = os.fstat(fd).st_ino
        except BaseException:
            os.close(fd)
            self._unlink_quietly(path)
            raise
        os.close(fd)
        return path, ino

    def reserve(self, ip: IPAddress, container_id: str, ifname: str) -> bool:
        name = str(ip)
        if name in self._leases or name in self._ignored:
            return False
        path = os.path.join(self.directory, name)
        if self._temp is None:
            content = f"{container_id.strip()}\r\n{ifname}".encode()
            try:
                self._temp, self._temp_ino = self._write_temp(content, LEASE_MODE, sync=True)
            except OSError as exc:
                raise io_failure("cannot write the lease", path, exc) from None
        self._stale = True
        try:
            os.link(self._temp, path)
        except FileExistsError:
            # Someone not holding the lock wrote it, or the scan is stale: taken. Our
            # view is incomplete from here on: no index is written from it.
            self._leases[name] = ("", None, name, -1)
            self._dirty = True
            return False
        except OSError as exc:
            self._drop_temp()
            raise io_failure("cannot write the lease", path, exc) from None
        self._leases[name] = (container_id.strip(), ifname, name, self._temp_ino)
        self._created.append(ip)
        fault.point("ipam-lease-linked")
        # A fresh temp per lease: two leases of one ADD (dual stack) must not be hard
        # links of one inode.
        self._drop_temp()
        return True

    def release_ip(self, ip: IPAddress) -> None:
        key = str(ip)
        entry = self._leases.pop(key, None)
        self._stale = True
        self._unlink_quietly(os.path.join(self.directory, entry[2] if entry else key))
        if ip in self._created:
            self._created.remove(ip)

    def set_last_reserved(self, index: int, ip: IPAddress) -> None:
        # Rewritten in place, as the reference does: every reader holds the lock, and a
        # write cut short by a SIGKILL leaves at worst another (or no) address. Not
        # fsync'd: it is a hint; losing it only moves where the next search starts.
        path = os.path.join(self.directory, f"{LAST_RESERVED}{index}")
        self._stale = True
        try:
            fd = _open_in_place(path, LEASE_MODE)
            try:
                _rewrite(fd, str(ip).encode())
            finally:
                os.close(fd)
        except OSError as exc:
            sys.stderr.write(f"host-local: warning: cannot update {path}: {exc.strerror}\n")

    def commit(self) -> None:
        """The leases created by this ADD are kept (close() no longer removes them);
        then the index is rewritten. The directory is not fsync'd (the reference syncs
        nothing): each lease's data was synced before its name was linked, so after a
        power loss a lease is whole or missing, and a missing one belonged to a
        container the power loss ended too (the next ADD may hand its address out)."""
        self._drop_temp()
        if self._created:
            fault.point("ipam-before-commit")
            self._created.clear()
        self._save_index()

    def release(self, container_id: str, ifname: str) -> list[IPAddress]:
        """DEL: remove the attachment's leases (the legacy ID-only ones only when no
        exact lease exists, as the reference does). Nothing found is not an error."""
        leases = self.refresh()
        exact = [k for k, (c, i, _n, _ino) in leases.items() if c == container_id and i == ifname]
        targets = exact or [
            k for k, (c, i, _n, _ino) in leases.items() if c == container_id and i is None
        ]
        try:
            self._remove(targets)
        finally:
            self._save_index()
        return [ipaddress.ip_address(k) for k in targets]

    def gc(self, valid: set[tuple[str, str]]) -> list[IPAddress]:
        """Release every lease whose attachment is not in `valid`. A legacy ID-only lease
        stays while its container has any valid attachment. Empty leases (a crashed
        reference write; under the lock nobody is writing them) are released."""
        valid_ids = {cid for cid, _ifname in valid}
        stale = [
            key
            for key, (cid, ifname, _n, _ino) in self.refresh().items()
            if not cid
            or (ifname is None and cid not in valid_ids)
            or (ifname is not None and (cid, ifname) not in valid)
        ]
        try:
            self._remove(stale)
        finally:
            self._save_index()
        return [ipaddress.ip_address(k) for k in stale]

    def _remove(self, keys: list[str]) -> None:
        failures = []
        for key in keys:
            path = os.path.join(self.directory, self._leases[key][2])
            self._stale = True
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                failures.append(io_failure("cannot remove the lease", path, exc))
                continue
            del self._leases[key]
        if failures:
            # Keep going past the first failure, report them all once.
            raise errors.IOFailure(
                "; ".join(f.msg for f in failures), failures[0].details
            ) from None

    def _drop_temp(self) -> None:
        if self._temp is not None:
            self._unlink_quietly(self._temp)
            self._temp = None

    @staticmethod
    def _unlink_quietly(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass


def _open_in_place(path: str, mode: int) -> int:
    """A small file of ours, for rewriting in place under the lock (created with
    `mode` if missing). Rewriting costs no file creation, rename or unlink, each a
    journalled change of the directory (a millisecond or more on a busy disk)."""
    return os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode
    )


def _rewrite(fd: int, data: bytes) -> None:
    """Replace the content of `fd` by `data`: written over the old, then cut to its
    length (never truncated to zero first: ext4 then writes the data out at close,
    auto_da_alloc, ~2 ms). A SIGKILL in between leaves the new content followed by a
    rest of the old one; readers reject that (the index: its count line is no longer
    last; the hint: an address that fails to parse or another address, only a hint)."""
    view = memoryview(data)
    offset = 0
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    os.ftruncate(fd, len(data))


def status(data_dir: str) -> str | None:
    """Why leases cannot be written under `data_dir` now, or None when they can."""
    path = data_dir
    # A dataDir that does not exist yet is created by the first ADD: judge its parent.
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return f"cannot inspect {path}: {exc.strerror}"
    if st.f_flag & os.ST_RDONLY:
        return f"{path} is on a read-only file system"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    if st.f_bavail == 0 or (st.f_files > 0 and st.f_favail == 0):
        return f"the file system holding {path} is full"
    return None


def forget_network(data_dir: str, network: str) -> None:
    """Remove everything host-local keeps for `network` under `data_dir` (its leases'
    directory and our index beside it): for the owner of a network that no attachment
    uses any more, so a future network of the same name starts clean. Best effort."""
    import shutil

    shutil.rmtree(os.path.join(data_dir, network), ignore_errors=True)
    try:
        os.unlink(os.path.join(data_dir, INDEX_PREFIX + network))
    except OSError:
        pass
