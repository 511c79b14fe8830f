"""What the benchmark scripts share: written once here, used by every part.

* paths and the payload: ``REPO_ROOT``, ``RESULTS``, ``PAYLOAD``;
* output: ``say``, ``format_exc``, ``short_exc``, ``fmt``, ``load_line``,
  ``machine_line``, ``versions_line``, ``print_banner``, ``print_table``,
  ``print_ratios``, ``write_json``;
* the machine: ``proc_int``, ``describe_machine``, ``anyns_revision``,
  ``import_anyns``;
* the peers: ``bwrap_argv`` (the bwrap command equivalent to anyns's default
  container), ``preflight_peer``, ``process_runner``;
* measuring: ``settle`` (before every batch), ``in_flight``,
  ``timed_batch``, ``warm``, ``rotate``, ``percentile``, ``ms_summary``;
* results: ``Batch`` (the first fields of a measurement), ``BaseReport``
  (machine, config, anyns's error) and ``ToolReport`` (a part that measures
  tools against each other), ``measure_levels`` (the interleaved run of
  spawn.py and latency.py), ``run_trio``, ``finish``;
* the command line: ``positive_int``, ``split_list``, ``int_list``,
  ``choice_list``, ``joined``, ``add_concurrency_option``,
  ``add_json_option``, ``add_hidden_options``, ``apply_defaults``.

Not a part: ``python -m benchmarks`` does not run it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import trio

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"
PAYLOAD = "/bin/true"

T = TypeVar("T")
R = TypeVar("R")
RunOne = Callable[[], Awaitable[object]]


# --------------------------------------------------------------------------
# Output


def say(msg: str = "") -> None:
    print(msg, flush=True)


def format_exc(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()


def short_exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    """``x`` formatted with ``spec`` and ``suffix``, or ``-`` when there is none."""
    return "-" if x is None else f"{x:{spec}}{suffix}"


LOAD_ADVICE = " (other work on the machine skews every tool; rerun when quiet)"


def load_line(machine: dict[str, Any], advice: bool = False) -> str:
    return f"load average before the run: {machine['loadavg_start'][0]:.2f}" + (LOAD_ADVICE if advice else "")


def machine_line(machine: dict[str, Any]) -> str:
    return (
        f"nproc={machine.get('nproc')} kernel={machine.get('kernel')} python={machine.get('python')}"
        f" trio={machine.get('trio')}"
    )


def versions_line(machine: dict[str, Any]) -> str:
    """The CPU and the tools' versions (unshare's when the machine description has it)."""
    unshare = f" unshare={machine.get('unshare')}" if "unshare" in machine else ""
    return f"cpu={machine.get('cpu_model')} bwrap={machine.get('bwrap')}{unshare} anyns={machine.get('anyns')}"


def print_banner(width: int, *lines: str) -> None:
    """The head of a part's summary: a blank line, a rule ``width`` wide, then ``lines``."""
    say()
    say("=" * width)
    for line in lines:
        say(line)


def print_table(header: str, row: Callable[[T], str], items: Iterable[T]) -> None:
    say(header)
    for item in items:
        say(row(item))


def print_ratios(rows: Sequence[dict[str, Any]], heads: Sequence[str], cell: Callable[[float | None], str]) -> None:
    """One line per concurrency level of ``rows`` (``ToolReport.ratio_rows``), a column per head."""
    width = max(16, *(len(h) for h in heads))
    say(f"{'C':>5} " + " ".join(f"{h:>{width}}" for h in heads))
    for row in rows:
        say(f"{row['concurrency']:>5} " + " ".join(f"{cell(row[h]):>{width}}" for h in heads))


