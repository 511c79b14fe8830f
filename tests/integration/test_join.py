"""Namespace identities, containers joining each other's namespaces, and namespaces kept on a path."""

from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
from functools import partial

import pytest
import trio
from _util import (
    KINDS,
    PONG_CLIENT,
    PONG_SERVER,
    PYTHON,
    close_streams,
    evolve,
    exists,
    host_namespaces,
    kill_and_wait_dead,
    lines,
    read_lines,
    sh,
    sh_spec,
    sleeper,
)

import anyns
from anyns import Namespaces

NS = Namespaces
DEFAULT_KINDS = {"mnt", "pid", "uts", "ipc", "net"}

SERVER = PONG_SERVER




def mount_points() -> set[str]:
    """The mount points of this process's mount namespace."""
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def zombie_namespaces() -> dict[str, str]:
    """namespaces_of() a process that has exited but is not reaped yet (a zombie of ours)."""
    child = subprocess.Popen(["sleep", "1000"])
    try:
        child.send_signal(signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, still a zombie
        return dict(anyns.namespaces_of(child.pid))
    finally:
        child.wait()


# --------------------------------------------------------------------------- namespace identities


async def test_namespaces_are_the_proc_links(sup: anyns.Supervisor) -> None:
    """namespaces[k] is readlink /proc/PID/ns/k for all kinds: new for DEFAULT's, the host's for others."""
    host = host_namespaces()
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        ids = box.namespaces
        assert sorted(ids) == sorted(KINDS)
        for kind in KINDS:
            assert ids[kind] == os.readlink(f"/proc/{box.pid}/ns/{kind}")
            assert isinstance(ids[kind], anyns.NamespaceId)
            assert (ids[kind].kind, ids[kind]) == (kind, f"{kind}:[{ids[kind].inode}]")
            assert ids[kind].inode == os.stat(f"/proc/{box.pid}/ns/{kind}").st_ino
            if kind in DEFAULT_KINDS:
                assert ids[kind] != host[kind], f"{kind} should be the container's own"
            else:
                assert ids[kind] == host[kind], f"{kind} should be shared with the host"
        assert dict(anyns.namespaces_of(box.pid)) == dict(ids)
        box.kill()
    assert dict(box.namespaces) == dict(ids)  # read while it ran, kept afterwards


async def test_namespaces_equal_exactly_where_joined(sup: anyns.Supervisor) -> None:
    """Two containers have equal namespace ids exactly for the kinds one joined (or both share with the host)."""
    shared_with_host = {"user", "cgroup", "time"}
    async with trio.open_nursery() as nursery:
        first = await nursery.start(partial(sup.run, sleeper(hostname="first"), check=False))
        by_box = await nursery.start(partial(sup.run, sleeper(join=anyns.Join(net=first, ipc=first)), check=False))
        by_path = await nursery.start(partial(
            sup.run, sleeper(join=anyns.Join(uts=f"/proc/{first.pid}/ns/uts", pid=pathlib.Path(
                f"/proc/{first.pid}/ns/pid"))), check=False))
        alone = await nursery.start(partial(sup.run, sleeper(), check=False))
        for other, joined in ((by_box, {"net", "ipc"}), (by_path, {"uts", "pid"}), (alone, set())):
            for kind in KINDS:
                same = other.namespaces[kind] == first.namespaces[kind]
                assert same == (kind in joined | shared_with_host), (kind, joined)
        inside = await by_box.exec(["readlink", "/proc/self/ns/net", "/proc/self/ns/ipc"], capture_stdout=True)
        assert lines(inside.stdout) == [first.namespaces["net"], first.namespaces["ipc"]]
        done = await sh(sup, "hostname", join=anyns.Join(uts=first))
        assert lines(done.stdout) == ["first"]
        first.kill()
        assert await by_path.wait() == -9  # it was in first's pid namespace
        assert by_box.returncode is None and alone.returncode is None
        by_box.kill()
        alone.kill()


async def test_joined_net_shares_loopback(sup: anyns.Supervisor) -> None:
    """A container that joined another's net namespace reaches a server on its 127.0.0.1."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", SERVER]),
                                             stdout=anyns.PIPE, check=False))
        [port] = await read_lines(server.stdout, 1)
        client = anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", PONG_CLIENT, port])
        done = await sup.run(evolve(client, join=anyns.Join(net=server)), capture_stdout=True,
                             capture_stderr=True)
        assert lines(done.stdout) == ["pong"]
        refused = await sup.run(client, capture_stdout=True, capture_stderr=True, check=False)
        assert refused.returncode != 0 and b"ConnectionRefusedError" in refused.stderr
        server.kill()
    await close_streams(server)


async def test_join_pid(sup: anyns.Supervisor) -> None:
    """Join(pid=box): not pid 1, sees box's processes, and dies when box's pid 1 is killed."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        script = "echo $$; cat /proc/2/cmdline; echo; ls /proc | grep '^[0-9]' | tr '\\n' ' '; echo; exec cat"
        joined = await nursery.start(partial(sup.run, sh_spec(script, join=anyns.Join(pid=box)),
                                             stdin=anyns.PIPE, stdout=anyns.PIPE, check=False))
        dollar, pid1, listed = await read_lines(joined.stdout, 3)
        assert joined.ns_pid != 1
        assert int(dollar) == joined.ns_pid
        assert pid1 == "sleep\x001000\x00"  # pid 2: box's program, under its init
        assert {"1", "2", dollar} <= set(listed.split())
        assert joined.namespaces["pid"] == box.namespaces["pid"]
        assert joined.namespaces["mnt"] != box.namespaces["mnt"]
        assert joined.stdin is not None
        await joined.stdin.send_all(b"via cat\n")
        assert await read_lines(joined.stdout, 1) == ["via cat"]  # cat runs now
        seen = await box.exec(["/bin/sh", "-c", f"cat /proc/{joined.ns_pid}/cmdline"], capture_stdout=True)
        assert seen.stdout == b"cat\x00"  # box sees the joined container's process
        box.kill()
        assert await joined.wait() == -9
    assert box.returncode == -9
    await close_streams(joined)


async def test_join_mnt(sup: anyns.Supervisor) -> None:
    """Join(mnt=box) sees box's own tmpfs and what box wrote there; writes go both ways."""
    script = "echo from-box > /data/f; echo ready; exec cat"
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sh_spec(script, mounts=[anyns.Tmpfs("/data")]),
                                          stdin=anyns.PIPE, stdout=anyns.PIPE, check=False))
        assert await read_lines(box.stdout, 1) == ["ready"]
        for source in (box, f"/proc/{box.pid}/ns/mnt"):
            done = await sh(sup, "cat /data/f; ls /; echo x >> /data/g", join=anyns.Join(mnt=source))
            assert done.returncode == 0, done.stderr
            assert lines(done.stdout)[0] == "from-box"
            assert "data" in lines(done.stdout)[1:]
        seen = await box.exec(["cat", "/data/g"], capture_stdout=True)
        assert lines(seen.stdout) == ["x", "x"]
        box.kill()
    await close_streams(box)
    with pytest.raises(anyns.SpecError, match="mounts"):
        sleeper(join=anyns.Join(mnt=box), mounts=[anyns.Tmpfs("/x")])


