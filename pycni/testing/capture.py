"""A bounded packet capture of every interface of one namespace, one pcap file per
interface: `python -m pycni.testing.capture DIR PREFIX [MAX_PACKETS [SNAPLEN]]`, run
inside the namespace. Stdlib only (an AF_PACKET socket, the classic pcap format), so
it starts in tens of milliseconds and needs no tcpdump; it sees interfaces created
after it started. Each file holds at most MAX_PACKETS packets of at most SNAPLEN bytes.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time
from typing import BinaryIO

ETH_P_ALL = 0x0003
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
#: hardware types whose frames start with an Ethernet header (ether, loopback)
_ETHERNET_HATYPES = {1, 772}


def _header(snaplen: int, linktype: int) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


def main(argv: list[str]) -> int:
    directory, prefix = argv[0], argv[1]
    max_packets = int(argv[2]) if len(argv) > 2 else 10000
    snaplen = int(argv[3]) if len(argv) > 3 else 512
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    files: dict[str, BinaryIO] = {}
    counts: dict[str, int] = {}

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    try:
        while True:
            data, addr = sock.recvfrom(65535)
            ifname, hatype = addr[0], addr[3]
            if counts.get(ifname, 0) >= max_packets:
                continue
            fh = files.get(ifname)
            if fh is None:
                linktype = LINKTYPE_ETHERNET if hatype in _ETHERNET_HATYPES else LINKTYPE_RAW
                fh = open(os.path.join(directory, f"{prefix}{ifname}.pcap"), "wb")  # noqa: SIM115
                fh.write(_header(snaplen, linktype))
                files[ifname] = fh
            now = time.time()
            chunk = data[:snaplen]
            fh.write(struct.pack("<IIII", int(now), int(now % 1 * 1e6), len(chunk), len(data)))
            fh.write(chunk)
            fh.flush()
            counts[ifname] = counts.get(ifname, 0) + 1
    finally:
        for fh in files.values():
            fh.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
