"""Exhaustion of namespaces: the kernel refuses a new one; a typed error, back-pressure, and recovery.

The kernel caps the namespaces a user may own with ``user.max_*_namespaces``
(``/proc/sys/user``). Those limits belong to a user namespace and count every
namespace made below it, so a test can lower them without touching the host's:

* ``LAUNCHER`` (run as root) forks a child into a new user namespace U that
  maps root and nobody to themselves; as root of U the child sets U's
  ``user.max_net_namespaces`` to ``LIMIT``, drops to nobody and runs
  ``SCRIPT`` with the rootless Python (see ``_rootless``);
* ``SCRIPT`` is a rootless supervisor: every container it starts gets a user
  namespace and a network namespace below U, so at most ``LIMIT`` can exist.

What the host shows afterwards is checked by the leak guard as everywhere. The
kernel's other way to refuse a namespace, ENOMEM, is not made to happen here:
no memory limit small enough to refuse one spares the supervisor; anyns maps
it to ``SetupError.resource == "memory"`` by the same rule (unit-tested).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import _rootless
import pytest
from _rootless import script_env, staged

LIMIT = 4  # network namespaces in U

LAUNCHER = textwrap.dedent(
    r"""
    import ctypes, os, sys

    limit, python, *command = sys.argv[1:]
    CLONE_NEWUSER = 0x10000000
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        if libc.unshare(CLONE_NEWUSER) != 0:
            print("unshare(CLONE_NEWUSER):", os.strerror(ctypes.get_errno()), file=sys.stderr)
            os._exit(125)
        os.write(ready_w, b"u")
        os.read(mapped_r, 1)
        # root of U: U's own limit (the host's /proc/sys/user/max_net_namespaces is not this one)
        with open("/proc/sys/user/max_net_namespaces", "w") as f:
            f.write(limit)
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        os.execv(python, [python, *command])
    os.read(ready_r, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write("0 0 1\n65534 65534 1\n")
    os.write(mapped_w, b"m")
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)

