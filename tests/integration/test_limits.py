"""ContainerSpec.limits: a cgroup per container, on the real kernel.

Memory (OOM kill), pids (a fork bomb), cpu (CFS quota), birth in the v2 leaf
(clone3 CLONE_INTO_CGROUP), pause()/resume() (the freezer), statistics and
CompletedContainer.stats, exec into the cgroup, and cleanup: leaves go with
their container, parents with their supervisor, and what a SIGKILLed
supervisor left behind goes at the next supervisor's start.

The host side is read straight from /proc/PID/cgroup and the cgroup files, not
through anyns, so that these tests check what the kernel enforces. On hybrid
hosts (cgroup2 with no controllers, memory/pids/cpu on v1) a controller's files
are in the v1 leaf; on unified hosts in the v2 leaf.
"""

from __future__ import annotations

import functools
import os
import pathlib
import signal
import textwrap
from collections.abc import Callable, Iterable

import pytest
import trio
from _util import PYTHON, SH, exists, read, sh_spec, sleeper, supervisor_process, wait_all_exited

import anyns
from anyns import Bind, Limits

MiB = 1 << 20


def init_tasks(spec: anyns.ContainerSpec) -> int:
    """1 when anyns's init runs as pid 1 beside the program (``ContainerSpec.init``), a task of the leaf too."""
    return int(bool(getattr(spec, "init", False)) and anyns.Namespaces.PID in spec.namespaces)


# --------------------------------------------------------------------------- host-side helpers


def _mounts() -> dict[str, tuple[str, str]]:
    """controller (or "" for cgroup2) -> (mount point, root of the hierarchy at it), from our mountinfo."""
    found: dict[str, tuple[str, str]] = {}
    for line in read("/proc/self/mountinfo").decode().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            found.setdefault("", (fields[4], fields[3]))
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                found.setdefault(option, (fields[4], fields[3]))
    return found


def cgroup_dirs(pid: int) -> dict[str, str]:
    """controller ("" for cgroup2) -> the directory of process ``pid``'s cgroup in that hierarchy."""
    mounts = _mounts()
    dirs: dict[str, str] = {}
    for line in read(f"/proc/{pid}/cgroup").decode().splitlines():
        hid, names, path = line.split(":", 2)
        for name in [""] if hid == "0" else names.split(","):
            if name in mounts:
                point, root = mounts[name]
                if root != "/" and path.startswith(root):
                    path = path[len(root):]
                dirs[name] = os.path.normpath(point + "/" + path.lstrip("/"))
    return dirs


def leaf_dirs(pid: int) -> dict[str, str]:
    """Those of ``cgroup_dirs(pid)`` that are an anyns leaf (``…/anyns-<pid>-<start>/cN``)."""
    return {name: d for name, d in cgroup_dirs(pid).items()
            if os.path.basename(os.path.dirname(d)).startswith("anyns-")}


def all_dirs(paths: Iterable[str]) -> bool:
    """Every one of ``paths`` is a directory (synchronous: a precise point of an async test)."""
    return all(os.path.isdir(p) for p in paths)


def none_left(paths: Iterable[str]) -> bool:
    """None of ``paths`` exists any more."""
    return not any(os.path.lexists(p) for p in paths)


def leaf_name(directory: str) -> str:
    """``anyns-<pid>-<start>/cN`` of a leaf directory."""
    return os.path.relpath(directory, os.path.dirname(os.path.dirname(directory)))


def busy(leaves: list[dict[str, str]]) -> bool:
    """Some process is still in one of the leaves (a cgroup.procs is not empty)."""
    return any(read(os.path.join(d, "cgroup.procs")).strip()
               for leaf in leaves for d in leaf.values() if os.path.isdir(d))


def controller_file(leaf: dict[str, str], controller: str, v2_name: str, v1_name: str) -> str:
    """Where the leaf's ``controller`` file is: in the v2 leaf if v2 has the controller there, else the v1 one."""
    v2 = leaf.get("")
    if v2 is not None and controller in read(os.path.join(v2, "cgroup.controllers")).decode().split():
        return os.path.join(v2, v2_name)
    assert controller in leaf, f"no {controller} cgroup for the leaf: {leaf}"
    return os.path.join(leaf[controller], v1_name)


def keyed(path: str) -> dict[str, int]:
    """A flat-keyed cgroup file (``key value`` lines)."""
    return {k: int(v) for k, _, v in (line.partition(" ") for line in read(path).decode().splitlines())}


