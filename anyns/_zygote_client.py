"""The supervisor's side of the zygote: start it, send it spawn requests, read its answers.

One ``ZygoteConnection`` is one zygote process and the socket pair to it.
Requests carry an id; a reader task (``serve_replies``) hands each answer to
the task waiting for it. If the zygote dies, every request in flight fails
with ``ZygoteError`` and the supervisor starts a new one on the next spawn.
"""

from __future__ import annotations

import array
import errno
import itertools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Final

import attrs
import trio

from . import _init, _protocol
from ._errors import SetupError, ZygoteError
from ._plan import Plan

_ZYGOTE_FILE: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_zygote_main.py")
_PACKAGE_DIR: Final = os.path.dirname(os.path.abspath(__file__))
#: the init program the zygote copies at its start (``_init.open_binary``)
INIT_BINARY = _init.BINARY


@attrs.define(eq=False)
class Pending:
    """One spawn request waiting for the zygote's answer."""

    event: trio.Event = attrs.field(factory=trio.Event)
    sent_at: float = attrs.field(factory=trio.current_time)
    pid: int = 0
    pidfd: int = -1
    error: BaseException | None = None
    abandoned: bool = False
    #: the zygote cloned pid ``pid`` but its pidfd did not arrive (we were out of fds)
    lost_pidfd: bool = False


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    return fds


