"""Plot start+reap throughput against concurrency from ``spawn.py``'s JSON.

Writes ``benchmarks/results/throughput.png``: containers/s against the number
in flight, one line per tool in ``benchmarks/results/spawn.json`` (anyns and
each peer), with the machine and the anyns/trio+bwrap ratio in the title.
Needs matplotlib (``pip install -e '.[bench]'``); without it, or without the
JSON, it prints why and skips (exit status 0, so the suite goes on).

    python -m benchmarks.plot [--spawn PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # python benchmarks/plot.py: import this directory as the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS, save_figure

DEFAULT_SPAWN = RESULTS / "spawn.json"
DEFAULT_OUT = RESULTS / "throughput.png"

STYLE = {  # label -> (marker, line style); anyns rows solid, peers dashed
    "anyns": ("o", "-"),
    "anyns+bridge": ("s", "-"),
    "trio+bwrap": ("^", "--"),
    "trio+unshare": ("v", "--"),
    "trio /bin/true": ("x", ":"),
}


def plot(data: dict[str, Any], out: Path) -> str | None:
    """Draw ``data`` (spawn.json) into ``out``; return why not, or None when written."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for m in data.get("measurements", []):
        series.setdefault(m["label"], []).append((m["concurrency"], m["per_second"]))
    if not series:
        return "no measurements in the spawn results"

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for label, points in series.items():
        points.sort()
        xs, ys = zip(*points, strict=True)
        marker, line = STYLE.get(label, ("d", "-."))
        ax.plot(xs, ys, marker=marker, linestyle=line, label=label, linewidth=2 if label == "anyns" else 1.4)
        ax.annotate(f"{ys[-1]:.0f}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(6, -3), fontsize=8)
    levels = sorted({c for points in series.values() for c, _ in points})
    if len(levels) > 1 and levels[-1] / max(levels[0], 1) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("containers in flight (C)")
    ax.set_ylabel("containers started and reaped per second")
    ax.set_ylim(bottom=0)
    ax.margins(x=0.08)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)

    mc = data.get("machine", {})
    ratios = [
        f"C={r['concurrency']}: {r['anyns/bwrap']:.2f}x"
        for r in data.get("ratios", [])
        if r.get("anyns/bwrap") is not None
    ]
    ax.set_title(
        f"start+reap of {data.get('payload', '/bin/true')}, N={data.get('config', {}).get('n')} per point"
        f" — anyns/trio+bwrap {', '.join(ratios) or '-'}\n"
        f"{mc.get('nproc')} CPUs ({mc.get('cpu_model')}), Linux {mc.get('kernel')}, {mc.get('python')},"
        f" trio {mc.get('trio')}, {mc.get('bwrap')}, load {mc.get('loadavg_start', [float('nan')])[0]:.2f},"
        f" {mc.get('time', '')[:10]}",
        fontsize=9,
    )
    save_figure(fig, out)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.plot",
        description="Plot containers/s against concurrency for anyns and each peer, from spawn.py's JSON.",
    )
    parser.add_argument("--spawn", type=Path, default=DEFAULT_SPAWN, metavar="PATH", help="spawn.py's JSON")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="PATH", help="the PNG to write")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.spawn.read_text())
    except (OSError, ValueError) as exc:
        print(f"plot skipped: cannot read {args.spawn}: {exc}", flush=True)
        return 0
    reason = plot(data, args.out)
    if reason is not None:
        print(f"plot skipped: {reason}", flush=True)
    else:
        print(f"plot written to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
