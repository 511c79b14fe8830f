"""Join validation and what a Join (or an exec) compiles into; no containers."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest

import anyns
from anyns import Namespaces, _plan
from anyns._spec import KIND_FLAGS

NS = Namespaces
LAYOUT = _plan.HostLayout(newroot="/x")
JOINABLE = ("mnt", "pid", "net", "ipc", "uts", "cgroup", "time")


def path_of(kind: str) -> str:
    return f"/proc/1/ns/{kind}"


def spec(**fields: Any) -> anyns.ContainerSpec:
    """Without the init: its status pipe is one more extra fd, which test_init_plan covers."""
    fields.setdefault("argv", ["/bin/true"])
    fields.setdefault("init", False)
    return anyns.ContainerSpec(**fields)


def compile_(**fields: Any) -> _plan.Plan:
    return _plan.compile_plan(spec(**fields), LAYOUT)


def calls(plan: _plan.Plan) -> list[str]:
    return [call for _step, call, _path, _args in plan.ops]


def unshare_flags(plan: _plan.Plan) -> int:
    found = [args[0] for step, call, _path, args in plan.ops if call == "unshare"]
    assert len(found) <= 1, found
    return int(found[0]) if found else 0  # type: ignore[arg-type]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kind", JOINABLE)
def test_join_accepts_absolute_paths_and_pathlike(kind: str) -> None:
    """Each kind takes an absolute path (str or os.PathLike, stored as str)."""
    assert getattr(anyns.Join(**{kind: path_of(kind)}), kind) == path_of(kind)
    joined = anyns.Join(**{kind: pathlib.Path(path_of(kind))})
    assert getattr(joined, kind) == path_of(kind)
    assert type(getattr(joined, kind)) is str


@pytest.mark.parametrize("kind", JOINABLE)
@pytest.mark.parametrize("value", ["proc/1/ns/net", "", "ns", pathlib.Path("rel/ns")],
                         ids=["relative", "empty", "bare-name", "relative-pathlike"])
def test_join_refuses_relative_paths(kind: str, value: object) -> None:
    """A relative (or empty) path is a SpecError naming the field."""
    with pytest.raises(anyns.SpecError, match=rf"Join\.{kind}\b"):
        anyns.Join(**{kind: value})


@pytest.mark.parametrize("value", [1234, 3.5, b"/proc/1/ns/net", object(), ["/proc/1/ns/net"],
                                   {"pid": 1}, True],
                         ids=["int", "float", "bytes", "object", "list", "dict", "bool"])
def test_join_refuses_values_that_are_neither_container_nor_path(value: object) -> None:
    """Anything but an anyns.Container or an absolute path is a SpecError."""
    with pytest.raises(anyns.SpecError, match=r"Join\.net"):
        anyns.Join(net=value)


def test_join_takes_no_user_and_no_positional_arguments() -> None:
    """Join's fields are keyword-only, and "user" is not one of them."""
    with pytest.raises(TypeError):
        anyns.Join("/proc/1/ns/net")  # type: ignore[misc]
    with pytest.raises(TypeError):
        anyns.Join(user="/proc/1/ns/user")  # type: ignore[call-arg]


def test_kinds_is_in_field_order_and_skips_unset() -> None:
    """kinds() lists the joined kinds only, always in mnt, pid, net, ipc, uts, cgroup, time order."""
    assert anyns.Join().kinds() == {}
    joined = anyns.Join(time=path_of("time"), net=path_of("net"), mnt=path_of("mnt"), uts=path_of("uts"))
    assert list(joined.kinds()) == ["mnt", "net", "uts", "time"]
    assert joined.kinds() == {k: path_of(k) for k in ("mnt", "net", "uts", "time")}
    every = anyns.Join(**{k: path_of(k) for k in reversed(JOINABLE)})
    assert tuple(every.kinds()) == JOINABLE


