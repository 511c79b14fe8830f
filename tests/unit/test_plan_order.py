"""compile_plan: the documented step order, and what each spec field turns into."""

from __future__ import annotations

import re

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import specs

import anyns
from anyns import Namespaces, _plan, _protocol
from anyns._spec import needs_cgroup
from anyns._zygote import _ops

STEP_ORDER = ("cgroup", "userns", "namespaces", "propagation", "rootfs", "dev", "tmp", "proc", "mounts", "pivot_root",
              "hostname", "network", "process", "security", "pdeathsig", "exec")
NEWROOT = "/x"

layouts = st.builds(
    _plan.HostLayout,
    newroot=st.just(NEWROOT),
    top_links=st.lists(st.sampled_from([("bin", "usr/bin"), ("lib", "usr/lib"),
                                        ("sbin", "usr/sbin")]), unique=True).map(tuple),
    top_dirs=st.lists(st.sampled_from(["lib32", "lib64"]), unique=True).map(tuple),
    etc_files=st.lists(st.sampled_from(["passwd", "hosts", "group"]), unique=True).map(tuple),
    etc_dirs=st.lists(st.sampled_from(["ssl", "alternatives"]), unique=True).map(tuple),
    cgroup_v2=st.booleans(),
    cgroup_v1=st.lists(st.sampled_from(["memory", "pids", "cpu"]), unique=True).map(tuple),
)


def compile_(spec: anyns.ContainerSpec, layout: _plan.HostLayout | None = None) -> _plan.Plan:
    return _plan.compile_plan(spec, layout or _plan.HostLayout(newroot=NEWROOT))


def spec(**fields: object) -> anyns.ContainerSpec:
    fields.setdefault("argv", ["/bin/true"])
    return anyns.ContainerSpec(**fields)  # type: ignore[arg-type]


def first_index(ops: tuple[_plan.Op, ...], step: str) -> int:
    return next(i for i, op in enumerate(ops) if op[0] == step)


def test_step_order_matches_the_module_docstring() -> None:
    """The order tested here is the one _plan's docstring documents."""
    doc = _plan.__doc__ or ""
    listed = re.findall(r"^    ([a-z_]+) ", doc.split("The order")[1], re.MULTILINE)
    assert tuple(listed) == STEP_ORDER


@given(specs(), layouts)
def test_steps_follow_the_documented_order(spec: anyns.ContainerSpec,
                                           layout: _plan.HostLayout) -> None:
    """Ops come in documented step order; pivot_root after all mounts; pdeathsig, then execve."""
    ops = compile_(spec, layout).ops
    # open_tree clones a shared/slave bind source early but reports as "mounts"
    ranks = [STEP_ORDER.index(step) for step, call, _, _ in ops if call != "open_tree"]
    assert ranks == sorted(ranks)
    pivot = first_index(ops, "pivot_root")
    assert "pivot_root" in [call for step, call, _, _ in ops if step == "pivot_root"]
    after = [call for _, call, _, _ in ops[pivot:]]
    assert not [c for c in after if ("mount" in c or "bind" in c) and c != "umount2"], after
    assert ops[-1][0] == "exec" and ops[-1][1] in ("execve", "spawn_with_init")
    assert ops[-2][:2] == ("pdeathsig", "pdeathsig")
    assert [op[0] for op in ops].count("exec") == 1
    assert [op[0] for op in ops].count("pdeathsig") == 1


def test_dir_rootfs_steps_follow_the_documented_order() -> None:
    """With a DirRootfs too, every op is in documented order (mount points are made by the step that uses them)."""
    ops = compile_(spec(rootfs=anyns.DirRootfs("/srv/root"))).ops
    steps = [step for step, _, _, _ in ops]
    assert steps == sorted(steps, key=STEP_ORDER.index)


@given(specs(), layouts)
def test_namespace_flags(spec: anyns.ContainerSpec, layout: _plan.HostLayout) -> None:
    """clone3 gets only CLONE_NEWPID; every other namespace is unshared first thing (after entering cgroups)."""
    plan = compile_(spec, layout)
    assert plan.clone_flags == int(spec.namespaces & Namespaces.PID)
    ops = [op for op in plan.ops if op[0] != "cgroup"]
    assert ops[0][:2] == ("namespaces", "unshare")
    assert ops[0][3] == (int(spec.namespaces) & ~int(Namespaces.PID),)
    assert [op for op in plan.ops if op[1] == "unshare"] == [ops[0]]


