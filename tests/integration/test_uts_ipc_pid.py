"""UTS, IPC and PID namespaces: names, IPC objects and process trees stay inside their container."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import subprocess
from functools import partial

import trio
from _proc import process_state
from _util import alive, children_of_me, close_streams, lines, nspid, read, read_lines, sh, sh_spec

import anyns

# mq_open(3) through ctypes: "create NAME" (O_CREAT|O_EXCL) or "open NAME"; prints "ok" or the errno name.
MQ = """
import ctypes, errno, os, sys
rt = ctypes.CDLL('librt.so.1', use_errno=True)
rt.mq_open.restype = ctypes.c_int
rt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if sys.argv[1] == 'create' else 0)
fd = rt.mq_open(sys.argv[2].encode(), flags, 0o600, None)
print('ok' if fd >= 0 else errno.errorcode[ctypes.get_errno()], flush=True)
"""
# Run with argv [sh, -c, LOOK, "sh", MQ, NAME]: the shm segments (key shmid bytes), then whether NAME opens.
LOOK = """ipcs -m | awk '/^0x/ {print "shm", $1, $2, $5}'; exec python3 -I -c "$1" open "$2" """
QUEUE = f"/anyns-test-q-{os.getpid()}"



def host_pid_of(ns_pid: int, pid_ns: str) -> int:
    """The host pid of the process that is ``ns_pid`` in pid namespace ``pid_ns``."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") == pid_ns and nspid(int(name))[-1] == ns_pid:
                return int(name)
        except (OSError, AssertionError):
            continue
    raise AssertionError(f"no process {ns_pid} in {pid_ns}")


def host_shm() -> list[str]:
    """The host's System V shared memory segments, as `ipcs -m` lists them."""
    out = subprocess.run(["ipcs", "-m"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("0x")]


def host_mq_open(name: str) -> int:
    """mq_open(name, O_RDWR) on the host (never creates); 0 if it opened, else the errno."""
    rt = ctypes.CDLL("librt.so.1", use_errno=True)
    rt.mq_open.restype = ctypes.c_int
    rt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    fd = rt.mq_open(name.encode(), os.O_RDWR, 0, None)
    if fd >= 0:
        os.close(fd)
        return 0
    return ctypes.get_errno()


# --------------------------------------------------------------------------- PID


async def test_pid_1_sees_only_its_descendants(sup: anyns.Supervisor) -> None:
    """init=False: inside, the program is pid 1 and /proc lists only it and its descendants."""
    done = await sh(sup, "echo $$; sleep 1000 & echo $!; exec ls /proc", init=False)
    assert done.returncode == 0, done.stderr
    me, child, *listing = lines(done.stdout)
    assert me == "1"
    assert {name for name in listing if name.isdigit()} == {"1", child}
    assert str(os.getpid()) not in listing


async def test_pid_outside_is_host_pid_and_ns_pid_is_1(sup: anyns.Supervisor) -> None:
    """Container.pid is a host pid (our child); ns_pid is 1, the last NSpid field."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec("echo $$; exec cat", init=False), stdin=anyns.PIPE,
                                          stdout=anyns.PIPE, check=False))
        assert await read_lines(box.stdout, 1) == ["1"]
        assert alive(box.pid)
        assert box.pid in children_of_me()  # CLONE_PARENT: the supervisor's own child
        assert nspid(box.pid) == [box.pid, 1]
        assert box.ns_pid == 1
        assert os.readlink(f"/proc/{box.pid}/ns/pid") == box.namespaces["pid"]
        assert box.namespaces["pid"] != os.readlink("/proc/self/ns/pid")
        assert box.stdin is not None
        await box.stdin.send_all(b"echo\n")
        assert await read_lines(box.stdout, 1) == ["echo"]  # cat runs now, with the same pid
        assert read(f"/proc/{box.pid}/cmdline") == b"cat\0"
        await box.stdin.aclose()
    assert box.returncode == 0
    assert not alive(box.pid)
    await close_streams(box)


async def test_exec_and_its_children_die_with_pid_1(sup: anyns.Supervisor) -> None:
    """Killing the container's pid 1 kills an exec'd process (-9) and its children."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["sleep", "1000"]), check=False))
        proc = await nursery.start(partial(box.exec, ["/bin/sh", "-c", "sleep 1000 & echo $!; wait"],
                                           stdout=anyns.PIPE, check=False))
        [grandchild_ns_pid] = await read_lines(proc.stdout, 1)
        grandchild = host_pid_of(int(grandchild_ns_pid), box.namespaces["pid"])
        assert alive(grandchild) and grandchild not in children_of_me()
        box.kill()
        assert await proc.wait() == -9
        assert await box.wait() == -9
        assert not alive(grandchild) and not alive(proc.pid)
    await close_streams(proc)


NO_PID = anyns.Namespaces.DEFAULT & ~anyns.Namespaces.PID


async def wait_dead(pid: int) -> None:
    """Return once host pid ``pid`` has exited (its pidfd polls readable), or at once if it is gone."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)


async def test_without_a_pid_namespace_a_background_process_dies_with_the_program(sup: anyns.Supervisor) -> None:
    """No pid namespace: `sleep 1000 &` holding the captured stdout is killed when the shell exits, so run returns."""
    with trio.fail_after(20):  # a hang fails here, not at the per-test timeout (not a performance bound)
        done = await sh(sup, "sleep 1000 & echo $!", namespaces=NO_PID, check=True)
        [orphan] = lines(done.stdout)
        await wait_dead(int(orphan))  # its host pid (no pid namespace): killed, not merely orphaned
    assert int(orphan) not in children_of_me()


async def test_without_a_pid_namespace_cancelling_kills_every_process(sup: anyns.Supervisor) -> None:
    """No pid namespace: cancelling a run started with nursery.start kills the background process too."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            box = await nursery.start(partial(sup.run, sh_spec("sleep 1000 & echo $!; exec sleep 1000",
                                                               namespaces=NO_PID),
                                              stdout=anyns.PIPE, check=False))
            [orphan] = await read_lines(box.stdout, 1)
            assert alive(int(orphan))
            nursery.cancel_scope.cancel()
        assert box.returncode == -9
        await wait_dead(int(orphan))
    await close_streams(box)


