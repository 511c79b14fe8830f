"""Mount propagation between the host and a container: ``Bind(propagation=…)`` and ``root_propagation``.

Every test binds a directory the test makes *shared* on the host (a tmpfs,
``mount --make-shared``): on this kind of host ``/`` may well be private, and
propagation can only be observed for a source that is in a peer group.

A test runs its container in two stages: the container does its part, prints
``ready`` on stderr and blocks reading stdin; the test then looks at (and
changes) the host's mount table and closes the container's stdin; the
container looks at its own mount table, reports on stdout and exits. No
sleeps: the pipes order the steps.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trio

import anyns


def host_mount_points() -> list[str]:
    """Field 5 (the mount point) of each line of this process's mountinfo, unescaped."""
    with open("/proc/self/mountinfo", "rb") as f:
        return [line.split()[4].decode("unicode_escape") for line in f]


def _umount_under(path: str) -> None:
    """Unmount everything mounted at or below ``path`` on the host, deepest first."""
    for _ in range(100):
        found = [p for p in host_mount_points() if p == path or p.startswith(path + "/")]
        if not found:
            return
        subprocess.run(["umount", max(found, key=len)], check=True)
    raise AssertionError(f"mounts under {path} would not go away")


async def host_tmpfs(path: pathlib.Path) -> None:
    """Mount a tmpfs at ``path`` on the host (the test's fixture unmounts it)."""
    await trio.Path(path).mkdir(exist_ok=True)
    await trio.run_process(["mount", "-t", "tmpfs", "anyns-test", str(path)])


async def host_umount(path: pathlib.Path) -> None:
    await trio.run_process(["umount", str(path)])


@pytest.fixture
def shared_src(tmp_path: pathlib.Path, skip_or_fail: Callable[[str], None]) -> Iterator[pathlib.Path]:
    """A tmpfs on the host, made shared (its own peer group); everything under it unmounted after."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        skip_or_fail("no mount(8)/umount(8) on this host")
    src = tmp_path / "src"
    src.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "anyns-src", str(src)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(src)], check=True)
        (src / "from-host").write_text("h\n")
        yield src
    finally:
        _umount_under(str(src))


class Staged:
    """A running container: its markers come on stderr, its report is captured from stdout."""

    def __init__(self, box: anyns.Container, done: dict[str, anyns.CompletedContainer], exited: trio.Event
                 ) -> None:
        self.box = box
        self._done = done
        self._exited = exited
        self._err = b""

    async def until(self, marker: str) -> list[str]:
        """What the container wrote to stderr before the line ``marker`` (which is consumed)."""
        assert self.box.stderr is not None
        while True:
            *complete, rest = self._err.split(b"\n")
            if marker.encode() in complete:
                at = complete.index(marker.encode())
                self._err = b"\n".join([*complete[at + 1 :], rest])
                return [line.decode() for line in complete[:at]]
            chunk = await self.box.stderr.receive_some()
            assert chunk, f"EOF on stderr before {marker!r}; got {self._err!r}"
            self._err += chunk

    async def finish(self) -> list[str]:
        """Close the container's stdin (its go-ahead), wait for it to exit; its stdout's lines."""
        assert self.box.stdin is not None
        await self.box.stdin.aclose()
        await self._exited.wait()
        done = self._done["done"]
        assert done.returncode == 0
        assert done.stdout is not None
        return done.stdout.decode().splitlines()


@contextlib.asynccontextmanager
async def staged(sup: anyns.Supervisor, script: str, **fields: Any) -> AsyncIterator[Staged]:
    """Run ``script`` (with /bin/sh) in the block; it may read stdin to wait for the test.

    The markers the test waits for go to stderr (a PIPE); the report goes to
    stdout, captured by the supervisor, so it is whole once ``run`` returns.
    """
    # The scripts mount inside the container: that takes CAP_SYS_ADMIN (and seccomp follows it).
    fields.setdefault("capabilities", anyns.ALL_CAPABILITIES)
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", script], **fields)
    done: dict[str, anyns.CompletedContainer] = {}
    exited = trio.Event()

    async def run(task_status: trio.TaskStatus[anyns.Container] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            done["done"] = await sup.run(spec, stdin=anyns.PIPE, stderr=anyns.PIPE, capture_stdout=True,
                                         task_status=task_status)
        finally:
            exited.set()

    async with trio.open_nursery() as nursery:
        yield Staged(await nursery.start(run), done, exited)


#: in the container: mount a tmpfs under the bind, report, wait for the test, report what is mounted there
MOUNT_INSIDE_THEN_LOOK = (
    "mkdir -p /s/in && mount -t tmpfs c /s/in && echo x > /s/in/f && echo ready >&2; "
    "read _; "
    "for p in /s/in /s/h /s/early; do "
    "  if grep -q \" $p \" /proc/self/mountinfo; then echo \"$p mounted\"; else echo \"$p absent\"; fi; "
    "done; cat /s/h/f 2>/dev/null || true"
)


async def _inside_out_and_outside_in(sup: anyns.Supervisor, src: pathlib.Path, **fields: Any
                                     ) -> tuple[bool, list[str]]:
    """Container mounts /s/in; host then mounts src/h and unmounts src/early.

    Returns whether the host saw src/in while the container ran, and the
    container's report on /s/in, /s/h and /s/early afterwards.
    """
    await host_tmpfs(src / "early")
    async with staged(sup, MOUNT_INSIDE_THEN_LOOK, **fields) as box:
        assert await box.until("ready") == []
        seen_on_host = str(src / "in") in host_mount_points()
        await host_tmpfs(src / "h")
        (src / "h" / "f").write_text("mounted by the host\n")
        await host_umount(src / "early")
        report = await box.finish()
    return seen_on_host, report


async def test_shared_bind_propagates_both_ways(sup: anyns.Supervisor, shared_src: pathlib.Path) -> None:
    """propagation="shared": a container mount appears on the host while it runs, and host mounts appear inside."""
    seen_on_host, report = await _inside_out_and_outside_in(
        sup, shared_src, mounts=[anyns.Bind(str(shared_src), "/s", propagation="shared")]
    )
    assert seen_on_host, "the container's mount under a shared bind did not reach the host"
    assert (shared_src / "in" / "f").read_text() == "x\n"  # the host sees the container's tmpfs itself
    assert report == ["/s/in mounted", "/s/h mounted", "/s/early absent", "mounted by the host"]


async def test_private_bind_propagates_nothing(sup: anyns.Supervisor, shared_src: pathlib.Path) -> None:
    """propagation="private": neither container mounts reach the host nor host mounts (or unmounts) the container."""
    seen_on_host, report = await _inside_out_and_outside_in(
        sup, shared_src, mounts=[anyns.Bind(str(shared_src), "/s", propagation="private")]
    )
    assert not seen_on_host
    assert report == ["/s/in mounted", "/s/h absent", "/s/early mounted"]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"propagation": "slave"}, id="slave"),
        pytest.param({}, id="default"),
        pytest.param({"root_propagation": "slave"}, id="root-slave"),
    ],
)
async def test_slave_bind_receives_but_does_not_send(sup: anyns.Supervisor, shared_src: pathlib.Path,
                                                    fields: dict[str, str]) -> None:
    """A slave bind (also the default, under root_propagation="slave"): host → container yes, back no."""
    root = {k: v for k, v in fields.items() if k == "root_propagation"}
    bind = {k: v for k, v in fields.items() if k == "propagation"}
    seen_on_host, report = await _inside_out_and_outside_in(
        sup, shared_src, mounts=[anyns.Bind(str(shared_src), "/s", **bind)], **root
    )
    assert not seen_on_host, "a mount made in the container reached the host"
    assert report == ["/s/in mounted", "/s/h mounted", "/s/early absent", "mounted by the host"]


async def test_unbindable_bind(sup: anyns.Supervisor, shared_src: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """propagation="unbindable": the container cannot bind it elsewhere, and its mounts don't reach the host."""
    other = tmp_path / "other"
    other.mkdir()
    script = (
        "mkdir -p /s/in /tmp/x /tmp/y && mount -t tmpfs c /s/in && echo ready >&2; read _; "
        "mount --bind /s /tmp/x 2>/dev/null && echo s-rebound || echo s-refused; "
        "mount --bind /o /tmp/y && echo o-rebound || echo o-refused; "  # the control: a default bind can
        "grep ' /s ' /proc/self/mountinfo | grep -c unbindable"
    )
    mounts = [anyns.Bind(str(shared_src), "/s", propagation="unbindable"), anyns.Bind(str(other), "/o")]
    async with staged(sup, script, mounts=mounts) as box:
        assert await box.until("ready") == []
        assert str(shared_src / "in") not in host_mount_points()
        assert await box.finish() == ["s-refused", "o-rebound", "1"]
    assert sorted(os.listdir(shared_src)) == ["from-host", "in"]  # the container's mkdir; not its mount


