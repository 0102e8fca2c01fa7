"""The resident agent (`netctl agent`): same answers as the plugins on their own, in the
caller's namespaces, with a fallback that never runs a verb twice.

The agent runs in the real root namespace with its socket under the test's tmp dir;
the plugin executables are exec'd inside a throwaway host namespace, exactly as in the
other integration tests, with PYCNI_AGENT_SOCKET pointing at the agent (and
PYCNI_AGENT=0 for the standalone runs they are compared with).

Every test that execs a plugin runs twice, once per plugin client `netctl plugins
install` writes (the `plugin_dir` fixture below overrides the session's): the compiled
client (pycni/native/cniclient.c, built here with the machine's C compiler) and the
Python entry (PYCNI_NATIVE=0). Agents started on demand are started only by the tests
that ask (PYCNI_AGENT_AUTOSTART=1), and stopped by PID.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni import agent_client as wire
from tests.conftest import REPO, Netns, PluginRun, sh

pytestmark = pytest.mark.root


@pytest.fixture(scope="module", params=["native", "python"])
def plugin_dir(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin executables as `netctl plugins install` writes them: the compiled
    client (a C compiler is part of the setup: scripts/setup.sh) or the Python entry."""
    directory = tmp_path_factory.mktemp(f"cni-bin-{request.param}")
    env = dict(os.environ, PYCNI_NATIVE="1" if request.param == "native" else "0")
    subprocess.run(
        [sys.executable, "-m", "pycni.runtime.cli", "plugins", "install", "--dir", str(directory)],
        check=True,
        capture_output=True,
        env=env,
        cwd=REPO,
    )
    is_elf = (directory / "loopback").read_bytes().startswith(b"\x7fELF")
    assert is_elf == (request.param == "native"), "the C client did not build"
    return directory


class Agent:
    """A `netctl agent --foreground --verbose` subprocess and its log."""

    def __init__(self, socket_path: Path, log_path: Path) -> None:
        self.socket = socket_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> Agent:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pycni.runtime.cli",
                "agent",
                "--socket",
                str(self.socket),
                "--foreground",
                "--verbose",
                "--spare",
                "2",
                *extra,
            ],
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
        log.close()
        deadline = time.monotonic() + 30
        while "listening on" not in self.log():
            assert self.proc.poll() is None, f"agent exited: {self.log()}"
            assert time.monotonic() < deadline, f"agent did not start: {self.log()}"
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def served(self) -> int:
        """How many calls the agent has answered (its --verbose log)."""
        return len(re.findall(r": pycni\.\S+ \w+ for pid \d+: exit", self.log()))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        fields = fh.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.pid:
                    out.append(int(entry))
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Workers of a killed agent die with it or finish their call; none may linger.
        deadline = time.monotonic() + 10
        while self.children_alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def children_alive(self) -> bool:
        return bool(self.children()) if self.proc is not None else False


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path / "agent" / "agent.sock", tmp_path / "agent.log")
    a.start()
    yield a
    a.stop()


@pytest.fixture
def via(run_plugin, agent: Agent) -> Callable[..., PluginRun]:
    """via(True|False, name, command, conf, ...): one plugin call through the agent or on
    its own; both know the agent's socket, only PYCNI_AGENT differs."""

    def run(through_agent: bool, name: str, command: str, conf: Any, **kw: Any) -> PluginRun:
        env = {"PYCNI_AGENT_SOCKET": str(agent.socket)}
        if not through_agent:
            env["PYCNI_AGENT"] = "0"
        env.update(kw.pop("env_extra", None) or {})
        return run_plugin(name, command, conf, env_extra=env, **kw)

    return run


def bridge_conf(tmp: Path, network: str = "anet", **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": network,
        "type": "bridge",
        "bridge": "pytagbr0",
        "isDefaultGateway": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.67.0.0/24"}]],
            "dataDir": str(tmp / "ipam"),
        },
    }
    conf.update(extra)
    return conf


LOOPBACK = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
MAC = re.compile(r'"mac":"[0-9a-f:]{17}"')
VETH = re.compile(r'"name":"veth[0-9a-f]+"')


def v4(ns: Netns) -> list[str]:
    return [a for a in ns.addrs("eth0") if ":" not in a]


def normalized(text: str) -> str:
    """A bridge result without what is random per attachment (MACs, host veth name)."""
    return VETH.sub('"name":"VETH"', MAC.sub('"mac":"MAC"', text))


# -- the same answers ----------------------------------------------------------------------


