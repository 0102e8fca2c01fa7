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


# -- Go's key matching (what the reference plugins and libcni do) ---------------------------


def test_go_objects_match_keys_as_go_does() -> None:
    # containerd's go-cni sends untagged structs: the keys keep their Go field names.
    conf = fastjson.loads(
        b'{"runtimeConfig":{"portMappings":[{"HostPort":8080,"ContainerPort":80,'
        b'"Protocol":"tcp","HostIP":""}]}}',
        go=True,
    )
    m = conf["RUNTIMECONFIG"]["portMappings"][0]
    assert (m["hostPort"], m.get("containerPort"), m.get("protocol"), m.get("hostIP")) == (
        8080,
        80,
        "tcp",
        "",
    )
    assert "hostport" in m and "hostPortX" not in m
    assert m.get("missing", 7) == 7
    with pytest.raises(KeyError):
        m["missing"]


def test_go_objects_prefer_the_exact_spelling_then_the_last_folded_key() -> None:
    d = fastjson.loads('{"HOSTPORT":1,"hostPort":2,"HostPort":3}', go=True)
    assert d["hostPort"] == 2 and d.get("hostport") == 3  # last folded match wins
    assert d.get("HostPort") == 3


def test_go_fold_is_simple_case_folding() -> None:
    # Go folds the Kelvin sign to K and the long s to S, but never "ß" to "ss".
    assert fastjson.loads('{"\u212aey":1}', go=True).get("key") == 1
    assert fastjson.loads('{"\u017fubnet":1}', go=True).get("subnet") == 1
    assert fastjson.loads('{"addre\u00df":1}', go=True).get("address") is None


def test_go_objects_serialise_as_written() -> None:
    text = '{"HostPort":1,"nested":{"A":[{"B":2}]}}'
    d = fastjson.loads(text, go=True)
    assert fastjson.dumps(d) == text
    assert isinstance(d, dict) and type(fastjson.loads(text)) is dict
