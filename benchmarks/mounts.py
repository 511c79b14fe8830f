"""How container start+reap time grows with the number of bind mounts.

What is measured
----------------
For each number of binds N (default 0, 100, 500) the script makes N distinct
small source directories under one temporary host directory (made once for
the largest N, removed at the end) and starts containers that bind each
source ``i`` at ``/m/i`` and run ``/bin/true``, ``--n`` times per (tool, N,
concurrency), with exactly C runs in flight. For every batch it records the
per-container latency (call to return: start, setup, exec, exit, reap,
including the teardown of the container's N mounts) and the wall time.

From the p50 latencies it derives, per tool, the marginal cost of a bind
between consecutive N (ms per 100 binds), and a linearity check: the marginal
cost at the largest step divided by that at the first step. About 1 means
the cost per bind does not depend on how many binds there are (linear); above
2 the growth is flagged super-linear. bubblewrap's ``--bind`` used to be
O(N^2) (2000 binds took 14 s).

The tools:

``anyns``
    ``await sup.run(anyns.ContainerSpec(argv=["/bin/true"],
    mounts=[anyns.Bind(src_i, f"/m/{i}") for i in range(N)]))`` on one
    supervisor for the whole run (defaults: ``HostRootfs``,
    ``Namespaces.DEFAULT``). The first runs of each spec are an untimed
    warm-up: the zygote builds the root skeleton (with the N mount points)
    once per spec.
``bwrap``
    ``trio.run_process`` of the same bwrap command as ``benchmarks/spawn.py``
    (mount+pid+uts+ipc+net, pivot_root into a tmpfs, read-only /usr, /proc,
    /dev, /tmp tmpfs) plus ``--bind src_i /m/i`` for each bind before the
    program; bwrap creates the mount points in its tmpfs root.

As in ``spawn.py``, the tools are interleaved, and more finely: each
(tool, N) batch of ``--n`` containers is split into ``--rounds`` chunks, and
every round runs one chunk of every (tool, N) cell (the starting cell
rotates), so slow drift on the machine hits every N alike instead of bending
the slope. Every chunk starts after the previous one's asynchronous
network-namespace teardown has settled. Latencies are pooled per cell.

Run ``python benchmarks/mounts.py --help`` (or ``python -m benchmarks.mounts``)
from the repository root. Results go to ``benchmarks/results/mounts.json``.
Exit status: 0, or 1 when anyns itself fails or ``--max-superlinearity`` is
exceeded by anyns.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

if __package__:
    from . import spawn
else:  # python benchmarks/mounts.py: this directory is sys.path[0]
    import spawn  # type: ignore[no-redef,import-not-found,unused-ignore]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "mounts.json"

DEFAULT_BINDS = (0, 100, 500)
DEFAULT_N = 50
DEFAULT_CONCURRENCY = (1,)
QUICK_BINDS = (0, 100, 500)
QUICK_N = 10
DEFAULT_ROUNDS = 5  # each batch is split into this many interleaved rounds
QUICK_ROUNDS = 2
DEFAULT_WARMUP = 2  # untimed runs per (tool, N); anyns's first builds the spec's skeleton
DEFAULT_TIMEOUT = 600.0  # seconds per (tool, N, concurrency) batch
SUPERLINEAR = 2.0  # a linearity ratio above this is flagged in the output

TOOLS = ("anyns", "bwrap")
LABELS = {"anyns": "anyns", "bwrap": "trio+bwrap"}
NOTES = {
    "anyns": "one supervisor; ContainerSpec(argv=['/bin/true'], mounts=[Bind(src_i, '/m/i') ...]) with "
    "defaults (HostRootfs, Namespaces.DEFAULT = MOUNT|PID|UTS|IPC|NET); first runs of each spec untimed",
    "bwrap": "benchmarks/spawn.py's bwrap command (mount+pid+uts+ipc+net, pivot_root to a tmpfs with "
    "read-only /usr, /proc, /dev, /tmp tmpfs) plus --bind src_i /m/i per bind",
}
PAYLOAD = spawn.PAYLOAD
TARGET_DIR = "/m"


# --------------------------------------------------------------------------
# Sources and commands


def make_sources(parent: Path, count: int) -> list[str]:
    """``count`` distinct directories, each holding one small file."""
    sources = []
    for i in range(count):
        src = parent / str(i)
        src.mkdir()
        (src / "file").write_bytes(b"%d\n" % i)
        sources.append(str(src))
    return sources


def target(i: int) -> str:
    return f"{TARGET_DIR}/{i}"


def bwrap_argv(sources: Sequence[str]) -> list[str]:
    """``spawn.bwrap_argv()`` with ``--bind src_i /m/i`` for each source, before the program."""
    base = spawn.bwrap_argv()
    assert base[-1] == PAYLOAD
    binds: list[str] = []
    for i, src in enumerate(sources):
        binds += ["--bind", src, target(i)]
    return [*base[:-1], *binds, PAYLOAD]


def bwrap_template() -> str:
    base = spawn.bwrap_argv()
    return subprocess.list2cmdline(base[:-1]) + f" --bind SRC/0 {target(0)} ... --bind SRC/N-1 /m/N-1 {PAYLOAD}"


ANYNS_TEMPLATE = (
    "async with anyns.open_supervisor() as sup: await sup.run(anyns.ContainerSpec("
    "argv=['/bin/true'], mounts=[anyns.Bind(f'SRC/{i}', f'/m/{i}') for i in range(N)]))"
)


def _git(*argv: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *argv], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def anyns_revision() -> str | None:
    """The repository's commit, with ``+dirty`` when ``anyns/`` has uncommitted changes."""
    head = _git("rev-parse", "--short", "HEAD")
    if not head:
        return None
    return head + ("+dirty" if _git("status", "--porcelain", "--", "anyns") else "")


