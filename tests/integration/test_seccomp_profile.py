"""The seccomp allow-list (Docker's default profile), seen from inside containers.

Refusals: io_uring, socket(AF_VSOCK) and socket(AF_ALG) (also with high bits
in the family), kcmp, kexec_load, bpf, userfaultfd say EPERM; a number no
table knows says ENOSYS, and so does clone3 (libc falls back to clone).
Capabilities open what Docker's profile opens with them. And the positive
control: Python's runtime (multiprocessing, sqlite3, ssl, asyncio,
subprocess, threading), a shell and busybox applets work in a default
container.

Each refusal is checked against a run where only the filter differs, so a
refusal by the kernel (a missing capability, a disabled feature) cannot pass
for the filter's.
"""

from __future__ import annotations

import os
import pathlib
import platform
import shutil
import textwrap
from collections.abc import Callable

import pytest
import trio
from _util import PYTHON, lines, sh

import anyns

NUMBERS = {
    "x86_64": {"getpid": 39, "ioctl": 16, "socket": 41, "kcmp": 312, "kexec_load": 246, "bpf": 321,
               "userfaultfd": 323, "io_uring_setup": 425, "clone3": 435, "mount": 165, "personality": 135},
    "aarch64": {"getpid": 172, "ioctl": 29, "socket": 198, "kcmp": 272, "kexec_load": 104, "bpf": 280,
                "userfaultfd": 282, "io_uring_setup": 425, "clone3": 435, "mount": 40, "personality": 92},
}
MACHINE = platform.machine()
needs_numbers = pytest.mark.skipif(MACHINE not in NUMBERS, reason=f"no syscall numbers for {MACHINE} here")

#: prints "<label> ok" or "<label> <ERRNO>" per call; every argument is passed as a full 64-bit register
PROBE = """
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {numbers}
params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
MOUNT = [ctypes.create_string_buffer(s) for s in (b'none', b'/tmp', b'tmpfs')]  # source, target, type: kept alive
pid = os.getpid()
CALLS = {{
    'getpid': ('getpid', ()),
    'io_uring_setup': ('io_uring_setup', (1, ctypes.addressof(params))),
    'socket_vsock': ('socket', (40, 1, 0)),  # AF_VSOCK, SOCK_STREAM
    'socket_vsock_high': ('socket', (40 | 1 << 32, 1, 0)),
    'socket_alg': ('socket', (38, 5, 0)),  # AF_ALG, SOCK_SEQPACKET
    'socket_inet': ('socket', (2, 1, 0)),
    'socket_unix_high': ('socket', (1 | 1 << 32, 1, 0)),  # AF_UNIX with junk above: the kernel reads an int
    'kcmp': ('kcmp', (pid, pid, 1, 0, 0)),  # KCMP_VM of ourselves: 0
    'kexec_load': ('kexec_load', (0, 1000, 0, 0x100)),  # too many segments, bad flags: EINVAL, never a load
    'bpf': ('bpf', (0, 0, 0)),
    'userfaultfd': ('userfaultfd', (0,)),
    'unknown': (1000, ()),
    'clone3': ('clone3', (0, 0)),
    'mount': ('mount', (*map(ctypes.addressof, MOUNT), 0, 0)),
    'personality_query': ('personality', (0xFFFFFFFF,)),
}}
for label in sys.argv[1:]:
    name, args = CALLS[label]
    number = NR[name] if isinstance(name, str) else name
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(number), *(ctypes.c_ulong(a) for a in args))
    print(label, 'ok' if ret >= 0 else errno.errorcode[ctypes.get_errno()], flush=True)
"""


async def probe(sup: anyns.Supervisor, labels: list[str], **fields: object) -> dict[str, str]:
    """Run PROBE's ``labels`` in a container with ``fields``; label -> 'ok' or the errno name."""
    code = PROBE.format(numbers=NUMBERS[MACHINE])
    done = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", code, *labels], **fields),  # type: ignore[arg-type]
                         capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr
    return dict(line.split() for line in lines(done.stdout))


async def on_host(labels: list[str]) -> dict[str, str]:
    code = PROBE.format(numbers=NUMBERS[MACHINE])
    done = await trio.run_process([PYTHON, "-I", "-c", code, *labels], capture_stdout=True)
    return dict(line.split() for line in lines(done.stdout))


