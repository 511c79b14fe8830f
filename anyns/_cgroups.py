"""cgroups: one leaf per container, on cgroup v2, v1, or both (hybrid hosts).

Host half (the supervisor, synchronous; each call is a few small writes to
cgroupfs, which is in memory):

* ``probe()`` reads where the hierarchies are mounted and where this process
  sits in each (``/proc/self/mountinfo``, ``/proc/self/cgroup``);
* ``Cgroups`` makes one parent per supervisor in each hierarchy it uses,
  ``anyns-<pid>-<start time>`` beside the supervisor's own cgroup, and one
  leaf per container in it (``Leaf``); it writes the limits, reads the
  statistics, freezes, kills and removes; at start it removes what a
  supervisor that died left behind (empty leaves and parents whose owner is
  gone).

Which hierarchy does what:

* v2 (``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified`` on hybrid hosts),
  whenever it is mounted: the container is born in its leaf (``clone3`` with
  ``CLONE_INTO_CGROUP``), and the core files work with no controller at all:
  ``cgroup.kill``, ``cgroup.freeze``, ``cpu.stat``. Controllers (memory,
  pids, cpu) are used from v2 when the host gives them to v2;
* v1, for each of memory, pids and cpu that v2 lacks (and cpuacct and freezer
  where there is no v2 at all): the child moves itself into its leaf by
  writing ``0`` to the leaf's ``cgroup.procs`` (the ``cgroup_enter`` op), as its
  first step, before it makes any namespace, so its cgroup namespace (if
  asked for) is rooted there too.

Devices (defence in depth; ``nodev`` on every mount a container can write is
the first line): every leaf denies opening any device node but the standard
ones (``DEVICE_RULES``, runc's default list: null, zero, full, random,
urandom, tty, ptmx, the devpts terminals; making nodes is allowed, opening
them is not), plus the device nodes the spec binds itself with
``nodev=False``. With a v1 ``devices`` hierarchy (which exists alongside v2
on hybrid hosts) the leaf there gets ``a`` in ``devices.deny`` and the rules
in ``devices.allow``; on a v2-only host a ``BPF_PROG_TYPE_CGROUP_DEVICE``
program that allows the same is attached to the v2 leaf (``device_program``),
if the kernel lets us (else nothing: it is the second line).

Child half: the ``cgroup_enter`` op of the native core (``_native/spawn.c``), one write.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._errors import SetupError
    from ._spec import ContainerSpec, Limits

#: the controllers a leaf uses where the host has them
CONTROLLERS = ("memory", "pids", "cpu")
#: v1 controllers used only when there is no v2 hierarchy (CPU time, freezing)
_V1_ONLY_FALLBACK = ("cpuacct", "freezer")
#: the v1 controller that limits which device nodes a leaf's processes may open or make
DEVICES = "devices"
#: what a leaf allows of devices (the rest is denied), as runc's default: make any node
#: (mknod, ``m``), open only the standard ones. ``(type, major, minor, access)``; -1 is ``*``.
DEVICE_RULES: tuple[tuple[str, int, int, str], ...] = (
    ("c", -1, -1, "m"), ("b", -1, -1, "m"),
    ("c", 1, 3, "rwm"),  # null
    ("c", 1, 5, "rwm"),  # zero
    ("c", 1, 7, "rwm"),  # full
    ("c", 1, 8, "rwm"),  # random
    ("c", 1, 9, "rwm"),  # urandom
    ("c", 5, 0, "rwm"),  # tty
    ("c", 5, 2, "rwm"),  # ptmx (the container's devpts has its own)
    ("c", 136, -1, "rwm"),  # the terminals of devpts
)
_PREFIX = "anyns-"
#: the CFS period anyns uses: cpu=0.5 is 50 ms of every 100 ms
CPU_PERIOD_US = 100_000

# Every supervisor of this process has the same parent name (anyns-<pid>-<start
# time>), so its supervisors share the parent directories: the leaf numbers
# are counted per process, and a parent is removed when the last supervisor
# holding it closes. Supervisors may run in several threads (anyns.aio).
_LOCK = _thread.allocate_lock()
#: parent directory -> how many of this process's Cgroups hold it (under _LOCK)
_PARENT_USERS: dict[str, int] = {}
#: the number of the last leaf made by this process (under _LOCK)
_leaf_count = 0


# --------------------------------------------------------------------------- child half


# --------------------------------------------------------------------------- host half


class Hierarchy:
    """One mounted cgroup hierarchy and this process's place in it.

    Attributes:
        mount: where it is mounted.
        own: this process's cgroup directory in it (``mount`` + its path).
        controllers: the controllers it carries (v1), or those v2 offers here.
        v2: whether it is the unified hierarchy.
    """

    def __init__(self, mount: str, own: str, controllers: frozenset[str], v2: bool) -> None:
        self.mount = mount
        self.own = own
        self.controllers = controllers
        self.v2 = v2

    def __repr__(self) -> str:
        kind = "v2" if self.v2 else "v1"
        return f"<cgroup {kind} {self.own} {sorted(self.controllers)}>"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces and such are octal escapes (``\\040``)."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape")


def probe(mountinfo: str | None = None, self_cgroup: str | None = None) -> tuple[Hierarchy | None, list[Hierarchy]]:
    """``(v2, [v1 …])``: the hierarchies anyns would use here, from this process's view.

    v1 hierarchies are those carrying memory, pids or cpu that v2 does not
    offer (plus cpuacct and freezer when there is no v2), and devices. The
    arguments stand in for the two /proc files in tests.
    """
    mountinfo = _read("/proc/self/mountinfo") if mountinfo is None else mountinfo
    self_cgroup = _read("/proc/self/cgroup") if self_cgroup is None else self_cgroup
    own_paths: dict[str, str] = {}  # "" for v2, else each v1 controller -> path
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, names, path = parts
        if hid == "0" and not names:
            own_paths[""] = path
        else:
            for name in names.split(","):
                own_paths[name] = path
    v2: Hierarchy | None = None
    v1_mounts: list[tuple[str, str, frozenset[str]]] = []  # (mount point, its root, controllers)
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point, fstype, options = _unescape(fields[3]), _unescape(fields[4]), tail[0], tail[2]
        if fstype == "cgroup2" and v2 is None and "" in own_paths:
            v2_dir = _beneath(point, root, own_paths[""])
            if v2_dir is not None:
                try:
                    offered = frozenset(_read(os.path.join(v2_dir, "cgroup.controllers")).split())
                except OSError:
                    offered = frozenset()
                v2 = Hierarchy(point, v2_dir, offered & frozenset(CONTROLLERS), True)
        elif fstype == "cgroup":
            carried = frozenset(options.split(",")) & frozenset((*CONTROLLERS, *_V1_ONLY_FALLBACK, DEVICES))
            if carried and not any(p == point for p, _, _ in v1_mounts):
                v1_mounts.append((point, root, carried))
    wanted = set(CONTROLLERS) - (v2.controllers if v2 is not None else frozenset())
    wanted.add(DEVICES)  # v2 has no devices controller (a BPF program does its job there)
    if v2 is None:
        wanted |= set(_V1_ONLY_FALLBACK)
    v1: list[Hierarchy] = []
    for point, root, carried in v1_mounts:
        used = carried & wanted
        if not used:
            continue
        own_path = own_paths.get(min(carried))
        v1_dir = None if own_path is None else _beneath(point, root, own_path)
        if v1_dir is not None:
            v1.append(Hierarchy(point, v1_dir, frozenset(used), False))
            wanted -= used
    return v2, v1


def _beneath(point: str, root: str, path: str) -> str | None:
    """The directory of cgroup ``path`` under a mount of the hierarchy's ``root`` at ``point``."""
    if root != "/":
        if path != root and not path.startswith(root.rstrip("/") + "/"):
            return None  # our cgroup is not visible through this mount
        path = path[len(root.rstrip("/")):] or "/"
    if path.startswith("/.."):  # outside our cgroup namespace: not reachable
        return None
    return os.path.normpath(point + "/" + path.lstrip("/"))


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot): a pid plus it names one process."""
    try:
        stat = _read(f"/proc/{pid}/stat")
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def supervisor_name(pid: int | None = None) -> str:
    """``anyns-<pid>-<start time>``: the parent cgroup of the supervisor process ``pid``."""
    pid = os.getpid() if pid is None else pid
    return f"{_PREFIX}{pid}-{_start_time(pid)}"


def _owner_alive(name: str) -> bool:
    pid_text, _, start = name[len(_PREFIX):].partition("-")
    try:
        pid = int(pid_text)
    except ValueError:
        return True  # not ours to judge
    return _start_time(pid) == start


def _leaves_of(parent: str) -> list[str] | None:
    """The leaf directories in a supervisor's parent cgroup, or None if it is not there."""
    try:
        return [e.path for e in os.scandir(parent) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return None


def cleanup_after_supervisor(name: str, v2_parent: str = "", timeout: float = 2.0) -> None:
    """Remove the cgroups of a supervisor that died: kill what is left in its leaves, rmdir them and its parents.

    Run by its zygote (which shares the supervisor's cgroups, so ``probe``
    finds the same places) between the supervisor's death and its own exit:
    a dead process cannot remove its cgroup directories, and this way none
    outlives the crash. The containers die with the supervisor on their own
    (PDEATHSIG, pid 1); ``cgroup.kill`` makes sure, then the directories go
    as soon as they are empty. ``v2_parent``: where the supervisor's v2
    parent is (``open_supervisor(cgroup_parent=...)``), when not beside it.
    """
    import time

    try:
        v2, v1 = probe()
    except OSError:
        return
    leaves: list[str] = []
    parents: list[str] = []
    for hierarchy in ([v2] if v2 is not None else []) + v1:
        parent = os.path.join(v2_parent if hierarchy.v2 and v2_parent else hierarchy.own, name)
        found = _leaves_of(parent)
        if found is None:
            continue
        parents.append(parent)
        leaves += found
        if hierarchy.v2:
            for leaf in found:
                with contextlib.suppress(OSError):
                    _write(os.path.join(leaf, "cgroup.kill"), "1")
    pending = leaves + parents  # leaves first: a parent goes once it is empty
    deadline = time.monotonic() + timeout
    while pending:
        pending = [d for d in pending if not _rmdir(d)]
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.005)


