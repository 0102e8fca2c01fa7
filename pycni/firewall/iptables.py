"""The iptables backend (fallback): chains of our own, applied with iptables-restore.

Layout, per family (iptables / ip6tables), table nat unless noted:

    PREROUTING   [! -d 127.0.0.0/8] -m addrtype --dst-type LOCAL -j PYCNI-DNAT (appended)
    OUTPUT       -m addrtype --dst-type LOCAL -j PYCNI-DNAT           (v6: ! -d ::1/128)
    POSTROUTING  -j PYCNI-POSTROUTING                                  (appended)
    PYCNI-DNAT          -m comment --comment <tag> -j PYCNI-DN-<h>     one per attachment
    PYCNI-POSTROUTING   -m comment --comment <tag> -j PYCNI-HP-<h>     hairpin SNAT
                        -m comment --comment <tag> -j PYCNI-MQ-<h>     masquerade
    PYCNI-DN-<h>   [[!] -s CIDR] [-d hostIP] [[!] -i NAME] -p P -m P --dport H
                   -j DNAT --to-destination IP:port     (-s/-i: portmap conditionsV4/V6)
    PYCNI-HP-<h>   -s <subnet>|127.0.0.0/8 -d IP -p P --dport port --ctstate DNAT -j MASQUERADE
    PYCNI-MQ-<h>   -s IP -d <subnet> -j RETURN; -s IP -d 224.0.0.0/4 -j RETURN; -s IP -j MASQUERADE
    raw PREROUTING -j PYCNI-LOCALNET;  PYCNI-LOCALNET  -d 127.0.0.0/8 ! -i lo -j DROP  (v4)

<tag> is the owner tag network/containerID/ifname (percent-encoded, no spaces or
quotes) and <h> the first 19 hex digits of its SHA-256, so DEL and GC find an
attachment's chains from its key alone. Each operation reads the family's ruleset
once (iptables-save) and applies one `iptables-restore --noflush --wait` batch,
which the kernel commits atomically; jumps from the built-in chains are added only
when missing. Unlike the nftables backend, packet matching walks one rule per
attachment (iptables has no maps), which is why it is the fallback.

Administrator precedence is the same as with nftables: policy that must win goes in
filter FORWARD (e.g. a DOCKER-USER-like chain of your own) or in raw/mangle
PREROUTING, which run before or after our nat chains but are never bypassed by them.
"""

from __future__ import annotations

from pycni import errors
from pycni.firewall.backend import MASQ, PORTS, Backend
from pycni.firewall.plan import LOOPBACK4, MULTICAST, Record, digest, owner_tag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.firewall.spawn import Completed

DNAT_CHAIN = "PYCNI-DNAT"
POST_CHAIN = "PYCNI-POSTROUTING"
GUARD_CHAIN = "PYCNI-LOCALNET"
KINDS = {"DN": DNAT_CHAIN, "HP": POST_CHAIN, "MQ": POST_CHAIN}
PART_KINDS = {MASQ: ("MQ",), PORTS: ("DN", "HP")}
WAIT_SECONDS = 10
NOT_AVAILABLE = (
    "iptables backend needs iptables-restore and iptables-save; install the iptables "
    "package or set ipMasqBackend to nftables"
)


def chain_name(kind: str, tag: str) -> str:
    """PYCNI-DN-<19 hex>: 28 characters, the longest name iptables accepts."""
    return f"PYCNI-{kind}-{digest(tag)[:19]}"


def _host(ip: object, family: int) -> str:
    return f"{ip}/{32 if family == 4 else 128}"


def builtin_jumps(family: int) -> list[tuple[str, str]]:
    """(table, rule) of the jumps from the built-in chains into ours."""
    local = "-m addrtype --dst-type LOCAL"
    out_local = local if family == 4 else f"! -d ::1/128 {local}"
    jumps = [
        (
            "nat",
            f"-A PREROUTING {'! -d 127.0.0.0/8 ' if family == 4 else ''}{local} -j {DNAT_CHAIN}",
        ),
        ("nat", f"-A OUTPUT {out_local} -j {DNAT_CHAIN}"),
        ("nat", f"-A POSTROUTING -j {POST_CHAIN}"),
    ]
    if family == 4:
        jumps.append(("raw", f"-A PREROUTING -j {GUARD_CHAIN}"))
    return jumps


GUARD_RULE = f"-A {GUARD_CHAIN} -d {LOOPBACK4} ! -i lo -j DROP"


