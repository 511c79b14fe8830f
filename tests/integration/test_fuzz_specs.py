"""Bad input: hypothesis-generated specs are refused when built or fail typed at spawn; the zygote lives on.

Each example draws every field of a ``ContainerSpec`` (and of its mounts,
root filesystem, network, joins and limits) from values that are odd on
purpose: paths with odd bytes, relative paths, NULs, huge sizes, names too
long, wrong types, ``=`` in env keys, nonsense limits, mounts onto ``/proc``,
``/dev/null`` or symlinks, missing sources... The spec must then either raise
``anyns.SpecError`` when it is built, or, spawned, run, or fail with a typed
``anyns`` error (``SetupError``/``ExecError``, ``UnsupportedError``,
``ContainerFailed``, ``NetworkError``) within 20 s, leaving no process of it
behind; the zygote is never replaced.

One supervisor serves every example: hypothesis runs in a worker thread
(``trio.to_thread``) and each example hands its spec to the test's trio loop
(``trio.from_thread.run``).

Safety: the programs never read their stdin (which may be a terminal) or
run long (``true``, ``echo``, ``sh -c 'exit N'``, ``cat /dev/null``, or names
that do not exist; not ``/proc/self/exe``, which is the init's Python, whose
REPL would wait on a terminal); host paths used as bind sources are read-only unless they are under
the test's ``tmp_path``, and made-up sources live under a directory that
does not exist; bridges only ever live in a network namespace made for the
test (a hub container's); ``propagation="shared"`` is left out (a tmpfs
below it would appear on the host, by design).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import trio
from _util import children_of_me
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import anyns
from anyns import testing

EXAMPLES = int(os.environ.get("ANYNS_FUZZ_EXAMPLES", "200"))  # more by hand: ANYNS_FUZZ_EXAMPLES=5000
HANG = float(os.environ.get("ANYNS_FUZZ_HANG", "20"))  # seconds: a spawn that takes longer counts as a hang
NOWHERE = "/nonexistent-anyns-fuzz"  # made-up host paths live under this missing directory
#: what a spawn may raise: typed anyns errors (ZygoteError and SpecError are not among them)
TYPED = (anyns.SetupError, anyns.UnsupportedError, anyns.ContainerFailed, anyns.NetworkError)

# --------------------------------------------------------------------------- strategies
#
# Every field has a strategy of values a spec accepts (odd ones included: they are what must fail *typed* at
# spawn time) and one of values it must refuse. An example draws a few fields, and at most one of them from
# its refused values, so that about half the specs get as far as a spawn.

# Odd but valid characters (bytes that are not UTF-8 arrive as surrogates, as os.fsdecode makes them) ...
odd_char = st.one_of(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0", max_codepoint=0x2FF),
    st.sampled_from(["\udcff", "\udc80", "\n", " ", "\x01", "\x7f", ":", ",", "\\", "*", "é", "\u2028"]),
)
odd_text = st.text(odd_char, max_size=12)
# ... and invalid ones: a NUL, a lone surrogate no file name can hold
bad_text = st.one_of(odd_text.map(lambda t: t + "\0"), odd_text.map(lambda t: "\ud800" + t))
segment = st.one_of(st.text(odd_char, min_size=1, max_size=10), st.sampled_from([".", "..."]))
odd_path = st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
long_path = st.one_of(
    st.integers(200, 300).map(lambda n: "/" + "n" * n),  # a component of 255+ bytes: ENAMETOOLONG
    st.integers(1500, 2500).map(lambda n: "/d" * n),  # 3-5 KiB: beyond PATH_MAX
)
bad_path = st.one_of(odd_text.filter(lambda t: not t.startswith("/")), bad_text.map(lambda t: "/" + t),
                     odd_path.map(lambda p: p + "/.."))
#: paths inside the container: existing, special, missing, symlinks, files and directories
TARGETS = [
    "/", "/proc", "/proc/sys", "/proc/1", "/proc/self/fd", "/dev", "/dev/null", "/dev/pts", "/dev/shm", "/tmp",
    "/tmp/x", "/usr", "/usr/bin", "/usr/anyns-new", "/bin", "/bin/sh", "/lib", "/etc", "/etc/passwd",
    "/etc/ssl", "/etc/ssl/certs", "/sys", "/a/b/c/d/e", "/x y", "/new\nline", "/\udcff\udcfe", "/./x", "/x/",
    "//x", "/x/.",
]
container_path = st.one_of(st.sampled_from(TARGETS), odd_path, long_path)
#: host paths only ever bound read-only
READONLY_SOURCES = [
    "/etc", "/etc/passwd", "/dev/null", "/dev/zero", "/proc/self", "/proc/1/ns/net", "/usr/bin", "/", "/run",
    "/sys/fs/cgroup",
]
junk = st.one_of(st.integers(), st.floats(), st.binary(max_size=4), st.booleans(), odd_text,
                 st.lists(st.integers(), max_size=2))
NS = anyns.Namespaces


class Value:
    """A field's value as a thunk (``Value(v)()`` is ``v``) that prints as the value in hypothesis's reports."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self) -> Any:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)


