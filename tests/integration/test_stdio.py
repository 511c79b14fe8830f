"""stdin, stdout and stderr: bytes in, captured out, pipes, fds, /dev/null."""

from __future__ import annotations

import os
import sys
from functools import partial

import pytest
import trio
from _util import lines, read, read_lines, sh, sh_spec

import anyns


async def test_stdin_bytes_and_separate_capture(sup: anyns.Supervisor) -> None:
    """Bytes given as stdin reach the program; stdout and stderr are captured apart."""
    spec = sh_spec("cat; echo to-err >&2; echo to-out")
    done = await sup.run(spec, stdin=b"fed\n", capture_stdout=True, capture_stderr=True)
    assert done.stdout == b"fed\nto-out\n"
    assert done.stderr == b"to-err\n"
    assert done.returncode == 0
    assert done.args == list(spec.argv)
    assert isinstance(done, anyns.CompletedContainer)
    assert done.pid > 1


async def test_large_stdin_and_stdout_stream_without_deadlock(sup: anyns.Supervisor) -> None:
    """A few MiB in and out at the same time go through intact (no pipe-buffer deadlock)."""
    data = os.urandom(3 << 20)
    done = await sup.run(anyns.ContainerSpec(argv=["cat"]), stdin=data, capture_stdout=True)
    assert done.stdout == data


async def test_default_stdin_is_empty(sup: anyns.Supervisor) -> None:
    """Without stdin= the program reads EOF at once."""
    done = await sup.run(anyns.ContainerSpec(argv=["wc", "-c"]), capture_stdout=True)
    assert lines(done.stdout) == ["0"]


async def test_uncaptured_output_is_none(sup: anyns.Supervisor) -> None:
    """Output that was not captured is None in the result."""
    done = await sup.run(sh_spec("true"), stdout=anyns.DEVNULL, stderr=anyns.DEVNULL)
    assert done.stdout is None and done.stderr is None


async def test_stderr_to_stdout(sup: anyns.Supervisor) -> None:
    """stderr=anyns.STDOUT merges stderr into the captured stdout, in order."""
    done = await sup.run(sh_spec("echo a; echo b >&2; echo c"), capture_stdout=True,
                         stderr=anyns.STDOUT)
    assert done.stdout == b"a\nb\nc\n"
    assert done.stderr is None


async def test_stdout_to_devnull_and_to_fd(sup: anyns.Supervisor, tmp_path: object) -> None:
    """stdout may go to anyns.DEVNULL or to a file descriptor the caller owns."""
    done = await sup.run(sh_spec("echo lost; echo kept >&2"), stdout=anyns.DEVNULL,
                         capture_stderr=True)
    assert done.stderr == b"kept\n"
    path = os.path.join(str(tmp_path), "out")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await sup.run(sh_spec("echo into-file"), stdout=fd)
    finally:
        os.close(fd)
    assert read(path) == b"into-file\n"


async def test_stdin_from_devnull_and_fd(sup: anyns.Supervisor) -> None:
    """stdin may be anyns.DEVNULL or a file descriptor the caller owns."""
    done = await sup.run(anyns.ContainerSpec(argv=["cat"]), stdin=anyns.DEVNULL,
                         capture_stdout=True)
    assert done.stdout == b""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(w, b"from-a-pipe")
        os.close(w)
        w = -1
        done = await sup.run(anyns.ContainerSpec(argv=["cat"]), stdin=r, capture_stdout=True)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert done.stdout == b"from-a-pipe"


async def test_pipe_streams_with_nursery_start(sup: anyns.Supervisor) -> None:
    """With anyns.PIPE, Container.stdin/stdout/stderr are trio streams to talk to the program."""
    spec = sh_spec('while read -r line; do echo "out:$line"; echo "err:$line" >&2; done; exit 7')
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, spec, stdin=anyns.PIPE, stdout=anyns.PIPE,
                                          stderr=anyns.PIPE, check=False))
        assert isinstance(box, anyns.Container)
        assert box.returncode is None
        for word in ("one", "two"):
            await box.stdin.send_all(f"{word}\n".encode())
            assert await read_lines(box.stdout, 1) == [f"out:{word}"]
            assert await read_lines(box.stderr, 1) == [f"err:{word}"]
        await box.stdin.aclose()
        assert await box.wait() == 7
    assert box.returncode == 7


async def test_pipe_stdout_reaches_eof_at_exit(sup: anyns.Supervisor) -> None:
    """A PIPE stdout yields everything and then EOF once the program exits."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec("seq 1 2000"), stdout=anyns.PIPE))
        data = b""
        while chunk := await box.stdout.receive_some():
            data += chunk
    assert lines(data) == [str(i) for i in range(1, 2001)]
    assert box.returncode == 0


async def test_pipe_requires_nursery_start(sup: anyns.Supervisor) -> None:
    """anyns.PIPE with a plain await is a ValueError; the supervisor stays usable."""
    with pytest.raises(ValueError, match="PIPE"):
        await sup.run(sh_spec("true"), stdout=anyns.PIPE)
    with pytest.raises(ValueError):
        await sup.run(sh_spec("true"), stdout=anyns.DEVNULL, capture_stdout=True)
    with pytest.raises(TypeError):
        await sup.run(["true"])  # type: ignore[arg-type]
    done = await sh(sup, "echo still-works")
    assert done.stdout == b"still-works\n"


async def test_a_channel_message_whose_fds_did_not_all_arrive_is_a_typed_error() -> None:
    """More fds than the supervisor takes (or no room for them: EMFILE) sets MSG_CTRUNC: read_channel closes
    what did arrive and raises a SetupError with resource "fds", rather than keep a partial set."""
    import socket as socket_module

    from anyns._stdio import read_channel

    ours, theirs = socket_module.socketpair(socket_module.AF_UNIX, socket_module.SOCK_SEQPACKET)
    sent = [os.open("/dev/null", os.O_RDONLY) for _ in range(20)]
    try:
        theirs.sendmsg([b"NS"], [(socket_module.SOL_SOCKET, socket_module.SCM_RIGHTS,
                                  b"".join(fd.to_bytes(4, sys.byteorder) for fd in sent))])
        theirs.close()
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(anyns.SetupError) as info:
            await read_channel(ours.fileno(), True)
        assert info.value.resource == "fds" and "MSG_CTRUNC" in str(info.value)
        assert set(os.listdir("/proc/self/fd")) == before  # the 16 that arrived are closed again
    finally:
        ours.close()
        for fd in sent:
            os.close(fd)
