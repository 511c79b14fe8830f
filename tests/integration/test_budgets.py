"""Job budgets that keep the result: ContainerSpec(timeout), Limits(cpu_time), run(max_output).

Each ends the container and ``run`` returns what was captured until then, with
the verdict in ``CompletedContainer.exceeded`` (and ``ContainerFailed`` with
``check=True``). An OOM kill is the verdict ``"memory"``. Timing assertions are
lower bounds or generous upper bounds only: the budgets are measured, never raced.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import trio
from _rootless import NOBODY, rootless_python, script_env, staged
from _util import PYTHON, sh_spec

import anyns
import anyns.aio
from anyns import Limits

MiB = 1 << 20

# Two processes that use a CPU each until they are killed.
TWO_BUSY = "yes > /dev/null & yes > /dev/null & wait"
# A pid-1 shell that reports SIGTERM, then exits 0 (its grace: "graceful" shows it got to run).
TRAPS_TERM = 'trap "echo graceful; exit 0" TERM; echo ready; while :; do sleep 0.02; done'
# A pid-1 shell that says it got SIGTERM and keeps running.
IGNORES_TERM = 'trap "echo got TERM" TERM; echo ready; while :; do sleep 0.02; done'


def peak_rss() -> int:
    """This process's peak resident set (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = await stream.receive_some()
        assert chunk, f"EOF before {marker!r}: {seen!r}"
        seen += chunk
    return seen


# --------------------------------------------------------------------------- timeout


async def test_timeout_returns_what_was_captured(sup: anyns.Supervisor) -> None:
    """A sleep under timeout=0.5 is stopped: run returns within seconds, with its output so far and the verdict."""
    start = trio.current_time()
    with trio.fail_after(10):
        done = await sup.run(sh_spec("echo started; echo to stderr >&2; sleep 30", timeout=0.5),
                             capture_stdout=True, capture_stderr=True, check=False)
    elapsed = trio.current_time() - start
    assert (done.stdout, done.stderr) == (b"started\n", b"to stderr\n")
    assert done.exceeded == "timeout"
    assert done.returncode == -9
    assert "exceeded=timeout" in repr(done)
    assert 0.5 <= elapsed < 8
    assert done.stats.wall_time >= 0.5


async def test_timeout_without_pipes(sup: anyns.Supervisor) -> None:
    """No stdio to serve (the nursery-free path): the timeout still ends it."""
    with trio.fail_after(10):
        done = await sup.run(anyns.ContainerSpec(argv=["sleep", "30"], timeout=0.3), stdout=anyns.DEVNULL,
                             check=False)
    assert (done.exceeded, done.returncode) == ("timeout", -9)


async def test_a_program_within_its_time_has_no_verdict(sup: anyns.Supervisor) -> None:
    """Ending before the timeout: exceeded is None, the status is the program's."""
    done = await sup.run(sh_spec("echo quick; exit 3", timeout=30), capture_stdout=True, check=False)
    assert (done.returncode, done.stdout, done.exceeded) == (3, b"quick\n", None)
    assert "exceeded" not in repr(done)


async def test_timeout_with_check_says_the_time_ran_out_and_after_how_long(sup: anyns.Supervisor) -> None:
    """check=True: ContainerFailed says the time ran out after 0.5 s, carries the verdict and the output."""
    with pytest.raises(anyns.ContainerFailed) as info, trio.fail_after(10):
        await sup.run(sh_spec("echo partial; sleep 30", timeout=0.5), capture_stdout=True)
    err = info.value
    assert "the time ran out after 0.5 s" in str(err) and "timeout" in str(err)
    assert str(err) == str(err).lower() or str(err).startswith("container")
    assert (err.exceeded, err.budget, err.stdout, err.returncode) == ("timeout", 0.5, b"partial\n", -9)


async def test_timeout_gives_a_program_that_handles_sigterm_its_stop_grace(sup: anyns.Supervisor) -> None:
    """With stop_grace the timeout sends SIGTERM first: a program that traps it exits on its own (status 0),
    still with the verdict "timeout", and check=True fails the run all the same."""
    with trio.fail_after(20):
        done = await sup.run(sh_spec(TRAPS_TERM, timeout=0.5, stop_grace=10), capture_stdout=True, check=False)
    assert (done.returncode, done.exceeded) == (0, "timeout")
    assert done.stdout == b"ready\ngraceful\n"
    with pytest.raises(anyns.ContainerFailed) as info, trio.fail_after(20):
        await sup.run(sh_spec(TRAPS_TERM, timeout=0.5, stop_grace=10), capture_stdout=True)
    assert (info.value.returncode, info.value.exceeded) == (0, "timeout")


