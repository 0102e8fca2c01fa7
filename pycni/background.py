"""One function in a thread of its own, joined later: for a plugin's teardown, whose
kernel removal of a netdevice waits for RCU grace periods (~10-20 ms inside the netlink
call) while the caller's thread releases the address and the firewall entries; and for
ptp's ADD, whose veth is made while IPAM allocates.

Made with `_thread`: `threading` costs about 2 ms to import, a share of a plugin's
whole start-up. A BaseException the function ends with is raised again by `join`;
otherwise `join` returns what the function returned.
"""

from __future__ import annotations

import _thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Background:
    __slots__ = ("_crashed", "_done", "_result")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._crashed: list[BaseException] = []
        self._result: list[Any] = []
        self._done = _thread.allocate_lock()
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
        self._done.acquire()
        self._done.release()
        if self._crashed:
            raise self._crashed[0]
        return self._result[0]
