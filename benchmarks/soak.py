"""Soak: thousands of spawns of mixed specs, cancelled at random points; does anything drift?

What is run
-----------
N spawns (default 10,000; ``--quick`` 1,000) on one supervisor, between 16
and 64 in flight (``--in-flight MIN,MAX``; worker tasks share a
``trio.CapacityLimiter`` whose size is redrawn at every sample). Each spawn
is planned up front from a seeded RNG (``--seed``), so a run can be repeated:

* its **kind** (the spec): ``host`` (the default ``HostRootfs``), ``tmpfs``
  (a ``Tmpfs`` mount written to), ``overlay`` (``OverlayRootfs`` over a small
  busybox lower directory), ``limits`` (``Limits(memory="64M", pids=32)``,
  its own cgroup leaf), ``exec`` (a running container that gets one to three
  ``Container.exec`` calls, then is killed), ``bridge`` (``Bridge`` networking
  in a network namespace the script makes for itself, a "hub" container's;
  never the machine's own; ``--no-bridge`` leaves it out), ``userns`` (a user
  namespace of its own; with limits when it ends by itself) and ``missing`` (a
  program that does not exist: the expected result is ``anyns.ExecError``);
* how it is **called**: ``await nursery.start(sup.run, ...)`` (returns at
  exec) or ``await sup.run(..., capture_stdout=True)`` (returns at exit);
* whether and when it is **cancelled** (a ``trio.CancelScope`` deadline):
  ``before`` (the deadline has passed when ``run`` is called), ``setup``
  (a random fraction of 1.5 times the recent median time from the call to
  the exec, so that it lands anywhere from the queue for the zygote to just
  after the exec, wherever the load puts that) or ``running`` (2-40 ms after
  ``nursery.start`` returned, with a program that sleeps until killed); the
  rest run to their end. A cancelled spawn is reported by where the
  cancellation was seen to land: before the call, before ``nursery.start``
  returned ("setup"), after it ("running"), or inside a plain ``run``
  ("in-run", which does not show the moment of exec).

Every ~N/50 spawns (``--samples``) the script samples the supervisor process
(this one): its open fds, RSS, threads (trio's cached worker threads, named
"Trio thread N", apart: they linger up to 10 s idle by design), living trio
tasks and (at the start and the end only) Python objects; the host's mount
table (``/proc/self/mountinfo`` lines); the cgroup directories of this
supervisor (``anyns-<pid>-*`` and their leaves); veths in the hub namespace;
zombie children; the zygote's fds and RSS. "start" is sampled after a warm-up (every kind once, so that
lazily made fds, threads and cgroup parents exist), "end" once every spawn
has returned; both with no container running. Outside the supervisor, the
same figures are taken before it opens and after it closes.

Results
-------
``benchmarks/results/soak.json`` (``--json``) with every sample, the drift
(end minus start) of each figure, the outcomes per kind (ok / cancelled at
each point / failed, failures by type), containers still alive after their
``run`` returned, and the zygote pids seen; ``soak.png`` beside it (or
``--plot PATH``): each figure against the number of spawns done (skipped,
with a message, without matplotlib). A short table is printed.

Exit status: 0, or 1 when a spawn failed unexpectedly, a container outlived
its ``run``, the zygote was replaced, or fds, threads (without trio's cache),
trio tasks, mounts, cgroups, veths or zombies did not return exactly to their
start values (RSS is reported, not judged). ``tests/integration/
test_soak.py`` runs the same soak, smaller, and asserts on the same figures.

    python -m benchmarks.soak [--quick] [--n N] [--seed S] [--no-bridge]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if not __package__:  # python benchmarks/soak.py: import this directory as the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks._common import fmt, say

if TYPE_CHECKING:
    import anyns

DEFAULT_N = 10_000
QUICK_N = 1_000
DEFAULT_IN_FLIGHT = (16, 64)
DEFAULT_SAMPLES = 50
DEFAULT_SEED = 9
DEFAULT_TIMEOUT = 3600.0  # seconds for the whole soak: a hang fails, it does not stall

KINDS = ("host", "tmpfs", "overlay", "limits", "exec", "bridge", "userns", "missing")
KIND_WEIGHTS = {"host": 26, "tmpfs": 11, "overlay": 13, "limits": 15, "exec": 10, "bridge": 11, "userns": 8,
                "missing": 6}
CANCELS = ("none", "before", "setup", "running")
CANCEL_WEIGHTS = {"none": 64, "before": 6, "setup": 15, "running": 15}
#: how a cancelled spawn is reported: where the cancellation landed
PHASES = ("before", "setup", "running", "in-run")
SETUP_SPAN = 1.5  # a "setup" deadline: a fraction of this many times the median call -> exec time
FIRST_LATENCY = 0.005  # seconds: that median before any spawn has been measured
RUNNING_DEADLINE = (0.002, 0.040)  # seconds after nursery.start returned
LIMITS: dict[str, Any] = {"memory": "64M", "pids": 32}
BRIDGE_NOTE = "Bridge in a network namespace of the script's own (a hub container's), never the machine's"

#: the figures compared between "start" and "end" (and between before-open and after-close)
EXACT = ("fds", "threads", "tasks", "mounts", "cgroups", "veths", "zombies")
OUTSIDE_EXACT = ("fds", "threads", "mounts", "cgroups", "zombies", "children")
PLOTTED = (
    ("fds", "supervisor fds"),
    ("rss_kib", "supervisor RSS (KiB)"),
    ("threads", "threads (without trio's cache)"),
    ("mounts", "host mounts"),
    ("cgroups", "anyns cgroup dirs (ours)"),
    ("in_flight", "spawns in flight"),
)


# --------------------------------------------------------------------------
# Plan


@dataclass(frozen=True, slots=True)
class Step:
    """One planned spawn."""

    kind: str
    cancel: str  # one of CANCELS
    fraction: float  # where in its window the deadline falls, 0-1
    started: bool  # nursery.start (True) or a plain await sup.run (False)
    execs: int  # Container.exec calls (kind "exec")


def plan(n: int, seed: int, kinds: Sequence[str]) -> list[Step]:
    """The ``n`` spawns, drawn from a ``random.Random(seed)``."""
    rng = random.Random(seed)
    weights = [KIND_WEIGHTS[k] for k in kinds]
    steps = []
    for _ in range(n):
        kind = rng.choices(kinds, weights)[0]
        cancel = rng.choices(CANCELS, [CANCEL_WEIGHTS[c] for c in CANCELS])[0]
        # a program that sleeps until killed needs nursery.start to be seen running
        started = kind == "exec" or cancel == "running" or rng.random() < 0.5
        steps.append(Step(kind, cancel, rng.random(), started, rng.randint(1, 3)))
    return steps


# --------------------------------------------------------------------------
# Sampling


def _status(pid: int | str) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    except OSError:
        return {}


def _kib(status: dict[str, str], key: str) -> int | None:
    value = status.get(key)
    return int(value.split()[0]) if value else None


def count_fds(pid: int | str = "self") -> int | None:
    """Open fds of ``pid`` (for "self": not counting the one listing them)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd")) - (pid == "self")
    except OSError:
        return None


