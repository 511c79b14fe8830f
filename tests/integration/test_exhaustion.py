"""Exhaustion: out of file descriptors, out of pids. A typed, explanatory error; then, the resource back, it works.

Each scenario runs a supervisor in a subprocess of its own (``SCRIPT``), which
squeezes itself and reports, as one JSON line per spawn, what each spawn
did: the supervisor is never restarted in between, so "works again" means
the same supervisor and the same zygote.

* **fds**: the supervisor lowers its own ``RLIMIT_NOFILE`` soft limit to its
  open fds plus 0, 1, 2 ... (so every fd a spawn needs in the supervisor, in
  turn, is the one that fails), spawns, and raises the limit again;
* **zygote fds**: the same, with the zygote's limit (``prlimit``);
* **pids**: the supervisor moves itself into a pids cgroup the test made
  (``anyns-…`` in its name, so the leak check would see it; removed in a
  ``finally``), then sets ``pids.max`` to ``pids.current`` plus 0, 1, 2 ...
  before each spawn, and back to ``max`` after it.

Running out of namespaces (``user.max_*_namespaces``) is tested in
``test_namespace_exhaustion.py``, with the back-pressure of
``open_supervisor(max_containers=...)``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

SCRIPT = textwrap.dedent(
    r"""
    import functools, json, os, resource, sys, trio, anyns

    mode = sys.argv[1]

    def fds():
        return len(os.listdir("/proc/self/fd")) - 1

    def children(zygote, hub):
        out = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split() if int(p) not in (zygote, hub)]
        return out

    def describe(exc):
        cause = exc.__cause__
        return {"type": type(exc).__name__, "anyns": isinstance(exc, anyns.AnynsError), "message": str(exc),
                "step": getattr(exc, "step", None), "errno": getattr(exc, "errno", None),
                "hint": getattr(exc, "hint", None), "cause_errno": getattr(cause, "errno", None)}

    def cgroup_write(name, value):
        with open(os.path.join(sys.argv[2], name), "w") as f:
            f.write(value)

    def cgroup_read(name):
        with open(os.path.join(sys.argv[2], name)) as f:
            return f.read().strip()

    async def attempt(sup, spec):
        try:
            with trio.fail_after(20):
                done = await sup.run(spec, capture_stdout=True)
        except trio.TooSlowError:
            return {"hang": True}
        except Exception as exc:
            return describe(exc)
        return {"ok": done.stdout.decode()}

    async def main():
        if mode.startswith("pids"):
            cgroup_write("cgroup.procs", "0")  # this process, and so its zygote and containers
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
            hub_pid = None
            spec = anyns.ContainerSpec(argv=["echo", "hi"])
            if mode == "pids-bridge":
                hub = await nursery.start(functools.partial(sup.run, check=False),
                                          anyns.ContainerSpec(argv=["sleep", "1000"]))
                hub_pid = hub.pid
                kept = hub.keep_namespace("net", sys.argv[3])
                spec = anyns.ContainerSpec(argv=["echo", "hi"],
                                           network=anyns.Bridge("ex0", "10.252.0.0/24", netns=kept.path))
            else:
                await attempt(sup, spec)  # warm: what is opened once is open
            zygote = sup._zygote.process.pid
            for headroom in range(int(os.environ["HEADROOM"])):
                if mode == "nofile":
                    resource.setrlimit(resource.RLIMIT_NOFILE, (fds() + headroom, hard))
                elif mode == "zygote-nofile":
                    resource.prlimit(zygote, resource.RLIMIT_NOFILE,
                                     (len(os.listdir(f"/proc/{zygote}/fd")) + headroom, hard))
                else:
                    cgroup_write("pids.max", str(int(cgroup_read("pids.current")) + headroom))
                try:
                    result = await attempt(sup, spec)
                finally:
                    if mode == "nofile":
                        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                    elif mode == "zygote-nofile":
                        resource.prlimit(zygote, resource.RLIMIT_NOFILE, (soft, hard))
                    else:
                        cgroup_write("pids.max", "max")
                result.update(headroom=headroom, left=children(zygote, hub_pid),
                              zygote=sup._zygote.process.pid if sup._zygote else None)
                print(json.dumps(result), flush=True)
            result = await attempt(sup, spec)
            result.update(headroom=None, left=children(zygote, hub_pid), zygote=sup._zygote.process.pid)
            print(json.dumps(result), flush=True)
            if hub_pid is not None:
                kept.release()
                hub.kill()

    trio.run(main)
    """
)

SCRIPT_TIMEOUT = 120  # seconds for a whole scenario: each spawn in it has 20


def run_scenario(mode: str, *args: str, headroom: int = 12) -> list[dict[str, Any]]:
    """Run ``SCRIPT`` in ``mode``; its JSON lines, the last one being the spawn after the resource came back."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode, *args], capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT, env={**os.environ, "HEADROOM": str(headroom)})
    assert proc.returncode == 0, f"the supervisor process failed ({proc.returncode}):\n{proc.stderr}"
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == headroom + 1, proc.stdout
    return results