# --------------------------------------------------------------------------
# Results


@dataclass
class Measurement:
    tool: str
    label: str
    binds: int
    concurrency: int
    n: int
    seconds: float
    per_second: float
    wall_ms_per_container: float
    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float


@dataclass
class Report:
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    anyns_error: str | None = None
    sources_dir: str | None = None

    def get(self, tool: str, binds: int, concurrency: int) -> Measurement | None:
        for m in self.measurements:
            if m.tool == tool and m.binds == binds and m.concurrency == concurrency:
                return m
        return None

    def slopes(self, tool: str, concurrency: int) -> list[dict[str, Any]]:
        """Marginal p50 cost between consecutive measured N, in ms per 100 binds."""
        points = [m for b in sorted(self.config.get("binds", [])) if (m := self.get(tool, b, concurrency))]
        out = []
        for a, b in itertools.pairwise(points):
            per_100 = (b.p50_ms - a.p50_ms) / (b.binds - a.binds) * 100.0
            out.append({"from": a.binds, "to": b.binds, "ms_per_100_binds": per_100})
        return out

    def linearity(self, tool: str, concurrency: int) -> float | None:
        """Marginal cost at the largest N step / at the first step (None: not enough points or no growth)."""
        steps = self.slopes(tool, concurrency)
        if len(steps) < 2:
            return None
        first, last = steps[0]["ms_per_100_binds"], steps[-1]["ms_per_100_binds"]
        if first <= 0:
            return None
        return float(last / first)

    def analysis(self) -> list[dict[str, Any]]:
        out = []
        for c in self.config.get("concurrency", []):
            for tool in self.config.get("tools", []):
                out.append(
                    {
                        "tool": tool,
                        "concurrency": c,
                        "slopes": self.slopes(tool, c),
                        "linearity": self.linearity(tool, c),
                    }
                )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "mounts",
            "payload": PAYLOAD,
            "machine": self.machine,
            "config": self.config,
            "commands": self.commands,
            "notes": {t: NOTES[t] for t in self.config.get("tools", [])},
            "sources_dir": self.sources_dir,
            "measurements": [asdict(m) for m in self.measurements],
            "analysis": self.analysis(),
            "superlinear_above": SUPERLINEAR,
            "skipped": self.skipped,
            "anyns_error": self.anyns_error,
        }


# --------------------------------------------------------------------------
# Running


