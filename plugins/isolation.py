"""isolation: keep bridge networks apart, as Docker isolates its networks from each other.

Chained after `bridge`; the bridge is prevResult.interfaces[0]. ADD ensures, in one
nftables transaction, inside a table of its own:

    table inet pycni_isolation {
        set bridges  { type iface_index; }               every isolated bridge
        map networks { type iface_index : verdict; }     bridge -> jump net-<ifindex>
        chain forward {                                  type filter hook forward priority filter - 10
            iif vmap @networks                           routed out of a bridge
            oif vmap @networks                           routed into a bridge
        }
        chain net-<ifindex> {                            one per network, flushed and refilled
            iif <br> oif != <br> oif @bridges drop       not to any other isolated bridge
        }
        (with "internal": true, instead:
            iif <br> oif != <br> drop                    nothing routed out of the network
            oif <br> iif != <br> drop                    nothing routed into it)
        (and with "icc": false, also:
            iif <br> oif <br> ct status & dnat == 0 drop  no detour through the gateway)
        (and, unless "directRouting4"/"directRouting6" allows it, for each family:
            oif <br> iif != <br> ct state & (established|related) == 0
                ct status & dnat == 0 meta nfproto ipv4 drop   nothing routed in that
                                                  was not published or asked for)
    }

An ADD costs the same whatever the number of networks: one chain flushed and refilled,
one element in the set and one in the map; the two rules of `forward` are rewritten in
the same transaction, which keeps ADD idempotent. Packets pay two hash lookups.

Bridges are keyed by interface index, never by name: nft's JSON input still gives
strings a meaning ("@x" is a set reference, a trailing "*" a wildcard), and a name
from a config must never be read as nft syntax. Only integers and names of our own
making ("net-<ifindex>") reach nft. Priority filter - 10 runs before the usual
filter-priority forward chains; a drop in any base chain is final anyway.

DEL succeeds without doing anything: the rules belong to the network, not to one
attachment. GC (and `netctl network rm`) removes the rules of bridges that no longer
exist. CHECK verifies this bridge's element and chain.

icc=false is two things: the bridge plugin's `portIsolation` (kernel bridge port
isolation: no frame from one container port to another), and here, with `"icc": false`,
no packet routed from the bridge back into the same bridge (a container whose route to
a neighbour points at the gateway would otherwise reach it at layer 3, as Docker's
`-i docker0 -o docker0 -j DROP` prevents). Connections DNATed by a published port stay
allowed: reaching a neighbour's published port through the host is what publishing is.

Routed traffic that enters the bridge from anywhere else (a LAN neighbour with a route
to the container subnet via this host, another host-side interface) is dropped unless
a published port DNATed it or it belongs to a connection the container opened: a
container is reachable from outside only on what it publishes (Docker 28 closed the
same "direct routing" hole). `"directRouting4": true` / `"directRouting6": true` lift
that per family (Docker's -o com.docker.network.bridge.gateway_mode_ipv4=routed or
nat-unprotected), for administrators who route to their containers on purpose.
"""

from __future__ import annotations

from pycni import errors, fastjson, skel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.result import Result

    Cmd = dict[str, Any]

TABLE = "pycni_isolation"
FAMILY = "inet"
SET = "bridges"
MAP = "networks"
BASE_CHAIN = "forward"
PRIORITY = -10  # filter - 10
CHAIN_PREFIX = "net-"
T = {"family": FAMILY, "table": TABLE}


class IsolationConf:
    __slots__ = ("direct_routing", "icc", "internal", "name")

    def __init__(self, d: dict[str, Any]) -> None:
        from pycni import conf

        #: network name (validated by skel)
        self.name: str = d["name"]
        #: no routed traffic in or out of the network at all (docker network create --internal)
        self.internal = conf.get_bool(d, "internal", False, "isolation")
        #: containers of the network may talk to each other (false: not even routed
        #: through the gateway; docker's com.docker.network.bridge.enable_icc)
        self.icc = conf.get_bool(d, "icc", True, "isolation")
        #: the families whose containers may be reached by routed traffic they did
        #: not publish or ask for (Docker's gateway_mode_ipvN=routed)
        self.direct_routing = frozenset(
            family
            for family in (4, 6)
            if conf.get_bool(d, f"directRouting{family}", False, "isolation")
        )


# -- plan (pure) -------------------------------------------------------------------------


def chain_name(index: int) -> str:
    return f"{CHAIN_PREFIX}{index}"


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _match(key: str, op: str, right: object) -> dict[str, Any]:
    return {"match": {"op": op, "left": _meta(key), "right": right}}


