"""Per-attachment records: the one store every plugin and the firewall keep them in.

A plugin writes its record *before* it creates what the record names (a veth name, a
set of firewall elements), so that after a SIGKILL at any point DEL and GC still know
what may exist. One `Records` per kind, rooted at a directory of its own:

    <root>/<network>/<containerID>-<ifname>.json    one record per attachment
    <root>/<network>.json                            one record per network

or, where a directory already belongs to one network (`FlatRecords`: the dns plugin's
registrations, the overlay plugin's containers and names), `<dir>/<containerID>-<ifname>.json`.

Every path part is percent-encoded (`encode`: everything outside [A-Za-z0-9_.-], and a
leading dot; "-" too in the ifname so `<cid>-<ifname>` stays unambiguous), so nothing a
runtime passes can escape the root or collide. Files are 0600 in 0700 directories,
written whole through `pycni.atomicfile` (temp file + rename) and not fsync'd: a record
describes kernel objects, which a power loss removes too, while a SIGKILL leaves the
written data in the page cache. A corrupt record reads as missing (with a line on
stderr), so it can never wedge a DEL; an I/O error is a CNI error (code 5).

Records of versions before this store, `<state>/<kind>/<network>/<containerID>:<ifname>.json`
unencoded (the plugins' and the spoof check's), are still found by `legacy_path` and
`legacy_keys`, so a DEL after an upgrade releases what the old version added.

Stdlib only, `os` beyond pycni's own light modules: plugins call it on their start-up path.
"""

from __future__ import annotations

import os

from pycni import errors, fastjson, names

TYPE_CHECKING = False
if TYPE_CHECKING:
    Key = tuple[str, str, str]  # (network, containerID, ifname)

_SAFE = names.NAME_CHARS  # the characters a name may keep as they are


def encode(text: str) -> str:
    """Percent-encode everything outside [A-Za-z0-9_.-] (and a leading dot).

    The result is safe as a file name, as an nft comment that `nft list` prints
    unquoted-safe, and as an iptables-restore token: no user string reaches a parser."""
    out = []
    for i, ch in enumerate(text):
        if ch in _SAFE and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out) or "%"


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)


def decode(text: str) -> str:
    if text == "%":
        return ""
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%" and _is_hex(text[i + 1 : i + 3]):
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(text[i].encode())
            i += 1
    return raw.decode("utf-8", "surrogatepass")


def record_name(container_id: str, ifname: str) -> str:
    """The file name of one attachment's record."""
    return f"{encode(container_id)}-{encode(ifname).replace('-', '%2D')}.json"


def parse_record_name(name: str) -> tuple[str, str] | None:
    """(containerID, ifname) of a record's file name; None for any other file (and for
    a record of an earlier version, whose name holds ":": see legacy_keys)."""
    cid, sep, ifname = name.removesuffix(".json").rpartition("-")
    if not name.endswith(".json") or not sep or ":" in name:
        return None
    return decode(cid), decode(ifname)


def read_file(path: str) -> bytes | None:
    """The file's bytes; None when it does not exist."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise errors.IOFailure(f"cannot read state {path}", exc.strerror or "") from None


def write_file(path: str, data: bytes) -> None:
    """Replace `path` with `data` (0600), creating its directory (0700)."""
    from pycni.atomicfile import write_atomic

    try:
        write_atomic(path, data, 0o600, dir_mode=0o700)
    except OSError as exc:
        raise errors.IOFailure(f"cannot write state {path}", exc.strerror or str(exc)) from None


def makedirs(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise errors.IOFailure(
            f"cannot create state directory {path}", exc.strerror or str(exc)
        ) from None


def remove_file(path: str, prune_parent: bool = True) -> None:
    """Remove `path` (gone already is fine) and, with `prune_parent`, its directory
    once it is empty."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise errors.IOFailure(f"cannot remove state {path}", exc.strerror or "") from None
    if prune_parent:
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass  # other attachments of the network remain


def read_record(path: str) -> dict[str, object] | None:
    """The record at `path`; None when missing or corrupt (said on stderr)."""
    data = read_file(path)
    if data is None:
        return None
    try:
        obj = fastjson.loads(data)
    except ValueError as exc:
        obj = exc
    if not isinstance(obj, dict):
        os.write(2, f"pycni: ignoring corrupt record {path}: {obj}\n".encode())
        return None
    return obj


