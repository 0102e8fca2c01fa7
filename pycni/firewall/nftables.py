"""The nftables backend: one table of our own, `table inet pycni`, keyed by data.

Layout (nothing outside this table is ever read or changed):

  sets and maps (hash: O(1) per insert and per packet lookup; every element carries
  its owner tag `network/containerID/ifname` as comment):
    masq4 / masq6            container IP                          masquerade it
    subnets4 / subnets6      subnet . subnet   (interval, shared)   "same subnet" pairs
    pm4_any_addr / _port     proto . hostPort                    -> container IP / port
    pm4_ip_addr / _port      hostIP . proto . hostPort           -> container IP / port
    pm6_*                    the same for IPv6
    hp4 / hp6                container IP . proto . containerPort   hairpin SNAT targets
    hp4_all / hp6_all        the same for masqAll attachments
  nft 1.0.6 cannot declare a map with concatenated data through JSON, so a DNAT
  target is two maps with one key (address, port) read by one `dnat` statement.

  base chains:
    prerouting   nat, hook prerouting, priority dstnat (-100)
    output       nat, hook output, priority -100 (host-originated traffic to the
                 host's own addresses and 127.0.0.1; ::1 cannot leave lo, so never)
        fib daddr type != local  return          only packets for this host (CVE-2025-67499)
        ip daddr 127.0.0.0/8  return             (prerouting: loopback is for the host only)
        jump conditional
        dnat ip to ip daddr . meta l4proto . th dport map @pm4_ip_addr : ...@pm4_ip_port
        meta nfproto ipv4  dnat ip to meta l4proto . th dport map @pm4_any_addr : ...
        (the same for ip6)
    postrouting  nat, hook postrouting, priority srcnat (100)
        ct status dnat  ip daddr . meta l4proto . th dport @hp4_all            masquerade
        ct status dnat  ip daddr . meta l4proto . th dport @hp4  ip saddr 127.0.0.0/8  masquerade
        ct status dnat  ip daddr . meta l4proto . th dport @hp4  ip saddr . ip daddr @subnets4  masquerade
        ip saddr @masq4  ip daddr != 224.0.0.0/4  ip saddr . ip daddr != @subnets4  masquerade
        (the same for ip6, ff00::/8, without the loopback rule)
    localnet-guard  filter, hook prerouting, priority raw (-300):
        iif != "lo"  ip daddr 127.0.0.0/8  drop      (CVE-2020-8558; see below)

  regular chain:
    conditional  one rule per published port of an attachment with portmap
                 conditionsV4/V6 (pycni.firewall.conditions), comment = owner tag:
        [ip saddr != 10.0.0.0/8] [iifname "eth*"] [ip daddr hostIP] meta l4proto tcp
            th dport 8080 dnat ip to 10.88.0.5:80
    Those ports are kept out of the pm* maps; they cost one rule each, which only
    attachments that ask for conditions pay. Removing one means listing this chain
    (for the rule handles); nothing else is listed on the ADD/DEL path.

  No verdict maps and no per-container chains: a `jump` stored in a map makes the
  kernel re-validate every element of every verdict map on each commit, which grows
  with the number of containers. The only shared, untagged elements are the subnet
  pairs; hairpin SNAT therefore applies only to DNATed connections from the target's
  own subnet or the host's loopback (all of them with masqAll), so a container sees
  the real client address of outside traffic.

Administrator precedence (CVE-2019-9946): this table only rewrites addresses; it
never accepts or drops forwarded traffic. Policy that must win over published ports
goes in the administrator's own table, on either of these hooks:
  - hook forward, any priority, e.g. `table inet filter { chain forward { type filter
    hook forward priority filter; ... } }`: DNATed packets cross it with the container
    as destination; match `ct original proto-dst <hostPort>` (or the container address
    and port) and `drop`. A drop in any base chain is final, whatever we did before.
  - hook prerouting at a priority below dstnat (-100), e.g. `priority raw` (-300) or
    -150: the packet still carries the published host address and port there.

localnet guard: publishing on 127.0.0.1 works by DNATing host-originated packets and
setting route_localnet=1 on the container's bridge (the kernel otherwise refuses
loopback addresses on other devices). route_localnet also lets a neighbour send
packets to 127.0.0.1 through that device, so the table always carries the guard,
which drops 127.0.0.0/8 arriving on anything but lo before conntrack sees it.

Every operation is one JSON batch applied as one transaction, through libnftables
(ctypes, in-process) or, without the library, `nft -j -f -` started with posix_spawn.
The JSON holds only constants, integers, addresses printed by `ipaddress` and owner
tags percent-encoded to [A-Za-z0-9_.%/-], so no user string is ever parsed as nft
syntax. An operation touches only its own elements, so its cost does not depend on
how many other containers exist; the table, sets and base chains are (re)created only
when that batch fails with ENOENT (first use, or after `nft flush ruleset`).
"""

