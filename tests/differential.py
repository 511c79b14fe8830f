"""A differential check of what a container sees, for a matrix of specs (issue 16).

The cloned child's setup moved from Python (``anyns/_child.py``, last at 229057d) to
C (``anyns/_native/spawn.c``). This module runs one probe, a ``/bin/sh`` script (it
works with the host's dash and with busybox's ash), in a container for each spec of
``CASES`` and turns its raw report into a normalized view: the mount table, the
namespaces (own, the host's, or a peer container's), the capabilities, seccomp and
identity lines of ``/proc/PID/status``, hostname and domainname, the open fds and
their flags, the environment as exec'd, umask, cwd, rlimits, session and process
tree. Mount ids, device numbers, peer group numbers, pids outside the container's
pid namespace, pipe inodes and temporary paths are normalized away; host file
systems are named by their host path (``host:/usr``), not by device or type.

``python -m tests.differential --write PATH`` writes the golden views (run it from a
checkout whose ``./anyns`` is the executor to record); ``--show NAME`` prints one
case's view, ``--raw NAME`` its raw report. ``tests/integration/test_native_differential.py``
compares the current executor's views with ``tests/data/native_differential.json``.
It needs root, a static busybox (``anyns.testing``) and ``mount(8)``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import trio

import anyns
from anyns import testing

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "native_differential.json")

#: The probe. ``$1`` is "tree" to list the processes of the container's pid namespace
#: (not done without one: that would be the host's). ``$2`` is a case's extra shell
#: code. Every file is read from /proc/$$ (the program itself, not a helper). The
#: status is read first, by the shell itself (``read`` is a builtin): its signal mask
#: is the one it was exec'd with, not the one it holds while it waits for a helper.
PROBE = r"""
p=$$
sec() { printf '@@@ %s\n' "$1"; }
sec status
while IFS= read -r l; do printf '%s\n' "$l"; done < /proc/self/status
sec stat; cat /proc/$p/stat
sec mountinfo; cat /proc/$p/mountinfo
sec ns; for f in /proc/$p/ns/*; do printf '%s %s\n' "${f##*/}" "$(readlink "$f")"; done
sec uid_map; cat /proc/$p/uid_map
sec gid_map; cat /proc/$p/gid_map
sec setgroups; cat /proc/$p/setgroups
sec hostname; cat /proc/sys/kernel/hostname
sec domainname; cat /proc/sys/kernel/domainname
sec fds; ls -l /proc/$p/fd
sec fdflags; for f in /proc/$p/fdinfo/*; do [ -e "$f" ] || continue; printf '%s ' "${f##*/}"; grep '^flags' "$f"; done
sec environ; tr '\0' '\n' < /proc/$p/environ | sort
sec umask; umask
sec cwd; readlink /proc/$p/cwd; pwd
sec limits; cat /proc/$p/limits
sec cgroup; cat /proc/$p/cgroup
sec oom_score_adj; cat /proc/$p/oom_score_adj
sec tree
if [ "$1" = tree ]; then
  cat /proc/[0-9]*/stat
  sec cmdline
  for d in /proc/[0-9]*; do printf '%s ' "${d##*/}"; tr '\0\n' '  ' < $d/cmdline; echo; done
  if [ $p != 1 ]; then
    sec init_status; cat /proc/1/status
    sec init_fds; ls -l /proc/1/fd 2>&1
    sec init_environ; tr '\0' '\n' < /proc/1/environ 2>&1 | sort
  fi
