"""host-local's allocation logic: ranges, range sets, and picking an address. No I/O.

A *range* is a slice `rangeStart..rangeEnd` of one subnet, with the gateway the
container will use. A *range set* is a list of ranges of one address family; a
container gets exactly one address from each range set (so two sets, one IPv4 and
one IPv6, give a dual-stack container). Range sets are numbered by their position in
the final list, and that number names the round-robin hint `last_reserved_ip.<n>`.

The allocator talks to the lease store through the small `LeaseStore` protocol below;
`pycni.ipam.store.DiskStore` is the real one, unit tests use an in-memory one.

Addresses that are never handed out, whatever rangeStart/rangeEnd say: the subnet's
network address (for IPv6 the subnet-router anycast address, RFC 4291 2.6.1), every
gateway of the range set, and the IPv4 broadcast address.
"""

from __future__ import annotations

import ipaddress

from pycni import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Protocol

    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
    IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

    class LeaseStore(Protocol):
        """What the allocator needs from a lease store; the caller holds its lock."""

        def held_by(self, container_id: str, ifname: str) -> list[IPAddress]:
            """Addresses leased to (container_id, ifname), or to a legacy bare container_id."""
            ...

        def reserve(self, ip: IPAddress, container_id: str, ifname: str) -> bool:
            """Lease `ip` to the attachment; False when someone already holds it."""
            ...

        def release_ip(self, ip: IPAddress) -> None:
            """Undo a `reserve` of this ADD (rollback after a later range set failed)."""
            ...

        def last_reserved(self, index: int) -> IPAddress | None:
            """The round-robin hint of range set `index`, if any."""
            ...

        def set_last_reserved(self, index: int, ip: IPAddress) -> None: ...


def _family(version: int) -> str:
    return "IPv4" if version == 4 else "IPv6"


class Range:
    """One validated range: addresses `start..end` of `subnet`, handed out with `gateway`."""

    __slots__ = ("end", "gateway", "start", "subnet", "where")

    def __init__(
        self,
        subnet: IPNetwork,
        start: IPAddress,
        end: IPAddress,
        gateway: IPAddress | None,
        where: str = "",
    ) -> None:
        self.subnet = subnet
        self.start = start
        self.end = end
        self.gateway = gateway
        # The config key this range came from, for error messages ("ipam.ranges[0][1]").
        self.where = where

    @classmethod
    def checked(
        cls,
        subnet: IPInterface,
        start: IPAddress | None,
        end: IPAddress | None,
        gateway: IPAddress | None,
        where: str,
    ) -> Range:
        """Validate one range and fill in the defaults (start = network+1, end = the last
        address, minus the broadcast for IPv4, gateway = network+1)."""
        net = subnet.network
        bits = net.max_prefixlen
        if net.prefixlen > bits - 2:
            raise errors.InvalidConfig(
                f"{where}.subnet {net} is too small to allocate from",
                f"use a prefix of /{bits - 2} or shorter: /{bits - 1} and /{bits} leave no "
                "address besides the network and broadcast (or gateway) addresses",
            )
        if subnet.ip != net.network_address:
            raise errors.InvalidConfig(
                f"{where}.subnet {subnet} has host bits set",
                f"for a subnet mask of length {net.prefixlen} the network address is "
                f"{net.network_address}; write {net}",
            )
        for key, value in (("rangeStart", start), ("rangeEnd", end), ("gateway", gateway)):
            if value is not None and value.version != net.version:
                raise errors.InvalidConfig(
                    f"{where}.{key} {value} is not an {_family(net.version)} address "
                    f"like subnet {net}",
                    f"give {key} an address of the subnet's family",
                )
        first = net.network_address + 1
        last = net.broadcast_address - 1 if net.version == 4 else net.broadcast_address
        if start is None:
            start = first
        elif start not in net:
            raise errors.InvalidConfig(
                f"{where}.rangeStart {start} not in network {net}",
                f"rangeStart must be an address of {net}, e.g. {first}",
            )
        if end is None:
            end = last
        elif end not in net:
            raise errors.InvalidConfig(
                f"{where}.rangeEnd {end} not in network {net}",
                f"rangeEnd must be an address of {net}, e.g. {last}",
            )
        if int(start) > int(end):
            raise errors.InvalidConfig(
                f"{where}.rangeStart {start} is after rangeEnd {end}",
                "rangeStart must not be greater than rangeEnd; swap the two values",
            )
        if gateway is None:
            gateway = first
        return cls(net, start, end, gateway, where)

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.start.version and int(self.start) <= int(ip) <= int(self.end)

    def overlaps(self, other: Range) -> bool:
        return (
            self.start.version == other.start.version
            and int(self.start) <= int(other.end)
            and int(other.start) <= int(self.end)
        )

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


