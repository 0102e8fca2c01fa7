"""netctl: the command line.

One handler maps exceptions to exit codes (125 for netctl's own errors, as Docker's)
and prints them as Docker does (tracebacks only with --debug):

    netctl run ...     netctl: MESSAGE.                 (docker: MESSAGE.)
                       See 'netctl run --help'.
    other commands     Error: MESSAGE                   (Error response from daemon: ...)
    flags, arguments   unknown flag: --bogus            (the same)
                       See 'netctl ps --help'.

Start-up is most of what a short command costs, so only what the command needs is
imported: COMMANDS names the one module that registers each command (one module per
command group) and only that module is loaded and registered; argparse itself is
loaded only when the command line is not one of the hot shapes `fast_path` reads
directly (`--version`, `ps`, `port`, `network ls`), which then run the same command
functions with the same arguments.
"""

from __future__ import annotations

import gc
import os
import sys

from pycni.runtime.usage import ArgumentError, UsageError

TYPE_CHECKING = False  # typing itself costs a start-up's worth of imports
if TYPE_CHECKING:
    import argparse
    from typing import Any, NoReturn

__all__ = ["COMMANDS", "EXIT_NETCTL_ERROR", "UsageError", "main", "print_json"]

EXIT_NETCTL_ERROR = 125

#: Every top-level command and the module (pycni.runtime.<module>) that registers it.
COMMANDS: dict[str, str] = {
    "run": "cmd_container",
    "ps": "cmd_container",
    "port": "cmd_container",
    "inspect": "cmd_container",
    "exec": "cmd_container",
    "stop": "cmd_container",
    "rm": "cmd_container",
    "logs": "cmd_container",
    "network": "cmd_network",
    "create": "cmd_network",
    "system": "cmd_system",
    "plugins": "cmd_plugins",
    "cni": "cmd_cni",
    "agent": "cmd_agent",
    "graph": "cmd_graph",
}


#: Docker commands netctl deliberately does not have, and why (exit 125, not "unknown").
REFUSED_COMMANDS: dict[str, str] = {
    **dict.fromkeys(
        ("pull", "push", "build", "images", "image", "rmi", "tag", "commit", "load", "save"),
        "images",
    ),
    "volume": "volumes",
}


def refusal(command: str) -> str:
    what = REFUSED_COMMANDS[command]
    return (
        f"netctl {command}: netctl runs host commands in their own network namespace; it has "
        f"no {what}. Run a host command instead: netctl run [OPTIONS] -- CMD [ARG...]"
    )


def print_json(obj: Any) -> None:
    import json

    sys.stdout.write(json.dumps(obj, indent=4) + "\n")


def print_table(rows: list[list[str]]) -> None:
    """Docker's column layout: each column as wide as its widest cell, three spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.ljust(w + 3) for c, w in zip(r[:-1], widths[:-1], strict=True)]
        print(("".join(cells) + r[-1]).rstrip())


def version() -> str:
    import pycni

    return f"netctl version {pycni.__version__}"


# -- the parser ------------------------------------------------------------------------

_PARSERS: dict[str, argparse.ArgumentParser] = {}  # by prog ("netctl port"), for messages


def _parser_class() -> type[argparse.ArgumentParser]:
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse with Docker's error messages (pflag/cobra wording), raised as
        ArgumentError instead of printed with a Python-flavoured usage line."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("allow_abbrev", False)  # Docker takes no abbreviations
            super().__init__(*args, **kwargs)
            self.set_defaults(netctl_prog=self.prog)
            _PARSERS[self.prog] = self

        def error(self, message: str) -> NoReturn:
            raise ArgumentError(docker_wording(self, message), self.prog)

    return Parser


def docker_wording(parser: argparse.ArgumentParser, message: str) -> str:
    """argparse's complaint, said as Docker says it."""
    import argparse
    import re

    m = re.fullmatch(r"the following arguments are required: (.*)", message)
    if m:
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            return f'"{parser.prog}" requires a command'
        positionals = [a for a in parser._actions if not a.option_strings]
        least = sum(1 for a in positionals if a.nargs in (None, "+"))
        exact = all(a.nargs is None for a in positionals)
        noun = "argument" if least == 1 else "arguments"
        return f'"{parser.prog}" requires {"exactly" if exact else "at least"} {least} {noun}.'
    m = re.fullmatch(r"argument (\S+): invalid choice: '(.*?)' \(choose from (.*)\)", message)
    if m:
        name, value, choices = m.groups()
        if not name.startswith("-"):  # a command name
            return f"'{value}' is not a {parser.prog} command."
        options = ", ".join(c.strip("'") for c in choices.split(", "))
        return f'invalid argument "{value}" for "{_flag(name)}" flag: must be one of {options}'
    m = re.fullmatch(r"argument (\S+): invalid (\w+) value: '(.*)'", message)
    if m:
        name, kind, value = m.groups()
        what = {"int": "an integer", "float": "a number"}.get(kind, f"a valid {kind}")
        return f'invalid argument "{value}" for "{_flag(name)}" flag: it must be {what}'
    m = re.fullmatch(r"argument (\S+): expected (?:one|at least one) argument", message)
    if m:
        return f"flag needs an argument: {_flag(m.group(1)).split(', ')[-1]}"
    m = re.fullmatch(r"unrecognized arguments: (.*)", message)
    if m:
        return unknown_words(parser.prog, m.group(1).split())
    return message


