"""A throwaway host: a namespace with its own netctl root, plugin state and firewall
tables. Nothing a node does reaches the real host: netctl runs inside the node's
namespace (`nsenter --net`, so the mount namespace, and with it netctl's netns bind
mounts, is shared by every call), and every path it writes is under the node's root,
a directory named with the run tag (so a later run can unmount what a killed one left).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pycni.testing import runs
from pycni.testing.ns import DEFAULT_TIMEOUT, PY, CommandFailed, Netns, delete_netns


class Node:
    """`node.netctl(...)`, `node.run(...)` (in the node's namespace), `node.exec(container, ...)`;
    every result is a `subprocess.CompletedProcess[str]`."""

    def __init__(self, ns: Netns, root: Path) -> None:
        self.ns = ns
        self.name = ns.label
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = dict(ns.env)
        self.env.update(
            NETCTL_ROOT=str(root),
            NETCTL_DAEMON_CONFIG=str(root / "daemon.json"),
            # an agent started on demand would outlive the test: plugins run in-process
            PYCNI_AGENT_AUTOSTART="0",
        )
        self.env.pop("PYCNI_STATE_DIR", None)

    # -- places to run commands ---------------------------------------------------------

    @property
    def path(self) -> str:
        return self.ns.path

    def argv(self, *cmd: str) -> list[str]:
        """`cmd` wrapped to run in the node's namespace (with the node's environment)."""
        return self.ns.host.argv("nsenter", f"--net={runs.NETNS_DIR}/{self.ns.name}", *cmd)

    def run(
        self,
        *cmd: str,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A command in the node's own ("host") namespace."""
        return self._run(self.argv(*cmd), cmd, check, timeout, input)

    def popen(self, *cmd: str, **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("env", self.env)
        proc = subprocess.Popen(self.argv(*cmd), **kw)
        self.ns.processes.append(proc)
        return proc

    def netctl(
        self,
        *args: str,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`netctl ARGS` on this node."""
        argv = self.argv(PY, "-m", "pycni.runtime.cli", *args)
        return self._run(argv, ("netctl", *args), check, timeout, input)

    def exec(
        self, container: str, *cmd: str, check: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """`cmd` inside a running container of this node (`netctl exec`)."""
        return self.netctl("exec", container, *cmd, check=check, timeout=timeout)

    def container(self, ref: str) -> Container:
        return Container(self, ref)

    def _run(
        self,
        argv: list[str],
        shown: tuple[str, ...],
        check: bool,
        timeout: float,
        input: str | None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=self.env, timeout=timeout, input=input
        )
        if check and proc.returncode != 0:
            raise CommandFailed(shown, proc)
        return proc

    # -- what is on it -------------------------------------------------------------------

    def containers(self) -> list[dict[str, Any]]:
        """`netctl inspect` of every container, running or not."""
        ids = self.netctl("ps", "-a", "-q", check=False).stdout.split()
        if not ids:
            return []
        proc = self.netctl("inspect", *ids, check=False)
        try:
            return list(json.loads(proc.stdout or "[]"))
        except ValueError:
            return []

    def ip(self, container: str, network: str = "") -> str:
        """A container's IPv4 address (on `network`, or its first one)."""
        doc = json.loads(self.netctl("inspect", container).stdout)[0]
        nets = doc["NetworkSettings"]["Networks"]
        entry = nets[network] if network else next(iter(nets.values()))
        return str(entry["IPAddress"])

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        for cid in self.netctl("ps", "-a", "-q", check=False, timeout=30).stdout.split():
            self.netctl("rm", "-f", cid, check=False, timeout=30)
        unmount_under(self.root, self.ns)
        delete_netns(self.ns)

    def __repr__(self) -> str:
        return f"Node({self.name!r}: {self.ns.name}, root={self.root})"


class Container:
    """A running container of a node, as a place to run commands (traffic helpers take it
    like a namespace)."""

    def __init__(self, node: Node, ref: str) -> None:
        self.node = node
        self.ref = ref

    @property
    def env(self) -> dict[str, str]:
        return self.node.env

    def argv(self, *cmd: str) -> list[str]:
        return self.node.argv(PY, "-m", "pycni.runtime.cli", "exec", self.ref, *cmd)

    def run(
        self, *cmd: str, check: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return self.node.exec(self.ref, *cmd, check=check, timeout=timeout)

    def popen(self, *cmd: str, **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("env", self.env)
        proc = subprocess.Popen(self.argv(*cmd), **kw)
        self.node.ns.processes.append(proc)
        return proc

    @property
    def ip(self) -> str:
        return self.node.ip(self.ref)

    def __repr__(self) -> str:
        return f"Container({self.node.name}/{self.ref})"


def unmount_under(root: Path, ns: Netns) -> list[str]:
    """Lazily unmount everything mounted under `root` (netctl's netns bind mounts)."""
    prefix = str(root).rstrip("/") + "/"
    mounts: list[str] = []
    if ns.host.rootless and ns.host.holder is not None:
        info = f"/proc/{ns.host.holder.pid}/mountinfo"
    else:
        info = "/proc/self/mountinfo"
    try:
        with open(info, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix):
                    mounts.append(point)
    except OSError:
        return []
    for point in sorted(mounts, key=len, reverse=True):
        ns.host.run("umount", "-l", point, check=False)
    return mounts


def node_root(base: Path, tag: str, label: str) -> Path:
    """A fresh directory for a node's netctl root, named with the run tag."""
    from pycni.testing.ns import random_suffix, safe_label

    root = base / f"{tag}-{safe_label(label)}-{random_suffix()}"
    if root.exists():
        shutil.rmtree(root)
    os.makedirs(root, mode=0o755)
    return root