class ZygoteConnection:
    """One zygote process and the socket to it; replaced by a new one if it dies."""

    def __init__(self, on_orphan: Callable[[int], None], newroot: str, cgroup_parent: str | None = None) -> None:
        if not os.access(INIT_BINARY, os.R_OK):
            # The zygote would die at its start: say why, and what to do.
            raise ZygoteError(f"the container init {INIT_BINARY} is missing or unreadable: this anyns was never "
                              "built (a source checkout?); run pip install -e . in it, which compiles "
                              "anyns/_native/init.c (Debian: apt-get install build-essential first)")
        # Started synchronously from the calling (trio) thread, never from a
        # worker thread: the zygote's PDEATHSIG, and through CLONE_PARENT the
        # containers' parent, are tied to this thread (docs/spawn-path.md §2, pitfall 2).
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-X", "utf8", _ZYGOTE_FILE,
                 str(theirs.fileno()), str(os.getpid()), _PACKAGE_DIR, newroot, cgroup_parent or ""],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Nothing of the supervisor's environment, but the test knob.
                env={k: v for k, v in os.environ.items() if k == "ANYNS_FORCE_FALLBACK"},
                # Its own process group: a ^C meant for the supervisor must
                # not kill the zygote or the containers behind the
                # supervisor's back; the supervisor kills them itself.
                process_group=0,
            )
        except OSError as e:
            ours.close()
            raise ZygoteError(f"starting the zygote failed: {e}") from e
        finally:
            theirs.close()
        self.pidfd = os.pidfd_open(self.process.pid)
        self.raw = ours  # for the one send that must not wait (drop)
        self.sock = trio.socket.from_stdlib_socket(ours)
        self.pending: dict[int, Pending] = {}
        self.sent_plans: set[int] = set()
        self.send_lock = trio.Lock()
        self.error: ZygoteError | None = None
        self.closing = False
        self.done = trio.Event()
        self._on_orphan = on_orphan

    async def serve_replies(self) -> None:
        """Read replies until the zygote goes away, then fail what is pending and reap it."""
        try:
            while True:
                try:
                    data, ancdata, _flags, _addr = await self.sock.recvmsg(
                        _REPLY_SIZE,
                        socket.CMSG_SPACE(_protocol.MAX_FDS * 4),
                        socket.MSG_CMSG_CLOEXEC,
                    )
                except ConnectionResetError:
                    break  # it died; _finish says how
                except OSError as e:
                    self.error = ZygoteError(f"reading from the zygote failed: {e}")
                    break
                fds = _fds_from(ancdata)
                if not data:
                    for fd in fds:
                        os.close(fd)
                    break
                self._dispatch(data, fds)
        finally:
            with trio.CancelScope(shield=True):
                await self._finish()

    def _dispatch(self, data: bytes, fds: list[int]) -> None:
        try:
            tag, a, b, body = _protocol.decode(data)
        except ValueError:
            tag, a, b, body = b"?", 0, 0, None
        if tag == _protocol.HELLO:
            if a != _protocol.PROTOCOL_VERSION:
                self.error = ZygoteError(
                    f"zygote speaks protocol {a}, the supervisor {_protocol.PROTOCOL_VERSION}"
                )
                self.sock.close()
            return
        pending = self.pending.pop(a, None)
        if tag == _protocol.DONE and not fds and b > 0:
            # Its pidfd did not arrive: this process is out of fds (the kernel
            # drops what does not fit, MSG_CTRUNC). The container, pid b, is our
            # unreaped child (CLONE_PARENT), so its pid is still its own: kill
            # it by pid, and reap it (by pid) once it is dead.
            if pending is None or pending.abandoned or self.closing:
                self._on_orphan(-b)
                return
            pending.pid, pending.lost_pidfd = b, True  # the waiting spawn kills and reaps it, then fails
            pending.error = SetupError.from_errno("clone", "recvmsg", errno.EMFILE)
            pending.event.set()
            return
        if tag == _protocol.DONE and len(fds) == 1:
            if pending is None or pending.abandoned or self.closing:
                self._on_orphan(fds[0])
                return
            pending.pid = b
            pending.pidfd = fds[0]
        else:
            for fd in fds:
                os.close(fd)
            if pending is None:
                return
            if tag == _protocol.FAIL and body is not None:
                pending.error = SetupError.from_record(
                    str(body.get("step") or "clone"), str(body.get("call") or "clone3"),
                    body.get("path"), b, str(body.get("message")),
                )
            else:
                pending.error = ZygoteError(f"unexpected reply from the zygote: {data[:200]!r}")
        pending.event.set()

    async def _finish(self) -> None:
        # Shut for writing, not closed: the zygote tells a crash of the
        # supervisor (its socket closed: POLLHUP) from a close (EOF alone).
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        await trio.lowlevel.wait_readable(self.pidfd)
        self.sock.close()
        status = self.process.wait()
        trio.lowlevel.notify_closing(self.pidfd)
        os.close(self.pidfd)
        if self.error is None:
            if self.closing:
                self.error = ZygoteError("the supervisor is closing")
            else:
                how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
                self.error = ZygoteError(f"the zygote (pid {self.process.pid}) {how} before answering")
        for pending in self.pending.values():
            pending.error = self.error
            pending.event.set()
        self.pending.clear()
        self.done.set()

    async def request_spawn(self, plan_id: int, plan: Plan, fds: list[int]) -> Pending:
        """Send one spawn request; the answer arrives in the returned ``_Pending``."""
        if self.error is not None:
            raise self.error
        request_id = next(_request_ids)
        pending = Pending()
        self.pending[request_id] = pending
        try:
            async with self.send_lock:  # the pieces of one request stay together
                # Decided under the lock, so that a plan's body goes out once,
                # and again after a drop().
                body = plan.to_wire() if plan_id not in self.sent_plans else None
                messages = _protocol.encode_spawn(request_id, plan_id, body)
                self.sent_plans.add(plan_id)
                for piece in messages[:-1]:
                    await self.sock.send(piece)
                await self.sock.sendmsg(
                    [messages[-1]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                )
        except OSError as e:
            self.pending.pop(request_id, None)
            self.sent_plans.discard(plan_id)
            if e.errno not in _PEER_GONE and self.sock.fileno() >= 0:
                # Not the zygote's fault (EBADF with our socket still open: an fd
                # in the request was closed meanwhile): never retry it elsewhere.
                raise ZygoteError(f"sending to the zygote failed: {e}") from e
            # The request never reached a zygote: mark this one dead so that
            # the caller may safely retry on a new one.
            if self.error is None:
                self.error = ZygoteError(f"sending to the zygote failed: {e}")
            raise RequestNotSent(str(e)) from e
        except BaseException:
            self.pending.pop(request_id, None)
            self.sent_plans.discard(plan_id)
            raise
        return pending

    async def watch(self) -> None:
        """Kill a zygote that leaves a request unanswered for ANSWER_TIMEOUT seconds.

        It answers in well under a millisecond (a first spawn of a spec with
        thousands of mounts: tens of ms); one that does not has hung. Killing
        it fails what is pending with ZygoteError (via ``serve_replies``) and
        the next spawn starts a new zygote.
        """
        while not self.done.is_set():
            await trio.sleep(1)
            if self.pending and self.error is None:
                oldest = min(p.sent_at for p in self.pending.values())
                if trio.current_time() - oldest > ANSWER_TIMEOUT:
                    self.error = ZygoteError(
                        f"the zygote (pid {self.process.pid}) did not answer for {ANSWER_TIMEOUT:.0f} s "
                        "and was killed"
                    )
                    with suppress(ProcessLookupError):
                        signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def drop(self, plan_id: int) -> None:
        """Tell the zygote to forget a plan (best effort, never blocks: a full socket skips it)."""
        self.sent_plans.discard(plan_id)
        with suppress(OSError):
            self.raw.send(_protocol.encode(_protocol.DROP, 0, plan_id), socket.MSG_DONTWAIT)

    def shutdown(self) -> None:
        """Ask the zygote to exit once it has answered what it already received."""
        self.closing = True
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)


