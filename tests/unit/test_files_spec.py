"""ContainerSpec(files=, tmp_size=, shm_size=), anyns.File and OverlayRootfs(size=): checked when built; the plan."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

import anyns
from anyns import Bind, ContainerSpec, DirRootfs, File, HostRootfs, OverlayRootfs, SpecError, Tmpfs
from anyns._plan import HostLayout, compile_plan
from anyns._spec import files_on_root

MiB = 1 << 20
LAYOUT = HostLayout(newroot="/run/anyns/newroot")


def spec(**fields: Any) -> ContainerSpec:
    return ContainerSpec(argv=["/bin/true"], **fields)


def test_file_data_str_is_utf8_and_modes() -> None:
    """A str is stored as its UTF-8 bytes; bytes-likes become bytes; mode 0o644 unless given; File is public."""
    assert File("caf\u00e9").data == b"caf\xc3\xa9"
    assert File(bytearray(b"ab")).data == b"ab"
    assert File(b"x").mode == 0o644
    assert File(b"#!/bin/sh\n", mode=0o755).mode == 0o755
    assert File.__module__ == "anyns" and "File" in anyns.__all__
    assert dict(spec(files={"/a": "\u00e9"}).files) == {"/a": File(b"\xc3\xa9")}
    assert "<17 bytes>" not in repr(File(b"x")) and "<100 bytes>" in repr(File(b"x" * 100))


@pytest.mark.parametrize("data", [None, 3, ["x"], "\udc80"])
def test_bad_file_data(data: Any) -> None:
    with pytest.raises(SpecError, match=r"File\.data"):
        File(data)
    with pytest.raises(SpecError, match=r"files\['/a'\]"):
        spec(files={"/a": data})


@pytest.mark.parametrize("mode", [-1, 0o1000, 0o4755, 0o2755, True, "755", 1.5])
def test_bad_file_modes(mode: Any) -> None:
    """Permission bits only: no setuid, setgid or sticky bit."""
    with pytest.raises(SpecError, match=r"File\.mode"):
        File(b"", mode=mode)


def test_paths_are_normalised_sorted_and_hashable() -> None:
    s = spec(files={"/b//c": b"1", "/a/./x": File(b"2", mode=0o600)})
    assert s.files == (("/a/x", File(b"2", mode=0o600)), ("/b/c", File(b"1")))
    assert spec(files=[("/a/x", File(b"2", mode=0o600)), ("/b/c", b"1")]) == s
    assert hash(s) == hash(spec(files=dict(s.files)))
    assert attrs.evolve(s, files=s.files) == s


@pytest.mark.parametrize(("files", "match"), [
    ({"rel/x": b""}, "absolute"),
    ({"/": b""}, "not the root"),
    ({"/a/../b": b""}, r"'\.\.'"),
    ({"/a": b"", "/a/": b""}, "twice"),
    ({"/a": b"", "/a/b": b""}, "lies below '/a'"),
    ({"/tmp": b""}, "where '/tmp' is mounted"),
    ({"/dev": b""}, "where '/dev/shm' is mounted"),
    ({"/usr/bin/x": b""}, "under /usr"),
    ({"/usr": b""}, "under /usr"),
    ({"/bin/x": b""}, "under /bin"),
    ({"/lib64/x": b""}, "under /lib64"),
    ({"/etc/passwd": b""}, "leave 'passwd' out of HostRootfs"),
    ({"/etc/ssl/certs/x.pem": b""}, "under /etc/ssl"),
    ({"/proc/x": b""}, "under /proc"),
    ({"/sys/x": b""}, "under /sys"),
    ({"/dev/null2": b""}, "under /dev"),
    (12, "files"),
])
def test_refused_paths(files: Any, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        spec(files=files)


def test_paths_under_binds_are_refused_under_tmpfs_mounts_taken() -> None:
    """Under a Bind target: never written into a host directory. Under a Tmpfs (also one over a Bind): fine."""
    with pytest.raises(SpecError, match="under the Bind at '/data'"):
        spec(mounts=[Bind("/srv", "/data")], files={"/data/x": b""})
    with pytest.raises(SpecError, match="under the Bind at '/data/sub'"):
        spec(mounts=[Tmpfs("/data"), Bind("/srv", "/data/sub")], files={"/data/sub/x": b""})
    with pytest.raises(SpecError, match="where '/data/sub' is mounted"):
        spec(mounts=[Bind("/srv", "/data/sub")], files={"/data": b""})
    s = spec(mounts=[Bind("/srv", "/data"), Tmpfs("/data/t")], files={"/data/t/x": b"", "/box/y": b""})
    assert [p for p, _ in files_on_root(s)] == ["/box/y"]
    # leaving an /etc entry out of HostRootfs(etc=) makes its path free
    assert spec(rootfs=HostRootfs(etc=("hosts",)), files={"/etc/passwd": b"x"}).files
    assert spec(files={"/dev/shm/x": b"", "/tmp/a/b": b""}).files


def test_roots_that_are_host_directories_take_no_files_on_the_root() -> None:
    """A writable DirRootfs and an overlay with a host upper are host directories: /tmp only."""
    with pytest.raises(SpecError, match=r"DirRootfs\(readonly=False\)"):
        spec(rootfs=DirRootfs("/r", readonly=False), files={"/box/x": b""})
    assert spec(rootfs=DirRootfs("/r", readonly=False), files={"/tmp/x": b""}).files
    with pytest.raises(SpecError, match="host upper"):
        spec(rootfs=OverlayRootfs("/r", upper="/u"), files={"/box/x": b""})
    assert spec(rootfs=OverlayRootfs("/r", upper="/u"), files={"/tmp/x": b""}).files
    with pytest.raises(SpecError, match="cannot contain ','"):
        spec(rootfs=DirRootfs("/r,x"), files={"/box/x": b""})
    assert spec(rootfs=DirRootfs("/r"), files={"/usr/x": b"", "/etc/passwd": b""}).files  # not the host's here
    with pytest.raises(SpecError, match="joins another's mount namespace"):
        spec(join=anyns.Join(mnt="/proc/1/ns/mnt"), files={"/tmp/x": b""})


def test_the_total_is_bounded() -> None:
    """MAX_FILES_SIZE (16 MiB) in all, checked when the spec is built."""
    assert 16 * MiB == anyns.MAX_FILES_SIZE
    assert spec(files={"/a": b"\0" * (8 * MiB), "/b": b"\0" * (8 * MiB)}).files
    with pytest.raises(SpecError, match="16 MiB"):
        spec(files={"/a": b"\0" * (8 * MiB), "/b": b"\0" * (8 * MiB + 1)})
    with pytest.raises(SpecError, match="at most 1024 files"):
        spec(files={f"/f/{i}": b"" for i in range(1025)})


def test_sizes_parse_like_limits_memory() -> None:
    s = spec(tmp_size="8M", shm_size=4096)
    assert (s.tmp_size, s.shm_size) == (8 * MiB, 4096)
    assert (spec().tmp_size, spec().shm_size) == (anyns.DEFAULT_TMP_SIZE, anyns.DEFAULT_SHM_SIZE) == (256 * MiB,
                                                                                                  64 * MiB)
    assert OverlayRootfs("/l", size="1.5g").size == 1536 * MiB
    assert OverlayRootfs("/l").size == anyns.DEFAULT_OVERLAY_SIZE == 1 << 30
    assert OverlayRootfs("/l", upper="/u").size is None


@pytest.mark.parametrize("size", ["lots", "", "-1M", 0, -5, "inf", True, None, 1.5, "8X"])
def test_bad_sizes(size: Any) -> None:
    for field in ("tmp_size", "shm_size"):
        with pytest.raises(SpecError, match=field):
            spec(**{field: size})
    with pytest.raises(SpecError, match=r"OverlayRootfs\.size"):
        OverlayRootfs("/l", size=size)


def test_an_overlay_with_a_host_upper_takes_no_size() -> None:
    with pytest.raises(SpecError, match="host upper"):
        OverlayRootfs("/l", upper="/u", size="1G")


def test_the_plan_sizes_the_mounts_and_places_the_files() -> None:
    """The plan: /tmp and /dev/shm sized; files of a HostRootfs on a tmpfs bound onto skeleton mount points,
    those under /tmp written after the mounts; an overlay root's into its upper layer, sized."""
    files = {"/box/main.py": b"print(1)", "/etc/app.conf": "x", "/tmp/t": File(b"t", mode=0o600)}
    plan = compile_plan(spec(files=files, tmp_size="8M", shm_size="2M"), LAYOUT)
    calls = [(op[1], op[2]) for op in plan.ops]
    data = {op[2]: op[3] for op in plan.ops if op[1] == "mount_at"}
    assert data["/tmp"][-1].endswith(f",size={8 * MiB}") and data["/dev/shm"][-1].endswith(f",size={2 * MiB}")
    assert plan.skeleton is not None
    assert {("touch", "box/main.py"), ("touch", "etc/app.conf")} <= set(plan.skeleton)
    assert calls.index(("files_tmpfs", None)) > calls.index(("attach_skeleton", "/"))
    assert calls.index(("attach_file", "/etc/app.conf")) < calls.index(("mount_at", "/dev/shm"))
    assert calls.index(("write_file_at", "/tmp/t")) > calls.index(("mount_at", "/tmp"))
    assert ("write_file_at", "/tmp/t", ("/tmp/t", b"t".hex(), 0o600)) == next(
        op[1:] for op in plan.ops if op[1] == "write_file_at")
    overlay = compile_plan(spec(rootfs=OverlayRootfs("/l", size="8M"), files=files), LAYOUT)
    scratch = next(op for op in overlay.ops if op[1] == "mount" and op[3][1] == "/run/anyns/newroot")
    assert scratch[3][-1] == f"mode=0755,size={8 * MiB}"
    under = [op[3][:2] for op in overlay.ops if op[1] == "write_file_under"]
    assert under == [("/run/anyns/newroot/upper", "/box/main.py"), ("/run/anyns/newroot/upper", "/etc/app.conf")]
    readonly_dir = [op[1] for op in compile_plan(spec(rootfs=DirRootfs("/r"), files=files), LAYOUT).ops]
    assert "bind_root" not in readonly_dir and readonly_dir.count("attach_file") == 2
    assert readonly_dir.index("root_readonly") > readonly_dir.index("attach_file")
    # without files: the plan is what it was
    assert not any(op[0] == "files" for op in compile_plan(spec(), LAYOUT).ops)
    assert "bind_root" in [op[1] for op in compile_plan(spec(rootfs=DirRootfs("/r")), LAYOUT).ops]
