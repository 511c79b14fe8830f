"""The command line: ``python -m anyns run [options] -- CMD…``, ``demo`` and ``doctor``.

``run`` passes stdio through and exits with the container's status (128+N
when signal N killed it, like a shell). Through pipes it copies: the program
never holds this process's own stdio (a container can reopen an inherited fd
through ``/proc/self/fd``), except the terminal's other end with ``-t``. Errors are one line on stderr:
``anyns: <what failed> (hint: …)``, with exit status 125 for a setup or spec
error, 126 when the program is not executable, 127 when it is not found.
A budget that ran out has its own status (``EXIT_BUDGET``): 124 when the
time ran out (``--timeout``, as ``timeout(1)``) and likewise for the CPU
time (``--cpu-time``: isolate reports both as a time-out), 153 when the
output passed ``--max-output`` (128+SIGXFSZ, what ``ulimit -f`` gives); an
OOM kill keeps the program's status (137 when it ended the program).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import inspect
import json
import os
import signal
import sys
import termios
import time
import tty
from collections.abc import Sequence

import trio

from ._container import Container, namespaces_of
from ._errors import AnynsError, ContainerFailed, ExecError, format_size
from ._security_defaults import ALL_CAPABILITIES, DEFAULT_CAPABILITIES
from ._spec import (
    DEFAULT_PATH,
    DEFAULT_SECCOMP,
    DEFAULT_SHM_SIZE,
    DEFAULT_TMP_SIZE,
    MAX_FILES_SIZE,
    RLIM_INFINITY,
    Bind,
    Bridge,
    ContainerSpec,
    DirRootfs,
    File,
    HostNetwork,
    HostRootfs,
    IdMap,
    JoinNetwork,
    Limits,
    Loopback,
    Namespaces,
    OverlayRootfs,
    Tmpfs,
    User,
    parse_size,
)
from ._supervisor import PIPE, Supervisor, open_supervisor

EXIT_SETUP_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
#: the exit status of ``run`` when a budget ended the container (CompletedContainer.exceeded)
EXIT_BUDGET = {"timeout": 124, "cpu_time": 124, "output": 128 + signal.SIGXFSZ}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m anyns", description="Run Linux containers from trio.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one command in a container",
                              usage="python -m anyns run [options] -- CMD [ARG...]")
    run.add_argument("--rootfs", metavar="DIR", help="root filesystem directory (default: read-only host /usr)")
    run.add_argument("--rw", action="store_true", help="make the --rootfs directory writable")
    run.add_argument("--overlay", metavar="LOWER", action="append", default=[],
                     help="an overlay root on this read-only directory (repeat for more layers, top first)")
    run.add_argument("--upper", metavar="DIR", help="with --overlay: keep the container's changes in DIR/diff")
    run.add_argument("--hostname", metavar="NAME", help="hostname inside the container")
    run.add_argument("--domainname", metavar="NAME", help="NIS domain name inside the container")
    run.add_argument("--env", metavar="K=V", action="append", default=[],
                     help="environment variable (repeatable); the environment is otherwise just PATH")
    run.add_argument("--cwd", metavar="DIR", default="/", help="working directory inside")
    run.add_argument("--bind", metavar="SRC:DST", action="append", default=[], help="bind-mount a host path")
    run.add_argument("--ro-bind", metavar="SRC:DST", action="append", default=[],
                     help="bind-mount a host path read-only")
    run.add_argument("--tmpfs", metavar="DIR", action="append", default=[], help="mount a tmpfs")
    run.add_argument("--file", metavar="SRC:DST", action="append", default=[],
                     help="place a copy of host file SRC at DST before the program starts (on a tmpfs of the "
                          "container's own; SRC's permission bits; 16 MiB in all)")
    run.add_argument("--tmp-size", metavar="SIZE", default=DEFAULT_TMP_SIZE,
                     help="the size of /tmp, e.g. 64M (default 256M)")
    run.add_argument("--shm-size", metavar="SIZE", default=DEFAULT_SHM_SIZE,
                     help="the size of /dev/shm, e.g. 64M (default 64M)")
    run.add_argument("--rlimit", metavar="NAME=SOFT[:HARD]", action="append", default=[],
                     help="a resource limit as prlimit names it, e.g. nofile=1024:4096 or core=unlimited")
    run.add_argument("--memory", metavar="SIZE", help="memory limit, e.g. 256M (a cgroup of its own; OOM past it)")
    run.add_argument("--pids", metavar="N", type=int, help="at most N tasks (processes and threads) at once")
    run.add_argument("--cpus", metavar="CPUS", type=float, help="CPU time limit in CPUs, e.g. 0.5")
    run.add_argument("--timeout", metavar="S", type=float,
                     help="stop the container after S seconds (SIGTERM, then SIGKILL); exit status 124")
    run.add_argument("--cpu-time", metavar="S", type=float,
                     help="kill the container once all its processes together used S seconds of CPU "
                          "(a cgroup of its own); exit status 124")
    run.add_argument("--max-output", metavar="SIZE",
                     help="kill the container once its stdout or its stderr passes SIZE bytes (e.g. 1M); "
                          "what came before is passed on; exit status 153")
    run.add_argument("--no-init", dest="init", action="store_false",
                     help="run the program itself as pid 1 (default: a small init is pid 1 and the program pid 2)")
    run.add_argument("--userns", action="store_true",
                     help="a user namespace of its own (root inside = uid 100000 outside; see --map)")
    run.add_argument("--map", metavar="INSIDE:OUTSIDE:COUNT", action="append", default=[],
                     help="a uid and gid range of the user namespace (repeatable; implies --userns)")
    run.add_argument("--user", metavar="UID[:GID]", help="run the program as this uid (and gid) inside")
    run.add_argument("--cap-add", metavar="CAP", action="append", default=[],
                     help="keep a capability beyond the default set (ALL: every one)")
    run.add_argument("--cap-drop", metavar="CAP", action="append", default=[],
                     help="drop a capability of the default set (ALL: every one)")
    run.add_argument("--seccomp", choices=("default", "none"), default="default",
                     help="the seccomp filter: anyns's default profile, or none")
    run.add_argument("--share-net", action="store_true", help="use the host's network namespace")
    run.add_argument("--net", metavar="MODE", default=None,
                     help="loopback (default), host, bridge[:SUBNET[:NAME]] or a netns file to join")
    run.add_argument("--json-status", action="store_true",
                     help="print JSON lines to stderr: the host pid and namespace ids at start, the exit status "
                          "at the end, with the budget that ran out if one did "
                          "(\"exceeded\": \"timeout\", \"cpu_time\", \"output\" or \"memory\")")
    run.add_argument("--json-status-fd", metavar="FD", type=int, default=None,
                     help="like --json-status, to file descriptor FD (as bwrap)")
    run.add_argument("-i", "--interactive", action="store_true",
                     help="keep stdin attached (it always is; for docker/podman habits)")
    run.add_argument("-t", "--tty", action="store_true",
                     help="give the program a terminal and attach this one to it in raw mode")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")

    commands.add_parser("doctor", help="check what this host offers anyns, with hints")

    demo = commands.add_parser("demo", help="start a few hundred containers at once and show the result")
    demo.add_argument("--count", type=int, default=300, help="containers to start (default 300)")
    demo.add_argument("--concurrency", type=int, default=64, help="containers in flight (default 64)")
    return parser


def _split_mount(value: str, option: str) -> tuple[str, str]:
    source, sep, target = value.partition(":")
    if not sep:
        target = source
    if not source or not target:
        raise AnynsError(f"{option} {value!r}: expected SRC:DST")
    return os.path.abspath(source), target


def spec_from_args(args: argparse.Namespace) -> ContainerSpec:
    """Build the ContainerSpec that ``run``'s options describe."""
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise AnynsError("run: no command given (put it after --)")
    env = {"PATH": DEFAULT_PATH}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise AnynsError(f"--env {item!r}: expected K=V")
        env[key] = value
    mounts: list[Bind | Tmpfs] = []
    for value in args.bind:
        mounts.append(Bind(*_split_mount(value, "--bind")))
    for value in args.ro_bind:
        mounts.append(Bind(*_split_mount(value, "--ro-bind"), readonly=True))
    for value in args.tmpfs:
        mounts.append(Tmpfs(value))
    rlimits = dict(_rlimit_from(value) for value in args.rlimit)
    files = dict(_file_from(value) for value in args.file)
    user_ns = None
    if args.map:
        ranges = []
        for value in args.map:
            try:
                inside, outside, count = (int(part) for part in value.split(":"))
            except ValueError:
                raise AnynsError(f"--map {value!r}: expected INSIDE:OUTSIDE:COUNT, e.g. 0:100000:65536") from None
            ranges.append((inside, outside, count))
        user_ns = IdMap(uid=ranges, gid=ranges)
    user = None
    if args.user is not None:
        uid_text, _, gid_text = args.user.partition(":")
        try:
            uid = int(uid_text)
            user = User(uid, int(gid_text) if gid_text else uid)
        except ValueError:
            raise AnynsError(f"--user {args.user!r}: expected UID[:GID] as numbers") from None
    capabilities = set(DEFAULT_CAPABILITIES)
    for value in args.cap_drop:
        capabilities -= set(ALL_CAPABILITIES) if value.upper() == "ALL" else {_cap_name(value)}
    for value in args.cap_add:
        capabilities |= set(ALL_CAPABILITIES) if value.upper() == "ALL" else {_cap_name(value)}
    limits = None
    if args.memory is not None or args.pids is not None or args.cpus is not None or args.cpu_time is not None:
        limits = Limits(memory=args.memory, pids=args.pids, cpu=args.cpus, cpu_time=args.cpu_time)
    namespaces = Namespaces.DEFAULT | (Namespaces.USER if args.userns else Namespaces(0))
    network = _network_from(args.net)
    if args.share_net:
        network = HostNetwork()
    rootfs: HostRootfs | DirRootfs | OverlayRootfs = HostRootfs()
    if args.rootfs and args.overlay:
        raise AnynsError("run: --rootfs and --overlay are two different roots: give one")
    if args.rootfs:
        rootfs = DirRootfs(os.path.abspath(args.rootfs), readonly=not args.rw)
    elif args.overlay:
        upper = os.path.abspath(args.upper) if args.upper else None
        rootfs = OverlayRootfs([os.path.abspath(p) for p in args.overlay], upper=upper)
    tty_size = (24, 80)
    if args.tty:
        env.setdefault("TERM", os.environ.get("TERM", "xterm"))
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(0)
            tty_size = (size.lines, size.columns)
    return ContainerSpec(argv=cmd, rootfs=rootfs, hostname=args.hostname, domainname=args.domainname,
                         namespaces=namespaces, network=network, mounts=mounts, env=env, cwd=args.cwd,
                         tty=args.tty, tty_size=tty_size, rlimits=rlimits, limits=limits, init=args.init,
                         files=files, tmp_size=args.tmp_size, shm_size=args.shm_size,
                         user_ns=user_ns, user=user, capabilities=capabilities, timeout=args.timeout,
                         seccomp=DEFAULT_SECCOMP if args.seccomp == "default" else None)


