"""The plugin side of the CNI contract: environment + stdin in, one verb, stdout out.

`main(Verbs(...))` is the whole entry point of a plugin executable. It reads the
CNI_* environment and stdin exactly once, validates them the way libcni's skel does,
calls the verb, prints the result in the cniVersion the config asked for, and is the
only place that turns a `CniError` (or anything unexpected) into the CNI error JSON
on stdout plus a non-zero exit. Tracebacks go to the debug log only
(PYCNI_DEBUG=1 prints them to stderr, PYCNI_LOG_FILE=path appends them to a file).
"""

from __future__ import annotations

import os
import sys

from pycni import errors, fastjson, names
from pycni import version as cniver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pycni.result import Result

# Which CNI_* variables each command needs (as libcni's skel requires them).
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}
# Largest config we accept on stdin; real configs are a few KiB.
MAX_STDIN = 16 * 1024 * 1024
valid_name = names.valid_name  # libcni's rule for container IDs and network names
validate_network_name = names.validate_network_name  # libcni's check, raising its errors


def validate_container_id(cid: str) -> None:
    if not cid:
        raise errors.UnknownContainer("missing containerID")
    if not valid_name(cid):
        raise errors.InvalidEnvironment("invalid characters in containerID", cid)


def validate_ifname(ifname: str) -> None:
    """The kernel's dev_valid_name() (pycni.names), with libcni's messages."""
    problem = names.ifname_problem(ifname)
    if problem == "empty":
        raise errors.InvalidEnvironment("interface name is empty")
    if problem == "long":
        raise errors.InvalidEnvironment(
            "interface name is too long", "interface name should be less than 16 characters"
        )
    if problem == "dots":
        raise errors.InvalidEnvironment("interface name is . or ..")
    if problem == "chars":
        raise errors.InvalidEnvironment(
            "interface name contains / or : or whitespace characters", ifname
        )


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS 'K=V;K=V' -> dict. Pairs must have exactly one '='."""
    out: dict[str, str] = {}
    if not text:
        return out
    for pair in text.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or "=" in value or not key:
            raise errors.InvalidEnvironment(f"ARGS: invalid pair {pair!r}")
        out[key] = value
    return out


def _truthy(text: str) -> bool:
    # libcni's UnmarshallableBool: 1 or true, case-insensitively.
    return text.lower() in ("1", "true")


def check_cni_args(args: dict[str, str], known: frozenset[str]) -> None:
    """Refuse CNI_ARGS keys the plugin does not know, unless IgnoreUnknown is true."""
    if _truthy(args.get("IgnoreUnknown", "")):
        return
    unknown = [f"{k}={v}" for k, v in args.items() if k not in known and k != "IgnoreUnknown"]
    if unknown:
        quoted = " ".join(f'"{u}"' for u in unknown)
        raise errors.InvalidEnvironment(
            f"ARGS: unknown args [{quoted}]",
            f"this plugin knows {', '.join(sorted(known)) or 'no arguments'}; add IgnoreUnknown=1 to CNI_ARGS to ignore the others",
        )


class CmdArgs:
    """One invocation: the CNI_* environment, the raw stdin and the decoded config."""

    __slots__ = ("args", "command", "conf", "container_id", "ifname", "netns", "path", "stdin")

    def __init__(
        self,
        command: str,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        args: str = "",
        path: str = "",
        stdin: bytes = b"",
        conf: dict[str, Any] | None = None,
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args
        self.path = path
        self.stdin = stdin
        self.conf: dict[str, Any] = conf if conf is not None else {}

    @property
    def cni_version(self) -> str:
        v = self.conf.get("cniVersion", cniver.IMPLICIT)
        return v if isinstance(v, str) else cniver.IMPLICIT

    @property
    def path_list(self) -> list[str]:
        return [p for p in self.path.split(":") if p]

    @property
    def cni_args(self) -> dict[str, str]:
        return parse_cni_args(self.args)

    def env(self) -> dict[str, str]:
        """The CNI_* variables of this invocation, for delegating to another plugin."""
        return {
            "CNI_COMMAND": self.command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns,
            "CNI_IFNAME": self.ifname,
            "CNI_ARGS": self.args,
            "CNI_PATH": self.path,
        }


class PassThrough:
    """A chained plugin's answer when it had nothing to do: the prevResult it was given,
    as given (already in the config's cniVersion), printed without being parsed into
    a Result, so such a call never imports the result and address machinery."""

    __slots__ = ("wire",)

    def __init__(self, wire: dict[str, Any]) -> None:
        self.wire = wire

    def to_wire(self, version: str) -> dict[str, Any]:
        return self.wire


def pass_through(cmd: CmdArgs) -> PassThrough | None:
    """prevResult unchanged, when it is in the config's own cniVersion and has a
    result's shape (lists of objects where a result has them); None otherwise, and the
    caller parses it (which refuses a malformed one with the usual error)."""
    prev = cmd.conf.get("prevResult")
    if not isinstance(prev, dict) or prev.get("cniVersion") != cmd.cni_version:
        return None
    for key, field in (("interfaces", "name"), ("ips", "address"), ("routes", "dst")):
        items = prev.get(key, [])
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get(field), str) for i in items
        ):
            return None
    if not isinstance(prev.get("dns", {}), dict):
        return None
    return PassThrough(prev)


class Verbs:
    """The table of verbs a plugin implements; a missing verb is a clean success."""

    __slots__ = ("about", "add", "check", "delete", "gc", "status")

    def __init__(
        self,
        about: str,
        add: Callable[[CmdArgs], Result | PassThrough],
        delete: Callable[[CmdArgs], None],
        check: Callable[[CmdArgs], None] | None = None,
        gc: Callable[[CmdArgs], None] | None = None,
        status: Callable[[CmdArgs], None] | None = None,
    ) -> None:
        self.about = about
        self.add = add
        self.delete = delete
        self.check = check
        self.gc = gc
        self.status = status


def decode_conf(stdin: bytes) -> dict[str, Any]:
    if len(stdin) > MAX_STDIN:
        raise errors.DecodingFailure(
            "network configuration is too large", f"{len(stdin)} bytes; the limit is {MAX_STDIN}"
        )
    try:
        conf = fastjson.loads(stdin, go=True)
    except ValueError as exc:
        raise errors.DecodingFailure("error unmarshall network config", str(exc)) from None
    if not isinstance(conf, dict):
        raise errors.DecodingFailure(
            "error unmarshall network config", "the configuration must be a JSON object"
        )
    return conf


def check_version(conf: dict[str, Any]) -> str:
    v = conf.get("cniVersion", cniver.IMPLICIT) or cniver.IMPLICIT
    if not isinstance(v, str):
        raise errors.DecodingFailure(
            "decoding version from network config", "'cniVersion' must be a string"
        )
    if v not in cniver.SUPPORTED:
        quoted = " ".join(f'"{s}"' for s in cniver.SUPPORTED)
        raise errors.IncompatibleVersion(
            "incompatible CNI versions", f'config is "{v}", plugin supports [{quoted}]'
        )
    return v


# The order in which libcni's skel scans the environment; a malformed value is
# reported at once, missing ones are collected and reported together afterwards.
_ENV_ORDER = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
_VALIDATORS = {"CNI_CONTAINERID": validate_container_id, "CNI_IFNAME": validate_ifname}


def read_env(environ: dict[str, str] | os._Environ[str]) -> CmdArgs:
    command = environ.get("CNI_COMMAND", "")
    required = REQUIRED_ENV.get(command, ())
    missing = [] if command else ["CNI_COMMAND"]
    for var in _ENV_ORDER[1:]:
        if var not in required:
            continue
        value = environ.get(var, "")
        if not value:
            missing.append(var)
        elif var in _VALIDATORS:
            _VALIDATORS[var](value)
    if missing:
        raise errors.InvalidEnvironment(
            f"required env variables [{','.join(missing)}] missing",
            f"{command or 'every command'} needs {', '.join(missing)} set by the container runtime",
        )
    return CmdArgs(
        command,
        environ.get("CNI_CONTAINERID", ""),
        environ.get("CNI_NETNS", ""),
        environ.get("CNI_IFNAME", ""),
        environ.get("CNI_ARGS", ""),
        environ.get("CNI_PATH", ""),
    )


def validate_conf(conf: dict[str, Any]) -> None:
    """What skel checks for every command but VERSION, before it looks at the verb."""
    name = conf.get("name")
    if name is None or name == "":
        raise errors.InvalidConfig(
            "missing network name", 'the network configuration needs a "name"'
        )
    if not isinstance(name, str):
        raise errors.DecodingFailure("error unmarshall network config", "'name' must be a string")
    validate_network_name(name)


def dispatch(verbs: Verbs, cmd: CmdArgs) -> str:
    """Validate and run one verb; returns what goes to stdout ("" for none)."""
    if cmd.command == "VERSION":
        return cniver.version_info_json()
    if not cmd.conf:
        cmd.conf = decode_conf(cmd.stdin)
    validate_conf(cmd.conf)
    if cmd.args:
        parse_cni_args(cmd.args)  # malformed pairs are refused by every plugin, for every verb
    if cmd.command not in REQUIRED_ENV:
        raise errors.InvalidEnvironment(
            f"unknown CNI_COMMAND: {cmd.command}",
            "expected one of ADD, DEL, CHECK, GC, STATUS, VERSION",
        )
    minimum = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}.get(cmd.command)
    if minimum is not None:
        raw = cmd.conf.get("cniVersion") or cniver.IMPLICIT
        try:
            too_old = isinstance(raw, str) and cniver.parse(raw) < cniver.parse(minimum)
        except ValueError as exc:
            raise errors.DecodingFailure("decoding version from network config", str(exc)) from None
        if too_old:
            raise errors.IncompatibleVersion(
                f"config version does not allow {cmd.command}",
                f"{cmd.command} needs cniVersion {minimum} or later; the config says {raw}",
            )
    version = check_version(cmd.conf)
    if cmd.command == "ADD":
        result = verbs.add(cmd)
        return fastjson.dumps(result.to_wire(version))
    verb = {"DEL": verbs.delete, "CHECK": verbs.check, "GC": verbs.gc, "STATUS": verbs.status}[
        cmd.command
    ]
    if verb is not None:
        verb(cmd)
    return ""


def valid_attachments(conf: dict[str, Any]) -> set[tuple[str, str]] | None:
    """GC's list of attachments to keep; None when the runtime sent none at all."""
    key = "cni.dev/valid-attachments"
    if key not in conf:
        key = "cni.dev/attachments"  # the spec-v1.1.0 tag's spelling
        if key not in conf:
            return None
    items = conf[key]
    if items is None:
        return set()  # a Go nil slice: no attachment is valid
    if not isinstance(items, list):
        raise errors.InvalidConfig(f"{key} must be a list of attachments")
    valid = set()
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise errors.InvalidConfig(
                f"{key}[{n}] must be an object", '{"containerID": "...", "ifname": "..."}'
            )
        cid, ifname = item.get("containerID"), item.get("ifname")
        if not isinstance(cid, str) or not isinstance(ifname, str) or not cid or not ifname:
            raise errors.InvalidConfig(
                f"{key}[{n}] needs string containerID and ifname", f"got {item!r}"
            )
        valid.add((cid, ifname))
    return valid


def _read_stdin() -> bytes:
    try:
        chunks = []
        total = 0
        while True:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_STDIN:
                break
        return b"".join(chunks)
    except OSError as exc:
        raise errors.IOFailure("error reading from stdin", exc.strerror or str(exc)) from None


def log_exception(exc: BaseException) -> None:
    """Write a traceback to the debug log, if one is enabled."""
    debug = os.environ.get("PYCNI_DEBUG") == "1"
    log_file = os.environ.get("PYCNI_LOG_FILE")
    if not (debug or log_file):
        return
    import traceback

    text = "".join(traceback.format_exception(exc))
    if debug:
        sys.stderr.write(text)
    if log_file:
        try:
            with open(log_file, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError:
            pass


def run(
    verbs: Verbs, environ: dict[str, str] | os._Environ[str], stdin: bytes | None
) -> tuple[str, int]:
    """Run one invocation; returns (stdout text, exit code). Never raises."""
    version = cniver.CURRENT
    try:
        cmd = read_env(environ)
        if cmd.command != "VERSION":
            # VERSION never reads stdin (as libcni's skel); every other verb reads it once.
            cmd.stdin = stdin if stdin is not None else _read_stdin()
            cmd.conf = decode_conf(cmd.stdin)
            v = cmd.conf.get("cniVersion") or cniver.IMPLICIT
            if isinstance(v, str) and v in cniver.SUPPORTED:
                version = v  # errors are printed in the caller's version when we know it
        return dispatch(verbs, cmd), 0
    except errors.CniError as exc:
        log_exception(exc)
        return fastjson.dumps(exc.to_dict(version)), 1
    except Exception as exc:  # the last line of defence: never a traceback on stdout
        log_exception(exc)
        err = errors.InternalError(f"internal error: {type(exc).__name__}", str(exc))
        return fastjson.dumps(err.to_dict(version)), 1


#: files and directories a plugin creates are never group- or world-writable, whatever
#: umask the runtime that execs it has (root trusts this state on the next call)
UMASK = 0o022


def main(verbs: Verbs) -> None:
    """The entry point of a plugin executable."""
    os.umask(UMASK)
    if not os.environ.get("CNI_COMMAND"):
        # As libcni's skel: no command means a human ran us; say what we are.
        sys.stderr.write(
            f"{verbs.about}\nCNI protocol versions supported: {', '.join(cniver.SUPPORTED)}\n"
        )
        sys.exit(0)
    out, code = run(verbs, os.environ, None)
    if out:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    sys.exit(code)
