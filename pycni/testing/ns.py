"""Namespaces and the commands run in them.

`Host` is the world the kit's namespaces live in. As root it is the machine itself
(`ip netns add`, names under /run/netns). Without root, where the kernel allows
unprivileged user namespaces, it is a sandbox: one holder process made by
`unshare --user --map-root-user --net --mount` with a private /run, so `ip netns`
works inside it; every command enters it with `nsenter` and runs as root of that user
namespace. The holder dies with the pytest process (parent-death signal), and the
namespaces die with it.

`Netns` is one namespace; `run` returns a `subprocess.CompletedProcess[str]`,
`popen` starts a background process that the kit kills at teardown. Every process
carries the run tag (`runs.ENV`) so a later run can reap it if this one is killed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pycni.testing import runs

PY = sys.executable
#: a command that runs longer than this is killed and the test fails (bounded by default)
DEFAULT_TIMEOUT = 60.0


class CommandFailed(AssertionError):
    """A command the test ran in a namespace exited non-zero (stdout and stderr attached)."""

    def __init__(self, argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.argv = list(argv)
        self.proc = proc
        super().__init__(
            f"{' '.join(argv)} -> exit {proc.returncode}\n"
            f"stderr: {proc.stderr.strip()}\nstdout: {proc.stdout.strip()}"
        )


def unprivileged_userns_reason() -> str | None:
    """Why this process cannot make namespaces without root (None: it can)."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux / iproute2)"
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", "--mount", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        knobs = []
        for path in (
            "/proc/sys/kernel/unprivileged_userns_clone",
            "/proc/sys/user/max_user_namespaces",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        ):
            try:
                with open(path) as fh:
                    knobs.append(f"{path}={fh.read().strip()}")
            except OSError:
                pass
        return (
            "pycni.testing needs root or unprivileged user namespaces, and this kernel refuses "
            f"`unshare --user --map-root-user --net --mount` ({probe.stderr.strip()}; "
            f"{', '.join(knobs) or 'no userns sysctls found'})"
        )
    return None


