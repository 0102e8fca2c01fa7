"""Pure parts of issue 16 (no root): the resolver's view from records, its answers,
upstream choice, header-only errors; the multi-network plan and the default-route
election."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest

from pycni.runtime import dns as resolver
from pycni.runtime.containers import Attachment, ContainerRecord
from pycni.runtime.run import (
    NetworkAttach,
    RunOptions,
    gateway_rank,
    parse_network_spec,
    plan_attachments,
)
from pycni.runtime.usage import UsageError


def rec(name: str, netns: str, *atts: Attachment, dns_: list[str] | None = None) -> ContainerRecord:
    r = ContainerRecord(name.ljust(64, "0"), name, ["true"], status="running")
    r.netns, r.hostname, r.attachments, r.dns = netns, f"{name}-host", list(atts), dns_ or []
    return r


def view() -> resolver.View:
    return resolver.build_view(
        [
            rec(
                "web", "/ns/web", Attachment("front", ips=["10.0.0.2/24"], aliases=["www", "pool"])
            ),
            rec("web2", "/ns/web2", Attachment("front", ips=["10.0.0.3/24"], aliases=["pool"])),
            rec(
                "app",
                "/ns/app",
                Attachment("front", ips=["10.0.0.4/24"]),
                Attachment("back", "eth1", ips=["10.1.0.4/24", "fd00::4/64"]),
            ),
            rec("db", "/ns/db", Attachment("back", ips=["10.1.0.5/24"], internal=True)),
            rec("old", "/ns/old", Attachment("bridge", ips=["172.17.0.2/16"])),
        ],
        host_resolv="nameserver 127.0.0.53\nnameserver 192.0.2.53\n",
    )


def ask(v: resolver.View, client: str, name: str, rtype: str = "A"):
    q = dns.message.make_query(name, rtype)
    return resolver.Answerer(v).answer(v.clients[client], q)


def test_names_of_every_kind_and_network_scope() -> None:
    v = view()
    assert set(v.clients) == {"/ns/web", "/ns/web2", "/ns/app", "/ns/db"}  # not the bridge one
    for name in ("web", "www", "web".ljust(12, "0"), "web-host", "web.front", "WEB."):
        resp, _ = ask(v, "/ns/app", name)
        assert [rd.to_text() for rrs in resp.answer for rd in rrs] == ["10.0.0.2"], name
    assert ask(v, "/ns/web", "db") is None  # another network: not ours, forwarded
    assert ask(v, "/ns/web", "old") is None  # the default bridge has no names
    resp, _ = ask(v, "/ns/db", "app", "AAAA")
    assert [rd.to_text() for rrs in resp.answer for rd in rrs] == ["fd00::4"]
    resp, cacheable = ask(v, "/ns/app", "pool")
    assert sorted(rd.to_text() for rrs in resp.answer for rd in rrs) == ["10.0.0.2", "10.0.0.3"]
    assert not cacheable  # shuffled per answer
    resp, _ = ask(v, "/ns/app", "web", "MX")
    assert resp.rcode() == dns.rcode.NOERROR and not resp.answer
    resp, _ = ask(v, "/ns/app", "5.0.1.10.in-addr.arpa", "PTR")
    assert [rd.to_text() for rrs in resp.answer for rd in rrs] == ["db.back."]


def test_upstreams_and_internal_only() -> None:
    v = view()
    assert v.clients["/ns/web"].upstreams == [("192.0.2.53", False)]  # loopback skipped
    assert v.clients["/ns/db"].internal_only and not v.clients["/ns/app"].internal_only
    ups = resolver.upstreams_for(["127.0.0.1", "10.9.9.9", "10.9.9.8", "10.9.9.7", "10.9.9.6"], "")
    assert ups == [("10.9.9.9", True), ("10.9.9.8", True), ("10.9.9.7", True)]
    assert resolver.host_upstreams("nameserver ::1\nnameserver fe80::1%eth0\n") == ["fe80::1"]


def test_registrations_join_and_netctl_records_win(tmp_path) -> None:
    ns = tmp_path / "ns"
    ns.write_text("")
    regs = [
        resolver.Registration("front", str(ns), ["podc", "alias1"], ["10.0.0.9"]),
        resolver.Registration("front", "/ns/web", ["dup"], ["10.0.0.2"]),  # netctl's own
    ]
    v = resolver.build_view([rec("web", "/ns/web", Attachment("front", ips=["10.0.0.2/24"]))], regs)
    assert v.names["front"]["alias1"] == ["10.0.0.9"] and "dup" not in v.names["front"]
    assert v.clients[str(ns)].networks == ["front"]


def test_header_only_answers() -> None:
    q = dns.message.make_query("x.", "A").to_wire()
    bad = q[:12] + b"\xc0\x0c"
    err = resolver.formerr(bad)
    assert err is not None and err[:2] == q[:2] and err[3] & 0x0F == 1 and err[2] & 0x80
    assert resolver.formerr(b"\x00" * 5) is None
    response = bytes([q[0], q[1], q[2] | 0x80]) + q[3:]
    assert resolver.formerr(response) is None  # never answer a response


def test_network_specs_in_dockers_words() -> None:
    spec = parse_network_spec("name=a,alias=x,alias=y,ip=10.0.0.5,gw-priority=-3,driver-opt=k=v")
    assert (spec.network, spec.aliases, spec.ip, spec.gw_priority) == (
        "a",
        ["x", "y"],
        "10.0.0.5",
        -3,
    )
    for text, words in (
        ("name=a,bogus=1", "invalid field key bogus"),
        ("alias=x", "network name/id is not specified"),
        ("name=a,gw-priority=1.5", "invalid gw-priority (1.5)"),
        ("name=a,ip", "invalid field ip"),
    ):
        with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
            parse_network_spec(text)
    opts = RunOptions(
        ["true"], networks=["a", "name=b,ip=10.2.0.2"], network_alias=["n"], ip="10.1.0.1"
    )
    first, second = plan_attachments(opts)
    assert (first.network, first.aliases, first.ip) == ("a", ["n"], "10.1.0.1")
    assert (second.network, second.ip) == ("b", "10.2.0.2")
    with pytest.raises(UsageError, match="non-user-defined"):
        plan_attachments(RunOptions(["true"], networks=["a", "bridge"]))
    with pytest.raises(UsageError, match="specified multiple times"):
        plan_attachments(RunOptions(["true"], networks=["a", "name=a"]))
    assert NetworkAttach("x").gw_priority == 0


def test_default_route_election_order() -> None:
    atts = [
        Attachment("zeta", "eth0", gateways=["10.0.0.1"]),
        Attachment("alpha", "eth1", gateways=["10.1.0.1"], internal=True),
        Attachment("beta", "eth2", gateways=["10.2.0.1"]),
        Attachment("gamma", "eth3", gateways=["10.3.0.1", "fd00::1"]),
    ]
    assert [a.network for a in sorted(atts, key=gateway_rank)] == ["gamma", "beta", "zeta", "alpha"]
    atts[0].gw_priority = 5
    assert sorted(atts, key=gateway_rank)[0].network == "zeta"


def test_a_stale_registration_of_a_netctl_container_is_ignored() -> None:
    """The dns plugin's registration of a netctl container (its namespace under netctl's
    netns dir) counts only while netctl's record exists: a left-over one must not keep
    the resolver (and, by its handle, the namespace) alive."""
    stale = resolver.Registration(
        network="front", netns="/run/netctl/netns/abc", names=["x"], ips=["10.0.0.9"],
        internal=False, dns=[],
    )  # fmt: skip
    other = resolver.Registration(
        network="front", netns="/run/netns/pod1", names=["pod1"], ips=["10.0.0.8"],
        internal=False, dns=[],
    )  # fmt: skip
    v = resolver.build_view(
        [], [stale, other], "", {"/run/netctl/netns/abc", "/run/netns/pod1"}, "/run/netctl/netns"
    )
    assert list(v.clients) == ["/run/netns/pod1"]
    assert "x" not in v.names.get("front", {}) and "pod1" in v.names["front"]
