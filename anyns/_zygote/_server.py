"""The zygote: a small, single-threaded, blocking process that clones containers.

The supervisor starts it as a fresh interpreter (``python -I -S
anyns/_zygote_main.py <socket fd> <supervisor pid> <package dir>``) from its own thread, never by
forking the trio process. It imports only what it needs (no trio, no attrs)
and serves one request at a time:

1. receive ``spawn`` with the stdio fds and the error pipe (recvmsg with
   MSG_CMSG_CLOEXEC: ``socket.recv_fds`` in 3.11 ignores its flags, gh-107898);
2. the first time a plan is seen, encode its ops into the native op list
   (``_ops.encode``) and link it (``_native.Native.link``): a ``LinkedPlan``;
3. ``anyns_spawn`` of the native core (``_native/spawn.c``): ``clone3(CLONE_VM
   | CLONE_PIDFD | CLONE_PARENT | CLONE_CLEAR_SIGHAND | namespaces,
   exit_signal=0)`` on a stack of its own, the child running the op list in C
   and exec'ing; CLONE_PARENT makes the container the supervisor's child, so
   the supervisor reaps it (CLONE_PARENT requires exit_signal 0). Plans that
   ``_ops.needs_own_memory`` names get an ordinary copy-on-write clone instead;
4. send the pidfd back and close everything it received.

It never waits for a child: setup runs in the child while the zygote serves
the next request. A linked plan stays alive while a child of it may still be
reading it (``anyns_oldest_busy``), a DROP notwithstanding. It exits on EOF from the supervisor, and dies with it
(PR_SET_PDEATHSIG, set first thing).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no typeshed stub
import _socket
import errno
import gc
import os
import select
import struct
import time

from .. import _cgroups, _init, _namespaces, _protocol, _skeleton
from .._sys import _consts as C
from .._sys import _libc
from . import _native, _ops

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from typing import Any

_monotonic = time.monotonic
_CLONE_BASE = C.CLONE_PIDFD | C.CLONE_PARENT | C.CLONE_CLEAR_SIGHAND
_FDS_PER_SPAWN = 4
#: pieces one plan may come in (each up to MAX_MESSAGE): a bound on a garbled sender
_MAX_PIECES = 1024


#: one receive buffer for every request: recvmsg(n) would allocate n bytes each time
_BUFFER = bytearray(_protocol.MAX_MESSAGE)
_VIEW = memoryview(_BUFFER)
_ANCILLARY = _socket.CMSG_SPACE(_protocol.MAX_FDS * 4)


def _receive(sock: _socket.socket) -> tuple[memoryview, list[int], bool]:
    """One request: its bytes, its fds, and whether fds were dropped (MSG_CTRUNC: we are out of fds)."""
    size, ancdata, flags, _addr = sock.recvmsg_into((_BUFFER,), _ANCILLARY, _socket.MSG_CMSG_CLOEXEC)
    data = _VIEW[:size]
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            # memoryview, not array: the array module imports collections.
            fds.extend(memoryview(payload[: len(payload) - len(payload) % 4]).cast("i").tolist())
    return data, fds, bool(flags & _socket.MSG_CTRUNC)


def _hung_up(sock: _socket.socket) -> bool:
    """Whether the supervisor closed its end (a zero-length read is also what an empty datagram gives)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
    return any(events & (select.POLLHUP | select.POLLRDHUP) for _fd, events in poller.poll(0))


