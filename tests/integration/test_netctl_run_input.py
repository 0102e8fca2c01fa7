"""`netctl run` refuses values that would add lines to a container's resolv.conf, hosts
or hostname (a newline in --dns-search used to add a nameserver of the caller's
choosing), with Docker's wording and exit code 125, before anything is created; the
same validators serve daemon.json's keys."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_netctl_run import Netctl, netctl  # noqa: F401 (fixture)

pytestmark = pytest.mark.root

BAD = [
    (("--dns", "10.0.0.1\nnameserver 6.6.6.6"), "is not an ip address"),
    (("--dns", "resolver.example"), "is not an ip address"),
    (("--dns-search", "corp.example\nnameserver 6.6.6.6"), "not a valid domain name"),
    (("--dns-search", "two words"), "not a valid domain name"),
    (("--dns-option", "ndots:1\nnameserver 6.6.6.6"), "an option is one word"),
    (("--hostname", "box\n10.0.0.1 evil"), "invalid hostname format"),
    (("--hostname=-leading",), "invalid hostname format"),
    (("--add-host", "db:10.0.0.1\n10.6.6.6\tlocalhost"), "bad format for add-host"),
    (("--add-host", "db x:10.0.0.1"), "bad format for add-host"),
]


@pytest.mark.parametrize(("flags", "words"), BAD, ids=[w for _f, w in BAD])
def test_values_that_would_add_lines_are_refused(netctl: Netctl, flags, words) -> None:  # noqa: F811
    proc = netctl("run", "--rm", *flags, "--", "true", check=False)
    assert proc.returncode == 125, proc.stderr
    assert words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert netctl.netns_files() == [] and netctl.veths() == [] and netctl.leases() == []


def test_the_same_rules_hold_for_daemon_json(netctl: Netctl) -> None:  # noqa: F811
    (netctl.root / "daemon.json").write_text(
        json.dumps({"dns-search": ["corp.example\nnameserver 6.6.6.6"]})
    )
    proc = netctl("run", "--rm", "--", "true", check=False)
    assert proc.returncode == 125 and "dns-search" in proc.stderr, proc.stderr


def test_good_values_still_land_in_the_files(netctl: Netctl) -> None:  # noqa: F811
    out = netctl(
        "run",
        "--rm",
        "--network",
        "none",
        "--dns",
        "10.9.9.9",
        "--dns-search",
        ".",
        "--dns-option",
        "ndots:2",
        "--hostname",
        "box-1.lab",
        "--",
        "cat",
        "/etc/resolv.conf",
        "/etc/hostname",
    ).stdout
    assert "nameserver 10.9.9.9" in out and "options ndots:2" in out and "box-1.lab" in out
