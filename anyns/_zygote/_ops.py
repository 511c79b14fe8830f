"""The op table, and the encoder that turns a wire plan into the native core's op list.

A plan arrives from the supervisor as a list of ``(step, call, path, args)``
ops (``_plan.py`` decides them and their order). Here, once per plan, they
become the flat, typed list ``_native/spawn.c`` runs: one ``struct op`` per
op (its ``enum op_code`` value, what a failure names, and the arguments by
kind), then a pool of strings, string vectors and byte blobs. Pointers are
offsets from the plan's start; ``anyns_plan_link`` turns them into
addresses once the buffer is where it stays.

``OPS`` lists each op once: its name on the wire, the syscall a failure
names when the C code knows no more exact one, and how its arguments map
onto the struct's fields. Its order is the C enum's: keep them in step.
"""

from __future__ import annotations

import os
import struct

from .. import _init

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Final

#: argument kinds, one letter each, in the order the wire op gives them:
#: ``s`` a string (or None) into the next ``s`` slot, ``n`` an integer into the next ``n`` slot,
#: ``v`` a list of strings into the next ``v`` slot, ``x`` bytes as hex into ``data``,
#: ``g`` a list of group ids into ``data`` (u32 each), ``m`` a list of small integers as a bit mask into ``n``
OPS: tuple[tuple[str, str, str], ...] = (
    ("unshare", "unshare", "n"),
    ("enter_time_namespace", "setns", ""),
    ("setns", "setns", "nn"),
    ("send_namespaces", "sendmsg", "v"),
    ("send_root", "sendmsg", ""),
    ("check_alive", "poll", "n"),
    ("not_dumpable", "prctl", ""),
    ("wait_go", "read", "n"),
    ("cgroup_enter", "write", "n"),
    ("mask_paths", "mount", "vv"),
    ("setsid", "setsid", ""),
    ("drop_bounding", "prctl", "m"),
    ("seccomp_bpf", "prctl", "x"),
    ("capset", "capset", "n"),
    ("no_new_privs", "prctl", ""),
    ("hold_path", "open", "snn"),
    ("become_root", "setresuid", ""),
    ("set_user", "setresuid", "nng"),
    ("bind_device", "mount", "ss"),
    ("setdomainname", "setdomainname", "s"),
    ("mount", "mount", "sssns"),
    ("attach_skeleton", "move_mount", "s"),
    ("mkpath", "mkdir", "ssn"),
    ("mountpoint", "mkdir", "sss"),
    ("bind_root", "open_tree", "ssn"),
    ("root_anchor", "open", "s"),
    ("bind_at", "open_tree", "ssnnnn"),
    ("mount_at", "mount", "sssns"),
    ("fsmount_at", "fsmount", "ssvn"),
    ("bind_anchor", "open_tree", "ss"),
    ("mkdir_at", "mkdir", "s"),
    ("symlink_at", "symlink", "ss"),
    ("files_tmpfs", "fsmount", "z"),
    ("write_file_in", "open", "sxn"),
    ("write_file_at", "open", "sxn"),
    ("write_file_under", "open", "ssxn"),
    ("attach_file", "move_mount", "s"),
    ("root_readonly", "mount_setattr", "n"),
    ("chdir_root", "fchdir", ""),
    ("makedirs", "mkdir", "s"),
    ("stat", "stat", "s"),
    ("open_tree", "open_tree", "sn"),
    ("attach_tree", "move_mount", "snnnn"),
    ("mount_setattr", "mount_setattr", "sn"),
    ("mkdir", "mkdir", "s"),
    ("symlink", "symlink", "ss"),
    ("chdir", "chdir", "s"),
    ("pivot_root", "pivot_root", "ss"),
    ("umount2", "umount2", "sn"),
    ("sethostname", "sethostname", "s"),
    ("interface_up", "ioctl", "s"),
    ("umask", "umask", "n"),
    ("setrlimit", "setrlimit", "nnn"),
    ("stdio", "dup2", ""),
    ("tty", "openpty", "nn"),
    ("close_fds", "close_range", ""),
    ("signals", "sigaction", ""),
    ("pdeathsig", "prctl", ""),
    ("exec_init", "execve", "i"),
    ("execve", "execve", "vvv"),
)
#: wire name -> (enum value, syscall named by default, argument kinds)
CODES: dict[str, tuple[int, str, str]] = {name: (i, call, kinds) for i, (name, call, kinds) in enumerate(OPS)}
#: the init's modes, by the exec step's call (init.c: FLAG_FORK 1, FLAG_SUBREAPER 2, FLAG_HOLD 4)
INIT_MODES: Final = _init.MODES