from __future__ import annotations

import ipaddress

from pycni import errors
from pycni.firewall.backend import MASQ, PORTS, Backend, KernelConflict
from pycni.firewall.nft import (
    DPORT,
    L4PROTO,
    MASQUERADE,
    Nft,
    NftError,
    concat,
    match,
    netns_key,
    prefix,
)
from pycni.firewall.nft import rule_counts as nft_rule_counts
from pycni.firewall.plan import LOOPBACK4, MULTICAST, PROTO_NUMBERS, Binding, Record, owner_tag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    Cmd = dict[str, Any]
    Elem = tuple[str, Any, Any]  # (set or map, key, value or None)
    Network = ipaddress.IPv4Network | ipaddress.IPv6Network

    from pycni.firewall.conditions import Condition

    # a conditional rule: (host port, DNAT address, DNAT port, conditions)
    Summary = tuple[object, object, object, frozenset[tuple[str, str, str]]]

TABLE = "pycni"
T = {"family": "inet", "table": TABLE}
# A table name nobody uses, read to learn whether nf_tables answers (available()).
PROBE_TABLE = "pycni-availability-probe"
# (netns st_dev, st_ino, transport) where nf_tables answered the probe in this process
_ANSWERED: set[tuple[int, int, str]] = set()

# -- JSON expressions (pure; the shared helpers are in nft.py) -------------------------------

IPFAM = {4: "ip", 6: "ip6"}
ADDR = {4: "ipv4_addr", 6: "ipv6_addr"}
_match, _prefix, _concat = match, prefix, concat


