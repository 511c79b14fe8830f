"""Compile a ContainerSpec into the ordered steps the cloned child runs.

This module is the one place where the setup order is written down. It is
pure: host facts it needs (which of /bin, /lib… are links, which /etc entries
exist, where the per-container root is mounted) come in as a ``HostLayout``
that the supervisor probes once.

A plan is a tuple of operations ``(step, call, path, args)``:

* ``step``: the phase reported in errors (``"rootfs"``, ``"dev"``, ``"exec"`` …);
* ``call``: the name of the child-side operation (``_zygote/_ops.py``'s ``OPS``,
  run by the native core ``_native/spawn.c``), which names the syscall an error reports;
* ``path``: the path an error message names (inside the container when the
  container's view is clearer), or None;
* ``args``: plain str / int / None / tuple values; paths are str and become
  bytes in the zygote.

The order (each line a step)::

    cgroup       with a cgroup (``limits``, or no pid namespace of its own:
                 ``needs_cgroup``): move into the leaf's v1 cgroups (the
                 v2 one it was born in: clone3 CLONE_INTO_CGROUP), first, so
                 that all of its setup is accounted and a cgroup namespace is
                 rooted at the leaf
    userns       with a user namespace (clone3 made it, with the pid one):
                 wait until the supervisor has written the uid/gid maps, then
                 become root inside; every namespace unshared after this is
                 owned by it
    namespaces   setns into joined namespaces (a joined pid namespace is
                 entered by the zygote before the clone), then
                 unshare every namespace but PID (which only clone3 can give
                 the child itself); done here, in parallel children, rather
                 than in the serial zygote's clone3: a network namespace alone
                 costs the creator ~0.4 ms
    propagation  clone the sources of shared and slave binds (still peers of
                 the host's mounts; these ops report as step "mounts"), then
                 make / rslave (or rprivate): nothing the
                 container mounts reaches the host, host unmounts still reach
                 the container (runc's default)
    rootfs       the new root: a copy of the zygote's prebuilt HostRootfs skeleton
                 (``_skeleton``: tmpfs, read-only host binds, mount points), a
                 bind of a directory, or an overlay with its own upper layer;
                 then the files (``spec.files``) that land on the root: on a
                 read-only one (HostRootfs, a read-only DirRootfs, which gets
                 an overlay for their mount points) written on a detached tmpfs
                 of the container's own and each bound on its path; on an
                 OverlayRootfs written into its writable layer
    dev          /dev: a nodev tmpfs with the host's standard nodes bound on
                 empty files (bubblewrap's --dev: a node made inside opens
                 nothing), a devpts instance, /dev/shm
    tmp          /tmp: tmpfs
    proc         /proc for the new pid namespace (before the pivot: in a user
                 namespace proc can only be mounted while the host's is visible);
                 then the masked and read-only paths
    mounts       the spec's mounts, in order: each a detached copy (open_tree)
                 whose attributes are set before it is attached; then the files
                 under /tmp, /dev/shm and the spec's Tmpfs mounts

                 From the root on, every step names a container path that the
                 child resolves beneath a mount it made (the root, /dev, /proc:
                 ``anchor_of`` in ``_native/spawn.c``) with openat2 and no symlink followed, and
                 mounts onto the fd it got: a path string inside a root that
                 another container may write is never resolved twice (runc's
                 CVE-2019-16884, CVE-2019-19921, CVE-2025-31133)
    pivot_root   pivot_root(".", ".") and detach the old root (runc, LXC); a
                 rootless child then sends the supervisor an fd of its root
                 (``Container.read_file``: /proc/PID/root is closed to it)
    hostname     sethostname, setdomainname
    network      lo up; with a Bridge, wait until the supervisor has wired eth0
    process      umask, cwd, stdio, close every other fd, signal dispositions and
                 mask, rlimits
    security     a new session; cut the bounding set; the seccomp filter; the
                 program's uid/gid/groups (``user``); keep only the allowed
                 capabilities; no_new_privs (``_security``)
    pdeathsig    PR_SET_PDEATHSIG last (credential changes clear it), then check
                 the supervisor is still alive
    exec         execve, trying each PATH entry like execvp; or execveat the
                 init program (``_init``: a small static C program, no fork of
                 the zygote), which starts the program and waits for it: as
                 pid 1 with ``init`` (and a pid namespace of its own), as a
                 child subreaper without a pid namespace where no cgroup can
                 be had (rootless), as the waiter of a rootless exec; with
                 ``collect`` (``compile_plan``), as pid 1 that holds the
                 container after the program's end until the supervisor has
                 read the files (``hold_with_init``)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

from ._errors import SpecError
from ._security_defaults import CAPABILITIES
from ._spec import (
    DEFAULT_PATH,
    ENTRY_ORDER,
    KIND_FLAGS,
    RLIMITS,
    Bind,
    Bridge,
    ContainerSpec,
    DirRootfs,
    File,
    HostRootfs,
    Namespaces,
    OverlayRootfs,
    Tmpfs,
    effective_namespaces,
    files_on_root,
    joined_namespaces,
    needs_cgroup,
    user_namespace_map,
)
from ._sys._consts import (
    MNT_DETACH,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MOUNT_ATTR_STRICTATIME,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    MS_SLAVE,
    MS_UNBINDABLE,
)

Arg = str | int | None | tuple[str, ...] | tuple[int, ...]
Op = tuple[str, str, str | None, tuple[Arg, ...]]

#: (name, major, minor) of the device nodes in the container's /dev (what OCI requires).
DEVICES: Final = (
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
)
_DEV_LINKS: Final = (
    ("pts/ptmx", "ptmx"), ("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"),
)
#: directories made in a HostRootfs root besides the mount points
_ROOT_DIRS: Final = ("usr", "etc", "proc", "dev", "tmp", "run", "root", "home", "var")
_PROPAGATION_FLAGS: Final = {"private": MS_PRIVATE, "slave": MS_SLAVE, "unbindable": MS_UNBINDABLE}
_RO_ATTRS: Final = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
_DEFAULT_UMASK: Final = 0o022
_PAGE: Final = 4096
#: room a file on a read-only root may grow by, in all (``_bind_files``)
_FILES_ROOM: Final = 1 << 20
#: the tmpfs under the overlay a read-only DirRootfs gets for files: it holds only their mount points
_MOUNT_POINTS_SIZE: Final = 1 << 20
#: the first fd a user-namespaced child holds host paths at (see ``hold_path``);
#: close-on-exec, above what the child has open (a few dozen), and far below
#: any RLIMIT_NOFILE soft limit a container would run with (1024 at least)
_HELD_FDS: Final = 100
#: why ``run(collect=...)`` is refused: only the init can hold a container after its program's end
COLLECT_NEEDS_INIT: Final = ("collect: the files are read after the program's end, while the init holds the "
                             "container: it needs init=True and a pid namespace of its own (Namespaces.PID, "
                             "not joined)")


@attrs.frozen
class HostLayout:
    """Facts about the host that a plan depends on, probed once by the supervisor.

    Attributes:
        newroot: an empty host directory; each container mounts its own root on
            it inside its private mount namespace, so no per-container host
            directory is ever made.
        top_links: ``(name, target)`` for each of bin/lib/lib64/sbin… that is a
            symlink on the host (merged /usr).
        top_dirs: those of them that are real directories (bound read-only).
        etc_files: /etc entries that are files on the host.
        etc_dirs: /etc entries that are directories on the host.
        cgroup_v2: whether a container with a cgroup is born in a v2 leaf.
        cgroup_v1: the v1 hierarchies (by controllers) whose leaf such a
            container enters itself, in the order of the fds a spawn carries.
        rootless: the supervisor is an unprivileged user: it can write a
            child's maps only while the child is dumpable (its /proc files are
            then the user's, not root's).
    """

    newroot: str
    top_links: tuple[tuple[str, str], ...] = ()
    top_dirs: tuple[str, ...] = ()
    etc_files: tuple[str, ...] = ()
    etc_dirs: tuple[str, ...] = ()
    cgroup_v2: bool = False
    cgroup_v1: tuple[str, ...] = ()
    rootless: bool = False


@attrs.frozen
class Plan:
    """What the zygote needs to make one kind of container.

    Attributes:
        clone_flags: the CLONE_NEW* flags for clone3.
        ops: the ordered operations of the child.
        skeleton: the HostRootfs root the zygote prebuilds (``_skeleton``), or None.
        extra_kinds: the namespace sources each spawn request brings as extra
            fds, in order: a kind (``"net"`` …) for ``Join``, ``"container"``
            for the pidfd of the container an exec enters.
        enter: ``(extra fd index, CLONE_NEW* flags)``: namespaces the zygote
            steps into before it clones (an exec; a joined pid namespace).
        cgroup: the extra fd index of the v2 cgroup directory the zygote
            clones into, or -1.
        dumpable: the child is born dumpable (the zygote is for the moment of
            the clone): an unprivileged supervisor can write its uid/gid maps
            only then (its /proc files are the user's, not root's).
        sent_namespaces: the kinds of the namespace files the child sends the
            supervisor, in this order, before it makes itself non-dumpable (a
            rootless container: the supervisor could not open them later).
            The error channel is then a socket, as for ``tty``.
        holds_init: the init holds the container after its program's end
            until the supervisor releases it (``run(collect=...)``): its
            status channel is a socket, whose EOF is the release.
    """

    clone_flags: int
    ops: tuple[Op, ...]
    skeleton: tuple[tuple[Arg, ...], ...] | None = None
    tty: bool = False
    extra_kinds: tuple[str, ...] = ()
    enter: tuple[tuple[int, int], ...] = ()
    cgroup: int = -1
    dumpable: bool = False
    sent_namespaces: tuple[str, ...] = ()
    holds_init: bool = False

    @property
    def channel_is_socket(self) -> bool:
        """The error channel carries fds (a terminal, namespace files): a SEQPACKET socket, not a pipe."""
        return self.tty or bool(self.sent_namespaces)

    def extra_fds(self, by_kind: Mapping[str, Sequence[int]]) -> list[int]:
        """The extra fds of one spawn request, in ``extra_kinds`` order: the one place that order is known.

        ``by_kind[kind]`` holds the fds of that kind, each taken in turn: one
        for a joined kind (``"net"`` …), ``"container"``, ``"go"`` and
        ``"status"``; for ``"leaf"`` the container's cgroup leaf's fds as
        ``Leaf.open_fds`` gives them (the v2 directory, then each v1
        ``cgroup.procs``), from which the ``"leaf1"`` kinds take theirs too.
        (``"cgroup"`` is a joined cgroup namespace, like ``"net"``.) Kinds
        the plan lacks are ignored.

        Raises:
            ValueError: a kind of the plan with no fd (left) for it.
        """
        taken = {kind: iter(fds) for kind, fds in by_kind.items()}
        out = []
        for kind in self.extra_kinds:
            fd = next(taken.get("leaf" if kind == "leaf1" else kind, iter(())), None)
            if fd is None:
                raise ValueError(f"the plan's extra fd {kind!r} was not given")
            out.append(fd)
        return out

    def to_wire(self) -> dict[str, object]:
        """The JSON-able form the zygote receives (see ``_protocol``)."""
        return {
            "flags": self.clone_flags,
            "ops": [list(op) for op in self.ops],
            "skeleton": None if self.skeleton is None else [list(op) for op in self.skeleton],
            "extra": len(self.extra_kinds),
            "enter": [list(e) for e in self.enter],
            "cgroup": self.cgroup,
            "dumpable": int(self.dumpable),
        }


class _Builder:
    """Collects operations; one method per kind, named by what it does."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.ops: list[Op] = []
        #: host path -> the /proc/self/fd path it is held open at (user namespaces)
        self.held: dict[str, str] = {}

    def host(self, path: str) -> str:
        """How the child reaches host path ``path``: itself, or the fd it opened before leaving host root."""
        return self.held.get(path, path)

    def op(self, step: str, call: str, path: str | None, *args: Arg) -> None:
        self.ops.append((step, call, path, args))

    def beneath(self, step: str, call: str, path: str, *args: Arg) -> None:
        """An operation on container path ``path``, which the child resolves beneath the mounts it made."""
        self.op(step, call, path, path, *args)