def write_json(path: Path, data: Any, announce: bool = True) -> None:
    """Write ``data`` to ``path`` whole or not at all (through a temporary file beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    if announce:
        say(f"results written to {path}")


# --------------------------------------------------------------------------
# The machine


def proc_line(path: str, prefix: str) -> str | None:
    """The first line of ``path`` (a /proc file) that starts with ``prefix``; None if none or unreadable."""
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            if line.startswith(prefix):
                return line
    return None


def proc_int(path: str, prefix: str) -> int | None:
    """The number after ``prefix`` on its line of ``path`` (``MemAvailable: 123 kB`` -> 123)."""
    line = proc_line(path, prefix)
    try:
        return None if line is None else int(line.split()[1])
    except (ValueError, IndexError):
        return None


def _command_version(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else None


def _cpu_model() -> str | None:
    line = proc_line("/proc/cpuinfo", "model name")
    return None if line is None else line.split(":", 1)[1].strip()


def describe_machine(unshare: bool = True) -> dict[str, Any]:
    """What the figures depend on; ``unshare``: with the unshare CLI's version (a peer of spawn only)."""
    machine: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "trio": trio.__version__,
        "anyns": None,  # filled in once anyns is imported
        "bwrap": _command_version(["bwrap", "--version"]),
        "unshare": _command_version(["unshare", "--version"]) if unshare else None,  # dropped below if not wanted
        "euid": os.geteuid(),
        "loadavg_start": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if not unshare:
        del machine["unshare"]
    return machine


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


def import_anyns(machine: dict[str, Any]) -> Any:
    """``import anyns``, late (a broken anyns still lets the peers run), and note its version in ``machine``."""
    import anyns

    machine["anyns"] = getattr(anyns, "__version__", "unknown")
    return anyns


# --------------------------------------------------------------------------
# The peers


def bwrap_argv(program: Sequence[str] = (PAYLOAD,), extra: Sequence[str] = (), bwrap: str = "bwrap") -> list[str]:
    """The bwrap command line equivalent to anyns' default container, running ``program``.

    ``extra`` goes just before the program (``mounts.py``'s binds). ``/bin``,
    ``/lib``, ``/lib64`` and ``/sbin`` become symlinks when they are symlinks
    on the host (merged /usr); on a host where one is a real directory it is
    bind-mounted read-only instead, so ``/bin/true`` still resolves.
    """
    argv = [
        bwrap,
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-ipc",
        "--unshare-net",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for name in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(name):
            argv += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            argv += ["--ro-bind", name, name]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    return [*argv, *extra, *program]


async def preflight_peer(argv: list[str]) -> str | None:
    """Return why the peer cannot be measured, or None if ``argv`` works."""
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} not found on PATH"
    try:
        proc = await trio.run_process(argv, capture_stderr=True, check=False)
    except OSError as exc:
        return f"cannot start {argv[0]}: {exc}"
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        return f"{argv[0]} exited {proc.returncode}: {err or '(no stderr)'}"
    return None


def process_runner(argv: list[str]) -> RunOne:
    """One run of a peer: ``trio.run_process(argv)``."""

    async def run_one() -> object:
        return await trio.run_process(argv)  # check=True: a failure raises

    return run_one


# --------------------------------------------------------------------------
# Measuring


async def settle(max_seconds: float = 5.0) -> None:
    """Let the previous batch's asynchronous teardown finish.

    Network namespaces are freed by a kernel workqueue after their last
    process exits; a batch that starts while that still runs would pay for
    its predecessor. We wait until the ``net_namespace`` slab count stops
    changing (or for a fixed pause when /proc/slabinfo is unreadable).
    """
    gc.collect()
    await trio.sleep(0.1)
    last = proc_int("/proc/slabinfo", "net_namespace ")
    if last is None:
        await trio.sleep(0.5)
        return
    stable = 0
    deadline = time.monotonic() + max_seconds
    while stable < 4 and time.monotonic() < deadline:
        await trio.sleep(0.05)
        now = proc_int("/proc/slabinfo", "net_namespace ")
        stable = stable + 1 if now == last else 0
        last = now


async def in_flight(n: int, concurrency: int, one: Callable[[int], Awaitable[object]]) -> float:
    """Call ``one(0)`` .. ``one(n - 1)`` with exactly ``concurrency`` in flight; return the wall seconds.

    ``concurrency`` worker tasks pull the next index from a shared counter.
    """
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            await one(i)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, n)):
            nursery.start_soon(worker)
    return time.perf_counter() - start


