"""Which init starts the program (the exec step's call), and how the zygote links it: pure, no processes."""

from __future__ import annotations

import pathlib
import re

import attrs
import pytest

import anyns
from anyns import _init, _plan
from anyns._spec import Namespaces
from anyns._zygote import _ops

ROOT = _plan.HostLayout(newroot="/x", cgroup_v2=True)
ROOTLESS = attrs.evolve(ROOT, rootless=True)
NO_PID = Namespaces.DEFAULT & ~Namespaces.PID


def spec(**fields: object) -> anyns.ContainerSpec:
    fields.setdefault("argv", ["tool", "-v"])
    fields.setdefault("env", {"PATH": "/a:/b", "K": "v"})
    return anyns.ContainerSpec(**fields)  # type: ignore[arg-type]


def last(plan: _plan.Plan) -> tuple[str, ...]:
    return plan.ops[-1][:2]


@pytest.mark.parametrize("layout", [ROOT, ROOTLESS], ids=["root", "rootless"])
def test_with_a_pid_namespace_init_decides(layout: _plan.HostLayout) -> None:
    """Own pid namespace: the init is its pid 1 (spawn_with_init, status pipe last), or the program is."""
    with_init = _plan.compile_plan(spec(), layout)
    assert last(with_init) == ("exec", "spawn_with_init") and with_init.extra_kinds[-1] == "status"
    assert with_init.ops[-1][3] == (len(with_init.extra_kinds) - 1, ("/a/tool", "/b/tool"), ("tool", "-v"),
                                    ("PATH=/a:/b", "K=v"))
    bare = _plan.compile_plan(spec(init=False), layout)
    assert last(bare) == ("exec", "execve") and "status" not in bare.extra_kinds


@pytest.mark.parametrize("init", [True, False])
def test_rootless_without_pid_namespace_the_init_is_a_subreaper(init: bool) -> None:
    """No pid namespace and no cgroup (rootless): the init reaps and kills what is left, whatever ``init`` says."""
    plan = _plan.compile_plan(spec(namespaces=NO_PID, init=init), ROOTLESS)
    assert last(plan) == ("exec", "subreaper")
    assert plan.extra_kinds[-1] == "status" and plan.ops[-1][3][0] == len(plan.extra_kinds) - 1
    assert plan == _plan.compile_plan(spec(namespaces=NO_PID, init=not init), ROOTLESS)


def test_a_cgroup_makes_the_subreaper_needless() -> None:
    """Without a pid namespace a root supervisor's container has a cgroup, and so has one with limits: the
    cgroup kills what the program leaves, the program is execve'd itself."""
    for plan in (_plan.compile_plan(spec(namespaces=NO_PID), ROOT),
                 _plan.compile_plan(spec(namespaces=NO_PID, limits=anyns.Limits()), ROOTLESS)):
        assert last(plan) == ("exec", "execve") and "status" not in plan.extra_kinds


def test_a_rootless_exec_waits_through_the_init_and_reaps_without_pid_namespace() -> None:
    """A rootless exec: the waiter (fork_and_wait); into a container without a pid namespace, a subreaper too."""
    waiter = _plan.compile_exec_plan(spec(), Namespaces.DEFAULT, None, True, True)
    assert last(waiter) == ("exec", "fork_and_wait")
    reaper = _plan.compile_exec_plan(spec(), NO_PID, None, True, True)
    assert last(reaper) == ("exec", "subreaper")
    assert reaper.ops[-1][3][0] == reaper.extra_kinds.index("status") == len(reaper.extra_kinds) - 1
    root = _plan.compile_exec_plan(spec(), Namespaces.DEFAULT)
    assert last(root) == ("exec", "execve")


def test_the_plan_docstring_names_the_init_program() -> None:
    """The exec line of the step table says the init is exec'd, not a fork that stays."""
    exec_line = (_plan.__doc__ or "").split("    exec ", 1)[1]
    assert "execveat" in exec_line and "posix_spawn" not in exec_line


def test_an_init_op_encodes_its_mode_counts_and_one_vector() -> None:
    """An init op becomes exec_init with its mode and counts, and one vector of candidates, argv and env;
    the control record that goes before it is made by each spawn (spawn.c)."""
    ops = [list(op) for op in _plan.compile_plan(spec(namespaces=NO_PID), ROOTLESS).ops]
    (op,) = _ops.decode(_ops.encode(ops[-1:]))
    assert op["op"] == "exec_init" and (op["step"], op["call"], op["path"]) == (b"exec", b"execve", b"tool")
    status, mode, candidates, argc = op["n"][:4]
    assert (mode, candidates, argc) == (_init.MODES["subreaper"], 2, 2)
    assert op["v"][0] == [b"/a/tool", b"/b/tool", b"tool", b"-v", b"PATH=/a:/b", b"K=v"]
    assert status == ops[-1][3][0]


def test_the_control_record() -> None:
    """init.c parses what spawn.c writes (flags, status fd, error fd, candidates, argc) under one prefix, and the
    modes are init.c's flags."""
    native = pathlib.Path(_init.__file__).parent / "_native"
    init_c, spawn_c = (native / "init.c").read_text(), (native / "spawn.c").read_text()
    assert '#define CONTROL "ANYNS_INIT="' in init_c and 'put_str(p, end, "ANYNS_INIT=")' in spawn_c
    flags = {name: int(value) for name, value in re.findall(r"#define FLAG_(\w+) (\d+)", init_c)}
    assert flags == {"FORK": 1, "SUBREAPER": 2, "HOLD": 4}
    expected = {"spawn_with_init": 0, "fork_and_wait": flags["FORK"],
                "subreaper": flags["FORK"] | flags["SUBREAPER"], "hold_with_init": flags["HOLD"]}
    assert expected == _init.MODES
