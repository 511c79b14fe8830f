"""The seccomp allow-list: Docker's default profile read for a container (pure), and the BPF it compiles to.

The BPF tests run the exported program in a small classic-BPF interpreter
(``run_bpf``) on made-up ``struct seccomp_data``, so every verdict is the
kernel's would-be answer, with no process involved.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyns
from anyns import _seccomp_profile as P
from anyns._security_defaults import ALL_CAPABILITIES, DEFAULT_CAPABILITIES
from anyns._sys import _seccomp

DATA = os.path.join(os.path.dirname(P.__file__), "_data")
ALLOW = ((P.ACT_ALLOW, ()),)
EPERM = ((P.ACT_ERRNO | errno.EPERM, ()),)
U32 = 0xFFFFFFFF


def policy(caps: frozenset[str] = DEFAULT_CAPABILITIES, native: str = "x86_64", kernel: tuple[int, int] = (6, 18),
           **adjust: object) -> P.Policy:
    return P.policy(P.load(), caps, native=native, kernel=kernel, **adjust)  # type: ignore[arg-type]


def verdict(rules: tuple[P.Rule, ...], args: dict[int, int]) -> int | None:
    """What ``rules`` (each an action and comparisons that must all hold) answer for argument values
    ``args``; None when no rule matches (the filter's default). Rules that match must agree."""
    ops = {P.CMP_NE: lambda x, a, b: x != a, P.CMP_LT: lambda x, a, b: x < a, P.CMP_LE: lambda x, a, b: x <= a,
           P.CMP_EQ: lambda x, a, b: x == a, P.CMP_GE: lambda x, a, b: x >= a, P.CMP_GT: lambda x, a, b: x > a,
           P.CMP_MASKED_EQ: lambda x, a, b: x & a == b}
    found = {action for action, conditions in rules
             if all(ops[op](args.get(arg, 0), a, b) for arg, op, a, b in conditions)}
    assert len(found) <= 1, f"overlapping rules disagree: {found}"
    return found.pop() if found else None


# --------------------------------------------------------------------------- the stored profile


def test_the_stored_profile_is_mobys_current_one_with_its_commit() -> None:
    """The package holds default.json verbatim (sha256 as recorded) from a named commit, newer than
    moby#46762: io_uring is nowhere in it; AF_VSOCK (40) is outside its socket rules."""
    with open(os.path.join(DATA, "seccomp_default.json"), "rb") as f:
        data = f.read()
    with open(os.path.join(DATA, "seccomp_default.commit")) as f:
        meta = dict(line.rstrip("\n").split(": ", 1) for line in f if line.strip())
    assert re.fullmatch(r"[0-9a-f]{40}", meta["commit"])
    assert meta["repository"].endswith("moby/profiles") and meta["path"] == "seccomp/default.json"
    assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    assert b"io_uring" not in data
    profile = json.loads(data)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == errno.EPERM
    assert P.load() == profile


def test_the_update_script_refuses_an_old_profile() -> None:
    """update_seccomp_profile.check() takes the stored profile and refuses one that allows io_uring."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("update", os.path.join(DATA, "update_seccomp_profile.py"))
    assert spec is not None and spec.loader is not None
    update = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update)
    with open(os.path.join(DATA, "seccomp_default.json"), "rb") as f:
        data = f.read()
    assert update.check(data)["syscalls"]
    old = json.loads(data)
    old["syscalls"][0]["names"].append("io_uring_setup")
    with pytest.raises(SystemExit, match="io_uring_setup"):
        update.check(json.dumps(old).encode())


# --------------------------------------------------------------------------- includes / excludes


def test_capability_rules_follow_the_capabilities() -> None:
    """includes.caps needs every listed capability, excludes.caps drops the rule for any of them."""
    entry = {"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_A", "CAP_B"]}}
    assert not P.applies(entry, frozenset({"CAP_A"}), "x86_64", (6, 18))
    assert P.applies(entry, frozenset({"CAP_A", "CAP_B"}), "x86_64", (6, 18))
    entry = {"names": ["x"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_A", "CAP_B"]}}
    assert P.applies(entry, frozenset(), "x86_64", (6, 18))
    assert not P.applies(entry, frozenset({"CAP_B"}), "x86_64", (6, 18))


def test_the_profile_follows_the_capabilities() -> None:
    """CAP_SYS_ADMIN allows mount, unshare, setns and every clone (and clone3); CAP_SYS_PTRACE kcmp,
    pidfd_getfd, process_madvise; CAP_SYS_BOOT reboot. Without them: refused; clone3 answers ENOSYS (the
    filter's default: libc falls back to clone), clone only without namespace flags."""
    plain, admin = policy(), policy(DEFAULT_CAPABILITIES | {"CAP_SYS_ADMIN"})
    ptrace = policy(DEFAULT_CAPABILITIES | {"CAP_SYS_PTRACE"})
    for name in ("mount", "umount2", "unshare", "setns", "fsopen", "open_tree", "move_mount"):
        assert (plain.rules_for(name), admin.rules_for(name)) == (EPERM, ALLOW), name
    for name in ("kcmp", "pidfd_getfd", "process_madvise"):
        assert (plain.rules_for(name), ptrace.rules_for(name)) == (EPERM, ALLOW), name
    assert policy(DEFAULT_CAPABILITIES | {"CAP_SYS_BOOT"}).rules_for("reboot") == ALLOW
    assert plain.rules_for("clone3") == () and plain.named["clone3"] == ((P.ACT_ERRNO | errno.ENOSYS, ()),)
    assert admin.rules_for("clone3") == ALLOW and admin.rules_for("clone") == ALLOW
    clone = plain.rules_for("clone")
    assert verdict(clone, {0: 0x11 | 0x01000000}) == P.ACT_ALLOW  # SIGCHLD | CLONE_CHILD_SETTID
    assert verdict(clone, {0: 0x00010F00}) == P.ACT_ALLOW  # pthread's CLONE_VM | FS | FILES | SIGHAND | THREAD
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert verdict(clone, {0: flag | 0x11}) == P.ACT_ERRNO | errno.EPERM, hex(flag)
    assert all(P.policy(P.load(), ALL_CAPABILITIES, native="x86_64", kernel=(6, 18)).rules_for(n) == ALLOW
               for n in ("mount", "kcmp", "bpf", "perf_event_open", "reboot", "init_module"))


def test_arches_and_kernel_versions() -> None:
    """Rules for other architectures are skipped (arch_prctl is x86's, set_tls arm's); clone's flags are
    its second argument on s390x; minKernel 4.8 gates ptrace."""
    assert policy().rules_for("arch_prctl") == ALLOW and "arch_prctl" not in policy(native="aarch64").named
    assert policy(native="aarch64").rules_for("set_tls") == ALLOW and "set_tls" not in policy().named
    assert policy(native="x86").rules_for("modify_ldt") == ALLOW
    assert "s390_runtime_instr" not in policy().named
    assert {c[0] for _action, conditions in policy(native="s390x").rules_for("clone") for c in conditions} == {1}
    assert {c[0] for _action, conditions in policy().rules_for("clone") for c in conditions} == {0}
    assert policy(kernel=(4, 8)).rules_for("ptrace") == ALLOW
    assert policy(kernel=(4, 4)).rules_for("ptrace") == EPERM
    assert P.kernel_version("6.18.44-fc-v1300") == (6, 18) and P.kernel_version("garbage") == (0, 0)
    entry = {"names": ["x"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.6"}}
    assert P.applies(entry, frozenset(), "x86_64", (5, 4)) and not P.applies(entry, frozenset(), "x86_64", (5, 6))


def test_the_profile_refuses_what_default_denied_names() -> None:
    """Every name in anyns.DEFAULT_DENIED is refused with the default capabilities (none is allowed by
    the profile), among them io_uring; ptrace is allowed, as in Docker's profile on Linux >= 4.8."""
    rules = policy()
    for name in sorted(anyns.DEFAULT_DENIED):
        assert rules.rules_for(name) == EPERM, name
    assert {"io_uring_setup", "io_uring_enter", "io_uring_register"} <= anyns.DEFAULT_DENIED
    assert rules.rules_for("ptrace") == ALLOW and rules.rules_for("getpid") == ALLOW


def test_the_seccomp_spec_adjusts_the_profile() -> None:
    """deny refuses (with errno) whatever the profile says; allow allows what it refuses; errno is what
    every refusal says; a rule answering what the default answers (ENOSYS) is left out."""
    rules = policy(deny={"getpid", "mount"}, allow={"io_uring_setup"}, err=errno.EACCES)
    assert rules.rules_for("getpid") == ((P.ACT_ERRNO | errno.EACCES, ()),)
    assert rules.rules_for("kexec_load") == ((P.ACT_ERRNO | errno.EACCES, ()),)
    assert rules.rules_for("io_uring_setup") == ALLOW
    enosys = policy(deny={"getpid"}, err=errno.ENOSYS)
    assert enosys.rules_for("getpid") == enosys.rules_for("kexec_load") == ()
    assert policy(deny={"ioctl"}).rules_for("ioctl") == EPERM
    assert verdict(policy(allow={"ioctl"}).rules_for("ioctl"), {1: P.TIOCSTI}) == P.ACT_ERRNO | errno.EPERM
    with pytest.raises(anyns.SpecError, match="both allowed and denied: bpf"):
        anyns.Seccomp(deny={"bpf", "kcmp"}, allow={"bpf"})
    with pytest.raises(anyns.SpecError, match=r"seccomp\.allow"):
        anyns.Seccomp(allow="bpf")
    with pytest.raises(anyns.SpecError, match=r"seccomp\.deny"):
        anyns.Seccomp(deny=5)  # type: ignore[arg-type]
    custom = anyns.Seccomp(deny=anyns.DEFAULT_DENIED | {"ptrace"})
    assert custom.deny == anyns.DEFAULT_DENIED | {"ptrace"} and custom.allow == frozenset()
    assert anyns.DEFAULT_SECCOMP == anyns.Seccomp() == anyns.Seccomp(frozenset(), 1, allow=())


def test_unsupported_profile_entries_are_errors() -> None:
    """An action or comparison the interpreter does not know is a ValueError, not a silent allow."""
    with pytest.raises(ValueError, match="SCMP_ACT_NOTIFY"):
        P.entry_action({"action": "SCMP_ACT_NOTIFY"}, 1)
    with pytest.raises(ValueError, match="SCMP_CMP_FUZZY"):
        P.entry_rules({"args": [{"index": 0, "value": 1, "op": "SCMP_CMP_FUZZY"}]}, P.ACT_ALLOW)
    same_index = {"args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"} for v in (1, 2)]}  # either holds
    assert P.entry_rules(same_index, P.ACT_ALLOW) == [(P.ACT_ALLOW, ((0, P.CMP_EQ, 1, 0),)),
                                                      (P.ACT_ALLOW, ((0, P.CMP_EQ, 2, 0),))]


# --------------------------------------------------------------------------- 32-bit arguments as cubes


def _cover_is_exact(cubes: list[tuple[int, int]], excluded: set[int]) -> None:
    """``cubes`` (masks within 32 bits) hold exactly the 32-bit values outside ``excluded``: pairwise
    disjoint, no excluded value in any, and their sizes add up to 2**32 - len(excluded)."""
    assert all(mask <= U32 and value & ~mask == 0 for mask, value in cubes)
    for i, (m1, v1) in enumerate(cubes):
        for m2, v2 in cubes[i + 1:]:
            assert (m1 & m2) & (v1 ^ v2), "cubes overlap"
    assert not any(P.holds(cubes, x) for x in excluded)
    assert sum(1 << (32 - bin(mask).count("1")) for mask, _ in cubes) == (1 << 32) - len(excluded)


def test_the_ioctl_rules_cover_every_request_but_tiocsti_and_tioclinux() -> None:
    """ioctl is allowed by masked comparisons of the low 32 bits of its request (the kernel's unsigned
    int): together exactly every value but TIOCSTI and TIOCLINUX, which are refused explicitly. No
    unconditional allow (libseccomp would drop the rest beside it)."""
    rules = policy().rules_for("ioctl")
    assert ALLOW[0] not in rules
    allowed = [(a, v) for action, ((arg, op, a, v),) in rules if action == P.ACT_ALLOW]
    refused = [(a, v) for action, ((arg, op, a, v),) in rules if action != P.ACT_ALLOW]
    assert {(arg, op) for _action, ((arg, op, _a, _v),) in rules} == {(1, P.CMP_MASKED_EQ)}
    _cover_is_exact(allowed, {P.TIOCSTI, P.TIOCLINUX})
    assert refused == [(U32, P.TIOCSTI), (U32, P.TIOCLINUX)]
    assert len(rules) == 36


@given(st.integers(0, (1 << 64) - 1))
def test_an_ioctl_request_is_judged_by_its_low_32_bits(request: int) -> None:
    """High bits change nothing: TIOCSTI | 1 << 32 is TIOCSTI to the kernel, and refused."""
    rules = policy().rules_for("ioctl")
    for value in (request, (request & ~U32) | P.TIOCSTI, (request & ~U32) | P.TIOCLINUX):
        refused = value & U32 in (P.TIOCSTI, P.TIOCLINUX)
        assert verdict(rules, {1: value}) == (P.ACT_ERRNO | errno.EPERM if refused else P.ACT_ALLOW)


def test_socket_families_af_alg_and_af_vsock_are_refused_on_their_low_32_bits() -> None:
    """socket(): every family but AF_ALG (38) and AF_VSOCK (40) is allowed; the family is an int, so it
    is compared on its low 32 bits (a 64-bit "> 40" would pass AF_VSOCK | 1 << 32); both refused EPERM."""
    rules = policy().rules_for("socket")
    allowed = [(a, v) for action, ((_arg, _op, a, v),) in rules if action == P.ACT_ALLOW]
    _cover_is_exact(allowed, {38, 40})
    for family in (38, 40, 40 | 1 << 32, 38 | 0xFFFFFFFF << 32):
        assert verdict(rules, {0: family}) == P.ACT_ERRNO | errno.EPERM, hex(family)
    for family in (1, 2, 10, 16, 17, 39, 41, 45, -1 & ((1 << 64) - 1)):
        assert verdict(rules, {0: family}) == P.ACT_ALLOW, family


def test_personality_allows_the_profiles_values_only() -> None:
    """personality: the five personas of the profile; the rest (too many comparisons to spell out as
    EPERM) falls to the filter's default, ENOSYS."""
    rules = policy().rules_for("personality")
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert verdict(rules, {0: persona}) == P.ACT_ALLOW
    assert verdict(rules, {0: 0x0040000}) is None


@given(st.integers(0, U32), st.integers(0, U32), st.integers(0, U32))
def test_range_cubes_and_complement(low: int, high: int, x: int) -> None:
    """range_cubes holds exactly [low, high]; complement holds exactly what the cubes do not."""
    low, high = min(low, high), max(low, high)
    cubes = P.range_cubes(low, high, 32)
    assert P.holds(cubes, x) == (low <= x <= high)
    assert P.holds(cubes, low) and P.holds(cubes, high)
    rest = P.complement(cubes, 32)
    assert P.holds(rest, x) != P.holds(cubes, x)


@given(st.sampled_from([P.CMP_NE, P.CMP_LT, P.CMP_LE, P.CMP_EQ, P.CMP_GE, P.CMP_GT, P.CMP_MASKED_EQ]),
       st.integers(0, U32), st.integers(0, U32), st.integers(0, U32))
def test_condition_cubes_match_the_comparison(op: int, a: int, b: int, x: int) -> None:
    ops = {P.CMP_NE: x != a, P.CMP_LT: x < a, P.CMP_LE: x <= a, P.CMP_EQ: x == a, P.CMP_GE: x >= a,
           P.CMP_GT: x > a, P.CMP_MASKED_EQ: x & a == b & a}
    assert P.holds(P.condition_cubes(op, a, b, 32), x) == ops[op]


# --------------------------------------------------------------------------- the compiled BPF


def run_bpf(bpf: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """Run a classic BPF seccomp program on ``struct seccomp_data`` {nr, arch, ip, args[6]} (little-endian)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * 6)[:6])
    prog = [struct.unpack_from("<HBBI", bpf, i) for i in range(0, len(bpf), 8)]
    a = x = pc = 0
    mem = [0] * 16
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        cls = code & 0x07
        if code == 0x20:  # ld [k]
            a = struct.unpack_from("<I", data, k)[0]
        elif code == 0x00:  # ld #k
            a = k
        elif code == 0x01:  # ldx #k
            x = k
        elif code == 0x60:  # ld M[k]
            a = mem[k]
        elif code == 0x61:  # ldx M[k]
            x = mem[k]
        elif code == 0x02:  # st M[k]
            mem[k] = a
        elif code == 0x03:  # stx M[k]
            mem[k] = x
        elif cls == 0x04:  # alu
            operand = x if code & 0x08 else k
            alu = {0x00: int.__add__, 0x10: int.__sub__, 0x20: int.__mul__, 0x40: int.__or__, 0x50: int.__and__,
                   0x60: lambda a, n: a << (n & 31), 0x70: int.__rshift__, 0xA0: int.__xor__}
            a = alu[code & 0xF0](a, operand) & U32
        elif code == 0x05:  # ja
            pc += k
        elif cls == 0x05:  # conditional jumps
            operand = x if code & 0x08 else k
            taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand, 0x40: bool(a & operand)}[code & 0xF0]
            pc += jt if taken else jf
        elif code == 0x06:  # ret #k
            return k
        elif code == 0x16:  # ret a
            return a
        else:
            raise AssertionError(f"instruction {code:#x} not interpreted")


AUDIT_ARCH_X86_64, AUDIT_ARCH_I386 = 0xC000003E, 0x40000003
ALLOWED, REFUSED, UNKNOWN = P.ACT_ALLOW, P.ACT_ERRNO | errno.EPERM, P.ACT_ERRNO | errno.ENOSYS
#: x86_64 numbers
GETPID, IOCTL, SOCKET, CLONE, CLONE3, MOUNT, KEXEC_LOAD, BPF, KCMP = 39, 16, 41, 56, 435, 165, 246, 321, 312
IO_URING_SETUP, USERFAULTFD, PERSONALITY = 425, 323, 135


@pytest.fixture(scope="module")
def compiled() -> dict[str, bytes]:
    from anyns._security import seccomp_bpf
    from anyns._sys import _seccomp

    if platform.machine() != "x86_64":
        pytest.skip("the syscall numbers here are x86_64's")
    try:
        return {"default": seccomp_bpf(DEFAULT_CAPABILITIES), "all": seccomp_bpf(ALL_CAPABILITIES),
                "plain": seccomp_bpf(DEFAULT_CAPABILITIES, optimize=False),
                "enosys": seccomp_bpf(DEFAULT_CAPABILITIES, deny={"getpid"}, err=errno.ENOSYS)}
    except _seccomp.Unavailable as e:
        pytest.skip(str(e))


def test_the_filter_allows_the_profile_refuses_the_rest_and_knows_nothing_of_the_unknown(
        compiled: dict[str, bytes]) -> None:
    """ENOSYS is the default (an unknown number, 1000); every known syscall not allowed says EPERM
    (kexec_load, bpf, userfaultfd, io_uring_setup, kcmp, mount); the profile's syscalls run."""
    for bpf in (compiled["default"], compiled["plain"]):
        assert run_bpf(bpf, GETPID, AUDIT_ARCH_X86_64) == ALLOWED
        assert run_bpf(bpf, 1000, AUDIT_ARCH_X86_64) == UNKNOWN
        for nr in (KEXEC_LOAD, BPF, USERFAULTFD, IO_URING_SETUP, KCMP, MOUNT):
            assert run_bpf(bpf, nr, AUDIT_ARCH_X86_64) == REFUSED, nr
        assert run_bpf(bpf, CLONE3, AUDIT_ARCH_X86_64) == UNKNOWN
        assert run_bpf(bpf, PERSONALITY, AUDIT_ARCH_X86_64, (0xFFFFFFFF,)) == ALLOWED
    everything = compiled["all"]
    for nr in (MOUNT, KCMP, BPF, CLONE3):
        assert run_bpf(everything, nr, AUDIT_ARCH_X86_64) == ALLOWED, nr
    assert run_bpf(everything, IO_URING_SETUP, AUDIT_ARCH_X86_64) == REFUSED
    assert run_bpf(everything, CLONE, AUDIT_ARCH_X86_64, (0x10000000 | 17,)) == ALLOWED


def test_the_filter_judges_arguments_on_the_bits_the_kernel_reads(compiled: dict[str, bytes]) -> None:
    """ioctl TIOCSTI/TIOCLINUX refused, also with high bits set; other requests (also sign-extended, as
    musl passes them) allowed. socket AF_VSOCK/AF_ALG refused, also with high bits; clone with a namespace
    flag refused."""
    bpf = compiled["default"]
    for request in (P.TIOCSTI, P.TIOCLINUX, P.TIOCSTI | 1 << 32, P.TIOCLINUX | 0xFFFFFFFF << 32):
        assert run_bpf(bpf, IOCTL, AUDIT_ARCH_X86_64, (0, request)) == REFUSED, hex(request)
    for request in (0x5401, 0x5413, 0x541B, 0x5421, 0x80045430, 0xFFFFFFFF80045430, 0xC0185879):
        assert run_bpf(bpf, IOCTL, AUDIT_ARCH_X86_64, (0, request)) == ALLOWED, hex(request)
    for family in (40, 38, 40 | 1 << 32):
        assert run_bpf(bpf, SOCKET, AUDIT_ARCH_X86_64, (family, 1, 0)) == REFUSED, hex(family)
    for family in (1, 2, 10, 16, 17, 39, 41):
        assert run_bpf(bpf, SOCKET, AUDIT_ARCH_X86_64, (family, 1, 0)) == ALLOWED, family
    assert run_bpf(bpf, CLONE, AUDIT_ARCH_X86_64, (0x01200011,)) == ALLOWED  # fork()
    assert run_bpf(bpf, CLONE, AUDIT_ARCH_X86_64, (0x10000000 | 17,)) == REFUSED  # CLONE_NEWUSER


def test_the_filter_covers_i386_and_x32(compiled: dict[str, bytes]) -> None:
    """i386 calls go by the i386 table (getpid 20 runs, keyctl 288 refused, 1000 unknown); x32 calls
    (nr | 0x40000000 under the x86_64 arch) by the x32 one where the kernel runs x32, else they are
    killed for their architecture; another architecture is killed."""
    bpf = compiled["default"]
    assert run_bpf(bpf, 20, AUDIT_ARCH_I386) == ALLOWED
    assert run_bpf(bpf, 288, AUDIT_ARCH_I386) == REFUSED
    assert run_bpf(bpf, 1000, AUDIT_ARCH_I386) == UNKNOWN
    if _seccomp.kernel_runs("x32"):
        assert run_bpf(bpf, 0x40000000 | GETPID, AUDIT_ARCH_X86_64) == ALLOWED
        assert run_bpf(bpf, 0x40000000 | 528, AUDIT_ARCH_X86_64) == REFUSED  # x32's kexec_load
        assert run_bpf(bpf, 0x40000000 | BPF, AUDIT_ARCH_X86_64) == REFUSED
    else:  # a kernel without x32 (ENOSYS for every x32 call): not in the filter, refused for its architecture
        for nr in (GETPID, 528, BPF):
            assert run_bpf(bpf, 0x40000000 | nr, AUDIT_ARCH_X86_64) in (0, 0x80000000)
    assert run_bpf(bpf, GETPID, 0xC00000B7) in (0, 0x80000000)  # aarch64: SCMP_ACT_KILL*


def test_rules_answering_the_default_are_left_out(compiled: dict[str, bytes]) -> None:
    """errno=ENOSYS: the refusals are the default's answer; libseccomp would refuse such rules (EACCES)."""
    bpf = compiled["enosys"]
    assert run_bpf(bpf, GETPID, AUDIT_ARCH_X86_64) == UNKNOWN
    assert run_bpf(bpf, KEXEC_LOAD, AUDIT_ARCH_X86_64) == UNKNOWN
    assert len(bpf) < len(compiled["default"])


def test_the_filter_is_a_binary_tree_within_the_kernels_limit(compiled: dict[str, bytes]) -> None:
    """Under BPF_MAXINSNS (4096) whatever the capabilities; the binary tree is what libseccomp >= 2.5
    builds when asked (a few more instructions than the list, far fewer walked)."""
    sizes = {name: len(bpf) // 8 for name, bpf in compiled.items()}
    assert max(sizes.values()) < 4096, sizes
    assert sizes["default"] != sizes["plain"]
