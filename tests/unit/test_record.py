"""pycni.record stands in for dataclasses on the CLI's start-up path: the behaviour the
runtime's records rely on must be the stdlib's."""

from __future__ import annotations

import dataclasses

import pytest

from pycni import record


def _pair(deco_kw: dict[str, object]) -> tuple[type, type]:
    made = []
    for mod in (dataclasses, record):

        class Base:
            __annotations__ = {"a": "int", "b": "list[int]", "c": "str"}
            b = mod.field(default_factory=list)  # type: ignore[attr-defined]
            c = "x"

        Base.__qualname__ = "Base"
        made.append(mod.dataclass(**deco_kw)(Base))  # type: ignore[attr-defined]
    return made[0], made[1]


@pytest.mark.parametrize("kw", [{}, {"frozen": True}, {"kw_only": True}])
def test_same_behaviour_as_dataclasses(kw: dict[str, object]) -> None:
    std, ours = _pair(kw)
    for cls in (std, ours):
        one = cls(a=1)
        assert (one.a, one.b, one.c) == (1, [], "x")
        assert one == cls(a=1, b=[], c="x") and one != cls(a=2)
        assert cls(a=1).b is not cls(a=1).b  # a fresh list each time
        assert repr(one) == "Base(a=1, b=[], c='x')"
        if kw.get("kw_only"):
            with pytest.raises(TypeError):
                cls(1)
        else:
            assert cls(1, [2], "y") == cls(a=1, b=[2], c="y")
        if kw.get("frozen"):
            assert hash(cls(a=1, b=(), c="x")) == hash(cls(a=1, b=(), c="x"))
            with pytest.raises(AttributeError):
                one.a = 3
        else:
            one.a = 3
            assert one.a == 3 and cls.__hash__ is None
        mod = dataclasses if cls is std else record
        changed = mod.replace(cls(a=1), c="z")  # type: ignore[attr-defined]
        assert (changed.a, changed.c) == (1, "z")
        with pytest.raises(TypeError):
            mod.replace(cls(a=1), nope=1)  # type: ignore[attr-defined]
        with pytest.raises(TypeError):
            cls()  # a is required


def test_post_init_and_inheritance() -> None:
    @record.dataclass
    class A:
        x: int = 1

        def __post_init__(self) -> None:
            self.x *= 10

    @record.dataclass
    class B(A):
        y: int = 2

    b = B(3, 4)
    assert (b.x, b.y) == (30, 4)