async def test_join_uts_with_hostname_is_spec_error(sup: anyns.Supervisor) -> None:
    """A joined uts with hostname or domainname is a SpecError; without them it sees box's names."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(hostname="named", domainname="dom"), check=False))
        for field in ("hostname", "domainname"):
            with pytest.raises(anyns.SpecError, match=field):
                sleeper(join=anyns.Join(uts=box), **{field: "other"})
        done = await sh(sup, "hostname; cat /proc/sys/kernel/domainname", join=anyns.Join(uts=box))
        assert lines(done.stdout) == ["named", "dom"]
        box.kill()


async def test_join_exited_container_is_setup_error(sup: anyns.Supervisor) -> None:
    """Joining a container that has exited fails with SetupError (step "namespaces", ESRCH)."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        specs = [sh_spec("true", join=anyns.Join(**{kind: box})) for kind in ("net", "pid", "mnt", "uts")]
        box.kill()
    assert box.returncode == -9
    for spec in specs:
        with pytest.raises(anyns.SetupError) as err:
            await sup.run(spec)
        assert (err.value.step, err.value.errno) == ("namespaces", errno.ESRCH), spec.join


# regression test: Join of an exited container used to fail when the Join was built
async def test_join_built_after_exit_is_setup_error_at_run(sup: anyns.Supervisor) -> None:
    """A Join naming an exited container can be built; running it raises SetupError (ESRCH)."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        box.kill()
    spec = sh_spec("true", join=anyns.Join(net=box))
    with pytest.raises(anyns.SetupError) as err:
        await sup.run(spec)
    assert (err.value.step, err.value.errno) == ("namespaces", errno.ESRCH)


async def test_join_dead_unreaped_container_never_joins_the_host(sup: anyns.Supervisor) -> None:
    """Joining a container whose pid 1 just died fails with ESRCH; it never lands in the host's namespaces."""
    host_net = os.readlink("/proc/self/ns/net")
    landed = []
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            box = await nursery.start(partial(sup.run, sleeper(), check=False))
            spec = anyns.ContainerSpec(argv=["readlink", "/proc/self/ns/net"], join=anyns.Join(net=box))
            await kill_and_wait_dead(box)
            try:
                done = await sup.run(spec, capture_stdout=True)
            except anyns.SetupError as e:
                assert e.errno == errno.ESRCH, e
            else:
                landed.append(lines(done.stdout)[0] == host_net)
    assert landed == [], "a container joined a dead one's net (True: it got the host's)"