def _peer_closed(sock: _socket.socket) -> bool:
    """Whether the supervisor's end is closed altogether (POLLHUP), not just shut for writing."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return any(events & select.POLLHUP for _fd, events in poller.poll(0))


_SIG_BLOCK = _signal.SIG_BLOCK
_SIG_UNBLOCK = _signal.SIG_UNBLOCK
_TERM = (int(_signal.SIGTERM),)
_SOL_SOCKET = _socket.SOL_SOCKET
_SCM_RIGHTS = _socket.SCM_RIGHTS
_pack_fd = struct.Struct("i").pack


class LinkedPlan:
    """A plan as the zygote keeps it: the native op list, linked once, and what each spawn of it needs."""

    __slots__ = ("cgroup", "dumpable", "enter", "extra", "flags", "last_serial", "ops", "shared_vm", "skeleton")

    def __init__(self, flags: int, ops: ctypes.Array[ctypes.c_char], extra: int, enter: tuple[tuple[int, int], ...],
                 skeleton: list[Any] | None, cgroup: int, dumpable: bool, shared_vm: bool) -> None:
        #: the plan's clone flags (namespaces born with the child)
        self.flags = flags
        #: the linked native op list (``_native.Native.link``)
        self.ops = ops
        #: how many extra fds a spawn request carries (after stdin, stdout, stderr, error pipe)
        self.extra = extra
        #: (extra fd index, namespace flags) the zygote enters before the clone and leaves after it
        self.enter = enter
        #: the holder ``[fd, ops, due]`` of the prebuilt root tree, or None
        self.skeleton = skeleton
        #: the extra fd index of the cgroup to clone into (CLONE_INTO_CGROUP), or -1
        self.cgroup = cgroup
        #: born dumpable (rootless: the supervisor writes its id maps)
        self.dumpable = dumpable
        #: cloned with CLONE_VM on a stack of its own (``_ops.needs_own_memory`` says when not)
        self.shared_vm = shared_vm
        #: the serial of its latest spawn: while a child of it may still read ``ops``, they stay
        self.last_serial = 0


class Zygote:
    """The serving loop and its plan cache."""

    def __init__(self, sock: _socket.socket, supervisor_pidfd: int, newroot: str, init_fd: int = -1,
                 native: _native.Native | None = None) -> None:
        self.sock = sock
        #: the native spawn core
        self.native = native if native is not None else _native.Native()
        #: plans dropped while a child of theirs may still be in setup, reading them
        self.retired: list[LinkedPlan] = []
        self.supervisor_pidfd = supervisor_pidfd
        self.newroot = newroot
        #: the init program the children exec (``_init.open_binary``: a sealed memfd copy)
        self.init_fd = init_fd
        #: plan id -> the linked plan
        self.plans: dict[int, LinkedPlan] = {}
        self.namespaces = _namespaces.ZygoteNamespaces()
        #: pieces of plans too large for one message, by plan id
        self.parts: dict[int, list[bytes]] = {}
        #: prebuilt root trees, shared by every plan with the same skeleton:
        #: key -> [fd, built at (monotonic)]; the fd holder is what the linked
        #: attach_skeleton op reads, so a rebuild reaches those plans too
        self.skeletons: dict[str, list[Any]] = {}
        #: None until the first build says whether detached trees work here
        # ANYNS_FORCE_FALLBACK=detached-trees forces the other rung (for tests).
        forced = "detached-trees" in os.environ.get("ANYNS_FORCE_FALLBACK", "")
        self.detached_trees: bool | None = False if forced else None

    def serve(self) -> None:
        """Serve until the supervisor closes its end."""
        while True:
            try:
                data, fds, truncated = _receive(self.sock)
            except (ConnectionResetError, BrokenPipeError):  # supervisor gone
                return
            if not data and not fds and _hung_up(self.sock):
                return  # EOF (an empty datagram is merely malformed: handle() answers it)
            try:
                if truncated:
                    self.refuse_truncated(data)
                else:
                    self.handle(data, fds)
            finally:
                for fd in fds:
                    os.close(fd)

    def refuse_truncated(self, data: memoryview) -> None:
        """A request whose fds did not all arrive: the zygote is out of fds; say so (EMFILE)."""
        try:
            tag, request_id, _plan_id = _protocol.decode_header(data)
        except ValueError:
            return
        if tag == _protocol.SPAWN:
            # Learn the plan it carried anyway (linking needs no fd): the
            # supervisor counts it as sent and will not send it again.
            plan_id = _plan_id
            pieces = self.parts.pop(plan_id, [])
            if plan_id not in self.plans:
                pieces.append(bytes(data[_protocol.HEADER_SIZE:]))
                try:
                    if pieces[-1] or len(pieces) > 1:
                        self._link(plan_id, _protocol.decode_body(b"".join(pieces)))
                except Exception:  # a bad plan: the next request that uses it says so
                    pass
            self.fail(request_id, errno.EMFILE, "clone", "recvmsg",
                      "the zygote ran out of file descriptors: the request's fds were dropped")

    def fail(self, request_id: int, err: int, step: str, call: str, message: str) -> None:
        """Answer a request with FAIL; the zygote itself carries on."""
        body = {"step": step, "call": call, "path": None, "message": message}
        self.sock.send(_protocol.encode(_protocol.FAIL, request_id, err, body))

    def handle(self, data: memoryview, fds: list[int]) -> None:
        """Answer one request; a bad request gets a FAIL reply, never kills the zygote.

        Everything after clone3 is kept to a few C calls: each page the zygote
        writes while a child still shares it is copied.
        """
        request_id = 0
        try:
            tag, request_id, plan_id = _protocol.decode_header(data)
            if tag == _protocol.PART:  # a piece of a large plan: a=plan id, b=its number
                piece = bytes(data[_protocol.HEADER_SIZE:])
                if plan_id == 0:  # a first piece starts over (a send cut short leaves stale ones)
                    self.parts[request_id] = [piece]
                elif len(self.parts.setdefault(request_id, [])) < _MAX_PIECES:
                    self.parts[request_id].append(piece)
                else:
                    raise ValueError(f"plan {request_id} has more than {_MAX_PIECES} pieces")
                return
            if tag == _protocol.DROP:
                dropped = self.plans.pop(plan_id, None)
                if dropped is not None:
                    self.retired.append(dropped)
                self._free_retired()
                return
            if tag != _protocol.SPAWN:
                raise ValueError(f"unknown request {tag!r}")
            pieces = self.parts.pop(plan_id, [])
            plan = self.plans.get(plan_id)
            if plan is None:
                pieces.append(bytes(data[_protocol.HEADER_SIZE:]))
                body = _protocol.decode_body(b"".join(pieces)) if pieces[-1] or len(pieces) > 1 else None
                plan = self._link(plan_id, body)
            if len(fds) != _FDS_PER_SPAWN + plan.extra:
                raise ValueError(f"spawn needs {_FDS_PER_SPAWN + plan.extra} fds, got {len(fds)}")
        except Exception as e:  # whatever a malformed request breaks, the zygote carries on
            self.fail(request_id, 0, "protocol", "recvmsg", f"bad request: {type(e).__name__}: {e}")
            return
        skeleton = plan.skeleton
        if skeleton is not None and _monotonic() > skeleton[2]:
            self._refresh(skeleton)
        # SIGTERM (the supervisor died) waits until the answer is sent: its
        # handler raises, and half a spawn would leave an unowned container;
        # a signal blocked at clone time is not inherited by the child.
        _signal.pthread_sigmask(_SIG_BLOCK, _TERM)
        try:
            self._spawn(request_id, plan, fds)
        finally:
            _signal.pthread_sigmask(_SIG_UNBLOCK, _TERM)

    def _spawn(self, request_id: int, plan: LinkedPlan, fds: list[int]) -> None:
        """Enter what the plan says, clone, come back, answer with the pidfd (or a FAIL)."""
        entered = 0
        step, call = "namespaces", "setns"
        dumpable = plan.dumpable
        try:
            for index, nsflags in plan.enter:
                self.namespaces.enter(fds[_FDS_PER_SPAWN + index], nsflags)
                entered |= nsflags
            step, call = "clone", "clone3"
            if dumpable:  # only for the clone: the child is born dumpable, we are not for longer
                _libc.prctl(C.PR_SET_DUMPABLE, 1)
            # the per-spawn fds the child's ops refer to (spawn.c: RT_*), then the extra ones
            rt = (fds[0], fds[1], fds[2], fds[3], self.supervisor_pidfd,
                  plan.skeleton[0] if plan.skeleton is not None else -1, self.init_fd, *fds[_FDS_PER_SPAWN:])
            try:
                pid, pidfd, serial = self.native.spawn(
                    plan.ops, _CLONE_BASE | plan.flags,
                    fds[_FDS_PER_SPAWN + plan.cgroup] if plan.cgroup >= 0 else -1, plan.shared_vm, rt)
            finally:
                if dumpable:
                    _libc.prctl(C.PR_SET_DUMPABLE, 0)
            plan.last_serial = serial
        except OSError as e:
            if entered:
                self._come_back(entered)
            self.fail(request_id, e.errno or 0, step, call, os.strerror(e.errno or 0))
            return
        if entered:
            self._come_back(entered)
        try:
            self.sock.sendmsg(
                (_protocol.encode(_protocol.DONE, request_id, pid),),
                ((_SOL_SOCKET, _SCM_RIGHTS, _pack_fd(pidfd)),),
            )
        finally:
            os.close(pidfd)

    def _free_retired(self) -> None:
        """Let go of dropped plans no child in setup may still read."""
        if self.retired:
            oldest = self.native.oldest_busy()
            self.retired = [plan for plan in self.retired if plan.last_serial >= oldest]

    def _come_back(self, entered: int) -> None:
        """Return to the zygote's own namespaces, or die: never clone from inside a container."""
        try:
            self.namespaces.restore(entered)
        except OSError:
            os._exit(70)  # the supervisor sees EOF and starts a new zygote

    def _link(self, plan_id: int, body: dict[str, Any] | None) -> LinkedPlan:
        if body is None:
            raise ValueError(f"unknown plan {plan_id} and no plan sent")
        ops = body["ops"]
        flags = int(body["flags"])
        holder = None
        skeleton = body.get("skeleton")
        if skeleton is not None:
            # In a user namespace a clone of the zygote's tree is refused
            # (open_tree: EINVAL): the child builds the root itself.
            holder = None if flags & C.CLONE_NEWUSER else self._skeleton(skeleton)
            if holder is None:  # no detached trees here: the child builds the root itself
                at = next(i for i, op in enumerate(ops) if op[1] == _ops.SKELETON_CALL)
                ops = [*ops[:at], *_skeleton.expand_for_child(skeleton, self.newroot), *ops[at + 1:]]
        extra = int(body.get("extra", 0))
        enter = tuple((int(index), int(nsflags)) for index, nsflags in body.get("enter", ()))
        cgroup = int(body.get("cgroup", -1))
        if (not 0 <= extra <= _protocol.MAX_FDS - _FDS_PER_SPAWN or any(not 0 <= i < extra for i, _ in enter)
                or not -1 <= cgroup < extra):
            raise ValueError(f"extra fds {extra}, enter {enter} and cgroup {cgroup} do not fit")
        dumpable = bool(body.get("dumpable", 0))
        entered = 0
        for _index, nsflags in enter:
            entered |= nsflags
        linked = self.native.link(_ops.encode(ops))
        plan = self.plans[plan_id] = LinkedPlan(flags, linked, extra, enter, holder, cgroup, dumpable,
                                                not _ops.needs_own_memory(flags, ops, dumpable, entered))
        return plan

    def _skeleton(self, ops: list[Any]) -> list[Any] | None:
        """The holder of a prebuilt root tree for ``ops``, or None where the kernel can't."""
        key = _protocol.dumps(ops)
        holder = self.skeletons.get(key)
        if holder is not None or self.detached_trees is False:
            return holder
        try:
            fd = _skeleton.build_in_zygote(ops)
        except OSError:
            # Refused by the kernel, or a host path is missing: the child runs
            # the same steps and reports a failure precisely.
            if self.detached_trees is None:
                self.detached_trees = False
            return None
        self.detached_trees = True
        holder = self.skeletons[key] = [fd, ops, _monotonic() + _skeleton.MAX_AGE]
        return holder

    @staticmethod
    def _refresh(holder: list[Any]) -> None:
        """Rebuild one root tree that is due, so replaced host files reach new containers.

        Only the tree about to be used, and only when it is older than
        MAX_AGE: an idle spec's tree costs nothing, and a big one is rebuilt
        at most every MAX_AGE seconds, by a spawn of its own spec.
        """
        holder[2] = _monotonic() + _skeleton.MAX_AGE
        try:
            fd = _skeleton.build_in_zygote(holder[1])
        except OSError:
            return  # keep the old tree
        os.close(holder[0])
        holder[0] = fd


