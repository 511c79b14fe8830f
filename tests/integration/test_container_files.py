"""Files of a container: ``Container.read_file``/``write_file`` while it runs, ``run(collect=...)`` after its program.

Paths resolve inside the container's root (openat2 RESOLVE_IN_ROOT): a
symlink the program planted, absolute or ``../..``, or as a directory on the
way, never reaches a host file.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import stat
import subprocess
import textwrap
from collections.abc import Callable
from typing import Any

import _rootless
import pytest
import trio
from _rootless import NOBODY, script_env, staged
from _util import sh_spec

import anyns

READY = "echo ready; exec sleep 1000"


async def _started(sup: anyns.Supervisor, nursery: trio.Nursery, spec: anyns.ContainerSpec,
                   **kwargs: Any) -> anyns.Container:
    """``spec`` started; its program has printed ``ready`` (what it did before is done)."""
    box: anyns.Container = await nursery.start(functools.partial(sup.run, spec, stdout=anyns.PIPE, check=False,
                                                                 **kwargs))
    assert box.stdout is not None
    assert await box.stdout.receive_some(6) == b"ready\n"
    await box.stdout.aclose()
    return box


@pytest.fixture
def busybox_root(tmp_path: pathlib.Path, make_busybox_root: Callable[[pathlib.Path], pathlib.Path]) -> pathlib.Path:
    """A busybox root whose /etc/passwd is its own (not the host's); the container may write it."""
    root = make_busybox_root(tmp_path / "root")
    (root / "etc" / "passwd").write_text("root:x:0:0:the container's own:/root:/bin/sh\n")
    return root


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _busybox(root: pathlib.Path, script: str, **fields: Any) -> anyns.ContainerSpec:
    return anyns.ContainerSpec(argv=["/bin/sh", "-c", script], rootfs=anyns.DirRootfs(str(root), readonly=False),
                               env={"PATH": "/bin"}, **fields)


# --------------------------------------------------------------------------- read_file / write_file


async def test_write_then_read_a_file_of_a_running_container(sup: anyns.Supervisor) -> None:
    """write_file makes a file with the mode asked for (umask aside); the program sees it; read_file reads
    what the program wrote; an existing file is truncated and gets the new mode."""
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, sh_spec("echo from-inside > /tmp/inner; " + READY))
        assert await box.read_file("/tmp/inner") == b"from-inside\n"
        assert await box.read_file("tmp/inner") == b"from-inside\n"  # relative: from the root
        await box.write_file("/tmp/made", b"hello\n", mode=0o600)
        seen = await box.exec(["sh", "-c", "stat -c '%a %u' /tmp/made; cat /tmp/made"], capture_stdout=True)
        assert seen.stdout == b"600 0\nhello\n"
        await box.write_file("/tmp/made", b"x", mode=0o640)
        assert await box.read_file("/tmp/made") == b"x"
        seen = await box.exec(["stat", "-c", "%a", "/tmp/made"], capture_stdout=True)
        assert seen.stdout == b"640\n"
        await box.write_file(pathlib.PurePosixPath("/tmp/empty"), b"")  # a PathLike, no data
        assert await box.read_file("/tmp/empty") == b""
        box.kill()


async def test_missing_files_and_directories(sup: anyns.Supervisor) -> None:
    """A missing file is FileNotFoundError, as open says; so is writing into a missing directory (it is not
    made); a directory is IsADirectoryError; a FIFO is refused without blocking."""
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, sh_spec("mkfifo /tmp/fifo; " + READY))
        with pytest.raises(FileNotFoundError):
            await box.read_file("/tmp/nothing")
        with pytest.raises(FileNotFoundError):
            await box.write_file("/tmp/no/such/dir", b"x")
        with pytest.raises(IsADirectoryError):
            await box.read_file("/tmp")
        with pytest.raises(IsADirectoryError):
            await box.write_file("/tmp", b"x")
        with pytest.raises(anyns.AnynsError, match="not a regular file"):
            await box.read_file("/tmp/fifo")
        with pytest.raises(OSError):  # read-only: the host's /usr
            await box.write_file("/usr/anyns-test", b"x")
        assert not _exists("/usr/anyns-test")
        box.kill()


