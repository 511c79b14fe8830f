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
    big = contextlib.ExitStack()
    small = SmallExitStack()
    for fd in range(3):
        big.callback(print, fd)
        small.callback(print, fd)
    big_size = sys.getsizeof(big) + sys.getsizeof(big.__dict__) + sys.getsizeof(big._exit_callbacks)  # type: ignore[attr-defined]
    for _is_sync, cb in big._exit_callbacks:  # type: ignore[attr-defined]
        big_size += sys.getsizeof(cb) + sys.getsizeof(cb.__dict__)
    small_size = sys.getsizeof(small) + sys.getsizeof(small._callbacks) + sum(map(sys.getsizeof, small._callbacks))
    assert not hasattr(small, "__dict__")
    assert small_size < big_size / 2
    small.pop_all()
    big.pop_all()


def test_the_first_error_of_a_callback_is_raised_after_all_ran() -> None:
    calls: list[str] = []

    def fail(what: str) -> None:
        calls.append(what)
        raise OSError(what)

    stack = SmallExitStack()
    stack.callback(calls.append, "last")
    stack.callback(fail, "second")
    stack.callback(fail, "first")
    with pytest.raises(OSError, match="first"):
        stack.close()
    assert calls == ["first", "second", "last"]
