"""Teardown in small steps: at most a few containers between their SIGKILL and their reap at once.

Cancelling a nursery that holds a thousand running containers wakes a
thousand ``run`` tasks in one step of the trio loop. If each of them then
closed its fds, killed its container and waited for it, that one loop
iteration would do a thousand kills (each wakes a dying pid namespace that
competes with the loop for a CPU), and the thousand exits would come back as
one herd: one iteration reaping hundreds. The loop was measured late by
260-340 ms on 2 CPUs, where spawning a thousand keeps it within ~50 ms.

A ``Pacer`` lets at most ``limit`` containers be torn down at once: a task
that is to kill its container first takes a turn (at once when one is free,
else it parks, uncancellably, in arrival order) and gives it back once the
container is reaped. The first loop iteration after a mass cancellation then
only unwinds the tasks to their turn; the kills, the exits and the reaps come
``limit`` at a time, each a small loop iteration. Every container is still
killed and reaped before its ``run`` returns; only the order is paced.
"""

from __future__ import annotations

import collections
from typing import Final, final

import trio

#: containers at most between their SIGKILL and their reap at once (teardown of many)
TEARDOWN_PACE: Final = 32
#: seconds a turn is held at most while its container dies: one slow to die (a process in an
#: uninterruptible sleep) keeps its own run waiting, but lets the next one go on
TURN_HOLD: Final = 1.0


def _refuse(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


@final
class Pacer:
    """At most ``limit`` turns out at once; the others wait for theirs, first come first served."""

    __slots__ = ("_free", "_waiting")

    def __init__(self, limit: int = TEARDOWN_PACE) -> None:
        self._free = limit
        self._waiting: collections.deque[trio.lowlevel.Task] = collections.deque()

    async def turn(self) -> None:
        """Take a turn: at once (no checkpoint) when one is free, else wait for one; give it back with ``done``.

        Uncancellable: it is awaited in cleanup, which has to run to the end
        whatever is cancelled around it, and a turn always comes (each holder
        gives its own back within about ``TURN_HOLD``).
        """
        if self._free > 0:
            self._free -= 1
            return
        self._waiting.append(trio.lowlevel.current_task())
        await trio.lowlevel.wait_task_rescheduled(_refuse)

    def done(self) -> None:
        """Give a turn back: to the task that has waited longest, if any."""
        if self._waiting:
            trio.lowlevel.reschedule(self._waiting.popleft())
        else:
            self._free += 1
