"""The native executor shows a container the same world as the Python one did (issue 16).

``tests/data/native_differential.json`` holds, for each spec of
``differential.CASES``, what a container saw when the cloned child's setup was
Python (``anyns/_child.py`` at 229057d, recorded with ``python -m tests.differential
--write``): its mounts, namespaces, capabilities, seccomp mode and answers, identity,
hostname, fds, environment, umask, cwd, rlimits, session, prctl state and process
tree. Each test runs one spec with the current executor and compares views; a
mismatch prints a diff per section (``-`` the Python executor's, ``+`` now).

Differences that are intended are listed, with the reason, in
``differential.ACCEPTED``; a case whose difference is a bug is marked xfail
(strict) with the reason, so that it flips when fixed.

To regenerate the golden file (only when a probe or a case changes, never to make
a failing test pass):

    git worktree add /tmp/old 229057d && cd /tmp/old
    musl-gcc -static -Os -s -o anyns/_native/anyns-init anyns/_native/init.c
    cp /path/to/main/tests/differential.py tests/
    python -m tests.differential --write /path/to/main/tests/data/native_differential.json
"""

from __future__ import annotations

import json
import os
from typing import Any

import differential
import pytest

GOLDEN_PATH = differential.GOLDEN


def _golden() -> dict[str, Any] | None:
    if not os.path.exists(GOLDEN_PATH):
        return None
    with open(GOLDEN_PATH) as f:
        doc: dict[str, Any] = json.load(f)
    return doc


GOLDEN = _golden()


def _params() -> list[Any]:
    out = []
    for name, case in differential.CASES.items():
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def test_golden_covers_every_case() -> None:
    """The golden file has a view of every case, and nothing else (regenerate it when CASES changes)."""
    assert GOLDEN is not None, f"{GOLDEN_PATH} is missing"
    assert sorted(GOLDEN["cases"]) == sorted(differential.CASES)


@pytest.mark.parametrize("name", _params())
async def test_container_sees_what_the_python_executor_showed(name: str) -> None:
    """The container's normalized view for spec ``name`` equals the Python executor's (plus ACCEPTED changes)."""
    if GOLDEN is None or name not in GOLDEN["cases"]:
        pytest.fail(f"no golden view of {name!r} in {GOLDEN_PATH}: regenerate it (see this module's docstring)")
    facts = differential.host_facts()
    if facts != GOLDEN["host"]:
        pytest.skip(f"the golden views were recorded on another kind of host ({GOLDEN['host']}, this is {facts})")
    expected = differential.expected_view(name, GOLDEN["cases"][name])
    view = await differential.view_of(name)
    found = differential.diff(expected, view)
    assert not found, (
        f"case {name!r}: the container's view differs from the Python executor's "
        f"(- old, + native):\n{found}"
    )
