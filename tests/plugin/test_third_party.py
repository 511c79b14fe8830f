"""A test file as a project using anyns would write it: only the plugin's fixtures and marker."""

from __future__ import annotations

import pytest

import anyns

pytestmark = pytest.mark.anyns


async def test_sandbox_runs_a_spec(sandbox) -> None:  # type: ignore[no-untyped-def]
    """sandbox(spec) returns the CompletedContainer, output captured."""
    done = await sandbox(anyns.ContainerSpec(argv=["sh", "-c", "hostname; echo oops >&2; exit 4"], hostname="tp1"))

    assert (done.returncode, done.stdout, done.stderr) == (4, b"tp1\n", b"oops\n")


async def test_sandbox_runs_an_argv(sandbox) -> None:  # type: ignore[no-untyped-def]
    """sandbox([...]) uses the default spec: pid 2 (under the init) in its own namespaces."""
    done = await sandbox(["sh", "-c", "echo $$"])

    assert done.stdout == b"2\n"


async def test_sandbox_options_pass_through(sandbox) -> None:  # type: ignore[no-untyped-def]
    """Supervisor.run's options work through the fixture, check=True included."""
    assert (await sandbox(["cat"], stdin=b"fed")).stdout == b"fed"
    with pytest.raises(anyns.ContainerFailed):
        await sandbox(["false"], check=True)


async def test_supervisor_fixture(anyns_supervisor) -> None:  # type: ignore[no-untyped-def]
    """anyns_supervisor is a working Supervisor for the test."""
    done = await anyns_supervisor.run(anyns.ContainerSpec(argv=["true"]))

    assert isinstance(anyns_supervisor, anyns.Supervisor)
    assert done.returncode == 0