def thread_names() -> list[str]:
    """The name (comm) of every thread of this process."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return names


def mount_count() -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(1 for _ in f)


def own_cgroups(pid: int | None = None) -> list[str]:
    """The cgroup directories of the supervisors of process ``pid`` (``anyns-<pid>-*``) and the leaves in them."""
    prefix = f"anyns-{os.getpid() if pid is None else pid}-"
    found = []
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d.startswith(prefix):
                parent = os.path.join(top, d)
                found.append(parent)
                with contextlib.suppress(OSError):
                    found += [e.path for e in os.scandir(parent) if e.is_dir(follow_symlinks=False)]
    return sorted(found)


def children() -> dict[int, str]:
    """pid -> state of every child of this process."""
    out: dict[int, str] = {}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
            for pid in f.read().split():
                with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", "rb") as stat:
                    text = stat.read()
                    out[int(pid)] = text[text.rindex(b")") + 2 :].split(b" ", 1)[0].decode()
    return out


def is_our_child(pid: int) -> bool:
    """Whether ``pid`` still exists as a child of this process (a zombie counts)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return False
    return int(text[text.rindex(b")") + 2 :].split()[1]) == os.getpid()


async def count_veths(netns: str | None) -> int | None:
    """veths in the network namespace file ``netns`` (the hub's), by ``nsenter ip``."""
    if netns is None:
        return None
    try:
        proc = await trio.run_process(
            ["nsenter", f"--net={netns}", "ip", "-o", "link", "show", "type", "veth"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    except OSError:
        return None
    return len(proc.stdout.splitlines()) if proc.returncode == 0 else None


@dataclass
class Sample:
    """The figures at one moment."""

    done: int  # spawns returned so far
    seconds: float  # since the first spawn
    in_flight: int
    fds: int | None
    rss_kib: int | None
    threads: int  # without trio's cached workers
    trio_workers: int
    tasks: int | None  # living trio tasks
    #: len(gc.get_objects()), only at the quiet points: while other threads run, the list it builds may hold a
    #: tuple another thread is still building (PySequence_Tuple), whose resize then fails with SystemError
    objects: int | None
    mounts: int
    cgroups: int  # this process's anyns-<pid>-* dirs and their leaves
    veths: int | None  # in the hub namespace
    children: int
    zombies: int
    zygote_pid: int | None
    zygote_fds: int | None
    zygote_rss_kib: int | None


async def take_sample(
    done: int, seconds: float, in_flight: int, netns: str | None, zygote: int | None, collect: bool = False
) -> Sample:
    """Sample everything; ``collect``: run the garbage collector first (at the quiet points)."""
    if collect:
        gc.collect()
    veths = await count_veths(netns)
    names = thread_names()
    workers = sum(1 for n in names if n.startswith("Trio thread"))
    kids = children()
    zygote_status = _status(zygote) if zygote is not None else {}
    try:
        tasks: int | None = trio.lowlevel.current_statistics().tasks_living
    except RuntimeError:
        tasks = None
    return Sample(
        done=done,
        seconds=seconds,
        in_flight=in_flight,
        fds=count_fds(),
        rss_kib=_kib(_status("self"), "VmRSS"),
        threads=len(names) - workers,
        trio_workers=workers,
        tasks=tasks,
        objects=len(gc.get_objects()) if collect else None,
        mounts=mount_count(),
        cgroups=len(own_cgroups()),
        veths=veths,
        children=len(kids),
        zombies=sum(1 for s in kids.values() if s == "Z"),
        zygote_pid=zygote,
        zygote_fds=count_fds(zygote) if zygote is not None else None,
        zygote_rss_kib=_kib(zygote_status, "VmRSS"),
    )


def find_zygote() -> int | None:
    """The pid of this process's zygote: the child whose command line names ``_zygote``."""
    for pid in children():
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"_zygote" in f.read():
                return pid
    return None


# --------------------------------------------------------------------------
# The soak


@dataclass
class Config:
    n: int = DEFAULT_N
    in_flight: tuple[int, int] = DEFAULT_IN_FLIGHT
    seed: int = DEFAULT_SEED
    samples: int = DEFAULT_SAMPLES
    bridge: bool = True
    timeout: float = DEFAULT_TIMEOUT
    kinds: tuple[str, ...] = KINDS


@dataclass
class Report:
    """What a soak found."""

    config: dict[str, Any] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)
    skipped_kinds: dict[str, str] = field(default_factory=dict)
    before_open: Sample | None = None
    samples: list[Sample] = field(default_factory=list)  # the first is "start", the last "end"
    after_close: Sample | None = None
    seconds: float = 0.0
    #: kind -> outcome ("ok", "cancelled before|setup|running|in-run", "failed") -> count
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    #: kind -> "Type: message" -> count, for unexpected failures
    failures: dict[str, Counter[str]] = field(default_factory=dict)
    #: "Type: message" -> the traceback of its first occurrence
    tracebacks: dict[str, str] = field(default_factory=dict)
    #: pids that were still our children when their run had returned
    leftovers: list[int] = field(default_factory=list)
    zygote_pids: list[int] = field(default_factory=list)
    #: where the soak itself broke (not a spawn's failure)
    error: str | None = None

    @property
    def start(self) -> Sample:
        return self.samples[0]

    @property
    def end(self) -> Sample:
        return self.samples[-1]

    def drift(self) -> dict[str, int | None]:
        """End minus start, for every figure (None: not measured)."""
        return _diff(self.start, self.end)

    def outside_drift(self) -> dict[str, int | None]:
        """After close minus before open."""
        assert self.before_open is not None and self.after_close is not None
        return _diff(self.before_open, self.after_close)

    def totals(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for counts in self.outcomes.values():
            for outcome, count in counts.items():
                out["cancelled" if outcome.startswith("cancelled") else outcome] += count
        return out

    def problems(self) -> list[str]:
        """Everything that fails the soak (RSS is reported, not judged)."""
        found = []
        if self.error:
            found.append(f"the soak broke: {self.error.splitlines()[-1]}")
        if len(self.samples) < 2:
            return found
        for kind, failures in self.failures.items():
            for what, count in failures.items():
                found.append(f"{kind}: {count} x {what}")
        if self.leftovers:
            found.append(f"{len(self.leftovers)} container(s) still alive after their run returned")
        if len(set(self.zygote_pids)) > 1:
            found.append(f"the zygote was replaced: pids {self.zygote_pids}")
        for name, value in self.drift().items():
            if name in EXACT and value:
                found.append(f"{name} drifted by {value:+d}")
        if self.before_open is not None and self.after_close is not None:
            for name, value in self.outside_drift().items():
                if name in OUTSIDE_EXACT and value:
                    found.append(f"{name} after close vs before open: {value:+d}")
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "soak",
            "config": self.config,
            "kinds": self.kinds,
            "skipped_kinds": self.skipped_kinds,
            "seconds": self.seconds,
            "per_second": self.config.get("n", 0) / self.seconds if self.seconds else None,
            "drift": self.drift() if len(self.samples) >= 2 else None,
            "outside_drift": self.outside_drift() if self.before_open and self.after_close else None,
            "outcomes": {k: dict(v) for k, v in self.outcomes.items()},
            "totals": dict(self.totals()),
            "failures": {k: dict(v) for k, v in self.failures.items()},
            "tracebacks": self.tracebacks,
            "leftovers": self.leftovers,
            "zygote_pids": self.zygote_pids,
            "before_open": asdict(self.before_open) if self.before_open else None,
            "after_close": asdict(self.after_close) if self.after_close else None,
            "samples": [asdict(s) for s in self.samples],
            "problems": self.problems(),
            "error": self.error,
        }


def _diff(a: Sample, b: Sample) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name in ("fds", "rss_kib", "threads", "trio_workers", "tasks", "objects", "mounts", "cgroups", "veths",
                 "children", "zombies", "zygote_fds", "zygote_rss_kib"):
        x, y = getattr(a, name), getattr(b, name)
        out[name] = None if x is None or y is None else y - x
    return out


def not_cancelled(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc`` (and the exception groups of nurseries in it) that are not ``trio.Cancelled``."""
    if isinstance(exc, BaseExceptionGroup):
        return [e for sub in exc.exceptions for e in not_cancelled(sub)]
    return [] if isinstance(exc, trio.Cancelled) else [exc]


class Soak:
    """One soak run on one supervisor: the specs, the spawns, the samples."""

    def __init__(self, sup: anyns.Supervisor, config: Config, report: Report, lower: str | None,
                 bridge: Any | None, progress: Callable[[str], None] | None) -> None:
        import anyns

        self.anyns = anyns
        self.sup = sup
        self.config = config
        self.report = report
        self.progress = progress
        self.netns: str | None = bridge.netns if bridge is not None else None
        self.in_flight = 0
        self.done = 0
        self.t0 = 0.0
        self.zygote: int | None = None
        #: recent call -> exec times of nursery.start spawns (seconds), for the "setup" deadlines
        self.latencies: deque[float] = deque(maxlen=256)
        quick = ["sh", "-c", "echo $$ > /dev/null"]
        sleeper = ["sleep", "1000"]
        lim = anyns.Limits(memory=LIMITS["memory"], pids=LIMITS["pids"])
        tmpfs = (anyns.Tmpfs("/data", size=1 << 20),)
        userns = anyns.Namespaces.DEFAULT | anyns.Namespaces.USER
        #: kind -> (spec that ends by itself, spec that sleeps until killed)
        self.specs: dict[str, tuple[anyns.ContainerSpec, anyns.ContainerSpec]] = {
            "host": (anyns.ContainerSpec(argv=["true"]), anyns.ContainerSpec(argv=sleeper)),
            "tmpfs": (
                anyns.ContainerSpec(argv=["sh", "-c", "echo x > /data/f && cat /data/f"], mounts=tmpfs),
                anyns.ContainerSpec(argv=["sh", "-c", "echo x > /data/f && exec sleep 1000"], mounts=tmpfs),
            ),
            "limits": (anyns.ContainerSpec(argv=quick, limits=lim), anyns.ContainerSpec(argv=sleeper, limits=lim)),
            "exec": (anyns.ContainerSpec(argv=sleeper), anyns.ContainerSpec(argv=sleeper)),
            "userns": (anyns.ContainerSpec(argv=quick, namespaces=userns, limits=lim),
                       anyns.ContainerSpec(argv=sleeper, namespaces=userns)),
            "missing": (anyns.ContainerSpec(argv=["/no/such/program"]),) * 2,
        }
        if lower is not None:
            env = {"PATH": "/bin"}
            rootfs = anyns.OverlayRootfs(lower)
            self.specs["overlay"] = (
                anyns.ContainerSpec(argv=["sh", "-c", "echo hi > /w && cat /w"], rootfs=rootfs, env=env),
                anyns.ContainerSpec(argv=["sh", "-c", "echo hi > /w && exec sleep 1000"], rootfs=rootfs, env=env),
            )
        if bridge is not None:
            self.specs["bridge"] = (
                anyns.ContainerSpec(argv=["true"], network=bridge),
                anyns.ContainerSpec(argv=sleeper, network=bridge),
            )

    async def sample(self, collect: bool = False) -> Sample:
        if self.zygote is None:
            self.zygote = find_zygote()
        s = await take_sample(self.done, time.perf_counter() - self.t0 if self.t0 else 0.0, self.in_flight,
                              self.netns, find_zygote(), collect)
        if s.zygote_pid is not None and (not self.report.zygote_pids or self.report.zygote_pids[-1] != s.zygote_pid):
            self.report.zygote_pids.append(s.zygote_pid)
        return s

    def _deadline(self, step: Step) -> float:
        """The deadline of ``step``'s cancel scope, set at the call (``running`` sets its own at the exec)."""
        now = float(trio.current_time())
        if step.cancel == "before":
            return now
        if step.cancel == "setup":
            recent = sorted(self.latencies) or [FIRST_LATENCY]
            return now + step.fraction * SETUP_SPAN * recent[len(recent) // 2]
        return math.inf

    async def _spawn(self, step: Step, scope: trio.CancelScope, pid: list[int], started: list[bool]) -> None:
        """The spawn of ``step`` itself; ``pid`` gets the container's pid, ``started`` True once it runs."""
        anyns = self.anyns
        spec = self.specs[step.kind][step.cancel == "running"]
        check = step.kind != "exec"
        if not step.started:
            done = await self.sup.run(spec, capture_stdout=True, capture_stderr=True, check=check)
            pid.append(done.pid)
            return
        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            box = await nursery.start(
                functools.partial(self.sup.run, spec, stdout=anyns.DEVNULL, stderr=anyns.DEVNULL, check=check)
            )
            self.latencies.append(trio.current_time() - t0)
            pid.append(box.pid)
            started.append(True)
            if step.cancel == "running":
                lo, hi = RUNNING_DEADLINE
                scope.deadline = trio.current_time() + lo + step.fraction * (hi - lo)
            if step.kind == "exec":
                for i in range(step.execs):
                    argv = ["true"] if i % 2 == 0 else ["sh", "-c", "echo $$"]
                    done = await box.exec(argv, capture_stdout=True)
                    pid.append(done.pid)
                if step.cancel == "running":
                    await trio.sleep_forever()  # until the deadline: cancelled while it runs
                box.kill()

    async def one(self, step: Step) -> None:
        """Run one planned spawn and count its outcome."""
        outcomes = self.report.outcomes.setdefault(step.kind, Counter())
        pid: list[int] = []
        started: list[bool] = []
        self.in_flight += 1
        try:
            with trio.CancelScope(deadline=self._deadline(step)) as scope:
                try:
                    await self._spawn(step, scope, pid, started)
                except BaseException as exc:
                    # A nursery may group the cancellation with the spawn's own error (it failed as it was
                    # cancelled); only those errors are judged. With none, the scope below absorbs it.
                    errors = not_cancelled(exc)
                    if not errors:
                        raise
                    if step.kind == "missing" and all(isinstance(e, self.anyns.ExecError) for e in errors):
                        outcomes["ok"] += 1
                    else:
                        outcomes["failed"] += 1
                        first = next((e for e in errors if not isinstance(e, self.anyns.ExecError)), errors[0])
                        what = f"{type(first).__name__}: {str(first)[:160]}"
                        self.report.failures.setdefault(step.kind, Counter())[what] += 1
                        self.report.tracebacks.setdefault(what, common.format_exc(first))
                    return
                if step.kind == "missing":
                    outcomes["failed"] += 1
                    self.report.failures.setdefault(step.kind, Counter())["no ExecError"] += 1
                else:
                    outcomes["ok"] += 1
            if scope.cancelled_caught:
                if step.cancel == "before":
                    phase = "before"
                elif not step.started:
                    phase = "in-run"
                else:
                    phase = "running" if started else "setup"
                outcomes[f"cancelled {phase}"] += 1
        finally:
            self.in_flight -= 1
            self.report.leftovers += [p for p in pid if is_our_child(p)]

    async def run(self, steps: list[Step]) -> None:
        lo, hi = self.config.in_flight
        rng = random.Random(self.config.seed + 1)
        limiter = trio.CapacityLimiter(rng.randint(lo, hi))
        every = max(1, len(steps) // max(1, self.config.samples))
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(steps):
                step = steps[next_index]
                next_index += 1
                async with limiter:
                    await self.one(step)
                self.done += 1
                if self.done % every == 0 and self.done < len(steps):
                    limiter.total_tokens = rng.randint(lo, hi)
                    s = await self.sample()
                    self.report.samples.append(s)
                    if self.progress:
                        self.progress(_progress_line(s, len(steps)))

        self.t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(hi):
                nursery.start_soon(worker)
        self.report.seconds = time.perf_counter() - self.t0

    async def warm_up(self) -> None:
        """Every kind once, by both calls: lazily opened fds, threads and cgroup parents exist before "start"."""
        for kind in self.report.kinds:
            for started in (True, False):
                await self.one(Step(kind, "none", 0.0, started or kind == "exec", 2))
        self.report.outcomes.clear()
        if self.report.failures:
            raise RuntimeError(f"the warm-up failed: {dict(self.report.failures)}")


def _progress_line(s: Sample, n: int) -> str:
    return (f"  {s.done:>6}/{n} {s.seconds:7.1f} s  in flight {s.in_flight:>3}  fds {s.fds}  rss {fmt_kib(s.rss_kib)}"
            f"  threads {s.threads}+{s.trio_workers}  tasks {s.tasks}  mounts {s.mounts}  cgroups {s.cgroups}"
            f"  veths {s.veths}  zombies {s.zombies}")


def fmt_kib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}M"


@contextlib.asynccontextmanager
async def _maybe_bridge(sup: Any, wanted: bool, report: Report) -> AsyncIterator[Any | None]:
    if not wanted:
        report.skipped_kinds["bridge"] = "--no-bridge"
        yield None
        return
    from benchmarks.spawn import bridge_in_own_netns

    async with bridge_in_own_netns(sup) as bridge:
        yield bridge


def _lower_dir(workdir: Path, report: Report) -> str | None:
    """A busybox root to be the overlay kind's lower layer (None, and the kind skipped, without busybox)."""
    from anyns import testing

    try:
        return testing.busybox_rootfs(workdir / "lower")
    except testing.BusyboxMissing as exc:
        report.skipped_kinds["overlay"] = str(exc)
        return None


async def soak(config: Config, workdir: Path, progress: Callable[[str], None] | None = None) -> Report:
    """Run the soak with its own supervisor; ``workdir``: an empty directory for the overlay's lower layer.

    Exceptions inside are caught into ``Report.error``; the caller judges ``Report.problems()``.
    """
    import anyns

    report = Report(config=asdict(config))
    lower = _lower_dir(workdir, report)
    bridge = config.bridge and "bridge" in config.kinds
    steps_kinds = [k for k in config.kinds if k not in report.skipped_kinds and (k != "bridge" or bridge)]
    report.before_open = await take_sample(0, 0.0, 0, None, None, collect=True)
    try:
        with trio.fail_after(config.timeout):
            async with anyns.open_supervisor() as sup, _maybe_bridge(sup, bridge, report) as hub_bridge:
                report.kinds = [k for k in steps_kinds if k not in report.skipped_kinds]
                s = Soak(sup, config, report, lower, hub_bridge, progress)
                await s.warm_up()
                steps = plan(config.n, config.seed, report.kinds)  # made before "start", held until after "end"
                report.samples.append(await s.sample(collect=True))
                if progress:
                    progress(_progress_line(report.samples[0], config.n) + "  (start)")
                await s.run(steps)
                report.samples.append(await s.sample(collect=True))
                del steps
                if progress:
                    progress(_progress_line(report.samples[-1], config.n) + "  (end)")
    except Exception as exc:
        report.error = common.format_exc(exc)
    report.after_close = await take_sample(config.n, report.seconds, 0, None, None, collect=True)
    return report


# --------------------------------------------------------------------------
# Output


def plot(report: Report, out: Path) -> str | None:
    """Draw each figure against spawns done into ``out``; return why not, or None when written."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    if len(report.samples) < 2:
        return "no samples"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), dpi=100, sharex=True)
    xs = [s.done for s in report.samples]
    for ax, (name, label) in zip(axes.flat, PLOTTED, strict=True):
        ys = [getattr(s, name) for s in report.samples]
        if name == "rss_kib":
            ys = [None if y is None else y / 1024 for y in ys]
            label = "supervisor RSS (MiB)"
        ax.plot(xs, ys, marker=".", linewidth=1.2)
        ax.set_title(label, fontsize=10)
        ax.grid(True, alpha=0.3)
        if name != "rss_kib" and name != "in_flight":
            ax.yaxis.get_major_locator().set_params(integer=True)
    for ax in axes[1]:
        ax.set_xlabel("spawns returned")
    totals = report.totals()
    fig.suptitle(
        f"soak: {report.config.get('n')} spawns ({', '.join(report.kinds)}), "
        f"{totals['ok']} ok / {totals['cancelled']} cancelled / {totals['failed']} failed, "
        f"{report.seconds:.0f} s",
        fontsize=11,
    )
    common.save_figure(fig, out)
    return None


def print_summary(report: Report) -> None:
    n, (lo, hi) = report.config["n"], report.config["in_flight"]
    rate = fmt(n / report.seconds if report.seconds else None, ".0f")
    common.print_banner(100, f"soak: {n} spawns, {lo}-{hi} in flight, seed {report.config['seed']}: "
                        f"{report.seconds:.1f} s ({rate}/s)")
    for kind, why in report.skipped_kinds.items():
        say(f"  kind {kind} left out: {why}")
    if report.error:
        say(f"!! the soak broke:\n{report.error}")
    if len(report.samples) >= 2:
        say()
        say(f"{'figure':<34} {'start':>9} {'end':>9} {'drift':>8} {'min':>9} {'max':>9}")
        drift = report.drift()
        for name, label in (
            ("fds", "supervisor fds"),
            ("rss_kib", "supervisor RSS KiB"),
            ("threads", "threads (without trio's cache)"),
            ("trio_workers", "trio's cached worker threads"),
            ("tasks", "living trio tasks"),
            ("objects", "Python objects"),
            ("mounts", "host mounts"),
            ("cgroups", "anyns cgroup dirs (ours)"),
            ("veths", "veths in the hub netns"),
            ("zombies", "zombie children"),
            ("zygote_fds", "zygote fds"),
            ("zygote_rss_kib", "zygote RSS KiB"),
        ):
            values = [v for v in (getattr(s, name) for s in report.samples) if v is not None]
            if not values:
                continue
            d = drift[name]
            say(f"{label:<34} {fmt(getattr(report.start, name), 'd'):>9} {fmt(getattr(report.end, name), 'd'):>9}"
                f" {'-' if d is None else f'{d:+d}':>8} {min(values):>9} {max(values):>9}")
        if report.before_open and report.after_close:
            outside = report.outside_drift()
            say("after close vs before open: " + ", ".join(
                f"{n} {'-' if outside[n] is None else f'{outside[n]:+d}'}" for n in (*OUTSIDE_EXACT, "rss_kib")))
    say()
    say(f"{'kind':<9} {'spawns':>7} {'ok':>7} {'cancelled (before/setup/running/in-run)':>41} {'failed':>7}")
    for kind in report.kinds:
        c = report.outcomes.get(kind, Counter())
        total = sum(c.values())
        cancelled = "/".join(str(c[f"cancelled {p}"]) for p in PHASES)
        say(f"{kind:<9} {total:>7} {c['ok']:>7} {cancelled:>41} {c['failed']:>7}")
    t = report.totals()
    say(f"{'all':<9} {sum(t.values()):>7} {t['ok']:>7} {t['cancelled']:>41} {t['failed']:>7}")
    say("  (missing: ok = the expected anyns.ExecError)")
    for kind, failures in report.failures.items():
        for what, count in failures.most_common():
            say(f"  FAILED {kind}: {count} x {what}")
    for what, text in report.tracebacks.items():
        say(f"  first {what.split(':')[0]}:\n    " + text.replace("\n", "\n    "))
    say(f"containers alive after their run returned: {len(report.leftovers)}; zygote pids: {report.zygote_pids}")
    problems = report.problems()
    say("verdict: " + ("flat (no drift, no leftovers, no unexpected failure)" if not problems
                       else "PROBLEMS:\n  - " + "\n  - ".join(problems)))


# --------------------------------------------------------------------------
# Command line


def in_flight_range(text: str) -> tuple[int, int]:
    values = common.int_list(text)
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or values[0] > values[1]:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX with MIN <= MAX, got {text!r}")
    return values[0], values[1]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Many spawns of mixed specs, cancelled at random points: sample the supervisor's fds, RSS, "
        "threads, the host's mounts and cgroups over time, and report their drift.",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_N} spawns instead of {DEFAULT_N}")
    parser.add_argument("--n", type=common.positive_int, default=None, help=f"spawns (default {DEFAULT_N})")
    parser.add_argument("--in-flight", type=in_flight_range, default=DEFAULT_IN_FLIGHT, metavar="MIN,MAX",
                        help="spawns in flight, redrawn at every sample (default 16,64)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"RNG seed (default {DEFAULT_SEED})")
    parser.add_argument("--samples", type=common.positive_int, default=DEFAULT_SAMPLES,
                        help=f"samples over the run (default {DEFAULT_SAMPLES})")
    parser.add_argument("--no-bridge", action="store_true", help="leave out the bridge kind")
    parser.add_argument("--kinds", type=lambda text: tuple(common.choice_list(text, KINDS, "kind")), default=KINDS,
                        help=f"a subset of the kinds (default {','.join(KINDS)})")
    common.add_json_option(parser, "soak")
    parser.add_argument("--plot", type=Path, default=None, metavar="PATH",
                        help="where to draw the figures (default: soak.png beside the JSON)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = QUICK_N if args.quick else DEFAULT_N
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config(n=args.n, in_flight=args.in_flight, seed=args.seed, samples=args.samples,
                    bridge=not args.no_bridge, timeout=args.timeout, kinds=args.kinds)
    machine = common.describe_machine(unshare=False)
    say(f"soak: {config.n} spawns, {config.in_flight[0]}-{config.in_flight[1]} in flight, seed {config.seed}; "
        + common.load_line(machine, advice=True))
    try:
        common.import_anyns(machine)
    except Exception as exc:
        say(f"!! anyns FAILED to import:\n{common.format_exc(exc)}")
        return 1
    with tempfile.TemporaryDirectory(prefix="anyns-soak-") as tmp:
        try:
            report = trio.run(soak, config, Path(tmp), say)
        except KeyboardInterrupt:
            say("interrupted")
            return 1
    machine["loadavg_end"] = os.getloadavg()
    machine["anyns_revision"] = common.anyns_revision()
    print_summary(report)
    data = report.to_json()
    data["machine"] = machine
    data["bridge"] = BRIDGE_NOTE if config.bridge else None
    png = args.plot or args.json.with_suffix(".png")
    if args.no_plot:
        why: str | None = "--no-plot"
    else:
        try:
            why = plot(report, png)
        except Exception as exc:  # a plotting problem must not fail the soak
            why = f"plotting failed: {common.short_exc(exc)}"
    data["plot"] = {"path": None if why else str(png), "skipped": why}
    say(f"plot: {png}" if why is None else f"plot skipped: {why}")
    common.write_json(args.json, data)
    return 0 if not report.problems() else 1


if __name__ == "__main__":
    sys.exit(main())
