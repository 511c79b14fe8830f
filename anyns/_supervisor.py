"""The trio side: the zygote connection, ``open_supervisor()`` and ``Supervisor.run``.

Containers are cloned by the zygote with CLONE_PARENT, so they are children
of this process: each one is waited for on its pidfd
(``trio.lowlevel.wait_readable``) and reaped with ``waitid(P_PIDFD)``, by the
task that started it. No thread waits, no SIGCHLD handler (worker threads
only read and remove the cgroup of a container with one). Whatever way a
``run`` ends (return, error, cancellation) it kills and reaps its container
before it returns, inside a shielded scope; when many are cancelled at once,
a few at a time (``_pacing``), so that the loop never stalls on a teardown.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import itertools
import math
import os
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Final, final

import attrs
import trio

from . import _cgroups, _protocol
from ._container import CompletedContainer, Container, NoPublicConstructor, PersistedNamespace
from ._container import _has_exited as _pidfd_has_exited
from ._errors import (
    AnynsError,
    ContainerFailed,
    NetworkError,
    SetupError,
    SpecError,
    UnsupportedError,
    ZygoteError,
    diagnose,
)
from ._files import check_collect
from ._network import Networking
from ._pacing import TEARDOWN_PACE, TURN_HOLD, Pacer
from ._plan import COLLECT_NEEDS_INIT, HostLayout, Plan, compile_exec_plan, compile_plan
from ._security import seccomp_bpf
from ._spec import (
    KIND_FLAGS,
    Bind,
    Bridge,
    ContainerSpec,
    HostRootfs,
    IdMap,
    Join,
    JoinNetwork,
    Limits,
    Namespaces,
    Rootfs,
    effective_namespaces,
    joined_namespaces,
    needs_cgroup,
    user_namespace_map,
)
from ._stdio import (
    DEVNULL,
    PIPE,
    STDOUT,
    Io,
    StdinArg,
    Stdio,
    StdoutArg,
    collect_into,
    collect_tty,
    read_channel,
    read_to_eof,
    send_and_close,
)
from ._userns import helper_argv, map_text, subordinate_ranges, write_maps_from_parent
from ._zygote_client import MAX_PLANS, RequestNotSent, ZygoteConnection, setup_error

__all__ = ["DEVNULL", "PIPE", "STDOUT", "Supervisor", "open_supervisor"]


#: what an UnsupportedError names when a container without a pid namespace of its own can have no cgroup
_NO_PID_PURPOSE: Final = (
    "namespaces without PID (such a container's processes are tracked and killed through a cgroup of its own)"
)
#: how long a cancelled spawn waits for the zygote's answer before leaving the
#: container to the reply reader (only a hung zygote takes this long)
_ABANDON_AFTER: Final = 5.0


# --------------------------------------------------------------------------- host layout


def _newroot_dir() -> str:
    """An empty directory every container mounts its own root on, privately."""
    for base in ("/run/anyns", os.path.join(tempfile.gettempdir(), f"anyns-{os.getuid()}")):
        path = os.path.join(base, "newroot")
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError:
            continue
        return path
    raise ZygoteError("no writable place for the container root mount point (/run or $TMPDIR)")


def _probe_host(newroot: str, rootfs: Rootfs, cgroups: _cgroups.Cgroups | None) -> HostLayout:
    links: list[tuple[str, str]] = []
    dirs: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            links.append((name, os.readlink(path)))
        elif os.path.isdir(path):
            dirs.append(name)
    etc_files: list[str] = []
    etc_dirs: list[str] = []
    if isinstance(rootfs, HostRootfs):
        for name in rootfs.etc:
            path = "/etc/" + name
            if os.path.isdir(path):
                etc_dirs.append(name)
            elif os.path.exists(path):
                etc_files.append(name)
    return HostLayout(newroot=newroot, top_links=tuple(links), top_dirs=tuple(dirs),
                      etc_files=tuple(etc_files), etc_dirs=tuple(etc_dirs),
                      rootless=os.geteuid() != 0,
                      cgroup_v2=cgroups is not None and cgroups.v2 is not None,
                      cgroup_v1=tuple(",".join(sorted(h.controllers)) for h in cgroups.v1) if cgroups else ())


def _open_cgroups(parent: str | None) -> _cgroups.Cgroups | None:
    """The supervisor's cgroups (made on first use), after removing what dead supervisors left; None without any."""
    try:
        v2, v1 = _cgroups.probe()
    except OSError:
        return None
    if parent is not None and (
        v2 is None or not os.path.isdir(parent)
        or not (os.path.realpath(parent) + "/").startswith(v2.mount.rstrip("/") + "/")
    ):
        where = v2.mount if v2 is not None else "a cgroup v2 hierarchy"
        raise UnsupportedError(f"open_supervisor: cgroup_parent {parent!r} is not a directory in {where}")
    cgroups = _cgroups.Cgroups(v2, v1, parent)
    cgroups.collect_leftovers()
    return cgroups


def _bound_devices(spec: ContainerSpec) -> tuple[tuple[str, int, int, str], ...]:
    """Device nodes the spec binds itself with ``nodev=False``: its cgroup lets them open (read-only binds: read)."""
    rules = []
    for mount in spec.mounts:
        if not isinstance(mount, Bind) or mount.nodev:
            continue
        try:
            info = os.stat(mount.source)
        except OSError:
            continue  # the spawn names a missing source
        if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            kind = "c" if stat.S_ISCHR(info.st_mode) else "b"
            rules.append((kind, os.major(info.st_rdev), os.minor(info.st_rdev), "r" if mount.readonly else "rw"))
    return tuple(rules)


def _exited(container: Container, syscall: str) -> SetupError:
    """The error of an exec into a container that is gone; its cause is a ProcessLookupError."""
    error = SetupError("exec", syscall, None, errno.ESRCH, os.strerror(errno.ESRCH),
                       f"container pid {container.pid} has exited")
    error.__cause__ = ProcessLookupError(errno.ESRCH, os.strerror(errno.ESRCH))
    return error


# --------------------------------------------------------------------------- joins

#: stands for "a running container" in a spec used as a plan cache key
_A_CONTAINER: Final = "/proc/self/ns/<a running container>"


def _plan_key(spec: ContainerSpec) -> ContainerSpec:
    """``spec`` with every running container it joins replaced by a placeholder.

    The plan does not depend on which container is joined (its fds come with
    each request), and the cache must not keep containers, and the streams
    they hold, alive.
    """
    if isinstance(spec.network, JoinNetwork) and isinstance(spec.network.source, Container):
        spec = attrs.evolve(spec, network=JoinNetwork(_A_CONTAINER))
    if spec.join is not None and any(isinstance(v, Container) for v in spec.join.kinds().values()):
        sources = {k: _A_CONTAINER if isinstance(v, Container) else v for k, v in spec.join.kinds().items()}
        spec = attrs.evolve(spec, join=Join(**sources))
    return spec