def chains(record: Record | None, family: int) -> dict[str, list[str]]:
    """{chain: rules} of one attachment in one family, in iptables-save's canonical
    form (so CHECK can compare them with what iptables-save prints)."""
    if record is None:
        return {}
    tag = owner_tag(record.key)
    out: dict[str, list[str]] = {}
    dn, hp, mq = (chain_name(k, tag) for k in ("DN", "HP", "MQ"))
    for b in record.bindings():
        if b.family != family:
            continue
        dest = f"-d {_host(b.host_ip, family)} " if b.host_ip else ""
        conds = record.conditions_of(family)
        if conds:
            from pycni.firewall.conditions import IIFNAME, SADDR, iptables_args

            dest = iptables_args(conds, SADDR) + dest + iptables_args(conds, IIFNAME)
        to = f"{b.container_ip}:{b.container_port}"
        if family == 6:
            to = f"[{b.container_ip}]:{b.container_port}"
        match = f"-p {b.protocol} -m {b.protocol} --dport {b.host_port}"
        out.setdefault(dn, []).append(f"-A {dn} {dest}{match} -j DNAT --to-destination {to}")
        if not record.snat:
            continue
        target = f"-d {_host(b.container_ip, family)} -p {b.protocol} -m {b.protocol} "
        target += f"--dport {b.container_port} -m conntrack --ctstate DNAT -j MASQUERADE"
        sources = [""] if record.masq_all else [f"-s {b.subnet} "]
        if family == 4 and not record.masq_all:
            sources.append(f"-s {LOOPBACK4} ")
        for src in sources:
            rule = f"-A {hp} {src}{target}"
            if rule not in out.setdefault(hp, []):
                out[hp].append(rule)
    for ip in record.masq_ips():
        if ip.version != family:
            continue
        src = f"-s {_host(ip.ip, family)}"
        out.setdefault(mq, []).extend(
            [
                f"-A {mq} {src} -d {ip.network} -j RETURN",
                f"-A {mq} {src} -d {MULTICAST[family]} -j RETURN",
                f"-A {mq} {src} -j MASQUERADE",
            ]
        )
    return out


def entry_rule(chain: str, tag: str) -> str:
    kind = chain.split("-")[1]
    return f"-A {KINDS[kind]} -m comment --comment {tag} -j {chain}"


def families(record: Record | None) -> set[int]:
    if record is None:
        return set()
    fams = {ip.version for ip in record.masq_ips()}
    return fams | {b.family for b in record.bindings()}


class Saved:
    """The parts of one family's iptables-save output that concern us."""

    def __init__(self, text: str) -> None:
        #: {table: set of chain names}
        self.chains: dict[str, set[str]] = {}
        #: {table: rules, canonical (comment unquoted)}
        self.rules: dict[str, list[str]] = {}
        table = ""
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
                self.chains.setdefault(table, set())
                self.rules.setdefault(table, [])
            elif line.startswith(":") and table:
                self.chains[table].add(line[1:].split()[0])
            elif line.startswith("-A ") and table:
                self.rules[table].append(_unquote(line))

    def has_chain(self, table: str, chain: str) -> bool:
        return chain in self.chains.get(table, set())

    def entries(self) -> list[tuple[str, str, str]]:
        """(rule, tag, target chain) of every entry rule in our shared chains."""
        out = []
        for rule in self.rules.get("nat", []):
            parts = rule.split()
            if parts[1] not in (DNAT_CHAIN, POST_CHAIN) or "--comment" not in parts:
                continue
            tag = parts[parts.index("--comment") + 1]
            target = parts[parts.index("-j") + 1] if "-j" in parts else ""
            out.append((rule, tag, target))
        return out

    def ours(self) -> set[str]:
        return {
            c
            for c in self.chains.get("nat", set())
            if c.startswith(("PYCNI-DN-", "PYCNI-HP-", "PYCNI-MQ-"))
        }


def _unquote(line: str) -> str:
    # iptables-save quotes comments; ours never contain spaces or quotes.
    if "--comment " not in line:
        return line
    head, _, rest = line.partition("--comment ")
    if rest.startswith('"'):
        end = rest.find('"', 1)
        if end > 0 and " " not in rest[1:end]:
            rest = rest[1:end] + rest[end + 1 :]
    return f"{head}--comment {rest}"


