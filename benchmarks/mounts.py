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
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if not __package__:  # python benchmarks/mounts.py: import this directory as the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks._common import fmt, say

if TYPE_CHECKING:  # anyns itself is imported late, so a missing install is reported, not raised
    from anyns import ContainerSpec

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
TARGET_DIR = "/m"
PAYLOAD = common.PAYLOAD


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


def binds_argv(sources: Sequence[str]) -> list[str]:
    """The bwrap command with ``--bind src_i /m/i`` for each source, before the program."""
    binds: list[str] = []
    for i, src in enumerate(sources):
        binds += ["--bind", src, target(i)]
    return common.bwrap_argv(extra=binds)


def bwrap_template() -> str:
    base = common.bwrap_argv(program=())
    return subprocess.list2cmdline(base) + f" --bind SRC/0 {target(0)} ... --bind SRC/N-1 /m/N-1 {PAYLOAD}"


ANYNS_TEMPLATE = (
    "async with anyns.open_supervisor() as sup: await sup.run(anyns.ContainerSpec("
    "argv=['/bin/true'], mounts=[anyns.Bind(f'SRC/{i}', f'/m/{i}') for i in range(N)]))"
)


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
class Report(common.ToolReport):
    labels = LABELS
    notes = NOTES

    sources_dir: str | None = None

    def slopes(self, tool: str, concurrency: int) -> list[dict[str, Any]]:
        """Marginal p50 cost between consecutive measured N, in ms per 100 binds."""
        binds = sorted(self.config.get("binds", []))
        points = [m for b in binds if (m := self.find(tool=tool, binds=b, concurrency=concurrency))]
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
        return [
            {"tool": tool, "concurrency": c, "slopes": self.slopes(tool, c), "linearity": self.linearity(tool, c)}
            for c in self.config.get("concurrency", [])
            for tool in self.config.get("tools", [])
        ]

    def to_json(self) -> dict[str, Any]:
        return self.json_with(
            "mounts",
            {"payload": PAYLOAD},
            {
                "sources_dir": self.sources_dir,
                "measurements": [asdict(m) for m in self.measurements],
                "analysis": self.analysis(),
                "superlinear_above": SUPERLINEAR,
            },
        )


# --------------------------------------------------------------------------
# Running


def summarize(tool: str, binds: int, concurrency: int, latencies: list[float], seconds: float) -> Measurement:
    """One ``Measurement`` from the pooled latencies (s) and summed wall time (s) of every round."""
    n = len(latencies)
    return Measurement(
        tool=tool,
        label=LABELS[tool],
        binds=binds,
        concurrency=concurrency,
        n=n,
        seconds=seconds,
        per_second=n / seconds,
        wall_ms_per_container=seconds * 1000.0 / n,
        **common.ms_summary(latencies, ("p50", "p90", "mean", "min", "max")),
    )


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
        self.runners: dict[tuple[str, int], common.RunOne] = {}
        self.warm: set[tuple[str, int]] = set()
        #: tool -> smallest N at which it failed; it is not run at that N or above
        self.failed_at: dict[str, int] = {}

    def alive(self, tool: str, binds: int) -> bool:
        return tool in self.tools and binds < self.failed_at.get(tool, sys.maxsize)

    def fail(self, tool: str, binds: int, where: str, exc: BaseException | str) -> None:
        """Stop measuring ``tool`` at ``binds`` and above (the failure would repeat there)."""
        self.failed_at[tool] = min(binds, self.failed_at.get(tool, sys.maxsize))
        if tool == "anyns":
            text = exc if isinstance(exc, str) else common.format_exc(exc)
            self.report.add_anyns_error(f"{where}: {text}")
            say(f"!! anyns FAILED during {where}:\n{text}")
        else:
            text = exc if isinstance(exc, str) else common.short_exc(exc)
            self.report.skipped[tool] = f"binds >= {binds}: failed during {where}: {text}"
            say(f"-- skipping {LABELS[tool]} at binds >= {binds}: {text}")

    async def chunk(self, tool: str, binds: int, concurrency: int, n: int) -> tuple[list[float], float] | None:
        """Warm up (the first time), settle, run ``n``; None when it failed."""
        run_one = self.runners[(tool, binds)]
        where = f"binds={binds} C={concurrency}"
        if (tool, binds) not in self.warm:
            try:
                with trio.fail_after(self.args.timeout):
                    await common.warm(run_one, self.args.warmup)
            except Exception as exc:
                self.fail(tool, binds, f"warm-up {where}", exc)
                return None
            self.warm.add((tool, binds))
        await common.settle()
        try:
            with trio.fail_after(self.args.timeout):
                return await common.timed_batch(run_one, n, concurrency)
        except Exception as exc:
            self.fail(tool, binds, where, exc)
            return None

    async def level(self, concurrency: int) -> None:
        """Every (tool, N) at one concurrency, in interleaved rounds, pooled per cell."""
        chunks = split(self.args.n, self.args.rounds)
        cells = [(tool, binds) for binds in self.args.binds for tool in TOOLS if tool in self.tools]
        pooled: dict[tuple[str, int], tuple[list[float], float]] = {cell: ([], 0.0) for cell in cells}
        for r, n in enumerate(chunks):
            for tool, binds in common.rotate(cells, r):  # rotate the start
                if not self.alive(tool, binds):
                    continue
                got = await self.chunk(tool, binds, concurrency, n)
                if got is not None:
                    lat, sec = pooled[(tool, binds)]
                    pooled[(tool, binds)] = (lat + got[0], sec + got[1])
            done = "  ".join(
                f"{LABELS[t]}@{b}: {common.percentile(sorted(pooled[(t, b)][0]), 50) * 1000:.2f}"
                for t, b in cells
                if self.alive(t, b) and pooled[(t, b)][0]
            )
            say(f"C={concurrency} round {r + 1}/{len(chunks)} (p50 ms so far) {done}")
        for tool, binds in cells:
            lat, sec = pooled[(tool, binds)]
            if self.alive(tool, binds) and len(lat) == self.args.n:
                self.report.measurements.append(summarize(tool, binds, concurrency, lat, sec))

    async def run_all(self) -> None:
        say()
        for concurrency in self.args.concurrency:
            await self.level(concurrency)
        say()
        common.print_table(
            HEADER, _row, self.report.in_order(concurrency=self.args.concurrency, binds=self.args.binds, tool=TOOLS)
        )