MAGIC = b"ANYNSOPS"
VERSION = 1
#: magic, version, number of ops, total size, vector slots the child may need, linked address (0)
_HEADER = struct.Struct("=8sIIQQQ")
#: code, reserved, step, call, path, n[6], s[4], v[3], data, ndata
_OP = struct.Struct("=II3Q6Q4Q3QQQ")
HEADER_SIZE = _HEADER.size
OP_SIZE = _OP.size
_U64 = (1 << 64) - 1
_N, _S, _V = 6, 4, 3


def _bytes(value: Any) -> bytes:
    return os.fsencode(value) if isinstance(value, str) else bytes(value)


class _Pool:
    """The strings, vectors and blobs after the ops; offsets count from the plan's start."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.chunks: list[bytes] = []
        self.size = 0
        self.strings: dict[bytes, int] = {}

    def _add(self, data: bytes, align: int = 1) -> int:
        pad = -(self.start + self.size) % align
        if pad:
            self.chunks.append(b"\0" * pad)
            self.size += pad
        offset = self.start + self.size
        self.chunks.append(data)
        self.size += len(data)
        return offset

    def string(self, value: Any) -> int:
        if value is None:
            return 0
        data = _bytes(value)
        if b"\0" in data:
            raise ValueError(f"a string argument holds a NUL byte: {data!r}")
        offset = self.strings.get(data)
        if offset is None:
            offset = self.strings[data] = self._add(data + b"\0")
        return offset

    def vector(self, values: Sequence[Any]) -> int:
        offsets = [self.string(v) for v in values]
        if any(o == 0 for o in offsets):
            raise ValueError("a string vector holds None")
        return self._add(struct.pack(f"={len(offsets) + 1}Q", *offsets, 0), 8)

    def blob(self, data: bytes) -> int:
        return self._add(data, 8) if data else 0


def encode(ops: Sequence[Sequence[Any]]) -> bytes:
    """The native op list of wire ops ``ops`` (``(step, call, path, args)`` each).

    Raises:
        ValueError: an unknown op, or arguments that do not fit its kinds.
    """
    pool = _Pool(HEADER_SIZE + OP_SIZE * len(ops))
    records = []
    stack_words = 0
    for op in ops:
        step, call, path, args = op
        known = CODES.get(call)
        if known is None and call in INIT_MODES:
            known = CODES["exec_init"]
        if known is None:
            raise ValueError(f"unknown child operation {call!r}")
        code, syscall, kinds = known
        n: list[int] = []
        s: list[int] = []
        v: list[int] = []
        data = b""
        args = list(args)
        if kinds == "i":  # the init: status pipe index, mode, [candidates, argv, env] and their counts
            status, candidates, argv, env = args
            vector = [*candidates, *argv, *env]
            n = [int(status), INIT_MODES[call], len(candidates), len(argv)]
            v = [pool.vector(vector)]
            stack_words = max(stack_words, len(vector) + 2)
        elif kinds == "z":  # files_tmpfs(size): the tmpfs's options
            v = [pool.vector(("source=tmpfs", "mode=0755", f"size={int(args[0])}"))]
        else:
            if len(args) != len(kinds):
                raise ValueError(f"{call} takes {len(kinds)} arguments, got {len(args)}")
            for kind, value in zip(kinds, args, strict=True):
                if kind == "n":
                    n.append(int(value))
                elif kind == "s":
                    s.append(pool.string(value))
                elif kind == "v":
                    v.append(pool.vector(value))
                elif kind == "x":
                    data = bytes.fromhex(value)
                elif kind == "g":
                    data = struct.pack(f"={len(value)}I", *(int(g) for g in value))
                elif kind == "m":
                    mask = 0
                    for bit in value:
                        if not 0 <= int(bit) < 64:
                            raise ValueError(f"{call}: {bit} is not a capability number")
                        mask |= 1 << int(bit)
                    n.append(mask)
        if len(n) > _N or len(s) > _S or len(v) > _V:
            raise ValueError(f"{call}: too many arguments")
        blob = pool.blob(data)
        records.append(_OP.pack(
            code, 0, pool.string(step), pool.string(syscall), pool.string(path),
            *(x & _U64 for x in (*n, *[0] * (_N - len(n)))), *s, *[0] * (_S - len(s)),
            *v, *[0] * (_V - len(v)), blob, len(data),
        ))
    body = b"".join(records) + b"".join(pool.chunks)
    size = HEADER_SIZE + len(body)
    return _HEADER.pack(MAGIC, VERSION, len(ops), size, stack_words, 0) + body


#: the one wire op whose path is a string the plan leaves in place for the zygote (``attach_skeleton``)
SKELETON_CALL = "attach_skeleton"


def needs_own_memory(flags: int, ops: Sequence[Sequence[Any]], dumpable: bool, entered: int = 0) -> bool:
    """Whether a plan's child must have an address space of its own (an ordinary clone, not CLONE_VM).

    * a dumpable child (rootless: the supervisor writes its id maps): being
      dumpable is a property of the memory, which the zygote (never dumpable
      for longer than the clone) would share;
    * a new user namespace, by clone or by setns: the kernel refuses
      ``unshare(CLONE_NEWUSER)`` to a process whose memory another process
      shares, and a process of another user namespace must not share the
      zygote's memory;
    * a time namespace: ``setns`` into one (``enter_time_namespace`` too)
      is EUSERS for such a process (``timens_install``: ``current_is_single_threaded``);
    * a pid namespace the zygote enters for the clone (``entered``: the
      plan's ``enter`` flags; ``Container.exec``, ``Join(pid=...)``): the
      child is born among a running container's processes, and one that
      holds CAP_SYS_PTRACE may open its ``/proc/PID/mem`` while it sets up.
      Sharing the zygote's memory, that would be a write into the zygote
      (host root); a copy of it is at worst read, as before the native core.
    """
    if dumpable or flags & _OWN_MEMORY or entered & _CLONE_NEWPID:
        return True
    for _step, call, _path, args in ops:
        if call == "setns" and int(args[1]) & _OWN_MEMORY:
            return True
        if call in ("unshare", "enter_time_namespace") and (not args or int(args[0]) & _OWN_MEMORY):
            return True
    return False


_CLONE_NEWUSER = 0x10000000
_CLONE_NEWTIME = 0x00000080
_CLONE_NEWPID = 0x20000000
#: namespaces a process whose memory is shared may not enter or make
_OWN_MEMORY = _CLONE_NEWUSER | _CLONE_NEWTIME


def decode(encoded: bytes) -> list[dict[str, Any]]:
    """The ops of an encoded (not yet linked) plan, field by field: for tests and for reading a plan."""
    magic, version, nops, size, _words, _linked = _HEADER.unpack_from(encoded)
    if magic != MAGIC or version != VERSION or size != len(encoded):
        raise ValueError("not an encoded op list of this version")

    def string(offset: int) -> bytes | None:
        return None if offset == 0 else encoded[offset:encoded.index(b"\0", offset)]

    def vector(offset: int) -> list[bytes | None] | None:
        if offset == 0:
            return None
        items: list[bytes | None] = []
        while True:
            (item,) = struct.unpack_from("=Q", encoded, offset)
            if item == 0:
                return items
            items.append(string(item))
            offset += 8

    ops = []
    for i in range(nops):
        fields = _OP.unpack_from(encoded, HEADER_SIZE + i * OP_SIZE)
        code, _reserved, step, call, path = fields[:5]
        n, s, v = fields[5:11], fields[11:15], fields[15:18]
        data, ndata = fields[18:20]
        ops.append({"op": OPS[code][0], "step": string(step), "call": string(call), "path": string(path),
                    "n": list(n), "s": [string(o) for o in s], "v": [vector(o) for o in v],
                    "data": encoded[data:data + ndata] if data else b""})
    return ops