def test_join_is_a_frozen_hashable_value() -> None:
    """Equal Joins are equal and hash alike (specs holding them are cached by value)."""
    a, b = anyns.Join(net=path_of("net")), anyns.Join(net=path_of("net"))
    assert a == b and hash(a) == hash(b)
    assert spec(join=a) == spec(join=b)
    with pytest.raises(AttributeError):
        a.net = path_of("ipc")  # type: ignore[misc]


@pytest.mark.parametrize("field", ["hostname", "domainname"])
def test_hostname_or_domainname_with_joined_uts_is_refused(field: str) -> None:
    """Setting a name in a UTS namespace that belongs to someone else is a SpecError."""
    with pytest.raises(anyns.SpecError, match=field):
        spec(join=anyns.Join(uts=path_of("uts")), **{field: "box"})
    assert getattr(spec(join=anyns.Join(net=path_of("net")), **{field: "box"}), field) == "box"


def test_domainname_needs_its_own_uts_and_a_valid_length() -> None:
    """domainname is validated like hostname: own UTS namespace, 1..64 bytes."""
    assert spec(domainname="example.org").domainname == "example.org"
    with pytest.raises(anyns.SpecError, match="domainname"):
        spec(domainname="x", namespaces=NS.MOUNT | NS.PID)
    with pytest.raises(anyns.SpecError, match="domainname"):
        spec(domainname="d" * 65)
    with pytest.raises(anyns.SpecError, match="domainname"):
        spec(domainname="")


def test_joined_mnt_refuses_mounts() -> None:
    """Joining another mount namespace and adding mounts to it is a SpecError."""
    with pytest.raises(anyns.SpecError, match="mounts"):
        spec(join=anyns.Join(mnt=path_of("mnt")), mounts=[anyns.Tmpfs("/data")])
    assert spec(join=anyns.Join(mnt=path_of("mnt"))).mounts == ()


def test_joined_mnt_does_not_need_namespaces_mount() -> None:
    """Without Namespaces.MOUNT a spec is refused, unless it joins a mount namespace."""
    with pytest.raises(anyns.SpecError, match="MOUNT"):
        spec(namespaces=NS.PID)
    assert spec(namespaces=NS.PID, join=anyns.Join(mnt=path_of("mnt"))).namespaces == NS.PID


@pytest.mark.parametrize("value", [{"net": "/proc/1/ns/net"}, "/proc/1/ns/net"], ids=["dict", "str"])
def test_join_field_that_is_not_a_join_is_a_spec_error(value: object) -> None:
    """ContainerSpec(join=...) with something other than an anyns.Join is a SpecError."""
    with pytest.raises(anyns.SpecError, match="join"):
        spec(join=value)


# --------------------------------------------------------------------------- compile_plan


@pytest.mark.parametrize("kind", [k for k in JOINABLE if k != "pid"])
def test_joined_kind_is_a_setns_before_unshare_and_not_unshared(kind: str) -> None:
    """A joined kind (not pid) is a setns op of the namespaces step, before unshare, and not unshared."""
    namespaces = NS.DEFAULT | NS.CGROUP | NS.TIME
    plan = compile_(namespaces=namespaces, join=anyns.Join(**{kind: path_of(kind)}))
    flag = int(KIND_FLAGS[kind])
    assert plan.ops[0] == ("namespaces", "setns", kind, (0, flag))
    assert plan.extra_kinds == (kind,)
    assert plan.enter == ()
    unshared = unshare_flags(plan)
    assert unshared == int(namespaces) & ~flag & ~int(NS.PID)
    assert [op[1] for op in plan.ops[:2]] == ["setns", "unshare"]
    assert plan.clone_flags == int(NS.PID)


