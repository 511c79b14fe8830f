"""Root filesystems (DirRootfs) and the spec's mounts (Bind, Tmpfs)."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import uuid
from collections.abc import Callable

import pytest
from _util import HERE, exists, lines, sh

import anyns
import anyns.testing


@pytest.fixture
def busybox_root(tmp_path: pathlib.Path, make_busybox_root: Callable[[pathlib.Path], pathlib.Path]) -> pathlib.Path:
    """A minimal root filesystem (anyns.testing.busybox_rootfs) with a marker file."""
    root = make_busybox_root(tmp_path / "root")
    (root / "marker").write_text("inside the root\n")
    return root


def _busybox_spec(root: pathlib.Path, script: str, **fields: object) -> anyns.ContainerSpec:
    return anyns.ContainerSpec(argv=["/bin/sh", "-c", script], rootfs=anyns.DirRootfs(root),
                               env={"PATH": "/bin"}, **fields)  # type: ignore[arg-type]


async def test_dir_rootfs_shows_only_its_own_tree(sup: anyns.Supervisor,
                                                  busybox_root: pathlib.Path) -> None:
    """A DirRootfs is the whole view: its files are there, the host's other paths are not."""
    script = (f"ls /; cat /marker; echo $$; ls /etc; ls /usr {HERE} 2>/dev/null || echo hidden; "
              "ls /proc/1/ >/dev/null && echo proc-ok; ls /dev/null")
    done = await sup.run(_busybox_spec(busybox_root, script), capture_stdout=True,
                         capture_stderr=True)
    assert lines(done.stdout) == ["bin", "dev", "etc", "marker", "proc", "root", "tmp", "inside the root", "2",
                                  "group", "passwd", "hidden", "proc-ok", "/dev/null"]


async def test_read_only_dir_rootfs(sup: anyns.Supervisor, busybox_root: pathlib.Path) -> None:
    """A DirRootfs is read-only by default, its /tmp is a writable tmpfs, the host dir unchanged."""
    before = sorted(os.listdir(busybox_root))
    script = "touch /new || echo ro; echo x > /tmp/f && cat /tmp/f"
    done = await sup.run(_busybox_spec(busybox_root, script), capture_stdout=True,
                         capture_stderr=True)
    assert lines(done.stdout) == ["ro", "x"]
    assert b"Read-only file system" in done.stderr
    assert sorted(os.listdir(busybox_root)) == before
    assert os.listdir(busybox_root / "tmp") == []


async def test_writable_dir_rootfs(sup: anyns.Supervisor, busybox_root: pathlib.Path) -> None:
    """DirRootfs(readonly=False) lets the container write into the host directory."""
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", "echo written > /new"], env={"PATH": "/bin"},
                               rootfs=anyns.DirRootfs(busybox_root, readonly=False))
    await sup.run(spec)
    assert (busybox_root / "new").read_text() == "written\n"


async def test_read_only_dir_rootfs_without_proc_dir(sup: anyns.Supervisor,
                                                     busybox_root: pathlib.Path) -> None:
    """A read-only root lacking /proc fails with a SetupError naming /proc (EROFS)."""
    (busybox_root / "proc").rmdir()
    with pytest.raises(anyns.SetupError) as info:
        await sup.run(_busybox_spec(busybox_root, "true"))
    assert info.value.path == "/proc"
    assert info.value.errno == errno.EROFS
    assert isinstance(info.value.__cause__, OSError)


