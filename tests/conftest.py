"""Test harness: throwaway namespaces, real plugin executables, leak and host checks.

Rules this file enforces (docs/testing.md has the kit they are built on):
- Every kernel object a test makes lives in a namespace the test created
  (`host_ns` plays the node, `container_ns()` the containers); names carry a random
  suffix, so tests run in parallel under pytest-xdist.
- Plugins are the real executables written by `netctl plugins install`, exec'd with
  CNI_* env and stdin exactly as a runtime does, inside the throwaway host namespace.
- The real host's links, addresses, routes, nft ruleset and iptables rules are
  compared before and after the session; a difference fails the run (pycni.testing's
  host check, enabled in pyproject.toml, which also fails a module that leaks a namespace).
- Tests marked `root` need root. Without root they are skipped, except when
  PYCNI_REQUIRE_ROOT=1 (CI), where a skip is an error.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycni.testing import hostcheck

REPO = Path(__file__).resolve().parent.parent
TEST_PREFIX = "pyt"  # every namespace, link and table a test creates starts with this
# Each test process (an xdist worker, or a second pytest run on the same machine) gets
# its own prefix, so leak checks see, and clean up, only their own namespaces.
WORKER_PREFIX = f"{TEST_PREFIX}{os.getpid()}"
IS_ROOT = os.geteuid() == 0
# No plugin starts an agent on demand unless its test asks (PYCNI_AGENT_AUTOSTART=1):
# `plugins install` below writes this default into the executables, and every process
# the suite starts inherits it. An agent left running after a test is a leak.
os.environ["PYCNI_AGENT_AUTOSTART"] = "0"
# Nor does an agent running on the machine (a user's, at /run/pycni/agent.sock) serve the
# suite's plugin calls: its code and its state dir are not the ones under test. Tests of
# the agent point PYCNI_AGENT_SOCKET at the agent they start.
os.environ.setdefault("PYCNI_AGENT_SOCKET", f"/tmp/{TEST_PREFIX}-no-agent-{os.getpid()}/agent.sock")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    if os.environ.get("PYCNI_REQUIRE_ROOT") == "1":
        raise pytest.UsageError("PYCNI_REQUIRE_ROOT=1 but the suite is not running as root")
    skip = pytest.mark.skip(reason="needs root (real namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


def sh(*cmd: str, check: bool = True, input: str | bytes | None = None, timeout: float = 60) -> str:
    """Run a command; return stdout; raise with stderr on failure."""
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()} {proc.stdout.decode()}"
        )
    return proc.stdout.decode()


def short_id(n: int = 6) -> str:
    return secrets.token_hex(n // 2 + 1)[:n]


# -- the real host must not change ---------------------------------------------------
# The session check (links, addresses, routes, nft, iptables, CNI/netctl state dirs) and
# the per-module namespace leak check are pycni.testing's (ini `pycni_host_check = true`
# in pyproject.toml); the leak check also covers this file's own namespaces.

hostcheck.watch_namespaces(
    lambda n: n.startswith(WORKER_PREFIX) and n[len(WORKER_PREFIX)].isalpha()
)


def host_netns_names() -> set[str]:
    return hostcheck.netns_names("/var/run/netns")


# -- namespaces ------------------------------------------------------------------------


@dataclass
class Netns:
    """A namespace this test created; deleted (with everything in it) at teardown."""

    name: str
    path: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = f"/var/run/netns/{self.name}"

    def run(
        self, *cmd: str, check: bool = True, input: str | bytes | None = None, timeout: float = 60
    ) -> str:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check, input=input, timeout=timeout)

    def ip_json(self, *args: str) -> Any:
        out = sh("ip", "-n", self.name, "-j", *args)
        return json.loads(out) if out.strip() else []

    def link(self, name: str) -> dict[str, Any] | None:
        for link in self.ip_json("-d", "link", "show"):
            if link["ifname"] == name:
                return link
        return None

    def addrs(self, ifname: str) -> list[str]:
        out = []
        for link in self.ip_json("addr", "show", "dev", ifname):
            for a in link.get("addr_info", []):
                out.append(f"{a['local']}/{a['prefixlen']}")
        return out

    def routes(self, *extra: str) -> list[dict[str, Any]]:
        return self.ip_json("route", "show", *extra)

    def sysctl(self, key: str) -> str:
        return self.run("cat", f"/proc/sys/{key.replace('.', '/')}").strip()

    def nft_json(self) -> dict[str, Any]:
        return json.loads(self.run("nft", "-j", "list", "ruleset") or '{"nftables": []}')


def _make_netns(kind: str) -> Netns:
    ns = Netns(f"{WORKER_PREFIX}{kind}-{short_id(8)}")
    sh("ip", "netns", "add", ns.name)
    sh("ip", "-n", ns.name, "link", "set", "lo", "up")
    return ns


def _delete_netns(ns: Netns) -> None:
    sh("ip", "netns", "del", ns.name, check=False)


@pytest.fixture
def host_ns() -> Iterator[Netns]:
    """A throwaway 'node': plugins run inside it, so their bridges, nft tables and
    sysctls live and die with it."""
    ns = _make_netns("h")
    yield ns
    _delete_netns(ns)


@pytest.fixture
def container_ns() -> Iterator[Callable[[], Netns]]:
    """Factory for throwaway container namespaces."""
    made: list[Netns] = []

    def make() -> Netns:
        ns = _make_netns("c")
        made.append(ns)
        return ns

    yield make
    for ns in made:
        _delete_netns(ns)


# -- plugins ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real installer writes the real executables here, once per session."""
    directory = tmp_path_factory.mktemp("cni-bin")
    sh(sys.executable, "-m", "pycni.runtime.cli", "plugins", "install", "--dir", str(directory))
    return directory


