"""The teardown pacer: at most ``limit`` turns out, the others served in arrival order, uncancellably."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from anyns._pacing import Pacer


@pytest.mark.parametrize("limit", [1, 3])
async def test_at_most_limit_turns_out_in_arrival_order(limit: int) -> None:
    """``limit`` turns for ten tasks: never more held; handed on first come, first served."""
    pacer = Pacer(limit)
    held = most = 0
    order: list[int] = []

    async def one(i: int) -> None:
        nonlocal held, most
        await pacer.turn()
        held += 1
        most = max(most, held)
        order.append(i)
        await trio.sleep(0.01)
        held -= 1
        pacer.done()

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()  # so that they arrive in this order
    assert most == limit
    if limit == 1:  # with more, the tasks handed a turn in one loop iteration run in any order
        assert order == list(range(10))
    assert held == 0


async def test_a_free_turn_does_not_yield() -> None:
    """A turn that is free is taken without a checkpoint: cleanup in a cancelled scope goes on at once."""
    pacer = Pacer(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await pacer.turn()  # no Cancelled: it did not checkpoint
        pacer.done()
    assert not scope.cancelled_caught


async def test_waiting_for_a_turn_is_not_cancelled() -> None:
    """A task waiting for a turn in a cancelled scope gets its turn all the same (its cleanup must run)."""
    pacer = Pacer(1)
    await pacer.turn()
    got: list[str] = []

    async def waiter() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await pacer.turn()
            got.append("turn")
            pacer.done()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        pacer.done()
    assert got == ["turn"]