def anyns_dirs() -> set[str]:
    """The parents of this process's supervisors (``anyns-<our pid>-…``) and the leaves in them.

    Only ours: other processes on the host (a test run beside this one) make and remove their own.
    """
    found = set()
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d.startswith(f"anyns-{os.getpid()}-"):
                found.add(os.path.join(top, d))
                found.update(os.path.join(top, d, leaf) for leaf in os.listdir(os.path.join(top, d))
                             if os.path.isdir(os.path.join(top, d, leaf)))
    return found


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (clock ticks), from /proc/PID/stat."""
    fields = read(f"/proc/{pid}/stat").decode().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def leaf_pids(leaf: dict[str, str]) -> set[int]:
    """Every process in the leaf, from its v2 cgroup.procs (or a v1 one)."""
    directory = leaf.get("") or next(iter(leaf.values()))
    return {int(p) for p in read(os.path.join(directory, "cgroup.procs")).split()}


def proc_state(pid: int) -> str:
    return read(f"/proc/{pid}/stat").decode().rpartition(")")[2].split()[0]


def _start_time(pid: int) -> str:
    return read(f"/proc/{pid}/stat").decode().rpartition(")")[2].split()[19]


@pytest.fixture(autouse=True)
def _cgroups_here(skip_or_fail: Callable[[str], None]) -> None:
    """These tests need a cgroup hierarchy with memory, pids and cpu, and (being root) the right to write it."""
    mounts = _mounts()
    v2 = "" in mounts
    offered: set[str] = set()
    if v2:
        own = cgroup_dirs(os.getpid()).get("")
        if own is not None and os.path.exists(os.path.join(own, "cgroup.controllers")):
            offered = set(read(os.path.join(own, "cgroup.controllers")).decode().split())
    missing = [c for c in ("memory", "pids", "cpu") if c not in mounts and c not in offered]
    if missing:
        skip_or_fail(f"no cgroup controller for {missing} on this host")
    if not v2 and "freezer" not in mounts:
        skip_or_fail("neither cgroup v2 nor the v1 freezer is mounted")


@pytest.fixture
def need_v2(skip_or_fail: Callable[[str], None]) -> None:
    """The test needs cgroup2 (the container is born in its v2 leaf: clone3 CLONE_INTO_CGROUP)."""
    if "" not in _mounts():
        skip_or_fail("cgroup2 is not mounted: no CLONE_INTO_CGROUP here")


async def _started(sup: anyns.Supervisor, nursery: trio.Nursery, spec: anyns.ContainerSpec,
                   **kwargs: object) -> anyns.Container:
    box: anyns.Container = await nursery.start(functools.partial(sup.run, spec, check=False, **kwargs))
    return box


async def _ready(box: anyns.Container, line: bytes = b"ready\n") -> bytes:
    """Wait for ``line`` on the container's stdout (a PIPE), then close our end; return what came before it."""
    assert box.stdout is not None
    data = b""
    with trio.fail_after(10):
        while not data.endswith(line):
            chunk = await box.stdout.receive_some()
            assert chunk, f"EOF after {data!r}, expected {line!r}"
            data += chunk
    await box.stdout.aclose()
    return data.removesuffix(line)


# --------------------------------------------------------------------------- memory

# Touches 100 MiB (b'x' * n writes every byte), then says it survived.
HOG = "b = b'x' * (100 << 20); print('survived', len(b))"


async def test_memory_limit_oom_kills_only_that_container(sup: anyns.Supervisor) -> None:
    """Past Limits(memory="32M") the OOM killer ends the container (returncode -9, oom_killed); a
    container running beside it in the same supervisor is untouched and finishes normally."""
    neighbour_spec = sh_spec('echo ready; read line; echo "got $line"', limits=Limits(memory="64M"))
    async with trio.open_nursery() as nursery:
        neighbour = await nursery.start(functools.partial(
            sup.run, neighbour_spec, stdin=anyns.PIPE, stdout=anyns.PIPE, check=False))
        assert neighbour.stdout is not None and neighbour.stdin is not None
        assert await neighbour.stdout.receive_some() == b"ready\n"

        with trio.fail_after(30):
            done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-c", HOG], limits=Limits(memory="32M")),
                                 capture_stdout=True, capture_stderr=True, check=False)
        assert done.oom_killed is True
        assert done.returncode == -9
        assert b"survived" not in done.stdout
        assert "oom_killed" in repr(done)
        assert done.stats.memory_peak is not None and done.stats.memory_peak <= 32 * MiB

        assert neighbour.returncode is None and not neighbour.oom_killed
        await neighbour.stdin.send_all(b"hello\n")
        await neighbour.stdin.aclose()
        assert await neighbour.stdout.receive_some() == b"got hello\n"
        await neighbour.stdout.aclose()
        with trio.fail_after(10):
            assert await neighbour.wait() == 0
        assert not neighbour.oom_killed