RunOne = Callable[[], Awaitable[object]]


async def run_chunk(run_one: RunOne, n: int, concurrency: int) -> tuple[list[float], float]:
    """Run ``run_one`` n times with exactly ``concurrency`` calls in flight; (latencies in s, wall s)."""
    latencies = [0.0] * n
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            await run_one()
            latencies[i] = time.perf_counter() - t0

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, n)):
            nursery.start_soon(worker)
    return latencies, time.perf_counter() - start


def summarize(tool: str, binds: int, concurrency: int, latencies: list[float], seconds: float) -> Measurement:
    """One ``Measurement`` from the pooled latencies (s) and summed wall time (s) of every round."""
    n = len(latencies)
    lat = sorted(x * 1000.0 for x in latencies)
    return Measurement(
        tool=tool,
        label=LABELS[tool],
        binds=binds,
        concurrency=concurrency,
        n=n,
        seconds=seconds,
        per_second=n / seconds,
        wall_ms_per_container=seconds * 1000.0 / n,
        p50_ms=spawn.percentile(lat, 50),
        p90_ms=spawn.percentile(lat, 90),
        mean_ms=sum(lat) / n,
        min_ms=lat[0],
        max_ms=lat[-1],
    )


def _format_exc(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()


def _short_exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _say(msg: str = "") -> None:
    print(msg, flush=True)


HEADER = f"{'tool':<12} {'binds':>6} {'C':>4} {'n':>5} {'p50 ms':>9} {'p90 ms':>9} {'min ms':>9} {'wall ms/ctr':>12}"


def _row(m: Measurement) -> str:
    return (
        f"{m.label:<12} {m.binds:>6} {m.concurrency:>4} {m.n:>5} {m.p50_ms:>9.2f} {m.p90_ms:>9.2f}"
        f" {m.min_ms:>9.2f} {m.wall_ms_per_container:>12.2f}"
    )


def split(n: int, parts: int) -> list[int]:
    """``n`` as ``parts`` near-equal positive chunks (fewer when n < parts)."""
    parts = min(parts, n)
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


class Bench:
    """The runners of each tool per N, the rounds, and what failed."""

    def __init__(self, report: Report, args: argparse.Namespace) -> None:
        self.report = report
        self.args = args
        self.tools: list[str] = []
        self.runners: dict[tuple[str, int], RunOne] = {}
        self.warm: set[tuple[str, int]] = set()
        #: tool -> smallest N at which it failed; it is not run at that N or above
        self.failed_at: dict[str, int] = {}

    def alive(self, tool: str, binds: int) -> bool:
        return tool in self.tools and binds < self.failed_at.get(tool, sys.maxsize)

    def fail(self, tool: str, binds: int, where: str, exc: BaseException | str) -> None:
        """Stop measuring ``tool`` at ``binds`` and above (the failure would repeat there)."""
        self.failed_at[tool] = min(binds, self.failed_at.get(tool, sys.maxsize))
        if tool == "anyns":
            text = exc if isinstance(exc, str) else _format_exc(exc)
            self.report.anyns_error = "\n".join(filter(None, [self.report.anyns_error, f"{where}: {text}"]))
            _say(f"!! anyns FAILED during {where}:\n{text}")
        else:
            text = exc if isinstance(exc, str) else _short_exc(exc)
            self.report.skipped[tool] = f"binds >= {binds}: failed during {where}: {text}"
            _say(f"-- skipping {LABELS[tool]} at binds >= {binds}: {text}")

    async def chunk(self, tool: str, binds: int, concurrency: int, n: int) -> tuple[list[float], float] | None:
        """Warm up (the first time), settle, run ``n``; None when it failed."""
        run_one = self.runners[(tool, binds)]
        where = f"binds={binds} C={concurrency}"
        if (tool, binds) not in self.warm:
            try:
                with trio.fail_after(self.args.timeout):
                    for _ in range(self.args.warmup):
                        await run_one()
            except Exception as exc:
                self.fail(tool, binds, f"warm-up {where}", exc)
                return None
            self.warm.add((tool, binds))
        await spawn.settle()
        try:
            with trio.fail_after(self.args.timeout):
                return await run_chunk(run_one, n, concurrency)
        except Exception as exc:
            self.fail(tool, binds, where, exc)
            return None

    async def level(self, concurrency: int) -> None:
        """Every (tool, N) at one concurrency, in interleaved rounds, pooled per cell."""
        chunks = split(self.args.n, self.args.rounds)
        cells = [(tool, binds) for binds in self.args.binds for tool in TOOLS if tool in self.tools]
        pooled: dict[tuple[str, int], tuple[list[float], float]] = {cell: ([], 0.0) for cell in cells}
        for r, n in enumerate(chunks):
            order = cells[r % len(cells) :] + cells[: r % len(cells)] if cells else []  # rotate the start
            for tool, binds in order:
                if not self.alive(tool, binds):
                    continue
                got = await self.chunk(tool, binds, concurrency, n)
                if got is not None:
                    lat, sec = pooled[(tool, binds)]
                    pooled[(tool, binds)] = (lat + got[0], sec + got[1])
            done = "  ".join(
                f"{LABELS[t]}@{b}: {spawn.percentile(sorted(pooled[(t, b)][0]), 50) * 1000:.2f}"
                for t, b in cells
                if self.alive(t, b) and pooled[(t, b)][0]
            )
            _say(f"C={concurrency} round {r + 1}/{len(chunks)} (p50 ms so far) {done}")
        for tool, binds in cells:
            lat, sec = pooled[(tool, binds)]
            if self.alive(tool, binds) and len(lat) == self.args.n:
                self.report.measurements.append(summarize(tool, binds, concurrency, lat, sec))

    async def run_all(self) -> None:
        _say()
        for concurrency in self.args.concurrency:
            await self.level(concurrency)
        _say()
        _say(HEADER)
        for concurrency in self.args.concurrency:
            for binds in self.args.binds:
                for tool in TOOLS:
                    m = self.report.get(tool, binds, concurrency)
                    if m is not None:
                        _say(_row(m))


def bwrap_runner(argv: list[str]) -> RunOne:
    async def run_one() -> object:
        return await trio.run_process(argv)  # check=True: a failure raises

    return run_one


async def async_main(report: Report, args: argparse.Namespace, sources: list[str]) -> None:
    bench = Bench(report, args)

    if "bwrap" in args.tools:
        report.commands["bwrap"] = bwrap_template()
        # Preflight without binds: a missing or unusable bwrap is skipped with its reason.
        reason = await spawn.preflight_peer("bwrap", bwrap_argv([]))
        if reason is not None:
            report.skipped["bwrap"] = reason
            _say(f"-- skipping {LABELS['bwrap']}: {reason}")
        else:
            bench.tools.append("bwrap")
            for binds in args.binds:
                bench.runners[("bwrap", binds)] = bwrap_runner(bwrap_argv(sources[:binds]))

    async with contextlib.AsyncExitStack() as stack:
        if "anyns" in args.tools:
            report.commands["anyns"] = ANYNS_TEMPLATE
            try:
                import anyns  # imported late: a broken anyns still lets bwrap run

                report.machine["anyns"] = getattr(anyns, "__version__", "unknown")
                specs = {
                    binds: anyns.ContainerSpec(
                        argv=[PAYLOAD],
                        mounts=[anyns.Bind(src, target(i)) for i, src in enumerate(sources[:binds])],
                    )
                    for binds in args.binds
                }
                report.commands["anyns_spec_no_binds"] = repr(anyns.ContainerSpec(argv=[PAYLOAD]))
                if sources:
                    report.commands["anyns_bind"] = repr(anyns.Bind(sources[0], target(0)))
                sup = await stack.enter_async_context(anyns.open_supervisor())
            except Exception as exc:
                bench.tools.append("anyns")
                bench.fail("anyns", 0, "setup", exc)
            else:
                bench.tools.insert(0, "anyns")
                for binds, spec in specs.items():

                    async def run_anyns(spec: anyns.ContainerSpec = spec) -> object:
                        return await sup.run(spec)

                    bench.runners[("anyns", binds)] = run_anyns

        await bench.run_all()
        # Leaving the stack closes the supervisor; an error there escapes to
        # main(), which charges it to anyns.


# --------------------------------------------------------------------------
# Output


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def _verdict(ratio: float | None) -> str:
    if ratio is None:
        return "not evaluated (fewer than three N, or no growth at the first step)"
    if ratio > SUPERLINEAR:
        return "SUPER-LINEAR"
    return "linear" if ratio < 1.5 else "slightly super-linear"


def print_summary(report: Report) -> None:
    mc = report.machine
    _say()
    _say("=" * 96)
    _say(
        f"mounts benchmark: start+reap {PAYLOAD} with N bind mounts; nproc={mc.get('nproc')}"
        f" kernel={mc.get('kernel')} python={mc.get('python')} trio={mc.get('trio')}"
    )
    _say(
        f"cpu={mc.get('cpu_model')} bwrap={mc.get('bwrap')} anyns={mc.get('anyns')}"
        f" (revision {mc.get('anyns_revision')})"
    )
    _say(
        f"load average before the run: {mc['loadavg_start'][0]:.2f}"
        " (other work on the machine skews every tool; rerun when quiet)"
    )
    tools = report.config["tools"]
    for concurrency in report.config["concurrency"]:
        _say()
        both = "anyns" in tools and "bwrap" in tools
        _say(
            f"C={concurrency}, n={report.config['n']} per cell; ms = p50 ms per container (call to reap);"
            " ms/100 binds = marginal cost since the previous N"
            + ("; bwrap/anyns = how many times faster anyns is" if both else "")
        )
        slopes = {t: {s["to"]: s["ms_per_100_binds"] for s in report.slopes(t, concurrency)} for t in tools}
        heads = [f"{LABELS[t]} ms" for t in tools] + (["bwrap/anyns"] if both else [])
        heads += [f"{LABELS[t]} ms/100 binds" for t in tools]
        _say(f"{'binds':>6} " + " ".join(f"{h:>{max(len(h), 10)}}" for h in heads))
        for binds in report.config["binds"]:
            ms = {t: (m.p50_ms if (m := report.get(t, binds, concurrency)) else None) for t in tools}
            cells = [_fmt(ms[t]) for t in tools]
            if both:
                a, b = ms["anyns"], ms["bwrap"]
                cells.append(_fmt(b / a if a and b else None, suffix="x"))
            cells += [_fmt(slopes[t].get(binds)) for t in tools]
            _say(f"{binds:>6} " + " ".join(f"{c:>{max(len(h), 10)}}" for c, h in zip(cells, heads, strict=True)))
        _say("linearity (ms per bind at the largest N step / at the first step; ~1 linear, > 2 super-linear):")
        for tool in tools:
            ratio = report.linearity(tool, concurrency)
            _say(f"  {LABELS[tool]:<12} {_fmt(ratio, suffix='x'):>8}  {_verdict(ratio)}")
    _say()
    for tool in tools:
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def _int_list(text: str, minimum: int) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    if any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"every value must be >= {minimum}: {text}")
    return values


