"""_cgroups: the devices hierarchy in probe(), the v1 rule text and the v2 device filter program."""

from __future__ import annotations

import struct

from anyns import _cgroups
from anyns._sys import _bpf

HYBRID_MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,devices
33 25 0:29 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,blkio
"""
HYBRID_SELF = "3:blkio:/\n2:devices:/user.slice\n1:memory:/\n0::/\n"


def test_probe_uses_the_v1_devices_hierarchy_beside_v2() -> None:
    """On a hybrid host the devices hierarchy is used (v2 has no devices controller); blkio is not."""
    v2, v1 = _cgroups.probe(HYBRID_MOUNTINFO, HYBRID_SELF)
    assert v2 is not None and v2.own == "/sys/fs/cgroup/unified"
    by_controllers = {tuple(sorted(h.controllers)): h.own for h in v1}
    assert by_controllers == {("memory",): "/sys/fs/cgroup/memory",
                              ("devices",): "/sys/fs/cgroup/devices/user.slice"}


def test_v1_rules_are_written_as_devices_allow_takes_them() -> None:
    rules = [_cgroups.v1_device_rule(rule) for rule in _cgroups.DEVICE_RULES]
    assert rules[:2] == ["c *:* m", "b *:* m"]
    assert "c 1:3 rwm" in rules and "c 136:* rwm" in rules and "c 5:2 rwm" in rules
    assert not any(rule.startswith("a") or rule.startswith("b 8") for rule in rules)


def _decode(program: bytes) -> list[tuple[int, int, int, int, int]]:
    """(opcode, dst, src, off, imm) of each instruction."""
    out = []
    for i in range(0, len(program), 8):
        code, regs, off, imm = struct.unpack("=BBhi", program[i:i + 8])
        out.append((code, regs & 0xF, regs >> 4, off, imm))
    return out


def _run(program: bytes, kind: int, access: int, major: int, minor: int) -> int:
    """A tiny interpreter for exactly the instructions device_program emits: what the kernel would decide."""
    insns = _decode(program)
    regs = [0] * 11
    ctx = struct.pack("=III", kind | access << 16, major, minor)
    pc = 0
    while True:
        code, dst, src, off, imm = insns[pc]
        pc += 1
        if code == _bpf.BPF_LDX_MEM_W:
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif code == _bpf.BPF_ALU_AND_K:
            regs[dst] &= imm & 0xFFFFFFFF
        elif code == _bpf.BPF_ALU_RSH_K:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == _bpf.BPF_ALU_MOV_K:
            regs[dst] = imm & 0xFFFFFFFF
        elif code == _bpf.BPF_ALU_MOV_X:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == _bpf.BPF_JMP_JNE_K:
            pc += off if regs[dst] != imm else 0
        elif code == _bpf.BPF_JMP_JNE_X:
            pc += off if regs[dst] != regs[src] else 0
        elif code == _bpf.BPF_JMP_EXIT:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def test_the_device_program_allows_exactly_the_rules() -> None:
    program = _cgroups.device_program(_cgroups.DEVICE_RULES)
    assert len(program) % 8 == 0
    char, block = _bpf.BPF_DEVCG_DEV_CHAR, _bpf.BPF_DEVCG_DEV_BLOCK
    read, write, mknod = _bpf.BPF_DEVCG_ACC_READ, _bpf.BPF_DEVCG_ACC_WRITE, _bpf.BPF_DEVCG_ACC_MKNOD
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, 0), (136, 7)):
        assert _run(program, char, read | write, major, minor) == 1, (major, minor)
    for kind in (char, block):  # any node may be made, as under runc
        assert _run(program, kind, mknod, 8, 0) == 1
    assert _run(program, char, read, 1, 11) == 0  # kmsg
    assert _run(program, char, read | write, 1, 1) == 0  # mem
    assert _run(program, block, read, 8, 0) == 0  # a disk
    assert _run(program, char, read, 5, 1) == 0  # the console
    assert _run(program, char, read, 10, 229) == 0  # fuse
    bound = _cgroups.device_program((*_cgroups.DEVICE_RULES, ("c", 10, 229, "r")))
    assert _run(bound, char, read, 10, 229) == 1
    assert _run(bound, char, read | write, 10, 229) == 0  # read-only
    assert _run(_cgroups.device_program(()), char, read, 1, 3) == 0
