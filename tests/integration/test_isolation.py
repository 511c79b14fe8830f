"""What a container sees: its pid namespace, hostname, namespaces, fds, env, filesystem."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

import pytest
import trio
from _util import (
    HERE,
    SH,
    children_of_me,
    exists,
    host_namespaces,
    lines,
    read,
    read_lines,
    sh,
    sh_spec,
)

import anyns
from anyns import Namespaces

NS = Namespaces
KIND_OF = {NS.MOUNT: "mnt", NS.PID: "pid", NS.UTS: "uts", NS.IPC: "ipc", NS.NET: "net",
           NS.CGROUP: "cgroup", NS.TIME: "time"}
KINDS = ("mnt", "pid", "uts", "ipc", "net", "cgroup", "time", "user")
PYTHON = "/usr/bin/python3"


async def test_pid_1_and_hostname(sup: anyns.Supervisor) -> None:
    """init=False: the program is pid 1 of a new pid namespace and sees the hostname the spec chose."""
    done = await sh(sup, "echo $$; hostname; cat /proc/sys/kernel/hostname", hostname="box-42", init=False)
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["1", "box-42", "box-42"]
    assert os.uname().nodename != "box-42"


async def test_with_init_the_program_is_pid_2_child_of_the_init(sup: anyns.Supervisor) -> None:
    """By default pid 1 is anyns's init and the program is its child, pid 2."""
    done = await sh(sup, "echo $$ $PPID; cat /proc/1/comm", check=True)
    assert lines(done.stdout) == ["2 1", "anyns-init"]


async def test_hostname_none_keeps_host_name_in_new_uts(sup: anyns.Supervisor) -> None:
    """hostname=None leaves the host's name in the new UTS namespace."""
    done = await sh(sup, "hostname")
    assert lines(done.stdout) == [os.uname().nodename]


@pytest.mark.parametrize(
    "namespaces",
    [NS.DEFAULT, NS.MOUNT | NS.PID, NS.MOUNT, NS.MOUNT | NS.NET | NS.UTS,
     NS.DEFAULT | NS.CGROUP | NS.TIME],
    ids=lambda ns: "-".join(KIND_OF[f] for f in KIND_OF if f in ns),
)
async def test_namespaces_new_or_shared_as_requested(
    sup: anyns.Supervisor, namespaces: Namespaces
) -> None:
    """Requested namespaces differ from the host's, others are shared: seen outside and inside."""
    host = host_namespaces()
    wanted = {KIND_OF[flag] for flag in KIND_OF if flag in namespaces}
    script = f"for k in {' '.join(KINDS)}; do readlink /proc/self/ns/$k; done; exec sleep 1000"
    async with trio.open_nursery() as nursery:
        box = await nursery.start(
            partial(sup.run, sh_spec(script, namespaces=namespaces), stdout=anyns.PIPE, check=False)
        )
        inside = await read_lines(box.stdout, len(KINDS))
        outside = box.namespaces
        assert dict(outside) == dict(anyns.namespaces_of(box.pid))
        assert dict(outside) == {k: os.readlink(f"/proc/{box.pid}/ns/{k}") for k in KINDS}
        box.kill()
    assert box.returncode == -9
    assert dict(zip(KINDS, inside, strict=True)) == dict(outside)
    for kind in KINDS:
        assert outside[kind].kind == kind
        assert outside[kind] == f"{kind}:[{outside[kind].inode}]"
        if kind in wanted:
            assert outside[kind] != host[kind], f"{kind} was requested but is the host's"
        else:
            assert outside[kind] == host[kind], f"{kind} was not requested but is new"


async def test_only_own_processes_visible(sup: anyns.Supervisor) -> None:
    """/proc inside lists only the container's processes, not the host's."""
    me = os.getpid()
    done = await sh(sup, f"test -e /proc/{me} && echo host-visible; exec ls /proc")
    assert done.returncode == 0, done.stderr
    assert [name for name in lines(done.stdout) if name.isdigit()] == ["1", "2"]  # the init and ls
    assert "host-visible" not in lines(done.stdout)


