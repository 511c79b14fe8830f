"""anyns from asyncio: ``anyns.aio.open_supervisor()``.

For asyncio programs (FastAPI, aiohttp, plain asyncio)::

    async with anyns.aio.open_supervisor() as sup:
        done = await sup.run(anyns.ContainerSpec(argv=["hostname"]), capture_stdout=True)

The bridge: one dedicated thread runs a trio loop holding an ordinary
``anyns.Supervisor`` (its zygote, and so every container's parent, is that
thread, which lives exactly as long as the ``async with``). Each ``run`` is
handed to that loop with ``TrioToken.run_sync_soon`` and its outcome comes
back with ``loop.call_soon_threadsafe``: no polling, no thread per call,
results and exceptions as they are (the same anyns types). Cancelling the
asyncio task cancels the trio task, and the asyncio side waits until the
container has been killed and reaped before it sees ``CancelledError``, so
nothing outlives the call on either side. This was chosen over trio-asyncio
or anyio: no extra dependency, and one thread hop per call (tens of µs)
against the millisecond a container takes.

``anyns.PIPE`` (streams) and ``nursery.start`` have no asyncio form here:
use ``run`` with bytes in and captured output out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar, final

import trio

from ._container import CompletedContainer
from ._errors import ZygoteError
from ._spec import ContainerSpec
from ._stdio import PIPE
from ._supervisor import Supervisor, check_max_containers
from ._supervisor import open_supervisor as _open_trio_supervisor

__all__ = ["AsyncioSupervisor", "open_supervisor"]

T = TypeVar("T")


class _Call:
    """One call's state, shared by the two loops (each field written by one side only)."""

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None  # trio side
        self.cancel_requested = False  # trio side (set through run_sync_soon)


class _TrioThread:
    """A trio loop in its own thread, holding one anyns Supervisor."""

    def __init__(self, max_containers: int | None) -> None:
        self._max_containers = max_containers
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self.supervisor: Supervisor | None = None
        self._thread = threading.Thread(target=self._main, name="anyns-trio", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as e:  # reported to the asyncio side
            self._error = e
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        async with (_open_trio_supervisor(max_containers=self._max_containers) as supervisor,
                    trio.open_nursery() as nursery):
            self.supervisor = supervisor
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()  # calls still running are cancelled, and reap their containers

    async def started(self) -> None:
        await asyncio.to_thread(self._ready.wait)
        if self._error is not None or self._token is None:
            raise ZygoteError(f"the anyns trio thread failed to start: {self._error}") from self._error

    async def call(self, afn: Callable[[], Awaitable[T]]) -> T:
        """Run ``afn()`` in the trio loop; return or raise its outcome here."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()
        finished: asyncio.Future[None] = loop.create_future()
        call = _Call()
        assert self._token is not None and self._nursery is not None
        nursery = self._nursery

        def deliver(outcome: tuple[bool, Any] | None) -> None:
            if not result.done():
                if outcome is None:
                    result.cancel()
                elif outcome[0]:
                    result.set_result(outcome[1])
                else:
                    result.set_exception(outcome[1])
            finished.set_result(None)

        async def task() -> None:
            outcome: tuple[bool, Any] | None = None
            try:
                with trio.CancelScope() as scope:
                    call.scope = scope
                    if call.cancel_requested:
                        scope.cancel()
                    try:
                        outcome = (True, await afn())
                    except trio.Cancelled:
                        raise
                    except BaseException as e:  # handed to the asyncio caller as it is
                        outcome = (False, e)
            finally:
                loop.call_soon_threadsafe(deliver, outcome)

        def cancel() -> None:
            call.cancel_requested = True
            if call.scope is not None:
                call.scope.cancel()

        try:
            self._token.run_sync_soon(nursery.start_soon, task)
        except trio.RunFinishedError:
            raise ZygoteError("the anyns supervisor is closed") from None
        try:
            return await result
        except asyncio.CancelledError:
            # Cancel the trio side and wait until its container is reaped.
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(cancel)
            await asyncio.shield(finished)
            raise

    async def close(self) -> None:
        if self._token is not None and self._stop is not None:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stop.set)
        await asyncio.to_thread(self._thread.join)


@final
class AsyncioSupervisor:
    """The asyncio face of an ``anyns.Supervisor``; made by ``anyns.aio.open_supervisor()``."""

    def __init__(self, bridge: _TrioThread) -> None:
        self._bridge = bridge

    async def run(self, spec: ContainerSpec, **options: Any) -> CompletedContainer:
        """``Supervisor.run(spec, **options)``, awaited from asyncio.

        Same options (``stdin`` bytes/None/DEVNULL/fd, ``capture_stdout``,
        ``capture_stderr``, ``stdout``, ``stderr``, ``check``, ``max_output``, ``collect``)
        and the same results and exceptions (``CompletedContainer.exceeded``
        when a budget ran out); ``anyns.PIPE`` is not available here.
        """
        if PIPE in (options.get("stdin"), options.get("stdout"), options.get("stderr")):
            raise ValueError("anyns.PIPE has no asyncio form: pass bytes as stdin and capture the output")
        supervisor = self._bridge.supervisor
        assert supervisor is not None
        return await self._bridge.call(lambda: supervisor.run(spec, **options))


@asynccontextmanager
async def open_supervisor(*, max_containers: int | None = None) -> AsyncIterator[AsyncioSupervisor]:
    """Start a supervisor for asyncio code; on exit, kill and reap every container it started.

    ``max_containers``: as for ``anyns.open_supervisor``, spawns beyond it wait.
    """
    check_max_containers(max_containers)
    bridge = _TrioThread(max_containers)
    try:
        await bridge.started()
        yield AsyncioSupervisor(bridge)
    finally:
        await bridge.close()