def _join_fds(spec: ContainerSpec, plan: Plan) -> tuple[list[int], list[int]]:
    """The namespace sources of ``spec.join``, as fds in ``plan.extra_kinds`` order.

    A running container is joined through its pidfd (``setns`` accepts one
    since Linux 5.8); a path is opened here. Returns the fds to send and those
    of them to close afterwards.

    Raises:
        SetupError: a container that has exited, or a path that cannot be opened.
    """
    sources = joined_namespaces(spec)
    if not sources:
        return [], []
    fds: list[int] = []
    owned: list[int] = []
    try:
        for kind in plan.extra_kinds:
            if kind not in sources:
                continue  # the network's go pipe and the cgroup fds: run() adds them
            source = sources[kind]
            if isinstance(source, Container):
                if source.returncode is not None or source._pidfd < 0:
                    error = SetupError("namespaces", "setns", None, errno.ESRCH, os.strerror(errno.ESRCH),
                                       f"the container to join ({kind}), pid {source.pid}, has exited")
                    raise error from ProcessLookupError(errno.ESRCH, os.strerror(errno.ESRCH))
                # A duplicate: the owner may reap it and close its own fd meanwhile.
                fd = os.dup(source._pidfd)
                owned.append(fd)
                fds.append(fd)
            else:
                try:
                    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    error = setup_error("namespaces", "open", source, e.errno or 0, e.strerror or str(e))
                    raise error from error.__cause__
                owned.append(fd)
                fds.append(fd)
    except BaseException:
        for fd in owned:
            os.close(fd)
        raise
    return fds, owned


# --------------------------------------------------------------------------- supervisor


