"""ctypes wrappers for the syscalls Python 3.11 lacks, named and ordered as in C.

Every wrapper raises ``OSError(errno, "<name>(...) failed: <strerror>", path)``
on failure and does nothing else: no logging, no retries, no policy.

Pointers and 64-bit values are passed with explicit ctypes types because
ctypes hands plain ints to variadic ``syscall()`` as 32-bit C ints.
"""

from __future__ import annotations

import ctypes
import os

from . import _consts as C

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections.abc stays out of the zygote
    from collections.abc import Sequence

# pivot_root has a per-architecture number; those from 424 on are shared.
_PIVOT_ROOT_NR = {"aarch64": 41, "riscv64": 41}.get(os.uname().machine, C.SYS_pivot_root)
_WAITID_NR = ctypes.c_long({"aarch64": 95, "riscv64": 95}.get(os.uname().machine, C.SYS_waitid))
_EXECVEAT_NR = ctypes.c_long({"aarch64": 281, "riscv64": 281}.get(os.uname().machine, C.SYS_execveat))

_libc = ctypes.CDLL(None, use_errno=True)

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

_mount = _libc.mount
_mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_mount.restype = ctypes.c_int
_umount2 = _libc.umount2
_umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_umount2.restype = ctypes.c_int
_sethostname = _libc.sethostname
_sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_sethostname.restype = ctypes.c_int
_unshare = _libc.unshare
_unshare.argtypes = (ctypes.c_int,)
_unshare.restype = ctypes.c_int
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_setns.restype = ctypes.c_int
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int
_socket = _libc.socket
_socket.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
_socket.restype = ctypes.c_int
_ioctl = _libc.ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_ioctl.restype = ctypes.c_int

_AF_INET = 2
_SOCK_DGRAM_CLOEXEC = 2 | 0o2000000




