"""host-local's allocator, pure: order, round-robin, skipped addresses, requested IPs,
exhaustion, rollback, and a property test over random allocate/release sequences."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycni import errors
from pycni.ipam.allocator import Range, RangeSet, allocate, allocate_all, check_disjoint

ip = ipaddress.ip_address


class MemoryStore:
    """The LeaseStore protocol in memory (the real one is pycni.ipam.store.DiskStore)."""

    def __init__(self) -> None:
        self.leases: dict[object, tuple[str, str | None]] = {}
        self.last: dict[int, object] = {}
        self.reserve_calls = 0

    def held_by(self, container_id: str, ifname: str) -> list:
        return [a for a, (c, i) in self.leases.items() if c == container_id and i in (ifname, None)]

    def reserve(self, addr, container_id: str, ifname: str) -> bool:
        self.reserve_calls += 1
        if addr in self.leases:
            return False
        self.leases[addr] = (container_id, ifname)
        return True

    def release_ip(self, addr) -> None:
        self.leases.pop(addr, None)

    def last_reserved(self, index: int):
        return self.last.get(index)

    def set_last_reserved(self, index: int, addr) -> None:
        self.last[index] = addr

    def release(self, container_id: str, ifname: str) -> None:
        for a in self.held_by(container_id, ifname):
            del self.leases[a]


def rng(subnet: str, start: str | None = None, end: str | None = None, gw: str | None = None):
    return Range.checked(
        ipaddress.ip_interface(subnet),
        ip(start) if start else None,
        ip(end) if end else None,
        ip(gw) if gw else None,
        "ipam.ranges[0][0]",
    )


def rset(*ranges: Range) -> RangeSet:
    return RangeSet.checked(list(ranges), "ipam.ranges[0]")


def add(rs: list[RangeSet], store: MemoryStore, cid: str, req=None) -> list[str]:
    return [str(a) for a, _r in allocate_all(rs, store, cid, "eth0", req)]


# -- defaults and order ----------------------------------------------------------------


def test_defaults_v4_exclude_network_and_broadcast() -> None:
    r = rng("10.1.0.0/24")
    assert (str(r.start), str(r.end), str(r.gateway)) == ("10.1.0.1", "10.1.0.254", "10.1.0.1")
    assert str(r) == "10.1.0.1-10.1.0.254"


def test_defaults_v6_include_all_ones() -> None:
    r = rng("fd00::/120")
    assert (str(r.start), str(r.end), str(r.gateway)) == ("fd00::1", "fd00::ff", "fd00::1")


def test_sequential_order_skips_gateway() -> None:
    store = MemoryStore()
    sets = [rset(rng("10.1.0.0/29"))]
    got = [add(sets, store, f"c{n}")[0] for n in range(5)]
    assert got == ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
    assert store.last == {0: ip("10.1.0.6")}


def test_never_network_gateway_or_broadcast_even_with_explicit_bounds() -> None:
    store = MemoryStore()
    # rangeStart = the network address and rangeEnd = the broadcast, gateway in the middle
    sets = [rset(rng("10.1.0.0/29", "10.1.0.0", "10.1.0.7", "10.1.0.4"))]
    got = {add(sets, store, f"c{n}")[0] for n in range(5)}
    assert got == {"10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.5", "10.1.0.6"}
    with pytest.raises(errors.TryAgainLater, match="no IP addresses available"):
        add(sets, store, "c-last")


def test_v6_network_address_never_handed_out() -> None:
    store = MemoryStore()
    sets = [rset(rng("fd00::/126", "fd00::", "fd00::3", "fd00::2"))]
    got = [add(sets, store, f"c{n}")[0] for n in range(2)]
    assert got == ["fd00::1", "fd00::3"]  # ::0 network, ::2 gateway skipped; ::3 is fine in v6


def test_round_robin_continues_after_last_reserved_even_after_release() -> None:
    store = MemoryStore()
    sets = [rset(rng("10.1.0.0/29"))]
    assert add(sets, store, "a") == ["10.1.0.2"]
    assert add(sets, store, "b") == ["10.1.0.3"]
    store.release("a", "eth0")
    # .2 is free again but round-robin moves on
    assert add(sets, store, "c") == ["10.1.0.4"]
    for cid in ("d", "e"):
        add(sets, store, cid)
    assert store.last[0] == ip("10.1.0.6")
    # wraps to the start and finds the released .2
    assert add(sets, store, "f") == ["10.1.0.2"]


def test_round_robin_across_ranges_of_a_set() -> None:
    store = MemoryStore()
    sets = [
        rset(
            rng("10.1.0.0/24", "10.1.0.10", "10.1.0.11"),
            rng("10.2.0.0/24", "10.2.0.20", "10.2.0.21"),
        )
    ]
    got = [add(sets, store, f"c{n}")[0] for n in range(4)]
    assert got == ["10.1.0.10", "10.1.0.11", "10.2.0.20", "10.2.0.21"]
    store.release("c0", "eth0")
    store.release("c3", "eth0")
    # last = 10.2.0.21 (end of the last range): wraps to the first range's start
    assert add(sets, store, "x") == ["10.1.0.10"]
    assert add(sets, store, "y") == ["10.2.0.21"]


def test_last_reserved_outside_the_set_restarts_from_the_beginning() -> None:
    store = MemoryStore()
    store.last[0] = ip("192.168.9.9")
    assert add([rset(rng("10.1.0.0/29"))], store, "a") == ["10.1.0.2"]


def test_candidates_visit_each_address_once() -> None:
    rs = rset(
        rng("10.1.0.0/28", "10.1.0.3", "10.1.0.9"), rng("10.1.1.0/28", "10.1.1.1", "10.1.1.4")
    )
    for last in (None, "10.1.0.5", "10.1.0.9", "10.1.1.4", "10.1.1.1"):
        seen = [str(a) for a, _r in rs.candidates(ip(last) if last else None)]
        assert len(seen) == len(set(seen)) == 7 + 3  # 10.1.1.1 is that range's gateway
        if last and last != "10.1.1.1":  # (the gateway is never a candidate)
            assert seen[-1] == last


def test_exhaustion_with_exactly_k_free() -> None:
    for k in range(4):
        store = MemoryStore()
        sets = [rset(rng("10.1.0.0/28", "10.1.0.2", "10.1.0.6"))]  # 5 usable
        for n in range(5 - k):
            add(sets, store, f"pre{n}")
        got = [add(sets, store, f"c{n}")[0] for n in range(k)]
        assert len(set(got)) == k
        with pytest.raises(errors.TryAgainLater) as exc:
            add(sets, store, "one-too-many")
        assert exc.value.code == 11
        assert exc.value.msg == (
            "failed to allocate for range 0: no IP addresses available in range set: "
            "10.1.0.2-10.1.0.6"
        )


def test_duplicate_allocation_refused() -> None:
    store = MemoryStore()
    sets = [rset(rng("10.1.0.0/24"))]
    add(sets, store, "a")
    with pytest.raises(errors.InvalidConfig, match="duplicate allocation is not allowed"):
        add(sets, store, "a")
    with pytest.raises(errors.InvalidConfig, match="duplicate allocation"):
        add(sets, store, "a", [ip("10.1.0.50")])
    # another ifname of the same container is another attachment
    assert allocate_all(sets, store, "a", "eth1")[0][0] == ip("10.1.0.3")


def test_legacy_id_only_lease_counts_as_duplicate() -> None:
    store = MemoryStore()
    store.leases[ip("10.1.0.7")] = ("a", None)
    with pytest.raises(errors.InvalidConfig, match=r"10\.1\.0\.7 has been allocated to a"):
        add([rset(rng("10.1.0.0/24"))], store, "a")


# -- dual stack ------------------------------------------------------------------------


def test_dual_stack_one_address_per_set() -> None:
    store = MemoryStore()
    sets = [rset(rng("10.1.0.0/24")), rset(rng("fd00::/64"))]
    assert add(sets, store, "a") == ["10.1.0.2", "fd00::2"]
    assert add(sets, store, "b") == ["10.1.0.3", "fd00::3"]
    assert store.last == {0: ip("10.1.0.3"), 1: ip("fd00::3")}


def test_failure_in_a_later_set_rolls_back_earlier_ones() -> None:
    store = MemoryStore()
    v6 = rset(rng("fd00::/126", "fd00::3", "fd00::3"))
    sets = [rset(rng("10.1.0.0/24")), v6]
    add(sets, store, "a")
    before = dict(store.leases)
    last = dict(store.last)
    with pytest.raises(errors.TryAgainLater, match="failed to allocate for range 1"):
        add(sets, store, "b")
    assert store.leases == before and store.last == last


# -- requested IPs ---------------------------------------------------------------------


def test_requested_ip_goes_to_its_set_and_updates_round_robin() -> None:
    store = MemoryStore()
    sets = [rset(rng("10.1.0.0/24")), rset(rng("fd00::/64"))]
    assert add(sets, store, "a", [ip("fd00::99"), ip("10.1.0.77")]) == ["10.1.0.77", "fd00::99"]
    assert store.last == {0: ip("10.1.0.77"), 1: ip("fd00::99")}
    assert add(sets, store, "b") == ["10.1.0.78", "fd00::9a"]


def test_requested_ip_taken() -> None:
    store = MemoryStore()
    sets = [rset(rng("10.1.0.0/24"))]
    add(sets, store, "a", [ip("10.1.0.9")])
    with pytest.raises(errors.TryAgainLater) as exc:
        add(sets, store, "b", [ip("10.1.0.9")])
    assert "requested IP address 10.1.0.9 is not available in range set 10.1.0.1-10.1.0.254" in (
        exc.value.msg
    )


@pytest.mark.parametrize(
    ("requested", "what"),
    [("10.1.0.1", "gateway"), ("10.1.0.0", "network or broadcast"), ("10.1.0.7", "broadcast")],
)
def test_requested_reserved_address_refused(requested: str, what: str) -> None:
    sets = [rset(rng("10.1.0.0/29", "10.1.0.0", "10.1.0.7"))]
    with pytest.raises(errors.InvalidConfig, match=what):
        add(sets, MemoryStore(), "a", [ip(requested)])


@pytest.mark.parametrize("requested", ["10.1.0.200", "10.9.0.1", "fd00::1"])
def test_requested_ip_outside_every_range(requested: str) -> None:
    store = MemoryStore()
    sets = [rset(rng("10.1.0.0/24", "10.1.0.10", "10.1.0.100"))]
    with pytest.raises(errors.InvalidConfig) as exc:
        add(sets, store, "a", [ip(requested)])
    assert exc.value.msg == f"failed to allocate all requested IPs: {requested}"
    assert "10.1.0.10-10.1.0.100" in exc.value.details
    assert store.leases == {} and store.last == {}  # the auto-allocated one was rolled back


def test_duplicate_requests_are_one_request() -> None:
    store = MemoryStore()
    sets = [rset(rng("10.1.0.0/24"))]
    assert add(sets, store, "a", [ip("10.1.0.5"), ip("10.1.0.5")]) == ["10.1.0.5"]


def test_allocate_single_set_directly() -> None:
    store = MemoryStore()
    rs = rset(rng("10.1.0.0/24"))
    with pytest.raises(errors.InvalidConfig, match="not in range set"):
        allocate(rs, 0, store, "a", "eth0", ip("10.2.0.1"))


def test_check_disjoint_between_sets() -> None:
    a = RangeSet.checked([rng("10.1.0.0/24")], "ipam.ranges[0]")
    b = RangeSet.checked([rng("10.1.0.0/16", "10.1.0.200", "10.1.3.0")], "ipam.ranges[1]")
    with pytest.raises(errors.InvalidConfig) as exc:
        check_disjoint([a, b])
    assert exc.value.msg == "range set 0 overlaps with 1"
    assert "ipam.ranges[1]" in exc.value.details and "ipam.ranges[0]" in exc.value.details
    check_disjoint([a, RangeSet.checked([rng("fd00::/64")], "ipam.ranges[1]")])


# -- property --------------------------------------------------------------------------


@st.composite
def scenario(draw):
    v6 = draw(st.booleans())
    prefix = draw(st.integers(min_value=122, max_value=126) if v6 else st.integers(27, 30))
    base = "fd00:1::" if v6 else "10.9.0.0"
    net = ipaddress.ip_network(f"{base}/{prefix}")
    size = net.num_addresses
    lo = draw(st.integers(0, size - 1))
    hi = draw(st.integers(lo, size - 1))
    gw = draw(st.one_of(st.none(), st.integers(0, size - 1)))
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["add", "del", "req"]), st.integers(0, 12), st.integers(0, size - 1)
            ),
            max_size=60,
        )
    )
    return net, lo, hi, gw, ops


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_property_no_double_lease_all_inside_never_reserved(case) -> None:
    net, lo, hi, gw, ops = case
    first = net.network_address
    r = Range.checked(
        ipaddress.ip_interface(f"{first}/{net.prefixlen}"),
        first + lo,
        first + hi,
        first + gw if gw is not None else None,
        "p",
    )
    sets = [RangeSet.checked([r], "p")]
    reserved = {net.network_address, r.gateway}
    if net.version == 4:
        reserved.add(net.broadcast_address)
    usable = {a for a in net if r.start <= a <= r.end} - reserved
    store = MemoryStore()
    held: dict[str, object] = {}  # container -> address, the test's own bookkeeping
    for op, n, offset in ops:
        cid = f"c{n}"
        if op == "del":
            store.release(cid, "eth0")
            held.pop(cid, None)
            continue
        want = [first + offset] if op == "req" else None
        try:
            ((got, _r),) = allocate_all(sets, store, cid, "eth0", want)
        except errors.TryAgainLater:
            # exhausted, or the requested one is taken: both only when it is really so
            if want is None:
                assert set(held.values()) >= usable
            else:
                assert want[0] in held.values()
            continue
        except errors.InvalidConfig as exc:
            assert cid in held or (want and want[0] not in usable), exc
            continue
        assert cid not in held
        assert got not in held.values(), f"{got} handed out twice"
        assert got in usable and got not in reserved
        if want:
            assert got == want[0]
        held[cid] = got
    assert {a: c for c, a in held.items()} == {a: c for a, (c, _i) in store.leases.items()}
