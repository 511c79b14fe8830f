"""anyns.Limits: sizes, task counts and CPU shares are checked when the value is built."""

from __future__ import annotations

import pickle
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyns
from anyns import Limits
from anyns._spec import parse_size

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(("memory", "expected"), [
    ("256M", 256 * MiB),
    ("256m", 256 * MiB),
    ("1.5G", 1536 * MiB),
    ("1g", GiB),
    ("64KiB", 64 * KiB),
    ("64kb", 64 * KiB),
    ("2MB", 2 * MiB),
    ("1T", TiB),
    ("0.5k", 512),
    (" 32M ", 32 * MiB),
    ("4096", 4096),
    (1024, 1024),
    (1, 1),
    ((1 << 62) - 1, (1 << 62) - 1),
])
def test_memory_sizes(memory: object, expected: int) -> None:
    """An int is bytes; a string takes k, M, G, T (powers of 1024, any case, optional "B"/"iB") and decimals."""
    assert parse_size("limits.memory", memory) == expected
    if expected >= 2 * MiB:
        assert Limits(memory=memory).memory == expected


@pytest.mark.parametrize("memory", ["64k", "1M", (2 * MiB) - 1, "1.99M"])
def test_memory_below_2m_is_refused(memory: object) -> None:
    """Below 2M the setup itself would be OOM-killed before the program ran: a SpecError that says so."""
    with pytest.raises(anyns.SpecError, match="at least 2M"):
        Limits(memory=memory)
    assert Limits(memory="2M").memory == 2 * MiB


@pytest.mark.parametrize("memory", [
    "", "M", "abc", "12X", "1.5.5M", "-1M", "-5", "0", "0M", "0.1", "nan", "inf", "1.0e400",
    0, -1, 1 << 62, True, False, 1.5, b"256M", [256],
])
def test_invalid_memory_is_spec_error(memory: object) -> None:
    """Unparsable text, 0 or less, 2**62 or more, bools, floats and other types are refused."""
    with pytest.raises(anyns.SpecError) as info:
        Limits(memory=memory)
    assert str(info.value).startswith("limits.memory:")


@given(st.integers(1, 1 << 20), st.sampled_from(["", "k", "K", "m", "M", "g", "G", "KiB", "MB", "GiB"]))
def test_memory_number_and_unit(number: int, unit: str) -> None:
    """f"{n}{unit}" is n times the unit's power of 1024."""
    scale = {"": 1, "k": KiB, "m": MiB, "g": GiB}[unit[:1].lower()]
    assert parse_size("limits.memory", f"{number}{unit}") == number * scale


@pytest.mark.parametrize("pids", [1, 64, (1 << 31) - 1])
def test_valid_pids(pids: int) -> None:
    assert Limits(pids=pids).pids == pids


@pytest.mark.parametrize("pids", [0, -1, 1 << 31, True, False, 1.5, "64", 64.0])
def test_invalid_pids_is_spec_error(pids: object) -> None:
    """pids is an int from 1 to 2**31-1; bools, floats and strings are refused."""
    with pytest.raises(anyns.SpecError) as info:
        Limits(pids=pids)
    assert str(info.value).startswith("limits.pids:")


@pytest.mark.parametrize("cpu", [0.01, 0.5, 1, 2, 1.25, 1_000_000])
def test_valid_cpu(cpu: float) -> None:
    assert Limits(cpu=cpu).cpu == cpu


@pytest.mark.parametrize("cpu", [0.001, 0.0099, 0, -1, 1_000_001, float("nan"), float("inf"), True, "0.5"])
def test_invalid_cpu_is_spec_error(cpu: object) -> None:
    """cpu is a number of CPUs from 0.01 (the kernel's 1 ms quota per 100 ms period); bools and text are refused."""
    with pytest.raises(anyns.SpecError) as info:
        Limits(cpu=cpu)
    assert str(info.value).startswith("limits.cpu:")


def test_default_is_no_limit() -> None:
    """Limits() limits nothing (but still asks for a cgroup); the spec default is no Limits at all."""
    assert (Limits().memory, Limits().pids, Limits().cpu) == (None, None, None)
    assert anyns.ContainerSpec(argv=["true"]).limits is None


def test_limits_are_frozen_hashable_keyword_only_values() -> None:
    """Equal limits (however the size was written) are equal and hash alike; fields cannot change; keywords only."""
    a, b = Limits(memory="2M", pids=8, cpu=0.5), Limits(memory=2 * MiB, pids=8, cpu=0.5)
    assert a == b and hash(a) == hash(b)
    assert a != Limits(memory="2M", pids=9, cpu=0.5)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.pids = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        Limits("1M")  # type: ignore[misc]
    spec = anyns.ContainerSpec(argv=["true"], limits=a)
    assert spec == anyns.ContainerSpec(argv=["true"], limits=b) and spec.limits is a


@pytest.mark.parametrize("limits", [{"memory": "1M"}, "1M", 64, Limits])
def test_spec_limits_must_be_a_limits(limits: Any) -> None:
    """ContainerSpec(limits=...) takes an anyns.Limits only."""
    with pytest.raises(anyns.SpecError) as info:
        anyns.ContainerSpec(argv=["true"], limits=limits)
    assert str(info.value).startswith("limits:")


@pytest.mark.parametrize(("limit", "shown"), [(32 * MiB, "32M"), (1536 * MiB, "1536M"), (GiB, "1G"),
                                              (1000, "1000"), (None, None)])
def test_oom_message_names_the_limit(limit: int | None, shown: str | None) -> None:
    """ContainerFailed for an OOM kill says so and names the limit in the largest exact unit; it pickles."""
    err = anyns.ContainerFailed(-9, ["hog"], oom_killed=True, memory_limit=limit)
    assert "OOM killer" in str(err)
    if shown is not None:
        assert f"(memory limit {shown})" in str(err)
    else:
        assert "memory limit" not in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.returncode, copy.cmd, copy.oom_killed, copy.memory_limit) == (-9, ["hog"], True, limit)
    assert str(copy) == str(err)


def test_non_oom_failure_message() -> None:
    """Without oom_killed (or with an exit status) the message is the plain one."""
    assert "OOM" not in str(anyns.ContainerFailed(-9, ["x"]))
    assert "OOM" not in str(anyns.ContainerFailed(137, ["x"], oom_killed=True, memory_limit=MiB))


def test_one_task_with_the_init_is_refused() -> None:
    """pids=1 leaves no task for the program beside the init: SpecError, unless init=False or no pid namespace."""
    with pytest.raises(anyns.SpecError, match="init"):
        anyns.ContainerSpec(argv=["true"], limits=anyns.Limits(pids=1))
    assert anyns.ContainerSpec(argv=["true"], limits=anyns.Limits(pids=1), init=False).limits == anyns.Limits(pids=1)
    assert anyns.ContainerSpec(argv=["true"], limits=anyns.Limits(pids=2)).limits == anyns.Limits(pids=2)