async def test_timeout_kills_after_the_grace(sup: anyns.Supervisor) -> None:
    """A program that ignores SIGTERM is SIGKILLed once stop_grace has passed after the timeout."""
    start = trio.current_time()
    with trio.fail_after(20):
        done = await sup.run(sh_spec(IGNORES_TERM, timeout=0.3, stop_grace=0.5), capture_stdout=True, check=False)
    assert (done.returncode, done.exceeded) == (-9, "timeout")
    assert done.stdout == b"ready\ngot TERM\n"
    assert trio.current_time() - start >= 0.8


async def test_container_exceeded_while_it_runs(sup: anyns.Supervisor) -> None:
    """Container.exceeded is None while within the budget, "timeout" from the moment the timeout is acted on
    (here during the grace, before the exit), and stays so after it."""
    async with trio.open_nursery() as nursery:
        box: anyns.Container = await nursery.start(functools.partial(
            sup.run, sh_spec(IGNORES_TERM, timeout=0.3, stop_grace=30), stdout=anyns.PIPE, check=False))
        assert box.stdout is not None
        with trio.fail_after(10):
            await read_until(box.stdout, b"ready\n")
            assert box.exceeded is None
            await read_until(box.stdout, b"got TERM\n")
        assert (box.exceeded, box.returncode) == ("timeout", None)
        box.kill()
        assert await box.wait() == -9
        assert box.exceeded == "timeout"
        await box.stdout.aclose()


async def test_exec_does_not_inherit_the_timeout(sup: anyns.Supervisor) -> None:
    """A process exec'd into a container with a timeout has none of its own (the container's ends it)."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(functools.partial(sup.run, check=False),
                                  anyns.ContainerSpec(argv=["sleep", "30"], timeout=30))
        inner = await nursery.start(box.exec, ["true"])
        assert inner.spec.timeout is None
        await inner.wait()
        box.kill()


# --------------------------------------------------------------------------- cpu_time


async def test_cpu_time_counts_every_process_of_the_container(sup: anyns.Supervisor) -> None:
    """Two busy processes under cpu_time=1 are killed after about one second of CPU in all (not one each,
    as RLIMIT_CPU would allow): the cgroup's usage is at least the budget and well under twice it."""
    with trio.fail_after(30):
        done = await sup.run(sh_spec(TWO_BUSY, limits=Limits(cpu_time=1)), check=False)
    assert (done.exceeded, done.returncode) == ("cpu_time", -9)
    used = done.stats.cpu_user + done.stats.cpu_system
    assert 1.0 <= used < 1.8, done.stats


async def test_cpu_time_with_check(sup: anyns.Supervisor) -> None:
    """check=True: ContainerFailed says the CPU time ran out, and how much there was."""
    with pytest.raises(anyns.ContainerFailed) as info, trio.fail_after(30):
        await sup.run(sh_spec(TWO_BUSY, limits=Limits(cpu_time=0.5)))
    assert "cpu time ran out after 0.5 s" in str(info.value).lower()
    assert (info.value.exceeded, info.value.budget) == ("cpu_time", 0.5)


async def test_cpu_time_is_not_wall_time(sup: anyns.Supervisor) -> None:
    """An idle program outlives its CPU budget in wall-clock time and ends on its own."""
    done = await sup.run(sh_spec("sleep 1.2; echo done", limits=Limits(cpu_time=0.5)), capture_stdout=True)
    assert (done.returncode, done.stdout, done.exceeded) == (0, b"done\n", None)


async def test_cpu_time_and_timeout_the_first_wins(sup: anyns.Supervisor) -> None:
    """A busy program with a long timeout runs out of CPU first; an idle one with a short timeout out of time."""
    with trio.fail_after(30):
        busy = await sup.run(sh_spec(TWO_BUSY, timeout=60, limits=Limits(cpu_time=0.3)), check=False)
        idle = await sup.run(sh_spec("sleep 30", timeout=0.3, limits=Limits(cpu_time=30)), check=False)
    assert (busy.exceeded, idle.exceeded) == ("cpu_time", "timeout")


# --------------------------------------------------------------------------- max_output