def network_rules(
    index: int, internal: bool, icc: bool = True, direct_routing: frozenset[int] = frozenset()
) -> list[list[dict[str, Any]]]:
    """The expressions of chain net-<index>."""
    drop = {"drop": None}
    if internal:
        rules = [
            [_match("iif", "==", index), _match("oif", "!=", index), drop],
            [_match("oif", "==", index), _match("iif", "!=", index), drop],
        ]
    else:
        rules = [
            [
                _match("iif", "==", index),
                _match("oif", "!=", index),
                _match("oif", "==", "@" + SET),
                drop,
            ]
        ]
    if not icc:
        rules.append(
            [
                _match("iif", "==", index),
                _match("oif", "==", index),
                _flags_clear("status", ["dnat"]),
                drop,
            ]
        )
    if not internal:
        for family in (4, 6):
            if family in direct_routing:
                continue
            rules.append(
                [
                    _match("oif", "==", index),
                    _match("iif", "!=", index),
                    _match("nfproto", "==", f"ipv{family}"),
                    _flags_clear("state", ["established", "related"]),
                    _flags_clear("status", ["dnat"]),
                    drop,
                ]
            )
    return rules


def _flags_clear(key: str, flags: list[str]) -> dict[str, Any]:
    """ct <key> & (flags) == 0: none of the connection-tracking flags is set."""
    mask: object = flags[0] if len(flags) == 1 else {"|": flags}
    return {"match": {"op": "==", "left": {"&": [{"ct": {"key": key}}, mask]}, "right": 0}}


def skeleton() -> list[Cmd]:
    """Table, set, map and base chain; rewriting the base chain's rules keeps it exact."""
    cmds: list[Cmd] = [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"set": {**T, "name": SET, "type": "iface_index"}}},
        {"add": {"map": {**T, "name": MAP, "type": "iface_index", "map": "verdict"}}},
        {
            "add": {
                "chain": {
                    **T,
                    "name": BASE_CHAIN,
                    "type": "filter",
                    "hook": "forward",
                    "prio": PRIORITY,
                    "policy": "accept",
                }
            }
        },
        {"flush": {"chain": {**T, "name": BASE_CHAIN}}},
    ]
    for key in ("iif", "oif"):
        vmap = {"vmap": {"key": _meta(key), "data": "@" + MAP}}
        cmds.append({"add": {"rule": {**T, "chain": BASE_CHAIN, "expr": [vmap]}}})
    return cmds


def plan_add(
    index: int, internal: bool, icc: bool = True, direct_routing: frozenset[int] = frozenset()
) -> list[Cmd]:
    """One transaction: the skeleton, this network's chain, its set and map elements."""
    chain = chain_name(index)
    cmds = skeleton()
    cmds.append({"add": {"chain": {**T, "name": chain}}})
    cmds.append({"flush": {"chain": {**T, "name": chain}}})
    for expr in network_rules(index, internal, icc, direct_routing):
        cmds.append({"add": {"rule": {**T, "chain": chain, "expr": expr}}})
    cmds.append({"add": {"element": {**T, "name": SET, "elem": [index]}}})
    jump = {"jump": {"target": chain}}
    cmds.append({"add": {"element": {**T, "name": MAP, "elem": [[index, jump]]}}})
    return cmds


def plan_remove(indexes: list[int]) -> list[Cmd]:
    """Remove networks' rules. nft 1.0.6 has no "destroy": adding an element first makes
    its deletion succeed whether or not it was there."""
    cmds: list[Cmd] = []
    for index in indexes:
        chain = chain_name(index)
        jump = {"jump": {"target": chain}}
        cmds += [
            {"add": {"chain": {**T, "name": chain}}},
            {"add": {"element": {**T, "name": MAP, "elem": [[index, jump]]}}},
            {"delete": {"element": {**T, "name": MAP, "elem": [index]}}},
            {"add": {"element": {**T, "name": SET, "elem": [index]}}},
            {"delete": {"element": {**T, "name": SET, "elem": [index]}}},
            {"flush": {"chain": {**T, "name": chain}}},
            {"delete": {"chain": {**T, "name": chain}}},
        ]
    return skeleton()[:3] + cmds if cmds else []


