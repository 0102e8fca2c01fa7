"""Container records: what `netctl ps/inspect/port/rm` read and `netctl run` writes.

One JSON file per container under <run>/containers/<id>.json (the run dir is tmpfs on a
real host, so a reboot forgets live containers, as it should; their leases and cached
results in the lib dir are then reclaimed by `netctl system gc`). Writes are atomic
(temp + rename). Liveness is never trusted from the file: a record says "running" only
while its supervisor process is alive, so a `kill -9` of netctl or of the supervisor
shows up as "exited" at the next `ps`.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pycni.runtime.paths import Paths

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass
class Attachment:
    """One network interface of the container, as CNI returned it."""

    network: str
    ifname: str = "eth0"
    ips: list[str] = field(default_factory=list)  # CIDR form, e.g. 172.17.0.2/16
    gateways: list[str] = field(default_factory=list)
    mac: str = ""
    host_veth: str = ""


@dataclass
class PublishedPort:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""  # "0.0.0.0" / "::" / a specific address


@dataclass
class ContainerRecord:
    """netctl's own state file (not a wire format: plain dataclasses, no pydantic on
    the `netctl run` path, which starts one Python process per container)."""

    id: str
    name: str
    command: list[str]
    created: float = field(default_factory=time.time)
    network_mode: str = "bridge"  # none | host | bridge | <network name> | container:<name>
    netns: str = ""  # path of the netns bind mount ("" for host mode)
    owns_netns: bool = True  # False for container:<name> and host modes
    hostname: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    ports: list[PublishedPort] = field(default_factory=list)
    cap_args: dict[str, Any] = field(default_factory=dict)  # what CNI got, reused for DEL
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    detach: bool = False
    auto_remove: bool = False
    pid: int = 0  # the workload
    supervisor_pid: int = 0  # netctl itself (foreground) or the -d supervisor
    supervisor_start: str = ""  # /proc/<pid>/stat start time, guards against pid reuse
    status: str = "created"  # created | running | exited | removing
    exit_code: int | None = None
    started: float = 0.0
    finished: float = 0.0
    torn_down: bool = False  # CNI DEL done and netns removed
    log_path: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ContainerRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a container record must be a JSON object")
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["attachments"] = [Attachment(**a) for a in data.get("attachments") or []]
        data["ports"] = [PublishedPort(**p) for p in data.get("ports") or []]
        return cls(**data)


def new_id() -> str:
    return secrets.token_hex(32)


def valid_name(name: str) -> bool:
    """Docker's rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+."""
    return (
        len(name) >= 1
        and name[0].isascii()
        and name[0].isalnum()
        and all(c in NAME_CHARS for c in name)
    )


_ADJ = [
    "brave",
    "calm",
    "eager",
    "fond",
    "jolly",
    "keen",
    "lucid",
    "merry",
    "nifty",
    "quirky",
    "sharp",
    "witty",
]
_NOUN = [
    "bohr",
    "curie",
    "dijkstra",
    "euler",
    "hopper",
    "knuth",
    "lovelace",
    "noether",
    "ritchie",
    "turing",
]


def random_name() -> str:
    return f"{secrets.choice(_ADJ)}_{secrets.choice(_NOUN)}_{secrets.randbelow(1000)}"


def process_start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat: identifies a process beyond its pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            data = fh.read()
    except OSError:
        return ""
    return data.rsplit(")", 1)[1].split()[19]


def alive(pid: int, start: str) -> bool:
    """The process `pid` is the one that started at `start` and has not exited
    (a zombie waiting for a parent that never reaps it counts as exited)."""
    if pid <= 0 or not start:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and fields[19] == start


class ContainerStore:
    def __init__(self, paths: Paths | None = None) -> None:
        self.paths = paths or Paths()
        self.dir = self.paths.containers

    def _path(self, cid: str) -> str:
        return os.path.join(self.dir, f"{cid}.json")

    def save(self, rec: ContainerRecord) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        path = self._path(rec.id)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(rec.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def delete(self, cid: str) -> None:
        try:
            os.unlink(self._path(cid))
        except FileNotFoundError:
            pass

    def all(self) -> list[ContainerRecord]:
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.dir, name), encoding="utf-8") as fh:
                    rec = ContainerRecord.from_json(fh.read())
            except (OSError, ValueError, TypeError):
                continue
            out.append(self.refresh(rec))
        out.sort(key=lambda r: r.created, reverse=True)
        return out

    def refresh(self, rec: ContainerRecord) -> ContainerRecord:
        """A record whose supervisor died without finishing reads as exited."""
        if (
            rec.status in ("running", "created")
            and rec.supervisor_pid
            and not alive(rec.supervisor_pid, rec.supervisor_start)
        ):
            rec.status = "exited"
            if rec.exit_code is None:
                rec.exit_code = 137  # killed: as docker reports a SIGKILLed container
        return rec

    def find(self, ref: str) -> ContainerRecord | None:
        """By name, full ID or unique ID prefix (as docker does)."""
        records = self.all()
        for rec in records:
            if rec.name == ref or rec.id == ref:
                return rec
        matches = [r for r in records if r.id.startswith(ref)] if len(ref) >= 3 else []
        return matches[0] if len(matches) == 1 else None

    def attached_to(self, network: str) -> list[ContainerRecord]:
        return [
            r
            for r in self.all()
            if any(a.network == network for a in r.attachments) and not r.torn_down
        ]
