"""portmap: publish container ports on the host (drop-in for the reference `portmap`).

A chained plugin: it needs the prevResult of the interface plugin, finds the
container's first IPv4 and IPv6 address on CNI_IFNAME, and hands the mappings to the
firewall backend as data (pycni.firewall: one nftables table of our own, maps keyed by
protocol/address/port, one transaction per call). DNAT applies only to packets for a
local address of the host (or exactly hostIP); see pycni/firewall for the security
rules. DEL is keyed by attachment, so it needs neither prevResult nor the mappings.
"""

from __future__ import annotations

from pycni import conf, errors, skel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.firewall.base import Attachment, Firewall, PortMapping
    from pycni.firewall.conditions import Condition
    from pycni.result import Result

WHERE = "portmap"


class PortmapConf:
    __slots__ = ("backend", "conditions", "mappings", "masq_all", "name", "snat")

    def __init__(self, d: dict[str, Any], for_del: bool = False) -> None:
        #: network name
        self.name: str = d["name"]
        #: masquerade hairpin and localhost traffic so replies come back through us
        self.snat = conf.get_bool(d, "snat", True, WHERE)
        #: masquerade every published-port connection (the container sees the host)
        self.masq_all = conf.get_bool(d, "masqAll", False, WHERE)
        #: "nftables" | "iptables" | "" (nftables when usable)
        self.backend = conf.get_str(d, "backend", "", WHERE)
        #: conditionsV4/V6, parsed into data (never pasted into rules)
        self.conditions: dict[int, list[Condition]] = {}
        for family in (4, 6):
            key = f"conditionsV{family}"
            items = conf.get_list(d, key, WHERE)
            if items:  # only then is the parser loaded
                from pycni.firewall.conditions import parse

                self.conditions[family] = parse(items, family, f"{WHERE}: {key}")
        if "externalSetMarkChain" in d:
            raise errors.UnsupportedField(
                f"{WHERE}: 'externalSetMarkChain' is not supported", "pycni marks nothing"
            )
        #: the ports to publish
        self.mappings: list[PortMapping] = []
        if for_del:
            # DEL is keyed by attachment: the mappings are not needed, and a malformed
            # runtimeConfig must not keep a DEL from releasing what the ADD published.
            return
        rc = conf.get_dict(d, "runtimeConfig", WHERE)
        raw = conf.get_list(rc, "portMappings", f"{WHERE}: runtimeConfig")
        if not raw:
            return  # most pods: nothing to publish, and the firewall is never imported
        from pycni.firewall.base import PortMapping

        for n, item in enumerate(raw):
            where = f"{WHERE}: runtimeConfig.portMappings[{n}]"
            if not isinstance(item, dict):
                raise errors.InvalidConfig(f"{where} must be an object")
            mapping = PortMapping(
                conf.get_int(item, "hostPort", 0, where, 0, 65535),
                conf.get_int(item, "containerPort", 0, where, 0, 65535),
                conf.get_str(item, "protocol", "tcp", where),
                conf.get_str(item, "hostIP", "", where),
            )
            self.mappings.append(mapping.checked(where))


def firewall(c: PortmapConf) -> Firewall:
    from pycni.firewall import get_backend

    return get_backend(c.backend or None)


def attachment(c: PortmapConf, cmd: skel.CmdArgs, prev: Result) -> Attachment:
    """The container's interface from prevResult: the first IPv4 and IPv6 address on
    the interface named CNI_IFNAME inside a sandbox (IPs without an index count too)."""
    from pycni.firewall.base import Attachment

    ours = {
        i for i, iface in enumerate(prev.interfaces) if iface.name == cmd.ifname and iface.sandbox
    }
    ips = [ip for ip in prev.ips if ip.interface is None or ip.interface in ours]
    picked = []
    for family in (4, 6):
        first = next((ip.address for ip in ips if ip.family == family), None)
        if first is not None:
            picked.append(first)
    bridge = next(
        (
            iface.name
            for iface in prev.interfaces
            if not iface.sandbox and not iface.name.startswith("veth")
        ),
        "",
    )
    host_veth = next(
        (
            iface.name
            for iface in prev.interfaces
            if not iface.sandbox and iface.name.startswith("veth")
        ),
        "",
    )
    return Attachment(c.name, cmd.container_id, cmd.ifname, picked, bridge, host_veth)


