"""Hardening defaults (capabilities, no_new_privs, seccomp, masked and read-only paths, a new session), seen inside."""

from __future__ import annotations

import os
from functools import partial

import pytest
import trio
from _util import PYTHON, exists, lines, read, sh

import anyns

DOCKER_CAPS = 0xA80425FB  # moby's default set: chown, dac_override, fowner, fsetid, kill, setgid, setuid, setpcap,
#                           net_bind_service, net_raw, sys_chroot, mknod, audit_write, setfcap


def _status(stdout: bytes | None) -> dict[str, str]:
    """The ``Key: value`` lines of /proc/self/status."""
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines(stdout))}


STATUS = "cat /proc/self/status"


async def test_default_capabilities_are_dockers(sup: anyns.Supervisor) -> None:
    """Effective, permitted and bounding sets are Docker's default; no inheritable or ambient ones."""
    status = _status((await sh(sup, STATUS, check=True)).stdout)
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[key], 16) == DOCKER_CAPS, key
    assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0
    names = sum(1 << anyns._security_defaults.CAPABILITIES[n] for n in anyns.DEFAULT_CAPABILITIES)
    assert names == DOCKER_CAPS


async def test_all_capabilities_and_a_chosen_set(sup: anyns.Supervisor) -> None:
    """ALL_CAPABILITIES keeps what the supervisor has; a chosen set ('net_admin' spelled any way) is exactly that."""
    mine = int(_status(read("/proc/self/status"))["CapBnd"], 16)
    everything = _status((await sh(sup, STATUS, check=True, capabilities=anyns.ALL_CAPABILITIES)).stdout)
    assert int(everything["CapEff"], 16) == mine
    chosen = _status((await sh(sup, STATUS, check=True, capabilities={"net_admin", "CAP_KILL"})).stdout)
    assert int(chosen["CapEff"], 16) == int(chosen["CapBnd"], 16) == (1 << 12) | (1 << 5)


async def test_a_non_root_user_has_no_capabilities(sup: anyns.Supervisor) -> None:
    """user=User(1000, 1000): effective and permitted sets are empty; the bounding set is still cut."""
    status = _status((await sh(sup, STATUS, check=True, user=anyns.User(1000, 1000))).stdout)
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
    assert int(status["CapBnd"], 16) == DOCKER_CAPS
    assert status["Uid"].split()[0] == "1000"


async def test_no_new_privs_and_seccomp_are_on_and_can_be_turned_off(sup: anyns.Supervisor) -> None:
    """NoNewPrivs 1 and Seccomp 2 (filter) by default; no_new_privileges=False, seccomp=None turn them off."""
    on = _status((await sh(sup, STATUS, check=True)).stdout)
    assert (on["NoNewPrivs"], on["Seccomp"]) == ("1", "2")
    off = _status((await sh(sup, STATUS, check=True, no_new_privileges=False, seccomp=None)).stdout)
    assert (off["NoNewPrivs"], off["Seccomp"]) == ("0", "0")


SYSCALL = """
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for name, number, args in {calls}:
    ret = libc.syscall(number, *args)
    print(name, 'ok' if ret >= 0 else errno.errorcode[ctypes.get_errno()])
"""
# x86_64 numbers: keyctl(KEYCTL_GET_KEYRING_ID=0, KEY_SPEC_SESSION_KEYRING=-3, 0), bpf(0, NULL, 0),
# unshare(CLONE_NEWUTS), getpid() as a control that must work
CALLS = [("keyctl", 250, (0, -3, 0)), ("bpf", 321, (0, 0, 0)), ("unshare", 272, (0x04000000,)),
         ("getpid", 39, ())]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are x86_64's")
async def test_the_filter_refuses_what_the_profile_denies(sup: anyns.Supervisor) -> None:
    """keyctl and bpf fail with EPERM; unshare too without CAP_SYS_ADMIN; getpid works; without a filter keyctl runs."""
    code = SYSCALL.format(calls=CALLS)
    done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", code]), capture_stdout=True)
    assert lines(done.stdout) == ["keyctl EPERM", "bpf EPERM", "unshare EPERM", "getpid ok"]
    admin = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", code], capabilities=anyns.ALL_CAPABILITIES),
                          capture_stdout=True)
    assert lines(admin.stdout)[2:] == ["unshare ok", "getpid ok"]  # seccomp follows the capabilities
    unfiltered = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", code], seccomp=None),
                               capture_stdout=True)
    assert lines(unfiltered.stdout)[0] != "keyctl EPERM"
    custom = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", code],
                                               seccomp=anyns.Seccomp(deny={"getpid"}, errno=38)),
                           capture_stdout=True)
    assert lines(custom.stdout)[-1] == "getpid ENOSYS"


TIOCSTI = """
import fcntl, sys, termios
try:
    fcntl.ioctl(0, termios.TIOCSTI, b'x')
    print('injected')
except OSError as e:
    print('refused', e.errno)
"""


async def test_tiocsti_is_refused_even_on_its_own_terminal(sup: anyns.Supervisor) -> None:
    """The TIOCSTI ioctl (typing into a terminal) fails with EPERM, here on the container's own terminal."""
    done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", TIOCSTI], tty=True), capture_stdout=True)
    assert b"refused 1" in (done.stdout or b"")


def _read_only_mounts(mountinfo: list[str]) -> set[str]:
    """Mount points of /proc/self/mountinfo lines whose per-mount options say ro."""
    return {line.split()[4] for line in mountinfo if "ro" in line.split()[5].split(",")}