@needs_numbers
async def test_refused_with_eperm_unknown_with_enosys(sup: anyns.Supervisor) -> None:
    """Default container: io_uring_setup, socket(AF_VSOCK) (also with high bits), socket(AF_ALG), kcmp,
    kexec_load, bpf, userfaultfd fail with EPERM; syscall 1000 and clone3 with ENOSYS; getpid, AF_INET
    and AF_UNIX sockets (also with junk above the int) work."""
    labels = ["getpid", "io_uring_setup", "socket_vsock", "socket_vsock_high", "socket_alg", "socket_inet",
              "socket_unix_high", "kcmp", "kexec_load", "bpf", "userfaultfd", "unknown", "clone3"]
    got = await probe(sup, labels)
    assert got == {"getpid": "ok", "io_uring_setup": "EPERM", "socket_vsock": "EPERM",
                   "socket_vsock_high": "EPERM", "socket_alg": "EPERM", "socket_inet": "ok",
                   "socket_unix_high": "ok", "kcmp": "EPERM", "kexec_load": "EPERM", "bpf": "EPERM",
                   "userfaultfd": "EPERM", "unknown": "ENOSYS", "clone3": "ENOSYS"}


@needs_numbers
async def test_the_refusals_are_the_filters(sup: anyns.Supervisor) -> None:
    """With every capability (so the kernel itself would let them through), the filter still refuses
    io_uring_setup, kexec_load, userfaultfd, socket(AF_ALG) and socket(AF_VSOCK); without the filter, same
    capabilities, the kernel answers instead (io_uring_setup gives an fd unless the host disables
    io_uring, kexec_load says EINVAL: too many segments, or ENOSYS without kexec)."""
    labels = ["io_uring_setup", "kexec_load", "socket_alg", "userfaultfd"]
    filtered = await probe(sup, [*labels, "socket_vsock"], capabilities=anyns.ALL_CAPABILITIES)
    assert filtered == dict.fromkeys([*labels, "socket_vsock"], "EPERM")
    unfiltered = await probe(sup, labels, capabilities=anyns.ALL_CAPABILITIES, seccomp=None)
    assert unfiltered["kexec_load"] in ("EINVAL", "ENOSYS")  # ENOSYS: a kernel without kexec
    assert unfiltered["userfaultfd"] == "ok" and unfiltered["socket_alg"] != "EPERM"
    host = await on_host(["io_uring_setup"])
    if host["io_uring_setup"] == "ok":  # kernel.io_uring_disabled=0
        assert unfiltered["io_uring_setup"] == "ok"


@needs_numbers
async def test_capabilities_open_what_dockers_profile_opens(sup: anyns.Supervisor) -> None:
    """CAP_SYS_PTRACE allows kcmp; CAP_SYS_ADMIN allows mount (here a tmpfs on the container's /tmp)
    and clone3 (which then fails on its NULL argument, not ENOSYS); without them both say EPERM."""
    plain = await probe(sup, ["kcmp", "mount", "clone3"])
    assert plain == {"kcmp": "EPERM", "mount": "EPERM", "clone3": "ENOSYS"}
    ptrace = await probe(sup, ["kcmp"], capabilities=anyns.DEFAULT_CAPABILITIES | {"CAP_SYS_PTRACE"})
    assert ptrace == {"kcmp": "ok"}
    admin = await probe(sup, ["mount", "clone3", "kcmp"], capabilities=anyns.DEFAULT_CAPABILITIES | {"CAP_SYS_ADMIN"})
    assert admin["mount"] == "ok" and admin["clone3"] not in ("ENOSYS", "EPERM") and admin["kcmp"] == "EPERM"


@needs_numbers
async def test_seccomp_allow_and_deny_adjust_the_profile(sup: anyns.Supervisor) -> None:
    """Seccomp(allow={"kcmp"}) lets kcmp run without CAP_SYS_PTRACE; Seccomp(deny=DEFAULT_DENIED | {getpid})
    refuses getpid, with the errno asked for."""
    assert await probe(sup, ["kcmp"], seccomp=anyns.Seccomp(allow={"kcmp"})) == {"kcmp": "ok"}
    denied = await probe(sup, ["getpid", "bpf"], seccomp=anyns.Seccomp(deny=anyns.DEFAULT_DENIED | {"getpid"},
                                                                       errno=13))
    assert denied == {"getpid": "EACCES", "bpf": "EACCES"}