@given(specs(), layouts)
def test_cgroup_fds_and_moves(spec: anyns.ContainerSpec, layout: _plan.HostLayout) -> None:
    """With a cgroup: the v2 leaf is a clone3 argument, each v1 leaf is entered by the child before anything else."""
    plan = compile_(spec, layout)
    enters = [op for op in plan.ops if op[1] == "cgroup_enter"]
    if not needs_cgroup(spec, layout.rootless):
        assert plan.cgroup == -1 and enters == [] and "leaf" not in plan.extra_kinds
        return
    assert (plan.cgroup >= 0) == layout.cgroup_v2
    if layout.cgroup_v2:
        assert plan.extra_kinds[plan.cgroup] == "leaf"
    assert [op[2] for op in enters] == list(layout.cgroup_v1)
    assert plan.ops[:len(enters)] == tuple(enters)
    assert [plan.extra_kinds[op[3][0]] for op in enters] == ["leaf1"] * len(enters)
    assert plan.to_wire()["cgroup"] == plan.cgroup


def test_a_container_without_its_own_pid_namespace_gets_a_cgroup_from_a_root_supervisor() -> None:
    """No PID, or a joined one: a cgroup even without limits (it kills what the program leaves); rootless: none."""
    layout = _plan.HostLayout(newroot=NEWROOT, cgroup_v2=True, cgroup_v1=("devices", "memory"))
    for no_pid in (spec(namespaces=Namespaces.DEFAULT & ~Namespaces.PID),
                   spec(join=anyns.Join(pid="/proc/1/ns/pid"))):
        assert needs_cgroup(no_pid) and not needs_cgroup(no_pid, rootless=True)
        plan = compile_(no_pid, layout)
        assert plan.extra_kinds[plan.cgroup] == "leaf"
        assert [op[2] for op in plan.ops if op[1] == "cgroup_enter"] == ["devices", "memory"]
        rootless = compile_(no_pid, attrs.evolve(layout, rootless=True))
        assert rootless.cgroup == -1 and "leaf1" not in rootless.extra_kinds
    assert not needs_cgroup(spec())
    assert compile_(spec(), layout).cgroup == -1
    assert needs_cgroup(spec(limits=anyns.Limits()), rootless=True)


def test_an_exec_joins_the_cgroup_of_its_container_whenever_given_the_layout() -> None:
    """compile_exec_plan with a host layout (the container has a cgroup, limits or not): its fds and moves."""
    layout = _plan.HostLayout(newroot=NEWROOT, cgroup_v2=True, cgroup_v1=("memory",))
    exec_spec = spec(namespaces=Namespaces.DEFAULT & ~Namespaces.PID)
    plan = _plan.compile_exec_plan(exec_spec, exec_spec.namespaces, layout)
    assert plan.extra_kinds == ("container", "leaf", "leaf1")
    assert plan.cgroup == 1
    assert _plan.compile_exec_plan(exec_spec, exec_spec.namespaces).extra_kinds == ("container",)


@given(specs(), layouts)
def test_fields_become_their_ops(spec: anyns.ContainerSpec, layout: _plan.HostLayout) -> None:
    """hostname, NET, cwd, mounts, argv and env each show up in their own step."""
    ops = compile_(spec, layout).ops
    in_step = lambda step: [op for op in ops if op[0] == step]  # noqa: E731
    hostname_ops = in_step("hostname")
    if spec.hostname is None:
        assert hostname_ops == []
    else:
        assert [op[1:] for op in hostname_ops] == [("sethostname", None, (spec.hostname,))]
    assert bool(in_step("network")) == (Namespaces.NET in spec.namespaces)
    assert ("process", "chdir", spec.cwd, (spec.cwd,)) in in_step("process")
    # The spec's mounts are made in their order, each named by its target.
    paths = [op[2] for op in in_step("mounts") if op[1] != "open_tree"]  # open_tree names the source
    assert set(paths) == {m.target for m in spec.mounts}
    firsts = [paths.index(target) for target in dict.fromkeys(m.target for m in spec.mounts)]
    assert firsts == sorted(firsts)
    step, call, path, args = ops[-1]
    candidates, argv, env = args[-3:]
    with_init = spec.init and Namespaces.PID in spec.namespaces
    assert call == ("spawn_with_init" if with_init else "execve")
    assert (step, path, argv) == ("exec", spec.argv[0], spec.argv)
    assert sorted(env) == sorted(f"{k}={v}" for k, v in spec.env.items())
    if "/" in spec.argv[0]:
        assert candidates == (spec.argv[0],)
    else:
        assert candidates and all(c.endswith("/" + spec.argv[0]) for c in candidates)


@given(specs(), layouts)
def test_plan_is_pure_and_survives_the_wire(spec: anyns.ContainerSpec,
                                            layout: _plan.HostLayout) -> None:
    """Compiling is deterministic, every op is one the child knows, and the plan travels as JSON.

    The seccomp policy op is the one exception: the supervisor compiles it to
    BPF (``seccomp_bpf``) before the plan is sent.
    """
    plan = compile_(spec, layout)
    assert compile_(spec, layout) == plan
    assert {op[1] for op in plan.ops} - {"seccomp"} <= set(_ops.CODES) | set(_ops.INIT_MODES)
    data = _protocol.encode(_protocol.SPAWN, 1, 1, plan.to_wire())
    assert len(data) < _protocol.MAX_MESSAGE
    body = _protocol.decode(data)[3]
    assert body is not None
    assert body["flags"] == plan.clone_flags
    assert body["ops"] == [[step, call, path, list(_lists(args))]
                           for step, call, path, args in plan.ops]