def _binds_list(text: str) -> list[int]:
    return sorted(set(_int_list(text, 0)))


def _concurrency_list(text: str) -> list[int]:
    return _int_list(text, 1)


def _tool_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    bad = [v for v in values if v not in TOOLS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"unknown tool(s) {bad}; choose from {','.join(TOOLS)}")
    return [t for t in TOOLS if t in values]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mounts",
        description="How start+reap time of a /bin/true container grows with the number of bind "
        "mounts: anyns against trio.run_process + bwrap, in the same run.",
    )
    parser.add_argument(
        "--binds",
        type=_binds_list,
        default=None,
        help="comma-separated numbers of bind mounts (default " + ",".join(map(str, DEFAULT_BINDS)) + ")",
    )
    parser.add_argument(
        "--n",
        type=_positive_int,
        default=None,
        help=f"containers per (tool, binds, concurrency) (default {DEFAULT_N})",
    )
    parser.add_argument(
        "--concurrency",
        type=_concurrency_list,
        default=None,
        help="comma-separated in-flight counts (default " + ",".join(map(str, DEFAULT_CONCURRENCY)) + ")",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"CI smoke: binds {','.join(map(str, QUICK_BINDS))}, n={QUICK_N} (explicit --binds/--n win)",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        help=f"split each (tool, binds) batch of --n into this many rounds; every round runs all "
        f"(tool, binds) cells, so drift hits every N alike (default {DEFAULT_ROUNDS}, --quick {QUICK_ROUNDS})",
    )
    parser.add_argument(
        "--warmup",
        type=_positive_int,
        default=DEFAULT_WARMUP,
        help=f"untimed runs per (tool, binds) before its first batch, >= 1 (default {DEFAULT_WARMUP})",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="where to write results (default benchmarks/results/mounts.json)",
    )
    parser.add_argument(
        "--max-superlinearity",
        type=float,
        default=None,
        metavar="X",
        help="exit 1 if anyns's linearity ratio (ms per bind at the largest N step / at the first "
        "step) exceeds X at any concurrency",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=argparse.SUPPRESS,  # seconds per batch; a hang fails, not stalls
    )
    parser.add_argument(
        "--tools",
        type=_tool_list,
        default=list(TOOLS),
        help=argparse.SUPPRESS,  # e.g. --tools bwrap
    )
    args = parser.parse_args(argv)
    if args.binds is None:
        args.binds = list(QUICK_BINDS if args.quick else DEFAULT_BINDS)
    if args.n is None:
        args.n = QUICK_N if args.quick else DEFAULT_N
    if args.concurrency is None:
        args.concurrency = list(DEFAULT_CONCURRENCY)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    args.rounds = min(args.rounds, args.n)
    return args


