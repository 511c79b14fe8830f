"""Container.exec: a new process inside a running container sees what the container sees."""

from __future__ import annotations

import errno
import os
import socket
from functools import partial

import pytest
import trio
from _util import (
    KINDS,
    PONG_CLIENT,
    PONG_SERVER,
    PYTHON,
    alive,
    children_of_me,
    close_streams,
    exists,
    kill_and_wait_dead,
    lines,
    nspid,
    read,
    read_lines,
    sh_spec,
    sleeper,
)

import anyns
from anyns import Namespaces

NS = Namespaces

# pid 1 of the container: writes a file on its own tmpfs, then serves "pong" on a loopback port.
SERVER = """
import socket
with open('/data/hello', 'w') as f:
    f.write('written by pid 1\\n')
""" + PONG_SERVER


def host_connect(port: int) -> bytes:
    """Connect to 127.0.0.1:port from the host's network namespace; return what arrives."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        return c.recv(4)




async def test_exec_sees_hostname_processes_mounts_and_network(sup: anyns.Supervisor) -> None:
    """An exec'd command sees the container's hostname, processes, tmpfs, netns and loopback socket."""
    spec = anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", SERVER], hostname="execbox",
                               mounts=[anyns.Tmpfs("/data")])
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, spec, stdout=anyns.PIPE, check=False))
        [port] = await read_lines(box.stdout, 1)

        async def run(*argv: str) -> list[str]:
            done = await box.exec(list(argv), capture_stdout=True, capture_stderr=True)
            assert done.stderr == b""
            return lines(done.stdout)

        assert await run("hostname") == ["execbox"]
        assert await run("cat", "/proc/sys/kernel/hostname") == ["execbox"]
        assert os.uname().nodename != "execbox"

        # Its pid namespace: pid 1 (the init), 2 (the server) and the exec'd process itself, no host pid.
        shown = await run("/bin/sh", "-c", "echo $$; exec ls /proc")
        me = shown[0]
        assert me not in ("0", "1", "2")
        assert {name for name in shown[1:] if name.isdigit()} == {"1", "2", me}
        assert (await run("cat", "/proc/2/cmdline"))[0].startswith(PYTHON)
        assert await run("cat", "/proc/1/comm") == ["anyns-init"]

        # Its mount namespace: the tmpfs only this container has, with pid 1's file in it.
        assert await run("cat", "/data/hello") == ["written by pid 1"]
        assert not exists("/data/hello")

        # Its network namespace: the same netns, and the server on its loopback.
        assert await run("readlink", "/proc/self/ns/net") == [box.namespaces["net"]]
        assert box.namespaces["net"] != os.readlink("/proc/self/ns/net")
        assert await run(PYTHON, "-I", "-c", PONG_CLIENT, port) == ["pong"]
        with pytest.raises(ConnectionRefusedError):
            host_connect(int(port))
        box.kill()
    await close_streams(box)


async def test_exec_process_is_in_every_namespace_of_the_container(sup: anyns.Supervisor) -> None:
    """The exec'd process's /proc/PID/ns links equal the container's, for every kind."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(namespaces=NS.DEFAULT | NS.CGROUP | NS.TIME),
                                          check=False))
        proc = await nursery.start(partial(box.exec, ["sleep", "1000"], check=False))
        assert dict(anyns.namespaces_of(proc.pid)) == dict(box.namespaces)
        assert set(box.namespaces) == set(KINDS)
        mine = anyns.namespaces_of(os.getpid())
        for kind in ("mnt", "pid", "uts", "ipc", "net", "cgroup", "time"):
            assert anyns.namespaces_of(proc.pid)[kind] != mine[kind], kind
        box.kill()
    assert proc.returncode == -9


async def test_exec_enters_namespaces_the_container_joined(sup: anyns.Supervisor) -> None:
    """A container that joined another's net and uts: an exec into it lands in those too."""
    async with trio.open_nursery() as nursery:
        first = await nursery.start(partial(sup.run, sleeper(hostname="first"), check=False))
        spec = sleeper(namespaces=NS.MOUNT | NS.PID, join=anyns.Join(net=first, uts=first))
        second = await nursery.start(partial(sup.run, spec, check=False))
        done = await second.exec(["/bin/sh", "-c", "hostname; readlink /proc/self/ns/net /proc/self/ns/mnt"],
                                 capture_stdout=True)
        assert lines(done.stdout) == ["first", first.namespaces["net"], second.namespaces["mnt"]]
        assert second.namespaces["net"] == first.namespaces["net"]
        assert second.namespaces["mnt"] != first.namespaces["mnt"]
        first.kill()
        second.kill()


