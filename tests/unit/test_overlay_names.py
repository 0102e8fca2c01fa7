"""Names across overlay hosts, the pure parts: what the plugin takes from CNI inputs,
what the agent puts in etcd and mirrors, and what the resolver answers from a mirror."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dns.message
import pytest

from pycni import conf, errors
from pycni.overlay import names as onames
from pycni.overlay.spec import ClusterStore, NetworkSpec
from pycni.runtime import dns as resolver
from pycni.runtime import overlay_networks
from pycni.runtime.containers import Attachment
from tests.unit.test_names_and_networks import rec


def test_names_from_cni_inputs_pod_name_first_then_this_networks_aliases() -> None:
    d = {"name": "ov", "runtimeConfig": {"aliases": {"ov": ["api", "apipod"], "x": ["no"]}}}
    assert conf.dns_names(d, {"K8S_POD_NAME": "apipod"}, "overlay") == ["apipod", "api"]
    assert conf.dns_names({"name": "ov"}, {}, "overlay") == []
    for bad in (["a b"], [""], ["x" * 254], "api", [3]):
        with pytest.raises(errors.InvalidConfig):
            conf.dns_names({"name": "ov", "runtimeConfig": {"aliases": {"ov": bad}}}, {}, "o")


class FakeStore:
    def __init__(self) -> None:
        self.kv: dict[str, tuple[str, int]] = {}
        self.calls: list[tuple[str, str]] = []

    def put(self, key: str, value: str, lease: int = 0) -> None:
        self.kv[key] = (value, lease)
        self.calls.append(("put", key))

    def delete(self, key: str) -> int:
        self.calls.append(("delete", key))
        return 1 if self.kv.pop(key, None) else 0


def test_the_agent_publishes_local_names_under_its_lease_and_only_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path))
    d = Path(onames.local_dir("ov"))
    d.mkdir(parents=True)
    (d / "c1-eth0.json").write_text(json.dumps({"names": ["web", "www"], "ips": ["10.5.1.2"]}))
    (d / "c2-eth0.json").write_text("{not json")
    want = onames.local_values("ov", "192.0.2.1")
    key = "/pycni/overlay/names/ov/192.0.2.1/c1-eth0"
    assert list(want) == [key]
    assert json.loads(want[key]) == {"Names": ["web", "www"], "IPs": ["10.5.1.2"]}
    store, have = FakeStore(), {}
    onames.publish(store, 77, want, have)  # type: ignore[arg-type]
    onames.publish(store, 77, want, have)  # type: ignore[arg-type]
    assert store.calls == [("put", key)] and store.kv[key][1] == 77
    onames.publish(store, 77, {}, have)  # type: ignore[arg-type]
    assert store.calls[-1] == ("delete", key) and have == {}


def test_the_mirror_keeps_other_hosts_names_and_the_resolver_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYCNI_STATE_DIR", str(tmp_path))
    entries = {
        "/pycni/overlay/names/ov/192.0.2.2/c9-eth0": json.dumps(
            {"Names": ["Web", "www."], "IPs": ["10.5.2.2"]}
        ),
        "/pycni/overlay/names/ov/192.0.2.3/bad-eth0": "[]",
    }
    Path(onames.mirror_path("ov")).parent.mkdir(parents=True)  # (the agent's directory)
    onames.write_mirror("ov", entries)
    path = onames.mirror_path("ov")
    saved = json.loads(Path(path).read_text())
    assert saved["entries"] == [{"host": "192.0.2.2", "names": ["web", "www"], "ips": ["10.5.2.2"]}]
    assert onames.read_mirror(path) == [(["web", "www"], ["10.5.2.2"])]
    assert onames.read_mirror(str(tmp_path / "none.json")) == []
    paths = resolver.remote_names_paths(["ov", "bridge", "ov"])
    assert paths == {"ov": path}
    assert resolver.load_remote_names(paths) == {"ov": [(["web", "www"], ["10.5.2.2"])]}


def ask(v: resolver.View, client: str, name: str, rtype: str = "A") -> Any:
    return resolver.Answerer(v).answer(v.clients[client], dns.message.make_query(name, rtype))


def test_remote_names_answer_on_their_network_only_and_merge_with_local_ones() -> None:
    v = resolver.build_view(
        [
            rec("cli", "/ns/cli", Attachment("ov", ips=["10.5.1.2/16"])),
            rec("dup", "/ns/dup", Attachment("ov", ips=["10.5.1.3/16"])),
            rec("stranger", "/ns/s", Attachment("other", ips=["10.6.1.2/16"])),
        ],
        remote={"ov": [(["web", "www"], ["10.5.2.2"]), (["dup"], ["10.5.2.3"])]},
    )
    for name in ("web", "www", "web.ov"):
        resp, _ = ask(v, "/ns/cli", name)
        assert [rd.to_text() for rrs in resp.answer for rd in rrs] == ["10.5.2.2"], name
    resp, cacheable = ask(v, "/ns/cli", "dup")
    assert sorted(rd.to_text() for rrs in resp.answer for rd in rrs) == ["10.5.1.3", "10.5.2.3"]
    assert not cacheable  # several addresses: shuffled per answer
    resp, _ = ask(v, "/ns/cli", "2.2.5.10.in-addr.arpa", "PTR")
    assert [rd.to_text() for rrs in resp.answer for rd in rrs] == ["web.ov."]
    assert ask(v, "/ns/s", "web") is None  # not on ov: not ours to answer
    assert ask(v, "/ns/s", "2.2.5.10.in-addr.arpa", "PTR") is None


def test_the_overlay_conflist_publishes_names_and_registers_other_runtimes() -> None:
    spec = NetworkSpec("ov", "10.5.0.0/16", 4100)
    cl = overlay_networks.conflist(
        spec, ClusterStore("etcd://192.0.2.11:2379"), "eth0", None, "/run/netctl"
    )
    overlay, dns_plugin = cl["plugins"]
    assert overlay["capabilities"] == {"aliases": True}
    assert dns_plugin == {"type": "dns", "runDir": "/run/netctl", "internal": False,
                          "capabilities": {"aliases": True}}  # fmt: skip
    assert len(overlay_networks.conflist(spec, ClusterStore("etcd://h:1"), "e")["plugins"]) == 1