async def timed_batch(run_one: RunOne, n: int, concurrency: int) -> tuple[list[float], float]:
    """Run ``run_one`` n times with exactly ``concurrency`` calls in flight; (latencies in s, wall s)."""
    latencies = [0.0] * n

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await run_one()
        latencies[i] = time.perf_counter() - t0

    seconds = await in_flight(n, concurrency, one)
    return latencies, seconds


async def warm(run_one: RunOne, count: int) -> None:
    """``count`` untimed runs."""
    for _ in range(count):
        await run_one()


def rotate(items: Sequence[T], k: int) -> list[T]:
    """``items`` starting at ``k`` (modulo their number): no fixed predecessor from round to round."""
    if not items:
        return []
    k %= len(items)
    return [*items[k:], *items[:k]]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def ms_summary(
    seconds: Iterable[float], stats: Sequence[str] = ("p50", "p90", "p99", "mean", "max"), prefix: str = ""
) -> dict[str, float]:
    """``{prefix}{stat}_ms`` of durations in seconds, for each stat: ``pNN``, ``mean``, ``min``, ``max``."""
    lat = sorted(x * 1000.0 for x in seconds)
    out: dict[str, float] = {}
    for stat in stats:
        if stat == "mean":
            value = sum(lat) / len(lat)
        elif stat == "min":
            value = lat[0]
        elif stat == "max":
            value = lat[-1]
        else:
            value = percentile(lat, float(stat.removeprefix("p")))
        out[f"{prefix}{stat}_ms"] = value
    return out


# --------------------------------------------------------------------------
# Results


@dataclass
class Batch:
    """The first figures of a measurement: one tool, ``n`` runs at ``concurrency`` in flight, in ``seconds``."""

    tool: str
    label: str
    concurrency: int
    n: int
    seconds: float


