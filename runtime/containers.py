"""Container records: what `netctl ps/inspect/port/rm` read and `netctl run` writes.

One JSON file per container under <run>/containers/<id>.json (the run dir is tmpfs on a
real host, so a reboot forgets live containers, as it should; their leases and cached
results in the lib dir are then reclaimed by `netctl system gc`). Writes are atomic
(temp + rename). Liveness is never trusted from the file: a record says "running" only
while its supervisor process is alive, so a `kill -9` of netctl or of the supervisor
shows up as "exited" at the next `ps`.
"""

from __future__ import annotations

import os
import time

from pycni import names
from pycni.atomicfile import write_atomic
from pycni.firewall.base import PortMapping
from pycni.runtime.paths import Paths

TYPE_CHECKING = False  # typing, dataclasses, json and secrets each cost more than `ps` itself
if TYPE_CHECKING:
    from typing import Any

NAME_CHARS = names.NAME_CHARS


class _Plain:
    """Fields, equality and repr from the class's annotations-free FIELDS list: the
    records are read by `netctl ps` and `port`, whose whole run costs less than
    importing dataclasses."""

    FIELDS: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Plain)
            and type(other) is type(self)
            and self.to_dict() == other.to_dict()
        )

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({inner})"


def _plain(value: Any) -> Any:
    if isinstance(value, _Plain):
        return value.to_dict()
    if isinstance(value, PortMapping):
        return value.to_record()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Attachment(_Plain):
    """One network interface of the container, as CNI returned it."""

    FIELDS = (
        "network",
        "ifname",
        "ips",
        "gateways",
        "mac",
        "host_veth",
        "aliases",
        "gw_priority",
        "internal",
        "cap_args",
        "pending",
    )

    def __init__(
        self,
        network: str,
        ifname: str = "eth0",
        ips: list[str] | None = None,  # CIDR form, e.g. 172.17.0.2/16
        gateways: list[str] | None = None,
        mac: str = "",
        host_veth: str = "",
        aliases: list[str] | None = None,  # --network-alias / connect --alias (DNS names)
        gw_priority: int = 0,  # Docker's gw-priority: the highest gives the default route
        internal: bool = False,  # the network was --internal when attached
        cap_args: dict[str, Any] | None = None,  # what CNI got for a second network (ips, mac)
        pending: bool = False,  # connected while stopped: recorded, not attached
    ) -> None:
        self.network = network
        self.ifname = ifname
        self.ips: list[str] = list(ips or [])
        self.gateways: list[str] = list(gateways or [])
        self.mac = mac
        self.host_veth = host_veth
        self.aliases: list[str] = list(aliases or [])
        self.gw_priority = gw_priority
        self.internal = internal
        self.cap_args: dict[str, Any] = dict(cap_args or {})
        self.pending = pending


