# anyns: notest  (needs debootstrap and the network; see the docstring)
"""Not run in CI: builds a full Debian root (a few minutes, ~200 MB download) and runs containers on it.

    sudo python examples/debootstrap_rootfs.py [DIR [MIRROR]]

Needs root and ``debootstrap`` (Debian: apt-get install debootstrap). It runs
``debootstrap --variant=minbase bookworm DIR [MIRROR]`` (DIR defaults to
/var/tmp/anyns-bookworm; an existing root there is reused), which makes the
same kind of directory as ``lxc-create --template=download`` unpacks into
/var/lib/lxc/NAME/rootfs. Either works as an anyns root:

* ``anyns.DirRootfs(DIR)``: the directory itself, read-only;
* ``anyns.OverlayRootfs(DIR)``: a copy-on-write root per container, whose
  changes vanish with it (``upper=`` keeps them).

Each runs ``cat /etc/os-release``; the overlay container also writes a
file, which does not appear in DIR.
"""

import os
import shutil
import subprocess
import sys

import trio

import anyns

DEFAULT_DIR = "/var/tmp/anyns-bookworm"


def ensure_rootfs(path: str, mirror: str | None) -> None:
    """Run debootstrap into ``path`` unless a root is already there."""
    if os.path.exists(os.path.join(path, "etc", "os-release")):
        print(f"reusing the root filesystem in {path}")
        return
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        sys.exit("debootstrap_rootfs: debootstrap is not installed (Debian/Ubuntu: apt-get install debootstrap)")
    if os.geteuid() != 0:
        sys.exit("debootstrap_rootfs: debootstrap and anyns need root; run with sudo")
    command = [debootstrap, "--variant=minbase", "bookworm", path, *([mirror] if mirror else [])]
    print("running:", " ".join(command))
    result = subprocess.run(command)
    if result.returncode != 0:
        sys.exit(f"debootstrap_rootfs: debootstrap failed with status {result.returncode}")


async def main(path: str, marker: str) -> None:
    # Debian's PATH; the container's environment is exactly what the spec says.
    env = {"PATH": anyns.ContainerSpec(argv=["true"]).env["PATH"], "HOME": "/root"}
    async with anyns.open_supervisor() as sup:
        print("--- DirRootfs (read-only):")
        done = await sup.run(
            anyns.ContainerSpec(argv=["cat", "/etc/os-release"], rootfs=anyns.DirRootfs(path), env=env),
            capture_stdout=True,
            capture_stderr=True,
        )
        print(done.stdout.decode(), end="")

        print("--- OverlayRootfs (a private writable layer):")
        script = f"cat /etc/os-release; echo hello > {marker} && echo wrote {marker}"
        done = await sup.run(
            anyns.ContainerSpec(argv=["/bin/sh", "-c", script], rootfs=anyns.OverlayRootfs(path), env=env),
            capture_stdout=True,
            capture_stderr=True,
        )
        print(done.stdout.decode(), end="")


if __name__ == "__main__":
    target = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR)
    ensure_rootfs(target, sys.argv[2] if len(sys.argv) > 2 else None)
    written = f"/root/written-by-anyns-{os.getpid()}"
    try:
        trio.run(main, target, written)
    except anyns.AnynsError as e:
        sys.exit(f"debootstrap_rootfs: {e}")
    print(f"{written} in {target} afterwards: {os.path.exists(target + written)}")