# regression test: namespaces of a zombie used to come back partial
async def test_namespaces_of_a_dead_process_is_never_partial(sup: anyns.Supervisor) -> None:
    """Namespaces of a process that has died are all its kinds or an error, never a partial mapping."""
    try:
        ids = zombie_namespaces()
    except ProcessLookupError:
        pass
    else:
        assert sorted(ids) == sorted(KINDS), ids
    async with trio.open_nursery() as nursery:
        for _ in range(6):
            box = await nursery.start(partial(sup.run, sleeper(), check=False))
            await kill_and_wait_dead(box)
            try:
                seen = dict(box.namespaces)
            except (anyns.AnynsError, ProcessLookupError):
                continue
            assert sorted(seen) == sorted(KINDS), seen


async def test_join_path_that_is_not_a_namespace_is_setup_error(sup: anyns.Supervisor,
                                                                tmp_path: pathlib.Path) -> None:
    """A regular file, a missing path or a namespace of the wrong kind as a Join source is a SetupError."""
    regular = tmp_path / "regular"
    regular.write_text("not a namespace")
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        wrong_kind = f"/proc/{box.pid}/ns/uts"
        for kind in ("net", "pid", "mnt", "ipc"):
            for source in (str(regular), wrong_kind):
                with pytest.raises(anyns.SetupError) as err:
                    await sup.run(sh_spec("true", join=anyns.Join(**{kind: source})))
                assert err.value.step == "namespaces", (kind, source)
                assert err.value.errno == errno.EINVAL, (kind, source)
        with pytest.raises(anyns.SetupError) as missing:
            await sup.run(sh_spec("true", join=anyns.Join(net=str(tmp_path / "missing"))))
        assert (missing.value.step, missing.value.errno) == ("namespaces", errno.ENOENT)
        assert box.returncode is None
        box.kill()


