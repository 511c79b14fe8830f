"""The init: pid 1 of a container's pid namespace, between the program and the kernel.

Without one, the program is pid 1, and pid 1 is special: it ignores signals
it has no handler for (so SIGTERM does nothing to most programs), and every
orphan in the namespace becomes its child, so a program that does not reap
leaves zombies (research/spawn-path.md pitfall 8). ``ContainerSpec(init=True)``
(the default) keeps the set-up child as pid 1 and starts the program as
pid 2, like ``docker run --init`` (tini) or bubblewrap's own pid-1 monitor.

It is the cloned child itself, not an executable: no binary has to exist in
the container's root, and it shares its pages with the zygote, so it costs
little memory (measured by ``benchmarks/scale.py``). It runs only this loop,
with every signal it handles blocked and taken with ``sigwait``, so no
Python signal machinery is involved:

* SIGCHLD: reap every child that has exited (orphans included); when the
  program is among them, report its wait status and exit;
* SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH: forward to
  the program.

The program's exact status (an exit code, or the signal that killed it)
goes to the supervisor on the ``status`` pipe before the init exits, so
``returncode`` describes the program (``-9`` when the OOM killer chose it);
the init's own exit code says the same as far as a code can (128+N for
signal N). If the init itself is killed (``Container.kill``), the pipe stays
empty and the supervisor reports the init's ``-9``.

The program is started with ``posix_spawn``, which returns once it has
been exec'd (or reports why not, which the child then reports like a failed
execve); then the init closes its copy of the error channel, which tells
the supervisor the program runs. The program shares the init's session and
process group, so a terminal's ^C reaches it directly; the init passes on
only the signals a process sent.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no typeshed stub
import errno
import os
import select

from ._protocol import TYPE_CHECKING
from ._sys import _libc

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

_SIGCHLD = int(_signal.SIGCHLD)
_SIGKILL = int(_signal.SIGKILL)
_PR_SET_PDEATHSIG = 1
#: what the init passes on to the program (the list tini and catatonit forward, in essence)
FORWARDED = tuple(int(s) for s in (
    _signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT,
    _signal.SIGUSR1, _signal.SIGUSR2, _signal.SIGWINCH,
))
_WAITED = frozenset((_SIGCHLD, *FORWARDED))
#: made in the zygote, once: the init allocates nothing for it
_COMM = _libc.comm_name(b"anyns-init")
#: si_code of a signal the kernel generated (a terminal's ^C), as opposed to one a process sent
_SI_KERNEL = 0x80


def first_to_start(candidates: tuple[bytes, ...], start: Callable[[bytes], Any], look_first: bool = False) -> Any:
    """``start(path)`` for each candidate in turn, like execvp(3); the first that works wins.

    ENOENT and ENOTDIR move on to the next (an EACCES is the error kept if
    none works), any other error stops. ``look_first``: skip paths that do not
    exist without trying them (a failed posix_spawn still costs a clone).

    Raises:
        OSError: no candidate could be started.
    """
    first: OSError | None = None
    for path in candidates:
        if look_first and len(candidates) > 1 and not os.path.exists(path):
            if first is None:
                first = OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            continue
        try:
            return start(path)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES) or len(candidates) == 1:
                raise
            if first is None or (e.errno == errno.EACCES and first.errno != errno.EACCES):
                first = e
    assert first is not None
    raise first


def spawn_program(candidates: tuple[bytes, ...], argv: tuple[bytes, ...], env: dict[bytes, bytes]) -> int:
    """Start the program as pid 2 and return its pid; the caller then serves as its init.

    ``posix_spawn`` (glibc: a vfork-style clone on a stack of its own) rather
    than fork: it copies no page tables, so it costs the same however large
    the child is, and it returns once the program is exec'd, so the error
    channel can close at once. Each candidate is tried like execvp(3).

    Raises:
        OSError: no candidate could be executed (as ``_child._execve`` would report it).
    """
    # Blocked before the spawn, so no signal meant for the program is lost
    # before the loop runs; the program starts with an empty mask.
    _signal.pthread_sigmask(_signal.SIG_BLOCK, _WAITED)
    try:
        # Looking first: a failed posix_spawn costs a clone, and a pid (the program would not be pid 2).
        pid: int = first_to_start(candidates, lambda path: os.posix_spawn(path, argv, env, setsigmask=()),
                                  look_first=True)
    except OSError:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
        raise
    return pid


def fork_program(candidates: tuple[bytes, ...], argv: tuple[bytes, ...], env: dict[bytes, bytes]) -> int:
    """Like ``spawn_program``, but the program dies with us (PR_SET_PDEATHSIG), which posix_spawn cannot ask.

    For a process exec'd into a container by an unprivileged supervisor: it
    waits from outside the container's pid namespace, and when it is killed
    (``Container.kill``, a cancelled exec) the program must go too. A fork,
    so it costs more; exec failures come back on a close-on-exec pipe.

    Raises:
        OSError: no candidate could be executed.
    """
    _signal.pthread_sigmask(_signal.SIG_BLOCK, _WAITED)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    me = os.pidfd_open(os.getpid())  # getppid() says 0 across pid namespaces: watch us through a pidfd
    try:
        # os.fork (glibc's clone), not clone3: the seccomp filter, installed
        # by now, answers clone3 with ENOSYS.
        pid = os.fork()
    except OSError:
        for fd in (ready_r, ready_w, me):
            os.close(fd)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
        raise
    if pid == 0:  # the program
        try:
            _libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL)
            if select.select((me,), (), (), 0)[0]:  # we died before the prctl
                os._exit(127)
            _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
            try:
                first_to_start(candidates, lambda path: os.execve(path, argv, env))
            except OSError as e:
                os.write(ready_w, b"%d" % (e.errno or errno.ENOEXEC))
        finally:
            os._exit(127)
    os.close(ready_w)
    os.close(me)
    failed = os.read(ready_r, 16)
    os.close(ready_r)
    if failed:
        os.waitpid(pid, 0)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
        err = int(failed)
        raise OSError(err, os.strerror(err), candidates[0] if candidates else None)
    return pid


def serve(program: int, status_fd: int, errpipe: int) -> NoReturn:
    """The init's loop; exits with the program."""
    _libc.set_comm(_COMM)  # not the zygote's name in ps inside and outside
    os.close(errpipe)  # the program runs: the supervisor may know
    # Keep only the status pipe: the init never execs, so close-on-exec fds
    # (the zygote's socket, the stdio pipes, cgroup and namespace fds) would
    # otherwise stay open as long as the container runs.
    if status_fd != 3:
        os.dup2(status_fd, 3)
    _libc.close_range(4, 0xFFFFFFFF, 0)
    for fd in (0, 1, 2):
        try:  # noqa: SIM105 - contextlib stays out of the zygote
            os.close(fd)
        except OSError:
            pass
    while True:
        info = _signal.sigwaitinfo(_WAITED)
        signo = info.si_signo
        if signo != _SIGCHLD:
            # A terminal's ^C (sent by the kernel, SI_KERNEL) reaches the
            # program directly, in the same foreground process group; only
            # what a process sent (the supervisor) is passed on.
            if info.si_code != _SI_KERNEL:
                try:  # noqa: SIM105 - contextlib stays out of the zygote
                    os.kill(program, signo)
                except ProcessLookupError:
                    pass
            continue
        status = _reap(program)
        if status is not None:
            _exit_like(status)


