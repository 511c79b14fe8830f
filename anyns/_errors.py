"""The anyns exception tree, and the table of hints for known host settings.

::

    AnynsError                     base of everything anyns raises
    ├── SpecError (ValueError)     a spec that cannot be valid; raised when it is built
    ├── SetupError                 the container failed before its program started
    │   └── ExecError              execve itself failed (missing or non-executable program)
    ├── ContainerFailed            non-zero exit with check=True (a CalledProcessError)
    ├── ZygoteError                the zygote died, could not start, or spoke nonsense
    ├── NetworkError               host-side netlink work failed
    └── UnsupportedError           the kernel or the host lacks what was asked for

Messages are lowercase and name the operation first. A ``SetupError`` has
``__cause__`` set to an ``OSError`` rebuilt from the child's errno, so callers
can catch ``FileNotFoundError`` and friends from ``err.__cause__``.
"""

from __future__ import annotations

import errno as _errno
import os
import subprocess
from collections.abc import Sequence
from typing import Self

__all__ = [
    "AnynsError",
    "ContainerFailed",
    "ExecError",
    "NetworkError",
    "SetupError",
    "SpecError",
    "UnsupportedError",
    "ZygoteError",
    "diagnose",
]


class AnynsError(Exception):
    """Base class of every exception anyns raises on purpose."""


class SpecError(AnynsError, ValueError):
    """A container spec is invalid. Raised when the spec is built, before any syscall."""


class UnsupportedError(AnynsError):
    """The kernel or the host cannot do what the spec asks for."""


class ZygoteError(AnynsError):
    """The zygote process died, failed to start, or broke the protocol.

    Spawns in flight fail with this error; the next spawn starts a new zygote.
    """


class NetworkError(AnynsError):
    """Host-side network setup failed."""


class SetupError(AnynsError):
    """Setting up the container failed before its program started.

    Attributes:
        step: the setup step that failed (``"rootfs"``, ``"mounts"``, ``"exec"`` …).
        syscall: the system call that failed (``"mount"``, ``"execve"`` …).
        path: the path the call was about, or None.
        errno: the error number, or 0 when the failure was not a syscall error.
        strerror: the text of the error.
        hint: advice when a host setting is the likely cause, else None.
        resource: what ran out when the failure is an exhaustion that passes
            (``"fds"``, ``"pids"``, ``"namespaces"``, ``"memory"``, ``"mounts"``),
            else None: the same spawn may work later, e.g. once other
            containers have exited. ``open_supervisor(max_containers=N)``
            makes spawns wait instead.
    """

    def __init__(
        self,
        step: str,
        syscall: str,
        path: str | None,
        errno: int,
        strerror: str,
        hint: str | None = None,
    ) -> None:
        self.step = step
        self.syscall = syscall
        self.path = path
        self.errno = errno
        self.strerror = strerror
        self.hint = hint
        self.resource = exhausted_resource(step, syscall, errno)
        where = f" {path!r}" if path else ""
        code = f"[Errno {errno}] " if errno else ""
        text = f"{step}: {syscall}{where} failed: {code}{strerror}"
        if hint:
            text += f" (hint: {hint})"
        super().__init__(text)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            type(self),
            (self.step, self.syscall, self.path, self.errno, self.strerror, self.hint),
        )

    # The ways to make one: each sets ``__cause__`` to the matching OSError
    # (FileNotFoundError for ENOENT …), so ``raise SetupError.from_errno(...)``
    # is the whole of it; ``hint`` left out is ``diagnose()``'s.

    @classmethod
    def from_errno(cls, step: str, syscall: str, errno: int, path: str | None = None, hint: str | None = None,
                   message: str | None = None) -> Self:
        """A setup error for ``syscall`` failing with ``errno`` (0: not a syscall error, no cause).

        ``message`` defaults to ``os.strerror(errno)``; ``hint`` to what
        ``diagnose()`` advises for it. Makes an instance of ``cls`` as called:
        ``SetupError.from_errno`` a ``SetupError`` whatever the step.
        """
        text = message or (os.strerror(errno) if errno else "error")
        if hint is None:
            hint = diagnose(step, syscall, errno, path)
        error = cls(step, syscall, path, errno, text, hint)
        if errno:
            error.__cause__ = oserror(errno, text, path)
        return error

    @classmethod
    def from_oserror(cls, step: str, syscall: str, exc: OSError, path: str | None = None,
                     hint: str | None = None) -> Self:
        """A setup error for ``exc``, raised by ``syscall`` here in the supervisor; ``exc`` is its cause.

        ``path`` defaults to the exception's ``filename``.
        """
        if path is None and isinstance(exc.filename, str):
            path = exc.filename
        err = exc.errno or 0
        error = cls(step, syscall, path, err, exc.strerror or str(exc),
                    hint if hint is not None else diagnose(step, syscall, err, path))
        error.__cause__ = exc
        return error

    @staticmethod
    def from_record(step: str, syscall: str, path: str | None, errno: int, message: str) -> SetupError:
        """The error a child, the init or the zygote reported in a failure record (``_protocol``).

        The one place the subclass is chosen: a failure of step ``"exec"`` is
        an ``ExecError`` (the program could not be executed).
        """
        kind = ExecError if step == "exec" else SetupError
        return kind.from_errno(step, syscall, errno, path, message=message)