async def test_symlinked_mount_point_in_dir_rootfs_is_refused(
    sup: anyns.Supervisor, busybox_root: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """A root whose /tmp is a symlink out of it is refused; nothing is mounted on the host path."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (busybox_root / "tmp").rmdir()
    (busybox_root / "tmp").symlink_to(outside)
    with pytest.raises(anyns.SetupError) as info:
        await sup.run(_busybox_spec(busybox_root, "true"))
    assert info.value.path == "/tmp"
    assert isinstance(info.value.__cause__, NotADirectoryError)
    assert os.listdir(outside) == []


async def test_bind_file_and_tmpfs(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """A bound file and a tmpfs appear inside, with the right contents, modes and mountinfo."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 box.example\n")
    spec_mounts = [anyns.Bind(str(hosts), "/etc/anyns-hosts", readonly=True),
                   anyns.Tmpfs("/scratch", size=1 << 20, mode=0o700)]
    script = (
        "cat /etc/anyns-hosts; echo x > /etc/anyns-hosts || echo bind-ro; "
        "echo data > /scratch/f && cat /scratch/f; stat -c %a /scratch; "
        "grep -E ' /(etc/anyns-hosts|scratch) ' /proc/self/mountinfo"
    )
    done = await sh(sup, script, mounts=spec_mounts)
    out = lines(done.stdout)
    assert out[:4] == ["127.0.0.1 box.example", "bind-ro", "data", "700"], done.stderr
    info = {line.split(" - ")[0].split()[4]: line for line in out[4:]}
    assert set(info) == {"/etc/anyns-hosts", "/scratch"}
    assert " ro," in info["/etc/anyns-hosts"].split(" - ")[0] + ","
    assert info["/scratch"].split(" - ")[1].startswith("tmpfs ")
    assert "size=1024k" in info["/scratch"]
    assert hosts.read_text() == "127.0.0.1 box.example\n"


async def test_bind_directory_read_write(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """A writable directory bind shows host files inside and container writes on the host."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("h\n")
    done = await sh(sup, "cat /data/from-host; echo c > /data/from-container",
                    mounts=[anyns.Bind(str(shared), "/data")])
    assert done.stdout == b"h\n"
    assert (shared / "from-container").read_text() == "c\n"


async def test_bind_directory_read_only(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """A read-only directory bind refuses writes."""
    done = await sh(sup, "echo c > /data/f || echo refused",
                    mounts=[anyns.Bind(str(tmp_path), "/data", readonly=True)])
    assert done.stdout == b"refused\n"
    assert os.listdir(tmp_path) == []


async def test_mounts_apply_in_order(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """Later mounts stack over earlier ones: a tmpfs over a bind hides the bind."""
    (tmp_path / "f").write_text("bound\n")
    done = await sh(sup, "ls -A /m",
                    mounts=[anyns.Bind(str(tmp_path), "/m"), anyns.Tmpfs("/m")])
    assert done.stdout == b""


def _remove(path: str) -> None:
    """Undo what the bug did on the host, if it did."""
    if os.path.isdir(path) and not os.path.islink(path):
        os.rmdir(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _host_target(kind: str, name: str) -> tuple[str, anyns.Bind | anyns.Tmpfs]:
    """A host path under the read-only /usr view, and a mount whose point would be made there."""
    if kind == "tmpfs":
        return f"/usr/{name}", anyns.Tmpfs(f"/usr/{name}")
    return f"/usr/{name}", anyns.Bind("/etc/hostname", f"/usr/{name}", readonly=True)


@pytest.mark.parametrize("kind", ["tmpfs", "bind-file"])
async def test_mount_point_under_host_usr_does_not_touch_host(sup: anyns.Supervisor,
                                                              kind: str) -> None:
    """A mount whose target lies under the read-only host /usr never creates it on the host."""
    host_path, mount = _host_target(kind, f"anyns-test-{uuid.uuid4().hex[:12]}")
    try:
        with contextlib.suppress(anyns.SetupError):  # refusing is fine, touching the host not
            await sup.run(anyns.ContainerSpec(argv=["true"], mounts=[mount]))
        assert not exists(host_path), f"{host_path} was created on the host"
    finally:
        _remove(host_path)


@pytest.mark.parametrize("kind", ["tmpfs", "bind-file"])
async def test_symlink_in_dir_rootfs_cannot_redirect_mount_point(
    sup: anyns.Supervisor, busybox_root: pathlib.Path, tmp_path: pathlib.Path, kind: str
) -> None:
    """A symlink in a DirRootfs pointing at a host path cannot make anyns create files there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (busybox_root / "evil").symlink_to(outside)
    mount = (anyns.Tmpfs("/evil/sub") if kind == "tmpfs"
             else anyns.Bind("/etc/hostname", "/evil/sub", readonly=True))
    with contextlib.suppress(anyns.SetupError):  # refusing is fine, touching the host not
        await sup.run(_busybox_spec(busybox_root, "true", mounts=[mount]))
    assert os.listdir(outside) == [], "a mount point was created outside the root"
