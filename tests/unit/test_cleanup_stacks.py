"""The small exit stacks behave as contextlib's for what anyns uses, and stay small."""

from __future__ import annotations

import contextlib
import sys

import pytest

from anyns._cleanup import SmallAsyncExitStack, SmallExitStack


def test_callbacks_run_last_first_once_and_pop_all_moves_them() -> None:
    calls: list[int] = []
    with SmallExitStack() as stack:
        stack.callback(calls.append, 1)
        stack.callback(calls.append, 2)
    assert calls == [2, 1]
    with SmallExitStack() as stack:
        stack.callback(calls.append, 3)
        moved = stack.pop_all()
    assert calls == [2, 1]
    moved.close()
    moved.close()
    assert calls == [2, 1, 3]


def test_an_error_still_runs_every_callback_and_propagates() -> None:
    calls: list[str] = []
    with pytest.raises(KeyError), SmallExitStack() as stack:
        stack.callback(calls.append, "a")
        stack.callback(calls.append, "b")
        raise KeyError("x")
    assert calls == ["b", "a"]


async def test_async_stack_runs_sync_and_async_callbacks_in_order() -> None:
    calls: list[str] = []

    async def note(what: str) -> None:
        calls.append(what)

    async with SmallAsyncExitStack() as stack:
        stack.push_async_callback(note, "async")
        stack.callback(calls.append, "sync")
    assert calls == ["sync", "async"]
    async with SmallAsyncExitStack() as stack:
        stack.push_async_callback(note, "kept")
        stack.pop_all()
    assert calls == ["sync", "async"]


def test_smaller_than_contextlibs() -> None:
    """The point of them: per stack and per callback, less memory than ExitStack (measured, not assumed)."""
    def size(stack: contextlib.ExitStack) -> int:
        total = sys.getsizeof(stack) + sys.getsizeof(stack._exit_callbacks)  # type: ignore[attr-defined]
        for _is_sync, cb in stack._exit_callbacks:  # type: ignore[attr-defined]
            total += sys.getsizeof(cb) + sys.getsizeof(getattr(cb, "__dict__", None) or 0)
        return total

    small, big = SmallExitStack(), contextlib.ExitStack()
    for stack in (small, big):
        for fd in range(3):
            stack.callback(print, fd)
    assert size(small) < size(big) / 2
    small.pop_all()
    big.pop_all()
