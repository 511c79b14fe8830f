"""Helpers shared by the integration tests."""

from __future__ import annotations

import os
import select
import time
from typing import Any

import attrs

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
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return True
    return data[data.rindex(b")") + 2 :].split()[0] == b"Z"


def children_of_me() -> dict[int, str]:
    """pid -> cmdline of every direct child of this process."""
    me, found = os.getpid(), {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(data[data.rindex(b")") + 2 :].split()[1]) == me:
            found[int(name)] = cmdline
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
