"""Budgets when they are built: ContainerSpec(timeout), Limits(cpu_time), the verdict in ContainerFailed."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyns
from anyns import ContainerSpec, Limits
from anyns._spec import needs_cgroup
from anyns._stdio import StdioOptions

BAD_SECONDS = [0, -1, -0.5, math.inf, -math.inf, math.nan, "1", True, False, [1]]


@pytest.mark.parametrize("value", BAD_SECONDS)
def test_timeout_must_be_positive_finite_seconds(value: Any) -> None:
    with pytest.raises(anyns.SpecError, match="timeout"):
        ContainerSpec(argv=["true"], timeout=value)


@pytest.mark.parametrize("value", BAD_SECONDS)
def test_cpu_time_must_be_positive_finite_seconds(value: Any) -> None:
    with pytest.raises(anyns.SpecError, match="cpu_time"):
        Limits(cpu_time=value)


@given(st.floats(min_value=1e-6, max_value=1e9) | st.integers(min_value=1, max_value=10**9))
def test_positive_seconds_are_kept(value: float) -> None:
    assert ContainerSpec(argv=["true"], timeout=value).timeout == value
    assert Limits(cpu_time=value).cpu_time == value


def test_defaults_have_no_budget() -> None:
    assert ContainerSpec(argv=["true"]).timeout is None
    assert Limits().cpu_time is None


def test_a_cpu_budget_gives_the_container_a_cgroup() -> None:
    """cpu_time is enforced through the container's cgroup, so asking for it asks for one."""
    assert needs_cgroup(ContainerSpec(argv=["true"], limits=Limits(cpu_time=1)), rootless=True)


@pytest.mark.parametrize("value", [0, -1, 1.5, "1M", True])
def test_max_output_must_be_positive_bytes(value: Any) -> None:
    with pytest.raises(anyns.SpecError, match="max_output"):
        StdioOptions.of(b"", True, False, None, None, True, started=False, max_output=value)
    assert StdioOptions.of(b"", True, False, None, None, True, started=False, max_output=1).max_output == 1


@pytest.mark.parametrize(("exceeded", "budget", "words"), [
    ("timeout", 0.5, "the time ran out after 0.5 s (timeout)"),
    ("cpu_time", 2, "the cpu time ran out after 2 s of cpu in all (cpu_time)"),
    ("output", 1 << 20, "its output reached the cap of 1m (max_output)"),
    ("output", 1000, "its output reached the cap of 1000 bytes (max_output)"),
])
def test_container_failed_names_the_budget(exceeded: str, budget: float, words: str) -> None:
    err = anyns.ContainerFailed(-9, ["job"], b"partial", None, exceeded=exceeded, budget=budget)
    assert str(err).startswith("container ['job']: ")
    assert words in str(err).lower()
    again = pickle.loads(pickle.dumps(err))
    assert (again.exceeded, again.budget, again.output, str(again)) == (exceeded, budget, b"partial", str(err))


def test_completed_container_carries_the_verdict() -> None:
    done = anyns.CompletedContainer(["job"], -9, b"", None, 1, exceeded="timeout")
    assert done.exceeded == "timeout" and "exceeded=timeout" in repr(done)
    assert anyns.CompletedContainer(["job"], 0, b"", None, 1).exceeded is None
