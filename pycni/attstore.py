"""The interface plugins' per-attachment records (bridge, ptp, host-device), in the one
record store (`pycni.recordstore`), one root per plugin:

    <state>/<kind>/<network>/<containerID>-<ifname>.json    (parts percent-encoded)

A plugin writes its record *before* it creates what the record names, so that after a
SIGKILL at any point DEL and GC still know what may exist. Records of earlier versions
(`<containerID>:<ifname>.json`, unencoded) are still read, released and listed.
Reading never fails a verb: a record that cannot be read is no record.
"""

from __future__ import annotations

import os

from pycni import errors, recordstore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _root(kind: str) -> str:
    from pycni.firewall.base import state_dir

    return os.path.join(state_dir(), kind)


def _records(kind: str) -> recordstore.Records:
    return recordstore.Records(_root(kind))


def save(kind: str, network: str, container_id: str, ifname: str, data: dict[str, Any]) -> None:
    _records(kind).save((network, container_id, ifname), data)


def load(kind: str, network: str, container_id: str, ifname: str) -> dict[str, Any] | None:
    key = (network, container_id, ifname)
    records = _records(kind)
    try:
        found = records.load(key)
        if found is None:
            found = records.read(recordstore.legacy_path(records.root, key))
    except errors.IOFailure:
        return None
    return found


def delete(kind: str, network: str, container_id: str, ifname: str) -> None:
    key = (network, container_id, ifname)
    records = _records(kind)
    for path in (records.path(key), recordstore.legacy_path(records.root, key)):
        try:
            recordstore.remove_file(path)
        except errors.IOFailure:
            pass  # what the record named is gone; a file left behind must not fail DEL


def entries(kind: str, network: str) -> list[tuple[str, str]]:
    """(containerID, ifname) of every record of `kind` on `network`."""
    records = _records(kind)
    keys = records.attachments(network) + recordstore.legacy_keys(records.root, network)
    return list(dict.fromkeys((cid, ifname) for _net, cid, ifname in keys))
