"""`netctl plugins install|list`: the pycni plugin executables other CNI runtimes run."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pycni.runtime.cli import print_json

if TYPE_CHECKING:
    import argparse


def cmd_install(args: argparse.Namespace) -> int:
    from pycni.runtime import install
    from pycni.runtime.paths import Paths

    directory = args.dir or Paths().plugin_dir
    for path in install.install(os.path.abspath(directory)):
        print(path)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from pycni.runtime import install
    from pycni.runtime.paths import Paths

    dirs = args.dir or Paths().cni_path()
    entries = install.listing([os.path.abspath(d) for d in dirs])
    if args.format == "json":
        print_json(entries)
        return 0
    print(f"{'PLUGIN':<12} {'PROVIDER':<9} {'VERSION':<8} {'CNI VERSIONS':<42} PATH")
    for e in entries:
        versions = e.get("cniVersions")
        versions = versions if isinstance(versions, list) else []
        span = f"{versions[0]} .. {versions[-1]}" if versions else "?"
        print(
            f"{e['name']:<12} {e['provider']:<9} {e.get('version', '-'):<8} {span:<42} {e['path']}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="install and list the pycni plugin executables")
    psub = p.add_subparsers(dest="plugins_cmd", required=True, metavar="COMMAND")
    inst = psub.add_parser("install", help="write one executable per plugin into DIR")
    inst.add_argument(
        "--dir", required=False, help="target directory (default: netctl's own plugin dir)"
    )
    inst.set_defaults(func=cmd_install)
    lst = psub.add_parser("list", help="show which plugins are installed where, with versions")
    lst.add_argument(
        "--dir",
        action="append",
        help="directory to look in (repeatable; default: netctl's CNI path)",
    )
    lst.add_argument("--format", choices=["table", "json"], default="table")
    lst.set_defaults(func=cmd_list)
