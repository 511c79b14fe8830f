"""The trio side: ``open_supervisor()``, and ``Supervisor``: run, exec, launch, stdio.

A spawn, in order (``Supervisor._run`` or ``_exec``, then ``_launch``):

1. the plan of the spec, compiled once and cached (``_plan``; a new seccomp
   policy compiled in a worker thread, once: ``_security``);
2. the container's cgroup leaf, if it needs one (``_cgroups.leaf_for``);
3. the fds the request carries, in the plan's order (``Plan.extra_fds``):
   joined namespaces, the cgroup's, the go pipe, the init's status channel,
   stdio (``StdioFds``). They sit in an exit stack (``_cleanup``) that closes them once
   the zygote has its copies;
4. the zygote's answer (``_zygote_client.answer``): the container is then
   made complete from its ``ContainerResources`` (``Container._create``),
   and owns its pidfd, its leaf and its status channel from there on;
5. a user namespace's maps written and a bridge's eth0 wired before the go
   byte (``_release_child``); the fds its child sends read from its channel;
6. stdio served and the exit awaited within the budgets (``_supervise``),
   then ``Container._release``: the one place a container lets go of all it
   owns, whatever way the run ended.

Containers are cloned by the zygote with CLONE_PARENT, so they are children
of this process: each one is waited for on its pidfd
(``trio.lowlevel.wait_readable``) and reaped with ``waitid(P_PIDFD)``, by the
task that started it. No thread waits, no SIGCHLD handler (worker threads
only read and remove the cgroup of a container with one). Whatever way a
``run`` ends (return, error, cancellation) it kills and reaps its container
before it returns, inside a shielded scope; when many are cancelled at once,
a few at a time (``_pacing``), so that the loop never stalls on a teardown.

The subsystems are their own modules: host probing ``_host``, cgroup policy
``_cgroups``, the uid/gid maps ``_userns`` (rootless policy: ``_host.Rootless``),
seccomp compilation ``_security``, bridges ``_network``, the zygote
connection ``_zygote_client``, teardown pacing ``_pacing``. This module holds the async glue.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import itertools
import math
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final, final

import attrs
import trio

from . import _cgroups, _protocol, _security
from ._cleanup import SmallAsyncExitStack, SmallExitStack
from ._container import (
    CompletedContainer,
    Container,
    ContainerHooks,
    ContainerResources,
    NoPublicConstructor,
    PersistedNamespace,
)
from ._errors import AnynsError, ContainerFailed, NetworkError, SetupError, SpecError, ZygoteError
from ._files import check_collect
from ._host import Rootless, newroot_dir, probe_host
from ._network import Attachment, Networking
from ._pacing import TEARDOWN_PACE, TURN_HOLD, Pacer
from ._plan import COLLECT_NEEDS_INIT, HostLayout, Plan, compile_exec_plan, compile_plan
from ._spec import (
    KIND_FLAGS,
    Bridge,
    ContainerSpec,
    HostRootfs,
    IdMap,
    Join,
    JoinNetwork,
    Namespaces,
    effective_namespaces,
    joined_namespaces,
    needs_cgroup,
    user_namespace_map,
)
from ._stdio import (
    DEVNULL,
    PIPE,
    STDOUT,
    StdinArg,
    StdioFds,
    StdioOptions,
    StdoutArg,
    collect_into,
    collect_tty,
    read_channel,
    read_to_eof,
    send_and_close,
)
from ._userns import helper_argv, map_text, write_maps_from_parent
from ._zygote_client import MAX_PLANS, RequestNotSent, ZygoteConnection, answer, kill_and_reap, kill_and_reap_pid

__all__ = ["DEVNULL", "PIPE", "STDOUT", "Supervisor", "open_supervisor"]

#: with max_containers, how long a spawn refused for want of namespaces is
#: retried: within this long of a container's exit, and for at most this long
#: (the kernel's cleanup of a network namespace takes tens of ms, more under churn)
NAMESPACE_RELEASE_GRACE = 1.0
#: seconds the captured streams may still be read after the container was reaped
DRAIN_AFTER_EXIT: Final = 2.0
#: the budgets anyns itself enforces (by ending the program): with check=True they fail the run whatever its status
_ENFORCED: Final = ("timeout", "cpu_time", "output")
#: stands for "a running container" in a spec used as a plan cache key
_A_CONTAINER: Final = "/proc/self/ns/<a running container>"


@final
class Supervisor(metaclass=NoPublicConstructor):
    """Starts containers through a zygote and owns them; made by ``open_supervisor()``."""

    def __init__(self, nursery: trio.Nursery, cgroup_parent: str | None = None,
                 max_containers: int | None = None) -> None:
        self._nursery = nursery
        self._cgroups = _cgroups.open_for_supervisor(cgroup_parent)
        self._zygote: ZygoteConnection | None = None
        self._plans: dict[object, tuple[int, Plan]] = {}
        #: seccomp policies being compiled in a worker thread, and the event set when that is done
        self._seccomp_pending: dict[_security.SeccompPolicy, trio.Event] = {}
        self._layouts: dict[object, HostLayout] = {}
        self._newroot = newroot_dir()
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
        self._rootless = Rootless() if os.geteuid() != 0 else None
        #: what each container asks of this supervisor (it holds these, not the supervisor)
        self._hooks = ContainerHooks(
            rootless=self._rootless is not None, exec=self._exec, keep=self._kept.add,
            detach_network=self._detach_network, release_leaf=self._release_cgroup, forget=self._running.discard,
            pacer=self._pacer)

    # ---- zygote and plans

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
            self._nursery.start_soon(kill_and_reap_pid, -pidfd)
        else:
            self._nursery.start_soon(kill_and_reap, pidfd)

    async def _plan(self, key: object, compile_: Callable[[], Plan]) -> tuple[int, Plan]:
        """The plan for ``key`` (a spec, or an exec's), compiled once and cached.

        A seccomp policy not seen before is compiled in a worker thread:
        libseccomp takes tens of milliseconds to build the profile's binary
        tree, which would stall every other container on the loop.
        """
        cached = self._plans.pop(key, None)
        if cached is None:
            plan = compile_()
            policy = _security.seccomp_policy(plan.ops)
            if policy is not None and not _security.seccomp_compiled(policy):
                await self._compile_seccomp(policy)
            cached = self._plans.pop(key, None)  # another task may have made it meanwhile
        if cached is None:
            cached = (next(self._plan_ids), attrs.evolve(plan, ops=_security.with_seccomp_bpf(plan.ops)))
            if len(self._plans) >= MAX_PLANS:  # unbounded distinct specs: forget the oldest
                old_id, _old = self._plans.pop(next(iter(self._plans)))
                if self._zygote is not None and self._zygote.error is None:
                    self._zygote.drop(old_id)
        self._plans[key] = cached  # most recently used last: eviction takes the oldest use
        return cached

    async def _compile_seccomp(self, policy: _security.SeccompPolicy) -> None:
        """Compile ``policy``'s filter in a worker thread, once: a burst of new specs waits for one compile."""
        pending = self._seccomp_pending.get(policy)
        if pending is not None:
            await pending.wait()
            return
        self._seccomp_pending[policy] = done = trio.Event()
        try:
            await trio.to_thread.run_sync(_security.compile_seccomp, policy)
        finally:
            del self._seccomp_pending[policy]
            done.set()

    async def _container_plan(self, spec: ContainerSpec, collect: bool = False) -> tuple[int, Plan]:
        """The plan of ``spec``; ``collect``: its init holds the container (``run(collect=...)``; part of the key)."""
        def compile_() -> Plan:
            layout_key = spec.rootfs if isinstance(spec.rootfs, HostRootfs) else None
            layout = self._layouts.get(layout_key)
            if layout is None:
                layout = self._layouts[layout_key] = probe_host(self._newroot, spec.rootfs, self._cgroups)
            return compile_plan(spec, layout, collect=collect)

        return await self._plan((_plan_key(spec), collect), compile_)

    async def _spawn(self, plan_id: int, plan: Plan, fds: list[int]) -> tuple[int, int]:
        """Ask the zygote for a container: its ``(pid, pidfd)`` once the clone succeeded (not yet exec)."""
        if self._closed:
            raise ZygoteError("the supervisor is closed")
        try:
            pending = await self._connection().request_spawn(plan_id, plan, fds)
        except RequestNotSent:
            try:  # once, on a fresh zygote
                pending = await self._connection().request_spawn(plan_id, plan, fds)
            except RequestNotSent as e:
                raise ZygoteError(f"the zygote died and a new one did not take requests: {e}") from None
        return await answer(pending)

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
        options = StdioOptions.of(stdin, capture_stdout, capture_stderr, stdout, stderr, check,
                                  started=task_status is not trio.TASK_STATUS_IGNORED, max_output=max_output)
        paths = check_collect(collect)
        if paths and not (spec.init and Namespaces.PID in effective_namespaces(spec)):
            raise SpecError(COLLECT_NEEDS_INIT)
        if self._capacity is None:  # nothing to retry, so no exits to note
            with _fd_exhaustion_as_setup_error():
                return await self._run(spec, options, task_status, paths)
        async with self._capacity:  # at max_containers: wait here until one is reaped
            delay = 0.005
            first_refusal = None
            while True:
                try:
                    return await self._run_counted(spec, options, task_status, paths)
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

    async def _run_counted(self, spec: ContainerSpec, options: StdioOptions,
                           task_status: trio.TaskStatus[Container], collect: tuple[str, ...]) -> CompletedContainer:
        """``_run``, noting when a container whose program ran has been reaped (its namespaces are on their way)."""
        try:
            with _fd_exhaustion_as_setup_error():
                done = await self._run(spec, options, task_status, collect)
        except ContainerFailed:
            self._last_exit = trio.current_time()
            raise
        self._last_exit = trio.current_time()
        return done

    async def _run(self, spec: ContainerSpec, options: StdioOptions, task_status: trio.TaskStatus[Container],
                   collect: tuple[str, ...]) -> CompletedContainer:
        if self._rootless is not None:
            spec = self._rootless.spec(spec)
        plan_id, plan = await self._container_plan(spec, bool(collect))
        leaf = _cgroups.leaf_for(self._cgroups, spec) if needs_cgroup(spec, self._rootless is not None) else None
        with SmallExitStack() as sent:  # the fds the request carries: closed once the zygote has its copies
            try:
                by_kind = _join_fds(spec, sent)
                if leaf is not None:
                    by_kind["leaf"] = _closed_by(sent, _cgroups.spawn_fds(leaf))
                go = None
                if "go" in plan.extra_kinds:
                    go_r, go = os.pipe2(os.O_CLOEXEC)
                    by_kind["go"] = _closed_by(sent, [go_r])
            except BaseException:
                if leaf is not None:
                    await self._release_cgroup(leaf)
                raise
            return await self._launch(spec, plan_id, plan, sent, by_kind, options, task_status,
                                      leaf=leaf, go=go, collect=collect)

    async def _exec(
        self,
        container: Container,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        cwd: str | None,
        options: StdioOptions,
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
        if container.returncode is not None:
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
        ns_fds = container._ns_fds
        rootless = self._rootless is not None and userns
        if rootless:  # exactly the namespaces whose files the container sent
            if "user" not in ns_fds:
                raise AnynsError(f"exec: container pid {container.pid} sent no namespace files to enter it by")
            flags = Namespaces(0)
            for kind in ns_fds:
                flags |= KIND_FLAGS[kind]
            flags &= ~Namespaces.USER

        def compile_() -> Plan:
            # The cgroup facts of the host layout, when the exec joins the container's cgroup.
            host = probe_host(self._newroot, HostRootfs(etc=()), self._cgroups) if leaf is not None else None
            return compile_exec_plan(spec, flags, host, userns, rootless)

        plan_id, plan = await self._plan(("exec", spec, int(flags), leaf is not None, userns, rootless), compile_)
        with SmallExitStack() as sent:
            try:
                with _fd_exhaustion_as_setup_error():
                    # Our own duplicate of the pidfd: the task that owns the container may
                    # reap it and close its fd while this request waits, and that fd number
                    # could then name something else (a new zygote's pidfd: the host).
                    # Rootless: duplicates of its namespace files too.
                    try:
                        by_kind = {"container": _closed_by(sent, [container._dup_pidfd()])}
                    except ProcessLookupError:
                        raise _exited(container, "setns")  # noqa: B904 - its cause is its own
                    if rootless:
                        for kind, fd in ns_fds.items():
                            by_kind[kind] = _closed_by(sent, [os.dup(fd)])
                if leaf is not None:  # the exec'd process joins the container's cgroup, and holds it
                    by_kind["leaf"] = _closed_by(sent, _cgroups.spawn_fds(leaf))
                    leaf.users += 1
                with _fd_exhaustion_as_setup_error():
                    return await self._launch(spec, plan_id, plan, sent, by_kind, options, task_status,
                                              leaf=leaf, shares_cgroup=True)
            except SetupError as e:
                if e.errno in (errno.ENOMEM, errno.ESRCH) and container._process_exited():
                    # clone3 (or, rootless, a fork) into a pid namespace whose init is
                    # gone; setns into a reaped process, or into a dead one's namespaces
                    await trio.lowlevel.checkpoint_if_cancelled()
                    raise _exited(container, e.syscall)  # noqa: B904 - its cause is its own
                raise

    async def _launch(
        self,
        spec: ContainerSpec,
        plan_id: int,
        plan: Plan,
        sent: SmallExitStack,
        by_kind: dict[str, list[int]],
        options: StdioOptions,
        task_status: trio.TaskStatus[Container],
        *,
        leaf: _cgroups.Leaf | None = None,
        shares_cgroup: bool = False,
        go: int | None = None,
        collect: tuple[str, ...] = (),
    ) -> CompletedContainer:
        """Start the process ``plan`` describes, stream its stdio, wait for it and reap it.

        ``sent``: the fds the request carries (``by_kind``, the plan's extra
        fds), closed here as soon as the clone is answered. ``leaf``: its
        cgroup, one use of which this call owns: the container's once made,
        else released here. ``go``: the write end of the pipe a user-namespaced
        or Bridge container waits on; its maps are written and its network
        wired before the byte is written (and the pipe closed).
        """
        started = task_status is not trio.TASK_STATUS_IGNORED
        # Two stacks, as trio's run_process: ``always`` is closed however this ends;
        # ``until_made`` only if no container was made (it owns them from then on).
        async with SmallAsyncExitStack() as until_made:
            if leaf is not None:
                until_made.push_async_callback(self._release_cgroup, leaf)
            container: Container | None = None
            # ``always`` encloses the release: a container is killed and reaped (in its turn,
            # when many are cancelled at once) before its pipes are closed, so that the loop
            # iteration that wakes a thousand cancelled runs does no more than bring each to
            # its turn (``_pacing``).
            with SmallExitStack() as always:
                try:
                    if go is not None:
                        always.callback(os.close, go)
                    if plan.tty and not (started or options.capture_stdout):
                        raise ValueError("tty=True needs 'await nursery.start(...)' (Container.tty) "
                                         "or capture_stdout=True")
                    if plan.channel_is_socket:
                        # A socket, not a pipe: the child sends fds on it (a terminal's master end, namespace files).
                        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
                        err_r, err_w = ours.detach(), theirs.detach()
                    else:
                        err_r, err_w = os.pipe2(os.O_CLOEXEC)
                    always.callback(_close_notified, err_r)
                    sent.callback(os.close, err_w)
                    status_r = None
                    if "status" in plan.extra_kinds:  # the init's report of the program's status
                        if plan.holds_init:  # a socket: our close of it is the release of the holding init
                            ours_s, theirs_s = socket.socketpair(socket.AF_UNIX,
                                                                 socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                            status_r, status_w = ours_s.detach(), theirs_s.detach()
                            until_made.callback(os.close, status_r)
                            os.set_blocking(status_r, False)
                        else:
                            status_r, status_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                            until_made.callback(os.close, status_r)
                        by_kind["status"] = _closed_by(sent, [status_w])
                    stdio = StdioFds.open(options, self._devnull, sent, tty=plan.tty)
                    always.callback(stdio.close)
                    try:
                        pid, pidfd = await self._spawn(plan_id, plan,
                                                       [*stdio.child, err_w, *plan.extra_fds(by_kind)])
                    finally:
                        sent.close()  # the child has its copies
                    # Born with a pid namespace of its own, it is 1 there; else read below,
                    # while it surely runs, so that ns_pid is known after it exits too.
                    own_pid_namespace = bool(plan.clone_flags & Namespaces.PID)
                    container = Container._create(ContainerResources(
                        spec, pid, pidfd, self._hooks, ns_pid=1 if own_pid_namespace else None, leaf=leaf,
                        shares_cgroup=shares_cgroup, status_fd=status_r, holds=plan.holds_init, collect=collect))
                    until_made.pop_all()  # the container's now: its leaf, its status channel
                    self._running.add(container)
                    if not own_pid_namespace:
                        with contextlib.suppress(AnynsError):  # already gone: it has no pid inside to report
                            container.ns_pid  # noqa: B018 - read and kept
                    os.set_blocking(err_r, False)
                    if go is not None:
                        await self._release_child(container, go, err_r)
                    if started or plan.channel_is_socket:
                        # nursery.start returns only once the program runs: wait for
                        # EOF on the error channel (it is close-on-exec) or a failure record.
                        failure, got = await read_channel(err_r, plan.channel_is_socket)
                        container._adopt_sent_fds(got.get(b"TTY", []), plan.sent_namespaces, got.get(b"NS", []),
                                                  got.get(b"ROOT", []))
                        if failure:
                            with trio.CancelScope(shield=True):
                                await container._wait_and_reap()
                            raise SetupError.from_record(*_protocol.decode_failure(failure))
                    return await self._supervise(
                        container, stdio, options, task_status,
                        # Without nursery.start nobody needs the moment of exec: one
                        # wait (on the pidfd) instead of two, then the record if any.
                        None if (started or plan.channel_is_socket) else err_r,
                    )
                finally:
                    if container is not None:
                        await container._release()

    async def _release_child(self, container: Container, go: int, err_r: int) -> None:
        """Write a user-namespaced container's uid/gid maps, give a Bridge container its eth0; then let it go on.

        If the child failed before it got here, its own error wins over the
        one that follows from it.
        """
        try:
            id_map = user_namespace_map(container.spec)
            if id_map is not None:
                try:
                    if self._rootless is not None and self._rootless.needs_helpers(id_map):
                        await _map_with_helpers(container.pid, id_map)
                    else:
                        # An unprivileged writer must deny setgroups before writing gid_map (user_namespaces(7)).
                        write_maps_from_parent(container.pid, map_text(id_map.uid), map_text(id_map.gid),
                                               deny_setgroups=self._rootless is not None)
                except OSError as e:
                    raise SetupError.from_oserror("userns", "write", e) from e
            bridge = container.spec.network
            if isinstance(bridge, Bridge):
                container._wired(await self._networking.attach(bridge, container.pid))
            os.write(go, b"1")
        except (NetworkError, SetupError, OSError):
            # Most often the child failed first (a missing bind source): its
            # netns or its go pipe are gone, and its own record says why.
            with trio.CancelScope(shield=True):
                container.kill()
                await container._wait_and_reap()
            failure = await read_to_eof(err_r, _protocol.MAX_FAILURE)
            if failure:
                raise SetupError.from_record(*_protocol.decode_failure(failure))  # noqa: B904 - its cause is its own
            raise

    async def _supervise(
        self,
        container: Container,
        stdio: StdioFds,
        options: StdioOptions,
        task_status: trio.TaskStatus[Container],
        err_r: int | None,
    ) -> CompletedContainer:
        """From the clone (or the exec) to the container's exit: stream stdio, wait, reap.

        ``err_r`` is the error channel when the exec has not been confirmed yet:
        after the exit it holds a failure record, or nothing if execve succeeded.
        """
        captured: dict[str, bytes] = {}
        tty = container._take_tty_fd()
        if tty is not None:
            await self._serve_tty(container, tty, options, captured, task_status)
        elif not stdio.has_pipes:
            # No pipes to serve, so no nursery (the common case at scale).
            task_status.started(container)
            await container._wait_within_budgets()
        else:
            await self._serve_stdio(container, stdio, options, captured, task_status)
        assert container.returncode is not None
        if err_r is not None:
            failure = await read_to_eof(err_r, _protocol.MAX_FAILURE)
            if failure:
                raise SetupError.from_record(*_protocol.decode_failure(failure))
        done = CompletedContainer(
            container.spec.argv, container.returncode,
            captured.get("stdout") if options.capture_stdout else None,
            captured.get("stderr") if options.capture_stderr else None,
            container.pid, container._stats(), container.oom_killed, container.exceeded,
            files=container._files,
        )
        if container._collect_error is not None:  # a collected file too large, or not a regular file
            raise container._collect_error
        if options.check and (done.returncode != 0 or done.exceeded in _ENFORCED):
            limits = container.spec.limits
            raise ContainerFailed(done.returncode, container.spec.argv, done.stdout, done.stderr,
                                  oom_killed=done.oom_killed, memory_limit=limits.memory if limits else None,
                                  exceeded=done.exceeded, budget=_budget(container.spec, options, done.exceeded))
        return done

    async def _serve_tty(
        self, container: Container, tty: int, options: StdioOptions, captured: dict[str, bytes],
        task_status: trio.TaskStatus[Container],
    ) -> None:
        """The terminal's master end ``tty``: collected (capture_stdout) or handed out as ``Container.tty``."""
        master = trio.lowlevel.FdStream(tty)
        if not options.capture_stdout:
            container.tty = master  # the caller's now, as PIPE streams are
            task_status.started(container)
            await container._wait_within_budgets()
            return
        try:
            with _single_exceptions():
                async with trio.open_nursery() as nursery:
                    if options.feed is not None:
                        nursery.start_soon(master.send_all, options.feed)  # typed in; the terminal stays open
                    nursery.start_soon(collect_tty, master, captured, options.max_output, _over_output(container))
                    task_status.started(container)
                    await container._wait_within_budgets()
                    _bound_the_drain(nursery)
        finally:
            with trio.CancelScope(shield=True):
                await master.aclose()

    async def _serve_stdio(
        self,
        container: Container,
        stdio: StdioFds,
        options: StdioOptions,
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
                    stdio.hand_over()  # the streams own our ends from here on
                    if stdio.parent_in is not None:
                        sin = trio.lowlevel.FdStream(stdio.parent_in)
                        if options.feed is not None:
                            ours.append(sin)
                            nursery.start_soon(send_and_close, sin, options.feed)
                        else:
                            container.stdin = sin
                    for name, fd, capture in (("stdout", stdio.parent_out, options.capture_stdout),
                                              ("stderr", stdio.parent_err, options.capture_stderr)):
                        if fd is not None:
                            out = trio.lowlevel.FdStream(fd)
                            if capture:
                                ours.append(out)
                                nursery.start_soon(collect_into, out, captured, name, options.max_output,
                                                   _over_output(container))
                            else:
                                setattr(container, name, out)
                    task_status.started(container)
                    await container._wait_within_budgets()
                    _bound_the_drain(nursery)
        finally:
            with trio.CancelScope(shield=True):
                for stream in ours:
                    await stream.aclose()

    # ---- what containers ask of it (ContainerHooks), and the close

    async def _detach_network(self, attachment: Attachment) -> None:
        await self._networking.detach(attachment)

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
            with contextlib.suppress(OSError):
                kept.release()
        await self._networking.aclose()
        if self._cgroups is not None:
            self._cgroups.close()
        os.close(self._devnull)


# --------------------------------------------------------------------------- helpers


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


def _join_fds(spec: ContainerSpec, sent: SmallExitStack) -> dict[str, list[int]]:
    """The namespace sources of ``spec.join`` by kind, as fds closed by ``sent``.

    A running container is joined through its pidfd (``setns`` accepts one
    since Linux 5.8), a duplicate: its owner may reap it and close its own fd
    meanwhile; a path is opened here.

    Raises:
        SetupError: a container that has exited, or a path that cannot be opened.
    """
    by_kind: dict[str, list[int]] = {}
    for kind, source in joined_namespaces(spec).items():
        if isinstance(source, Container):
            try:
                if source.returncode is not None:
                    raise ProcessLookupError
                by_kind[kind] = _closed_by(sent, [source._dup_pidfd()])
            except ProcessLookupError:
                raise SetupError.from_errno(  # noqa: B904 - its cause is its own (a ProcessLookupError)
                    "namespaces", "setns", errno.ESRCH,
                    hint=f"the container to join ({kind}), pid {source.pid}, has exited")
        else:
            try:
                fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise SetupError.from_oserror("namespaces", "open", e, source) from e
            by_kind[kind] = _closed_by(sent, [fd])
    return by_kind


def _closed_by(stack: SmallExitStack, fds: list[int]) -> list[int]:
    """``fds``, now closed by ``stack``."""
    for fd in fds:
        stack.callback(os.close, fd)
    return fds


def _close_notified(fd: int) -> None:
    trio.lowlevel.notify_closing(fd)
    os.close(fd)


def _exited(container: Container, syscall: str) -> SetupError:
    """The error of an exec into a container that is gone; its cause is a ProcessLookupError."""
    return SetupError.from_errno("exec", syscall, errno.ESRCH, hint=f"container pid {container.pid} has exited")


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


@contextlib.contextmanager
def _fd_exhaustion_as_setup_error() -> Iterator[None]:
    """Out of fds (EMFILE, ENFILE) while making a spawn's pipes: a SetupError with the hint, not a bare OSError."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        raise SetupError.from_errno("spawn", "pipe2", e.errno, message=e.strerror) from e


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


def _bound_the_drain(nursery: trio.Nursery) -> None:
    """The container is reaped: read what its pipes hold, then stop, at the latest ``DRAIN_AFTER_EXIT`` later.

    Every process of the container is dead by now (its pid namespace, or its
    cgroup, went with the program), so the pipes end at once, unless the
    program handed its stdout to a process outside (SCM_RIGHTS over a socket
    on a shared directory): that one would otherwise hold ``run`` open for
    ever, past every budget. What was read is kept.
    """
    nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline, trio.current_time() + DRAIN_AFTER_EXIT)


def _budget(spec: ContainerSpec, options: StdioOptions, exceeded: str | None) -> float | None:
    """The value of the budget ``exceeded`` names (seconds, or bytes for "output"), for ContainerFailed's message."""
    if exceeded == "timeout":
        return spec.timeout
    if exceeded == "cpu_time":
        return spec.limits.cpu_time if spec.limits is not None else None
    if exceeded == "output":
        return options.max_output
    return None


def _over_output(container: Container) -> Callable[[], Awaitable[None]]:
    """What a captured stream past ``max_output`` does: end the container for the "output" budget."""
    return functools.partial(container._end_for_budget, "output")


@contextlib.contextmanager
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

