"""`netctl plugins install|list`: the plugin executables other CNI runtimes run.

Each executable is a three-line Python script with an absolute interpreter path
(the interpreter netctl runs under, never a shell wrapper or a pyenv shim) and
`-IS` (-I -S; a shebang passes one argument): isolated from the caller's PYTHON* variables, PATH and working directory,
and without site-packages processing, which keeps start-up at the bare interpreter's
cost. The package location is written in, so a runtime with any environment runs the
same code.
"""

from __future__ import annotations

import os
import sys
import sysconfig

from pycni.plugins import PLUGINS

import pycni
from pycni import invoke


def _prelude() -> str:
    """The interpreter line and the package location, shared by every launcher."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(pycni.__file__)))
    site_packages = sysconfig.get_paths()["purelib"]
    return (
        f"#!{os.path.abspath(sys.executable)} -IS\n"
        "{marker}"
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        f"sys.path.append({site_packages!r})\n"
    )


def _script(name: str, module: str) -> str:
    head, tail = _prelude().split("{marker}")
    return (
        head
        + f"{invoke.MARKER.decode()}{name} {pycni.__version__}\n"
        + "# Written by `netctl plugins install`; rewrite it with the same command.\n"
        + tail
        + "from pycni.entry import main\n"
        + f"main({name!r}, {module!r})\n"
    )


def launcher_script() -> str:
    """The `netctl` command itself, started the way the plugins are: `-IS` skips the
    site-packages scan (and an editable install's import hook), most of a short
    command's start-up."""
    head, tail = _prelude().split("{marker}")
    return (
        head
        + "# netctl, written by `python -m pycni.runtime.install --launcher PATH`.\n"
        + tail
        + "from pycni.runtime.cli import main\n"
        + "main()\n"
    )


def _write_executable(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)  # a runtime exec'ing the old file mid-write never sees half a script


def install(directory: str, names: list[str] | None = None) -> list[str]:
    """Write one executable per plugin into `directory` (atomically); returns their paths."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    written = []
    for name, module in PLUGINS.items():
        if names and name not in names:
            continue
        path = os.path.join(directory, name)
        _write_executable(path, _script(name, module))
        written.append(path)
    return written


def is_current(directory: str) -> bool:
    """True when every plugin in `directory` is ours and matches this interpreter and version."""
    for name, module in PLUGINS.items():
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as fh:
                if fh.read() != _script(name, module):
                    return False
        except OSError:
            return False
    return True


def ensure(directory: str) -> None:
    if not is_current(directory):
        install(directory)


def describe(path: str) -> dict[str, object]:
    """Who provides the plugin at `path` and which CNI versions it speaks."""
    own = invoke.own_plugin(path)
    info: dict[str, object] = {"path": path, "provider": "pycni" if own else "other"}
    if own:
        with open(path, "rb") as fh:
            marker = fh.read(512).split(b"\n")[1]
        parts = marker[len(invoke.MARKER) :].decode().split()
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
