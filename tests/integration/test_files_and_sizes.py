"""Storage caps (``tmp_size``, ``shm_size``, ``OverlayRootfs(size=)``) and files placed before start (``files``)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest
from _util import lines

import anyns
from anyns import File, Namespaces

BIN = {"PATH": "/bin"}
MIB = 1 << 20
#: what a container's `df`-free check prints: the size of a mount from statfs, in bytes
STATFS = 'import os, sys\nfor p in sys.argv[1:]:\n    s = os.statvfs(p)\n    print(p, s.f_blocks * s.f_frsize)\n'
RUN = anyns.File(b"#!/bin/sh\necho hi\n", mode=0o755)


def tree(path: pathlib.Path) -> dict[str, tuple[int, bytes]]:
    """Every entry below ``path``: relative name -> (mode, content of a file)."""
    found = {}
    for top, dirs, names in os.walk(path):
        for name in dirs + names:
            full = os.path.join(top, name)
            st = os.lstat(full)
            body = b""
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as f:
                    body = f.read()
            found[os.path.relpath(full, path)] = (st.st_mode, body)
    return found


@pytest.fixture
def busybox(tmp_path: pathlib.Path, make_busybox_root: Callable[[pathlib.Path], pathlib.Path]) -> pathlib.Path:
    """A busybox root with an /etc/motd (which files may cover) and no /box."""
    root = make_busybox_root(tmp_path / "root")
    (root / "etc" / "motd").write_text("the host's\n")
    return root


def mount_options(mountinfo: list[str], point: str) -> str:
    """The superblock options of mount point ``point`` in mountinfo lines (the last such mount)."""
    found = [line.split(" - ", 1)[1].split()[2] for line in mountinfo if line.split()[4] == point]
    assert found, (point, mountinfo)
    return found[-1]


async def test_writes_past_the_caps_fail_inside_with_enospc_and_the_host_is_untouched(
        sup: anyns.Supervisor, busybox: pathlib.Path) -> None:
    """16 MiB written to /tmp, /dev/shm and an overlay root, each capped at 8 MiB: ENOSPC inside, 8 MiB kept;
    the lower layer, the host's /tmp and /dev/shm see nothing."""
    before = tree(busybox)
    name = f"anyns-cap-{uuid.uuid4().hex}"
    script = "".join(f"dd if=/dev/zero of={d}/{name} bs=1M count=16 2>&1 | grep -o 'No space left on device'; "
                     f"wc -c < {d}/{name}; " for d in ("/tmp", "/dev/shm", ""))
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", script], env=BIN, tmp_size="8M", shm_size="8M",
                               rootfs=anyns.OverlayRootfs(str(busybox), size="8M"))
    done = await sup.run(spec, capture_stdout=True)
    out = lines(done.stdout)
    assert out[0::2] == ["No space left on device"] * 3, out
    for written in out[1::2]:
        assert 7 * MIB <= int(written) <= 8 * MIB, out
    assert tree(busybox) == before
    assert not any(os.path.exists(os.path.join(d, name)) for d in ("/tmp", "/dev/shm"))  # noqa: ASYNC240


async def test_the_default_sizes_are_the_documented_ones(sup: anyns.Supervisor, busybox: pathlib.Path) -> None:
    """/tmp 256 MiB, /dev/shm 64 MiB, an overlay's writable layer 1 GiB (statfs and mountinfo inside); the
    sizes asked for are the ones mounted."""
    assert (anyns.DEFAULT_TMP_SIZE, anyns.DEFAULT_SHM_SIZE, anyns.DEFAULT_OVERLAY_SIZE) == (256 * MIB, 64 * MIB,
                                                                                            1024 * MIB)
    spec = anyns.ContainerSpec(argv=["python3", "-c", STATFS, "/tmp", "/dev/shm"])
    done = await sup.run(spec, capture_stdout=True)
    assert lines(done.stdout) == [f"/tmp {256 * MIB}", f"/dev/shm {64 * MIB}"]
    done = await sup.run(anyns.ContainerSpec(argv=["python3", "-c", STATFS, "/tmp", "/dev/shm"], tmp_size="8M",
                                             shm_size=3 * MIB), capture_stdout=True)
    assert lines(done.stdout) == [f"/tmp {8 * MIB}", f"/dev/shm {3 * MIB}"]
    # On an overlay root (busybox: no python), from mountinfo; statfs of / is the upper layer's.
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", "cat /proc/self/mountinfo; echo; stat -f -c '%b %S' /"],
                               env=BIN, rootfs=anyns.OverlayRootfs(str(busybox)))
    out = lines((await sup.run(spec, capture_stdout=True)).stdout)
    mountinfo = out[:out.index("")]
    assert "size=262144k" in mount_options(mountinfo, "/tmp").split(",")
    assert "size=65536k" in mount_options(mountinfo, "/dev/shm").split(",")
    blocks, block_size = map(int, out[-1].split())
    assert blocks * block_size == 1024 * MIB


async def test_files_on_a_host_rootfs(sup: anyns.Supervisor) -> None:
    """Files in a new directory, beside the host's /etc entries, under /tmp and /dev/shm, an executable one;
    str is UTF-8, modes and owner as given; the program may rewrite its files; they are gone afterwards."""
    files = {"/box/main.py": b"print('main')\n", "/etc/app.conf": "caf\u00e9\n", "/box/run": RUN,
             "/tmp/in/tmp.txt": b"tmp\n", "/dev/shm/s": b"shm\n", "/root/.profile": File(b"p\n", mode=0o600)}
    script = ("python3 /box/main.py; cat /etc/app.conf /tmp/in/tmp.txt /dev/shm/s /root/.profile; /box/run; "
              "stat -c '%n %a %u' /box/main.py /box/run /root/.profile; head -c 3 /etc/passwd; echo; "
              "echo changed > /box/main.py && cat /box/main.py; touch /box/new 2>/dev/null || echo read-only-dir")
    done = await sup.run(anyns.ContainerSpec(argv=["/bin/sh", "-c", script], files=files), capture_stdout=True)
    assert lines(done.stdout) == ["main", "caf\u00e9", "tmp", "shm", "p", "hi", "/box/main.py 644 0",
                                  "/box/run 755 0", "/root/.profile 600 0", "roo", "changed", "read-only-dir"]
    assert not os.path.exists("/box")  # noqa: ASYNC240