@final
class Supervisor(metaclass=NoPublicConstructor):
    """Starts containers through a zygote and owns them; made by ``open_supervisor()``."""

    def __init__(self, nursery: trio.Nursery, cgroup_parent: str | None = None,
                 max_containers: int | None = None) -> None:
        self._nursery = nursery
        self._cgroups = _open_cgroups(cgroup_parent)
        self._zygote: ZygoteConnection | None = None
        self._plans: dict[object, tuple[int, Plan]] = {}
        #: seccomp policies being compiled in a worker thread, and the event set when that is done
        self._seccomp_pending: dict[object, trio.Event] = {}
        self._layouts: dict[object, HostLayout] = {}
        self._newroot = _newroot_dir()
        self._running: set[Container] = set()
        #: back-pressure: a container holds a token from before its spawn until it is reaped
        self._capacity = trio.CapacityLimiter(max_containers) if max_containers is not None else None
        #: when a container whose program ran was last reaped (not a failed setup, not an exec)
        self._last_exit = -math.inf
        #: namespaces kept with Container.keep_namespace, released when the supervisor closes
        self._kept: set[PersistedNamespace] = set()
        self._networking = Networking()
        #: teardown of many at once in small steps: a turn from before the kill until the reap
        self._pacer = Pacer()
        self._closed = False
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._plan_ids = itertools.count(1)
        #: an unprivileged supervisor: every container gets a user namespace
        #: mapping this process's uid and gid to root (like ``unshare -r``)
        self._rootless = os.geteuid() != 0
        self._own_map = IdMap(uid=(0, os.geteuid(), 1), gid=(0, os.getegid(), 1))
        #: rootless with /etc/subuid and /etc/subgid ranges and newuidmap/newgidmap: a full map
        self._wide_map = _subordinate_map() if self._rootless else None
        self._rootless_specs: dict[ContainerSpec, ContainerSpec] = {}

    # ---- zygote

    def _connection(self) -> ZygoteConnection:
        zygote = self._zygote
        if zygote is None or zygote.error is not None:
            zygote = self._zygote = ZygoteConnection(
                self._adopt_orphan, self._newroot,
                self._cgroups.v2.own if self._cgroups is not None and self._cgroups.v2 is not None else None)
            self._nursery.start_soon(zygote.serve_replies)
            self._nursery.start_soon(zygote.watch)
        return zygote

    def _adopt_orphan(self, pidfd: int) -> None:
        """A container nobody waits for any more (a late answer): kill and reap it.

        A negative number is the pid of one whose pidfd never arrived (out of fds).
        """
        if pidfd < 0:
            self._nursery.start_soon(_kill_and_reap_pid, -pidfd)
        else:
            self._nursery.start_soon(_kill_and_reap, pidfd)

    async def _plan(self, key: object, compile_: Callable[[], Plan]) -> tuple[int, Plan]:
        """The plan for ``key`` (a spec, or an exec's), compiled once and cached.

        A seccomp policy not seen before is compiled in a worker thread:
        libseccomp takes tens of milliseconds to build the profile's binary
        tree, which would stall every other container on the loop.
        """
        cached = self._plans.pop(key, None)
        if cached is None:
            plan = compile_()
            policy = _seccomp_policy(plan)
            if policy is not None and policy not in _SECCOMP_HEX:
                await self._compile_seccomp(policy)
            cached = self._plans.pop(key, None)  # another task may have made it meanwhile
        if cached is None:
            cached = (next(self._plan_ids), _with_seccomp_bpf(plan))
            if len(self._plans) >= MAX_PLANS:  # unbounded distinct specs: forget the oldest
                old_id, _old = self._plans.pop(next(iter(self._plans)))
                if self._zygote is not None and self._zygote.error is None:
                    self._zygote.drop(old_id)
        self._plans[key] = cached  # most recently used last: eviction takes the oldest use
        return cached

    async def _compile_seccomp(self, policy: tuple[tuple[str, ...], int, tuple[str, ...], tuple[str, ...]]) -> None:
        """Compile ``policy``'s filter in a worker thread, once: a burst of new specs waits for one compile."""
        pending = self._seccomp_pending.get(policy)
        if pending is not None:
            await pending.wait()
            return
        self._seccomp_pending[policy] = done = trio.Event()
        try:
            _remember_seccomp(policy, await trio.to_thread.run_sync(_seccomp_hex, *policy))
        finally:
            del self._seccomp_pending[policy]
            done.set()

    async def _container_plan(self, spec: ContainerSpec, collect: bool = False) -> tuple[int, Plan]:
        """The plan of ``spec``; ``collect``: its init holds the container (``run(collect=...)``; part of the key)."""
        def compile_() -> Plan:
            layout_key = spec.rootfs if isinstance(spec.rootfs, HostRootfs) else None
            layout = self._layouts.get(layout_key)
            if layout is None:
                layout = self._layouts[layout_key] = _probe_host(self._newroot, spec.rootfs, self._cgroups)
            return compile_plan(spec, layout, collect=collect)

        return await self._plan((_plan_key(spec), collect), compile_)

    async def _spawn(self, spec: ContainerSpec, plan_id: int, plan: Plan, fds: list[int]) -> Container:
        """Ask the zygote for a container; return it once the clone succeeded (not yet exec)."""
        if self._closed:
            raise ZygoteError("the supervisor is closed")
        try:
            pending = await self._connection().request_spawn(plan_id, plan, fds)
        except RequestNotSent:
            try:  # once, on a fresh zygote
                pending = await self._connection().request_spawn(plan_id, plan, fds)
            except RequestNotSent as e:
                raise ZygoteError(f"the zygote died and a new one did not take requests: {e}") from None
        try:
            await pending.event.wait()
        except BaseException:
            # Cancelled before the answer: the container may exist already.
            # Nothing may outlive this call, so wait (shielded; the zygote
            # answers in well under a millisecond) and kill and reap it.
            with trio.move_on_after(_ABANDON_AFTER) as scope:
                scope.shield = True
                await pending.event.wait()
                if pending.pidfd >= 0:
                    await _kill_and_reap(pending.pidfd)
                    pending.pidfd = -1
                elif pending.lost_pidfd:
                    await _kill_and_reap_pid(pending.pid)
            if not pending.event.is_set():
                pending.abandoned = True  # a hung zygote: the reply reader adopts it later
            raise
        if pending.error is not None:
            if pending.lost_pidfd:  # nothing may outlive this call: the container is gone before it raises
                await _kill_and_reap_pid(pending.pid)
            raise pending.error
        # Born with a pid namespace of its own, it is 1 there; else read now, while it surely
        # runs, so that ns_pid is known after it exits too.
        own_pid_namespace = bool(plan.clone_flags & Namespaces.PID)
        container: Container = Container._create(spec, pending.pid, pending.pidfd, self,
                                                 ns_pid=1 if own_pid_namespace else None)
        if not own_pid_namespace:
            with contextlib.suppress(AnynsError):  # already gone: it has no pid inside to report
                container.ns_pid  # noqa: B018 - read and kept
        self._running.add(container)
        return container

    # ---- public

    async def run(
        self,
        spec: ContainerSpec,
        *,
        stdin: StdinArg = b"",
        capture_stdout: bool = False,
        capture_stderr: bool = False,
        stdout: StdoutArg = None,
        stderr: StdoutArg = None,
        check: bool = True,
        max_output: int | None = None,
        collect: Sequence[str | os.PathLike[str]] | None = None,
        task_status: trio.TaskStatus[Container] = trio.TASK_STATUS_IGNORED,
    ) -> CompletedContainer:
        """Run a container to completion, like ``trio.run_process``.

        ``await sup.run(spec)`` returns a ``CompletedContainer`` when the
        program has exited; ``await nursery.start(sup.run, spec)`` returns the
        ``Container`` as soon as its program has been exec'd, and the rest runs
        in the nursery.

        Args:
            spec: what to run.
            stdin: bytes to feed (default: empty), None to share the
                supervisor's stdin, ``anyns.PIPE`` for a ``Container.stdin``
                stream (with ``nursery.start``), ``anyns.DEVNULL``, or an fd /
                file object.
            capture_stdout: collect stdout into ``CompletedContainer.stdout``.
            capture_stderr: collect stderr likewise.
            stdout: None shares the supervisor's stdout; ``anyns.PIPE`` gives a
                ``Container.stdout`` stream; ``anyns.DEVNULL``; or an fd / file.
                **None (the default) and an fd hand the container that very
                file**: it can reopen it through ``/proc/self/fd/1`` with any
                flags the file's permissions allow, and so read back what the
                supervisor's log file already holds, truncate it, or reach the
                terminal. For code you do not trust, use ``capture_stdout=True``
                or ``anyns.PIPE`` (the supervisor copies the output) or
                ``anyns.DEVNULL``.
            stderr: as ``stdout``, plus ``anyns.STDOUT`` to merge into stdout.
                The same holds for None and ``stdin=None``.
            check: raise ``ContainerFailed`` when the program exits non-zero
                or is killed by a signal, or a budget ended it
                (``CompletedContainer.exceeded``: ``timeout``, ``cpu_time``,
                ``max_output``).
            max_output: the most bytes kept of each captured stream (stdout
                and stderr each). A program that writes more is killed, what
                was kept is returned, and ``exceeded`` is ``"output"``; the
                supervisor's memory grows by about the cap at most. For code
                you do not trust, cap it (the program can write gigabytes into
                your memory otherwise). Streams handed out (``anyns.PIPE``)
                are the caller's to bound. Default: no cap.
            collect: absolute paths of files inside the container to read
                after the program exits (a budget kill included: ``timeout``,
                ``cpu_time``, ``max_output``), before the container is torn
                down (its ``/tmp`` too): ``CompletedContainer.files`` maps each
                to its content, a missing one left out. Resolved inside the
                container's root as ``Container.read_file`` does (a symlink
                the program planted never reaches a host file); at most 16 MiB
                each. The init holds the container until they are read, so
                ``collect`` needs ``init=True`` and a pid namespace of its
                own (``SpecError`` otherwise).

        Raises:
            SetupError: the container could not be set up (``ExecError`` if
                the program could not be executed). Nothing is left behind.
            ContainerFailed: ``check`` is true and the program failed, or ran
                out of a budget (``exceeded``).
            ZygoteError: the zygote died during the spawn.

        Cancellation kills the container with SIGKILL and waits until it has
        been reaped before the cancellation propagates: it abandons the run.
        When many runs are cancelled at once (a nursery of a thousand), at
        most 32 of their containers are dying at any moment, the others
        waiting their turn, so that the trio loop is never held up for long.
        A budget that keeps the result is ``ContainerSpec(timeout=...)``,
        ``Limits(cpu_time=...)`` or ``max_output``.
        """
        if not isinstance(spec, ContainerSpec):
            raise TypeError(f"expected an anyns.ContainerSpec, got {type(spec).__name__}")
        io = Io.of(stdin, capture_stdout, capture_stderr, stdout, stderr, check,
                   started=task_status is not trio.TASK_STATUS_IGNORED, max_output=max_output)
        paths = check_collect(collect)
        if paths and not (spec.init and Namespaces.PID in effective_namespaces(spec)):
            raise SpecError(COLLECT_NEEDS_INIT)
        if self._capacity is None:  # nothing to retry, so no exits to note
            with _typed_fd_exhaustion():
                return await self._run(spec, io, task_status, collect=paths)
        async with self._capacity:  # at max_containers: wait here until one is reaped
            delay = 0.005
            first_refusal = None
            while True:
                try:
                    return await self._run_counted(spec, io, task_status, paths)
                except SetupError as e:
                    if e.resource != "namespaces":
                        raise
                    # The kernel frees an exited container's namespaces later, from a
                    # workqueue: until then they count against user.max_*_namespaces.
                    # Wait for that too, but only while an exit explains it and for
                    # at most NAMESPACE_RELEASE_GRACE: a limit that stays full fails.
                    now = trio.current_time()
                    first_refusal = now if first_refusal is None else first_refusal
                    if (now - self._last_exit >= NAMESPACE_RELEASE_GRACE
                            or now - first_refusal >= NAMESPACE_RELEASE_GRACE):
                        raise
                await trio.sleep(delay)
                delay = min(delay * 2, 0.05)

    async def _run_counted(self, spec: ContainerSpec, io: Io,
                           task_status: trio.TaskStatus[Container], collect: tuple[str, ...] = ()
                           ) -> CompletedContainer:
        """``_run``, noting when a container whose program ran has been reaped (its namespaces are on their way)."""
        try:
            with _typed_fd_exhaustion():
                done = await self._run(spec, io, task_status, collect=collect)
        except ContainerFailed:
            self._last_exit = trio.current_time()
            raise
        self._last_exit = trio.current_time()
        return done

    async def _run(self, spec: ContainerSpec, io: Io, task_status: trio.TaskStatus[Container], *,
                   collect: tuple[str, ...] = ()) -> CompletedContainer:
        if self._rootless:
            spec = self._rootless_spec(spec)
        plan_id, plan = await self._container_plan(spec, bool(collect))
        leaf = self._new_cgroup(spec)
        go = -1
        owned: list[int] = []
        try:
            extra, owned = _join_fds(spec, plan)
            if leaf is not None:
                cgroup_fds = self._cgroup_fds(leaf)
                extra += cgroup_fds
                owned += cgroup_fds
            if "go" in plan.extra_kinds:
                go_r, go = os.pipe2(os.O_CLOEXEC)
                extra.append(go_r)
                owned.append(go_r)
        except BaseException:
            for fd in owned:
                os.close(fd)
            if leaf is not None:
                await self._release_cgroup(leaf)
            raise
        try:
            return await self._launch(spec, plan_id, plan, extra, io, task_status, go, leaf, owned, collect)
        finally:
            for fd in owned:
                os.close(fd)

    # ---- rootless

    def _rootless_spec(self, spec: ContainerSpec) -> ContainerSpec:
        """``spec`` as an unprivileged supervisor runs it: in a user namespace mapping our ids to root.

        Raises:
            UnsupportedError: what needs privileges this process lacks (a bridge;
                a map of more than our own ids, which needs newuidmap).
        """
        cached = self._rootless_specs.get(spec)
        if cached is not None:
            return cached
        hint = "run the supervisor as root for this"
        if isinstance(spec.network, Bridge):
            raise UnsupportedError(f"rootless: a Bridge needs CAP_NET_ADMIN on the host ({hint})")
        if spec.user_ns is not None and spec.user_ns != self._own_map and self._wide_map is None:
            raise UnsupportedError("rootless: an unprivileged supervisor can only map its own uid and gid "
                                   f"(IdMap(uid=(0, {os.geteuid()}, 1), gid=(0, {os.getegid()}, 1))); wider "
                                   "ranges need newuidmap and newgidmap (Debian: uidmap) and ranges for this "
                                   "user in /etc/subuid and /etc/subgid")
        try:
            rootless = attrs.evolve(spec, user_ns=spec.user_ns or self._wide_map or self._own_map)
        except SpecError as e:
            raise UnsupportedError(f"rootless: {e} ({hint})") from None
        if len(self._rootless_specs) >= MAX_PLANS:
            self._rootless_specs.clear()
        self._rootless_specs[spec] = rootless
        return rootless

    # ---- cgroups

    def _new_cgroup(self, spec: ContainerSpec) -> _cgroups.Leaf | None:
        """The cgroup leaf of a container that needs one (``needs_cgroup``), else None.

        With ``limits``, and (a root supervisor) for every container without
        a pid namespace of its own: its cgroup is then what kills the
        processes it leaves behind when its program exits.

        Raises:
            UnsupportedError: a limit this host cannot enforce, or no cgroups here.
            SetupError: the kernel refused a limit (step "cgroup").
        """
        if not needs_cgroup(spec, self._rootless):
            return None
        purpose = "limits" if spec.limits is not None else _NO_PID_PURPOSE
        if self._cgroups is None:
            raise UnsupportedError(f"{purpose}: no cgroup hierarchy could be read here (/proc/self/cgroup)")
        try:
            return self._cgroups.create(spec.limits or Limits(), purpose, _bound_devices(spec))
        except _cgroups.Unavailable as e:
            raise UnsupportedError(str(e) + (f" (hint: {e.hint})" if e.hint else "")) from e.__cause__
        except _cgroups.CgroupWriteError as e:
            raise _cgroup_error(e) from e.error

    @staticmethod
    def _cgroup_fds(leaf: _cgroups.Leaf) -> list[int]:
        try:
            return leaf.open_fds()
        except _cgroups.CgroupWriteError as e:
            raise _cgroup_error(e) from e.error

    async def _release_cgroup(self, leaf: _cgroups.Leaf, teardown: bool = False) -> None:
        """One user fewer; the last one removes the leaf (killing what is left in it). Shielded.

        ``teardown``: its container was killed, maybe with many others: the
        removal is done in a worker thread (rmdir of a cgroup takes ~0.1-1 ms),
        not on the loop.
        """
        leaf.users -= 1
        cgroups = self._cgroups
        if leaf.users > 0 or cgroups is None:
            return
        with trio.CancelScope(shield=True):
            # Right after the reap the kernel may still be taking the last
            # tasks out; give it a moment rather than leave the directory.
            for _attempt in range(400):
                if await trio.to_thread.run_sync(cgroups.remove, leaf) if teardown else cgroups.remove(leaf):
                    return
                await trio.sleep(0.005)
            # Still busy after 2 s: the next supervisor's start removes it.

    async def _exec(
        self,
        container: Container,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        cwd: str | None,
        io: Io,
        task_status: trio.TaskStatus[Container],
    ) -> CompletedContainer:
        """``Container.exec``: a new process in all of ``container``'s namespaces."""
        try:
            spec = attrs.evolve(
                container.spec,
                argv=argv,
                env=container.spec.env if env is None else env,
                cwd=container.spec.cwd if cwd is None else cwd,
                tty=False,  # the container's terminal is its program's, not the exec'd one's
                timeout=None,  # the container's budget; the exec'd process ends with the container
            )
        except TypeError as e:
            raise SpecError(f"exec: {e}") from None
        if container.returncode is not None or container._pidfd < 0:
            # Gone because the caller's own scope was cancelled (it ended the container): that
            # caller gets Cancelled, as from any trio call, not an error about the container.
            await trio.lowlevel.checkpoint_if_cancelled()
            raise _exited(container, "setns")
        # Its own namespaces and those it joined: every one it lives in apart from ours.
        flags = container.spec.namespaces
        if container.spec.join is not None:
            for kind in container.spec.join.kinds():
                flags |= KIND_FLAGS[kind]
        # The zygote cannot enter a user namespace and come back: the child does.
        userns = Namespaces.USER in effective_namespaces(container.spec)
        flags &= ~Namespaces.USER
        leaf = container._leaf
        rootless = self._rootless and userns
        if rootless:  # exactly the namespaces whose files the container sent
            if "user" not in container._ns_fds:
                raise AnynsError(f"exec: container pid {container.pid} sent no namespace files to enter it by")
            flags = Namespaces(0)
            for kind in container._ns_fds:
                flags |= KIND_FLAGS[kind]
            flags &= ~Namespaces.USER

        def compile_() -> Plan:
            # The cgroup facts of the host layout, when the exec joins the container's cgroup.
            host = _probe_host(self._newroot, HostRootfs(etc=()), self._cgroups) if leaf is not None else None
            return compile_exec_plan(spec, flags, host, userns, rootless)

        plan_id, plan = await self._plan(("exec", spec, int(flags), leaf is not None, userns, rootless), compile_)
        # Our own duplicate of the pidfd: the task that owns the container may
        # reap it and close its fd while this request waits, and that fd number
        # could then name something else (a new zygote's pidfd: the host).
        # Rootless: duplicates of its namespace files, in the plan's order.
        targets: list[int] = []
        owned: list[int] = []
        try:
            with _typed_fd_exhaustion():
                if rootless:
                    for kind in plan.extra_kinds[:-1]:  # the last one is the status pipe
                        targets.append(os.dup(container._pidfd if kind == "container" else container._ns_fds[kind]))
                else:
                    targets.append(os.dup(container._pidfd))
            if leaf is not None:  # the exec'd process joins the container's cgroup, and holds it
                owned = self._cgroup_fds(leaf)
                leaf.users += 1
            with _typed_fd_exhaustion():
                return await self._launch(spec, plan_id, plan, [*targets, *owned], io, task_status, leaf=leaf,
                                          owned=owned)
        except SetupError as e:
            if e.errno in (errno.ENOMEM, errno.ESRCH) and _has_exited(container):
                # clone3 (or, rootless, a fork) into a pid namespace whose init is
                # gone; setns into a reaped process, or into a dead one's namespaces
                await trio.lowlevel.checkpoint_if_cancelled()
                error = _exited(container, e.syscall)
                raise error from error.__cause__
            raise
        finally:
            for fd in targets:
                os.close(fd)
            for fd in owned:
                os.close(fd)

    async def _launch(
        self,
        spec: ContainerSpec,
        plan_id: int,
        plan: Plan,
        extra_fds: list[int],
        io: Io,
        task_status: trio.TaskStatus[Container],
        go: int = -1,
        leaf: _cgroups.Leaf | None = None,
        owned: list[int] | None = None,
        collect: tuple[str, ...] = (),
    ) -> CompletedContainer:
        """Start the process ``plan`` describes, stream its stdio, wait for it and reap it.

        ``go``: the write end of the pipe a Bridge container waits on; the
        network is wired before the byte is written (and the pipe closed).
        ``leaf``: its cgroup, one use of which this call owns and releases.
        ``owned``: fds to close as soon as the clone is answered.
        """
        started = task_status is not trio.TASK_STATUS_IGNORED
        if plan.tty and not (started or io.capture_stdout):
            raise ValueError("tty=True needs 'await nursery.start(...)' (Container.tty) or capture_stdout=True")
        stdio = Stdio()
        if plan.channel_is_socket:
            # A socket, not a pipe: the child sends fds on it (a terminal's master end, namespace files).
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            err_r, err_w = ours.detach(), theirs.detach()
        else:
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
        container: Container | None = None
        status_r = status_w = -1
        try:
            if "status" in plan.extra_kinds:  # the init's report of the program's status (the last extra fd)
                if plan.holds_init:  # a socket: our close of it is the release of the holding init
                    ours_s, theirs_s = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                    status_r, status_w = ours_s.detach(), theirs_s.detach()
                    os.set_blocking(status_r, False)
                else:
                    status_r, status_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                extra_fds = [*extra_fds, status_w]
            if plan.tty:  # the terminal is its stdio
                stdio.child.extend((self._devnull, self._devnull, self._devnull))
            else:
                stdio.stdin(io.stdin, self._devnull)
                stdio.parent_out = stdio.output(io.stdout, io.capture_stdout, 1, self._devnull)
                stdio.parent_err = stdio.output(io.stderr, io.capture_stderr, 2, self._devnull)
            try:
                container = await self._spawn(spec, plan_id, plan, [*stdio.child, err_w, *extra_fds])
            finally:
                os.close(err_w)
                err_w = -1
                stdio.close_child_ends()
                for fd in owned or ():  # the child has its copies
                    os.close(fd)
                if owned:
                    owned.clear()
                if status_w >= 0:
                    os.close(status_w)
                    status_w = -1
            container._leaf, leaf = leaf, None  # the container's to release now
            if container._leaf is not None and container._leaf.users > 1:  # exec'd into a running container
                container._shares_cgroup = True
                container._oom_base = int(_cgroups.statistics(container._leaf).get("oom_kills") or 0)
            container._status_fd, status_r = status_r, -1
            container._holds, container._collect = plan.holds_init, collect
            os.set_blocking(err_r, False)
            if go >= 0:
                await self._release_child(container, go, err_r)
            if started or plan.channel_is_socket:
                # nursery.start returns only once the program runs: wait for
                # EOF on the error channel (it is close-on-exec) or a failure record.
                failure, sent = await read_channel(err_r, plan.channel_is_socket)
                container._adopt_sent_fds(sent.get(b"TTY", []), plan.sent_namespaces, sent.get(b"NS", []),
                                          sent.get(b"ROOT", []))
                if failure:
                    with trio.CancelScope(shield=True):
                        await container._wait_and_reap()
                    raise setup_error(*_protocol.decode_failure(failure))
            return await self._supervise(
                container, stdio, io, task_status,
                # Without nursery.start nobody needs the moment of exec: one
                # wait (on the pidfd) instead of two, then the record if any.
                -1 if (started or plan.channel_is_socket) else err_r,
            )
        finally:
            paced = await self._teardown_turn(container)  # before any other cleanup: many cancelled at once
            for fd in (err_w, status_w, status_r):
                if fd >= 0:
                    os.close(fd)
            if go >= 0:
                os.close(go)
            trio.lowlevel.notify_closing(err_r)
            os.close(err_r)
            stdio.close_child_ends()
            stdio.close_parent_ends()
            if container is not None:
                await self._ensure_reaped(container, paced)
            if leaf is not None:  # no container was made
                await self._release_cgroup(leaf)

    async def _release_child(self, container: Container, go: int, err_r: int) -> None:
        """Write a user-namespaced container's uid/gid maps, give a Bridge container its eth0; then let it go on.

        If the child failed before it got here, its own error wins over the
        one that follows from it.
        """
        try:
            id_map = user_namespace_map(container.spec)
            if id_map is not None:
                try:
                    if self._rootless and id_map != self._own_map:
                        await _map_with_helpers(container.pid, id_map)
                    else:
                        # An unprivileged writer must deny setgroups before writing gid_map (user_namespaces(7)).
                        write_maps_from_parent(container.pid, map_text(id_map.uid), map_text(id_map.gid),
                                               deny_setgroups=self._rootless)
                except OSError as e:
                    error = SetupError("userns", "write", e.filename, e.errno or 0, e.strerror or str(e),
                                       diagnose("userns", "write", e.errno or 0, e.filename))
                    raise error from e
            bridge = container.spec.network
            if isinstance(bridge, Bridge):
                host_end, address = await self._networking.attach(bridge, container.pid)
                container._network = (bridge, host_end, address)
                container.addresses = (address,)
            os.write(go, b"1")
        except (NetworkError, SetupError, OSError):
            # Most often the child failed first (a missing bind source): its
            # netns or its go pipe are gone, and its own record says why.
            with trio.CancelScope(shield=True):
                container.kill()
                await container._wait_and_reap()
            failure = await read_to_eof(err_r, _protocol.MAX_FAILURE)
            if failure:
                error = setup_error(*_protocol.decode_failure(failure))
                raise error from error.__cause__
            raise

    async def _supervise(
        self,
        container: Container,
        stdio: Stdio,
        io: Io,
        task_status: trio.TaskStatus[Container],
        err_r: int,
    ) -> CompletedContainer:
        """From the clone (or the exec) to the container's exit: stream stdio, wait, reap.

        ``err_r`` is the error pipe when the exec has not been confirmed yet:
        after the exit it holds a failure record, or nothing if execve succeeded.
        """
        captured: dict[str, bytes] = {}
        if container._tty_fd >= 0:
            await self._serve_tty(container, io, captured, task_status)
        elif stdio.parent_in < 0 and stdio.parent_out < 0 and stdio.parent_err < 0:
            # No pipes to serve, so no nursery (the common case at scale).
            task_status.started(container)
            await container._wait_within_budgets()
        else:
            await self._serve_stdio(container, stdio, io, captured, task_status)
        assert container.returncode is not None
        if err_r >= 0:
            failure = await read_to_eof(err_r, _protocol.MAX_FAILURE)
            if failure:
                raise setup_error(*_protocol.decode_failure(failure))
        done = CompletedContainer(
            container.spec.argv, container.returncode,
            captured.get("stdout") if io.capture_stdout else None,
            captured.get("stderr") if io.capture_stderr else None,
            container.pid, container._stats(), container.oom_killed, container.exceeded,
            files=container._files,
        )
        if container._collect_error is not None:  # a collected file too large, or not a regular file
            raise container._collect_error
        if io.check and (done.returncode != 0 or done.exceeded in _ENFORCED):
            limits = container.spec.limits
            raise ContainerFailed(done.returncode, container.spec.argv, done.stdout, done.stderr,
                                  oom_killed=done.oom_killed, memory_limit=limits.memory if limits else None,
                                  exceeded=done.exceeded, budget=_budget(container.spec, io, done.exceeded))
        return done

    async def _serve_tty(
        self, container: Container, io: Io, captured: dict[str, bytes], task_status: trio.TaskStatus[Container]
    ) -> None:
        """The terminal's master end: collected (capture_stdout) or handed out as ``Container.tty``."""
        master = trio.lowlevel.FdStream(container._tty_fd)
        container._tty_fd = -1
        if not io.capture_stdout:
            container.tty = master  # the caller's now, as PIPE streams are
            task_status.started(container)
            await container._wait_within_budgets()
            return
        try:
            with _single_exceptions():
                async with trio.open_nursery() as nursery:
                    if io.feed is not None:
                        nursery.start_soon(master.send_all, io.feed)  # typed in; the terminal stays open
                    nursery.start_soon(collect_tty, master, captured, io.max_output, _over_output(container))
                    task_status.started(container)
                    await container._wait_within_budgets()
                    _bound_the_drain(nursery)
        finally:
            with trio.CancelScope(shield=True):
                await master.aclose()

    async def _serve_stdio(
        self,
        container: Container,
        stdio: Stdio,
        io: Io,
        captured: dict[str, bytes],
        task_status: trio.TaskStatus[Container],
    ) -> None:
        """Feed stdin and collect output here, or hand the streams out; wait until the container is reaped.

        Streams handed out (``anyns.PIPE``) belong to the caller from then on,
        as with ``trio.run_process``: they stay open after the exit, so that
        what the program wrote can still be read.
        """
        ours: list[trio.lowlevel.FdStream] = []
        try:
            with _single_exceptions():
                async with trio.open_nursery() as nursery:
                    if stdio.parent_in >= 0:
                        sin = trio.lowlevel.FdStream(stdio.parent_in)
                        if io.feed is not None:
                            ours.append(sin)
                            nursery.start_soon(send_and_close, sin, io.feed)
                        else:
                            container.stdin = sin
                    for name, fd, capture in (("stdout", stdio.parent_out, io.capture_stdout),
                                              ("stderr", stdio.parent_err, io.capture_stderr)):
                        if fd >= 0:
                            out = trio.lowlevel.FdStream(fd)
                            if capture:
                                ours.append(out)
                                nursery.start_soon(collect_into, out, captured, name, io.max_output,
                                                   _over_output(container))
                            else:
                                setattr(container, name, out)
                    stdio.parent_in = stdio.parent_out = stdio.parent_err = -1  # the streams own them
                    task_status.started(container)
                    await container._wait_within_budgets()
                    _bound_the_drain(nursery)
        finally:
            with trio.CancelScope(shield=True):
                for stream in ours:
                    await stream.aclose()

    async def _teardown_turn(self, container: Container | None) -> bool:
        """Whether a teardown turn was taken (``_pacing``): for a container still running, to be killed now.

        Taken first thing, so that when a thousand runs are cancelled at once the
        loop iteration that wakes them only unwinds them to here; their cleanup
        follows a few at a time. Not for one with a ``stop_grace``: each gets its
        grace from the cancellation on (``_ensure_reaped`` paces its kill).
        """
        if container is None or container.returncode is not None or container.spec.stop_grace > 0:
            return False
        await self._pacer.turn()
        return True

    async def _ensure_reaped(self, container: Container, paced: bool = False) -> None:
        """Kill and reap ``container`` unless it already was, then unwire it; shielded, so always completes.

        ``paced``: the caller holds a teardown turn, given back here once the container is reaped.
        """
        killed = False  # by this call: a teardown, maybe of many at once
        try:
            with trio.CancelScope(shield=True):
                if container.returncode is None:
                    container._collect = ()  # an abandoned run: its files are for nobody
                if container.returncode is None and container.spec.stop_grace > 0:
                    # Cancelled or failed while it runs: give it stop_grace seconds to end on SIGTERM.
                    container.terminate()
                    killed = True
                    with trio.move_on_after(container.spec.stop_grace):
                        await container._wait_and_reap(teardown=True)
                if container.returncode is None:
                    if not paced:
                        await self._pacer.turn()
                        paced = True
                    container.kill()
                    killed = True
                    with trio.move_on_after(TURN_HOLD):
                        await container._wait_and_reap(teardown=True)
                    self._pacer.done()  # reaped (or slow to die: the next one's turn all the same)
                    paced = False
                    await container._wait_and_reap(teardown=True)
                if container._network is not None:
                    # Now, not when the kernel gets round to it: "no veth left" holds when run returns.
                    network, container._network = container._network, None
                    await self._networking.detach(*network)
                if container._leaf is not None:
                    leaf, container._leaf = container._leaf, None
                    await self._release_cgroup(leaf, killed)
        finally:
            if paced:
                self._pacer.done()
            if container._tty_fd >= 0:  # a terminal nobody took (its program failed to start)
                os.close(container._tty_fd)
                container._tty_fd = -1
            container._close_namespace_fds()
            self._running.discard(container)
            container._finished.set()

    async def _aclose(self) -> None:
        self._closed = True
        await _kill_paced(list(self._running))
        zygote = self._zygote
        if zygote is not None:
            zygote.shutdown()
            await zygote.done.wait()
        for container in list(self._running):
            await container._finished.wait()
        for kept in self._kept:
            with suppress(OSError):
                kept.release()
        await self._networking.aclose()
        if self._cgroups is not None:
            self._cgroups.close()
        os.close(self._devnull)


