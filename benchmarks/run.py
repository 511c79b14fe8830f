"""The whole benchmark suite: ``python -m benchmarks`` or ``python benchmarks/run.py``.

Runs, one after the other in this process (each part's own ``main(argv)``):

``spawn``
    start+reap throughput against trio+bwrap, trio+unshare and plain trio
    (``spawn.py``, its defaults);
``floor``
    anyns against its physical limit: the same compiled op lists through the
    native spawn core from a C driver with no Python (``floor.py``: the C
    floor, anyns and trio+bwrap in alternating rounds, defaults and lean);
``latency``
    call -> first output at 1 and 100 in flight, against trio+bwrap
    (``latency.py``);
``scale``
    N containers running at once: start time, supervisor memory and fds per
    container, the zygote's memory, loop lateness, kill+reap time, with and
    without ``gc.freeze()`` (``scale.py --gc-freeze``; each trial in a fresh
    interpreter);
``mounts``
    start+reap time against the number of bind mounts, against bwrap
    (``mounts.py``);
``bridge``
    ``spawn.py --network loopback,bridge --tools anyns,bwrap``: the cost of
    a bridged network (veth, address, route) per container;
``soak``
    ``soak.py``: 10,000 spawns of mixed specs, cancelled at random points;
    the drift of the supervisor's fds, RSS and threads, the host's mounts and
    cgroups (``--quick``: 1,000 spawns).

Each part writes ``benchmarks/results/<part>.json``; this script adds
``benchmarks/results/summary.json`` (the machine, each part's status and
results, and the key figures), prints a summary table with the key ratios,
and draws ``benchmarks/results/throughput.png`` (``plot.py``, when
matplotlib is installed). ``--quick`` passes ``--quick`` to every part: a
CI smoke of everything, a few seconds per part.

The user-namespace variant is not measured: anyns does not support user
namespaces yet (``Namespaces.USER`` is a ``SpecError``). The summary says so,
with the error anyns gives, rather than leaving the row out.

Exit status: 0 when every part succeeded, else 1 (a part's own exit status
is in the summary).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # python benchmarks/run.py: import this directory as the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as common
from benchmarks import floor, jobs, latency, mounts, plot, scale, soak, spawn
from benchmarks._common import fmt

PARTS = ("spawn", "floor", "latency", "scale", "mounts", "bridge", "jobs", "soak")
BRIDGE_N = 500  # per batch; the bridge part is a variant, it needs fewer than spawn's 1000
BRIDGE_CONCURRENCY = "1,16"


def part_argv(part: str, json_path: Path, quick: bool, draw: bool = True) -> list[str]:
    """The command line each part's ``main`` gets (``draw``: a part that plots may)."""
    argv = ["--json", str(json_path)] + (["--quick"] if quick else [])
    if part == "soak" and not draw:
        argv.append("--no-plot")
    if part == "scale":
        argv.append("--gc-freeze")
    if part == "spawn":
        # the variants in the same run: bwrap's work only (no hardening), and with a user namespace
        argv += ["--network", "loopback,lean,userns"]
    if part == "bridge":
        argv += ["--network", "loopback,bridge", "--tools", "anyns,bwrap"]
        if not quick:
            argv += ["--n", str(BRIDGE_N), "--concurrency", BRIDGE_CONCURRENCY]
    return argv


MAINS: dict[str, Callable[[Sequence[str] | None], int]] = {
    "spawn": spawn.main,
    "floor": floor.main,
    "latency": latency.main,
    "scale": scale.main,
    "mounts": mounts.main,
    "bridge": spawn.main,
    "jobs": jobs.main,
    "soak": soak.main,
}


# --------------------------------------------------------------------------
# Key figures of each part, from its JSON


def _get(row: dict[str, Any] | None, key: str) -> float | None:
    return None if row is None else row.get(key)