def test_socket_and_directory_modes(agent: Agent) -> None:
    st = os.stat(agent.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert stat.S_IMODE(os.stat(agent.socket.parent).st_mode) == 0o700


def test_loopback_identical(via, agent: Agent, container_ns) -> None:
    c = container_ns()
    for through_agent in (True, False):
        runs = [
            via(through_agent, "loopback", verb, LOOPBACK, netns=c.path, container_id="lo1")
            for verb in ("ADD", "CHECK", "DEL", "VERSION")
        ]
        if through_agent:
            first = runs
        assert [r.rc for r in runs] == [0, 0, 0, 0], runs
    assert [(r.stdout, r.rc) for r in first] == [(r.stdout, r.rc) for r in runs]
    assert agent.served() == 3  # VERSION is answered by the executable itself


def test_a_socket_path_longer_than_sun_path_is_served(
    tmp_path: Path, run_plugin, container_ns
) -> None:
    """An agent socket deeper than sun_path's 107 bytes (PYCNI_AGENT_SOCKET under a long
    tmp_path): the agent binds it and both clients reach it (through the directory's
    descriptor), rather than the agent failing to start or the calls all running
    standalone."""
    deep = tmp_path / ("a" * 60) / ("b" * 60) / "agent.sock"
    assert len(str(deep)) > 107
    a = Agent(deep, tmp_path / "agent.log").start()
    try:
        st = os.stat(deep)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        c = container_ns()
        env = {"PYCNI_AGENT_SOCKET": str(deep)}
        for verb in ("ADD", "CHECK", "DEL"):
            r = run_plugin(
                "loopback", verb, LOOPBACK, netns=c.path, container_id="lo1", env_extra=env
            )
            assert r.rc == 0, r
        assert a.served() == 3
    finally:
        a.stop()


def test_bridge_in_the_clients_namespace(via, agent: Agent, host_ns: Netns, container_ns, tmp_path):
    """The agent lives in the root namespace; a client in a throwaway host namespace
    gets its bridge there, with the same answers as the standalone plugin."""
    other_host = container_ns()  # a second throwaway "node" for the standalone run
    outputs = {}
    for through_agent, node in ((True, host_ns), (False, other_host)):
        c = container_ns()
        conf = bridge_conf(tmp_path / ("agent" if through_agent else "alone"))
        add = via(through_agent, "bridge", "ADD", conf, netns=c.path, container_id="c1", in_ns=node)
        assert add.rc == 0, add
        assert node.link("pytagbr0") is not None
        assert v4(c) == ["10.67.0.2/24"]
        conf["prevResult"] = add.json
        check = via(
            through_agent, "bridge", "CHECK", conf, netns=c.path, container_id="c1", in_ns=node
        )
        delete = via(
            through_agent, "bridge", "DEL", conf, netns=c.path, container_id="c1", in_ns=node
        )
        outputs[through_agent] = [
            (normalized(r.stdout).replace(c.path, "NETNS"), r.rc) for r in (add, check, delete)
        ]
        assert c.link("eth0") is None
    assert outputs[True] == outputs[False]
    assert outputs[True][1:] == [("", 0), ("", 0)]
    assert agent.served() == 3
    # Never in the namespace the agent itself runs in.
    assert subprocess.run(["ip", "link", "show", "pytagbr0"], capture_output=True).returncode != 0


def test_ptp_answers_and_del_leaves_nothing(
    via, agent: Agent, host_ns: Netns, container_ns, tmp_path
):
    """ptp through the agent answers as on its own. Its DEL answers once the kernel has
    unregistered the veth pair, before the kernel has freed it (netsetup.del_veth): what
    a runtime sees then is all gone, and an ADD of the same attachment works at once."""
    outputs = {}
    for through_agent in (True, False):
        c = container_ns()
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "pnet",
            "type": "ptp",
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.68.0.0/24"}]],
                "dataDir": str(tmp_path / ("agent" if through_agent else "alone")),
            },
        }
        runs = []
        for _round in range(2):  # the second ADD right after the first DEL
            add = via(through_agent, "ptp", "ADD", conf, netns=c.path, container_id="p1",
                      in_ns=host_ns)  # fmt: skip
            assert add.rc == 0, add
            ip = add.json["ips"][0]["address"].split("/")[0]  # host-local goes round-robin
            assert host_ns.routes(ip) and v4(c) == [f"{ip}/24"]
            delete = via(through_agent, "ptp", "DEL", dict(conf, prevResult=add.json),
                         netns=c.path, container_id="p1", in_ns=host_ns)  # fmt: skip
            assert delete.rc == 0, delete
            assert c.link("eth0") is None and host_ns.ip_json("link", "show", "type", "veth") == []
            assert host_ns.routes(ip) == []
            assert "10.68.0.1" not in host_ns.run("ip", "-4", "addr", "show")
            runs += [add, delete]
        outputs[through_agent] = [
            (normalized(r.stdout).replace(c.path, "NETNS"), r.rc) for r in runs
        ]
    assert outputs[True] == outputs[False]
    assert agent.served() == 4