def _prev(cmd: skel.CmdArgs) -> Result:
    if cmd.conf.get("prevResult") is None:
        raise errors.InvalidConfig(
            "must be called as chained plugin",
            "portmap needs the interface plugin's result as prevResult",
        )
    from pycni.result import parse_result  # not on the nothing-to-publish path

    return parse_result(cmd.conf["prevResult"])


def cmd_add(cmd: skel.CmdArgs) -> Result | skel.PassThrough:
    c = PortmapConf(cmd.conf)
    if not c.mappings:
        # Nothing to publish (most pods): hand prevResult on as it came.
        if cmd.conf.get("prevResult") is not None:
            passed = skel.pass_through(cmd)
            if passed is not None:
                return passed
        return _prev(cmd)
    prev = _prev(cmd)
    att = attachment(c, cmd, prev)
    if not att.ips:
        raise errors.InvalidConfig(
            f"{WHERE}: no container address on {cmd.ifname} in prevResult",
            "chain portmap after a plugin that assigns addresses",
        )
    from pycni.firewall.base import PortConflict

    fw = firewall(c)
    try:
        fw.add_port_mappings(
            att, c.mappings, snat=c.snat, masq_all=c.masq_all, conditions=c.conditions
        )
    except PortConflict as exc:
        raise errors.InvalidConfig(
            str(exc), "choose another host port, or remove the container that holds it"
        ) from None
    return prev


def published_nothing(d: dict[str, Any]) -> bool:
    """True when the runtime says this attachment publishes no port: runtimeConfig
    carries portMappings, as an empty list (libcni sends DEL the runtimeConfig of the
    ADD). Anything else (no runtimeConfig, a malformed one) is not known to be empty."""
    rc = d.get("runtimeConfig")
    if not isinstance(rc, dict):
        return False
    raw = rc.get("portMappings", 0)
    return isinstance(raw, list) and not raw


def recorded_ports(c: PortmapConf, cmd: skel.CmdArgs) -> bool:
    """Whether the firewall's saved state has published ports for this attachment (a
    record that cannot be read counts as yes: the full DEL sorts it out)."""
    from pycni import fastjson
    from pycni.firewall.store import Store, read_file

    try:
        data = read_file(Store().record_path((c.name, cmd.container_id, cmd.ifname)))
        if data is None:
            return False
        # The record's "ports" part (plan.Record.to_dict), looked at without decoding
        # the record: its addresses would import ipaddress (~3 ms) for nothing.
        saved = fastjson.loads(data)
    except (errors.CniError, ValueError):
        return True
    return not isinstance(saved, dict) or saved.get("ports") is not None


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = PortmapConf(cmd.conf, for_del=True)
    if published_nothing(cmd.conf) and not recorded_ports(c, cmd):
        # The ADD of this attachment published nothing (portmap's ADD without mappings
        # never calls the firewall) and nothing is saved for it: nothing to remove, so
        # no firewall probe and no search of the kernel's entries for an owner tag (the
        # path for state lost after an ADD that did publish, whose DEL carries mappings).
        return
    # Keyed by attachment: no prevResult, netns or mappings needed, and "already
    # gone" is success.
    firewall(c).del_port_mappings(c.name, cmd.container_id, cmd.ifname)


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = PortmapConf(cmd.conf)
    prev = _prev(cmd)
    if not c.mappings:
        return
    fw = firewall(c)
    missing = fw.check_port_mappings(attachment(c, cmd, prev), c.mappings, c.conditions)
    if missing and (c.name, cmd.container_id, cmd.ifname) not in fw.attachments():
        raise errors.UnknownContainer(
            f"{WHERE}: unknown container {cmd.container_id}",
            f"no port mappings were ever added for {cmd.container_id}/{cmd.ifname} on {c.name}",
        )
    if missing:
        raise errors.CniError(f"{WHERE} CHECK failed: " + "; ".join(missing))


def cmd_gc(cmd: skel.CmdArgs) -> None:
    c = PortmapConf(cmd.conf)
    valid = skel.valid_attachments(cmd.conf)
    if valid is not None:
        firewall(c).gc(c.name, valid)


VERBS = skel.Verbs(
    about="pycni portmap plugin", add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc
)


def main() -> None:
    skel.main(VERBS)