def _reap(program: int) -> int | None:
    """Reap every child that has exited; the program's wait status if it was among them."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == program:
            found = status


def warm_up(rounds: int = 20) -> None:
    """Run the init's code paths in the zygote, harmlessly, so children inherit them quickened.

    CPython 3.11 specialises bytecode in place the first times it runs; done
    here, each container's init does not write to (and so copy) those pages.
    spawn_program finds no candidate (a path that cannot exist); _reap finds
    no child (the zygote has none: its clones are the supervisor's).
    """
    missing = (b"/proc/self/anyns-warm-up/a", b"/proc/self/anyns-warm-up/b")
    for _ in range(rounds):
        try:  # noqa: SIM105 - contextlib stays out of the zygote
            spawn_program(missing, (b"x",), {b"A": b"B"})
        except OSError:
            pass
        _reap(-1)


def _exit_like(status: int) -> NoReturn:
    """Report the program's wait status on fd 3 and exit with the closest code an init can give."""
    code = os.waitstatus_to_exitcode(status)
    try:  # noqa: SIM105 - contextlib stays out of the zygote
        os.write(3, b"%d" % code)
    except OSError:
        pass
    os._exit(code if code >= 0 else 128 - code)


def program_status(data: bytes) -> int | None:
    """The program's ``returncode`` from what the init wrote, or None if it wrote nothing."""
    try:
        return int(data) if data else None
    except ValueError:
        return None

