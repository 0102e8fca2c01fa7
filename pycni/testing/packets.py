"""scapy helpers: craft packets in the test, send them from a namespace, sniff what a
namespace's interface sees. Bounded: every sniff stops after `count` matching packets,
`max_packets` seen or `timeout` seconds, whichever comes first.

The processes inside the namespace are stdlib only (an AF_PACKET socket); scapy runs in
the test process, which builds and parses the packets:

    from scapy.layers.l2 import ARP, Ether
    from pycni.testing import packets

    with packets.sniffer(ns_b, "eth0", match=lambda p: ARP in p) as sniff:
        packets.send(ns_a, Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.2"), iface="eth0")
        sniff.wait(count=1, timeout=2)
    assert sniff.packets[0][ARP].pdst == "10.0.0.2"
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pycni.testing.traffic import PY, Place, _argv, _env

_SENDER = r"""
import socket, sys
iface = sys.argv[1]
for line in sys.stdin:
    kind, hexdata, dst = line.split()
    data = bytes.fromhex(hexdata)
    if kind == 'l2':
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((iface, 0)); s.send(data); s.close()
    else:
        fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
        if iface != '-':
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        s.sendto(data, (dst, 0)); s.close()
"""

_READER = r"""
import socket, sys, signal, select, time
iface, max_packets, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((iface, 0))
print('ready', flush=True)
end = time.monotonic() + timeout
for _ in range(max_packets):
    left = end - time.monotonic()
    if left <= 0 or not select.select([s], [], [], left)[0]:
        break
    data, addr = s.recvfrom(65535)
    print(addr[2], data.hex(), flush=True)
"""


def send(place: Place | None, packets: Any, iface: str = "-", timeout: float = 10.0) -> None:
    """Send scapy packets from `place`: frames with an Ethernet layer go out of `iface`
    as they are (AF_PACKET); IP packets go through a raw IP socket (bound to `iface`
    when given)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    lines = []
    for pkt in (
        packets if isinstance(packets, Iterable) and not hasattr(packets, "layers") else [packets]
    ):
        if Ether in pkt:
            assert iface != "-", "a frame with an Ethernet header needs iface="
            lines.append(f"l2 {bytes(pkt).hex()} -")
        else:
            dst = pkt[IP].dst if IP in pkt else pkt[IPv6].dst
            lines.append(f"l3 {bytes(pkt).hex()} {dst}")
    subprocess.run(
        _argv(place, PY, "-c", _SENDER, iface),
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=timeout,
        env=_env(place),
    )


class Sniffer:
    """Packets an interface saw, parsed by scapy, filtered by `match`."""

    def __init__(
        self,
        place: Place | None,
        iface: str,
        match: Callable[[Any], bool] | None = None,
        max_packets: int = 1000,
        timeout: float = 10.0,
        incoming_only: bool = False,
    ) -> None:
        # every layer bound, so frames decode fully; imported here, not in the reader
        # thread, so that wait()'s timeout is spent waiting for packets only
        import scapy.layers.all  # noqa: F401

        self.match = match
        self.incoming_only = incoming_only
        self.packets: list[Any] = []
        #: what `match` raised on frames it could not judge (those count as no match)
        self.errors: list[Exception] = []
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(
            _argv(place, PY, "-c", _READER, iface, str(max_packets), str(timeout)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(place),
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "ready":
            self._proc.kill()
            raise AssertionError(
                f"sniffer on {iface} in {place} failed: {self._proc.communicate()[1]}"
            )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        from scapy.layers.l2 import Ether

        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            pkttype, hexdata = line.split()
            if self.incoming_only and pkttype == "4":  # PACKET_OUTGOING
                continue
            pkt = Ether(bytes.fromhex(hexdata))
            try:
                matched = self.match is None or bool(self.match(pkt))
            except Exception as exc:  # a predicate that fails on some frame: not a match
                self.errors.append(exc)
                matched = False
            if matched:
                with self._cond:
                    self.packets.append(pkt)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait(self, count: int = 1, timeout: float = 3.0) -> list[Any]:
        """Block until `count` matching packets arrived or `timeout` passed; the packets."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self.packets) < count and self._thread.is_alive():
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.packets)

    def stop(self) -> list[Any]:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._thread.join(timeout=5)
        return list(self.packets)


@contextmanager
def sniffer(
    place: Place | None,
    iface: str,
    match: Callable[[Any], bool] | None = None,
    max_packets: int = 1000,
    timeout: float = 10.0,
    incoming_only: bool = False,
) -> Iterator[Sniffer]:
    """Sniff `iface` in `place` while the block runs."""
    s = Sniffer(place, iface, match, max_packets, timeout, incoming_only)
    try:
        yield s
    finally:
        s.stop()


def sniff(
    place: Place | None,
    iface: str,
    count: int = 1,
    timeout: float = 3.0,
    match: Callable[[Any], bool] | None = None,
    max_packets: int = 1000,
) -> list[Any]:
    """Up to `count` matching packets seen on `iface` within `timeout` seconds."""
    with sniffer(place, iface, match, max_packets, timeout) as s:
        return s.wait(count, timeout)[:count]
