"""fastjson matches the stdlib json for everything CNI sends."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni import fastjson

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=25,
)


@given(values)
def test_same_as_stdlib(value: object) -> None:
    text = json.dumps(value, separators=(",", ":"))
    assert fastjson.dumps(value) == text
    assert fastjson.loads(text) == json.loads(text)
    assert fastjson.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    "bad", ["", " ", "{", "[1,]", "{} {}", "NaN", "Infinity", '"\\x"', b"\xff"]
)
def test_rejects(bad: str | bytes) -> None:
    with pytest.raises(ValueError):
        fastjson.loads(bad)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(ValueError):
        fastjson.loads("[" * 100000 + "]" * 100000)