def unknown_words(prog: str, words: list[str]) -> str:
    """Words on a command line that no flag or argument of `prog` takes."""
    first = words[0]
    if first.startswith("--"):
        return f"unknown flag: {first.split('=')[0]}"
    if first.startswith("-") and len(first) > 1:
        return f"unknown shorthand flag: '{first[1]}' in {first}"
    parser = _PARSERS.get(prog)
    positionals = [a for a in parser._actions if not a.option_strings] if parser else []
    most = sum(1 for a in positionals if a.nargs in (None, "?"))
    if most == 0:
        return f'"{prog}" accepts no arguments.'
    return f'"{prog}" requires at most {most} argument{"s" if most > 1 else ""}.'


def _flag(name: str) -> str:
    """argparse's `-t/--time` is pflag's `-t, --time`."""
    return ", ".join(name.split("/"))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for `command` only (None: every command, for help and unknown ones)."""
    from importlib import import_module

    parser = _parser_class()(
        prog="netctl",
        description="Container networking without a daemon: CNI plugins, networks and a thin runtime.",
    )
    parser.add_argument("--version", "-v", action="version", version=version())
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and every command run"
    )
    sub = parser.add_subparsers(dest="netctl_command", required=True, metavar="COMMAND")
    if command in COMMANDS:
        # Only this command's parser is built: each costs about a millisecond, and a
        # module registers every command of its group.
        import_module(f"pycni.runtime.{COMMANDS[command]}").register(_OnlyCommand(sub, command))
    else:
        for name in dict.fromkeys(COMMANDS.values()):
            import_module(f"pycni.runtime.{name}").register(sub)
    return parser


class _OnlyCommand:
    """The sub-parsers action as a command module sees it, building only `command`'s
    parser; every other add_parser() answers a stand-in that takes any call."""

    def __init__(self, sub: argparse._SubParsersAction, command: str) -> None:
        self._sub = sub
        self._command = command

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name == self._command or self._command in kwargs.get("aliases", ()):
            return self._sub.add_parser(name, **kwargs)
        return _Ignored()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._sub, attr)


class _Ignored:
    def __getattr__(self, attr: str) -> Any:
        return lambda *args, **kwargs: self


def _command_word(argv: list[str]) -> str | None:
    for word in argv:
        if word == "--debug":
            continue
        return word if word in COMMANDS else None
    return None


# -- the hot commands without argparse ---------------------------------------------------


class _Args:
    """The namespace argparse would have built for a fast-path command line."""

    def __init__(self, prog: str, **values: Any) -> None:
        self.netctl_prog = prog
        self.debug = False
        self.__dict__.update(values)


def fast_path(argv: list[str]) -> tuple[Any, _Args] | None:
    """(command function, its arguments) for the hot command lines whose every word is
    understood here; None for anything else, which argparse then parses (and refuses
    with Docker's words when wrong)."""
    if argv in (["--version"], ["-v"]):
        return _print_version, _Args("netctl")
    if not argv:
        return None
    if argv[0] == "ps":
        flags = {"all": False, "quiet": False}
        for word in argv[1:]:
            if word in ("-a", "--all"):
                flags["all"] = True
            elif word in ("-q", "--quiet"):
                flags["quiet"] = True
            elif word in ("-aq", "-qa"):
                flags["all"] = flags["quiet"] = True
            else:
                return None
        from pycni.runtime import cmd_container

        return cmd_container.cmd_ps, _Args("netctl ps", format="table", **flags)
    if argv[0] == "port" and len(argv) in (2, 3) and not any(w.startswith("-") for w in argv):
        from pycni.runtime import cmd_container

        port = argv[2] if len(argv) == 3 else None
        return cmd_container.cmd_port, _Args("netctl port", container=argv[1], port=port)
    if argv[0] == "run":
        from pycni.runtime import cmd_container

        parsed = cmd_container.fast_run_args(argv[1:])
        if parsed is None:
            return None
        return cmd_container.cmd_run, _Args("netctl run", **parsed)
    if argv[:2] in (["network", "ls"], ["network", "list"]):
        flags = {"quiet": False, "no_trunc": False}
        for word in argv[2:]:
            if word in ("-q", "--quiet"):
                flags["quiet"] = True
            elif word == "--no-trunc":
                flags["no_trunc"] = True
            else:
                return None
        return _network_ls, _Args("netctl network ls", filter=None, format="table", **flags)
    return None


def _network_ls(args: Any) -> int:
    """`network ls` [-q] [--no-trunc] read through conflist.listing (the conflist format
    only); the full command (runtime/networks.py) whenever that is not enough."""
    from pycni.runtime.conflist import listing
    from pycni.runtime.paths import Paths

    paths = Paths()
    # a member of a cluster store mirrors the store's overlay networks first: full command
    rows = None if _cluster_member(paths.daemon_config) else listing(paths)
    if rows is None:
        from pycni.runtime import cmd_network

        return cmd_network.cmd_ls(args)
    if args.quiet:
        for net_id, _name, _driver in rows:
            print(net_id if args.no_trunc else net_id[:12])
        return 0
    table = [["NETWORK ID", "NAME", "DRIVER", "SCOPE"]]
    table += [
        [i if args.no_trunc else i[:12], n, d, "global" if d == "overlay" else "local"]
        for i, n, d in rows
    ]
    print_table(table)
    return 0


def _cluster_member(daemon_config: str) -> bool:
    """daemon.json names a cluster-store (read as bytes: this is the fast path)."""
    try:
        with open(daemon_config, "rb") as fh:
            return b'"cluster-store"' in fh.read()
    except OSError:
        return False


def _print_version(args: Any) -> int:
    print(version())
    return 0


# -- errors ------------------------------------------------------------------------------


def report(exc: BaseException, prog: str) -> str:
    """What netctl prints for an error, in Docker's layout (see the module docstring)."""
    if isinstance(exc, OSError) and not isinstance(exc, UsageError):
        where = f": {exc.filename}" if exc.filename else ""
        message = f"{exc.strerror or exc}{where}"
    else:
        message = str(exc)
    if isinstance(exc, ArgumentError):
        return f"{message}\nSee '{exc.prog or prog} --help'."
    if prog == "netctl run":
        return f"netctl: {message.rstrip('.')}.\nSee 'netctl run --help'."
    return f"Error: {message}"


# True while main() has the cyclic collector off for a hot command (run.supervise
# turns it back on while a workload runs).
GC_PAUSED = False


def main(argv: list[str] | None = None) -> NoReturn:
    argv_given = argv
    argv = sys.argv[1:] if argv is None else list(argv)
    # A hot command run as a program is short (run's supervisor re-enables it while the
    # workload runs): the cyclic collector's ~17 passes cost ~2 ms of `run -p`.
    # In-process callers keep theirs as it is.
    global GC_PAUSED
    if argv_given is None and gc.isenabled():
        gc.disable()
        GC_PAUSED = True
    fast = fast_path(argv)
    if fast is None and GC_PAUSED:
        gc.enable()  # daemons, long listings: as usual
        GC_PAUSED = False
    prog = "netctl"
    debug = "--debug" in argv
    args: Any  # argparse's Namespace, or the fast path's equivalent
    try:
        first = next((w for w in argv if w != "--debug"), "")
        if first in REFUSED_COMMANDS:
            raise UsageError(refusal(first))
        if fast is not None:
            func, args = fast
        else:
            command = _command_word(argv)
            parser = build_parser(command)
            if command is None and not [w for w in argv if w != "--debug"]:
                parser.print_help()  # as `docker` alone: the help, exit 0
                sys.exit(0)
            args, extra = parser.parse_known_args(argv)
            if extra:
                raise ArgumentError(unknown_words(args.netctl_prog, extra), args.netctl_prog)
            func = args.func
        prog = args.netctl_prog
        from pycni.runtime.paths import UMASK, Paths

        os.umask(UMASK)
        _sandbox_state_dir()
        if func is not _print_version:
            Paths().check_secure()
        if debug:
            os.environ["PYCNI_DEBUG"] = "1"
        code = func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # `netctl ps | head`: the reader is gone. Quiet, and the status a program killed
        # by SIGPIPE has (what docker's own `ps | head` gives a pipefail shell).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 128 + 13
    except UsageError as exc:
        sys.stderr.write(report(exc, prog) + "\n")
        code = EXIT_NETCTL_ERROR
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        from pycni import errors

        if debug or not isinstance(exc, (errors.CniError, OSError)):
            raise
        sys.stderr.write(report(exc, prog) + "\n")
        code = EXIT_NETCTL_ERROR
    if fast is not None and argv_given is None:
        # A hot command run as a program: everything is written; skip the interpreter's
        # teardown (module and object finalisation), as the plugins do.
        sys.stdout.flush()
        sys.stderr.flush()
        linger = sys.modules.get("pycni.linger")
        if linger is not None:
            linger.before_exit()
        os._exit(code)
    sys.exit(code)


def _sandbox_state_dir() -> None:
    if os.environ.get("NETCTL_ROOT") and not os.environ.get("PYCNI_STATE_DIR"):
        # A sandboxed netctl keeps the plugins' own state (firewall records, ...) in the
        # sandbox too, for the plugins it runs and for what it does in-process.
        from pycni.runtime.paths import Paths

        os.environ["PYCNI_STATE_DIR"] = os.path.join(Paths().lib, "pycni")


if __name__ == "__main__":
    # `python -m pycni.runtime.cli`: run the imported module's main, so the exception
    # classes raised by the command modules are the ones main() catches.
    from pycni.runtime.cli import main as _main

    _main()