async def test_oom_kill_with_check_names_the_oom_killer_and_the_limit(sup: anyns.Supervisor) -> None:
    """check=True: ContainerFailed says the OOM killer ended it and names the limit ("32M")."""
    with pytest.raises(anyns.ContainerFailed) as info, trio.fail_after(30):
        await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-c", HOG], limits=Limits(memory="32M")),
                      capture_stdout=True, capture_stderr=True)
    err = info.value
    assert "OOM killer" in str(err) and "32M" in str(err)
    assert (err.returncode, err.oom_killed, err.memory_limit) == (-9, True, 32 * MiB)
    done = await sup.run(sh_spec("echo fine", limits=Limits(memory="32M")), capture_stdout=True)
    assert (done.stdout, done.oom_killed) == (b"fine\n", False)


async def test_oom_kill_of_a_child_process(sup: anyns.Supervisor) -> None:
    """The OOM killer picks the hog, not the shell that started it: the shell reports 137, oom_killed is set."""
    script = f'{PYTHON} -c "{HOG}"; echo "status $?"'
    with trio.fail_after(30):
        done = await sup.run(sh_spec(script, limits=Limits(memory="32M")), capture_stdout=True,
                             capture_stderr=True, check=False)
    assert done.stdout == b"status 137\n"
    assert done.returncode == 0
    assert done.oom_killed is True


async def test_memory_within_the_limit_is_not_oom(sup: anyns.Supervisor) -> None:
    """16 MiB under a 64M limit: the program finishes; the cgroup's peak covers the 16 MiB and stays under 64M."""
    script = "b = b'x' * (16 << 20); print('survived', len(b))"
    done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-c", script], limits=Limits(memory="64M")),
                         capture_stdout=True)
    assert (done.returncode, done.oom_killed) == (0, False)
    assert done.stdout == f"survived {16 * MiB}\n".encode()
    assert done.stats.memory_peak is not None and 16 * MiB <= done.stats.memory_peak <= 64 * MiB


# --------------------------------------------------------------------------- the limits in the leaf


async def test_limits_are_written_to_the_leaf(sup: anyns.Supervisor) -> None:
    """memory, pids and cpu land in the leaf's files; a second container gets a leaf of its own."""
    limits = Limits(memory="256M", pids=64, cpu=0.5)
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, sleeper(limits=limits))
        other = await _started(sup, nursery, sleeper(limits=Limits(pids=7)))
        leaf = leaf_dirs(box.pid)

        memory = controller_file(leaf, "memory", "memory.max", "memory.limit_in_bytes")
        assert int(read(memory)) == 256 * MiB
        assert int(read(controller_file(leaf, "pids", "pids.max", "pids.max"))) == 64
        cpu = controller_file(leaf, "cpu", "cpu.max", "cpu.cfs_quota_us")
        if cpu.endswith("cpu.max"):
            assert read(cpu).split() == [b"50000", b"100000"]
        else:
            assert int(read(os.path.join(leaf["cpu"], "cpu.cfs_quota_us"))) == 50000
            assert int(read(os.path.join(leaf["cpu"], "cpu.cfs_period_us"))) == 100000

        other_leaf = leaf_dirs(other.pid)
        assert set(other_leaf.values()).isdisjoint(leaf.values())
        assert int(read(controller_file(other_leaf, "pids", "pids.max", "pids.max"))) == 7
        box.kill()
        other.kill()


# --------------------------------------------------------------------------- pids

# Forks sleepers for ever; prints "limit" at the first EAGAIN (a shell would exit on it).
FORK_BOMB = """
import os
failed = 0
while True:
    try:
        pid = os.fork()
    except BlockingIOError:
        failed += 1
        if failed == 1:
            print('limit', flush=True)
        continue
    if pid == 0:
        os.execv('/bin/sleep', ['sleep', '1000'])
"""


