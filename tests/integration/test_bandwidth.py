"""bandwidth as a chained plugin after bridge, exec'd as a runtime does: the qdiscs and
the ifb it makes (read back with `tc -j` and pyroute2), CHECK, DEL (also with the netns
gone), bad input, cross-DEL with the reference plugin, and measured rates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pycni import tc
from pycni.plugins.bandwidth import ifb_name
from tests.conftest import Netns, PluginRun

pytestmark = pytest.mark.root

NET = "bwnet"


def bridge_conf(tmp: Path, bridge: str = "pytbw0") -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.79.0.0/24"}]],
            "dataDir": str(tmp / "ipam"),
        },
    }


def bw_conf(prev: dict[str, Any] | None, **keys: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": NET, "type": "bandwidth"}
    conf.update(keys)
    if prev is not None:
        conf["prevResult"] = prev
    return conf


LIMITS = {
    "ingressRate": 8_000_000,
    "ingressBurst": 80_000,
    "egressRate": 16_000_000,
    "egressBurst": 160_000,
}


def attach(runner, host: Netns, c: Netns, tmp: Path, cid: str) -> dict[str, Any]:
    b: PluginRun = runner(
        "bridge", "ADD", bridge_conf(tmp), netns=c.path, container_id=cid, in_ns=host
    )
    assert b.rc == 0, b.stdout + b.stderr
    return b.json


def host_veth(prev: dict[str, Any]) -> str:
    return next(i["name"] for i in prev["interfaces"] if i["name"].startswith("veth"))


def qdiscs(host: Netns, dev: str) -> list[dict[str, Any]]:
    out = host.run("tc", "-j", "qdisc", "show", "dev", dev)
    return [q for q in json.loads(out or "[]") if q["kind"] not in ("noqueue", "pfifo_fast")]


def tbf_raw(host: Netns) -> dict[str, tuple[int, int, int]]:
    """{link name: (rate bytes/s, limit, buffer)} of every tbf, read with pyroute2."""
    code = (
        "import json\n"
        "from pyroute2 import IPRoute\n"
        "ip = IPRoute()\n"
        "names = {l['index']: l.get_attr('IFLA_IFNAME') for l in ip.get_links()}\n"
        "out = {}\n"
        "for q in ip.get_qdiscs():\n"
        "    if q.get_attr('TCA_KIND') == 'tbf':\n"
        "        p = q.get_attr('TCA_OPTIONS').get_attr('TCA_TBF_PARMS')\n"
        "        out[names[q['index']]] = (p['rate'], p['limit'], p['buffer'])\n"
        "print(json.dumps(out))\n"
    )
    return {k: tuple(v) for k, v in json.loads(host.run(sys.executable, "-c", code)).items()}


def link_names(host: Netns) -> set[str]:
    return {x["ifname"] for x in host.ip_json("link", "show")}


def test_add_check_del(run_plugin, run_reference, host_ns, container_ns, tmp_path) -> None:
    c = container_ns()
    prev = attach(run_plugin, host_ns, c, tmp_path, "cid1")
    veth = host_veth(prev)
    r = run_plugin(
        "bandwidth",
        "ADD",
        bw_conf(prev, **LIMITS),
        netns=c.path,
        container_id="cid1",
        in_ns=host_ns,
    )
    assert r.rc == 0, r.stdout + r.stderr
    ifb = ifb_name(NET, "cid1")
    assert ifb.startswith("bwp") and len(ifb) == 15
    # prevResult passed through, with the ifb appended as the reference does
    assert r.json["interfaces"][:-1] == prev["interfaces"]
    assert r.json["interfaces"][-1]["name"] == ifb
    assert r.json["interfaces"][-1]["mac"] == host_ns.link(ifb)["address"]
    assert r.json["ips"] == prev["ips"]

    on_veth = {q["kind"]: q for q in qdiscs(host_ns, veth)}
    assert on_veth["tbf"]["handle"] == "1:" and on_veth["tbf"]["root"]
    assert on_veth["tbf"]["options"]["rate"] == 1_000_000  # bytes/s
    assert on_veth["ingress"]["handle"] == "ffff:"
    on_ifb = qdiscs(host_ns, ifb)
    assert [(q["kind"], q["handle"]) for q in on_ifb] == [("tbf", "1:")]
    assert on_ifb[0]["options"]["rate"] == 2_000_000
    link = host_ns.link(ifb)
    assert link["linkinfo"]["info_kind"] == "ifb" and "UP" in link["flags"]
    assert link["mtu"] == host_ns.link(veth)["mtu"]
    filters = json.loads(host_ns.run("tc", "-j", "filter", "show", "dev", veth, "ingress"))
    actions = [a for f in filters for a in f.get("options", {}).get("actions", [])]
    assert actions and all(a["kind"] == "mirred" and a["to_dev"] == ifb for a in actions)
    # pyroute2 as the oracle: the token bucket's numbers are the reference's formula
    raw = tbf_raw(host_ns)
    assert raw[veth] == (1_000_000, 35_000, tc.tbf_params(8_000_000, 80_000)[1])
    assert raw[ifb] == (2_000_000, 70_000, tc.tbf_params(16_000_000, 160_000)[1])

    for runner in (run_plugin, run_reference):
        chk = runner(
            "bandwidth",
            "CHECK",
            bw_conf(r.json, **LIMITS),
            netns=c.path,
            container_id="cid1",
            in_ns=host_ns,
        )
        assert chk.rc == 0, chk.stdout + chk.stderr
    # CHECK sees a changed limit
    host_ns.run("tc", "qdisc", "change", "dev", veth, "root", "tbf", "rate", "4mbit",
                "burst", "10000", "latency", "25ms")  # fmt: skip
    chk = run_plugin(
        "bandwidth", "CHECK", bw_conf(r.json, **LIMITS), netns=c.path, container_id="cid1",
        in_ns=host_ns,
    )  # fmt: skip
    assert "rate doesn't match" in chk.error["msg"]

    d = run_plugin(
        "bandwidth", "DEL", bw_conf(r.json, **LIMITS), netns=c.path, container_id="cid1",
        in_ns=host_ns,
    )  # fmt: skip
    assert d.rc == 0, d.stdout + d.stderr
    assert ifb not in link_names(host_ns)
    assert qdiscs(host_ns, veth) == []
    again = run_plugin(
        "bandwidth", "DEL", bw_conf(None), netns=c.path, container_id="cid1", in_ns=host_ns
    )
    assert again.rc == 0, again.stdout + again.stderr


# containerd (CRI) sends a burst of 2^32-1 bits with the rate from the pod's annotations
CONTAINERD_LIMITS = {
    "IngressRate": 10_000_000,
    "IngressBurst": 4294967295,
    "EgressRate": 20_000_000,
    "EgressBurst": 4294967295,
}


@pytest.mark.parametrize("limits", [LIMITS, CONTAINERD_LIMITS], ids=["plain", "containerd"])
def test_same_objects_as_reference_and_cross_del(
    run_plugin, run_reference, host_ns, container_ns, tmp_path, limits
) -> None:
    """The reference's ADD and ours make the same ifb name, handles and numbers; each
    DEL removes what the other's ADD made, and each CHECK accepts the other's ADD."""
    seen = {}
    for adder, deleter, cid in (
        (run_reference, run_plugin, "x1"),
        (run_plugin, run_reference, "x2"),
    ):
        c = container_ns()
        prev = attach(run_plugin, host_ns, c, tmp_path, cid)
        veth = host_veth(prev)
        r = adder(
            "bandwidth", "ADD", bw_conf(prev, runtimeConfig={"bandwidth": limits}),
            netns=c.path, container_id=cid, in_ns=host_ns,
        )  # fmt: skip
        assert r.rc == 0, r.stdout + r.stderr
        ifb = ifb_name(NET, cid)
        assert r.json["interfaces"][-1]["name"] == ifb
        raw = tbf_raw(host_ns)
        seen[adder] = (
            sorted((q["kind"], q["handle"]) for q in qdiscs(host_ns, veth)),
            [(q["kind"], q["handle"]) for q in qdiscs(host_ns, ifb)],
            raw[veth],
            raw[ifb],
        )
        other_check = deleter(
            "bandwidth", "CHECK", bw_conf(r.json, runtimeConfig={"bandwidth": limits}),
            netns=c.path, container_id=cid, in_ns=host_ns,
        )  # fmt: skip
        assert other_check.rc == 0, other_check.stdout + other_check.stderr
        d = deleter(
            "bandwidth", "DEL", bw_conf(r.json, **LIMITS), netns=c.path, container_id=cid,
            in_ns=host_ns,
        )  # fmt: skip
        assert d.rc == 0, d.stdout + d.stderr
        assert ifb not in link_names(host_ns)
    assert seen[run_plugin] == seen[run_reference]


def test_runtime_config_capability(run_plugin, host_ns, container_ns, tmp_path) -> None:
    """kubelet's runtimeConfig.bandwidth, and containerd's Go-spelled keys; top-level
    keys, when present, win over runtimeConfig."""
    cases = [
        ({"runtimeConfig": {"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000}}}, 1_000_000),
        ({"runtimeConfig": {"bandwidth": {"IngressRate": 16_000_000, "IngressBurst": 80_000}}}, 2_000_000),
        (
            {
                "ingressRate": 24_000_000,
                "ingressBurst": 80_000,
                "runtimeConfig": {"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000}},
            },
            3_000_000,
        ),
    ]  # fmt: skip
    for n, (keys, rate) in enumerate(cases):
        c = container_ns()
        cid = f"rc{n}"
        prev = attach(run_plugin, host_ns, c, tmp_path, cid)
        r = run_plugin(
            "bandwidth", "ADD", bw_conf(prev, **keys), netns=c.path, container_id=cid, in_ns=host_ns
        )
        assert r.rc == 0, r.stdout + r.stderr
        assert r.json == prev  # ingress only: no ifb
        (q,) = qdiscs(host_ns, host_veth(prev))
        assert q["kind"] == "tbf" and q["options"]["rate"] == rate


def test_no_limits_passes_through(run_plugin, host_ns, container_ns, tmp_path) -> None:
    c = container_ns()
    prev = attach(run_plugin, host_ns, c, tmp_path, "z1")
    before = link_names(host_ns)
    for keys in ({}, {"runtimeConfig": {}}, {"ingressRate": 0, "ingressBurst": 0}):
        r = run_plugin(
            "bandwidth",
            "ADD",
            bw_conf(prev, **keys),
            netns=c.path,
            container_id="z1",
            in_ns=host_ns,
        )
        assert r.rc == 0 and r.json == prev, r.stdout + r.stderr
    assert qdiscs(host_ns, host_veth(prev)) == [] and link_names(host_ns) == before


@pytest.mark.parametrize(
    ("keys", "needle"),
    [
        ({"ingressRate": 8_000_000}, "burst must also be set"),
        ({"egressBurst": 80_000}, "rate must also be set"),
        ({"runtimeConfig": {"bandwidth": {"egressRate": 8_000_000}}}, "burst must also be set"),
        ({"egressRate": 8_000_000, "egressBurst": 8 * 4294967295}, "4GB"),
        ({"ingressRate": -1, "ingressBurst": 80_000}, "ingressRate"),
        ({"ingressRate": "8M", "ingressBurst": 80_000}, "ingressRate"),
        ({"ingressRate": 4, "ingressBurst": 80_000}, "at least 8"),
        ({"runtimeConfig": {"bandwidth": "fast"}}, "bandwidth"),
    ],
)
def test_bad_input_refused_cleanly(
    run_plugin, host_ns, container_ns, tmp_path, keys: dict[str, Any], needle: str
) -> None:
    c = container_ns()
    prev = attach(run_plugin, host_ns, c, tmp_path, "bad1")
    before = link_names(host_ns)
    r = run_plugin(
        "bandwidth", "ADD", bw_conf(prev, **keys), netns=c.path, container_id="bad1", in_ns=host_ns
    )
    err = r.error
    assert err["code"] == 7 and needle in err["msg"] + err.get("details", ""), err
    assert link_names(host_ns) == before
    assert qdiscs(host_ns, host_veth(prev)) == []


def test_not_chained_or_not_a_veth(run_plugin, host_ns, container_ns, tmp_path) -> None:
    c = container_ns()
    r = run_plugin(
        "bandwidth", "ADD", bw_conf(None, **LIMITS), netns=c.path, container_id="n1", in_ns=host_ns
    )
    assert r.error["code"] == 7 and "chained plugin" in r.error["msg"]
    # prevResult naming an interface that is not a veth (loopback's result)
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": c.path}]}
    r = run_plugin(
        "bandwidth", "ADD", bw_conf(prev, **LIMITS), netns=c.path, container_id="n1",
        ifname="lo", in_ns=host_ns,
    )  # fmt: skip
    assert r.error["code"] == 7 and "no veth peer" in r.error["msg"]
    assert ifb_name(NET, "n1") not in link_names(host_ns)


def test_del_after_netns_is_gone(run_plugin, host_ns, container_ns, tmp_path) -> None:
    c = container_ns()
    prev = attach(run_plugin, host_ns, c, tmp_path, "g1")
    r = run_plugin(
        "bandwidth", "ADD", bw_conf(prev, **LIMITS), netns=c.path, container_id="g1", in_ns=host_ns
    )
    assert r.rc == 0, r.stdout + r.stderr
    path = c.path
    subprocess.run(["ip", "netns", "del", c.name], check=True)
    d = run_plugin(
        "bandwidth", "DEL", bw_conf(r.json, **LIMITS), netns=path, container_id="g1", in_ns=host_ns
    )
    assert d.rc == 0, d.stdout + d.stderr
    assert not [n for n in link_names(host_ns) if n.startswith("bwp")]


def test_add_twice_keeps_the_first(run_plugin, host_ns, container_ns, tmp_path) -> None:
    """A second ADD for the same container fails cleanly and leaves the first in place."""
    c = container_ns()
    prev = attach(run_plugin, host_ns, c, tmp_path, "t1")
    egress = {"egressRate": 8_000_000, "egressBurst": 80_000}
    first = run_plugin(
        "bandwidth", "ADD", bw_conf(prev, **egress), netns=c.path, container_id="t1", in_ns=host_ns
    )
    assert first.rc == 0, first.stdout + first.stderr
    second = run_plugin(
        "bandwidth", "ADD", bw_conf(prev, **egress), netns=c.path, container_id="t1", in_ns=host_ns
    )
    assert second.error["code"] != 0
    assert ifb_name(NET, "t1") in link_names(host_ns)
    chk = run_plugin(
        "bandwidth", "CHECK", bw_conf(first.json, **egress), netns=c.path, container_id="t1",
        in_ns=host_ns,
    )  # fmt: skip
    assert chk.rc == 0, chk.stdout + chk.stderr


# -- measured rates ------------------------------------------------------------------

_RECEIVER = r"""
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print('ready', flush=True)
c, _ = s.accept()
c.settimeout(10)
marks = []
total = 0
while True:
    data = c.recv(1 << 16)
    if not data:
        break
    total += len(data)
    marks.append((time.monotonic(), total))