async def test_a_file_larger_than_max_size_is_refused_unread(sup: anyns.Supervisor) -> None:
    """More than max_size: AnynsError, found from its size: a sparse 1 TiB file is not read (that would take
    hours). At the bound it is read; the default bound is 16 MiB."""
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, sh_spec(
            "truncate -s 1T /tmp/huge; printf 0123456789 > /tmp/ten; head -c 16777217 /dev/zero > /tmp/big; "
            + READY))
        start = trio.current_time()
        with pytest.raises(anyns.AnynsError, match="more than max_size"):
            await box.read_file("/tmp/huge", max_size=1 << 40 - 1)
        with pytest.raises(anyns.AnynsError, match="more than max_size"):
            await box.read_file("/tmp/huge")
        assert trio.current_time() - start < 5
        assert await box.read_file("/tmp/ten", max_size=10) == b"0123456789"
        with pytest.raises(anyns.AnynsError, match="more than max_size=9"):
            await box.read_file("/tmp/ten", max_size=9)
        with pytest.raises(anyns.AnynsError, match="more than max_size=16777216"):
            await box.read_file("/tmp/big")
        assert len(await box.read_file("/tmp/big", max_size=1 << 25)) == 16777217
        box.kill()


async def test_planted_symlinks_never_reach_host_files(sup: anyns.Supervisor, busybox_root: pathlib.Path,
                                                       tmp_path: pathlib.Path) -> None:
    """Absolute and ``../..`` symlinks, and a symlinked directory on the way, resolve inside the container's
    root: reads give the container's own file or FileNotFoundError, writes change the container's file or fail;
    the host's files are untouched."""
    secret = tmp_path / "host-secret"
    secret.write_text("host secret\n")
    host_passwd = _read("/etc/passwd")
    depth = "../" * 12
    script = (f"ln -s {secret} /tmp/abs; ln -s {depth}{str(secret).lstrip('/')} /tmp/rel; "
              f"ln -s {tmp_path} /tmp/dirlink; ln -s /etc/passwd /tmp/passwd; "
              f"ln -s {depth}etc/passwd /tmp/relpasswd; ln -s /etc /tmp/etclink; ln -s / /tmp/top; "
              "ln -s /proc/sys/kernel/core_pattern /tmp/core; ln -s /proc/1/comm /tmp/comm; "
              "ln -s /proc/1/root/etc/passwd /tmp/magic; " + READY)
    own_passwd = (busybox_root / "etc" / "passwd").read_bytes()
    core_pattern = _read("/proc/sys/kernel/core_pattern")
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, _busybox(busybox_root, script))
        for path in ("/tmp/abs", "/tmp/rel", "/tmp/dirlink/host-secret", "/tmp/top" + str(secret)):
            with pytest.raises(FileNotFoundError):
                await box.read_file(path)
            with pytest.raises(FileNotFoundError):  # its directory does not exist in the container
                await box.write_file(path, b"pwned\n")
        for path in ("/tmp/passwd", "/tmp/relpasswd", "/tmp/etclink/passwd", "/tmp/top/etc/passwd",
                     "/../../etc/passwd"):
            assert await box.read_file(path) == own_passwd
        await box.write_file("/tmp/etclink/passwd", b"rewritten by the supervisor\n")
        with pytest.raises(OSError):  # read-only in the container (EROFS)
            await box.write_file("/tmp/core", b"|/bin/pwned")
        with pytest.raises(anyns.AnynsError, match="kernel filesystem"):  # proc: a write as host root
            await box.write_file("/tmp/comm", b"renamed")
        with pytest.raises(anyns.AnynsError, match="kernel filesystem"):
            await box.read_file("/tmp/core")
        with pytest.raises(OSError):  # a magic link of /proc is not followed
            await box.read_file("/tmp/magic")
        box.kill()
    assert secret.read_text() == "host secret\n"
    assert _read("/etc/passwd") == host_passwd
    assert _read("/proc/sys/kernel/core_pattern") == core_pattern
    assert (busybox_root / "etc" / "passwd").read_bytes() == b"rewritten by the supervisor\n"  # its own
    assert not (tmp_path / "host-secret-pwned").exists()


