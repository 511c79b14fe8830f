"""Bridge networking: the host half, over netlink with pyroute2, off the trio thread.

For a container with ``anyns.Bridge``:

1. the zygote clones it with its own network namespace (CLONE_NEWNET), and the
   child, after its mounts and ``lo``, blocks on a "go" pipe;
2. here, in a netlink thread: make sure the bridge exists and is up with the
   gateway address; add a veth pair whose peer is created *directly* in the
   container's namespace as ``eth0`` (moving a device costs ~20 ms, creating it
   there ~1 ms); attach the host end to the bridge; then, through a netlink
   socket opened inside the container's namespace, give ``eth0`` its address,
   bring it up and add the default route. The bridge and the host ends have
   IPv6 off (``accept_ra=0``, ``disable_ipv6=1``) before they come up, so a
   container's router advertisement cannot configure the host side;
3. the supervisor writes the go byte and the program starts with its network ready.

When the container has been reaped, the host end is deleted right away (the
kernel would do it, but tens of milliseconds later) and the address returns to
the pool. The bridge is removed when the supervisor that created it closes.

pyroute2's ``IPRoute`` keeps per-thread state, and ``IPRoute(netns=…)`` forks
the calling process, so all netlink work for one bridge namespace runs in one
dedicated thread that owns one ``IPRoute``; sockets in a container's namespace
come from a ``setns`` of that thread (network namespaces are per thread).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
import queue
import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

import attrs
import trio
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ._errors import NetworkError
from ._spec import Bridge
from ._sys import _consts as C
from ._sys import _libc

T = TypeVar("T")

#: the routing table where each container's address is claimed with a /32
#: route through its veth (a table no lookup uses: routing is unchanged)
CLAIMS_TABLE = 0x616E  # "an"


class NetlinkThread:
    """One thread, one ``IPRoute``, in one network namespace; trio tasks submit work to it."""

    def __init__(self, netns: str | None) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[IPRoute], Any], trio.lowlevel.TrioToken, Any] | None] = (
            queue.SimpleQueue()
        )
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(netns,), name="anyns-netlink", daemon=True)
        try:
            self._thread.start()
        except RuntimeError as e:  # "can't start new thread": no task to spare; the next attach tries again
            self._error = _no_thread(e)
            self._ready.set()

    def _main(self, netns: str | None) -> None:
        try:
            if netns is not None:
                _enter_netns(netns)  # this thread only
            ipr = IPRoute()
        except BaseException as e:  # reported to every caller
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            while (job := self._jobs.get()) is not None:
                fn, token, box = job
                try:
                    box.append((True, fn(ipr)))
                except BaseException as e:  # handed to the caller
                    box.append((False, e))
                with suppress(trio.RunFinishedError):
                    token.run_sync_soon(box[0].set)
        finally:
            ipr.close()

    async def call(self, fn: Callable[[IPRoute], T]) -> T:
        """Run ``fn(ipr)`` in the thread; wait for it without blocking trio (not cancellable)."""
        if not self._ready.is_set():
            try:
                await trio.to_thread.run_sync(self._ready.wait)
            except RuntimeError as e:  # "can't start new thread": a trio worker
                raise _no_thread(e) from e
        if self._error is not None:
            if isinstance(self._error, NetworkError):
                raise self._error
            raise NetworkError(f"netlink: opening a netlink socket failed: {self._error}") from self._error
        done = trio.Event()
        box: list[Any] = [done]
        self._jobs.put((fn, trio.lowlevel.current_trio_token(), box))
        with trio.CancelScope(shield=True):  # the thread will finish the job anyway
            await done.wait()
        ok, value = box[1]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    @property
    def failed(self) -> bool:
        """Whether the thread could not open its netlink socket (it has ended)."""
        return self._error is not None

    async def aclose(self) -> None:
        """Stop the thread (after the jobs before) and wait for it."""
        if not self._thread.is_alive() and self._thread.ident is None:
            return  # it never started
        self._jobs.put(None)
        await trio.to_thread.run_sync(self._thread.join)


def _no_thread(e: RuntimeError) -> NetworkError:
    return NetworkError(f"netlink: starting a thread failed: {e} (hint: the process limit was reached: "
                        "a pids cgroup, ulimit -u, or /proc/sys/kernel/pid_max)")


def _enter_netns(path: str) -> None:
    """Move the calling thread into the network namespace file ``path``.

    Raises:
        NetworkError: naming the path and why (missing, or not a network namespace).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetworkError(f"bridge netns {path!r}: open failed: [Errno {e.errno}] {e.strerror}") from e
    try:
        _libc.setns(fd, C.CLONE_NEWNET)
    except OSError as e:
        raise NetworkError(
            f"bridge netns {path!r}: setns failed: [Errno {e.errno}] {os.strerror(e.errno or 0)} "
            "(hint: it must be a network namespace file, such as /proc/PID/ns/net or one kept with "
            "keep_namespace)"
        ) from e
    finally:
        os.close(fd)


