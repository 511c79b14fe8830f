"""Exit statuses, deaths by signal, ContainerFailed, and Container's control methods."""

from __future__ import annotations

import signal
import subprocess
from functools import partial

import pytest
import trio
from _util import children_of_me, lines, read_lines, sh, sh_spec

import anyns
from anyns import Namespaces

NO_PID_NS = Namespaces.MOUNT | Namespaces.UTS | Namespaces.IPC | Namespaces.NET
SLEEP = anyns.ContainerSpec(argv=["sleep", "1000"])


@pytest.mark.parametrize("status", [0, 3, 255])
async def test_exit_status(sup: anyns.Supervisor, status: int) -> None:
    """returncode is the program's exit status."""
    done = await sh(sup, f"exit {status}")
    assert done.returncode == status


@pytest.mark.parametrize("status", [3, 255])
async def test_check_raises_container_failed(sup: anyns.Supervisor, status: int) -> None:
    """check=True turns a non-zero exit into ContainerFailed carrying status, argv and output."""
    spec = sh_spec(f"echo out; echo err >&2; exit {status}")
    with pytest.raises(anyns.ContainerFailed) as info:
        await sup.run(spec, capture_stdout=True, capture_stderr=True)
    err = info.value
    assert isinstance(err, subprocess.CalledProcessError)
    assert isinstance(err, anyns.AnynsError)
    assert err.returncode == status
    assert err.cmd == list(spec.argv)
    assert err.stdout == b"out\n" and err.stderr == b"err\n"
    assert str(err) == f"container {list(spec.argv)!r} exited with status {status}"


async def test_pid_1_ignores_kill_from_inside(sup: anyns.Supervisor) -> None:
    """init=False: kill -9 $$ from a pid-1 shell does nothing (kernel rule the design relies on)."""
    done = await sh(sup, "kill -9 $$; echo survived", init=False)
    assert (done.returncode, lines(done.stdout)) == (0, ["survived"])


async def test_with_init_the_program_dies_of_its_own_kill(sup: anyns.Supervisor) -> None:
    """With the init (default) the program is pid 2: kill -9 $$ kills it, and returncode says -9."""
    done = await sh(sup, "kill -9 $$; echo survived")
    assert (done.returncode, done.stdout) == (-9, b"")


async def test_inner_process_killed_by_signal(sup: anyns.Supervisor) -> None:
    """A non-init process inside dies of kill -9 normally; the shell reports 128+9."""
    done = await sh(sup, 'sh -c "kill -9 \\$\\$"; echo "inner=$?"')
    assert (done.returncode, lines(done.stdout)) == (0, ["inner=137"])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1])
async def test_death_by_signal_without_pid_namespace(sup: anyns.Supervisor, sig: int) -> None:
    """A program killed by signal N (not pid 1: no pid namespace) has returncode -N."""
    done = await sh(sup, f"kill -{int(sig)} $$; echo not-reached", namespaces=NO_PID_NS)
    assert done.returncode == -sig
    assert done.stdout == b""


async def test_death_by_signal_raises_with_check(sup: anyns.Supervisor) -> None:
    """check=True turns a death by signal into ContainerFailed with returncode -N."""
    with pytest.raises(anyns.ContainerFailed) as info:
        await sup.run(sh_spec("kill -9 $$", namespaces=NO_PID_NS))
    assert info.value.returncode == -9
    assert "SIGKILL" in str(info.value)


async def test_kill_from_outside(sup: anyns.Supervisor) -> None:
    """Container.kill() kills pid 1 of a pid namespace: returncode -9, and it is reaped."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, SLEEP, check=False))
        assert box.pid in children_of_me()
        box.kill()
        assert await box.wait() == -9
        assert box.returncode == -9
        assert box.pid not in children_of_me()


async def test_kill_from_outside_with_check_raises(sup: anyns.Supervisor) -> None:
    """A started container killed from outside makes its run raise ContainerFailed(-9)."""
    caught: list[BaseException] = []
    try:  # except*: the nursery may wrap it in a group (trio's strict_exception_groups)
        async with trio.open_nursery() as nursery:
            box = await nursery.start(sup.run, SLEEP)
            box.kill()
    except* anyns.ContainerFailed as group:
        caught.extend(group.exceptions)
    assert [err.returncode for err in caught] == [-9]  # type: ignore[attr-defined]
    assert box.returncode == -9


async def test_terminate_and_send_signal_reach_handlers(sup: anyns.Supervisor) -> None:
    """terminate() and send_signal() deliver to a pid-1 program that handles the signal."""
    script = 'trap "exit 42" TERM; trap "exit 43" USR1; echo ready; sleep 1000 & wait'
    async with trio.open_nursery() as nursery:
        term = await nursery.start(partial(sup.run, sh_spec(script), stdout=anyns.PIPE,
                                           check=False))
        usr1 = await nursery.start(partial(sup.run, sh_spec(script), stdout=anyns.PIPE,
                                           check=False))
        assert await read_lines(term.stdout, 1) == ["ready"]
        assert await read_lines(usr1.stdout, 1) == ["ready"]
        term.terminate()
        usr1.send_signal(signal.SIGUSR1)
        assert await term.wait() == 42
        assert await usr1.wait() == 43


async def test_terminate_kills_program_without_pid_namespace(sup: anyns.Supervisor) -> None:
    """terminate() sends SIGTERM: a plain (non pid-1) sleep dies with returncode -15."""
    spec = anyns.ContainerSpec(argv=["sleep", "1000"], namespaces=NO_PID_NS)
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, spec, check=False))
        box.terminate()
        assert await box.wait() == -signal.SIGTERM


async def test_wait_twice_and_signal_after_exit(sup: anyns.Supervisor) -> None:
    """wait() can be repeated; signalling a reaped container is a no-op."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec("exit 5"), check=False))
        assert await box.wait() == 5
    assert await box.wait() == 5
    box.kill()
    box.terminate()
    box.send_signal(signal.SIGUSR1)
    assert box.returncode == 5
    with pytest.raises(anyns.AnynsError):
        box.namespaces  # noqa: B018 - the property raises once the container is gone