class RangeSet:
    """The ranges one address is picked from; all of one family, none overlapping."""

    __slots__ = ("ranges", "reserved", "where")

    def __init__(self, ranges: list[Range], where: str = "") -> None:
        self.ranges = ranges
        self.where = where
        # As integers, so the allocation loop tests them before building address objects.
        reserved: set[int] = set()
        for r in ranges:
            reserved.add(int(r.subnet.network_address))
            if r.subnet.version == 4:
                reserved.add(int(r.subnet.broadcast_address))
            if r.gateway is not None:
                reserved.add(int(r.gateway))
        self.reserved = frozenset(reserved)

    @classmethod
    def checked(cls, ranges: list[Range], where: str) -> RangeSet:
        if not ranges:
            raise errors.InvalidConfig(
                f"{where} is an empty range set",
                'give each range set at least one range, e.g. [{"subnet": "10.1.0.0/24"}]',
            )
        version = ranges[0].subnet.version
        for r in ranges[1:]:
            if r.subnet.version != version:
                raise errors.InvalidConfig(
                    f"{where} mixes IPv4 and IPv6 ranges ({ranges[0].subnet} and {r.subnet})",
                    "a container gets one address per range set; put each family in its "
                    "own range set",
                )
        for i, a in enumerate(ranges):
            for b in ranges[i + 1 :]:
                if a.overlaps(b):
                    raise errors.InvalidConfig(
                        f"{where}: subnets {a} and {b} overlap",
                        f"{a.where} and {b.where} must not share addresses",
                    )
        return cls(ranges, where)

    @property
    def version(self) -> int:
        return self.ranges[0].subnet.version

    def range_for(self, ip: IPAddress) -> Range | None:
        """The range whose start..end holds `ip`."""
        for r in self.ranges:
            if r.contains(ip):
                return r
        return None

    def in_subnets(self, ip: IPAddress) -> bool:
        return any(ip.version == r.subnet.version and ip in r.subnet for r in self.ranges)

    def is_reserved(self, ip: IPAddress) -> bool:
        return self.in_subnets(ip) and int(ip) in self.reserved

    def overlaps(self, other: RangeSet) -> bool:
        return any(a.overlaps(b) for a in self.ranges for b in other.ranges)

    def candidates(self, last: IPAddress | None) -> Iterator[tuple[IPAddress, Range]]:
        """Every allocatable address once, in round-robin order: from the one after
        `last` (when `last` is in this set) to the end of its range, through the
        following ranges (wrapping around), back to `last` itself."""
        ranges = self.ranges
        count = len(ranges)
        first_range, first_value = 0, int(ranges[0].start)
        if last is not None:
            for i, r in enumerate(ranges):
                if r.contains(last):
                    if int(last) < int(r.end):
                        first_range, first_value = i, int(last) + 1
                    else:
                        first_range = (i + 1) % count
                        first_value = int(ranges[first_range].start)
                    break
        reserved = self.reserved
        for step in range(count + 1):
            r = ranges[(first_range + step) % count]
            make = type(r.start)
            low = first_value if step == 0 else int(r.start)
            # The last step comes back to the first range and stops before where we began.
            high = int(r.end) if step < count else first_value - 1
            for value in range(low, high + 1):
                if value not in reserved:
                    yield make(value), r

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


def check_disjoint(range_sets: list[RangeSet]) -> None:
    for j, b in enumerate(range_sets):
        for i, a in enumerate(range_sets[:j]):
            if a.overlaps(b):
                raise errors.InvalidConfig(
                    f"range set {i} overlaps with {j}",
                    f"{a.where} ({a}) and {b.where} ({b}) must not share addresses",
                )