async def test_pids_limit_contains_a_fork_bomb(sup: anyns.Supervisor) -> None:
    """Limits(pids=64): the fork bomb hits EAGAIN; the task count never passes 64 and reaches it; killed, it
    is reaped and the host spawns a normal container straight after."""
    spec = anyns.ContainerSpec(argv=[PYTHON, "-c", FORK_BOMB], limits=Limits(pids=64))
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, spec, stdout=anyns.PIPE)
        leaf = leaf_dirs(box.pid)
        current = controller_file(leaf, "pids", "pids.current", "pids.current")
        seen: list[int] = []

        async def watch() -> None:
            while True:
                stats = box.statistics()
                assert stats.pids_current is not None
                seen.extend((stats.pids_current, int(read(current))))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as watcher:
            watcher.start_soon(watch)
            await _ready(box, b"limit\n")
            for _ in range(20):  # the bomb keeps trying: the count stays pinned at the limit
                await trio.sleep(0.01)
            watcher.cancel_scope.cancel()

        # The kernel charges a fork before it checks the limit and takes the
        # charge back when it is over (pids_try_charge): for that moment
        # pids.current reads 65, one per CPU forking at once. No 65th task exists.
        assert seen and max(seen) <= 64 + (os.cpu_count() or 1)
        assert max(seen) >= 64
        assert box.statistics().pids_current == 64
        assert int(read(current)) == 64
        events = controller_file(leaf, "pids", "pids.events", "pids.events")
        assert keyed(events).get("max", 0) >= 1  # the kernel counted refused forks

        box.kill()
        with trio.fail_after(10):
            assert await box.wait() == -9
    assert none_left(leaf.values())
    done = await sup.run(sh_spec("echo alive"), capture_stdout=True)
    assert done.stdout == b"alive\n"


# --------------------------------------------------------------------------- cpu


async def test_cpu_limit_throttles_a_busy_loop(sup: anyns.Supervisor) -> None:
    """Limits(cpu=0.5): a busy loop gets about half a CPU over one second (0.3-0.7), and the kernel says it
    throttled it."""
    spec = sh_spec("echo ready; while :; do :; done", limits=Limits(cpu=0.5))
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, spec, stdout=anyns.PIPE)
        await _ready(box)
        first, start = box.statistics(), trio.current_time()
        await trio.sleep(1.0)  # the measuring window
        second, end = box.statistics(), trio.current_time()
        rate = ((second.cpu_user + second.cpu_system) - (first.cpu_user + first.cpu_system)) / (end - start)
        assert 0.3 <= rate <= 0.7, f"{rate:.2f} CPUs"
        assert second.wall_time - first.wall_time == pytest.approx(end - start, abs=0.1)
        leaf = leaf_dirs(box.pid)
        stat = keyed(controller_file(leaf, "cpu", "cpu.stat", "cpu.stat"))
        assert stat["nr_throttled"] > 0
        box.kill()


# --------------------------------------------------------------------------- where the container lives


@pytest.mark.usefixtures("need_v2")
async def test_container_is_born_in_its_leaf(sup: anyns.Supervisor) -> None:
    """The container's v2 cgroup is its leaf under anyns-<supervisor pid>-<start time>, and so are its memory,
    pids and cpu cgroups; the zygote that cloned it stays outside (CLONE_INTO_CGROUP, not a move); the program
    sees the same cgroups in /proc/self/cgroup."""
    spec = sh_spec("cat /proc/self/cgroup; echo ready; exec sleep 1000", limits=Limits(memory="64M", pids=16))
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, spec, stdout=anyns.PIPE)
        inside = await _ready(box)

        parent_name = f"anyns-{os.getpid()}-{_start_time(os.getpid())}"
        leaf = leaf_dirs(box.pid)
        assert "" in leaf, read(f"/proc/{box.pid}/cgroup")
        for controller in ("memory", "pids", "cpu"):
            if controller in cgroup_dirs(box.pid):  # a v1 hierarchy: the child moved itself there
                assert controller in leaf, read(f"/proc/{box.pid}/cgroup")
                assert str(box.pid).encode() in read(os.path.join(leaf[controller], "cgroup.procs")).split()
        names = {leaf_name(d) for d in leaf.values()}
        assert len(names) == 1 and names.pop().startswith(parent_name + "/c")
        assert str(box.pid).encode() in read(os.path.join(leaf[""], "cgroup.procs")).split()

        assert os.path.dirname(os.path.dirname(leaf[""])) == cgroup_dirs(os.getpid())[""]  # beside us
        assert sup._zygote is not None
        zygote = cgroup_dirs(sup._zygote.process.pid)
        assert zygote[""] == cgroup_dirs(os.getpid())[""] != leaf[""]
        assert inside.decode().splitlines() == read(f"/proc/{box.pid}/cgroup").decode().splitlines()
        box.kill()


def _cgroup_paths(text: bytes) -> dict[str, str]:
    """A /proc/PID/cgroup text as controller ("" for v2) -> path."""
    paths = {}
    for line in text.decode().splitlines():
        hid, names, path = line.split(":", 2)
        for name in [""] if hid == "0" else names.split(","):
            paths[name] = path
    return paths


