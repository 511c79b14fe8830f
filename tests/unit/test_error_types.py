"""The exception tree, its messages, pickling, the OSError mapping and diagnose() hints."""

from __future__ import annotations

import errno
import pickle
import subprocess

import pytest

import anyns
from anyns import _errors


def test_tree() -> None:
    """Every anyns error derives from AnynsError, with the documented extra bases."""
    assert issubclass(anyns.SpecError, ValueError)
    assert issubclass(anyns.ExecError, anyns.SetupError)
    assert issubclass(anyns.ContainerFailed, subprocess.CalledProcessError)
    for cls in (anyns.SpecError, anyns.SetupError, anyns.ExecError, anyns.ContainerFailed,
                anyns.ZygoteError, anyns.NetworkError, anyns.UnsupportedError):
        assert issubclass(cls, anyns.AnynsError)


def test_setup_error_fields_and_message() -> None:
    """SetupError keeps its fields and says step, call, path, errno, text and hint in order."""
    err = anyns.SetupError("mounts", "mount", "/data", errno.ENOENT, "No such file or directory",
                           "create it")
    assert (err.step, err.syscall, err.path, err.errno, err.strerror, err.hint) == (
        "mounts", "mount", "/data", errno.ENOENT, "No such file or directory", "create it")
    assert str(err) == ("mounts: mount '/data' failed: [Errno 2] No such file or directory "
                        "(hint: create it)")
    assert str(anyns.SetupError("protocol", "recvmsg", None, 0, "bad request")) == (
        "protocol: recvmsg failed: bad request")


@pytest.mark.parametrize("err", [
    anyns.SetupError("rootfs", "mount", "/r", errno.ENOENT, "gone", "hint"),
    anyns.ExecError("exec", "execve", "/bin/x", errno.EACCES, "denied", None),
    anyns.ContainerFailed(3, ["/bin/sh", "-c", "exit 3"], b"out", b"err"),
    anyns.ContainerFailed(-9, ["sleep", "1"]),
])
def test_errors_pickle(err: Exception) -> None:
    """Errors survive pickling (for multiprocessing and trio.to_thread users) unchanged."""
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert str(copy) == str(err)
    assert copy.__dict__ == err.__dict__


def test_container_failed_messages() -> None:
    """ContainerFailed names the argv and the exit status or the signal."""
    assert str(anyns.ContainerFailed(3, ["a", "b"])) == "container ['a', 'b'] exited with status 3"
    assert str(anyns.ContainerFailed(-9, ["a"])) == "container ['a'] was killed by SIGKILL"
    assert str(anyns.ContainerFailed(-15, ["a"])) == "container ['a'] was killed by SIGTERM"
    err = anyns.ContainerFailed(1, ("a",), b"o", b"e")
    assert (err.returncode, err.cmd, err.stdout, err.output, err.stderr) == (1, ["a"], b"o", b"o",
                                                                             b"e")


@pytest.mark.parametrize(("number", "cls"), [
    (errno.ENOENT, FileNotFoundError),
    (errno.EACCES, PermissionError),
    (errno.EPERM, PermissionError),
    (errno.ENOTDIR, NotADirectoryError),
    (errno.EEXIST, FileExistsError),
    (errno.EROFS, OSError),
])
def test_oserror_subclass(number: int, cls: type[OSError]) -> None:
    """oserror() rebuilds the OSError subclass Python would raise for that errno."""
    err = _errors.oserror(number, "text", "/p")
    assert type(err) is cls
    assert (err.errno, err.strerror, err.filename) == (number, "text", "/p")
    assert _errors.oserror(number, "", None).strerror  # filled in from os.strerror


@pytest.mark.parametrize(("step", "syscall", "number", "path", "expected"), [
    ("exec", "execve", errno.ENOENT, "/x", "not inside the container's root"),
    ("exec", "execve", errno.EACCES, "/x", "not executable"),
    ("exec", "execve", errno.ENOEXEC, "/x", "#! line"),
    ("clone", "clone3", errno.ENOSPC, None, "max_*_namespaces"),
    ("clone", "clone3", errno.EAGAIN, None, "process limit"),
    ("rootfs", "mount", errno.ENOENT, "/r", "root filesystem directory does not exist"),
    ("dev", "mount", errno.EPERM, "/dev", "CAP_SYS_ADMIN"),
    ("proc", "mount", errno.EACCES, "/proc", "masked /proc"),
    ("mounts", "mount", errno.ENOSPC, "/m", "mount-max"),
    ("mounts", "mount", errno.ENOENT, "/m", "'/m' does not exist"),
    ("process", "stdio", errno.EMFILE, None, "ulimit -n"),
])
def test_diagnose_hints(step: str, syscall: str, number: int, path: str | None,
                        expected: str) -> None:
    """diagnose() gives the hint for each known host cause."""
    hint = _errors.diagnose(step, syscall, number, path)
    assert hint is not None and expected in hint
    assert hint == hint.lower() or hint[0].islower()


def test_diagnose_clone3_eperm_names_the_cause() -> None:
    """clone3 EPERM gets a hint about privileges or disabled user namespaces."""
    hint = _errors.diagnose("clone", "clone3", errno.EPERM, None)
    assert hint is not None and ("CAP_SYS_ADMIN" in hint or "user namespaces" in hint)


