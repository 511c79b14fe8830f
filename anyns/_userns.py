"""User namespaces: the uid/gid maps (host half); the native core sets the identity inside.

The order (docs/spawn-path.md §3): clone3 makes the child in a new user
namespace (and its pid namespace, owned by it); the child blocks on its go
pipe at once. The supervisor, in the parent namespace, writes
``/proc/PID/uid_map`` and ``gid_map``, then the go byte. Only then does the
child become root inside (the ``become_root`` op) and unshare the other
namespaces, which the new user namespace then owns, so it may mount, set
the hostname and bring ``lo`` up in them.

A root supervisor may map any ranges, so ``setgroups`` is never denied
(``apt`` and ``su`` keep working inside); an unprivileged writer would have
to deny it (not supported yet).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


# --------------------------------------------------------------------------- host half


def map_text(ranges: Iterable[tuple[int, int, int]]) -> bytes:
    """The text of a uid_map or gid_map: one ``inside outside count`` line per range."""
    return "".join(f"{inside} {outside} {count}\n" for inside, outside, count in ranges).encode()


def write_maps_from_parent(pid: int, uid_map: bytes, gid_map: bytes, deny_setgroups: bool = False) -> None:
    """Write the maps of the user namespace process ``pid`` was born in.

    ``deny_setgroups``: write ``deny`` to its setgroups file first, which an
    unprivileged writer must do before gid_map (user_namespaces(7)).

    Raises:
        OSError: with ``filename`` set to the file that was refused.
    """
    writes = [("uid_map", uid_map), ("gid_map", gid_map)]
    if deny_setgroups:
        writes.insert(0, ("setgroups", b"deny"))
    for name, text in writes:
        path = f"/proc/{pid}/{name}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from None


def subordinate_ranges(path: str, uid: int) -> list[tuple[int, int]]:
    """``(start, count)`` ranges /etc/subuid or /etc/subgid grants user ``uid`` (by name or number)."""
    import pwd

    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    ranges = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        owner, _, rest = line.strip().partition(":")
        start, _, count = rest.partition(":")
        if owner in (name, str(uid)) and start.isdigit() and count.isdigit() and int(count) > 0:
            ranges.append((int(start), int(count)))
    return ranges


def helper_argv(tool: str, pid: int, ranges: Iterable[tuple[int, int, int]]) -> list[str]:
    """``newuidmap PID inside outside count ...`` (or newgidmap): the setuid helpers of Debian's uidmap."""
    return [tool, str(pid), *(str(n) for r in ranges for n in r)]


# --------------------------------------------------------------------------- child half