async def async_main(report: Report, args: argparse.Namespace, sources: list[str]) -> None:
    bench = Bench(report, args)

    if "bwrap" in args.tools:
        report.commands["bwrap"] = bwrap_template()
        # Preflight without binds: a missing or unusable bwrap is skipped with its reason.
        if await report.admit_peer("bwrap", common.bwrap_argv()):
            bench.tools.append("bwrap")
            for binds in args.binds:
                bench.runners[("bwrap", binds)] = common.process_runner(binds_argv(sources[:binds]))

    async with contextlib.AsyncExitStack() as stack:
        if "anyns" in args.tools:
            report.commands["anyns"] = ANYNS_TEMPLATE
            try:
                anyns = common.import_anyns(report.machine)
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

                    async def run_anyns(spec: ContainerSpec = spec) -> object:
                        return await sup.run(spec)

                    bench.runners[("anyns", binds)] = run_anyns

        await bench.run_all()
        # Leaving the stack closes the supervisor; an error there escapes to
        # main(), which charges it to anyns.


# --------------------------------------------------------------------------
# Output


def _verdict(ratio: float | None) -> str:
    if ratio is None:
        return "not evaluated (fewer than three N, or no growth at the first step)"
    if ratio > SUPERLINEAR:
        return "SUPER-LINEAR"
    return "linear" if ratio < 1.5 else "slightly super-linear"


def print_summary(report: Report) -> None:
    mc = report.machine
    common.print_banner(
        96,
        f"mounts benchmark: start+reap {PAYLOAD} with N bind mounts; {common.machine_line(mc)}",
        f"{common.versions_line(mc)} (revision {mc.get('anyns_revision')})",
        common.load_line(mc, advice=True),
    )
    tools = report.config["tools"]
    for concurrency in report.config["concurrency"]:
        say()
        both = "anyns" in tools and "bwrap" in tools
        say(
            f"C={concurrency}, n={report.config['n']} per cell; ms = p50 ms per container (call to reap);"
            " ms/100 binds = marginal cost since the previous N"
            + ("; bwrap/anyns = how many times faster anyns is" if both else "")
        )
        slopes = {t: {s["to"]: s["ms_per_100_binds"] for s in report.slopes(t, concurrency)} for t in tools}
        heads = [f"{LABELS[t]} ms" for t in tools] + (["bwrap/anyns"] if both else [])
        heads += [f"{LABELS[t]} ms/100 binds" for t in tools]
        say(f"{'binds':>6} " + " ".join(f"{h:>{max(len(h), 10)}}" for h in heads))
        for binds in report.config["binds"]:
            found = {t: report.find(tool=t, binds=binds, concurrency=concurrency) for t in tools}
            ms = {t: m.p50_ms if m else None for t, m in found.items()}
            cells = [fmt(ms[t]) for t in tools]
            if both:
                a, b = ms["anyns"], ms["bwrap"]
                cells.append(fmt(b / a if a and b else None, suffix="x"))
            cells += [fmt(slopes[t].get(binds)) for t in tools]
            say(f"{binds:>6} " + " ".join(f"{c:>{max(len(h), 10)}}" for c, h in zip(cells, heads, strict=True)))
        say("linearity (ms per bind at the largest N step / at the first step; ~1 linear, > 2 super-linear):")
        for tool in tools:
            ratio = report.linearity(tool, concurrency)
            say(f"  {LABELS[tool]:<12} {fmt(ratio, suffix='x'):>8}  {_verdict(ratio)}")
    say()
    report.print_notes()