#: seconds the captured streams may still be read after the container was reaped
DRAIN_AFTER_EXIT: Final = 2.0


def _bound_the_drain(nursery: trio.Nursery) -> None:
    """The container is reaped: read what its pipes hold, then stop, at the latest ``DRAIN_AFTER_EXIT`` later.

    Every process of the container is dead by now (its pid namespace, or its
    cgroup, went with the program), so the pipes end at once, unless the
    program handed its stdout to a process outside (SCM_RIGHTS over a socket
    on a shared directory): that one would otherwise hold ``run`` open for
    ever, past every budget. What was read is kept.
    """
    nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline, trio.current_time() + DRAIN_AFTER_EXIT)


#: the budgets anyns itself enforces (by ending the program): with check=True they fail the run whatever its status
_ENFORCED: Final = ("timeout", "cpu_time", "output")


def _budget(spec: ContainerSpec, io: Io, exceeded: str | None) -> float | None:
    """The value of the budget ``exceeded`` names (seconds, or bytes for "output"), for ContainerFailed's message."""
    if exceeded == "timeout":
        return spec.timeout
    if exceeded == "cpu_time":
        return spec.limits.cpu_time if spec.limits is not None else None
    if exceeded == "output":
        return io.max_output
    return None


def _over_output(container: Container) -> Callable[[], Awaitable[None]]:
    """What a captured stream past ``max_output`` does: end the container for the "output" budget."""
    return functools.partial(container._end_for_budget, "output")


