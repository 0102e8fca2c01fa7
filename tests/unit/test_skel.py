"""skel: the CNI_* environment, stdin, version rules and error output, in-process."""

from __future__ import annotations

import json

import pytest

from pycni import errors, skel
from pycni import version as cniver
from pycni.result import Result

CALLS: list[str] = []


def _add(cmd: skel.CmdArgs) -> Result:
    CALLS.append("ADD")
    return Result(cmd.cni_version)


def _del(cmd: skel.CmdArgs) -> None:
    CALLS.append("DEL")


def _check(cmd: skel.CmdArgs) -> None:
    CALLS.append("CHECK")


VERBS = skel.Verbs("test plugin", add=_add, delete=_del, check=_check)
GOOD_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}
CONF = {"cniVersion": "1.0.0", "name": "net1", "type": "test"}


def run(env: dict[str, str], conf: object = CONF) -> tuple[dict, int]:
    CALLS.clear()
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    out, code = skel.run(VERBS, env, stdin)
    return (json.loads(out) if out else {}), code


def test_add_prints_result_in_requested_version() -> None:
    out, code = run(GOOD_ENV)
    assert code == 0 and out == {"cniVersion": "1.0.0", "dns": {}}
    assert CALLS == ["ADD"]


def test_version_ignores_stdin_and_lists_every_version() -> None:
    out, code = run({"CNI_COMMAND": "VERSION"}, b"garbage that is never read")
    assert code == 0
    assert out == {"cniVersion": "1.1.0", "supportedVersions": list(cniver.SUPPORTED)}


@pytest.mark.parametrize(
    ("drop", "missing"),
    [
        (("CNI_NETNS",), "CNI_NETNS"),
        (("CNI_CONTAINERID", "CNI_PATH"), "CNI_CONTAINERID,CNI_PATH"),
        (("CNI_IFNAME",), "CNI_IFNAME"),
    ],
)
def test_missing_env_is_code_4_naming_the_variables(drop: tuple[str, ...], missing: str) -> None:
    env = {k: v for k, v in GOOD_ENV.items() if k not in drop}
    out, code = run(env)
    assert code == 1 and out["code"] == 4
    assert out["msg"] == f"required env variables [{missing}] missing"
    assert CALLS == []


def test_del_does_not_need_netns() -> None:
    env = dict(GOOD_ENV, CNI_COMMAND="DEL")
    del env["CNI_NETNS"]
    _out, code = run(env)
    assert code == 0 and CALLS == ["DEL"]


@pytest.mark.parametrize(
    ("cid", "code", "msg"),
    [
        ("-leading-dash", 4, "invalid characters in containerID"),
        ("a/b", 4, "invalid characters in containerID"),
        ("a b", 4, "invalid characters in containerID"),
        ("../../etc", 4, "invalid characters in containerID"),
        ("ok\nnewline", 4, "invalid characters in containerID"),
    ],
)
def test_bad_container_ids(cid: str, code: int, msg: str) -> None:
    out, rc = run(dict(GOOD_ENV, CNI_CONTAINERID=cid))
    assert rc == 1 and out["code"] == code and out["msg"] == msg


def test_invalid_container_id_wins_over_missing_vars() -> None:
    env = dict(GOOD_ENV, CNI_CONTAINERID="bad/id")
    del env["CNI_NETNS"]
    out, _ = run(env)
    assert out["msg"] == "invalid characters in containerID"


@pytest.mark.parametrize(
    ("ifname", "msg"),
    [
        ("a" * 16, "interface name is too long"),
        (".", "interface name is . or .."),
        ("..", "interface name is . or .."),
        ("eth/0", "interface name contains / or : or whitespace characters"),
        ("eth:0", "interface name contains / or : or whitespace characters"),
        ("eth 0", "interface name contains / or : or whitespace characters"),
        ("eth\n0", "interface name contains / or : or whitespace characters"),
        ("ééééééééé", "interface name is too long"),  # 18 bytes: the kernel counts bytes
    ],
)
def test_bad_ifnames(ifname: str, msg: str) -> None:
    out, rc = run(dict(GOOD_ENV, CNI_IFNAME=ifname))
    assert rc == 1 and out["code"] == 4 and out["msg"] == msg


