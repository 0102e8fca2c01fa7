"""Forward-accept for the `firewall` plugin: let a container's traffic through a host
whose forward chain drops, as the reference firewall plugin does.

Two placements, one record per attachment in the shared store
(`state_dir()/firewall/.forward/<network>/<cid>-<ifname>.json`, under the store's lock):

- **iptables** (the reference's layout, byte for byte, so either side's DEL removes the
  other's ADD): in table `filter`, chains `CNI-FORWARD` and the admin chain (default
  `CNI-ADMIN`); `FORWARD` starts with `-m comment --comment "CNI firewall plugin rules"
  -j CNI-FORWARD`, `CNI-FORWARD` starts with the jump to the admin chain (comment "CNI
  firewall plugin admin overrides"), then per container address
  `-d IP/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT` and `-s IP/32 -j ACCEPT`.
  `ingressPolicy` same-bridge / isolated adds the reference's `CNI-ISOLATION-STAGE-1/2`
  chains (iptables on either backend, as the reference).
- **nftables**: nftables evaluates every base chain at a hook and a drop anywhere is
  final, so an accept in a table of our own cannot let a packet past someone else's
  `policy drop`. The backend therefore looks for base chains at hook forward with
  policy drop and puts the accepts *where that drop lives*: iptables' `filter FORWARD`
  (iptables-nft) gets the reference's iptables layout above; a chain in another nft table
  gets the same shape in nft (chains `CNI-FORWARD` and the admin chain in that table, a
  jump at the top of the base chain, per-address rules commented with the owner tag). A
  host without a dropping forward chain needs nothing: only the record is written.

Rule text is built from constants, `ipaddress` output, a validated chain name and a
validated interface name only.
"""

from __future__ import annotations

import ipaddress
import os

from pycni import errors, fastjson, names
from pycni.firewall.nft import ACCEPT, match, payload
from pycni.firewall.plan import owner_tag
from pycni.firewall.store import Records, Store
from pycni.recordstore import read_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
    Key = tuple[str, str, str]

PRIV = "CNI-FORWARD"
ADMIN_DEFAULT = "CNI-ADMIN"
FILTER_COMMENT = "CNI firewall plugin rules"
ADMIN_COMMENT = "CNI firewall plugin admin overrides"
DNAT_COMMENT = "CNI firewall plugin rules (published ports)"
STAGE1 = "CNI-ISOLATION-STAGE-1"
STAGE2 = "CNI-ISOLATION-STAGE-2"
POLICY_DEFAULT_COMMENT = "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)"
POLICIES = ("open", "same-bridge", "isolated")


def _chain_ok(name: str) -> bool:
    """[A-Za-z0-9_.-]{1,28}: what the reference lets into an iptables chain name."""
    return 0 < len(name) <= 28 and all(c in names.NAME_CHARS for c in name)


def _ifname_ok(name: str) -> bool:
    """[^\\s/:'"!]{1,15} (no `re` on the plugin's start-up path)."""
    return 0 < len(name) <= 15 and not any(c.isspace() or c in "/:'\"!" for c in name)


NOT_AVAILABLE = (
    "iptables-save/iptables-restore not found",
    "the firewall plugin's iptables placement needs the iptables package",
)


def check_chain_name(name: str, where: str) -> str:
    if not _chain_ok(name) or name in ("FORWARD", "INPUT", "OUTPUT", PRIV):
        raise errors.InvalidConfig(
            f"{where}: invalid iptablesAdminChainName {name!r}",
            "use 1-28 letters, digits, '_', '.' or '-', not a built-in chain or CNI-FORWARD",
        )
    return name


def host(ip: IPInterface) -> str:
    """The reference's spelling of a container address in a rule: IP/32 or IP/128."""
    return f"{ip.ip}/{32 if ip.version == 4 else 128}"


# -- iptables: the reference's layout --------------------------------------------------


def q(text: str) -> str:
    return f'"{text}"'


def ipt_jump_rule() -> str:
    return f"-A FORWARD -m comment --comment {q(FILTER_COMMENT)} -j {PRIV}"


def ipt_admin_rule(admin: str) -> str:
    return f"-A {PRIV} -m comment --comment {q(ADMIN_COMMENT)} -j {admin}"


def ipt_dnat_rule() -> str:
    """Ours, not the reference's: shared (never removed, like the jumps), after the admin
    jump, so published ports (portmap's DNAT) pass a drop policy too."""
    return f"-A {PRIV} -m conntrack --ctstate DNAT -m comment --comment {q(DNAT_COMMENT)} -j ACCEPT"


