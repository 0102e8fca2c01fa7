"""Overlay networks in the isolation table: a network of two interfaces, its bridge
(`ovbr<VNI>`) and its VXLAN device (`ovx<VNI>`), in `table inet pycni_isolation`
(isolation.py's table, set, map and base chain, unchanged):

    set bridges  += { <br>, <vx> }           no other isolated network routes into either
    map networks += { <br> : jump ovl-<br>, <vx> : jump ovl-<br> }
    chain ovl-<br> {
        iif <vx> oif != <br> drop            what arrives over VXLAN is for this network's
                                             containers only (not another overlay's, not a
                                             local bridge's, not routed on)
        iif <vx> accept                      ...and it is the network's own traffic: the
                                             bridge's guard below must not see it
        oif <vx> iif != <br> drop            only this network's containers send over it
        iif <br> oif != <br> oif != <vx> oif @bridges drop   not into another isolated network
        oif <br> iif != <br> ct state & (established|related) == 0
                 ct status & dnat == 0 drop  nothing routed in from elsewhere that was not
                                             published or asked for (as a bridge network)
    }
    (internal: instead of the last two,
        iif <br> oif != <br> oif != <vx> drop    nothing routed out but over the overlay
        oif <br> iif != <br> drop                nothing routed in from elsewhere)

Why a chain of its own instead of isolation.py's `net-<br>`: that chain knows one
interface per network, and would drop the network's own traffic between its bridge and
its VXLAN device (and guard the bridge against it). Why `accept` for traffic from the
VXLAN device: the base chain jumps on `iif` first, and an accept there ends the base
chain, so the `oif <br>` jump (the guard) never drops a peer host's packets.

The intent is saved (`.isolation-overlay/<network>.json`: names, and the indexes last
applied) so `replay()` rebuilds it after a flush, and `remove()` deletes exactly the
elements that still point at this network's chain (an index the kernel gave to another
interface since is left alone).
"""

from __future__ import annotations

from pycni.firewall import isolation
from pycni.firewall.nft import ACCEPT, DROP, flags_clear, match, meta

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.firewall.store import Records

    Cmd = dict[str, Any]

T = isolation.T
CHAIN_PREFIX = "ovl-"
KIND = "isolation-overlay"


def chain_name(bridge_index: int) -> str:
    return f"{CHAIN_PREFIX}{bridge_index}"


def _is(key: str, op: str, right: object) -> dict[str, Any]:
    return match(meta(key), right, op)


def rules(bridge: int, vxlan: int, internal: bool) -> list[list[dict[str, Any]]]:
    """The expressions of chain ovl-<bridge> (pure)."""
    out = [
        [_is("iif", "==", vxlan), _is("oif", "!=", bridge), DROP],
        [_is("iif", "==", vxlan), ACCEPT],
        [_is("oif", "==", vxlan), _is("iif", "!=", bridge), DROP],
    ]
    if internal:
        out += [
            [_is("iif", "==", bridge), _is("oif", "!=", bridge), _is("oif", "!=", vxlan), DROP],
            [_is("oif", "==", bridge), _is("iif", "!=", bridge), DROP],
        ]
    else:
        out += [
            [_is("iif", "==", bridge), _is("oif", "!=", bridge), _is("oif", "!=", vxlan),
             _is("oif", "==", "@" + isolation.SET), DROP],
            [_is("oif", "==", bridge), _is("iif", "!=", bridge),
             flags_clear("state", ["established", "related"]), flags_clear("status", ["dnat"]),
             DROP],
        ]  # fmt: skip
    return out


def network_cmds(bridge: int, vxlan: int, internal: bool) -> list[Cmd]:
    """The network's chain (flushed and refilled), its set and map elements."""
    chain = chain_name(bridge)
    cmds: list[Cmd] = [
        {"add": {"chain": {**T, "name": chain}}},
        {"flush": {"chain": {**T, "name": chain}}},
    ]
    for expr in rules(bridge, vxlan, internal):
        cmds.append({"add": {"rule": {**T, "chain": chain, "expr": expr}}})
    jump = {"jump": {"target": chain}}
    cmds.append({"add": {"element": {**T, "name": isolation.SET, "elem": [bridge, vxlan]}}})
    cmds.append(
        {"add": {"element": {**T, "name": isolation.MAP, "elem": [[bridge, jump], [vxlan, jump]]}}}
    )
    return cmds


def remove_cmds(chain: str, indexes: list[int]) -> list[Cmd]:
    """Drop `indexes` from the set and map (each added first: nft 1.0.6 has no
    "destroy"), then the chain."""
    cmds: list[Cmd] = [{"add": {"chain": {**T, "name": chain}}}]
    jump = {"jump": {"target": chain}}
    for index in indexes:
        cmds += [
            {"add": {"element": {**T, "name": isolation.MAP, "elem": [[index, jump]]}}},
            {"delete": {"element": {**T, "name": isolation.MAP, "elem": [index]}}},
            {"add": {"element": {**T, "name": isolation.SET, "elem": [index]}}},
            {"delete": {"element": {**T, "name": isolation.SET, "elem": [index]}}},
        ]
    cmds += [
        {"flush": {"chain": {**T, "name": chain}}},
        {"delete": {"chain": {**T, "name": chain}}},
    ]
    return cmds


