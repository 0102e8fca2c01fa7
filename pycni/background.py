"""One function in a thread of its own, joined later: for a plugin's teardown, whose
kernel removal of a netdevice waits for RCU grace periods (~10-20 ms inside the netlink
call) while the caller's thread releases the address and the firewall entries; and for
ptp's ADD, whose veth is made while IPAM allocates.

Made with `_thread`: `threading` costs about 2 ms to import, a share of a plugin's
whole start-up. A BaseException the function ends with is raised again by `join`;
otherwise `join` returns what the function returned.

`for_teardown(fn)`: a link's removal, overlapped where that pays. In the agent's workers
(linger.MODE "thread") the removal's request waits in a thread anyway. In a short-lived
process ("process") the request is sent by a forked child (linger.detach), and a second
thread of ours running beside it cost more than the overlap saves: while the child
lives every page this process writes is copied, and the two threads take turns at the
GIL (bridge DEL in `netctl run -p`: 9.6-9.7 ms overlapped, 6.8-7.8 ms with the removal
last). There the function runs in `join`, after the caller's other steps.
"""

from __future__ import annotations

import _thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Background:
    __slots__ = ("_crashed", "_deferred", "_done", "_result")

    def __init__(self, fn: Callable[[], Any], deferred: bool = False) -> None:
        self._crashed: list[BaseException] = []
        self._result: list[Any] = []
        self._deferred: Callable[[], Any] | None = fn if deferred else None
        self._done = _thread.allocate_lock()
        if deferred:
            return
        self._done.acquire()

        def run() -> None:
            try:
                self._result.append(fn())
            except BaseException as exc:
                self._crashed.append(exc)
            finally:
                self._done.release()

        _thread.start_new_thread(run, ())

    def join(self) -> Any:
        """Wait for the function; raise what it raised, else return what it returned."""
        fn, self._deferred = self._deferred, None
        if fn is not None:
            try:
                self._result.append(fn())
            except BaseException as exc:
                self._crashed.append(exc)
        self._done.acquire()
        self._done.release()
        if self._crashed:
            raise self._crashed[0]
        return self._result[0]


def for_teardown(fn: Callable[[], Any]) -> Background:
    """A link's removal beside the caller's other teardown steps, or after them, as
    pays in this process (see the module's docstring)."""
    from pycni import linger

    return Background(fn, deferred=linger.MODE != "thread")
