"""Container specs: frozen, hashable attrs values, validated when they are built.

Validators check invariants only (absolute paths, name lengths, NUL bytes…)
and never touch the filesystem or the kernel: "does this exist?" is answered
at setup time, as a ``SetupError`` naming the path.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import itertools
import math
import operator
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, TypeVar

import attrs

from ._errors import SpecError
from ._security_defaults import (
    CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
)

__all__ = [
    "DEFAULT_PATH",
    "Bind",
    "Bridge",
    "ContainerSpec",
    "DirRootfs",
    "Environment",
    "File",
    "HostNetwork",
    "HostRootfs",
    "IdMap",
    "Join",
    "Seccomp",
    "JoinNetwork",
    "Limits",
    "Loopback",
    "OverlayRootfs",
    "Mount",
    "Namespaces",
    "Network",
    "Rootfs",
    "Tmpfs",
    "User",
]

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Namespaces(enum.IntFlag):
    """The namespaces a container gets of its own; the values are the CLONE_NEW* flags.

    Namespaces not in the set are shared with the supervisor.
    """

    TIME = 0x00000080
    MOUNT = 0x00020000
    CGROUP = 0x02000000
    UTS = 0x04000000
    IPC = 0x08000000
    USER = 0x10000000
    PID = 0x20000000
    NET = 0x40000000
    #: mount, PID, UTS, IPC and network (loopback only): what ``bwrap --unshare-all`` gives, minus user and cgroup.
    DEFAULT = MOUNT | PID | UTS | IPC | NET


def _fail(where: str, message: str) -> SpecError:
    return SpecError(f"{where}: {message}")


_T = TypeVar("_T")


def _shaped(where: str, convert: Callable[[Any], _T], value: Any) -> _T:
    """``convert(value)``; a TypeError or ValueError (a value of the wrong shape) becomes a SpecError."""
    try:
        return convert(value)
    except SpecError:
        raise
    except (TypeError, ValueError) as e:
        raise _fail(where, f"{e} (got {value!r})") from None


def _check_text(where: str, value: str) -> None:
    if not isinstance(value, str):
        raise _fail(where, f"expected a str, got {type(value).__name__}")
    if "\0" in value:
        raise _fail(where, "contains a NUL byte")
    try:
        # What the zygote does with it (it runs in UTF-8 mode): bytes that
        # os.fsdecode turned into surrogates survive, other lone surrogates don't.
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise _fail(where, f"cannot be encoded as a file system string: {value!r}") from None


def _check_abs_path(where: str, value: str) -> None:
    _check_text(where, value)
    if not value.startswith("/"):
        raise _fail(where, f"must be an absolute path, got {value!r}")


def _path(value: str | os.PathLike[str]) -> str:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _container_path(where: str, value: str) -> str:
    """A path inside the container: absolute, normalised, never leaving the root."""
    _check_abs_path(where, value)
    if ".." in value.split("/"):
        raise _fail(where, f"must not contain '..' components, got {value!r}")
    return posixpath.normpath(value).replace("//", "/")


class Environment(Mapping[str, str]):
    """An immutable, hashable mapping of environment variables."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = dict(items.items() if isinstance(items, Mapping) else items)
        for key, value in pairs.items():
            _check_text("env key", key)
            _check_text(f"env[{key!r}]", value)
            if not key or "=" in key:
                raise _fail("env", f"invalid variable name {key!r}")
        self._items: dict[str, str] = pairs
        self._hash = hash(frozenset(pairs.items()))

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Environment({self._items!r})"