async def test_exec_handle_pid_and_ns_pid(sup: anyns.Supervisor) -> None:
    """nursery.start(box.exec, …) gives a handle whose ns_pid is the process's $$ and NSpid."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        proc = await nursery.start(partial(box.exec, ["/bin/sh", "-c", "echo $$; exec cat"],
                                           stdin=anyns.PIPE, stdout=anyns.PIPE))
        assert isinstance(proc, anyns.Container)
        [dollar] = await read_lines(proc.stdout, 1)
        assert int(dollar) == proc.ns_pid
        assert proc.ns_pid not in (0, 1)
        assert nspid(proc.pid) == [proc.pid, proc.ns_pid]
        assert nspid(box.pid) == [box.pid, 1]
        assert proc.pid in children_of_me()
        assert proc.returncode is None
        assert proc.stdin is not None
        await proc.stdin.send_all(b"echoed\n")
        assert await read_lines(proc.stdout, 1) == ["echoed"]
        await proc.stdin.aclose()
        assert await proc.wait() == 0
        assert box.returncode is None
        box.kill()
    await close_streams(proc)


async def test_exec_output_captured(sup: anyns.Supervisor) -> None:
    """stdout and stderr of an exec are captured separately; stdin bytes are fed; check=False keeps status."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        done = await box.exec(["/bin/sh", "-c", "cat; echo to-err >&2; exit 3"], stdin=b"fed\n",
                              capture_stdout=True, capture_stderr=True, check=False)
        assert isinstance(done, anyns.CompletedContainer)
        assert (done.returncode, done.stdout, done.stderr) == (3, b"fed\n", b"to-err\n")
        with pytest.raises(anyns.ContainerFailed) as failed:
            await box.exec(["/bin/sh", "-c", "echo out; exit 4"], capture_stdout=True)
        assert failed.value.returncode == 4
        assert failed.value.stdout == b"out\n"
        assert box.returncode is None
        box.kill()


async def test_fifty_concurrent_execs(sup: anyns.Supervisor) -> None:
    """50 execs into one container at once all succeed, each with its own output and pid."""
    outputs: dict[int, list[str]] = {}

    async def one(box: anyns.Container, i: int) -> None:
        done = await box.exec(["/bin/sh", "-c", 'echo "$0 $$"; hostname', f"n{i}"], capture_stdout=True)
        outputs[i] = lines(done.stdout)

    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(hostname="busy"), check=False))
        async with trio.open_nursery() as inner:
            for i in range(50):
                inner.start_soon(one, box, i)
        assert box.returncode is None
        box.kill()
    assert sorted(outputs) == list(range(50))
    for i, out in outputs.items():
        name, pid = out[0].split()
        assert (name, out[1]) == (f"n{i}", "busy")
        assert int(pid) > 1
    assert len({out[0].split()[1] for out in outputs.values()}) == 50


async def test_cancelling_an_exec_kills_only_that_process(sup: anyns.Supervisor) -> None:
    """A cancelled exec is killed and reaped; the container and other execs keep running."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        other = await nursery.start(partial(box.exec, ["cat"], stdin=anyns.PIPE, stdout=anyns.PIPE, check=False))

        # An exec with a handle, cancelled once it runs.
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                victim = await inner.start(partial(box.exec, ["sleep", "1000"]))
                assert alive(victim.pid)
                scope.cancel()
        assert scope.cancelled_caught
        assert victim.returncode == -9
        assert not alive(victim.pid)  # reaped, not a zombie

        # A plain await, cancelled by a deadline wherever it is (spawning or running).
        with trio.move_on_after(0.3) as timeout:
            await box.exec(["sleep", "999"])
        assert timeout.cancelled_caught
        assert not [cmd for cmd in children_of_me().values() if cmd == "sleep 999"]

        assert box.returncode is None and alive(box.pid)
        assert other.returncode is None
        assert other.stdin is not None
        await other.stdin.send_all(b"still here\n")
        assert await read_lines(other.stdout, 1) == ["still here"]
        script = 'for d in /proc/[0-9]*; do tr "\\0" " " < $d/cmdline; echo; done'
        done = await box.exec(["/bin/sh", "-c", script], capture_stdout=True)
        assert [cmd for cmd in lines(done.stdout) if "sleep" in cmd] == ["sleep 1000 "]  # pid 1 only
        assert "cat " in lines(done.stdout)
        box.kill()
    assert other.returncode == -9
    await close_streams(other)


async def test_exec_into_exited_container_is_setup_error(sup: anyns.Supervisor) -> None:
    """Exec into a container that has exited raises SetupError (step "exec", ESRCH)."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec("exec cat"), stdin=anyns.PIPE, check=False))
        assert box.stdin is not None
        await box.stdin.aclose()
    assert box.returncode == 0
    await close_streams(box)
    with pytest.raises(anyns.SetupError) as err:
        await box.exec(["true"])
    assert err.value.step == "exec"
    assert err.value.errno == errno.ESRCH
    assert not isinstance(err.value, anyns.ExecError)
    async with trio.open_nursery() as nursery:
        with pytest.raises(anyns.SetupError) as err2:  # inside: trio >= 0.25 would group it at the nursery
            await nursery.start(box.exec, ["true"])
    assert err2.value.errno == errno.ESRCH