async def test_files_of_a_container_that_has_exited(sup: anyns.Supervisor) -> None:
    """After the exit: AnynsError saying so (its root is gone)."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(functools.partial(sup.run, sh_spec("true")))
        await box.wait()
        with pytest.raises(anyns.AnynsError, match="has exited"):
            await box.read_file("/tmp/x")
        with pytest.raises(anyns.AnynsError, match="has exited"):
            await box.write_file("/tmp/x", b"")


async def test_a_user_namespace_container_owns_what_is_written(sup: anyns.Supervisor) -> None:
    """With a user namespace, a file write_file makes belongs to root inside (not to an unmapped id)."""
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, sh_spec(READY, user_ns=anyns.DEFAULT_ID_MAP))
        await box.write_file("/tmp/made", b"x", mode=0o644)
        seen = await box.exec(["stat", "-c", "%u %g", "/tmp/made"], capture_stdout=True)
        assert seen.stdout == b"0 0\n"
        box.kill()


# --------------------------------------------------------------------------- collect


async def test_collect_reads_files_after_a_normal_exit(sup: anyns.Supervisor) -> None:
    """The files are read after the program's end, /tmp included (it dies with the mount namespace); a missing
    one is left out; what the program left running is gone first; the status is the program's."""
    script = "echo '{\"ok\": 1}' > /tmp/out.json; mkdir /tmp/d; printf x > /tmp/d/y; sleep 1000 & exit 3"
    done = await sup.run(sh_spec(script), collect=["/tmp/out.json", "/tmp/missing", "/tmp/d/y", "/tmp/d"],
                         check=False)
    assert done.returncode == 3
    assert dict(done.files) == {"/tmp/out.json": b'{"ok": 1}\n', "/tmp/d/y": b"x"}
    with pytest.raises(TypeError):
        done.files["/x"] = b""  # type: ignore[index]
    plain = await sup.run(sh_spec("true"))
    assert dict(plain.files) == {}


async def test_collect_after_a_timeout(sup: anyns.Supervisor) -> None:
    """A program that writes a file and then sleeps past its timeout: the file is collected, the verdict is
    "timeout", and nothing of the container is left."""
    start = trio.current_time()
    done = await sup.run(sh_spec("echo partial > /tmp/out; sleep 1000 & sleep 1000", timeout=0.5),
                         collect=["/tmp/out"], check=False)
    assert done.exceeded == "timeout"
    assert done.returncode == -9
    assert dict(done.files) == {"/tmp/out": b"partial\n"}
    assert trio.current_time() - start < 10


async def test_collect_after_a_timeout_with_a_grace(sup: anyns.Supervisor) -> None:
    """With stop_grace the program gets SIGTERM first; one that ignores it is ended after the grace, and the
    files are collected all the same."""
    script = "trap '' TERM; echo partial > /tmp/out; while :; do sleep 0.05; done"
    done = await sup.run(sh_spec(script, timeout=0.3, stop_grace=0.3), collect=["/tmp/out"], check=False)
    assert (done.exceeded, done.returncode) == ("timeout", -9)
    assert dict(done.files) == {"/tmp/out": b"partial\n"}


async def test_collect_after_the_cpu_budget_and_the_oom_killer(sup: anyns.Supervisor,
                                                               skip_or_fail: Callable[[str], None]) -> None:
    """Limits(cpu_time=) ends a busy program, the OOM killer a greedy one: the files are collected after both."""
    limits = anyns.Limits(memory="64M", cpu_time=0.3)
    try:
        busy = await sup.run(sh_spec("echo partial > /tmp/out; while :; do :; done", limits=limits),
                             collect=["/tmp/out"], check=False)
    except anyns.UnsupportedError as e:
        skip_or_fail(f"no cgroup for Limits(cpu_time=) here: {e}")
        raise
    assert (busy.exceeded, dict(busy.files)) == ("cpu_time", {"/tmp/out": b"partial\n"})
    greedy = await sup.run(sh_spec("echo partial > /tmp/out; exec python3 -c 'x = bytearray(200 << 20)'",
                                   limits=limits), collect=["/tmp/out"], check=False)
    assert greedy.oom_killed and dict(greedy.files) == {"/tmp/out": b"partial\n"}


async def test_collect_after_the_output_cap(sup: anyns.Supervisor) -> None:
    """max_output ends the program; the files are collected."""
    done = await sup.run(sh_spec("echo partial > /tmp/out; yes"), collect=["/tmp/out"], check=False,
                         capture_stdout=True, max_output=4096)
    assert done.exceeded == "output"
    assert dict(done.files) == {"/tmp/out": b"partial\n"}


async def test_collect_after_stop_and_not_after_kill(sup: anyns.Supervisor) -> None:
    """stop() past its grace ends the program but spares the init: the files are collected. kill() kills the
    init too: no files, the init's -9."""
    async with trio.open_nursery() as nursery:
        results: list[anyns.CompletedContainer] = []

        async def run(script: str, task_status: trio.TaskStatus[anyns.Container]) -> None:
            results.append(await sup.run(sh_spec(script), collect=["/tmp/s"], check=False, stdout=anyns.PIPE,
                                         task_status=task_status))

        box = await nursery.start(run, "trap '' TERM; echo s > /tmp/s; echo ready; while :; do sleep 0.05; done")
        assert box.stdout is not None and await box.stdout.receive_some(6) == b"ready\n"
        assert await box.stop(grace=0.2) == -9
        box = await nursery.start(run, "echo s > /tmp/s; echo ready; exec sleep 1000")
        assert box.stdout is not None and await box.stdout.receive_some(6) == b"ready\n"
        box.kill()
    stopped, killed = results
    assert dict(stopped.files) == {"/tmp/s": b"s\n"}
    assert (killed.returncode, dict(killed.files)) == (-9, {})