def check_gate(report: Report, limit: float) -> bool:
    """True unless anyns's linearity ratio exceeds ``limit`` at some concurrency."""
    ok = True
    for concurrency in report.config["concurrency"]:
        ratio = report.linearity("anyns", concurrency)
        if ratio is None:
            _say(f"--max-superlinearity {limit}: no anyns linearity ratio at C={concurrency}; not evaluated")
            continue
        passed = ratio <= limit
        ok = ok and passed
        verdict = "ok" if passed else "ABOVE LIMIT"
        _say(f"--max-superlinearity {limit}: anyns at C={concurrency} = {ratio:.2f}x, {verdict}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    report.machine = spawn.describe_machine()
    report.machine.pop("unshare", None)
    report.machine["anyns_revision"] = anyns_revision()
    report.config = {
        "binds": args.binds,
        "n": args.n,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "tools": args.tools,
        "quick": args.quick,
        "target_dir": TARGET_DIR,
    }
    _say(
        f"mounts benchmark: binds {args.binds}, n={args.n} per batch in {args.rounds} rounds,"
        f" concurrency {args.concurrency},"
        f" tools {','.join(args.tools)}"
    )
    parent = Path(tempfile.mkdtemp(prefix="anyns-bench-mounts-"))
    report.sources_dir = str(parent)
    try:
        sources = make_sources(parent, max(args.binds))
    except BaseException:
        shutil.rmtree(parent, ignore_errors=True)
        raise
    _say(f"{len(sources)} source directories under {parent}")
    try:
        trio.run(async_main, report, args, sources)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:
        if "anyns" not in args.tools:
            raise
        # Escaped the supervisor's scope (its close, or a crash in its own
        # tasks): anyns' fault by construction of async_main.
        report.anyns_error = "\n".join(filter(None, [report.anyns_error, _format_exc(exc)]))
        _say(f"!! anyns FAILED:\n{_format_exc(exc)}")
    finally:
        shutil.rmtree(parent, ignore_errors=True)

    report.machine["loadavg_end"] = os.getloadavg()
    print_summary(report)
    write_json(report, args.json)

    status = 0
    if report.anyns_error is not None:
        status = 1
    if args.max_superlinearity is not None and not check_gate(report, args.max_superlinearity):
        status = 1
    return status


if __name__ == "__main__":
    if not __package__:
        # Run as a script: make `import anyns` find the repo's package.
        sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
