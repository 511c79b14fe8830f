"""Many containers, cancellation, supervisor exit, zygote death, and the zygote's imports."""

from __future__ import annotations

import os
import signal
import sys
from functools import partial

import attrs
import trio
from _util import alive, children_of_me, is_zombie_or_gone, lines, read, read_lines, sh, sh_spec

import anyns

SLEEP = anyns.ContainerSpec(argv=["sleep", "1000"])
REPO = os.path.dirname(os.path.dirname(os.path.abspath(anyns.__file__)))


async def test_200_containers_at_once(sup: anyns.Supervisor) -> None:
    """200 concurrent containers each run their own spec and report their own output."""
    results: dict[int, anyns.CompletedContainer] = {}

    async def one(i: int) -> None:
        spec = sh_spec('echo "$ID $(hostname) $$"', hostname=f"box{i}",
                       env={"PATH": "/usr/bin:/bin", "ID": str(i)})
        results[i] = await sup.run(spec, capture_stdout=True, capture_stderr=True)

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(one, i)
    assert sorted(results) == list(range(200))
    for i, done in results.items():
        # $$ is 2: pid 1 is the init
        assert (done.returncode, done.stdout, done.stderr) == (0, f"{i} box{i} 2\n".encode(), b"")
    assert len({done.pid for done in results.values()}) == 200


async def test_200_running_at_the_same_time(sup: anyns.Supervisor) -> None:
    """200 containers can be alive at once, each with its own pid 1 (the init), and all are reaped."""
    async with trio.open_nursery() as nursery:
        boxes = [await nursery.start(partial(sup.run, SLEEP, check=False)) for _ in range(200)]
        alive = children_of_me()
        assert all(box.pid in alive for box in boxes)
        assert all(read_text(f"/proc/{box.pid}/comm") == "anyns-init\n" for box in boxes)
        assert all(box.ns_pid == 1 for box in boxes)
        assert len({box.namespaces["pid"] for box in boxes}) == 200
        for box in boxes:
            box.kill()
    assert all(box.returncode == -9 for box in boxes)
    assert all(is_zombie_or_gone(box.pid) and box.pid not in children_of_me() for box in boxes)


async def test_200_cancelled_at_once_are_each_reaped_before_their_run_returns(sup: anyns.Supervisor) -> None:
    """A nursery of 200 running containers cancelled at once (a teardown paced a few at a time):
    each run returns only once its own container is killed and reaped, whatever its kind (plain, a
    cgroup, captured output, a stop_grace); none is left, nor its cgroup (the leak check)."""
    kinds = [
        (SLEEP, {}),
        (attrs.evolve(SLEEP, limits=anyns.Limits()), {}),
        (SLEEP, {"capture_stdout": True}),
        (attrs.evolve(SLEEP, stop_grace=0.2), {}),
    ]
    boxes: list[anyns.Container] = []
    at_return: list[tuple[int | None, bool]] = []

    async def owner(i: int, task_status: trio.TaskStatus[anyns.Container]) -> None:
        spec, options = kinds[i % len(kinds)]
        try:
            await sup.run(spec, check=False, task_status=task_status, **options)
        finally:
            box = boxes[i]
            at_return.append((box.returncode, alive(box.pid)))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                boxes.append(await nursery.start(owner, i))
            assert {box.pid for box in boxes} <= set(children_of_me())
            nursery.cancel_scope.cancel()
    assert len(at_return) == 200
    assert all(returncode is not None and not still_there for returncode, still_there in at_return)
    assert {box.returncode for box in boxes} <= {-9, -15}
    assert not {box.pid for box in boxes} & set(children_of_me())


async def test_leaving_supervisor_kills_and_reaps_many_running_containers() -> None:
    """Leaving open_supervisor with 100 running in an outer nursery kills them all (a few dying at a time)."""
    async with trio.open_nursery() as outer:
        async with anyns.open_supervisor() as sup:
            boxes = [await outer.start(partial(sup.run, SLEEP, check=False)) for _ in range(100)]
        assert all(box.returncode == -9 for box in boxes)
        assert not {box.pid for box in boxes} & set(children_of_me())
    assert not any(alive(box.pid) for box in boxes)


