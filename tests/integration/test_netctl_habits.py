"""The Docker habits people type, as a user hits them: real workloads printing what
they got (environment, user, directory, terminal), real ptys, real sockets."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_netctl_run import PY, Netctl, netctl  # noqa: F401 (fixture)

pytestmark = pytest.mark.root


def test_ipv6_loopback_publish_is_refused_with_the_reason(netctl: Netctl) -> None:  # noqa: F811
    for spec in ("[::1]:18622:80", "::1:18622:80", "[0:0:0:0:0:0:0:1]:18622:80/udp"):
        proc = netctl("run", "--rm", "-p", spec, "--", "true", check=False)
        assert proc.returncode == 125, proc.stderr
        assert "IPv6 has no route_localnet" in proc.stderr and "127.0.0.1" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert netctl.netns_files() == [] and netctl.veths() == [] and netctl.leases() == []
    assert netctl("ps", "-a", "-q").stdout == ""
    # IPv4 loopback still works as before
    assert netctl("run", "--rm", "-p", "127.0.0.1:18622:80", "--", "true").returncode == 0


SHOW = (
    "import os, sys; "
    "print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), 'uid': os.getuid(), "
    "'gid': os.getgid(), 'groups': sorted(os.getgroups()), "
    "'caps': [l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')], "
    "'stdin_tty': os.isatty(0), 'stdout_tty': os.isatty(1), "
    "'stdin': os.readlink('/proc/self/fd/0')}))"
)


def shown(out: str) -> dict:
    line = next(x for x in out.splitlines() if x.startswith("{"))
    return json.loads(line)


SYSTEM_PY = "/usr/bin/python3"  # any user can run it (the venv's may sit in a private dir)


def show_cmd() -> list[str]:
    return [SYSTEM_PY, "-c", "import json; " + SHOW]


def test_env_env_file_workdir_as_docker_builds_them(netctl: Netctl, tmp_path: Path) -> None:  # noqa: F811
    envfile = tmp_path / "vars.env"
    envfile.write_text('# a comment\n\nFROMFILE=a b "c"\nOVER=file\nPASSED\nUNSET_ONE\n')
    netctl.env["PASSED"] = "from-caller"
    netctl.env["SECRET_OF_CALLER"] = "x"
    workdir = tmp_path / "wd"
    workdir.mkdir()
    out = netctl(
        "run", "--rm", "--network", "none", "-h", "box", "--env-file", str(envfile),
        "-e", "OVER=flag", "--env", "A=1", "-e", "PASSED", "-e", "NOPE_UNSET",
        "-w", str(workdir), "--", *show_cmd(),
    ).stdout  # fmt: skip
    got = shown(out)
    env = got["env"]
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["HOSTNAME"] == "box" and env["HOME"] == "/root"
    assert env["FROMFILE"] == 'a b "c"' and env["OVER"] == "flag" and env["A"] == "1"
    assert env["PASSED"] == "from-caller"
    assert "NOPE_UNSET" not in env and "UNSET_ONE" not in env and "SECRET_OF_CALLER" not in env
    assert "TERM" not in env
    assert got["cwd"] == str(workdir)
    assert got["stdin"] == "/dev/null"  # no -i: stdin is /dev/null, as Docker's
    # PATH given by the user wins, and is where the command is looked up
    out = netctl(
        "run", "--rm", "--network", "none", "-e", "PATH=/nowhere", "--", "true", check=False
    )
    assert out.returncode == 127 and "executable file not found in $PATH" in out.stderr
    # a workdir that is not there: Docker's 127, nothing left behind
    proc = netctl("run", "--rm", "-w", "/no/such/dir", "--", "true", check=False)
    assert proc.returncode == 127 and "/no/such/dir" in proc.stderr
    assert netctl.netns_files() == [] and netctl.veths() == []
    bad = tmp_path / "bad.env"
    bad.write_text("MY VAR=1\n")
    proc = netctl("run", "--rm", "--env-file", str(bad), "--", "true", check=False)
    assert proc.returncode == 125 and "variable 'MY VAR' contains whitespaces" in proc.stderr
    proc = netctl("run", "--rm", "--env-file", str(tmp_path / "missing"), "--", "true", check=False)
    assert proc.returncode == 125 and "no such file or directory" in proc.stderr


def test_user_switches_uid_gid_groups_and_keeps_caps_dropped(netctl: Netctl) -> None:  # noqa: F811
    got = shown(
        netctl("run", "--rm", "--network", "none", "-u", "65534:65534", "--", *show_cmd()).stdout
    )
    assert (got["uid"], got["gid"], got["groups"]) == (65534, 65534, [65534])
    caps = dict(zip(["inh", "prm", "eff", "bnd", "amb"], got["caps"], strict=False))
    assert int(caps["eff"], 16) == 0 and int(caps["prm"], 16) == 0  # setuid cleared them
    assert int(caps["bnd"], 16) & (1 << 12) == 0  # NET_ADMIN never in the bounding set
    got = shown(
        netctl("run", "--rm", "--network", "none", "-u", "nobody", "--", *show_cmd()).stdout
    )
    import pwd

    nobody = pwd.getpwnam("nobody")
    assert got["uid"] == nobody.pw_uid and got["gid"] == nobody.pw_gid
    assert got["env"]["HOME"] == nobody.pw_dir
    # a uid with no passwd entry: gid 0, HOME /
    got = shown(netctl("run", "--rm", "--network", "none", "-u", "4242", "--", *show_cmd()).stdout)
    assert (got["uid"], got["gid"], got["env"]["HOME"]) == (4242, 0, "/")
    # root with a dropped SETUID can still switch (runc's order) and has no caps after
    got = shown(
        netctl("run", "--rm", "--network", "none", "--cap-drop", "SETUID", "--cap-drop", "SETGID",
               "-u", "1000:1000", "--", *show_cmd()).stdout
    )  # fmt: skip
    assert got["uid"] == 1000 and got["gid"] == 1000
    proc = netctl("run", "--rm", "-u", "no_such_user_x", "--", "true", check=False)
    assert proc.returncode == 125
    assert "unable to find user no_such_user_x: no matching entries in passwd file" in proc.stderr
    assert netctl.netns_files() == []


def test_exec_env_user_workdir(netctl: Netctl, tmp_path: Path) -> None:  # noqa: F811
    netctl("run", "-d", "--name", "ex", "--network", "none", "-e", "FROM_RUN=1", "-u", "4242",
           "--", "sleep", "60")  # fmt: skip
    got = shown(netctl("exec", "ex", *show_cmd()).stdout)
    assert got["uid"] == 4242 and got["env"]["FROM_RUN"] == "1" and got["cwd"] == "/"
    got = shown(
        netctl("exec", "-e", "FROM_RUN=2", "-e", "B=3", "-u", "0", "-w", str(tmp_path), "ex",
               *show_cmd()).stdout
    )  # fmt: skip
    assert got["uid"] == 0 and got["env"]["FROM_RUN"] == "2" and got["env"]["B"] == "3"
    assert got["cwd"] == str(tmp_path) and got["stdin"] == "/dev/null"
    # -i keeps stdin attached
    out = netctl("exec", "-i", "ex", "cat", input="hello through stdin\n").stdout
    assert out == "hello through stdin\n"
    netctl("rm", "-f", "ex")


def test_interactive_run_reads_stdin(netctl: Netctl) -> None:  # noqa: F811
    out = netctl("run", "--rm", "-i", "--network", "none", "--", "cat", input="piped in\n").stdout
    assert out == "piped in\n"
    out = netctl("run", "--rm", "--network", "none", "--", "cat", input="not seen\n").stdout
    assert out == ""
    # -it without a terminal: Docker's refusal
    proc = netctl("run", "--rm", "-it", "--", "true", check=False, input="")
    assert proc.returncode == 125 and "the input device is not a TTY" in proc.stderr


def _in_pty(
    nc: Netctl, args: list[str], typed: bytes = b"", timeout: float = 30
) -> tuple[int, bytes]:
    """netctl with a pseudo-terminal as its stdin/stdout, as a user at a terminal."""
    cmd = ["nsenter", f"--net={nc.node.path}", PY, "-m", "pycni.runtime.cli", *args]
    pid, fd = pty.fork()
    if pid == 0:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
        os.execvpe(cmd[0], cmd, nc.env)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if typed and b"ready" in out:  # the workload waits for input now
                for byte in typed:
                    os.write(fd, bytes([byte]))
                    time.sleep(0.05)
                typed = b""
    _pid, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def test_tty_gives_the_workload_a_terminal_and_not_without(netctl: Netctl) -> None:  # noqa: F811
    probe = (
        "import os, sys, fcntl, termios, struct; "
        "r, c = struct.unpack('HHHH', fcntl.ioctl(1, termios.TIOCGWINSZ, bytes(8)))[:2]; "
        "print('TTY', os.isatty(0), os.isatty(1), os.environ.get('TERM'), r, c, "
        "os.ttyname(1) != os.ttyname(0) if False else '', flush=True)"
    )
    code, out = _in_pty(netctl, ["run", "--rm", "-it", "--network", "none", "--", PY, "-c", probe])
    assert code == 0, out
    assert b"TTY True True xterm 33 111" in out, out
    code, out = _in_pty(
        netctl, ["run", "--rm", "--network", "none", "--", PY, "-c",
                 "import os; print('TTY', os.isatty(0), os.isatty(1), os.environ.get('TERM'))"]
    )  # fmt: skip
    # no -t: no terminal at all, as Docker's: stdin /dev/null, output through netctl
    assert code == 0 and b"TTY False False None" in out, out
    # typed input reaches the workload through its pty; Ctrl-C there interrupts it (exit 130)
    code, out = _in_pty(
        netctl, ["run", "--rm", "-it", "--network", "none", "--", "sh", "-c",
                 "echo ready; read line; echo got:$line; sleep 30"], typed=b"hello\r\x03"
    )  # fmt: skip
    assert b"got:hello" in out, out
    assert code == 130, (code, out)


def test_exec_tty(netctl: Netctl) -> None:  # noqa: F811
    netctl("run", "-d", "--name", "et", "--network", "none", "--", "sleep", "60")
    code, out = _in_pty(
        netctl, ["exec", "-it", "et", PY, "-c",
                 "import os; print('TTY', os.isatty(0), os.isatty(1), os.environ.get('TERM'))"]
    )  # fmt: skip
    assert code == 0 and b"TTY True True xterm" in out, out
    code, out = _in_pty(netctl, ["exec", "et", PY, "-c", "import os; print('TTY', os.isatty(0))"])
    assert code == 0 and b"TTY False" in out, out
    netctl("rm", "-f", "et")


def test_filters_and_go_template_formats(netctl: Netctl) -> None:  # noqa: F811
    netctl("network", "create", "--subnet", "10.77.0.0/24", "back")
    netctl("run", "-d", "--name", "web1", "-p", "18631:80", "--", "sleep", "60")
    netctl("run", "-d", "--name", "web2", "--network", "back", "--", "sleep", "60")
    netctl("run", "--name", "done1", "--network", "none", "--", "sh", "-c", "exit 3", check=False)
    ip = netctl("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web1").stdout
    assert ip.startswith("172.17.") and ip.endswith("\n")
    doc = json.loads(netctl("inspect", "web2").stdout)[0]
    assert (
        ip.strip()
        == json.loads(netctl("inspect", "web1").stdout)[0]["NetworkSettings"]["Networks"]["bridge"][
            "IPAddress"
        ]
    )
    assert netctl(
        "inspect", "--format",
        '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.IPAddress}}{{end}}', "web2",
    ).stdout == f"back {doc['NetworkSettings']['Networks']['back']['IPAddress']}\n"  # fmt: skip
    ports = json.loads(netctl("inspect", "-f", "{{json .NetworkSettings.Ports}}", "web1").stdout)
    assert ports["80/tcp"][0]["HostPort"] == "18631"
    assert netctl("ps", "--format", "{{.Names}}").stdout.split() == ["web2", "web1"]
    out = netctl("ps", "--filter", "name=web1", "--format", "{{.Names}} {{.Ports}}").stdout
    assert out.startswith("web1 ") and "0.0.0.0:18631->80/tcp" in out and out.count("\n") == 1
    assert netctl("ps", "--filter", "network=back", "-q").stdout.split() == [
        json.loads(netctl("inspect", "web2").stdout)[0]["Id"][:12]
    ]
    # same key ORed, different keys ANDed; status= shows exited ones without -a
    names = lambda *f: netctl("ps", *f, "--format", "{{.Names}}").stdout.split()  # noqa: E731
    assert sorted(names("-f", "name=web1", "-f", "name=web2")) == ["web1", "web2"]
    assert names("-f", "name=web", "-f", "network=back") == ["web2"]
    assert names("--filter", "status=exited") == ["done1"]
    assert names("--filter", "exited=3") == ["done1"]
    table = netctl(
        "ps", "-a", "--format", "table {{.ID}}\t{{.Names}}\t{{.Status}}"
    ).stdout.splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "NAMES", "STATUS"] and len(table) == 4
    assert table[0].index("NAMES") == table[1].index("done1") == table[3].index("web1")
    bad = netctl("ps", "--format", "{{.Names", check=False)
    assert bad.returncode == 125 and "template parsing error" in bad.stderr
    bad = netctl("ps", "--filter", "status=sleeping", check=False)
    assert bad.returncode == 125 and "invalid filter 'status=sleeping'" in bad.stderr
    bad = netctl("inspect", "-f", "{{.Nope}}", "web1", check=False)
    assert bad.returncode == 125 and 'map has no entry for key "Nope"' in bad.stderr
    out = netctl("network", "ls", "--format", "{{.Name}}:{{.Driver}}").stdout.split()
    assert "back:bridge" in out and "bridge:bridge" in out
    out = netctl("network", "ls", "--format", "table {{.Name}}\t{{.Internal}}").stdout.splitlines()
    assert out[0].split() == ["NAME", "INTERNAL"]
    out = netctl("network", "inspect", "--format", "{{(index .IPAM.Config 0).Subnet}}", "back")
    assert out.stdout == "10.77.0.0/24\n"
    for name in ("web1", "web2", "done1"):
        netctl("rm", "-f", name)
    netctl("network", "rm", "back")


def test_logs_follow_tail_and_foreground(netctl: Netctl) -> None:  # noqa: F811
    # a foreground container's output reaches the terminal and its log, both streams
    proc = netctl("run", "--name", "fg", "--network", "none", "--", "sh", "-c",
                  "echo out1; echo err1 >&2; echo out2")  # fmt: skip
    assert proc.stdout == "out1\nout2\n" and proc.stderr == "err1\n"
    logged = netctl("logs", "fg").stdout
    assert sorted(logged.splitlines()) == ["err1", "out1", "out2"]
    assert netctl("logs", "--tail", "1", "fg").stdout.count("\n") == 1
    assert netctl("logs", "--tail", "0", "fg").stdout == ""
    bad = netctl("logs", "--tail", "x", "fg", check=False)
    assert bad.returncode == 125 and 'invalid value for "tail": x' in bad.stderr
    # -f follows a running container until it exits
    netctl("run", "-d", "--name", "ticker", "--network", "none", "--", "sh", "-c",
           "for i in 1 2 3 4 5 6; do echo tick$i; sleep 0.3; done")  # fmt: skip
    cmd = ["nsenter", f"--net={netctl.node.path}", PY, "-m", "pycni.runtime.cli"]
    started = time.monotonic()
    follow = subprocess.run(
        [*cmd, "logs", "-f", "--tail", "1", "ticker"], env=netctl.env, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    lines = follow.stdout.split()
    assert follow.returncode == 0 and lines[-1] == "tick6", follow.stdout
    assert len(lines) >= 3 and lines == [f"tick{i}" for i in range(7 - len(lines), 7)]
    assert time.monotonic() - started > 0.6  # it waited for the rest
    netctl("rm", "fg", "ticker")


def test_publish_all_exposed_ports(netctl: Netctl) -> None:  # noqa: F811
    netctl("run", "-d", "--name", "pa", "-P", "--expose", "80", "--expose", "53/udp",
           "--expose", "8000-8001", "-p", "18641:8001", "--", PY, "-m", "http.server", "80")  # fmt: skip
    ports = json.loads(netctl("inspect", "-f", "{{json .NetworkSettings.Ports}}", "pa").stdout)
    assert set(ports) == {"80/tcp", "53/udp", "8000/tcp", "8001/tcp"}, ports
    assert ports["8001/tcp"][0]["HostPort"] == "18641"  # -p wins over -P
    host80 = int(ports["80/tcp"][0]["HostPort"])
    assert host80 >= 1024 and host80 != 18641
    # real traffic through the dynamic port, from the node
    probe = (
        "import socket, sys, time\n"
        "for _ in range(50):\n"
        "    try:\n"
        f"        s = socket.create_connection(('127.0.0.1', {host80}), 2); break\n"
        "    except OSError: time.sleep(0.1)\n"
        "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(s.recv(100).split()[1].decode())\n"
    )
    assert netctl.node.run(PY, "-c", probe).strip() == "200"
    # --expose alone publishes nothing
    netctl("run", "-d", "--name", "ex-only", "--expose", "81", "--", "sleep", "30")
    assert netctl("port", "ex-only").stdout == ""
    bad = netctl("run", "--rm", "--expose", "80:80", "--", "true", check=False)
    assert bad.returncode == 125 and "invalid port format for --expose: 80:80" in bad.stderr
    netctl("rm", "-f", "pa", "ex-only")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["pull", "nginx"], "it has no images"),
        (["images"], "it has no images"),
        (["build", "."], "it has no images"),
        (["volume", "ls"], "it has no volumes"),
        (["run", "-v", "/a:/b", "--", "true"], "no -v/--volume"),
        (["run", "--volume=/a:/b", "--", "true"], "no -v/--volume"),
        (["run", "--mount", "type=bind,src=/a,dst=/b", "--", "true"], "no --mount"),
        (["run", "--restart", "always", "--", "true"], "no --restart"),
    ],
)
def test_what_netctl_does_not_do_is_refused_with_a_sentence(
    netctl: Netctl,  # noqa: F811
    args: list[str],
    words: str,
) -> None:
    proc = netctl(*args, check=False)
    assert proc.returncode == 125, proc.stderr
    assert "netctl runs host commands in their own network namespace" in proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert netctl("ps", "-a", "-q").stdout == ""


def test_ps_into_a_closed_pipe_is_quiet(netctl: Netctl) -> None:  # noqa: F811
    for i in range(3):
        netctl("run", "-d", "--name", f"bp{i}", "--network", "none", "--", "sleep", "30")
    cmd = ["nsenter", f"--net={netctl.node.path}", PY, "-m", "pycni.runtime.cli"]
    for args in (["ps"], ["ps", "-a", "--format", "{{.Names}}"], ["network", "ls"]):
        r, w = os.pipe()
        os.close(r)  # the reader is gone before netctl writes a byte (as `| head -0`)
        proc = subprocess.run(
            [*cmd, *args], env=netctl.env, stdout=w, stderr=subprocess.PIPE, text=True, timeout=30
        )
        os.close(w)
        assert proc.returncode in (0, 141), (args, proc.returncode, proc.stderr)
        assert proc.stderr == "", proc.stderr
    # and a real shell pipeline
    shell = subprocess.run(
        ["sh", "-c", " ".join([*cmd, "ps", "-a"]) + " | head -1"], env=netctl.env,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shell.returncode == 0 and shell.stderr == ""
    assert shell.stdout.startswith("CONTAINER ID")
    for i in range(3):
        netctl("rm", "-f", f"bp{i}")
