"""A "pod": three containers sharing one network and one IPC namespace.

The first container only holds the namespaces (it sleeps); a web server and
a client join them with ``anyns.Join(net=first, ipc=first)``, so the client
reaches the server on the pod's own 127.0.0.1:8080, which the host cannot
see. Each member keeps its own hostname, mounts and pid namespace.

Run it as root (it creates namespaces):

    python examples/pod.py
"""

from functools import partial

import trio

import anyns

SERVER = """
import http.server, socket

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {socket.gethostname()}, path {self.path}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 8080), Hello)
print("listening", flush=True)
server.serve_forever()
"""

CLIENT = """
import socket, urllib.request
with urllib.request.urlopen("http://127.0.0.1:8080/pod") as reply:
    print(f"{socket.gethostname()} got: {reply.read().decode().strip()}")
"""


async def main() -> None:
    async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
        # check=False: these are killed at the end, which is not a failure
        # stdout/stderr: never this script's own (a container can reopen them via /proc/self/fd)
        run = partial(sup.run, check=False, stdout=anyns.DEVNULL, stderr=anyns.DEVNULL)
        holder = await nursery.start(run, anyns.ContainerSpec(argv=["sleep", "1000"], hostname="pod"))
        pod = anyns.Join(net=holder, ipc=holder)

        web_spec = anyns.ContainerSpec(argv=["python3", "-I", "-c", SERVER], hostname="web", join=pod)
        web = await nursery.start(partial(run, web_spec, stdout=anyns.PIPE))
        async with web.stdout:
            line = await web.stdout.receive_some()  # the server is listening once it says so
            print(f"web: {line.decode().strip()}")

            client_spec = anyns.ContainerSpec(argv=["python3", "-I", "-c", CLIENT], hostname="client", join=pod)
            done = await sup.run(client_spec, capture_stdout=True, capture_stderr=True)
            print(f"client: {done.stdout.decode().strip()}")

            named = await holder.exec(["hostname"], capture_stdout=True, capture_stderr=True)
            print(f"holder's hostname (by exec): {named.stdout.decode().strip()}")
            for kind in ("net", "ipc", "uts", "pid"):
                shared = holder.namespaces[kind] == web.namespaces[kind]
                print(f"{kind:>4}: holder {holder.namespaces[kind]}, web {web.namespaces[kind]}, "
                      f"{'shared' if shared else 'separate'}")

            holder.kill()
            web.kill()


if __name__ == "__main__":
    trio.run(main)
