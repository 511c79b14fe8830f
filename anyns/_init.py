"""The init: the process between a container's program and the kernel, and what Python knows of it.

Without one, the program is pid 1, and pid 1 is special: it ignores signals
it has no handler for (so SIGTERM does nothing to most programs), and every
orphan in the namespace becomes its child, so a program that does not reap
leaves zombies. ``ContainerSpec(init=True)`` (the default) makes the init pid
1 and the program pid 2, like ``docker run --init`` (tini) or bubblewrap's
own pid-1 monitor.

The init is a small static C program, ``anyns/_native/init.c``, compiled at
install time into ``anyns/_native/anyns-init``. The set-up child execs it
(``execveat`` on a copy the zygote made, below) where it would exec the
program: no process of a container maps the zygote's memory, which holds the
cached plans of other containers, their environment included (a fork of it
was readable through /proc/1/mem with CAP_SYS_PTRACE). It is not dumpable,
names itself ``anyns-init``, and its command line is that name alone. It
runs as:

* pid 1 of the container's pid namespace (``spawn_with_init``): vfork and
  execve the program, forward SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and
  SIGWINCH to it (not those the kernel sent: a terminal's ^C reaches the
  program directly), reap every orphan;
* the waiter of a rootless exec (``fork_and_wait``), outside the container's
  pid namespace: the program is forked into it and dies with the waiter
  (PR_SET_PDEATHSIG, set in the forked child);
* without a pid namespace where no cgroup can be had (rootless), a child
  subreaper (``subreaper``, as ``tini -s``): as the waiter, and when the
  program ends it kills what the program left running, reaps it, and only
  then reports;
* pid 1 that holds the container (``hold_with_init``, for
  ``run(collect=...)``): as the first, but when the program has ended it
  kills every other process of the pid namespace, reaps them, reports the
  status, and waits until the supervisor closes its end of the status
  channel (a socket then) before it exits: the mount namespace, the
  container's ``/tmp`` included, lives until the supervisor has read the
  files it collects. ``END_ALL`` sent to it from outside the namespace (a
  budget kill) ends the program and everything else but the init.

The program's exact status (an exit code, or -N for signal N) goes to the
supervisor on the ``status`` pipe as decimal text before the init exits,
so ``returncode`` describes the program (``-9`` when the OOM killer chose
it); the init's own exit code says the same as far as a code can (128+N for
signal N). If the init itself is killed (``Container.kill``), the pipe stays
empty and the supervisor reports the init's ``-9``. A program that cannot
be started is reported on the error channel exactly as the child reports a
failed execve; once it runs the init closes its copy of the channel (EOF:
exec'd).

The zygote opens the binary once (``open_binary``): a sealed memfd copy, so
that a container process that reaches /proc/PID/exe of an init can never
write the host's file (runc CVE-2019-5736). The control data reaches the
init in its environment block, written by the child (``_native/spawn.c``,
``op_exec_init``; see init.c for why not argv).
"""

from __future__ import annotations

import errno
import os

from ._protocol import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Final

#: where ``pip install`` puts the compiled init, beside this module
BINARY: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native", "anyns-init")
#: the init's modes, by the exec step's call (init.c: FLAG_FORK 1, FLAG_SUBREAPER 2)
MODES: Final = {"spawn_with_init": 0, "fork_and_wait": 1, "subreaper": 1 | 2, "hold_with_init": 4}
#: the signal (a real-time one, by its kernel number) that has a holding init
#: (``hold_with_init``) end the program and every other process but itself (init.c: SIGNAL_END_ALL)
END_ALL: Final = 40
#: its argv: all that /proc/PID/cmdline shows, to anyone who sees the pid
ARGV0: Final = b"anyns-init"

_MFD_CLOEXEC = 0x0001
_MFD_ALLOW_SEALING = 0x0002
_MFD_EXEC = 0x0010  # Linux 6.3; before, memfds are executable anyway (and MFD_EXEC is EINVAL)
_F_ADD_SEALS = 1033
#: seal, shrink, grow, write: the copy can never change again
SEALS: Final = 0x0001 | 0x0002 | 0x0004 | 0x0008


def open_binary(path: str = BINARY) -> tuple[int, bool]:
    """An fd the child can ``execveat`` the init from: ``(fd, whether it is a sealed memfd copy)``.

    The copy is what a container could reach through /proc/PID/exe, and it
    is sealed against writes (runc CVE-2019-5736: a container overwrote the
    host's runc binary that way). ``vm.memfd_noexec=2`` refuses executable
    memfds: then an O_RDONLY fd of ``path`` itself. Both are close-on-exec:
    execveat with AT_EMPTY_PATH runs an ELF binary from such an fd.

    ``ANYNS_FORCE_FALLBACK=init-file`` takes the fallback (for tests).

    Raises:
        OSError: ``path`` cannot be opened (a source checkout never built).
    """
    source = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    if "init-file" in os.environ.get("ANYNS_FORCE_FALLBACK", ""):
        return source, False
    try:
        try:
            memfd = os.memfd_create("anyns-init", _MFD_CLOEXEC | _MFD_ALLOW_SEALING | _MFD_EXEC)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            memfd = os.memfd_create("anyns-init", _MFD_CLOEXEC | _MFD_ALLOW_SEALING)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM):  # vm.memfd_noexec=2 (EACCES)
            os.close(source)
            raise
        return source, False
    try:
        while os.sendfile(memfd, source, None, 1 << 20):
            pass
        _fcntl(memfd, _F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(memfd)
        raise
    finally:
        os.close(source)
    return memfd, True


def _fcntl(fd: int, command: int, arg: int) -> int:
    import fcntl  # once, in the zygote's start: F_ADD_SEALS has no os function

    return fcntl.fcntl(fd, command, arg)


def program_status(data: bytes) -> int | None:
    """The program's ``returncode`` from what the init wrote, or None if it wrote nothing."""
    try:
        return int(data) if data else None
    except ValueError:
        return None
