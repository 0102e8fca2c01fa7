"""The overlay's underlay packets bypass connection tracking (`table inet pycni_tunnel`):

    table inet pycni_tunnel {
        set vteps4 { type ipv4_addr . inet_service; }      local VTEP address . UDP port
        chain prerouting {                                 type filter hook prerouting priority raw
            ip daddr . udp dport @vteps4 notrack           VXLAN arriving for a local VTEP
        }
        chain output {                                     type filter hook output priority raw
            ip saddr . udp dport @vteps4 notrack           VXLAN a local VTEP sends
        }
    }

Why: a VXLAN device picks the outer UDP source port from a hash of the inner flow, and
both directions go to the same destination port, so conntrack sees every new inner
connection as two new, never-answered UDP flows on each host (`[UNREPLIED] ... dport=4789`,
30 s each), on top of the inner connection's own entry: three entries per connection per
host instead of one, and a lookup (with NAT hooks for each new one) on every underlay
packet. Nothing of ours matches the outer packets (masquerade is keyed by container
addresses), so tracking them buys nothing; Calico (felix), OpenShift SDN and others
notrack them for the same reason. The inner packets stay tracked (masquerade,
isolation and published ports need that).

A host firewall that accepts VXLAN only as `ct state new` must accept it by port
instead: untracked packets have `ct state untracked`.

One element per local VTEP address and port, shared by every overlay device that uses
it (one per VNI), so the table belongs to the address, not to a network: `ensure` is
idempotent (the two rules are rewritten in the same transaction), `release` drops the
element when the last device using it is gone. Only `ipaddress` output and integers
reach nft.
"""

from __future__ import annotations

import ipaddress

from pycni import errors
from pycni.firewall.nft import Nft, NftError, concat, match, payload

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TABLE = "pycni_tunnel"
T = {"family": "inet", "table": TABLE}
SET = "vteps4"


def _chain(name: str, hook: str) -> dict[str, Any]:
    return {"chain": {**T, "name": name, "type": "filter", "hook": hook, "prio": -300,
                      "policy": "accept"}}  # fmt: skip


def _notrack(chain: str, addr_field: str) -> dict[str, Any]:
    key = concat(payload("ip", addr_field), payload("udp", "dport"))
    return {"add": {"rule": {**T, "chain": chain,
                             "expr": [match(key, f"@{SET}"), {"notrack": None}]}}}  # fmt: skip


def _element(local_ip: str, port: int) -> dict[str, Any]:
    elem = {"concat": [str(ipaddress.IPv4Address(local_ip)), int(port)]}
    return {"element": {**T, "name": SET, "elem": [elem]}}


def ensure_batch(local_ip: str, port: int) -> list[dict[str, Any]]:
    """The transaction of `ensure` (pure)."""
    return [
        {"add": {"table": {"family": "inet", "name": TABLE}}},
        {"add": {"set": {**T, "name": SET, "type": ["ipv4_addr", "inet_service"]}}},
        {"add": _chain("prerouting", "prerouting")},
        {"add": _chain("output", "output")},
        {"flush": {"chain": {**T, "name": "prerouting"}}},
        {"flush": {"chain": {**T, "name": "output"}}},
        _notrack("prerouting", "daddr"),
        _notrack("output", "saddr"),
        {"add": _element(local_ip, port)},
    ]


def ensure(local_ip: str, port: int) -> None:
    """VXLAN to and from `local_ip` on UDP `port` is not tracked (idempotent)."""
    Nft().run(ensure_batch(local_ip, port))


def release(local_ip: str, port: int) -> None:
    """Forget one VTEP address . port (gone already is fine); the empty table stays."""
    try:
        Nft().run([{"delete": _element(local_ip, port)}])
    except (NftError, errors.CniError):  # no table or element: nothing to release
        pass
