"""Attacks from inside a default container on the host: device nodes and setup races.

Each test is the attack itself, run the way a hostile program (or a second
container sharing a directory with the victim) would run it; each asserts
that the host saw nothing of it.

* Device nodes: a default container keeps CAP_MKNOD (Docker's set). On a
  mount without ``nodev`` a node it makes opens the host's device: ``c 1 11``
  writes to the host's kernel log, ``b 7 N`` reads a host loop device. Every
  mount a container can write is ``nodev``; its standard nodes are binds of
  the host's.
* The setup race: a second container that can write a ``DirRootfs``
  directory swaps ``dev`` for a symlink while the victim is being set up
  (runc's CVE-2019-16884 / CVE-2019-19921 / CVE-2025-31133 class). No step
  of the setup may re-resolve a path inside a tree another container can
  write; nothing may land on the host.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pathlib
import secrets
import socket
import stat
from collections.abc import Callable, Iterator
from functools import partial

import pytest
import trio
from _util import PYTHON, sh

import anyns

LOOP_CTL_GET_FREE = 0x4C82
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
BUSYBOX_PATH = {"PATH": "/bin"}


def _kernel_log() -> bytes:
    """Everything /dev/kmsg still holds (read without blocking)."""
    records = []
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                records.append(os.read(fd, 8192))
            except BlockingIOError:
                break
            except OSError as e:  # EPIPE: a record was overwritten while reading; go on
                if e.errno != errno.EPIPE:
                    raise
    finally:
        os.close(fd)
    return b"".join(records)


@contextlib.contextmanager
def host_loop_device(tmp_path: pathlib.Path, marker: bytes) -> Iterator[int]:
    """A host loop device backed by a file that starts with ``marker``; yields its minor number."""
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no /dev/loop-control: loop devices are not available here")
    backing = tmp_path / "loop-backing"
    backing.write_bytes(marker + b"\0" * (1 << 16))
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        minor = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
    finally:
        os.close(control)
    loop = os.open(f"/dev/loop{minor}", os.O_RDWR | os.O_CLOEXEC)
    data = os.open(backing, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(loop, LOOP_SET_FD, data)
        try:
            yield minor
        finally:
            fcntl.ioctl(loop, LOOP_CLR_FD, 0)
    finally:
        os.close(data)
        os.close(loop)


def _attack_script(directory: str, minor: int, kmsg_line: str) -> str:
    """Make the two nodes in ``directory`` and use them; report what each open said."""
    return (
        f"cd {directory} || exit 99; "
        f"mknod ./anyns-k c 1 11 && echo made-k; "
        f"mknod ./anyns-l b 7 {minor} && echo made-l; "
        f"(echo '{kmsg_line}' > ./anyns-k) 2>&1; echo k=$?; "
        f"head -c 64 ./anyns-l 2>&1; echo \" l=$?\"; "
        f"rm -f ./anyns-k ./anyns-l"
    )


PLACES: dict[str, Callable[[pathlib.Path, Callable[[pathlib.Path], pathlib.Path]], tuple[dict[str, object], str]]] = {
    "dev": lambda tmp, make_root: ({}, "/dev"),
    "dev-with-limits": lambda tmp, make_root: ({"limits": anyns.Limits()}, "/dev"),
    "tmp": lambda tmp, make_root: ({}, "/tmp"),
    "dev-shm": lambda tmp, make_root: ({}, "/dev/shm"),
    "writable-bind": lambda tmp, make_root: (
        {"mounts": (anyns.Bind(str(tmp / "shared"), "/data"),)}, "/data"),
    "writable-dir-rootfs": lambda tmp, make_root: (
        {"rootfs": anyns.DirRootfs(str(make_root(tmp / "root")), readonly=False), "env": BUSYBOX_PATH}, "/"),
    "overlay-rootfs": lambda tmp, make_root: (
        {"rootfs": anyns.OverlayRootfs(str(make_root(tmp / "lower"))), "env": BUSYBOX_PATH}, "/"),
}


@pytest.mark.parametrize("place", list(PLACES))
async def test_device_nodes_reach_no_host_device(
    sup: anyns.Supervisor, tmp_path: pathlib.Path, make_busybox_root: Callable[[pathlib.Path], pathlib.Path],
    place: str,
) -> None:
    """mknod works (CAP_MKNOD is Docker's), but the nodes open nothing: no kernel log line, no loop device data."""
    (tmp_path / "shared").mkdir()
    fields, directory = PLACES[place](tmp_path, make_busybox_root)
    marker = b"ANYNS-LOOP-" + secrets.token_hex(8).encode()
    kmsg_line = "anyns-escape-" + secrets.token_hex(8)
    with host_loop_device(tmp_path, marker) as minor:
        done = await sh(sup, _attack_script(directory, minor, kmsg_line), **fields)
    out = done.stdout.decode(errors="replace") if done.stdout else ""
    assert "made-k" in out and "made-l" in out, (out, done.stderr)  # the attack got as far as the open
    assert marker.decode() not in out, out
    assert kmsg_line.encode() not in _kernel_log()
    assert "k=0" not in out and "l=0" not in out, out


@pytest.mark.parametrize("node", [("userfaultfd", 10, 257), ("kvm", 10, 232), ("tty0", 4, 0)])
async def test_dev_nodes_of_dangerous_devices_do_not_open(sup: anyns.Supervisor, node: tuple[str, int, int]) -> None:
    """/dev/userfaultfd (a userfaultfd the filter denies), KVM, the host's console: made, never opened."""
    name, major, minor = node
    script = (f"mknod /dev/{name} c {major} {minor} && echo made; "
              f"{PYTHON} -c \"import os; os.open('/dev/{name}', os.O_RDWR)\" 2>&1 | tail -1")
    done = await sh(sup, script)
    out = done.stdout.decode() if done.stdout else ""
    assert "made" in out, (out, done.stderr)
    assert "PermissionError" in out or "Operation not permitted" in out, out


async def test_dev_is_nodev_and_its_nodes_are_the_hosts(sup: anyns.Supervisor) -> None:
    """/dev is a nodev tmpfs; null, zero, full, random, urandom and tty are binds of the host's nodes."""
    script = (
        "import os, stat\n"
        "for n in ('null', 'zero', 'full', 'random', 'urandom', 'tty'):\n"
        "    st = os.stat('/dev/' + n)\n"
        "    print(n, stat.S_ISCHR(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev))\n"
        "for line in open('/proc/self/mountinfo'):\n"
        "    f = line.split()\n"
        "    if f[4] in ('/dev', '/dev/null', '/dev/shm', '/tmp', '/'):\n"
        "        print('mount', f[4], f[5])\n"
        "print('ptmx', os.readlink('/dev/ptmx'))\n"
    )
    done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-c", script]), capture_stdout=True)
    out = done.stdout.decode() if done.stdout else ""
    expected = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
    for name, (major, minor) in expected.items():
        assert f"{name} True {major} {minor}" in out, out
    options = {f[1]: f[2] for f in (line.split() for line in out.splitlines()) if f[0] == "mount"}
    for target in ("/dev", "/dev/shm", "/tmp", "/"):
        assert "nodev" in options[target].split(","), (target, options)
    host_null = os.stat("/dev/null")
    assert (os.major(host_null.st_rdev), os.minor(host_null.st_rdev)) == (1, 3)
    assert "ptmx pts/ptmx" in out


async def test_binds_are_nodev_and_nosuid_by_default(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """A writable Bind is nodev and nosuid unless asked; nodev=False, nosuid=False give the caller the old mount."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert anyns.Bind("/x", "/y").nodev is True
    assert anyns.Bind("/x", "/y").nosuid is True
    mounts = (anyns.Bind(str(tmp_path / "a"), "/a"),
              anyns.Bind(str(tmp_path / "b"), "/b", nodev=False, nosuid=False))
    done = await sh(sup, "grep -E ' /(a|b) ' /proc/self/mountinfo", mounts=mounts, check=True)
    options = {f[4]: set(f[5].split(",")) for f in (line.split() for line in done.stdout.decode().splitlines())}
    assert {"nodev", "nosuid"} <= options["/a"], options
    assert not {"nodev", "nosuid"} & options["/b"], options


# --------------------------------------------------------------------------- the setup race

#: the racer: swaps DIR/dev with a symlink (renameat2 RENAME_EXCHANGE) until killed
RACER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
root, target = sys.argv[1], sys.argv[2]
for name in ("dev", "proc"):
    link = os.path.join(root, name + ".link")
    if not os.path.lexists(link):
        os.symlink(target, link)
print("racing", flush=True)
a, b = (os.path.join(root, "dev").encode(), os.path.join(root, "dev.link").encode())
c, d = (os.path.join(root, "proc").encode(), os.path.join(root, "proc.link").encode())
while True:
    libc.renameat2(-100, a, -100, b, RENAME_EXCHANGE)
    libc.renameat2(-100, c, -100, d, RENAME_EXCHANGE)
    libc.renameat2(-100, a, -100, b, RENAME_EXCHANGE)
    libc.renameat2(-100, c, -100, d, RENAME_EXCHANGE)
"""

RACE_SECONDS = float(os.environ.get("ANYNS_RACE_SECONDS", "20"))


def _host_snapshot(directory: pathlib.Path) -> dict[str, tuple[int, bytes]]:
    """Each entry of ``directory``: its mode and (for a regular file) its contents."""
    snapshot = {}
    for entry in os.scandir(directory):
        st = entry.stat(follow_symlinks=False)
        data = pathlib.Path(entry.path).read_bytes() if stat.S_ISREG(st.st_mode) else b""
        snapshot[entry.name] = (st.st_mode, data)
    return snapshot


@pytest.mark.slow
async def test_a_racer_swapping_dev_for_a_symlink_never_reaches_the_host(
    sup: anyns.Supervisor, tmp_path: pathlib.Path, make_busybox_root: Callable[[pathlib.Path], pathlib.Path],
) -> None:
    """A second container swaps the victim root's ``dev`` and ``proc`` for symlinks to a host directory.

    The host directory holds files named like what the setup touches
    (``null``, ``keys``, ``kcore``, ``sysrq-trigger``): if any step resolved
    a path through the swapped link, a mask would be a bind of a host file
    (the victim reads the sentinel, or writes through it), or a device node
    or mount point would be made in the host directory. The victim reads
    and writes its masked paths each time it starts; failed starts (the
    victim's root really is broken while it races) are fine.
    """
    root = make_busybox_root(tmp_path / "root")
    host = tmp_path / "host"
    host.mkdir()
    sentinel = b"HOST-FILE-" + secrets.token_hex(8).encode()
    for name in ("null", "keys", "kcore", "sysrq-trigger", "timer_list", "zero"):
        (host / name).write_bytes(sentinel)
    before = _host_snapshot(host)
    racer_spec = anyns.ContainerSpec(argv=[PYTHON, "-c", RACER, "/r", str(host)],
                                     mounts=(anyns.Bind(str(root), "/r"),))
    victim = anyns.ContainerSpec(
        argv=["/bin/sh", "-c", "cat /proc/keys /dev/null; echo PWNED > /proc/keys; echo PWNED > /dev/null; true"],
        rootfs=anyns.DirRootfs(str(root)), env=BUSYBOX_PATH,
    )
    counts = {"ok": 0, "failed": 0}
    seen: list[bytes] = []

    async def victims() -> None:
        with trio.move_on_after(RACE_SECONDS):
            while True:
                try:
                    done = await sup.run(victim, capture_stdout=True, capture_stderr=True, check=False)
                except anyns.SetupError:
                    counts["failed"] += 1
                    continue
                counts["ok"] += 1
                seen.append((done.stdout or b"") + (done.stderr or b""))

    async with trio.open_nursery() as nursery:
        racer = await nursery.start(partial(sup.run, racer_spec, stdout=anyns.PIPE, check=False))
        assert racer.stdout is not None
        assert b"racing" in await racer.stdout.receive_some(64)
        async with trio.open_nursery() as loops:
            loops.start_soon(victims)
            loops.start_soon(victims)
        racer.kill()
        await racer.stdout.aclose()
    print(counts)
    assert counts["ok"] > 0 and counts["ok"] + counts["failed"] > 20, counts
    assert not any(sentinel in out for out in seen), "a masked path was a bind of a host file"
    assert _host_snapshot(host) == before, "the setup made or changed something in the host directory"
    for name in ("dev", "proc"):  # the racer's last swap may have left the link in place
        link, real = root / f"{name}.link", root / name
        if real.is_symlink():
            os.rename(link, tmp_path / "tmp-real")
            os.unlink(real)
            os.rename(tmp_path / "tmp-real", real)


@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
async def test_a_planted_symlink_redirects_no_bind_with_follow_symlinks_false(
    sup: anyns.Supervisor, tmp_path: pathlib.Path, userns: bool,
) -> None:
    """A container plants ``shared/data -> /etc`` in a directory it shares; the next bind of ``shared/data``.

    With the default (``follow_symlinks=True``) the bind follows the link, as
    ``mount --bind`` does: the second container sees the host's /etc. With
    ``follow_symlinks=False`` the source is resolved without following any
    link: a typed SetupError naming the source, and nothing of /etc inside.
    In a user namespace the source is held open before becoming root inside:
    the same rule applies there.
    """
    fields = {"namespaces": anyns.Namespaces.DEFAULT | anyns.Namespaces.USER} if userns else {}
    shared = tmp_path / "shared"
    shared.mkdir()
    await sh(sup, "rm -rf /s/data; ln -s /etc /s/data", check=True, mounts=(anyns.Bind(str(shared), "/s"),))
    assert os.readlink(shared / "data") == "/etc"
    followed = await sh(sup, "ls /data", check=True, mounts=(anyns.Bind(str(shared / "data"), "/data"),))
    assert "passwd" in followed.stdout.decode()  # what a caller who trusts the directory gets
    with pytest.raises(anyns.SetupError) as info:
        await sh(sup, "ls /data", mounts=(anyns.Bind(str(shared / "data"), "/data", follow_symlinks=False),),
                 **fields)
    assert info.value.errno == errno.ELOOP
    assert info.value.path == str(shared / "data")
    assert info.value.step == "mounts"
    # a real directory in its place binds as usual
    os.unlink(shared / "data")
    (shared / "data").mkdir()
    (shared / "data" / "mine").write_text("ok")
    done = await sh(sup, "cat /data/mine", check=True,
                    mounts=(anyns.Bind(str(shared / "data"), "/data", follow_symlinks=False),), **fields)
    assert done.stdout == b"ok"


#: inside: connect to the unix socket in /s, send our stdout there (SCM_RIGHTS), print, and exit
HAND_OUT_STDOUT = """
import socket
s = socket.socket(socket.AF_UNIX)
s.connect('/s/sock')
socket.send_fds(s, [b'x'], [1])
print('handed out', flush=True)
"""


async def test_a_stdout_handed_to_a_process_outside_does_not_hold_run_open(
    sup: anyns.Supervisor, tmp_path: pathlib.Path,
) -> None:
    """The program sends its stdout pipe to a process outside the container and exits; that process keeps it
    open. run(capture_stdout=True) still returns soon after the container is reaped, with what was written."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "sock"))
    os.chmod(tmp_path / "sock", 0o777)
    listener.listen()
    kept: list[int] = []

    async def outside() -> None:  # the process outside: takes the fd and keeps it
        conn, _ = await trio.to_thread.run_sync(listener.accept)
        with conn:
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 16, 4)
        kept.extend(fds)

    spec = anyns.ContainerSpec(argv=[PYTHON, "-c", HAND_OUT_STDOUT], mounts=(anyns.Bind(str(tmp_path), "/s"),))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outside)
            with trio.fail_after(30):
                done = await sup.run(spec, capture_stdout=True)
        assert kept, "the fd never came out"
        assert done.stdout == b"handed out\n"
    finally:
        listener.close()
        for fd in kept:
            os.close(fd)
