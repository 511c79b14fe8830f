"""Hypothesis strategies for anyns specs, shared by the unit tests."""

from __future__ import annotations

from hypothesis import strategies as st

import anyns
from anyns import Namespaces

#: text a spec accepts: no NUL, no lone surrogates (which no OS string can carry)
safe_text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))
nonempty_text = safe_text.filter(bool)
segment = st.text(st.characters(blacklist_characters="\0/", blacklist_categories=("Cs",)),
                  min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
abs_path = st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
env_key = st.text(st.characters(blacklist_characters="\0=", blacklist_categories=("Cs",)),
                  min_size=1, max_size=20)
env = st.dictionaries(env_key, safe_text, max_size=5)
argv = st.lists(safe_text, min_size=1, max_size=5).filter(lambda a: a[0] != "")
hostname = safe_text.filter(lambda h: 1 <= len(h.encode()) <= 64)

OPTIONAL = (Namespaces.PID, Namespaces.UTS, Namespaces.IPC, Namespaces.NET, Namespaces.CGROUP,
            Namespaces.TIME)


@st.composite
def namespaces(draw: st.DrawFn) -> Namespaces:
    """A valid set: MOUNT plus any of the others but USER."""
    flags = Namespaces.MOUNT
    for flag in draw(st.lists(st.sampled_from(OPTIONAL), unique=True)):
        flags |= flag
    return flags


bind = st.builds(
    anyns.Bind, abs_path, abs_path, readonly=st.booleans(), recursive=st.booleans(),
    propagation=st.sampled_from([None, "private", "slave", "unbindable"]),
    nosuid=st.booleans(), nodev=st.booleans(), noexec=st.booleans(),
)
tmpfs = st.builds(anyns.Tmpfs, abs_path, size=st.none() | st.integers(1, 1 << 30),
                  mode=st.integers(0, 0o7777))
rootfs = st.just(anyns.HostRootfs()) | st.builds(anyns.DirRootfs, abs_path,
                                                readonly=st.booleans())


@st.composite
def specs(draw: st.DrawFn) -> anyns.ContainerSpec:
    ns = draw(namespaces())
    return anyns.ContainerSpec(
        argv=draw(argv),
        rootfs=draw(rootfs),
        hostname=draw(st.none() | hostname) if Namespaces.UTS in ns else None,
        namespaces=ns,
        mounts=draw(st.lists(bind | tmpfs, max_size=4)),
        env=draw(env),
        cwd=draw(st.just("/") | abs_path),
        limits=draw(st.none() | st.builds(anyns.Limits, memory=st.none() | st.integers(2 << 20, 1 << 40),
                                          pids=st.none() | st.integers(2, 4096))),
    )