class Each:
    """A list of thunks as one: builds every element."""

    def __init__(self, makers: list[Callable[[], Any]]) -> None:
        self.makers = makers

    def __call__(self) -> list[Any]:
        return [make() for make in self.makers]

    def __repr__(self) -> str:
        return repr(self.makers)


def make(cls: Any, *args: Any, **kwargs: Any) -> Callable[[], Any]:
    """A thunk that builds ``cls(*args, **kwargs)`` when called (and prints as a partial)."""
    return functools.partial(cls, *args, **kwargs)


Field = tuple[st.SearchStrategy[Callable[[], Any]], st.SearchStrategy[Callable[[], Any]]]  # (accepted, refused)


class Fields:
    """The valid and invalid values of every field, over the test's own host files and hub namespace."""

    def __init__(self, tmp: pathlib.Path, hub: anyns.Container, hubnet: str) -> None:
        self.tmp = tmp
        self.root = testing.busybox_rootfs(tmp / "busybox")
        self.dir, self.file, self.fifo = str(tmp / "dir"), str(tmp / "file"), str(tmp / "fifo")
        self.empty, self.link, self.missing = str(tmp / "empty"), str(tmp / "link-to-dir"), str(tmp / "missing")
        os.mkdir(self.dir)
        os.mkdir(self.empty)
        pathlib.Path(self.file).write_text("a file\n")
        os.mkfifo(self.fifo)
        os.symlink(self.dir, self.link)
        self.hub = hub
        self.hubnet = hubnet
        self.upper_count = 0

    # ---- pieces

    def host_path(self) -> st.SearchStrategy[str]:
        """A host path the test owns (any use is safe), or one that cannot exist."""
        return st.one_of(
            st.sampled_from([self.dir, self.file, self.fifo, self.link, self.missing, self.empty, self.root]),
            odd_path.map(lambda p: NOWHERE + p),
            long_path,
        )

    def mount(self) -> Field:
        flags = st.fixed_dictionaries({
            "recursive": st.booleans(), "nosuid": st.booleans(), "nodev": st.booleans(), "noexec": st.booleans(),
            "propagation": st.sampled_from([None, "private", "slave", "unbindable"]),  # "shared": see the top
        })
        own = st.builds(lambda s, t, r, kw: make(anyns.Bind, s, t, readonly=r, **kw),
                        self.host_path(), container_path, st.booleans(), flags)
        host = st.builds(lambda s, t, kw: make(anyns.Bind, s, t, readonly=True, **kw),
                         st.sampled_from(READONLY_SOURCES), container_path, flags)
        tmpfs = st.builds(lambda t, n, m: make(anyns.Tmpfs, t, size=n, mode=m), container_path,
                          st.none() | st.integers(1, 1 << 40) | st.sampled_from([1 << 62, 1 << 70]),
                          st.integers(0, 0o7777))
        refused = st.one_of(
            bad_path.map(lambda t: make(anyns.Tmpfs, t)),
            bad_path.map(lambda t: make(anyns.Bind, self.dir, t)),
            bad_path.map(lambda p: make(anyns.Bind, p, "/x")),
            st.sampled_from([0, -1, 1.5, "1M", True]).map(lambda n: make(anyns.Tmpfs, "/x", size=n)),
            st.sampled_from([-1, 0o10000, "755"]).map(lambda m: make(anyns.Tmpfs, "/x", mode=m)),
            st.sampled_from(["sideways", "", "rshared"]).map(lambda p: make(anyns.Bind, self.dir, "/x", propagation=p)),
            junk.map(Value),
        )
        return st.one_of(own, host, tmpfs), refused

    def _overlay(self, lower: list[str], upper: Any) -> anyns.OverlayRootfs:
        if upper == "new":  # an upper directory of this example's own, made by anyns
            self.upper_count += 1
            upper = str(self.tmp / f"upper{self.upper_count}")
        return anyns.OverlayRootfs(lower, upper=upper)

    # ---- fields

    def argv(self) -> Field:
        real = st.one_of(
            st.just(["true"]), st.just(["false"]), st.just(["/bin/true"]), st.just(["cat", "/dev/null"]),
            st.lists(odd_text, max_size=3).map(lambda args: ["echo", *args]),
            st.integers(0, 300).map(lambda n: ["sh", "-c", f"exit {n}"]),
            st.integers(100_000, 300_000).map(lambda n: ["echo", "a" * n]),  # beyond MAX_ARG_STRLEN
            st.integers(1, 40).map(lambda n: ["echo", *(["b" * 4096] * (n * 20))]),  # up to 3 MiB of arguments
        )
        not_there = st.one_of(
            odd_text.map(lambda name: ["zz-not-a-program-" + name]),
            odd_path.map(lambda p: [NOWHERE + p]),
            st.sampled_from([["/"], ["/etc/passwd"], ["/dev/null"], ["/usr"], ["n" * 300], ["/proc/self/cwd"]]),
        )
        refused = st.one_of(
            st.lists(odd_text, max_size=2).map(lambda a: ["echo\0nul", *a]),
            st.lists(bad_text, min_size=1, max_size=2).map(lambda a: ["echo", *a]),
            st.sampled_from([[], [""], ["\ud800"]]),
        )
        return st.one_of(real, real, not_there).map(Value), refused.map(Value)

    def rootfs(self) -> Field:
        upper = st.none() | st.sampled_from(["new", "new", self.file, self.missing, self.dir])
        layer = st.sampled_from([self.root, self.root, self.empty, self.file, self.missing]) | self.host_path()
        accepted = st.one_of(
            st.just(make(anyns.HostRootfs)),
            st.lists(st.sampled_from(["passwd", "shadow", "nope", "ssl/certs", "hosts"]), max_size=3)
            .map(lambda names: make(anyns.HostRootfs, etc=names)),
            st.builds(lambda p, ro: make(anyns.DirRootfs, p, readonly=ro),
                      st.sampled_from([self.root, self.empty, self.file, self.missing]) | self.host_path(),
                      st.booleans()),
            st.just(make(anyns.DirRootfs, "/proc")),  # read-only, with no /dev or /tmp in it
            st.builds(lambda lower, up: make(self._overlay, lower, up), st.lists(layer, min_size=1, max_size=3),
                      upper),
        )
        refused = st.one_of(
            bad_path.map(lambda p: make(anyns.DirRootfs, p)),
            st.just(make(self._overlay, [], None)),
            odd_path.map(lambda p: make(self._overlay, [p + ":x"], None)),
            bad_path.map(lambda p: make(self._overlay, [self.root], p)),
            st.sampled_from(["../x", "/etc/x", ""]).map(lambda n: make(anyns.HostRootfs, etc=[n])),
            junk.map(Value),
        )
        return accepted, refused

    def mounts(self) -> Field:
        accepted, refused = self.mount()
        return (st.lists(accepted, max_size=4).map(Each),
                st.tuples(st.lists(accepted, max_size=2), refused).map(lambda t: Each([*t[0], t[1]])))

    def env(self) -> Field:
        key = st.one_of(st.text(odd_char, min_size=1, max_size=12).filter(lambda k: "=" not in k),
                        st.sampled_from(["PATH", "LD_PRELOAD", "HOME"]))
        value = st.one_of(odd_text, st.sampled_from(["/bin", "/nowhere", "x" * 200_000]))
        refused = st.one_of(
            st.dictionaries(st.one_of(bad_text, st.sampled_from(["A=B", "", "="])), odd_text, min_size=1, max_size=2),
            st.dictionaries(key, bad_text | junk, min_size=1, max_size=2),
        )
        return st.dictionaries(key, value, max_size=4).map(Value), refused.map(Value)

    def cwd(self) -> Field:
        return container_path.map(Value), (bad_path | junk).map(Value)

    def hostname(self) -> Field:
        return ((st.none() | odd_text.filter(bool) | st.just("h" * 64)).map(Value),
                (st.integers(65, 70).map(lambda n: "h" * n) | st.just("") | bad_text | junk).map(Value))

    def domainname(self) -> Field:
        return (st.none() | odd_text.filter(bool)).map(Value), (st.just("d" * 65) | bad_text | junk).map(Value)

    def namespaces(self) -> Field:
        accepted = st.sampled_from([NS.DEFAULT, NS.MOUNT, NS.MOUNT | NS.PID, NS.DEFAULT | NS.CGROUP,
                                    NS.DEFAULT | NS.TIME, NS.DEFAULT & ~NS.NET, NS.DEFAULT & ~NS.PID,
                                    NS.MOUNT | NS.UTS | NS.NET, NS.DEFAULT | NS.USER, NS.MOUNT | NS.USER])
        refused = st.one_of(st.integers(1 << 31, 1 << 33), st.integers(-5, -1), junk, st.sampled_from([NS.PID, NS(0)]))
        return accepted.map(Value), refused.map(Value)

    def network(self) -> Field:
        # Bridges only ever in the hub's namespace, or in a "namespace" that is none (a file, a uts ns, missing).
        netns = st.sampled_from([self.hubnet, self.hubnet, self.hubnet, self.file, self.missing, "/proc/self/ns/uts"])
        name = st.sampled_from(["anyns0", "fz0", "fz1", "lo", "x" * 15, "é"])
        subnet = st.one_of(
            st.sampled_from(["10.240.0.0/24", "10.241.0.0/30", "0.0.0.0/0", "127.0.0.0/8", "224.0.0.0/4",
                             "255.255.255.0/30"]),
            st.builds(lambda a, b, p: f"10.{a}.{b * 4}.0/{p}", st.integers(244, 250), st.integers(0, 63),
                      st.integers(22, 30)),
        )
        accepted = st.one_of(
            st.just(Value(None)), st.just(make(anyns.Loopback)), st.just(make(anyns.HostNetwork)),
            st.builds(lambda n, s, ns: make(anyns.Bridge, n, s, netns=ns), name, subnet, netns),
            st.builds(lambda n, s, ns: make(anyns.Bridge, n, s, netns=ns), name, subnet, netns),
            st.sampled_from([self.hub, self.hubnet, self.file, self.missing, "/proc/self/ns/uts"])
            .map(lambda src: make(anyns.JoinNetwork, src)),
        )
        refused = st.one_of(
            st.sampled_from(["x" * 16, "a b", "", "a/b"]).map(lambda n: make(anyns.Bridge, n, netns=self.hubnet)),
            st.sampled_from(["10.242.0.0/31", "10.243.0.1/24", "fd00::/64", "nonsense", 5])
            .map(lambda s: make(anyns.Bridge, "fz2", s, netns=self.hubnet)),
            st.sampled_from(["rel", 5]).map(lambda src: make(anyns.JoinNetwork, src)),
            junk.map(Value),
        )
        return accepted, refused

    def join(self) -> Field:
        kinds = ["mnt", "pid", "net", "ipc", "uts", "cgroup", "time"]
        source = st.sampled_from([self.hub, self.hub, f"/proc/{self.hub.pid}/ns/ipc", self.hubnet, self.file,
                                  self.missing, "/proc/self/ns/uts"])
        accepted = st.just(Value(None)) | st.dictionaries(st.sampled_from(kinds), source, min_size=1, max_size=3).map(
            lambda kw: make(anyns.Join, **kw))
        refused = st.one_of(
            st.tuples(st.sampled_from(kinds), st.sampled_from(["relative", 5, b"/x"]))
            .map(lambda t: make(anyns.Join, **{t[0]: t[1]})),
            junk.map(Value),
        )
        return accepted, refused

    def limits(self) -> Field:
        memory = st.none() | st.integers(2 << 20, 1 << 40) | st.sampled_from(["64M", "1.5G", "2M", (1 << 62) - 1])
        pids = st.none() | st.integers(2, 64) | st.just((1 << 31) - 1)
        cpu = st.none() | st.floats(0.01, 4) | st.just(1e6)
        accepted = st.builds(lambda m, p, c: make(anyns.Limits, memory=m, pids=p, cpu=c), memory, pids, cpu)
        refused = st.one_of(
            st.sampled_from([0, -1, 1, 4096, "1M", 1 << 62, 1 << 70, math.nan, math.inf, "abc", "nan", "inf", "-1",
                             "", True, b"1M"]).map(lambda m: make(anyns.Limits, memory=m)),
            st.sampled_from([0, -1, 1 << 31, 1.5, "8", True]).map(lambda p: make(anyns.Limits, pids=p)),
            st.sampled_from([0, 0.0099, -1.0, 2e6, math.nan, "0.5", True]).map(lambda c: make(anyns.Limits, cpu=c)),
            junk.map(Value),
        )
        return accepted, refused

    def rlimits(self) -> Field:
        names = ["nofile", "as", "cpu", "stack", "fsize", "core", "nproc"]
        limit = st.one_of(st.integers(0, 1 << 20), st.just(anyns.RLIM_INFINITY),
                          st.tuples(st.integers(0, 64), st.integers(64, 1 << 20)))
        refused = st.dictionaries(
            st.sampled_from(["nofile", "bogus", 5]),
            st.one_of(st.integers(-5, -1), st.just(1 << 65), st.tuples(st.integers(9, 20), st.just(1)),
                      st.tuples(st.integers(), st.integers(), st.integers()), st.sampled_from(["x", (1,)])),
            min_size=1, max_size=2)
        return st.dictionaries(st.sampled_from(names), limit, max_size=2).map(Value), refused.map(Value)

    def user_ns(self) -> Field:
        def ranges(count: int, outside: int) -> tuple[int, int, int]:
            return (0, outside, count)
        one = st.builds(ranges, st.integers(1, 65536), st.sampled_from([100000, 200000, 0, 1 << 31]))
        accepted = st.one_of(st.just(Value(None)), st.just(Value(anyns.DEFAULT_ID_MAP)),
                             st.builds(lambda u, g: make(anyns.IdMap, uid=u, gid=g), one, one))
        refused = st.one_of(
            st.sampled_from([(0, 0, 0), (-1, 0, 1), (0, 1 << 32, 1), ((0, 0, 10), (5, 100, 10)), "0 0 1", ()])
            .map(lambda r: make(anyns.IdMap, uid=r, gid=(0, 100000, 1))),
            junk.map(Value),
        )
        return accepted, refused

    def user(self) -> Field:
        ids = st.integers(0, 70000) | st.just((1 << 32) - 2)
        accepted = st.just(Value(None)) | st.builds(lambda u, g, gs: make(anyns.User, u, g, groups=gs), ids, ids,
                                                      st.lists(ids, max_size=3))
        refused = st.one_of(
            st.sampled_from([-1, 1 << 32, (1 << 32) - 1, "0", True]).map(lambda u: make(anyns.User, u, 0)),
            st.sampled_from([[-1], ["x"]]).map(lambda gs: make(anyns.User, 0, 0, groups=gs)),
            junk.map(Value),
        )
        return accepted, refused

    def capabilities(self) -> Field:
        names = sorted(anyns.ALL_CAPABILITIES)
        accepted = st.one_of(st.just(anyns.DEFAULT_CAPABILITIES), st.just(anyns.ALL_CAPABILITIES), st.just(()),
                             st.lists(st.sampled_from([*names, "sys_admin", "NET_ADMIN"]), max_size=5))
        refused = st.one_of(st.sampled_from(["CAP_SYS_ADMIN", ["CAP_NOPE"], [5], ["cap_"], 5]), junk)
        return accepted.map(Value), refused.map(Value)

    def seccomp(self) -> Field:
        # Never exit, exit_group, wait or signal calls: a program that cannot end would hang the test.
        calls = ["ptrace", "mount", "reboot", "execve", "execveat", "socket", "chdir", "setns", "unshare", "clone3",
                 "personality", "getpid", "uname", "openat", "mkdir", "no_such_call", "bpf", "sethostname"]
        accepted = st.one_of(
            st.just(Value(None)), st.just(Value(anyns.DEFAULT_SECCOMP)),
            st.builds(lambda d, e: make(anyns.Seccomp, deny=d, errno=e), st.lists(st.sampled_from(calls), max_size=4),
                      st.integers(1, 4095)),
        )
        refused = st.one_of(
            st.sampled_from([0, 4096, -1, "1"]).map(lambda e: make(anyns.Seccomp, errno=e)),
            st.sampled_from(["ptrace", ["a b"], [""], [5]]).map(lambda d: make(anyns.Seccomp, deny=d)),
            junk.map(Value),
        )
        return accepted, refused

    def container_paths(self) -> Field:
        return (st.lists(container_path, max_size=4).map(Value),
                st.one_of(st.sampled_from(["/proc/kcore"]), st.lists(bad_path, min_size=1, max_size=2)).map(Value))

    def scalar(self, accepted: st.SearchStrategy[Any], refused: st.SearchStrategy[Any]) -> Field:
        return accepted.map(Value), refused.map(Value)

    def all(self) -> dict[str, Field]:
        return {
            "argv": self.argv(), "rootfs": self.rootfs(), "mounts": self.mounts(), "env": self.env(),
            "cwd": self.cwd(), "hostname": self.hostname(), "domainname": self.domainname(),
            "namespaces": self.namespaces(), "network": self.network(), "join": self.join(),
            "limits": self.limits(), "rlimits": self.rlimits(),
            "tty": self.scalar(st.booleans(), st.sampled_from([0, "", None, 1, "yes"])),
            "tty_size": self.scalar(st.tuples(st.integers(1, 65535), st.integers(1, 65535)),
                                    st.tuples(st.integers(-1, 0) | st.just(65536) | junk, junk)),
            "stop_grace": self.scalar(st.floats(0, 0.05),
                                      st.floats(-1, -0.001) | st.sampled_from([math.inf, math.nan]) | junk),
            "init": self.scalar(st.booleans(), junk.filter(lambda j: not isinstance(j, bool))),
            "root_propagation": self.scalar(st.sampled_from(["slave", "private"]),
                                            st.sampled_from(["shared", "rslave", ""]) | junk),
            "user_ns": self.user_ns(), "user": self.user(), "capabilities": self.capabilities(),
            "seccomp": self.seccomp(), "masked_paths": self.container_paths(),
            "readonly_paths": self.container_paths(),
            "no_new_privileges": self.scalar(st.booleans(), junk.filter(lambda j: not isinstance(j, bool))),
            "new_session": self.scalar(st.booleans(), junk.filter(lambda j: not isinstance(j, bool))),
        }