def test_several_joins_index_extra_fds_in_kinds_order() -> None:
    """Each setns names the index of its fd in extra_kinds, which follows Join.kinds()."""
    joined = anyns.Join(uts=path_of("uts"), net=path_of("net"), ipc=path_of("ipc"))
    plan = compile_(join=joined)
    assert plan.extra_kinds == ("net", "ipc", "uts")
    setns = [(path, args) for step, call, path, args in plan.ops if call == "setns"]
    assert setns == [("net", (0, int(NS.NET))), ("ipc", (1, int(NS.IPC))), ("uts", (2, int(NS.UTS)))]
    first_unshare = calls(plan).index("unshare")
    assert all(i < first_unshare for i, c in enumerate(calls(plan)) if c == "setns")
    assert unshare_flags(plan) == int(NS.MOUNT)
    assert all(step == "namespaces" for step, call, _, _ in plan.ops if call in ("setns", "unshare"))


def test_joined_pid_is_entered_by_the_zygote_not_cloned() -> None:
    """A pid join goes to plan.enter (index into extra_kinds), with no CLONE_NEWPID and no setns op."""
    plan = compile_(join=anyns.Join(net=path_of("net"), pid=path_of("pid")))
    assert plan.extra_kinds == ("pid", "net")
    assert plan.enter == ((0, int(NS.PID)),)
    assert plan.clone_flags & int(NS.PID) == 0
    assert plan.clone_flags == 0
    assert [op[2] for op in plan.ops if op[1] == "setns"] == ["net"]
    assert unshare_flags(plan) & int(NS.PID) == 0
    assert plan.to_wire()["enter"] == [[0, int(NS.PID)]]
    assert plan.to_wire()["extra"] == 2


def test_without_join_pid_is_a_clone_flag() -> None:
    """The reference: without a Join, PID is cloned, the rest unshared, nothing entered."""
    plan = compile_()
    assert plan.clone_flags == int(NS.PID)
    assert plan.enter == () and plan.extra_kinds == ()
    assert "setns" not in calls(plan)
    assert unshare_flags(plan) == int(NS.DEFAULT) & ~int(NS.PID)
    assert ("network", "interface_up", "lo", ("lo",)) in plan.ops


def test_joined_net_does_not_bring_up_lo() -> None:
    """A joined network namespace is someone else's: no interface_up op for lo."""
    plan = compile_(join=anyns.Join(net=path_of("net")))
    assert "interface_up" not in calls(plan)
    assert not any(step == "network" for step, _, _, _ in plan.ops)


def test_joined_mnt_has_no_root_building() -> None:
    """A joined mount namespace means no propagation, rootfs, dev, proc, pivot_root or skeleton."""
    plan = compile_(join=anyns.Join(mnt=path_of("mnt")), hostname="box")
    steps = {step for step, _, _, _ in plan.ops}
    assert steps.isdisjoint({"propagation", "rootfs", "dev", "tmp", "proc", "mounts", "pivot_root"})
    assert "pivot_root" not in calls(plan)
    assert "mount" not in calls(plan)
    assert plan.skeleton is None
    assert plan.ops[0] == ("namespaces", "setns", "mnt", (0, int(NS.MOUNT)))
    assert ("hostname", "sethostname", None, ("box",)) in plan.ops
    assert plan.ops[-1][1] == "execve"


def test_hostname_and_domainname_ops() -> None:
    """hostname and domainname become sethostname and setdomainname in the hostname step."""
    plan = compile_(hostname="h1", domainname="d1")
    ops = [op for op in plan.ops if op[0] == "hostname"]
    assert ops == [("hostname", "sethostname", None, ("h1",)), ("hostname", "setdomainname", None, ("d1",))]
    assert "setdomainname" not in calls(compile_(hostname="h1"))


@pytest.mark.parametrize("kind", JOINABLE)
def test_joined_kind_overrides_namespaces(kind: str) -> None:
    """Joining a kind that namespaces does not request still joins it, and never unshares it."""
    namespaces = NS.MOUNT if kind != "mnt" else NS.PID
    plan = compile_(namespaces=namespaces, join=anyns.Join(**{kind: path_of(kind)}))
    flag = int(KIND_FLAGS[kind])
    assert plan.extra_kinds == (kind,)
    assert unshare_flags(plan) & flag == 0
    if kind == "pid":
        assert plan.enter == ((0, flag),) and plan.clone_flags == 0
    else:
        assert ("namespaces", "setns", kind, (0, flag)) in plan.ops