fi
sec extra
eval "$2"
sec prctl
if [ -x /usr/bin/python3 ]; then exec /usr/bin/python3 -I -S -c "$3"; fi
echo "no python"
"""

#: The probe's last part, exec'd by the program itself (so it is still the process the
#: executor set up) where the root has the host's python: the process attributes only
#: prctl(2) and a few syscalls tell, and that an exec keeps.
PRCTL = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def value(op, arg=0):
    r = libc.prctl(op, arg, 0, 0, 0)
    return r if r >= 0 else "errno %d" % ctypes.get_errno()
def pointed(op):
    v = ctypes.c_int(-1)
    r = libc.prctl(op, ctypes.byref(v), 0, 0, 0)
    return v.value if r == 0 else "errno %d" % ctypes.get_errno()
print("pdeathsig", pointed(2))
print("dumpable", value(3))
print("keepcaps", value(7))
print("securebits", value(27))
print("timerslack", value(30))
print("child_subreaper", pointed(37))
print("no_new_privs", value(39))
print("thp_disable", value(42))
print("ambient", [c for c in range(64) if libc.prctl(47, 1, c, 0, 0) == 1])
print("personality", hex(libc.personality(0xffffffff)))
print("sched_policy", os.sched_getscheduler(0))
print("ioprio", libc.syscall(252, 1, 0))
print("groups", sorted(os.getgroups()))
# What the filter and the capabilities answer, with arguments that do nothing (x86_64 numbers):
# keyctl, mount, io_uring_setup, clone3, bpf, kcmp, socket(AF_VSOCK), personality(0x40000), nr 1000.
calls = ((250, 0, -4, 0), (165, 0, 0, 0, 0, 0), (425, 1, 0), (435, 0, 0), (321, -1, 0, 0),
         (312, 1, 1, 99, 0, 0), (41, 40, 1, 0), (135, 0x40000), (1000,))
if os.uname().machine == "x86_64":
    out = []
    for nr, *args in calls:
        r = libc.syscall(nr, *args)
        out.append("%d:%s" % (nr, "ok" if r >= 0 else os.strerror(ctypes.get_errno()).replace(" ", "_")))
        if nr == 41 and r >= 0:
            os.close(r)
        if nr == 135 and r >= 0:
            libc.personality(r)
    print("syscalls", " ".join(out))
print("@@@ end")
"""

#: busybox applets the probe and the cases' extra code need in a busybox root
APPLETS = (*testing.DEFAULT_APPLETS, "tr", "sort", "umask")

#: /proc/PID/status lines kept (the rest is memory use, scheduling, cpus)
STATUS_KEYS = (
    "Name", "Umask", "Pid", "PPid", "TracerPid", "Uid", "Gid", "Groups", "NSpid", "NSpgid", "NSsid",
    "SigBlk", "SigIgn", "SigCgt", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
    "Seccomp_filters", "Speculation_Store_Bypass", "SpeculationIndirectBranch",
)

#: the lines kept of pid 1's status, when pid 1 is not the probe
INIT_STATUS_KEYS = (
    "Name", "Umask", "Uid", "Gid", "Groups", "SigBlk", "SigIgn", "SigCgt", "CapInh", "CapPrm", "CapEff", "CapBnd",
    "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters",
)


# --------------------------------------------------------------------------- the matrix


@attrs.frozen
class Env:
    """The host side of a run: the directories and mounts the cases use."""

    base: str  # a temporary directory; "<base>" in the views
    busybox: str  # a busybox root (read-only uses)
    busybox_rw: str  # a busybox root a container may write
    shared: str  # a tmpfs made shared on the host, with a tmpfs mounted at sub/
    link: str  # a symlink to shared/plain.txt


@attrs.frozen
class Case:
    """One row of the matrix: a spec, and how it is run."""

    spec: Callable[[Env], anyns.ContainerSpec]
    #: "run": the probe is the program; "exec": Container.exec into a running container
    #: made from the spec with a sleeping program; "join": the probe's spec joins a
    #: running peer made by ``peer``
    how: str = "run"
    peer: Callable[[Env], anyns.ContainerSpec] | None = None
    join: tuple[str, ...] = ("net", "uts")  # the namespaces a "join" case takes from its peer
    #: the executor differs here, and should not: the reason (the test is xfail, strict)
    xfail: str | None = None


@attrs.frozen
class Accepted:
    """A difference from the Python executor that is intended: the test expects ``new`` where it was ``old``."""

    case: str
    section: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    reason: str


def _probe_argv(spec_ns: anyns.Namespaces, extra: str) -> list[str]:
    tree = "tree" if spec_ns & anyns.Namespaces.PID else "notree"
    return ["/bin/sh", "-c", PROBE, "probe", tree, extra, PRCTL]


