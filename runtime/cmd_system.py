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
    """Docker's `system prune`: stopped containers, then networks no container uses
    (never the default one); asks first unless -f."""
    import sys

    if not args.force:
        sys.stdout.write(
            "WARNING! This will remove:\n"
            "  - all stopped containers\n"
            "  - all networks not used by at least one container\n"
            "\nAre you sure you want to continue? [y/N] "
        )
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    removed = _runtime().prune()
    if removed:
        print("Deleted Containers:")
        for cid in removed:
            print(cid)
        print()
    from pycni.runtime.networks import NetworkStore

    networks, warnings = NetworkStore().prune()
    for line in warnings:
        sys.stderr.write(f"WARNING: {line}\n")
    if networks:
        print("Deleted Networks:")
        for name in networks:
            print(name)
        print()
    print(f"Total reclaimed containers: {len(removed)}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from pycni.runtime import gc

    for line in gc.system_gc(_runtime()):
        print(line)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    from pycni.runtime import gc

    rt = _runtime()
    for line in gc.reload(rt):
        print(line)
    rt.names_changed()  # the embedded resolver, from the records (started if needed)
    import os

    from pycni.runtime import overlay_networks

    for line in overlay_networks.reload(os.environ.get("PYCNI_STATE_DIR") or "/var/lib/pycni"):
        print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    system = sub.add_parser("system", help="housekeeping")
    ssub = system.add_subparsers(dest="system_cmd", required=True, metavar="COMMAND")
    prune = ssub.add_parser(
        "prune", help="remove exited containers and unused networks, and release their resources"
    )
    prune.add_argument("-f", "--force", action="store_true", help="do not prompt")
    prune.set_defaults(func=cmd_prune)
    ssub.add_parser(
        "gc", help="CNI GC for every network against the containers that exist"
    ).set_defaults(func=cmd_gc)
    ssub.add_parser(
        "reload", help="re-apply saved firewall state (after a flush), re-program overlays"
    ).set_defaults(func=cmd_reload)