class ContainerRecord(_Plain):
    """netctl's own state file (not a wire format: plain classes, no pydantic on the
    `netctl run` path, which starts one Python process per container)."""

    FIELDS = (
        "id",
        "name",
        "command",
        "created",
        "network_mode",
        "netns",
        "owns_netns",
        "hostname",
        "attachments",
        "ports",
        "cap_args",
        "dns",
        "dns_search",
        "dns_options",
        "extra_hosts",
        "detach",
        "auto_remove",
        "pid",
        "pid_start",
        "caps",
        "supervisor_pid",
        "supervisor_start",
        "status",
        "exit_code",
        "started",
        "finished",
        "torn_down",
        "log_path",
        "env",
        "workdir",
        "user",
        "interactive",
        "tty",
    )

    def __init__(
        self,
        id: str,
        name: str,
        command: list[str],
        created: float | None = None,
        network_mode: str = "bridge",  # none | host | bridge | <network name> | container:<name>
        netns: str = "",  # path of the netns bind mount ("" for host mode)
        owns_netns: bool = True,  # False for container:<name> and host modes
        hostname: str = "",
        attachments: list[Attachment] | None = None,
        ports: list[PortMapping] | None = None,
        cap_args: dict[str, Any] | None = None,  # what CNI got, reused for DEL
        dns: list[str] | None = None,
        dns_search: list[str] | None = None,
        dns_options: list[str] | None = None,
        extra_hosts: list[str] | None = None,
        detach: bool = False,
        auto_remove: bool = False,
        pid: int = 0,  # the container's init (PID 1 of its PID namespace), host view
        pid_start: str = "",  # /proc/<pid>/stat start time of that init
        caps: list[int] | None = None,  # the workload's capabilities (bounding set)
        supervisor_pid: int = 0,  # netctl itself (foreground) or the -d supervisor
        supervisor_start: str = "",  # /proc/<pid>/stat start time, guards against pid reuse
        status: str = "created",  # created | running | exited | removing
        exit_code: int | None = None,
        started: float = 0.0,
        finished: float = 0.0,
        torn_down: bool = False,  # CNI DEL done and netns removed
        log_path: str = "",
        env: list[str] | None = None,  # the workload's whole environment, KEY=VALUE
        workdir: str = "",  # -w ("" : netctl's own working directory)
        user: str = "",  # -u as given ("" : root)
        interactive: bool = False,  # -i
        tty: bool = False,  # -t
    ) -> None:
        self.id = id
        self.name = name
        self.command = command
        self.created = time.time() if created is None else created
        self.network_mode = network_mode
        self.netns = netns
        self.owns_netns = owns_netns
        self.hostname = hostname
        self.attachments: list[Attachment] = list(attachments or [])
        self.ports: list[PortMapping] = list(ports or [])
        self.cap_args: dict[str, Any] = dict(cap_args or {})
        self.dns: list[str] = list(dns or [])
        self.dns_search: list[str] = list(dns_search or [])
        self.dns_options: list[str] = list(dns_options or [])
        self.extra_hosts: list[str] = list(extra_hosts or [])
        self.detach = detach
        self.auto_remove = auto_remove
        self.pid = pid
        self.pid_start = pid_start
        self.caps: list[int] = list(caps or [])
        self.supervisor_pid = supervisor_pid
        self.supervisor_start = supervisor_start
        self.status = status
        self.exit_code = exit_code
        self.started = started
        self.finished = finished
        self.torn_down = torn_down
        self.log_path = log_path
        self.env: list[str] = list(env or [])
        self.workdir = workdir
        self.user = user
        self.interactive = interactive
        self.tty = tty

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_json(self) -> str:
        from pycni import fastjson

        return fastjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ContainerRecord:
        from pycni import fastjson

        data = fastjson.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a container record must be a JSON object")
        data = {k: v for k, v in data.items() if k in cls.FIELDS}
        data["attachments"] = [Attachment(**a) for a in data.get("attachments") or []]
        data["ports"] = [PortMapping(**p) for p in data.get("ports") or []]
        return cls(**data)


def new_id() -> str:
    return os.urandom(32).hex()  # what secrets.token_hex(32) returns


def valid_name(name: str) -> bool:
    """Docker's rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (pycni.names)."""
    return names.valid_name(name)


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
    # os.urandom rather than secrets (which loads random, hashlib and hmac): a name needs
    # no cryptographic quality, and the modulo bias over 2**32 is nil.
    adj, noun, n = (int.from_bytes(os.urandom(4), "big") for _ in range(3))
    return f"{_ADJ[adj % len(_ADJ)]}_{_NOUN[noun % len(_NOUN)]}_{n % 1000}"


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
        # No fsync: the run dir is tmpfs on a real host and a reboot is meant to forget
        # these records.
        write_atomic(self._path(rec.id), rec.to_json(), 0o644, dir_mode=0o700)

    def delete(self, cid: str) -> None:
        try:
            os.unlink(self._path(cid))
        except FileNotFoundError:
            pass

    def all(self) -> list[ContainerRecord]:
        try:
            fnames = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        out = []
        for name in fnames:
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
        """The kernel's truth: a container runs while its init (and so any of its
        processes) runs, whatever happened to its supervisor; a record whose supervisor
        and init are both gone without finishing reads as exited."""
        if (
            rec.status in ("running", "created")
            and rec.supervisor_pid
            and not alive(rec.supervisor_pid, rec.supervisor_start)
            and not (rec.pid and alive(rec.pid, rec.pid_start))
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
            if any(a.network == network and not a.pending for a in r.attachments)
            and not r.torn_down
        ]