def _spec(extra: str = "", **fields: Any) -> Callable[[Env], anyns.ContainerSpec]:
    def make(env: Env) -> anyns.ContainerSpec:
        values = {k: (v(env) if callable(v) and not isinstance(v, type) else v) for k, v in fields.items()}
        ns = values.get("namespaces", anyns.Namespaces.DEFAULT)
        if values.get("user_ns") is not None:
            ns |= anyns.Namespaces.USER
        return anyns.ContainerSpec(argv=_probe_argv(ns, extra), **values)

    return make


def _user(uid: int, gid: int, *groups: int) -> anyns.User:
    return anyns.User(uid, gid, groups=groups)  # type: ignore[arg-type]  # attrs' converter=tuple


BB_ENV = {"PATH": "/bin"}
FILES_EXTRA = (
    "for f in /box /box/main.py /box/run /etc/app.conf; do stat -c '%n %A %u %g %s' $f; done; cat /etc/app.conf"
)
BIND_EXTRA = (
    "for d in /mnt/ro /mnt/rw /mnt/norec /mnt/shared /mnt/slave /mnt/private /mnt/plain.txt /mnt/via-link.txt; do"
    " stat -c '%n %F' $d; done; ls /mnt/ro /mnt/ro/sub"
)


def _binds(env: Env) -> tuple[anyns.Bind, ...]:
    s = env.shared
    return (
        anyns.Bind(s, "/mnt/ro", readonly=True),
        anyns.Bind(s, "/mnt/rw"),
        anyns.Bind(s, "/mnt/norec", recursive=False),
        anyns.Bind(s, "/mnt/shared", propagation="shared"),
        anyns.Bind(s, "/mnt/slave", propagation="slave"),
        anyns.Bind(s, "/mnt/private", propagation="private"),
        anyns.Bind(os.path.join(s, "plain.txt"), "/mnt/plain.txt", follow_symlinks=False, readonly=True),
        anyns.Bind(env.link, "/mnt/via-link.txt"),
    )


