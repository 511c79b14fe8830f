"""Entering, joining and keeping namespaces: the zygote side and the host side.

* ``ZygoteNamespaces`` (zygote side): for ``Container.exec`` and
  ``Join(pid=…)`` the zygote itself steps into the target's namespaces with one
  ``setns(pidfd, flags)`` (Linux 5.8: all at once, atomically), clones the new
  process there, and steps back with its own namespace fds. A pid namespace
  can only be entered this way: ``setns(CLONE_NEWPID)`` changes where the
  caller's *children* are born, never the caller. The zygote is single-threaded
  and non-dumpable, so a container process cannot read the helper's memory or
  environment through /proc while it is not yet exec'd (runc CVE-2019-5736).
* ``persist_from_host`` / ``release_from_host`` (host side, supervisor): bind
  a namespace file onto a path so the namespace outlives its processes, as
  ``ip netns add`` does, and take it away again.

The child-side half, joining single namespaces, is the ``setns`` step of
the plan, run by the native core (``_native/spawn.c``).
"""

from __future__ import annotations

import errno
import os

from ._sys import _consts as C
from ._sys import _libc

#: the kinds the zygote steps back into after entering a container's (all but user, which it never
#: enters), with their CLONE_NEW* flags, in that order. The table of namespace kinds is
#: ``_spec.KIND_FLAGS``; this is its zygote-side part, which may not import the spec (a test
#: keeps the two in agreement).
STEP_BACK = (
    ("mnt", C.CLONE_NEWNS),
    ("pid", C.CLONE_NEWPID),
    ("net", C.CLONE_NEWNET),
    ("ipc", C.CLONE_NEWIPC),
    ("uts", C.CLONE_NEWUTS),
    ("cgroup", C.CLONE_NEWCGROUP),
    ("time", C.CLONE_NEWTIME),
)


class ZygoteNamespaces:
    """The zygote's own namespaces, to come back to after entering a container's."""

    def __init__(self) -> None:
        self.own_mnt = os.stat("/proc/self/ns/mnt").st_ino
        self.own: list[tuple[int, int]] = []
        for kind, flag in STEP_BACK:
            # pid_for_children and time_for_children are what setns changes
            name = {"pid": "pid_for_children", "time": "time_for_children"}.get(kind, kind)
            try:
                fd = os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # a kernel without this namespace kind
                continue
            self.own.append((flag, fd))

    def enter(self, fd: int, flags: int) -> None:
        """setns into ``fd``'s namespaces (``fd`` a pidfd, or one namespace file).

        Entering a mount namespace that is the zygote's own is refused: a
        container always has its own, so that fd is not a container's.
        """
        if flags & C.CLONE_NEWNS and _mnt_inode_of_pidfd(fd) == self.own_mnt:
            raise OSError(errno.EPERM, "refusing to enter the zygote's own mount namespace")
        _libc.setns(fd, flags)

    def restore(self, flags: int) -> None:
        """Step back into the zygote's own namespaces of the kinds in ``flags``.

        Raises:
            OSError: the zygote could not come back; it must exit, since it
                would otherwise clone containers inside another container.
        """
        for flag, fd in self.own:
            if flags & flag:
                _libc.setns(fd, flag)


def _mnt_inode_of_pidfd(pidfd: int) -> int:
    """The mount namespace inode of the process behind ``pidfd`` (read before any setns)."""
    with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
        for line in f:
            if line.startswith(b"Pid:"):
                pid = int(line.split()[1])
                break
        else:
            raise OSError(errno.EINVAL, "not a pidfd")
    if pid <= 0:
        raise OSError(errno.ESRCH, "the process has exited")
    return os.stat(f"/proc/{pid}/ns/mnt").st_ino


def persist_from_host(source: str, path: str) -> bool:
    """Bind the namespace file ``source`` onto ``path`` (created as an empty file if missing).

    Returns whether ``path`` was created (so ``release_from_host`` removes it).

    Raises:
        OSError: ``source`` is not a namespace file, ``path``'s directory is missing …
    """
    created = False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.close(fd)
        created = True
    except FileExistsError:
        pass
    try:
        _libc.mount(os.fsencode(source), os.fsencode(path), None, C.MS_BIND, None)
    except BaseException:
        if created:
            os.unlink(path)
        raise
    return created


def release_from_host(path: str, created: bool) -> None:
    """Undo ``persist_from_host``: unmount ``path`` and remove it if it was created for it."""
    try:
        _libc.umount2(os.fsencode(path), C.MNT_DETACH)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: not mounted (any more)
            raise
    if created:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