BAD_CALLS: list[tuple[str, dict[str, Any], bytes | str | dict[str, Any]]] = [
    ("garbage stdin", {}, b"{not json"),
    ("not UTF-8", {}, b'{"cniVersion":"1.0.0","name":"\xff"}'),
    ("empty stdin", {}, b""),
    ("a JSON list", {}, b"[1,2]"),
    ("unsupported version", {}, {**LOOPBACK, "cniVersion": "9.9.9"}),
    ("unknown command", {"command": "FROB"}, LOOPBACK),
    ("missing container id", {"omit": ("CNI_CONTAINERID",)}, LOOPBACK),
    ("bad ifname", {"ifname": "a/b"}, LOOPBACK),
    ("netns is not a netns", {"netns": "/etc"}, LOOPBACK),
    ("missing netns", {"netns": "/var/run/netns/pyt-missing-ns"}, LOOPBACK),
]


@pytest.mark.parametrize(("what", "kw", "stdin"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_errors_identical(via, agent: Agent, what: str, kw: dict[str, Any], stdin: Any) -> None:
    kw = dict(kw)
    command = kw.pop("command", "ADD")
    kw.setdefault("netns", "/proc/self/ns/net")
    kw.setdefault("container_id", "bad1")
    through, alone = (via(flag, "loopback", command, stdin, **kw) for flag in (True, False))
    assert (through.stdout, through.rc) == (alone.stdout, alone.rc)
    assert through.error  # a CNI error, no traceback
    assert agent.served() == 1


def test_bridge_error_identical(via, agent: Agent, host_ns: Netns, container_ns, tmp_path):
    c = container_ns()
    conf = bridge_conf(tmp_path, bridge="x" * 20)
    runs = [
        via(flag, "bridge", "ADD", conf, netns=c.path, container_id="c1", in_ns=host_ns)
        for flag in (True, False)
    ]
    assert (runs[0].stdout, runs[0].rc) == (runs[1].stdout, runs[1].rc)
    assert "not a valid interface name" in runs[0].error["msg"]
    assert agent.served() == 1


def test_debug_output_reaches_the_clients_stderr(via, agent: Agent) -> None:
    kw: dict[str, Any] = {
        "netns": "/proc/self/ns/net",
        "container_id": "d1",
        "env_extra": {"PYCNI_DEBUG": "1"},
    }
    through, alone = (via(flag, "loopback", "ADD", b"{oops", **kw) for flag in (True, False))
    assert (through.stdout, through.rc) == (alone.stdout, alone.rc)
    for run in (through, alone):
        assert "Traceback" in run.stderr and "DecodingFailure" in run.stderr, run


# -- fallback and faults -------------------------------------------------------------------


def test_no_agent_runs_standalone(run_plugin, tmp_path: Path, container_ns) -> None:
    c = container_ns()
    env = {"PYCNI_AGENT_SOCKET": str(tmp_path / "nobody" / "agent.sock")}
    res = run_plugin("loopback", "ADD", LOOPBACK, netns=c.path, container_id="x", env_extra=env)
    assert res.rc == 0 and res.json["ips"], res


def test_stale_socket_falls_back_then_a_new_agent_takes_over(
    run_plugin, tmp_path: Path, container_ns
) -> None:
    path = tmp_path / "agent" / "agent.sock"
    path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: connect() is refused
    c = container_ns()
    env = {"PYCNI_AGENT_SOCKET": str(path)}
    res = run_plugin("loopback", "ADD", LOOPBACK, netns=c.path, container_id="x", env_extra=env)
    assert res.rc == 0, res
    agent = Agent(path, tmp_path / "agent.log").start()
    try:
        res = run_plugin("loopback", "DEL", LOOPBACK, netns=c.path, container_id="x", env_extra=env)
        assert res.rc == 0, res
        assert agent.served() == 1
    finally:
        agent.stop()
    assert not path.exists()  # a stopped agent removes its socket


def test_second_agent_on_the_same_socket_is_refused(agent: Agent, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pycni.runtime.cli", "agent", "--socket", str(agent.socket)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "another agent is listening" in proc.stderr
    assert agent.proc is not None and agent.proc.poll() is None
    assert agent.socket.exists()


def _hold_ipam_lock(tmp: Path, network: str) -> int:
    d = tmp / "ipam" / network
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "lock", os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _start_add(via_env: dict[str, str], plugin_dir: Path, state_dir: Path, conf, c: Netns, host):
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": c.path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(plugin_dir),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYCNI_STATE_DIR": str(state_dir),
        "PYCNI_IPAM_LOCK_TIMEOUT": "60",
        **via_env,
    }
    return subprocess.Popen(
        ["ip", "netns", "exec", host.name, str(plugin_dir / "bridge")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd="/",
    )


def _finish(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()  # small: no pipe can fill up
    proc.wait(60)
    return out, err


def _worker_in(agent: Agent, ns: Netns) -> int:
    """The agent's worker that has joined `ns` (the one serving a client there)."""
    want = os.stat(ns.path).st_ino
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid in agent.children():
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino == want:
                    return pid
            except OSError:
                continue
        time.sleep(0.02)
    raise AssertionError(f"no worker joined {ns.name}: {agent.log()}")


def test_agent_killed_mid_call_loses_nothing(
    agent: Agent, plugin_dir: Path, state_dir: Path, host_ns: Netns, container_ns, tmp_path
) -> None:
    """SIGKILL the agent while its worker runs an ADD: the worker finishes and answers;
    the socket stops answering, so the next call runs standalone."""
    c = container_ns()
    conf = bridge_conf(tmp_path)
    lock = _hold_ipam_lock(tmp_path, conf["name"])
    env = {"PYCNI_AGENT_SOCKET": str(agent.socket)}
    proc = _start_add(env, plugin_dir, state_dir, conf, c, host_ns)
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(conf).encode())
        proc.stdin.close()
        worker = _worker_in(agent, host_ns)
        os.kill(agent.pid, signal.SIGKILL)
        agent.proc.wait()  # type: ignore[union-attr]
    finally:
        os.close(lock)
    out, err = _finish(proc)
    assert proc.returncode == 0, (out, err)
    assert json.loads(out)["ips"][0]["address"] == "10.67.0.2/24"
    assert v4(c) == ["10.67.0.2/24"]
    assert worker > 0
    # Idle workers died with the agent: the socket is stale now and calls run on their own.
    deadline = time.monotonic() + 10
    while True:
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(agent.socket))
        except ConnectionRefusedError:
            break
        finally:
            probe.close()
        assert time.monotonic() < deadline, "idle workers outlived the agent"
        time.sleep(0.05)
    conf["prevResult"] = json.loads(out)
    res = subprocess.run(
        ["ip", "netns", "exec", host_ns.name, str(plugin_dir / "bridge")],
        input=json.dumps(conf).encode(),
        capture_output=True,
        env={
            "CNI_COMMAND": "DEL",
            "CNI_CONTAINERID": "c1",
            "CNI_NETNS": c.path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(plugin_dir),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYCNI_STATE_DIR": str(state_dir),
            **env,
        },
        timeout=60,
    )
    assert res.returncode == 0, res
    assert c.link("eth0") is None


def test_worker_killed_mid_call_is_error_11_and_a_retry_succeeds(
    via, agent: Agent, plugin_dir: Path, state_dir: Path, host_ns: Netns, container_ns, tmp_path
) -> None:
    c = container_ns()
    conf = bridge_conf(tmp_path)
    lock = _hold_ipam_lock(tmp_path, conf["name"])
    proc = _start_add(
        {"PYCNI_AGENT_SOCKET": str(agent.socket)}, plugin_dir, state_dir, conf, c, host_ns
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(conf).encode())
        proc.stdin.close()
        os.kill(_worker_in(agent, host_ns), signal.SIGKILL)
        out, err = _finish(proc)
    finally:
        os.close(lock)
    assert proc.returncode == 1, (out, err)
    error = json.loads(out)
    assert error["code"] == 11 and error["cniVersion"] == "1.0.0", error
    assert b"Traceback" not in out + err
    # The runtime retries: ADD now succeeds through the same agent.
    res = via(True, "bridge", "ADD", conf, netns=c.path, container_id="c1", in_ns=host_ns)
    assert res.rc == 0, res
    assert v4(c) == ["10.67.0.2/24"]


def test_worker_crash_after_changes_then_del_and_add(
    via, agent: Agent, host_ns: Netns, container_ns, tmp_path
) -> None:
    """A worker that dies half-way (SIGKILL at a mutation point) leaves what DEL cleans."""
    c = container_ns()
    conf = bridge_conf(tmp_path)
    kw: dict[str, Any] = {"netns": c.path, "container_id": "c1", "in_ns": host_ns}
    res = via(True, "bridge", "ADD", conf, env_extra={"PYCNI_FAULT": "after-veth"}, **kw)
    assert res.rc == 1 and res.error["code"] == 11, res
    assert via(True, "bridge", "DEL", conf, **kw).rc == 0
    res = via(True, "bridge", "ADD", conf, **kw)
    assert res.rc == 0, res
    # host-local hands out the next address after the last one it reserved (as the
    # reference does), even though DEL released 10.67.0.2.
    assert v4(c) == [res.json["ips"][0]["address"]]
    assert len([n for n in host_ns.ip_json("link", "show") if n["ifname"].startswith("veth")]) == 1
    assert agent.served() == 2  # the DEL and the second ADD; the killed worker never logged


def test_stopped_agent_times_out_into_standalone_and_never_runs_it_twice(
    via, agent: Agent, host_ns: Netns, container_ns, tmp_path
) -> None:
    """A frozen agent accepts connections (the kernel does) but never says "R": the
    client gives up, runs the ADD itself, and the agent, thawed, must not run it again."""
    c = container_ns()
    conf = bridge_conf(tmp_path)
    frozen = [agent.pid, *agent.children()]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        kw: dict[str, Any] = {"netns": c.path, "container_id": "c1", "in_ns": host_ns}
        started = time.monotonic()
        res = via(True, "bridge", "ADD", conf, env_extra={"PYCNI_AGENT_TIMEOUT": "0.5"}, **kw)
        assert res.rc == 0, res
        assert time.monotonic() - started >= 0.5
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    time.sleep(1.0)  # let the thawed worker see that the client has gone
    assert agent.served() == 0
    assert v4(c) == ["10.67.0.2/24"]
    leases = sorted(p.name for p in (tmp_path / "ipam" / "anet").iterdir())
    assert "10.67.0.3" not in leases and "10.67.0.2" in leases
    # And the agent still serves.
    conf["prevResult"] = res.json
    assert via(True, "bridge", "CHECK", conf, **kw).rc == 0
    assert agent.served() == 1


# -- who may talk to it, and what it accepts -----------------------------------------------


def _as_nobody(fn: Callable[[], object]) -> Any:
    """Run fn in a forked child as uid/gid 65534; returns what it returned (or raised)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                result: Any = ("ok", fn())
            except Exception as exc:
                result = ("raised", f"{type(exc).__name__}: {exc}")
            os.write(w, json.dumps(result, default=repr).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _raw_forward(path: Path, env: dict[str, str], stdin: bytes) -> Any:
    os.environ.clear()
    os.environ.update(env)
    os.environ[wire.SOCKET_ENV] = str(path)
    answer = wire.forward("pycni.plugins.loopback", _version(), stdin)
    return None if answer is None else [answer[0].decode(), answer[1]]


def _version() -> str:
    import pycni

    return pycni.__version__


@pytest.fixture
def public_agent(tmp_path: Path) -> Iterator[Agent]:
    """An agent whose socket directory sits in a directory everyone may traverse
    (tmp_path itself is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="pytagent-"))
    os.chmod(base, 0o755)
    a = Agent(base / "agent" / "agent.sock", tmp_path / "agent.log")
    a.start()
    yield a
    a.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_non_root_client_is_refused(public_agent: Agent, container_ns) -> None:
    agent = public_agent
    c = container_ns()
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "x",
        "CNI_NETNS": c.path,
        "CNI_IFNAME": "lo",
        "CNI_PATH": "/nonexistent",
    }
    stdin = json.dumps(LOOPBACK).encode()
    saved = dict(os.environ)
    try:
        # As installed (directory 0700, socket 0600) nobody else can even connect, so
        # the client runs the verb itself (and fails there for lack of privileges).
        kind, value = _as_nobody(lambda: _raw_forward(agent.socket, env, stdin))
        assert (kind, value) == ("ok", None)
        # With the file modes opened up by mistake, SO_PEERCRED still refuses.
        os.chmod(agent.socket.parent, 0o755)
        os.chmod(agent.socket, 0o666)
        kind, value = _as_nobody(lambda: _raw_forward(agent.socket, env, stdin))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        os.chmod(agent.socket.parent, 0o700)
        os.chmod(agent.socket, 0o600)
    assert kind == "ok", value
    out, rc = value
    error = json.loads(out)
    assert rc == 1 and error["code"] == 4 and "uid 65534" in error["msg"], error
    assert error["cniVersion"] == "1.1.0"
    assert "refused pid" in agent.log()
    assert agent.served() == 0
    # And root is still served.
    os.environ[wire.SOCKET_ENV] = str(agent.socket)
    try:
        out, rc = _raw_forward(agent.socket, env, stdin)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert rc == 0 and json.loads(out)["ips"], out
    assert agent.served() == 1


