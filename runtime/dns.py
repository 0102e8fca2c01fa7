"""The embedded resolver: container names on netctl's user-defined networks.

One process serves every container. It opens its sockets *inside* each container's
network namespace, on 127.0.0.11:53 (UDP and TCP), as Docker's embedded DNS does: a
socket stays in the namespace it was created in, so one process in the node's namespace
can hold listeners in any number of containers, the host's port 53 stays free (no
conflict with dnsmasq or systemd-resolved) and no DNAT rule is needed (the address is
bound directly; lo carries 127.0.0.0/8). See docs/architecture.md, "Names".

What it answers, for a query from container C (networks N1..Nk of C, the default
`bridge` excluded, as Docker has it):

    NAME, ALIAS, SHORT-ID, HOSTNAME, NAME.NETWORK   A/AAAA of every container on
                                                    a shared network that has it
                                                    (several: all, shuffled)
    reverse (in-addr.arpa / ip6.arpa) of such addresses   PTR NAME.NETWORK
    anything else                                   forwarded: C's --dns (or daemon.json
                                                    dns) from C's namespace, then the
                                                    host's resolv.conf (loopback skipped)
                                                    from the node's; at most 3, bounded
                                                    time, SERVFAIL when none answers;
                                                    nothing forwarded when C is only on
                                                    --internal networks (SERVFAIL)

State is never kept only in memory: the view is rebuilt from netctl's container records
(and the registrations of the `dns` CNI plugin under <run>/dns/cni/) on every `reload`
sent to the control socket, so a restarted resolver loses nothing. netctl starts it on
demand (`ensure()`), and it exits once no container needs it.

Wire format: dnspython (a well-kept, strict parser: compression pointers must point
backwards, so loops are impossible; every malformation is an exception). It is imported
only by this process, never on the plugin or `netctl run` path. A response cache keyed
by (client, query bytes after the ID) answers repeated questions without parsing.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pycni import unixpath
from pycni.runtime.containers import ContainerRecord, ContainerStore
from pycni.runtime.paths import Paths

RESOLVER_IP = "127.0.0.11"
PORT = 53
TTL = 600
MAX_UPSTREAMS = 3
FORWARD_BUDGET = 4.0  # seconds for all upstreams of one query together
UPSTREAM_TIMEOUT = 2.0  # one upstream
TCP_IDLE = 5.0  # a TCP connection must deliver a whole query within this
MAX_TCP_PER_CLIENT = 32
MAX_FORWARD_QUEUE = 512
CACHE_SIZE = 8192
#: a longer query is answered, never cached (a cache key holds the whole query: 8192 keys
#: of a hostile container's 64 KB queries would be half a gigabyte)
MAX_CACHED_QUERY = 512
REMOTE_POLL = 0.25  # seconds between looks at the overlay agents' mirrors of remote names
DEFAULT_NETWORK = "bridge"


# -- the view: who answers to which name (pure, from records) ------------------------------


@dataclass
class Client:
    """A network namespace the resolver listens in."""

    key: str  # the netns path
    networks: list[str]
    upstreams: list[tuple[str, bool]]  # (server, dial from the container's namespace)
    internal_only: bool


@dataclass
class View:
    #: network -> lower-case name -> addresses
    names: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: network -> address -> PTR target
    ptr: dict[str, dict[str, str]] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)


def needs_resolver(rec: ContainerRecord) -> bool:
    """A live container with its own namespace on at least one user-defined network."""
    return (
        rec.owns_netns
        and bool(rec.netns)
        and not rec.torn_down
        and rec.status in ("created", "running")
        and any(a.network != DEFAULT_NETWORK and not a.pending for a in rec.attachments)
    )


def names_of(rec_name: str, short_id: str, hostname: str, aliases: Iterable[str]) -> list[str]:
    out = [rec_name, *aliases, short_id]
    if hostname:
        out.append(hostname)
    return [n.lower().rstrip(".") for n in out if n]


def host_upstreams(resolv_text: str) -> list[str]:
    """The host's resolv.conf nameservers a container could use: loopback ones (a
    local dnsmasq, systemd-resolved's 127.0.0.53) are not reachable from it."""
    out = []
    for line in resolv_text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(fields[1].split("%")[0])
            except ValueError:
                continue
            if not addr.is_loopback:
                out.append(str(addr))
    return out


