"""macspoofchk: a container may only send frames with its own source MAC.

One nftables table of our own in the bridge family, `table bridge pycni_spoof`; a base
chain at the bridge prerouting hook sends each container port to a verdict map keyed by
the host veth's name, and each attachment gets one small chain:
`ether saddr <container MAC> return; drop` (ARP sender MACs included, so ARP cache
poisoning with another MAC fails too). One transaction per ADD/DEL, structured (JSON)
input only.
"""

from __future__ import annotations

import os

from pycni import errors, fastjson

TABLE = "pycni_spoof"
FAMILY = "bridge"


def _chain(network: str, container_id: str, ifname: str) -> str:
    import hashlib

    digest = hashlib.sha256(f"{network}\0{container_id}\0{ifname}".encode()).hexdigest()[:16]
    return f"att-{digest}"


def _base() -> list[dict[str, object]]:
    return [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {
            "add": {
                "chain": {
                    "family": FAMILY,
                    "table": TABLE,
                    "name": "prerouting",
                    "type": "filter",
                    "hook": "prerouting",
                    "prio": -300,
                    "policy": "accept",
                }
            }
        },
        {
            "add": {
                "map": {
                    "family": FAMILY,
                    "table": TABLE,
                    "name": "ports",
                    "type": "ifname",
                    "map": "verdict",
                }
            }
        },
    ]


def _run(batch: list[dict[str, object]]) -> None:
    from pycni.firewall import nft_transport

    nft_transport.apply({"nftables": batch})


def add(network: str, container_id: str, ifname: str, host_veth: str, mac: str) -> None:
    chain = _chain(network, container_id, ifname)
    comment = f"{network} {container_id} {ifname}"[:120]
    batch = _base()
    batch += [
        {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}},
        {"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}},
        {
            "add": {
                "rule": {
                    "family": FAMILY,
                    "table": TABLE,
                    "chain": chain,
                    "comment": comment,
                    "expr": [
                        {
                            "match": {
                                "op": "==",
                                "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                                "right": mac,
                            }
                        },
                        {"return": None},
                    ],
                }
            }
        },
        {
            "add": {
                "rule": {
                    "family": FAMILY,
                    "table": TABLE,
                    "chain": chain,
                    "comment": comment,
                    "expr": [{"drop": None}],
                }
            }
        },
        {
            "add": {
                "element": {
                    "family": FAMILY,
                    "table": TABLE,
                    "name": "ports",
                    "elem": [[host_veth, {"jump": {"target": chain}}]],
                }
            }
        },
    ]
    _ensure_dispatch(batch)
    _run(batch)
    _save(network, container_id, ifname, host_veth, mac)


def _ensure_dispatch(batch: list[dict[str, object]]) -> None:
    # The dispatch rule is added once: flush-and-refill the base chain in the same
    # transaction keeps it exactly one rule, whatever ran before.
    batch.insert(3, {"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": "prerouting"}}})
    batch.insert(
        4,
        {
            "add": {
                "rule": {
                    "family": FAMILY,
                    "table": TABLE,
                    "chain": "prerouting",
                    "expr": [{"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@ports"}}],
                }
            }
        },
    )


def _state_path(network: str, container_id: str, ifname: str) -> str:
    from pycni.firewall.base import state_dir

    return os.path.join(state_dir(), "spoofcheck", network, f"{container_id}-{ifname}.json")


def _save(network: str, container_id: str, ifname: str, host_veth: str, mac: str) -> None:
    path = _state_path(network, container_id, ifname)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(fastjson.dumps({"hostVeth": host_veth, "mac": mac}))
    os.replace(tmp, path)


def _load(network: str, container_id: str, ifname: str) -> dict[str, str] | None:
    try:
        with open(_state_path(network, container_id, ifname), encoding="utf-8") as fh:
            obj = fastjson.loads(fh.read())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def delete(network: str, container_id: str, ifname: str) -> None:
    saved = _load(network, container_id, ifname)
    chain = _chain(network, container_id, ifname)
    batch: list[dict[str, object]] = _base()
    batch.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}})
    if saved and saved.get("hostVeth"):
        # Adding then deleting the element makes the delete succeed whether or not it exists.
        elem = [[saved["hostVeth"], {"jump": {"target": chain}}]]
        batch.append(
            {"add": {"element": {"family": FAMILY, "table": TABLE, "name": "ports", "elem": elem}}}
        )
        batch.append(
            {
                "delete": {
                    "element": {
                        "family": FAMILY,
                        "table": TABLE,
                        "name": "ports",
                        "elem": [saved["hostVeth"]],
                    }
                }
            }
        )
    batch.append({"delete": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}})
    try:
        _run(batch)
    except errors.CniError:
        raise
    try:
        os.unlink(_state_path(network, container_id, ifname))
    except OSError:
        pass


def gc(network: str, valid: set[tuple[str, str]]) -> None:
    directory = os.path.dirname(_state_path(network, "x", "y"))
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.endswith(".json"):
            continue
        stem = name[: -len(".json")]
        cid, _, ifname = stem.rpartition("-")
        if (cid, ifname) not in valid:
            delete(network, cid, ifname)
