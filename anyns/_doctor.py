"""``python -m anyns doctor``: what this host offers anyns, and what it lacks, with hints.

Each check prints one line: ``ok``, ``warn`` (works, but something is
degraded or will not be available) or ``FAIL`` (containers cannot start),
with the reason. Then one real container is started, which is the only
proof that counts.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

import attrs
import trio

from ._errors import read_setting
from ._skeleton import build_in_zygote
from ._spec import ContainerSpec
from ._supervisor import open_supervisor


@attrs.frozen
class Finding:
    """One check's outcome."""

    name: str
    level: str  # "ok", "warn" or "FAIL"
    detail: str


def _kernel() -> Finding:
    release = os.uname().release
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return Finding("kernel", "warn", f"cannot parse {release!r}")
    if (major, minor) < (5, 10):
        return Finding("kernel", "FAIL", f"{release}: anyns needs Linux 5.10 or newer (clone3, pidfd, close_range)")
    return Finding("kernel", "ok", release)


def _features() -> Finding:
    """The kernel features anyns uses, each probed (a syscall with bad arguments: EINVAL/EBADF, not ENOSYS)."""
    import ctypes
    import errno as errno_

    libc = ctypes.CDLL(None, use_errno=True)

    def has_syscall(number: int) -> bool:
        ctypes.set_errno(0)
        libc.syscall(ctypes.c_long(number), ctypes.c_long(-1), ctypes.c_long(0), ctypes.c_long(0))
        return ctypes.get_errno() != errno_.ENOSYS

    release = os.uname().release
    try:
        version = tuple(int(x) for x in release.split(".")[:2])
    except ValueError:
        version = (0, 0)
    machine_ok = os.uname().machine in ("x86_64", "aarch64", "riscv64")  # the generic numbers from 424 on
    found = {
        "clone3": machine_ok and has_syscall(435),
        "pidfd_open": machine_ok and has_syscall(434),
        "close_range": machine_ok and has_syscall(436),
        "mount_setattr": machine_ok and has_syscall(442),
        "CLONE_INTO_CGROUP": version >= (5, 7),
        "cgroup.kill": version >= (5, 14),
        "idmapped mounts": version >= (5, 12),
        "time namespaces": os.path.exists("/proc/self/ns/time"),
    }
    missing = [name for name, ok in found.items() if not ok]
    text = ", ".join(name for name, ok in found.items() if ok)
    if missing:
        return Finding("features", "warn", f"{text}; missing: {', '.join(missing)}")
    return Finding("features", "ok", text)


def _privileges() -> Finding:
    status = read_setting("/proc/self/status") or ""
    caps = next((line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), "0")
    if int(caps, 16) & (1 << 21):  # CAP_SYS_ADMIN
        return Finding("privileges", "ok", f"uid {os.getuid()}, CAP_SYS_ADMIN")
    return Finding("privileges", "warn", f"uid {os.getuid()} without CAP_SYS_ADMIN: rootless mode (each container "
                                         "in a user namespace that maps your uid to root); Bridge networking "
                                         "needs root")


def _pidfd() -> Finding:
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError as e:
        return Finding("pidfd", "FAIL", f"pidfd_open: {e.strerror} (Linux 5.3+)")
    os.close(fd)
    return Finding("pidfd", "ok", "pidfd_open works")


def _detached_trees() -> Finding:
    try:
        fd = build_in_zygote([("mkdir", "x"), ("readonly",)])
    except OSError as e:
        return Finding("mount API", "warn", f"no detached mount trees ({os.strerror(e.errno or 0)}): each container "
                                            "builds its HostRootfs root itself (slower)")
    os.close(fd)
    return Finding("mount API", "ok", "fsmount, open_tree and move_mount onto detached trees (prebuilt roots)")


