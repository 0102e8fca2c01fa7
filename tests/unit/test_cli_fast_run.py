"""`netctl run`'s command lines parsed without argparse (cmd_container.fast_run_args)
must give exactly argparse's namespace, and leave every line it is not sure of to
argparse."""

from __future__ import annotations

import pytest

from pycni.runtime import cli, cmd_container

SAME = [
    ["--rm", "--network", "none", "--", "true"],
    ["--rm", "-p", "18080:80", "--", "true"],
    ["-d", "--name", "web", "-p", "8080:80", "-p", "127.0.0.1:53:53/udp", "--", "sleep", "1"],
    ["--rm", "--name=web", "--network=mynet", "sh", "-c", "echo hi"],
    ["--rm", "-it", "--net", "host", "--", "sh"],
    ["-ti", "--rm", "-e", "A=1", "-e", "B=2", "-w", "/tmp", "-u", "1000", "--", "id"],
    ["--rm", "--ip", "172.30.0.5", "--ip6", "fd00::5", "-h", "box", "--dns", "1.1.1.1", "true"],
    ["-P", "--expose", "80", "--expose", "53/udp", "--privileged", "--", "true"],
    ["--rm", "--", "--weird-command", "-x"],
    ["--detach", "--interactive", "--tty", "--publish", "80", "--hostname", "h", "true"],
    ["--rm"],
    [],
]
NOT_SURE = [
    ["--rm", "--netw", "none", "--", "true"],  # an abbreviation: argparse's business
    ["--rm", "--name"],  # a missing value
    ["--rm", "--name", "-x", "true"],  # a value that looks like an option
    ["-v", "/a:/b", "true"],  # refused by argparse with Docker's words
    ["--sysctl", "net.ipv4.ip_forward=1", "true"],  # not on the fast path
    ["-p=80", "true"],
]


def _argparse(words: list[str]) -> dict[str, object]:
    parser = cli.build_parser("run")
    args, extra = parser.parse_known_args(["run", *words])
    assert not extra
    values = dict(vars(args))
    assert values.pop("func") is cmd_container.cmd_run
    for key in ("netctl_command", "netctl_prog", "debug"):
        values.pop(key, None)
    return values


@pytest.mark.parametrize("words", SAME, ids=[" ".join(w) or "(none)" for w in SAME])
def test_fast_path_is_argparse(words: list[str]) -> None:
    fast = cmd_container.fast_run_args(words)
    assert fast is not None
    assert fast == _argparse(words)
    func, args = cli.fast_path(["run", *words]) or (None, None)
    assert func is cmd_container.cmd_run and args is not None and args.netctl_prog == "netctl run"


@pytest.mark.parametrize("words", NOT_SURE, ids=[" ".join(w) for w in NOT_SURE])
def test_anything_else_goes_to_argparse(words: list[str]) -> None:
    assert cmd_container.fast_run_args(words) is None
    assert cli.fast_path(["run", *words]) is None
