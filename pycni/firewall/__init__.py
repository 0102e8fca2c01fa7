"""Firewall backends (nftables, iptables) behind one domain-level interface.

`get_backend(name)` picks one: "nftables", "iptables", or None for nftables when it
is usable on this machine and iptables otherwise. The modules are imported only when
chosen, so a plugin pays for one backend.
"""

from __future__ import annotations

from pycni import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.firewall.base import Firewall

BACKENDS = ("nftables", "iptables")


def get_backend(name: str | None = None) -> Firewall:
    if name is None or name == "":
        from pycni.firewall.nftables import NftablesFirewall

        nft = NftablesFirewall()
        if nft.available():
            return nft
        from pycni.firewall.iptables import IptablesFirewall

        ipt = IptablesFirewall()
        # Neither usable: nftables, whose errors say what to install.
        return ipt if ipt.available() else nft
    if name == "nftables":
        from pycni.firewall.nftables import NftablesFirewall

        return NftablesFirewall()
    if name == "iptables":
        from pycni.firewall.iptables import IptablesFirewall

        return IptablesFirewall()
    raise errors.InvalidConfig(
        f"unknown firewall backend {name!r}", f"valid values: {', '.join(BACKENDS)}"
    )
