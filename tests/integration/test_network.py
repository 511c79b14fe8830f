"""Networking: Loopback, HostNetwork, Bridge and JoinNetwork with real containers talking TCP.

Bridges never touch the machine's own network: each test starts a "hub"
container (its own network namespace, running ``sleep``), keeps that
namespace at a path under ``tmp_path`` and puts the bridge there with
``Bridge(netns=path)``. The hub namespace is then the bridge's host side: a
``JoinNetwork(hub)`` container, or ``nsenter --net=path`` from the test,
sees it. Subnets are per test (10.201-10.219.x) so a test never meets
another's addresses.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import re
import select
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from _util import SH, supervisor_process, wait_all_exited

import anyns
from anyns import Namespaces

NS = Namespaces
PYTHON = "/usr/bin/python3"
PORT = 7000
CLONE_NEWNET = 0x40000000

#: a tiny TCP tool for containers (the host's python3):
#:   serve NAME HOST PORT  -- echo server; prints "listening", then calls each address read from stdin
#:   call NAME PORT ADDR…  -- calls each address and prints the reply
#: A reply is "SERVER from PEER-IP: hello from CALLER", so both ends are proven.
NET_TOOL = textwrap.dedent(
    """
    import socket, sys, threading

    def call(name, addr, port):
        with socket.create_connection((addr, port), timeout=10) as c:
            c.sendall(f"hello from {name}\\n".encode())
            data = b""
            while chunk := c.recv(4096):
                data += chunk
        return data.decode().strip()

    def serve_forever(name, srv):
        while True:
            conn, peer = srv.accept()
            with conn:
                data = b""
                while not data.endswith(b"\\n") and (chunk := conn.recv(4096)):
                    data += chunk
                conn.sendall(f"{name} from {peer[0]}: ".encode() + data)

    mode, name = sys.argv[1], sys.argv[2]
    if mode == "serve":
        host, port = sys.argv[3], int(sys.argv[4])
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port))
        srv.listen(64)
        threading.Thread(target=serve_forever, args=(name, srv), daemon=True).start()
        print("listening", flush=True)
        for line in sys.stdin:
            print(call(name, line.strip(), port), flush=True)
    else:
        port = int(sys.argv[3])
        for addr in sys.argv[4:]:
            print(call(name, addr, port), flush=True)
    """
)


@pytest.fixture(autouse=True)
def _need_python_and_ip(skip_or_fail: Callable[[str], None]) -> None:
    """These tests run python3 and ip inside containers and nsenter on the host."""
    for tool in (PYTHON, "/usr/sbin/ip", "/usr/bin/nsenter"):
        if not os.path.exists(tool):
            skip_or_fail(f"{tool} is needed for the network tests")


def tool_argv(*args: str) -> list[str]:
    return [PYTHON, "-I", "-c", NET_TOOL, *args]


def serve_spec(name: str, network: Any, *, before: str = "", host: str = "0.0.0.0",
               **fields: Any) -> anyns.ContainerSpec:
    """An echo server container; ``before`` runs first (its output precedes "listening")."""
    script = f'{before}\nexec "$@"'
    return anyns.ContainerSpec(argv=[SH, "-c", script, "sh", *tool_argv("serve", name, host, str(PORT))],
                               network=network, **fields)


class Lines:
    """Line reader over a trio ReceiveStream."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buf = b""

    async def next(self) -> str:
        while b"\n" not in self._buf:
            chunk = await self._stream.receive_some()
            assert chunk, f"EOF while waiting for a line; got {self._buf!r}"
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    async def until(self, marker: str) -> list[str]:
        """The lines before ``marker`` (which is consumed)."""
        before = []
        while (line := await self.next()) != marker:
            before.append(line)
        return before

    async def rest(self) -> list[str]:
        """Every line up to EOF."""
        while chunk := await self._stream.receive_some():
            self._buf += chunk
        data, self._buf = self._buf, b""
        return data.decode().splitlines()


