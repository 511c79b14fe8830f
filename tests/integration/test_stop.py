"""Container.stop(grace) and ContainerSpec.stop_grace: SIGTERM first, SIGKILL after the grace period."""

from __future__ import annotations

import pathlib
from functools import partial

import trio
from _util import sh_spec

import anyns
from anyns import Bind

# A pid-1 shell that exits 0 on SIGTERM; `echo ready` tells the test the trap is set.
TRAPS_TERM = 'trap "exit 0" TERM; echo ready; while :; do sleep 0.02; done'
IGNORES_TERM = 'trap "" TERM; echo ready; while :; do sleep 0.02; done'


async def _started(sup: anyns.Supervisor, nursery: trio.Nursery, script: str, **fields: object
                   ) -> anyns.Container:
    container: anyns.Container = await nursery.start(
        lambda task_status: sup.run(sh_spec(script, **fields), stdout=anyns.PIPE, check=False,
                                    task_status=task_status))
    assert container.stdout is not None
    assert await container.stdout.receive_some(6) == b"ready\n"
    await container.stdout.aclose()  # the caller owns a PIPE stream; nothing more is written to it
    return container


async def test_stop_ends_a_program_that_handles_sigterm(sup: anyns.Supervisor) -> None:
    """stop() sends SIGTERM; a program that exits on it is reaped with its own status, well before the grace."""
    async with trio.open_nursery() as nursery:
        container = await _started(sup, nursery, TRAPS_TERM)
        start = trio.current_time()
        assert await container.stop(grace=10) == 0
        assert trio.current_time() - start < 5
        assert container.returncode == 0
        assert not await trio.Path(f"/proc/{container.pid}").exists()


async def test_stop_kills_a_program_ignoring_sigterm_after_the_grace(sup: anyns.Supervisor) -> None:
    """A program that ignores SIGTERM is SIGKILLed once the grace period is over, and reaped."""
    async with trio.open_nursery() as nursery:
        container = await _started(sup, nursery, IGNORES_TERM)
        start = trio.current_time()
        assert await container.stop(grace=0.3) == -9
        assert trio.current_time() - start >= 0.3
        assert not await trio.Path(f"/proc/{container.pid}").exists()


async def test_stop_after_exit_returns_the_status(sup: anyns.Supervisor) -> None:
    """stop() on a container that already ended just returns its returncode."""
    async with trio.open_nursery() as nursery:
        container = await nursery.start(partial(sup.run, sh_spec("exit 7"), check=False))
        assert await container.wait() == 7
        assert await container.stop() == 7


async def test_cancelled_run_honours_stop_grace(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """With stop_grace, cancelling run() sends SIGTERM first: the program's handler runs, then it is reaped."""
    script = f'trap "echo cleaned > /out/mark; exit 0" TERM; {IGNORES_TERM.split("; ", 1)[1]}'
    async with trio.open_nursery() as nursery:
        container = await _started(sup, nursery, script, stop_grace=5, mounts=[Bind(tmp_path, "/out")])
        nursery.cancel_scope.cancel()
    assert container.returncode == 0
    assert (tmp_path / "mark").read_text() == "cleaned\n"


async def test_cancelled_run_without_stop_grace_kills_at_once(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """The default stop_grace=0 kills with SIGKILL straight away: the TERM handler never runs."""
    script = f'trap "echo cleaned > /out/mark; exit 0" TERM; {IGNORES_TERM.split("; ", 1)[1]}'
    async with trio.open_nursery() as nursery:
        container = await _started(sup, nursery, script, mounts=[Bind(tmp_path, "/out")])
        nursery.cancel_scope.cancel()
    assert container.returncode == -9
    assert not (tmp_path / "mark").exists()


async def test_cancelled_run_kills_after_stop_grace(sup: anyns.Supervisor) -> None:
    """A program ignoring SIGTERM is SIGKILLed when stop_grace runs out, and the cancellation then completes."""
    async with trio.open_nursery() as nursery:
        container = await _started(sup, nursery, IGNORES_TERM, stop_grace=0.3)
        start = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - start >= 0.3
    assert container.returncode == -9
