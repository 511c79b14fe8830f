"""anyns: start, stream and reap many concurrent Linux containers from trio.

Example::

    import anyns, trio

    async def main():
        spec = anyns.ContainerSpec(argv=["/bin/sh", "-c", "hostname; echo $$"], hostname="box1")
        async with anyns.open_supervisor() as sup:
            done = await sup.run(spec, capture_stdout=True)
            print(done.stdout)          # b'box1\\n2\\n' (pid 1 is the init)

    trio.run(main)
"""

from contextlib import suppress as _suppress

from ._container import (
    CompletedContainer,
    Container,
    ContainerStats,
    NamespaceId,
    PersistedNamespace,
    namespaces_of,
    persist_namespace,
)
from ._errors import (
    AnynsError,
    ContainerFailed,
    ExecError,
    NetworkError,
    SetupError,
    SpecError,
    UnsupportedError,
    ZygoteError,
)
from ._security_defaults import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_DENIED,
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
)
from ._spec import (
    DEFAULT_ID_MAP,
    DEFAULT_OVERLAY_SIZE,
    DEFAULT_SECCOMP,
    DEFAULT_SHM_SIZE,
    DEFAULT_TMP_SIZE,
    MAX_FILES_SIZE,
    RLIM_INFINITY,
    Bind,
    Bridge,
    ContainerSpec,
    DirRootfs,
    Environment,
    File,
    HostNetwork,
    HostRootfs,
    IdMap,
    Join,
    JoinNetwork,
    Limits,
    Loopback,
    Namespaces,
    OverlayRootfs,
    Seccomp,
    Tmpfs,
    User,
)
from ._supervisor import DEVNULL, PIPE, STDOUT, Supervisor, open_supervisor
from ._version import __version__

__all__ = [
    "ALL_CAPABILITIES",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_DENIED",
    "DEFAULT_ID_MAP",
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_OVERLAY_SIZE",
    "DEFAULT_READONLY_PATHS",
    "DEFAULT_SECCOMP",
    "DEFAULT_SHM_SIZE",
    "DEFAULT_TMP_SIZE",
    "DEVNULL",
    "MAX_FILES_SIZE",
    "PIPE",
    "RLIM_INFINITY",
    "STDOUT",
    "AnynsError",
    "Bind",
    "Bridge",
    "CompletedContainer",
    "Container",
    "ContainerFailed",
    "ContainerSpec",
    "ContainerStats",
    "DirRootfs",
    "Environment",
    "ExecError",
    "File",
    "HostNetwork",
    "HostRootfs",
    "IdMap",
    "Join",
    "JoinNetwork",
    "Limits",
    "Loopback",
    "NamespaceId",
    "Namespaces",
    "NetworkError",
    "OverlayRootfs",
    "PersistedNamespace",
    "Seccomp",
    "SetupError",
    "SpecError",
    "Supervisor",
    "Tmpfs",
    "UnsupportedError",
    "User",
    "ZygoteError",
    "__version__",
    "namespaces_of",
    "open_supervisor",
    "persist_namespace",
]

def __getattr__(name: str) -> object:
    """``anyns.aio`` without importing it first: the asyncio bridge is loaded on first use."""
    if name == "aio":
        import importlib

        return importlib.import_module(".aio", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Show public names in reprs and tracebacks (trio's convention).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("anyns."):
        with _suppress(AttributeError, TypeError):
            _obj.__module__ = "anyns"
del _name, _obj, _suppress