CASES: dict[str, Case] = {
    "defaults": Case(_spec()),
    "no_init": Case(_spec(init=False)),
    "no_pid_namespace": Case(_spec(namespaces=anyns.Namespaces.DEFAULT & ~anyns.Namespaces.PID)),
    "user_namespace": Case(_spec(namespaces=anyns.Namespaces.DEFAULT | anyns.Namespaces.USER)),
    "user_ns_map_and_user": Case(_spec(
        user_ns=anyns.IdMap(uid=[(0, 200000, 2000)], gid=[(0, 200000, 2000)]),
        user=_user(1000, 1000, 1001, 1002),
    )),
    "user_with_groups": Case(_spec(user=_user(1000, 1000, 27, 1001))),
    "capabilities_small": Case(_spec(capabilities={"CAP_CHOWN", "net_bind_service", "KILL"})),
    "seccomp_none": Case(_spec(seccomp=None)),
    "seccomp_custom": Case(_spec(seccomp=anyns.Seccomp(deny={"keyctl"}, errno=13, allow={"io_uring_setup"}))),
    "lean": Case(_spec(
        capabilities=anyns.ALL_CAPABILITIES, seccomp=None, masked_paths=(), readonly_paths=(),
        no_new_privileges=False, new_session=False,
    )),
    "paths_custom": Case(_spec(
        readonly_paths=("/proc/sys", "/etc", "/proc/does-not-exist"),
        masked_paths=("/proc/kcore", "/proc/acpi", "/etc/hostname", "/nonexistent"),
    )),
    "uts_names": Case(_spec(hostname="box1", domainname="example.org")),
    "rlimits": Case(_spec(rlimits={"nofile": (256, 512), "nproc": 100, "core": 0,
                                   "stack": (8 << 20, anyns.RLIM_INFINITY)})),
    "tty": Case(_spec("stty size 2>&1 || true", tty=True, tty_size=(30, 100))),
    "busybox_dir_readonly": Case(_spec(rootfs=lambda e: anyns.DirRootfs(e.busybox), env=BB_ENV)),
    "busybox_dir_writable": Case(_spec(rootfs=lambda e: anyns.DirRootfs(e.busybox_rw, readonly=False), env=BB_ENV,
                                       cwd="/root")),
    "overlay": Case(_spec(rootfs=lambda e: anyns.OverlayRootfs(e.busybox), env=BB_ENV)),
    "binds": Case(_spec(BIND_EXTRA, mounts=_binds)),
    "tmpfs": Case(_spec("stat -c '%n %a' /scratch /tmp",
                        mounts=(anyns.Tmpfs("/scratch", size=4 << 20, mode=0o1777), anyns.Tmpfs("/tmp")))),
    "files": Case(_spec(FILES_EXTRA, files={
        "/box/main.py": b"print('hi')\n", "/box/run": anyns.File(b"#!/bin/sh\n", mode=0o755),
        "/etc/app.conf": "k=v\n"})),
    "files_on_busybox": Case(_spec(FILES_EXTRA.replace("/etc/app.conf", "/tmp/app.conf"),
                                   rootfs=lambda e: anyns.DirRootfs(e.busybox), env=BB_ENV, files={
        "/box/main.py": b"print('hi')\n", "/box/run": anyns.File(b"#!/bin/sh\n", mode=0o755),
        "/tmp/app.conf": "k=v\n"})),
    "env_and_cwd": Case(_spec(env={"PATH": "/usr/bin:/bin", "FOO": "bar baz", "EMPTY": "", "LANG": "C.UTF-8"},
                              cwd="/usr/share")),
    "time_and_cgroup": Case(_spec(namespaces=anyns.Namespaces.DEFAULT | anyns.Namespaces.TIME
                                  | anyns.Namespaces.CGROUP)),
    "limits": Case(_spec(limits=anyns.Limits(memory="64M", pids=32))),
    "no_init_user": Case(_spec(init=False, user=_user(1000, 1000, 1001))),
    "host_network": Case(_spec(network=anyns.HostNetwork())),
    "busybox_user_namespace": Case(_spec(rootfs=lambda e: anyns.DirRootfs(e.busybox), env=BB_ENV,
                                         namespaces=anyns.Namespaces.DEFAULT | anyns.Namespaces.USER)),
    "join_net_uts": Case(
        _spec(),
        how="join",
        peer=lambda e: anyns.ContainerSpec(argv=["sleep", "60"], hostname="peer"),
    ),
    "join_pid_ipc": Case(
        _spec(),
        how="join",
        peer=lambda e: anyns.ContainerSpec(argv=["sleep", "60"]),
        join=("pid", "ipc"),
    ),
    "exec": Case(_spec(hostname="execbox", env={"PATH": "/usr/bin:/bin", "WHO": "exec"}), how="exec"),
    "exec_user_namespace": Case(_spec(namespaces=anyns.Namespaces.DEFAULT | anyns.Namespaces.USER,
                                      user=anyns.User(1000, 1000)), how="exec"),
}


ACCEPTED: tuple[Accepted, ...] = (
    Accepted(
        "tty", "fd_flags",
        old=("0 flags: 02", "1 flags: 02", "2 flags: 02"),
        new=("0 flags: 02000002", "1 flags: 02000002", "2 flags: 02000002"),
        reason="the C child gets the terminal's slave end with ioctl(TIOCGPTPEER, O_RDWR | O_NOCTTY | "
        "O_CLOEXEC), os.openpty() opened it by path without O_CLOEXEC. dup3(slave, 0..2, 0) leaves fds 0-2 "
        "inheritable in both (the probe's own children read and write them); only the open file "
        "description's f_flags keep the O_CLOEXEC bit, which fdinfo and fcntl(F_GETFL) show and F_SETFL ignores",
    ),
)


def expected_view(name: str, golden: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The golden (Python executor's) view of case ``name`` with the accepted differences applied."""
    view = {k: list(v) for k, v in golden.items()}
    for a in ACCEPTED:
        if a.case == name and view.get(a.section) == list(a.old):
            view[a.section] = list(a.new)
    return view


# --------------------------------------------------------------------------- host set-up


@contextlib.contextmanager
def host_env() -> Iterator[Env]:
    """The directories and host mounts the cases need; all removed after."""
    base = tempfile.mkdtemp(prefix="anyns-diff-")
    shared = os.path.join(base, "shared")
    mounted: list[str] = []
    try:
        busybox = testing.busybox_rootfs(os.path.join(base, "bb"), applets=APPLETS)
        busybox_rw = testing.busybox_rootfs(os.path.join(base, "bbrw"), applets=APPLETS)
        os.makedirs(shared)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "anyns-diff", shared], check=True)
        mounted.append(shared)
        subprocess.run(["mount", "--make-shared", shared], check=True)
        os.makedirs(os.path.join(shared, "sub"))
        with open(os.path.join(shared, "plain.txt"), "w") as f:
            f.write("plain\n")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "anyns-diff-sub", os.path.join(shared, "sub")],
                       check=True)
        mounted.append(os.path.join(shared, "sub"))
        with open(os.path.join(shared, "sub", "in-sub"), "w") as f:
            f.write("sub\n")
        link = os.path.join(base, "link")
        os.symlink(os.path.join(shared, "plain.txt"), link)
        yield Env(base=base, busybox=busybox, busybox_rw=busybox_rw, shared=shared, link=link)
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", path], check=False)
        shutil.rmtree(base, ignore_errors=True)