@pytest.mark.usefixtures("need_v2")
async def test_cgroup_namespace_is_rooted_at_the_leaf(sup: anyns.Supervisor) -> None:
    """With Namespaces.CGROUP the program sees its leaf as "/" in v2 and in the v1 hierarchies it entered
    (it entered them before unsharing), and so does a process exec'd into it."""
    spec = sh_spec("cat /proc/self/cgroup; echo ready; exec sleep 1000", limits=Limits(pids=16),
                   namespaces=anyns.Namespaces.DEFAULT | anyns.Namespaces.CGROUP)
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, spec, stdout=anyns.PIPE)
        inside = await _ready(box)
        leaf = leaf_dirs(box.pid)
        assert "" in leaf
        done = await box.exec(["cat", "/proc/self/cgroup"], capture_stdout=True)
        for view in (_cgroup_paths(inside), _cgroup_paths(done.stdout)):
            assert {name: view[name] for name in leaf} == dict.fromkeys(leaf, "/"), view
        assert os.readlink(f"/proc/{box.pid}/ns/cgroup") != os.readlink("/proc/self/ns/cgroup")
        box.kill()


# --------------------------------------------------------------------------- pause / resume


async def test_pause_freezes_and_resume_thaws(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """pause(): the kernel reports the leaf frozen, the busy shell sleeps, uses no CPU and makes no progress;
    resume(): it goes on."""
    counter = tmp_path / "n"
    spec = sh_spec("while :; do printf x >> /out/n; done", limits=Limits(), mounts=[Bind(tmp_path, "/out")])
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, spec)
        with trio.fail_after(10):
            while not counter.exists() or counter.stat().st_size == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
        leaf = leaf_dirs(box.pid)
        pids = leaf_pids(leaf)
        assert len(pids) == init_tasks(spec) + 1
        (shell,) = (pid for pid in pids if read(f"/proc/{pid}/comm") == b"sh\n")

        await box.pause()
        if "" in leaf:
            assert keyed(os.path.join(leaf[""], "cgroup.events"))["frozen"] == 1
        else:
            assert read(os.path.join(leaf["freezer"], "freezer.state")).strip() == b"FROZEN"
        # v2 parks every task in an interruptible sleep (S), the v1 freezer in D; a busy loop is never
        # left running (R).
        states = {pid: proc_state(pid) for pid in pids}
        assert all(state in "DSt" for state in states.values()), states
        size, ticks, cpu = counter.stat().st_size, cpu_ticks(shell), box.statistics()
        await trio.sleep(0.25)  # the observation window
        assert counter.stat().st_size == size
        assert cpu_ticks(shell) == ticks
        later = box.statistics()
        assert later.cpu_user + later.cpu_system == pytest.approx(cpu.cpu_user + cpu.cpu_system, abs=0.005)
        assert proc_state(shell) in "DSt"

        await box.resume()
        if "" in leaf:
            assert keyed(os.path.join(leaf[""], "cgroup.events"))["frozen"] == 0
        with trio.fail_after(10):
            while counter.stat().st_size == size or cpu_ticks(shell) == ticks:  # noqa: ASYNC110
                await trio.sleep(0.01)
        box.kill()


async def test_paused_container_can_be_killed(sup: anyns.Supervisor) -> None:
    """SIGKILL ends a frozen container (and its other processes): it is reaped, its leaf removed."""
    spec = sh_spec("sleep 1000 & echo ready; while :; do :; done", limits=Limits())
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, spec, stdout=anyns.PIPE)
        await _ready(box)
        leaf = leaf_dirs(box.pid)
        await box.pause()
        assert box.statistics().pids_current == init_tasks(spec) + 2  # the shell and its sleep
        box.kill()
        with trio.fail_after(10):
            assert await box.wait() == -9
    assert none_left(leaf.values())
    with pytest.raises(anyns.AnynsError):
        await box.pause()
    with pytest.raises(anyns.AnynsError):
        await box.resume()


async def test_statistics_and_pause_need_limits(sup: anyns.Supervisor) -> None:
    """Without limits there is no cgroup: statistics(), pause() and resume() raise UnsupportedError."""
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, sleeper())
        assert leaf_dirs(box.pid) == {}
        with pytest.raises(anyns.UnsupportedError, match="limits"):
            box.statistics()
        with pytest.raises(anyns.UnsupportedError, match="limits"):
            await box.pause()
        with pytest.raises(anyns.UnsupportedError, match="limits"):
            await box.resume()
        assert box.returncode is None and not box.oom_killed
        box.kill()


async def test_pause_racing_the_container_death(sup: anyns.Supervisor) -> None:
    """pause() of a container that is dying (just SIGKILLed) returns or raises an AnynsError; it never crashes,
    and the container is reaped."""
    crashed: list[BaseException] = []
    for _ in range(20):
        async with trio.open_nursery() as nursery:
            box = await _started(sup, nursery, sh_spec("sleep 1000 & while :; do :; done", limits=Limits()))
            box.kill()
            try:
                await box.pause()
            except anyns.AnynsError:
                pass
            except Exception as e:  # collected, raised after the nursery
                crashed.append(e)
            with trio.fail_after(10):
                assert await box.wait() == -9
    if crashed:
        raise crashed[0]


