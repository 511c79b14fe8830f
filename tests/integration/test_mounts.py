"""The spec's mounts (Bind, Tmpfs): file binds, read-only trees, flags, symlinks in roots, many mounts.

Tests that mount something on the host (a tmpfs inside a bind source)
unmount it in ``finally``: the leak check compares the host's mount table
before and after each test.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import pathlib
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest
import trio
from _util import exists, lines, read, sh

import anyns
import anyns.testing


def host_mount_points() -> list[str]:
    """Field 5 (the mount point) of each line of this process's mountinfo, unescaped."""
    with open("/proc/self/mountinfo", "rb") as f:
        return [line.split()[4].decode("unicode_escape") for line in f]


def mountinfo_of(output: list[str], mount_point: str) -> list[tuple[list[str], list[str]]]:
    """(fields before " - ", fields after) of each mountinfo line in ``output`` for ``mount_point``."""
    found = []
    for line in output:
        left, sep, right = line.partition(" - ")
        if sep and len(left.split()) > 4 and left.split()[4] == mount_point:
            found.append((left.split(), right.split()))
    return found


@contextlib.contextmanager
def host_tmpfs(path: pathlib.Path, skip_or_fail: Callable[[str], None]) -> Iterator[pathlib.Path]:
    """A tmpfs mounted at ``path`` on the host for the block; unmounted in ``finally``."""
    if shutil.which("mount") is None:
        skip_or_fail("no mount(8) on this host")
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "anyns-sub", str(path)], check=True)
    try:
        yield path
    finally:
        while str(path) in host_mount_points():
            subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def busybox(tmp_path: pathlib.Path, make_busybox_root: Callable[[pathlib.Path], pathlib.Path]) -> pathlib.Path:
    """A tiny root filesystem directory (anyns.testing.busybox_rootfs)."""
    return make_busybox_root(tmp_path / "root")


async def runs_fine(sup: anyns.Supervisor, **fields: object) -> None:
    """The supervisor still starts containers (after a failed one)."""
    done = await sh(sup, "echo still-fine", check=True, **fields)  # type: ignore[arg-type]
    assert done.stdout == b"still-fine\n"


# --------------------------------------------------------------------------- file binds


