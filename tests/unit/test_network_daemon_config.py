"""daemon.json: defaults, the shipped file, messages that name the key, and the default
`bridge` conflist derived from it."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from pycni.runtime import daemon_config
from pycni.runtime.daemon_config import DaemonConfig, DaemonConfigError
from pycni.runtime.networks import default_conflist


def test_shipped_file_is_the_builtin_default() -> None:
    shipped = Path(daemon_config.shipped_path())
    assert shipped.is_file()
    assert daemon_config.parse(shipped.read_bytes(), str(shipped)) == DaemonConfig()


def test_defaults_are_dockers() -> None:
    cfg = DaemonConfig()
    assert cfg.bridge == "netctl0" and cfg.bip == "172.17.0.1/16"
    assert str(cfg.subnet) == "172.17.0.0/16" and str(cfg.gateway) == "172.17.0.1"
    assert cfg.icc and cfg.ip_masq and cfg.ip == "0.0.0.0" and cfg.mtu is None
    assert cfg.subnet_v6 is None
    pools = [(str(b), s) for b, s in cfg.pools]
    assert pools[0] == ("172.17.0.0/16", 16) and pools[14] == ("172.31.0.0/16", 16)
    assert pools[15:] == [("192.168.0.0/16", 20)]


def test_missing_or_empty_file_means_defaults(tmp_path: Path) -> None:
    assert daemon_config.load(str(tmp_path / "nope.json")) == DaemonConfig()
    (tmp_path / "empty.json").write_text("  \n")
    assert daemon_config.load(str(tmp_path / "empty.json")) == DaemonConfig()


def test_full_config_parses() -> None:
    cfg = daemon_config.parse(
        json.dumps(
            {
                "bridge": "docker1",
                "bip": "10.20.0.1/16",
                "fixed-cidr": "10.20.128.0/17",
                "fixed-cidr-v6": "fd00:20::/64",
                "mtu": 1400,
                "default-gateway": "10.20.0.254",
                "default-gateway-v6": "fd00:20::fe",
                "dns": ["10.20.0.53", "fd00:20::53"],
                "dns-search": ["example.test"],
                "dns-opts": ["ndots:2"],
                "icc": False,
                "ip-masq": False,
                "ip": "127.0.0.1",
                "default-address-pools": [{"base": "10.99.0.0/16", "size": 24}],
            }
        )
    )
    assert cfg.subnet_v6 == ipaddress.ip_network("fd00:20::/64")
    assert cfg.pools == [(ipaddress.ip_network("10.99.0.0/16"), 24)]
    assert cfg.dns == ["10.20.0.53", "fd00:20::53"] and cfg.dns_opts == ["ndots:2"]
    # ipv6: false switches fixed-cidr-v6 off, as dockerd does
    off = daemon_config.parse('{"fixed-cidr-v6": "fd00:20::/64", "ipv6": false}')
    assert off.subnet_v6 is None


BAD = [
    ('{"bip": "172.17.0.1/33"}', "invalid bip '172.17.0.1/33': invalid CIDR address"),
    ('{"bip": "172.17.0.0/16"}', "invalid bip '172.17.0.0/16': the bridge needs a host address"),
    ('{"bip": "fd00::1/64"}', "invalid bip 'fd00::1/64'"),
    ('{"bip": "10.0.0.1/31"}', "too small"),
    ('{"bip": 17}', "bip: Input should be a valid string"),
    (
        '{"fixed-cidr": "10.0.0.0/24"}',
        "fixed-cidr 10.0.0.0/24 is not inside the bip subnet 172.17.0.0/16",
    ),
    ('{"fixed-cidr": "172.17.0.7/24"}', "invalid fixed-cidr '172.17.0.7/24': host bits set"),
    (
        '{"fixed-cidr-v6": "10.0.0.0/8"}',
        "invalid fixed-cidr-v6 '10.0.0.0/8': must be an IPv6 subnet",
    ),
    ('{"ipv6": true}', "ipv6 is enabled for the default bridge, but no subnet is configured"),
    ('{"mtu": 20}', "mtu: Input should be greater than or equal to 68"),
    ('{"mtu": "1500"}', "mtu"),
    (
        '{"default-gateway": "10.1.1.1"}',
        "default-gateway 10.1.1.1 is not a host address of the bip subnet",
    ),
    ('{"default-gateway": "172.17.0.1"}', "default-gateway 172.17.0.1 is bip's own address"),
    ('{"default-gateway": "gw"}', "invalid default-gateway 'gw': not an IP address"),
    ('{"default-gateway-v6": "fd00::1"}', "default-gateway-v6 needs IPv6"),
    ('{"dns": ["8.8.8.8", "dns.google"]}', "invalid dns 'dns.google': not an IP address"),
    ('{"dns-search": ["a b"]}', "invalid dns-search 'a b'"),
    ('{"dns-opts": [""]}', "invalid dns-opts ''"),
    ('{"icc": "yes"}', "icc: Input should be a valid boolean"),
    ('{"ip-masq": 1}', "ip-masq: Input should be a valid boolean"),
    ('{"ip": "any"}', "invalid ip 'any': not an IP address"),
    ('{"bridge": "a/b"}', "invalid bridge 'a/b'"),
    ('{"bridge": "0123456789abcdef"}', "invalid bridge"),
    (
        '{"default-address-pools": [{"base": "10.0.0.0/8", "size": 4}]}',
        "invalid default-address-pools size 4 for base 10.0.0.0/8",
    ),
    (
        '{"default-address-pools": [{"base": "10.0.0.1/8", "size": 24}]}',
        "invalid default-address-pools base '10.0.0.1/8': host bits set",
    ),
    (
        '{"default-address-pools": [{"base": "10.0.0.0/8"}]}',
        "default-address-pools.0.size: Field required",
    ),
    (
        '{"default-address-pools": [{"base": "10.0.0.0/8", "size": 24, "x": 1}]}',
        "doesn't match any configuration option: default-address-pools.0.x",
    ),
    (
        '{"log-driver": "json-file"}',
        "the following directive doesn't match any configuration option: log-driver",
    ),
    ('{"bip": ', "invalid JSON"),
    ("[]", "Input should be an object"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_configs_name_the_key(text: str, message: str) -> None:
    with pytest.raises(DaemonConfigError) as info:
        daemon_config.parse(text, "/etc/netctl/daemon.json")
    assert str(info.value).startswith("invalid daemon configuration /etc/netctl/daemon.json: ")
    assert message in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(DaemonConfigError, match="cannot read daemon configuration"):
        daemon_config.load(str(tmp_path))  # a directory


def test_default_conflist_from_defaults() -> None:
    c = default_conflist(DaemonConfig(), "a" * 64, "2025-01-01T00:00:00.000000Z", "/lib/ipam")
    assert c["name"] == "bridge" and c["cniVersion"] == "1.0.0"
    assert c["cniVersions"] == ["1.0.0", "1.1.0"]  # podman 4.3 reads 1.0.0, CNI 1.1 picks 1.1.0
    bridge = c["plugins"][0]
    assert bridge["bridge"] == "netctl0" and bridge["isDefaultGateway"] is True
    assert bridge["ipMasq"] is True and bridge["portIsolation"] is False and "mtu" not in bridge
    assert bridge["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "172.17.0.0/16", "gateway": "172.17.0.1"}]],
        "dataDir": "/lib/ipam",
    }
    assert [p["type"] for p in c["plugins"]] == ["bridge", "portmap", "firewall", "isolation"]
    assert c["netctl"]["default"] is True and c["netctl"]["hostBindingIPv4"] == "0.0.0.0"


def test_default_conflist_follows_every_key() -> None:
    cfg = daemon_config.parse(
        json.dumps(
            {
                "bridge": "docker1",
                "bip": "10.20.0.1/16",
                "fixed-cidr": "10.20.128.0/17",
                "fixed-cidr-v6": "fd00:20::/64",
                "mtu": 1400,
                "default-gateway": "10.20.0.254",
                "dns": ["10.20.0.53"],
                "dns-search": ["example.test"],
                "icc": False,
                "ip-masq": False,
            }
        )
    )
    c = default_conflist(cfg, "b" * 64, "2025-01-01T00:00:00.000000Z", "/lib/ipam")
    bridge = c["plugins"][0]
    assert (bridge["bridge"], bridge["mtu"], bridge["ipMasq"], bridge["portIsolation"]) == (
        "docker1",
        1400,
        False,
        True,
    )
    assert bridge["dns"] == {"nameservers": ["10.20.0.53"], "search": ["example.test"]}
    ipam = bridge["ipam"]
    assert ipam["ranges"] == [
        [
            {
                "subnet": "10.20.0.0/16",
                "gateway": "10.20.0.1",
                "rangeStart": "10.20.128.0",
                "rangeEnd": "10.20.255.254",
            }
        ],
        [{"subnet": "fd00:20::/64", "gateway": "fd00:20::1"}],
    ]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.20.0.254"}]
    assert c["netctl"]["ipv6"] is True
    assert c["netctl"]["options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert c["netctl"]["options"]["com.docker.network.driver.mtu"] == "1400"
