"""Hardening: capabilities, no_new_privs, the seccomp filter, a new session.

Defaults follow Docker's (``docker run`` without ``--privileged``), each one
adjustable in the spec:

* capabilities: ``DEFAULT_CAPABILITIES`` (no CAP_SYS_ADMIN, CAP_NET_ADMIN,
  CAP_SYS_PTRACE, CAP_SYS_MODULE …); the bounding set is cut to them, so no
  execve can get the others back, and the ambient set is emptied;
* ``PR_SET_NO_NEW_PRIVS``: setuid binaries and file capabilities grant nothing;
* a seccomp filter (``Seccomp``): an allow-list, Docker's default profile
  (moby's ``default.json``, kept in ``_data/`` with its commit and read by
  ``_seccomp_profile``) for the container's capabilities. What it does not
  allow fails with EPERM (io_uring, kexec, kernel modules, keyrings, bpf,
  userfaultfd …; ``socket(AF_VSOCK)``, ``socket(AF_ALG)``; the TIOCSTI and
  TIOCLINUX ioctls), a syscall neither it nor libseccomp knows with ENOSYS.
  Seccomp follows the capabilities: keep CAP_SYS_ADMIN and mount, unshare
  and clone with namespace flags work; without it clone3 says ENOSYS, so
  libc falls back to clone, whose flags the filter can see;
* ``setsid``: the program leads a new session without a controlling
  terminal, so it cannot push input into the caller's (TIOCSTI).

Host half (the supervisor): ``seccomp_bpf``, the filter as BPF bytes, built
with libseccomp: ENOSYS as its default action, an explicit rule for every
syscall libseccomp knows (allowed, or refused with the errno), and
libseccomp's binary tree over syscall numbers (1,821 instructions for
x86_64 + x86 + x32 with the default capabilities, ~0.25 ms to install; the
kernel walks it for every syscall number when it caches the allowed ones,
and as a plain list that took ~0.8 ms). The filters compiled, one per
policy (``seccomp_policy``, the key), are cached for the process
(``compile_seccomp``; the supervisor calls it in a worker thread, once per
policy however many spawns wait for it), and ``with_seccomp_bpf`` rewrites a
plan's ``seccomp`` op into the ``seccomp_bpf`` op the child installs.
Child half: the ``drop_bounding``, ``seccomp_bpf``, ``capset`` and
``no_new_privs`` ops of the native core (``_native/spawn.c``), a few syscalls each.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os

from ._security_defaults import CAPABILITIES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._plan import Op

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


def seccomp_bpf(capabilities: Iterable[str], allow: Iterable[str] = (), deny: Iterable[str] = (),
                err: int = _errno.EPERM, *, optimize: bool = True) -> bytes:
    """The filter for a container keeping ``capabilities``, as classic BPF compiled by libseccomp.

    Docker's default profile (``_seccomp_profile``), adjusted by ``allow``
    and ``deny`` (refused with ``err``, as is what the profile refuses), for
    this machine's architecture and its companions. ``optimize`` (libseccomp
    2.5+) dispatches on the syscall number through a binary tree.

    Raises:
        OSError: libseccomp is missing (``_seccomp.Unavailable``) or refused a rule.
    """
    from . import _seccomp_profile as P
    from ._sys import _seccomp as S  # libseccomp is loaded by the supervisor only

    with S.Filter(P.ACT_ERRNO | _errno.ENOSYS) as f:
        if optimize:
            f.optimize()
        rules = P.policy(P.load(), capabilities, allow, deny, err, native=f.arches[0],
                         kernel=P.kernel_version())
        for name in sorted(S.known_syscalls(tuple(f.arches)) | rules.named.keys()):
            for action, conditions in rules.rules_for(name):
                f.rule(action, name, *conditions, optional=action != P.ACT_ALLOW)  # refused either way
        return f.export_bpf()


#: a plan's seccomp policy: (deny, errno, capabilities, allow), the key of the compiled filters
SeccompPolicy = tuple[tuple[str, ...], int, tuple[str, ...], tuple[str, ...]]
#: policy -> its filter as hex; shared by every supervisor of the process, the oldest forgotten past _MAX_SECCOMP
_SECCOMP_HEX: dict[SeccompPolicy, str] = {}
_MAX_SECCOMP = 64


def seccomp_policy(ops: Iterable[Op]) -> SeccompPolicy | None:
    """The policy of a plan's uncompiled ``seccomp`` op, as the filter cache's key; None without one."""
    for _step, call, _path, args in ops:
        if call == "seccomp":
            deny, err, caps, allow = args
            assert isinstance(deny, tuple) and isinstance(err, int) and isinstance(caps, tuple)
            assert isinstance(allow, tuple)
            return (tuple(str(d) for d in deny), err, tuple(str(c) for c in caps), tuple(str(a) for a in allow))
    return None


def seccomp_compiled(policy: SeccompPolicy) -> bool:
    """Whether ``policy``'s filter is in the cache (else ``compile_seccomp`` it first, in a worker thread)."""
    return policy in _SECCOMP_HEX


def compile_seccomp(policy: SeccompPolicy) -> str:
    """Compile ``policy``'s filter into the cache and return it as hex; blocking (tens of ms).

    Raises:
        UnsupportedError: libseccomp is missing or refused a rule.
    """
    from ._errors import UnsupportedError  # host half only

    deny, err, capabilities, allow = policy
    try:
        hexed = seccomp_bpf(capabilities, allow, deny, err).hex()
    except OSError as e:
        raise UnsupportedError(
            f"seccomp: the filter could not be built: {e} (hint: install libseccomp2, "
            "or pass seccomp=None to run without a filter)") from e
    if len(_SECCOMP_HEX) >= _MAX_SECCOMP:
        del _SECCOMP_HEX[next(iter(_SECCOMP_HEX))]
    _SECCOMP_HEX[policy] = hexed
    return hexed


def with_seccomp_bpf(ops: tuple[Op, ...]
                     ) -> tuple[Op, ...]:
    """``ops`` with the ``seccomp`` policy op rewritten to ``seccomp_bpf`` (its compiled filter, as hex).

    The child only installs it. A policy not in the cache (evicted meanwhile
    by 64 others) is compiled here, once.
    """
    policy = seccomp_policy(ops)
    if policy is None:
        return ops
    bpf = _SECCOMP_HEX.get(policy)
    if bpf is None:
        bpf = compile_seccomp(policy)
    return tuple((step, "seccomp_bpf", path, (bpf,)) if call == "seccomp" else (step, call, path, args)
                 for step, call, path, args in ops)


# --------------------------------------------------------------------------- child half


class _sock_fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _cap_header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _cap_data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


