"""Cleanup stacks that stay small: ``contextlib.ExitStack``'s job for the fds of one spawn, lighter.

A running container keeps a few such stacks alive for as long as it runs
(trio's two-stack pattern: what is always closed, what is closed only if no
container was made). The stdlib's keep a ``__dict__`` and a deque (about 600
bytes even when empty) and wrap every callback in a closure with a
``__dict__`` (about 400 bytes): at a thousand containers that was 6 KiB of
the supervisor's memory each. These keep a list in a slot, and a callback
is a tuple. What anyns uses of ExitStack: ``callback``, ``pop_all``,
``close``, ``with``; and of AsyncExitStack also ``push_async_callback``.

As with ExitStack, the callbacks run last first, every one of them even if
one raises; the first error raised is re-raised afterwards (a later one is
chained to it as its context), and none suppresses the error that left the
``with`` block.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


class SmallExitStack:
    """Callbacks run when the ``with`` block is left (or ``close``), last first."""

    __slots__ = ("_callbacks",)

    def __init__(self) -> None:
        #: (is it a coroutine function, the callable, its arguments)
        self._callbacks: list[tuple[bool, Callable[..., Any], tuple[Any, ...]]] = []

    def callback(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Call ``fn(*args)`` at the end."""
        self._callbacks.append((False, fn, args))

    def pop_all(self) -> SmallExitStack:
        """A new stack with this one's callbacks; this one is left empty."""
        new = type(self)()
        new._callbacks, self._callbacks = self._callbacks, []
        return new

    def close(self) -> None:
        """Run the callbacks now (each once)."""
        first: BaseException | None = None
        while self._callbacks:
            _is_async, fn, args = self._callbacks.pop()
            try:
                fn(*args)
            except BaseException as e:
                first = first or e
        if first is not None:
            raise first

    def __enter__(self) -> SmallExitStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SmallAsyncExitStack(SmallExitStack):
    """``SmallExitStack`` that also takes coroutine functions, used with ``async with``."""

    __slots__ = ()

    def push_async_callback(self, fn: Callable[..., Awaitable[Any]], /, *args: Any) -> None:
        """Await ``fn(*args)`` at the end."""
        self._callbacks.append((True, fn, args))

    def pop_all(self) -> SmallAsyncExitStack:
        new = type(self)()
        new._callbacks, self._callbacks = self._callbacks, []
        return new

    async def aclose(self) -> None:
        """Run the callbacks now (each once), awaiting the async ones."""
        first: BaseException | None = None
        while self._callbacks:
            is_async, fn, args = self._callbacks.pop()
            try:
                if is_async:
                    await fn(*args)
                else:
                    fn(*args)
            except BaseException as e:
                first = first or e
        if first is not None:
            raise first

    async def __aenter__(self) -> SmallAsyncExitStack:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