def allocate(
    range_set: RangeSet,
    index: int,
    store: LeaseStore,
    container_id: str,
    ifname: str,
    requested: IPAddress | None = None,
) -> tuple[IPAddress, Range]:
    """One address from `range_set` for (container_id, ifname); the caller holds the lock."""
    for held in store.held_by(container_id, ifname):
        if range_set.in_subnets(held):
            # Stricter than the reference, which skips this check for requested IPs: a
            # second ADD without a DEL is a runtime bug, and two leases for one
            # interface would leak one of them forever.
            raise errors.InvalidConfig(
                f"{held} has been allocated to {container_id}, duplicate allocation is not allowed",
                f"{container_id}/{ifname} already holds {held}; DEL the attachment before adding it again",
            )
    if requested is not None:
        r = range_set.range_for(requested)
        if r is None:
            raise errors.InvalidConfig(
                f"requested IP {requested} not in range set {range_set}",
                "request an address inside one of the ranges",
            )
        if range_set.is_reserved(requested):
            what = "gateway" if requested == r.gateway else "network or broadcast address"
            raise errors.InvalidConfig(
                f"requested ip {requested} is subnet's {what}",
                f"{requested} is never handed out in {r.subnet}; request another address",
            )
        if not store.reserve(requested, container_id, ifname):
            # 11: the holder may be a container being torn down right now (a pod
            # recreated with a fixed IP); once its DEL ran, the same ADD succeeds.
            raise errors.TryAgainLater(
                f"requested IP address {requested} is not available in range set {range_set}",
                "another attachment holds it; retry after that attachment is deleted",
            )
        return requested, r
    for ip, r in range_set.candidates(store.last_reserved(index)):
        if store.reserve(ip, container_id, ifname):
            return ip, r
    # 11 rather than a plain error: the configuration is fine and the identical request
    # succeeds as soon as any container on this network is deleted, which is exactly
    # what "try again later" tells a runtime (kubelet retries sandbox creation anyway).
    raise errors.TryAgainLater(
        f"no IP addresses available in range set: {range_set}",
        f"every address of {range_set.where or 'the range set'} is leased; delete unused "
        "containers or widen the range",
    )


def assign_requested(
    range_sets: list[RangeSet], requested: list[IPAddress] | None
) -> list[IPAddress | None]:
    """Which requested address goes to which range set (None: allocate one). A
    requested address no range holds is an error, raised before anything is touched."""
    wanted = list(dict.fromkeys(requested or ()))
    per_set: list[IPAddress | None] = []
    for range_set in range_sets:
        want = next((ip for ip in wanted if range_set.range_for(ip)), None)
        if want is not None:
            wanted.remove(want)
        per_set.append(want)
    if wanted:
        raise errors.InvalidConfig(
            "failed to allocate all requested IPs: " + " ".join(str(ip) for ip in wanted),
            "each requested IP must lie inside one range (rangeStart..rangeEnd) of a "
            "range set, one per set: " + "; ".join(str(rs) for rs in range_sets),
        )
    return per_set


def allocate_all(
    range_sets: list[RangeSet],
    store: LeaseStore,
    container_id: str,
    ifname: str,
    requested: list[IPAddress] | None = None,
) -> list[tuple[IPAddress, Range]]:
    """One address per range set, all or nothing: on any failure the addresses already
    reserved by this call are released. Requested addresses go to the set whose ranges
    hold them; one left over is an error. Round-robin hints are written only on success."""
    per_set = assign_requested(range_sets, requested)
    done: list[tuple[IPAddress, Range]] = []
    try:
        for index, range_set in enumerate(range_sets):
            try:
                done.append(allocate(range_set, index, store, container_id, ifname, per_set[index]))
            except errors.CniError as exc:
                raise type(exc)(
                    f"failed to allocate for range {index}: {exc.msg}", exc.details, code=exc.code
                ) from None
    except BaseException:
        for ip, _r in done:
            store.release_ip(ip)
        raise
    for index, (ip, _r) in enumerate(done):
        store.set_last_reserved(index, ip)
    return done