@pytest.mark.parametrize(
    ("stdin", "code"),
    [
        (b"", 6),
        (b"{", 6),
        (b'{"cniVersion": "1.0.0", "name": "n"', 6),
        (b"[]", 6),
        (b"null", 6),
        (b"\xff\xfe", 6),
        (b'{"name": 5}', 6),
        (b'{"cniVersion": "1.0.0"}', 7),
        (b'{"cniVersion": "1.0.0", "name": ""}', 7),
        (b'{"cniVersion": "1.0.0", "name": "bad/name"}', 7),
        (b'{"cniVersion": "1.0.0", "name": "a;flush ruleset"}', 7),
        (b'{"cniVersion": "2.0.0", "name": "n"}', 1),
        (b'{"cniVersion": "1.0", "name": "n"}', 1),
        (b'{"cniVersion": 1, "name": "n"}', 6),
    ],
)
def test_bad_stdin(stdin: bytes, code: int) -> None:
    out, rc = run(GOOD_ENV, stdin)
    assert rc == 1 and out["code"] == code, out
    assert CALLS == []


def test_oversized_stdin_is_refused() -> None:
    big = b'{"name": "n", "pad": "' + b"x" * (skel.MAX_STDIN + 10) + b'"}'
    out, rc = run(GOOD_ENV, big)
    assert rc == 1 and out["code"] == 6 and "too large" in out["msg"]


def test_missing_cni_version_means_0_1_0() -> None:
    # A 0.1.0 result needs an IP address; our test verb returns none, so the
    # conversion error proves the version was taken as 0.1.0.
    out, code = run(GOOD_ENV, {"name": "n", "type": "t"})
    assert (
        code == 1
        and out["cniVersion"] == "0.1.0"
        and out["msg"] == "cannot convert: no valid IP addresses"
    )


def test_unknown_command_is_code_4() -> None:
    out, rc = run(dict(GOOD_ENV, CNI_COMMAND="FROB"))
    assert rc == 1 and out["code"] == 4 and out["msg"] == "unknown CNI_COMMAND: FROB"


@pytest.mark.parametrize(
    ("command", "minimum"), [("CHECK", "0.4.0"), ("GC", "1.1.0"), ("STATUS", "1.1.0")]
)
def test_verbs_gated_by_version(command: str, minimum: str) -> None:
    env = dict(GOOD_ENV, CNI_COMMAND=command)
    out, rc = run(env, dict(CONF, cniVersion="0.3.1"))
    assert rc == 1 and out["code"] == 1 and out["msg"] == f"config version does not allow {command}"
    out, rc = run(env, dict(CONF, cniVersion="1.1.0"))
    assert rc == 0


def test_unimplemented_verb_is_clean_success() -> None:
    out, rc = run({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, dict(CONF, cniVersion="1.1.0"))
    assert (out, rc) == ({}, 0)


def test_error_json_shape_and_version() -> None:
    def boom(cmd: skel.CmdArgs) -> Result:
        raise errors.InvalidConfig("bad thing", "fix it like this")

    out, code = skel.run(
        skel.Verbs("x", add=boom, delete=_del),
        GOOD_ENV,
        json.dumps(dict(CONF, cniVersion="0.4.0")).encode(),
    )
    assert code == 1
    assert json.loads(out) == {
        "cniVersion": "0.4.0",
        "code": 7,
        "msg": "bad thing",
        "details": "fix it like this",
    }


def test_unexpected_exception_is_internal_error_without_traceback() -> None:
    def boom(cmd: skel.CmdArgs) -> Result:
        raise KeyError("surprise")

    out, code = skel.run(
        skel.Verbs("x", add=boom, delete=_del), GOOD_ENV, json.dumps(CONF).encode()
    )
    obj = json.loads(out)
    assert code == 1 and obj["code"] == 999 and "KeyError" in obj["msg"]
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("IP=10.0.0.5", {"IP": "10.0.0.5"}),
        ("A=1;B=2", {"A": "1", "B": "2"}),
        ("IgnoreUnknown=1;K8S_POD_NAME=web", {"IgnoreUnknown": "1", "K8S_POD_NAME": "web"}),
    ],
)
def test_cni_args_parse(text: str, expected: dict[str, str]) -> None:
    assert skel.parse_cni_args(text) == expected


@pytest.mark.parametrize("text", ["A", "A=1=2", "=1", "A=1;B"])
def test_cni_args_invalid_pairs(text: str) -> None:
    with pytest.raises(errors.InvalidEnvironment, match="ARGS: invalid pair"):
        skel.parse_cni_args(text)


def test_cni_args_unknown_keys() -> None:
    with pytest.raises(errors.InvalidEnvironment, match=r'ARGS: unknown args \["FOO=bar"\]'):
        skel.check_cni_args({"FOO": "bar", "IP": "1.2.3.4"}, frozenset({"IP"}))
    skel.check_cni_args({"FOO": "bar", "IgnoreUnknown": "true"}, frozenset({"IP"}))
    skel.check_cni_args({"FOO": "bar", "IgnoreUnknown": "1"}, frozenset({"IP"}))