def _file_from(value: str) -> tuple[str, File]:
    """--file SRC:DST: host file SRC's content and permission bits, to be placed at DST."""
    source, sep, target = value.partition(":")
    if not sep or not source or not target:
        raise AnynsError(f"--file {value!r}: expected SRC:DST, e.g. ./main.py:/box/main.py")
    try:
        with open(source, "rb") as f:
            data = f.read(MAX_FILES_SIZE + 1)
            mode = os.fstat(f.fileno()).st_mode & 0o777
    except OSError as e:
        raise AnynsError(f"--file {value!r}: cannot read {source}: {e.strerror}") from None
    return target, File(data, mode=mode)


def _cap_name(value: str) -> str:
    """``net_admin``, ``NET_ADMIN`` or ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``."""
    name = value.upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def _rlimit_from(value: str) -> tuple[str, tuple[int, int]]:
    """--rlimit NAME=SOFT[:HARD]: one number sets both; "unlimited" is RLIM_INFINITY (prlimit's syntax)."""
    name, sep, limits = value.partition("=")
    soft, _, hard = limits.partition(":")
    try:
        numbers = [RLIM_INFINITY if n in ("unlimited", "infinity") else int(n) for n in (soft, hard or soft)]
    except ValueError:
        numbers = []
    if not sep or not name or len(numbers) != 2:
        raise AnynsError(f"--rlimit {value!r}: expected NAME=SOFT[:HARD], e.g. nofile=1024:4096")
    return name, (numbers[0], numbers[1])


