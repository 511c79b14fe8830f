"""The public surface (exports, names) and the import layering the design requires."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

import pytest

import anyns

PACKAGE = pathlib.Path(anyns.__file__).parent
#: modules the zygote and the cloned child may load: never trio, pyroute2 or attrs
ZYGOTE_SIDE = ("_zygote", "_zygote_main.py", "_protocol.py", "_cgroups.py", "_sys")
#: what the zygote package may import from the rest of anyns (its package docstring says why)
ZYGOTE_MAY_IMPORT = {"_sys", "_protocol.py", "_cgroups.py", "_init.py", "_namespaces.py", "_skeleton.py",
                     "_security_defaults.py"}
#: modules that must stay synchronous: never trio or pyroute2
SYNC_SIDE = ("_spec.py", "_plan.py", "_errors.py", *ZYGOTE_SIDE)
ASYNC_ONLY = {"trio", "pyroute2", "outcome", "sniffio"}
ATTRS = {"attr", "attrs"}


def test_all_names_exist_and_are_public() -> None:
    """Every name in anyns.__all__ exists; public classes and functions say module 'anyns'."""
    assert len(set(anyns.__all__)) == len(anyns.__all__)
    for name in anyns.__all__:
        obj = getattr(anyns, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__module__ == "anyns", (name, obj.__module__)
    assert isinstance(anyns.__version__, str) and anyns.__version__


def test_contract_names_are_exported() -> None:
    """The names of the public API contract are all exported."""
    contract = {"ContainerSpec", "HostRootfs", "DirRootfs", "Namespaces", "Bind", "Tmpfs",
                "open_supervisor", "Supervisor", "Container", "CompletedContainer", "NamespaceId",
                "namespaces_of", "PIPE", "DEVNULL", "STDOUT", "AnynsError", "SpecError",
                "SetupError", "ExecError", "ContainerFailed", "ZygoteError", "NetworkError",
                "UnsupportedError"}
    assert contract <= set(anyns.__all__)
    assert (anyns.PIPE, anyns.DEVNULL, anyns.STDOUT) == (subprocess.PIPE, subprocess.DEVNULL,
                                                         subprocess.STDOUT)
    assert issubclass(anyns.CompletedContainer, subprocess.CompletedProcess)


@pytest.mark.parametrize("cls", [anyns.Container, anyns.Supervisor])
def test_handles_have_no_public_constructor(cls: type) -> None:
    """Container and Supervisor are made by anyns only."""
    with pytest.raises(TypeError, match="no public constructor"):
        cls()


def test_namespace_id_and_namespaces_of() -> None:
    """namespaces_of(pid) matches readlink /proc/PID/ns/*; NamespaceId splits kind and inode."""
    mine = anyns.namespaces_of(os.getpid())
    for kind, ident in mine.items():
        assert ident == os.readlink(f"/proc/self/ns/{kind}")
        assert isinstance(ident, anyns.NamespaceId)
        assert ident.kind == kind
        assert ident == f"{kind}:[{ident.inode}]"
    assert {"mnt", "pid", "net", "uts", "ipc"} <= set(mine)


def test_namespaces_of_missing_pid() -> None:
    """namespaces_of() of a pid that does not exist raises ProcessLookupError."""
    with open("/proc/sys/kernel/pid_max") as f:
        missing = int(f.read()) + 1
    with pytest.raises(ProcessLookupError):
        anyns.namespaces_of(missing)


def _runtime_imports(path: pathlib.Path) -> set[str]:
    """Top-level names of what ``path`` imports at run time (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks (what runs)."""
    nodes: list[ast.AST] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return nodes


def _internal_imports(path: pathlib.Path) -> set[pathlib.Path]:
    """The anyns modules ``path`` imports at run time (``from . import x``, ``from anyns.x import y``)."""
    found: set[pathlib.Path] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = (node.module or "").split(".") if node.module else []
        if node.level:
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
        elif module[:1] == ["anyns"]:
            base, module = PACKAGE, module[1:]
        else:
            continue
        target = base.joinpath(*module)
        candidates = [target.with_suffix(".py"), target / "__init__.py"]
        for alias in node.names:
            candidates += [target / f"{alias.name}.py", target / alias.name / "__init__.py"]
        found.update(c for c in candidates if c.exists() and c != PACKAGE.with_suffix(".py"))
    return found


def _files(entries: tuple[str, ...]) -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for entry in entries:
        path = PACKAGE / entry
        if path.is_dir():
            files.extend(sorted(path.glob("*.py")))
        elif path.exists():
            files.append(path)
    return files


def _closure(start: list[pathlib.Path]) -> set[pathlib.Path]:
    seen: set[pathlib.Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen or path == PACKAGE / "__init__.py":
            continue
        seen.add(path)
        todo.extend(_internal_imports(path))
    return seen


@pytest.mark.parametrize("module", [str(p.relative_to(PACKAGE)) for p in _files(SYNC_SIDE)])
def test_sync_layers_never_import_trio(module: str) -> None:
    """spec, plan, errors, protocol, child, zygote and _sys (and what they import) avoid trio."""
    for path in _closure([PACKAGE / module]):
        bad = _runtime_imports(path) & ASYNC_ONLY
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_zygote_side_never_imports_attrs() -> None:
    """child, zygote, protocol and _sys (and what they import) avoid attrs."""
    closure = _closure(_files(ZYGOTE_SIDE))
    assert PACKAGE / "_zygote" / "_server.py" in closure and PACKAGE / "_zygote" / "_ops.py" in closure
    for path in closure:
        bad = _runtime_imports(path) & ATTRS
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_zygote_package_imports_only_what_it_may() -> None:
    """Nothing under ``_zygote/`` imports from the rest of anyns but the modules its docstring names."""
    zygote = PACKAGE / "_zygote"
    for path in sorted(zygote.glob("*.py")):
        for imported in _internal_imports(path):
            if zygote in imported.parents or imported == PACKAGE / "__init__.py":  # ``from .. import x``
                continue
            top = imported.relative_to(PACKAGE).parts[0]
            assert top in ZYGOTE_MAY_IMPORT, f"_zygote/{path.name} imports {imported.relative_to(PACKAGE)}"


def test_layering_check_can_see_imports() -> None:
    """The checker finds the imports it looks for (so the tests above can fail)."""
    assert "trio" in _runtime_imports(PACKAGE / "_supervisor.py")
    assert "attrs" in _runtime_imports(PACKAGE / "_spec.py")
    assert PACKAGE / "_protocol.py" in _internal_imports(PACKAGE / "_zygote" / "_server.py")
    assert PACKAGE / "_plan.py" in _closure([PACKAGE / "_supervisor.py"])


def test_aio_is_an_attribute_of_anyns_without_importing_it() -> None:
    """``import anyns`` then ``anyns.aio.open_supervisor()``: the bridge loads on first use; other names still fail."""
    code = (
        "import sys, anyns\n"
        "assert 'anyns.aio' not in sys.modules\n"
        "assert callable(anyns.aio.open_supervisor)\n"
        "assert 'anyns.aio' in sys.modules\n"
        "try:\n"
        "    anyns.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('anyns.no_such_name did not raise AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(pathlib.Path(anyns.__file__).parents[1])})
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- who may touch what


def _module_name(path: pathlib.Path) -> str:
    parts = path.with_suffix("").relative_to(PACKAGE.parent).parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_imports(path: pathlib.Path) -> set[str]:
    """The anyns modules ``path`` imports anywhere: at the top, in a function, or only for annotations.

    ``from . import x`` counts as importing ``anyns.x`` when x is a module, else the package itself.
    """
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "anyns":
                continue
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            found |= submodules or {target}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "anyns"}
    return {m for m in found if m in modules and m != here}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def _foreign_private_writes(source: str) -> list[str]:
    """``x._y = ...`` (and ``+=``, tuple targets, ``setattr(x, "_y", ...)``) where x is not ``self``; dunders aside."""
    found: list[str] = []

    def check(target: ast.expr) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                check(element)
        elif (isinstance(target, ast.Attribute) and target.attr.startswith("_") and not target.attr.endswith("__")
              and not (isinstance(target.value, ast.Name) and target.value.id in ("self", "cls"))):
            found.append(ast.unparse(target))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                check(target)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            check(node.target)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and str(node.args[1].value).startswith("_")):
            found.append(ast.unparse(node))
    return found


def _supervisor_reaches(source: str) -> list[str]:
    """Any use of a ``_supervisor`` attribute (``self._supervisor._exec``, ``self._supervisor``) in ``source``."""
    return [ast.unparse(node) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr == "_supervisor"]


def test_no_import_cycles() -> None:
    """No anyns module imports one that imports it back, directly or not, even for annotations only."""
    graph = {_module_name(p): _all_imports(p) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    graph = {module: targets - {"anyns"} for module, targets in graph.items()}  # the package re-exports all
    assert graph["anyns._supervisor"] >= {"anyns._container"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_supervisor_never_writes_a_private_of_another_object() -> None:
    """The supervisor builds a Container from its resources and calls its methods: no ``container._x =``."""
    assert _foreign_private_writes((PACKAGE / "_supervisor.py").read_text()) == []


def test_the_container_never_reaches_into_its_supervisor() -> None:
    """A Container calls its ContainerHooks, never a supervisor's privates (nor holds the supervisor)."""
    source = (PACKAGE / "_container.py").read_text()
    assert _supervisor_reaches(source) == []
    assert "anyns._supervisor" not in _all_imports(PACKAGE / "_container.py")


def test_ownership_checks_can_fail() -> None:
    """The checkers above find what they look for (so those tests can fail)."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    writes = _foreign_private_writes(
        "container._leaf, leaf = leaf, None\nbox._x += 1\nself._ok = 1\nbox.public = 2\nsetattr(box, '_y', 3)\n")
    assert writes == ["container._leaf", "box._x", "setattr(box, '_y', 3)"]
    assert _supervisor_reaches("self._supervisor._exec(x)\n") == ["self._supervisor"]


def test_one_table_of_namespace_kinds() -> None:
    """_spec.KIND_FLAGS is the table; the /proc names and the zygote's step-back order agree with it."""
    from anyns import _container, _namespaces
    from anyns._spec import KIND_FLAGS

    assert set(_container.NAMESPACE_KINDS) == set(KIND_FLAGS)
    assert dict(_namespaces.STEP_BACK) == {kind: int(flag) for kind, flag in KIND_FLAGS.items() if kind != "user"}
