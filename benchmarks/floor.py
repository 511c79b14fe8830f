"""anyns against its own physical limit: the same compiled op lists run from C with no Python.

What is measured
----------------
For each variant (``defaults``: ``ContainerSpec(argv=["/bin/true"])``;
``lean``: spawn.py's ``anyns-lean`` spec, the work bwrap does) the plan is
prepared exactly as the supervisor and the zygote prepare it:

* ``anyns._plan.compile_plan`` against the host layout (``probe_host``), the
  ``seccomp`` policy op compiled into ``seccomp_bpf`` as the supervisor does
  (``_security.with_seccomp_bpf``), the wire form round-tripped through
  ``_protocol`` as the zygote receives it;
* linked by the zygote's own ``Zygote._link`` (with a native stand-in that
  keeps the encoded bytes): the skeleton tree built with
  ``_skeleton.build_in_zygote`` (or expanded into the op list where the
  kernel cannot), the op list from ``_ops.encode``, ``shared_vm`` from
  ``_ops.needs_own_memory``;
* the init as the zygote opens it (``_init.open_binary``: a sealed memfd).

``floor.c``, compiled here with ``cc -O2``, then loads
``anyns/_native/libanyns-spawn.so``, links the op list and starts N
containers with C in flight: fresh pipes, ``anyns_spawn``, and the exit
awaited on the pidfd (epoll, ``waitid(P_PIDFD)``), the error pipe read to EOF,
the init's status read; any failure is counted and printed. That is the
**floor**: anyns's own native core with nothing around it. In the same run,
rounds alternating and their order rotating, the same specs through anyns
(one supervisor, ``sup.run(spec)``, as ``spawn.py``) and ``trio.run_process``
of ``spawn.py``'s bwrap command.

Printed: containers/s of each, **anyns/floor** (how close anyns comes to its
limit; the design's target is >= 0.8 at 16 in flight) and **floor/bwrap**
(what the native core could give at most), per round and as the median and
range over rounds. Results: ``benchmarks/results/floor.json``.

The floor leaves out ``CLONE_PARENT``: there is no supervisor, the driver is
the containers' parent and reaps them. A variant whose plan needs a cgroup
leaf, joined namespaces or a go pipe is refused (neither of these does).

    python -m benchmarks.floor                    # N=1000 at 16 in flight, 3 rounds
    python -m benchmarks.floor --quick            # CI smoke: N=100, 1 round
    python -m benchmarks.floor --concurrency 1,16,64 --rounds 5

Exit status 0, or 1 when the floor or anyns fails (a container that fails
counts), 2 when the driver cannot be built.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

if not __package__:  # python benchmarks/floor.py: import this directory as the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks import scale, spawn
from benchmarks._common import fmt, say

SOURCE = Path(__file__).resolve().parent / "floor.c"
DEFAULT_N = 1000
DEFAULT_CONCURRENCY = (16,)
DEFAULT_ROUNDS = 3
DEFAULT_WARMUP = 20
QUICK_N = 100
QUICK_ROUNDS = 1
QUICK_WARMUP = 5
DEFAULT_TIMEOUT = 600.0

VARIANTS = ("defaults", "lean")
TOOLS = ("floor", "anyns", "bwrap")
#: the anyns tool (spawn.py's row) of each variant
ANYNS_TOOL = {"defaults": "anyns", "lean": "anyns-lean"}
TARGETS = {"anyns/floor at 16 in flight": 0.8}  # docs/design.md, "Performance targets"
NOTES = {
    "floor": "benchmarks/floor.c: the variant's encoded op list through libanyns-spawn.so from C (anyns_spawn, "
    "epoll on pidfd + error pipe, waitid(P_PIDFD)); no supervisor, no zygote loop, no CLONE_PARENT",
    "anyns": "one supervisor, sup.run(spec), as spawn.py",
    "bwrap": "trio.run_process of spawn.py's bwrap command (the same for both variants)",
    "defaults": "ContainerSpec(argv=['/bin/true']): init, Docker-like hardening",
    "lean": "spawn.py's anyns-lean: the init, no seccomp, masks, capability cut, no_new_privs or setsid",
}


def variant_fields(anyns: Any, variant: str) -> dict[str, Any]:
    """The ContainerSpec fields of ``variant`` besides argv (``lean``: spawn.py's ``anyns-lean``)."""
    if variant == "defaults":
        return {}
    return {"seccomp": None, "masked_paths": (), "readonly_paths": (), "capabilities": anyns.ALL_CAPABILITIES,
            "no_new_privileges": False, "new_session": False}


# --------------------------------------------------------------------------
# Preparing the op lists as the supervisor and the zygote do


@dataclass
class Prepared:
    """One variant, ready for the driver."""

    variant: str
    spec: str
    plan_path: str
    flags: int
    shared_vm: bool
    status: bool
    skeleton_fd: int
    ops: int
    plan_bytes: int
    skeleton: str  # "tree" (a prebuilt detached tree), "expanded" (the child builds it) or "none"


class _KeepEncoded:
    """The zygote's native core, as far as ``Zygote._link`` uses it: ``link`` keeps the encoded bytes."""

    def link(self, encoded: bytes) -> bytes:
        return encoded


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def prepare(anyns: Any, variant: str, directory: str, init_fd: int) -> Prepared:
    """Compile and link ``variant``'s plan as the supervisor and the zygote would; write its op list.

    Raises:
        ValueError: the plan needs what the driver does not provide (a cgroup
            leaf, joined namespaces, a go pipe, a dumpable child).
    """
    from anyns import _plan, _protocol, _security
    from anyns._host import newroot_dir, probe_host
    from anyns._spec import needs_cgroup
    from anyns._zygote import _ops, _server

    spec = anyns.ContainerSpec(argv=[common.PAYLOAD], **variant_fields(anyns, variant))
    if needs_cgroup(spec, os.geteuid() != 0):
        raise ValueError(f"{variant}: the plan needs a cgroup leaf, which the floor does not make")
    layout = probe_host(newroot_dir(), spec.rootfs, None)  # cgroup facts matter only to a plan with a leaf
    plan = _plan.compile_plan(spec, layout)
    if plan.extra_kinds not in ((), ("status",)) or plan.enter or plan.cgroup != -1 or plan.dumpable or plan.tty:
        raise ValueError(f"{variant}: extra fds {plan.extra_kinds}, enter {plan.enter}, dumpable {plan.dumpable}: "
                         "the floor provides only the init's status pipe")
    wire = plan.to_wire()
    wire["ops"] = [list(op) for op in _security.with_seccomp_bpf(plan.ops)]  # the supervisor's rewrite
    body = _protocol.decode_body(_protocol.dumps(wire).encode())  # what the zygote receives
    # The zygote's own linking (skeleton tree, encoding, shared_vm), with umask 0 as in the zygote.
    zygote = _server.Zygote(None, -1, layout.newroot, init_fd, native=_KeepEncoded())  # type: ignore[arg-type]
    with _umask(0):
        linked = zygote._link(1, body)
    encoded = bytes(linked.ops)
    path = os.path.join(directory, f"{variant}.ops")
    with open(path, "wb") as f:
        f.write(encoded)
    skeleton = "none" if body.get("skeleton") is None else "tree" if linked.skeleton is not None else "expanded"
    return Prepared(
        variant=variant, spec=repr(spec), plan_path=path, flags=linked.flags, shared_vm=linked.shared_vm,
        status=bool(linked.extra), skeleton_fd=linked.skeleton[0] if linked.skeleton is not None else -1,
        ops=len(_ops.decode(encoded)), plan_bytes=len(encoded), skeleton=skeleton,
    )


def build_driver(directory: str) -> str:
    """``cc -O2`` floor.c into ``directory``; the binary's path.

    Raises:
        OSError: no C compiler, or it failed (its output in the message).
    """
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler (cc) on PATH: apt-get install build-essential")
    out = os.path.join(directory, "floor")
    proc = subprocess.run([compiler, "-O2", "-Wall", "-o", out, str(SOURCE), "-ldl"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(f"{compiler} failed on {SOURCE}:\n{proc.stderr.strip()}")
    return out


def driver_argv(driver: str, library: str, p: Prepared, n: int, concurrency: int, warmup: int,
                init_fd: int) -> list[str]:
    argv = [driver, "--lib", library, "--plan", p.plan_path, "--n", str(n), "--concurrency", str(concurrency),
            "--warmup", str(warmup), "--flags", hex(p.flags), "--shared-vm", str(int(p.shared_vm)),
            "--skeleton", str(p.skeleton_fd), "--init", str(init_fd)]
    return [*argv, "--status"] if p.status else argv


# --------------------------------------------------------------------------
# Results


@dataclass
class Measurement(common.Batch):
    round: int
    variant: str
    per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    failures: int = 0
    first_failure: str | None = None
    loadavg: float | None = None
    #: CPU time per container, microseconds: the caller (the supervisor, the driver, trio for bwrap), the
    #: zygote (anyns), and the reaped processes (the container's child, init and program; bwrap and its own)
    cpu_parent_us: float | None = None
    cpu_zygote_us: float | None = None
    cpu_containers_us: float | None = None


@dataclass
class Report(common.BaseReport):
    commands: dict[str, Any] | None = None
    prepared: list[dict[str, Any]] | None = None
    measurements: list[Measurement] | None = None
    skipped: dict[str, str] | None = None
    floor_error: str | None = None

    def rates(self, tool: str, variant: str, concurrency: int) -> dict[int, float]:
        """round -> containers/s of ``tool`` (bwrap: its one command, whatever ``variant``)."""
        name = ANYNS_TOOL[variant] if tool == "anyns" else tool
        return {m.round: m.per_second for m in self.measurements or ()
                if m.tool == name and m.concurrency == concurrency and (tool == "bwrap" or m.variant == variant)}

    def cpu_totals(self, tool: str, variant: str, concurrency: int) -> dict[int, float]:
        """round -> CPU microseconds per container of ``tool`` (caller, zygote and reaped processes together)."""
        name = ANYNS_TOOL[variant] if tool == "anyns" else tool
        return {m.round: (m.cpu_parent_us or 0.0) + (m.cpu_zygote_us or 0.0) + (m.cpu_containers_us or 0.0)
                for m in self.measurements or ()
                if m.tool == name and m.variant == variant and m.concurrency == concurrency
                and m.cpu_containers_us is not None}

    def ratio_rows(self) -> list[dict[str, Any]]:
        """Per variant and concurrency: each tool's median and range, and the per-round ratios' median and range."""
        rows = []
        for variant in self.config["variants"]:
            for c in self.config["concurrency"]:
                row: dict[str, Any] = {"variant": variant, "concurrency": c}
                rates = {tool: self.rates(tool, variant, c) for tool in TOOLS}
                for tool, by_round in rates.items():
                    row[tool] = _spread(list(by_round.values()))
                for num, den in (("anyns", "floor"), ("floor", "bwrap"), ("anyns", "bwrap")):
                    same = sorted(set(rates[num]) & set(rates[den]))
                    row[f"{num}/{den}"] = _spread([rates[num][r] / rates[den][r] for r in same if rates[den][r]])
                # The same ratio from CPU time per container (the floor's over anyns's, kernel threads left out):
                # what anyns/floor would be with both CPU-bound, whatever share of the CPUs other work leaves.
                cpu = {tool: self.cpu_totals(tool, variant, c) for tool in ("anyns", "floor")}
                same = sorted(set(cpu["anyns"]) & set(cpu["floor"]))
                row["anyns/floor by CPU"] = _spread([cpu["floor"][r] / cpu["anyns"][r]
                                                     for r in same if cpu["anyns"][r]])
                rows.append(row)
        return rows

    def cpu_rows(self) -> list[dict[str, Any]]:
        """Per tool, variant and concurrency: CPU microseconds per container, median over rounds, by process."""
        rows = []
        keys = sorted({(m.tool, m.variant, m.concurrency) for m in self.measurements or ()},
                      key=lambda k: (k[2], k[1], k[0]))
        for tool, variant, c in keys:
            ms = [m for m in self.measurements or () if (m.tool, m.variant, m.concurrency) == (tool, variant, c)]
            row: dict[str, Any] = {"tool": tool, "variant": variant, "concurrency": c}
            for part in ("parent", "zygote", "containers"):
                values = [v for m in ms if (v := getattr(m, f"cpu_{part}_us")) is not None]
                row[part] = statistics.median(values) if values else None
            row["total"] = sum(row[p] or 0.0 for p in ("parent", "zygote", "containers"))
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "floor",
            "payload": common.PAYLOAD,
            "machine": self.machine,
            "config": self.config,
            "commands": self.commands,
            "notes": NOTES,
            "prepared": self.prepared,
            "measurements": [asdict(m) for m in self.measurements or ()],
            "ratios": self.ratio_rows(),
            "cpu_per_container_us": self.cpu_rows(),
            "targets": TARGETS,
            "skipped": self.skipped,
            "floor_error": self.floor_error,
            "anyns_error": self.anyns_error,
        }

    def exit_status(self, gate_ok: bool = True) -> int:
        return 0 if self.anyns_error is None and self.floor_error is None and gate_ok else 1


def _spread(values: list[float]) -> dict[str, float] | None:
    """median, min and max of ``values`` (None when there are none)."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def _cell(s: dict[str, float] | None, spec: str = ".0f", suffix: str = "") -> str:
    if s is None:
        return "-"
    if s["rounds"] == 1:
        return f"{s['median']:{spec}}{suffix}"
    return f"{s['median']:{spec}}{suffix} ({s['min']:{spec}}-{s['max']:{spec}})"


HEADER = (f"{'round':>5} {'tool':<16} {'variant':<9} {'C':>4} {'N':>6} {'containers/s':>13} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'load':>5}")


def _row(m: Measurement) -> str:
    return (f"{m.round:>5} {m.label:<16} {m.variant:<9} {m.concurrency:>4} {m.n:>6} {m.per_second:>13.1f}"
            f" {m.p50_ms:>8.2f} {m.p99_ms:>8.2f} {fmt(m.loadavg, '.1f'):>5}"
            + (f"  {m.failures} FAILED: {m.first_failure}" if m.failures else ""))


# --------------------------------------------------------------------------
# Running


async def measure_floor(driver: list[str], fds: Sequence[int], variant: str, n: int, concurrency: int,
                        round_: int) -> Measurement:
    """One batch of the C driver; raises if it could not run (not when a container failed: that is counted)."""
    proc = await trio.run_process(driver, capture_stdout=True, capture_stderr=True, check=False, pass_fds=tuple(fds))
    try:
        result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"the floor driver exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip() or '(no output)'}") from None
    return Measurement(
        tool="floor", label="C floor", concurrency=concurrency, n=n, seconds=result["seconds"],
        round=round_, variant=variant, per_second=result["per_second"], p50_ms=result["p50_ms"],
        p90_ms=result["p90_ms"], p99_ms=result["p99_ms"], max_ms=result["max_ms"],
        failures=result["failures"], first_failure=result["first_failure"] or None,
        cpu_parent_us=result["cpu_self_ms"] * 1e3 / n, cpu_containers_us=result["cpu_children_ms"] * 1e3 / n,
    )


def _cpu_ms() -> tuple[float, float, float | None]:
    """CPU ms so far: this process, its reaped children, and its anyns zygote (None: none)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    zygote = None
    pid = scale.find_zygote()
    if pid is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            zygote = (int(fields[11]) + int(fields[12])) * 1e3 / os.sysconf("SC_CLK_TCK")
    return (me.ru_utime + me.ru_stime) * 1e3, (children.ru_utime + children.ru_stime) * 1e3, zygote


async def measure_trio(tool: str, runner: common.RunOne, variant: str, n: int, concurrency: int,
                       round_: int) -> Measurement:
    before = _cpu_ms()
    m = await spawn.measure(tool, runner, n, concurrency)
    after = _cpu_ms()
    zygote = after[2] - before[2] if after[2] is not None and before[2] is not None else None
    return Measurement(tool=tool, label=m.label, concurrency=concurrency, n=n, seconds=m.seconds, round=round_,
                       variant=variant, per_second=m.per_second, p50_ms=m.p50_ms, p90_ms=m.p90_ms,
                       p99_ms=m.p99_ms, max_ms=m.max_ms, cpu_parent_us=(after[0] - before[0]) * 1e3 / n,
                       cpu_zygote_us=None if tool == "bwrap" or zygote is None else zygote * 1e3 / n,
                       cpu_containers_us=(after[1] - before[1]) * 1e3 / n)


async def async_main(report: Report, args: argparse.Namespace, directory: str) -> None:
    import anyns
    from anyns import _init
    from anyns._zygote import _native

    common.import_anyns(report.machine)
    assert report.commands is not None and report.measurements is not None and report.skipped is not None
    init_fd, _sealed = _init.open_binary()  # as the zygote: a sealed memfd copy
    prepared: dict[str, Prepared] = {}
    try:
        driver = build_driver(directory)
        for variant in args.variants:
            prepared[variant] = prepare(anyns, variant, directory, init_fd)
    except (OSError, ValueError) as exc:
        report.floor_error = f"setup: {common.format_exc(exc)}"
        say(f"!! the floor cannot run: {common.short_exc(exc)}")
    report.prepared = [asdict(p) for p in prepared.values()]
    for p in prepared.values():
        say(f"{p.variant}: {p.ops} ops, {p.plan_bytes} bytes encoded, clone flags {p.flags:#x}, "
            f"shared_vm={p.shared_vm}, skeleton {p.skeleton}, status pipe {p.status}")

    # (tool, variant) -> a coroutine function of (n, concurrency, round)
    runners: dict[tuple[str, str], Any] = {}
    for variant, p in prepared.items():
        fds = [init_fd] + ([p.skeleton_fd] if p.skeleton_fd >= 0 else [])

        def floor_runner(n: int, c: int, r: int, p: Prepared = p, fds: list[int] = fds) -> Any:
            argv = driver_argv(driver, _native.LIBRARY, p, n, c, args.warmup, init_fd)
            return measure_floor(argv, fds, p.variant, n, c, r)

        report.commands[f"floor {variant}"] = subprocess.list2cmdline(
            driver_argv("floor", _native.LIBRARY, p, args.n, args.concurrency[0], args.warmup, init_fd))
        if "floor" in args.tools:
            runners[("floor", variant)] = floor_runner

    bwrap = spawn.peer_argv("bwrap")
    report.commands["bwrap"] = subprocess.list2cmdline(bwrap)
    if "bwrap" in args.tools and await admit(report, "bwrap", bwrap):
        run_bwrap = common.process_runner(bwrap)
        await common.warm(run_bwrap, args.warmup)
        runners[("bwrap", "-")] = functools.partial(measure_trio, "bwrap", run_bwrap, "-")

    async with contextlib.AsyncExitStack() as stack:
        if "anyns" in args.tools:
            try:
                sup = await stack.enter_async_context(anyns.open_supervisor())
                for variant in args.variants:
                    spec = anyns.ContainerSpec(argv=[common.PAYLOAD], **variant_fields(anyns, variant))
                    report.commands[ANYNS_TOOL[variant]] = f"sup.run({spec!r})"
                    run = functools.partial(sup.run, spec)
                    await common.warm(run, args.warmup)
                    runners[("anyns", variant)] = functools.partial(measure_trio, ANYNS_TOOL[variant], run, variant)
            except Exception as exc:
                report.add_anyns_error(f"setup: {common.format_exc(exc)}")
                say(f"!! anyns FAILED to start:\n{report.anyns_error}")

        say()
        say(HEADER)
        order = list(runners)
        for r in range(args.rounds):
            for c in args.concurrency:
                for key in common.rotate(order, r + args.concurrency.index(c)):
                    if key not in runners:
                        continue
                    await common.settle()
                    load = os.getloadavg()[0]
                    try:
                        with trio.fail_after(args.timeout):
                            m = await runners[key](args.n, c, r + 1)
                    except Exception as exc:
                        runners.pop(key)
                        where = f"{key[0]} {key[1]}, round {r + 1}, C={c}"
                        if key[0] == "anyns":
                            report.add_anyns_error(f"{where}: {common.format_exc(exc)}")
                        elif key[0] == "floor":
                            report.floor_error = f"{where}: {common.format_exc(exc)}"
                        else:
                            report.skipped[key[0]] = f"{where}: {common.short_exc(exc)}"
                        say(f"!! {where} FAILED: {common.short_exc(exc)}")
                        continue
                    m.loadavg = load
                    if m.failures:
                        report.floor_error = f"{m.failures} of {m.n} containers failed: {m.first_failure}"
                    report.measurements.append(m)
                    say(_row(m))


async def admit(report: Report, tool: str, argv: list[str]) -> bool:
    reason = await common.preflight_peer(argv)
    if reason is not None:
        assert report.skipped is not None
        report.skipped[tool] = reason
        say(f"-- skipping {tool}: {reason}")
    return reason is None


# --------------------------------------------------------------------------
# Output and command line


def print_summary(report: Report) -> None:
    mc = report.machine
    common.print_banner(
        100,
        f"floor benchmark: start+reap {common.PAYLOAD}, anyns against its C floor; {common.machine_line(mc)}",
        common.versions_line(mc),
        f"load average {mc['loadavg_start'][0]:.2f} before, {mc['loadavg_end'][0]:.2f} after"
        + common.LOAD_ADVICE,
    )
    say("containers/s and ratios: median (min-max) over rounds; a ratio is taken within each round")
    say(f"{'variant':<9} {'C':>4} {'C floor':>16} {'anyns':>16} {'trio+bwrap':>16} {'anyns/floor':>18} "
        f"{'floor/bwrap':>18} {'anyns/bwrap':>18} {'anyns/floor by CPU':>19}")
    for row in report.ratio_rows():
        say(f"{row['variant']:<9} {row['concurrency']:>4} {_cell(row['floor']):>16} {_cell(row['anyns']):>16}"
            f" {_cell(row['bwrap']):>16} {_cell(row['anyns/floor'], '.2f', 'x'):>18}"
            f" {_cell(row['floor/bwrap'], '.2f', 'x'):>18} {_cell(row['anyns/bwrap'], '.2f', 'x'):>18}"
            f" {_cell(row['anyns/floor by CPU'], '.2f', 'x'):>19}")
    say("anyns/floor by CPU: the floor's CPU time per container over anyns's (below; kernel threads not counted):"
        " the ratio with both CPU-bound, whatever share of the CPUs other work on the machine leaves each")
    say()
    say("CPU per container, microseconds (median over rounds; getrusage and /proc/PID/stat): the caller (anyns: the "
        "supervisor; the floor: the driver; bwrap: trio), the zygote, the reaped processes (child + init + program)")
    say(f"{'tool':<12} {'variant':<9} {'C':>4} {'caller':>8} {'zygote':>8} {'reaped':>8} {'total':>8}")
    for row in report.cpu_rows():
        say(f"{row['tool']:<12} {row['variant']:<9} {row['concurrency']:>4} {fmt(row['parent'], '.0f'):>8}"
            f" {fmt(row['zygote'], '.0f'):>8} {fmt(row['containers'], '.0f'):>8} {fmt(row['total'], '.0f'):>8}")
    say()
    say("target (docs/design.md): anyns >= 0.8x its floor at 16 in flight")
    for key in ("floor", "anyns", "bwrap", *report.config["variants"]):
        say(f"  {key}: {NOTES[key]}")
    for tool, reason in (report.skipped or {}).items():
        say(f"  skipped {tool}: {reason}")
    if report.floor_error:
        say(f"  the floor FAILED: {report.floor_error.splitlines()[-1]}")
    if report.anyns_error:
        say("  anyns FAILED (see above)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.floor",
        description="anyns against its C floor: the same compiled op lists through the native spawn core from "
        "a C driver with no Python, anyns and trio+bwrap, in alternating rounds of the same run.",
    )
    parser.add_argument("--n", type=common.positive_int, default=None,
                        help=f"containers per (tool, variant, round) (default {DEFAULT_N}; --quick {QUICK_N})")
    common.add_concurrency_option(parser, DEFAULT_CONCURRENCY)
    parser.add_argument("--rounds", type=common.positive_int, default=None,
                        help=f"rounds, the tools' order rotating (default {DEFAULT_ROUNDS}; --quick {QUICK_ROUNDS})")
    parser.add_argument("--variants", type=lambda text: common.choice_list(text, VARIANTS, "variant"),
                        default=list(VARIANTS), metavar="defaults,lean", help="the specs (default both)")
    parser.add_argument("--warmup", type=common.non_negative_int, default=None,
                        help=f"untimed runs per tool and variant (default {DEFAULT_WARMUP}; --quick {QUICK_WARMUP})")
    parser.add_argument("--quick", action="store_true",
                        help=f"CI smoke: N={QUICK_N}, {QUICK_ROUNDS} round (explicit options win)")
    common.add_json_option(parser, "floor")
    common.add_hidden_options(parser, DEFAULT_TIMEOUT, TOOLS)
    args = parser.parse_args(argv)
    common.apply_defaults(args, n=(QUICK_N, DEFAULT_N), concurrency=(list(DEFAULT_CONCURRENCY),
                                                                     list(DEFAULT_CONCURRENCY)),
                          rounds=(QUICK_ROUNDS, DEFAULT_ROUNDS), warmup=(QUICK_WARMUP, DEFAULT_WARMUP))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report(commands={}, prepared=[], measurements=[], skipped={})
    report.machine = common.describe_machine(unshare=False)
    report.machine["anyns_revision"] = common.anyns_revision()
    report.config = {"n": args.n, "concurrency": args.concurrency, "rounds": args.rounds, "warmup": args.warmup,
                     "variants": args.variants, "tools": args.tools, "quick": args.quick}
    say(f"floor benchmark: N={args.n}, concurrency {common.joined(args.concurrency)}, {args.rounds} round(s), "
        f"variants {','.join(args.variants)}, tools {','.join(args.tools)}; "
        f"load average {report.machine['loadavg_start'][0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="anyns-floor-") as directory:
        if not common.run_trio(report, True, async_main, report, args, directory):
            return 130
    common.finish(report, args.json, print_summary)
    return report.exit_status()


if __name__ == "__main__":
    sys.exit(main())
