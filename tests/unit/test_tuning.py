"""tuning's pure parts: config precedence and validation, sysctl keys and paths, MAC
forms, the allowlist, and the backup file's bytes (Go's MarshalIndent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pycni import errors
from pycni.plugins import tuning
from pycni.plugins.tuning import TuningConf


def conf(**keys: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "n", "type": "tuning", **keys}


def test_defaults_touch_nothing():
    c = TuningConf(conf())
    assert (c.sysctl, c.mac, c.mtu, c.promisc, c.allmulti, c.txqlen) == (
        {},
        "",
        0,
        False,
        None,
        None,
    )
    assert not c.touches_link
    assert c.data_dir == "/run/cni/tuning"


def test_data_dir_from_config_then_env(monkeypatch):
    monkeypatch.setenv(tuning.DATA_DIR_ENV, "/tmp/x")
    assert TuningConf(conf()).data_dir == "/tmp/x"
    assert TuningConf(conf(dataDir="/tmp/y")).data_dir == "/tmp/y"


def test_mac_precedence_as_the_reference():
    base = conf(mac="02:00:00:00:00:01")
    assert TuningConf(base).mac == "02:00:00:00:00:01"
    assert TuningConf(base, "MAC=02:00:00:00:00:02").mac == "02:00:00:00:00:02"
    rc = dict(base, runtimeConfig={"mac": "02:00:00:00:00:03"})
    assert TuningConf(rc, "MAC=02:00:00:00:00:02").mac == "02:00:00:00:00:03"
    cni = dict(rc, args={"cni": {"mac": "02:00:00:00:00:04"}})
    assert TuningConf(cni, "MAC=02:00:00:00:00:02").mac == "02:00:00:00:00:04"


def test_args_cni_overrides_only_what_it_names():
    c = TuningConf(
        conf(
            mtu=1400,
            promisc=True,
            sysctl={"net.core.somaxconn": "1", "net.ipv4.ip_forward": "1"},
            args={"cni": {"allmulti": False, "txQLen": 0, "sysctl": {"net.core.somaxconn": "2"}}},
        )
    )
    assert c.mtu == 1400 and c.promisc and c.allmulti is False and c.txqlen == 0
    assert c.sysctl == {"net.core.somaxconn": "2", "net.ipv4.ip_forward": "1"}
    assert c.touches_link


@pytest.mark.parametrize(
    "keys",
    [
        {"mtu": "1500"},
        {"mtu": -1},
        {"mtu": True},
        {"txQLen": -1},
        {"txQLen": 2**32},
        {"promisc": "true"},
        {"allmulti": 0},
        {"mac": "nope"},
        {"mac": "01:00:00:00:00:01"},
        {"sysctl": []},
        {"sysctl": {"net.core.somaxconn": 5}},
        {"sysctl": {"kernel.panic": "1"}},
        {"runtimeConfig": {"mac": "x"}},
        {"args": {"cni": {"promisc": "yes"}}},
        {"args": []},
        {"dataDir": 1},
    ],
)
def test_bad_types_and_ranges_are_invalid_config(keys):
    with pytest.raises(errors.InvalidConfig):
        TuningConf(conf(**keys))


def test_cni_args():
    with pytest.raises(errors.InvalidEnvironment):
        TuningConf(conf(), "K8S_POD_NAME=x")
    assert TuningConf(conf(), "IgnoreUnknown=1;K8S_POD_NAME=x").mac == ""
    with pytest.raises(errors.InvalidConfig):
        TuningConf(conf(), "MAC=zz")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "net",
        "net.ipv4",
        "kernel.hostname",
        "netx.a.b",
        "net..ipv4.x",
        "net.ipv4.x.",
        "net/ipv4/ip_forward",
        "net.ipv4.conf.eth0/../x",
        "net.ipv4.ip forward",
        "net.ipv4.ip_forward\n",
        "net.ipv4.\u00e9.x",
    ],
)
def test_sysctl_keys_refused(key):
    with pytest.raises(errors.InvalidConfig):
        tuning.validate_sysctl_key(key, "t")


def test_sysctl_path_substitutes_ifname_after_the_dots():
    assert tuning.sysctl_path("net.ipv4.conf.IFNAME.rp_filter", "eth0.5") == (
        "net/ipv4/conf/eth0.5/rp_filter"
    )
    assert tuning.sysctl_path("net.IFNAME.IFNAME.x", "e0") == "net/e0/IFNAME/x"
    assert tuning.sysctl_path("net.core.somaxconn", "e0") == "net/core/somaxconn"


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("02:AA:bb:cc:dd:ee", "02:aa:bb:cc:dd:ee"),
        ("02-aa-bb-cc-dd-ee", "02:aa:bb:cc:dd:ee"),
        ("02aa.bbcc.ddee", "02:aa:bb:cc:dd:ee"),
    ],
)
def test_mac_forms(text, mac):
    assert tuning.parse_mac(text, "t") == mac


@pytest.mark.parametrize(
    "text",
    ["", "02:aa:bb:cc:dd", "02:aa:bb:cc:dd:ee:ff:00", "0:aa:bb:cc:dd:eee", "00:00:00:00:00:00"],
)
def test_bad_macs(text):
    with pytest.raises(errors.InvalidConfig):
        tuning.parse_mac(text, "t")


def test_allowlist(tmp_path: Path):
    path = tmp_path / "allowlist.conf"
    assert tuning.refused_by_allowlist(["net.anything.x"], str(path)) is None  # missing: all
    path.write_text("^net\\.ipv4\\.conf\\.IFNAME\\.\n\n  net\\.core\\.somaxconn$ \n")
    keys = ["net.ipv4.conf.IFNAME.rp_filter", "net.core.somaxconn"]
    assert tuning.refused_by_allowlist(keys, str(path)) is None
    assert tuning.refused_by_allowlist([*keys, "net.ipv4.ip_forward"], str(path)) == (
        "net.ipv4.ip_forward"
    )
    # unanchored, as Go's MatchString
    path.write_text("ip_forward")
    assert tuning.refused_by_allowlist(["net.ipv4.ip_forward"], str(path)) is None
    path.write_text("")
    assert tuning.refused_by_allowlist(["net.ipv4.ip_forward"], str(path)) == "net.ipv4.ip_forward"
    path.write_text("net\\.(\n")
    with pytest.raises(errors.InvalidConfig, match="regular expression"):
        tuning.refused_by_allowlist(["net.a.b"], str(path))
    path.unlink()
    path.mkdir()
    with pytest.raises(errors.IOFailure, match="allowlist"):
        tuning.refused_by_allowlist(["net.a.b"], str(path))


def test_duplicate_sysctl_keys():
    tuning.check_duplicate_sysctls(b'{"sysctl": {"net.a.b": "1", "net.a.c": "1"}}')
    tuning.check_duplicate_sysctls(b'{"args": {"x": 1, "x": 2}, "sysctl": {}}')
    for text in (
        b'{"sysctl": {"net.a.b": "1", "net.a.b": "2"}}',
        b'{"SysCtl": {"k": "1", "k": "1"}}',
    ):
        with pytest.raises(errors.InvalidConfig, match="duplicated"):
            tuning.check_duplicate_sysctls(text)


# What the reference 1.1.1 wrote in a test run (json.MarshalIndent, one space, no newline).
REFERENCE_BACKUP = (
    '{\n "mac": "9e:64:9d:7a:58:bf",\n "promisc": false,\n "mtu": 1500,\n "allmulti": false\n}'
)


def test_backup_text_is_gos_marshal_indent():
    saved = {"allmulti": False, "mtu": 1500, "promisc": False, "mac": "9e:64:9d:7a:58:bf"}
    assert tuning.backup_text(saved) == REFERENCE_BACKUP
    assert tuning.backup_text({}) == "{}"
    with_sysctl = dict(saved, txQLen=1000, sysctl={"net.b.c": "1", "net.a.c": "4096\t8192"})
    text = tuning.backup_text(with_sysctl)
    assert text == json.dumps(
        {
            "mac": "9e:64:9d:7a:58:bf",
            "promisc": False,
            "mtu": 1500,
            "allmulti": False,
            "txQLen": 1000,
            "sysctl": {"net.a.c": "4096\t8192", "net.b.c": "1"},
        },
        indent=1,
    )


def test_backup_round_trip(tmp_path: Path):
    path = tuning.backup_path(str(tmp_path / "d"), "cid", "eth0")
    assert path.endswith("/d/cid_eth0.json")
    assert tuning.read_backup(path) is None
    tuning.write_backup(path, {"mtu": 1400, "sysctl": {"net.core.somaxconn": "4096"}})
    assert tuning.read_backup(path) == {"mtu": 1400, "sysctl": {"net.core.somaxconn": "4096"}}
    Path(path).write_text("garbage")
    assert tuning.read_backup(path) == {}  # the reference restores nothing from it
    tuning.remove_backup(path)
    tuning.remove_backup(path)
    assert tuning.read_backup(path) is None