class Batch:
    """An iptables-restore --noflush input, table by table: chain declarations
    (which create a chain, or flush an existing one) first, then the rule commands
    in the order given."""

    def __init__(self) -> None:
        self.chains: dict[str, list[str]] = {}
        self.lines: dict[str, list[str]] = {}

    def declare(self, table: str, chain: str) -> None:
        decl = f":{chain} - [0:0]"
        if decl not in self.chains.setdefault(table, []):
            self.chains[table].append(decl)

    def add(self, table: str, *lines: str) -> None:
        self.lines.setdefault(table, []).extend(lines)

    def text(self) -> str:
        out = []
        for table in dict.fromkeys([*self.chains, *self.lines]):
            decls, lines = self.chains.get(table, []), self.lines.get(table, [])
            if decls or lines:
                out += [f"*{table}", *decls, *lines, "COMMIT"]
        return "\n".join(out) + "\n" if out else ""


def ensure_shared(batch: Batch, saved: Saved, family: int, guard: bool) -> None:
    """Our shared chains and the jumps into them, each only when missing (declaring
    an existing chain in a --noflush batch would flush it)."""
    for chain in (DNAT_CHAIN, POST_CHAIN):
        if not saved.has_chain("nat", chain):
            batch.declare("nat", chain)
    for table, rule in builtin_jumps(family):
        if table == "raw" and not guard:
            continue
        if rule not in saved.rules.get(table, []):
            batch.add(table, rule)
    if guard and family == 4:
        if not saved.has_chain("raw", GUARD_CHAIN):
            batch.declare("raw", GUARD_CHAIN)
        if GUARD_RULE not in saved.rules.get("raw", []):
            batch.add("raw", GUARD_RULE)


def drop_chain(batch: Batch, saved: Saved, chain: str) -> None:
    """Remove a per-attachment chain: every reference first, then the chain."""
    for rule, _, target in saved.entries():
        if target == chain:
            batch.add("nat", "-D" + rule[2:])
    batch.declare("nat", chain)
    batch.add("nat", f"-X {chain}")


def put_chain(batch: Batch, saved: Saved, chain: str, rules: list[str], tag: str) -> None:
    """(Re)write a per-attachment chain; declaring it creates or flushes it."""
    batch.declare("nat", chain)
    batch.add("nat", *rules)
    entry = entry_rule(chain, tag)
    if entry not in saved.rules.get("nat", []):
        batch.add("nat", entry)


def transition(saved: Saved, old: Record | None, new: Record | None, family: int) -> str:
    """The restore batch that makes one attachment's chains in `family` match `new`."""
    key = (new or old).key  # type: ignore[union-attr]
    tag = owner_tag(key)
    want = chains(new, family)
    batch = Batch()
    if want:
        ensure_shared(batch, saved, family, guard=bool(new and new.localnet_bridge()))
    for kind in ("DN", "HP", "MQ"):
        chain = chain_name(kind, tag)
        if chain in want:
            put_chain(batch, saved, chain, want[chain], tag)
        elif saved.has_chain("nat", chain):
            drop_chain(batch, saved, chain)
    return batch.text()


def rebuild(saved: Saved, records: list[Record], family: int) -> str:
    """Replace every chain of ours in `family` by what the records describe."""
    batch = Batch()
    guard = any(r.localnet_bridge() for r in records)
    ensure_shared(batch, saved, family, guard)
    for chain in (DNAT_CHAIN, POST_CHAIN):
        batch.declare("nat", chain)  # flushes every entry rule
    wanted: dict[str, tuple[list[str], str]] = {}
    for record in records:
        tag = owner_tag(record.key)
        for chain, rules in chains(record, family).items():
            wanted[chain] = (rules, tag)
    for chain in sorted(saved.ours() - set(wanted)):
        batch.declare("nat", chain)
        batch.add("nat", f"-X {chain}")
    for chain, (rules, tag) in wanted.items():
        batch.declare("nat", chain)
        batch.add("nat", *rules, entry_rule(chain, tag))
    return batch.text()


# -- the backend ----------------------------------------------------------------------------