def _network_from(mode: str | None) -> Loopback | HostNetwork | Bridge | JoinNetwork | None:
    """--net MODE: loopback, host, bridge[:SUBNET[:NAME]], or the path of a network namespace file."""
    if mode is None or mode == "loopback":
        return None if mode is None else Loopback()
    if mode == "host":
        return HostNetwork()
    if mode == "bridge" or mode.startswith("bridge:"):
        _, _, rest = mode.partition(":")
        subnet, _, name = rest.partition(":")
        return Bridge(name or "anyns0", subnet or "10.88.0.0/16")
    if mode.startswith("/"):
        return JoinNetwork(mode)
    raise AnynsError(f"--net {mode!r}: expected loopback, host, bridge[:SUBNET[:NAME]] or a netns file path")


async def _run(spec: ContainerSpec, status_fd: int | None = None, max_output: int | None = None) -> int:
    async with open_supervisor() as sup:
        if spec.tty:
            box = await _run_attached(sup, spec, status_fd, max_output)
        else:
            box = await _run_piped(sup, spec, status_fd, max_output)
    returncode, oom_killed, exceeded = box.returncode, box.oom_killed, box.exceeded
    assert returncode is not None
    if oom_killed and returncode < 0 and spec.limits is not None and spec.limits.memory is not None:
        print(f"anyns: the container was killed by the OOM killer (memory limit {format_size(spec.limits.memory)})",
              file=sys.stderr)
    status = EXIT_BUDGET.get(exceeded or "", returncode if returncode >= 0 else 128 - returncode)
    if exceeded in EXIT_BUDGET:
        budget = {"timeout": spec.timeout, "cpu_time": spec.limits.cpu_time if spec.limits else None,
                  "output": max_output}[exceeded]
        print(f"anyns: {ContainerFailed(returncode, spec.argv, exceeded=exceeded, budget=budget)}", file=sys.stderr)
    if status_fd is not None:
        _write_status(status_fd, {"exit-code": status,
                                  **({"signal": -returncode} if returncode < 0 else {}),
                                  **({"oom-killed": True} if oom_killed else {}),
                                  **({"exceeded": exceeded} if exceeded is not None else {})})
    return status


