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
import functools
import os

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO_BASE = 0x00050000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
#: seccomp_attr_set: how the filter dispatches on the syscall number (libseccomp 2.5+)
SCMP_FLTATR_CTL_OPTIMIZE = 8
#: ... 2: a binary tree sorted by syscall number (1, the default: a list by priority)
OPTIMIZE_BINARY_TREE = 2
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
        lib.seccomp_arch_remove.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
        lib.seccomp_arch_remove.restype = ctypes.c_int
        lib.seccomp_merge.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
        lib.seccomp_merge.restype = ctypes.c_int
        lib.seccomp_syscall_resolve_num_arch.argtypes = (ctypes.c_uint32, ctypes.c_int)
        lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p  # malloc'd: free() it
        try:
            lib.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
            lib.seccomp_attr_set.restype = ctypes.c_int
        except AttributeError:  # pragma: no cover - every libseccomp2 has it
            pass
        _LIB = lib
    return _LIB


#: the architectures whose programs a native one also runs (Docker's default profile
#: lists the same): without them in the filter, a 32-bit program dies of SIGSYS.
COMPANION_ARCHES = {"x86_64": ("x86", "x32"), "aarch64": ("arm",), "s390x": ("s390",)}
#: x32 getpid: an x86_64 syscall number with the x32 bit (0x40000000) set
_X32_GETPID = 0x40000000 | 39


def kernel_runs(arch: str) -> bool:
    """Whether this kernel runs syscalls of companion architecture ``arch`` at all.

    Most x86_64 kernels run no x32 program (CONFIG_X86_X32_ABI off, or
    ``syscall.x32=n``): their x32 syscalls fail with ENOSYS whatever the
    filter says, so covering x32 only makes every container's filter a
    quarter longer (1,372 instructions instead of 1,821 for the defaults),
    and loading it costs per instruction, at every spawn. Without x32 in the
    filter such a call is refused for its architecture (the process is
    killed) instead of failing with ENOSYS: a program that makes x32 calls
    on a kernel without x32 is broken either way.
    """
    if arch != "x32":
        return True
    return _x32_runs()


@functools.cache
def _x32_runs() -> bool:
    # Under a seccomp filter of its own (anyns inside a container) the probe itself could be the
    # call that filter kills for its architecture: keep x32 then, which costs only length.
    try:
        with open("/proc/self/status", "rb") as f:
            if any(line.split() == [b"Seccomp:", b"2"] for line in f):
                return True
    except OSError:
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    done = libc.syscall(ctypes.c_long(_X32_GETPID))
    return not (done == -1 and ctypes.get_errno() == 38)  # ENOSYS


#: the highest syscall number looked up when listing the syscalls libseccomp knows (Linux 6.x: ~470)
_MAX_SYSCALL = 1024


@functools.cache
def known_syscalls(arches: tuple[str, ...]) -> frozenset[str]:
    """Every syscall name libseccomp has a number for on one of ``arches`` (its names)."""
    lib = _lib()
    free = ctypes.CDLL(None).free
    free.argtypes = (ctypes.c_void_p,)
    free.restype = None
    names = set()
    for arch in arches:
        token = lib.seccomp_arch_resolve_name(arch.encode())
        if not token:
            continue
        for number in range(_MAX_SYSCALL):
            name = lib.seccomp_syscall_resolve_num_arch(token, number)
            if name:
                names.add(ctypes.string_at(name).decode())
                free(name)
    return frozenset(names)


#: libseccomp's architecture names (``seccomp_arch_resolve_name`` takes them; there is no reverse call)
_ARCH_NAMES = ("x86_64", "x86", "x32", "aarch64", "arm", "s390x", "s390", "ppc64le", "ppc64", "ppc", "riscv64",
               "loongarch64", "mips", "mipsel", "mips64", "mips64n32", "mipsel64", "mipsel64n32", "parisc",
               "parisc64", "m68k", "sh", "sheb")
_EEXIST = 17