async def test_cancelled_container_is_killed_and_reaped(sup: anyns.Supervisor) -> None:
    """Cancelling a started run kills and reaps its container within a second."""
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            box = await nursery.start(sup.run, SLEEP)
            assert box.pid in children_of_me()
            nursery.cancel_scope.cancel()
    assert box.returncode == -9
    assert not alive(box.pid)
    assert box.pid not in children_of_me()


async def test_cancelled_plain_run_is_killed_and_reaped(sup: anyns.Supervisor) -> None:
    """Cancelling a plain ``await sup.run`` kills and reaps its container before it returns."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = 0
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(sup.run, sh_spec("echo ready; exec sleep 1000"),
                                           stdout=w))
                os.set_blocking(r, False)
                await trio.lowlevel.wait_readable(r)
                assert os.read(r, 100) == b"ready\n"
                [pid] = set(children_of_me()) - {_zygote_pid(sup)}
                scope.cancel()
        assert scope.cancelled_caught
        assert not alive(pid)
    finally:
        trio.lowlevel.notify_closing(r)
        os.close(r)
        os.close(w)


async def test_cancel_at_any_point_of_a_spawn_leaves_nothing() -> None:
    """Runs cancelled after 0, 1, 2… scheduler steps (mid-spawn included) leave no process."""
    before = set(children_of_me())
    async with anyns.open_supervisor() as sup:
        await sh(sup, "true")  # the zygote is up and the plan cache warm
        for steps in range(40):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sup.run, SLEEP)
                    for _ in range(steps):
                        await trio.lowlevel.checkpoint()
                    scope.cancel()
            assert scope.cancelled_caught
        done = await sh(sup, "echo after")
        assert done.stdout == b"after\n"
    assert set(children_of_me()) <= before


async def test_leaving_supervisor_kills_running_containers() -> None:
    """Leaving open_supervisor kills and reaps containers started in an outer nursery."""
    async with trio.open_nursery() as outer:
        async with anyns.open_supervisor() as sup:
            boxes = [await outer.start(partial(sup.run, SLEEP, check=False)) for _ in range(5)]
            zygote = _zygote_pid(sup)
            assert {box.pid for box in boxes} <= set(children_of_me())
        assert all(box.returncode == -9 for box in boxes)
        left = children_of_me()
        assert not {box.pid for box in boxes} & set(left)
        assert zygote not in left
    assert not any(alive(box.pid) for box in boxes)


async def test_error_in_supervisor_block_kills_containers() -> None:
    """An exception leaving open_supervisor still kills and reaps every container."""
    boxes: list[anyns.Container] = []
    caught: list[BaseException] = []
    try:  # except*: the nursery may wrap it in a group (trio's strict_exception_groups)
        async with trio.open_nursery() as outer, anyns.open_supervisor() as sup:
            boxes.append(await outer.start(partial(sup.run, SLEEP, check=False)))
            raise RuntimeError("boom")
    except* RuntimeError as group:
        caught.extend(group.exceptions)
    assert [str(err) for err in caught] == ["boom"]
    assert [box.returncode for box in boxes] == [-9]
    assert not alive(boxes[0].pid)


def _zygote_pid(sup: anyns.Supervisor) -> int:
    """The current zygote's pid (a private detail, as the test contract allows)."""
    assert sup._zygote is not None
    return sup._zygote.process.pid


