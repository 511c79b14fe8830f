"""Many containers running at once: start time, supervisor memory and fds, loop responsiveness.

What is measured
----------------
For each N (default 1000) the script starts N containers that run
``sleep 1000``, with ``--batch`` (default 64) starts in flight at a time:
``--batch`` starter tasks pull from a shared counter and each calls
``await nursery.start(functools.partial(sup.run, check=False), spec)`` on one
nursery that holds every container. Then, with all N running:

* **start**: the wall time to start all N (and containers/s);
* **memory**: the supervisor's VmRSS before and with the N running, per
  running container; the zygote's VmRSS; the host's ``MemAvailable`` drop
  per container (kernel, container processes and all: a rough figure);
* **fds**: the supervisor's open file descriptors before, with the N
  running (per container) and after teardown;
* **alive**: every container's ``/proc/PID`` exists and is not a zombie
  (a failed start or a dead container makes the exit status 1);
* **loop responsiveness**: a task runs ``await trio.sleep(0.01)`` in a loop
  and records how late each wake-up is (``trio.current_time()`` overshoot).
  Its p50/p99/worst are reported per phase: ``quiet`` (before any container,
  the reference), ``spawning`` (starting at full rate), ``idle`` (all N
  running, ``--idle`` seconds, default 2) and ``teardown``. Spawn lateness
  and teardown lateness are separate figures (``spawn_lateness_ms``,
  ``teardown_lateness_ms``: p99 and worst);
* **teardown**: ``--teardown cancel`` (the default) cancels the nursery that
  holds all N at once, as a service shutting down does, so that every
  ``sup.run`` kills and reaps its own container; ``--teardown kill`` calls
  ``Container.kill()`` on all N in one loop instead. Reported: the time of
  that synchronous call (``teardown_call_ms``) and the time until every
  ``sup.run`` has returned (``teardown_seconds``: reaped, unwired);
* **garbage collector**: every collection in the benchmark process is timed
  (``gc.callbacks``), per phase and generation, so that a lateness spike can
  be told apart from a full (generation 2) collection.

``--gc`` compares ways to keep the cyclic GC from pausing the loop, each a
separate trial at every N (interleaved: all modes at one N before the next):

``default``
    the interpreter's defaults.
``freeze``
    ``gc.freeze()`` each time ``--batch`` more containers have started (and
    once after the last), so the objects of running containers move to the
    permanent generation and later collections skip them; ``gc.unfreeze()``
    after teardown. (``--gc-freeze`` is short for ``--gc default,freeze``.)
``disable``
    ``gc.disable()`` from just before the first start to just after
    teardown: the lower bound (no collections at all), not a recipe.

Run ``python benchmarks/scale.py --help`` (or ``python -m benchmarks.scale``)
from the repository root, as root. Results go to
``benchmarks/results/scale.json``. Exit status: 0, or 1 when anyns fails,
a container fails to start, or one is not alive before teardown.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

if not __package__:  # python benchmarks/scale.py: import this directory as the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks._common import fmt, say

DEFAULT_NS = (1000,)
QUICK_NS = (100,)
DEFAULT_BATCH = 64
DEFAULT_IDLE = 2.0  # seconds with all N running
QUICK_IDLE = 0.5
QUIET = 0.5  # seconds of lateness reference before each trial
TICK = 0.01  # the periodic task's sleep
DEFAULT_WARMUP = 20
DEFAULT_TIMEOUT = 900.0  # seconds per trial
SETTLE_MAX = 60.0  # seconds to wait for the previous trial's netns teardown
GC_MODES = ("default", "freeze", "disable")
PHASES = ("quiet", "spawning", "idle", "teardown")
TEARDOWNS = ("cancel", "kill")
ARGV = ("sleep", "1000")
TARGETS = {  # docs/design.md, "Performance targets"
    "running containers, first bar": 1000,
    "running containers, goal": 10000,
    "supervisor KiB per running container, first bar": 200,
    "supervisor KiB per running container, goal": 50,
}
SPEC_TEXT = "anyns.ContainerSpec(argv=['sleep', '1000'])"
COMMAND = (
    "async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery: "
    f"await nursery.start(functools.partial(sup.run, check=False), {SPEC_TEXT})  # BATCH at a time"
)


# --------------------------------------------------------------------------
# /proc


def rss_kib(pid: int | str = "self") -> int | None:
    """VmRSS of ``pid`` in KiB (None if it is gone)."""
    return common.proc_int(f"/proc/{pid}/status", "VmRSS:")


def private_kib(pid: int) -> int | None:
    """Private_Clean + Private_Dirty of ``pid`` in KiB (/proc/PID/smaps_rollup): what it alone costs."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f.read().splitlines()[1:])
    except (OSError, ValueError):
        return None
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty") if k in fields)


