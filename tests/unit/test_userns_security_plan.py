"""Plans with a user namespace and the hardening steps: their order and shape (pure; no kernel)."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from strategies import specs

import anyns
from anyns import IdMap, Namespaces, User, _plan
from anyns._security_defaults import CAPABILITIES

LAYOUT = _plan.HostLayout(newroot="/x")
USERNS = Namespaces.DEFAULT | Namespaces.USER


def compile_(**fields: object) -> _plan.Plan:
    fields.setdefault("argv", ["/bin/true"])
    return _plan.compile_plan(anyns.ContainerSpec(**fields), LAYOUT)  # type: ignore[arg-type]


def calls(plan: _plan.Plan) -> list[str]:
    return [op[1] for op in plan.ops]


def test_user_namespace_is_born_with_the_pid_namespace_and_waits_for_its_maps() -> None:
    """clone3 makes USER and PID; the child waits on 'go', unshares the rest, then becomes root inside."""
    plan = compile_(namespaces=USERNS)
    assert plan.clone_flags == int(Namespaces.USER | Namespaces.PID)
    assert "go" in plan.extra_kinds
    order = calls(plan)
    assert order[:2] == ["wait_go", "unshare"]
    assert plan.ops[0][3] == (plan.extra_kinds.index("go"),)
    assert plan.ops[1][3] == (int(USERNS) & ~int(Namespaces.USER | Namespaces.PID),)
    assert order.index("become_root") < order.index("fsmount_at")  # every mount is made as root inside
    assert "mknod" not in order and order.count("bind_device") == len(_plan.DEVICES)


def test_user_namespace_map_implies_user_and_devpts_gid_only_when_mapped() -> None:
    """user_ns=IdMap(...) implies USER; devpts gets gid=5 only if gid 5 is mapped inside."""
    plan = compile_(user_ns=IdMap(uid=(0, 1000, 1), gid=(0, 1000, 1)))
    assert plan.clone_flags & Namespaces.USER
    devpts = next(op for op in plan.ops if op[1] == "mount_at" and op[3][2] == "devpts")
    assert "gid=5" not in str(devpts[3][4])
    mapped = compile_(namespaces=USERNS)
    devpts = next(op for op in mapped.ops if op[1] == "mount_at" and op[3][2] == "devpts")
    assert "gid=5" in str(devpts[3][4])
    plain = compile_()
    assert "become_root" not in calls(plain) and "hold_path" not in calls(plain)


def test_host_paths_are_held_before_becoming_root_and_used_through_proc_self_fd() -> None:
    """Bind sources and a DirRootfs are opened (hold_path) after unshare and before become_root."""
    plan = compile_(namespaces=USERNS, rootfs=anyns.DirRootfs("/srv/root"),
                    mounts=[anyns.Bind("/data", "/d"), anyns.Bind("/data", "/e"), anyns.Bind("/f", "/g")])
    order = calls(plan)
    holds = [op for op in plan.ops if op[1] == "hold_path"]
    assert [op[2] for op in holds] == ["/srv/root", "/data", "/f"]  # each source once
    assert order.index("unshare") < order.index("hold_path") and max(
        i for i, c in enumerate(order) if c == "hold_path") < order.index("become_root")
    fds = {op[2]: op[3][1] for op in holds}
    root_mount = next(op for op in plan.ops if op[0] == "rootfs" and op[1] == "bind_root")
    assert root_mount[3][0] == f"/proc/self/fd/{fds['/srv/root']}"
    bind_sources = [op[3][1] for op in plan.ops if op[1] == "bind_at"]
    assert bind_sources == [f"/proc/self/fd/{fds['/data']}"] * 2 + [f"/proc/self/fd/{fds['/f']}"]


def test_exec_plan_enters_the_user_namespace_in_the_child() -> None:
    """An exec into a user-namespaced container: the zygote enters the others, the child setns USER first."""
    spec = anyns.ContainerSpec(argv=["id"], namespaces=USERNS)
    plan = _plan.compile_exec_plan(spec, USERNS, None, userns=True)
    assert plan.enter == ((0, int(USERNS) & ~int(Namespaces.USER)),)
    assert calls(plan)[:2] == ["setns", "become_root"]
    assert plan.ops[0][3] == (0, int(Namespaces.USER))


SECURITY = ["setsid", "drop_bounding", "seccomp", "set_user", "capset", "no_new_privs"]


def test_security_steps_come_in_the_one_order_that_works() -> None:
    """setsid, bounding set, filter (while all capabilities are there), uid, capset, no_new_privs; then pdeathsig."""
    plan = compile_(user=User(0, 0))
    order = calls(plan)
    assert [c for c in order if c in SECURITY] == SECURITY
    assert order[-2:] == ["pdeathsig", "spawn_with_init"]
    assert order.index("no_new_privs") < order.index("pdeathsig")
    dropped = next(op for op in plan.ops if op[1] == "drop_bounding")[3][0]
    assert set(dropped) == {n for name, n in CAPABILITIES.items() if name not in anyns.DEFAULT_CAPABILITIES}
    kept = next(op for op in plan.ops if op[1] == "capset")[3][0]
    assert kept == sum(1 << CAPABILITIES[n] for n in anyns.DEFAULT_CAPABILITIES)


@pytest.mark.parametrize(
    ("fields", "absent"),
    [
        ({"capabilities": anyns.ALL_CAPABILITIES}, {"drop_bounding", "capset"}),
        ({"seccomp": None}, {"seccomp"}),
        ({"no_new_privileges": False}, {"no_new_privs"}),
        ({"new_session": False}, {"setsid"}),
        ({"tty": True}, {"setsid"}),  # the terminal's own setsid
        ({"user": User(1000, 1000)}, {"capset"}),  # a non-root uid has no capabilities left to set
        ({"masked_paths": (), "readonly_paths": ()}, {"mask_paths"}),
    ],
)
def test_each_measure_can_be_turned_off(fields: dict[str, object], absent: set[str]) -> None:
    """Each hardening field removes exactly its own steps."""
    plan_calls = set(calls(compile_(**fields)))
    assert not absent & plan_calls
    assert absent <= set(calls(compile_()))  # and the defaults have them


def test_seccomp_op_carries_the_policy_for_the_supervisor_to_compile() -> None:
    """The plan holds the policy (denied names, errno, the capabilities the profile's rules follow, allowed
    names); the supervisor turns it into BPF."""
    plan = compile_(seccomp=anyns.Seccomp(deny={"ptrace", "bpf"}, errno=38, allow={"kcmp"}))
    op = next(op for op in plan.ops if op[1] == "seccomp")
    assert op[3] == (("bpf", "ptrace"), 38, tuple(sorted(anyns.DEFAULT_CAPABILITIES)), ("kcmp",))
    admin = compile_(capabilities={"CAP_SYS_ADMIN"})
    assert next(op for op in admin.ops if op[1] == "seccomp")[3][2] == ("CAP_SYS_ADMIN",)


@given(specs())
def test_every_plan_ends_with_hardening_then_pdeathsig_then_exec(spec: anyns.ContainerSpec) -> None:
    """Whatever the spec, the security steps (those present) keep their order right before pdeathsig and exec."""
    order = calls(_plan.compile_plan(spec, LAYOUT))
    present = [c for c in order if c in SECURITY]
    assert present == [c for c in SECURITY if c in present]
    if present:
        assert order.index(present[-1]) < order.index("pdeathsig")
    assert order[-1] in ("execve", "spawn_with_init")
    hardened = attrs.evolve(spec, seccomp=anyns.DEFAULT_SECCOMP)
    assert "seccomp" in calls(_plan.compile_plan(hardened, LAYOUT))


def test_a_rootless_child_sends_its_namespaces_then_stops_being_dumpable() -> None:
    """Rootless (born dumpable for its maps): after becoming root inside it sends its namespace files, user
    first, and only then turns non-dumpable, before any mount and long before the program; the channel is
    a socket. A root supervisor's child does neither (the zygote made it non-dumpable)."""
    rootless = _plan.compile_plan(anyns.ContainerSpec(argv=["/bin/true"], namespaces=USERNS),
                                  attrs.evolve(LAYOUT, rootless=True))
    order = calls(rootless)
    assert rootless.dumpable and rootless.channel_is_socket
    assert rootless.sent_namespaces == ("user", "mnt", "pid", "net", "ipc", "uts")
    send = order.index("send_namespaces")
    assert order.index("become_root") < send < order.index("not_dumpable") < order.index("mount")
    assert rootless.ops[send][3] == (rootless.sent_namespaces,)
    root = compile_(namespaces=USERNS)
    assert not root.dumpable and not root.channel_is_socket and root.sent_namespaces == ()
    assert "send_namespaces" not in calls(root) and "not_dumpable" not in calls(root)