def host_facts() -> dict[str, Any]:
    """What the views depend on besides the executor: the golden file is for this kind of host."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        cap_last = int(f.read())
    return {
        "kernel": os.uname().release,
        "cap_last_cap": cap_last,
        "sh": os.path.realpath("/bin/sh"),
        "busybox": os.path.realpath(testing.find_static_busybox()),
    }


# --------------------------------------------------------------------------- running


@attrs.frozen
class Context:
    """What normalization needs to know from outside the container."""

    host_ns: Mapping[str, str]
    peer_ns: Mapping[str, str]
    host_hostname: str
    host_domainname: str
    host_mounts: tuple[tuple[str, str, str], ...]  # (major:minor, root, mount point)
    base: str
    own_pid_ns: bool
    #: what a container inherits from whoever started the supervisor, so that the views do
    #: not depend on the shell the tests run from: rlimits (name -> "soft hard"), oom_score_adj
    host_limits: Mapping[str, str]
    host_oom_score_adj: str


def _host_ns() -> dict[str, str]:
    return {k: os.readlink(f"/proc/self/ns/{k}") for k in os.listdir("/proc/self/ns")}


def _host_mounts() -> tuple[tuple[str, str, str], ...]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" - ")[0].split()
            out.append((fields[2], _unescape(fields[3]), _unescape(fields[4])))
    return tuple(out)


def _limit(line: str) -> tuple[str, str]:
    """A line of /proc/PID/limits (columns of 26, 21 and 21 characters) -> (name, "soft hard")."""
    return line[:26].strip(), f"{line[26:47].strip()} {line[47:68].strip()}"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


async def run_case(sup: anyns.Supervisor, env: Env, case: Case) -> tuple[str, Context]:
    """Run one case; its raw report and the context to normalize it with."""
    spec = case.spec(env)
    peer_ns: dict[str, str] = {}
    if case.how == "run":
        done = await sup.run(spec, capture_stdout=True, capture_stderr=True, check=False)
    else:
        async with trio.open_nursery() as nursery:
            if case.how == "exec":
                peer_spec = attrs.evolve(spec, argv=["sleep", "60"])
            else:
                assert case.peer is not None
                peer_spec = case.peer(env)
            peer = await nursery.start(sup.run, peer_spec)
            peer_ns = {k: os.readlink(f"/proc/{peer.pid}/ns/{k}") for k in os.listdir(f"/proc/{peer.pid}/ns")}
            if case.how == "exec":
                done = await peer.exec(list(spec.argv), capture_stdout=True, capture_stderr=True, check=False)
            else:
                done = await sup.run(attrs.evolve(spec, join=anyns.Join(**dict.fromkeys(case.join, peer))),
                                     capture_stdout=True, capture_stderr=True, check=False)
            nursery.cancel_scope.cancel()
    out = (done.stdout or b"").decode(errors="replace")
    err = (done.stderr or b"").decode(errors="replace")
    raw = out + (f"@@@ stderr\n{err}" if err else "") + f"@@@ returncode\n{done.returncode}\n"
    ctx = Context(
        host_ns=_host_ns(), peer_ns=peer_ns,
        host_hostname=_read("/proc/sys/kernel/hostname"), host_domainname=_read("/proc/sys/kernel/domainname"),
        host_mounts=_host_mounts(), base=env.base, own_pid_ns=bool(spec.namespaces & anyns.Namespaces.PID),
        host_limits=dict(_limit(line) for line in _read("/proc/self/limits").splitlines()[1:]),
        host_oom_score_adj=_read("/proc/self/oom_score_adj"),
    )
    return raw, ctx


# --------------------------------------------------------------------------- normalizing


def _unescape(field: str) -> str:
    """A mountinfo path field, with its octal escapes (\\040 …) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def sections(raw: str) -> dict[str, list[str]]:
    """The probe's report split at its ``@@@ NAME`` lines: name -> non-empty lines (a tty's CRs dropped)."""
    out: dict[str, list[str]] = {}
    current = "preamble"
    for line in raw.replace("\r\n", "\n").split("\n"):
        if line.startswith("@@@ "):
            current = line[4:]
            out.setdefault(current, [])
        elif line:
            out.setdefault(current, []).append(line)
    return out


