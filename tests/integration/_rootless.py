"""Running a supervisor as an unprivileged user (nobody): the Python it needs and the files it must read.

The CI's own Python lives under /root, which is 0700, so uid 65534 gets a venv
made from the system's /usr/bin/python3 with trio, attrs and pyroute2, kept at
``ANYNS_ROOTLESS_VENV`` (default /tmp/anyns-rootless-venv; made here if
missing, which needs PyPI). The anyns package is copied beside each script, in
a directory that user can read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

import anyns

NOBODY = 65534
VENV = os.environ.get("ANYNS_ROOTLESS_VENV", "/tmp/anyns-rootless-venv")


def skip_or_fail(reason: str) -> None:
    """Skip, or fail under ANYNS_MUST_WORK=1 (as the shared fixture does; module-scoped fixtures can't use it)."""
    if os.environ.get("ANYNS_MUST_WORK") == "1":
        pytest.fail(f"ANYNS_MUST_WORK=1 but: {reason}", pytrace=False)
    pytest.skip(reason)


def readable_by_all(path: str) -> None:
    """Let every user read ``path`` and everything under it (and run what its owner may run)."""
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            p = os.path.join(top, name)
            mode = os.lstat(p).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(p, mode | stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else 0))
    os.chmod(path, 0o755)


@contextlib.contextmanager
def staged(script: str, prefix: str) -> Iterator[str]:
    """A directory uid 65534 can read, holding the anyns package under test and ``script`` as ``script.py``;
    removed afterwards. What the caller adds later must be made readable too (``readable_by_all``)."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        shutil.copytree(os.path.dirname(anyns.__file__), os.path.join(path, "anyns"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        with open(os.path.join(path, "script.py"), "w") as f:
            f.write(script)
        readable_by_all(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def script_env(path: str) -> dict[str, str]:
    """The environment a staged script runs with: the staged package first, no inherited variables."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": path, "HOME": path}


def rootless_python() -> str:
    """A Python with trio, attrs and pyroute2 that uid 65534 can run (made once if missing); skips if impossible."""
    python = os.path.join(VENV, "bin", "python")
    if shutil.which("setpriv") is None:
        skip_or_fail("setpriv (util-linux) is needed to drop to an unprivileged user")
    if not os.path.exists(python):
        base = "/usr/bin/python3"
        if not os.path.exists(base):
            skip_or_fail("no /usr/bin/python3 to make a venv an unprivileged user can run")
        made = subprocess.run([base, "-m", "venv", VENV], capture_output=True, text=True)
        if made.returncode != 0:
            skip_or_fail(f"cannot make {VENV}: {made.stderr.strip()[-200:]}")
        installed = subprocess.run([python, "-m", "pip", "install", "-q", "trio", "attrs", "pyroute2"],
                                   capture_output=True, text=True, timeout=600)
        if installed.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            skip_or_fail(f"cannot install trio, attrs, pyroute2 into {VENV}: {installed.stderr.strip()[-200:]}")
    readable_by_all(VENV)
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                             capture_output=True, text=True)
    if version.stdout.strip() != "True":
        skip_or_fail(f"{python} is older than Python 3.11")
    return python