TIOCSTI = """
import ctypes, errno, fcntl, os, struct, termios
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
char = ctypes.c_char(b'x')
for label, request in (('plain', termios.TIOCSTI), ('high', termios.TIOCSTI | 1 << 32),
                       ('linux', 0x541C | 1 << 32)):
    ret = libc.syscall(ctypes.c_long({ioctl}), ctypes.c_ulong(0), ctypes.c_ulong(request), ctypes.byref(char))
    print(label, 'ok' if ret >= 0 else errno.errorcode[ctypes.get_errno()], flush=True)
size = fcntl.ioctl(0, termios.TIOCGWINSZ, b'\\0' * 8)
print('winsz', struct.unpack('HHHH', size)[:2], flush=True)
"""


@needs_numbers
async def test_tiocsti_is_refused_also_with_high_bits(sup: anyns.Supervisor) -> None:
    """ioctl(TIOCSTI) on the container's own terminal is refused with EPERM, also as TIOCSTI | 1 << 32 (the
    kernel reads an unsigned int); TIOCLINUX with high bits too; TIOCGWINSZ works. With every capability
    (the kernel then allows TIOCSTI) and no filter, the same calls get through: the filter refused them."""
    code = TIOCSTI.format(ioctl=NUMBERS[MACHINE]["ioctl"])
    spec = anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", code], tty=True, tty_size=(24, 80),
                               capabilities=anyns.ALL_CAPABILITIES)
    done = await sup.run(spec, capture_stdout=True, check=False)
    out = (done.stdout or b"").decode().replace("\r", "").splitlines()
    assert out[:3] == ["plain EPERM", "high EPERM", "linux EPERM"], out
    assert out[3] == "winsz (24, 80)"
    unfiltered = await sup.run(anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", code], tty=True, seccomp=None,
                                                   capabilities=anyns.ALL_CAPABILITIES),
                               capture_stdout=True, check=False)
    out = (unfiltered.stdout or b"").decode().replace("\r", "").splitlines()
    assert out[0].endswith("plain ok") and out[1].endswith("high ok"), out  # after the echo of the 'x' typed


