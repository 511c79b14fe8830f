"""The command line: ``python -m anyns run``, ``demo`` and ``doctor``, as a user calls them."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest


def anyns(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m anyns ARGS`` and capture everything."""
    return subprocess.run([sys.executable, "-m", "anyns", *args], input=stdin, capture_output=True,
                          timeout=120, env=env, check=False)


def test_run_passes_stdio_and_exit_status() -> None:
    """run: stdin, stdout and stderr pass through; the exit status is the program's."""
    done = anyns("run", "--hostname", "clibox", "--", "sh", "-c", "hostname; cat; echo err >&2; exit 3",
                 stdin=b"from stdin\n")
    assert (done.returncode, done.stdout, done.stderr) == (3, b"clibox\nfrom stdin\n", b"err\n")


# Reopens its fds 0 and 1 through /proc/self/fd: reads back what fd 1 already holds (a file's content, or
# nothing from a pipe), opens it with O_TRUNC, writes into fd 0's file; reports on stderr, then prints "new".
REOPEN = """
import os
def reopen(n, flags):
    try:
        return os.open(f"/proc/self/fd/{n}", flags | os.O_NONBLOCK)
    except OSError as e:
        os.write(2, f"reopen {n}: {e}\\n".encode())
        return -1
fd = reopen(1, os.O_RDONLY)
if fd >= 0:
    try:
        os.write(2, b"read back: " + os.read(fd, 4096) + b"\\n")
    except BlockingIOError:
        os.write(2, b"read back nothing\\n")
    os.close(fd)
for n, flags in ((1, os.O_WRONLY | os.O_TRUNC), (0, os.O_WRONLY)):
    fd = reopen(n, flags)
    if fd >= 0:
        if n == 0:
            os.write(fd, b"overwritten")
        os.close(fd)
print("new")
"""