class ExecError(SetupError):
    """``execve`` of the container's program failed (not found, not executable …)."""


class ContainerFailed(AnynsError, subprocess.CalledProcessError):
    """The container's program exited with a non-zero status and ``check=True``.

    ``returncode`` is the exit status, or ``-N`` when signal N killed it;
    ``cmd`` is the argv; ``stdout``/``stderr`` hold captured output, if any;
    ``oom_killed`` is true when the OOM killer ended it, and
    ``memory_limit`` is then its ``Limits.memory`` in bytes.
    ``exceeded`` is the budget that ended it, as
    ``CompletedContainer.exceeded`` has it (``"timeout"``, ``"cpu_time"``,
    ``"output"``, ``"memory"``, or None), and ``budget`` that budget's
    value (seconds, or bytes for ``"output"``). A budget anyns enforced
    (timeout, cpu_time, output) fails a ``check=True`` run whatever the
    exit status.
    """

    def __init__(
        self,
        returncode: int,
        cmd: Sequence[str],
        output: bytes | None = None,
        stderr: bytes | None = None,
        *,
        oom_killed: bool = False,
        memory_limit: int | None = None,
        exceeded: str | None = None,
        budget: float | None = None,
    ) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, list(cmd), output, stderr)
        self.oom_killed = oom_killed
        self.memory_limit = memory_limit
        self.exceeded = exceeded
        self.budget = budget

    def __str__(self) -> str:
        if self.exceeded in _BUDGET_MESSAGES:
            amount = ""
            if self.budget is not None:
                size = format_size(int(self.budget))
                amount = (f" of {size if size[-1:].isalpha() else size + ' bytes'}" if self.exceeded == "output"
                          else f" after {self.budget:g} s")
            return f"container {self.cmd!r}: " + _BUDGET_MESSAGES[self.exceeded].format(amount=amount)
        if self.oom_killed and self.returncode < 0:
            limit = f" (memory limit {format_size(self.memory_limit)})" if self.memory_limit else ""
            return f"container {self.cmd!r} was killed by the OOM killer{limit}"
        if self.returncode < 0:
            try:
                import signal

                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"container {self.cmd!r} was killed by {name}"
        return f"container {self.cmd!r} exited with status {self.returncode}"

    def __reduce__(self) -> tuple[object, ...]:
        return (_container_failed, (self.returncode, self.cmd, self.output, self.stderr, self.oom_killed,
                                    self.memory_limit, self.exceeded, self.budget))


#: ContainerFailed's message for each budget anyns enforces ({amount}: " after 0.5 s", " of 1M bytes" or "")
_BUDGET_MESSAGES = {
    "timeout": "the time ran out{amount} (timeout); the container was stopped",
    "cpu_time": "the CPU time ran out{amount} of CPU in all (cpu_time); the container was killed",
    "output": "its output reached the cap{amount} (max_output); the container was killed",
}


def _container_failed(returncode: int, cmd: Sequence[str], output: bytes | None, stderr: bytes | None,
                      oom_killed: bool, memory_limit: int | None, exceeded: str | None = None,
                      budget: float | None = None) -> ContainerFailed:
    """Unpickle a ContainerFailed (its keyword-only arguments)."""
    return ContainerFailed(returncode, cmd, output, stderr, oom_killed=oom_killed, memory_limit=memory_limit,
                           exceeded=exceeded, budget=budget)


def format_size(number: int) -> str:
    """``268435456`` -> ``"256M"``: the largest unit that divides it exactly."""
    for unit in ("T", "G", "M", "k"):
        scale = 1 << (10 * ('kMGT'.index(unit) + 1))
        if number % scale == 0:
            return f"{number // scale}{unit}"
    return str(number)




