"""`-p/--publish` parsing, formatting and expansion, against Docker's behaviour.

Expected values come from Docker's own parser and formatter (moby/go-connections
nat.ParsePortSpec, docker/cli convertToStandardNotation, DisplayablePorts and
`docker port`), including their test cases and error strings, verbatim.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.firewall.base import PortMapping
from pycni.runtime.portspec import (
    PortBinding,
    PortSpecError,
    expand,
    format_port_lines,
    format_ports,
    format_publish,
    parse_publish,
    parse_publish_all,
)


def B(container_port: int, host_port: int = 0, host_ip: str = "", proto: str = "tcp", end: int = 0):
    return PortBinding(
        host_ip=host_ip,
        host_port=host_port,
        host_port_end=end,
        container_port=container_port,
        protocol=proto,  # type: ignore[arg-type]
    )


def P(host_ip: str, host_port: int, container_port: int, proto: str = "tcp") -> PortMapping:
    return PortMapping(
        host_ip=host_ip,
        host_port=host_port,
        container_port=container_port,
        protocol=proto,  # type: ignore[arg-type]
    )


# -- valid specs -------------------------------------------------------------------------

VALID: list[tuple[str, list[PortBinding]]] = [
    # containerPort
    ("80", [B(80)]),
    ("1", [B(1)]),
    ("65535", [B(65535)]),
    ("0123", [B(123)]),  # leading zeros: decimal, as Go's ParseInt(s, 10)
    ("+80", [B(80)]),  # Go's ParseInt takes a sign
    ("80-80", [B(80)]),
    # protocol suffix
    ("80/tcp", [B(80)]),
    ("80/udp", [B(80, proto="udp")]),
    ("80/sctp", [B(80, proto="sctp")]),
    ("80/UDP", [B(80, proto="udp")]),
    ("80/Sctp", [B(80, proto="sctp")]),
    ("80/TCP", [B(80)]),
    ("80/", [B(80)]),  # empty protocol: tcp
    # hostPort:containerPort
    ("8080:80", [B(80, 8080)]),
    ("80:80", [B(80, 80)]),
    ("8080:80/udp", [B(80, 8080, proto="udp")]),
    ("65535:1", [B(1, 65535)]),
    ("0:80", [B(80)]),  # host port 0: dynamic
    ("0-0:80", [B(80)]),
    (":80", [B(80)]),  # empty host port: dynamic
    ("::80", [B(80)]),  # empty IP and empty host port
    (":80/udp", [B(80, proto="udp")]),
    # ip::containerPort and ip:hostPort:containerPort
    ("1.2.3.4::80", [B(80, host_ip="1.2.3.4")]),
    ("1.2.3.4:0:80", [B(80, host_ip="1.2.3.4")]),
    ("1.2.3.4:8080:80", [B(80, 8080, "1.2.3.4")]),
    ("192.168.1.100::6000/udp", [B(6000, host_ip="192.168.1.100", proto="udp")]),
    ("192.168.1.100::6000/sctp", [B(6000, host_ip="192.168.1.100", proto="sctp")]),
    ("127.0.0.1:5432:5432", [B(5432, 5432, "127.0.0.1")]),
    ("0.0.0.0:8080:80", [B(80, 8080, "0.0.0.0")]),  # IPv4 only, every address
    ("0.0.0.0::80", [B(80, host_ip="0.0.0.0")]),
    # [ipv6]:hostPort:containerPort and [ipv6]::containerPort
    ("[::1]:8080:80", [B(80, 8080, "::1")]),
    ("[::1]:80:80", [B(80, 80, "::1")]),
    ("[::1]::6000/udp", [B(6000, host_ip="::1", proto="udp")]),
    ("[2001:4860:0:2001::68]::333", [B(333, host_ip="2001:4860:0:2001::68")]),
    ("[::]:8080:80", [B(80, 8080, "::")]),  # IPv6 only, every address
    ("[fe80::1]:8080:80", [B(80, 8080, "fe80::1")]),
    ("[2001:DB8::1]:8080:80", [B(80, 8080, "2001:db8::1")]),  # normalised
    ("[2001:db8:0:0::1]:8080:80", [B(80, 8080, "2001:db8::1")]),
    ("[1.2.3.4]:8080:80", [B(80, 8080, "1.2.3.4")]),  # Go's SplitHostPort allows it
    ("[]:8080:80", [B(80, 8080)]),  # brackets around nothing: every address
    # IPv6 without brackets: Docker splits at the last two colons
    ("::1:8080:80", [B(80, 8080, "::1")]),
    ("::1:8080:6000/udp", [B(6000, 8080, "::1", "udp")]),
    ("2001:4860:0:2001::68::333", [B(333, host_ip="2001:4860:0:2001::68")]),
    ("::::80", [B(80, host_ip="::")]),
    ("::::6000/udp", [B(6000, host_ip="::", proto="udp")]),
    ("fe80::1:8080:80", [B(80, 8080, "fe80::1")]),
    # IPv4-mapped IPv6: Docker's allocator unmaps it and binds the IPv4 address
    ("[::ffff:1.2.3.4]:8080:80", [B(80, 8080, "1.2.3.4")]),
    ("::ffff:1.2.3.4:8080:80", [B(80, 8080, "1.2.3.4")]),
    # equal ranges: one binding per port
    ("8000-8002:80-82", [B(80, 8000), B(81, 8001), B(82, 8002)]),
    ("1234-1236:1234-1236/udp", [B(p, p, proto="udp") for p in (1234, 1235, 1236)]),
    ("0.0.0.0:1234-1235:3333-3334/tcp", [B(3333, 1234, "0.0.0.0"), B(3334, 1235, "0.0.0.0")]),
    ("[::1]:8000-8001:80-81", [B(80, 8000, "::1"), B(81, 8001, "::1")]),
    ("8000-8000:80-80", [B(80, 8000)]),
    # hostRange:containerPort: one binding, host port picked from the range
    ("8000-8010:80", [B(80, 8000, end=8010)]),
    ("8000-8010:80/udp", [B(80, 8000, end=8010, proto="udp")]),
    ("1.2.3.4:8000-8010:80", [B(80, 8000, "1.2.3.4", end=8010)]),
    ("[::1]:8000-8010:80", [B(80, 8000, "::1", end=8010)]),
    ("1-65535:80", [B(80, 1, end=65535)]),
    # container range alone: dynamic host ports
    ("80-82", [B(80), B(81), B(82)]),
    ("80-82/udp", [B(80, proto="udp"), B(81, proto="udp"), B(82, proto="udp")]),
    ("1.2.3.4::80-81", [B(80, host_ip="1.2.3.4"), B(81, host_ip="1.2.3.4")]),
    (":80-81", [B(80), B(81)]),
    ("65534-65535", [B(65534), B(65535)]),
    # long syntax
    ("published=8080,target=80", [B(80, 8080)]),
    ("target=80,published=8080", [B(80, 8080)]),
    ("published=8080,target=80,protocol=udp", [B(80, 8080, proto="udp")]),
    ("published=8080,target=80,protocol=UDP", [B(80, 8080, proto="udp")]),
    ("published=8080,target=80,protocol=udp,host_ip=1.2.3.4", [B(80, 8080, "1.2.3.4", "udp")]),
    ("published=8080,target=80,host_ip=::1", [B(80, 8080, "::1")]),
    ("published=8080,target=80,host_ip=[::1]", [B(80, 8080, "::1")]),
    ("target=80", [B(80)]),  # no published port: dynamic
    ("published=,target=80", [B(80)]),
    ("published=0,target=80", [B(80)]),
    ("target=80,host_ip=1.2.3.4", [B(80, host_ip="1.2.3.4")]),
    ("published=8080,target=80,mode=host", [B(80, 8080)]),
    ("published=8080,target=80,mode=ingress", [B(80, 8080)]),
    ("published=8000-8010,target=80", [B(80, 8000, end=8010)]),
    ("published=8000-8001,target=80-81", [B(80, 8000), B(81, 8001)]),
    ("published=1,published=8080,target=80", [B(80, 8080)]),  # last one wins, as in Docker
    ("published=8080,target=80,protocol=", [B(80, 8080)]),
]


@pytest.mark.parametrize(("spec", "expected"), VALID, ids=[s for s, _ in VALID])
def test_valid(spec: str, expected: list[PortBinding]) -> None:
    assert parse_publish(spec) == expected


# -- errors, Docker's wording verbatim ---------------------------------------------------

ERRORS: list[tuple[str, str]] = [
    # protocol
    ("80/icmp", "invalid proto: icmp"),
    ("80/ICMP", "invalid proto: icmp"),
    ("80/tcp/udp", "invalid proto: tcp/udp"),
    ("8080:80/any", "invalid proto: any"),
    ("localhost:80:80/icmp", "invalid proto: icmp"),  # protocol is checked before the IP
    # host port
    ("65536:80", "invalid hostPort: 65536"),
    ("99999999999999999999:80", "invalid hostPort: 99999999999999999999"),
    ("abc:80", "invalid hostPort: abc"),
    ("-1:80", "invalid hostPort: -1"),
    ("8010-8000:80", "invalid hostPort: 8010-8000"),
    ("8000-65536:80", "invalid hostPort: 8000-65536"),
    ("8000-:80", "invalid hostPort: 8000-"),
    ("-8000:80", "invalid hostPort: -8000"),
    ("8000-8001-8002:80", "invalid hostPort: 8000-8001-8002"),
    ("80 :80", "invalid hostPort: 80 "),
    ("8_0:80", "invalid hostPort: 8_0"),
    ("0-10:80", "invalid hostPort: 0-10"),  # stricter than Docker: no port 0 in a range
    ("1.2.3.4:80", "invalid hostPort: 1.2.3.4"),  # two fields: the first is a port
    ("192.168.1.100:-1:-1", "invalid containerPort: -1"),
    # container port
    ("abc", "invalid containerPort: abc"),
    ("8080:abc", "invalid containerPort: abc"),
    ("8080:abc/udp", "invalid containerPort: abc"),
    ("0", "invalid containerPort: 0"),
    ("8080:0", "invalid containerPort: 0"),
    ("0-5", "invalid containerPort: 0-5"),
    ("65536", "invalid containerPort: 65536"),
    ("-1", "invalid containerPort: -1"),
    ("-80", "invalid containerPort: -80"),
    ("80-", "invalid containerPort: 80-"),
    ("90-80", "invalid containerPort: 90-80"),
    ("8010-8000", "invalid containerPort: 8010-8000"),
    ("80-90-100", "invalid containerPort: 80-90-100"),
    ("80--90", "invalid containerPort: 80--90"),
    ("8080:80-65536", "invalid containerPort: 80-65536"),
    ("1asdf", "invalid containerPort: 1asdf"),
    (" 80", "invalid containerPort:  80"),
    ("٨٠", "invalid containerPort: ٨٠"),  # Arabic-Indic digits: Go wants ASCII
    ("192.168.1.100", "invalid containerPort: 192.168.1.100"),
    ("abc:def", "invalid containerPort: def"),  # container port is checked before host
    # IP address
    ("localhost:80:80", "invalid IP address: localhost"),
    ("localhost:1234-1236:1234-1236/tcp", "invalid IP address: localhost"),
    ("localhost::80", "invalid IP address: localhost"),
    ("1.2.3:80:80", "invalid IP address: 1.2.3"),
    ("256.1.1.1:80:80", "invalid IP address: 256.1.1.1"),
    ("01.2.3.4:80:80", "invalid IP address: 01.2.3.4"),
    ("1.2.3.4/24:80:80", "invalid IP address: 1.2.3.4/24"),
    ("fe80::1%eth0:80:80", "invalid IP address: fe80::1%eth0"),
    ("::1:80", "invalid IP address: :"),  # unbracketed IPv6 needs both port fields
    ("[zz]:80:80", "invalid IP address: zz"),
    ("[::1:80:80", "invalid IP address [::1: address [::1:: missing ']' in address"),
    ("[::1]x:80:80", "invalid IP address [::1]x: address [::1]x:: missing port in address"),
    ("[::1]::80:80", "invalid IP address [::1]:: address [::1]::: too many colons in address"),
    ("[[::1]:80:80", "invalid IP address [[::1]: address [[::1]:: unexpected '[' in address"),
    ("[::1]]:80:80", "invalid IP address [::1]]: address [::1]]:: missing port in address"),
    # ranges
    (
        "8000-8010:80-89",
        "invalid ranges specified for container and host Ports: 80-89 and 8000-8010",
    ),
    ("8000:80-81", "invalid ranges specified for container and host Ports: 80-81 and 8000"),
    ("0:80-81", "invalid ranges specified for container and host Ports: 80-81 and 0"),
    (
        "1.2.3.4:8000-8001:80-82/udp",
        "invalid ranges specified for container and host Ports: 80-82 and 8000-8001",
    ),
    # no port
    ("", "no port specified: <empty>"),
    ("80:", "no port specified: 80:<empty>"),
    ("/tcp", "no port specified: /tcp<empty>"),
    ("1.2.3.4:80:", "no port specified: 1.2.3.4:80:<empty>"),
    ("0.0.0.0:1234-1235:/tcp", "no port specified: 0.0.0.0:1234-1235:/tcp<empty>"),
    ("0.0.0.0:1234-1235:", "no port specified: 0.0.0.0:1234-1235:<empty>"),
    (":", "no port specified: :<empty>"),
    # long syntax: docker run's messages (it rewrites to "published:target/protocol")
    ("published=8080", "no port specified: 8080:/tcp<empty>"),
    ("published=8080,protocol=udp", "no port specified: 8080:/udp<empty>"),
    ("published=8080,target=80,protocol=icmp", "invalid proto: icmp"),
    ("published=65536,target=80", "invalid hostPort: 65536"),
    ("published=8080,target=abc", "invalid containerPort: abc"),
    ("published=8080,target=0", "invalid containerPort: 0"),
    ("published=8080,target=80,host_ip=localhost", "invalid IP address: localhost"),
    (
        "published=8000-8010,target=80-89",
        "invalid ranges specified for container and host Ports: 80-89 and 8000-8010",
    ),
    (
        "published=1500,target:444",
        "invalid publish opts format (should be name=value but got 'target:444')",
    ),
    ("published=1500,444", "invalid publish opts format (should be name=value but got '444')"),
    (
        "published=1500,target,444",
        "invalid publish opts format (should be name=value but got 'target')",
    ),
    ("=80,target=80", "invalid publish opts format (should be name=value but got '=80')"),
    ("published=8080,target=80,", "invalid publish opts format (should be name=value but got '')"),
    # long syntax: keys and modes (swarm's --publish wording)
    ("published=8080,target=80,hostip=1.2.3.4", "invalid field key: hostip"),
    ("published=8080,Target=80", "invalid field key: Target"),
    ("published=8080,target=80,name=web", "invalid field key: name"),
    (
        "published=8080,target=80,mode=global",
        "invalid publish mode value (global): must be either 'ingress' or 'host'",
    ),
]


@pytest.mark.parametrize(("spec", "message"), ERRORS, ids=[s or "<empty>" for s, _ in ERRORS])
def test_error(spec: str, message: str) -> None:
    with pytest.raises(PortSpecError) as info:
        parse_publish(spec)
    assert str(info.value) == message


def test_error_is_a_value_error() -> None:
    assert issubclass(PortSpecError, ValueError)


def test_case_counts() -> None:
    assert len(VALID) + len(ERRORS) >= 150


def test_parse_publish_all_keeps_order() -> None:
    assert parse_publish_all(["8080:80", "53/udp", "[::1]:9000-9001:90-91"]) == [
        B(80, 8080),
        B(53, proto="udp"),
        B(90, 9000, "::1"),
        B(91, 9001, "::1"),
    ]


# -- PortBinding helpers -----------------------------------------------------------------


def test_needs_host_port_and_range() -> None:
    assert B(80).needs_host_port and B(80).host_port_range is None
    assert not B(80, 8080).needs_host_port and B(80, 8080).host_port_range == (8080, 8080)
    ranged = B(80, 8000, end=8010)
    assert ranged.needs_host_port and ranged.host_port_range == (8000, 8010)


def test_with_host_port() -> None:
    assert B(80).with_host_port(32768) == B(80, 32768)
    assert B(80, 8000, end=8010).with_host_port(8005) == B(80, 8005)
    assert B(80, 8080).with_host_port(8080) == B(80, 8080)
    for binding, port in [(B(80, 8000, end=8010), 8011), (B(80, 8080), 8081), (B(80), 0)]:
        with pytest.raises(ValueError, match="outside"):
            binding.with_host_port(port)


def test_bindings_are_frozen_and_hashable() -> None:
    binding = B(80, 8080)
    with pytest.raises(AttributeError):
        binding.host_port = 1  # type: ignore[misc]
    assert {binding, B(80, 8080)} == {binding}


@pytest.mark.parametrize(
    ("binding", "spec"),
    [
        (B(80), "80/tcp"),
        (B(80, 8080), "8080:80/tcp"),
        (B(53, proto="udp"), "53/udp"),
        (B(80, host_ip="1.2.3.4"), "1.2.3.4::80/tcp"),
        (B(80, 8080, "1.2.3.4"), "1.2.3.4:8080:80/tcp"),
        (B(80, 8080, "::1"), "[::1]:8080:80/tcp"),
        (B(80, host_ip="::"), "[::]::80/tcp"),
        (B(80, 8000, end=8010, proto="sctp"), "8000-8010:80/sctp"),
    ],
)
def test_to_spec(binding: PortBinding, spec: str) -> None:
    assert binding.to_spec() == spec
    assert parse_publish(spec) == [binding]


def test_format_publish_collapses_runs() -> None:
    bindings = parse_publish("8000-8002:80-82") + parse_publish("90-91/udp")
    bindings += parse_publish("8000-8010:100") + parse_publish("[::1]:7000-7001:70-71")
    assert format_publish(bindings) == [
        "8000-8002:80-82/tcp",
        "90-91/udp",
        "8000-8010:100/tcp",
        "[::1]:7000-7001:70-71/tcp",
    ]
    # Not runs: a gap, another protocol, a dynamic port next to a fixed one.
    assert format_publish([B(80, 8000), B(81, 8002)]) == ["8000:80/tcp", "8002:81/tcp"]
    assert format_publish([B(80), B(81, proto="udp")]) == ["80/tcp", "81/udp"]
    assert format_publish([B(80), B(81, 8001)]) == ["80/tcp", "8001:81/tcp"]
    assert format_publish([B(80, 8000, end=8001), B(81, 8001)]) == [
        "8000-8001:80/tcp",
        "8001:81/tcp",
    ]


# -- round trip --------------------------------------------------------------------------

ports = st.integers(min_value=1, max_value=65535)
host_ips = st.one_of(
    st.just(""),
    st.just("0.0.0.0"),
    st.just("::"),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str),
)
protocols = st.sampled_from(["tcp", "udp", "sctp"])


@st.composite
def bindings(draw: st.DrawFn) -> PortBinding:
    container = draw(ports)
    kind = draw(st.sampled_from(["dynamic", "fixed", "range"]))
    host, end = 0, 0
    if kind == "fixed":
        host = draw(ports)
    elif kind == "range":
        host = draw(st.integers(min_value=1, max_value=65534))
        end = draw(st.integers(min_value=host + 1, max_value=65535))
    return B(container, host, draw(host_ips), draw(protocols), end)


@given(st.lists(bindings(), max_size=8))
def test_round_trip(bound: list[PortBinding]) -> None:
    specs = format_publish(bound)
    assert parse_publish_all(specs) == bound
    for binding in bound:
        assert parse_publish(binding.to_spec()) == [binding]


@given(
    host_ip=host_ips,
    host=st.integers(min_value=1, max_value=60000),
    container=st.integers(min_value=1, max_value=60000),
    count=st.integers(min_value=1, max_value=50),
    proto=protocols,
)
def test_round_trip_ranges(host_ip: str, host: int, container: int, count: int, proto: str) -> None:
    spec = B(container, host, host_ip, proto).to_spec()
    bound = [B(container + i, host + i, host_ip, proto) for i in range(count)]
    assert len(format_publish(bound)) == 1
    assert parse_publish(format_publish(bound)[0]) == bound
    if count > 1:
        assert spec != format_publish(bound)[0]


@given(st.text(max_size=30))
def test_arbitrary_text_parses_or_raises_port_spec_error(text: str) -> None:
    try:
        result = parse_publish(text)
    except PortSpecError:
        return
    for binding in result:
        assert 1 <= binding.container_port <= 65535
        assert 0 <= binding.host_port <= 65535
        assert binding.protocol in ("tcp", "udp", "sctp")
        if binding.host_ip:
            ipaddress.ip_address(binding.host_ip)


# -- expanding into families -------------------------------------------------------------


def test_expand_both_families() -> None:
    assert expand([B(80, 8080)]) == [P("0.0.0.0", 8080, 80), P("::", 8080, 80)]
    assert expand([B(80, 8080)], ipv6=False) == [P("0.0.0.0", 8080, 80)]
    assert expand([B(53, 53, proto="udp")]) == [P("0.0.0.0", 53, 53, "udp"), P("::", 53, 53, "udp")]


def test_expand_one_family_when_the_address_is_given() -> None:
    assert expand([B(80, 8080, "0.0.0.0")]) == [P("0.0.0.0", 8080, 80)]
    assert expand([B(80, 8080, "::")]) == [P("::", 8080, 80)]
    assert expand([B(80, 8080, "1.2.3.4")]) == [P("1.2.3.4", 8080, 80)]
    assert expand([B(80, 8080, "::1")], ipv6=False) == [P("::1", 8080, 80)]


def test_expand_needs_chosen_host_ports() -> None:
    for binding in (B(80), B(80, 8000, end=8010)):
        with pytest.raises(ValueError, match="no host port chosen"):
            expand([binding])
    chosen = [b.with_host_port(40000 + i) for i, b in enumerate(parse_publish("80-81"))]
    assert [p.host_port for p in expand(chosen)] == [40000, 40000, 40001, 40001]


def test_expanded_ports_are_the_one_port_type() -> None:
    v4, v6 = expand([B(80, 8080, proto="udp")])
    assert v4.family == 4 and v6.family == 6
    assert v4 == PortMapping(8080, 80, "udp", "0.0.0.0")
    assert v6 == PortMapping(8080, 80, "udp", "::")
    assert v4 != v6
    assert P("1.2.3.4", 8080, 80).to_dict() == {
        "hostPort": 8080,
        "containerPort": 80,
        "protocol": "tcp",
        "hostIP": "1.2.3.4",
    }
    assert v4.to_record() == {
        "host_port": 8080,
        "container_port": 80,
        "protocol": "udp",
        "host_ip": "0.0.0.0",
    }
    # a binding's CNI form: "" stays "" (every address of both families)
    assert B(80, 8080).to_port_mapping().to_dict() == {
        "hostPort": 8080,
        "containerPort": 80,
        "protocol": "tcp",
    }
    with pytest.raises(ValueError, match="no host port chosen"):
        B(80, 0).to_port_mapping()


# -- docker ps PORTS ---------------------------------------------------------------------

FORMAT_PORTS: list[tuple[list[PortMapping], str]] = [
    ([], ""),
    (expand([B(80, 8080)]), "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"),
    ([P("0.0.0.0", 0, 9988)], "0.0.0.0:0->9988/tcp"),
    ([P("::", 0, 9988)], "[::]:0->9988/tcp"),
    ([P("4.3.2.1", 8899, 9988)], "4.3.2.1:8899->9988/tcp"),
    ([P("::1", 8899, 9988)], "[::1]:8899->9988/tcp"),
    ([P("4.3.2.1", 9988, 9988)], "4.3.2.1:9988->9988/tcp"),
    ([P("::1", 9988, 9988)], "[::1]:9988->9988/tcp"),
    (
        [P("1.2.3.4", 9998, 9998, "udp"), P("1.2.3.4", 9999, 9999, "udp")],
        "1.2.3.4:9998-9999->9998-9999/udp",
    ),
    (
        [P("::1", 9998, 9998, "udp"), P("::1", 9999, 9999, "udp")],
        "[::1]:9998-9999->9998-9999/udp",
    ),
    # translated ports are never collapsed (Docker's own test case)
    (
        [P("1.2.3.4", 8887, 9998, "udp"), P("1.2.3.4", 8888, 9999, "udp")],
        "1.2.3.4:8887->9998/udp, 1.2.3.4:8888->9999/udp",
    ),
    (
        expand(parse_publish("8000-8002:80-82")),
        "0.0.0.0:8000->80/tcp, [::]:8000->80/tcp, 0.0.0.0:8001->81/tcp, "
        "[::]:8001->81/tcp, 0.0.0.0:8002->82/tcp, [::]:8002->82/tcp",
    ),
    (
        expand(parse_publish("8000-8002:8000-8002")),
        "0.0.0.0:8000-8002->8000-8002/tcp, [::]:8000-8002->8000-8002/tcp",
    ),
    (
        [
            P("1.2.3.4", 8899, 9988, "udp"),
            P("1.2.3.4", 8899, 9988, "tcp"),
            P("4.3.2.1", 3322, 2233, "tcp"),
            P("::1", 3322, 2233, "tcp"),
        ],
        "4.3.2.1:3322->2233/tcp, [::1]:3322->2233/tcp, 1.2.3.4:8899->9988/tcp, "
        "1.2.3.4:8899->9988/udp",
    ),
    # a gap closes a run; the closed run is printed before the open ones
    (
        [P("0.0.0.0", p, p) for p in (80, 81, 90, 91)] + [P("::", 80, 80)],
        "0.0.0.0:80-81->80-81/tcp, 0.0.0.0:90-91->90-91/tcp, [::]:80->80/tcp",
    ),
    # host addresses sort numerically: 9.0.0.1 before 10.0.0.2
    (
        [P("10.0.0.2", 8080, 80), P("9.0.0.1", 8081, 80)],
        "9.0.0.1:8081->80/tcp, 10.0.0.2:8080->80/tcp",
    ),
    # same-port and translated together: groups first
    (
        [P("0.0.0.0", 8080, 80), P("0.0.0.0", 443, 443), P("0.0.0.0", 53, 53, "udp")],
        "0.0.0.0:53->53/udp, 0.0.0.0:443->443/tcp, 0.0.0.0:8080->80/tcp",
    ),
]


@pytest.mark.parametrize(("published", "expected"), FORMAT_PORTS)
def test_format_ports(published: list[PortMapping], expected: str) -> None:
    assert format_ports(published) == expected
    assert format_ports(reversed(published)) == expected  # input order does not matter


# -- docker port -------------------------------------------------------------------------

# docker/cli cli/command/container/testdata/container-port-*.golden
ALL_PORTS = expand(
    [B(80, 3456), B(443, 4567), B(443, 5678, proto="udp")],
)


def test_port_lines_all() -> None:
    assert format_port_lines(ALL_PORTS) == [
        "80/tcp -> 0.0.0.0:3456",
        "80/tcp -> [::]:3456",
        "443/tcp -> 0.0.0.0:4567",
        "443/tcp -> [::]:4567",
        "443/udp -> 0.0.0.0:5678",
        "443/udp -> [::]:5678",
    ]


@pytest.mark.parametrize(
    ("ports", "query", "expected"),
    [
        (ALL_PORTS, "80", ["0.0.0.0:3456", "[::]:3456"]),
        (ALL_PORTS, "80/tcp", ["0.0.0.0:3456", "[::]:3456"]),
        (ALL_PORTS, "443/udp", ["0.0.0.0:5678", "[::]:5678"]),
        (ALL_PORTS, "443/UDP", ["0.0.0.0:5678", "[::]:5678"]),
        (ALL_PORTS, "8080", []),
        (expand([B(80, 3456)], ipv6=False), "80", ["0.0.0.0:3456"]),
        (expand([B(80, 3456, "::")]), "80", ["[::]:3456"]),
    ],
)
def test_port_lines_one(ports: list[PortMapping], query: str, expected: list[str]) -> None:
    assert format_port_lines(ports, query) == expected


def test_port_lines_natural_order() -> None:
    # 9000 before 10000 (numbers by value), and digits before other characters.
    ports = [
        P("0.0.0.0", 1, 10000),
        P("0.0.0.0", 2, 9000),
        P("10.0.0.1", 3, 80),
        P("9.0.0.1", 3, 80),
    ]
    assert format_port_lines(ports) == [
        "80/tcp -> 9.0.0.1:3",
        "80/tcp -> 10.0.0.1:3",
        "9000/tcp -> 0.0.0.0:2",
        "10000/tcp -> 0.0.0.0:1",
    ]


@pytest.mark.parametrize("query", ["abc", "0", "65536", "80/icmp"])
def test_port_lines_bad_query(query: str) -> None:
    with pytest.raises(PortSpecError):
        format_port_lines(ALL_PORTS, query)