RUNTIME = r"""
import asyncio, concurrent.futures, multiprocessing, os, shutil, signal, socket, sqlite3, ssl, subprocess
import sys, tempfile, threading

def square(x):
    return x * x

def check(name, fn):
    try:
        fn()
    except BaseException as e:
        print(name, 'FAILED', repr(e), flush=True)
    else:
        print(name, 'ok', flush=True)

def use_multiprocessing():
    with multiprocessing.get_context('fork').Pool(2) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
    spawned = multiprocessing.get_context('spawn').Process(target=os.getpid)  # -c code: pickle a builtin
    spawned.start(); spawned.join()
    assert spawned.exitcode == 0
    queue = multiprocessing.Queue(); queue.put(41); assert queue.get(timeout=10) == 41

def use_sqlite():
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(os.path.join(d, 'x.db'))
        db.execute('pragma journal_mode=wal')
        db.execute('create table t (x)'); db.executemany('insert into t values (?)', [(i,) for i in range(100)])
        db.commit()
        assert db.execute('select sum(x) from t').fetchone() == (4950,)
        db.close()

def use_ssl():
    ssl.create_default_context()
    if shutil.which('openssl') is None:
        return
    with tempfile.TemporaryDirectory() as d:
        key, cert = os.path.join(d, 'k.pem'), os.path.join(d, 'c.pem')
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key,
                        '-out', cert, '-days', '1', '-subj', '/CN=box'], check=True, capture_output=True)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=cert); client_ctx.check_hostname = False
        a, b = socket.socketpair()
        def serve():
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.sendall(s.recv(5).upper())
        t = threading.Thread(target=serve); t.start()
        with client_ctx.wrap_socket(b) as c:
            c.sendall(b'hello'); assert c.recv(5) == b'HELLO'
        t.join()

def use_asyncio():
    async def main():
        proc = await asyncio.create_subprocess_exec('sh', '-c', 'echo sub', stdout=subprocess.PIPE)
        assert (await proc.communicate())[0] == b'sub\n'
        async def echo(reader, writer):
            writer.write(await reader.read(4)); await writer.drain(); writer.close()
        server = await asyncio.start_server(echo, '127.0.0.1', 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
        writer.write(b'ping'); assert await reader.read(4) == b'ping'
        writer.close(); server.close(); await server.wait_closed()
        await asyncio.wait_for(asyncio.sleep(0.01), 5)
        await asyncio.to_thread(square, 2)
    asyncio.run(main())

def use_subprocess():
    assert subprocess.run(['sh', '-c', 'echo $((6 * 7))'], capture_output=True, check=True).stdout == b'42\n'
    assert subprocess.run([sys.executable, '-c', 'print(1)'], capture_output=True).returncode == 0

def use_threads():
    results = []
    threads = [threading.Thread(target=results.append, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert sorted(results) == list(range(8))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(square, range(5))) == [0, 1, 4, 9, 16]
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        assert list(pool.map(square, range(5))) == [0, 1, 4, 9, 16]

def use_os():
    signal.signal(signal.SIGUSR1, lambda *a: None); os.kill(os.getpid(), signal.SIGUSR1)
    r, w = os.pipe(); os.write(w, b'x'); assert os.read(r, 1) == b'x'
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    assert os.waitpid(pid, 0)[1] >> 8 == 7
    fd = os.memfd_create('m'); os.ftruncate(fd, 4096); os.close(fd)
    import mmap; m = mmap.mmap(-1, 4096); m[:1] = b'y'; m.close()
    import select; ep = select.epoll(); ep.register(r, select.EPOLLIN); ep.close()
    os.sched_getaffinity(0); os.getrandom(8); os.uname(); os.statvfs('/')

for name, fn in [('multiprocessing', use_multiprocessing), ('sqlite3', use_sqlite), ('ssl', use_ssl),
                 ('asyncio', use_asyncio), ('subprocess', use_subprocess), ('threading', use_threads),
                 ('os', use_os)]:
    check(name, fn)
"""


@pytest.mark.slow
async def test_pythons_runtime_works_under_the_default_filter(sup: anyns.Supervisor) -> None:
    """Positive control: multiprocessing (fork and spawn), sqlite3 (WAL), ssl (a TLS handshake over a
    socketpair when openssl is there), asyncio (a subprocess, a TCP echo on loopback, a thread),
    subprocess, threading (threads, pools), fork/pipes/epoll/mmap/memfd: all work in a default container."""
    spec = anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", RUNTIME], env={"PATH": "/usr/bin:/bin"})
    done = await sup.run(spec, capture_stdout=True, capture_stderr=True, check=False)
    report = lines(done.stdout)
    assert report == [f"{name} ok" for name in ("multiprocessing", "sqlite3", "ssl", "asyncio", "subprocess",
                                               "threading", "os")], (report, done.stderr)
    assert done.returncode == 0


SHELL = """
set -e
x=$(echo a | tr a b); test "$x" = b
( cd /tmp && echo sub > f && cat f ) | grep -q sub
sleep 0.01 & wait $!
trap 'echo trapped' USR1; kill -USR1 $$
ulimit -n >/dev/null
read line <<EOF
heredoc
EOF
test "$line" = heredoc
ls / >/dev/null; ps -e >/dev/null 2>&1 || true; id -u; date +%s >/dev/null; df / >/dev/null
echo done
"""


async def test_a_shell_works_under_the_default_filter(sup: anyns.Supervisor) -> None:
    """Positive control: pipes, subshells, background jobs, traps, here-documents, coreutils."""
    done = await sh(sup, SHELL)
    assert (done.returncode, lines(done.stdout)) == (0, ["trapped", "0", "done"]), done.stderr