def _tmp(text: str, ctx: Context) -> str:
    text = text.replace(ctx.base, "<base>")
    return re.sub(r"/tmp/[A-Za-z0-9_.-]*anyns[A-Za-z0-9_.-]*", "<tmp>", text)


def normalize_mounts(lines: list[str], ctx: Context) -> list[str]:
    """One line per mount: mount point, what is mounted, options, propagation, parent; as a tree, depth first."""
    by_id: dict[str, str] = {}
    rows = []
    for line in lines:
        left, _, right = line.partition(" - ")
        f = left.split()
        mount_id, parent, dev, root, point, opts, optional = f[0], f[1], f[2], f[3], f[4], f[5], f[6:]
        fstype, source, superopts = [*right.split(), "", ""][:3]
        by_id[mount_id] = _unescape(point)
        rows.append((parent, dev, _unescape(root), _unescape(point), opts, optional, fstype, source, superopts))
    groups: dict[str, str] = {}

    def group(n: str) -> str:
        return groups.setdefault(n, f"g{len(groups) + 1}")

    # The tree, walked depth first with siblings by mount point (the table's order is the
    # order the namespace's list grew in, which says nothing about what the container sees);
    # mounts stacked on one point stay in table order, each the parent of the next.
    children: dict[str, list[int]] = {}
    ids = [line.split()[0] for line in lines]
    for i, row in enumerate(rows):
        parent_id = row[0] if row[0] in by_id and row[0] != ids[i] else "<outside>"
        children.setdefault(parent_id, []).append(i)
    order: list[int] = []
    stack = sorted(children.get("<outside>", []), key=lambda i: (rows[i][3], i), reverse=True)
    while stack:
        i = stack.pop()
        order.append(i)
        stack.extend(sorted(children.get(ids[i], []), key=lambda j: (rows[j][3], j), reverse=True))
    order += [i for i in range(len(rows)) if i not in order]
    out = []
    for parent, dev, root, point, opts, optional, fstype, source, superopts in (rows[i] for i in order):
        prop = []
        for o in optional:
            kind, _, n = o.partition(":")
            prop.append(f"{kind}:{group(n)}" if n else kind)
        host = [(r, p) for d, r, p in ctx.host_mounts
                if d == dev and (root == r or root.startswith(r.rstrip("/") + "/"))]
        if host:
            r, p = max(host, key=lambda rp: len(rp[0]))
            where = p.rstrip("/") + "/" + root[len(r):].strip("/") if root != r else p
            where = where.rstrip("/") or "/"
            what = f"host:{_tmp(where, ctx)}"
            opts = ",".join(o for o in opts.split(",") if o not in ("relatime", "noatime", "strictatime", "nodiratime"))
        else:
            sup = ",".join(o for o in superopts.split(",") if not o.startswith(("inode64", "nr_inodes=")))
            what = f"{fstype} {source} root={root} [{_tmp(sup, ctx)}]"
        parent_point = by_id.get(parent, "<outside>")
        out.append(f"{point} <- {what} | {opts} | {' '.join(prop) or 'private'} | parent {parent_point}")
    return out


def _ns_label(kind: str, value: str, ctx: Context) -> str:
    base_kind = kind.removesuffix("_for_children")
    if value == ctx.host_ns.get(base_kind) or value == ctx.host_ns.get(kind):
        return "host"
    if ctx.peer_ns and (value == ctx.peer_ns.get(base_kind) or value == ctx.peer_ns.get(kind)):
        return "peer"
    return "own"