def jumping_to(listing: list[dict[str, Any]], chain: str) -> list[int | str]:
    """The keys of the map's elements whose verdict jumps to `chain` (pure, from `nft -j
    list table`): nft prints an interface index as the interface's name while it exists."""
    out: list[int | str] = []
    for item in listing:
        m = item.get("map") if isinstance(item, dict) else None
        if not m or m.get("name") != isolation.MAP:
            continue
        for elem in m.get("elem") or []:
            if (isinstance(elem, list) and len(elem) == 2 and isinstance(elem[0], (int, str))
                    and isinstance(elem[1], dict)
                    and (elem[1].get("jump") or {}).get("target") == chain):  # fmt: skip
                out.append(elem[0])
    return out


# -- kernel edge ---------------------------------------------------------------------------


def _records() -> Records:
    from pycni.firewall.store import Records

    return Records(KIND)


def _index(name: str) -> int | None:
    from pycni.netlink import Netlink

    with Netlink() as nl:
        link = nl.link(name)
    return int(link.index) if link is not None else None


def _listing() -> list[dict[str, Any]] | None:
    from pycni.firewall.nft import Nft, NftError

    try:
        out = Nft().run(
            [{"list": {"table": {"family": isolation.FAMILY, "name": isolation.TABLE}}}]
        )
    except NftError as exc:
        if "No such file or directory" in str(exc):
            return None
        raise
    return [x for x in out if isinstance(x, dict)]


def _key_indexes(keys: list[int | str]) -> list[int]:
    """The interface indexes of map keys as nft prints them: the interface's name while
    it exists, the index in digits once it is gone."""
    out = set()
    for key in keys:
        index = key if isinstance(key, int) else _index(key)
        if index is None and isinstance(key, str) and key.isdigit():
            index = int(key)
        if index is not None:
            out.add(index)
    return sorted(out)


def _drop_chain(chain: str) -> list[Cmd]:
    """Removal of `chain` and of exactly the elements that still jump to it."""
    listing = _listing()
    if listing is None or not any((x.get("chain") or {}).get("name") == chain for x in listing):
        return []
    return remove_cmds(chain, _key_indexes(jumping_to(listing, chain)))


def ensure(network: str, bridge: str, vxlan: str, internal: bool) -> None:
    """Isolate the overlay `network` (its bridge and VXLAN device must exist); idempotent.
    Its intent is saved first, so a flush later is undone by replay()."""
    from pycni import errors

    b, x = _index(bridge), _index(vxlan)
    if b is None or x is None:
        raise errors.InvalidConfig(
            f"isolation: overlay network {network}: {bridge if b is None else vxlan} not found",
            "the overlay agent creates the VXLAN device, the bridge plugin the bridge",
        )
    records = _records()
    path = records.network_path(network)
    saved = records.read(path) or {}
    records.write(path, {"bridge": bridge, "vxlan": vxlan, "internal": internal,
                         "indexes": [b, x]})  # fmt: skip
    cmds = isolation.skeleton()
    old = saved.get("indexes")
    if isinstance(old, list) and old and old[0] != b and isinstance(old[0], int):
        cmds = _drop_chain(chain_name(old[0])) + cmds  # the bridge was re-created
    isolation.apply(cmds + network_cmds(b, x, internal))


def remove(network: str) -> None:
    """Drop the overlay's rules and its record; nothing to drop is success."""
    records = _records()
    path = records.network_path(network)
    saved = records.read(path)
    if saved is None:
        return
    old = saved.get("indexes")
    if isinstance(old, list) and old and isinstance(old[0], int):
        isolation.apply(_drop_chain(chain_name(old[0])))
    records.remove(path)


def collect_garbage() -> list[int]:
    """Drop the chains, map and set elements and records of overlays whose bridge or
    VXLAN device is gone without a DEL (deleted by hand, a failed teardown): a stale
    element keyed by a vanished interface index would otherwise send a later interface
    that gets the same index through a chain of rules written for another network.
    Returns the bridge indexes whose chains were dropped."""
    records = _records()
    live: set[str] = set()
    for network in records.networks():
        path = records.network_path(network)
        saved = records.read(path)
        b = _index(str(saved.get("bridge") or "")) if saved is not None else None
        x = _index(str(saved.get("vxlan") or "")) if saved is not None else None
        if b is None or x is None:
            records.remove(path)
        else:
            live.add(chain_name(b))
    listing = _listing()
    if listing is None:
        return []
    stale = sorted(
        name
        for item in listing
        if isinstance(name := (item.get("chain") or {}).get("name"), str)
        and name.startswith(CHAIN_PREFIX)
        and name not in live
    )
    cmds: list[Cmd] = []
    for chain in stale:
        cmds += remove_cmds(chain, _key_indexes(jumping_to(listing, chain)))
    if cmds:
        isolation.apply(cmds)
    return [int(c[len(CHAIN_PREFIX) :]) for c in stale if c[len(CHAIN_PREFIX) :].isdigit()]


def replay() -> int:
    """Re-apply every recorded overlay whose interfaces exist, in one transaction."""
    records = _records()
    cmds: list[Cmd] = []
    count = 0
    for network in records.networks():
        path = records.network_path(network)
        saved = records.read(path)
        if saved is None:
            continue
        b, x = _index(str(saved.get("bridge") or "")), _index(str(saved.get("vxlan") or ""))
        if b is None or x is None:
            continue
        if saved.get("indexes") != [b, x]:
            records.write(path, {**saved, "indexes": [b, x]})
        cmds += network_cmds(b, x, saved.get("internal") is True)
        count += 1
    if cmds:
        isolation.apply(isolation.skeleton() + cmds)
    return count