async def test_ns_pid_is_1_and_pid_is_host_pid(sup: anyns.Supervisor) -> None:
    """Container.ns_pid is 1 inside a pid namespace while Container.pid is its host pid."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["sleep", "1000"], init=False),
                                          check=False))
        assert box.ns_pid == 1
        assert box.pid != 1
        assert box.pid in children_of_me()
        assert read(f"/proc/{box.pid}/cmdline") == b"sleep\x001000\x00"
        box.kill()
    assert box.ns_pid == 1  # kept after exit


async def test_ns_pid_without_pid_namespace_is_host_pid(sup: anyns.Supervisor) -> None:
    """Without Namespaces.PID the program keeps its host pid inside."""
    spec = anyns.ContainerSpec(argv=["sleep", "1000"], namespaces=NS.MOUNT)
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, spec, check=False))
        assert box.ns_pid == box.pid != 1
        box.kill()


@pytest.mark.parametrize("namespaces", [NS.DEFAULT, NS.MOUNT], ids=["own-pid-namespace", "no-pid-namespace"])
async def test_ns_pid_is_known_after_exit_without_being_read_before(sup: anyns.Supervisor,
                                                                   namespaces: NS) -> None:
    """ns_pid never read while the container ran: still known after it exited (1, or its host pid)."""
    spec = anyns.ContainerSpec(argv=["true"], namespaces=namespaces)
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, spec, check=False))
        await box.wait()
    assert box.returncode == 0
    assert box.ns_pid == (1 if namespaces == NS.DEFAULT else box.pid)


async def test_only_stdio_fds_reach_the_program(sup: anyns.Supervisor) -> None:
    """Only fds 0, 1 and 2 are open in the program, even with many containers in flight."""
    results: list[list[str]] = []

    async def one(i: int) -> None:
        done = await sh(sup, "ls /proc/$$/fd", hostname=f"fd{i}")
        assert done.returncode == 0, done.stderr
        results.append(lines(done.stdout))

    boxes = []
    async with trio.open_nursery() as nursery:
        # A few long-running containers with pipes, so the supervisor holds many fds.
        for _ in range(4):
            boxes.append(await nursery.start(partial(sup.run, sh_spec("exec cat"), stdin=anyns.PIPE,
                                                     stdout=anyns.PIPE, stderr=anyns.PIPE, check=False)))
        async with trio.open_nursery() as inner:
            for i in range(30):
                inner.start_soon(one, i)
        nursery.cancel_scope.cancel()
    for box in boxes:  # PIPE streams are the caller's to close, as with trio.run_process
        for stream in (box.stdin, box.stdout, box.stderr):
            await stream.aclose()
    assert len(results) == 30
    assert all(fds == ["0", "1", "2"] for fds in results), results


async def test_env_is_exactly_the_spec(sup: anyns.Supervisor, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    """The program's environment is exactly spec.env; the supervisor's is not passed on."""
    monkeypatch.setenv("ANYNS_SECRET", "do-not-leak")
    env = {"PATH": "/usr/bin:/bin", "FOO": "bar baz", "EMPTY": "", "EQ": "a=b"}
    done = await sup.run(anyns.ContainerSpec(argv=["env"], env=env), capture_stdout=True)
    assert sorted(lines(done.stdout)) == sorted(f"{k}={v}" for k, v in env.items())


async def test_default_env_is_only_path(sup: anyns.Supervisor, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    """Without env= the program gets PATH and nothing else."""
    monkeypatch.setenv("ANYNS_SECRET", "do-not-leak")
    done = await sup.run(anyns.ContainerSpec(argv=["env"]), capture_stdout=True)
    assert lines(done.stdout) == [f"PATH={anyns.ContainerSpec(argv=['x']).env['PATH']}"]
    assert "ANYNS_SECRET" not in done.stdout.decode()


async def test_cwd_is_honoured(sup: anyns.Supervisor) -> None:
    """The program starts in spec.cwd; a relative argv[0] resolves against it."""
    done = await sup.run(anyns.ContainerSpec(argv=["/bin/pwd"], cwd="/tmp"), capture_stdout=True)
    assert lines(done.stdout) == ["/tmp"]
    done = await sup.run(anyns.ContainerSpec(argv=["./echo", "relative"], cwd="/usr/bin"),
                         capture_stdout=True)
    assert lines(done.stdout) == ["relative"]


async def test_root_is_read_only_and_tmp_writable(sup: anyns.Supervisor) -> None:
    """Writing to /usr or / fails (read-only), writing to /tmp works."""
    name = f"anyns-ro-probe-{os.getpid()}"
    done = await sh(sup, f"touch /usr/{name} || echo usr-ro; mkdir /{name} || echo root-ro; "
                         "echo hello > /tmp/f && cat /tmp/f")
    assert lines(done.stdout) == ["usr-ro", "root-ro", "hello"]
    assert done.stderr.count(b"Read-only file system") == 2, done.stderr
    assert not exists(f"/usr/{name}")


async def test_tmp_is_private_to_each_container(sup: anyns.Supervisor) -> None:
    """Files one container writes in /tmp are invisible to the next one and to the host."""
    name = f"anyns-tmp-probe-{os.getpid()}"
    first = await sh(sup, f"echo x > /tmp/{name} && ls /tmp")
    assert lines(first.stdout) == [name]
    second = await sh(sup, "ls -A /tmp")
    assert lines(second.stdout) == []
    assert not exists(f"/tmp/{name}")


async def test_host_paths_are_invisible(sup: anyns.Supervisor) -> None:
    """Only /usr and the chosen /etc entries of the host are visible; /etc/shadow, /work… are not."""
    etc = await sh(sup, "ls -A /etc")
    assert set(lines(etc.stdout)) == {n for n in anyns.HostRootfs().etc if exists(f"/etc/{n}")}
    assert exists("/etc/shadow") and exists(HERE)
    done = await sh(sup, f"ls -d /etc/shadow {HERE} /root/* /home/* /var/* /run/*")
    assert done.returncode != 0
    assert lines(done.stdout) == []


async def test_dev_nodes_work(sup: anyns.Supervisor) -> None:
    """/dev/null, /dev/zero, /dev/urandom work and /dev/pts, /dev/shm exist."""
    script = (
        "set -e; echo x > /dev/null; test -c /dev/null; "
        "head -c 5 /dev/zero | tr '\\000' z; echo; head -c 16 /dev/urandom | wc -c; "
        "test -d /dev/pts; test -c /dev/pts/ptmx; test -d /dev/shm; "
        "echo shm > /dev/shm/f; cat /dev/shm/f; "
        "grep -c ' /dev/pts .* - devpts ' /proc/self/mountinfo; "
        "echo x > /dev/full || echo full"
    )
    done = await sh(sup, script)
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["zzzzz", "16", "shm", "1", "full"]


async def test_loopback_is_up_and_alone(sup: anyns.Supervisor,
                                        skip_or_fail: Callable[[str], None]) -> None:
    """In a new network namespace lo is the only interface and it carries TCP."""
    if not exists(PYTHON):
        skip_or_fail(f"{PYTHON} is needed inside the container")
    script = (
        "import socket\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "c = socket.create_connection(s.getsockname()); a, _ = s.accept()\n"
        "c.sendall(b'ping'); print(a.recv(4).decode())\n"
        "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))\n"
    )
    done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", script]),
                         capture_stdout=True, capture_stderr=True)
    assert lines(done.stdout) == ["ping", "['lo']"]


async def test_sh_is_the_program(sup: anyns.Supervisor) -> None:
    """argv[0] is executed as given: /bin/sh with its arguments, and $0 is argv[0]."""
    done = await sup.run(anyns.ContainerSpec(argv=[SH, "-c", 'echo "$0 $1"', "zero", "one"]),
                         capture_stdout=True)
    assert lines(done.stdout) == ["zero one"]
