"""The first module a plugin executable imports: decide what to load, load nothing else.

VERSION and the no-command "about" need nothing but the version table, so they are
answered before the plugin module (netlink, ipaddress, ...) is imported. Every other
verb imports the plugin module and runs it through skel.
"""

from __future__ import annotations

import os
import sys


def main(name: str, module: str) -> None:
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        from pycni import version

        sys.stdout.write(version.version_info_json() + "\n")
        sys.stdout.flush()
        raise SystemExit(0)
    plugin = __import__(module, fromlist=["main"])
    plugin.main()
