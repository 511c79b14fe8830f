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
The design's performance targets (docs/design.md) are *ratios* measured in
the same run on the same machine (start+reap throughput against trio+bwrap:
>= 2.0x with the defaults at 16 and 64 in flight, >= 1.8x at one in flight,
>= 2.2x for anyns-lean), because absolute numbers on small shared VMs drift
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
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

if not __package__:  # python benchmarks/spawn.py: import this directory as the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks._common import fmt, say

DEFAULT_N = 1000
DEFAULT_CONCURRENCY = (1, 16, 64)
QUICK_N = 100
QUICK_CONCURRENCY = (16,)
DEFAULT_WARMUP = 20
DEFAULT_TIMEOUT = 600.0  # seconds per (tool, concurrency) batch

PAYLOAD = common.PAYLOAD
TOOLS = ("anyns", "bwrap", "unshare", "plain")
#: --network choices, and the anyns tool (row) each one measures
NETWORKS = {"loopback": "anyns", "bridge": "anyns+bridge", "userns": "anyns+userns", "lean": "anyns-lean"}
DEFAULT_NETWORKS = ("loopback",)
ANYNS_TOOLS = tuple(NETWORKS.values())
BRIDGE_SUBNET = "10.77.0.0/16"  # inside the benchmark's own hub namespace only
LABELS = {
    "anyns": "anyns",
    "anyns+bridge": "anyns+bridge",
    "anyns+userns": "anyns+userns",
    "anyns-lean": "anyns-lean",
    "bwrap": "trio+bwrap",
    "unshare": "trio+unshare",
    "plain": "trio /bin/true",
}
NOTES = {
    "anyns": "one supervisor; ContainerSpec(argv=['/bin/true']) with defaults "
    "(HostRootfs, Namespaces.DEFAULT = MOUNT|PID|UTS|IPC|NET; the init as pid 1; hardened: Docker's "
    "capabilities, no_new_privs, seccomp filter, masked and read-only /proc paths, setsid)",
    "anyns+userns": "the anyns run plus Namespaces.USER (root inside = uid 100000 outside; the supervisor "
    "writes the maps before the child goes on)",
    "anyns-lean": "the anyns run with the work bwrap does: the init, but no seccomp filter, no masked or "
    "read-only paths, no capability cut, no no_new_privs, no setsid",
    "bwrap": "mount+pid+uts+ipc+net; pivot_root to a tmpfs with read-only /usr, "
    "/proc, /dev, /tmp tmpfs; bwrap runs its own pid-1 reaper",
    "unshare": "mount+pid+uts+ipc+net and a fresh /proc, but NO pivot_root: the "
    "host root stays visible, no /dev or /tmp mounts (less work than the others)",
    "plain": "no isolation; scale reference for fork+exec+reap from trio",
    "anyns+bridge": "the anyns run plus network=anyns.Bridge(subnet=" + repr(BRIDGE_SUBNET) + ", netns=<a hub "
    "container's kept netns>): veth pair, address, eth0 up and default route before exec, veth deleted at reap",
}

# Ratios printed per concurrency level: (numerator, denominator).
RATIOS = (("anyns", "bwrap"), ("anyns", "unshare"), ("anyns", "plain"))
#: printed too when anyns+bridge was measured
BRIDGE_RATIOS = (("anyns+bridge", "anyns"), ("anyns+bridge", "bwrap"))
#: printed when those variants were measured
VARIANT_RATIOS = {"anyns+userns": (("anyns+userns", "anyns"), ("anyns+userns", "bwrap")),
                  "anyns-lean": (("anyns-lean", "bwrap"), ("anyns-lean", "anyns"))}
GATE_RATIO = ("anyns", "bwrap")
TARGETS = {  # docs/design.md, "Performance targets"
    "anyns/bwrap at 16 and 64 in flight": 2.0,
    "anyns/bwrap at 1 in flight": 1.8,
    "anyns-lean/bwrap": 2.2,
}


# --------------------------------------------------------------------------
# Commands for the peers


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
        return common.bwrap_argv()
    if tool == "unshare":
        return unshare_argv()
    if tool == "plain":
        return plain_argv()
    raise ValueError(f"not a peer: {tool!r}")


