"""Fault injection for tests: inert unless PYCNI_FAULT is set.

PYCNI_FAULT=<point>         the plugin SIGKILLs itself at that mutation point
PYCNI_FAULT=fail:<point>    the plugin raises an error there (tests rollback)

Points are named after what has just been done: "after-ipam", "after-veth",
"after-addresses", "after-routes", "after-firewall", ...
"""

from __future__ import annotations

import os

from pycni import errors

_SPEC = os.environ.get("PYCNI_FAULT", "")


def point(name: str) -> None:
    if not _SPEC:
        return
    if name == _SPEC:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if f"fail:{name}" == _SPEC:
        raise errors.CniError(f"injected failure at {name}", "PYCNI_FAULT is set (tests only)")
