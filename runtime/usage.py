"""The errors of what a user typed, shared by the domain (run.py, ...) and the CLI.

    UsageError        a request netctl refuses, in Docker's words ("No such container: web")
     +-- ArgumentError  the command line itself is wrong (a flag, a missing argument): the
                        CLI adds Docker's hint, `See 'netctl CMD --help'.`

Both exit 125, as Docker's own errors do. Kept apart from runtime/cli.py so that the
domain never imports the user interface.
"""

from __future__ import annotations


class UsageError(Exception):
    """A mistake in what the user asked for; the message says what to do instead."""


class ArgumentError(UsageError):
    """A mistake in the command line's flags or arguments; `prog` is the command
    ("netctl exec") whose help the hint names, "" for the one being run."""

    def __init__(self, msg: str, prog: str = "") -> None:
        super().__init__(msg)
        self.prog = prog
