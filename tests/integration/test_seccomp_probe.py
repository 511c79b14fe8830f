"""anyns inside a container under anyns's filter: the x32 probe never makes the call that filter kills.

Where the kernel runs no x32 syscalls, anyns leaves x32 out of its filter, so a container's x32
call is killed for its architecture. The probe (one x32 getpid) must therefore not run under a
filter: nested, it keeps x32 in the filter instead (it only costs length).
"""

from __future__ import annotations

import os
import sys

import anyns

PROBE = "from anyns._sys import _seccomp; print(_seccomp.kernel_runs('x32'))"
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(anyns.__file__)))
#: what the host's interpreter and this anyns need inside the container
BINDS = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, PACKAGE_PARENT)})


async def test_the_x32_probe_is_skipped_under_a_filter(sup: anyns.Supervisor) -> None:
    spec = anyns.ContainerSpec(argv=[sys.executable, "-c", PROBE], env={"PYTHONPATH": PACKAGE_PARENT},
                               mounts=[anyns.Bind(p, p) for p in BINDS])
    done = await sup.run(spec, capture_stdout=True, capture_stderr=True, check=False)
    assert (done.returncode, done.stdout) == (0, b"True\n"), done.stderr[-2000:]