def link_names(ip_o_link: str) -> list[str]:
    """Interface names from ``ip -o link`` output (``eth0@if3`` → ``eth0``)."""
    return [line.split(":")[1].strip().split("@")[0] for line in ip_o_link.splitlines() if line.strip()]


def ip_in(netns: str, *args: str) -> str:
    """``ip ARGS`` run in the network namespace file ``netns`` (blocking; ip answers at once)."""
    return subprocess.run(["nsenter", f"--net={netns}", "ip", *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def hosts(subnet: str) -> list[ipaddress.IPv4Interface]:
    """The container addresses of ``subnet`` in round-robin order (the gateway, first host, excluded)."""
    network = ipaddress.IPv4Network(subnet)
    return [ipaddress.IPv4Interface(f"{h}/{network.prefixlen}") for h in list(network.hosts())[1:]]


@attrs.define
class Hub:
    """A network namespace made for one test, kept at ``path``; the bridges live here."""

    container: anyns.Container
    path: str

    def bridge(self, subnet: str, **fields: Any) -> anyns.Bridge:
        return anyns.Bridge(subnet=subnet, netns=self.path, **fields)

    def links(self) -> list[str]:
        return link_names(ip_in(self.path, "-o", "link", "show"))

    def veths(self) -> list[str]:
        return link_names(ip_in(self.path, "-o", "link", "show", "type", "veth"))

    def host_ends(self) -> list[str]:
        """Links named like the host end of a container's veth (anyns<pid>), bridges excluded."""
        bridges = set(link_names(ip_in(self.path, "-o", "link", "show", "type", "bridge")))
        return [n for n in self.links() if re.fullmatch(r"anyns\d+", n) and n not in bridges]


@contextlib.asynccontextmanager
async def open_hub(sup: anyns.Supervisor, tmp_path: Path) -> AsyncIterator[Hub]:
    """Start the hub container, keep its network namespace; release and kill it on the way out."""
    async with trio.open_nursery() as nursery:
        box = await nursery.start(partial(sup.run, check=False), anyns.ContainerSpec(argv=["sleep", "1000"]))
        try:
            with box.keep_namespace("net", tmp_path / "hubnet") as kept:
                yield Hub(box, kept.path)
        finally:
            box.kill()


async def close_pipes(*boxes: anyns.Container) -> None:
    """Close the streams ``anyns.PIPE`` handed out: they belong to the caller, as with trio.run_process."""
    for box in boxes:
        for stream in (box.stdin, box.stdout, box.stderr):
            if stream is not None:
                await stream.aclose()


async def start(nursery: trio.Nursery, sup: anyns.Supervisor, spec: anyns.ContainerSpec,
                **kwargs: Any) -> anyns.Container:
    return await nursery.start(partial(sup.run, spec, check=False, **kwargs))


# --------------------------------------------------------------------------- 1. loopback


async def test_same_port_on_host_loopback_and_in_a_loopback_container(sup: anyns.Supervisor) -> None:
    """A server on 127.0.0.1:P in the test and one on 127.0.0.1:P in a container both accept at once."""
    with socket.socket() as host_server:
        host_server.settimeout(10)
        host_server.bind(("127.0.0.1", 0))
        host_server.listen()
        port = host_server.getsockname()[1]
        spec = anyns.ContainerSpec(argv=tool_argv("serve", "inside", "127.0.0.1", str(port)))
        async with trio.open_nursery() as nursery:
            box = await start(nursery, sup, spec, stdin=anyns.PIPE, stdout=anyns.PIPE)
            out = Lines(box.stdout)
            assert await out.until("listening") == []  # the container now holds 127.0.0.1:P
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                conn, _ = host_server.accept()  # the test's connection reached the test's server
                with conn:
                    client.sendall(b"ping")
                    assert conn.recv(4) == b"ping"
                    # While that connection is open, the container's client reaches its own server.
                    assert box.stdin is not None
                    await box.stdin.send_all(b"127.0.0.1\n")
                    assert await out.next() == "inside from 127.0.0.1: hello from inside"
            assert box.returncode is None
            box.kill()
        await close_pipes(box)
    assert box.returncode == -signal.SIGKILL


# --------------------------------------------------------------------------- 2. bridge


async def test_bridge_containers_reach_each_other_and_the_host_side(sup: anyns.Supervisor, tmp_path: Path) -> None:
    """Two bridged containers talk by address, the hub reaches both; eth0 and route match the API."""
    async with open_hub(sup, tmp_path) as hub:
        bridge = hub.bridge("10.201.0.0/24")
        inspect = "ip -4 -o addr show dev eth0; ip route show default"
        boxes: dict[str, anyns.Container] = {}
        outs: dict[str, Lines] = {}
        async with trio.open_nursery() as nursery:
            for name in ("a", "b"):
                box = await start(nursery, sup, serve_spec(name, bridge, before=inspect),
                                  stdin=anyns.PIPE, stdout=anyns.PIPE)
                boxes[name], outs[name] = box, Lines(box.stdout)
                addr_line, route_line = await outs[name].until("listening")
                assert len(box.addresses) == 1
                address = box.addresses[0]
                assert isinstance(address, ipaddress.IPv4Interface)
                assert address.network == bridge.network and address != bridge.gateway
                assert re.search(r"\binet (\S+) ", addr_line).group(1) == str(address)  # type: ignore[union-attr]
                assert route_line.split()[:5] == ["default", "via", str(bridge.gateway.ip), "dev", "eth0"]
            a_ip, b_ip = (str(boxes[n].addresses[0].ip) for n in ("a", "b"))
            assert a_ip != b_ip

            for caller, callee, callee_ip in (("a", "b", b_ip), ("b", "a", a_ip)):
                stdin = boxes[caller].stdin
                assert stdin is not None
                await stdin.send_all(f"{callee_ip}\n".encode())
                caller_ip = str(boxes[caller].addresses[0].ip)
                assert await outs[caller].next() == f"{callee} from {caller_ip}: hello from {caller}"

            # The host side: the hub's namespace, joined by container or by its kept path.
            gateway = str(bridge.gateway.ip)
            for source in (hub.container, hub.path):
                done = await sup.run(anyns.ContainerSpec(argv=tool_argv("call", "hub", str(PORT), a_ip, b_ip),
                                                         network=anyns.JoinNetwork(source)),
                                     capture_stdout=True, capture_stderr=True, check=False)
                assert done.returncode == 0, done.stderr
                assert done.stdout.decode().splitlines() == [f"a from {gateway}: hello from hub",
                                                             f"b from {gateway}: hello from hub"]
            assert sorted(hub.host_ends()) == sorted(f"anyns{box.pid}" for box in boxes.values())
            for box in boxes.values():
                box.kill()
        await close_pipes(*boxes.values())
        assert all(box.returncode == -signal.SIGKILL for box in boxes.values())
        assert hub.veths() == []
        assert hub.host_ends() == []
        assert sorted(hub.links()) == sorted(["lo", bridge.name])


async def test_hundred_containers_get_distinct_addresses_that_are_freed(sup: anyns.Supervisor,
                                                                         tmp_path: Path) -> None:
    """100 bridged containers (20 in flight) get 100 distinct addresses, all freed and handed out again."""
    subnet = "10.202.0.0/25"  # 125 container addresses: the second wave must wrap onto freed ones
    usable = hosts(subnet)
    assert len(usable) == 125
    # It waits for stdin's EOF after printing: its output is read while it runs.
    spec = anyns.ContainerSpec(argv=[SH, "-c", "ip -4 -o addr show dev eth0; exec cat >/dev/null"])
    limiter = trio.CapacityLimiter(20)

    async def wave(bridge: anyns.Bridge, count: int) -> list[ipaddress.IPv4Interface]:
        got: list[ipaddress.IPv4Interface] = []
        running = 0
        peak = 0

        async def one() -> None:
            nonlocal running, peak
            async with limiter, trio.open_nursery() as nursery:
                box = await start(nursery, sup, attrs.evolve(spec, network=bridge),
                                  stdin=anyns.PIPE, stdout=anyns.PIPE)
                running += 1
                peak = max(peak, running)
                inside = await Lines(box.stdout).next()
                assert box.stdin is not None
                await box.stdin.aclose()
                assert await box.wait() == 0
                await close_pipes(box)
                running -= 1
                assert len(box.addresses) == 1
                assert re.search(r"\binet (\S+) ", inside).group(1) == str(box.addresses[0])  # type: ignore[union-attr]
                got.append(box.addresses[0])

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
        assert peak > 1, "containers never overlapped: the test proves less than it claims"
        return got

    async with open_hub(sup, tmp_path) as hub:
        bridge = hub.bridge(subnet)
        first = await wave(bridge, 100)
        assert len(set(first)) == 100
        # Round-robin from a fresh bridge: the first 100 addresses, whatever the order of exits.
        assert set(first) == set(usable[:100])
        assert hub.veths() == []
        assert hub.host_ends() == []

        # 30 more: the 25 never used, then round-robin wraps onto addresses the first wave freed.
        second = await wave(bridge, 30)
        assert len(set(second)) == 30
        assert set(second) == set(usable[100:]) | set(usable[:5])
        assert hub.veths() == []


async def test_exhausted_subnet_fails_one_container_and_spares_the_others(sup: anyns.Supervisor,
                                                                          tmp_path: Path) -> None:
    """/29: 5 containers run, the 6th raises NetworkError leaving no veth, a freed address is reused."""
    sleeper = anyns.ContainerSpec(argv=["sleep", "1000"])
    async with open_hub(sup, tmp_path) as hub:
        bridge = hub.bridge("10.203.0.0/29", name="nt-small")
        spec = attrs.evolve(sleeper, network=bridge)
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as victim_nursery:  # so we can wait for that one's run to return
                victim = await start(victim_nursery, sup, spec)
                boxes = [victim] + [await start(nursery, sup, spec) for _ in range(4)]
                assert sorted(b.addresses[0] for b in boxes) == hosts(bridge.subnet) == hosts("10.203.0.0/29")
                assert len(hosts(bridge.subnet)) == 5

                with pytest.raises(anyns.NetworkError) as info:
                    await start(nursery, sup, spec)
                assert isinstance(info.value, anyns.AnynsError)
                message = str(info.value)
                assert message[0].islower() and bridge.subnet in message, message

                assert all(b.returncode is None for b in boxes)
                assert sorted(hub.host_ends()) == sorted(f"anyns{b.pid}" for b in boxes)
                assert len(hub.veths()) == 5
                freed = victim.addresses[0]
                victim.kill()
            # victim's run has returned: its veth is gone and its address free.
            assert f"anyns{victim.pid}" not in hub.host_ends()
            assert len(hub.veths()) == 4
            newcomer = await start(nursery, sup, spec)
            # The only free address, so round-robin must land on it.
            assert newcomer.addresses == (freed,)
            assert all(b.returncode is None for b in boxes[1:])
            assert (await sup.run(attrs.evolve(sleeper, argv=["true"]))).returncode == 0  # loopback still fine
            for b in [*boxes[1:], newcomer]:
                b.kill()
        assert hub.veths() == []


async def test_address_is_free_once_wait_returns(sup: anyns.Supervisor, tmp_path: Path) -> None:
    """In a full /30, once ``await box.wait()`` has returned, its veth is gone and its address free."""
    async with open_hub(sup, tmp_path) as hub:
        bridge = hub.bridge("10.204.0.0/30")
        spec = anyns.ContainerSpec(argv=["sleep", "1000"], network=bridge)
        async with trio.open_nursery() as nursery:
            first = await start(nursery, sup, spec)
            assert hub.host_ends() == [f"anyns{first.pid}"]
            first.kill()
            await first.wait()
            # Not when the run task gets round to it: wait() itself promises it (a full subnet shows it).
            assert hub.host_ends() == []
            second = await start(nursery, sup, spec)
            assert second.addresses == first.addresses
            second.kill()


# --------------------------------------------------------------------------- 3. JoinNetwork


async def test_join_network_shares_interfaces_and_loopback(sup: anyns.Supervisor, tmp_path: Path) -> None:
    """JoinNetwork(first): same net namespace, same interfaces (eth0 included), 127.0.0.1 reaches first."""
    host_net = anyns.namespaces_of(os.getpid())["net"]
    async with open_hub(sup, tmp_path) as hub:
        bridge = hub.bridge("10.205.0.0/24")
        async with trio.open_nursery() as nursery:
            first = await start(nursery, sup, serve_spec("first", bridge, before="ip -o link", host="127.0.0.1"),
                                stdin=anyns.PIPE, stdout=anyns.PIPE)
            first_links = await Lines(first.stdout).until("listening")
            script = 'ip -o link; "$@"; echo done; exec cat >/dev/null'
            second = await start(
                nursery, sup,
                anyns.ContainerSpec(argv=[SH, "-c", script, "sh", *tool_argv("call", "second", str(PORT), "127.0.0.1")],
                                    network=anyns.JoinNetwork(first)),
                stdin=anyns.PIPE, stdout=anyns.PIPE,
            )
            out = Lines(second.stdout)
            *second_links, reply = await out.until("done")
            assert second.namespaces["net"] == first.namespaces["net"] != host_net
            assert second.namespaces["mnt"] != first.namespaces["mnt"]  # only the network is shared
            assert second_links == first_links
            assert link_names("\n".join(second_links)) == ["lo", "eth0"]
            assert reply == "first from 127.0.0.1: hello from second"
            assert second.addresses == ()  # the address belongs to first's veth
            assert second.stdin is not None
            await second.stdin.aclose()
            assert await second.wait() == 0
            first.kill()
        await close_pipes(first, second)
        assert hub.veths() == []


# --------------------------------------------------------------------------- 4. Host and Loopback


@pytest.mark.parametrize(
    ("network", "namespaces", "own"),
    [
        (anyns.HostNetwork(), NS.DEFAULT, False),
        (anyns.Loopback(), NS.DEFAULT, True),
        (anyns.Loopback(), NS.MOUNT | NS.PID, True),
        (None, NS.DEFAULT, True),
        (None, NS.MOUNT | NS.PID, False),
    ],
    ids=["host", "loopback", "loopback-without-NET-flag", "default", "no-NET-flag"],
)
async def test_host_network_and_loopback(sup: anyns.Supervisor, network: Any, namespaces: Namespaces,
                                         own: bool) -> None:
    """HostNetwork shares the test's netns and interfaces; Loopback has its own netns with only lo, up."""
    host_net = anyns.namespaces_of(os.getpid())["net"]
    script = "readlink /proc/self/ns/net; tail -n +3 /proc/net/dev | cut -d: -f1; echo end; ip -o link show lo; " \
             "exec sleep 1000"
    spec = anyns.ContainerSpec(argv=[SH, "-c", script], network=network, namespaces=namespaces)
    async with trio.open_nursery() as nursery:
        box = await start(nursery, sup, spec, stdout=anyns.PIPE)
        out = Lines(box.stdout)
        inside_ns, *devices = await out.until("end")
        lo = await out.next()
        outside = box.namespaces["net"]
        box.kill()
    await close_pipes(box)
    assert inside_ns == outside
    assert box.addresses == ()
    assert re.search(r"<[^>]*\bUP\b", lo), lo
    names = sorted(d.strip() for d in devices)
    if own:
        assert outside != host_net
        assert names == ["lo"]
    else:
        assert outside == host_net
        assert names == sorted(os.listdir("/sys/class/net"))


# --------------------------------------------------------------------------- 5. supervisor killed

_KILLED_SUPERVISOR = textwrap.dedent(
    """
    import functools, sys, trio, anyns

    async def main(path):
        async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
            run = functools.partial(sup.run, check=False)
            hub = await nursery.start(run, anyns.ContainerSpec(argv=["sleep", "1000"]))
            kept = hub.keep_namespace("net", path)
            spec = anyns.ContainerSpec(argv=["sleep", "1000"], network=anyns.Bridge(subnet="10.206.0.0/24",
                                                                                    netns=kept.path))
            boxes = [await nursery.start(run, spec) for _ in range(10)]
            print(kept.path, hub.pid, *(b.pid for b in boxes), flush=True)
            await trio.sleep_forever()

    trio.run(main, sys.argv[1])
    """
)


def _link_monitor(netns: str) -> socket.socket:
    """A netlink socket in the namespace file ``netns``, readable whenever a link there changes."""
    result: list[Any] = []

    def in_thread() -> None:  # setns changes only this short-lived thread's namespace
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), netns)
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)  # NETLINK_ROUTE
            sock.bind((0, 1))  # RTMGRP_LINK
            sock.setblocking(False)
            result.append(sock)
        except BaseException as e:
            result.append(e)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]  # type: ignore[no-any-return]