# --------------------------------------------------------------------------- compile_exec_plan


@pytest.mark.parametrize("flags", [NS.DEFAULT, NS.MOUNT | NS.PID, NS.DEFAULT | NS.CGROUP | NS.TIME])
def test_exec_plan_enters_the_container_then_execs(flags: Namespaces) -> None:
    """An exec plan enters all flags through the container's pidfd (extra fd 0) and only execs; a time
    namespace is entered by the child (the zygote may not: its memory is shared with children in setup)."""
    exec_spec = spec(argv=["ls", "-l"], env={"PATH": "/usr/bin:/bin", "A": "b"}, cwd="/tmp")
    plan = _plan.compile_exec_plan(exec_spec, flags)
    assert plan.enter == ((0, int(flags & ~NS.TIME)),)
    setns = [op for op in plan.ops if op[1] == "setns"]
    assert setns == ([("namespaces", "setns", "time", (0, int(NS.TIME)))] if flags & NS.TIME else [])
    assert plan.extra_kinds == ("container",)
    assert plan.clone_flags == 0
    assert plan.skeleton is None
    candidates, argv, env = ("/usr/bin/ls", "/bin/ls"), ("ls", "-l"), ("PATH=/usr/bin:/bin", "A=b")
    assert plan.ops[-1] == ("exec", "execve", "ls", (candidates, argv, env))
    assert ("process", "chdir", "/tmp", ("/tmp",)) in plan.ops
    assert {"unshare", "mount", "pivot_root", "sethostname", "interface_up"}.isdisjoint(calls(plan))
    assert calls(plan).index("pdeathsig") == len(plan.ops) - 2
    assert plan.to_wire()["extra"] == 1


def test_exec_plan_ignores_the_spec_namespaces_and_join() -> None:
    """Only the flags given are entered; the spec's own namespaces, mounts and join do not matter."""
    exec_spec = spec(join=anyns.Join(net=path_of("net"), pid=path_of("pid")), mounts=[anyns.Tmpfs("/d")])
    plan = _plan.compile_exec_plan(exec_spec, NS.MOUNT)
    assert plan.enter == ((0, int(NS.MOUNT)),)
    assert plan.extra_kinds == ("container",)
    assert "setns" not in calls(plan)


def test_kind_flags_cover_proc_ns_names() -> None:
    """Every joinable kind maps to its CLONE_NEW* flag, and is a name under /proc/self/ns."""
    have = set(os.listdir("/proc/self/ns")) if os.path.isdir("/proc/self/ns") else set(JOINABLE)
    for kind in JOINABLE:
        assert kind in KIND_FLAGS
        assert kind in have or kind in ("time", "cgroup")
    assert KIND_FLAGS["mnt"] == NS.MOUNT and KIND_FLAGS["pid"] == NS.PID and KIND_FLAGS["net"] == NS.NET


@pytest.mark.parametrize("flags", [NS.DEFAULT, NS.DEFAULT & ~NS.PID])
def test_a_child_born_among_running_processes_has_memory_of_its_own(flags: NS) -> None:
    """An exec (or a Join of a pid namespace) is born in a pid namespace whose processes already run:
    it must not share the zygote's memory, which one holding CAP_SYS_PTRACE could then write through
    /proc/PID/mem while the child sets up. A new container's own pid namespace has nobody else in it."""
    from anyns._zygote import _ops

    exec_plan = _plan.compile_exec_plan(spec(argv=["true"]), flags)
    (entered,) = (f for _index, f in exec_plan.enter)
    assert _ops.needs_own_memory(exec_plan.clone_flags, exec_plan.ops, False, entered) == bool(flags & NS.PID)
    fresh = _plan.compile_plan(spec(argv=["true"]), _plan.HostLayout(newroot="/x", cgroup_v2=True))
    assert not _ops.needs_own_memory(fresh.clone_flags, fresh.ops, False, 0)
