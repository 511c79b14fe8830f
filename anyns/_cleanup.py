"""Cleanup stacks that stay small: ``contextlib.ExitStack`` for the fds of one spawn, lighter.

A running container keeps a few such stacks alive for as long as it runs
(trio's two-stack pattern: what is always closed, what is closed only if no
container was made). The stdlib's keep a deque (about 600 bytes even when
empty) and wrap every callback in a closure with a ``__dict__`` (about 400
bytes): at a thousand containers that was 6 KiB each, most of the
supervisor's memory per container. These keep a list, and a callback is one
small object. Same API and semantics for what anyns uses: ``callback``,
``push_async_callback`` (async only), ``pop_all``, ``close``, ``with``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, final


@final
class _Call:
    """A callback with its arguments, called with the exit details it ignores (ExitStack's protocol)."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args

    def __call__(self, *exc_details: object) -> None:
        self.fn(*self.args)


@final
class _AsyncCall:
    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args

    async def __call__(self, *exc_details: object) -> None:
        await self.fn(*self.args)


class SmallExitStack(contextlib.ExitStack):
    """``contextlib.ExitStack`` on a list, with one small object per callback."""

    def __init__(self) -> None:
        # a list does all the deque does here
        self._exit_callbacks: list[tuple[bool, Callable[..., Any]]] = []

    def callback(self, callback: Callable[..., Any], /, *args: Any, **kwds: Any) -> Callable[..., Any]:
        if kwds:
            return super().callback(callback, *args, **kwds)
        self._push_exit_callback(_Call(callback, args))  # type: ignore[attr-defined]
        return callback

    def pop_all(self) -> SmallExitStack:
        new = SmallExitStack()
        new._exit_callbacks, self._exit_callbacks = self._exit_callbacks, []
        return new


class SmallAsyncExitStack(contextlib.AsyncExitStack):
    """``contextlib.AsyncExitStack`` on a list, with one small object per callback."""

    def __init__(self) -> None:
        self._exit_callbacks: list[tuple[bool, Callable[..., Any]]] = []

    def callback(self, callback: Callable[..., Any], /, *args: Any, **kwds: Any) -> Callable[..., Any]:
        if kwds:
            return super().callback(callback, *args, **kwds)
        self._push_exit_callback(_Call(callback, args))  # type: ignore[attr-defined]
        return callback

    def push_async_callback(self, callback: Callable[..., Awaitable[Any]], /, *args: Any,
                            **kwds: Any) -> Callable[..., Awaitable[Any]]:
        if kwds:
            return super().push_async_callback(callback, *args, **kwds)
        self._push_exit_callback(_AsyncCall(callback, args), False)  # type: ignore[attr-defined]
        return callback

    def pop_all(self) -> SmallAsyncExitStack:
        new = SmallAsyncExitStack()
        new._exit_callbacks, self._exit_callbacks = self._exit_callbacks, []
        return new