async def _run_piped(sup: Supervisor, spec: ContainerSpec, status_fd: int | None,
                     max_output: int | None = None) -> Container:
    """``run`` without ``-t``: the program's stdin, stdout and stderr are pipes copied from and to ours.

    Never our own fds themselves: a container reopens an inherited fd through
    ``/proc/self/fd/N`` with the flags it likes, so with the file or terminal
    itself it could read back a log our stdout appends to, truncate it, or
    write into a file given as stdin.
    """
    async with trio.open_nursery() as nursery:
        box: Container = await nursery.start(
            functools.partial(sup.run, stdin=PIPE, stdout=PIPE, stderr=PIPE, check=False), spec)
        if status_fd is not None:
            _status(status_fd, box)
        assert box.stdin is not None and box.stdout is not None and box.stderr is not None
        async with trio.open_nursery() as feeding:
            feeding.start_soon(_feed, box.stdin)
            async with trio.open_nursery() as draining:  # until the program's side of both pipes is closed
                draining.start_soon(_drain, box.stdout, 1, _OutputCap(box, max_output))
                draining.start_soon(_drain, box.stderr, 2, _OutputCap(box, max_output))
            feeding.cancel_scope.cancel()  # input nobody reads any more
        await box.wait()
        for stream in (box.stdin, box.stdout, box.stderr):
            await stream.aclose()
    return box


class _OutputCap:
    """--max-output for one stream the CLI copies (``anyns.PIPE`` streams are the caller's to bound).

    ``passed(chunk)`` returns what of ``chunk`` is within the cap; past it,
    ``end()`` ends the container for the "output" budget.
    """

    def __init__(self, box: Container, cap: int | None) -> None:
        self._box = box
        self._left = cap
        self.over = False

    def passed(self, chunk: bytes) -> bytes:
        if self._left is None:
            return chunk
        if len(chunk) > self._left:
            chunk, self.over = chunk[:self._left], True
        self._left -= len(chunk)
        return chunk

    async def end(self) -> None:
        await self._box._end_for_budget("output")