# --------------------------------------------------------------------------
# Results


@dataclass
class Measurement(common.Batch):
    per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


class Report(common.ToolReport):
    labels = LABELS
    notes = NOTES

    def ratio_pairs(self) -> tuple[tuple[str, str], ...]:
        """RATIOS, plus the bridge's when anyns+bridge is among the tools."""
        tools = self.config.get("tools", [])
        extra = tuple(r for tool, ratios in VARIANT_RATIOS.items() if tool in tools for r in ratios)
        return RATIOS + (BRIDGE_RATIOS if "anyns+bridge" in tools else ()) + extra

    def ratios(self) -> list[dict[str, Any]]:
        return self.ratio_rows(self.ratio_pairs(), {"": "per_second"})

    def to_json(self) -> dict[str, Any]:
        return self.json_with(
            "spawn",
            {"payload": PAYLOAD},
            {
                "measurements": [asdict(m) for m in self.measurements],
                "ratios": self.ratios(),
                "targets": TARGETS,
            },
        )


# --------------------------------------------------------------------------
# Running


async def measure(tool: str, run_one: common.RunOne, n: int, concurrency: int) -> Measurement:
    """Run ``run_one`` n times with exactly ``concurrency`` calls in flight."""
    latencies, seconds = await common.timed_batch(run_one, n, concurrency)
    return Measurement(
        tool=tool,
        label=LABELS[tool],
        concurrency=concurrency,
        n=n,
        seconds=seconds,
        per_second=n / seconds,
        **common.ms_summary(latencies),
    )


def _row(m: Measurement) -> str:
    return (
        f"{m.label:<16} {m.concurrency:>5} {m.n:>6} {m.per_second:>13.1f}"
        f" {m.p50_ms:>8.2f} {m.p90_ms:>8.2f} {m.p99_ms:>8.2f}"
    )


HEADER = f"{'tool':<16} {'C':>5} {'N':>6} {'containers/s':>13} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"


def _fail(report: Report, tool: str, where: str, exc: BaseException) -> None:
    report.fail(tool, where, exc, anyns=tool in ANYNS_TOOLS, prefix=f"{LABELS[tool]} ")


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
    runners: dict[str, common.RunOne] = {}

    for tool in args.tools:
        if tool in ANYNS_TOOLS:
            continue
        argv = peer_argv(tool)
        report.commands[tool] = subprocess.list2cmdline(argv)
        if await report.admit_peer(tool, argv):
            runners[tool] = common.process_runner(argv)

    async with contextlib.AsyncExitStack() as stack:
        anyns_runners: dict[str, common.RunOne] = {}
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
                anyns = common.import_anyns(report.machine)  # imported late: optional until it exists
                spec = anyns.ContainerSpec(argv=[PAYLOAD])
                report.commands["anyns_spec"] = repr(spec)
                sup = await stack.enter_async_context(anyns.open_supervisor())
            except Exception as exc:
                report.setup_failed(exc)
            else:
                if "anyns" in args.tools:

                    async def run_anyns() -> object:
                        return await sup.run(spec)

                    anyns_runners["anyns"] = run_anyns
                if "anyns+bridge" in args.tools:
                    try:
                        bridge = await stack.enter_async_context(bridge_in_own_netns(sup))
                    except Exception as exc:
                        _fail(report, "anyns+bridge", "setup", exc)
                    else:
                        bridge_spec = anyns.ContainerSpec(argv=[PAYLOAD], network=bridge)
                        report.commands["anyns+bridge_spec"] = repr(bridge_spec)

                        async def run_bridged() -> object:
                            return await sup.run(bridge_spec)

                        anyns_runners["anyns+bridge"] = run_bridged
                variants = {
                    "anyns+userns": {"namespaces": anyns.Namespaces.DEFAULT | anyns.Namespaces.USER},
                    "anyns-lean": {"seccomp": None, "masked_paths": (), "readonly_paths": (),
                                   "capabilities": anyns.ALL_CAPABILITIES, "no_new_privileges": False,
                                   "new_session": False},
                }
                for tool, fields in variants.items():
                    if tool in args.tools:
                        variant_spec = anyns.ContainerSpec(argv=[PAYLOAD], **fields)
                        report.commands[tool + "_spec"] = repr(variant_spec)
                        anyns_runners[tool] = functools.partial(sup.run, variant_spec)
        runners = {**anyns_runners, **runners}

        await common.measure_levels(
            report, runners, args, measure, common.warm, functools.partial(_fail, report), HEADER, _row
        )
        # Leaving the stack closes the supervisor; an error there escapes to
        # main(), which charges it to anyns.


