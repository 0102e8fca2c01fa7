"""The lease store on a real file system under tmp_path (no root needed): file format,
temp-file debris, legacy leases, release/GC rules, the bounded lock wait."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import time

import pytest

from pycni import errors
from pycni.ipam import store as store_mod
from pycni.ipam.store import DiskStore, lease_ip, parse_lease

ip = ipaddress.ip_address


def files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_lease_names() -> None:
    assert lease_ip("10.1.0.2") == ip("10.1.0.2")
    assert lease_ip("fd00::2") == ip("fd00::2")
    assert lease_ip("2001:db8::1") == ip("2001:db8::1")
    for name in ("lock", "last_reserved_ip.0", ".pycni-tmp.1.1", "", "10.1.0", "x", "10.1.0.2.tmp"):
        assert lease_ip(name) is None, name


def test_parse_lease() -> None:
    assert parse_lease(b"abc\r\neth0") == ("abc", "eth0")
    assert parse_lease(b"abc\r\neth0\n") == ("abc", "eth0")  # TrimSpace'd like the reference
    assert parse_lease(b"  abc\n") == ("abc", None)  # legacy: bare id
    assert parse_lease(b"") == ("", None)


def test_reserve_writes_exact_bytes_and_no_temp_survives(tmp_path) -> None:
    with DiskStore(str(tmp_path), "net1").open() as st:
        st.scan()
        assert st.reserve(ip("10.1.0.2"), "cid1", "eth0")
        assert st.reserve(ip("fd00::2"), "cid1", "eth0")
        assert not st.reserve(ip("10.1.0.2"), "cid2", "eth0")
        st.set_last_reserved(0, ip("10.1.0.2"))
        st.set_last_reserved(1, ip("fd00::2"))
        st.commit()
    d = tmp_path / "net1"
    assert files(d) == {
        "10.1.0.2": b"cid1\r\neth0",
        "fd00::2": b"cid1\r\neth0",
        "last_reserved_ip.0": b"10.1.0.2",
        "last_reserved_ip.1": b"fd00::2",
        "lock": b"",
    }
    # each lease its own inode (not hard links of one temp file)
    assert os.stat(d / "10.1.0.2").st_nlink == 1
    assert os.stat(d / "10.1.0.2").st_ino != os.stat(d / "fd00::2").st_ino
    assert oct(os.stat(d / "10.1.0.2").st_mode & 0o777) == oct(store_mod.LEASE_MODE)


def test_existing_file_not_in_scan_is_taken(tmp_path) -> None:
    with DiskStore(str(tmp_path), "net1").open() as st:
        st.scan()
        (tmp_path / "net1" / "10.1.0.2").write_bytes(b"other\r\neth0")
        assert not st.reserve(ip("10.1.0.2"), "me", "eth0")
        assert st.reserve(ip("10.1.0.3"), "me", "eth0")
        st.commit()
    assert (tmp_path / "net1" / "10.1.0.2").read_bytes() == b"other\r\neth0"
    assert [p.name for p in (tmp_path / "net1").iterdir() if p.name.startswith(".")] == []


def test_debris_of_a_killed_process_is_ignored_then_removed(tmp_path) -> None:
    d = tmp_path / "net1"
    d.mkdir()
    # killed after writing the temp file, before link: no lease exists
    (d / ".pycni-tmp.999.1").write_bytes(b"dead\r\neth0")
    # killed after link, before unlink of the temp: the lease is complete
    (d / "10.1.0.2").write_bytes(b"alive\r\neth0")
    os.link(d / "10.1.0.2", d / ".pycni-tmp.999.2")
    st = DiskStore(str(tmp_path), "net1")
    leases = st.scan(locked=False)  # CHECK reads without the lock: sees, removes nothing
    assert {str(k): v[:2] for k, v in leases.items()} == {"10.1.0.2": ("alive", "eth0")}
    assert len(list(d.iterdir())) == 3
    with st.open():
        st.scan()
    assert sorted(p.name for p in d.iterdir()) == ["10.1.0.2", "lock"]


def test_release_exact_then_legacy(tmp_path) -> None:
    d = tmp_path / "net1"
    d.mkdir()
    (d / "10.1.0.2").write_bytes(b"a\r\neth0")
    (d / "10.1.0.3").write_bytes(b"a\r\neth1")
    (d / "10.1.0.4").write_bytes(b"a")  # legacy lease of the same container
    (d / "10.1.0.5").write_bytes(b"b\r\neth0")
    with DiskStore(str(tmp_path), "net1").open() as st:
        assert st.release("a", "eth0") == [ip("10.1.0.2")]
    assert sorted(p.name for p in d.iterdir()) == ["10.1.0.3", "10.1.0.4", "10.1.0.5", "lock"]
    with DiskStore(str(tmp_path), "net1").open() as st:
        # no exact match for eth0 any more: the legacy id-only lease goes
        assert st.release("a", "eth0") == [ip("10.1.0.4")]
        assert st.release("a", "eth0") == []  # idempotent
        assert st.release("zzz", "eth0") == []


def test_held_by_includes_legacy(tmp_path) -> None:
    d = tmp_path / "net1"
    d.mkdir()
    (d / "10.1.0.4").write_bytes(b"a\n")
    (d / "last_reserved_ip.0").write_bytes(b"a")  # only files named by an address count
    st = DiskStore(str(tmp_path), "net1")
    st.scan(locked=False)
    assert st.held_by("a", "eth0") == [ip("10.1.0.4")]
    assert st.held_by("b", "eth0") == []


def test_gc_rules(tmp_path) -> None:
    d = tmp_path / "net1"
    d.mkdir()
    leases = {
        "10.1.0.2": b"keep\r\neth0",
        "10.1.0.3": b"keep\r\neth1",  # same container, interface not in the valid list
        "10.1.0.4": b"gone\r\neth0",
        "10.1.0.5": b"keep",  # legacy id-only: its container is valid
        "10.1.0.6": b"gone",  # legacy, container gone
        "10.1.0.7": b"",  # a reference write that crashed before writing anything
        "fd00::9": b"gone\r\neth0",
    }
    for name, data in leases.items():
        (d / name).write_bytes(data)
    (d / "last_reserved_ip.0").write_bytes(b"10.1.0.4")
    (d / "lock").write_bytes(b"")
    with DiskStore(str(tmp_path), "net1").open() as st:
        removed = st.gc({("keep", "eth0")})
    assert sorted(map(str, removed)) == ["10.1.0.3", "10.1.0.4", "10.1.0.6", "10.1.0.7", "fd00::9"]
    assert sorted(p.name for p in d.iterdir()) == [
        "10.1.0.2",
        "10.1.0.5",
        "last_reserved_ip.0",
        "lock",
    ]


def test_last_reserved_is_only_a_hint(tmp_path) -> None:
    d = tmp_path / "net1"
    d.mkdir()
    st = DiskStore(str(tmp_path), "net1")
    assert st.last_reserved(0) is None
    (d / "last_reserved_ip.0").write_bytes(b"garbage")
    assert st.last_reserved(0) is None
    (d / "last_reserved_ip.0").write_bytes(b"")
    assert st.last_reserved(0) is None
    (d / "last_reserved_ip.0").write_bytes(b"10.1.0.9")
    assert st.last_reserved(0) == ip("10.1.0.9")


def test_open_without_create_leaves_a_missing_network_alone(tmp_path) -> None:
    with DiskStore(str(tmp_path), "nope").open(create=False) as st:
        assert not st.exists
    assert list(tmp_path.iterdir()) == []


def test_lock_wait_is_bounded(tmp_path) -> None:
    with DiskStore(str(tmp_path), "net1").open():
        pass
    fd = os.open(tmp_path / "net1" / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t0 = time.monotonic()
        with pytest.raises(errors.TryAgainLater) as exc:
            DiskStore(str(tmp_path), "net1").open(timeout=0.3)
        waited = time.monotonic() - t0
        assert 0.3 <= waited < 1.5
        assert exc.value.code == 11
        assert str(tmp_path / "net1" / "lock") in exc.value.msg
    finally:
        os.close(fd)
    with DiskStore(str(tmp_path), "net1").open(timeout=0.3):
        pass  # free again


def test_lock_timeout_env(monkeypatch) -> None:
    monkeypatch.setenv("PYCNI_IPAM_LOCK_TIMEOUT", "0.25")
    assert store_mod.lock_timeout() == 0.25
    for bad in ("x", "-1"):
        monkeypatch.setenv("PYCNI_IPAM_LOCK_TIMEOUT", bad)
        assert store_mod.lock_timeout() == store_mod.DEFAULT_LOCK_TIMEOUT
    monkeypatch.delenv("PYCNI_IPAM_LOCK_TIMEOUT")
    assert store_mod.lock_timeout() == 10.0


def test_lock_excludes_threads_of_one_process(tmp_path) -> None:
    """The bridge may call host-local in-process; flock on separate opens still excludes."""
    with DiskStore(str(tmp_path), "net1").open(), pytest.raises(errors.TryAgainLater):
        DiskStore(str(tmp_path), "net1").open(timeout=0.05)


def test_status(tmp_path) -> None:
    assert store_mod.status(str(tmp_path)) is None
    assert store_mod.status(str(tmp_path / "not" / "yet")) is None  # created by the first ADD
    (tmp_path / "file").write_text("")
    assert (
        store_mod.status(str(tmp_path / "file" / "sub"))
        == f"{tmp_path / 'file'} is not a directory"
    )


# -- the lease index (<dataDir>/.pycni-index.<network>) -----------------------------------


def _add(tmp_path, cid: str, ifname: str = "eth0", net: str = "net1") -> list:
    """One ADD as host-local does it: refresh, duplicate check, reserve, commit."""
    from pycni.ipam.allocator import Range, RangeSet, allocate_all

    rs = [RangeSet([Range.checked(ipaddress.ip_interface("10.1.0.0/24"), None, None, None, "r")])]
    with DiskStore(str(tmp_path), net).open() as st:
        st.refresh()
        got = allocate_all(rs, st, cid, ifname)
        st.commit()
    return [str(a) for a, _r in got]


def _no_reads(monkeypatch) -> None:
    real = store_mod._read_small

    def only_hints(path):
        assert lease_ip(os.path.basename(path)) is None, f"read the lease {path}"
        return real(path)

    monkeypatch.setattr(store_mod, "_read_small", only_hints)


@pytest.fixture(autouse=True)
def _wait_for_every_index(monkeypatch) -> None:
    """These tests use a few leases; make the store wait for a trusted index as it does
    for a network of INDEX_WAIT_MIN leases or more (the tests below check both)."""
    monkeypatch.setattr(store_mod, "INDEX_WAIT_MIN", 0)


def test_a_small_network_never_waits_for_its_index(tmp_path, monkeypatch) -> None:
    """Below INDEX_WAIT_MIN leases, an index no newer than the directory is left as it
    is (never trusted) rather than waited for; the next call reads every lease."""
    real_rewrite = store_mod._rewrite

    def coarse(fd: int, data: bytes) -> None:  # a clock that never ticks
        real_rewrite(fd, data)
        os.utime(fd, ns=(0, 0))

    monkeypatch.setattr(store_mod, "_rewrite", coarse)
    monkeypatch.setattr(store_mod, "INDEX_WAIT_MIN", 64)
    slept = []
    monkeypatch.setattr(store_mod.time, "sleep", slept.append)
    assert _add(tmp_path, "a") == ["10.1.0.2"]
    assert slept == []
    index = tmp_path / ".pycni-index.net1"
    assert index.exists()
    with DiskStore(str(tmp_path), "net1").open() as st:
        assert not st._load_index()
        st.refresh()
        assert st.held_by("a", "eth0") == [ip("10.1.0.2")]
    # from INDEX_WAIT_MIN leases on it waits (here in vain, for 10 ms), and removes
    # the index it could not make newer
    monkeypatch.setattr(store_mod, "INDEX_WAIT_MIN", 2)
    assert _add(tmp_path, "b") == ["10.1.0.3"]
    assert slept
    assert not index.exists()


def test_index_lives_outside_the_network_directory_and_spares_the_reads(
    tmp_path, monkeypatch
) -> None:
    for n in range(5):
        assert _add(tmp_path, f"c{n}") == [f"10.1.0.{n + 2}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pycni-index.net1", "net1"]
    assert sorted(p.name for p in (tmp_path / "net1").iterdir()) == [
        "10.1.0.2",
        "10.1.0.3",
        "10.1.0.4",
        "10.1.0.5",
        "10.1.0.6",
        "last_reserved_ip.0",
        "lock",
    ]
    _no_reads(monkeypatch)
    assert _add(tmp_path, "c5") == ["10.1.0.7"]  # no lease read
    with pytest.raises(errors.InvalidConfig, match="duplicate allocation"):
        _add(tmp_path, "c3")
    with DiskStore(str(tmp_path), "net1").open() as st:
        assert st.release("c3", "eth0") == [ip("10.1.0.5")]
    with DiskStore(str(tmp_path), "net1").open() as st:
        st.refresh()
        assert st.held_by("c3", "eth0") == []
        assert st.held_by("c4", "eth0") == [ip("10.1.0.6")]


def _write_like_the_reference(path, content: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, content)
    os.close(fd)


@pytest.mark.parametrize("pause", [0.0, 0.02])
def test_index_sees_a_lease_another_process_added(tmp_path, pause: float) -> None:
    """Right after our write (same clock tick) and later: the lease the other writer
    added is seen, so the duplicate check holds and the address is not handed out."""
    d = tmp_path / "net1"
    for _ in range(20):
        _add(tmp_path, "ours")
        time.sleep(pause)
        with DiskStore(str(tmp_path), "net1").open():  # the other writer holds the lock
            _write_like_the_reference(d / "10.1.0.3", b"theirs\r\neth0")
        with pytest.raises(errors.InvalidConfig, match=r"10\.1\.0\.3 has been allocated to theirs"):
            _add(tmp_path, "theirs")
        assert _add(tmp_path, "third") == ["10.1.0.4"]
        for p in d.iterdir():
            if p.name[0].isdigit():
                p.unlink()
        (d / "last_reserved_ip.0").unlink()


def test_index_sees_a_lease_replaced_under_the_same_name(tmp_path) -> None:
    """Removed and created again at once (the inode number may be reused): the new
    owner is who the index reports."""
    d = tmp_path / "net1"
    for n in range(20):
        assert _add(tmp_path, f"old{n}") == ["10.1.0.2"]
        with DiskStore(str(tmp_path), "net1").open():
            (d / "10.1.0.2").unlink()
            _write_like_the_reference(d / "10.1.0.2", f"new{n}\r\neth0".encode())
        with DiskStore(str(tmp_path), "net1").open() as st:
            st.refresh()
            assert st.held_by(f"old{n}", "eth0") == []
            assert st.held_by(f"new{n}", "eth0") == [ip("10.1.0.2")]
        with pytest.raises(errors.InvalidConfig, match="duplicate allocation"):
            _add(tmp_path, f"new{n}")
        with DiskStore(str(tmp_path), "net1").open() as st:
            assert st.release(f"new{n}", "eth0") == [ip("10.1.0.2")]
        (d / "last_reserved_ip.0").unlink()


def test_index_sees_a_lease_another_process_removed(tmp_path) -> None:
    d = tmp_path / "net1"
    _add(tmp_path, "a")
    _add(tmp_path, "b")
    with DiskStore(str(tmp_path), "net1").open():
        (d / "10.1.0.2").unlink()
    assert _add(tmp_path, "a") == ["10.1.0.4"]  # no longer a duplicate
    with DiskStore(str(tmp_path), "net1").open() as st:
        assert st.release("a", "eth0") == [ip("10.1.0.4")]


def test_index_not_trusted_when_stale_corrupt_or_racy(tmp_path, monkeypatch) -> None:
    _add(tmp_path, "a")
    index = tmp_path / ".pycni-index.net1"
    good = index.read_bytes()
    with DiskStore(str(tmp_path), "net1").open() as st:
        assert st._load_index()
    for bad in (b"", b"garbage\n", good[:-20], good.replace(b"\tI\ta\t", b"\tQ\ta\t")):
        index.write_bytes(bad)
        with DiskStore(str(tmp_path), "net1").open() as st:
            assert not st._load_index()
            st.refresh()
            assert st.held_by("a", "eth0") == [ip("10.1.0.2")]
    # well-formed but not newer than the directory: racy, not trusted
    index.write_bytes(good)
    st_dir = os.stat(tmp_path / "net1")
    os.utime(index, ns=(st_dir.st_mtime_ns, st_dir.st_mtime_ns))
    with DiskStore(str(tmp_path), "net1").open() as st:
        assert not st._load_index()
    # an unknown file named like an address, or debris, also means a full read
    index.write_bytes(good)
    (tmp_path / "net1" / ".pycni-tmp.1.1").write_bytes(b"")
    with DiskStore(str(tmp_path), "net1").open() as st:
        assert not st._load_index()
        st.refresh()  # full scan: debris removed, index rewritten
        st._save_index()
    with DiskStore(str(tmp_path), "net1").open() as st:
        assert st._load_index()


def test_no_index_for_leases_it_cannot_represent(tmp_path) -> None:
    d = tmp_path / "net1"
    d.mkdir()
    (d / "10.1.0.9").write_bytes(b"odd\tid\r\neth0")
    assert _add(tmp_path, "a") == ["10.1.0.2"]
    assert not (tmp_path / ".pycni-index.net1").exists()
    with pytest.raises(errors.InvalidConfig, match="duplicate allocation"):
        _add(tmp_path, "odd\tid")


def test_check_without_the_lock_does_not_use_or_write_the_index(tmp_path) -> None:
    _add(tmp_path, "a")
    index = tmp_path / ".pycni-index.net1"
    before = index.read_bytes()
    (tmp_path / "net1" / "10.1.0.7").write_bytes(b"b\r\neth0")
    st = DiskStore(str(tmp_path), "net1")
    st.scan(locked=False)
    assert st.held_by("b", "eth0") == [ip("10.1.0.7")]
    assert index.read_bytes() == before
