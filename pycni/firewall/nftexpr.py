"""nft JSON expressions (pure): the one set of helpers every table of ours is built with.

`table inet pycni` (nftables.py), `table inet pycni_isolation` (isolation.py) and
`table bridge pycni_spoof` (spoofcheck.py) write their rules with these; only
constants, integers, `ipaddress` output and names of our own making go in.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from typing import Any

    Cmd = dict[str, Any]
    Network = ipaddress.IPv4Network | ipaddress.IPv6Network

L4PROTO = {"meta": {"key": "l4proto"}}
DPORT = {"payload": {"protocol": "th", "field": "dport"}}
DROP = {"drop": None}
ACCEPT = {"accept": None}
RETURN = {"return": None}
MASQUERADE = {"masquerade": None}


def meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def match(left: object, right: object, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def prefix(net: Network) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def concat(*items: object) -> dict[str, Any]:
    return {"concat": list(items)}


def flags_clear(key: str, flags: list[str]) -> dict[str, Any]:
    """ct <key> & (flags) == 0: none of the connection-tracking flags is set."""
    mask: object = flags[0] if len(flags) == 1 else {"|": flags}
    return {"match": {"op": "==", "left": {"&": [{"ct": {"key": key}}, mask]}, "right": 0}}


def rule(table: dict[str, str], chain: str, *expr: object) -> Cmd:
    """`add rule` to `chain` of `table` ({"family": ..., "table": ...})."""
    return {"add": {"rule": {**table, "chain": chain, "expr": list(expr)}}}


def rule_counts(cmds: list[Cmd]) -> dict[str, int]:
    """{chain: number of rules} that a batch adds: what a listing must show afterwards."""
    counts: dict[str, int] = {}
    for cmd in cmds:
        added = cmd.get("add", {}).get("rule")
        if added is not None:
            counts[added["chain"]] = counts.get(added["chain"], 0) + 1
    return counts
