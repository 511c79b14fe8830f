"""More distinct specs than the plan cache holds: evicted plans are dropped and rebuilt on demand."""

from __future__ import annotations

import trio

import anyns
from anyns._zygote_client import MAX_PLANS


async def test_more_specs_than_the_cache_holds(sup: anyns.Supervisor) -> None:
    """MAX_PLANS + 50 distinct specs all run, and the first again after it was evicted."""
    count = MAX_PLANS + 50
    seen: list[bytes] = []
    limiter = trio.CapacityLimiter(16)

    async def one(i: int) -> None:
        async with limiter:
            done = await sup.run(anyns.ContainerSpec(argv=["echo", f"spec-{i}"]), capture_stdout=True)
            seen.append(done.stdout or b"")

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    again = await sup.run(anyns.ContainerSpec(argv=["echo", "spec-0"]), capture_stdout=True)

    assert sorted(seen) == sorted(f"spec-{i}\n".encode() for i in range(count))
    assert again.stdout == b"spec-0\n"
    assert len(sup._plans) <= MAX_PLANS
