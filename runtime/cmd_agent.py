"""`netctl agent`: run the resident agent that makes plugin calls cheap (runtime/agent.py)."""

from __future__ import annotations

import argparse
import os
import sys

from pycni.runtime import agent


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agent",
        help="run the resident plugin agent (plugins hand their calls to it over a unix socket)",
        description=(
            "Keep every pycni plugin loaded and run plugin calls in forked workers that join "
            "the caller's namespaces. Plugins find the agent at $PYCNI_AGENT_SOCKET or "
            f"{agent.wire.DEFAULT_SOCKET}; without it they run on their own."
        ),
    )
    p.add_argument(
        "--socket",
        default=None,
        help=f"unix socket path (default: $PYCNI_AGENT_SOCKET or {agent.wire.DEFAULT_SOCKET})",
    )
    p.add_argument(
        "--foreground",
        action="store_true",
        help="stay in the foreground (systemd, tests); otherwise detach once listening",
    )
    p.add_argument(
        "--max-workers",
        type=int,
        default=agent.DEFAULT_MAX_WORKERS,
        help="calls served at once; more wait (default: %(default)s)",
    )
    p.add_argument(
        "--spare",
        type=int,
        default=agent.DEFAULT_SPARE,
        help="workers forked ahead, waiting for calls (default: %(default)s)",
    )
    p.add_argument("--verbose", action="store_true", help="log every call served")
    p.add_argument("--log-file", help="append the agent's log here when detached")
    p.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace) -> int:
    from pycni.runtime.cli import UsageError

    if args.max_workers < 1:
        raise UsageError("--max-workers must be at least 1")
    if args.spare < 1:
        raise UsageError("--spare must be at least 1")
    agent.VERBOSE = args.verbose
    server = agent.Agent(args.socket or agent.default_socket(), args.max_workers, args.spare)
    # Load before binding: a client that connects always meets a warm agent.
    server.load()
    server.bind()
    if args.foreground:
        server.serve(on_ready=lambda: agent.notify_systemd("READY=1"))
        return 0
    pid = os.fork()
    if pid:
        # The socket is listening already, so a caller can use it as soon as we return.
        if server.listener is not None:
            server.listener.close()  # the child's now; close() would unlink the socket
        print(f"pycni agent listening on {server.path} (pid {pid})")
        sys.stdout.flush()
        os._exit(0)
    os.setsid()
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    log_fd = (
        os.open(args.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if args.log_file
        else devnull
    )
    for fd, target in ((0, devnull), (1, devnull), (2, log_fd)):
        os.dup2(target, fd)
    server.serve()
    os._exit(0)
