"""portmap `conditionsV4` / `conditionsV6`: extra matches a published port needs.

The reference portmap pastes these strings into its rules as they are (iptables
arguments, or nft rule text). We parse them into data instead, so no user string ever
reaches iptables-restore or nft, and either spelling works with either backend:

    iptables style (a list of arguments):   ["-s", "192.0.2.0/24"]
                                            ["!", "-s", "10.0.0.0/8", "-i", "eth0"]
    nft style (expressions):                ["ip saddr 192.0.2.0/24"]
                                            ["ip saddr != 10.0.0.0/8", "iifname \"eth0\""]

Supported matches, each at most once per family, all of which must hold:
    source prefix      -s / --source / --src CIDR          ip|ip6 saddr [!=] CIDR
    input interface    -i / --in-interface NAME (eth+)      iifname [!=] NAME (eth*)
Negation: `!` before the option (or after it, as old iptables took it), `!=` in nft.

A packet to a published port whose conditions do not hold is not rewritten: it goes
to the host's own sockets, as with the reference. Host-originated packets (the OUTPUT
path) have no input interface: a positive interface condition never matches them and
a negative one always does, in both backends.
"""

from __future__ import annotations

import ipaddress

from pycni import errors

SADDR = "saddr"
IIFNAME = "iifname"
KINDS = (SADDR, IIFNAME)
_IF_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-")
_OPTIONS = {
    "-s": SADDR,
    "--source": SADDR,
    "--src": SADDR,
    "-i": IIFNAME,
    "--in-interface": IIFNAME,
}
SUPPORTED = (
    'supported: "-s CIDR", "-i NAME" (each may be negated with "!"), or nft style '
    '"ip saddr [!=] CIDR", "ip6 saddr [!=] CIDR", "iifname [!=] NAME"; a trailing + '
    "(iptables) or * (nft) makes NAME a prefix"
)


class Condition:
    """One match: kind (saddr | iifname), negated or not, and its canonical value
    (a network in `ipaddress` form, or an interface name whose trailing `*` means
    "any name starting with")."""

    __slots__ = ("kind", "negate", "value")

    def __init__(self, kind: str, value: str, negate: bool = False) -> None:
        self.kind = kind
        self.value = value
        self.negate = negate

    @property
    def wildcard(self) -> bool:
        return self.kind == IIFNAME and self.value.endswith("*")

    def to_dict(self) -> dict[str, object]:
        return {"match": self.kind, "op": "!=" if self.negate else "==", "value": self.value}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Condition:
        return cls(str(d["match"]), str(d["value"]), d.get("op") == "!=")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and (self.kind, self.value, self.negate) == (
            other.kind,
            other.value,
            other.negate,
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.value, self.negate))

    def __repr__(self) -> str:
        return f"{self.kind} {'!=' if self.negate else '=='} {self.value}"


def parse(items: list[object], family: int, where: str) -> list[Condition]:
    """Conditions of one family from the config list; InvalidConfig names the entry."""
    if not items:
        return []
    if not all(isinstance(i, str) for i in items):
        raise errors.InvalidConfig(f"{where} must be a list of strings", SUPPORTED)
    strings: list[str] = items  # type: ignore[assignment]
    if strings[0].startswith(("-", "!")):
        out = _parse_iptables(strings, family, where)
    else:
        out = []
        for n, text in enumerate(strings):
            out += _parse_nft(text, family, f"{where}[{n}]")
    seen: set[str] = set()
    for c in out:
        if c.kind in seen:
            raise errors.InvalidConfig(
                f"{where}: more than one {c.kind} condition",
                "each kind of match may appear once; publish the port twice with "
                "different hostIPs if you need two",
            )
        seen.add(c.kind)
    return out