async def test_files_on_a_readonly_dir_rootfs_leave_the_host_directory_untouched(
        sup: anyns.Supervisor, busybox: pathlib.Path) -> None:
    """A read-only DirRootfs shows files in a directory it lacks (/box) and over one it has (/etc/motd); the
    root stays read-only; the host directory is unchanged."""
    before = tree(busybox)
    files = {"/box/run": RUN, "/etc/motd": "from the spec\n", "/box/deep/er/data": b"\x00\x01"}
    script = ("/box/run; cat /etc/motd; wc -c < /box/deep/er/data; touch /new 2>/dev/null || echo read-only-root; "
              "echo rewritten > /etc/motd; cat /etc/motd")
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", script], env=BIN, rootfs=anyns.DirRootfs(str(busybox)),
                               files=files)
    done = await sup.run(spec, capture_stdout=True)
    assert lines(done.stdout) == ["hi", "from the spec", "2", "read-only-root", "rewritten"]
    assert tree(busybox) == before


async def test_files_on_an_overlay_root_and_under_tmp_of_a_writable_dir_rootfs(
        sup: anyns.Supervisor, busybox: pathlib.Path) -> None:
    """OverlayRootfs: files go into the container's writable layer (replacing a lower file); a writable
    DirRootfs takes files under /tmp and a Tmpfs of the spec. Host directories unchanged."""
    (busybox / "work").mkdir()  # the Tmpfs's mount point (a writable root would get it made)
    before = tree(busybox)
    files = {"/box/run": RUN, "/etc/motd": "mine\n"}
    script = "/box/run; cat /etc/motd; rm /etc/motd /box/run && echo removed"
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", script], env=BIN, rootfs=anyns.OverlayRootfs(str(busybox)),
                               files=files)
    assert lines((await sup.run(spec, capture_stdout=True)).stdout) == ["hi", "mine", "removed"]
    assert tree(busybox) == before
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", "/tmp/run; cat /work/a/b"], env=BIN,
                               rootfs=anyns.DirRootfs(str(busybox), readonly=False), mounts=[anyns.Tmpfs("/work")],
                               files={"/tmp/run": RUN, "/work/a/b": b"on the spec's tmpfs\n"})
    assert lines((await sup.run(spec, capture_stdout=True)).stdout) == ["hi", "on the spec's tmpfs"]
    assert tree(busybox) == before


@pytest.mark.parametrize("kind", ["host", "dir", "overlay"])
async def test_files_in_a_user_namespace(sup: anyns.Supervisor, busybox: pathlib.Path, kind: str) -> None:
    """With a user namespace of its own (the host directory's owner unmapped): files on a HostRootfs, a read-only
    DirRootfs and an OverlayRootfs, owned by root inside."""
    before = tree(busybox)
    rootfs = {"host": anyns.HostRootfs(), "dir": anyns.DirRootfs(str(busybox)),
              "overlay": anyns.OverlayRootfs(str(busybox))}[kind]
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", "/box/run; cat /etc/app.conf /tmp/t; stat -c '%u %a' /box/run"],
                               env=BIN, rootfs=rootfs, namespaces=Namespaces.DEFAULT | Namespaces.USER,
                               files={"/box/run": RUN, "/etc/app.conf": "conf\n", "/tmp/t": "t\n"})
    done = await sup.run(spec, capture_stdout=True)
    assert lines(done.stdout) == ["hi", "conf", "t", "0 755"]
    assert tree(busybox) == before


async def test_a_file_larger_than_a_page_and_a_plan_in_pieces(sup: anyns.Supervisor) -> None:
    """3 MiB of files (the plan travels in several pieces) arrive byte for byte."""
    data = os.urandom(3 * MIB)
    spec = anyns.ContainerSpec(argv=["sha256sum", "/box/blob", "/tmp/blob"], files={"/box/blob": data,
                                                                                      "/tmp/blob": data[:1000]})
    out = lines((await sup.run(spec, capture_stdout=True)).stdout)
    assert [line.split()[0] for line in out] == [hashlib.sha256(data).hexdigest(),
                                                 hashlib.sha256(data[:1000]).hexdigest()]


def test_cli_file_tmp_size_and_shm_size(tmp_path: pathlib.Path) -> None:
    """run --file SRC:DST (SRC's mode) --tmp-size --shm-size."""
    script = tmp_path / "run.sh"
    script.write_bytes(b"#!/bin/sh\necho from-cli\n")
    script.chmod(0o755)
    done = subprocess.run([sys.executable, "-m", "anyns", "run", "--file", f"{script}:/box/run", "--tmp-size", "8M",
                           "--shm-size", "2M", "--", "sh", "-c", "/box/run; df -k /tmp /dev/shm | tail -n 2"],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = lines(done.stdout)
    assert out[0] == "from-cli"
    assert [line.split()[1] for line in out[1:]] == ["8192", "2048"]
    done = subprocess.run([sys.executable, "-m", "anyns", "run", "--file", f"{script}:/usr/x", "--", "true"],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 125 and b"/usr" in done.stderr, done.stderr