async def test_joining_a_pid_namespace_kills_only_the_joiners_processes(sup: anyns.Supervisor) -> None:
    """Join(pid=...): the joiner's background process dies with its program; the joined container lives on."""
    async with trio.open_nursery() as nursery:
        host = await nursery.start(partial(sup.run, sh_spec("sleep 1000 & echo $!; exec sleep 1000"),
                                           stdout=anyns.PIPE, check=False))
        [host_child_ns_pid] = await read_lines(host.stdout, 1)
        host_child = host_pid_of(int(host_child_ns_pid), host.namespaces["pid"])
        with trio.fail_after(20):
            done = await sh(sup, "sleep 1000 & echo $!", join=anyns.Join(pid=host), check=True)
            [joiner_ns_pid] = lines(done.stdout)
            with contextlib.suppress(AssertionError):  # gone already, or about to be
                await wait_dead(host_pid_of(int(joiner_ns_pid), host.namespaces["pid"]))
        assert alive(host.pid) and alive(host_child)
        assert process_state(host_child) != "Z"
        host.kill()
    await close_streams(host)


# --------------------------------------------------------------------------- UTS


async def test_hostname_and_domainname_per_container(sup: anyns.Supervisor) -> None:
    """Each container has its own hostname and domain name; the host's stay unchanged."""
    host_name = socket.gethostname()
    host_domain = read("/proc/sys/kernel/domainname")
    script = "cat /proc/sys/kernel/hostname /proc/sys/kernel/domainname; hostname; domainname; exec cat"
    async with trio.open_nursery() as nursery:
        boxes = []
        for i in (1, 2):
            spec = sh_spec(script, hostname=f"host-{i}", domainname=f"domain-{i}.test")
            boxes.append(await nursery.start(partial(sup.run, spec, stdin=anyns.PIPE, stdout=anyns.PIPE)))
        for i, box in enumerate(boxes, 1):
            assert await read_lines(box.stdout, 4) == [f"host-{i}", f"domain-{i}.test"] * 2
        assert boxes[0].namespaces["uts"] != boxes[1].namespaces["uts"]
        assert socket.gethostname() == host_name
        assert read("/proc/sys/kernel/domainname") == host_domain
        for box in boxes:
            assert box.stdin is not None
            await box.stdin.aclose()
    assert [box.returncode for box in boxes] == [0, 0]
    assert socket.gethostname() == host_name not in ("host-1", "host-2")
    assert read("/proc/sys/kernel/domainname") == host_domain
    await close_streams(*boxes)


async def test_domainname_none_keeps_the_hosts(sup: anyns.Supervisor) -> None:
    """Without domainname the new UTS namespace starts with the host's domain name."""
    done = await sh(sup, "cat /proc/sys/kernel/domainname", hostname="only-host")
    assert done.stdout == read("/proc/sys/kernel/domainname")


# --------------------------------------------------------------------------- IPC


async def test_ipc_objects_stay_in_their_namespace(sup: anyns.Supervisor) -> None:
    """A SysV segment and a POSIX queue made in a container are seen by an ipc-joined one only."""
    host_before = host_shm()
    make = 'ipcmk -M 4096 && python3 -I -c "$1" create "$2" && echo ready && exec sleep 1000'
    async with trio.open_nursery() as nursery:
        maker = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["/bin/sh", "-c", make, "sh", MQ, QUEUE]),
                                            stdout=anyns.PIPE, check=False))
        made, queue, ready = await read_lines(maker.stdout, 3)
        assert made.startswith("Shared memory id: ") and (queue, ready) == ("ok", "ready")
        shmid = made.split()[-1]

        look = ["/bin/sh", "-c", LOOK, "sh", MQ, QUEUE]
        joined = await sup.run(anyns.ContainerSpec(argv=look, join=anyns.Join(ipc=maker)), capture_stdout=True)
        *segments, opened = lines(joined.stdout)
        assert opened == "ok"
        assert len(segments) == 1
        _, key, seen_shmid, size = segments[0].split()
        assert (seen_shmid, size) == (shmid, "4096")

        other = await sup.run(anyns.ContainerSpec(argv=look), capture_stdout=True)
        assert lines(other.stdout) == ["ENOENT"]  # no segment, no queue

        assert host_shm() == host_before
        assert not any(line.split()[0] == key for line in host_before)
        assert host_mq_open(QUEUE) == errno.ENOENT
        maker.kill()
    await close_streams(maker)
    assert host_shm() == host_before
    assert host_mq_open(QUEUE) == errno.ENOENT
