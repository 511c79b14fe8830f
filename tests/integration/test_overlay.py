"""OverlayRootfs: a copy-on-write root per container over shared, never-written lower layers."""

from __future__ import annotations

import errno
import os
import pathlib
import stat
import tempfile
from collections.abc import Callable

import pytest
import trio
from _util import lines, sh

import anyns
import anyns.testing

BIN = {"PATH": "/bin"}
#: where the supervisor keeps its (empty) root mount point: nothing may appear there
STATE_DIRS = ("/run/anyns", os.path.join(tempfile.gettempdir(), f"anyns-{os.getuid()}"))


def tree(path: str | os.PathLike[str]) -> dict[str, tuple[int, bytes]]:
    """Every entry below ``path``: relative name -> (lstat mode, file content or link target)."""
    found = {}
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(top, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                body = os.fsencode(os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    body = f.read()
            else:
                body = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}".encode() if stat.S_ISCHR(st.st_mode) else b""
            found[os.path.relpath(full, path)] = (st.st_mode, body)
    return found


def host_mount_points() -> list[str]:
    with open("/proc/self/mountinfo", "rb") as f:
        return sorted(line.split()[4].decode("unicode_escape") for line in f)


def state_files() -> dict[str, list[str]]:
    return {d: sorted(tree(d)) for d in STATE_DIRS if os.path.isdir(d)}


@pytest.fixture
def lower(tmp_path: pathlib.Path, make_busybox_root: Callable[[pathlib.Path], pathlib.Path]) -> pathlib.Path:
    """A busybox root to use as a lower layer, with a file of an unusual mode."""
    root = make_busybox_root(tmp_path / "lower")
    (root / "etc" / "motd").write_text("from the lower layer\n")
    (root / "etc" / "motd").chmod(0o640)
    return root


def overlay_spec(script: str, *lower: pathlib.Path, upper: pathlib.Path | None = None,
                 **fields: object) -> anyns.ContainerSpec:
    return anyns.ContainerSpec(argv=["/bin/sh", "-c", script], env=BIN,  # type: ignore[arg-type]
                               rootfs=anyns.OverlayRootfs([str(p) for p in lower], upper=upper), **fields)


async def test_hundred_overlay_containers_write_their_own_data(sup: anyns.Supervisor, lower: pathlib.Path,
                                                               tmp_path: pathlib.Path) -> None:
    """100 containers, 32 alive at once, write /data on one lower dir; each reads its own; nothing remains."""
    lower_before = tree(lower)
    tmp_before = sorted(os.listdir(tmp_path))
    mounts_before = host_mount_points()
    state_before = state_files()
    # One spec for all: each learns its id on stdin, writes /data, says so on stderr, and reads
    # /data back (to its captured stdout) only once every container of its batch has written.
    spec = overlay_spec("test -e /data && echo stale; read id; echo $id > /data; echo written >&2; "
                        "read _; cat /data; rm /etc/motd", lower)
    results: dict[int, list[str]] = {}
    total, batch = 100, 32

    async def run(i: int, task_status: trio.TaskStatus[anyns.Container] = trio.TASK_STATUS_IGNORED) -> None:
        done = await sup.run(spec, stdin=anyns.PIPE, stderr=anyns.PIPE, capture_stdout=True,
                             task_status=task_status)
        assert done.stdout is not None
        results[i] = done.stdout.decode().splitlines()

    async def start(nursery: trio.Nursery, i: int, boxes: dict[int, anyns.Container]) -> None:
        box = await nursery.start(run, i)
        await box.stdin.send_all(f"{i}\n".encode())
        data = b""
        while not data.endswith(b"written\n"):
            chunk = await box.stderr.receive_some()
            assert chunk, f"container {i}: EOF after {data!r}"
            data += chunk
        assert data == b"written\n"
        boxes[i] = box

    for first in range(0, total, batch):
        async with trio.open_nursery() as nursery:
            boxes: dict[int, anyns.Container] = {}
            async with trio.open_nursery() as starting:
                for i in range(first, min(first + batch, total)):
                    starting.start_soon(start, nursery, i, boxes)
            assert len(boxes) == min(batch, total - first)  # all of the batch have written, none has read
            for box in boxes.values():
                await box.stdin.aclose()
    assert results == {i: [str(i)] for i in range(total)}
    assert tree(lower) == lower_before
    assert sorted(os.listdir(tmp_path)) == tmp_before
    assert host_mount_points() == mounts_before
    assert state_files() == state_before


async def test_mount_points_are_made_in_the_upper_layer(sup: anyns.Supervisor, lower: pathlib.Path,
                                                        tmp_path: pathlib.Path) -> None:
    """Missing mount points of the spec's mounts are created in the container's layer, not in the lower dir."""
    before = tree(lower)
    (tmp_path / "file").write_text("bound file\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x").write_text("bound dir\n")
    mounts = [anyns.Tmpfs("/new/scratch"), anyns.Bind(str(tmp_path / "file"), "/etc/new.conf", readonly=True),
              anyns.Bind(str(tmp_path / "dir"), "/srv/data")]
    done = await sh(sup, "cat /etc/new.conf /srv/data/x; echo t > /new/scratch/t && cat /new/scratch/t; ls /",
                    rootfs=anyns.OverlayRootfs(str(lower)), env=BIN, mounts=mounts, check=True)
    assert lines(done.stdout)[:3] == ["bound file", "bound dir", "t"]
    assert {"new", "srv"} <= set(lines(done.stdout)[3:])
    assert tree(lower) == before


async def test_layers_are_given_top_first(sup: anyns.Supervisor, lower: pathlib.Path,
                                          tmp_path: pathlib.Path) -> None:
    """With several lower layers the first one wins, and the others show through where it has nothing."""
    top = tmp_path / "top"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "motd").write_text("from the top layer\n")
    (top / "only-top").write_text("t\n")
    done = await sh(sup, "cat /etc/motd /only-top; cat /etc/passwd", check=True,
                    rootfs=anyns.OverlayRootfs([str(top), str(lower)]), env=BIN)
    assert lines(done.stdout) == ["from the top layer", "t", "root:x:0:0:root:/root:/bin/sh"]


