"""Start-up discipline of the `netctl` command, as tests/unit/test_startup_budget.py is
for the plugins.

The hot commands (`--version`, `ps`, `port`, `network ls`) run in a fresh `python -IS`
exactly as the installed launcher starts them (runtime/install.py launcher_script),
in a sandbox (NETCTL_ROOT under tmp, with one container record that publishes ports,
so `ps` and `port` really format them). Two checks per command:
- no forbidden module is imported (deterministic: this is what catches regressions;
  argparse, re, typing, dataclasses, json... each cost more than `netctl ps` itself);
- the CPU time of the whole command stays under a budget (loose, for gross
  regressions): measured on the 2-core CI machine under the suite's load (median of 5
  fresh processes, CPU time minus a bare interpreter's ~8 ms) `--version` ~3.5 ms,
  `ps` ~5.5 ms, `port` ~4.5 ms, `network ls` ~20 ms; the budgets are about 3x that.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Never on the fast path of ps / port / --version.
FORBIDDEN_LIGHT = {
    "argparse",
    "re",
    "json",
    "typing",
    "dataclasses",
    "inspect",
    "enum",
    "secrets",
    "random",
    "hashlib",
    "ipaddress",
    "socket",
    "subprocess",
    "pydantic",
    "pycni.runtime.run",
    "pycni.runtime.portspec",
    "pycni.runtime.networks",
    "pycni.runtime.libcni",
}
# `network ls` reads the conflists through runtime/conflist.py (records from
# pycni.record, JSON through fastjson, IDs through the builtin _sha256, the name rules
# from pycni.names), but never loads argparse, pydantic, the plugin machinery (skel,
# invoke and its select) or any of the stdlib modules that cost more than the listing.
FORBIDDEN_NETWORK_LS = {
    "pycni.skel",
    "pycni.invoke",
    "select",
    "argparse",
    "pydantic",
    "subprocess",
    "socket",
    "pycni.runtime.run",
    "re",
    "json",
    "typing",
    "dataclasses",
    "inspect",
    "enum",
    "hashlib",
    "datetime",
    "base64",
}

CASES: dict[str, tuple[list[str], set[str], float]] = {
    "version": (["--version"], FORBIDDEN_LIGHT, 12.0),
    "ps": (["ps", "-a"], FORBIDDEN_LIGHT, 18.0),
    "port": (["port", "web"], FORBIDDEN_LIGHT, 18.0),
    "network ls": (["network", "ls"], FORBIDDEN_NETWORK_LS, 60.0),
}

RECORD = {
    "id": "f" * 64,
    "name": "web",
    "command": ["sleep", "30"],
    "created": 1.0,
    "network_mode": "bridge",
    "status": "exited",
    "exit_code": 0,
    "ports": [
        {"host_port": 8080, "container_port": 80, "protocol": "tcp", "host_ip": "0.0.0.0"},
        {"host_port": 8080, "container_port": 80, "protocol": "tcp", "host_ip": "::"},
    ],
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("netctl-startup")
    records = root / "run/netctl/containers"
    records.mkdir(parents=True)
    (records / f"{RECORD['id']}.json").write_text(json.dumps(RECORD))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NETCTL_ROOT": str(root),
        "NETCTL_DAEMON_CONFIG": str(root / "daemon.json"),
    }
    # The first `network ls` writes the default network's conflist (and reads
    # daemon.json); what is measured is every later one.
    _netctl(["network", "ls"], env)
    return env


def _code(argv: list[str]) -> str:
    """The installed launcher's own text, with this command line."""
    from pycni.runtime import install

    return f"import sys; sys.argv = ['netctl', *{argv!r}]\n" + install.launcher_script()