def compile_plan(spec: ContainerSpec, host: HostLayout, *, collect: bool = False) -> Plan:
    """Turn ``spec`` into a ``Plan``; pure, and cached by the supervisor per spec and ``collect``.

    ``collect``: the supervisor reads files of the container after its
    program's end (``run(collect=...)``), so the init holds the container
    until then (``hold_with_init``).

    Raises:
        SpecError: ``collect`` for a container without the init as its pid 1.
    """
    ns = effective_namespaces(spec)
    b = _Builder(host.newroot)
    joined = joined_namespaces(spec)
    extra_kinds = tuple(joined)
    extra_kinds, cgroup = _cgroup_steps(b, spec, host, extra_kinds)
    enter: list[tuple[int, int]] = []
    for index, kind in enumerate(joined):
        flag = int(KIND_FLAGS[kind])
        if kind == "pid":
            enter.append((index, flag))  # only the zygote can: it changes where children are born

    # With a bridge the supervisor needs the network namespace the moment the
    # clone is answered (to put the veth peer in it), so clone3 makes it. A
    # user namespace, too: its maps are written from outside before the child
    # goes on, and the pid namespace it owns must be born with it.
    id_map = user_namespace_map(spec)
    born_with = Namespaces.PID | Namespaces.USER | (Namespaces.NET if isinstance(spec.network, Bridge)
                                                     else Namespaces(0))
    clone_flags = int(ns & born_with)
    if isinstance(spec.network, Bridge) or id_map is not None:
        # a pipe: the child waits on it until the supervisor has written its maps and wired eth0
        extra_kinds += ("go",)
    if id_map is not None:
        b.op("userns", "wait_go", None, extra_kinds.index("go"))
    for index, kind in enumerate(joined):
        if kind != "pid":
            b.op("namespaces", "setns", kind, index, int(KIND_FLAGS[kind]))
    unshared = int(ns) & ~clone_flags & ~int(Namespaces.PID)
    if unshared:
        b.op("namespaces", "unshare", None, unshared)
    if unshared & Namespaces.TIME:
        b.op("namespaces", "enter_time_namespace", "time")
    sent: tuple[str, ...] = ()
    if id_map is not None:
        _become_root(b, spec)
    if id_map is not None and host.rootless:
        # Born dumpable for the supervisor to write its maps, the child would
        # stay so: its program (the same host uid) could read the init's
        # memory and environment. Before it stops being dumpable, it hands the
        # supervisor its namespace files: an unprivileged supervisor may not
        # open those of a non-dumpable process, nor setns through its pidfd.
        # Joined namespaces are not among them: a rootless Join is refused (UnsupportedError) for now.
        assert not joined, "a rootless container cannot join namespaces"
        sent = sent_kinds(ns)
        b.op("namespaces", "send_namespaces", None, sent)
        b.op("userns", "not_dumpable", None)
    init = _init_call(spec, ns, host)
    if collect:
        if init != "spawn_with_init":
            raise SpecError(COLLECT_NEEDS_INIT)
        init = "hold_with_init"
    if init is not None:
        extra_kinds += ("status",)  # a pipe: the init writes the program's wait status on it (last extra fd)

    if "mnt" in joined:
        # Another container's file system view: its root is already ours.
        _process_steps(b, spec, ns, extra_kinds, init)
        return Plan(clone_flags=clone_flags, ops=tuple(b.ops), extra_kinds=extra_kinds, enter=tuple(enter),
                    tty=spec.tty, cgroup=cgroup, dumpable=id_map is not None and host.rootless,
                    sent_namespaces=sent, holds_init=collect)

    # A shared bind must stay a peer of its host mount: clone it now, while
    # the copied tree is still in the host's peer groups; it is attached in
    # the mounts step (turning the tree slave first would make a bind of it a slave).
    # So must a slave bind: made after an rprivate it would copy a private mount.
    shared = [m for m in spec.mounts if isinstance(m, Bind) and m.propagation in ("shared", "slave")]
    for mount in shared:
        # Labelled "mounts": a failure here is about that bind's source, as for every other bind.
        b.op("mounts", "open_tree", mount.source, b.host(mount.source), int(mount.recursive))
    flag = MS_SLAVE if spec.root_propagation == "slave" else MS_PRIVATE
    b.op("propagation", "mount", "/", None, "/", None, MS_REC | flag, None)

    skeleton = None
    root_files = files_on_root(spec)
    if isinstance(spec.rootfs, HostRootfs):
        skeleton = _host_skeleton(spec, host, b)  # has every mount point below
        b.op("rootfs", "attach_skeleton", "/", host.newroot)
        _bind_files(b, root_files)
    elif isinstance(spec.rootfs, OverlayRootfs):
        _overlay_rootfs(b, spec.rootfs, in_userns=id_map is not None, files=root_files)
    elif root_files:
        # A read-only directory with files: an overlay whose upper layer (the
        # container's) holds the files' mount points, so that directories the
        # host directory lacks appear; then read-only, as the directory is.
        _overlay_rootfs(b, OverlayRootfs(spec.rootfs.path, size=_MOUNT_POINTS_SIZE), in_userns=id_map is not None,
                        mount_points=tuple(path for path, _ in root_files))
        _bind_files(b, root_files)
        b.op("files", "root_readonly", "/", _RO_ATTRS)
    else:
        _dir_rootfs(b, spec.rootfs)
    # From here on every path is a container path, resolved beneath a mount
    # this child made (the root, then /dev and /proc), never re-resolved from a
    # string: another container that can write a directory root may swap any
    # of its directories for a symlink between two steps.
    # /dev: a nodev tmpfs (a node made with CAP_MKNOD opens nothing) with the
    # host's standard nodes bound on empty files, as bubblewrap's --dev.
    b.beneath("dev", "fsmount_at", "/dev", "tmpfs", ("source=tmpfs", "mode=0755", "size=64k"),
              MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_STRICTATIME)
    for name, _major, _minor in DEVICES:
        b.beneath("dev", "bind_device", f"/dev/{name}", f"/dev/{name}")
    for name in ("pts", "shm"):
        b.beneath("dev", "mkdir_at", f"/dev/{name}")
    # gid 5 (tty) owns the terminals, if the user namespace (if any) maps it
    tty_gid = ",gid=5" if id_map is None or id_map.maps_gid(5) else ""
    b.beneath("dev", "mount_at", "/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620" + tty_gid)
    b.beneath("dev", "mount_at", "/dev/shm", "shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={spec.shm_size}")
    # No /dev/mqueue mount: mq_open(3) works without it, and a mount costs
    # twice (made here, torn down at exit) on every container.
    for target, name in _DEV_LINKS:
        b.beneath("dev", "symlink_at", f"/dev/{name}", target)

    b.beneath("tmp", "mount_at", "/tmp", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={spec.tmp_size}")

    if id_map is not None and Namespaces.PID not in ns:
        # A user namespace may mount proc only for a pid namespace it owns:
        # without one of its own, the container sees the host's processes anyway.
        b.beneath("proc", "bind_anchor", "/proc", "/proc")
    else:
        b.beneath("proc", "fsmount_at", "/proc", "proc", ("source=proc",),
                  MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)
    if spec.masked_paths or spec.readonly_paths:
        # runc's masked and read-only paths, on the new /proc (and /sys, where there is one)
        b.op("proc", "mask_paths", None, spec.masked_paths, spec.readonly_paths)

    for each in spec.mounts:
        _user_mount(b, each, shared.index(each) if each in shared else -1)
    # Files on /tmp, /dev/shm and the spec's Tmpfs mounts: written there once all are in place.
    for path, file in spec.files:
        if (path, file) not in root_files:
            _write_file(b, path, file)

    # pivot_root(".", "."): the old root ends up stacked under the new one and
    # is detached lazily; no put_old directory is needed (runc, LXC, pivot_root(2)).
    b.op("pivot_root", "chdir_root", "/")
    b.op("pivot_root", "pivot_root", "/", ".", ".")
    b.op("pivot_root", "umount2", "/", ".", MNT_DETACH)
    if sent:  # rootless: the supervisor cannot open /proc/PID/root of a non-dumpable init
        b.op("pivot_root", "send_root", None)

    _process_steps(b, spec, ns, extra_kinds, init)
    return Plan(clone_flags=clone_flags, ops=tuple(b.ops), skeleton=skeleton,
                extra_kinds=extra_kinds, enter=tuple(enter), tty=spec.tty, cgroup=cgroup,
                dumpable=id_map is not None and host.rootless, sent_namespaces=sent, holds_init=collect)


def _cgroup_steps(b: _Builder, spec: ContainerSpec | None, host: HostLayout, extra_kinds: tuple[str, ...]
                  ) -> tuple[tuple[str, ...], int]:
    """With a cgroup (``needs_cgroup``): the leaf's fds (v2 directory, then each v1 cgroup.procs) and the v1 moves.

    Returns the extra kinds with the cgroup fds added, and the index of the v2
    directory (-1 if none). ``spec`` None: the process has a cgroup (an exec
    joining its container's).
    """
    if spec is not None and not needs_cgroup(spec, host.rootless):
        return extra_kinds, -1
    cgroup = -1
    if host.cgroup_v2:
        cgroup = len(extra_kinds)
        extra_kinds += ("leaf",)  # not "cgroup": that is a joined cgroup namespace's kind
    for name in host.cgroup_v1:
        b.op("cgroup", "cgroup_enter", name, len(extra_kinds))
        extra_kinds += ("leaf1",)
    return extra_kinds, cgroup


def _become_root(b: _Builder, spec: ContainerSpec) -> None:
    """In a user namespace: hold the host paths the setup needs, then become root inside.

    Root inside is an unprivileged uid on the host, so host paths it could
    not reach (a bind source under a 0700 directory) are opened first, while
    the child still has host root's uid, and used through /proc/self/fd. They
    are opened after unshare(CLONE_NEWNS): a mount of the host's namespace
    could not be bound into ours.
    """
    sources = [("mounts", m.source) for m in spec.mounts if isinstance(m, Bind)]
    no_follow = {m.source for m in spec.mounts if isinstance(m, Bind) and not m.follow_symlinks}
    if isinstance(spec.rootfs, DirRootfs):
        sources.insert(0, ("rootfs", spec.rootfs.path))
    elif isinstance(spec.rootfs, OverlayRootfs):
        sources[:0] = [("rootfs", layer) for layer in spec.rootfs.lower]
    for step, source in dict.fromkeys(sources):
        if source in b.held:
            continue
        fd = _HELD_FDS + len(b.held)
        b.op(step, "hold_path", source, source, fd, int(source not in no_follow))
        b.held[source] = f"/proc/self/fd/{fd}"
    b.op("userns", "become_root", None)


def _init_call(spec: ContainerSpec, ns: Namespaces, host: HostLayout) -> str | None:
    """The exec step's call when the init program starts the container's program (``_init``), else None.

    With a pid namespace of its own, ``spec.init`` decides: the init is its
    pid 1 (``spawn_with_init``). Without one, what the program leaves
    running would outlive it: a container with a cgroup (``needs_cgroup``:
    any from a root supervisor) has it killed through the cgroup; one
    without (rootless) gets the init as a child subreaper that kills it when
    the program ends (``subreaper``), whatever ``spec.init`` says, as that
    init is not pid 1 and changes nothing else the program sees.
    """
    if Namespaces.PID in ns:
        return "spawn_with_init" if spec.init else None
    return None if needs_cgroup(spec, host.rootless) else "subreaper"


def _process_steps(b: _Builder, spec: ContainerSpec, ns: Namespaces, extra_kinds: tuple[str, ...],
                   init: str | None) -> None:
    """From hostname to execve: what every container does after its file system is in place."""
    if spec.hostname is not None:
        b.op("hostname", "sethostname", None, spec.hostname)
    if spec.domainname is not None:
        b.op("hostname", "setdomainname", None, spec.domainname)
    if Namespaces.NET in ns:
        b.op("network", "interface_up", "lo", "lo")
    if "go" in extra_kinds and user_namespace_map(spec) is None:  # with one, it waited first thing
        b.op("network", "wait_go", "eth0", extra_kinds.index("go"))
    _exec_steps(b, spec, None if init is None else (init, extra_kinds.index("status")))


def _exec_steps(b: _Builder, spec: ContainerSpec, init: tuple[str, int] | None = None) -> None:
    """From umask to execve; ``init``: the init's call (``_init_call``) and the extra fd index of its status pipe.

    With an init, the child execs the init program, which starts the program
    (its own exec failures are reported as the child's would be) and writes
    its exact status on the pipe.
    """
    b.op("process", "umask", None, _DEFAULT_UMASK)
    b.op("process", "chdir", spec.cwd, spec.cwd)
    if spec.tty:
        # A terminal from the container's own devpts (/dev/ptmx -> pts/ptmx): the
        # child makes it, sends the supervisor its master end, and takes the other.
        b.op("process", "tty", "/dev/ptmx", *spec.tty_size)
    else:
        b.op("process", "stdio", None)
    b.op("process", "close_fds", None)
    b.op("process", "signals", None)
    # Last before exec: a low nofile, as or nproc must not trip the child's own setup.
    for name, soft, hard in spec.rlimits:
        b.op("process", "setrlimit", name, RLIMITS[name], soft, hard)
    _security_steps(b, spec)
    b.op("pdeathsig", "pdeathsig", None)
    env = tuple(f"{k}={v}" for k, v in spec.env.items())
    if init is not None:
        call, status = init
        b.op("exec", call, spec.argv[0], status, _exec_candidates(spec), spec.argv, env)
    else:
        b.op("exec", "execve", spec.argv[0], _exec_candidates(spec), spec.argv, env)


def _security_steps(b: _Builder, spec: ContainerSpec) -> None:
    """The hardening (``_security``), in the one order that works.

    The bounding set is cut and the filter installed while the child still
    has every capability (without no_new_privs a filter needs CAP_SYS_ADMIN);
    then the uid changes (which empties the capabilities of a non-root
    user), then root keeps only its capabilities, then no_new_privs.
    """
    if spec.new_session and not spec.tty:  # a terminal's own setsid came with it
        b.op("security", "setsid", None)
    dropped = tuple(sorted(n for name, n in CAPABILITIES.items() if name not in spec.capabilities))
    if dropped:
        b.op("security", "drop_bounding", None, dropped)
    if spec.seccomp is not None:  # the supervisor compiles it: the profile's rules depend on the capabilities
        b.op("security", "seccomp", None, tuple(sorted(spec.seccomp.deny)), spec.seccomp.errno,
             tuple(sorted(spec.capabilities)), tuple(sorted(spec.seccomp.allow)))
    if spec.user is not None:  # after everything that needs root; it clears PDEATHSIG, which comes next
        b.op("security", "set_user", None, spec.user.uid, spec.user.gid, spec.user.groups)
    if dropped and (spec.user is None or spec.user.uid == 0):
        kept = sum(1 << n for name, n in CAPABILITIES.items() if name in spec.capabilities)
        b.op("security", "capset", None, kept)
    if spec.no_new_privileges:
        b.op("security", "no_new_privs", None)


def sent_kinds(namespaces: Namespaces) -> tuple[str, ...]:
    """The kinds of ``namespaces`` in the order a process enters them: the user namespace first."""
    return tuple(kind for kind in ENTRY_ORDER if KIND_FLAGS[kind] & namespaces)


def compile_exec_plan(spec: ContainerSpec, container_namespaces: Namespaces, host: HostLayout | None = None,
                      userns: bool = False, rootless: bool = False) -> Plan:
    """A process run inside a running container (``Container.exec``); pure.

    The zygote enters all of ``container_namespaces`` through the container's
    pidfd (the first extra fd), so the clone is born in its pid namespace with
    its root; the child then only sets up the process and execs ``spec.argv``
    with ``spec.env`` in ``spec.cwd``. With ``host`` (given when the
    container has a cgroup) it joins the container's cgroup: born in its v2 leaf, it enters the v1 ones itself,
    and a cgroup namespace is entered by the child after that (entered
    first, it would hide the leaf the clone goes into). With ``userns`` the
    child enters the container's user namespace itself (the zygote could
    not come back from it) and becomes root there, or ``spec.user``.

    ``rootless`` (an unprivileged supervisor, whose zygote may not enter
    namespaces its user namespace does not own): the child enters them all,
    user first, through the namespace files the container sent when it was
    made (``Plan.sent_namespaces``, the extra fds); a pid namespace only takes children, so it
    execs the init program as a waiter (``fork_and_wait``), which forks the
    program into it, dying with the waiter, passes signals on and reports
    its exact status; into a container without a pid namespace, the waiter
    is a child subreaper too (``subreaper``), as that container's init is.
    """
    if rootless:
        b = _Builder("/")
        kinds = sent_kinds(container_namespaces | Namespaces.USER)
        extra_kinds: tuple[str, ...] = (*kinds, "container", "status")
        for index, kind in enumerate(kinds):  # the user namespace first: it owns the others
            b.op("namespaces", "setns", kind, index, int(KIND_FLAGS[kind]))
        # The files keep the namespaces of a container that has died (not yet
        # reaped): entered, they must still have their init (its pidfd).
        b.op("namespaces", "check_alive", None, extra_kinds.index("container"))
        b.op("userns", "become_root", None)
        waiter = "fork_and_wait" if Namespaces.PID in container_namespaces else "subreaper"
        _exec_steps(b, spec, (waiter, extra_kinds.index("status")))
        return Plan(clone_flags=0, ops=tuple(b.ops), extra_kinds=extra_kinds, tty=spec.tty)
    b = _Builder("/")
    flags = int(container_namespaces)
    cgroup = -1
    extra_kinds = ("container",)
    if host is not None:  # the container has a cgroup: the process joins it
        extra_kinds, cgroup = _cgroup_steps(b, None, host, extra_kinds)
        if flags & Namespaces.CGROUP:
            flags &= ~int(Namespaces.CGROUP)
            b.op("namespaces", "setns", "cgroup", 0, int(Namespaces.CGROUP))
    if flags & Namespaces.TIME:
        # Not entered by the zygote: a process whose memory a set-up child shares may not
        # enter a time namespace (EUSERS), so this child does, in a memory of its own.
        flags &= ~int(Namespaces.TIME)
        b.op("namespaces", "setns", "time", 0, int(Namespaces.TIME))
    if userns:
        flags &= ~int(Namespaces.USER)
        b.op("userns", "setns", "user", 0, int(Namespaces.USER))
        b.op("userns", "become_root", None)
    _exec_steps(b, spec)
    return Plan(clone_flags=0, ops=tuple(b.ops), extra_kinds=extra_kinds,
                enter=((0, flags),), tty=spec.tty, cgroup=cgroup)


def _host_skeleton(spec: ContainerSpec, host: HostLayout, b: _Builder) -> tuple[tuple[Arg, ...], ...]:
    """The HostRootfs root as ``_skeleton`` operations (paths relative to the root)."""
    rootfs = spec.rootfs
    assert isinstance(rootfs, HostRootfs)
    ops: list[tuple[Arg, ...]] = [("mkdir", name) for name in _ROOT_DIRS]
    ops += [("symlink", target, name) for name, target in host.top_links]
    ops += [("mkdir", name) for name in host.top_dirs]
    wanted = set(rootfs.etc)
    ops += [("mkdir", f"etc/{name}") for name in host.etc_dirs if name in wanted]
    ops += [("touch", f"etc/{name}") for name in host.etc_files if name in wanted]
    # Mount points of the spec's mounts exist before the host binds (so making
    # one never writes through a bind into the host) and before the root turns
    # read-only; so do those of the files on the root (``_bind_files``).
    for mount in spec.mounts:
        source = b.host(mount.source) if isinstance(mount, Bind) else None
        ops.append(("mountpoint", source, mount.target.lstrip("/")))
    ops += [("touch", path.lstrip("/")) for path, _ in files_on_root(spec)]
    ops += [("bind", f"/{name}", name, 1) for name in ("usr", *host.top_dirs)]
    ops += [("bind", f"/etc/{name}", f"etc/{name}", 1) for name in host.etc_dirs if name in wanted]
    ops += [("bind", f"/etc/{name}", f"etc/{name}", 0) for name in host.etc_files if name in wanted]
    # One recursive call makes the root and every bind in it read-only.
    ops.append(("readonly",))
    return tuple(ops)


def _overlay_rootfs(b: _Builder, rootfs: OverlayRootfs, in_userns: bool = False,
                    files: tuple[tuple[str, File], ...] = (), mount_points: tuple[str, ...] = ()) -> None:
    """overlayfs on ``<newroot>/root``; the per-container upper layer lives on a tmpfs at ``<newroot>``.

    ``files`` (and empty files at ``mount_points``) are written into that
    upper layer before the overlay is mounted: so the directories made for
    them are the container's own, also in a user namespace where the lower
    layers' directories belong to ids its map lacks (and cannot be written).

    The tmpfs is detached with the old root after the pivot, and lives on as
    long as the overlay that uses it: it vanishes with the container. In a
    user namespace overlay keeps its metadata in ``user.overlay.*`` xattrs
    (``userxattr``; ``trusted.*`` needs host root) and reaches the lower
    layers through the fds held before becoming root inside; files of the
    lower layers owned by ids the map lacks can be read, not changed.
    """
    scratch = b.root
    if rootfs.upper is None:  # the writable layer is bounded by the tmpfs under it (OverlayRootfs.size)
        b.op("rootfs", "mount", "/", "tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0755,size={rootfs.size}")
        upper, work = f"{scratch}/upper", f"{scratch}/work"
        b.op("rootfs", "mkdir", None, upper)
        b.op("rootfs", "mkdir", None, work)
        for path, file in files:
            b.op("files", "write_file_under", path, upper, path, file.data.hex(), file.mode)
        for path in mount_points:
            b.op("files", "mkpath", path, upper, path.lstrip("/"), 1)
    else:
        upper, work = f"{rootfs.upper}/diff", f"{rootfs.upper}/work"
        b.op("rootfs", "makedirs", rootfs.upper, upper)  # a host path the caller chose
        b.op("rootfs", "makedirs", rootfs.upper, work)
        b.op("rootfs", "mount", "/", "tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    b.op("rootfs", "mkdir", None, f"{scratch}/root")
    for layer in rootfs.lower:  # so that a missing layer is named, not just "overlay: ENOENT"
        b.op("rootfs", "stat", layer, b.host(layer))
    lower = ":".join(b.host(layer) for layer in rootfs.lower)
    data = f"lowerdir={lower},upperdir={upper},workdir={work}" + (",userxattr" if in_userns else "")
    # nodev: the writable layer is the container's, and a node made there opens nothing
    b.op("rootfs", "mount", rootfs.lower[0], "overlay", f"{scratch}/root", "overlay", MS_NODEV, data)
    b.root = f"{scratch}/root"
    b.op("rootfs", "root_anchor", "/", b.root)


def _bind_files(b: _Builder, files: tuple[tuple[str, File], ...]) -> None:
    """Files on a read-only root: written on a tmpfs of the container's own, each bound on its path.

    The tmpfs is made detached (fsmount) and sized to the files plus
    ``_FILES_ROOM``; the files are written into it from its fd, then each is
    cloned (open_tree) onto its mount point, resolved beneath the root (the
    HostRootfs skeleton has it, an overlay's upper layer got it made). Nothing
    is written to a shared skeleton or a host directory.
    """
    if not files:
        return
    pages = sum(-(-len(file.data) // _PAGE) * _PAGE for _, file in files)
    b.op("files", "files_tmpfs", None, pages + _FILES_ROOM)
    for path, file in files:
        b.op("files", "write_file_in", path, path, file.data.hex(), file.mode)
    for path, _ in files:
        b.beneath("files", "attach_file", path)


def _write_file(b: _Builder, path: str, file: File) -> None:
    """A file written at container path ``path`` of a writable mount of the container's own (resolved beneath)."""
    b.beneath("files", "write_file_at", path, file.data.hex(), file.mode)


def _dir_rootfs(b: _Builder, rootfs: DirRootfs) -> None:
    # The host path is what goes wrong here, so errors name it. nodev whether
    # read-only or not: a node the container makes in it opens nothing.
    attrs_ = _RO_ATTRS if rootfs.readonly else MOUNT_ATTR_NODEV
    b.op("rootfs", "bind_root", rootfs.path, b.host(rootfs.path), b.root, attrs_)


def _user_mount(b: _Builder, mount: Bind | Tmpfs, tree: int) -> None:
    """One of the spec's mounts; ``tree`` indexes the clone of a shared bind (else -1)."""
    if isinstance(mount, Tmpfs):
        data = f"mode={mount.mode:o}" + (f",size={mount.size}" if mount.size else "")
        b.beneath("mounts", "mount_at", mount.target, "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, data)
        return
    attr = (
        (MOUNT_ATTR_RDONLY if mount.readonly else 0)
        | (MOUNT_ATTR_NOSUID if mount.nosuid else 0)
        | (MOUNT_ATTR_NODEV if mount.nodev else 0)
        | (MOUNT_ATTR_NOEXEC if mount.noexec else 0)
    )
    propagation = mount.propagation
    if propagation is None and mount.readonly:
        # A slave would receive mounts the host makes under the source later,
        # and those arrive read-write: a read-only bind is private unless asked.
        propagation = "private"
    flag = _PROPAGATION_FLAGS[propagation] if propagation is not None and propagation != "shared" else 0
    if tree >= 0:
        b.beneath("mounts", "attach_tree", mount.target, tree, int(mount.recursive), attr, flag)
    else:
        b.beneath("mounts", "bind_at", mount.target, b.host(mount.source), int(mount.recursive), attr, flag,
             int(mount.follow_symlinks or mount.source in b.held))


def _exec_candidates(spec: ContainerSpec) -> tuple[str, ...]:
    """The paths execve tries, in order, like execvp(3) with the container's PATH."""
    program = spec.argv[0]
    if "/" in program:
        return (program,)
    search: Iterable[str] = spec.env.get("PATH", DEFAULT_PATH).split(":")
    return tuple(f"{d.rstrip('/') or ''}/{program}" if d else program for d in search)
