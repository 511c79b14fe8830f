"""What the job-runner options cost per container: timeout, max_output, files, collect (same run).

    python -m benchmarks.jobs                 # N=400 per variant, 1 and 16 in flight
    python -m benchmarks.jobs --quick         # CI smoke: N=40, 16 in flight

Each variant runs ``sh -c 'echo ok'`` (so there is output to capture) in a
default container, with one option added to the ``plain`` run, and all of
them together; the variants alternate round by round, so the machine's drift
falls on all of them. Printed: containers/s and ms per container of each, and
the extra ms per container against ``plain``.

Variants:

* ``plain``: ``capture_stdout=True``;
* ``timeout``: ``ContainerSpec(timeout=60)`` (a deadline task per container);
* ``max_output``: ``run(max_output=1 MiB)`` (a bounded capture);
* ``files``: ``ContainerSpec(files={"/box/main.sh": 1 KiB})`` on a HostRootfs
  (a tmpfs of the container's own and a bind);
* ``collect``: ``run(collect=["/tmp/out"])`` (the init holds the container
  until the supervisor has read the file);
* ``all``: all four.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

import anyns
from benchmarks import _common as common

VARIANTS = ("plain", "timeout", "max_output", "files", "collect", "all")
SCRIPT = "echo ok > /tmp/out; echo ok"
FILE = b"#!/bin/sh\n" + b"# padding\n" * 100


def _job(variant: str) -> tuple[anyns.ContainerSpec, dict[str, Any]]:
    spec_fields: dict[str, Any] = {}
    run_fields: dict[str, Any] = {"capture_stdout": True}
    if variant in ("timeout", "all"):
        spec_fields["timeout"] = 60.0
    if variant in ("max_output", "all"):
        run_fields["max_output"] = 1 << 20
    if variant in ("files", "all"):
        spec_fields["files"] = {"/box/main.sh": FILE}
    if variant in ("collect", "all"):
        run_fields["collect"] = ["/tmp/out"]
    return anyns.ContainerSpec(argv=["/bin/sh", "-c", SCRIPT], **spec_fields), run_fields


async def _rate(sup: anyns.Supervisor, variant: str, n: int, concurrency: int) -> float:
    spec, fields = _job(variant)
    limiter = trio.CapacityLimiter(concurrency)

    async def one() -> None:
        async with limiter:
            done = await sup.run(spec, **fields)
            assert done.stdout == b"ok\n", done
            if "collect" in fields:
                assert done.files == {"/tmp/out": b"ok\n"}, done.files

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return n / (time.perf_counter() - start)


async def _measure(n: int, concurrencies: list[int], rounds: int, variants: Sequence[str]) -> list[dict[str, Any]]:
    rates: dict[tuple[str, int], list[float]] = {}
    async with anyns.open_supervisor() as sup:
        for variant in variants:  # warm-up: plans, skeletons, the filter
            await _rate(sup, variant, 10, 4)
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for concurrency in concurrencies:
                for variant in order:
                    rates.setdefault((variant, concurrency), []).append(
                        await _rate(sup, variant, n, concurrency))
    out = []
    for concurrency in concurrencies:
        plain = statistics.median(rates[("plain", concurrency)])
        for variant in variants:
            rate = statistics.median(rates[(variant, concurrency)])
            out.append({
                "variant": variant, "concurrency": concurrency, "per_second": rate, "ms_per_container": 1000 / rate,
                "extra_ms": 1000 / rate - 1000 / plain, "rounds": rates[(variant, concurrency)],
            })
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jobs", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=None, help="containers per variant per round (default 400)")
    parser.add_argument("--concurrency", default=None, help="comma-separated in-flight counts (default 1,16)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="CI smoke: N=40, 16 in flight, 1 round")
    parser.add_argument("--json", default=str(common.RESULTS / "jobs.json"), help="where to write results")
    args = parser.parse_args(argv)
    n = args.n or (40 if args.quick else 400)
    concurrencies = [int(c) for c in (args.concurrency or ("16" if args.quick else "1,16")).split(",")]
    rounds = args.rounds or (1 if args.quick else 3)
    measurements = trio.run(_measure, n, concurrencies, rounds, VARIANTS)
    print(f"{'variant':<11} {'C':>3} {'/s':>7} {'ms/ctr':>7} {'extra ms':>9}")
    for m in measurements:
        print(f"{m['variant']:<11} {m['concurrency']:>3} {m['per_second']:>7.0f} {m['ms_per_container']:>7.2f} "
              f"{m['extra_ms']:>+9.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"config": {"n": n, "concurrency": concurrencies, "rounds": rounds, "script": SCRIPT},
                   "measurements": measurements, "machine": common.describe_machine(unshare=False)}, f, indent=2)
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
