"""macspoofchk: a container may only send as itself (MAC, ARP and IP source).

One nftables table of our own in the bridge family, `table bridge pycni_spoof`:

    set guarded   { ifname }                  host veths of containers with macspoofchk
    set mac       { ifname . ether_addr }     each guarded port's own MAC
    set ip4       { ifname . ipv4_addr }      ... and its addresses
    set ip6       { ifname . ipv6_addr }
    chain prerouting  (filter, hook prerouting, priority -300: before anything else)
        iifname != @guarded  return
        iifname . ether saddr != @mac  drop                 MAC spoofing
        arp: iifname . arp saddr ether != @mac  drop        ARP with a forged sender MAC
        arp: iifname . arp saddr ip != @ip4  drop           ARP claiming another's IP
        ip:  iifname . ip saddr != @ip4  drop               IP spoofing
        ip6: saddr not link-local/unspecified and iifname . ip6 saddr != @ip6  drop
        icmpv6 router-advert / redirect  drop              a container is no router
        icmpv6 NS/NA longer than one option  drop           (a second link-layer option)
        icmpv6 NA: iifname . target != @nd_target  drop     claiming another's address
        icmpv6 NS/NA with a link-layer option:
            iifname . option address != @nd_lladdr  drop    pointing a neighbour elsewhere
    set nd_target  { typeof iifname . @th,64,128 }    each port's addresses as NA targets
                                                      (its IPv6 ones and its EUI-64 link-local)
    set nd_lladdr  { typeof iifname . @th,208,48 }    each port's MAC as ND option
  nft 1.0.6's JSON cannot declare sets over raw payload, so these two are declared with
  a constant text script, run when a batch finds them missing (then the batch again);
  their elements go through JSON like all.

Each ADD/DEL is one transaction of set elements: O(1) whatever the number of
containers, no per-container chains, no jumps. Elements are found again on DEL from a
small saved record (the host veth is gone by then) in the firewall store,
`.spoof/<network>/<containerID>-<ifname>.json`; records of older versions, in
`<state dir>/spoofcheck/<network>/<containerID>:<ifname>.json`, are still read, so a
container attached before an upgrade is released cleanly. JSON input only: no name
from a config is ever parsed as nft syntax.
"""

from __future__ import annotations

import ipaddress
import os

from pycni import errors, recordstore
from pycni.firewall.nft import DROP, RETURN, concat, match, meta, payload, rule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.firewall.base import Attachment
    from pycni.firewall.store import Records

TABLE = "pycni_spoof"
FAMILY = "bridge"
T = {"family": FAMILY, "table": TABLE}


def _t(kind: str, name: str, **extra: Any) -> dict[str, Any]:
    return {kind: {"family": FAMILY, "table": TABLE, "name": name, **extra}}


def _rule(*expr: object) -> dict[str, Any]:
    return rule(T, "prerouting", *expr)


def _pair(field: dict[str, Any]) -> dict[str, Any]:
    return concat(meta("iifname"), field)


# Offsets in an ICMPv6 neighbour solicitation/advertisement (RFC 4861 4.3/4.4), in bits
# from the ICMPv6 header: the target address after type, code, checksum and 4 bytes of
# flags; then the options. One link-layer address option (type 1 source, 2 target) of
# 8 bytes makes the message 32 bytes long; a nonce option (enhanced DAD) is as long.
ND_TARGET = {"payload": {"base": "th", "offset": 64, "len": 128}}
ND_OPT_TYPE = {"payload": {"base": "th", "offset": 192, "len": 8}}
ND_OPT_LLADDR = {"payload": {"base": "th", "offset": 208, "len": 48}}
ND_ONE_OPTION = 32

ND_SETS = (
    f"add table {FAMILY} {TABLE}\n"
    f"add set {FAMILY} {TABLE} nd_target {{ typeof iifname . @th,64,128 ; }}\n"
    f"add set {FAMILY} {TABLE} nd_lladdr {{ typeof iifname . @th,208,48 ; }}\n"
)


def _icmpv6(*types: str) -> dict[str, Any]:
    right: object = types[0] if len(types) == 1 else {"set": list(types)}
    return match(payload("icmpv6", "type"), right)


