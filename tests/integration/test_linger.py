"""pycni.linger: a short-lived process's nftables sockets are last closed by a detached
process, so its exit does not wait for nf_tables' deferred destruction."""

from __future__ import annotations

import os
import time

import pytest

from pycni import linger, netns
from pycni.firewall import nft

pytestmark = pytest.mark.root


def _fds(pid: int) -> dict[int, str]:
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
    return out


def _session_leaders_holding(target: str) -> list[int]:
    """Processes leading a session of their own that hold the file `target`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if int(fields[3]) != pid:  # session id
                continue
            if target in _fds(pid).values():
                found.append(pid)
        except OSError:
            continue
    return found


def test_netfilter_sockets_handed_to_a_detached_process(host_ns) -> None:
    if nft.Nft().mode() != "lib":
        pytest.fail("libnftables is needed here (apt install libnftables1)")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()  # as a runtime's pipe on the plugin's stdout
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            for fd in (ready_r, go_w, out_r):
                os.close(fd)
            os.dup2(out_w, 1)
            os.close(out_w)
            netns.setns(os.open(host_ns.path, os.O_RDONLY))
            inherited = set(linger._netfilter_sockets())  # the test process's own
            fw = nft.Nft("lib")
            table = {"family": "inet", "name": "pytlinger"}
            fw.run([{"add": {"table": table}}])
            fw.run([{"delete": {"table": table}}])  # something for the kernel to free
            socks = set(linger._netfilter_sockets()) - inherited
            linger.before_exit()
            os.write(ready_w, b"%d" % socks.pop() if len(socks) == 1 else b"-")
            os.read(go_r, 1)
            code = 0
        finally:
            os._exit(code)
    for fd in (ready_w, go_r, out_w):
        os.close(fd)
    try:
        answer = os.read(ready_r, 64)
        assert answer != b"-", "not exactly one new netfilter socket in the child"
        sock = _fds(pid)[int(answer)]
        deadline = time.monotonic() + 10  # the detached one leads its session once set
        while not (holders := _session_leaders_holding(sock)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(holders) == 1 and holders[0] != pid
        detached = holders[0]
        files = _fds(detached)
        assert files[0] == files[1] == files[2] == "/dev/null"
        # netfilter sockets, and the pipe that tells it the child has gone: nothing else
        rest = [f for fd, f in files.items() if fd > 2]
        assert sock in rest and sum(f.startswith("pipe:") for f in rest) == 1
        assert all(f.startswith(("socket:", "pipe:")) for f in rest)
    finally:
        os.close(go_w)
        os.waitpid(pid, 0)
    # The child's stdout reached its end with the child, and the detached process ends.
    assert os.read(out_r, 1) == b""
    os.close(out_r)
    os.close(ready_r)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{detached}") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{detached}")
    assert "pytlinger" not in host_ns.run("nft", "list", "tables")


def test_nothing_handed_off_without_a_deletion_or_in_thread_mode(monkeypatch) -> None:
    monkeypatch.setattr(linger, "_registered", [])
    monkeypatch.setattr(linger, "MODE", "thread")
    linger.netfilter_sockets_at_exit()
    assert linger._registered == []
    monkeypatch.setattr(linger, "MODE", "process")
    called = []
    monkeypatch.setattr(linger, "_hand_off_netfilter_sockets", lambda: called.append(1))
    linger.netfilter_sockets_at_exit()
    linger.before_exit()
    linger.before_exit()
    assert called == [1]  # once


def test_detach_refuses_to_keep_stdio_fds() -> None:
    """fds 0-2 become /dev/null in the child: keeping one is refused before any
    fork (the callers then do the work themselves)."""
    with pytest.raises(OSError, match="fd 0-2"):
        linger.detach([2, 5])


def test_detach_forks_once_and_does_not_wait() -> None:
    """The caller gets on at once; the process it leaves behind is its own child (no
    intermediate one), in a session of its own, and reap() collects it once ended."""
    hold_r, hold_w = os.pipe()
    before = set(linger._detached)
    if linger.detach([hold_r]):  # pragma: no cover - the detached child
        os.read(hold_r, 1)  # until the test lets go
        os._exit(0)
    os.close(hold_r)
    try:
        (child,) = set(linger._detached) - before
        with open(f"/proc/{child}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        assert int(fields[1]) == os.getpid()  # its parent: the caller
        deadline = time.monotonic() + 10  # it leads a session of its own once it is set
        while not _session_leaders_holding(os.readlink(f"/proc/self/fd/{hold_w}")):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        linger.reap()
        assert child in linger._detached  # still running: not reaped
    finally:
        os.close(hold_w)  # the detached child ends
    deadline = time.monotonic() + 10
    while child in linger._detached and time.monotonic() < deadline:
        linger.reap()
        time.sleep(0.005)
    assert child not in linger._detached
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # reaped
