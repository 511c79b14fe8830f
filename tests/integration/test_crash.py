"""Nothing outlives its owner: a killed supervisor, or runs cancelled at random points."""

from __future__ import annotations

import functools
import os
import random
import signal
import textwrap

import trio
from _proc import process_state
from _util import supervisor_process, wait_all_exited

import anyns

_SCRIPT = textwrap.dedent(
    """
    import functools, trio, anyns

    async def main():
        spec = anyns.ContainerSpec(argv=["sleep", "1000"])
        async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
            run = functools.partial(sup.run, check=False)
            boxes = [await nursery.start(run, spec) for _ in range(20)]
            print(sup._zygote.process.pid, *(b.pid for b in boxes), flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


def test_supervisor_killed_takes_zygote_and_containers_along() -> None:
    """SIGKILL of the supervisor process: within a second, no zygote and no container is left."""
    with supervisor_process(_SCRIPT) as (proc, pidfds):
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 21
        assert all(process_state(pid) not in (None, "Z") for pid in pids)
        pidfds.extend(os.pidfd_open(pid) for pid in pids)

        proc.send_signal(signal.SIGKILL)
        proc.wait()

        assert wait_all_exited(pidfds, timeout=1.0) == []


def _gone(pids: list[int]) -> bool:
    return not any(os.path.exists(f"/proc/{pid}") for pid in pids)


async def test_cancelled_runs_leave_nothing_behind() -> None:
    """Runs cancelled at random points: each container is reaped by the time its run returns."""
    rng = random.Random(7)
    specs = [
        anyns.ContainerSpec(argv=["sleep", "0.05"]),
        anyns.ContainerSpec(argv=["cat"]),
        anyns.ContainerSpec(argv=["true"]),
    ]
    pids: list[int] = []
    leftovers: list[int] = []
    limiter = trio.CapacityLimiter(16)
    async with anyns.open_supervisor() as sup:

        async def one() -> None:
            mine: list[int] = []
            async with limiter, trio.open_nursery() as outer:
                # the cancel lands before the spawn, during setup, or while it runs
                outer.cancel_scope.deadline = trio.current_time() + rng.random() * 0.02
                async with trio.open_nursery() as nursery:
                    box = await nursery.start(functools.partial(sup.run, check=False), rng.choice(specs))
                    mine.append(box.pid)
            pids.extend(mine)
            if not _gone(mine):
                leftovers.extend(mine)

        async with trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(one)
        assert sup._running == set()
    assert pids, "no container started at all: the test proves nothing"
    assert leftovers == []
