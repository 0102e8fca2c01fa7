"""The pytest plugin (entry point `pytest11: pycni = pycni.testing.plugin`).

Registering it costs a pytest run one small module and a few option names: the
fixtures import the kit when a test first asks for one, and the failure report hook is
registered only then. Fixtures:

    netns            function   a fresh namespace
    netns_factory    function   make(label="ns") -> Netns, as many as the test wants
    node             function   a throwaway host with its own netctl root
    node_factory     function   make(label="node") -> Node
    topology         function   build(spec: dict | "file.yaml") -> Topology
    module_topology  module     the same, built once per module and spec
    pycni_run        session    the run: its tag, its host (root or user-namespace sandbox)

Options: `--pycni-capture=on|off` (ini `pycni_capture`, default on): capture every
interface of every namespace the kit makes; the pcap files of a failed test are kept and
named in its report, the others deleted. Ini `pycni_host_check = true`: fail the session
if the real host's network state changed, and each module that leaks a namespace.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pycni.testing.node import Node
    from pycni.testing.ns import Netns
    from pycni.testing.session import Run
    from pycni.testing.topology import Topology

REPORT_SECTION = "pycni network"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pycni", "pycni.testing: namespaces, nodes and topologies")
    group.addoption(
        "--pycni-capture",
        choices=("on", "off"),
        default=None,
        help="capture packets on every interface of the kit's namespaces (default: ini pycni_capture, on)",
    )
    parser.addini("pycni_capture", "capture packets in the kit's namespaces (on/off)", default="on")
    parser.addini(
        "pycni_host_check",
        "fail the session when the real host's network state changed (true/false)",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getini("pycni_host_check"):
        from pycni.testing import hostcheck

        config.pluginmanager.register(hostcheck, "pycni-host-check")


# -- the run --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pycni_run(pytestconfig: pytest.Config) -> Iterator[Run]:
    """This pytest process's run: reaps dead runs' leftovers first, tears down last."""
    from pycni.testing import ns, runs
    from pycni.testing.session import Run

    if os.geteuid() != 0:
        reason = ns.unprivileged_userns_reason()
        if reason:
            pytest.skip(reason)
    reaped = runs.reap_dead_runs()
    if reaped:
        terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        capman = pytestconfig.pluginmanager.get_plugin("capturemanager")
        if terminal is not None and capman is not None:
            with capman.global_and_fixture_disabled():
                terminal.write_line(
                    f"\npycni.testing: reaped what dead runs left: {len(reaped.namespaces)} "
                    f"namespaces, {len(reaped.processes)} processes, {len(reaped.mounts)} mounts"
                )
    capture = (
        pytestconfig.getoption("--pycni-capture") or pytestconfig.getini("pycni_capture")
    ) == "on"
    run = Run.start(capture=capture)
    reporter = _Reporter(run)
    pytestconfig.pluginmanager.register(reporter, f"pycni-reporter-{run.tag}")
    try:
        yield run
    finally:
        pytestconfig.pluginmanager.unregister(reporter)
        run.stop()


class _Reporter:
    """On a failed test, the picture of every namespace, node and topology it used."""

    def __init__(self, run: Run) -> None:
        self.run = run

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Iterator[None]:
        outcome: Any = yield
        rep = outcome.get_result()
        if not rep.failed:
            return
        funcargs = getattr(item, "funcargs", {})
        text = picture_of(self.run, list(funcargs.values()), mark_failed=True)
        if text:
            rep.sections.append((REPORT_SECTION, text))


def picture_of(run: Run, objects: list[Any], mark_failed: bool = False) -> str:
    from pycni.testing import picture
    from pycni.testing.node import Node
    from pycni.testing.ns import Netns
    from pycni.testing.topology import Topology

    entries: list[picture.Entry] = []
    peers: dict[str, dict[str, str]] = {}

    seen: set[str] = set()

    def add(obj: Any, label: str = "") -> None:
        if isinstance(obj, Node | Netns):
            name = obj.ns.name if isinstance(obj, Node) else obj.name
            if name in seen:
                return
            seen.add(name)
        if isinstance(obj, Node):
            entries.append(picture.Entry(label or obj.name, obj.ns, obj, run.pcaps(obj.ns)))
            if mark_failed:
                run.failed.add(obj.ns.name)
        elif isinstance(obj, Netns):
            entries.append(picture.Entry(label or obj.label, obj, None, run.pcaps(obj)))
            if mark_failed:
                run.failed.add(obj.name)
        elif isinstance(obj, Topology):
            peers.update(obj.peers())
            for name, member in obj.nodes.items():
                add(member, name)
        elif isinstance(obj, _Factory):
            for made in obj.made:
                add(made)

    for obj in objects:
        add(obj)
    if not entries:
        return ""
    head = f"run {run.tag}; pcap files are kept for failed tests (one per namespace and interface)"
    return head + "\n" + picture.render(entries, peers)


# -- factories ------------------------------------------------------------------------


class _Factory:
    def __init__(self, run: Run, base: Path) -> None:
        self.run = run
        self.base = base
        self.made: list[Any] = []

    def _keep(self, ns_name: str) -> bool:
        return ns_name in self.run.failed

    def close(self) -> None:
        from pycni.testing.node import Node
        from pycni.testing.topology import Topology

        for obj in reversed(self.made):
            if isinstance(obj, Topology):
                obj.close()
            elif isinstance(obj, Node):
                self.run.close_node(obj, self._keep(obj.ns.name))
            else:
                self.run.delete(obj, self._keep(obj.name))
        self.made.clear()


class NetnsFactory(_Factory):
    def __call__(self, label: str = "ns") -> Netns:
        ns = self.run.netns(label, self.base / "pcap")
        self.made.append(ns)
        return ns


NODE_NEEDS_ROOT = (
    "a node runs netctl, which needs real root (its netns mounts, PID namespaces, and it "
    "refuses state directories a user namespace shows as owned by nobody); plain "
    "namespaces and topologies without `netctl: true` work unprivileged"
)


def _node(run: Run, label: str, base: Path) -> Node:
    if run.host.rootless:
        pytest.skip(NODE_NEEDS_ROOT)
    return run.node(label, base, base / "pcap")


class NodeFactory(_Factory):
    def __call__(self, label: str = "node") -> Node:
        node = _node(self.run, label, self.base)
        self.made.append(node)
        return node


def build_topology(request: pytest.FixtureRequest, spec: Any, base: Path | None = None) -> Topology:
    """Build `spec` for `request` (the plugin's factories and `topology_fixture` use it)."""
    from pycni.testing.topology import build

    run: Run = request.getfixturevalue("pycni_run")
    if base is None:
        base = request.getfixturevalue("tmp_path_factory").mktemp("pycni-topology")
    pcap = base / "pcap"

    def closer(obj: Any) -> None:
        from pycni.testing.node import Node

        if isinstance(obj, Node):
            run.close_node(obj, obj.ns.name in run.failed)
        else:
            run.delete(obj, obj.name in run.failed)

    return build(
        spec,
        make_netns=lambda label: run.netns(label, pcap),
        make_node=lambda label: _node(run, label, base),
        closer=closer,
        relative_to=Path(str(request.path)).parent,
    )


class TopologyFactory(_Factory):
    def __init__(self, run: Run, base: Path, request: pytest.FixtureRequest) -> None:
        super().__init__(run, base)
        self.request = request
        self.cache: dict[str, Topology] = {}

    def __call__(self, spec: Any) -> Topology:
        key = spec if isinstance(spec, str | Path) else repr(spec)
        if str(key) not in self.cache:
            topo = build_topology(self.request, spec, self.base)
            self.made.append(topo)
            self.cache[str(key)] = topo
        return self.cache[str(key)]


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def netns_factory(pycni_run: Run, tmp_path: Path) -> Iterator[Callable[..., Netns]]:
    """make(label="ns") -> a fresh namespace; all deleted after the test."""
    factory = NetnsFactory(pycni_run, tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def netns(netns_factory: NetnsFactory) -> Netns:
    """A fresh network namespace (`.name`, `.path`, `.run(*cmd)`), deleted after the test."""
    return netns_factory("ns")


@pytest.fixture
def node_factory(pycni_run: Run, tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """make(label="node") -> a throwaway host; all torn down after the test."""
    factory = NodeFactory(pycni_run, tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def node(node_factory: NodeFactory) -> Node:
    """A throwaway host: its own namespace, netctl root, plugin state and firewall tables."""
    return node_factory("node")


@pytest.fixture
def topology(
    pycni_run: Run, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Topology]]:
    """build(spec) -> Topology, from a dict or a YAML file (relative to the test file)."""
    factory = TopologyFactory(pycni_run, tmp_path, request)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_topology(
    pycni_run: Run, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Topology]]:
    """build(spec) -> Topology, built once per module and spec."""
    factory = TopologyFactory(pycni_run, tmp_path_factory.mktemp("pycni-module"), request)
    yield factory
    factory.close()