async def test_zygote_death_spares_running_containers(sup: anyns.Supervisor) -> None:
    """After the zygote is killed, running containers keep running and a new zygote serves."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["cat"]),
                                          stdin=anyns.PIPE, stdout=anyns.PIPE))
        old = _zygote_pid(sup)
        pidfd = os.pidfd_open(old)
        try:
            os.kill(old, signal.SIGKILL)
            await trio.lowlevel.wait_readable(pidfd)  # it has exited
        finally:
            trio.lowlevel.notify_closing(pidfd)
            os.close(pidfd)
        done = await sh(sup, "echo new-zygote")
        assert done.stdout == b"new-zygote\n"
        assert _zygote_pid(sup) != old
        await box.stdin.send_all(b"still alive\n")
        assert await read_lines(box.stdout, 1) == ["still alive"]
        await box.stdin.aclose()
    assert box.returncode == 0


async def test_next_spawn_after_zygote_exit_works(sup: anyns.Supervisor) -> None:
    """The first spawn after the zygote has exited succeeds on a new zygote (no ZygoteError)."""
    await sh(sup, "true")
    old = _zygote_pid(sup)
    pidfd = os.pidfd_open(old)
    try:
        os.kill(old, signal.SIGKILL)
        # Block on purpose (no trio checkpoint, so the supervisor cannot notice first) until
        # it has exited; WNOWAIT leaves it for the supervisor to reap.
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222
    finally:
        os.close(pidfd)
    done = await sh(sup, "echo new-zygote")
    assert done.stdout == b"new-zygote\n"
    assert _zygote_pid(sup) != old


async def test_zygote_has_no_trio_mapped(sup: anyns.Supervisor) -> None:
    """The live zygote runs -I -S and maps nothing of trio (importing trio maps _ssl/libssl)."""
    await sh(sup, "true")
    zygote = _zygote_pid(sup)
    maps = read(f"/proc/{zygote}/maps")
    assert b"libpython" in maps or b"/python" in maps  # the check reads real mappings
    for needle in (b"/trio/", b"/attr/", b"/attrs/", b"/pyroute2/", b"/_ssl.", b"libssl"):
        assert needle not in maps, needle
    argv = read(f"/proc/{zygote}/cmdline").split(b"\0")
    assert b"-I" in argv and b"-S" in argv


async def test_zygote_module_imports_no_trio(sup: anyns.Supervisor) -> None:
    """Importing anyns._zygote the way the zygote does pulls in no trio, attrs or pyroute2."""
    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('anyns'); pkg.__path__ = [sys.argv[1]]; sys.modules['anyns'] = pkg\n"
        "import anyns._zygote\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in {'trio', 'attr', 'attrs', 'pyroute2', 'outcome'})\n"
        "print(bad)\n"
    )
    proc = await trio.run_process(
        [sys.executable, "-c", code, os.path.join(REPO, "anyns")], capture_stdout=True,
        capture_stderr=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert lines(proc.stdout) == ["[]"]
    done = await sh(sup, "echo container")  # and the real zygote serves
    assert done.stdout == b"container\n"


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


async def test_max_containers_makes_spawns_wait_for_a_reap() -> None:
    """With ``max_containers=3``, 12 concurrent runs all finish, never more than 3 containers exist at once,
    and a fourth ``nursery.start`` returns only once one of the three running containers has been reaped."""
    async with anyns.open_supervisor(max_containers=3) as sup:
        peak = 0

        async def one() -> None:
            nonlocal peak
            done = await sup.run(sh_spec("sleep 0.05; echo ok"), capture_stdout=True)
            assert done.stdout == b"ok\n"

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(sup._running))
                await trio.sleep(0.001)

        async with trio.open_nursery() as outer:
            outer.start_soon(watch)
            async with trio.open_nursery() as nursery:
                for _ in range(12):
                    nursery.start_soon(one)
            outer.cancel_scope.cancel()
        assert peak == 3

        async with trio.open_nursery() as nursery:
            boxes = [await nursery.start(partial(sup.run, check=False), SLEEP) for _ in range(3)]
            fourth: list[anyns.Container] = []
            started = trio.Event()

            async def start_fourth() -> None:
                fourth.append(await nursery.start(partial(sup.run, check=False), SLEEP))
                started.set()

            nursery.start_soon(start_fourth)
            await trio.sleep(0.3)
            assert fourth == [] and len(sup._running) == 3  # waiting, not spawned
            boxes[0].kill()
            with trio.fail_after(10):
                await started.wait()
            assert boxes[0].returncode == -signal.SIGKILL
            for box in (*boxes[1:], *fourth):
                box.kill()


async def test_a_spawn_waiting_for_capacity_can_be_cancelled() -> None:
    """Cancelled while it waits for ``max_containers``, a run spawns nothing and holds no capacity."""
    async with anyns.open_supervisor(max_containers=1) as sup, trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, check=False), SLEEP)
        before = set(children_of_me())
        spawned_while_waiting: set[int] = set()
        with trio.move_on_after(0.3) as scope:
            async with trio.open_nursery() as waiting:
                waiting.start_soon(sup.run, SLEEP)
                await trio.sleep(0.2)
                spawned_while_waiting = set(children_of_me()) - before  # a spawn would be our child
        assert scope.cancelled_caught and spawned_while_waiting == set() and len(sup._running) == 1
        box.kill()
        await box.wait()
        with trio.fail_after(10):
            done = await sup.run(sh_spec("echo again"), capture_stdout=True)
        assert done.stdout == b"again\n"
