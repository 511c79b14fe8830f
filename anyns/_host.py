"""What this host and this process allow: the facts a plan is compiled against, probed by the supervisor.

* ``newroot_dir()``: the empty directory every container mounts its own root
  on, privately;
* ``probe_host()``: the ``HostLayout`` of ``_plan`` (the host's top-level
  links and directories, the ``/etc`` files a ``HostRootfs`` shares, whether
  this process is root, which cgroup hierarchies it uses);
* ``Rootless``: the policy of an unprivileged supervisor, which runs every
  container in a user namespace mapping its own uid and gid to root (like
  ``unshare -r``), or a wider map through ``newuidmap`` when ``/etc/subuid``
  grants one. The map texts and the helpers' argv are ``_userns``'s; this
  part needs the spec types, which the zygote side (``_userns``) must not
  import.

Synchronous, and never imports trio: the async parts (running the helpers)
are the supervisor's.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import attrs

from . import _cgroups, _userns
from ._errors import SpecError, UnsupportedError, ZygoteError
from ._plan import HostLayout
from ._spec import Bridge, ContainerSpec, HostRootfs, IdMap, Rootfs

__all__ = ["Rootless", "newroot_dir", "probe_host"]

#: top-level names of the host root a HostRootfs container sees as links or bind-mounted directories
_TOP_NAMES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def newroot_dir() -> str:
    """An empty directory every container mounts its own root on, privately (made if missing).

    Raises:
        ZygoteError: neither /run nor $TMPDIR can hold it.
    """
    for base in ("/run/anyns", os.path.join(tempfile.gettempdir(), f"anyns-{os.getuid()}")):
        path = os.path.join(base, "newroot")
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError:
            continue
        return path
    raise ZygoteError("no writable place for the container root mount point (/run or $TMPDIR)")


def probe_host(newroot: str, rootfs: Rootfs, cgroups: _cgroups.Cgroups | None) -> HostLayout:
    """The host layout a plan for ``rootfs`` is compiled against (a few stats of / and /etc)."""
    links: list[tuple[str, str]] = []
    dirs: list[str] = []
    for name in _TOP_NAMES:
        path = "/" + name
        if os.path.islink(path):
            links.append((name, os.readlink(path)))
        elif os.path.isdir(path):
            dirs.append(name)
    etc_files: list[str] = []
    etc_dirs: list[str] = []
    if isinstance(rootfs, HostRootfs):
        for name in rootfs.etc:
            path = "/etc/" + name
            if os.path.isdir(path):
                etc_dirs.append(name)
            elif os.path.exists(path):
                etc_files.append(name)
    return HostLayout(newroot=newroot, top_links=tuple(links), top_dirs=tuple(dirs),
                      etc_files=tuple(etc_files), etc_dirs=tuple(etc_dirs),
                      rootless=os.geteuid() != 0,
                      cgroup_v2=cgroups is not None and cgroups.v2 is not None,
                      cgroup_v1=tuple(",".join(sorted(h.controllers)) for h in cgroups.v1) if cgroups else ())


class Rootless:
    """An unprivileged supervisor's policy: every container in a user namespace mapping our ids to root.

    Attributes:
        own_map: our uid and gid as root, nothing else (what needs no helper).
        wide_map: with ``/etc/subuid`` and ``/etc/subgid`` ranges and
            ``newuidmap``/``newgidmap``: our ids as root, then those ranges
            from 1 on; else None.
    """

    __slots__ = ("_specs", "own_map", "wide_map")

    #: specs remembered with their rootless form; beyond this many the memory is cleared
    MAX_SPECS = 512

    def __init__(self) -> None:
        self.own_map = IdMap(uid=(0, os.geteuid(), 1), gid=(0, os.getegid(), 1))
        self.wide_map = _subordinate_map()
        self._specs: dict[ContainerSpec, ContainerSpec] = {}

    def spec(self, spec: ContainerSpec) -> ContainerSpec:
        """``spec`` as an unprivileged supervisor runs it: in a user namespace mapping our ids to root.

        Raises:
            UnsupportedError: what needs privileges this process lacks (a bridge;
                a map of more than our own ids, which needs newuidmap).
        """
        cached = self._specs.get(spec)
        if cached is not None:
            return cached
        hint = "run the supervisor as root for this"
        if isinstance(spec.network, Bridge):
            raise UnsupportedError(f"rootless: a Bridge needs CAP_NET_ADMIN on the host ({hint})")
        if spec.user_ns is not None and spec.user_ns != self.own_map and self.wide_map is None:
            raise UnsupportedError("rootless: an unprivileged supervisor can only map its own uid and gid "
                                   f"(IdMap(uid=(0, {os.geteuid()}, 1), gid=(0, {os.getegid()}, 1))); wider "
                                   "ranges need newuidmap and newgidmap (Debian: uidmap) and ranges for this "
                                   "user in /etc/subuid and /etc/subgid")
        try:
            rootless = attrs.evolve(spec, user_ns=spec.user_ns or self.wide_map or self.own_map)
        except SpecError as e:
            raise UnsupportedError(f"rootless: {e} ({hint})") from None
        if len(self._specs) >= self.MAX_SPECS:
            self._specs.clear()
        self._specs[spec] = rootless
        return rootless

    def needs_helpers(self, id_map: IdMap) -> bool:
        """Whether ``id_map`` is written through newuidmap/newgidmap (more than our own ids)."""
        return id_map != self.own_map


def _subordinate_map() -> IdMap | None:
    """Our uid and gid as root, then /etc/subuid and /etc/subgid ranges from 1 on; None without them or the helpers."""
    if shutil.which("newuidmap") is None or shutil.which("newgidmap") is None:
        return None
    maps = []
    for path, own in (("/etc/subuid", os.geteuid()), ("/etc/subgid", os.getegid())):
        ranges: list[tuple[int, int, int]] = [(0, own, 1)]
        inside = 1
        for start, count in _userns.subordinate_ranges(path, os.geteuid()):
            ranges.append((inside, start, count))
            inside += count
        if len(ranges) == 1:
            return None
        maps.append(ranges)
    try:
        return IdMap(uid=maps[0], gid=maps[1])
    except SpecError:  # overlapping ranges in the files: use the single-id map
        return None