class Unavailable(Exception):
    """A limit the host cannot enforce here; the supervisor raises it as UnsupportedError."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class CgroupWriteError(Exception):
    """A cgroupfs call failed: ``(syscall, path, OSError)``."""

    def __init__(self, syscall: str, path: str, error: OSError) -> None:
        super().__init__(f"{syscall} {path}: {error}")
        self.syscall = syscall
        self.path = path
        self.error = error

    def setup_error(self) -> SetupError:
        """The SetupError (step "cgroup") the supervisor raises for it, with the likely host cause."""
        from ._errors import SetupError  # host half only: the zygote never gets here

        err = self.error.errno or 0
        hint = None
        if err in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "cgroups need root, or a delegated cgroup (open_supervisor(cgroup_parent=...))"
        elif err == errno.EINVAL:
            hint = "the kernel refused the value: check the Limits"
        elif err == errno.EBUSY and self.path.endswith("memory.limit_in_bytes"):
            hint = "the memory in use is already above the limit"
        return SetupError.from_oserror("cgroup", self.syscall, self.error, self.path, hint)


class Leaf:
    """The cgroup of one container: a directory in each hierarchy used.

    Attributes:
        v2: its v2 directory, or None.
        v1: ``(hierarchy, directory)`` for each v1 hierarchy.
        limits: what it was made with (None: no limits, only the cgroup).
        users: the container and each process exec'd into it; removed at 0.
    """

    def __init__(self, v2: str | None, v1: list[tuple[Hierarchy, str]], limits: Limits | None,
                 v2_controllers: frozenset[str] = frozenset()) -> None:
        self.v2 = v2
        self.v1 = v1
        self.limits = limits
        #: the controllers it has on v2 (the rest of CONTROLLERS come from v1, if at all)
        self.v2_controllers = v2_controllers
        self.users = 1

    def dirs(self) -> list[str]:
        return ([self.v2] if self.v2 else []) + [d for _h, d in self.v1]

    def open_fds(self) -> list[int]:
        """The fds a spawn into it carries: the v2 directory (for CLONE_INTO_CGROUP), then each v1 cgroup.procs."""
        fds: list[int] = []
        try:
            if self.v2 is not None:
                fds.append(os.open(self.v2, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for _h, d in self.v1:
                fds.append(os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        except OSError as e:
            for fd in fds:
                os.close(fd)
            raise CgroupWriteError("open", self.v2 or "", e) from e
        return fds

    def _file(self, controller: str, name: str) -> str | None:
        """The path of ``name`` for ``controller`` ("" for a v2 core file), or None where it has no home."""
        if controller == "" or controller in self.v2_controllers:
            return os.path.join(self.v2, name) if self.v2 is not None else None
        for hierarchy, d in self.v1:
            if controller in hierarchy.controllers:
                return os.path.join(d, name)
        return None


def _read_keyed(path: str | None) -> dict[str, int]:
    """A flat-keyed cgroup file (``key value`` lines) as ints; empty if it cannot be read."""
    if path is None:
        return {}
    try:
        text = _read(path)
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def _read_int(path: str | None) -> int | None:
    if path is None:
        return None
    try:
        text = _read(path).strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


class Cgroups:
    """A supervisor's cgroups: its parents (made on first use) and the leaves in them."""

    def __init__(self, v2: Hierarchy | None, v1: list[Hierarchy], parent: str | None = None) -> None:
        """``parent``: a v2 directory to use instead of the supervisor's own cgroup (a delegated one)."""
        self.v2 = v2
        self.v1 = v1
        if v2 is not None and parent is not None:
            self.v2 = Hierarchy(v2.mount, parent, v2.controllers, True)
        self.name = supervisor_name()
        self._parents: dict[str, str] | None = None  # hierarchy own dir -> our parent dir
        self._v2_enabled: frozenset[str] = frozenset()
        self._v2_refused: str | None = None
        #: the device filter programs loaded (v2-only hosts), by their rules
        self._device_programs: dict[tuple[tuple[str, int, int, str], ...], int] = {}
        #: why no device filter can be attached here (the kernel refused once), or None
        self.device_filter_refused: str | None = None

    @property
    def hierarchies(self) -> list[Hierarchy]:
        return ([self.v2] if self.v2 is not None else []) + self.v1

    # ---- leftovers

    def collect_leftovers(self) -> int:
        """Remove the empty leaves and parents of supervisors that are gone; return how many directories went.

        Never kills: a leaf that still has processes (they die with their
        pid 1, moments after their supervisor) is left for the next time.
        """
        removed = 0
        for hierarchy in self.hierarchies:
            try:
                names = [n for n in os.listdir(hierarchy.own) if n.startswith(_PREFIX)]
            except OSError:
                continue
            for name in names:
                if name == self.name or _owner_alive(name):
                    continue
                parent = os.path.join(hierarchy.own, name)
                leaves = _leaves_of(parent)
                if leaves is None:
                    continue
                for leaf in leaves:
                    removed += _rmdir(leaf)
                removed += _rmdir(parent)
        return removed

    # ---- leaves

    def _ensure_parents(self, purpose: str = "limits") -> dict[str, str]:
        if self._parents is not None:
            return self._parents
        with _LOCK:
            return self._make_parents(purpose)

    def _make_parents(self, purpose: str) -> dict[str, str]:
        """Make (or share) our parent in each hierarchy and hold it; under ``_LOCK``."""
        parents: dict[str, str] = {}
        try:
            for hierarchy in self.hierarchies:
                parent = os.path.join(hierarchy.own, self.name)
                try:
                    os.mkdir(parent, 0o755)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise Unavailable(
                        f"{purpose}: cannot make a cgroup in {hierarchy.own}: {e.strerror}",
                        "cgroups need root, or a delegated cgroup "
                        "(systemd-run --scope -p Delegate=yes, then open_supervisor(cgroup_parent=...))",
                    ) from e
                parents[hierarchy.own] = parent
                if hierarchy.v2 and hierarchy.controllers:
                    self._v2_enabled = self._enable_v2(hierarchy, parent)
        except BaseException:
            for parent in parents.values():
                if not _PARENT_USERS.get(parent):  # another supervisor of this process holds it
                    _rmdir(parent)
            raise
        for parent in parents.values():
            _PARENT_USERS[parent] = _PARENT_USERS.get(parent, 0) + 1
        self._parents = parents
        return parents

    def _enable_v2(self, hierarchy: Hierarchy, parent: str) -> frozenset[str]:
        """Enable the v2 controllers for our parent's children; those refused stay off (with the reason kept)."""
        enabled = set()
        for controller in sorted(hierarchy.controllers):
            try:
                own_control = _read(os.path.join(hierarchy.own, "cgroup.subtree_control")).split()
                if controller not in own_control:
                    _write(os.path.join(hierarchy.own, "cgroup.subtree_control"), f"+{controller}")
                _write(os.path.join(parent, "cgroup.subtree_control"), f"+{controller}")
            except OSError as e:
                if e.errno == errno.EBUSY:
                    self._v2_refused = (
                        f"the supervisor's cgroup {hierarchy.own} has processes in it, so it cannot hand "
                        "controllers to child cgroups (cgroup v2's no-internal-processes rule); run the "
                        "supervisor in a delegated cgroup (systemd-run --scope -p Delegate=yes) and pass "
                        "open_supervisor(cgroup_parent=<a cgroup below it>)"
                    )
                else:
                    self._v2_refused = f"enabling {controller} in {hierarchy.own} failed: {e.strerror}"
                continue
            enabled.add(controller)
        return frozenset(enabled)

    def _home(self, controller: str) -> str | None:
        """Where ``controller`` lives for our leaves: "v2", "v1", or None."""
        if controller in self._v2_enabled:
            return "v2"
        if any(controller in h.controllers for h in self.v1):
            return "v1"
        return None

    def create(self, limits: Limits | None, purpose: str = "limits",
               devices: tuple[tuple[str, int, int, str], ...] = ()) -> Leaf:
        """A new leaf with ``limits`` (if any) written and devices denied but ``DEVICE_RULES`` and ``devices``.

        ``purpose`` opens the message of an ``Unavailable``.

        Raises:
            Unavailable: a limit with no controller here, or no cgroup can be made.
            CgroupWriteError: a limit was refused.
        """
        if not self.hierarchies:
            raise Unavailable(f"{purpose}: no cgroup hierarchy is mounted here (/sys/fs/cgroup)",
                              "mount cgroup2 on /sys/fs/cgroup")
        parents = self._ensure_parents(purpose)
        for controller, value in (("memory", limits.memory), ("pids", limits.pids),
                                  ("cpu", limits.cpu)) if limits is not None else ():
            if value is not None and self._home(controller) is None:
                raise Unavailable(f"limits.{controller}: this host has no {controller} cgroup controller "
                                  "that anyns can use", self._v2_refused)
        if limits is not None and limits.cpu_time is not None and self.v2 is None and self._home("cpuacct") is None:
            # cpu.stat is a core file of every v2 cgroup; v1 counts CPU in cpuacct
            raise Unavailable("limits.cpu_time: this host has no CPU accounting for a cgroup "
                              "(cgroup v2's cpu.stat or the v1 cpuacct controller)")
        global _leaf_count
        with _LOCK:
            _leaf_count += 1
            name = f"c{_leaf_count}"
        made: list[str] = []
        try:
            v2_dir = None
            if self.v2 is not None:
                v2_dir = os.path.join(parents[self.v2.own], name)
                _mkdir(v2_dir)
                made.append(v2_dir)
            v1_dirs = []
            for hierarchy in self.v1:
                d = os.path.join(parents[hierarchy.own], name)
                _mkdir(d)
                made.append(d)
                v1_dirs.append((hierarchy, d))
            leaf = Leaf(v2_dir, v1_dirs, limits, self._v2_enabled)
            if limits is not None:
                _write_limits(leaf, limits)
            self._restrict_devices(leaf, DEVICE_RULES + devices)
        except BaseException:
            for d in reversed(made):
                _rmdir(d)
            raise
        return leaf

    def _restrict_devices(self, leaf: Leaf, rules: tuple[tuple[str, int, int, str], ...]) -> None:
        """Deny every device but ``rules``: in the v1 devices leaf, else with a BPF program on the v2 leaf."""
        deny = leaf._file(DEVICES, "devices.deny")
        allow = leaf._file(DEVICES, "devices.allow")
        if deny is not None and allow is not None:
            try:
                _write(deny, "a")
            except OSError as e:
                raise CgroupWriteError("write", deny, e) from e
            for rule in rules:
                # EPERM: the parent does not allow it either, so it stays denied (the safe way round)
                with contextlib.suppress(OSError):
                    _write(allow, v1_device_rule(rule))
            return
        if leaf.v2 is None or self.device_filter_refused is not None:
            return
        from ._sys import _bpf  # the supervisor's only: the zygote never needs it

        try:
            program = self._device_programs.get(rules)
            if program is None:
                program = _bpf.bpf_prog_load(_bpf.BPF_PROG_TYPE_CGROUP_DEVICE, device_program(rules), b"MIT",
                                             _bpf.BPF_CGROUP_DEVICE)
                self._device_programs[rules] = program
            target = os.open(leaf.v2, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                # ALLOW_MULTI: a program the host put on an ancestor (systemd's DevicePolicy) still runs too
                _bpf.bpf_prog_attach(target, program, _bpf.BPF_CGROUP_DEVICE, _bpf.BPF_F_ALLOW_MULTI)
            finally:
                os.close(target)
        except OSError as e:
            # No cgroup BPF here (CONFIG_CGROUP_BPF, a seccomp filter or lockdown refusing bpf(2)):
            # nodev is the line of defence left. Not retried for every container.
            self.device_filter_refused = str(e)

    def remove(self, leaf: Leaf) -> bool:
        """Kill whatever is left in ``leaf`` and remove its directories; False if some are still busy."""
        killed = kill(leaf)
        done = True
        for d in reversed(leaf.dirs()):
            if os.path.isdir(d) and not _rmdir(d):
                done = False
                if not killed:
                    _kill_procs(d)
        return done

    def close(self) -> None:
        """Remove our parents (after every leaf is gone), unless another supervisor of this process holds them."""
        programs, self._device_programs = self._device_programs, {}
        for program in programs.values():  # the leaves that still exist keep theirs attached
            os.close(program)
        with _LOCK:
            for parent in (self._parents or {}).values():
                users = _PARENT_USERS.pop(parent, 1) - 1
                if users > 0:
                    _PARENT_USERS[parent] = users
                else:
                    _rmdir(parent)
            self._parents = None


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path, 0o755)
    except OSError as e:
        raise CgroupWriteError("mkdir", path, e) from e