def _payload(family: int, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": IPFAM[family], "field": field}}


def _rule(chain: str, *expr: object) -> Cmd:
    return {"add": {"rule": {**T, "chain": chain, "expr": list(expr)}}}


#: name -> (key type, data type or None for a set, flags)
SETS: dict[str, tuple[object, str | None, list[str]]] = {}
for _f in (4, 6):
    _a = ADDR[_f]
    SETS[f"masq{_f}"] = (_a, None, [])
    SETS[f"subnets{_f}"] = ([_a, _a], None, ["interval"])
    SETS[f"pm{_f}_any_addr"] = (["inet_proto", "inet_service"], _a, [])
    SETS[f"pm{_f}_any_port"] = (["inet_proto", "inet_service"], "inet_service", [])
    SETS[f"pm{_f}_ip_addr"] = ([_a, "inet_proto", "inet_service"], _a, [])
    SETS[f"pm{_f}_ip_port"] = ([_a, "inet_proto", "inet_service"], "inet_service", [])
    SETS[f"hp{_f}"] = ([_a, "inet_proto", "inet_service"], None, [])
    SETS[f"hp{_f}_all"] = ([_a, "inet_proto", "inet_service"], None, [])

MASQ_SETS = ("masq4", "masq6")
PORT_SETS = tuple(n for n in SETS if n.startswith(("pm", "hp")))
BASE_CHAINS = {
    "prerouting": ("nat", "prerouting", -100),
    "output": ("nat", "output", -100),
    "postrouting": ("nat", "postrouting", 100),
    "localnet-guard": ("filter", "prerouting", -300),
}
COND_CHAIN = "conditional"


def _dnat_rules(chain: str) -> list[Cmd]:
    fib_local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local", "!=")
    rules = [_rule(chain, fib_local, {"return": None})]
    if chain == "prerouting":
        # 127.0.0.1-published ports are for the host itself (OUTPUT); arriving from
        # a neighbour they are never DNATed, even with the guard gone (moby#45610).
        rules.append(
            _rule(chain, _match(_payload(4, "daddr"), _prefix(LOOPBACK4)), {"return": None})
        )
    if chain == "output":
        # ::1 never leaves lo (IPv6 has no route_localnet): leave it to local listeners.
        rules.append(_rule(chain, _match(_payload(6, "daddr"), "::1"), {"return": None}))
    rules.append(_rule(chain, {"jump": {"target": COND_CHAIN}}))
    for family in (4, 6):
        exact = _concat(_payload(family, "daddr"), L4PROTO, DPORT)
        anyaddr = _concat(L4PROTO, DPORT)
        for kind, key in (("ip", exact), ("any", anyaddr)):
            name = f"pm{family}_{kind}"
            dnat = {
                "dnat": {
                    "family": IPFAM[family],
                    "addr": {"map": {"key": key, "data": f"@{name}_addr"}},
                    "port": {"map": {"key": key, "data": f"@{name}_port"}},
                }
            }
            rules.append(_rule(chain, _match({"meta": {"key": "nfproto"}}, f"ipv{family}"), dnat))
    return rules


def _postrouting_rules() -> list[Cmd]:
    dnated = _match({"ct": {"key": "status"}}, "dnat", "in")
    rules = []
    for family in (4, 6):
        target = _concat(_payload(family, "daddr"), L4PROTO, DPORT)
        pair = _concat(_payload(family, "saddr"), _payload(family, "daddr"))
        rules.append(_rule("postrouting", dnated, _match(target, f"@hp{family}_all"), MASQUERADE))
        if family == 4:
            loopback = _match(_payload(4, "saddr"), _prefix(LOOPBACK4))
            rules.append(_rule("postrouting", dnated, _match(target, "@hp4"), loopback, MASQUERADE))
        rules.append(
            _rule(
                "postrouting",
                dnated,
                _match(target, f"@hp{family}"),
                _match(pair, f"@subnets{family}"),
                MASQUERADE,
            )
        )
    for family in (4, 6):
        pair = _concat(_payload(family, "saddr"), _payload(family, "daddr"))
        rules.append(
            _rule(
                "postrouting",
                _match(_payload(family, "saddr"), f"@masq{family}"),
                _match(_payload(family, "daddr"), _prefix(MULTICAST[family]), "!="),
                _match(pair, f"@subnets{family}", "!="),
                MASQUERADE,
            )
        )
    return rules


def _guard_rules() -> list[Cmd]:
    return [
        _rule(
            "localnet-guard",
            _match({"meta": {"key": "iif"}}, "lo", "!="),
            _match(_payload(4, "daddr"), _prefix(LOOPBACK4)),
            {"drop": None},
        )
    ]


def skeleton() -> list[Cmd]:
    """The table, its sets and maps, and the base chains with their rules. Idempotent:
    `add` is a no-op for what exists, and each base chain is flushed and refilled in
    the same transaction, so there is never a window without its rules."""
    cmds: list[Cmd] = [{"add": {"table": {"family": "inet", "name": TABLE}}}]
    for name, (key_type, data_type, flags) in SETS.items():
        obj: dict[str, Any] = {**T, "name": name, "type": key_type}
        if flags:
            obj["flags"] = flags
        if data_type is None:
            cmds.append({"add": {"set": obj}})
        else:
            cmds.append({"add": {"map": {**obj, "map": data_type}}})
    # Regular: never flushed here, it holds the rules of attachments.
    cmds.append({"add": {"chain": {**T, "name": COND_CHAIN}}})
    for name, (kind, hook, prio) in BASE_CHAINS.items():
        chain = {**T, "name": name, "type": kind, "hook": hook, "prio": prio}
        cmds.append({"add": {"chain": {**chain, "policy": "accept"}}})
        cmds.append({"flush": {"chain": {**T, "name": name}}})
    return cmds + base_rules()


def base_rules() -> list[Cmd]:
    """The rules of the base chains, as skeleton() adds them."""
    return _dnat_rules("prerouting") + _dnat_rules("output") + _postrouting_rules() + _guard_rules()


_rule_counts: dict[str, int] = {}


def rule_counts() -> dict[str, int]:
    """Rules per base chain: what CHECK expects to list, counted from the builders
    above (on first use: only CHECK needs them)."""
    if not _rule_counts:
        counted = nft_rule_counts(base_rules())
        _rule_counts.update({chain: counted.get(chain, 0) for chain in BASE_CHAINS})
    return _rule_counts


def __getattr__(name: str) -> object:
    if name == "RULE_COUNTS":  # the counts under their constant's name
        return rule_counts()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- elements of a record (pure) ---------------------------------------------------------------


def elements(record: Record | None, parts: set[str]) -> list[Elem]:
    """(set, key, value) of every tagged element a record's parts need."""
    if record is None:
        return []
    out: list[Elem] = []
    if MASQ in parts:
        for ip in record.masq_ips():
            out.append((f"masq{ip.version}", str(ip.ip), None))
    if PORTS in parts and record.ports is not None:
        hairpin: list[Elem] = []
        for b in record.bindings():
            proto = PROTO_NUMBERS[b.protocol]
            # With conditions, a rule in the conditional chain instead (cond_rules).
            if not record.conditions_of(b.family):
                if b.host_ip:
                    key, kind = _concat(b.host_ip, proto, b.host_port), "ip"
                else:
                    key, kind = _concat(proto, b.host_port), "any"
                out.append((f"pm{b.family}_{kind}_addr", key, str(b.container_ip)))
                out.append((f"pm{b.family}_{kind}_port", key, b.container_port))
            if record.snat:
                name = f"hp{b.family}_all" if record.masq_all else f"hp{b.family}"
                elem = (name, _concat(str(b.container_ip), proto, b.container_port), None)
                if elem not in hairpin:
                    hairpin.append(elem)
        out += hairpin
    return out


def subnets(record: Record | None, parts: set[str]) -> list[Network]:
    """The subnets whose "same subnet" pair must be present for the record's rules."""
    if record is None:
        return []
    nets: list[Network] = []
    if MASQ in parts:
        nets += [ip.network for ip in record.masq_ips()]
    if PORTS in parts and record.snat and not record.masq_all:
        nets += [b.subnet for b in record.bindings()]
    return list(dict.fromkeys(nets))


def _condition(c: Condition, family: int) -> Cmd:
    op = "!=" if c.negate else "=="
    if c.kind == "iifname":  # conditions.IIFNAME
        # nft reads a trailing * in a string as "any name starting with"; the stem
        # is from a closed alphabet (no *, quotes or backslashes).
        return _match({"meta": {"key": "iifname"}}, c.value, op)
    return _match(_payload(family, "saddr"), _prefix(ipaddress.ip_network(c.value)), op)


def cond_rules(record: Record | None, parts: set[str]) -> list[Cmd]:
    """The conditional chain's rules for a record: one per binding of a family that
    has conditions, carrying the owner tag as comment."""
    if record is None or PORTS not in parts or not record.conditions:
        return []
    tag = owner_tag(record.key)
    out: list[Cmd] = []
    for b in record.bindings():
        conds = record.conditions_of(b.family)
        if not conds:
            continue
        expr: list[object] = [_match({"meta": {"key": "nfproto"}}, f"ipv{b.family}")]
        expr += [_condition(c, b.family) for c in conds]
        if b.host_ip:
            expr.append(_match(_payload(b.family, "daddr"), b.host_ip))
        expr.append(_match(L4PROTO, PROTO_NUMBERS[b.protocol]))
        expr.append(_match(DPORT, b.host_port))
        dnat = {"family": IPFAM[b.family], "addr": str(b.container_ip), "port": b.container_port}
        expr.append({"dnat": dnat})
        rule = {**T, "chain": COND_CHAIN, "expr": expr, "comment": tag}
        out.append({"add": {"rule": rule}})
    return out


def delete_rules(handles: list[int]) -> list[Cmd]:
    return [{"delete": {"rule": {**T, "chain": COND_CHAIN, "handle": h}}} for h in handles]


def _set_elem(key: object, value: object, tag: str) -> object:
    elem = {"elem": {"val": key, "comment": tag}}
    return elem if value is None else [elem, value]


def _grouped(elems: list[Elem]) -> dict[str, list[Elem]]:
    groups: dict[str, list[Elem]] = {}
    for e in elems:
        groups.setdefault(e[0], []).append(e)
    return groups


def _element_cmd(verb: str, name: str, items: list[Elem], tag: str) -> Cmd:
    elems = [_set_elem(key, value, tag) for _, key, value in items]
    return {verb: {"element": {**T, "name": name, "elem": elems}}}


def add_elements(elems: list[Elem], tag: str) -> list[Cmd]:
    """Insert; port-map elements with `create`, which fails if the key exists."""
    cmds = []
    for name, items in _grouped(elems).items():
        verb = "create" if name.startswith("pm") else "add"
        cmds.append(_element_cmd(verb, name, items, tag))
    return cmds


def remove_elements(elems: list[Elem], tag: str) -> list[Cmd]:
    """Delete, also when already gone: nft 1.0.6 has no `destroy`, so each element is
    first added (a no-op when present with the same data) and then deleted, within
    the same transaction."""
    cmds = []
    for name, items in _grouped(elems).items():
        cmds.append(_element_cmd("add", name, items, tag))
        keys = [key for _, key, _ in items]
        cmds.append({"delete": {"element": {**T, "name": name, "elem": keys}}})
    return cmds


def add_subnets(nets: list[Network]) -> list[Cmd]:
    cmds = []
    for family in (4, 6):
        pairs = [_concat(_prefix(n), _prefix(n)) for n in nets if n.version == family]
        if pairs:
            cmds.append({"add": {"element": {**T, "name": f"subnets{family}", "elem": pairs}}})
    return cmds


def transition(
    old: Record | None,
    new: Record | None,
    parts: set[str],
    nets: list[Network] | None = None,
    handles: list[int] | None = None,
) -> list[Cmd]:
    """The batch for one operation on a table that is in place: old's elements of
    `parts` out, new's in, plus the subnet pairs new needs (`nets` overrides them).
    Elements only, so the cost does not depend on how many others exist; plus, for
    conditions, old's conditional rules out (by `handles`) and new's in."""
    cmds: list[Cmd] = delete_rules(handles or [])
    gone = elements(old, parts)
    if gone:
        assert old is not None
        cmds += remove_elements(gone, owner_tag(old.key))
    cmds += add_subnets(subnets(new, parts) if nets is None else nets)
    wanted = elements(new, parts)
    if wanted:
        assert new is not None
        cmds += add_elements(wanted, owner_tag(new.key))
    return cmds + cond_rules(new, parts)


def repair(
    old: Record | None,
    new: Record | None,
    parts: set[str],
    nets: list[Network] | None = None,
    handles: list[int] | None = None,
) -> list[Cmd]:
    """The same change preceded by the whole skeleton: for the first use and after
    someone flushed or damaged the table. Every batch that can create the table is
    one of these, so an existing table always has its base chains."""
    return skeleton() + transition(old, new, parts, nets, handles)


def rebuild(records: list[Record]) -> list[Cmd]:
    """Replace the whole table by what the records describe (replay)."""
    table = {"family": "inet", "name": TABLE}
    cmds: list[Cmd] = [{"add": {"table": table}}, {"delete": {"table": table}}]
    cmds += skeleton()
    nets: list[Network] = []
    for r in records:
        nets += subnets(r, {MASQ, PORTS})
    cmds += add_subnets(uncovered(list(dict.fromkeys(nets)), []))
    for record in records:
        tag = owner_tag(record.key)
        for name, items in _grouped(elements(record, {MASQ, PORTS})).items():
            cmds.append(_element_cmd("add", name, items, tag))
        cmds += cond_rules(record, {PORTS})
    return cmds


def uncovered(nets: list[Network], present: list[Network]) -> list[Network]:
    """The subnets not already inside a present (or earlier wider) one. The kernel
    refuses a pair nested in an existing pair (EEXIST), and it would add nothing."""
    out: list[Network] = []
    for net in sorted(nets, key=lambda n: (n.version, n.prefixlen)):
        have = [p for p in present + out if p.version == net.version]
        if not any(net.subnet_of(p) for p in have):  # type: ignore[arg-type]
            out.append(net)
    return out


# -- reading the table back --------------------------------------------------------------------


def _atom(x: object) -> object:
    if isinstance(x, str):
        if x in PROTO_NUMBERS:
            return PROTO_NUMBERS[x]
        try:
            return str(ipaddress.ip_address(x))
        except ValueError:
            return x
    if isinstance(x, dict) and "prefix" in x:
        p = x["prefix"]
        return str(ipaddress.ip_network(f"{p['addr']}/{p['len']}"))
    return x


def norm(x: object) -> object:
    """A hashable, canonical form of an element key or value from JSON."""
    if isinstance(x, dict) and "concat" in x:
        return tuple(_atom(i) for i in x["concat"])
    return _atom(x)


class Table:
    """Our table as listed: {set: {key: (value, comment)}}, and rules per chain."""

    def __init__(self, listing: list[dict[str, Any]]) -> None:
        self.sets: dict[str, dict[object, tuple[object, str]]] = {}
        self.rules: dict[str, int] = {}
        #: the conditional chain: [(handle, comment, summary)]
        self.cond: list[tuple[int, str, Summary]] = []
        for item in listing:
            obj = item.get("set") or item.get("map")
            if obj is not None:
                entries = self.sets.setdefault(obj["name"], {})
                for elem in obj.get("elem") or []:
                    key, value = (elem[0], elem[1]) if isinstance(elem, list) else (elem, None)
                    comment = ""
                    if isinstance(key, dict) and "elem" in key:
                        comment = key["elem"].get("comment", "")
                        key = key["elem"]["val"]
                    entries[norm(key)] = (norm(value), comment)
            elif "chain" in item:
                self.rules.setdefault(item["chain"]["name"], 0)
            elif "rule" in item:
                rule = item["rule"]
                chain = rule["chain"]
                self.rules[chain] = self.rules.get(chain, 0) + 1
                if chain == COND_CHAIN:
                    self.cond.append((rule["handle"], rule.get("comment", ""), _summary(rule)))

    def handles(self, tag: str) -> list[int]:
        return [h for h, comment, _ in self.cond if comment == tag]

    def owners(self, names: tuple[str, ...]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for _, comment, (dport, addr, port, _conds) in self.cond:
            if comment:
                what = f"conditional published port {dport} -> {addr}:{port}"
                out.setdefault(comment, []).append(what)
        for name in names:
            for key, (value, comment) in self.sets.get(name, {}).items():
                if comment:
                    out.setdefault(comment, []).append(describe(name, key, value))
        return out

    def subnets(self, family: int) -> list[Network]:
        nets = []
        for key in self.sets.get(f"subnets{family}", {}):
            first = key[0] if isinstance(key, tuple) else key
            nets.append(ipaddress.ip_network(str(first)))
        return nets


def _summary(rule: dict[str, Any]) -> Summary:
    """(host port, DNAT address, DNAT port, conditions) of a conditional rule as
    listed; conditions as (kind, op, canonical value), comparable with cond_key()."""
    dport: object = None
    addr: object = None
    port: object = None
    conds: set[tuple[str, str, str]] = set()
    for e in rule.get("expr", []):
        m = e.get("match")
        left = m.get("left") if m is not None else None
        if isinstance(left, dict):
            op, right = m.get("op", "=="), m.get("right")
            field = left.get("payload", {}).get("field")
            if field == "dport":
                dport = right
            elif field == "saddr":
                try:
                    conds.add(("saddr", op, str(ipaddress.ip_network(str(_atom(right))))))
                except ValueError:
                    conds.add(("saddr", op, repr(right)))
            elif left.get("meta", {}).get("key") == "iifname":
                conds.add(("iifname", op, str(right)))
        d = e.get("dnat")
        if d is not None:
            addr, port = _atom(d.get("addr")), d.get("port")
    return (dport, addr, port, frozenset(conds))


def cond_key(b: Binding, conds: list[Condition]) -> Summary:
    """What _summary() reads back from the rule cond_rules() makes for `b`."""
    want = frozenset((c.kind, "!=" if c.negate else "==", c.value) for c in conds)
    return (b.host_port, str(b.container_ip), b.container_port, want)


def describe(name: str, key: object, value: object) -> str:
    if name.startswith("masq"):
        return f"masquerade of {key}"
    if name.startswith("hp"):
        return f"hairpin SNAT to {_show(key)}"
    proto_port = _show(key)
    if name.endswith("_addr"):
        return f"published port {proto_port} -> {value}"
    return f"published port {proto_port} -> port {value}"


_PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}


def _show(key: object) -> str:
    if isinstance(key, tuple):
        return " . ".join(
            _PROTO_NAMES.get(k, str(k)) if isinstance(k, int) and i == len(key) - 2 else str(k)
            for i, k in enumerate(key)
        )
    return str(key)


# -- the backend ------------------------------------------------------------------------------------


class NftablesFirewall(Backend):
    """Firewall backend on `table inet pycni` (see the module docstring)."""

    name = "nftables"

    def __init__(self, transport: str | None = None, store: Any = None) -> None:
        super().__init__(store)
        self.nft = Nft(transport)

    def available(self) -> bool:
        """Whether nftables answers here, in O(1): a read of one table that does not
        exist. "No such file or directory" is nf_tables answering; anything else (no
        library or binary, no kernel support, no permission) means unusable. Not a
        dry-run transaction (the kernel's abort of one costs a flat ~8 ms) and not
        `list tables` (libnftables 1.0.6 first caches every set element: ~2 ms per
        1,000), since this runs on every ADD and DEL."""
        mode = self.nft.mode()
        if mode is None:
            return False
        here = (*netns_key(), mode)
        if here in _ANSWERED:
            return True  # asked already in this process (netctl runs a whole chain)
        try:
            self.nft.run([{"list": {"table": {"family": "inet", "name": PROBE_TABLE}}}])
        except NftError as exc:
            if "No such file or directory" not in str(exc):
                return False
        except errors.CniError:
            return False
        # it answered (or the table exists, someone made it: nf_tables answered all the same)
        _ANSWERED.add(here)
        return True

    def _run(self, cmds: list[Cmd], what: str) -> list[dict[str, Any]]:
        try:
            return self.nft.run(cmds)
        except NftError as exc:
            self._raise(exc, what)

    def _raise(self, exc: NftError, what: str) -> NoReturn:
        msg = str(exc)
        if "File exists" in msg and what == "add":
            raise KernelConflict(msg) from None
        if "Operation not permitted" in msg:
            raise errors.InvalidEnvironment(
                "nftables: operation not permitted", "the plugin needs CAP_NET_ADMIN (root)"
            ) from None
        if "Protocol not supported" in msg or "Operation not supported" in msg:
            raise errors.PluginNotAvailable(
                "nftables: the kernel lacks a needed feature (nf_tables, nat, fib)",
                f"{msg}; set ipMasqBackend to iptables",
            ) from None
        raise errors.CniError(f"nftables {what} failed in table inet {TABLE}", msg) from None

    def _list(self) -> Table | None:
        try:
            listing = self.nft.run([{"list": {"table": {"family": "inet", "name": TABLE}}}])
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise errors.CniError(f"cannot list table inet {TABLE}", str(exc)) from None
        return Table(listing)

    # -- primitives --------------------------------------------------------------------------

    def _apply(self, old: Record | None, new: Record | None, parts: set[str]) -> None:
        what = "add" if elements(new, parts) or cond_rules(new, parts) else "delete"
        handles = self._cond_handles(old, parts)
        cmds = transition(old, new, parts, handles=handles)
        if not cmds:
            return
        try:
            self.nft.run(cmds)
            return
        except NftError as exc:
            msg = str(exc)
            nested = "File exists" in msg and subnets(new, parts)
            if "No such file or directory" not in msg and not nested:
                self._raise(exc, what)
        # First use, a flushed or damaged table, or a subnet nested in a wider one
        # that is already present: again, with the skeleton and only new subnets.
        nets = uncovered(subnets(new, parts), self._subnets())
        self._run(repair(old, new, parts, nets, handles), what)

    def _cond_handles(self, old: Record | None, parts: set[str]) -> list[int]:
        """Handles of old's rules in the conditional chain (a read of that chain only,
        and only when old has conditions)."""
        if not cond_rules(old, parts):
            return []
        assert old is not None
        try:
            listing = self.nft.run([{"list": {"chain": {**T, "name": COND_CHAIN}}}])
        except NftError:
            return []  # no table or chain: nothing of old's left to delete
        return Table(listing).handles(owner_tag(old.key))

    def _subnets(self) -> list[Network]:
        # One `list` per batch: libnftables 1.0.6 scopes its cache to the first one.
        nets: list[Network] = []
        for family in (4, 6):
            try:
                listing = self.nft.run([{"list": {"set": {**T, "name": f"subnets{family}"}}}])
            except NftError:
                continue
            nets += Table(listing).subnets(family)
        return nets

    def _orphans(self) -> dict[str, list[str]]:
        table = self._list()
        return table.owners(MASQ_SETS + PORT_SETS) if table is not None else {}

    def _remove_tags(self, tags: set[str], parts: set[str]) -> None:
        table = self._list()
        if table is None:
            return
        names = (MASQ_SETS if MASQ in parts else ()) + (PORT_SETS if PORTS in parts else ())
        cmds: list[Cmd] = []
        for name in names:
            entries = table.sets.get(name, {})
            keys = [k for k, (_, comment) in entries.items() if comment in tags]
            for k in keys:
                del entries[k]
            if keys:
                elems = [_unnorm(k) for k in keys]
                cmds.append({"delete": {"element": {**T, "name": name, "elem": elems}}})
        if PORTS in parts:
            cmds += delete_rules([h for h, comment, _ in table.cond if comment in tags])
        cmds += _unused_subnets(table)
        if cmds:
            self._run(cmds, "delete")

    def _prune(self) -> None:
        table = self._list()
        cmds = _unused_subnets(table) if table is not None else []
        if cmds:
            self._run(cmds, "delete")

    def _rebuild(self, records: list[Record]) -> None:
        if not records:
            # Nothing saved: leave no table behind (and create none on a node that
            # never used this backend).
            table = {"family": "inet", "name": TABLE}
            self._run([{"add": {"table": table}}, {"delete": {"table": table}}], "replay")
            return
        self._run(rebuild(records), "replay")

    def _check(self, record: Record, parts: set[str]) -> list[str]:
        table = self._list()
        if table is None:
            return [f"table inet {TABLE} does not exist"]
        missing = []
        for chain, count in rule_counts().items():
            if table.rules.get(chain) is None:
                missing.append(f"chain {chain} is missing")
            elif table.rules[chain] != count:
                missing.append(f"chain {chain} has {table.rules[chain]} rules, expected {count}")
        tag = owner_tag(record.key)
        for name, key, value in elements(record, parts):
            k, v = norm(key), norm(value)
            have = table.sets.get(name, {}).get(k)
            if have is None:
                missing.append(f"{describe(name, k, v)}: no element in {name}")
            elif have != (v, tag):
                missing.append(f"{describe(name, k, v)}: {name} holds {have[0]} for {have[1]!r}")
        have_rules = [summary for _, comment, summary in table.cond if comment == tag]
        for b in record.bindings() if PORTS in parts else []:
            conds = record.conditions_of(b.family)
            if conds and cond_key(b, conds) not in have_rules:
                missing.append(f"{b!r} if {conds}: no such rule in chain {COND_CHAIN}")
        present = table.subnets(4) + table.subnets(6)
        for net in uncovered(subnets(record, parts), present):
            missing.append(f"subnet pair {net} missing from subnets{net.version}")
        return missing

    def _kernel_holder(self, b: Binding) -> str | None:
        table = self._list()
        if table is None:
            return None
        key: tuple[object, ...] = (PROTO_NUMBERS[b.protocol], b.host_port)
        if b.host_ip:
            key = (str(ipaddress.ip_address(b.host_ip)), *key)
        name = f"pm{b.family}_{'ip' if b.host_ip else 'any'}_addr"
        have = table.sets.get(name, {}).get(key)
        return have[1] if have is not None else None


def _unused_subnets(table: Table) -> list[Cmd]:
    """Delete the subnet pairs that no remaining masquerade or hairpin element needs."""
    cmds: list[Cmd] = []
    for family in (4, 6):
        addrs = [ipaddress.ip_address(str(k)) for k in table.sets.get(f"masq{family}", {})]
        addrs += [
            ipaddress.ip_address(str(k[0]))
            for k in table.sets.get(f"hp{family}", {})
            if isinstance(k, tuple)
        ]
        unused = [n for n in table.subnets(family) if not any(a in n for a in addrs)]
        if unused:
            pairs = [_concat(_prefix(n), _prefix(n)) for n in unused]
            cmds.append({"delete": {"element": {**T, "name": f"subnets{family}", "elem": pairs}}})
    return cmds


def _unnorm(key: object) -> object:
    return {"concat": list(key)} if isinstance(key, tuple) else key