async def test_collect_resolves_inside_the_root(sup: anyns.Supervisor, busybox_root: pathlib.Path,
                                                tmp_path: pathlib.Path) -> None:
    """A collected path the program made a symlink to a host file gives the container's file or nothing; a file
    larger than 16 MiB fails the run (AnynsError) once the container is gone."""
    secret = tmp_path / "host-secret"
    secret.write_text("host secret\n")
    done = await sup.run(_busybox(busybox_root, f"ln -s {secret} /tmp/abs; ln -s /etc/passwd /tmp/pw"),
                         collect=["/tmp/abs", "/tmp/pw"])
    assert dict(done.files) == {"/tmp/pw": (busybox_root / "etc" / "passwd").read_bytes()}
    with pytest.raises(anyns.AnynsError, match=r"collect: .*more than max_size"):
        await sup.run(sh_spec("head -c 16777217 /dev/zero > /tmp/big"), collect=["/tmp/big"])


async def test_collect_cancelled_leaves_nothing(sup: anyns.Supervisor) -> None:
    """Cancelled while the program runs (or while it is held): killed, reaped, nothing left (the leak check)."""
    with trio.move_on_after(0.3):
        await sup.run(sh_spec("echo s > /tmp/s; sleep 1000"), collect=["/tmp/s"])
    with trio.move_on_after(0.3):
        await sup.run(sh_spec("sleep 1000", stop_grace=5), collect=["/tmp/s"])
    assert not sup._running


async def test_collect_needs_the_init(sup: anyns.Supervisor) -> None:
    """collect without the init as pid 1 (init=False, no pid namespace, a joined one) is a SpecError, before
    anything runs; so are relative paths and a lone string."""
    no_pid = anyns.Namespaces.DEFAULT & ~anyns.Namespaces.PID
    for spec in (sh_spec("true", init=False), sh_spec("true", namespaces=no_pid)):
        with pytest.raises(anyns.SpecError, match="collect"):
            await sup.run(spec, collect=["/tmp/x"])
    for bad in (["tmp/x"], "/tmp/x", [b"/tmp/x"]):
        with pytest.raises(anyns.SpecError, match="collect"):
            await sup.run(sh_spec("true"), collect=bad)  # type: ignore[arg-type]
    done = await sup.run(sh_spec("true", init=False), collect=[])  # nothing to collect: no init needed
    assert dict(done.files) == {}


async def test_collect_costs_one_plan_each(sup: anyns.Supervisor) -> None:
    """The same spec with and without collect: two plans (the init's mode differs), each cached."""
    spec = sh_spec("true")
    before = len(sup._plans)
    for _ in range(2):
        await sup.run(spec)
        await sup.run(spec, collect=["/tmp/x"])
    assert len(sup._plans) == before + 2


# --------------------------------------------------------------------------- rootless

ROOTLESS_SCRIPT = textwrap.dedent(
    """
    import functools, json, os, sys
    import anyns, trio

    def say(**record):
        print(json.dumps(record), flush=True)

    async def main(secret):
        async with anyns.open_supervisor() as sup:
            async with trio.open_nursery() as nursery:
                box = await nursery.start(functools.partial(
                    sup.run, anyns.ContainerSpec(argv=["sh", "-c", f"echo inner > /tmp/inner; ln -s {secret} "
                                                       "/tmp/abs; echo ready; exec sleep 1000"]),
                    stdout=anyns.PIPE, check=False))
                assert await box.stdout.receive_some(6) == b"ready\\n"
                await box.write_file("/tmp/made", b"made", mode=0o600)
                seen = await box.exec(["sh", "-c", "stat -c '%a %u' /tmp/made; cat /tmp/made"],
                                      capture_stdout=True)
                try:
                    await box.read_file("/tmp/abs")
                    symlink = "read"
                except FileNotFoundError:
                    symlink = "FileNotFoundError"
                try:
                    await box.write_file("/tmp/abs", b"pwned")
                except FileNotFoundError:
                    pass
                say(step="files", inner=(await box.read_file("/tmp/inner")).decode(), made=seen.stdout.decode(),
                    symlink=symlink)
                box.kill()
            done = await sup.run(anyns.ContainerSpec(argv=["sh", "-c", "echo out > /tmp/out; sleep 1000 & exit 4"]),
                                 collect=["/tmp/out", "/tmp/missing"], check=False)
            say(step="collect", returncode=done.returncode, files={k: v.decode() for k, v in done.files.items()})
            done = await sup.run(anyns.ContainerSpec(argv=["sh", "-c", "echo t > /tmp/t; sleep 1000"], timeout=0.3),
                                 collect=["/tmp/t"], check=False)
            say(step="timeout", exceeded=done.exceeded, files={k: v.decode() for k, v in done.files.items()})

    trio.run(main, sys.argv[1])
    """
)