async def test_root_propagation_private(sup: anyns.Supervisor, shared_src: pathlib.Path) -> None:
    """root_propagation="private": a default bind of a shared source receives neither host mounts nor unmounts.

    What is observable: the host's later mount under the source is absent
    inside, and a submount the host removes while the container runs stays
    inside (under the default "slave" root it disappears: see the test above).
    Whether unrelated host mounts elsewhere would propagate is not observable
    on a host whose "/" is private, so it is not asserted.
    """
    seen_on_host, report = await _inside_out_and_outside_in(
        sup, shared_src, mounts=[anyns.Bind(str(shared_src), "/s")], root_propagation="private"
    )
    assert not seen_on_host
    assert report == ["/s/in mounted", "/s/h absent", "/s/early mounted"]


async def test_shared_bind_under_private_root(sup: anyns.Supervisor, shared_src: pathlib.Path) -> None:
    """A Bind may choose "shared" under root_propagation="private": it still propagates both ways."""
    seen_on_host, report = await _inside_out_and_outside_in(
        sup, shared_src, mounts=[anyns.Bind(str(shared_src), "/s", propagation="shared")],
        root_propagation="private",
    )
    assert seen_on_host
    assert report == ["/s/in mounted", "/s/h mounted", "/s/early absent", "mounted by the host"]


async def test_slave_bind_under_private_root(sup: anyns.Supervisor, shared_src: pathlib.Path) -> None:
    """A Bind may choose "slave" under root_propagation="private": host mounts reach it, its mounts stay inside."""
    seen_on_host, report = await _inside_out_and_outside_in(
        sup, shared_src, mounts=[anyns.Bind(str(shared_src), "/s", propagation="slave")],
        root_propagation="private",
    )
    assert not seen_on_host
    assert report == ["/s/in mounted", "/s/h mounted", "/s/early absent", "mounted by the host"]


async def test_read_only_bind_stays_read_only_for_later_host_mounts(sup: anyns.Supervisor,
                                                                    shared_src: pathlib.Path) -> None:
    """Writing under a read-only bind fails, even into a mount the host made there after the start."""
    script = "echo ready >&2; read _; echo x > /s/late/f 2>/dev/null && echo wrote || echo refused"
    async with staged(sup, script, mounts=[anyns.Bind(str(shared_src), "/s", readonly=True)]) as box:
        assert await box.until("ready") == []
        await host_tmpfs(shared_src / "late")
        report = await box.finish()
    assert not (shared_src / "late" / "f").exists(), "the container wrote into a host mount through a ro bind"
    assert report == ["refused"]
