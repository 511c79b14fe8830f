"""Time from the call to a container program's first output, anyns against trio+bwrap.

What is measured
----------------
Each tool starts a container whose program is ``/bin/sh -c 'echo x; exec
sleep 1000'``, with its stdout a pipe handed to the caller, ``--n`` times per
(tool, C) with exactly C starts in flight (C worker tasks pull from a shared
counter, as in ``spawn.py``). One cycle is:

1. ``t0`` just before ``await nursery.start(...)``;
2. ``nursery.start`` returns the handle (``t_start``);
3. the first byte is read from its stdout (``t_first``);
4. the container is killed and reaped (not timed; it is part of the
   cycle rate).

**Latency** is ``t_first - t0``: what a caller waits from asking for a
container until its program speaks. p50/p90/p99 at each C (default 1 and
100). The tools:

``anyns``
    ``await nursery.start(functools.partial(sup.run, stdout=anyns.PIPE,
    check=False), anyns.ContainerSpec(argv=[...]))`` on one supervisor,
    defaults otherwise; then ``await box.stdout.receive_some(1)``,
    ``box.kill()``, ``await box.wait()``. ``nursery.start`` returns once
    the program has been exec'd, so ``t_start - t0`` is the design's
    "start() -> exec" latency; it is reported too.
``bwrap``
    ``await nursery.start(functools.partial(trio.run_process, argv,
    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, check=False))`` with
    ``spawn.py``'s bwrap command (mount+pid+uts+ipc+net, pivot_root into a
    tmpfs with read-only ``/usr``, ``/proc``, ``/dev``, ``/tmp``) running the
    same program; then ``proc.stdout.receive_some(1)``, ``proc.kill()``
    (bwrap's ``--die-with-parent`` takes the sandbox down with it),
    ``await proc.wait()``. Its ``nursery.start`` returns once bwrap itself
    has been started, before any sandbox exists: not comparable, not shown.
``plain``
    the same ``trio.run_process`` of the program without any isolation:
    the scale reference.

anyns's stdin is its default (``/dev/null``), bwrap's and plain's
``subprocess.DEVNULL``; stderr is inherited by all.

At C in flight the latency includes queueing: by Little's law it is about C
divided by the cycle rate, so at 100 in flight it mostly measures throughput.

Run ``python benchmarks/latency.py --help`` (or ``python -m
benchmarks.latency``) from the repository root, as root. Results go to
``benchmarks/results/latency.json``. Exit status: 0, or 1 when anyns fails.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

if not __package__:  # python benchmarks/latency.py: import this directory as the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks._common import fmt, say

DEFAULT_N = 1000
DEFAULT_CONCURRENCY = (1, 100)
QUICK_N = 100
DEFAULT_WARMUP = 20
DEFAULT_TIMEOUT = 600.0  # seconds per (tool, concurrency) batch

PROGRAM = ("/bin/sh", "-c", "echo x; exec sleep 1000")
TOOLS = ("anyns", "bwrap", "plain")
LABELS = {"anyns": "anyns", "bwrap": "trio+bwrap", "plain": "trio /bin/sh"}
NOTES = {
    "anyns": "one supervisor; nursery.start(partial(sup.run, stdout=anyns.PIPE, check=False), "
    "ContainerSpec(argv=PROGRAM)) with defaults (HostRootfs, Namespaces.DEFAULT); start returns after exec",
    "bwrap": "nursery.start(partial(trio.run_process, BWRAP + PROGRAM, stdin=DEVNULL, stdout=PIPE, check=False)); "
    "spawn.py's bwrap command (mount+pid+uts+ipc+net, pivot_root to a tmpfs, read-only /usr, /proc, /dev, /tmp)",
    "plain": "nursery.start(partial(trio.run_process, PROGRAM, ...)) without isolation: the scale reference",
}
# Ratios printed per concurrency level: (slower, faster) = how many times sooner anyns speaks.
RATIOS = (("bwrap", "anyns"), ("plain", "anyns"))
TARGETS = {  # docs/design.md: latency start() -> exec at 100 in flight
    "anyns start->exec p50 ms, first bar": 3.0,
    "anyns start->exec p99 ms, first bar": 15.0,
    "anyns start->exec p50 ms, goal": 1.0,
    "anyns start->exec p99 ms, goal": 5.0,
}


# --------------------------------------------------------------------------
# Results


@dataclass
class Measurement(common.Batch):
    cycles_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    #: anyns only: t0 -> nursery.start returned (the program has been exec'd)
    exec_p50_ms: float | None = None
    exec_p90_ms: float | None = None
    exec_p99_ms: float | None = None


class Report(common.ToolReport):
    labels = LABELS
    notes = NOTES

    def ratios(self) -> list[dict[str, Any]]:
        return self.ratio_rows(RATIOS, {" p50": "p50_ms", " p99": "p99_ms"})

    def to_json(self) -> dict[str, Any]:
        return self.json_with(
            "latency",
            {"program": list(PROGRAM)},
            {
                "measurements": [asdict(m) for m in self.measurements],
                "ratios": self.ratios(),
                "targets": TARGETS,
            },
        )


# --------------------------------------------------------------------------
# Running

#: one cycle, given the nursery to start into: returns (t_start - t0, t_first - t0) in seconds
Cycle = Callable[[trio.Nursery], Awaitable[tuple[float, float]]]


def make_cycle(start: Callable[[trio.Nursery], Awaitable[Any]]) -> Cycle:
    """A cycle around ``start(nursery)``, which starts the program and returns its handle (a box or process).

    Timed: the start, then the first byte read from the handle's stdout; not
    timed: the kill and the wait that follow.
    """

    async def cycle(nursery: trio.Nursery) -> tuple[float, float]:
        t0 = time.perf_counter()
        handle = await start(nursery)
        t_start = time.perf_counter()
        try:
            if not await handle.stdout.receive_some(1):
                raise RuntimeError("the program's stdout ended before its first byte")
            t_first = time.perf_counter()
        finally:
            handle.kill()
            await handle.wait()
            await handle.stdout.aclose()
        return t_start - t0, t_first - t0

    return cycle


def anyns_cycle(sup: Any, spec: Any) -> Cycle:
    import anyns

    start = functools.partial(sup.run, stdout=anyns.PIPE, check=False)
    return make_cycle(lambda nursery: nursery.start(start, spec))


class _Group:
    """A started peer process whose kill() SIGKILLs its whole process group.

    bwrap's inner pid-1 process sometimes outlives an outer bwrap killed with
    SIGKILL (reparented to init with its ``sleep``, --die-with-parent
    notwithstanding): the group kill takes every process of the peer down.
    """

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.stdout = proc.stdout

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def wait(self) -> int:
        returncode: int = await self.proc.wait()
        return returncode


def process_cycle(argv: list[str]) -> Cycle:
    start = functools.partial(trio.run_process, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, check=False,
                              start_new_session=True)  # its own process group, for _Group.kill

    async def start_group(nursery: trio.Nursery) -> _Group:
        return _Group(await nursery.start(start))

    return make_cycle(start_group)


async def measure(tool: str, cycle: Cycle, n: int, concurrency: int) -> Measurement:
    """Run ``cycle`` n times with exactly ``concurrency`` in flight."""
    started = [0.0] * n
    first = [0.0] * n

    async with trio.open_nursery() as nursery:

        async def one(i: int) -> None:
            started[i], first[i] = await cycle(nursery)

        seconds = await common.in_flight(n, concurrency, one)

    m = Measurement(
        tool=tool,
        label=LABELS[tool],
        concurrency=concurrency,
        n=n,
        seconds=seconds,
        cycles_per_second=n / seconds,
        **common.ms_summary(first),
    )
    if tool == "anyns":
        for key, value in common.ms_summary(started, ("p50", "p90", "p99"), prefix="exec_").items():
            setattr(m, key, value)
    return m


HEADER = (
    f"{'tool':<14} {'C':>4} {'n':>5} {'cycles/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    f" {'exec p50/p99 ms':>16}"
)


def _row(m: Measurement) -> str:
    exec_cell = "-" if m.exec_p50_ms is None else f"{m.exec_p50_ms:.2f}/{fmt(m.exec_p99_ms)}"
    return (
        f"{m.label:<14} {m.concurrency:>4} {m.n:>5} {m.cycles_per_second:>9.1f} {m.p50_ms:>8.2f}"
        f" {m.p90_ms:>8.2f} {m.p99_ms:>8.2f} {m.max_ms:>8.2f} {exec_cell:>16}"
    )


def _fail(report: Report, tool: str, where: str, exc: BaseException) -> None:
    report.fail(tool, where, exc, anyns=tool == "anyns")


async def _warm(cycle: Cycle, count: int) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            await cycle(nursery)


async def async_main(report: Report, args: argparse.Namespace) -> None:
    cycles: dict[str, Cycle] = {}
    peers = {"bwrap": common.bwrap_argv(PROGRAM), "plain": list(PROGRAM)}
    for tool, argv in peers.items():
        if tool not in args.tools:
            continue
        report.commands[tool] = subprocess.list2cmdline(argv)
        # The preflight runs /bin/true in the same sandbox: a missing or unusable bwrap is skipped.
        if await report.admit_peer(tool, [*argv[: -len(PROGRAM)], common.PAYLOAD]):
            cycles[tool] = process_cycle(argv)

    async with contextlib.AsyncExitStack() as stack:
        if "anyns" in args.tools:
            report.commands["anyns"] = (
                "async with anyns.open_supervisor() as sup: box = await nursery.start(functools.partial("
                f"sup.run, stdout=anyns.PIPE, check=False), anyns.ContainerSpec(argv={list(PROGRAM)!r}))"
            )
            try:
                anyns = common.import_anyns(report.machine)
                spec = anyns.ContainerSpec(argv=list(PROGRAM))
                report.commands["anyns_spec"] = repr(spec)
                sup = await stack.enter_async_context(anyns.open_supervisor())
            except Exception as exc:
                report.setup_failed(exc)
            else:
                cycles = {"anyns": anyns_cycle(sup, spec), **cycles}

        fail = functools.partial(_fail, report)
        await common.measure_levels(report, cycles, args, measure, _warm, fail, HEADER, _row, warm_timeout=args.timeout)


# --------------------------------------------------------------------------
# Output


def print_summary(report: Report) -> None:
    mc = report.machine
    common.print_banner(
        96,
        f"latency benchmark: call -> first byte of {subprocess.list2cmdline(PROGRAM)}; {common.machine_line(mc)}",
        common.versions_line(mc),
        common.load_line(mc),
    )
    say()
    common.print_table(
        HEADER, _row, report.in_order(concurrency=report.config["concurrency"], tool=report.config["tools"])
    )
    say()
    say("how many times sooner anyns's program speaks (peer latency / anyns latency):")
    heads = [f"{slow}/{fast} {q}" for slow, fast in RATIOS for q in ("p50", "p99")]
    common.print_ratios(report.ratios(), heads, lambda x: fmt(x) + "x")
    say()
    say(
        "design target, anyns start() -> exec at 100 in flight: p50 <= 3 ms / p99 <= 15 ms first bar,"
        " <= 1 / <= 5 ms goal (the 'exec' column)"
    )
    report.print_notes()


# --------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.latency",
        description="Time from the call to the first byte a container's program writes "
        f"({subprocess.list2cmdline(PROGRAM)}), anyns against trio.run_process + bwrap and plain "
        "trio.run_process, at 1 and 100 in flight, in the same run.",
    )
    parser.add_argument(
        "--n", type=common.positive_int, default=None, help=f"cycles per (tool, concurrency) (default {DEFAULT_N})"
    )
    common.add_concurrency_option(parser, DEFAULT_CONCURRENCY)
    parser.add_argument("--quick", action="store_true", help=f"CI smoke: n={QUICK_N} (an explicit --n wins)")
    common.add_warmup_option(parser, DEFAULT_WARMUP, "cycles per tool")
    common.add_json_option(parser, "latency")
    common.add_hidden_options(parser, DEFAULT_TIMEOUT, TOOLS)
    args = parser.parse_args(argv)
    common.apply_defaults(
        args, n=(QUICK_N, DEFAULT_N), concurrency=(list(DEFAULT_CONCURRENCY), list(DEFAULT_CONCURRENCY))
    )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    report.machine = common.describe_machine(unshare=False)
    report.config = {
        "n": args.n,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "tools": args.tools,
        "quick": args.quick,
    }
    say(f"latency benchmark: n={args.n} per batch, concurrency {args.concurrency}, tools {','.join(args.tools)}")
    if not common.run_trio(report, "anyns" in args.tools, async_main, report, args):
        return 130
    common.finish(report, args.json, print_summary)
    return report.exit_status()


if __name__ == "__main__":
    sys.exit(main())
