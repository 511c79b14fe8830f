"""Rootless mode: the supervisor runs as an unprivileged user (nobody), dropped to with setpriv.

The supervisor, its zygote and its containers run as uid 65534; every container
gets a user namespace mapping that uid (and gid) to root. The test needs a
Python that user can run with trio, attrs and pyroute2: a venv made from the
system's /usr/bin/python3 (the CI's own Python lives under /root, which is 0700),
kept at ``ANYNS_ROOTLESS_VENV`` (default /tmp/anyns-rootless-venv; made here if
missing, which needs PyPI). The anyns package is copied beside the script, in a
directory that user can read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import _rootless
import pytest
from _rootless import NOBODY, readable_by_all, script_env, skip_or_fail, staged

import anyns
import anyns.testing

SCRIPT = textwrap.dedent(
    """
    import functools, json, os, select, sys
    import anyns, trio

    def say(**record):
        print(json.dumps(record), flush=True)

    async def main(busybox_root):
        say(step="uid", uid=os.getuid(), euid=os.geteuid())
        async with anyns.open_supervisor() as sup:
            done = await sup.run(anyns.ContainerSpec(
                argv=["sh", "-c", "id -u; id -g; cat /proc/self/uid_map; hostname; echo $$; test -c /dev/null "
                      "&& echo dev-ok; touch /tmp/x && echo tmp-ok; touch /data/y && echo data-ok; "
                      "grep -E 'Seccomp:|NoNewPrivs:' /proc/self/status; "
                      "cat /proc/1/environ >/dev/null 2>&1 && echo init-readable || echo init-private"],
                hostname="rootless-box", mounts=[anyns.Tmpfs("/data")]), capture_stdout=True, capture_stderr=True,
                check=False)
            say(step="run", returncode=done.returncode, stdout=done.stdout.decode(), stderr=done.stderr.decode())

            code = ("import socket\\ns = socket.create_server(('127.0.0.1', 0))\\n"
                    "c = socket.create_connection(s.getsockname())\\na, _ = s.accept()\\na.sendall(b'pong')\\n"
                    "print(c.recv(4).decode())")
            done = await sup.run(anyns.ContainerSpec(argv=["/usr/bin/python3", "-I", "-c", code]),
                                 capture_stdout=True, capture_stderr=True, check=False)
            say(step="loopback", returncode=done.returncode, stdout=done.stdout.decode(), stderr=done.stderr.decode())

            done = await sup.run(anyns.ContainerSpec(argv=["/bin/sh", "-c", "cat /marker; id -u"],
                                                     rootfs=anyns.DirRootfs(busybox_root), env={"PATH": "/bin"}),
                                 capture_stdout=True, capture_stderr=True, check=False)
            say(step="dirrootfs", returncode=done.returncode, stdout=done.stdout.decode(), stderr=done.stderr.decode())

            # The busybox root as an overlay's lower layer: ours (uid 65534), so root inside may change it.
            script = "cat /marker; echo changed >> /marker && tail -1 /marker; echo new > /created && cat /created"
            done = await sup.run(anyns.ContainerSpec(argv=["/bin/sh", "-c", script],
                                                     rootfs=anyns.OverlayRootfs([busybox_root]), env={"PATH": "/bin"}),
                                 capture_stdout=True, capture_stderr=True, check=False)
            with open(os.path.join(busybox_root, "marker")) as f:
                lower_after = f.read()
            say(step="overlay", returncode=done.returncode, stdout=done.stdout.decode(), stderr=done.stderr.decode(),
                lower_after=lower_after)

            # Files before start on a HostRootfs and a read-only DirRootfs; /tmp capped.
            files = {"/box/run": anyns.File(b"#!/bin/sh\\necho hi\\n", mode=0o755), "/etc/app.conf": "conf",
                     "/tmp/t": b"t"}
            for name, rootfs in (("files-host", anyns.HostRootfs()), ("files-dir", anyns.DirRootfs(busybox_root))):
                done = await sup.run(anyns.ContainerSpec(
                    argv=["/bin/sh", "-c", "/box/run; cat /etc/app.conf /tmp/t; echo; stat -f -c '%b %S' /tmp"],
                    rootfs=rootfs, env={"PATH": "/bin"}, files=files, tmp_size="8M"),
                    capture_stdout=True, capture_stderr=True, check=False)
                say(step=name, returncode=done.returncode, stdout=done.stdout.decode(), stderr=done.stderr.decode(),
                    host_box=os.path.exists(os.path.join(busybox_root, "box")))

            async with trio.open_nursery() as nursery:
                box = await nursery.start(functools.partial(sup.run, check=False),
                                          anyns.ContainerSpec(argv=["sleep", "1000"]))
                done = await box.exec(["sh", "-c", "id -u; readlink /proc/self/ns/pid; readlink /proc/2/ns/pid; "
                                             "readlink /proc/1/ns/pid 2>/dev/null || echo init-private"],
                                      capture_stdout=True, capture_stderr=True, check=False)
                say(step="exec", returncode=done.returncode, stdout=done.stdout.decode(),
                    stderr=done.stderr.decode(), pid_ns=box.namespaces["pid"])
                box.terminate()
                say(step="terminate", returncode=await box.wait())

            # An exec into a container that has died but is not reaped yet (no checkpoint in between):
            # the namespace files the supervisor holds keep its namespaces, but nothing may run there.
            for name, namespaces in (("dead-exec", anyns.Namespaces.DEFAULT),
                                     ("dead-exec-no-pidns", anyns.Namespaces.DEFAULT & ~anyns.Namespaces.PID)):
                async with trio.open_nursery() as nursery:
                    box = await nursery.start(functools.partial(sup.run, check=False),
                                              anyns.ContainerSpec(argv=["sleep", "1000"], namespaces=namespaces))
                    os.kill(box.pid, 9)
                    select.select([box._pidfd], [], [], 5)  # dead, and the loop has not run: not reaped
                    try:
                        done = await box.exec(["echo", "ran in a dead container"], capture_stdout=True,
                                              check=False)
                        say(step=name, error=None, stdout=done.stdout.decode())
                    except anyns.AnynsError as e:
                        say(step=name, error=type(e).__name__, message=str(e))

            for what, spec in (("bridge", anyns.ContainerSpec(argv=["true"], network=anyns.Bridge())),
                               ("limits", anyns.ContainerSpec(argv=["true"], limits=anyns.Limits(pids=8))),
                               ("ranges", anyns.ContainerSpec(argv=["true"], user_ns=anyns.DEFAULT_ID_MAP))):
                try:
                    await sup.run(spec)
                    say(step=what, error=None)
                except anyns.AnynsError as e:
                    say(step=what, error=type(e).__name__, message=str(e))

            with trio.move_on_after(0.2):  # cancelled while running: killed and reaped before this returns
                await sup.run(anyns.ContainerSpec(argv=["sleep", "1000"]))
            say(step="cancelled", running=len(sup._running))

    trio.run(main, sys.argv[1])
    """
)


@pytest.fixture(scope="module")
def rootless_python() -> str:
    """A Python with trio, attrs and pyroute2 that uid 65534 can run (made once if missing)."""
    return _rootless.rootless_python()


@pytest.fixture(scope="module")
def rootless_records(rootless_python: str) -> dict[str, dict[str, Any]]:
    """Run the script once as nobody; its JSON records by step."""
    with staged(SCRIPT, "anyns-rootless-") as path:
        try:
            root = anyns.testing.busybox_rootfs(os.path.join(path, "root"))
        except anyns.testing.BusyboxMissing as e:
            skip_or_fail(f"{e} (Debian package busybox-static)")
            raise
        with open(os.path.join(root, "marker"), "w") as f:
            f.write("inside\n")
        readable_by_all(root)
        for top, dirs, files in os.walk(root):  # the overlay's lower layer belongs to the unprivileged user
            for name in (*dirs, *files):
                os.lchown(os.path.join(top, name), NOBODY, NOBODY)
        os.chown(root, NOBODY, NOBODY)
        done = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", rootless_python,
             "-P", os.path.join(path, "script.py"), root],
            capture_output=True, text=True, timeout=120, cwd=path, env=script_env(path),
        )
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["step"]: r for r in (json.loads(line) for line in done.stdout.splitlines())}


def test_the_supervisor_really_is_unprivileged(rootless_records: dict[str, dict[str, Any]]) -> None:
    """The script ran as uid 65534 (and the test process is still root)."""
    assert (rootless_records["uid"]["uid"], rootless_records["uid"]["euid"]) == (NOBODY, NOBODY)
    assert os.geteuid() == 0 or sys.platform != "linux"


def test_a_container_runs_as_root_of_its_own_user_namespace(rootless_records: dict[str, dict[str, Any]]) -> None:
    """Root inside, our uid mapped to it alone; hostname, /proc, /dev, /tmp, a Tmpfs and the hardening work."""
    run = rootless_records["run"]
    assert run["returncode"] == 0, run["stderr"]
    lines = run["stdout"].splitlines()
    assert lines[:2] == ["0", "0"]
    assert lines[2].split() == ["0", str(NOBODY), "1"]
    assert lines[3:8] == ["rootless-box", "2", "dev-ok", "tmp-ok", "data-ok"]
    assert [line.split()[-1] for line in lines[8:10]] == ["1", "2"]  # NoNewPrivs, Seccomp (filter)
    # The init (the same host uid as the program) is not dumpable: the program cannot read its
    # environment or memory.
    assert lines[10] == "init-private"


def test_loopback_and_a_directory_root_work_rootless(rootless_records: dict[str, dict[str, Any]]) -> None:
    """lo is up in the container's network namespace; a DirRootfs (busybox) is its whole view."""
    assert (rootless_records["loopback"]["returncode"], rootless_records["loopback"]["stdout"]) == (0, "pong\n"), \
        rootless_records["loopback"]["stderr"]
    assert rootless_records["dirrootfs"]["stdout"] == "inside\n0\n", rootless_records["dirrootfs"]["stderr"]


