"""A container's processes, as the kernel sees them: each container is a PID namespace
with an init of netctl's, so "all its processes" is well defined. What netctl reports
is the kernel's truth whatever happened to its supervisor; stop/rm end every process
(children that escaped their parent, `netctl exec`'d ones); orphans are reaped; a
workload that cannot start fails `run -d` in Docker's words; signals reach the
workload exactly once; the workload has Docker's capabilities without NET_RAW."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_netctl_run import PY, Netctl, netctl  # noqa: F401 (fixture)

pytestmark = pytest.mark.root


def init_pid(nc: Netctl, name: str) -> int:
    return int(json.loads(nc("inspect", name).stdout)[0]["State"]["Pid"])


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def in_pid_namespace_of(init: int) -> list[int]:
    """Every process of the container: those in its init's PID namespace."""
    target = os.readlink(f"/proc/{init}/ns/pid")
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != init:
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == target:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def test_a_killed_supervisor_leaves_the_truth_and_stop_ends_every_process(
    netctl: Netctl,  # noqa: F811
) -> None:
    # a workload whose child escaped it: the background sleep is reparented to the init
    netctl("run", "-d", "--name", "esc", "--", "sh", "-c", "sleep 300 & exec sleep 301")
    init = init_pid(netctl, "esc")
    time.sleep(0.3)
    procs = descendants(init)
    assert len(procs) == 2, procs
    record = next((netctl.root / "run/netctl/containers").glob("*.json"))
    os.kill(json.loads(record.read_text())["supervisor_pid"], signal.SIGKILL)
    time.sleep(0.3)
    ps = netctl("ps").stdout
    assert "esc" in ps and "Up " in ps  # still running: its processes run
    pruned = netctl("system", "prune", "-f").stdout
    assert "esc" in netctl("ps").stdout, pruned  # prune does not delete a running one
    netctl("stop", "-t", "1", "esc")
    assert not [p for p in [init, *procs] if running(p)]
    assert "Exited" in netctl("ps", "-a").stdout
    assert netctl.veths() == [] and netctl.leases() == []
    netctl("rm", "esc")


def test_orphans_are_reaped(netctl: Netctl) -> None:  # noqa: F811
    netctl(
        "run", "-d", "--name", "orph", "--", "sh", "-c",
        "for i in 1 2 3; do (sleep 0.1 &) ; done; exec sleep 60",
    )  # fmt: skip
    init = init_pid(netctl, "orph")
    time.sleep(1.0)
    states = {
        p: Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        for p in descendants(init)
    }
    assert "Z" not in states.values(), states
    netctl("rm", "-f", "orph")


