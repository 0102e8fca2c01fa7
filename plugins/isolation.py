"""isolation: keep bridge networks apart, as Docker isolates its networks from each other.

Chained after `bridge`; the bridge is prevResult.interfaces[0]. ADD hands the network's
intent to the firewall (`Firewall.ensure_isolation`: one nftables transaction in `table
inet pycni_isolation`, drawn in pycni/firewall/isolation.py); the keys:

    internal        no routed traffic in or out of the network (docker network create --internal)
    icc             false: containers of the network cannot reach each other, not even
                    routed through the gateway (docker's enable_icc)
    directRouting4  true: routed traffic from elsewhere reaches the containers' IPv4
    directRouting6  addresses (IPv6) without a published port (Docker's gateway_mode=routed)

DEL succeeds without doing anything: the rules belong to the network, not to one
attachment. GC (and `netctl network rm`) removes the rules of bridges that no longer
exist. CHECK verifies this bridge's element and chain.
"""

from __future__ import annotations

from pycni import errors, skel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.firewall.base import Firewall, Isolation
    from pycni.result import Result

WHERE = "isolation"


class IsolationConf:
    __slots__ = ("direct_routing", "icc", "internal", "name")

    def __init__(self, d: dict[str, Any]) -> None:
        from pycni import conf

        #: network name (validated by skel)
        self.name: str = d["name"]
        #: no routed traffic in or out of the network at all (docker network create --internal)
        self.internal = conf.get_bool(d, "internal", False, WHERE)
        #: containers of the network may talk to each other (false: not even routed
        #: through the gateway; docker's com.docker.network.bridge.enable_icc)
        self.icc = conf.get_bool(d, "icc", True, WHERE)
        #: the families whose containers may be reached by routed traffic they did
        #: not publish or ask for (Docker's gateway_mode_ipvN=routed)
        self.direct_routing = frozenset(
            family for family in (4, 6) if conf.get_bool(d, f"directRouting{family}", False, WHERE)
        )


def firewall() -> Firewall:
    from pycni.firewall import get_backend

    return get_backend(None)  # isolation is nftables on every backend: nothing is probed


def network(c: IsolationConf, cmd: skel.CmdArgs) -> tuple[Result, Isolation]:
    """prevResult, and the network's isolation: its bridge is prevResult.interfaces[0]."""
    from pycni.firewall.base import Isolation
    from pycni.netlink import Netlink
    from pycni.result import parse_result

    if cmd.conf.get("prevResult") is None:
        raise errors.InvalidConfig(
            "isolation: missing prevResult",
            "isolation must be chained after the bridge plugin in a conflist",
        )
    prev = parse_result(cmd.conf["prevResult"])
    if not prev.interfaces or prev.interfaces[0].sandbox:
        raise errors.InvalidConfig(
            "isolation: prevResult.interfaces[0] is not a host bridge",
            "chain isolation after the bridge plugin",
        )
    name = prev.interfaces[0].name
    with Netlink() as nl:
        link = nl.link(name)
    if link is None:
        raise errors.InvalidConfig(
            f"isolation: bridge {name} (prevResult.interfaces[0]) not found",
            "chain isolation after the bridge plugin",
        )
    if link.kind != "bridge":
        raise errors.InvalidConfig(
            f"isolation: {name} (prevResult.interfaces[0]) is a {link.kind or 'device'}, not a bridge",
            "chain isolation after the bridge plugin",
        )
    return prev, Isolation(c.name, name, c.internal, c.icc, c.direct_routing, int(link.index))


def cmd_add(cmd: skel.CmdArgs) -> Result:
    prev, net = network(IsolationConf(cmd.conf), cmd)
    firewall().ensure_isolation(net)
    return prev


def cmd_del(cmd: skel.CmdArgs) -> None:
    # Network-level rules outlive every single attachment; GC removes them.
    return None


def cmd_check(cmd: skel.CmdArgs) -> None:
    _prev, net = network(IsolationConf(cmd.conf), cmd)
    problems = firewall().check_isolation(net)
    if problems:
        raise errors.CniError("isolation CHECK failed: " + "; ".join(problems))


def cmd_gc(cmd: skel.CmdArgs) -> None:
    IsolationConf(cmd.conf)
    firewall().gc_isolation()


def cmd_status(cmd: skel.CmdArgs) -> None:
    from pycni.firewall import spawn

    IsolationConf(cmd.conf)
    if spawn.which("nft") is None:
        raise errors.PluginNotAvailable(
            "isolation: the nft program was not found", "install the nftables package"
        )


VERBS = skel.Verbs(
    about="pycni isolation plugin",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
    status=cmd_status,
)


def main() -> None:
    skel.main(VERBS)
