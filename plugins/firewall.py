"""firewall: let a container's traffic through a host whose forward chain drops
(drop-in for the reference `firewall` meta plugin).

A chained plugin: prevResult in, the same prevResult out. Keys as the reference:
`backend` ("iptables", "firewalld", and "nftables", our default when nftables works;
the reference defaults to firewalld when it runs, so do we), `iptablesAdminChainName`
(default CNI-ADMIN), `ingressPolicy` (open / same-bridge / isolated), `firewalldZone`
(default trusted). The work is pycni.firewall.forward's: see there (and
docs/firewall.md) where each backend puts its accepts.
"""

from __future__ import annotations

import ipaddress

from pycni import conf, errors, skel
from pycni.result import Result, parse_result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.firewall.forward import Forward

    IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

WHERE = "firewall"
BACKENDS = ("nftables", "iptables", "firewalld")


class FirewallConf:
    __slots__ = ("admin", "backend", "ingress_policy", "name", "zone")

    def __init__(self, d: dict[str, Any]) -> None:
        from pycni.firewall.forward import ADMIN_DEFAULT, POLICIES, check_chain_name

        #: network name
        self.name: str = d["name"]
        #: "nftables" | "iptables" | "firewalld" | "" (firewalld when running, else
        #: nftables when usable, else iptables)
        self.backend = conf.get_str(d, "backend", "", WHERE)
        if self.backend not in ("", *BACKENDS):
            raise errors.InvalidConfig(
                f"{WHERE}: unknown backend {self.backend!r}", f"valid values: {', '.join(BACKENDS)}"
            )
        #: the chain administrators fill; jumped to before any accept of ours
        self.admin = check_chain_name(
            conf.get_str(d, "iptablesAdminChainName", "", WHERE) or ADMIN_DEFAULT, WHERE
        )
        #: "open" | "same-bridge" | "isolated"
        self.ingress_policy = conf.get_str(d, "ingressPolicy", "", WHERE) or "open"
        if self.ingress_policy not in POLICIES:
            raise errors.InvalidConfig(
                f"unknown ingress policy: {self.ingress_policy!r}",
                f"valid values: {', '.join(POLICIES)}",
            )
        #: firewalld zone for the container's addresses
        self.zone = conf.get_str(d, "firewalldZone", "", WHERE) or "trusted"


def _prev(cmd: skel.CmdArgs, required: bool) -> Result | None:
    if cmd.conf.get("prevResult") is None:
        if required:
            raise errors.InvalidConfig(
                "missing prevResult from earlier plugin",
                "chain firewall after a plugin that assigns addresses (e.g. bridge)",
            )
        return None
    return parse_result(cmd.conf["prevResult"])


def _ips(prev: Result | None) -> list[IPInterface]:
    # The reference accepts every address of the result, whichever interface.
    return [ip.address for ip in prev.ips] if prev is not None else []


def _backend(c: FirewallConf) -> str:
    from pycni.firewall import forward

    if c.backend == "firewalld" or (not c.backend and forward.firewalld_running()):
        return "firewalld"
    # "" is nftables without a probe of its own: its `list chains` is the probe, and
    # where nftables cannot answer Forward falls back to the reference's iptables rules
    return c.backend or "auto"


def _forward(c: FirewallConf, backend: str) -> Forward:
    from pycni.firewall.forward import Forward

    return Forward(backend, c.admin)


def _key(c: FirewallConf, cmd: skel.CmdArgs) -> tuple[str, str, str]:
    return (c.name, cmd.container_id, cmd.ifname)


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = FirewallConf(cmd.conf)
    prev = _prev(cmd, True)
    assert prev is not None
    ips = _ips(prev)
    backend = _backend(c)
    if backend == "firewalld":
        from pycni.firewall.forward import Firewalld

        Firewalld(c.zone).add(ips)
    else:
        _forward(c, backend).add(_key(c, cmd), ips)
    if c.ingress_policy != "open":
        from pycni.firewall.forward import add_ingress_policy

        if not prev.interfaces:
            raise errors.InvalidConfig(
                f"interface needs to be set for ingress policy {c.ingress_policy!r}",
                'make sure to chain "firewall" plugin with "bridge"',
            )
        add_ingress_policy(
            c.ingress_policy, prev.interfaces[0].name, sorted({ip.version for ip in ips})
        )
    return prev


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = FirewallConf(cmd.conf)
    try:
        prev = _prev(cmd, False)
    except errors.CniError:
        prev = None  # an unparseable prevResult must not wedge a DEL
    ips = _ips(prev)
    if c.backend == "firewalld":
        from pycni.firewall.forward import Firewalld, firewalld_running

        if firewalld_running():
            Firewalld(c.zone).delete(ips)
        return
    # The record names where ADD put its rules, whatever backend is chosen today;
    # without one, the reference's iptables rules of prevResult's addresses go.
    _forward(c, c.backend or "auto").delete(_key(c, cmd), ips)


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = FirewallConf(cmd.conf)
    prev = _prev(cmd, True)
    ips = _ips(prev)
    backend = _backend(c)
    if backend == "firewalld":
        from pycni.firewall.forward import Firewalld

        missing = Firewalld(c.zone).check(ips)
    else:
        missing = _forward(c, backend).check(_key(c, cmd), ips)
    if missing:
        raise errors.CniError(f"{WHERE} CHECK failed: " + "; ".join(missing))


def cmd_gc(cmd: skel.CmdArgs) -> None:
    c = FirewallConf(cmd.conf)
    valid = skel.valid_attachments(cmd.conf)
    if valid is not None:
        _forward(c, c.backend or "auto").gc(c.name, valid)


VERBS = skel.Verbs(
    about="pycni firewall plugin", add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc
)


def main() -> None:
    skel.main(VERBS)
