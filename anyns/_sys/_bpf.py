"""bpf(2) through ctypes: load a program, attach it to a cgroup; eBPF instruction encoding. No policy.

Sources: include/uapi/linux/bpf.h (``union bpf_attr``, the program and
attach types, ``struct bpf_cgroup_dev_ctx``), include/uapi/linux/bpf_common.h
(the opcode fields).
"""

from __future__ import annotations

import ctypes
import os
import struct

# bpf(2) commands
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
# program and attach types
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
# attach flags: with ALLOW_MULTI every program on the way from the root runs, and all must allow
BPF_F_ALLOW_MULTI = 2

# struct bpf_cgroup_dev_ctx { u32 access_type (type | access << 16); u32 major; u32 minor; }
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4

# opcodes: class | operation | source (bpf_common.h)
BPF_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
BPF_ALU_AND_K = 0x54  # 32-bit dst &= imm
BPF_ALU_RSH_K = 0x74  # 32-bit dst >>= imm
BPF_ALU_MOV_K = 0xB4  # 32-bit dst = imm
BPF_ALU_MOV_X = 0xBC  # 32-bit dst = src
BPF_JMP_JNE_K = 0x55  # if dst != imm: pc += off
BPF_JMP_JNE_X = 0x5D  # if dst != src: pc += off
BPF_JMP_EXIT = 0x95

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}.get(os.uname().machine)

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One eBPF instruction (``struct bpf_insn``, 8 bytes, host byte order)."""
    return struct.pack("=BBhi", code, (src << 4) | dst, off, imm)


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], name: str) -> int:
    if _SYS_BPF is None:
        raise OSError(38, f"{name} failed: bpf(2) is not wired for {os.uname().machine} here")
    result = _syscall(ctypes.c_long(_SYS_BPF), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name} failed: {os.strerror(err)}")
    return int(result)


def bpf_prog_load(prog_type: int, insns: bytes, license: bytes, expected_attach_type: int = 0) -> int:
    """``bpf(BPF_PROG_LOAD)``: the program's fd (close-on-exec, as every bpf fd)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license)
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size,
    # log_buf, kern_version, prog_flags, prog_name[16], prog_ifindex, expected_attach_type
    attr = ctypes.create_string_buffer(
        struct.pack("=IIQQIIQII16sII", prog_type, len(insns) // 8, ctypes.addressof(code),
                    ctypes.addressof(lic), 0, 0, 0, 0, 0, b"anyns_devices", 0, expected_attach_type), 128)
    return _bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")


def bpf_prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int) -> None:
    """``bpf(BPF_PROG_ATTACH)``: attach ``prog_fd`` to the cgroup directory open as ``target_fd``."""
    attr = ctypes.create_string_buffer(struct.pack("=IIIII", target_fd, prog_fd, attach_type, flags, 0), 128)
    _bpf(BPF_PROG_ATTACH, attr, "bpf(BPF_PROG_ATTACH)")
