"""Stdio plumbing for containers: which fds the child gets, and the supervisor's pipe ends."""

from __future__ import annotations

import errno
import io
import os
import socket
import subprocess
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import IO, Any, Final

import attrs
import trio

from ._cleanup import SmallExitStack
from ._errors import SetupError, SpecError

PIPE: Final = subprocess.PIPE
DEVNULL: Final = subprocess.DEVNULL
STDOUT: Final = subprocess.STDOUT

StdinArg = bytes | bytearray | memoryview | int | IO[Any] | None
StdoutArg = int | IO[Any] | None

_READ_CHUNK: Final = 65536


@attrs.frozen
class StdioOptions:
    """What a ``run`` or an ``exec`` was asked for its stdio, as ``trio.run_process`` takes it (see ``Supervisor.run``).

    Checked, not yet opened: ``StdioFds.open`` makes the fds of one spawn from it.
    """

    stdin: StdinArg
    capture_stdout: bool
    capture_stderr: bool
    stdout: StdoutArg
    stderr: StdoutArg
    check: bool
    #: the most bytes kept of each captured stream; past it the container is killed (``run(max_output=)``)
    max_output: int | None = None

    @classmethod
    def of(cls, stdin: StdinArg, capture_stdout: bool, capture_stderr: bool, stdout: StdoutArg,
           stderr: StdoutArg, check: bool, *, started: bool, max_output: int | None = None) -> StdioOptions:
        """Check the combination (ValueError, as trio.run_process) and keep it."""
        if max_output is not None and (isinstance(max_output, bool) or not isinstance(max_output, int)
                                       or max_output < 1):
            raise SpecError(f"run: max_output must be a positive number of bytes or None, not {max_output!r}")
        if capture_stdout and stdout is not None:
            raise ValueError("stdout= and capture_stdout=True cannot both be given")
        if capture_stderr and stderr is not None:
            raise ValueError("stderr= and capture_stderr=True cannot both be given")
        if not started and PIPE in (stdin, stdout, stderr):
            raise ValueError("anyns.PIPE is only valid with 'await nursery.start(...)'")
        return cls(stdin, capture_stdout, capture_stderr, stdout, stderr, check, max_output)

    @property
    def feed(self) -> bytes | None:
        """The bytes to write to stdin, if any."""
        stdin = self.stdin
        return bytes(stdin) if isinstance(stdin, (bytes, bytearray, memoryview)) and len(stdin) else None


class StdioFds:
    """The fds of one spawn made from ``StdioOptions``: the child's stdin, stdout, stderr, and our pipe ends.

    The child's ends of the pipes go to the exit stack given to ``open``
    (closed once the zygote has its copies); ours are owned here until
    ``hand_over()`` gives them to the streams that wrap them, and ``close()``
    closes what was not handed over.

    Attributes:
        child: the fds the child gets as 0, 1 and 2.
        parent_in: our end of its stdin pipe, or None.
        parent_out: our end of its stdout pipe (captured, or ``anyns.PIPE``), or None.
        parent_err: likewise for stderr.
    """

    def __init__(self) -> None:
        self.child: list[int] = []
        self.parent_in: int | None = None
        self.parent_out: int | None = None
        self.parent_err: int | None = None
        self._ours = SmallExitStack()

    @classmethod
    def open(cls, options: StdioOptions, devnull: int, child_ends: SmallExitStack, *,
             tty: bool = False) -> StdioFds:
        """The fds for ``options`` (with a terminal, /dev/null: the terminal is its stdio)."""
        fds = cls()
        try:
            if tty:
                fds.child.extend((devnull, devnull, devnull))
            else:
                fds.parent_in = fds._stdin(options.stdin, devnull, child_ends)
                fds.parent_out = fds._output(options.stdout, options.capture_stdout, 1, devnull, child_ends)
                fds.parent_err = fds._output(options.stderr, options.capture_stderr, 2, devnull, child_ends)
        except BaseException:
            fds.close()
            raise
        return fds

    def _pipe(self, child_ends: SmallExitStack, ours_reads: bool) -> tuple[int, int]:
        """A pipe: (child's end, our end), each owned by its stack."""
        r, w = os.pipe2(os.O_CLOEXEC)
        child, ours = (w, r) if ours_reads else (r, w)
        child_ends.callback(os.close, child)
        self._ours.callback(os.close, ours)
        return child, ours

    def _stdin(self, arg: StdinArg, devnull: int, child_ends: SmallExitStack) -> int | None:
        if arg is None:
            self.child.append(0)
        elif (isinstance(arg, (bytes, bytearray, memoryview)) and len(arg) == 0) or arg == DEVNULL:
            self.child.append(devnull)
        elif isinstance(arg, (bytes, bytearray, memoryview)) or arg == PIPE:
            child, ours = self._pipe(child_ends, ours_reads=False)
            self.child.append(child)
            return ours
        else:
            self.child.append(fileno_of(arg))
        return None

    def _output(self, arg: StdoutArg, capture: bool, inherit: int, devnull: int,
                child_ends: SmallExitStack) -> int | None:
        """Add the child's fd for stdout or stderr; return our read end, or None."""
        if capture or arg == PIPE:
            child, ours = self._pipe(child_ends, ours_reads=True)
            self.child.append(child)
            return ours
        if arg is None:
            self.child.append(inherit)
        elif arg == DEVNULL:
            self.child.append(devnull)
        elif arg == STDOUT:
            self.child.append(self.child[1])
        else:
            self.child.append(fileno_of(arg))
        return None

    @property
    def has_pipes(self) -> bool:
        """Whether there is a pipe of ours to serve."""
        return self.parent_in is not None or self.parent_out is not None or self.parent_err is not None

    def hand_over(self) -> None:
        """Our ends belong to the streams made of them from now on: ``close()`` leaves them."""
        self._ours.pop_all()

    def close(self) -> None:
        """Close our ends that were not handed over."""
        self._ours.close()


