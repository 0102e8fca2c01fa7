"""The CNI error code of each kind of bad input, from the real plugin executables.

The spec's codes are for the caller: 3 "container unknown or does not exist", 6 "failed
to decode content", 7 "invalid network config". A caller's mistake never answers 999,
which is left to genuine internal failures (tests/unit/test_error_codes.py keeps the
list of those raise sites). Each case execs the installed plugin with CNI_* env and
stdin inside a throwaway host namespace, as a runtime does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Netns, PluginRun

pytestmark = pytest.mark.root

SUBNET = "10.74.0.0/24"

# prevResult shapes that are valid JSON but not a CNI result.
MALFORMED_PREV: dict[str, Any] = {
    "ips-string": {"cniVersion": "1.0.0", "ips": "nope"},
    "ips-item-string": {"cniVersion": "1.0.0", "ips": ["10.74.0.2/24"]},
    "ips-address-bad": {"cniVersion": "1.0.0", "ips": [{"address": "nope"}]},
    "ips-address-missing": {"cniVersion": "1.0.0", "ips": [{"gateway": "10.74.0.1"}]},
    "interfaces-number": {"cniVersion": "1.0.0", "interfaces": 5},
    "interface-index-string": {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"interface": "0", "address": "10.74.0.2/24"}],
    },
    "routes-object": {"cniVersion": "1.0.0", "routes": {"dst": "0.0.0.0/0"}},
    "dns-list": {"cniVersion": "1.0.0", "dns": ["8.8.8.8"]},
    "prev-string": "nope",
    "prev-list": [1, 2],
    "version-number": {"cniVersion": 1, "ips": []},
}


def confs(tmp: Path) -> dict[str, dict[str, Any]]:
    ipam = {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "dataDir": str(tmp / "ipam")}
    return {
        "bridge": {
            "cniVersion": "1.0.0",
            "name": "codenet",
            "type": "bridge",
            "bridge": "pytcode0",
            "isGateway": True,
            "ipam": ipam,
        },
        "host-local": {
            "cniVersion": "1.0.0",
            "name": "codenet",
            "type": "host-local",
            "ipam": ipam,
        },
        "static": {
            "cniVersion": "1.0.0",
            "name": "codenet",
            "type": "static",
            "ipam": {
                "type": "static",
                "addresses": [{"address": "10.74.0.9/24", "gateway": "10.74.0.1"}],
            },
        },
        "portmap": {
            "cniVersion": "1.0.0",
            "name": "codenet",
            "type": "portmap",
            "runtimeConfig": {
                "portMappings": [{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]
            },
        },
        "loopback": {"cniVersion": "1.0.0", "name": "codenet", "type": "loopback"},
        "tuning": {
            "cniVersion": "1.0.0",
            "name": "codenet",
            "type": "tuning",
            "sysctl": {"net.ipv4.conf.eth0.rp_filter": "1"},
        },
    }


Run = Callable[..., PluginRun]


def _exec(run_plugin: Run, host: Netns, ns: Netns, plugin: str, verb: str, conf: Any) -> PluginRun:
    return run_plugin(plugin, verb, conf, netns=ns.path, container_id="never-added", in_ns=host)


@pytest.mark.parametrize("shape", sorted(MALFORMED_PREV))
@pytest.mark.parametrize(
    "plugin", ["bridge", "host-local", "static", "portmap", "loopback", "tuning"]
)
def test_check_with_malformed_prev_result_is_a_decode_or_config_error(
    run_plugin: Run, host_ns: Netns, container_ns, tmp_path: Path, plugin: str, shape: str
) -> None:
    conf = dict(confs(tmp_path)[plugin], prevResult=copy.deepcopy(MALFORMED_PREV[shape]))
    before = (
        sorted(p.name for p in (tmp_path / "ipam").rglob("*"))
        if (tmp_path / "ipam").exists()
        else []
    )
    err = _exec(run_plugin, host_ns, container_ns(), plugin, "CHECK", conf).error
    assert err["code"] in (6, 7), (plugin, shape, err)
    assert "prevResult" in err["msg"] + err.get("details", ""), err
    after = (
        sorted(p.name for p in (tmp_path / "ipam").rglob("*"))
        if (tmp_path / "ipam").exists()
        else []
    )
    assert after == before  # refused before IPAM or the kernel was touched


@pytest.mark.parametrize("shape", ["ips-string", "interfaces-number", "prev-string"])
@pytest.mark.parametrize("plugin", ["portmap", "loopback", "tuning"])
def test_add_with_malformed_prev_result_is_a_decode_or_config_error(
    run_plugin: Run, host_ns: Netns, container_ns, tmp_path: Path, plugin: str, shape: str
) -> None:
    conf = dict(confs(tmp_path)[plugin], prevResult=copy.deepcopy(MALFORMED_PREV[shape]))
    err = _exec(run_plugin, host_ns, container_ns(), plugin, "ADD", conf).error
    assert err["code"] in (6, 7), (plugin, shape, err)


def _valid_prev(ns: Netns) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "pytcode0"},
            {"name": "veth0c0de000"},
            {"name": "eth0", "sandbox": ns.path},
        ],
        "ips": [{"interface": 2, "address": "10.74.0.2/24", "gateway": "10.74.0.1"}],
    }


@pytest.mark.parametrize("plugin", ["bridge", "host-local", "portmap"])
def test_check_of_a_container_never_added_is_unknown_container(
    run_plugin: Run, host_ns: Netns, container_ns, tmp_path: Path, plugin: str
) -> None:
    """Spec code 3, where the reference says 999 ("Failed to find address added by
    container"): nothing was ever added for this container ID."""
    ns = container_ns()
    conf = dict(confs(tmp_path)[plugin], prevResult=_valid_prev(ns))
    err = _exec(run_plugin, host_ns, ns, plugin, "CHECK", conf).error
    assert err["code"] == 3, err
    assert "never-added" in err["msg"] + err.get("details", ""), err


def test_bridge_check_of_a_container_never_added_without_host_local(
    run_plugin: Run, host_ns: Netns, container_ns, tmp_path: Path
) -> None:
    """With static IPAM (no lease to look for), the bridge itself finds neither the
    interface nor a record of an ADD: 3 again, not a list of what is missing."""
    ns = container_ns()
    conf = dict(
        confs(tmp_path)["bridge"],
        ipam={"type": "static", "addresses": [{"address": "10.74.0.2/24", "gateway": "10.74.0.1"}]},
        prevResult=_valid_prev(ns),
    )
    err = _exec(run_plugin, host_ns, ns, "bridge", "CHECK", conf).error
    assert err["code"] == 3, err
    assert "never-added" in err["msg"], err


def test_check_of_a_container_never_added_after_a_real_add_is_unknown_container(
    run_plugin: Run, host_ns: Netns, container_ns, tmp_path: Path
) -> None:
    """The network exists (another container was added): still 3 for an unknown ID,
    and the known container's CHECK passes."""
    conf = confs(tmp_path)["bridge"]
    ns = container_ns()
    added = run_plugin("bridge", "ADD", conf, netns=ns.path, container_id="known", in_ns=host_ns)
    assert added.rc == 0, added.stdout
    ok = run_plugin(
        "bridge",
        "CHECK",
        dict(conf, prevResult=added.json),
        netns=ns.path,
        container_id="known",
        in_ns=host_ns,
    )
    assert ok.rc == 0, ok.stdout
    other = container_ns()
    err = run_plugin(
        "bridge",
        "CHECK",
        dict(conf, prevResult=added.json),
        netns=other.path,
        container_id="stranger",
        in_ns=host_ns,
    ).error
    assert err["code"] == 3, err
    done = run_plugin("bridge", "DEL", conf, netns=ns.path, container_id="known", in_ns=host_ns)
    assert done.rc == 0, done.stdout


@pytest.mark.parametrize(
    "case,stdin,code",
    [
        ("not-json", b"{nope", 6),
        ("empty", b"", 6),
        ("array", b"[1]", 6),
        (
            "wrong-type",
            b'{"cniVersion": "1.0.0", "name": "codenet", "type": "bridge", "mtu": "x"}',
            7,
        ),
        ("no-name", b'{"cniVersion": "1.0.0", "type": "bridge"}', 7),
        ("version", b'{"cniVersion": "7.0.0", "name": "codenet", "type": "bridge"}', 1),
    ],
)
def test_bad_stdin_codes(
    run_plugin: Run, host_ns: Netns, container_ns, case: str, stdin: bytes, code: int
) -> None:
    err = _exec(run_plugin, host_ns, container_ns(), "bridge", "ADD", stdin).error
    assert err["code"] == code, (case, err)


@pytest.mark.parametrize(
    "omit,env,code",
    [
        (("CNI_COMMAND",), {}, None),  # no command: a human ran us; exit 0 with the about line
        ((), {"CNI_COMMAND": "FROB"}, 4),
        (("CNI_CONTAINERID",), {}, 4),
        (("CNI_IFNAME",), {}, 4),
        ((), {"CNI_NETNS": "/proc/self/status"}, 4),
    ],
)
def test_bad_environment_codes(
    plugin_dir: Path,
    state_dir: Path,
    host_ns: Netns,
    container_ns,
    tmp_path: Path,
    omit: tuple[str, ...],
    env: dict[str, str],
    code: int | None,
) -> None:
    from tests.conftest import exec_plugin

    ns = container_ns()
    run = exec_plugin(
        plugin_dir / "bridge",
        "ADD",
        confs(tmp_path)["bridge"],
        netns=ns.path,
        container_id="c1",
        in_ns=host_ns,
        omit=omit,
        env_extra={"PYCNI_STATE_DIR": str(state_dir), **env},
    )
    if code is None:
        assert run.rc == 0 and not run.stdout and "CNI protocol versions" in run.stderr
        return
    err = run.error
    assert err["code"] == code, err
    assert not host_ns.link("pytcode0"), "refused input left a bridge behind"
