"""The native spawn core (``_native/spawn.c``, built as ``libanyns-spawn.so``), loaded with ctypes.

The zygote loads it once (``load``), links each plan's encoded op list in
place once (``LinkedPlan``), and calls ``spawn`` once per container. The
library is plain C with no Python headers: one build serves every CPython.
"""

from __future__ import annotations

import ctypes
import os

from . import _ops

#: where ``pip install`` puts the library, beside the init
LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_native", "libanyns-spawn.so")
VERSION = 1


class Native:
    """The loaded library: its four entry points with their C signatures."""

    def __init__(self, path: str = LIBRARY) -> None:
        # RTLD_NOW: every symbol is bound before the first clone (a CLONE_VM child must never enter the
        # dynamic linker); the library is also linked with -z now.
        lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL, use_errno=False)
        self.path = path
        self._link = lib.anyns_plan_link
        self._link.argtypes = (ctypes.c_void_p, ctypes.c_uint64)
        self._link.restype = ctypes.c_int
        self._spawn = lib.anyns_spawn
        self._spawn.argtypes = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_int,
                                ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                ctypes.POINTER(ctypes.c_uint64))
        self._spawn.restype = ctypes.c_long
        self._oldest = lib.anyns_oldest_busy
        self._oldest.argtypes = ()
        self._oldest.restype = ctypes.c_uint64
        self._busy = lib.anyns_busy_stacks
        self._busy.argtypes = ()
        self._busy.restype = ctypes.c_int
        layout = lib.anyns_layout
        layout.argtypes = (ctypes.c_int,)
        layout.restype = ctypes.c_int
        init = lib.anyns_native_init
        init.argtypes = ()
        init.restype = ctypes.c_int
        self.version = init()
        if self.version != VERSION or (layout(0), layout(1), layout(2)) != (
                _ops.HEADER_SIZE, _ops.OP_SIZE, len(_ops.OPS)):
            raise OSError(f"{path} does not match this anyns (version {self.version}, layout "
                          f"{layout(0)}/{layout(1)}/{layout(2)}): reinstall anyns")
        self.max_fds = layout(3)
        self._pidfd = ctypes.c_int(-1)
        self._serial = ctypes.c_uint64(0)
        self._pidfd_ref = ctypes.byref(self._pidfd)
        self._serial_ref = ctypes.byref(self._serial)
        self._fds = (ctypes.c_int * self.max_fds)()

    def link(self, encoded: bytes) -> ctypes.Array[ctypes.c_char]:
        """A buffer holding ``encoded``, linked in place (it must stay alive while a child may read it)."""
        buffer = ctypes.create_string_buffer(encoded, len(encoded))
        err = self._link(buffer, len(encoded))
        if err:
            raise ValueError(f"the native core refused the encoded plan ({os.strerror(-err)})")
        return buffer

    def spawn(self, plan: ctypes.Array[ctypes.c_char], flags: int, cgroup_fd: int, shared_vm: bool,
              fds: tuple[int, ...] | list[int]) -> tuple[int, int, int]:
        """Clone a child running ``plan``: ``(pid, pidfd, serial)``.

        Raises:
            OSError: clone3 (or the stack's mmap) failed.
        """
        n = len(fds)
        if n > self.max_fds:
            raise OSError(7, f"a spawn takes at most {self.max_fds} fds")  # E2BIG
        self._fds[:n] = fds
        pid = self._spawn(plan, flags, cgroup_fd, int(shared_vm), self._fds, n, self._pidfd_ref, self._serial_ref)
        if pid < 0:
            raise OSError(-pid, os.strerror(-pid))
        return pid, self._pidfd.value, self._serial.value

    def oldest_busy(self) -> int:
        """The serial of the oldest spawn whose child may still read its plan (2**64 - 1: none)."""
        return int(self._oldest())

    def busy_stacks(self) -> int:
        """How many children are still in setup on a stack of the zygote's."""
        return int(self._busy())
