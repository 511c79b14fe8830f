"""Helpers shared by the integration tests."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import attrs
import trio
from _proc import process_state, process_table

import anyns

SH = "/bin/sh"


def sh_spec(script: str, **fields: Any) -> anyns.ContainerSpec:
    """A spec that runs ``script`` with /bin/sh -c."""
    return anyns.ContainerSpec(argv=[SH, "-c", script], **fields)


async def sh(sup: anyns.Supervisor, script: str, *, check: bool = False, **fields: Any
             ) -> anyns.CompletedContainer:
    """Run ``script`` in a container, capturing stdout and stderr separately."""
    return await sup.run(sh_spec(script, **fields), capture_stdout=True, capture_stderr=True,
                         check=check)


def lines(data: bytes | None) -> list[str]:
    assert data is not None
    return data.decode().splitlines()


def host_namespaces() -> dict[str, str]:
    """This process's namespaces, as ``readlink /proc/self/ns/KIND`` prints them."""
    return {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in os.listdir("/proc/self/ns")
            if not kind.endswith("_for_children")}


def is_zombie_or_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists (or only as a zombie)."""
    return process_state(pid) in (None, "Z")


def children_of_me() -> dict[int, str]:
    """pid -> cmdline of every direct child of this process."""
    me, found = os.getpid(), {}
    for pid, (ppid, _state, _comm) in process_table().items():
        if ppid == me:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:  # exited meanwhile
                continue
    return found


def evolve(spec: anyns.ContainerSpec, **changes: Any) -> anyns.ContainerSpec:
    return attrs.evolve(spec, **changes)


async def read_lines(stream: Any, count: int) -> list[str]:
    """Read from a trio ReceiveStream until ``count`` complete lines have arrived."""
    data = b""
    while data.count(b"\n") < count:
        chunk = await stream.receive_some()
        assert chunk, f"EOF after {data!r}, expected {count} lines"
        data += chunk
    return data.decode().splitlines()


def exists(path: str) -> bool:
    """os.path.lexists, for asserting host state at a precise point of an async test."""
    return os.path.lexists(path)


def alive(pid: int) -> bool:
    """True while /proc/PID exists (a zombie counts: it has not been reaped)."""
    return os.path.exists(f"/proc/{pid}")


def read(path: str) -> bytes:
    """The whole content of a (small, /proc or tmp) file."""
    with open(path, "rb") as f:
        return f.read()


HERE = os.path.dirname(os.path.abspath(__file__))


def wait_all_exited(pidfds: list[int], timeout: float) -> list[int]:
    """Wait until every pidfd reports its process exited; return those that did not in time."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    pending = set(pidfds)
    deadline = time.monotonic() + timeout
    while pending and (left := deadline - time.monotonic()) > 0:
        for fd, _event in poller.poll(left * 1000):
            pending.discard(fd)
            poller.unregister(fd)
    return sorted(pending)


PYTHON = "/usr/bin/python3"
#: every kind of namespace in /proc/PID/ns (without the *_for_children links)
KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")

# A loopback "pong" server for PYTHON -c: prints its port, then answers every connection.
PONG_SERVER = """
import socket
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen()
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b'pong')
    c.close()
"""
# Its client for PYTHON -c ... PORT: prints what the server sent.
PONG_CLIENT = """
import socket, sys
c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
print(c.recv(4).decode())
"""


def sleeper(**fields: Any) -> anyns.ContainerSpec:
    """A spec whose program sleeps until it is killed."""
    return anyns.ContainerSpec(argv=["sleep", "1000"], **fields)


async def close_streams(*procs: anyns.Container) -> None:
    """Close the streams anyns.PIPE handed out: they belong to the caller (trio.run_process semantics)."""
    for proc in procs:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                await stream.aclose()


async def kill_and_wait_dead(box: anyns.Container) -> None:
    """SIGKILL ``box`` and wait until it has died, watching its own pidfd: its owner may not have reaped it yet."""
    watch = os.pidfd_open(box.pid)
    try:
        box.kill()
        await trio.lowlevel.wait_readable(watch)
    finally:
        trio.lowlevel.notify_closing(watch)
        os.close(watch)


def nspid(pid: int) -> list[int]:
    """The NSpid line of /proc/PID/status: the pid in each pid namespace, outermost first."""
    for line in read(f"/proc/{pid}/status").decode().splitlines():
        if line.startswith("NSpid:"):
            return [int(f) for f in line.split()[1:]]
    raise AssertionError(f"no NSpid in /proc/{pid}/status")


@contextlib.contextmanager
def supervisor_process(script: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """Run ``python -c script *args`` (a supervisor the test will SIGKILL) with its stdout piped.

    Yields the process and a list for pidfds of what it started; on leaving, the
    pidfds are closed and the process is killed if it still runs.
    """
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    pidfds: list[int] = []
    try:
        yield proc, pidfds
    finally:
        for fd in pidfds:
            os.close(fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