#: trio.to_thread.run_sync's argument for giving up on a blocked thread (renamed in trio 0.23)
_ABANDON = "abandon_on_cancel" if "abandon_on_cancel" in inspect.signature(trio.to_thread.run_sync).parameters \
    else "cancellable"


async def _feed(sink: trio.abc.SendStream) -> None:
    """Copy our stdin into the program's until EOF (then close it) or until the program stops reading.

    Blocking reads in a thread, not a non-blocking fd: O_NONBLOCK would land on a
    file description shared with the shell (a terminal). A read still waiting when
    the program has exited is abandoned with the thread.
    """
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while True:
            try:
                data = await trio.to_thread.run_sync(os.read, 0, 65536, **{_ABANDON: True})
            except OSError:  # no stdin at all
                data = b""
            if not data:
                break
            await sink.send_all(data)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await sink.aclose()


async def _drain(source: trio.abc.ReceiveStream, fd: int, cap: _OutputCap | None = None) -> None:
    """Copy the program's output to our ``fd`` (blocking writes, in a thread); a closed reader closes the pipe.

    Past ``cap`` (--max-output) the rest is not copied and the container is ended.
    """
    async for chunk in source:
        if cap is not None:
            chunk = cap.passed(chunk)
        try:
            if chunk:
                await trio.to_thread.run_sync(_write_all, fd, chunk)
        except OSError:  # EPIPE (`| head`), or nowhere to write: the program gets EPIPE/SIGPIPE next
            await source.aclose()
            return
        if cap is not None and cap.over:
            await cap.end()
            await source.aclose()
            return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_status(fd: int, record: dict[str, object]) -> None:
    os.write(fd, (json.dumps(record) + "\n").encode())


def _status(fd: int, box: Container) -> None:
    """The --json-status line at start: host pid, pid inside, namespace ids (bwrap's child-pid line, more).

    A program that has already exited has no namespaces left to show: null then.
    """
    record: dict[str, object] = {"child-pid": box.pid, "ns-pid": None, "namespaces": None}
    with contextlib.suppress(AnynsError):
        record["ns-pid"] = box.ns_pid
        record["namespaces"] = dict(box.namespaces)
    _write_status(fd, record)


async def _run_attached(sup: Supervisor, spec: ContainerSpec, status_fd: int | None,
                        max_output: int | None = None) -> Container:
    """``run -t``: this terminal, in raw mode, wired to the container's; restored afterwards."""
    saved = termios.tcgetattr(0) if os.isatty(0) else None
    blocking = (os.get_blocking(0), os.get_blocking(1))
    try:
        if saved is not None:
            tty.setraw(0, termios.TCSANOW)  # not TCSAFLUSH: keep what was typed ahead
        async with trio.open_nursery() as nursery:
            box: Container = await nursery.start(functools.partial(sup.run, check=False), spec)
            assert box.tty is not None
            if status_fd is not None:
                _status(status_fd, box)
            terminal = box.tty
            keyboard = trio.lowlevel.FdStream(os.dup(0))
            screen = trio.lowlevel.FdStream(os.dup(1))

            async def copy(source: trio.abc.ReceiveStream, sink: trio.abc.SendStream,
                           cap: _OutputCap | None = None) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    async for chunk in source:
                        if cap is not None:
                            chunk = cap.passed(chunk)
                        await sink.send_all(chunk)
                        if cap is not None and cap.over:
                            await cap.end()
                            return

            async def resize() -> None:
                with trio.open_signal_receiver(signal.SIGWINCH) as signals:
                    async for _ in signals:
                        with contextlib.suppress(OSError, AnynsError):
                            size = os.get_terminal_size(0)
                            box.resize_tty(size.lines, size.columns)

            async with trio.open_nursery() as pumps:
                pumps.start_soon(copy, keyboard, terminal)
                pumps.start_soon(resize)
                await copy(terminal, screen, _OutputCap(box, max_output))  # until the program's side is gone
                pumps.cancel_scope.cancel()
            await box.wait()
            for stream in (keyboard, screen, terminal):
                await stream.aclose()
        return box
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.set_blocking(0, blocking[0])  # FdStream made the shared descriptions non-blocking
        os.set_blocking(1, blocking[1])