async def test_missing_join_path_cause_is_file_not_found(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """A Join path that does not exist is a SetupError caused by FileNotFoundError."""
    with pytest.raises(anyns.SetupError) as missing:
        await sup.run(sh_spec("true", join=anyns.Join(net=str(tmp_path / "missing"))))
    assert isinstance(missing.value.__cause__, FileNotFoundError)


# --------------------------------------------------------------------------- kept namespaces


async def test_kept_net_namespace_outlives_its_container(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """keep_namespace("net") keeps it joinable by path after the container exits; release() removes it."""
    path = tmp_path / "netns"
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        kept = box.keep_namespace("net", path)
        assert isinstance(kept, anyns.PersistedNamespace)
        assert (kept.kind, kept.path, kept.id) == ("net", str(path), box.namespaces["net"])
        assert kept.id.kind == "net"
        box.kill()
    assert box.returncode == -9
    assert path.exists() and str(path) in mount_points()

    async with trio.open_nursery() as nursery:
        joined = sleeper(join=anyns.Join(net=str(path)))
        server = await nursery.start(partial(sup.run, evolve(
            joined, argv=[PYTHON, "-I", "-c", SERVER]), stdout=anyns.PIPE, check=False))
        assert server.namespaces["net"] == kept.id
        [port] = await read_lines(server.stdout, 1)
        done = await sup.run(evolve(joined, argv=[PYTHON, "-I", "-c", PONG_CLIENT, port]), capture_stdout=True)
        assert lines(done.stdout) == ["pong"]
        server.kill()
    await close_streams(server)

    kept.release()
    assert not exists(path)
    assert str(path) not in mount_points()
    kept.release()  # idempotent
    with pytest.raises(anyns.SetupError):
        await sup.run(sh_spec("true", join=anyns.Join(net=str(path))))


async def test_persist_namespace_by_pid_as_context_manager(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """persist_namespace(pid or path, kind, path) keeps uts and mnt joinable; an existing file stays after release."""
    existing = tmp_path / "existing"
    existing.write_text("")
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(hostname="kept-uts", mounts=[anyns.Tmpfs("/data")]),
                                          check=False))
        await box.exec(["/bin/sh", "-c", "echo kept > /data/f"])
        with anyns.persist_namespace(box.pid, "uts", tmp_path / "uts") as uts, \
                anyns.persist_namespace(f"/proc/{box.pid}/ns/mnt", "mnt", existing) as mnt:
            assert (uts.id, mnt.id) == (box.namespaces["uts"], box.namespaces["mnt"])
            assert {uts.path, mnt.path} <= mount_points()
            box.kill()
            await box.wait()
            done = await sh(sup, "hostname", join=anyns.Join(uts=uts.path))
            assert lines(done.stdout) == ["kept-uts"]
            done = await sh(sup, "cat /data/f", join=anyns.Join(mnt=pathlib.Path(mnt.path)))
            assert lines(done.stdout) == ["kept"]
    assert not exists(str(tmp_path / "uts"))
    assert existing.exists()  # not created by persist_namespace: not removed either
    assert {str(tmp_path / "uts"), str(existing)}.isdisjoint(mount_points())


async def test_keep_namespace_errors(sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """Unknown kind → SpecError; a regular file or wrong-kind source → SetupError; nothing left behind."""
    regular = tmp_path / "regular"
    regular.write_text("x")
    target = tmp_path / "target"
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, sleeper(), check=False))
        with pytest.raises(anyns.SpecError):
            box.keep_namespace("bogus", target)
        with pytest.raises(anyns.SpecError):
            anyns.persist_namespace(box.pid, "network", target)
        with pytest.raises(anyns.SetupError):
            anyns.persist_namespace(str(regular), "net", target)
        with pytest.raises(anyns.SetupError):
            anyns.persist_namespace(f"/proc/{box.pid}/ns/uts", "net", target)
        with pytest.raises(anyns.SetupError):
            anyns.persist_namespace(box.pid, "net", tmp_path / "no-dir" / "target")
        assert not exists(target)
        assert str(target) not in mount_points()
        box.kill()
    with pytest.raises(anyns.AnynsError):
        box.keep_namespace("net", target)
    assert not exists(target)


async def test_kept_namespaces_released_when_supervisor_closes(tmp_path: pathlib.Path) -> None:
    """A namespace kept and never released is unmounted and removed when its supervisor closes."""
    paths = [tmp_path / "net", tmp_path / "ipc"]
    async with anyns.open_supervisor() as sup:
        async with trio.open_nursery() as nursery:
            box = await nursery.start(partial(sup.run, sleeper(), check=False))
            kept = [box.keep_namespace(p.name, p) for p in paths]
            box.kill()
        assert all(p.exists() for p in paths)
        assert {str(p) for p in paths} <= mount_points()
    assert not any(exists(str(p)) for p in paths)
    assert {str(p) for p in paths}.isdisjoint(mount_points())
    for each in kept:
        each.release()  # already released: no error