def test_files_and_collect_rootless(tmp_path: pathlib.Path) -> None:
    """As nobody, the init is not dumpable and /proc/PID/root is closed: the child sends its root after the pivot,
    and read_file, write_file and collect (after an exit and after a timeout) work through it."""
    python = _rootless.rootless_python()
    secret = tmp_path / "host-secret"
    secret.write_text("host secret\n")
    os.chown(secret, NOBODY, NOBODY)  # nobody's own: only the root resolution keeps the container from it
    os.chmod(tmp_path, 0o755)
    with staged(ROOTLESS_SCRIPT, "anyns-rootless-files-") as path:
        done = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-P",
             os.path.join(path, "script.py"), str(secret)],
            capture_output=True, text=True, timeout=120, cwd=path, env=script_env(path))
    assert done.returncode == 0, done.stderr[-3000:]
    records = {r["step"]: r for r in (json.loads(line) for line in done.stdout.splitlines())}
    assert records["files"] == {"step": "files", "inner": "inner\n", "made": "600 0\nmade",
                                "symlink": "FileNotFoundError"}
    assert secret.read_text() == "host secret\n"
    assert records["collect"] == {"step": "collect", "returncode": 4, "files": {"/tmp/out": "out\n"}}
    assert records["timeout"] == {"step": "timeout", "exceeded": "timeout", "files": {"/tmp/t": "t\n"}}


async def test_collect_and_read_file_have_no_more_rights_than_the_program(
    sup: anyns.Supervisor, tmp_path: pathlib.Path,
) -> None:
    """A program running as uid 1000 links /tmp/out to a 0600 root file it cannot read: collect and read_file
    refuse it too (they open with the program's ids), and return its own files."""
    data = tmp_path / "data"
    data.mkdir()
    secret = data / "secret"
    secret.write_text("TOPSECRET\n")
    secret.chmod(0o600)
    spec = anyns.ContainerSpec(
        argv=["/bin/sh", "-c", "cat /data/secret; ln -s /data/secret /tmp/out; echo mine > /tmp/mine; "
                               "echo ready; exec sleep 1000"],
        user=anyns.User(1000, 1000), mounts=(anyns.Bind(str(data), "/data", readonly=True),))
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, spec)
        with pytest.raises(PermissionError):
            await box.read_file("/tmp/out")
        assert await box.read_file("/tmp/mine") == b"mine\n"
        box.kill()
    once = anyns.ContainerSpec(argv=["/bin/sh", "-c", "ln -s /data/secret /tmp/out; echo mine > /tmp/mine"],
                               user=anyns.User(1000, 1000), mounts=(anyns.Bind(str(data), "/data", readonly=True),))
    with pytest.raises(anyns.AnynsError, match="collect"):
        await sup.run(once, collect=["/tmp/out", "/tmp/mine"], check=False)
    done = await sup.run(once, collect=["/tmp/mine"], check=False)
    assert done.files == {"/tmp/mine": b"mine\n"}


async def test_write_file_cannot_rewrite_a_host_file_the_program_may_not_write(
    sup: anyns.Supervisor, tmp_path: pathlib.Path,
) -> None:
    """A program (uid 1000) links /tmp/in to a root-owned 0644 file on a writable bind: write_file is refused
    (PermissionError), the host file keeps its content and mode."""
    shared = tmp_path / "rw"
    shared.mkdir()
    shared.chmod(0o777)
    conf = shared / "conf"
    conf.write_text("original\n")
    conf.chmod(0o644)
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", "ln -s /rw/conf /tmp/in; echo ready; exec sleep 1000"],
                               user=anyns.User(1000, 1000), mounts=(anyns.Bind(str(shared), "/rw"),))
    async with trio.open_nursery() as nursery:
        box = await _started(sup, nursery, spec)
        with pytest.raises(PermissionError):
            await box.write_file("/tmp/in", b"OWNED\n", 0o4777)
        await box.write_file("/tmp/new", b"made\n")  # a file of its own: allowed, and the program's
        assert await box.read_file("/tmp/new") == b"made\n"
        box.kill()
    assert conf.read_text() == "original\n"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o644