async def test_exec_into_dead_unreaped_container_never_runs_on_the_host(sup: anyns.Supervisor) -> None:
    """Exec right after the container's pid 1 died either fails with ESRCH or never leaves the container."""
    host_net = os.readlink("/proc/self/ns/net")
    escaped = []
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            box = await nursery.start(partial(sup.run, sleeper(), check=False))
            await kill_and_wait_dead(box)
            try:
                done = await box.exec(["readlink", "/proc/self/ns/net"], capture_stdout=True)
            except anyns.SetupError as e:
                assert e.errno == errno.ESRCH, e
            else:
                escaped.append(lines(done.stdout)[0] == host_net)
    assert escaped == [], "exec into a dead container ran a program (True: in the host's net namespace)"


async def test_exec_of_missing_program_is_exec_error(sup: anyns.Supervisor) -> None:
    """A missing program is an ExecError caused by FileNotFoundError; the container keeps running."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        with pytest.raises(anyns.ExecError) as err:
            await box.exec(["no-such-program-anyns"])
        assert isinstance(err.value.__cause__, FileNotFoundError)
        assert err.value.step == "exec" and err.value.errno == errno.ENOENT
        with pytest.raises(anyns.ExecError) as err2:
            await nursery.start(box.exec, ["/usr/bin/no-such-program-anyns"])
        assert isinstance(err2.value.__cause__, FileNotFoundError)
        assert box.returncode is None and alive(box.pid)
        done = await box.exec(["echo", "alive"], capture_stdout=True)
        assert lines(done.stdout) == ["alive"]
        box.kill()


async def test_exec_env_and_cwd(sup: anyns.Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    """env and cwd default to the container's spec, can be overridden, and never include os.environ."""
    monkeypatch.setenv("ANYNS_SECRET", "do-not-leak")
    env = {"PATH": "/usr/bin:/bin", "FOO": "container value"}
    spec = sleeper(env=env, cwd="/tmp", mounts=[anyns.Tmpfs("/data")])
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, spec, check=False))
        done = await box.exec(["env"], capture_stdout=True)
        assert sorted(lines(done.stdout)) == ["FOO=container value", "PATH=/usr/bin:/bin"]
        done = await box.exec(["env"], env={"PATH": "/usr/bin", "BAR": "a=b c"}, capture_stdout=True)
        assert sorted(lines(done.stdout)) == ["BAR=a=b c", "PATH=/usr/bin"]
        done = await box.exec(["env"], env={}, capture_stdout=True)
        assert done.stdout == b""
        assert b"do-not-leak" not in read(f"/proc/{box.pid}/environ")

        proc = await nursery.start(partial(box.exec, ["sleep", "1000"], check=False))
        environ = read(f"/proc/{proc.pid}/environ").split(b"\0")
        assert sorted(environ) == [b"", b"FOO=container value", b"PATH=/usr/bin:/bin"]
        assert os.readlink(f"/proc/{proc.pid}/cwd") == "/tmp"  # host view of its cwd, inside its root
        proc.kill()

        assert lines((await box.exec(["pwd"], capture_stdout=True)).stdout) == ["/tmp"]
        assert lines((await box.exec(["pwd"], cwd="/data", capture_stdout=True)).stdout) == ["/data"]
        assert lines((await box.exec(["./echo", "rel"], cwd="/usr/bin", capture_stdout=True)).stdout) == ["rel"]
        with pytest.raises(anyns.SetupError) as err:
            await box.exec(["pwd"], cwd="/no/such/dir")
        assert isinstance(err.value.__cause__, FileNotFoundError)
        box.kill()


async def test_exec_after_own_scope_ended_the_container_is_cancelled(sup: anyns.Supervisor) -> None:
    """The caller's scope is cancelled and its container reaped before the exec runs: the exec
    raises Cancelled, as any trio call in a cancelled scope does, not "has exited" (a soak found
    the error escaping a scope that had already been cancelled)."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            box = await nursery.start(partial(sup.run, sleeper(), check=False))
            box.kill()
            await box.wait()
            scope.cancel()
            await box.exec(["true"])
            raise AssertionError("exec returned in a cancelled scope")  # pragma: no cover
    assert scope.cancelled_caught
    assert box.returncode == -9
    with trio.CancelScope() as scope2:
        scope2.cancel()
        await box.read_file("/etc/hostname")
    assert scope2.cancelled_caught