async def test_upper_dir_keeps_the_changes(sup: anyns.Supervisor, lower: pathlib.Path,
                                           tmp_path: pathlib.Path) -> None:
    """With upper=DIR the container's changes stay in DIR/diff after it exits, and the next one sees them."""
    before = tree(lower)
    upper = tmp_path / "upper"
    await sup.run(overlay_spec("echo kept > /data; rm /etc/motd", lower, upper=upper))
    assert (upper / "diff" / "data").read_text() == "kept\n"
    whiteout = os.lstat(upper / "diff" / "etc" / "motd")  # overlayfs records a deletion as a 0:0 char device
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert (upper / "work").is_dir()
    assert tree(lower) == before
    done = await sup.run(overlay_spec("cat /data; test -e /etc/motd && echo motd || echo no-motd", lower,
                                      upper=upper), capture_stdout=True)
    assert lines(done.stdout) == ["kept", "no-motd"]
    # and without an upper dir the change is gone
    done = await sup.run(overlay_spec("cat /data 2>/dev/null || echo no-data; cat /etc/motd", lower),
                         capture_stdout=True)
    assert lines(done.stdout) == ["no-data", "from the lower layer"]


async def test_upper_dir_is_not_world_writable(sup: anyns.Supervisor, lower: pathlib.Path,
                                               tmp_path: pathlib.Path) -> None:
    """An upper directory anyns creates is not writable by other users."""
    upper = tmp_path / "new" / "upper"
    await sup.run(overlay_spec("true", lower, upper=upper))
    for path in (upper.parent, upper, upper / "diff", upper / "work"):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert not mode & 0o022, f"{path} has mode {mode:o}"


@pytest.mark.parametrize("which", ["only", "second"])
async def test_missing_lower_layer_is_named(sup: anyns.Supervisor, lower: pathlib.Path,
                                            tmp_path: pathlib.Path, which: str) -> None:
    """A missing lower layer is a SetupError naming it (FileNotFoundError); the supervisor carries on."""
    missing = tmp_path / "no-such-layer"
    layers = [missing] if which == "only" else [lower, missing]
    with pytest.raises(anyns.SetupError) as info:
        await sup.run(overlay_spec("true", *layers))
    assert (info.value.step, info.value.path, info.value.errno) == ("rootfs", str(missing), errno.ENOENT)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    done = await sup.run(overlay_spec("cat /etc/motd", lower), capture_stdout=True)
    assert done.stdout == b"from the lower layer\n"
