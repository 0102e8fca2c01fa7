"""Real traffic between places, all bounded in time and count.

A *place* is anything with `argv(*cmd)` and `env`: a `Netns`, a `Node` (its own
namespace), a node's `Container`, or None (the test's own namespace). Servers run as
background processes in the place and stop when their `with` block ends (or after
`max_seconds`, whichever comes first); clients return what they got, or None when the
peer was unreachable within `timeout`.

    with echo_server(server_ns, "10.0.0.2", 7000):
        assert echo(client_ns, "10.0.0.2", 7000) == "hi"
    assert ping(client_ns, "10.0.0.2")
    with http_server(srv, "0.0.0.0", 8080, body="ok"):
        assert http_get(cli, "http://10.0.0.2:8080/") == (200, "ok")
    bps = throughput(cli, srv, "10.0.0.2", seconds=1.0)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

PY = sys.executable


class Place(Protocol):
    def argv(self, *cmd: str) -> list[str]: ...

    @property
    def env(self) -> dict[str, str]: ...


def _argv(place: Place | None, *cmd: str) -> list[str]:
    return list(cmd) if place is None else place.argv(*cmd)


def _env(place: Place | None) -> dict[str, str]:
    return dict(os.environ) if place is None else place.env


# A server answers each TCP connection / UDP datagram with "<reply or the data> <peer ip>"
# and exits after max_seconds or max_count exchanges.
_ECHO_SERVER = r"""
import socket, sys, time, signal
ip, port, proto, reply, max_seconds, max_count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6])
signal.alarm(max(1, int(max_seconds)))
fam = socket.AF_INET6 if ':' in ip else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
if proto == 'tcp':
    s.listen(64)
print('ready', flush=True)
for _ in range(max_count):
    if proto == 'tcp':
        c, peer = s.accept()
        c.settimeout(2)
        try:
            data = c.recv(4096)
        except OSError:
            data = b''
        c.sendall((reply or data.decode(errors='replace').strip()).encode() + f" {peer[0]}\n".encode())
        c.close()
    else:
        data, peer = s.recvfrom(4096)
        s.sendto((reply or data.decode(errors='replace').strip()).encode() + f" {peer[0]}\n".encode(), peer)
"""

_ECHO_CLIENT = r"""
import socket, sys
ip, port, proto, data, timeout, source = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6]
fam = socket.AF_INET6 if ':' in ip else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM)
s.settimeout(timeout)
if source:
    s.bind((source, 0))
if proto == 'tcp':
    s.connect((ip, port)); s.sendall(data.encode()); print(s.recv(4096).decode().strip())
else:
    s.sendto(data.encode(), (ip, port)); print(s.recvfrom(4096)[0].decode().strip())
