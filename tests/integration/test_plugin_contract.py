"""The CNI contract at the process boundary: the installed executable, a clean env."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import exec_plugin

pytestmark = pytest.mark.root
CONF = {"cniVersion": "1.0.0", "name": "n1", "type": "loopback"}


def test_executable_has_absolute_interpreter_and_no_shell(plugin_dir) -> None:
    data = (plugin_dir / "loopback").read_bytes()
    if data.startswith(b"\x7fELF"):  # the compiled client: its fallback interpreter
        lines = data[-2048:].decode(errors="replace").splitlines()
        interpreter = next(line for line in lines if line.startswith("python="))[7:]
    else:
        first = data.decode().splitlines()[0]
        assert first.startswith("#!/") and first.endswith(" -IS")
        interpreter = first[2:].split()[0]
    assert os.path.isabs(interpreter) and ".pyenv/shims" not in interpreter
    assert os.access(interpreter, os.X_OK)


def test_runs_with_empty_env_any_cwd(plugin_dir, tmp_path) -> None:
    proc = subprocess.run(
        [str(plugin_dir / "loopback")],
        env={"CNI_COMMAND": "VERSION"},
        cwd=tmp_path,
        capture_output=True,
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"


def test_hostile_python_env_does_not_matter(plugin_dir, tmp_path) -> None:
    (tmp_path / "json.py").write_text("raise SystemExit('hijacked')\n")
    (tmp_path / "pycni").mkdir()
    (tmp_path / "pycni" / "__init__.py").write_text("raise SystemExit('hijacked')\n")
    env = {
        "CNI_COMMAND": "VERSION",
        "PYTHONPATH": str(tmp_path),
        "PYTHONSTARTUP": str(tmp_path / "json.py"),
        "PATH": str(tmp_path),
    }
    proc = subprocess.run(
        [str(plugin_dir / "loopback")], env=env, cwd=tmp_path, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr


def test_no_command_prints_about_on_stderr(plugin_dir) -> None:
    proc = subprocess.run(
        [str(plugin_dir / "loopback")], env={}, capture_output=True, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0 and proc.stdout == b""
    assert b"pycni loopback plugin" in proc.stderr and b"1.1.0" in proc.stderr


@pytest.mark.parametrize(
    ("omit", "stdin", "extra", "code"),
    [
        (("CNI_NETNS",), CONF, {}, 4),
        (("CNI_CONTAINERID", "CNI_IFNAME"), CONF, {}, 4),
        ((), b"", {}, 6),
        ((), b'{"cniVersion": "1.0.0", "name": "n1"', {}, 6),
        ((), b"\x00\x01\x02", {}, 6),
        ((), {"cniVersion": "0.9.9", "name": "n1", "type": "loopback"}, {}, 1),
        ((), {"cniVersion": "1.0.0", "type": "loopback"}, {}, 7),
        ((), {"cniVersion": "1.0.0", "name": "../etc", "type": "loopback"}, {}, 7),
        ((), CONF, {"CNI_CONTAINERID": "x;rm -rf /"}, 4),
        ((), CONF, {"CNI_IFNAME": "a" * 16}, 4),
        ((), CONF, {"CNI_COMMAND": "EXPLODE"}, 4),
    ],
)
def test_bad_input_matrix(plugin_dir, container_ns, omit, stdin, extra, code) -> None:
    ns = container_ns()
    res = exec_plugin(
        plugin_dir / "loopback",
        "ADD",
        stdin,
        netns=ns.path,
        container_id="c1",
        cni_path="/x",
        omit=omit,
        env_extra=extra,
    )
    err = res.error
    assert err["code"] == code, err
    assert "Traceback" not in res.stderr
    # nothing changed: lo is still as the fixture left it (up, because the fixture set it)
    assert "UP" in ns.run("ip", "link", "show", "lo")


def test_version_output_matches_spec(plugin_dir) -> None:
    res = exec_plugin(plugin_dir / "loopback", "VERSION", b"")
    assert res.rc == 0
    assert res.json == {
        "cniVersion": "1.1.0",
        "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


def test_gc_and_status_are_clean_success(plugin_dir) -> None:
    conf = dict(CONF, cniVersion="1.1.0")
    conf["cni.dev/valid-attachments"] = []
    for verb in ("GC", "STATUS"):
        res = exec_plugin(plugin_dir / "loopback", verb, conf, cni_path="/x")
        assert res.rc == 0 and res.stdout == "", res.stdout
