"""pycni.names: the name and interface-name rules, once (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycni import names, skel
from pycni.runtime import containers, networks


@pytest.mark.parametrize(
    ("text", "ok"),
    [("a", True), ("web-1.x_y", True), ("9lives", True), ("", False), ("-a", False),
     ("_a", False), ("a b", False), ("a/b", False), ("é", False), ("aé", False)],
)  # fmt: skip
def test_one_name_rule_everywhere(text: str, ok: bool) -> None:
    assert names.valid_name(text) is ok
    assert skel.valid_name(text) is ok and containers.valid_name(text) is ok


@pytest.mark.parametrize(
    ("name", "problem"),
    [("eth0", None), ("a" * 15, None), ("", "empty"), ("a" * 16, "long"), ("é" * 8, "long"),
     (".", "dots"), ("..", "dots"), ("a/b", "chars"), ("a:b", "chars"), ("a b", "chars"),
     ("a\tb", "chars"), ("a\0", "chars")],
)  # fmt: skip
def test_interface_names(name: str, problem: str | None) -> None:
    assert names.ifname_problem(name) == problem
    assert networks.valid_ifname(name) is (problem is None)


def test_no_copies_of_the_rules_left() -> None:
    repo = Path(__file__).resolve().parents[2]
    for top in ("pycni", "plugins", "ipam", "runtime"):
        for path in (repo / top).rglob("*.py"):
            if path.name == "names.py":
                continue
            text = path.read_text(encoding="utf-8")
            assert '0123456789_.-")' not in text, f"{path}: a copy of the name charset"
            assert "len(name.encode()) > 15" not in text, f"{path}: a copy of the ifname rule"
