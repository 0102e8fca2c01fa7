"""pycni.testing: integration tests in network namespaces, as a pytest plugin.

`pip install pycni[testing]` registers the plugin (entry point `pytest11`, module
`pycni.testing.plugin`); a test asks for its fixtures by name:

    netns       a fresh network namespace (`.name`, `.path`, `.run(*cmd)`)
    node        a throwaway host: a namespace with its own netctl root and plugin state
                (`.netctl(...)`, `.run(...)`, `.exec(container, ...)`)
    topology    a factory: `topology(dict | "file.yaml")` builds nodes, links, bridges,
                addresses, routes, VXLANs, netctl networks and containers
    netns_factory, node_factory, module_topology   the same, made on demand or per module

Traffic helpers live in `pycni.testing.traffic`, scapy helpers in
`pycni.testing.packets`. Nothing here is imported until a test uses it: a pytest run
that does not ask for these fixtures pays for one small module.

Everything the kit makes carries the run tag of the pytest process that made it
(`pkt<pid>_<start>`, see `runs`), so the next run reaps what a killed run left behind
and never touches what a live run owns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["topology_fixture"]


def topology_fixture(spec: object, scope: str = "module") -> Any:
    """A fixture (assign it to a name in a test module) that builds `spec` once per
    `scope` and tears it down after:

        lab = pycni.testing.topology_fixture("lab.yaml")

        def test_ping(lab): ...
    """
    import pytest

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def _topology(request: pytest.FixtureRequest) -> Iterator[Any]:
        from pycni.testing.plugin import build_topology

        topo = build_topology(request, spec)
        try:
            yield topo
        finally:
            topo.close()

    return _topology