def open_fds() -> int:
    """This process's open file descriptors (not counting the one listing them)."""
    return len(os.listdir("/proc/self/fd")) - 1


def mem_available_kib() -> int | None:
    return common.proc_int("/proc/meminfo", "MemAvailable:")


def _children() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
                yield from (int(p) for p in f.read().split())


def find_zygote() -> int | None:
    """The pid of this process's anyns zygote (a child whose command line names ``_zygote``)."""
    for pid in _children():
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"_zygote" in f.read():
                return pid
    return None


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from ``/proc/PID/stat`` (None if it does not exist)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(b")") + 2 :].split(b" ", 1)[0].decode()


# --------------------------------------------------------------------------
# Loop lateness and GC pauses


class LagMonitor:
    """``trio.sleep(TICK)`` in a loop; each wake-up's overshoot goes to the current phase.

    A tick counts for the phase it ends in, unless the phase was None (the
    measurements between phases, which block the loop on purpose) at some
    point while it slept. Each tick also
    records where its time went, to tell the causes of a late tick apart:
    the loop thread's time on a CPU and waiting for one (``/proc/thread-self/
    schedstat``), and the time spent in garbage collections (``GcTimer``).
    """

    def __init__(self) -> None:
        self._phase: str | None = None
        self._pauses = 0  # how many times the phase was set to None
        #: phase -> [(late, on_cpu, runqueue_wait, gc), ...] in seconds
        self.samples: dict[str, list[tuple[float, float, float, float]]] = {}
        self.gc_seconds = 0.0  # added to by GcTimer, taken by each tick

    @property
    def phase(self) -> str | None:
        return self._phase

    @phase.setter
    def phase(self, value: str | None) -> None:
        if value is None:
            self._pauses += 1
        self._phase = value

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1

        def sched() -> tuple[int, int]:
            if fd < 0:
                return 0, 0
            on_cpu, waiting, _ = os.pread(fd, 128, 0).split()
            return int(on_cpu), int(waiting)

        try:
            task_status.started()
            while True:
                pauses = self._pauses
                cpu0, wait0 = sched()
                self.gc_seconds = 0.0
                t0 = trio.current_time()
                await trio.sleep(TICK)
                late = trio.current_time() - t0 - TICK
                cpu1, wait1 = sched()
                phase = self._phase
                if phase is not None and self._pauses == pauses:
                    tick = (late, (cpu1 - cpu0) / 1e9, (wait1 - wait0) / 1e9, self.gc_seconds)
                    self.samples.setdefault(phase, []).append(tick)
        finally:
            if fd >= 0:
                os.close(fd)

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for phase in PHASES:
            ticks = self.samples.get(phase, [])
            if not ticks:
                continue
            worst = sorted(ticks, reverse=True)[:3]
            out[phase] = {
                "ticks": len(ticks),
                **common.ms_summary((t[0] for t in ticks), ("p50", "p99", "max")),
                # the three latest ticks: how late, and the loop thread's time on a CPU, waiting
                # for a CPU, and collecting garbage during that tick (10 ms + late)
                "worst": [
                    {"late_ms": a * 1e3, "on_cpu_ms": b * 1e3, "runqueue_wait_ms": c * 1e3, "gc_ms": d * 1e3}
                    for a, b, c, d in worst
                ],
            }
        return out