def normalize(raw: str, ctx: Context) -> dict[str, list[str]]:
    """The view of one case: section name -> normalized lines."""
    s = sections(raw)
    view: dict[str, list[str]] = {}
    status = {}
    for line in s.get("status", []):
        key, _, value = line.partition(":")
        status[key] = " ".join(value.split())
    self_pid = status.get("Pid", "?")
    pids: dict[str, str] = {}
    if not ctx.own_pid_ns:
        pids = {self_pid: "<self>"}

    def pid(n: str) -> str:
        if ctx.own_pid_ns or n == "0":
            return n
        return pids.setdefault(n, f"<pid{len(pids)}>")

    for key in STATUS_KEYS:
        if key not in status:
            continue
        value = status[key]
        if key in ("Pid", "PPid", "NSpid", "NSpgid", "NSsid", "TracerPid"):
            value = " ".join(pid(v) for v in value.split())
        view.setdefault("status", []).append(f"{key}: {value}")
    stat = s.get("stat", [""])[0]
    if stat:
        tail = stat[stat.rfind(")") + 2:].split()
        comm = stat[stat.find("(") + 1: stat.rfind(")")]
        tpgid = pid(tail[5]) if tail[5] != "-1" else "-1"
        view["session"] = [
            f"comm={comm} ppid={pid(tail[1])} pgrp={pid(tail[2])} session={pid(tail[3])} tty_nr={tail[4]}"
            f" tpgid={tpgid} nice={tail[16]} threads={tail[17]} exit_signal={tail[35]} rt_priority={tail[37]}"
            f" policy={tail[38]}"
        ]
    view["mounts"] = normalize_mounts(s.get("mountinfo", []), ctx)
    ns = []
    for line in s.get("ns", []):
        kind, _, value = line.partition(" ")
        ns.append(f"{kind}: {_ns_label(kind, value, ctx)}")
    view["namespaces"] = ns
    for key in ("uid_map", "gid_map"):
        view[key] = [" ".join(line.split()) for line in s.get(key, [])]
    view["setgroups"] = s.get("setgroups", [])
    view["uts"] = [
        f"hostname: {'<host>' if h == ctx.host_hostname else h}" for h in s.get("hostname", [""])[:1]
    ] + [f"domainname: {'<host>' if d == ctx.host_domainname else d}" for d in s.get("domainname", [""])[:1]]
    view["fds"] = _fds(s.get("fds", []), ctx)
    view["fd_flags"] = [" ".join(line.split()) for line in s.get("fdflags", [])]
    view["environ"] = s.get("environ", [])
    view["umask"] = s.get("umask", [])  # the plan sets it (022), whatever the supervisor's
    view["cwd"] = s.get("cwd", [])
    limits = []
    for line in s.get("limits", [])[1:]:
        name, values = _limit(line)
        limits.append(f"{name}: {'<host>' if ctx.host_limits.get(name) == values else values}")
    view["limits"] = limits
    view["cgroup"] = [re.sub(r"[0-9a-f]{8,}|\d{3,}|(?<=/c)\d+$", "N", line) for line in s.get("cgroup", [])]
    view["oom_score_adj"] = ["<host>" if v == ctx.host_oom_score_adj else v for v in s.get("oom_score_adj", [])]
    if ctx.own_pid_ns and s.get("tree"):
        view["tree"] = _tree(s.get("tree", []), s.get("cmdline", []), self_pid)
    if "init_status" in s:  # pid 1, when it is not the probe: the init (or, joined or entered, the peer's)
        init = dict(line.partition(":")[::2] for line in s["init_status"])
        view["init_status"] = [f"{k}: {' '.join(init[k].split())}" for k in INIT_STATUS_KEYS if k in init]
        view["init_fds"] = _fds(s.get("init_fds", []), ctx)
        # the init's control variable (readable with CAP_SYS_PTRACE) names the fds the child handed it,
        # whose numbers depend on how many fds the zygote holds: kept, but not the numbers
        view["init_environ"] = [re.sub(r"^(ANYNS_INIT=\S+) \d+ \d+", r"\1 <fd> <fd>", line)
                                for line in s.get("init_environ", [])]
    view["extra"] = [_tmp(line, ctx) for line in s.get("extra", [])]
    view["prctl"] = s.get("prctl", [])
    if "stderr" in s:
        view["stderr"] = [_tmp(line, ctx) for line in s["stderr"]]
    view["returncode"] = s.get("returncode", [])
    return view


