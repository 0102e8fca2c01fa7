"""The first module a plugin executable imports: decide what to load, load nothing else.

VERSION and the no-command "about" need nothing but the version table, so they are
answered before the plugin module (netlink, ipaddress, ...) is imported. Every other
verb goes to the resident agent when one listens on its socket (pycni.agent_client:
stdlib only, no plugin import) and otherwise imports the plugin module and runs it
through skel in this process; when no agent is there at all, one is started on demand
for the calls that follow (agent_client.start_agent). PYCNI_AGENT=0 turns the agent
path off.

`how` is set by the compiled client (pycni/native/cniclient.c), which has already
talked to the agent and put the stdin it read back on fd 0:
  "local"  run the verb in-process, do not talk to the agent (it said "F", did not
           answer before "G", or its socket is not trusted);
  "start"  no agent listens: start one on demand, then run the verb in-process;
  "lost"   the agent's worker took the call and did not answer: CNI error 11, and the
           verb is never run again here.
`autostart` is the installed default for on-demand starts (agent_client.autostart_enabled).

A process that runs one CNI verb lives for a few milliseconds, so it skips two costs of
a long-lived interpreter (together ~10% of a bridge ADD's CPU, measured): the cyclic
garbage collector, which runs several full passes over the objects the imports create,
and the interpreter's teardown (freeing every module, object and code object one by
one), replaced by `_finish`: flush stdout and stderr, then `os._exit`. Nothing on the
verb paths needs a teardown: every file is closed by its `with`, threads are joined or
left in a kernel call that no longer matters, and the one exit hook (pycni.linger) is
called here. Without CNI_COMMAND
(the "about" text, `dhcp daemon`) the interpreter runs as usual.
"""

from __future__ import annotations

import os
import sys


def _finish(code: object) -> None:
    """Leave as `raise SystemExit(code)` would, without the interpreter's teardown."""
    if code is None:
        code = 0
    if isinstance(code, int):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # e.g. a closed pipe: the usual exit reports it
            pass
        else:
            linger = sys.modules.get("pycni.linger")
            if linger is not None:
                linger.before_exit()
            os._exit(code)
    raise SystemExit(code)


def main(name: str, module: str, how: str = "", autostart: bool = True) -> None:
    os.umask(0o022)  # skel.UMASK: state root trusts is never writable by others
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        from pycni import version

        sys.stdout.write(version.version_info_json() + "\n")
        _finish(0)
    if command:
        import gc

        gc.disable()  # one verb, then _finish: nothing lives long enough to need it
    stdin = None
    if how == "lost":
        from pycni import agent_client

        data = agent_client.read_stdin() or b""
        agent_client.write_all(1, agent_client.interrupted(data))
        raise SystemExit(1)
    if how == "start":
        from pycni import agent_client

        agent_client.start_agent(agent_client.socket_path(os.environ), autostart)
    elif how != "local" and command and os.environ.get("PYCNI_AGENT") != "0":
        from pycni import agent_client

        # Returns only when the agent did not take the invocation; stdin is consumed.
        stdin = agent_client.run(module, autostart)
    plugin = __import__(module, fromlist=["main"])
    if stdin is None:
        if not command:
            plugin.main()  # the about text, or a daemon (`dhcp daemon`): a usual exit
            return
        try:
            plugin.main()
        except SystemExit as exc:
            _finish(exc.code)
        _finish(0)
    from pycni import skel

    out, code = skel.run(plugin.VERBS, os.environ, stdin)
    if out:
        sys.stdout.write(out + "\n")
    _finish(code)
