"""Start+reap throughput and latency of anyns against its peers, in one run.

What is measured
----------------
Each tool starts a container running ``/bin/true`` and waits for it to be
reaped, N times, with exactly C runs in flight (C fixed worker tasks pull
from a shared counter). For every (tool, C) pair we record:

* containers/s -- N divided by the wall time of the whole batch;
* per-spawn latency p50/p90/p99 -- from the call to the moment it returns
  (start, setup, exec, exit and reap together).

anyns and bubblewrap do the same kind of work: new mount, pid, uts, ipc and
net namespaces (loopback up), pivot_root into a fresh root that is a
read-only view of the host's ``/usr`` (plus ``bin``/``lib``/``lib64``/``sbin``
links), ``/proc``, ``/dev`` and a ``/tmp`` tmpfs. anyns runs its defaults,
which may do a little more (its ``HostRootfs`` also binds a few ``/etc``
files); the spec it used is recorded in the JSON. The tools:

``anyns``
    ``await sup.run(anyns.ContainerSpec(argv=["/bin/true"]))`` on one
    supervisor kept open for the whole run (defaults: ``HostRootfs``,
    ``Namespaces.DEFAULT``), after a short warm-up.
``bwrap``
    ``trio.run_process`` of ``bwrap --unshare-pid --unshare-uts
    --unshare-ipc --unshare-net --die-with-parent --ro-bind /usr /usr ...
    --proc /proc --dev /dev --tmpfs /tmp /bin/true``.
``unshare``
    ``trio.run_process`` of ``unshare --mount --pid --fork --uts --ipc --net
    --mount-proc /bin/true``. Same namespaces, but no pivot_root, no /dev or
    /tmp mounts: it keeps the host's root, so it does less work.
``plain``
    ``trio.run_process(["/bin/true"])``: no isolation at all, the scale
    reference for what process creation and reaping cost from trio.
``anyns+bridge`` (only with ``--network ...,bridge``)
    the anyns run with ``network=anyns.Bridge(...)``: a veth pair into a
    bridge, an address, ``eth0`` up and a default route before the exec, the
    veth deleted at reap. The bridge lives in a network namespace the
    benchmark makes for itself (a "hub" container's, kept at a file in a
    temporary directory), so the machine's own network is never touched.

Why
---
The design's performance targets are *ratios* measured in the same run on
the same machine (anyns >= 1.5x trio+bwrap start+reap throughput as the first
bar, >= 2.5x as the goal), because absolute numbers on small shared VMs drift
too much to be a target. To let drift hit every tool alike, all tools run at
one concurrency level before the next level starts, their order rotates from
level to level, and before every batch we wait for the kernel to finish the
asynchronous teardown of the previous batch's network namespaces.

Run ``python benchmarks/spawn.py --help`` (or ``python -m benchmarks.spawn``)
from the repository root. Results go to ``benchmarks/results/spawn.json``.
Exit status: 0, or 1 when anyns itself fails or ``--min-ratio`` is not met.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "spawn.json"

DEFAULT_N = 1000
DEFAULT_CONCURRENCY = (1, 16, 64)
QUICK_N = 100
QUICK_CONCURRENCY = (16,)
DEFAULT_WARMUP = 20
DEFAULT_TIMEOUT = 600.0  # seconds per (tool, concurrency) batch

TOOLS = ("anyns", "bwrap", "unshare", "plain")
#: --network choices, and the anyns tool (row) each one measures
NETWORKS = {"loopback": "anyns", "bridge": "anyns+bridge"}
DEFAULT_NETWORKS = ("loopback",)
ANYNS_TOOLS = tuple(NETWORKS.values())
BRIDGE_SUBNET = "10.77.0.0/16"  # inside the benchmark's own hub namespace only
LABELS = {
    "anyns": "anyns",
    "anyns+bridge": "anyns+bridge",
    "bwrap": "trio+bwrap",
    "unshare": "trio+unshare",
    "plain": "trio /bin/true",
}
NOTES = {
    "anyns": "one supervisor; ContainerSpec(argv=['/bin/true']) with defaults "
    "(HostRootfs, Namespaces.DEFAULT = MOUNT|PID|UTS|IPC|NET)",
    "bwrap": "mount+pid+uts+ipc+net; pivot_root to a tmpfs with read-only /usr, "
    "/proc, /dev, /tmp tmpfs; bwrap runs its own pid-1 reaper",
    "unshare": "mount+pid+uts+ipc+net and a fresh /proc, but NO pivot_root: the "
    "host root stays visible, no /dev or /tmp mounts (less work than the others)",
    "plain": "no isolation; scale reference for fork+exec+reap from trio",
    "anyns+bridge": "the anyns run plus network=anyns.Bridge(subnet=" + repr(BRIDGE_SUBNET) + ", netns=<a hub "
    "container's kept netns>): veth pair, address, eth0 up and default route before exec, veth deleted at reap",
}
PAYLOAD = "/bin/true"

# Ratios printed per concurrency level: (numerator, denominator).
RATIOS = (("anyns", "bwrap"), ("anyns", "unshare"), ("anyns", "plain"))
#: printed too when anyns+bridge was measured
BRIDGE_RATIOS = (("anyns+bridge", "anyns"), ("anyns+bridge", "bwrap"))
GATE_RATIO = ("anyns", "bwrap")
TARGETS = {"anyns/bwrap first bar": 1.5, "anyns/bwrap goal": 2.5}  # DESIGN.md


# --------------------------------------------------------------------------
# Commands for the peers


def bwrap_argv(bwrap: str = "bwrap") -> list[str]:
    """The bwrap command line equivalent to anyns' default container.

    ``/bin``, ``/lib``, ``/lib64`` and ``/sbin`` become symlinks when they are
    symlinks on the host (merged /usr); on a host where one is a real
    directory it is bind-mounted read-only instead, so ``/bin/true`` still
    resolves.
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
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", PAYLOAD]
    return argv


