"""The init as pid 1 (ContainerSpec.init, the default): reaping orphans, forwarding signals, the program's status."""

from __future__ import annotations

import os
import signal
from functools import partial

import pytest
import trio
from _util import PYTHON, alive, read, read_lines, sh, sh_spec

import anyns

# Three orphans: `( cat & )` starts cat in a subshell that exits first, so cat is reparented
# to pid 1. They exit when the test closes stdin, after the program has become `sleep`,
# which never waits (a shell would reap them itself).
ORPHANS = "for i in 1 2 3; do ( exec cat <&3 >/dev/null & ); done 3<&0; echo ready; exec sleep 1000"


def _zombies_in(pid_ns: str) -> int:
    """Zombie processes whose pid namespace is ``pid_ns`` (seen from the host)."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") != pid_ns:
                continue
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:  # gone meanwhile, or a zombie whose ns link is gone
            continue
        count += state == "Z"
    return count


def _has_comm(pid_ns: str, comm: str) -> bool:
    """Whether a process named ``comm`` lives in pid namespace ``pid_ns``."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == pid_ns and read(f"/proc/{name}/comm") == f"{comm}\n".encode():
                    return True
            except OSError:
                continue
    return False


async def _zombie_count_settles(pid_ns: str, want: int) -> int:
    """Poll (bounded) until the zombie count is ``want``; return the last count."""
    count = -1
    with trio.move_on_after(10):
        while (count := _zombies_in(pid_ns)) != want:  # noqa: ASYNC110 - /proc has no event to wait on
            await trio.sleep(0.01)
    return count


@pytest.mark.parametrize("init", [True, False])
async def test_orphans_are_reaped_by_the_init_only(sup: anyns.Supervisor, init: bool) -> None:
    """With the init no zombie remains inside; without it (the program is pid 1 and never waits) three do."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec(ORPHANS, init=init), stdin=anyns.PIPE,
                                          stdout=anyns.PIPE, check=False))
        assert await read_lines(box.stdout, 1) == ["ready"]
        pid_ns = box.namespaces["pid"]
        with trio.fail_after(10):  # the shell must have become `sleep` (a shell would reap them itself)
            while not _has_comm(pid_ns, "sleep"):  # noqa: ASYNC110 - /proc has no event to wait on
                await trio.sleep(0.005)
        assert box.stdin is not None
        await box.stdin.aclose()  # the orphans' cue to exit
        assert await _zombie_count_settles(pid_ns, 0 if init else 3) == (0 if init else 3)
        box.kill()
    assert box.stdout is not None
    await box.stdout.aclose()


async def test_sigterm_reaches_a_program_that_traps_it(sup: anyns.Supervisor) -> None:
    """terminate() goes to the init, which forwards it: a trapping program exits 0, and so does run."""
    script = "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.02; done"
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec(script), stdout=anyns.PIPE))
        assert await read_lines(box.stdout, 1) == ["ready"]
        box.terminate()
        assert await read_lines(box.stdout, 1) == ["got-term"]
        assert await box.wait() == 0
    assert box.stdout is not None
    await box.stdout.aclose()


async def test_sigterm_ends_a_program_without_a_handler(sup: anyns.Supervisor) -> None:
    """A program without a SIGTERM handler dies of it (as pid 1 it would ignore it): returncode -15."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["sleep", "1000"]), check=False))
        box.terminate()
        assert await box.wait() == -signal.SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                                 signal.SIGUSR2, signal.SIGWINCH])
async def test_each_forwarded_signal_reaches_the_program(sup: anyns.Supervisor, sig: signal.Signals) -> None:
    """Each signal the init forwards arrives in the program, which reports it by name."""
    name = sig.name.removeprefix("SIG")
    script = f"trap 'echo got-{name}' {name}; echo ready; while :; do sleep 0.02; done"
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec(script), stdout=anyns.PIPE, check=False))
        assert await read_lines(box.stdout, 1) == ["ready"]
        box.send_signal(sig)
        assert await read_lines(box.stdout, 1) == [f"got-{name}"]
        box.kill()
    assert box.returncode == -9
    assert box.stdout is not None
    await box.stdout.aclose()


@pytest.mark.parametrize(("script", "returncode"), [("exit 0", 0), ("exit 7", 7), ("exit 255", 255),
                                                      ("kill -USR1 $$", -signal.SIGUSR1),
                                                      ("kill -9 $$", -9)])
