"""What runs in the cloned child, between clone3 and execve.

The child executes a linked plan: a list of ``(function, args)`` pairs made
once per plan in the zygote (``link``), so that the child itself only calls
functions. It must not import, start threads, log, or touch much memory:
every page it writes is a copy-on-write fault (docs/spawn-path.md §1).

Each operation is ``fn(rt, *args)`` where ``rt`` is the per-spawn tuple
``(stdin, stdout, stderr, errpipe, supervisor_pidfd, *extra)``; the extra
fds are the namespace sources of ``Join``. On the first error the
child writes one failure record to the error pipe and ``_exit(127)``s; when
execve succeeds the pipe closes (it is close-on-exec) and the supervisor sees EOF.
With an init, the last operation execs the init program instead (``_init``:
a static C program the zygote holds a sealed copy of), which starts the
program, reports a failure to start it the same way, and closes the pipe
once it runs: the child's own memory (the zygote's) never outlives setup.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no typeshed stub
import _socket
import errno
import os
import select
import struct

from . import _cgroups, _init, _protocol, _security, _skeleton, _userns
from ._protocol import TYPE_CHECKING
from ._sys import _consts as C
from ._sys import _libc

# Type-checking only: collections.abc and typing stay out of the zygote.
if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn, TypeAlias

    Rt: TypeAlias = tuple[int, ...]
    Linked: TypeAlias = tuple[tuple[Callable[..., None], tuple[Any, ...]], ...]
    Meta: TypeAlias = tuple[tuple[str, str, str | None], ...]

_pack_int = struct.Struct("i").pack  # an fd in SCM_RIGHTS, in native byte order
_SIGPIPE = int(_signal.SIGPIPE)
_SIGXFSZ = int(_signal.SIGXFSZ)
_SIG_DFL = _signal.SIG_DFL
_SIGKILL = int(_signal.SIGKILL)
_SIG_SETMASK = _signal.SIG_SETMASK
_STDIN, _STDOUT, _STDERR, _ERRPIPE, _SUPERVISOR, _EXTRA = range(6)
_EXIT_SETUP_FAILED = 127


def _unshare(rt: Rt, flags: int) -> None:
    _libc.unshare(flags)


def _enter_time_namespace(rt: Rt) -> None:
    """Step into the time namespace unshare made: it only applies to children (and after execve).

    The init never execs, and /proc/PID/ns/time of the container (its pid 1)
    should be the container's.
    """
    fd = os.open(b"/proc/self/ns/time_for_children", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _libc.setns(fd, C.CLONE_NEWTIME)
    finally:
        os.close(fd)


def _setns(rt: Rt, index: int, nstype: int) -> None:
    """Join one namespace: extra fd ``index`` is a pidfd or a namespace file."""
    _libc.setns(rt[_EXTRA + index], nstype)


def _send_namespaces(rt: Rt, kinds: list[bytes]) -> None:
    """Send the supervisor our namespace files (``Plan.sent_namespaces``) over the error channel, a socket."""
    fds = [os.open(b"/proc/self/ns/" + kind, os.O_RDONLY | os.O_CLOEXEC) for kind in kinds]
    channel = _socket.socket(fileno=rt[_ERRPIPE])
    try:
        channel.sendmsg((b"NS",), ((_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b"".join(map(_pack_int, fds))),))
    finally:
        channel.detach()
        for fd in fds:
            os.close(fd)


def _send_root(rt: Rt) -> None:
    """Send the supervisor an O_PATH fd of our root, after the pivot (rootless: /proc/PID/root is closed to it).

    ``Container.read_file``, ``write_file`` and ``run(collect=...)`` resolve paths beneath it.
    """
    root = os.open(b"/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    channel = _socket.socket(fileno=rt[_ERRPIPE])
    try:
        channel.sendmsg((b"ROOT",), ((_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _pack_int(root)),))
    finally:
        channel.detach()
        os.close(root)


def _check_alive(rt: Rt, index: int) -> None:
    """Fail (ESRCH) if the container whose pidfd is extra fd ``index`` has exited: its namespaces are a shell."""
    if select.select((rt[_EXTRA + index],), (), (), 0)[0]:
        raise OSError(errno.ESRCH, "the container has exited")


def _not_dumpable(rt: Rt) -> None:
    # Neither our memory nor /proc/1/{environ,exe,mem} for the program (the same host uid, rootless).
    _libc.prctl(C.PR_SET_DUMPABLE, 0)


def _wait_go(rt: Rt, index: int) -> None:
    """Block until the supervisor has set up the network (one byte), or give up on EOF."""
    if os.read(rt[_EXTRA + index], 1) != b"1":
        raise OSError(errno.ECANCELED, "the supervisor abandoned the network setup")


def _cgroup_enter(rt: Rt, index: int) -> None:
    """Move into the container's v1 leaf (extra fd ``index`` is its cgroup.procs)."""
    _cgroups.enter_in_child(rt[_EXTRA + index])