async def test_file_bind_over_etc_hosts(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """A host file bound over /etc/hosts is what the container reads and writes; the host's /etc/hosts is untouched."""
    name = f"hosts-{uuid.uuid4().hex[:12]}"
    mine = tmp_path / name
    mine.write_bytes(b"10.1.2.3 only-in-the-box\n")
    host_hosts = read("/etc/hosts")
    host_count = host_mount_points().count("/etc/hosts")
    script = "cat /etc/hosts; echo added >> /etc/hosts; cat /proc/self/mountinfo; echo ready; read _ || true"
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", script], mounts=[anyns.Bind(str(mine), "/etc/hosts")])
    async with trio.open_nursery() as nursery:
        box = await nursery.start(functools.partial(sup.run, spec, stdin=anyns.PIPE, stdout=anyns.PIPE))
        assert box.stdout is not None and box.stdin is not None
        data = b""
        while not data.endswith(b"ready\n"):
            chunk = await box.stdout.receive_some()
            assert chunk, data
            data += chunk
        # while the container runs: its mount is not in the host's table
        assert host_mount_points().count("/etc/hosts") == host_count
        assert name.encode() not in read("/proc/self/mountinfo")
        await box.stdin.aclose()
        await box.wait()
    out = data.decode().splitlines()
    assert out[0] == "10.1.2.3 only-in-the-box"
    st = os.stat(mine)
    ours = [left for left, _right in mountinfo_of(out, "/etc/hosts") if left[3].endswith("/" + name)]
    assert len(ours) == 1, out
    assert ours[0][2] == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    assert mine.read_bytes() == b"10.1.2.3 only-in-the-box\nadded\n"
    assert read("/etc/hosts") == host_hosts


async def test_writable_file_bind_reaches_host(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """A readonly=False file bind is writable, and the write lands in the host file."""
    target = tmp_path / "log"
    target.write_text("first\n")
    done = await sh(sup, "echo second >> /var/log/app.log && cat /var/log/app.log", check=True,
                    mounts=[anyns.Bind(str(target), "/var/log/app.log")])
    assert lines(done.stdout) == ["first", "second"]
    assert target.read_text() == "first\nsecond\n"


# --------------------------------------------------------------------------- read-only


async def test_read_only_bind_is_recursive(sup: anyns.Supervisor, tmp_path: pathlib.Path,
                                           skip_or_fail: Callable[[str], None]) -> None:
    """Writing anywhere under a recursive read-only bind fails with EROFS, inside its submount too."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "top").write_text("top\n")
    with host_tmpfs(tree / "sub", skip_or_fail) as sub:
        (sub / "inner").write_text("inner\n")
        script = (
            "cat /ro/top /ro/sub/inner; "
            "for p in /ro/top /ro/new /ro/sub/inner /ro/sub/new; do "
            "  if echo x > $p; then echo \"$p written\"; else echo \"$p refused\"; fi; "
            "done; "
            "mkdir /ro/sub/d || echo mkdir-refused; "
            "grep -E ' /ro(/sub)? ' /proc/self/mountinfo"
        )
        done = await sh(sup, script, mounts=[anyns.Bind(str(tree), "/ro", readonly=True, recursive=True)])
        out = lines(done.stdout)
        assert out[:7] == ["top", "inner", "/ro/top refused", "/ro/new refused", "/ro/sub/inner refused",
                           "/ro/sub/new refused", "mkdir-refused"], done.stderr
        # each refusal is EROFS, not a permission or lookup problem
        assert done.stderr.count(os.strerror(errno.EROFS).encode()) == 5, done.stderr
        for mount_point in ("/ro", "/ro/sub"):
            [(left, _right)] = mountinfo_of(out, mount_point)
            assert "ro" in left[5].split(","), left
        assert (tree / "top").read_text() == "top\n"
        assert sorted(os.listdir(sub)) == ["inner"]
        assert (sub / "inner").read_text() == "inner\n"


async def test_non_recursive_bind_leaves_submounts_out(sup: anyns.Supervisor, tmp_path: pathlib.Path,
                                                       skip_or_fail: Callable[[str], None]) -> None:
    """recursive=False binds only the top mount: the submount's files are not there."""
    tree = tmp_path / "tree"
    tree.mkdir()
    with host_tmpfs(tree / "sub", skip_or_fail) as sub:
        (sub / "inner").write_text("inner\n")
        done = await sh(sup, "ls -A /t/sub; grep -c ' /t/sub ' /proc/self/mountinfo",
                        mounts=[anyns.Bind(str(tree), "/t", recursive=False, readonly=True)])
        assert lines(done.stdout) == ["0"], done.stderr


async def test_writable_directory_bind(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """A readonly=False directory bind is writable (also in a new subdirectory), and the writes reach the host."""
    data = tmp_path / "data"
    data.mkdir()
    await sh(sup, "mkdir /data/d && echo c > /data/d/f", check=True, mounts=[anyns.Bind(str(data), "/data")])
    assert (data / "d" / "f").read_text() == "c\n"


# --------------------------------------------------------------------------- flags


async def test_mount_flags_and_tmpfs_options_show_in_mountinfo(sup: anyns.Supervisor,
                                                               tmp_path: pathlib.Path) -> None:
    """nosuid/nodev/noexec show in the bind's options (noexec is enforced); nosuid=False, nodev=False
    leave them out; Tmpfs size and mode too."""
    flagged, plain = tmp_path / "flagged", tmp_path / "plain"
    for d in (flagged, plain):
        d.mkdir()
        shutil.copy2("/usr/bin/true", d / "prog")
    mounts = [
        anyns.Bind(str(flagged), "/flagged", nosuid=True, nodev=True, noexec=True),
        anyns.Bind(str(plain), "/plain", nosuid=False, nodev=False),
        anyns.Tmpfs("/scratch", size=2 << 20, mode=0o700),
        anyns.Tmpfs("/sticky", mode=0o1777),
    ]
    script = (
        "/plain/prog && echo plain-ran; /flagged/prog 2>/dev/null || echo flagged-refused-$?; "
        "stat -c %a /scratch /sticky; cat /proc/self/mountinfo"
    )
    done = await sh(sup, script, mounts=mounts)
    out = lines(done.stdout)
    assert out[:4] == ["plain-ran", "flagged-refused-126", "700", "1777"], done.stderr
    [(flagged_info, _)] = mountinfo_of(out, "/flagged")
    assert {"nosuid", "nodev", "noexec"} <= set(flagged_info[5].split(","))
    [(plain_info, _)] = mountinfo_of(out, "/plain")
    assert not {"nosuid", "nodev", "noexec"} & set(plain_info[5].split(","))
    [(_, scratch_super)] = mountinfo_of(out, "/scratch")
    assert scratch_super[0] == "tmpfs"
    assert {"size=2048k", "mode=700"} <= set(scratch_super[2].split(","))
    [(_, sticky_super)] = mountinfo_of(out, "/sticky")
    assert sticky_super[0] == "tmpfs"


# --------------------------------------------------------------------------- the HostRootfs's own mounts

MERGED_USR = os.path.islink("/bin")


def _undo(path: str) -> None:
    """Remove what a bug would have made on the host (a directory or file), if it did."""
    if os.path.isdir(path) and not os.path.islink(path):
        os.rmdir(path)
    elif os.path.lexists(path):
        os.unlink(path)


@pytest.mark.parametrize("kind", ["bind-file", "bind-dir", "tmpfs"])
async def test_mount_under_read_only_host_usr_fails(sup: anyns.Supervisor, tmp_path: pathlib.Path,
                                                     kind: str) -> None:
    """A mount targeting a missing path under the read-only /usr fails (EROFS) and creates nothing on the host."""
    name = f"anyns-test-{uuid.uuid4().hex[:12]}"
    host_path = f"/usr/{name}"
    (tmp_path / "f").write_text("f\n")
    mount: anyns.Bind | anyns.Tmpfs = {
        "bind-file": anyns.Bind(str(tmp_path / "f"), host_path),
        "bind-dir": anyns.Bind(str(tmp_path), host_path),
        "tmpfs": anyns.Tmpfs(host_path),
    }[kind]
    usr_before = sorted(os.listdir("/usr"))
    try:
        with pytest.raises(anyns.SetupError) as info:
            await sh(sup, "true", mounts=[mount])
        assert (info.value.step, info.value.path, info.value.errno) == ("mounts", host_path, errno.EROFS)
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.EROFS
        assert not exists(host_path)
        assert sorted(os.listdir("/usr")) == usr_before
        await runs_fine(sup)
    finally:
        _undo(host_path)


async def test_mount_through_host_bin_link_creates_nothing_on_host(sup: anyns.Supervisor) -> None:
    """A Tmpfs under /bin (a link into /usr on merged-/usr hosts) fails and creates nothing in the host's /usr/bin."""
    name = f"anyns-test-{uuid.uuid4().hex[:12]}"
    try:
        with pytest.raises(anyns.SetupError) as info:
            await sh(sup, "true", mounts=[anyns.Tmpfs(f"/bin/{name}")])
        # merged /usr: /bin is a symlink in the root, which is not followed; else a read-only bind
        expected = {errno.ENOTDIR, errno.ELOOP} if MERGED_USR else {errno.EROFS}
        assert info.value.errno in expected
        assert (info.value.step, info.value.path) == ("mounts", f"/bin/{name}")
        assert not exists(f"/bin/{name}")
        assert not exists(f"/usr/bin/{name}")
        await runs_fine(sup)
    finally:
        _undo(f"/usr/bin/{name}")


# --------------------------------------------------------------------------- symlinks in a root


@pytest.fixture
def evil_root(busybox: pathlib.Path) -> pathlib.Path:
    """A writable-root candidate whose links point out of it: etc2 -> /etc, up -> ../../.., hostslink -> /etc/hosts."""
    (busybox / "etc2").symlink_to("/etc")
    (busybox / "up").symlink_to("../../..")
    (busybox / "hostslink").symlink_to("/etc/hosts")
    return busybox


def _mount_of(kind: str, target: str, tmp_path: pathlib.Path) -> anyns.Bind | anyns.Tmpfs:
    if kind == "tmpfs":
        return anyns.Tmpfs(target)
    source = tmp_path / f"source-{kind}"
    if not source.exists():
        if kind == "bind-dir":
            source.mkdir()
        else:
            source.write_text("bound\n")
    return anyns.Bind(str(source), target)


@pytest.mark.parametrize("kind", ["tmpfs", "bind-dir", "bind-file"])
@pytest.mark.parametrize("link", ["etc2", "up"])
async def test_symlink_in_root_cannot_redirect_a_mount(sup: anyns.Supervisor, evil_root: pathlib.Path,
                                                       tmp_path: pathlib.Path, link: str, kind: str) -> None:
    """A mount below a link out of a writable DirRootfs is refused (a symlink errno); nothing happens on the host."""
    name = f"anyns-escape-{uuid.uuid4().hex[:12]}"
    target = f"/{link}/{name}"
    # where the link would lead on the host: /etc, or two levels above the root's parent
    escaped = [pathlib.Path("/etc") / name, tmp_path.parent / name, tmp_path.parent.parent / name]
    mounts_before = sorted(host_mount_points())
    etc_before = sorted(os.listdir("/etc"))
    # this session's temp dir (the one above it is shared by concurrent pytest sessions)
    session_before = sorted(os.listdir(tmp_path.parent))
    rootfs = anyns.DirRootfs(evil_root, readonly=False)
    try:
        with pytest.raises(anyns.SetupError) as info:
            await sh(sup, "true", rootfs=rootfs, env={"PATH": "/bin"}, mounts=[_mount_of(kind, target, tmp_path)])
        # the link is never followed: opening it O_DIRECTORY|O_NOFOLLOW gives ENOTDIR (ELOOP without O_DIRECTORY)
        assert info.value.errno in (errno.ENOTDIR, errno.ELOOP), info.value
        assert (info.value.step, info.value.path) == ("mounts", target)
        assert not any(exists(str(p)) for p in escaped)
        assert sorted(host_mount_points()) == mounts_before
        assert sorted(os.listdir("/etc")) == etc_before
        assert sorted(os.listdir(tmp_path.parent)) == session_before
        assert os.readlink(evil_root / link) == {"etc2": "/etc", "up": "../../.."}[link]
        # the same supervisor, the same root, without the bad mount: fine, and the link is still a link
        done = await sh(sup, f"readlink /{link}", check=True, rootfs=rootfs, env={"PATH": "/bin"})
        assert done.stdout == os.readlink(evil_root / link).encode() + b"\n"
    finally:
        for p in escaped:
            with contextlib.suppress(OSError):
                (p.rmdir if p.is_dir() and not p.is_symlink() else p.unlink)()


@pytest.mark.parametrize("kind", ["tmpfs", "bind-dir"])
async def test_directory_mount_on_a_link_is_refused(sup: anyns.Supervisor, evil_root: pathlib.Path,
                                                    tmp_path: pathlib.Path, kind: str) -> None:
    """A directory mount whose target itself is a link out of the root (/etc2 -> /etc) is refused."""
    host_etc = sorted(os.listdir("/etc"))
    with pytest.raises(anyns.SetupError) as info:
        await sh(sup, "true", rootfs=anyns.DirRootfs(evil_root, readonly=False), env={"PATH": "/bin"},
                 mounts=[_mount_of(kind, "/etc2", tmp_path)])
    assert info.value.errno in (errno.ENOTDIR, errno.ELOOP)
    assert (info.value.step, info.value.path) == ("mounts", "/etc2")
    assert sorted(os.listdir("/etc")) == host_etc
    await runs_fine(sup)


async def test_file_bind_on_a_link_lands_inside_the_root(sup: anyns.Supervisor, evil_root: pathlib.Path,
                                                         tmp_path: pathlib.Path) -> None:
    """A file bind whose target is a link out of the root (/hostslink -> /etc/hosts) covers the link itself.

    The link is not followed: the mount lands on the link inside the root, so
    the container reads the bound file there, and the host's /etc/hosts (the
    link's target) is neither covered nor changed.
    """
    host_hosts = read("/etc/hosts")
    mounts_before = sorted(host_mount_points())
    source = tmp_path / "bound"
    source.write_text("bound\n")
    script = "cat /hostslink; echo appended >> /hostslink; grep -c ' /hostslink ' /proc/self/mountinfo"
    done = await sh(sup, script, check=True, rootfs=anyns.DirRootfs(evil_root, readonly=False),
                    env={"PATH": "/bin"}, mounts=[anyns.Bind(str(source), "/hostslink")])
    assert lines(done.stdout) == ["bound", "1"]
    assert source.read_text() == "bound\nappended\n"
    assert read("/etc/hosts") == host_hosts
    assert os.readlink(evil_root / "hostslink") == "/etc/hosts"
    assert sorted(host_mount_points()) == mounts_before


@pytest.mark.parametrize("target", ["/a/../etc", "/../etc", "/tmp/..", "/x/../../y"])
def test_dotdot_in_a_target_is_a_spec_error(target: str) -> None:
    """A '..' component in a mount target is refused when the spec is built."""
    with pytest.raises(anyns.SpecError, match=r"\.\."):
        anyns.Bind("/etc/hostname", target)
    with pytest.raises(anyns.SpecError, match=r"\.\."):
        anyns.Tmpfs(target)


@pytest.mark.parametrize(
    "propagation",
    [
        None,
        "private",
        "shared",  # regression test: its source clone used to report step "propagation"
        "slave",
    ],
)
async def test_missing_bind_source_is_named(sup: anyns.Supervisor, tmp_path: pathlib.Path,
                                            propagation: str | None) -> None:
    """A missing bind source is a SetupError in step "mounts" naming the source (FileNotFoundError)."""
    missing = str(tmp_path / "not-there")
    with pytest.raises(anyns.SetupError) as info:
        await sh(sup, "true", mounts=[anyns.Bind(missing, "/data", propagation=propagation)])
    assert (info.value.step, info.value.path, info.value.errno) == ("mounts", missing, errno.ENOENT)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert not exists(missing)
    await runs_fine(sup)


async def test_missing_bind_source_hint_is_about_the_host(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """The hint of a missing bind source points at the host, not at the container's root or the target."""
    missing = str(tmp_path / "not-there")
    with pytest.raises(anyns.SetupError) as info:
        await sh(sup, "true", mounts=[anyns.Bind(missing, "/data")])
    hint = info.value.hint or ""
    assert "host" in hint, hint
    assert "container's root" not in hint and "target" not in hint, hint


async def test_missing_bind_source_in_dir_rootfs(sup: anyns.Supervisor, busybox: pathlib.Path,
                                                 tmp_path: pathlib.Path) -> None:
    """In a writable DirRootfs, a missing bind source fails before any mount point is made in the root."""
    before = sorted(os.listdir(busybox))
    missing = str(tmp_path / "not-there")
    with pytest.raises(anyns.SetupError) as info:
        await sh(sup, "true", rootfs=anyns.DirRootfs(busybox, readonly=False), env={"PATH": "/bin"},
                 mounts=[anyns.Bind(missing, "/data")])
    assert (info.value.step, info.value.path) == ("mounts", missing)
    assert sorted(os.listdir(busybox)) == before
    await runs_fine(sup)


# --------------------------------------------------------------------------- many mounts


async def test_three_hundred_binds(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """A container with 300 binds of distinct host files and directories starts and sees them all."""
    mounts = []
    for i in range(150):
        f = tmp_path / f"f{i}"
        f.write_text(f"file {i}\n")
        d = tmp_path / f"d{i}"
        d.mkdir()
        (d / "c").write_text(f"dir {i}\n")
        mounts += [anyns.Bind(str(f), f"/many/f{i}", readonly=True), anyns.Bind(str(d), f"/many/d{i}")]
    script = ("cat /many/f0 /many/f77 /many/f149 /many/d0/c /many/d149/c; "
              "grep -c ' /many/[fd][0-9]* ' /proc/self/mountinfo")
    done = await sh(sup, script, check=True, mounts=mounts)
    assert lines(done.stdout) == ["file 0", "file 77", "file 149", "dir 0", "dir 149", "300"]


async def test_three_hundred_tmpfs(sup: anyns.Supervisor) -> None:
    """A container with 300 Tmpfs mounts starts, and each is its own writable tmpfs."""
    mounts = [anyns.Tmpfs(f"/t/{i}", size=64 << 10) for i in range(300)]
    script = ("echo a > /t/0/f && echo b > /t/299/f && cat /t/0/f /t/299/f; ls -A /t/150; "
              "grep ' /t/[0-9]* ' /proc/self/mountinfo | grep -c ' - tmpfs '")
    done = await sh(sup, script, check=True, mounts=mounts)
    assert lines(done.stdout) == ["a", "b", "300"]
