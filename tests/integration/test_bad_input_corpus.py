"""Bad input at scale: a corpus of malformed inputs for every plugin and verb.

Each case is exec'd exactly as a runtime would, inside a throwaway host namespace.
Every case must give a CNI error with the expected code and a message, no traceback,
and leave the host namespace's links, nft ruleset and leases byte-identical.
Property-based fuzzing (hypothesis) of netconf, runtimeConfig and CNI_* follows: any
input gives success or a CNI error, never an internal error (code 999).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycni import netns as pynetns
from pycni import skel
from tests.conftest import Netns, PluginRun

pytestmark = pytest.mark.root

INJECTIONS = [
    'x"; flush ruleset; "',
    "}\nflush ruleset\n{",
    "a\nb",
    "../../etc/passwd",
    "$(reboot)",
    "é" * 20,
    "\x00",
]


def base_confs(tmp: Path) -> dict[str, dict[str, Any]]:
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": "10.73.0.0/24"}]],
        "dataDir": str(tmp / "ipam"),
    }
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "pytbad0"},
            {"name": "veth00000000"},
            {"name": "eth0", "sandbox": "/var/run/netns/x"},
        ],
        "ips": [{"interface": 2, "address": "10.73.0.2/24", "gateway": "10.73.0.1"}],
    }
    return {
        "bridge": {
            "cniVersion": "1.0.0",
            "name": "badnet",
            "type": "bridge",
            "bridge": "pytbad0",
            "isGateway": True,
            "ipMasq": True,
            "mtu": 1500,
            "ipam": ipam,
        },
        "host-local": {"cniVersion": "1.0.0", "name": "badnet", "type": "host-local", "ipam": ipam},
        "static": {
            "cniVersion": "1.0.0",
            "name": "badnet",
            "type": "static",
            "ipam": {
                "type": "static",
                "addresses": [{"address": "10.73.0.9/24", "gateway": "10.73.0.1"}],
            },
        },
        "portmap": {
            "cniVersion": "1.0.0",
            "name": "badnet",
            "type": "portmap",
            "runtimeConfig": {
                "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]
            },
            "prevResult": prev,
        },
        "loopback": {"cniVersion": "1.0.0", "name": "badnet", "type": "loopback"},
    }


def set_path(conf: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(conf)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def corpus(tmp: Path) -> list[tuple[str, str, Any, dict[str, str], tuple[int, ...], str]]:
    """(plugin, command, stdin, env overrides, allowed codes, case id)"""
    confs = base_confs(tmp)
    cases: list[tuple[str, str, Any, dict[str, str], tuple[int, ...], str]] = []
    for plugin, conf in confs.items():
        text = json.dumps(conf)
        for verb in ("ADD", "DEL", "CHECK"):
            # truncated at ten points
            for cut in range(1, len(text), max(1, len(text) // 10)):
                cases.append((plugin, verb, text[:cut].encode(), {}, (6,), f"truncated@{cut}"))
            cases.append((plugin, verb, b"", {}, (6,), "empty"))
            cases.append((plugin, verb, b"\xff\xfe\x00", {}, (6,), "binary"))
            cases.append((plugin, verb, b"[1,2,3]", {}, (6,), "array"))
            for version in ("9.9.9", "1.0", "v1.0.0", "1.0.0.0"):
                cases.append(
                    (
                        plugin,
                        verb,
                        json.dumps(dict(conf, cniVersion=version)).encode(),
                        {},
                        (1, 6),
                        f"version={version}",
                    )
                )
            cases.append(
                (
                    plugin,
                    verb,
                    json.dumps(dict(conf, cniVersion=100)).encode(),
                    {},
                    (6,),
                    "version-int",
                )
            )
            for bad_name in ["", "-x", "a/b", "a b", "a;b", "x\ny", "..", "}"]:
                cases.append(
                    (
                        plugin,
                        verb,
                        json.dumps(dict(conf, name=bad_name)).encode(),
                        {},
                        (7,),
                        f"name={bad_name!r}",
                    )
                )
            for cid in ["-x", "a/b", "../x", "x;y", "x\ny", "x y"]:
                cases.append(
                    (plugin, verb, text.encode(), {"CNI_CONTAINERID": cid}, (4,), f"cid={cid!r}")
                )
            for ifname in ["a" * 16, ".", "..", "e/0", "e:0", "e 0"]:
                cases.append(
                    (
                        plugin,
                        verb,
                        text.encode(),
                        {"CNI_IFNAME": ifname},
                        (4,),
                        f"ifname={ifname!r}",
                    )
                )
            cases.append(
                (plugin, verb, text.encode(), {"CNI_ARGS": "garbage"}, (4,), "args-garbage")
            )
            cases.append((plugin, verb, text.encode(), {"CNI_ARGS": "A=1;B"}, (4,), "args-pair"))
        cases.append((plugin, "ADD", text.encode(), {"CNI_NETNS": ""}, (4,), "no-netns"))
        cases.append((plugin, "ADD", text.encode(), {"CNI_PATH": ""}, (4,), "no-path"))
        cases.append(
            (
                plugin,
                "CHECK",
                json.dumps(dict(conf, cniVersion="0.3.1")).encode(),
                {},
                (1,),
                "check-0.3.1",
            )
        )
        cases.append(
            (
                plugin,
                "GC",
                json.dumps(dict(conf, cniVersion="1.0.0")).encode(),
                {},
                (1,),
                "gc-1.0.0",
            )
        )
        cases.append((plugin, "FROB", text.encode(), {}, (4,), "unknown-verb"))
    # plugin-specific keys: wrong types, out-of-range numbers, invalid CIDRs, injections
    bridge_keys: list[tuple[tuple[Any, ...], Any]] = [
        (("bridge",), 5),
        (("bridge",), "x" * 16),
        (("bridge",), "br/0"),
        (("bridge",), ["cni0"]),
        (("isGateway",), "true"),
        (("isDefaultGateway",), 1),
        (("forceAddress",), "no"),
        (("ipMasq",), {}),
        (("mtu",), "1500"),
        (("mtu",), -1),
        (("mtu",), 65536),
        (("mtu",), 1.5),
        (("vlan",), 4095),
        (("vlan",), "1"),
        (("hairpinMode",), "on"),
        (("promiscMode",), 2),
        (("macspoofchk",), "yes"),
        (("enabledad",), []),
        (("portIsolation",), "1"),
        (("ipMasqBackend",), "pf"),
        (("ipMasqBackend",), 3),
        (("ipam",), "host-local"),
        (("ipam", "type"), "../../bin/sh"),
        (("ipam", "type"), "/bin/true"),
        (("ipam", "type"), "no-such-plugin"),
        (("dns",), "8.8.8.8"),
        (("dns",), {"nameservers": "8.8.8.8"}),
        (("runtimeConfig",), {"mac": "xx"}),
        (("runtimeConfig",), {"mac": "01:00:00:00:00:01"}),
        (("args",), {"cni": {"mac": 5}}),
        (("ipam", "ranges"), "10.0.0.0/24"),
        (("ipam", "ranges"), [[{"subnet": "10.0.0.0/33"}]]),
        (("ipam", "ranges"), [[{"subnet": "10.0.0.1/24"}]]),
        (("ipam", "ranges"), [[{"subnet": "abc"}]]),
        (("ipam", "ranges"), [[{"subnet": "10.0.0.0/32"}]]),
        (("ipam", "ranges"), [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]),
        (
            ("ipam", "ranges"),
            [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.50", "rangeEnd": "10.0.0.20"}]],
        ),
        (("ipam", "ranges"), [[{"subnet": "10.0.0.0/24", "rangeStart": "10.9.0.5"}]]),
        (("ipam", "ranges"), [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]),
        (("ipam", "dataDir"), 7),
        (("ipam", "dataDir"), "relative/dir"),
    ]
    # ("$(reboot)" is a valid interface name: it is data, never run, so not a bad input)
    bridge_keys += [(("bridge",), s) for s in INJECTIONS if s != "$(reboot)"]
    for path, value in bridge_keys:
        cases.append(
            (
                "bridge",
                "ADD",
                json.dumps(set_path(confs["bridge"], path, value)).encode(),
                {},
                (2, 6, 7),
                f"bridge.{'.'.join(map(str, path))}={value!r}",
            )
        )
    pm = confs["portmap"]
    pm_keys: list[tuple[tuple[Any, ...], Any]] = [
        (("snat",), "yes"),
        (("masqAll",), 1),
        (("backend",), "ebtables"),
        (("conditionsV4",), ["-m", "comment", "--comment", "x"]),
        (("conditionsV4",), ["-s", "2001:db8::/32"]),
        (("conditionsV6",), ["ip saddr 10.0.0.0/8"]),
        (("conditionsV4",), "-s 10.0.0.0/8"),
        (("conditionsV4",), [["-s"]]),
        (("runtimeConfig",), {"portMappings": "8080:80"}),
        (("runtimeConfig", "portMappings"), [5]),
        (("runtimeConfig", "portMappings"), [{"hostPort": 0, "containerPort": 80}]),
        (("runtimeConfig", "portMappings"), [{"hostPort": 65536, "containerPort": 80}]),
        (("runtimeConfig", "portMappings"), [{"hostPort": -1, "containerPort": 80}]),
        (("runtimeConfig", "portMappings"), [{"hostPort": 80, "containerPort": "80"}]),
        (
            ("runtimeConfig", "portMappings"),
            [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}],
        ),
        (("prevResult",), "x"),
        (("prevResult", "ips"), [{"address": "10.0.0.1"}]),
    ]
    pm_keys += [
        (("runtimeConfig", "portMappings"), [{"hostPort": 80, "containerPort": 80, "hostIP": s}])
        for s in INJECTIONS
    ]
    pm_keys += [
        (("runtimeConfig", "portMappings"), [{"hostPort": 80, "containerPort": 80, "protocol": s}])
        for s in INJECTIONS
    ]
    pm_keys += [(("conditionsV4",), ["-i", s]) for s in INJECTIONS]
    pm_keys += [(("conditionsV4",), [f"ip saddr {s}"]) for s in INJECTIONS]
    for path, value in pm_keys:
        cases.append(
            (
                "portmap",
                "ADD",
                json.dumps(set_path(pm, path, value)).encode(),
                {},
                (2, 6, 7),
                f"portmap.{'.'.join(map(str, path))}={value!r}",
            )
        )
    no_prev = {k: v for k, v in pm.items() if k != "prevResult"}
    cases.append(
        ("portmap", "ADD", json.dumps(no_prev).encode(), {}, (7,), "portmap-no-prevResult")
    )
    st_keys: list[tuple[tuple[Any, ...], Any]] = [
        (("ipam", "addresses"), "10.0.0.1/24"),
        (("ipam", "addresses"), [{"address": "10.0.0.1"}]),
        (("ipam", "addresses"), [{"address": "nope/24"}]),
        (("ipam", "addresses"), [{"address": "10.0.0.1/24", "gateway": "x"}]),
        (("ipam", "routes"), [{"dst": "bad"}]),
        (("ipam", "dns"), {"nameservers": 1}),
    ]
    for path, value in st_keys:
        cases.append(
            (
                "static",
                "ADD",
                json.dumps(set_path(confs["static"], path, value)).encode(),
                {},
                (6, 7),
                f"static.{'.'.join(map(str, path))}={value!r}",
            )
        )
    cases.append(
        (
            "static",
            "ADD",
            json.dumps(confs["static"]).encode(),
            {"CNI_ARGS": "IP=not-an-ip"},
            (4, 7),
            "static-args-ip",
        )
    )
    cases.append(
        (
            "host-local",
            "ADD",
            json.dumps(confs["host-local"]).encode(),
            {"CNI_ARGS": "IP=10.99.0.5"},
            (7, 11),
            "hl-ip-outside",
        )
    )
    cases.append(
        (
            "host-local",
            "ADD",
            json.dumps(confs["host-local"]).encode(),
            {"CNI_ARGS": "FOO=1"},
            (4,),
            "hl-unknown-arg",
        )
    )
    return cases


def snapshot(host: Netns, tmp: Path, state: Path) -> str:
    links = json.dumps(
        sorted(
            (x["ifname"], x.get("linkinfo", {}).get("info_kind"))
            for x in host.ip_json("-d", "link", "show")
        )
    )
    ruleset = host.run("nft", "list", "ruleset")
    files = sorted(
        str(p.relative_to(tmp))
        for p in tmp.rglob("*")
        if p.is_file() and "pycni-state" not in str(p.parent.parent)
    )
    return "\n".join(
        [
            links,
            ruleset,
            json.dumps(files),
            json.dumps(sorted(str(p.relative_to(state)) for p in state.rglob("*.json"))),
        ]
    )


def test_corpus(run_plugin, host_ns, container_ns, tmp_path, state_dir) -> None:
    c = container_ns()
    cases = corpus(tmp_path)
    assert len(cases) >= 300, len(cases)
    before = snapshot(host_ns, tmp_path, state_dir)
    failures = []
    for plugin, verb, stdin, env, codes, case in cases:
        env_full = {"CNI_CONTAINERID": "cid1", "CNI_NETNS": c.path, "CNI_IFNAME": "eth0"}
        env_full.update(env)
        res: PluginRun = run_plugin(
            plugin,
            verb,
            stdin,
            netns=env_full.pop("CNI_NETNS"),
            container_id=env_full.pop("CNI_CONTAINERID"),
            ifname=env_full.pop("CNI_IFNAME"),
            in_ns=host_ns,
            **({"cni_path": env_full.pop("CNI_PATH")} if "CNI_PATH" in env_full else {}),
            args=env_full.pop("CNI_ARGS", ""),
        )
        problem = ""
        try:
            err = json.loads(res.stdout)
            if res.rc == 0:
                problem = "succeeded"
            elif err.get("code") not in codes:
                problem = f"code {err.get('code')} not in {codes}: {err.get('msg')}"
            elif not err.get("msg"):
                problem = "no message"
        except ValueError:
            problem = f"stdout is not JSON: {res.stdout[:200]!r}"
        if "Traceback" in res.stdout + res.stderr:
            problem += " traceback!"
        after = snapshot(host_ns, tmp_path, state_dir)
        if after != before:
            problem += " state changed!"
            before = after
        if problem:
            failures.append(f"{plugin} {verb} {case}: {problem}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(
        failures[:40]
    )


# -- property-based fuzzing, in-process (fast), inside a throwaway namespace -----------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**33), 2**33)
    | st.text(max_size=20)
    | st.floats(allow_nan=False)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
BRIDGE_KEYS = [
    "bridge",
    "isGateway",
    "isDefaultGateway",
    "forceAddress",
    "ipMasq",
    "ipMasqBackend",
    "mtu",
    "hairpinMode",
    "promiscMode",
    "vlan",
    "macspoofchk",
    "enabledad",
    "disableContainerInterface",
    "portIsolation",
    "dns",
    "runtimeConfig",
    "args",
    "ipam",
]
IPAM_KEYS = [
    "type",
    "ranges",
    "subnet",
    "rangeStart",
    "rangeEnd",
    "gateway",
    "routes",
    "dataDir",
    "resolvConf",
    "addresses",
]
RC_KEYS = ["portMappings", "ips", "mac", "ipRanges"]


@st.composite
def netconfs(draw: st.DrawFn, plugin: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": draw(st.sampled_from(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])),
        "name": "fuzznet",
        "type": plugin,
    }
    for key in draw(st.lists(st.sampled_from(BRIDGE_KEYS), max_size=6, unique=True)):
        conf[key] = draw(json_values)
    ipam: dict[str, Any] = {"type": draw(st.sampled_from(["host-local", "static"]))}
    for key in draw(st.lists(st.sampled_from(IPAM_KEYS), max_size=4, unique=True)):
        ipam[key] = draw(json_values)
    ipam["dataDir"] = "/nonexistent-fuzz-datadir/x"  # never a real place on this host
    conf["ipam"] = ipam
    rc = {
        k: draw(json_values)
        for k in draw(st.lists(st.sampled_from(RC_KEYS), max_size=2, unique=True))
    }
    if rc:
        conf["runtimeConfig"] = rc
    if draw(st.booleans()):
        conf["prevResult"] = draw(json_values)
    return conf


cni_args = st.lists(
    st.tuples(
        st.sampled_from(["IP", "MAC", "GATEWAY", "IgnoreUnknown", "K8S_POD_NAME", "X"]),
        st.text(max_size=12),
    ),
    max_size=3,
).map(lambda pairs: ";".join(f"{k}={v}" for k, v in pairs))


def fuzz_plugin(plugin: str, host_ns: Netns, confs: Any) -> None:
    """fuzz_never_internal_error for our plugin `plugin` (loaded as the runtime loads it,
    pycni.plugins.load), run inside the test's host namespace. Callers point
    PYCNI_STATE_DIR at their tmp dir: the verbs run in this process and their own state
    (records, locks, taken by DEL and GC) must never land in /var/lib/pycni."""
    from pycni import plugins

    verbs = plugins.load(plugin)
    assert verbs is not None, plugin
    fd = os.open(host_ns.path, os.O_RDONLY)
    try:
        with pynetns.entered(fd):
            fuzz_never_internal_error(verbs, confs)
    finally:
        os.close(fd)


@pytest.mark.parametrize("plugin", ["bridge", "portmap", "host-local", "static"])
def test_fuzz_never_internal_error(
    plugin: str, host_ns: Netns, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path / "state"))
    fuzz_plugin(plugin, host_ns, netconfs(plugin))


def fuzz_never_internal_error(verbs: Any, confs: Any) -> None:
    """Random configs, CNI_ARGS and verbs against `verbs` in this process: every error
    has a code other than 999, a message and no traceback. The container namespace does
    not exist: ADD cannot get past opening it, so a valid random config still leaves the
    machine untouched (callers keep PYCNI_STATE_DIR under their tmp dir)."""
    env_base = {
        "CNI_CONTAINERID": "fuzz1",
        "CNI_NETNS": "/var/run/netns/pyt-fuzz-none",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/nonexistent-cni-path",
    }

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        conf=confs,
        args=cni_args,
        verb=st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS"]),
    )
    def check(conf: dict[str, Any], args: str, verb: str) -> None:
        env = dict(env_base, CNI_COMMAND=verb, CNI_ARGS=args)
        try:
            stdin = json.dumps(conf).encode()
        except (ValueError, OverflowError):
            return
        out, code = skel.run(verbs, env, stdin)
        if code == 0:
            return
        err = json.loads(out)
        assert err["code"] != 999, (conf, args, verb, err)
        assert err["msg"] and "Traceback" not in out

    check()
