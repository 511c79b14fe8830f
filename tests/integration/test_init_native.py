"""The init is an exec'd static C program (anyns/_native/init.c), not a fork of the zygote.

A fork of the zygote carried its heap: cached plans of other containers, their
environment included, readable from /proc/1/mem by a container that keeps
CAP_SYS_PTRACE. These tests check what the exec'd init holds and shows, and
the modes it runs in: pid 1 of a container, the waiter of a rootless exec, and
the child subreaper of a rootless container without a pid namespace.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable
from functools import partial
from typing import Any

import _rootless
import pytest
import trio
from _rootless import readable_by_all, script_env, staged
from _util import PYTHON, read, read_lines, sh, sh_spec

import anyns
from anyns import _init

#: run inside container B: scan every readable mapping of pid 1 for the secret (read from stdin, so that it
#: never reaches B's own init) and for B's own canary (its environment: the init holds that, which shows
#: the scan does read the init's memory)
SCAN = textwrap.dedent(
    """
    import json, os, sys
    secret = sys.stdin.readline().strip().encode()
    canary = os.environ["CANARY_B"].encode()
    found = {"secret": 0, "canary": 0, "scanned": 0, "regions": 0}
    with open("/proc/1/maps") as maps, open("/proc/1/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if fields[1][0] != "r" or line.rstrip().endswith("[vsyscall]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            found["regions"] += 1
            found["scanned"] += len(data)
            found["secret"] += data.count(secret)
            found["canary"] += data.count(canary)
    print(json.dumps(found))
    """
)
PTRACE_CAPABILITIES = anyns.DEFAULT_CAPABILITIES | {"CAP_SYS_PTRACE"}
#: the installed init, as /proc/PID/exe names it
INSTALLED = os.path.realpath(_init.BINARY)
ALL_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def _memfd_noexec() -> int:
    try:
        return int(read("/proc/sys/vm/memfd_noexec"))
    except OSError:
        return 0


def _children(pid: int) -> list[int]:
    return [int(p) for p in read(f"/proc/{pid}/task/{pid}/children").split()]


async def test_a_container_finds_no_secret_of_another_in_its_init(sup: anyns.Supervisor) -> None:
    """Container A runs with TENANT_A_API_KEY in its environment; container B, keeping CAP_SYS_PTRACE, scans all
    of its own pid 1's memory: B's own environment is there, A's secret is not (a fork of the zygote had it)."""
    secret, canary = secrets.token_hex(24), secrets.token_hex(24)
    async with trio.open_nursery() as nursery:
        tenant_a = await nursery.start(partial(sup.run, anyns.ContainerSpec(
            argv=["sleep", "1000"], env={"PATH": "/usr/bin:/bin", "TENANT_A_API_KEY": secret}), check=False))
        done = await sup.run(
            anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", SCAN], capabilities=PTRACE_CAPABILITIES,
                                env={"PATH": "/usr/bin:/bin", "CANARY_B": canary}),
            stdin=secret.encode() + b"\n", capture_stdout=True, capture_stderr=True, check=False)
        tenant_a.kill()
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["canary"] > 0, found  # the scan did read the init's memory
    assert found["secret"] == 0, found