@st.composite
def spec_parts(draw: st.DrawFn, fields: dict[str, Field]) -> dict[str, Callable[[], Any]]:
    """Thunks that build each field (a field's own SpecError is raised as it is built); at most one refused."""
    names = ["argv", *draw(st.lists(st.sampled_from(sorted(set(fields) - {"argv"})), unique=True, max_size=6))]
    refused = draw(st.none() | st.sampled_from(names))
    return {name: draw(fields[name][name == refused]) for name in names}


# --------------------------------------------------------------------------- the test


def not_cancelled(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc`` (and in the nursery exception groups in it) that are not ``trio.Cancelled``."""
    if isinstance(exc, BaseExceptionGroup):
        return [e for sub in exc.exceptions for e in not_cancelled(sub)]
    return [] if isinstance(exc, trio.Cancelled) else [exc]


async def spawn(sup: anyns.Supervisor, spec: anyns.ContainerSpec, started: bool) -> list[BaseException]:
    """Run ``spec`` to its end (``nursery.start`` or a plain ``run``); what it raised (out of the exception
    groups of nurseries), or [] if it ran."""
    try:
        with trio.fail_after(HANG):
            if started:
                async with trio.open_nursery() as nursery:
                    box = await nursery.start(functools.partial(sup.run, spec, stdout=anyns.DEVNULL,
                                                                stderr=anyns.DEVNULL))
                    if box.tty is not None:  # the terminal is the caller's: drain it (the program may write)
                        async with box.tty:
                            with contextlib.suppress(trio.BrokenResourceError):  # EIO: the program's side closed
                                async for _chunk in box.tty:
                                    pass
            else:
                await sup.run(spec, capture_stdout=True, capture_stderr=True)
    except trio.TooSlowError:
        print(f"HANG (started={started}): {spec!r}", flush=True)  # shown even if shrinking runs out of time
        raise AssertionError(f"the spawn of {spec!r} did not end within {HANG} s (a hang)") from None
    except BaseException as exc:
        errors = not_cancelled(exc)
        if not errors:
            raise
        return errors
    return []


@pytest.fixture
def need_busybox(skip_or_fail: Callable[[str], None]) -> None:
    try:
        testing.find_static_busybox()
    except testing.BusyboxMissing as e:
        skip_or_fail(str(e))


@pytest.mark.usefixtures("need_busybox")
async def test_fuzzed_specs_fail_typed_and_the_zygote_survives(sup: anyns.Supervisor, tmp_path: pathlib.Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Every drawn spec raises SpecError when built, or runs, or fails with a typed error within 20 s; no
    process of it is left; the zygote is the same throughout, and a plain container runs afterwards."""
    plain = anyns.ContainerSpec(argv=["echo", "alive"])
    assert (await sup.run(plain, capture_stdout=True)).stdout == b"alive\n"
    assert sup._zygote is not None
    zygote = sup._zygote.process.pid
    outcomes: collections.Counter[str] = collections.Counter()
    refusals: collections.Counter[str] = collections.Counter()  # field -> SpecErrors
    spawned: collections.Counter[str] = collections.Counter()  # what the spawned specs had
    hung: list[str] = []
    token = trio.lowlevel.current_trio_token()

    async with trio.open_nursery() as nursery:
        hub = await nursery.start(functools.partial(sup.run, check=False), anyns.ContainerSpec(argv=["sleep", "1000"]))
        try:
            with hub.keep_namespace("net", tmp_path / "hubnet") as kept:
                fields = Fields(tmp_path, hub, kept.path).all()
                allowed_children = {zygote, hub.pid}

                @settings(max_examples=EXAMPLES, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])
                @given(parts=spec_parts(fields), started=st.booleans())
                def example(parts: dict[str, Callable[[], Any]], started: bool) -> None:
                    outcomes["examples"] += 1
                    try:
                        spec = anyns.ContainerSpec(**{name: make() for name, make in parts.items()})
                    except anyns.SpecError as e:
                        outcomes["SpecError when built"] += 1
                        refusals[str(e).split(":")[0]] += 1
                        return
                    spawned.update([type(spec.rootfs).__name__, type(spec.network).__name__]
                                   + ["limits"] * (spec.limits is not None) + ["join"] * (spec.join is not None)
                                   + ["mounts"] * bool(spec.mounts) + ["rlimits"] * bool(spec.rlimits)
                                   + ["tty"] * (spec.tty is True)
                                   + ["userns"] * (anyns.Namespaces.USER in spec.namespaces))
                    if hung:  # one hang is enough: fail at once, so that shrinking does not wait 20 s a time
                        raise AssertionError(f"an earlier spawn hung: {hung[0]}")
                    try:
                        errors = trio.from_thread.run(spawn, sup, spec, started, trio_token=token)
                    except AssertionError as e:
                        hung.append(str(e))
                        raise
                    for error in errors:
                        assert isinstance(error, TYPED) and not isinstance(error, anyns.ZygoteError), (
                            f"spawning {spec!r} raised {type(error).__name__}: {error}"
                        )
                        if isinstance(error, anyns.SetupError):  # messages name the operation first, lowercase
                            assert str(error)[:1].islower(), str(error)
                    outcomes[type(errors[0]).__name__ if errors else "ran"] += 1
                    assert sup._zygote is not None and sup._zygote.process.pid == zygote, "the zygote was replaced"
                    left = {pid: cmd for pid, cmd in children_of_me().items() if pid not in allowed_children}
                    assert not left, f"processes left after spawning {spec!r}: {left}"

                await trio.to_thread.run_sync(example)
        finally:
            hub.kill()

    assert (await sup.run(plain, capture_stdout=True)).stdout == b"alive\n"
    assert sup._zygote is not None and sup._zygote.process.pid == zygote
    assert sup._zygote.process.poll() is None
    with capsys.disabled():
        print(f"\nfuzzed specs: {dict(outcomes)}; SpecError by field: {dict(refusals.most_common())}; "
              f"spawned specs had: {dict(spawned.most_common())}")
    assert outcomes["examples"] >= EXAMPLES
    assert outcomes["SpecError when built"] < outcomes["examples"] - 20  # most were spawned, not refused


