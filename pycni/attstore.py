"""Small per-attachment records kept by plugins under the state dir.

<state>/<kind>/<network>/<containerID>:<ifname>.json  (':' can appear in neither name)

A plugin writes its record *before* it creates what the record names (a veth name, a
set of firewall elements), so that after a SIGKILL at any point DEL and GC still know
what may exist. Writes are atomic (temp file + rename) and not fsync'd: the records
describe kernel objects, which a power loss removes too, while a SIGKILL leaves the
written data in the page cache.
"""

from __future__ import annotations

import os

from pycni import fastjson
from pycni.atomicfile import write_atomic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _dir(kind: str, network: str) -> str:
    from pycni.firewall.base import state_dir

    return os.path.join(state_dir(), kind, network)


def path(kind: str, network: str, container_id: str, ifname: str) -> str:
    return os.path.join(_dir(kind, network), f"{container_id}:{ifname}.json")


def save(kind: str, network: str, container_id: str, ifname: str, data: dict[str, Any]) -> None:
    p = path(kind, network, container_id, ifname)
    write_atomic(p, fastjson.dumps(data), 0o600, dir_mode=0o700)


def load(kind: str, network: str, container_id: str, ifname: str) -> dict[str, Any] | None:
    try:
        with open(path(kind, network, container_id, ifname), encoding="utf-8") as fh:
            data = fastjson.loads(fh.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def delete(kind: str, network: str, container_id: str, ifname: str) -> None:
    try:
        os.unlink(path(kind, network, container_id, ifname))
    except OSError:
        pass


def entries(kind: str, network: str) -> list[tuple[str, str]]:
    """(containerID, ifname) of every record of `kind` on `network`."""
    try:
        names = os.listdir(_dir(kind, network))
    except OSError:
        return []
    out = []
    for name in names:
        if name.endswith(".json") and ":" in name:
            cid, _, ifname = name[: -len(".json")].partition(":")
            out.append((cid, ifname))
    return out