# --------------------------------------------------------------------------- statistics


async def test_statistics_while_running(sup: anyns.Supervisor) -> None:
    """statistics() counts every task of the container and the memory it holds now."""
    spec = sh_spec("sleep 1000 & sleep 1000 & echo ready; wait", limits=Limits(memory="64M"))
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, spec, stdout=anyns.PIPE)
        await _ready(box)
        stats = box.statistics()
        assert stats.pids_current == init_tasks(spec) + 3  # the shell and two sleeps
        assert stats.pids_current == len(leaf_pids(leaf_dirs(box.pid)))
        assert stats.memory_current is not None and 0 < stats.memory_current <= 64 * MiB
        assert stats.memory_peak is not None and stats.memory_peak >= stats.memory_current
        assert stats.wall_time > 0
        box.kill()


# Spins on the (vDSO) clock for 0.2 s of wall time, then prints the CPU time it used.
BUSY = ("import os, time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.2: pass\n"
        "print(sum(os.times()[:2]))")


@pytest.mark.parametrize("limits", [None, Limits()], ids=["no-limits", "limits"])
async def test_completed_stats_of_a_busy_program(sup: anyns.Supervisor, limits: Limits | None) -> None:
    """CompletedContainer.stats: at least the CPU time the program counted itself, mostly in user mode, within
    a wall time of at least 0.2 s and at most the time run() took; a memory peak."""
    start = trio.current_time()
    done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-c", BUSY], limits=limits), capture_stdout=True)
    elapsed = trio.current_time() - start
    own = float(done.stdout)
    stats = done.stats
    assert own > 0.02  # it got some CPU at all
    assert stats.cpu_user > 0
    assert own - 0.02 <= stats.cpu_user + stats.cpu_system <= stats.wall_time + 0.05
    assert 0.2 <= stats.wall_time <= elapsed + 0.05
    assert stats.memory_peak is not None and 1 * MiB < stats.memory_peak < 1024 * MiB
    assert done.oom_killed is False


# An exec'd process: touches 64 MiB, spins 0.2 s, prints the CPU time it used.
EXEC_HOG = "b = b'x' * (64 << 20)\n" + BUSY


@pytest.mark.parametrize("limits", [None, Limits()], ids=["rusage", "cgroup"])
async def test_stats_with_limits_come_from_the_cgroup(sup: anyns.Supervisor, limits: Limits | None) -> None:
    """With limits the container's stats are its cgroup's and count an exec'd process (64 MiB and its CPU);
    without, only pid 1 and what it reaped (rusage): the exec'd process is not in them."""
    result: list[anyns.CompletedContainer] = []

    async def run(task_status: trio.TaskStatus[anyns.Container]) -> None:
        result.append(await sup.run(anyns.ContainerSpec(argv=["cat"], limits=limits), stdin=anyns.PIPE,
                                    task_status=task_status))

    async with trio.open_nursery() as nursery:
        box = await nursery.start(run)
        hog = await box.exec([PYTHON, "-c", EXEC_HOG], capture_stdout=True)
        assert box.stdin is not None
        await box.stdin.aclose()  # cat exits 0
    done = result[0]
    assert done.returncode == 0
    assert done.stats.memory_peak is not None
    assert box.statistics() == done.stats  # after the end: the figures at the end
    hog_cpu = float(hog.stdout)
    assert hog_cpu > 0.02
    cpu = done.stats.cpu_user + done.stats.cpu_system
    if limits is None:
        assert done.stats.memory_peak < 32 * MiB
        assert cpu < hog_cpu
    else:
        assert done.stats.memory_peak >= 64 * MiB
        assert cpu >= hog_cpu - 0.02


# --------------------------------------------------------------------------- exec