def _env_of(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> Environment:
    return value if isinstance(value, Environment) else Environment(value)


def _to_env(value: Any) -> Any:
    return _shaped("env", _env_of, value)


#: /etc entries a HostRootfs shows by default (those present on the host): what
#: user lookup, name resolution, the dynamic loader and Debian's alternatives need.
HOST_ETC: Final = (
    "passwd", "group", "hosts", "resolv.conf", "nsswitch.conf", "localtime", "ld.so.cache",
    "alternatives", "ssl",
)


def _etc_of(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise _fail("etc", f"expected a sequence of /etc entry names, got the string {value!r}")
    return tuple(value)


def _to_etc(value: Any) -> Any:
    return _shaped("etc", _etc_of, value)


@attrs.frozen
class HostRootfs:
    """The default root: a read-only view of the host's ``/usr``.

    ``/bin``, ``/lib``, ``/lib64`` and ``/sbin`` appear as they are on the host
    (links into ``/usr`` on merged-usr systems, read-only binds otherwise), and
    the ``/etc`` entries in ``etc`` that exist on the host are bound read-only.
    Everything else of the host is invisible. The root itself is a fresh tmpfs,
    so the container may create files and directories in it.
    """

    etc: tuple[str, ...] = attrs.field(default=HOST_ETC, converter=_to_etc)

    @etc.validator
    def _check_etc(self, _: object, value: tuple[str, ...]) -> None:
        for name in value:
            _check_text("HostRootfs.etc", name)
            if not name or name.startswith("/") or ".." in name.split("/"):
                raise _fail("HostRootfs.etc", f"expected a name relative to /etc, got {name!r}")


@attrs.frozen
class DirRootfs:
    """A root filesystem directory on the host (such as one ``lxc-create`` unpacks).

    It is bind-mounted as the container's root, read-only unless ``readonly=False``.
    ``/proc``, ``/dev`` and ``/tmp`` are mounted over its directories of those
    names; in a read-only root they must already exist.
    """

    path: str = attrs.field(converter=_path)
    readonly: bool = attrs.field(default=True, kw_only=True)

    @path.validator
    def _check_path(self, _: object, value: str) -> None:
        _check_abs_path("DirRootfs.path", value)


def _paths_of(value: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> tuple[str, ...]:
    if isinstance(value, (str, os.PathLike)):
        return (_path(value),)
    return tuple(_path(v) for v in value)


def _to_paths(value: Any) -> Any:
    return _shaped("lower", _paths_of, value)


def _check_overlay_path(where: str, value: str) -> None:
    _check_abs_path(where, value)
    # overlayfs takes its layers in one option string: these would split it
    for bad in (",", ":", "\\"):
        if bad in value:
            raise _fail(where, f"overlay paths cannot contain {bad!r}, got {value!r}")


@attrs.frozen
class OverlayRootfs:
    """A copy-on-write root: read-only ``lower`` directories, and a writable layer per container.

    ``lower`` lists the layers top first (as overlayfs does); they are never
    written. Each container gets its own upper layer on a tmpfs, which
    vanishes with it, unless ``upper`` names a host directory: then the
    container's changes are kept in ``upper/diff`` (``upper/work`` is
    overlayfs's scratch space). Two running containers cannot share one
    ``upper``. Missing mount points (``/dev``, ``/proc``, ``/tmp``, the
    spec's mounts) are created in the upper layer.

    ``size`` bounds the container's own writable layer (parsed like
    ``Limits.memory``: ``"1G"``, bytes): the tmpfs under the upper layer
    gets that size, and a write past it fails with ``ENOSPC`` inside. The
    default is ``DEFAULT_OVERLAY_SIZE`` (1 GiB), never the kernel's share
    of the RAM. With a host ``upper`` the host filesystem holds the changes
    and bounds them: ``size`` is then None, and giving one is a ``SpecError``.
    """

    lower: tuple[str, ...] = attrs.field(converter=_to_paths)
    upper: str | None = attrs.field(default=None, kw_only=True)
    size: int | None = attrs.field(kw_only=True)

    @size.default
    def _default_size(self) -> int | None:
        return None if self.upper is not None else DEFAULT_OVERLAY_SIZE

    def __attrs_post_init__(self) -> None:
        if not self.lower:
            raise _fail("OverlayRootfs.lower", "needs at least one directory")
        for i, path in enumerate(self.lower):
            _check_overlay_path(f"OverlayRootfs.lower[{i}]", path)
        if self.upper is not None:
            object.__setattr__(self, "upper", _path(self.upper))
            assert self.upper is not None
            _check_overlay_path("OverlayRootfs.upper", self.upper)
            if self.size is not None:
                raise _fail("OverlayRootfs.size", "bounds the container's own writable layer (a tmpfs); with a "
                                                  "host upper directory its filesystem holds the changes: "
                                                  "leave size out, or drop upper")
        elif self.size is None:
            raise _fail("OverlayRootfs.size", "expected a size like '1G' (None only with a host upper)")
        else:
            object.__setattr__(self, "size", parse_size("OverlayRootfs.size", self.size))


Rootfs = HostRootfs | DirRootfs | OverlayRootfs

#: what ``ContainerSpec.root_propagation`` accepts: how the container's whole tree relates to the host's
ROOT_PROPAGATIONS: Final = ("slave", "private")

_PROPAGATIONS: Final = (None, "shared", "private", "slave", "unbindable")


@attrs.frozen(cache_hash=True)
class Bind:
    """Bind-mount a host file or directory at ``target`` inside the container.

    A missing mount point is created inside the container's root (a file for a
    file source, a directory otherwise).

    ``propagation`` (mount_namespaces(7)): ``"shared"`` mounts made under it
    in the container appear on the host and back; ``"slave"`` host mounts
    under the source appear in the container, nothing flows back;
    ``"private"`` neither; ``"unbindable"`` private, and it cannot be bound
    elsewhere. None follows ``ContainerSpec.root_propagation``, except that a
    read-only bind is then private: mounts the host added later would arrive
    read-write.

    ``nodev`` and ``nosuid`` are on by default: a container keeps CAP_MKNOD
    (Docker's set), and on a mount without ``nodev`` a device node it makes
    (``b 8 0``) opens the host's disk; a setuid file a container leaves in a
    shared directory runs as its owner for whoever starts it later. Set
    ``nodev=False`` only to bind device nodes themselves (``/dev/fuse``), and
    only for a program you trust: every node under such a bind is the host's
    device. ``nosuid=False`` lets setuid files under it work (unless
    ``no_new_privileges``).

    ``follow_symlinks=False`` resolves ``source`` on the host without
    following any symlink on the way (``openat2(RESOLVE_NO_SYMLINKS)``, once):
    use it when the source lies in a directory a container can write, where a
    link it planted would otherwise send the bind to any host path. A source
    that is or passes through a symlink is then an error (ELOOP).
    """

    source: str = attrs.field(converter=_path)
    target: str = attrs.field(converter=_path)
    readonly: bool = attrs.field(default=False, kw_only=True)
    recursive: bool = attrs.field(default=True, kw_only=True)
    propagation: str | None = attrs.field(default=None, kw_only=True)
    nosuid: bool = attrs.field(default=True, kw_only=True)
    nodev: bool = attrs.field(default=True, kw_only=True)
    noexec: bool = attrs.field(default=False, kw_only=True)
    follow_symlinks: bool = attrs.field(default=True, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_abs_path("Bind.source", self.source)
        object.__setattr__(self, "target", _container_path("Bind.target", self.target))
        if self.propagation not in _PROPAGATIONS:
            raise _fail("Bind.propagation", f"expected one of {_PROPAGATIONS[1:]}, got {self.propagation!r}")


@attrs.frozen
class Tmpfs:
    """Mount a fresh tmpfs at ``target``; ``size`` in bytes (None: the kernel's default)."""

    target: str = attrs.field(converter=_path)
    size: int | None = attrs.field(default=None, kw_only=True)
    mode: int = attrs.field(default=0o755, kw_only=True)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "target", _container_path("Tmpfs.target", self.target))
        if self.size is not None and (not isinstance(self.size, int) or self.size <= 0):
            raise _fail("Tmpfs.size", f"expected a positive number of bytes, got {self.size!r}")
        if not isinstance(self.mode, int) or not 0 <= self.mode <= 0o7777:
            raise _fail("Tmpfs.mode", f"expected a file mode such as 0o755, got {self.mode!r}")


Mount = Bind | Tmpfs

#: the size of a container's /tmp (``ContainerSpec.tmp_size``): a fixed bound,
#: not the kernel's default of half the RAM for each container. Room for a
#: compiler's or a test suite's scratch files; a cap, not a reservation (a
#: tmpfs holds only what is written to it)
DEFAULT_TMP_SIZE: Final = 256 << 20
#: the size of a container's /dev/shm (``ContainerSpec.shm_size``): Docker's default
DEFAULT_SHM_SIZE: Final = 64 << 20
#: the size of an ``OverlayRootfs``'s own writable layer (``OverlayRootfs.size``)
DEFAULT_OVERLAY_SIZE: Final = 1 << 30
#: the most ``ContainerSpec.files`` may hold in all: the contents travel in
#: the plan (to the zygote, which keeps it while the spec is in use)
MAX_FILES_SIZE: Final = 16 << 20
#: the most files ``ContainerSpec.files`` may name
MAX_FILES: Final = 1024
#: where no file may go: the kernel's views and /dev (a small tmpfs of its nodes)
_NO_FILES_UNDER: Final = ("/proc", "/sys", "/dev")
#: HostRootfs paths that are the host's, bound read-only (or links into /usr)
_HOST_ROOT_TOPS: Final = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def _file_data(value: Any) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _fail("File.data", f"a str is written as UTF-8, and this one cannot be: {e}") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise _fail("File.data", f"expected bytes or a str, got {type(value).__name__}")


def _data_repr(data: bytes) -> str:
    return repr(data) if len(data) <= 32 else f"<{len(data)} bytes>"


@attrs.frozen
class File:
    """A file a container finds in place when its program starts (``ContainerSpec(files=...)``).

    ``data`` is bytes, or a str (written as UTF-8); ``mode`` its permission
    bits (0o644 by default; 0o755 for a program); setuid and setgid bits are
    refused. The file and the directories made for it belong to root inside
    the container (directories 0o755).
    """

    data: bytes = attrs.field(converter=_file_data, repr=_data_repr)
    mode: int = attrs.field(default=0o644, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.mode, bool) or not isinstance(self.mode, int) or not 0 <= self.mode <= 0o777:
            raise _fail("File.mode", f"expected permission bits from 0 to 0o777 such as 0o755, got {self.mode!r}")


def _files_of(value: Any) -> tuple[tuple[str, File], ...]:
    """``{path: bytes | str | File}`` (or pairs) -> ``((path, File), ...)`` sorted by normalised path."""
    items = value.items() if isinstance(value, Mapping) else value
    out: dict[str, File] = {}
    for item in items:
        fields: tuple[Any, ...] = tuple(item)
        if len(fields) != 2:
            raise _fail("files", f"expected a mapping of container path -> bytes, str or anyns.File, got {value!r}")
        raw, content = _path(fields[0]), fields[1]
        where = f"files[{raw!r}]"
        path = _container_path(where, raw)
        if path == "/":
            raise _fail(where, "must name a file, not the root")
        if path in out:
            raise _fail(where, f"names {path!r} twice")
        try:
            out[path] = content if isinstance(content, File) else File(content)
        except SpecError as e:
            raise _fail(where, str(e)) from None
    if len(out) > MAX_FILES:
        raise _fail("files", f"at most {MAX_FILES} files, got {len(out)}")
    total = sum(len(f.data) for f in out.values())
    if total > MAX_FILES_SIZE:
        raise _fail("files", f"{total} bytes in all, more than the {MAX_FILES_SIZE >> 20} MiB files may hold "
                             f"(the contents travel in the container's plan): bind a host directory read-only "
                             f"(anyns.Bind(..., readonly=True)) for larger data")
    return tuple(sorted(out.items()))


def _to_files(value: Any) -> Any:
    return _shaped("files", _files_of, value)


def _to_tmp_size(value: Any) -> int:
    return parse_size("tmp_size", value)


def _to_shm_size(value: Any) -> int:
    return parse_size("shm_size", value)


def _under(path: str, top: str) -> bool:
    """Container path ``path`` is ``top`` or lies below it."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def file_mount(spec: ContainerSpec, path: str) -> str | Mount:
    """The mount container path ``path`` of ``spec.files`` lands on.

    ``"/"`` for the root, ``"/tmp"`` or ``"/dev/shm"`` for those tmpfs of the
    container's own, or the last of ``spec.mounts`` whose target is its
    deepest ancestor (a later mount at the same target covers an earlier one).
    """
    best: str | Mount = "/"
    depth = 0
    for target, mount in (("/tmp", "/tmp"), ("/dev/shm", "/dev/shm"), *((m.target, m) for m in spec.mounts)):
        if _under(path, target) and len(target) >= depth:
            best, depth = mount, len(target)
    return best


def files_on_root(spec: ContainerSpec) -> tuple[tuple[str, File], ...]:
    """The files of ``spec.files`` that land on the root (not on /tmp, /dev/shm or a ``Tmpfs`` of the spec)."""
    return tuple((path, f) for path, f in spec.files if file_mount(spec, path) == "/")


def _check_files(spec: ContainerSpec) -> None:
    """Where ``spec.files`` may go; see ``ContainerSpec.files``."""
    if not spec.files:
        return
    if "mnt" in joined_namespaces(spec):
        raise _fail("files", "a container that joins another's mount namespace has no root of its own to place "
                             "files on")
    paths = {path for path, _ in spec.files}
    tops = dict.fromkeys(("/tmp", "/dev/shm", *_NO_FILES_UNDER, *(m.target for m in spec.mounts)))
    for path, _ in spec.files:
        where = f"files[{path!r}]"
        for ancestor in _ancestors(path):
            if ancestor in paths:
                raise _fail(where, f"lies below {ancestor!r}, another of the files")
        for top in tops:
            if _under(top, path):
                raise _fail(where, f"is the directory where {top!r} is mounted: a file cannot go there")
        mount = file_mount(spec, path)
        if isinstance(mount, Bind):
            raise _fail(where, f"lies under the Bind at {mount.target!r}: files are never written into a host "
                               f"directory (bind the file itself, or place it elsewhere)")
        if mount != "/":
            continue
        for top in _NO_FILES_UNDER:
            if _under(path, top):
                raise _fail(where, f"cannot go under {top} (only /dev/shm takes files)")
        rootfs = spec.rootfs
        if isinstance(rootfs, HostRootfs):
            for top in (*_HOST_ROOT_TOPS, *(f"/etc/{name}" for name in rootfs.etc)):
                if _under(path, top):
                    raise _fail(where, f"lies under {top}, the host's, bound read-only into a HostRootfs"
                                + (f": leave {top[5:]!r} out of HostRootfs(etc=...) to place it"
                                   if top.startswith("/etc/") else ""))
        elif isinstance(rootfs, DirRootfs):
            if not rootfs.readonly:
                raise _fail(where, "DirRootfs(readonly=False) is the host directory itself, and files are never "
                                   "written to the host: use OverlayRootfs(path) (a writable layer of the "
                                   "container's own), a read-only DirRootfs, or a path under /tmp")
            for bad in (",", ":", "\\"):
                if bad in rootfs.path:
                    raise _fail(where, f"files reach a read-only DirRootfs through an overlay, whose layer paths "
                                       f"cannot contain {bad!r}: {rootfs.path!r}")
        elif rootfs.upper is not None:
            raise _fail(where, "an OverlayRootfs with a host upper directory would keep the file there (files are "
                               "never written to the host): drop upper, or place it under /tmp")


def _ancestors(path: str) -> Iterator[str]:
    """The directories above container path ``path``, deepest first (not ``/``)."""
    head = posixpath.dirname(path)
    while head != "/":
        yield head
        head = posixpath.dirname(head)

_MAX_HOSTNAME: Final = 64  # HOST_NAME_MAX; sethostname(2) refuses longer names
_IFNAMSIZ: Final = 16  # interface names are at most 15 bytes


@attrs.frozen
class Loopback:
    """An own network namespace with only ``lo``, up: the default with ``Namespaces.NET``."""


@attrs.frozen
class HostNetwork:
    """No network namespace: the container uses the host's interfaces (like ``--net=host``)."""


def _to_subnet(value: Any) -> str:
    try:
        network = ipaddress.ip_network(str(value), strict=True)
    except ValueError as e:
        raise _fail("Bridge.subnet", f"not a network address: {e}") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise _fail("Bridge.subnet", f"only IPv4 subnets are supported, got {value!r}")
    if network.prefixlen > 30:
        raise _fail("Bridge.subnet", f"{network} has no room for a bridge and a container (/30 at most)")
    return str(network)


@attrs.frozen
class Bridge:
    """A bridge on the supervisor's side and a veth pair per container, with an address each.

    The bridge is created on first use with the subnet's first address (the
    gateway) and removed when the supervisor that created it exits; an existing
    one of that name is reused. Each container gets ``eth0`` (created directly
    in its namespace), the next free address of ``subnet`` (round-robin, so an
    address just freed is not handed out again at once), ``lo`` up, and a
    default route via the gateway; its program starts once all of that is in
    place.

    Args:
        name: the bridge's interface name (at most 15 bytes).
        subnet: an IPv4 network such as ``"10.88.0.0/16"``.
        netns: the network namespace file the bridge lives in (for example one
            kept with ``keep_namespace``); default: the supervisor's own.
    """

    name: str = "anyns0"
    subnet: str = attrs.field(default="10.88.0.0/16", converter=_to_subnet)
    netns: str | None = attrs.field(default=None, kw_only=True, converter=attrs.converters.optional(_path))

    def __attrs_post_init__(self) -> None:
        _check_text("Bridge.name", self.name)
        encoded = self.name.encode()
        bad = any(c in self.name for c in "/: \t\n") or self.name in (".", "..")
        if not encoded or len(encoded) >= _IFNAMSIZ or bad:
            raise _fail("Bridge.name", f"must be an interface name of 1 to {_IFNAMSIZ - 1} bytes, got {self.name!r}")
        if self.netns is not None:
            _check_abs_path("Bridge.netns", self.netns)

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The subnet, parsed."""
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> ipaddress.IPv4Interface:
        """The bridge's own address (the subnet's first host): the host side, and the containers' route."""
        network = self.network
        return ipaddress.IPv4Interface(f"{network.network_address + 1}/{network.prefixlen}")


def _is_container(value: Any) -> bool:
    """A running anyns.Container, by its class (the spec layer cannot import it).

    Looks at the type, not the instance: ``Container.namespaces`` is a
    property that fails once the container has exited.
    """
    return hasattr(type(value), "namespaces") and hasattr(value, "pid")


def _source_path(value: Any) -> Any:
    return _path(value) if isinstance(value, os.PathLike) else value


@attrs.frozen
class JoinNetwork:
    """Share an existing network namespace, pod-style.

    ``source`` is a running ``anyns.Container`` or a namespace file
    (``/proc/PID/ns/net``, ``/run/netns/NAME``, one kept with ``keep_namespace``).
    """

    source: Any = attrs.field(converter=_source_path)

    def __attrs_post_init__(self) -> None:
        value = self.source
        if isinstance(value, str):
            _check_abs_path("JoinNetwork.source", value)
        elif not _is_container(value):
            raise _fail("JoinNetwork.source", f"expected an anyns.Container or a namespace file path, got {value!r}")


Network = Loopback | HostNetwork | Bridge | JoinNetwork

#: namespace kinds as /proc/PID/ns names them, with their CLONE_NEW* flags
KIND_FLAGS: Final = {
    "mnt": Namespaces.MOUNT, "pid": Namespaces.PID, "net": Namespaces.NET, "ipc": Namespaces.IPC,
    "uts": Namespaces.UTS, "cgroup": Namespaces.CGROUP, "time": Namespaces.TIME, "user": Namespaces.USER,
}
#: the order a process enters namespaces in: the user namespace first, as it owns the others
ENTRY_ORDER: Final = ("user", *(kind for kind in KIND_FLAGS if kind != "user"))


def _check_join_source(instance: Join, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, str):
        _check_abs_path(f"Join.{attribute.name}", value)
        return
    # A running anyns.Container (the spec layer cannot import it): it has a pid and its namespaces.
    if not _is_container(value):
        raise _fail(f"Join.{attribute.name}", f"expected an anyns.Container or a namespace file path, got {value!r}")


def _join_source(value: Any) -> Any:
    return _path(value) if isinstance(value, os.PathLike) else value


@attrs.frozen
class Join:
    """Namespaces a new container shares with others instead of getting its own (pod-style).

    Each value is a running ``anyns.Container`` or the path of a namespace
    file (``/proc/PID/ns/KIND``, or one kept with ``Container.keep_namespace``
    / ``anyns.persist_namespace``). A joined kind overrides
    ``ContainerSpec.namespaces`` for that kind.

    Joining ``pid`` makes the new container one more process in that pid
    namespace (not its pid 1); joining ``mnt`` uses that container's whole
    file system view, so the spec's ``rootfs`` and ``mounts`` do not apply.
    """

    mnt: Any = attrs.field(default=None, kw_only=True, converter=_join_source, validator=_check_join_source)
    pid: Any = attrs.field(default=None, kw_only=True, converter=_join_source, validator=_check_join_source)
    net: Any = attrs.field(default=None, kw_only=True, converter=_join_source, validator=_check_join_source)
    ipc: Any = attrs.field(default=None, kw_only=True, converter=_join_source, validator=_check_join_source)
    uts: Any = attrs.field(default=None, kw_only=True, converter=_join_source, validator=_check_join_source)
    cgroup: Any = attrs.field(default=None, kw_only=True, converter=_join_source, validator=_check_join_source)
    time: Any = attrs.field(default=None, kw_only=True, converter=_join_source, validator=_check_join_source)

    def kinds(self) -> dict[str, Any]:
        """The joined kinds and their sources, in a fixed order."""
        return {k: v for k, v in attrs.asdict(self, recurse=False).items() if v is not None}


def _argv_of(value: Iterable[str | os.PathLike[str]]) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise _fail("argv", "expected a sequence of strings, got a single string")
    return tuple(_path(a) for a in value)


def _to_argv(value: Any) -> Any:
    return _shaped("argv", _argv_of, value)


def _size_of(value: Iterable[int]) -> tuple[int, int]:
    size = tuple(value)
    if len(size) != 2:
        raise _fail("tty_size", f"expected (rows, columns), got {value!r}")
    return size[0], size[1]


def _to_size(value: Any) -> Any:
    return _shaped("tty_size", _size_of, value)


#: setrlimit(2) resources by the names ``ulimit``/prlimit use, lower-case
RLIMITS: Final = {
    "as": 9, "core": 4, "cpu": 0, "data": 2, "fsize": 1, "locks": 10, "memlock": 8, "msgqueue": 12,
    "nice": 13, "nofile": 7, "nproc": 6, "rss": 5, "rtprio": 14, "rttime": 15, "sigpending": 11, "stack": 3,
}
RLIM_INFINITY: Final = (1 << 64) - 1


def _rlimits_of(value: Any) -> tuple[tuple[str, int, int], ...]:
    """``{"nofile": (soft, hard)}`` (or an int for both) -> sorted ``((name, soft, hard), ...)``."""
    items = value.items() if isinstance(value, Mapping) else value
    out: list[tuple[str, int, int]] = []
    for entry in items:
        fields: tuple[Any, ...] = tuple(entry)
        if len(fields) == 3:  # already normalised
            name, soft, hard = fields[0], fields[1], fields[2]
        elif len(fields) == 2:
            name, limits = fields[0], fields[1]
            pair: tuple[Any, ...] = (limits, limits) if isinstance(limits, int) else tuple(limits)
            if len(pair) != 2:
                raise _fail(f"rlimits[{name!r}]", f"expected (soft, hard) or one int, got {limits!r}")
            soft, hard = pair[0], pair[1]
        else:
            raise _fail("rlimits", f"expected a mapping of name -> (soft, hard), got {value!r}")
        if name not in RLIMITS:
            raise _fail("rlimits", f"unknown resource {name!r}; expected one of {sorted(RLIMITS)}")
        for n in (soft, hard):
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= RLIM_INFINITY:
                raise _fail(f"rlimits[{name!r}]", f"expected a limit from 0 to RLIM_INFINITY, got {n!r}")
        if soft > hard:
            raise _fail(f"rlimits[{name!r}]", f"the soft limit {soft} is above the hard limit {hard}")
        out.append((name, soft, hard))
    return tuple(sorted(out))


def _to_rlimits(value: Any) -> Any:
    return _shaped("rlimits", _rlimits_of, value)


_SIZE_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(where: str, value: Any) -> int:
    """Bytes from an int or a string like ``"256M"``, ``"1.5g"``, ``"64KiB"`` (units are powers of 1024)."""
    if isinstance(value, bool):
        raise _fail(where, f"expected bytes or a size like '256M', got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip().lower().removesuffix("b").removesuffix("i")
        unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
        digits = text[: len(text) - len(unit)].strip()
        try:
            amount = float(digits) if "." in digits else int(digits)
        except ValueError:
            raise _fail(where, f"expected bytes or a size like '256M' (units k, M, G, T), got {value!r}") from None
        if not math.isfinite(amount):
            raise _fail(where, f"expected a finite size, got {value!r}")
        number = int(amount * _SIZE_UNITS[unit])
    else:
        raise _fail(where, f"expected bytes or a size like '256M', got {type(value).__name__}")
    if not 0 < number < 1 << 62:
        raise _fail(where, f"expected a size above 0 and below 2**62 bytes, got {value!r}")
    return number


#: the least memory limit: setting a container up (its copy of the zygote's
#: Python, the init) takes about 1 MiB, and below that the OOM killer ends it
#: before its program ever runs (Docker's floor is 6 MiB)
MIN_MEMORY: Final = 2 << 20


def _to_memory(value: Any) -> int | None:
    if value is None:
        return None
    size = parse_size("limits.memory", value)
    if size < MIN_MEMORY:
        raise _fail("limits.memory", f"at least 2M is needed to set a container up (the init and its setup take "
                                     f"about 1M), got {value!r}")
    return size


_MAX_ID: Final = (1 << 32) - 2  # (uid_t)-1 means "no change" to setresuid
#: lines a uid_map or gid_map may have (user_namespaces(7), since Linux 4.15)
_MAX_MAP_LINES: Final = 340


def _to_ranges(value: Any) -> tuple[tuple[int, int, int], ...]:
    """``(inside, outside, count)`` or a sequence of them -> a tuple of ranges (checked in IdMap)."""
    items = tuple(value) if not isinstance(value, (str, bytes)) else None
    if items is None:
        raise _fail("user_ns", f"expected (inside, outside, count) ranges, got {value!r}")
    if len(items) == 3 and all(isinstance(v, int) for v in items):
        items = (items,)
    ranges = []
    for item in items:
        fields = tuple(item) if not isinstance(item, (str, bytes, int)) else ()
        if len(fields) != 3:
            raise _fail("user_ns", f"expected (inside, outside, count) ranges, got {item!r}")
        ranges.append((fields[0], fields[1], fields[2]))
    return tuple(ranges)


def _check_ranges(where: str, ranges: tuple[tuple[int, int, int], ...]) -> None:
    if not ranges:
        raise _fail(where, "needs at least one (inside, outside, count) range")
    if len(ranges) > _MAX_MAP_LINES:
        raise _fail(where, f"at most {_MAX_MAP_LINES} ranges, got {len(ranges)}")
    for inside, outside, count in ranges:
        for name, n in (("inside", inside), ("outside", outside), ("count", count)):
            if isinstance(n, bool) or not isinstance(n, int):
                raise _fail(where, f"{name} must be an int, got {n!r}")
        if count < 1 or inside < 0 or outside < 0 or inside + count - 1 > _MAX_ID or outside + count - 1 > _MAX_ID:
            raise _fail(where, f"range ({inside}, {outside}, {count}) is out of bounds (ids 0 to {_MAX_ID})")
    for side in (0, 1):
        spans = sorted((r[side], r[side] + r[2]) for r in ranges)
        for (_a, end), (start, _b) in itertools.pairwise(spans):
            if start < end:
                raise _fail(where, f"ranges overlap {'inside' if side == 0 else 'outside'}: {ranges}")


@attrs.frozen
class IdMap:
    """A user namespace's uid and gid maps, as ``(inside, outside, count)`` ranges (uid_map(5) lines).

    ``IdMap(uid=(0, 100000, 65536), gid=(0, 100000, 65536))`` makes root
    inside uid 100000 outside, and ids 0-65535 inside 100000-165535 outside.
    A single range may be given without the outer list.
    """

    uid: tuple[tuple[int, int, int], ...] = attrs.field(converter=_to_ranges)
    gid: tuple[tuple[int, int, int], ...] = attrs.field(converter=_to_ranges)

    def __attrs_post_init__(self) -> None:
        _check_ranges("user_ns.uid", self.uid)
        _check_ranges("user_ns.gid", self.gid)

    def maps_gid(self, inside: int) -> bool:
        """Whether gid ``inside`` has an outside id in this map."""
        return any(start <= inside < start + count for start, _outside, count in self.gid)

    def maps_uid(self, inside: int) -> bool:
        """Whether uid ``inside`` has an outside id in this map."""
        return any(start <= inside < start + count for start, _outside, count in self.uid)


#: what a root supervisor maps a user namespace to when the spec names no map:
#: root and the first 65536 ids inside to an unprivileged range outside
#: (the first range /etc/subuid hands out on Debian)
DEFAULT_ID_MAP: Final = IdMap(uid=(0, 100000, 65536), gid=(0, 100000, 65536))


def _check_id(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
        raise _fail(where, f"expected an id from 0 to {_MAX_ID}, got {value!r}")


@attrs.frozen
class User:
    """The identity the program runs as: ``User(uid, gid, groups=())``, ids as seen inside the container."""

    uid: int
    gid: int
    groups: tuple[int, ...] = attrs.field(default=(), converter=tuple, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_id("user.uid", self.uid)
        _check_id("user.gid", self.gid)
        for group in self.groups:
            _check_id("user.groups", group)
        if len(self.groups) > 65536:
            raise _fail("user.groups", "at most 65536 supplementary groups")


def _to_capabilities(value: Any) -> frozenset[str]:
    """Capability names, as ``CAP_SYS_ADMIN``, ``sys_admin`` or ``SYS_ADMIN`` -> a frozenset of ``CAP_*``."""
    if isinstance(value, str):
        raise _fail("capabilities", f"expected a set of capability names, got the string {value!r}")
    try:
        names = list(value)
    except TypeError:
        raise _fail("capabilities", f"expected a set of capability names, got {value!r}") from None
    out = set()
    for name in names:
        if not isinstance(name, str):
            raise _fail("capabilities", f"expected capability names, got {name!r}")
        full = name.upper() if name.upper().startswith("CAP_") else "CAP_" + name.upper()
        if full not in CAPABILITIES:
            raise _fail("capabilities", f"unknown capability {name!r}")
        out.add(full)
    return frozenset(out)


def _syscall_names(where: str, value: Any) -> frozenset[str]:
    if isinstance(value, str):
        raise _fail(where, f"expected a set of syscall names, got the string {value!r}")
    try:
        names = frozenset(value)
    except TypeError:
        raise _fail(where, f"expected a set of syscall names, got {value!r}") from None
    for name in names:
        if not isinstance(name, str) or not name or not (name.replace("_", "").isalnum() and name.isascii()):
            raise _fail(where, f"expected syscall names, got {name!r}")
    return names


def _to_denied(value: Any) -> frozenset[str]:
    return _syscall_names("seccomp.deny", value)


def _to_allowed(value: Any) -> frozenset[str]:
    return _syscall_names("seccomp.allow", value)


@attrs.frozen
class Seccomp:
    """A seccomp filter: Docker's default profile, adjusted by ``deny`` and ``allow``.

    The filter is an allow-list generated from moby's ``default.json`` (kept
    in the package with the commit it came from), for the container's
    capabilities, as Docker applies it: what it does not allow fails with
    ``errno`` (default EPERM), and a syscall it does not know (newer than
    the profile or libseccomp) with ENOSYS, so libcs fall back. Seccomp
    follows the capabilities: keeping CAP_SYS_ADMIN allows mount, unshare,
    setns and clone with namespace flags; CAP_SYS_PTRACE allows kcmp and
    pidfd_getfd. Without CAP_SYS_ADMIN, clone3 answers ENOSYS (libc falls
    back to clone, whose flags the filter can see). Always refused:
    io_uring, socket(AF_VSOCK) and socket(AF_ALG), the TIOCSTI and TIOCLINUX
    ioctls; ``anyns.DEFAULT_DENIED`` names the notable refusals.

    ``deny`` refuses more syscalls (with ``errno``), whatever the
    capabilities: ``Seccomp(deny=anyns.DEFAULT_DENIED | {"ptrace"})``.
    ``allow`` allows syscalls the profile refuses, with any arguments:
    ``Seccomp(allow={"io_uring_setup", "io_uring_enter", "io_uring_register"})``.
    ``seccomp=None`` in the spec installs no filter.
    """

    deny: frozenset[str] = attrs.field(default=frozenset(), converter=_to_denied)
    errno: int = 1  # EPERM, as Docker's profile
    allow: frozenset[str] = attrs.field(default=frozenset(), converter=_to_allowed, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.errno, bool) or not isinstance(self.errno, int) or not 0 < self.errno < 4096:
            raise _fail("seccomp.errno", f"expected an errno from 1 to 4095, got {self.errno!r}")
        both = self.allow & self.deny
        if both:
            raise _fail("seccomp", f"syscalls both allowed and denied: {', '.join(sorted(both))}")


DEFAULT_SECCOMP: Final = Seccomp()


def _container_paths(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise _fail(where, f"expected a sequence of paths, got the string {value!r}")
    return tuple(_container_path(where, _path(v)) for v in value)


def _to_masked_paths(value: Any) -> tuple[str, ...]:
    return _container_paths("masked_paths", value)


def _to_readonly_paths(value: Any) -> tuple[str, ...]:
    return _container_paths("readonly_paths", value)


#: the smallest CPU quota the kernel takes: 1 ms per 100 ms period
_MIN_CPU: Final = 0.01


def _check_seconds(where: str, value: Any) -> None:
    """A budget in seconds: None, or a positive finite number."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not 0 < value < math.inf):
        raise _fail(where, f"expected seconds > 0 (a finite number) or None, got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """A container's budget, enforced by its own cgroup (``ContainerSpec(limits=...)``).

    Any ``Limits`` (even ``Limits()``) gives the container a cgroup: its
    processes are counted together, ``Container.statistics()``, ``pause()``
    and ``resume()`` work, and when its program exits every process left in
    it is killed. The cgroup also limits devices: any node may be made, but
    only the standard ones (null, zero, full, random, urandom, tty, ptmx,
    the devpts terminals) and those the spec binds with ``nodev=False``
    open. A limit the host cannot enforce is an ``anyns.UnsupportedError`` at
    spawn time, never silently dropped.

    Args:
        memory: bytes, or a size such as ``"256M"`` or ``"1.5G"`` (powers of
            1024), at least 2M. Swap is not allowed beyond it: past it the OOM
            killer ends the container (``CompletedContainer.oom_killed``).
        pids: how many tasks (processes and threads) may exist at once; more
            forks fail with EAGAIN.
        cpu: how many CPUs' worth of time per period, such as ``0.5`` (the
            CFS quota: 50 ms per 100 ms); at least 0.01.
        cpu_time: a CPU-time budget in seconds for the whole container: the
            CPU used by all of its processes together (``RLIMIT_CPU`` counts
            each process on its own, so two busy ones would get twice the
            budget). The supervisor watches the cgroup's usage and kills the
            container once it reaches the budget (overshooting it by a few
            tens of ms at most); ``CompletedContainer.exceeded`` is then
            ``"cpu_time"``. A rootless supervisor without a delegated cgroup
            cannot enforce it (``UnsupportedError``).
    """

    memory: int | None = attrs.field(default=None, converter=_to_memory)
    pids: int | None = None
    cpu: float | None = None
    cpu_time: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.pids is not None and (isinstance(self.pids, bool) or not isinstance(self.pids, int)
                                      or not 0 < self.pids < 1 << 31):
            raise _fail("limits.pids", f"expected a number of tasks from 1 to 2**31-1, got {self.pids!r}")
        if self.cpu is not None and (isinstance(self.cpu, bool) or not isinstance(self.cpu, (int, float))
                                     or not _MIN_CPU <= self.cpu <= 1_000_000):
            raise _fail("limits.cpu", f"expected CPUs from {_MIN_CPU} (e.g. 0.5 for half a CPU), got {self.cpu!r}")
        _check_seconds("limits.cpu_time", self.cpu_time)


def _mounts_of(value: Iterable[Mount]) -> tuple[Mount, ...]:
    return tuple(value)


def _to_mounts(value: Any) -> Any:
    return _shaped("mounts", _mounts_of, value)


_ALL_NAMESPACES: Final = functools.reduce(operator.or_, Namespaces, 0)


def _to_namespaces(value: Any) -> Namespaces:
    if isinstance(value, bool) or not isinstance(value, int) or int(value) & ~_ALL_NAMESPACES or value < 0:
        raise _fail("namespaces", f"expected an anyns.Namespaces flag set, got {value!r}")
    return Namespaces(value)


@attrs.frozen(kw_only=True, cache_hash=True)
class ContainerSpec:
    """Everything about one container, as a frozen, hashable value.

    Share one spec across many containers; derive variants with
    ``attrs.evolve(spec, hostname=...)``.

    Args:
        argv: the program and its arguments; ``argv[0]`` is searched in ``PATH``
            from ``env`` unless it contains a ``/``.
        rootfs: ``HostRootfs()`` (default), ``DirRootfs(path)`` or ``OverlayRootfs(lower)``.
        hostname: the hostname inside (needs ``Namespaces.UTS``); None keeps the host's.
        namespaces: the namespaces the container gets of its own.
        mounts: ``Bind`` and ``Tmpfs`` mounts, applied in order after the root is built.
        env: the whole environment of the program; the supervisor's own is never passed.
        cwd: the working directory inside the container.
        domainname: the NIS domain name inside (needs ``Namespaces.UTS``); None keeps the host's.
        join: namespaces to share with running containers or namespace files (``anyns.Join``).
        network: ``anyns.Loopback()`` (the default with ``Namespaces.NET``),
            ``anyns.HostNetwork()``, ``anyns.Bridge(...)`` or
            ``anyns.JoinNetwork(container_or_path)``; it decides whether the
            container gets a network namespace of its own, whatever
            ``namespaces`` says about NET.
        tty: give the program a pseudo-terminal from the container's own devpts
            instance as its stdin, stdout and stderr (and controlling
            terminal), so shells and REPLs work; with ``nursery.start`` the
            supervisor's end is ``Container.tty``, with ``capture_stdout=True``
            its output is collected.
        tty_size: the terminal's ``(rows, columns)``; ``Container.resize_tty`` changes it.
        rlimits: resource limits of the program, ``{"nofile": (soft, hard), "nproc": 64}``
            (names as ``prlimit`` has them; an int sets both; ``anyns.RLIM_INFINITY``).
        limits: ``anyns.Limits(memory="256M", pids=64, cpu=0.5)``: a cgroup of
            its own with those limits (None, the default: no cgroup, the
            fastest start; but a container without a pid namespace of its
            own always gets one from a root supervisor, which kills what its
            program leaves running when it exits: ``needs_cgroup``).
        user_ns: the uid/gid maps of a user namespace of its own
            (``anyns.IdMap``); giving one implies ``Namespaces.USER``.
            ``Namespaces.USER`` without a map uses ``anyns.DEFAULT_ID_MAP``
            (root inside is uid 100000 outside).
        user: ``anyns.User(uid, gid, groups=())``, the identity the program
            runs as, ids as seen inside (default: root, uid 0).
        capabilities: the capabilities the program keeps, by name
            (``anyns.DEFAULT_CAPABILITIES``: Docker's set, without
            CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE …);
            the bounding set is cut to them. ``anyns.ALL_CAPABILITIES`` keeps
            every one (needed to mount inside the container).
        no_new_privileges: ``PR_SET_NO_NEW_PRIVS`` (default True): setuid
            binaries and file capabilities grant nothing.
        seccomp: an ``anyns.Seccomp`` filter (default ``anyns.DEFAULT_SECCOMP``);
            None turns filtering off.
        masked_paths: paths hidden inside (``anyns.DEFAULT_MASKED_PATHS``:
            /proc/kcore, /proc/keys, /proc/timer_list, /proc/sched_debug,
            /sys/firmware …): /dev/null on a file, an empty read-only tmpfs on
            a directory; missing ones are skipped.
        readonly_paths: paths made read-only inside (``anyns.DEFAULT_READONLY_PATHS``:
            /proc/sys, /proc/sysrq-trigger, /proc/irq, /proc/bus, /proc/fs).
        new_session: the program leads a new session with no controlling
            terminal (``setsid``), so it cannot push input into the
            caller's terminal (default True; ``tty=True`` gives it its own).
        init: run a small init as pid 1 (default) that starts the program,
            forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and
            SIGWINCH to it, reaps orphaned processes, and exits with the
            program's status (``returncode`` still describes the program).
            The init is a small static program of anyns's, exec'd: it holds
            nothing but this container's argv and environment. False runs
            the program itself as pid 1. Only with a pid namespace of its
            own; without one, a rootless supervisor (which has no cgroup to
            kill what the program leaves running) always runs it, whatever
            ``init`` says, as a child subreaper that kills the program's
            leftover processes when it ends (it is not pid 1 there).
        stop_grace: seconds a cancelled ``run`` (or one whose ``timeout``
            ran out) waits after SIGTERM before it SIGKILLs the container
            (default 0: SIGKILL at once). A pid-1 program only sees SIGTERM
            if it handles it (anyns's init forwards it to the program).
        timeout: a wall-clock budget in seconds for the program (None, the
            default: none). When it runs out the container is stopped
            (SIGTERM, ``stop_grace``, then SIGKILL) and ``run`` returns
            normally with what was captured so far, with
            ``CompletedContainer.exceeded == "timeout"`` (``check=True``
            raises ``ContainerFailed`` saying so). This is a job's budget,
            which keeps the result; a trio cancel scope abandons a run
            instead. It counts from the spawn; processes started with
            ``Container.exec`` do not inherit it.
        root_propagation: ``"slave"`` (default: unmounts on the host reach the
            container, nothing flows back, as runc does) or ``"private"`` (no
            propagation either way). A ``Bind`` can choose its own.
        tmp_size: the size of the container's ``/tmp`` tmpfs (parsed like
            ``Limits.memory``; default ``DEFAULT_TMP_SIZE``, 256 MiB: a fixed
            bound, never a share of the RAM). A write past it fails with
            ``ENOSPC`` inside; nothing is reserved. A ``Tmpfs("/tmp")`` in
            ``mounts`` replaces it.
        shm_size: the size of its ``/dev/shm`` (default ``DEFAULT_SHM_SIZE``,
            64 MiB, as Docker).
        files: files in place before the program starts,
            ``{"/box/main.py": b"...", "/etc/app.conf": "text",
            "/box/run": anyns.File(data, mode=0o755)}`` (a str is UTF-8;
            parent directories are made). Paths are absolute; the contents
            total at most ``MAX_FILES_SIZE`` (16 MiB), checked here. They are
            written on tmpfs of the container's own, never to the host: on a
            ``HostRootfs`` or a read-only ``DirRootfs`` a small tmpfs holds
            them (sized to the files plus 1 MiB), each bound on its path (a
            read-only ``DirRootfs`` gets an overlay whose upper layer is the
            container's, for the mount points only, so a directory such as
            ``/box`` that it lacks appears; the root stays read-only); on an
            ``OverlayRootfs`` they are written into its writable layer (and
            count against its ``size``); under ``/tmp``, ``/dev/shm`` or a
            ``Tmpfs`` of ``mounts`` they are written there, after the mounts.
            The program may change its files (as their mode allows; on a
            read-only root it may rewrite one, not remove or rename it, and
            make no new file beside it); they vanish with the container.
            Refused (``SpecError``): a path under a ``Bind`` target, under a
            ``HostRootfs``'s host directories (``/usr``, ``/bin``, ``/lib``…,
            the ``/etc`` entries it binds), under ``/proc``, ``/sys`` or
            ``/dev`` (but ``/dev/shm``), on the root of a
            ``DirRootfs(readonly=False)`` or of an ``OverlayRootfs`` with a
            host ``upper`` (both are host directories).
    """

    argv: tuple[str, ...] = attrs.field(converter=_to_argv)
    rootfs: Rootfs = attrs.field(factory=HostRootfs)
    hostname: str | None = None
    namespaces: Namespaces = attrs.field(default=Namespaces.DEFAULT, converter=_to_namespaces)
    mounts: tuple[Mount, ...] = attrs.field(default=(), converter=_to_mounts)
    env: Environment = attrs.field(factory=lambda: Environment({"PATH": DEFAULT_PATH}), converter=_to_env)
    cwd: str = "/"
    root_propagation: str = "slave"
    domainname: str | None = None
    join: Join | None = None
    network: Network | None = None
    tty: bool = False
    tty_size: tuple[int, int] = attrs.field(default=(24, 80), converter=_to_size)
    rlimits: tuple[tuple[str, int, int], ...] = attrs.field(default=(), converter=_to_rlimits)
    stop_grace: float = 0
    timeout: float | None = None
    limits: Limits | None = None
    init: bool = True
    user_ns: IdMap | None = None
    user: User | None = None
    capabilities: frozenset[str] = attrs.field(default=DEFAULT_CAPABILITIES, converter=_to_capabilities)
    no_new_privileges: bool = True
    seccomp: Seccomp | None = DEFAULT_SECCOMP
    masked_paths: tuple[str, ...] = attrs.field(default=DEFAULT_MASKED_PATHS, converter=_to_masked_paths)
    readonly_paths: tuple[str, ...] = attrs.field(default=DEFAULT_READONLY_PATHS, converter=_to_readonly_paths)
    new_session: bool = True
    tmp_size: int = attrs.field(default=DEFAULT_TMP_SIZE, converter=_to_tmp_size)
    shm_size: int = attrs.field(default=DEFAULT_SHM_SIZE, converter=_to_shm_size)
    files: tuple[tuple[str, File], ...] = attrs.field(default=(), converter=_to_files)

    def __attrs_post_init__(self) -> None:
        if (isinstance(self.stop_grace, bool) or not isinstance(self.stop_grace, (int, float))
                or not 0 <= self.stop_grace < math.inf):
            raise _fail("stop_grace", f"expected seconds >= 0, got {self.stop_grace!r}")
        _check_seconds("timeout", self.timeout)
        if not self.argv:
            raise _fail("argv", "must name a program")
        if self.limits is not None and not isinstance(self.limits, Limits):
            raise _fail("limits", f"expected an anyns.Limits, got {self.limits!r}")
        for flag in ("no_new_privileges", "new_session"):
            if not isinstance(getattr(self, flag), bool):
                raise _fail(flag, f"expected True or False, got {getattr(self, flag)!r}")
        if self.seccomp is not None and not isinstance(self.seccomp, Seccomp):
            raise _fail("seccomp", f"expected an anyns.Seccomp or None, got {self.seccomp!r}")
        if not isinstance(self.init, bool):
            raise _fail("init", f"expected True or False, got {self.init!r}")
        if self.init and self.limits is not None and self.limits.pids == 1 and Namespaces.PID in self.namespaces:
            raise _fail("limits.pids", "1 task leaves no room for the program beside the init: "
                                       "allow 2 or more, or init=False")
        for i, arg in enumerate(self.argv):
            _check_text(f"argv[{i}]", arg)
        if not self.argv[0]:
            raise _fail("argv[0]", "must not be empty")
        if not isinstance(self.rootfs, (HostRootfs, DirRootfs, OverlayRootfs)):
            raise _fail("rootfs", f"expected HostRootfs, DirRootfs or OverlayRootfs, got {self.rootfs!r}")
        if self.root_propagation not in ROOT_PROPAGATIONS:
            raise _fail("root_propagation", f"expected one of {ROOT_PROPAGATIONS}, got {self.root_propagation!r}")
        if Namespaces.MOUNT not in self.namespaces and (self.join is None or self.join.mnt is None):
            raise _fail("namespaces", "Namespaces.MOUNT is required: the container gets its own root")
        if self.user_ns is not None and not isinstance(self.user_ns, IdMap):
            raise _fail("user_ns", f"expected an anyns.IdMap, got {self.user_ns!r}")
        if self.user is not None and not isinstance(self.user, User):
            raise _fail("user", f"expected an anyns.User, got {self.user!r}")
        if self.join is not None and not isinstance(self.join, Join):
            raise _fail("join", f"expected an anyns.Join, got {self.join!r}")
        id_map = user_namespace_map(self)
        if id_map is not None:
            if self.user is not None:
                if not id_map.maps_uid(self.user.uid):
                    raise _fail("user.uid", f"{self.user.uid} is not mapped by the user namespace's uid map")
                for gid in (self.user.gid, *self.user.groups):
                    if not id_map.maps_gid(gid):
                        raise _fail("user.gid", f"{gid} is not mapped by the user namespace's gid map")
            if joined_namespaces(self):
                raise _fail("join", "joining other namespaces from a user namespace is not supported yet")
            if not id_map.maps_uid(0) or not id_map.maps_gid(0):
                raise _fail("user_ns", "root (id 0) inside must be mapped: the setup runs as root inside")
        if self.network is not None and not isinstance(self.network, (Loopback, HostNetwork, Bridge, JoinNetwork)):
            raise _fail("network", f"expected Loopback, HostNetwork, Bridge or JoinNetwork, got {self.network!r}")
        if isinstance(self.network, JoinNetwork) and self.join is not None and self.join.net is not None:
            raise _fail("network", "JoinNetwork and Join(net=...) both name a network to join")
        joined = joined_namespaces(self)
        for field in ("hostname", "domainname"):
            name = getattr(self, field)
            if name is None:
                continue
            _check_text(field, name)
            if Namespaces.UTS not in self.namespaces or "uts" in joined:
                raise _fail(field, f"setting the {field} needs a UTS namespace of the container's own")
            encoded = name.encode("utf-8", "surrogateescape")
            if not encoded or len(encoded) > _MAX_HOSTNAME:
                raise _fail(field, f"must be 1 to {_MAX_HOSTNAME} bytes, got {len(encoded)}")
        if "mnt" in joined and self.mounts:
            raise _fail("mounts", "a container that joins another's mount namespace cannot add mounts")
        for i, mount in enumerate(self.mounts):
            if not isinstance(mount, (Bind, Tmpfs)):
                raise _fail(f"mounts[{i}]", f"expected anyns.Bind or anyns.Tmpfs, got {mount!r}")
        _check_abs_path("cwd", self.cwd)
        if not isinstance(self.tty, bool):
            raise _fail("tty", f"expected True or False, got {self.tty!r}")
        if len(self.tty_size) != 2 or not all(isinstance(n, int) and 0 < n < 65536 for n in self.tty_size):
            raise _fail("tty_size", f"expected (rows, columns) of positive ints, got {self.tty_size!r}")
        _check_files(self)


def user_namespace_map(spec: ContainerSpec) -> IdMap | None:
    """The map of the container's own user namespace, or None when it has none."""
    if spec.user_ns is not None:
        return spec.user_ns
    return DEFAULT_ID_MAP if Namespaces.USER in spec.namespaces else None


def effective_namespaces(spec: ContainerSpec) -> Namespaces:
    """The namespaces the container gets of its own, once ``network``, ``join`` and ``user_ns`` have had their say."""
    ns = spec.namespaces
    if spec.user_ns is not None:
        ns |= Namespaces.USER
    if isinstance(spec.network, HostNetwork):
        ns &= ~Namespaces.NET
    elif isinstance(spec.network, (Loopback, Bridge)):
        ns |= Namespaces.NET
    for kind in joined_namespaces(spec):
        ns &= ~KIND_FLAGS[kind]
    return ns


def joined_namespaces(spec: ContainerSpec) -> dict[str, Any]:
    """Kind -> source of every namespace the container joins (``join`` and ``JoinNetwork``)."""
    joined = spec.join.kinds() if spec.join is not None else {}
    if isinstance(spec.network, JoinNetwork):
        joined["net"] = spec.network.source
    return joined


def needs_cgroup(spec: ContainerSpec, rootless: bool = False) -> bool:
    """Whether the container gets a cgroup of its own: with ``limits``, and without a pid namespace of its own.

    A pid namespace ends with its pid 1, taking every process in it along.
    Without one (``namespaces`` lacks PID, or ``join`` enters another's), a
    background process would outlive the program and hold its stdout open:
    the container's own cgroup is what kills it (``cgroup.kill`` when the
    program exits). It holds only this container's processes, never those
    of a container whose pid namespace it joined. An unprivileged
    (``rootless``) supervisor can make no cgroups, so there only ``limits``
    asks for one. The supervisor and the plan both ask this, so the plan's
    cgroup fds and the spawn's agree.
    """
    return spec.limits is not None or (not rootless and Namespaces.PID not in effective_namespaces(spec))