async def _kill_paced(containers: list[Container]) -> None:
    """SIGKILL every container, with at most ``TEARDOWN_PACE`` of them dying at once (their owners reap them).

    Thousands killed in one loop iteration would die as one herd, and their
    owners would wake to reap them all in one iteration too (``_pacing``).
    """
    dying: collections.deque[Container] = collections.deque()
    for container in containers:
        container.kill()
        dying.append(container)
        if len(dying) >= TEARDOWN_PACE:
            with trio.move_on_after(TURN_HOLD):  # one slow to die does not hold the others up for long
                await dying.popleft()._finished.wait()


async def _kill_and_reap(pidfd: int) -> None:
    """SIGKILL a container nobody owns, wait for it, reap it, close its pidfd; shielded."""
    with trio.CancelScope(shield=True):
        with suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        await trio.lowlevel.wait_readable(pidfd)
        with suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)  # noqa: ASYNC222 - WNOHANG
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)


def _subordinate_map() -> IdMap | None:
    """Our uid and gid as root, then /etc/subuid and /etc/subgid ranges from 1 on; None without them or the helpers."""
    if shutil.which("newuidmap") is None or shutil.which("newgidmap") is None:
        return None
    maps = []
    for path, own in (("/etc/subuid", os.geteuid()), ("/etc/subgid", os.getegid())):
        ranges: list[tuple[int, int, int]] = [(0, own, 1)]
        inside = 1
        for start, count in subordinate_ranges(path, os.geteuid()):
            ranges.append((inside, start, count))
            inside += count
        if len(ranges) == 1:
            return None
        maps.append(ranges)
    try:
        return IdMap(uid=maps[0], gid=maps[1])
    except SpecError:  # overlapping ranges in the files: use the single-id map
        return None