def _rmdir(path: str) -> int:
    """1 if ``path`` was removed (or is gone), 0 if it is busy or not empty."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return 1
    except OSError:
        return 0
    return 1


def kill(leaf: Leaf) -> bool:
    """SIGKILL every process in ``leaf``: ``cgroup.kill`` on v2 (one write, forks cannot escape it).

    Without it (no v2 here, or a kernel before 5.14) each process listed in
    the leaf is killed by pid, which a process forking at that moment can
    outrun; ``remove`` repeats that until the leaf is empty. Returns whether
    ``cgroup.kill`` did it.
    """
    if leaf.v2 is not None:
        try:
            _write(os.path.join(leaf.v2, "cgroup.kill"), "1")
        except OSError:  # gone already, or no cgroup.kill (Linux < 5.14)
            pass
        else:
            return True
    dirs = leaf.dirs()
    if dirs:
        _kill_procs(dirs[0])  # a process is in every hierarchy's leaf: one listing has them all
    return False


def v1_device_rule(rule: tuple[str, int, int, str]) -> str:
    """A ``DEVICE_RULES`` entry as ``devices.allow`` takes it: ``c 1:3 rwm``, ``c 136:* rwm``."""
    kind, major, minor, access = rule
    return f"{kind} {'*' if major < 0 else major}:{'*' if minor < 0 else minor} {access}"


def device_program(rules: Iterable[tuple[str, int, int, str]]) -> bytes:
    """A ``BPF_PROG_TYPE_CGROUP_DEVICE`` program that allows exactly ``rules`` (as runc's device filter).

    It reads ``struct bpf_cgroup_dev_ctx`` (r1): r2 the type (block 1, char
    2), r3 the access asked (mknod 1, read 2, write 4), r4 the major, r5 the
    minor; then one block per rule, each jumping to the next block on a
    mismatch and returning 1 (allow) at its end; 0 (deny) after the last.
    """
    from ._sys import _bpf as B

    code = [
        B.insn(B.BPF_LDX_MEM_W, dst=2, src=1, off=0),
        B.insn(B.BPF_ALU_AND_K, dst=2, imm=0xFFFF),
        B.insn(B.BPF_LDX_MEM_W, dst=3, src=1, off=0),
        B.insn(B.BPF_ALU_RSH_K, dst=3, imm=16),
        B.insn(B.BPF_LDX_MEM_W, dst=4, src=1, off=4),
        B.insn(B.BPF_LDX_MEM_W, dst=5, src=1, off=8),
    ]
    bits = {"m": B.BPF_DEVCG_ACC_MKNOD, "r": B.BPF_DEVCG_ACC_READ, "w": B.BPF_DEVCG_ACC_WRITE}
    for kind, major, minor, access in rules:
        allowed = 0
        for letter in access:
            allowed |= bits[letter]
        # (opcode, dst, src, imm) of each test; a failed test jumps past the block's end
        tests: list[tuple[int, int, int, int]] = [
            (B.BPF_JMP_JNE_K, 2, 0, B.BPF_DEVCG_DEV_CHAR if kind == "c" else B.BPF_DEVCG_DEV_BLOCK)]
        if allowed != 7:  # the access asked must be within the rule's: (r3 & allowed) == r3
            tests += [(B.BPF_ALU_MOV_X, 1, 3, 0), (B.BPF_ALU_AND_K, 1, 0, allowed), (B.BPF_JMP_JNE_X, 1, 3, 0)]
        if major >= 0:
            tests.append((B.BPF_JMP_JNE_K, 4, 0, major))
        if minor >= 0:
            tests.append((B.BPF_JMP_JNE_K, 5, 0, minor))
        length = len(tests) + 2  # then r0 = 1; exit
        for i, (op, dst, src, imm) in enumerate(tests):
            jumps = op in (B.BPF_JMP_JNE_K, B.BPF_JMP_JNE_X)
            code.append(B.insn(op, dst=dst, src=src, off=length - (i + 1) if jumps else 0, imm=imm))
        code += [B.insn(B.BPF_ALU_MOV_K, dst=0, imm=1), B.insn(B.BPF_JMP_EXIT)]
    code += [B.insn(B.BPF_ALU_MOV_K, dst=0, imm=0), B.insn(B.BPF_JMP_EXIT)]
    return b"".join(code)


def _kill_procs(directory: str) -> None:
    """SIGKILL every process listed in a leaf directory (only ever a container's own)."""
    try:
        pids = [int(p) for p in _read(os.path.join(directory, "cgroup.procs")).split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)


def _write_limits(leaf: Leaf, limits: Limits) -> None:
    writes: list[tuple[str | None, str]] = []
    if limits.memory is not None:
        if "memory" in leaf.v2_controllers:
            writes.append((leaf._file("memory", "memory.max"), str(limits.memory)))
            swap = leaf._file("memory", "memory.swap.max")
            if swap is not None and os.path.exists(swap):
                writes.append((swap, "0"))  # the limit is the limit: no swapping past it
        else:
            writes.append((leaf._file("memory", "memory.limit_in_bytes"), str(limits.memory)))
            memsw = leaf._file("memory", "memory.memsw.limit_in_bytes")
            if memsw is not None and os.path.exists(memsw):
                writes.append((memsw, str(limits.memory)))  # after the memory limit, which it may not undercut
    if limits.pids is not None:
        writes.append((leaf._file("pids", "pids.max"), str(limits.pids)))
    if limits.cpu is not None:
        quota = max(1000, round(limits.cpu * CPU_PERIOD_US))
        if "cpu" in leaf.v2_controllers:
            writes.append((leaf._file("cpu", "cpu.max"), f"{quota} {CPU_PERIOD_US}"))
        else:
            quota_file = leaf._file("cpu", "cpu.cfs_quota_us")
            if quota_file is None or not os.path.exists(quota_file):
                raise Unavailable("limits.cpu: the cpu controller here has no CFS bandwidth control "
                                  "(cpu.cfs_quota_us)", "the kernel needs CONFIG_CFS_BANDWIDTH")
            writes.append((leaf._file("cpu", "cpu.cfs_period_us"), str(CPU_PERIOD_US)))
            writes.append((quota_file, str(quota)))
    for path, value in writes:
        assert path is not None  # create() checked every limit has a home
        try:
            _write(path, value)
        except OSError as e:
            raise CgroupWriteError("write", path, e) from e


# --------------------------------------------------------------------------- reading


def statistics(leaf: Leaf) -> dict[str, float | int | None]:
    """What the leaf's files say now: CPU seconds, memory and task counts, OOM kills.

    Keys: ``cpu_user``, ``cpu_system`` (seconds, or None), ``memory_current``,
    ``memory_peak`` (bytes, or None without a memory controller),
    ``pids_current`` (or None), ``oom_kills`` (int).
    """
    out: dict[str, float | int | None] = {"cpu_user": None, "cpu_system": None}
    if leaf.v2 is not None:
        cpu = _read_keyed(os.path.join(leaf.v2, "cpu.stat"))
        if "user_usec" in cpu:
            out["cpu_user"] = cpu["user_usec"] / 1e6
            out["cpu_system"] = cpu.get("system_usec", 0) / 1e6
    if out["cpu_user"] is None:
        ticks = _read_keyed(leaf._file("cpuacct", "cpuacct.stat"))
        if "user" in ticks:
            hz = os.sysconf("SC_CLK_TCK")
            out["cpu_user"] = ticks["user"] / hz
            out["cpu_system"] = ticks.get("system", 0) / hz
    if "memory" in leaf.v2_controllers:
        out["memory_current"] = _read_int(leaf._file("memory", "memory.current"))
        out["memory_peak"] = _read_int(leaf._file("memory", "memory.peak"))
        out["oom_kills"] = _read_keyed(leaf._file("memory", "memory.events")).get("oom_kill", 0)
    else:
        out["memory_current"] = _read_int(leaf._file("memory", "memory.usage_in_bytes"))
        out["memory_peak"] = _read_int(leaf._file("memory", "memory.max_usage_in_bytes"))
        out["oom_kills"] = _read_keyed(leaf._file("memory", "memory.oom_control")).get("oom_kill", 0)
    out["pids_current"] = _read_int(leaf._file("pids", "pids.current"))
    return out


def cpu_usage(leaf: Leaf) -> float | None:
    """The CPU seconds (user and system) the leaf's processes have used, from one small file; None if unknown.

    What ``Limits.cpu_time`` is checked against: ``usage_usec`` of v2's
    ``cpu.stat``, else v1's ``cpuacct.usage`` (nanoseconds).
    """
    if leaf.v2 is not None:
        usec = _read_keyed(os.path.join(leaf.v2, "cpu.stat")).get("usage_usec")
        if usec is not None:
            return usec / 1e6
    nsec = _read_int(leaf._file("cpuacct", "cpuacct.usage"))
    return None if nsec is None else nsec / 1e9


# --------------------------------------------------------------------------- freezing


def freeze(leaf: Leaf, frozen: bool) -> None:
    """Ask the kernel to freeze (or thaw) every process in the leaf; ``is_frozen`` says when it has."""
    if leaf.v2 is not None:
        _write(os.path.join(leaf.v2, "cgroup.freeze"), "1" if frozen else "0")
        return
    state = leaf._file("freezer", "freezer.state")
    if state is None:
        raise Unavailable("pause: no freezer here (neither cgroup v2 nor the v1 freezer controller)")
    _write(state, "FROZEN" if frozen else "THAWED")


def is_frozen(leaf: Leaf) -> bool:
    """Whether the freeze has taken effect (v2 ``cgroup.events`` frozen 1, v1 ``FROZEN``)."""
    if leaf.v2 is not None:
        return _read_keyed(os.path.join(leaf.v2, "cgroup.events")).get("frozen") == 1
    state = leaf._file("freezer", "freezer.state")
    return state is not None and _read(state).strip() == "FROZEN"


def describe(hierarchies: Iterable[Hierarchy]) -> str:
    """One line for ``doctor``: ``v2 at …; v1 memory at …``."""
    parts = []
    for h in hierarchies:
        names = ",".join(sorted(h.controllers)) or "core files only"
        parts.append(f"{'v2' if h.v2 else 'v1'} {names} at {h.own}")
    return "; ".join(parts) or "none"


# --------------------------------------------------------------------------- the supervisor's policy
#
# Which containers get a leaf and with what, as the supervisor asks it (the
# async parts, such as waiting for a busy leaf to empty, stay in the
# supervisor). These raise the anyns errors; ``_errors`` and the spec are
# imported where used, the zygote never gets here.

#: what an UnsupportedError names when a container without a pid namespace of its own can have no cgroup
NO_PID_PURPOSE = (
    "namespaces without PID (such a container's processes are tracked and killed through a cgroup of its own)"
)


def open_for_supervisor(parent: str | None) -> Cgroups | None:
    """A supervisor's cgroups (made on first use), after removing what dead supervisors left; None without any.

    Raises:
        UnsupportedError: ``parent`` is not a directory of the v2 hierarchy.
    """
    from ._errors import UnsupportedError

    try:
        v2, v1 = probe()
    except OSError:
        return None
    if parent is not None and (
        v2 is None or not os.path.isdir(parent)
        or not (os.path.realpath(parent) + "/").startswith(v2.mount.rstrip("/") + "/")
    ):
        where = v2.mount if v2 is not None else "a cgroup v2 hierarchy"
        raise UnsupportedError(f"open_supervisor: cgroup_parent {parent!r} is not a directory in {where}")
    cgroups = Cgroups(v2, v1, parent)
    cgroups.collect_leftovers()
    return cgroups


def bound_devices(spec: ContainerSpec) -> tuple[tuple[str, int, int, str], ...]:
    """Device nodes the spec binds itself with ``nodev=False``: its cgroup lets them open (read-only binds: read).

    A ``Tmpfs`` has no ``nodev`` field: it binds nothing.
    """
    rules = []
    for mount in spec.mounts:
        if getattr(mount, "nodev", True):
            continue
        source, readonly = mount.source, mount.readonly  # type: ignore[union-attr]  # a Bind: only it has nodev
        try:
            info = os.stat(source)
        except OSError:
            continue  # the spawn names a missing source
        if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            kind = "c" if stat.S_ISCHR(info.st_mode) else "b"
            rules.append((kind, os.major(info.st_rdev), os.minor(info.st_rdev), "r" if readonly else "rw"))
    return tuple(rules)


def leaf_for(cgroups: Cgroups | None, spec: ContainerSpec) -> Leaf:
    """The new leaf of a container that needs one (``_spec.needs_cgroup``): its limits, its devices.

    With ``limits``, and (a root supervisor) for every container without a
    pid namespace of its own: its cgroup is then what kills the processes it
    leaves behind when its program exits.

    Raises:
        UnsupportedError: a limit this host cannot enforce, or no cgroups here.
        SetupError: the kernel refused a limit (step "cgroup").
    """
    from ._errors import UnsupportedError

    purpose = "limits" if spec.limits is not None else NO_PID_PURPOSE
    if cgroups is None:
        raise UnsupportedError(f"{purpose}: no cgroup hierarchy could be read here (/proc/self/cgroup)")
    try:
        return cgroups.create(spec.limits, purpose, bound_devices(spec))
    except Unavailable as e:
        raise UnsupportedError(str(e) + (f" (hint: {e.hint})" if e.hint else "")) from e.__cause__
    except CgroupWriteError as e:
        raise e.setup_error() from e.error


def spawn_fds(leaf: Leaf) -> list[int]:
    """``leaf.open_fds()``, a failure as the SetupError (step "cgroup") the spawn raises."""
    try:
        return leaf.open_fds()
    except CgroupWriteError as e:
        raise e.setup_error() from e.error


#: Limits.cpu_time: the CPUs this process may use (how fast a container can spend its budget), and
#: the bounds of the interval its cgroup's usage is polled at
_CPUS = max(1, len(os.sched_getaffinity(0)))
_MIN_POLL = 0.01
_MAX_POLL = 0.1


def cpu_time_poll(budget: float, used: float) -> float:
    """Seconds until a CPU budget is checked again, ``used`` of ``budget`` being spent.

    Scaled to what is left, so that all the CPUs busy at once overshoot it by
    at most about half of that: every 100 ms at most, every 10 ms at least.
    """
    return min(max((budget - used) / (2 * _CPUS), _MIN_POLL), _MAX_POLL)