def _by(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


Row = tuple[str, str, str, str, str, str]  # part, measure, anyns, peer, ratio, target


def spawn_rows(data: dict[str, Any], part: str = "spawn") -> list[Row]:
    """spawn: anyns against bwrap and unshare; bridge: anyns+bridge against anyns and bwrap."""
    ms = data.get("measurements", [])
    if part == "spawn":
        tool, peers, what, target = "anyns", ("bwrap", "unshare"), "", ">= 2.0x bwrap at C=16/64, 1.8x at C=1"
    else:
        tool, peers, what, target = "anyns+bridge", ("anyns", "bwrap"), ": anyns+bridge", ""

    def rate(t: str, c: int) -> str:
        return fmt(_get(_by(ms, tool=t, concurrency=c), "per_second"), ".0f")

    out: list[Row] = []
    for c in data.get("config", {}).get("concurrency", []):
        r = _by(data.get("ratios", []), concurrency=c) or {}
        out.append(
            (
                part,
                f"start+reap /s, C={c}{what} (peer: {'; '.join(peers)})",
                rate(tool, c),
                "; ".join(rate(p, c) for p in peers),
                "; ".join(fmt(r.get(f"{tool}/{p}"), ".2f", "x") for p in peers),
                target,
            )
        )
        for variant, label in (("anyns-lean", "anyns-lean (no hardening)"), ("anyns+userns", "anyns+userns")):
            if part == "spawn" and _by(ms, tool=variant, concurrency=c) is not None:
                out.append((part, f"start+reap /s, C={c}: {label} (peer: bwrap; anyns)", rate(variant, c),
                            f"{rate('bwrap', c)}; {rate('anyns', c)}",
                            f"{fmt(r.get(f'{variant}/bwrap'), '.2f', 'x')}; "
                            f"{fmt(r.get(f'{variant}/anyns'), '.2f', 'x')}", ""))
    return out


def floor_rows(data: dict[str, Any]) -> list[Row]:
    """floor: anyns and trio+bwrap against the C floor, per variant (medians over rounds)."""

    def median(cell: dict[str, Any] | None, spec: str, suffix: str = "") -> str:
        return fmt(None if cell is None else cell["median"], spec, suffix)

    out: list[Row] = []
    for r in data.get("ratios", []):
        by_cpu = median(r.get("anyns/floor by CPU"), ".2f", "x")
        out.append(("floor", f"start+reap /s, C={r['concurrency']}, {r['variant']}: anyns vs its C floor "
                    "(peer: floor; bwrap)", median(r.get("anyns"), ".0f"),
                    f"{median(r.get('floor'), '.0f')}; {median(r.get('bwrap'), '.0f')}",
                    f"{median(r.get('anyns/floor'), '.2f', 'x')} (by CPU {by_cpu}); floor/bwrap "
                    f"{median(r.get('floor/bwrap'), '.2f', 'x')}", ">= 0.8x floor" if r["concurrency"] == 16 else ""))
    return out


def latency_rows(data: dict[str, Any]) -> list[Row]:
    ms = data.get("measurements", [])
    out: list[Row] = []
    for c in data.get("config", {}).get("concurrency", []):
        a = _by(ms, tool="anyns", concurrency=c)
        b = _by(ms, tool="bwrap", concurrency=c)
        r = _by(data.get("ratios", []), concurrency=c) or {}
        out.append(
            (
                "latency",
                f"call -> first output p50/p99 ms, C={c}",
                f"{fmt(_get(a, 'p50_ms'))}/{fmt(_get(a, 'p99_ms'))}",
                f"{fmt(_get(b, 'p50_ms'))}/{fmt(_get(b, 'p99_ms'))}",
                f"{fmt(r.get('bwrap/anyns p50'), '.2f', 'x')} sooner",
                "",
            )
        )
        out.append(
            (
                "latency",
                f"start() -> exec p50/p99 ms, C={c}",
                f"{fmt(_get(a, 'exec_p50_ms'))}/{fmt(_get(a, 'exec_p99_ms'))}",
                "",
                "",
                "<= 3/15 ms at C=100 (goal 1/5)" if c == 100 else "",
            )
        )
    return out


def _lag(t: dict[str, Any], phase: str) -> str:
    return scale.lag_cell(t.get("lag", {}).get(phase))


def _gc2(t: dict[str, Any]) -> str:
    g2 = t.get("gc_pauses", {}).get("spawning", {}).get("gen2")
    return "none" if not g2 else f"{g2['count']} x {g2['max_ms']:.0f}"


def scale_rows(data: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for t in data.get("trials", []):
        tag = f"N={t['n']} gc={t['gc_mode']}"
        if t.get("error"):
            out.append(("scale", tag, "FAILED", "", "", t["error"].splitlines()[-1]))
            continue
        zyg = t.get("zygote_rss_running_kib")
        out += [
            (
                "scale",
                f"{tag}: start all s (/s); alive",
                f"{fmt(t['start_seconds'])} ({fmt(t['per_second'], '.0f')}/s); {t['alive']}/{t['n']}",
                "",
                "",
                ">= 1,000 running (goal 10,000)",
            ),
            (
                "scale",
                f"{tag}: supervisor KiB, fds per ctr; zygote MiB",
                f"{fmt(t['rss_per_container_kib'], '.1f')}, {fmt(t['fds_per_container'], '.1f')};"
                f" {fmt(zyg and zyg / 1024, '.1f')}",
                "",
                "",
                "<= 200 KiB (goal 50)",
            ),
            (
                "scale",
                f"{tag}: loop lag p99/worst ms spawn|idle",
                f"{_lag(t, 'spawning')} | {_lag(t, 'idle')}",
                "",
                "",
                "<= 50 ms",
            ),
            (
                "scale",
                f"{tag}: loop lag p99/worst ms, {t.get('teardown', 'kill')} all at once",
                _lag(t, "teardown"),
                "",
                "",
                "<= 50 ms",
            ),
            ("scale", f"{tag}: full GCs while spawning (n x worst ms)", _gc2(t), "", "", ""),
            ("scale", f"{tag}: teardown until all reaped, s", fmt(t["teardown_seconds"]), "", "", ""),
        ]
    return out


def mounts_rows(data: dict[str, Any]) -> list[Row]:
    ms = data.get("measurements", [])
    out: list[Row] = []
    cfg = data.get("config", {})
    for c in cfg.get("concurrency", []):
        for binds in cfg.get("binds", []):
            a = _by(ms, tool="anyns", binds=binds, concurrency=c)
            b = _by(ms, tool="bwrap", binds=binds, concurrency=c)
            ratio = b["p50_ms"] / a["p50_ms"] if a and b and a["p50_ms"] else None
            out.append(
                (
                    "mounts",
                    f"p50 ms per container, {binds} binds, C={c}",
                    fmt(_get(a, "p50_ms")),
                    fmt(_get(b, "p50_ms")),
                    f"{fmt(ratio, '.1f', 'x')} faster",
                    "",
                )
            )
        lin = {r["tool"]: r["linearity"] for r in data.get("analysis", []) if r["concurrency"] == c}
        out.append(
            (
                "mounts",
                f"linearity (ms/bind last step / first), C={c}",
                fmt(lin.get("anyns"), ".2f", "x"),
                fmt(lin.get("bwrap"), ".2f", "x"),
                "",
                "~1 = linear",
            )
        )
    return out


def jobs_rows(data: dict[str, Any]) -> list[Row]:
    """jobs: what each job-runner option adds per container, against the plain run."""
    out: list[Row] = []
    for m in data.get("measurements", []):
        if m["variant"] == "plain":
            continue
        out.append(("jobs", f"{m['variant']}, C={m['concurrency']}: ms per container (extra)",
                    f"{fmt(m['ms_per_container'])} ({m['extra_ms']:+.2f})", "", "", ""))
    return out


def soak_rows(data: dict[str, Any]) -> list[Row]:
    drift = data.get("drift") or {}
    totals = data.get("totals") or {}
    n = data.get("config", {}).get("n")

    def d(name: str) -> str:
        value = drift.get(name)
        return "-" if value is None else f"{value:+d}"

    return [
        ("soak", f"N={n}: drift fds / threads / mounts / cgroups / veths", " / ".join(
            d(k) for k in ("fds", "threads", "mounts", "cgroups", "veths")), "", "", "0 each"),
        ("soak", f"N={n}: supervisor RSS drift", fmt(drift.get("rss_kib") and drift["rss_kib"] / 1024, ".1f", " MiB"),
         "", "", ""),
        ("soak", f"N={n}: spawns ok / cancelled / failed (/s)",
         f"{totals.get('ok', 0)} / {totals.get('cancelled', 0)} / {totals.get('failed', 0)}"
         f" ({fmt(data.get('per_second'), '.0f')}/s)", "", "", "0 failed"),
    ]


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "spawn": spawn_rows,
    "floor": floor_rows,
    "latency": latency_rows,
    "scale": scale_rows,
    "mounts": mounts_rows,
    "bridge": lambda data: spawn_rows(data, "bridge"),
    "jobs": jobs_rows,
    "soak": soak_rows,
}


def print_table(rows: list[Row]) -> None:
    heads: Row = ("part", "measure", "anyns", "peer", "ratio", "target")
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*heads))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row).rstrip())


