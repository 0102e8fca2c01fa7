"""Network isolation: keep bridge networks apart, as Docker isolates its networks.

One table of our own, `table inet pycni_isolation`:

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
        (and, unless direct routing is allowed for the family, for each family:
            oif <br> iif != <br> ct state & (established|related) == 0
                ct status & dnat == 0 meta nfproto ipv4 drop   nothing routed in that
                                                  was not published or asked for)
    }

Ensuring a network costs the same whatever the number of networks: one chain flushed
and refilled, one element in the set and one in the map; the two rules of `forward`
are rewritten in the same transaction, which keeps it idempotent. Packets pay two hash
lookups.

Bridges are keyed by interface index, never by name: nft's JSON input still gives
strings a meaning ("@x" is a set reference, a trailing "*" a wildcard), and a name
from a config must never be read as nft syntax. Only integers and names of our own
making ("net-<ifindex>") reach nft. Priority filter - 10 runs before the usual
filter-priority forward chains; a drop in any base chain is final anyway.

The rules belong to the network, not to one attachment: `ensure` saves the network's
intent (`Isolation`: bridge name, internal, icc, direct routing) in the firewall store
(`.isolation/<network>.json`), so `replay()` rebuilds the table after a flush, with the
bridge's index of the moment (a re-created bridge has a new one). `collect_garbage()`
removes the rules and records of bridges that no longer exist.

icc=false is two things: the bridge plugin's `portIsolation` (kernel bridge port
isolation: no frame from one container port to another), and here no packet routed
from the bridge back into the same bridge (a container whose route to a neighbour
points at the gateway would otherwise reach it at layer 3, as Docker's
`-i docker0 -o docker0 -j DROP` prevents). Connections DNATed by a published port stay
allowed: reaching a neighbour's published port through the host is what publishing is.

Routed traffic that enters the bridge from anywhere else (a LAN neighbour with a route
to the container subnet via this host, another host-side interface) is dropped unless
a published port DNATed it or it belongs to a connection the container opened: a
container is reachable from outside only on what it publishes (Docker 28 closed the
same "direct routing" hole). Direct routing per family (Docker's
com.docker.network.bridge.gateway_mode_ipvN=routed) lifts that, for administrators who
route to their containers on purpose.
"""

from __future__ import annotations

from pycni import errors
from pycni.firewall.base import Isolation
from pycni.firewall.nft import DROP, flags_clear, match, meta

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.firewall.store import Records

    Cmd = dict[str, Any]

TABLE = "pycni_isolation"
FAMILY = "inet"
SET = "bridges"
MAP = "networks"
BASE_CHAIN = "forward"
PRIORITY = -10  # filter - 10
CHAIN_PREFIX = "net-"
T = {"family": FAMILY, "table": TABLE}
NO_NFT = ("isolation: the nft program was not found", "install the nftables package")

# -- plan (pure) -------------------------------------------------------------------------


def chain_name(index: int) -> str:
    return f"{CHAIN_PREFIX}{index}"


def _is(key: str, op: str, right: object) -> dict[str, Any]:
    return match(meta(key), right, op)


def network_rules(
    index: int, internal: bool, icc: bool = True, direct_routing: frozenset[int] = frozenset()
) -> list[list[dict[str, Any]]]:
    """The expressions of chain net-<index>."""
    if internal:
        rules = [
            [_is("iif", "==", index), _is("oif", "!=", index), DROP],
            [_is("oif", "==", index), _is("iif", "!=", index), DROP],
        ]
    else:
        rules = [
            [_is("iif", "==", index), _is("oif", "!=", index), _is("oif", "==", "@" + SET), DROP]
        ]
    if not icc:
        rules.append(
            [
                _is("iif", "==", index),
                _is("oif", "==", index),
                flags_clear("status", ["dnat"]),
                DROP,
            ]
        )
    if not internal:
        for family in (4, 6):
            if family in direct_routing:
                continue
            rules.append(
                [
                    _is("oif", "==", index),
                    _is("iif", "!=", index),
                    _is("nfproto", "==", f"ipv{family}"),
                    flags_clear("state", ["established", "related"]),
                    flags_clear("status", ["dnat"]),
                    DROP,
                ]
            )
    return rules


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
        vmap = {"vmap": {"key": meta(key), "data": "@" + MAP}}
        cmds.append({"add": {"rule": {**T, "chain": BASE_CHAIN, "expr": [vmap]}}})
    return cmds


def network_cmds(
    index: int, internal: bool, icc: bool = True, direct_routing: frozenset[int] = frozenset()
) -> list[Cmd]:
    """One network's chain (flushed and refilled), its set and map elements."""
    chain = chain_name(index)
    cmds: list[Cmd] = [
        {"add": {"chain": {**T, "name": chain}}},
        {"flush": {"chain": {**T, "name": chain}}},
    ]
    for expr in network_rules(index, internal, icc, direct_routing):
        cmds.append({"add": {"rule": {**T, "chain": chain, "expr": expr}}})
    cmds.append({"add": {"element": {**T, "name": SET, "elem": [index]}}})
    jump = {"jump": {"target": chain}}
    cmds.append({"add": {"element": {**T, "name": MAP, "elem": [[index, jump]]}}})
    return cmds


