"""`netctl system prune|gc|reload`: housekeeping."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from pycni.runtime.run import Runtime


def _runtime() -> Runtime:
    from pycni.runtime.run import Runtime

    return Runtime()


def cmd_prune(args: argparse.Namespace) -> int:
    removed = _runtime().prune()
    if removed:
        print("Deleted Containers:")
        for cid in removed:
            print(cid)
    print(f"Total reclaimed containers: {len(removed)}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from pycni.runtime import gc

    for line in gc.system_gc(_runtime()):
        print(line)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    from pycni.runtime import gc

    for line in gc.reload(_runtime()):
        print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    system = sub.add_parser("system", help="housekeeping")
    ssub = system.add_subparsers(dest="system_cmd", required=True, metavar="COMMAND")
    ssub.add_parser(
        "prune", help="remove exited containers and release their resources"
    ).set_defaults(func=cmd_prune)
    ssub.add_parser(
        "gc", help="CNI GC for every network against the containers that exist"
    ).set_defaults(func=cmd_gc)
    ssub.add_parser("reload", help="re-apply saved firewall state (after a flush)").set_defaults(
        func=cmd_reload
    )