async def test_the_init_shows_a_plain_command_line(sup: anyns.Supervisor) -> None:
    """/proc/1/cmdline is ``anyns-init`` and nothing else: no interpreter, venv path, pid or cgroup of the
    supervisor; seen the same from the host and from inside."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec("cat /proc/1/cmdline; echo; exec sleep 1000"),
                                          stdout=anyns.PIPE, check=False))
        assert await read_lines(box.stdout, 1) == ["anyns-init\0"]
        assert read(f"/proc/{box.pid}/cmdline") == b"anyns-init\0"
        assert read(f"/proc/{box.pid}/comm") == b"anyns-init\n"
        box.kill()
    assert box.stdout is not None
    await box.stdout.aclose()


async def test_the_init_binary_is_a_sealed_copy_nobody_can_write(sup: anyns.Supervisor) -> None:
    """/proc/PID/exe of the init is a sealed memfd (runc CVE-2019-5736): no write from the host, nor from a
    container that keeps CAP_SYS_PTRACE (and so may open its pid 1's exe)."""
    if _memfd_noexec() >= 2:
        pytest.skip("vm.memfd_noexec=2 refuses executable memfds: anyns uses the installed file")
    probe = ("import errno, os\ntry:\n    os.open('/proc/1/exe', os.O_WRONLY)\n    print('writable')\n"
             "except OSError as e:\n    print(errno.errorcode[e.errno])\n")
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["sleep", "1000"]), check=False))
        assert os.readlink(f"/proc/{box.pid}/exe").startswith("/memfd:anyns-init")
        fd = os.open(f"/proc/{box.pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
        try:
            assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & ALL_SEALS == ALL_SEALS
        finally:
            os.close(fd)
        with pytest.raises(OSError):
            os.open(f"/proc/{box.pid}/exe", os.O_WRONLY | os.O_CLOEXEC)
        inside = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", probe],
                                                   capabilities=PTRACE_CAPABILITIES),
                               capture_stdout=True, capture_stderr=True, check=False)
        box.kill()
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() != b"writable"


def _private_kib(pid: int) -> int:
    rollup = read(f"/proc/{pid}/smaps_rollup").decode()
    fields = dict(line.split(":", 1) for line in rollup.splitlines()[1:])
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty"))


async def test_the_init_costs_at_most_256_kib_of_private_memory(sup: anyns.Supervisor) -> None:
    """Private_Clean + Private_Dirty of pid 1 (smaps_rollup, read from the host): the design's goal, 256 KiB.

    Two containers run: a page mapped by one process alone counts as private, so a lone init would show the
    whole text of the static binary (~620 KiB of glibc), which every init shares; what one init costs is
    what it does not share with another.
    """
    async with trio.open_nursery() as nursery:
        boxes = [await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["sleep", "1000"]), check=False))
                 for _ in range(2)]
        private = [_private_kib(box.pid) for box in boxes]
        for box in boxes:
            box.kill()
    assert all(0 < kib <= 256 for kib in private), f"{private} KiB"


