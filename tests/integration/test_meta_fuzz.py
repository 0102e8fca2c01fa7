"""bandwidth, sbr and vrf under random configs (hypothesis): never an internal error
(code 999) for what the caller sent, never a traceback. The verbs run in-process inside
a throwaway host namespace; the container namespace does not exist, so nothing past
the config checks can touch anything."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st

from tests.integration.test_bad_input_corpus import (
    fuzz_plugin,
    json_values,
)

pytestmark = pytest.mark.root

KEYS = {
    "bandwidth": ["ingressRate", "ingressBurst", "egressRate", "egressBurst", "IngressRate"],
    "sbr": ["table", "gateways", "addSourceHints"],
    "vrf": ["vrfname", "table"],
}
numbers = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65), st.floats(allow_nan=False), json_values
)
prev_results = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "cniVersion": st.sampled_from(["0.3.1", "1.0.0", "x"]),
            "interfaces": st.lists(
                st.fixed_dictionaries({"name": st.sampled_from(["eth0", "veth1", ""])}),
                max_size=2,
            ),
            "ips": st.lists(
                st.fixed_dictionaries(
                    {"address": st.sampled_from(["10.0.0.2/24", "fd00::2/64", "bad"])}
                ),
                max_size=2,
            ),
        }
    ),
)


@st.composite
def netconfs(draw: st.DrawFn, plugin: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": draw(st.sampled_from(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])),
        "name": "fuzznet",
        "type": plugin,
    }
    for key in draw(st.lists(st.sampled_from(KEYS[plugin]), max_size=4, unique=True)):
        conf[key] = draw(numbers | st.text(max_size=20))
    if draw(st.booleans()):
        bw = {k: draw(numbers) for k in draw(st.lists(st.sampled_from(KEYS["bandwidth"]), max_size=4, unique=True))}  # fmt: skip
        conf["runtimeConfig"] = draw(
            st.sampled_from([{"bandwidth": bw}, {"bandwidth": draw(json_values)}])
        )
    if draw(st.booleans()):
        conf["prevResult"] = draw(prev_results)
    return conf


@pytest.mark.parametrize("plugin", ["bandwidth", "sbr", "vrf"])
def test_fuzz_never_internal_error(
    plugin: str, host_ns, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path / "state"))
    fuzz_plugin(plugin, host_ns, netconfs(plugin))
