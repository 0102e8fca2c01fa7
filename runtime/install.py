"""`netctl plugins install|list`: the plugin executables other CNI runtimes run.

Each executable is a three-line Python script with an absolute interpreter path
(the interpreter netctl runs under, never a shell wrapper or a pyenv shim) and
`-IS` (-I -S; a shebang passes one argument): isolated from the caller's PYTHON* variables, PATH and working directory,
and without site-packages processing, which keeps start-up at the bare interpreter's
cost. The package location is written in, so a runtime with any environment runs the
same code.

Where a C compiler exists (`cc`, or $CC) each executable is instead the compiled
client pycni/native/cniclient.c (about 1 ms per exec instead of 10-25 ms): it answers
VERSION itself, hands every other verb to the resident agent and execs the same Python
entry when the agent cannot take it (starting one on demand when there is none). The
settings it needs are a text trailer appended to the binary (`_trailer`), which also
carries the `# pycni-plugin:` marker that invoke.own_plugin looks for.
PYCNI_NATIVE=0 (or a build failure, reported on stderr) installs the Python scripts.
"""

from __future__ import annotations

import os
import sys

import pycni
from pycni import invoke
from pycni.atomicfile import write_atomic
from pycni.plugins import PLUGINS

SOURCE = os.path.join(os.path.dirname(os.path.abspath(pycni.__file__)), "native", "cniclient.c")
TRAILER_TAG = b"\n#pycni-trailer "
NATIVE_ENV = "PYCNI_NATIVE"


_memo: dict[str, object] = {}
STAMP = ".pycni-current"  # in the plugin directory: see ensure()


def _paths() -> tuple[str, str]:
    if "paths" not in _memo:
        import sysconfig

        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(pycni.__file__)))
        _memo["paths"] = (package_parent, sysconfig.get_paths()["purelib"])
    paths = _memo["paths"]
    assert isinstance(paths, tuple)
    return paths


def _autostart() -> bool:
    """The installed default for on-demand agent starts: on, unless
    PYCNI_AGENT_AUTOSTART=0 is set while installing (the test suite does)."""
    from pycni import agent_client

    return os.environ.get(agent_client.AUTOSTART_ENV) != "0"


def _prelude(comment: str) -> str:
    """The interpreter line, a comment line and the package location, shared by every
    launcher."""
    package_parent, site_packages = _paths()
    return (
        f"#!{os.path.abspath(sys.executable)} -IS\n"
        f"{comment}"
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        f"sys.path.append({site_packages!r})\n"
    )


def _script(name: str, module: str) -> str:
    return (
        _prelude(
            f"{invoke.MARKER.decode()}{name} {pycni.__version__}\n"
            "# Written by `netctl plugins install`; rewrite it with the same command.\n"
        )
        + "from pycni.entry import main\n"
        + (
            f"main({name!r}, {module!r})\n"
            if _autostart()
            else f"main({name!r}, {module!r}, autostart=False)\n"
        )
    )


def launcher_script() -> str:
    """The `netctl` command itself, started the way the plugins are: `-IS` skips the
    site-packages scan (and an editable install's import hook), most of a short
    command's start-up."""
    return (
        _prelude("# netctl, written by `python -m pycni.runtime.install --launcher PATH`.\n")
        + "from pycni.runtime.cli import main\n"
        + "main()\n"
    )


def _write_executable(path: str, text: str) -> None:
    # A runtime exec'ing the old file mid-write never sees half a script.
    write_atomic(path, text, 0o755)


def _source_digest() -> str:
    if "digest" not in _memo:
        import hashlib

        with open(SOURCE, "rb") as fh:
            _memo["digest"] = hashlib.sha256(fh.read()).hexdigest()[:16]
    return str(_memo["digest"])


def _trailer(name: str, module: str) -> bytes:
    """What the compiled client reads from its own end (cniclient.c: read_trailer)."""
    from pycni import version

    package_parent, site_packages = _paths()
    body = (
        "\n# Written by `netctl plugins install`; rewrite it with the same command.\n"
        f"source={_source_digest()}\n"
        f"name={name}\n"
        f"module={module}\n"
        f"version={pycni.__version__}\n"
        f"python={os.path.abspath(sys.executable)}\n"
        f"path0={package_parent}\n"
        f"path1={site_packages}\n"
        f"versionjson={version.version_info_json()}\n"
        f"autostart={int(_autostart())}\n"
        f"{invoke.MARKER.decode()}{name} {pycni.__version__}"
    ).encode()
    # The last line gives the size of the whole trailer, itself included.
    size = len(body) + len(TRAILER_TAG) + 1
    while True:
        tail = TRAILER_TAG + str(size).encode() + b"\n"
        if len(body) + len(tail) == size:
            return body + tail
        size = len(body) + len(tail)


def compiler() -> str | None:
    import shutil

    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return shutil.which("cc") or shutil.which("gcc")