# --------------------------------------------------------------------------- wrong container types

WRONG_SHAPES = {
    "argv=5": lambda: anyns.ContainerSpec(argv=5),
    "argv=None": lambda: anyns.ContainerSpec(argv=None),
    "mounts=5": lambda: anyns.ContainerSpec(argv=["true"], mounts=5),
    "env=5": lambda: anyns.ContainerSpec(argv=["true"], env=5),
    "env=[('A',)]": lambda: anyns.ContainerSpec(argv=["true"], env=[("A",)]),
    "rlimits=5": lambda: anyns.ContainerSpec(argv=["true"], rlimits=5),
    "rlimits=[5]": lambda: anyns.ContainerSpec(argv=["true"], rlimits=[5]),
    "tty_size=5": lambda: anyns.ContainerSpec(argv=["true"], tty_size=5),
    "OverlayRootfs(5)": lambda: anyns.OverlayRootfs(5),
    "HostRootfs(etc=5)": lambda: anyns.HostRootfs(etc=5),
}


@pytest.mark.parametrize("make", WRONG_SHAPES.values(), ids=WRONG_SHAPES.keys())
def test_wrong_container_types_raise_spec_error(make: Callable[[], Any]) -> None:
    """A value of the wrong type where a sequence or mapping is expected raises SpecError, like other bad input."""
    with pytest.raises(anyns.SpecError):
        make()