class GcTimer:
    """Times every collection of this process (``gc.callbacks``), per phase and generation."""

    def __init__(self, lag: LagMonitor) -> None:
        self.lag = lag
        self._t0 = 0.0
        self.events: dict[str, list[tuple[int, float]]] = {}

    def __call__(self, what: str, info: dict[str, int]) -> None:
        if what == "start":
            self._t0 = time.perf_counter()
            return
        seconds = time.perf_counter() - self._t0
        self.lag.gc_seconds += seconds
        if self.lag.phase is not None:
            self.events.setdefault(self.lag.phase, []).append((info["generation"], seconds))

    @contextlib.contextmanager
    def installed(self) -> Iterator[GcTimer]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)

    def summary(self) -> dict[str, dict[str, dict[str, float | int]]]:
        out: dict[str, dict[str, dict[str, float | int]]] = {}
        for phase in PHASES:
            per_gen: dict[str, dict[str, float | int]] = {}
            for gen in (0, 1, 2):
                times = [s * 1000.0 for g, s in self.events.get(phase, []) if g == gen]
                if times:
                    per_gen[f"gen{gen}"] = {"count": len(times), "total_ms": sum(times), "max_ms": max(times)}
            if per_gen:
                out[phase] = per_gen
        return out


# --------------------------------------------------------------------------
# Results


@dataclass
class Trial:
    n: int
    gc_mode: str
    batch: int
    #: how the N are ended: "cancel" (the nursery holding them is cancelled) or "kill" (Container.kill() on each)
    teardown: str = "cancel"
    started: int = 0
    failures: int = 0
    failure_examples: list[str] = field(default_factory=list)
    start_seconds: float | None = None
    per_second: float | None = None
    alive: int | None = None
    not_alive: list[str] = field(default_factory=list)
    rss_before_kib: int | None = None
    rss_running_kib: int | None = None
    rss_after_kib: int | None = None
    rss_per_container_kib: float | None = None
    fds_before: int | None = None
    fds_running: int | None = None
    fds_after: int | None = None
    fds_per_container: float | None = None
    zygote_pid: int | None = None
    zygote_rss_before_kib: int | None = None
    zygote_rss_running_kib: int | None = None
    #: mean private memory of a container's pid 1 (the init, ContainerSpec.init=True), over up to 50 of them
    init_private_kib: float | None = None
    host_kib_per_container: float | None = None
    gc_objects_running: int | None = None
    #: from the start of the teardown until every sup.run has returned (killed, reaped, unwired)
    teardown_seconds: float | None = None
    #: the synchronous call that starts it: cancel_scope.cancel(), or the loop of N Container.kill()
    teardown_call_ms: float | None = None
    lag: dict[str, dict[str, Any]] = field(default_factory=dict)
    gc_pauses: dict[str, dict[str, dict[str, float | int]]] = field(default_factory=dict)
    unfreeze_collect_ms: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.failures == 0 and self.alive == self.n

    def lateness(self, phase: str) -> dict[str, float] | None:
        """A phase's loop lateness, p99 and worst ms (None if it had no tick)."""
        lag = self.lag.get(phase)
        return None if not lag else {"p99_ms": lag["p99_ms"], "max_ms": lag["max_ms"]}

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ok": self.ok,
            "spawn_lateness_ms": self.lateness("spawning"),
            "teardown_lateness_ms": self.lateness("teardown"),
        }