def write_record(path: str, obj: dict[str, object]) -> None:
    write_file(path, fastjson.dumps(obj).encode())


class FlatRecords:
    """One record per attachment in one directory: `<dir>/<containerID>-<ifname>.json`."""

    def __init__(self, directory: str) -> None:
        self.dir = directory

    def path(self, container_id: str, ifname: str) -> str:
        return os.path.join(self.dir, record_name(container_id, ifname))

    read = staticmethod(read_record)
    write = staticmethod(write_record)

    def load(self, container_id: str, ifname: str) -> dict[str, object] | None:
        return self.read(self.path(container_id, ifname))

    def save(self, container_id: str, ifname: str, obj: dict[str, object]) -> None:
        self.write(self.path(container_id, ifname), obj)

    def delete(self, container_id: str, ifname: str, prune: bool = False) -> bool:
        """Remove the record; whether there was one. `prune`: the directory too once
        it is empty."""
        path = self.path(container_id, ifname)
        existed = os.path.lexists(path)
        remove_file(path, prune_parent=prune)
        return existed

    def entries(self) -> list[tuple[str, str]]:
        """(containerID, ifname) of every record, in file-name order."""
        try:
            names = sorted(os.listdir(self.dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [key for key in map(parse_record_name, names) if key is not None]


class Records:
    """JSON records of one kind under `root` (see the module docstring): a FlatRecords
    per network, and per-network records beside them."""

    def __init__(self, root: str) -> None:
        self.root = root

    def network_dir(self, network: str) -> FlatRecords:
        return FlatRecords(os.path.join(self.root, encode(network)))

    def path(self, key: Key) -> str:
        network, container_id, ifname = key
        return self.network_dir(network).path(container_id, ifname)

    def network_path(self, network: str) -> str:
        return os.path.join(self.root, f"{encode(network)}.json")

    read = staticmethod(read_record)
    write = staticmethod(write_record)

    def remove(self, path: str) -> None:
        remove_file(path, prune_parent=os.path.dirname(path) != self.root)

    # -- by key ------------------------------------------------------------------------

    def load(self, key: Key) -> dict[str, object] | None:
        return self.read(self.path(key))

    def save(self, key: Key, obj: dict[str, object]) -> None:
        self.write(self.path(key), obj)

    def delete(self, key: Key) -> None:
        self.remove(self.path(key))

    # -- listing -----------------------------------------------------------------------

    def attachments(self, network: str | None = None) -> list[Key]:
        """(network, containerID, ifname) of every per-attachment record."""
        try:
            nets = (
                [encode(network)]
                if network is not None
                else sorted(
                    # an encoded name never starts with "." (a store's own files do)
                    n
                    for n in os.listdir(self.root)
                    if not n.endswith(".json") and not n.startswith(".")
                )
            )
        except FileNotFoundError:
            return []
        out: list[Key] = []
        for net in nets:
            network = decode(net)
            out.extend(
                (network, cid, ifname) for cid, ifname in self.network_dir(network).entries()
            )
        return out

    def networks(self) -> list[str]:
        """Names of every per-network record."""
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [decode(n.removesuffix(".json")) for n in entries if n.endswith(".json")]


# -- records of earlier versions --------------------------------------------------------


def legacy_path(root: str, key: Key) -> str:
    """Where versions before this store kept an attachment's record under `root`."""
    network, container_id, ifname = key
    return os.path.join(root, network, f"{container_id}:{ifname}.json")


def legacy_keys(root: str, network: str | None = None) -> list[Key]:
    """Keys of every record in the earlier layout under `root`."""
    try:
        nets = [network] if network is not None else sorted(os.listdir(root))
    except OSError:
        return []
    out: list[Key] = []
    for net in nets:
        try:
            entries = sorted(os.listdir(os.path.join(root, net)))
        except OSError:
            continue
        for name in entries:
            if name.endswith(".json") and ":" in name:
                cid, _, ifname = name[: -len(".json")].partition(":")
                out.append((net, cid, ifname))
    return out
