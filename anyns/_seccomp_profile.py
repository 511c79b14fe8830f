"""Docker's default seccomp profile, read for one container: the rules of its filter.

The profile is moby's ``default.json`` (``profiles/seccomp/default.json`` in
moby, since 2025 its own module, github.com/moby/profiles
``seccomp/default.json``), kept verbatim in ``_data/seccomp_default.json``;
``_data/seccomp_default.commit`` says which commit it is, and
``_data/update_seccomp_profile.py`` fetches a newer one. It is an allow-list:
what it does not list fails.

``policy()`` reads it the way moby does for a container: a rule counts when
its ``includes`` hold and its ``excludes`` do not, for the container's
capabilities (its bounding set), the native architecture and the running
kernel (``minKernel``). Then, for each syscall it names:

* an unconditional allow wins over conditional rules for the same syscall
  (keeping CAP_SYS_ADMIN allows every ``clone``; without it only ``clone``
  without namespace flags is, and ``clone3`` answers ENOSYS so libc falls
  back to ``clone``);
* a syscall with conditional rules only (``socket`` families, ``clone``
  flags, ``personality``) gets them, and the refused rest of its argument
  space gets explicit ``errno`` rules where that takes a few comparisons
  (``socket(AF_ALG)``, ``socket(AF_VSOCK)``, ``clone`` with namespace flags);
  otherwise (``personality``) the rest falls to the filter's default;
* an argument the kernel reads as a 32-bit ``int`` (``_INT_ARGUMENTS``) is
  compared on its low 32 bits only, as masked comparisons: a 64-bit
  "greater than 40" would let ``socket(AF_VSOCK | 1 << 32, …)`` through.

Then the container's ``Seccomp`` adjusts it: ``deny`` refuses (with
``errno``), ``allow`` allows. ``ioctl`` is allowed for every request but
TIOCSTI and TIOCLINUX (``_REFUSED_VALUES``), through masked comparisons that
cover every other 32-bit request value: an unconditional allow beside them
would win (libseccomp drops conditional rules next to it), and a 64-bit "not
equal" would let ``TIOCSTI | 1 << 32`` through.

What the filter does with a syscall nobody named (``Policy.rules_for``):
``refused`` (``errno``) when libseccomp knows it, ENOSYS otherwise, so a
syscall newer than the profile fails the way old libcs expect.

Pure: no libseccomp (``_security.seccomp_bpf`` compiles a ``Policy`` with it)
and nothing the zygote loads.
"""

from __future__ import annotations

import errno as _errno
import functools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

#: libseccomp's actions (seccomp.h); SCMP_ACT_ERRNO(e) is ``ACT_ERRNO | e``
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000
#: libseccomp's comparison operators (enum scmp_compare)
CMP_NE, CMP_LT, CMP_LE, CMP_EQ, CMP_GE, CMP_GT, CMP_MASKED_EQ = range(1, 8)

_ACTIONS = {
    "SCMP_ACT_ALLOW": ACT_ALLOW, "SCMP_ACT_ERRNO": ACT_ERRNO, "SCMP_ACT_KILL": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD, "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS, "SCMP_ACT_TRAP": ACT_TRAP,
    "SCMP_ACT_LOG": ACT_LOG,
}
_OPS = {"SCMP_CMP_NE": CMP_NE, "SCMP_CMP_LT": CMP_LT, "SCMP_CMP_LE": CMP_LE, "SCMP_CMP_EQ": CMP_EQ,
        "SCMP_CMP_GE": CMP_GE, "SCMP_CMP_GT": CMP_GT, "SCMP_CMP_MASKED_EQ": CMP_MASKED_EQ}

#: libseccomp's architecture names → the ones a profile's ``arches`` use (moby's goToNative)
DOCKER_ARCHES = {
    "x86_64": "amd64", "x86": "x86", "x32": "x32", "aarch64": "arm64", "arm": "arm", "s390x": "s390x",
    "s390": "s390", "ppc64le": "ppc64le", "ppc64": "ppc64", "ppc": "ppc", "riscv64": "riscv64",
    "mips": "mips", "mipsel": "mipsle", "mips64": "mips64", "mips64n32": "mips64n32", "mipsel64": "mipsel64",
    "mipsel64n32": "mips3l64n32", "loongarch64": "loongarch64",
}

#: arguments the kernel declares ``int``/``unsigned int``: it drops the high 32 bits of the register
_INT_ARGUMENTS = {"socket": frozenset({0}), "personality": frozenset({0}), "ioctl": frozenset({1})}
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
#: argument values refused even where the profile allows the syscall: typing into a terminal, and the
#: console's TIOCLINUX (TIOCL_SETSEL / TIOCL_PASTESEL pastes into it)
_REFUSED_VALUES = {"ioctl": (1, (TIOCSTI, TIOCLINUX))}
#: how many comparisons the refused part of a conditional syscall may take before it is left to the default
_MAX_REFUSED_COMPARISONS = 16

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF

#: a libseccomp argument comparison: (argument index, operator, datum_a, datum_b)
Condition = tuple[int, int, int, int]
#: a rule of the filter: an action, and the conditions that must all hold
Rule = tuple[int, tuple[Condition, ...]]

PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data", "seccomp_default.json")


@functools.cache
def load(path: str = PROFILE) -> Mapping[str, Any]:
    """The profile, parsed once per process."""
    with open(path, "rb") as f:
        profile: dict[str, Any] = json.load(f)
    return profile


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of ``release`` (default: this kernel's), as moby's minKernel compares them."""
    numbers = (release or os.uname().release).split("-")[0].split(".")
    try:
        return int(numbers[0]), int(numbers[1])
    except (IndexError, ValueError):
        return (0, 0)


def _kernel_at_least(minimum: str, kernel: tuple[int, int]) -> bool:
    return kernel >= kernel_version(minimum)


def applies(entry: Mapping[str, Any], capabilities: frozenset[str], native: str, kernel: tuple[int, int]) -> bool:
    """Whether a profile entry counts here: moby's ``includes``/``excludes`` of caps, arches and minKernel.

    ``includes`` needs every listed capability, the native architecture
    among its ``arches``, a kernel at least ``minKernel``; ``excludes``
    drops the entry if any listed capability is kept, the native
    architecture is listed, or the kernel is at least ``minKernel``.
    """
    arch = DOCKER_ARCHES.get(native, native)
    excludes = entry.get("excludes") or {}
    if arch in (excludes.get("arches") or ()):
        return False
    if any(cap in capabilities for cap in excludes.get("caps") or ()):
        return False
    if excludes.get("minKernel") and _kernel_at_least(excludes["minKernel"], kernel):
        return False
    includes = entry.get("includes") or {}
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if not all(cap in capabilities for cap in includes.get("caps") or ()):
        return False
    return not (includes.get("minKernel") and not _kernel_at_least(includes["minKernel"], kernel))


def entry_action(entry: Mapping[str, Any], default_errno: int) -> int:
    """The libseccomp action of a profile entry (SCMP_ACT_ERRNO takes ``errnoRet``, else ``default_errno``)."""
    try:
        action = _ACTIONS[entry["action"]]
    except KeyError:
        raise ValueError(f"seccomp profile: unsupported action {entry.get('action')!r}") from None
    if action == ACT_ERRNO:
        return ACT_ERRNO | ((entry.get("errnoRet") or default_errno) & 0xFFFF)
    return action


def entry_rules(entry: Mapping[str, Any], action: int) -> list[Rule]:
    """The rules of one entry: its ``args`` all hold (one rule), or, when an index repeats, any one of
    them (a rule each: libseccomp takes one comparison per argument, and runc does the same)."""
    conditions = tuple(
        (int(a["index"]), _op(a["op"]), int(a["value"]) & _U64, int(a.get("valueTwo") or 0) & _U64)
        for a in entry.get("args") or ())
    if len({c[0] for c in conditions}) == len(conditions):
        return [(action, conditions)]
    return [(action, (c,)) for c in conditions]


def _op(name: str) -> int:
    try:
        return _OPS[name]
    except KeyError:
        raise ValueError(f"seccomp profile: unsupported comparison {name!r}") from None


# --------------------------------------------------------------------------- argument sets as cubes
#
# A cube (mask, value) is the set {x : x & mask == value}: one SCMP_CMP_MASKED_EQ comparison.


def range_cubes(low: int, high: int, width: int) -> list[tuple[int, int]]:
    """[low, high] of ``width``-bit values as aligned blocks, largest first: the usual prefix split."""
    full = (1 << width) - 1
    cubes = []
    while low <= high:
        size = low & -low if low else 1 << width
        while size > high - low + 1:
            size >>= 1
        cubes.append((full & ~(size - 1), low))
        low += size
    return cubes


def condition_cubes(op: int, a: int, b: int, width: int) -> list[tuple[int, int]]:
    """The values of a ``width``-bit argument for which comparison ``op`` holds, as cubes."""
    full = (1 << width) - 1
    if op == CMP_MASKED_EQ:
        return [(a & full, b & a & full)]
    a &= full
    ranges = {CMP_EQ: [(a, a)], CMP_NE: [(0, a - 1), (a + 1, full)], CMP_LT: [(0, a - 1)], CMP_LE: [(0, a)],
              CMP_GT: [(a + 1, full)], CMP_GE: [(a, full)]}[op]
    return [cube for low, high in ranges if low <= high for cube in range_cubes(low, high, width)]


def _without(cube: tuple[int, int], cut: tuple[int, int], width: int) -> list[tuple[int, int]]:
    """``cube`` minus ``cut``, as disjoint cubes (highest bit first)."""
    mask, value = cube
    cut_mask, cut_value = cut
    if (mask & cut_mask) & (value ^ cut_value):
        return [cube]  # disjoint
    pieces = []
    for bit in reversed(range(width)):
        flag = 1 << bit
        if cut_mask & flag and not mask & flag:
            pieces.append((mask | flag, value | (~cut_value & flag)))
            mask, value = mask | flag, value | (cut_value & flag)
    return pieces


def complement(cubes: Iterable[tuple[int, int]], width: int) -> list[tuple[int, int]]:
    """Every ``width``-bit value no cube holds, as disjoint cubes."""
    rest = [(0, 0)]
    for cut in cubes:
        rest = [piece for cube in rest for piece in _without(cube, cut, width)]
    return rest


def holds(cubes: Iterable[tuple[int, int]], x: int) -> bool:
    return any(x & mask == value for mask, value in cubes)


# --------------------------------------------------------------------------- the policy


class Policy(NamedTuple):
    """The filter's rules: ``named`` syscalls have their own, every other syscall libseccomp knows is
    ``refused``, and the rest gets ``default`` (ENOSYS)."""

    named: Mapping[str, tuple[Rule, ...]]
    refused: int
    default: int

    def rules_for(self, name: str) -> tuple[Rule, ...]:
        """The rules to add for syscall ``name``, without those libseccomp would refuse (the default's)."""
        rules = self.named.get(name, ((self.refused, ()),))
        return tuple(rule for rule in rules if rule[0] != self.default)


def _masked(arg: int, cubes: Iterable[tuple[int, int]]) -> list[tuple[Condition, ...]]:
    return [((arg, CMP_MASKED_EQ, mask, value),) for mask, value in cubes]


def _except_values(arg: int, refused: Sequence[int], allow: int, refuse: int) -> tuple[Rule, ...]:
    """Allow every 32-bit value of argument ``arg`` but ``refused``: masked comparisons on its low 32 bits."""
    points = [(_U32, v & _U32) for v in refused]
    allowed = [(allow, c) for c in _masked(arg, complement(points, 32))]
    return (*allowed, *((refuse, c) for c in _masked(arg, points)))


def _conditional(name: str, rules: list[Rule], refuse: int) -> tuple[Rule, ...]:
    """The rules of a syscall the profile allows under conditions only, plus the refused rest of its
    argument space where that is small; arguments the kernel reads as 32-bit compare their low 32 bits."""
    ints = _INT_ARGUMENTS.get(name, frozenset())
    args = {c[0] for _action, conditions in rules for c in conditions}
    single = len(args) == 1 and all(len(conditions) == 1 for _action, conditions in rules)
    if not single:  # several arguments: as written; what no rule matches falls to the default
        return tuple(rules)
    (arg,) = args
    width = 32 if arg in ints else 64
    out: list[Rule] = []
    taken: list[tuple[int, tuple[int, int]]] = []  # (action, cube) decided by an earlier rule, which wins
    for action, ((_arg, op, a, b),) in rules:
        cubes = condition_cubes(op, a, b, width)
        mine = cubes
        for other, cut in taken:
            if other != action:
                mine = [piece for cube in mine for piece in _without(cube, cut, width)]
        taken.extend((action, cube) for cube in mine)
        if width == 64 and mine == cubes:  # untouched: the comparison as written
            out.append((action, ((arg, op, a, b),)))
        else:
            out.extend((action, c) for c in _masked(arg, mine))
    rest = complement((cube for _action, cube in taken), width)
    if len(rest) <= _MAX_REFUSED_COMPARISONS:
        out.extend((refuse, c) for c in _masked(arg, rest))
    return tuple(out)


def policy(profile: Mapping[str, Any], capabilities: Iterable[str], allow: Iterable[str] = (),
           deny: Iterable[str] = (), err: int = _errno.EPERM, *, native: str, kernel: tuple[int, int]) -> Policy:
    """The filter's rules for a container with ``capabilities`` on ``native`` (a libseccomp arch name).

    ``deny`` (refused with ``err``) and ``allow`` override the profile;
    ``err`` is also what every syscall the profile refuses fails with.
    """
    caps = frozenset(capabilities)
    refuse = ACT_ERRNO | (err & 0xFFFF)
    default_errno = int(profile.get("defaultErrnoRet") or _errno.EPERM)
    found: dict[str, list[Rule]] = {}
    for entry in profile.get("syscalls") or ():
        if not applies(entry, caps, native, kernel):
            continue
        action = entry_action(entry, default_errno)
        if action == ACT_ERRNO | default_errno:
            action = refuse  # the profile's refusal is the container's
        names = entry.get("names") or [entry["name"]]
        for name in names:
            found.setdefault(name, []).extend(entry_rules(entry, action))
    named: dict[str, tuple[Rule, ...]] = {}
    for name, rules in found.items():
        plain = [action for action, conditions in rules if not conditions]
        if plain:  # an unconditional rule wins; an allow before any other
            action = ACT_ALLOW if ACT_ALLOW in plain else plain[0]
            named[name] = ((action, ()),)
        else:
            named[name] = _conditional(name, rules, refuse)
    for name in allow:
        named[name] = ((ACT_ALLOW, ()),)
    for name, (arg, values) in _REFUSED_VALUES.items():
        if named.get(name) == ((ACT_ALLOW, ()),):
            named[name] = _except_values(arg, values, ACT_ALLOW, refuse)
    for name in deny:
        named[name] = ((refuse, ()),)
    return Policy(named, refuse, ACT_ERRNO | _errno.ENOSYS)