def _netctl(argv: list[str], env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-IS", *flags, "-c", _code(argv)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )


def _cpu_ms(cmd: list[str], env: dict[str, str]) -> float:
    samples = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    return statistics.median(samples)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_hot_path_imports_and_budget(case: str, sandbox: dict[str, str]) -> None:
    argv, forbidden, budget_ms = CASES[case]
    proc = _netctl(argv, sandbox, "-X", "importtime")
    imported = {
        m.group(1)
        for line in proc.stderr.splitlines()
        if (m := re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", line))
    }
    bad = sorted(imported & forbidden)
    assert not bad, f"netctl {' '.join(argv)} imports {bad}"
    cpu = _cpu_ms([sys.executable, "-IS", "-c", _code(argv)], sandbox) - _cpu_ms(
        [sys.executable, "-IS", "-c", "pass"], sandbox
    )
    assert cpu < budget_ms, (
        f"netctl {' '.join(argv)} takes {cpu:.1f} ms of CPU (budget {budget_ms})"
    )


def test_the_hot_commands_print_what_argparse_would(sandbox: dict[str, str]) -> None:
    """The fast path and argparse give the same output for the same command line."""
    assert "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp" in _netctl(["ps", "-a"], sandbox).stdout
    assert _netctl(["port", "web"], sandbox).stdout == (
        "80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n"
    )
    assert _netctl(["--version"], sandbox).stdout.startswith("netctl version ")
    # --debug is not a fast-path word: the same commands through argparse
    for argv in (["ps", "-a"], ["port", "web"], ["network", "ls"]):
        assert _netctl(["--debug", *argv], sandbox).stdout == _netctl(argv, sandbox).stdout


def test_every_command_has_one_registering_module() -> None:
    """COMMANDS is the one list: each module registers exactly the commands the table
    gives it, and nothing fails to import silently."""
    import argparse
    from importlib import import_module

    from pycni.runtime.cli import COMMANDS

    for module in set(COMMANDS.values()):
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        import_module(f"pycni.runtime.{module}").register(sub)
        registered = {name for name, p in sub.choices.items() if p.prog.split()[-1] == name}
        assert registered == {c for c, m in COMMANDS.items() if m == module}, module


def _in_fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh `python -IS` that imports this checkout's package."""
    return subprocess.run(
        [sys.executable, "-IS", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n{code}"],
        capture_output=True,
        text=True,
        check=True,
    )


def test_the_run_path_modules_stay_light() -> None:
    """What `netctl run -p` imports besides the plugins: the port test binds through
    `_socket` (socket adds enum and selectors), the network store locks without
    contextlib, and the firewall plugin's name checks need no `re`."""
    code = (
        "import sys\n"
        "import pycni.runtime.hostports, pycni.runtime.networks, pycni.firewall.forward\n"
        "print(' '.join(sorted({'re', 'socket', 'contextlib', 'enum', 'selectors'}"
        " & set(sys.modules))))\n"
    )
    assert _in_fresh_python(code).stdout.strip() == ""


@pytest.mark.root
def test_the_container_init_calls_libc_without_ctypes() -> None:
    """The container's init drops capabilities (prctl, capset) and sets the hostname
    through pycni.ffi, not the ~4 ms `ctypes` package: what the kernel then reports is
    exactly the set asked for, and ctypes was never imported."""
    code = (
        "import os, sys\n"
        "from pycni import netns\n"
        "from pycni.runtime import sandbox\n"
        "assert netns.libc_function('unshare')(netns.CLONE_NEWUTS) == 0\n"
        "sandbox.sethostname('ffi-host')\n"
        "sandbox.drop_capabilities(frozenset({12, 40}))\n"  # NET_ADMIN, CHECKPOINT_RESTORE
        "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines()"
        " if l.startswith('Cap'))\n"
        "print(os.uname().nodename, status['CapEff'], status['CapPrm'], status['CapBnd'],"
        " status['CapInh'], 'ctypes' in sys.modules)\n"
    )
    done = _in_fresh_python(code)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    want = f"{(1 << 12) | ((1 << 40) if last >= 40 else 0):016x}"
    assert done.stdout.split() == ["ffi-host", want, want, want, want, "False"], done.stderr


# Reports the collector's state as the process ends, by os._exit (the hot commands) or
# by sys.exit (argparse's commands).
_GC_PROBE = (
    "import atexit, gc, os, sys\n"
    "_exit = os._exit\n"
    "def _report(code=None):\n"
    "    sys.stderr.write(f'gc={gc.isenabled()} frozen={gc.get_freeze_count() > 0}\\n')\n"
    "    sys.stderr.flush()\n"
    "    if code is not None:\n"
    "        _exit(code)\n"
    "os._exit = _report\n"
    "atexit.register(_report)\n"
)


def _gc_at_exit(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-IS", "-c", _GC_PROBE + _code(argv)],
        capture_output=True,
        text=True,
        env=env,
    )
    # the last: netctl's own (a container's init, forked earlier, reports first)
    return [line for line in proc.stderr.splitlines() if line.startswith("gc=")][-1]


def test_hot_commands_run_without_the_cyclic_collector(sandbox: dict[str, str]) -> None:
    """A hot command is over in milliseconds: the collector's passes over everything
    imported (~2 ms of `run -p`) buy nothing. Commands argparse parses (daemons among
    them) keep it."""
    assert _gc_at_exit(["ps"], sandbox) == "gc=False frozen=False"
    assert _gc_at_exit(["network", "ls"], sandbox) == "gc=False frozen=False"
    assert _gc_at_exit(["--debug", "ps"], sandbox) == "gc=True frozen=False"


@pytest.mark.root
def test_run_collects_while_its_workload_runs(tmp_path: Path) -> None:
    """`netctl run`'s supervisor may live as long as its workload: it collects while it
    waits, all but what existed when the workload started (frozen: one pass over it
    cost 3-6 ms), and stops again for the teardown."""
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NETCTL_ROOT": str(root),
        "NETCTL_DAEMON_CONFIG": str(root / "daemon.json"),
    }
    assert _gc_at_exit(["run", "--rm", "--network", "none", "--", "true"], env) == (
        "gc=False frozen=True"
    )


def test_in_process_callers_keep_their_collector(
    sandbox: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only netctl run as a program turns the collector off: main(argv) leaves a
    caller's collector as it found it, off or on."""
    import gc

    from pycni.runtime import cli

    for key, value in sandbox.items():
        monkeypatch.setenv(key, value)
    was = gc.isenabled()
    try:
        for state in (False, True):
            (gc.enable if state else gc.disable)()
            for argv in (["ps"], ["--debug", "ps"]):
                with pytest.raises(SystemExit):
                    cli.main(argv)
                assert gc.isenabled() is state, argv
                assert cli.GC_PAUSED is False
    finally:
        (gc.enable if was else gc.disable)()
    capsys.readouterr()