@pytest.mark.parametrize(("step", "syscall", "number"), [
    ("exec", "execve", errno.E2BIG),
    ("mounts", "mount", errno.EINVAL),
    ("hostname", "sethostname", errno.EINVAL),
    ("process", "chdir", errno.ENOENT),
])
def test_diagnose_unknown_is_none(step: str, syscall: str, number: int) -> None:
    """Causes without a known host setting get no hint."""
    assert _errors.diagnose(step, syscall, number, "/p") is None


@pytest.mark.parametrize(("step", "syscall", "number", "resource"), [
    ("clone", "clone3", errno.ENOSPC, "namespaces"),
    ("namespaces", "unshare", errno.ENOSPC, "namespaces"),
    ("namespaces", "setns", errno.ENOSPC, "namespaces"),
    ("namespaces", "unshare", errno.ENOMEM, "memory"),
    ("clone", "clone3", errno.EAGAIN, "pids"),
    ("exec", "posix_spawn", errno.EAGAIN, "pids"),
    ("exec", "execve", errno.EAGAIN, "pids"),
    ("spawn", "pipe2", errno.EMFILE, "fds"),
    ("clone", "recvmsg", errno.EMFILE, "fds"),
    ("process", "stdio", errno.ENFILE, "fds"),
    ("mounts", "mount", errno.ENOSPC, "mounts"),
    ("mounts", "mount", errno.ENOENT, None),
    ("exec", "execve", errno.ENOENT, None),
    ("rootfs", "pivot_root", errno.EINVAL, None),
    ("protocol", "recvmsg", 0, None),
])
def test_setup_error_names_the_exhausted_resource(step: str, syscall: str, number: int,
                                                   resource: str | None) -> None:
    """SetupError.resource says what ran out when the failure is an exhaustion that passes, else None;
    it survives pickling (recomputed from the fields)."""
    err = anyns.SetupError(step, syscall, None, number, "text")
    assert err.resource == resource
    assert pickle.loads(pickle.dumps(err)).resource == resource
    assert anyns.ExecError(step, syscall, None, number, "text").resource == resource


def test_namespace_limit_hint_names_the_lowest_limits() -> None:
    """ENOSPC from a namespace call names the two lowest user.max_*_namespaces values (read from /proc) and
    the back-pressure option; ENOMEM speaks of memory."""
    hint = _errors.diagnose("namespaces", "unshare", errno.ENOSPC, None)
    assert hint is not None and hint[0].islower()
    with open("/proc/sys/user/max_net_namespaces") as f:
        assert "user.max_" in hint and "max_containers" in hint
        assert f.read().strip().isdigit()
    hint = _errors.diagnose("namespaces", "unshare", errno.ENOMEM, None)
    assert hint is not None and "memory" in hint


@pytest.mark.parametrize("value", [0, -1, 1.5, "4", True])
def test_max_containers_must_be_a_positive_int(value: object) -> None:
    """open_supervisor(max_containers=...) refuses anything but a positive int or None, as a SpecError."""
    from anyns._supervisor import check_max_containers

    with pytest.raises(anyns.SpecError, match="max_containers"):
        check_max_containers(value)
    check_max_containers(None)
    check_max_containers(1)


def test_from_errno_causes_the_matching_oserror_and_diagnoses() -> None:
    """SetupError.from_errno: the strerror by default, diagnose()'s hint unless given, the OSError subclass as cause."""
    err = anyns.SetupError.from_errno("mounts", "mount", errno.ENOENT, "/m")
    assert type(err) is anyns.SetupError
    assert (err.step, err.syscall, err.path, err.errno) == ("mounts", "mount", "/m", errno.ENOENT)
    assert err.strerror == "No such file or directory"
    assert err.hint == _errors.diagnose("mounts", "mount", errno.ENOENT, "/m")
    assert type(err.__cause__) is FileNotFoundError and err.__cause__.filename == "/m"
    gone = anyns.SetupError.from_errno("exec", "setns", errno.ESRCH, hint="container pid 7 has exited")
    assert type(gone) is anyns.SetupError and type(gone.__cause__) is ProcessLookupError
    assert gone.hint == "container pid 7 has exited"
    assert anyns.SetupError.from_errno("protocol", "recvmsg", 0, message="bad").__cause__ is None


def test_from_oserror_keeps_the_exception_as_its_cause() -> None:
    """SetupError.from_oserror: the fields of the OSError (its filename unless a path is given), itself as cause."""
    try:
        open("/nonexistent/anyns-test")  # noqa: SIM115
    except OSError as e:
        err = anyns.SetupError.from_oserror("userns", "write", e)
        assert err.__cause__ is e and err.path == "/nonexistent/anyns-test" and err.errno == errno.ENOENT
        assert anyns.SetupError.from_oserror("cgroup", "open", e, "/x", "a hint").path == "/x"


@pytest.mark.parametrize(("step", "cls"), [("exec", anyns.ExecError), ("mounts", anyns.SetupError),
                                           ("clone", anyns.SetupError)])
def test_from_record_is_where_an_exec_failure_becomes_an_exec_error(step: str, cls: type) -> None:
    """A failure record of step "exec" is an ExecError, any other a SetupError; both caused by the OSError."""
    err = anyns.SetupError.from_record(step, "execve", "/bin/x", errno.EACCES, "Permission denied")
    assert type(err) is cls
    assert isinstance(err.__cause__, PermissionError)
