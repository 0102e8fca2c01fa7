"""The agent's wire format and the client's fallback rule, against a scripted fake agent.

No root and no real agent: a thread plays the agent's side of one connection, so each
test pins down one branch of pycni.agent_client.forward: when the client may run the
verb itself (None) and when it must not (the agent's answer, or CNI error 11).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycni import agent_client as wire
from pycni import skel
from pycni.plugins import PLUGINS
from pycni.runtime import agent

CONF = json.dumps({"cniVersion": "0.4.0", "name": "n", "type": "loopback"}).encode()


def test_limits_agree_with_skel() -> None:
    assert wire.MAX_STDIN == skel.MAX_STDIN == agent.MAX_STDIN


def test_request_round_trip() -> None:
    env = b"CNI_COMMAND=ADD\0PATH=/bin\0ODD=\xff\xfe=x\0EMPTY="
    raw = wire.encode_request("pycni.plugins.bridge", "0.1.0", 0o027, env, b"\x00stdin\xff")
    umask, lengths = agent.parse_header(raw[: wire.HEADER_LEN])
    req = agent.parse_body(umask, lengths, raw[wire.HEADER_LEN :])
    assert (req.umask, req.version, req.module) == (0o027, "0.1.0", "pycni.plugins.bridge")
    assert req.env == {
        b"CNI_COMMAND": b"ADD",
        b"PATH": b"/bin",
        b"ODD": b"\xff\xfe=x",
        b"EMPTY": b"",
    }
    assert req.stdin == b"\x00stdin\xff"


def test_empty_environment() -> None:
    raw = wire.encode_request("m", "v", 0, b"", b"")
    umask, lengths = agent.parse_header(raw[: wire.HEADER_LEN])
    assert agent.parse_body(umask, lengths, raw[wire.HEADER_LEN :]).env == {}


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "bad magic"),
        (b"PC", "truncated request header"),
        (wire.MAGIC + bytes(4), "truncated request header"),
        (wire.MAGIC + (0o1000).to_bytes(4, "big") + bytes(16), "invalid umask"),
        (wire.MAGIC + bytes(4) + (65).to_bytes(4, "big") + bytes(12), "version is 65 bytes"),
        (wire.MAGIC + bytes(8) + (257).to_bytes(4, "big") + bytes(8), "module is 257 bytes"),
        (wire.MAGIC + bytes(12) + (2**20 + 1).to_bytes(4, "big") + bytes(4), "environment"),
        (wire.MAGIC + bytes(16) + (skel.MAX_STDIN + 1).to_bytes(4, "big"), "stdin is"),
    ],
)
def test_bad_headers(head: bytes, message: str) -> None:
    with pytest.raises(agent.BadRequest, match=message):
        agent.parse_header(head)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((b"\xff", b"m", b"", b""), "ASCII"),
        ((b"v", b"pycni.\xc3\xa9", b"", b""), "ASCII"),
        ((b"v", b"m", b"NOEQUALS", b""), "KEY="),
        ((b"v", b"m", b"A=1\0\0B=2", b""), "KEY="),
        ((b"v", b"m", b"=1", b""), "KEY="),
        ((b"v", b"m", b"\0".join([b"A=1"] * 5000), b""), "too many"),
    ],
)
def test_bad_bodies(fields: tuple[bytes, ...], message: str) -> None:
    with pytest.raises(agent.BadRequest, match=message):
        agent.parse_body(0, [len(f) for f in fields], b"".join(fields))


def test_error_answer_speaks_the_callers_version() -> None:
    from pycni import errors

    for stdin, version in ((CONF, "0.4.0"), (b"{oops", "1.1.0"), (b'{"name":"x"}', "1.1.0")):
        data = agent.error_answer(errors.DecodingFailure("bad", "worse"), stdin)
        assert data[:1] == wire.ANSWER
        code = struct.unpack(">i", data[1:5])[0]
        body = data[9:]
        assert code == 1 and len(body) == struct.unpack(">I", data[5:9])[0]
        obj = json.loads(body)
        # no cniVersion in the config means 0.1.0 (as skel); 0.1.0 is supported
        expected = "0.1.0" if stdin == b'{"name":"x"}' else version
        assert obj == {"cniVersion": expected, "code": 6, "msg": "bad", "details": "worse"}


def test_interrupted_is_error_11_in_the_callers_version() -> None:
    obj = json.loads(wire.interrupted(CONF))
    assert obj["code"] == 11 and obj["cniVersion"] == "0.4.0" and "retry" in obj["details"]
    assert json.loads(wire.interrupted(b"\xff"))["cniVersion"] == "1.1.0"


def test_socket_path_and_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(wire.SOCKET_ENV, raising=False)
    assert wire.socket_path(os.environ) == "/run/pycni/agent.sock"
    monkeypatch.setenv(wire.SOCKET_ENV, "/tmp/x.sock")
    assert wire.socket_path(os.environ) == "/tmp/x.sock"
    for text, value in (("", 10.0), ("0.25", 0.25), ("nope", 10.0), ("-1", 10.0), ("0", 10.0)):
        monkeypatch.setenv(wire.TIMEOUT_ENV, text)
        assert wire.ready_timeout() == value


def test_every_plugin_has_verbs_for_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycni import linger

    monkeypatch.setattr(linger, "MODE", linger.MODE)  # warm() sets the agent's, undone after
    verbs = agent.warm()
    assert set(verbs) == set(PLUGINS.values())
    assert all(isinstance(v, skel.Verbs) for v in verbs.values())


# -- the fallback rule, against a scripted agent --------------------------------------------


class FakeAgent:
    """Accepts one connection and runs `script(conn)` in a thread."""

    def __init__(self, path: Path, script: Callable[[socket.socket], None]) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.script = script
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                self.script(conn)
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(10)
        self.listener.close()
        if self.error is not None:
            raise self.error


def read_request(conn: socket.socket) -> agent.Request:
    return agent._recv_request(conn)


@pytest.fixture
def sock_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "agent.sock"
    monkeypatch.setenv(wire.SOCKET_ENV, str(path))
    monkeypatch.setenv("CNI_COMMAND", "ADD")
    monkeypatch.setenv(wire.TIMEOUT_ENV, "0.5")
    yield path


def forward() -> tuple[bytes, int] | None:
    return wire.forward("pycni.plugins.loopback", "0.1.0", CONF)


def test_no_socket_falls_back(sock_path: Path) -> None:
    assert forward() is None


def test_stale_socket_falls_back(sock_path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    s.close()
    assert forward() is None


def test_closed_before_ready_falls_back(sock_path: Path) -> None:
    fake = FakeAgent(sock_path, lambda conn: None)
    assert forward() is None
    fake.join()


def test_closed_after_reading_the_request_falls_back(sock_path: Path) -> None:
    seen: list[agent.Request] = []
    fake = FakeAgent(sock_path, lambda conn: seen.append(read_request(conn)))
    assert forward() is None
    fake.join()
    assert seen[0].stdin == CONF and seen[0].env[b"CNI_COMMAND"] == b"ADD"
    assert seen[0].umask == _umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_fallback_answer_falls_back(sock_path: Path) -> None:
    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(wire.FALLBACK)

    fake = FakeAgent(sock_path, script)
    assert forward() is None
    fake.join()


def test_silent_agent_times_out_into_fallback(sock_path: Path) -> None:
    done = threading.Event()
    fake = FakeAgent(sock_path, lambda conn: (read_request(conn), done.wait(5)))
    assert forward() is None
    done.set()
    fake.join()


def test_answer_before_ready_is_final(sock_path: Path) -> None:
    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(wire.encode_answer(1, b'{"code":4}\n'))

    fake = FakeAgent(sock_path, script)
    assert forward() == (b'{"code":4}\n', 1)
    fake.join()


def test_full_exchange_passes_stderr_with_go(sock_path: Path) -> None:
    got: list[object] = []

    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(wire.READY)
        fd = agent._recv_go(conn)
        assert fd is not None and fd >= 0
        got.append(os.fstat(fd).st_ino == os.fstat(2).st_ino)
        os.close(fd)
        conn.sendall(wire.encode_answer(0, b"{}\n"))

    fake = FakeAgent(sock_path, script)
    assert forward() == (b"{}\n", 0)
    fake.join()
    assert got == [True]


@pytest.mark.parametrize(
    "after_go",
    [
        b"",  # the worker died after GO
        wire.ANSWER + bytes(3),  # ... in the middle of its answer
        wire.ANSWER + bytes(4) + (100).to_bytes(4, "big") + b"{}",  # ... or of its stdout
        b"X",  # something that is not an answer
    ],
    ids=["eof", "cut header", "cut stdout", "garbage"],
)
def test_anything_short_of_an_answer_after_go_is_error_11(sock_path: Path, after_go: bytes) -> None:
    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(wire.READY)
        fd = agent._recv_go(conn)
        if fd is not None and fd >= 0:
            os.close(fd)
        conn.sendall(after_go)

    fake = FakeAgent(sock_path, script)
    answer = forward()
    fake.join()
    assert answer is not None
    out, code = answer
    assert code == 1
    obj = json.loads(out)
    assert obj["code"] == 11 and obj["cniVersion"] == "0.4.0"


def test_go_is_not_sent_before_ready(sock_path: Path) -> None:
    """The client must not say "G" unless asked: the agent would run the verb."""
    received: list[bytes] = []

    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"?")  # neither R nor A nor F
        conn.settimeout(1)
        try:
            received.append(conn.recv(1))
        except TimeoutError:
            received.append(b"timeout")

    fake = FakeAgent(sock_path, script)
    assert forward() is None
    fake.join()
    assert received == [b""]  # the client closed without a word


def test_trust_needs_an_owned_directory_nobody_else_writes(tmp_path: Path) -> None:
    """Issue 14 item 6: a socket is trusted only in a directory owned by root or by us
    that group and others cannot write; absent is None (an agent may be started)."""
    d = tmp_path / "s"
    path = str(d / "agent.sock")
    assert wire.trusted_socket(path) is None  # no directory
    d.mkdir(mode=0o700)
    assert wire.trusted_socket(path) is None  # no socket
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(path)
        assert wire.trusted_socket(path) is True
        for mode in (0o770, 0o707, 0o1777, 0o720):
            os.chmod(d, mode)
            assert wire.trusted_socket(path) is False, oct(mode)
            assert wire.trusted_dir(str(d)) is False
        os.chmod(d, 0o755)
        assert wire.trusted_socket(path) is True
    finally:
        s.close()
    os.unlink(path)
    os.symlink("/tmp", path)  # not a socket
    assert wire.trusted_socket(path) is False


def test_untrusted_socket_is_never_connected(tmp_path: Path) -> None:
    d = tmp_path / "ww"
    d.mkdir()
    os.chmod(d, 0o777)
    path = d / "agent.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(1)
    s.setblocking(False)
    saved = os.environ.get(wire.SOCKET_ENV)
    os.environ[wire.SOCKET_ENV] = str(path)
    try:
        assert wire.forward("pycni.plugins.loopback", "0", CONF) is None
        assert wire.absent is False  # untrusted is not absent: no agent is started there
        with pytest.raises(BlockingIOError):
            s.accept()
    finally:
        s.close()
        if saved is None:
            os.environ.pop(wire.SOCKET_ENV, None)
        else:
            os.environ[wire.SOCKET_ENV] = saved
