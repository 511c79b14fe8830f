"""ContainerSpec(tty=True): a terminal from the container's own devpts; and ``run -it`` under tmux."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
import trio

import anyns


async def test_tty_captured(sup: anyns.Supervisor) -> None:
    """stdio is a terminal of the container's devpts, of the asked size; typed input arrives."""
    spec = anyns.ContainerSpec(argv=["sh", "-c", "tty; stty size; read x; echo got=$x"], tty=True, tty_size=(30, 100))
    done = await sup.run(spec, capture_stdout=True, stdin=b"hello\n")

    assert done.returncode == 0
    assert done.stdout is not None
    lines = done.stdout.replace(b"\r\n", b"\n").splitlines()
    # The terminal echoes "hello" whenever it was typed, so only the program's own order is fixed.
    assert [line for line in lines if line != b"hello"] == [b"/dev/pts/0", b"30 100", b"got=hello"]


async def test_tty_handed_out_and_resized(sup: anyns.Supervisor) -> None:
    """With nursery.start, Container.tty talks to an interactive shell; resize_tty reaches it."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(functools.partial(sup.run, check=False),
                                  anyns.ContainerSpec(argv=["sh", "-i"], tty=True))
        assert box.tty is not None
        box.resize_tty(40, 120)
        await box.tty.send_all(b"echo $((6*7)); stty size; exit 5\n")
        out = b""
        with trio.fail_after(10):
            try:
                async for chunk in box.tty:
                    out += chunk
            except trio.BrokenResourceError:  # EIO: the shell has gone
                pass
        await box.tty.aclose()
    lines = out.replace(b"\r\n", b"\n").decode().splitlines()

    assert box.returncode == 5
    assert [line for line in lines if line.endswith("42") and "$" not in line]  # after the prompt
    assert "40 120" in lines


async def test_tty_needs_start_or_capture(sup: anyns.Supervisor) -> None:
    """tty=True with nowhere for the terminal's output to go is a ValueError; the supervisor goes on."""
    with pytest.raises(ValueError, match="tty"):
        await sup.run(anyns.ContainerSpec(argv=["true"], tty=True))
    assert (await sup.run(anyns.ContainerSpec(argv=["true"]))).returncode == 0


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` (a terminal's screen, owned by another process) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_run_it_under_tmux(skip_or_fail: Callable[[str], None]) -> None:
    """`python -m anyns run -it /bin/sh` in tmux takes typed input, shows output, keeps the exit status."""
    if shutil.which("tmux") is None:
        skip_or_fail("tmux is not installed (apt-get install tmux)")
    session = f"anyns-{uuid.uuid4().hex[:8]}"
    command = f"{sys.executable} -m anyns run -it -- /bin/sh; echo EXIT=$?; sleep 60"
    env = {**os.environ, "TERM": "xterm"}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command],
                   check=True, env=env)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                              text=True, check=False).stdout

    def keys(text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", session, text, "Enter"], check=True)

    try:
        assert _wait_for(lambda: "#" in screen(), 20), screen()  # the container's shell prompt
        keys("echo hello-$((40+2)); stty size; tty")
        assert _wait_for(lambda: "/dev/pts/0" in screen(), 10), screen()
        keys("exit 7")
        assert _wait_for(lambda: "EXIT=7" in screen(), 10), screen()
        lines = [line.strip() for line in screen().splitlines()]
        assert "hello-42" in lines and "30 100" in lines
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)