# --------------------------------------------------------------------------- found by fuzzing: tty + ExecError


def _terminal_fds() -> list[int]:
    """This process's fds open on a pseudo-terminal master (``/dev/ptmx``, or ``/ptmx`` of a container's devpts)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").endswith("ptmx"):
                found.append(int(name))
        except OSError:  # the fd listdir used, closed meanwhile
            continue
    return found


@pytest.mark.parametrize("started", [False, True], ids=["run", "nursery.start"])
async def test_tty_exec_error_closes_the_terminal(sup: anyns.Supervisor, started: bool) -> None:
    """A tty container whose program is missing fails with ExecError and leaves no terminal fd behind."""
    spec = anyns.ContainerSpec(argv=["/no/such/program"], tty=True)
    ok = anyns.ContainerSpec(argv=["true"], tty=True)
    await sup.run(ok, capture_stdout=True)  # the tty path has run once: nothing lazily opened is counted below
    before = _terminal_fds()
    try:
        for _ in range(3):
            errors = await spawn(sup, spec, started)
            assert len(errors) == 1 and isinstance(errors[0], anyns.ExecError), errors
        await sup.run(ok, capture_stdout=True)
        assert _terminal_fds() == before
    finally:
        for fd in set(_terminal_fds()) - set(before):  # what leaked: the test reports it, the leak check need not
            os.close(fd)


# --------------------------------------------------------------------------- found by fuzzing: Bridge + setup error


@pytest.mark.parametrize("broken", ["bind-source", "rootfs", "join-mnt"])
async def test_bridge_container_failing_setup_raises_setup_error(sup: anyns.Supervisor, tmp_path: pathlib.Path,
                                                                 broken: str) -> None:
    """With Bridge networking, a setup failure is the same SetupError (step, errno) as without it."""
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(functools.partial(sup.run, check=False), anyns.ContainerSpec(argv=["sleep", "1000"]))
        try:
            with hub.keep_namespace("net", tmp_path / "hubnet") as kept:
                fields: dict[str, Any] = {
                    "bind-source": {"mounts": [anyns.Bind(str(tmp_path / "missing"), "/x")]},
                    "rootfs": {"rootfs": anyns.DirRootfs(str(tmp_path / "missing"))},
                    "join-mnt": {"join": anyns.Join(mnt=f"/proc/{hub.pid}/ns/ipc")},
                }[broken]
                plain = anyns.ContainerSpec(argv=["true"], **fields)
                with pytest.raises(anyns.SetupError) as without:
                    await sup.run(plain)
                bridge = anyns.Bridge("fz9", "10.251.0.0/24", netns=kept.path)
                bridged = anyns.ContainerSpec(argv=["true"], network=bridge, **fields)
                for _ in range(5):
                    with pytest.raises(anyns.SetupError) as with_bridge:
                        await sup.run(bridged)
                    assert (with_bridge.value.step, with_bridge.value.errno) == (without.value.step,
                                                                                 without.value.errno)
        finally:
            hub.kill()


# --------------------------------------------------------------------------- found by fuzzing: userns + wrong join


@pytest.mark.parametrize("userns", [{"user_ns": anyns.DEFAULT_ID_MAP},
                                    {"namespaces": anyns.Namespaces.DEFAULT | anyns.Namespaces.USER}],
                         ids=["user_ns", "Namespaces.USER"])
@pytest.mark.parametrize("join", [0, "x", ["net"]], ids=["int", "str", "list"])
def test_userns_with_a_wrong_join_is_spec_error(userns: dict[str, Any], join: Any) -> None:
    """A join of the wrong type is a SpecError naming join, with a user namespace as without one."""
    with pytest.raises(anyns.SpecError, match=r"^join"):
        anyns.ContainerSpec(argv=["true"], join=join)
    with pytest.raises(anyns.SpecError, match=r"^join"):
        anyns.ContainerSpec(argv=["true"], join=join, **userns)
