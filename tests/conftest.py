"""Shared fixtures: the capability probe, the leak check and the ``sup`` fixture.

Integration tests (``tests/integration``) need root: mount, PID and network
namespaces. The probe runs once per session; when it fails they skip, unless
``ANYNS_MUST_WORK=1``, which turns the skip into a failure (CI sets it).

Every integration test runs inside ``integration_guard`` (made autouse by
``tests/integration/conftest.py``). It is a *synchronous* fixture, so its
snapshots are taken outside the test's ``trio.run``: before it starts and after
it has ended, when trio's own fds are closed and every supervisor has exited.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import AsyncIterator, Callable, Iterator

import attrs
import hypothesis
import pytest
import trio
from _proc import process_table

import anyns

MUST_WORK = os.environ.get("ANYNS_MUST_WORK") == "1"

# When a hypothesis test fails, hypothesis imports libcst to suggest a patch; libcst warns
# (DeprecationWarning) at import, and filterwarnings=error turns that into an INTERNALERROR
# that hides the real failure. Import it once here, with warnings ignored.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore")
    import hypothesis.extra._patching

# CI machines are small and busy: timing is never a property under test here.
hypothesis.settings.register_profile(
    "anyns", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("anyns")

_PROBE = textwrap.dedent(
    """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
    if libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET) != 0:
        raise SystemExit("unshare(mount|pid|net): " + os.strerror(ctypes.get_errno()))
    MS_REC, MS_PRIVATE = 0x4000, 0x40000
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise SystemExit("mount(MS_PRIVATE): " + os.strerror(ctypes.get_errno()))
    if libc.mount(b"probe", b"/", b"tmpfs", 0, None) != 0:  # private: gone when we exit
        raise SystemExit("mount(tmpfs): " + os.strerror(ctypes.get_errno()))
    """
)


def skip_or_fail(reason: str) -> None:
    """Skip the current test, or fail it when ``ANYNS_MUST_WORK=1``."""
    if MUST_WORK:
        pytest.fail(f"ANYNS_MUST_WORK=1 but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(name="skip_or_fail")
def skip_or_fail_fixture() -> Callable[[str], None]:
    """``skip_or_fail(reason)`` for tests that lack something on this host."""
    return skip_or_fail


@pytest.fixture(scope="session")
def capability() -> str | None:
    """None when this process may create mount+pid+net namespaces and mount; else why not."""
    if sys.platform != "linux":
        return f"anyns needs Linux, this is {sys.platform}"
    try:
        probe = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"capability probe could not run: {e}"
    if probe.returncode != 0:
        detail = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"cannot create mount+pid+net namespaces here (need root): {detail}"
    return None


# --------------------------------------------------------------------------- leak check


@attrs.frozen
class Snapshot:
    """What a test may not leave behind, as seen from outside ``trio.run``."""

    children: dict[int, str]  # pid -> "comm (state)" of our direct children
    zombies: frozenset[int]  # children in state Z
    descendants_netns: dict[int, str]  # pid -> net ns of every descendant process
    mounts: collections.Counter[tuple[str, str, str, str]]
    interfaces: frozenset[str]
    fds: dict[int, str]  # fd -> target
    cgroups: frozenset[str]


def _mounts() -> collections.Counter[tuple[str, str, str, str]]:
    """(root, mount point, fs type, source) of each host mount; ids and options are volatile."""
    counts: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            counts[(fields[3], fields[4], tail[0], tail[1] if len(tail) > 1 else "")] += 1
    return counts


def _fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the directory fd listdir itself used
            continue
    return fds


def _anyns_cgroups() -> frozenset[str]:
    """cgroup directories with "anyns" in their path (the machine's others come and go)."""
    found = set()
    for top, dirs, _files in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if "anyns" in d:
                found.add(os.path.join(top, d))
    return frozenset(found)


def snapshot() -> Snapshot:
    """The current state of everything the leak check compares."""
    me = os.getpid()
    table = process_table()
    children = {pid: f"{comm} ({state})" for pid, (ppid, state, comm) in table.items() if ppid == me}
    zombies = frozenset(pid for pid, (ppid, state, _) in table.items() if ppid == me and state == "Z")
    descendants: set[int] = set()
    frontier = {me}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier} - descendants
        descendants |= frontier
    netns = {}
    for pid in descendants:
        try:
            netns[pid] = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            continue
    return Snapshot(
        children=children,
        zombies=zombies,
        descendants_netns=netns,
        mounts=_mounts(),
        interfaces=frozenset(os.listdir("/sys/class/net")),
        fds=_fds(),
        cgroups=_anyns_cgroups(),
    )


def leaks(before: Snapshot, after: Snapshot) -> list[str]:
    """Human-readable descriptions of everything ``after`` has that ``before`` had not."""
    found = []
    new_children = {p: d for p, d in after.children.items() if p not in before.children}
    if new_children:
        found.append(f"child processes left behind (pid: comm (state)): {new_children}")
    if after.zombies - before.zombies:
        found.append(f"zombie children not reaped: {sorted(after.zombies - before.zombies)}")
    known_netns = set(before.descendants_netns.values()) | {os.readlink("/proc/self/ns/net")}
    new_netns = {p: n for p, n in after.descendants_netns.items() if n not in known_netns}
    if new_netns:
        found.append(f"network namespaces held by descendant processes (pid: ns): {new_netns}")
    added, removed = after.mounts - before.mounts, before.mounts - after.mounts
    if added:
        found.append(f"host mounts added (root, mount point, type, source): {sorted(added)}")
    if removed:
        found.append(f"host mounts removed (root, mount point, type, source): {sorted(removed)}")
    if after.interfaces - before.interfaces:
        found.append(f"network interfaces added: {sorted(after.interfaces - before.interfaces)}")
    new_fds = {fd: t for fd, t in after.fds.items() if before.fds.get(fd) != t}
    if new_fds or len(after.fds) != len(before.fds):
        found.append(
            f"open fds {len(before.fds)} -> {len(after.fds)}; new or changed (fd: target): {new_fds}"
        )
    if after.cgroups - before.cgroups:
        found.append(f"cgroups left behind: {sorted(after.cgroups - before.cgroups)}")
    return found


async def _warm_up() -> None:
    async with anyns.open_supervisor() as sup:
        spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", "cat"])
        await sup.run(spec, stdin=b"warm-up", capture_stdout=True, capture_stderr=True)


@pytest.fixture(scope="session")
def warmed_up(capability: str | None) -> None:
    """Run one container once per session, so lazily opened fds exist before any baseline."""
    if capability is None:
        trio.run(_warm_up)


@pytest.fixture
def integration_guard(capability: str | None, warmed_up: None) -> Iterator[None]:
    """Skip without the capability; fail the test if it leaked processes, mounts, fds…"""
    if capability is not None:
        skip_or_fail(capability)
    before = snapshot()
    yield
    found = leaks(before, snapshot())
    if found:
        pytest.fail("the test leaked:\n- " + "\n- ".join(found), pytrace=False)


@pytest.fixture
async def sup() -> AsyncIterator[anyns.Supervisor]:
    """A supervisor for one test."""
    async with anyns.open_supervisor() as supervisor:
        yield supervisor