SCRIPT = textwrap.dedent(
    r"""
    import functools, json, os, sys
    import anyns, trio

    def say(**record):
        print(json.dumps(record), flush=True)

    def describe(exc):
        return {"type": type(exc).__name__, "anyns": isinstance(exc, anyns.AnynsError), "message": str(exc),
                "step": getattr(exc, "step", None), "syscall": getattr(exc, "syscall", None),
                "errno": getattr(exc, "errno", None), "hint": getattr(exc, "hint", None),
                "resource": getattr(exc, "resource", None)}

    def unowned(sup):
        # processes of ours that are neither the zygote nor a running container: a partial spawn
        known = {sup._zygote.process.pid, *(box.pid for box in sup._running)}
        out = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split() if int(p) not in known]
        return out

    SLEEPER = anyns.ContainerSpec(argv=["sleep", "1000"])
    ECHO = anyns.ContainerSpec(argv=["echo", "hi"])

    async def main(limit):
        say(step="limit", value=open("/proc/sys/user/max_net_namespaces").read().strip(), uid=os.getuid())
        async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
            # 1. fill U: start sleepers until the kernel refuses a namespace
            held, refused = [], None
            while len(held) <= limit + 2:
                try:
                    with trio.fail_after(20):
                        held.append(await nursery.start(functools.partial(sup.run, SLEEPER, check=False)))
                except trio.TooSlowError:
                    refused = {"hang": True}
                    break
                except Exception as exc:
                    refused = describe(exc)
                    break
            zygote = sup._zygote.process.pid
            say(step="full", held=len(held), refused=refused, alive=[box.returncode is None for box in held],
                unowned=unowned(sup), zygote=zygote)

            # 2. one container ends: its namespaces return (a few ms after it is reaped) and spawning works
            #    again, with the same supervisor and zygote
            held.pop().kill()
            tries, result = 0, None
            with trio.move_on_after(10):
                while True:
                    tries += 1
                    try:
                        result = (await sup.run(ECHO, capture_stdout=True)).stdout.decode()
                        break
                    except anyns.SetupError as exc:
                        result = describe(exc)
                        await trio.sleep(0.01)
            say(step="recovered", result=result, tries=tries, zygote=sup._zygote.process.pid,
                alive=[box.returncode is None for box in held], unowned=unowned(sup))

            # 3. the limit stays full: with max_containers, a refusal is retried only while a recent
            #    exit explains it, and for at most about a second; then it fails as without it
            async def fill():
                # sleepers until LIMIT of them run: then the limit is full of live containers, with no
                # exited one's namespace still on its way out (refusals until then are retried)
                with trio.fail_after(20):
                    while len(held) < limit:
                        try:
                            held.append(await nursery.start(functools.partial(sup.run, SLEEPER, check=False)))
                        except anyns.SetupError:
                            await trio.sleep(0.01)

            async with anyns.open_supervisor(max_containers=8) as other:
                attempts = 0
                run = other._run

                async def counting(*args, **kwargs):
                    nonlocal attempts
                    attempts += 1
                    return await run(*args, **kwargs)

                other._run = counting

                async def stuck(when, since_exit=None):
                    nonlocal attempts
                    attempts, outcome, started = 0, {}, trio.current_time()
                    try:
                        with trio.fail_after(10):
                            await other.run(ECHO, capture_stdout=True)
                    except trio.TooSlowError:
                        outcome = {"hang": True}
                    except anyns.AnynsError as exc:
                        outcome = describe(exc)
                    say(step="stuck", when=when, outcome=outcome, attempts=attempts,
                        seconds=trio.current_time() - started, since_exit=since_exit)

                await fill()
                await stuck("no exit")  # no exit in this supervisor yet: refused at once
                # one slot frees up: `other` runs a container in it (an exit it has seen); then the
                # limit is filled again, for good
                held.pop().kill()
                with trio.fail_after(10):
                    while True:
                        try:
                            await other.run(ECHO, capture_stdout=True)
                            break
                        except anyns.SetupError:
                            await trio.sleep(0.01)
                exited = trio.current_time()
                await fill()
                since_exit = trio.current_time() - exited
                await stuck("after an exit", since_exit=since_exit)
            for box in held:
                box.kill()
                await box.wait()

        # 4. a burst of three times the limit, without and with back-pressure
        for max_containers in (None, limit):
            await trio.sleep(0.5)  # the namespaces of the containers above are freed
            outcomes, peak = [], 0
            async with anyns.open_supervisor(max_containers=max_containers) as sup:
                async def one():
                    spec = anyns.ContainerSpec(argv=["sh", "-c", "sleep 0.1; echo hi"])
                    try:
                        outcomes.append((await sup.run(spec, capture_stdout=True)).stdout.decode())
                    except anyns.AnynsError as exc:
                        outcomes.append(describe(exc))

                async def watch():
                    nonlocal peak
                    while True:
                        peak = max(peak, len(sup._running))
                        await trio.sleep(0.002)

                async with trio.open_nursery() as burst:
                    watcher = trio.CancelScope()
                    async def watching():
                        with watcher:
                            await watch()
                    burst.start_soon(watching)
                    async with trio.open_nursery() as spawns:
                        for _ in range(3 * limit):
                            spawns.start_soon(one)
                    watcher.cancel()
            say(step="burst", max_containers=max_containers, outcomes=outcomes, peak=peak)

    trio.run(main, int(sys.argv[1]))
    """
)