def _userns() -> Finding:
    """User namespaces: the kernel's limit and the sysctls (AppArmor, Debian's) that restrict them."""
    settings = {
        "user.max_user_namespaces": read_setting("/proc/sys/user/max_user_namespaces"),
        "kernel.unprivileged_userns_clone": read_setting("/proc/sys/kernel/unprivileged_userns_clone"),
        "kernel.apparmor_restrict_unprivileged_userns":
            read_setting("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
    }
    shown = "; ".join(f"{name}={value}" for name, value in settings.items() if value is not None)
    wide = "newuidmap present: /etc/subuid ranges give wide maps" if shutil.which("newuidmap") else \
        "no newuidmap: rootless maps only the user's own uid (apt-get install uidmap)"
    if settings["user.max_user_namespaces"] == "0":
        return Finding("user namespaces", "warn", f"disabled ({shown}): Namespaces.USER and rootless mode "
                                                  "will not work")
    if settings["kernel.apparmor_restrict_unprivileged_userns"] == "1":
        return Finding("user namespaces", "warn", f"AppArmor restricts them for unprivileged users ({shown}; "
                                                  "Ubuntu 24.04): rootless mode will not work, root can still "
                                                  "use Namespaces.USER")
    if settings["kernel.unprivileged_userns_clone"] == "0":
        return Finding("user namespaces", "warn", f"root only ({shown}): rootless mode will not work")
    return Finding("user namespaces", "ok", f"allowed, also rootless ({shown}); {wide}")


def _overlayfs() -> Finding:
    """Whether OverlayRootfs can work: the overlay filesystem (and userxattr in a user namespace, 5.11+)."""
    filesystems = read_setting("/proc/filesystems") or ""
    loaded = any(line.split()[-1:] == ["overlay"] for line in filesystems.splitlines())
    modules = f"/lib/modules/{os.uname().release}/kernel/fs/overlayfs"
    if not loaded and not (os.path.isdir(modules) and any(n.startswith("overlay.ko") for n in os.listdir(modules))):
        return Finding("overlayfs", "warn", "no overlay filesystem in this kernel or its modules: "
                                            "OverlayRootfs will not work")
    release = os.uname().release.split("-")[0].split(".")
    try:
        userxattr = (int(release[0]), int(release[1])) >= (5, 11)
    except (IndexError, ValueError):
        userxattr = False
    inside = "also in a user namespace (userxattr)" if userxattr else "not in a user namespace (needs Linux 5.11)"
    return Finding("overlayfs", "ok", f"OverlayRootfs works, {inside}")


def _seccomp() -> Finding:
    """Whether the default seccomp filter can be built here (libseccomp), and how big it is."""
    from ._security import seccomp_bpf
    from ._security_defaults import DEFAULT_CAPABILITIES

    try:
        size = len(seccomp_bpf(DEFAULT_CAPABILITIES)) // 8
    except OSError as e:
        return Finding("seccomp", "FAIL", f"{e}: install libseccomp2, or run containers with seccomp=None")
    return Finding("seccomp", "ok", f"libseccomp builds the default filter ({size} BPF instructions)")


def _init_binary() -> Finding:
    """The container's init program (``anyns/_native/anyns-init``): there, and run from a sealed copy."""
    from ._init import BINARY, open_binary

    try:
        size = os.stat(BINARY).st_size
        fd, sealed = open_binary()
    except OSError as e:
        return Finding("init", "FAIL", f"{BINARY}: {e.strerror}: this anyns was never built; run pip install -e . "
                                       "in its source checkout (it compiles anyns/_native/init.c; Debian: "
                                       "apt-get install build-essential)")
    os.close(fd)
    if not sealed:
        return Finding("init", "warn", f"{BINARY} ({size // 1024} KiB), run from the installed file: "
                                       "vm.memfd_noexec=2 refuses the sealed memfd copy, so a container "
                                       "that opens its init's /proc/PID/exe reaches the host's file")
    return Finding("init", "ok", f"{BINARY} ({size // 1024} KiB, static), run from a sealed memfd copy")


def _spawn_core() -> Finding:
    """The native spawn core (``anyns/_native/libanyns-spawn.so``): there, loadable, and of this anyns."""
    from ._zygote._native import LIBRARY, Native

    try:
        native = Native()
    except OSError as e:
        return Finding("spawn core", "FAIL", f"{LIBRARY}: {e}: this anyns was never built; run pip install -e . in "
                                             "its source checkout (it compiles anyns/_native/spawn.c; Debian: "
                                             "apt-get install build-essential)")
    size = os.stat(LIBRARY).st_size
    return Finding("spawn core", "ok", f"{LIBRARY} ({size // 1024} KiB, version {native.version}, "
                                       f"{os.uname().machine}): containers are set up in C, cloned with CLONE_VM")


def _cgroups() -> Finding:
    """Where each limit would be enforced (``ContainerSpec(limits=...)``), as the supervisor would set it up."""
    from ._cgroups import CONTROLLERS, describe, probe

    try:
        v2, v1 = probe()
    except OSError as e:
        return Finding("cgroups", "warn", f"cannot read /proc/self/cgroup: {e.strerror}; limits will not work")
    layout = "unified v2" if v2 is not None and not v1 else "hybrid v1 + v2" if v2 is not None else "v1 only"
    homes = []
    missing = []
    for name in CONTROLLERS:
        if v2 is not None and name in v2.controllers:
            homes.append(f"{name} (v2)")
        elif any(name in h.controllers for h in v1):
            homes.append(f"{name} (v1)")
        else:
            missing.append(name)
    core = ("CLONE_INTO_CGROUP, cgroup.kill, freeze on v2" if v2 is not None
            else "no v2: placement by the child, freezer v1")
    delegated = True
    if os.geteuid() == 0:
        delegation = "as root, anyns makes its own anyns-* cgroups"
    elif v2 is not None and os.access(v2.own, os.W_OK):
        delegation = "your v2 cgroup is delegated to you: open_supervisor(cgroup_parent=...) under it"
    else:
        delegated = False
        delegation = "not delegated to you: limits need root, or a delegated v2 cgroup (cgroup_parent=)"
    text = (f"{layout}; limits: {', '.join(homes) or 'none'}; {core}; {delegation}; "
            f"{describe(([v2] if v2 else []) + v1)}")
    if missing:
        return Finding("cgroups", "warn", f"{text}; no controller for {', '.join(missing)} "
                                          "(those limits raise UnsupportedError)")
    return Finding("cgroups", "ok" if delegated else "warn", text)


def _masked_proc() -> Finding:
    masked = []
    for line in (read_setting("/proc/self/mountinfo") or "").splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4].startswith("/proc/") and fields[4] != "/proc/sys/fs/binfmt_misc":
            masked.append(fields[4])
    if masked:
        return Finding("/proc", "warn", f"masked paths {masked[:3]} (inside Docker?): user namespaces could not "
                                        "mount proc")
    return Finding("/proc", "ok", "fully visible")


