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
from pycni.firewall.base import Isolation, NetworkVerbs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.firewall.base import Firewall

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


def choose() -> tuple[Firewall, bool]:
    """(nftables when usable, else iptables when usable, else nftables, whose errors say
    what to install; whether the one returned is usable)."""
    from pycni.firewall.nftables import NftablesFirewall

    nft = NftablesFirewall()
    if nft.available():
        return nft, True
    from pycni.firewall.iptables import IptablesFirewall

    ipt = IptablesFirewall()
    if ipt.available():
        return ipt, True
    return nft, False


class AutoBackend(NetworkVerbs):
    """get_backend(None): the backend `choose()` picks, probed at first use only. Every
    verb goes to that backend, except the DELs of a recorded attachment, which go to the
    backend its record names without a probe, and the network-level verbs (isolation,
    spoof checks), which need no backend."""

    __slots__ = ("_chosen", "_usable")

    def __init__(self) -> None:
        self._chosen: Firewall | None = None
        self._usable = False

    def backend(self) -> Firewall:
        if self._chosen is None:
            self._chosen, self._usable = choose()
        return self._chosen

    def __getattr__(self, attr: str) -> Any:
        # name, add_*, check_*, gc, attachments, replay: the chosen backend's own.
        if attr.startswith("_"):
            raise AttributeError(attr)  # an unset slot must not recurse into backend()
        return getattr(self.backend(), attr)

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


def replay(networks: list[Isolation] | None = None) -> list[str]:
    """Re-apply every rule of ours from the saved state, after someone flushed the
    ruleset or restarted a firewall manager (netavark's firewall-reload): published
    ports and masquerade of each usable backend, network isolation, spoof checks and
    the firewall plugin's forward accepts. `netctl system reload` calls this once;
    `networks` are the isolated networks the caller knows of (recorded when no record
    exists yet). Returns one line per part, for a person."""
    from pycni.firewall import forward, isolation, overlay_isolation, spoofcheck

    out = []
    for name in BACKENDS:
        backend = get_backend(name)
        if backend.available():
            out.append(f"{name}: re-applied {backend.replay()} attachment(s)")
    out.append(f"isolation: re-applied {isolation.replay(networks)} network(s)")
    out.append(f"isolation: re-applied {overlay_isolation.replay()} overlay network(s)")
    out.append(f"macspoofchk: re-applied {spoofcheck.replay()} attachment(s)")
    out.append(f"firewall: re-applied {forward.replay()} forward accept(s)")
    return out