def ipt_ip_rules(ip: IPInterface) -> list[str]:
    h = host(ip)
    return [
        f"-A {PRIV} -d {h} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A {PRIV} -s {h} -j ACCEPT",
    ]


def ipt_policy_rules(bridge: str, isolated: bool) -> list[tuple[str, str, bool]]:
    """(chain, iptables-save line, prepend) of the reference's isolation chains, in the
    reference's order of insertion."""
    name = "isolated" if isolated else "same-bridge"
    pc = q(f"CNI firewall plugin rules (ingressPolicy: {name})")
    # The reference 1.1.1 (Debian's, which predates "isolated") comments every rule with
    # the policy's comment; later versions use one shared comment for the shared rules.
    # same-bridge keeps 1.1.1's spelling (the binary these hosts mix with), isolated the
    # later one.
    dc = q(POLICY_DEFAULT_COMMENT) if isolated else pc
    out = [
        ("FORWARD", f"-A FORWARD -m comment --comment {dc} -j {STAGE1}", True),
        (
            STAGE1,
            f"-A {STAGE1} -i {bridge} ! -o {bridge} -m comment --comment {pc} -j {STAGE2}",
            True,
        ),
    ]
    if isolated:
        out.append(
            (STAGE1, f"-A {STAGE1} -i {bridge} -o {bridge} -m comment --comment {pc} -j DROP", True)
        )
    out += [
        (STAGE1, f"-A {STAGE1} -m comment --comment {dc} -j RETURN", False),
        (STAGE2, f"-A {STAGE2} -o {bridge} -m comment --comment {dc} -j DROP", True),
        (STAGE2, f"-A {STAGE2} -m comment --comment {dc} -j RETURN", False),
    ]
    return out


class FilterTable:
    """iptables-save -t filter, as lines, with what a batch has added since."""

    def __init__(self, text: str) -> None:
        self.chains: set[str] = set()
        self.rules: set[str] = set()
        for line in text.splitlines():
            if line.startswith(":"):
                self.chains.add(line[1:].split(" ", 1)[0])
            elif line.startswith("-A "):
                self.rules.add(line.rstrip())


class Iptables:
    """The reference's iptables layout in the filter table, one
    `iptables-save -t filter` + one `iptables-restore --noflush` per family and call."""

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix

    def _tool(self, family: int, what: str) -> str:
        from pycni.firewall import spawn

        path = spawn.which(f"{'ip' if family == 4 else 'ip6'}tables{self.suffix}-{what}")
        if path is None:
            raise errors.PluginNotAvailable(*NOT_AVAILABLE)
        return path

    def available(self) -> bool:
        try:
            self._tool(4, "save")
            self._tool(4, "restore")
        except errors.CniError:
            return False
        return True

    def save(self, family: int) -> FilterTable:
        from pycni.firewall import spawn

        done = spawn.run([self._tool(family, "save"), "-t", "filter"], timeout=60)
        if done.rc != 0:
            raise errors.CniError("cannot read the iptables filter table", done.describe())
        return FilterTable(done.stdout.decode("utf-8", "replace"))

    def restore(self, family: int, lines: list[str]) -> None:
        if not lines:
            return
        from pycni.firewall import spawn

        text = "*filter\n" + "\n".join(lines) + "\nCOMMIT\n"
        argv = [self._tool(family, "restore"), "--noflush", "--wait=60"]
        done = spawn.run(argv, text.encode(), timeout=120)
        if done.rc != 0:
            raise errors.CniError("iptables-restore failed in table filter", done.describe())

    @staticmethod
    def _ensure_chain(t: FilterTable, chain: str, out: list[str]) -> None:
        if chain not in t.chains:
            out.insert(0, f":{chain} - [0:0]")  # declarations before rules
            t.chains.add(chain)

    @staticmethod
    def _insert_unique(t: FilterTable, line: str, prepend: bool, out: list[str]) -> None:
        if line in t.rules:
            return
        t.rules.add(line)
        if prepend:  # "-A CHAIN rest" -> "-I CHAIN 1 rest"
            chain, rest = line[3:].split(" ", 1)
            line = f"-I {chain} 1 {rest}"
        out.append(line)

    def add(self, family: int, ips: list[IPInterface], admin: str) -> None:
        rules = [r for ip in ips if ip.version == family for r in ipt_ip_rules(ip)]
        if not rules:
            return
        t = self.save(family)
        out: list[str] = []
        for chain in (PRIV, admin):
            self._ensure_chain(t, chain, out)
        self._insert_unique(t, ipt_jump_rule(), True, out)
        self._insert_unique(t, ipt_admin_rule(admin), True, out)
        self._insert_unique(t, ipt_dnat_rule(), False, out)
        for line in rules:
            self._insert_unique(t, line, False, out)
        self.restore(family, out)

    def add_policy(self, family: int, bridge: str, isolated: bool) -> None:
        t = self.save(family)
        out: list[str] = []
        for chain in (STAGE1, STAGE2):
            self._ensure_chain(t, chain, out)
        for _chain, line, prepend in ipt_policy_rules(bridge, isolated):
            self._insert_unique(t, line, prepend, out)
        self.restore(family, out)

    def remove(self, family: int, ips: list[IPInterface]) -> None:
        rules = [r for ip in ips if ip.version == family for r in ipt_ip_rules(ip)]
        if not rules:
            return
        t = self.save(family)
        self.restore(family, [f"-D {r[3:]}" for r in rules if r in t.rules])

    def check(self, family: int, ips: list[IPInterface], admin: str) -> list[str]:
        rules = [r for ip in ips if ip.version == family for r in ipt_ip_rules(ip)]
        if not rules:
            return []
        t = self.save(family)
        missing = [f"chain {c} not found" for c in (PRIV, admin) if c not in t.chains]
        want = [ipt_jump_rule(), ipt_admin_rule(admin), *rules]
        missing += [f"expected rule {r!r} not found" for r in want if r not in t.rules]
        return [f"ipv{family}: {m}" for m in missing]


