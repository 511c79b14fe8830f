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
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

if __package__:
    from . import spawn
else:  # python benchmarks/latency.py: this directory is sys.path[0]
    import spawn  # type: ignore[no-redef,import-not-found,unused-ignore]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "latency.json"

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
TARGETS = {  # DESIGN.md: latency start() -> exec at 100 in flight
    "anyns start->exec p50 ms, first bar": 3.0,
    "anyns start->exec p99 ms, first bar": 15.0,
    "anyns start->exec p50 ms, goal": 1.0,
    "anyns start->exec p99 ms, goal": 5.0,
}


# --------------------------------------------------------------------------
# Results


@dataclass
class Measurement:
    tool: str
    label: str
    concurrency: int
    n: int
    seconds: float
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


@dataclass
class Report:
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    anyns_error: str | None = None

    def get(self, tool: str, concurrency: int) -> Measurement | None:
        for m in self.measurements:
            if m.tool == tool and m.concurrency == concurrency:
                return m
        return None

    def ratio(self, slow: str, fast: str, concurrency: int, key: str = "p50_ms") -> float | None:
        a, b = self.get(slow, concurrency), self.get(fast, concurrency)
        if a is None or b is None or not getattr(b, key):
            return None
        return float(getattr(a, key) / getattr(b, key))

    def ratios(self) -> list[dict[str, Any]]:
        out = []
        for c in self.config.get("concurrency", []):
            row: dict[str, Any] = {"concurrency": c}
            for slow, fast in RATIOS:
                for q in ("p50", "p99"):
                    row[f"{slow}/{fast} {q}"] = self.ratio(slow, fast, c, f"{q}_ms")
            out.append(row)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "latency",
            "program": list(PROGRAM),
            "machine": self.machine,
            "config": self.config,
            "commands": self.commands,
            "notes": {t: NOTES[t] for t in self.config.get("tools", [])},
            "measurements": [asdict(m) for m in self.measurements],
            "ratios": self.ratios(),
            "targets": TARGETS,
            "skipped": self.skipped,
            "anyns_error": self.anyns_error,
        }


# --------------------------------------------------------------------------
# Running

#: one cycle, given the nursery to start into: returns (t_start - t0, t_first - t0) in seconds
Cycle = Callable[[trio.Nursery], Awaitable[tuple[float, float]]]


async def _first_byte(stream: trio.abc.ReceiveStream | None) -> None:
    assert stream is not None
    if not await stream.receive_some(1):
        raise RuntimeError("the program's stdout ended before its first byte")


def anyns_cycle(sup: Any, spec: Any) -> Cycle:
    import anyns

    start = functools.partial(sup.run, stdout=anyns.PIPE, check=False)

    async def cycle(nursery: trio.Nursery) -> tuple[float, float]:
        t0 = time.perf_counter()
        box = await nursery.start(start, spec)
        t_start = time.perf_counter()
        try:
            await _first_byte(box.stdout)
            t_first = time.perf_counter()
        finally:
            box.kill()
            await box.wait()
            await box.stdout.aclose()
        return t_start - t0, t_first - t0

    return cycle


def process_cycle(argv: list[str]) -> Cycle:
    start = functools.partial(trio.run_process, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, check=False)

    async def cycle(nursery: trio.Nursery) -> tuple[float, float]:
        t0 = time.perf_counter()
        proc = await nursery.start(start)
        t_start = time.perf_counter()
        try:
            await _first_byte(proc.stdout)
            t_first = time.perf_counter()
        finally:
            proc.kill()
            await proc.wait()
            await proc.stdout.aclose()
        return t_start - t0, t_first - t0

    return cycle


