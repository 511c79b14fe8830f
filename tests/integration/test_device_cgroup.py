"""The devices cgroup: a container with a cgroup opens only the standard device nodes.

Defence in depth beside ``nodev``: even on a mount without it, a node the
container makes (it keeps CAP_MKNOD, as under Docker) opens nothing but
null, zero, full, random, urandom, tty, ptmx and the devpts terminals.

The probe is harmless on purpose: ``/dev/kmsg`` (c 1 11) opened read-only
and closed again (it needs CAP_SYSLOG, granted here, or the driver itself
refuses), and ``/dev/null`` (c 1 3) under another name. On a hybrid host the
v1 ``devices`` hierarchy does it; the v2 BPF program is tried by hiding that
hierarchy from the supervisor.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest
from _util import SH, lines

import anyns
from anyns import _cgroups

# Opens each path (read-only, or write-only for the null nodes) and prints "PATH ok" or "PATH ERRNO-NAME".
PROBE = """
import errno, os, sys
for path in sys.argv[1:]:
    flags = os.O_RDONLY | os.O_NONBLOCK if 'kmsg' in path else os.O_WRONLY
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except OSError as e:
        print(path, errno.errorcode[e.errno])
    else:
        os.close(fd)
        print(path, 'ok')
"""
MAKE = 'mknod /x/kmsg c 1 11 && mknod /x/null c 1 3 && exec python3 -I -c "$0" /x/kmsg /x/null /dev/null'
CAPS = anyns.DEFAULT_CAPABILITIES | {"CAP_SYSLOG"}


def probe_spec(tmp_path: pathlib.Path, **fields: object) -> anyns.ContainerSpec:
    """mknod kmsg and null on a bind WITHOUT nodev (explicitly), then try to open them and /dev/null."""
    work = tmp_path / "x"
    work.mkdir(parents=True, exist_ok=True)
    return anyns.ContainerSpec(argv=[SH, "-c", MAKE, PROBE], capabilities=CAPS,
                               mounts=[anyns.Bind(str(work), "/x", nodev=False)], **fields)  # type: ignore[arg-type]


async def _control(sup: anyns.Supervisor, tmp_path: pathlib.Path, skip_or_fail: Callable[[str], None]) -> None:
    """Without a cgroup (its own pid namespace, no limits) the node made on a mount without nodev opens."""
    done = await sup.run(probe_spec(tmp_path / "control"), capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode != 0 or "/x/kmsg ok" not in lines(done.stdout):
        skip_or_fail(f"the probe does not open /dev/kmsg here even without a cgroup: {done.stdout!r} {done.stderr!r}")


async def test_a_container_with_a_cgroup_cannot_open_a_node_it_made(
        sup: anyns.Supervisor, tmp_path: pathlib.Path, skip_or_fail: Callable[[str], None]) -> None:
    """limits=Limits(): the node it made for kmsg is refused (EPERM); null under another name and /dev/null work."""
    await _control(sup, tmp_path, skip_or_fail)
    done = await sup.run(probe_spec(tmp_path, limits=anyns.Limits()), capture_stdout=True, capture_stderr=True,
                         check=False)
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["/x/kmsg EPERM", "/x/null ok", "/dev/null ok"]


async def test_a_container_without_a_pid_namespace_gets_the_device_rules_too(
        sup: anyns.Supervisor, tmp_path: pathlib.Path, skip_or_fail: Callable[[str], None]) -> None:
    """No pid namespace: a cgroup of its own (to be killed as a whole), so the device rules apply as well."""
    await _control(sup, tmp_path, skip_or_fail)
    no_pid = anyns.Namespaces.DEFAULT & ~anyns.Namespaces.PID
    done = await sup.run(probe_spec(tmp_path, namespaces=no_pid), capture_stdout=True, capture_stderr=True,
                         check=False)
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["/x/kmsg EPERM", "/x/null ok", "/dev/null ok"]


async def test_a_device_node_bound_without_nodev_stays_usable(
        sup: anyns.Supervisor, tmp_path: pathlib.Path, skip_or_fail: Callable[[str], None]) -> None:
    """A bind of a device node itself (nodev=False, read-only) is allowed by the cgroup: for reading only."""
    await _control(sup, tmp_path, skip_or_fail)
    spec = anyns.ContainerSpec(
        argv=["python3", "-I", "-c", PROBE, "/kmsg"], capabilities=CAPS, limits=anyns.Limits(),
        mounts=[anyns.Bind("/dev/kmsg", "/kmsg", readonly=True, nodev=False)])
    done = await sup.run(spec, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["/kmsg ok"]


async def test_v2_device_filter_program(tmp_path: pathlib.Path, skip_or_fail: Callable[[str], None],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a v1 devices hierarchy, a BPF_PROG_TYPE_CGROUP_DEVICE program on the v2 leaf allows the same list."""
    v2, v1 = _cgroups.probe()
    if v2 is None:
        skip_or_fail("no cgroup v2 hierarchy here")
    without_devices = [h for h in v1 if _cgroups.DEVICES not in h.controllers]
    monkeypatch.setattr(_cgroups, "probe", lambda *args: (v2, without_devices))
    async with anyns.open_supervisor() as sup:
        await _control(sup, tmp_path, skip_or_fail)
        done = await sup.run(probe_spec(tmp_path, limits=anyns.Limits()), capture_stdout=True, capture_stderr=True,
                             check=False)
        assert sup._cgroups is not None
        if sup._cgroups.device_filter_refused is not None:
            skip_or_fail(f"the kernel refused the device filter: {sup._cgroups.device_filter_refused}")
        assert done.returncode == 0, done.stderr
        assert lines(done.stdout) == ["/x/kmsg EPERM", "/x/null ok", "/dev/null ok"]
        # and a terminal from the container's own devpts (ptmx, then a pts node) still opens
        tty = await sup.run(anyns.ContainerSpec(argv=[SH, "-c", "tty"], tty=True, limits=anyns.Limits()),
                            capture_stdout=True)
        assert tty.stdout is not None and tty.stdout.strip().startswith(b"/dev/pts/")