def skeleton() -> list[dict[str, Any]]:
    """The table, its sets and the base chain's rules (flushed and re-added, so the
    chain is exactly this whatever ran before; sets keep their elements)."""
    drop = DROP
    return [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": _t("set", "guarded", type="ifname")},
        {"add": _t("set", "mac", type=["ifname", "ether_addr"])},
        {"add": _t("set", "ip4", type=["ifname", "ipv4_addr"])},
        {"add": _t("set", "ip6", type=["ifname", "ipv6_addr"])},
        {
            "add": _t(
                "chain", "prerouting", type="filter", hook="prerouting", prio=-300, policy="accept"
            )
        },
        {"flush": _t("chain", "prerouting")},
        _rule(match(meta("iifname"), "@guarded", "!="), RETURN),
        _rule(match(_pair(payload("ether", "saddr")), "@mac", "!="), drop),
        _rule(
            match(payload("ether", "type"), "arp"),
            match(_pair(payload("arp", "saddr ether")), "@mac", "!="),
            drop,
        ),
        _rule(
            match(payload("ether", "type"), "arp"),
            match(_pair(payload("arp", "saddr ip")), "@ip4", "!="),
            drop,
        ),
        _rule(
            match(payload("ether", "type"), "ip"),
            match(_pair(payload("ip", "saddr")), "@ip4", "!="),
            drop,
        ),
        _rule(
            match(payload("ether", "type"), "ip6"),
            match(
                payload("ip6", "saddr"),
                {"set": [{"prefix": {"addr": "fe80::", "len": 10}}, "::"]},
                "!=",
            ),
            match(_pair(payload("ip6", "saddr")), "@ip6", "!="),
            drop,
        ),
        # Neighbour discovery: a port may only advertise itself. Without these an
        # advertisement from the attacker's own link-local address naming the victim's
        # global address passes the checks above and poisons the gateway's cache.
        _rule(_icmpv6("nd-router-advert", "nd-redirect"), drop),
        _rule(
            _icmpv6("nd-neighbor-solicit", "nd-neighbor-advert"),
            match(payload("ip6", "length"), ND_ONE_OPTION, ">"),
            drop,
        ),
        _rule(_icmpv6("nd-neighbor-advert"), match(_pair(ND_TARGET), "@nd_target", "!="), drop),
        _rule(
            _icmpv6("nd-neighbor-solicit", "nd-neighbor-advert"),
            match(payload("ip6", "length"), ND_ONE_OPTION),
            match(ND_OPT_TYPE, {"set": [1, 2]}),
            match(_pair(ND_OPT_LLADDR), "@nd_lladdr", "!="),
            drop,
        ),
    ]


def eui64_link_local(mac: str) -> str:
    """The link-local address the kernel gives an interface with this MAC (RFC 4291
    appendix A; addr_gen_mode eui64, the default)."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    iid = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80, 0, 0, 0, 0, 0, 0, *iid])))


def elements(host_veth: str, mac: str, ips: list[str]) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {
        "guarded": [host_veth],
        "mac": [{"concat": [host_veth, mac]}],
        "ip4": [],
        "ip6": [],
        "nd_lladdr": [{"concat": [host_veth, int(mac.replace(":", ""), 16)]}],
        "nd_target": [],
    }
    targets = [eui64_link_local(mac)]
    for ip in ips:
        addr = ip.split("/")[0]
        out["ip6" if ":" in addr else "ip4"].append({"concat": [host_veth, addr]})
        if ":" in addr:
            targets.append(addr)
    for addr in targets:
        # a raw 128-bit key: nft reads the hex literal as the integer it is
        packed = int(ipaddress.IPv6Address(addr))
        out["nd_target"].append({"concat": [host_veth, f"0x{packed:032x}"]})
    return out


def _run(batch: list[dict[str, Any]]) -> None:
    from pycni.firewall.nft import Nft, NftError

    try:
        nft = Nft()
        try:
            nft.run(batch)
        except NftError:
            # The ND sets are missing (first use on this node, or after a flush): only
            # nft's text syntax can declare them, so they come first, then the batch
            # again. A refused batch applied nothing (one transaction).
            nft.run_script(ND_SETS)
            nft.run(batch)
    except NftError as exc:
        raise errors.CniError("macspoofchk: nftables refused the rules", str(exc)) from None


# -- records ---------------------------------------------------------------------------------


def _records() -> Records:
    from pycni.firewall.store import Records

    return Records("spoof")


def _legacy_root() -> str:
    """Where versions before the firewall store kept the records."""
    from pycni.firewall.base import state_dir

    return os.path.join(state_dir(), "spoofcheck")


def _load(network: str, container_id: str, ifname: str) -> tuple[dict[str, Any] | None, str]:
    """(the saved record, its path), from the store or else the legacy location."""
    records = _records()
    path = records.path((network, container_id, ifname))
    record = records.read(path)
    if record is None:
        path = recordstore.legacy_path(_legacy_root(), (network, container_id, ifname))
        record = records.read(path)
    if record is not None and not (
        isinstance(record.get("hostVeth"), str) and isinstance(record.get("mac"), str)
    ):
        record = None
    return record, path


def _record_elements(record: dict[str, Any]) -> dict[str, list[object]]:
    ips = record.get("ips") or []
    return elements(record["hostVeth"], record["mac"], [str(ip) for ip in ips])


# -- verbs (the Firewall protocol's spoof-check verbs call these) ----------------------------


def add(att: Attachment, mac: str) -> None:
    """Guard the attachment's host veth; idempotent."""
    ips = [str(ip) for ip in att.ips]
    records = _records()
    # saved first: a crash after the rules still lets DEL find them
    records.write(records.path(att.key), {"hostVeth": att.host_veth, "mac": mac, "ips": ips})
    batch = skeleton()
    for name, elems in elements(att.host_veth, mac, ips).items():
        if elems:
            batch.append({"add": _t("element", name, elem=elems)})
    _run(batch)