class Host:
    """Where namespaces are made: the machine (root) or a user-namespace sandbox."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.holder: subprocess.Popen[str] | None = None
        self.prefix: list[str] = []
        self.netns_dir = runs.NETNS_DIR
        self.rootless = os.geteuid() != 0

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[runs.ENV] = self.tag
        return env

    def start(self) -> None:
        if not self.rootless:
            return
        script = "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/netns && echo ready && exec sleep infinity"
        argv = [
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "--mount",
            "--propagation",
            "private",
        ]
        if _setpriv_has_pdeathsig():
            argv = ["setpriv", "--pdeathsig", "KILL", *argv]
        self.holder = subprocess.Popen(
            [*argv, "sh", "-c", script], stdout=subprocess.PIPE, text=True, env=self.env
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            self.holder.kill()
            raise RuntimeError("could not start the user-namespace sandbox")
        pid = self.holder.pid
        self.prefix = ["nsenter", "-t", str(pid), "-U", "-m", "-n", "--preserve-credentials"]
        self.netns_dir = f"/proc/{pid}/root/run/netns"

    def stop(self) -> None:
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
            self.holder = None

    def argv(self, *cmd: str) -> list[str]:
        return [*self.prefix, *cmd]

    def run(
        self,
        *cmd: str,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = self.argv(*cmd)
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, input=input, env=env or self.env
        )
        if check and proc.returncode != 0:
            raise CommandFailed(cmd, proc)
        return proc


_pdeathsig: bool | None = None


def _setpriv_has_pdeathsig() -> bool:
    global _pdeathsig
    if _pdeathsig is None:
        out = (
            subprocess.run(["setpriv", "--help"], capture_output=True, text=True)
            if shutil.which("setpriv")
            else None
        )
        _pdeathsig = bool(out and "--pdeathsig" in out.stdout)
    return _pdeathsig


def random_suffix(n: int = 6) -> str:
    return secrets.token_hex(n)[:n]


def safe_label(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)[:20] or "ns"


@dataclass(eq=False)
class Netns:
    """A namespace this run made; deleted, with everything in it, at teardown.

    `label` is the name a test gave it (a topology's node name); `name` is the global
    name (`<run tag>-<label>-<random>`), unique across runs and xdist workers."""

    name: str
    host: Host
    label: str = ""
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The namespace file, usable with `nsenter --net=PATH` or setns(2)."""
        return f"{self.host.netns_dir}/{self.name}"

    def argv(self, *cmd: str) -> list[str]:
        """`cmd` wrapped to run inside this namespace."""
        return self.host.argv("ip", "netns", "exec", self.name, *cmd)

    @property
    def env(self) -> dict[str, str]:
        return self.host.env

    def run(
        self,
        *cmd: str,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in the namespace; raise `CommandFailed` on a non-zero exit when `check`."""
        return self.host.run(
            "ip",
            "netns",
            "exec",
            self.name,
            *cmd,
            check=check,
            timeout=timeout,
            input=input,
            env=env,
        )

    def popen(self, *cmd: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start `cmd` in the namespace in the background; killed at teardown at the latest."""
        kw.setdefault("env", self.env)
        proc = subprocess.Popen(self.argv(*cmd), **kw)
        self.processes.append(proc)
        return proc

    def ip_json(self, *args: str) -> Any:
        out = self.host.run("ip", "-n", self.name, "-j", *args).stdout
        return json.loads(out) if out.strip() else []

    def links(self) -> list[dict[str, Any]]:
        return list(self.ip_json("-d", "addr", "show"))

    def link(self, ifname: str) -> dict[str, Any] | None:
        return next((x for x in self.ip_json("-d", "link", "show") if x["ifname"] == ifname), None)

    def addrs(self, ifname: str) -> list[str]:
        return [
            f"{a['local']}/{a['prefixlen']}"
            for link in self.ip_json("addr", "show", "dev", ifname)
            for a in link.get("addr_info", [])
        ]

    def routes(self, *extra: str) -> list[dict[str, Any]]:
        return list(self.ip_json("route", "show", *extra))

    def sysctl(self, key: str, value: str | None = None) -> str:
        if value is not None:
            self.run("sysctl", "-qw", f"{key}={value}")
        return self.run("cat", f"/proc/sys/{key.replace('.', '/')}").stdout.strip()

    def nft_json(self) -> dict[str, Any]:
        out = self.run("nft", "-j", "list", "ruleset").stdout
        return dict(json.loads(out or '{"nftables": []}'))

    def netlink(self) -> Any:
        """A pyroute2 `NetNS` on this namespace (full netlink: links, addresses, routes,
        neighbours, tc; use it as a context manager). Root only: a user-namespace
        sandbox's namespaces cannot be entered from outside it."""
        import importlib

        # pyroute2 ships no type information: Any, by design
        return importlib.import_module("pyroute2").NetNS(self.path)

    def stop_processes(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()

    def __repr__(self) -> str:
        return f"Netns({self.label or self.name!r}: {self.name})"


def make_netns(host: Host, label: str) -> Netns:
    ns = Netns(f"{host.tag}-{safe_label(label)}-{random_suffix()}", host, label)
    host.run("ip", "netns", "add", ns.name)
    host.run("ip", "-n", ns.name, "link", "set", "lo", "up")
    return ns


def kill_netns_processes(ns: Netns) -> None:
    """SIGKILL every process whose network namespace is `ns` (servers, netctl's
    supervisors), so that deleting the name really frees the namespace."""
    try:
        st = os.stat(ns.path)
        target = (st.st_dev, st.st_ino)
    except OSError:
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
            if (st.st_dev, st.st_ino) == target:
                os.kill(int(entry), signal.SIGKILL)
        except OSError:
            pass


def delete_netns(ns: Netns) -> None:
    ns.stop_processes()
    kill_netns_processes(ns)
    ns.host.run("ip", "netns", "del", ns.name, check=False)
