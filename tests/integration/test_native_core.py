"""The native spawn core (anyns/_native/spawn.c) driven directly: every op's failure record, SIGKILL at every
stage of a real plan, and the zygote's memory over thousands of spawns.

The first two tests call ``Native().spawn`` from the test process itself (no zygote, no CLONE_PARENT): the
child is this process's own, cloned with CLONE_VM on a stack of this process's (unless
``_ops.needs_own_memory`` says otherwise), and it reports on an error pipe whose read end the test reads to
EOF. Its exit signal is 0 (``anyns_spawn`` sets it: under the zygote, CLONE_PARENT gives the container the
zygote's own), so it is a "clone" child for wait(2): it is reaped with ``__WALL``.

Nothing is mounted or written outside a new mount namespace (made private first, so that nothing
propagates to the host's peers) or ``tmp_path``; the host name is only ever set in a new UTS namespace.
"""

from __future__ import annotations

import collections
import errno
import os
import select
import signal
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from _proc import process_state, process_table

import anyns
from anyns import _host, _init, _protocol, _security, _skeleton
from anyns._errors import ExecError, SetupError
from anyns._plan import compile_plan
from anyns._sys import _consts as C
from anyns._zygote import _native, _ops

_WALL = 0x40000000  # wait for children whatever their exit signal (ours is 0)
_FLAGS = C.CLONE_CLEAR_SIGHAND  # what every spawn here passes, besides the namespaces a row needs
_EXIT_SETUP_FAILED = 127
#: read(2)'s number, as /proc/PID/syscall shows it
_SYS_READ = {"aarch64": 63, "riscv64": 63}.get(os.uname().machine, 0)
#: the first op of every row with a mount namespace: nothing it mounts may reach the host's peer groups
_PRIVATE = ("propagation", "mount", "/", (None, "/", None, C.MS_REC | C.MS_PRIVATE, None))
#: a seccomp filter of one instruction: RET ALLOW (struct sock_filter: code, jt, jf, k)
_ALLOW_ALL = struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000).hex()
_CAP_SYS_ADMIN = 21
_RLIMIT_NOFILE = 7


@pytest.fixture(scope="module")
def native() -> _native.Native:
    """The native core, loaded in this process (the same library, and the same stacks, for every test)."""
    return _native.Native()


# --------------------------------------------------------------------------- running a plan in a child of ours


@dataclass
class Outcome:
    """How a child ended: its wait status, and its failure record (None: EOF with no record, it exec'd)."""

    pid: int
    code: int  # si_code: CLD_EXITED or CLD_KILLED
    status: int  # the exit status, or the signal
    record: tuple[str, str, str | None, int, str] | None


def _read_to_eof(fd: int, pidfd: int, timeout: float = 20.0) -> bytes:
    """All a pipe gives until EOF; a child that keeps it open too long is killed (and the test fails)."""
    data = b""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | _WALL)
            pytest.fail(f"the child kept its error pipe open for {timeout} s (read so far: {data!r})")
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk


def reap(pidfd: int) -> tuple[int, int]:
    """(si_code, si_status) of our child ``pidfd``, reaped; the pidfd is closed."""
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | _WALL)
    finally:
        os.close(pidfd)
    assert result is not None
    return result.si_code, result.si_status


def run_plan(native: _native.Native, ops: Sequence[Sequence[Any]], *, flags: int = 0,
             shared_vm: bool | None = None, stdio: tuple[int, int, int] | None = None, supervisor: int | None = None,
             skeleton: int = -1, init: int = -1, extra: Sequence[int] = ()) -> Outcome:
    """Run wire ops ``ops`` in a child of this process, read its error pipe to EOF and reap it.

    ``shared_vm`` None: CLONE_VM unless ``_ops.needs_own_memory`` says the plan needs its own memory.
    ``stdio`` None: /dev/null three times; ``supervisor`` None: a pidfd of this process.
    """
    plan = native.link(_ops.encode(ops))
    if shared_vm is None:
        shared_vm = not _ops.needs_own_memory(flags, ops, False)
    opened: list[int] = []
    try:
        if stdio is None:
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            opened.append(null)
            stdio = (null, null, null)
        if supervisor is None:
            supervisor = os.pidfd_open(os.getpid())
            opened.append(supervisor)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        opened.append(read_end)
        try:
            pid, pidfd, _serial = native.spawn(plan, _FLAGS | flags, -1, shared_vm,
                                               (*stdio, write_end, supervisor, skeleton, init, *extra))
        finally:
            os.close(write_end)
        data = _read_to_eof(read_end, pidfd)
        code, status = reap(pidfd)
    finally:
        for fd in opened:
            os.close(fd)
    return Outcome(pid, code, status, _protocol.decode_failure(data) if data else None)


# --------------------------------------------------------------------------- the table: one failure per op


