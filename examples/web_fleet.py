"""A hundred web servers on the same port, each in its own network namespace behind a bridge.

    python examples/web_fleet.py [COUNT]

Every server listens on port 8080 (busybox httpd, from Debian's busybox-static)
in a network namespace of its own, with an address on one bridge. The bridge
lives in a namespace this example makes (a "hub" container's, kept with
``keep_namespace``), so the machine's own network is never touched. One trio
client, with its sockets made inside the hub namespace, asks each server who
it is.
"""

from __future__ import annotations

import ctypes
import functools
import os
import socket
import sys
import tempfile
import time

import trio

import anyns

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(netns: str) -> socket.socket:
    """A TCP socket made inside the network namespace file ``netns`` (namespaces are per thread)."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(netns, os.O_RDONLY)
    try:
        if _libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        try:
            return socket.socket()
        finally:
            _libc.setns(here, CLONE_NEWNET)
    finally:
        os.close(here)
        os.close(there)


async def ask(netns: str, address: str) -> str:
    """GET / from address:8080 with a trio socket that lives in the hub namespace."""
    sock = trio.socket.from_stdlib_socket(await trio.to_thread.run_sync(socket_in, netns))
    with sock:
        await sock.connect((address, 8080))
        await sock.send(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := await sock.recv(4096):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[-1].decode().strip()


SERVE = "echo $(hostname) > /www/index.html; exec busybox httpd -f -p 8080 -h /www"


async def main(count: int) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
            # stdout/stderr: never this script's own (a container can reopen them via /proc/self/fd)
            run = functools.partial(sup.run, check=False, stdout=anyns.DEVNULL, stderr=anyns.DEVNULL)
            hub = await nursery.start(run, anyns.ContainerSpec(argv=["sleep", "1000"]))
            kept = hub.keep_namespace("net", os.path.join(scratch, "hubnet"))
            bridge = anyns.Bridge(subnet="10.90.0.0/24", netns=kept.path)
            servers = []
            limiter = trio.CapacityLimiter(16)

            async def serve(i: int) -> None:
                spec = anyns.ContainerSpec(argv=["sh", "-c", SERVE], hostname=f"web-{i:03d}", network=bridge,
                                           mounts=[anyns.Tmpfs("/www")])
                async with limiter:
                    servers.append(await nursery.start(run, spec))

            async with trio.open_nursery() as starting:
                for i in range(count):
                    starting.start_soon(serve, i)
            print(f"{count} servers on port 8080, bridge {bridge.name} {bridge.gateway} in {kept.path}")

            answers: dict[str, str] = {}

            async def query(box: anyns.Container) -> None:
                address = str(box.addresses[0].ip)
                for _ in range(100):  # httpd may still be starting: retry, bounded
                    try:
                        answers[address] = await ask(kept.path, address)
                        return
                    except OSError:
                        await trio.sleep(0.02)

            async with trio.open_nursery() as asking:
                for box in servers:
                    asking.start_soon(query, box)
            distinct = sorted(set(answers.values()))
            print(f"{len(answers)} answered, {len(distinct)} distinct hostnames: {distinct[0]} … {distinct[-1]}")
            for box in [hub, *servers]:
                box.kill()
            kept.release()
    print(f"done in {time.perf_counter() - started:.1f} s; every server, veth and the bridge are gone")
    if len(answers) != count or len(distinct) != count:
        raise SystemExit(1)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 100)