class TableView:
    """What `nft -j list table inet pycni_isolation` says, reduced to what we check."""

    __slots__ = ("chains", "map_targets", "rules")

    def __init__(self, listing: list[dict[str, Any]]) -> None:
        self.chains: set[str] = set()
        self.map_targets: set[str] = set()  # chains the map jumps to
        self.rules: dict[str, list[list[Any]]] = {}
        for item in listing:
            if "chain" in item:
                self.chains.add(item["chain"].get("name", ""))
            elif "map" in item and item["map"].get("name") == MAP:
                for elem in item["map"].get("elem") or []:
                    if isinstance(elem, list) and len(elem) == 2 and isinstance(elem[1], dict):
                        target = (elem[1].get("jump") or {}).get("target")
                        if isinstance(target, str):
                            self.map_targets.add(target)
            elif "rule" in item:
                rule = item["rule"]
                self.rules.setdefault(rule.get("chain", ""), []).append(rule.get("expr") or [])

    def network_indexes(self) -> list[int]:
        """The interface indexes that have a chain of ours."""
        out = []
        for name in self.chains | self.map_targets:
            suffix = name[len(CHAIN_PREFIX) :] if name.startswith(CHAIN_PREFIX) else ""
            if suffix.isdigit():
                out.append(int(suffix))
        return sorted(set(out))

    def problems(
        self,
        index: int,
        internal: bool,
        bridge: str,
        icc: bool = True,
        direct_routing: frozenset[int] = frozenset(),
    ) -> list[str]:
        chain = chain_name(index)
        out = []
        if BASE_CHAIN not in self.chains or len(self.rules.get(BASE_CHAIN, [])) != 2:
            out.append(f"the forward chain of table {FAMILY} {TABLE} is missing or altered")
        if chain not in self.chains:
            out.append(f"chain {chain} (bridge {bridge}) is missing")
        if chain not in self.map_targets:
            out.append(f"bridge {bridge} is not in map {MAP}")
        rules = self.rules.get(chain, [])
        want = len(network_rules(index, internal, icc, direct_routing))
        if len(rules) != want or not all(r and "drop" in r[-1] for r in rules):
            kind = "internal" if internal else "isolated"
            out.append(f"chain {chain} does not hold the {want} drop rule(s) of an {kind} network")
        return out


# -- kernel edge ---------------------------------------------------------------------------


def _nft(args: list[str], batch: list[Cmd] | None = None) -> bytes:
    from pycni.firewall import spawn

    nft = spawn.which("nft")
    if nft is None:
        raise errors.PluginNotAvailable(
            "isolation: the nft program was not found", "install the nftables package"
        )
    data = fastjson.dumps({"nftables": batch}).encode() if batch is not None else b""
    done = spawn.run([nft, *args], input=data)
    if done.rc != 0:
        raise errors.CniError("isolation: nftables refused the change", done.describe())
    return done.stdout


def apply(batch: list[Cmd]) -> None:
    if batch:
        _nft(["-j", "-f", "-"], batch)


def read_table() -> TableView | None:
    """Our table, or None when it does not exist (nothing was ever isolated here)."""
    from pycni.firewall import spawn

    nft = spawn.which("nft")
    if nft is None:
        raise errors.PluginNotAvailable(
            "isolation: the nft program was not found", "install the nftables package"
        )
    done = spawn.run([nft, "-j", "list", "table", FAMILY, TABLE])
    if done.rc != 0:
        if b"No such file or directory" in done.stderr:
            return None
        raise errors.CniError("isolation: cannot list the isolation table", done.describe())
    try:
        obj = fastjson.loads(done.stdout)
    except ValueError as exc:
        raise errors.DecodingFailure("isolation: nft printed invalid JSON", str(exc)) from None
    listing = obj.get("nftables") if isinstance(obj, dict) else None
    return TableView([x for x in listing or [] if isinstance(x, dict)])


def bridge_index(name: str) -> int:
    from pycni.netlink import Netlink

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
    return int(link.index)


def live_bridges() -> set[int]:
    from pycni.netlink import Netlink

    with Netlink() as nl:
        return {int(link.index) for link in nl.links() if link.kind == "bridge"}


def collect_garbage() -> list[int]:
    """Remove the rules of bridges that no longer exist; returns their indexes."""
    view = read_table()
    if view is None:
        return []
    live = live_bridges()
    stale = [i for i in view.network_indexes() if i not in live]
    apply(plan_remove(stale))
    return stale


# -- verbs ---------------------------------------------------------------------------------


def _prev_bridge(cmd: skel.CmdArgs) -> tuple[Result, str]:
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
    return prev, prev.interfaces[0].name


def cmd_add(cmd: skel.CmdArgs) -> Result:
    c = IsolationConf(cmd.conf)
    prev, bridge = _prev_bridge(cmd)
    apply(plan_add(bridge_index(bridge), c.internal, c.icc, c.direct_routing))
    return prev


def cmd_del(cmd: skel.CmdArgs) -> None:
    # Network-level rules outlive every single attachment; GC removes them.
    return None


def cmd_check(cmd: skel.CmdArgs) -> None:
    c = IsolationConf(cmd.conf)
    _prev, bridge = _prev_bridge(cmd)
    index = bridge_index(bridge)
    view = read_table()
    if view is None:
        raise errors.CniError(f"isolation CHECK failed: table {FAMILY} {TABLE} does not exist")
    problems = view.problems(index, c.internal, bridge, c.icc, c.direct_routing)
    if problems:
        raise errors.CniError("isolation CHECK failed: " + "; ".join(problems))


def cmd_gc(cmd: skel.CmdArgs) -> None:
    IsolationConf(cmd.conf)
    collect_garbage()


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
