"""`netctl graph`: the picture of this host's networks, containers and published ports,
as Graphviz DOT, mermaid, text, or SVG (laid out by Graphviz)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from pycni.runtime.usage import UsageError

if TYPE_CHECKING:
    import argparse

FORMATS = ("dot", "mermaid", "text", "svg")


def cmd_graph(args: argparse.Namespace) -> int:
    from pycni.runtime import graph

    g = graph.from_store(only=args.networks or None)
    if args.format == "svg":
        try:
            out = g.to_svg()
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
    else:
        out = {"dot": g.to_dot, "mermaid": g.to_mermaid, "text": g.to_text}[args.format]()
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(out)
    else:
        sys.stdout.write(out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "graph",
        help="draw networks, containers and published ports (DOT, mermaid, text or SVG)",
    )
    p.add_argument("networks", nargs="*", metavar="NETWORK", help="only these networks")
    p.add_argument("--format", choices=FORMATS, default="dot", help="output format (default dot)")
    p.add_argument("-o", "--output", default="", metavar="FILE", help="write to FILE")
    p.set_defaults(func=cmd_graph)
