"""User namespaces (Namespaces.USER, ContainerSpec(user_ns=IdMap), ContainerSpec(user=User)) with a root supervisor.

The core, file system and exec checks of the other modules, repeated in a
user namespace: identity and maps inside, ownership on the host, mounts,
/proc, /dev, hostname, loopback, the init, limits, exec, bridges, errors.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest
import trio
from _util import PYTHON, host_namespaces, lines, read_lines, sh, sh_spec

import anyns
import anyns.testing
from anyns import IdMap, Namespaces, User

NS = Namespaces.DEFAULT | Namespaces.USER
MAP = IdMap(uid=(0, 300000, 65536), gid=(0, 300000, 65536))


def _writable_dir(tmp_path: Path) -> Path:
    """A host directory anyone may write to (the container's root is uid 300000 outside)."""
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o777)
    return d


async def test_root_inside_with_the_default_map(sup: anyns.Supervisor) -> None:
    """Namespaces.USER alone: root inside, anyns.DEFAULT_ID_MAP in uid_map/gid_map, a user namespace not the host's."""
    done = await sh(sup, "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; readlink /proc/self/ns/user",
                    namespaces=NS, check=True)
    out = lines(done.stdout)
    assert out[:2] == ["0", "0"]
    assert [line.split() for line in out[2:4]] == [["0", "100000", "65536"]] * 2
    assert IdMap(uid=(0, 100000, 65536), gid=(0, 100000, 65536)) == anyns.DEFAULT_ID_MAP
    assert out[4] != host_namespaces()["user"]


async def test_the_chosen_map_and_identity(sup: anyns.Supervisor) -> None:
    """user_ns=IdMap(...) (USER implied) and user=User(...): `id` shows them, uid_map shows the map."""
    spec = sh_spec("id -u; id -g; id -G; cat /proc/self/uid_map", user_ns=MAP, user=User(1000, 1001, groups=(5, 20)))
    done = await sup.run(spec, capture_stdout=True, capture_stderr=True)
    out = lines(done.stdout)
    assert out[:2] == ["1000", "1001"]
    assert sorted(out[2].split()) == ["1001", "20", "5"]
    assert out[3].split() == ["0", "300000", "65536"]


async def test_files_made_on_a_bind_belong_to_the_mapped_ids_on_the_host(sup: anyns.Supervisor,
                                                                        tmp_path: Path) -> None:
    """A file root (and uid 1000) make on a writable bind is owned on the host by 300000 (and 301000)."""
    shared = _writable_dir(tmp_path)
    mounts = [anyns.Bind(str(shared), "/data")]
    await sup.run(sh_spec("touch /data/by-root", user_ns=MAP, mounts=mounts))
    await sup.run(sh_spec("touch /data/by-1000", user_ns=MAP, mounts=mounts, user=User(1000, 1000)))
    st_root, st_user = os.stat(shared / "by-root"), os.stat(shared / "by-1000")
    assert (st_root.st_uid, st_root.st_gid) == (300000, 300000)
    assert (st_user.st_uid, st_user.st_gid) == (301000, 301000)
    # And the host's own files show as the overflow id (unmapped) inside.
    done = await sh(sup, "stat -c %u /etc/passwd /usr/bin/env", user_ns=MAP, check=True)
    assert set(lines(done.stdout)) == {"65534"}


async def test_every_other_namespace_is_owned_by_the_new_user_namespace(sup: anyns.Supervisor) -> None:
    """mnt, pid, uts, ipc and net are new; hostname, /proc, /dev, /tmp and loopback all work inside."""
    script = ("hostname; echo $$; ls /proc | grep -c '^[0-9]'; cat /dev/null && echo null-ok; "
              "echo hi > /dev/null && echo write-ok; test -c /dev/urandom && echo urandom-ok; "
              "touch /tmp/x && echo tmp-ok; ls /dev/pts/ptmx >/dev/null && echo pts-ok")
    done = await sup.run(sh_spec(script, namespaces=NS, hostname="userbox"), capture_stdout=True,
                         capture_stderr=True)
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["userbox", "2", "4", "null-ok", "write-ok", "urandom-ok", "tmp-ok", "pts-ok"]
    assert os.uname().nodename != "userbox"