# --------------------------------------------------------------------------
# Command line


TOO_SMALL = "every value must be >= {minimum}: {text}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mounts",
        description="How start+reap time of a /bin/true container grows with the number of bind "
        "mounts: anyns against trio.run_process + bwrap, in the same run.",
    )
    parser.add_argument(
        "--binds",
        type=lambda text: sorted(set(common.int_list(text, 0, TOO_SMALL))),
        default=None,
        help=f"comma-separated numbers of bind mounts (default {common.joined(DEFAULT_BINDS)})",
    )
    parser.add_argument(
        "--n",
        type=common.positive_int,
        default=None,
        help=f"containers per (tool, binds, concurrency) (default {DEFAULT_N})",
    )
    common.add_concurrency_option(parser, DEFAULT_CONCURRENCY, lambda text: common.int_list(text, 1, TOO_SMALL))
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"CI smoke: binds {common.joined(QUICK_BINDS)}, n={QUICK_N} (explicit --binds/--n win)",
    )
    parser.add_argument(
        "--rounds",
        type=common.positive_int,
        default=None,
        help=f"split each (tool, binds) batch of --n into this many rounds; every round runs all "
        f"(tool, binds) cells, so drift hits every N alike (default {DEFAULT_ROUNDS}, --quick {QUICK_ROUNDS})",
    )
    common.add_warmup_option(parser, DEFAULT_WARMUP, "runs per (tool, binds)", minimum=1)
    common.add_json_option(parser, "mounts")
    parser.add_argument(
        "--max-superlinearity",
        type=float,
        default=None,
        metavar="X",
        help="exit 1 if anyns's linearity ratio (ms per bind at the largest N step / at the first "
        "step) exceeds X at any concurrency",
    )
    common.add_hidden_options(parser, DEFAULT_TIMEOUT, TOOLS)  # e.g. --tools bwrap
    args = parser.parse_args(argv)
    common.apply_defaults(
        args,
        binds=(list(QUICK_BINDS), list(DEFAULT_BINDS)),
        n=(QUICK_N, DEFAULT_N),
        concurrency=(list(DEFAULT_CONCURRENCY), list(DEFAULT_CONCURRENCY)),
        rounds=(QUICK_ROUNDS, DEFAULT_ROUNDS),
    )
    args.rounds = min(args.rounds, args.n)
    return args


def check_gate(report: Report, limit: float) -> bool:
    """True unless anyns's linearity ratio exceeds ``limit`` at some concurrency."""
    ok = True
    for concurrency in report.config["concurrency"]:
        ratio = report.linearity("anyns", concurrency)
        if ratio is None:
            say(f"--max-superlinearity {limit}: no anyns linearity ratio at C={concurrency}; not evaluated")
            continue
        passed = ratio <= limit
        ok = ok and passed
        verdict = "ok" if passed else "ABOVE LIMIT"
        say(f"--max-superlinearity {limit}: anyns at C={concurrency} = {ratio:.2f}x, {verdict}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    report.machine = common.describe_machine(unshare=False)
    report.machine["anyns_revision"] = common.anyns_revision()
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
    say(
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
    say(f"{len(sources)} source directories under {parent}")
    try:
        if not common.run_trio(report, "anyns" in args.tools, async_main, report, args, sources):
            return 130
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    common.finish(report, args.json, print_summary)
    return report.exit_status(args.max_superlinearity is None or check_gate(report, args.max_superlinearity))


if __name__ == "__main__":
    sys.exit(main())