def build_client() -> bytes | None:
    """The compiled client, or None (no compiler, PYCNI_NATIVE=0, or the build failed:
    then the Python scripts are installed)."""
    if os.environ.get(NATIVE_ENV) == "0" or not os.path.isfile(SOURCE):
        return None
    cc = compiler()
    if cc is None:
        return None
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pycni-cc-") as tmp:
        out = os.path.join(tmp, "cniclient")
        proc = subprocess.run(
            [cc, "-O2", "-s", "-o", out, SOURCE], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            sys.stderr.write(
                f"netctl: building {SOURCE} failed, installing the Python plugins:\n{proc.stderr}"
            )
            return None
        with open(out, "rb") as fh:
            return fh.read()


def precompile() -> None:
    """Write the bytecode of the code the plugins import (pycni, and in a source
    checkout the plugins/ and ipam/ folders beside it), so no plugin start compiles
    source: the launchers run `-I`, which writes missing bytecode itself only where
    the package directory is writable, and compiles it again on every start where it
    is not (a compile of the bridge path costs more than the whole verb). Files whose
    bytecode is current are only stat'ed; a directory we cannot write is left alone."""
    import compileall

    package_parent, _site = _paths()
    folders = [os.path.join(package_parent, "pycni")]
    folders += [
        os.path.join(package_parent, name)
        for name in ("plugins", "ipam")
        if os.path.isfile(os.path.join(package_parent, name, "__init__.py"))
    ]
    for folder in folders:
        try:
            compileall.compile_dir(folder, quiet=2, workers=1)
        except OSError:
            pass


def install(
    directory: str, names: list[str] | None = None, native: bool | None = None
) -> list[str]:
    """Write one executable per plugin into `directory` (atomically); returns their paths.
    native=None: the compiled client where it builds; False: the Python scripts."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    precompile()
    client = build_client() if native is not False else None
    written = []
    for name, module in PLUGINS.items():
        if names and name not in names:
            continue
        path = os.path.join(directory, name)
        data = client + _trailer(name, module) if client is not None else _script(name, module)
        write_atomic(path, data, 0o755)
        written.append(path)
    return written


def is_current(directory: str) -> bool:
    """True when every plugin in `directory` is ours and matches this interpreter and
    version (either form: the Python script, or the compiled client of this source)."""
    for name, module in PLUGINS.items():
        try:
            with open(os.path.join(directory, name), "rb") as fh:
                data = fh.read()
        except OSError:
            return False
        if data.startswith(b"\x7fELF"):
            if not data.endswith(_trailer(name, module)):
                return False
        elif data != _script(name, module).encode():
            return False
    return True


def _stamp(directory: str) -> str:
    """What the last full check saw: this interpreter, package and client source, the
    autostart default, and each executable's inode, size and mtime. Equal stamps mean
    nothing changed since that check, without reading a single executable (`netctl
    run` checks on every start; reading and comparing them all cost ~4 ms)."""
    parts = [pycni.__version__, sys.executable, pycni.__file__, str(int(_autostart()))]
    try:
        parts.append(str(os.stat(SOURCE).st_mtime_ns))
    except OSError:
        parts.append("-")
    for name in PLUGINS:
        st = os.stat(os.path.join(directory, name))
        parts.append(f"{name} {st.st_ino} {st.st_size} {st.st_mtime_ns}")
    return "\n".join(parts) + "\n"


def ensure(directory: str) -> None:
    """Install the executables unless they are current (see is_current)."""
    stamp = os.path.join(directory, STAMP)
    try:
        with open(stamp, encoding="utf-8") as fh:
            if fh.read() == _stamp(directory):
                return
    except OSError:
        pass
    if not is_current(directory):
        install(directory)
    try:
        write_atomic(stamp, _stamp(directory), 0o644)
    except OSError:
        pass  # a read-only plugin dir: the full check runs again next time


def describe(path: str) -> dict[str, object]:
    """Who provides the plugin at `path` and which CNI versions it speaks."""
    own = invoke.own_plugin(path)
    info: dict[str, object] = {"path": path, "provider": "pycni" if own else "other"}
    if own:
        with open(path, "rb") as fh:
            data = fh.read()
        info["client"] = "native" if data.startswith(b"\x7fELF") else "python"
        marker = next(
            (line for line in data[-2048:].split(b"\n") if line.startswith(invoke.MARKER)), b""
        )
        if not data.startswith(b"\x7fELF"):
            marker = data.split(b"\n")[1]
        parts = marker[len(invoke.MARKER) :].decode(errors="replace").split()
        info["version"] = parts[1] if len(parts) > 1 else "?"
    try:
        out, _err, status = invoke.raw_exec(
            path,
            b"",
            {"CNI_COMMAND": "VERSION", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            timeout=10,
        )
        import json

        versions = json.loads(out)["supportedVersions"] if status == 0 else []
    except Exception:
        versions = []
    info["cniVersions"] = versions
    return info


def listing(directories: list[str]) -> list[dict[str, object]]:
    out = []
    for name in PLUGINS:
        for directory in directories:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                entry = describe(path)
                entry["name"] = name
                out.append(entry)
    return out


if __name__ == "__main__":
    # scripts/setup.sh: `python -m pycni.runtime.install --launcher .venv/bin/netctl`
    if len(sys.argv) != 3 or sys.argv[1] != "--launcher":
        sys.exit("usage: python -m pycni.runtime.install --launcher PATH")
    _write_executable(os.path.abspath(sys.argv[2]), launcher_script())
