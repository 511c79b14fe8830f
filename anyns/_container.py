"""Handles for containers: ``Container`` (running) and ``CompletedContainer`` (finished).

Also ``namespaces_of(pid)``: the namespace identities of any process, as
``readlink /proc/PID/ns/KIND`` shows them.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import math
import os
import select
import signal
import struct
import subprocess
import termios
import time
import types
from collections.abc import Generator, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final, NoReturn, final

import attrs
import trio

from . import _cgroups, _files, _init
from ._errors import AnynsError, SetupError, SpecError, UnsupportedError
from ._namespaces import persist_from_host, release_from_host
from ._pacing import TURN_HOLD, Pacer
from ._security import capability_numbers
from ._spec import KIND_FLAGS, user_namespace_map
from ._stdio import StdioOptions
from ._sys import _libc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._network import Attachment
    from ._spec import ContainerSpec
    from ._stdio import StdinArg, StdoutArg

__all__ = ["CompletedContainer", "Container", "ContainerStats", "NamespaceId", "PersistedNamespace", "namespaces_of",
           "persist_namespace"]

#: the namespace kinds of /proc/PID/ns, in the names the kernel uses there (those of ``_spec.KIND_FLAGS``)
NAMESPACE_KINDS: Final = tuple(sorted(KIND_FLAGS))


class NoPublicConstructor(type):
    """Metaclass for handles that only anyns creates (trio's idiom)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} has no public constructor")

    def _create(cls, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*args, **kwargs)


@final
class NamespaceId(str):
    """A namespace identity such as ``'pid:[4026532201]'``.

    It is the string ``readlink /proc/PID/ns/KIND`` prints, so it compares
    equal to it; ``kind`` and ``inode`` give its parts. Same id, same namespace.
    """

    __slots__ = ()

    @property
    def kind(self) -> str:
        """The namespace kind: ``"mnt"``, ``"pid"``, ``"net"`` …"""
        return self.partition(":")[0]

    @property
    def inode(self) -> int:
        """The inode number of the namespace in the nsfs filesystem."""
        return int(self.partition("[")[2].rstrip("]"))


def namespaces_of(pid: int) -> Mapping[str, NamespaceId]:
    """The namespaces process ``pid`` is in, by kind (``"mnt"``, ``"pid"``, ``"net"`` …).

    Kinds the kernel lacks are left out.

    Raises:
        ProcessLookupError: no such process.
    """
    result: dict[str, NamespaceId] = {}
    for kind in NAMESPACE_KINDS:
        try:
            result[kind] = NamespaceId(os.readlink(f"/proc/{pid}/ns/{kind}"))
        except FileNotFoundError:
            # Missing for a kind this kernel has (ours has it): the process
            # is gone, or a zombie that has let go of its namespaces.
            if os.path.exists(f"/proc/self/ns/{kind}") or not os.path.exists(f"/proc/{pid}"):
                raise ProcessLookupError(f"no running process with pid {pid}") from None
    return result


def _namespaces_from_files(fds: Mapping[str, int]) -> Mapping[str, NamespaceId]:
    """A rootless container's namespaces: its own from the files it sent, the rest are ours (it shares them)."""
    result = dict(namespaces_of(os.getpid()))
    for kind, fd in fds.items():
        result[kind] = NamespaceId(f"{kind}:[{os.fstat(fd).st_ino}]")
    return result


@final
class PersistedNamespace(metaclass=NoPublicConstructor):
    """A namespace kept alive by a bind mount of its file (``persist_namespace``).

    Attributes:
        kind: the namespace kind (``"net"`` …).
        path: where the namespace file is bound; join it with ``anyns.Join(KIND=path)``.
        id: the namespace's identity, as ``readlink /proc/PID/ns/KIND`` shows it.
    """

    def __init__(self, kind: str, path: str, ns_id: NamespaceId, created: bool) -> None:
        self.kind = kind
        self.path = path
        self.id = ns_id
        self._created = created
        self._released = False

    def __repr__(self) -> str:
        state = "released" if self._released else "kept"
        return f"<anyns.PersistedNamespace {self.id} at {self.path!r} {state}>"

    def release(self) -> None:
        """Unmount the namespace file (and remove it if it was created for it); idempotent.

        The namespace itself ends when nothing else uses it.
        """
        if not self._released:
            release_from_host(self.path, self._created)
            self._released = True

    def __enter__(self) -> PersistedNamespace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def persist_namespace(source: int | str | os.PathLike[str], kind: str, path: str | os.PathLike[str]
                      ) -> PersistedNamespace:
    """Bind-mount a namespace file at ``path`` so the namespace outlives its processes.

    Args:
        source: a pid (its ``/proc/PID/ns/KIND`` is used) or a namespace file path.
        kind: ``"mnt"``, ``"pid"``, ``"net"``, ``"ipc"``, ``"uts"``, ``"cgroup"``, ``"time"``, ``"user"``.
        path: a file to bind it on (created if missing, removed again by ``release()``).

    Raises:
        SpecError: an unknown kind.
        SetupError: the source is not a namespace file, or the mount failed.
    """
    if kind not in NAMESPACE_KINDS:
        raise SpecError(f"persist_namespace: unknown namespace kind {kind!r}; expected one of {NAMESPACE_KINDS}")
    where = os.fspath(path)
    src = f"/proc/{source}/ns/{kind}" if isinstance(source, int) else os.fspath(source)
    try:
        created = persist_from_host(src, where)
    except OSError as e:
        raise SetupError.from_oserror("persist", "mount", e, src,
                                      "the source must be a namespace file such as /proc/PID/ns/net") from e
    try:
        ns_id = _nsfs_name(where, kind)
    except OSError as e:
        release_from_host(where, created)
        raise SetupError.from_oserror("persist", "ioctl", e, src, f"{src!r} is not a {kind} namespace file") from e
    kept: PersistedNamespace = PersistedNamespace._create(kind, where, ns_id, created)
    return kept


_NS_GET_NSTYPE: Final = 0xB703  # ioctl_ns(2): the CLONE_NEW* type of a namespace file


def _nsfs_name(path: str, kind: str) -> NamespaceId:
    """``kind:[inode]`` of the namespace file at ``path``; OSError if it is not a ``kind`` namespace."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        nstype = fcntl.ioctl(fd, _NS_GET_NSTYPE)  # ENOTTY for a file that is not a namespace
        inode = os.fstat(fd).st_ino
    finally:
        os.close(fd)
    if nstype != KIND_FLAGS[kind]:
        raise OSError(errno.EINVAL, f"not a {kind} namespace", path)
    return NamespaceId(f"{kind}:[{inode}]")


@attrs.frozen
class ContainerStats:
    """What a container used: ``CompletedContainer.stats`` (at its end), ``Container.statistics()`` (now).

    With ``limits`` the figures are its cgroup's, for all of its processes
    (exec'd ones too). Without, they come from the kernel's account of its
    first process and the processes it reaped (``getrusage``), and the
    memory peak is the largest single process's resident set.

    Attributes:
        wall_time: seconds from its clone to its end (or to now).
        cpu_user: CPU seconds in user mode.
        cpu_system: CPU seconds in the kernel on its behalf.
        memory_peak: the most memory it used at once, in bytes (None if unknown).
        memory_current: memory in use now, in bytes (``statistics()`` with a memory controller).
        pids_current: tasks alive now (``statistics()`` with a pids controller).
    """

    wall_time: float
    cpu_user: float
    cpu_system: float
    memory_peak: int | None = None
    memory_current: int | None = None
    pids_current: int | None = None


class CompletedContainer(subprocess.CompletedProcess[bytes]):
    """A finished container: what ``Supervisor.run`` returns.

    Attributes:
        args: the argv of the program.
        returncode: its exit status, or ``-N`` when signal N killed it (``-9``
            when the OOM killer chose it).
        stdout: captured output, or None when not captured.
        stderr: captured error output, or None when not captured.
        pid: its pid in the host's view, while it ran.
        stats: a ``ContainerStats``: CPU time, peak memory, wall time.
        oom_killed: whether the OOM killer killed a process of it (its
            ``Limits.memory`` was reached; needs ``limits``).
        exceeded: the verdict: None, or the budget it ran out of:
            ``"timeout"`` (``ContainerSpec.timeout``), ``"cpu_time"``
            (``Limits.cpu_time``), ``"output"`` (``run(max_output=)``; the
            output is cut at the cap), ``"memory"`` (the OOM killer ended a
            process of it, beside ``oom_killed``). The first budget to run
            out is the verdict; what was captured until then is returned.
        files: with ``run(collect=[...])``, each collected path's content
            (read after the program's end, a budget kill included), a path
            that did not exist left out; empty without ``collect``. Read-only.
    """

    def __init__(self, args: Sequence[str], returncode: int, stdout: bytes | None,
                 stderr: bytes | None, pid: int, stats: ContainerStats | None = None,
                 oom_killed: bool = False, exceeded: str | None = None,
                 files: Mapping[str, bytes] | None = None) -> None:
        super().__init__(list(args), returncode, stdout, stderr)
        self.pid = pid
        self.stats = ContainerStats(0.0, 0.0, 0.0) if stats is None else stats
        self.oom_killed = oom_killed
        self.exceeded = exceeded
        self.files: Mapping[str, bytes] = types.MappingProxyType(dict(files or {}))

    def __repr__(self) -> str:
        oom = " oom_killed" if self.oom_killed else ""
        over = f" exceeded={self.exceeded}" if self.exceeded is not None else ""
        return f"<anyns.CompletedContainer {self.args!r} pid={self.pid} returncode={self.returncode}{oom}{over}>"


@attrs.frozen(eq=False)
class ContainerHooks:
    """What a container asks of the supervisor that made it; one per supervisor, shared by its containers.

    The container holds these callables, not the supervisor: it calls
    nothing of the supervisor's but them.

    Attributes:
        rootless: the supervisor is unprivileged (its containers' files are reached as its own user).
        exec: ``Container.exec``'s work: a new process in the container's namespaces.
        keep: remember a namespace kept with ``keep_namespace``, released when the supervisor closes.
        detach_network: undo a container's place on a bridge (its veth, its address).
        release_leaf: one user fewer of a cgroup leaf; the last removes it (in a worker thread when
            the second argument says its container was killed, maybe with many others).
        forget: the container is reaped and unwired: the supervisor stops tracking it.
        pacer: the teardown turns (``_pacing``): at most a few containers between their kill and their reap.
    """

    rootless: bool
    exec: Callable[[Container, Sequence[str], Mapping[str, str] | None, str | None, StdioOptions,
                    trio.TaskStatus[Container]], Awaitable[CompletedContainer]]
    keep: Callable[[PersistedNamespace], None]
    detach_network: Callable[[Attachment], Awaitable[None]]
    release_leaf: Callable[[_cgroups.Leaf, bool], Awaitable[None]]
    forget: Callable[[Container], None]
    pacer: Pacer


@attrs.frozen(eq=False)
class ContainerResources:
    """What a container owns from its clone on: ``Container._create(resources)`` makes it from them.

    Attributes:
        spec: the spec it runs (an exec: the container's, with its argv).
        pid: its first process, as the host sees it.
        pidfd: that process's pidfd, from the zygote (the container closes it once reaped).
        hooks: its supervisor's ``ContainerHooks``.
        ns_pid: its pid in its own pid namespace, if known at the clone (1 for one born with its own).
        leaf: its cgroup, one use of which it releases (an exec shares its container's).
        shares_cgroup: ``leaf`` is its container's (an exec): no budget, statistics or freezer of its own.
        status_fd: with an init, its end of the channel the init reports the program's status on.
        holds: the init holds the container after its program's end, until the status channel is closed.
        collect: the paths to read then (``run(collect=...)``).
    """

    spec: ContainerSpec
    pid: int
    pidfd: int
    hooks: ContainerHooks
    ns_pid: int | None = None
    leaf: _cgroups.Leaf | None = None
    shares_cgroup: bool = False
    status_fd: int | None = None
    holds: bool = False
    collect: tuple[str, ...] = ()


@final
class Container(metaclass=NoPublicConstructor):
    """A running (or finished) container; returned by ``nursery.start(sup.run, spec)``.

    Made complete from its ``ContainerResources`` right after its clone
    (``Container._create(resources)``); what arrives later comes through
    ``_wired`` (its place on a bridge) and ``_adopt_sent_fds`` (what its child
    sent), and ``_release`` is the one place it lets go of all of it.

    Attributes:
        spec: the spec it was made from.
        pid: its pid as the host sees it.
        returncode: None while it runs; then its exit status, or ``-N`` for signal N.
        stdin: a trio ``SendStream`` when started with ``stdin=anyns.PIPE``, else None.
        stdout: a trio ``ReceiveStream`` when started with ``stdout=anyns.PIPE``, else None.
        stderr: likewise for ``stderr=anyns.PIPE``.
        addresses: with ``anyns.Bridge``, the address (with its prefix) of its
            ``eth0``; empty otherwise.
    """

    def __init__(self, resources: ContainerResources) -> None:
        self.spec = resources.spec
        self._hooks = resources.hooks
        self.pid = resources.pid
        self.returncode: int | None = None
        self.stdin: trio.abc.SendStream | None = None
        self.stdout: trio.abc.ReceiveStream | None = None
        self.stderr: trio.abc.ReceiveStream | None = None
        #: None once closed (after the reap)
        self._pidfd: int | None = resources.pidfd
        #: set once it has been reaped *and* everything anyns set up for it is
        #: undone (its veth, its address): what wait() and the supervisor wait for
        self._finished = trio.Event()
        self._ns_pid: int | None = resources.ns_pid
        #: with ContainerSpec(tty=True) and nursery.start: the terminal's master end
        self.tty: trio.abc.Stream | None = None
        #: the terminal's master end its child sent, until it is handed out or served
        self._tty_fd: int | None = None
        #: what this container got on a Bridge: its eth0 address (empty otherwise)
        self.addresses: tuple[ipaddress.IPv4Interface, ...] = ()
        #: its place on a bridge while wired, for ``_release`` to undo
        self._network: Attachment | None = None
        self._namespaces: Mapping[str, NamespaceId] | None = None
        #: a rootless container's namespace files by kind, sent by its child
        #: (Plan.sent_namespaces): exec enters through them, ``namespaces``
        #: reads them; its init is not dumpable, so /proc/PID/ns is closed to us
        self._ns_fds: dict[str, int] = {}
        #: its cgroup (ContainerSpec.limits), shared with processes exec'd into it
        self._leaf: _cgroups.Leaf | None = resources.leaf
        self._started_at = time.monotonic()
        self._ended_at: float | None = None
        #: (user s, system s, max RSS bytes) from waitid's rusage
        self._usage: tuple[float, float, int] = (0.0, 0.0, 0)
        #: its cgroup's figures when it was reaped (read before the cgroup is removed)
        self._final: dict[str, float | int | None] | None = None
        #: with an init: the channel the init reports the program's status on (None once closed)
        self._status_fd: int | None = resources.status_fd
        #: an exec'd process shares its container's cgroup: OOM kills before it
        #: started are not its own, and the cgroup's figures are the container's
        self._shares_cgroup = resources.shares_cgroup and resources.leaf is not None
        self._oom_base = int(_cgroups.statistics(resources.leaf).get("oom_kills") or 0) \
            if self._shares_cgroup and resources.leaf is not None else 0
        #: rootless: an O_PATH fd of its root, sent by its child after the pivot (``read_file``)
        self._root_fd: int | None = None
        #: run(collect=...): the init holds the container after the program's end
        #: (``hold_with_init``), its status channel a socket whose close releases it
        self._holds = resources.holds
        #: the paths to read then (emptied when the run is abandoned), and what was read
        self._collect: tuple[str, ...] = resources.collect
        self._files: dict[str, bytes] = {}
        #: why a collected file could not be read (too large, not a regular file …), raised by run
        self._collect_error: AnynsError | None = None
        #: the program's status, reported by a holding init before it is released
        self._program_status: int | None = None
        #: the budget it ran out of, once one has (the first one wins): see ``exceeded``
        self._exceeded: str | None = None

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"returncode={self.returncode}"
        return f"<anyns.Container {list(self.spec.argv)!r} pid={self.pid} {state}>"

    @property
    def ns_pid(self) -> int:
        """Its pid inside its own pid namespace (1 with ``Namespaces.PID``), from ``NSpid``.

        Known from the spawn on, so also after the container has exited: 1 for
        a container born with a pid namespace of its own, else read from
        ``/proc/PID/status`` when it was spawned.
        """
        if self._ns_pid is None:
            try:
                with open(f"/proc/{self.pid}/status", "rb") as f:
                    for line in f:
                        if line.startswith(b"NSpid:"):
                            self._ns_pid = int(line.split()[-1])
                            break
            except FileNotFoundError:
                raise AnynsError(f"ns_pid: container pid {self.pid} has already exited") from None
            if self._ns_pid is None:  # pragma: no cover - kernels before 4.1
                self._ns_pid = self.pid
        return self._ns_pid

    # ---- what the supervisor gives it after the clone, and the one place it lets go

    def _wired(self, attachment: Attachment) -> None:
        """Its eth0 on a bridge is up: ``_release`` detaches it."""
        self._network = attachment
        self.addresses = (attachment.address,)

    def _adopt_sent_fds(self, tty: list[int], kinds: tuple[str, ...], namespaces: list[int],
                        root: list[int] | None = None) -> None:
        """Keep what the child sent on its error channel: a terminal's master end, its namespace files, its root."""
        for fd in tty[1:]:
            os.close(fd)
        if tty:
            self._tty_fd = tty[0]
        for fd in (root or [])[1:]:
            os.close(fd)
        if root:
            self._root_fd = root[0]
        if len(namespaces) != len(kinds):  # not what the plan said: keep none
            for fd in namespaces:
                os.close(fd)
            return
        self._ns_fds = dict(zip(kinds, namespaces, strict=True))

    def _take_tty_fd(self) -> int | None:
        """The terminal's master end its child sent, now the caller's to close; None without one."""
        fd, self._tty_fd = self._tty_fd, None
        return fd

    def _dup_pidfd(self) -> int:
        """A duplicate of its pidfd for the caller to close: its own may be closed meanwhile (reaped).

        Raises:
            ProcessLookupError: it has been reaped.
        """
        if self._pidfd is None:
            raise ProcessLookupError(errno.ESRCH, f"container pid {self.pid} has been reaped")
        return os.dup(self._pidfd)

    def _process_exited(self) -> bool:
        """Whether its first process has exited (its pidfd is readable), reaped or not."""
        return self.returncode is not None or self._pidfd is None or _has_exited(self._pidfd)

    async def _release(self) -> None:
        """Kill and reap it unless it already was, then undo everything set up for it; shielded, so always completes.

        The one place a container lets go of what it owns: its process (given
        ``spec.stop_grace`` on SIGTERM first, when cancelled or failed while it
        runs), its place on a bridge, its use of its cgroup, the fds its child
        sent; then its supervisor forgets it and ``wait()`` returns.

        A container still running is killed in its turn (``_pacing``): when a
        thousand runs are cancelled at once, the loop iteration that wakes them
        only brings each here, and the kills, exits and reaps follow a few at a
        time. One with a ``stop_grace`` gets its grace at once and waits for a
        turn only for the final kill.
        """
        pacer = self._hooks.pacer
        paced = killed = False
        try:
            with trio.CancelScope(shield=True):
                if self.returncode is None and self.spec.stop_grace <= 0:
                    await pacer.turn()
                    paced = True
                if self.returncode is None:
                    self._collect = ()  # an abandoned run: its files are for nobody
                if self.returncode is None and self.spec.stop_grace > 0:
                    self.terminate()
                    killed = True
                    with trio.move_on_after(self.spec.stop_grace):
                        await self._wait_and_reap(teardown=True)
                if self.returncode is None:
                    if not paced:
                        await pacer.turn()
                        paced = True
                    self.kill()
                    killed = True
                    with trio.move_on_after(TURN_HOLD):  # one slow to die passes its turn on
                        await self._wait_and_reap(teardown=True)
                    pacer.done()
                    paced = False
                    await self._wait_and_reap(teardown=True)
                if paced:  # it had ended meanwhile
                    pacer.done()
                    paced = False
                network, self._network = self._network, None
                if network is not None:
                    # Now, not when the kernel gets round to it: "no veth left" holds when run returns.
                    await self._hooks.detach_network(network)
                leaf, self._leaf = self._leaf, None
                if leaf is not None:
                    await self._hooks.release_leaf(leaf, killed)
        finally:
            if paced:
                pacer.done()
            tty = self._take_tty_fd()  # a terminal nobody took (its program failed to start)
            if tty is not None:
                os.close(tty)
            fds, self._ns_fds = self._ns_fds, {}
            for fd in fds.values():
                os.close(fd)
            root, self._root_fd = self._root_fd, None
            if root is not None:
                os.close(root)
            self._hooks.forget(self)
            self._finished.set()

    @property
    def namespaces(self) -> Mapping[str, NamespaceId]:
        """Its namespaces by kind, as ``/proc/PID/ns/KIND`` shows them on the host.

        Read on first use while the container runs, and kept.
        """
        if self._namespaces is None:
            try:
                if self.returncode is not None:
                    raise ProcessLookupError
                if self._ns_fds:
                    self._namespaces = _namespaces_from_files(self._ns_fds)
                else:
                    self._namespaces = namespaces_of(self.pid)
            except ProcessLookupError:
                raise AnynsError(f"namespaces: container pid {self.pid} has already exited") from None
        return self._namespaces

    async def read_file(self, path: str | os.PathLike[str], max_size: int = _files.DEFAULT_MAX_SIZE) -> bytes:
        """The content of file ``path`` as the container sees it, while it runs.

        ``path`` is resolved inside the container's root, whatever symlinks
        its programs planted (an absolute link or ``..`` past the top stays
        inside, as in a chroot): it never reaches a file of the host the
        container could not see. Only regular files are read, never one on a
        kernel filesystem (``/proc``, ``/sys``, cgroups). The reading runs in
        a worker thread.

        Args:
            path: a path inside the container (relative ones start at its root).
            max_size: the largest size accepted, in bytes (default 16 MiB).

        Raises:
            FileNotFoundError: no such file in the container (``PermissionError``
                and the like as ``open`` raises them).
            IsADirectoryError: ``path`` is a directory.
            AnynsError: the file is larger than ``max_size`` (found out without
                reading it whole), is not a regular file, or the container has exited.
            UnsupportedError: a rootless container whose root did not reach the supervisor.
        """
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
            raise ValueError(f"read_file: max_size must be a number of bytes >= 0, got {max_size!r}")
        where = os.fspath(path)
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller gets Cancelled, not "has exited"
        root = self._open_root("read_file")
        try:
            data: bytes = await trio.to_thread.run_sync(_files.as_program, self._program_credentials(),
                                                         _files.read, root, where, max_size)
            return data
        except AnynsError as e:
            raise AnynsError(f"read_file: {e}") from None
        finally:
            os.close(root)

    async def write_file(self, path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` to file ``path`` in the running container, with permissions ``mode``.

        The path is resolved as by ``read_file`` (never onto a host file, only
        regular files, no kernel filesystem). A missing file is created (its
        directory must exist: ``FileNotFoundError`` otherwise), owned by the
        program's user; an existing one is truncated and rewritten, and gets
        ``mode`` too. It is done with the program's rights (its ids, its file
        capabilities): what it may not write, neither may this. A read-only mount refuses it
        (``OSError``, EROFS). Runs in a worker thread.

        Raises:
            FileNotFoundError: the file's directory does not exist in the container.
            IsADirectoryError: ``path`` is a directory.
            AnynsError: the path is not a regular file, or the container has exited.
            UnsupportedError: a rootless container whose root did not reach the supervisor.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write_file: data must be bytes, not {type(data).__name__}")
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError(f"write_file: mode must be permission bits (0 to 0o7777), got {mode!r}")
        where = os.fspath(path)
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller gets Cancelled, not "has exited"
        root = self._open_root("write_file")
        try:
            await trio.to_thread.run_sync(_files.as_program, self._program_credentials(), _files.write, root, where,
                                          bytes(data), mode)
        except AnynsError as e:
            raise AnynsError(f"write_file: {e}") from None
        finally:
            os.close(root)

    def _open_root(self, operation: str) -> int:
        """A new O_PATH fd of the container's root, for the caller to close.

        A root supervisor opens ``/proc/PID/root`` of its first process: an
        unreaped child of ours, whose pid no other process can have (a zombie
        has no root: ENOENT); the pidfd is checked afterwards all the same.
        Rootless, a duplicate of the fd its child sent.
        """
        if self.returncode is not None or self._pidfd is None:
            raise AnynsError(f"{operation}: container pid {self.pid} has exited")
        if self._root_fd is not None:
            return os.dup(self._root_fd)
        if self._ns_fds or self._hooks.rootless:
            raise UnsupportedError(f"{operation}: container pid {self.pid} sent no root to reach its files by")
        try:
            root = os.open(f"/proc/{self.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise AnynsError(f"{operation}: container pid {self.pid} has exited") from None
        if _has_exited(self._pidfd):
            os.close(root)
            raise AnynsError(f"{operation}: container pid {self.pid} has exited")
        return root

    def _program_credentials(self) -> _files.Credentials | None:
        """The program's rights, as the host sees them, for the supervisor's file operations on its files.

        Its host uid, gid and groups (through the user namespace's maps, an
        unmapped id as the overflow id 65534), and, for a root program outside
        a user namespace, the file capabilities it kept. None for a rootless
        supervisor: it can take no other ids, and its own are the container
        root's already (a ``user=`` inside then reads and writes as root inside).
        """
        if self._hooks.rootless:
            return None
        user = self.spec.user
        uid, gid, groups = (user.uid, user.gid, user.groups) if user is not None else (0, 0, ())
        id_map = user_namespace_map(self.spec)
        if id_map is not None:
            return _files.Credentials(_outside(id_map.uid, uid), _outside(id_map.gid, gid),
                                      tuple(_outside(id_map.gid, g) for g in groups))
        kept = capability_numbers(_FILE_CAPABILITIES & set(self.spec.capabilities)) if uid == 0 else 0
        return _files.Credentials(uid, gid, tuple(groups), kept)

    async def _collect_and_release(self) -> None:
        """A holding init: wait for its report of the program's end, read the collected files, release it.

        The init has ended every other process by then, so the files are
        final; its mount namespace (``/tmp`` too) lives until the release.
        Cancelled before the report, nothing is released: whoever kills the
        container later reaps it (``_reap`` reads the report then).
        """
        status = self._status_fd
        assert status is not None
        while True:
            await trio.lowlevel.wait_readable(status)
            try:
                report = os.read(status, 32)  # its report, or EOF: the init itself was killed
                break
            except BlockingIOError:
                continue
            except OSError:
                report = b""
                break
        try:
            self._program_status = _init.program_status(report)
            if self._program_status is not None and self._collect:
                root = self._open_root("collect")
                try:
                    self._files, problem = await trio.to_thread.run_sync(
                        _files.as_program, self._program_credentials(), _files.read_many, root, self._collect,
                        _files.DEFAULT_MAX_SIZE)
                finally:
                    os.close(root)
                if problem is not None:
                    self._collect_error = AnynsError(f"collect: {problem}")
        except AnynsError as e:  # it died meanwhile (killed from outside): nothing to collect
            self._collect_error = self._collect_error or e
        finally:
            self._close_status()  # the release: EOF, and the init exits

    def _end_all_but_init(self) -> bool:
        """End the program and every other process, but spare a holding init: its files are still to be
        collected (it reports, and holds until released); without one, SIGKILL. Whether an init was spared."""
        if self._holds and self._status_fd is not None:
            self.send_signal(_init.END_ALL)
            return True
        self.kill()
        return False

    def _ended_fd(self) -> int:
        """What turns readable when the program has ended: a holding init's report (it stays), else the pidfd."""
        if self._holds and self._status_fd is not None:
            return self._status_fd
        assert self._pidfd is not None
        return self._pidfd

    async def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: StdinArg = b"",
        capture_stdout: bool = False,
        capture_stderr: bool = False,
        stdout: StdoutArg = None,
        stderr: StdoutArg = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = True,
        max_output: int | None = None,
        task_status: trio.TaskStatus[Container] = trio.TASK_STATUS_IGNORED,
    ) -> CompletedContainer:
        """Run another program inside this container, like ``docker exec`` or ``nsenter``.

        The new process joins all of the container's namespaces (one
        ``setns`` through the container's pidfd), its root and ``cwd``, and is
        born in its pid namespace; it dies with the container. Arguments and
        results are those of ``Supervisor.run``: ``await box.exec(argv)``
        returns a ``CompletedContainer``, ``await nursery.start(box.exec,
        argv)`` a ``Container`` handle for the new process (its ``spec`` is
        the container's with this argv, env and cwd, and no ``timeout``:
        the container's budgets are the container's; ``max_output`` caps
        this process's captured output).

        Args:
            argv: the program and its arguments (searched in ``env``'s PATH).
            env: the environment (default: the container's ``spec.env``).
            cwd: the working directory (default: the container's ``spec.cwd``).

        Raises:
            SetupError: the container has exited (errno ESRCH), or setup failed;
                ``ExecError`` when the program cannot be executed.
            ContainerFailed: ``check`` is true and the program failed.
        """
        options = StdioOptions.of(stdin, capture_stdout, capture_stderr, stdout, stderr, check,
                                  started=task_status is not trio.TASK_STATUS_IGNORED, max_output=max_output)
        return await self._hooks.exec(self, argv, env, cwd, options, task_status)

    def resize_tty(self, rows: int, columns: int) -> None:
        """Set the terminal's window size (``tty=True``); the program gets SIGWINCH."""
        if self.tty is None:
            raise AnynsError("resize_tty: this container has no terminal handed out (tty=True with nursery.start)")
        fd = self.tty.fileno()
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def keep_namespace(self, kind: str, path: str | os.PathLike[str]) -> PersistedNamespace:
        """Keep this container's ``kind`` namespace alive at ``path``, as ``ip netns add`` does.

        ``path`` (a file, created if missing) gets a bind mount of
        ``/proc/PID/ns/KIND``, so the namespace outlives the container and can
        be joined (``anyns.Join(net=path)``) or entered later. Call
        ``release()`` on the result (or use it as a context manager); the
        supervisor releases what is still kept when it closes.

        Raises:
            SpecError: an unknown namespace kind.
            UnsupportedError: the supervisor is rootless.
            AnynsError: the container has exited.
        """
        if self.returncode is not None:
            raise AnynsError(f"keep_namespace: container pid {self.pid} has exited")
        if self._ns_fds:  # rootless: its /proc/PID/ns is closed to us, and a bind mount needs CAP_SYS_ADMIN
            raise UnsupportedError("keep_namespace: a rootless supervisor cannot bind-mount a namespace on the host")
        kept = persist_namespace(self.pid, kind, path)
        self._hooks.keep(kept)
        return kept

    async def wait(self) -> int:
        """Wait until the container has exited and been reaped; return its ``returncode``.

        By then its network is undone too: its veth is gone and its address free.
        """
        await self._finished.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the container's first process through its pidfd (no pid reuse race).

        Does nothing once the container has been reaped. Note that pid 1 of a
        pid namespace ignores signals it has no handler for, except SIGKILL.
        """
        if self.returncode is not None or self._pidfd is None:
            return
        with suppress(ProcessLookupError):  # exited, not yet reaped
            signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        """Send SIGTERM (ignored by a pid-1 program without a SIGTERM handler)."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL: the whole pid namespace dies with its pid 1."""
        self.send_signal(signal.SIGKILL)

    async def stop(self, grace: float = 5.0) -> int:
        """Stop the container: SIGTERM, then SIGKILL to all of it once ``grace`` seconds have passed.

        Returns the ``returncode`` once the container has been reaped (at once
        if it already ended). With ``run(collect=...)`` the init is spared
        until the files are read. A pid-1 program only sees SIGTERM if it has a
        handler for it; one that ignores it is killed after ``grace``.
        """
        if not 0 <= grace < math.inf:
            raise ValueError(f"grace must be seconds >= 0, got {grace!r}")
        self.terminate()
        with trio.move_on_after(grace):
            return await self.wait()
        self._end_all_but_init()  # with collect, the init holds on until the files are read
        return await self.wait()

    def statistics(self) -> ContainerStats:
        """What it has used so far: CPU time, memory now and at peak, tasks (its cgroup's figures).

        After it has ended, the figures at its end (as ``CompletedContainer.stats``).

        Raises:
            UnsupportedError: it has no cgroup (give the spec ``limits=anyns.Limits()``).
        """
        if self.returncode is not None:
            return self._stats()
        if self._leaf is None or self._shares_cgroup:
            raise UnsupportedError("statistics: the container has no cgroup; "
                                   "give its spec limits=anyns.Limits() (limits are optional)")
        now = _cgroups.statistics(self._leaf)
        return ContainerStats(
            time.monotonic() - self._started_at,
            float(now["cpu_user"] or 0.0), float(now["cpu_system"] or 0.0),
            _int_or_none(now["memory_peak"]), _int_or_none(now["memory_current"]),
            _int_or_none(now["pids_current"]),
        )

    def _stats(self) -> ContainerStats:
        """Its figures at its end (after the reap)."""
        user, system, max_rss = self._usage
        peak: int | None = max_rss or None
        final = self._final
        if final is not None and not self._shares_cgroup:
            if final["cpu_user"] is not None:
                user, system = float(final["cpu_user"]), float(final["cpu_system"] or 0.0)
            if final["memory_peak"] is not None:
                peak = int(final["memory_peak"])
        end = self._ended_at if self._ended_at is not None else time.monotonic()
        return ContainerStats(end - self._started_at, user, system, peak)

    @property
    def oom_killed(self) -> bool:
        """Whether the OOM killer has killed a process of it (needs ``limits`` with a memory controller).

        For a process exec'd into a container: a kill in the container's
        cgroup while it ran that ended it (its returncode is -9).
        """
        figures = self._final if self._final is not None else (
            _cgroups.statistics(self._leaf) if self._leaf is not None else None)
        kills = int((figures or {}).get("oom_kills") or 0) - self._oom_base
        if self._shares_cgroup:
            return kills > 0 and self.returncode == -9
        return kills > 0

    # ---- budgets: ContainerSpec.timeout, Limits.cpu_time, run(max_output=)

    @property
    def exceeded(self) -> str | None:
        """The budget it has run out of, or None; as ``CompletedContainer.exceeded``.

        ``"timeout"``, ``"cpu_time"`` or ``"output"`` from the moment anyns
        ends it for that budget (before it has exited); ``"memory"`` once the
        OOM killer has ended a process of it (read from its cgroup).
        """
        if self._exceeded is None and self.oom_killed:
            return "memory"
        return self._exceeded

    async def _end_for_budget(self, reason: str) -> None:
        """End the program because its ``reason`` budget ran out: ``"timeout"``, ``"cpu_time"`` or ``"output"``.

        The one place a budget ends a container. The verdict is recorded
        first, and the first budget to run out wins (an OOM kill seen by then
        makes it ``"memory"``); a container already reaped is left alone.
        For ``"timeout"`` the spec's ``stop_grace`` applies: SIGTERM (the
        init forwards it), then SIGKILL once the grace has passed. The other
        budgets are spent already: SIGKILL at once, and ``cgroup.kill`` so
        that every process stops now, not as the pid namespace is torn down.
        Only the task that owns the container (``_wait_within_budgets``)
        asks for a grace: it alone waits on the pidfd. Another task (the
        output cap) gets SIGKILL only.

        With ``run(collect=...)`` the init holds the container: the kill
        is ``END_ALL`` to it instead (``_end_all_but_init``), which ends the
        program and every other process but spares the init until the
        files are collected; the grace waits for the init's report, not
        for its exit.
        """
        if self._exceeded is None:
            self._exceeded = "memory" if self.oom_killed else reason
        if self.returncode is not None or self._pidfd is None:
            return
        grace = self.spec.stop_grace if reason == "timeout" else 0
        if grace > 0:
            self.terminate()
            with trio.move_on_after(grace):
                await trio.lowlevel.wait_readable(self._ended_fd())
                return
        if self._end_all_but_init():
            return
        if self._leaf is not None and not self._shares_cgroup:
            _cgroups.kill(self._leaf)

    async def _wait_within_budgets(self) -> int:
        """The owner's wait for the exit, then the reap; ends the program when ``timeout`` or ``cpu_time`` runs out.

        Without either it is ``_wait_and_reap`` (no timer, no reads). The
        timeout counts from here, right after the spawn. The CPU budget is
        checked against the cgroup's usage (one small in-memory file read)
        at an interval scaled to what is left of it, so that all the CPUs
        busy at once overshoot it by at most about half of what was left:
        every 100 ms at most, every 10 ms at least. A process exec'd into a
        container (it shares the cgroup) has no CPU budget of its own.
        """
        timeout = self.spec.timeout
        limits = self.spec.limits
        cpu_time = limits.cpu_time if limits is not None and self._leaf is not None and not self._shares_cgroup \
            else None
        if timeout is None and cpu_time is None:
            return await self._wait_and_reap()
        now = trio.current_time()
        deadline = math.inf if timeout is None else now + timeout
        reason: str | None = None
        used = 0.0  # just spawned: the first read waits for the first wake (most jobs have ended by then)
        while reason is None:
            wake = deadline
            if cpu_time is not None:
                wake = min(wake, now + _cgroups.cpu_time_poll(cpu_time, used))
            with trio.move_on_at(wake):
                await trio.lowlevel.wait_readable(self._ended_fd())
                break  # it has exited
            now = trio.current_time()
            if now >= deadline:
                reason = "timeout"
            elif cpu_time is not None:
                assert self._leaf is not None
                used = _cgroups.cpu_usage(self._leaf) or 0.0
                if used >= cpu_time:
                    reason = "cpu_time"
        if reason is not None:
            await self._end_for_budget(reason)
        return await self._wait_and_reap()

    def pause(self) -> Freezing:
        """Freeze every process of the container (the cgroup freezer).

        The freeze is asked for at once; ``await box.pause()`` also waits
        until the kernel has frozen them all (a process in an
        uninterruptible sleep can delay that). Signals, SIGKILL included,
        still end a frozen container.

        Raises:
            UnsupportedError: it has no cgroup (``limits=anyns.Limits()`` gives it one),
                or no freezer here, or it is a process from ``Container.exec``
                (it shares its container's cgroup: pause the container).
            AnynsError: it has exited.
        """
        return self._freeze(True)

    def resume(self) -> Freezing:
        """Thaw a container frozen by ``pause()``; may be awaited like it."""
        return self._freeze(False)

    def _freeze(self, frozen: bool) -> Freezing:
        verb = "pause" if frozen else "resume"
        if self.returncode is not None:
            raise AnynsError(f"{verb}: container pid {self.pid} has exited")
        if self._leaf is None:
            raise UnsupportedError(f"{verb}: the container has no cgroup to freeze; "
                                   "give its spec limits=anyns.Limits()")
        if self._shares_cgroup:
            raise UnsupportedError(f"{verb}: this process was exec'd into a container and shares its cgroup, "
                                   f"so the freezer would {verb} the whole container: {verb} the container")
        try:
            _cgroups.freeze(self._leaf, frozen)
        except _cgroups.Unavailable as e:
            raise UnsupportedError(str(e)) from None
        except OSError as e:
            raise AnynsError(f"{verb}: writing the freezer of container pid {self.pid} failed: {e}") from e
        return Freezing(self, frozen)

    async def _wait_and_reap(self, teardown: bool = False) -> int:
        """Wait on the pidfd, then reap; only the task that owns the container calls this.

        A holding init (``collect``) first reports, has the files read, and is released.
        ``teardown``: it was killed, maybe with many others: its cgroup files are
        read in a worker thread, not on the loop (one at a time, a thread costs more).
        """
        if self.returncode is None:
            if self._holds and self._status_fd is not None:
                await self._collect_and_release()
            assert self._pidfd is not None
            await trio.lowlevel.wait_readable(self._pidfd)
            if self._leaf is not None and teardown:
                # ~1-2 ms of cgroup files each, many dying at once: in a worker
                # thread, not on the loop; shielded, so the reap follows.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._end_in_cgroup)
            elif self._leaf is not None:
                self._end_in_cgroup()
            self._reap()
        assert self.returncode is not None
        return self.returncode

    def _end_in_cgroup(self) -> None:
        """Its cgroup's figures at its exit (before the cgroup goes), then the end of what it left there."""
        assert self._leaf is not None
        self._final = _cgroups.statistics(self._leaf)
        if not self._shares_cgroup:
            # The program has exited: so does everything it left in its
            # cgroup, now, before anyone waits for the end of its stdout
            # (a background process holds it open). With a pid namespace
            # of its own they are dead already; without one (needs_cgroup)
            # this is what ends them. Processes exec'd into it go too.
            _cgroups.kill(self._leaf)

    def _reap(self) -> None:
        # Only after the pidfd polled readable (and _end_in_cgroup): WNOHANG then never returns None.
        # The raw syscall, for the rusage glibc's waitid leaves out.
        assert self._pidfd is not None
        result = _libc.waitid_pidfd(self._pidfd, os.WEXITED | os.WNOHANG)
        assert result is not None
        code, status, user, system, max_rss = result
        self._ended_at = time.monotonic()
        self._usage = (user, system, max_rss)
        if code == os.CLD_EXITED:
            self.returncode = status
        else:  # CLD_KILLED or CLD_DUMPED
            self.returncode = -status
        program = self._program_status  # a holding init reported it already
        if self._status_fd is not None:
            # The init's exit mirrors the program's as far as an exit code can;
            # its report is exact. No report: the init itself was killed.
            try:
                program = _init.program_status(os.read(self._status_fd, 32))
            except OSError:  # BlockingIOError; a socket whose peer was killed: ECONNRESET
                program = None
            self._close_status()
        if program is not None:
            self.returncode = program
        self._close_pidfd()

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def _close_status(self) -> None:
        fd, self._status_fd = self._status_fd, None
        if fd is not None:
            trio.lowlevel.notify_closing(fd)
            os.close(fd)


@final
class Freezing:
    """What ``Container.pause()`` / ``resume()`` return: already asked for; await it to wait until done."""

    __slots__ = ("_container", "_frozen")

    def __init__(self, container: Container, frozen: bool) -> None:
        self._container = container
        self._frozen = frozen

    def __repr__(self) -> str:
        return f"<anyns {'pause' if self._frozen else 'resume'} of pid {self._container.pid}>"

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait().__await__()

    async def _wait(self) -> None:
        box = self._container
        await trio.lowlevel.checkpoint()
        # cgroup.events gives no event trio can wait on portably: poll it.
        while (box._leaf is not None and box.returncode is None  # noqa: ASYNC110
               and _cgroups.is_frozen(box._leaf) != self._frozen):
            await trio.sleep(0.001)


#: the capabilities that bypass file permissions: a root program keeps those it was given
_FILE_CAPABILITIES: Final = frozenset({"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
                                       "CAP_FSETID"})
#: what an id with no outside id in a user namespace's map is, seen from outside (overflowuid)
_OVERFLOW_ID: Final = 65534


def _outside(ranges: tuple[tuple[int, int, int], ...], inside: int) -> int:
    """The host id of id ``inside`` under uid/gid map ``ranges``; the overflow id if unmapped."""
    for start, outside, count in ranges:
        if start <= inside < start + count:
            return outside + inside - start
    return _OVERFLOW_ID


def _has_exited(pidfd: int) -> bool:
    """Whether the process of ``pidfd`` has exited (readable), reaped or not.

    poll, not select: a supervisor of a thousand containers holds fds past
    select's FD_SETSIZE (1024).
    """
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _int_or_none(value: float | int | None) -> int | None:
    return None if value is None else int(value)