async def test_returncode_is_the_programs(sup: anyns.Supervisor, script: str, returncode: int) -> None:
    """The program's exit status or -N for its signal, exactly (the init reports it; its own exit can't say -N)."""
    done = await sh(sup, script)
    assert done.returncode == returncode


async def test_program_that_exits_137_is_not_taken_for_a_signal(sup: anyns.Supervisor) -> None:
    """An exit status of 128+N stays an exit status: the init's report is exact, not its exit code."""
    done = await sh(sup, "exit 137")
    assert done.returncode == 137


async def test_the_init_is_pid_1_and_holds_only_its_status_pipe(sup: anyns.Supervisor) -> None:
    """pid 1 is anyns-init, the parent of the program (pid 2); it keeps no fd of the zygote or the supervisor."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec("echo $$ $PPID; exec sleep 1000"),
                                          stdout=anyns.PIPE, check=False))
        assert await read_lines(box.stdout, 1) == ["2 1"]
        assert read(f"/proc/{box.pid}/comm") == b"anyns-init\n"
        assert box.ns_pid == 1
        assert os.listdir(f"/proc/{box.pid}/fd") == ["3"]  # the status pipe
        assert os.readlink(f"/proc/{box.pid}/fd/3").startswith("pipe:")
        box.kill()
    assert box.stdout is not None
    await box.stdout.aclose()


async def test_the_init_costs_little_private_memory(sup: anyns.Supervisor) -> None:
    """The init is a small static program: even alone (its text then counts as private) it stays far below a
    fresh interpreter's private memory.

    The figure with many running (goal <= 256 KiB) is reported by benchmarks/scale.py and checked by
    test_init_native.py; this only guards against a regression to a full copy.
    """
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["sleep", "1000"]), check=False))
        rollup = read(f"/proc/{box.pid}/smaps_rollup").decode()
        fields = dict(line.split(":", 1) for line in rollup.splitlines()[1:])
        private = sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty"))
        assert 0 < private < 4096, f"{private} KiB"
        box.kill()


async def test_exec_failure_under_the_init_is_an_exec_error(sup: anyns.Supervisor) -> None:
    """A program that cannot be started is ExecError, named, with the init gone too."""
    with pytest.raises(anyns.ExecError) as info:
        await sup.run(anyns.ContainerSpec(argv=["no-such-program-anywhere"]))
    assert info.value.errno == 2 and info.value.path == "no-such-program-anywhere"
    async with trio.open_nursery() as nursery:
        with pytest.raises(anyns.ExecError):
            await nursery.start(sup.run, anyns.ContainerSpec(argv=["/no/such/program"]))


async def test_stop_kills_a_program_ignoring_sigterm_after_the_grace(sup: anyns.Supervisor) -> None:
    """stop(grace): the forwarded SIGTERM is ignored, so SIGKILL follows the grace and the container is reaped."""
    script = "trap '' TERM; echo ready; while :; do sleep 0.02; done"
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec(script), stdout=anyns.PIPE, check=False))
        assert await read_lines(box.stdout, 1) == ["ready"]
        start = trio.current_time()
        assert await box.stop(grace=0.3) == -9
        assert trio.current_time() - start >= 0.3
    assert not alive(box.pid)
    assert box.stdout is not None
    await box.stdout.aclose()


async def test_a_python_program_sees_sigint_as_keyboardinterrupt(sup: anyns.Supervisor) -> None:
    """SIGINT forwarded to a Python program raises KeyboardInterrupt there, as on a terminal."""
    # 'ready' is printed inside the try: SIGINT may come the moment it is read
    code = ("import sys, time\ntry:\n    print('ready', flush=True)\n    time.sleep(100)\n"
            "except KeyboardInterrupt:\n    print('interrupted', flush=True)\n    sys.exit(3)\n")
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=[PYTHON, "-c", code]),
                                          stdout=anyns.PIPE, check=False))
        assert await read_lines(box.stdout, 1) == ["ready"]
        box.send_signal(signal.SIGINT)
        assert await read_lines(box.stdout, 1) == ["interrupted"]
        assert await box.wait() == 3
    assert box.stdout is not None
    await box.stdout.aclose()