def _arch_name(token: int) -> str | None:
    """libseccomp's name of architecture ``token`` (an AUDIT_ARCH_* value)."""
    for name in _ARCH_NAMES:
        if _lib().seccomp_arch_resolve_name(name.encode()) == token:
            return name
    return None


class Filter:
    """A libseccomp filter: ``rule(...)`` calls, then ``export_bpf()``; a context manager.

    It covers the native architecture and the ones its kernel also runs
    (``COMPANION_ARCHES``), each in a context of its own until the export
    merges them: a rule one of them cannot take (``optional``) leaves the
    others theirs.
    """

    def __init__(self, default_action: int) -> None:
        self._lib = _lib()
        native = _arch_name(self._lib.seccomp_arch_native())
        #: the architectures the filter covers, native first
        self.arches: list[str] = [native or "native"]
        self.arches += [arch for arch in COMPANION_ARCHES.get(native or "", ()) if kernel_runs(arch)]
        self._contexts: list[int] = []
        try:
            for name in self.arches:
                self._contexts.append(self._context(default_action, name))
        except BaseException:
            self.release()
            raise

    def _context(self, default_action: int, arch: str) -> int:
        ctx: int | None = self._lib.seccomp_init(default_action)
        if not ctx:
            raise OSError(ctypes.get_errno() or 12, "seccomp_init failed")
        if arch == self.arches[0]:
            return ctx
        token = self._lib.seccomp_arch_resolve_name(arch.encode())
        rc = self._lib.seccomp_arch_add(ctx, token) if token else -22
        if rc >= 0:
            rc = self._lib.seccomp_arch_remove(ctx, self._lib.seccomp_arch_native())
        if rc < 0:
            self._lib.seccomp_release(ctx)
            raise OSError(-rc, f"seccomp_arch_add({arch}) failed: {os.strerror(-rc)}")
        return ctx

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        for ctx in self._contexts:
            self._lib.seccomp_release(ctx)
        self._contexts = []

    def optimize(self) -> bool:
        """Dispatch on the syscall number through a binary tree (libseccomp 2.5+): with hundreds of rules a
        call walks ~log2 of them, not all; False where this libseccomp cannot."""
        set_attr = getattr(self._lib, "seccomp_attr_set", None)
        return set_attr is not None and all(
            set_attr(ctx, SCMP_FLTATR_CTL_OPTIMIZE, OPTIMIZE_BINARY_TREE) == 0 for ctx in self._contexts)

    def rule(self, action: int, name: str, *conditions: tuple[int, int, int, int], optional: bool = False) -> bool:
        """Add a rule for syscall ``name``; conditions are ``(arg, op, datum_a, datum_b)``.

        ``optional``: an architecture where it clashes with a rule already
        there (EEXIST: i386's socketcall carries no socket family to
        compare) goes without it. Returns False when no architecture here
        has such a syscall (nothing to filter).
        """
        number = self._lib.seccomp_syscall_resolve_name(name.encode())
        if number == NR_SCMP_ERROR:
            return False
        array = (scmp_arg_cmp * max(1, len(conditions)))(*(scmp_arg_cmp(*c) for c in conditions))
        for ctx in self._contexts:
            rc = self._lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array)
            if rc < 0 and not (optional and rc == -_EEXIST):
                raise OSError(-rc, f"seccomp_rule_add({name}) failed: {os.strerror(-rc)}")
        return True

    def export_bpf(self) -> bytes:
        """The filter as a BPF program: ``struct sock_filter`` entries, 8 bytes each (once: it merges the
        architectures' contexts)."""
        while len(self._contexts) > 1:
            rc = self._lib.seccomp_merge(self._contexts[0], self._contexts[-1])
            if rc < 0:
                raise OSError(-rc, f"seccomp_merge failed: {os.strerror(-rc)}")
            self._contexts.pop()  # merged: libseccomp released it
        fd = os.memfd_create("anyns-seccomp", os.MFD_CLOEXEC)  # a file: no pipe buffer to fill up
        try:
            rc = self._lib.seccomp_export_bpf(self._contexts[0], fd)
            if rc < 0:
                raise OSError(-rc, f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