def plan_add(
    index: int, internal: bool, icc: bool = True, direct_routing: frozenset[int] = frozenset()
) -> list[Cmd]:
    """One transaction: the skeleton, this network's chain, its set and map elements."""
    return skeleton() + network_cmds(index, internal, icc, direct_routing)


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
        want_base = len([c for c in skeleton() if "rule" in c.get("add", {})])
        if BASE_CHAIN not in self.chains or len(self.rules.get(BASE_CHAIN, [])) != want_base:
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


def _nft() -> Any:
    from pycni.firewall.nft import Nft

    nft = Nft()
    if nft.mode() is None:
        raise errors.PluginNotAvailable(*NO_NFT)
    return nft


def apply(batch: list[Cmd]) -> None:
    if not batch:
        return
    from pycni.firewall.nft import NftError

    try:
        _nft().run(batch)
    except NftError as exc:
        raise errors.CniError("isolation: nftables refused the change", str(exc)) from None


def read_table() -> TableView | None:
    """Our table, or None when it does not exist (nothing was ever isolated here)."""
    from pycni.firewall.nft import NftError

    try:
        listing = _nft().run([{"list": {"table": {"family": FAMILY, "name": TABLE}}}])
    except NftError as exc:
        if "No such file or directory" in str(exc):
            return None
        raise errors.CniError("isolation: cannot list the isolation table", str(exc)) from None
    except ValueError as exc:
        raise errors.DecodingFailure("isolation: nft printed invalid JSON", str(exc)) from None
    return TableView([x for x in listing if isinstance(x, dict)])


def bridge_index(name: str) -> int | None:
    """The interface index of bridge `name`; None when there is no such bridge."""
    from pycni.netlink import Netlink

    with Netlink() as nl:
        link = nl.link(name)
    return int(link.index) if link is not None and link.kind == "bridge" else None


def live_bridges() -> set[int]:
    from pycni.netlink import Netlink

    with Netlink() as nl:
        return {int(link.index) for link in nl.links() if link.kind == "bridge"}


def _records() -> Records:
    from pycni.firewall.store import Records

    return Records("isolation")


def _index(net: Isolation) -> int:
    index = net.index or bridge_index(net.bridge)
    if not index:
        raise errors.InvalidConfig(
            f"isolation: bridge {net.bridge} not found", "the network's bridge must exist"
        )
    return index


# -- verbs (the Firewall protocol's network-level verbs call these) -------------------------


def ensure(net: Isolation) -> None:
    """Isolate the network; idempotent. Its intent is saved first, so a flush later is
    undone by replay()."""
    index = _index(net)
    records = _records()
    path, intent = records.network_path(net.network), net.to_dict()
    if records.read(path) != intent:  # every container's ADD ensures its network's
        records.write(path, intent)
    apply(plan_add(index, net.internal, net.icc, net.direct_routing))


def check(net: Isolation) -> list[str]:
    index = _index(net)
    view = read_table()
    if view is None:
        return [f"table {FAMILY} {TABLE} does not exist"]
    return view.problems(index, net.internal, net.bridge, net.icc, net.direct_routing)


def remove(network: str) -> None:
    """Drop a network's rules (when its bridge still exists) and its record."""
    records = _records()
    path = records.network_path(network)
    saved = records.read(path)
    if saved is not None:
        index = bridge_index(str(saved.get("bridge") or ""))
        if index is not None and read_table() is not None:
            apply(plan_remove([index]))
    records.remove(path)


def collect_garbage() -> list[int]:
    """Remove the rules and records of bridges that no longer exist; returns their
    indexes."""
    records = _records()
    for network in records.networks():
        path = records.network_path(network)
        saved = records.read(path)
        if saved is None or bridge_index(str(saved.get("bridge") or "")) is None:
            records.remove(path)
    view = read_table()
    if view is None:
        return []
    live = live_bridges()
    stale = [i for i in view.network_indexes() if i not in live]
    apply(plan_remove(stale))
    return stale


def replay(known: list[Isolation] | None = None) -> int:
    """Re-apply the isolation of every recorded network whose bridge exists, in one
    transaction; returns how many. `known`: intents the caller keeps itself (a
    runtime's own networks), recorded first where no record exists yet (networks
    isolated by a version that kept no records)."""
    records = _records()
    for net in known or []:
        path = records.network_path(net.network)
        if records.read(path) is None:
            records.write(path, net.to_dict())
    cmds: list[Cmd] = []
    count = 0
    for network in records.networks():
        saved = records.read(records.network_path(network))
        if saved is None:
            continue
        try:
            net = Isolation.from_dict(network, saved)
        except (KeyError, TypeError, ValueError):
            continue
        index = bridge_index(net.bridge)
        if index is not None:
            cmds += network_cmds(index, net.internal, net.icc, net.direct_routing)
            count += 1
    if cmds:
        apply(skeleton() + cmds)
    return count