def _raw(path: Path, payload: bytes, fds: list[int] | None = None) -> bytes:
    """Send raw bytes, half-close, return everything the agent says."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(str(path))
        if fds:
            s.sendmsg(
                [payload],
                [
                    (
                        socket.SOL_SOCKET,
                        socket.SCM_RIGHTS,
                        bytes(memoryview(b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))),
                    )
                ],
            )
        else:
            s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
    finally:
        s.close()


def _answer(data: bytes) -> tuple[dict[str, Any], int]:
    assert data[:1] == wire.ANSWER, data
    code = int.from_bytes(data[1:5], "big", signed=True)
    size = int.from_bytes(data[5:9], "big")
    assert len(data) == 9 + size
    return json.loads(data[9:]), code


def _request(**kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "module": "pycni.plugins.loopback",
        "version": _version(),
        "umask": 0o022,
        "env": b"CNI_COMMAND=VERSION",
        "stdin": b"",
    }
    fields.update(kw)
    return wire.encode_request(
        fields["module"], fields["version"], fields["umask"], fields["env"], fields["stdin"]
    )


def _header(umask: int, *lengths: int) -> bytes:
    return wire.MAGIC + b"".join(n.to_bytes(4, "big") for n in (umask, *lengths))


MALFORMED = [
    ("garbage", b"hello, agent\n", "bad magic"),
    ("empty", b"", "truncated request header"),
    ("short header", wire.MAGIC + b"\0\0", "truncated request header"),
    ("huge stdin", _header(0, 0, 0, 0, 2**31), "stdin is 2147483648 bytes"),
    ("huge env", _header(0, 0, 0, 2**30, 0), "environment is 1073741824 bytes"),
    ("huge module", _header(0, 0, 10**6, 0, 0), "module is 1000000 bytes"),
    ("truncated body", _request(stdin=b"x" * 100)[:-10], "truncated request"),
    ("extra bytes", _request() + b"tail", "extra data"),
    ("env without =", _request(env=b"CNI_COMMAND"), "KEY="),
    ("env with empty key", _request(env=b"=x"), "KEY="),
    ("bad umask", _header(0o7777, 0, 0, 0, 0), "umask"),
]


@pytest.mark.parametrize(("what", "payload", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_an_error_and_the_agent_keeps_serving(
    agent: Agent, container_ns, what: str, payload: bytes, message: str
) -> None:
    error, code = _answer(_raw(agent.socket, payload))
    assert code == 1 and error["code"] == 6, error
    assert message in error["details"], error
    assert agent.proc is not None and agent.proc.poll() is None
    c = container_ns()
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "x",
        "CNI_NETNS": c.path,
        "CNI_IFNAME": "lo",
        "CNI_PATH": "/nonexistent",
    }
    saved = dict(os.environ)
    try:
        out, rc = _raw_forward(agent.socket, env, json.dumps(LOOPBACK).encode())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert rc == 0 and json.loads(out)["ips"], out
    assert agent.served() == 1


@pytest.mark.parametrize(
    "request_bytes",
    [
        _request(version="0.0.0-other"),
        _request(module="pycni.runtime.cli"),
        _request(module="os"),
        _request(env=b"PATH=/bin"),
    ],
    ids=["other pycni version", "not a plugin", "arbitrary module", "no CNI_COMMAND"],
)
def test_requests_the_agent_will_not_run_fall_back(agent: Agent, request_bytes: bytes) -> None:
    assert _raw(agent.socket, request_bytes) == wire.FALLBACK
    assert agent.served() == 0


def test_fds_with_a_request_and_non_ascii_module(agent: Agent) -> None:
    # File descriptors sent with a request (none belong there) are closed and ignored.
    r, w = os.pipe()
    try:
        error, code = _answer(_raw(agent.socket, _request(module="pycni.\xe9"), [w, w]))
        assert code == 1
    finally:
        os.close(r)
        os.close(w)
    assert error["code"] == 6 and "ASCII" in error["details"]


def test_sigterm_stops_accepting_and_removes_the_socket(agent: Agent, run_plugin, container_ns):
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGTERM)
    agent.proc.wait(10)
    assert not agent.socket.exists()
    deadline = time.monotonic() + 10
    while agent.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.children() == []
    c = container_ns()
    env = {"PYCNI_AGENT_SOCKET": str(agent.socket)}
    res = run_plugin("loopback", "ADD", LOOPBACK, netns=c.path, container_id="x", env_extra=env)
    assert res.rc == 0, res
    assert "stopped" in agent.log()


def test_detached_agent_answers_and_stops(tmp_path: Path, run_plugin, container_ns) -> None:
    path = tmp_path / "d" / "agent.sock"
    out = sh(
        sys.executable,
        "-m",
        "pycni.runtime.cli",
        "agent",
        "--socket",
        str(path),
        "--log-file",
        str(tmp_path / "d.log"),
    )
    pid = int(re.search(r"pid (\d+)", out).group(1))  # type: ignore[union-attr]
    try:
        c = container_ns()
        env = {"PYCNI_AGENT_SOCKET": str(path)}
        res = run_plugin("loopback", "ADD", LOOPBACK, netns=c.path, container_id="x", env_extra=env)
        assert res.rc == 0, res
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not path.exists()
    assert "listening on" in (tmp_path / "d.log").read_text()


# -- the compiled client, on-demand starts, and whom a client trusts ------------------------


def _autostarted_agents(under: Path) -> list[int]:
    """PIDs of agents started on demand (agent.autostart) on a socket under `under`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if any(b"import autostart" in a for a in argv) and any(
            a.startswith(str(under).encode()) for a in argv
        ):
            found.append(int(entry))
    # Its forked workers share the command line: count the agents, not their workers.
    return [pid for pid in found if _ppid(pid) not in found]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def _stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.path.exists(f"/proc/{pid}"):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module", autouse=True)
