"""What ``run(collect=...)`` changes in a plan (the init holds the container), the rootless root fd, and the
collect argument's checks: pure, no processes."""

from __future__ import annotations

import pathlib

import attrs
import pytest

import anyns
from anyns import _files, _init, _plan
from anyns._spec import Namespaces
from anyns._zygote import _ops

ROOT = _plan.HostLayout(newroot="/x", cgroup_v2=True)
ROOTLESS = attrs.evolve(ROOT, rootless=True)


def spec(**fields: object) -> anyns.ContainerSpec:
    fields.setdefault("argv", ["tool"])
    return anyns.ContainerSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", [ROOT, ROOTLESS], ids=["root", "rootless"])
def test_collect_makes_the_init_hold(layout: _plan.HostLayout) -> None:
    """With collect the exec step is hold_with_init (init.c's HOLD mode), the only difference from the plan
    without; the plan says so (its status channel is then a socket)."""
    plain = _plan.compile_plan(spec(), layout)
    held = _plan.compile_plan(spec(), layout, collect=True)
    assert (plain.holds_init, held.holds_init) == (False, True)
    assert plain.ops[-1][1] == "spawn_with_init" and held.ops[-1][1] == "hold_with_init"
    assert plain.ops[:-1] == held.ops[:-1] and plain.ops[-1][2:] == held.ops[-1][2:]
    assert plain != held  # so the supervisor caches them apart
    (op,) = _ops.decode(_ops.encode([held.ops[-1]]))
    assert op["op"] == "exec_init" and op["n"][1] == _init.MODES["hold_with_init"] == 4
    assert (op["step"], op["call"]) == (b"exec", b"execve")


@pytest.mark.parametrize("fields", [{"init": False}, {"namespaces": Namespaces.DEFAULT & ~Namespaces.PID}],
                         ids=["init=False", "no-pid-namespace"])
@pytest.mark.parametrize("layout", [ROOT, ROOTLESS], ids=["root", "rootless"])
def test_collect_without_the_init_as_pid_1_is_refused(fields: dict[str, object], layout: _plan.HostLayout) -> None:
    """Only pid 1 of its own namespace can hold the container after the program's end."""
    with pytest.raises(anyns.SpecError, match="collect"):
        _plan.compile_plan(spec(**fields), layout, collect=True)


def test_a_rootless_child_sends_its_root_after_the_pivot() -> None:
    """Rootless: right after the old root is detached, the child sends an fd of its root (the supervisor cannot
    open /proc/PID/root of its non-dumpable init); a root supervisor's child does not."""
    own = anyns.IdMap(uid=(0, 65534, 1), gid=(0, 65534, 1))  # what a rootless supervisor gives every spec
    calls = [op[1] for op in _plan.compile_plan(spec(user_ns=own), ROOTLESS).ops]
    assert calls[calls.index("umount2") + 1] == "send_root"
    assert "send_root" not in [op[1] for op in _plan.compile_plan(spec(), ROOT).ops]
    assert "send_root" not in [op[1] for op in _plan.compile_plan(spec(user_ns=anyns.DEFAULT_ID_MAP), ROOT).ops]


def test_collect_paths_are_checked() -> None:
    """Absolute paths (str or PathLike), duplicates dropped in order; anything else is a SpecError."""
    assert _files.check_collect(None) == ()
    assert _files.check_collect(["/a", pathlib.PurePosixPath("/b"), "/a"]) == ("/a", "/b")
    for bad in ("/a", b"/a", ["a"], [b"/a"], ["/a\0b"], [1]):
        with pytest.raises(anyns.SpecError, match="collect"):
            _files.check_collect(bad)  # type: ignore[arg-type]