def read_setting(path: str) -> str | None:
    """The stripped text of a small /proc or /sys file, or None if it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


#: What each (syscall, errno) of a spawn means ran out; see SetupError.resource.
_NAMESPACE_CALLS = ("clone3", "unshare", "setns")


def exhausted_resource(step: str, syscall: str, errno: int) -> str | None:
    """The resource whose exhaustion caused a setup failure, or None if it was not one.

    ``clone3`` answers ENOMEM also when the pid namespace to join has no init
    any more; the supervisor reports that case as the container's exit.
    """
    if errno in (_errno.EMFILE, _errno.ENFILE):
        return "fds"
    if errno == _errno.EAGAIN and (syscall in ("clone3", "fork", "posix_spawn") or step == "exec"):
        return "pids"
    if errno == _errno.ENOSPC and syscall in _NAMESPACE_CALLS:
        return "namespaces"
    if errno == _errno.ENOSPC and syscall in ("mount", "move_mount", "open_tree"):
        return "mounts"
    if errno == _errno.ENOMEM and syscall in (*_NAMESPACE_CALLS, "mount", "fork", "posix_spawn"):
        return "memory"
    return None


def _namespace_limit_hint() -> str:
    """Name the limits, with the lowest values first: the one that was reached is usually among them."""
    try:  # the kernel's own list: user.max_<kind>_namespaces, one per kind it has
        names = [n for n in os.listdir("/proc/sys/user") if n.startswith("max_") and n.endswith("_namespaces")]
    except OSError:
        names = []
    values = []
    for name in names:
        value = read_setting(f"/proc/sys/user/{name}")
        if value is not None and value.isdigit():
            values.append((int(value), f"user.{name}={value}"))
    lowest = ", ".join(text for _, text in sorted(values)[:2])
    return (
        "a namespace limit was reached (the lowest here: " + (lowest or "unknown") + "; see "
        "/proc/sys/user/max_*_namespaces); the kernel frees an exited container's namespaces a few ms "
        "later; open_supervisor(max_containers=N) makes spawns wait instead of failing"
    )


def diagnose(step: str, syscall: str, errno: int, path: str | None) -> str | None:
    """Return advice for a setup failure whose cause is often the host, else None.

    Reads a few ``/proc/sys`` files; runs only in the supervisor.
    """
    if step == "exec":
        if errno == _errno.ENOENT:
            return (
                "the program is not inside the container's root filesystem; "
                "check argv[0], PATH in env, and the rootfs"
            )
        if errno == _errno.EACCES:
            return "the program is not executable, or lies on a noexec mount"
        if errno == _errno.ENOEXEC:
            return "the file is not a binary this kernel can run, or its #! line is wrong"
        if errno == _errno.EAGAIN:
            return ("no task could be made for the program: a pids limit (Limits.pids; the init takes one "
                    "task), RLIMIT_NPROC, or /proc/sys/kernel/pid_max")
    if syscall == "clone3" and errno == _errno.ENOMEM and step == "clone":
        return ("the pid namespace to join has no init process any more (its container exited), or the kernel "
                "had no memory for a new namespace")
    if syscall in _NAMESPACE_CALLS and errno == _errno.ENOSPC:
        return _namespace_limit_hint()
    if syscall in _NAMESPACE_CALLS and errno == _errno.ENOMEM:
        return ("the kernel had no memory for a new namespace (or a memory cgroup limit was reached); "
                "spawns work again once memory is freed")
    if syscall == "clone3":
        if errno == _errno.EPERM:
            if read_setting("/proc/sys/kernel/unprivileged_userns_clone") == "0":
                return "user namespaces are disabled: kernel.unprivileged_userns_clone=0"
            if read_setting("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
                return "AppArmor restricts user namespaces: kernel.apparmor_restrict_unprivileged_userns=1"
            return "creating namespaces needs CAP_SYS_ADMIN (run as root) or a user namespace"
        if errno == _errno.EAGAIN:
            return "the process limit was reached (ulimit -u, /proc/sys/kernel/pid_max, or a pids cgroup)"
    if step in ("dev", "tmp", "proc") and errno in (_errno.EROFS, _errno.ENOTDIR):
        return (
            f"the root filesystem needs a real directory {path or '/' + step}: "
            "create it, or use DirRootfs(path, readonly=False)"
        )
    if step == "mounts" and errno == _errno.EROFS:
        return (
            "the mount point does not exist and its parent is read-only: "
            "mount on an existing directory, or below a Tmpfs mount"
        )
    if step == "rootfs" and errno == _errno.ENOENT:
        return "the root filesystem directory does not exist"
    if step == "mounts" and syscall in ("stat", "open_tree") and errno == _errno.ENOENT:
        return f"the bind source {path!r} does not exist on the host"
    if syscall == "mount":
        if errno == _errno.EPERM or errno == _errno.EACCES:
            return "mounting needs CAP_SYS_ADMIN; a masked /proc (inside Docker) also refuses proc"
        if errno == _errno.ENOSPC:
            return "the mount table is full: see /proc/sys/fs/mount-max"
        if errno == _errno.ENOENT and path:
            return f"{path!r} does not exist inside the container's root; create it or choose another target"
    if syscall == "setrlimit" and errno == _errno.EPERM:
        if path == "nofile":
            return (
                "a hard limit above the supervisor's needs CAP_SYS_RESOURCE, "
                "and nofile cannot exceed /proc/sys/fs/nr_open"
            )
        return "raising a hard limit above the supervisor's needs CAP_SYS_RESOURCE (run as root)"
    if errno == _errno.EMFILE and syscall == "recvmsg" and step == "clone":
        return "a process ran out of file descriptors (the zygote's or the supervisor's RLIMIT_NOFILE, ulimit -n)"
    if errno == _errno.EMFILE:
        return "the supervisor ran out of file descriptors (ulimit -n)"
    if errno == _errno.ENFILE:
        return "the system ran out of file descriptors (fs.file-max)"
    return None


def oserror(errno: int, strerror: str, path: str | None) -> OSError:
    """Rebuild the matching ``OSError`` subclass (FileNotFoundError, …) from an errno."""
    if not strerror:
        strerror = os.strerror(errno) if errno else "error"
    return OSError(errno, strerror, path) if path else OSError(errno, strerror)