#: busybox applets (linked in the root, or run as "busybox APPLET"), each expected to exit 0
APPLETS = (
    "ls -la /", "ps", "find /bin -name sh", "sed -n 1p /etc/passwd", "grep root /etc/passwd",
    "dd if=/dev/zero of=/tmp/z bs=1k count=8", "stat /tmp/z", "mount", "id", "hostname", "uname -a", "sleep 0",
    "wc -c /tmp/z", "head -c 1 /tmp/z", "tail -c 1 /tmp/z", "readlink /bin/sh", "chmod 600 /tmp/z",
    "mkdir -p a/b/c", "ln -s z zz", "cp z z2", "mv z2 z3", "rm -r a", "touch t", "ipcs", "env", "kill -0 $$",
    "printf %s x", "busybox tar -cf t.tar z", "busybox tar -tf t.tar", "busybox gzip -k z",
    "busybox sort /etc/passwd", "busybox awk {print} /etc/passwd", "busybox seq 3", "busybox sha256sum z",
    "busybox date", "busybox df /", "busybox du -s /tmp", "busybox free", "busybox nproc", "busybox mktemp",
    "busybox timeout 5 true", "busybox nice -n 5 true", "busybox top -b -n 1", "busybox xargs echo",
    "busybox hexdump -C z", "busybox nc -h", "busybox ping -h", "busybox setsid true", "busybox flock z true",
    "busybox sync", "busybox unshare -h",
)
APPLET_SCRIPT = "cd /tmp\nfor cmd in " + " ".join(f'"{c}"' for c in APPLETS) + """; do
    if $cmd </dev/null >/dev/null 2>&1; then echo "ok"; else echo "FAILED $? $cmd"; fi
done
"""
#: applets that exit non-zero on -h (busybox prints usage and exits 1): run for the filter, not the status
_USAGE = ("busybox nc -h", "busybox ping -h", "busybox unshare -h")


async def test_busybox_applets_work_under_the_default_filter(
        sup: anyns.Supervisor, tmp_path: pathlib.Path,
        make_busybox_root: Callable[[pathlib.Path], pathlib.Path]) -> None:
    """Positive control: fifty busybox applets (static, so no libc fallbacks hide a refusal) run in a
    default container on a busybox root; none is refused or killed."""
    root = make_busybox_root(tmp_path / "root")
    spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", APPLET_SCRIPT], rootfs=anyns.DirRootfs(str(root)),
                               env={"PATH": "/bin"}, mounts=(anyns.Tmpfs("/tmp"),))
    done = await sup.run(spec, capture_stdout=True, capture_stderr=True, check=False)
    report = lines(done.stdout)
    missing = [line for line in report if line.startswith("FAILED 127 ")]  # not built into this busybox
    failed = [line for line in report if line != "ok" and line not in missing]
    failed = [line for line in failed if not line.startswith("FAILED 1 ") or line[9:] not in _USAGE]
    assert (done.returncode, failed) == (0, []), done.stderr
    assert len(report) == len(APPLETS) and len(missing) < 10, missing


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the static test program")
async def test_a_static_program_gets_enosys_for_clone3_and_falls_back(
        sup: anyns.Supervisor, tmp_path: pathlib.Path) -> None:
    """A static C program (its own libc, not the host's) starts threads: glibc tries clone3, gets
    ENOSYS from the filter, falls back to clone; pthread_create succeeds."""
    source = tmp_path / "threads.c"
    source.write_text(textwrap.dedent("""
        #include <pthread.h>
        #include <stdio.h>
        static void *work(void *arg) { return arg; }
        int main(void) {
            pthread_t t; void *out = 0;
            if (pthread_create(&t, 0, work, (void *)42) != 0) { puts("pthread_create failed"); return 1; }
            pthread_join(t, &out);
            printf("thread %ld\\n", (long)out);
            return 0;
        }
    """))
    binary = tmp_path / "threads"
    built = await trio.run_process(["gcc", "-static", "-pthread", "-o", str(binary), str(source)],
                                   capture_stderr=True, check=False)
    if built.returncode != 0:
        pytest.skip(f"gcc -static failed (no static libc?): {built.stderr.decode()[-200:]}")
    os.chmod(binary, 0o755)
    spec = anyns.ContainerSpec(argv=["/t/threads"], mounts=(anyns.Bind(str(tmp_path), "/t", readonly=True),))
    done = await sup.run(spec, capture_stdout=True, check=False)
    assert (done.returncode, lines(done.stdout)) == (0, ["thread 42"])