def _fds(lines: list[str], ctx: Context) -> list[str]:
    """``ls -l /proc/PID/fd`` as "fd mode target", pipe and socket inodes dropped, "?" for a link it may not
    read (pid 1 is not dumpable); ls's messages kept."""
    fds = []
    for line in lines:
        m = re.match(r"^(\S+)\s.*\s(\d+) -> (.*)$", line)
        if m:
            target = re.sub(r"^(pipe|socket):\[\d+\]$", r"\1", m.group(3))
            fds.append(f"{m.group(2)} {m.group(1)[:10]} {_tmp(target, ctx)}")
        elif m := re.match(r"^(l\S+)\s.*\s(\d+)$", line):  # a link it may not read
            fds.append(f"{m.group(2)} {m.group(1)[:10]} ?")
        elif not line.startswith("total "):
            fds.append(_tmp(line, ctx))
    return fds


def _tree(stats: list[str], cmdlines: list[str], self_pid: str) -> list[str]:
    """pid ppid state comm cmdline of each process but the probe's helpers (children of the probe)."""
    procs = {}
    for line in stats:
        comm = line[line.find("(") + 1: line.rfind(")")]
        tail = line[line.rfind(")") + 2:].split()
        pid = line.split()[0]
        if tail[1] == self_pid and pid != self_pid:
            continue
        procs[int(pid)] = (tail[1], comm)
    cmd = {}
    for line in cmdlines:
        pid, _, rest = line.partition(" ")
        cmd[pid] = rest.strip()
    out = []
    for p in sorted(procs):
        ppid, comm = procs[p]
        c = cmd.get(str(p), "?")
        if str(p) == self_pid:
            c = "<probe>"
        out.append(f"{p} ppid={ppid} comm={comm} cmdline={c}")
    return out


# --------------------------------------------------------------------------- all of it


async def collect(names: list[str] | None = None, *, raw: bool = False) -> dict[str, Any]:
    """The views (or raw reports) of the named cases (all by default)."""
    out: dict[str, Any] = {}
    with host_env() as env:
        for name in names or list(CASES):
            with trio.fail_after(60):
                async with anyns.open_supervisor() as sup:  # each case from a fresh zygote, as the test runs it
                    text, ctx = await run_case(sup, env, CASES[name])
            out[name] = text if raw else normalize(text, ctx)
    return out


async def view_of(name: str) -> dict[str, list[str]]:
    """One case's view (what the test compares)."""
    views = await collect([name])
    result: dict[str, list[str]] = views[name]
    return result


def diff(golden: Mapping[str, list[str]], now: Mapping[str, list[str]]) -> str:
    """A readable diff of two views, section by section; empty when equal."""
    parts = []
    for key in sorted(set(golden) | set(now)):
        a, b = golden.get(key, []), now.get(key, [])
        if a != b:
            lines = difflib.unified_diff(a, b, f"old {key}", f"new {key}", lineterm="", n=1)
            parts.append("\n".join(lines))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.differential", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", metavar="PATH", help="write the golden views of every case to PATH")
    parser.add_argument("--show", metavar="NAME", action="append", help="print the view of a case")
    parser.add_argument("--raw", metavar="NAME", action="append", help="print the raw report of a case")
    args = parser.parse_args(argv)
    print(f"anyns from {anyns.__file__}", file=sys.stderr)
    if args.write:
        views = trio.run(collect)
        where = os.path.dirname(os.path.abspath(anyns.__file__))
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True)
        doc = {"anyns_commit": commit.stdout.strip() or "?", "host": host_facts(), "cases": views}
        os.makedirs(os.path.dirname(os.path.abspath(args.write)), exist_ok=True)
        with open(args.write, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {len(views)} cases to {args.write}", file=sys.stderr)
    for name in args.show or []:
        print(json.dumps(trio.run(view_of, name), indent=1))
    for name in args.raw or []:
        print(trio.run(lambda n=name: collect([n], raw=True))[name])


if __name__ == "__main__":
    main()