@dataclass
class Report(common.BaseReport):
    trials: list[Trial] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "scale",
            "argv": list(ARGV),
            "machine": self.machine,
            "config": self.config,
            "commands": {"anyns": COMMAND},
            "notes": {
                "lag": f"lateness of a trio.sleep({TICK}) loop, per phase",
                "rss_per_container_kib": "(supervisor VmRSS with N running - before) / N",
                "init_private_kib": "Private_Clean + Private_Dirty of each container's pid 1, the init "
                "(smaps_rollup), mean over up to 50; goal <= 256 KiB. The init is an exec'd static binary: its "
                "text counts as private only while a single container runs",
                "host_kib_per_container": "(MemAvailable before - with N running) / N: kernel, "
                "container processes, zygote and supervisor together; rough",
                "gc_modes": {
                    "default": "interpreter defaults",
                    "freeze": "gc.freeze() after every BATCH started containers and after the last; "
                    "gc.unfreeze() after teardown",
                    "disable": "gc.disable() from the first start to the end of teardown (lower bound)",
                },
            },
            "targets": TARGETS,
            "trials": [t.to_json() for t in self.trials],
            "anyns_error": self.anyns_error,
        }


# --------------------------------------------------------------------------
# Running


@contextlib.contextmanager
def gc_mode_applied(mode: str) -> Iterator[None]:
    """``disable``: collections off inside; otherwise nothing (``freeze`` acts while spawning)."""
    was_enabled = gc.isenabled()
    if mode == "disable":
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def run_trial(sup: Any, spec: Any, trial: Trial, idle: float) -> list[Any]:
    """One trial: start ``trial.n``, measure, check, idle, tear down. Fills ``trial``."""
    n, batch = trial.n, trial.batch
    await common.settle(SETTLE_MAX)
    gc.collect()
    trial.zygote_pid = find_zygote()
    trial.rss_before_kib = rss_kib()
    trial.fds_before = open_fds()
    trial.zygote_rss_before_kib = rss_kib(trial.zygote_pid) if trial.zygote_pid else None
    mem_before = mem_available_kib()

    lag = LagMonitor()
    gc_timer = GcTimer(lag)
    boxes: list[Any] = []
    with gc_timer.installed():
        async with trio.open_nursery() as monitor:
            await monitor.start(lag.run)
            lag.phase = "quiet"
            await trio.sleep(QUIET)
            lag.phase = None
            with gc_mode_applied(trial.gc_mode):
                async with trio.open_nursery() as containers:

                    async def start_one(_: int) -> None:
                        try:
                            box = await containers.start(functools.partial(sup.run, check=False), spec)
                        except Exception as exc:
                            trial.failures += 1
                            if len(trial.failure_examples) < 5:
                                trial.failure_examples.append(common.short_exc(exc))
                            return
                        boxes.append(box)
                        if trial.gc_mode == "freeze" and len(boxes) % batch == 0:
                            gc.freeze()

                    lag.phase = "spawning"
                    trial.start_seconds = await common.in_flight(n, batch, start_one)
                    lag.phase = None
                    if trial.gc_mode == "freeze":
                        gc.freeze()
                    trial.started = len(boxes)
                    trial.per_second = len(boxes) / trial.start_seconds

                    trial.rss_running_kib = rss_kib()
                    trial.fds_running = open_fds()
                    mem_running = mem_available_kib()
                    if trial.zygote_pid:
                        trial.zygote_rss_running_kib = rss_kib(trial.zygote_pid)
                    trial.gc_objects_running = len(gc.get_objects()) + gc.get_freeze_count()
                    sample = [k for k in (private_kib(box.pid) for box in boxes[:50]) if k is not None]
                    trial.init_private_kib = sum(sample) / len(sample) if sample else None
                    if boxes:
                        if trial.rss_before_kib is not None and trial.rss_running_kib is not None:
                            trial.rss_per_container_kib = (trial.rss_running_kib - trial.rss_before_kib) / len(boxes)
                        trial.fds_per_container = (trial.fds_running - trial.fds_before) / len(boxes)
                        if mem_before is not None and mem_running is not None:
                            trial.host_kib_per_container = (mem_before - mem_running) / len(boxes)
                    trial.alive = 0
                    for box in boxes:
                        state = proc_state(box.pid)
                        if box.returncode is None and state not in (None, "Z", "X"):
                            trial.alive += 1
                        elif len(trial.not_alive) < 10:
                            trial.not_alive.append(f"pid {box.pid}: state {state}, returncode {box.returncode}")

                    lag.phase = "idle"
                    await trio.sleep(idle)
                    lag.phase = "teardown"
                    t1 = time.perf_counter()
                    if trial.teardown == "cancel":
                        containers.cancel_scope.cancel()  # every sup.run kills and reaps its own
                    else:
                        for box in boxes:
                            box.kill()
                    trial.teardown_call_ms = (time.perf_counter() - t1) * 1000.0
                trial.teardown_seconds = time.perf_counter() - t1
                lag.phase = None
            monitor.cancel_scope.cancel()
    trial.lag = lag.summary()
    trial.gc_pauses = gc_timer.summary()
    if trial.gc_mode == "freeze":
        t2 = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        trial.unfreeze_collect_ms = (time.perf_counter() - t2) * 1000.0
    gc.collect()
    trial.rss_after_kib = rss_kib()
    trial.fds_after = open_fds()
    return boxes


