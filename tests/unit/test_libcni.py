"""libcni side: loading networks, choosing versions, building requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pycni import errors
from pycni.result import Result
from pycni.runtime import libcni


def write(d: Path, name: str, obj: object) -> None:
    (d / name).write_text(json.dumps(obj) if not isinstance(obj, str) else obj)


def test_conflists_sorted_then_confs(tmp_path: Path) -> None:
    write(
        tmp_path,
        "20-b.conflist",
        {"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]},
    )
    write(
        tmp_path,
        "10-a.conflist",
        {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}]},
    )
    write(tmp_path, "05-c.conf", {"cniVersion": "0.4.0", "name": "c", "type": "loopback"})
    write(tmp_path, "06-dup.conf", {"cniVersion": "0.4.0", "name": "a", "type": "loopback"})
    write(tmp_path, "notes.txt", "ignored")
    nets = libcni.load_networks(str(tmp_path))
    assert [n.name for n in nets] == ["a", "b", "c"]
    assert nets[2].plugins == [{"cniVersion": "0.4.0", "name": "c", "type": "loopback"}]
    assert nets[2].cni_version == "0.4.0"
    assert libcni.load_network(str(tmp_path), "b").plugins == [{"type": "bridge"}]
    with pytest.raises(libcni.ConfigError, match='no net configuration with name "zz"'):
        libcni.load_network(str(tmp_path), "zz")


@pytest.mark.parametrize(
    ("obj", "version"),
    [
        ({"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "0.3.1"]}, "1.0.0"),
        ({"cniVersions": ["0.4.0", "1.1.0", "9.0.0"]}, "1.1.0"),
        ({"cniVersion": "1.0.0"}, "1.0.0"),
        ({}, "0.1.0"),
    ],
)
def test_version_selection(obj: dict, version: str) -> None:
    raw = json.dumps({**obj, "name": "n", "plugins": [{"type": "x"}]}).encode()
    assert libcni.conflist_from_bytes(raw).cni_version == version


@pytest.mark.parametrize(
    ("obj", "msg"),
    [
        ({"name": "n"}, "no 'plugins' key"),
        ({"name": "n", "plugins": []}, "no plugins in list"),
        ({"name": "n", "plugins": {}}, "invalid 'plugins' type"),
        ({"plugins": [{"type": "x"}]}, "no name"),
        ({"name": "n", "plugins": [{"type": "../../bin/sh"}]}, "invalid plugin name"),
        ({"name": "n", "plugins": [{"type": "x"}], "disableCheck": "maybe"}, "disableCheck"),
        ({"name": "n", "plugins": [{"type": "x"}], "cniVersions": "1.0.0"}, "cniVersions"),
    ],
)
def test_bad_conflists(obj: dict, msg: str) -> None:
    with pytest.raises(errors.CniError, match=msg):
        libcni.conflist_from_bytes(json.dumps(obj).encode())


def test_request_filters_capabilities_and_injects_prev_result(tmp_path: Path) -> None:
    net = libcni.conflist_from_bytes(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "n",
                "plugins": [
                    {"type": "bridge"},
                    {"type": "portmap", "capabilities": {"portMappings": True, "ips": False}},
                ],
            }
        ).encode()
    )
    cni = libcni.CNIConfig(["/x"], str(tmp_path))
    rt = libcni.RuntimeConf(
        "c1",
        "/var/run/netns/c1",
        capability_args={"portMappings": [{"hostPort": 80}], "ips": ["10.0.0.5"], "mac": "x"},
    )
    first = json.loads(cni._request(net, net.plugins[0], rt, None))
    assert first == {"cniVersion": "1.0.0", "name": "n", "type": "bridge"}
    prev = Result("1.0.0")
    second = json.loads(cni._request(net, net.plugins[1], rt, prev))
    assert second["runtimeConfig"] == {"portMappings": [{"hostPort": 80}]}
    assert second["prevResult"] == {"cniVersion": "1.0.0", "dns": {}}
    env = cni._env("ADD", rt)
    assert (
        env["CNI_NETNS"] == "/var/run/netns/c1"
        and env["CNI_PATH"] == "/x"
        and env["CNI_IFNAME"] == "eth0"
    )


def test_cache_path_is_libcni_layout(tmp_path: Path) -> None:
    cni = libcni.CNIConfig(["/x"], str(tmp_path))
    rt = libcni.RuntimeConf("abc", "/ns", "eth1")
    assert cni.cache_path("mynet", rt) == str(tmp_path / "results" / "mynet-abc-eth1")
