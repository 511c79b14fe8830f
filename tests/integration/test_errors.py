"""Setup failures: typed errors with the right step, errno, cause; the supervisor survives."""

from __future__ import annotations

import errno
import pathlib

import pytest
from _util import exists, sh

import anyns


async def _still_works(sup: anyns.Supervisor) -> None:
    done = await sh(sup, "echo ok")
    assert done.stdout == b"ok\n"


async def test_missing_program_is_exec_error(sup: anyns.Supervisor) -> None:
    """A missing argv[0] raises ExecError caused by FileNotFoundError; the next spawn works."""
    with pytest.raises(anyns.ExecError) as info:
        await sup.run(anyns.ContainerSpec(argv=["/no/such/program", "arg"]))
    err = info.value
    assert isinstance(err, anyns.SetupError) and isinstance(err, anyns.AnynsError)
    assert (err.step, err.syscall, err.path, err.errno) == (
        "exec", "execve", "/no/such/program", errno.ENOENT)
    assert isinstance(err.__cause__, FileNotFoundError)
    assert err.hint and "root filesystem" in err.hint
    assert str(err).startswith("exec: execve '/no/such/program' failed: [Errno 2]")
    await _still_works(sup)


async def test_program_not_in_path_is_exec_error(sup: anyns.Supervisor) -> None:
    """A bare name found in no PATH entry raises ExecError/FileNotFoundError."""
    spec = anyns.ContainerSpec(argv=["anyns-no-such-tool"], env={"PATH": "/usr/bin:/nowhere"})
    with pytest.raises(anyns.ExecError) as info:
        await sup.run(spec)
    assert info.value.errno == errno.ENOENT
    assert isinstance(info.value.__cause__, FileNotFoundError)
    await _still_works(sup)


async def test_path_search_finds_later_entry(sup: anyns.Supervisor) -> None:
    """argv[0] without a slash is searched in the spec's PATH, skipping missing directories."""
    spec = anyns.ContainerSpec(argv=["echo", "found"], env={"PATH": "/nowhere:/tmp:/usr/bin"})
    done = await sup.run(spec, capture_stdout=True)
    assert done.stdout == b"found\n"


async def test_non_executable_file_is_exec_error(sup: anyns.Supervisor,
                                                 tmp_path: pathlib.Path) -> None:
    """A file without execute permission raises ExecError caused by PermissionError."""
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    spec = anyns.ContainerSpec(argv=["/opt/script"],
                               mounts=[anyns.Bind(str(script), "/opt/script", readonly=True)])
    with pytest.raises(anyns.ExecError) as info:
        await sup.run(spec)
    assert (info.value.step, info.value.errno) == ("exec", errno.EACCES)
    assert isinstance(info.value.__cause__, PermissionError)
    assert info.value.hint and "not executable" in info.value.hint
    await _still_works(sup)


async def test_directory_as_program_is_exec_error(sup: anyns.Supervisor) -> None:
    """Executing a directory raises ExecError caused by PermissionError (EACCES)."""
    with pytest.raises(anyns.ExecError) as info:
        await sup.run(anyns.ContainerSpec(argv=["/usr"]))
    assert isinstance(info.value.__cause__, PermissionError)


async def test_missing_dir_rootfs_is_setup_error(sup: anyns.Supervisor,
                                                 tmp_path: pathlib.Path) -> None:
    """A DirRootfs that does not exist raises SetupError (step rootfs, FileNotFoundError)."""
    missing = str(tmp_path / "no-such-root")
    with pytest.raises(anyns.SetupError) as info:
        await sup.run(anyns.ContainerSpec(argv=["/bin/sh"], rootfs=anyns.DirRootfs(missing)))
    err = info.value
    assert not isinstance(err, anyns.ExecError)
    assert (err.step, err.path, err.errno) == ("rootfs", missing, errno.ENOENT)
    assert isinstance(err.__cause__, FileNotFoundError)
    assert err.hint == "the root filesystem directory does not exist"
    assert missing in str(err)
    assert not exists(missing)
    await _still_works(sup)


async def test_missing_cwd_is_setup_error(sup: anyns.Supervisor) -> None:
    """A cwd that does not exist inside raises SetupError naming it (step process, chdir)."""
    with pytest.raises(anyns.SetupError) as info:
        await sup.run(anyns.ContainerSpec(argv=["true"], cwd="/no/such/dir"))
    err = info.value
    assert (err.step, err.syscall, err.path) == ("process", "chdir", "/no/such/dir")
    assert isinstance(err.__cause__, FileNotFoundError)
    await _still_works(sup)


async def test_missing_bind_source_is_setup_error(sup: anyns.Supervisor,
                                                  tmp_path: pathlib.Path) -> None:
    """A Bind whose host source is missing raises SetupError at the mounts step."""
    spec = anyns.ContainerSpec(argv=["true"],
                               mounts=[anyns.Bind(str(tmp_path / "missing"), "/mnt/x")])
    with pytest.raises(anyns.SetupError) as info:
        await sup.run(spec)
    assert info.value.step == "mounts"
    assert isinstance(info.value.__cause__, FileNotFoundError)
    await _still_works(sup)


async def test_many_failures_do_not_poison_the_supervisor(sup: anyns.Supervisor) -> None:
    """Failed setups alternate with good runs: each gets its own outcome."""
    bad = anyns.ContainerSpec(argv=["/no/such/program"])
    for i in range(20):
        with pytest.raises(anyns.ExecError):
            await sup.run(bad)
        done = await sh(sup, f"echo {i}")
        assert done.stdout == f"{i}\n".encode()
