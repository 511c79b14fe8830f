"""ContainerSpec(tty=True): a terminal from the container's own devpts; and ``run -it`` under tmux."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
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


def test_run_it_under_tmux(skip_or_fail: Callable[[str], None]) -> None:
    """`python -m anyns run -it /bin/sh` in tmux takes typed input, shows output, keeps the exit status."""
    if shutil.which("tmux") is None:
        skip_or_fail("tmux is not installed (apt-get install tmux)")
    session = f"anyns-{uuid.uuid4().hex[:8]}"
    # The pane signals the test when anyns has returned, so nothing here polls the screen.
    command = f"{sys.executable} -m anyns run -it -- /bin/sh; echo EXIT=$?; tmux wait-for -S {session}; sleep 60"
    env = {**os.environ, "TERM": "xterm"}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command],
                   check=True, env=env)
    try:
        # Typed at once: the pane's terminal holds the keys until the container's shell reads them.
        subprocess.run(["tmux", "send-keys", "-t", session, "echo hello-$((40+2)); stty size; tty; exit 7",
                        "Enter"], check=True)
        subprocess.run(["tmux", "wait-for", session], check=True, timeout=30)
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                                check=True).stdout
        lines = [line.strip() for line in screen.splitlines()]

        assert "EXIT=7" in lines, screen
        # Typed ahead, the line may be echoed before the prompt: the output can follow "# " on its line.
        assert any(line.endswith("hello-42") and "$" not in line for line in lines), screen
        assert "30 100" in lines and "/dev/pts/0" in lines, screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)