async def _map_with_helpers(pid: int, id_map: IdMap) -> None:
    """Write a wide map through the setuid helpers newuidmap and newgidmap (an unprivileged supervisor).

    Raises:
        OSError: a helper refused (the ranges are not ours in /etc/subuid or /etc/subgid).
    """
    for tool, ranges, target in (("newuidmap", id_map.uid, "uid_map"), ("newgidmap", id_map.gid, "gid_map")):
        done = await trio.run_process(helper_argv(tool, pid, ranges), capture_stderr=True, check=False)
        if done.returncode != 0:
            message = (done.stderr or b"").decode(errors="replace").strip() or f"{tool} failed"
            raise OSError(errno.EPERM, f"{tool}: {message}", f"/proc/{pid}/{target}")


@contextmanager
def _typed_fd_exhaustion() -> Iterator[None]:
    """Out of fds (EMFILE, ENFILE) while making a spawn's pipes: a SetupError with the hint, not a bare OSError."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        error = SetupError("spawn", "pipe2", None, e.errno, e.strerror or os.strerror(e.errno),
                           diagnose("spawn", "pipe2", e.errno, None))
        raise error from e


async def _kill_and_reap_pid(pid: int) -> None:
    """SIGKILL and reap our unreaped child ``pid`` without a pidfd (there was no fd to spare); shielded.

    Until it is reaped the pid cannot name another process, so kill(2) is
    safe; waitpid with WNOHANG is polled, as there is nothing to wait on.
    """
    with trio.CancelScope(shield=True):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while True:
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG
            except ChildProcessError:
                return
            if done:
                return
            await trio.sleep(0.005)


@contextmanager
def _single_exceptions() -> Iterator[None]:
    """Let a lone exception out of an internal nursery as itself, not in an ExceptionGroup.

    anyns's own nurseries only host helper tasks, so with trio's strict
    exception groups (the default since 0.25) a caller's ``ExecError`` or
    ``ContainerFailed`` would otherwise arrive wrapped in a group of one.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1 or isinstance(group.exceptions[0], BaseExceptionGroup):
            raise
        exc = group.exceptions[0]
        context = exc.__context__
        try:
            raise exc  # the group only wrapped it: keep exc's own __cause__
        finally:
            exc.__context__ = context