_request_ids = itertools.count(1)
#: how long a request may wait for the zygote before it counts as hung
ANSWER_TIMEOUT: Final = 10.0
#: replies are headers with at most a small JSON error record
_REPLY_SIZE: Final = 8192
#: what sendmsg says when the zygote's end is gone
_PEER_GONE: Final = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNREFUSED})
#: plans kept by the supervisor (and so by its zygote); distinct specs beyond this evict the oldest
MAX_PLANS: Final = 512


class RequestNotSent(Exception):
    """The zygote was gone before the request was sent; retrying on a new one is safe."""


#: how long a cancelled spawn waits for the zygote's answer before leaving the
#: container to the reply reader (only a hung zygote takes this long)
ABANDON_AFTER: Final = 5.0


async def answer(pending: Pending) -> tuple[int, int]:
    """Wait for the zygote's answer to a spawn request: the container's ``(pid, pidfd)``, the pidfd ours.

    Nothing outlives a cancelled or failed call: cancelled before the answer,
    it waits for it (shielded; the zygote answers in well under a
    millisecond) and kills and reaps the container; a hung zygote's late
    answer is left to the reply reader, which adopts the orphan.

    Raises:
        SetupError: the clone failed (or its pidfd did not arrive: out of fds).
        ZygoteError: the zygote died before it answered.
    """
    try:
        await pending.event.wait()
    except BaseException:
        with trio.move_on_after(ABANDON_AFTER) as scope:
            scope.shield = True
            await pending.event.wait()
            if pending.pidfd >= 0:
                await kill_and_reap(pending.pidfd)
                pending.pidfd = -1
            elif pending.lost_pidfd:
                await kill_and_reap_pid(pending.pid)
        if not pending.event.is_set():
            pending.abandoned = True  # a hung zygote: the reply reader adopts it later
        raise
    if pending.error is not None:
        if pending.lost_pidfd:  # nothing may outlive this call: the container is gone before it raises
            await kill_and_reap_pid(pending.pid)
        raise pending.error
    return pending.pid, pending.pidfd


async def kill_and_reap(pidfd: int) -> None:
    """SIGKILL a container nobody owns, wait for it, reap it, close its pidfd; shielded."""
    with trio.CancelScope(shield=True):
        with suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        await trio.lowlevel.wait_readable(pidfd)
        with suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)  # noqa: ASYNC222 - WNOHANG
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)


async def kill_and_reap_pid(pid: int) -> None:
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

