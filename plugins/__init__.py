"""CNI plugins (pycni.plugins): one module per plugin, each with a `main()`.

The table `PLUGINS` maps an executable name, spelled as the reference plugins spell
it, to the module that implements it; `netctl plugins install` writes one executable
per entry.
"""

from __future__ import annotations

TYPE_CHECKING = False  # this package is imported by every plugin process: nothing else
if TYPE_CHECKING:
    from pycni import skel

PLUGINS = {
    "loopback": "pycni.plugins.loopback",
    "host-local": "pycni.ipam.host_local",
    "static": "pycni.ipam.static",
    "bridge": "pycni.plugins.bridge",
    "portmap": "pycni.plugins.portmap",
    "isolation": "pycni.plugins.isolation",
    "tuning": "pycni.plugins.tuning",
    "firewall": "pycni.plugins.firewall",
    "bandwidth": "pycni.plugins.bandwidth",
    "sbr": "pycni.plugins.sbr",
    "vrf": "pycni.plugins.vrf",
    "macvlan": "pycni.plugins.macvlan",
    "ipvlan": "pycni.plugins.ipvlan",
    "vlan": "pycni.plugins.vlan",
    "dummy": "pycni.plugins.dummy",
    "tap": "pycni.plugins.tap",
    "ptp": "pycni.plugins.ptp",
    "host-device": "pycni.plugins.host_device",
    "dhcp": "pycni.ipam.dhcp",
    "dns": "pycni.plugins.dns",
    "overlay": "pycni.plugins.overlay",
    "etcd-ipam": "pycni.ipam.etcd_ipam",
}


def load(name: str) -> skel.Verbs | None:
    """The VERBS of our plugin `name` (a key of PLUGINS), imported into this process;
    None for a name that is not ours. The one in-process loader: libcni's in-process
    chains, IPAM delegation and the agent all come through here."""
    module = PLUGINS.get(name)
    if module is None:
        return None
    verbs: skel.Verbs = __import__(module, fromlist=["VERBS"]).VERBS
    return verbs
