"""An echo server and three clients, each in its own container, talking over a bridge.

    sudo python examples/bridge_echo.py

Needs root, and python3 in the host's /usr (the containers see the host's
/usr read-only). It runs in a second or two.

The machine's own network is never touched: a "hub" container provides a
network namespace, kept alive at a file in a temporary directory, and the
bridge lives there (``anyns.Bridge(netns=...)``). Each container gets a veth
pair into that bridge, an address of the subnet and a default route via the
bridge's own address. The server prints "listening" once it accepts
connections, so the clients start only then; each client sends a line by
address and prints the reply. Everything is gone when the script ends.
"""

import tempfile
from functools import partial
from pathlib import Path

import trio

import anyns

PORT = 7000

SERVER = """
import socket, sys
srv = socket.socket()
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(16)
print("listening", flush=True)
while True:
    conn, peer = srv.accept()
    with conn:
        data = conn.recv(1024)
        conn.sendall(f"echo to {peer[0]}: ".encode() + data)
"""

CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as c:
    c.sendall(sys.argv[3].encode())
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while chunk := c.recv(1024):
        reply += chunk
print(reply.decode())
"""


async def wait_for_line(stream: trio.abc.ReceiveStream, wanted: bytes) -> None:
    """Read ``stream`` until the line ``wanted`` has arrived."""
    data = b""
    while wanted + b"\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            raise RuntimeError(f"the server exited before printing {wanted!r}")
        data += chunk


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
            # check=False: killing the server and the hub is expected. stdout/stderr: never this
            # script's own (a container can reopen them via /proc/self/fd); PIPE where it is read.
            run = partial(sup.run, check=False, stdout=anyns.DEVNULL, stderr=anyns.DEVNULL)
            # The hub: a network namespace of its own, kept at a path, where the bridge goes.
            hub = await nursery.start(run, anyns.ContainerSpec(argv=["sleep", "1000"]))
            kept = hub.keep_namespace("net", Path(tmp) / "hubnet")
            bridge = anyns.Bridge(subnet="10.123.0.0/24", netns=kept.path)
            print(f"bridge {bridge.name} in {kept.path}, gateway {bridge.gateway}")

            server = await nursery.start(
                partial(run, stdout=anyns.PIPE),
                anyns.ContainerSpec(argv=["python3", "-I", "-c", SERVER, str(PORT)], network=bridge),
            )
            assert server.stdout is not None
            await wait_for_line(server.stdout, b"listening")
            address = server.addresses[0]
            print(f"server pid {server.pid} listening on {address.ip}:{PORT} ({address})")

            async def client(i: int) -> None:
                spec = anyns.ContainerSpec(
                    argv=["python3", "-I", "-c", CLIENT, str(address.ip), str(PORT), f"hello {i}"],
                    network=bridge,
                )
                async with trio.open_nursery() as inner:
                    box = await inner.start(partial(run, stdout=anyns.PIPE), spec)
                    assert box.stdout is not None
                    reply = b""
                    while chunk := await box.stdout.receive_some():
                        reply += chunk
                    await box.stdout.aclose()
                print(f"client {i} at {box.addresses[0].ip} (exit {box.returncode}): {reply.decode().strip()}")

            async with trio.open_nursery() as clients:
                for i in range(1, 4):
                    clients.start_soon(client, i)

            server.kill()
            await server.stdout.aclose()
            kept.release()
            hub.kill()
    print("done: containers reaped, veths deleted, bridge and hub namespace gone")


if __name__ == "__main__":
    trio.run(main)