def test_a_rootless_exec_enters_the_sent_namespace_files_user_first() -> None:
    """A rootless exec has one setns per namespace file (extra fds in sent order, user first), checks the
    container's pidfd, then becomes root; its last extra fd is the status pipe of the waiter."""
    plan = _plan.compile_exec_plan(anyns.ContainerSpec(argv=["sh"]), Namespaces.DEFAULT, None, True, True)
    assert plan.extra_kinds == ("user", "mnt", "pid", "net", "ipc", "uts", "container", "status")
    setns = [op for op in plan.ops if op[1] == "setns"]
    assert [(op[2], op[3][0]) for op in setns] == [(kind, i) for i, kind in enumerate(plan.extra_kinds[:-2])]
    order = calls(plan)
    # then, before anything else, that the container is alive (its pidfd): the files outlive it
    assert order[len(setns)] == "check_alive" and plan.ops[len(setns)][3] == (plan.extra_kinds.index("container"),)
    assert order.index("become_root") > order.index("check_alive")


def test_the_filter_covers_the_companion_architectures() -> None:
    """On x86_64 the BPF checks for AUDIT_ARCH_X86_64 and AUDIT_ARCH_I386 (x32 shares the first), so a 32-bit
    program is filtered, not killed for its architecture."""
    import errno
    import platform
    import struct

    from anyns._security import seccomp_bpf
    from anyns._sys import _seccomp

    if platform.machine() != "x86_64":
        pytest.skip("x86_64 only")
    try:
        bpf = seccomp_bpf(anyns.DEFAULT_CAPABILITIES, deny=anyns.DEFAULT_DENIED, err=errno.EPERM)
    except _seccomp.Unavailable as e:
        pytest.skip(str(e))
    constants = {struct.unpack_from("<HBBI", bpf, i)[3] for i in range(0, len(bpf), 8)}
    assert {0xC000003E, 0x40000003} <= constants
    with _seccomp.Filter(_seccomp.SCMP_ACT_ALLOW) as f:
        # x32 only where this kernel runs x32 syscalls at all (kernel_runs)
        assert f.arches == ["x86_64", "x86", *(["x32"] if _seccomp.kernel_runs("x32") else [])]