def _parse_iptables(args: list[str], family: int, where: str) -> list[Condition]:
    out: list[Condition] = []
    i, n = 0, len(args)
    while i < n:
        negate = False
        if args[i] == "!":
            negate, i = True, i + 1
        if i >= n:
            raise errors.InvalidConfig(f"{where}: '!' at the end", SUPPORTED)
        option = args[i]
        kind = _OPTIONS.get(option)
        if kind is None:
            raise errors.InvalidConfig(f"{where}: unsupported condition {option!r}", SUPPORTED)
        i += 1
        if i < n and args[i] == "!" and not negate:
            negate, i = True, i + 1
        if i >= n:
            raise errors.InvalidConfig(f"{where}: {option} needs a value", SUPPORTED)
        out.append(_condition(kind, args[i], negate, family, "+", where))
        i += 1
    return out


def _condition(
    kind: str, value: str, negate: bool, family: int, wildcard: str, where: str
) -> Condition:
    if kind == SADDR:
        return Condition(SADDR, _network(value, family, where), negate)
    return Condition(IIFNAME, _ifname(value, wildcard, where), negate)


def _parse_nft(text: str, family: int, where: str) -> list[Condition]:
    words = text.split()
    out: list[Condition] = []
    i = 0
    while i < len(words):
        if words[i] in ("ip", "ip6") and i + 1 < len(words) and words[i + 1] == "saddr":
            want = 4 if words[i] == "ip" else 6
            if want != family:
                raise errors.InvalidConfig(
                    f"{where}: {words[i]!r} match in the conditions for IPv{family}",
                    f"use {'ip' if family == 4 else 'ip6'} saddr",
                )
            kind, i = SADDR, i + 2
        elif words[i] == "iifname":
            kind, i = IIFNAME, i + 1
        elif words[i] == "meta" and i + 1 < len(words) and words[i + 1] == "iifname":
            kind, i = IIFNAME, i + 2
        else:
            raise errors.InvalidConfig(f"{where}: unsupported condition {text!r}", SUPPORTED)
        negate = False
        if i < len(words) and words[i] in ("!=", "=="):
            negate, i = words[i] == "!=", i + 1
        if i >= len(words):
            raise errors.InvalidConfig(f"{where}: {text!r} needs a value", SUPPORTED)
        value = words[i]
        if kind == IIFNAME and len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out.append(_condition(kind, value, negate, family, "*", where))
        i += 1
    if not out:
        raise errors.InvalidConfig(f"{where}: empty condition", SUPPORTED)
    return out


def _network(value: str, family: int, where: str) -> str:
    try:
        net = ipaddress.ip_network(value)
    except ValueError as exc:
        raise errors.InvalidConfig(
            f"{where}: invalid source {value!r}",
            f"{exc}; give an address or a network in CIDR form, e.g. 192.0.2.0/24",
        ) from None
    if net.version != family:
        raise errors.InvalidConfig(
            f"{where}: {value} is not an IPv{family} network",
            f"put IPv{net.version} conditions in conditionsV{net.version}",
        )
    return str(net)


def _ifname(value: str, wildcard: str, where: str) -> str:
    stem = value[:-1] if value.endswith(wildcard) else value
    if not 0 < len(stem) <= 15:
        raise errors.InvalidConfig(
            f"{where}: invalid interface name {value!r}", "interface names have 1-15 characters"
        )
    if not set(stem) <= _IF_CHARS:
        raise errors.InvalidConfig(
            f"{where}: invalid interface name {value!r}",
            "use letters, digits and _ . @ - only, with an optional trailing "
            f"{wildcard} for a prefix",
        )
    return stem + "*" if value.endswith(wildcard) else stem


def iptables_args(conds: list[Condition], kind: str) -> str:
    """The condition of one kind as iptables-save prints it ("! -s 10.0.0.0/8 "), with
    a trailing space; "" when there is none. iptables-save puts -s before -d and -i
    after it. Values are canonical and from a closed alphabet."""
    option = "-s" if kind == SADDR else "-i"
    for c in conds:
        if c.kind == kind:
            value = c.value[:-1] + "+" if c.wildcard else c.value
            return f"{'! ' if c.negate else ''}{option} {value} "
    return ""
