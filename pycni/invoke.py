"""Running another CNI plugin: lookup in CNI_PATH, exec, and errors as libcni reads them.

Used by plugins that delegate (IPAM, chained plugins) and by the runtime that runs
chains. Only the stdlib's `os` and `select` are used (no `subprocess`, which costs
more to import than a whole loopback ADD).

A plugin `type` is a file name, never a path: a `type` containing a path separator is
refused (CVE-2021-20206, where a crafted `type` ran any binary on the node).
"""

from __future__ import annotations

import os
import select

from pycni import errors, fastjson
from pycni.names import validate_type

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from pycni.result import Result

# First line marker of executables written by `netctl plugins install`.
MARKER = b"# pycni-plugin: "
EXEC_TIMEOUT = 300.0


def find_in_path(plugin_type: object, paths: list[str]) -> str:
    name = validate_type(plugin_type)
    if not paths:
        raise errors.InvalidEnvironment(
            "no paths provided", "set CNI_PATH to the directories holding the plugins"
        )
    for directory in paths:
        candidate = os.path.join(directory, name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o100000:
            return candidate
    quoted = " ".join(paths)
    raise errors.InvalidConfig(
        f'failed to find plugin "{name}" in path [{quoted}]',
        "install it there (for pycni plugins: netctl plugins install --dir DIR)",
    )


def own_plugin(path: str) -> str | None:
    """The pycni plugin name if `path` is an executable written by `netctl plugins install`."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
            if head.startswith(b"\x7fELF"):
                # The compiled client (runtime/install.py): the marker is in its trailer.
                size = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, size - 512))
                lines = fh.read().split(b"\n")[-3:]
            else:
                lines = head.split(b"\n")[:3]
    except OSError:
        return None
    for line in lines:
        if line.startswith(MARKER):
            return line[len(MARKER) :].split()[0].decode(errors="replace")
    return None


def raw_exec(
    path: str, stdin: bytes, env: Mapping[str, str], timeout: float = EXEC_TIMEOUT
) -> tuple[bytes, bytes, int]:
    """Run `path` with `env`, feed `stdin`, collect stdout and stderr; returns the exit status
    (negative signal number when killed)."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(
            path,
            [path],
            dict(env),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, in_r, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
        )
    except OSError as exc:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        raise errors.CniError(f"failed to exec plugin {path}", exc.strerror or str(exc)) from None
    os.close(in_r)
    os.close(out_w)
    os.close(err_w)
    out, err = bytearray(), bytearray()
    pending = memoryview(stdin)
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    poller.register(err_r, select.POLLIN)
    if pending:
        poller.register(in_w, select.POLLOUT)
    else:
        os.close(in_w)
        in_w = -1
    open_fds = {out_r: out, err_r: err}
    try:
        while open_fds or in_w >= 0:
            for fd, _event in poller.poll(int(timeout * 1000)):
                if fd == in_w:
                    try:
                        n = os.write(in_w, pending[:65536])
                        pending = pending[n:]
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        poller.unregister(in_w)
                        os.close(in_w)
                        in_w = -1
                    continue
                chunk = os.read(fd, 65536)
                if chunk:
                    open_fds[fd] += chunk
                else:
                    poller.unregister(fd)
                    os.close(fd)
                    del open_fds[fd]
    finally:
        if in_w >= 0:
            os.close(in_w)
        for fd in open_fds:
            os.close(fd)
    _pid, status = os.waitpid(pid, 0)
    return bytes(out), bytes(err), os.waitstatus_to_exitcode(status)


def error_from_output(stdout: bytes, stderr: bytes, status: int) -> errors.CniError:
    """What a failed plugin said, as libcni reads it."""
    text = stdout.strip()
    if not text:
        if stderr.strip():
            return errors.CniError(
                f"netplugin failed: {stderr.decode(errors='replace').strip()!r}: exit status {status}",
                code=0,
            )
        return errors.CniError(
            f"netplugin failed with no error message: exit status {status}", code=0
        )
    try:
        obj = fastjson.loads(text)
        code = obj["code"]
        msg = obj.get("msg", "")
        if isinstance(code, bool) or not isinstance(code, int) or not isinstance(msg, str):
            raise ValueError("not a CNI error")
        details = obj.get("details") or ""
        return errors.from_code(code, msg, details if isinstance(details, str) else str(details))
    except Exception:
        return errors.CniError(
            f"netplugin failed but error parsing its diagnostic message {text.decode(errors='replace')!r}",
            code=0,
        )


def exec_plugin(path: str, command: str, stdin: bytes, env: Mapping[str, str]) -> bytes:
    """Run one verb of the plugin at `path`; its stdout on success, its CniError otherwise."""
    full_env = dict(env)
    full_env["CNI_COMMAND"] = command
    stdout, stderr, status = raw_exec(path, stdin, full_env)
    if status != 0:
        raise error_from_output(stdout, stderr, status)
    return stdout


def delegate(
    plugin_type: str, command: str, stdin: bytes, env: Mapping[str, str] | None = None
) -> bytes:
    """Exec a plugin found only in CNI_PATH with our own environment, CNI_COMMAND overridden
    (pkg/invoke's Delegate*)."""
    base = dict(os.environ if env is None else env)
    path = find_in_path(plugin_type, [p for p in base.get("CNI_PATH", "").split(":") if p])
    return exec_plugin(path, command, stdin, base)


def delegate_add(plugin_type: str, stdin: bytes, env: Mapping[str, str] | None = None) -> Result:
    from pycni.result import parse_result

    out = delegate(plugin_type, "ADD", stdin, env)
    try:
        obj = fastjson.loads(out, go=True)
    except ValueError as exc:
        raise errors.DecodingFailure(
            f"failed to unmarshal the result of {plugin_type}", str(exc)
        ) from None
    if isinstance(obj, dict) and not obj.get("cniVersion"):
        conf_version = fastjson.loads(stdin).get("cniVersion", "")
        obj["cniVersion"] = conf_version
    return parse_result(obj, f"result of {plugin_type}")
