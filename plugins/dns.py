"""dns: names for containers of any CNI runtime, answered by netctl's embedded resolver.

A chained plugin (after bridge): ADD records the container's names and the addresses
of CNI_IFNAME from prevResult in `<runDir>/dns/cni/<containerID>-<ifname>.json`, asks
the resolver (runtime/dns.py) to reload, starting it when none runs, and answers
prevResult with 127.0.0.11 as the nameserver (podman writes it into resolv.conf). The
resolver then listens inside the container's namespace as it does for netctl's own
containers, so a podman container and a netctl container on one network resolve each
other. Names: CNI_ARGS K8S_POD_NAME (set by podman and the kubelet) and the runtimeConfig
capability `aliases` ({network: [names]}, podman's). DEL removes the record (nothing to
remove is success); GC removes records of attachments that no longer exist.

Config: {"type": "dns", "runDir": "/run/netctl", "internal": false,
         "capabilities": {"aliases": true}}   (netctl's conflists have it)
"""

from __future__ import annotations

import os

from pycni import conf, errors, skel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.recordstore import FlatRecords
    from pycni.result import Result

WHERE = "dns"
RESOLVER_IP = "127.0.0.11"


class DnsConf:
    __slots__ = ("internal", "name", "names", "run_dir")

    def __init__(self, d: dict[str, Any], cni_args: dict[str, str] | None = None) -> None:
        #: network name
        self.name: str = d["name"]
        #: netctl's run dir: the registrations and the resolver's control socket live there
        self.run_dir = conf.get_str(d, "runDir", "", WHERE) or os.environ.get(
            "NETCTL_RUN_DIR", "/run/netctl"
        )
        if not os.path.isabs(self.run_dir):
            raise errors.InvalidConfig(
                f"{WHERE}: runDir {self.run_dir!r} is not an absolute path",
                "give netctl's run directory, e.g. /run/netctl",
            )
        #: the network is --internal: no forwarding for a container only on such networks
        self.internal = conf.get_bool(d, "internal", False, WHERE)
        #: the container's names: K8S_POD_NAME, then runtimeConfig aliases for this network
        self.names: list[str] = [] if cni_args is None else conf.dns_names(d, cni_args, WHERE)


def registrations_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "dns", "cni")


def _records(c: DnsConf) -> FlatRecords:
    from pycni.recordstore import FlatRecords

    return FlatRecords(registrations_dir(c.run_dir))


def record_path(c: DnsConf, cmd: skel.CmdArgs) -> str:
    return _records(c).path(cmd.container_id, cmd.ifname)


def _prev(cmd: skel.CmdArgs) -> Result:
    if cmd.conf.get("prevResult") is None:
        raise errors.InvalidConfig(
            "must be called as chained plugin",
            "dns needs the interface plugin's result (its addresses) as prevResult",
        )
    from pycni.result import parse_result

    return parse_result(cmd.conf["prevResult"])


def _addresses(cmd: skel.CmdArgs, prev: Result) -> list[str]:
    ours = {
        i for i, iface in enumerate(prev.interfaces) if iface.name == cmd.ifname and iface.sandbox
    }
    return [str(ip.address.ip) for ip in prev.ips if ip.interface is None or ip.interface in ours]


def _notify(run_dir: str) -> None:
    """The resolver reloads (or starts); a failure costs names, never the attachment."""
    from pycni.runtime import dns as resolver
    from pycni.runtime.paths import Paths

    try:
        resolver.ensure(Paths({"NETCTL_RUN_DIR": run_dir}))
    except Exception as exc:  # the container still gets its network
        skel.log_exception(exc)


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = DnsConf(cmd.conf, cmd.cni_args)
    prev = _prev(cmd)
    ips = _addresses(cmd, prev)
    if not ips:
        raise errors.InvalidConfig(
            f"{WHERE}: no container address on {cmd.ifname} in prevResult",
            "chain dns after a plugin that assigns addresses",
        )
    upstreams = [s for s in prev.dns.nameservers if s != RESOLVER_IP]
    record = {
        "network": c.name,
        "netns": cmd.netns,
        "containerID": cmd.container_id,
        "ifname": cmd.ifname,
        "names": c.names,
        "ips": ips,
        "internal": c.internal,
        "dns": upstreams,
    }
    _records(c).save(cmd.container_id, cmd.ifname, record)
    _notify(c.run_dir)
    prev.dns.nameservers = [RESOLVER_IP, *upstreams]
    return prev


def cmd_del(cmd: skel.CmdArgs) -> None:
    c = DnsConf(cmd.conf)
    if not _records(c).delete(cmd.container_id, cmd.ifname):
        return  # nothing to delete is success
    _notify(c.run_dir)


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = DnsConf(cmd.conf, cmd.cni_args)
    if not os.path.exists(record_path(c, cmd)):
        raise errors.UnknownContainer(
            f"{WHERE}: unknown container {cmd.container_id}",
            f"no names were registered for {cmd.container_id}/{cmd.ifname} on {c.name}",
        )


def cmd_gc(cmd: skel.CmdArgs) -> None:
    c = DnsConf(cmd.conf)
    valid = skel.valid_attachments(cmd.conf)
    if valid is None:
        return
    from pycni.recordstore import remove_file

    records = _records(c)
    removed = False
    for cid, ifname in records.entries():
        path = records.path(cid, ifname)
        rec = records.read(path)
        # the record's own keys: a name written before the store encoded "-" in ifnames
        key = (str(rec.get("containerID", cid)), str(rec.get("ifname", ifname))) if rec else None
        if rec is None or rec.get("network") != c.name or key in valid:
            continue
        remove_file(path, prune_parent=False)
        removed = True
    if removed:
        _notify(c.run_dir)


VERBS = skel.Verbs(
    about="pycni dns plugin (netctl's embedded resolver)",
    add=cmd_add,
    delete=cmd_del,
    check=cmd_check,
    gc=cmd_gc,
)


def main() -> None:
    skel.main(VERBS)