class _SupervisorDied(BaseException):
    """Raised in the serving loop by the PDEATHSIG handler."""


def _on_supervisor_death(signo: int, frame: object) -> None:
    raise _SupervisorDied


def main(sock_fd: int, supervisor_pid: int, newroot: str, cgroup_parent: str = "") -> None:
    """Zygote entry point."""
    # End with the supervisor thread that started us (SIGTERM: until the
    # handler is installed, below, it simply ends us; then it lets the zygote
    # remove the supervisor's cgroups on its way out); then make sure it had
    # not already died before the prctl (we would have been reparented).
    _libc.prctl(C.PR_SET_PDEATHSIG, _signal.SIGTERM)
    if os.getppid() != supervisor_pid:
        return
    # Its cgroup parents' name, while its start time can still be read.
    cgroups_name = _cgroups.supervisor_name(supervisor_pid)
    supervisor_pidfd = os.pidfd_open(supervisor_pid)
    os.set_inheritable(supervisor_pidfd, False)
    # _socket, not socket: socket.py imports enum and selectors (zygote size, see _protocol).
    sock = _socket.socket(fileno=sock_fd)
    os.set_inheritable(sock_fd, False)
    # Non-dumpable, and so are the children until they exec: a container
    # process cannot read a not-yet-exec'd helper's memory or environment
    # through /proc (runc CVE-2019-5736; prctl(2) PR_SET_DUMPABLE).
    _libc.prctl(C.PR_SET_DUMPABLE, 0)
    # Device nodes and mount points get exactly the modes the plan asks for;
    # the child sets the program's umask before execve.
    os.umask(0)
    # The init program, copied once into a sealed memfd: every container with
    # an init execs it from this fd (close-on-exec, like all of ours).
    init_fd, _sealed = _init.open_binary()
    zygote = Zygote(sock, supervisor_pidfd, newroot, init_fd)
    sock.send(_protocol.encode(_protocol.HELLO, _protocol.PROTOCOL_VERSION, os.getpid()))
    # Keep the pages the children share clean: no collection will touch them
    # (Python docs on gc.freeze for fork-without-exec servers).
    gc.collect()
    gc.freeze()
    gc.disable()
    # Installed last: a SIGTERM before this point just ends the zygote. The
    # handler raises; handle() blocks SIGTERM around the clone, so it never
    # interrupts a spawn half-way, and no child inherits it pending.
    _signal.signal(_signal.SIGTERM, _on_supervisor_death)
    crashed = False
    try:
        try:
            zygote.serve()
        except _SupervisorDied:
            crashed = True
        _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)  # a late PDEATHSIG must not cut the cleanup short
    except _SupervisorDied:
        # The PDEATHSIG came after serve() returned on the socket's EOF but before SIG_IGN was in
        # place: its handler raised here, and the cleanup below must still run.
        crashed = True
    finally:
        _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)  # also after an unexpected error from serve()
        # Only after a crash: a supervisor that closes normally shuts its end
        # for writing and waits for us (its socket stays open: no POLLHUP),
        # removes its own cgroups, and other supervisors of its process may
        # still use them. A crash closes the socket (EOF with POLLHUP, often
        # before the PDEATHSIG), and the process is gone once its other
        # threads have exited: wait for that, then clean up.
        if (crashed or _peer_closed(sock)) and select.select((supervisor_pidfd,), (), (), 2.0)[0]:
            _cgroups.cleanup_after_supervisor(cgroups_name, cgroup_parent)
