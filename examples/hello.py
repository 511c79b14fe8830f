"""Run one container, capture its output, and look at it from outside.

    python examples/hello.py
"""

import os
from functools import partial

import trio

import anyns


async def main() -> None:
    spec = anyns.ContainerSpec(
        argv=["/bin/sh", "-c", "echo pid=$$ host=$(hostname); cat"],
        hostname="box1",
    )
    async with anyns.open_supervisor() as sup:
        done = await sup.run(spec, stdin=b"hello from the host\n", capture_stdout=True, capture_stderr=True)
        print(done.stdout.decode(), end="")

        async with trio.open_nursery() as nursery:
            # check=False: being killed below is expected, not a failure
            # stdout/stderr: never this script's own (a container can reopen them via /proc/self/fd)
            run = partial(sup.run, check=False, stdout=anyns.DEVNULL, stderr=anyns.DEVNULL)
            box = await nursery.start(run, anyns.ContainerSpec(argv=["sleep", "30"]))
            mine = anyns.namespaces_of(os.getpid())
            print(f"host pid {box.pid}, pid inside {box.ns_pid}")
            print(f"own net namespace: {box.namespaces['net'] != mine['net']}")
            box.kill()
        print(f"returncode {box.returncode}")


if __name__ == "__main__":
    trio.run(main)