def _mask_paths(rt: Rt, masked: tuple[bytes, ...], readonly: tuple[bytes, ...]) -> None:
    """Cover ``masked`` (/dev/null on a file, an empty read-only tmpfs on a directory); make ``readonly`` so.

    Each path is resolved beneath the mount it lies in (``_open_beneath``):
    under /proc that is the procfs this child made, which nothing else can
    change. The /dev/null bound on masked files is the host's, checked to be
    the null device (1:3) through the fd that is bound (runc's fix of
    CVE-2025-31133), never a path inside a root someone else may write.
    Paths this kernel or root does not have are skipped.
    """
    devnull = os.open(b"/dev/null", os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(devnull)
        if (st.st_mode & 0o170000) != 0o020000 or st.st_rdev != os.makedev(1, 3):
            raise OSError(errno.EINVAL, "the host's /dev/null is not the null device (1:3)", b"/dev/null")
        source = b"/proc/self/fd/%d" % devnull
        for path in masked:
            _on_existing(path, lambda fd: _mask_fd(fd, source))
        for path in readonly:
            _on_existing(path, _readonly_fd)
    finally:
        os.close(devnull)


def _on_existing(path: bytes, act: Callable[[int], None]) -> None:
    """``act(fd)`` on container path ``path`` resolved beneath (O_PATH), if it exists; its errors name ``path``."""
    try:
        target = _open_beneath(path, 0)
    except FileNotFoundError:
        return
    try:
        act(target)
    except OSError as e:
        e.anyns_path = path  # type: ignore[attr-defined]
        raise
    finally:
        os.close(target)


def _mask_fd(target: int, devnull: bytes) -> None:
    """/dev/null on a file, an empty read-only tmpfs on a directory."""
    at = b"/proc/self/fd/%d" % target
    if (os.fstat(target).st_mode & 0o170000) == 0o040000:
        _libc.mount(b"tmpfs", at, b"tmpfs", C.MS_RDONLY | C.MS_NOSUID | C.MS_NODEV | C.MS_NOEXEC,
                    b"size=4k,mode=0555")
    else:
        _libc.mount(devnull, at, None, C.MS_BIND, None)


def _readonly_fd(target: int) -> None:
    """A read-only recursive copy of the mount tree at ``target``, configured detached, attached on it."""
    tree = _libc.open_tree(target, b"", C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | C.AT_RECURSIVE | C.AT_EMPTY_PATH)
    try:
        _libc.mount_setattr(tree, b"", C.AT_EMPTY_PATH | C.AT_RECURSIVE, C.MOUNT_ATTR_RDONLY
                            | C.MOUNT_ATTR_NOSUID | C.MOUNT_ATTR_NODEV | C.MOUNT_ATTR_NOEXEC, 0, 0)
        _libc.move_mount(tree, b"", target, b"", C.MOVE_MOUNT_F_EMPTY_PATH | C.MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        os.close(tree)


def _setsid(rt: Rt) -> None:
    os.setsid()


def _drop_bounding(rt: Rt, dropped: tuple[int, ...]) -> None:
    _security.drop_bounding_in_child(dropped)


def _install_seccomp(rt: Rt, prepared: tuple[object, ...]) -> None:
    _security.install_seccomp_in_child(prepared)


def _capset(rt: Rt, prepared: tuple[object, ...]) -> None:
    _security.set_capabilities_in_child(prepared)


def _no_new_privs(rt: Rt) -> None:
    _security.no_new_privs_in_child()


def _hold_path(rt: Rt, path: bytes, fd: int, follow: int) -> None:
    """Open host ``path`` (O_PATH) at fd number ``fd`` while still host root; later steps use /proc/self/fd/FD.

    ``follow`` 0: no symlink on the way may be followed (``Bind(follow_symlinks=False)``).
    """
    if follow:
        opened = os.open(path, os.O_PATH | os.O_CLOEXEC)
    else:
        opened = _libc.openat2(C.AT_FDCWD, path, os.O_PATH | os.O_CLOEXEC, C.RESOLVE_NO_SYMLINKS)
    if opened != fd:
        busy = opened > fd  # open() takes the lowest free number: fd is taken
        if not busy:
            try:
                os.fstat(fd)
                busy = True
            except OSError:
                pass
        if busy:
            os.close(opened)
            raise OSError(errno.EBUSY, f"fd {fd}, where held paths go, is already in use")
        os.dup2(opened, fd, inheritable=False)
        os.close(opened)


def _become_root(rt: Rt) -> None:
    _userns.become_root_in_child()


def _set_user(rt: Rt, uid: int, gid: int, groups: tuple[int, ...]) -> None:
    _userns.set_user_in_child(uid, gid, groups)


def _bind_device(rt: Rt, path: bytes, source: bytes) -> None:
    """A device node: an empty file in the new /dev with the host's node bound on it (bubblewrap's ``--dev``).

    The /dev tmpfs itself is nodev: a node the container makes with
    CAP_MKNOD opens nothing. The bound nodes keep the host /dev's flags.
    """
    parent, name = _parent_beneath(path)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                     dir_fd=parent)
    finally:
        os.close(parent)
    try:
        _libc.mount(source, b"/proc/self/fd/%d" % fd, None, C.MS_BIND, None)
    finally:
        os.close(fd)


def _setdomainname(rt: Rt, name: bytes) -> None:
    _libc.setdomainname(name)


def _mount(rt: Rt, source: bytes | None, target: bytes, fstype: bytes | None, flags: int,
           data: bytes | None) -> None:
    _libc.mount(source, target, fstype, flags, data)


def _attach_skeleton(rt: Rt, skeleton: list[int], newroot: bytes) -> None:
    """Attach a private copy of the zygote's prebuilt root tree at ``newroot``; it is the root anchor."""
    tree = _libc.open_tree(
        skeleton[0], b"", C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | C.AT_RECURSIVE | C.AT_EMPTY_PATH
    )
    try:
        _libc.move_mount(tree, b"", C.AT_FDCWD, newroot, C.MOVE_MOUNT_F_EMPTY_PATH)
    except BaseException:
        os.close(tree)
        raise
    _ANCHORS[b"/"] = tree


def _bind_root(rt: Rt, source: bytes, newroot: bytes, attr_set: int) -> None:
    """A directory as the root: a detached recursive copy, made nodev (and read-only) before it is
    attached at ``newroot``; the copy's fd is the root anchor."""
    tree = _open_source(source, C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | C.AT_RECURSIVE, 1)
    try:
        _libc.mount_setattr(tree, b"", C.AT_EMPTY_PATH | C.AT_RECURSIVE, attr_set, 0, 0)
        _libc.move_mount(tree, b"", C.AT_FDCWD, newroot, C.MOVE_MOUNT_F_EMPTY_PATH)
    except BaseException:
        os.close(tree)
        raise
    _ANCHORS[b"/"] = tree


def _root_anchor(rt: Rt, path: bytes) -> None:
    """The root is in place at ``path`` (a directory of our own, an overlay's mount point): anchor it."""
    _ANCHORS[b"/"] = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _mkpath(rt: Rt, root: bytes, rel: bytes, as_file: int) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _skeleton.make_path_beneath(fd, rel, bool(as_file))
    finally:
        os.close(fd)


def _mountpoint(rt: Rt, source: bytes | None, root: bytes, rel: bytes) -> None:
    """Best effort: a failure resurfaces, with its step, when the mount is made."""
    try:
        _mkpath(rt, root, rel, source is not None and not os.path.isdir(source))
    except OSError:
        pass


def _makedirs(rt: Rt, path: bytes) -> None:
    """A host directory the caller named (an overlay upper layer): made like ``mkdir -p`` with umask 022.

    The child still runs with the zygote's umask 0, under which os.makedirs
    would make the missing parents world-writable.
    """
    old = os.umask(0o022)
    try:
        os.makedirs(path, 0o755, exist_ok=True)
    finally:
        os.umask(old)


def _stat(rt: Rt, path: bytes) -> None:
    os.stat(path)


#: detached copies of shared bind sources, made before the tree turns slave
#: (each child is its own process: this list is private to it)
_TREES: list[int] = []
#: container path -> O_PATH fd of a mount this child made there (``/``, ``/dev``,
#: ``/proc``). Every later step below such a path is resolved from the fd, never
#: from a path string: a second container that can write a ``DirRootfs``
#: directory may swap any directory in it for a symlink between two steps
#: (runc's CVE-2019-16884, CVE-2019-19921, CVE-2025-31133), and the fd still
#: names the mount this child made.
_ANCHORS: dict[bytes, int] = {}
#: no symlink (nor /proc magic link) followed, nothing above the anchor reached
_BENEATH = C.RESOLVE_BENEATH | C.RESOLVE_NO_SYMLINKS | C.RESOLVE_NO_MAGICLINKS
#: openat2 answers EAGAIN when a rename raced the lookup: how often to look again
_RETRIES = 16
#: ``create`` of ``_open_beneath``: make a missing directory, or a missing file
_CREATE_DIR, _CREATE_FILE = 1, 2
#: the detached tmpfs holding a read-only root's files (``files_tmpfs``)
_FILES: list[int] = []


def _open_tree(rt: Rt, source: bytes, recursive: int) -> None:
    """Keep a detached copy of ``source``; it stays in the host mount's peer group."""
    flags = C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | (C.AT_RECURSIVE if recursive else 0)
    _TREES.append(_libc.open_tree(C.AT_FDCWD, source, flags))


def _anchor_of(path: bytes) -> tuple[int, bytes]:
    """The anchor fd container path ``path`` lies under (the longest such path) and the rest of ``path``."""
    best = None
    for key in _ANCHORS:
        if (path == key or path.startswith(key.rstrip(b"/") + b"/")) and (best is None or len(key) > len(best)):
            best = key
    if best is None:
        raise OSError(errno.EINVAL, "no mount of this container to resolve the path beneath", path)
    return _ANCHORS[best], path[len(best):].strip(b"/") or b"."


def _open_beneath(path: bytes, create: int) -> int:
    """An O_PATH fd of container path ``path``, resolved beneath its anchor (``_resolve``)."""
    return _resolve(*_anchor_of(path), create)


def _resolve(anchor: int, rel: bytes, create: int, flags: int = os.O_PATH | os.O_NOFOLLOW) -> int:
    """``rel`` opened below directory fd ``anchor``, without following a symlink or leaving it.

    ``create``: 0, or make it when missing: ``_CREATE_DIR`` a directory,
    ``_CREATE_FILE`` a file (missing parents are directories), never through
    a symlink (``_skeleton.make_path_beneath``). With the default ``flags``
    a symlink as the last component is opened itself (O_NOFOLLOW: a mount
    then covers the link, never its target); anywhere else it is ELOOP.
    """
    for _ in range(_RETRIES):
        try:
            return _libc.openat2(anchor, rel, flags | os.O_CLOEXEC, _BENEATH)
        except OSError as e:
            if e.errno == errno.EAGAIN:  # a rename raced the lookup: look again
                continue
            if e.errno != errno.ENOENT or not create:
                raise
        _skeleton.make_path_beneath(anchor, rel, create == _CREATE_FILE)
        create = 0
    raise OSError(errno.EAGAIN, "the path kept changing while it was resolved", rel)


def _move_onto(tree: int, path: bytes, create: int) -> None:
    """Attach detached mount ``tree`` on container path ``path``, made if missing as ``create`` says.

    A directory mount point must be one: a file or a symlink there is ENOTDIR.
    """
    target = _open_beneath(path, create)
    try:
        if create == _CREATE_DIR and (os.fstat(target).st_mode & 0o170000) != 0o040000:
            raise OSError(errno.ENOTDIR, "mount point is not a directory (or is a symlink)", path)
        _libc.move_mount(tree, b"", target, b"", C.MOVE_MOUNT_F_EMPTY_PATH | C.MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        os.close(target)


def _anchor(path: bytes, mnt: int) -> None:
    """Attach detached mount ``mnt`` on directory ``path`` and keep it as the anchor below ``path``."""
    try:
        _move_onto(mnt, path, _CREATE_DIR)
    except BaseException:
        os.close(mnt)
        raise
    _ANCHORS[path] = mnt


def _new_filesystem(fstype: bytes, options: tuple[bytes, ...], attr_flags: int) -> int:
    """A detached mount of a new ``fstype`` (fsopen, fsconfig ``key=value`` options, fsmount)."""
    fs = _libc.fsopen(fstype, C.FSOPEN_CLOEXEC)
    try:
        for option in options:
            key, _, value = option.partition(b"=")
            _libc.fsconfig(fs, C.FSCONFIG_SET_STRING, key, value, 0)
        _libc.fsconfig(fs, C.FSCONFIG_CMD_CREATE, None, None, 0)
        return _libc.fsmount(fs, C.FSMOUNT_CLOEXEC, attr_flags)
    finally:
        os.close(fs)


def _parent_beneath(path: bytes) -> tuple[int, bytes]:
    """An fd of the directory holding container path ``path`` (resolved beneath) and its last name."""
    parent, _, name = path.rpartition(b"/")
    if not name or name in (b".", b".."):
        raise OSError(errno.EINVAL, "not a name in a directory", path)
    return _open_beneath(parent or b"/", 0), name


def _open_source(source: bytes, flags: int, follow: int) -> int:
    """A detached copy (open_tree) of host path ``source``; ``follow`` 0: no symlink on the way."""
    try:
        if follow:
            return _libc.open_tree(C.AT_FDCWD, source, flags)
        fd = _libc.openat2(C.AT_FDCWD, source, os.O_PATH | os.O_CLOEXEC, C.RESOLVE_NO_SYMLINKS)
        try:
            return _libc.open_tree(fd, b"", flags | C.AT_EMPTY_PATH)
        finally:
            os.close(fd)
    except OSError as e:
        e.anyns_path = source  # type: ignore[attr-defined]  # the error names the source
        raise


def _attach(tree: int, path: bytes, attr_set: int, propagation: int, recursive: int) -> None:
    """Attach detached mount ``tree`` on container path ``path`` (made like the tree's root if missing).

    Its attributes are set while it is still detached; its propagation once
    it is attached, through the same fd. Closes ``tree``.
    """
    try:
        at_rec = C.AT_RECURSIVE if recursive else 0
        if attr_set:
            _libc.mount_setattr(tree, b"", C.AT_EMPTY_PATH | at_rec, attr_set, 0, 0)
        is_dir = (os.fstat(tree).st_mode & 0o170000) == 0o040000
        _move_onto(tree, path, _CREATE_DIR if is_dir else _CREATE_FILE)
        if propagation:
            _libc.mount_setattr(tree, b"", C.AT_EMPTY_PATH | at_rec, 0, 0, propagation)
    finally:
        os.close(tree)


def _attach_tree(rt: Rt, path: bytes, index: int, recursive: int, attr_set: int, propagation: int) -> None:
    """Attach the kept copy ``index`` (a shared or slave bind) on container path ``path``."""
    _attach(_TREES[index], path, attr_set, propagation, recursive)


def _bind_at(rt: Rt, path: bytes, source: bytes, recursive: int, attr_set: int, propagation: int,
             follow: int) -> None:
    """Bind host ``source`` on container path ``path``: a detached copy, its attributes set, then attached.

    The mount point is resolved beneath the container's mounts without
    following a symlink, and the copy moved onto that fd: no link can send a
    mount onto the host (runc CVE-2021-30465).
    """
    flags = C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | (C.AT_RECURSIVE if recursive else 0)
    _attach(_open_source(source, flags, follow), path, attr_set, propagation, recursive)


def _mount_at(rt: Rt, path: bytes, source: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    """mount(2) on container path ``path``, a directory resolved (and made) beneath, through its fd."""
    target = _open_beneath(path, _CREATE_DIR)
    try:
        _libc.mount(source, b"/proc/self/fd/%d" % target, fstype, flags, data)
    finally:
        os.close(target)


def _fsmount_at(rt: Rt, path: bytes, fstype: bytes, options: tuple[bytes, ...], attr_flags: int) -> None:
    """A new ``fstype`` attached on container path ``path``, which it anchors.

    Made detached, so the fd names this mount whatever happens to the path
    later; what goes below it (device nodes, masks) is resolved from it.
    """
    _anchor(path, _new_filesystem(fstype, options, attr_flags))


def _bind_anchor(rt: Rt, path: bytes, source: bytes) -> None:
    """A recursive bind of host ``source`` on container path ``path``, which it anchors (the host's /proc)."""
    _anchor(path, _open_source(source, C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | C.AT_RECURSIVE, 1))


def _files_tmpfs(rt: Rt, size: int) -> None:
    """A detached tmpfs of ``size`` bytes for the files of a read-only root (``ContainerSpec.files``).

    Never attached itself: ``write_file_in`` writes into it through its fd,
    ``attach_file`` binds each file from it. It goes away with the container.
    """
    _FILES.append(_new_filesystem(b"tmpfs", (b"source=tmpfs", b"mode=0755", b"size=%d" % size),
                                  C.MOUNT_ATTR_NOSUID | C.MOUNT_ATTR_NODEV))


def _write_file_in(rt: Rt, path: bytes, data: bytes, mode: int) -> None:
    """Write container path ``path`` into the files tmpfs (``files_tmpfs``), at the same path below it."""
    _write_beneath(_FILES[-1], path.strip(b"/"), data, mode)


def _write_file_under(rt: Rt, root: bytes, path: bytes, data: bytes, mode: int) -> None:
    """Write container path ``path`` below directory ``root``, one of the child's own (an overlay's upper layer)."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _write_beneath(fd, path.strip(b"/"), data, mode)
    finally:
        os.close(fd)


def _write_file_at(rt: Rt, path: bytes, data: bytes, mode: int) -> None:
    """Write container path ``path``, resolved beneath the mount it lies in, on a writable mount of our own."""
    _write_beneath(*_anchor_of(path), data, mode)


def _write_beneath(anchor: int, rel: bytes, data: bytes, mode: int) -> None:
    """A new file ``rel`` below directory fd ``anchor`` holding ``data``; missing parents made (0755).

    No symlink is followed on the way (openat2 beneath, ``make_path_beneath``),
    nor as the last name: an existing file or link there (of an overlay's
    lower layer) is removed first, never written through.
    """
    head, _, name = rel.rpartition(b"/")
    parent = _resolve(anchor, head or b".", _CREATE_DIR, os.O_PATH | os.O_DIRECTORY)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, mode, dir_fd=parent)
        except FileExistsError:
            os.unlink(name, dir_fd=parent)
            fd = os.open(name, flags, mode, dir_fd=parent)
    finally:
        os.close(parent)
    try:  # the mode is exact: the child runs with the zygote's umask 0 until the ``umask`` step
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _attach_file(rt: Rt, path: bytes) -> None:
    """Bind file ``path`` of the files tmpfs onto container path ``path`` beneath the root (made if missing)."""
    # the files tmpfs holds only what write_file_in made: no link on the way
    tree = _libc.open_tree(_FILES[-1], path.strip(b"/"), C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC)
    try:
        _move_onto(tree, path, _CREATE_FILE)
    finally:
        os.close(tree)


def _root_readonly(rt: Rt, attr_set: int) -> None:
    """Set ``attr_set`` (read-only …) on the root's own mount; what is mounted on it keeps its attributes."""
    _libc.mount_setattr(_ANCHORS[b"/"], b"", C.AT_EMPTY_PATH, attr_set, 0, 0)


def _mkdir_at(rt: Rt, path: bytes) -> None:
    """mkdir container path ``path`` in a directory resolved beneath."""
    parent, name = _parent_beneath(path)
    try:
        os.mkdir(name, 0o755, dir_fd=parent)
    finally:
        os.close(parent)


def _symlink_at(rt: Rt, path: bytes, target: bytes) -> None:
    """symlink container path ``path`` -> ``target`` in a directory resolved beneath."""
    parent, name = _parent_beneath(path)
    try:
        os.symlink(target, name, dir_fd=parent)
    finally:
        os.close(parent)


def _chdir_root(rt: Rt) -> None:
    """Into the new root, through its anchor (pivot_root(".", ".") comes next)."""
    os.fchdir(_ANCHORS[b"/"])


def _mount_setattr(rt: Rt, path: bytes, attr_set: int) -> None:
    _libc.mount_setattr(C.AT_FDCWD, path, C.AT_RECURSIVE, attr_set, 0, 0)


def _mkdir(rt: Rt, path: bytes) -> None:
    os.mkdir(path, 0o755)


def _symlink(rt: Rt, target: bytes, path: bytes) -> None:
    os.symlink(target, path)


def _chdir(rt: Rt, path: bytes) -> None:
    os.chdir(path)


def _pivot_root(rt: Rt, new_root: bytes, put_old: bytes) -> None:
    _libc.pivot_root(new_root, put_old)


def _umount2(rt: Rt, target: bytes, flags: int) -> None:
    _libc.umount2(target, flags)


def _sethostname(rt: Rt, name: bytes) -> None:
    _libc.sethostname(name)


def _interface_up(rt: Rt, name: bytes) -> None:
    """Bring an interface (lo) up with SIOCSIFFLAGS: no netlink library in the child."""
    _libc.set_interface_up(name)


def _setrlimit(rt: Rt, resource: int, soft: int, hard: int) -> None:
    _libc.setrlimit(resource, soft, hard)


def _umask(rt: Rt, mask: int) -> None:
    os.umask(mask)


def _stdio(rt: Rt) -> None:
    # dup2 clears close-on-exec on the target, so 0-2 survive execve.
    os.dup2(rt[_STDIN], 0)
    os.dup2(rt[_STDOUT], 1)
    os.dup2(rt[_STDERR], 2)


def _tty(rt: Rt, rows: int, cols: int) -> None:
    """A pseudo-terminal from the container's devpts as stdio and controlling terminal.

    The master end goes to the supervisor over the error channel (a socket
    for tty plans), before execve closes it here.
    """
    master, slave = os.openpty()  # /dev/ptmx is the container's own pts/ptmx by now
    _libc.set_window_size(slave, rows, cols)
    os.setsid()
    _libc.set_controlling_tty(slave)
    os.dup2(slave, 0)
    os.dup2(slave, 1)
    os.dup2(slave, 2)
    os.close(slave)
    channel = _socket.socket(fileno=rt[_ERRPIPE])
    try:
        channel.sendmsg((b"TTY",), ((_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _pack_int(master)),))
    finally:
        channel.detach()
    os.close(master)


def _close_fds(rt: Rt) -> None:
    # Nothing but 0-2 may reach the program: fds inherited from the zygote would
    # hold pipes open (docs/spawn-path.md §2, pitfall 3). CLOEXEC rather than
    # close keeps the error pipe and the supervisor pidfd usable until execve.
    _libc.close_range(3, 0xFFFFFFFF, C.CLOSE_RANGE_CLOEXEC)


def _signals(rt: Rt) -> None:
    # CLONE_CLEAR_SIGHAND reset handled signals; ignored ones survive exec, and
    # CPython ignores SIGPIPE and SIGXFSZ (subprocess restore_signals does the
    # same). _signal, not signal: the wrappers in signal.py touch enum machinery.
    _signal.signal(_SIGPIPE, _SIG_DFL)
    _signal.signal(_SIGXFSZ, _SIG_DFL)
    _signal.pthread_sigmask(_SIG_SETMASK, ())


def _pdeathsig(rt: Rt) -> None:
    # Set last: changing credentials clears it (prctl(2)). It is tied to the
    # supervisor thread that started the zygote (CLONE_PARENT makes that our
    # parent). If the supervisor died before this line, no signal will come:
    # its pidfd is readable then (getppid() is 0 inside a pid namespace).
    _libc.prctl(C.PR_SET_PDEATHSIG, _SIGKILL)
    if select.select((rt[_SUPERVISOR],), (), (), 0)[0]:
        os._exit(_EXIT_SETUP_FAILED)


def _exec_init(rt: Rt, init_fd: int, mode: int, status_index: int, counts: tuple[int, int],
               argv: ctypes.Array[ctypes.c_char_p], envp: ctypes.Array[ctypes.c_char_p]) -> None:
    """Instead of execve: exec the init program (``_init``) in ``mode``, which starts the program.

    ``envp`` (made by ``link``) holds the candidate paths, the program's argv
    and its environment after a first entry left for the control record,
    which names the two fds the init keeps: the status pipe and the error
    channel (their numbers differ from spawn to spawn). Those two are the
    only fds not closed by the exec; the init makes them close-on-exec again
    before it starts the program.
    """
    status, channel = rt[_EXTRA + status_index], rt[_ERRPIPE]
    envp[0] = _init.control(mode, status, channel, *counts)
    os.set_inheritable(status, True)
    os.set_inheritable(channel, True)
    _libc.execveat(init_fd, b"", argv, envp, C.AT_EMPTY_PATH)


def _execve(rt: Rt, candidates: tuple[bytes, ...], argv: tuple[bytes, ...],
            env: dict[bytes, bytes]) -> None:
    """execve each candidate like execvp(3) (``_init.first_to_start``), without an init."""
    _init.first_to_start(candidates, lambda path: os.execve(path, argv, env))


OPS: dict[str, Callable[..., None]] = {
    "cgroup_enter": _cgroup_enter,
    "unshare": _unshare,
    "become_root": _become_root,
    "mask_paths": _mask_paths,
    "setsid": _setsid,
    "drop_bounding": _drop_bounding,
    "seccomp_bpf": _install_seccomp,
    "capset": _capset,
    "no_new_privs": _no_new_privs,
    "hold_path": _hold_path,
    "set_user": _set_user,
    "bind_device": _bind_device,
    "enter_time_namespace": _enter_time_namespace,
    "setns": _setns,
    "setdomainname": _setdomainname,
    "wait_go": _wait_go,
    "send_namespaces": _send_namespaces,
    "send_root": _send_root,
    "not_dumpable": _not_dumpable,
    "check_alive": _check_alive,
    "mount": _mount,
    "attach_skeleton": _attach_skeleton,
    "mkpath": _mkpath,
    "mountpoint": _mountpoint,
    "bind_root": _bind_root,
    "root_anchor": _root_anchor,
    "bind_at": _bind_at,
    "mount_at": _mount_at,
    "fsmount_at": _fsmount_at,
    "bind_anchor": _bind_anchor,
    "mkdir_at": _mkdir_at,
    "symlink_at": _symlink_at,
    "files_tmpfs": _files_tmpfs,
    "write_file_in": _write_file_in,
    "write_file_at": _write_file_at,
    "write_file_under": _write_file_under,
    "attach_file": _attach_file,
    "root_readonly": _root_readonly,
    "chdir_root": _chdir_root,
    "makedirs": _makedirs,
    "stat": _stat,
    "open_tree": _open_tree,
    "attach_tree": _attach_tree,
    "mount_setattr": _mount_setattr,
    "mkdir": _mkdir,
    "symlink": _symlink,
    "chdir": _chdir,
    "pivot_root": _pivot_root,
    "umount2": _umount2,
    "sethostname": _sethostname,
    "interface_up": _interface_up,
    "umask": _umask,
    "setrlimit": _setrlimit,
    "stdio": _stdio,
    "tty": _tty,
    "close_fds": _close_fds,
    "signals": _signals,
    "pdeathsig": _pdeathsig,
    "spawn_with_init": _exec_init,
    "fork_and_wait": _exec_init,
    "subreaper": _exec_init,
    "hold_with_init": _exec_init,
    "execve": _execve,
}


#: the syscall an error names when an operation fails in a stdlib call
#: (``_libc`` wrappers name theirs on the exception)
_SYSCALL_OF = {
    "mkpath": "mkdir",
    "mountpoint": "mkdir",
    "mount_at": "mount",
    "bind_at": "open_tree",
    "bind_root": "open_tree",
    "bind_anchor": "open_tree",
    "fsmount_at": "fsmount",
    "mkdir_at": "mkdir",
    "symlink_at": "symlink",
    "files_tmpfs": "fsmount",
    "write_file_in": "open",
    "write_file_at": "open",
    "write_file_under": "open",
    "attach_file": "move_mount",
    "root_readonly": "mount_setattr",
    "chdir_root": "fchdir",
    "root_anchor": "open",
    "attach_tree": "move_mount",
    "makedirs": "mkdir",
    "attach_skeleton": "move_mount",
    "interface_up": "ioctl",
    "wait_go": "read",
    "cgroup_enter": "write",
    "enter_time_namespace": "setns",
    "become_root": "setresuid",
    "send_namespaces": "sendmsg",
    "send_root": "sendmsg",
    "not_dumpable": "prctl",
    "check_alive": "poll",
    "mask_paths": "mount",
    "drop_bounding": "prctl",
    "seccomp_bpf": "prctl",
    "no_new_privs": "prctl",
    "hold_path": "open",
    "set_user": "setresuid",
    "bind_device": "mount",
    "stdio": "dup2",
    "tty": "openpty",
    "close_fds": "close_range",
    "signals": "sigaction",
    "pdeathsig": "prctl",
    "spawn_with_init": "execve",
    "fork_and_wait": "execve",
    "subreaper": "execve",
    "hold_with_init": "execve",
}


def _to_bytes(value: Any) -> Any:
    if isinstance(value, str):
        return os.fsencode(value)
    if isinstance(value, (list, tuple)):
        return tuple(_to_bytes(v) for v in value)
    return value


#: a path whose creation always fails: nothing can be made under /proc/self
_NOWHERE = b"/proc/self/anyns-warm-up/x"
_WARM_UP_CALLS = (
    ("unshare", (0,)),
    ("mount", (None, _NOWHERE, None, 0, None)),
    ("mount_setattr", (_NOWHERE, 0)),
    ("mkpath", (b"/proc/self", b"anyns-warm-up/x", 1)),
    ("mkdir", (_NOWHERE,)),
    ("symlink", (b"x", _NOWHERE)),
    ("chdir", (_NOWHERE,)),
    ("pivot_root", (_NOWHERE, _NOWHERE)),
    ("umount2", (_NOWHERE, 0)),
    ("sethostname", (b"x" * 65,)),  # EINVAL: longer than HOST_NAME_MAX
    ("interface_up", (b"anyns-none",)),
    ("attach_skeleton", ([-1], _NOWHERE)),  # EBADF
    ("execve", ((_NOWHERE,), (b"x",), {b"A": b"B"})),
    ("mask_paths", ((_NOWHERE,), (_NOWHERE,))),  # no anchors in the zygote: EINVAL
    ("bind_device", (_NOWHERE, _NOWHERE)),  # EINVAL
    ("bind_at", (_NOWHERE, _NOWHERE, 1, 0, 0, 1)),  # ENOENT
    ("drop_bounding", ((64,),)),  # no such capability: nothing dropped
    ("setsid", ()),  # EPERM: the zygote leads its process group
)


def warm_up(rounds: int = 20) -> None:
    """Run the child's operations in the zygote with arguments that fail harmlessly.

    CPython 3.11 quickens and specialises bytecode in place the first times it
    runs. Done here, once, the children inherit warm code objects instead of
    each writing to (and so copying) those pages again: about 10% fewer
    copy-on-write faults per container. Operations with lasting effects on
    the zygote (stdio, close_fds, signals, umask, mount_beneath, pdeathsig: it
    would replace the zygote's own) are left out.
    """
    rt = (-1, -1, -1, -1, -1)
    for _ in range(rounds):
        for name, args in _WARM_UP_CALLS:
            try:
                OPS[name](rt, *args)
            except (OSError, ValueError):
                pass
        # The calls behind stdio, close_fds and signals, made harmless:
        os.dup2(0, 0)
        _libc.close_range(0x7FFFFFFE, 0x7FFFFFFF, C.CLOSE_RANGE_CLOEXEC)
        _signal.signal(_SIGPIPE, _signal.SIG_IGN)  # as CPython set it
        _signal.pthread_sigmask(_signal.SIG_BLOCK, ())


def link(ops: Sequence[Sequence[Any]], skeleton: list[int] | None = None, init_fd: int = -1
         ) -> tuple[Linked, Meta]:
    """Turn a wire plan's ops into callables with bytes arguments, once per plan.

    ``skeleton`` is the zygote's holder of the prebuilt root tree fd, which
    ``attach_skeleton`` reads when the child runs (it may be rebuilt).
    ``init_fd`` is the zygote's copy of the init program (``_init.open_binary``),
    which the ops that start the program through it exec.

    Raises:
        ValueError: an unknown operation or a malformed op.
    """
    linked = []
    meta = []
    for op in ops:
        step, call, path, args = op
        fn = OPS.get(call)
        if fn is None:
            raise ValueError(f"unknown child operation {call!r}")
        converted: tuple[Any, ...]
        if call in ("write_file_in", "write_file_at", "write_file_under"):  # the contents travel as hex
            converted = (*(_to_bytes(a) for a in args[:-2]), bytes.fromhex(args[-2]), int(args[-1]))
        else:
            converted = tuple(_to_bytes(a) for a in args)
        if call == "attach_skeleton":
            if skeleton is None:
                raise ValueError("attach_skeleton without a skeleton")
            converted = (skeleton, *converted)
        if call == "seccomp_bpf":
            converted = (_security.prepare_seccomp(bytes.fromhex(args[0])),)
        elif call == "capset":
            converted = (_security.prepare_capset(int(args[0])),)
        if call == "execve":
            candidates, argv, env = converted
            converted = (candidates, argv, dict(e.split(b"=", 1) for e in env))
        elif call in _init.MODES:
            if init_fd < 0:
                raise ValueError(f"{call} without the init program")
            status, candidates, argv, env = converted
            # The arrays execveat takes, made once: the first entry of the
            # environment is the control record, filled in by each spawn.
            converted = (init_fd, _init.MODES[call], status, (len(candidates), len(argv)),
                         _libc.string_array((_init.ARGV0,)),
                         _libc.string_array((None, *candidates, *argv, *env)))
        linked.append((fn, converted))
        meta.append((str(step), _SYSCALL_OF.get(call, call), path))
    return tuple(linked), tuple(meta)


def run(linked: Linked, meta: Meta, rt: Rt) -> NoReturn:
    """Run the plan in the freshly cloned child; never returns."""
    index = 0
    try:
        for fn, args in linked:
            fn(rt, *args)
            index += 1
        raise OSError(errno.EINVAL, "the plan ended without execve")
    except BaseException as e:
        try:
            step, call, path = meta[min(index, len(meta) - 1)]
            call = getattr(e, "syscall", call)  # the exact call, when a _libc wrapper failed
            path = os.fsdecode(getattr(e, "anyns_path", None) or path or "") or None
            err = e.errno if isinstance(e, OSError) and e.errno else 0
            message = os.strerror(err) if err else f"{type(e).__name__}: {e}"
            os.write(rt[_ERRPIPE], _protocol.encode_failure(step, call, path, err, message))
        except BaseException:
            pass
    os._exit(_EXIT_SETUP_FAILED)