async def measure(tool: str, cycle: Cycle, n: int, concurrency: int) -> Measurement:
    """Run ``cycle`` n times with exactly ``concurrency`` in flight."""
    started = [0.0] * n
    first = [0.0] * n
    next_index = 0

    async with trio.open_nursery() as nursery:

        async def worker() -> None:
            nonlocal next_index
            while next_index < n:
                i = next_index
                next_index += 1
                started[i], first[i] = await cycle(nursery)

        t0 = time.perf_counter()
        async with trio.open_nursery() as workers:
            for _ in range(min(concurrency, n)):
                workers.start_soon(worker)
        seconds = time.perf_counter() - t0

    lat = sorted(x * 1000.0 for x in first)
    m = Measurement(
        tool=tool,
        label=LABELS[tool],
        concurrency=concurrency,
        n=n,
        seconds=seconds,
        cycles_per_second=n / seconds,
        p50_ms=spawn.percentile(lat, 50),
        p90_ms=spawn.percentile(lat, 90),
        p99_ms=spawn.percentile(lat, 99),
        mean_ms=sum(lat) / n,
        max_ms=lat[-1],
    )
    if tool == "anyns":
        ex = sorted(x * 1000.0 for x in started)
        m.exec_p50_ms = spawn.percentile(ex, 50)
        m.exec_p90_ms = spawn.percentile(ex, 90)
        m.exec_p99_ms = spawn.percentile(ex, 99)
    return m


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _format_exc(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()


def _short_exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else f"{x:{spec}}"


HEADER = (
    f"{'tool':<14} {'C':>4} {'n':>5} {'cycles/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    f" {'exec p50/p99 ms':>16}"
)


def _row(m: Measurement) -> str:
    exec_cell = "-" if m.exec_p50_ms is None else f"{m.exec_p50_ms:.2f}/{_fmt(m.exec_p99_ms)}"
    return (
        f"{m.label:<14} {m.concurrency:>4} {m.n:>5} {m.cycles_per_second:>9.1f} {m.p50_ms:>8.2f}"
        f" {m.p90_ms:>8.2f} {m.p99_ms:>8.2f} {m.max_ms:>8.2f} {exec_cell:>16}"
    )


def _fail(report: Report, cycles: dict[str, Cycle], tool: str, where: str, exc: BaseException) -> None:
    cycles.pop(tool, None)
    if tool == "anyns":
        error = f"{where}: {_format_exc(exc)}"
        report.anyns_error = "\n".join(filter(None, [report.anyns_error, error]))
        _say(f"!! anyns FAILED during {where}:\n{error}")
    else:
        report.skipped[tool] = f"failed during {where}: {_short_exc(exc)}"
        _say(f"-- skipping {LABELS[tool]}: {report.skipped[tool]}")


async def _warm(cycle: Cycle, count: int) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            await cycle(nursery)


async def async_main(report: Report, args: argparse.Namespace) -> None:
    cycles: dict[str, Cycle] = {}
    peers = {"bwrap": [*spawn.bwrap_argv()[:-1], *PROGRAM], "plain": list(PROGRAM)}
    for tool, argv in peers.items():
        if tool not in args.tools:
            continue
        report.commands[tool] = subprocess.list2cmdline(argv)
        # The preflight runs /bin/true in the same sandbox: a missing or unusable bwrap is skipped.
        reason = await spawn.preflight_peer(tool, [*argv[: -len(PROGRAM)], spawn.PAYLOAD])
        if reason is not None:
            report.skipped[tool] = reason
            _say(f"-- skipping {LABELS[tool]}: {reason}")
            continue
        cycles[tool] = process_cycle(argv)

    async with contextlib.AsyncExitStack() as stack:
        if "anyns" in args.tools:
            report.commands["anyns"] = (
                "async with anyns.open_supervisor() as sup: box = await nursery.start(functools.partial("
                f"sup.run, stdout=anyns.PIPE, check=False), anyns.ContainerSpec(argv={list(PROGRAM)!r}))"
            )
            try:
                import anyns

                report.machine["anyns"] = getattr(anyns, "__version__", "unknown")
                spec = anyns.ContainerSpec(argv=list(PROGRAM))
                report.commands["anyns_spec"] = repr(spec)
                sup = await stack.enter_async_context(anyns.open_supervisor())
            except Exception as exc:
                report.anyns_error = f"setup: {_format_exc(exc)}"
                _say(f"!! anyns FAILED to start:\n{report.anyns_error}")
            else:
                cycles = {"anyns": anyns_cycle(sup, spec), **cycles}

        for tool, cycle in list(cycles.items()):
            try:
                with trio.fail_after(args.timeout):
                    await _warm(cycle, args.warmup)
            except Exception as exc:
                _fail(report, cycles, tool, "warm-up", exc)

        _say()
        _say(HEADER)
        for level, concurrency in enumerate(args.concurrency):
            order = [t for t in args.tools if t in cycles]
            if order:
                k = level % len(order)
                order = order[k:] + order[:k]  # rotate: no fixed predecessor
            for tool in order:
                batch_cycle = cycles.get(tool)
                if batch_cycle is None:
                    continue
                await spawn.settle()
                try:
                    with trio.fail_after(args.timeout):
                        m = await measure(tool, batch_cycle, args.n, concurrency)
                except Exception as exc:
                    _fail(report, cycles, tool, f"C={concurrency}", exc)
                    continue
                report.measurements.append(m)
                _say(_row(m))


# --------------------------------------------------------------------------
# Output


def print_summary(report: Report) -> None:
    mc = report.machine
    _say()
    _say("=" * 96)
    _say(
        f"latency benchmark: call -> first byte of {subprocess.list2cmdline(PROGRAM)};"
        f" nproc={mc.get('nproc')} kernel={mc.get('kernel')} python={mc.get('python')} trio={mc.get('trio')}"
    )
    _say(f"cpu={mc.get('cpu_model')} bwrap={mc.get('bwrap')} anyns={mc.get('anyns')}")
    _say(f"load average before the run: {mc['loadavg_start'][0]:.2f}")
    _say()
    _say(HEADER)
    for concurrency in report.config["concurrency"]:
        for tool in report.config["tools"]:
            m = report.get(tool, concurrency)
            if m is not None:
                _say(_row(m))
    _say()
    heads = [f"{slow}/{fast} {q}" for slow, fast in RATIOS for q in ("p50", "p99")]
    _say("how many times sooner anyns's program speaks (peer latency / anyns latency):")
    _say(f"{'C':>5} " + " ".join(f"{h:>16}" for h in heads))
    for row in report.ratios():
        _say(f"{row['concurrency']:>5} " + " ".join(f"{_fmt(row[h], '.2f') + 'x':>16}" for h in heads))
    _say()
    _say(
        "design target, anyns start() -> exec at 100 in flight: p50 <= 3 ms / p99 <= 15 ms first bar,"
        " <= 1 / <= 5 ms goal (the 'exec' column)"
    )
    for tool in report.config["tools"]:
        _say(f"  {LABELS[tool]}: {NOTES[tool]}")
    for tool, reason in report.skipped.items():
        _say(f"  skipped {LABELS[tool]}: {reason}")
    if report.anyns_error:
        _say("  anyns FAILED (see above)")


def write_json(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    tmp.replace(path)
    _say(f"results written to {path}")


# --------------------------------------------------------------------------
# Command line


def _tool_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    bad = [v for v in values if v not in TOOLS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"unknown tool(s) {bad}; choose from {','.join(TOOLS)}")
    return [t for t in TOOLS if t in values]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.latency",
        description="Time from the call to the first byte a container's program writes "
        f"({subprocess.list2cmdline(PROGRAM)}), anyns against trio.run_process + bwrap and plain "
        "trio.run_process, at 1 and 100 in flight, in the same run.",
    )
    parser.add_argument(
        "--n", type=spawn._positive_int, default=None, help=f"cycles per (tool, concurrency) (default {DEFAULT_N})"
    )
    parser.add_argument(
        "--concurrency",
        type=spawn._int_list,
        default=None,
        help="comma-separated in-flight counts (default " + ",".join(map(str, DEFAULT_CONCURRENCY)) + ")",
    )
    parser.add_argument("--quick", action="store_true", help=f"CI smoke: n={QUICK_N} (an explicit --n wins)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=DEFAULT_WARMUP,
        help=f"untimed cycles per tool before measuring (default {DEFAULT_WARMUP})",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="where to write results (default benchmarks/results/latency.json)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help=argparse.SUPPRESS)
    parser.add_argument("--tools", type=_tool_list, default=list(TOOLS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = QUICK_N if args.quick else DEFAULT_N
    if args.concurrency is None:
        args.concurrency = list(DEFAULT_CONCURRENCY)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    report.machine = spawn.describe_machine()
    report.machine.pop("unshare", None)
    report.config = {
        "n": args.n,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "tools": args.tools,
        "quick": args.quick,
    }
    _say(f"latency benchmark: n={args.n} per batch, concurrency {args.concurrency}, tools {','.join(args.tools)}")
    try:
        trio.run(async_main, report, args)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:
        if "anyns" not in args.tools:
            raise
        report.anyns_error = "\n".join(filter(None, [report.anyns_error, _format_exc(exc)]))
        _say(f"!! anyns FAILED:\n{_format_exc(exc)}")
    report.machine["loadavg_end"] = os.getloadavg()
    print_summary(report)
    write_json(report, args.json)
    return 0 if report.anyns_error is None else 1


if __name__ == "__main__":
    if not __package__:
        # Run as a script: make `import anyns` find the repo's package.
        sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