LOOPBACK_ROUND_TRIP = """
import socket
server = socket.create_server(('127.0.0.1', 0))
client = socket.create_connection(server.getsockname())
conn, _ = server.accept()
conn.sendall(b'pong')
print(client.recv(4).decode())
"""


async def test_a_user_namespace_without_a_pid_namespace_sees_the_hosts_proc(sup: anyns.Supervisor) -> None:
    """proc can only be mounted for a pid namespace the user namespace owns: without one, /proc is the host's."""
    done = await sh(sup, "test -d /proc/1 && echo has-1; echo $$; id -u", namespaces=Namespaces.MOUNT | Namespaces.USER,
                    check=True)
    out = lines(done.stdout)
    assert out[0] == "has-1" and int(out[1]) > 2 and out[2] == "0"


async def test_loopback_works_in_a_user_namespace(sup: anyns.Supervisor) -> None:
    """lo is up: a server and a client in the same user-namespaced container talk over 127.0.0.1."""
    done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", LOOPBACK_ROUND_TRIP], namespaces=NS),
                         capture_stdout=True, capture_stderr=True)
    assert (done.returncode, done.stdout) == (0, b"pong\n"), done.stderr


async def test_exec_into_a_user_namespaced_container(sup: anyns.Supervisor) -> None:
    """exec joins the user namespace too: root there (or the spec's user), the same namespaces."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["sleep", "1000"], user_ns=MAP),
                                          check=False))
        done = await box.exec(["sh", "-c", "id -u; cat /proc/self/uid_map; readlink /proc/self/ns/user"],
                              capture_stdout=True)
        out = lines(done.stdout)
        assert out[0] == "0"
        assert out[1].split() == ["0", "300000", "65536"]
        assert out[2] == box.namespaces["user"]
        box.kill()
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["sleep", "1000"], user_ns=MAP,
                                                                       user=User(7, 7)), check=False))
        done = await box.exec(["id", "-u"], capture_stdout=True)
        assert done.stdout == b"7\n"
        box.kill()


async def test_init_forwards_signals_in_a_user_namespace(sup: anyns.Supervisor) -> None:
    """terminate() reaches a trapping program through the init, as without a user namespace."""
    script = "trap 'exit 0' TERM; echo ready; while :; do sleep 0.02; done"
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec(script, namespaces=NS), stdout=anyns.PIPE))
        assert await read_lines(box.stdout, 1) == ["ready"]
        box.send_signal(signal.SIGTERM)
        assert await box.wait() == 0
    assert box.stdout is not None
    await box.stdout.aclose()


async def test_limits_in_a_user_namespace(sup: anyns.Supervisor) -> None:
    """A user-namespaced container enters its cgroups (the v1 ones by itself) and is held to its limits."""
    done = await sup.run(sh_spec("cat /proc/self/cgroup", namespaces=NS, limits=anyns.Limits(pids=16)),
                         capture_stdout=True)
    paths = [line.split(":", 2)[2] for line in lines(done.stdout)]
    assert any("/anyns-" in p for p in paths)


async def test_dir_rootfs_and_tty_in_a_user_namespace(sup: anyns.Supervisor, tmp_path: Path,
                                                      make_busybox_root: Callable[[Path], Path]) -> None:
    """A directory root made by host root (in a 0700 tmp dir) works inside; so does a terminal from its devpts."""
    root = make_busybox_root(tmp_path / "root")
    (root / "marker").write_text("inside\n")
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", "cat /marker; id -u"], rootfs=anyns.DirRootfs(root),
                               env={"PATH": "/bin"}, namespaces=NS)
    done = await sup.run(spec, capture_stdout=True, capture_stderr=True)
    assert done.stdout == b"inside\n0\n", done.stderr
    tty = await sup.run(sh_spec("tty; test -t 0 && echo is-a-tty", namespaces=NS, tty=True), capture_stdout=True)
    assert b"/dev/pts/0" in (tty.stdout or b"") and b"is-a-tty" in (tty.stdout or b"")


async def test_overlay_root_in_a_user_namespace(sup: anyns.Supervisor, tmp_path: Path,
                                                make_busybox_root: Callable[[Path], Path]) -> None:
    """An OverlayRootfs in a user namespace (userxattr): the lower layer is read, new files are made in the upper
    one; lower files owned by unmapped ids (host root's) cannot be changed (EACCES: that needs idmapped layers)."""
    lower = make_busybox_root(tmp_path / "lower")
    (lower / "marker").write_text("lower\n")
    script = "cat /marker; echo new > /created && cat /created; echo x >> /marker 2>/dev/null || echo refused"
    done = await sup.run(anyns.ContainerSpec(argv=["/bin/sh", "-c", script], rootfs=anyns.OverlayRootfs([lower]),
                                             env={"PATH": "/bin"}, namespaces=NS),
                         capture_stdout=True, capture_stderr=True)
    assert lines(done.stdout) == ["lower", "new", "refused"], done.stderr
    assert (lower / "marker").read_text() == "lower\n" and not (lower / "created").exists()


@contextlib.asynccontextmanager
async def _hub(sup: anyns.Supervisor, tmp_path: Path) -> AsyncIterator[str]:
    """A network namespace made for the test (kept at a path) for the bridge to live in."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, check=False), anyns.ContainerSpec(argv=["sleep", "1000"]))
        try:
            with box.keep_namespace("net", tmp_path / "hubnet") as kept:
                yield kept.path
        finally:
            box.kill()


async def test_bridge_networking_in_a_user_namespace(sup: anyns.Supervisor, tmp_path: Path) -> None:
    """A bridged, user-namespaced container gets eth0 with its address (maps written, then the veth, then go)."""
    async with _hub(sup, tmp_path) as netns:
        bridge = anyns.Bridge(subnet="10.213.0.0/24", netns=netns)
        async with trio.open_nursery() as nursery:
            box = await nursery.start(partial(sup.run, sh_spec("cat /sys/class/net/eth0/address 2>/dev/null; "
                                                               "cat /proc/net/dev; exec sleep 1000",
                                                               namespaces=NS, network=bridge),
                                              stdout=anyns.PIPE, check=False))
            assert len(box.addresses) == 1 and box.addresses[0].network == bridge.network
            data = b""
            assert box.stdout is not None
            while b"eth0" not in data:
                chunk = await box.stdout.receive_some()
                assert chunk, data
                data += chunk
            box.kill()
        await box.stdout.aclose()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"user_ns": IdMap(uid=(1, 300000, 10), gid=(0, 300000, 10))}, "root"),
        ({"user_ns": MAP, "user": User(70000, 0)}, "user.uid"),
        ({"user_ns": MAP, "join": anyns.Join(net="/proc/1/ns/net")}, "join"),
    ],
)
def test_user_namespace_specs_that_cannot_work_are_spec_errors(fields: dict[str, object], match: str) -> None:
    """An unmapped root or user, an overlay root or a join are refused when the spec is built."""
    with pytest.raises(anyns.SpecError, match=match):
        anyns.ContainerSpec(argv=["true"], **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("ranges", [[(0, 1, 10), (5, 100, 10)], [(0, 1, 10), (20, 5, 10)], [(0, -1, 1)],
                                    [(0, 1, 0)], [(0, 1 << 32, 1)], "0 1 1"])
def test_bad_id_maps_are_spec_errors(ranges: object) -> None:
    """Overlapping ranges (inside or outside), negative or empty or out-of-range ids, and text are refused."""
    with pytest.raises(anyns.SpecError):
        IdMap(uid=ranges, gid=(0, 1, 1))  # type: ignore[arg-type]


async def test_a_missing_bind_source_is_still_a_precise_setup_error(sup: anyns.Supervisor) -> None:
    """In a user namespace too, setup failures name the step, the call and the path."""
    with pytest.raises(anyns.SetupError) as info:
        await sup.run(anyns.ContainerSpec(argv=["true"], namespaces=NS,
                                          mounts=[anyns.Bind("/no/such/dir", "/data")]))
    assert (info.value.step, info.value.path) == ("mounts", "/no/such/dir")


async def test_a_setup_step_that_needs_host_privilege_fails_precisely(sup: anyns.Supervisor) -> None:
    """Raising a hard rlimit needs CAP_SYS_RESOURCE in the host's user namespace: EPERM, named, with a hint."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with pytest.raises(anyns.SetupError) as info:
        await sup.run(anyns.ContainerSpec(argv=["true"], namespaces=NS, rlimits={"nofile": (hard, hard + 1)}))
    assert (info.value.syscall, info.value.errno) == ("setrlimit", 1)