def upstreams_for(rec_dns: list[str], host_resolv: str) -> list[tuple[str, bool]]:
    """--dns (or daemon.json dns) first, dialled from the container's namespace; then
    the host's, dialled from the node's; at most MAX_UPSTREAMS."""
    out: list[tuple[str, bool]] = []
    for server in rec_dns:
        try:
            if ipaddress.ip_address(server).is_loopback:
                continue  # the container's own loopback: that would be us
        except ValueError:
            continue
        out.append((server, True))
    if not out:
        out = [(s, False) for s in host_upstreams(host_resolv)]
    return out[:MAX_UPSTREAMS]


@dataclass
class Registration:
    """What the `dns` CNI plugin recorded for a container of another runtime."""

    network: str
    netns: str
    names: list[str]
    ips: list[str]
    internal: bool = False
    dns: list[str] = field(default_factory=list)


def build_view(
    records: Iterable[ContainerRecord],
    registrations: Iterable[Registration] = (),
    host_resolv: str = "",
    handles: set[str] | None = None,
    own_netns_dir: str = "",
    remote: dict[str, list[tuple[list[str], list[str]]]] | None = None,
) -> View:
    """What the resolver answers. netctl's records are the truth for netctl's own
    containers: the dns plugin's registration of one of them (a namespace under
    `own_netns_dir`) only counts while its record exists. `remote`: {overlay network:
    [(names, addresses)]} of containers on the network's other hosts (the overlay
    agent's mirror of etcd); a name both here and there answers every address."""
    view = View()

    def add(network: str, names: list[str], ips: list[str], ptr_name: str) -> None:
        table = view.names.setdefault(network, {})
        for n in [*names, f"{names[0]}.{network.lower()}"]:
            for ip in ips:
                if ip not in table.setdefault(n, []):
                    table[n].append(ip)
        for ip in ips:
            view.ptr.setdefault(network, {}).setdefault(ip, ptr_name)

    for rec in records:
        if not needs_resolver(rec):
            continue
        nets = []
        internal = True
        for att in rec.attachments:
            if att.pending or att.network == DEFAULT_NETWORK:
                if att.network == DEFAULT_NETWORK and not att.pending:
                    internal = False
                continue
            nets.append(att.network)
            internal = internal and att.internal
            ips = [ip.split("/")[0] for ip in att.ips]
            add(
                att.network,
                names_of(rec.name, rec.short_id, rec.hostname, att.aliases),
                ips,
                f"{rec.name}.{att.network}",
            )
        view.clients[rec.netns] = Client(
            rec.netns, nets, upstreams_for(rec.dns, host_resolv), internal
        )
    own = set(view.clients)  # netctl's containers: their plugin record is a duplicate
    for reg in registrations:
        if reg.netns in own or not reg.netns:
            continue
        if own_netns_dir and reg.netns.startswith(own_netns_dir.rstrip("/") + "/"):
            continue  # a netctl container whose record is gone: its registration is stale
        if not os.path.exists(reg.netns) and reg.netns not in (handles or set()):
            continue
        names = [n.lower().rstrip(".") for n in reg.names if n.rstrip(".")]
        if names:  # a container without a name still gets forwarding (its Client below)
            add(reg.network, names, reg.ips, f"{names[0]}.{reg.network}")
        client = view.clients.get(reg.netns)
        if client is None:
            view.clients[reg.netns] = Client(
                reg.netns, [reg.network], upstreams_for(reg.dns, host_resolv), reg.internal
            )
        else:
            if reg.network not in client.networks:
                client.networks.append(reg.network)
            client.internal_only = client.internal_only and reg.internal
    for network, entries in (remote or {}).items():
        for names, ips in entries:
            if names and ips:
                add(network, names, ips, f"{names[0]}.{network}")
    return view


def remote_names_paths(networks: Iterable[str]) -> dict[str, str]:
    """{network: the overlay agent's mirror of the other hosts' names} for each network
    that may be an overlay (a file that does not exist reads as no names)."""
    from pycni.overlay.names import mirror_path

    return {net: mirror_path(net) for net in sorted(set(networks)) if net != DEFAULT_NETWORK}


def load_remote_names(paths: dict[str, str]) -> dict[str, list[tuple[list[str], list[str]]]]:
    from pycni.overlay.names import read_mirror

    out = {}
    for network, path in paths.items():
        entries = read_mirror(path)
        if entries:
            out[network] = entries
    return out


