"""Mount propagation, narrated: what a mount made on one side does on the other.

    python examples/propagation_tour.py

The host side of each experiment is a tmpfs this example mounts on a
temporary directory and makes shared (``mount --make-shared``), so that
propagation can happen at all; it is unmounted again at the end. Each
container binds it at /s with a different ``propagation`` and then mounts
something under it, while the host mounts something under it too; who sees
what is printed. (mount_namespaces(7) explains the rules.)
"""

from __future__ import annotations

import functools
import os
import tempfile

import trio

import anyns

# In the container: mount a tmpfs at /s/from-container, report, wait for the
# host's turn (a line on stdin), report what it sees then, and try a bind.
SCRIPT = """
mkdir -p /s/from-container && mount -t tmpfs container /s/from-container && echo mounted
read _
[ -n "$(ls -A /s/from-host 2>/dev/null)" ] && echo "container sees the host's mount" \
    || echo "container does not see the host's mount"
mkdir -p /tmp/x && mount --bind /s /tmp/x 2>/dev/null && echo "container can bind it elsewhere" \
    || echo "container cannot bind it elsewhere"
"""

EXPLAIN = {
    "shared": "peers: mounts travel both ways",
    "slave": "a slave: mounts travel from the host in, never out",
    "private": "private: nothing travels either way",
    "unbindable": "private, and it cannot be bound anywhere else",
}


def mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


async def tour(sup: anyns.Supervisor, source: str, propagation: str) -> None:
    # The container mounts something itself: that needs CAP_SYS_ADMIN, which containers drop by default.
    spec = anyns.ContainerSpec(argv=["sh", "-c", SCRIPT], mounts=[anyns.Bind(source, "/s", propagation=propagation)],
                               capabilities=anyns.ALL_CAPABILITIES)
    print(f"\n== propagation={propagation!r}: {EXPLAIN[propagation]}")
    async with trio.open_nursery() as nursery:
        box = await nursery.start(functools.partial(sup.run, stdin=anyns.PIPE, stdout=anyns.PIPE,
                                                    stderr=anyns.STDOUT, check=False), spec)
        out = b""
        while b"mounted\n" not in out:
            out += await box.stdout.receive_some()
        there = os.path.join(source, "from-container")
        print("host sees the container's mount" if mounted(there) else "host does not see the container's mount")
        os.makedirs(os.path.join(source, "from-host"), exist_ok=True)
        await trio.run_process(["mount", "-t", "tmpfs", "host", os.path.join(source, "from-host")])
        await trio.run_process(["touch", os.path.join(source, "from-host", "file")])
        await box.stdin.send_all(b"go\n")
        async for chunk in box.stdout:
            out += chunk
        await box.stdin.aclose()
        await box.stdout.aclose()
    for line in out.decode().splitlines()[1:]:
        print(line)
    for leftover in ("from-host", "from-container"):
        path = os.path.join(source, leftover)
        while mounted(path):  # the host's own, and a propagated one
            await trio.run_process(["umount", path])


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        source = os.path.join(scratch, "shared")
        os.mkdir(source)
        await trio.run_process(["mount", "-t", "tmpfs", "tour", source])
        try:
            await trio.run_process(["mount", "--make-shared", source])
            async with anyns.open_supervisor() as sup:
                for propagation in ("shared", "slave", "private", "unbindable"):
                    await tour(sup, source, propagation)
        finally:
            with trio.CancelScope(shield=True):
                await trio.run_process(["umount", "-R", source], check=False)
    print("\nthe host's mount table is as it was")


if __name__ == "__main__":
    trio.run(main)
