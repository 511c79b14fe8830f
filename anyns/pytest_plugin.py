"""The anyns pytest plugin (registered through the ``pytest11`` entry point).

Fixtures, for tests run by pytest-trio (``trio_mode = true``, or ``@pytest.mark.trio``):

* ``anyns_supervisor``: an ``anyns.Supervisor`` for the test, closed after it
  (every container it started is killed and reaped);
* ``sandbox``: a factory, ``await sandbox(spec_or_argv, **run_options)`` →
  ``anyns.CompletedContainer``; a list of strings is run with the default
  spec, ``check=False`` and stdout/stderr captured unless told otherwise.

Marker: ``@pytest.mark.anyns`` on a test (or module) skips it, with the
reason, where this host cannot run containers; tests using the fixtures get
the same check. ``ANYNS_MUST_WORK=1`` turns that skip into a failure, for CI.

Example::

    async def test_hostname(sandbox):
        done = await sandbox(anyns.ContainerSpec(argv=["hostname"], hostname="t1"))
        assert done.stdout == b"t1\\n"
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from ._container import CompletedContainer
from ._spec import ContainerSpec
from ._supervisor import Supervisor, open_supervisor

__all__ = ["anyns_supervisor", "sandbox"]

_PROBE = """
import trio, anyns
async def main():
    async with anyns.open_supervisor() as sup:
        await sup.run(anyns.ContainerSpec(argv=["true"]))
trio.run(main)
"""
_verdict: str | None = None
_probed = False


def _cannot_run() -> str | None:
    """None when this host can run containers, else the reason; probed once, in a subprocess."""
    global _verdict, _probed
    if not _probed:
        _probed = True
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            _verdict = f"anyns cannot start a container here: {e}"
        else:
            if done.returncode != 0:
                last = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
                _verdict = f"anyns cannot start a container here: {last}"
    return _verdict


def _skip_if_unable() -> None:
    reason = _cannot_run()
    if reason is None:
        return
    if os.environ.get("ANYNS_MUST_WORK") == "1":
        pytest.fail(f"{reason} (ANYNS_MUST_WORK=1)")
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "anyns: needs to run Linux containers; skipped with the reason where the host cannot"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("anyns") is not None:
        _skip_if_unable()


@pytest.fixture
async def anyns_supervisor() -> AsyncIterator[Supervisor]:
    """A supervisor for one test; leaving the test kills and reaps what it started."""
    _skip_if_unable()
    async with open_supervisor() as supervisor:
        yield supervisor


Sandbox = Callable[..., Awaitable[CompletedContainer]]


@pytest.fixture
def sandbox(anyns_supervisor: Supervisor) -> Sandbox:
    """``await sandbox(spec_or_argv, **options)``: run a container to completion in this test.

    With a list of strings, the default ``ContainerSpec`` runs it. Options are
    ``Supervisor.run``'s; by default stdout and stderr are captured and a
    non-zero exit is returned, not raised (``check=False``).
    """

    async def run(spec: ContainerSpec | Sequence[str], **options: Any) -> CompletedContainer:
        if not isinstance(spec, ContainerSpec):
            spec = ContainerSpec(argv=list(spec))
        options.setdefault("check", False)
        if options.get("stdout") is None:
            options.setdefault("capture_stdout", True)
        if options.get("stderr") is None:
            options.setdefault("capture_stderr", True)
        return await anyns_supervisor.run(spec, **options)

    return run