async def test_exec_joins_the_container_cgroup(sup: anyns.Supervisor) -> None:
    """A process exec'd into a container with limits is in its leaf (host view and its own /proc/self/cgroup);
    the leaf outlives neither; nothing is left once both are reaped."""
    before = anyns_dirs()
    spec = sleeper(limits=Limits(memory="64M", pids=16))
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, spec)
        container_view = read(f"/proc/{box.pid}/cgroup")
        leaf = leaf_dirs(box.pid)
        done = await box.exec(["cat", "/proc/self/cgroup"], capture_stdout=True)
        assert done.stdout == container_view

        proc = await nursery.start(functools.partial(box.exec, ["sleep", "1000"], check=False))
        assert leaf_dirs(proc.pid) == leaf
        with pytest.raises(anyns.UnsupportedError, match="shares its cgroup"):
            proc.pause()  # it would freeze the whole container
        assert box.statistics().pids_current == init_tasks(spec) + 2  # its sleep and the exec'd one
        assert proc.pid in leaf_pids(leaf)
        await proc.stop(grace=0)  # the exec'd process goes first: the container keeps its leaf
        assert all_dirs(leaf.values())
        assert box.statistics().pids_current == init_tasks(spec) + 1

        last = await nursery.start(functools.partial(box.exec, ["sleep", "1000"], check=False))
        box.kill()  # the container goes first: its exec'd process dies with its pid namespace
        with trio.fail_after(10):
            assert await box.wait() == -9
            assert await last.wait() == -9
    assert none_left(leaf.values())
    assert anyns_dirs() - before <= {os.path.dirname(d) for d in leaf.values()}  # only the parents, until close


async def test_exec_result_reports_only_its_own_oom_kill(sup: anyns.Supervisor) -> None:
    """An exec'd hog is OOM-killed (oom_killed); a later exec that SIGKILLs itself was not, and check=True
    does not blame the OOM killer for it."""
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, sleeper(limits=Limits(memory="32M")))
        with trio.fail_after(30):
            hog = await box.exec([PYTHON, "-c", HOG], capture_stdout=True, capture_stderr=True, check=False)
        assert (hog.returncode, hog.oom_killed) == (-9, True)
        suicide = await box.exec([SH, "-c", "kill -9 $$"], check=False)
        try:
            assert suicide.returncode == -9
            assert not suicide.oom_killed
            with pytest.raises(anyns.ContainerFailed) as info:
                await box.exec([SH, "-c", "kill -9 $$"])
            assert "OOM" not in str(info.value)
        finally:
            box.kill()


# --------------------------------------------------------------------------- cleanup


async def test_leaves_go_with_each_run_and_parents_with_the_supervisor() -> None:
    """A leaf is removed by the time its run returns; the supervisor's parents when it closes; none before."""
    before = anyns_dirs()
    async with anyns.open_supervisor() as sup:
        leaves = []
        for _ in range(3):
            async with trio.open_nursery() as nursery:
                box = await _started(sup, nursery, sleeper(limits=Limits(memory="64M", pids=16, cpu=1)))
                leaf = leaf_dirs(box.pid)
                assert leaf and all_dirs(leaf.values())
                leaves.append(leaf)
                box.kill()
            assert none_left(leaf.values())
        parents = {os.path.dirname(d) for leaf in leaves for d in leaf.values()}
        assert len({len(leaf) for leaf in leaves}) == 1 and len(parents) == len(leaves[0])
        assert all_dirs(parents)
        assert anyns_dirs() - before == parents
        # A failed run (OOM) and a setup failure (no such program) leave no leaf either.
        done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-c", HOG], limits=Limits(memory="32M")),
                             check=False, capture_stdout=True, capture_stderr=True)
        assert done.oom_killed
        with pytest.raises(anyns.ExecError):
            await sup.run(anyns.ContainerSpec(argv=["/no/such/program"], limits=Limits(pids=4)))
        assert anyns_dirs() - before == parents
    assert none_left(parents)
    assert anyns_dirs() <= before


def _remove(directories: Iterable[str]) -> None:
    """rmdir what is left of ``directories``, deepest first."""
    for d in sorted(directories, key=len, reverse=True):
        if os.path.isdir(d):
            os.rmdir(d)


async def test_two_supervisors_in_one_process() -> None:
    """Two supervisors of one process share the parent anyns-<pid>-<start>: their leaves do not collide, the
    first to close leaves the parent to the other, which goes on making leaves; the last one removes it."""
    before = anyns_dirs()
    spec = sleeper(limits=Limits(pids=8))
    async with anyns.open_supervisor() as second, trio.open_nursery() as nursery:
        async with anyns.open_supervisor() as first:
            one = await _started(first, nursery, spec)
            two = await _started(second, nursery, spec)
            leaves = [leaf_dirs(one.pid), leaf_dirs(two.pid)]
            assert leaves[0] and leaves[1]
            assert set(leaves[0].values()).isdisjoint(leaves[1].values())
            one.kill()
            with trio.fail_after(10):
                assert await one.wait() == -9
        # first has closed; second's parent and leaf are still there, and it makes new leaves
        assert all_dirs(leaves[1].values())
        three = await _started(second, nursery, spec)
        assert leaf_dirs(three.pid)
        assert int(read(controller_file(leaf_dirs(three.pid), "pids", "pids.max", "pids.max"))) == 8
        two.kill()
        three.kill()
    assert anyns_dirs() <= before