def failures(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if "ok" not in r]


# --------------------------------------------------------------------------- file descriptors


@pytest.fixture(scope="module")
def nofile() -> list[dict[str, Any]]:
    """The fds scenario, run once for the tests below."""
    return run_scenario("nofile")


def test_out_of_fds_fails_and_recovers_without_a_restart(nofile: list[dict[str, Any]]) -> None:
    """With no fd to spare, the spawn fails (no hang, the supervisor lives on); with the limit raised again,
    the same supervisor and zygote spawn again."""
    *squeezed, after = nofile
    assert not any(r.get("hang") for r in nofile)
    assert "ok" not in squeezed[0], squeezed[0]  # out of fds, it cannot work
    assert squeezed[-1].get("ok") == "hi\n"  # with enough headroom it works (the squeeze is what failed)
    assert after.get("ok") == "hi\n"
    assert {r["zygote"] for r in nofile} == {after["zygote"]}


def test_out_of_fds_error_is_typed_and_names_the_cause(nofile: list[dict[str, Any]]) -> None:
    """Every failed spawn is an anyns error that says EMFILE and whose hint speaks of file descriptors."""
    bad = [r for r in failures(nofile)
           if not (r["anyns"] and "Too many open files" in r["message"] and "file descriptor" in (r["hint"] or ""))]
    assert bad == []


def test_out_of_fds_leaves_no_container(nofile: list[dict[str, Any]]) -> None:
    """After each failed spawn, no container process of it is left (running or unreaped)."""
    assert [(r["headroom"], r["left"], r.get("type")) for r in nofile if r["left"]] == []


@pytest.fixture(scope="module")
def zygote_nofile() -> list[dict[str, Any]]:
    """The zygote fds scenario, run once for the tests below."""
    return run_scenario("zygote-nofile")


def test_zygote_out_of_fds_fails_typed_and_recovers(zygote_nofile: list[dict[str, Any]]) -> None:
    """The zygote out of fds: a SetupError (never a hang, never a dead zygote), nothing left; with its limit
    raised again it serves the next spawn."""
    *squeezed, after = zygote_nofile
    assert not any(r.get("hang") for r in zygote_nofile)
    assert "ok" not in squeezed[0]
    assert all(r["type"] in ("SetupError", "ExecError") for r in failures(zygote_nofile)), failures(zygote_nofile)
    assert any(r["errno"] == errno.EMFILE for r in failures(zygote_nofile))
    assert all(r["left"] == [] for r in zygote_nofile)
    assert squeezed[-1].get("ok") == "hi\n" and after.get("ok") == "hi\n"
    assert {r["zygote"] for r in zygote_nofile} == {after["zygote"]}


