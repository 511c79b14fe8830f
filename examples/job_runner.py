"""A job runner: a queue of jobs, a few workers, budgets per job, results as a table.

    python examples/job_runner.py

Each job runs in a fresh container with limits (anyns.Limits: memory, tasks,
a CPU share, and cpu_time: the CPU of all its processes together), a
wall-clock timeout (ContainerSpec.timeout) and a cap on the output kept
(run(max_output=...): 1 MiB per stream, a sensible cap for code you do not
trust). A job that runs out of one is stopped and its result still comes
back, with what it printed so far and the verdict in
CompletedContainer.exceeded: "timeout", "cpu_time", "output", or "memory"
when the OOM killer ended it. The table shows each job's CPU time and peak
memory (CompletedContainer.stats).
"""

from __future__ import annotations

import time

import trio

import anyns


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


MEMORY_MIB = 64
CPU_SECONDS = 1.0
LIMITS = anyns.Limits(memory=f"{MEMORY_MIB}M", pids=32, cpu=2.0, cpu_time=CPU_SECONDS)
#: the most output kept of each stream of a job (stdout, stderr); past it the job is killed
MAX_OUTPUT = 1 << 20

JOBS = [
    ("hello", sh("echo hello from $(hostname)"), 2.0),
    ("hog", ["python3", "-c", "x = bytearray(512 << 20)"], 10.0),
    ("count", sh("seq 1 5 | tr '\\n' ' '"), 2.0),
    ("fails", sh("echo about to fail >&2; exit 3"), 2.0),
    ("too-slow", ["sleep", "30"], 0.5),
    ("missing", ["/no/such/tool"], 2.0),
    ("env", sh("echo JOB=$JOB"), 2.0),
    ("spin", sh("yes > /dev/null & yes > /dev/null & wait"), 30.0),
    ("chatty", sh("echo starting; yes"), 30.0),
]
WORKERS = 3


Result = tuple[str, str, str, float, str]


async def worker(sup: anyns.Supervisor, queue: trio.MemoryReceiveChannel[tuple[str, list[str], float]],
                 results: list[Result]) -> None:
    async for name, argv, timeout in queue:
        spec = anyns.ContainerSpec(argv=argv, hostname=f"job-{name}", limits=LIMITS, timeout=timeout,
                                   env={"PATH": "/usr/bin:/bin", "JOB": name})
        started = time.perf_counter()
        status, output, usage = "ok", "", ""
        try:
            done = await sup.run(spec, capture_stdout=True, capture_stderr=True, check=False,
                                 max_output=MAX_OUTPUT)
            output = (done.stdout or b"").decode().strip() or (done.stderr or b"").decode().strip()
            if done.exceeded == "memory":
                status, output = "OOM", f"killed by the OOM killer (memory limit {MEMORY_MIB}M)"
            elif done.exceeded == "timeout":
                status, output = "timed out", f"stopped after {timeout} s; printed {output[:20]!r}"
            elif done.exceeded == "cpu_time":
                status, output = "CPU budget", f"killed after {CPU_SECONDS} s of CPU in all"
            elif done.exceeded == "output":
                status, output = "output cap", f"killed past {MAX_OUTPUT >> 20} MiB; began {output[:10]!r}"
            elif done.returncode != 0:
                status = f"exit {done.returncode}"
            stats = done.stats
            peak = f"{stats.memory_peak >> 20} MiB" if stats.memory_peak else "-"
            usage = f"{(stats.cpu_user + stats.cpu_system) * 1000:.0f} ms CPU, {peak}"
        except anyns.SetupError as e:
            status, output = "setup error", str(e).split(" (hint")[0]
        results.append((name, status, output, time.perf_counter() - started, usage))


async def main() -> None:
    results: list[Result] = []
    send, receive = trio.open_memory_channel(len(JOBS))  # type: ignore[var-annotated]
    for job in JOBS:
        send.send_nowait(job)
    send.close()
    async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
        for _ in range(WORKERS):
            nursery.start_soon(worker, sup, receive.clone(), results)
    print(f"{'job':<10} {'status':<12} {'seconds':>7}  {'used':<22} output")
    for name, status, output, seconds, usage in sorted(results):
        print(f"{name:<10} {status:<12} {seconds:7.2f}  {usage:<22} {output[:50]}")
    statuses = dict((name, status) for name, status, _, _, _ in results)
    expected = {"hello": "ok", "hog": "OOM", "count": "ok", "fails": "exit 3", "too-slow": "timed out",
                "missing": "setup error", "env": "ok", "spin": "CPU budget", "chatty": "output cap"}
    if statuses != expected:
        raise SystemExit(f"unexpected results: {statuses}")


if __name__ == "__main__":
    trio.run(main)