def test_an_overlay_root_works_rootless(rootless_records: dict[str, dict[str, Any]]) -> None:
    """An OverlayRootfs (userxattr) over a lower layer the user owns: read, changed and created inside, the lower
    layer untouched on the host."""
    overlay = rootless_records["overlay"]
    assert overlay["returncode"] == 0, overlay["stderr"]
    assert overlay["stdout"] == "inside\nchanged\nnew\n"
    assert overlay["lower_after"] == "inside\n"


def test_files_and_a_capped_tmp_work_rootless(rootless_records: dict[str, dict[str, Any]]) -> None:
    """files= on a HostRootfs and a read-only DirRootfs, and tmp_size, from an unprivileged supervisor; the host
    directory gets no /box."""
    for name in ("files-host", "files-dir"):
        record = rootless_records[name]
        assert (record["returncode"], record["stdout"]) == (0, f"hi\nconft\n{8 << 20 >> 12} 4096\n"), record
        assert not record["host_box"]


def test_exec_and_signals_work_rootless(rootless_records: dict[str, dict[str, Any]]) -> None:
    """exec runs as root inside the container's pid namespace (entered through the namespace files the container
    sent, its init being not dumpable); ``namespaces`` is read from them; terminate() reaches the program through
    the init."""
    exec_ = rootless_records["exec"]
    assert exec_["returncode"] == 0, exec_["stderr"]
    uid, own_ns, program_ns, init = exec_["stdout"].split()
    assert uid == "0" and own_ns == program_ns == exec_["pid_ns"]
    assert init == "init-private"  # not dumpable: not even root of the container sees into it
    assert rootless_records["terminate"]["returncode"] == -15