def _limits() -> Finding:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    pid_max = read_setting("/proc/sys/kernel/pid_max") or "?"
    level = "ok" if soft >= 4096 else "warn"
    hint = "" if level == "ok" else (" (the supervisor holds about 3 fds per running container, 10 rootless: "
                                     "raise ulimit -n)")
    return Finding("limits", level, f"open files {soft} (hard {hard}), pid_max {pid_max}{hint}")


def _tools() -> Finding:
    have = {name: shutil.which(name) for name in ("bwrap", "busybox", "unshare")}
    missing = [name for name, path in have.items() if path is None]
    if missing:
        return Finding("peer tools", "warn", f"missing {', '.join(missing)} (benchmarks and tests use them; "
                                             "apt-get install bubblewrap busybox-static util-linux)")
    return Finding("peer tools", "ok", "bwrap, busybox, unshare")


CHECKS: tuple[Callable[[], Finding], ...] = (
    _kernel, _features, _privileges, _pidfd, _spawn_core, _init_binary, _detached_trees, _userns, _overlayfs,
    _seccomp, _cgroups, _masked_proc, _limits, _tools,
)

#: what a user can do, and the findings it depends on (any of them not "ok" says why it may not work)
FEATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("containers (namespaces, pivot_root, /proc)", ("kernel", "pidfd", "spawn core", "init", "container")),
    ("hardening (seccomp filter)", ("seccomp",)),
    ("limits, statistics, pause/resume (cgroups)", ("cgroups",)),
    ("user namespaces (Namespaces.USER, user_ns=) and rootless mode", ("user namespaces", "/proc")),
    ("overlay roots (OverlayRootfs)", ("overlayfs",)),
    ("prebuilt HostRootfs roots (fast path)", ("mount API",)),
    ("Bridge networking", ("privileges",)),
)


def summary(findings: list[Finding]) -> tuple[list[str], list[str]]:
    """What will work here, and what will not (or may not) and why, from the findings."""
    by_name = {f.name: f for f in findings}
    works, not_here = [], []
    for feature, needs in FEATURES:
        problems = [by_name[n] for n in needs if n in by_name and by_name[n].level != "ok"]
        if problems:
            not_here.append(f"{feature}: " + "; ".join(f"{p.name}: {p.detail}" for p in problems))
        else:
            works.append(feature)
    return works, not_here


async def _live() -> Finding:
    spec = ContainerSpec(argv=["/bin/sh", "-c", "echo $$ $PPID $(hostname)"], hostname="doctor")
    started = time.perf_counter()
    try:
        async with open_supervisor() as sup:
            done = await sup.run(spec, capture_stdout=True)
    except Exception as e:  # the report says what went wrong, whatever it was
        return Finding("container", "FAIL", f"{type(e).__name__}: {e}")
    elapsed = (time.perf_counter() - started) * 1000
    if (done.stdout or b"").split() != [b"2", b"1", b"doctor"]:
        return Finding("container", "FAIL", f"unexpected output {done.stdout!r}")
    return Finding("container", "ok", f"own pid namespace (pid 2 under the init), own hostname, "
                                      f"{elapsed:.0f} ms with the supervisor's start")


def doctor() -> int:
    """Print the findings; exit status 0 when containers can run here, 1 otherwise."""
    findings = [check() for check in CHECKS]
    findings.append(trio.run(_live))
    width = max(len(f.name) for f in findings)
    for f in findings:
        print(f"{f.level:>4}  {f.name:<{width}}  {f.detail}")
    works, not_here = summary(findings)
    print("\nWill work here: " + ("; ".join(works) if works else "nothing"))
    if not_here:
        print("Will not work, or may not, here:")
        for line in not_here:
            print(f"  - {line}")
    return 1 if any(f.level == "FAIL" for f in findings) else 0


