"""dummy: a dummy link, with addresses from IPAM, as the container's interface
(drop-in for the reference `dummy`).

The link goes nowhere: it carries addresses a workload can bind to (a service VIP, a
loopback-like address that shows in `ip addr`). IPAM is required. A kernel without
dummy support (ours) gets a clean refusal naming the module, and nothing is left
behind. DEL, CHECK, GC and STATUS: pycni/linkplugin.py.
"""

from __future__ import annotations

from pycni import conf, errors, ipam_exec, linkplugin, skel
from pycni.result import DNS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.netlink import Link, Netlink
    from pycni.result import Result

WHERE = "dummy"


class DummyConf:
    __slots__ = ("dns", "ipam_type")

    def __init__(self, d: dict[str, Any]) -> None:
        self.ipam_type = ipam_exec.ipam_type(d)
        if not self.ipam_type:
            raise errors.InvalidConfig(
                "dummy interface requires an IPAM configuration", 'add "ipam": {"type": ...}'
            )
        dns = conf.get_dict(d, "dns", WHERE)
        #: DNS for the result (overrides IPAM's when set)
        self.dns = DNS.from_wire(dns, f"{WHERE}: 'dns'") if dns else DNS()


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = DummyConf(cmd.conf)

    def create(fd: int, cont: Netlink) -> None:
        from pycni import netlink

        try:
            cont.add_sublink(cmd.ifname, "dummy")
        except netlink.NetlinkError as exc:
            raise linkplugin.kind_error(exc, "dummy", cmd.ifname) from None

    return linkplugin.add(cmd, "dummy", create, c.ipam_type, c.dns, l3_required=True)


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = DummyConf(cmd.conf)
    linkplugin.delete(cmd, ("dummy",), c.ipam_type)


def _up(cont: Netlink, link: Link) -> list[str]:
    return [] if link.up else [f"Interface {link.name} is down"]


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = DummyConf(cmd.conf)
    linkplugin.check(cmd, "dummy", c.ipam_type, _up)


def cmd_gc(cmd: skel.CmdArgs) -> None:
    linkplugin.gc(cmd, DummyConf(cmd.conf).ipam_type)


def cmd_status(cmd: skel.CmdArgs) -> None:
    linkplugin.status(cmd, DummyConf(cmd.conf).ipam_type, None, WHERE)


VERBS = skel.Verbs(
    about="pycni dummy plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    skel.main(VERBS)
