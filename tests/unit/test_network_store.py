"""NetworkStore on a private config dir. The two kernel edges (reading routes, releasing
a bridge) are replaced here; tests/integration/test_network_*.py run them for real."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pycni.runtime import libcni, networks
from pycni.runtime.containers import Attachment, ContainerRecord, ContainerStore
from pycni.runtime.daemon_config import DaemonConfigError
from pycni.runtime.networks import NetworkError, NetworkInUse, NetworkNotFound, NetworkStore
from pycni.runtime.paths import Paths


@pytest.fixture
def routes(monkeypatch: pytest.MonkeyPatch) -> list:
    table: list = []
    monkeypatch.setattr(networks, "route_subnets", lambda: list(table))
    return table


@pytest.fixture
def released(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []

    def release(name: str) -> list[str]:
        names.append(name)
        return []

    monkeypatch.setattr(networks, "release_bridge", release)
    return names


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, routes, released) -> NetworkStore:
    monkeypatch.delenv("NETCTL_DAEMON_CONFIG", raising=False)
    return NetworkStore(Paths({"NETCTL_ROOT": str(tmp_path)}))


def _daemon(store: NetworkStore, obj: dict) -> None:
    path = Path(store.paths.daemon_config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    store._daemon = None


def test_create_writes_a_conflist_any_runtime_loads(store: NetworkStore) -> None:
    net = store.create("mybr0", subnets=["172.26.0.0/16"], gateways=["172.26.0.1"])
    assert net.config_file == store.path_of("mybr0")
    assert sorted(os.listdir(store.dir)) == [".netctl.lock", "bridge.conflist", "mybr0.conflist"]
    loaded = libcni.load_network(store.dir, "mybr0")
    assert loaded.cni_version == "1.1.0"
    assert [p["type"] for p in loaded.plugins] == [
        "bridge",
        "portmap",
        "firewall",
        "isolation",
        "dns",
    ]
    ipam = loaded.plugins[0]["ipam"]
    assert ipam["dataDir"] == os.path.abspath(store.paths.ipam_dir)
    assert ipam["ranges"] == [[{"subnet": "172.26.0.0/16", "gateway": "172.26.0.1"}]]
    assert net.bridge == f"br-{net.id[:12]}" and len(net.id) == 64


def test_auto_subnet_order(store: NetworkStore, routes: list) -> None:
    import ipaddress

    routes.append(ipaddress.ip_network("172.18.5.0/24"))
    a = store.create("a")
    store.create("c", subnets=["172.20.0.0/16"])
    b = store.create("b")
    assert [str(s) for s in a.subnets] == ["172.19.0.0/16"]
    assert [str(s) for s in b.subnets] == ["172.21.0.0/16"]
    assert [str(g) for g in b.gateways] == ["172.21.0.1"]


def test_pools_exhausted(store: NetworkStore) -> None:
    _daemon(store, {"default-address-pools": [{"base": "10.99.0.0/23", "size": 24}]})
    store.create("one")
    store.create("two")
    with pytest.raises(NetworkError) as info:
        store.create("three")
    assert str(info.value) == (
        "could not find an available, non-overlapping IPv4 address pool among the defaults "
        "to assign to the network"
    )
    assert not os.path.exists(store.path_of("three"))


def test_ipv6_picks_a_ula_or_the_configured_pool(store: NetworkStore) -> None:
    net = store.create("six", ipv6=True)
    assert net.ipv6 and [s.version for s in net.subnets] == [4, 6]
    assert net.subnets[1].prefixlen == 64 and str(net.subnets[1]).startswith("fd")
    _daemon(
        store,
        {
            "default-address-pools": [
                {"base": "10.98.0.0/16", "size": 24},
                {"base": "fd42:42::/56", "size": 64},
            ]
        },
    )
    other = store.create("six2", ipv6=True)
    assert [str(s) for s in other.subnets] == ["10.98.0.0/24", "fd42:42::/64"]
    v6only = store.create("six3", subnets=["fd43::/64"])
    assert v6only.ipv6 and [str(s) for s in v6only.subnets] == ["10.98.1.0/24", "fd43::/64"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(subnets=["172.26.10.0/24"]), "Pool overlaps with other one on this address space"),
        (dict(subnets=["172.17.3.0/24"]), "Pool overlaps with other one on this address space"),
        (
            dict(subnets=["172.27.0.0/16"], options={networks.OPT_BRIDGE_NAME: "netctl0"}),
            "bridge name netctl0 is already in use by network bridge",
        ),
        (dict(driver="weave"), 'plugin "weave" not found'),
        (dict(driver="overlay"), "overlay networks need a cluster store"),
        (dict(driver="macvlan"), "the macvlan driver needs a parent interface"),
        (dict(driver="host"), 'only one instance of "host" network is allowed'),
    ],
)
def test_conflicts(store: NetworkStore, kwargs: dict, message: str) -> None:
    store.create("first", subnets=["172.26.0.0/16"])
    with pytest.raises(NetworkError) as info:
        store.create("second", **kwargs)
    assert message in str(info.value)
    assert not os.path.exists(store.path_of("second"))
    with pytest.raises(NetworkError, match="network with name first already exists"):
        store.create("first", subnets=["10.1.0.0/24"])


def test_bridge_name_collision_between_networks(store: NetworkStore) -> None:
    store.create("a", subnets=["10.1.0.0/24"], options={networks.OPT_BRIDGE_NAME: "br-shared"})
    with pytest.raises(NetworkError, match="bridge name br-shared is already in use by network a"):
        store.create("b", subnets=["10.2.0.0/24"], options={networks.OPT_BRIDGE_NAME: "br-shared"})


def test_resolve(store: NetworkStore) -> None:
    net = store.create("mybr0", subnets=["10.1.0.0/24"])
    assert store.resolve("mybr0").id == net.id
    assert store.resolve(net.id).name == "mybr0"
    assert store.resolve(net.id[:5]).name == "mybr0"
    assert store.resolve("host").kind == "host" and store.resolve("none").kind == "none"
    default = store.resolve("bridge")
    assert default.default and default.bridge == "netctl0" and default.kind == "bridge"
    with pytest.raises(NetworkNotFound, match="network nope not found"):
        store.resolve("nope")


def test_list_is_sorted_and_has_the_builtins(store: NetworkStore) -> None:
    store.create("zeta", subnets=["10.1.0.0/24"])
    store.create("alpha", subnets=["10.2.0.0/24"])
    Path(store.dir, "broken.conflist").write_text("{")
    names = [n.name for n in store.list()]
    assert names == ["alpha", "bridge", "host", "none", "zeta"]
    assert len(store.problems) == 1 and "broken.conflist" in store.problems[0]


def test_default_network_follows_daemon_json_and_keeps_its_id(store: NetworkStore) -> None:
    first = store.ensure_default_network()
    path = Path(first.config_file)
    before = path.stat()
    again = store.ensure_default_network()
    assert again.id == first.id and path.stat().st_ino == before.st_ino  # not rewritten
    _daemon(store, {"bip": "10.200.0.1/24", "mtu": 1400, "icc": False})
    changed = NetworkStore(store.paths).ensure_default_network()
    assert changed.id == first.id and changed.created == first.created
    obj = json.loads(path.read_text())
    assert obj["plugins"][0]["mtu"] == 1400 and obj["plugins"][0]["portIsolation"] is True
    assert [str(s) for s in changed.subnets] == ["10.200.0.0/24"]


def test_bad_daemon_json_is_reported(store: NetworkStore) -> None:
    _daemon(store, {"bip": "nonsense"})
    with pytest.raises(
        DaemonConfigError, match=r"invalid daemon configuration .*invalid bip 'nonsense'"
    ):
        store.resolve("bridge")


def _attach(store: NetworkStore, name: str, network: str) -> None:
    ContainerStore(store.paths).save(
        ContainerRecord(
            id=os.urandom(32).hex(),
            name=name,
            command=["sleep", "1"],
            attachments=[Attachment(network=network, ips=["10.1.0.2/24"])],
        )
    )


def test_remove(store: NetworkStore, released: list[str]) -> None:
    net = store.create("mybr0", subnets=["10.1.0.0/24"])
    leases = Path(store.ipam_dir, "mybr0")
    leases.mkdir(parents=True)
    (leases / "10.1.0.2").write_text("stale\r\neth0")
    index = Path(store.ipam_dir, ".pycni-index.mybr0")  # host-local's lease index
    index.write_text("")
    _attach(store, "c1", "mybr0")
    _attach(store, "c2", "mybr0")
    with pytest.raises(NetworkInUse) as info:
        store.remove("mybr0")
    msg = str(info.value)
    assert msg.startswith(
        f"error while removing network: network mybr0 id {net.id} has active endpoints ("
    )
    assert "c1" in msg and "c2" in msg
    assert os.path.exists(net.config_file) and released == []
    for rec in ContainerStore(store.paths).all():
        ContainerStore(store.paths).delete(rec.id)
    removed, warnings = store.remove(net.id[:8])
    assert removed.name == "mybr0" and warnings == []
    assert not os.path.exists(net.config_file) and not leases.exists() and not index.exists()
    assert released == [net.bridge]
    for builtin in ("bridge", "host", "none"):
        with pytest.raises(
            NetworkError, match=f"{builtin} is a pre-defined network and cannot be removed"
        ):
            store.remove(builtin)


def test_prune_keeps_used_and_foreign_networks(store: NetworkStore) -> None:
    store.create("used", subnets=["10.1.0.0/24"])
    store.create("idle1", subnets=["10.2.0.0/24"])
    store.create("idle2", subnets=["10.3.0.0/24"])
    Path(store.dir, "foreign.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "foreign", "plugins": [{"type": "loopback"}]})
    )
    _attach(store, "c1", "used")
    removed, _ = store.prune()
    assert removed == ["idle1", "idle2"]
    assert [n.name for n in store.list()] == ["bridge", "foreign", "host", "none", "used"]


def test_concurrent_creates_get_distinct_subnets_and_one_default_id(store: NetworkStore) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # children keep the replaced kernel edges
    ids = ctx.Queue()

    def work(i: int) -> None:
        s = NetworkStore(store.paths)
        ids.put(s.create(f"n{i}") and s.resolve("bridge").id)

    procs = [ctx.Process(target=work, args=(i,)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    seen = {ids.get(timeout=5) for _ in procs}
    assert seen == {store.resolve("bridge").id}
    subnets = [n.subnets[0] for n in store.list() if n.name in {f"n{i}" for i in range(8)}]
    assert len(subnets) == 8 and len(set(subnets)) == 8


def test_runtime_defaults_come_from_daemon_json(store: NetworkStore) -> None:
    assert store.runtime_defaults() == networks.RuntimeDefaults("0.0.0.0", [], [], [])
    _daemon(
        store,
        {
            "ip": "127.0.0.1",
            "dns": ["10.0.0.53"],
            "dns-search": ["a.test"],
            "dns-opts": ["ndots:1"],
        },
    )
    fresh = NetworkStore(store.paths)
    assert fresh.runtime_defaults() == networks.RuntimeDefaults(
        "127.0.0.1", ["10.0.0.53"], ["a.test"], ["ndots:1"]
    )
    assert fresh.resolve("bridge").host_binding_ipv4 == "127.0.0.1"


def test_unchanged_daemon_json_is_not_parsed(store: NetworkStore) -> None:
    """`netctl run` resolves networks in a fresh process each time: while daemon.json is
    unchanged, that process never imports pydantic (~200 ms)."""
    import subprocess
    import sys

    _daemon(store, {"dns": ["10.0.0.53"]})
    store.ensure_default_network()
    code = (
        "import sys\n"
        "from pycni.runtime.networks import NetworkStore\n"
        "from pycni.runtime.paths import Paths\n"
        f"s = NetworkStore(Paths({{'NETCTL_ROOT': {str(store.paths.root)!r}}}))\n"
        "assert s.resolve('bridge').bridge == 'netctl0'\n"
        "assert s.runtime_defaults().dns == ['10.0.0.53']\n"
        "print('pydantic' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NETCTL_DAEMON_CONFIG"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _full_rows(store: NetworkStore) -> list[tuple[str, str, str]]:
    return [(n.id, n.name, n.driver) for n in store.list()]


def test_network_ls_listing_is_the_store_listing(store: NetworkStore) -> None:
    """`network ls` reads conflist.listing (the conflist format only, issue 17's start-up
    goal); it must show exactly what the store lists, foreign conflists and .conf files
    included, and step aside (None) whenever the store has more to do."""
    from pycni.runtime import conflist

    assert conflist.listing(store.paths) is None  # no default network written yet
    store.create("mybr0", subnets=["172.26.0.0/16"])
    store.create("other", subnets=["172.27.0.0/16"], driver="bridge")
    Path(store.dir, "foreign.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "podnet",
                "plugins": [{"type": "ptp"}, {"type": "portmap"}],
            }
        )
    )
    Path(store.dir, "single.conf").write_text(
        json.dumps({"cniVersion": "0.4.0", "name": "single", "type": "macvlan"})
    )
    Path(store.dir, "dup.json").write_text(  # a name seen already: the first file wins
        json.dumps({"cniVersion": "0.4.0", "name": "podnet", "type": "ipvlan"})
    )
    Path(store.dir, "zz.conflist").write_text(  # another file naming the default network
        json.dumps({"cniVersion": "1.0.0", "name": "bridge", "plugins": [{"type": "x"}]})
    )
    rows = conflist.listing(store.paths)
    assert rows is not None and rows == _full_rows(store)
    assert [r[1] for r in rows] == ["bridge", "host", "mybr0", "none", "other", "podnet", "single"]
    # daemon.json changed: the store rewrites bridge.conflist first
    _daemon(store, {"bip": "10.55.0.1/24"})
    assert conflist.listing(store.paths) is None
    assert conflist.listing(store.paths) is None  # until someone runs the full path
    _full_rows(store)
    assert conflist.listing(store.paths) == _full_rows(store)
    # a file the store would report as unusable
    Path(store.dir, "broken.conflist").write_text("{nope")
    assert conflist.listing(store.paths) is None


def test_an_empty_netctl_root_is_the_default_not_the_working_directory() -> None:
    """`NETCTL_ROOT= netctl ...` (set but empty, as an unset shell variable expands)
    means the default root, never files under the caller's working directory."""
    assert Paths({"NETCTL_ROOT": ""}).config == "/etc/netctl"
    assert Paths({"NETCTL_ROOT": ""}).lib == "/var/lib/netctl"
    assert Paths({}).run == "/run/netctl"