async def test_output_cap_bounds_stdout_and_the_supervisors_memory(sup: anyns.Supervisor) -> None:
    """`yes` with max_output=1 MiB: 1 MiB kept, the container killed, "output"; while an unbounded flood
    (128 MiB of zeros written at once, then more) is cut at the cap, the supervisor's peak RSS grows < 64 MiB."""
    before = peak_rss()
    with trio.fail_after(30):
        done = await sup.run(anyns.ContainerSpec(argv=["yes"]), capture_stdout=True, check=False, max_output=MiB)
        flood = await sup.run(sh_spec("head -c 128M /dev/zero; yes"), capture_stdout=True, check=False,
                              max_output=MiB)
    assert done.stdout == b"y\n" * (MiB // 2)
    assert (done.exceeded, done.returncode) == ("output", -9)
    assert flood.stdout == bytes(MiB) and flood.exceeded == "output"
    assert peak_rss() - before < 64 * MiB


async def test_capture_keeps_the_output_once(sup: anyns.Supervisor) -> None:
    """Without a cap, 128 MiB captured raise the supervisor's peak RSS by about 128 MiB, not twice that
    (no list of chunks joined at the end, no copy of the buffer into the result)."""
    before = peak_rss()
    with trio.fail_after(60):
        done = await sup.run(sh_spec("head -c 128M /dev/zero"), capture_stdout=True)
    assert len(done.stdout) == 128 * MiB and done.exceeded is None
    assert peak_rss() - before < 192 * MiB


async def test_output_cap_bounds_stderr_too(sup: anyns.Supervisor) -> None:
    """stderr has a cap of its own: a flood there is cut and ends the container, stdout is kept whole."""
    with trio.fail_after(30):
        done = await sup.run(sh_spec("echo fine; yes >&2"), capture_stdout=True, capture_stderr=True, check=False,
                             max_output=65536)
    assert done.stdout == b"fine\n"
    assert done.stderr is not None and len(done.stderr) == 65536 and set(done.stderr) == set(b"y\n")
    assert done.exceeded == "output"


async def test_exactly_the_cap_is_within_it(sup: anyns.Supervisor) -> None:
    """max_output bytes then EOF is within the cap; one byte more is past it."""
    done = await sup.run(sh_spec("head -c 100000 /dev/zero"), capture_stdout=True, max_output=100000)
    assert (len(done.stdout), done.exceeded, done.returncode) == (100000, None, 0)
    with trio.fail_after(30):
        over = await sup.run(sh_spec("head -c 100001 /dev/zero; sleep 30"), capture_stdout=True, check=False,
                             max_output=100000)
    assert (len(over.stdout), over.exceeded) == (100000, "output")


async def test_output_cap_with_check(sup: anyns.Supervisor) -> None:
    """check=True: ContainerFailed says the output reached the cap, and keeps what was captured."""
    with pytest.raises(anyns.ContainerFailed) as info, trio.fail_after(30):
        await sup.run(anyns.ContainerSpec(argv=["yes"]), capture_stdout=True, max_output=MiB)
    err = info.value
    assert "output reached the cap of 1M" in str(err) and "max_output" in str(err)
    assert (err.exceeded, err.budget, len(err.stdout)) == ("output", MiB, MiB)


async def test_output_cap_on_a_terminal(sup: anyns.Supervisor) -> None:
    """tty=True with capture_stdout: the terminal's output is capped as well."""
    with trio.fail_after(30):
        done = await sup.run(anyns.ContainerSpec(argv=["yes"], tty=True), capture_stdout=True, check=False,
                             max_output=4096)
    assert (len(done.stdout), done.exceeded) == (4096, "output")


async def test_exec_output_cap(sup: anyns.Supervisor) -> None:
    """Container.exec takes max_output: the exec'd process is ended, the container goes on."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(functools.partial(sup.run, check=False), anyns.ContainerSpec(argv=["sleep", "30"]))
        with trio.fail_after(30):
            inner = await box.exec(["yes"], capture_stdout=True, check=False, max_output=1000)
        assert (len(inner.stdout), inner.exceeded, inner.returncode) == (1000, "output", -9)
        assert box.returncode is None and box.exceeded is None
        box.kill()


async def test_max_output_is_checked(sup: anyns.Supervisor) -> None:
    """max_output is a positive number of bytes or None."""
    for bad in (0, -1, 1.5, "1M", True):
        with pytest.raises(anyns.SpecError, match="max_output"):
            await sup.run(anyns.ContainerSpec(argv=["true"]), capture_stdout=True, max_output=bad)  # type: ignore[arg-type]


async def test_output_caps_leave_pipes_to_the_caller(sup: anyns.Supervisor) -> None:
    """A PIPE stream is the caller's to bound: max_output does not cut it."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(functools.partial(sup.run, stdout=anyns.PIPE, max_output=10),
                                  sh_spec("head -c 1000 /dev/zero"))
        got = b""
        async for chunk in box.stdout:
            got += chunk
        assert len(got) == 1000
        assert await box.wait() == 0 and box.exceeded is None
        await box.stdout.aclose()


# --------------------------------------------------------------------------- memory


async def test_an_oom_kill_is_the_verdict_memory(sup: anyns.Supervisor) -> None:
    """The OOM killer ending it (Limits.memory) is exceeded == "memory", beside oom_killed; ContainerFailed too."""
    hog = anyns.ContainerSpec(argv=[PYTHON, "-c", "b = b'x' * (100 << 20)"], limits=Limits(memory="32M"))
    with trio.fail_after(30):
        done = await sup.run(hog, capture_stderr=True, check=False)
    assert (done.oom_killed, done.exceeded, done.returncode) == (True, "memory", -9)
    with pytest.raises(anyns.ContainerFailed) as info, trio.fail_after(30):
        await sup.run(hog, capture_stderr=True)
    assert (info.value.exceeded, info.value.oom_killed) == ("memory", True)
    assert "OOM killer" in str(info.value)
    fine = await sup.run(sh_spec("true", limits=Limits(memory="32M")))
    assert fine.exceeded is None


