"""A container starts with every signal at its default, whatever its supervisor ignores.

Ignored signals survive fork and exec: a supervisor run under ``nohup``
ignores SIGHUP, one started as a background job of a shell script ignores
SIGINT and SIGQUIT, and CPython ignores SIGPIPE and SIGXFSZ. Without a reset
a container's program inherits that (a shell cannot even trap a signal that
was ignored when it started), and an inherited SIG_IGN for SIGCHLD would
have the init's children reaped behind its back. This was found when the
test suite, run under nohup, hung on a forwarded SIGHUP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import signal, sys, trio, anyns
    # (not SIGCHLD: a process that ignores it cannot wait for its children, the containers included)
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGTERM, signal.SIGWINCH):
        signal.signal(sig, signal.SIG_IGN)

    async def main():
        async with anyns.open_supervisor() as sup:
            for init in (True, False):
                spec = anyns.ContainerSpec(argv=["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; "
                                                 "trap 'echo got-HUP' HUP; kill -HUP $$; echo done"], init=init)
                done = await sup.run(spec, capture_stdout=True)
                sys.stdout.write(done.stdout.decode())
            spec = anyns.ContainerSpec(argv=["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/1/status"])
            done = await sup.run(spec, capture_stdout=True)
            sys.stdout.write(done.stdout.decode())

    trio.run(main)
    """
)


def test_ignored_signals_of_the_supervisor_do_not_reach_the_container() -> None:
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    # three processes' masks (the program with an init, without one, the init itself): nothing ignored or blocked
    assert lines.count("SigIgn:") == 3 and lines.count("SigBlk:") == 3, done.stdout
    for i, word in enumerate(lines):
        if word in ("SigIgn:", "SigBlk:"):
            assert int(lines[i + 1], 16) == 0, done.stdout
    assert lines.count("got-HUP") == 2 and lines.count("done") == 2, done.stdout