def _fail(message: str, status: int) -> int:
    print(f"anyns: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m anyns`` and the ``anyns`` script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            status_fd = args.json_status_fd if args.json_status_fd is not None else (2 if args.json_status else None)
            max_output = parse_size("--max-output", args.max_output) if args.max_output is not None else None
            status: int = trio.run(_run, spec_from_args(args), status_fd, max_output)
        elif args.command == "doctor":
            from ._doctor import doctor

            status = doctor()
        else:
            status = trio.run(demo, args.count, args.concurrency)
        return status
    except AnynsError as e:
        return _report(e)
    except BaseExceptionGroup as group:
        # trio >= 0.25 wraps what a nursery's task raised (strict exception
        # groups): one AnynsError (or ^C) in a group is still that error.
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], AnynsError):
            return _report(leaves[0])
        if leaves and all(isinstance(e, KeyboardInterrupt) for e in leaves):
            return 130
        raise
    except KeyboardInterrupt:
        return 130


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions a (nested) group holds."""
    found: list[BaseException] = []
    for e in group.exceptions:
        found.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return found


def _report(e: AnynsError) -> int:
    """One line on stderr and the exit status of a failed start (125, 126, 127 as env(1) and docker run)."""
    if isinstance(e, ExecError):
        return _fail(str(e), EXIT_NOT_FOUND if e.errno == errno.ENOENT else EXIT_NOT_EXECUTABLE)
    return _fail(str(e), EXIT_SETUP_FAILED)


# ----------------------------------------------------------------------------- demo

_PROBE = (
    'echo "$$"; echo "$PPID"; hostname; '
    "for k in mnt pid net uts ipc; do readlink /proc/self/ns/$k; done"
)


async def demo(count: int = 300, concurrency: int = 64) -> int:
    """Start ``count`` containers (``concurrency`` at a time) and report what each saw.

    Every container runs a shell that prints its pid, its hostname and its
    namespace ids; the table checks each against what isolation promises.
    """
    host_ns = namespaces_of(os.getpid())
    results: list[tuple[int, bytes] | BaseException] = []
    limiter = trio.CapacityLimiter(concurrency)
    out = sys.stdout
    started = time.perf_counter()

    async def one(index: int, sup: object) -> None:
        spec = ContainerSpec(argv=["/bin/sh", "-c", _PROBE], hostname=f"box-{index}")
        async with limiter:
            try:
                done = await sup.run(spec, capture_stdout=True)  # type: ignore[attr-defined]
                results.append((index, done.stdout))
            except AnynsError as e:
                results.append(e)
        if len(results) % 25 == 0 or len(results) == count:
            rate = len(results) / (time.perf_counter() - started)
            out.write(f"\r  {len(results):5d}/{count} containers done  ({rate:6.0f}/s)")
            out.flush()

    print(f"anyns demo: {count} containers on the host rootfs, {concurrency} at a time")
    async with open_supervisor() as sup, trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i, sup)
    elapsed = time.perf_counter() - started
    print()

    failures = [r for r in results if isinstance(r, BaseException)]
    under_init = own_host = ns_differ = 0
    for result in results:
        if isinstance(result, BaseException):
            continue
        index, stdout = result
        lines = stdout.decode().split()
        if len(lines) < 8:
            continue
        under_init += lines[0:2] == ["2", "1"]  # pid 2, child of its own init (pid 1)
        own_host += lines[2] == f"box-{index}"
        ids = dict(zip(("mnt", "pid", "net", "uts", "ipc"), lines[3:8], strict=True))
        ns_differ += all(ids[k] != host_ns[k] for k in ids)
    ok = count - len(failures)
    rows = [
        ("containers started and reaped", f"{ok} of {count}"),
        ("containers/s", f"{count / elapsed:.0f}"),
        ("failures", str(len(failures))),
        ("ran as pid 2 under their own init (pid 1)", f"{under_init} of {ok}"),
        ("saw their own hostname", f"{own_host} of {ok}"),
        ("mnt/pid/net/uts/ipc ids all differ from the host's", f"{ns_differ} of {ok}"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for failure in failures[:3]:
        print(f"  failure: {failure}")
    return 0 if not failures and under_init == own_host == ns_differ == ok else 1