# --------------------------------------------------------------------------- the asyncio face, the CLI


def test_budgets_through_asyncio() -> None:
    """anyns.aio passes timeout (a spec field) and max_output (a run option) through, with the verdict."""

    async def main() -> tuple[anyns.CompletedContainer, anyns.CompletedContainer]:
        async with anyns.aio.open_supervisor() as sup:
            slow = await sup.run(sh_spec("echo a; sleep 30", timeout=0.3), capture_stdout=True, check=False)
            loud = await sup.run(anyns.ContainerSpec(argv=["yes"]), capture_stdout=True, check=False,
                                 max_output=1000)
            return slow, loud

    slow, loud = asyncio.run(asyncio.wait_for(main(), 60))
    assert (slow.stdout, slow.exceeded) == (b"a\n", "timeout")
    assert (len(loud.stdout), loud.exceeded) == (1000, "output")


def cli(*args: str, json_status: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "anyns", "run", *(["--json-status"] if json_status else []), *args],
                          capture_output=True, timeout=120, check=False)


def last_status(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(done.stderr.decode().splitlines()[-1])
    return record


def test_cli_timeout_exits_124_with_the_verdict() -> None:
    """--timeout: the output so far, exit status 124 (as timeout(1)), "exceeded": "timeout" in --json-status."""
    done = cli("--timeout", "0.5", "--", "sh", "-c", "echo hi; sleep 30")
    assert (done.returncode, done.stdout) == (124, b"hi\n")
    assert last_status(done) == {"exit-code": 124, "signal": 9, "exceeded": "timeout"}
    assert b"the time ran out after 0.5 s" in done.stderr


def test_cli_cpu_time_exits_124() -> None:
    """--cpu-time: all of the container's processes together; exit status 124 (isolate's time-out)."""
    done = cli("--cpu-time", "0.5", "--", "sh", "-c", TWO_BUSY)
    assert done.returncode == 124
    assert last_status(done)["exceeded"] == "cpu_time"


def test_cli_max_output_exits_153() -> None:
    """--max-output 1k: exactly 1024 bytes passed on, exit status 153 (128+SIGXFSZ), "exceeded": "output"."""
    done = cli("--max-output", "1k", "--", "yes")
    assert (done.returncode, done.stdout) == (153, b"y\n" * 512)
    assert last_status(done)["exceeded"] == "output"
    stderr_flood = cli("--max-output", "100", "--", "sh", "-c", "yes >&2", json_status=False)
    assert stderr_flood.returncode == 153
    assert stderr_flood.stderr.startswith(b"y\n" * 50)
    assert b"its output reached the cap of 100 bytes" in stderr_flood.stderr


def test_cli_within_budgets_keeps_the_status() -> None:
    """Within every budget the status is the program's and --json-status has no verdict."""
    done = cli("--timeout", "30", "--cpu-time", "30", "--max-output", "1M", "--", "sh", "-c", "echo ok; exit 5")
    assert (done.returncode, done.stdout) == (5, b"ok\n")
    assert last_status(done) == {"exit-code": 5}


# --------------------------------------------------------------------------- rootless

ROOTLESS = textwrap.dedent(
    """
    import json
    import anyns, trio

    async def main():
        async with anyns.open_supervisor() as sup:
            try:
                await sup.run(anyns.ContainerSpec(argv=["true"], limits=anyns.Limits(cpu_time=1)))
                print(json.dumps({"error": None}))
            except anyns.AnynsError as e:
                print(json.dumps({"error": type(e).__name__, "message": str(e)}))
            done = await sup.run(anyns.ContainerSpec(argv=["sleep", "30"], timeout=0.3), check=False)
            print(json.dumps({"exceeded": done.exceeded}))

    trio.run(main)
    """
)


def test_rootless_cpu_time_is_unsupported_and_timeout_works() -> None:
    """A rootless supervisor has no cgroup for cpu_time: UnsupportedError naming the cgroup; timeout needs none."""
    python = rootless_python()
    with staged(ROOTLESS, "anyns-budgets-") as path:
        done = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-P",
             os.path.join(path, "script.py")],
            capture_output=True, text=True, timeout=120, cwd=path, env=script_env(path))
    assert done.returncode == 0, done.stderr[-3000:]
    refused, timed = (json.loads(line) for line in done.stdout.splitlines())
    assert refused["error"] == "UnsupportedError", refused
    assert "cgroup" in refused["message"], refused
    assert timed == {"exceeded": "timeout"}
