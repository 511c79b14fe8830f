"""Soak: benchmarks/soak.py at a reduced size leaves the supervisor and the host exactly as it found them.

1,000 spawns of every kind of the benchmark (host, tmpfs, overlay, limits,
exec, bridge in the test's own network namespace, a user namespace, a
missing program), 16-64 in flight, about a third cancelled before the call, during setup or while
running. Between the start (after a warm-up, no container running) and the
end (every spawn returned): the supervisor's fds, threads (trio's cached
worker threads aside: they linger up to 10 s idle by design), living trio
tasks, host mounts, cgroup directories, veths and zombies are exactly equal,
and RSS grows by less than 20 MiB; after the supervisor closes, fds, threads,
mounts and cgroups are as before it opened. The full size (10,000) runs by
hand: ``python -m benchmarks.soak``.
"""

from __future__ import annotations

import importlib
import pathlib
import sys
from typing import Any

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # at the end: the anyns under test stays the one already imported
    sys.path.append(str(REPO))
soak: Any = importlib.import_module("benchmarks.soak")

N = 1000
RSS_BOUND_KIB = 20 * 1024


@pytest.fixture(autouse=True)
def _tools(busybox_and_ip: None) -> None:
    """The overlay kind needs a static busybox; counting veths needs ip and nsenter."""


def _explain(report: Any) -> str:
    return "\n".join([*report.problems(), *report.tracebacks.values()])


async def test_soak_leaves_supervisor_and_host_as_found(tmp_path: pathlib.Path) -> None:
    """1,000 mixed spawns with random cancellations: fds, threads, tasks, mounts, cgroups, veths and zombies
    return exactly to their start values, RSS grows < 20 MiB; nothing failed or outlived its run."""
    report = await soak.soak(soak.Config(n=N, seed=2024), tmp_path)

    assert report.error is None, report.error
    assert report.kinds == list(soak.KINDS)  # every kind ran (none was left out for a missing tool)
    totals = report.totals()
    assert totals["failed"] == 0, _explain(report)
    assert sum(totals.values()) == N
    assert totals["ok"] > N // 2 and totals["cancelled"] > N // 5
    phases = {outcome for counts in report.outcomes.values() for outcome in counts if outcome.startswith("cancelled")}
    assert phases == {f"cancelled {p}" for p in soak.PHASES}  # cancelled before, during setup, running, in run()
    assert report.leftovers == []
    assert len(set(report.zygote_pids)) == 1
    assert len(report.samples) >= 40

    start, end, drift = report.start, report.end, report.drift()
    assert start.veths is not None and start.fds is not None and start.tasks is not None
    assert max(s.cgroups for s in report.samples) > start.cgroups  # leaves came and went
    assert max(s.in_flight for s in report.samples) >= 16
    for name in ("fds", "threads", "tasks", "mounts", "cgroups", "veths", "zombies", "children"):
        assert drift[name] == 0, f"{name}: {getattr(start, name)} at the start, {getattr(end, name)} at the end"
    assert drift["rss_kib"] < RSS_BOUND_KIB, f"RSS grew by {drift['rss_kib']} KiB"
    assert end.zombies == 0

    outside = report.outside_drift()
    for name in ("fds", "threads", "mounts", "cgroups", "zombies", "children"):
        assert outside[name] == 0, f"{name}: {outside[name]:+d} after the supervisor closed"
    assert soak.own_cgroups() == []


BRIDGED_N = 1200
FLAT_KIB = 1536  # what RSS may grow between the first third and the end of a soak (host-only: ~0.2 MiB)


async def test_bridged_soak_rss_stays_flat(tmp_path: pathlib.Path) -> None:
    """Only bridged containers: after the first third, the supervisor's RSS stays within 1.5 MiB."""
    report = await soak.soak(soak.Config(n=BRIDGED_N, seed=7, kinds=("bridge",)), tmp_path)
    assert report.error is None, report.error
    assert report.totals()["failed"] == 0, _explain(report)
    third = next(s for s in report.samples if s.done >= BRIDGED_N // 3)
    assert report.end.rss_kib - third.rss_kib < FLAT_KIB, (
        f"RSS {third.rss_kib} KiB after {third.done} spawns, {report.end.rss_kib} KiB after {report.end.done}"
    )