REFERENCE_DIR = Path("/usr/lib/cni")


@dataclass
class PluginRun:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error(self) -> dict[str, Any]:
        assert self.rc != 0, f"expected a failure, got rc=0: {self.stdout}"
        obj = json.loads(self.stdout)
        assert isinstance(obj.get("code"), int) and obj.get("msg"), obj
        assert "Traceback" not in self.stdout + self.stderr
        return obj


def exec_plugin(
    executable: str | Path,
    command: str,
    conf: dict[str, Any] | str | bytes | None,
    *,
    netns: str = "",
    ifname: str = "eth0",
    container_id: str = "",
    args: str = "",
    cni_path: str = "",
    in_ns: Netns | None = None,
    env_extra: dict[str, str] | None = None,
    omit: tuple[str, ...] = (),
    timeout: float = 60,
) -> PluginRun:
    """Exec a plugin as a runtime does: a clean environment with CNI_* set, the config
    on stdin, run inside the throwaway host namespace when `in_ns` is given."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": args,
        "CNI_PATH": cni_path,
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    for key in omit:
        env.pop(key, None)
    env.update(env_extra or {})
    if isinstance(conf, dict):
        stdin = json.dumps(conf).encode()
    elif isinstance(conf, str):
        stdin = conf.encode()
    else:
        stdin = conf or b""
    cmd = [str(executable)]
    if in_ns is not None:
        cmd = ["ip", "netns", "exec", in_ns.name, *cmd]
    proc = subprocess.run(cmd, input=stdin, env=env, capture_output=True, timeout=timeout, cwd="/")
    return PluginRun(
        proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """The plugins' own state dir (PYCNI_STATE_DIR) for this test."""
    d = tmp_path / "pycni-state"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture
def run_plugin(plugin_dir: Path, state_dir: Path) -> Callable[..., PluginRun]:
    """run_plugin("bridge", "ADD", conf, netns=..., in_ns=host_ns, ...) with our plugins
    first in CNI_PATH and the reference plugins after them; plugin state under the
    test's tmp dir."""

    def run(name: str, command: str, conf: Any, **kw: Any) -> PluginRun:
        kw.setdefault("cni_path", f"{plugin_dir}:{REFERENCE_DIR}")
        env = {"PYCNI_STATE_DIR": str(state_dir)}
        env.update(kw.pop("env_extra", None) or {})
        return exec_plugin(plugin_dir / name, command, conf, env_extra=env, **kw)

    return run


@pytest.fixture
def run_reference() -> Callable[..., PluginRun]:
    """The same for the reference Go plugins (containernetworking-plugins)."""

    def run(name: str, command: str, conf: Any, **kw: Any) -> PluginRun:
        kw.setdefault("cni_path", str(REFERENCE_DIR))
        return exec_plugin(REFERENCE_DIR / name, command, conf, **kw)

    return run
