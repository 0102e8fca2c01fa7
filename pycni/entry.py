"""The first module a plugin executable imports: decide what to load, load nothing else.

VERSION and the no-command "about" need nothing but the version table, so they are
answered before the plugin module (netlink, ipaddress, ...) is imported. Every other
verb goes to the resident agent when one listens on its socket (pycni.agent_client:
stdlib only, no plugin import) and otherwise imports the plugin module and runs it
through skel in this process. PYCNI_AGENT=0 turns the agent path off.
"""

from __future__ import annotations

import os
import sys


def main(name: str, module: str) -> None:
    os.umask(0o022)  # skel.UMASK: state root trusts is never writable by others
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        from pycni import version

        sys.stdout.write(version.version_info_json() + "\n")
        sys.stdout.flush()
        raise SystemExit(0)
    stdin = None
    if command and os.environ.get("PYCNI_AGENT") != "0":
        from pycni import agent_client

        # Returns only when the agent did not take the invocation; stdin is consumed.
        stdin = agent_client.run(module)
    plugin = __import__(module, fromlist=["main"])
    if stdin is None:
        plugin.main()
        return
    from pycni import skel

    out, code = skel.run(plugin.VERBS, os.environ, stdin)
    if out:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    raise SystemExit(code)
