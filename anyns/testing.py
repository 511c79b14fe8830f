"""Helpers for tests and examples: tiny root filesystems.

``busybox_rootfs(dest)`` makes a root filesystem directory from a static
busybox (Debian's ``busybox-static`` package): enough for a shell and the
usual tools, in about a megabyte, ready for ``anyns.DirRootfs`` or as a lower
layer of ``anyns.OverlayRootfs``.
"""

from __future__ import annotations

import os
import shutil
from typing import Final

__all__ = ["BUSYBOX_CANDIDATES", "BusyboxMissing", "busybox_rootfs", "find_static_busybox"]

#: where Debian's busybox-static (and most distributions' busybox) lives
BUSYBOX_CANDIDATES: Final = ("/usr/bin/busybox", "/bin/busybox", "/usr/sbin/busybox", "/sbin/busybox")

#: the applets linked by default: a shell, coreutils-like tools, mount and ps
DEFAULT_APPLETS: Final = (
    "sh", "ash", "cat", "echo", "ls", "mkdir", "rm", "rmdir", "touch", "cp", "mv", "ln", "grep", "sed",
    "test", "true", "false", "sleep", "id", "hostname", "mount", "umount", "ps", "env", "wc", "head",
    "tail", "readlink", "stat", "kill", "pwd", "uname", "printf", "dd", "chmod", "find", "ipcs",
)


class BusyboxMissing(FileNotFoundError):
    """No static busybox on this host (install Debian's busybox-static)."""


def find_static_busybox() -> str:
    """The path of a statically linked busybox on this host.

    Raises:
        BusyboxMissing: none found, or only a dynamically linked one.
    """
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                head = f.read(65536)
            if b"ld-linux" not in head and b"/lib/ld-" not in head:
                return path
    raise BusyboxMissing("no static busybox found (apt-get install busybox-static)")


def busybox_rootfs(
    dest: str | os.PathLike[str],
    *,
    applets: tuple[str, ...] = DEFAULT_APPLETS,
    busybox: str | None = None,
) -> str:
    """Build a minimal root filesystem in ``dest`` (created if missing); return its path.

    It holds ``/bin/busybox`` with a link per applet, the empty mount points
    anyns needs (``/proc``, ``/dev``, ``/tmp``), and ``/etc/passwd`` and
    ``/etc/group`` with root. Use ``env={"PATH": "/bin"}`` in the spec.

    Raises:
        BusyboxMissing: no static busybox on the host.
    """
    source = busybox or find_static_busybox()
    root = os.fspath(dest)
    for name in ("bin", "etc", "proc", "dev", "tmp", "root"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    target = os.path.join(root, "bin", "busybox")
    shutil.copy2(source, target)
    for applet in applets:
        link = os.path.join(root, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")
    return root
