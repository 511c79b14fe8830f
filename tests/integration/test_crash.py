"""Nothing outlives its owner: a killed supervisor, or runs cancelled at random points."""

from __future__ import annotations

import collections
import functools
import json
import os
import pathlib
import random
import select
import signal
import textwrap
import time

import pytest
import trio
from _proc import process_state, process_table
from _util import exists, supervisor_process, wait_all_exited

import anyns
from anyns import testing

_SCRIPT = textwrap.dedent(
    """
    import functools, trio, anyns

    async def main():
        spec = anyns.ContainerSpec(argv=["sleep", "1000"])
        async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
            run = functools.partial(sup.run, check=False)
            boxes = [await nursery.start(run, spec) for _ in range(20)]
            print(sup._zygote.process.pid, *(b.pid for b in boxes), flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


def test_supervisor_killed_takes_zygote_and_containers_along() -> None:
    """SIGKILL of the supervisor process: within a second, no zygote and no container is left."""
    with supervisor_process(_SCRIPT) as (proc, pidfds):
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 21
        assert all(process_state(pid) not in (None, "Z") for pid in pids)
        pidfds.extend(os.pidfd_open(pid) for pid in pids)

        proc.send_signal(signal.SIGKILL)
        proc.wait()

        assert wait_all_exited(pidfds, timeout=1.0) == []


def _gone(pids: list[int]) -> bool:
    return not any(os.path.exists(f"/proc/{pid}") for pid in pids)


async def test_cancelled_runs_leave_nothing_behind() -> None:
    """Runs cancelled at random points: each container is reaped by the time its run returns."""
    rng = random.Random(7)
    specs = [
        anyns.ContainerSpec(argv=["sleep", "0.05"]),
        anyns.ContainerSpec(argv=["cat"]),
        anyns.ContainerSpec(argv=["true"]),
    ]
    pids: list[int] = []
    leftovers: list[int] = []
    limiter = trio.CapacityLimiter(16)
    async with anyns.open_supervisor() as sup:

        async def one() -> None:
            mine: list[int] = []
            async with limiter, trio.open_nursery() as outer:
                # the cancel lands before the spawn, during setup, or while it runs
                outer.cancel_scope.deadline = trio.current_time() + rng.random() * 0.02
                async with trio.open_nursery() as nursery:
                    box = await nursery.start(functools.partial(sup.run, check=False), rng.choice(specs))
                    mine.append(box.pid)
            pids.extend(mine)
            if not _gone(mine):
                leftovers.extend(mine)

        async with trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(one)
        assert sup._running == set()
    assert pids, "no container started at all: the test proves nothing"
    assert leftovers == []


# --------------------------------------------------------------------------- 200 mixed containers

MIXED = 200
_MIXED_SCRIPT = textwrap.dedent(
    """
    import functools, json, sys, trio, anyns

    async def main(lower, hubnet, n):
        overlay = anyns.OverlayRootfs(lower)
        limits = anyns.Limits(memory="64M", pids=16)
        bridge = anyns.Bridge("crash0", "10.253.0.0/22", netns=hubnet)
        sleep = ["sleep", "1000"]
        userns = anyns.Namespaces.DEFAULT | anyns.Namespaces.USER
        kinds = {
            "plain": anyns.ContainerSpec(argv=sleep),
            "overlay": anyns.ContainerSpec(argv=sleep, rootfs=overlay, env={"PATH": "/bin"}),
            "limits": anyns.ContainerSpec(argv=sleep, limits=limits),
            "bridge": anyns.ContainerSpec(argv=sleep, network=bridge),
            "userns": anyns.ContainerSpec(argv=sleep, namespaces=userns, limits=limits, network=bridge),
            "all": anyns.ContainerSpec(argv=sleep, rootfs=overlay, env={"PATH": "/bin"}, limits=limits,
                                       network=bridge),  # (an overlay root in a user namespace: not yet)
        }
        names = list(kinds)
        started = []
        async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
            limiter = trio.CapacityLimiter(16)

            async def start(i):
                async with limiter:
                    kind = names[i % len(names)]
                    box = await nursery.start(functools.partial(sup.run, check=False), kinds[kind])
                    started.append((kind, box.pid))

            async with trio.open_nursery() as starters:
                for i in range(n):
                    starters.start_soon(start, i)
            print(json.dumps({"zygote": sup._zygote.process.pid, "containers": started}), flush=True)
            await trio.sleep_forever()

    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
    """
)


def _mount_table() -> collections.Counter[tuple[str, str, str]]:
    """(mount point, fs type, source) of every host mount."""
    with open("/proc/self/mountinfo") as f:
        return collections.Counter(
            (left.split()[4], *right.split()[:2]) for left, _, right in (line.partition(" - ") for line in f)
        )


def _cgroup_dirs_of(pid: int) -> set[str]:
    """The cgroup directories supervisor process ``pid`` made (``anyns-<pid>-*``) and the leaves in them."""
    found = set()
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d.startswith(f"anyns-{pid}-"):
                found.add(os.path.join(top, d))
                found.update(e.path for e in os.scandir(os.path.join(top, d)) if e.is_dir(follow_symlinks=False))
    return found


def _remove(directories: set[str]) -> None:
    """rmdir what is left of ``directories``, leaves first."""
    for d in sorted(directories, key=len, reverse=True):
        if os.path.isdir(d):
            os.rmdir(d)


def _exit_times(pidfds: list[int], timeout: float) -> dict[int, float]:
    """Wait until each pidfd says its process exited; fd -> time.monotonic() when seen (missing: not in time)."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(pidfds) and (left := deadline - time.monotonic()) > 0:
        for fd, _event in poller.poll(left * 1000):
            seen[fd] = time.monotonic()
            poller.unregister(fd)
    return seen


@pytest.mark.usefixtures("busybox_and_ip")
async def test_supervisor_killed_with_200_mixed_containers_leaves_nothing(
    sup: anyns.Supervisor, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL of a supervisor running 200 containers (plain, overlay roots, limits, bridges in the test's own
    network namespace, user namespaces, and all of those at once): within 1 s no container process, no zygote,
    no mount, no veth and no cgroup directory is left (the zygote removes the supervisor's cgroups on its
    way out; the next supervisor's start would, if the zygote had been killed too: test_limits)."""
    from test_network import _link_monitor, _veths_gone, ip_in, link_names

    lower = testing.busybox_rootfs(tmp_path / "lower")
    leftovers: set[str] = set()
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(functools.partial(sup.run, check=False), anyns.ContainerSpec(argv=["sleep", "1000"]))
        try:
            with hub.keep_namespace("net", tmp_path / "hubnet") as kept:
                mounts_before = _mount_table()
                with supervisor_process(_MIXED_SCRIPT, lower, kept.path, str(MIXED)) as (proc, pidfds):
                    assert proc.stdout is not None
                    line = await trio.to_thread.run_sync(proc.stdout.readline)
                    assert line, f"the supervisor process ended before it started them all ({proc.wait()})"
                    info = json.loads(line)
                    kinds = collections.Counter(kind for kind, _pid in info["containers"])
                    assert sum(kinds.values()) == MIXED and len(kinds) == 6
                    inits = [pid for _kind, pid in info["containers"]]
                    table = process_table()
                    programs = [pid for pid, (ppid, _state, _comm) in table.items() if ppid in set(inits)]
                    assert len(programs) == MIXED  # each container's sleep, beside its init
                    watched = [*inits, *programs, info["zygote"]]
                    assert all(process_state(pid) not in (None, "Z") for pid in watched)
                    pidfds.extend(os.pidfd_open(pid) for pid in watched)
                    leftovers = _cgroup_dirs_of(proc.pid)
                    assert len([d for d in leftovers if os.path.basename(d).startswith("c")]) >= 3 * MIXED // 6
                    bridged = kinds["bridge"] + kinds["userns"] + kinds["all"]
                    assert len(link_names(ip_in(kept.path, "-o", "link", "show", "type", "veth"))) == bridged
                    monitor = _link_monitor(kept.path)
                    try:
                        proc.send_signal(signal.SIGKILL)
                        killed = time.monotonic()
                        proc.wait()
                        seen = await trio.to_thread.run_sync(_exit_times, pidfds, 1.0)
                        left = [pid for pid, fd in zip(watched, pidfds, strict=True) if fd not in seen]
                        assert left == [], f"{len(left)} processes still alive 1 s after the SIGKILL: {left[:10]}"
                        last_process = max(seen.values()) - killed
                        zygote_gone = seen[pidfds[-1]] - killed
                        veths = await trio.to_thread.run_sync(
                            _veths_gone, kept.path, monitor, max(0.0, 1.0 - (time.monotonic() - killed)))
                        veths_gone = time.monotonic() - killed
                        assert veths == [], f"veths left in the test's namespace 1 s after the SIGKILL: {veths}"
                    finally:
                        monitor.close()
                    with trio.move_on_after(max(0.0, 1.0 - (time.monotonic() - killed))):
                        while any(exists(d) for d in leftovers):  # noqa: ASYNC110 - no event for an rmdir
                            await trio.sleep(0.005)
                    cgroups_gone = time.monotonic() - killed
                    assert sorted(d for d in leftovers if exists(d)) == [], "cgroup dirs left 1 s after the SIGKILL"
                    assert _mount_table() == mounts_before
                    # The bridge itself stays (nobody was left to delete it): the next supervisor reuses it.
                    assert set(link_names(ip_in(kept.path, "-o", "link", "show"))) <= {"lo", "crash0"}

                # The next supervisor starts cleanly beside what the dead one left (a bridge).
                cleaned = time.monotonic()
                async with anyns.open_supervisor():
                    cleaned = time.monotonic() - cleaned
        finally:
            hub.kill()
            _remove(leftovers)  # whatever happened, leave no cgroup behind
    with capsys.disabled():
        print(f"\nSIGKILL with {MIXED} containers ({dict(kinds)}): last container process gone after "
              f"{last_process * 1000:.0f} ms, zygote after {zygote_gone * 1000:.0f} ms, veths after "
              f"{veths_gone * 1000:.0f} ms, {len(leftovers)} cgroup dirs after {cgroups_gone * 1000:.0f} ms "
              f"(the zygote's cleanup); the next supervisor opened in {cleaned * 1000:.0f} ms")