def test_zygote_out_of_fds_error_names_the_cause(zygote_nofile: list[dict[str, Any]]) -> None:
    """Every failure says EMFILE (errno and text) and has a hint about file descriptors."""
    bad = [r for r in failures(zygote_nofile)
           if not (r["errno"] == errno.EMFILE and "file descriptor" in (r["hint"] or ""))]
    assert bad == []


# --------------------------------------------------------------------------- pids


def _pids_hierarchy() -> str | None:
    """Where a pids cgroup for the test can be made: the v1 pids hierarchy, or cgroup2 if it offers pids."""
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split(" - ") for line in f.read().splitlines()]
    for left, right in mounts:
        fstype, _source, options = right.split()[:3]
        if fstype == "cgroup" and "pids" in options.split(","):
            return left.split()[4]
    for left, right in mounts:
        point = left.split()[4]
        if right.split()[0] == "cgroup2":
            with contextlib.suppress(OSError), open(os.path.join(point, "cgroup.subtree_control")) as f:
                if "pids" in f.read().split():
                    return point
    return None


def _remove_when_empty(path: str, timeout: float) -> bool:
    """rmdir ``path`` once its processes are gone (they die with their supervisor); False if not in time.

    It waits on the pidfds of what the cgroup still holds; only when it lists
    nothing and is still busy (the kernel finishing an exit; a v1 cgroup has no
    "empty" event) does it poll.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        pidfds = []
        with open(os.path.join(path, "cgroup.procs")) as f:
            for pid in f.read().split():
                with contextlib.suppress(ProcessLookupError):
                    pidfds.append(os.pidfd_open(int(pid)))
        try:
            select.select(pidfds, [], [], max(0.0, min(0.005 if not pidfds else 1.0, deadline - time.monotonic())))
        finally:
            for fd in pidfds:
                os.close(fd)


@pytest.fixture
def pids_cgroup(skip_or_fail: Callable[[str], None]) -> Iterator[str]:
    """A pids cgroup made for the test, removed (after its processes) whatever happens."""
    top = _pids_hierarchy()
    if top is None:
        skip_or_fail("no pids cgroup controller (v1, or enabled in cgroup2) on this host")
    assert top is not None
    path = os.path.join(top, f"exhaustion-anyns-{os.getpid()}")
    os.mkdir(path)
    try:
        yield path
    finally:
        assert _remove_when_empty(path, timeout=10), f"{path} could not be removed"


def test_out_of_pids_fails_typed_and_recovers(pids_cgroup: str) -> None:
    """pids.max reached: the clone fails with SetupError (step "clone", EAGAIN, a hint naming the pids limit),
    or the program's start with ExecError (EAGAIN); with the limit raised the same supervisor spawns again."""
    results = run_scenario("pids", pids_cgroup, headroom=5)
    *squeezed, after = results
    assert not any(r.get("hang") for r in results)
    first = squeezed[0]
    assert (first["type"], first["step"], first["errno"], first["cause_errno"]) == (
        "SetupError", "clone", errno.EAGAIN, errno.EAGAIN), first
    assert "pids cgroup" in first["hint"] and first["message"].startswith("clone: clone3")
    for r in failures(results):
        assert r["type"] in ("SetupError", "ExecError") and r["errno"] == errno.EAGAIN and r["hint"], r
    assert all(r["left"] == [] for r in results)
    assert squeezed[-1].get("ok") == "hi\n" and after.get("ok") == "hi\n"
    assert {r["zygote"] for r in results} == {after["zygote"]}


def test_out_of_pids_with_a_bridge_fails_typed(pids_cgroup: str, tmp_path: Any) -> None:
    """Bridge containers out of pids: only typed anyns errors, and the bridge works once the limit is raised."""
    results = run_scenario("pids-bridge", pids_cgroup, str(tmp_path / "hubnet"), headroom=4)
    assert not any(r.get("hang") for r in results)
    assert results[-1].get("ok") == "hi\n"
    assert all(r["left"] == [] for r in results)
    assert [r for r in failures(results) if not r["anyns"]] == []