@dataclass
class Ctx:
    """What a row's plan refers to: paths under ``tmp`` (``{tmp}`` in a row), and fds made for it."""

    tmp: str
    fds: list[int] = field(default_factory=list)

    def fd(self, fd: int) -> int:
        self.fds.append(fd)
        return fd


def _layout(tmp: str) -> None:
    """The files every row may use: a root with a directory, a file and a link that leads out of it."""
    os.makedirs(f"{tmp}/root/exists")
    os.makedirs(f"{tmp}/outside")
    with open(f"{tmp}/root/file", "w") as f:
        f.write("x")
    os.symlink(f"{tmp}/outside", f"{tmp}/root/link")
    os.symlink(f"{tmp}/root", f"{tmp}/srclink")
    with open(f"{tmp}/file", "w") as f:
        f.write("x")
    with open(f"{tmp}/noexec", "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(f"{tmp}/noexec", 0o644)


def _dead_pidfd(ctx: Ctx) -> int:
    """A pidfd of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["/bin/true"])
    pidfd = ctx.fd(os.pidfd_open(child.pid))
    child.wait()
    return pidfd


def _go_pipe(byte: bytes) -> Callable[[Ctx], int]:
    """The read end of a pipe holding ``byte`` (the child holds a copy of the write end too: no EOF)."""
    def make(ctx: Ctx) -> int:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        ctx.fd(read_end)
        ctx.fd(write_end)
        os.write(write_end, byte)
        return read_end
    return make


def _devnull(ctx: Ctx) -> int:
    return ctx.fd(os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC))


def _read_only_file(ctx: Ctx) -> int:
    return ctx.fd(os.open(f"{ctx.tmp}/file", os.O_RDONLY | os.O_CLOEXEC))


def _reached(step: str = "probe") -> tuple[str, str, str, tuple[str]]:
    """A last op that fails for sure: its record shows the ops before it succeeded."""
    return (step, "stat", "/reached", ("/proc/self/anyns-missing",))  # whatever the child's uid


REACHED = ("probe", "stat", "/reached", errno.ENOENT)


@dataclass
class Row:
    """One op under test: a plan that ends with it failing (or, for ops that cannot fail, passing it)."""

    id: str
    op: str  # the name in _ops.OPS this row covers
    ops: Sequence[tuple[str, str, str | None, tuple[Any, ...]]]
    #: the record's (step, syscall, path, errno); None: exit 127 with no record at all
    expect: tuple[str, str, str | None, int] | None
    flags: int = 0
    shared_vm: bool | None = None  # None: as _ops.needs_own_memory says
    extra: Sequence[Callable[[Ctx], int]] = ()
    supervisor: Callable[[Ctx], int] | None = None
    stdio: tuple[int, int, int] | None = None
    #: a check of what the plan did, run after the child is reaped
    after: Callable[[str], None] | None = None
    xfail: str | None = None
    #: the record may name a prefix of the expected path (one too long for the record is cut, not its errno)
    path_prefix: bool = False

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=self.id, marks=marks)


def _mode(path: str) -> Callable[[str], None]:
    def check(tmp: str) -> None:
        assert stat.S_IMODE(os.lstat(path.format(tmp=tmp)).st_mode) == 0o700
    return check


def _is_dir(path: str) -> Callable[[str], None]:
    def check(tmp: str) -> None:
        assert os.path.isdir(path.format(tmp=tmp))
    return check


NS = C.CLONE_NEWNS
#: a missing path of 4,090 bytes (under PATH_MAX), in components of 200
LONG_PATH = ("/proc/self/anyns-missing/" + "/".join(["x" * 200] * 22))[:4090]
ROOT_ANCHOR = ("rootfs", "root_anchor", "/", ("{tmp}/root",))
DROP_ALL = ("security", "capset", None, (0,))  # no capability left (uid 0 stays)

ROWS: tuple[Row, ...] = (
    # ---- namespaces
    Row("unshare-unknown-flag", "unshare", [("namespaces", "unshare", None, (0x2000,))],  # CLONE_PTRACE
        ("namespaces", "unshare", None, errno.EINVAL)),
    # Why needs_own_memory wants an address space of its own for a user namespace: the kernel refuses it.
    Row("unshare-user-in-shared-memory", "unshare", [("namespaces", "unshare", None, (C.CLONE_NEWUSER,))],
        ("namespaces", "unshare", None, errno.EINVAL), shared_vm=True),
    # Own memory (needs_own_memory: a time namespace); without CAP_SYS_ADMIN setns refuses it.
    Row("enter-time-namespace-without-capability", "enter_time_namespace",
        [("namespaces", "unshare", None, (C.CLONE_NEWTIME,)), DROP_ALL,
         ("namespaces", "enter_time_namespace", "time", ())],
        ("namespaces", "setns", "time", errno.EPERM)),
    # ... and why: a process whose memory is shared may not enter one (timens_install: EUSERS).
    Row("enter-time-namespace-in-shared-memory", "enter_time_namespace",
        [("namespaces", "unshare", None, (C.CLONE_NEWTIME,)), ("namespaces", "enter_time_namespace", "time", ())],
        ("namespaces", "setns", "time", errno.EUSERS), shared_vm=True),
    Row("setns-not-a-namespace", "setns", [("namespaces", "setns", "net", (0, C.CLONE_NEWNET))],
        ("namespaces", "setns", "net", errno.EINVAL), extra=[_devnull]),
    Row("setns-fd-index-out-of-range", "setns", [("namespaces", "setns", "net", (3, C.CLONE_NEWNET))],
        ("namespaces", "setns", "net", errno.EBADF), extra=[_devnull]),
    Row("send-namespaces-on-a-pipe", "send_namespaces", [("namespaces", "send_namespaces", None, (("net",),))],
        ("namespaces", "sendmsg", None, errno.ENOTSOCK)),
    Row("send-root-on-a-pipe", "send_root", [("pivot_root", "send_root", None, ())],
        ("pivot_root", "sendmsg", None, errno.ENOTSOCK)),
    Row("check-alive-dead-container", "check_alive", [("namespaces", "check_alive", None, (0,))],
        ("namespaces", "poll", None, errno.ESRCH), extra=[_dead_pidfd]),
    # Own memory: dumpability is the memory's; shared, it would make this test process non-dumpable.
    Row("not-dumpable-passes", "not_dumpable", [("userns", "not_dumpable", None, ()), _reached()], REACHED,
        shared_vm=False),
    Row("wait-go-abandoned", "wait_go", [("userns", "wait_go", None, (0,))],
        ("userns", "read", None, errno.ECANCELED), extra=[_go_pipe(b"0")]),
    Row("wait-go-fd-index-out-of-range", "wait_go", [("network", "wait_go", "eth0", (1,))],
        ("network", "read", "eth0", errno.EBADF), extra=[_go_pipe(b"1")]),
    Row("wait-go-then-on", "wait_go", [("userns", "wait_go", None, (0,)), _reached()], REACHED,
        extra=[_go_pipe(b"1")]),
    Row("cgroup-enter-read-only", "cgroup_enter", [("cgroup", "cgroup_enter", "memory", (0,))],
        ("cgroup", "write", "memory", errno.EBADF), extra=[_read_only_file]),
    # ---- security
    # A missing path is skipped (runc's rule); a link on the way is refused, never followed ...
    Row("mask-paths-masked-through-a-link", "mask_paths",
        [_PRIVATE, ROOT_ANCHOR, ("proc", "mask_paths", None, (("/missing", "/link/x"), ()))],
        ("proc", "openat2", "/link/x", errno.ELOOP), flags=NS),
    Row("mask-paths-readonly-through-a-link", "mask_paths",
        [_PRIVATE, ROOT_ANCHOR, ("proc", "mask_paths", None, (("/missing",), ("/missing", "/link/x")))],
        ("proc", "openat2", "/link/x", errno.ELOOP), flags=NS),
    # ... and a link as the last component is covered itself (O_PATH|O_NOFOLLOW), never its target.
    Row("mask-paths-covers-a-link-itself", "mask_paths",
        [_PRIVATE, ROOT_ANCHOR, ("proc", "mask_paths", None, (("/link",), ("/link",))), _reached()], REACHED,
        flags=NS),
    Row("mask-paths-without-anchor", "mask_paths", [("proc", "mask_paths", None, (("/proc/kcore",), ()))],
        ("proc", "mount", "/proc/kcore", errno.EINVAL)),
    Row("setsid-twice", "setsid", [("security", "setsid", None, ()), ("security", "setsid", None, ())],
        ("security", "setsid", None, errno.EPERM)),
    Row("drop-bounding-without-capability", "drop_bounding",
        [DROP_ALL, ("security", "drop_bounding", None, ((_CAP_SYS_ADMIN,),))],
        ("security", "prctl", None, errno.EPERM)),
    Row("seccomp-without-no-new-privs", "seccomp_bpf", [DROP_ALL, ("security", "seccomp_bpf", None, (_ALLOW_ALL,))],
        ("security", "prctl", None, errno.EACCES)),
    Row("seccomp-empty-filter", "seccomp_bpf", [("security", "seccomp_bpf", None, ("",))],
        ("security", "prctl", None, errno.EINVAL)),
    Row("capset-raise", "capset", [DROP_ALL, ("security", "capset", None, (1 << _CAP_SYS_ADMIN,))],
        ("security", "capset", None, errno.EPERM)),
    # no_new_privs cannot fail; it is what lets a filter in without CAP_SYS_ADMIN (see the seccomp row).
    Row("no-new-privs-lets-seccomp-in", "no_new_privs",
        [DROP_ALL, ("security", "no_new_privs", None, ()), ("security", "seccomp_bpf", None, (_ALLOW_ALL,)),
         _reached()], REACHED),
    Row("hold-path-missing", "hold_path", [("mounts", "hold_path", "{tmp}/missing", ("{tmp}/missing", 100, 1))],
        ("mounts", "open", "{tmp}/missing", errno.ENOENT)),
    Row("hold-path-no-follow", "hold_path", [("rootfs", "hold_path", "{tmp}/srclink", ("{tmp}/srclink", 100, 0))],
        ("rootfs", "openat2", "{tmp}/srclink", errno.ELOOP)),
    Row("hold-path-fd-taken", "hold_path", [("mounts", "hold_path", "{tmp}/root", ("{tmp}/root", 0, 1))],
        ("mounts", "open", "{tmp}/root", errno.EBUSY)),
    Row("become-root-as-root", "become_root", [("userns", "become_root", None, ()), _reached()], REACHED),
    # A user namespace whose maps were never written: no id is valid in it.
    Row("become-root-unmapped", "become_root", [("userns", "become_root", None, ())],
        ("userns", "setresuid", None, errno.EINVAL), flags=C.CLONE_NEWUSER),
    Row("set-user-without-capability", "set_user", [DROP_ALL, ("security", "set_user", None, (1000, 1000, (1000,)))],
        ("security", "setresuid", None, errno.EPERM)),
    Row("set-user-then-on", "set_user", [("security", "set_user", None, (1000, 1000, ())), _reached()], REACHED),
    # ---- the file system
    Row("bind-device-missing-source", "bind_device",
        [_PRIVATE, ROOT_ANCHOR, ("dev", "bind_device", "/exists/null", ("/exists/null", "{tmp}/missing"))],
        ("dev", "mount", "/exists/null", errno.ENOENT), flags=NS),
    Row("bind-device-through-a-link", "bind_device",
        [_PRIVATE, ROOT_ANCHOR, ("dev", "bind_device", "/link/null", ("/link/null", "/dev/null"))],
        ("dev", "mount", "/link/null", errno.ENOTDIR), flags=NS),  # the link itself is the parent: not a dir
    Row("setdomainname-too-long", "setdomainname", [("hostname", "setdomainname", None, ("x" * 65,))],
        ("hostname", "setdomainname", None, errno.EINVAL), flags=C.CLONE_NEWUTS),
    Row("mount-missing-target", "mount",
        [_PRIVATE, ("rootfs", "mount", "/", ("tmpfs", "{tmp}/missing", "tmpfs", 0, None))],
        ("rootfs", "mount", "/", errno.ENOENT), flags=NS),
    Row("attach-skeleton-without-one", "attach_skeleton", [_PRIVATE, ("rootfs", "attach_skeleton", "/", ("{tmp}",))],
        ("rootfs", "open_tree", "/", errno.EBADF), flags=NS),
    Row("mkpath-through-a-link", "mkpath", [("files", "mkpath", "/link/b", ("{tmp}/root", "link/b", 0))],
        ("files", "mkdir", "/link/b", errno.ENOTDIR)),
    Row("mkpath-missing-root", "mkpath", [("files", "mkpath", "/a", ("{tmp}/missing", "a", 1))],
        ("files", "mkdir", "/a", errno.ENOENT)),
    # Best effort: a failure resurfaces when the mount is made.
    Row("mountpoint-best-effort", "mountpoint",
        [("mounts", "mountpoint", "/x", (None, "{tmp}/missing", "x")),
         ("mounts", "mountpoint", "/made/deep", (None, "{tmp}/root", "made/deep")), _reached()], REACHED,
        after=_is_dir("{tmp}/root/made/deep")),
    Row("bind-root-missing-source", "bind_root",
        [_PRIVATE, ("rootfs", "bind_root", "/srv/root", ("{tmp}/missing", "{tmp}/root", 0))],
        ("rootfs", "open_tree", "{tmp}/missing", errno.ENOENT), flags=NS),
    Row("root-anchor-missing", "root_anchor", [("rootfs", "root_anchor", "/", ("{tmp}/missing",))],
        ("rootfs", "open", "/", errno.ENOENT)),
    Row("bind-at-missing-source", "bind_at",
        [_PRIVATE, ROOT_ANCHOR, ("mounts", "bind_at", "/m", ("/m", "{tmp}/missing", 1, 0, 0, 1))],
        ("mounts", "open_tree", "{tmp}/missing", errno.ENOENT), flags=NS),
    Row("bind-at-source-is-a-link", "bind_at",
        [_PRIVATE, ROOT_ANCHOR, ("mounts", "bind_at", "/m", ("/m", "{tmp}/srclink", 1, 0, 0, 0))],
        ("mounts", "openat2", "{tmp}/srclink", errno.ELOOP), flags=NS),
    Row("mount-at-unknown-type", "mount_at",
        [_PRIVATE, ROOT_ANCHOR, ("mounts", "mount_at", "/m", ("/m", "none", "anyns-nofs", 0, None))],
        ("mounts", "mount", "/m", errno.ENODEV), flags=NS),
    Row("mount-at-through-a-link", "mount_at",
        [_PRIVATE, ROOT_ANCHOR, ("mounts", "mount_at", "/link/m", ("/link/m", "tmpfs", "tmpfs", 0, None))],
        ("mounts", "openat2", "/link/m", errno.ELOOP), flags=NS),
    Row("fsmount-at-bad-option", "fsmount_at",
        [_PRIVATE, ROOT_ANCHOR, ("dev", "fsmount_at", "/dev", ("/dev", "tmpfs", ("size=bogus",), 0))],
        ("dev", "fsconfig", "/dev", errno.EINVAL), flags=NS),
    Row("fsmount-at-unknown-type", "fsmount_at",
        [_PRIVATE, ROOT_ANCHOR, ("dev", "fsmount_at", "/dev", ("/dev", "anyns-nofs", (), 0))],
        ("dev", "fsopen", "/dev", errno.ENODEV), flags=NS),
    Row("bind-anchor-missing-source", "bind_anchor",
        [_PRIVATE, ROOT_ANCHOR, ("proc", "bind_anchor", "/proc", ("/proc", "{tmp}/missing"))],
        ("proc", "open_tree", "{tmp}/missing", errno.ENOENT), flags=NS),
    Row("mkdir-at-exists", "mkdir_at", [ROOT_ANCHOR, ("dev", "mkdir_at", "/exists", ("/exists",))],
        ("dev", "mkdir", "/exists", errno.EEXIST)),
    Row("mkdir-at-without-anchor", "mkdir_at", [("dev", "mkdir_at", "/dev/pts", ("/dev/pts",))],
        ("dev", "mkdir", "/dev/pts", errno.EINVAL)),
    Row("symlink-at-exists", "symlink_at", [ROOT_ANCHOR, ("dev", "symlink_at", "/exists", ("/exists", "x"))],
        ("dev", "symlink", "/exists", errno.EEXIST)),
    Row("files-tmpfs-bad-size", "files_tmpfs", [("files", "files_tmpfs", None, (-1,))],
        ("files", "fsconfig", None, errno.EINVAL)),
    Row("write-file-in-without-tmpfs", "write_file_in", [("files", "write_file_in", "/f", ("/f", "78", 0o644))],
        ("files", "open", "/f", errno.EBADF)),
    Row("write-file-in-out-of-the-tmpfs", "write_file_in",
        [("files", "files_tmpfs", None, (4096,)), ("files", "write_file_in", "/f", ("../f", "78", 0o644))],
        ("files", "openat2", "/f", errno.EXDEV)),
    Row("write-file-at-through-a-link", "write_file_at",
        [ROOT_ANCHOR, ("files", "write_file_at", "/link/f", ("/link/f", "78", 0o644))],
        ("files", "openat2", "/link/f", errno.ELOOP)),
    Row("write-file-under-missing-root", "write_file_under",
        [("files", "write_file_under", "/f", ("{tmp}/missing", "f", "78", 0o644))],
        ("files", "open", "/f", errno.ENOENT)),
    Row("attach-file-not-written", "attach_file",
        [_PRIVATE, ("files", "files_tmpfs", None, (4096,)), ROOT_ANCHOR, ("files", "attach_file", "/f", ("/f",))],
        ("files", "open_tree", "/f", errno.ENOENT), flags=NS),
    Row("root-readonly-without-anchor", "root_readonly", [_PRIVATE, ("files", "root_readonly", "/", (1,))],
        ("files", "mount_setattr", "/", errno.EINVAL), flags=NS),
    Row("chdir-root-without-anchor", "chdir_root", [("pivot_root", "chdir_root", "/", ())],
        ("pivot_root", "fchdir", "/", errno.EINVAL)),
    Row("makedirs-under-a-file", "makedirs", [("rootfs", "makedirs", "{tmp}/file/x", ("{tmp}/file/x",))],
        ("rootfs", "mkdir", "{tmp}/file/x", errno.ENOTDIR)),
    Row("stat-missing", "stat", [("rootfs", "stat", "/layer", ("{tmp}/missing",))],
        ("rootfs", "stat", "/layer", errno.ENOENT)),
    # A path that fills the record (PATH_MAX is 4096: a spec's bind source may be that long) must not cost the
    # errno and the message; at most the path is cut.
    Row("stat-missing-very-long-path", "stat", [("rootfs", "stat", LONG_PATH, (LONG_PATH,))],
        ("rootfs", "stat", LONG_PATH, errno.ENOENT), path_prefix=True),
    Row("open-tree-missing", "open_tree", [_PRIVATE, ("mounts", "open_tree", "{tmp}/missing", ("{tmp}/missing", 1))],
        ("mounts", "open_tree", "{tmp}/missing", errno.ENOENT), flags=NS),
    Row("attach-tree-none-opened", "attach_tree",
        [_PRIVATE, ROOT_ANCHOR, ("mounts", "attach_tree", "/m", ("/m", 0, 1, 0, 0))],
        ("mounts", "move_mount", "/m", errno.EBADF), flags=NS),
    Row("mount-setattr-missing", "mount_setattr", [_PRIVATE, ("rootfs", "mount_setattr", "/", ("{tmp}/missing", 1))],
        ("rootfs", "mount_setattr", "/", errno.ENOENT), flags=NS),
    Row("mkdir-exists", "mkdir", [("rootfs", "mkdir", None, ("{tmp}/root/exists",))],
        ("rootfs", "mkdir", None, errno.EEXIST)),
    Row("symlink-exists", "symlink", [("rootfs", "symlink", "/link", ("x", "{tmp}/root/link"))],
        ("rootfs", "symlink", "/link", errno.EEXIST)),
    Row("chdir-missing", "chdir", [("process", "chdir", "/nowhere", ("{tmp}/missing",))],
        ("process", "chdir", "/nowhere", errno.ENOENT)),
    Row("pivot-root-missing", "pivot_root",
        [_PRIVATE, ("pivot_root", "pivot_root", "/", ("{tmp}/missing", "{tmp}/missing"))],
        ("pivot_root", "pivot_root", "/", errno.ENOENT), flags=NS),
    Row("umount2-not-a-mount", "umount2", [_PRIVATE, ("pivot_root", "umount2", "/", ("{tmp}/root", C.MNT_DETACH))],
        ("pivot_root", "umount2", "/", errno.EINVAL), flags=NS),
    Row("sethostname-too-long", "sethostname", [("hostname", "sethostname", None, ("x" * 65,))],
        ("hostname", "sethostname", None, errno.EINVAL), flags=C.CLONE_NEWUTS),
    Row("interface-up-missing", "interface_up", [("network", "interface_up", "nope0", ("nope0",))],
        ("network", "ioctl(SIOCSIFFLAGS)", "nope0", errno.ENODEV), flags=C.CLONE_NEWNET),
    # ---- the process
    Row("umask-applies", "umask",
        [("process", "umask", None, (0o077,)), ("rootfs", "mkdir", None, ("{tmp}/masked",)), _reached()], REACHED,
        after=_mode("{tmp}/masked")),
    Row("setrlimit-soft-above-hard", "setrlimit", [("process", "setrlimit", "nofile", (_RLIMIT_NOFILE, 10, 5))],
        ("process", "setrlimit", "nofile", errno.EINVAL)),
    Row("stdio-no-stdin", "stdio", [("process", "stdio", None, ())], ("process", "dup2", None, errno.EBADF),
        stdio=(-1, 1, 2)),
    Row("tty-no-ptmx", "tty",
        [_PRIVATE, ("dev", "mount", "/dev", ("tmpfs", "/dev", "tmpfs", 0, None)),
         ("process", "tty", "/dev/ptmx", (24, 80))],
        ("process", "openpty", "/dev/ptmx", errno.ENOENT), flags=NS),
    # The error pipe is made close-on-exec, not closed: a later failure is still reported.
    Row("close-fds-keeps-the-error-pipe", "close_fds", [("process", "close_fds", None, ()), _reached()], REACHED),
    Row("signals-pass", "signals", [("process", "signals", None, ()), _reached()], REACHED),
    Row("pdeathsig-supervisor-alive", "pdeathsig", [("pdeathsig", "pdeathsig", None, ()), _reached()], REACHED),
    # The supervisor died before PR_SET_PDEATHSIG: the child ends itself, with nothing to say to anyone.
    Row("pdeathsig-supervisor-gone", "pdeathsig", [("pdeathsig", "pdeathsig", None, ()), _reached()], None,
        supervisor=_dead_pidfd),
    # ---- exec
    Row("exec-init-without-init", "exec_init",
        [("exec", "spawn_with_init", "/bin/true", (0, ("/bin/true",), ("/bin/true",), ("PATH=/bin",)))],
        ("exec", "execveat", "/bin/true", errno.EBADF), extra=[_devnull]),
    Row("execve-missing", "execve", [("exec", "execve", "nope", (("{tmp}/missing",), ("nope",), ()))],
        ("exec", "execve", "nope", errno.ENOENT)),
    # execvp's rule: EACCES from one candidate is kept over a later ENOENT.
    Row("execve-candidates-keep-eacces", "execve",
        [("exec", "execve", "prog", (("{tmp}/missing", "{tmp}/noexec", "{tmp}/missing2"), ("prog",), ()))],
        ("exec", "execve", "prog", errno.EACCES)),
)


def _fill(value: Any, tmp: str) -> Any:
    if isinstance(value, str):
        return value.format(tmp=tmp)
    if isinstance(value, (tuple, list)):
        return type(value)(_fill(v, tmp) for v in value)
    return value


def test_the_table_covers_every_op() -> None:
    """A new op without a row (or a row for an op that went away) fails here."""
    assert {row.op for row in ROWS} == {name for name, _call, _kinds in _ops.OPS}
    assert len({row.id for row in ROWS}) == len(ROWS)


def _mountinfo() -> collections.Counter[str]:
    """The host's mounts as "root mount-point" (ids and options change)."""
    with open("/proc/self/mountinfo") as f:
        return collections.Counter(" ".join(line.split()[3:5]) for line in f)


def _new_host_mounts(before: collections.Counter[str]) -> list[str]:
    """Mounts the host has now and had not: none of ours may be among them. Those of other test runs on this
    machine (their scratch directories in the temporary directory) come and go meanwhile, and are left out."""
    others = os.path.join(tempfile.gettempdir(), "")
    return sorted(m for m in _mountinfo() - before if not m.split()[1].startswith(others))


@pytest.mark.parametrize("row", [row.param() for row in ROWS])
def test_an_op_that_fails_reports_its_record(row: Row, native: _native.Native, tmp_path: Any) -> None:
    """Each op fails for a known reason: exit 127 and the record (step, syscall, path, errno) the table says; the
    record makes the typed error (ExecError for the exec step), whose cause is the matching OSError."""
    tmp = str(tmp_path)
    _layout(tmp)
    ctx = Ctx(tmp)
    mounts = _mountinfo()
    try:
        outcome = run_plan(native, _fill(row.ops, tmp), flags=row.flags, shared_vm=row.shared_vm, stdio=row.stdio,
                           supervisor=row.supervisor(ctx) if row.supervisor else None,
                           extra=[make(ctx) for make in row.extra])
    finally:
        for fd in ctx.fds:
            os.close(fd)
    assert (outcome.code, outcome.status) == (os.CLD_EXITED, _EXIT_SETUP_FAILED), outcome
    assert native.busy_stacks() == 0  # the child's stack was reclaimed
    assert _new_host_mounts(mounts) == []
    assert os.listdir(f"{tmp}/outside") == []  # no link led anything out of the root
    if row.after is not None:
        row.after(tmp)
    if row.expect is None:
        assert outcome.record is None
        return
    assert outcome.record is not None, "exit 127 with no failure record"
    expect = _fill(row.expect, tmp)
    if row.path_prefix and outcome.record[2] is not None and expect[2] is not None:
        assert expect[2].startswith(outcome.record[2])
        expect = (expect[0], expect[1], outcome.record[2], expect[3])
    assert outcome.record[:4] == expect
    assert outcome.record[4] == os.strerror(expect[3])
    error = SetupError.from_record(*outcome.record)
    assert type(error) is (ExecError if row.op in ("execve", "exec_init") else SetupError)
    assert (error.step, error.syscall, error.path, error.errno) == expect
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == expect[3]


# --------------------------------------------------------------------------- SIGKILL at every stage


def _default_plan(expanded: bool) -> tuple[int, list[Any], list[Any] | None, tuple[str, ...]]:
    """(clone flags, wire ops, skeleton ops, extra kinds) of the default spec, as the supervisor sends them."""
    spec = anyns.ContainerSpec(argv=["/bin/true"])
    layout = _host.probe_host(_host.newroot_dir(), spec.rootfs, None)
    plan = compile_plan(spec, layout)
    ops = [list(op) for op in _security.with_seccomp_bpf(plan.ops)]
    skeleton = None if plan.skeleton is None else [list(op) for op in plan.skeleton]
    if expanded and skeleton is not None:  # the zygote's other rung: the child builds the root itself
        at = next(i for i, op in enumerate(ops) if op[1] == _ops.SKELETON_CALL)
        ops[at:at + 1] = _skeleton.expand_for_child(skeleton, layout.newroot)
        skeleton = None
    return plan.clone_flags, ops, skeleton, plan.extra_kinds


def _blocked_reading(pid: int, fd: int) -> bool:
    """Whether ``pid`` sits in read(fd)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] == str(_SYS_READ) and int(fields[1], 16) == fd


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))



def _open_pipe(opened: list[int]) -> tuple[int, int]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    opened += (read_end, write_end)
    return read_end, write_end


def _no_zombie_of_mine() -> list[int]:
    me = os.getpid()
    return [pid for pid, (ppid, state, _comm) in process_table().items() if ppid == me and state == "Z"]


@pytest.mark.parametrize("expanded", [False, True], ids=["skeleton", "child-built-root"])
def test_a_child_killed_at_any_stage_of_setup_leaves_nothing(native: _native.Native, expanded: bool) -> None:
    """The default plan (the zygote's prebuilt skeleton, or the child building the root itself), stopped before
    each of its ops in turn (a wait_go inserted there) and SIGKILLed while it waits: no record, no new host
    mount, no zombie, no fd of ours left, and its stack reclaimed (CLONE_CHILD_CLEARTID); run to its end, it
    execs the init, which runs the program and exits 0."""
    flags, ops, skeleton_ops, extra_kinds = _default_plan(expanded)
    assert extra_kinds == ("status",)  # the init's status pipe; the go pipe comes after it
    go_index = len(extra_kinds)
    shared_vm = not _ops.needs_own_memory(flags, ops, False)
    assert shared_vm  # the default plan runs on a stack of ours: the case where a stack can leak
    init_fd, _sealed = _init.open_binary()
    skeleton_fd = _skeleton.build_in_zygote(skeleton_ops) if skeleton_ops is not None else -1
    try:
        for stage in range(len(ops) + 1):
            complete = stage == len(ops)  # the last round runs the whole plan
            staged = ops if complete else [*ops[:stage], ["stage", "wait_go", None, [go_index]], *ops[stage:]]
            what = "the whole plan" if complete else f"before op {stage} {ops[stage][:2]}"
            fds, mounts = _fd_count(), _mountinfo()
            plan = native.link(_ops.encode(staged))
            opened: list[int] = []
            try:
                err_r, err_w = _open_pipe(opened)
                status_r, status_w = _open_pipe(opened)
                go_r, _go_w = _open_pipe(opened)
                null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
                opened.append(null)
                supervisor = os.pidfd_open(os.getpid())
                opened.append(supervisor)
                pid, pidfd, _serial = native.spawn(
                    plan, _FLAGS | flags, -1, shared_vm,
                    (null, null, null, err_w, supervisor, skeleton_fd, init_fd, status_w, go_r))
                for fd in (err_w, status_w):
                    opened.remove(fd)
                    os.close(fd)
                if not complete:
                    deadline = time.monotonic() + 10
                    while not _blocked_reading(pid, go_r):
                        if select.select([err_r], [], [], 0.001)[0] or time.monotonic() > deadline:
                            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                            data = _read_to_eof(err_r, pidfd)
                            reap(pidfd)
                            pytest.fail(f"{what}: the child never blocked; record {_protocol.decode_failure(data)}")
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                data = _read_to_eof(err_r, pidfd)
                reported = _read_to_eof(status_r, pidfd) if complete else b""
                code, status = reap(pidfd)
                del plan  # no child reads it any more
            finally:
                for fd in opened:
                    os.close(fd)
            record = _protocol.decode_failure(data) if data else None
            if complete:
                assert (code, status, record, reported) == (os.CLD_EXITED, 0, None, b"0"), what
            else:
                assert (code, status, record) == (os.CLD_KILLED, signal.SIGKILL, None), what
            assert process_state(pid) is None, what
            assert _no_zombie_of_mine() == [], what
            assert native.busy_stacks() == 0, f"{what}: the stack was not reclaimed"
            assert _fd_count() == fds, f"{what}: fds {fds} -> {_fd_count()}"
            assert _new_host_mounts(mounts) == [], what
    finally:
        os.close(init_fd)
        if skeleton_fd >= 0:
            os.close(skeleton_fd)


# --------------------------------------------------------------------------- the zygote's memory


def _zygote_of_mine() -> int:
    """The pid of this process's zygote (the supervisor's child whose command line names it)."""
    me = os.getpid()
    found: list[int] = []
    for pid, (ppid, _state, _comm) in process_table().items():
        if ppid == me:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"_zygote" in f.read():
                        found.append(pid)
            except OSError:
                continue
    assert len(found) == 1, found
    return found[0]


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmSize) of ``pid`` in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmSize"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmSize"]


MIB = 1 << 20


async def test_the_zygote_memory_stays_flat() -> None:
    """3,000 spawns of /bin/true, 16 in flight: between the 500th and the 3,000th the zygote's resident and
    virtual sizes grow by less than 1 MiB (stacks are unmapped once their child has exec'd, plan buffers kept
    once). Each batch ends with one spawn alone, which reclaims every stack but its own."""
    spec = anyns.ContainerSpec(argv=["/bin/true"])
    async with anyns.open_supervisor() as sup:

        async def spawns(n: int) -> None:
            left = iter(range(n - 1))

            async def worker() -> None:
                for _ in left:
                    await sup.run(spec)

            async with trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(worker)
            await sup.run(spec)

        await spawns(500)
        zygote = _zygote_of_mine()
        rss, size = _memory(zygote)
        await spawns(2500)
        assert _zygote_of_mine() == zygote  # the same zygote served them all
        rss_after, size_after = _memory(zygote)
    assert rss_after - rss < MIB, f"VmRSS {rss // 1024} kB -> {rss_after // 1024} kB"
    assert size_after - size < MIB, f"VmSize {size // 1024} kB -> {size_after // 1024} kB"