_KILLED_SUPERVISOR = textwrap.dedent(
    """
    import functools, trio, anyns

    async def main():
        spec = anyns.ContainerSpec(argv=["sleep", "1000"], limits=anyns.Limits(memory="64M", pids=16, cpu=1))
        async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
            run = functools.partial(sup.run, check=False)
            boxes = [await nursery.start(run, spec) for _ in range(3)]
            print(*(b.pid for b in boxes), flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


def _zygotes_of(pid: int) -> list[int]:
    """The zygote processes supervisor process ``pid`` started (children with "zygote" in their command line)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = read(f"/proc/{name}/stat").decode()
                if (int(stat.rpartition(")")[2].split()[1]) == pid and b"zygote" in read(f"/proc/{name}/cmdline")
                        and read(f"/proc/{name}/comm") != b"anyns-init\n"):  # inits are clones of the zygote
                    found.append(int(name))
            except (OSError, ValueError):
                continue
    return found


async def test_leftovers_of_a_killed_supervisor_go_at_the_next_start() -> None:
    """A supervisor SIGKILLed together with its zygote (nobody is left to clean up) leaves its anyns-<pid>-*
    parents and leaves in every hierarchy; the next supervisor's start removes them all once their processes
    are gone. (A supervisor killed alone has its zygote remove them: test_crash.)"""
    left: set[str] = set()
    try:
        with supervisor_process(_KILLED_SUPERVISOR) as (proc, pidfds):
            assert proc.stdout is not None
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            pids = [int(p) for p in line.split()]
            assert len(pids) == 3
            leaves = [leaf_dirs(pid) for pid in pids]
            assert all(leaves)
            pidfds.extend(os.pidfd_open(pid) for pid in pids)
            left = {d for leaf in leaves for d in leaf.values()}
            parents = {os.path.dirname(d) for d in left}
            assert {os.path.basename(p) for p in parents} == {f"anyns-{proc.pid}-{_start_time(proc.pid)}"}
            assert len(parents) == len(leaves[0])  # one parent per hierarchy
            left |= parents

            zygotes = _zygotes_of(proc.pid)
            assert len(zygotes) == 1
            os.kill(zygotes[0], signal.SIGKILL)  # the zygote first: it would remove the cgroups itself
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert wait_all_exited(pidfds, timeout=5.0) == []
            assert any(exists(d) for d in left)  # nobody was left to remove them
        with trio.fail_after(5):  # their processes were reparented and are reaped by someone else
            while busy(leaves):  # noqa: ASYNC110 (cgroup.events needs inotify)
                await trio.sleep(0.01)
        # (Not asserted: that they are all still there now. Any supervisor starting on this host, such as
        # one of a test run beside this one, may already have collected them.)

        async with anyns.open_supervisor():
            assert none_left(left), sorted(d for d in left if exists(d))
    finally:  # whatever happened, leave no cgroup behind (leaves first)
        _remove(left)


@pytest.mark.usefixtures("need_v2")
async def test_cgroup_parent_holds_the_v2_leaves() -> None:
    """open_supervisor(cgroup_parent=D): the v2 leaves are made under D (the v1 ones beside the supervisor's own
    cgroups); D is left as it was when the supervisor closes."""
    own = cgroup_dirs(os.getpid())[""]
    delegated = os.path.join(own, f"limits-test-anyns-{os.getpid()}")  # "anyns": the leak check watches it
    os.mkdir(delegated)
    try:
        async with anyns.open_supervisor(cgroup_parent=delegated) as sup, trio.open_nursery() as nursery:
            box = await _started(sup, nursery, sleeper(limits=Limits(pids=8)))
            leaf = leaf_dirs(box.pid)
            assert os.path.dirname(os.path.dirname(leaf[""])) == delegated
            for name, d in leaf.items():
                if name:
                    assert os.path.dirname(os.path.dirname(d)) == cgroup_dirs(os.getpid())[name]
            assert int(read(controller_file(leaf, "pids", "pids.max", "pids.max"))) == 8
            box.kill()
        assert none_left(leaf.values())
        assert [e.name for e in os.scandir(delegated) if e.is_dir()] == []
    finally:
        os.rmdir(delegated)


async def test_cgroup_parent_must_be_a_v2_directory() -> None:
    """open_supervisor(cgroup_parent=...) refuses a directory outside the cgroup2 hierarchy."""
    with pytest.raises(anyns.UnsupportedError, match="cgroup_parent"):
        async with anyns.open_supervisor(cgroup_parent="/tmp"):
            pass