@dataclass
class BaseReport:
    """What every part reports: the machine, its configuration and anyns's error (None: it worked)."""

    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    anyns_error: str | None = None

    def add_anyns_error(self, text: str) -> None:
        self.anyns_error = "\n".join(filter(None, [self.anyns_error, text]))

    def exit_status(self, gate_ok: bool = True) -> int:
        """0, or 1 when anyns failed or the part's gate (an option such as ``--min-ratio``) was not met."""
        return 0 if self.anyns_error is None and gate_ok else 1

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class ToolReport(BaseReport):
    """A part that measures tools against each other: their commands, measurements and skips.

    A subclass names its tools' ``labels`` and ``notes``; a measurement is a
    dataclass with at least ``tool``.
    """

    labels: ClassVar[dict[str, str]] = {}
    notes: ClassVar[dict[str, str]] = {}

    commands: dict[str, str] = field(default_factory=dict)
    measurements: list[Any] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def find(self, **match: Any) -> Any | None:
        """The measurement whose fields have the values of ``match``, or None."""
        for m in self.measurements:
            if all(getattr(m, k) == v for k, v in match.items()):
                return m
        return None

    def in_order(self, **axes: Iterable[Any]) -> Iterator[Any]:
        """The measurements along ``axes`` (field -> values; the first outermost), the missing ones left out."""
        names = list(axes)
        for values in itertools.product(*axes.values()):
            m = self.find(**dict(zip(names, values, strict=True)))
            if m is not None:
                yield m

    def ratio(self, num: str, den: str, key: str, **match: Any) -> float | None:
        """``key`` of tool ``num`` over that of ``den`` (None: either is missing, or den's is 0)."""
        a, b = self.find(tool=num, **match), self.find(tool=den, **match)
        if a is None or b is None or not getattr(b, key):
            return None
        return float(getattr(a, key) / getattr(b, key))

    def ratio_rows(self, pairs: Iterable[tuple[str, str]], keys: dict[str, str]) -> list[dict[str, Any]]:
        """Per concurrency level, ``"num/den" + suffix``: the ratio of the field ``keys[suffix]``."""
        out = []
        for c in self.config.get("concurrency", []):
            row: dict[str, Any] = {"concurrency": c}
            for num, den in pairs:
                for suffix, key in keys.items():
                    row[f"{num}/{den}{suffix}"] = self.ratio(num, den, key, concurrency=c)
            out.append(row)
        return out

    def json_with(self, benchmark: str, intro: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
        """The part's JSON: ``benchmark``, ``intro``, the machine, config, commands and notes,
        ``results``, then the skips and anyns's error."""
        return {
            "benchmark": benchmark,
            **intro,
            "machine": self.machine,
            "config": self.config,
            "commands": self.commands,
            "notes": {t: self.notes[t] for t in self.config.get("tools", [])},
            **results,
            "skipped": self.skipped,
            "anyns_error": self.anyns_error,
        }

    def skip(self, tool: str, reason: str) -> None:
        self.skipped[tool] = reason
        say(f"-- skipping {self.labels[tool]}: {reason}")

    async def admit_peer(self, tool: str, preflight_argv: list[str]) -> bool:
        """Whether ``preflight_argv`` runs; if not, ``tool`` is skipped with the reason."""
        reason = await preflight_peer(preflight_argv)
        if reason is not None:
            self.skip(tool, reason)
        return reason is None

    def fail(self, tool: str, where: str, exc: BaseException, anyns: bool, prefix: str = "") -> None:
        """``tool`` failed ``where``: anyns's error when ``anyns`` (after ``prefix``), else a skip."""
        if anyns:
            error = f"{prefix}{where}: {format_exc(exc)}"
            self.add_anyns_error(error)
            say(f"!! {self.labels[tool]} FAILED during {where}:\n{error}")
        else:
            self.skip(tool, f"failed during {where}: {short_exc(exc)}")

    def setup_failed(self, exc: BaseException) -> None:
        """anyns could not even start (import, spec or supervisor)."""
        self.anyns_error = f"setup: {format_exc(exc)}"
        say(f"!! anyns FAILED to start:\n{self.anyns_error}")

    def print_notes(self) -> None:
        """The end of a part's summary: what each tool ran, what was skipped, whether anyns failed."""
        for tool in self.config["tools"]:
            say(f"  {self.labels[tool]}: {self.notes[tool]}")
        for tool, reason in self.skipped.items():
            say(f"  skipped {self.labels[tool]}: {reason}")
        if self.anyns_error:
            say("  anyns FAILED (see above)")


async def measure_levels(
    report: ToolReport,
    runners: dict[str, R],
    args: argparse.Namespace,
    measure: Callable[[str, R, int, int], Awaitable[Any]],
    warm_up: Callable[[R, int], Awaitable[object]],
    fail: Callable[[str, str, BaseException], None],
    header: str,
    row: Callable[[Any], str],
    warm_timeout: float = math.inf,
) -> None:
    """Warm every runner up, then measure every tool at each concurrency level, interleaved.

    ``args`` are the part's options: ``n``, ``concurrency``, ``warmup`` and
    ``timeout``. First ``warm_up(runner, args.warmup)`` for each runner
    (within ``warm_timeout`` seconds); then all tools run at one level before
    the next level starts, their order (``config["tools"]``) rotating from
    level to level; every batch, ``measure(tool, runner, args.n,
    concurrency)``, starts after ``settle()`` and must end within
    ``args.timeout`` seconds. A tool that fails is dropped from ``runners``
    and ``fail(tool, where, exc)`` is told; each measurement goes to
    ``report.measurements`` and is printed, a ``row`` under ``header``.
    """

    def drop(tool: str, where: str, exc: BaseException) -> None:
        runners.pop(tool, None)
        fail(tool, where, exc)

    for tool, runner in list(runners.items()):
        try:
            with trio.fail_after(warm_timeout):
                await warm_up(runner, args.warmup)
        except Exception as exc:
            drop(tool, "warm-up", exc)

    say()
    say(header)
    for level, concurrency in enumerate(args.concurrency):
        for tool in rotate([t for t in report.config["tools"] if t in runners], level):
            if tool not in runners:  # dropped after a failure
                continue
            runner = runners[tool]
            await settle()
            try:
                with trio.fail_after(args.timeout):
                    m = await measure(tool, runner, args.n, concurrency)
            except Exception as exc:
                drop(tool, f"C={concurrency}", exc)
                continue
            report.measurements.append(m)
            say(row(m))


def run_trio(report: BaseReport, measures_anyns: bool, async_fn: Callable[..., Awaitable[object]], *args: Any) -> bool:
    """``trio.run(async_fn, *args)``; False when interrupted (^C).

    An exception that escapes it (the supervisor's close, or a crash in its
    own tasks: ``async_fn`` catches everything else) is anyns's fault, and
    goes to its error, when ``measures_anyns``; otherwise it is raised.
    """
    try:
        trio.run(async_fn, *args)
    except KeyboardInterrupt:
        say("interrupted")
        return False
    except Exception as exc:
        if not measures_anyns:
            raise
        report.add_anyns_error(format_exc(exc))
        say(f"!! anyns FAILED:\n{format_exc(exc)}")
    return True


def finish(report: BaseReport, json_path: Path, print_summary: Callable[[Any], None]) -> None:
    """Note the load at the end, print the summary, write the JSON."""
    report.machine["loadavg_end"] = os.getloadavg()
    print_summary(report)
    write_json(json_path, report.to_json())


# --------------------------------------------------------------------------
# Command line


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def split_list(text: str) -> list[str]:
    """The non-empty items of a comma-separated list, stripped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def int_list(
    text: str, minimum: int = 1, too_small: str = "must be >= {minimum}: {value}", empty: str = "empty list"
) -> list[int]:
    """Comma-separated integers, each >= ``minimum``; the messages may name ``minimum``, ``value`` and ``text``."""
    try:
        values = [int(part) for part in split_list(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not values:
        raise argparse.ArgumentTypeError(empty.format(minimum=minimum, text=text))
    for value in values:
        if value < minimum:
            raise argparse.ArgumentTypeError(too_small.format(minimum=minimum, value=value, text=text))
    return values


def choice_list(text: str, choices: Sequence[str], what: str) -> list[str]:
    """Comma-separated ``choices``, returned in their canonical order (so tables and ratios line up)."""
    values = split_list(text)
    bad = [v for v in values if v not in choices]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"unknown {what}(s) {bad}; choose from {','.join(choices)}")
    return [c for c in choices if c in values]


def joined(values: Iterable[object]) -> str:
    return ",".join(map(str, values))


def add_concurrency_option(
    parser: argparse.ArgumentParser, default: Sequence[int], parse: Callable[[str], list[int]] = int_list
) -> None:
    parser.add_argument(
        "--concurrency",
        type=parse,
        default=None,
        help=f"comma-separated in-flight counts (default {joined(default)})",
    )


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def add_warmup_option(parser: argparse.ArgumentParser, default: int, what: str, *, minimum: int = 0) -> None:
    """--warmup: ``what`` are the untimed runs made before measuring."""
    parser.add_argument(
        "--warmup",
        type=positive_int if minimum else non_negative_int,
        default=default,
        help=f"untimed {what} before measuring{', >= 1' if minimum else ''} (default {default})",
    )


def add_json_option(parser: argparse.ArgumentParser, part: str) -> None:
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS / f"{part}.json",
        metavar="PATH",
        help=f"where to write results (default benchmarks/results/{part}.json)",
    )


def add_hidden_options(parser: argparse.ArgumentParser, timeout: float, tools: Sequence[str] | None = None) -> None:
    """``--timeout`` (seconds per batch: a hang fails, not stalls) and ``--tools`` (a subset of ``tools``)."""
    parser.add_argument("--timeout", type=float, default=timeout, help=argparse.SUPPRESS)
    if tools is not None:
        parser.add_argument(
            "--tools",
            type=lambda text: choice_list(text, tools, "tool"),
            default=list(tools),
            help=argparse.SUPPRESS,  # e.g. --tools bwrap
        )


def apply_defaults(args: argparse.Namespace, **defaults: tuple[Any, Any]) -> None:
    """For each option left out (None): its ``(quick, default)`` value, by ``args.quick``."""
    for name, (quick, default) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)


def save_figure(fig: Any, out: Path) -> None:
    """Lay out a matplotlib figure, write it to ``out`` (making its directory) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