async def test_the_program_inherits_neither_the_status_pipe_nor_the_error_channel(sup: anyns.Supervisor) -> None:
    """The program (pid 2) holds 0, 1 and 2 only; the init holds its status pipe only."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["sleep", "1000"]), check=False))
        (program,) = _children(box.pid)
        fds: list[str] = []
        with trio.move_on_after(10):  # sleep's own start (setlocale) opens and closes files
            while (fds := sorted(os.listdir(f"/proc/{program}/fd"))) != ["0", "1", "2"]:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert fds == ["0", "1", "2"]
        assert os.listdir(f"/proc/{box.pid}/fd") == ["3"]
        box.kill()


async def test_without_init_the_program_is_pid_1(sup: anyns.Supervisor) -> None:
    """init=False: no init binary at all, the program itself is pid 1."""
    done = await sh(sup, "echo $$; cat /proc/1/comm", init=False)
    assert done.stdout == b"1\nsh\n", done.stderr


async def test_path_search_under_the_init_keeps_eacces_and_moves_on(sup: anyns.Supervisor,
                                                                    tmp_path: pathlib.Path) -> None:
    """Like execvp: a PATH entry whose file is not executable is skipped (EACCES remembered), a later one runs;
    with none that runs, the error is EACCES, not the ENOENT of a later entry."""
    (tmp_path / "true").write_text("#!/bin/sh\n")
    (tmp_path / "true").chmod(0o644)
    mounts = [anyns.Bind(str(tmp_path), "/opt/t", readonly=True)]
    done = await sup.run(anyns.ContainerSpec(argv=["true"], mounts=mounts, env={"PATH": "/opt/t:/usr/bin:/bin"}))
    assert done.returncode == 0
    with pytest.raises(anyns.ExecError) as info:
        await sup.run(anyns.ContainerSpec(argv=["true"], mounts=mounts, env={"PATH": "/opt/t:/nowhere"}))
    assert (info.value.step, info.value.syscall, info.value.errno, info.value.path) == ("exec", "execve", 13, "true")


async def test_the_init_runs_in_a_root_without_a_libc(sup: anyns.Supervisor, tmp_path: pathlib.Path,
                                                      make_busybox_root: Callable[[pathlib.Path], pathlib.Path]
                                                      ) -> None:
    """The init is statically linked: a busybox directory root (no libc.so) runs it as pid 1."""
    root = make_busybox_root(tmp_path / "root")
    done = await sup.run(anyns.ContainerSpec(argv=["/bin/sh", "-c", "echo $$ $PPID; cat /proc/1/comm"],
                                             rootfs=anyns.DirRootfs(str(root)), env={"PATH": "/bin"}),
                         capture_stdout=True, capture_stderr=True, check=False)
    assert (done.returncode, done.stdout) == (0, b"2 1\nanyns-init\n"), done.stderr


@pytest.mark.parametrize("fields", [{}, {"capabilities": anyns.ALL_CAPABILITIES}, {"seccomp": None}],
                         ids=["clone3-enosys", "clone3-allowed", "no-filter"])
async def test_the_init_starts_the_program_under_every_filter(sup: anyns.Supervisor, fields: dict[str, Any]) -> None:
    """glibc's posix_spawn tries clone3 first: the default filter answers ENOSYS (without CAP_SYS_ADMIN) and it
    falls back to clone; with CAP_SYS_ADMIN or no filter clone3 itself works. The program is pid 2 each time."""
    done = await sh(sup, "echo $$ $PPID", **fields)
    assert (done.returncode, done.stdout) == (0, b"2 1\n"), done.stderr


async def test_without_an_executable_memfd_the_init_runs_from_the_installed_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """vm.memfd_noexec=2 refuses executable memfds: the zygote then execs the installed file through an
    O_RDONLY|O_CLOEXEC fd, which execveat runs as well (forced here with ANYNS_FORCE_FALLBACK=init-file)."""
    monkeypatch.setenv("ANYNS_FORCE_FALLBACK", "init-file")
    async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec("echo $$ $PPID; exec sleep 1000"), stdout=anyns.PIPE,
                                          check=False))
        assert await read_lines(box.stdout, 1) == ["2 1"]
        assert os.readlink(f"/proc/{box.pid}/exe") == INSTALLED
        assert read(f"/proc/{box.pid}/cmdline") == b"anyns-init\0"
        box.kill()
    assert box.stdout is not None
    await box.stdout.aclose()


def test_doctor_reports_the_init() -> None:
    """doctor: the init binary, its size, and that it runs from a sealed memfd copy."""
    from anyns._doctor import _init_binary

    finding = _init_binary()
    assert finding.name == "init" and _init.BINARY in finding.detail and "KiB" in finding.detail
    if _memfd_noexec() < 2:
        assert finding.level == "ok" and "sealed memfd" in finding.detail


async def test_a_missing_init_binary_fails_the_supervisor_at_start(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: pathlib.Path) -> None:
    """A source checkout never built: open_supervisor raises ZygoteError saying to pip install -e ."""
    from anyns import _zygote_client

    monkeypatch.setattr(_zygote_client, "INIT_BINARY", str(tmp_path / "anyns-init"))
    with pytest.raises(anyns.ZygoteError, match=r"pip install -e \."):
        async with anyns.open_supervisor():
            pass


#: run by hand: exec the init (argv[1]) with the control record for status fd argv[2] and error fd argv[3],
#: the candidates /nowhere/a and /nowhere/b, argv ["prog", "x"], environment K=v
EXEC_INIT = textwrap.dedent(
    """
    import ctypes, sys
    from anyns import _init
    from anyns._sys import _libc
    # the control record spawn.c writes: flags, status fd, error fd, candidates, argc
    control = b"ANYNS_INIT=0 %d %d 2 2" % (int(sys.argv[2]), int(sys.argv[3]))
    envp = [control, b"/nowhere/a", b"/nowhere/b", b"prog", b"x", b"K=v"]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.execve(sys.argv[1].encode(), _libc.string_array([_init.ARGV0]), _libc.string_array(envp))
    raise SystemExit("execve failed")
    """
)


def test_the_inits_failure_record_is_the_childs() -> None:
    """No candidate starts: init.c writes the record ``_protocol.encode_failure`` makes (one format for the
    supervisor), writes no status, exits 127; run by hand without its control record it says so and exits 2."""
    from anyns import _protocol

    status_r, status_w = os.pipe()
    error_r, error_w = os.pipe()
    try:
        done = subprocess.run([sys.executable, "-c", EXEC_INIT, _init.BINARY, str(status_w),
                               str(error_w)], pass_fds=(status_w, error_w), capture_output=True, timeout=30)
        os.close(status_w)
        os.close(error_w)
        status_w = error_w = -1
        assert done.returncode == 127, done.stderr
        assert os.read(error_r, 8192) == _protocol.encode_failure("exec", "execve", "prog", errno.ENOENT,
                                                                  os.strerror(errno.ENOENT))
        assert os.read(status_r, 64) == b""
    finally:
        for fd in (status_r, status_w, error_r, error_w):
            if fd >= 0:
                os.close(fd)
    by_hand = subprocess.run([_init.BINARY], capture_output=True, timeout=30)
    assert by_hand.returncode == 2 and b"anyns" in by_hand.stderr


# --------------------------------------------------------------------------- rootless: waiter and subreaper

ROOTLESS_SCRIPT = textwrap.dedent(
    """
    import functools, json, os, sys, time
    import anyns, trio

    def say(**record):
        print(json.dumps(record), flush=True)

    def gone(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0] == "Z"
        except FileNotFoundError:
            return True

    NO_PID = anyns.Namespaces.DEFAULT & ~anyns.Namespaces.PID

    async def main():
        async with anyns.open_supervisor() as sup:
            # A rootless exec: its waiter is the init program; killed, it takes the program with it.
            async with trio.open_nursery() as nursery:
                box = await nursery.start(functools.partial(sup.run, check=False, capture_stderr=True),
                                          anyns.ContainerSpec(argv=["sleep", "1000"]))
                done = await box.exec(["sh", "-c", "echo ran"], capture_stdout=True, check=False)
                say(step="exec", returncode=done.returncode, stdout=done.stdout.decode())
                waiter = await nursery.start(functools.partial(box.exec, ["sleep", "1000"], capture_stderr=True,
                                                               check=False))
                with open(f"/proc/{waiter.pid}/cmdline", "rb") as f:
                    cmdline = f.read().decode()
                with open(f"/proc/{waiter.pid}/task/{waiter.pid}/children") as f:
                    (program,) = (int(p) for p in f.read().split())
                waiter.kill()
                await waiter.wait()
                deadline = time.monotonic() + 10
                while not gone(program) and time.monotonic() < deadline:
                    await trio.sleep(0.01)
                say(step="waiter", cmdline=cmdline, program_gone=gone(program), returncode=waiter.returncode)
                box.kill()

            # No pid namespace: the init is a child subreaper; what the program left behind dies with it.
            # (stderr captured everywhere: a leftover must not hold this script's own.)
            async def leftover(step, run, **fields):
                try:
                    with trio.fail_after(20):
                        done = await run(["sh", "-c", "sleep 1000 & echo $!; exit 3"], capture_stdout=True,
                                         capture_stderr=True, check=False, **fields)
                    say(step=step, returncode=done.returncode, sleeper_gone=gone(int(done.stdout)),
                        stderr=done.stderr.decode())
                except trio.TooSlowError:
                    say(step=step, hung=True)

            def run_spec(argv, **options):
                init = options.pop("init", True)
                return sup.run(anyns.ContainerSpec(argv=argv, namespaces=NO_PID, init=init), **options)

            await leftover("subreaper", run_spec)
            # init=False changes nothing there: the program is not pid 1 of anything to be spared.
            await leftover("subreaper-init-false", run_spec, init=False)

            # An exec into such a container: its leftovers die with the exec'd program too.
            async with trio.open_nursery() as nursery:
                box = await nursery.start(functools.partial(sup.run, check=False, capture_stderr=True),
                                          anyns.ContainerSpec(argv=["sleep", "1000"], namespaces=NO_PID))
                await leftover("exec-no-pidns", box.exec)
                # the subreaper forwards signals and reports the program's exact status
                started = await nursery.start(functools.partial(
                    box.exec, ["sh", "-c", "trap 'exit 5' TERM; echo ready; while :; do sleep 0.02; done"],
                    stdout=anyns.PIPE, capture_stderr=True, check=False))
                assert await started.stdout.receive_some() == b"ready\\n"
                started.terminate()
                say(step="exec-no-pidns-signal", returncode=await started.wait())
                await started.stdout.aclose()
                box.kill()

            # Killing such a container kills its program (PR_SET_PDEATHSIG), not only the init.
            async with trio.open_nursery() as nursery:
                box = await nursery.start(functools.partial(sup.run, check=False, stdout=anyns.PIPE,
                                                            capture_stderr=True),
                                          anyns.ContainerSpec(argv=["sh", "-c", "echo $$; exec sleep 1000"],
                                                              namespaces=NO_PID))
                program = int((await box.stdout.receive_some()).decode())
                box.kill()
                await box.wait()
                deadline = time.monotonic() + 10
                while not gone(program) and time.monotonic() < deadline:
                    await trio.sleep(0.01)
                say(step="kill-no-pidns", program_gone=gone(program), returncode=box.returncode)
                await box.stdout.aclose()

    trio.run(main)
    """
)


@pytest.fixture(scope="module")
def rootless_records() -> dict[str, dict[str, Any]]:
    """Run ROOTLESS_SCRIPT once as nobody; its JSON records by step."""
    python = _rootless.rootless_python()
    with staged(ROOTLESS_SCRIPT, "anyns-init-native-") as path:
        readable_by_all(path)
        done = subprocess.run(
            ["setpriv", f"--reuid={_rootless.NOBODY}", f"--regid={_rootless.NOBODY}", "--clear-groups", python,
             "-P", os.path.join(path, "script.py")],
            capture_output=True, text=True, timeout=180, cwd=path, env=script_env(path),
        )
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["step"]: r for r in (json.loads(line) for line in done.stdout.splitlines())}


def test_a_rootless_exec_still_works_and_its_program_dies_with_its_waiter(
        rootless_records: dict[str, dict[str, Any]]) -> None:
    """The waiter of a rootless exec is the init program too (plain command line); SIGKILLed, its program dies."""
    assert (rootless_records["exec"]["returncode"], rootless_records["exec"]["stdout"]) == (0, "ran\n")
    waiter = rootless_records["waiter"]
    assert waiter["cmdline"] == "anyns-init\0"
    assert waiter["returncode"] == -9
    assert waiter["program_gone"]


def test_a_rootless_container_without_pid_namespace_leaves_nothing_behind(
        rootless_records: dict[str, dict[str, Any]]) -> None:
    """No pid namespace, no cgroup (rootless): `sleep 1000 &` is killed when the program ends, run does not hang
    on the sleeper's copy of stdout, and returncode is the program's; with init=False too."""
    subreaper = rootless_records["subreaper"]
    assert not subreaper.get("hung"), "run hung on the background sleeper's stdout"
    assert (subreaper["returncode"], subreaper["sleeper_gone"]) == (3, True), subreaper["stderr"]
    init_false = rootless_records["subreaper-init-false"]
    assert not init_false.get("hung"), "run hung on the background sleeper's stdout"
    assert (init_false["returncode"], init_false["sleeper_gone"]) == (3, True), init_false["stderr"]


def test_a_rootless_exec_into_a_container_without_pid_namespace_leaves_nothing_behind(
        rootless_records: dict[str, dict[str, Any]]) -> None:
    """The exec waiter reaps like the subreaper there: the sleeper dies when the exec'd program ends; signals
    reach the program, whose exact status comes back."""
    record = rootless_records["exec-no-pidns"]
    assert not record.get("hung"), "exec hung on the background sleeper's stdout"
    assert (record["returncode"], record["sleeper_gone"]) == (3, True), record["stderr"]
    assert rootless_records["exec-no-pidns-signal"]["returncode"] == 5


def test_killing_a_rootless_container_without_pid_namespace_kills_its_program(
        rootless_records: dict[str, dict[str, Any]]) -> None:
    """Container.kill() SIGKILLs the subreaper init; the program dies with it (PR_SET_PDEATHSIG)."""
    record = rootless_records["kill-no-pidns"]
    assert record["returncode"] == -9
    assert record["program_gone"]