def no_agent_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    base = tmp_path_factory.getbasetemp()
    left = _autostarted_agents(base)
    for pid in left:
        _stop_pid(pid)
    assert not left, f"agents started on demand were left running: {left}"


def _wait_for(cond: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _forwarded(path: Path, env: dict[str, str], stdin: bytes) -> Any:
    """wire.forward from this process with `env` as its environment."""
    return _forwarded_as(path, env, stdin, _version())


def _lo_env(c: Netns, **extra: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "x",
        "CNI_NETNS": c.path,
        "CNI_IFNAME": "lo",
        "CNI_PATH": "/nonexistent",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        **extra,
    }


def test_native_client_hands_over_before_any_python(
    agent: Agent, tmp_path: Path, container_ns
) -> None:
    """The compiled client answers VERSION itself and hands a verb to the agent without
    ever starting Python: with its fallback interpreter made unusable, both still work;
    without an agent it prints a CNI error (never silence)."""
    directory = tmp_path / "bin"
    sh(sys.executable, "-m", "pycni.runtime.cli", "plugins", "install", "--dir", str(directory))
    data = (directory / "loopback").read_bytes()
    assert data.startswith(b"\x7fELF"), "no C compiler: scripts/setup.sh installs gcc"
    python = re.search(rb"\npython=([^\n]+)\n", data)
    assert python is not None
    broken = b"/" + b"x" * (len(python.group(1)) - 1)  # same length: the trailer keeps its size
    (directory / "loopback").write_bytes(
        data.replace(b"python=" + python.group(1), b"python=" + broken)
    )
    c = container_ns()
    stdin = json.dumps(LOOPBACK).encode()
    run = lambda **e: subprocess.run(  # noqa: E731
        [str(directory / "loopback")], input=stdin, env=_lo_env(c, **e), capture_output=True
    )
    version = run(CNI_COMMAND="VERSION")
    assert version.returncode == 0 and json.loads(version.stdout)["cniVersion"] == "1.1.0"
    res = run(PYCNI_AGENT_SOCKET=str(agent.socket))
    assert res.returncode == 0 and json.loads(res.stdout)["ips"], res
    assert agent.served() == 1
    res = run(PYCNI_AGENT_SOCKET=str(tmp_path / "none" / "agent.sock"))
    assert res.returncode == 1 and "code" in json.loads(res.stdout), res


def test_on_demand_start_one_agent_for_concurrent_first_calls(
    plugin_dir: Path, state_dir: Path, tmp_path: Path, container_ns
) -> None:
    """No agent: concurrent first calls each run in-process (nobody waits) and together
    start exactly one agent, which then serves the calls that follow."""
    path = tmp_path / "od" / "agent.sock"  # the directory does not exist yet either
    stdin = json.dumps(LOOPBACK).encode()
    cs = [container_ns() for _ in range(4)]
    extra = {
        "PYCNI_AGENT_AUTOSTART": "1",
        "PYCNI_AGENT_SOCKET": str(path),
        "PYCNI_AGENT_IDLE": "120",
        "PYCNI_STATE_DIR": str(state_dir),
    }
    try:
        procs = [
            subprocess.Popen(
                [str(plugin_dir / "loopback")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_lo_env(c, **extra),
            )
            for c in cs
        ]
        for p in procs:
            out, err = p.communicate(stdin, timeout=60)
            assert p.returncode == 0 and json.loads(out)["ips"], (out, err)
        _wait_for(path.exists, "the agent's socket")
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        time.sleep(0.5)  # a second agent, had one been started, would be up by now
        agents = _autostarted_agents(tmp_path)
        assert len(agents) == 1, agents
        log = Path(str(path) + ".log").read_text()
        assert log.count("listening on") == 1, log
        answer = _forwarded(path, _lo_env(cs[0]), stdin)
        assert answer is not None and answer[1] == 0 and json.loads(answer[0])["ips"], answer
    finally:
        for pid in _autostarted_agents(tmp_path):
            _stop_pid(pid)
    assert not path.exists()


def test_on_demand_agent_exits_when_idle(tmp_path: Path) -> None:
    path = tmp_path / "idle" / "agent.sock"
    saved = dict(os.environ)
    os.environ.update(PYCNI_AGENT_AUTOSTART="1", PYCNI_AGENT_IDLE="1")
    try:
        wire.start_agent(str(path))
        wire.start_agent(str(path))  # the lock is held: no second agent
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        _wait_for(path.exists, "the agent's socket")
        assert len(_autostarted_agents(tmp_path)) == 1
        _wait_for(lambda: not _autostarted_agents(tmp_path), "the idle agent to exit")
        assert not path.exists()
        assert "no call for 1 s" in Path(str(path) + ".log").read_text()
        fd = os.open(str(path) + ".lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the agent
        finally:
            os.close(fd)
    finally:
        for pid in _autostarted_agents(tmp_path):
            _stop_pid(pid)


@pytest.mark.parametrize(
    "how", ["world-writable dir", "socket of another user", "dir of another user"]
)
def test_untrusted_socket_is_never_used(
    how: str, plugin_dir: Path, state_dir: Path, tmp_path: Path, container_ns
) -> None:
    """A socket that another user could have put there gets nothing (no environment,
    no config, no stderr) and its answer is never printed: the verb runs in-process,
    and no agent is started on demand there either (issue 14 item 6)."""
    d = tmp_path / "untrusted"
    d.mkdir()
    path = d / "agent.sock"
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fake.bind(str(path))
    fake.listen(8)
    fake.setblocking(False)
    if how == "world-writable dir":
        os.chmod(d, 0o1777)
    elif how == "socket of another user":
        os.chmod(d, 0o700)
        os.chown(path, 65534, 65534)
    else:
        os.chmod(d, 0o700)
        os.chown(d, 65534, 65534)
    c = container_ns()
    try:
        for autostart in ("0", "1"):
            env = _lo_env(
                c,
                PYCNI_AGENT_SOCKET=str(path),
                PYCNI_AGENT_AUTOSTART=autostart,
                PYCNI_STATE_DIR=str(state_dir),
            )
            res = subprocess.run(
                [str(plugin_dir / "loopback")],
                input=json.dumps(LOOPBACK).encode(),
                env=env,
                capture_output=True,
                timeout=60,
            )
            assert res.returncode == 0 and json.loads(res.stdout)["ips"], res
            with pytest.raises(BlockingIOError):
                fake.accept()  # nobody connected
        fake.close()
        if how == "socket of another user":
            return  # the directory itself is trusted: an agent may start there
        os.unlink(path)  # absent now, in the same untrusted directory: still no agent
        res = subprocess.run(
            [str(plugin_dir / "loopback")],
            input=json.dumps(LOOPBACK).encode(),
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert res.returncode == 0, res
        time.sleep(0.5)
        assert not _autostarted_agents(tmp_path)
        assert not (d / "agent.sock.lock").exists() and not path.exists()
    finally:
        fake.close()
        for pid in _autostarted_agents(tmp_path):
            _stop_pid(pid)


def test_agent_refuses_a_world_writable_directory(tmp_path: Path) -> None:
    d = tmp_path / "ww"
    d.mkdir()
    os.chmod(d, 0o777)
    proc = subprocess.run(
        [sys.executable, "-m", "pycni.runtime.cli", "agent", "--socket", str(d / "a.sock")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode != 0 and "not writable by group or others" in proc.stderr, proc
    assert not (d / "a.sock").exists()


def test_on_demand_agent_overtaken_by_an_upgrade_stops(tmp_path: Path) -> None:
    """A plugin of another pycni version gets "F" (it runs its own code); an agent
    started on demand whose package changed on disk also stops, so that the next call
    starts one of the new version. Without the change on disk it keeps serving."""
    import pycni

    path = tmp_path / "up" / "agent.sock"
    saved = dict(os.environ)
    os.environ.update(PYCNI_AGENT_AUTOSTART="1", PYCNI_AGENT_IDLE="60")
    try:
        wire.start_agent(str(path))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    init = Path(pycni.__file__ or "")
    st = init.stat()
    try:
        _wait_for(path.exists, "the agent's socket")
        (agent_pid,) = _autostarted_agents(tmp_path)
        env = {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}
        assert _forwarded_as(path, env, b"", "99.0.0") is None
        time.sleep(0.5)
        assert _autostarted_agents(tmp_path) == [agent_pid]  # same package: still there
        os.utime(init, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert _forwarded_as(path, env, b"", "99.0.0") is None
        _wait_for(lambda: not _autostarted_agents(tmp_path), "the overtaken agent to stop")
        assert not path.exists()
        assert "installed over" in Path(str(path) + ".log").read_text()
    finally:
        os.utime(init, ns=(st.st_atime_ns, st.st_mtime_ns))
        for pid in _autostarted_agents(tmp_path):
            _stop_pid(pid)


def _forwarded_as(path: Path, env: dict[str, str], stdin: bytes, version: str) -> Any:
    """wire.forward of a plugin of pycni `version`, with `env` as its environment."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        os.environ[wire.SOCKET_ENV] = str(path)
        return wire.forward("pycni.plugins.loopback", version, stdin)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_idle_connections_do_not_stall_plugin_calls(
    run_plugin, tmp_path: Path, container_ns
) -> None:
    """As many connections that send nothing (or a byte now and then) as the agent has
    workers: a worker waits at most 2 s for a request, so a plugin call is served (or
    falls back) in about that, not after the client's 10 s fallback timeout."""
    import socket as socketmod

    a = Agent(tmp_path / "stall" / "agent.sock", tmp_path / "stall.log").start("--max-workers", "2")
    held = []
    try:
        for n in range(4):
            s = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
            s.connect(str(a.socket))
            if n % 2:
                s.sendall(b"P")  # the start of a request, never finished
            held.append(s)
        time.sleep(0.2)
        c = container_ns()
        started = time.monotonic()
        res = run_plugin(
            "loopback", "ADD", LOOPBACK, netns=c.path, container_id="stall",
            env_extra={"PYCNI_AGENT_SOCKET": str(a.socket)},
        )  # fmt: skip
        took = time.monotonic() - started
        assert res.rc == 0, res.stdout + res.stderr
        assert took < 5.0, f"the call waited {took:.1f} s behind idle connections"
        assert "no complete request within 2 s" in a.log()
    finally:
        for s in held:
            s.close()
        a.stop()
