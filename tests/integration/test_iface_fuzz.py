"""ptp, host-device and dhcp under random configs (hypothesis): never an internal error
(code 999) for what the caller sent, never a traceback. The verbs run in-process inside
a throwaway host namespace; the container namespace does not exist, the dhcp daemon
socket and the sysfs root point into the test's tmp dir, so nothing past the config
checks can touch anything."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import strategies as st

from tests.integration.test_bad_input_corpus import fuzz_plugin, json_values

pytestmark = pytest.mark.root

KEYS = {
    "ptp": ["ipMasq", "ipMasqBackend", "mtu", "dns"],
    "host-device": ["device", "hwaddr", "kernelpath", "pciBusID", "dns"],
    "dhcp": [],
}
DHCP_KEYS = ["daemonSocketPath", "provide", "request", "priority"]
values = st.one_of(
    json_values, st.sampled_from(["eth0", "02:00:00:00:00:01", "/sys/devices/x", "0000:00:01.0"])
)


@st.composite
def netconfs(draw: st.DrawFn, plugin: str, tmp: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": draw(st.sampled_from(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])),
        "name": "fuzznet",
        "type": plugin,
    }
    for key in (
        draw(st.lists(st.sampled_from(KEYS[plugin]), max_size=4, unique=True))
        if KEYS[plugin]
        else []
    ):
        conf[key] = draw(values)
    if plugin == "dhcp" or draw(st.booleans()):
        ipam: dict[str, Any] = {"type": draw(st.sampled_from(["host-local", "static", "dhcp"]))}
        for key in draw(st.lists(st.sampled_from(DHCP_KEYS), max_size=3, unique=True)):
            ipam[key] = draw(json_values)
        ipam["daemonSocketPath"] = os.path.join(tmp, "no-daemon.sock")  # never a real socket
        ipam["dataDir"] = os.path.join(tmp, "ipam")
        conf["ipam"] = draw(st.sampled_from([ipam, ipam, draw(json_values)]))
    if draw(st.booleans()):
        conf["runtimeConfig"] = draw(
            st.sampled_from([{"deviceID": draw(values)}, draw(json_values)])
        )
    if draw(st.booleans()):
        conf["prevResult"] = draw(json_values)
    return conf


@pytest.mark.parametrize("plugin", ["ptp", "host-device", "dhcp"])
def test_fuzz_never_internal_error(
    plugin: str, host_ns, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PYCNI_SYSFS", str(tmp_path / "sys"))
    fuzz_plugin(plugin, host_ns, netconfs(plugin, str(tmp_path)))