def load_registrations(directory: str) -> list[Registration]:
    out = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    for fname in names:
        if not fname.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, fname), encoding="utf-8") as fh:
                data = json.load(fh)
            out.append(
                Registration(
                    network=str(data["network"]),
                    netns=str(data["netns"]),
                    names=[str(n) for n in data.get("names", [])],
                    ips=[str(ipaddress.ip_address(i)) for i in data.get("ips", [])],
                    internal=bool(data.get("internal", False)),
                    dns=[str(d) for d in data.get("dns", [])],
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


# -- answering (dnspython) ------------------------------------------------------------------


class Answerer:
    """Local answers from a View; None when the question is not ours (forward it)."""

    def __init__(self, view: View) -> None:
        import dns.flags
        import dns.message
        import dns.name
        import dns.opcode
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset

        self.dns = dns
        self.view = view

    def lookup(self, client: Client, qname: str) -> list[str] | None:
        found: list[str] | None = None
        for net in client.networks:
            ips = self.view.names.get(net, {}).get(qname)
            if ips:
                found = (found or []) + [ip for ip in ips if ip not in (found or [])]
        return found

    def reverse(self, client: Client, qname: str) -> str | None:
        import dns.reversename

        try:
            addr = str(dns.reversename.to_address(self.dns.name.from_text(qname)))
            addr = str(ipaddress.ip_address(addr))
        except Exception:
            return None
        for net in client.networks:
            target = self.view.ptr.get(net, {}).get(addr)
            if target:
                return target
        return None

    def answer(self, client: Client, query: Any) -> tuple[Any, bool] | None:
        """(response, cacheable) for a local name; None to forward."""
        dns = self.dns
        q = query.question[0]
        qname = q.name.to_text(omit_final_dot=True).lower()
        if q.rdclass != dns.rdataclass.IN:
            return None
        if q.rdtype == dns.rdatatype.PTR and qname.endswith((".in-addr.arpa", ".ip6.arpa")):
            target = self.reverse(client, qname)
            if target is None:
                return None
            resp = dns.message.make_response(query, recursion_available=True)
            resp.flags |= dns.flags.AA
            resp.answer.append(
                dns.rrset.from_text(q.name, TTL, "IN", "PTR", target.rstrip(".") + ".")
            )
            return resp, True
        ips = self.lookup(client, qname)
        if ips is None:
            return None
        resp = dns.message.make_response(query, recursion_available=True)
        resp.flags |= dns.flags.AA
        want = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(q.rdtype)
        if want is None and q.rdtype != dns.rdatatype.ANY:
            return resp, True  # the name exists, no data of that type
        chosen = [ip for ip in ips if want is None or ipaddress.ip_address(ip).version == want]
        random.shuffle(chosen)
        by_type: dict[str, list[str]] = {}
        for ip in chosen:
            by_type.setdefault("A" if ":" not in ip else "AAAA", []).append(ip)
        for rtype, values in by_type.items():
            resp.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", rtype, values))
        return resp, len(chosen) <= 1


def formerr(data: bytes, rcode: int = 1) -> bytes | None:
    """FORMERR (or `rcode`) from the query's header alone, for a query dnspython
    cannot read or an opcode we do not serve (None: not even a header, or it is a
    response: drop it)."""
    if len(data) < 12:
        return None
    qid, flags = struct.unpack("!HH", data[:4])
    if flags & 0x8000:
        return None
    opcode = flags & 0x7800
    return struct.pack("!HHHHHH", qid, 0x8000 | opcode | (flags & 0x0100) | rcode, 0, 0, 0, 0)


def rcode_only(query: Any, rcode: Any) -> bytes:
    import dns.message

    resp = dns.message.make_response(query, recursion_available=True)
    resp.set_rcode(rcode)
    return bytes(resp.to_wire())


def to_wire(resp: Any, query: Any, tcp: bool) -> bytes:
    """The response, truncated (TC) to what a UDP client can take."""
    limit = 65535 if tcp else max(512, query.payload if query.edns >= 0 else 512)
    try:
        return bytes(resp.to_wire(max_size=limit))
    except Exception:  # dns.exception.TooBig
        import dns.flags

        resp.answer.clear()
        resp.flags |= dns.flags.TC
        return bytes(resp.to_wire())


# -- the server ------------------------------------------------------------------------------


class Listener:
    """A client's sockets, created inside its namespace."""

    def __init__(self, client: Client, handle: int | None = None) -> None:
        from pycni import netns

        self.client = client
        self.fd = os.dup(handle) if handle is not None else netns.open_netns(client.key)
        try:
            with netns.entered(self.fd):
                self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            for s in (self.udp, self.tcp):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((RESOLVER_IP, PORT))
                except OSError as exc:
                    if exc.errno != errno.EADDRNOTAVAIL:
                        raise
                    # lo still down (a runtime that brings it up after the CNI ADD):
                    # 127.0.0.0/8 is local only once it is up
                    self._lo_up()
                    s.bind((RESOLVER_IP, PORT))
                s.setblocking(False)
            self.tcp.listen(64)
        except BaseException:
            self.close()
            raise
        self.conns: dict[socket.socket, TcpConn] = {}

    def _lo_up(self) -> None:
        from pycni import netlink

        with netlink.Netlink(netns_fd=self.fd) as nl:
            lo = nl.link("lo")
            if lo is not None and not lo.up:
                nl.set_link(lo.index, up=True)

    def close(self) -> None:
        for s in (getattr(self, "udp", None), getattr(self, "tcp", None)):
            if s is not None:
                s.close()
        for conn in list(getattr(self, "conns", {}).values()):
            conn.sock.close()
        os.close(self.fd)


@dataclass
class Forward:
    """A UDP query waiting for an upstream."""

    listener: Listener
    reply_to: Any
    data: bytes
    query: Any
    upstreams: list[tuple[str, bool]]
    deadline: float
    expires: float = 0.0
    key: tuple[socket.socket, bytes] | None = None


@dataclass
class TcpConn:
    sock: socket.socket
    listener: Listener
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)


class Resolver:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.dir = resolver_dir(paths)
        self.sel = selectors.DefaultSelector()
        self.listeners: dict[str, Listener] = {}
        self.view = View()
        self.answerer = Answerer(self.view)
        self.cache: dict[tuple[str, bytes], list[bytes]] = {}
        #: questions that were forwarded (not local names): forwarded again unparsed
        self.forwarded: set[tuple[str, bytes]] = set()
        self.done: list[tuple[Listener, Any, bytes]] = []  # (listener, peer|conn, wire)
        self.done_lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        self.pending = 0  # TCP forwards in worker threads
        self.inflight: dict[tuple[socket.socket, bytes], Forward] = {}
        self.upstream_socks: dict[tuple[str, str], socket.socket] = {}
        self.stop = False
        self.signature: tuple[int, ...] = ()
        #: the overlay networks' mirrors of other hosts' names, watched more often (names
        #: across hosts appear within a second) and their (mtime, inode) when last read
        self.remote_paths: dict[str, str] = {}
        self.remote_signature: tuple[tuple[int, int], ...] = ()
        #: namespaces handed over by fd (their path may not be visible from here)
        self.handles: dict[str, int] = {}
        #: handles whose path this process could see when they came: for those the path
        #: going away means the namespace's owner dropped it (a runtime that never ran
        #: DEL); a handle must not keep such a namespace, and this process, alive
        self.visible: set[str] = set()
        self.sema = threading.BoundedSemaphore(32)

    # -- state -----------------------------------------------------------------------

    def _records_signature(self) -> tuple[int, ...]:
        """When the records were last added or removed (the directories' mtimes)."""
        out = []
        for directory in (self.paths.containers, os.path.join(self.dir, "cni")):
            try:
                out.append(os.stat(directory).st_mtime_ns)
            except OSError:
                out.append(0)
        return tuple(out)

    def _remote_signature(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in self.remote_paths.values():
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_ino))
            except OSError:
                out.append((0, 0))
        return tuple(out)

    def reload(self) -> None:
        self.signature = self._records_signature()
        try:
            with open("/etc/resolv.conf", encoding="utf-8") as fh:
                host_resolv = fh.read()
        except OSError:
            host_resolv = ""
        store = ContainerStore(self.paths)
        records = store.all()
        registrations = load_registrations(os.path.join(self.dir, "cni"))
        self.remote_paths = remote_names_paths(
            [a.network for r in records if needs_resolver(r) for a in r.attachments]
            + [r.network for r in registrations]
        )
        self.remote_signature = self._remote_signature()
        view = build_view(
            records,
            registrations,
            host_resolv,
            {k for k in self.handles if k not in self.visible or os.path.exists(k)},
            self.paths.netns_dir,
            load_remote_names(self.remote_paths),
        )
        for key in [k for k in self.handles if k not in view.clients]:
            os.close(self.handles.pop(key))
            self.visible.discard(key)
        for key in list(self.listeners):
            if key not in view.clients:
                self._drop(key)
        for key, client in view.clients.items():
            if key in self.listeners:
                self.listeners[key].client = client
                continue
            try:
                lst = Listener(client, self.handles.get(key))
            except Exception as exc:
                log(f"cannot listen in {key}: {exc}")
                continue
            self.listeners[key] = lst
            self.sel.register(lst.udp, selectors.EVENT_READ, ("udp", lst))
            self.sel.register(lst.tcp, selectors.EVENT_READ, ("accept", lst))
        self.view = view
        self.answerer = Answerer(view)
        self.cache.clear()
        self.forwarded.clear()

    def _drop(self, key: str) -> None:
        for ukey in [k for k in self.upstream_socks if k[0] == key]:
            sock = self.upstream_socks.pop(ukey)
            self.sel.unregister(sock)
            for fkey in [f for f in self.inflight if f[0] is sock]:
                del self.inflight[fkey]
            sock.close()
        lst = self.listeners.pop(key)
        for s in (lst.udp, lst.tcp, *lst.conns):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
        lst.close()

    # -- queries ---------------------------------------------------------------------

    def handle(self, lst: Listener, data: bytes, reply_to: Any, tcp: bool) -> bytes | None:
        """The answer to `data`, or None when it is forwarded (answered later) or dropped."""
        if len(data) < 12:
            return None
        key = (lst.client.key, bytes(data[2:])) if len(data) <= MAX_CACHED_QUERY else None
        if not tcp and key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return data[:2] + random.choice(hit)
            if key in self.forwarded and len(self.inflight) < MAX_FORWARD_QUEUE:
                # the same question was not ours before (the view is unchanged since):
                # straight to the upstreams, without parsing it again
                now = time.monotonic()
                fwd = Forward(lst, reply_to, bytes(data), None, list(lst.client.upstreams),
                              now + FORWARD_BUDGET)  # fmt: skip
                self._send_upstream(fwd, now)
                return None
        flags = struct.unpack("!H", data[2:4])[0]
        if flags & 0x8000:
            return None  # a response sent to us: never answer (no loops)
        if flags & 0x7800:
            return formerr(data, 4)  # NOTIMP: only standard queries (no UPDATE, NOTIFY)
        import dns.exception
        import dns.message
        import dns.opcode
        import dns.rcode

        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return formerr(data)
        except Exception:
            return formerr(data)
        if query.flags & 0x8000:
            return None  # a response sent to us: never answer (no loops)
        if query.opcode() != dns.opcode.QUERY:
            return rcode_only(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return rcode_only(query, dns.rcode.FORMERR)
        try:
            local = self.answerer.answer(lst.client, query)
        except Exception as exc:
            log(f"answer failed: {exc!r}")
            return rcode_only(query, dns.rcode.SERVFAIL)
        if local is not None:
            resp, cacheable = local
            wire = to_wire(resp, query, tcp)
            if not tcp and cacheable and key is not None:
                if len(self.cache) >= CACHE_SIZE:
                    self.cache.clear()
                self.cache[key] = [wire[2:]]
            return wire
        if lst.client.internal_only or not lst.client.upstreams:
            return rcode_only(query, dns.rcode.SERVFAIL)
        if self.pending + len(self.inflight) >= MAX_FORWARD_QUEUE:
            return rcode_only(query, dns.rcode.SERVFAIL)
        if not tcp:
            if key is not None:
                if len(self.forwarded) >= CACHE_SIZE:
                    self.forwarded.clear()
                self.forwarded.add(key)
            now = time.monotonic()
            fwd = Forward(lst, reply_to, bytes(data), query, list(lst.client.upstreams),
                          now + FORWARD_BUDGET)  # fmt: skip
            self._send_upstream(fwd, now)
            return None
        self.pending += 1
        # The thread gets a namespace descriptor of its own: the loop closes the
        # listener's when the container goes (_drop), and its number may then name the
        # next container's namespace, from which this query must never be sent.
        ns_fd = os.dup(lst.fd)
        try:
            threading.Thread(
                target=self._forward,
                args=(lst, ns_fd, bytes(data), query, reply_to, tcp),
                daemon=True,
            ).start()
        except BaseException:
            os.close(ns_fd)
            raise
        return None

    # UDP forwarding: no thread, one connected socket per (container, upstream), kept
    # open and watched by the loop; a query waits in `inflight` under the ID we gave it.

    def _upstream(self, lst: Listener, server: str, in_container: bool) -> socket.socket:
        from pycni import netns

        key = (lst.client.key if in_container else "", server)
        sock = self.upstream_socks.get(key)
        if sock is not None:
            return sock
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        if in_container:
            with netns.entered(lst.fd):
                sock = socket.socket(family, socket.SOCK_DGRAM)
        else:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect((server, PORT))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.upstream_socks[key] = sock
        self.sel.register(sock, selectors.EVENT_READ, ("upstream", key))
        return sock

    def _send_upstream(self, fwd: Forward, now: float) -> None:
        """Ask the next upstream; SERVFAIL once none is left or the budget is spent."""
        while fwd.upstreams and now < fwd.deadline:
            server, in_container = fwd.upstreams.pop(0)
            try:
                sock = self._upstream(fwd.listener, server, in_container)
                qid = os.urandom(2)  # our own ID upstream: a spoofed answer must guess it
                while (sock, qid) in self.inflight:
                    qid = os.urandom(2)
                sock.send(qid + fwd.data[2:])
            except OSError:
                continue  # unreachable from there: the next one
            fwd.key = (sock, qid)
            fwd.expires = min(fwd.deadline, now + UPSTREAM_TIMEOUT)
            self.inflight[fwd.key] = fwd
            return
        servfail = rcode_only(fwd.query, 2) if fwd.query is not None else formerr(fwd.data, 2)
        if servfail is not None:
            self._reply_udp(fwd, servfail)

    def _reply_udp(self, fwd: Forward, wire: bytes) -> None:
        if self.listeners.get(fwd.listener.client.key) is not fwd.listener:
            return
        try:
            fwd.listener.udp.sendto(wire, fwd.reply_to)
        except OSError:
            pass

    def _on_upstream(self, key: tuple[str, str]) -> None:
        sock = self.upstream_socks.get(key)
        if sock is None:
            return
        for _ in range(64):
            try:
                body = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable: the waiting queries expire to the next one
                return
            if len(body) < 12:
                continue
            fwd = self.inflight.pop((sock, body[:2]), None)
            if fwd is not None:
                self._reply_udp(fwd, fwd.data[:2] + body[2:])

    def _expire_forwards(self, now: float) -> None:
        for key in [k for k, f in self.inflight.items() if f.expires <= now]:
            fwd = self.inflight.pop(key)
            self._send_upstream(fwd, now)

    def _forward(
        self, lst: Listener, ns_fd: int, data: bytes, query: Any, reply_to: Any, tcp: bool
    ) -> None:
        import dns.rcode

        answer = None
        try:
            with self.sema:
                deadline = time.monotonic() + FORWARD_BUDGET
                for server, in_container in lst.client.upstreams:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        answer = self._ask(
                            server, in_container, ns_fd, data, tcp, min(left, UPSTREAM_TIMEOUT)
                        )
                    except OSError:
                        answer = None
                    if answer is not None:
                        break
        finally:
            os.close(ns_fd)
        if answer is None:
            answer = rcode_only(query, dns.rcode.SERVFAIL)
        with self.done_lock:
            self.done.append((lst, reply_to, answer))
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def _ask(
        self, server: str, in_container: bool, ns_fd: int, data: bytes, tcp: bool, timeout: float
    ) -> bytes | None:
        from pycni import netns

        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        if in_container:
            with netns.entered(ns_fd):
                s = socket.socket(family, kind)
        else:
            s = socket.socket(family, kind)
        qid = os.urandom(2)  # our own ID upstream: a spoofed answer must guess it
        wire = qid + data[2:]
        with s:
            s.settimeout(timeout)
            s.connect((server, PORT))
            if tcp:
                s.sendall(struct.pack("!H", len(wire)) + wire)
                head = _recv_exact(s, 2)
                body = _recv_exact(s, struct.unpack("!H", head)[0])
            else:
                s.send(wire)
                end = time.monotonic() + timeout
                while True:
                    s.settimeout(max(0.01, end - time.monotonic()))
                    body = s.recv(65535)
                    if body[:2] == qid:
                        break
        if len(body) < 12:
            return None
        return data[:2] + body[2:]

    # -- the loop --------------------------------------------------------------------

    def serve(self) -> None:
        control = self._control_socket()
        self.sel.register(control, selectors.EVENT_READ, ("control", None))
        last_check = last_remote = time.monotonic()
        while not self.stop:
            idle = 0.1 if self.inflight else REMOTE_POLL if self.remote_paths else 1.0
            for key, _ev in self.sel.select(timeout=idle):
                kind, lst = key.data
                try:
                    if kind == "udp":
                        self._on_udp(lst)
                    elif kind == "upstream":
                        self._on_upstream(lst)
                    elif kind == "accept":
                        self._on_accept(lst)
                    elif kind == "tcp":
                        self._on_tcp(lst, key.fileobj)
                    elif kind == "control":
                        self._on_control(control)
                    elif kind == "wake":
                        self._on_wake()
                except Exception as exc:  # never die of one query
                    log(f"{kind}: {exc!r}")
            now = time.monotonic()
            if self.inflight:
                self._expire_forwards(now)
            self._expire_tcp(now)
            if now - last_check > 2.0:
                last_check = now
                self._check_alive()
            elif self.remote_paths and now - last_remote >= REMOTE_POLL:
                last_remote = now
                if self._remote_signature() != self.remote_signature:
                    self.reload()  # another host's container came or went
        control.close()

    def _on_udp(self, lst: Listener) -> None:
        for _ in range(64):  # a burst, then let the others speak
            try:
                data, peer = lst.udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            out = self.handle(lst, data, peer, tcp=False)
            if out is not None:
                try:
                    lst.udp.sendto(out, peer)
                except OSError:
                    pass

    def _on_accept(self, lst: Listener) -> None:
        try:
            sock, _peer = lst.tcp.accept()
        except OSError:
            return
        if len(lst.conns) >= MAX_TCP_PER_CLIENT:
            oldest = min(lst.conns.values(), key=lambda c: c.deadline)
            self._close_conn(oldest)
        sock.setblocking(False)
        conn = TcpConn(sock, lst, time.monotonic() + TCP_IDLE)
        lst.conns[sock] = conn
        self.sel.register(sock, selectors.EVENT_READ, ("tcp", lst))

    def _on_tcp(self, lst: Listener, sock: Any) -> None:
        conn = lst.conns.get(sock)
        if conn is None:
            return
        try:
            chunk = sock.recv(65537)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_conn(conn)
            return
        conn.buf += chunk
        while len(conn.buf) >= 2:
            size = struct.unpack("!H", conn.buf[:2])[0]
            if size < 12:
                self._close_conn(conn)
                return
            if len(conn.buf) < 2 + size:
                return  # the rest must come before the deadline
            data = bytes(conn.buf[2 : 2 + size])
            del conn.buf[: 2 + size]
            conn.deadline = time.monotonic() + TCP_IDLE
            out = self.handle(lst, data, conn, tcp=True)
            if out is not None:
                self._send_tcp(conn, out)

    def _send_tcp(self, conn: TcpConn, wire: bytes) -> None:
        conn.sock.setblocking(True)
        conn.sock.settimeout(1.0)
        try:
            conn.sock.sendall(struct.pack("!H", len(wire)) + wire)
        except OSError:
            self._close_conn(conn)
            return
        finally:
            try:
                conn.sock.setblocking(False)
            except OSError:
                pass

    def _close_conn(self, conn: TcpConn) -> None:
        conn.listener.conns.pop(conn.sock, None)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _expire_tcp(self, now: float) -> None:
        for lst in self.listeners.values():
            for conn in [c for c in lst.conns.values() if c.deadline < now]:
                self._close_conn(conn)

    def _on_wake(self) -> None:
        try:
            os.read(self.wake_r, 4096)
        except OSError:
            pass
        with self.done_lock:
            done, self.done = self.done, []
        for lst, reply_to, wire in done:
            self.pending -= 1
            if self.listeners.get(lst.client.key) is not lst:
                continue
            if isinstance(reply_to, TcpConn):
                if reply_to.sock in lst.conns:
                    self._send_tcp(reply_to, wire)
            else:
                try:
                    lst.udp.sendto(wire, reply_to)
                except OSError:
                    pass

    def _check_alive(self) -> None:
        """Containers whose namespace went away without a reload (a killed supervisor)
        are dropped; with none left and nothing registered, the resolver exits."""
        if not os.path.isdir(self.dir):
            self.stop = True
            return
        gone = [
            k
            for k in self.listeners
            if not os.path.exists(k) and (k in self.visible or k not in self.handles)
        ]
        if gone or self._records_signature() != self.signature:
            self.reload()  # a change nobody told us about (a missed notification)
        if not self.listeners:
            self.stop = True

    # -- control ---------------------------------------------------------------------

    def _control_socket(self) -> socket.socket:
        path = os.path.join(self.dir, "control.sock")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unixpath.bind(s, path, umask=0o077)
        s.listen(16)
        s.setblocking(False)
        return s

    def _on_control(self, control: socket.socket) -> None:
        try:
            conn, _ = control.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2.0)
            try:
                raw, fds, _flags, _addr = socket.recv_fds(conn, 65536, 255)
            except OSError:
                return
            word, _, rest = raw.strip().partition(b" ")
            try:
                keys = json.loads(rest) if rest else []
            except ValueError:
                keys = []
            for key, fd in zip(keys, fds, strict=False):
                old = self.handles.pop(str(key), None)
                if old is not None:
                    os.close(old)
                self.handles[str(key)] = fd
                if os.path.exists(str(key)):
                    self.visible.add(str(key))
                else:
                    self.visible.discard(str(key))
            for fd in fds[len(keys) :]:
                os.close(fd)
            if word == b"reload":
                self.reload()
                if not self.listeners:
                    self.stop = True
                conn.sendall(f"ok {len(self.listeners)}\n".encode())
            elif word == b"stats":
                conn.sendall(
                    json.dumps({"pid": os.getpid(), "clients": sorted(self.listeners)}).encode()
                    + b"\n"
                )
            elif word == b"stop":
                self.stop = True
                conn.sendall(b"ok\n")


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise OSError(errno.ECONNRESET, "upstream closed the connection")
        out += chunk
    return out


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} netctl-dns: {msg}\n")
    sys.stderr.flush()


