"""Firewall backends (nftables, iptables) behind one domain-level interface.

`get_backend(name)` picks one: "nftables", "iptables", or None for nftables when it
is usable on this machine and iptables otherwise. The modules are imported only when
chosen, so a plugin pays for one backend.

With None the choice is made at first use (a probe of the kernel), once: `available()`
answers from that probe, and a DEL of an attachment that has a record goes to the
backend the record names without probing anything (the record says where its entries
are; a DEL is most of the time exactly that).
"""

from __future__ import annotations

from pycni import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.firewall.base import Attachment, Firewall, PortMapping
    from pycni.firewall.conditions import Condition
    from pycni.firewall.nftables import NftablesFirewall

BACKENDS = ("nftables", "iptables")


def get_backend(name: str | None = None) -> Firewall:
    if name is None or name == "":
        return AutoBackend()
    if name == "nftables":
        from pycni.firewall.nftables import NftablesFirewall

        return NftablesFirewall()
    if name == "iptables":
        from pycni.firewall.iptables import IptablesFirewall

        return IptablesFirewall()
    raise errors.InvalidConfig(
        f"unknown firewall backend {name!r}", f"valid values: {', '.join(BACKENDS)}"
    )


# A table name nobody uses (nft names are at most 255 bytes; ours is "pycni").
_PROBE_TABLE = "pycni-availability-probe"


def nftables_usable(nft: NftablesFirewall) -> bool:
    """Whether nftables answers here, in O(1): a read of one table that does not exist.
    "No such file or directory" is nf_tables answering; anything else (no library or
    binary, no kernel support, no permission) means unusable. Not `list tables`: for
    that libnftables (1.0.6) fills its cache with every set element first, ~2 ms per
    1,000 elements (7 ms with 3,000: the node of a 1,000-container chain), and this
    runs on every ADD and DEL."""
    from pycni.firewall.nftables import NftError

    if nft.nft.mode() is None:
        return False
    try:
        nft.nft.run([{"list": {"table": {"family": "inet", "name": _PROBE_TABLE}}}])
    except NftError as exc:
        return "No such file or directory" in str(exc)
    except errors.CniError:
        return False
    return True  # it exists (someone made it): nf_tables answered all the same


def choose() -> tuple[Firewall, bool]:
    """(nftables when usable, else iptables when usable, else nftables, whose errors say
    what to install; whether the one returned is usable)."""
    from pycni.firewall.nftables import NftablesFirewall

    nft = NftablesFirewall()
    if nftables_usable(nft):
        return nft, True
    from pycni.firewall.iptables import IptablesFirewall

    ipt = IptablesFirewall()
    if ipt.available():
        return ipt, True
    return nft, False


class AutoBackend:
    """get_backend(None): the backend `choose()` picks, probed at first use only."""

    __slots__ = ("_chosen", "_usable")

    def __init__(self) -> None:
        self._chosen: Firewall | None = None
        self._usable = False

    def backend(self) -> Firewall:
        if self._chosen is None:
            self._chosen, self._usable = choose()
        return self._chosen

    @property
    def name(self) -> str:
        return self.backend().name

    @name.setter
    def name(self, value: str) -> None:
        raise AttributeError("the name of the chosen backend")

    def available(self) -> bool:
        self.backend()
        return self._usable

    def _for_del(self, key: tuple[str, str, str]) -> Firewall | None:
        """The backend a record of `key` names, without a probe; None: no record."""
        if self._chosen is not None:
            return None
        from pycni.firewall.store import Store

        try:
            record = Store().load(key)
        except errors.CniError:
            return None
        if record is None or record.backend not in BACKENDS:
            return None
        return get_backend(record.backend)

    def _del(self, verb: str, network: str, container_id: str, ifname: str) -> None:
        direct = self._for_del((network, container_id, ifname))
        if direct is not None:
            try:
                getattr(direct, verb)(network, container_id, ifname)
                return
            except errors.PluginNotAvailable:
                pass  # that backend is gone from this machine: as before, the chosen one
        getattr(self.backend(), verb)(network, container_id, ifname)

    def del_masquerade(self, network: str, container_id: str, ifname: str) -> None:
        self._del("del_masquerade", network, container_id, ifname)

    def del_port_mappings(self, network: str, container_id: str, ifname: str) -> None:
        self._del("del_port_mappings", network, container_id, ifname)

    def add_masquerade(self, att: Attachment) -> None:
        self.backend().add_masquerade(att)

    def check_masquerade(self, att: Attachment) -> list[str]:
        return self.backend().check_masquerade(att)

    def add_port_mappings(
        self,
        att: Attachment,
        mappings: list[PortMapping],
        snat: bool = True,
        masq_all: bool = False,
        conditions: dict[int, list[Condition]] | None = None,
    ) -> None:
        self.backend().add_port_mappings(att, mappings, snat, masq_all, conditions)

    def check_port_mappings(
        self,
        att: Attachment,
        mappings: list[PortMapping],
        conditions: dict[int, list[Condition]] | None = None,
    ) -> list[str]:
        return self.backend().check_port_mappings(att, mappings, conditions)

    def gc(self, network: str, valid: set[tuple[str, str]]) -> list[str]:
        return self.backend().gc(network, valid)

    def attachments(self) -> set[tuple[str, str, str]]:
        return self.backend().attachments()

    def replay(self) -> int:
        return self.backend().replay()