async def test_masked_and_read_only_proc_paths(sup: anyns.Supervisor) -> None:
    """/proc/timer_list and /proc/sched_debug read empty, /proc/acpi (if any) is empty; /proc/sys, sysrq-trigger,
    irq, bus and fs are read-only mounts. The only write tried is to the container's own hostname."""
    script = ("for f in /proc/timer_list /proc/sched_debug; do test -e $f && echo $f $(wc -c < $f); done; "
              "test -d /proc/acpi && echo acpi $(ls -A /proc/acpi | wc -l); "
              "echo renamed > /proc/sys/kernel/hostname 2>/dev/null && echo sys-writable || echo sys-read-only; "
              "cat /proc/self/mountinfo")
    out = lines((await sh(sup, script, hostname="hardened")).stdout)
    assert "sys-read-only" in out
    for line in out:
        if line.startswith(("/proc/", "acpi ")):
            assert line.split()[-1] == "0", line
    read_only = _read_only_mounts([line for line in out if line[:1].isdigit()])
    present = {p for p in anyns.DEFAULT_READONLY_PATHS if exists(p)}  # this kernel's (no sysrq here)
    assert "/proc/sys" in present and present <= read_only
    plain = lines((await sh(sup, script, hostname="hardened", masked_paths=(), readonly_paths=())).stdout)
    assert "sys-writable" in plain  # the container's own UTS namespace: nothing outside changes
    assert not {"/proc/sys", "/proc/sysrq-trigger"} & _read_only_mounts([line for line in plain if line[:1].isdigit()])


async def test_the_program_leads_a_session_of_its_own(sup: anyns.Supervisor) -> None:
    """setsid: the session is the container's (led by its pid 1), with no controlling terminal."""
    done = await sh(sup, "cut -d' ' -f6,7 /proc/self/stat; tty || true", check=True)
    session, tty_nr = lines(done.stdout)[0].split()
    assert (session, tty_nr) == ("1", "0")  # led by the init, pid 1; no terminal
    assert lines(done.stdout)[1] == "not a tty"


async def test_exec_gets_the_same_hardening(sup: anyns.Supervisor) -> None:
    """A process exec'd into a container has the container's capabilities, no_new_privs and filter."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, anyns.ContainerSpec(argv=["sleep", "1000"]), check=False))
        status = _status((await box.exec(["cat", "/proc/self/status"], capture_stdout=True)).stdout)
        assert int(status["CapEff"], 16) == DOCKER_CAPS
        assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")
        box.kill()


def test_hardening_fields_are_validated() -> None:
    """Unknown capabilities, non-boolean flags, a bad seccomp errno or path lists that are strings are SpecErrors."""
    for fields in ({"capabilities": {"CAP_FLY"}}, {"capabilities": "CAP_KILL"}, {"no_new_privileges": 1},
                   {"seccomp": "default"}, {"masked_paths": "/proc/kcore"}, {"readonly_paths": ["relative"]},
                   {"new_session": "yes"}):
        with pytest.raises(anyns.SpecError):
            anyns.ContainerSpec(argv=["true"], **fields)  # type: ignore[arg-type]
    with pytest.raises(anyns.SpecError):
        anyns.Seccomp(errno=0)
    with pytest.raises(anyns.SpecError):
        anyns.Seccomp(deny={"not a name"})


# 32-bit (i386) system calls from a 64-bit process: `int 0x80` takes the i386 table, and seccomp sees
# AUDIT_ARCH_I386, as for a 32-bit program. Machine code: push rbx; mov eax, NR; mov ebx, A1;
# mov ecx, A2; mov edx, A3; int 0x80; pop rbx; ret (rbx is callee-saved).
I386 = """
import ctypes, mmap, os, struct
def i386(nr, a1=0, a2=0, a3=0):
    code = (b'\\x53' + b'\\xb8' + struct.pack('<I', nr) + b'\\xbb' + struct.pack('<I', a1 & 0xFFFFFFFF)
            + b'\\xb9' + struct.pack('<I', a2 & 0xFFFFFFFF) + b'\\xba' + struct.pack('<I', a3 & 0xFFFFFFFF)
            + b'\\xcd\\x80\\x5b\\xc3')
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    return ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
print('getpid', i386(20) == os.getpid(), flush=True)
print('keyctl', i386(288, 0, -3, 0), flush=True)  # KEYCTL_GET_KEYRING_ID of the session keyring
"""


async def test_the_filter_covers_32_bit_system_calls(sup: anyns.Supervisor) -> None:
    """i386 system calls (as a 32-bit program makes them) are filtered like native ones: getpid works and
    keyctl fails with EPERM; they are not refused wholesale (SIGSYS), nor let through unfiltered."""
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the i386 calls are made with x86 machine code")
    host = await trio.run_process([PYTHON, "-I", "-c", I386], capture_stdout=True, capture_stderr=True, check=False)
    if host.returncode != 0 or not host.stdout.startswith(b"getpid True"):
        pytest.skip(f"this kernel does not run i386 system calls (ia32 emulation): {host.returncode}")
    done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", I386]), capture_stdout=True,
                         capture_stderr=True, check=False)
    assert (done.returncode, lines(done.stdout)) == (0, ["getpid True", "keyctl -1"]), done.stderr
    unfiltered = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", I386], seccomp=None),
                               capture_stdout=True)
    assert lines(unfiltered.stdout)[1] != "keyctl -1"  # the filter, not the kernel, refused it