class IptablesFirewall(Backend):
    """Firewall backend on iptables chains of our own (see the module docstring).

    variant: "" uses iptables-restore as installed; "nft" or "legacy" pick
    iptables-nft-restore / iptables-legacy-restore explicitly."""

    name = "iptables"

    def __init__(self, variant: str = "", store: object = None) -> None:
        super().__init__(store)  # type: ignore[arg-type]
        self.suffix = f"-{variant}" if variant else ""

    def _tool(self, family: int, what: str) -> str | None:
        from pycni.firewall import spawn

        return spawn.which(f"{'ip' if family == 4 else 'ip6'}tables{self.suffix}-{what}")

    def available(self) -> bool:
        save = self._tool(4, "save")
        if save is None or self._tool(4, "restore") is None:
            return False
        from pycni.firewall import spawn

        try:
            return spawn.run([save, "-t", "nat"], timeout=30).rc == 0
        except errors.CniError:
            return False

    # -- running the tools -----------------------------------------------------------------

    def _save(self, family: int) -> Saved:
        from pycni.firewall import spawn

        save = self._tool(family, "save")
        if save is None:
            raise errors.PluginNotAvailable(NOT_AVAILABLE)
        done = spawn.run([save], timeout=60)
        if done.rc != 0:
            raise _error(done, "cannot read the ruleset")
        return Saved(done.stdout.decode("utf-8", "replace"))

    def _restore(self, family: int, text: str) -> None:
        if not text:
            return
        from pycni.firewall import spawn

        restore = self._tool(family, "restore")
        if restore is None:
            raise errors.PluginNotAvailable(NOT_AVAILABLE)
        argv = [restore, "--noflush", f"--wait={WAIT_SECONDS}"]
        done = spawn.run(argv, text.encode(), timeout=WAIT_SECONDS + 60)
        if done.rc != 0:
            raise _error(done, "cannot apply the rules")

    # -- primitives ----------------------------------------------------------------------------

    def _apply(self, old: Record | None, new: Record | None, parts: set[str]) -> None:
        # Chains are regenerated from the whole new record, so `parts` needs no care.
        for family in sorted(families(old) | families(new)):
            saved = self._save(family)
            self._restore(family, transition(saved, old, new, family))

    def _orphans(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for family in (4, 6):
            if self._tool(family, "save") is None:
                continue
            for _, tag, target in self._save(family).entries():
                kind = target.split("-")[1] if target.count("-") >= 2 else ""
                what = {"DN": "published ports", "HP": "hairpin SNAT", "MQ": "masquerade"}
                out.setdefault(tag, []).append(f"{what.get(kind, target)} (IPv{family})")
        return out

    def _remove_tags(self, tags: set[str], parts: set[str]) -> None:
        kinds = {k for p in parts for k in PART_KINDS[p]}
        for family in (4, 6):
            if self._tool(family, "save") is None:
                continue
            saved = self._save(family)
            batch = Batch()
            doomed = {
                target
                for _, tag, target in saved.entries()
                if tag in tags and target.split("-")[1] in kinds
            }
            for tag in tags:
                doomed.update(
                    c for c in (chain_name(k, tag) for k in kinds) if saved.has_chain("nat", c)
                )
            for chain in sorted(doomed):
                drop_chain(batch, saved, chain)
            self._restore(family, batch.text())

    def _rebuild(self, records: list[Record]) -> None:
        for family in (4, 6):
            mine = [r for r in records if family in families(r)]
            if self._tool(family, "save") is None:
                if mine:
                    raise errors.PluginNotAvailable(NOT_AVAILABLE)
                continue
            saved = self._save(family)
            if not mine and not saved.ours():
                continue  # nothing saved and nothing of ours there: touch nothing
            self._restore(family, rebuild(saved, mine, family))

    def _check(self, record: Record, parts: set[str]) -> list[str]:
        kinds = {k for p in parts for k in PART_KINDS[p]}
        tag = owner_tag(record.key)
        missing = []
        for family in sorted(families(record)):
            saved = self._save(family)
            for table, rule in builtin_jumps(family):
                if table == "nat" and rule not in saved.rules.get(table, []):
                    missing.append(f"IPv{family} {table}: rule {rule!r} missing")
            present = set(saved.rules.get("nat", []))
            for chain, rules in chains(record, family).items():
                if chain.split("-")[1] not in kinds:
                    continue
                for rule in [entry_rule(chain, tag), *rules]:
                    if rule not in present:
                        missing.append(f"IPv{family} nat: rule {rule!r} missing")
        return missing


def _error(done: Completed, what: str) -> errors.CniError:
    err = done.stderr.decode("utf-8", "replace")
    if done.rc == 4 and "xtables lock" in err:
        return errors.TryAgainLater(
            f"iptables: {what}: another program holds the xtables lock",
            f"gave up after {WAIT_SECONDS}s; retry",
        )
    if "Permission denied" in err or "Operation not permitted" in err:
        return errors.InvalidEnvironment(f"iptables: {what}", f"{done.describe()}; run as root")
    return errors.CniError(f"iptables: {what}", done.describe())