def _delete_in_worker(netns_fd: int, host_ends: list[str], group: int) -> None:
    """Delete veth host ends, all at once, from a trio worker thread with a netlink socket of its own.

    Unregistering devices waits for an RCU grace period under the RTNL lock
    (~16 ms here, for one device or for fifty): one by one, that caps a bridge
    at about 60 containers/s. So the ends are put in one interface group and
    the group is deleted with one RTM_DELLINK (rtnl_group_dellink): one wait.
    """
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC) if netns_fd >= 0 else -1
    try:
        if netns_fd >= 0:
            _libc.setns(netns_fd, C.CLONE_NEWNET)
        with IPRoute() as ipr:
            grouped = 0
            for host_end in host_ends:
                try:
                    ipr.link("set", ifname=host_end, group=group)
                    grouped += 1
                except NetlinkError as e:
                    if e.code not in (19, 6):  # gone already (its netns died first): nothing to do
                        raise _netlink_error("veth group", host_end, e) from e
            if grouped:
                try:
                    ipr.link("del", group=group)
                except NetlinkError as e:
                    if e.code not in (19, 6):
                        raise _netlink_error("veth del of group", str(group), e) from e
    finally:
        if here >= 0:
            _libc.setns(here, C.CLONE_NEWNET)  # worker threads are reused: leave it as found
            os.close(here)