#: (deny, errno, capabilities, allow) -> the filter as hex; shared by every supervisor of the process
_SECCOMP_HEX: dict[tuple[tuple[str, ...], int, tuple[str, ...], tuple[str, ...]], str] = {}
_MAX_SECCOMP = 64


def _remember_seccomp(policy: tuple[tuple[str, ...], int, tuple[str, ...], tuple[str, ...]], hexed: str) -> None:
    if len(_SECCOMP_HEX) >= _MAX_SECCOMP:
        del _SECCOMP_HEX[next(iter(_SECCOMP_HEX))]
    _SECCOMP_HEX[policy] = hexed


def _seccomp_policy(plan: Plan) -> tuple[tuple[str, ...], int, tuple[str, ...], tuple[str, ...]] | None:
    """The seccomp policy of ``plan``'s uncompiled seccomp op, as the filter cache's key; None without one."""
    for _step, call, _path, args in plan.ops:
        if call == "seccomp":
            deny, err, caps, allow = args
            assert isinstance(deny, tuple) and isinstance(err, int) and isinstance(caps, tuple)
            assert isinstance(allow, tuple)
            return (tuple(str(d) for d in deny), err, tuple(str(c) for c in caps), tuple(str(a) for a in allow))
    return None


def _seccomp_hex(deny: tuple[str, ...], err: int, capabilities: tuple[str, ...], allow: tuple[str, ...]) -> str:
    """The filter as BPF (hex, for the plan's JSON); blocking (tens of ms): called from a worker thread."""
    try:
        return seccomp_bpf(capabilities, allow, deny, err).hex()
    except OSError as e:
        raise UnsupportedError(
            f"seccomp: the filter could not be built: {e} (hint: install libseccomp2, "
            "or pass seccomp=None to run without a filter)") from e