def _veths_gone(netns: str, monitor: socket.socket, timeout: float) -> list[str]:
    """Wait (on link events) until ``netns`` has no veth left; return those left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := link_names(ip_in(netns, "-o", "link", "show", "type", "veth"))) and (
        remaining := deadline - time.monotonic()
    ) > 0:
        if select.select([monitor], [], [], remaining)[0]:
            with contextlib.suppress(BlockingIOError, OSError):
                while monitor.recv(65536):  # drain; ENOBUFS after an overflow is fine too
                    pass
    return left


def test_supervisor_killed_leaves_no_container_and_no_veth(tmp_path: Path) -> None:
    """SIGKILL of a supervisor with 10 bridged containers: within a second no container and no veth remain."""
    kept = str(tmp_path / "hubnet")
    monitor: socket.socket | None = None
    try:
        with supervisor_process(_KILLED_SUPERVISOR, kept) as (proc, pidfds):
            assert proc.stdout is not None
            path, *pids_text = proc.stdout.readline().split()
            assert path == kept
            pids = [int(p) for p in pids_text]
            assert len(pids) == 11  # the hub and 10 bridged containers
            pidfds.extend(os.pidfd_open(pid) for pid in pids)
            monitor = _link_monitor(kept)
            before = link_names(ip_in(kept, "-o", "link", "show", "type", "veth"))
            assert sorted(before) == sorted(f"anyns{pid}" for pid in pids[1:])

            proc.send_signal(signal.SIGKILL)
            proc.wait()
            started = time.monotonic()
            assert wait_all_exited(pidfds, timeout=1.0) == []
            assert _veths_gone(kept, monitor, timeout=max(0.0, 1.0 - (time.monotonic() - started))) == []
            # The bridge may remain: nobody was left to delete it. Here it can only be in the kept
            # hub namespace (never the machine's), which dies when the umount below drops the last reference.
            assert set(link_names(ip_in(kept, "-o", "link", "show"))) <= {"lo", "anyns0"}
    finally:
        if monitor is not None:
            monitor.close()
        if os.path.ismount(kept):
            subprocess.run(["umount", kept], check=True)


# --------------------------------------------------------------------------- 6. errors


@pytest.mark.parametrize("kind", ["regular-file", "missing", "uts-namespace"])
async def test_bridge_netns_that_is_not_a_net_namespace(sup: anyns.Supervisor, tmp_path: Path, kind: str) -> None:
    """Bridge(netns=...) naming no network namespace → NetworkError (cause: OSError); the supervisor goes on."""
    bad = {
        "regular-file": tmp_path / "plain-file",
        "missing": tmp_path / "missing",
        "uts-namespace": Path("/proc/self/ns/uts"),
    }[kind]
    if kind == "regular-file":
        bad.write_text("not a namespace\n")
    spec = anyns.ContainerSpec(argv=["true"], network=anyns.Bridge(subnet="10.207.0.0/24", netns=str(bad)))
    with pytest.raises(anyns.NetworkError) as info:
        await sup.run(spec)
    assert not isinstance(info.value, anyns.SetupError)
    cause = info.value.__cause__
    assert isinstance(cause, OSError)
    assert cause.errno == (errno.ENOENT if kind == "missing" else errno.EINVAL)
    assert str(info.value)[0].islower()
    # The same spec fails the same way again, and other containers are unaffected.
    with pytest.raises(anyns.NetworkError):
        await sup.run(spec)
    assert (await sup.run(anyns.ContainerSpec(argv=["true"]))).returncode == 0
    async with open_hub(sup, tmp_path) as hub:
        done = await sup.run(anyns.ContainerSpec(argv=["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                                                 network=hub.bridge("10.208.0.0/24")), capture_stdout=True)
        assert "inet 10.208.0.2/24" in done.stdout.decode()
        assert hub.veths() == []


async def test_bridge_netns_that_appears_later_is_used(sup: anyns.Supervisor, tmp_path: Path) -> None:
    """A Bridge whose netns path failed once works once a namespace has been kept at that path."""
    path = tmp_path / "later"
    spec = anyns.ContainerSpec(argv=["true"], network=anyns.Bridge(subnet="10.209.0.0/24", netns=str(path)))
    with pytest.raises(anyns.NetworkError):
        await sup.run(spec)
    async with trio.open_nursery() as nursery:
        hub = await start(nursery, sup, anyns.ContainerSpec(argv=["sleep", "1000"]))
        with hub.keep_namespace("net", path):
            try:
                assert (await sup.run(spec)).returncode == 0
            finally:
                hub.kill()


# --------------------------------------------------------------------------- bridge lifetime


async def test_bridge_removed_by_the_supervisor_that_created_it(sup: anyns.Supervisor, tmp_path: Path) -> None:
    """The supervisor that created a bridge removes it at close; one that found it existing leaves it."""
    async with open_hub(sup, tmp_path) as hub:
        created = hub.bridge("10.210.0.0/24", name="nt-made")
        async with anyns.open_supervisor() as other:
            await other.run(anyns.ContainerSpec(argv=["true"], network=created))
            assert "nt-made" in hub.links()
        assert "nt-made" not in hub.links()

        ip_in(hub.path, "link", "add", "nt-found", "type", "bridge")
        found = hub.bridge("10.211.0.0/24", name="nt-found")
        async with anyns.open_supervisor() as other:
            done = await other.run(anyns.ContainerSpec(argv=["ip", "route", "show", "default"], network=found),
                                   capture_stdout=True)
            assert done.stdout.decode().split()[:3] == ["default", "via", "10.211.0.1"]
        assert "nt-found" in hub.links()
        assert hub.veths() == []


async def test_two_supervisors_on_one_bridge_get_different_addresses(sup: anyns.Supervisor,
                                                                     tmp_path: Path) -> None:
    """Two supervisors sharing one bridge (reused if it exists) never hand out the same address."""
    async with open_hub(sup, tmp_path) as hub:
        bridge = hub.bridge("10.212.0.0/24")
        spec = anyns.ContainerSpec(argv=["sleep", "1000"], network=bridge)
        async with anyns.open_supervisor() as other, trio.open_nursery() as nursery:
            mine = await start(nursery, sup, spec)
            theirs = await start(nursery, other, spec)
            try:
                assert mine.addresses != theirs.addresses
            finally:
                mine.kill()
                theirs.kill()


# --------------------------------------------------------------------------- IPv6 router advertisements

#: Sends an ICMPv6 router advertisement to ff02::1 on eth0 through an AF_PACKET socket (CAP_NET_RAW, in
#: Docker's set): a router lifetime (a default route) and a prefix with the autonomous flag (a SLAAC
#: address). Then a UDP datagram to the gateway's closed port, whose ICMP "port unreachable" shows that
#: the host side has processed what came before it; prints "sent" and how the UDP probe ended.
RA_SENDER = textwrap.dedent(
    """
    import socket, struct, sys

    def checksum(data):
        data += b"\\0" * (len(data) % 2)
        total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    prefix, gateway = sys.argv[1], sys.argv[2]
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    raw.bind(("eth0", 0))
    mac = raw.getsockname()[4]
    src = socket.inet_pton(socket.AF_INET6, "fe80::aa:1")
    dst = socket.inet_pton(socket.AF_INET6, "ff02::1")
    # type 134, code 0, checksum, hop limit 64, flags 0, router lifetime 1800 s, reachable, retrans
    ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    # prefix information: type 3, length 4 (x8), /64, flags L|A, valid and preferred lifetimes, the prefix
    ra += struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0, socket.inet_pton(socket.AF_INET6, prefix))
    ra += struct.pack("!BB6s", 1, 1, mac)  # source link-layer address
    pseudo = src + dst + struct.pack("!I3xB", len(ra), 58)
    ra = ra[:2] + struct.pack("!H", checksum(pseudo + ra)) + ra[4:]
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(ra), 58, 255, src, dst)
    raw.send(b"\\x33\\x33\\x00\\x00\\x00\\x01" + mac + b"\\x86\\xdd" + ip6 + ra)
    print("sent", flush=True)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(10)
    udp.connect((gateway, 9))
    udp.send(b"after the advertisement")
    try:
        udp.recv(100)
        print("answered")
    except ConnectionRefusedError:
        print("refused")
    except socket.timeout:
        print("timeout")
    """
)


def ipv6_conf(netns: str, ifname: str) -> dict[str, str]:
    """disable_ipv6 and accept_ra of ``ifname`` as the namespace ``netns`` has them (/proc/sys/net is per netns)."""
    script = f"cd /proc/sys/net/ipv6/conf/{ifname} && echo $(cat disable_ipv6) $(cat accept_ra)"
    out = subprocess.run(["nsenter", f"--net={netns}", SH, "-c", script], capture_output=True, text=True,
                         check=True, timeout=30).stdout.split()
    return {"disable_ipv6": out[0], "accept_ra": out[1]}


@pytest.fixture
def need_ipv6(skip_or_fail: Callable[[str], None]) -> None:
    if not os.path.isdir("/proc/sys/net/ipv6"):
        skip_or_fail("this kernel has no IPv6 (/proc/sys/net/ipv6)")


@pytest.mark.usefixtures("need_ipv6")
async def test_bridge_and_host_veths_ignore_router_advertisements(sup: anyns.Supervisor, tmp_path: Path) -> None:
    """The bridge and each host end have IPv6 off and accept_ra=0 (set before they came up), so a container's
    router advertisement to ff02::1 gives the bridge's side no SLAAC address and no route (CVE-2020-13401)."""
    async with open_hub(sup, tmp_path) as hub:
        bridge = hub.bridge("10.214.0.0/24", name="nt-ra")
        async with trio.open_nursery() as nursery:
            box = await start(nursery, sup, anyns.ContainerSpec(argv=["sleep", "1000"], network=bridge))
            for ifname in (bridge.name, f"anyns{box.pid}"):
                assert ipv6_conf(hub.path, ifname) == {"disable_ipv6": "1", "accept_ra": "0"}, ifname
            box.kill()
        spec = anyns.ContainerSpec(argv=[PYTHON, "-I", "-c", RA_SENDER, "2001:db8:aa::", str(bridge.gateway.ip)],
                                   network=bridge)
        done = await sup.run(spec, capture_stdout=True, capture_stderr=True, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().split() == ["sent", "refused"]  # the host side handled the RA first
        assert "2001:db8:aa" not in ip_in(hub.path, "-6", "addr", "show")
        routes = ip_in(hub.path, "-6", "route", "show", "table", "all")
        assert "2001:db8:aa" not in routes and "default" not in routes, routes
