"""One function in a thread of its own, joined later: for a plugin's teardown, whose
kernel removal of a netdevice waits for RCU grace periods (~10-20 ms inside the netlink
call) while the caller's thread releases the address and the firewall entries.

Made with `_thread`: `threading` costs about 2 ms to import, a share of a plugin's
whole start-up. A BaseException the function ends with is raised again by `join`.
"""

from __future__ import annotations

import _thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Background:
    __slots__ = ("_crashed", "_done")

    def __init__(self, fn: Callable[[], object]) -> None:
        self._crashed: list[BaseException] = []
        self._done = _thread.allocate_lock()
        self._done.acquire()

        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                self._crashed.append(exc)
            finally:
                self._done.release()

        _thread.start_new_thread(run, ())

    def join(self) -> None:
        """Wait for the function; raise what it raised, if anything."""
        self._done.acquire()
        self._done.release()
        if self._crashed:
            raise self._crashed[0]
