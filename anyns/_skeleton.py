"""The root skeleton of a HostRootfs container, and safe mount-point creation.

A ``HostRootfs`` root is the same for every container made from one spec: a
tmpfs with a few directories and links, read-only binds of the host's /usr and
/etc entries, and the mount points of the spec's mounts, all made read-only.
Rather than have each child build it (about thirty syscalls, ten of them
mounts), the zygote builds it once per plan as a *detached* mount tree
(fsopen/fsmount, open_tree/move_mount onto the detached tree: Linux 6.x) and
keeps its fd; each child attaches a copy with one ``open_tree(OPEN_TREE_CLONE)``
and one ``move_mount``. A detached tree is never attached in the host's mount
namespace, so nothing can leak there; it goes away with the zygote.

Where the kernel refuses (older kernels), ``expand_for_child`` turns the same
skeleton into ordinary child operations, so the order lives in one list.

Skeleton operations (paths relative to the root, as str on the wire):

* ``("mkdir", rel)``, ``("symlink", target, rel)``, ``("touch", rel)``
* ``("bind", source, rel, recursive)``: a copy of a host mount tree
* ``("mountpoint", source_or_None, rel)``: best effort, for the spec's mounts
* ``("readonly",)``: make the whole tree read-only, nosuid, nodev

The tree is rebuilt after ``MAX_AGE`` seconds, so a replaced host file (a new
``/etc/resolv.conf``) reaches new containers.
"""

from __future__ import annotations

import errno
import os

from ._sys import _consts as C
from ._sys import _libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

MAX_AGE = 5.0
_RO_ATTRS = C.MOUNT_ATTR_RDONLY | C.MOUNT_ATTR_NOSUID | C.MOUNT_ATTR_NODEV


def make_path_beneath(root_fd: int, rel: bytes, as_file: bool) -> None:
    """Create directories (and a file last, if ``as_file``) along ``rel`` below ``root_fd``.

    Never follows a symlink and never leaves the tree: a link in a root
    filesystem must not redirect a ``mkdir`` onto the host (runc
    CVE-2021-30465). Existing components are fine.

    Raises:
        OSError: ELOOP when a component is a symlink, ENOTDIR, EROFS …
    """
    parts = [p for p in rel.split(b"/") if p and p != b"."]
    if not parts or b".." in parts:
        raise OSError(errno.EINVAL, "mount point must lie inside the root", rel)
    current = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            if i == len(parts) - 1 and as_file:
                try:  # an existing file is fine, even on a read-only mount
                    os.close(os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current))
                except FileNotFoundError:
                    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                                 dir_fd=current)
                    os.close(fd)
                return
            try:
                fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=current)
                fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            os.close(current)
            current = fd
    finally:
        os.close(current)


def build_in_zygote(ops: Sequence[Sequence[Any]]) -> int:
    """Build the skeleton as a detached mount tree; return its fd (O_CLOEXEC).

    Raises:
        OSError: the kernel lacks the new mount API for detached trees, or a
            source is missing; the caller falls back to ``expand_for_child``.
    """
    fs = _libc.fsopen(b"tmpfs", C.FSOPEN_CLOEXEC)
    try:
        _libc.fsconfig(fs, C.FSCONFIG_SET_STRING, b"mode", b"0755", 0)
        _libc.fsconfig(fs, C.FSCONFIG_CMD_CREATE, None, None, 0)
        root = _libc.fsmount(fs, C.FSMOUNT_CLOEXEC, C.MOUNT_ATTR_NOSUID | C.MOUNT_ATTR_NODEV)
    finally:
        os.close(fs)
    try:
        for op in ops:
            _apply(root, op)
    except BaseException:
        os.close(root)
        raise
    return root


def _apply(root: int, op: Sequence[Any]) -> None:
    call = op[0]
    if call == "mkdir":
        os.mkdir(os.fsencode(op[1]), 0o755, dir_fd=root)
    elif call == "symlink":
        os.symlink(os.fsencode(op[1]), os.fsencode(op[2]), dir_fd=root)
    elif call == "touch":
        make_path_beneath(root, os.fsencode(op[1]), as_file=True)
    elif call == "bind":
        flags = C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | (C.AT_RECURSIVE if op[3] else 0)
        tree = _libc.open_tree(C.AT_FDCWD, os.fsencode(op[1]), flags)
        try:
            _libc.move_mount(tree, b"", root, os.fsencode(op[2]), C.MOVE_MOUNT_F_EMPTY_PATH)
        finally:
            os.close(tree)
    elif call == "mountpoint":
        _mountpoint(root, op[1], os.fsencode(op[2]))
    elif call == "readonly":
        _libc.mount_setattr(root, b"", C.AT_EMPTY_PATH | C.AT_RECURSIVE, _RO_ATTRS, 0, 0)
    else:
        raise ValueError(f"unknown skeleton operation {call!r}")


def _mountpoint(root: int, source: str | bytes | None, rel: bytes) -> None:
    """Best effort: a failure resurfaces, with its step, when the mount is made."""
    as_file = source is not None and not os.path.isdir(source)
    try:
        make_path_beneath(root, rel, as_file)
    except OSError:
        pass


def expand_for_child(ops: Sequence[Sequence[Any]], newroot: str) -> list[list[Any]]:
    """The same skeleton as child operations (wire form) on ``newroot``."""
    def at(rel: str) -> str:
        return f"{newroot}/{rel}"

    child: list[list[Any]] = [
        ["rootfs", "mount", "/", ["tmpfs", newroot, "tmpfs", C.MS_NOSUID | C.MS_NODEV, "mode=0755"]],
    ]
    for op in ops:
        call = op[0]
        if call == "mkdir":
            child.append(["rootfs", "mkdir", "/" + op[1], [at(op[1])]])
        elif call == "symlink":
            child.append(["rootfs", "symlink", "/" + op[2], [op[1], at(op[2])]])
        elif call == "touch":
            child.append(["rootfs", "mkpath", "/" + op[1], [newroot, op[1], 1]])
        elif call == "bind":
            flags = C.MS_BIND | (C.MS_REC if op[3] else 0)
            child.append(["rootfs", "mount", "/" + op[2], [op[1], at(op[2]), None, flags, None]])
        elif call == "mountpoint":
            child.append(["rootfs", "mountpoint", "/" + op[2], [op[1], newroot, op[2]]])
        elif call == "readonly":
            child.append(["rootfs", "mount_setattr", "/", [newroot, _RO_ATTRS]])
        else:
            raise ValueError(f"unknown skeleton operation {call!r}")
    # What follows is resolved beneath the root (``anchor_of`` in ``_native/spawn.c``), as after attach_skeleton.
    child.append(["rootfs", "root_anchor", "/", [newroot]])
    return child