@pytest.fixture(scope="module")
def records() -> dict[str, list[dict[str, Any]]]:
    """Run the scenario once; its JSON records by step (a step may repeat)."""
    python = _rootless.rootless_python()
    with staged(SCRIPT, "anyns-nslimit-") as path:
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(LIMIT), python, "-P", os.path.join(path, "script.py"), str(LIMIT)],
            capture_output=True, text=True, timeout=180, cwd=path, env=script_env(path),
        )
    if done.returncode == 125:
        _rootless.skip_or_fail(f"no user namespace for the test: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, list[dict[str, Any]]] = {}
    for line in done.stdout.splitlines():
        record = json.loads(line)
        out.setdefault(record["step"], []).append(record)
    return out


def test_the_limit_is_the_test_user_namespaces_own(records: dict[str, list[dict[str, Any]]]) -> None:
    """The supervisor ran as nobody and saw U's limit; the host's limit is untouched."""
    assert records["limit"][0] == {"step": "limit", "value": str(LIMIT), "uid": _rootless.NOBODY}
    with open("/proc/sys/user/max_net_namespaces") as f:
        assert int(f.read()) > LIMIT


def test_out_of_namespaces_is_a_typed_error_naming_the_limit(records: dict[str, list[dict[str, Any]]]) -> None:
    """Past the limit: a SetupError (never a hang) with ENOSPC, ``resource == "namespaces"`` and a hint that
    names the sysctl and its value, after at most LIMIT containers started."""
    full = records["full"][0]
    assert 1 <= full["held"] <= LIMIT, full
    refused = full["refused"]
    assert refused is not None and not refused.get("hang"), full
    assert refused["type"] == "SetupError" and refused["anyns"], refused
    assert refused["errno"] == errno.ENOSPC, refused
    assert refused["syscall"] in ("clone3", "unshare"), refused
    assert refused["resource"] == "namespaces", refused
    assert f"user.max_net_namespaces={LIMIT}" in refused["hint"], refused
    assert "max_containers" in refused["hint"], refused


def test_out_of_namespaces_loses_nothing(records: dict[str, list[dict[str, Any]]]) -> None:
    """The refused spawn leaves no process behind; the running containers keep running."""
    full = records["full"][0]
    assert full["unowned"] == [], full
    assert full["alive"] and all(full["alive"]), full


def test_spawning_works_again_once_a_namespace_is_free(records: dict[str, list[dict[str, Any]]]) -> None:
    """One container ended: the next spawn works, with the same zygote (no restart), the others still running."""
    full, recovered = records["full"][0], records["recovered"][0]
    assert recovered["result"] == "hi\n", recovered
    assert recovered["zygote"] == full["zygote"]
    assert all(recovered["alive"]) and recovered["unowned"] == [], recovered


def test_max_containers_turns_refusals_into_waiting(records: dict[str, list[dict[str, Any]]]) -> None:
    """A burst of 3 x LIMIT: without back-pressure some spawns are refused (typed, resource "namespaces");
    with ``max_containers=LIMIT`` all of them run, never more than LIMIT at once. That needs the retry too:
    the kernel frees an exited container's network namespace a little after its reap."""
    unlimited, limited = records["burst"]
    assert unlimited["max_containers"] is None and limited["max_containers"] == LIMIT
    refused = [o for o in unlimited["outcomes"] if o != "hi\n"]
    assert refused, unlimited  # the burst really is too big for the limit...
    assert all(o["resource"] == "namespaces" for o in refused), refused
    assert limited["outcomes"] == ["hi\n"] * (3 * LIMIT), limited  # ...and back-pressure makes it fit
    assert 1 <= limited["peak"] <= LIMIT, limited


def test_a_limit_that_stays_full_still_fails_with_max_containers(records: dict[str, list[dict[str, Any]]]) -> None:
    """With max_containers, a refusal is not retried without a recent exit (one attempt), and after an exit
    only for about a second: the spawn then fails, typed, instead of waiting for ever."""
    no_exit, after_exit = records["stuck"]
    for record in (no_exit, after_exit):
        assert not record["outcome"].get("hang"), record
        assert record["outcome"]["type"] == "SetupError" and record["outcome"]["resource"] == "namespaces", record
    assert no_exit["attempts"] == 1 and no_exit["seconds"] < 1, no_exit
    if after_exit["since_exit"] < 0.8:  # (refilling the limit took less than the retry window)
        assert after_exit["attempts"] >= 2, after_exit  # retried: an exit could have explained it
    assert after_exit["seconds"] < 3, after_exit  # but not for long