def lag_cell(lag: dict[str, Any] | None) -> str:
    """A phase's loop lateness (``Trial.lag[phase]``) as p99/worst ms."""
    return "-" if not lag else f"{lag['p99_ms']:.1f}/{lag['max_ms']:.1f}"


def _gc2_cell(trial: Trial, phase: str) -> str:
    g2 = trial.gc_pauses.get(phase, {}).get("gen2")
    return "-" if not g2 else f"{g2['count']}x{g2['max_ms']:.0f}"


HEADER = (
    f"{'N':>6} {'gc':>8} {'start s':>8} {'/s':>6} {'KiB/ctr':>8} {'fds/ctr':>8} {'zygote MiB':>10}"
    f" {'lag quiet':>10} {'lag spawn':>10} {'lag idle':>10} {'lag down':>10} {'down s':>7} {'alive':>6}"
)


def _row(t: Trial) -> str:
    zyg = None if t.zygote_rss_running_kib is None else t.zygote_rss_running_kib / 1024
    return (
        f"{t.n:>6} {t.gc_mode:>8} {fmt(t.start_seconds, '.2f'):>8} {fmt(t.per_second, '.0f'):>6}"
        f" {fmt(t.rss_per_container_kib, '.1f'):>8} {fmt(t.fds_per_container, '.2f'):>8} {fmt(zyg, '.1f'):>10}"
        + "".join(f" {lag_cell(t.lag.get(phase)):>10}" for phase in PHASES)
        + f" {fmt(t.teardown_seconds, '.2f'):>7} {fmt(t.alive, 'd'):>6}"
    )


async def trial_async(trial: Trial, args: argparse.Namespace) -> None:
    """In the trial's own process: open a supervisor, warm it up, run the trial."""
    import anyns  # imported late, as in spawn.py

    spec = anyns.ContainerSpec(argv=list(ARGV))
    try:
        async with anyns.open_supervisor() as sup:
            warm = anyns.ContainerSpec(argv=[common.PAYLOAD])
            for _ in range(args.warmup):
                await sup.run(warm)
            with trio.fail_after(args.timeout):
                await run_trial(sup, spec, trial, args.idle)
    except Exception as exc:
        trial.error = common.format_exc(exc)


def trial_main(args: argparse.Namespace) -> int:
    """``--trial-json PATH``: run one (N, gc mode) trial in this fresh process; write it to PATH."""
    trial = Trial(n=args.n[0], gc_mode=args.gc[0], batch=args.batch, teardown=args.teardown)
    trio.run(trial_async, trial, args)
    args.trial_json.write_text(json.dumps(asdict(trial)))
    return 0


