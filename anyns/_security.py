"""Hardening: capabilities, no_new_privs, the seccomp filter, a new session.

Defaults follow Docker's (``docker run`` without ``--privileged``), each one
adjustable in the spec:

* capabilities: ``DEFAULT_CAPABILITIES`` (no CAP_SYS_ADMIN, CAP_NET_ADMIN,
  CAP_SYS_PTRACE, CAP_SYS_MODULE …); the bounding set is cut to them, so no
  execve can get the others back, and the ambient set is emptied;
* ``PR_SET_NO_NEW_PRIVS``: setuid binaries and file capabilities grant nothing;
* a seccomp filter (``Seccomp``): every syscall is allowed but the
  ``DEFAULT_DENIED`` ones (kexec, kernel modules, keyrings, bpf,
  perf_event_open, userfaultfd …) and the ``TIOCSTI``/``TIOCLINUX`` ioctls;
  without CAP_SYS_ADMIN also mount, namespace and clone-with-namespace calls
  (clone3 says ENOSYS, so libc falls back to clone, whose flags the filter can
  see). Seccomp follows the capabilities: keep CAP_SYS_ADMIN and mounting works;
* ``setsid``: the program leads a new session without a controlling
  terminal, so it cannot push input into the caller's (TIOCSTI).

Host half (the supervisor): ``seccomp_bpf``, the filter as BPF bytes, built
with libseccomp. Child half: the ``*_in_child`` functions, a few syscalls
each, with the ctypes arguments prepared once per plan (``prepare_*``).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os

from ._security_defaults import CAPABILITIES
from ._sys import _consts as C
from ._sys import _libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

#: refused unless CAP_SYS_ADMIN is kept ("seccomp follows the capabilities")
_ADMIN_CALLS = (
    "mount", "umount", "umount2", "pivot_root", "unshare", "setns", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr",
)
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
_CLONE_NAMESPACES = (C.CLONE_NEWNS, C.CLONE_NEWCGROUP, C.CLONE_NEWUTS, C.CLONE_NEWIPC, C.CLONE_NEWUSER,
                     C.CLONE_NEWPID, C.CLONE_NEWNET, C.CLONE_NEWTIME)

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPSET = {"aarch64": 91, "riscv64": 91}.get(os.uname().machine, 126)


def capability_numbers(names: Iterable[str]) -> int:
    """The 64-bit mask of capability ``names``."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES[name]
    return mask


# --------------------------------------------------------------------------- host half


def _clone_flags_argument() -> int:
    """Which argument of clone(2) holds the flags: the first, but the second on s390 (CLONE_BACKWARDS2).

    The companion architectures in a filter (``_seccomp.COMPANION_ARCHES``) agree with their native one.
    """
    return 1 if os.uname().machine.startswith("s390") else 0


def seccomp_bpf(denied: Iterable[str], err: int, keep_admin: bool) -> bytes:
    """The filter as classic BPF, compiled by libseccomp for this machine's architecture.

    Raises:
        OSError: libseccomp is missing (``_seccomp.Unavailable``) or refused a rule.
    """
    from ._sys import _seccomp as S  # libseccomp is loaded by the supervisor only

    action = S.act_errno(err)
    with S.Filter(S.SCMP_ACT_ALLOW) as f:
        for name in sorted(denied):
            f.rule(action, name)
        for request in (_TIOCSTI, _TIOCLINUX):
            f.rule(action, "ioctl", (1, S.SCMP_CMP_MASKED_EQ, 0xFFFFFFFF, request))
        if not keep_admin:
            for name in _ADMIN_CALLS:
                f.rule(action, name)
            for flag in _CLONE_NAMESPACES:
                f.rule(action, "clone", (_clone_flags_argument(), S.SCMP_CMP_MASKED_EQ, flag, flag))
            f.rule(S.act_errno(_errno.ENOSYS), "clone3")  # its flags are behind a pointer: let libc fall back
        return f.export_bpf()


# --------------------------------------------------------------------------- child half


class _sock_fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _cap_header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _cap_data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def prepare_seccomp(bpf: bytes) -> tuple[object, ...]:
    """The ``struct sock_fprog`` for ``bpf`` and the buffer it points to (kept alive together)."""
    buffer = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _sock_fprog(len(bpf) // 8, ctypes.addressof(buffer))
    return (prog, buffer)


def prepare_capset(kept: int) -> tuple[object, ...]:
    """capset(2) arguments giving effective = permitted = ``kept`` and no inheritable ones."""
    header = _cap_header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_cap_data * 2)(_cap_data(kept & 0xFFFFFFFF, kept & 0xFFFFFFFF, 0),
                           _cap_data(kept >> 32, kept >> 32, 0))
    return (header, data)


def drop_bounding_in_child(dropped: tuple[int, ...]) -> None:
    """Remove ``dropped`` from the bounding set: no execve can grant them again (needs CAP_SETPCAP).

    A capability newer than this kernel (EINVAL) has nothing to drop.
    """
    for cap in dropped:
        try:
            _libc.prctl(_PR_CAPBSET_DROP, cap)
        except OSError as e:
            if e.errno != _errno.EINVAL:
                raise


def install_seccomp_in_child(prepared: tuple[object, ...]) -> None:
    """Install the filter (no_new_privs, or CAP_SYS_ADMIN, must hold already)."""
    prog = prepared[0]
    assert isinstance(prog, _sock_fprog)
    _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog))


def set_capabilities_in_child(prepared: tuple[object, ...]) -> None:
    """Keep only the prepared capabilities (effective, permitted), none inheritable or ambient."""
    header, data = prepared
    _libc.syscall("capset", _SYS_CAPSET, ctypes.addressof(header), ctypes.addressof(data))  # type: ignore[arg-type]
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)


def no_new_privs_in_child() -> None:
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1)
