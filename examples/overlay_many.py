"""Start 50 containers at once on one copy-on-write root, and show the shared layer is never written.

    sudo python examples/overlay_many.py

Needs root (mount namespaces) and a static busybox (Debian: apt-get install
busybox-static). Builds a tiny root filesystem in a temporary directory,
uses it as the lower layer of an ``anyns.OverlayRootfs``, and starts 50
containers concurrently: each writes its own ``/data`` and ``/etc/motd``
and prints them. Each container's changes live in its own upper layer on
a tmpfs and vanish when it exits; the lower directory is compared before
and after.
"""

import hashlib
import os
import sys
import tempfile

import trio

import anyns
from anyns.testing import BusyboxMissing, busybox_rootfs

COUNT = 50


def fingerprint(root: str) -> str:
    """A digest of every name, mode, link target and file content below ``root``."""
    digest = hashlib.sha256()
    for top, dirs, files in sorted(os.walk(root)):
        for name in sorted(dirs + files):
            path = os.path.join(top, name)
            st = os.lstat(path)
            digest.update(f"{os.path.relpath(path, root)} {st.st_mode:o}\n".encode())
            if os.path.islink(path):
                digest.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


def spec_for(lower: str, i: int) -> anyns.ContainerSpec:
    """Container ``i``: write /data and /etc/motd (over the lower layer's), print them."""
    return anyns.ContainerSpec(
        argv=["/bin/sh", "-c", 'echo "box $BOX was here" > /data; echo "motd of $BOX" > /etc/motd; '
                               "cat /data /etc/motd"],
        rootfs=anyns.OverlayRootfs(lower),
        env={"PATH": "/bin", "BOX": str(i)},
    )


async def main(lower: str) -> None:
    outputs: dict[int, bytes] = {}

    async def one(sup: anyns.Supervisor, i: int) -> None:
        done = await sup.run(spec_for(lower, i), capture_stdout=True, capture_stderr=True)
        outputs[i] = done.stdout or b""

    before = fingerprint(lower)
    start = trio.current_time()
    async with anyns.open_supervisor() as sup, trio.open_nursery() as nursery:
        for i in range(COUNT):
            nursery.start_soon(one, sup, i)
    elapsed = trio.current_time() - start

    for i in sorted(outputs):
        print(f"{i:2}: {outputs[i].decode().strip().replace(chr(10), ' | ')}")
    own = sum(outputs[i] == f"box {i} was here\nmotd of {i}\n".encode() for i in range(COUNT))
    unchanged = fingerprint(lower) == before
    print(f"{COUNT} containers in {elapsed:.2f} s; {own} saw only their own writes; "
          f"lower layer unchanged: {unchanged}")
    print(f"lower layer /etc: {sorted(os.listdir(os.path.join(lower, 'etc')))}")
    if own != COUNT or not unchanged:
        sys.exit("overlay_many: isolation failed")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="anyns-overlay-") as tmp:
        try:
            root = busybox_rootfs(os.path.join(tmp, "lower"))
        except BusyboxMissing as e:
            sys.exit(f"overlay_many: {e}")
        trio.run(main, root)
