"""A load test: hundreds of sandboxes at once, a live progress bar, and a closing summary.

    python examples/load_test.py [COUNT [CONCURRENCY]]

Each sandbox runs a small shell job (hostname, pid, a bit of work) in its own
namespaces; the progress bar shows how many are done and the rate; the
summary table gives throughput, latency percentiles and failures.
"""

from __future__ import annotations

import statistics
import sys
import time

import trio

import anyns

JOB = "echo $(hostname) $$; i=0; while [ $i -lt 200 ]; do i=$((i+1)); done; [ $i -eq 200 ]"


def bar(done: int, total: int, started: float, width: int = 30) -> str:
    filled = width * done // total
    rate = done / max(time.perf_counter() - started, 1e-9)
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {rate:6.0f}/s"


async def main(count: int, concurrency: int) -> None:
    latencies: list[float] = []
    failures: list[str] = []
    limiter = trio.CapacityLimiter(concurrency)
    started = time.perf_counter()

    async def one(sup: anyns.Supervisor, i: int) -> None:
        spec = anyns.ContainerSpec(argv=["sh", "-c", JOB], hostname=f"load-{i}")
        async with limiter:
            t0 = time.perf_counter()
            try:
                done = await sup.run(spec, capture_stdout=True, capture_stderr=True)
                # pid 2: pid 1 of each sandbox is its init
                if (done.stdout or b"").split() != [f"load-{i}".encode(), b"2"]:
                    failures.append(f"load-{i}: unexpected output {done.stdout!r}")
            except anyns.AnynsError as e:
                failures.append(f"load-{i}: {e}")
            latencies.append(time.perf_counter() - t0)
        if len(latencies) % 10 == 0 or len(latencies) == count:
            sys.stderr.write(bar(len(latencies), count, started))

    async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, sup, i)
    elapsed = time.perf_counter() - started
    sys.stderr.write("\n")

    ordered = sorted(latencies)
    rows = [
        ("sandboxes", f"{count}"),
        ("in flight", f"{concurrency}"),
        ("wall time", f"{elapsed:.2f} s"),
        ("throughput", f"{count / elapsed:.0f} /s"),
        ("latency p50", f"{statistics.median(ordered) * 1000:.1f} ms"),
        ("latency p99", f"{ordered[int(len(ordered) * 0.99) - 1] * 1000:.1f} ms"),
        ("failures", f"{len(failures)}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
    for failure in failures[:5]:
        print(f"  {failure}")
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    trio.run(main, *(args + [300, 32][len(args):]))
