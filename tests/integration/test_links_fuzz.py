"""Random configs for the one-link plugins (macvlan, ipvlan, vlan, dummy, tap), in the
loop of test_bad_input_corpus: every verb answers success or a CNI error with a code
other than 999, never a traceback. The container namespace does not exist, so nothing
on the machine changes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st

from tests.integration.test_bad_input_corpus import (
    IPAM_KEYS,
    RC_KEYS,
    fuzz_plugin,
    json_values,
)

pytestmark = pytest.mark.root

KEYS = ["master", "mode", "mtu", "mac", "linkInContainer", "bcqueuelen", "vlanId",
        "multiQueue", "owner", "group", "selinuxcontext", "bridge", "dns", "prevResult"]  # fmt: skip
# well-formed values of the keys, so a draw also gets past the type checks
GOOD = {
    "master": st.sampled_from(["lo", "nosuch0", "", "a/b"]),
    "mode": st.sampled_from(["bridge", "private", "vepa", "passthru", "l2", "l3", "l3s", "x"]),
    "mtu": st.integers(-5, 70000),
    "vlanId": st.integers(-2, 5000),
    "owner": st.integers(-1, 1 << 33),
    "mac": st.sampled_from(["02:00:00:00:00:01", "01:00:00:00:00:01", "zz"]),
}


@st.composite
def link_confs(draw: st.DrawFn, plugin: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": draw(st.sampled_from(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])),
        "name": "fuzznet",
        "type": plugin,
    }
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=5, unique=True)):
        strategy = GOOD.get(key)
        conf[key] = draw(strategy | json_values if strategy is not None else json_values)
    if draw(st.booleans()):
        ipam: dict[str, Any] = {"type": draw(st.sampled_from(["host-local", "static", ""]))}
        for key in draw(st.lists(st.sampled_from(IPAM_KEYS), max_size=3, unique=True)):
            ipam[key] = draw(json_values)
        ipam["dataDir"] = "/nonexistent-fuzz-datadir/x"
        conf["ipam"] = ipam
    rc = {k: draw(json_values) for k in draw(st.lists(st.sampled_from(RC_KEYS), max_size=2))}
    if rc:
        conf["runtimeConfig"] = rc
    return conf


@pytest.mark.parametrize("plugin", ["macvlan", "ipvlan", "vlan", "dummy", "tap"])
def test_fuzz_never_internal_error(plugin: str, host_ns, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path / "state"))
    fuzz_plugin(plugin, host_ns, link_confs(plugin))