def _lists(args: tuple[object, ...]) -> list[object]:
    return [list(a) if isinstance(a, tuple) else a for a in args]


def test_dir_rootfs_errors_name_the_host_path() -> None:
    """The first rootfs op of a DirRootfs names its host path, so a failure points at it."""
    ops = compile_(spec(rootfs=anyns.DirRootfs("/srv/root"))).ops
    rootfs = [op for op in ops if op[0] == "rootfs"]
    assert rootfs and rootfs[0][2] == "/srv/root"


def test_shared_bind_source_is_cloned_before_the_tree_turns_slave() -> None:
    """A shared bind's source is cloned (open_tree) before / is made rslave, and attached in mounts."""
    s = spec(mounts=[anyns.Bind("/a", "/b", propagation="shared"), anyns.Bind("/c", "/d")])
    calls = [(step, call, path) for step, call, path, _ in compile_(s).ops]
    clone = calls.index(("mounts", "open_tree", "/a"))
    rslave = calls.index(("propagation", "mount", "/"))
    attach = calls.index(("mounts", "attach_tree", "/b"))

    assert clone < rslave < attach
    assert ("mounts", "bind_at", "/d") in calls


def test_exec_candidates_follow_path() -> None:
    """A bare argv[0] is tried in each PATH entry in order, like execvp."""
    ops = compile_(spec(argv=["tool"], env={"PATH": "/a:/b/:/c"})).ops
    assert ops[-1][3][-3] == ("/a/tool", "/b/tool", "/c/tool")


@given(specs(), layouts)
def test_init_spawns_the_program_and_reports_on_the_last_extra_fd(spec: anyns.ContainerSpec,
                                                                  layout: _plan.HostLayout) -> None:
    """With init (and a pid namespace of its own) the exec step spawns the program; the status pipe is the last fd."""
    with_init = attrs.evolve(spec, init=True)
    without = attrs.evolve(spec, init=False)
    plan, bare = compile_(with_init, layout), compile_(without, layout)
    assert "status" not in bare.extra_kinds and bare.ops[-1][1] == "execve"
    if Namespaces.PID not in spec.namespaces:
        assert plan == bare  # no pid namespace of its own: nothing to be init of
        return
    assert plan.extra_kinds == (*bare.extra_kinds, "status")
    assert plan.ops[:-1] == bare.ops[:-1]
    assert plan.ops[-1] == ("exec", "spawn_with_init", spec.argv[0],
                           (len(plan.extra_kinds) - 1, *bare.ops[-1][3]))


def test_extra_fds_follow_the_plans_kinds() -> None:
    """Plan.extra_fds puts each kind's fds where extra_kinds has them; the v1 leaf kinds draw on "leaf"."""
    from anyns._plan import Plan

    plan = Plan(clone_flags=0, ops=(), extra_kinds=("net", "leaf", "leaf1", "leaf1", "go", "status"))
    assert plan.extra_fds({"status": [9], "go": [8], "leaf": [5, 6, 7], "net": [4], "pid": [3]}) == [
        4, 5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="'go'"):
        plan.extra_fds({"net": [4], "leaf": [5, 6, 7], "status": [9]})


def test_a_joined_cgroup_namespace_and_the_cgroup_leaf_keep_their_own_fds() -> None:
    """Join(pid=..., cgroup=...) gives a container both a joined cgroup namespace and a leaf of its own (no pid
    namespace of its own): the two kinds must not draw on the same fds (a fuzzed spec found them mixed)."""
    spec = anyns.ContainerSpec(argv=["true"], join=anyns.Join(pid="/proc/1/ns/pid", cgroup="/proc/1/ns/cgroup"))
    layout = _plan.HostLayout(newroot="/x", cgroup_v2=True, cgroup_v1=("memory", "pids"))
    plan = _plan.compile_plan(spec, layout)
    assert plan.extra_kinds.count("cgroup") == 1 and plan.extra_kinds.count("leaf") == 1
    fds = plan.extra_fds({"pid": [3], "cgroup": [4], "leaf": [5, 6, 7], "status": [8]})
    kinds = dict(zip(plan.extra_kinds, fds, strict=False))
    assert kinds["cgroup"] == 4 and kinds["leaf"] == 5 and fds[plan.cgroup] == 5
    assert len(set(fds)) == len(fds) == len(plan.extra_kinds)  # each fd once