def delete(network: str, container_id: str, ifname: str) -> None:
    """Unguard one port; "already gone" is success."""
    record, path = _load(network, container_id, ifname)
    if record is None:
        return
    elements_of = {name: elems for name, elems in _record_elements(record).items() if elems}
    if not _delete_only(elements_of):
        batch = skeleton()
        for name, elems in elements_of.items():
            # add-then-delete in one transaction: deleting succeeds whether or not the
            # element was still there (a flushed table, a second DEL).
            batch.append({"add": _t("element", name, elem=elems)})
            batch.append({"delete": _t("element", name, elem=elems)})
        _run(batch)
    try:
        recordstore.remove_file(path)
    except errors.IOFailure:
        pass  # the rules are gone; a record left behind must not fail DEL


def _delete_only(elements_of: dict[str, list[object]]) -> bool:
    """The usual DEL: the elements alone, in one transaction (the skeleton re-adds the
    table, its sets and every rule of the chain: several times the work). False when
    nftables refused it (an element, set or table missing: a flushed table, a second
    DEL), which changed nothing."""
    from pycni.firewall.nft import Nft, NftError

    if not elements_of:
        return True
    try:
        Nft().run(
            [{"delete": _t("element", name, elem=elems)} for name, elems in elements_of.items()]
        )
    except (NftError, errors.CniError):
        return False
    return True


def check(network: str, container_id: str, ifname: str) -> list[str]:
    from pycni.firewall.nft import Nft, NftError

    record, _path = _load(network, container_id, ifname)
    if record is None:
        return ["macspoofchk record missing"]
    try:
        listing = Nft().run([{"list": _t("set", "guarded")}])
    except NftError:
        return ["macspoofchk table missing"]
    for item in listing:
        s = item.get("set")
        if s and record["hostVeth"] in (s.get("elem") or []):
            return []
    return [f"macspoofchk rules for {record['hostVeth']} missing"]


def gc(network: str, valid: set[tuple[str, str]]) -> None:
    keys = _records().attachments(network) + recordstore.legacy_keys(_legacy_root(), network)
    for _net, cid, ifname in dict.fromkeys(keys):
        if (cid, ifname) not in valid:
            delete(network, cid, ifname)


def replay() -> int:
    """Re-apply every saved guard (after a flush); returns how many."""
    batch = skeleton()
    count = 0
    keys = _records().attachments() + recordstore.legacy_keys(_legacy_root())
    for key in dict.fromkeys(keys):
        record, _path = _load(*key)
        if record is None:
            continue
        for set_name, elems in _record_elements(record).items():
            if elems:
                batch.append({"add": _t("element", set_name, elem=elems)})
        count += 1
    if count:
        _run(batch)
    return count