def run_trial_process(n: int, mode: str, args: argparse.Namespace) -> Trial:
    """Run one trial in a fresh interpreter, so that its memory and GC figures start from the same state."""
    with tempfile.TemporaryDirectory(prefix="anyns-bench-scale-") as tmp:
        out = Path(tmp) / "trial.json"
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--trial-json",
            str(out),
            "--n",
            str(n),
            "--gc",
            mode,
            "--batch",
            str(args.batch),
            "--teardown",
            args.teardown,
            "--idle",
            str(args.idle),
            "--warmup",
            str(args.warmup),
            "--timeout",
            str(args.timeout),
        ]
        try:
            proc = subprocess.run(argv, cwd=common.REPO_ROOT, timeout=args.timeout + 60, check=False)
        except subprocess.TimeoutExpired:
            return Trial(
                n=n, gc_mode=mode, batch=args.batch, teardown=args.teardown,
                error=f"trial process timed out after {args.timeout + 60} s",
            )
        if proc.returncode != 0 or not out.exists():
            return Trial(n=n, gc_mode=mode, batch=args.batch, teardown=args.teardown,
                         error=f"trial process exited {proc.returncode}")
        return Trial(**json.loads(out.read_text()))


def run_all(report: Report, args: argparse.Namespace) -> None:
    say()
    say("each trial runs in a fresh interpreter; lag cells: p99/worst ms of a trio.sleep(0.01) loop's lateness;"
        f" teardown ('down'): {args.teardown}")
    say(HEADER)
    for n in args.n:
        for mode in args.gc:
            trial = run_trial_process(n, mode, args)
            report.trials.append(trial)
            if trial.error:
                say(f"!! N={n} gc={mode} FAILED: {trial.error.splitlines()[-1]}")
            say(_row(trial))
            for text in trial.failure_examples:
                say(f"   start failed: {text}")
            for text in trial.not_alive:
                say(f"   not alive: {text}")


def print_summary(report: Report) -> None:
    mc = report.machine
    common.print_banner(
        110,
        f"scale benchmark: N x '{' '.join(ARGV)}' running at once, started {report.config['batch']} at a time;"
        f" {common.machine_line(mc)} anyns={mc.get('anyns')} ({mc.get('anyns_revision')})",
        common.load_line(mc),
    )
    say("lag cells: p99/worst ms lateness of a trio.sleep(0.01) loop; gc2 = full collections (count x worst ms);"
        " down = teardown")
    say(HEADER + f" {'gc2 spawn':>10} {'gc2 idle':>9} {'gc2 down':>9}")
    for t in report.trials:
        say(_row(t) + f" {_gc2_cell(t, 'spawning'):>10} {_gc2_cell(t, 'idle'):>9} {_gc2_cell(t, 'teardown'):>9}")
    say()
    for t in report.trials:
        spawn, down = t.lateness("spawning"), t.lateness("teardown")
        say(
            f"N={t.n} gc={t.gc_mode}: loop lateness p99/worst ms: spawning {lag_cell(spawn)},"
            f" teardown ({t.teardown} all {t.n} at once) {lag_cell(down)};"
            f" teardown call {fmt(t.teardown_call_ms, '.1f')} ms, all reaped after {fmt(t.teardown_seconds, '.2f')} s"
        )
    for t in report.trials:
        say(
            f"N={t.n} gc={t.gc_mode}: supervisor RSS {fmt(t.rss_before_kib, 'd')} -> {fmt(t.rss_running_kib, 'd')}"
            f" -> {fmt(t.rss_after_kib, 'd')} KiB (before, running, after);"
            f" fds {fmt(t.fds_before, 'd')} -> {fmt(t.fds_running, 'd')} -> {fmt(t.fds_after, 'd')};"
            f" zygote RSS {fmt(t.zygote_rss_before_kib, 'd')} -> {fmt(t.zygote_rss_running_kib, 'd')} KiB;"
            f" host {fmt(t.host_kib_per_container, '.0f')} KiB/container;"
            f" init (pid 1) private {fmt(t.init_private_kib, '.0f')} KiB each;"
            f" {fmt(t.gc_objects_running, 'd')} gc-tracked objects running"
            + ("" if t.unfreeze_collect_ms is None else f"; unfreeze+collect afterwards {t.unfreeze_collect_ms:.0f} ms")
        )
    for t in report.trials:
        if not t.ok:
            why = t.error.splitlines()[-1] if t.error else f"{t.failures} failed starts, {t.alive} of {t.n} alive"
            say(f"!! N={t.n} gc={t.gc_mode}: {why}")
    say(
        "targets (docs/design.md): 1,000 running containers (first bar), 10,000 (goal);"
        " supervisor <= 200 KiB per running container (first bar), <= 50 KiB (goal)"
    )