def fileno_of(arg: Any) -> int:
    if isinstance(arg, int):
        if arg < 0:
            raise ValueError(f"invalid file descriptor {arg}")
        return arg
    return int(arg.fileno())


async def read_to_eof(fd: int, limit: int | None = None) -> bytes:
    """Read a non-blocking fd to EOF (or to ``limit`` bytes)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if limit is not None and total >= limit:
            return b"".join(chunks)


async def send_and_close(stream: trio.lowlevel.FdStream, data: bytes) -> None:
    async with stream:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)


async def collect_into(stream: trio.abc.ReceiveStream, into: dict[str, bytes], name: str,
                       limit: int | None = None, over: Callable[[], Awaitable[object]] | None = None) -> None:
    """Read ``stream`` to EOF into ``into[name]``, keeping at most ``limit`` bytes.

    The bytes are kept in one ``io.BytesIO`` buffer grown in place (no list
    of chunks joined at the end), whose ``getvalue()`` hands that very buffer
    over as the result, without a copy; no read asks for more than the room
    left. So the memory this takes is what is kept (once, never twice), and
    never more than ``limit``. When the stream has more than ``limit``
    bytes, ``over()`` is awaited (it ends the program) and reading stops
    there; exactly ``limit`` bytes then EOF is not over. A terminal's master
    end reports the end of its other side as EIO: that is EOF here too.
    """
    kept = io.BytesIO()
    size = 0
    try:
        while True:
            room = _READ_CHUNK if limit is None else min(_READ_CHUNK, limit - size)
            # At the cap, one byte more tells "exactly the cap" from "past it".
            chunk = await stream.receive_some(room or 1)
            if not chunk:
                break
            if not room:
                if over is not None:
                    await over()
                break
            size += kept.write(chunk)
    except trio.BrokenResourceError:  # EIO on a terminal: no process holds it any more
        pass
    finally:
        into[name] = kept.getvalue()


#: the messages a child sends on a socket channel with fds, before any failure record
CHANNEL_TAGS = (b"TTY", b"NS", b"ROOT")


async def read_channel(fd: int, is_socket: bool) -> tuple[bytes, dict[bytes, list[int]]]:
    """Read the child's error channel to EOF: a failure record (or b""), and the fds it sent, by tag.

    The channel is a SEQPACKET socket when the child sends fds (``Plan.channel_is_socket``):
    the terminal's master end (``b"TTY"``), its namespace files (``b"NS"``), its root (``b"ROOT"``).
    Otherwise it is a pipe.
    """
    if not is_socket:
        return await read_to_eof(fd), {}
    sock = socket.socket(fileno=os.dup(fd))
    sock.setblocking(False)
    record: list[bytes] = []
    sent: dict[bytes, list[int]] = {}
    try:
        while True:
            try:
                data, ancdata, flags, _addr = sock.recvmsg(
                    _READ_CHUNK, socket.CMSG_SPACE(4 * 16), socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            fds: list[int] = []
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(memoryview(payload[: len(payload) - len(payload) % 4]).cast("i").tolist())
            if flags & socket.MSG_CTRUNC:
                # Some of the fds were dropped: no room in our table (EMFILE), or more than we take.
                for partial in fds:
                    os.close(partial)
                raise SetupError.from_errno("clone", "recvmsg", errno.EMFILE,
                                            message="the fds the child sent did not all arrive (MSG_CTRUNC)")
            if data in CHANNEL_TAGS:
                sent.setdefault(data, []).extend(fds)
                continue
            for stray in fds:  # fds with a record: not ours to keep
                os.close(stray)
            if not data:
                return b"".join(record), sent
            record.append(data)
    except BaseException:
        for fds in sent.values():
            for received in fds:
                os.close(received)
        raise
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def collect_tty(stream: trio.abc.ReceiveStream, into: dict[str, bytes], limit: int | None = None,
                      over: Callable[[], Awaitable[object]] | None = None) -> None:
    """Collect a terminal's output until the program's side has closed (EIO on the master); see ``collect_into``."""
    await collect_into(stream, into, "stdout", limit, over)