# --------------------------------------------------------------------------
# Output


def print_summary(report: Report) -> None:
    mc = report.machine
    common.print_banner(
        72,
        f"spawn benchmark: start+reap {PAYLOAD}; {common.machine_line(mc)}",
        common.versions_line(mc),
        common.load_line(mc, advice=True),
    )
    say()
    common.print_table(
        HEADER, _row, report.in_order(concurrency=report.config["concurrency"], tool=report.config["tools"])
    )
    say()
    common.print_ratios(report.ratios(), [f"{a}/{b}" for a, b in report.ratio_pairs()], lambda x: fmt(x, suffix="x"))
    say()
    say("targets (ratios, same run; docs/design.md): anyns/bwrap >= 2.0x at 16 and 64 in flight, >= 1.8x at 1;"
        " anyns-lean/bwrap >= 2.2x")
    report.print_notes()


# --------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.spawn",
        description="Start+reap throughput and latency of anyns containers "
        "running /bin/true, against trio.run_process + bwrap, + unshare, and "
        "plain trio.run_process, in the same run.",
    )
    parser.add_argument(
        "--n",
        type=common.positive_int,
        default=None,
        help=f"containers per (tool, concurrency) (default {DEFAULT_N})",
    )
    common.add_concurrency_option(parser, DEFAULT_CONCURRENCY)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"CI smoke: N={QUICK_N}, concurrency {common.joined(QUICK_CONCURRENCY)} (explicit --n/--concurrency win)",
    )
    common.add_warmup_option(parser, DEFAULT_WARMUP, "runs per tool")
    common.add_json_option(parser, "spawn")
    parser.add_argument(
        "--min-ratio",
        type=float,
        default=None,
        metavar="X",
        help="exit 1 if anyns/trio+bwrap throughput at the highest concurrency is below X",
    )
    parser.add_argument(
        "--network",
        type=lambda text: common.choice_list(text, list(NETWORKS), "network"),
        default=list(DEFAULT_NETWORKS),
        metavar="loopback,bridge,userns,lean",
        help="the anyns variants to measure: loopback (the defaults, row 'anyns'), bridge "
        "(network=anyns.Bridge in a namespace the benchmark makes, row 'anyns+bridge'), userns "
        "(Namespaces.USER, row 'anyns+userns'), lean (bwrap's work: no hardening, row 'anyns-lean'); "
        "default loopback",
    )
    common.add_hidden_options(parser, DEFAULT_TIMEOUT, TOOLS)  # e.g. --tools bwrap,unshare,plain
    args = parser.parse_args(argv)
    common.apply_defaults(
        args, n=(QUICK_N, DEFAULT_N), concurrency=(list(QUICK_CONCURRENCY), list(DEFAULT_CONCURRENCY))
    )
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
    ratio = report.ratio(num, den, "per_second", concurrency=top)
    if ratio is None:
        say(f"--min-ratio {min_ratio}: no {num}/{den} ratio at C={top} (a tool was skipped); gate not evaluated")
        return True
    ok = ratio >= min_ratio
    verdict = "ok" if ok else "BELOW TARGET"
    say(f"--min-ratio {min_ratio}: {num}/{den} at C={top} = {ratio:.2f}x, {verdict}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    report.machine = common.describe_machine()
    report.config = {
        "n": args.n,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "tools": args.tools,
        "network": args.network,
        "quick": args.quick,
    }
    say(f"spawn benchmark: N={args.n} per batch, concurrency {args.concurrency}, tools {','.join(args.tools)}")
    if not common.run_trio(report, any(t in args.tools for t in ANYNS_TOOLS), async_main, report, args):
        return 130
    common.finish(report, args.json, print_summary)
    return report.exit_status(args.min_ratio is None or check_gate(report, args.min_ratio))


if __name__ == "__main__":
    sys.exit(main())