class mount_attr(ctypes.Structure):
    """``struct mount_attr`` (include/uapi/linux/mount.h), MOUNT_ATTR_SIZE_VER0."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _fail(name: str, path: bytes | str | None = None) -> OSError:
    err = ctypes.get_errno()
    error = OSError(err, f"{name} failed: {os.strerror(err)}", path)
    error.syscall = name  # type: ignore[attr-defined]  # read by the child's failure report
    return error


def mount(
    source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None
) -> None:
    """mount(2)."""
    if _mount(source, target, fstype, flags, data) != 0:
        raise _fail("mount", target)


def umount2(target: bytes, flags: int) -> None:
    """umount2(2)."""
    if _umount2(target, flags) != 0:
        raise _fail("umount2", target)


def sethostname(name: bytes) -> None:
    """sethostname(2)."""
    if _sethostname(name, len(name)) != 0:
        raise _fail("sethostname")


_setdomainname = _libc.setdomainname
_setdomainname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_setdomainname.restype = ctypes.c_int


def setdomainname(name: bytes) -> None:
    """setdomainname(2)."""
    if _setdomainname(name, len(name)) != 0:
        raise _fail("setdomainname")


def unshare(flags: int) -> None:
    """unshare(2) (os.unshare exists only from Python 3.12)."""
    if _unshare(flags) != 0:
        raise _fail("unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2); ``fd`` may be a pidfd on Linux >= 5.8."""
    if _setns(fd, nstype) != 0:
        raise _fail("setns")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2)."""
    ret: int = _prctl(option, arg2, arg3, arg4, arg5)
    if ret == -1:
        raise _fail("prctl")
    return ret


def syscall(name: str, number: int, *args: int) -> int:
    """A raw syscall with pointer-sized integer arguments; OSError naming ``name`` on -1."""
    ret: int = _syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    if ret == -1:
        raise _fail(name)
    return ret


def string_array(strings: Sequence[bytes | None]) -> ctypes.Array[ctypes.c_char_p]:
    """A ``char *[]`` of ``strings`` and a final NULL, for ``execveat``; it keeps the strings alive."""
    return (ctypes.c_char_p * (len(strings) + 1))(*strings, None)


def mount_setattr(dfd: int, path: bytes, flags: int, attr_set: int, attr_clr: int, propagation: int) -> None:
    """mount_setattr(2), Linux 5.12."""
    attr = mount_attr(attr_set, attr_clr, propagation, 0)
    if _syscall(
        ctypes.c_long(C.SYS_mount_setattr), ctypes.c_int(dfd), ctypes.c_char_p(path),
        ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
    ) != 0:
        raise _fail("mount_setattr", path)


def open_tree(dfd: int, path: bytes, flags: int) -> int:
    """open_tree(2), Linux 5.2: with OPEN_TREE_CLONE, a detached copy of a mount (tree)."""
    fd: int = _syscall(ctypes.c_long(C.SYS_open_tree), ctypes.c_int(dfd), ctypes.c_char_p(path), ctypes.c_uint(flags))
    if fd < 0:
        raise _fail("open_tree", path)
    return fd


def move_mount(from_dfd: int, from_path: bytes, to_dfd: int, to_path: bytes, flags: int) -> None:
    """move_mount(2), Linux 5.2: attach a detached mount, or move one."""
    if _syscall(
        ctypes.c_long(C.SYS_move_mount), ctypes.c_int(from_dfd), ctypes.c_char_p(from_path),
        ctypes.c_int(to_dfd), ctypes.c_char_p(to_path), ctypes.c_uint(flags),
    ) != 0:
        raise _fail("move_mount", to_path)


class open_how(ctypes.Structure):
    """``struct open_how`` (include/uapi/linux/openat2.h)."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dfd: int, path: bytes, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2), Linux 5.6: open ``path`` below ``dfd`` under the ``RESOLVE_*`` rules."""
    how = open_how(flags, mode, resolve)
    fd: int = _syscall(ctypes.c_long(C.SYS_openat2), ctypes.c_int(dfd), ctypes.c_char_p(path), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        raise _fail("openat2", path)
    return fd


def fstatfs_type(fd: int) -> int:
    """fstatfs(2)'s ``f_type``: the magic number of the filesystem ``fd`` lies on (``os.fstatvfs`` lacks it)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs: 120 bytes on 64-bit, f_type its first word
    if _libc.fstatfs(ctypes.c_int(fd), buf) != 0:
        raise _fail("fstatfs")
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def setfsids(uid: int, gid: int) -> tuple[int, int]:
    """setfsgid(2) and setfsuid(2) of the calling thread (no other: they are per thread); the previous ids.

    Raises:
        PermissionError: the kernel kept the old ids (no CAP_SETUID / CAP_SETGID).
    """
    old_gid = _libc.setfsgid(ctypes.c_uint(gid))
    old_uid = _libc.setfsuid(ctypes.c_uint(uid))
    if _libc.setfsgid(ctypes.c_uint(0xFFFFFFFF)) != gid or _libc.setfsuid(ctypes.c_uint(0xFFFFFFFF)) != uid:
        _libc.setfsuid(ctypes.c_uint(old_uid))
        _libc.setfsgid(ctypes.c_uint(old_gid))
        raise PermissionError(1, "setfsuid failed: the ids were not changed")
    return old_uid, old_gid


#: setgroups(2) and capset(2) numbers: x86_64's, and the generic table's (aarch64, riscv64)
_GENERIC_TABLE = os.uname().machine in ("aarch64", "riscv64")
_SYS_SETGROUPS = 159 if _GENERIC_TABLE else 116
_SYS_CAPSET = 91 if _GENERIC_TABLE else 126
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def set_thread_groups(groups: tuple[int, ...]) -> None:
    """setgroups(2) for the calling thread only: the raw syscall (glibc's changes every thread of the process)."""
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    if _syscall(ctypes.c_long(_SYS_SETGROUPS), ctypes.c_int(len(groups)), array) != 0:
        raise _fail("setgroups")


def set_thread_capabilities(kept: int) -> None:
    """capset(2) of the calling thread: effective and permitted become ``kept``, inheritable none."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(kept & 0xFFFFFFFF, kept & 0xFFFFFFFF, 0, kept >> 32, kept >> 32, 0)
    if _syscall(ctypes.c_long(_SYS_CAPSET), header, data) != 0:
        raise _fail("capset")


def fsopen(fsname: bytes, flags: int) -> int:
    """fsopen(2), Linux 5.2."""
    fd: int = _syscall(ctypes.c_long(C.SYS_fsopen), ctypes.c_char_p(fsname), ctypes.c_uint(flags))
    if fd < 0:
        raise _fail("fsopen")
    return fd


def fsconfig(fd: int, cmd: int, key: bytes | None, value: bytes | None, aux: int) -> None:
    """fsconfig(2), Linux 5.2."""
    if _syscall(
        ctypes.c_long(C.SYS_fsconfig), ctypes.c_int(fd), ctypes.c_uint(cmd), ctypes.c_char_p(key),
        ctypes.c_char_p(value), ctypes.c_int(aux),
    ) != 0:
        raise _fail("fsconfig")


def fsmount(fsfd: int, flags: int, attr_flags: int) -> int:
    """fsmount(2), Linux 5.2: a detached mount of a configured filesystem."""
    fd: int = _syscall(
        ctypes.c_long(C.SYS_fsmount), ctypes.c_int(fsfd), ctypes.c_uint(flags), ctypes.c_uint(attr_flags)
    )
    if fd < 0:
        raise _fail("fsmount")
    return fd


_RLIMIT = (ctypes.c_uint64 * 2)()
_setrlimit = _libc.setrlimit
_setrlimit.argtypes = (ctypes.c_int, ctypes.c_void_p)
_setrlimit.restype = ctypes.c_int


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """setrlimit(2) with 64-bit limits (RLIM_INFINITY = 2**64 - 1); resource.setrlimit would do, but
    the resource module is one more import in the zygote."""
    _RLIMIT[0] = soft
    _RLIMIT[1] = hard
    if _setrlimit(resource, _RLIMIT) != 0:
        raise _fail("setrlimit")


class _siginfo_chld(ctypes.Structure):
    """The SIGCHLD view of ``siginfo_t`` (128 bytes): what waitid fills in."""

    _fields_ = [
        ("si_signo", ctypes.c_int), ("si_errno", ctypes.c_int), ("si_code", ctypes.c_int), ("_pad", ctypes.c_int),
        ("si_pid", ctypes.c_int), ("si_uid", ctypes.c_uint), ("si_status", ctypes.c_int),
        ("_rest", ctypes.c_char * (128 - 28)),
    ]


class rusage(ctypes.Structure):
    """``struct rusage``: two timevals, then 14 longs (ru_maxrss first, in KiB)."""

    _fields_ = [
        ("utime_sec", ctypes.c_long), ("utime_usec", ctypes.c_long),
        ("stime_sec", ctypes.c_long), ("stime_usec", ctypes.c_long),
        ("maxrss", ctypes.c_long), ("_rest", ctypes.c_long * 13),
    ]


_P_PIDFD = 3
_WAIT_INFO = _siginfo_chld()
_WAIT_USAGE = rusage()
_WAIT_INFO_REF = ctypes.byref(_WAIT_INFO)
_WAIT_USAGE_REF = ctypes.byref(_WAIT_USAGE)


def waitid_pidfd(pidfd: int, options: int) -> tuple[int, int, float, float, int] | None:
    """The raw waitid(P_PIDFD) syscall, which also fills in the child's ``rusage`` (glibc's wrapper drops it).

    Returns ``(si_code, si_status, user seconds, system seconds, max RSS in
    bytes)``, or None with WNOHANG when the child has not exited. The times
    include the children it reaped (a container's pid 1 reaps them all).
    """
    _WAIT_INFO.si_pid = 0
    ret = _syscall(_WAITID_NR, ctypes.c_long(_P_PIDFD), ctypes.c_long(pidfd), _WAIT_INFO_REF,
                   ctypes.c_long(options), _WAIT_USAGE_REF)
    if ret == -1:
        raise _fail("waitid")
    if _WAIT_INFO.si_pid == 0:
        return None
    u = _WAIT_USAGE
    return (_WAIT_INFO.si_code, _WAIT_INFO.si_status, u.utime_sec + u.utime_usec / 1e6,
            u.stime_sec + u.stime_usec / 1e6, u.maxrss * 1024)
