"""bandwidth's config reading and token-bucket numbers, without root."""

from __future__ import annotations

from typing import Any

import pytest

from pycni import errors, tc
from pycni.plugins.bandwidth import BandwidthConf, ifb_name


def test_ifb_name_is_the_references() -> None:
    # as the reference 1.1.1 names it for network "bwnet", container "abc123"
    assert ifb_name("bwnet", "abc123") == "bwp13229d9cfd25"


def test_tbf_params_match_the_reference_formula() -> None:
    ticks = tc.tick_in_usec()
    rate, buffer, limit = tc.tbf_params(8_000_000, 80_000)
    assert rate == 1_000_000
    assert limit == 25_000 + 10_000  # 25 ms at the rate, plus the burst
    assert buffer == int(10_000 * ticks)


def test_top_level_keys_win_over_runtime_config() -> None:
    c = BandwidthConf(
        {
            "name": "n",
            "egressRate": 8,
            "egressBurst": 800,
            "runtimeConfig": {"bandwidth": {"ingressRate": 16, "ingressBurst": 80}},
        }
    )
    assert (c.ingress_rate, c.egress_rate, c.egress_burst) == (0, 8, 800)
    c = BandwidthConf(
        {"name": "n", "runtimeConfig": {"bandwidth": {"ingressRate": 16, "ingressBurst": 80}}}
    )
    assert (c.ingress_rate, c.ingress_burst) == (16, 80) and not c.is_zero
    assert BandwidthConf({"name": "n"}).is_zero


@pytest.mark.parametrize(
    "keys",
    [
        {"ingressRate": 1000},
        {"ingressBurst": 1000},
        {"egressRate": 1000, "egressBurst": 8 * (2**32 - 1)},
        {"egressRate": 7, "egressBurst": 1000},
        {"egressRate": -5, "egressBurst": 1},
        {"egressRate": 2**64, "egressBurst": 1},
        {"egressRate": 1.5, "egressBurst": 1},
        {"egressRate": True, "egressBurst": 1},
    ],
)
def test_invalid_limits(keys: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidConfig):
        BandwidthConf({"name": "n", **keys})


def test_del_ignores_bad_limits() -> None:
    assert BandwidthConf({"name": "n", "ingressRate": "x"}, for_del=True).name == "n"


def test_missing_kernel_support_names_the_module() -> None:
    from pycni.netlink import LinkExists, NetlinkError
    from pycni.plugins.bandwidth import _add_error

    err = _add_error(
        NetlinkError(95, "create ifb bwp1", "Unknown device type"), "create ifb", "ifb"
    )
    assert err.code == 7 and "modprobe" in err.details and "ifb" in err.details
    err = _add_error(
        NetlinkError(2, "add qdisc", "Specified qdisc kind is unknown"), "add tbf", "sch_tbf"
    )
    assert err.code == 7 and "sch_tbf" in err.details
    err = _add_error(LinkExists(17, "create ifb"), "create ifb", "ifb")
    assert "ADD called twice" in err.details
