"""static IPAM exec'd as a runtime does, side by side with the reference `static`."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.root

IPAM = {
    "type": "static",
    "addresses": [
        {"address": "10.10.0.5/24", "gateway": "10.10.0.1"},
        {"address": "3ffe:ffff:0:1ff::1/64", "gateway": "3ffe:ffff:0::1"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
    "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]},
}


def conf(version: str = "1.0.0", ipam: dict | None = None, **top) -> dict:
    return {
        "cniVersion": version,
        "name": "pytstatic",
        "type": "static",
        "ipam": ipam or IPAM,
        **top,
    }


@pytest.fixture
def netns(container_ns) -> str:
    return container_ns().path


# Every way addresses reach static: (config overrides, CNI_ARGS)
FORMS = {
    "config": ({}, ""),
    "config-v4-only": ({"ipam": {"type": "static", "addresses": [{"address": "10.1.0.9/16"}]}}, ""),
    "cni-args-ip-appends": ({}, "IP=10.20.0.5/16,fd00::5/64"),
    "cni-args-gateway-assigns": ({}, "IP=10.20.0.5/16;GATEWAY=10.20.0.1,10.10.0.254"),
    "args-cni-ips-replace": ({"args": {"cni": {"ips": ["10.30.0.5/24"]}}}, "IP=10.20.0.5/16"),
    "runtime-ips-replace": (
        {"args": {"cni": {"ips": ["10.30.0.5/24"]}}, "runtimeConfig": {"ips": ["10.40.0.5/24"]}},
        "",
    ),
    "empty": ({"ipam": {"type": "static"}}, ""),
}


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_equals_the_reference(run_plugin, run_reference, netns, form, version) -> None:
    overrides, args = FORMS[form]
    cfg = conf(version, **overrides)
    ours = run_plugin("static", "ADD", cfg, netns=netns, container_id="c1", args=args)
    theirs = run_reference("static", "ADD", cfg, netns=netns, container_id="c1", args=args)
    assert ours.rc == theirs.rc == 0, ours.stdout + theirs.stdout
    assert ours.json == theirs.json


def test_1_1_0_and_0_2_0(run_plugin, netns) -> None:
    out = run_plugin("static", "ADD", conf("1.1.0"), netns=netns, container_id="c1").json
    assert out["cniVersion"] == "1.1.0"
    assert out["ips"][1] == {"address": "3ffe:ffff:0:1ff::1/64", "gateway": "3ffe:ffff::1"}
    old = run_plugin("static", "ADD", conf("0.2.0"), netns=netns, container_id="c1").json
    assert old["ip4"]["ip"] == "10.10.0.5/24" and old["ip6"]["ip"] == "3ffe:ffff:0:1ff::1/64"


def test_check_and_del(run_plugin, run_reference, netns) -> None:
    add = run_plugin("static", "ADD", conf(), netns=netns, container_id="c1")
    for runner in (run_plugin, run_reference):
        ok = runner("static", "CHECK", conf(prevResult=add.json), netns=netns, container_id="c1")
        assert ok.rc == 0 and ok.stdout == "", ok.stdout
    prev = dict(add.json)
    prev["ips"] = [dict(prev["ips"][0], gateway="10.10.0.77"), prev["ips"][1]]
    bad = run_plugin("static", "CHECK", conf(prevResult=prev), netns=netns, container_id="c1")
    assert bad.error["msg"] == "static: Failed to match addr 10.10.0.5 on interface eth0"
    missing = run_plugin("static", "CHECK", conf(), netns=netns, container_id="c1")
    assert missing.error["msg"] == "Required prevResult missing"
    # DEL does nothing and needs nothing beyond what skel checks
    for cfg in (conf(), conf(ipam={"type": "static", "addresses": "garbage"})):
        res = run_plugin("static", "DEL", cfg, container_id="c1", args="WHATEVER=1")
        assert res.rc == 0 and res.stdout == ""


@pytest.mark.parametrize(
    ("ipam", "top", "args", "code", "words"),
    [
        (
            {"type": "static", "addresses": [{"address": "10.1.0.5"}]},
            {},
            "",
            7,
            "ipam.addresses[0].address",
        ),
        (
            {"type": "static", "addresses": [{"address": "10.1.0.5/24", "gateway": "x"}]},
            {},
            "",
            7,
            "ipam.addresses[0].gateway",
        ),
        ({"type": "static", "addresses": [{}]}, {}, "", 7, "ipam.addresses[0].address is missing"),
        ({"type": "static", "routes": [{"dst": 5}]}, {}, "", 7, "ipam.routes[0]: 'dst'"),
        ({"type": "static", "dns": {"search": "a"}}, {}, "", 7, "ipam.dns: 'search'"),
        (None, {"runtimeConfig": {"ips": ["10.1.0.5"]}}, "", 7, "runtimeConfig.ips[0]"),
        (None, {"args": {"cni": {"ips": ["10.1.0.5"]}}}, "", 7, "args.cni.ips[0]"),
        (None, {}, "IP=10.1.0.5", 4, "CNI_ARGS IP[0]"),
        (None, {}, "GATEWAY=10.1.0.", 4, "CNI_ARGS GATEWAY[0]"),
        (None, {}, "K8S_POD_NAME=x", 4, "unknown args"),
    ],
)
def test_bad_input(run_plugin, netns, ipam, top, args, code, words) -> None:
    res = run_plugin(
        "static", "ADD", conf(ipam=ipam, **top), netns=netns, container_id="c1", args=args
    )
    assert res.error["code"] == code, res.error
    assert words in res.error["msg"], res.error


def test_missing_ipam(run_plugin, netns) -> None:
    cfg = conf()
    del cfg["ipam"]
    res = run_plugin("static", "ADD", cfg, netns=netns, container_id="c1")
    assert res.error == {
        "cniVersion": "1.0.0",
        "code": 7,
        "msg": "IPAM config missing 'ipam' key",
        "details": res.error["details"],
    }


def test_gc_and_status_succeed(run_plugin) -> None:
    cfg = conf("1.1.0", **{"cni.dev/valid-attachments": []})
    for verb in ("GC", "STATUS"):
        res = run_plugin("static", verb, cfg)
        assert res.rc == 0 and res.stdout == ""