"""


@contextmanager
def _background(
    place: Place | None, code: str, *args: str, ready_timeout: float = 10.0
) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        _argv(place, PY, "-c", code, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(place),
    )
    try:
        assert proc.stdout is not None
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline() if sel.select(ready_timeout) else ""
        sel.close()
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=5)
            raise AssertionError(f"server in {place} failed to start: {err.strip()}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@contextmanager
def echo_server(
    place: Place | None,
    ip: str,
    port: int,
    proto: str = "tcp",
    reply: str = "",
    max_seconds: float = 120,
    max_count: int = 1000,
) -> Iterator[subprocess.Popen[str]]:
    """A TCP or UDP server at ip:port answering "<reply, or what it got> <client ip>"."""
    with _background(
        place, _ECHO_SERVER, ip, str(port), proto, reply, str(max_seconds), str(max_count)
    ) as proc:
        yield proc


def echo_reply(
    place: Place | None,
    ip: str,
    port: int,
    data: str = "hi",
    proto: str = "tcp",
    timeout: float = 2.0,
    source: str = "",
) -> str | None:
    """The server's whole answer ("<data> <client ip as the server saw it>"), or None."""
    proc = subprocess.run(
        _argv(place, PY, "-c", _ECHO_CLIENT, ip, str(port), proto, data, str(timeout), source),
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        env=_env(place),
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def echo(
    place: Place | None,
    ip: str,
    port: int,
    data: str = "hi",
    proto: str = "tcp",
    timeout: float = 2.0,
) -> str | None:
    """What came back for `data` (without the client address), or None when unreachable."""
    answer = echo_reply(place, ip, port, data, proto, timeout)
    return None if answer is None else answer.rsplit(" ", 1)[0]


def ping(place: Place | None, ip: str, count: int = 1, timeout: float = 1.0) -> bool:
    """True when `count` ICMP echo requests were all answered within `timeout` seconds each."""
    six = ["-6"] if ":" in ip else []
    proc = subprocess.run(
        _argv(place, "ping", *six, "-n", "-q", "-c", str(count), "-W", str(timeout), ip),
        capture_output=True,
        text=True,
        timeout=count * (timeout + 1) + 30,
        env=_env(place),
    )
    return proc.returncode == 0


_HTTP_SERVER = r"""
import http.server, sys, signal
ip, port, body, max_seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
signal.alarm(max(1, int(max_seconds)))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(http.server.HTTPServer):
    address_family = __import__('socket').AF_INET6 if ':' in ip else __import__('socket').AF_INET
srv = S((ip, port), H)
print('ready', flush=True)
srv.serve_forever()
"""

_HTTP_GET = r"""
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))
    status, body = r.status, r.read(65536)
except urllib.error.HTTPError as e:
    status, body = e.code, e.read(65536)
sys.stdout.write(f"{status}\n"); sys.stdout.write(body.decode(errors='replace'))
"""


@contextmanager
def http_server(
    place: Place | None, ip: str, port: int, body: str = "ok", max_seconds: float = 120
) -> Iterator[subprocess.Popen[str]]:
    """An HTTP server at ip:port answering every GET with 200 and `body`."""
    with _background(place, _HTTP_SERVER, ip, str(port), body, str(max_seconds)) as proc:
        yield proc


def http_get(place: Place | None, url: str, timeout: float = 3.0) -> tuple[int, str] | None:
    """(status, body) of GET `url` from `place`, or None when nothing answered in time."""
    proc = subprocess.run(
        _argv(place, PY, "-c", _HTTP_GET, url, str(timeout)),
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        env=_env(place),
    )
    if proc.returncode != 0 or "\n" not in proc.stdout:
        return None
    status, body = proc.stdout.split("\n", 1)
    return int(status), body


_SINK = r"""
import socket, sys, time, signal
ip, port, max_seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
signal.alarm(max(1, int(max_seconds)))
s = socket.socket(socket.AF_INET6 if ':' in ip else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port)); s.listen(1)
print('ready', flush=True)
c, _ = s.accept()
total, start = 0, None
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    start = start or time.monotonic()
    total += len(b)
elapsed = time.monotonic() - (start or time.monotonic())
print(total, elapsed, flush=True)
"""

_SOURCE = r"""
import socket, sys, time
ip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((ip, port), timeout=5)
buf = b'\0' * (1 << 16)
end = time.monotonic() + seconds
while time.monotonic() < end:
    s.sendall(buf)
s.close()
"""


def throughput(
    client: Place | None, server: Place | None, ip: str, port: int = 5201, seconds: float = 1.0
) -> float:
    """Bits per second of one TCP stream from `client` to `server` (listening on ip:port)
    during `seconds` (at most 30)."""
    seconds = min(seconds, 30.0)
    with _background(server, _SINK, ip, str(port), str(seconds + 30)) as sink:
        subprocess.run(
            _argv(client, PY, "-c", _SOURCE, ip, str(port), str(seconds)),
            check=True,
            capture_output=True,
            timeout=seconds + 30,
            env=_env(client),
        )
        assert sink.stdout is not None
        total, elapsed = sink.stdout.readline().split()
    return float(total) * 8 / max(float(elapsed), 1e-6)


def reachable_tcp(place: Place | None, ip: str, port: int, timeout: float = 2.0) -> bool:
    """True when a TCP connection to ip:port from `place` is accepted within `timeout`."""
    code = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))"
    proc: Any = subprocess.run(
        _argv(place, PY, "-c", code, ip, str(port), str(timeout)),
        capture_output=True,
        timeout=timeout + 30,
        env=_env(place),
    )
    return bool(proc.returncode == 0)
