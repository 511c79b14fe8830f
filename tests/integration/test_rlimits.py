"""ContainerSpec.rlimits: setrlimit(2) in the child before exec, seen in /proc/self/limits."""

from __future__ import annotations

import pathlib
import resource

import pytest
from _util import sh

import anyns


def _limit_row(limits: bytes, title: str) -> list[str]:
    """The (soft, hard) columns of one /proc/self/limits row, e.g. 'Max open files'."""
    for row in limits.decode().splitlines():
        if row.startswith(title):
            return row[len(title):].split()[:2]
    raise AssertionError(f"{title!r} not in {limits!r}")


async def test_nofile_soft_and_hard(sup: anyns.Supervisor) -> None:
    """A (soft, hard) pair reaches the program; the shell cannot raise soft above hard."""
    done = await sh(sup, "cat /proc/self/limits; ulimit -n 129 2>/dev/null && echo raised || echo refused",
                    rlimits={"nofile": (64, 128)})
    assert _limit_row(done.stdout, "Max open files") == ["64", "128"]
    assert done.stdout.decode().splitlines()[-1] == "refused"


async def test_single_int_and_infinity(sup: anyns.Supervisor) -> None:
    """One int sets both limits; RLIM_INFINITY shows as 'unlimited'."""
    done = await sh(sup, "cat /proc/self/limits",
                    rlimits={"core": anyns.RLIM_INFINITY, "nproc": 4096, "cpu": (30, 60)})
    assert _limit_row(done.stdout, "Max core file size") == ["unlimited", "unlimited"]
    assert _limit_row(done.stdout, "Max processes") == ["4096", "4096"]
    assert _limit_row(done.stdout, "Max cpu time") == ["30", "60"]


async def test_default_inherits_supervisor_limits(sup: anyns.Supervisor) -> None:
    """Without rlimits the container keeps the zygote's (= supervisor's) open-files limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    done = await sh(sup, "cat /proc/self/limits")
    shown = ["unlimited" if n == resource.RLIM_INFINITY else str(n) for n in (soft, hard)]
    assert _limit_row(done.stdout, "Max open files") == shown


async def test_raising_hard_limit_above_host_max_fails_cleanly(sup: anyns.Supervisor) -> None:
    """nofile above fs.nr_open is refused with EPERM: a SetupError naming setrlimit, and the
    supervisor keeps working."""
    nr_open = int(pathlib.Path("/proc/sys/fs/nr_open").read_text())  # noqa: ASYNC240 (procfs)
    with pytest.raises(anyns.SetupError) as info:
        await sh(sup, "true", rlimits={"nofile": (nr_open + 1, nr_open + 1)})
    err = info.value
    assert (err.syscall, err.path, err.errno) == ("setrlimit", "nofile", 1)
    assert err.hint is not None and "nr_open" in err.hint
    done = await sh(sup, "echo ok")
    assert done.stdout == b"ok\n"


async def test_tight_limits_do_not_break_setup(sup: anyns.Supervisor) -> None:
    """The limits are set last before exec: nofile=4 with a tty (which opens /dev/ptmx) still starts."""
    done = await sup.run(anyns.ContainerSpec(argv=["/bin/sh", "-c", "ulimit -n"], tty=True, rlimits={"nofile": 4}),
                         capture_stdout=True)
    assert (done.returncode, done.stdout) == (0, b"4\r\n")
