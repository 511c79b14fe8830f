"""An online judge: 100 submissions at once, each with a time budget and an output cap; a verdict table.

    python examples/judge.py

Each submission is a Python program placed in its own container as a file
(``ContainerSpec(files=...)``, on a small writable tmpfs at ``/box``: nothing
is written on the host), fed the
test's input on stdin and judged on its output. Budgets keep the result
instead of abandoning it: ``Limits(cpu_time=...)`` stops a program that
computes too long (the CPU of all its processes together), the wall-clock
``ContainerSpec(timeout=...)`` one that waits too long, ``run(max_output=...)``
one that floods its output, and ``CompletedContainer.exceeded`` says which
budget ended it. The program also
writes a note to ``/box/note.txt``, collected after it exits (``collect=``),
even after a budget ended it.

Verdicts: AC accepted, WA wrong answer, TLE time limit, OLE output limit,
MLE memory limit, RE runtime error (a non-zero exit or a signal).
"""

from __future__ import annotations

import collections
import random
import time

import trio

import anyns

CPU_LIMIT = 0.5  # seconds of CPU per submission, all its processes together
TIME_LIMIT = 5.0  # seconds of wall-clock time per submission (a program that sleeps uses no CPU)
OUTPUT_LIMIT = 64 << 10  # bytes of stdout (and of stderr) kept; past it the program is killed
LIMITS = anyns.Limits(memory="128M", pids=16, cpu_time=CPU_LIMIT)  # a cgroup each

TEST_INPUT = b"".join(b"%d %d\n" % (i, i * i) for i in range(1, 201))
EXPECTED = b"".join(b"%d\n" % (i + i * i) for i in range(1, 201))

PRELUDE = "import sys\nopen('/box/note.txt', 'w').write('started\\n')\n"
SUBMISSIONS = {
    "correct": PRELUDE + "for line in sys.stdin:\n    a, b = map(int, line.split())\n    print(a + b)\n",
    "wrong": PRELUDE + "for line in sys.stdin:\n    a, b = map(int, line.split())\n    print(a - b)\n",
    "loops": PRELUDE + "while True:\n    pass\n",
    "sleeps": PRELUDE + "import time\ntime.sleep(60)\n",
    "floods": PRELUDE + "while True:\n    sys.stdout.write('spam' * 1024)\n",
    "crashes": PRELUDE + "raise RuntimeError('boom')\n",
    "hogs": PRELUDE + "x = bytearray(512 << 20)\nprint(len(x))\n",
}
#: how often each kind is submitted (most submissions are honest attempts)
WEIGHTS = {"correct": 40, "wrong": 20, "loops": 5, "sleeps": 5, "floods": 10, "crashes": 15, "hogs": 5}
COUNT = 100


def verdict(done: anyns.CompletedContainer) -> str:
    if done.exceeded in ("timeout", "cpu_time"):
        return "TLE"
    if done.exceeded == "output":
        return "OLE"
    if done.exceeded == "memory" or done.oom_killed:
        return "MLE"
    if done.returncode != 0:
        return "RE"
    return "AC" if done.stdout == EXPECTED else "WA"


async def judge(sup: anyns.Supervisor, number: int, kind: str, results: list[tuple[int, str, str, float, bool]]
                ) -> None:
    spec = anyns.ContainerSpec(
        argv=["python3", "/box/main.py"],
        files={"/box/main.py": SUBMISSIONS[kind]},
        mounts=(anyns.Tmpfs("/box", size=1 << 20),),  # a writable /box of its own: the program writes its note
        timeout=TIME_LIMIT,
        limits=LIMITS,
        hostname=f"submission-{number}",
    )
    start = time.monotonic()
    done = await sup.run(spec, stdin=TEST_INPUT, capture_stdout=True, capture_stderr=True, check=False,
                         max_output=OUTPUT_LIMIT, collect=["/box/note.txt"])
    noted = done.files.get("/box/note.txt") == b"started\n"
    results.append((number, kind, verdict(done), time.monotonic() - start, noted))


async def main() -> None:
    rng = random.Random(15)
    kinds = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=COUNT)
    results: list[tuple[int, str, str, float, bool]] = []
    started = time.monotonic()
    async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
        for number, kind in enumerate(kinds):
            nursery.start_soon(judge, sup, number, kind, results)
    elapsed = time.monotonic() - started

    expected = {"correct": "AC", "wrong": "WA", "loops": "TLE", "sleeps": "TLE", "floods": "OLE",
                "crashes": "RE", "hogs": "MLE"}
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for _number, kind, got, _seconds, _noted in results:
        table[kind][got] += 1
    print(f"{COUNT} submissions judged in {elapsed:.1f} s (CPU limit {CPU_LIMIT} s, wall-clock limit "
          f"{TIME_LIMIT} s, output limit {OUTPUT_LIMIT >> 10} KiB)")
    print(f"{'submission':<10} {'count':>5}  verdicts")
    for kind in SUBMISSIONS:
        if table[kind]:
            print(f"{kind:<10} {sum(table[kind].values()):>5}  "
                  + ", ".join(f"{v} x{n}" for v, n in sorted(table[kind].items())))
    wrong = [(n, kind, got) for n, kind, got, _s, _noted in results if got != expected[kind]]
    unnoted = [n for n, _kind, _got, _s, noted in results if not noted]
    slowest = max(seconds for _n, _k, _g, seconds, _noted in results)
    print(f"slowest verdict after {slowest:.1f} s; notes collected from {COUNT - len(unnoted)} of {COUNT}")
    if wrong or unnoted:
        raise SystemExit(f"unexpected verdicts {wrong[:5]}, missing notes {unnoted[:5]}")


if __name__ == "__main__":
    trio.run(main)