# -- nftables: accept where a native nft drop lives ------------------------------------


def _nft_addr_rules(ip: IPInterface, tag: str) -> list[dict[str, Any]]:
    proto = "ip" if ip.version == 4 else "ip6"
    ct = match({"ct": {"key": "state"}}, ["established", "related"], "in")
    return [
        {"expr": [match(payload(proto, "daddr"), str(ip.ip)), ct, ACCEPT], "comment": tag},
        {"expr": [match(payload(proto, "saddr"), str(ip.ip)), ACCEPT], "comment": tag},
    ]


def _family_fits(table_family: str, ip: IPInterface) -> bool:
    return table_family in ("inet", "bridge") or table_family == (
        "ip" if ip.version == 4 else "ip6"
    )


def is_iptables_chain(family: str, table: str, chain: str) -> bool:
    return family in ("ip", "ip6") and table == "filter" and chain == "FORWARD"


class NftPlaces:
    """Chains of other nft tables (not iptables') that drop forwarded traffic."""

    def __init__(self) -> None:
        from pycni.firewall.nft import Nft

        self.nft = Nft()

    def run(self, cmds: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        from pycni.firewall.nft import NftError

        try:
            return self.nft.run(cmds)
        except NftError as exc:
            raise errors.CniError(f"nftables: {what} failed", str(exc)) from None

    def dropping_chains(self) -> list[tuple[str, str, str]]:
        """(family, table, chain) of every base chain at hook forward with policy drop."""
        out = []
        for item in self.run([{"list": {"chains": {}}}], "listing chains"):
            c = item.get("chain")
            if not c or c.get("hook") != "forward" or c.get("policy") != "drop":
                continue
            if c.get("family") in ("ip", "ip6", "inet"):
                out.append((c["family"], c["table"], c["name"]))
        return out

    def _rules(self, family: str, table: str, chain: str) -> list[dict[str, Any]] | None:
        from pycni.firewall.nft import NftError

        try:
            listing = self.nft.run(
                [{"list": {"chain": {"family": family, "table": table, "name": chain}}}]
            )
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise errors.CniError(f"nftables: cannot list chain {chain}", str(exc)) from None
        return [i["rule"] for i in listing if "rule" in i]

    def add(
        self, place: tuple[str, str, str], ips: list[IPInterface], admin: str, tag: str
    ) -> None:
        family, table, base = place
        t = {"family": family, "table": table}
        cmds: list[dict[str, Any]] = [
            {"add": {"chain": {**t, "name": PRIV}}},
            {"add": {"chain": {**t, "name": admin}}},
        ]
        base_rules = self._rules(family, table, base) or []
        if not any(r.get("comment") == FILTER_COMMENT for r in base_rules):
            rule = {
                **t,
                "chain": base,
                "expr": [{"jump": {"target": PRIV}}],
                "comment": FILTER_COMMENT,
            }
            cmds.append({"insert": {"rule": rule}})
        priv = self._rules(family, table, PRIV) or []
        if not any(r.get("comment") == ADMIN_COMMENT for r in priv):
            rule = {
                **t,
                "chain": PRIV,
                "expr": [{"jump": {"target": admin}}],
                "comment": ADMIN_COMMENT,
            }
            cmds.append({"insert": {"rule": rule}})
        if not any(r.get("comment") == DNAT_COMMENT for r in priv):
            dnated = match({"ct": {"key": "status"}}, "dnat", "in")
            rule = {**t, "chain": PRIV, "expr": [dnated, ACCEPT], "comment": DNAT_COMMENT}
            cmds.append({"add": {"rule": rule}})
        if not any(r.get("comment") == tag for r in priv):
            for ip in ips:
                if _family_fits(family, ip):
                    for r in _nft_addr_rules(ip, tag):
                        cmds.append({"add": {"rule": {**t, "chain": PRIV, **r}}})
        self.run(cmds, f"adding forward-accept rules to table {family} {table}")

    def remove(self, place: tuple[str, str, str], tag: str) -> None:
        family, table, _base = place
        rules = self._rules(family, table, PRIV)
        handles = [r["handle"] for r in rules or [] if r.get("comment") == tag]
        if handles:
            cmds = [
                {"delete": {"rule": {"family": family, "table": table, "chain": PRIV, "handle": h}}}
                for h in handles
            ]
            self.run(cmds, f"removing forward-accept rules from table {family} {table}")

    def check(self, place: tuple[str, str, str], ips: list[IPInterface], tag: str) -> list[str]:
        family, table, base = place
        where = f"table {family} {table}"
        base_rules = self._rules(family, table, base)
        if base_rules is None:
            return [f"{where}: chain {base} not found"]
        missing = []
        if not any(r.get("comment") == FILTER_COMMENT for r in base_rules):
            missing.append(f"{where}: jump from {base} to {PRIV} not found")
        want = sum(2 for ip in ips if _family_fits(family, ip))
        have = sum(1 for r in self._rules(family, table, PRIV) or [] if r.get("comment") == tag)
        if have < want:
            missing.append(f"{where}: accept rules of {tag} in {PRIV} not found")
        return missing


# -- the record and the verbs ------------------------------------------------------------


class ForwardRecord:
    """What one attachment's ADD placed, so DEL needs neither prevResult nor a probe."""

    def __init__(
        self,
        key: Key,
        backend: str,
        ips: list[IPInterface],
        admin: str,
        iptables: list[int],
        nft: list[tuple[str, str, str]],
    ) -> None:
        self.key = key
        self.backend = backend
        self.ips = ips
        self.admin = admin
        #: address families whose iptables filter table holds our rules
        self.iptables = iptables
        #: (family, table, base chain) of nft tables holding our rules
        self.nft = nft

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": list(self.key),
            "backend": self.backend,
            "ips": [str(i) for i in self.ips],
            "admin": self.admin,
            "iptables": self.iptables,
            "nft": [list(p) for p in self.nft],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ForwardRecord:
        k = d["key"]
        return cls(
            (str(k[0]), str(k[1]), str(k[2])),
            str(d["backend"]),
            [ipaddress.ip_interface(str(i)) for i in d["ips"]],
            check_chain_name(str(d.get("admin") or ADMIN_DEFAULT), "saved record"),
            [int(f) for f in d.get("iptables") or []],
            [(str(p[0]), str(p[1]), str(p[2])) for p in d.get("nft") or []],
        )


class ForwardStore:
    """Records next to the backends' own (`Store`), under the same lock."""

    def __init__(self, store: Store | None = None) -> None:
        self.files = Records("forward", store)
        self.store = self.files.store
        self.root = self.files.root

    def path(self, key: Key) -> str:
        return self.files.path(key)

    def load(self, key: Key) -> ForwardRecord | None:
        return self._read(self.path(key))

    def _read(self, path: str) -> ForwardRecord | None:
        data = read_file(path)
        if data is None:
            return None
        try:
            return ForwardRecord.from_dict(fastjson.loads(data))
        except (ValueError, KeyError, TypeError, IndexError, errors.CniError) as exc:
            # a corrupt record must not wedge DEL: the caller falls back to prevResult
            os.write(2, f"pycni firewall: ignoring corrupt {path}: {exc}\n".encode())
            return None

    def save(self, record: ForwardRecord) -> None:
        self.files.write(self.path(record.key), record.to_dict())

    def remove(self, key: Key) -> None:
        try:
            self.files.delete(key)
        except errors.IOFailure:
            pass  # removing must not wedge DEL

    def records(self, network: str) -> list[ForwardRecord]:
        found = []
        for key in self.files.attachments(network):
            try:
                record = self.load(key)
            except errors.CniError:
                continue
            if record is not None:
                found.append(record)
        return found


class Forward:
    """The firewall plugin's verbs. backend: "iptables" (the reference's placement, always)
    or "nftables" (accepts only where a dropping forward chain lives; see the module doc)."""

    def __init__(
        self, backend: str, admin: str = ADMIN_DEFAULT, store: Store | None = None
    ) -> None:
        #: "iptables", "nftables", or "auto" (nftables; iptables when nft cannot answer)
        self.backend = backend
        self.admin = admin
        self.records = ForwardStore(store)
        self.ipt = Iptables()

    def _placements(self, ips: list[IPInterface]) -> tuple[list[int], list[tuple[str, str, str]]]:
        families: list[int] = sorted({ip.version for ip in ips})
        if self.backend == "iptables":
            return families, []
        try:
            dropping = NftPlaces().dropping_chains()
        except errors.CniError:
            if self.backend != "auto":
                raise
            # no usable nftables here: the reference's placement
            self.backend = "iptables"
            return families, []
        ipt: list[int] = []
        nft: list[tuple[str, str, str]] = []
        for family, table, chain in dropping:
            if is_iptables_chain(family, table, chain):
                f = 4 if family == "ip" else 6
                if f in families and f not in ipt:
                    ipt.append(f)
            else:
                nft.append((family, table, chain))
        return sorted(ipt), nft

    def add(self, key: Key, ips: list[IPInterface]) -> None:
        tag = owner_tag(key)
        with self.records.store.lock():
            old = self.records.load(key)
            ipt, nft = self._placements(ips)
            backend = "nftables" if self.backend == "auto" else self.backend
            record = ForwardRecord(key, backend, ips, self.admin, ipt, nft)
            try:
                for family in ipt:
                    self.ipt.add(family, ips, self.admin)
                if nft:
                    places = NftPlaces()
                    for place in nft:
                        places.add(place, ips, self.admin, tag)
                if old is not None:
                    # a repeated ADD: what the old record placed and this one does not
                    self._undo(old, keep=record)
                self.records.save(record)
            except errors.CniError:
                self._undo(record, keep=old)
                raise

    def _undo(self, record: ForwardRecord, keep: ForwardRecord | None = None) -> None:
        tag = owner_tag(record.key)
        kept_ips = {str(i.ip) for i in keep.ips} if keep else set()
        gone = [ip for ip in record.ips if str(ip.ip) not in kept_ips]
        for family in record.iptables:
            try:
                self.ipt.remove(family, gone if keep else record.ips)
            except errors.CniError as exc:
                os.write(2, f"pycni firewall: {exc}\n".encode())
        keep_nft = set(keep.nft) if keep else set()
        if record.nft:
            places = NftPlaces()
            for place in record.nft:
                if place in keep_nft:
                    continue
                try:
                    places.remove(place, tag)
                except errors.CniError as exc:
                    os.write(2, f"pycni firewall: {exc}\n".encode())

    def delete(self, key: Key, prev_ips: list[IPInterface], keep: set[str] | None = None) -> None:
        """The record's placements; without one (a reference ADD, lost state), the
        reference's DEL: its iptables rules of prevResult's addresses. iptables rules
        are keyed by address only (the reference's layout): addresses in `keep` are
        in use by another attachment, and their rules stay."""
        with self.records.store.lock():
            record = self.records.load(key)
            if record is None:
                for fam in sorted({ip.version for ip in prev_ips}):
                    if self.ipt.available():
                        self.ipt.remove(fam, prev_ips)
                return
            tag = owner_tag(key)
            ips = [ip for ip in record.ips if str(ip.ip) not in (keep or set())]
            for family in record.iptables:
                self.ipt.remove(family, ips)
            if record.nft:
                places = NftPlaces()
                for place in record.nft:
                    places.remove(place, tag)
            self.records.remove(key)

    def check(self, key: Key, ips: list[IPInterface]) -> list[str]:
        record = self.records.load(key)
        ipt: list[int]
        nft: list[tuple[str, str, str]]
        if record is None:
            if self.backend != "iptables":
                raise errors.UnknownContainer(
                    f"firewall: no saved state for container {key[1]} ifname {key[2]}",
                    "CHECK of an attachment this plugin never added",
                )
            ipt, nft = sorted({ip.version for ip in ips}), []
        else:
            ipt, nft = record.iptables, record.nft
        missing = []
        for family in ipt:
            missing += self.ipt.check(family, ips, self.admin)
        if nft:
            places = NftPlaces()
            for place in nft:
                missing += places.check(place, ips, owner_tag(key))
        return missing

    def gc(self, network: str, valid: set[tuple[str, str]]) -> list[str]:
        removed = []
        records = self.records.records(network)
        # a stale record's address may belong to a live attachment by now
        live = {str(ip.ip) for r in records if (r.key[1], r.key[2]) in valid for ip in r.ips}
        for record in records:
            if (record.key[1], record.key[2]) in valid:
                continue
            self.delete(record.key, record.ips, keep=live)
            removed.append(f"removed forward-accept rules of container {record.key[1]}")
        return removed


def replay(store: Store | None = None) -> int:
    """Re-apply every saved forward-accept record (after someone flushed the ruleset,
    as `netctl system reload` does for the backends' records); the placements are
    probed again, since the drop may live elsewhere now. Returns how many."""
    fs = ForwardStore(store)
    count = 0
    for key in fs.files.attachments():
        record = fs.load(key)
        if record is not None:
            backend = "iptables" if record.backend == "iptables" else "auto"
            Forward(backend, record.admin, fs.store).add(record.key, record.ips)
            count += 1
    return count


def add_ingress_policy(policy: str, bridge: str, families: list[int]) -> None:
    """The reference's bridge isolation chains (iptables on every backend, as the
    reference). Never torn down on DEL: the bridge may still serve other containers."""
    if policy in ("", "open"):
        return
    if not _ifname_ok(bridge):
        raise errors.InvalidConfig(f"invalid bridge name {bridge!r} in prevResult")
    ipt = Iptables()
    for family in families:
        ipt.add_policy(family, bridge, policy == "isolated")


# -- firewalld ------------------------------------------------------------------------------

FIREWALLD_PIDFILES = ("/run/firewalld.pid", "/var/run/firewalld.pid")


def firewalld_running() -> bool:
    """firewalld's pid file naming a live process (no D-Bus client on the plugin path)."""
    for path in FIREWALLD_PIDFILES:
        try:
            with open(path, "rb") as fh:
                pid = int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if os.path.exists(f"/proc/{pid}"):
            return True
    return False


def firewalld_not_running() -> errors.CniError:
    return errors.PluginNotAvailable(
        'firewall: backend "firewalld" requested but firewalld is not running',
        'start firewalld (systemctl start firewalld), or set "backend" to "nftables" or "iptables"',
    )


class Firewalld:
    """firewalld through firewall-cmd: the container's addresses as sources of a zone
    (the reference's addSource/removeSource/querySource over D-Bus)."""

    def __init__(self, zone: str) -> None:
        from pycni.firewall import spawn

        if not firewalld_running():
            raise firewalld_not_running()
        self.cmd = spawn.which("firewall-cmd")
        if self.cmd is None:
            raise errors.PluginNotAvailable("firewall: firewall-cmd not found", "install firewalld")
        if not _chain_ok(zone):
            raise errors.InvalidConfig(f"firewall: invalid firewalldZone {zone!r}")
        self.zone = zone

    def _run(self, verb: str, ip: IPInterface) -> int:
        from pycni.firewall import spawn

        argv = [self.cmd or "", f"--zone={self.zone}", f"--{verb}-source={host(ip)}"]
        return spawn.run(argv, timeout=60).rc

    def add(self, ips: list[IPInterface]) -> None:
        for ip in ips:
            if self._run("add", ip) != 0:
                raise errors.CniError(
                    f"firewalld: cannot add source {host(ip)} to zone {self.zone}"
                )

    def delete(self, ips: list[IPInterface]) -> None:
        for ip in ips:
            self._run("remove", ip)

    def check(self, ips: list[IPInterface]) -> list[str]:
        return [
            f"source {host(ip)} not in zone {self.zone}"
            for ip in ips
            if self._run("query", ip) != 0
        ]