def unshare_argv(unshare: str = "unshare") -> list[str]:
    return [
        unshare,
        "--mount",
        "--pid",
        "--fork",
        "--uts",
        "--ipc",
        "--net",
        "--mount-proc",
        PAYLOAD,
    ]


def plain_argv() -> list[str]:
    return [PAYLOAD]


def peer_argv(tool: str) -> list[str]:
    if tool == "bwrap":
        return bwrap_argv()
    if tool == "unshare":
        return unshare_argv()
    if tool == "plain":
        return plain_argv()
    raise ValueError(f"not a peer: {tool!r}")


# --------------------------------------------------------------------------
# Results


@dataclass
class Measurement:
    tool: str
    label: str
    concurrency: int
    n: int
    seconds: float
    per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


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

    def ratio(self, num: str, den: str, concurrency: int) -> float | None:
        a, b = self.get(num, concurrency), self.get(den, concurrency)
        if a is None or b is None or b.per_second == 0:
            return None
        return a.per_second / b.per_second

    def ratio_pairs(self) -> tuple[tuple[str, str], ...]:
        """RATIOS, plus the bridge's when anyns+bridge is among the tools."""
        return RATIOS + (BRIDGE_RATIOS if "anyns+bridge" in self.config.get("tools", []) else ())

    def ratios(self) -> list[dict[str, Any]]:
        out = []
        for c in self.config.get("concurrency", []):
            row: dict[str, Any] = {"concurrency": c}
            for num, den in self.ratio_pairs():
                row[f"{num}/{den}"] = self.ratio(num, den, c)
            out.append(row)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "spawn",
            "payload": PAYLOAD,
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


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


# --------------------------------------------------------------------------
# Machine description