# -- the client side: netctl starts, reloads and finds it ------------------------------


def resolver_dir(paths: Paths) -> str:
    return os.path.join(paths.run, "dns")


def control(
    paths: Paths, word: str, timeout: float = 5.0, handles: dict[str, int] | None = None
) -> str | None:
    """Send one word to the running resolver; its answer, or None when none runs.
    `handles` ({netns path: open fd}) travel along (SCM_RIGHTS): the resolver may live
    in another mount namespace, where the caller's netns bind mounts are not visible."""
    path = os.path.join(resolver_dir(paths), "control.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        unixpath.connect(s, path)
        keys = list(handles or {})[:250]
        message = f"{word} {json.dumps(keys)}\n".encode()
        if keys and handles is not None:
            socket.send_fds(s, [message], [handles[k] for k in keys])
        else:
            s.sendall(message)
        return s.recv(65536).decode()
    except OSError:
        return None
    finally:
        s.close()


def _open_handles(paths: Paths) -> dict[str, int]:
    """An fd for every namespace that needs names and that this process can open."""
    from pycni import netns

    keys = [r.netns for r in ContainerStore(paths).all() if needs_resolver(r)]
    keys += [r.netns for r in load_registrations(os.path.join(resolver_dir(paths), "cni"))]
    out: dict[str, int] = {}
    for key in keys:
        if key in out:
            continue
        try:
            out[key] = netns.open_netns(key)
        except Exception:
            continue
    return out


def ensure(paths: Paths) -> bool:
    """Bring the resolver in line with netctl's records: started when a container needs
    it and none runs, told to reload otherwise (it exits when nobody needs it). Returns
    once its sockets are open in every container that needs them."""
    handles = _open_handles(paths)
    try:
        return _ensure(paths, handles)
    finally:
        for fd in handles.values():
            os.close(fd)


def _ensure(paths: Paths, handles: dict[str, int]) -> bool:
    needed = any(needs_resolver(r) for r in ContainerStore(paths).all()) or bool(
        load_registrations(os.path.join(resolver_dir(paths), "cni"))
    )
    answer = control(paths, "reload", handles=handles)
    if answer is not None or not needed:
        return answer is not None
    directory = resolver_dir(paths)
    os.makedirs(os.path.join(directory, "cni"), mode=0o700, exist_ok=True)
    import fcntl
    import subprocess

    lock = os.open(
        os.path.join(directory, "start.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if control(paths, "reload", handles=handles) is not None:
            return True
        log_fd = os.open(
            os.path.join(directory, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        try:
            env = dict(os.environ)
            env["NETCTL_RUN_DIR"] = paths.run  # all the resolver reads: records, registrations
            # The resolver runs this very code (the caller may be a plugin that found
            # its package through the path its executable wrote in, not site-packages).
            import pycni

            parent = os.path.dirname(os.path.dirname(os.path.abspath(pycni.__file__)))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH", "")) if p)
            child = subprocess.Popen(
                [sys.executable, "-m", "pycni.runtime.dns"],
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                close_fds=True,
                env=env,
                cwd="/",
            )
        finally:
            os.close(log_fd)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if control(paths, "reload", handles=handles) is not None:
                return True
            if child.poll() is not None:  # it died (its log says why): do not wait on
                return False
            time.sleep(0.02)
        return False
    finally:
        os.close(lock)


def main() -> int:
    import fcntl

    # started from a supervisor that blocks what it forwards: take signals again
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    paths = Paths()
    directory = resolver_dir(paths)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + 5  # a resolver on its way out still holds it
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() > deadline:
                log("another resolver runs already")
                return 0
            time.sleep(0.05)
    with open(os.path.join(directory, "pid"), "w", encoding="ascii") as fh:
        fh.write(f"{os.getpid()}\n")
    resolver = Resolver(paths)
    resolver.reload()
    log(f"serving {len(resolver.listeners)} namespace(s)")
    try:
        resolver.serve()
    finally:
        for key in list(resolver.listeners):
            resolver._drop(key)
        for name in ("control.sock", "pid"):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
        log("no container needs names: exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
