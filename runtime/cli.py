"""netctl: the command line.

One handler maps exceptions to exit codes (125 for netctl's own errors, as `docker run`
does); tracebacks only with --debug. Each command group registers its sub-parser from
its own module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pycni import errors

EXIT_NETCTL_ERROR = 125


class UsageError(Exception):
    """A mistake in what the user typed; the message says what to do instead."""


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=4) + "\n")


def _add_plugins(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="install and list the pycni plugin executables")
    psub = p.add_subparsers(dest="plugins_cmd", required=True, metavar="COMMAND")
    inst = psub.add_parser("install", help="write one executable per plugin into DIR")
    inst.add_argument(
        "--dir", required=False, help="target directory (default: netctl's own plugin dir)"
    )
    inst.set_defaults(func=cmd_plugins_install)
    lst = psub.add_parser("list", help="show which plugins are installed where, with versions")
    lst.add_argument(
        "--dir",
        action="append",
        help="directory to look in (repeatable; default: netctl's CNI path)",
    )
    lst.add_argument("--format", choices=["table", "json"], default="table")
    lst.set_defaults(func=cmd_plugins_list)


def cmd_plugins_install(args: argparse.Namespace) -> int:
    from pycni.runtime import install
    from pycni.runtime.paths import Paths

    directory = args.dir or Paths().plugin_dir
    for path in install.install(os.path.abspath(directory)):
        print(path)
    return 0


def cmd_plugins_list(args: argparse.Namespace) -> int:
    from pycni.runtime import install
    from pycni.runtime.paths import Paths

    dirs = args.dir or Paths().cni_path()
    entries = install.listing([os.path.abspath(d) for d in dirs])
    if args.format == "json":
        print_json(entries)
        return 0
    print(f"{'PLUGIN':<12} {'PROVIDER':<9} {'VERSION':<8} {'CNI VERSIONS':<42} PATH")
    for e in entries:
        versions = e.get("cniVersions") or []
        span = f"{versions[0]} .. {versions[-1]}" if versions else "?"
        print(
            f"{e['name']:<12} {e['provider']:<9} {e.get('version', '-'):<8} {span:<42} {e['path']}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pycni.runtime import cmd_cni

    parser = argparse.ArgumentParser(
        prog="netctl",
        description="Container networking without a daemon: CNI plugins, networks and a thin runtime.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and every command run"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_plugins(sub)
    cmd_cni.register(sub)
    for name in ("cmd_network", "cmd_container", "cmd_system", "cmd_agent"):
        try:
            module = __import__(f"pycni.runtime.{name}", fromlist=["register"])
        except ModuleNotFoundError:
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if os.environ.get("NETCTL_ROOT") and not os.environ.get("PYCNI_STATE_DIR"):
        # A sandboxed netctl keeps the plugins' own state (firewall records, ...) in the
        # sandbox too, for the plugins it runs and for what it does in-process.
        from pycni.runtime.paths import Paths

        os.environ["PYCNI_STATE_DIR"] = os.path.join(Paths().lib, "pycni")
    if args.debug:
        os.environ["PYCNI_DEBUG"] = "1"
    try:
        code = args.func(args)
    except UsageError as exc:
        sys.stderr.write(f"netctl: {exc}\nSee 'netctl {args.command} --help'.\n")
        code = EXIT_NETCTL_ERROR
    except errors.CniError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"netctl: {exc}\n")
        code = EXIT_NETCTL_ERROR
    except KeyboardInterrupt:
        code = 130
    except OSError as exc:
        if args.debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"netctl: {exc.strerror or exc}{where}\n")
        code = EXIT_NETCTL_ERROR
    sys.exit(code)


if __name__ == "__main__":
    # `python -m pycni.runtime.cli`: run the imported module's main, so the exception
    # classes raised by the command modules are the ones main() catches.
    from pycni.runtime.cli import main as _main

    _main()
