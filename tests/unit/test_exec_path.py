"""The pieces that keep the plugin path without an agent cheap (issue 12), checked
against what they stand in for: format_ip against ipaddress, loopback's hand-built
result against Result.to_wire, pycni.ffi against libc, and portmap's DEL shortcut
against the firewall's saved state."""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pycni import ffi, skel
from pycni.firewall.base import Attachment
from pycni.firewall.plan import Record
from pycni.firewall.store import Store
from pycni.netlink import format_ip
from pycni.plugins import loopback, portmap
from pycni.result import Interface, IPConfig, Result

REPO = Path(__file__).resolve().parents[2]

EDGE_V6 = [
    "::", "::1", "1::", "fe80::1", "2001:db8::1", "2001:db8:0:1:1:1:1:1", "2001:0:0:1::1",
    "2001:db8::1:0:0:1", "1:0:0:2:0:0:0:3", "0:0:1:0:0:1:0:0", "::ffff:1.2.3.4",
    "::1.2.3.4", "::ffff:0:1.2.3.4", "64:ff9b::1.2.3.4", "ff02::1:ff00:1", "1:2:3:4:5:6:7:8",
    "abcd:ef01:2345:6789:abcd:ef01:2345:6789", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:7::",
]  # fmt: skip


def test_format_ip_prints_what_ipaddress_prints() -> None:
    rng = random.Random(12)
    samples = [ipaddress.ip_address(a).packed for a in EDGE_V6]
    samples += [ipaddress.ip_address(a).packed for a in ("0.0.0.0", "127.0.0.1", "10.1.2.3")]
    for _ in range(5000):
        # Mostly zero groups, so every compression case (runs, ties, single zeros) shows up.
        groups = [rng.choice((0, 0, 0, 1, 0xFFFF, rng.randrange(1 << 16))) for _ in range(8)]
        samples.append(b"".join(g.to_bytes(2, "big") for g in groups))
        samples.append(rng.randbytes(4))
    for raw in samples:
        assert format_ip(raw) == str(ipaddress.ip_address(raw)), raw.hex()


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
@pytest.mark.parametrize("sandbox", ["/var/run/netns/x", ""])
def test_loopback_wire_equals_the_result_it_stands_in_for(version: str, sandbox: str) -> None:
    for addrs in ([], ["127.0.0.1/8", "::1/128"], ["127.0.0.1/8", "10.9.0.1/32", "fd00::5/64"]):
        ifaces = [ipaddress.ip_interface(a) for a in addrs]
        want = Result(
            version,
            interfaces=[Interface("lo", "00:00:00:00:00:00", sandbox)],
            ips=[IPConfig(i, None, 0) for i in ifaces],
        ).to_wire(version)
        got = loopback.result_wire(
            version, sandbox, [(i.ip.packed, i.network.prefixlen) for i in ifaces]
        )
        assert got == want
        assert list(got) == list(want)  # the same key order, so the same bytes printed


def test_ffi_calls_libc_as_ctypes_does() -> None:
    libc = ffi.Library(None)
    assert libc.function("getpid")() == os.getpid()
    strlen = libc.function("strlen", ffi.c_int, (ffi.c_char_p,))
    assert strlen(b"pycni") == 5
    close = libc.function("close", ffi.c_int, (ffi.c_int,))
    assert close(-1) == -1 and ffi.get_errno() == errno.EBADF
    getenv = libc.function("getenv", ffi.c_char_p, (ffi.c_char_p,))
    assert getenv(b"PYCNI_NO_SUCH_VARIABLE") is None
    with pytest.raises(AttributeError):
        libc.function("pycni_no_such_symbol")
    with pytest.raises(OSError):
        ffi.Library("libpycni-no-such-library.so.0")


def test_the_setns_path_loads_no_ctypes() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from pycni import netns\n"
        "try:\n    netns.setns(-1)\nexcept OSError as exc:\n    print(exc.errno, exc.strerror)\n"
        "print('ctypes' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-IS", "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0].startswith(f"{errno.EBADF} setns: "), out
    assert out[1] == "False"


def _cmd(conf: dict[str, object]) -> skel.CmdArgs:
    cmd = skel.CmdArgs("DEL", "c1", "", "eth0", "", "/usr/lib/cni")
    cmd.conf = conf
    return cmd


CONF = {"cniVersion": "1.0.0", "name": "net1", "type": "portmap"}


@pytest.mark.parametrize(
    ("runtime_config", "nothing"),
    [
        ({"portMappings": []}, True),
        ({"portMappings": [{"hostPort": 80, "containerPort": 80}]}, False),
        ({}, False),  # the runtime did not say: not known to be empty
        ({"portMappings": None}, False),
        ({"portMappings": "junk"}, False),
        (None, False),
    ],
)
def test_portmap_del_knows_nothing_was_published_only_when_told(
    runtime_config: object, nothing: bool
) -> None:
    conf = dict(CONF) if runtime_config is None else dict(CONF, runtimeConfig=runtime_config)
    assert portmap.published_nothing(conf) is nothing


def test_portmap_del_looks_at_the_saved_ports_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path))
    cmd = _cmd(dict(CONF, runtimeConfig={"portMappings": []}))
    c = portmap.PortmapConf(cmd.conf, for_del=True)
    store = Store()
    assert not portmap.recorded_ports(c, cmd)  # nothing saved at all
    att = Attachment("net1", "c1", "eth0", [ipaddress.ip_interface("10.0.0.2/24")], "br0", "veth1")
    record = Record(("net1", "c1", "eth0"), "nftables")
    record.masquerade = att  # the bridge's part only
    store.save(record)
    assert not portmap.recorded_ports(c, cmd)
    record.ports = att
    store.save(record)
    assert portmap.recorded_ports(c, cmd)
    with open(store.record_path(record.key), "w") as fh:
        fh.write("{not json")
    assert portmap.recorded_ports(c, cmd)  # unreadable: the full DEL decides
