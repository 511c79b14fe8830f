"""anyns from asyncio: a real HTTP service whose handler runs each request in its own container."""

from __future__ import annotations

import asyncio
import os

import pytest

import anyns
import anyns.aio


async def _handle(sup: anyns.aio.AsyncioSupervisor, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    """GET /N: run `echo $$ $(hostname)` in a container named box-N; answer with its output."""
    request = await reader.readuntil(b"\r\n\r\n")
    number = request.split()[1].decode().strip("/")
    done = await sup.run(anyns.ContainerSpec(argv=["sh", "-c", "echo $$ $(hostname)"], hostname=f"box-{number}"),
                         capture_stdout=True)
    body = done.stdout or b""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _get(port: int, number: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /{number} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return response.split(b"\r\n\r\n", 1)[1]


def test_http_service_runs_each_request_in_a_container() -> None:
    """100 concurrent HTTP requests over loopback, each answered by its own container."""

    async def main() -> list[bytes]:
        async with anyns.aio.open_supervisor() as sup:
            server = await asyncio.start_server(lambda r, w: _handle(sup, r, w), "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            async with server:
                return await asyncio.wait_for(asyncio.gather(*(_get(port, n) for n in range(100))), 60)

    bodies = asyncio.run(main())

    assert bodies == [f"2 box-{n}\n".encode() for n in range(100)]  # pid 2: pid 1 is the init


def test_same_errors_and_cancellation() -> None:
    """Errors arrive as the same anyns types; a cancelled run's container is reaped before CancelledError."""

    async def main() -> tuple[BaseException, int]:
        async with anyns.aio.open_supervisor() as sup:
            try:
                await sup.run(anyns.ContainerSpec(argv=["/no/such/program"]))
            except anyns.ExecError as e:
                error: BaseException = e
            task = asyncio.create_task(sup.run(anyns.ContainerSpec(argv=["sleep", "1000"])))
            for _ in range(1000):  # until its container exists (a process the kernel made: poll, bounded)
                if _children():
                    break
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return error, len(_children())

    error, left = asyncio.run(main())

    assert isinstance(error, anyns.ExecError) and isinstance(error.__cause__, FileNotFoundError)
    assert left == 0


def _children() -> list[int]:
    """Our container processes: children of this process that are `sleep`."""
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{name}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if int(fields[1]) == me and comm == "sleep":
                found.append(int(name))
    return found
