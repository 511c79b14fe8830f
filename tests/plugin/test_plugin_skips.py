"""The plugin's marker skips cleanly, with the reason, where containers cannot run."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_cap_sys_admin_the_tests_skip_with_a_reason() -> None:
    """Without CAP_SYS_ADMIN, a third-party test file is skipped, not failed, and says why."""
    env = {k: v for k, v in os.environ.items() if k != "ANYNS_MUST_WORK"}
    done = subprocess.run(
        ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin",
         sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(HERE / "test_third_party.py")],
        capture_output=True, timeout=120, env=env, check=False, cwd=HERE.parents[1],
    )
    out = done.stdout.decode()

    assert done.returncode == 0, out
    assert "4 skipped" in out
    assert "anyns cannot start a container here" in out