def _with_seccomp_bpf(plan: Plan) -> Plan:
    """``plan`` with its seccomp policy op compiled to BPF: the child only installs it."""
    policy = _seccomp_policy(plan)
    if policy is None:
        return plan
    bpf = _SECCOMP_HEX.get(policy)
    if bpf is None:  # evicted meanwhile (64 other policies): compile it here, once
        bpf = _seccomp_hex(*policy)
        _remember_seccomp(policy, bpf)
    ops = tuple((step, "seccomp_bpf", path, (bpf,)) if call == "seccomp" else (step, call, path, args)
                for step, call, path, args in plan.ops)
    return attrs.evolve(plan, ops=ops)


def _cgroup_error(e: _cgroups.CgroupWriteError) -> SetupError:
    err = e.error.errno or 0
    hint = None
    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "cgroups need root, or a delegated cgroup (open_supervisor(cgroup_parent=...))"
    elif err == errno.EINVAL:
        hint = "the kernel refused the value: check the Limits"
    elif err == errno.EBUSY and e.path.endswith("memory.limit_in_bytes"):
        hint = "the memory in use is already above the limit"
    error = SetupError("cgroup", e.syscall, e.path, err, e.error.strerror or str(e.error), hint)
    error.__cause__ = e.error
    return error


#: with max_containers, how long a spawn refused for want of namespaces is
#: retried: within this long of a container's exit, and for at most this long
#: (the kernel's cleanup of a network namespace takes tens of ms, more under churn)
NAMESPACE_RELEASE_GRACE = 1.0


def _has_exited(container: Container) -> bool:
    """Whether the container's process has exited (its pidfd is readable), reaped or not."""
    if container.returncode is not None or container._pidfd < 0:
        return True
    return _pidfd_has_exited(container._pidfd)


def check_max_containers(value: object) -> None:
    """``open_supervisor(max_containers=...)``: a positive int or None, else SpecError."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise SpecError(f"open_supervisor: max_containers must be a positive int or None, not {value!r}")


@asynccontextmanager
async def open_supervisor(
    *, cgroup_parent: str | None = None, max_containers: int | None = None,
) -> AsyncIterator[Supervisor]:
    """Start a supervisor (and its zygote); on exit, kill and reap every container it started.

    Args:
        cgroup_parent: a cgroup v2 directory (delegated to this user, with the
            controllers enabled) under which containers with ``limits`` get
            their cgroups; default: beside the supervisor's own cgroup.
        max_containers: back-pressure. At most this many containers exist at
            once (from the start of their spawn until they are reaped); a
            ``run`` beyond that waits for one to end before it spawns. Use it
            when the host's limits (pids, fds, ``user.max_*_namespaces``,
            memory) are lower than the bursts you start: spawns then wait
            instead of failing with a ``SetupError`` whose ``resource`` says
            what ran out. A spawn refused for want of namespaces within a
            second of a container's exit is retried for up to a second, as
            the kernel frees a container's namespaces a little after it exits. Exec'd processes are not
            counted. Default: no limit.

    Example::

        async with anyns.open_supervisor() as sup:
            done = await sup.run(anyns.ContainerSpec(argv=["hostname"]), capture_stdout=True)
    """
    check_max_containers(max_containers)
    with _single_exceptions():
        async with trio.open_nursery() as nursery:
            supervisor: Supervisor = Supervisor._create(nursery, cgroup_parent, max_containers)
            try:
                supervisor._connection()  # start the zygote now, from this thread
                yield supervisor
            finally:
                with trio.CancelScope(shield=True):
                    await supervisor._aclose()
                nursery.cancel_scope.cancel()