def test_exec_into_a_dead_container_says_it_has_exited(rootless_records: dict[str, dict[str, Any]]) -> None:
    """Killed but not reaped yet: its namespace files still hold its namespaces, yet an exec fails (nothing
    runs in a dead container), saying it has exited, with or without a pid namespace of its own."""
    for step in ("dead-exec", "dead-exec-no-pidns"):
        record = rootless_records[step]
        assert record["error"] is not None, record
        assert "has exited" in record["message"], record


def test_what_needs_privileges_fails_early_and_says_so(rootless_records: dict[str, dict[str, Any]]) -> None:
    """A bridge, cgroup limits and a wide id map are UnsupportedError with a reason; cancellation still reaps."""
    for step, words in (("bridge", "CAP_NET_ADMIN"), ("limits", "cgroup"), ("ranges", "newuidmap")):
        record = rootless_records[step]
        assert record["error"] == "UnsupportedError", record
        assert words in record["message"], record
    assert rootless_records["cancelled"]["running"] == 0


SUBID_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import anyns, trio

    async def main():
        async with anyns.open_supervisor() as sup:
            done = await sup.run(anyns.ContainerSpec(
                argv=["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; touch /tmp/f && "
                      "chown 1000:1000 /tmp/f && stat -c '%u %g' /tmp/f"]),
                capture_stdout=True, capture_stderr=True, check=False)
            print(json.dumps({"returncode": done.returncode, "stdout": done.stdout.decode(),
                              "stderr": done.stderr.decode()}))

    trio.run(main)
    """
)


@contextlib.contextmanager
def _granted_subids(start: int, count: int) -> Iterator[None]:
    """/etc/subuid and /etc/subgid grant nobody ``start:count`` for the block; both files are restored exactly."""
    saved = {}
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                saved[path] = f.read()
        except FileNotFoundError:
            saved[path] = None
    try:
        for path, text in saved.items():
            with open(path, "a") as f:
                if text and not text.endswith("\n"):
                    f.write("\n")
                f.write(f"nobody:{start}:{count}\n")
        yield
    finally:
        for path, text in saved.items():
            if text is None:
                os.unlink(path)
            else:
                with open(path, "w") as f:
                    f.write(text)


def test_wide_maps_through_newuidmap_when_subids_are_granted(rootless_python: str) -> None:
    """With /etc/subuid and /etc/subgid ranges for the user and newuidmap/newgidmap (uidmap), a rootless
    container gets our uid as root plus the whole range (like podman): a file can be chowned to uid 1000 inside."""
    if shutil.which("newuidmap") is None or shutil.which("newgidmap") is None:
        skip_or_fail("newuidmap/newgidmap are missing (Debian package uidmap)")
    with staged(SUBID_SCRIPT, "anyns-rootless-") as path, _granted_subids(400000, 65536):
        done = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", rootless_python,
             "-P", os.path.join(path, "script.py")],
            capture_output=True, text=True, timeout=120, cwd=path, env=script_env(path),
        )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout)
    assert record["returncode"] == 0, record["stderr"]
    lines = [line.split() for line in record["stdout"].splitlines()]
    expected = [["0", str(NOBODY), "1"], ["1", "400000", "65536"]]
    assert lines[:4] == expected * 2
    assert lines[4] == ["1000", "1000"]