# --------------------------------------------------------------------------
# Command line


N_LIST_ERROR = "a comma-separated list of numbers >= {minimum}: {text}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="N anyns containers running at once: time to start them, supervisor memory and fds "
        "per container, the zygote's memory, trio loop lateness while spawning, idle and tearing down, "
        "and the time to kill and reap them all.",
    )
    parser.add_argument(
        "--n",
        type=lambda text: common.int_list(text, 1, N_LIST_ERROR, N_LIST_ERROR),
        default=None,
        metavar="N[,N...]",
        help=f"containers running at once, e.g. 100,1000,2000 (default {common.joined(DEFAULT_NS)})",
    )
    parser.add_argument(
        "--batch",
        type=common.positive_int,
        default=DEFAULT_BATCH,
        help=f"starts in flight at a time (default {DEFAULT_BATCH})",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=None,
        help=f"seconds to watch the loop with all N running (default {DEFAULT_IDLE}, --quick {QUICK_IDLE})",
    )
    parser.add_argument(
        "--gc",
        type=lambda text: common.choice_list(text, GC_MODES, "gc mode"),
        default=None,
        metavar="MODE[,MODE...]",
        help="garbage-collector handling, one trial each: default, freeze (gc.freeze() as containers "
        "start), disable (gc.disable(), the lower bound) (default: default)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="also run each N with gc.freeze() after the containers start, to compare (= --gc default,freeze)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"CI smoke: N={common.joined(QUICK_NS)}, idle {QUICK_IDLE} s (explicit --n/--idle win)",
    )
    parser.add_argument(
        "--teardown",
        choices=TEARDOWNS,
        default="cancel",
        help="how the N running containers are ended: cancel (the nursery holding them is cancelled, every "
        "sup.run kills and reaps its own; default) or kill (Container.kill() on each, in one loop)",
    )
    common.add_warmup_option(parser, DEFAULT_WARMUP, "/bin/true runs")
    common.add_json_option(parser, "scale")
    common.add_hidden_options(parser, DEFAULT_TIMEOUT)  # seconds per trial
    parser.add_argument("--trial-json", type=Path, default=None, help=argparse.SUPPRESS)  # internal: one trial
    args = parser.parse_args(argv)
    common.apply_defaults(args, n=(list(QUICK_NS), list(DEFAULT_NS)), idle=(QUICK_IDLE, DEFAULT_IDLE))
    gc_modes = set(args.gc or ["default"])
    if args.gc_freeze:
        gc_modes |= {"default", "freeze"}
    args.gc = [m for m in GC_MODES if m in gc_modes]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.trial_json is not None:
        return trial_main(args)
    report = Report()
    report.machine = common.describe_machine(unshare=False)
    report.machine["anyns_revision"] = common.anyns_revision()
    report.config = {
        "n": args.n,
        "batch": args.batch,
        "idle_seconds": args.idle,
        "quiet_seconds": QUIET,
        "tick_seconds": TICK,
        "gc": args.gc,
        "teardown": args.teardown,
        "warmup": args.warmup,
        "quick": args.quick,
        "gc_threshold": gc.get_threshold(),
    }
    say(f"scale benchmark: N={args.n} running at once, {args.batch} starts in flight, gc modes {args.gc}")
    try:
        anyns = common.import_anyns(report.machine)
        report.config["spec"] = repr(anyns.ContainerSpec(argv=list(ARGV)))
    except Exception as exc:
        report.anyns_error = common.format_exc(exc)
        say(f"!! anyns FAILED to import:\n{report.anyns_error}")
    else:
        try:
            run_all(report, args)
        except KeyboardInterrupt:
            say("interrupted")
            return 130
    common.finish(report, args.json, print_summary)
    if report.anyns_error is not None or not report.trials or not all(t.ok for t in report.trials):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
