"""pycni/unixpath.py: unix sockets at paths longer than sun_path."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from pycni import unixpath


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_bind_and_connect_at_any_depth(tmp_path: Path, depth: int) -> None:
    d = tmp_path.joinpath(*(["d" * 50] * depth))
    d.mkdir(parents=True, exist_ok=True)
    path = str(d / "s.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unixpath.bind(server, path, umask=0o177)
    server.listen(1)
    try:
        st = os.stat(path)  # the socket file is where the long path says, born 0600
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unixpath.connect(client, path)
        conn, _ = server.accept()
        client.sendall(b"hello")
        assert conn.recv(5) == b"hello"
        conn.close()
        client.close()
        assert depth < 3 or len(path) > unixpath.SUN_PATH_MAX
    finally:
        server.close()
    assert sorted(os.listdir(d)) == ["s.sock"]  # and no descriptor link left anywhere


def test_errors_are_the_kernels(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 200)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(FileNotFoundError):  # no such directory
        unixpath.connect(client, str(deep / "s.sock"))
    deep.mkdir()
    with pytest.raises(FileNotFoundError):  # nobody listens there
        unixpath.connect(client, str(deep / "s.sock"))
    with pytest.raises(OSError, match="too long"):  # a name longer than sun_path itself
        unixpath.connect(client, str(deep / ("n" * 120)))
    client.close()
    fds = set(os.listdir("/proc/self/fd"))
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(FileNotFoundError):
        unixpath.connect(client, str(deep / "s.sock"))
    client.close()
    assert set(os.listdir("/proc/self/fd")) == fds  # the directory's descriptor is closed
