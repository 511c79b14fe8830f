"""Files of a container, read and written by the supervisor: ``Container.read_file``/``write_file``, ``collect``.

Every path is resolved inside the container's root: ``openat2`` on an fd of
that root with ``RESOLVE_IN_ROOT`` (an absolute symlink, or ``..`` past the
top, stays in the root, as in a ``chroot``) and ``RESOLVE_NO_MAGICLINKS``
(``/proc/PID/root``-style links lead nowhere). A symlink the program planted
therefore leads to the container's own file, never to the host's: the
supervisor sees what the program would see at that path.

Each operation runs in a thread of its own that first takes the program's
credentials (``as_program``): its host uid, gid and groups as the file
system ids, and only the file capabilities the program has. A root
supervisor's own would read a 0600 file the program cannot (a symlink it
planted at a collected path) or rewrite a host file on a bind the program
may only read. The thread ends after the operation, so the credentials go
with it and never reach another task. Two more rules hold whatever the ids:
only regular files are read or written (a FIFO, a device node or a
directory is refused), and never one on a kernel filesystem (proc, sysfs,
cgroup …), where a write as host root would reach a global setting (a
symlink to ``/proc/sys/kernel/core_pattern``). Opening never blocks
(``O_NONBLOCK``: a FIFO with no writer) and never takes a terminal
(``O_NOCTTY``).

Where the root fd comes from: ``/proc/PID/root`` of the container's first
process (a root supervisor), or the fd the child sent after its pivot
(rootless: the init is not dumpable, so ``/proc/PID/root`` is closed to its
own user). Blocking calls: the supervisor runs them in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import attrs

from ._errors import AnynsError, SpecError
from ._sys import _consts as C
from ._sys import _libc

__all__ = ["DEFAULT_MAX_SIZE", "Credentials", "as_program", "check_collect", "read", "read_many", "write"]

T = TypeVar("T")

#: ``read_file``'s and ``collect``'s default bound on a file's size: 16 MiB
DEFAULT_MAX_SIZE: Final = 16 * 1024 * 1024
_RESOLVE: Final = C.RESOLVE_IN_ROOT | C.RESOLVE_NO_MAGICLINKS
#: kernel filesystems (statfs(2) magic numbers) whose files are settings or handles, not data
_KERNEL_FILESYSTEMS: Final = {
    0x9FA0: "proc", 0x62656572: "sysfs", 0x63677270: "cgroup2", 0x27E0EB: "cgroup", 0x64626720: "debugfs",
    0x74726163: "tracefs", 0x73636673: "securityfs", 0xCAFE4A11: "bpf", 0xF97CFF8C: "selinuxfs",
    0xDE5E81E4: "efivarfs", 0x62656570: "configfs", 0x42494E4D: "binfmt_misc", 0x1CD1: "devpts",
    0x6E736673: "nsfs", 0x50495045: "pipefs", 0x534F434B: "sockfs",
}
_READ_CHUNK: Final = 1 << 20
#: openat2 says EAGAIN when a rename raced a ".." in the walk: try again this many times
_RETRIES: Final = 8


@attrs.frozen
class Credentials:
    """Whose rights a file operation has: the program's, as the host sees them.

    Attributes:
        uid, gid, groups: host ids (a user namespace's ids already mapped out).
        capabilities: the capability bits this thread keeps (``capset``):
            the program's file capabilities (CAP_DAC_OVERRIDE …) when it is
            root and has them, else none.
    """

    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    capabilities: int = 0


def as_program(credentials: Credentials | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a new thread that holds ``credentials``; blocking (call it from a worker thread).

    The thread sets its supplementary groups (the raw syscall: glibc's
    setgroups would change every thread of the process), its file system
    ids (per thread), and its capabilities (per thread), then runs ``fn``
    and ends: nothing of it is left on any other thread. None runs ``fn``
    here as is (a rootless supervisor's ids are the container root's
    already, and it can take no others).
    """
    if credentials is None:
        return fn(*args)
    outcome: list[Any] = []

    def run() -> None:
        try:
            _libc.set_thread_groups(credentials.groups)
            _libc.setfsids(credentials.uid, credentials.gid)
            _libc.set_thread_capabilities(credentials.capabilities)
            outcome.append((True, fn(*args)))
        except BaseException as e:  # handed to the caller's thread
            outcome.append((False, e))

    thread = threading.Thread(target=run, name="anyns-files", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


def check_collect(collect: Sequence[str | os.PathLike[str]] | None) -> tuple[str, ...]:
    """``run(collect=...)``: absolute paths, as given (a single string is refused: it would be its letters).

    Raises:
        SpecError: not a sequence of absolute paths.
    """
    if collect is None:
        return ()
    if isinstance(collect, (str, bytes, os.PathLike)):
        raise SpecError(f"collect: expected a list of absolute paths, got the single path {collect!r}")
    paths = []
    for path in collect:
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise SpecError(f"collect: expected absolute paths inside the container, got {path!r}")
        paths.append(path)
    return tuple(dict.fromkeys(paths))


def _open(root: int, path: str, flags: int, mode: int = 0) -> int:
    """``path`` opened beneath ``root`` (``RESOLVE_IN_ROOT``); a regular file on a data filesystem, else an error.

    Raises:
        FileNotFoundError, PermissionError, …: as ``open`` would (the path is the container's).
        IsADirectoryError: a directory.
        AnynsError: not a regular file, or on a kernel filesystem.
    """
    encoded = os.fsencode(path)
    for attempt in range(_RETRIES):
        try:
            fd = _libc.openat2(root, encoded, flags | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK, _RESOLVE, mode)
            break
        except OSError as e:
            if e.errno == errno.EAGAIN and attempt + 1 < _RETRIES:
                continue
            raise OSError(e.errno, os.strerror(e.errno or 0), path) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(info.st_mode):
            raise AnynsError(f"{path!r} in the container is not a regular file")
        kind = _KERNEL_FILESYSTEMS.get(_libc.fstatfs_type(fd))
        if kind is not None:
            raise AnynsError(f"{path!r} in the container is on {kind}, a kernel filesystem: "
                             "its files are not read or written from outside")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read(root: int, path: str, max_size: int) -> bytes:
    """The content of ``path`` in the container; blocking.

    Raises:
        FileNotFoundError: no such file (or a symlink to nothing).
        AnynsError: larger than ``max_size`` bytes (found without reading it
            whole), not a regular file, or on a kernel filesystem.
    """
    fd = _open(root, path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > max_size:
            raise AnynsError(f"{path!r} in the container is {size} bytes, more than max_size={max_size}")
        chunks = []
        total = 0
        while True:  # it may still grow while we read: never more than max_size + 1
            chunk = os.read(fd, min(_READ_CHUNK, max_size + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_size:
                raise AnynsError(f"{path!r} in the container grew beyond max_size={max_size} while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_many(root: int, paths: Sequence[str], max_size: int) -> tuple[dict[str, bytes], str | None]:
    """``collect``: each path's content, a missing one left out; and why one could not be read, if any; blocking.

    A path where no file is (nothing, or a directory) is left out. A file
    larger than ``max_size``, one that is not a regular file, or one that
    cannot be opened for another reason is left out too, and the first such
    problem is returned for the caller to raise once the container is gone.
    """
    files: dict[str, bytes] = {}
    problem: str | None = None
    for path in paths:
        try:
            files[path] = read(root, path, max_size)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):  # no file there
            continue
        except (AnynsError, OSError) as e:
            if problem is None:
                problem = str(e) if isinstance(e, AnynsError) else f"{path!r}: {e.strerror or e}"
    return files, problem


def write(root: int, path: str, data: bytes, mode: int) -> None:
    """Make ``path`` in the container hold ``data`` with permissions ``mode``; blocking.

    The file is created if missing (its directory must exist), else
    truncated and rewritten; a file it creates belongs to this thread's file
    system ids (``as_program``: the program's).

    Raises:
        FileNotFoundError: its directory does not exist.
        PermissionError: the program could not write it either.
        AnynsError: an existing path that is not a regular file, or on a kernel filesystem.
    """
    try:
        fd = _open(root, path, os.O_WRONLY)
    except FileNotFoundError:
        try:
            fd = _open(root, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o7777)
        except FileExistsError:  # made meanwhile, or a symlink to nothing (followed, in the root)
            fd = _open(root, path, os.O_WRONLY | os.O_CREAT, mode & 0o7777)
    try:
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode & 0o7777)
    finally:
        os.close(fd)