def test_run_stdio_are_pipes_the_container_cannot_reopen_as_files(tmp_path: pathlib.Path) -> None:
    """run: the output goes to the CLI's file through a pipe, so a reopen of /proc/self/fd/1 neither reads the
    file back nor truncates it, and one of /proc/self/fd/0 cannot write the file given as stdin."""
    log, given = tmp_path / "log", tmp_path / "stdin"
    log.write_bytes(b"the supervisor's log\n")
    given.write_bytes(b"input\n")
    with open(log, "ab") as out, open(given, "rb") as source:
        done = subprocess.run([sys.executable, "-m", "anyns", "run", "--", "python3", "-I", "-c", REOPEN],
                              stdin=source, stdout=out, stderr=subprocess.PIPE, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert b"supervisor" not in done.stderr, done.stderr
    assert log.read_bytes() == b"the supervisor's log\nnew\n"
    assert given.read_bytes() == b"input\n"


def test_run_signal_death_is_128_plus_n() -> None:
    """run: a program killed by signal N (here SIGSEGV, 11) exits the CLI with 128+N, as a shell reports it."""
    # A fault is forced even on pid 1, which ignores signals sent from inside its namespace.
    done = anyns("run", "--", "python3", "-c", "import ctypes; ctypes.string_at(0)")
    assert done.returncode == 128 + 11


def test_run_limits_put_the_program_in_its_own_cgroups() -> None:
    """run --memory/--pids/--cpus: the program is in leaves of anyns's cgroups (v2, and v1 where a controller is)."""
    done = anyns("run", "--memory", "64M", "--pids", "20", "--cpus", "0.5", "--", "cat", "/proc/self/cgroup")
    assert done.returncode == 0, done.stderr
    paths = {}
    for line in done.stdout.decode().splitlines():
        _id, controllers, path = line.split(":", 2)
        for name in controllers.split(",") or [""]:
            paths[name] = path
    for name in ("", "memory", "pids", "cpu"):
        if name in paths:
            assert "/anyns-" in paths[name], (name, paths)


def test_run_memory_limit_oom_is_reported() -> None:
    """run --memory: past the limit the OOM killer ends it; the CLI exits 137 and says why on stderr."""
    done = anyns("run", "--memory", "16M", "--", "python3", "-c", "x = bytearray(200 << 20)")
    assert done.returncode == 128 + 9
    assert b"OOM killer (memory limit 16M)" in done.stderr


def test_run_no_init_makes_the_program_pid_1() -> None:
    """run runs the program as pid 2 under the init; --no-init as pid 1."""
    assert anyns("run", "--", "sh", "-c", "echo $$").stdout == b"2\n"
    assert anyns("run", "--no-init", "--", "sh", "-c", "echo $$").stdout == b"1\n"


def test_run_userns_user_and_map() -> None:
    """run --userns --user 1000:1001 and --map: the identity and the map inside."""
    done = anyns("run", "--userns", "--user", "1000:1001", "--", "sh", "-c", "id -u; id -g; cat /proc/self/uid_map")
    out = done.stdout.decode().split("\n")
    assert (done.returncode, out[0], out[1], out[2].split()) == (0, "1000", "1001", ["0", "100000", "65536"])
    mapped = anyns("run", "--map", "0:200000:1000", "--", "cat", "/proc/self/gid_map")
    assert mapped.stdout.split() == [b"0", b"200000", b"1000"]


def test_run_capabilities_and_seccomp_flags() -> None:
    """--cap-drop ALL --cap-add net_admin leaves exactly CAP_NET_ADMIN; --seccomp none turns the filter off."""
    caps = anyns("run", "--cap-drop", "ALL", "--cap-add", "net_admin", "--", "grep", "CapEff", "/proc/self/status")
    assert caps.stdout.split()[-1] == b"0000000000001000"
    assert anyns("run", "--", "grep", "Seccomp:", "/proc/self/status").stdout.split()[-1] == b"2"
    assert anyns("run", "--seccomp", "none", "--", "grep", "Seccomp:", "/proc/self/status").stdout.split()[-1] == b"0"
    bad = anyns("run", "--cap-add", "fly", "--", "true")
    assert bad.returncode == 125 and b"CAP_FLY" in bad.stderr


def test_run_bad_memory_size_is_a_one_line_error() -> None:
    """run --memory 10X: a spec error, one line, exit status 125 (like bwrap/docker for their own errors)."""
    done = anyns("run", "--memory", "10X", "--", "true")
    assert done.returncode == 125
    assert done.stderr.decode().count("\n") == 1 and "limits.memory" in done.stderr.decode()


@pytest.mark.parametrize(
    ("argv", "status", "start"),
    [
        (["--", "/no/such/program"], 127, "anyns: exec: execve '/no/such/program' failed"),
        (["--", "/etc/passwd"], 126, "anyns: exec: execve '/etc/passwd' failed"),
        (["--rootfs", "/no/such/root", "--", "true"], 125, "anyns: rootfs: open_tree '/no/such/root' failed"),
        (["--bind", "/no/such/source:/x", "--", "true"], 125, "anyns: mounts: open_tree '/no/such/source' failed"),
    ],
)
def test_run_errors_are_one_line_with_a_status(argv: list[str], status: int, start: str) -> None:
    """run: a setup failure is one line on stderr, naming the step and the path, with 125/126/127."""
    done = anyns("run", *argv)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == status
    assert len(lines) == 1 and lines[0].startswith(start), lines
    assert "hint:" in lines[0]


def test_run_environment_is_only_what_is_given() -> None:
    """run: the environment is PATH plus --env, never the caller's."""
    env = {**os.environ, "ANYNS_CLI_SECRET": "leak"}
    done = anyns("run", "--env", "GREETING=hi", "--", "env", env=env)
    assert done.returncode == 0
    assert sorted(done.stdout.decode().splitlines()) == [
        "GREETING=hi", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]


def test_run_mounts(tmp_path: pathlib.Path) -> None:
    """run: --bind, --ro-bind and --tmpfs mount what they say, where they say."""
    (tmp_path / "rw").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "file").write_text("read-only\n")
    script = ("echo written > /rw/out; cat /ro/file; touch /ro/x 2>/dev/null || echo ro-refused; "
              "touch /scratch/y && echo tmpfs-ok")
    done = anyns("run", "--bind", f"{tmp_path / 'rw'}:/rw", "--ro-bind", f"{tmp_path / 'ro'}:/ro",
                 "--tmpfs", "/scratch", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["read-only", "ro-refused", "tmpfs-ok"]
    assert (tmp_path / "rw" / "out").read_text() == "written\n"
    assert not (tmp_path / "ro" / "x").exists()


def test_run_without_a_command_is_an_error() -> None:
    """run: no command after -- is a one-line error, exit 125."""
    done = anyns("run", "--")
    assert done.returncode == 125
    assert done.stderr.decode().startswith("anyns: run: no command given")


def test_demo_reports_isolation() -> None:
    """demo: every container started, ran under its own init, had its own hostname and namespaces."""
    done = anyns("demo", "--count", "40", "--concurrency", "8")
    text = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert "containers started and reaped                       40 of 40" in text
    for line in ("ran as pid 2 under their own init (pid 1)", "saw their own hostname",
                 "ids all differ from the host's"):
        assert f"{line}" in text and "40 of 40" in text.split(line, 1)[1].splitlines()[0]


def test_doctor_finds_a_working_host() -> None:
    """doctor: on the CI machine every check passes and a real container runs."""
    done = anyns("doctor")
    text = done.stdout.decode()
    assert done.returncode == 0, text
    assert "FAIL" not in text
    assert any(line.split()[:2] == ["ok", "container"] for line in text.splitlines())
    # the list: features, cgroup layout and delegation, user-namespace settings, overlayfs
    for words in ("clone3", "CLONE_INTO_CGROUP", "pidfd", "mount_setattr", "idmapped mounts", "time namespaces",
                  "as root, anyns makes its own", "user.max_user_namespaces=", "overlayfs"):
        assert words in text, words
    assert any(layout in text for layout in ("unified v2", "hybrid v1 + v2", "v1 only"))
    # and, plainly, what will work: as root here, containers, limits and bridges at least
    works = next(line for line in text.splitlines() if line.startswith("Will work here: "))
    for feature in ("containers", "limits", "Bridge networking"):
        assert feature in works, works


def test_doctor_says_what_a_rootless_user_cannot_do() -> None:
    """doctor's summary, pure: a finding that is not ok puts the features that need it under "will not work",
    with its reason; the others still work."""
    from anyns._doctor import Finding, summary

    findings = [Finding(name, "ok", "fine") for name in ("kernel", "pidfd", "container", "seccomp", "cgroups",
                                                          "user namespaces", "/proc", "overlayfs", "mount API")]
    findings.append(Finding("privileges", "warn", "uid 1000 without CAP_SYS_ADMIN"))
    works, not_here = summary(findings)
    assert not_here == ["Bridge networking: privileges: uid 1000 without CAP_SYS_ADMIN"]
    assert "containers (namespaces, pivot_root, /proc)" in works


def test_run_json_status() -> None:
    """--json-status: a JSON line with the host pid and namespace ids at start, one with the exit status."""
    import json

    # The program outlives the moment the supervisor reads its namespaces.
    done = anyns("run", "--json-status", "--hostname", "js", "--", "sh", "-c", "sleep 1; exit 6")
    records = [json.loads(line) for line in done.stderr.decode().splitlines()]

    assert done.returncode == 6
    assert records[0]["ns-pid"] == 1 and records[0]["child-pid"] > 1
    assert records[0]["namespaces"]["uts"] != os.readlink("/proc/self/ns/uts")
    assert records[-1] == {"exit-code": 6}


def test_run_overlay_and_net(tmp_path: pathlib.Path) -> None:
    """--overlay: a copy-on-write root that leaves the lower directory alone; --net host shares ours."""
    from anyns.testing import busybox_rootfs

    lower = busybox_rootfs(tmp_path / "lower")
    before = sorted(os.listdir(lower))
    done = anyns("run", "--overlay", lower, "--env", "PATH=/bin", "--", "sh", "-c", "echo hi > /new; cat /new")
    assert (done.returncode, done.stdout) == (0, b"hi\n"), done.stderr
    assert sorted(os.listdir(lower)) == before

    shared = anyns("run", "--net", "host", "--", "readlink", "/proc/self/ns/net")
    assert shared.stdout.decode().strip() == os.readlink("/proc/self/ns/net")
    bad = anyns("run", "--net", "nonsense", "--", "true")
    assert bad.returncode == 125 and bad.stderr.decode().startswith("anyns: --net 'nonsense'")


def test_run_rlimit() -> None:
    """run --rlimit NAME=SOFT[:HARD] sets the program's limits; a malformed or unknown one is a clear error."""
    done = anyns("run", "--rlimit", "nofile=64:128", "--rlimit", "core=unlimited", "--",
                 "grep", "-E", "^Max (open files|core file size)", "/proc/self/limits")
    assert done.returncode == 0, done.stderr
    rows = {line[:25].strip(): line[25:].split()[:2] for line in done.stdout.decode().splitlines()}
    assert rows == {"Max core file size": ["unlimited", "unlimited"], "Max open files": ["64", "128"]}
    bad = anyns("run", "--rlimit", "nofile", "--", "true")
    assert bad.returncode == 125 and b"--rlimit 'nofile': expected NAME=SOFT[:HARD]" in bad.stderr
    unknown = anyns("run", "--rlimit", "bogus=1", "--", "true")
    assert unknown.returncode == 125 and b"unknown resource 'bogus'" in unknown.stderr
