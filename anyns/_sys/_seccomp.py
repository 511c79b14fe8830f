"""libseccomp through ctypes: compile a seccomp filter to classic BPF.

libseccomp (Debian's libseccomp2, the library runc, crun, bubblewrap and
systemd use) resolves syscall names for this architecture, adds the
architecture check and writes the BPF program; anyns never assembles BPF by
hand. The program is exported as bytes (``seccomp_export_bpf``) in the
supervisor and installed in the child with one prctl, so neither the zygote
nor the child loads libseccomp.

The library is loaded on first use; ``Unavailable`` says it is missing.
"""

from __future__ import annotations

import ctypes
import os

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO_BASE = 0x00050000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
#: what seccomp_syscall_resolve_name returns for a name this architecture lacks
NR_SCMP_ERROR = -1


def act_errno(err: int) -> int:
    """SCMP_ACT_ERRNO(err): the call fails with ``err`` and does nothing."""
    return SCMP_ACT_ERRNO_BASE | (err & 0xFFFF)


class scmp_arg_cmp(ctypes.Structure):
    """``struct scmp_arg_cmp`` (seccomp.h)."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class Unavailable(OSError):
    """libseccomp is not installed (Debian: libseccomp2)."""


_LIB: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise Unavailable(f"libseccomp.so.2 cannot be loaded: {e}") from None
        lib.seccomp_init.argtypes = (ctypes.c_uint32,)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_release.argtypes = (ctypes.c_void_p,)
        lib.seccomp_release.restype = None
        lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
        lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
        lib.seccomp_rule_add_array.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(scmp_arg_cmp))
        lib.seccomp_rule_add_array.restype = ctypes.c_int
        lib.seccomp_arch_native.argtypes = ()
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = (ctypes.c_char_p,)
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_add.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
        lib.seccomp_arch_add.restype = ctypes.c_int
        lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
        lib.seccomp_export_bpf.restype = ctypes.c_int
        _LIB = lib
    return _LIB


#: the architectures whose programs a native one also runs (Docker's default profile
#: lists the same): without them in the filter, a 32-bit program dies of SIGSYS.
COMPANION_ARCHES = {"x86_64": ("x86", "x32"), "aarch64": ("arm",), "s390x": ("s390",)}


def _arch_name(token: int) -> str | None:
    """libseccomp's name of architecture ``token`` (an AUDIT_ARCH_* value), for the ones we pair."""
    for name in (*COMPANION_ARCHES, *(a for arches in COMPANION_ARCHES.values() for a in arches)):
        if _lib().seccomp_arch_resolve_name(name.encode()) == token:
            return name
    return None


class Filter:
    """A libseccomp filter context: ``rule(...)`` calls, then ``export_bpf()``; a context manager.

    It covers the native architecture and the ones its kernel also runs
    (``COMPANION_ARCHES``); each rule is translated for each of them.
    """

    def __init__(self, default_action: int) -> None:
        self._lib = _lib()
        self._ctx = self._lib.seccomp_init(default_action)
        if not self._ctx:
            raise OSError(ctypes.get_errno() or 12, "seccomp_init failed")
        native = _arch_name(self._lib.seccomp_arch_native())
        #: the architectures the filter covers, native first
        self.arches: list[str] = [native or "native"]
        for name in COMPANION_ARCHES.get(native or "", ()):
            token = self._lib.seccomp_arch_resolve_name(name.encode())
            rc = self._lib.seccomp_arch_add(self._ctx, token) if token else -22
            if rc < 0 and rc != -17:  # EEXIST: already there
                self.release()
                raise OSError(-rc, f"seccomp_arch_add({name}) failed: {os.strerror(-rc)}")
            self.arches.append(name)

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        if self._ctx:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None

    def rule(self, action: int, name: str, *conditions: tuple[int, int, int, int]) -> bool:
        """Add a rule for syscall ``name``; conditions are ``(arg, op, datum_a, datum_b)``.

        Returns False when this architecture has no such syscall (nothing to filter).
        """
        number = self._lib.seccomp_syscall_resolve_name(name.encode())
        if number == NR_SCMP_ERROR:
            return False
        array = (scmp_arg_cmp * max(1, len(conditions)))(*(scmp_arg_cmp(*c) for c in conditions))
        rc = self._lib.seccomp_rule_add_array(self._ctx, action, number, len(conditions), array)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add({name}) failed: {os.strerror(-rc)}")
        return True

    def export_bpf(self) -> bytes:
        """The filter as a BPF program: ``struct sock_filter`` entries, 8 bytes each."""
        fd = os.memfd_create("anyns-seccomp", os.MFD_CLOEXEC)  # a file: no pipe buffer to fill up
        try:
            rc = self._lib.seccomp_export_bpf(self._ctx, fd)
            if rc < 0:
                raise OSError(-rc, f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
