"""Every error path of the netctl CLI speaks Docker's words, never Python's.

Each case runs the real CLI (`python -m pycni.runtime.cli`, as the other runtime tests)
in a sandbox (NETCTL_ROOT under the test's tmp dir, inside a throwaway node namespace)
with one mistake: an unknown container or network for each command that takes one,
bad flags, bad flag values, bad -p specs, missing or extra arguments. The message must
be Docker's for the same mistake, exit 125 (Docker's own-error code; `rm` exits 1 per
container, as `docker rm`), and carry no Python repr: no list or dict literal, no None,
no `<... object at 0x...>`, no argparse usage block, no traceback.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.test_netctl_run import Netctl, netctl  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root

NO_SUCH = "Error: No such container: web"

CASES: list[tuple[list[str], str]] = [
    # unknown container, for each command that takes one
    (["exec", "web", "ip", "-4", "-o", "addr"], NO_SUCH),
    (["exec", "web", "--", "true"], NO_SUCH),
    (["port", "web"], NO_SUCH),
    (["port", "web", "80"], NO_SUCH),
    (["inspect", "web"], NO_SUCH),
    (["stop", "web"], NO_SUCH),
    (["logs", "web"], NO_SUCH),
    (["rm", "web"], NO_SUCH),
    (["run", "--network", "container:web", "--", "true"], "netctl: No such container: web."),
    # unknown network
    (["run", "--network", "nope", "--", "true"], "netctl: network nope not found."),
    (["network", "inspect", "nope"], "Error: No such network: nope"),
    (["network", "rm", "nope"], "Error: network nope not found"),
    (
        ["cni", "add", "nope", "--id", "c1", "--netns", "/proc/self/ns/net"],
        "network nope not found",
    ),
    # bad flags and flag values (pflag's words)
    (["ps", "--bogus"], "unknown flag: --bogus\nSee 'netctl ps --help'."),
    (["ps", "-z"], "unknown shorthand flag: 'z' in -z\nSee 'netctl ps --help'."),
    (["run", "--bogus", "--", "true"], "unknown flag: --bogus\nSee 'netctl run --help'."),
    (["network", "ls", "--bogus"], "unknown flag: --bogus\nSee 'netctl network ls --help'."),
    (["run", "--name"], "flag needs an argument: --name\nSee 'netctl run --help'."),
    (["stop", "-t", "x", "web"], 'invalid argument "x" for "-t, --time" flag'),
    (["ps", "--format", "{{.Names"], "template parsing error: template: :1: unclosed action"),
    (["network", "create", "n1", "--mtu", "big"], 'invalid argument "big" for "--mtu" flag'),
    # bad -p (Docker's nat.ParsePortSpec words)
    (
        ["run", "-p", "99999:80", "--", "true"],
        "netctl: invalid hostPort: 99999.\nSee 'netctl run --help'.",
    ),
    (["run", "-p", "80/icmp", "--", "true"], "netctl: invalid proto: icmp."),
    (["run", "-p", "8080:0", "--", "true"], "invalid containerPort: 0"),
    (["run", "-p", "a:b:c:d", "--", "true"], "See 'netctl run --help'."),
    (["port", "web", "80/icmp"], "Error: "),
    # missing and extra arguments (cobra's words)
    (["run"], '"netctl run" requires at least 1 argument'),
    (["exec", "web"], "\"netctl exec\" requires at least 2 arguments.\nSee 'netctl exec --help'."),
    (["port"], "\"netctl port\" requires at least 1 argument.\nSee 'netctl port --help'."),
    (["port", "a", "b", "c"], '"netctl port" requires at most 2 arguments.'),
    (["ps", "extra"], '"netctl ps" accepts no arguments.'),
    (["stop"], '"netctl stop" requires at least 1 argument.'),
    (["logs"], '"netctl logs" requires exactly 1 argument.'),
    (["network", "create"], '"netctl network create" requires exactly 1 argument.'),
    (["network"], "\"netctl network\" requires a command\nSee 'netctl network --help'."),
    (["frob"], "'frob' is not a netctl command.\nSee 'netctl --help'."),
    (["network", "frob"], "'frob' is not a netctl network command."),
]

PYTHON_REPR = re.compile(
    r"\['|\{'|\bNone\b|object at 0x|Traceback|Namespace\(|^usage:|\(choose from", re.MULTILINE
)


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_error_message(netctl: Netctl, args: list[str], message: str) -> None:  # noqa: F811
    proc = netctl(*args, check=False)
    expected_code = 1 if args[0] == "rm" else 125
    assert proc.returncode == expected_code, (proc.returncode, proc.stderr)
    assert message in proc.stderr, proc.stderr
    assert not PYTHON_REPR.search(proc.stderr), proc.stderr
    assert "See 'netctl [" not in proc.stderr
    assert proc.stderr.endswith("\n") and not proc.stdout.strip().startswith("Traceback")


def test_the_hint_names_the_command_not_its_arguments(netctl: Netctl) -> None:  # noqa: F811
    """The reported bug: `exec` of a missing container printed a Python list as the
    command to get help for."""
    proc = netctl("exec", "web", "ip", "-4", "-o", "addr", check=False)
    assert proc.stderr == "Error: No such container: web\n"


def test_a_real_container_then_its_mistakes(netctl: Netctl) -> None:  # noqa: F811
    """Mistakes about a container that exists: Docker's words again."""
    netctl("run", "-d", "--name", "web", "--network", "none", "--", "sleep", "30")
    cases = [
        (["port", "web", "81"], "Error: No public port '81/tcp' published for web"),
        (["rm", "web"], 'cannot remove container "/web": container is running'),
        (
            ["run", "--name", "web", "--network", "none", "--", "true"],
            'The container name "/web" is already in use',
        ),
        (["network", "rm", "none"], "none is a pre-defined network and cannot be removed"),
    ]
    for args, message in cases:
        proc = netctl(*args, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert not PYTHON_REPR.search(proc.stderr), proc.stderr
    netctl("stop", "-t", "1", "web")
    proc = netctl("exec", "web", "true", check=False)
    assert proc.returncode == 125 and "is not running" in proc.stderr, proc.stderr
    assert proc.stderr.startswith("Error: container "), proc.stderr


def test_version_and_help_exit_zero(netctl: Netctl) -> None:  # noqa: F811
    assert netctl("--version").stdout.startswith("netctl version ")
    assert netctl("-v").stdout == netctl("--version").stdout
    for args in (["--help"], ["run", "--help"], ["network", "ls", "--help"], []):
        proc = netctl(*args)
        assert "COMMAND" in proc.stdout or "--" in proc.stdout, (args, proc.stdout)
