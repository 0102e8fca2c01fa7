"""The overlay's pure parts: cluster-store URLs, network specs, subnet picking, VTEP MACs,
etcd prefix ranges (no root, no etcd)."""

from __future__ import annotations

import ipaddress

import pytest

from pycni import errors
from pycni.overlay import spec
from pycni.overlay.store import prefix_end


def test_cluster_store_parses_dockers_spelling() -> None:
    c = spec.ClusterStore("etcd://10.0.0.1:2379,10.0.0.2:2379", {"kv.cacertfile": "/ca"})
    assert c.endpoints == [("10.0.0.1", 2379), ("10.0.0.2", 2379)]
    assert c.protocol == "https" and c.url() == "etcd://10.0.0.1:2379,10.0.0.2:2379"
    assert spec.ClusterStore("etcd://[fd00::1]:2379").endpoints == [("fd00::1", 2379)]
    assert spec.ClusterStore("etcd://h:1").protocol == "http"


@pytest.mark.parametrize(
    ("url", "opts", "needle"),
    [
        ("consul://h:8500", {}, "not an etcd URL"),
        ("etcd://", {}, "not an etcd URL"),
        ("etcd://h", {}, "bad member"),
        ("etcd://h:0", {}, "bad member"),
        ("etcd://h:99999", {}, "bad member"),
        ("etcd://h:1", {"kv.certfile": "/c"}, "go together"),
    ],
)
def test_cluster_store_refusals_are_code_7(url: str, opts: dict, needle: str) -> None:
    with pytest.raises(errors.InvalidConfig) as info:
        spec.ClusterStore(url, opts)
    assert needle in str(info.value) and info.value.code == 7


def test_network_spec_round_trip_and_limits() -> None:
    s = spec.NetworkSpec("ovl", "10.50.0.0/16", 4097, mtu=1400, internal=True)
    back = spec.NetworkSpec.from_json(s.to_json())
    assert (back.subnet, back.vni, back.mtu, back.internal) == (s.subnet, 4097, 1400, True)
    for args, needle in (
        (("x", "10.50.0.0/33", 1), "bad subnet"),
        (("x", "10.50.0.0/24", 1), "does not fit"),
        (("x", "10.50.0.0/16", 0), "out of range"),
        (("x", "10.50.0.0/16", 1 << 24), "out of range"),
    ):
        with pytest.raises(errors.InvalidConfig, match=needle):
            spec.NetworkSpec(*args)  # type: ignore[arg-type]


def test_lowest_free_subnet_skips_the_first_and_reuses_gaps() -> None:
    s = spec.NetworkSpec("ovl", "10.50.0.0/22", 1)
    subs = s.host_subnets()
    assert [str(x) for x in subs] == ["10.50.1.0/24", "10.50.2.0/24", "10.50.3.0/24"]
    assert spec.pick_free(s, set()) == subs[0]
    assert spec.pick_free(s, {subs[0], subs[2]}) == subs[1]
    assert spec.pick_free(s, set(subs)) is None
    key = spec.subnet_key("ovl", subs[1])
    assert key == "/pycni/overlay/subnets/ovl/10.50.2.0-24"
    assert spec.subnet_from_key(key) == ipaddress.IPv4Network("10.50.2.0/24")


def test_vtep_mac_is_stable_local_unicast_and_per_vni() -> None:
    a = spec.vtep_mac(42, "192.0.2.1")
    assert a == spec.vtep_mac(42, "192.0.2.1")
    assert a != spec.vtep_mac(43, "192.0.2.1") and a != spec.vtep_mac(42, "192.0.2.2")
    first = int(a.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast


def test_prefix_end() -> None:
    assert prefix_end("/pycni/overlay/subnets/ovl/") == "/pycni/overlay/subnets/ovl0"
