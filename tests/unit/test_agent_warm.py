"""The agent warms what the plugins import lazily (issue 11: derived, not hand-kept)."""

from __future__ import annotations

import ast
from pathlib import Path

from pycni import plugins
from pycni.runtime import agent

REPO = Path(__file__).resolve().parents[2]


def _lazy_pycni_imports(path: Path) -> set[str]:
    """pycni modules imported inside functions of `path`."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if (
                isinstance(inner, ast.ImportFrom)
                and inner.module
                and inner.module.startswith("pycni")
            ):
                if inner.module == "pycni":
                    out.update(f"pycni.{a.name}" for a in inner.names)
                else:
                    out.add(inner.module)
            elif isinstance(inner, ast.Import):
                out.update(a.name for a in inner.names if a.name.startswith("pycni"))
    return out


def test_every_lazy_import_of_a_plugin_is_warmed() -> None:
    warm = set(agent.warm_modules())
    missing = {}
    for module in plugins.PLUGINS.values():
        rel = module.removeprefix("pycni.").replace(".", "/") + ".py"
        path = REPO / rel if (REPO / rel).exists() else REPO / "pycni" / rel
        lazy = {
            m
            for m in _lazy_pycni_imports(path)
            if not m.startswith(agent.WARM_SKIP)
            and m not in ("pycni.plugins", "pycni.runtime")
            and not m.startswith("pycni.runtime.")
        }
        if lazy - warm:
            missing[module] = sorted(lazy - warm)
    assert not missing


def test_the_loader_is_the_table() -> None:
    for name, module in plugins.PLUGINS.items():
        verbs = plugins.load(name)
        assert verbs is not None and verbs is __import__(module, fromlist=["VERBS"]).VERBS
    assert plugins.load("no-such-plugin") is None
