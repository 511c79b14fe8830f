"""ContainerSpec and friends: valid input builds frozen values, invalid input raises SpecError."""

from __future__ import annotations

import pathlib
import posixpath
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import abs_path, argv, env, env_key, hostname, namespaces, safe_text, specs

import anyns
from anyns import Namespaces
from anyns._spec import DEFAULT_PATH


def build(**fields: Any) -> anyns.ContainerSpec:
    fields.setdefault("argv", ["/bin/true"])
    return anyns.ContainerSpec(**fields)


def with_nul(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Text with a NUL byte inserted somewhere."""
    return st.tuples(text, text).map(lambda t: t[0] + "\0" + t[1])


@given(argv, env, st.none() | hostname)
def test_valid_values_build(argv: list[str], env: dict[str, str], hostname: str | None) -> None:
    """Any NUL-free argv, env and hostname of 1-64 bytes build a spec holding them."""
    spec = build(argv=argv, env=env, hostname=hostname)
    assert spec.argv == tuple(argv)
    assert dict(spec.env) == env
    assert spec.hostname == hostname


@given(specs())
def test_specs_are_frozen_hashable_values(spec: anyns.ContainerSpec) -> None:
    """Specs are frozen, hashable, and equal to a rebuilt copy."""
    copy = attrs.evolve(spec)
    assert copy == spec and hash(copy) == hash(spec)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.cwd = "/x"  # type: ignore[misc]


@given(st.lists(safe_text, min_size=1, max_size=4), st.data())
def test_nul_in_argv_is_spec_error(argv: list[str], data: st.DataObject) -> None:
    """An argv element with a NUL byte raises SpecError."""
    index = data.draw(st.integers(0, len(argv) - 1))
    argv[index] = data.draw(with_nul(safe_text))
    with pytest.raises(anyns.SpecError, match=r"argv\[\d+\]: contains a NUL byte"):
        build(argv=argv)


@given(st.one_of(with_nul(env_key).map(lambda k: {k: "v"}),
                 env_key.map(lambda k: {"A": k + "\0"}),
                 st.just({"": "v"}),
                 env_key.map(lambda k: {k + "=x": "v"})))
def test_invalid_env_is_spec_error(env: dict[str, str]) -> None:
    """Env names that are empty or hold '=' or NUL, and values with NUL, raise SpecError."""
    with pytest.raises(anyns.SpecError):
        build(env=env)


@given(safe_text.filter(lambda h: len(h.encode()) > 64) | st.just("") | with_nul(safe_text))
def test_invalid_hostname_is_spec_error(name: str) -> None:
    """Hostnames that are empty, longer than 64 bytes or hold NUL raise SpecError."""
    with pytest.raises(anyns.SpecError, match="hostname"):
        build(hostname=name)


@given(hostname, namespaces())
def test_hostname_needs_uts(name: str, ns: Namespaces) -> None:
    """A hostname without Namespaces.UTS raises SpecError; with it, it builds."""
    if Namespaces.UTS in ns:
        assert build(hostname=name, namespaces=ns).hostname == name
    else:
        with pytest.raises(anyns.SpecError, match="UTS"):
            build(hostname=name, namespaces=ns)


def test_hostname_of_64_multibyte_bytes() -> None:
    """The 64-byte limit counts UTF-8 bytes, not characters."""
    assert build(hostname="é" * 32).hostname == "é" * 32
    with pytest.raises(anyns.SpecError, match="64"):
        build(hostname="é" * 33)


@given(st.lists(st.sampled_from(list(Namespaces.__members__.values())), unique=True))
def test_namespace_sets(flags: list[Namespaces]) -> None:
    """A namespace set builds iff it has MOUNT (USER included); otherwise SpecError."""
    ns = Namespaces(0)
    for flag in flags:
        ns |= flag
    if Namespaces.MOUNT in ns:
        assert build(namespaces=ns).namespaces == ns
    else:
        with pytest.raises(anyns.SpecError, match="namespaces"):
            build(namespaces=ns)


def test_default_namespaces() -> None:
    """DEFAULT is mount, pid, uts, ipc and net, and is the spec's default."""
    N = Namespaces
    assert N.DEFAULT == N.MOUNT | N.PID | N.UTS | N.IPC | N.NET
    assert build().namespaces == N.DEFAULT
    assert build(namespaces=int(N.MOUNT)).namespaces is N.MOUNT


@pytest.mark.parametrize("extra", [0x1, 0x400, 0x100])
def test_unknown_namespace_bits_are_spec_error(extra: int) -> None:
    """Bits that are not a Namespaces flag (CLONE_FILES, CLONE_VM…) raise SpecError."""
    with pytest.raises(anyns.SpecError):
        build(namespaces=int(Namespaces.DEFAULT) | extra)


def test_unencodable_hostname_is_spec_error() -> None:
    """A hostname with a lone surrogate (not encodable) raises SpecError."""
    with pytest.raises(anyns.SpecError):
        build(hostname="box\ud800")


@pytest.mark.parametrize("field", ["argv", "env"])
def test_unencodable_argv_or_env_is_spec_error(field: str) -> None:
    """argv or env strings with lone surrogates os.fsencode rejects raise SpecError."""
    bad = "x\ud800"
    with pytest.raises(anyns.SpecError):
        build(**({"argv": ["/bin/echo", bad]} if field == "argv" else {"env": {"A": bad}}))


@given(st.one_of(st.just([]), st.just([""]), st.just("ls"), st.just(b"ls")))
def test_empty_or_string_argv_is_spec_error(value: Any) -> None:
    """An empty argv, an empty argv[0] or a bare string raise SpecError."""
    with pytest.raises(anyns.SpecError, match="argv"):
        build(argv=value)


JUNK = st.one_of(st.integers(), st.binary(max_size=4), st.none(), safe_text, with_nul(safe_text),
                 st.floats(allow_nan=False))


@given(
    argv=st.lists(JUNK, min_size=1, max_size=3),
    hostname=JUNK,
    env=st.dictionaries(JUNK, JUNK, max_size=2),
    cwd=JUNK,
    mounts=st.lists(st.one_of(JUNK, st.builds(anyns.Tmpfs, abs_path)), max_size=2),
)
def test_junk_raises_only_spec_error(argv: list[Any], hostname: Any, env: dict[Any, Any],
                                     cwd: Any, mounts: list[Any]) -> None:
    """Values of the wrong type or shape build a spec or raise SpecError: nothing else."""
    try:
        spec = anyns.ContainerSpec(argv=argv, hostname=hostname, env=env, cwd=cwd, mounts=mounts,
                                   namespaces=Namespaces.DEFAULT)
    except anyns.SpecError:
        return
    assert all(isinstance(a, str) for a in spec.argv)
    assert isinstance(spec.cwd, str) and spec.cwd.startswith("/")


@given(st.one_of(safe_text.filter(lambda p: not p.startswith("/")), with_nul(abs_path)))
def test_non_absolute_paths_are_spec_error(path: str) -> None:
    """Relative (or NUL-holding) paths raise SpecError for cwd, mount targets and sources."""
    for make in (
        lambda: build(cwd=path),
        lambda: anyns.Tmpfs(path),
        lambda: anyns.Bind(path, "/x"),
        lambda: anyns.Bind("/x", path),
        lambda: anyns.DirRootfs(path),
    ):
        with pytest.raises(anyns.SpecError):
            make()


@given(st.lists(st.sampled_from(["a", "..", "b", "."]), min_size=1, max_size=5)
       .filter(lambda parts: ".." in parts))
def test_dotdot_in_mount_target_is_spec_error(parts: list[str]) -> None:
    """A mount target with a '..' component raises SpecError."""
    target = "/" + "/".join(parts)
    with pytest.raises(anyns.SpecError, match=r"'\.\.'"):
        anyns.Tmpfs(target)
    with pytest.raises(anyns.SpecError, match=r"'\.\.'"):
        anyns.Bind("/src", target)


@given(abs_path, st.sampled_from(["", "/", "//", "/."]))
def test_mount_targets_are_normalised(path: str, suffix: str) -> None:
    """Mount targets are stored normalised: no doubled slashes, no '.' parts, no trailing '/'."""
    messy = "/" + path.replace("/", "//") + suffix
    for mount in (anyns.Tmpfs(messy), anyns.Bind("/src", messy)):
        assert mount.target == posixpath.normpath(path)
        assert "//" not in mount.target and not mount.target.endswith("/.")


def test_small_specs_take_positional_fields_and_paths() -> None:
    """Bind, Tmpfs and DirRootfs take their main fields positionally and accept PathLike."""
    assert anyns.Bind(pathlib.Path("/a"), pathlib.Path("/b")).source == "/a"
    assert anyns.DirRootfs(pathlib.Path("/r")).path == "/r"
    assert anyns.DirRootfs("/r").readonly is True
    assert anyns.Tmpfs("/t").target == "/t"
    with pytest.raises(TypeError):
        anyns.ContainerSpec(["/bin/true"])  # type: ignore[misc] - keyword-only


@pytest.mark.parametrize("make", [
    lambda: anyns.Tmpfs("/t", size=0),
    lambda: anyns.Tmpfs("/t", size=-1),
    lambda: anyns.Tmpfs("/t", mode=0o10000),
    lambda: anyns.Tmpfs("/t", mode=-1),
    lambda: anyns.Bind("/a", "/b", propagation="sideways"),
    lambda: anyns.HostRootfs(etc=("/etc/passwd",)),
    lambda: anyns.HostRootfs(etc=("../shadow",)),
    lambda: anyns.HostRootfs(etc=("",)),
    lambda: build(rootfs="/"),
    lambda: build(mounts=["/tmp"]),
    lambda: build(namespaces="MOUNT"),
])
def test_other_invalid_fields_are_spec_error(make: Any) -> None:
    """Bad sizes, modes, propagations, /etc names, rootfs and mount kinds raise SpecError."""
    with pytest.raises(anyns.SpecError):
        make()


def test_spec_error_is_value_error() -> None:
    """SpecError is both an AnynsError and a ValueError; messages name the field first."""
    with pytest.raises(ValueError, match=r"^cwd: must be an absolute path") as info:
        build(cwd="rel")
    assert isinstance(info.value, anyns.AnynsError)


def test_evolve_revalidates() -> None:
    """attrs.evolve of a valid spec into an invalid one raises SpecError."""
    spec = build(hostname="ok")
    with pytest.raises(anyns.SpecError):
        attrs.evolve(spec, hostname="x" * 65)
    with pytest.raises(anyns.SpecError):
        attrs.evolve(spec, namespaces=Namespaces.MOUNT)


def test_environment_is_immutable_mapping() -> None:
    """spec.env is an immutable, hashable mapping equal to the dict it came from."""
    spec = build(env={"A": "1"})
    assert spec.env == {"A": "1"} and hash(spec.env) == hash(build(env=[("A", "1")]).env)
    with pytest.raises(TypeError):
        spec.env["B"] = "2"  # type: ignore[index]
    assert dict(build().env) == {"PATH": DEFAULT_PATH}


def test_rlimits_normalise_to_sorted_triples() -> None:
    """A mapping of name -> (soft, hard) or one int becomes sorted (name, soft, hard) triples."""
    spec = anyns.ContainerSpec(argv=["true"], rlimits={"nproc": 10, "core": (0, anyns.RLIM_INFINITY)})
    assert spec.rlimits == (("core", 0, anyns.RLIM_INFINITY), ("nproc", 10, 10))
    assert anyns.ContainerSpec(argv=["true"]).rlimits == ()


@pytest.mark.parametrize(("rlimits", "field"), [
    ({"bogus": 1}, "rlimits"),
    ({"nofile": (10, 5)}, "rlimits['nofile']"),
    ({"nofile": -1}, "rlimits['nofile']"),
    ({"nofile": (1, 2, 3)}, "rlimits['nofile']"),
    ({"nofile": True}, "rlimits['nofile']"),
    ({"nofile": 1 << 64}, "rlimits['nofile']"),
])
def test_invalid_rlimits_are_spec_errors(rlimits: dict[str, object], field: str) -> None:
    """Unknown names, soft above hard, and out-of-range values are refused when the spec is built."""
    with pytest.raises(anyns.SpecError) as info:
        anyns.ContainerSpec(argv=["true"], rlimits=rlimits)
    assert str(info.value).startswith(field + ":")


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), True, "5"])
def test_invalid_stop_grace_is_spec_error(grace: object) -> None:
    """stop_grace is a finite number of seconds >= 0."""
    with pytest.raises(anyns.SpecError, match=r"^stop_grace:"):
        anyns.ContainerSpec(argv=["true"], stop_grace=grace)