t0 = marks[0][0]
lo, hi = float(sys.argv[3]), float(sys.argv[4])
inside = [(t, n) for t, n in marks if t0 + lo <= t <= t0 + hi]
(ta, na), (tb, nb) = inside[0], inside[-1]
print((nb - na) * 8 / (tb - ta))
"""

_SENDER = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
chunk = b'x' * 65536
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    s.sendall(chunk)
s.close()
"""

# Shaped streams: 5 s, measured from 1 s after the first byte (the initial burst has
# drained) to 4.5 s. Unshaped ones only have to be fast, and are CPU-hungry: 1.5 s.
SHAPED = (5.0, (1.0, 4.5))
UNSHAPED = (1.5, (0.5, 1.4))


def goodput(
    sender: Netns,
    receiver: Netns,
    receiver_ip: str,
    port: int,
    timing: tuple[float, tuple[float, float]] = SHAPED,
) -> float:
    """Bits per second received over a window of a TCP stream sent for some seconds."""
    seconds, window = timing
    recv = subprocess.Popen(
        ["ip", "netns", "exec", receiver.name, sys.executable, "-c", _RECEIVER, receiver_ip,
         str(port), str(window[0]), str(window[1])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
        sender.run(sys.executable, "-c", _SENDER, receiver_ip, str(port), str(seconds))
        out, err = recv.communicate(timeout=20)
        assert recv.returncode == 0, err
        return float(out.strip())
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()


@pytest.mark.parametrize("impl", ["pycni", "reference"])
def test_measured_rates(run_plugin, run_reference, host_ns, container_ns, tmp_path, impl) -> None:
    """Shaped: each direction within 10% of its configured rate (different rates, so a
    swapped direction shows). Unshaped: well above both. The reference plugin is
    measured the same way, for comparison. Bursts of 100 ms at the rate let a sender
    that a busy machine stalls for a moment catch up (a token bucket only refills what
    went unused, so the long-run rate cannot exceed the limit)."""
    adder = run_plugin if impl == "pycni" else run_reference
    ingress, egress = 12_000_000, 20_000_000
    limits = {
        "ingressRate": ingress,
        "ingressBurst": ingress // 10,
        "egressRate": egress,
        "egressBurst": egress // 10,
    }
    shaped, free = container_ns(), container_ns()
    prev = attach(run_plugin, host_ns, shaped, tmp_path, "m1")
    prev_free = attach(run_plugin, host_ns, free, tmp_path, "m2")
    r = adder(
        "bandwidth", "ADD", bw_conf(prev, **limits), netns=shaped.path, container_id="m1",
        in_ns=host_ns,
    )  # fmt: skip
    assert r.rc == 0, r.stdout + r.stderr
    gw = prev["ips"][0]["gateway"]
    ip = prev["ips"][0]["address"].split("/")[0]
    ip_free = prev_free["ips"][0]["address"].split("/")[0]
    to_container = goodput(host_ns, shaped, ip, 5201)
    from_container = goodput(shaped, host_ns, gw, 5202)
    print(f"{impl} shaped: to container {to_container / 1e6:.2f} Mbit/s (limit {ingress / 1e6}), "
          f"from container {from_container / 1e6:.2f} Mbit/s (limit {egress / 1e6})")  # fmt: skip
    assert abs(to_container - ingress) <= 0.1 * ingress, to_container
    assert abs(from_container - egress) <= 0.1 * egress, from_container
    free_in = goodput(host_ns, free, ip_free, 5203, UNSHAPED)
    free_out = goodput(free, host_ns, gw, 5204, UNSHAPED)
    print(f"unshaped: to {free_in / 1e6:.1f} Mbit/s, from {free_out / 1e6:.1f} Mbit/s")
    assert free_in > 3 * egress and free_out > 3 * egress, (free_in, free_out)


# -- the kubelet's path: containerd's CRI plugin turns pod annotations into the
#    `bandwidth` capability (Go-spelled keys, burst 2^32-1) -----------------------------


@pytest.mark.parametrize("impl", ["pycni", "reference"])
def test_containerd_pod_annotations(plugin_dir, tmp_path, impl) -> None:
    from tests.conftest import REFERENCE_DIR, _delete_netns, _make_netns
    from tests.cri import Containerd

    host = _make_netns("h")
    cd = None
    try:
        conflist = {
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "plugins": [
                {**bridge_conf(tmp_path, "pytcdbw0"), "name": "k8s-pod-network"},
                {"type": "bandwidth", "capabilities": {"bandwidth": True}},
            ],
        }
        env = {
            "PYCNI_STATE_DIR": str(tmp_path / "pycni-state"),
            "PYCNI_AGENT_SOCKET": str(tmp_path / "agent.sock"),
        }
        bin_dir = str(plugin_dir if impl == "pycni" else REFERENCE_DIR)
        cd = Containerd(host.path, bin_dir, conflist, env)
        cd.start()
        pod = cd.run_pod(
            f"bw-{impl}",
            **{"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "20M"},
        )
        veth = next(x["ifname"] for x in host.ip_json("link", "show", "type", "veth"))
        ifb = ifb_name("k8s-pod-network", pod)
        assert {q["kind"]: q["options"].get("rate") for q in qdiscs(host, veth)} == {
            "tbf": 1_250_000,
            "ingress": None,
        }
        assert [(q["kind"], q["options"]["rate"]) for q in qdiscs(host, ifb)] == [
            ("tbf", 2_500_000)
        ]
        cd.stop_pod(pod)
        cd.remove_pod(pod)
        assert not [n for n in link_names(host) if n.startswith(("bwp", "veth"))]
    finally:
        if cd is not None:
            cd.stop()
        _delete_netns(host)


def test_failed_add_undoes_its_own_steps_only(run_plugin, host_ns, container_ns, tmp_path) -> None:
    """The veth already has an ingress qdisc (someone else's): ADD fails at that step,
    after it made the veth's tbf and the ifb; both are removed again, the other's qdisc
    stays."""
    c = container_ns()
    prev = attach(run_plugin, host_ns, c, tmp_path, "f1")
    veth = host_veth(prev)
    host_ns.run("tc", "qdisc", "add", "dev", veth, "ingress")
    r = run_plugin(
        "bandwidth", "ADD", bw_conf(prev, **LIMITS), netns=c.path, container_id="f1", in_ns=host_ns
    )
    err = r.error
    assert "ingress qdisc" in err["msg"], err
    assert [q["kind"] for q in qdiscs(host_ns, veth)] == ["ingress"]
    assert ifb_name(NET, "f1") not in link_names(host_ns)