# --------------------------------------------------------------------------
# Running


def run_part(part: str, json_path: Path, quick: bool, draw: bool = True) -> dict[str, Any]:
    argv = part_argv(part, json_path, quick, draw)
    print(f"\n{'#' * 100}\n# {part}: {' '.join(argv)}\n{'#' * 100}", flush=True)
    with contextlib.suppress(FileNotFoundError):
        json_path.unlink()  # a stale file must not pass for this run's results
    start = time.perf_counter()
    status: int | None = None
    error = None
    try:
        status = MAINS[part](argv)
    except SystemExit as exc:  # argparse
        status = exc.code if isinstance(exc.code, int) else 2
    except Exception as exc:
        error = common.format_exc(exc)
        print(f"!! part {part} crashed:\n{error}", flush=True)
    result = None
    with contextlib.suppress(OSError, ValueError):
        result = json.loads(json_path.read_text())
    return {
        "argv": argv,
        "exit_status": status,
        "ok": status == 0 and error is None,
        "seconds": time.perf_counter() - start,
        "json": str(json_path),
        "error": error,
        "result": result,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the whole benchmark suite (spawn, floor, latency, scale, mounts, bridge, jobs, soak), write "
        "benchmarks/results/<part>.json and summary.json, print the key ratios, plot throughput.",
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke of every part (a few seconds each)")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated parts to run, in this order (default: " + ",".join(PARTS) + ")",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=common.RESULTS,
        metavar="DIR",
        help="where the JSON files and the plot go (default benchmarks/results)",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not draw throughput.png (nor soak.png)")
    args = parser.parse_args(argv)
    parts = common.split_list(args.parts)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        parser.error(f"unknown part(s) {bad}; choose from {','.join(PARTS)}")
    args.parts = [p for p in PARTS if p in parts]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine = common.describe_machine()
    machine["anyns_revision"] = common.anyns_revision()
    print(
        f"benchmark suite: parts {','.join(args.parts)}{' (quick)' if args.quick else ''};"
        f" load average {machine['loadavg_start'][0]:.2f} (rerun when the machine is quiet)",
        flush=True,
    )
    t0 = time.perf_counter()
    parts: dict[str, dict[str, Any]] = {}
    for part in args.parts:
        parts[part] = run_part(part, results / f"{part}.json", args.quick, not args.no_plot)

    rows: list[Row] = []
    for part, info in parts.items():
        if info["result"] is not None:
            try:
                rows += ROWS[part](info["result"])
            except (KeyError, TypeError, ValueError) as exc:
                rows.append((part, "could not summarise the results", "", "", "", f"{type(exc).__name__}: {exc}"))
        if not info["ok"]:
            why = info["error"].splitlines()[-1] if info["error"] else f"exit status {info['exit_status']}"
            rows.append((part, "FAILED", "", "", "", why))

    plot_info: dict[str, Any] = {"path": None, "skipped": None}
    if args.no_plot:
        plot_info["skipped"] = "--no-plot"
    elif "spawn" not in parts or parts["spawn"]["result"] is None:
        plot_info["skipped"] = "no spawn results from this run"
    else:
        out = results / "throughput.png"
        try:
            reason = plot.plot(parts["spawn"]["result"], out)
        except Exception as exc:  # a plotting problem must not fail the suite
            reason = f"plotting failed: {type(exc).__name__}: {exc}"
        plot_info = {"path": str(out), "skipped": None} if reason is None else {"path": None, "skipped": reason}

    machine["loadavg_end"] = os.getloadavg()
    summary = {
        "benchmark": "suite",
        "started": started,
        "seconds": time.perf_counter() - t0,
        "quick": args.quick,
        "machine": machine,
        "parts": parts,
        "plot": plot_info,
        "summary": [dict(zip(("part", "measure", "anyns", "peer", "ratio", "target"), r, strict=True)) for r in rows],
    }
    path = results / "summary.json"
    common.write_json(path, summary, announce=False)

    print(f"\n{'=' * 100}")
    print(
        f"benchmark suite summary{' (quick)' if args.quick else ''}: nproc={machine['nproc']}"
        f" kernel={machine['kernel']} {machine['python']} trio={machine['trio']} {machine['bwrap']}"
        f" anyns={machine['anyns_revision']}; load average {machine['loadavg_start'][0]:.2f} before,"
        f" {machine['loadavg_end'][0]:.2f} after; {summary['seconds']:.0f} s"
    )
    print("ratio: anyns's advantage over the peer (throughput anyns/peer; latency peer/anyns)\n")
    print_table(rows)
    print()
    for part, info in parts.items():
        print(f"  {part:<8} {'ok' if info['ok'] else 'FAILED':<7} {info['seconds']:6.1f} s  {info['json']}")
    print(f"  summary  {path}")
    if plot_info["path"]:
        print(f"  plot     {plot_info['path']}")
    else:
        print(f"  plot     skipped: {plot_info['skipped']}")
    return 0 if all(info["ok"] for info in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