def test_exec_processes_end_with_their_container(netctl: Netctl) -> None:  # noqa: F811
    netctl("run", "-d", "--name", "ex", "--", "sleep", "60")
    cmd = ["nsenter", f"--net={netctl.node.path}", PY, "-m", "pycni.runtime.cli"]
    proc = subprocess.Popen(
        [*cmd, "exec", "ex", "sh", "-c", "sleep 301 & exec sleep 302"],
        env=netctl.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    init = init_pid(netctl, "ex")
    inside = in_pid_namespace_of(init)
    assert len(inside) == 3, inside  # the workload, and both exec'd processes
    # inside the container's own PID namespace, its init is PID 1
    out = netctl("exec", "ex", "cat", "/proc/1/cmdline").stdout
    assert out, "PID 1 of the container's namespace"
    netctl("rm", "-f", "ex")
    assert proc.wait(10) == 137
    assert not [p for p in [init, *inside] if running(p)]


@pytest.mark.parametrize("rm", [False, True])
def test_run_d_reports_a_workload_that_cannot_start(netctl: Netctl, tmp_path, rm) -> None:  # noqa: F811
    flags = ["--rm"] if rm else []
    proc = netctl("run", "-d", *flags, "--", "/nonexistent/bin", check=False)
    assert proc.returncode == 127, proc.stdout + proc.stderr
    assert 'exec: "/nonexistent/bin": executable file not found in $PATH' in proc.stderr
    assert proc.stdout.strip() == ""  # no container ID for a workload that never ran
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    proc = netctl("run", "-d", *flags, "--", str(script), check=False)
    assert proc.returncode == 126 and "permission denied" in proc.stderr, proc.stderr
    time.sleep(0.3)
    assert netctl.veths() == [] and netctl.leases() == []
    if rm:
        assert netctl("ps", "-a", "-q").stdout.strip() == ""


COUNT_SIGINT = r"""
import signal, sys, time
n = 0
def on(sig, frame):
    global n
    n += 1
signal.signal(signal.SIGINT, on)
print("ready", flush=True)
deadline = time.time() + 20
while n == 0 and time.time() < deadline:
    time.sleep(0.05)
time.sleep(1.0)
print(f"got {n}", flush=True)
"""


def test_a_signal_to_netctls_process_group_reaches_the_workload_once(netctl: Netctl) -> None:  # noqa: F811
    """As a script's `timeout -s INT` or `kill -INT -PGID` does: before, the workload got
    it twice (as a member of netctl's group, and forwarded)."""
    cmd = ["nsenter", f"--net={netctl.node.path}", PY, "-m", "pycni.runtime.cli"]
    proc = subprocess.Popen(
        [*cmd, "run", "--rm", "--network", "none", "--", sys.executable, "-c", COUNT_SIGINT],
        env=netctl.env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "got 1", out


def caps_of(netctl: Netctl, *flags: str) -> int:  # noqa: F811
    out = netctl(
        "run", "--rm", "--network", "none", *flags, "--", "grep", "CapEff", "/proc/self/status"
    ).stdout
    return int(out.split()[1], 16)


def test_workloads_get_dockers_capabilities_without_net_raw(netctl: Netctl) -> None:  # noqa: F811
    from pycni.runtime.sandbox import CAPS, DEFAULT_CAPS, last_cap, permitted_caps

    default = caps_of(netctl)
    assert default == sum(1 << c for c in DEFAULT_CAPS)
    assert not default & (1 << CAPS.index("NET_RAW"))
    assert not default & (1 << CAPS.index("NET_ADMIN"))
    assert not default & (1 << CAPS.index("SYS_ADMIN"))
    # without NET_ADMIN the workload cannot change its (or the node's) network
    proc = netctl("run", "--rm", "--", "ip", "link", "set", "lo", "down", check=False)
    assert proc.returncode != 0
    assert (
        netctl(
            "run", "--rm", "--cap-add", "NET_ADMIN", "--", "ip", "link", "set", "lo", "down"
        ).returncode
        == 0
    )
    with_admin = caps_of(netctl, "--cap-add", "cap_net_admin", "--cap-drop", "CHOWN")
    assert with_admin == (default | (1 << CAPS.index("NET_ADMIN"))) & ~(1 << CAPS.index("CHOWN"))
    assert caps_of(netctl, "--cap-drop", "ALL") == 0
    # every capability the node itself has (this machine lacks CAP_SYS_RESOURCE)
    assert caps_of(netctl, "--privileged") == permitted_caps() & ((1 << (last_cap() + 1)) - 1)
    bad = netctl("run", "--rm", "--cap-add", "FLY", "--", "true", check=False)
    assert bad.returncode == 125 and 'unknown capability: "CAP_FLY"' in bad.stderr


def test_exec_gets_the_containers_capabilities(netctl: Netctl) -> None:  # noqa: F811
    from pycni.runtime.sandbox import DEFAULT_CAPS

    netctl("run", "-d", "--name", "capx", "--", "sleep", "60")
    out = netctl("exec", "capx", "grep", "CapEff", "/proc/self/status").stdout
    assert int(out.split()[1], 16) == sum(1 << c for c in DEFAULT_CAPS)
    netctl("rm", "-f", "capx")


def test_rm_f_never_signals_a_process_that_reused_the_pid(netctl: Netctl) -> None:  # noqa: F811
    """The container's init died with its supervisor and the PID went to an unrelated
    process: rm -f must leave that process alone (signals go through a pidfd only to
    the recorded PID with the recorded start time)."""
    netctl("run", "-d", "--name", "reuse", "--", "sleep", "60")
    record = next((netctl.root / "run/netctl/containers").glob("*.json"))
    rec = json.loads(record.read_text())
    for pid in (rec["supervisor_pid"], rec["pid"]):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        rec["pid"] = bystander.pid  # as if the kernel had given the init's PID to it
        rec["status"] = "running"
        record.write_text(json.dumps(rec))
        netctl("rm", "-f", "reuse")
        assert bystander.poll() is None, "rm -f killed a process that reused the PID"
        assert netctl("ps", "-a", "-q").stdout.strip() == ""
        assert netctl.veths() == [] and netctl.leases() == []
    finally:
        bystander.kill()
        bystander.wait()