class _BridgeState:
    """Addresses of one bridge: round-robin, like CNI host-local, so a freed one is not reused at once."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        network = bridge.network
        self.first = int(network.network_address) + 2  # +1 is the gateway
        self.last = int(network.broadcast_address) - 1
        self.next = self.first
        self.used: set[int] = set()
        self.index = -1
        self.created = False

    def allocate(self) -> ipaddress.IPv4Interface:
        size = self.last - self.first + 1
        for _ in range(size):
            candidate = self.next
            self.next = self.first if self.next >= self.last else self.next + 1
            if candidate not in self.used:
                self.used.add(candidate)
                return ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(candidate)}/{self.bridge.network.prefixlen}")
        raise NetworkError(f"address allocation in {self.bridge.subnet}: no free address left")

    def release(self, address: ipaddress.IPv4Interface) -> None:
        self.used.discard(int(address.ip))


def _netlink_error(operation: str, interface: str, error: BaseException) -> NetworkError:
    code = getattr(error, "code", None) or getattr(error, "errno", None)
    detail = f"[Errno {code}] {os.strerror(code)}" if isinstance(code, int) and code > 0 else str(error)
    return NetworkError(f"{operation} {interface!r} failed: {detail}")


def ignore_router_advertisements(ifname: str, disable_ipv6: bool = True) -> None:
    """Keep a host-side interface from configuring itself from a container's IPv6 router advertisements.

    A container on the bridge can send a router advertisement to ff02::1:
    with ``accept_ra=1`` (the kernel's default) the bridge takes a SLAAC
    address and a route from it, and with a router lifetime a default route
    (Docker's CVE-2020-13401). anyns configures no IPv6, so the interface
    gets ``accept_ra=0`` and, with ``disable_ipv6``, no IPv6 at all. Call it
    before the link comes up, from the thread that is in the interface's
    network namespace: ``/proc/sys/net`` shows the opener's. There is no
    netlink attribute for these, hence the files. A kernel without IPv6 has
    nothing to configure.

    Raises:
        NetworkError: a setting could not be written.
    """
    conf = f"/proc/sys/net/ipv6/conf/{ifname}"
    if not os.path.isdir("/proc/sys/net/ipv6"):
        return
    settings = [("accept_ra", "0")] + ([("disable_ipv6", "1")] if disable_ipv6 else [])
    for name, value in settings:
        try:
            fd = os.open(f"{conf}/{name}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise NetworkError(f"ipv6 {name}={value} on {ifname!r} failed: [Errno {e.errno}] {e.strerror}") from e


def ensure_bridge_from_host(ipr: IPRoute, bridge: Bridge) -> tuple[int, bool]:
    """The bridge's interface index, creating it (up, with the gateway address) if missing.

    One it creates has IPv6 off before it comes up; one that exists gets
    ``accept_ra=0`` (its own IPv6 addresses, if any, are left alone).
    """
    found = ipr.link_lookup(ifname=bridge.name)
    created = False
    if not found:
        try:
            ipr.link("add", ifname=bridge.name, kind="bridge")
        except NetlinkError as e:
            if e.code != 17:  # EEXIST: another supervisor won the race
                raise _netlink_error("bridge add", bridge.name, e) from e
        else:
            created = True
        found = ipr.link_lookup(ifname=bridge.name)
    index = found[0]
    ignore_router_advertisements(bridge.name, disable_ipv6=created)
    gateway = bridge.gateway
    try:
        ipr.addr("add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
    except NetlinkError as e:
        if e.code != 17:  # already has it
            raise _netlink_error("address add", bridge.name, e) from e
    ipr.link("set", index=index, state="up")
    return index, created


def _socket_in(netns_fd: int) -> socket.socket:
    """A netlink socket that lives in the namespace ``netns_fd`` (made by this thread's setns)."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _libc.setns(netns_fd, C.CLONE_NEWNET)
        try:
            # SOCK_DGRAM: what pyroute2's own sockets are
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        finally:
            _libc.setns(here, C.CLONE_NEWNET)
    finally:
        os.close(here)


def _claim(ipr: IPRoute, state: _BridgeState, host_index: int) -> ipaddress.IPv4Interface:
    """The next address no one on this bridge holds, claimed with a /32 route in ``CLAIMS_TABLE``.

    Two supervisors may share a bridge: the kernel, not this process, says
    whether an address is free (adding the same route twice is EEXIST). The
    route goes with the host end of the veth, so a crash frees it too.
    """
    for _ in range(state.last - state.first + 1):
        address = state.allocate()
        try:
            ipr.route("add", dst=str(address.ip), dst_len=32, oif=host_index, table=CLAIMS_TABLE)
        except NetlinkError as e:
            state.release(address)
            if e.code == 17:  # EEXIST: another supervisor's container has it
                continue
            raise _netlink_error("address claim for", str(address.ip), e) from e
        return address
    raise NetworkError(f"address allocation in {state.bridge.subnet}: no free address left")


def _index_of(name: str) -> int:
    """The ifindex of ``name`` in this thread's network namespace, or -1.

    socket.if_nametoindex (one ioctl), not IPRoute.link_lookup: pyroute2
    0.9.7's lookup keeps a few KiB per call for good, and this runs for
    every bridged container.
    """
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return -1


def attach_from_host(ipr: IPRoute, state: _BridgeState, pid: int, host_end: str) -> ipaddress.IPv4Interface:
    """Wire container ``pid`` to the bridge: veth, address, routes; return its address.

    Removes what it made on failure.
    """
    bridge = state.bridge
    if state.index < 0 or _index_of(bridge.name) != state.index:
        state.index, created = ensure_bridge_from_host(ipr, bridge)
        state.created = state.created or created
    netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)  # a pidfd is not accepted here
    try:
        try:
            ipr.link("add", ifname=host_end, kind="veth", peer={"ifname": "eth0", "net_ns_fd": netns})
        except NetlinkError as e:
            raise _netlink_error("veth add", host_end, e) from e
        address = None
        try:
            host_index = _index_of(host_end)
            ignore_router_advertisements(host_end)  # before it is up
            ipr.link("set", index=host_index, master=state.index, state="up")
            address = _claim(ipr, state, host_index)  # a route needs the device up
            with IPRoute(fileno=_socket_in(netns).detach()) as inside:
                eth0 = inside.link_lookup(ifname="eth0")[0]
                inside.addr("add", index=eth0, address=str(address.ip), prefixlen=address.network.prefixlen)
                inside.link("set", index=eth0, state="up")
                inside.route("add", dst="default", gateway=str(bridge.gateway.ip))
        except BaseException as e:
            detach_from_host(ipr, host_end)
            if address is not None:
                state.release(address)
            if isinstance(e, NetlinkError):
                raise _netlink_error("eth0 setup via", host_end, e) from e
            raise
    finally:
        os.close(netns)
    return address


def detach_from_host(ipr: IPRoute, host_end: str) -> None:
    """Delete the host end of a container's veth pair (its peer goes with it); gone already is fine."""
    try:
        ipr.link("del", ifname=host_end)
    except NetlinkError as e:
        if e.code not in (19, 6):  # ENODEV, ENXIO: the kernel was faster
            raise _netlink_error("veth del", host_end, e) from e


def remove_bridge_from_host(ipr: IPRoute, *, name: str) -> None:
    """Delete a bridge this supervisor created, unless other containers are still attached."""
    found = ipr.link_lookup(ifname=name)
    if not found or ipr.link_lookup(master=found[0]):
        return  # gone, or another supervisor's containers are on it
    try:
        ipr.link("del", ifname=name)
    except NetlinkError as e:
        if e.code not in (19, 6):
            raise _netlink_error("bridge del", name, e) from e


@attrs.frozen
class Attachment:
    """A container's place on a bridge, while it is wired: what ``Networking.detach`` undoes.

    Attributes:
        bridge: the bridge.
        host_end: the name of the veth's host end (``anyns<pid>``).
        address: the container's ``eth0`` address, with its prefix.
    """

    bridge: Bridge
    host_end: str
    address: ipaddress.IPv4Interface


class Networking:
    """The supervisor's bridges: one netlink thread per bridge namespace, addresses per bridge."""

    def __init__(self) -> None:
        self._threads: dict[str | None, NetlinkThread] = {}
        self._bridges: dict[Bridge, _BridgeState] = {}
        #: host ends waiting for the next group delete, per bridge namespace
        self._doomed: dict[str | None, list[tuple[str, trio.Event]]] = {}
        self._deleting: set[str | None] = set()
        self._groups = itertools.count(1)
        #: the bridge namespaces, held open from first use: the file may be
        #: released while containers on it are still being torn down
        self._netns_fds: dict[str, int] = {}

    def _thread(self, netns: str | None) -> NetlinkThread:
        thread = self._threads.get(netns)
        if thread is None or thread.failed:  # a namespace file may appear later: try again
            thread = self._threads[netns] = NetlinkThread(netns)
        return thread

    async def attach(self, bridge: Bridge, pid: int) -> Attachment:
        """Give container ``pid`` its eth0 on ``bridge``; return what ``detach`` undoes."""
        state = self._bridges.get(bridge)
        if state is None:
            state = self._bridges[bridge] = _BridgeState(bridge)
        if bridge.netns is not None and bridge.netns not in self._netns_fds:
            try:
                self._netns_fds[bridge.netns] = os.open(bridge.netns, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise NetworkError(f"bridge netns {bridge.netns!r}: open failed: [Errno {e.errno}] {e.strerror}") from e
        host_end = f"anyns{pid}"
        address = await self._thread(bridge.netns).call(lambda ipr: attach_from_host(ipr, state, pid, host_end))
        return Attachment(bridge, host_end, address)

    async def detach(self, attachment: Attachment) -> None:
        """Remove a reaped container's veth and free its address; returns once the veth is gone.

        Deletions are batched: the first caller deletes everything queued
        (its own included) in one group delete, while later callers queue up
        for the next batch and wait for theirs.
        """
        bridge, host_end, address = attachment.bridge, attachment.host_end, attachment.address
        state = self._bridges[bridge]
        try:
            with trio.CancelScope(shield=True):
                done = trio.Event()
                self._doomed.setdefault(bridge.netns, []).append((host_end, done))
                if bridge.netns not in self._deleting:
                    await self._delete_batches(bridge.netns)
                await done.wait()
        finally:
            # The netlink thread owns the pool: release there, after the delete (its claim route went with it).
            await self._thread(bridge.netns).call(lambda ipr: state.release(address))

    async def _delete_batches(self, netns: str | None) -> None:
        """Delete queued veths, a batch at a time, until none are queued (run by one caller at a time)."""
        self._deleting.add(netns)
        try:
            while batch := self._doomed.pop(netns, []):
                netns_fd = self._netns_fds.get(netns, -1) if netns is not None else -1
                # An interface group of our own: this process's pid and a counter.
                group = ((os.getpid() & 0x7FFF) << 16) | (next(self._groups) & 0xFFFF)
                try:
                    await trio.to_thread.run_sync(_delete_in_worker, netns_fd, [name for name, _ in batch], group)
                finally:
                    for _, done in batch:
                        done.set()
        finally:
            self._deleting.discard(netns)

    async def aclose(self) -> None:
        """Remove the bridges this supervisor created, stop the threads."""
        for bridge, state in self._bridges.items():
            if state.created:
                with suppress(NetworkError):
                    await self._thread(bridge.netns).call(functools.partial(remove_bridge_from_host, name=bridge.name))
        for thread in self._threads.values():
            await thread.aclose()
        self._threads.clear()
        for fd in self._netns_fds.values():
            os.close(fd)
        self._netns_fds.clear()