def _command_version(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def describe_machine() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "trio": trio.__version__,
        "anyns": None,  # filled in once anyns is imported
        "bwrap": _command_version(["bwrap", "--version"]),
        "unshare": _command_version(["unshare", "--version"]),
        "euid": os.geteuid(),
        "loadavg_start": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------
# Settling between batches


def _netns_slab_objects() -> int | None:
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


async def settle(max_seconds: float = 5.0) -> None:
    """Let the previous batch's asynchronous teardown finish.

    Network namespaces are freed by a kernel workqueue after their last
    process exits; a batch that starts while that still runs would pay for
    its predecessor. We wait until the ``net_namespace`` slab count stops
    changing (or for a fixed pause when /proc/slabinfo is unreadable).
    """
    gc.collect()
    await trio.sleep(0.1)
    last = _netns_slab_objects()
    if last is None:
        await trio.sleep(0.5)
        return
    stable = 0
    deadline = time.monotonic() + max_seconds
    while stable < 4 and time.monotonic() < deadline:
        await trio.sleep(0.05)
        now = _netns_slab_objects()
        stable = stable + 1 if now == last else 0
        last = now


# --------------------------------------------------------------------------
# Running


RunOne = Callable[[], Awaitable[object]]


async def measure(tool: str, run_one: RunOne, n: int, concurrency: int) -> Measurement:
    """Run ``run_one`` n times with exactly ``concurrency`` calls in flight."""
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
    seconds = time.perf_counter() - start

    lat = sorted(x * 1000.0 for x in latencies)
    return Measurement(
        tool=tool,
        label=LABELS[tool],
        concurrency=concurrency,
        n=n,
        seconds=seconds,
        per_second=n / seconds,
        p50_ms=percentile(lat, 50),
        p90_ms=percentile(lat, 90),
        p99_ms=percentile(lat, 99),
        mean_ms=sum(lat) / n,
        max_ms=lat[-1],
    )


def peer_runner(argv: list[str]) -> RunOne:
    async def run_one() -> object:
        return await trio.run_process(argv)  # check=True: a failure raises

    return run_one


async def preflight_peer(tool: str, argv: list[str]) -> str | None:
    """Return why the peer cannot be measured, or None if it works."""
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


def _format_exc(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()


def _short_exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _row(m: Measurement) -> str:
    return (
        f"{m.label:<16} {m.concurrency:>5} {m.n:>6} {m.per_second:>13.1f}"
        f" {m.p50_ms:>8.2f} {m.p90_ms:>8.2f} {m.p99_ms:>8.2f}"
    )


HEADER = f"{'tool':<16} {'C':>5} {'N':>6} {'containers/s':>13} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"


async def _measure_all(report: Report, runners: dict[str, RunOne], args: argparse.Namespace) -> None:
    """Warm up every tool, then measure all tools at each concurrency level."""
    for tool, run_one in list(runners.items()):
        try:
            for _ in range(args.warmup):
                await run_one()
        except Exception as exc:
            _fail(report, runners, tool, "warm-up", exc)

    _say()
    _say(HEADER)
    for level, concurrency in enumerate(args.concurrency):
        order = [t for t in args.tools if t in runners]
        if order:
            k = level % len(order)
            order = order[k:] + order[:k]  # rotate: no fixed predecessor
        for tool in order:
            runner = runners.get(tool)
            if runner is None:  # defensive: dropped after a failure
                continue
            await settle()
            try:
                with trio.fail_after(args.timeout):
                    m = await measure(tool, runner, args.n, concurrency)
            except Exception as exc:
                _fail(report, runners, tool, f"C={concurrency}", exc)
                continue
            report.measurements.append(m)
            _say(_row(m))


def _fail(
    report: Report,
    runners: dict[str, RunOne],
    tool: str,
    where: str,
    exc: BaseException,
) -> None:
    runners.pop(tool, None)
    if tool in ANYNS_TOOLS:
        error = f"{LABELS[tool]} {where}: {_format_exc(exc)}"
        report.anyns_error = "\n".join(filter(None, [report.anyns_error, error]))
        _say(f"!! {LABELS[tool]} FAILED during {where}:\n{error}")
    else:
        report.skipped[tool] = f"failed during {where}: {_short_exc(exc)}"
        _say(f"-- skipping {LABELS[tool]}: {report.skipped[tool]}")


@contextlib.asynccontextmanager
async def bridge_in_own_netns(sup: Any) -> AsyncIterator[Any]:
    """An ``anyns.Bridge`` in a network namespace made for the benchmark, never the machine's own.

    A "hub" container (its own network namespace, running ``sleep``) is
    started and its namespace kept at a file in a temporary directory; the
    bridge is created there on first use. On the way out the hub is killed and
    the namespace released (the supervisor removes the bridge when it closes).
    """
    import anyns

    with tempfile.TemporaryDirectory(prefix="anyns-bench-") as tmp:
        async with trio.open_nursery() as nursery:
            hub = await nursery.start(
                functools.partial(sup.run, check=False), anyns.ContainerSpec(argv=["sleep", "1000000"])
            )
            try:
                with hub.keep_namespace("net", os.path.join(tmp, "hubnet")) as kept:
                    yield anyns.Bridge(subnet=BRIDGE_SUBNET, netns=kept.path)
            finally:
                hub.kill()


async def async_main(report: Report, args: argparse.Namespace) -> None:
    runners: dict[str, RunOne] = {}

    for tool in args.tools:
        if tool in ANYNS_TOOLS:
            continue
        argv = peer_argv(tool)
        report.commands[tool] = subprocess.list2cmdline(argv)
        reason = await preflight_peer(tool, argv)
        if reason is not None:
            report.skipped[tool] = reason
            _say(f"-- skipping {LABELS[tool]}: {reason}")
            continue
        runners[tool] = peer_runner(argv)

    async with contextlib.AsyncExitStack() as stack:
        anyns_runners: dict[str, RunOne] = {}
        if "anyns" in args.tools:
            report.commands["anyns"] = (
                "async with anyns.open_supervisor() as sup: await sup.run(anyns.ContainerSpec(argv=['/bin/true']))"
            )
        if "anyns+bridge" in args.tools:
            report.commands["anyns+bridge"] = (
                "await sup.run(anyns.ContainerSpec(argv=['/bin/true'], network=anyns.Bridge(subnet="
                f"{BRIDGE_SUBNET!r}, netns=<hub netns>)))"
            )
        if any(t in args.tools for t in ANYNS_TOOLS):
            try:
                import anyns  # imported late: optional until it exists

                report.machine["anyns"] = getattr(anyns, "__version__", "unknown")
                spec = anyns.ContainerSpec(argv=[PAYLOAD])
                report.commands["anyns_spec"] = repr(spec)
                sup = await stack.enter_async_context(anyns.open_supervisor())
            except Exception as exc:
                report.anyns_error = f"setup: {_format_exc(exc)}"
                _say(f"!! anyns FAILED to start:\n{report.anyns_error}")
            else:
                if "anyns" in args.tools:

                    async def run_anyns() -> object:
                        return await sup.run(spec)

                    anyns_runners["anyns"] = run_anyns
                if "anyns+bridge" in args.tools:
                    try:
                        bridge = await stack.enter_async_context(bridge_in_own_netns(sup))
                    except Exception as exc:
                        _fail(report, runners, "anyns+bridge", "setup", exc)
                    else:
                        bridge_spec = anyns.ContainerSpec(argv=[PAYLOAD], network=bridge)
                        report.commands["anyns+bridge_spec"] = repr(bridge_spec)

                        async def run_bridged() -> object:
                            return await sup.run(bridge_spec)

                        anyns_runners["anyns+bridge"] = run_bridged
        runners = {**anyns_runners, **runners}

        await _measure_all(report, runners, args)
        # Leaving the stack closes the supervisor; an error there escapes to
        # main(), which charges it to anyns.


# --------------------------------------------------------------------------
# Output


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def print_summary(report: Report) -> None:
    mc = report.machine
    _say()
    _say("=" * 72)
    _say(
        f"spawn benchmark: start+reap {PAYLOAD}; nproc={mc.get('nproc')}"
        f" kernel={mc.get('kernel')} python={mc.get('python')}"
        f" trio={mc.get('trio')}"
    )
    _say(f"cpu={mc.get('cpu_model')} bwrap={mc.get('bwrap')} unshare={mc.get('unshare')} anyns={mc.get('anyns')}")
    _say(
        f"load average before the run: {mc['loadavg_start'][0]:.2f}"
        " (other work on the machine skews every tool; rerun when quiet)"
    )
    _say()
    _say(HEADER)
    for concurrency in report.config["concurrency"]:
        for tool in report.config["tools"]:
            m = report.get(tool, concurrency)
            if m is not None:
                _say(_row(m))
    _say()
    heads = [f"{a}/{b}" for a, b in report.ratio_pairs()]
    width = max(16, *(len(h) for h in heads))
    _say(f"{'C':>5} " + " ".join(f"{h:>{width}}" for h in heads))
    for row in report.ratios():
        cells = " ".join(f"{_fmt_ratio(row[h]):>{width}}" for h in heads)
        _say(f"{row['concurrency']:>5} {cells}")
    _say()
    _say("targets (ratios, same run): anyns/bwrap >= 1.5x first bar, >= 2.5x goal")
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [_positive_int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return values


def _tool_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    bad = [v for v in values if v not in TOOLS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"unknown tool(s) {bad}; choose from {','.join(TOOLS)}")
    # Keep the canonical order so tables and ratios line up.
    return [t for t in TOOLS if t in values]


def _network_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    bad = [v for v in values if v not in NETWORKS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"unknown network(s) {bad}; choose from {','.join(NETWORKS)}")
    return [n for n in NETWORKS if n in values]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.spawn",
        description="Start+reap throughput and latency of anyns containers "
        "running /bin/true, against trio.run_process + bwrap, + unshare, and "
        "plain trio.run_process, in the same run.",
    )
    parser.add_argument(
        "--n",
        type=_positive_int,
        default=None,
        help=f"containers per (tool, concurrency) (default {DEFAULT_N})",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=None,
        help="comma-separated in-flight counts (default " + ",".join(map(str, DEFAULT_CONCURRENCY)) + ")",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"CI smoke: N={QUICK_N}, concurrency "
        + ",".join(map(str, QUICK_CONCURRENCY))
        + " (explicit --n/--concurrency win)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=DEFAULT_WARMUP,
        help=f"untimed runs per tool before measuring (default {DEFAULT_WARMUP})",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="where to write results (default benchmarks/results/spawn.json)",
    )
    parser.add_argument(
        "--min-ratio",
        type=float,
        default=None,
        metavar="X",
        help="exit 1 if anyns/trio+bwrap throughput at the highest concurrency is below X",
    )
    parser.add_argument(
        "--network",
        type=_network_list,
        default=list(DEFAULT_NETWORKS),
        metavar="loopback,bridge",
        help="the anyns variants to measure: loopback (the defaults, row 'anyns') and/or bridge "
        "(network=anyns.Bridge in a namespace the benchmark makes, row 'anyns+bridge'); default loopback",
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
        help=argparse.SUPPRESS,  # e.g. --tools bwrap,unshare,plain
    )
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = QUICK_N if args.quick else DEFAULT_N
    if args.concurrency is None:
        args.concurrency = list(QUICK_CONCURRENCY if args.quick else DEFAULT_CONCURRENCY)
    # "anyns" in --tools stands for one row per --network choice.
    tools: list[str] = []
    for tool in args.tools:
        tools += [NETWORKS[n] for n in args.network] if tool == "anyns" else [tool]
    args.tools = tools
    return args


def check_gate(report: Report, min_ratio: float) -> bool:
    """True unless the anyns/bwrap ratio at the highest concurrency is < X."""
    top = max(report.config["concurrency"])
    num, den = GATE_RATIO
    ratio = report.ratio(num, den, top)
    if ratio is None:
        _say(f"--min-ratio {min_ratio}: no {num}/{den} ratio at C={top} (a tool was skipped); gate not evaluated")
        return True
    ok = ratio >= min_ratio
    verdict = "ok" if ok else "BELOW TARGET"
    _say(f"--min-ratio {min_ratio}: {num}/{den} at C={top} = {ratio:.2f}x, {verdict}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    report.machine = describe_machine()
    report.config = {
        "n": args.n,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "tools": args.tools,
        "network": args.network,
        "quick": args.quick,
    }
    _say(f"spawn benchmark: N={args.n} per batch, concurrency {args.concurrency}, tools {','.join(args.tools)}")
    try:
        trio.run(async_main, report, args)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:
        if not any(t in args.tools for t in ANYNS_TOOLS):
            raise
        # Escaped the supervisor's scope (e.g. its close, or a crash in its
        # own tasks): anyns' fault by construction of async_main.
        report.anyns_error = "\n".join(filter(None, [report.anyns_error, _format_exc(exc)]))
        _say(f"!! anyns FAILED:\n{_format_exc(exc)}")

    report.machine["loadavg_end"] = os.getloadavg()
    print_summary(report)
    write_json(report, args.json)

    status = 0
    if report.anyns_error is not None:
        status = 1
    if args.min_ratio is not None and not check_gate(report, args.min_ratio):
        status = 1
    return status


if __name__ == "__main__":
    if not __package__:
        # Run as a script: make `import anyns` find the repo's package.
        sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
